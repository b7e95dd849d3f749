"""The per-author JSON Feed 1.1 and the post page, as a fan's client sees
them through the origin."""

import datetime
import html.parser

import pytest

from helpers.http import FEED_TYPE, JSONFEED_VERSION, NAME_CACHE, OPUS_TYPE, RFC3339_RE
from helpers.store import sha256_hex

CDN = "https://cdn.example.test"


def parse_time(s):
    assert RFC3339_RE.match(s), "date_published %r is not RFC 3339" % s
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))


def all_urls(node, path="$"):
    """Every (json path, value) whose key ends in 'url'."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k.endswith("url") and isinstance(v, str):
                out.append(("%s.%s" % (path, k), v))
            out += all_urls(v, "%s.%s" % (path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += all_urls(v, "%s[%d]" % (path, i))
    return out


def get_feed(origin, handle):
    r = origin.get("/u/%s/feed.json" % handle)
    assert r.status == 200, r
    assert r.header("Content-Type").split(";")[0].strip() == FEED_TYPE, r.headers
    return r.json()


def test_feed_has_every_json_feed_field(sayin, store, short_wav):
    before = datetime.datetime.now(datetime.timezone.utc)
    post = sayin.post(store, "alice", short_wav, text="hello fans",
                      args=["--public-url", CDN]).json
    after = datetime.datetime.now(datetime.timezone.utc)
    origin = sayin.start_origin(store)
    feed = get_feed(origin, "alice")

    assert feed.get("version") == JSONFEED_VERSION, feed
    assert isinstance(feed.get("title"), str) and feed["title"].strip(), feed
    assert isinstance(feed.get("home_page_url"), str) and \
        feed["home_page_url"].startswith(CDN + "/"), feed
    assert feed.get("feed_url") == CDN + "/u/alice/feed.json" == post["feed_url"], feed
    assert isinstance(feed.get("items"), list) and len(feed["items"]) == 1, feed

    item = feed["items"][0]
    assert item.get("id") == post["id"]
    assert item.get("url") == post["url"] == CDN + "/p/" + post["id"]
    assert item.get("content_text") == "hello fans"
    published = parse_time(item.get("date_published", ""))
    assert before - datetime.timedelta(seconds=2) <= published <= \
        after + datetime.timedelta(seconds=2), (published, before, after)
    assert isinstance(item.get("attachments"), list) and item["attachments"], item
    att = item["attachments"][0]
    assert att.get("url") == post["audio_url"]
    assert att.get("mime_type") == OPUS_TYPE
    assert isinstance(att.get("size_in_bytes"), int) and att["size_in_bytes"] == \
        post["size_in_bytes"]
    assert isinstance(att.get("duration_in_seconds"), (int, float))
    assert abs(att["duration_in_seconds"] - 0.4) < 0.001
    audio = origin.get_url(att["url"])
    assert audio.status == 200 and len(audio.body) == att["size_in_bytes"]

    for where, url in all_urls(feed):
        assert url.startswith(CDN + "/"), "%s = %r is not under the public URL" % (where, url)


def test_feed_lists_newest_first(sayin, store, wav_factory):
    posts = []
    for i, text in enumerate(["one", "two", "three"]):
        posts.append(sayin.post(store, "alice", wav_factory("%d.wav" % i, seed=i), text=text).json)
    origin = sayin.start_origin(store)
    items = get_feed(origin, "alice")["items"]
    assert [i["id"] for i in items] == [p["id"] for p in reversed(posts)]
    assert [i["content_text"] for i in items] == ["three", "two", "one"]
    dates = [parse_time(i["date_published"]) for i in items]
    assert dates == sorted(dates, reverse=True), dates
    assert [i["attachments"][0]["url"] for i in items] == \
        [p["audio_url"] for p in reversed(posts)]


def test_feeds_are_per_author(sayin, store, wav_factory):
    a = sayin.post(store, "alice", wav_factory("a.wav", seed=1), text="by alice").json
    b = sayin.post(store, "bob", wav_factory("b.wav", seed=2), text="by bob").json
    origin = sayin.start_origin(store)
    assert [i["id"] for i in get_feed(origin, "alice")["items"]] == [a["id"]]
    assert [i["id"] for i in get_feed(origin, "bob")["items"]] == [b["id"]]


def test_feed_items_limit(sayin, store, wav_factory):
    posts = [sayin.post(store, "alice", wav_factory("%d.wav" % i, seconds=0.1, seed=i),
                        text="n%d" % i, args=["--feed-items", "2"]).json for i in range(3)]
    origin = sayin.start_origin(store)
    items = get_feed(origin, "alice")["items"]
    assert [i["id"] for i in items] == [posts[2]["id"], posts[1]["id"]]


def test_feed_default_holds_20_newest(sayin, store, wav_factory):
    wav = wav_factory("tiny.wav", rate=8000, seconds=0.06, seed=1)
    ids = [sayin.post(store, "alice", wav, text="post %d" % i).json["id"] for i in range(21)]
    origin = sayin.start_origin(store)
    items = get_feed(origin, "alice")["items"]
    assert len(items) == 20, len(items)
    assert [i["id"] for i in items] == list(reversed(ids))[:20]
    # The oldest post left the feed but keeps its page.
    assert origin.get("/p/" + ids[0]).status == 200


@pytest.mark.parametrize("public_url,base", [
    ("https://cdn.example.test", "https://cdn.example.test"),
    ("https://cdn.example.test/", "https://cdn.example.test"),
    ("http://edge.example.test:8443/voice", "http://edge.example.test:8443/voice"),
])
def test_urls_use_the_public_url(sayin, store, short_wav, public_url, base):
    post = sayin.post(store, "alice", short_wav, args=["--public-url", public_url]).json
    assert post["url"] == base + "/p/" + post["id"]
    assert post["feed_url"] == base + "/u/alice/feed.json"
    assert post["audio_url"].startswith(base + "/a/")
    origin = sayin.start_origin(store)
    feed = get_feed(origin, "alice")
    for where, url in all_urls(feed):
        assert url.startswith(base + "/") and "//" not in url.split("://", 1)[1], (where, url)


def test_urls_default_to_the_listen_address(sayin, store, short_wav):
    post = sayin.post(store, "alice", short_wav).json
    assert post["feed_url"] == "http://127.0.0.1:8080/u/alice/feed.json"
    # Another store: the first publish records the site's URL in its store
    # (test_site.py), which later runs keep.
    post = sayin.post(store.parent / "store2", "alice", short_wav,
                      args=["--listen", "127.0.0.1:9321"]).json
    assert post["feed_url"] == "http://127.0.0.1:9321/u/alice/feed.json"
    assert post["audio_url"].startswith("http://127.0.0.1:9321/a/")


class PageParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text = []
        self.tags = []
        self.stack = []
        self.audio_srcs = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "audio":
            self.stack.append("audio")
            if attrs.get("src"):
                self.audio_srcs.append(attrs["src"])
        elif tag == "source" and "audio" in self.stack:
            if attrs.get("src"):
                self.audio_srcs.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "audio" and "audio" in self.stack:
            self.stack.remove("audio")

    def handle_data(self, data):
        self.text.append(data)


TEXTS = {
    "quotes-and-markup": 'He said "hi" & <blink>bold</blink> it\'s <script>alert(1)</script>',
    "emoji-and-accents": "\U0001F399\ufe0f\U0001F525 caf\u00e9 \u00f1 \u65e5\u672c\u8a9e",
    "newline-and-tab": "line one\nline\ttwo",
    "json-specials": 'back\\slash "{}" \u2028 end',
    "empty": "",
}


@pytest.mark.parametrize("case", sorted(TEXTS))
def test_text_round_trips_in_feed_and_page(sayin, store, short_wav, case):
    text = TEXTS[case]
    post = sayin.post(store, "alice", short_wav, text=text, args=["--public-url", CDN]).json
    origin = sayin.start_origin(store)
    item = get_feed(origin, "alice")["items"][0]
    assert item["content_text"] == text

    page = origin.get_url(post["url"])
    assert page.status == 200, page
    assert page.header("Content-Type").split(";")[0].strip() == "text/html", page.headers
    assert page.header("Cache-Control") == NAME_CACHE
    assert page.header("ETag") == '"%s"' % sha256_hex(page.body)
    body = page.body.decode("utf-8")
    p = PageParser()
    p.feed(body)
    p.close()
    assert text in "".join(p.text), "the page does not show the text %r" % text
    assert "blink" not in p.tags and "<blink>" not in body and "<script>alert" not in body, \
        "the text was not HTML-escaped"
    assert post["audio_url"] in p.audio_srcs, (
        "no <audio> (or its <source>) with src=%s: %s" % (post["audio_url"], p.audio_srcs))

"""Paginated feeds, read through the origin: the head /u/H/feed.json and the
archive pages /u/H/feed/K.json linked by next_url. Walking from the head
visits every post once, newest first; a full archive page never changes
(same bytes, same ETag) until a post in it is deleted, and then only that
page changes; /authors.json links every author's feed.

Small pages (--feed-items 3 --feed-page-items 4) so a dozen posts make
several pages."""

import re

import pytest

from helpers.api import author_add, author_token, start_api
from helpers.audio import write_wav_module
from helpers.http import FEED_TYPE, url_path

HEAD, PAGE = 3, 4
BASE = "https://cdn.test"
SETTINGS = ("--feed-items", str(HEAD), "--feed-page-items", str(PAGE), "--public-url", BASE)
PAGE_PATH = re.compile(r"^/u/carol/feed/([1-9][0-9]*)\.json$")


def publish(sayin, data, wav, count, first=1):
    """count posts by carol with the CLI; returns their ids, oldest first."""
    ids = []
    for i in range(first, first + count):
        post = sayin.post(data, "carol", wav, text="post %d" % i,
                          args=SETTINGS + ("--aac-fallback", "off")).json
        ids.append(post["id"])
    return ids


def walk(origin, handle="carol"):
    """Follows next_url from the head. Returns [(path, response)], asserting
    each link is absolute, on the public URL, and visited once."""
    path, seen, pages = "/u/%s/feed.json" % handle, set(), []
    while path is not None:
        assert path not in seen, "next_url loops back to %s" % path
        seen.add(path)
        r = origin.get(path)
        assert r.status == 200, (path, r)
        assert r.header("Content-Type") == FEED_TYPE, r
        doc = r.json()
        assert doc["feed_url"] == BASE + "/u/%s/feed.json" % handle, doc["feed_url"]
        pages.append((path, r))
        nxt = doc.get("next_url")
        if nxt is None:
            break
        assert nxt.startswith(BASE + "/"), "next_url is not absolute: %r" % nxt
        path = url_path(nxt)
        assert PAGE_PATH.match(path), path
    return pages


def item_ids(resp):
    return [it["id"] for it in resp.json()["items"]]


def check_layout(origin, ids, deleted=()):
    """ids: every post ever published, oldest first (seq = index + 1).
    Checks the walk against the layout publish.h documents."""
    n = len(ids)
    live = [i for i in ids if i not in deleted]
    pages = walk(origin)
    walked = [i for _, r in pages for i in item_ids(r)]
    assert walked == live[::-1], "the walk does not visit every post once, newest first"
    # Head: seq n-H+1..n. Page k: seq (k-1)P+1 .. min(kP, n-H), newest first,
    # and the head links the newest page, each page the one before it.
    expect_head = [i for i in ids[max(0, n - HEAD):] if i not in deleted][::-1]
    assert item_ids(pages[0][1]) == expect_head
    archived = max(0, n - HEAD)
    npages = (archived + PAGE - 1) // PAGE
    assert [p for p, _ in pages[1:]] == ["/u/carol/feed/%d.json" % k
                                         for k in range(npages, 0, -1)]
    for path, r in pages[1:]:
        k = int(PAGE_PATH.match(path).group(1))
        want = [i for i in ids[(k - 1) * PAGE:min(k * PAGE, archived)] if i not in deleted]
        assert item_ids(r) == want[::-1], path
    return pages


def snapshot(origin):
    """{path: (ETag, bytes)} of the head and every archive page."""
    return {p: (r.header("ETag"), r.body) for p, r in walk(origin)}


def changed(before, after):
    return {p for p in set(before) | set(after) if before.get(p) != after.get(p)}


def test_next_url_walk_and_full_pages_never_change(sayin, store, tmp_path):
    wav = tmp_path / "tiny.wav"
    write_wav_module(wav, 16000, 1, seconds=0.2)
    ids = publish(sayin, store, wav, 8)
    origin = sayin.start_origin(store)
    check_layout(origin, ids)
    frozen = {}  # full pages, as first seen full
    for k in range(9, 14):
        before = snapshot(origin)
        ids += publish(sayin, store, wav, 1, first=k)
        after = snapshot(origin)
        check_layout(origin, ids)
        diff = changed(before, after)
        head = "/u/carol/feed.json"
        assert head in diff
        # Publishing rewrites the head and at most one archive page: the
        # one the head's oldest item moved into.
        pages = diff - {head}
        assert len(pages) <= 1, diff
        n = len(ids)
        if n > HEAD:
            assert pages == {"/u/carol/feed/%d.json" % ((n - HEAD - 1) // PAGE + 1)}, diff
        for path, (etag, body) in after.items():
            m = PAGE_PATH.match(path)
            if not m:
                continue
            if int(m.group(1)) * PAGE <= n - HEAD:  # full
                assert etag, path
                if path in frozen:
                    assert (etag, body) == frozen[path], "full page %s changed" % path
                frozen[path] = (etag, body)
    # Pages 1 and 2 were full for several publishes and never changed.
    assert {"/u/carol/feed/1.json", "/u/carol/feed/2.json"} <= set(frozen)
    # The same bytes once more, with a conditional request.
    etag, body = frozen["/u/carol/feed/1.json"]
    assert origin.get("/u/carol/feed/1.json").body == body
    r = origin.get("/u/carol/feed/1.json", headers={"If-None-Match": etag})
    assert r.status == 304


def test_deleting_a_post_changes_only_its_page(sayin, store, tmp_path):
    wav = tmp_path / "tiny.wav"
    write_wav_module(wav, 16000, 1, seconds=0.2)
    ids = publish(sayin, store, wav, 12)  # head 10-12, pages 1 (1-4), 2 (5-8), 3 (9)
    token = author_token(sayin, store, "carol")
    api = start_api(sayin, store, args=SETTINGS[:4], base=BASE)
    origin = sayin.start_origin(store)
    check_layout(origin, ids)
    deleted = set()

    # Seq 6 is in page 2, which is full.
    before = snapshot(origin)
    r = api.delete(token, ids[5])
    assert r.status == 200, (r, r.body)
    deleted.add(ids[5])
    after = snapshot(origin)
    assert changed(before, after) <= {"/u/carol/feed.json", "/u/carol/feed/2.json"}
    assert "/u/carol/feed/2.json" in changed(before, after)
    for p in ("/u/carol/feed/1.json", "/u/carol/feed/3.json"):
        assert after[p] == before[p], "%s changed by a deletion in page 2" % p
    assert ids[5] not in item_ids(origin.get("/u/carol/feed/2.json"))
    check_layout(origin, ids, deleted)

    # Seq 11 is in the head: only the head changes.
    before = after
    assert api.delete(token, ids[10]).status == 200
    deleted.add(ids[10])
    after = snapshot(origin)
    assert changed(before, after) == {"/u/carol/feed.json"}
    check_layout(origin, ids, deleted)

    # Posts after the deletions keep the layout (seq numbers are not reused).
    before = after
    ids += publish(sayin, store, wav, 1, first=13)
    after = snapshot(origin)
    check_layout(origin, ids, deleted)
    assert changed(before, after) == {"/u/carol/feed.json", "/u/carol/feed/3.json"}
    assert after["/u/carol/feed/2.json"] == before["/u/carol/feed/2.json"]
    assert api.stop() == 0


def test_authors_json_lists_every_author_with_absolute_feed_urls(sayin, store, tmp_path):
    wav = tmp_path / "tiny.wav"
    write_wav_module(wav, 16000, 1, seconds=0.2)
    author_add(sayin, store, "alice", name="Alice A.", args=("--public-url", BASE))
    author_add(sayin, store, "bob_2", name="Bob", args=("--public-url", BASE))
    sayin.post(store, "carol", wav, args=("--public-url", BASE))
    origin = sayin.start_origin(store)
    r = origin.get("/authors.json")
    assert r.status == 200, r
    authors = {a["handle"]: a for a in r.json()["authors"]}
    assert set(authors) == {"alice", "bob_2", "carol"}
    assert authors["alice"]["name"] == "Alice A."
    for handle, a in authors.items():
        assert a["feed_url"] == "%s/u/%s/feed.json" % (BASE, handle), a
        feed = origin.get_url(a["feed_url"])
        assert feed.status == 200, a
        assert feed.json()["feed_url"] == a["feed_url"]
    assert len(item_ids(origin.get("/u/carol/feed.json"))) == 1
    assert item_ids(origin.get("/u/alice/feed.json")) == []


def test_authors_json_is_served_as_plain_json(sayin, store):
    author_add(sayin, store, "alice", args=("--public-url", BASE))
    origin = sayin.start_origin(store)
    r = origin.get("/authors.json")
    assert r.status == 200 and "version" not in r.json()
    assert r.header("Content-Type").split(";")[0] == "application/json"

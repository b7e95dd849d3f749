"""Takedowns (issue 15, item 1): `post delete ID` for any author through the
API's own deletion, and `author remove HANDLE`: every post, page and feed
gone, tokens revoked, purges enqueued, cross-posts listed; afterwards the
origin answers 410 Gone (briefly cacheable) for the author's feeds and pages
and the posts' pages, and a real Varnish edge does so within a second.

Run: SAYIN_BIN=$PWD/bin /usr/bin/python3 -m pytest -q -n 2 tests/integration/test_takedown.py
"""

import json
import time

from helpers.api import author_add, start_api
from helpers.crossposting import PUBLIC
from helpers.edges import start_varnish
from helpers.procs import wait_for

WITHIN = 1.0  # seconds: the "within 1 s"
SMALL = ["--feed-items", "1", "--feed-page-items", "1"]  # archive pages from the 2nd post


def pub(sayin, store, *args):
    return sayin.run(sayin.publisher, [str(a) for a in args] + ["--data", str(store)])


def status_json(sayin, store, args=()):
    r = sayin.run(sayin.publisher, ["status", "--json", "--data", str(store)] + list(args))
    assert r.returncode in (0, 3), r.stderr
    return json.loads(r.stdout)


def test_post_delete_takes_any_authors_post_down_like_the_api(sayin, store, speech_clip,
                                                                speech_clip_b):
    keep = sayin.post(store, "ann", speech_clip, text="keep").json
    gone = sayin.post(store, "ann", speech_clip_b, text="gone").json
    other = sayin.post(store, "bob", speech_clip, text="bob's").json
    origin = sayin.start_origin(store)
    audio = "/a/" + gone["audio_url"].rsplit("/a/", 1)[1]
    assert origin.get("/p/" + gone["id"]).status == 200
    assert origin.get(audio).status == 200

    r = pub(sayin, store, "post", "delete", gone["id"])
    assert r.returncode == 0, r.stderr
    assert "deleted post %s" % gone["id"] in r.stdout and "by ann" in r.stdout, r.stdout
    # What the API's DELETE does: page, embed and unshared audio gone, the
    # feed no longer lists it; the other posts stay.
    assert origin.get("/p/" + gone["id"]).status == 404
    assert origin.get("/p/%s/embed" % gone["id"]).status == 404
    assert origin.get(audio).status == 404
    feed = json.loads(origin.get("/u/ann/feed.json").body)
    assert [i["id"] for i in feed["items"]] == [keep["id"]]
    assert origin.get("/p/" + keep["id"]).status == 200
    assert origin.get("/p/" + other["id"]).status == 200
    # A single deletion is not a takedown of the author: no 410.
    assert origin.get("/u/ann/").status == 200

    r = pub(sayin, store, "post", "delete", gone["id"])
    assert r.returncode == 1 and "no post '%s'" % gone["id"] in r.stderr, r


def test_post_delete_enqueues_the_same_purges_as_the_api(sayin, store, tmp_path, speech_clip):
    # The API's DELETE and the CLI's share publish_delete: one job whose
    # payload is a "delete" of the post with its page and audio removed.
    edge = ["--varnish-edges", "http://127.0.0.1:9"]
    p = sayin.post(store, "ann", speech_clip, args=edge).json
    before = {j["id"] for j in status_json(sayin, store, edge)["jobs"]}
    r = pub(sayin, store, "post", "delete", p["id"], *edge)
    assert r.returncode == 0, r.stderr
    new = [j for j in status_json(sayin, store, edge)["jobs"] if j["id"] not in before]
    assert len(new) == 1 and new[0]["event"] == "delete" and new[0]["subject"] == p["id"], new


def test_removed_author_answers_410_from_the_origin(sayin, store, speech_clip, speech_clip_b):
    token = author_add(sayin, store, "ann", args=SMALL)
    author_add(sayin, store, "bob", args=SMALL)
    posts = [sayin.post(store, "ann", c, text=t, args=SMALL).json
             for c, t in ((speech_clip, "one"), (speech_clip_b, "two"), (speech_clip, "three"))]
    bobs = sayin.post(store, "bob", speech_clip_b, text="bob's", args=SMALL).json
    origin = sayin.start_origin(store)
    names = ["/u/ann/", "/u/ann/feed.json", "/u/ann/feed/1.json", "/u/ann/feed/2.json"]
    for p in posts:
        names += ["/p/" + p["id"], "/p/%s/embed" % p["id"]]
    for n in names:
        assert origin.get(n).status == 200, n

    r = pub(sayin, store, "author", "remove", "ann")
    assert r.returncode == 0, r.stderr
    assert "removed author ann: 3 posts" in r.stdout and "1 token revoked" in r.stdout, r.stdout
    assert "no cross-posts were made" in r.stdout, r.stdout

    for n in names:
        resp = origin.get(n)
        assert resp.status == 410, (n, resp)
        cc = resp.header("Cache-Control")
        # Briefly cacheable (name-max-age, 60 s by default), for CDNs too.
        assert cc == "public, max-age=60, s-maxage=60", (n, cc)
    # Neighbours of the tombstones are not covered: whole segments only.
    assert origin.get("/u/annx/").status == 404
    assert origin.get("/p/" + posts[0]["id"] + "x").status == 404
    # Audio as a deletion treats it: gone unless another post shares it
    # (bob's is speech_clip_b's, like ann's "two"); bob and /authors.json
    # stay, without ann.
    def audio(p):
        return origin.get("/a/" + p["audio_url"].rsplit("/a/", 1)[1]).status
    assert [audio(p) for p in posts] == [200 if p["audio_url"] == bobs["audio_url"] else 404
                                         for p in posts]
    assert audio(bobs) == 200
    assert origin.get("/p/" + bobs["id"]).status == 200
    handles = [a["handle"] for a in json.loads(origin.get("/authors.json").body)["authors"]]
    assert handles == ["bob"], handles
    # Tokens revoked, record gone.
    listing = pub(sayin, store, "author", "list").stdout
    assert "ann" not in listing and "bob" in listing, listing
    assert token  # printed once by author add; revoked above ("1 token revoked")

    # A removed handle is not taken again (its subscribers must not start
    # hearing someone else): author add and a creating post refuse it.
    r = pub(sayin, store, "author", "add", "ann", "--name", "New Ann", *SMALL)
    assert r.returncode == 1 and "was removed" in r.stderr, r
    for create in (True, False):
        r = sayin.post(store, "ann", speech_clip, args=SMALL, check=False, create_author=create)
        assert r.returncode == 1 and "was removed" in r.stderr, (create, r.stderr)
    assert origin.get("/u/ann/feed.json").status == 410
    r = pub(sayin, store, "author", "remove", "ann")
    assert r.returncode == 1 and "no author 'ann'" in r.stderr, r


def test_removed_authors_token_is_refused_by_the_api(sayin, store, speech_clip):
    token = author_add(sayin, store, "ann", args=["--public-url", "https://cdn.test"])
    r = pub(sayin, store, "author", "remove", "ann", "--public-url", "https://cdn.test")
    assert r.returncode == 0, r.stderr
    api = start_api(sayin, store)
    try:
        r = api.post_raw(token, speech_clip.read_bytes(), text="still here?")
        assert r.status == 401, r
    finally:
        api.stop()


def test_remove_lists_the_crossposts_already_made(sayin, world):
    w = world(("ann",))
    p = w.post("ann", "to the networks")
    r = w.crosspost()
    assert r.returncode == 0, r.stdout + r.stderr
    r = w.run(["author", "remove", "ann", "--data", w.data, "--public-url", PUBLIC,
               "--social-accounts", w.accounts_path])
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "cross-posts already made (not undone" in out, out
    lines = [l for l in out.splitlines() if p["id"] in l]
    assert {l.split()[1] for l in lines} == {"x", "facebook"}, out
    assert all("http" in l for l in lines), out


def test_removed_authors_feed_is_410_at_a_varnish_edge_within_a_second(sayin, store, tmp_path,
                                                                        speech_clip):
    token = author_add(sayin, store, "ann")
    origin = sayin.start_origin(store)
    edge = start_varnish(str(tmp_path / "edge"), origin.port)
    sayin.procs.append(edge.proc)
    base = "http://127.0.0.1:%d" % edge.port
    driver = ["--varnish-edges", "http://127.0.0.1:%d" % edge.port]
    for args in (["site", "set", "public-url", base], ["rebuild", "--all"]):
        r = pub(sayin, store, *args)
        assert r.returncode == 0, (args, r.stderr)
    api = start_api(sayin, store, args=driver, base=base)
    try:
        r = api.post_raw(token, speech_clip.read_bytes(), text="soon taken down")
        assert r.status == 201, r
        post = r.json()
        feed = "/u/ann/feed.json"
        assert wait_for(lambda: post["id"] in edge.get(feed).body.decode(errors="replace"),
                        timeout=5)
        assert wait_for(lambda: api.metrics().get("sayin_outbox_depth") == 0, timeout=10)
        # The edge holds the feed and the pages for a day.
        for path in (feed, "/u/ann/", "/p/" + post["id"]):
            assert wait_for(lambda: edge.get(path).header("X-Cache") in ("HIT", "STALE"),
                            timeout=2), (path, edge.get(path))
            assert edge.get(path).status == 200

        r = pub(sayin, store, "author", "remove", "ann", *driver)
        assert r.returncode == 0, r.stderr
        removed = time.monotonic()
        gone = wait_for(lambda: edge.get(feed).status == 410, timeout=5, interval=0.02)
        elapsed = time.monotonic() - removed
        assert gone, "the edge still serves the removed author's feed: %r" % edge.get(feed)
        assert elapsed <= WITHIN, "the feed took %.2f s to turn 410 at the edge" % elapsed
        for path in ("/u/ann/", "/p/" + post["id"], "/p/%s/embed" % post["id"]):
            assert wait_for(lambda: edge.get(path).status == 410, timeout=2), path
        # The edge keeps the 410 only briefly (the origin's s-maxage).
        r = edge.get(feed)
        assert r.status == 410 and "s-maxage=60" in r.header("Cache-Control"), r
    finally:
        api.stop()

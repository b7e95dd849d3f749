"""The whole delivery path through real edges: sayin-origin, `sayin-publisher
serve` (the API and its delivery worker) and Varnish with
cdn-config/varnish/sayin.vcl (or nginx with cdn-config/nginx/edge.conf), all
on loopback. A post the API acknowledged is in the author's feed at the edge
within a second, although the edge may keep the feed for a day, because the
post's own transaction enqueued the purge; a deletion takes the audio off
the edge the same way."""

import time

import pytest

from helpers.api import author_add, start_api
from helpers.edges import start_nginx, start_varnish
from helpers.http import brotli_decode
from helpers.procs import wait_for

WITHIN = 1.0  # seconds: the "within one second"


def feed_ids(edge, handle, encoding="br"):
    r = edge.get("/u/%s/feed.json" % handle, headers={"Accept-Encoding": encoding})
    assert r.status == 200, r
    body = r.body
    if r.header("Content-Encoding") == "br":
        body = brotli_decode(body)
    elif r.header("Content-Encoding") == "gzip":
        import gzip
        body = gzip.decompress(body)
    import json
    return [i["id"] for i in json.loads(body)["items"]], r


def edge_site(sayin, store, tmp_path, kind, speech_clip):
    token = author_add(sayin, store, "ann")
    origin = sayin.start_origin(store)
    if kind == "varnish":
        edge = start_varnish(str(tmp_path / "edge"), origin.port)
        driver = ["--varnish-edges", "http://127.0.0.1:%d" % edge.port]
    else:
        edge = start_nginx(str(tmp_path / "edge"), origin.port)
        driver = ["--nginx-edges", "http://127.0.0.1:%d" % edge.port]
    sayin.procs.append(edge.proc)
    base = "http://127.0.0.1:%d" % edge.port
    # `author add` recorded the default URL as the site's; the edge's port is
    # known only now: the operator's procedure, site set then rebuild --all.
    for args in (["site", "set", "public-url", base], ["rebuild", "--all"]):
        r = sayin.run(sayin.publisher, args + ["--data", str(store)])
        assert r.returncode == 0, (args, r.stderr)
    api = start_api(sayin, store, args=driver + ["--prewarm-edges", base], base=base)
    return token, origin, edge, api, base


@pytest.mark.parametrize("kind", ["varnish", "nginx"])
def test_post_is_at_the_edge_within_a_second(sayin, store, tmp_path, speech_clip, kind):
    token, origin, edge, api, base = edge_site(sayin, store, tmp_path, kind, speech_clip)
    try:
        # The edge holds the (empty) feed for its shared lifetime: a day.
        ids, r = feed_ids(edge, "ann")
        assert ids == []
        ids, r = feed_ids(edge, "ann")
        assert r.header("X-Cache") in ("HIT", "STALE"), r
        assert "s-maxage=86400" in r.header("Cache-Control")

        # Control: a post published without any CDN driver stays invisible
        # at the edge, which is what the purge is for.
        sayin.post(store, "ann", speech_clip, text="no purge for this one")
        time.sleep(1.5)
        assert feed_ids(edge, "ann")[0] == [], "the edge refetched without a purge"

        r = api.post_raw(token, speech_clip.read_bytes(), text="through the API")
        acked = time.monotonic()
        assert r.status == 201, r
        post = r.json()
        assert post["feed_url"].startswith(base)
        seen = wait_for(lambda: post["id"] in feed_ids(edge, "ann")[0], timeout=5)
        elapsed = time.monotonic() - acked
        assert seen, "the post never reached the edge's feed"
        assert elapsed <= WITHIN, "the post took %.2f s to reach the edge" % elapsed
        # Every variant was purged (and prewarmed), not just the one asked.
        for enc in ("br", "gzip", "identity"):
            assert post["id"] in feed_ids(edge, "ann", enc)[0], enc
        # The origin saw about one request per variant and object: the
        # edge serves the rest.
        for _ in range(20):
            assert edge.get("/p/" + post["id"]).status == 200
        # Every job (purge, then prewarm) ends delivered, none parked.
        assert wait_for(lambda: api.metrics().get("sayin_outbox_depth") == 0, timeout=10), \
            sayin.run(sayin.publisher, ["status", "--data", str(store)]).stdout
        assert api.metrics().get("sayin_outbox_parked") == 0
    finally:
        api.stop()


def test_deleted_audio_leaves_the_edge(sayin, store, tmp_path, speech_clip):
    token, origin, edge, api, base = edge_site(sayin, store, tmp_path, "varnish", speech_clip)
    try:
        r = api.post_raw(token, speech_clip.read_bytes(), text="soon gone")
        assert r.status == 201, r
        post = r.json()
        audio_path = post["audio_url"][len(base):]
        assert wait_for(lambda: edge.get(audio_path).status == 200, timeout=5)
        assert edge.get(audio_path).header("X-Cache") == "HIT"  # prewarmed, then cached
        r = api.delete(token, post["id"])
        assert r.status == 200, r
        deleted = time.monotonic()
        gone = wait_for(lambda: edge.get(audio_path).status == 404, timeout=5)
        assert gone, "the deleted audio is still served by the edge"
        assert time.monotonic() - deleted <= WITHIN + 0.5
        assert post["id"] not in feed_ids(edge, "ann")[0]
        assert edge.get("/p/" + post["id"]).status == 404
    finally:
        api.stop()

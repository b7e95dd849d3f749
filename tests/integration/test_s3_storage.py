"""Delivery from S3-compatible storage, end to end on a real S3
implementation (s3rver, helpers/s3rver.py) and real Varnish edges whose
backend is the bucket (cdn-config/varnish/storage-site.vcl as the site part
of an unchanged sayin.vcl): the publisher's s3 driver fills the bucket with
every object and name as the origin serves it (metadata included), the
edges serve fans from it, purged and prewarmed by the publisher, with
sayin-origin switched off, and stale while the storage is down."""

import datetime
import gzip
import json
import re
import selectors
import socket
import time
import urllib.parse

import pytest

from helpers.api import author_add, start_api
from helpers.delivery import s3_key_origin
from helpers.http import brotli_decode
from helpers.procs import TIME_SCALE, wait_for
from helpers.s3rver import start_s3rver, start_storage_varnish

WITHIN = 1.0  # seconds: the "within one second" (of the program's own clock)
CODINGS = ("br", "gzip", "identity")


@pytest.fixture
def s3(tmp_path):
    s = start_s3rver(str(tmp_path / "s3"))
    yield s
    s.stop()


class Site:
    pass


def storage_site(sayin, store, tmp_path, s3, edges=1, settings=(), prewarm=True, edge_params=()):
    """ann's site: sayin-origin, `edges` storage-backed Varnish edges, and
    `sayin-publisher serve` with the s3 driver to s3's bucket, the varnish
    purge driver and prewarm through every edge. The bucket is filled
    (rebuild --all through the outbox) before it returns."""
    site = Site()
    site.token = author_add(sayin, store, "ann")
    site.origin = sayin.start_origin(store, args=list(settings))
    site.edges = [start_storage_varnish(str(tmp_path / ("edge%d" % i)), s3, params=edge_params)
                  for i in range(edges)]
    for e in site.edges:
        sayin.procs.append(e.proc)
    urls = ["http://127.0.0.1:%d" % e.port for e in site.edges]
    site.base = urls[0]
    site.drivers = (s3.publisher_args() + ["--varnish-edges", ",".join(urls)]
                    + (["--prewarm-edges", ",".join(urls)] if prewarm else [])
                    + list(settings))
    # `author add` recorded the default URL as the site's; the edge's port is
    # known only now: site set, then rebuild --all, which also queues every
    # name for the bucket.
    r = sayin.run(sayin.publisher, ["site", "set", "public-url", site.base, "--data", str(store)])
    assert r.returncode == 0, r.stderr
    r = sayin.run(sayin.publisher, ["rebuild", "--all", "--data", str(store)] + site.drivers)
    assert r.returncode == 0, r.stderr
    site.api = start_api(sayin, store, args=site.drivers, base=site.base)
    settle(sayin, store, site.api)
    return site


def settle(sayin, store, api, timeout=15):
    """Every outbox job delivered (none due, none parked)."""
    ok = wait_for(lambda: api.metrics().get("sayin_outbox_depth") == 0, timeout=timeout * TIME_SCALE)
    assert ok, sayin.run(sayin.publisher, ["status", "--data", str(store)]).stdout
    assert api.metrics().get("sayin_outbox_parked") == 0



def decoded(r):
    enc = r.header("Content-Encoding")
    if enc == "br":
        return brotli_decode(r.body)
    if enc == "gzip":
        return gzip.decompress(r.body)
    assert enc is None, r
    return r.body


def feed_ids(edge, handle="ann", encoding="br"):
    r = edge.get("/u/%s/feed.json" % handle, headers={"Accept-Encoding": encoding})
    assert r.status == 200, r
    return [i["id"] for i in json.loads(decoded(r))["items"]], r


def path_of(url):
    return urllib.parse.urlsplit(url).path


def post_paths(post):
    """The post's page, player page and every object its JSON names."""
    paths = ["/p/" + post["id"], "/p/%s/embed" % post["id"]]
    for v in post.values():
        if isinstance(v, str) and "/a/" in v:
            paths.append(path_of(v))
    return paths


LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")


def log_time(line):
    m = LOG_TS.match(line)
    assert m, line
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def delivered(api, target):
    """{job id: time} of the jobs for target the API's log says were
    delivered (the program's own clock)."""
    out = {}
    for line in api.log().splitlines():
        m = re.search(r"delivery: job (\d+) \(%s\) delivered" % target, line)
        if m:
            out[m.group(1)] = log_time(line)
    return out


def committed(api, post_id):
    for line in api.log().splitlines():
        if "publish: post %s " % post_id in line and " committed" in line:
            return log_time(line)
    raise AssertionError("no commit logged for %s:\n%s" % (post_id, api.log()))


def storage_gets(s3, path_prefix=""):
    """The edges' requests to the bucket (unsigned: the publisher's and the
    tests' own are signed): [(method, target)]."""
    return [(m, t) for m, t, h in s3.requests(with_headers=True)
            if not any(k.lower() == "authorization" for k, _ in h)
            and t.startswith(path_prefix)]


# ---------------------------------------------------------------- 1. the bucket


def test_bucket_holds_what_the_origin_serves(sayin, store, tmp_path, s3, speech_clip):
    """Every key: the bytes, Content-Type, Cache-Control and Content-Encoding
    the origin answers for its path and coding; a name's CDN-Cache-Control
    and Surrogate-Key as x-amz-meta-*; objects once, identity, no metadata;
    every PUT and DELETE validly signed (SigV4 checked from the headers
    s3rver received)."""
    site = storage_site(sayin, store, tmp_path, s3)
    try:
        r = site.api.post_raw(site.token, speech_clip.read_bytes(), text="into the bucket")
        assert r.status == 201, r
        post = r.json()
        settle(sayin, store, site.api)
        keys = s3.keys()
        names = ["/u/ann/", "/u/ann/feed.json", "/authors.json", "/p/" + post["id"],
                 "/p/%s/embed" % post["id"]]
        for name in names:
            key = (name + "index.html" if name.endswith("/") else name).lstrip("/")
            for prefix in ("", "_gzip/", "_br/"):
                assert prefix + key in keys, (prefix + key, keys)
        objects = [p for p in post_paths(post) if p.startswith("/a/")]
        assert any(p.endswith(".opus") for p in objects), post
        for p in objects:
            assert p.lstrip("/") in keys
            assert "_gzip" + p not in keys and "_br" + p not in keys, "objects have no variants"
        assert len(keys) == len(set(keys))
        for key in keys:
            path, enc = s3_key_origin("/" + key)
            want = site.origin.get(path, headers={"Accept-Encoding": enc})
            got = s3.get(key)
            assert want.status == 200 and got.status == 200, (key, want, got)
            assert got.body == want.body, "%s: bytes differ from the origin's %s" % (key, enc)
            for h in ("Content-Type", "Cache-Control", "Content-Encoding"):
                assert got.header(h) == want.header(h), (key, h, got.header(h), want.header(h))
            meta = got.meta()
            if path.startswith("/a/"):
                assert meta == {}, (key, meta)
                assert want.header("CDN-Cache-Control") is None
            else:
                assert meta == {"cdn-cache-control": want.header("CDN-Cache-Control"),
                                "surrogate-key": want.header("Surrogate-Key")}, (key, meta)
                assert meta["surrogate-key"]
        # The brotli variant of the feed is brotli, not a copy of identity.
        assert s3.get("_br/u/ann/feed.json").header("Content-Encoding") == "br"
        puts = [t for m, t in s3.requests() if m in ("PUT", "DELETE")]
        assert puts and s3.signature_errors() == []
    finally:
        site.api.stop()


# ---------------------------------------------------------------- 2. the edge on the bucket


def test_edge_maps_the_bucket_back_to_the_origins_answers(sayin, store, tmp_path, s3,
                                                          speech_clip):
    site = storage_site(sayin, store, tmp_path, s3)
    edge = site.edges[0]
    try:
        r = site.api.post_raw(site.token, speech_clip.read_bytes(), text="through storage")
        assert r.status == 201, r
        post = r.json()
        settle(sayin, store, site.api)
        audio = path_of(post["audio_url"])

        # Every name in every coding: the origin's bytes, type, caching and
        # coding; no metadata, S3 header or purge key reaches a fan.
        for path in ["/u/ann/", "/u/ann/feed.json", "/authors.json"] + post_paths(post):
            for enc in CODINGS:
                got = edge.get(path, headers={"Accept-Encoding": enc})
                want = site.origin.get(path, headers={"Accept-Encoding": enc})
                assert got.status == 200 == want.status, (path, enc, got)
                assert got.body == want.body, (path, enc)
                for h in ("Content-Type", "Cache-Control", "Content-Encoding",
                          "Content-Security-Policy", "X-Content-Type-Options",
                          "Access-Control-Allow-Origin"):
                    assert got.header(h) == want.header(h), (path, enc, h, got.header(h))
                if not path.startswith("/a/"):
                    assert got.header("Vary") == "Accept-Encoding", (path, got)
                for name, _ in got.headers:
                    low = name.lower()
                    assert not low.startswith("x-amz-") and low not in (
                        "cdn-cache-control", "surrogate-key", "xkey", "cache-tag"), (path, name)
        # /u/H/ is the stored index.html (checked above); / and other
        # directories are no listing.
        assert edge.get("/u/ann/index.html").body == edge.get("/u/ann/").body

        # Range from the cache: the audio was fetched once (prewarm), and
        # ranges are cut from that copy, never sent to the bucket.
        whole = edge.get(audio).body
        before = s3.gets(audio)
        assert before == 1, s3.requests()
        for rng, (a, b) in (("bytes=0-99", (0, 99)), ("bytes=100-", (100, len(whole) - 1)),
                            ("bytes=-50", (len(whole) - 50, len(whole) - 1))):
            r = edge.get(audio, headers={"Range": rng})
            assert r.status == 206, (rng, r)
            assert r.body == whole[a:b + 1], rng
            assert r.header("Content-Range") == "bytes %d-%d/%d" % (a, b, len(whole)), r
            assert r.header("X-Cache") == "HIT", r
        assert s3.gets(audio) == before, "a Range request reached the bucket"
        assert not [t for m, t in storage_gets(s3) if "range" in t.lower()]

        # Surrogate keys came back from the metadata: an xkey purge of the
        # author's feed key empties those names, and only those.
        assert edge.get("/u/ann/feed.json").header("X-Cache") == "HIT"
        feed_gets = s3.gets("/u/ann/feed.json")
        r = edge.request("PURGE", "/", headers={"xkey-purge": "feed-ann"})
        assert r.status == 200 and int(r.header("X-Purged")) >= 2, r
        r = edge.get("/u/ann/feed.json")
        assert r.status == 200 and r.header("X-Cache") == "MISS", r
        assert s3.gets("/u/ann/feed.json") == feed_gets + 1
        assert edge.get("/authors.json").header("X-Cache") == "HIT"

        # The edge's lifetime is the metadata's CDN-Cache-Control, not
        # Cache-Control's s-maxage: a key written behind the publisher's
        # back with a one-second CDN lifetime is fetched again after it.
        s3.put("u/zed/feed.json", b'{"items": []}', "application/feed+json",
               {"Cache-Control": "public, max-age=60, s-maxage=86400",
                "x-amz-meta-cdn-cache-control": "max-age=1, stale-if-error=0",
                "x-amz-meta-surrogate-key": "feed-zed"})
        assert edge.get("/u/zed/feed.json").status == 200
        assert edge.get("/u/zed/feed.json").header("X-Cache") == "HIT"
        time.sleep(1.5)
        r = edge.get("/u/zed/feed.json")
        assert r.status == 200 and r.header("X-Cache") != "HIT", r
        assert s3.gets("u/zed/feed.json", unsigned=True) == 2

        # CORS preflights: answered as the origin answers them, without the
        # bucket.
        n = len(storage_gets(s3))
        pre = {"Origin": "https://fans.example", "Access-Control-Request-Method": "GET",
               "Access-Control-Request-Headers": "range"}
        for headers in (pre, {}):
            got = edge.request("OPTIONS", "/u/ann/feed.json", headers=headers)
            want = site.origin.request("OPTIONS", "/u/ann/feed.json", headers=headers)
            assert got.status == 204 == want.status, (got, want)
            for h in ("Allow", "Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
                      "Access-Control-Allow-Headers", "Access-Control-Max-Age",
                      "Cache-Control"):
                assert got.header(h) == want.header(h), (headers, h, got.header(h))
        assert len(storage_gets(s3)) == n and not [m for m, t in s3.requests() if m == "OPTIONS"]

        # No fan's request reaches a bucket listing.
        listing = re.compile(r"^/%s/?(\?.*)?$" % s3.bucket)
        n = len(storage_gets(s3))
        for target in ("/", "/?list-type=2", "/?prefix=u/&delimiter=/", "/?max-keys=1000",
                       "/u/", "/a/", "/p/", "/u/ann/p/", "//", "/?", "/u/ann/feed.json?list-type=2",
                       "/" + s3.bucket, "/" + s3.bucket + "/", "/" + s3.bucket + "?list-type=2",
                       "/_br/", "/_gzip/?list-type=2"):
            r = edge.get(target)
            assert b"ListBucketResult" not in r.body and b"<Contents>" not in r.body, target
            if target != "/u/ann/feed.json?list-type=2":
                assert r.status == 404, (target, r)
        sent = storage_gets(s3)[n:]
        assert sent, "the edge asked the bucket nothing"
        for m, t in sent:
            assert not listing.match(t) and "?" not in t and not t.endswith("/"), (m, t)
            assert t.startswith("/%s/" % s3.bucket), t
    finally:
        site.api.stop()


# ---------------------------------------------------------------- 3. end to end


def test_post_reaches_both_edges_within_a_second_and_deletion_leaves(sayin, store, tmp_path, s3,
                                                                     speech_clip):
    """Two storage-backed edges, both purged and prewarmed: the post is in
    each edge's feed (a hit: no fan waits for the bucket) within a second
    of its commit by the program's own log clock; a deletion takes it out
    of the bucket and off both edges."""
    site = storage_site(sayin, store, tmp_path, s3, edges=2)
    try:
        for edge in site.edges:
            for enc in CODINGS:
                assert feed_ids(edge, encoding=enc)[0] == []
                assert feed_ids(edge, encoding=enc)[1].header("X-Cache") == "HIT"
        before = delivered(site.api, "prewarm")
        r = site.api.post_raw(site.token, speech_clip.read_bytes(), text="to every edge")
        assert r.status == 201, r
        post = r.json()
        assert post["feed_url"].startswith(site.base)
        settle(sayin, store, site.api)
        t_commit = committed(site.api, post["id"])
        new = {j: t for j, t in delivered(site.api, "prewarm").items() if j not in before}
        assert new, site.api.log()
        took = max(new.values()) - t_commit
        assert took <= WITHIN * TIME_SCALE, "the post took %.3f s to be prewarmed" % took
        fetched = len(storage_gets(s3))
        for edge in site.edges:
            for enc in CODINGS:
                ids, r = feed_ids(edge, encoding=enc)
                assert ids == [post["id"]], (edge.port, enc, ids)
                assert r.header("X-Cache") == "HIT", (edge.port, enc, r)
            for path in post_paths(post):
                r = edge.get(path)
                assert r.status == 200 and r.header("X-Cache") == "HIT", (edge.port, path, r)
            # Each edge fetched the feed's three variants from the bucket
            # itself, once each, after the purge.
            for enc in ("_br/", "_gzip/", ""):
                txs = edge.backend_log("/%s/%su/ann/feed.json" % (s3.bucket, enc))
                assert len(txs) == 2, (edge.port, enc, txs)  # the empty feed, the new one
        assert len(storage_gets(s3)) == fetched, "a fan's request went to the bucket"

        r = site.api.delete(site.token, post["id"])
        assert r.status == 200, r
        settle(sayin, store, site.api)
        keys = s3.keys()
        for path in post_paths(post):
            for prefix in ("", "_gzip", "_br"):
                assert (prefix + path).lstrip("/") not in keys, (prefix + path, keys)
        for edge in site.edges:
            for path in post_paths(post):
                assert edge.get(path).status == 404, (edge.port, path)
            for enc in CODINGS:
                assert feed_ids(edge, encoding=enc)[0] == [], (edge.port, enc)
        deletes = [t for m, t in s3.requests() if m == "DELETE"]
        assert deletes and s3.signature_errors() == []
    finally:
        site.api.stop()


def fan_out(ports, path, n, when_sent=None):
    """n fans at once, spread over ports: every connection is opened and
    its GET sent, then when_sent() runs, then every answer is read.
    Returns [(status, body)]."""
    sel = selectors.DefaultSelector()
    conns = [socket.create_connection(("127.0.0.1", ports[i % len(ports)]), timeout=30)
             for i in range(n)]
    for s in conns:
        s.sendall(("GET %s HTTP/1.1\r\nHost: fans.test\r\nAccept-Encoding: br\r\n"
                   "Connection: close\r\n\r\n" % path).encode())
    if when_sent is not None:
        when_sent()
    bufs = {}
    for s in conns:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = b""
    deadline = time.monotonic() + 60 * TIME_SCALE
    open_ = len(conns)
    while open_ and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            chunk = key.fileobj.recv(1 << 16)
            if chunk:
                bufs[key.fileobj] += chunk
            else:
                sel.unregister(key.fileobj)
                key.fileobj.close()
                open_ -= 1
    for s in conns:
        s.close()
    assert open_ == 0, "%d fans got no complete answer" % open_
    out = []
    for s in conns:
        head, _, body = bufs[s].partition(b"\r\n\r\n")
        out.append((int(head.split(b" ", 2)[1]), body))
    return out


FANS = 1000


def test_a_thousand_fans_of_a_new_object_cost_one_storage_get_per_edge(sayin, store, tmp_path,
                                                                       s3, speech_clip):
    """Two edges, purged but not prewarmed, so the fans are the first to ask
    for a new post's audio: 1,000 concurrent fans, half at each edge, all
    arrive while the storage is frozen (SIGSTOP), so every one of them is a
    miss that waits (Varnish's waiting list, counted by MAIN.busy_sleep);
    the bucket then answers one GET per edge, and every fan gets the bytes."""
    per_edge = FANS // 2
    site = storage_site(sayin, store, tmp_path, s3, edges=2, prewarm=False,
                        edge_params=("thread_pool_min=%d" % (per_edge // 2 + 50),))
    try:
        r = site.api.post_raw(site.token, speech_clip.read_bytes(), text="everyone at once")
        assert r.status == 201, r
        post = r.json()
        settle(sayin, store, site.api)
        audio = path_of(post["audio_url"])
        want = s3.get(audio).body
        assert s3.gets(audio, unsigned=True) == 0
        for edge in site.edges:
            # A worker thread for every fan from the start (see
            # test_edges.py's test_concurrent_misses_cause_one_origin_request).
            assert wait_for(lambda: edge.stat("MAIN.threads") >= per_edge + 20, 60.0, 0.2), \
                "varnishd has only %d threads" % edge.stat("MAIN.threads")
        slept = [edge.stat("MAIN.busy_sleep") for edge in site.edges]

        def all_waiting():
            try:
                for edge, before in zip(site.edges, slept):
                    assert wait_for(lambda: edge.stat("MAIN.busy_sleep") - before >= per_edge - 1,
                                    10.0 * TIME_SCALE, 0.1), \
                        "only %d fans waited at %d" % (edge.stat("MAIN.busy_sleep") - before,
                                                       edge.port)
            finally:
                s3.resume()

        s3.pause()
        answers = fan_out([e.port for e in site.edges], audio, FANS, when_sent=all_waiting)
        assert all(st == 200 and body == want for st, body in answers), \
            sorted({st for st, _ in answers})
        assert s3.gets(audio, unsigned=True) == len(site.edges), s3.requests()
        for edge in site.edges:
            assert len(edge.backend_log("/%s%s" % (s3.bucket, audio))) == 1, edge.port
    finally:
        site.api.stop()


def test_fans_are_served_with_the_origin_stopped(sayin, store, tmp_path, s3, speech_clip):
    """sayin-origin switched off: every feed, page and audio still reaches
    fans, from the cache and from the bucket after a purge, and a new post
    still gets to them (the publisher never needs the origin)."""
    site = storage_site(sayin, store, tmp_path, s3)
    edge = site.edges[0]
    try:
        r = site.api.post_raw(site.token, speech_clip.read_bytes(), text="before")
        assert r.status == 201, r
        first = r.json()
        settle(sayin, store, site.api)
        paths = ["/u/ann/", "/u/ann/feed.json", "/authors.json"] + post_paths(first)
        want = {(p, enc): site.origin.get(p, headers={"Accept-Encoding": enc}).body
                for p in paths for enc in CODINGS}
        site.origin.stop()
        assert site.origin.proc.poll() is not None
        # Every URL from the bucket, not the cache: purge each one first.
        for p in paths:
            assert edge.purge(p).status == 200
        for (p, enc), body in want.items():
            r = edge.get(p, headers={"Accept-Encoding": enc})
            assert r.status == 200 and r.body == body, (p, enc, r)
        r = site.api.post_raw(site.token, speech_clip.read_bytes(), text="after")
        assert r.status == 201, r
        second = r.json()
        settle(sayin, store, site.api)
        assert feed_ids(edge)[0] == [second["id"], first["id"]]
        for p in post_paths(second):
            assert edge.get(p).status == 200, p
    finally:
        site.api.stop()


def test_edges_serve_stale_while_the_storage_is_down(sayin, store, tmp_path, s3, speech_clip):
    """Names live 1 s at the edge (CDN-Cache-Control from the metadata),
    with stale-if-error 4 s: with the storage stopped the edge serves the
    stale feed for that window (Age past the lifetime), then fails; audio
    (immutable, a year) is still served. The storage back, the edge
    fetches again."""
    lifetimes = ["--name-shared-max-age", "1", "--stale-while-revalidate", "0",
                 "--stale-if-error", "4"]
    site = storage_site(sayin, store, tmp_path, s3, settings=lifetimes)
    edge = site.edges[0]
    try:
        r = site.api.post_raw(site.token, speech_clip.read_bytes(), text="stale later")
        assert r.status == 201, r
        post = r.json()
        settle(sayin, store, site.api)
        audio = path_of(post["audio_url"])
        ids, r = feed_ids(edge)
        assert ids == [post["id"]]
        assert edge.get(audio).status == 200
        s3.stop()
        stale_ages, failed = [], None
        deadline = time.monotonic() + 15 * TIME_SCALE
        while time.monotonic() < deadline:
            r = edge.get("/u/ann/feed.json", headers={"Accept-Encoding": "br"})
            if r.status != 200:
                failed = r
                break
            assert json.loads(decoded(r))["items"][0]["id"] == post["id"]
            if r.header("X-Cache") == "STALE":
                stale_ages.append(int(r.header("Age")))
            time.sleep(0.2)
        assert stale_ages, "the edge never served the stale feed"
        assert failed is not None and failed.status == 503, failed
        # Served stale past its 1 s lifetime, never past 1 + 4 s.
        assert max(stale_ages) >= 2, stale_ages
        assert max(stale_ages) <= 5, stale_ages
        r = edge.get(audio)
        assert r.status == 200 and r.header("X-Cache") == "HIT", r
        s3.start()
        assert wait_for(lambda: edge.get("/u/ann/feed.json").status == 200, timeout=5)
    finally:
        site.api.stop()


# ---------------------------------------------------------------- CloudFront on the bucket

CLOUDFRONT_STORAGE_CASES = [
    # (uri, Accept-Encoding CloudFront forwards, the key's path sent to the bucket)
    ("/u/ann/feed.json", "br,gzip", "/_br/u/ann/feed.json"),
    ("/u/ann/feed.json", "br", "/_br/u/ann/feed.json"),
    ("/u/ann/feed.json", "gzip", "/_gzip/u/ann/feed.json"),
    ("/u/ann/feed.json", None, "/u/ann/feed.json"),
    ("/u/ann/", "gzip", "/_gzip/u/ann/index.html"),
    ("/u/ann/", None, "/u/ann/index.html"),
    ("/", "br", "/_br/index.html"),
    ("/", None, "/index.html"),
    ("/a/%s.opus" % ("ab" * 32), "br,gzip", "/a/%s.opus" % ("ab" * 32)),
    ("/p/01abc/embed", "gzip", "/_gzip/p/01abc/embed"),
]


def test_cloudfront_origin_request_function_maps_like_the_varnish_site(tmp_path):
    """cdn-config/cloudfront/storage-origin-request.js (Lambda@Edge), run
    with node: the same keys storage-site.vcl asks the bucket for, and never
    a query string (no listing)."""
    import os
    import subprocess
    from helpers.procs import find_program
    from helpers.s3rver import REPO
    node = find_program("node", "nodejs")
    fn = os.path.join(REPO, "cdn-config", "cloudfront", "storage-origin-request.js")
    script = tmp_path / "run.js"
    script.write_text(
        "const { handler } = require(%s);\n"
        "(async () => {\n"
        "  const out = [];\n"
        "  for (const [uri, ae] of JSON.parse(%s)) {\n"
        "    const headers = ae === null ? {} : {'accept-encoding': [{key: 'Accept-Encoding', value: ae}]};\n"
        "    const req = {uri, querystring: 'list-type=2&prefix=', headers, method: 'GET'};\n"
        "    const r = await handler({Records: [{cf: {request: req}}]});\n"
        "    out.push([r.uri, r.querystring]);\n"
        "  }\n"
        "  console.log(JSON.stringify(out));\n"
        "})();\n" % (json.dumps(fn), json.dumps(json.dumps(CLOUDFRONT_STORAGE_CASES))))
    r = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for (uri, ae, want), got in zip(CLOUDFRONT_STORAGE_CASES, json.loads(r.stdout)):
        assert got == [want, ""], (uri, ae, got)

"""The shipped CDN edge configurations, proven through real edges: Varnish
with cdn-config/varnish/sayin.vcl and nginx with cdn-config/nginx/edge.conf
in front of a real sayin-origin, on stores written by the real
sayin-publisher.

What reached the origin is read from its own /metrics
(sayin_origin_requests_total for the routes object and name; health probes
and scrapes are route other). The edges say HIT/MISS/STALE in X-Cache.
"""

import asyncio
import gzip
import hashlib
import os
import re
import signal
import subprocess
import time

import pytest

from helpers.api import author_add
from helpers.edges import NGINX_CONF, VARNISH_VCL, origin_content_requests, origin_metric
from helpers.http import brotli_decode, url_path
from helpers.procs import TIME_SCALE, find_program, wait_for

EDGES = ["varnish", "nginx"]
DECODE = {"br": brotli_decode, "gzip": gzip.decompress, None: lambda b: b}


@pytest.fixture(params=EDGES)
def kind(request):
    return request.param


@pytest.fixture
def site(sayin, tmp_path, short_wav):
    """start(origin_args=()) -> (origin, post JSON, store dir): one post by
    fan_fav, published with sayin-publisher, served by sayin-origin."""
    data = tmp_path / "store"

    def start(origin_args=()):
        post = sayin.post(data, "fan_fav", short_wav, text="through the edge").json
        origin = sayin.start_origin(data, args=origin_args)
        return origin, post, data
    return start


def wait_requests(origin, expected, timeout=5.0):
    """The origin's object+name request count once it reached expected (or
    the timeout passed), then checked again a moment later so a late extra
    request is seen too."""
    wait_for(lambda: origin_content_requests(origin) >= expected, timeout, 0.02)
    time.sleep(0.2)
    return origin_content_requests(origin)


FANS_HOST = "cdn.sayin.test"


def fetch_variants(edge, path, encodings=("br", "gzip", None), host=None):
    out = {}
    for ae in encodings:
        kw = {"host": host} if host else {}
        r = edge.get(path, headers={"Accept-Encoding": ae} if ae else None, **kw)
        assert r.status == 200, (ae, r)
        out[ae] = r
    return out


# ---------------------------------------------------------------- the configs


def test_varnish_vcl_compiles(tmp_path):
    varnishd = find_program("varnishd", "varnish")
    r = subprocess.run([varnishd, "-C", "-n", str(tmp_path / "v"), "-f", VARNISH_VCL],
                       capture_output=True, text=True, errors="replace", timeout=60)
    assert r.returncode == 0, "varnishd -C -f %s:\n%s" % (VARNISH_VCL, r.stderr[-3000:])


def test_nginx_conf_is_accepted(tmp_path):
    nginx = find_program("nginx", "nginx-light")
    (tmp_path / "temp").mkdir()
    r = subprocess.run([nginx, "-t", "-p", str(tmp_path) + "/", "-c", NGINX_CONF,
                        "-e", "stderr"], capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "test is successful" in out, (
        "nginx -t -c %s (needs libnginx-mod-http-cache-purge):\n%s" % (NGINX_CONF, out))


# ---------------------------------------------------------------- caching


def test_objects_and_names_are_cached(kind, site, edge_factory):
    origin, post, _ = site()
    edge = edge_factory(kind, origin)
    paths = [url_path(post["audio_url"]), url_path(post["feed_url"]),
             url_path(post["url"])]
    before = origin_content_requests(origin)
    for n, path in enumerate(paths, 1):
        counted = origin_content_requests(origin)
        direct = origin.get(path)
        assert direct.status == 200, direct
        base = wait_requests(origin, counted + 1)  # our direct GET, once counted
        first = edge.get(path)
        assert first.status == 200 and first.header("X-Cache") == "MISS", (path, first)
        assert wait_requests(origin, base + 1) == base + 1, path
        for _ in range(3):
            again = edge.get(path)
            assert again.status == 200, (path, again)
            assert again.header("X-Cache") == "HIT", (
                "%s: a repeated GET through %s was not a cache hit: %r" % (path, kind, again))
            assert again.body == direct.body, path
            assert again.header("Cache-Control") == direct.header("Cache-Control"), (
                "%s changed the origin's Cache-Control for %s" % (kind, path))
            assert again.header("ETag") == direct.header("ETag"), path
        assert wait_requests(origin, base + 1) == base + 1, (
            "%s: hits reached the origin through %s" % (path, kind))
    # The direct GETs plus one miss per URL.
    assert origin_content_requests(origin) == before + 2 * len(paths)


async def _get_all(port, path, n, before_send, before_read):
    """n concurrent GETs of path: opens n connections, calls before_send(),
    writes every request, calls await before_read(), then reads every
    response (Connection: close, read to EOF). Returns the raw responses."""
    conns = await asyncio.gather(*[asyncio.open_connection("127.0.0.1", port)
                                   for _ in range(n)])
    req = ("GET %s HTTP/1.1\r\nHost: cdn.test\r\nConnection: close\r\n\r\n" % path).encode()
    before_send()
    for _, w in conns:
        w.write(req)
    await asyncio.gather(*[w.drain() for _, w in conns])
    await before_read()

    async def read(r, w):
        data = await asyncio.wait_for(r.read(), 30)
        w.close()
        return data
    return await asyncio.gather(*[read(r, w) for r, w in conns])


def parse_raw(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out, rest = b"", body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    return status, headers, body


def test_concurrent_misses_cause_one_origin_request(kind, site, edge_factory):
    """1,000 GETs of a not-yet-cached object, all sent while the origin is
    stopped (SIGSTOP) so that every one of them arrives before the first
    fetch can finish: the origin answers exactly one."""
    origin, post, _ = site()
    # A worker thread for every request from the start: Varnish otherwise
    # grows its pools one thread at a time, queueing (and, past
    # thread_queue_limit, dropping) sessions meanwhile, which on a busy
    # machine is slower than the test's window.
    edge = edge_factory(kind, origin, **({"params": ("thread_pool_min=600",)}
                                          if kind == "varnish" else {}))
    path = url_path(post["audio_url"])
    digest = re.match(r"^/a/([0-9a-f]{64})\.opus$", path).group(1)
    n = 1000
    if kind == "varnish":
        # Varnish starts its threads gradually: wait until there is one for
        # every request, or requests sit in the session queue past the
        # fetch and arrive as hits, proving nothing about coalescing.
        assert wait_for(lambda: edge.stat("MAIN.threads") >= n + 20, 60.0, 0.2), \
            "varnishd has only %d threads" % edge.stat("MAIN.threads")
    before = origin_content_requests(origin)
    slept_before = edge.stat("MAIN.busy_sleep") if kind == "varnish" else 0
    conns_before = edge.stat("MAIN.sess_conn") if kind == "varnish" else 0

    async def all_arrived():
        # The origin is stopped: give the edge time to read every request
        # (Varnish counts its waiters only when their tasks end, so the
        # count is checked afterwards). Judged by Varnish's own count of
        # accepted connections, not by a fixed window: on a loaded machine
        # accepting 1,000 connections can take many seconds.
        if kind == "varnish":
            await asyncio.get_running_loop().run_in_executor(None, lambda: wait_for(
                lambda: edge.stat("MAIN.sess_conn") - conns_before >= n,
                60.0 * TIME_SCALE, 0.1))
        await asyncio.sleep(2.0 * TIME_SCALE)
        os.kill(origin.proc.pid, signal.SIGCONT)

    try:
        raws = asyncio.run(_get_all(edge.port, path, n,
                                    lambda: os.kill(origin.proc.pid, signal.SIGSTOP),
                                    all_arrived))
    finally:
        os.kill(origin.proc.pid, signal.SIGCONT)
    statuses = {}
    for raw in raws:
        status, _, body = parse_raw(raw)
        statuses[status] = statuses.get(status, 0) + 1
        assert status != 200 or hashlib.sha256(body).hexdigest() == digest
    assert statuses == {200: n}, statuses
    after = wait_requests(origin, before + 1)
    assert after == before + 1, (
        "%d concurrent GETs of a new object through %s cost the origin %d requests, not 1"
        % (n, kind, after - before))
    if kind == "varnish":
        # They were concurrent: nearly all of them waited on the one fetch.
        slept = edge.stat("MAIN.busy_sleep") - slept_before
        assert slept >= 0.9 * n, "only %d of %d requests waited for the fetch (dropped %d)" % (
            slept, n, edge.stat("MAIN.sess_dropped"))


def test_range_is_cut_from_the_cached_object(kind, site, edge_factory):
    origin, post, _ = site()
    edge = edge_factory(kind, origin)
    path = url_path(post["audio_url"])
    size = post["size_in_bytes"]
    counted = origin_content_requests(origin)
    whole = origin.get(path).body
    assert len(whole) == size > 400
    # The origin counts a request once its response is written, possibly
    # on another event loop than the one answering /metrics: wait until our
    # own GET is counted before taking the baseline.
    before = wait_requests(origin, counted + 1)
    partial_before = origin_metric(origin, "sayin_origin_partial_total")

    cold = edge.get(path, headers={"Range": "bytes=0-99"})
    assert cold.status == 206, cold
    assert cold.header("Content-Range") == "bytes 0-99/%d" % size, cold
    assert cold.body == whole[:100]
    for spec, first, last in (("bytes=100-299", 100, 299),
                              ("bytes=%d-" % (size - 37), size - 37, size - 1),
                              ("bytes=-50", size - 50, size - 1)):
        r = edge.get(path, headers={"Range": spec})
        assert r.status == 206 and r.header("X-Cache") == "HIT", (spec, r)
        assert r.header("Content-Range") == "bytes %d-%d/%d" % (first, last, size), (spec, r)
        assert r.body == whole[first:last + 1], spec
    assert wait_requests(origin, before + 1) == before + 1, (
        "Range requests through %s reached the origin" % kind)
    assert origin_metric(origin, "sayin_origin_partial_total") == partial_before, (
        "%s forwarded a Range to the origin instead of fetching the whole object" % kind)


def test_encodings_are_kept_apart(kind, site, edge_factory):
    origin, post, _ = site()
    edge = edge_factory(kind, origin)
    path = url_path(post["feed_url"])
    counted = origin_content_requests(origin)
    direct = fetch_variants(origin, path)
    identity = direct[None].body
    before = wait_requests(origin, counted + len(direct))  # the direct GETs, once counted
    for rnd, expect in ((1, "MISS"), (2, "HIT")):
        got = fetch_variants(edge, path)
        for ae, r in got.items():
            assert r.header("Content-Encoding") == ae, (rnd, ae, r)
            assert r.header("X-Cache") == expect, (rnd, ae, r)
            assert r.body == direct[ae].body, (
                "round %d: the %s variant through %s is not the origin's bytes" % (rnd, ae, kind))
            assert DECODE[ae](r.body) == identity
            assert "accept-encoding" in ",".join(r.header_all("Vary")).lower(), (ae, r)
    # Browsers' spellings map onto the same three variants.
    for ae, want in (("gzip, deflate, br", "br"), ("deflate, gzip", "gzip"),
                     ("br;q=0, gzip", "gzip"), ("deflate", None), ("identity", None)):
        r = edge.get(path, headers={"Accept-Encoding": ae})
        assert r.status == 200 and r.header("X-Cache") == "HIT", (ae, r)
        assert r.header("Content-Encoding") == want and r.body == direct[want].body, (ae, r)
    assert wait_requests(origin, before + 3) == before + 3, (
        "expected one origin request per encoding through %s" % kind)


# ---------------------------------------------------------------- stale


def test_stale_is_served_while_the_origin_is_down(kind, site, edge_factory):
    # Names live one second at the edge and may not be served stale while
    # the origin is up (stale-while-revalidate=0): what follows is
    # stale-if-error.
    origin, post, _ = site(origin_args=["--name-shared-max-age", "1",
                                        "--stale-while-revalidate", "0"])
    edge = edge_factory(kind, origin)
    feed, audio = url_path(post["feed_url"]), url_path(post["audio_url"])
    warm = {p: edge.get(p) for p in (feed, audio)}
    for p, r in warm.items():
        assert r.status == 200 and r.header("X-Cache") == "MISS", (p, r)
    # Past the names' one-second lifetime, as nginx counts it (whole
    # seconds: a copy stored at 10.9 s is fresh until 12.0 s).
    time.sleep(2.2)
    origin.stop(signal.SIGKILL)

    r = edge.get(feed)
    assert r.status == 200, (
        "%s did not serve the stale feed while the origin was down: %r" % (kind, r))
    assert r.header("X-Cache") == "STALE", r
    assert r.body == warm[feed].body
    r = edge.get(audio)
    assert r.status == 200 and r.header("X-Cache") == "HIT", r
    assert r.body == warm[audio].body
    # A URL the edge never had cannot be served.
    r = edge.get("/u/nobody/feed.json")
    assert r.status in (502, 503, 504), r


# ---------------------------------------------------------------- purges


def test_purge_of_a_url_refreshes_it(kind, site, edge_factory, sayin, wav_factory):
    origin, post, data = site()
    edge = edge_factory(kind, origin)
    path = url_path(post["feed_url"])
    # Fans ask with the CDN's host name, the purge driver with the edge's
    # address (Edge.purge's Host): both must name the same copy.
    old = fetch_variants(edge, path, host=FANS_HOST)
    for r in fetch_variants(edge, path, host=FANS_HOST).values():
        assert r.header("X-Cache") == "HIT", r

    new = sayin.post(data, "fan_fav", wav_factory("second.wav", seed=7), text="news").json
    assert new["id"].encode() in origin.get(path).body, "the origin does not have the post yet"
    # The feed's edge lifetime is a day: without a purge the edge keeps it.
    for ae, r in fetch_variants(edge, path, host=FANS_HOST).items():
        assert r.header("X-Cache") == "HIT" and r.body == old[ae].body, (ae, r)

    p = edge.purge(path)
    assert p.status == 200, p
    if kind == "varnish":
        assert p.header("X-Purged") == "3", p
        assert p.body == b"purged 3 objects\n", p
    for ae, r in fetch_variants(edge, path, host=FANS_HOST).items():
        assert r.header("X-Cache") == "MISS", (
            "the %s variant was not purged by one PURGE %s through %s" % (ae, path, kind))
        assert new["id"] in DECODE[ae](r.body).decode(), (ae, r)
    # Nothing cached: still 200 for the caller.
    edge.purge("/u/nobody/feed.json")
    assert edge.purge("/u/nobody/feed.json").status == 200


def test_xkey_purge_by_surrogate_key(site, edge_factory, sayin, wav_factory):
    origin, post, data = site()
    edge = edge_factory("varnish", origin)
    feed, author, page = (url_path(post["feed_url"]), "/u/fan_fav/", url_path(post["url"]))
    paths = (feed, author, page)
    for p in paths:
        assert edge.get(p).status == 200
        assert edge.get(p).header("X-Cache") == "HIT", p
    new = sayin.post(data, "fan_fav", wav_factory("second.wav", seed=7), text="news").json

    r = edge.purge("/", headers={"xkey-purge": "feed-fan_fav"})
    assert r.status == 200 and r.header("X-Purged") == "2", r
    assert r.body == b"purged 2 objects\n", r
    for p in (feed, author):
        got = edge.get(p)
        assert got.header("X-Cache") == "MISS" and new["id"] in got.body.decode(), (p, got)
    assert edge.get(page).header("X-Cache") == "HIT", "feed-fan_fav purged the post page"

    r = edge.purge("/", headers={"xkey-purge": "author-fan_fav"})
    assert r.status == 200 and int(r.header("X-Purged")) == 3, r
    for p in paths:
        assert edge.get(p).header("X-Cache") == "MISS", p

    # Soft purge: the copy goes stale (served while refreshed), not away.
    assert edge.get(feed).header("X-Cache") == "HIT"
    r = edge.purge("/", headers={"xkey-softpurge": "feed-fan_fav"})
    assert r.status == 200 and int(r.header("X-Purged")) >= 1, r
    assert edge.get(feed).header("X-Cache") == "STALE"


def test_purge_is_refused_outside_the_acl(kind, site, edge_factory):
    origin, post, _ = site()
    edge = edge_factory(kind, origin, purgers=("192.0.2.1",))
    path = url_path(post["feed_url"])
    assert edge.get(path).status == 200
    attempts = [("PURGE", path, None)]
    if kind == "varnish":
        attempts.append(("PURGE", "/", {"xkey-purge": "feed-fan_fav"}))
        attempts.append(("PURGE", "/", {"xkey-softpurge": "feed-fan_fav"}))
    for method, p, headers in attempts:
        r = edge.request(method, p, headers=headers)
        assert r.status in (403, 405), (
            "%s accepted a purge from an address outside its ACL: %r" % (kind, r))
    r = edge.get(path)
    assert r.header("X-Cache") == "HIT", "a refused purge removed the feed: %r" % r


def test_purged_object_the_origin_no_longer_has_is_gone(kind, site, edge_factory, sayin,
                                                        tmp_path):
    origin, post, _ = site()
    edge = edge_factory(kind, origin)
    path = url_path(post["audio_url"])
    assert edge.get(path).status == 200
    assert edge.get(path).header("X-Cache") == "HIT"

    # The origin now serves a store without the object (a deletion).
    port = origin.port
    assert origin.stop() == 0
    empty = tmp_path / "empty-store"
    author_add(sayin, empty, "someone_else")
    origin2 = sayin.start_origin(empty, port=port)
    assert origin2.get(path).status == 404
    r = edge.get(path)
    assert r.status == 200 and r.header("X-Cache") == "HIT", (
        "immutable objects are served from the edge without asking the origin")

    assert edge.purge(path).status == 200
    # The edge may take a moment to see the new origin as healthy.
    final = wait_for(lambda: edge.get(path).status == 404, 10.0, 0.1)
    r = edge.get(path)
    assert final and r.status == 404, (
        "after a purge, %s still answers %r for an object the origin no longer has"
        % (kind, r))

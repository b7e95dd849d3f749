"""The shipped edges against spellings, admin paths and header leaks, through
real varnishd and nginx in front of a real sayin-origin (the URL contract in
cdn-config/README.md, "One URL, one object").

The origin names what it serves by the request-target's path up to the first
"?" or "#", byte for byte. Every other spelling of a URL must either be the
same cache object (a hit, the origin not asked again) or be refused with 400:
never a cache key of its own (unbounded load on the origin, junk in the
cache), never a key that names another path than the one sent to the origin
(a 404 cached under a real feed's key). Requests are written as raw bytes
(Edge.request): an HTTP library would drop "#" or resolve dot segments
before they reached the edge.

What reached the origin is read from its own /metrics
(sayin_origin_requests_total, routes object and name).
"""

import json
import os
import re
import subprocess

import pytest

from helpers.edges import CDN_CONFIG, VARNISH_VCL, origin_content_requests
from helpers.http import url_path
from helpers.procs import find_program, wait_for

from test_edges import EDGES, wait_requests

FANS_HOST = "cdn.sayin.test"
# What the origin sends for the edge, and the edge's own bookkeeping: never
# for fans.
INTERNAL_HEADERS = ("surrogate-key", "surrogate-control", "cache-tag", "cdn-cache-control",
                    "xkey")
# RFC 9110 15.4.5: a 304 carries no representation metadata.
REPRESENTATION_HEADERS = ("content-type", "content-encoding", "content-language",
                          "content-length", "content-range")


@pytest.fixture(params=EDGES)
def kind(request):
    return request.param


@pytest.fixture
def site(sayin, tmp_path, short_wav):
    """start(origin_args=()) -> (origin, post JSON): one post by fan_fav,
    served by sayin-origin."""
    def start(origin_args=()):
        data = tmp_path / "store"
        post = sayin.post(data, "fan_fav", short_wav, text="spellings").json
        return sayin.start_origin(data, args=origin_args), post
    return start


def internal_headers(r):
    return [(k, v) for k, v in r.headers
            if k.lower() in INTERNAL_HEADERS or k.lower().startswith("x-sayin")]


def fan_get(edge, target, headers=None, method="GET"):
    return edge.request(method, target, headers=headers, host=FANS_HOST)


def assert_refusal(r):
    """A refusal by the edge is never cached (its text is the edge's own:
    nginx's parser answers some with its HTML page before edge.conf runs)."""
    assert r.header("Cache-Control") == "no-store", r
    assert (r.header("Content-Type") or "").startswith("text/"), r


def assert_one_object_or_400(kind, edge, origin, canonical, spellings):
    """Every spelling, first on a cold cache, then again once the canonical
    URL is cached: 400, or the canonical object (the origin's bytes, a hit
    the second time). The canonical URL still gets the origin's object after
    the cold spellings (none of them cached something else under its key),
    and the second round costs the origin nothing."""
    direct = origin.get(canonical)
    assert direct.status == 200, direct
    for target in spellings:
        r = fan_get(edge, target)
        assert r.status == 400 or (r.status == 200 and r.body == direct.body), (
            "%s: %r on a cold cache got %r, neither 400 nor %s's object"
            % (kind, target, r, canonical))
        if r.status == 400:
            assert_refusal(r)
    r = fan_get(edge, canonical)
    assert r.status == 200 and r.body == direct.body, (
        "%s: after the spellings, %s itself answers %r: a spelling cached another "
        "answer under its key" % (kind, canonical, r))
    r = fan_get(edge, canonical)
    assert r.status == 200 and r.header("X-Cache") == "HIT", r
    before = wait_requests(origin, origin_content_requests(origin))
    for target in spellings:
        r = fan_get(edge, target)
        assert r.status == 400 or (r.status == 200 and r.header("X-Cache") == "HIT"
                                   and r.body == direct.body), (
            "%s: %r once %s is cached: %r (a cache key of its own)"
            % (kind, target, canonical, r))
    after = wait_requests(origin, before + 1, timeout=0.5)
    assert after == before, (
        "%s: %d spellings of a cached %s reached the origin %d times"
        % (kind, len(spellings), canonical, after - before))


# ---------------------------------------------------------------- spellings


def test_query_and_fragment_are_one_object_or_400(kind, site, edge_factory):
    origin, post = site()
    edge = edge_factory(kind, origin)
    feed = url_path(post["feed_url"])
    assert_one_object_or_400(kind, edge, origin, feed, [
        feed + "#x", feed + "#", feed + "#a1b2c3", feed + "?#x", feed + "?a=1#x",
        feed + "#x?a=1", feed + "?", feed + "?x=1", feed + "?x=%41&y=%2F", feed + "%23",
        feed + "%23x", feed + "%3Fx=1", feed + "%3fx=1"])
    # A random fragment per request is not a new cache entry each time.
    for n in range(5):
        r = fan_get(edge, "%s#%08x" % (feed, n * 7919))
        assert r.status == 400 or r.header("X-Cache") == "HIT", (kind, r)


def test_percent_encoding_is_one_object_or_400(kind, site, edge_factory):
    origin, post = site()
    edge = edge_factory(kind, origin)
    feed = url_path(post["feed_url"])  # /u/fan_fav/feed.json
    assert feed == "/u/fan_fav/feed.json", feed
    assert_one_object_or_400(kind, edge, origin, feed, [
        "/u/fan%5ffav/feed.json", "/u/fan%5Ffav/feed.json",      # "_", either case of hex
        "/u/%66an_fav/feed.json", "/%75/fan_fav/feed.json",       # "f", "u"
        "/u/fan_fav/feed%2ejson", "/u/fan_fav/feed%2Ejson",       # "."
        "/u%2ffan_fav/feed.json", "/u%2Ffan_fav%2Ffeed.json",     # "/"
        "/u/fan_fav/feed.json%00", "/u/fan_fav/%zzfeed.json", "/u/fan_fav/feed.json%"])


def test_dot_segments_are_one_object_or_400(kind, site, edge_factory):
    origin, post = site()
    edge = edge_factory(kind, origin)
    feed = url_path(post["feed_url"])
    assert_one_object_or_400(kind, edge, origin, feed, [
        "/u/fan_fav/./feed.json", "/./u/fan_fav/feed.json", "/u/x/../fan_fav/feed.json",
        "/u/fan_fav/feed/../feed.json", "/u/fan_fav/x/y/../../feed.json",
        "/u/./fan_fav/./feed.json", "/u/fan_fav/%2e/feed.json", "/u/x/%2E%2E/fan_fav/feed.json"])


def test_double_slashes_are_one_object_or_400(kind, site, edge_factory):
    origin, post = site()
    edge = edge_factory(kind, origin)
    feed = url_path(post["feed_url"])
    assert_one_object_or_400(kind, edge, origin, feed, [
        "//u/fan_fav/feed.json", "/u//fan_fav/feed.json", "/u/fan_fav//feed.json",
        "///u///fan_fav///feed.json", "//u/fan_fav/feed.json?x#y"])


def test_bytes_outside_the_url_alphabet_are_one_object_or_400(kind, site, edge_factory):
    origin, post = site()
    edge = edge_factory(kind, origin)
    feed = url_path(post["feed_url"])
    assert_one_object_or_400(kind, edge, origin, feed, [
        "/u\\fan_fav/feed.json", "/u/fan_fav/feed.json\x80", "/u/fan_fav/feed.json\"",
        "/u/fan_fav/feed.json<x>", "/u/fan_fav/feed.json{}", "/u/fan_fav/feed.json|x"])


def test_the_origin_is_sent_the_key_it_is_cached_under(kind, site, edge_factory):
    """What the origin is asked for a spelling that is not refused is the
    canonical path itself (its access log), so the object cached under that
    key is the origin's answer for that same path."""
    origin, post = site(origin_args=["--access-log", "on"])
    edge = edge_factory(kind, origin)
    page = url_path(post["url"])
    for target in ("/" + page + "?utm_source=x", page):
        r = fan_get(edge, target)
        assert r.status == 200, (target, r)

    def asked():
        lines = [json.loads(l) for l in origin.log().splitlines() if l.startswith("{")]
        return [l["path"] for l in lines if l["method"] == "GET" and "/p/" in l["path"]]
    wait_for(lambda: asked(), 5.0, 0.05)
    wait_requests(origin, origin_content_requests(origin))  # any late line, too
    assert asked() == [page], (
        "%s asked the origin for %r instead of %r once" % (kind, asked(), page))


# ---------------------------------------------------------------- admin paths


ADMIN_SPELLINGS = [
    "/metrics", "/metrics/", "/metrics#x", "/metrics?x", "/metrics?", "/metrics?#",
    "/%6detrics", "/%6Detrics", "/metric%73", "/%2fmetrics", "//metrics", "///metrics",
    "/./metrics", "/x/../metrics", "/metrics/.", "/METRICS", "/Metrics", "/metrics.txt",
    "/metrics/x", "http://%s/metrics" % FANS_HOST, "/healthz", "/healthz#", "/healthz?x",
    "/HEALTHZ", "//healthz", "/./healthz", "/%68ealthz", "/x/../healthz"]


def test_admin_paths_are_unreachable_however_spelled(kind, site, edge_factory):
    origin, _ = site()
    edge = edge_factory(kind, origin)
    before = wait_requests(origin, origin_content_requests(origin))
    for method in ("GET", "HEAD"):
        for target in ADMIN_SPELLINGS:
            r = fan_get(edge, target, method=method)
            assert r.status in (400, 404), (
                "%s: %s %r reached an admin page: %r" % (kind, method, target, r))
            assert b"sayin_origin" not in r.body and r.body != b"ok\n", (kind, target, r)
            assert_refusal(r)
    after = wait_requests(origin, before + 1, timeout=0.5)
    assert after == before, (
        "%s: spellings of /metrics and /healthz reached the origin %d times"
        % (kind, after - before))


# ---------------------------------------------------------------- headers


def answers_to_fans(edge, post):
    """(label, response) for most kinds of answer an edge gives: miss, hit,
    each encoding, a range, HEAD, a 404 miss and hit, a 304, 400, an admin
    refusal, OPTIONS (passed), PURGE."""
    feed, audio, page = (url_path(post["feed_url"]), url_path(post["audio_url"]),
                         url_path(post["url"]))
    out = []
    for label, target, headers, method in (
            ("feed miss", feed, None, "GET"), ("feed hit", feed, None, "GET"),
            ("feed br miss", feed, {"Accept-Encoding": "br"}, "GET"),
            ("feed br hit", feed, {"Accept-Encoding": "br"}, "GET"),
            ("page miss", page, {"Accept-Encoding": "gzip"}, "GET"),
            ("page head", page, {"Accept-Encoding": "gzip"}, "HEAD"),
            ("object miss", audio, None, "GET"), ("object range", audio,
                                                  {"Range": "bytes=0-9"}, "GET"),
            ("404 miss", "/u/nobody/feed.json", None, "GET"),
            ("404 hit", "/u/nobody/feed.json", None, "GET"),
            ("400", feed + "#x", None, "GET"), ("admin", "/metrics", None, "GET"),
            ("options", feed, {"Origin": "https://x.test",
                               "Access-Control-Request-Method": "GET"}, "OPTIONS")):
        out.append((label, fan_get(edge, target, headers=headers, method=method)))
    etag = dict(out)["feed hit"].header("ETag")
    out.append(("304", fan_get(edge, feed, headers={"If-None-Match": etag})))
    out.append(("purge", edge.purge("/u/nobody/feed.json")))
    return out


def test_internal_headers_never_reach_fans(kind, site, edge_factory):
    origin, post = site()
    edge = edge_factory(kind, origin)
    answers = answers_to_fans(edge, post)
    assert dict(answers)["feed hit"].header("X-Cache") == "HIT"
    for label, r in answers:
        assert not internal_headers(r), (
            "%s: the %s answer (%d) carries internal headers %r"
            % (kind, label, r.status, internal_headers(r)))


def test_internal_headers_never_reach_fans_on_hit_for_miss_and_errors(kind, site,
                                                                     edge_factory):
    # Names the CDN may not keep (CDN-Cache-Control: max-age=0, s-maxage=0):
    # every request is a miss the edge remembers as uncacheable.
    origin, post = site(origin_args=["--name-shared-max-age", "0"])
    edge = edge_factory(kind, origin)
    feed = url_path(post["feed_url"])
    for n in range(3):
        r = fan_get(edge, feed)
        assert r.status == 200 and r.header("X-Cache") != "HIT", (n, r)
        assert not internal_headers(r), (
            "%s: uncacheable answer %d carries %r" % (kind, n, internal_headers(r)))
    origin.stop()
    r = fan_get(edge, feed)
    assert r.status >= 500, r
    assert not internal_headers(r), (kind, r)


def test_304_has_no_representation_metadata(kind, site, edge_factory):
    origin, post = site()
    edge = edge_factory(kind, origin)
    feed, page = url_path(post["feed_url"]), url_path(post["url"])

    # A conditional request on a cold cache (a miss answered with 304).
    cold = origin.get(page, headers={"Accept-Encoding": "br"})
    r = fan_get(edge, page, headers={"Accept-Encoding": "br",
                                     "If-None-Match": cold.header("ETag")})
    assert r.status == 304, (kind, r)
    checked = [("cold If-None-Match", r, cold)]

    full = fan_get(edge, feed, headers={"Accept-Encoding": "br"})
    assert full.status == 200 and full.header("Content-Encoding") == "br", full
    etag, modified = full.header("ETag"), full.header("Last-Modified")
    for label, conds in (("If-None-Match", {"If-None-Match": etag}),
                         ("weak If-None-Match", {"If-None-Match": "W/" + etag}),
                         ("If-None-Match list", {"If-None-Match": '"nope", ' + etag}),
                         ("If-None-Match *", {"If-None-Match": "*"}),
                         ("If-Modified-Since", {"If-Modified-Since": modified})):
        conds["Accept-Encoding"] = "br"
        r = fan_get(edge, feed, headers=conds)
        assert r.status == 304 and r.body == b"", (kind, label, r)
        checked.append((label, r, full))
    for label, r, whole in checked:
        extra = [k for k, _ in r.headers if k.lower() in REPRESENTATION_HEADERS]
        assert not extra, "%s: the 304 (%s) carries %r" % (kind, label, extra)
        assert not internal_headers(r), (kind, label, internal_headers(r))
        # What a 304 must carry (RFC 9110 15.4.5).
        assert r.header("ETag") == whole.header("ETag"), (label, r)
        assert r.header("Cache-Control") == whole.header("Cache-Control"), (label, r)
        assert "accept-encoding" in (r.header("Vary") or "").lower(), (label, r)

    # A condition that does not hold gets the whole 200, with its metadata.
    for label, conds in (("other tag", {"If-None-Match": '"nope"'}),
                         ("tag wins over date", {"If-None-Match": '"nope"',
                                                 "If-Modified-Since": modified}),
                         ("older date", {"If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}),
                         ("bad date", {"If-Modified-Since": "yesterday"})):
        conds["Accept-Encoding"] = "br"
        r = fan_get(edge, feed, headers=conds)
        assert r.status == 200 and r.body == full.body, (kind, label, r)
        assert r.header("Content-Type") == full.header("Content-Type"), (kind, label, r)
        assert r.header("Content-Encoding") == "br", (kind, label, r)


# ---------------------------------------------------------------- hosted CDNs


FASTLY_VCL = os.path.join(CDN_CONFIG, "fastly", "sayin.vcl")
SHARED_SUB = re.compile(r"^# BEGIN sayin_normalize_url\b.*?^# END sayin_normalize_url$",
                        re.S | re.M)


def shared_sub(path):
    with open(path) as f:
        m = SHARED_SUB.search(f.read())
    assert m, "%s has no '# BEGIN/END sayin_normalize_url' block" % path
    return m.group(0)


def test_fastly_vcl_normalizes_like_the_varnish_edge(tmp_path):
    """Fastly cannot be run here. Its normalization is the very subroutine
    the Varnish edge runs (and the tests above prove), compiled by varnishd
    on its own, and its snippets call it and refuse what it refuses."""
    sub = shared_sub(FASTLY_VCL)
    assert sub == shared_sub(VARNISH_VCL), (
        "cdn-config/fastly/sayin.vcl's sayin_normalize_url differs from varnish/sayin.vcl's")
    vcl = tmp_path / "fastly-normalize.vcl"
    vcl.write_text('vcl 4.1;\nbackend b { .host = "127.0.0.1"; .port = "9"; }\n%s\n'
                   "sub vcl_recv {\n    call sayin_normalize_url;\n}\n" % sub)
    # -j none: as root, varnishd's jail would read the file as the varnish
    # user, who cannot enter pytest's 0700 tmp_path.
    r = subprocess.run([find_program("varnishd", "varnish"), "-C", "-j", "none",
                        "-n", str(tmp_path / "v"), "-f", str(vcl)],
                       capture_output=True, text=True, errors="replace", timeout=60)
    assert r.returncode == 0, "varnishd -C on Fastly's subroutine:\n%s" % r.stderr[-3000:]

    with open(FASTLY_VCL) as f:
        text = f.read()
    recv = re.search(r"# snippet type: recv\n(.*?)(?=\n# snippet type:|\Z)", text, re.S)
    assert recv, "no recv snippet in %s" % FASTLY_VCL
    recv = recv.group(1)
    call = recv.find("call sayin_normalize_url;")
    assert call >= 0, "the recv snippet does not call sayin_normalize_url"
    assert re.search(r'if \(req\.http\.x-sayin-refuse == "admin"\) \{\s*error 404', recv[call:]), \
        "the recv snippet does not answer 404 to admin paths"
    assert re.search(r"if \(req\.http\.x-sayin-refuse\) \{\s*error 400", recv[call:]), \
        "the recv snippet does not answer 400 to other spellings"
    deliver = re.search(r"# snippet type: deliver\n(.*?)(?=\n# snippet type:|\Z)", text, re.S)
    assert deliver, "no deliver snippet in %s" % FASTLY_VCL
    for name in ("Surrogate-Key", "Cache-Tag", "CDN-Cache-Control"):
        assert "unset resp.http.%s;" % name in deliver.group(1), name
    assert re.search(r"if \(resp\.status == 304\) \{[^}]*unset resp\.http\.Content-Type;",
                     deliver.group(1)), "the deliver snippet leaves Content-Type on a 304"


def test_cloudflare_rules_block_admin_paths_and_spellings():
    """Cloudflare cannot be run here: its rules must at least say, in its
    rules language, what the edges above do."""
    with open(os.path.join(CDN_CONFIG, "cloudflare", "custom-rules.json")) as f:
        rules = json.load(f)["rules"]
    blocks = " or ".join(r["expression"] for r in rules if r["action"] == "block")
    for part in ('starts_with(lower(http.request.uri.path), "/metrics")',
                 'starts_with(lower(http.request.uri.path), "/healthz")',
                 'raw.http.request.uri.path contains "%"',
                 'raw.http.request.uri contains "#"',
                 'raw.http.request.uri.path contains "/./"',
                 'raw.http.request.uri.path contains "/../"'):
        assert part in blocks, "cloudflare/custom-rules.json does not block %s" % part
    with open(os.path.join(CDN_CONFIG, "cloudflare", "url-normalization.json")) as f:
        assert json.load(f) == {"type": "cloudflare", "scope": "both"}
    with open(os.path.join(CDN_CONFIG, "cloudflare", "response-headers.json")) as f:
        removed = set()
        for rule in json.load(f)["rules"]:
            for name, op in rule["action_parameters"]["headers"].items():
                if op["operation"] == "remove":
                    removed.add(name.lower())
    for name in ("surrogate-key", "cdn-cache-control", "surrogate-control"):
        assert name in removed, "cloudflare/response-headers.json keeps %s" % name


CLOUDFRONT_CASES = [
    # (uri, what the function makes of it: the path sent on, or a status)
    ("/u/fan_fav/feed.json", "/u/fan_fav/feed.json"),
    ("//u//fan_fav/feed.json", "/u/fan_fav/feed.json"),
    ("/u/fan_fav/feed.json#x", 400), ("/u/%66an_fav/feed.json", 400),
    ("/u/fan_fav/./feed.json", 400), ("/u/x/../fan_fav/feed.json", 400),
    ("/u\\fan_fav", 400), ("/metrics", 404), ("/METRICS/x", 404), ("//metrics", 404),
    ("/healthz", 404), ("/%6detrics", 400)]


def test_cloudfront_function_normalizes_like_the_edges(tmp_path):
    """The CloudFront viewer-request function, run with node on the
    contract's spellings (CloudFront Functions are JavaScript)."""
    node = find_program("node", "nodejs")
    fn = os.path.join(CDN_CONFIG, "cloudfront", "normalize-url.js")
    script = tmp_path / "run.js"
    script.write_text(
        "const fs = require('fs');\n"
        "const handler = new Function(fs.readFileSync(%s, 'utf8') + '\\nreturn handler;')();\n"
        "const out = JSON.parse(%s).map(([uri]) => {\n"
        "  const r = handler({request: {uri, querystring: {x: {value: '1'}}, headers: {}}});\n"
        "  return r.statusCode ? r.statusCode : [r.uri, Object.keys(r.querystring).length];\n"
        "});\n"
        "console.log(JSON.stringify(out));\n"
        % (json.dumps(fn), json.dumps(json.dumps(CLOUDFRONT_CASES))))
    r = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for (uri, want), got in zip(CLOUDFRONT_CASES, json.loads(r.stdout)):
        if isinstance(want, int):
            assert got == want, (uri, got)
        else:
            assert got == [want, 0], (uri, got)

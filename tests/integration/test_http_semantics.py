"""sayin-origin's HTTP semantics (RFC 9110 / 9111 / 9213), over raw sockets:
range requests, conditional requests, precompressed variants chosen by
Accept-Encoding, caching headers for CDNs (Cache-Control, CDN-Cache-Control,
Surrogate-Key), CORS, methods, pipelining, /metrics and the access log.

The compression tests need the publisher to store gzip and brotli variants
of feeds and pages (commit "publish: store gzip and brotli variants ..."):
they fail, never skip, when a name has no variants.

Every test runs twice (the transport fixture, ids "http" and "https"): on a
plain origin, and on an origin serving HTTPS with a certificate of the test
CA (helpers/tlsca.py), where the raw client speaks the same bytes inside TLS.
HTTPS itself (versions, ALPN, tickets, reload, handshake timeout) is
test_tls.py's."""

import datetime
import email.utils
import gzip
import json
import re
import subprocess
import time

import pytest

from helpers.http import OBJECT_CACHE, audio_path, page_path, parse_http_date, refused_and_closed
from helpers.procs import tool_available
from helpers.store import sha256_hex
from helpers import tlsca

ALLOWED = ["GET", "HEAD", "OPTIONS"]
# Defaults of --name-max-age, --name-shared-max-age, --stale-while-revalidate
# and --stale-if-error.
NAME_DEFAULTS = {"max-age": "60", "s-maxage": "86400", "stale-while-revalidate": "60",
                 "stale-if-error": "86400"}


FEED = "/u/alice/feed.json"


@pytest.fixture(scope="session")
def semantics_ca(tmp_path_factory):
    """One test CA per test process (each test still gets a server
    certificate of its own)."""
    return tlsca.TestCA(tmp_path_factory.mktemp("semantics-ca"))


@pytest.fixture(params=["http", "https"])
def transport(request):
    """The test CA whose certificate the origin serves HTTPS with, or None
    for plain HTTP: pass it as start_origin(..., tls_ca=transport)."""
    if request.param == "https":
        return request.getfixturevalue("semantics_ca")
    return None


@pytest.fixture
def served(sayin, store, short_wav, transport):
    """A store with one post by alice and an origin serving it (over the
    transport of the run). Shadows conftest.py's served for this module."""
    post = sayin.post(store, "alice", short_wav, text="first post").json
    origin = sayin.start_origin(store, tls_ca=transport)
    if transport is not None:
        # The parametrized run is only worth something if it really is HTTPS.
        with origin.conn() as c:
            assert c.tls is not None and c.tls.version() in ("TLSv1.2", "TLSv1.3")
    return origin, post


def directives(value):
    """{directive: argument or None} of a Cache-Control-like value."""
    out = {}
    for part in (value or "").split(","):
        part = part.strip()
        if not part:
            continue
        k, sep, v = part.partition("=")
        out[k.strip().lower()] = v.strip().strip('"') if sep else None
    return out


def tokens(value):
    return [t.strip() for t in (value or "").split(",") if t.strip()]


def etag_of(body):
    return '"%s"' % sha256_hex(body)


def brotli_decode(data, tmp_path):
    """Decodes with the brotli CLI (Debian package brotli)."""
    if not tool_available("brotli"):
        pytest.fail("the brotli CLI is not installed (run scripts/bootstrap)")
    src = tmp_path / "body.br"
    src.write_bytes(data)
    r = subprocess.run(["brotli", "-d", "-c", str(src)], capture_output=True, timeout=30)
    assert r.returncode == 0, "brotli -d failed: %r" % r.stderr
    return r.stdout


def then_healthz(origin, method, path, headers=None):
    """Sends a request and a GET /healthz on one connection. Returns both
    responses; if the first carried a body it was not entitled to, the second
    one would not parse."""
    with origin.conn() as c:
        c.send(c.build(method, path, headers) + c.build("GET", "/healthz"))
        first = c.read_response(head=True)
        after = c.read_response()
    assert after.status == 200 and after.body == b"ok\n", (
        "bytes after a header-only response (a body?): %r" % after)
    return first, after


def metric_value(text, name, labels=None):
    """The value of one series in Prometheus text, or 0.0 if absent.
    labels: {label: value} that must all match."""
    total = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if labels and any(have.get(k) != v for k, v in labels.items()):
            continue
        total = (total or 0.0) + float(m.group(4))
    return total or 0.0


# ---------------------------------------------------------------- ranges


@pytest.mark.parametrize("spec", ["0-9", "10-", "-7", "5-99999999", "0-0", "last"])
def test_single_range_gets_206_with_the_slice(served, spec):
    origin, post = served
    full = origin.get(audio_path(post))
    assert full.status == 200
    n = len(full.body)
    first, last = {"0-9": (0, 9), "10-": (10, n - 1), "-7": (n - 7, n - 1),
                   "5-99999999": (5, n - 1), "0-0": (0, 0), "last": (n - 1, n - 1)}[spec]
    value = "bytes=%d-%d" % (n - 1, n - 1) if spec == "last" else "bytes=" + spec
    r = origin.get(audio_path(post), headers={"Range": value})
    assert r.status == 206, r
    assert r.header("Content-Range") == "bytes %d-%d/%d" % (first, last, n), r.headers
    assert r.header("Content-Length") == str(last - first + 1)
    assert r.body == full.body[first:last + 1]
    # The partial response describes the same representation.
    for h in ("ETag", "Last-Modified", "Cache-Control", "Content-Type", "Accept-Ranges"):
        assert r.header(h) == full.header(h), (h, r.headers, full.headers)


def test_objects_advertise_byte_ranges(served):
    origin, post = served
    assert origin.get(audio_path(post)).header("Accept-Ranges") == "bytes"


@pytest.mark.parametrize("spec", ["from-len", "far", "suffix-0"])
def test_unsatisfiable_range_gets_416(served, spec):
    origin, post = served
    n = post["size_in_bytes"]
    value = {"from-len": "bytes=%d-" % n, "far": "bytes=%d-%d" % (n + 100, n + 200),
             "suffix-0": "bytes=-0"}[spec]
    r = origin.get(audio_path(post), headers={"Range": value})
    assert r.status == 416, r
    assert r.header("Content-Range") == "bytes */%d" % n, r.headers
    assert len(r.body) < 1024
    assert "no-store" in directives(r.header("Cache-Control")), r.headers


def test_multiple_ranges_get_the_whole_object(served):
    origin, post = served
    full = origin.get(audio_path(post))
    r = origin.get(audio_path(post), headers={"Range": "bytes=0-9, 20-29"})
    assert r.status == 200, r
    assert r.body == full.body
    assert r.header("Content-Range") is None


@pytest.mark.parametrize("value", ["bytes=abc", "bytes=9-2", "items=0-9", "bytes=", "bytes=1-2-3",
                                   "bytes 0-9", "bytes=--5"])
def test_invalid_range_is_ignored(served, value):
    origin, post = served
    r = origin.get(audio_path(post), headers={"Range": value})
    assert r.status == 200, (value, r)
    assert sha256_hex(r.body) == audio_path(post)[3:3 + 64]
    assert r.header("Content-Range") is None


def test_if_range_with_the_etag_honours_the_range(served):
    origin, post = served
    full = origin.get(audio_path(post))
    r = origin.get(audio_path(post), headers={"Range": "bytes=0-3",
                                              "If-Range": full.header("ETag")})
    assert r.status == 206, r
    assert r.body == full.body[:4]


@pytest.mark.parametrize("validator", ["other-etag", "weak-etag", "other-date", "garbage"])
def test_if_range_mismatch_sends_the_whole_object(served, validator):
    origin, post = served
    full = origin.get(audio_path(post))
    lm = parse_http_date(full.header("Last-Modified"))
    value = {
        "other-etag": '"%s"' % ("0" * 64),
        # If-Range needs a strong validator: a weak tag never matches.
        "weak-etag": "W/" + full.header("ETag"),
        "other-date": email.utils.format_datetime(lm - datetime.timedelta(seconds=1),
                                                  usegmt=True),
        "garbage": "yesterday",
    }[validator]
    r = origin.get(audio_path(post), headers={"Range": "bytes=0-3", "If-Range": value})
    assert r.status == 200, (validator, r)
    assert r.body == full.body


def test_if_range_with_the_date_honours_the_range(served):
    origin, post = served
    full = origin.get(audio_path(post))
    r = origin.get(audio_path(post), headers={"Range": "bytes=2-5",
                                              "If-Range": full.header("Last-Modified")})
    assert r.status == 206, r
    assert r.body == full.body[2:6]


def test_if_range_mismatch_beats_an_unsatisfiable_range(served):
    origin, post = served
    n = post["size_in_bytes"]
    r = origin.get(audio_path(post), headers={"Range": "bytes=%d-" % (n + 10),
                                              "If-Range": '"%s"' % ("0" * 64)})
    assert r.status == 200, r


@pytest.mark.parametrize("value", ["bytes=0-9", "bytes=-3", "bytes=99999999-"])
def test_head_with_range_has_the_get_headers(served, value):
    origin, post = served
    get = origin.get(audio_path(post), headers={"Range": value})
    head, _ = then_healthz(origin, "HEAD", audio_path(post), {"Range": value})
    assert get.status in (206, 416)
    assert head.status == get.status
    assert head.header_map() == get.header_map(), (head.headers, get.headers)


def test_range_on_a_name(served):
    origin, post = served
    full = origin.get(FEED)
    r = origin.get(FEED, headers={"Range": "bytes=0-15", "If-Range": full.header("ETag")})
    assert r.status == 206, r
    assert r.body == full.body[:16]
    assert r.header("Content-Range") == "bytes 0-15/%d" % len(full.body)
    assert r.header("Vary") == "Accept-Encoding"


def test_if_range_date_on_a_name_is_weak(served):
    """A name can change twice within the second of its Last-Modified, so
    only its ETag validates a range (RFC 9110 8.8.2.2, 13.1.5)."""
    origin, post = served
    full = origin.get(FEED)
    r = origin.get(FEED, headers={"Range": "bytes=0-15",
                                  "If-Range": full.header("Last-Modified")})
    assert r.status == 200, r
    assert r.body == full.body


# ---------------------------------------------------------------- conditional requests


def inm_value(etag, form):
    other = '"%s"' % ("f" * 64)
    return {
        "single": etag,
        "list": '%s, %s ,W/"x"' % (other, etag),
        "star": "*",
        "weak": "W/" + etag,
        "weak-in-list": '"nope", W/%s' % etag,
    }[form]


@pytest.mark.parametrize("form", ["single", "list", "star", "weak", "weak-in-list"])
@pytest.mark.parametrize("what", ["audio", "feed"])
def test_if_none_match_gets_304(served, what, form):
    origin, post = served
    path = audio_path(post) if what == "audio" else FEED
    full = origin.get(path)
    r, _ = then_healthz(origin, "GET", path, {"If-None-Match": inm_value(full.header("ETag"),
                                                                        form)})
    assert r.status == 304, (form, r)
    assert r.header("Content-Length") is None, r.headers
    assert r.header("ETag") == full.header("ETag")
    assert r.header("Last-Modified") == full.header("Last-Modified")
    assert r.header("Cache-Control") == full.header("Cache-Control")


@pytest.mark.parametrize("value", ['"%s"' % ("0" * 64), 'W/"abc", "def"', "garbage"])
def test_if_none_match_mismatch_gets_200(served, value):
    origin, post = served
    r = origin.get(audio_path(post), headers={"If-None-Match": value})
    assert r.status == 200, r
    assert sha256_hex(r.body) == audio_path(post)[3:3 + 64]


def test_304_on_a_name_carries_the_cdn_headers(served):
    origin, post = served
    full = origin.get(FEED)
    r, _ = then_healthz(origin, "GET", FEED, {"If-None-Match": full.header("ETag")})
    assert r.status == 304
    for h in ("ETag", "Last-Modified", "Cache-Control", "CDN-Cache-Control", "Surrogate-Key",
              "Vary"):
        assert r.header(h) is not None, "304 lacks %s: %s" % (h, r.headers)
        assert r.header(h) == full.header(h), (h, r.headers, full.headers)
    assert r.header("Vary") == "Accept-Encoding"


def test_head_304_has_the_get_304_headers(served):
    origin, post = served
    etag = origin.get(FEED).header("ETag")
    get, _ = then_healthz(origin, "GET", FEED, {"If-None-Match": etag})
    head, _ = then_healthz(origin, "HEAD", FEED, {"If-None-Match": etag})
    assert get.status == head.status == 304
    assert head.header_map() == get.header_map()


@pytest.mark.parametrize("form", ["imf", "rfc850", "asctime", "later"])
def test_if_modified_since_not_modified(served, form):
    origin, post = served
    full = origin.get(audio_path(post))
    lm = parse_http_date(full.header("Last-Modified"))
    if form == "later":
        lm += datetime.timedelta(hours=1)
    value = {
        "imf": email.utils.format_datetime(lm, usegmt=True),
        "later": email.utils.format_datetime(lm, usegmt=True),
        "rfc850": lm.strftime("%A, %d-%b-%y %H:%M:%S GMT"),
        "asctime": lm.strftime("%a %b ") + ("%2d" % lm.day) + lm.strftime(" %H:%M:%S %Y"),
    }[form]
    r, _ = then_healthz(origin, "GET", audio_path(post), {"If-Modified-Since": value})
    assert r.status == 304, (value, r)
    assert r.header("ETag") == full.header("ETag")
    assert r.header("Content-Length") is None


@pytest.mark.parametrize("form", ["earlier", "invalid"])
def test_if_modified_since_modified_gets_200(served, form):
    origin, post = served
    full = origin.get(audio_path(post))
    lm = parse_http_date(full.header("Last-Modified"))
    value = {"earlier": email.utils.format_datetime(lm - datetime.timedelta(seconds=1),
                                                    usegmt=True),
             "invalid": "not a date"}[form]
    r = origin.get(audio_path(post), headers={"If-Modified-Since": value})
    assert r.status == 200, r
    assert r.body == full.body


def test_if_none_match_takes_precedence_over_if_modified_since(served):
    origin, post = served
    full = origin.get(audio_path(post))
    r = origin.get(audio_path(post), headers={
        "If-None-Match": '"%s"' % ("0" * 64),
        "If-Modified-Since": full.header("Last-Modified")})
    assert r.status == 200, r


def test_conditional_wins_over_range(served):
    origin, post = served
    full = origin.get(audio_path(post))
    r, _ = then_healthz(origin, "GET", audio_path(post), {"If-None-Match": full.header("ETag"),
                                                          "Range": "bytes=0-3"})
    assert r.status == 304, r


# ---------------------------------------------------------------- precompressed variants


def identity_and(origin, path, accept):
    ident = origin.get(path)
    assert ident.status == 200 and ident.header("Content-Encoding") is None, ident
    r = origin.get(path, headers={"Accept-Encoding": accept})
    return ident, r


def check_variant(origin, post, what, coding, name, decode):
    """The feed or page in Content-Encoding coding: a variant of its own
    (Vary, ETag of the bytes sent) that decodes to the identity body."""
    path = FEED if what == "feed" else page_path(post)
    ident, r = identity_and(origin, path, coding)
    assert r.status == 200, r
    assert r.header("Content-Encoding") == coding, (
        "no %s variant for %s (does the publisher store variants?): %s" % (name, path, r.headers))
    assert r.header("Vary") == "Accept-Encoding"
    assert decode(r.body) == ident.body
    assert r.header("ETag") == etag_of(r.body), "the ETag is not the hash of the bytes sent"
    assert r.header("ETag") != ident.header("ETag")
    return ident, r


@pytest.mark.parametrize("what", ["feed", "page"])
def test_brotli_variant(served, tmp_path, what):
    origin, post = served
    ident, r = check_variant(origin, post, what, "br", "brotli",
                             lambda body: brotli_decode(body, tmp_path))
    assert r.header("Content-Type") == ident.header("Content-Type")
    assert r.header("Content-Length") == str(len(r.body))


@pytest.mark.parametrize("what", ["feed", "page"])
def test_gzip_variant(served, what):
    origin, post = served
    check_variant(origin, post, what, "gzip", "gzip", gzip.decompress)


# accept value -> expected Content-Encoding (None: identity, 406: Not Acceptable)
NEGOTIATION = {
    "gzip, deflate, br": "br",
    "br;q=1.0, gzip;q=1.0": "br",
    "gzip;q=1, br;q=0.5": "gzip",
    "GZIP": "gzip",
    "x-gzip": "gzip",
    "br;q=0.001": "br",
    "*": "br",
    "*;q=0.5, br;q=0": "gzip",
    "deflate, compress": None,
    "": None,
    "identity": None,
    "br;q=0, gzip;q=0": None,
    "identity;q=1, br;q=0.5": None,
    "*;q=0, identity": None,
    "identity;q=0": 406,
    "*;q=0": 406,
    "gzip, identity;q=0": "gzip",
    "br;q=0.5, identity;q=0": "br",
    "gzip;q=bogus, br": "br",
}


@pytest.mark.parametrize("accept", sorted(NEGOTIATION))
def test_accept_encoding_negotiation(served, tmp_path, accept):
    origin, post = served
    want = NEGOTIATION[accept]
    ident = origin.get(FEED)
    r = origin.get(FEED, headers={"Accept-Encoding": accept})
    assert r.header("Vary") == "Accept-Encoding", r.headers
    if want == 406:
        assert r.status == 406, (accept, r)
        assert "no-store" in directives(r.header("Cache-Control"))
        return
    assert r.status == 200, (accept, r)
    assert r.header("Content-Encoding") == want, (accept, r.headers)
    if want is None:
        assert r.body == ident.body
    elif want == "gzip":
        assert gzip.decompress(r.body) == ident.body
    else:
        assert brotli_decode(r.body, tmp_path) == ident.body
    assert r.header("ETag") == etag_of(r.body)


def test_no_accept_encoding_gets_identity_with_vary(served):
    origin, post = served
    r = origin.get(FEED)
    assert r.header("Content-Encoding") is None
    assert r.header("Vary") == "Accept-Encoding"
    assert r.json()["items"][0]["id"] == post["id"]


def test_each_encoding_revalidates_with_its_own_etag(served):
    origin, post = served
    gz = origin.get(FEED, headers={"Accept-Encoding": "gzip"})
    ident = origin.get(FEED)
    assert gz.header("Content-Encoding") == "gzip"
    r = origin.get(FEED, headers={"Accept-Encoding": "gzip", "If-None-Match": gz.header("ETag")})
    assert r.status == 304, r
    assert r.header("ETag") == gz.header("ETag")
    assert r.header("Vary") == "Accept-Encoding"
    # The identity validator does not match the gzip variant, and vice versa.
    r = origin.get(FEED, headers={"Accept-Encoding": "gzip",
                                  "If-None-Match": ident.header("ETag")})
    assert r.status == 200 and r.header("Content-Encoding") == "gzip", r
    r = origin.get(FEED, headers={"If-None-Match": gz.header("ETag")})
    assert r.status == 200 and r.header("Content-Encoding") is None, r


def test_range_applies_to_the_encoded_bytes(served):
    origin, post = served
    gz = origin.get(FEED, headers={"Accept-Encoding": "gzip"})
    assert gz.header("Content-Encoding") == "gzip"
    r = origin.get(FEED, headers={"Accept-Encoding": "gzip", "Range": "bytes=0-9"})
    assert r.status == 206, r
    assert r.body == gz.body[:10]
    assert r.header("Content-Encoding") == "gzip"
    assert r.header("Content-Range") == "bytes 0-9/%d" % len(gz.body)


@pytest.mark.parametrize("accept", ["br", "gzip", "br, gzip, *", "identity;q=0", "*;q=0"])
def test_audio_is_never_compressed_and_has_no_vary(served, accept):
    origin, post = served
    r = origin.get(audio_path(post), headers={"Accept-Encoding": accept})
    assert r.status == 200, r
    assert r.header("Content-Encoding") is None
    assert r.header("Vary") is None
    assert sha256_hex(r.body) == audio_path(post)[3:3 + 64]


@pytest.mark.parametrize("accept", ["br", "gzip", "identity;q=0"])
def test_head_of_a_variant_has_the_get_headers(served, accept):
    origin, post = served
    get = origin.get(FEED, headers={"Accept-Encoding": accept})
    head, _ = then_healthz(origin, "HEAD", FEED, {"Accept-Encoding": accept})
    assert get.header("Vary") == "Accept-Encoding", get.headers
    assert head.status == get.status
    assert head.header_map() == get.header_map(), (head.headers, get.headers)


# ---------------------------------------------------------------- caching headers


def test_object_caching_headers(served):
    origin, post = served
    r = origin.get(audio_path(post))
    assert r.header("Cache-Control") == OBJECT_CACHE
    assert r.header("CDN-Cache-Control") is None
    assert r.header("Surrogate-Key") is None
    assert r.header("Vary") is None
    assert r.header("ETag") == etag_of(r.body)
    assert r.header("X-Content-Type-Options") == "nosniff"


def check_name_caching(r, expect):
    cc = directives(r.header("Cache-Control"))
    assert "public" in cc, r.headers
    for k, v in expect.items():
        assert cc.get(k) == v, "Cache-Control %s=%r, want %r: %s" % (
            k, cc.get(k), v, r.header("Cache-Control"))
    assert "immutable" not in cc and "no-store" not in cc
    cdn = directives(r.header("CDN-Cache-Control"))
    assert cdn.get("max-age") == expect["s-maxage"], r.header("CDN-Cache-Control")
    assert cdn.get("stale-while-revalidate") == expect["stale-while-revalidate"]
    assert cdn.get("stale-if-error") == expect["stale-if-error"]


def test_feed_caching_headers(served):
    origin, post = served
    r = origin.get(FEED)
    check_name_caching(r, NAME_DEFAULTS)
    keys = (r.header("Surrogate-Key") or "").split()
    assert "author-alice" in keys, r.headers
    assert "feed-alice" in keys, r.headers


def test_page_caching_headers(served):
    origin, post = served
    r = origin.get(page_path(post))
    check_name_caching(r, NAME_DEFAULTS)
    keys = (r.header("Surrogate-Key") or "").split()
    assert "author-alice" in keys, r.headers
    assert any(post["id"] in k for k in keys), r.headers


def test_name_lifetimes_follow_the_settings(sayin, store, short_wav, transport):
    sayin.post(store, "alice", short_wav)
    origin = sayin.start_origin(store, args=["--name-max-age", "30",
                                             "--name-shared-max-age", "3600",
                                             "--stale-while-revalidate", "15",
                                             "--stale-if-error", "600"], tls_ca=transport)
    r = origin.get(FEED)
    check_name_caching(r, {"max-age": "30", "s-maxage": "3600", "stale-while-revalidate": "15",
                           "stale-if-error": "600"})


def test_error_caching_headers(served):
    origin, post = served
    r = origin.get("/u/nobody/feed.json")
    assert r.status == 404
    # A miss is cacheable briefly: it shields the origin from repeated misses.
    assert directives(r.header("Cache-Control")) == {"public": None, "max-age": "10"}, r.headers
    assert r.header("Vary") is None and r.header("Surrogate-Key") is None
    for method in ("POST", "DELETE"):
        r = origin.request(method, FEED, headers={"Content-Length": "0"})
        assert r.status == 405
        assert "no-store" in directives(r.header("Cache-Control")), r.headers
    assert "no-store" in directives(origin.get("/healthz").header("Cache-Control"))


# ---------------------------------------------------------------- CORS


@pytest.mark.parametrize("what", ["audio", "feed", "range", "304"])
def test_cors_on_content(served, what):
    origin, post = served
    path = FEED if what == "feed" else audio_path(post)
    headers = {"Origin": "https://fan.example"}
    if what == "range":
        headers["Range"] = "bytes=0-1"
    if what == "304":
        headers["If-None-Match"] = "*"
    r = origin.get(path, headers=headers)
    assert r.status in (200, 206, 304), r
    assert r.header("Access-Control-Allow-Origin") == "*", r.headers
    expose = [t.lower() for t in tokens(r.header("Access-Control-Expose-Headers"))]
    for h in ("content-range", "content-length", "etag"):
        assert h in expose, r.headers


@pytest.mark.parametrize("path", ["audio", FEED, "/nothing/here"])
def test_cors_preflight(served, path):
    origin, post = served
    if path == "audio":
        path = audio_path(post)
    r, _ = then_healthz(origin, "OPTIONS", path, {
        "Origin": "https://fan.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "range, if-none-match"})
    assert r.status == 204, r
    assert r.header("Access-Control-Allow-Origin") == "*"
    assert set(ALLOWED) <= set(tokens(r.header("Access-Control-Allow-Methods"))), r.headers
    allowed = [t.lower() for t in tokens(r.header("Access-Control-Allow-Headers"))]
    for h in ("range", "if-none-match", "if-modified-since", "if-range"):
        assert h in allowed, r.headers
    assert r.header("Access-Control-Max-Age") == "86400"
    assert r.header("Content-Length") is None


def test_plain_options(served):
    origin, post = served
    for path in (FEED, "*"):
        r, _ = then_healthz(origin, "OPTIONS", path)
        assert r.status == 204, r
        assert sorted(tokens(r.header("Allow"))) == sorted(ALLOWED), r.headers


# ---------------------------------------------------------------- methods and framing


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "PROPFIND"])
def test_other_methods_get_405_with_allow(served, method):
    origin, post = served
    headers = {"Content-Length": "0"} if method in ("POST", "PUT", "PATCH") else None
    r = origin.request(method, audio_path(post), headers=headers)
    assert r.status == 405, r
    assert sorted(tokens(r.header("Allow"))) == sorted(ALLOWED), r.headers


@pytest.mark.parametrize("method", ["GET", "OPTIONS"])
def test_body_on_a_bodiless_method_gets_400_and_close(served, method):
    origin, post = served
    refused_and_closed(origin, method, FEED)


def test_pipelined_mixed_requests_are_answered_in_order(served):
    origin, post = served
    a = audio_path(post)
    full = origin.get(a)
    feed_etag = origin.get(FEED).header("ETag")
    with origin.conn() as c:
        c.send(c.build("GET", a, {"Range": "bytes=0-4"}) +
               c.build("GET", FEED, {"If-None-Match": feed_etag}) +
               c.build("OPTIONS", a) +
               c.build("HEAD", a, {"Range": "bytes=1-2"}) +
               c.build("GET", FEED, {"Accept-Encoding": "gzip"}) +
               c.build("DELETE", a) +
               c.build("GET", a, {"Range": "bytes=%d-" % (len(full.body) + 5)}) +
               c.build("GET", a))
        rs = [c.read_response(), c.read_response(head=True), c.read_response(head=True),
              c.read_response(head=True), c.read_response(), c.read_response(),
              c.read_response(), c.read_response()]
    assert [r.status for r in rs] == [206, 304, 204, 206, 200, 405, 416, 200], rs
    assert rs[0].body == full.body[:5]
    assert rs[3].header("Content-Range") == "bytes 1-2/%d" % len(full.body)
    assert rs[4].header("Content-Encoding") == "gzip"
    assert rs[7].body == full.body


# ---------------------------------------------------------------- instrumentation


def test_metrics_count_requests(served):
    origin, post = served
    r = origin.get("/metrics")
    assert r.status == 200, ("/metrics is not served on the main listener without "
                             "--admin-listen: %r" % r)
    assert r.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8", r.headers
    assert "no-store" in directives(r.header("Cache-Control"))
    before = r.body.decode()
    obj = {"method": "GET", "status": "2xx", "route": "object"}
    name = {"method": "GET", "status": "2xx", "route": "name"}
    miss = {"method": "GET", "status": "4xx", "route": "name"}
    head = {"method": "HEAD", "status": "2xx", "route": "object"}
    for _ in range(3):
        assert origin.get(audio_path(post)).status == 200
    assert origin.get(FEED).status == 200
    assert origin.get("/u/nobody/feed.json").status == 404
    assert origin.head(audio_path(post)).status == 200
    assert origin.get(audio_path(post), headers={"Range": "bytes=0-1"}).status == 206
    assert origin.get(audio_path(post), headers={"If-None-Match": "*"}).status == 304
    after = origin.get("/metrics").body.decode()

    def delta(metric, labels=None):
        return metric_value(after, metric, labels) - metric_value(before, metric, labels)

    assert delta("sayin_origin_requests_total", obj) >= 4, after  # 3 x 200 + 206
    assert delta("sayin_origin_requests_total", name) >= 1
    assert delta("sayin_origin_requests_total", miss) >= 1
    assert delta("sayin_origin_requests_total", head) >= 1
    assert delta("sayin_origin_not_modified_total") >= 1
    assert delta("sayin_origin_partial_total") >= 1
    assert delta("sayin_origin_response_bytes_total") >= 3 * post["size_in_bytes"]
    assert delta("sayin_origin_request_duration_seconds_count") >= 8
    assert "# TYPE sayin_origin_request_duration_seconds histogram" in after
    assert 'le="+Inf"' in after


def access_lines(origin):
    """The access log's JSON lines (origin/README.md, "Access log");
    test_access_log.py checks the format field by field."""
    return [json.loads(l) for l in origin.log().splitlines() if l.startswith("{")]


def wait_for_lines(origin, n, timeout=3.0):
    """The access lines once n other than /healthz are logged (a line is
    written after its response, so it may lag the client a little)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = access_lines(origin)
        if len([m for m in lines if m["path"] != "/healthz"]) >= n:
            return lines
        time.sleep(0.02)
    return access_lines(origin)


def test_access_log(sayin, store, short_wav, transport):
    post = sayin.post(store, "alice", short_wav).json
    origin = sayin.start_origin(store, args=["--access-log", "on"], tls_ca=transport)
    a = audio_path(post)
    assert origin.get(a, headers={"Range": "bytes=0-99"}).status == 206
    assert origin.get(FEED, headers={"Accept-Encoding": "br"}).status == 200
    assert origin.get('/u/"quoted"').status == 404
    # Start-up polls /healthz: leave those lines out.
    lines = [m for m in wait_for_lines(origin, 3) if m["path"] != "/healthz"]
    assert len(lines) == 3, "want 3 parseable access lines:\n" + origin.log()
    # Each event loop logs when its write completes, so lines from different
    # loops may come in any order: find each by its path.
    by_path = {m["path"]: m for m in lines}
    m = by_path[a]
    assert (m["method"], m["status"], m["encoding"], m["range"]) == ("GET", 206, None, "0-99"), m
    assert m["bytes"] >= 100
    m = by_path[FEED]
    assert (m["status"], m["encoding"]) == (200, "br"), m
    # The quotes in the path are escaped, so the line stays parseable.
    assert by_path['/u/"quoted"']["status"] == 404


def test_access_log_is_off_by_default(served):
    origin, post = served
    assert origin.get(audio_path(post)).status == 200
    assert origin.get(FEED).status == 200
    time.sleep(0.2)
    assert not access_lines(origin), origin.log()

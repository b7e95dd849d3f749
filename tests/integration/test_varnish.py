"""A real cache in front of the origin: Varnish (Debian's varnishd) with the
shipped edge policy, cdn-config/varnish/sayin.vcl (started by the
edge_factory fixture; tests/integration/test_edges.py covers purges,
coalescing, stale serving and nginx).

Varnish must cache immutable objects (one origin request, then hits),
revalidate a stale name with a conditional request the origin answers with
304, cut Range requests from the cached object without forwarding the Range,
and keep one variant per Accept-Encoding as the origin's Vary says.

What the origin received is read from its access log (`--access-log on`:
one JSON object per request on stderr, origin/README.md "Access log",
captured by start_origin in origin.log_path); what Varnish sent to the
origin is cross-checked with varnishlog on Varnish's own shared memory log.
"""

import gzip
import json
import re
import time

import pytest

from helpers.http import OPUS_TYPE, brotli_decode, url_path
from helpers.store import sha256_hex

ORIGIN_ARGS = ["--access-log", "on"]
# For the revalidation test: names live one second, then stay (keep) as
# candidates for a conditional fetch; no grace, so the next request waits for
# the revalidation instead of getting the stale copy. Statements for
# site.vcl's sayin_site_backend_response.
SHORT_NAMES = ('if (beresp.http.Cache-Control !~ "immutable") '
               '{ set beresp.ttl = 1s; set beresp.grace = 0s; }')


# ---------------------------------------------------------------- the access log

ACCESS_FIELD = re.compile(r'([A-Za-z_][A-Za-z0-9_.-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_access_line(line):
    """The fields of one access log line (JSON, as strings; a missing range
    is "-"), or of an older `access key=value ...` line, or None for any
    other log line."""
    if line.startswith("{"):
        doc = json.loads(line)
        return {k: ("-" if v is None else str(v)) for k, v in doc.items()}
    m = re.search(r"(?:^|\s)access:?\s", line)
    if not m:
        return None
    fields = {}
    for k, v in ACCESS_FIELD.findall(line[m.end():]):
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        fields[k.lower()] = v
    for alias in ("uri", "url", "target"):
        if "path" not in fields and alias in fields:
            fields["path"] = fields[alias]
    if "path" not in fields or "status" not in fields:
        return None
    return fields


def access_entries(origin, path=None):
    out = []
    for line in origin.log().splitlines():
        f = parse_access_line(line)
        if f is None:
            continue
        p = f["path"].split("?", 1)[0]
        if path is None or p == path:
            out.append(f)
    return out


def wait_access(origin, path, count, timeout=5.0):
    """Waits until the origin logged at least count requests for path and
    the log stopped growing for a moment; returns the entries. Fails
    outright when the origin writes no access lines at all."""
    deadline = time.monotonic() + timeout
    entries = access_entries(origin, path)
    while len(entries) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        entries = access_entries(origin, path)
    # A request answered before its log line was written would be missed
    # by a count taken at once.
    time.sleep(0.3)
    if not access_entries(origin):
        pytest.fail("sayin-origin %s wrote no access log line (JSON with method, path, "
                    "status), so what reached it cannot be counted; its output:\n%s"
                    % (" ".join(ORIGIN_ARGS), origin.log()[-3000:]))
    return access_entries(origin, path)


def describe_access(origin, path):
    return "\n".join(l for l in origin.log().splitlines() if path in l) or "(none)"


# ---------------------------------------------------------------- Varnish


@pytest.fixture
def varnish_factory(edge_factory):
    """start(origin, name_ttl=None) -> a running Varnish with
    cdn-config/varnish/sayin.vcl in front of origin."""
    def start(origin, name_ttl=None):
        kw = {"backend_response": name_ttl} if name_ttl else {}
        return edge_factory("varnish", origin, **kw)
    return start


@pytest.fixture
def published(sayin, tmp_path, short_wav):
    """A store with one post by "fan_fav": (store dir, post JSON)."""
    data = tmp_path / "store"
    res = sayin.post(data, "fan_fav", short_wav, text="through the cache")
    return data, res.json


def immutable_cache_control(value):
    return value is not None and "immutable" in value.lower()


# ---------------------------------------------------------------- tests


def test_object_is_cached_one_origin_request(sayin, published, varnish_factory):
    data, post = published
    origin = sayin.start_origin(data, args=ORIGIN_ARGS)
    v = varnish_factory(origin)
    path = url_path(post["audio_url"])
    digest = re.match(r"^/a/([0-9a-f]{64})\.opus$", path).group(1)

    first = v.get(path)
    assert first.status == 200, first
    assert first.header("X-Cache") == "MISS", first
    second = v.get(path)
    assert second.status == 200, second
    assert second.header("X-Cache") == "HIT", (
        "the second request for an immutable object was not served from Varnish's cache: %r"
        % second)

    assert first.body == second.body
    assert sha256_hex(second.body) == digest, "the cached bytes are not the object"
    assert len(second.body) == post["size_in_bytes"]
    for r in (first, second):
        assert immutable_cache_control(r.header("Cache-Control")), r
        assert r.header("Content-Type") == OPUS_TYPE, r
        assert r.header("ETag") == '"%s"' % digest, r

    entries = wait_access(origin, path, 1)
    assert len(entries) == 1, (
        "the origin should have seen exactly one request for %s (the miss); its log:\n%s"
        % (path, describe_access(origin, path)))
    assert entries[0].get("status") == "200", entries
    assert entries[0].get("method") == "GET", entries

    # Varnish passed the origin's Cache-Control through unchanged.
    direct = origin.head(path)
    assert direct.status == 200, direct
    assert second.header("Cache-Control") == direct.header("Cache-Control"), (second, direct)


def test_stale_name_is_revalidated_with_304(sayin, published, varnish_factory):
    data, post = published
    origin = sayin.start_origin(data, args=ORIGIN_ARGS)
    v = varnish_factory(origin, name_ttl=SHORT_NAMES)
    path = url_path(post["feed_url"])

    direct = origin.get(path)
    assert direct.status == 200, direct
    etag = direct.header("ETag")
    assert etag, direct
    assert not immutable_cache_control(direct.header("Cache-Control")), direct
    before = len(wait_access(origin, path, 1))

    first = v.get(path)
    assert first.status == 200, first
    assert first.header("X-Cache") == "MISS", first
    assert first.body == direct.body
    entries = wait_access(origin, path, before + 1)
    assert len(entries) == before + 1, describe_access(origin, path)
    assert entries[-1]["status"] == "200", entries[-1]

    time.sleep(1.6)  # past the one-second lifetime; kept for revalidation
    second = v.get(path)
    assert second.status == 200, (
        "a revalidated name must reach the client as a whole 200: %r" % second)
    assert second.body == direct.body, "the revalidated body differs from the original"
    assert second.header("ETag") == etag, second

    entries = wait_access(origin, path, before + 2)
    assert len(entries) == before + 2, (
        "expected exactly one more origin request for %s after the name went stale; log:\n%s"
        % (path, describe_access(origin, path)))
    assert entries[-1]["status"] == "304", (
        "the origin answered Varnish's revalidation of %s with %s, not 304 (a conditional "
        "request must not transfer the body again); log:\n%s"
        % (path, entries[-1]["status"], describe_access(origin, path)))

    # And Varnish did ask conditionally, with the validator it had.
    txs = v.backend_log(path)
    assert len(txs) == 2, txs
    inm = [val for k, val in txs[1]["headers"] if k.lower() == "if-none-match"]
    assert inm == [etag], "Varnish's revalidation carried If-None-Match %r, expected %r" % (
        inm, etag)
    assert txs[1]["statuses"][:1] == [304], txs[1]

    # The refreshed object is served from the cache again.
    third = v.get(path)
    assert third.status == 200 and third.header("X-Cache") == "HIT", third
    assert third.body == direct.body


def test_range_is_served_from_the_cache(sayin, published, varnish_factory):
    data, post = published
    origin = sayin.start_origin(data, args=ORIGIN_ARGS)
    v = varnish_factory(origin)
    path = url_path(post["audio_url"])

    # A Range on a cold object: Varnish fetches the whole object once and
    # answers the range from it.
    cold = v.get(path, headers={"Range": "bytes=0-99"})
    assert cold.status == 206, cold
    full = v.get(path)
    assert full.status == 200 and full.header("X-Cache") == "HIT", full
    size = len(full.body)
    assert size == post["size_in_bytes"] and size > 400, size
    assert cold.body == full.body[:100]
    assert cold.header("Content-Range") == "bytes 0-99/%d" % size, cold

    cases = [
        ("bytes=100-299", 100, 299),
        ("bytes=%d-" % (size - 37), size - 37, size - 1),
        ("bytes=-50", size - 50, size - 1),
    ]
    for spec, first, last in cases:
        r = v.get(path, headers={"Range": spec})
        assert r.status == 206, (spec, r)
        assert r.header("X-Cache") == "HIT", (spec, r)
        assert r.header("Content-Range") == "bytes %d-%d/%d" % (first, last, size), (spec, r)
        assert r.header("Content-Length") in (None, str(last - first + 1)), (spec, r)
        assert r.body == full.body[first:last + 1], spec

    entries = wait_access(origin, path, 1)
    assert len(entries) == 1, (
        "Range requests reached the origin instead of being cut from the cache; log:\n%s"
        % describe_access(origin, path))
    assert entries[0]["status"] == "200" and entries[0].get("range", "-") == "-", (
        "Varnish's fetch should have been for the whole object, got %r" % entries[0])
    txs = v.backend_log(path)
    assert len(txs) == 1, txs
    assert not [k for k, _ in txs[0]["headers"] if k.lower() in ("range", "if-range")], (
        "a Range was forwarded to the origin: %r" % txs[0]["headers"])


def test_vary_keeps_one_variant_per_encoding(sayin, published, varnish_factory):
    data, post = published
    origin = sayin.start_origin(data, args=ORIGIN_ARGS)
    v = varnish_factory(origin)
    path = url_path(post["feed_url"])
    identity = origin.get(path)
    assert identity.status == 200 and identity.header("Content-Encoding") is None, identity

    asks = [("br", "br"), ("gzip", "gzip"), (None, None)]
    decoders = {"br": brotli_decode, "gzip": gzip.decompress, None: lambda b: b}
    for rnd, expect_cache in ((1, "MISS"), (2, "HIT")):
        seen = {}
        for ae, want in asks:
            headers = {"Accept-Encoding": ae} if ae else None
            r = v.get(path, headers=headers)
            assert r.status == 200, (ae, r)
            assert r.header("Content-Encoding") == want, (
                "round %d, Accept-Encoding %r: Varnish delivered Content-Encoding %r "
                "(X-Cache %s); Vary must keep one variant per encoding"
                % (rnd, ae, r.header("Content-Encoding"), r.header("X-Cache")))
            assert r.header("X-Cache") == expect_cache, (rnd, ae, r)
            assert decoders[want](r.body) == identity.body, (
                "the %s variant does not decode to the identity body" % want)
            seen[want] = (r.body, r.header("ETag"), ",".join(r.header_all("Vary")))
        for want, (_, _, vary) in seen.items():
            assert "accept-encoding" in vary.lower(), (
                "the %s variant came without Vary: Accept-Encoding (Vary: %r)" % (want, vary))
        assert len({b for b, _, _ in seen.values()}) == 3, "the variants' bytes are not distinct"
        assert len({e for _, e, _ in seen.values()}) == 3, (
            "the ETag must differ per encoding: %r" % {k: e for k, (_, e, _) in seen.items()})

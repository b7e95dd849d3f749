"""Precompressed variants as a real client sees them: curl (Debian's, built
with brotli and zlib) straight to the origin, no cache in between.

Feeds and post pages come as brotli or gzip when asked, each decoding to
exactly the identity bytes, each with its own ETag and `Vary:
Accept-Encoding`; audio is never compressed, whatever the client accepts.
"""

import gzip
import shutil
import subprocess

import pytest

from helpers.http import OPUS_TYPE, Response, brotli_decode, url_path
from helpers.store import sha256_hex


@pytest.fixture(scope="session")
def curl_brotli():
    """True when curl decodes brotli itself (--compressed)."""
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed (run scripts/bootstrap)")
    out = subprocess.run(["curl", "-V"], capture_output=True, text=True, timeout=30).stdout
    return "brotli" in out.lower()


def decode(encoding, data):
    if encoding is None:
        return data
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "br":
        return brotli_decode(data)
    raise AssertionError("unexpected Content-Encoding %r" % encoding)


class CurlResult(Response):
    def __init__(self, status, headers, body):
        super().__init__(None, status, "", headers, body)

    def __repr__(self):
        return "<curl %s %r body=%d bytes>" % (self.status, self.headers, len(self.body))


def curl(tmp_path, url, args=()):
    """Runs curl, returns the last response's status, headers (as sent,
    before any decoding) and body (as written: decoded with --compressed)."""
    hdr = tmp_path / "curl-headers.txt"
    body = tmp_path / "curl-body.bin"
    argv = ["curl", "-sS", "--max-time", "20", "-D", str(hdr), "-o", str(body)] + list(args) + [url]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, "%s failed (%d): %s" % (" ".join(argv), r.returncode, r.stderr)
    blocks = [b for b in hdr.read_bytes().decode("latin-1").split("\r\n\r\n") if b.strip()]
    lines = blocks[-1].split("\r\n")
    status = int(lines[0].split()[1])
    headers = []
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if sep:
            headers.append((k.strip(), v.strip()))
    return CurlResult(status, headers, body.read_bytes())


def vary_tokens(resp):
    return {t.strip().lower() for v in resp.header_all("Vary") for t in v.split(",") if t.strip()}


@pytest.fixture
def served(sayin, tmp_path, short_wav):
    """An origin serving one post: (origin, post JSON)."""
    data = tmp_path / "store"
    res = sayin.post(data, "loud", short_wav, text="compressed " * 20)
    origin = sayin.start_origin(data)
    return origin, res.json


@pytest.mark.parametrize("kind", ["feed", "page"])
def test_curl_compressed_gets_identical_variants(served, tmp_path, curl_brotli, kind):
    origin, post = served
    path = url_path(post["feed_url"] if kind == "feed" else post["url"])
    url = origin.base + path

    identity = curl(tmp_path, url, ["-H", "Accept-Encoding: identity"])
    assert identity.status == 200, identity
    assert identity.header("Content-Encoding") in (None, "identity"), identity
    assert "accept-encoding" in vary_tokens(identity), (
        "the identity %s must say Vary: Accept-Encoding too, or a cache would serve it "
        "for every encoding: %r" % (kind, identity))
    # The same bytes when the client says nothing about encodings.
    plain = curl(tmp_path, url)
    assert plain.status == 200 and plain.header("Content-Encoding") is None, plain
    assert plain.body == identity.body
    etags = {"identity": identity.header("ETag")}

    for enc in ("br", "gzip"):
        ae = ["-H", "Accept-Encoding: %s" % enc]
        # Raw: the bytes on the wire, decoded here.
        raw = curl(tmp_path, url, ae)
        assert raw.status == 200, raw
        assert raw.header("Content-Encoding") == enc, (
            "asked for %s, got Content-Encoding %r" % (enc, raw.header("Content-Encoding")))
        assert "accept-encoding" in vary_tokens(raw), raw
        assert raw.header("Content-Length") == str(len(raw.body)), raw
        assert raw.body != identity.body
        assert len(raw.body) < len(identity.body), "a variant is kept only when smaller"
        if enc == "gzip":
            assert raw.body[:2] == b"\x1f\x8b", "not a gzip stream: %r" % raw.body[:8]
        assert decode(enc, raw.body) == identity.body, (
            "the %s variant of %s does not decode to the identity body" % (enc, path))
        etags[enc] = raw.header("ETag")
        assert etags[enc], raw

        # curl --compressed: curl decodes it itself (brotli when built with it).
        if enc == "br" and not curl_brotli:
            continue
        dec = curl(tmp_path, url, ["--compressed"] + ae)
        assert dec.status == 200, dec
        assert dec.header("Content-Encoding") == enc, dec
        assert dec.body == identity.body, (
            "curl --compressed (%s) did not get the identity bytes of %s" % (enc, path))
        assert dec.header("ETag") == etags[enc], (dec, etags)

    assert len(set(etags.values())) == 3, "the ETag must differ per encoding: %r" % etags

    # curl --compressed alone offers everything it can decode; whichever the
    # origin picks, the result is the identity body.
    dec = curl(tmp_path, url, ["--compressed"])
    assert dec.status == 200, dec
    assert dec.header("Content-Encoding") in ("br", "gzip"), dec
    assert dec.body == identity.body


def test_audio_is_never_compressed(served, tmp_path):
    origin, post = served
    path = url_path(post["audio_url"])
    digest = path[len("/a/"):-len(".opus")]
    url = origin.base + path
    etag = None
    for ae in (None, "br", "gzip", "br, gzip, deflate", "gzip;q=1.0, br;q=1.0, identity;q=0.5"):
        args = ["--compressed"] + (["-H", "Accept-Encoding: %s" % ae] if ae else [])
        r = curl(tmp_path, url, args)
        assert r.status == 200, (ae, r)
        assert r.header("Content-Encoding") is None, (
            "audio was sent with Content-Encoding %r for Accept-Encoding %r"
            % (r.header("Content-Encoding"), ae))
        assert not vary_tokens(r), "audio has one representation, yet says Vary: %r" % (
            r.header_all("Vary"),)
        assert r.header("Content-Type") == OPUS_TYPE, r
        assert r.header("Content-Length") == str(post["size_in_bytes"]), r
        assert sha256_hex(r.body) == digest, "the audio bytes are not the object"
        assert r.header("ETag") == '"%s"' % digest, r
        etag = etag or r.header("ETag")
        assert r.header("ETag") == etag

"""sayin-origin over raw sockets: headers and status codes for GET and HEAD,
keep-alive, pipelining, malformed requests, live visibility of new posts,
read-only access to the store and shutdown."""

import datetime
import os
import signal
import socket
import threading
import time

import pytest

from helpers.audio import write_noise_wav
from helpers.http import (
    FEED_TYPE, IMF_FIXDATE_RE, NAME_CACHE, OBJECT_CACHE, OPUS_TYPE, ConnectionClosed, audio_path,
    page_path, parse_http_date, refused_and_closed)
from helpers.procs import free_port, proc_fd_flags
from helpers.store import sha256_hex


def sha_of(post):
    return audio_path(post)[3:3 + 64]


def check_entity_headers(r, content_type, cache_control):
    now = datetime.datetime.now(datetime.timezone.utc)
    assert r.status == 200, r
    assert r.version == "HTTP/1.1", r.version
    assert r.header("Content-Type") == content_type, r.headers
    assert r.header("Cache-Control") == cache_control, r.headers
    assert r.header("Content-Length") == str(len(r.body)), r.headers
    assert r.header("ETag") == '"%s"' % sha256_hex(r.body), (
        "ETag %r is not the sha256 of the body" % r.header("ETag"))
    lm = r.header("Last-Modified")
    assert lm and IMF_FIXDATE_RE.match(lm), "Last-Modified %r is not an IMF-fixdate" % lm
    t = parse_http_date(lm)
    assert now - datetime.timedelta(minutes=5) <= t <= now + datetime.timedelta(seconds=5), lm
    assert len(r.header_all("Content-Length")) == 1


def test_audio_headers(served):
    origin, post = served
    r = origin.get(audio_path(post))
    check_entity_headers(r, OPUS_TYPE, OBJECT_CACHE)
    assert sha256_hex(r.body) == sha_of(post), "the object URL is not its content's sha256"
    assert len(r.body) == post["size_in_bytes"]
    assert r.body[:4] == b"OggS"


def test_feed_headers(served):
    origin, post = served
    r = origin.get("/u/alice/feed.json")
    check_entity_headers(r, FEED_TYPE, NAME_CACHE)
    assert r.json()["items"][0]["id"] == post["id"]


def test_post_page_headers(served):
    origin, post = served
    r = origin.get(page_path(post))
    assert r.status == 200, r
    ct = r.header("Content-Type")
    assert ct and ct.split(";")[0].strip() == "text/html", ct
    check_entity_headers(r, ct, NAME_CACHE)
    assert b"<audio" in r.body


def test_healthz(served):
    origin, _ = served
    r = origin.get("/healthz")
    assert r.status == 200
    assert r.header("Content-Length") == str(len(r.body))


@pytest.mark.parametrize("what", ["audio", "feed", "page", "healthz", "not-found"])
def test_head_has_get_headers_and_no_body(served, what):
    origin, post = served
    path = {"audio": audio_path(post), "feed": "/u/alice/feed.json", "page": page_path(post),
            "healthz": "/healthz", "not-found": "/u/nobody/feed.json"}[what]
    get = origin.get(path)
    with origin.conn() as c:
        # HEAD then GET on one connection: if HEAD sent a body, the second
        # response would not parse.
        c.request("HEAD", path)
        head = c.read_response(head=True)
        c.request("GET", "/healthz")
        after = c.read_response()
    assert head.status == get.status
    assert head.header_map() == get.header_map(), (
        "HEAD and GET headers differ:\nHEAD %s\nGET  %s" % (head.headers, get.headers))
    assert head.header("Content-Length") == str(len(get.body))
    assert after.status == 200 and after.header("Content-Length") == str(len(after.body)), (
        "bytes after a HEAD response (a body?): %r" % after)


def test_not_found(served):
    origin, post = served
    sha = sha_of(post)
    other = "0" * 64 if sha != "0" * 64 else "1" * 64
    paths = [
        "/", "/nope", "/a/", "/u/nobody/feed.json", "/u/alice/feed.json/", "/u/alice/feed",
        "/p/" + "0" * 26, page_path(post) + "x",
        "/a/%s.m4a" % sha,           # wrong extension for an Opus object
        "/a/%s.json" % sha,
        "/a/%s.mp3" % sha,
        "/a/%s" % sha,
        "/a/%s.opus.bak" % sha,
        "/a/%s.opus" % other,        # well-formed but absent
        "/a/%s.opus" % sha[:-1],     # short hash
        "/a/%s0.opus" % sha,         # long hash
        "/a/../u/alice/feed.json",
    ]
    for p in paths:
        r = origin.get(p)
        assert r.status == 404, "%s -> %s" % (p, r)
        assert len(r.body) < 1024, "404 body is not small"
        assert r.header("Content-Length") == str(len(r.body))
    assert origin.get(audio_path(post)).status == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("what", ["audio", "feed", "healthz"])
def test_method_not_allowed(served, method, what):
    origin, post = served
    path = {"audio": audio_path(post), "feed": "/u/alice/feed.json", "healthz": "/healthz"}[what]
    headers = {"Content-Length": "0"} if method in ("POST", "PUT", "PATCH") else None
    r = origin.request(method, path, headers=headers)
    assert r.status == 405, r
    allow = [m.strip() for m in (r.header("Allow") or "").split(",")]
    assert sorted(allow) == ["GET", "HEAD", "OPTIONS"], r.header("Allow")
    assert len(r.body) < 1024
    # Nothing changed.
    assert origin.get(audio_path(post)).status == 200


def test_keep_alive_serves_several_requests_on_one_connection(served):
    origin, post = served
    with origin.conn() as c:
        for path in (audio_path(post), "/u/alice/feed.json", page_path(post), "/nope",
                     audio_path(post)):
            c.request("GET", path)
            r = c.read_response()
            assert r.status in (200, 404), r
            assert (r.header("Connection") or "").lower() != "close", r.headers
        assert sha256_hex(r.body) == sha_of(post)
        assert not c.closed_by_peer(timeout=0.2), "the server closed a keep-alive connection"


def test_pipelined_requests_are_answered_in_order(served):
    origin, post = served
    with origin.conn() as c:
        c.send(c.build("GET", "/u/alice/feed.json") + c.build("HEAD", audio_path(post)) +
               c.build("GET", audio_path(post)) + c.build("GET", "/nope") +
               c.build("GET", page_path(post)))
        feed = c.read_response()
        head = c.read_response(head=True)
        audio = c.read_response()
        missing = c.read_response()
        page = c.read_response()
    assert feed.status == 200 and feed.json()["items"][0]["id"] == post["id"]
    assert head.status == 200 and head.header("Content-Type") == OPUS_TYPE
    assert audio.status == 200 and sha256_hex(audio.body) == sha_of(post)
    assert missing.status == 404
    assert page.status == 200 and b"<audio" in page.body


def test_http10_and_connection_close_close_the_connection(served):
    origin, post = served
    with origin.conn() as c:
        c.request("GET", audio_path(post), version="HTTP/1.0")
        r = c.read_response()
        assert r.status == 200 and sha256_hex(r.body) == sha_of(post)
        assert c.closed_by_peer(), "HTTP/1.0 without keep-alive must close"
    with origin.conn() as c:
        c.request("GET", "/healthz", headers={"Connection": "close"})
        r = c.read_response()
        assert r.status == 200
        assert (r.header("Connection") or "").lower() == "close"
        assert c.closed_by_peer(), "Connection: close was not honoured"


MALFORMED = {
    "garbage-bytes": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\xff\xfe garbage\r\n\r\n",
    "content-length-and-transfer-encoding":
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad-content-length": b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "header-without-colon": b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n",
    "two-content-lengths":
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_request_gets_400_and_close(served, case):
    origin, post = served
    idle = origin.conn()  # a keep-alive client that must not be affected
    idle.request("GET", "/healthz")
    assert idle.read_response().status == 200
    with origin.conn() as bad:
        bad.send(MALFORMED[case])
        try:
            r = bad.read_response()
        except ConnectionClosed as e:
            pytest.fail("no 400 response before the close: %s" % e)
        assert r.status == 400, r
        assert len(r.body) < 1024
        assert bad.closed_by_peer(), "the connection stayed open after a malformed request"
    # Everyone else is still served: the idle keep-alive client and new ones.
    idle.request("GET", audio_path(post))
    r = idle.read_response()
    assert r.status == 200 and sha256_hex(r.body) == sha_of(post)
    idle.close()
    assert origin.get("/healthz").status == 200
    assert origin.proc.poll() is None


def test_garbage_after_a_good_request_on_one_connection(served):
    origin, post = served
    with origin.conn() as c:
        c.send(c.build("GET", "/healthz") + b"\x00\x01\x02 not http\r\n\r\n")
        assert c.read_response().status == 200
        r = c.read_response()
        assert r.status == 400, r
        assert c.closed_by_peer()
    assert origin.get("/healthz").status == 200


def test_get_with_a_body_gets_400_and_close(served):
    """A GET with a body is refused (400) and the connection closed, so the
    body can never be parsed as a smuggled second request."""
    origin, post = served
    refused_and_closed(origin, "GET", "/healthz")


def test_post_with_a_body_gets_405(served):
    origin, post = served
    r = origin.request("POST", "/u/alice/feed.json", body=b'{"x": 1}')
    assert r.status == 405, r
    assert r.header("Allow") == "GET, HEAD, OPTIONS"


def test_post_published_while_running_is_served_at_once(sayin, served, store, wav_factory):
    origin, first = served
    conn = origin.conn()  # opened before the publish
    conn.request("GET", "/u/alice/feed.json")
    old_feed = conn.read_response()
    assert old_feed.status == 200

    second = sayin.post(store, "alice", wav_factory("second.wav", seed=42), text="second").json
    # No restart, no signal, no wait: the very next requests see it.
    conn.request("GET", audio_path(second))
    r = conn.read_response()
    assert r.status == 200, "new audio not served on the next request: %r" % r
    assert sha256_hex(r.body) == sha_of(second)
    conn.request("GET", "/u/alice/feed.json")
    feed = conn.read_response()
    conn.close()
    assert feed.status == 200
    assert [i["id"] for i in feed.json()["items"]] == [second["id"], first["id"]]
    assert feed.header("ETag") != old_feed.header("ETag")
    assert feed.header("ETag") == '"%s"' % sha256_hex(feed.body)
    assert origin.get(page_path(second)).status == 200
    # A brand-new author's feed appears too.
    third = sayin.post(store, "bob", wav_factory("third.wav", seed=43)).json
    assert origin.get("/u/bob/feed.json").status == 200
    assert origin.get(audio_path(third)).status == 200


def test_large_object_is_served_whole_to_concurrent_clients(sayin, store, tmp_path):
    wav = tmp_path / "noise.wav"
    write_noise_wav(wav, 48000, 12)
    post = sayin.post(store, "alice", wav, args=["--bitrate", "256000"]).json
    assert post["size_in_bytes"] > 200_000, post
    origin = sayin.start_origin(store)
    results = []

    def fetch():
        try:
            with origin.conn(timeout=20) as c:
                for _ in range(2):
                    c.request("GET", audio_path(post))
                    r = c.read_response()
                    results.append((r.status, sha256_hex(r.body)))
        except Exception as e:  # reported below
            results.append(("error", repr(e)))

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [(200, sha_of(post))] * 16, results


def test_origin_cannot_write_to_the_store(served, store):
    origin, _ = served
    pid = origin.proc.pid
    data_mdb = os.path.realpath(store / "data.mdb")
    maps = []
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and os.path.realpath(parts[5].strip()) == data_mdb:
                maps.append(parts[1])
    assert maps, "data.mdb is not mapped by the origin"
    assert all("w" not in perms for perms in maps), "data.mdb mapped writable: %s" % maps

    fds = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if os.path.realpath(target) == data_mdb:
            fds.append(fd)
    assert fds, "no file descriptor on data.mdb"
    for fd in fds:
        flags = proc_fd_flags(pid, fd)
        assert flags & 3 == os.O_RDONLY, "fd %s on data.mdb has flags %o (not O_RDONLY)" % (
            fd, flags)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_origin_promptly_with_exit_0(served, sig):
    origin, post = served
    idle = origin.conn()  # an idle keep-alive connection must not hold it up
    idle.request("GET", "/healthz")
    assert idle.read_response().status == 200
    t0 = time.monotonic()
    rc = origin.stop(sig, timeout=5)
    elapsed = time.monotonic() - t0
    idle.close()
    assert rc == 0, "exit status %r after %s (log: %s)" % (rc, sig, origin.log())
    assert elapsed < 3, "took %.1f s to stop" % elapsed
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", origin.port), timeout=1).close()


@pytest.mark.parametrize("case", ["missing-dir", "empty-dir"])
def test_origin_without_a_store_exits_with_a_message(sayin, tmp_path, case):
    data = tmp_path / "no-store"
    if case == "empty-dir":
        data.mkdir()
    origin = sayin.start_origin(data, wait=False, port=free_port())
    try:
        rc = origin.proc.wait(10)
    except Exception:
        pytest.fail("the origin kept running without a store")
    assert rc != 0
    log = origin.log()
    assert log.strip(), "no message"
    assert str(data) in log or "store" in log.lower(), log
    if case == "missing-dir":
        assert not data.exists(), "the read-only origin created the store directory"


def test_origin_help_and_bad_usage(sayin, tmp_path):
    r = sayin.run(sayin.origin_bin, ["--help"])
    assert r.returncode == 0 and "usage" in r.stdout.lower(), r
    r = sayin.run(sayin.origin_bin, ["--no-such-flag"])
    assert r.returncode == 2 and r.stderr.strip(), r


def test_origin_follows_a_map_grown_by_the_publisher(sayin, served, store, wav_factory):
    """A publisher restarted with a larger --map-size grows the LMDB map; the
    running origin must adopt it instead of failing every request."""
    origin, first = served
    assert origin.get(audio_path(first)).status == 200
    second = sayin.post(store, "alice", wav_factory("grow.wav", seed=7), text="bigger map",
                        args=["--map-size", "128G"]).json
    r = origin.get(audio_path(second))
    assert r.status == 200, r
    assert sha256_hex(r.body) == sha_of(second)
    assert origin.get(audio_path(first)).status == 200

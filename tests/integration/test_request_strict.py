"""The strict request parse of the HTTP core, on the real sayin-origin and
the real ingest API (`sayin-publisher serve`), over raw sockets: the bytes
an outside review used to smuggle a second request ("\\r\\n\\rX" taken as
the end of the head), bytes outside printable ASCII and '#' in the
request-target, a missing or repeated Host, bare LF line ends and obs-fold.
Each gets one 400 with "Connection: close", then the connection closes, the
request hidden after it never runs (a GET /metrics whose answer must not
appear, a DELETE that must not delete), and the origin counts it in
sayin_origin_bad_requests_total and both log it."""

import socket
import time

import pytest

from helpers.api import author_add, start_api
from helpers.http import parse_metrics

FEED = "/u/alice/feed.json"


def exchange(port, data, timeout=5.0):
    """Sends data on a new connection and reads until the server closes.
    Returns (everything received, True if it closed within timeout)."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return got, False
            except ConnectionResetError:
                return got, True
            if not chunk:
                return got, True
            got += chunk
    return got, False


def assert_one_400_then_close(port, data):
    got, closed = exchange(port, data)
    head = got.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 400 "), got[:300]
    assert "\r\nconnection: close" in head.lower(), head
    # Exactly one response: nothing hidden in the request ran.
    assert got.count(b"HTTP/1.1 ") == 1, got
    assert closed, "the connection stayed open after the 400"
    return got


def origin_get(port, path, extra=b""):
    got, _ = exchange(port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: cdn.test\r\n" + extra +
                      b"Connection: close\r\n\r\n")
    return got


def bad_requests(port):
    got = origin_get(port, "/metrics")
    body = got.split(b"\r\n\r\n", 1)[1].decode()
    return parse_metrics(body).get("sayin_origin_bad_requests_total", 0)


SMUGGLED = b"GET /metrics HTTP/1.1\r\nHost: cdn.test\r\n\r\n"

# (what, bytes): every one must be 400 on the origin, and GET /metrics
# after it must not be answered.
ORIGIN_ATTACKS = [
    ("CR after the head's CRLF", b"GET " + FEED.encode() +
     b" HTTP/1.1\r\nHost: cdn.test\r\n\rX" + SMUGGLED),
    ("CR CR ending the head", b"GET " + FEED.encode() +
     b" HTTP/1.1\r\nHost: cdn.test\r\n\r\r" + SMUGGLED),
    ("bare LF ending the head", b"GET " + FEED.encode() +
     b" HTTP/1.1\r\nHost: cdn.test\r\n\n" + SMUGGLED),
    ("bare LF after the request line", b"GET " + FEED.encode() +
     b" HTTP/1.1\nHost: cdn.test\r\n\r\n" + SMUGGLED),
    ("obs-fold", b"GET " + FEED.encode() +
     b" HTTP/1.1\r\nHost: cdn.test\r\nX-A: 1\r\n 2\r\n\r\n" + SMUGGLED),
    ("TAB in the target", b"GET /u/alice/feed.json\tx HTTP/1.1\r\nHost: cdn.test\r\n\r\n" +
     SMUGGLED),
    ("form feed in the target", b"GET /u/alice/\x0cfeed.json HTTP/1.1\r\nHost: cdn.test\r\n\r\n" +
     SMUGGLED),
    ("byte above 0x7F in the target", b"GET /u/alice/feed.json\xc3\xa9 HTTP/1.1\r\n"
     b"Host: cdn.test\r\n\r\n" + SMUGGLED),
    ("'#' in the target", b"GET /metrics#x HTTP/1.1\r\nHost: cdn.test\r\n\r\n"),
    ("'#' with random junk", b"GET /u/alice/feed.json#8f1c2a HTTP/1.1\r\nHost: cdn.test\r\n\r\n"),
    ("HTTP/1.1 without Host", b"GET " + FEED.encode() + b" HTTP/1.1\r\n\r\n" + SMUGGLED),
    ("two Host fields", b"GET " + FEED.encode() +
     b" HTTP/1.1\r\nHost: cdn.test\r\nHost: evil.test\r\n\r\n" + SMUGGLED),
    ("a bad Host value", b"GET " + FEED.encode() +
     b" HTTP/1.1\r\nHost: cdn.test/x@evil\r\n\r\n" + SMUGGLED),
]


@pytest.mark.parametrize("what,data", ORIGIN_ATTACKS, ids=[a[0] for a in ORIGIN_ATTACKS])
def test_origin_answers_400_and_runs_nothing_hidden(served, what, data):
    origin, _ = served
    before = bad_requests(origin.port)
    got = assert_one_400_then_close(origin.port, data)
    assert b"sayin_origin" not in got, "the smuggled /metrics was answered"
    assert bad_requests(origin.port) == before + 1
    assert "bad request answered 400" in origin.log(), origin.log()[-2000:]


def test_origin_still_serves_good_requests(served):
    origin, _ = served
    # HTTP/1.0 may go without Host; leading empty lines are allowed.
    got, closed = exchange(origin.port, b"GET " + FEED.encode() + b" HTTP/1.0\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 "), got[:200]
    assert closed
    got = origin_get(origin.port, FEED)
    assert got.startswith(b"HTTP/1.1 200 "), got[:200]
    got, _ = exchange(origin.port, b"\r\nGET " + FEED.encode() +
                      b" HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 "), got[:200]
    assert bad_requests(origin.port) == 0


def test_origin_refuses_other_versions_with_505(served):
    origin, _ = served
    got, closed = exchange(origin.port, b"GET " + FEED.encode() +
                           b" HTTP/2.0\r\nHost: cdn.test\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 505 "), got[:200]
    assert closed


# ---------------------------------------------------------------- the API


@pytest.fixture
def api_with_post(sayin, tmp_path, speech_clip):
    """The ingest API with one post by alice: (api, token, post id)."""
    data = tmp_path / "store"
    token = author_add(sayin, data, "alice", args=("--public-url", "https://cdn.test"))
    api = start_api(sayin, data)
    r = api.post_raw(token, speech_clip.read_bytes())
    assert r.status == 201, (r, r.body[:300])
    return api, token, r.json()["id"]


def delete_head(post_id, token, target=None, host=b"Host: api.test\r\n"):
    target = target or ("/v1/posts/" + post_id).encode()
    return (b"DELETE " + target + b" HTTP/1.1\r\n" + host +
            b"Authorization: Bearer " + token.encode() + b"\r\n\r\n")


API_ATTACKS = [
    ("CR after the head's CRLF hides a DELETE",
     lambda pid, tok: b"GET /healthz HTTP/1.1\r\nHost: api.test\r\n\rX" + delete_head(pid, tok)),
    ("bare LF ending the head hides a DELETE",
     lambda pid, tok: b"GET /healthz HTTP/1.1\r\nHost: api.test\r\n\n" + delete_head(pid, tok)),
    ("'#' in a DELETE's target",
     lambda pid, tok: delete_head(pid, tok, target=("/v1/posts/%s#x" % pid).encode())),
    ("TAB in a DELETE's target",
     lambda pid, tok: delete_head(pid, tok, target=("/v1/posts/%s\tx" % pid).encode())),
    ("DELETE without Host", lambda pid, tok: delete_head(pid, tok, host=b"")),
    ("DELETE with two Host fields",
     lambda pid, tok: delete_head(pid, tok, host=b"Host: api.test\r\nHost: other.test\r\n")),
]


@pytest.mark.parametrize("what,build", API_ATTACKS, ids=[a[0] for a in API_ATTACKS])
def test_api_answers_400_and_deletes_nothing(api_with_post, what, build):
    api, token, post_id = api_with_post
    before = api.metrics().get("sayin_api_bad_requests_total", 0)
    assert_one_400_then_close(api.port, build(post_id, token))
    assert api.metrics().get("sayin_api_bad_requests_total") == before + 1
    # The post is still there: the DELETE never ran.
    r = api.get_post(token, post_id)
    assert r.status == 200, (what, r, r.body[:200])
    assert "bad request answered 400" in api.log(), api.log()[-2000:]
    # And a well-formed DELETE still works on the same server.
    assert api.delete(token, post_id).status in (200, 204)
    assert api.get_post(token, post_id).status in (404, 410)

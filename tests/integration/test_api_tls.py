"""The ingest API over HTTPS (issue 16): `sayin-publisher serve` with
--api-tls-cert/--api-tls-key takes a publish with a bearer token over
HTTPS (curl --cacert, multipart, as test_api.py's curl upload) and
answers 201; without TLS it refuses at start an --api-listen that is not
loopback (exit 2, the message naming --api-listen and both ways out)
unless --insecure-http is given; on loopback (127.0.0.0/8, ::1) plain HTTP
needs no flag.

Certificates come from helpers.tlsca.TestCA; HTTPS requests are verified
against its root."""

import http.client
import json
import signal
import socket
import ssl
import subprocess
import time

import pytest

from helpers import tlsca
from helpers.api import author_add
from helpers.http import HttpConn, parse_metrics, tls_client_context
from helpers.procs import EXIT_USAGE, TIME_SCALE, free_port, read_log
from helpers.store import POST_ID_RE

BASE = "https://cdn.test"
POST_KEYS = {"id", "url", "audio_url", "feed_url", "duration_in_seconds", "size_in_bytes"}


class Serve:
    """A running `sayin-publisher serve` on host:port."""

    def __init__(self, proc, host, port, log_path, ca=None):
        self.proc = proc
        self.host = host
        self.port = port
        self.log_path = log_path
        # None: plain HTTP; else the client context trusting the test CA.
        self.tls = tls_client_context(ca) if ca is not None else None

    def log(self):
        return read_log(self.log_path)

    def conn(self, timeout=5.0):
        # A wildcard address is reached on loopback; the certificate names
        # 127.0.0.1, ::1 and localhost.
        connect = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return HttpConn(self.port, timeout=timeout, host=connect, tls=self.tls)

    def request(self, method, path, token=None, timeout=5.0):
        headers = [("Authorization", "Bearer " + token)] if token else None
        with self.conn(timeout) as c:
            c.request(method, path, headers=headers)
            return c.read_response()


def listen_arg(host, port):
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


def spawn_serve(sayin, data, host, port, args=(), env=None):
    argv = [sayin.publisher, "serve", "--data", str(data), "--api-listen",
            listen_arg(host, port), "--public-url", BASE] + [str(a) for a in args]
    return sayin.spawn(argv, "api", env), argv


def start_serve(sayin, data, host="127.0.0.1", args=(), ca=None, env=None, ready_timeout=15.0):
    """serve on host:<free port> ARGS, ready once GET /healthz answers 200
    (over HTTPS verified against ca when ca is given)."""
    last = ""
    for attempt in range(5):
        port = free_port()
        (proc, log_path), argv = spawn_serve(sayin, data, host, port, args, env)
        api = Serve(proc, host, port, log_path, ca)
        deadline = time.monotonic() + ready_timeout * TIME_SCALE
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if api.request("GET", "/healthz", timeout=1.0).status == 200:
                    return api
            except (OSError, ssl.SSLError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        last = api.log()
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if "in use" in last.lower():
            continue
        break
    raise AssertionError("%s did not answer /healthz; its output:\n%s"
                         % (" ".join(argv), last[-3000:]))


@pytest.fixture
def store_with_alice(sayin, tmp_path):
    """(store, alice's token)."""
    data = tmp_path / "store"
    return data, author_add(sayin, data, "alice", args=("--public-url", BASE))


# ---------------------------------------------------------------- HTTPS


def test_publish_over_https_with_a_bearer_token(sayin, tmp_path, store_with_alice, speech_clip):
    data, token = store_with_alice
    ca = tlsca.TestCA(tmp_path)
    cert, key = ca.server("api")
    api = start_serve(sayin, data, args=("--api-tls-cert", cert, "--api-tls-key", key),
                      ca=ca.root)
    assert "serve: ingest API on https://127.0.0.1:%d" % api.port in api.log(), api.log()

    r = subprocess.run(
        ["curl", "-sS", "--max-time", "60", "--cacert", ca.root, "-o", "-",
         "-w", "\n%{http_code} %{scheme} %{ssl_verify_result}",
         "-H", "Authorization: Bearer " + token,
         "-F", "audio=@%s;type=audio/wav" % speech_clip,
         "-F", "text=over https",
         "https://127.0.0.1:%d/v1/posts" % api.port],
        capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    body, _, tail = r.stdout.rpartition("\n")
    assert tail.split() == ["201", "HTTPS", "0"], r.stdout
    post = json.loads(body)
    assert POST_KEYS <= set(post), post
    assert POST_ID_RE.match(post["id"]), post

    g = api.request("GET", "/v1/posts/" + post["id"], token)
    assert g.status == 200, g
    assert g.json()["text"] == "over https"
    m = parse_metrics(api.request("GET", "/metrics").body.decode())
    assert m['sayin_api_posts_total{result="created"}'] == 1, m
    # curl's, ours (the GET, /metrics and the /healthz polls): all complete.
    assert m['sayin_tls_handshakes_total{result="ok"}'] >= 3, m
    assert m['sayin_tls_handshakes_total{result="failed"}'] == 0, m
    assert m["sayin_tls_certificate_expiry_timestamp_seconds"] > time.time() + 20 * 86400, m


def test_plain_http_to_the_https_listener_publishes_nothing(sayin, tmp_path, store_with_alice,
                                                            speech_clip):
    """The same upload in clear text to the HTTPS port: no 201, no post,
    and the failed handshake is counted."""
    data, token = store_with_alice
    ca = tlsca.TestCA(tmp_path)
    cert, key = ca.server("api")
    api = start_serve(sayin, data, args=("--api-tls-cert", cert, "--api-tls-key", key),
                      ca=ca.root)
    r = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}",
         "-H", "Authorization: Bearer " + token,
         "-F", "audio=@%s;type=audio/wav" % speech_clip,
         "http://127.0.0.1:%d/v1/posts" % api.port],
        capture_output=True, text=True, timeout=60)
    assert r.stdout != "201", (r.stdout, r.stderr)
    m = parse_metrics(api.request("GET", "/metrics").body.decode())
    assert m.get('sayin_api_posts_total{result="created"}', 0) == 0, m
    assert m['sayin_tls_handshakes_total{result="failed"}'] >= 1, m
    listed = api.request("GET", "/v1/posts?author=alice", token)
    assert listed.status == 200, listed
    assert listed.json()["posts"] == [], listed.body


def test_tls_settings_from_the_environment(sayin, tmp_path, store_with_alice):
    data, _ = store_with_alice
    ca = tlsca.TestCA(tmp_path)
    cert, key = ca.server("api")
    api = start_serve(sayin, data, ca=ca.root,
                      env={"SAYIN_API_TLS_CERT": cert, "SAYIN_API_TLS_KEY": key})
    assert api.request("GET", "/healthz").status == 200


# ---------------------------------------------------------------- plain HTTP


@pytest.mark.parametrize("host", ["0.0.0.0", "::"], ids=["0.0.0.0", "[::]"])
def test_plain_http_on_a_non_loopback_address_is_refused_at_start(sayin, store_with_alice,
                                                                  host):
    data, _ = store_with_alice
    port = free_port()
    r = sayin.run(sayin.publisher, ["serve", "--data", str(data), "--api-listen",
                                    listen_arg(host, port), "--public-url", BASE],
                  timeout=30 * TIME_SCALE)
    assert r.returncode == EXIT_USAGE, (r.returncode, r.stderr)
    for name in ("--api-listen", "--api-tls-cert", "--insecure-http"):
        assert name in r.stderr, "the refusal does not name %s: %r" % (name, r.stderr)
    assert listen_arg(host, port) in r.stderr or host in r.stderr, r.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::"], ids=["0.0.0.0", "[::]"])
def test_insecure_http_serves_plain_http_on_any_address(sayin, store_with_alice, host):
    data, token = store_with_alice
    api = start_serve(sayin, data, host=host, args=("--insecure-http",))
    assert "serve: ingest API on http://" in api.log(), api.log()
    r = api.request("GET", "/v1/posts?author=alice", token)
    assert r.status == 200, r


def test_tls_on_a_non_loopback_address_needs_no_flag(sayin, tmp_path, store_with_alice):
    data, _ = store_with_alice
    ca = tlsca.TestCA(tmp_path)
    cert, key = ca.server("api")
    api = start_serve(sayin, data, host="0.0.0.0", ca=ca.root,
                      args=("--api-tls-cert", cert, "--api-tls-key", key))
    assert api.request("GET", "/healthz").status == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1"])
def test_plain_http_on_loopback_needs_no_flag(sayin, store_with_alice, host):
    data, token = store_with_alice
    api = start_serve(sayin, data, host=host)
    assert "serve: ingest API on http://" in api.log(), api.log()
    r = api.request("GET", "/v1/posts?author=alice", token)
    assert r.status == 200, r
    assert "--insecure-http" not in api.log()


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_client_resetting_mid_response_does_not_kill_serve(sayin, tmp_path, store_with_alice,
                                                             tls):
    """Pipelined requests, then an abrupt close: serve's write meets a
    closed socket (EPIPE), which must be a write error, not SIGPIPE (it
    killed the process, exit 141, before serve ignored the signal)."""
    data, _ = store_with_alice
    ca = tlsca.TestCA(tmp_path) if tls else None
    args = []
    if ca is not None:
        cert, key = ca.server("api")
        args = ["--api-tls-cert", cert, "--api-tls-key", key]
    api = start_serve(sayin, data, args=args, ca=ca.root if ca else None)
    ctx = tls_client_context(ca.root) if ca else None
    for _ in range(5):
        raw = socket.create_connection(("127.0.0.1", api.port), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx else raw
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 100)
        # Closed unread: the kernel answers the responses with a reset,
        # and serve's next write meets EPIPE.
        s.close()
        time.sleep(0.1)
    time.sleep(0.5)
    assert api.proc.poll() is None, "serve died (exit %s):\n%s" % (api.proc.returncode,
                                                                   api.log()[-2000:])
    assert api.request("GET", "/healthz").status == 200

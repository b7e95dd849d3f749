"""Talking HTTP to the programs: a raw HTTP/1.1 client connection (keep-alive,
pipelining and closing stay observable), plain or over TLS, the Response it
reads, the header values and formats the origin serves, and small decoders
(HTTP-date, brotli, Prometheus text, URL paths)."""

import email.utils
import json
import re
import shutil
import socket
import ssl
import subprocess

import pytest

IMF_FIXDATE_RE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} GMT$"
)
RFC3339_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
OPUS_TYPE = "audio/ogg; codecs=opus"
FEED_TYPE = "application/feed+json"
OBJECT_CACHE = "public, max-age=31536000, immutable"
# Names (feeds, pages) with the default lifetimes: short for browsers, long for
# CDNs (purged on change), stale allowances per RFC 5861.
NAME_CACHE = ("public, max-age=60, s-maxage=86400, stale-while-revalidate=60, "
              "stale-if-error=86400")
JSONFEED_VERSION = "https://jsonfeed.org/version/1.1"


class ConnectionClosed(Exception):
    pass


# What a read or write raises when the peer has closed the connection: a
# reset, a write to a closed socket, and over TLS a close_notify
# (SSLZeroReturnError) or a TCP close without one (SSLEOFError).
CLOSED_ERRORS = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
                 ssl.SSLZeroReturnError, ssl.SSLEOFError)


def tls_client_context(cafile, alpn=None, minimum=None, maximum=None):
    """An SSLContext for a test client: verifies the server's certificate
    against cafile (the test CA's root) and its name or IP address.
    alpn: protocols to offer (None: no ALPN extension); minimum/maximum:
    ssl.TLSVersion bounds."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    if alpn is not None:
        ctx.set_alpn_protocols(list(alpn))
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


class Response:
    def __init__(self, version, status, reason, headers, body):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] as sent
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header_map(self, exclude=("date",)):
        """{lowercase name: [values]} without the given names."""
        out = {}
        for k, v in self.headers:
            if k.lower() in exclude:
                continue
            out.setdefault(k.lower(), []).append(v)
        return out

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Response %s %s %r body=%d bytes>" % (self.status, self.reason, self.headers,
                                                     len(self.body))


class HttpConn:
    """A raw HTTP/1.1 client connection: send bytes, read responses one at a
    time (so keep-alive, pipelining and closing can be observed).

    tls: an ssl.SSLContext (see tls_client_context) makes it an HTTPS
    connection: the handshake is done in the constructor (an ssl.SSLError
    there means the server refused it), verifying server_hostname (default:
    host). session: an ssl.SSLSession of an earlier connection to resume."""

    def __init__(self, port, timeout=5.0, host="127.0.0.1", tls=None, server_hostname=None,
                 session=None):
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            try:
                sock = tls.wrap_socket(sock, server_hostname=server_hostname or host,
                                       session=session)
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        self.buf = b""
        self.eof = False

    @property
    def tls(self):
        """The ssl.SSLSocket of an HTTPS connection (version(), session,
        session_reused, getpeercert(), selected_alpn_protocol()), else None."""
        return self.sock if isinstance(self.sock, ssl.SSLSocket) else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    @staticmethod
    def build(method, path, headers=None, body=b"", version="HTTP/1.1"):
        hdrs = [("Host", "127.0.0.1")]
        if headers:
            hdrs += list(headers.items()) if isinstance(headers, dict) else list(headers)
        if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs):
            hdrs.append(("Content-Length", str(len(body))))
        head = "%s %s %s\r\n" % (method, path, version)
        head += "".join("%s: %s\r\n" % (k, v) for k, v in hdrs)
        return head.encode("latin-1") + b"\r\n" + (body or b"")

    def request(self, method, path, headers=None, body=b"", version="HTTP/1.1"):
        self.send(self.build(method, path, headers, body, version))

    def _fill(self):
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except CLOSED_ERRORS:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionClosed("connection closed with %d of %d body bytes"
                                       % (len(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _read_line(self):
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionClosed("connection closed inside a chunked body")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_response(self, head=False):
        """Reads one response. head=True: the response to a HEAD (no body
        whatever Content-Length says). Raises ConnectionClosed on EOF before
        a complete response."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionClosed("connection closed before a response (%r)" % self.buf[:200])
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise AssertionError("bad status line %r" % lines[0])
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise AssertionError("bad header line %r" % line)
            headers.append((name.strip(), value.strip()))
        resp = Response(m.group(1), int(m.group(2)), m.group(3) or "", headers, b"")
        status = resp.status
        if head or status in (204, 304) or 100 <= status < 200:
            return resp
        te = resp.header("Transfer-Encoding")
        cl = resp.header("Content-Length")
        if te and "chunked" in te.lower():
            body = b""
            while True:
                size = int(self._read_line().split(b";")[0].strip(), 16)
                if size == 0:
                    while self._read_line() != b"":
                        pass
                    break
                body += self._read_exact(size)
                self._read_exact(2)
            resp.body = body
        elif cl is not None:
            resp.body = self._read_exact(int(cl))
        else:
            while self._fill():
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def closed_by_peer(self, timeout=3.0):
        """True when the server closes the connection (EOF, reset, over TLS
        also a close_notify) within timeout without sending anything more."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except CLOSED_ERRORS:
            return True
        except socket.timeout:
            return False
        if data:
            self.buf += data
            return False
        return True


def refused_and_closed(origin, method, path):
    """A METHOD request for path with a body that is itself a request: the
    origin answers 400 and closes the connection (so the body can never be
    parsed as a smuggled second request), then stays healthy."""
    with origin.conn() as c:
        c.send(c.build(method, path, body=b"GET /nope HTTP/1.1\r\n\r\n"))
        r = c.read_response()
        assert r.status == 400, r
        assert (r.header("Connection") or "").lower() == "close"
        assert c.closed_by_peer(), "refused a body but kept reading the connection"
    assert origin.get("/healthz").status == 200


def parse_http_date(value):
    return email.utils.parsedate_to_datetime(value)


def url_path(url):
    m = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*(/.*)?$", url)
    assert m, "not an absolute URL: %r" % url
    return m.group(1) or "/"


def audio_path(post):
    """The origin path of a published post's Opus object."""
    return url_path(post["audio_url"])


def page_path(post):
    """The origin path of a published post's page."""
    return url_path(post["url"])


def brotli_decode(data):
    """Decodes brotli with Debian's brotli CLI (python3 has no brotli module)."""
    exe = shutil.which("brotli")
    if exe is None:
        pytest.fail("brotli is not installed (run scripts/bootstrap: Debian package brotli)")
    r = subprocess.run([exe, "-d", "-c"], input=data, capture_output=True, timeout=30)
    assert r.returncode == 0, "brotli -d failed: %r" % r.stderr
    return r.stdout


def parse_metrics(text):
    """{'name{labels}': value} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out

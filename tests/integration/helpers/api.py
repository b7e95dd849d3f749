"""The ingest API (`sayin-publisher serve`): starting it, authors and their
tokens, multipart bodies, and the Api client with its JSON error shape."""

import os
import re
import signal
import urllib.parse

from helpers.http import HttpConn, parse_metrics
from helpers.procs import Program, free_port, wait_healthy

TOKEN_RE = re.compile(r"^sayin_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")


def _last_token(r, what):
    assert r.returncode == 0, "%s failed (exit %d): %s" % (what, r.returncode, r.stderr)
    lines = r.stdout.strip().splitlines()
    assert lines, "%s printed nothing" % what
    token = lines[-1].strip()
    assert TOKEN_RE.match(token), "%s: last line is not a token: %r" % (what, token)
    return token


def author_add(sayin, data, handle, name=None, args=()):
    """sayin-publisher author add HANDLE; returns the token it printed."""
    r = sayin.run(sayin.publisher, ["author", "add", handle, "--name", name or handle.title(),
                                    "--data", str(data)] + [str(a) for a in args])
    return _last_token(r, "author add %s" % handle)


def author_token(sayin, data, handle, args=()):
    r = sayin.run(sayin.publisher, ["author", "token", handle, "--data", str(data)]
                  + [str(a) for a in args])
    return _last_token(r, "author token %s" % handle)


def token_id(token):
    return token.split("_")[1]


def multipart_body(parts, boundary="sayinTestBoundary7MA4YWxkTrZu0gW"):
    """(content type, body) of multipart/form-data. parts: (name, bytes or
    str, filename or None, content type or None)."""
    out = b""
    for name, value, filename, ctype in parts:
        if isinstance(value, str):
            value = value.encode("utf-8")
        disp = 'form-data; name="%s"' % name
        if filename is not None:
            disp += '; filename="%s"' % filename
        out += b"--" + boundary.encode() + b"\r\n"
        out += ("Content-Disposition: %s\r\n" % disp).encode("utf-8")
        if ctype is not None:
            out += ("Content-Type: %s\r\n" % ctype).encode()
        out += b"\r\n" + value + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return "multipart/form-data; boundary=%s" % boundary, out


class Api(Program):
    """A running `sayin-publisher serve`."""

    STOP_TIMEOUT = 10.0

    def __init__(self, proc, port, data, upload_dir, log_path, base):
        self.proc = proc
        self.port = port
        self.data = data
        self.upload_dir = upload_dir
        self.log_path = log_path
        self.base = base  # the public URL its posts' links start with

    def conn(self, timeout=30.0):
        return HttpConn(self.port, timeout=timeout)

    @staticmethod
    def headers_for(token, headers):
        h = []
        if token is not None:
            h.append(("Authorization", "Bearer " + token))
        if headers:
            h += list(headers.items()) if isinstance(headers, dict) else list(headers)
        return h

    def request(self, method, path, token=None, headers=None, body=b"", timeout=30.0):
        """One request on a fresh connection; returns the Response."""
        with self.conn(timeout) as c:
            c.request(method, path, headers=self.headers_for(token, headers), body=body)
            return c.read_response(head=(method == "HEAD"))

    def post_raw(self, token, audio, text=None, content_type="audio/wav", headers=None,
                 timeout=60.0):
        path = "/v1/posts"
        if text is not None:
            path += "?text=" + urllib_quote(text)
        h = [("Content-Type", content_type), ("Content-Length", str(len(audio)))]
        h += list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        return self.request("POST", path, token, h, audio, timeout=timeout)

    def post_form(self, token, parts, headers=None, timeout=60.0):
        ctype, body = multipart_body(parts)
        h = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        h += list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        return self.request("POST", "/v1/posts", token, h, body, timeout=timeout)

    def get_post(self, token, post_id):
        return self.request("GET", "/v1/posts/" + post_id, token)

    def delete(self, token, post_id):
        return self.request("DELETE", "/v1/posts/" + post_id, token)

    def metrics(self):
        r = self.request("GET", "/metrics")
        assert r.status == 200, r
        return parse_metrics(r.body.decode())

    def uploads(self):
        try:
            return sorted(os.listdir(self.upload_dir))
        except FileNotFoundError:
            return []


def urllib_quote(s):
    return urllib.parse.quote(s, safe="")


def start_api(sayin, data, args=(), base="https://cdn.test", env=None, ready_timeout=15.0):
    """Starts `sayin-publisher serve --data DATA --api-listen 127.0.0.1:<free
    port> --public-url BASE ARGS` (stderr to a log file) and waits for
    /healthz. The process is killed by sayin.cleanup()."""
    last_log = ""
    for attempt in range(5):
        port = free_port()
        argv = [sayin.publisher, "serve", "--data", str(data), "--api-listen",
                "127.0.0.1:%d" % port, "--public-url", base] + [str(a) for a in args]
        proc, log_path = sayin.spawn(argv, "api", env)
        upload_dir = os.path.join(str(data), "uploads")
        for i, a in enumerate(argv):
            if a == "--upload-dir":
                upload_dir = argv[i + 1]
        api = Api(proc, port, data, upload_dir, log_path, base)
        status = wait_healthy(api, ready_timeout)
        if status == "ok":
            return api
        last_log = api.log()
        api.stop(signal.SIGKILL)
        if "in use" in last_log.lower():
            continue
        break
    raise AssertionError("sayin-publisher serve did not become healthy (%s); its output:\n%s"
                         % (status, last_log))


def error_code(resp):
    """The code of a JSON error response (asserting its shape)."""
    assert (resp.header("Content-Type") or "").startswith("application/json"), resp
    doc = resp.json()
    assert set(doc) == {"error"}, doc
    assert isinstance(doc["error"].get("message"), str) and doc["error"]["message"], doc
    return doc["error"]["code"]

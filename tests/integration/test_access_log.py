"""The access log of sayin-origin and of the ingest API (sayin-publisher
serve): one JSON object per line (origin/README.md, "Access log"), to stderr
or to a file; the client address from the CDN's header only when the peer is
a trusted edge; hostile bytes escaped so every line stays valid JSON."""

import json
import os
import signal
import time

import pytest

from helpers.api import start_api
from helpers.http import audio_path, url_path
from helpers.procs import EXIT_USAGE, wait_for

FIELDS = {"time", "client", "peer", "method", "path", "query", "protocol", "status", "bytes",
          "duration_us", "user_agent", "referer", "validator", "range", "encoding", "aborted"}


def json_lines(text):
    """Every line of text that starts with '{', parsed (a line that does not
    parse fails the test)."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError as e:
                raise AssertionError("access log line is not JSON (%s): %r" % (e, line))
    return out


def wait_lines(read, n, path=None, query=None, timeout=5.0):
    """The access lines once n of them (for path and query, when given)
    are written."""
    def some():
        return [l for l in json_lines(read())
                if (path is None or l["path"] == path) and (query is None or l["query"] == query)]
    wait_for(lambda: len(some()) >= n, timeout=timeout)
    lines = some()
    assert len(lines) >= n, "expected %d access log lines, got:\n%s" % (n, read())
    return lines


def raw_request(origin, raw):
    """Sends raw bytes as one request on a fresh connection; returns the response."""
    with origin.conn() as c:
        c.send(raw)
        return c.read_response()


@pytest.fixture
def post(sayin, store, short_wav):
    return sayin.post(store, "alice", short_wav, text="first post").json


def test_origin_writes_one_json_line_per_request_with_every_field(sayin, store, post):
    origin = sayin.start_origin(store, args=["--access-log", "stderr"])
    feed = url_path(post["feed_url"])
    r = origin.get(feed + "?page=2&x=%22y", headers={"User-Agent": "fan-app/1.0",
                                                     "Referer": "https://example.com/p"})
    assert r.status == 200
    lines = wait_lines(origin.log, 1, path=feed)
    assert len(lines) == 1, origin.log()
    line = lines[0]
    assert set(line) == FIELDS, line
    assert line["method"] == "GET"
    assert line["query"] == "page=2&x=%22y"
    assert line["protocol"] == "HTTP/1.1"
    assert line["status"] == 200
    assert line["bytes"] > len(r.body)  # headers count
    assert isinstance(line["duration_us"], int) and line["duration_us"] >= 0
    assert line["user_agent"] == "fan-app/1.0"
    assert line["referer"] == "https://example.com/p"
    assert line["client"] == "127.0.0.1" and line["peer"] == "127.0.0.1"
    assert line["validator"] == "none" and line["range"] is None
    assert line["encoding"] == "identity"
    assert line["aborted"] is False
    assert line["time"].endswith("Z") and line["time"][:2] == "20"


def test_origin_validator_outcomes_and_ranges(sayin, store, post):
    origin = sayin.start_origin(store, args=["--access-log", "stderr"])
    audio = audio_path(post)
    first = origin.get(audio)
    etag, lm = first.header("ETag"), first.header("Last-Modified")
    assert origin.get(audio, headers={"If-None-Match": etag}).status == 304
    assert origin.get(audio, headers={"If-Modified-Since": lm}).status == 304
    assert origin.get(audio, headers={"If-None-Match": '"00"'}).status == 200
    assert origin.get(audio, headers={"Range": "bytes=0-9"}).status == 206
    lines = wait_lines(origin.log, 5, path=audio)
    # Lines from different event loops may come in any order.
    assert sorted((l["status"], l["validator"], l["range"] or "") for l in lines) == sorted([
        (200, "none", ""), (304, "etag", ""), (304, "ims", ""), (200, "changed", ""),
        (206, "none", "0-9")]), lines


def test_client_header_is_believed_only_from_a_trusted_edge(sayin, store, post):
    trusted = sayin.start_origin(store, args=[
        "--access-log", "stderr", "--client-ip-header", "X-Forwarded-For",
        "--trusted-edges", "10.0.0.0/8, 127.0.0.0/8"])
    untrusted = sayin.start_origin(store, args=[
        "--access-log", "stderr", "--client-ip-header", "X-Forwarded-For",
        "--trusted-edges", "10.0.0.0/8,2001:db8::/32"])
    hdr = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}
    for o in (trusted, untrusted):
        o.get("/healthz?1", headers=hdr)
        o.get("/healthz?2", headers={"X-Forwarded-For": "not-an-address"})
    # A client's own line first, the edge's appended as a line of its own:
    # the last copy counts.
    r = raw_request(trusted, b"GET /healthz?3 HTTP/1.1\r\nHost: t\r\n"
                    b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n")
    assert r.status == 200
    assert wait_lines(trusted.log, 1, query="3")[-1]["client"] == "203.0.113.7"
    t = wait_lines(trusted.log, 1, query="1") + wait_lines(trusted.log, 1, query="2")
    u = wait_lines(untrusted.log, 1, query="1") + wait_lines(untrusted.log, 1, query="2")
    # The last element is the one the edge itself appended.
    assert t[0]["client"] == "203.0.113.9" and t[0]["peer"] == "127.0.0.1", t
    assert t[1]["client"] == "127.0.0.1", t  # a malformed value is not taken
    assert [l["client"] for l in u] == ["127.0.0.1", "127.0.0.1"], u


def test_hostile_bytes_are_escaped_and_lines_stay_valid_json(sayin, store, post):
    origin = sayin.start_origin(store, args=["--access-log", "stderr"])
    # The core refuses other control bytes in a field value with 400; a tab
    # is legal there and must still be escaped.
    ua = b'evil "quoted" \\ \t caf\xc3\xa9 \xff\xfe \xe2\x82 \xed\xa0\x80 end'
    raw = (b"GET /healthz?hostile HTTP/1.1\r\nHost: t\r\nUser-Agent: " + ua +
           b"\r\nReferer: " + b"r" * 5000 + b"\r\n\r\n")
    r = raw_request(origin, raw)
    assert r.status == 200
    lines = wait_lines(origin.log, 1, query="hostile")
    got = lines[-1]["user_agent"]
    # Quotes, backslash and control bytes round-trip through JSON; valid
    # UTF-8 stays; each invalid byte becomes U+FFFD.
    # (an encoded surrogate, ED A0 80, is not UTF-8 either)
    assert got == 'evil "quoted" \\ \t caf\u00e9 \ufffd\ufffd \ufffd\ufffd \ufffd\ufffd\ufffd end', got
    # Long fields are cut, and the line stays one short write.
    assert lines[-1]["referer"].endswith("...") and len(lines[-1]["referer"]) < 1024
    # The bytes as written: strict UTF-8 (the log reader above would have
    # replaced bad bytes itself), no raw tab, under one pipe write.
    with open(origin.log_path, "rb") as f:
        raw_line = [l for l in f.read().splitlines()
                    if l.startswith(b"{") and b'"query":"hostile"' in l][-1]
    assert len(raw_line) < 4096
    text = raw_line.decode("utf-8")  # raises on invalid UTF-8
    assert "\t" not in text and "\\u0009" in text and "\\ufffd" in text


def test_access_log_to_a_file_not_stderr(sayin, store, post, tmp_path):
    path = tmp_path / "logs" / "access.log"
    path.parent.mkdir()
    origin = sayin.start_origin(store, args=["--access-log", str(path)])
    origin.get("/metrics")
    wait_for(lambda: path.exists() and "/metrics" in path.read_text())
    assert [l["path"] for l in json_lines(path.read_text())][-1] == "/metrics"
    assert json_lines(origin.log()) == []
    assert (os.stat(path).st_mode & 0o777) == 0o640


def test_access_log_off_writes_nothing(sayin, store, post):
    origin = sayin.start_origin(store, args=["--access-log", "off"])
    origin.get("/healthz")
    time.sleep(0.2)
    assert json_lines(origin.log()) == []


@pytest.mark.parametrize("args, words", [
    (["--access-log", "of"], "not off, stderr or a file path"),
    (["--access-log", "/nonexistent-dir/x.log"], "cannot open /nonexistent-dir/x.log"),
    (["--trusted-edges", "10.0.0.0/33"], "--trusted-edges: '10.0.0.0/33'"),
    (["--client-ip-header", "X-Forwarded-For"], "needs --trusted-edges"),
])
def test_bad_access_log_settings_are_refused(sayin, store, post, args, words):
    r = sayin.run(sayin.origin_bin, ["--data", str(store), "--listen", "127.0.0.1:0"] + args,
                  timeout=10)
    assert r.returncode in (1, EXIT_USAGE), (r.returncode, r.stderr)
    assert words in r.stderr, r.stderr


def test_api_writes_the_same_format(sayin, store, tmp_path):
    path = tmp_path / "api-access.log"
    api = start_api(sayin, store, args=["--api-access-log", str(path), "--client-ip-header",
                                        "CF-Connecting-IP", "--trusted-edges", "127.0.0.1"])
    r = api.request("GET", "/v1/posts?author=nobody", headers={"User-Agent": "app/2",
                                                              "CF-Connecting-IP": "2001:db8::5"})
    assert r.status == 401
    wait_for(lambda: path.exists() and len(json_lines(path.read_text())) >= 2)
    lines = [l for l in json_lines(path.read_text()) if l["path"] == "/v1/posts"]
    assert len(lines) == 1, path.read_text()
    line = lines[0]
    assert set(line) == FIELDS, line
    assert (line["method"], line["query"], line["status"], line["user_agent"], line["client"],
            line["peer"]) == ("GET", "author=nobody", 401, "app/2", "2001:db8::5", "127.0.0.1")
    assert api.stop(signal.SIGTERM) == 0


def test_lost_lines_are_counted_and_logged(sayin, store, post):
    origin = sayin.start_origin(store, args=["--access-log", "/dev/full"])
    for _ in range(3):
        assert origin.get("/healthz").status == 200  # the response never suffers
    wait_for(lambda: "accesslog: a line could not be written" in origin.log())
    text = origin.get("/metrics").body.decode()
    lost = [l for l in text.splitlines()
            if l.startswith("sayin_access_log_write_failures_total ")]
    assert lost and float(lost[0].split()[1]) >= 3, text
    assert "No space left on device" in origin.log()

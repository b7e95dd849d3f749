"""sayin-origin under abuse and at scale: limits and timeouts on raw sockets
while a normal client keeps being served, clients that vanish, graceful
shutdown, several event loops on one port, start-up failures, and /metrics
(valid Prometheus text, the process-wide series, an admin listener).

Each test starts the real bin/sayin-origin with small limits given as flags.
"""

import math
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from helpers.audio import write_wav_module
from helpers.http import ConnectionClosed, HttpConn, url_path
from helpers.procs import Sayin, free_port
from helpers.store import sha256_hex, store_counts

# ---------------------------------------------------------------- helpers

BIG_BITRATE = "510000"  # libopus mono tops out near 250 kb/s: 80 s -> ~2.4 MiB


def raw_connect(port, rcvbuf=None, timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Before connect(), so the window the server sees stays small.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def request_bytes(path, extra=""):
    return ("GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n" % (path, extra)).encode("latin-1")


def closed_within(sock, timeout):
    """Reads (and drops) whatever arrives until EOF or reset. Returns
    (closed, bytes read): closed is False if the socket was still open
    after timeout."""
    deadline = time.monotonic() + timeout
    got = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, got
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return False, got
        except (ConnectionResetError, BrokenPipeError):
            return True, got
        if not data:
            return True, got
        got += len(data)


def abort(sock):
    """Close with RST: the client vanishes without a goodbye."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Steady(threading.Thread):
    """A well-behaved client: GET path on fresh connections in a loop,
    recording every outcome, until stopped."""

    def __init__(self, port, path="/healthz", keepalive=False):
        super().__init__(daemon=True)
        self.port = port
        self.path = path
        self.keepalive = keepalive
        self.results = []
        self.halt = threading.Event()

    def run(self):
        conn = None
        while not self.halt.is_set():
            try:
                if conn is None:
                    conn = HttpConn(self.port, timeout=5.0)
                conn.request("GET", self.path)
                r = conn.read_response()
                self.results.append(r.status)
                if not self.keepalive:
                    conn.close()
                    conn = None
            except Exception as e:  # reported by the test
                self.results.append(repr(e))
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.02)
        if conn is not None:
            conn.close()

    def stop(self):
        self.halt.set()
        self.join(10)
        return self.results


# ------------------------------------------------------- Prometheus text

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE_RE = re.compile(r"^(%s)(\{(?:%s(?:,%s)*,?)?\})? (\S+)(?: (-?\d+))?$"
                       % (METRIC_NAME, LABEL, LABEL))
HELP_RE = re.compile(r"^# HELP (%s) ((?:[^\\\n]|\\[\\n])*)$" % METRIC_NAME)
TYPE_RE = re.compile(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$" % METRIC_NAME)
LABEL_PAIR_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
FLOAT_RE = re.compile(r"^(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|[+-]?Inf|NaN)$")


class Metrics:
    """A parsed, validated exposition: every line must be a HELP, a TYPE or
    a sample of a family whose TYPE came first and whose samples are not
    interleaved with another family's."""

    def __init__(self, text):
        self.text = text
        self.types = {}
        self.samples = {}  # (name, ((label, value), ...)) -> float
        assert text.endswith("\n"), "exposition does not end with a newline"
        current = None
        closed = set()
        for n, line in enumerate(text.split("\n")[:-1], 1):
            where = "line %d: %r" % (n, line)
            if line.startswith("#"):
                m = HELP_RE.match(line) or TYPE_RE.match(line)
                assert m, "bad comment " + where
                fam = m.group(1)
                if line.startswith("# TYPE"):
                    assert fam not in self.types, "second TYPE for %s: %s" % (fam, where)
                    self.types[fam] = m.group(2)
                if fam != current:
                    assert fam not in closed, "family %s split up: %s" % (fam, where)
                    if current is not None:
                        closed.add(current)
                    current = fam
                continue
            assert line, "empty line " + where
            m = SAMPLE_RE.match(line)
            assert m, "bad sample " + where
            name, labels, value = m.group(1), m.group(2) or "", m.group(3)
            assert FLOAT_RE.match(value), "bad value " + where
            fam = self.family_of(name)
            assert fam == current, "sample outside its family block (%s): %s" % (fam, where)
            pairs = tuple(sorted(LABEL_PAIR_RE.findall(labels)))
            key = (name, pairs)
            assert key not in self.samples, "duplicate sample " + where
            self.samples[key] = float(value)
        self.check_histograms()

    def family_of(self, name):
        if name in self.types:
            return name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)] if name.endswith(suffix) else None
            if base and self.types.get(base) == "histogram":
                return base
        raise AssertionError("sample %s has no TYPE line before it" % name)

    def check_histograms(self):
        for fam, typ in self.types.items():
            if typ != "histogram":
                continue
            series = {}
            for (name, pairs), v in self.samples.items():
                if name == fam + "_bucket":
                    rest = tuple(p for p in pairs if p[0] != "le")
                    le = dict(pairs)["le"]
                    series.setdefault(rest, []).append((float(le), v))
            for rest, buckets in series.items():
                buckets.sort()
                counts = [v for _, v in buckets]
                assert counts == sorted(counts), "%s%s buckets not cumulative" % (fam, rest)
                assert buckets[-1][0] == math.inf, "%s%s has no +Inf bucket" % (fam, rest)
                assert self.samples[(fam + "_count", rest)] == counts[-1], (fam, rest)
                assert (fam + "_sum", rest) in self.samples, (fam, rest)

    def get(self, name, **labels):
        key = (name, tuple(sorted(labels.items())))
        assert key in self.samples, "no sample %s%s in:\n%s" % (name, labels, self.text)
        return self.samples[key]

    def total(self, name):
        """Sum of every sample named name, whatever its labels."""
        return sum(v for (n, _), v in self.samples.items() if n == name)


def scrape(port):
    with HttpConn(port) as c:
        c.request("GET", "/metrics")
        r = c.read_response()
    assert r.status == 200, r
    ctype = r.header("Content-Type") or ""
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    return Metrics(r.body.decode("utf-8"))


def wait_metric(port, name, pred, timeout=5.0, **labels):
    """Scrapes until pred(value) holds; returns the last Metrics."""
    deadline = time.monotonic() + timeout
    while True:
        m = scrape(port)
        if pred(m.get(name, **labels)) or time.monotonic() > deadline:
            return m
        time.sleep(0.05)


PROCESS_SERIES = [
    ("sayin_origin_connections_open", "gauge", {}),
    ("sayin_origin_connections_accepted_total", "counter", {}),
    ("sayin_origin_connections_refused_total", "counter", {}),
    ("sayin_origin_timeouts_total", "counter", {"kind": "header"}),
    ("sayin_origin_timeouts_total", "counter", {"kind": "idle"}),
    ("sayin_origin_timeouts_total", "counter", {"kind": "write"}),
    ("sayin_origin_bad_requests_total", "counter", {}),
    ("sayin_store_map_size_bytes", "gauge", {}),
    ("sayin_store_map_used_bytes", "gauge", {}),
    ("sayin_store_objects", "gauge", {}),
    ("sayin_store_names", "gauge", {}),
    ("sayin_store_posts", "gauge", {}),
    ("sayin_origin_threads", "gauge", {}),
    ("process_start_time_seconds", "gauge", {}),
]


# ------------------------------------------------------------ the store


def origin_readers(data_dir, pid):
    """Reader slots of pid holding a transaction, from `mdb_stat -r`."""
    out = subprocess.run(["mdb_stat", "-r", str(data_dir)], capture_output=True, text=True,
                         timeout=30)
    # mdb_stat 0.9.24 exits 1 after "(no active readers)".
    assert "Reader Table Status" in out.stdout, (out.returncode, out.stdout, out.stderr)
    held = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == str(pid) and parts[2] != "-":
            held.append(line.strip())
    return held


def env_info(data_dir):
    out = subprocess.run(["mdb_stat", "-e", str(data_dir)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    info = {}
    for line in out.stdout.splitlines():
        k, sep, v = line.strip().partition(":")
        if sep:
            info[k.strip()] = v.strip()
    return info


def listeners_of(pid, port):
    """Listening TCP sockets on port that belong to pid (from /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        m = re.match(r"^socket:\[(\d+)\]$", target)
        if m:
            inodes.add(m.group(1))
    found = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            local_port = int(cols[1].rsplit(":", 1)[1], 16)
            if local_port == port and cols[3] == "0A" and cols[9] in inodes:
                found += 1
    return found


# ------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def big_store(bin_dir, tmp_path_factory, big_noise_wav):
    """A store with a small post by alice and a ~2.4 MiB Opus object by bob.
    Read-only for the tests that share it."""
    d = tmp_path_factory.mktemp("bigstore")
    s = Sayin(bin_dir, str(d))
    small = d / "small.wav"
    write_wav_module(small, 16000, 1, seconds=0.4)
    try:
        # One bitrate for the store: the first post records it as the site's.
        alice = s.post(d / "store", "alice", small, text="hello",
                       args=["--bitrate", BIG_BITRATE]).json
        bob = s.post(d / "store", "bob", big_noise_wav, text="loud",
                     args=["--bitrate", BIG_BITRATE]).json
    finally:
        s.cleanup()
    assert bob["size_in_bytes"] > 2 << 20, bob
    return {"dir": d / "store", "alice": alice, "bob": bob,
            "big_path": url_path(bob["audio_url"]), "big_size": bob["size_in_bytes"],
            "big_sha": url_path(bob["audio_url"])[3:3 + 64]}


def start(sayin, big_store, *args):
    return sayin.start_origin(big_store["dir"], args=[str(a) for a in args])


def get_big(port, path, timeout=30.0):
    with HttpConn(port, timeout=timeout) as c:
        c.request("GET", path)
        return c.read_response()


# ----------------------------------------------------------------- limits


def test_slowloris_is_cut_off_while_others_are_served(sayin, big_store):
    origin = start(sayin, big_store, "--header-timeout-ms", 1000, "--threads", 1)
    steady = Steady(origin.port, "/u/alice/feed.json")
    steady.start()
    s = raw_connect(origin.port)
    t0 = time.monotonic()
    s.sendall(b"GET /u/alice/feed.json HTTP/1.1\r\n")
    closed = False
    # One header byte every 200 ms: always progress, never a whole request.
    for b in b"X-Slow: " + b"a" * 100:
        try:
            s.sendall(bytes([b]))
        except OSError:
            closed = True
            break
        closed, _ = closed_within(s, 0.2)
        if closed:
            break
    elapsed = time.monotonic() - t0
    s.close()
    results = steady.stop()
    assert closed, "a client trickling header bytes was never cut off"
    assert 0.8 <= elapsed < 3.5, "cut off after %.2f s, want about 1 s" % elapsed
    assert results and all(r == 200 for r in results), results
    m = scrape(origin.port)
    assert m.get("sayin_origin_timeouts_total", kind="header") >= 1


@pytest.mark.parametrize("raw,status", [
    pytest.param(request_bytes("/healthz", "X-Big: %s\r\n" % ("a" * 3000)), 431,
                 id="header-bytes"),
    pytest.param(request_bytes("/healthz", "".join("X-%d: v\r\n" % i for i in range(12))),
                 431, id="header-count"),
    pytest.param(request_bytes("/" + "u" * 600), 414, id="uri"),
])
def test_oversized_requests_are_refused_while_others_are_served(sayin, big_store, raw, status):
    origin = start(sayin, big_store, "--max-header-bytes", 2048, "--max-headers", 10,
                   "--max-uri", 512, "--threads", 1)
    keep = origin.conn()
    keep.request("GET", "/healthz")
    assert keep.read_response().status == 200
    before = scrape(origin.port).get("sayin_origin_bad_requests_total")

    with HttpConn(origin.port) as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == status, r
        assert (r.header("Connection") or "").lower() == "close", r
        assert c.closed_by_peer(3.0), "the connection stayed open after %d" % status

    # The limit is not shared: a request just under it still works, and the
    # keep-alive client next door is unaffected.
    ok = request_bytes("/healthz", "X-Big: %s\r\n" % ("a" * 1500))
    with HttpConn(origin.port) as c:
        c.send(ok)
        assert c.read_response().status == 200
    keep.request("GET", "/u/alice/feed.json")
    assert keep.read_response().status == 200
    keep.close()
    after = scrape(origin.port).get("sayin_origin_bad_requests_total")
    assert after == before + 1, (before, after)


def test_connections_beyond_the_limit_are_refused_politely(sayin, big_store, tmp_path):
    admin = free_port()
    origin = start(sayin, big_store, "--max-connections", 4, "--threads", 1,
                   "--admin-listen", "127.0.0.1:%d" % admin)
    held = []
    for _ in range(4):
        c = origin.conn()
        c.request("GET", "/healthz")
        assert c.read_response().status == 200
        held.append(c)
    assert scrape(admin).get("sayin_origin_connections_open") == 4

    # 2x the limit: the extra ones get a 503 or an EOF, fast, never a hang.
    for _ in range(4):
        s = raw_connect(origin.port)
        t0 = time.monotonic()
        try:
            s.sendall(request_bytes("/healthz"))
        except OSError:
            pass  # already closed: fine
        closed, got = closed_within(s, 3.0)
        s.close()
        assert closed, "a connection over the limit was left hanging"
        assert time.monotonic() - t0 < 2.0
    m = scrape(admin)
    assert m.get("sayin_origin_connections_refused_total") >= 4
    assert m.get("sayin_origin_connections_open") == 4

    # Those being served keep being served...
    for c in held:
        c.request("GET", "/u/alice/feed.json")
        assert c.read_response().status == 200
    # ...and a slot that frees up is given to the next client.
    held.pop().close()
    deadline = time.monotonic() + 5
    status = None
    while time.monotonic() < deadline:
        try:
            with HttpConn(origin.port) as c:
                c.request("GET", "/healthz")
                status = c.read_response().status
        except (ConnectionClosed, OSError):
            status = None
        if status == 200:
            break
        time.sleep(0.05)
    assert status == 200, "no slot came free after a client left"
    for c in held:
        c.close()


def test_idle_keepalive_is_closed(sayin, big_store):
    origin = start(sayin, big_store, "--idle-timeout-ms", 500, "--threads", 1)
    c = origin.conn()
    c.request("GET", "/healthz")
    assert c.read_response().status == 200
    t0 = time.monotonic()
    assert c.closed_by_peer(5.0), "an idle keep-alive connection was kept open"
    elapsed = time.monotonic() - t0
    c.close()
    assert 0.3 <= elapsed < 3.0, elapsed
    # A connection that never says anything goes the same way.
    s = raw_connect(origin.port)
    closed, got = closed_within(s, 5.0)
    s.close()
    assert closed and got == 0
    m = scrape(origin.port)
    assert m.get("sayin_origin_timeouts_total", kind="idle") >= 2
    assert m.get("sayin_origin_timeouts_total", kind="header") == 0


def test_a_client_that_never_reads_is_cut_after_the_write_timeout(sayin, big_store):
    origin = start(sayin, big_store, "--write-timeout-ms", 500, "--threads", 1)
    path, size = big_store["big_path"], big_store["big_size"]
    # Kernel buffers can swallow one large response whole, so ask for three
    # and read nothing: the server's writes must stall.
    s = raw_connect(origin.port, rcvbuf=4096)
    s.sendall(request_bytes(path) * 3)
    m = wait_metric(origin.port, "sayin_origin_timeouts_total", lambda v: v >= 1, timeout=10,
                    kind="write")
    assert m.get("sayin_origin_timeouts_total", kind="write") >= 1, "no write timeout"

    # Others are served meanwhile, in full.
    r = get_big(origin.port, path)
    assert r.status == 200 and sha256_hex(r.body) == big_store["big_sha"]

    closed, got = closed_within(s, 10.0)
    s.close()
    assert closed, "the stalled connection is still open"
    assert got < 3 * size, "all three responses arrived: nothing stalled"
    assert origin_readers(big_store["dir"], origin.proc.pid) == []


def test_vanishing_clients_cost_nothing(sayin, tmp_path, wav_factory, big_noise_wav):
    """Many downloads of a large object cut short: the server keeps serving,
    every read transaction ends, and publishing goes on."""
    store = tmp_path / "store"
    # One bitrate for the store: the first post records it as the site's.
    big_rate = ["--bitrate", BIG_BITRATE]
    post = sayin.post(store, "alice", wav_factory("a.wav", seed=3), args=big_rate).json
    big = sayin.post(store, "bob", big_noise_wav, args=big_rate).json
    path = url_path(big["audio_url"])
    origin = sayin.start_origin(store, args=["--threads", "2"])
    for i in range(40):
        s = raw_connect(origin.port, rcvbuf=16384)
        s.sendall(request_bytes(path))
        s.recv(4096)
        if i % 2:
            abort(s)
        else:
            s.close()
    deadline = time.monotonic() + 10
    while True:
        readers = origin_readers(store, origin.proc.pid)
        m = scrape(origin.port)
        open_now = m.get("sayin_origin_connections_open")
        if (not readers and open_now == 1) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert readers == [], "read transactions outlive their clients: %s" % readers
    assert open_now == 1, "%d connections outlive their clients" % (open_now - 1)

    r = get_big(origin.port, path)
    assert r.status == 200 and sha256_hex(r.body) == path[3:3 + 64]
    newer = sayin.post(store, "alice", wav_factory("b.wav", seed=4), text="still here",
                       args=big_rate).json
    r = origin.get(url_path(newer["audio_url"]))
    assert r.status == 200, r
    feed = origin.get("/u/alice/feed.json").json()
    assert [i["id"] for i in feed["items"]][:2] == [newer["id"], post["id"]]
    assert origin.proc.poll() is None


# --------------------------------------------------------------- shutdown


def split_responses(data):
    """Splits raw bytes into (status, body) responses with Content-Length;
    a truncated last one is returned with body None."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            out.append((None, None))
            break
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
        n = int(m.group(1))
        if len(rest) < n:
            out.append((status, None))
            break
        out.append((status, rest[:n]))
        data = rest[n:]
    return out


def test_sigterm_lets_a_slow_download_finish(sayin, big_store):
    origin = start(sayin, big_store, "--threads", 2)
    path = big_store["big_path"]
    # Three large responses pipelined to a client that reads nothing yet:
    # kernel buffers hold less than that, so when the signal comes a
    # response is still being written from the server's memory.
    s = raw_connect(origin.port, rcvbuf=32768, timeout=10)
    s.sendall(request_bytes(path) * 3)
    time.sleep(0.5)
    t0 = time.monotonic()
    origin.proc.send_signal(signal.SIGTERM)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        time.sleep(0.01)  # a slow reader
    s.close()
    responses = split_responses(data)
    assert responses, "nothing received"
    for status, body in responses:
        assert status == 200 and body is not None, \
            "a response in flight was cut at shutdown (%d bytes in all)" % len(data)
        assert sha256_hex(body) == big_store["big_sha"]
    assert time.monotonic() - t0 > 0.3, "the download was over before the signal"
    assert origin.proc.wait(10) == 0, origin.log()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", origin.port), timeout=1).close()


def test_sigterm_cuts_a_stalled_download_at_the_grace_bound(sayin, big_store):
    origin = start(sayin, big_store, "--threads", 2, "--shutdown-grace-ms", 500)
    s = raw_connect(origin.port, rcvbuf=4096)
    s.sendall(request_bytes(big_store["big_path"]) * 3)  # never read
    time.sleep(0.3)
    t0 = time.monotonic()
    rc = origin.stop(signal.SIGTERM, timeout=10)
    elapsed = time.monotonic() - t0
    assert rc == 0, "exit %r: %s" % (rc, origin.log())
    assert 0.4 <= elapsed < 3.0, "stopped after %.2f s with a 0.5 s grace" % elapsed
    closed, got = closed_within(s, 5.0)
    s.close()
    assert closed and got < 3 * big_store["big_size"]


# ------------------------------------------------------------ event loops


def test_two_threads_share_the_port(sayin, big_store):
    admin = free_port()
    # One connection per loop: a second one served at the same time proves
    # that a second loop accepts.
    origin = start(sayin, big_store, "--threads", 2, "--max-connections", 1,
                   "--admin-listen", "127.0.0.1:%d" % admin)
    pid = origin.proc.pid
    assert listeners_of(pid, origin.port) == 2, "want two SO_REUSEPORT listeners"
    assert len(os.listdir("/proc/%d/task" % pid)) >= 3
    m = scrape(admin)
    assert m.get("sayin_origin_threads") == 2

    served = []
    for _ in range(60):
        c = origin.conn()
        try:
            c.request("GET", "/healthz")
            if c.read_response().status == 200:
                served.append(c)
                if len(served) == 2:
                    break
                continue
        except (ConnectionClosed, OSError):
            pass
        c.close()
    assert len(served) == 2, "only one connection at a time was served"
    assert scrape(admin).get("sayin_origin_connections_open") == 2
    for c in served:
        c.close()


def test_threads_default_to_the_number_of_cores(sayin, big_store):
    origin = start(sayin, big_store)
    cores = len(os.sched_getaffinity(0))
    assert scrape(origin.port).get("sayin_origin_threads") == cores
    assert listeners_of(origin.proc.pid, origin.port) == cores


# ---------------------------------------------------------------- metrics


def test_metrics_are_valid_and_count(sayin, big_store):
    origin = start(sayin, big_store, "--threads", 2)
    before = scrape(origin.port)
    for typ_name, typ, labels in PROCESS_SERIES:
        assert before.types.get(typ_name) == typ, (typ_name, before.types.get(typ_name))
        before.get(typ_name, **labels)
    assert abs(before.get("process_start_time_seconds") - time.time()) < 120
    # The handler's series are there too: requests counted by route.
    req_families = [f for f, t in before.types.items()
                    if t == "counter" and re.match(r"^sayin_origin_.*requests_total$", f)
                    and f != "sayin_origin_bad_requests_total"]
    assert req_families, "no request counter in:\n" + before.text
    assert any(t == "histogram" for t in before.types.values()), "no latency histogram"

    for _ in range(5):
        assert origin.get("/u/alice/feed.json").status == 200
    after = scrape(origin.port)
    assert (after.get("sayin_origin_connections_accepted_total")
            >= before.get("sayin_origin_connections_accepted_total") + 5)
    assert (sum(after.total(f) for f in req_families)
            >= sum(before.total(f) for f in req_families) + 5)
    # Once the server has seen the clients go, only the scrape's is open.
    m = wait_metric(origin.port, "sayin_origin_connections_open", lambda v: v == 1)
    assert m.get("sayin_origin_connections_open") == 1


def test_admin_listener_takes_metrics_off_the_main_listener(sayin, big_store):
    admin = free_port()
    origin = start(sayin, big_store, "--admin-listen", "127.0.0.1:%d" % admin, "--threads", 1)
    m = scrape(admin)
    assert m.get("sayin_origin_threads") == 1
    with HttpConn(admin) as c:
        c.request("GET", "/healthz")
        assert c.read_response().status == 200
        c.request("GET", "/u/alice/feed.json")
        assert c.read_response().status == 404, "the admin listener serves content"
        c.request("POST", "/metrics", body=b"")
        assert c.read_response().status == 405
        c.request("HEAD", "/metrics")
        r = c.read_response(head=True)
        assert r.status == 200 and int(r.header("Content-Length")) > 0
    assert origin.get("/metrics").status == 404
    assert origin.get("/u/alice/feed.json").status == 200
    # Requests on the main listener show up on the admin one.
    assert scrape(admin).get("sayin_origin_connections_accepted_total") >= 3


def test_store_gauges_match_mdb_stat(sayin, tmp_path, wav_factory, lmdb_tools):
    store = tmp_path / "store"
    for i in range(3):
        sayin.post(store, "alice" if i < 2 else "carol", wav_factory("%d.wav" % i, seed=i + 1))
    origin = sayin.start_origin(store, args=["--threads", "1"])
    m = scrape(origin.port)
    counts = store_counts(store)
    assert m.get("sayin_store_objects") == counts["objects"]
    assert m.get("sayin_store_names") == counts["names"]
    assert m.get("sayin_store_posts") == counts["posts"] == 3
    info = env_info(store)
    assert m.get("sayin_store_map_size_bytes") == int(info["Map size"])
    used = int(info["Number of pages used"]) * int(info["Page size"]) \
        if "Page size" in info else None
    if used is not None:
        assert m.get("sayin_store_map_used_bytes") == used
    assert 0 < m.get("sayin_store_map_used_bytes") <= m.get("sayin_store_map_size_bytes")

    # Live: a commit shows at the next scrape.
    sayin.post(store, "carol", wav_factory("late.wav", seed=9))
    m2 = scrape(origin.port)
    assert m2.get("sayin_store_objects") == store_counts(store)["objects"] > counts["objects"]
    assert m2.get("sayin_store_posts") == 4
    assert m2.get("sayin_store_map_used_bytes") >= m.get("sayin_store_map_used_bytes")


# ---------------------------------------------------------------- start-up


def exits_with(origin, code, timeout=10):
    try:
        rc = origin.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("sayin-origin kept running: %s" % origin.log())
    assert rc == code, "exit %d, want %d: %s" % (rc, code, origin.log())
    return origin.log()


def test_a_port_in_use_fails_the_start(sayin, big_store):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        o = sayin.start_origin(big_store["dir"], args=["--threads", "2"], listen=False,
                               wait=False)
        o2 = sayin.start_origin(big_store["dir"], args=["--threads", "2", "--listen",
                                                        "127.0.0.1:%d" % port],
                                listen=False, wait=False)
        exits_with(o2, 1)
        assert "in use" in o2.log().lower(), o2.log()
    o.stop(signal.SIGKILL)


def test_a_second_origin_does_not_join_the_first(sayin, big_store):
    """SO_REUSEPORT would let a second instance share the port silently."""
    first = start(sayin, big_store, "--threads", 2)
    second = sayin.start_origin(big_store["dir"], listen=False, wait=False,
                                args=["--threads", "2", "--listen",
                                      "127.0.0.1:%d" % first.port])
    log = exits_with(second, 1)
    assert "in use" in log.lower(), log
    assert listeners_of(first.proc.pid, first.port) == 2
    assert first.get("/healthz").status == 200


def test_admin_port_in_use_leaves_nothing_running(sayin, big_store):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        admin = taken.getsockname()[1]
        o = sayin.start_origin(big_store["dir"], listen=False, wait=False,
                               args=["--threads", "2", "--listen", "127.0.0.1:%d" % port,
                                     "--admin-listen", "127.0.0.1:%d" % admin])
        log = exits_with(o, 1)
    assert "admin" in log.lower() and "in use" in log.lower(), log
    # The main port it had bound is free again.
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:99999", "localhost:80"])
def test_a_bad_listen_address_fails_the_start(sayin, big_store, listen):
    o = sayin.start_origin(big_store["dir"], listen=False, wait=False,
                           args=["--listen", listen])
    log = exits_with(o, 1)
    assert listen in log, log


@pytest.mark.parametrize("flag,value", [
    ("--threads", "two"), ("--threads", "-1"), ("--threads", "100000"),
    ("--max-connections", "0"), ("--max-header-bytes", "10"), ("--max-headers", "0"),
    ("--max-uri", "x"), ("--idle-timeout-ms", "0"), ("--header-timeout-ms", "1s"),
    ("--write-timeout-ms", ""), ("--shutdown-grace-ms", "-5"), ("--name-max-age", "soon"),
    ("--stale-if-error", "1e9"), ("--access-log", "yes"),
])
def test_bad_settings_exit_2_naming_the_setting(sayin, tmp_path, flag, value):
    store = tmp_path / "store"
    r = sayin.run(sayin.origin_bin, ["--data", str(store), "--listen",
                                     "127.0.0.1:%d" % free_port(), flag, value], timeout=10)
    assert r.returncode == 2, r
    assert flag in r.stderr, r.stderr
    assert not store.exists()


def test_access_log_flag_is_accepted(sayin, big_store):
    origin = start(sayin, big_store, "--access-log", "on", "--threads", 1)
    assert origin.get("/u/alice/feed.json").status == 200
    origin.stop()
    assert origin.proc.returncode == 0

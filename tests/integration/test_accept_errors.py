"""Running out of descriptors (issue 15, item 3): with a low RLIMIT_NOFILE,
accept() fails with EMFILE. Each program counts it
(sayin_*_accept_errors_total{reason="EMFILE"}), logs it at most once a
second, pauses accepting instead of spinning on the readable listener,
and accepts again once connections close."""

import os
import re
import socket
import subprocess
import time

import pytest

from helpers.api import start_api, author_add
from helpers.http import HttpConn
from helpers.procs import wait_for
from helpers.promtext import parse

LIMIT = 48


def scrape(port):
    with HttpConn(port) as c:
        c.request("GET", "/metrics")
        r = c.read_response()
    assert r.status == 200, r
    return parse(r.body.decode("utf-8"))


def cpu_seconds(pid):
    """utime + stime of pid, from /proc (the process cannot scrape itself
    while it has no descriptor left)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def healthy(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def accept_line_times(log):
    """The times (seconds) of the 'accept failed' log lines."""
    out = []
    for line in log.splitlines():
        if "http: accept failed: Too many open files" in line:
            m = re.match(r"^\d{4}-\d\d-\d\dT(\d\d):(\d\d):(\d\d\.\d+)Z", line)
            assert m, line
            out.append(int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)))
    return out


def overload(proc, port, family, log):
    before = scrape(port)
    assert before.get(family, reason="EMFILE") == 0
    open_fds = before.get("process_open_fds")
    subprocess.run(["prlimit", "--pid", str(proc.pid), "--nofile=%d:%d" % (LIMIT, LIMIT)],
                   check=True, timeout=10)
    # More connections than descriptors left: the last ones wait in the
    # listen backlog while accept() fails.
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5)
             for _ in range(int(LIMIT - open_fds) + 20)]
    try:
        time.sleep(0.3)
        cpu0 = cpu_seconds(proc.pid)
        time.sleep(1.5)
        used = cpu_seconds(proc.pid) - cpu0
        # A loop spinning on the readable listener burns the whole 1.5 s.
        assert used < 0.3, "%.2f s of CPU in 1.5 s of overload" % used
    finally:
        for s in socks:
            s.close()
    # The connections closed: it accepts again.
    assert wait_for(lambda: healthy(port), timeout=5), log()
    after = scrape(port)
    n = after.get(family, reason="EMFILE")
    assert n >= 2, after.text  # paused and retried, failing again
    # One try per pause (100 ms): not a spin.
    assert n <= 40, n
    assert after.get(family, reason="other") == 0
    times = accept_line_times(log())
    assert times, log()
    assert all(b - a >= 0.99 for a, b in zip(times, times[1:])), times
    assert len(times) <= 3, times


def test_origin_counts_logs_and_pauses_on_emfile(sayin, served):
    origin, _ = served
    origin.stop()
    origin = sayin.start_origin(origin.data, args=["--threads", "1"])
    overload(origin.proc, origin.port, "sayin_origin_accept_errors_total", origin.log)


def test_api_counts_logs_and_pauses_on_emfile(sayin, tmp_path):
    data = tmp_path / "store"
    author_add(sayin, data, "alice", args=("--public-url", "https://cdn.test"))
    api = start_api(sayin, data)
    overload(api.proc, api.port, "sayin_api_accept_errors_total", api.log)

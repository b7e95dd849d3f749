"""Resource metrics on both programs (issue 15, item 2): process_* as in
Prometheus' client conventions, the store's map and reader slots, the
outbox gauges present with no CDN target, the API's publish wait. Each is
made to move by causing what it measures."""

import socket
import subprocess
import time

import lmdb

from helpers.http import HttpConn
from helpers.procs import wait_for
from helpers.promtext import parse, promtool_check

PROCESS = [("process_cpu_seconds_total", "counter"), ("process_resident_memory_bytes", "gauge"),
           ("process_open_fds", "gauge"), ("process_max_fds", "gauge"),
           ("process_start_time_seconds", "gauge")]
STORE = [("sayin_store_map_used_bytes", "gauge"), ("sayin_store_map_size_bytes", "gauge"),
         ("sayin_store_readers_used", "gauge"), ("sayin_store_readers_max", "gauge")]


def scrape(port):
    with HttpConn(port) as c:
        c.request("GET", "/metrics")
        r = c.read_response()
    assert r.status == 200, r
    text = r.body.decode("utf-8")
    lint = promtool_check(text)
    assert not lint, lint  # None: promtool is not installed; "": clean
    return parse(text)


def check_families(m, accept_family):
    for name, typ in PROCESS + STORE:
        assert m.types.get(name) == typ, (name, m.types.get(name))
        m.get(name)
    for reason in ("EMFILE", "ENFILE", "other"):
        assert m.get(accept_family, reason=reason) == 0
    assert m.types[accept_family] == "counter"
    assert abs(m.get("process_start_time_seconds") - time.time()) < 120
    assert m.get("process_resident_memory_bytes") > 1 << 20
    assert 0 < m.get("sayin_store_map_used_bytes") <= m.get("sayin_store_map_size_bytes")
    assert m.get("sayin_store_readers_max") >= 126  # LMDB's default, ours is 4096


def cpu_load(port, seconds=0.5):
    """Keeps the server busy: many small requests for a while."""
    end = time.monotonic() + seconds
    with HttpConn(port) as c:
        while time.monotonic() < end:
            c.request("GET", "/metrics")
            assert c.read_response().status == 200


def moves_with_fds_readers_cpu_and_limit(proc, port, data):
    """open fds rise with connections held open, reader slots with a
    reader in another process, CPU time with load, max fds with prlimit."""
    before = scrape(port)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    try:
        m = None

        def enough():
            nonlocal m
            m = scrape(port)
            return m.get("process_open_fds") >= before.get("process_open_fds") + 20
        assert wait_for(enough, timeout=5), (before.get("process_open_fds"),
                                             m.get("process_open_fds"))
    finally:
        for s in socks:
            s.close()

    env = lmdb.open(str(data), max_dbs=16, map_size=64 << 30, subdir=True, readonly=True)
    try:
        base = scrape(port).get("sayin_store_readers_used")
        txn = env.begin()
        held = scrape(port).get("sayin_store_readers_used")
        txn.abort()
        # py-lmdb keeps a thread's slot for reuse until the env closes.
    finally:
        env.close()
    after = scrape(port).get("sayin_store_readers_used")
    assert held >= base + 1, (base, held)
    assert after <= held - 1, (held, after)

    cpu0 = scrape(port).get("process_cpu_seconds_total")
    cpu_load(port)
    assert scrape(port).get("process_cpu_seconds_total") > cpu0

    assert before.get("process_max_fds") != 777
    subprocess.run(["prlimit", "--pid", str(proc.pid), "--nofile=777:777"], check=True,
                   timeout=10)
    assert scrape(port).get("process_max_fds") == 777


def test_origin_process_and_store_metrics(served):
    origin, _ = served
    m = scrape(origin.port)
    check_families(m, "sayin_origin_accept_errors_total")
    moves_with_fds_readers_cpu_and_limit(origin.proc, origin.port, origin.data)


def test_api_process_store_outbox_and_publish_metrics(api_site, speech_clip):
    site = api_site(origin=False)
    api = site.api
    m = scrape(api.port)
    check_families(m, "sayin_api_accept_errors_total")
    # No CDN target configured: the outbox gauges are there, at zero.
    for name in ("sayin_outbox_depth", "sayin_outbox_parked", "sayin_outbox_oldest_seconds"):
        assert m.types.get(name) == "gauge", name
        assert m.get(name) == 0, name
    assert m.types.get("sayin_api_publish_seconds") == "histogram"
    assert m.get("sayin_api_publish_seconds_count") == 0

    t0 = time.monotonic()
    r = api.post_raw(site.tokens["alice"], speech_clip.read_bytes(), text="hi")
    waited = time.monotonic() - t0
    assert r.status == 201, r
    m2 = scrape(api.port)
    assert m2.get("sayin_api_publish_seconds_count") == 1
    assert 0 < m2.get("sayin_api_publish_seconds_sum") <= waited
    assert m2.get("sayin_api_publish_seconds_bucket", le="+Inf") == 1
    assert m2.get("sayin_store_map_used_bytes") >= m.get("sayin_store_map_used_bytes")

    moves_with_fds_readers_cpu_and_limit(api.proc, api.port, site.data)

"""Metrics from cron commands (issue 15, item 4): push, crosspost and
backup write their run to --metrics-textfile in node_exporter's textfile
format, replaced atomically (no temporary file left, also on failure); a
failed run keeps the last success time the old file held. Item 7: each
delivery job and each cross-post logs where its time went."""

import os
import re
import time

from helpers.api import author_add
from helpers.crossposting import counts_of
from helpers.delivery import driver_args, post, push
from helpers.promtext import parse, promtool_check


def read_textfile(path):
    text = path.read_text()
    lint = promtool_check(text)
    assert not lint, lint
    return parse(text)


def check_run(m, command, success, started, jobs=None):
    """The sayin_cron_* series of one run; returns the last success time."""
    now = time.time()
    assert m.types["sayin_cron_success"] == "gauge"
    assert m.get("sayin_cron_success", command=command) == success
    assert started - 1 <= m.get("sayin_cron_last_run_timestamp_seconds", command=command) <= now
    assert 0 <= m.get("sayin_cron_duration_seconds", command=command) <= now - started + 1
    last_ok = m.get("sayin_cron_last_success_timestamp_seconds", command=command)
    if success:
        assert started - 1 <= last_ok <= now
    if jobs is None:
        assert "sayin_cron_jobs" not in m.types
    else:
        got = {o: m.get("sayin_cron_jobs", command=command, outcome=o)
               for o in ("delivered", "failed", "parked")}
        assert got == jobs, got
    return last_ok


def test_push_writes_its_run_and_keeps_the_last_success(sayin, tmp_path, fakes, wav_factory):
    data = tmp_path / "store"
    prom_dir = tmp_path / "textfiles"
    prom_dir.mkdir()
    prom = prom_dir / "sayin_push.prom"
    fastly = fakes("fastly")
    args = driver_args("fastly", fastly) + ["--outbox-backoff-ms", "300",
                                             "--metrics-textfile", prom]
    post(sayin, data, wav_factory("a.wav", seed=1), args[:-2])

    # Fails with no file before: the last success is unknown (0).
    fastly.down(503)
    t0 = time.time()
    r = push(sayin, data, args, expect=1)
    assert check_run(read_textfile(prom), "push", 0, t0,
                     {"delivered": 0, "failed": 1, "parked": 0}) == 0
    assert re.search(r"delivery: job \S+ \(fastly\) failed in [\d.]+ ms \(network [\d.]+ ms "
                     r"over 3 requests, HTTP 503; driver [\d.]+ ms\), will retry", r.stderr), \
        r.stderr

    fastly.up()
    time.sleep(0.35)  # the backoff
    t0 = time.time()
    r = push(sayin, data, args)
    ok_at = check_run(read_textfile(prom), "push", 1, t0,
                      {"delivered": 1, "failed": 0, "parked": 0})
    lines = [l for l in r.stderr.splitlines() if "delivery: job" in l]
    # Fastly's three purges (feed, authors, post) run at once: the network
    # time counts the time any of them was in flight, within the job's.
    m = len(lines) == 1 and re.search(
        r"\(fastly\) delivered in ([\d.]+) ms \(network ([\d.]+) ms over 3 requests, HTTP 200; "
        r"driver ([\d.]+) ms\)$", lines[0])
    assert m, r.stderr
    total, network, driver = (float(g) for g in m.groups())
    assert 0 < network <= total and abs(total - network - driver) <= 0.2, lines[0]

    # Fails again, parking at once: the success time stays the old one.
    post(sayin, data, wav_factory("b.wav", seed=2), args[:-2])
    fastly.down(503)
    time.sleep(0.05)
    t0 = time.time()
    push(sayin, data, args + ["--outbox-max-attempts", "1"], expect=1)
    assert check_run(read_textfile(prom), "push", 0, t0,
                     {"delivered": 0, "failed": 0, "parked": 1}) == ok_at
    assert os.listdir(prom_dir) == ["sayin_push.prom"]

    # Cannot write it: push says so and fails; nothing is left behind.
    fastly.up()
    r = push(sayin, data, args[:-1] + [tmp_path / "missing" / "x.prom"], expect=1)
    assert "cannot write the metrics textfile" in r.stderr and "No such file" in r.stderr
    (prom_dir / "a_dir.prom").mkdir()
    r = push(sayin, data, args[:-1] + [prom_dir / "a_dir.prom"], expect=1)
    assert "cannot write the metrics textfile" in r.stderr, r.stderr
    assert sorted(os.listdir(prom_dir)) == ["a_dir.prom", "sayin_push.prom"]
    assert os.listdir(prom_dir / "a_dir.prom") == []


def test_crosspost_writes_its_run_and_logs_each_job(sayin, world):
    w = world(("ann",))
    prom = w.tmp / "sayin_crosspost.prom"
    w.post("ann", "first")
    t0 = time.time()
    r = w.crosspost(extra=["--metrics-textfile", prom])
    assert r.returncode == 0 and counts_of(r.stdout) == (2, 0, 0, 0), r.stdout + r.stderr
    ok_at = check_run(read_textfile(prom), "crosspost", 1, t0,
                      {"delivered": 2, "failed": 0, "parked": 0})
    lines = [l for l in r.stderr.splitlines() if "crosspost: job" in l]
    assert len(lines) == 2, r.stderr
    for line in lines:
        assert re.search(r"created in [\d.]+ ms \(network [\d.]+ ms over \d+ requests?, "
                         r"HTTP 20\d; driver [\d.]+ ms\)$", line), line

    w.post("ann", "second")
    w.x.inject("500")
    w.fb.inject("500")
    time.sleep(0.05)
    t0 = time.time()
    r = w.crosspost(backoff_ms=60000, extra=["--metrics-textfile", prom])
    assert r.returncode == 1 and counts_of(r.stdout) == (0, 0, 2, 0), r.stdout + r.stderr
    assert check_run(read_textfile(prom), "crosspost", 0, t0,
                     {"delivered": 0, "failed": 2, "parked": 0}) == ok_at
    lines = [l for l in r.stderr.splitlines() if "crosspost: job" in l]
    assert len(lines) == 2 and all(re.search(r"failed, will retry, in [\d.]+ ms \(network "
                                             r"[\d.]+ ms over \d+ requests?, HTTP 500;", l)
                                   for l in lines), r.stderr
    assert sorted(p.name for p in w.tmp.iterdir() if p.name.startswith("sayin_crosspost")) \
        == ["sayin_crosspost.prom"]


def test_backup_writes_its_run_with_the_snapshot_size(sayin, tmp_path):
    data = tmp_path / "store"
    author_add(sayin, data, "alice", args=("--public-url", "https://cdn.test"))
    prom = tmp_path / "sayin_backup.prom"
    dest = tmp_path / "snap.mdb"
    t0 = time.time()
    r = sayin.run(sayin.publisher, ["backup", "--data", str(data), "--metrics-textfile",
                                    str(prom), str(dest)])
    assert r.returncode == 0, r.stderr
    m = read_textfile(prom)
    ok_at = check_run(m, "backup", 1, t0)
    assert m.get("sayin_backup_bytes") == dest.stat().st_size > 0

    # A failed run (its destination's directory is missing) keeps the time.
    time.sleep(0.05)
    t0 = time.time()
    r = sayin.run(sayin.publisher, ["backup", "--data", str(data), "--metrics-file",
                                    str(prom), str(tmp_path / "nope" / "snap.mdb")])
    assert r.returncode == 1, r.stderr
    assert "--metrics-file is deprecated" in r.stderr
    m = read_textfile(prom)
    assert check_run(m, "backup", 0, t0) == ok_at
    assert m.get("sayin_backup_bytes") == 0
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]

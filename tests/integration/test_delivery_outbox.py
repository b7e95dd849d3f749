"""The delivery outbox, against the fake services of helpers/fakes_cdn.py:
stage order, retries with backoff and Retry-After, parking and retry,
rejected credentials, leases between concurrent pushes, kill -9
mid-flight, `serve` delivering on its own with /metrics, and large S3
objects.

Every fake is a standard-library HTTP server on a free loopback port,
stopped at teardown with every process the test started."""

import re
import signal
import time

import pytest

from helpers.api import author_add, start_api
from helpers.audio import write_noise_wav
from helpers.delivery import (
    assert_bucket_mirrors_origin, assert_sent, driver_args, outbox, path_of, popen_push, post,
    push, run, status)
from helpers.fakes_cdn import AWS_KEY_ID, BASE, SECRETS
from helpers.procs import TIME_SCALE, wait_for


# ---------------------------------------------------------------- the outbox


def test_stages_run_in_order_and_wait_for_the_one_before(sayin, tmp_path, fakes, short_wav):
    """s3 + fastly + prewarm: every S3 PUT answered before any purge starts,
    every purge before any prewarm GET; while S3 fails nothing later goes
    out."""
    data = tmp_path / "store"
    s3, fastly, edge = fakes("s3"), fakes("fastly"), fakes("edge")
    s3.delay(0.05)
    fastly.delay(0.05)
    args = (driver_args("s3", s3) + driver_args("fastly", fastly) + driver_args("prewarm", edge)
            + ["--outbox-backoff-ms", "50"])
    post(sayin, data, short_wav, args)
    assert [j["target"] for j in outbox(data)] == ["s3", "fastly", "prewarm"]

    s3.down(503, [("Content-Type", "application/xml")],
            b"<Error><Code>SlowDown</Code></Error>")
    r = push(sayin, data, args, expect=1)
    assert "delivered 0, failed 1" in r.stdout, r.stdout
    assert fastly.requests(ok_only=False) == [] and edge.requests(ok_only=False) == []
    assert "SlowDown" in status(sayin, data)

    s3.up()
    s3.clear()
    time.sleep(0.1)
    r = push(sayin, data, args)
    assert "delivered 3, failed 0" in r.stdout, r.stdout
    puts, purges, gets = s3.requests(), fastly.requests(), edge.requests()
    assert puts and purges and gets
    assert max(x.t1 for x in puts) <= min(x.t0 for x in purges), "a purge went before S3"
    assert max(x.t1 for x in purges) <= min(x.t0 for x in gets), "prewarm went before a purge"
    for f in (s3, fastly, edge):
        assert f.rejections() == []


def test_failing_target_recovers_every_job_once(sayin, tmp_path, fakes, wav_factory):
    """Fastly down, then rate-limiting with Retry-After, then back: every
    job is delivered exactly once in the end, backoff holds the jobs back,
    Retry-After is honoured, push exits 1 while something failed."""
    data = tmp_path / "store"
    fastly = fakes("fastly")
    # The failing process's policy sets the delay: long first (so that a
    # push right after finds nothing due), then short (so that only
    # Retry-After holds the jobs back).
    # Jitter draws the delay from [backoff/2, backoff): the first is long
    # enough for a push and a status even under the sanitizer (TIME_SCALE).
    backoff_ms = int(1500 * TIME_SCALE)
    args = driver_args("fastly", fastly, ["--outbox-backoff-ms", str(backoff_ms)])
    short = driver_args("fastly", fastly, ["--outbox-backoff-ms", "20"])
    for i in range(3):
        post(sayin, data, wav_factory("p%d.wav" % i, seed=i + 1), args)
    jobs = outbox(data)
    assert len(jobs) == 3

    fastly.down(503)
    r = push(sayin, data, args, expect=1)
    assert "delivered 0, failed 3" in r.stdout, r.stdout
    st = status(sayin, data)
    assert st.count("backoff") == 3 and "HTTP 503" in st, st
    # Backoff: nothing is due at once, so a push right away sends nothing.
    # Judged against the jobs' own next attempt times, not a guess of how
    # fast a process starts: a push that ended before the first was due
    # must have sent nothing.
    next_ms = [j["next_ms"] for j in outbox(data)]
    n = len(fastly.requests(ok_only=False))
    r = push(sayin, data, args, expect=None)
    if time.time() * 1000 < min(next_ms):
        assert r.returncode == 0 and "delivered 0, failed 0" in r.stdout, r.stdout
        assert len(fastly.requests(ok_only=False)) == n

    fastly.down(429, [("Retry-After", "2")], b'{"msg":"rate limited"}')
    next_ms = [j["next_ms"] for j in outbox(data)]  # that push may have tried again
    time.sleep(max(0.0, max(next_ms) / 1000 - time.time()))
    assert status(sayin, data).count("due") == 3
    r = push(sayin, data, short, expect=1)
    assert "delivered 0, failed 3" in r.stdout, r.stdout
    fastly.up()
    deadline = time.monotonic() + 8
    while outbox(data) and time.monotonic() < deadline:
        push(sayin, data, short, expect=None)
        time.sleep(0.1)
    assert outbox(data) == []
    # Per job (its post-ID key): the first success at least Retry-After
    # after its 429, and not far beyond.
    for j in jobs:
        key = "/post-" + j["payload"]["post"]
        mine = [x for x in fastly.requests(ok_only=False) if x.path.endswith(key)]
        t429 = max(x.t1 for x in mine if x.status == 429)
        ok = min(x.t0 for x in mine if x.status == 200)
        assert 1.9 <= ok - t429 < 4.0, "Retry-After: 2, retried after %.2f s" % (ok - t429)
    assert_sent("fastly", fastly, jobs)


def test_parked_after_max_attempts_then_retried(sayin, tmp_path, fakes, short_wav):
    data = tmp_path / "store"
    fastly, cf = fakes("fastly"), fakes("cloudflare")
    secret_args = driver_args("cloudfront", fakes("cloudfront"))  # secrets also given to status
    args = (driver_args("fastly", fastly) + driver_args("cloudflare", cf)
            + ["--outbox-max-attempts", "2", "--outbox-backoff-ms", "20"])
    post(sayin, data, short_wav, args)
    jobs = outbox(data)
    fastly.down(500, body=b'{"msg":"Internal Server Error"}')
    r = push(sayin, data, args, expect=1)
    for s in SECRETS[:2]:
        assert s not in r.stdout + r.stderr
    # One push keeps leasing what falls due while it runs, so a slow
    # machine may already have made the second attempt within it.
    if "parked 1" not in r.stdout:
        time.sleep(0.1)
        r = push(sayin, data, args, expect=1)
    assert "parked 1" in r.stdout, r.stdout
    st = run(sayin, "status", data, args + secret_args)
    assert st.returncode == 3, "a parked job is something to act on: exit 3"
    out = st.stdout
    fid = [j["id"] for j in jobs if j["target"] == "fastly"][0]
    line = [l for l in out.splitlines() if l.startswith(fid)][0]
    assert "PARKED" in line and "attempts 2" in line and "HTTP 500" in line, out
    assert "1 parked" in out, out
    for s in SECRETS + (AWS_KEY_ID,):
        assert s not in out + st.stderr, "status prints a secret"
    assert len(cf.requests()) == 1 and not cf.rejections()

    # Parked jobs are not delivered until retried.
    fastly.up()
    n = len(fastly.requests(ok_only=False))
    push(sayin, data, args)
    assert len(fastly.requests(ok_only=False)) == n
    r = run(sayin, "retry", data, ["0" * 20])
    assert r.returncode != 0 and "no job" in r.stderr
    r = run(sayin, "retry", data, [fid])
    assert r.returncode == 0 and "1 job made due again" in r.stdout, r.stdout
    assert "due" in status(sayin, data)
    fastly.clear()
    r = push(sayin, data, args)
    assert "delivered 1" in r.stdout
    assert outbox(data) == []
    assert_sent("fastly", fastly, [j for j in jobs if j["target"] == "fastly"])


REJECTING = [("fastly", ["--fastly-api-key", "wrong-key"], "HTTP 401"),
             ("cloudflare", ["--cloudflare-api-token", "wrong-token"], "Authentication error"),
             ("cloudfront", ["--aws-secret-access-key", "wrong/secret"], "SignatureDoesNotMatch"),
             ("s3", ["--aws-access-key-id", "AKIAWRONG"], "InvalidAccessKeyId")]


@pytest.mark.parametrize("kind,bad,error", REJECTING, ids=[k for k, _, _ in REJECTING])
def test_rejected_credentials_park_at_once(sayin, tmp_path, fakes, short_wav, kind, bad, error):
    data = tmp_path / "store"
    fake = fakes(kind)
    args = driver_args(kind, fake) + bad  # the later setting wins
    post(sayin, data, short_wav, args)
    r = push(sayin, data, args, expect=1)
    assert "parked 1" in r.stdout, r.stdout
    assert fake.rejections(), "the fake accepted a wrong credential"
    out = status(sayin, data)
    assert "PARKED" in out and "attempts 1" in out and error in out, out
    for s in SECRETS + ("wrong-key", "wrong-token", "wrong/secret"):
        assert s not in out
    # The right credential after a retry.
    fake.clear()
    run(sayin, "retry", data, ["--all"])
    push(sayin, data, driver_args(kind, fake))
    assert fake.requests() and not fake.rejections()


def test_two_pushes_at_once_never_deliver_a_job_twice(sayin, tmp_path, fakes, wav_factory):
    data = tmp_path / "store"
    fastly, cf = fakes("fastly"), fakes("cloudflare")
    fastly.delay(0.2)
    cf.delay(0.2)
    args = driver_args("fastly", fastly) + driver_args("cloudflare", cf)
    for i in range(3):
        post(sayin, data, wav_factory("p%d.wav" % i, seed=i + 1), args)
    jobs = outbox(data)
    assert len(jobs) == 6
    procs = [popen_push(sayin, data, args) for _ in range(3)]
    delivered = 0
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, (out, err)
        delivered += int(re.search(r"delivered (\d+)", out).group(1))
    assert delivered == 6
    assert outbox(data) == []
    assert_sent("fastly", fastly, [j for j in jobs if j["target"] == "fastly"])
    assert_sent("cloudflare", cf, [j for j in jobs if j["target"] == "cloudflare"])


def test_kill_9_mid_flight_loses_nothing(sayin, tmp_path, fakes, short_wav):
    data = tmp_path / "store"
    fastly = fakes("fastly")
    args = driver_args("fastly", fastly, ["--outbox-lease-ms", "1000"])
    post(sayin, data, short_wav, args)
    jobs = outbox(data)
    fastly.hang()
    p = popen_push(sayin, data, args)
    assert wait_for(lambda: fastly.requests(ok_only=False), timeout=10)
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    [job] = outbox(data)
    lease_until = job["lease_until_ms"] / 1000
    assert "leased" in status(sayin, data)
    fastly.release()
    fastly.clear()  # the killed push's request was recorded when it arrived
    r = push(sayin, data, args)
    # Judged by the job's own lease, not by how fast a process starts: a
    # push that ended while the lease held sent nothing; one that ran past
    # it may have delivered the job itself.
    if time.time() < lease_until:
        assert "delivered 0" in r.stdout and fastly.requests(ok_only=False) == []
    if "delivered 1" not in r.stdout:
        time.sleep(max(0.0, lease_until + 0.1 - time.time()))
        r = push(sayin, data, args)
    assert "delivered 1, failed 0" in r.stdout, r.stdout
    assert outbox(data) == []
    assert_sent("fastly", fastly, jobs)


def test_serve_delivers_on_its_own_with_metrics(sayin, tmp_path, fakes, short_wav):
    data = tmp_path / "store"
    edge, fastly = fakes("edge"), fakes("fastly")
    args = (driver_args("varnish", edge) + driver_args("fastly", fastly)
            + ["--outbox-backoff-ms", "100"])
    token = author_add(sayin, data, "alice", args=("--public-url", BASE))
    api = start_api(sayin, data, args=args, base=BASE)
    fastly.fail(1, 503)
    r = api.post_raw(token, short_wav.read_bytes())
    t_ack = time.monotonic()
    assert r.status == 201, r
    pid = r.json()["id"]

    def feed_purged():
        return [x for x in edge.requests() if x.path == "/u/alice/feed.json"]
    assert wait_for(feed_purged, timeout=3), edge.requests(ok_only=False)
    lag = feed_purged()[0].t0 - t_ack
    assert lag < 1.0, "the feed purge reached the edge %.2f s after the ack" % lag
    assert wait_for(lambda: any(x.path.endswith("/post-" + pid) for x in fastly.requests()),
                      timeout=5), fastly.requests(ok_only=False)

    def settled():
        m = api.metrics()
        return m if m.get("sayin_outbox_depth") == 0 else None
    m = wait_for(settled, timeout=5)
    assert m, api.metrics()
    assert m['sayin_outbox_jobs_total{target="varnish",result="ok"}'] == 1, m
    assert m['sayin_outbox_jobs_total{target="fastly",result="failed"}'] == 1, m
    assert m['sayin_outbox_jobs_total{target="fastly",result="ok"}'] == 1, m
    assert m['sayin_outbox_parked'] == 0
    assert outbox(data) == []
    for s in SECRETS:
        assert s not in api.log()


def test_s3_object_over_one_mebibyte(sayin, tmp_path, fakes):
    """An object over 1 MiB (libcurl then sends Expect: 100-continue) is
    signed and stored byte for byte."""
    data = tmp_path / "store"
    wav = tmp_path / "noise.wav"
    write_noise_wav(wav, 48000, 40)
    s3 = fakes("s3")
    args = driver_args("s3", s3)
    p = post(sayin, data, wav, args + ["--bitrate", "510000"])
    push(sayin, data, args)
    assert not s3.rejections(), s3.rejections()
    audio = s3.service.objects[path_of(p["audio_url"])][0]
    assert len(audio) > 1 << 20, len(audio)
    origin = sayin.start_origin(data)
    assert_bucket_mirrors_origin(s3.service.objects, origin)

"""Fairness between uploads on `sayin-publisher serve` (issue 13): a raw
socket client trickles bodies, and each limit cuts what it must while others
get in. The limits are set small so that each test takes a few seconds:

- upload-min-rate over upload-rate-window-ms after upload-rate-grace-ms: a
  trickled body is cut with 408, its file removed and its slot freed;
- upload-deadline-ms + Content-Length / upload-min-rate: a body that keeps
  the rate window by window but started late is cut with 408 all the same;
- upload-per-author: one author at the cap gets 429 with Retry-After, the
  other still gets in;
- upload-retry-slots: retries of a known Idempotency-Key past a full
  capacity are let in only up to the budget, before their bodies."""

import socket
import time

from helpers.api import error_code
from helpers.http import HttpConn
from helpers.procs import wait_for
from helpers.store import store_counts


def open_upload(api, token, length, idem=None, content_type="audio/wav"):
    """Sends a POST /v1/posts head with Expect: 100-continue. Returns
    (conn, response): response is the 100 Continue when the server let the
    body in, else its final answer."""
    c = HttpConn(api.port, timeout=10)
    hdrs = [("Authorization", "Bearer " + token), ("Content-Type", content_type),
            ("Content-Length", str(length)), ("Expect", "100-continue")]
    if idem is not None:
        hdrs.append(("Idempotency-Key", idem))
    c.request("POST", "/v1/posts", headers=hdrs)
    return c, c.read_response()


def trickle_until_answered(c, piece, interval, limit_s):
    """Sends piece every interval seconds until the server answers (or
    limit_s passes). Returns (response or None, bytes sent, seconds)."""
    t0 = time.monotonic()
    sent = 0
    while time.monotonic() - t0 < limit_s:
        c.sock.settimeout(interval)
        try:
            data = c.sock.recv(65536)
            if data:
                c.buf += data
                c.sock.settimeout(5)
                return c.read_response(), sent, time.monotonic() - t0
            c.eof = True
            break
        except socket.timeout:
            pass
        try:
            c.send(piece)
            sent += len(piece)
        except OSError:
            break
    c.sock.settimeout(5)
    try:
        return c.read_response(), sent, time.monotonic() - t0
    except Exception:
        return None, sent, time.monotonic() - t0


PACE = ("--upload-min-rate", "2000", "--upload-rate-window-ms", "400",
        "--upload-rate-grace-ms", "400")


def test_a_trickled_upload_is_cut_with_408_and_its_slot_goes_to_another_author(
        api_site, speech_clip):
    """workers 1 + queue 1, alice trickles two uploads (the issue's attack):
    bob first gets 503, then, once the rate check has cut both of alice's
    bodies with 408, bob's upload is created. No file is left."""
    site = api_site(args=("--workers", "1", "--queue", "1", "--upload-per-author", "2") + PACE,
                    origin=False)
    alice, bob = site.tokens["alice"], site.tokens["bob"]
    audio = speech_clip.read_bytes()
    slow = []
    for _ in range(2):
        c, r = open_upload(site.api, alice, 1 << 20)
        assert r.status == 100, r
        slow.append(c)
    c, r = open_upload(site.api, bob, len(audio))
    assert r.status == 503 and error_code(r) == "overloaded", r
    c.close()
    assert site.api.uploads(), "the trickled uploads have their files"
    # 50 bytes every 100 ms: 500 bytes/s against a minimum of 2000.
    for c in slow:
        c.send(b"RIFF")
    results = [trickle_until_answered(c, b"x" * 50, 0.1, 10) for c in slow]
    for r, sent, secs in results:
        assert r is not None, "the trickled upload was never answered (%d bytes, %.1f s)" % (
            sent, secs)
        assert r.status == 408 and error_code(r) == "too_slow", (r, r.body)
        assert "upload-min-rate" in r.json()["error"]["message"], r.body
        assert (r.header("Connection") or "").lower() == "close", r
        # Grace 0.4 s + one window 0.4 s, plus ticks: well under the 60 s idle timeout.
        assert secs < 4, secs
    for c in slow:
        c.close()
    assert wait_for(lambda: not site.api.uploads()), site.api.uploads()
    assert wait_for(lambda: site.api.metrics()["sayin_api_uploads_accepted"] == 0)
    r = site.api.post_raw(bob, audio)
    assert r.status == 201, (r, r.body)
    m = site.api.metrics()
    assert m['sayin_api_posts_total{result="too_slow"}'] == 2, m
    assert m['sayin_api_uploads_cut_total{limit="min_rate"}'] == 2, m
    assert m['sayin_api_posts_total{result="rejected"}'] == 0, m
    assert "cut with 408" in site.api.log()


def test_a_slow_but_fast_enough_upload_is_not_cut(api_site, speech_clip):
    """An upload that sends its recording in 2000-byte pieces every 100 ms
    (about 20000 bytes/s against a minimum of 8000) for several windows is
    created."""
    site = api_site(args=("--workers", "1", "--queue", "1", "--upload-min-rate", "8000",
                          "--upload-rate-window-ms", "400", "--upload-rate-grace-ms", "400"),
                    origin=False)
    audio = speech_clip.read_bytes()
    c, r = open_upload(site.api, site.tokens["alice"], len(audio))
    assert r.status == 100, r
    t0 = time.monotonic()
    for i in range(0, len(audio), 2000):
        c.send(audio[i:i + 2000])
        time.sleep(0.1)
    c.sock.settimeout(60)
    r = c.read_response()
    c.close()
    assert time.monotonic() - t0 > 1.2, "the upload was not slow enough to be checked"
    assert r.status == 201, (r, r.body)
    assert site.api.metrics()['sayin_api_posts_total{result="too_slow"}'] == 0


def test_an_upload_past_its_deadline_is_cut_with_408(api_site):
    """Grace 1.5 s, deadline 0.2 s + 1000 bytes at 2000 bytes/s = 0.7 s: a
    body that waits for the grace and then keeps the rate window by window
    is still cut at its deadline, long before it could finish."""
    site = api_site(args=("--upload-min-rate", "2000", "--upload-rate-window-ms", "300",
                          "--upload-rate-grace-ms", "1500", "--upload-deadline-ms", "200"),
                    origin=False)
    c, r = open_upload(site.api, site.tokens["alice"], 1000)
    assert r.status == 100, r
    r, sent, secs = trickle_until_answered(c, b"x" * 10, 0.1, 5)
    c.close()
    assert r is not None and r.status == 408 and error_code(r) == "too_slow", (r, sent)
    assert "upload-deadline-ms" in r.json()["error"]["message"], r.body
    assert 0.6 < secs < 1.5, secs
    m = site.api.metrics()
    assert m['sayin_api_uploads_cut_total{limit="deadline"}'] == 1, m
    assert m['sayin_api_uploads_cut_total{limit="min_rate"}'] == 0, m
    assert wait_for(lambda: not site.api.uploads()), site.api.uploads()


def test_one_author_at_the_cap_gets_429_while_another_gets_in(api_site, speech_clip):
    """workers 1 + queue 2, upload-per-author 1: alice's second upload is
    refused with 429 and Retry-After before its body; bob still gets in; once
    alice's first is answered she may upload again."""
    site = api_site(args=("--workers", "1", "--queue", "2", "--upload-per-author", "1"),
                    origin=False)
    alice, bob = site.tokens["alice"], site.tokens["bob"]
    audio = speech_clip.read_bytes()
    first, r = open_upload(site.api, alice, len(audio))
    assert r.status == 100, r
    before = store_counts(site.data)
    c, r = open_upload(site.api, alice, len(audio))
    c.close()
    assert r.status == 429 and error_code(r) == "too_many_uploads", (r, r.body)
    assert int(r.header("Retry-After")) > 0, r
    assert store_counts(site.data) == before
    c, r = open_upload(site.api, bob, len(audio))
    assert r.status == 100, r
    c.send(audio)
    c.sock.settimeout(60)
    assert c.read_response().status == 201
    c.close()
    first.send(audio)
    first.sock.settimeout(60)
    assert first.read_response().status == 201
    first.close()
    r = site.api.post_raw(alice, audio, text="again")
    assert r.status == 201, (r, r.body)
    m = site.api.metrics()
    assert m['sayin_api_posts_total{result="throttled"}'] == 1, m
    assert m['sayin_api_posts_total{result="overloaded"}'] == 0, m
    assert m['sayin_api_posts_total{result="created"}'] == 3, m


def test_by_default_one_author_holds_at_most_half_the_slots(api_site, speech_clip):
    """The issue's setting, workers 1 + queue 1, with upload-per-author left
    to its default (half of 2): alice's second upload gets 429 at once and
    bob's gets in beside her first."""
    site = api_site(args=("--workers", "1", "--queue", "1"), origin=False)
    alice, bob = site.tokens["alice"], site.tokens["bob"]
    audio = speech_clip.read_bytes()
    first, r = open_upload(site.api, alice, len(audio))
    assert r.status == 100, r
    c, r = open_upload(site.api, alice, len(audio))
    c.close()
    assert r.status == 429 and error_code(r) == "too_many_uploads", (r, r.body)
    c, r = open_upload(site.api, bob, len(audio))
    assert r.status == 100, r
    for conn in (c, first):
        conn.send(audio)
        conn.sock.settimeout(60)
        assert conn.read_response().status == 201
        conn.close()


def test_idempotent_retries_past_a_full_capacity_are_bounded(api_site, speech_clip):
    """workers 1 + queue 1 held by bob, upload-retry-slots 1: of ten retries
    of alice's recorded key, one is let in before its body and nine get 503
    at once (before, all ten were let in, each able to stream the whole
    limit to disk). The one let in is still replayed."""
    site = api_site(args=("--workers", "1", "--queue", "1", "--upload-retry-slots", "1",
                          "--upload-per-author", "2"), origin=False)
    alice, bob = site.tokens["alice"], site.tokens["bob"]
    audio = speech_clip.read_bytes()
    first = site.api.post_raw(alice, audio, headers={"Idempotency-Key": "k-1"})
    assert first.status == 201, first
    holders = []
    for _ in range(2):
        c, r = open_upload(site.api, bob, len(audio))
        assert r.status == 100, r
        holders.append(c)
    answers = [open_upload(site.api, alice, len(audio), idem="k-1") for _ in range(10)]
    statuses = sorted(r.status for _, r in answers)
    assert statuses == [100] + [503] * 9, statuses
    assert all(error_code(r) == "overloaded" for _, r in answers if r.status == 503)
    assert site.api.metrics()["sayin_api_upload_retries_accepted"] == 1
    for c, r in answers:
        if r.status == 100:
            c.send(audio)
            c.sock.settimeout(30)
            replay = c.read_response()
        c.close()
    assert replay.status == 201 and replay.header("Idempotent-Replayed") == "true", replay
    assert replay.json()["id"] == first.json()["id"]
    for c in holders:
        c.send(audio)
        c.sock.settimeout(60)
        assert c.read_response().status == 201
        c.close()
    assert wait_for(lambda: site.api.metrics()["sayin_api_upload_retries_accepted"] == 0)
    assert wait_for(lambda: not site.api.uploads())


def test_upload_limits_are_checked_at_start(sayin, tmp_path):
    """A bad value of each new setting stops serve with exit 2 naming it."""
    for flag, value in (("--upload-per-author", "0"), ("--upload-min-rate", "0"),
                        ("--upload-rate-window-ms", "x"), ("--upload-deadline-ms", "-1")):
        r = sayin.run(sayin.publisher, ["serve", "--data", str(tmp_path / "s"),
                                        "--api-listen", "127.0.0.1:0", flag, value], timeout=20)
        assert r.returncode == 2, (flag, r.returncode, r.stderr)
        assert flag.lstrip("-") in r.stderr, r.stderr

"""Bad recordings exit 3 with one line naming the problem and store
nothing; usage errors exit 2 and touch nothing."""

import os
import random
import re
import subprocess

import pytest

from helpers.audio import (
    chunk, encode_samples, make_signal, wav_bytes, write_wav, write_wav_module)
from helpers.procs import EXIT_BAD_INPUT, EXIT_USAGE, tool_available
from helpers.store import mdb_keys, store_counts, store_files

NOT_WAV = r"not a|riff|wave?\b|format|mp3|empty|looks like|recogni"
TRUNCATED = r"truncat|ends|remain|short|incomplete|claims"
UNSUPPORTED = r"not supported|unsupported|8-bit|a-law|alaw|mu-law|µ-law|encoding"
NO_SAMPLES = r"no samples|no audio|empty|zero|0 samples"


def _random(p):
    rnd = random.Random(11)
    data = bytes(rnd.getrandbits(8) for _ in range(4096))
    assert data[:4] != b"RIFF"
    p.write_bytes(data)


def _text(p):
    p.write_text("this is not audio, just text\n" * 20)


def _empty(p):
    p.write_bytes(b"")


def _ffmpeg(args):
    def build(p):
        if not tool_available("ffmpeg"):
            pytest.fail("ffmpeg is not installed")
        r = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                            "-i", "sine=frequency=440:duration=1"] + args + [str(p)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    return build


def _riff_avi(p):
    body = b"AVI " + chunk(b"LIST", b"hdrl" + b"\0" * 64)
    p.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)


def _valid_wav_bytes():
    data = encode_samples(make_signal(16000, 1, 8000), "s16")
    return wav_bytes(16000, 1, "s16", data)


def _truncated_half(p):
    b = _valid_wav_bytes()
    p.write_bytes(b[:len(b) // 2])


def _truncated_header(p):
    p.write_bytes(_valid_wav_bytes()[:30])  # inside the fmt chunk


def _pcm8(p):
    write_wav_module(p, 16000, 1, seconds=0.3, sampwidth=1)


def _mulaw(p):
    data = bytes(range(256)) * 20
    p.write_bytes(wav_bytes(8000, 1, "u8", data, format_tag=0x0007, bits=8))


def _extensible_non_pcm(p):
    data = encode_samples(make_signal(16000, 1, 4000), "s16")
    p.write_bytes(wav_bytes(16000, 1, "s16", data, extensible=True, format_tag=0x0055))


def _no_samples(p):
    p.write_bytes(wav_bytes(16000, 1, "s16", b""))


def _no_fmt(p):
    body = b"WAVE" + chunk(b"data", b"\0\0" * 1000)
    p.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)


def _rate_4000(p):
    write_wav_module(p, 4000, 1, seconds=0.5)


def _nine_channels(p):
    write_wav(p, 16000, 9, "s16", frames=1600)


def _directory(p):
    p.mkdir()


def _unreadable(p):
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    write_wav_module(p, 16000, 1, seconds=0.3)
    p.chmod(0)


def _missing(p):
    pass  # the path does not exist


BAD_FILES = {
    "random-bytes": (_random, NOT_WAV),
    "text-file": (_text, NOT_WAV),
    "empty-file": (_empty, NOT_WAV),
    "riff-avi": (_riff_avi, r"wave|avi|not a"),
    "truncated-half": (_truncated_half, TRUNCATED),
    "truncated-in-header": (_truncated_header, TRUNCATED + r"|fmt"),
    "pcm-8bit": (_pcm8, UNSUPPORTED),
    "alaw": (_ffmpeg(["-c:a", "pcm_alaw", "-f", "wav"]), UNSUPPORTED),
    "mulaw": (_mulaw, UNSUPPORTED),
    "extensible-non-pcm-subformat": (_extensible_non_pcm, UNSUPPORTED),
    "no-samples": (_no_samples, NO_SAMPLES),
    "no-fmt-chunk": (_no_fmt, r"fmt|format"),
    "rate-4000": (_rate_4000, r"rate|hz"),
    "nine-channels": (_nine_channels, r"channel"),
    "directory": (_directory, r"directory|not a (regular )?file|cannot read"),
    "nonexistent": (_missing, r"no such file|not found|does not exist|cannot open"),
    "unreadable-chmod-000": (_unreadable, r"permission"),
}


def check_rejected(res, path, pattern):
    assert res.returncode == EXIT_BAD_INPUT, "expected exit 3:\n" + res.describe()
    assert res.stdout == "", "a rejected post printed on stdout:\n" + res.describe()
    lines = res.stderr_lines
    assert len(lines) == 1, "expected ONE line on stderr, got %d:\n%s" % (len(lines), res.stderr)
    problem = lines[0].replace(str(path), "<FILE>")
    assert re.search(pattern, problem, re.I), (
        "stderr does not name the problem (/%s/): %r" % (pattern, lines[0]))


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_rejected_and_stores_nothing(sayin, store, tmp_path, short_wav, case,
                                                 lmdb_tools):
    build, pattern = BAD_FILES[case]
    # A store with one good post by someone else.
    good = sayin.post(store, "other", short_wav, text="good").json
    counts = store_counts(store)
    keys = mdb_keys(store, "objects")
    names = mdb_keys(store, "names")
    files = store_files(store)

    bad = tmp_path / ("input-%s.bin" % case)
    build(bad)
    res = sayin.post(store, "victim", bad, text="must not appear", check=False)
    check_rejected(res, bad, pattern)

    assert store_counts(store) == counts, "the store changed"
    assert mdb_keys(store, "objects") == keys, "objects changed"
    assert mdb_keys(store, "names") == names, "names changed"
    assert store_files(store) == files, "files left in the store directory"
    origin = sayin.start_origin(store)
    assert origin.get("/u/victim/feed.json").status == 404
    feed = origin.get("/u/other/feed.json")
    assert feed.status == 200 and [i["id"] for i in feed.json()["items"]] == [good["id"]]


@pytest.mark.parametrize("case", ["random-bytes", "truncated-half", "no-samples", "nonexistent"])
def test_bad_file_into_a_new_store_stores_nothing(sayin, store, tmp_path, case, lmdb_tools):
    build, pattern = BAD_FILES[case]
    bad = tmp_path / ("input-%s.bin" % case)
    build(bad)
    res = sayin.post(store, "victim", bad, check=False)
    check_rejected(res, bad, pattern)
    if store.exists() and (store / "data.mdb").exists():
        c = store_counts(store)
        assert c["posts"] == 0 and c["objects"] == 0 and c["names"] == 0, c


USAGE_ERRORS = {
    "missing-author": lambda wav: ["--text", "x", str(wav)],
    "bad-handle": lambda wav: ["--author", "Bad-Handle", str(wav)],
    "handle-uppercase": lambda wav: ["--author", "Alice", str(wav)],
    "handle-33-chars": lambda wav: ["--author", "a" * 33, str(wav)],
    "handle-empty": lambda wav: ["--author", "", str(wav)],
    "handle-slash": lambda wav: ["--author", "a/b", str(wav)],
    "handle-non-ascii": lambda wav: ["--author", "jos\u00e9", str(wav)],
    "no-file": lambda wav: ["--author", "alice"],
    "two-files": lambda wav: ["--author", "alice", str(wav), str(wav)],
    "unknown-option": lambda wav: ["--author", "alice", "--loud", str(wav)],
    "option-without-value": lambda wav: [str(wav), "--author"],
    "bitrate-not-a-number": lambda wav: ["--author", "alice", "--bitrate", "fast", str(wav)],
    "bitrate-out-of-range": lambda wav: ["--author", "alice", "--bitrate", "1000", str(wav)],
    "feed-items-zero": lambda wav: ["--author", "alice", "--feed-items", "0", str(wav)],
    "bad-log-level": lambda wav: ["--author", "alice", "--log-level", "loud", str(wav)],
    "bad-map-size": lambda wav: ["--author", "alice", "--map-size", "lots", str(wav)],
    "text-c0-control": lambda wav: ["--author", "alice", "--text", "a\x07b", str(wav)],
    "text-c1-control": lambda wav: ["--author", "alice", "--text", "a\u0085b", str(wav)],
}


@pytest.mark.parametrize("case", sorted(USAGE_ERRORS))
def test_usage_error_exits_2_and_touches_nothing(sayin, store, short_wav, case):
    args = ["post", "--data", str(store), "--create-author"] + USAGE_ERRORS[case](short_wav)
    r = sayin.run(sayin.publisher, args)
    assert r.returncode == EXIT_USAGE, "expected exit 2, got %d: %s" % (r.returncode, r.stderr)
    assert r.stdout == ""
    assert r.stderr.strip() != "", "no message on stderr"
    assert not store.exists(), "a usage error created the store"


def test_unknown_command_and_no_command_exit_2(sayin):
    r = sayin.run(sayin.publisher, ["frobnicate"])
    assert r.returncode == EXIT_USAGE and r.stderr.strip()
    r = sayin.run(sayin.publisher, [])
    assert r.returncode == EXIT_USAGE and r.stderr.strip()

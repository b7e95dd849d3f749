"""Every format a phone, browser or studio records publishes as Ogg Opus at
-16 LUFS under -1 dBTP (measured independently by ffmpeg's ebur128 filter);
broken, silent, oversized and hostile inputs are refused with exit 3, one
line naming the cause, nothing stored; a decoder crash costs only itself."""

import re
import subprocess
import time

import pytest

from helpers.audio import ebur128, opus_samples
from helpers.procs import EXIT_BAD_INPUT
from helpers.store import store_counts

TARGET = -16.0


def ffmpeg(*args, timeout=120):
    r = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y"] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return r


def has_encoder(name):
    r = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True,
                       timeout=60)
    return re.search(r"^\s*\S+\s+%s\s" % re.escape(name), r.stdout, re.M) is not None


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """About five seconds of espeak-ng speech, 22.05 kHz mono."""
    d = tmp_path_factory.mktemp("speech")
    p = d / "speech.wav"
    r = subprocess.run(["espeak-ng", "-w", str(p), "Hello fans, this is my voice post. Thank "
                        "you for listening, and see you all next week."],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return p


# name -> (ffmpeg output arguments, file suffix); fixtures are made at test time.
FORMATS = {
    "wav-float": (["-c:a", "pcm_f32le", "-ac", "2", "-ar", "44100"], "wav"),
    "flac": (["-c:a", "flac"], "flac"),
    "mp3": (["-c:a", "libmp3lame", "-b:a", "64k"], "mp3"),
    # No Xing/Info header: nothing in the file says how long it is.
    "mp3-no-xing": (["-c:a", "libmp3lame", "-b:a", "64k", "-write_xing", "0"], "mp3"),
    "ogg-vorbis": (["-c:a", "libvorbis"], "ogg"),
    "ogg-opus": (["-c:a", "libopus", "-b:a", "48k"], "opus"),
    "m4a-aac": (["-c:a", "aac", "-b:a", "64k"], "m4a"),
    # moov first: a cut leaves the index whole and the samples short.
    "m4a-faststart": (["-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart"], "m4a"),
    "webm-opus": (["-c:a", "libopus"], "webm"),
    # As a browser's MediaRecorder writes it: no duration, no cues.
    "webm-live": (["-c:a", "libopus", "-f", "webm", "-live", "1"], "webm"),
    "caf": (["-c:a", "pcm_s16le"], "caf"),
    "aiff": (["-c:a", "pcm_s16be", "-ac", "2"], "aiff"),
    "amr-nb": (["-c:a", "libopencore_amrnb", "-ar", "8000", "-ac", "1"], "amr"),
}


def make_format(speech, tmp_path, name):
    args, suffix = FORMATS[name]
    if name == "amr-nb" and not has_encoder("libopencore_amrnb"):
        pytest.skip("this ffmpeg has no AMR-NB encoder (the decoder is still whitelisted)")
    out = tmp_path / ("speech-%s.%s" % (name, suffix))
    ffmpeg("-i", speech, *args, out)
    return out


def check_published(sayin, store, tmp_path, res, expect_seconds):
    origin = sayin.start_origin(store)
    r = origin.get_url(res.json["audio_url"])
    assert r.status == 200
    opus = tmp_path / "out.opus"
    opus.write_bytes(r.body)
    info = subprocess.run(["opusinfo", str(opus)], capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and "WARNING" not in info.stdout, info.stdout + info.stderr
    n = opus_samples(opus)
    assert abs(n - expect_seconds * 48000) <= 960, "decoded %d samples, input %.3f s" % (
        n, expect_seconds)
    lufs, peak = ebur128(opus)
    assert abs(lufs - TARGET) <= 1.0, "integrated loudness %.1f LUFS" % lufs
    assert peak <= -1.0, "true peak %.1f dBTP" % peak
    # The waveform: audiowaveform JSON v2, 1000 pairs over the n samples.
    w = origin.get_url(res.json["waveform_url"])
    assert w.status == 200 and w.header("content-type") == "application/json"
    doc = w.json()
    assert {k: doc.get(k) for k in ("version", "channels", "sample_rate", "bits", "length")} \
        == {"version": 2, "channels": 1, "sample_rate": 48000, "bits": 8, "length": 1000}, doc
    assert doc["samples_per_pixel"] == -(-n // 1000)
    assert len(doc["data"]) == 2 * doc["length"]
    rec = origin.get_url(res.json["feed_url"]).json()
    return rec


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_format_publishes_normalized(sayin, store, tmp_path, speech, name, opus_tools):
    src = make_format(speech, tmp_path, name)
    res = sayin.post(store, "alice", src, text=name)
    dur = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                                "-of", "csv=p=0", str(speech)], capture_output=True, text=True,
                               timeout=60).stdout)
    assert abs(res.json["duration_in_seconds"] - dur) < 0.1, res.json
    check_published(sayin, store, tmp_path, res, res.json["duration_in_seconds"])


@pytest.mark.parametrize("container", ["mp4", "webm"])
def test_video_publishes_its_audio_track(sayin, store, tmp_path, speech, opus_tools, container):
    # In the WebM the video runs a little past the audio: the file's duration
    # (all tracks) is not the audio's, and must not read as a cut.
    video = tmp_path / ("clip." + container)
    codecs = ["-c:v", "mpeg4", "-c:a", "aac"] if container == "mp4" else \
        ["-c:v", "libvpx", "-c:a", "libopus"]
    ffmpeg("-f", "lavfi", "-i", "color=black:s=64x64:r=10", "-i", speech, "-shortest",
           *codecs, video)
    res = sayin.post(store, "alice", video)
    check_published(sayin, store, tmp_path, res, res.json["duration_in_seconds"])


def test_post_record_has_loudness(sayin, store, tmp_path, speech, lmdb_tools):
    src = make_format(speech, tmp_path, "flac")
    sayin.post(store, "alice", src)
    out = subprocess.run(["mdb_dump", "-p", "-s", "posts", str(store)], capture_output=True,
                         text=True, timeout=60).stdout
    m = re.search(r'"loudness":\{"input_lufs":(-?[\d.]+),"gain_db":(-?[\d.]+),'
                  r'"true_peak_dbtp":(-?[\d.]+),"output_lufs":(-?[\d.]+)\}', out)
    assert m, out[-2000:]
    lufs, gain, tp, out_lufs = map(float, m.groups())
    assert -40 < lufs < -10 and gain > 0 and tp <= -1.0, m.groups()
    # The published loudness (what the feed's _sayin.loudness_lufs says).
    assert abs(out_lufs - TARGET) <= 1.0, m.groups()


# ---------------------------------------------------------------- rejections


def _truncate(name, keep):
    def build(speech, tmp_path):
        src = make_format(speech, tmp_path, name)
        data = src.read_bytes()
        src.write_bytes(data[:int(len(data) * keep)])
        return src
    return build


def _corrupt(name):
    def build(speech, tmp_path):
        src = make_format(speech, tmp_path, name)
        data = bytearray(src.read_bytes())
        for i in range(len(data) // 3, len(data) // 3 + 2000, 7):
            data[i] ^= 0x5A
        src.write_bytes(bytes(data))
        return src
    return build


def _text(speech, tmp_path):
    p = tmp_path / "notes.mp3"  # the name lies; the bytes decide
    p.write_text("dear fans, this is only text\n" * 50)
    return p


def _empty(speech, tmp_path):
    p = tmp_path / "empty.m4a"
    p.write_bytes(b"")
    return p


def _video_without_audio(speech, tmp_path):
    p = tmp_path / "silent-film.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=black:s=64x64:r=10:d=2", "-c:v", "mpeg4", p)
    return p


def _silent(speech, tmp_path):
    p = tmp_path / "silence.flac"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono", "-t", "3", "-c:a", "flac", p)
    return p


def _ogg_pages(data):
    """End offsets of the Ogg pages in data (which must be whole pages)."""
    ends, off = [], 0
    while off < len(data):
        assert data[off:off + 4] == b"OggS", off
        nseg = data[off + 26]
        off += 27 + nseg + sum(data[off + 27:off + 27 + nseg])
        ends.append(off)
    assert off == len(data)
    return ends


def _cut_at_page(name):
    """Cut between two Ogg pages: every page whole, the end-of-stream page gone."""
    def build(speech, tmp_path):
        src = make_format(speech, tmp_path, name)
        data = src.read_bytes()
        ends = _ogg_pages(data)
        assert len(ends) >= 4, ends
        src.write_bytes(data[:ends[len(ends) // 2]])
        return src
    return build


def _corrupt_header(name, start, end):
    """PCM formats carry no checksum: damaged samples are just other samples,
    so what can be refused is a damaged header (bytes start..end)."""
    def build(speech, tmp_path):
        src = make_format(speech, tmp_path, name)
        data = bytearray(src.read_bytes())
        for i in range(start, end):
            data[i] ^= 0x5A
        src.write_bytes(bytes(data))
        return src
    return build


TRUNCATED = r"truncat"
CORRUPT = r"corrupt"
REJECTIONS = {
    # Cut in half: every format. The message names the cut where the
    # container lets us see one (see publisher/media/README.md).
    "wav-truncated": (_truncate("wav-float", 0.5), r"claims \d+ bytes but only \d+ remain"),
    "flac-truncated": (_truncate("flac", 0.5), r"corrupt|truncat"),
    "mp3-truncated": (_truncate("mp3", 0.5), TRUNCATED),
    "mp3-no-xing-truncated": (_truncate("mp3-no-xing", 0.5), TRUNCATED + r".*inside a frame"),
    "ogg-vorbis-truncated": (_truncate("ogg-vorbis", 0.5), TRUNCATED + r".*inside a page"),
    "ogg-opus-truncated": (_truncate("ogg-opus", 0.5), TRUNCATED + r".*inside a page"),
    "ogg-vorbis-cut-at-page": (_cut_at_page("ogg-vorbis"), TRUNCATED + r".*end-of-stream"),
    "ogg-opus-cut-at-page": (_cut_at_page("ogg-opus"), TRUNCATED + r".*end-of-stream"),
    "m4a-truncated": (_truncate("m4a-aac", 0.6), r"corrupt|truncat"),
    "m4a-faststart-truncated": (_truncate("m4a-faststart", 0.6), r"corrupt|truncat"),
    "webm-truncated": (_truncate("webm-opus", 0.5), TRUNCATED),
    "webm-live-truncated": (_truncate("webm-live", 0.5), TRUNCATED + r".*inside an element"),
    "caf-truncated": (_truncate("caf", 0.97), TRUNCATED + r".*data chunk"),
    "aiff-truncated": (_truncate("aiff", 0.5), TRUNCATED + r".*SSND chunk"),
    # Damaged in the middle: every compressed format (checksums, bitstream
    # syntax, container structure).
    "flac-corrupted": (_corrupt("flac"), CORRUPT),
    "mp3-corrupted": (_corrupt("mp3"), CORRUPT),
    "ogg-vorbis-corrupted": (_corrupt("ogg-vorbis"), CORRUPT),
    "ogg-opus-corrupted": (_corrupt("ogg-opus"), CORRUPT),
    "m4a-corrupted": (_corrupt("m4a-aac"), CORRUPT),
    "webm-corrupted": (_corrupt("webm-opus"), CORRUPT),
    # Damaged headers of the PCM formats (fmt, COMM, desc chunks).
    "wav-header-corrupted": (_corrupt_header("wav-float", 20, 36), r"not supported"),
    "aiff-header-corrupted": (_corrupt_header("aiff", 20, 38), CORRUPT),
    "caf-header-corrupted": (_corrupt_header("caf", 20, 44), r"unsupported format"),
    "text-renamed-mp3": (_text, r"unsupported format|not a recording"),
    "empty-file": (_empty, r"empty"),
    "video-without-audio": (_video_without_audio, r"no audio"),
    "silent-flac": (_silent, r"silent"),
}


def check_rejected(sayin, store, res, pattern, before):
    assert res.returncode == EXIT_BAD_INPUT, res.describe()
    assert res.stdout == ""
    lines = res.stderr_lines
    assert len(lines) == 1, res.stderr
    assert re.search(pattern, lines[0], re.I), lines[0]
    assert store_counts(store) == before, "the store changed"


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_bad_input_is_refused(sayin, store, tmp_path, speech, case, short_wav, lmdb_tools):
    build, pattern = REJECTIONS[case]
    sayin.post(store, "other", short_wav)
    before = store_counts(store)
    bad = build(speech, tmp_path)
    t0 = time.monotonic()
    res = sayin.post(store, "victim", bad, check=False)
    # Quickly: the file is refused by its structure or its first bad bytes,
    # not by a timeout (the decoder's is 60 s).
    assert time.monotonic() - t0 < 10, "took %.1f s" % (time.monotonic() - t0)
    check_rejected(sayin, store, res, pattern, before)


def test_over_max_duration_is_too_long(sayin, store, tmp_path, speech, short_wav, lmdb_tools):
    sayin.post(store, "other", short_wav)
    before = store_counts(store)
    src = make_format(speech, tmp_path, "ogg-vorbis")
    res = sayin.post(store, "victim", src, args=["--max-duration", "2"], check=False)
    check_rejected(sayin, store, res, r"too long", before)


def test_over_max_input_bytes_is_too_large(sayin, store, tmp_path, speech, short_wav, lmdb_tools):
    sayin.post(store, "other", short_wav)
    before = store_counts(store)
    src = make_format(speech, tmp_path, "flac")
    res = sayin.post(store, "victim", src, args=["--max-input-bytes", "10K"], check=False)
    check_rejected(sayin, store, res, r"too large", before)


def test_flac_bomb_stops_quickly(sayin, store, tmp_path, short_wav, lmdb_tools):
    """Ten hours of silence in a tiny FLAC: refused as too long, fast."""
    bomb = tmp_path / "bomb.flac"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "36000", "-c:a", "flac", bomb,
           timeout=300)
    assert bomb.stat().st_size < 10 << 20
    sayin.post(store, "other", short_wav)
    before = store_counts(store)
    t0 = time.monotonic()
    res = sayin.post(store, "victim", bomb, check=False)
    assert time.monotonic() - t0 < 5, "took %.1f s" % (time.monotonic() - t0)
    check_rejected(sayin, store, res, r"too long", before)
    # A header that lies (no total length) is caught on the samples themselves.
    data = bytearray(bomb.read_bytes())
    assert data[:4] == b"fLaC"
    data[21] &= 0xF0
    data[22:26] = b"\0\0\0\0"  # STREAMINFO total samples: unknown
    bomb.write_bytes(bytes(data))
    t0 = time.monotonic()
    res = sayin.post(store, "victim", bomb, args=["--max-duration", "60"], check=False)
    assert time.monotonic() - t0 < 5, "took %.1f s" % (time.monotonic() - t0)
    check_rejected(sayin, store, res, r"too long", before)


def test_decoder_crash_and_hang_then_next_post_works(sayin, store, tmp_path, short_wav,
                                                     lmdb_tools):
    sayin.post(store, "other", short_wav)
    before = store_counts(store)
    res = sayin.post(store, "victim", short_wav, check=False,
                     env={"SAYIN_TEST_DECODER_CRASH": "segv"})
    check_rejected(sayin, store, res, r"decoder crashed \(signal 11", before)
    t0 = time.monotonic()
    res = sayin.post(store, "victim", short_wav, check=False,
                     args=["--decode-timeout-ms", "500"],
                     env={"SAYIN_TEST_DECODER_CRASH": "hang"})
    assert time.monotonic() - t0 < 5
    check_rejected(sayin, store, res, r"decoder timed out", before)
    res = sayin.post(store, "victim", short_wav)
    assert res.returncode == 0


def test_decoder_memory_limit_is_a_clear_error(sayin, store, tmp_path, speech, short_wav,
                                               lmdb_tools):
    """A decoder that runs out of its address space fails alone."""
    r = subprocess.run(["nm", "-D", sayin.publisher], capture_output=True, text=True)
    if "__asan_init" in r.stdout:
        pytest.skip("RLIMIT_AS is not applied under AddressSanitizer")
    sayin.post(store, "other", short_wav)
    before = store_counts(store)
    src = make_format(speech, tmp_path, "m4a-aac")
    res = sayin.post(store, "victim", src, args=["--decode-memory", "16M"], check=False)
    check_rejected(sayin, store, res, r"decoder|memory", before)
    assert sayin.post(store, "victim", src).returncode == 0

"""Publishing: every WAV variant becomes a valid, exactly trimmed Ogg Opus
stream (checked with opusinfo, ffprobe, opusdec and our own Ogg parser),
the command's JSON output, post ids, and content addressing."""

import math
import re
import subprocess
import time

import pytest

from helpers.audio import (
    OpusHead, OpusTags, burst_signal, ogg_packets, ogg_pages, opus_packet_samples, read_wav_info,
    read_wav_s16_mono, write_noise_wav, write_wav, write_wav_module)
from helpers.store import CROCKFORD, POST_ID_RE, mdb_keys, sha256_hex, store_counts

AUTHOR = "alice"


# Each variant writes a WAV and returns (rate, channels, frames). Frame
# counts are odd on purpose: frames * 48000 / rate is then rarely a whole
# number, which exercises the rounding of the end trim.
def _wave_module(rate, channels):
    def build(path):
        frames = int(rate * 0.5) + 7
        write_wav_module(path, rate, channels, frames=frames)
        return rate, channels, frames
    return build


def _hand(rate, channels, fmt, seconds=0.5, **kw):
    def build(path):
        frames = int(rate * seconds) + 3
        write_wav(path, rate, channels, fmt, frames=frames, **kw)
        return rate, channels, frames
    return build


VARIANTS = {}
for _rate in (8000, 16000, 22050, 44100, 48000):
    VARIANTS["s16-mono-%d" % _rate] = _wave_module(_rate, 1)
    VARIANTS["s16-stereo-%d" % _rate] = _wave_module(_rate, 2)
VARIANTS.update({
    "s24-mono-48000": _hand(48000, 1, "s24"),
    "s24-stereo-44100": _hand(44100, 2, "s24"),
    "f32-mono-16000-fact": _hand(16000, 1, "f32", fact=int(16000 * 0.5) + 3),
    "f32-stereo-48000": _hand(48000, 2, "f32"),
    "extensible-s16-stereo-48000": _hand(48000, 2, "s16", extensible=True),
    "extensible-s24-mono-22050": _hand(22050, 1, "s24", extensible=True),
    "extensible-f32-6ch-48000": _hand(48000, 6, "f32", seconds=0.3, extensible=True),
    "extensible-s16-8ch-8000": _hand(8000, 8, "s16", extensible=True),
    # Real files carry other chunks (LIST/INFO from ffmpeg, sox, DAWs);
    # this one has an odd size, so a pad byte follows it (RIFF rule).
    "s16-mono-16000-odd-LIST-chunk": _hand(
        16000, 1, "s16", chunks_before_data=[(b"LIST", b"INFOISFT\x05\x00\x00\x00sayi\x00")]),
})


class Checks:
    """Soft assertions: collect every failed check, then fail once with all
    of them, so one run diagnoses a stream completely."""

    def __init__(self):
        self.failures = []

    def __call__(self, cond, msg):
        if not cond:
            self.failures.append(msg)
        return cond

    def finish(self, context=""):
        if self.failures:
            pytest.fail("%s\n  - %s" % (context, "\n  - ".join(self.failures)), pytrace=False)


def check_post_json(res, base, author):
    """Hard checks of the JSON the post command prints."""
    j = res.json
    for key, typ in (("id", str), ("url", str), ("audio_url", str), ("feed_url", str)):
        assert isinstance(j.get(key), typ), "field %s missing or not a %s: %r" % (
            key, typ.__name__, j)
    assert isinstance(j.get("duration_in_seconds"), (int, float)) and \
        not isinstance(j["duration_in_seconds"], bool), j
    assert isinstance(j.get("size_in_bytes"), int) and \
        not isinstance(j["size_in_bytes"], bool), j
    assert POST_ID_RE.match(j["id"]), "post id %r is not 26 lowercase Crockford digits" % j["id"]
    assert j["url"] == base + "/p/" + j["id"], j
    assert j["feed_url"] == base + "/u/%s/feed.json" % author, j
    m = re.match(re.escape(base) + r"/a/([0-9a-f]{64})\.opus$", j["audio_url"])
    assert m, "audio_url %r is not %s/a/<sha256>.opus" % (j["audio_url"], base)
    assert j["size_in_bytes"] > 0
    return m.group(1)


def verify_opus_stream(tmp_path, body, rate, frames, author, text, lookahead, check):
    """Every property of one produced Ogg Opus stream; failures go to check."""
    expected_samples = int(math.floor(frames * 48000 / rate + 0.5))
    opus_path = tmp_path / "got.opus"
    opus_path.write_bytes(body)

    # --- Our own parse of the Ogg pages (RFC 3533 / RFC 7845).
    try:
        pages = ogg_pages(body)
    except AssertionError as e:
        check(False, "not a well-formed Ogg stream: %s" % e)
        pages = []
    if pages:
        check(all(p.crc_ok for p in pages), "bad CRC on pages %s"
              % [i for i, p in enumerate(pages) if not p.crc_ok])
        check(all(p.version == 0 for p in pages), "Ogg version is not 0")
        check(len({p.serial for p in pages}) == 1, "more than one stream serial")
        check([p.seq for p in pages] == list(range(len(pages))),
              "page sequence numbers are not 0,1,2,...: %s" % [p.seq for p in pages][:20])
        check(pages[0].bos and not any(p.bos for p in pages[1:]), "BOS must be set on the "
              "first page only")
        check(pages[-1].eos, "last page lacks the EOS flag (header_type & 4)")
        check(not any(p.eos for p in pages[:-1]), "EOS set before the last page")
        packets = ogg_packets(pages)
        check(all(pi is not None for _, pi in packets), "the stream ends inside a packet")
        try:
            head = OpusHead(packets[0][0])
            tags = OpusTags(packets[1][0])
        except (AssertionError, IndexError) as e:
            check(False, "header packets: %s" % e)
            return
        # RFC 7845 3: OpusHead alone on the first page, granule 0.
        check(len(pages[0].lacing) >= 1 and packets[0][1] == 0 and
              (len(packets) < 2 or packets[1][1] != 0),
              "OpusHead must be alone on the first page")
        check(pages[0].granule == 0, "first page granule %d != 0" % pages[0].granule)
        tags_page = packets[1][1]
        check(tags_page is not None and pages[tags_page].granule == 0,
              "OpusTags page granule must be 0")
        check(head.version == 1, "OpusHead version %d != 1" % head.version)
        check(head.channels == 1, "OpusHead channels %d != 1 (mono)" % head.channels)
        check(head.mapping == 0, "OpusHead mapping family %d != 0" % head.mapping)
        check(head.preskip == lookahead, "OpusHead pre-skip %d != libopus lookahead %d"
              % (head.preskip, lookahead))
        check(head.input_rate == rate, "OpusHead input rate %d != WAV rate %d"
              % (head.input_rate, rate))
        check(head.gain == 0, "OpusHead output gain %d != 0" % head.gain)
        check(tags.vendor != "", "OpusTags vendor string is empty")
        check(author in tags.values("ARTIST"), "OpusTags lack ARTIST=%s: %r"
              % (author, tags.comments))
        if text is not None:
            check(text in tags.all_values(), "OpusTags lack the text %r: %r"
                  % (text, tags.comments))

        # Audio pages: a page's granule = samples of every packet completed
        # on it (and before); the last page's granule trims the end.
        audio = packets[2:]
        first_audio_page = audio[0][1] if audio else None
        check(first_audio_page is not None and first_audio_page > (tags_page or 0) and
              all(pi != tags_page for _, pi in audio),
              "audio data must start on a fresh page after OpusTags")
        total = 0
        done_by_page = {}
        for pkt, pi in audio:
            total += opus_packet_samples(pkt)
            if pi is not None:
                done_by_page[pi] = total
        for pi, cum in sorted(done_by_page.items()):
            if pi == len(pages) - 1:
                continue
            if pages[pi].granule != cum:
                check(False, "page %d granule %d != %d samples completed so far"
                      % (pi, pages[pi].granule, cum))
                break
        last = pages[-1].granule
        check(last == head.preskip + expected_samples,
              "last granule %d != pre-skip %d + round(%d * 48000 / %d) = %d"
              % (last, head.preskip, frames, rate, head.preskip + expected_samples))
        check(last <= total, "last granule %d beyond the %d samples in the packets"
              % (last, total))
        check(total - last < 960 * 3,
              "%d samples of padding after the end (more than needed)" % (total - last))
        granules = [p.granule for p in pages if p.granule != -1]
        check(granules == sorted(granules), "granule positions decrease")
    else:
        head = None

    # --- opusinfo: strict validator (catches a missing EOS, bad granules).
    r = subprocess.run(["opusinfo", str(opus_path)], capture_output=True, text=True,
                       errors="replace", timeout=60)
    info = r.stdout + r.stderr
    check(r.returncode == 0, "opusinfo exit %d:\n%s" % (r.returncode, info))
    check("WARNING" not in info and "EOS not set" not in info,
          "opusinfo warns:\n%s" % info)
    m = re.search(r"Pre-skip: (\d+)", info)
    check(m is not None and int(m.group(1)) == lookahead,
          "opusinfo Pre-skip %s != lookahead %d" % (m and m.group(1), lookahead))
    m = re.search(r"Original sample rate: (\d+)", info)
    check(m is not None and int(m.group(1)) == rate,
          "opusinfo original rate %s != %d" % (m and m.group(1), rate))

    # --- ffprobe.
    r = subprocess.run(["ffprobe", "-v", "error", "-show_streams", str(opus_path)],
                       capture_output=True, text=True, errors="replace", timeout=60)
    check(r.returncode == 0, "ffprobe exit %d: %s" % (r.returncode, r.stderr))
    check(r.stderr.strip() == "", "ffprobe reports errors: %s" % r.stderr)
    fields = dict(l.split("=", 1) for l in r.stdout.splitlines() if "=" in l)
    check(fields.get("codec_name") == "opus", "ffprobe codec_name %r" % fields.get("codec_name"))
    check(fields.get("channels") == "1", "ffprobe channels %r" % fields.get("channels"))

    # --- opusdec: decoded length equals the input's (within one 20 ms frame).
    out_wav = tmp_path / "decoded.wav"
    r = subprocess.run(["opusdec", "--quiet", "--rate", "48000", str(opus_path), str(out_wav)],
                       capture_output=True, text=True, errors="replace", timeout=60)
    check(r.returncode == 0, "opusdec exit %d: %s" % (r.returncode, r.stderr))
    if r.returncode == 0:
        dec_rate, samples = read_wav_s16_mono(out_wav)
        check(dec_rate == 48000, "opusdec rate %d" % dec_rate)
        check(abs(len(samples) - expected_samples) <= 960,
              "decoded %d samples, input is %d at 48 kHz (%.1f ms off)"
              % (len(samples), expected_samples,
                 (len(samples) - expected_samples) / 48.0))
        if samples:
            rms = math.sqrt(sum(s * s for s in samples[::7]) / len(samples[::7])) / 32768.0
            check(rms > 0.02, "decoded audio is (nearly) silent: RMS %.4f" % rms)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_wav_variant_publishes_valid_opus(sayin, store, tmp_path, variant, libopus_lookahead):
    wav = tmp_path / ("%s.wav" % variant)
    rate, channels, frames = VARIANTS[variant](wav)
    text = "variant %s: \"quoted\" <tag> & more" % variant
    res = sayin.post(store, AUTHOR, wav, text=text)
    base = "http://127.0.0.1:8080"
    sha = check_post_json(res, base, AUTHOR)
    assert abs(res.json["duration_in_seconds"] - frames / rate) < 0.001, (
        "duration_in_seconds %r != %d frames / %d Hz" % (res.json["duration_in_seconds"],
                                                         frames, rate))

    origin = sayin.start_origin(store)
    r = origin.get_url(res.json["audio_url"])
    assert r.status == 200, r
    assert sha256_hex(r.body) == sha, "audio bytes do not hash to their address"
    assert len(r.body) == res.json["size_in_bytes"]

    check = Checks()
    verify_opus_stream(tmp_path, r.body, rate, frames, AUTHOR, text, libopus_lookahead, check)
    check.finish("%s (%d Hz, %d ch, %d frames):" % (variant, rate, channels, frames))


def test_spoken_clip_publishes_valid_opus(sayin, store, tmp_path, espeak_wav, libopus_lookahead):
    channels, width, rate, frames = read_wav_info(espeak_wav)
    text = "My first voice post \U0001F399"
    res = sayin.post(store, "celebrity", espeak_wav, text=text)
    check_post_json(res, "http://127.0.0.1:8080", "celebrity")
    assert abs(res.json["duration_in_seconds"] - frames / rate) < 0.001
    origin = sayin.start_origin(store)
    r = origin.get_url(res.json["audio_url"])
    assert r.status == 200, r
    check = Checks()
    verify_opus_stream(tmp_path, r.body, rate, frames, "celebrity", text, libopus_lookahead,
                       check)
    check.finish("espeak-ng clip (%d Hz, %d frames):" % (rate, frames))
    # 32 kb/s by default: a few seconds of speech is a few KiB per second.
    kbps = len(r.body) * 8 / (frames / rate) / 1000
    assert 12 < kbps < 60, "%.1f kb/s for a 32 kb/s target" % kbps


@pytest.mark.parametrize("rate", [48000, 44100, 22050, 16000, 8000])
def test_decoded_audio_is_time_aligned(sayin, store, tmp_path, rate, opus_tools):
    """A tone burst starts at the same time after encode + decode: the
    pre-skip and any resampler delay are compensated, not just the length."""
    frames = int(rate * 0.6)
    start = int(rate * 0.25)
    wav = tmp_path / "burst.wav"
    write_wav_module(wav, rate, 1, samples=burst_signal(rate, frames, start, int(rate * 0.2)))
    res = sayin.post(store, AUTHOR, wav)
    origin = sayin.start_origin(store)
    r = origin.get_url(res.json["audio_url"])
    assert r.status == 200
    opus_path = tmp_path / "burst.opus"
    opus_path.write_bytes(r.body)
    out = tmp_path / "burst-decoded.wav"
    d = subprocess.run(["opusdec", "--quiet", "--rate", "48000", str(opus_path), str(out)],
                       capture_output=True, text=True, timeout=60)
    assert d.returncode == 0, d.stderr
    _, samples = read_wav_s16_mono(out)
    peak = max(abs(s) for s in samples)
    assert peak > 0.3 * 32767, "burst lost: peak %d" % peak
    onset = next(i for i, s in enumerate(samples) if abs(s) > 0.3 * peak)
    expected = start * 48000 / rate
    assert abs(onset - expected) <= 24, (
        "burst starts at sample %d of the decoded stream, the input's at %d (%.2f ms off): "
        "pre-skip or resampler delay not compensated" % (onset, expected,
                                                         (onset - expected) / 48))


def test_post_output_is_one_json_object(sayin, store, short_wav):
    res = sayin.post(store, AUTHOR, short_wav, text="hello")
    assert set(res.json) >= {"id", "url", "audio_url", "feed_url", "duration_in_seconds",
                             "size_in_bytes"}
    assert res.stdout.strip().count("\n") == 0, "more than one line on stdout: %r" % res.stdout
    check_post_json(res, "http://127.0.0.1:8080", AUTHOR)
    assert abs(res.json["duration_in_seconds"] - 0.4) < 0.001


def test_post_ids_are_time_ordered_ulids(sayin, store, wav_factory):
    ids = []
    t0 = time.time()
    for i in range(4):
        ids.append(sayin.post(store, AUTHOR, wav_factory("p%d.wav" % i, seed=i)).json["id"])
    t1 = time.time()
    for pid in ids:
        assert POST_ID_RE.match(pid), pid
        # ULID-like: the first 10 digits are milliseconds since the epoch.
        ms = 0
        for ch in pid[:10]:
            ms = ms * 32 + CROCKFORD.index(ch)
        assert t0 - 2 <= ms / 1000 <= t1 + 2, "id %s encodes time %s, not now" % (pid, ms)
    assert len(set(ids)) == len(ids), ids
    assert ids == sorted(ids), "ids do not sort in publication order: %s" % ids


@pytest.mark.parametrize("handle", ["a", "user_1", "0", "x" * 32])
def test_valid_handles_publish(sayin, store, short_wav, handle):
    res = sayin.post(store, handle, short_wav)
    assert res.json["feed_url"].endswith("/u/%s/feed.json" % handle)


def test_identical_recordings_share_one_object(sayin, store, wav_factory, lmdb_tools):
    wav = wav_factory("same.wav", seed=3)
    first = sayin.post(store, AUTHOR, wav, text="same text").json
    keys1 = set(mdb_keys(store, "objects"))
    second = sayin.post(store, AUTHOR, wav, text="same text").json
    keys2 = set(mdb_keys(store, "objects"))

    assert first["id"] != second["id"], "two posts must have two ids"
    assert first["audio_url"] == second["audio_url"], "identical recordings, different audio"
    sha = first["audio_url"].rsplit("/", 1)[1].split(".")[0]
    assert sha in keys1 and sha in keys2
    # The repeated post adds only its post page and its embeddable player
    # page, each as identity, gzip and brotli: audio, fallback, waveform and
    # share card are shared.
    assert len(keys2) == len(keys1) + 6, (
        "object count went %d -> %d: the repeated post should add only its pages"
        % (len(keys1), len(keys2)))

    # No new object is Opus audio: ask the origin by URL.
    origin = sayin.start_origin(store)
    for k in keys2 - keys1:
        assert origin.get("/a/%s.opus" % k).status == 404, "a second audio object %s" % k
    # A different recording does add one audio object.
    third = sayin.post(store, AUTHOR, wav_factory("other.wav", seed=4), text="same text").json
    keys3 = set(mdb_keys(store, "objects"))
    assert third["audio_url"] != first["audio_url"]
    new_audio = [k for k in keys3 - keys2 if origin.get("/a/%s.opus" % k).status == 200]
    assert len(new_audio) == 1, new_audio
    assert store_counts(store)["posts"] == 3


def test_encoding_is_deterministic_across_stores(sayin, tmp_path, wav_factory):
    """Content addressing needs deterministic bytes (Ogg serial included)."""
    wav = wav_factory("det.wav", rate=44100, channels=2, seed=9)
    a = sayin.post(tmp_path / "s1", AUTHOR, wav, text="t").json
    b = sayin.post(tmp_path / "s2", AUTHOR, wav, text="t").json
    assert a["audio_url"] == b["audio_url"]
    assert a["size_in_bytes"] == b["size_in_bytes"]
    # A different recording gets a different Ogg serial.
    c = sayin.post(tmp_path / "s3", AUTHOR, wav_factory("det2.wav", rate=44100, seed=10),
                   text="t").json
    o1 = sayin.start_origin(tmp_path / "s1")
    o3 = sayin.start_origin(tmp_path / "s3")
    serial_a = ogg_pages(o1.get_url(a["audio_url"]).body)[0].serial
    serial_c = ogg_pages(o3.get_url(c["audio_url"]).body)[0].serial
    assert serial_a != serial_c, "the same Ogg serial for different recordings"


def test_bitrate_setting_changes_the_stream(sayin, tmp_path):
    wav = tmp_path / "noise.wav"
    write_noise_wav(wav, 48000, 2)
    low = sayin.post(tmp_path / "lo", AUTHOR, wav, args=["--bitrate", "12000"]).json
    high = sayin.post(tmp_path / "hi", AUTHOR, wav, args=["--bitrate", "96000"]).json
    assert high["size_in_bytes"] > 2.5 * low["size_in_bytes"], (low, high)

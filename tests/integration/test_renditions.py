"""Every post also gets an AAC-in-M4A fallback (for Safari before 18.4) and a
waveform in BBC audiowaveform JSON: both immutable objects under /a/, linked
from the feed item (second attachment with the Opus one's title; the _sayin
extension object) and from the post page (second <source>, data-waveform)."""

import json
import math
import re
import subprocess

import pytest

from helpers.audio import ebur128, opus_samples, write_noise_wav
from helpers.http import OPUS_TYPE
from helpers.store import mdb_keys, store_counts

AUTHOR = "ann"
TEXT = "Hello fans, this is my first voice post."
M4A_TYPE = "audio/mp4"


def run(*argv, timeout=120):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout)


def probe(path, entries):
    r = run("ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", entries,
            "-of", "default=nw=1:nk=1", path)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def top_level_boxes(data):
    """Top-level ISO BMFF box types in order."""
    boxes, pos = [], 0
    while pos < len(data):
        assert len(data) - pos >= 8, "truncated box header at %d" % pos
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        elif size == 0:
            size = len(data) - pos
        assert 8 <= size <= len(data) - pos, "box %r of %d bytes at %d" % (kind, size, pos)
        boxes.append(kind)
        pos += size
    return boxes


def feed_item(origin, res):
    feed = origin.get_url(res.json["feed_url"])
    assert feed.status == 200
    items = feed.json()["items"]
    item = [i for i in items if i["id"] == res.json["id"]]
    assert len(item) == 1, items
    return item[0]


def check_waveform(doc, frames, points):
    """The documented audiowaveform v2 fields, `length` pairs of 8-bit
    values, points of them unless the audio has fewer samples."""
    for key in ("version", "channels", "sample_rate", "samples_per_pixel", "bits", "length",
                "data"):
        assert key in doc, "waveform lacks %r: %s" % (key, sorted(doc))
    assert doc["version"] == 2 and doc["channels"] == 1 and doc["bits"] == 8, doc
    assert doc["sample_rate"] == 48000
    want = min(points, frames)
    assert doc["length"] == want, "length %d, want %d (%d samples)" % (doc["length"], want,
                                                                      frames)
    assert doc["samples_per_pixel"] == math.ceil(frames / want)
    data = doc["data"]
    assert len(data) == 2 * doc["length"]
    assert all(isinstance(v, int) and -128 <= v <= 127 for v in data)
    pairs = list(zip(data[0::2], data[1::2]))
    assert all(lo <= hi for lo, hi in pairs), "a pixel with min > max"
    return pairs


@pytest.fixture
def published(sayin, store, espeak_wav, opus_tools):
    res = sayin.post(store, AUTHOR, espeak_wav, text=TEXT)
    return res, sayin.start_origin(store)


def test_feed_item_lists_opus_then_m4a_with_one_title(published, tmp_path):
    res, origin = published
    item = feed_item(origin, res)
    atts = item["attachments"]
    assert [a["mime_type"] for a in atts] == [OPUS_TYPE, M4A_TYPE], atts
    opus, m4a = atts
    assert opus["url"] == res.json["audio_url"] and opus["url"].endswith(".opus")
    assert m4a["url"] == res.json["fallback_url"] and m4a["url"].endswith(".m4a")
    # JSON Feed: attachments with the same title are alternate formats.
    assert opus["title"] == m4a["title"] == TEXT
    assert opus["duration_in_seconds"] == m4a["duration_in_seconds"]

    # Both served by the origin, with the types the feed claims.
    for att, ctype in ((opus, OPUS_TYPE), (m4a, M4A_TYPE)):
        r = origin.get_url(att["url"])
        assert r.status == 200, att["url"]
        assert r.header("content-type") == ctype
        assert len(r.body) == att["size_in_bytes"]
        assert "immutable" in r.header("cache-control")
    path = tmp_path / "fallback.m4a"
    path.write_bytes(origin.get_url(m4a["url"]).body)

    # The M4A plays: FFmpeg decodes it without a word, AAC-LC mono 48 kHz,
    # as long as the Opus audio, laid out for progressive playback.
    r = run("ffmpeg", "-nostdin", "-v", "error", "-i", path, "-f", "null", "-")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert probe(path, "stream=codec_name") == "aac"
    assert probe(path, "stream=profile") == "LC"
    assert probe(path, "stream=channels") == "1"
    assert probe(path, "stream=sample_rate") == "48000"
    duration = float(probe(path, "format=duration"))
    assert abs(duration - res.json["duration_in_seconds"]) <= 0.050, duration
    boxes = top_level_boxes(path.read_bytes())
    assert boxes[0] == "ftyp"
    assert boxes.index("moov") < boxes.index("mdat"), "moov after mdat: %s" % boxes
    # It carries the normalized signal, as the Opus audio does.
    lufs, peak = ebur128(path)
    assert abs(lufs - -16.0) <= 1.0, "M4A at %.1f LUFS" % lufs
    assert peak <= -0.5, "M4A true peak %.1f dBTP" % peak


def test_waveform_linked_from_feed_and_served(published, tmp_path):
    res, origin = published
    item = feed_item(origin, res)
    ext = item["_sayin"]
    assert ext["waveform_url"] == res.json["waveform_url"]
    assert ext["waveform_url"].endswith(".json")
    assert abs(ext["loudness_lufs"] - -16.0) <= 1.0, ext
    r = origin.get_url(ext["waveform_url"])
    assert r.status == 200
    assert r.header("content-type") == "application/json"
    assert "immutable" in r.header("cache-control")
    opus = tmp_path / "a.opus"
    opus.write_bytes(origin.get_url(res.json["audio_url"]).body)
    frames = opus_samples(opus)
    assert frames > 1000
    pairs = check_waveform(json.loads(r.body), frames, 1000)
    # Speech normalized to -16 LUFS: loud pixels, quiet pixels, and nothing
    # above the limiter's ceiling (-2.5 dBTP is 96 of 128).
    assert max(hi for _, hi in pairs) > 40
    assert min(hi - lo for lo, hi in pairs) < 10
    assert max(max(-lo, hi) for lo, hi in pairs) <= 100


def test_post_page_offers_both_sources_in_order(published):
    res, origin = published
    page = origin.get_url(res.json["url"])
    assert page.status == 200
    html = page.body.decode()
    sources = re.findall(r'<source src="([^"]+)" type="([^"]+)">', html)
    assert sources == [(res.json["audio_url"], OPUS_TYPE),
                       (res.json["fallback_url"], M4A_TYPE)], sources
    assert 'data-waveform="%s"' % res.json["waveform_url"] in html


def test_fallback_off_stores_no_m4a(sayin, store, espeak_wav, lmdb_tools):
    res = sayin.post(store, AUTHOR, espeak_wav, text=TEXT, args=["--aac-fallback", "off"])
    assert "fallback_url" not in res.json
    assert "waveform_url" in res.json
    origin = sayin.start_origin(store)
    item = feed_item(origin, res)
    assert [a["mime_type"] for a in item["attachments"]] == [OPUS_TYPE]
    assert item["attachments"][0]["title"] == TEXT
    assert origin.get_url(item["_sayin"]["waveform_url"]).status == 200
    html = origin.get_url(res.json["url"]).body.decode()
    assert html.count("<source ") == 1
    # No object in the store is an M4A.
    keys = mdb_keys(store, "objects")
    assert keys
    for k in keys:
        assert origin.get("/a/%s.m4a" % k).status == 404, "an M4A object %s" % k


def test_waveform_points_setting_and_short_audio(sayin, tmp_path, wav_factory, opus_tools):
    wav = wav_factory("two.wav", rate=16000, seconds=2.0, seed=5)
    res = sayin.post(tmp_path / "s1", AUTHOR, wav, args=["--waveform-points", "64"])
    origin = sayin.start_origin(tmp_path / "s1")
    doc = origin.get_url(res.json["waveform_url"]).json()
    check_waveform(doc, 96000, 64)
    assert feed_item(origin, res)["attachments"][0]["title"] == "Voice post"

    # Fewer samples than points: one pixel per sample.
    tiny = wav_factory("tiny.wav", rate=48000, seconds=0.01, seed=6)
    res = sayin.post(tmp_path / "s2", AUTHOR, tiny)
    origin = sayin.start_origin(tmp_path / "s2")
    doc = origin.get_url(res.json["waveform_url"]).json()
    check_waveform(doc, 480, 1000)
    assert doc["length"] == 480 and doc["samples_per_pixel"] == 1


def test_renditions_are_deterministic(sayin, tmp_path, wav_factory):
    """Content addressing needs the same bytes for the same recording."""
    wav = wav_factory("det.wav", rate=44100, channels=2, seconds=1.0, seed=9)
    a = sayin.post(tmp_path / "s1", AUTHOR, wav, text="t").json
    b = sayin.post(tmp_path / "s2", AUTHOR, wav, text="t").json
    assert a["fallback_url"] == b["fallback_url"]
    assert a["waveform_url"] == b["waveform_url"]


def test_aac_bitrate_setting(sayin, tmp_path):
    wav = tmp_path / "noise.wav"
    write_noise_wav(wav, 48000, 2)
    sizes = {}
    for rate in ("32000", "128000"):
        res = sayin.post(tmp_path / rate, AUTHOR, wav, args=["--aac-bitrate", rate])
        origin = sayin.start_origin(tmp_path / rate)
        sizes[rate] = len(origin.get_url(res.json["fallback_url"]).body)
    assert sizes["128000"] > 2 * sizes["32000"], sizes


def test_default_fallback_is_48_to_64_kbps(sayin, tmp_path, long_speech_clip):
    """The issue's range for the fallback: 48 to 64 kb/s. The default target
    is 48 kb/s with the fast coder, whose rate control runs over the target
    on loud speech (63 kb/s on the benchmark's clip), so the measured stream
    bitrate may land anywhere in the range, plus FFmpeg's ABR slack of a few
    percent."""
    res = sayin.post(tmp_path / "s", AUTHOR, long_speech_clip)
    origin = sayin.start_origin(tmp_path / "s")
    path = tmp_path / "fallback.m4a"
    path.write_bytes(origin.get_url(res.json["fallback_url"]).body)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=bit_rate",
                            "-of", "json", str(path)], capture_output=True, text=True, check=True)
    rate = int(json.loads(probe.stdout)["streams"][0]["bit_rate"])
    assert 48000 * 0.9 <= rate <= 64000 * 1.05, rate


def test_aac_coder_setting(sayin, tmp_path):
    """fast (the default) and twoloop are both FFmpeg's AAC-LC: different
    bytes, the same length, both valid M4A."""
    wav = tmp_path / "noise.wav"
    write_noise_wav(wav, 48000, 2)
    bodies = {}
    for coder in ("default", "twoloop", "fast"):
        args = [] if coder == "default" else ["--aac-coder", coder]
        res = sayin.post(tmp_path / coder, AUTHOR, wav, args=args)
        origin = sayin.start_origin(tmp_path / coder)
        bodies[coder] = origin.get_url(res.json["fallback_url"]).body
        path = tmp_path / (coder + ".m4a")
        path.write_bytes(bodies[coder])
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                                "format=duration:stream=codec_name,profile", "-of", "json",
                                str(path)], capture_output=True, text=True, check=True)
        info = json.loads(probe.stdout)
        assert info["streams"][0]["codec_name"] == "aac", info
        assert info["streams"][0]["profile"] == "LC", info
        assert abs(float(info["format"]["duration"]) - 2.0) <= 0.05, info
    assert bodies["default"] == bodies["fast"]
    assert bodies["twoloop"] != bodies["fast"]


@pytest.mark.parametrize("args", [["--aac-bitrate", "16000"], ["--aac-bitrate", "256000"],
                                  ["--waveform-points", "5"], ["--aac-fallback", "maybe"],
                                  ["--aac-coder", "anmr"]])
def test_bad_rendition_settings_are_usage_errors(sayin, store, short_wav, args):
    res = sayin.post(store, AUTHOR, short_wav, args=args, check=False)
    assert res.returncode == 2, res.describe()
    assert args[0] in res.stderr, res.stderr
    assert not store.exists() or store_counts(store)["objects"] == 0

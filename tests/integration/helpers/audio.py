"""Audio in and out: test signals, WAV files written by hand (any field may
be set, or be wrong) or with the wave module, WAV reading, independent
measurements of what sayin publishes (loudness by ffmpeg's ebur128, length
by opusdec), and an Ogg page and Opus packet parser (RFC 3533, RFC 7845,
RFC 6716)."""

import array
import math
import random
import re
import struct
import subprocess
import sys
import wave

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_ALAW = 0x0006
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
GUID_TAIL = bytes([0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00,
                   0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71])
CHANNEL_MASKS = {1: 0x4, 2: 0x3, 3: 0x7, 4: 0x33, 5: 0x37, 6: 0x3F, 7: 0x13F, 8: 0x63F}


def make_signal(rate, channels, frames, seed=1):
    """Interleaved float samples in [-0.6, 0.6]: a chirp per channel with a
    little noise, so encoders have something real to code."""
    rnd = random.Random(seed)
    out = array.array("d", bytes(8 * frames * channels))
    i = 0
    for n in range(frames):
        t = n / rate
        for ch in range(channels):
            f = 220.0 * (ch + 1) + 400.0 * t
            out[i] = 0.5 * math.sin(2 * math.pi * f * t) + 0.05 * (rnd.random() - 0.5)
            i += 1
    return out


def burst_signal(rate, frames, start, length, freq=1000.0, amp=0.6):
    """Mono: silence, then a tone burst at sample `start` of `length` samples."""
    out = array.array("d", bytes(8 * frames))
    for n in range(start, min(frames, start + length)):
        out[n] = amp * math.sin(2 * math.pi * freq * (n - start) / rate)
    return out


def encode_samples(samples, sample_format):
    """Packs floats as little-endian s16, s24, f32, u8 (8-bit PCM) bytes."""
    if sample_format == "s16":
        a = array.array("h", (max(-32768, min(32767, int(round(s * 32767)))) for s in samples))
        if sys.byteorder != "little":
            a.byteswap()
        return a.tobytes()
    if sample_format == "s24":
        out = bytearray()
        for s in samples:
            v = max(-8388608, min(8388607, int(round(s * 8388607))))
            out += struct.pack("<i", v)[:3]
        return bytes(out)
    if sample_format == "f32":
        return struct.pack("<%df" % len(samples), *samples)
    if sample_format == "u8":
        return bytes(max(0, min(255, int(round(128 + s * 127)))) for s in samples)
    raise ValueError(sample_format)


BITS = {"s16": 16, "s24": 24, "f32": 32, "u8": 8}


def chunk(cid, body):
    data = cid + struct.pack("<I", len(body)) + body
    if len(body) % 2:
        data += b"\x00"  # RIFF pads odd-sized chunks
    return data


def wav_bytes(rate, channels, sample_format, data, extensible=False, fact=None,
              chunks_before_data=(), format_tag=None, bits=None, block_align=None,
              valid_bits=None, data_size=None, riff_size=None):
    """A WAV file written by hand, so any field can be set (or be wrong)."""
    bits = bits if bits is not None else BITS[sample_format]
    if format_tag is None:
        format_tag = WAVE_FORMAT_IEEE_FLOAT if sample_format == "f32" else WAVE_FORMAT_PCM
    block_align = block_align if block_align is not None else channels * bits // 8
    byte_rate = rate * block_align
    if extensible:
        fmt = struct.pack("<HHIIHH", WAVE_FORMAT_EXTENSIBLE, channels, rate, byte_rate,
                          block_align, bits)
        fmt += struct.pack("<HHI", 22, valid_bits if valid_bits is not None else bits,
                           CHANNEL_MASKS.get(channels, 0))
        fmt += struct.pack("<H", format_tag) + GUID_TAIL
    else:
        fmt = struct.pack("<HHIIHH", format_tag, channels, rate, byte_rate, block_align, bits)
        if format_tag != WAVE_FORMAT_PCM:
            fmt += struct.pack("<H", 0)  # cbSize
    body = b"WAVE" + chunk(b"fmt ", fmt)
    if fact is not None:
        body += chunk(b"fact", struct.pack("<I", fact))
    for cid, cbody in chunks_before_data:
        body += chunk(cid, cbody)
    size = data_size if data_size is not None else len(data)
    body += b"data" + struct.pack("<I", size) + data
    if len(data) % 2:
        body += b"\x00"
    return b"RIFF" + struct.pack("<I", riff_size if riff_size is not None else len(body)) + body


def write_wav(path, rate, channels, sample_format="s16", frames=None, seconds=0.5,
              samples=None, **kw):
    """Writes a WAV of the test signal (or of samples). Returns its frame count."""
    if samples is None:
        frames = frames if frames is not None else int(round(rate * seconds))
        samples = make_signal(rate, channels, frames)
    else:
        frames = len(samples) // channels
    data = encode_samples(samples, sample_format)
    with open(path, "wb") as f:
        f.write(wav_bytes(rate, channels, sample_format, data, **kw))
    return frames


def write_wav_module(path, rate, channels, frames=None, seconds=0.5, sampwidth=2,
                     samples=None):
    """Writes a PCM WAV with Python's wave module. Returns its frame count."""
    if samples is None:
        frames = frames if frames is not None else int(round(rate * seconds))
        samples = make_signal(rate, channels, frames)
    else:
        frames = len(samples) // channels
    fmt = {1: "u8", 2: "s16"}[sampwidth]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        w.writeframes(encode_samples(samples, fmt))
    return frames


def write_noise_wav(path, rate, seconds, channels=1):
    """Full-scale white noise, 16-bit, written in blocks (fast for long files).
    Returns the frame count."""
    frames = int(rate * seconds)
    nbytes = frames * channels * 2
    with open(path, "wb") as f:
        f.write(wav_bytes(rate, channels, "s16", b"", data_size=nbytes, riff_size=36 + nbytes))
        rnd = random.Random(7)
        block = 1 << 20
        left = nbytes
        while left > 0:
            n = min(block, left)
            f.write(rnd.randbytes(n))
            left -= n
    return frames


def read_wav_info(path):
    with wave.open(str(path), "rb") as w:
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()


def read_wav_s16_mono(path):
    """(rate, samples as array('h')) of a 16-bit mono WAV such as opusdec's."""
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, w.getparams()
        rate = w.getframerate()
        raw = w.readframes(w.getnframes())
    a = array.array("h")
    a.frombytes(raw)
    return rate, a


def ebur128(path):
    """(integrated LUFS, true peak dBTP) of a file, by ffmpeg's ebur128 filter."""
    r = subprocess.run(["ffmpeg", "-nostdin", "-nostats", "-i", str(path), "-af",
                        "ebur128=peak=true", "-f", "null", "-"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    summary = r.stderr[r.stderr.rindex("Summary:"):]
    lufs = float(re.search(r"I:\s+(-?[\d.]+|-inf) LUFS", summary).group(1))
    peak = float(re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary).group(1))
    return lufs, peak


def opus_samples(path):
    """Decoded length at 48 kHz, by opusdec (which applies pre-skip and end trim)."""
    out = str(path) + ".wav"
    r = subprocess.run(["opusdec", "--quiet", "--rate", "48000", str(path), out],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rate, samples = read_wav_s16_mono(out)
    assert rate == 48000
    return len(samples)


def _crc_table():
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
            r &= 0xFFFFFFFF
        table.append(r)
    return table


_CRC = _crc_table()


def ogg_crc(data):
    crc = 0
    tbl = _CRC
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ tbl[((crc >> 24) & 0xFF) ^ b]
    return crc


class OggPage:
    def __init__(self, offset, version, header_type, granule, serial, seq, crc, lacing, body,
                 crc_ok):
        self.offset = offset
        self.version = version
        self.header_type = header_type
        self.granule = granule
        self.serial = serial
        self.seq = seq
        self.crc = crc
        self.lacing = lacing
        self.body = body
        self.crc_ok = crc_ok

    @property
    def continued(self):
        return bool(self.header_type & 1)

    @property
    def bos(self):
        return bool(self.header_type & 2)

    @property
    def eos(self):
        return bool(self.header_type & 4)


def ogg_pages(data, check_crc=True):
    """Parses every page of an Ogg stream; raises AssertionError on garbage."""
    pages = []
    off = 0
    while off < len(data):
        assert data[off:off + 4] == b"OggS", "no Ogg capture pattern at offset %d" % off
        assert off + 27 <= len(data), "truncated page header at offset %d" % off
        version, htype, granule, serial, seq, crc, nseg = struct.unpack_from("<BBqIIIB", data,
                                                                             off + 4)
        lacing = list(data[off + 27:off + 27 + nseg])
        assert len(lacing) == nseg, "truncated lacing at offset %d" % off
        body_off = off + 27 + nseg
        body_len = sum(lacing)
        body = data[body_off:body_off + body_len]
        assert len(body) == body_len, "truncated page body at offset %d" % off
        crc_ok = True
        if check_crc:
            raw = bytearray(data[off:body_off + body_len])
            raw[22:26] = b"\0\0\0\0"
            crc_ok = ogg_crc(bytes(raw)) == crc
        pages.append(OggPage(off, version, htype, granule, serial, seq, crc, lacing, body,
                             crc_ok))
        off = body_off + body_len
    return pages


def ogg_packets(pages):
    """[(packet bytes, index of the page on which it completes)]. A packet
    still open after the last page is returned with index None."""
    packets = []
    cur = b""
    for pi, page in enumerate(pages):
        pos = 0
        for lv in page.lacing:
            cur += page.body[pos:pos + lv]
            pos += lv
            if lv < 255:
                packets.append((cur, pi))
                cur = b""
    if cur:
        packets.append((cur, None))
    return packets


def opus_packet_samples(packet):
    """Samples at 48 kHz in one Opus packet, from its TOC byte (RFC 6716 3.1)."""
    if not packet:
        return 0
    toc = packet[0]
    config = toc >> 3
    if config < 12:
        per = (480, 960, 1920, 2880)[config & 3]
    elif config < 16:
        per = (480, 960)[config & 1]
    else:
        per = (120, 240, 480, 960)[config & 3]
    code = toc & 3
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    else:
        assert len(packet) >= 2, "code-3 packet without a frame count byte"
        count = packet[1] & 0x3F
    return per * count


class OpusHead:
    def __init__(self, packet):
        assert packet[:8] == b"OpusHead", "first packet is not OpusHead: %r" % packet[:8]
        assert len(packet) >= 19, "OpusHead is %d bytes" % len(packet)
        (self.version, self.channels, self.preskip, self.input_rate, self.gain,
         self.mapping) = struct.unpack_from("<BBHIhB", packet, 8)


class OpusTags:
    def __init__(self, packet):
        assert packet[:8] == b"OpusTags", "second packet is not OpusTags: %r" % packet[:8]
        off = 8
        (n,) = struct.unpack_from("<I", packet, off)
        off += 4
        self.vendor = packet[off:off + n].decode("utf-8")
        off += n
        (count,) = struct.unpack_from("<I", packet, off)
        off += 4
        self.comments = []
        for _ in range(count):
            (n,) = struct.unpack_from("<I", packet, off)
            off += 4
            raw = packet[off:off + n]
            assert len(raw) == n, "truncated comment"
            off += n
            self.comments.append(raw.decode("utf-8"))

    def values(self, key):
        out = []
        for c in self.comments:
            k, sep, v = c.partition("=")
            if sep and k.upper() == key.upper():
                out.append(v)
        return out

    def all_values(self):
        return [c.partition("=")[2] for c in self.comments if "=" in c]

"""The checks are only worth something if they can fail. These tests run the
Ogg/Opus checker of test_publish.py on streams made by opusenc (the
reference encoder): it must accept a good one and reject broken ones. They
need no sayin binary."""

import struct
import subprocess

import pytest

from helpers.audio import ogg_crc, ogg_pages, write_wav_module
from test_publish import Checks, verify_opus_stream

RATE = 44100
FRAMES = int(RATE * 1.5) + 7


@pytest.fixture
def reference(tmp_path, opus_tools):
    wav = tmp_path / "in.wav"
    write_wav_module(wav, RATE, 1, frames=FRAMES)
    out = tmp_path / "ref.opus"
    subprocess.run(["opusenc", "--quiet", "--artist", "alice", "--comment", "TITLE=hello",
                    str(wav), str(out)], check=True, timeout=60)
    return out.read_bytes()


def failures(tmp_path, body, lookahead, text="hello", author="alice"):
    c = Checks()
    verify_opus_stream(tmp_path, body, RATE, FRAMES, author, text, lookahead, c)
    return c.failures


def rewrite_page(body, index, mutate):
    """Applies mutate(header bytearray, body bytearray) to one page and
    fixes its CRC, so only the mutated field is wrong."""
    pages = ogg_pages(body)
    p = pages[index]
    end = p.offset + 27 + len(p.lacing) + len(p.body)
    hdr = bytearray(body[p.offset:p.offset + 27 + len(p.lacing)])
    pbody = bytearray(p.body)
    mutate(hdr, pbody)
    page = hdr + pbody
    page[22:26] = b"\0\0\0\0"
    page[22:26] = struct.pack("<I", ogg_crc(bytes(page)))
    return body[:p.offset] + bytes(page) + body[end:]


def test_reference_stream_passes(tmp_path, reference, libopus_lookahead):
    assert failures(tmp_path, reference, libopus_lookahead) == []


def test_missing_last_page_is_caught(tmp_path, reference, libopus_lookahead):
    last = ogg_pages(reference)[-1]
    f = failures(tmp_path, reference[:last.offset], libopus_lookahead)
    assert any("EOS" in m for m in f), f
    assert any("opusinfo" in m for m in f), f


def test_eos_flag_cleared_is_caught(tmp_path, reference, libopus_lookahead):
    n = len(ogg_pages(reference))

    def clear_eos(hdr, _):
        hdr[5] &= ~4 & 0xFF
    f = failures(tmp_path, rewrite_page(reference, n - 1, clear_eos), libopus_lookahead)
    assert any("EOS" in m for m in f), f


def test_wrong_preskip_is_caught(tmp_path, reference, libopus_lookahead):
    def zero_preskip(_, body):
        body[10:12] = b"\0\0"
    f = failures(tmp_path, rewrite_page(reference, 0, zero_preskip), libopus_lookahead)
    assert any("pre-skip" in m.lower() for m in f), f


def test_wrong_end_granule_is_caught(tmp_path, reference, libopus_lookahead):
    n = len(ogg_pages(reference))

    def untrimmed(hdr, _):
        granule = struct.unpack_from("<q", hdr, 6)[0]
        struct.pack_into("<q", hdr, 6, granule + 480)
    f = failures(tmp_path, rewrite_page(reference, n - 1, untrimmed), libopus_lookahead)
    assert any("last granule" in m for m in f), f


def test_bad_crc_is_caught(tmp_path, reference, libopus_lookahead):
    body = bytearray(reference)
    body[-1] ^= 0xFF
    f = failures(tmp_path, bytes(body), libopus_lookahead)
    assert any("CRC" in m for m in f), f


def test_missing_tags_are_caught(tmp_path, reference, libopus_lookahead):
    f = failures(tmp_path, reference, libopus_lookahead, text="other", author="bob")
    assert any("ARTIST=bob" in m for m in f) and any("'other'" in m for m in f), f

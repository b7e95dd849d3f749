"""Fixtures for sayin's integration tests.

Run: SAYIN_BIN=$PWD/bin /usr/bin/python3 -m pytest -q -n 2 tests/integration

Every test gets its own directory (tmp_path), its own store and its own
port; every process it starts is killed at teardown, also on failure.
"""

import os
import shutil
import subprocess

import pytest

from helpers.api import author_add, start_api
from helpers.audio import (
    OpusHead, make_signal, ogg_packets, ogg_pages, write_noise_wav, write_wav_module)
from helpers.crossposting import worlds
from helpers.edges import LOOPBACK_PURGERS, start_nginx, start_varnish
from helpers.fakes_cdn import fake_services
from helpers.procs import Sayin, tool_available

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="session")
def bin_dir():
    d = os.environ.get("SAYIN_BIN") or os.path.join(REPO, "bin")
    missing = [p for p in ("sayin-publisher", "sayin-origin")
               if not os.access(os.path.join(d, p), os.X_OK)]
    if missing:
        pytest.fail("%s missing in %s: run `make` (or set SAYIN_BIN)" % (", ".join(missing), d))
    return d


@pytest.fixture
def sayin(bin_dir, tmp_path):
    s = Sayin(bin_dir, str(tmp_path))
    yield s
    s.cleanup()


@pytest.fixture
def store(tmp_path):
    """A store directory path that does not exist yet."""
    return tmp_path / "store"


def require_tool(name):
    if not tool_available(name):
        pytest.fail("%s is not installed (run scripts/bootstrap)" % name)


@pytest.fixture(scope="session")
def opus_tools():
    for t in ("opusinfo", "opusdec", "opusenc", "ffprobe", "ffmpeg"):
        require_tool(t)


@pytest.fixture(scope="session")
def lmdb_tools():
    for t in ("mdb_stat", "mdb_dump"):
        require_tool(t)


@pytest.fixture(scope="session")
def libopus_lookahead(tmp_path_factory, opus_tools):
    """The pre-skip libopus reports at 48 kHz (OPUS_GET_LOOKAHEAD), read from
    a reference stream made by opusenc (which writes the lookahead as
    pre-skip when it does not resample) and cross-checked with opusinfo."""
    d = tmp_path_factory.mktemp("lookahead")
    wav, opus = d / "ref.wav", d / "ref.opus"
    write_wav_module(wav, 48000, 1, seconds=0.2)
    r = subprocess.run(["opusenc", "--quiet", str(wav), str(opus)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    pages = ogg_pages(opus.read_bytes())
    head = OpusHead(ogg_packets(pages)[0][0])
    info = subprocess.run(["opusinfo", str(opus)], capture_output=True, text=True, timeout=60)
    assert "Pre-skip: %d" % head.preskip in info.stdout, info.stdout
    return head.preskip


@pytest.fixture
def short_wav(tmp_path):
    """A 0.4 s 16-bit mono 16 kHz WAV."""
    p = tmp_path / "short.wav"
    write_wav_module(p, 16000, 1, seconds=0.4)
    return p


@pytest.fixture
def wav_factory(tmp_path):
    """make(name, rate=16000, channels=1, seconds=0.4, seed=1) -> path of a
    16-bit WAV whose signal depends on seed (different seeds: different
    recordings)."""
    def make(name, rate=16000, channels=1, seconds=0.4, seed=1):
        p = tmp_path / name
        frames = int(round(rate * seconds))
        write_wav_module(p, rate, channels,
                           samples=make_signal(rate, channels, frames, seed=seed))
        return p
    return make


@pytest.fixture(scope="session")
def espeak_wav(tmp_path_factory):
    """A real spoken clip synthesized by espeak-ng (22.05 kHz mono 16-bit)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    p = tmp_path_factory.mktemp("espeak") / "spoken.wav"
    r = subprocess.run(["espeak-ng", "-w", str(p), "Hello fans, this is my first voice post."],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and p.exists(), r.stderr
    return p


@pytest.fixture(scope="session")
def long_noise_wav(tmp_path_factory):
    """Ten minutes of 48 kHz 16-bit mono white noise (about 55 MiB): takes
    the publisher seconds to encode, long enough to kill it mid-work."""
    p = tmp_path_factory.mktemp("long") / "noise-10min.wav"
    write_noise_wav(p, 48000, 600)
    return p


@pytest.fixture(scope="session")
def big_noise_wav(tmp_path_factory):
    """80 s of 48 kHz noise: at 510 kb/s (libopus gives mono ~250 kb/s) its
    Opus stream is over 2 MiB."""
    p = tmp_path_factory.mktemp("big") / "noise-80s.wav"
    write_noise_wav(p, 48000, 80)
    return p


@pytest.fixture
def served(sayin, store, short_wav):
    """A store with one post by alice and an origin serving it."""
    post = sayin.post(store, "alice", short_wav, text="first post").json
    origin = sayin.start_origin(store)
    return origin, post


def _espeak(path, text, rate=None):
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (run scripts/bootstrap)")
    argv = ["espeak-ng", "-w", str(path)] + (["-s", str(rate)] if rate else []) + [text]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and os.path.exists(path), r.stderr
    return path


@pytest.fixture(scope="session")
def speech_clip(tmp_path_factory):
    """About one second of espeak-ng speech (22.05 kHz mono WAV)."""
    return _espeak(tmp_path_factory.mktemp("speech") / "hi.wav", "Hi fans", rate=200)


@pytest.fixture(scope="session")
def speech_clip_b(tmp_path_factory):
    """Another short spoken clip (different bytes from speech_clip)."""
    return _espeak(tmp_path_factory.mktemp("speech_b") / "bye.wav", "Bye now", rate=200)


@pytest.fixture(scope="session")
def long_speech_clip(tmp_path_factory):
    """About six seconds of speech: half a second or more to encode."""
    return _espeak(tmp_path_factory.mktemp("speech_long") / "long.wav",
                   "This is a longer voice post for the fans, it goes on for a while so that "
                   "encoding takes a little time, thank you all.")


class ApiSite:
    """A store with authors, the ingest API on it, and an origin serving it."""

    def __init__(self, sayin, data, api, origin, tokens):
        self.sayin = sayin
        self.data = data
        self.api = api
        self.origin = origin
        self.tokens = tokens  # {handle: token}


# The settings a store records as its site's (publisher/site.c, site_keys).
SITE_FLAGS = ("--public-url", "--feed-items", "--feed-page-items", "--loudness-target",
              "--bitrate", "--aac-fallback", "--aac-bitrate", "--aac-coder", "--waveform-points")


@pytest.fixture
def api_site(sayin, tmp_path):
    """make(args=(), authors=("alice", "bob"), origin=True, author_args=()) ->
    ApiSite: authors created with `author add`, then `serve ARGS` and,
    with origin=True, sayin-origin on the same store."""
    def make(args=(), authors=("alice", "bob"), origin=True, author_args=(),
             base="https://cdn.test"):
        data = tmp_path / "store"
        # The first `author add` records the site's settings in the store
        # (test_site.py): it gets those serve is given.
        site_args = []
        for i, a in enumerate(args[:-1]):
            if a in SITE_FLAGS:
                site_args += [a, args[i + 1]]
        tokens = {h: author_add(sayin, data, h, args=tuple(author_args) + tuple(site_args) +
                                  ("--public-url", base)) for h in authors}
        api = start_api(sayin, data, args=args, base=base)
        org = sayin.start_origin(data) if origin else None
        return ApiSite(sayin, data, api, org, tokens)
    return make


@pytest.fixture
def edge_factory(tmp_path):
    """start(kind, origin, purgers=("127.0.0.1", "::1"), **kw) -> a running
    CDN edge in front of origin: kind "varnish" (cdn-config/varnish/sayin.vcl;
    kw backend_response= adds statements to sayin_site_backend_response) or
    "nginx" (cdn-config/nginx/edge.conf), each on its own free port and in its
    own directory under tmp_path; all are stopped at teardown."""
    started = []

    def start(kind, origin, purgers=LOOPBACK_PURGERS, **kw):
        base = str(tmp_path / ("%s-%d" % (kind, len(started) + 1)))
        if kind == "varnish":
            edge = start_varnish(base, origin.port, purgers=purgers, **kw)
        elif kind == "nginx":
            edge = start_nginx(base, origin.port, purgers=purgers, **kw)
        else:
            raise ValueError(kind)
        started.append(edge)
        return edge

    yield start
    for edge in started:
        edge.stop()


@pytest.fixture
def world(sayin, tmp_path):
    """Cross-posting worlds (helpers/crossposting.py): world(handles, seed)
    builds a store, accounts and fake X and Facebook; all stopped at teardown."""
    yield from worlds(sayin, tmp_path)


@pytest.fixture
def fakes():
    """Fake CDN and storage services (helpers/fakes_cdn.py): fakes(kind)
    starts one; all stopped at teardown."""
    yield from fake_services()

"""Helpers for sayin's integration tests: processes, raw HTTP, WAV writers,
an Ogg/Opus page parser and LMDB store inspection.

Standard library only. Every process a test starts goes through a Sayin
instance, whose cleanup (see conftest.py) kills whatever is still running,
also when the test failed.
"""

import array
import email.utils
import hashlib
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import wave

import pytest

HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Crockford base 32, lowercase: no i, l, o, u.
CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
POST_ID_RE = re.compile(r"^[0-9abcdefghjkmnpqrstvwxyz]{26}$")
IMF_FIXDATE_RE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} GMT$"
)
RFC3339_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
OPUS_TYPE = "audio/ogg; codecs=opus"
FEED_TYPE = "application/feed+json"
OBJECT_CACHE = "public, max-age=31536000, immutable"
# Names (feeds, pages) with the default lifetimes: short for browsers, long for
# CDNs (purged on change), stale allowances per RFC 5861.
NAME_CACHE = ("public, max-age=60, s-maxage=86400, stale-while-revalidate=60, "
              "stale-if-error=86400")
JSONFEED_VERSION = "https://jsonfeed.org/version/1.1"

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_STORE_FULL = 0, 1, 2, 3, 4


# ---------------------------------------------------------------- processes


def free_port():
    """A port that was free a moment ago: bind port 0 on 127.0.0.1, release."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra=None):
    """The test runner's environment without any SAYIN_* setting, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAYIN_")}
    env["LC_ALL"] = "C.UTF-8"
    if extra:
        env.update(extra)
    return env


class PostResult:
    def __init__(self, args, proc):
        self.args = args
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.json = None
        if self.returncode == 0:
            try:
                self.json = json.loads(self.stdout)
            except ValueError:
                self.json = None

    @property
    def stderr_lines(self):
        return [l for l in self.stderr.splitlines() if l.strip()]

    def describe(self):
        return "sayin-publisher %s\n  exit %s\n  stdout: %r\n  stderr: %r" % (
            " ".join(self.args), self.returncode, self.stdout[-2000:], self.stderr[-2000:])


def read_log(path):
    """A process's log file as text ("" when it cannot be read)."""
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Origin:
    def __init__(self, proc, port, data, log_path):
        self.proc = proc
        self.port = port
        self.data = data
        self.log_path = log_path

    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port

    def log(self):
        return read_log(self.log_path)

    def conn(self, timeout=5.0):
        return HttpConn(self.port, timeout=timeout)

    def request(self, method, path, headers=None, body=b"", timeout=5.0):
        """One request on a fresh connection; returns the Response."""
        with self.conn(timeout) as c:
            c.request(method, path, headers=headers, body=body)
            return c.read_response(head=(method == "HEAD"))

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def head(self, path, **kw):
        return self.request("HEAD", path, **kw)

    def get_url(self, url, **kw):
        """GET an absolute URL's path on this origin (URLs may name a CDN)."""
        return self.get(url_path(url), **kw)

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Sends sig and returns the exit code (None if it did not exit in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


class Sayin:
    """Runs the two programs for one test and remembers every process."""

    def __init__(self, bin_dir, workdir):
        self.bin_dir = bin_dir
        self.workdir = workdir
        self.procs = []
        self._n = 0

    @property
    def publisher(self):
        return os.path.join(self.bin_dir, "sayin-publisher")

    @property
    def origin_bin(self):
        return os.path.join(self.bin_dir, "sayin-origin")

    def run(self, program, args, env=None, timeout=60, cwd=None):
        """Runs a program to completion; returns CompletedProcess (text)."""
        return subprocess.run([program] + list(args), capture_output=True, text=True,
                              errors="replace", env=clean_env(env), timeout=timeout,
                              cwd=cwd or self.workdir, stdin=subprocess.DEVNULL)

    def post(self, data, author, file, text=None, args=(), env=None, timeout=120,
             check=True):
        """sayin-publisher post ... FILE. check=True fails the test unless the
        post succeeds and prints one JSON object."""
        argv = ["post"]
        if data is not None:
            argv += ["--data", str(data)]
        if author is not None:
            argv += ["--author", author]
        if text is not None:
            argv += ["--text", text]
        argv += [str(a) for a in args]
        if file is not None:
            argv.append(str(file))
        proc = self.run(self.publisher, argv, env=env, timeout=timeout)
        res = PostResult(argv, proc)
        if check:
            if res.returncode != 0:
                raise AssertionError("publish failed:\n" + res.describe())
            if not isinstance(res.json, dict):
                raise AssertionError("publish did not print one JSON object:\n" + res.describe())
        return res

    def popen_post(self, data, author, file, text=None, args=(), env=None):
        """Starts a post in the background (for the kill test)."""
        argv = [self.publisher, "post", "--data", str(data), "--author", author]
        if text is not None:
            argv += ["--text", text]
        argv += [str(a) for a in args] + [str(file)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=clean_env(env), cwd=self.workdir)
        self.procs.append(proc)
        return proc

    def start_origin(self, data, args=(), env=None, listen=True, port=None, wait=True,
                     ready_timeout=15.0):
        """Starts sayin-origin on data and waits until /healthz answers 200.
        listen=True passes --listen 127.0.0.1:<free port>; listen=False leaves
        the address to env/INI and port must then say where to poll."""
        last_log = ""
        for attempt in range(5):
            self._n += 1
            p = port
            argv = [self.origin_bin]
            if data is not None:
                argv += ["--data", str(data)]
            if listen:
                p = port or free_port()
                argv += ["--listen", "127.0.0.1:%d" % p]
            argv += [str(a) for a in args]
            log_path = os.path.join(self.workdir, "origin-%d.log" % self._n)
            logf = open(log_path, "wb")
            try:
                proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=clean_env(env),
                                        cwd=self.workdir)
            finally:
                logf.close()
            self.procs.append(proc)
            origin = Origin(proc, p, data, log_path)
            if not wait:
                return origin
            status = wait_healthy(origin, ready_timeout)
            if status == "ok":
                return origin
            last_log = origin.log()
            origin.stop(signal.SIGKILL)
            # Another test may have taken the free port in between: retry.
            if listen and port is None and "in use" in last_log.lower():
                continue
            break
        raise AssertionError("sayin-origin %s did not become healthy (%s); its output:\n%s"
                             % (" ".join(argv), status, last_log))

    def cleanup(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self.procs = []


def wait_healthy(origin, timeout):
    """Polls GET /healthz until 200. Returns "ok", "exited N" or "timeout"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = origin.proc.poll()
        if rc is not None:
            return "exited %d" % rc
        try:
            c = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=1.0)
            c.request("GET", "/healthz")
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return "ok"
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.02)
    return "timeout"


def audio_path(post):
    """The origin path of a published post's Opus object."""
    return url_path(post["audio_url"])


def page_path(post):
    """The origin path of a published post's page."""
    return url_path(post["url"])


def brotli_decode(data):
    """Decodes brotli with Debian's brotli CLI (python3 has no brotli module)."""
    exe = shutil.which("brotli")
    if exe is None:
        pytest.fail("brotli is not installed (run scripts/bootstrap: Debian package brotli)")
    r = subprocess.run([exe, "-d", "-c"], input=data, capture_output=True, timeout=30)
    assert r.returncode == 0, "brotli -d failed: %r" % r.stderr
    return r.stdout


def url_path(url):
    m = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*(/.*)?$", url)
    assert m, "not an absolute URL: %r" % url
    return m.group(1) or "/"


# ---------------------------------------------------------------- raw HTTP


class ConnectionClosed(Exception):
    pass


class Response:
    def __init__(self, version, status, reason, headers, body):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] as sent
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header_map(self, exclude=("date",)):
        """{lowercase name: [values]} without the given names."""
        out = {}
        for k, v in self.headers:
            if k.lower() in exclude:
                continue
            out.setdefault(k.lower(), []).append(v)
        return out

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Response %s %s %r body=%d bytes>" % (self.status, self.reason, self.headers,
                                                     len(self.body))


class HttpConn:
    """A raw HTTP/1.1 client connection: send bytes, read responses one at a
    time (so keep-alive, pipelining and closing can be observed)."""

    def __init__(self, port, timeout=5.0, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    @staticmethod
    def build(method, path, headers=None, body=b"", version="HTTP/1.1"):
        hdrs = [("Host", "127.0.0.1")]
        if headers:
            hdrs += list(headers.items()) if isinstance(headers, dict) else list(headers)
        if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs):
            hdrs.append(("Content-Length", str(len(body))))
        head = "%s %s %s\r\n" % (method, path, version)
        head += "".join("%s: %s\r\n" % (k, v) for k, v in hdrs)
        return head.encode("latin-1") + b"\r\n" + (body or b"")

    def request(self, method, path, headers=None, body=b"", version="HTTP/1.1"):
        self.send(self.build(method, path, headers, body, version))

    def _fill(self):
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionClosed("connection closed with %d of %d body bytes"
                                       % (len(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _read_line(self):
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionClosed("connection closed inside a chunked body")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_response(self, head=False):
        """Reads one response. head=True: the response to a HEAD (no body
        whatever Content-Length says). Raises ConnectionClosed on EOF before
        a complete response."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionClosed("connection closed before a response (%r)" % self.buf[:200])
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise AssertionError("bad status line %r" % lines[0])
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise AssertionError("bad header line %r" % line)
            headers.append((name.strip(), value.strip()))
        resp = Response(m.group(1), int(m.group(2)), m.group(3) or "", headers, b"")
        status = resp.status
        if head or status in (204, 304) or 100 <= status < 200:
            return resp
        te = resp.header("Transfer-Encoding")
        cl = resp.header("Content-Length")
        if te and "chunked" in te.lower():
            body = b""
            while True:
                size = int(self._read_line().split(b";")[0].strip(), 16)
                if size == 0:
                    while self._read_line() != b"":
                        pass
                    break
                body += self._read_exact(size)
                self._read_exact(2)
            resp.body = body
        elif cl is not None:
            resp.body = self._read_exact(int(cl))
        else:
            while self._fill():
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def closed_by_peer(self, timeout=3.0):
        """True when the server closes the connection (EOF or reset) within
        timeout without sending anything more."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        if data:
            self.buf += data
            return False
        return True


def parse_http_date(value):
    return email.utils.parsedate_to_datetime(value)


def file_data(path):
    """The bytes of a file without its holes: the written extents, joined by
    a NUL. The store's data.mdb is sparse, as large as its map (64 GiB by
    default), so reading it whole would not fit in memory."""
    parts = []
    with open(path, "rb") as f:
        fd, end, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < end:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break  # ENXIO: only a hole is left
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            f.seek(start)
            parts.append(f.read(stop - start))
            pos = stop
    return b"\0".join(parts)


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- WAV files


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


# ---------------------------------------------------------------- Ogg / Opus


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


# ---------------------------------------------------------------- the store


def mdb_stat_all(data_dir):
    """{database name: entries} from `mdb_stat -a DIR` ("" = the main DB)."""
    out = subprocess.run(["mdb_stat", "-a", str(data_dir)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, "mdb_stat -a %s failed: %s" % (data_dir, out.stderr)
    stats = {}
    current = None
    for line in out.stdout.splitlines():
        m = re.match(r"^Status of (.*)$", line.strip())
        if m:
            name = m.group(1)
            current = "" if name == "Main DB" else name
            continue
        m = re.match(r"^\s*Entries:\s*(\d+)", line)
        if m and current is not None:
            stats[current] = int(m.group(1))
    return stats


def store_counts(data_dir):
    """Entries of the named databases that matter (0 when absent)."""
    s = mdb_stat_all(data_dir)
    return {k: s.get(k, 0) for k in ("objects", "names", "posts", "author_posts", "authors")}


def mdb_keys(data_dir, db):
    """The keys of database db, as hex strings (via mdb_dump)."""
    out = subprocess.run(["mdb_dump", "-s", db, str(data_dir)], capture_output=True,
                         timeout=60)
    assert out.returncode == 0, "mdb_dump -s %s %s failed: %s" % (db, data_dir, out.stderr)
    lines = out.stdout.decode("latin-1").splitlines()
    try:
        start = lines.index("HEADER=END") + 1
    except ValueError:
        raise AssertionError("unexpected mdb_dump output: %r" % lines[:10])
    keys = []
    body = [l for l in lines[start:] if l != "DATA=END"]
    for i in range(0, len(body), 2):
        keys.append(body[i].strip())
    return keys


def store_files(data_dir):
    return sorted(os.listdir(data_dir))


def proc_fd_flags(pid, fd):
    with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
        for line in f:
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    raise AssertionError("no flags in fdinfo of fd %s" % fd)


def tool_available(name):
    return shutil.which(name) is not None


# ---------------------------------------------------------------- the ingest API


TOKEN_RE = re.compile(r"^sayin_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")


def wait_for(cond, timeout=5.0, interval=0.01):
    """Polls cond() until it returns a true value (returned) or timeout
    passes (returns the last, false, value)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def _last_token(r, what):
    assert r.returncode == 0, "%s failed (exit %d): %s" % (what, r.returncode, r.stderr)
    lines = r.stdout.strip().splitlines()
    assert lines, "%s printed nothing" % what
    token = lines[-1].strip()
    assert TOKEN_RE.match(token), "%s: last line is not a token: %r" % (what, token)
    return token


def author_add(sayin, data, handle, name=None, args=()):
    """sayin-publisher author add HANDLE; returns the token it printed."""
    r = sayin.run(sayin.publisher, ["author", "add", handle, "--name", name or handle.title(),
                                    "--data", str(data)] + [str(a) for a in args])
    return _last_token(r, "author add %s" % handle)


def author_token(sayin, data, handle, args=()):
    r = sayin.run(sayin.publisher, ["author", "token", handle, "--data", str(data)]
                  + [str(a) for a in args])
    return _last_token(r, "author token %s" % handle)


def token_id(token):
    return token.split("_")[1]


def multipart_body(parts, boundary="sayinTestBoundary7MA4YWxkTrZu0gW"):
    """(content type, body) of multipart/form-data. parts: (name, bytes or
    str, filename or None, content type or None)."""
    out = b""
    for name, value, filename, ctype in parts:
        if isinstance(value, str):
            value = value.encode("utf-8")
        disp = 'form-data; name="%s"' % name
        if filename is not None:
            disp += '; filename="%s"' % filename
        out += b"--" + boundary.encode() + b"\r\n"
        out += ("Content-Disposition: %s\r\n" % disp).encode("utf-8")
        if ctype is not None:
            out += ("Content-Type: %s\r\n" % ctype).encode()
        out += b"\r\n" + value + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return "multipart/form-data; boundary=%s" % boundary, out


def parse_metrics(text):
    """{'name{labels}': value} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


class Api:
    """A running `sayin-publisher serve`."""

    def __init__(self, proc, port, data, upload_dir, log_path, base):
        self.proc = proc
        self.port = port
        self.data = data
        self.upload_dir = upload_dir
        self.log_path = log_path
        self.base = base  # the public URL its posts' links start with

    def log(self):
        return read_log(self.log_path)

    def conn(self, timeout=30.0):
        return HttpConn(self.port, timeout=timeout)

    @staticmethod
    def headers_for(token, headers):
        h = []
        if token is not None:
            h.append(("Authorization", "Bearer " + token))
        if headers:
            h += list(headers.items()) if isinstance(headers, dict) else list(headers)
        return h

    def request(self, method, path, token=None, headers=None, body=b"", timeout=30.0):
        """One request on a fresh connection; returns the Response."""
        with self.conn(timeout) as c:
            c.request(method, path, headers=self.headers_for(token, headers), body=body)
            return c.read_response(head=(method == "HEAD"))

    def post_raw(self, token, audio, text=None, content_type="audio/wav", headers=None,
                 timeout=60.0):
        path = "/v1/posts"
        if text is not None:
            path += "?text=" + urllib_quote(text)
        h = [("Content-Type", content_type), ("Content-Length", str(len(audio)))]
        h += list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        return self.request("POST", path, token, h, audio, timeout=timeout)

    def post_form(self, token, parts, headers=None, timeout=60.0):
        ctype, body = multipart_body(parts)
        h = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        h += list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        return self.request("POST", "/v1/posts", token, h, body, timeout=timeout)

    def get_post(self, token, post_id):
        return self.request("GET", "/v1/posts/" + post_id, token)

    def delete(self, token, post_id):
        return self.request("DELETE", "/v1/posts/" + post_id, token)

    def metrics(self):
        r = self.request("GET", "/metrics")
        assert r.status == 200, r
        return parse_metrics(r.body.decode())

    def uploads(self):
        try:
            return sorted(os.listdir(self.upload_dir))
        except FileNotFoundError:
            return []

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def urllib_quote(s):
    import urllib.parse  # here: the helpers above predate it
    return urllib.parse.quote(s, safe="")


def start_api(sayin, data, args=(), base="https://cdn.test", env=None, ready_timeout=15.0):
    """Starts `sayin-publisher serve --data DATA --api-listen 127.0.0.1:<free
    port> --public-url BASE ARGS` (stderr to a log file) and waits for
    /healthz. The process is killed by sayin.cleanup()."""
    last_log = ""
    for attempt in range(5):
        sayin._n += 1
        port = free_port()
        argv = [sayin.publisher, "serve", "--data", str(data), "--api-listen",
                "127.0.0.1:%d" % port, "--public-url", base] + [str(a) for a in args]
        log_path = os.path.join(sayin.workdir, "api-%d.log" % sayin._n)
        logf = open(log_path, "wb")
        try:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=clean_env(env),
                                    cwd=sayin.workdir)
        finally:
            logf.close()
        sayin.procs.append(proc)
        upload_dir = os.path.join(str(data), "uploads")
        for i, a in enumerate(argv):
            if a == "--upload-dir":
                upload_dir = argv[i + 1]
        api = Api(proc, port, data, upload_dir, log_path, base)
        status = wait_healthy(api, ready_timeout)
        if status == "ok":
            return api
        last_log = api.log()
        api.stop(signal.SIGKILL)
        if "in use" in last_log.lower():
            continue
        break
    raise AssertionError("sayin-publisher serve did not become healthy (%s); its output:\n%s"
                         % (status, last_log))


def error_code(resp):
    """The code of a JSON error response (asserting its shape)."""
    assert (resp.header("Content-Type") or "").startswith("application/json"), resp
    doc = resp.json()
    assert set(doc) == {"error"}, doc
    assert isinstance(doc["error"].get("message"), str) and doc["error"]["message"], doc
    return doc["error"]["code"]


# ---------------------------------------------------------------- CDN edges (cdn-config/)
# Varnish and nginx started with the shipped cdn-config/ files: the policy
# file is copied byte for byte, and only the site part (origin address,
# listening address, purge ACL) is written per test.

CDN_CONFIG = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "cdn-config"))
VARNISH_VCL = os.path.join(CDN_CONFIG, "varnish", "sayin.vcl")
NGINX_CONF = os.path.join(CDN_CONFIG, "nginx", "edge.conf")
LOOPBACK_PURGERS = ("127.0.0.1", "::1")


def find_program(name, package):
    """The path of a program, also in the sbin directories a non-root PATH
    lacks; fails the test naming the Debian package when missing."""
    path = shutil.which(name)
    if path is None:
        for d in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"):
            if os.access(os.path.join(d, name), os.X_OK):
                return os.path.join(d, name)
        pytest.fail("%s is not installed (run scripts/bootstrap: Debian package %s)"
                    % (name, package))
    return path


def origin_content_requests(origin):
    """How many requests sayin-origin answered for objects and names (its
    own sayin_origin_requests_total, routes object and name, every method
    and status). Scraping /metrics counts as route other, and so do health
    probes."""
    r = origin.get("/metrics")
    assert r.status == 200, "the origin's /metrics: %r" % r
    total = 0.0
    seen = False
    for key, value in parse_metrics(r.body.decode()).items():
        if not key.startswith("sayin_origin_requests_total{"):
            continue
        seen = True
        if 'route="object"' in key or 'route="name"' in key:
            total += value
    assert seen, "sayin_origin_requests_total missing from the origin's /metrics"
    return int(total)


def origin_metric(origin, name):
    r = origin.get("/metrics")
    assert r.status == 200, r
    return int(sum(v for k, v in parse_metrics(r.body.decode()).items()
                   if k == name or k.startswith(name + "{")))


class Edge:
    """A running edge (Varnish or nginx) on 127.0.0.1:port."""

    kind = "edge"

    def __init__(self, proc, port, base, log_path):
        self.proc = proc
        self.port = port
        self.base = base
        self.log_path = log_path

    def log(self):
        return read_log(self.log_path)

    def request(self, method, path, headers=None, timeout=10.0, host=None):
        """One request on a fresh connection, with Host: host (default the
        edge's address, as the purge driver sends it)."""
        hdrs = [("Host", host or "127.0.0.1:%d" % self.port)]
        hdrs += list((headers or {}).items())
        head = "%s %s HTTP/1.1\r\n" % (method, path)
        head += "".join("%s: %s\r\n" % (k, v) for k, v in hdrs)
        with HttpConn(self.port, timeout=timeout) as c:
            c.send(head.encode("latin-1") + b"\r\n")
            return c.read_response(head=(method == "HEAD"))

    def get(self, path, headers=None, host=None):
        return self.request("GET", path, headers=headers, host=host)

    def purge(self, path, headers=None):
        return self.request("PURGE", path, headers=headers)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        # The master leads its own process group (its children are in it).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


class VarnishEdge(Edge):
    kind = "varnish"

    def __init__(self, proc, port, base, log_path, workdir, vcl_path):
        super().__init__(proc, port, base, log_path)
        self.workdir = workdir  # varnishd -n
        self.vcl_path = vcl_path

    def stat(self, field):
        """One counter from varnishstat (e.g. MAIN.busy_sleep)."""
        r = subprocess.run([find_program("varnishstat", "varnish"), "-n", self.workdir, "-1",
                            "-f", field], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, "varnishstat failed: %s" % r.stderr
        for line in r.stdout.splitlines():
            parts = line.split()
            if parts and parts[0] == field:
                return int(parts[1])
        raise AssertionError("varnishstat has no %s: %s" % (field, r.stdout))

    def backend_log(self, url):
        """What Varnish sent to and got from the origin for url: one dict
        per backend transaction {"headers": [(name, value)], "statuses":
        [int]} from varnishlog on this instance's shared memory log (a 304
        is logged as 304, then as the 200 Varnish merges it into)."""
        r = subprocess.run([find_program("varnishlog", "varnish"), "-n", self.workdir, "-d",
                            "-b", "-g", "vxid", "-i", "BereqURL,BereqHeader,BerespStatus"],
                           capture_output=True, text=True, errors="replace", timeout=30)
        assert r.returncode == 0, "varnishlog failed: %s" % r.stderr
        txs, cur = [], None
        for line in r.stdout.splitlines():
            if line.startswith("*"):
                cur = {"url": None, "headers": [], "statuses": []}
                txs.append(cur)
                continue
            m = re.match(r"^[-\s]+(\w+)\s+(.*)$", line)
            if not m or cur is None:
                continue
            tag, value = m.group(1), m.group(2)
            if tag == "BereqURL":
                cur["url"] = value.strip()
            elif tag == "BereqHeader":
                k, _, v = value.partition(":")
                cur["headers"].append((k.strip(), v.strip()))
            elif tag == "BerespStatus":
                cur["statuses"].append(int(value.strip()))
        return [t for t in txs if t["url"] == url]


class NginxEdge(Edge):
    kind = "nginx"


def _wait_edge(edge, timeout):
    """Polls HEAD /healthz through the edge until it answers (any HTTP
    status). Returns "ok", "exited N" or "timeout"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = edge.proc.poll()
        if rc is not None:
            return "exited %d" % rc
        try:
            c = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=2.0)
            c.request("HEAD", "/healthz")
            c.getresponse().read()
            c.close()
            return "ok"
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.05)
    return "timeout"


def _start_edge(make, base, ready_timeout):
    """Starts an edge on a free port, retrying when another test took the
    port in between. make(port, attempt) -> (argv, edge factory)."""
    last, status, argv = "", "", []
    for attempt in range(5):
        port = free_port()
        argv, build = make(port, attempt)
        log_path = os.path.join(base, "edge-%d.log" % attempt)
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=base, start_new_session=True)
        edge = build(proc, port, log_path)
        status = _wait_edge(edge, ready_timeout)
        if status == "ok":
            return edge
        last = edge.log()
        edge.stop()
        low = last.lower()
        if "address already in use" in low or "could not get socket" in low:
            continue
        break
    pytest.fail("edge did not start (%s): %s\n%s" % (status, " ".join(argv), last[-3000:]))


def varnish_site_vcl(origin_port, purgers=LOOPBACK_PURGERS, backend_response=""):
    """cdn-config/varnish/site.vcl for a test: the origin on loopback, the
    purge ACL, and statements for sayin_site_backend_response."""
    with open(os.path.join(CDN_CONFIG, "varnish", "site.vcl")) as f:
        site = f.read()
    site, n = re.subn(r'\.port = "\d+";', '.port = "%d";' % origin_port, site, count=1)
    assert n == 1, "no .port line in cdn-config/varnish/site.vcl"
    acl = "acl purgers {\n%s}" % "".join('    "%s";\n' % a for a in purgers)
    site, n = re.subn(r"acl purgers \{[^}]*\}", lambda m: acl, site, count=1)
    assert n == 1, "no acl purgers in cdn-config/varnish/site.vcl"
    hook = "sub sayin_site_backend_response {\n    %s\n}" % backend_response
    site, n = re.subn(r"sub sayin_site_backend_response \{[^}]*\}", lambda m: hook, site,
                      count=1)
    assert n == 1, "no sub sayin_site_backend_response in cdn-config/varnish/site.vcl"
    return site


def start_varnish(base, origin_port, purgers=LOOPBACK_PURGERS, backend_response="",
                  ready_timeout=60.0, params=()):
    """varnishd with cdn-config/varnish/sayin.vcl (copied unchanged) and a
    test site.vcl, in the foreground (-F), its working directory (-n) under
    base, no management port (-T none), no privilege separation (-j none:
    as root the default jail would switch to the varnish user, who cannot
    enter pytest's 0700 tmp_path), and http_gzip_support off as sayin.vcl
    requires. Nothing in /etc or /var is used."""
    varnishd = find_program("varnishd", "varnish")
    os.makedirs(base, exist_ok=True)
    vcl_path = os.path.join(base, "sayin.vcl")
    shutil.copyfile(VARNISH_VCL, vcl_path)
    with open(os.path.join(base, "site.vcl"), "w") as f:
        f.write(varnish_site_vcl(origin_port, purgers, backend_response))

    def make(port, attempt):
        workdir = os.path.join(base, "vinst-%d" % attempt)
        argv = [varnishd, "-F", "-j", "none", "-n", workdir, "-a", "127.0.0.1:%d" % port,
                "-f", vcl_path, "-s", "malloc,64m", "-T", "none",
                "-p", "http_gzip_support=off"]
        for p in params:  # extra varnishd parameters, "name=value"
            argv += ["-p", p]
        return argv, lambda proc, p, log: VarnishEdge(proc, p, base, log, workdir, vcl_path)

    return _start_edge(make, base, ready_timeout)


def write_nginx_site(site_dir, origin_port, listen_port, purgers=LOOPBACK_PURGERS):
    os.makedirs(site_dir, exist_ok=True)
    with open(os.path.join(site_dir, "origin.conf"), "w") as f:
        f.write("server 127.0.0.1:%d max_fails=0;\n" % origin_port)
    with open(os.path.join(site_dir, "listen.conf"), "w") as f:
        f.write("listen 127.0.0.1:%d backlog=4096;\n" % listen_port)
    with open(os.path.join(site_dir, "purgers.conf"), "w") as f:
        f.write("".join("allow %s;\n" % a for a in purgers))


def start_nginx(base, origin_port, purgers=LOOPBACK_PURGERS, ready_timeout=30.0):
    """nginx with cdn-config/nginx/edge.conf (copied unchanged) and a test
    site/, prefix (-p) base, in the foreground. As root, workers keep root
    (-g user root) so that they can write the cache under pytest's 0700
    tmp_path."""
    nginx = find_program("nginx", "nginx-light")
    os.makedirs(os.path.join(base, "temp"), exist_ok=True)
    conf = os.path.join(base, "edge.conf")
    shutil.copyfile(NGINX_CONF, conf)
    directives = "daemon off;"
    if os.geteuid() == 0:
        directives += " user root;"

    def make(port, attempt):
        write_nginx_site(os.path.join(base, "site"), origin_port, port, purgers)
        argv = [nginx, "-p", base + "/", "-c", conf, "-e", "stderr", "-g", directives]
        return argv, lambda proc, p, log: NginxEdge(proc, p, base, log)

    return _start_edge(make, base, ready_timeout)

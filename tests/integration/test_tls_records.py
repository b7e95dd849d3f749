"""TLS record sizes on the wire (core/tls_stream.c): the first 64 KiB a
connection carries go in records of one TCP segment (1400 bytes with the
record's own overhead), later bytes in full 16 KiB records, as h2o does.
The client here is Python's ssl.SSLObject over memory BIOs, so the test
reads the raw records off the socket and sees each one's length before
decrypting it."""

import socket
import ssl
import time

from helpers.audio import write_noise_wav
from helpers.http import audio_path
from helpers.tlsca import TestCA

SMALL_PHASE = 64 * 1024
SEGMENT = 1400
FULL = 16384


class RawTlsClient:
    """TLS over a socket through memory BIOs, recording every record's
    (content type, length) as it arrives."""

    def __init__(self, port, cafile):
        ctx = ssl.create_default_context(cafile=cafile)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.raw = b""
        self.records = []
        self.plain = b""

    def _flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _pull(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("server closed")
        self.raw += chunk
        # Whole records only, so each length is seen once.
        while len(self.raw) >= 5:
            length = int.from_bytes(self.raw[3:5], "big")
            if len(self.raw) < 5 + length:
                break
            self.records.append((self.raw[0], length))
            self.incoming.write(self.raw[:5 + length])
            self.raw = self.raw[5 + length:]

    def handshake(self):
        while True:
            try:
                self.tls.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                self._pull()

    def send(self, data):
        self.tls.write(data)
        self._flush()

    def read_until(self, n):
        while len(self.plain) < n:
            try:
                self.plain += self.tls.read(65536)
                continue
            except ssl.SSLWantReadError:
                pass
            self._pull()
        return self.plain

    def close(self):
        self.sock.close()


def test_first_64k_in_segment_sized_records_then_full_ones(sayin, store, tmp_path):
    wav = tmp_path / "noise.wav"
    write_noise_wav(wav, 48000, 40)
    post = sayin.post(store, "alice", wav, text="noise").json
    path = audio_path(post)
    ca = TestCA(tmp_path)
    cert, key = ca.server("origin")
    origin = sayin.start_origin(store, args=["--tls-cert", cert, "--tls-key", key],
                                listen=True, wait=False)
    # /healthz over plain HTTP would be a failed handshake: poll the port.
    client = None
    for _ in range(200):
        try:
            client = RawTlsClient(origin.port, ca.root)
            client.handshake()
            break
        except (ConnectionRefusedError, EOFError, ssl.SSLError, OSError):
            if client is not None:
                client.close()
            client = None
            time.sleep(0.05)
    assert client is not None, "the origin never completed a handshake:\n" + origin.log()
    try:
        after_handshake = len(client.records)
        client.send(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path.encode())
        head = client.read_until(1)
        while b"\r\n\r\n" not in head:
            head = client.read_until(len(head) + 1)
        head_text, _, _ = head.partition(b"\r\n\r\n")
        assert head_text.startswith(b"HTTP/1.1 200 "), head_text
        length = int([line.split(b":", 1)[1] for line in head_text.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")][0])
        assert length > SMALL_PHASE + 4 * FULL, "the object is too small for this test"
        total = len(head_text) + 4 + length
        client.read_until(total)
    finally:
        client.close()

    # Application data records carrying the response (TLS 1.3: type 23;
    # the session ticket also travels as type 23, and is small).
    data = [n for t, n in client.records[after_handshake:] if t == 23]
    plaintext = 0
    small, full = 0, 0
    for n in data:
        payload = n - 17  # TLS 1.3 AES-GCM: 16-byte tag + 1 inner type byte
        if plaintext < SMALL_PHASE - SEGMENT:
            assert 5 + n <= SEGMENT, (
                "record of %d bytes after %d bytes of plaintext: the first 64 KiB must go in "
                "records of one segment (%d bytes on the wire)" % (5 + n, plaintext, SEGMENT))
            small += 1
        elif plaintext >= SMALL_PHASE:
            if plaintext + payload < total:
                assert payload == FULL, (
                    "record of %d payload bytes after %d bytes: past 64 KiB records must be full "
                    "(%d)" % (payload, plaintext, FULL))
            full += 1
        plaintext += payload
    assert small >= SMALL_PHASE // SEGMENT - 2, data[:5]
    assert full >= 4, data

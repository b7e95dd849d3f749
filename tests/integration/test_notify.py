"""sd_notify: both servers tell systemd (Type=notify / notify-reload) when
they are ready, reloading and stopping, and ping its watchdog when it asks
for one. A Python AF_UNIX datagram socket stands in for systemd's
$NOTIFY_SOCKET."""

import os
import signal
import socket
import time

import pytest

from helpers.api import start_api


class FakeSystemd:
    """Collects the datagrams sent to $NOTIFY_SOCKET, in order."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def env(self, watchdog_usec=None):
        e = {"NOTIFY_SOCKET": self.path}
        if watchdog_usec is not None:
            e["WATCHDOG_USEC"] = str(watchdog_usec)
        return e

    def wait(self, pred, after=0, timeout=5.0):
        """Reads until a message at index >= after satisfies pred; returns
        its index (fails the test on timeout)."""
        deadline = time.monotonic() + timeout
        i = after
        while True:
            while i < len(self.messages):
                if pred(self.messages[i]):
                    return i
                i += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no such message after #%d; got %r" % (after, self.messages))
            self.sock.settimeout(left)
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass

    def drain(self, seconds):
        """Collects what arrives within seconds."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass

    def count(self, line, after=0):
        return sum(1 for m in self.messages[after:] if line in m.split("\n"))

    def close(self):
        self.sock.close()


def ready(m):
    return "READY=1" in m.split("\n")


@pytest.fixture
def systemd(tmp_path):
    s = FakeSystemd(tmp_path / "notify.sock")
    yield s
    s.close()


def lifecycle(proc, systemd):
    """READY, watchdog pings, RELOADING then READY on SIGHUP, STOPPING on SIGTERM."""
    first = systemd.wait(ready)
    # WATCHDOG_USEC=200 ms: a ping every 100 ms.
    systemd.drain(0.6)
    assert systemd.count("WATCHDOG=1", first) >= 3, systemd.messages
    n = len(systemd.messages)
    proc.send_signal(signal.SIGHUP)
    reloading = systemd.wait(lambda m: m.startswith("RELOADING=1\n"), after=n)
    assert "MONOTONIC_USEC=" in systemd.messages[reloading], systemd.messages[reloading]
    systemd.wait(ready, after=reloading + 1)
    proc.send_signal(signal.SIGTERM)
    systemd.wait(lambda m: m == "STOPPING=1", after=reloading + 1)
    assert proc.wait(10) == 0


def test_origin_notifies_systemd(sayin, store, short_wav, systemd):
    sayin.post(store, "alice", short_wav, text="hi")
    origin = sayin.start_origin(store, env=systemd.env(watchdog_usec=200000))
    lifecycle(origin.proc, systemd)


def test_api_notifies_systemd(sayin, store, systemd):
    api = start_api(sayin, store, env=systemd.env(watchdog_usec=200000))
    lifecycle(api.proc, systemd)


def test_without_a_watchdog_there_are_no_pings(sayin, store, short_wav, systemd):
    sayin.post(store, "alice", short_wav, text="hi")
    origin = sayin.start_origin(store, env=systemd.env())
    systemd.wait(ready)
    systemd.drain(0.5)
    assert systemd.count("WATCHDOG=1") == 0, systemd.messages
    assert origin.stop() == 0

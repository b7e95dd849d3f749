"""make demo (scripts/demo): free ports, so a Varnish service on 6081 or
anything on 8080 is never in the way, and a loud failure (non-zero exit, the
server's own error) when the origin or the edge cannot start, never
"serving" after "Address already in use"."""

import http.server
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from helpers.procs import clean_env, find_program

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "scripts", "demo")


@pytest.fixture(scope="module")
def demo_tools():
    find_program("varnishd", "varnish")
    find_program("espeak-ng", "espeak-ng")


def demo_env(bin_dir, tmp_path, **ports):
    env = {"SAYIN_DEMO_DIR": str(tmp_path / "var"), "SAYIN_DEMO_BIN": bin_dir}
    env.update({k: v for k, v in ports.items()})
    return clean_env(env)


class Busy:
    """A port held by a server that answers every GET with 200 (a foreign
    Varnish or web server)."""

    def __init__(self, port=0):
        class Any(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Any)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def run_demo(env, timeout=120):
    return subprocess.run([DEMO], env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=ROOT)


def test_origin_that_cannot_listen_fails_the_demo_loudly(bin_dir, tmp_path, demo_tools):
    busy = Busy()
    try:
        r = run_demo(demo_env(bin_dir, tmp_path, SAYIN_DEMO_LISTEN="127.0.0.1:%d" % busy.port))
    finally:
        busy.close()
    assert r.returncode != 0, r.stdout
    assert "Address already in use" in r.stderr, r.stderr
    assert "sayin-origin did not start" in r.stderr
    assert "is serving" not in r.stdout


def test_edge_that_cannot_listen_fails_the_demo_loudly(bin_dir, tmp_path, demo_tools):
    busy = Busy()  # answers the demo's probe itself, as a running Varnish would
    try:
        r = run_demo(demo_env(bin_dir, tmp_path, SAYIN_DEMO_EDGE="127.0.0.1:%d" % busy.port))
    finally:
        busy.close()
    assert r.returncode != 0, r.stdout
    assert "varnishd did not start" in r.stderr, r.stderr
    assert "is serving" not in r.stdout


def test_demo_picks_free_ports_and_serves_through_its_edge(bin_dir, tmp_path, demo_tools):
    # Something on 6081 and 8080 when we can take them (else the ports
    # are taken already, which is the case to survive).
    held = []
    for port in (6081, 8080):
        try:
            held.append(Busy(port))
        except OSError:
            pass
    out = tmp_path / "demo.out"
    try:
        with open(out, "w") as f:
            proc = subprocess.Popen([DEMO], env=demo_env(bin_dir, tmp_path), stdout=f,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
                                    start_new_session=True)
        try:
            deadline = time.monotonic() + 90
            while "Press Ctrl-C" not in out.read_text() and proc.poll() is None:
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.1)
            text = out.read_text()
            assert proc.poll() is None, text
            m = re.search(r"serving \S+ on http://127\.0\.0\.1:(\d+); the Varnish edge\s+"
                          r"\(the CDN fans use\) is http://127\.0\.0\.1:(\d+)\.", text)
            assert m, text
            origin_port, edge_port = int(m.group(1)), int(m.group(2))
            assert {origin_port, edge_port}.isdisjoint({6081, 8080}), m.group(0)
            feed = re.search(r"feed:  (\S+)", text).group(1)
            assert feed.startswith("http://127.0.0.1:%d/" % edge_port)
            with urllib.request.urlopen(feed, timeout=10) as resp:
                assert resp.status == 200 and b"Hello fans" in resp.read()
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 130  # the demo's INT trap
            # Nothing left listening on the demo's ports.
            for port in (origin_port, edge_port):
                deadline = time.monotonic() + 10
                while True:
                    with socket.socket() as s:
                        if s.connect_ex(("127.0.0.1", port)) != 0:
                            break
                    assert time.monotonic() < deadline, "port %d still served" % port
                    time.sleep(0.1)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    finally:
        for b in held:
            b.close()

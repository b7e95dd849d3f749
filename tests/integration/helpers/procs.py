"""Running the two programs for a test: the Sayin instance that starts
sayin-publisher and sayin-origin and remembers every process (its cleanup,
see conftest.py, kills whatever is still running, also when the test
failed), the running Origin (plain HTTP or HTTPS), and process utilities:
free ports, a clean environment, logs, exit codes, polling."""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from helpers.http import HttpConn, tls_client_context, url_path

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_STORE_FULL = 0, 1, 2, 3, 4

# How much slower than a release build the binaries under test run: the
# Makefile sets it for the sanitizer build (ASan and UBSan run everything
# several times slower). Only liveness deadlines (how long a whole scenario
# may take before it counts as stuck) are scaled by it, never a behaviour's
# own timeouts or limits.
TIME_SCALE = float(os.environ.get("SAYIN_TEST_TIME_SCALE", "1"))


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


def read_log(path):
    """A process's log file as text ("" when it cannot be read)."""
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


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


def tool_available(name):
    return shutil.which(name) is not None


def wait_for(cond, timeout=5.0, interval=0.01):
    """Polls cond() until it returns a true value (returned) or timeout
    passes (returns the last, false, value)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def proc_fd_flags(pid, fd):
    with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
        for line in f:
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    raise AssertionError("no flags in fdinfo of fd %s" % fd)


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


class Program:
    """A program running in the background, on 127.0.0.1:port, with its log."""

    STOP_TIMEOUT = 5.0

    def log(self):
        return read_log(self.log_path)

    def stop(self, sig=signal.SIGTERM, timeout=None):
        """Sends sig and returns the exit code (None if it did not exit within
        timeout, by default STOP_TIMEOUT seconds)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(self.STOP_TIMEOUT if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            return None


class Origin(Program):
    """A running sayin-origin. tls: the client ssl.SSLContext (trusting the
    test CA) when it serves HTTPS: conn(), request() and get() then go over
    TLS. tls_cert, tls_key: the files given as --tls-cert and --tls-key (a
    test may overwrite them and send SIGHUP)."""

    def __init__(self, proc, port, data, log_path, tls=None, tls_cert=None, tls_key=None):
        self.proc = proc
        self.port = port
        self.data = data
        self.log_path = log_path
        self.tls = tls
        self.tls_cert = tls_cert
        self.tls_key = tls_key

    @property
    def base(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    def conn(self, timeout=5.0, session=None):
        return HttpConn(self.port, timeout=timeout, tls=self.tls, session=session)

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
             check=True, create_author=True):
        """sayin-publisher post ... FILE. check=True fails the test unless the
        post succeeds and prints one JSON object. create_author passes
        --create-author (most tests rely on the first post creating its
        author; test_author_lifecycle proves the refusal without it)."""
        argv = ["post"]
        if data is not None:
            argv += ["--data", str(data)]
        if author is not None:
            argv += ["--author", author]
            if create_author:
                argv.append("--create-author")
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
        argv = [self.publisher, "post", "--data", str(data), "--author", author,
                "--create-author"]
        if text is not None:
            argv += ["--text", text]
        argv += [str(a) for a in args] + [str(file)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=clean_env(env), cwd=self.workdir)
        self.procs.append(proc)
        return proc

    def spawn(self, argv, log_name, env=None):
        """Starts argv in the background, stdout and stderr to the next
        LOG_NAME-N.log of the work directory. Returns (process, log path);
        cleanup() kills the process."""
        self._n += 1
        log_path = os.path.join(self.workdir, "%s-%d.log" % (log_name, self._n))
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=clean_env(env),
                                    cwd=self.workdir)
        self.procs.append(proc)
        return proc, log_path

    def tls_files(self, tls_ca, name="origin", days=30):
        """Issues a server certificate from tls_ca (helpers.tlsca.TestCA) and
        copies it and its key to files of their own in the work directory,
        the paths a server is configured with: (cert_path, key_path)."""
        cert, key = tls_ca.server(name, days=days)
        self._n += 1
        d = os.path.join(self.workdir, "tls-%s-%d" % (name, self._n))
        os.makedirs(d)
        cert_path, key_path = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        shutil.copyfile(cert, cert_path)
        shutil.copyfile(key, key_path)
        os.chmod(key_path, 0o600)
        return cert_path, key_path

    def start_origin(self, data, args=(), env=None, listen=True, port=None, wait=True,
                     ready_timeout=15.0, tls_ca=None, tls_days=30):
        """Starts sayin-origin on data and waits until /healthz answers 200.
        listen=True passes --listen 127.0.0.1:<free port>; listen=False leaves
        the address to env/INI and port must then say where to poll.
        tls_ca (a helpers.tlsca.TestCA): serve HTTPS with a certificate it
        issues (valid tls_days days), passed as --tls-cert and --tls-key;
        /healthz is then polled over HTTPS, verified against tls_ca.root."""
        tls = tls_cert = tls_key = None
        if tls_ca is not None:
            tls_cert, tls_key = self.tls_files(tls_ca, days=tls_days)
            tls = tls_client_context(tls_ca.root)
            args = ["--tls-cert", tls_cert, "--tls-key", tls_key] + list(args)
        last_log = ""
        for attempt in range(5):
            p = port
            argv = [self.origin_bin]
            if data is not None:
                argv += ["--data", str(data)]
            if listen:
                p = port or free_port()
                argv += ["--listen", "127.0.0.1:%d" % p]
            argv += [str(a) for a in args]
            proc, log_path = self.spawn(argv, "origin", env)
            origin = Origin(proc, p, data, log_path, tls=tls, tls_cert=tls_cert, tls_key=tls_key)
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
                # A process that leads its own group (an edge: nginx's master
                # and its workers) goes with the whole group, or its
                # children outlive the test.
                try:
                    if os.getpgid(proc.pid) == proc.pid:
                        os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.kill()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self.procs = []


def wait_healthy(server, timeout, method="GET", any_status=False, conn_timeout=1.0,
                 interval=0.02):
    """Polls METHOD /healthz on server.port until it answers 200 (any HTTP
    status with any_status) while server.proc runs; over HTTPS when the
    server has a tls client context (its attribute tls). Returns "ok",
    "exited N" or "timeout" (then with the last error, e.g. a certificate
    that did not verify, in parentheses)."""
    tls = getattr(server, "tls", None)
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        rc = server.proc.poll()
        if rc is not None:
            return "exited %d" % rc
        try:
            if tls is not None:
                c = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=conn_timeout,
                                                context=tls)
            else:
                c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=conn_timeout)
            try:
                c.request(method, "/healthz")
                r = c.getresponse()
                r.read()
            finally:
                c.close()
            if any_status or r.status == 200:
                return "ok"
            last_error = "status %d" % r.status
        except (OSError, http.client.HTTPException) as e:
            last_error = repr(e)
        time.sleep(interval)
    return "timeout (last: %s)" % last_error if last_error else "timeout"

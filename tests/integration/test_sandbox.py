"""The decoder child is a sandbox (publisher/media/README.md, "Isolation"):
it starts with an empty environment and only its input, pipe and log open,
in its own user and network namespace, under a seccomp allow-list. What an
exploited decoder would try (a socket, an exec, the store opened for
writing, the accounts file or the publisher's environment read) kills it
with SIGSYS, and the upload is refused like a bad recording: one line, exit
3 (415 from the API), nothing stored, no temporary file left.

The attempts are made by the child's test hook: the publisher's own
SAYIN_TEST_DECODER_CRASH, passed to the child as a hidden flag (an upload
reaches neither)."""

import os
import re
import signal
import time

import pytest

from helpers.api import author_add, error_code, start_api
from helpers.procs import EXIT_BAD_INPUT, wait_for
from helpers.store import store_counts

CANARY = "sayin-canary-3f9c2b7e"
SECRETS = {
    "AWS_SECRET_ACCESS_KEY": CANARY + "-aws",
    "SAYIN_CLOUDFLARE_API_TOKEN": CANARY + "-cloudflare",
    "SAYIN_FASTLY_API_KEY": CANARY + "-fastly",
}
# What a sanitizer build passes on (its runtime's options; no secret).
SANITIZER_VARS = {"ASAN_OPTIONS", "UBSAN_OPTIONS"}
SIGSYS_LINE = r"decoder crashed \(signal %d, [^)]*\): the sandbox stopped" % signal.SIGSYS


def private_tmp(tmp_path):
    d = tmp_path / "publisher-tmp"
    d.mkdir(exist_ok=True)
    return d


def hook_env(tmp_path, hook):
    env = dict(SECRETS, TMPDIR=str(private_tmp(tmp_path)))
    if hook is not None:
        env["SAYIN_TEST_DECODER_CRASH"] = hook
    return env


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(d))
    return out


def find_decoder(parent_pid, timeout=15.0):
    """The __decode child of parent_pid."""
    found = []

    def started():
        for c in children_of(parent_pid):
            try:
                with open("/proc/%d/cmdline" % c, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"__decode" in argv:
                found.append(c)
                return True
        return False

    assert wait_for(started, timeout=timeout), "no __decode child of %d" % parent_pid
    return found[0]


def status_of(pid):
    with open("/proc/%d/status" % pid) as f:
        return f.read()


def check_child_confined(pid):
    # Fixed at exec: the environment.
    with open("/proc/%d/environ" % pid, "rb") as f:
        environ = f.read()
    assert CANARY.encode() not in environ, environ
    names = {v.split(b"=", 1)[0].decode() for v in environ.split(b"\0") if v}
    assert names <= SANITIZER_VARS, "the decoder child got %s" % sorted(names)
    assert re.search(r"^NoNewPrivs:\s+1$", status_of(pid), re.M)
    # Set by the child before it touches the input (where the hang hook
    # waits): give it the moment it needs.
    assert wait_for(lambda: re.search(r"^Seccomp:\s+2$", status_of(pid), re.M), timeout=10), \
        status_of(pid)
    # Now, with its start-up done (a sanitizer runtime opens files for a
    # moment then), only the recording, the pipe and the log are open.
    fds = sorted(int(n) for n in os.listdir("/proc/%d/fd" % pid))
    assert fds == [0, 1, 2], "the decoder child has fds %s open" % fds
    assert os.readlink("/proc/%d/fd/1" % pid).startswith("pipe:")
    # Root may always have namespaces; the publisher degrades gracefully
    # elsewhere (logged), but here they must be on.
    for ns in ("user", "net"):
        assert os.readlink("/proc/%d/ns/%s" % (pid, ns)) != os.readlink("/proc/self/ns/" + ns), \
            "the decoder child shares the %s namespace" % ns


def check_refused(sayin, store, res, pattern, before, tmp_path):
    assert res.returncode == EXIT_BAD_INPUT, res.describe()
    assert res.stdout == ""
    lines = [l for l in res.stderr_lines if " info " not in l]
    assert len(lines) == 1, res.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert store_counts(store) == before, "the store changed"
    assert os.listdir(private_tmp(tmp_path)) == [], "temporary files left"


def test_cli_child_has_no_secret_and_only_its_fds(sayin, store, tmp_path, short_wav, lmdb_tools):
    sayin.post(store, "other", short_wav)
    before = store_counts(store)
    proc = sayin.popen_post(store, "victim", short_wav, args=["--decode-timeout-ms", "30000"],
                            env=hook_env(tmp_path, "hang"))
    child = find_decoder(proc.pid)
    check_child_confined(child)
    os.kill(child, signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_BAD_INPUT, (out, err)
    assert re.search(rb"decoder crashed \(signal 9", err), err
    assert store_counts(store) == before
    assert os.listdir(private_tmp(tmp_path)) == []


def test_cli_logs_the_sandbox_once(sayin, store, tmp_path, short_wav):
    res = sayin.post(store, "alice", short_wav, env=hook_env(tmp_path, None))
    lines = [l for l in res.stderr_lines if "decoder: sandbox:" in l]
    assert len(lines) == 1, res.stderr
    # A sanitizer build passes its runtime's options on when the runner has any.
    env = "not empty" if any(v in os.environ for v in SANITIZER_VARS) else "empty"
    assert lines[0].endswith("decoder: sandbox: seccomp on, no_new_privs on, "
                             "user+net namespace on, environment " + env), lines[0]


def attacks(tmp_path, store):
    accounts = tmp_path / "social-accounts.ini"
    if not accounts.exists():
        accounts.write_text("[alice]\nx_token_secret = %s-x\n" % CANARY)
        accounts.chmod(0o600)
    return {
        "socket": "socket",
        "exec": "exec",
        "store-rw": "open-rw:%s" % (store / "data.mdb"),
        "accounts": "read:%s" % accounts,
        "secret": "secret",
    }


@pytest.mark.parametrize("attack", ["socket", "exec", "store-rw", "accounts", "secret"])
def test_cli_forbidden_call_kills_the_decoder(sayin, store, tmp_path, short_wav, attack,
                                              lmdb_tools):
    sayin.post(store, "other", short_wav)
    before = store_counts(store)
    hook = attacks(tmp_path, store)[attack]
    res = sayin.post(store, "victim", short_wav, check=False, env=hook_env(tmp_path, hook))
    check_refused(sayin, store, res, SIGSYS_LINE, before, tmp_path)
    # The next upload, without the hook, goes through.
    assert sayin.post(store, "victim", short_wav, env=hook_env(tmp_path, None)).returncode == 0


def test_api_child_has_no_secret_and_forbidden_calls_are_refused(sayin, tmp_path, short_wav,
                                                                 lmdb_tools):
    data = tmp_path / "store"
    token = author_add(sayin, data, "alice", args=("--public-url", "https://cdn.test"))  # start_api's
    audio = short_wav.read_bytes()

    # The child of a server, caught while it waits.
    api = start_api(sayin, data, args=["--decode-timeout-ms", "30000"],
                    env=hook_env(tmp_path, "hang"))
    before = store_counts(data)
    conn = api.conn(timeout=60)
    conn.request("POST", "/v1/posts", headers=api.headers_for(token, [
        ("Content-Type", "audio/wav"), ("Content-Length", str(len(audio)))]), body=audio)
    child = find_decoder(api.proc.pid)
    check_child_confined(child)
    os.kill(child, signal.SIGKILL)
    r = conn.read_response()
    conn.close()
    assert r.status == 415 and error_code(r) == "undecodable_audio", (r, r.body)
    assert store_counts(data) == before
    api.stop()

    # Each attempt: 415, nothing stored, no upload or temporary file left.
    for attack, hook in sorted(attacks(tmp_path, data).items()):
        api = start_api(sayin, data, env=hook_env(tmp_path, hook))
        r = api.post_raw(token, audio)
        assert r.status == 415 and error_code(r) == "undecodable_audio", (attack, r, r.body)
        assert store_counts(data) == before, attack
        assert wait_for(lambda: api.uploads() == [], timeout=5), (attack, api.uploads())
        assert os.listdir(private_tmp(tmp_path)) == [], attack
        log = api.log()
        assert re.search(SIGSYS_LINE, log), (attack, log)
        api.stop()

    # Without a hook the same server publishes, and says once what applied.
    api = start_api(sayin, data, env=hook_env(tmp_path, None))
    gauge = 'sayin_decoder_sandbox_protection{protection="%s"}'
    protections = ("seccomp", "no_new_privs", "user_namespace", "network_namespace",
                   "empty_environment")
    assert [api.metrics().get(gauge % p) for p in protections] == [0] * 5
    for _ in range(2):
        r = api.post_raw(token, audio)
        assert r.status == 201, (r, r.body)
    assert wait_for(lambda: "decoder: sandbox:" in api.log(), timeout=5)
    log = api.log()
    assert log.count("decoder: sandbox: seccomp on, no_new_privs on, user+net namespace on") == 1, log
    assert [api.metrics().get(gauge % p) for p in protections] == [1] * 5
    assert CANARY not in log

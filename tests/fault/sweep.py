#!/usr/bin/python3
"""The fault-injection sweep (README.md here): runs each operation of the
publisher's fault build once per N with the Nth allocation failing
(SAYIN_FAULT=alloc:N) and, separately, the Nth write-like call failing with
EIO (io:N), for N = 1, 2, ... until a run completes without reaching N.
Each run starts from a copy of one store template and must end with a clean
error (or a success that absorbed the fault), a store that is the one before
or a whole later state (never half a transaction), no temporary file, and no
report from ASan, LeakSanitizer or UBSan. Prints one line per operation and
kind; exits 1 if any run broke a rule (each such run is described).

  sweep.py --bin build/fault/fault-bin/sayin-publisher [--only OP[:KIND],...]
           [--jobs 2] [--full] [--budget SECONDS] [--keep DIR]
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from helpers.api import multipart_body  # noqa: E402
from helpers.audio import write_wav_module  # noqa: E402
from helpers.fakes_cdn import BASE, Fake, edge_service  # noqa: E402
from helpers.fakes_social import FB_VERSION, FakeFacebook, FakeX  # noqa: E402
from helpers.procs import free_port  # noqa: E402

SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:exitcode=86:abort_on_error=0:handle_abort=1:"
                    "allocator_may_return_null=1",
    "LSAN_OPTIONS": "exitcode=87",
    "UBSAN_OPTIONS": "exitcode=88:print_stacktrace=1:halt_on_error=1",
}
SAN_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
             "SUMMARY: UndefinedBehaviorSanitizer", "AddressSanitizer:DEADLYSIGNAL")
SAN_EXITS = (86, 87, 88)
RUN_TIMEOUT = 60  # a hang; generous, as make check may share a busy machine
SETUP_TIMEOUT = 180
OPS = ("post", "api-publish", "api-delete", "push", "crosspost")
KINDS = ("alloc", "io")
# Files a store directory may hold: LMDB's two, the cross-poster's lock, and
# the (empty) uploads folder serve makes.
STORE_FILES = {"data.mdb", "lock.mdb", "crosspost.lock", "uploads"}


def canonical_dump(data):
    """{database: [(key hex, value hex)]} of every named database (mdb_dump
    -a): the store's content, independent of page layout."""
    out = subprocess.run(["mdb_dump", "-a", data], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError("mdb_dump -a %s: %s" % (data, out.stderr.strip()))
    dbs, name, body, in_header = {}, None, None, False
    for line in out.stdout.splitlines():
        if line.startswith("VERSION="):
            in_header, name, body = True, None, []
        elif in_header and line.startswith("database="):
            name = line[len("database="):]
        elif line == "HEADER=END":
            in_header = False
        elif line == "DATA=END":
            if name is not None:  # the main database maps names to page numbers
                dbs[name] = [(body[i], body[i + 1]) for i in range(0, len(body), 2)]
        elif not in_header:
            body.append(line.strip())
    return dbs


def records(dump, db):
    return {bytes.fromhex(k).decode("utf-8", "replace"): bytes.fromhex(v)
            for k, v in dump.get(db, [])}


def read_report(path):
    try:
        with open(path, "rb") as f:
            raw = f.read(40)
    except OSError:
        return None
    if len(raw) < 40:
        return None
    alloc, io, kind, at, version = struct.unpack("<5Q", raw)
    return {"alloc": alloc, "io": io, "fired": {1: "alloc", 2: "io"}.get(kind), "at": at,
            "ok": version == 1}


class Run:
    """One run's directory: a copy of the template, its own TMPDIR."""

    def __init__(self, world, op, kind, n):
        self.world, self.op, self.kind, self.n = world, op, kind, n
        self.dir = tempfile.mkdtemp(prefix="%s-%s-%s-" % (op, kind, n), dir=world.tmp)
        self.data = os.path.join(self.dir, "data")
        self.template = world.template_for(op)
        subprocess.run(["cp", "-a", "--sparse=always", self.template["dir"], self.data],
                       check=True)
        self.tmpdir = os.path.join(self.dir, "tmp")
        os.mkdir(self.tmpdir)
        self.report = os.path.join(self.dir, "report")
        self.problems = []
        self.outcome = None
        self.stderr = ""

    def env(self, fault=True):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAYIN_")}
        env.update(SAN_ENV)
        env["LC_ALL"] = "C.UTF-8"
        env["TMPDIR"] = self.tmpdir
        if fault and "SAYIN_FAULT_STACK" in os.environ:
            env["SAYIN_FAULT_STACK"] = "1"  # to see where a reported N fails
        if fault:
            env["SAYIN_FAULT"] = "count" if self.n == 0 else "%s:%d" % (self.kind, self.n)
            env["SAYIN_FAULT_REPORT"] = self.report
        return env

    def check_process(self, rc, stderr, what):
        """Sanitizer reports, signals, hangs."""
        self.stderr += stderr
        with open(os.path.join(self.dir, "%s.stderr" % what), "a") as f:
            f.write(stderr)
        if rc is None:
            self.problems.append("%s hung (killed after %d s)" % (what, RUN_TIMEOUT))
        elif rc < 0:
            self.problems.append("%s died of signal %d" % (what, -rc))
        elif rc in SAN_EXITS or any(m in stderr for m in SAN_MARKS):
            self.problems.append("%s: sanitizer report (exit %d)" % (what, rc))

    def check_files(self):
        extra = sorted(set(os.listdir(self.data)) - STORE_FILES)
        uploads = os.path.join(self.data, "uploads")
        if os.path.isdir(uploads):
            extra += ["uploads/" + f for f in os.listdir(uploads)]
        extra += ["$TMPDIR/" + f for f in os.listdir(self.tmpdir)]
        if extra:
            self.problems.append("files left: %s" % ", ".join(extra))

    def finish(self):
        rep = read_report(self.report)
        self.fired = rep is not None and rep["fired"] is not None
        self.counts = rep
        if rep is None or not rep["ok"]:
            self.problems.append("no fault report (the shim did not run?)")
        self.check_files()
        try:
            self.after = canonical_dump(self.data)
        except RuntimeError as e:
            self.problems.append("store unreadable: %s" % e)
            self.after = None
        if self.after is not None and not self.problems:
            self.world.check_store(self)
        if not self.world.keep and not self.problems:
            shutil.rmtree(self.dir, ignore_errors=True)
        return self

    def describe(self):
        return "%s %s:%d -> %s\n    %s\n    stderr: %s\n    dir: %s" % (
            self.op, self.kind, self.n, self.outcome, "\n    ".join(self.problems),
            self.stderr.strip()[-1500:].replace("\n", "\n      "), self.dir)


def run_cli(run, argv, ok_codes=(0,)):
    try:
        p = subprocess.run([run.world.bin] + argv, capture_output=True, text=True,
                           errors="replace", env=run.env(), timeout=RUN_TIMEOUT,
                           cwd=run.dir, stdin=subprocess.DEVNULL)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = None, "", (e.stderr or b"").decode("utf-8", "replace")
    run.check_process(rc, err, argv[0])
    run.exit = rc
    run.stdout = out
    if rc is not None and rc >= 0 and rc not in SAN_EXITS:
        if rc in ok_codes:
            run.outcome = "ok"
        else:
            run.outcome = "error"
            lines = [l for l in (out + err).splitlines() if l.strip()]
            if not lines:
                run.problems.append("exit %d without a message" % rc)
    return run


def wait_log(path, proc, needle, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, errors="replace") as f:
                if needle in f.read():
                    return True
        except OSError:
            pass
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def run_api(run, request):
    """serve on the run's store; request(conn) -> (status, body); SIGTERM."""
    port = free_port()
    log_path = os.path.join(run.dir, "serve.log")
    argv = [run.world.bin, "serve", "--data", run.data, "--api-listen", "127.0.0.1:%d" % port,
            "--public-url", BASE, "--workers", "1", "--queue", "1"]
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=run.env(), cwd=run.dir)
    run.answer = None
    try:
        if wait_log(log_path, proc, "serve: ingest API on"):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=RUN_TIMEOUT)
            try:
                status, body = request(c)
                run.answer = (status, body)
            except (OSError, http.client.HTTPException) as e:
                run.answer = (None, str(e))
            finally:
                c.close()
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open(log_path, errors="replace") as f:
        log = f.read()
    run.check_process(rc, log, "serve")
    run.exit = rc
    if run.answer is None:
        # serve did not start: a clean refusal is an exit != 0 with a message.
        run.outcome = "error (serve did not start)"
        if rc == 0:
            run.problems.append("serve exited 0 without serving")
        elif rc is not None and rc > 0 and "sayin-publisher" not in log and " error " not in log:
            run.problems.append("serve exited %d without a message" % rc)
        return run
    if rc not in (0, None) and rc > 0 and rc not in SAN_EXITS:
        run.problems.append("serve exited %d after SIGTERM" % rc)
    status, body = run.answer
    if status is None:
        run.outcome = "no answer"
        run.problems.append("the connection ended without an answer: %s" % body)
    elif 200 <= status < 300:
        run.outcome = "ok"
    elif status >= 500:
        run.outcome = "error %d" % status
        # The API answers JSON; the HTTP core, when a connection's own memory
        # cannot be had, answers from static storage in plain text.
        core_oom = status == 503 and body.startswith(b"server out of memory") \
            if isinstance(body, bytes) else body.startswith("server out of memory")
        try:
            if not core_oom:
                msg = json.loads(body)["error"]["message"]
                assert isinstance(msg, str) and msg
        except (ValueError, KeyError, TypeError, AssertionError):
            run.problems.append("answer %d without a JSON error message: %r" % (status,
                                                                                body[:200]))
    else:
        run.outcome = "answer %d" % status
        run.problems.append("answer %d (%r) to a fault, expected 2xx or 5xx" % (status,
                                                                                 body[:200]))
    return run


class World:
    """The template store, the fakes and the operations."""

    def __init__(self, bin_path, tmp, keep):
        self.bin = bin_path
        self.tmp = tmp
        self.keep = keep
        self.wav = os.path.join(tmp, "voice.wav")
        write_wav_module(self.wav, 8000, 1, seconds=0.3)
        self.edge = Fake("edge", edge_service)
        self.x = self.new_x()
        self.fb = FakeFacebook("appsecretfault")
        self.fb.add_page("ann", "100000000000000", "EAABfaulttoken")
        self.accounts = os.path.join(tmp, "accounts.ini")
        with open(self.accounts, "w") as f:
            f.write("[ann.x]\nenabled = true\nconsumer_key = ck-fault\n"
                    "consumer_secret = cs-fault\naccess_token = 1000-tokfault\n"
                    "access_token_secret = ts-fault\n"
                    "[ann.facebook]\nenabled = false\npage_id = 100000000000000\n"
                    "page_access_token = EAABfaulttoken\napp_secret = appsecretfault\n")
        os.chmod(self.accounts, 0o600)
        self._make_template()

    def close(self):
        self.edge.stop()
        self.x.close()
        self.fb.close()

    def cli(self, argv, data=None, check=True):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAYIN_")}
        env.update(SAN_ENV)
        p = subprocess.run([self.bin] + argv, capture_output=True, text=True, env=env,
                           timeout=SETUP_TIMEOUT, cwd=self.tmp, stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise RuntimeError("%s: exit %d\n%s" % (argv, p.returncode, p.stderr))
        return p

    def post_args(self, data):
        return ["post", "--data", data, "--author", "ann", "--create-author", "--text", "fault sweep",
                "--public-url", BASE, "--map-size", "64M", "--waveform-points", "16",
                "--social-accounts", self.accounts, "--varnish-edges", self.edge.url, self.wav]

    def _make_template(self):
        """One author with a token and one post, whose CDN purge and
        cross-post to X wait in the outbox."""
        self.template = os.path.join(self.tmp, "template")
        # The first write records the site (issue 14): the post's settings.
        out = self.cli(["author", "add", "ann", "--name", "Ann", "--data", self.template,
                        "--map-size", "64M", "--public-url", BASE,
                        "--waveform-points", "16"]).stdout
        self.token = out.strip().splitlines()[-1].strip()
        self.post_id = json.loads(self.cli(self.post_args(self.template)).stdout)["id"]
        before = canonical_dump(self.template)
        self.templates = {"default": {"dir": self.template, "before": before,
                                      "outbox": records(before, "outbox")}}
        # The cross-post waits for the CDN purge (its job runs "after" it):
        # crosspost starts from the store after a push.
        self.template_pushed = os.path.join(self.tmp, "template-pushed")
        subprocess.run(["cp", "-a", "--sparse=always", self.template, self.template_pushed],
                       check=True)
        self.cli(["push", "--data", self.template_pushed, "--public-url", BASE,
                  "--varnish-edges", self.edge.url])
        before = canonical_dump(self.template_pushed)
        self.templates["crosspost"] = {"dir": self.template_pushed, "before": before,
                                       "outbox": records(before, "outbox")}
        if len(self.templates["crosspost"]["outbox"]) != 1:
            raise RuntimeError("after a push, the outbox should hold the cross-post only")

    def template_for(self, op):
        return self.templates["crosspost" if op == "crosspost" else "default"]

    # -- the operations: each runs once and sets run.outcome, run.problems
    def op_post(self, run):
        return run_cli(run, self.post_args(run.data))

    def op_api_publish(self, run):
        ctype, body = multipart_body([("audio", open(self.wav, "rb").read(), "v.wav",
                                       "audio/wav"), ("text", "fault sweep", None, None)])

        def request(c):
            c.request("POST", "/v1/posts", body=body,
                      headers={"Authorization": "Bearer " + self.token, "Content-Type": ctype,
                               "Content-Length": str(len(body))})
            r = c.getresponse()
            return r.status, r.read().decode("utf-8", "replace")
        return run_api(run, request)

    def op_api_delete(self, run):
        def request(c):
            c.request("DELETE", "/v1/posts/" + self.post_id,
                      headers={"Authorization": "Bearer " + self.token})
            r = c.getresponse()
            return r.status, r.read().decode("utf-8", "replace")
        return run_api(run, request)

    def op_push(self, run):
        return run_cli(run, ["push", "--data", run.data, "--public-url", BASE,
                             "--varnish-edges", self.edge.url, "--outbox-backoff-ms", "100"])

    def new_x(self):
        x = FakeX("ck-fault", "cs-fault")
        x.add_user("ann", "1000-tokfault", "ts-fault", "1000")
        return x

    def op_crosspost(self, run):
        # Each run its own X: the cross-poster reconciles with the account's
        # history, so a shared X would change what later runs do.
        x = self.new_x()
        try:
            run_cli(run, ["crosspost", "--data", run.data, "--social-accounts", self.accounts,
                          "--x-api-url", x.url, "--facebook-api-url", self.fb.url,
                          "--facebook-api-version", FB_VERSION, "--crosspost-timeout-ms",
                          "5000", "--outbox-backoff-ms", "100"])
            run.x_posts = len(x.posts_for("%s/p/%s" % (BASE, self.post_id)))
        finally:
            x.close()
        if run.x_posts > 1:
            run.problems.append("X got %d posts of one post" % run.x_posts)
        return run

    # -- the store after a run
    def check_store(self, run):
        """The store is the one before, or whole later states of the
        operation's transactions; never half of one."""
        before, after = run.template["before"], run.after
        changed = sorted(db for db in set(before) | set(after)
                         if before.get(db, []) != after.get(db, []))
        run.changed = changed
        if not changed:
            if run.outcome == "ok" and run.op in ("post", "api-publish", "api-delete"):
                run.problems.append("answered success, but the store did not change")
            return
        if run.op in ("post", "api-publish"):
            self.check_published(run, changed)
        elif run.op == "api-delete":
            self.check_deleted(run, changed)
        else:
            self.check_outbox(run, changed)

    def check_published(self, run, changed):
        b, a = records(run.template["before"], "posts"), records(run.after, "posts")
        new = set(a) - set(b)
        if len(new) != 1 or set(b) - set(a):
            run.problems.append("store changed (%s) but not by exactly one new post"
                                % ", ".join(changed))
            return
        if run.outcome != "ok":
            run.problems.append("the post was committed but the operation reported an error")
        pid = new.pop()
        rec = json.loads(a[pid])
        names = records(run.after, "names")
        for path in ("/p/" + pid, "/u/ann/feed.json"):
            if path not in names:
                run.problems.append("committed post %s lacks the name %s" % (pid, path))
        if rec.get("id", pid) != pid:
            run.problems.append("post record of %s names id %r" % (pid, rec.get("id")))

    def check_deleted(self, run, changed):
        a = records(run.after, "posts")
        if self.post_id in a:
            run.problems.append("store changed (%s) but the post is still there"
                                % ", ".join(changed))
            return
        if run.outcome != "ok":
            run.problems.append("the deletion was committed but the answer was an error")
        if "/p/" + self.post_id in records(run.after, "names"):
            run.problems.append("deleted post's page /p/%s is still named" % self.post_id)

    def check_outbox(self, run, changed):
        """push and crosspost change only the outbox (leases, attempts, a
        finished job removed), the outbox's counters and, for a cross-post,
        the record of the remote post."""
        allowed = {"outbox", "meta", "crossposts"}
        if set(changed) - allowed:
            run.problems.append("%s changed %s" % (run.op, ", ".join(sorted(set(changed)
                                                                            - allowed))))
        a = records(run.after, "outbox")
        before_outbox = run.template["outbox"]
        for key, raw in a.items():
            if key not in before_outbox:
                run.problems.append("a new outbox job %s appeared" % key)
                continue
            try:
                job = json.loads(raw)
                old = json.loads(before_outbox[key])
            except ValueError:
                run.problems.append("outbox job %s is not JSON" % key)
                continue
            for field in ("payload", "kind", "target", "network", "post"):
                if job.get(field) != old.get(field):
                    run.problems.append("outbox job %s changed its %s" % (key, field))
        gone = set(before_outbox) - set(a)
        if run.op == "crosspost":
            done = records(run.after, "crossposts")
            for key in gone:
                job = json.loads(before_outbox[key])
                if json.dumps(job).find("crosspost") >= 0 and not done:
                    run.problems.append("cross-post job %s finished with no record of the "
                                        "remote post" % key)


def plan(total, full, stride, edge):
    """The N to run: every one with full, else every stride-th plus the
    first and last `edge` (start-up, and the commit and what follows)."""
    if full or stride <= 1:
        return list(range(1, total + 2))
    ns = set(range(1, min(edge, total) + 1)) | set(range(max(1, total - edge + 1), total + 2))
    ns |= set(range(1, total + 1, stride))
    return sorted(ns)


def sweep(world, op, kind, args, out):
    fn = getattr(world, "op_" + op.replace("-", "_"))
    t0 = time.monotonic()
    base = fn(Run(world, op, kind, 0)).finish()
    if base.problems or base.outcome != "ok" or base.counts is None:
        out.append(base)
        print("%-12s %-5s baseline failed: %s" % (op, kind, base.describe()), flush=True)
        return None
    total = base.counts[kind]
    per_run = time.monotonic() - t0
    stride = 1
    if not args.full and args.budget > 0:
        runs_fit = max(1, int(args.budget * args.jobs / max(per_run, 0.05)))
        stride = max(1, -(-total // runs_fit))
    ns = plan(total, args.full, stride, args.edge)
    if args.n:
        ns = [int(x) for x in args.n.split(",")]
    print("%-12s %-5s baseline: %d calls, %.1f s; %d runs planned" % (op, kind, total, per_run,
                                                                     len(ns)), flush=True)
    outcomes, bad, fired, n_run = {}, [], 0, 0
    last_n = 0
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
        pending = {}
        it = iter(ns)
        stop = False
        while True:
            while not stop and len(pending) < args.jobs:
                n = next(it, None)
                if n is None:
                    stop = True
                    break
                pending[ex.submit(lambda n=n: fn(Run(world, op, kind, n)).finish())] = n
            if not pending:
                break
            done, _ = concurrent.futures.wait(pending, return_when="FIRST_COMPLETED")
            for f in done:
                n = pending.pop(f)
                r = f.result()
                n_run += 1
                last_n = max(last_n, n)
                label = str(r.outcome) if r.fired else "not reached"
                outcomes[label] = outcomes.get(label, 0) + 1
                if r.fired:
                    fired += 1
                elif n > total:
                    stop = True  # the operation completed without reaching N
                if r.problems:
                    bad.append(r)
                    if args.verbose:
                        print("  %s %s:%d %s: %s" % (op, kind, n, r.outcome,
                                                     "; ".join(r.problems)), flush=True)
    secs = time.monotonic() - t0
    out.extend(bad)
    mode = "every N" if stride == 1 else "stride %d + first/last %d" % (stride, args.edge)
    print("%-12s %-5s total %5d  N 1..%d (%s): %d runs, %d faults hit, %.0f s  outcomes %s  "
          "PROBLEMS %d" % (op, kind, total, last_n, mode, n_run, fired, secs,
                           json.dumps(outcomes, sort_keys=True), len(bad)), flush=True)
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--only", default="", help="OP[:KIND],... (ops: %s)" % ", ".join(OPS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="every N, whatever it costs")
    ap.add_argument("--budget", type=float, default=0,
                    help="seconds of wall time per operation and kind; a stride keeps to it "
                         "(0: every N)")
    ap.add_argument("--edge", type=int, default=60,
                    help="with a stride, the first and last EDGE N are all run")
    ap.add_argument("--n", default="", help="N1,N2,...: run only these N (to reproduce)")
    ap.add_argument("--verbose", "-v", action="store_true", help="print each bad run")
    ap.add_argument("--keep", action="store_true", help="keep every run's directory")
    ap.add_argument("--max-report", type=int, default=8)
    args = ap.parse_args()
    todo = []
    for op in OPS:
        for kind in KINDS:
            if args.only:
                sel = args.only.split(",")
                if op not in sel and "%s:%s" % (op, kind) not in sel:
                    continue
            todo.append((op, kind))
    tmp = tempfile.mkdtemp(prefix="sayin-fault-")
    # A copy, so that relinking the build during a sweep changes nothing.
    binary = os.path.join(tmp, "sayin-publisher")
    shutil.copy2(args.bin, binary)
    world = World(binary, tmp, args.keep)
    print("sweep: template %s: post %s, outbox %d jobs" % (tmp, world.post_id,
                                                           len(world.templates["default"]["outbox"])),
          flush=True)
    bad = []
    t0 = time.monotonic()
    try:
        for op, kind in todo:
            sweep(world, op, kind, args, bad)
    finally:
        world.close()
    print("sweep: %.0f s in all" % (time.monotonic() - t0))
    if bad:
        print("\n%d runs broke a rule; the first %d:" % (len(bad), min(len(bad),
                                                                        args.max_report)))
        for r in bad[:args.max_report]:
            print(r.describe())
        print("\nrun directories kept under %s" % tmp)
        return 1
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

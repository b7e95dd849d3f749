"""The world of one cross-posting test: a store, an accounts file, fake X and
Facebook (helpers/fakes_social.py) and the publisher's commands against
them; `status` parsed; and what a fitted tweet must look like."""

import os
import re
import secrets
import subprocess
import time

from helpers.audio import write_wav_module
from helpers.fakes_social import FB_VERSION, FakeFacebook, FakeX, enc, is_cjk, x_weighted_length
from helpers.procs import clean_env
from helpers.store import file_data

PUBLIC = "https://voices.example.com"


JOB_RE = re.compile(r"^(\d{20})\s+(x|facebook)\s+(due|backoff|leased|PARKED)\s+crosspost\s+(\S+)"
                    r"\s+attempts (\d+)\s*(?:next in [0-9.]+ s\s*)?(?:last error: (.*))?$")
DONE_RE = re.compile(r"^  (\S+)\s+(x|facebook)\s+(\S*)\s*(\(found by reconciling\))?\s*$")
WAITING_RE = re.compile(r"^outbox: (\d+) jobs waiting \((\d+) leased\), (\d+) parked")
COUNTS_RE = re.compile(r"posted (\d+), found already posted (\d+), failed (\d+) \(parked (\d+)\)")


class Status:
    def __init__(self, text):
        self.text = text
        self.jobs = {}   # (post, network) -> dict
        self.done = {}   # (post, network) -> dict
        self.waiting = self.parked = None
        in_done = False
        for line in text.splitlines():
            m = WAITING_RE.match(line)
            if m:
                self.waiting, self.parked = int(m.group(1)), int(m.group(3))
                continue
            if line.startswith("cross-posts done:"):
                in_done = True
                continue
            if in_done:
                m = DONE_RE.match(line)
                assert m, "unparsed status line %r in\n%s" % (line, text)
                self.done[(m.group(1), m.group(2))] = {"url": m.group(3),
                                                       "found": bool(m.group(4))}
                continue
            m = JOB_RE.match(line)
            if m:
                self.jobs[(m.group(4), m.group(2))] = {
                    "id": m.group(1), "state": m.group(3), "attempts": int(m.group(5)),
                    "error": m.group(6) or ""}


def counts_of(out):
    m = COUNTS_RE.search(out)
    assert m, "no counts line in %r" % out
    return tuple(int(g) for g in m.groups())


def awkward_secret(prefix, n=18):
    # Characters that must be percent-encoded in the OAuth key and the form.
    return prefix + secrets.token_urlsafe(n) + "+/=~%"


class World:
    """One test's store, accounts file, fake networks and commands."""

    def __init__(self, sayin, tmp_path, handles=("ann",), seed=1):
        self.sayin = sayin
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.accounts_path = tmp_path / "social-accounts.ini"
        self.wav = tmp_path / "voice.wav"
        write_wav_module(self.wav, 8000, 1, seconds=0.1)
        self.consumer_key = "ck" + secrets.token_hex(10)
        self.consumer_secret = awkward_secret("cs-")
        self.app_secret = secrets.token_hex(16)
        self.x = FakeX(self.consumer_key, self.consumer_secret, seed=seed)
        self.fb = FakeFacebook(self.app_secret, seed=seed + 1)
        self.accounts = {}
        self.outputs = []
        self.n_logs = 0
        for i, handle in enumerate(handles):
            self.add_account(handle, i)
        self.enabled = {h: ("x", "facebook") for h in handles}
        self.write_accounts()

    def add_account(self, handle, i):
        user_id = str(1000000 + i)
        token = "%s-%s" % (user_id, secrets.token_urlsafe(24))
        tsecret = awkward_secret("ts-")
        page_id = str(100000000000000 + i)
        page_token = "EAAB" + secrets.token_urlsafe(40)
        self.x.add_user(handle, token, tsecret, user_id)
        self.fb.add_page(handle, page_id, page_token)
        self.accounts[handle] = {
            "x": {"consumer_key": self.consumer_key, "consumer_secret": self.consumer_secret,
                  "access_token": token, "access_token_secret": tsecret},
            "facebook": {"page_id": page_id, "page_access_token": page_token,
                         "app_secret": self.app_secret}}

    def secrets(self):
        out = {self.consumer_secret, self.app_secret}
        for acc in self.accounts.values():
            out |= {acc["x"]["access_token"], acc["x"]["access_token_secret"],
                    acc["facebook"]["page_access_token"]}
        return out

    def write_accounts(self, override=None, mode=0o600):
        """override: {(handle, network): {key: value}}."""
        override = override or {}
        lines = []
        for handle, nets in self.accounts.items():
            for net, keys in nets.items():
                lines.append("[%s.%s]" % (handle, net))
                lines.append("enabled = %s" % ("true" if net in self.enabled.get(handle, ())
                                                else "false"))
                vals = dict(keys, **override.get((handle, net), {}))
                lines += ["%s = %s" % kv for kv in vals.items()]
        if self.accounts_path.exists():
            os.chmod(self.accounts_path, 0o600)
        self.accounts_path.write_text("\n".join(lines) + "\n")
        os.chmod(self.accounts_path, mode)

    def close(self):
        self.x.close()
        self.fb.close()

    # -- commands
    def run(self, args, env=None, timeout=60):
        r = self.sayin.run(self.sayin.publisher, [str(a) for a in args], env=env,
                           timeout=timeout)
        self.outputs.append(r.stdout + r.stderr)
        return r

    def post(self, handle, text, crosspost=None, env=None):
        args = ["--social-accounts", self.accounts_path, "--public-url", PUBLIC,
                "--aac-fallback", "off", "--waveform-points", "10"]
        if crosspost is not None:
            args += ["--crosspost", crosspost]
        r = self.sayin.post(self.data, handle, self.wav, text=text, args=args, env=env)
        self.outputs.append(r.stdout + r.stderr)
        assert r.json["url"] == "%s/p/%s" % (PUBLIC, r.json["id"]), r.json
        return r.json

    def crosspost_args(self, timeout_ms=1000, lease_ms=3000, backoff_ms=100, max_attempts=10,
                       extra=()):
        return ["crosspost", "--data", self.data, "--social-accounts", self.accounts_path,
                "--x-api-url", self.x.url, "--facebook-api-url", self.fb.url,
                "--facebook-api-version", FB_VERSION, "--crosspost-timeout-ms", timeout_ms,
                "--outbox-lease-ms", lease_ms, "--outbox-backoff-ms", backoff_ms,
                "--outbox-max-attempts", max_attempts] + list(extra)

    def crosspost(self, env=None, timeout=60, **kw):
        return self.run(self.crosspost_args(**kw), env=env, timeout=timeout)

    def popen_crosspost(self, **kw):
        self.n_logs += 1
        path = self.tmp / ("crosspost-%d.log" % self.n_logs)
        with open(path, "wb") as logf:
            p = subprocess.Popen([self.sayin.publisher] + [str(a) for a in
                                                           self.crosspost_args(**kw)],
                                 stdout=logf, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=clean_env(),
                                 cwd=self.sayin.workdir)
        p.log_path = path
        self.sayin.procs.append(p)
        return p

    def output_of(self, p):
        text = p.log_path.read_text(errors="replace")
        if text not in self.outputs:
            self.outputs.append(text)
        return text

    def status(self):
        r = self.run(["status", "--data", self.data])
        # Exit 3 exactly when a job is parked (it needs `retry`).
        m = re.search(r"^outbox: .* (\d+) parked", r.stdout, re.M)
        assert m and r.returncode == (3 if int(m.group(1)) else 0), (r.returncode, r.stdout,
                                                                      r.stderr)
        return Status(r.stdout)

    def retry_all(self):
        r = self.run(["retry", "--all", "--data", self.data])
        assert r.returncode == 0, r.stderr
        return r.stdout

    def until_done(self, deadline_s=15.0, interval=0.15, **kw):
        """Runs crosspost like cron (more often) until no job waits."""
        deadline = time.monotonic() + deadline_s
        while True:
            r = self.crosspost(**kw)
            assert r.returncode in (0, 1), r.stdout + r.stderr
            st = self.status()
            if st.waiting == 0:
                return st
            assert time.monotonic() < deadline, "jobs still waiting:\n" + st.text
            time.sleep(interval)

    def assert_no_secret_anywhere(self, extra_files=()):
        texts = list(self.outputs)
        for p in list(self.tmp.glob("*.log")) + list(extra_files):
            texts.append(p.read_text(errors="replace"))
        for s in self.secrets():
            for t in texts:
                assert s not in t, "a secret (%s...) appears in:\n%s" % (s[:6], t[-3000:])
                assert enc(s) not in t, "an encoded secret appears in:\n%s" % t[-3000:]
        # Nor in the store: jobs carry the post, never the account.
        for root, _, files in os.walk(self.data):
            for name in files:
                raw = file_data(os.path.join(root, name))
                for s in self.secrets():
                    assert s.encode() not in raw, "a secret is stored in %s" % name

def worlds(sayin, tmp_path):
    """The `world` fixture (conftest.py): yields make(handles, seed), which
    builds a World; at teardown stops the workers first (a held request then
    finds its client gone), then the fake networks."""
    worlds = []

    def make(handles=("ann",), seed=1):
        w = World(sayin, tmp_path, handles, seed)
        worlds.append(w)
        return w
    yield make
    sayin.cleanup()
    for w in worlds:
        w.close()


def one_tweet(w, url):
    ts = w.x.posts_for(url)
    assert len(ts) == 1, "X has %d posts for %s: %r" % (len(ts), url, ts)
    return ts[0]


def one_fb_post(w, url):
    ps = w.fb.posts_for(url)
    assert len(ps) == 1, "Facebook has %d posts for %s: %r" % (len(ps), url, ps)
    return ps[0]


LONG_TEXT = ("Backstage at the Paris show tonight, and I recorded this for everyone who could "
             "not make it: thank you for twenty years of songs, letters & late nights. "
             "Special thanks to the crew (100% legends), to my band, and to you all "
             "\U0001F3A4 \u2014 see you on the road next spring, "
             "\u6771\u4eac\u3067\u4f1a\u3044\u307e\u3057\u3087\u3046\u3002 "
             "More dates soon, stay tuned and keep singing along with us every night!")
CJK_TEXT = ("\u4eca\u591c\u306e\u30e9\u30a4\u30d6\u3001\u672c\u5f53\u306b\u3042\u308a\u304c"
            "\u3068\u3046\u3054\u3056\u3044\u307e\u3057\u305f" * 9)


def check_fitted(tweet_raw, original, url):
    assert x_weighted_length(tweet_raw) <= 280, (x_weighted_length(tweet_raw), tweet_raw)
    assert tweet_raw.endswith(" " + url), tweet_raw
    body = tweet_raw[:-len(url) - 1]
    assert body.endswith("\u2026"), "a long text ends with an ellipsis: %r" % body
    prefix = body[:-1].rstrip()
    assert prefix and original.startswith(prefix), (prefix, original)
    rest = original[len(prefix):]
    assert rest[0].isspace() or is_cjk(prefix[-1]) or is_cjk(rest[0]), \
        "cut inside a word: ...%r | %r..." % (prefix[-15:], rest[:15])
    # Close to the limit: X's counting was used, not bytes or a blunt cut.
    assert x_weighted_length(tweet_raw) > 240, x_weighted_length(tweet_raw)

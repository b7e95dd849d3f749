"""Cross-posting to X and Facebook (issue 7), through the real binaries.

Local fake X and Facebook APIs (standard library, threads, loopback ports
picked by the kernel) check every request as the real services do: X
recomputes the OAuth 1.0a signature from scratch (RFC 5849 base string,
RFC 3986 encoding, HMAC-SHA1 keyed with the consumer and token secrets) and
answers 401 when it does not match; Facebook recomputes appsecret_proof
(HMAC-SHA256 of the token keyed with the app secret) and answers error 100.
Both keep timelines for the worker's reconcile lookups and inject faults on
demand: 429 with x-rate-limit-reset, 500, a hang past the client timeout,
X's duplicate-content 403, Facebook's 190 and rate limit 4, and "take the
post, then fail to answer" (reset, 500, or hold the answer until the test
SIGKILLs the worker), the crash window between the remote call and the
record.

Run: SAYIN_BIN=$PWD/bin /usr/bin/python3 -m pytest -q -n 2 tests/integration/test_crosspost.py
"""

import base64
import concurrent.futures
import hashlib
import hmac
import http.server
import json
import os
import random
import re
import secrets
import signal
import socket
import socketserver
import struct
import subprocess
import threading
import time
import urllib.parse

import pytest

from helpers.api import author_add, start_api
from helpers.audio import write_wav_module
from helpers.procs import clean_env, wait_for
from helpers.store import file_data

PUBLIC = "https://voices.example.com"
FB_VERSION = "v19.0"


# ------------------------------------------------------------------ X's counting

def _x_weight(ch):
    cp = ord(ch)
    if cp <= 0x10FF or 0x2000 <= cp <= 0x200D or 0x2010 <= cp <= 0x201F or \
            0x2032 <= cp <= 0x2037:
        return 1
    return 2


# A link X turns into a t.co link: http(s)://host.tld..., without trailing punctuation.
X_URL_RE = re.compile(r"https?://[A-Za-z0-9.-]+\.[A-Za-z]{2,}(?:[/?#][!-~]*[A-Za-z0-9/_=#-])?")


def x_weighted_length(text):
    """twitter-text v3 weights for the texts these tests use (single code
    point emoji only): a link 23, code points of the light ranges 1, others 2."""
    n, pos = 0, 0
    for m in X_URL_RE.finditer(text):
        n += sum(_x_weight(c) for c in text[pos:m.start()]) + 23
        pos = m.end()
    return n + sum(_x_weight(c) for c in text[pos:])


def is_cjk(ch):
    cp = ord(ch)
    return 0x3000 <= cp <= 0x9FFF or 0xAC00 <= cp <= 0xD7AF or 0xF900 <= cp <= 0xFAFF


def enc(s):
    """RFC 3986 percent-encoding as RFC 5849 section 3.6 wants (UTF-8 first)."""
    return urllib.parse.quote(s, safe="-._~")


# ------------------------------------------------------------------ fake networks

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.fake._dispatch(self, "GET")

    def do_POST(self):
        self.server.fake._dispatch(self, "POST")

    def do_DELETE(self):
        self.server.fake._dispatch(self, "DELETE")


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # a killed worker resets its connections: expected here


DROP = object()   # a handler's answer: reset the connection (RST), answer nothing
CLOSE = object()  # close it (FIN), answer nothing: what a crashed server process does


class FakeNetwork:
    """A threaded loopback HTTP server with a request log, queued faults and
    random ("chaos") faults on the create endpoint."""

    def __init__(self, seed=1):
        self.lock = threading.RLock()
        self.log = []        # every request, in arrival order
        self.faults = []     # queued: {kind, endpoint, account, times, ...}
        self.chaos = {}      # kind -> probability, create endpoint only
        self.chaos_lookup = {}
        self.rng = random.Random(seed)
        self.holds = []      # events of requests held open
        self.auth_failures = []  # why requests were refused as unauthenticated
        self.delay = 0           # seconds every answer waits
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.fake = self
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def close(self):
        self.release_all()
        self.server.shutdown()
        self.server.server_close()

    # -- faults
    def inject(self, kind, endpoint="create", account=None, times=1, **kw):
        f = dict(kind=kind, endpoint=endpoint, account=account, times=times)
        f.update(kw)
        with self.lock:
            self.faults.append(f)

    def _fault(self, endpoint, account):
        with self.lock:
            for f in self.faults:
                if f["endpoint"] in (endpoint, "lookup" if endpoint != "create" else None) \
                        and f["account"] in (None, account):
                    f["times"] -= 1
                    if f["times"] <= 0:
                        self.faults.remove(f)
                    return f
            table = self.chaos if endpoint == "create" else self.chaos_lookup
            r = self.rng.random()
            for kind, p in table.items():
                if r < p:
                    return {"kind": kind, "seconds": 3.0, "reset_in": 1}
                r -= p
        return None

    def holding(self):
        with self.lock:
            return len(self.holds)

    def release_all(self):
        with self.lock:
            for ev in self.holds:
                ev.set()

    def hold(self, seconds):
        """Blocks the handler until release_all() or seconds pass."""
        ev = threading.Event()
        with self.lock:
            self.holds.append(ev)
        try:
            ev.wait(seconds)
        finally:
            with self.lock:
                self.holds.remove(ev)

    def history(self, url):
        """The create requests that carried url, and the lookups around them."""
        with self.lock:
            log = list(self.log)
        mine = [e for e in log if url.encode() in e["body"] or
                enc(url).encode() in e["body"]]
        t0, t1 = (mine[0]["t"] - 0.01, mine[-1]["t"] + 3) if mine else (0, 0)
        return "\n".join("%.3f port %d %s %s %s %s fault=%s created=%s" % (
            e["t"] - t0, e["peer"], e["method"], e["path"], e["account"], e["status"],
            e.get("fault"),
            e.get("created")) for e in log if t0 <= e["t"] <= t1 and
            (e in mine or e["endpoint"] != "create") and
            e["account"] == (mine[0]["account"] if mine else None))

    def requests(self, endpoint=None, account=None):
        with self.lock:
            return [e for e in self.log if (endpoint is None or e["endpoint"] == endpoint)
                    and (account is None or e["account"] == account)]

    # -- HTTP
    def _dispatch(self, h, method):
        u = urllib.parse.urlsplit(h.path)
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else b""
        entry = {"t": time.time(), "method": method, "path": u.path, "query": u.query,
                 "body": body, "headers": dict(h.headers.items()), "status": None,
                 "endpoint": None, "account": None, "peer": h.client_address[1]}
        with self.lock:
            self.log.append(entry)
        if self.delay:
            time.sleep(self.delay)
        try:
            answer = self.handle(h, method, u.path, u.query, body, entry)
        except Exception as e:  # a bug in the fake: say so loudly
            answer = (599, {}, {"fake_error": repr(e)})
        if answer is DROP or answer is CLOSE:
            entry["status"] = "dropped"
            try:
                if answer is DROP:
                    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                            struct.pack("ii", 1, 0))
                h.connection.close()
            except OSError:
                pass
            h.close_connection = True
            return
        status, headers, doc = answer
        entry["status"] = status
        data = json.dumps(doc).encode()
        try:
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Type", "application/json; charset=utf-8")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except OSError:
            h.close_connection = True

    def _common_fault(self, f, create):
        """The answer for faults both networks share; None: not one of them."""
        kind = f["kind"]
        if kind == "hang":
            self.hold(f.get("seconds", 3.0))
            return DROP
        if kind == "reset":
            return DROP
        if kind == "500":
            return self.server_error()
        return None

    def apply_after_take(self, f, ok_answer):
        """The create was accepted into the timeline; now fail to answer."""
        kind = f["kind"]
        if kind == "take_500":
            return self.server_error()
        if kind == "take_reset":
            return DROP
        if kind == "take_close":
            return CLOSE
        if kind == "take_hold":
            self.hold(f.get("seconds", 30.0))
            return DROP
        return ok_answer


class FakeX(FakeNetwork):
    """X API v2: POST /2/tweets, GET /2/users/me, GET /2/users/:id/tweets,
    with OAuth 1.0a user context verified from scratch."""

    DUPLICATE = "You are not allowed to create a Tweet with duplicate content."

    def __init__(self, consumer_key, consumer_secret, seed=1):
        self.apps = {consumer_key: consumer_secret}
        self.users = {}    # access token -> {handle, secret, id, username}
        self.tweets = []   # newest last
        self.nonces = set()
        self.dup_detect = False
        self._next_id = 1790000000000000000
        super().__init__(seed)

    def add_user(self, handle, token, token_secret, user_id):
        self.users[token] = {"handle": handle, "secret": token_secret, "id": user_id,
                             "username": handle}

    def user_by_handle(self, handle):
        return next(u for u in self.users.values() if u["handle"] == handle)

    def new_id(self):
        with self.lock:
            self._next_id += random.randint(1, 1000)
            return str(self._next_id)

    def add_tweet(self, user, raw_text):
        """Stores a tweet as X does: links replaced by 23-character t.co
        links, the original link in entities.urls[].expanded_url."""
        urls, out, pos = [], "", 0
        for m in X_URL_RE.finditer(raw_text):
            out += raw_text[pos:m.start()]
            tco = "https://t.co/" + secrets.token_urlsafe(8)[:10]
            urls.append({"start": len(out), "end": len(out) + len(tco), "url": tco,
                         "expanded_url": m.group(0), "display_url": m.group(0).split("//")[1]})
            out += tco
            pos = m.end()
        out += raw_text[pos:]
        t = {"id": self.new_id(), "text": out, "raw": raw_text, "author_id": user["id"],
             "handle": user["handle"], "entities": {"urls": urls}, "t": time.time()}
        with self.lock:
            self.tweets.append(t)
        return t

    def posts_for(self, url):
        with self.lock:
            return [t for t in self.tweets
                    if any(u["expanded_url"] == url for u in t["entities"]["urls"])]

    # -- OAuth 1.0a, as the server side computes it
    def verify(self, h, method, path, query, body):
        """The user the request is signed for, or None (and why, in
        auth_failures)."""
        auth = h.headers.get("Authorization") or ""
        if not auth.startswith("OAuth "):
            return self._refuse("no OAuth Authorization header")
        params = {}
        for k, v in re.findall(r'([A-Za-z_]+)="([^"]*)"', auth[6:]):
            params[urllib.parse.unquote(k)] = urllib.parse.unquote(v)
        for required in ("oauth_consumer_key", "oauth_nonce", "oauth_signature",
                         "oauth_signature_method", "oauth_timestamp", "oauth_token"):
            if required not in params:
                return self._refuse("missing " + required)
        if params["oauth_signature_method"] != "HMAC-SHA1":
            return self._refuse("signature method " + params["oauth_signature_method"])
        if params.get("oauth_version", "1.0") != "1.0":
            return self._refuse("oauth_version")
        if abs(int(params["oauth_timestamp"]) - time.time()) > 300:
            return self._refuse("timestamp out of the window")
        csecret = self.apps.get(params["oauth_consumer_key"])
        user = self.users.get(params["oauth_token"])
        if csecret is None or user is None:
            return self._refuse("unknown consumer key or token")
        # RFC 5849 3.4.1.3: query, form body (only when form-encoded) and the
        # protocol parameters but oauth_signature and realm.
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded":
            pairs += urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
        pairs += [(k, v) for k, v in params.items() if k not in ("oauth_signature", "realm")]
        normalized = "&".join("%s=%s" % kv for kv in sorted((enc(k), enc(v)) for k, v in pairs))
        host = (h.headers.get("Host") or "").lower()
        if host.endswith(":80"):
            host = host[:-3]
        base_uri = "http://%s%s" % (host, path)
        base = "&".join((method.upper(), enc(base_uri), enc(normalized)))
        key = enc(csecret) + "&" + enc(user["secret"])
        expected = base64.b64encode(hmac.new(key.encode(), base.encode(),
                                             hashlib.sha1).digest()).decode()
        if not hmac.compare_digest(expected, params["oauth_signature"]):
            return self._refuse("signature mismatch (base string %r)" % base)
        nonce = (params["oauth_consumer_key"], params["oauth_timestamp"], params["oauth_nonce"])
        with self.lock:
            if nonce in self.nonces:
                return self._refuse("nonce used twice")
            self.nonces.add(nonce)
        return user

    def _refuse(self, why):
        with self.lock:
            self.auth_failures.append(why)
        return None

    @staticmethod
    def problem(status, title, detail):
        return (status, {}, {"title": title, "detail": detail, "type": "about:blank",
                             "status": status})

    def server_error(self):
        return self.problem(500, "Internal Server Error", "Something went wrong.")

    def handle(self, h, method, path, query, body, entry):
        m_tl = re.fullmatch(r"/2/users/([0-9]+)/tweets", path)
        if method == "POST" and path == "/2/tweets":
            entry["endpoint"] = "create"
        elif method == "GET" and path == "/2/users/me":
            entry["endpoint"] = "me"
        elif method == "GET" and m_tl:
            entry["endpoint"] = "timeline"
        else:
            return self.problem(404, "Not Found Error", "no route %s %s" % (method, path))
        user = self.verify(h, method, path, query, body)
        if user is None:
            return self.problem(401, "Unauthorized", "Unauthorized")
        entry["account"] = user["handle"]
        f = self._fault(entry["endpoint"], user["handle"])
        if f is not None:
            entry["fault"] = f["kind"]
            common = self._common_fault(f, entry["endpoint"] == "create")
            if common is not None:
                return common
            if f["kind"] == "429":
                reset = f.get("reset") or int(time.time()) + f.get("reset_in", 1)
                return (429, {"x-rate-limit-limit": "100", "x-rate-limit-remaining": "0",
                              "x-rate-limit-reset": str(reset)},
                        {"title": "Too Many Requests", "detail": "Too Many Requests",
                         "type": "about:blank", "status": 429})
            if f["kind"] == "dup403":
                return self.problem(403, "Forbidden", self.DUPLICATE)
            if f["kind"] == "401":
                return self.problem(401, "Unauthorized", "Unauthorized")
        if entry["endpoint"] == "me":
            return (200, {}, {"data": {"id": user["id"], "name": user["handle"].title(),
                                       "username": user["username"]}})
        if entry["endpoint"] == "timeline":
            q = dict(urllib.parse.parse_qsl(query))
            n = int(q.get("max_results", "10"))
            if not 5 <= n <= 100:
                return self.problem(400, "Invalid Request", "max_results out of range")
            with self.lock:
                mine = [t for t in self.tweets if t["author_id"] == m_tl.group(1)][::-1][:n]
            fields = q.get("tweet.fields", "").split(",")
            data = [dict({"id": t["id"], "text": t["text"],
                          "edit_history_tweet_ids": [t["id"]]},
                         **({"entities": t["entities"]} if "entities" in fields else {}))
                    for t in mine]
            if not data:
                return (200, {}, {"meta": {"result_count": 0}})
            return (200, {}, {"data": data, "meta": {"result_count": len(data),
                                                     "newest_id": data[0]["id"],
                                                     "oldest_id": data[-1]["id"]}})
        # POST /2/tweets: a JSON body {"text": ...}
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype != "application/json":
            return self.problem(415, "Unsupported Media Type", "Content-Type " + ctype)
        try:
            doc = json.loads(body.decode("utf-8"))
        except ValueError:
            return self.problem(400, "Invalid Request", "body is not JSON")
        text = doc.get("text") if isinstance(doc, dict) else None
        if not isinstance(text, str) or not text.strip():
            return self.problem(400, "Invalid Request", "text is required")
        if x_weighted_length(text) > 280:
            entry["too_long"] = True
            return self.problem(403, "Forbidden", "Your Tweet text is too long.")
        if self.dup_detect:
            with self.lock:
                dup = any(t["raw"] == text and t["handle"] == user["handle"]
                          for t in self.tweets)
            if dup:
                return self.problem(403, "Forbidden", self.DUPLICATE)
        t = self.add_tweet(user, text)
        entry["created"] = t["id"]
        return self.apply_after_take(f or {"kind": None},
                                     (201, {}, {"data": {"id": t["id"], "text": t["text"],
                                                         "edit_history_tweet_ids": [t["id"]]}}))


class FakeFacebook(FakeNetwork):
    """Graph API: POST /{v}/{page}/feed and GET /{v}/{page}/feed, with a
    Page access token and appsecret_proof."""

    def __init__(self, app_secret, version=FB_VERSION, seed=2):
        self.app_secret = app_secret
        self.version = version
        self.pages = {}   # page id -> {handle, token, expired}
        self.posts = []
        self._n = 0
        super().__init__(seed)

    def add_page(self, handle, page_id, token):
        self.pages[page_id] = {"handle": handle, "token": token, "expired": False}

    def page_by_handle(self, handle):
        return next((pid, p) for pid, p in self.pages.items() if p["handle"] == handle)

    def posts_for(self, url):
        with self.lock:
            return [p for p in self.posts if p["link"] == url]

    @staticmethod
    def error(status, code, message, transient=False, subcode=None):
        e = {"message": message, "type": "OAuthException", "code": code,
             "fbtrace_id": "A" + secrets.token_hex(5)}
        if transient:
            e["is_transient"] = True
        if subcode is not None:
            e["error_subcode"] = subcode
        return (status, {}, {"error": e})

    def server_error(self):
        return self.error(500, 1, "An unknown error occurred", transient=True)

    def handle(self, h, method, path, query, body, entry):
        m = re.fullmatch(r"/(v[0-9]+\.[0-9]+)/([^/]+)/feed", path)
        if m is None or m.group(1) != self.version:
            return self.error(400, 2500, "Unknown path components: %s" % path)
        if method == "POST":
            entry["endpoint"] = "create"
            if (h.headers.get("Content-Type") or "").split(";")[0].strip() != \
                    "application/x-www-form-urlencoded":
                return self.error(400, 100, "form body expected")
            args = dict(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        elif method == "GET":
            entry["endpoint"] = "feed"
            args = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        else:
            return self.error(400, 100, "Unsupported request")
        page_id = urllib.parse.unquote(m.group(2))
        page = self.pages.get(page_id)
        token = args.get("access_token")
        if not token:
            return self.error(400, 104, "An access token is required to request this resource.")
        owner = next((p for p in self.pages.values() if p["token"] == token), None)
        if owner is None:
            return self.error(400, 190, "Invalid OAuth access token - Cannot parse access token")
        if owner["expired"]:
            return self.error(400, 190, "Error validating access token: Session has expired on "
                              "Tuesday, 01-Oct-24 10:00:00 PDT.", subcode=463)
        if "appsecret_proof" not in args:
            return self.error(400, 100, "API calls from the server require an appsecret_proof "
                              "argument")
        proof = hmac.new(self.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(proof, args["appsecret_proof"]):
            with self.lock:
                self.auth_failures.append("appsecret_proof mismatch")
            return self.error(400, 100, "Invalid appsecret_proof provided in the API argument")
        if page is None or page is not owner:
            return self.error(403, 200, "(#200) The token does not belong to page %s" % page_id)
        entry["account"] = page["handle"]
        f = self._fault(entry["endpoint"], page["handle"])
        if f is not None:
            entry["fault"] = f["kind"]
            common = self._common_fault(f, method == "POST")
            if common is not None:
                return common
            if f["kind"] == "190":
                return self.error(400, 190, "Error validating access token: Session has "
                                  "expired on Tuesday, 01-Oct-24 10:00:00 PDT.", subcode=463)
            if f["kind"] == "4":
                return self.error(403, 4, "(#4) Application request limit reached",
                                  transient=True)
        if method == "GET":
            fields = args.get("fields", "id").split(",")
            limit = int(args.get("limit", "25"))
            with self.lock:
                mine = [p for p in self.posts if p["page"] == page_id][::-1][:limit]
            return (200, {}, {"data": [{k: p[k] for k in fields if k in p} for p in mine],
                              "paging": {}})
        if not args.get("link") and not args.get("message"):
            return self.error(400, 100, "Missing message or attachment")
        with self.lock:
            self._n += 1
            post = {"id": "%s_%d" % (page_id, 900000 + self._n), "page": page_id,
                    "message": args.get("message", ""), "link": args.get("link", ""),
                    "t": time.time(), "handle": page["handle"]}
            self.posts.append(post)
        entry["created"] = post["id"]
        return self.apply_after_take(f or {"kind": None}, (200, {}, {"id": post["id"]}))


# ------------------------------------------------------------------ the world of one test

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


def _secret(prefix, n=18):
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
        self.consumer_secret = _secret("cs-")
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
        tsecret = _secret("ts-")
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
        assert r.returncode == 0, r.stderr
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


@pytest.fixture
def world(sayin, tmp_path):
    worlds = []

    def make(handles=("ann",), seed=1):
        w = World(sayin, tmp_path, handles, seed)
        worlds.append(w)
        return w
    yield make
    sayin.cleanup()  # workers first: a held request then finds its client gone
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


# ------------------------------------------------------------------ tests

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


def test_post_goes_to_each_network_once_with_fitted_text_and_link(sayin, world):
    w = world(("ann",))
    short = w.post("ann", "Short & sweet: 100% me + you = \u2764")
    long = w.post("ann", LONG_TEXT)
    cjk = w.post("ann", CJK_TEXT)
    st = w.status()
    assert {k for k in st.jobs} == {(p["id"], n) for p in (short, long, cjk)
                                    for n in ("x", "facebook")}, st.text
    assert all(j["state"] == "due" for j in st.jobs.values()), st.text

    r = w.crosspost()
    assert r.returncode == 0, r.stdout + r.stderr
    assert counts_of(r.stdout) == (6, 0, 0, 0), r.stdout
    assert w.x.auth_failures == [] and w.fb.auth_failures == []

    t = one_tweet(w, short["url"])
    assert t["raw"] == "Short & sweet: 100% me + you = \u2764 " + short["url"], t
    check_fitted(one_tweet(w, long["url"])["raw"], LONG_TEXT, long["url"])
    check_fitted(one_tweet(w, cjk["url"])["raw"], CJK_TEXT, cjk["url"])
    for p, text in ((short, "Short & sweet: 100% me + you = \u2764"), (long, LONG_TEXT),
                    (cjk, CJK_TEXT)):
        fbp = one_fb_post(w, p["url"])
        assert fbp["message"] == text and fbp["link"] == p["url"], fbp
    # The post is posted once per network, not once per lookup or retry.
    assert len(w.x.requests("create")) == 3 and len(w.fb.requests("create")) == 3

    st = w.status()
    assert st.waiting == 0 and st.parked == 0 and st.jobs == {}, st.text
    for p in (short, long, cjk):
        x_id = one_tweet(w, p["url"])["id"]
        fb_id = one_fb_post(w, p["url"])["id"]
        assert st.done[(p["id"], "x")] == {"url": "https://x.com/i/web/status/" + x_id,
                                           "found": False}, st.text
        assert st.done[(p["id"], "facebook")] == {"url": "https://www.facebook.com/" + fb_id,
                                                  "found": False}, st.text

    # Nothing is due: the next cron run sends nothing.
    before = len(w.x.log) + len(w.fb.log)
    r = w.crosspost()
    assert r.returncode == 0 and counts_of(r.stdout) == (0, 0, 0, 0), r.stdout + r.stderr
    assert len(w.x.log) + len(w.fb.log) == before
    w.assert_no_secret_anywhere()


def test_api_post_shows_crosspost_delivery(sayin, world):
    w = world(("ann",))
    token = author_add(sayin, w.data, "ann")
    api = start_api(sayin, w.data, args=["--social-accounts", w.accounts_path,
                                           "--aac-fallback", "off"], base=PUBLIC)
    audio = w.wav.read_bytes()
    r = api.post_form(token, [("audio", audio, "v.wav", "audio/wav"),
                              ("text", "From the API", None, None),
                              ("crosspost", "x,facebook", None, None)])
    assert r.status == 201, r
    post = r.json()
    r = api.request("POST", "/v1/posts?crosspost=x", token,
                    [("Content-Type", "audio/wav"), ("Content-Length", str(len(audio)))], audio)
    assert r.status == 201, r
    only_x = r.json()
    r = api.request("POST", "/v1/posts?crosspost=", token,
                    [("Content-Type", "audio/wav"), ("Content-Length", str(len(audio)))], audio)
    assert r.status == 201, r
    none = r.json()

    view = api.get_post(token, post["id"]).json()["delivery"]["crosspost"]
    assert set(view) == {"x", "facebook"}, view
    assert view["x"]["state"] == "pending" and view["facebook"]["state"] == "pending", view
    assert set(api.get_post(token, only_x["id"]).json()["delivery"]["crosspost"]) == {"x"}
    assert api.get_post(token, none["id"]).json()["delivery"]["crosspost"] == {}

    r = w.crosspost()
    assert r.returncode == 0 and counts_of(r.stdout) == (3, 0, 0, 0), r.stdout + r.stderr
    view = api.get_post(token, post["id"]).json()["delivery"]["crosspost"]
    tweet, fbp = one_tweet(w, post["url"]), one_fb_post(w, post["url"])
    assert view["x"]["state"] == "done" and view["x"]["remote_id"] == tweet["id"], view
    assert view["x"]["remote_url"] == "https://x.com/i/web/status/" + tweet["id"], view
    assert view["facebook"]["state"] == "done" and view["facebook"]["remote_id"] == fbp["id"]
    assert tweet["raw"] == "From the API " + post["url"]
    assert fbp["message"] == "From the API"
    one_tweet(w, only_x["url"])
    assert w.fb.posts_for(only_x["url"]) == []
    assert w.x.posts_for(none["url"]) == [] and w.fb.posts_for(none["url"]) == []
    view = api.get_post(token, only_x["id"]).json()["delivery"]["crosspost"]
    assert list(view) == ["x"] and view["x"]["state"] == "done", view
    assert "Authorization" not in api.log()
    w.outputs.append(api.log())
    w.assert_no_secret_anywhere()


def test_crosspost_field_and_accounts_choose_the_networks(sayin, world):
    w = world(("ann", "bob", "cat"))
    w.enabled = {"ann": ("x", "facebook"), "bob": (), "cat": ("facebook",)}
    w.write_accounts()
    only_x = w.post("ann", "only to X", crosspost="x")
    only_fb = w.post("ann", "only to Facebook", crosspost="facebook")
    nowhere = w.post("ann", "not cross-posted", crosspost="")
    both = w.post("ann", "everywhere")
    disabled = w.post("bob", "bob has accounts, none enabled")
    no_account = w.post("dan", "dan has no account at all")
    cat_all = w.post("cat", "cat asks for both, has facebook", crosspost="x,facebook")

    st = w.status()
    assert set(st.jobs) == {(only_x["id"], "x"), (only_fb["id"], "facebook"),
                            (both["id"], "x"), (both["id"], "facebook"),
                            (cat_all["id"], "facebook")}, st.text
    r = w.crosspost()
    assert r.returncode == 0 and counts_of(r.stdout) == (5, 0, 0, 0), r.stdout + r.stderr
    one_tweet(w, only_x["url"])
    one_tweet(w, both["url"])
    one_fb_post(w, only_fb["url"])
    one_fb_post(w, both["url"])
    one_fb_post(w, cat_all["url"])
    assert len(w.x.tweets) == 2 and len(w.fb.posts) == 3
    for p in (nowhere, disabled, no_account):
        assert w.x.posts_for(p["url"]) == [] and w.fb.posts_for(p["url"]) == []

    # An unknown network is refused at publish time, naming it.
    r = w.sayin.post(w.data, "ann", w.wav, text="x", check=False,
                     args=["--social-accounts", w.accounts_path, "--crosspost", "myspace"])
    assert r.returncode != 0 and "myspace" in r.stderr, r.describe()


def test_environment_supplies_and_overrides_accounts(sayin, world):
    w = world(("ann", "bob"))
    good = w.accounts["ann"]["x"]["consumer_secret"]
    bob = w.accounts["bob"]["facebook"]
    del w.accounts["bob"]       # bob only in the environment
    w.enabled = {"ann": ("x",)}
    w.write_accounts(override={("ann", "x"): {"consumer_secret": "wrong-secret"}})
    w.accounts["bob"] = {"x": w.accounts["ann"]["x"], "facebook": bob}  # for the grep
    env = {"SAYIN_SOCIAL_ANN_X_CONSUMER_SECRET": good,
           "SAYIN_SOCIAL_BOB_FACEBOOK_ENABLED": "true",
           "SAYIN_SOCIAL_BOB_FACEBOOK_PAGE_ID": bob["page_id"],
           "SAYIN_SOCIAL_BOB_FACEBOOK_PAGE_ACCESS_TOKEN": bob["page_access_token"],
           "SAYIN_SOCIAL_BOB_FACEBOOK_APP_SECRET": bob["app_secret"]}
    a = w.post("ann", "signed with the secret from the environment")
    b = w.post("bob", "bob's page is configured by environment only", env=env)
    st = w.status()
    assert set(st.jobs) == {(a["id"], "x"), (b["id"], "facebook")}, st.text
    r = w.crosspost(env=env)
    assert r.returncode == 0 and counts_of(r.stdout) == (2, 0, 0, 0), r.stdout + r.stderr
    one_tweet(w, a["url"])
    one_fb_post(w, b["url"])
    assert w.x.auth_failures == []
    w.assert_no_secret_anywhere()


def test_x_429_waits_for_the_reset_time_and_facebook_4_backs_off(sayin, world):
    w = world(("ann",))
    p = w.post("ann", "rate limited at first")
    reset = int(time.time()) + 3
    w.x.inject("429", reset=reset)
    w.fb.inject("4")
    r = w.crosspost(backoff_ms=800)
    assert r.returncode == 1 and counts_of(r.stdout) == (0, 0, 2, 0), r.stdout + r.stderr
    first_429 = w.x.requests("create")[0]
    assert first_429["status"] == 429
    st = w.status()
    jx, jf = st.jobs[(p["id"], "x")], st.jobs[(p["id"], "facebook")]
    assert jx["state"] == "backoff" and "429" in jx["error"] and "rate limited" in jx["error"], \
        st.text
    assert jf["state"] == "backoff" and "error 4" in jf["error"], st.text

    st = w.until_done(deadline_s=12, interval=0.1, backoff_ms=800)
    x_after = [e for e in w.x.log if e["t"] > first_429["t"]]
    assert x_after, "X was never asked again"
    assert min(e["t"] for e in x_after) >= reset - 0.01, \
        "X asked again %.3f s before x-rate-limit-reset" % (reset - min(e["t"] for e in x_after))
    one_tweet(w, p["url"])
    one_fb_post(w, p["url"])
    assert [e["status"] for e in w.x.requests("create")] == [429, 201]
    assert [e["status"] for e in w.fb.requests("create")] == [403, 200]
    fb_creates = w.fb.requests("create")
    assert fb_creates[1]["t"] - fb_creates[0]["t"] >= 0.4 - 0.01, "no backoff after code 4"
    assert st.parked == 0 and len(st.done) == 2, st.text


def test_500_backs_off_then_posts_once(sayin, world):
    w = world(("ann",))
    p = w.post("ann", "server trouble")
    w.x.inject("500")
    w.fb.inject("500")
    r = w.crosspost(backoff_ms=1500)
    assert r.returncode == 1 and counts_of(r.stdout) == (0, 0, 2, 0), r.stdout + r.stderr
    st = w.status()
    for net, want in (("x", "X: HTTP 500"), ("facebook", "Facebook: HTTP 500")):
        j = st.jobs[(p["id"], net)]
        assert j["state"] == "backoff" and want in j["error"] and j["attempts"] == 1, st.text
    # Not due yet: the next run leaves them alone.
    n = len(w.x.log) + len(w.fb.log)
    r = w.crosspost(backoff_ms=1500)
    assert r.returncode == 0 and counts_of(r.stdout) == (0, 0, 0, 0), r.stdout + r.stderr
    assert len(w.x.log) + len(w.fb.log) == n
    st = w.until_done(deadline_s=10, interval=0.1, backoff_ms=1500)
    for fake in (w.x, w.fb):
        creates = fake.requests("create")
        assert [e["status"] for e in creates][-1] in (200, 201) and len(creates) == 2
        assert creates[1]["t"] - creates[0]["t"] >= 0.75 - 0.01, "retried before the backoff"
    one_tweet(w, p["url"])
    one_fb_post(w, p["url"])
    assert st.parked == 0 and len(st.done) == 2, st.text


def test_hang_past_the_timeout_backs_off_then_posts_once(sayin, world):
    w = world(("ann",))
    p = w.post("ann", "a slow network")
    w.x.inject("hang", seconds=3)
    w.fb.inject("hang", seconds=3)
    t0 = time.monotonic()
    r = w.crosspost(timeout_ms=500)
    took = time.monotonic() - t0
    assert r.returncode == 1 and counts_of(r.stdout) == (0, 0, 2, 0), r.stdout + r.stderr
    assert took < 2.5, "the run waited %.1f s for a 0.5 s timeout" % took
    st = w.status()
    assert "no answer" in st.jobs[(p["id"], "x")]["error"], st.text
    assert "no answer" in st.jobs[(p["id"], "facebook")]["error"], st.text
    w.x.release_all()
    w.fb.release_all()
    w.until_done(deadline_s=10, timeout_ms=500)
    one_tweet(w, p["url"])
    one_fb_post(w, p["url"])


def test_rejected_credentials_park_and_retry_after_fixing_the_file(sayin, world):
    w = world(("ann", "dan"))
    right = w.accounts["ann"]["x"]["consumer_secret"]
    wrong_x = _secret("bad-")
    wrong_app = secrets.token_hex(16)
    w.write_accounts(override={("ann", "x"): {"consumer_secret": wrong_x},
                               ("dan", "facebook"): {"app_secret": wrong_app}})
    _, page = w.fb.page_by_handle("ann")
    page["expired"] = True
    a = w.post("ann", "parked until fixed")
    d = w.post("dan", "dan's proof is wrong", crosspost="facebook")
    r = w.crosspost()
    assert r.returncode == 1 and counts_of(r.stdout) == (0, 0, 3, 3), r.stdout + r.stderr
    assert w.x.auth_failures and "signature mismatch" in w.x.auth_failures[0]
    st = w.status()
    assert st.parked == 3 and st.waiting == 0, st.text
    jx = st.jobs[(a["id"], "x")]
    assert jx["state"] == "PARKED" and "credentials rejected" in jx["error"], st.text
    jf = st.jobs[(a["id"], "facebook")]
    assert jf["state"] == "PARKED" and "token expired, re-authorize" in jf["error"], st.text
    jd = st.jobs[(d["id"], "facebook")]
    assert jd["state"] == "PARKED" and "Invalid appsecret_proof" in jd["error"], st.text
    assert w.x.tweets == [] and w.fb.posts == []
    # Parked: cron runs leave them alone.
    n = len(w.x.log) + len(w.fb.log)
    r = w.crosspost()
    assert r.returncode == 0 and counts_of(r.stdout) == (0, 0, 0, 0)
    assert len(w.x.log) + len(w.fb.log) == n

    # Every secret, the wrong ones too, is absent from every output so far.
    w.accounts["wrong"] = {"x": {"access_token": wrong_x, "access_token_secret": wrong_x,
                                 "consumer_key": "", "consumer_secret": wrong_x},
                           "facebook": {"page_access_token": wrong_app, "page_id": "",
                                        "app_secret": wrong_app}}
    w.assert_no_secret_anywhere()
    del w.accounts["wrong"]

    # The operator re-authorizes: a new page token, the right secrets.
    new_token = "EAAB" + secrets.token_urlsafe(40)
    page["token"], page["expired"] = new_token, False
    w.accounts["ann"]["facebook"]["page_access_token"] = new_token
    assert w.accounts["ann"]["x"]["consumer_secret"] == right
    w.write_accounts()
    assert "3 jobs made due again" in w.retry_all()
    r = w.crosspost()
    assert r.returncode == 0 and counts_of(r.stdout) == (3, 0, 0, 0), r.stdout + r.stderr
    one_tweet(w, a["url"])
    one_fb_post(w, a["url"])
    one_fb_post(w, d["url"])
    st = w.status()
    assert st.waiting == 0 and st.parked == 0 and len(st.done) == 3, st.text
    w.assert_no_secret_anywhere()


def test_facebook_190_on_a_live_token_parks_with_reauthorize(sayin, world):
    w = world(("ann",))
    p = w.post("ann", "token revoked on Facebook's side", crosspost="facebook")
    w.fb.inject("190")
    r = w.crosspost()
    assert r.returncode == 1 and counts_of(r.stdout) == (0, 0, 1, 1), r.stdout + r.stderr
    st = w.status()
    j = st.jobs[(p["id"], "facebook")]
    assert j["state"] == "PARKED" and "token expired, re-authorize" in j["error"], st.text
    assert "error 190" in j["error"], st.text
    assert w.fb.posts == []


def test_x_duplicate_content_is_recorded_as_posted_not_retried(sayin, world):
    w = world(("ann",))
    w.x.dup_detect = True
    p1 = w.post("ann", "the same words twice", crosspost="x")
    # Already on X (posted by hand, or by a run whose record was lost).
    earlier = w.x.add_tweet(w.x.user_by_handle("ann"), "the same words twice " + p1["url"])
    r = w.crosspost()
    assert r.returncode == 0 and counts_of(r.stdout) == (0, 1, 0, 0), r.stdout + r.stderr
    assert [e["status"] for e in w.x.requests("create")] == [403]
    assert one_tweet(w, p1["url"]) is earlier
    st = w.status()
    assert st.done[(p1["id"], "x")] == {"url": "https://x.com/i/web/status/" + earlier["id"],
                                        "found": True}, st.text

    # A duplicate X reports but our link is not in the recent timeline:
    # still posted (X says so), recorded, never sent again.
    p2 = w.post("ann", "X says duplicate, timeline disagrees", crosspost="x")
    w.x.inject("dup403")
    r = w.crosspost()
    assert r.returncode == 0 and counts_of(r.stdout) == (0, 1, 0, 0), r.stdout + r.stderr
    st = w.status()
    assert (p2["id"], "x") in st.done and st.waiting == 0 and st.parked == 0, st.text
    n = len(w.x.log)
    for _ in range(2):
        r = w.crosspost()
        assert r.returncode == 0 and counts_of(r.stdout) == (0, 0, 0, 0)
    assert len(w.x.log) == n
    assert len(w.x.requests("create")) == 2


@pytest.mark.parametrize("kind", ["take_500", "take_reset", "take_close", "take_timeout"])
def test_crash_window_client_sees_a_failure_then_reconciles(sayin, world, kind):
    """The network took the post but we never heard: the next run finds it
    instead of posting again."""
    w = world(("ann",))
    p = w.post("ann", "did it go out? " + kind)
    fault = "take_hold" if kind == "take_timeout" else kind
    w.x.inject(fault, seconds=3)
    w.fb.inject(fault, seconds=3)
    r = w.crosspost(timeout_ms=500)
    assert r.returncode == 1 and counts_of(r.stdout) == (0, 0, 2, 0), r.stdout + r.stderr
    t, fbp = one_tweet(w, p["url"]), one_fb_post(w, p["url"])
    w.x.release_all()
    w.fb.release_all()
    st = w.status()
    assert st.jobs[(p["id"], "x")]["state"] in ("backoff", "due"), st.text

    n_create = len(w.x.requests("create")) + len(w.fb.requests("create"))
    st = w.until_done(deadline_s=10, timeout_ms=500)
    assert len(w.x.requests("create")) + len(w.fb.requests("create")) == n_create, \
        "posted again instead of reconciling"
    assert one_tweet(w, p["url"]) is t and one_fb_post(w, p["url"]) is fbp
    assert st.done[(p["id"], "x")] == {"url": "https://x.com/i/web/status/" + t["id"],
                                       "found": True}, st.text
    assert st.done[(p["id"], "facebook")] == {"url": "https://www.facebook.com/" + fbp["id"],
                                              "found": True}, st.text
    assert w.x.requests("timeline") and w.fb.requests("feed")
    assert any("reconciling first" in o for o in w.outputs)


@pytest.mark.parametrize("kind", ["take_close", "take_reset"])
def test_no_silent_resend_when_a_reused_connection_dies(sayin, world, kind):
    """libcurl re-sends a request on a fresh connection when a reused one
    dies before the first byte of the answer. For a post the network took,
    that is a second post: the post must go out on a connection of its own.
    Here the post follows the reconcile lookups (same host, keep-alive), and
    the network takes it and resets the connection."""
    w = world(("ann",))
    p = w.post("ann", "one post, one connection")
    w.x.inject("500")
    w.fb.inject("500")
    r = w.crosspost(backoff_ms=400)
    assert counts_of(r.stdout) == (0, 0, 2, 0), r.stdout + r.stderr
    w.x.inject(kind)
    w.fb.inject(kind)
    time.sleep(0.45)
    r = w.crosspost(backoff_ms=400)
    assert w.x.requests("timeline") and w.fb.requests("feed"), "no reconcile lookups"
    assert len(w.x.posts_for(p["url"])) == 1, "X got the post twice:\n" + w.x.history(p["url"])
    assert len(w.fb.posts_for(p["url"])) == 1, \
        "Facebook got the post twice:\n" + w.fb.history(p["url"])
    w.until_done(deadline_s=10, backoff_ms=400)
    one_tweet(w, p["url"])
    one_fb_post(w, p["url"])
    assert len(w.x.requests("create")) == 2 and len(w.fb.requests("create")) == 2


def test_crash_window_sigkill_after_the_network_took_the_post(sayin, world):
    w = world(("ann",))
    p = w.post("ann", "killed mid-flight")
    w.x.inject("take_hold", seconds=30)
    w.fb.inject("take_hold", seconds=30)
    proc = w.popen_crosspost(lease_ms=3000)
    assert wait_for(lambda: w.x.holding() == 1 and w.fb.holding() == 1, 10), \
        w.output_of(proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    killed_at = time.monotonic()
    w.x.release_all()
    w.fb.release_all()
    t, fbp = one_tweet(w, p["url"]), one_fb_post(w, p["url"])

    # The dead worker's lease holds the jobs until it expires.
    r = w.crosspost(lease_ms=3000)
    if time.monotonic() - killed_at < 2.0:
        assert counts_of(r.stdout) == (0, 0, 0, 0), r.stdout + r.stderr
        assert {j["state"] for j in w.status().jobs.values()} == {"leased"}
    time.sleep(max(0.0, killed_at + 3.1 - time.monotonic()))
    r = w.crosspost(lease_ms=3000)
    assert r.returncode == 0 and counts_of(r.stdout) == (0, 2, 0, 0), r.stdout + r.stderr
    assert "reconciling first" in r.stderr
    assert one_tweet(w, p["url"]) is t and one_fb_post(w, p["url"]) is fbp
    assert len(w.x.requests("create")) == 1 and len(w.fb.requests("create")) == 1
    st = w.status()
    assert st.done[(p["id"], "x")]["url"].endswith("/" + t["id"]), st.text
    assert st.done[(p["id"], "facebook")]["url"].endswith("/" + fbp["id"]), st.text


def test_overlapping_runs_never_post_twice(sayin, world):
    w = world(("ann",))
    posts = [w.post("ann", "overlap %d" % i) for i in range(3)]
    # Two cron runs started at the same moment (each answer slowed a little
    # so that they do overlap).
    w.x.delay = w.fb.delay = 0.2
    procs = [w.popen_crosspost() for _ in range(2)]
    for p in procs:
        assert p.wait(30) == 0, w.output_of(p)
    outs = [w.output_of(p) for p in procs]
    assert sum(counts_of(o)[0] for o in outs if COUNTS_RE.search(o)) == 6, outs
    for p in posts:
        one_tweet(w, p["url"])
        one_fb_post(w, p["url"])
    w.x.delay = w.fb.delay = 0

    # A run blocked on a hanging request; cron starts the next one.
    p4 = w.post("ann", "the slow one")
    w.x.inject("take_hold", seconds=30)
    a = w.popen_crosspost(lease_ms=20000, timeout_ms=20000)
    assert wait_for(lambda: w.x.holding() == 1, 10), w.output_of(a)
    assert wait_for(lambda: len(w.fb.posts_for(p4["url"])) == 1, 10)
    t0 = time.monotonic()
    r = w.crosspost()
    assert r.returncode == 0 and time.monotonic() - t0 < 5, r.stdout + r.stderr
    assert "another run holds" in r.stderr, r.stderr
    assert len(w.x.requests("create")) == 4

    # Even without the lock (someone removed the file), the lease keeps a
    # second worker off the job the first one holds.
    os.unlink(w.data / "crosspost.lock")
    r = w.crosspost()
    assert r.returncode == 0 and counts_of(r.stdout) == (0, 0, 0, 0), r.stdout + r.stderr
    assert len(w.x.requests("create")) == 4
    assert w.status().jobs[(p4["id"], "x")]["state"] == "leased"

    w.x.release_all()   # A's answer never comes: the connection is reset
    assert a.wait(30) == 1, w.output_of(a)
    w.until_done(deadline_s=10)
    one_tweet(w, p4["url"])
    one_fb_post(w, p4["url"])
    assert len(w.x.requests("create")) == 4


def test_accounts_file_readable_by_others_is_refused(sayin, world):
    w = world(("ann",))
    for mode in (0o644, 0o640, 0o604):
        w.write_accounts(mode=mode)
        r = w.sayin.post(w.data, "ann", w.wav, text="x", check=False,
                         args=["--social-accounts", w.accounts_path])
        w.outputs.append(r.stdout + r.stderr)
        assert r.returncode != 0, r.describe()
        assert "chmod 600" in r.stderr, r.stderr
        r = w.crosspost()
        assert r.returncode not in (0, 1) and "chmod 600" in r.stderr, r.stdout + r.stderr
    assert w.x.log == [] and w.fb.log == []
    w.assert_no_secret_anywhere()
    w.write_accounts(mode=0o600)
    p = w.post("ann", "now it is private")
    r = w.crosspost()
    assert r.returncode == 0, r.stdout + r.stderr
    one_tweet(w, p["url"])
    one_fb_post(w, p["url"])


CHAOS_TEXTS = [
    "Quick hello from the tour bus!",
    LONG_TEXT,
    CJK_TEXT,
    "Fans & friends: 50% off merch + free \U0001F3B5 tonight = best night",
    "",
    "A note about the new album, recorded in one take in a tiny room in Lisbon, where the "
    "neighbours knocked on the wall twice and we kept the second knock in the mix because "
    "it was on the beat; listen for it at the end of the second verse, right before the "
    "bridge, and tell me if you hear it too. Thank you for listening, always.",
]


def test_chaos_200_posts_cron_runs_killed_at_random(sayin, world):
    """200 posts by 8 authors, published through the API while cron-like
    crosspost runs are SIGKILLed at random moments (also while a fake holds
    a post it took), the networks failing at random. Afterwards each post is
    on each network exactly once, or parked with its reason."""
    handles = tuple("a%d" % i for i in range(8))
    w = world(handles, seed=int(time.time()))
    rng = random.Random()
    # a7's Page token was revoked: its Facebook jobs must park, with the reason.
    w.fb.page_by_handle("a7")[1]["expired"] = True
    tokens = {h: author_add(sayin, w.data, h) for h in handles}
    api = start_api(sayin, w.data, args=["--social-accounts", w.accounts_path,
                                           "--aac-fallback", "off", "--waveform-points", "10"],
                      base=PUBLIC)
    for fake, extra in ((w.x, {"429": 0.02}), (w.fb, {"4": 0.02})):
        fake.chaos = dict({"take_reset": 0.02, "take_close": 0.02, "take_500": 0.04, "take_hold": 0.05,
                           "500": 0.04, "hang": 0.02}, **extra)
        fake.chaos_lookup = {"500": 0.03}

    audio = w.wav.read_bytes()
    posted = []
    plock = threading.Lock()

    def publish(i):
        h = handles[i % len(handles)]
        text = CHAOS_TEXTS[i % len(CHAOS_TEXTS)]
        r = api.post_form(tokens[h], [("audio", audio, "v.wav", "audio/wav"),
                                      ("text", text, None, None)])
        assert r.status == 201, r
        with plock:
            posted.append((h, r.json(), text))

    pool = concurrent.futures.ThreadPoolExecutor(4)
    futures = [pool.submit(publish, i) for i in range(200)]
    cron = dict(timeout_ms=400, lease_ms=1200, backoff_ms=50, max_attempts=100)
    runs = kills = kills_holding = 0
    t0 = time.monotonic()
    deadline = t0 + 80
    try:
        while time.monotonic() < deadline:
            publishing = not all(f.done() for f in futures)
            chaotic = publishing or time.monotonic() - t0 < 20
            p = w.popen_crosspost(**cron)
            runs += 1
            kill_on_hold = chaotic and rng.random() < 0.6
            kill_at = time.monotonic() + rng.uniform(0.01, 0.5)
            killed = False
            while p.poll() is None and time.monotonic() < kill_at + (0 if chaotic else 30):
                if kill_on_hold and (w.x.holding() or w.fb.holding()):
                    time.sleep(rng.uniform(0, 0.05))
                    kills_holding += 1 if (w.x.holding() or w.fb.holding()) else 0
                    break
                time.sleep(0.005)
            if p.poll() is None and chaotic:
                p.send_signal(signal.SIGKILL)
                killed = True
                kills += 1
            p.wait(30)
            w.x.release_all()
            w.fb.release_all()
            if not killed:
                out = w.output_of(p)
                assert p.returncode in (0, 1), out
            if not publishing and not chaotic:
                st = w.status()
                if st.waiting == 0:
                    break
        else:
            pytest.fail("jobs still waiting after %.0f s:\n%s" % (time.monotonic() - t0,
                                                                  w.status().text))
    finally:
        pool.shutdown(wait=True)
    for f in futures:
        f.result()
    elapsed = time.monotonic() - t0

    assert len(posted) == 200
    st = w.status()
    assert st.waiting == 0, st.text
    parked = {k: j for k, j in st.jobs.items() if j["state"] == "PARKED"}
    found = sum(1 for d in st.done.values() if d["found"])
    for h, post, text in posted:
        for net, fake in (("x", w.x), ("facebook", w.fb)):
            copies = fake.posts_for(post["url"])
            key = (post["id"], net)
            if h == "a7" and net == "facebook":
                assert copies == [] and key in parked, st.text
                assert "token expired, re-authorize" in parked[key]["error"], parked[key]
                continue
            assert len(copies) == 1, "%s has %d copies of %s (%s); its requests:\n%s" % (
                net, len(copies), post["url"], h, fake.history(post["url"]))
            assert key in st.done and st.done[key]["url"].endswith("/" + copies[0]["id"]), \
                (key, st.done.get(key))
    assert set(parked) == {(post["id"], "facebook") for h, post, _ in posted if h == "a7"}
    assert len(st.done) == 200 * 2 - 25
    assert [e for e in w.x.requests("create") if e.get("too_long")] == []
    assert w.x.auth_failures == [] and w.fb.auth_failures == []
    print("chaos: %d runs, %d SIGKILLs (%d while a fake held a taken post), %d found by "
          "reconciling, %d X and %d Facebook create requests, %.1f s"
          % (runs, kills, kills_holding, found, len(w.x.requests("create")),
             len(w.fb.requests("create")), elapsed))
    assert kills >= 10 and kills_holding >= 1 and found >= 1, (kills, kills_holding, found)
    w.outputs.append(api.log())
    w.assert_no_secret_anywhere()

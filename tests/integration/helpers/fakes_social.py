"""Fake X and Facebook APIs for the cross-posting tests (standard library,
threads, loopback ports picked by the kernel), and X's way of counting a
text. They check every request as the real services do: X recomputes the
OAuth 1.0a signature from scratch (RFC 5849 base string, RFC 3986 encoding,
HMAC-SHA1 keyed with the consumer and token secrets) and answers 401 when it
does not match; Facebook recomputes appsecret_proof (HMAC-SHA256 of the
token keyed with the app secret) and answers error 100. Both keep timelines
for the worker's reconcile lookups and inject faults on demand: 429 with
x-rate-limit-reset, 500, a hang past the client timeout, X's
duplicate-content 403, Facebook's 190 and rate limit 4, and "take the post,
then fail to answer" (reset, 500, or hold the answer until the test SIGKILLs
the worker), the crash window between the remote call and the record."""

import base64
import hashlib
import hmac
import http.server
import json
import random
import re
import secrets
import socket
import socketserver
import struct
import threading
import time
import urllib.parse


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

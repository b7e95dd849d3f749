"""Fake CDN and storage services for the delivery tests: each a standard-library
HTTP server on a free loopback port that checks every request the way the
real service does (paths, methods, headers, JSON and XML bodies,
credentials, AWS Signature Version 4 verified here from the
specification), answers like it, and fails on demand (down, fail n times,
hang, delay). Edges (Varnish, nginx, prewarm), Fastly, Cloudflare,
CloudFront and S3; the credentials the tests hand the drivers."""

import datetime
import hashlib
import hmac
import http.server
import json
import re
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET




BASE = "https://cdn.test"
HOST = "cdn.test"
FASTLY_SERVICE = "SU1Z0isxPaozGVKXdv0eY"
FASTLY_KEY = "fastlyKeyQ7Zr9wSECRETkey0123456789"
CF_ZONE = "023e105f4ecef8ad9ca31a8372d0c353"
CF_TOKEN = "cfTokenYp3SECRETtoken_abcdefghijklmn"
CF_API_PATH = "/client/v4"
CLOUDFRONT_DIST = "EDFDVBD6EXAMPLE"
AWS_KEY_ID = "AKIASAYINTEST0000001"
AWS_SECRET = "wJalrXUtnSECRET/K7MDENG+bPxRfiCYsayinKEY"
S3_BUCKET = "sayin-media"
S3_REGION = "eu-central-1"
SECRETS = (FASTLY_KEY, CF_TOKEN, AWS_SECRET)
EMPTY_SHA = hashlib.sha256(b"").hexdigest()


# ---------------------------------------------------------------- AWS SigV4, from the spec

AUTH_RE = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/,]+)/(\d{8})/([^/,]+)/([^/,]+)/aws4_request,"
                     r" ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})")


def _hmac(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def sigv4_check(method, raw_path, headers, key_id, secret, region, service, payload_hash,
                now=None):
    """None when the request carries a valid AWS Signature Version 4
    Authorization header, else (code, why). headers: [(name, value)] as
    received. now=None skips the clock-skew check (for the spec's vectors)."""
    def values(name):
        return [v for k, v in headers if k.lower() == name]
    auth = values("authorization")
    if len(auth) != 1:
        return ("MissingAuthenticationToken", "no Authorization header")
    m = AUTH_RE.fullmatch(auth[0])
    if not m:
        return ("AuthorizationHeaderMalformed", auth[0])
    akid, date, reg, svc, signed, signature = m.groups()
    if akid != key_id:
        return ("InvalidAccessKeyId", "unknown access key %r" % akid)
    if reg != region or svc != service:
        return ("SignatureDoesNotMatch", "scope %s/%s, expected %s/%s" % (reg, svc, region,
                                                                          service))
    amz_date = values("x-amz-date")
    if len(amz_date) != 1 or not re.fullmatch(r"\d{8}T\d{6}Z", amz_date[0]):
        return ("AccessDenied", "no valid x-amz-date: %r" % amz_date)
    amz_date = amz_date[0]
    if amz_date[:8] != date:
        return ("SignatureDoesNotMatch", "credential date %s is not x-amz-date's" % date)
    if now is not None:
        t = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        if abs(t - now) > 900:
            return ("RequestTimeTooSkewed", "x-amz-date %s" % amz_date)
    signed_list = signed.split(";")
    if signed_list != sorted(set(signed_list)) or "host" not in signed_list:
        return ("SignatureDoesNotMatch", "SignedHeaders %r" % signed)
    for name, _ in headers:
        if name.lower().startswith("x-amz-") and name.lower() not in signed_list:
            return ("AccessDenied", "%s is not signed" % name)
    canon_headers = ""
    for name in signed_list:
        vals = values(name)
        if not vals:
            return ("SignatureDoesNotMatch", "signed header %s is absent" % name)
        canon_headers += "%s:%s\n" % (name, ",".join(" ".join(v.split()) for v in vals))
    path, _, query = raw_path.partition("?")
    uri = urllib.parse.quote(urllib.parse.unquote(path), safe="/-_.~")
    if service != "s3":  # every service but S3 encodes the path twice
        uri = urllib.parse.quote(uri, safe="/-_.~")
    q = urllib.parse.parse_qsl(query, keep_blank_values=True)
    canon_query = "&".join(sorted("%s=%s" % (urllib.parse.quote(k, safe="-_.~"),
                                             urllib.parse.quote(v, safe="-_.~")) for k, v in q))
    creq = "\n".join([method, uri, canon_query, canon_headers, signed, payload_hash])
    scope = "%s/%s/%s/aws4_request" % (date, region, service)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(creq.encode("utf-8")).hexdigest()])
    k = _hmac(("AWS4" + secret).encode("utf-8"), date)
    for part in (region, service, "aws4_request"):
        k = _hmac(k, part)
    want = hmac.new(k, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, signature):
        return ("SignatureDoesNotMatch", "canonical request was:\n" + creq)


# ---------------------------------------------------------------- fake services


class Req:
    def __init__(self, method, path, headers, body, t0):
        self.method = method
        self.path = path
        self.headers = headers  # [(name, value)] as received
        self.body = body
        self.t0 = t0            # arrival (monotonic)
        self.t1 = None          # answer about to be sent
        self.status = None
        self.faulted = False    # answered by an injected failure
        self.rejected = None    # why the service refused it (a real one would too)

    def header(self, name):
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return vals[-1] if vals else None

    def header_count(self, name):
        return len([1 for k, _ in self.headers if k.lower() == name.lower()])

    def __repr__(self):
        return "%s %s -> %s%s" % (self.method, self.path, self.status,
                                  " (%s)" % self.rejected if self.rejected else "")


class Fake:
    """A fake service: service(req) -> (status, headers, body) answers what
    got past the injected faults. Faults: down(status, headers, body) fails
    everything until up(); fail(n, ...) fails the next n requests;
    hang() holds every request until release(); delay(s) slows each."""

    def __init__(self, name, service):
        self.name = name
        self.service = service
        self.lock = threading.Lock()
        self.reqs = []
        self.faults = []        # [[remaining, status, headers, body]]
        self.down_answer = None
        self.hanging = False
        self.released = threading.Event()
        self.delay_s = 0.0
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_one(self):
                fake._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_PURGE = do_HEAD = handle_one

        class Server(http.server.ThreadingHTTPServer):
            # socketserver's backlog of 5 drops the SYNs of a burst of
            # connections: the client then retries a second later.
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    # -- faults
    def down(self, status=503, headers=(), body=b"down for maintenance"):
        with self.lock:
            self.down_answer = (status, list(headers), body)

    def up(self):
        with self.lock:
            self.down_answer = None
            self.faults = []

    def fail(self, n, status=503, headers=(), body=b"try later"):
        with self.lock:
            self.faults.append([n, status, list(headers), body])

    def hang(self):
        with self.lock:
            self.hanging = True
            self.released.clear()

    def release(self):
        with self.lock:
            self.hanging = False
        self.released.set()

    def delay(self, seconds):
        self.delay_s = seconds

    # -- what arrived
    def requests(self, ok_only=True):
        with self.lock:
            return [r for r in self.reqs if not (ok_only and (r.faulted or r.rejected))]

    def rejections(self):
        with self.lock:
            return [r for r in self.reqs if r.rejected]

    def clear(self):
        with self.lock:
            self.reqs = []

    def stop(self):
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, h):
        t0 = time.monotonic()
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else b""
        req = Req(h.command, h.path, list(h.headers.items()), body, t0)
        with self.lock:
            self.reqs.append(req)
            hang = self.hanging
            answer = self.down_answer
            if answer is None and self.faults:
                f = self.faults[0]
                f[0] -= 1
                if f[0] <= 0:
                    self.faults.pop(0)
                answer = (f[1], f[2], f[3])
        if hang:
            self.released.wait(30)
        if self.delay_s:
            time.sleep(self.delay_s)
        if answer is not None:
            req.faulted = True
            status, headers, out = answer
        else:
            status, headers, out = self.service(req)
        req.status = status
        # Stamped before the answer leaves: the client cannot act on it
        # earlier, so "answered before B started" is exact in this order.
        req.t1 = time.monotonic()
        try:
            h.send_response(status)
            for k, v in headers:
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(out)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(out)
            h.wfile.flush()
        except OSError:
            pass  # the client is gone (killed): nothing to answer


def _json(obj):
    return [("Content-Type", "application/json")], json.dumps(obj).encode()


def edge_service(req):
    """A Varnish or nginx edge (and a prewarm target): PURGE of a URL it does
    not hold is 404 (the purge module's answer), an xkey purge is 200, GET
    is 200."""
    if req.method == "PURGE":
        if req.header("xkey-purge") is not None or req.header("xkey-softpurge") is not None:
            return 200, [], b"Invalidated 3 objects"
        return 404, [], b"not cached"
    if req.method == "GET":
        return 200, [("Content-Type", "text/plain")], b"warm"
    req.rejected = "method %s" % req.method
    return 405, [], b""


def fastly_service(req):
    """Fastly's purge API: POST /service/{id}/purge/{key} and POST
    /purge/{host}{path}, authenticated by Fastly-Key."""
    if req.header("Fastly-Key") != FASTLY_KEY:
        req.rejected = "bad Fastly-Key"
        return (401,) + tuple(_json({"msg": "Provided credentials are missing or invalid"}))
    m = re.fullmatch(r"/service/([^/]+)/purge/([^/?]+)", req.path)
    if req.method != "POST" or not (m and m.group(1) == FASTLY_SERVICE or
                                    req.path.startswith("/purge/" + HOST + "/")):
        req.rejected = "no such endpoint"
        return (404,) + tuple(_json({"msg": "Record not found"}))
    if req.header("Accept") != "application/json":
        req.rejected = "Accept is %r" % req.header("Accept")
        return 406, [], b""
    if req.header("Fastly-Soft-Purge") not in (None, "1"):
        req.rejected = "Fastly-Soft-Purge %r" % req.header("Fastly-Soft-Purge")
        return (400,) + tuple(_json({"msg": "bad soft purge"}))
    return (200,) + tuple(_json({"status": "ok", "id": uuid.uuid4().hex[:20]}))


def cloudflare_service(req):
    """POST {api}/zones/{zone}/purge_cache with a Bearer token and a JSON body
    of one purge kind, at most 30 entries."""
    def error(status, code, message):
        req.rejected = message
        return (status,) + tuple(_json({"success": False, "errors": [
            {"code": code, "message": message}], "messages": [], "result": None}))
    if req.header("Authorization") != "Bearer " + CF_TOKEN:
        return error(403, 10000, "Authentication error")
    if req.method != "POST" or req.path != "%s/zones/%s/purge_cache" % (CF_API_PATH, CF_ZONE):
        return error(404, 7003, "Could not route to %s" % req.path)
    if (req.header("Content-Type") or "").split(";")[0] != "application/json":
        return error(400, 6003, "Invalid request headers")
    try:
        doc = json.loads(req.body)
    except ValueError:
        return error(400, 1012, "Request must contain one of \"purge_everything\" or "
                     "\"files\", or \"tags\", or \"hosts\" or \"prefixes\"")
    kinds = [k for k in ("files", "tags", "hosts", "prefixes", "purge_everything") if k in doc]
    if len(kinds) != 1 or set(doc) != set(kinds):
        return error(400, 1012, "exactly one purge kind per request: %r" % sorted(doc))
    items = doc[kinds[0]]
    if not isinstance(items, list) or not items or len(items) > 30 or \
            not all(isinstance(i, str) for i in items):
        return error(400, 1015, "%s: 1 to 30 strings" % kinds[0])
    if kinds[0] == "files" and not all(i.startswith(BASE + "/") for i in items):
        return error(400, 1016, "files must be absolute URLs in the zone: %r" % items)
    return (200,) + tuple(_json({"success": True, "errors": [], "messages": [],
                                 "result": {"id": uuid.uuid4().hex}}))


CF_NS = "http://cloudfront.amazonaws.com/doc/2020-05-31/"


class CloudFront:
    """CreateInvalidation: SigV4 (cloudfront, us-east-1), an
    InvalidationBatch; a repeated CallerReference with the same batch
    returns the invalidation made before, with another batch 409."""

    def __init__(self):
        self.by_ref = {}

    @staticmethod
    def error(req, status, code, message):
        req.rejected = "%s: %s" % (code, message)
        body = ('<?xml version="1.0"?><ErrorResponse xmlns="%s"><Error><Type>Sender</Type>'
                '<Code>%s</Code><Message>%s</Message></Error><RequestId>%s</RequestId>'
                '</ErrorResponse>' % (CF_NS, code, message.replace("&", "&amp;").replace(
                    "<", "&lt;"), uuid.uuid4())).encode()
        return status, [("Content-Type", "text/xml")], body

    def __call__(self, req):
        body_sha = hashlib.sha256(req.body).hexdigest()
        bad = sigv4_check(req.method, req.path, req.headers, AWS_KEY_ID, AWS_SECRET,
                          "us-east-1", "cloudfront", body_sha, now=time.time())
        if bad:
            return self.error(req, 403, bad[0], bad[1])
        if req.header("x-amz-content-sha256") != body_sha:
            return self.error(req, 400, "InvalidArgument", "x-amz-content-sha256 %r is not "
                              "the body's" % req.header("x-amz-content-sha256"))
        if req.method != "POST" or \
                req.path != "/2020-05-31/distribution/%s/invalidation" % CLOUDFRONT_DIST:
            return self.error(req, 404, "NoSuchDistribution", req.path)
        try:
            root = ET.fromstring(req.body)
        except ET.ParseError as e:
            return self.error(req, 400, "MalformedXML", str(e))
        ns = "{%s}" % CF_NS
        paths = root.find(ns + "Paths")
        ref = root.findtext(ns + "CallerReference")
        if root.tag != ns + "InvalidationBatch" or paths is None or not ref:
            return self.error(req, 400, "MalformedInput", "not an InvalidationBatch")
        items = [p.text for p in paths.findall(ns + "Items/" + ns + "Path")]
        qty = paths.findtext(ns + "Quantity")
        if qty != str(len(items)) or not items or not all(i and i.startswith("/") for i in items):
            return self.error(req, 400, "InvalidArgument", "Quantity %s for %r" % (qty, items))
        if len(items) > 3000:
            return self.error(req, 400, "TooManyInvalidationsInProgress", "too many paths")
        batch = (tuple(items), ref)
        if ref in self.by_ref and self.by_ref[ref][0] != batch:
            return self.error(req, 409, "InvalidationBatchAlreadyExists", ref)
        inv_id = self.by_ref.setdefault(ref, (batch, "I" + uuid.uuid4().hex[:13].upper()))[1]
        out = ('<?xml version="1.0"?><Invalidation xmlns="%s"><Id>%s</Id><Status>InProgress'
               '</Status><CreateTime>%s</CreateTime>' % (CF_NS, inv_id, datetime.datetime.now(
                   datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"))).encode()
        out += req.body[req.body.index(b"<InvalidationBatch"):] + b"</Invalidation>"
        return 201, [("Content-Type", "text/xml"), ("Location", "https://cloudfront.amazonaws"
                     ".com/2020-05-31/distribution/%s/invalidation/%s" % (CLOUDFRONT_DIST,
                                                                          inv_id))], out


class S3:
    """A path-style S3 bucket: PUT and DELETE object with SigV4 (s3,
    S3_REGION) and x-amz-content-sha256 matching the body; keeps the bytes,
    Content-Type and Cache-Control."""

    def __init__(self):
        self.objects = {}  # key (path in the bucket) -> (bytes, content type, cache control)

    @staticmethod
    def error(req, status, code, message):
        req.rejected = "%s: %s" % (code, message)
        body = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s'
                '</Message></Error>' % (code, message.replace("&", "&amp;").replace(
                    "<", "&lt;"))).encode()
        return status, [("Content-Type", "application/xml")], body

    def __call__(self, req):
        sha = req.header("x-amz-content-sha256")
        if sha is None:
            return self.error(req, 400, "InvalidRequest", "Missing required header for this "
                              "request: x-amz-content-sha256")
        if req.header_count("x-amz-content-sha256") != 1:
            return self.error(req, 400, "InvalidRequest", "x-amz-content-sha256 repeated")
        bad = sigv4_check(req.method, req.path, req.headers, AWS_KEY_ID, AWS_SECRET, S3_REGION,
                          "s3", sha, now=time.time())
        if bad:
            return self.error(req, 403, bad[0], bad[1])
        if sha != hashlib.sha256(req.body).hexdigest():
            return self.error(req, 400, "XAmzContentSHA256Mismatch", "the body's hash differs")
        bucket, _, key = req.path.lstrip("/").partition("/")
        if bucket != S3_BUCKET:
            return self.error(req, 404, "NoSuchBucket", bucket)
        if not key or "?" in key:
            return self.error(req, 400, "InvalidRequest", "object requests only: %s" % req.path)
        if req.method == "PUT":
            if req.header("Content-Length") is None:
                return self.error(req, 411, "MissingContentLength", key)
            self.objects["/" + key] = (req.body, req.header("Content-Type"),
                                       req.header("Cache-Control"))
            return 200, [("ETag", '"%s"' % hashlib.md5(req.body).hexdigest())], b""
        if req.method == "DELETE":
            self.objects.pop("/" + key, None)
            return 204, [], b""
        return self.error(req, 405, "MethodNotAllowed", req.method)


def fake_services():
    """The `fakes` fixture (conftest.py): yields make(kind), which starts the
    fake of one service (edge, fastly, cloudflare, cloudfront, s3); stops
    them all at teardown."""
    made = []

    def make(kind):
        service = {"edge": edge_service, "fastly": fastly_service,
                   "cloudflare": cloudflare_service}.get(kind)
        if kind == "cloudfront":
            service = CloudFront()
        elif kind == "s3":
            service = S3()
        f = Fake(kind, service)
        made.append(f)
        return f
    yield make
    for f in made:
        f.stop()

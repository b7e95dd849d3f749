"""CDN delivery through the outbox: every driver against a local fake of its
service that checks each request the way the real one does (paths, methods,
headers, JSON and XML bodies, credentials, AWS Signature Version 4 verified
here in Python from the specification), answers like it, and fails on
demand; and the outbox's guarantees: stage order, retries with backoff and
Retry-After, parking and retry, leases between concurrent pushes, kill -9
mid-flight, and `serve` delivering on its own with /metrics.

Every fake is a standard-library HTTP server on a free loopback port,
stopped at teardown with every process the test started."""

import datetime
import hashlib
import hmac
import http.server
import json
import math
import re
import signal
import subprocess
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

import pytest

from helpers.api import author_add, author_token, start_api
from helpers.audio import write_noise_wav
from helpers.procs import clean_env, wait_for

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
    return None


def test_sigv4_checker_matches_the_aws_documentation_example():
    """The verifier itself, on the GET Object example of the S3 SigV4
    documentation (its published signature), and a one-bit change refused."""
    headers = [("Host", "examplebucket.s3.amazonaws.com"), ("Range", "bytes=0-9"),
               ("x-amz-content-sha256", EMPTY_SHA), ("x-amz-date", "20130524T000000Z"),
               ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/"
                "us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;"
                "x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6"
                "036bdb41")]
    key = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1", "s3")
    assert sigv4_check("GET", "/test.txt", headers, *key, EMPTY_SHA) is None
    assert sigv4_check("GET", "/test.txt", headers, *key, EMPTY_SHA,
                       now=time.time())[0] == "RequestTimeTooSkewed"
    assert sigv4_check("GET", "/test.txU", headers, *key, EMPTY_SHA)[0] == "SignatureDoesNotMatch"
    assert sigv4_check("PUT", "/test.txt", headers, *key, EMPTY_SHA)[0] == "SignatureDoesNotMatch"
    bad = [(k, v.replace("bytes=0-9", "bytes=0-8")) for k, v in headers]
    assert sigv4_check("GET", "/test.txt", bad, *key, EMPTY_SHA)[0] == "SignatureDoesNotMatch"
    assert sigv4_check("GET", "/test.txt", headers, key[0], "x" + key[1], *key[2:],
                       EMPTY_SHA)[0] == "SignatureDoesNotMatch"


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


@pytest.fixture
def fakes():
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


# ---------------------------------------------------------------- the programs


def driver_args(kind, fake, extra=None):
    """Settings that point driver kind at fake."""
    if kind in ("varnish", "nginx", "prewarm"):
        edges = fake if isinstance(fake, (list, tuple)) else [fake]
        a = ["--%s-edges" % kind, ",".join(f.url for f in edges)]
    elif kind == "fastly":
        a = ["--fastly-service-id", FASTLY_SERVICE, "--fastly-api-key", FASTLY_KEY,
             "--fastly-api-url", fake.url]
    elif kind == "cloudflare":
        a = ["--cloudflare-zone-id", CF_ZONE, "--cloudflare-api-token", CF_TOKEN,
             "--cloudflare-api-url", fake.url + CF_API_PATH]
    elif kind == "cloudfront":
        a = ["--cloudfront-distribution-id", CLOUDFRONT_DIST, "--cloudfront-api-url", fake.url,
             "--aws-access-key-id", AWS_KEY_ID, "--aws-secret-access-key", AWS_SECRET]
    elif kind == "s3":
        a = ["--s3-bucket", S3_BUCKET, "--s3-endpoint", fake.url, "--aws-access-key-id",
             AWS_KEY_ID, "--aws-secret-access-key", AWS_SECRET, "--aws-region", S3_REGION]
    else:
        raise ValueError(kind)
    return a + list(extra or ())


def run(sayin, cmd, data, args=(), timeout=30):
    return sayin.run(sayin.publisher, [cmd, "--data", str(data), "--public-url", BASE]
                     + [str(a) for a in args], timeout=timeout)


def push(sayin, data, args, expect=0):
    r = run(sayin, "push", data, args)
    if expect is not None:
        assert r.returncode == expect, "push exit %d:\n%s\n%s" % (r.returncode, r.stdout,
                                                                   r.stderr)
    return r


def popen_push(sayin, data, args):
    p = subprocess.Popen([sayin.publisher, "push", "--data", str(data), "--public-url", BASE]
                         + [str(a) for a in args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                         env=clean_env(), cwd=sayin.workdir)
    sayin.procs.append(p)
    return p


def status(sayin, data, args=()):
    r = run(sayin, "status", data, args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def outbox(data):
    """Every job record in the outbox (decoded from `mdb_dump -s outbox`)."""
    out = subprocess.run(["mdb_dump", "-s", "outbox", str(data)], capture_output=True,
                         text=True, timeout=30)
    if out.returncode != 0 and "MDB_NOTFOUND" in out.stderr:
        return []
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    body = [l.strip() for l in lines[lines.index("HEADER=END") + 1:] if l != "DATA=END"]
    return [json.loads(bytes.fromhex(body[i + 1])) for i in range(0, len(body), 2)]


def post(sayin, data, wav, args, author="ann", text=None):
    return sayin.post(data, author, wav, text=text, args=["--public-url", BASE] + list(args)).json


def path_of(url):
    assert url.startswith(BASE + "/"), url
    return url[len(BASE):]


def check_publish_payload(job, p, author="ann"):
    """The publish job names everything the post made: feed, author page,
    post pages and the new objects."""
    pl = job["payload"]
    assert pl["event"] == "publish" and pl["post"] == p["id"] and pl["author"] == author, pl
    for path in ("/u/%s/feed.json" % author, "/u/%s/" % author, "/p/" + p["id"]):
        assert path in pl["paths"], (path, pl["paths"])
    assert "feed-" + author in pl["keys"] and "post-" + p["id"] in pl["keys"], pl["keys"]
    objs = {o["path"] for o in pl["objects"]}
    for k in ("audio_url", "fallback_url", "waveform_url"):
        assert path_of(p[k]) in objs, (k, objs)
    assert pl["removed"] == [], pl


# ---------------------------------------------------------------- what each driver must send


def expected_requests(kind, job, extra=()):
    """The exact requests (as signature() describes them) the driver sends
    for one job."""
    pl, out = job["payload"], []
    changed = pl["paths"] + pl["removed"]
    if kind in ("varnish", "nginx"):
        out += [("PURGE", p, "") for p in changed]
        if kind == "varnish" and pl["keys"]:
            name = "xkey-softpurge" if "soft" in extra else "xkey-purge"
            out.append(("PURGE", "/", "%s: %s" % (name, " ".join(pl["keys"]))))
    elif kind == "prewarm":
        # One GET per variant the edge keeps of a name (no Accept-Encoding:
        # identity), one per object.
        out += [("GET", p, e) for p in pl["paths"] for e in ("br", "gzip", "identity")]
        out += [("GET", o["path"], "br") for o in pl["objects"]]
    elif kind == "fastly":
        soft = "soft" if "soft" in extra else ""
        out += [("POST", "/service/%s/purge/%s" % (FASTLY_SERVICE, k), soft) for k in pl["keys"]]
        out += [("POST", "/purge/%s%s" % (HOST, p), soft) for p in pl["removed"]]
    elif kind == "cloudflare":
        path = "%s/zones/%s/purge_cache" % (CF_API_PATH, CF_ZONE)
        files = [BASE + p for p in (pl["removed"] if "tags" in extra else changed)]
        for i in range(0, len(files), 30):
            out.append(("POST", path, json.dumps({"files": files[i:i + 30]})))
        if "tags" in extra and pl["keys"]:
            out.append(("POST", path, json.dumps({"tags": pl["keys"]})))
    elif kind == "cloudfront":
        out.append(("POST", "/2020-05-31/distribution/%s/invalidation" % CLOUDFRONT_DIST,
                    json.dumps([changed, "sayin-" + job["id"]])))
    elif kind == "s3":
        raise AssertionError("s3 is checked against the origin")
    return sorted(out)


def signature(kind, r):
    if kind in ("varnish", "nginx"):
        xk = [(k.lower(), v) for k, v in r.headers if k.lower().startswith("xkey")]
        return (r.method, r.path, "%s: %s" % xk[0] if xk else "")
    if kind == "prewarm":
        return (r.method, r.path, r.header("Accept-Encoding") or "identity")
    if kind == "fastly":
        return (r.method, r.path, "soft" if r.header("Fastly-Soft-Purge") == "1" else "")
    if kind == "cloudflare":
        return (r.method, r.path, json.dumps(json.loads(r.body)))
    if kind == "cloudfront":
        root = ET.fromstring(r.body)
        ns = "{%s}" % CF_NS
        return (r.method, r.path, json.dumps([
            [p.text for p in root.iter(ns + "Path")], root.findtext(ns + "CallerReference")]))
    raise ValueError(kind)


def assert_sent(kind, fake, jobs, extra=()):
    want = sorted(x for j in jobs for x in expected_requests(kind, j, extra))
    got = sorted(signature(kind, r) for r in fake.requests())
    assert got == want, "requests differ from the jobs'\n got: %r\nwant: %r" % (got, want)


def assert_bucket_mirrors_origin(bucket, origin, gone=()):
    """Every object and name in the bucket has the bytes, Content-Type and
    Cache-Control the origin serves for it (identity encoding)."""
    assert bucket, "the bucket is empty"
    for key, (data, ctype, cache) in sorted(bucket.items()):
        path = key[:-len("index.html")] if key.endswith("/index.html") else key
        r = origin.get(path)
        assert r.status == 200, (path, r)
        assert data == r.body, "%s: bucket bytes differ from the origin's" % key
        assert ctype == r.header("Content-Type"), (key, ctype, r.header("Content-Type"))
        assert cache == r.header("Cache-Control"), (key, cache, r.header("Cache-Control"))
    for path in gone:
        assert path not in bucket and path + "index.html" not in bucket, path


def s3_keys_for(job):
    pl = job["payload"]
    keys = {o["path"] for o in pl["objects"]}
    keys |= {p + "index.html" if p.endswith("/") else p for p in pl["paths"]}
    return keys


# ---------------------------------------------------------------- each driver

DRIVERS = [("varnish", ()), ("varnish", ("--varnish-soft-purge", "on")), ("nginx", ()),
           ("prewarm", ()), ("fastly", ()), ("fastly", ("--fastly-soft-purge", "on")),
           ("cloudflare", ()), ("cloudflare", ("--cloudflare-purge-by", "tags")),
           ("cloudfront", ()), ("s3", ())]


@pytest.mark.parametrize("kind,extra", DRIVERS, ids=["-".join((k,) + e[1:]) for k, e in DRIVERS])
def test_driver_sends_exactly_what_the_service_expects(sayin, tmp_path, fakes, short_wav, kind,
                                                       extra):
    """A publish then `push` sends exactly the job's requests, each accepted
    by the fake service; a delete through the API sends the removals."""
    data = tmp_path / "store"
    edge_kind = kind in ("varnish", "nginx", "prewarm")
    fake = [fakes("edge"), fakes("edge")] if edge_kind else fakes(kind)
    flakes = fake if edge_kind else [fake]
    args = driver_args(kind, fake, extra)
    flags = tuple(a for a in extra if a in ("on", "tags"))
    flags = tuple("soft" if f == "on" else f for f in flags)

    p = post(sayin, data, short_wav, args)
    jobs = outbox(data)
    assert [j["target"] for j in jobs] == [kind], jobs
    check_publish_payload(jobs[0], p)
    r = push(sayin, data, args)
    assert "delivered 1, failed 0" in r.stdout, r.stdout
    assert outbox(data) == []
    for f in flakes:
        assert f.rejections() == [], f.rejections()
        if kind == "s3":
            assert set(f.service.objects) == s3_keys_for(jobs[0])
        else:
            assert_sent(kind, f, jobs, flags)
            f.clear()
    if kind == "s3":
        origin = sayin.start_origin(data)
        assert_bucket_mirrors_origin(fake.service.objects, origin)

    # Delete through the API; serve's worker fails once (503) and parks
    # the job (max attempts 1) so that its payload can be read, then a push
    # delivers it.
    token = author_token(sayin, data, "ann")
    for f in flakes:
        f.down(503)
    api = start_api(sayin, data, args=args + ["--outbox-max-attempts", "1"], base=BASE)
    d = api.delete(token, p["id"])
    assert d.status in (200, 204), d
    parked = wait_for(lambda: [j for j in outbox(data) if j["parked"]], timeout=5)
    assert parked, (outbox(data), api.log())
    assert api.stop() == 0, api.log()
    del_jobs = outbox(data)
    assert len(del_jobs) == 1 and del_jobs[0]["payload"]["event"] == "delete", del_jobs
    pl = del_jobs[0]["payload"]
    objs = {o["path"] for o in jobs[0]["payload"]["objects"]}
    assert objs <= set(pl["removed"]), (objs, pl["removed"])
    assert "/p/" + p["id"] in pl["removed"] and "/u/ann/feed.json" in pl["paths"], pl
    for f in flakes:
        f.up()
        f.clear()
    r = run(sayin, "retry", data, ["--all"])
    assert r.returncode == 0 and "1 job made due again" in r.stdout, (r.stdout, r.stderr)
    push(sayin, data, args)
    assert outbox(data) == []
    for f in flakes:
        assert f.rejections() == [], f.rejections()
        if kind != "s3":
            assert_sent(kind, f, del_jobs, flags)
    if kind == "s3":
        assert sorted(r.method for r in fake.requests() if r.path.endswith(".opus")) == \
            ["DELETE"]
        assert_bucket_mirrors_origin(fake.service.objects, origin, gone=pl["removed"])
        assert "/u/ann/feed.json" in fake.service.objects


def test_cloudfront_retry_keeps_the_caller_reference(sayin, tmp_path, fakes, short_wav):
    """A failed invalidation is retried with the same CallerReference, so
    CloudFront never creates two for one job."""
    data = tmp_path / "store"
    cf = fakes("cloudfront")
    args = driver_args("cloudfront", cf, ["--outbox-backoff-ms", "50"])
    post(sayin, data, short_wav, args)
    cf.fail(1, 500, [("Content-Type", "text/xml")], b"<ErrorResponse><Error><Code>"
            b"ServiceUnavailable</Code></Error></ErrorResponse>")
    r = push(sayin, data, args, expect=1)
    assert "ServiceUnavailable" in status(sayin, data)
    time.sleep(0.1)
    push(sayin, data, args)
    refs = [ET.fromstring(r.body).findtext("{%s}CallerReference" % CF_NS)
            for r in cf.requests(ok_only=False)]
    assert len(refs) == 2 and refs[0] == refs[1], refs


# ---------------------------------------------------------------- the outbox


def test_stages_run_in_order_and_wait_for_the_one_before(sayin, tmp_path, fakes, short_wav):
    """s3 + fastly + prewarm: every S3 PUT answered before any purge starts,
    every purge before any prewarm GET; while S3 fails nothing later goes
    out."""
    data = tmp_path / "store"
    s3, fastly, edge = fakes("s3"), fakes("fastly"), fakes("edge")
    s3.delay(0.05)
    fastly.delay(0.05)
    args = (driver_args("s3", s3) + driver_args("fastly", fastly) + driver_args("prewarm", edge)
            + ["--outbox-backoff-ms", "50"])
    post(sayin, data, short_wav, args)
    assert [j["target"] for j in outbox(data)] == ["s3", "fastly", "prewarm"]

    s3.down(503, [("Content-Type", "application/xml")],
            b"<Error><Code>SlowDown</Code></Error>")
    r = push(sayin, data, args, expect=1)
    assert "delivered 0, failed 1" in r.stdout, r.stdout
    assert fastly.requests(ok_only=False) == [] and edge.requests(ok_only=False) == []
    assert "SlowDown" in status(sayin, data)

    s3.up()
    s3.clear()
    time.sleep(0.1)
    r = push(sayin, data, args)
    assert "delivered 3, failed 0" in r.stdout, r.stdout
    puts, purges, gets = s3.requests(), fastly.requests(), edge.requests()
    assert puts and purges and gets
    assert max(x.t1 for x in puts) <= min(x.t0 for x in purges), "a purge went before S3"
    assert max(x.t1 for x in purges) <= min(x.t0 for x in gets), "prewarm went before a purge"
    for f in (s3, fastly, edge):
        assert f.rejections() == []


def test_failing_target_recovers_every_job_once(sayin, tmp_path, fakes, wav_factory):
    """Fastly down, then rate-limiting with Retry-After, then back: every
    job is delivered exactly once in the end, backoff holds the jobs back,
    Retry-After is honoured, push exits 1 while something failed."""
    data = tmp_path / "store"
    fastly = fakes("fastly")
    # The failing process's policy sets the delay: long first (so that a
    # push right after finds nothing due), then short (so that only
    # Retry-After holds the jobs back).
    args = driver_args("fastly", fastly, ["--outbox-backoff-ms", "1500"])
    short = driver_args("fastly", fastly, ["--outbox-backoff-ms", "20"])
    for i in range(3):
        post(sayin, data, wav_factory("p%d.wav" % i, seed=i + 1), args)
    jobs = outbox(data)
    assert len(jobs) == 3

    fastly.down(503)
    r = push(sayin, data, args, expect=1)
    assert "delivered 0, failed 3" in r.stdout, r.stdout
    st = status(sayin, data)
    assert st.count("backoff") == 3 and "HTTP 503" in st, st
    # Backoff: nothing is due at once, so a push right away sends nothing.
    n = len(fastly.requests(ok_only=False))
    r = push(sayin, data, args)
    assert "delivered 0, failed 0" in r.stdout and len(fastly.requests(ok_only=False)) == n

    fastly.down(429, [("Retry-After", "2")], b'{"msg":"rate limited"}')
    assert wait_for(lambda: status(sayin, data).count("due") == 3, timeout=3, interval=0.05)
    r = push(sayin, data, short, expect=1)
    assert "delivered 0, failed 3" in r.stdout, r.stdout
    fastly.up()
    deadline = time.monotonic() + 8
    while outbox(data) and time.monotonic() < deadline:
        push(sayin, data, short, expect=None)
        time.sleep(0.1)
    assert outbox(data) == []
    # Per job (its post-ID key): the first success at least Retry-After
    # after its 429, and not far beyond.
    for j in jobs:
        key = "/post-" + j["payload"]["post"]
        mine = [x for x in fastly.requests(ok_only=False) if x.path.endswith(key)]
        t429 = max(x.t1 for x in mine if x.status == 429)
        ok = min(x.t0 for x in mine if x.status == 200)
        assert 1.9 <= ok - t429 < 4.0, "Retry-After: 2, retried after %.2f s" % (ok - t429)
    assert_sent("fastly", fastly, jobs)


def test_parked_after_max_attempts_then_retried(sayin, tmp_path, fakes, short_wav):
    data = tmp_path / "store"
    fastly, cf = fakes("fastly"), fakes("cloudflare")
    secret_args = driver_args("cloudfront", fakes("cloudfront"))  # secrets also given to status
    args = (driver_args("fastly", fastly) + driver_args("cloudflare", cf)
            + ["--outbox-max-attempts", "2", "--outbox-backoff-ms", "20"])
    post(sayin, data, short_wav, args)
    jobs = outbox(data)
    fastly.down(500, body=b'{"msg":"Internal Server Error"}')
    r = push(sayin, data, args, expect=1)
    for s in SECRETS[:2]:
        assert s not in r.stdout + r.stderr
    time.sleep(0.1)
    r = push(sayin, data, args, expect=1)
    assert "parked 1" in r.stdout, r.stdout
    st = run(sayin, "status", data, args + secret_args)
    assert st.returncode == 0
    out = st.stdout
    fid = [j["id"] for j in jobs if j["target"] == "fastly"][0]
    line = [l for l in out.splitlines() if l.startswith(fid)][0]
    assert "PARKED" in line and "attempts 2" in line and "HTTP 500" in line, out
    assert "1 parked" in out, out
    for s in SECRETS + (AWS_KEY_ID,):
        assert s not in out + st.stderr, "status prints a secret"
    assert len(cf.requests()) == 1 and not cf.rejections()

    # Parked jobs are not delivered until retried.
    fastly.up()
    n = len(fastly.requests(ok_only=False))
    push(sayin, data, args)
    assert len(fastly.requests(ok_only=False)) == n
    r = run(sayin, "retry", data, ["0" * 20])
    assert r.returncode != 0 and "no job" in r.stderr
    r = run(sayin, "retry", data, [fid])
    assert r.returncode == 0 and "1 job made due again" in r.stdout, r.stdout
    assert "due" in status(sayin, data)
    fastly.clear()
    r = push(sayin, data, args)
    assert "delivered 1" in r.stdout
    assert outbox(data) == []
    assert_sent("fastly", fastly, [j for j in jobs if j["target"] == "fastly"])


REJECTING = [("fastly", ["--fastly-api-key", "wrong-key"], "HTTP 401"),
             ("cloudflare", ["--cloudflare-api-token", "wrong-token"], "Authentication error"),
             ("cloudfront", ["--aws-secret-access-key", "wrong/secret"], "SignatureDoesNotMatch"),
             ("s3", ["--aws-access-key-id", "AKIAWRONG"], "InvalidAccessKeyId")]


@pytest.mark.parametrize("kind,bad,error", REJECTING, ids=[k for k, _, _ in REJECTING])
def test_rejected_credentials_park_at_once(sayin, tmp_path, fakes, short_wav, kind, bad, error):
    data = tmp_path / "store"
    fake = fakes(kind)
    args = driver_args(kind, fake) + bad  # the later setting wins
    post(sayin, data, short_wav, args)
    r = push(sayin, data, args, expect=1)
    assert "parked 1" in r.stdout, r.stdout
    assert fake.rejections(), "the fake accepted a wrong credential"
    out = status(sayin, data)
    assert "PARKED" in out and "attempts 1" in out and error in out, out
    for s in SECRETS + ("wrong-key", "wrong-token", "wrong/secret"):
        assert s not in out
    # The right credential after a retry.
    fake.clear()
    run(sayin, "retry", data, ["--all"])
    push(sayin, data, driver_args(kind, fake))
    assert fake.requests() and not fake.rejections()


def test_two_pushes_at_once_never_deliver_a_job_twice(sayin, tmp_path, fakes, wav_factory):
    data = tmp_path / "store"
    fastly, cf = fakes("fastly"), fakes("cloudflare")
    fastly.delay(0.2)
    cf.delay(0.2)
    args = driver_args("fastly", fastly) + driver_args("cloudflare", cf)
    for i in range(3):
        post(sayin, data, wav_factory("p%d.wav" % i, seed=i + 1), args)
    jobs = outbox(data)
    assert len(jobs) == 6
    procs = [popen_push(sayin, data, args) for _ in range(3)]
    delivered = 0
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, (out, err)
        delivered += int(re.search(r"delivered (\d+)", out).group(1))
    assert delivered == 6
    assert outbox(data) == []
    assert_sent("fastly", fastly, [j for j in jobs if j["target"] == "fastly"])
    assert_sent("cloudflare", cf, [j for j in jobs if j["target"] == "cloudflare"])


def test_kill_9_mid_flight_loses_nothing(sayin, tmp_path, fakes, short_wav):
    data = tmp_path / "store"
    fastly = fakes("fastly")
    args = driver_args("fastly", fastly, ["--outbox-lease-ms", "1000"])
    post(sayin, data, short_wav, args)
    jobs = outbox(data)
    fastly.hang()
    p = popen_push(sayin, data, args)
    assert wait_for(lambda: fastly.requests(ok_only=False), timeout=10)
    t_leased = time.monotonic()
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    fastly.release()
    assert "leased" in status(sayin, data)
    n = len(fastly.requests(ok_only=False))
    r = push(sayin, data, args)
    if time.monotonic() - t_leased < 0.8:  # the lease still held: nothing sent
        assert "delivered 0" in r.stdout and len(fastly.requests(ok_only=False)) == n
    time.sleep(max(0.0, t_leased + 1.1 - time.monotonic()))
    fastly.clear()
    r = push(sayin, data, args)
    assert "delivered 1, failed 0" in r.stdout, r.stdout
    assert outbox(data) == []
    assert_sent("fastly", fastly, jobs)


def test_serve_delivers_on_its_own_with_metrics(sayin, tmp_path, fakes, short_wav):
    data = tmp_path / "store"
    edge, fastly = fakes("edge"), fakes("fastly")
    args = (driver_args("varnish", edge) + driver_args("fastly", fastly)
            + ["--outbox-backoff-ms", "100"])
    token = author_add(sayin, data, "alice", args=("--public-url", BASE))
    api = start_api(sayin, data, args=args, base=BASE)
    fastly.fail(1, 503)
    r = api.post_raw(token, short_wav.read_bytes())
    t_ack = time.monotonic()
    assert r.status == 201, r
    pid = r.json()["id"]

    def feed_purged():
        return [x for x in edge.requests() if x.path == "/u/alice/feed.json"]
    assert wait_for(feed_purged, timeout=3), edge.requests(ok_only=False)
    lag = feed_purged()[0].t0 - t_ack
    assert lag < 1.0, "the feed purge reached the edge %.2f s after the ack" % lag
    assert wait_for(lambda: any(x.path.endswith("/post-" + pid) for x in fastly.requests()),
                      timeout=5), fastly.requests(ok_only=False)

    def settled():
        m = api.metrics()
        return m if m.get("sayin_outbox_depth") == 0 else None
    m = wait_for(settled, timeout=5)
    assert m, api.metrics()
    assert m['sayin_outbox_jobs_total{target="varnish",result="ok"}'] == 1, m
    assert m['sayin_outbox_jobs_total{target="fastly",result="failed"}'] == 1, m
    assert m['sayin_outbox_jobs_total{target="fastly",result="ok"}'] == 1, m
    assert m['sayin_outbox_parked'] == 0
    assert outbox(data) == []
    for s in SECRETS:
        assert s not in api.log()


def test_s3_object_over_one_mebibyte(sayin, tmp_path, fakes):
    """An object over 1 MiB (libcurl then sends Expect: 100-continue) is
    signed and stored byte for byte."""
    data = tmp_path / "store"
    wav = tmp_path / "noise.wav"
    write_noise_wav(wav, 48000, 40)
    s3 = fakes("s3")
    args = driver_args("s3", s3)
    p = post(sayin, data, wav, args + ["--bitrate", "510000"])
    push(sayin, data, args)
    assert not s3.rejections(), s3.rejections()
    audio = s3.service.objects[path_of(p["audio_url"])][0]
    assert len(audio) > 1 << 20, len(audio)
    origin = sayin.start_origin(data)
    assert_bucket_mirrors_origin(s3.service.objects, origin)

"""A real S3 implementation for the end-to-end tests: s3rver (npm, pinned in
tests/npm/package-lock.json, installed by scripts/bootstrap into
tests/npm/node_modules) on a free loopback port with its own data directory
and one bucket, plus direct access to the bucket behind the publisher's back.

    s3 = start_s3rver(str(tmp_path / "s3"))   # bucket "sayin-media"
    ...publisher args: s3.publisher_args()
    s3.keys(), s3.get(key), s3.head(key), s3.put(key, body, ...), s3.delete(key)
    s3.gets(key)            GET requests s3rver received for key so far
    s3.gets(key, unsigned=True)   only the unsigned ones (an edge's)
    s3.requests()           every request received: [(method, raw target)]
    s3.signature_errors()   writes not signed, or whose SigV4 does not verify
    start_storage_varnish(base, s3)   a Varnish edge whose backend is the bucket
                            (cdn-config/varnish/storage-site.vcl as its site.vcl)

A key is given as the bucket names it ("u/ann/feed.json") or as a URL path
("/u/ann/feed.json"); a name's gzip and brotli variants are the keys
"_gzip/" + key and "_br/" + key (publisher/deliver/cdn/s3.c).
    s3.stop(); s3.start()   down and up again on the same port and directory
    s3.pause(); s3.resume() frozen (SIGSTOP) and going again

s3rver is started through its JavaScript API by a few lines of node (below)
rather than its CLI, for one reason: the script appends one line per request
received (method, raw target) to requests.log synchronously, before s3rver
handles it. So by the time any client has the answer, the request is on
disk, and counting storage fetches is exact, not a race with a log flush
(s3rver's own log is asynchronous, coloured and cut). s3rver checks the
access key of every signed request against its one account (access key and
secret S3RVER; it does not verify a SigV4 signature: signature_errors()
does, from the headers logged) and, like a public-read bucket, answers
unsigned reads: that is what an edge whose backend is the bucket sends.
"""

import datetime
import hashlib
import hmac
import http.client
import json
import os
import signal
import subprocess
import time
import urllib.parse
import xml.etree.ElementTree as ET

import pytest

from helpers.procs import free_port, read_log

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
NPM_DIR = os.path.join(REPO, "tests", "npm")
BUCKET = "sayin-media"
ACCESS_KEY = "S3RVER"      # s3rver's built-in account
SECRET_KEY = "S3RVER"
REGION = "us-east-1"       # s3rver accepts any region in the signature's scope
S3_NS = "{http://doc.s3.amazonaws.com/2006-03-01/}"

# Started as `node -e RUNNER PORT DIR BUCKET REQLOG`, cwd tests/npm (so
# require finds s3rver in tests/npm/node_modules).
RUNNER = r"""
const fs = require('fs');
const S3rver = require('s3rver');
const [port, dir, bucket, reqlog] = process.argv.slice(1);
const fd = fs.openSync(reqlog, 'a');
const s3 = new S3rver({ address: '127.0.0.1', port: Number(port), directory: dir,
                        silent: true, configureBuckets: [{ name: bucket, configs: [] }] });
s3.run().then((addr) => {
  s3.httpServer.prependListener('request', (req) => {
    fs.writeSync(fd, JSON.stringify([req.method, req.url, req.rawHeaders]) + '\n');
  });
  console.log('s3rver ready on ' + addr.address + ':' + addr.port);
}, (err) => { console.error('s3rver failed: ' + err.message); process.exit(1); });
const stop = () => s3.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
"""


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # [(name, value)] as received
        self.body = body

    def header(self, name):
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return vals[-1] if vals else None

    def meta(self):
        """The object's user metadata: {name without x-amz-meta-: value}."""
        return {k.lower()[len("x-amz-meta-"):]: v for k, v in self.headers
                if k.lower().startswith("x-amz-meta-")}

    def __repr__(self):
        return "<%d %r %r>" % (self.status, self.headers, self.body[:300])


def _hmac(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def sign_v4(method, path, query, headers, body, host, now=None):
    """Adds x-amz-date, x-amz-content-sha256 and an AWS SigV4 Authorization
    (s3rver's account, service s3) to headers (a dict, changed in place).
    path is the encoded path; query a list of (name, value)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    payload = hashlib.sha256(body).hexdigest()
    headers["x-amz-date"] = amz_date
    headers["x-amz-content-sha256"] = payload
    signed = {"host": host}
    signed.update({k.lower(): str(v).strip() for k, v in headers.items()})
    names = sorted(signed)
    canon_headers = "".join("%s:%s\n" % (n, signed[n]) for n in names)
    canon_query = "&".join(sorted("%s=%s" % (urllib.parse.quote(k, safe="-_.~"),
                                             urllib.parse.quote(v, safe="-_.~"))
                                  for k, v in query))
    creq = "\n".join([method, path, canon_query, canon_headers, ";".join(names), payload])
    scope = "%s/%s/s3/aws4_request" % (date, REGION)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(creq.encode("utf-8")).hexdigest()])
    k = _hmac(("AWS4" + SECRET_KEY).encode("utf-8"), date)
    for part in (REGION, "s3", "aws4_request"):
        k = _hmac(k, part)
    sig = hmac.new(k, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    headers["Authorization"] = ("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, "
                                "Signature=%s" % (ACCESS_KEY, scope, ";".join(names), sig))


class S3rver:
    """One s3rver on 127.0.0.1:port serving bucket from directory base/data."""

    def __init__(self, base, bucket=BUCKET):
        self.base = base
        self.bucket = bucket
        self.data_dir = os.path.join(base, "data")
        self.reqlog = os.path.join(base, "requests.log")
        self.port = None
        self.proc = None
        self.log_path = None
        self._starts = 0
        os.makedirs(self.data_dir, exist_ok=True)

    @property
    def url(self):
        """The endpoint (path-style: {url}/{bucket}/{key})."""
        return "http://127.0.0.1:%d" % self.port

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def publisher_args(self):
        """The publisher's options for the s3 driver to this bucket."""
        return ["--s3-bucket", self.bucket, "--s3-endpoint", self.url,
                "--aws-access-key-id", ACCESS_KEY, "--aws-secret-access-key", SECRET_KEY,
                "--aws-region", REGION]

    # ------------------------------------------------------------ process

    def start(self, timeout=30.0):
        """Starts s3rver: on a free port the first time, on the same port
        (and directory: the bucket's objects stay) after stop()."""
        assert not self.running, "s3rver is already running"
        if not os.path.isdir(os.path.join(NPM_DIR, "node_modules", "s3rver")):
            pytest.fail("s3rver is not installed in tests/npm/node_modules (run scripts/bootstrap)")
        fixed = self.port is not None
        last = ""
        for attempt in range(1 if fixed else 5):
            if not fixed:
                self.port = free_port()
            self._starts += 1
            self.log_path = os.path.join(self.base, "s3rver-%d.log" % self._starts)
            with open(self.log_path, "wb") as logf:
                self.proc = subprocess.Popen(
                    ["node", "-e", RUNNER, str(self.port), self.data_dir, self.bucket,
                     self.reqlog], cwd=NPM_DIR, stdout=logf, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if "s3rver ready" in read_log(self.log_path):
                    return self
                time.sleep(0.05)
            last = read_log(self.log_path)
            self.stop()
            if "EADDRINUSE" in last and not fixed:
                continue
            break
        pytest.fail("s3rver did not start on port %d: %s" % (self.port, last[-3000:]))

    def stop(self):
        """Stops s3rver (its port stops answering); the data stays."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)  # were it paused
            except OSError:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None

    def pause(self):
        """Freezes s3rver (SIGSTOP): connections are accepted by the kernel
        and wait, unanswered, until resume()."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def log(self):
        return read_log(self.log_path) if self.log_path else ""

    # ------------------------------------------------------------ requests received

    def requests(self, with_headers=False):
        """Every request s3rver received, in order: [(method, raw target)],
        or [(method, raw target, [(name, value)])] with_headers."""
        out = []
        try:
            with open(self.reqlog) as f:
                lines = [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return out
        for method, target, raw in lines:
            if with_headers:
                out.append((method, target, list(zip(raw[0::2], raw[1::2]))))
            else:
                out.append((method, target))
        return out

    def signature_errors(self):
        """The writes (PUT, DELETE, POST) without a signature, and the signed
        requests whose AWS SigV4 Authorization does not verify with
        s3rver's account: [(method, target, why)]. s3rver itself checks
        only the access key of a SigV4 request, not its signature, so the
        tests check it here from the headers received (the body's hash is
        taken from x-amz-content-sha256, which s3rver does not check either:
        the SigV4 checks of helpers/fakes_cdn.py's S3 cover that)."""
        from helpers.fakes_cdn import sigv4_check
        bad = []
        for method, target, headers in self.requests(with_headers=True):
            if not any(k.lower() == "authorization" for k, _ in headers):
                if method not in ("GET", "HEAD"):
                    # s3rver takes anonymous writes; a real bucket would not.
                    bad.append((method, target, ("AccessDenied", "not signed")))
                continue
            sha = [v for k, v in headers if k.lower() == "x-amz-content-sha256"]
            why = sigv4_check(method, target, headers, ACCESS_KEY, SECRET_KEY, REGION, "s3",
                              sha[0] if sha else "", now=time.time())
            if why is not None:
                bad.append((method, target, why))
        return bad

    def gets(self, key, unsigned=False):
        """How many GET requests s3rver received for key (any query string;
        HEAD is not counted). unsigned: only those without an Authorization
        (an edge's; the publisher's and this helper's are signed)."""
        target = urllib.parse.unquote(self.key_path(key))
        return sum(1 for m, t, h in self.requests(with_headers=True)
                   if m == "GET" and urllib.parse.unquote(t.partition("?")[0]) == target
                   and not (unsigned and any(k.lower() == "authorization" for k, _ in h)))

    # ------------------------------------------------------------ the bucket, directly

    def key_path(self, key):
        """The encoded path-style path of key ("u/ann/feed.json" or "/u/...")."""
        return "/%s/%s" % (self.bucket, urllib.parse.quote(key.lstrip("/"), safe="/-_.~"))

    def request(self, method, path, query=(), body=b"", headers=None, signed=True,
                timeout=30.0):
        """One request to s3rver (signed with its account unless told not)."""
        hdrs = dict(headers or {})
        if signed:
            sign_v4(method, path, list(query), hdrs, body, "127.0.0.1:%d" % self.port)
        target = path + ("?" + urllib.parse.urlencode(list(query)) if query else "")
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, target, body=body, headers=hdrs)
            r = c.getresponse()
            return Resp(r.status, r.getheaders(), r.read())
        finally:
            c.close()

    def get(self, key, headers=None):
        return self.request("GET", self.key_path(key), headers=headers)

    def head(self, key):
        return self.request("HEAD", self.key_path(key))

    def put(self, key, body, content_type="application/octet-stream", headers=None):
        """Overwrites (or creates) key behind the publisher's back."""
        hdrs = {"Content-Type": content_type}
        hdrs.update(headers or {})
        r = self.request("PUT", self.key_path(key), body=body, headers=hdrs)
        assert r.status == 200, "PUT %s: %r" % (key, r)
        return r

    def delete(self, key):
        """Deletes key behind the publisher's back."""
        r = self.request("DELETE", self.key_path(key))
        assert r.status == 204, "DELETE %s: %r" % (key, r)
        return r

    def keys(self, prefix=""):
        """Every key in the bucket (ListObjectsV2, all pages), sorted."""
        out, token = [], None
        while True:
            q = [("list-type", "2"), ("prefix", prefix)]
            if token:
                q.append(("continuation-token", token))
            r = self.request("GET", "/" + self.bucket, query=q)
            assert r.status == 200, "list %s: %r" % (self.bucket, r)
            root = ET.fromstring(r.body)
            out += [c.find(S3_NS + "Key").text for c in root.findall(S3_NS + "Contents")]
            if root.findtext(S3_NS + "IsTruncated") != "true":
                return sorted(out)
            token = root.findtext(S3_NS + "NextContinuationToken")


def start_s3rver(base, bucket=BUCKET):
    """A started S3rver with base as its directory (created); the caller
    stops it (s3.stop())."""
    os.makedirs(base, exist_ok=True)
    return S3rver(base, bucket).start()


# ---------------------------------------------------------------- a Varnish edge on the bucket

STORAGE_SITE_VCL = os.path.join(REPO, "cdn-config", "varnish", "storage-site.vcl")


def storage_site_vcl(s3):
    """cdn-config/varnish/storage-site.vcl for a test: the bucket's endpoint
    (address, Host) and name; the rest as shipped."""
    import re
    with open(STORAGE_SITE_VCL) as f:
        site = f.read()
    for pattern, repl in ((r'\.port = "\d+";', '.port = "%d";' % s3.port),
                          (r'x-sayin-bucket = "[^"]*";', 'x-sayin-bucket = "%s";' % s3.bucket),
                          (r'http\.Host = "[^"]*";', 'http.Host = "127.0.0.1:%d";' % s3.port)):
        site, n = re.subn(pattern, repl, site, count=1)
        assert n == 1, "no %s in cdn-config/varnish/storage-site.vcl" % pattern
    return site


def start_storage_varnish(base, s3, ready_timeout=60.0, params=()):
    """varnishd with cdn-config/varnish/sayin.vcl (copied unchanged) and
    storage-site.vcl as its site.vcl, its backend the bucket of s3 (an
    S3rver), the way helpers.edges.start_varnish runs it. The edge answers
    the readiness probe (HEAD /healthz) itself: sayin.vcl refuses admin
    paths with a 404 without asking the bucket."""
    import shutil
    from helpers.edges import VARNISH_VCL, VarnishEdge, _start_edge
    from helpers.procs import find_program
    varnishd = find_program("varnishd", "varnish")
    os.makedirs(base, exist_ok=True)
    vcl_path = os.path.join(base, "sayin.vcl")
    shutil.copyfile(VARNISH_VCL, vcl_path)
    with open(os.path.join(base, "site.vcl"), "w") as f:
        f.write(storage_site_vcl(s3))

    def make(port, attempt):
        workdir = os.path.join(base, "vinst-%d" % attempt)
        argv = [varnishd, "-F", "-j", "none", "-n", workdir, "-a", "127.0.0.1:%d" % port,
                "-f", vcl_path, "-s", "malloc,64m", "-T", "none",
                "-p", "http_gzip_support=off"]
        for p in params:
            argv += ["-p", p]
        return argv, lambda proc, p, log: VarnishEdge(proc, p, base, log, workdir, vcl_path)

    return _start_edge(make, base, ready_timeout)

"""Running the publisher's delivery commands (post, push, status) against the
fake services of helpers/fakes_cdn.py, reading the outbox, and what each
driver must send for a job."""

import json
import re
import subprocess
import xml.etree.ElementTree as ET

from helpers.fakes_cdn import (
    AWS_KEY_ID, AWS_SECRET, BASE, CF_API_PATH, CF_NS, CF_TOKEN, CF_ZONE, CLOUDFRONT_DIST,
    FASTLY_KEY, FASTLY_SERVICE, HOST, S3_BUCKET, S3_REGION)
from helpers.procs import clean_env


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


def status_exit(stdout):
    """What `status` must exit with for its output: 3 when a job is parked
    (it needs `retry`), else 0."""
    m = re.search(r"^outbox: .* (\d+) parked", stdout, re.M)
    assert m, stdout
    return 3 if int(m.group(1)) > 0 else 0


def status(sayin, data, args=()):
    r = run(sayin, "status", data, args)
    assert r.returncode == status_exit(r.stdout), (r.returncode, r.stdout, r.stderr)
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


# A name's gzip and brotli variants live under their own keys
# (publisher/deliver/cdn/s3.c): "/_gzip" + key and "/_br" + key.
S3_VARIANT_PREFIXES = {"": "identity", "/_gzip": "gzip", "/_br": "br"}


def s3_key_origin(key):
    """(origin path, Accept-Encoding) whose answer key holds."""
    enc = "identity"
    for prefix, coding in S3_VARIANT_PREFIXES.items():
        if prefix and key.startswith(prefix + "/"):
            key, enc = key[len(prefix):], coding
    path = key[:-len("index.html")] if key.endswith("/index.html") else key
    return path, enc


def assert_bucket_mirrors_origin(bucket, origin, gone=()):
    """Every object and name in the bucket has the bytes, Content-Type and
    Cache-Control the origin serves for it (each variant key: the answer to
    a client accepting that coding)."""
    assert bucket, "the bucket is empty"
    for key, (data, ctype, cache) in sorted(bucket.items()):
        path, enc = s3_key_origin(key)
        r = origin.get(path, headers={"Accept-Encoding": enc})
        assert r.status == 200, (path, r)
        assert data == r.body, "%s: bucket bytes differ from the origin's" % key
        assert ctype == r.header("Content-Type"), (key, ctype, r.header("Content-Type"))
        assert cache == r.header("Cache-Control"), (key, cache, r.header("Cache-Control"))
    for path in gone:
        for prefix in S3_VARIANT_PREFIXES:
            assert prefix + path not in bucket and prefix + path + "index.html" not in bucket, \
                prefix + path


def s3_keys_for(job):
    pl = job["payload"]
    keys = {o["path"] for o in pl["objects"]}
    keys |= {prefix + (p + "index.html" if p.endswith("/") else p)
             for p in pl["paths"] for prefix in S3_VARIANT_PREFIXES}
    return keys

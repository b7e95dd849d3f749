"""CDN delivery, each driver against a local fake of its service
(helpers/fakes_cdn.py) that checks each request the way the real one does
(paths, methods, headers, JSON and XML bodies, credentials, AWS Signature
Version 4 verified in Python from the specification) and answers like it:
every driver sends exactly what its service expects; CloudFront retries keep
the caller reference. The outbox's guarantees: test_delivery_outbox.py."""

import time
import xml.etree.ElementTree as ET

import pytest

from helpers.api import author_token, start_api
from helpers.delivery import (
    assert_bucket_mirrors_origin, assert_sent, check_publish_payload, driver_args, outbox, post,
    push, run, s3_keys_for, status)
from helpers.fakes_cdn import BASE, CF_NS, EMPTY_SHA, sigv4_check
from helpers.procs import wait_for


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

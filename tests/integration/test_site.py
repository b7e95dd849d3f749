"""The site identity kept in the store (issue 14, item 1): the settings
that shape published bytes are recorded by `site init` or the first
publish; every command then publishes with them, a configuration that
disagrees is refused with both values and the fix, `site set` +
`rebuild --all` change the site, URLs are validated, and outbox jobs of a
target that is no longer configured are parked and reported."""

import json

from helpers.api import author_add
from helpers.procs import EXIT_FAIL, EXIT_OK, EXIT_USAGE

A = "https://a.example"
B = "https://b.example"


def publisher(sayin, *args, env=None):
    return sayin.run(sayin.publisher, [str(a) for a in args], env=env)


def site_show(sayin, store):
    r = publisher(sayin, "site", "show", "--data", store)
    assert r.returncode == EXIT_OK, r.stderr
    return dict(line.split(" = ", 1) for line in r.stdout.splitlines())


def test_the_first_publish_records_the_site_and_every_run_then_uses_it(sayin, store, short_wav):
    r = publisher(sayin, "site", "show", "--data", store)
    assert r.returncode == EXIT_FAIL and "no site is recorded" in r.stderr, r
    sayin.post(store, "alice", short_wav, args=["--public-url", A, "--feed-items", "5"])
    site = site_show(sayin, store)
    assert site["public-url"] == A and site["feed-items"] == "5", site
    assert site["loudness-target"] == "-16" and site["bitrate"] == "32000", site

    # The accident: a run without the configuration. It publishes
    # the recorded site, not http://127.0.0.1:8080.
    j = sayin.post(store, "alice", short_wav).json
    assert j["url"].startswith(A + "/p/"), j
    token = author_add(sayin, store, "bob")
    assert token
    origin = sayin.start_origin(store)
    authors = origin.get("/authors.json")
    assert authors.status == 200
    assert b"127.0.0.1" not in authors.body and A.encode() in authors.body, authors.body
    feed = origin.get("/u/alice/feed.json").json()
    assert feed["feed_url"] == A + "/u/alice/feed.json"


def test_a_configuration_that_disagrees_is_refused_naming_both_values(sayin, store, short_wav,
                                                                       tmp_path):
    sayin.post(store, "alice", short_wav, args=["--public-url", A])
    before = site_show(sayin, store)

    p = sayin.post(store, "alice", short_wav, args=["--public-url", B], check=False)
    assert p.returncode == EXIT_USAGE, p.describe()
    for needle in ("--public-url is '%s'" % B, "public-url = '%s'" % A,
                   "sayin-publisher site set public-url %s" % B, "rebuild --all"):
        assert needle in p.stderr, (needle, p.stderr)

    p = sayin.post(store, "alice", short_wav, env={"SAYIN_FEED_ITEMS": "3"}, check=False)
    assert p.returncode == EXIT_USAGE and "$SAYIN_FEED_ITEMS is '3'" in p.stderr, p.describe()

    ini = tmp_path / "sayin.ini"
    ini.write_text("[media]\nbitrate = 24000\n")
    for args in (["author", "add", "bob", "--name", "B"], ["push"], ["rebuild", "--all"]):
        r = publisher(sayin, *(args + ["--data", store, "--config", ini]))
        assert r.returncode == EXIT_USAGE, (args, r.returncode, r.stderr)
        assert "%s:2: bitrate is '24000'" % ini in r.stderr, (args, r.stderr)
    r = sayin.run(sayin.publisher, ["serve", "--data", str(store), "--api-listen",
                                    "127.0.0.1:0", "--public-url", B], timeout=30)
    assert r.returncode == EXIT_USAGE and "public-url = '%s'" % A in r.stderr, r.stderr

    # The same value spelled otherwise is no disagreement.
    sayin.post(store, "alice", short_wav, args=["--public-url", A + "/",
                                                 "--loudness-target", "-16.0"])
    assert site_show(sayin, store) == before


def test_site_set_then_rebuild_all_rewrites_every_document(sayin, store, short_wav):
    r = publisher(sayin, "site", "init", "--data", store, "--public-url", A)
    assert r.returncode == EXIT_OK, r.stderr
    again = publisher(sayin, "site", "init", "--data", store, "--public-url", B)
    assert again.returncode == EXIT_USAGE and "site set" in again.stderr, again
    author_add(sayin, store, "alice")
    posts = [sayin.post(store, "alice", short_wav, text="p%d" % i).json["id"] for i in range(3)]
    sayin.post(store, "bob", short_wav)

    bad = publisher(sayin, "site", "set", "bitrate", "5", "--data", store)
    assert bad.returncode == EXIT_USAGE and "bitrate" in bad.stderr, bad
    bad = publisher(sayin, "site", "set", "public-url", "ftp://b", "--data", store)
    assert bad.returncode == EXIT_USAGE and "ftp://b" in bad.stderr, bad
    bad = publisher(sayin, "site", "set", "max-text", "10", "--data", store)
    assert bad.returncode == EXIT_USAGE and "not a site setting" in bad.stderr, bad
    assert site_show(sayin, store)["public-url"] == A

    r = publisher(sayin, "site", "set", "public-url", B, "--data", store)
    assert r.returncode == EXIT_OK, r.stderr
    assert "rebuild --all" in r.stdout
    assert site_show(sayin, store)["public-url"] == B
    r = publisher(sayin, "site", "set", "--feed-items", "2", "--bitrate", "24000",
                  "--data", store)
    assert r.returncode == EXIT_OK, r.stderr
    assert "feed-items: '20' -> '2'" in r.stdout, r.stdout
    site = site_show(sayin, store)
    assert (site["public-url"], site["feed-items"], site["bitrate"]) == (B, "2", "24000"), site
    # Until the rebuild, what was published still says A: the fix is
    # rebuild --all, which enqueues purges for the configured CDN.
    edge = ["--varnish-edges", "http://127.0.0.1:9"]
    r = publisher(sayin, "rebuild", "--all", "--data", store, *edge)
    assert r.returncode == EXIT_OK, r.stderr
    assert "rebuilt 2 authors, 4 posts" in r.stdout, r.stdout

    origin = sayin.start_origin(store)
    feed = origin.get("/u/alice/feed.json").json()
    assert len(feed["items"]) == 2 and feed["next_url"].startswith(B + "/"), feed
    docs = ["/authors.json", "/u/alice/feed.json", "/u/bob/feed.json", "/u/alice/",
            "/u/alice/feed/1.json"]
    docs += ["/p/%s" % p for p in posts] + ["/p/%s/embed" % p for p in posts]
    for path in docs:
        resp = origin.get(path)
        assert resp.status == 200, (path, resp)
        assert A.encode() not in resp.body, "%s still links %s" % (path, A)
        assert B.encode() in resp.body, (path, resp.body[:300])
    status = publisher(sayin, "status", "--data", store, *edge)
    jobs = [ln for ln in status.stdout.splitlines() if " varnish " in ln and "rebuild" in ln]
    assert len(jobs) == 3, status.stdout  # one per author, one for /authors.json

    # A new post uses the new site without any flag.
    assert sayin.post(store, "alice", short_wav).json["url"].startswith(B + "/p/")


def test_urls_are_validated(sayin, store, short_wav):
    for bad in ("cdn.example.com", "ftp://x", "https://", "https://x/?a=1", "https://x/#top",
                "https://x:port", "https://user@x"):
        p = sayin.post(store, "alice", short_wav, args=["--public-url", bad], check=False)
        assert p.returncode == EXIT_USAGE, (bad, p.describe())
        assert "--public-url: '%s'" % bad in p.stderr, (bad, p.stderr)
    for setting in ("--varnish-edges", "--prewarm-edges", "--fastly-api-url"):
        p = sayin.post(store, "alice", short_wav, check=False,
                       args=["--public-url", A, setting, "http://ok.example,cdn.example.com"
                             if setting.endswith("edges") else "cdn.example.com"])
        assert p.returncode == EXIT_USAGE and "cdn.example.com" in p.stderr, (setting, p.stderr)
    assert not store.exists() or "public-url" not in publisher(
        sayin, "site", "show", "--data", store).stdout

    insecure = sayin.post(store, "alice", short_wav, args=["--public-url", "http://cdn.example"])
    assert "https" in insecure.stderr and "cdn.example" in insecure.stderr, insecure.stderr
    loop = sayin.post(store.parent / "s2", "alice", short_wav,
                      args=["--public-url", "http://127.0.0.1:8080"])
    assert "share cards" not in loop.stderr, loop.stderr


def test_jobs_of_a_target_no_longer_configured_are_parked_and_reported(sayin, store, short_wav):
    edge = ["--varnish-edges", "http://127.0.0.1:9"]
    sayin.post(store, "alice", short_wav, args=["--public-url", A] + edge)
    status = publisher(sayin, "status", "--data", store)
    assert " varnish " in status.stdout and "PARKED" not in status.stdout, status.stdout

    r = publisher(sayin, "push", "--data", store)
    assert r.returncode == EXIT_FAIL, (r.stdout, r.stderr)
    assert "parked 1" in r.stdout and "not configured" in r.stdout, r.stdout
    status = publisher(sayin, "status", "--data", store)
    parked = [ln for ln in status.stdout.splitlines() if "PARKED" in ln]
    assert len(parked) == 1 and "target not configured" in parked[0], status.stdout
    # Still reported by the next run, which has nothing else to do.
    r = publisher(sayin, "push", "--data", store)
    assert r.returncode == EXIT_FAIL and "not configured" in r.stdout, (r.stdout, r.stderr)
    # A run that has the target again takes its jobs back: due, not parked
    # until someone runs retry (here it delivers; the edge is down, so the
    # job fails and waits in backoff, as any job would).
    r = publisher(sayin, "push", "--data", store, *edge, "--outbox-backoff-ms", "60000")
    assert "parked 0" in r.stdout and "failed 1" in r.stdout, (r.stdout, r.stderr)
    status = publisher(sayin, "status", "--data", store, *edge)
    assert "PARKED" not in status.stdout and "backoff" in status.stdout, status.stdout

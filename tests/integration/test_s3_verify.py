"""`sayin-publisher s3 verify [--repair]` against a real S3 implementation
(s3rver, helpers/s3rver.py): the bucket filled by the s3 driver through
`push` is in sync; a key deleted, a key overwritten and a stale key left
behind the publisher's back are each reported; --repair enqueues the jobs
that fix them (push delivers them) and the bucket is in sync again; a
bucket that does not exist and wrong credentials are clear errors."""

import json

import pytest

from helpers.s3rver import start_s3rver


@pytest.fixture
def s3(tmp_path):
    s = start_s3rver(str(tmp_path / "s3"))
    yield s
    s.stop()


def run(sayin, store, args, drivers):
    return sayin.run(sayin.publisher, args + ["--data", str(store)] + drivers)


def publish(sayin, store, s3, wav, text):
    r = run(sayin, store, ["post", "--author", "ann", "--create-author", "--text", text,
                           str(wav)], s3.publisher_args())
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def push(sayin, store, s3):
    r = run(sayin, store, ["push"], s3.publisher_args())
    assert r.returncode == 0, r.stdout + r.stderr


def verify(sayin, store, s3, *extra):
    return run(sayin, store, ["s3", "verify"] + list(extra), s3.publisher_args())


def test_verify_finds_and_repairs_every_difference(sayin, store, tmp_path, s3, short_wav):
    keep = publish(sayin, store, s3, short_wav, "keep")
    gone = publish(sayin, store, s3, short_wav, "gone")
    push(sayin, store, s3)
    audio = [k for k in s3.keys() if k.startswith("a/") and k.endswith(".opus")]
    assert audio, s3.keys()
    assert "u/ann/feed.json" in s3.keys()

    r = verify(sayin, store, s3)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "in sync" in r.stdout and "0 missing, 0 different, 0 extra" in r.stdout, r.stdout

    # A deleted post's page, left in the bucket: delete the post without
    # pushing, then put its page back as a stale key.
    page = s3.get("p/" + gone["id"]).body
    assert page
    r = run(sayin, store, ["post", "delete", gone["id"]], s3.publisher_args())
    assert r.returncode == 0, r.stderr
    push(sayin, store, s3)
    assert "p/" + gone["id"] not in s3.keys()
    s3.put("p/" + gone["id"], page, content_type="text/html")
    # Behind the publisher's back: one key deleted, one overwritten.
    s3.delete("u/ann/feed.json")
    s3.put("p/" + keep["id"], b"<html>not what the store holds</html>", content_type="text/html")

    r = verify(sayin, store, s3)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "missing /u/ann/feed.json" in lines, r.stdout
    assert "different /p/%s" % keep["id"] in lines, r.stdout
    assert "extra /p/%s" % gone["id"] in lines, r.stdout
    assert "1 missing, 1 different, 1 extra" in r.stdout, r.stdout

    r = verify(sayin, store, s3, "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["in_sync"] is False
    assert (out["missing"], out["different"], out["extra"]) == (1, 1, 1)
    assert {"problem": "extra", "key": "p/" + gone["id"]} in out["differences"]

    # --repair writes nothing to the bucket itself: it enqueues.
    before = s3.keys()
    metrics = tmp_path / "s3.prom"
    r = verify(sayin, store, s3, "--repair", "--metrics-textfile", str(metrics))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "enqueued outbox job" in r.stdout and "push" in r.stdout, r.stdout
    assert s3.keys() == before
    text = metrics.read_text()
    assert 'sayin_s3_verify_differences{kind="missing"} 1' in text, text
    assert 'sayin_cron_success{command="s3-verify"} 0' in text, text

    push(sayin, store, s3)
    r = verify(sayin, store, s3, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["in_sync"] is True
    assert "p/" + gone["id"] not in s3.keys()
    assert s3.get("u/ann/feed.json").status == 200
    # The repaired page holds the store's bytes again.
    assert b"not what the store holds" not in s3.get("p/" + keep["id"]).body


def test_missing_object_is_reported_and_repaired(sayin, store, s3, short_wav):
    publish(sayin, store, s3, short_wav, "one")
    push(sayin, store, s3)
    audio = [k for k in s3.keys() if k.startswith("a/") and k.endswith(".opus")][0]
    body = s3.get(audio).body
    s3.delete(audio)
    r = verify(sayin, store, s3, "--repair")
    assert r.returncode == 1 and "missing /" + audio in r.stdout.splitlines(), r.stdout
    push(sayin, store, s3)
    assert s3.get(audio).body == body
    assert verify(sayin, store, s3).returncode == 0


def test_unreachable_bucket_is_a_clear_error(sayin, store, s3, short_wav):
    publish(sayin, store, s3, short_wav, "one")
    args = s3.publisher_args()
    nobucket = list(args)
    nobucket[nobucket.index("--s3-bucket") + 1] = "no-such-bucket"
    r = run(sayin, store, ["s3", "verify"], nobucket)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no-such-bucket" in r.stderr and "no such bucket" in r.stderr, r.stderr

    badkey = list(args)
    badkey[badkey.index("--aws-access-key-id") + 1] = "WRONG"
    r = run(sayin, store, ["s3", "verify"], badkey)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "access denied" in r.stderr, r.stderr

    down = list(args)
    down[down.index("--s3-endpoint") + 1] = "http://127.0.0.1:1"
    r = run(sayin, store, ["s3", "verify"], down)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "cannot list bucket" in r.stderr and "127.0.0.1:1" in r.stderr, r.stderr

    r = run(sayin, store, ["s3", "frobnicate"], args)
    assert r.returncode == 2, r.stderr

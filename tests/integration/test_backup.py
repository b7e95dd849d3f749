"""Backups: `sayin-publisher backup` while the API takes 20 uploads, `restore`
into a new directory and an origin serving every post acknowledged before
the backup began; restore refusing a store in use or a non-empty directory,
and a damaged snapshot; `fsck` on a clean and on a deliberately broken store
(python3-lmdb edits it); `--to-s3` against the fake S3 that checks SigV4;
no temporary file left by a backup that fails.

Every test has its own store, processes and ports (fixtures in conftest.py)."""

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import threading
import time

import lmdb
import pytest

from helpers.api import author_add, start_api
from helpers.audio import write_noise_wav
from helpers.fakes_cdn import AWS_KEY_ID, AWS_SECRET, S3_BUCKET, S3_REGION
from helpers.http import url_path
from helpers.procs import clean_env
from helpers.store import file_data

KEY_RE = re.compile(r"^backups/cdn\.test/\d{8}T\d{6}Z\.mdb$")


def backup(sayin, data, dest, args=(), **kw):
    return sayin.run(sayin.publisher, ["backup", "--data", str(data)] + [str(a) for a in args]
                     + [str(dest)], **kw)


def restore(sayin, src, data, args=()):
    return sayin.run(sayin.publisher, ["restore", "--data", str(data)] + [str(a) for a in args]
                     + [str(src)])


def fsck(sayin, args):
    return sayin.run(sayin.publisher, ["fsck"] + [str(a) for a in args], timeout=120)


def assert_ok(r, what):
    assert r.returncode == 0, "%s: exit %d\nstdout: %s\nstderr: %s" % (
        what, r.returncode, r.stdout, r.stderr)


def backup_json(r):
    assert_ok(r, "backup")
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert doc["bytes"] > 0 and doc["entries"] > 0 and doc["seconds"] >= 0, doc
    return doc


def small_store(sayin, tmp_path, posts=2):
    """A store with author alice and `posts` posts published by the CLI."""
    data = tmp_path / "store"
    ids = []
    for i in range(posts):
        clip = tmp_path / ("clip%d.wav" % i)
        write_noise_wav(clip, 16000, 1)
        ids.append(sayin.post(data, "alice", clip, text="post %d" % i,
                              args=["--public-url", "https://cdn.test"]).json["id"])
    return data, ids


def dir_listing(d):
    return sorted(os.listdir(d))


def test_backup_during_20_uploads_then_restore_serves_every_acknowledged_post(sayin, tmp_path):
    data = tmp_path / "store"
    token = author_add(sayin, data, "alice", args=["--public-url", "https://cdn.test"])
    api = start_api(sayin, data, ["--queue", "32", "--upload-per-author", "32"])
    clips = []
    for i in range(23):
        clip = tmp_path / ("clip%d.wav" % i)
        write_noise_wav(clip, 48000, 4)
        clips.append(clip.read_bytes())
    acked = {}  # post id -> (response document, monotonic time of the 201)
    lock = threading.Lock()
    failures = []

    def upload(i):
        r = api.post_raw(token, clips[i], text="upload %d" % i, timeout=180)
        t = time.monotonic()
        if r.status != 201:
            failures.append((i, r.status, r.body[:300]))
            return
        doc = r.json()
        with lock:
            acked[doc["id"]] = (doc, t)

    for i in range(3):  # acknowledged well before the backup
        upload(i)
    assert not failures, failures
    threads = [threading.Thread(target=upload, args=(i,)) for i in range(3, 23)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the 20 requests are sent and being transcoded or stored
    t_backup = time.monotonic()
    dest = tmp_path / "backups" / "snap.mdb"
    dest.parent.mkdir()
    doc = backup_json(backup(sayin, data, dest))
    for t in threads:
        t.join(240)
    assert not failures, failures
    assert len(acked) == 23
    before = {pid: d for pid, (d, t) in acked.items() if t < t_backup}
    after = [pid for pid, (d, t) in acked.items() if t >= t_backup]
    assert len(before) >= 3
    # The backup ran while uploads were still going on.
    assert after, "every upload finished before the backup began: it proved nothing"
    assert dir_listing(dest.parent) == ["snap.mdb"], "temporary files left: %r" % dir_listing(
        dest.parent)
    assert doc["bytes"] == dest.stat().st_size

    # fsck of the live store while the API still runs, and of the snapshot.
    r = fsck(sayin, ["--data", data])
    assert_ok(r, "fsck of the live store")
    r = fsck(sayin, ["--snapshot", dest])
    assert_ok(r, "fsck of the snapshot")
    assert " 0 problems" in r.stdout, r.stdout

    restored = tmp_path / "restored"
    assert_ok(restore(sayin, dest, restored), "restore")
    assert "data.mdb" in dir_listing(restored)
    assert not [f for f in dir_listing(restored) if "restore" in f]
    api.stop()
    r = fsck(sayin, ["--data", restored])
    assert_ok(r, "fsck of the restored store")
    assert " 0 problems" in r.stdout, r.stdout

    origin = sayin.start_origin(restored)
    for pid, post in before.items():
        page = origin.get(url_path(post["url"]))
        assert page.status == 200, (pid, page)
        audio = origin.get(url_path(post["audio_url"]))
        assert audio.status == 200, (pid, audio)
        want = re.search(r"/a/([0-9a-f]{64})\.opus$", post["audio_url"]).group(1)
        assert hashlib.sha256(audio.body).hexdigest() == want, pid
    feed = origin.get("/u/alice/feed.json")
    assert feed.status == 200
    in_feed = {item["id"].rsplit("/", 1)[-1] for item in json.loads(feed.body)["items"]}
    assert set(before) <= in_feed, set(before) - in_feed


def test_restore_refuses_a_store_in_use_and_a_non_empty_directory(sayin, tmp_path):
    data, ids = small_store(sayin, tmp_path, posts=1)
    snap = tmp_path / "snap.mdb"
    backup_json(backup(sayin, data, snap))
    target, _ = data, None
    origin = sayin.start_origin(target)
    before = file_data(target / "data.mdb")
    r = restore(sayin, snap, target, ["--force"])
    assert r.returncode == 5, (r.returncode, r.stderr)
    assert "in use" in r.stderr and "process %d" % origin.proc.pid in r.stderr, r.stderr
    assert file_data(target / "data.mdb") == before
    assert not [f for f in dir_listing(target) if "restore" in f]
    origin.stop()
    # Not in use any more, but it holds a store: only with --force.
    r = restore(sayin, snap, target)
    assert r.returncode == 5 and "--force" in r.stderr, (r.returncode, r.stderr)
    assert file_data(target / "data.mdb") == before
    assert_ok(restore(sayin, snap, target, ["--force"]), "restore --force")
    assert_ok(fsck(sayin, ["--data", target]), "fsck after restore --force")


def test_restore_refuses_a_damaged_snapshot_and_leaves_the_directory_alone(sayin, tmp_path):
    data, ids = small_store(sayin, tmp_path, posts=1)
    snap = tmp_path / "snap.mdb"
    backup_json(backup(sayin, data, snap))
    cut = tmp_path / "cut.mdb"
    cut.write_bytes(snap.read_bytes()[: snap.stat().st_size // 2])
    target = tmp_path / "new"
    r = restore(sayin, cut, target)
    assert r.returncode == 1 and "truncated" in r.stderr, (r.returncode, r.stderr)
    assert not target.exists() or dir_listing(target) == []
    junk = tmp_path / "junk.mdb"
    junk.write_bytes(b"\0" * 65536)
    r = restore(sayin, junk, target)
    assert r.returncode == 1 and "not an LMDB data file" in r.stderr, (r.returncode, r.stderr)


def open_env(data):
    return lmdb.open(str(data), max_dbs=16, map_size=64 << 30, subdir=True)


def test_fsck_reports_each_problem_of_a_broken_store(sayin, tmp_path):
    data, ids = small_store(sayin, tmp_path, posts=2)
    r = fsck(sayin, ["--data", data])
    assert_ok(r, "fsck of a clean store")
    env = open_env(data)
    posts = env.open_db(b"posts", create=False)
    objects = env.open_db(b"objects", create=False)
    refs = env.open_db(b"refs", create=False, dupsort=True)
    with env.begin(write=True) as txn:
        rec0 = json.loads(txn.get(ids[0].encode(), db=posts))
        rec1 = json.loads(txn.get(ids[1].encode(), db=posts))
        audio0 = rec0["audio"]["sha256"]
        card1 = rec1["card"]["sha256"]
        assert txn.delete(bytes.fromhex(audio0), db=objects)          # a missing object
        assert txn.delete(bytes.fromhex(card1), ids[1].encode(), db=refs)  # count too low
        txn.put(bytes.fromhex(card1), b"01nosuchpost0000000000000", db=refs, dupdata=True)
    env.close()
    before = (data / "data.mdb").stat().st_mtime_ns
    r = fsck(sayin, ["--data", data])
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    out = r.stdout
    assert "post %s: its audio object %s is missing" % (ids[0], audio0) in out, out
    assert ("post %s: its card object %s has no reference from it" % (ids[1], card1)) in out, out
    assert ("object %s: referenced by post 01nosuchpost0000000000000, which does not exist"
            % card1) in out, out
    assert " 3 problems" in out, out
    assert (data / "data.mdb").stat().st_mtime_ns == before, "fsck wrote to the store"


def test_fsck_reports_a_leaked_object_and_bytes_that_do_not_match(sayin, tmp_path):
    data, ids = small_store(sayin, tmp_path, posts=1)
    env = open_env(data)
    posts = env.open_db(b"posts", create=False)
    objects = env.open_db(b"objects", create=False)
    refs = env.open_db(b"refs", create=False, dupsort=True)
    with env.begin(write=True) as txn:
        rec = json.loads(txn.get(ids[0].encode(), db=posts))
        wave = rec["waveform"]["sha256"]
        value = bytearray(txn.get(bytes.fromhex(wave), db=objects))
        value[-1] ^= 0xff  # the last byte of the waveform's JSON
        txn.put(bytes.fromhex(wave), bytes(value), db=objects)
        fake = hashlib.sha256(b"leaked").digest()
        txn.put(fake, bytes(value), db=objects)
    env.close()
    r = fsck(sayin, ["--data", data])
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "object %s (application/json" % wave in r.stdout, r.stdout
    assert "bytes do not match their hash" in r.stdout, r.stdout
    assert "object %s (application/json" % fake.hex() in r.stdout, r.stdout
    assert "no post or name refers to it (leaked)" in r.stdout, r.stdout


def metrics_of(path):
    """The gauges of a --metrics-textfile (test_cron_metrics.py checks the
    format and the times), but the times and the duration."""
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            if "timestamp_seconds" not in name and "duration_seconds" not in name:
                out[name] = int(value)
    return out


def s3_args(fake, secret=AWS_SECRET):
    return ["--to-s3", "--public-url", "https://cdn.test", "--s3-bucket", S3_BUCKET,
            "--s3-endpoint", fake.url, "--aws-access-key-id", AWS_KEY_ID,
            "--aws-secret-access-key", secret, "--aws-region", S3_REGION]


def test_backup_to_s3_puts_the_snapshot_signed(sayin, tmp_path, fakes):
    data, ids = small_store(sayin, tmp_path, posts=1)
    s3 = fakes("s3")
    dest = tmp_path / "snap.mdb"
    prom = tmp_path / "backup.prom"
    doc = backup_json(backup(sayin, data, dest, s3_args(s3) + ["--metrics-textfile", prom]))
    assert KEY_RE.match(doc["s3_key"]), doc
    assert metrics_of(prom) == {'sayin_cron_success{command="backup"}': 1,
                                "sayin_backup_uploaded": 1,
                                "sayin_backup_bytes": dest.stat().st_size,
                                "sayin_backup_entries": doc["entries"]}
    assert not s3.rejections(), [r.rejected for r in s3.rejections()]
    stored = s3.service.objects["/" + doc["s3_key"]]
    assert stored[0] == dest.read_bytes()

    # A wrong secret: SigV4 refused, exit 1, the local snapshot kept.
    dest2 = tmp_path / "snap2.mdb"
    r = backup(sayin, data, dest2, s3_args(s3, secret=AWS_SECRET[:-1] + "X"))
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "SignatureDoesNotMatch" in r.stderr and "kept" in r.stderr, r.stderr
    assert AWS_SECRET not in r.stderr
    assert dest2.exists()
    # The site in the key is the one the store records, flag or not.
    args = s3_args(s3)
    i = args.index("--public-url")
    del args[i:i + 2]
    doc = backup_json(backup(sayin, data, tmp_path / "snap5.mdb", args))
    assert doc["s3_key"].startswith("backups/cdn.test/"), doc
    # A setting missing: a usage error before any copy.
    i = args.index("--s3-bucket")
    del args[i:i + 2]
    r = backup(sayin, data, tmp_path / "snap4.mdb", args)
    assert r.returncode == 2 and "--to-s3 needs --s3-bucket" in r.stderr, r.stderr
    assert not (tmp_path / "snap4.mdb").exists()
    # Too big for the configured limit: refused before any request.
    n = len(s3.requests(ok_only=False))
    r = backup(sayin, data, tmp_path / "snap3.mdb", s3_args(s3) + ["--s3-max-size", "4K"])
    assert r.returncode == 1 and "--s3-max-size" in r.stderr, r.stderr
    assert len(s3.requests(ok_only=False)) == n


def test_failed_backup_leaves_no_temporary_file_and_the_old_snapshot(sayin, tmp_path):
    data, ids = small_store(sayin, tmp_path, posts=1)
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "snap.mdb"
    backup_json(backup(sayin, data, dest))
    old = dest.read_bytes()

    def limited():
        # The disk is full after 64 KiB: writes past it fail with EFBIG.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))

    prom = tmp_path / "backup.prom"
    r = subprocess.run([sayin.publisher, "backup", "--data", str(data), "--metrics-textfile",
                        str(prom), str(dest)],
                       capture_output=True, text=True, env=clean_env(), timeout=60,
                       preexec_fn=limited, cwd=str(tmp_path), stdin=subprocess.DEVNULL)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "File too large" in r.stderr, r.stderr
    assert metrics_of(prom)['sayin_cron_success{command="backup"}'] == 0
    assert metrics_of(prom)["sayin_backup_bytes"] == 0
    assert dir_listing(out) == ["snap.mdb"], dir_listing(out)
    assert dest.read_bytes() == old

    # A destination whose directory cannot hold it.
    (tmp_path / "plain").write_text("a file, not a directory")
    r = backup(sayin, data, tmp_path / "plain" / "snap.mdb")
    assert r.returncode == 1 and "cannot create" in r.stderr, r.stderr
    r = backup(sayin, data, tmp_path / "missing" / "snap.mdb")
    assert r.returncode == 1 and "No such file or directory" in r.stderr, r.stderr
    assert not (tmp_path / "missing").exists()


def test_fsck_is_clean_after_shared_objects_deletions_and_archive_pages(sayin, tmp_path):
    data = tmp_path / "store"
    site = ["--feed-items", "2", "--feed-page-items", "2"]
    token = author_add(sayin, data, "alice", args=["--public-url", "https://cdn.test"] + site)
    api = start_api(sayin, data, site)
    clip = tmp_path / "clip.wav"
    write_noise_wav(clip, 16000, 1)
    audio = clip.read_bytes()
    ids = []
    for i in range(6):  # the same recording: shared audio, fallback, waveform, card
        r = api.post_raw(token, audio, text="same %d" % i)
        assert r.status == 201, r
        ids.append(r.json()["id"])
    for pid in (ids[0], ids[3]):
        r = api.delete(token, pid)
        assert r.status in (200, 204), r
    # The feed sizes come from the site the store records, as for every
    # command: no flag needed, and others are refused.
    r = fsck(sayin, ["--data", data])
    assert_ok(r, "fsck")
    assert "4 posts" in r.stdout and " 0 problems" in r.stdout, r.stdout
    r = fsck(sayin, ["--data", data, "--feed-items", "1", "--feed-page-items", "1"])
    assert r.returncode == 2 and "the store records feed-items = '2'" in r.stderr, r.stderr


def test_a_killed_runs_temporary_file_is_removed_by_the_next_run(sayin, tmp_path):
    """A backup killed mid-copy (SIGKILL, a unit's timeout) cannot clean up:
    the next run removes what a dead process left, never a live one's."""
    data, ids = small_store(sayin, tmp_path, posts=1)
    dead = subprocess.Popen(["true"])
    dead.wait()
    dest = tmp_path / "snap.mdb"
    stale = tmp_path / ("snap.mdb.tmp-%d-AbCdEf" % dead.pid)
    live = tmp_path / ("snap.mdb.tmp-%d-GhIjKl" % os.getpid())
    other = tmp_path / ("other.mdb.tmp-%d-MnOpQr" % dead.pid)
    for f in (stale, live, other):
        f.write_bytes(b"\0" * 4096)
    r = backup(sayin, data, dest)
    backup_json(r)
    assert not stale.exists(), "a dead run's temporary file was left"
    assert live.exists() and other.exists(), "a live run's (or another DEST's) file was removed"
    assert "left by a run that was killed" in r.stderr, r.stderr

    # Restore: a dead run's temporary file does not make the directory
    # look as if it held a store.
    target = tmp_path / "restored"
    target.mkdir()
    leftover = target / (".data.mdb.restore-%d-StUvWx" % dead.pid)
    leftover.write_bytes(b"\0" * 4096)
    r = restore(sayin, dest, target)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert not leftover.exists() and (target / "data.mdb").exists()

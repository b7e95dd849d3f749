"""A post is all or nothing: killing the publisher mid-work or filling the
store leaves no partial post and no stray files, and the store stays usable."""

import json
import shutil
import signal
import subprocess
import time

import pytest

from helpers.audio import write_noise_wav
from helpers.http import url_path
from helpers.procs import EXIT_STORE_FULL, clean_env
from helpers.store import mdb_keys, sha256_hex, store_counts, store_files


def snapshot(store):
    return (store_counts(store), mdb_keys(store, "objects"), mdb_keys(store, "names"),
            mdb_keys(store, "posts"), store_files(store))


@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_killed_post_leaves_no_partial_post(sayin, store, short_wav, long_noise_wav, delay,
                                            lmdb_tools):
    before_post = sayin.post(store, "other", short_wav, text="kept").json
    before = snapshot(store)
    assert before[4] == ["data.mdb", "lock.mdb"], before[4]

    proc = sayin.popen_post(store, "victim", long_noise_wav, text="never published")
    time.sleep(delay)  # let it get into decoding/encoding (the work takes seconds)
    assert proc.poll() is None, (
        "post finished in under %.1f s, too fast to kill mid-work (exit %s, stderr %r)"
        % (delay, proc.returncode, proc.stderr.read()))
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    after = snapshot(store)
    assert after[0] == before[0], "store counts changed: %s -> %s" % (before[0], after[0])
    assert after[1] == before[1], "objects changed"
    assert after[2] == before[2], "names changed"
    assert after[3] == before[3], "posts changed"
    assert after[4] == ["data.mdb", "lock.mdb"], "files left in the store: %s" % after[4]
    origin = sayin.start_origin(store)
    assert origin.get("/u/victim/feed.json").status == 404
    items = origin.get("/u/other/feed.json").json()["items"]
    assert [i["id"] for i in items] == [before_post["id"]]
    # The store still takes posts.
    again = sayin.post(store, "victim", short_wav, text="now for real").json
    assert origin.get("/u/victim/feed.json").status == 200
    assert origin.get_url(again["audio_url"]).status == 200


def test_killed_post_into_a_new_store_leaves_nothing(sayin, store, long_noise_wav):
    proc = sayin.popen_post(store, "victim", long_noise_wav)
    time.sleep(0.3)
    assert proc.poll() is None, "post finished too fast to kill"
    proc.kill()
    proc.wait(10)
    if store.exists():
        assert set(store_files(store)) <= {"data.mdb", "lock.mdb"}, store_files(store)
        if (store / "data.mdb").exists():
            c = store_counts(store)
            assert c["posts"] == 0 and c["objects"] == 0 and c["names"] == 0, c


def test_store_full_is_a_clear_error_and_keeps_earlier_posts(sayin, store, tmp_path, short_wav,
                                                             big_noise_wav, lmdb_tools):
    # One bitrate for the store: the first post records it as the site's.
    small = ["--map-size", "1M", "--bitrate", "510000"]
    first = sayin.post(store, "alice", short_wav, text="fits", args=small).json
    before = snapshot(store)

    res = sayin.post(store, "alice", big_noise_wav, text="too big",
                     args=small + ["--bitrate", "510000"], check=False)
    assert res.returncode == EXIT_STORE_FULL, "expected exit 4:\n" + res.describe()
    assert "store full" in res.stderr.lower(), res.stderr
    assert res.stdout == ""

    after = snapshot(store)
    assert after == before, "a failed post changed the store:\n%s\n%s" % (before, after)
    origin = sayin.start_origin(store)
    r = origin.get_url(first["audio_url"])
    assert r.status == 200 and sha256_hex(r.body) == url_path(first["audio_url"])[3:67]
    items = origin.get("/u/alice/feed.json").json()["items"]
    assert [i["id"] for i in items] == [first["id"]]
    assert origin.get_url(first["url"]).status == 200

    # The full store still takes a small post ...
    second = sayin.post(store, "alice", short_wav, text="still fits", args=small).json
    assert origin.get_url(second["audio_url"]).status == 200
    # ... and the same big recording publishes into a store of normal size.
    fresh = tmp_path / "fresh"
    big = sayin.post(fresh, "alice", big_noise_wav, text="too big",
                     args=["--bitrate", "510000"]).json
    assert big["size_in_bytes"] > 1 << 20, big
    origin2 = sayin.start_origin(fresh)
    r = origin2.get_url(big["audio_url"])
    assert r.status == 200 and len(r.body) == big["size_in_bytes"]


def test_store_full_from_a_fresh_store(sayin, store, big_noise_wav, lmdb_tools):
    res = sayin.post(store, "alice", big_noise_wav, args=["--map-size", "1M",
                                                           "--bitrate", "510000"], check=False)
    assert res.returncode == EXIT_STORE_FULL, res.describe()
    assert "store full" in res.stderr.lower()
    if (store / "data.mdb").exists():
        c = store_counts(store)
        assert c["posts"] == 0 and c["objects"] == 0, c


def test_post_killed_at_any_moment_is_all_or_nothing(sayin, store, tmp_path, short_wav,
                                                     lmdb_tools):
    """Kills posts at moments spread over a whole post's run time, up to and
    past its commit: after each kill the post is either fully there (record,
    feed item, page, audio) or not there at all."""
    wav = tmp_path / "noise.wav"
    write_noise_wav(wav, 48000, 20)
    sayin.post(store, "other", short_wav)
    t0 = time.monotonic()
    sayin.post(tmp_path / "timing", "victim", wav)
    run_time = time.monotonic() - t0

    origin = sayin.start_origin(store)
    published = []
    outcomes = []
    for frac in (0.5, 0.8, 0.9, 0.95, 0.98, 1.0, 1.02, 1.1):
        before = store_counts(store)
        posts_before = set(mdb_keys(store, "posts"))
        proc = sayin.popen_post(store, "victim", wav, text="kill %.2f" % frac)
        time.sleep(run_time * frac)
        proc.kill()
        proc.wait(10)
        after = store_counts(store)
        assert store_files(store) == ["data.mdb", "lock.mdb"], store_files(store)
        new = set(mdb_keys(store, "posts")) - posts_before
        if not new:
            assert after == before, "no new post, yet the store changed: %s -> %s" % (
                before, after)
            outcomes.append("none")
            continue
        # LMDB: a writer killed after writing its meta page but before
        # publishing the new txnid in lock.mdb has committed, yet readers see
        # it only once the next writer recovers the lock. So one iteration can
        # reveal the previous iteration's post too; each must be whole.
        assert len(new) <= 2, new
        assert after["posts"] == before["posts"] + len(new)
        assert after["author_posts"] == before["author_posts"] + len(new)
        feed = origin.get("/u/victim/feed.json")
        assert feed.status == 200, "posts %s stored without their feed" % new
        items = {i["id"]: i for i in feed.json()["items"]}
        newest = max(bytes.fromhex(k).decode("ascii") for k in new)
        assert feed.json()["items"][0]["id"] == newest, "newest post not first in the feed"
        for key in sorted(new):
            pid = bytes.fromhex(key).decode("ascii")
            published.append(pid)
            assert pid in items, "post %s stored but not in the feed" % pid
            assert origin.get("/p/" + pid).status == 200, "post %s stored without its page" % pid
            att = items[pid]["attachments"][0]
            audio = origin.get_url(att["url"])
            assert audio.status == 200 and len(audio.body) == att["size_in_bytes"], \
                "post %s without its audio" % pid
        outcomes.append("all x%d" % len(new))
    if not published:
        assert origin.get("/u/victim/feed.json").status == 404
    print("run time %.2f s, outcomes %s" % (run_time, outcomes))


FULL_DISK_SCRIPT = r"""
mount -t tmpfs -o size=3m tmpfs "$MNT" || exit 77
mount -t tmpfs -o size=3m tmpfs "$MNT2" || exit 77
post() {
    data=$1
    shift
    "$PUB" post --data "$data/store" --map-size 64M --author alice --create-author "$@"
    echo "exit=$?" >&2
}
# 1. An audio object that does not fit (it goes in by copy_file_range).
# (One bitrate for the store: its first post records it as the site's.)
post "$MNT" --text first --bitrate 510000 "$SHORT" > "$OUT.1"
post "$MNT" --text big --bitrate 510000 "$BIG" > "$OUT.2"
post "$MNT" --text again --bitrate 510000 "$SHORT" > "$OUT.3"
cp -a --sparse=always "$MNT/store" "$OUT"
# 2. A disk with 64 KiB left: the feeds, pages and tree pages, written
# through the map, do not fit.
dd if=/dev/zero of="$MNT2/filler" bs=1k count=3008 2>/dev/null
post "$MNT2" --text cramped "$SHORT" > "$OUT.4"
rm "$MNT2/filler"
post "$MNT2" --text roomy "$SHORT" > "$OUT.5"
"""


def test_full_disk_is_a_clear_error_and_keeps_the_store(sayin, tmp_path, short_wav,
                                                        big_noise_wav, lmdb_tools):
    """Stores on 3 MiB tmpfs disks in a mount namespace of their own. A post
    that does not fit fails with exit code 4 and "No space left on device",
    instead of dying of SIGBUS in LMDB's writable map; the store keeps what
    it had, and takes posts again once there is room."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    mnt, mnt2, out = tmp_path / "small-disk", tmp_path / "full-disk", tmp_path / "copy"
    mnt.mkdir()
    mnt2.mkdir()
    env = clean_env({"MNT": str(mnt), "MNT2": str(mnt2), "OUT": str(out),
                       "PUB": sayin.publisher, "SHORT": str(short_wav),
                       "BIG": str(big_noise_wav)})
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          FULL_DISK_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=180, stdin=subprocess.DEVNULL)
    if res.returncode == 77:
        pytest.skip("cannot mount a tmpfs here: " + res.stderr.strip())
    assert res.returncode == 0, res.stderr
    exits = [line for line in res.stderr.splitlines() if line.startswith("exit=")]
    assert exits == ["exit=0", "exit=4", "exit=0", "exit=4", "exit=0"], res.stderr
    assert res.stderr.count("No space left on device") >= 2, res.stderr
    assert "Bus error" not in res.stderr
    first = json.loads((tmp_path / "copy.1").read_text())
    again = json.loads((tmp_path / "copy.3").read_text())
    assert (tmp_path / "copy.2").read_text() == ""
    assert (tmp_path / "copy.4").read_text() == ""
    assert json.loads((tmp_path / "copy.5").read_text())["id"]

    # The copy of the first store: both small posts, nothing of the big one.
    assert store_counts(out)["posts"] == 2
    origin = sayin.start_origin(out)
    for post in (first, again):
        r = origin.get_url(post["audio_url"])
        assert r.status == 200 and sha256_hex(r.body) == url_path(post["audio_url"])[3:67]
    items = origin.get("/u/alice/feed.json").json()["items"]
    assert [i["id"] for i in items] == [again["id"], first["id"]]

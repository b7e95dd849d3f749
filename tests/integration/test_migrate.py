"""The store's format version (issue 14, item 4): a new store is born at the
current format; a store written before formats were recorded (format 1,
the fixture tests/fixtures/store-format1.tar.xz, made by the publisher of
commit fd52f27: authors alice and bob, three posts) is refused by the
origin, the API and every command until `sayin-publisher migrate` has run,
and then served; a store of a newer format is refused by every program
with exit 2."""

import json
import os
import subprocess
import tarfile

import pytest

from helpers.procs import EXIT_OK, EXIT_USAGE, free_port, wait_for

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "store-format1.tar.xz")
BASE = "https://cdn.example.org"
POSTS = {
    "alice": ["01m999exbjbkazqcj64b811tx2", "01m999ewvvgpxmtvdrc2q81p17"],
    "bob": ["01m999exqrj6psk11e1evhyxt9"],
}
AUDIO = "21a60cc1b56c8e037ffd5b458b303fbdab87381b028a1ec63565b11c3ea515aa"


def unpack_fixture(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(store)
    return store


def meta_records(store):
    """The meta table as {key: value} (mdb_dump -p)."""
    r = subprocess.run(["mdb_dump", "-p", "-s", "meta", str(store)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    body = r.stdout.split("HEADER=END\n", 1)[1].split("DATA=END", 1)[0]
    lines = [ln[1:] for ln in body.splitlines()]
    return dict(zip(lines[0::2], lines[1::2]))


def run_origin(sayin, store):
    """Runs the origin in the foreground; it must exit on its own."""
    return sayin.run(sayin.origin_bin, ["--data", str(store), "--listen",
                                        "127.0.0.1:%d" % free_port()], timeout=30)


def run_serve(sayin, store):
    return sayin.run(sayin.publisher, ["serve", "--data", str(store), "--api-listen",
                                       "127.0.0.1:%d" % free_port(), "--public-url", BASE],
                     timeout=30)


def test_a_new_store_records_the_current_format(sayin, store, lmdb_tools):
    r = sayin.run(sayin.publisher, ["author", "add", "alice", "--name", "A", "--data", str(store),
                                    "--public-url", BASE])
    assert r.returncode == EXIT_OK, r.stderr
    assert meta_records(store).get("format") == "2"


def test_a_format_1_store_is_refused_until_migrated_then_served(sayin, tmp_path, short_wav,
                                                                  lmdb_tools):
    store = unpack_fixture(tmp_path)
    assert "format" not in meta_records(store)

    o = run_origin(sayin, store)
    assert o.returncode == EXIT_USAGE, (o.returncode, o.stderr)
    assert "sayin-publisher migrate" in o.stderr, o.stderr
    s = run_serve(sayin, store)
    assert s.returncode == EXIT_USAGE, (s.returncode, s.stderr)
    assert "sayin-publisher migrate" in s.stderr, s.stderr
    p = sayin.post(store, "alice", short_wav, args=["--public-url", BASE], check=False)
    assert p.returncode == EXIT_USAGE and "migrate" in p.stderr, p.describe()
    assert "format" not in meta_records(store), "a refused command changed the store"

    m = sayin.run(sayin.publisher, ["migrate", "--data", str(store)])
    assert m.returncode == EXIT_OK, m.stderr
    assert "from format 1 to 2" in m.stdout, m.stdout
    assert meta_records(store)["format"] == "2"
    again = sayin.run(sayin.publisher, ["migrate", "--data", str(store)])
    assert again.returncode == EXIT_OK and "nothing to do" in again.stdout, again

    origin = sayin.start_origin(store)
    for handle, ids in POSTS.items():
        feed = origin.get("/u/%s/feed.json" % handle)
        assert feed.status == 200, feed
        doc = json.loads(feed.body)
        assert [i["id"] for i in doc["items"]] == ids, doc
        assert doc["feed_url"].startswith(BASE + "/"), doc["feed_url"]
        for post_id in ids:
            assert origin.get("/p/%s" % post_id).status == 200
    audio = origin.get("/a/%s.opus" % AUDIO)
    assert audio.status == 200 and audio.body[:4] == b"OggS", audio

    # The migrated store takes new posts, and the origin serves them.
    new = sayin.post(store, "alice", short_wav, args=["--public-url", BASE])
    feed = json.loads(origin.get("/u/alice/feed.json").body)
    assert [i["id"] for i in feed["items"]] == [new.json["id"]] + POSTS["alice"]


def test_migrate_refuses_a_missing_store(sayin, tmp_path):
    r = sayin.run(sayin.publisher, ["migrate", "--data", str(tmp_path / "nowhere")])
    assert r.returncode == 1 and "no store at" in r.stderr, r
    assert not (tmp_path / "nowhere").exists()


def test_a_newer_format_is_refused_by_every_program(sayin, store, short_wav, lmdb_tools):
    r = sayin.run(sayin.publisher, ["site", "init", "--data", str(store), "--public-url", BASE])
    assert r.returncode == EXIT_OK, r.stderr
    load = subprocess.run(["mdb_load", "-T", "-s", "meta", str(store)], input="format\n99\n",
                          capture_output=True, text=True, timeout=30)
    assert load.returncode == 0, load.stderr

    o = run_origin(sayin, store)
    assert o.returncode == EXIT_USAGE and "newer" in o.stderr, (o.returncode, o.stderr)
    s = run_serve(sayin, store)
    assert s.returncode == EXIT_USAGE and "newer" in s.stderr, (s.returncode, s.stderr)
    for args in (["post", "--author", "alice", "--public-url", BASE, str(short_wav)],
                 ["author", "add", "bob", "--name", "B"], ["push"], ["status"], ["site", "show"],
                 ["rebuild", "--all"], ["migrate"]):
        r = sayin.run(sayin.publisher, args + ["--data", str(store)])
        assert r.returncode == EXIT_USAGE, (args, r.returncode, r.stderr)
        assert "format 99" in r.stderr and "newer" in r.stderr, (args, r.stderr)
    assert meta_records(store)["format"] == "99", "a refused program changed the store"

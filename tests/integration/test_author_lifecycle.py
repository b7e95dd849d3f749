"""The author lifecycle from the command line (issue 15, item 1): `post`
refuses an unknown author unless --create-author (a typo must not create a
permanent public author), `author edit --name --bio` re-renders what shows
them, `post list --author` prints an author's posts.

Run: SAYIN_BIN=$PWD/bin /usr/bin/python3 -m pytest -q -n 2 tests/integration/test_author_lifecycle.py
"""

import json

from helpers.api import author_add

EXIT_FAIL, EXIT_USAGE = 1, 2


def pub(sayin, store, *args):
    return sayin.run(sayin.publisher, [str(a) for a in args] + ["--data", str(store)])


def test_post_refuses_an_unknown_author_without_create_author(sayin, store, short_wav):
    author_add(sayin, store, "ann")
    r = sayin.post(store, "annn", short_wav, check=False, create_author=False)
    assert r.returncode == EXIT_USAGE, r.describe()
    assert "no author 'annn'" in r.stderr and "--create-author" in r.stderr, r.stderr
    assert r.stdout == ""
    listing = pub(sayin, store, "author", "list").stdout
    assert "annn" not in listing, "the refused post created its author"
    # An existing author needs no flag; the flag creates a new one.
    assert sayin.post(store, "ann", short_wav, create_author=False).json["id"]
    assert sayin.post(store, "annn", short_wav, create_author=True).json["id"]
    assert "annn" in pub(sayin, store, "author", "list").stdout


def test_author_edit_changes_name_and_bio_everywhere(sayin, store, speech_clip):
    author_add(sayin, store, "ann")
    p = sayin.post(store, "ann", speech_clip, text="hello").json
    origin = sayin.start_origin(store)
    assert "Ann" in origin.get("/u/ann/").body.decode()

    r = pub(sayin, store, "author", "edit", "ann", "--name", "Ann Example", "--bio",
            "I read <poems> & stories aloud.")
    assert r.returncode == 0, r.stderr
    assert "1 post pages rewritten" in r.stdout, r.stdout
    page = origin.get("/u/ann/").body.decode()
    assert "Ann Example" in page
    assert '<p class="bio">I read &lt;poems&gt; &amp; stories aloud.</p>' in page, page
    feed = json.loads(origin.get("/u/ann/feed.json").body)
    assert feed["authors"][0]["name"] == "Ann Example"
    assert feed["description"] == "I read <poems> & stories aloud."
    assert "Ann Example" in origin.get("/p/" + p["id"]).body.decode()
    authors = json.loads(origin.get("/authors.json").body)["authors"]
    assert [a["name"] for a in authors] == ["Ann Example"]

    # --bio "" removes it; the name stays.
    r = pub(sayin, store, "author", "edit", "ann", "--bio", "")
    assert r.returncode == 0, r.stderr
    feed = json.loads(origin.get("/u/ann/feed.json").body)
    assert "description" not in feed and feed["authors"][0]["name"] == "Ann Example"
    assert 'class="bio"' not in origin.get("/u/ann/").body.decode()


def test_author_edit_refuses_bad_input(sayin, store):
    author_add(sayin, store, "ann")
    r = pub(sayin, store, "author", "edit", "ann", "--bio", "x" * 301)
    assert r.returncode == EXIT_USAGE and "bio" in r.stderr and "300" in r.stderr, r
    assert pub(sayin, store, "author", "edit", "ann", "--bio", "\u00e9" * 300).returncode == 0
    r = pub(sayin, store, "author", "edit", "ann", "--name", "")
    assert r.returncode == EXIT_USAGE and "name" in r.stderr, r
    r = pub(sayin, store, "author", "edit", "ann")
    assert r.returncode == EXIT_USAGE and "--name" in r.stderr, r
    r = pub(sayin, store, "author", "edit", "bob", "--name", "Bob")
    assert r.returncode == EXIT_FAIL and "no author 'bob'" in r.stderr, r


def test_post_list_prints_an_authors_posts(sayin, store, short_wav):
    long_text = "a long text\twith a tab " + "word " * 30
    a = sayin.post(store, "ann", short_wav, text="first").json
    b = sayin.post(store, "ann", short_wav, text=long_text).json
    sayin.post(store, "bob", short_wav, text="not ann's")
    r = pub(sayin, store, "post", "list", "--author", "ann")
    assert r.returncode == 0, r.stderr
    lines = [l.split("\t") for l in r.stdout.splitlines()]
    assert [l[0] for l in lines] == [b["id"], a["id"]], r.stdout  # newest first
    assert all(len(l) == 5 for l in lines), r.stdout
    assert lines[1][2] == "first" and lines[1][3] == a["url"] and lines[1][4] == a["audio_url"]
    assert lines[0][2].endswith("...") and len(lines[0][2]) <= 63, lines[0][2]
    assert lines[0][1].startswith("20") and lines[0][1].endswith("Z")

    r = pub(sayin, store, "post", "list", "--author", "ann", "--json")
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)
    assert [i["id"] for i in items] == [b["id"], a["id"]]
    assert items[0]["text"] == long_text and items[1]["url"] == a["url"]
    assert items[1]["audio_url"] == a["audio_url"] and items[1]["date_published"]

    r = pub(sayin, store, "post", "list", "--author", "nobody")
    assert r.returncode == EXIT_FAIL and "no author 'nobody'" in r.stderr, r
    r = pub(sayin, store, "post", "list")
    assert r.returncode == EXIT_USAGE and "--author" in r.stderr, r

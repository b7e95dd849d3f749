"""scripts/check-layers: each rule of the tree fails on a tree that breaks
it, and passes on one that keeps it (the real tree is checked by make
layers, inside make check)."""
import os
import shutil
import subprocess

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHECK = os.path.join(REPO, "scripts", "check-layers")


def tree(root, files):
    for path, text in files.items():
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


CLEAN = {
    "origin/core/store.h": '#include "core/error.h"\n',
    "origin/core/store.c": '#include "core/store.h"\n',
    "origin/core/error.h": "",
    "origin/serve.c": '#include "core/store.h"\n#include "serve.h"\n',
    "origin/serve.h": "",
    "publisher/media/media.h": "",
    "publisher/media/opus.c": '#include "media/media.h"\n#include "core/error.h"\n',
    "publisher/render/feed.c": '#include "media/media.h"\n',
    "tests/unit/core/fixture.h": "",
    "tests/unit/core/test_store.c": '#include "core/store.h"\n#include "core/fixture.h"\n',
    "README.md": "| [`origin/`](origin) | [`origin/core/`](origin/core) |\n"
                 "| [`publisher/media/`](publisher/media) | "
                 "[`publisher/render/`](publisher/render) | [media](publisher/media/README.md#x) "
                 "| [site](https://example.com/) |\n",
    "publisher/media/README.md": "[up](../../README.md) [opus](opus.c)\n",
}


def run(root, *args):
    return subprocess.run([CHECK, "--root", str(root), *args], capture_output=True, text=True)


def test_a_clean_tree_passes(tmp_path):
    r = run(tree(tmp_path, CLEAN))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


@pytest.mark.parametrize("path,text,says", [
    ("origin/core/log.c", '#include "serve.h"\n', "origin/core/ includes origin/serve.h"),
    ("origin/core/log.c", '#include "media/media.h"\n', "outside core/"),
    ("publisher/render/page.c", '#include "serve.h"\n', "may use only origin/core/"),
    ("origin/main.c", '#include "media/media.h"\n', "origin/ includes publisher/media/media.h"),
    ("publisher/render/page.c", '#include "store.h"\n', "does not name its path"),
    ("publisher/render/page.c", '#include "feed.h"\n', "does not name its path"),
])
def test_each_layer_rule_fails(tmp_path, path, text, says):
    files = dict(CLEAN)
    files[path] = text
    r = run(tree(tmp_path, files))
    assert r.returncode == 1
    assert says in r.stderr, r.stderr


def test_the_readme_map_must_match_the_tree(tmp_path):
    files = dict(CLEAN)
    files["publisher/ingest/api.c"] = '#include "media/media.h"\n'
    files["publisher/media/README.md"] = "[gone](decode.c)\n"
    r = run(tree(tmp_path, files))
    assert r.returncode == 1
    assert "README.md: the map does not link publisher/ingest/" in r.stderr, r.stderr
    assert "publisher/media/README.md: link to decode.c, which is not in the tree" in r.stderr


def test_an_include_cycle_in_a_folder_fails(tmp_path):
    files = dict(CLEAN)
    files["publisher/media/a.h"] = ""
    files["publisher/media/b.h"] = ""
    files["publisher/media/a.c"] = '#include "media/b.h"\n'
    files["publisher/media/b.c"] = '#include "media/a.h"\n'
    r = run(tree(tmp_path, files))
    assert r.returncode == 1
    assert "publisher/media/: include cycle: a -> b -> a" in r.stderr, r.stderr


@pytest.mark.skipif(shutil.which("cc") is None or shutil.which("nm") is None,
                    reason="needs cc and nm")
def test_a_call_cycle_among_media_objects_fails(tmp_path):
    """Two files that share one header but call each other: the include
    graph is clean, the objects are not."""
    objdir = tmp_path / "build" / "publisher" / "media"
    objdir.mkdir(parents=True)
    srcs = {"a.c": "void b(void); void a(void); void a(void) { b(); }\n",
            "b.c": "void a(void); void b(void); void b(void) { a(); }\n",
            "c.c": "void a(void); void c(void); void c(void) { a(); }\n"}
    for name, text in srcs.items():
        (tmp_path / name).write_text(text)
        subprocess.run(["cc", "-c", "-o", str(objdir / name.replace(".c", ".o")),
                        str(tmp_path / name)], check=True)
    root = tree(tmp_path / "src", CLEAN)
    r = run(root, "--objects", str(tmp_path / "build"))
    assert r.returncode == 1
    assert "call cycle between objects: a.c -> b.c -> a.c" in r.stderr, r.stderr
    os.remove(objdir / "b.o")
    r = run(root, "--objects", str(tmp_path / "build"))
    assert r.returncode == 0, r.stderr

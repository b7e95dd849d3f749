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
    "origin/core/store.c": '#include "core/store.h"\n#include "core/store_internal.h"\n',
    "origin/core/store_internal.h": "",
    "origin/core/error.h": "",
    "origin/serve.c": '#include "core/store.h"\n#include "serve.h"\n',
    "origin/serve.h": "",
    "publisher/media/media.h": "",
    "publisher/media/internal.h": "",
    "publisher/media/opus.c": '#include "media/media.h"\n#include "media/internal.h"\n'
                              '#include "core/error.h"\n#include <string.h>\n',
    "publisher/render/feed.c": '#include "media/media.h"\n',
    "tests/unit/core/fixture.h": "",
    "tests/unit/core/test_store.c": '#include "core/store.h"\n#include "core/fixture.h"\n',
    "README.md": "| [`origin/`](origin) | [`origin/core/`](origin/core) |\n"
                 "| [`publisher/media/`](publisher/media) | "
                 "[`publisher/render/`](publisher/render) | "
                 "[media](publisher/media/README.md#the-code) "
                 "| [site](https://example.com/) |\n",
    "publisher/media/README.md": "# Media\n\n## The code\n\n[up](../../README.md) [opus](opus.c)\n",
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


def test_an_include_cycle_across_folders_fails(tmp_path):
    """publish -> ingest/idem -> publish: no folder has a cycle of its own."""
    files = dict(CLEAN)
    files["publisher/publish.h"] = ""
    files["publisher/publish.c"] = '#include "publish.h"\n#include "ingest/idem.h"\n'
    files["publisher/ingest/idem.h"] = ""
    files["publisher/ingest/idem.c"] = '#include "ingest/idem.h"\n#include "publish.h"\n'
    files["README.md"] += "[ingest](publisher/ingest) [publisher](publisher)\n"
    r = run(tree(tmp_path, files))
    assert r.returncode == 1
    assert ("include cycle across folders: publisher/ingest/idem -> publisher/publish -> "
            "publisher/ingest/idem") in r.stderr, r.stderr
    files["publisher/ingest/idem.c"] = '#include "ingest/idem.h"\n'
    r = run(tree(tmp_path, files))
    assert r.returncode == 0, r.stderr


NEEDS_CC = pytest.mark.skipif(shutil.which("cc") is None or shutil.which("nm") is None,
                              reason="needs cc and nm")


def compile_media(root, build, names=None, extra=None):
    """Compile the tree's publisher/media/*.c (or only names) into
    build/publisher/media/, and each (name, text) of extra, a source that is
    not in the tree (an object left from a file since renamed)."""
    srcdir = root / "publisher" / "media"
    objdir = build / "publisher" / "media"
    objdir.mkdir(parents=True, exist_ok=True)
    srcs = [srcdir / n for n in sorted(os.listdir(srcdir))
            if n.endswith(".c") and (names is None or n in names)]
    if extra:
        gone = build.parent / "gone"
        gone.mkdir(exist_ok=True)
        for name, text in extra.items():
            (gone / name).write_text(text)
            srcs.append(gone / name)
    for src in srcs:
        subprocess.run(["cc", "-c", "-I", str(root / "origin"), "-I", str(root / "publisher"),
                        "-o", str(objdir / (src.name[:-2] + ".o")), str(src)], check=True)
    return objdir


@NEEDS_CC
def test_a_call_cycle_among_media_objects_fails(tmp_path):
    """Two files that share one header but call each other: the include
    graph is clean, the objects are not."""
    files = dict(CLEAN)
    files["publisher/media/a.c"] = "void b(void); void a(void); void a(void) { b(); }\n"
    files["publisher/media/b.c"] = "void a(void); void b(void); void b(void) { a(); }\n"
    files["publisher/media/c.c"] = "void a(void); void c(void); void c(void) { a(); }\n"
    root = tree(tmp_path / "src", files)
    build = tmp_path / "build"
    objdir = compile_media(root, build)
    r = run(root, "--objects", str(build))
    assert r.returncode == 1
    assert "call cycle between objects: a.c -> b.c -> a.c" in r.stderr, r.stderr
    os.remove(root / "publisher" / "media" / "b.c")
    os.remove(objdir / "b.o")
    r = run(root, "--objects", str(build))
    assert r.returncode == 0, r.stderr


@NEEDS_CC
def test_an_object_left_from_a_removed_source_is_ignored(tmp_path):
    """stale.c was renamed b.c (and no longer calls a), but stale.o is still
    in the build folder: it must not make a cycle a -> stale -> a."""
    files = dict(CLEAN)
    files["publisher/media/a.c"] = "void b(void); void a(void); void a(void) { b(); }\n"
    files["publisher/media/b.c"] = "void b(void); void b(void) { }\n"
    root = tree(tmp_path / "src", files)
    build = tmp_path / "build"
    objdir = compile_media(root, build, extra={
        "stale.c": "void a(void); void b(void); void b(void) { a(); }\n"})
    assert (objdir / "stale.o").is_file()
    r = run(root, "--objects", str(build))
    assert r.returncode == 0, r.stderr
    assert "call cycle" not in r.stderr
    # The same objects counted by what the build folder holds do cycle: the
    # check above passes because stale.o is left out, not by chance.
    (root / "publisher" / "media" / "stale.c").write_text("")
    r = run(root, "--objects", str(build))
    assert r.returncode == 1
    assert "call cycle between objects: a.c -> stale.c -> a.c" in r.stderr, r.stderr


@NEEDS_CC
def test_a_source_without_its_object_is_not_built(tmp_path):
    files = dict(CLEAN)
    files["publisher/media/a.c"] = "void a(void); void a(void) { }\n"
    files["publisher/media/b.c"] = "void a(void); void b(void); void b(void) { a(); }\n"
    root = tree(tmp_path / "src", files)
    build = tmp_path / "build"
    compile_media(root, build, names={"a.c", "opus.c"})
    r = run(root, "--objects", str(build))
    assert r.returncode == 1
    assert "publisher/media: not built: b.o (build first)" in r.stderr, r.stderr
    assert "opus.o" not in r.stderr and "a.o" not in r.stderr, r.stderr


def with_folders(files, path):
    """files with path added to the README's map when its folder is new."""
    folder = os.path.dirname(path)
    if folder.startswith(("origin", "publisher")) and \
            f"({folder})" not in files["README.md"]:
        files["README.md"] += f"[`{folder}/`]({folder})\n"
    return files


def run_with(tmp_path, path, text):
    """check-layers on the clean tree with path's text replaced."""
    files = with_folders(dict(CLEAN), path)
    files[path] = text
    return run(tree(tmp_path, files))


def assert_fails(r, says):
    assert r.returncode == 1
    assert says in r.stderr, r.stderr


def assert_passes(r):
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


# Rule 5: private headers stay in their folder (and its tests).
@pytest.mark.parametrize("path,text,says", [
    ("publisher/render/feed.c", '#include "media/internal.h"\n',
     "publisher/render/feed.c: includes publisher/media/internal.h, private to publisher/media/"),
    ("publisher/media/sub/x.c", '#include "media/internal.h"\n',
     "private to publisher/media/"),
    ("origin/serve.c", '#include "core/store.h"\n#include "core/store_internal.h"\n',
     "origin/serve.c: includes origin/core/store_internal.h, private to origin/core/"),
    ("publisher/render/feed.c", '#include "core/store_internal.h"\n',
     "private to origin/core/"),
    ("tests/unit/publisher/render/test_feed.c", '#include "media/internal.h"\n',
     "private to publisher/media/"),
    ("tests/unit/core/test_store.c", '#include "media/internal.h"\n',
     "private to publisher/media/"),
    ("tests/unit/publisher/media/test_opus.c", '#include "core/store_internal.h"\n',
     "private to origin/core/"),
])
def test_a_private_header_outside_its_folder_fails(tmp_path, path, text, says):
    assert_fails(run_with(tmp_path, path, text), says)


@pytest.mark.parametrize("path,text", [
    ("publisher/media/wav.c", '#include "media/media.h"\n#include "media/internal.h"\n'),
    ("origin/core/store_object.c", '#include "core/store.h"\n#include "core/store_internal.h"\n'),
    ("tests/unit/publisher/media/test_wav.c", '#include "media/internal.h"\n'),
    ("tests/unit/core/test_store_object.c",
     '#include "core/store.h"\n#include "core/store_internal.h"\n#include "core/fixture.h"\n'),
])
def test_a_private_header_in_its_folder_and_its_tests_passes(tmp_path, path, text):
    assert_passes(run_with(tmp_path, path, text))


# Rule 5: a project header is never included with <...>.
@pytest.mark.parametrize("path,text,says", [
    ("publisher/render/feed.c", "#include <media/media.h>\n",
     "publisher/render/feed.c: #include <media/media.h> names a project header"),
    ("publisher/render/feed.c", "#include <media/internal.h>\n", "names a project header"),
    ("origin/core/log.c", "#include <serve.h>\n", "#include <serve.h> names a project header"),
    ("tests/unit/core/test_store.c", "#include <core/fixture.h>\n", "names a project header"),
])
def test_a_project_header_in_angle_brackets_fails(tmp_path, path, text, says):
    files = dict(CLEAN)
    files[path] = text
    r = run(tree(tmp_path, files))
    assert r.returncode == 1
    assert says in r.stderr, r.stderr


# Rule 6: one owner per dependency.
@pytest.mark.parametrize("path,text,says", [
    ("publisher/render/feed.c", "#include <curl/curl.h>\n",
     "publisher/render/feed.c: includes <curl/curl.h>, whose owner is publisher/deliver/net.c"),
    ("publisher/deliver/fetch.c", "#include <curl/curl.h>\n", "whose owner is publisher/deliver/net.c"),
    ("publisher/render/feed.c", "#include <libavcodec/avcodec.h>\n",
     "includes <libavcodec/avcodec.h>, whose owner is publisher/media/"),
    ("origin/serve.c", "#include <libavformat/avformat.h>\n", "whose owner is publisher/media/"),
    ("publisher/render/feed.c", "#include <opus/opus.h>\n", "whose owner is publisher/media/"),
    ("origin/serve.c", "#include <lmdb.h>\n", "includes <lmdb.h>, whose owner is origin/core/store.c"),
    ("origin/core/http.c", "#include <lmdb.h>\n", "whose owner is origin/core/store.c"),
    ("origin/serve.c", "#include <llhttp.h>\n", "whose owner is origin/core/http.c"),
    ("publisher/media/opus.c", "#include <png.h>\n", "whose owner is publisher/render/card.c"),
    ("publisher/render/card.c", "#include <zlib.h>\n", "whose owner is publisher/render/compress.c"),
    ("publisher/render/card.c", "#include <brotli/encode.h>\n",
     "whose owner is publisher/render/compress.c"),
    ("publisher/render/feed.c", "#include <libswresample/swresample.h>\n",
     "whose owner is publisher/media/"),
    ("publisher/media/opus.c", "#include <libpng16/png.h>\n",
     "whose owner is publisher/render/card.c"),
    ("publisher/media/decoder.c", "#include <seccomp.h>\n",
     "includes <seccomp.h>, whose owner is publisher/media/sandbox.c"),
    ("publisher/cmd/serve.c", "#include <seccomp.h>\n", "whose owner is publisher/media/sandbox.c"),
])
def test_a_library_outside_its_owner_fails(tmp_path, path, text, says):
    assert_fails(run_with(tmp_path, path, text), says)


@pytest.mark.parametrize("path,text", [
    ("publisher/deliver/net.c", "#include <curl/curl.h>\n"),
    ("origin/core/store.c", '#include "core/store.h"\n#include <lmdb.h>\n'),
    ("origin/core/store_internal.h", "#include <lmdb.h>\n"),
    ("origin/core/http.c", "#include <llhttp.h>\n"),
    ("publisher/media/ffmpeg.c", "#include <libavcodec/avcodec.h>\n#include <libavutil/frame.h>\n"),
    ("publisher/media/opus.c", "#include <opus/opus.h>\n#include <ogg/ogg.h>\n#include <soxr.h>\n"),
    ("publisher/render/card.c", "#include <png.h>\n"),
    ("publisher/render/compress.c", "#include <zlib.h>\n#include <brotli/encode.h>\n"),
    ("publisher/media/sandbox.c", "#include <seccomp.h>\n"),
    ("tests/unit/publisher/media/test_sandbox.c", "#include <seccomp.h>\n"),
    ("tests/unit/core/test_store.c", '#include "core/store.h"\n#include <lmdb.h>\n'),
    ("tests/unit/publisher/render/test_feed.c", "#include <curl/curl.h>\n#include <lmdb.h>\n"),
    ("publisher/render/feed.c", "#include <stdio.h>\n#include <string.h>\n#include <sys/types.h>\n"),
])
def test_a_library_in_its_owner_or_a_test_passes(tmp_path, path, text):
    assert_passes(run_with(tmp_path, path, text))


# Rule 7: every link of the READMEs names a file, folder or heading.
MEDIA_README = ("# Media\n\n## The code\n\n[up](../../README.md) [opus](opus.c)\n\n"
                "## Notes\n\n## Notes\n\n")


@pytest.mark.parametrize("readme,text,says", [
    ("README.md", "[media](publisher/media/README.md#nope)\n",
     "README.md: link to publisher/media/README.md#nope: no such heading"),
    ("README.md", "[media](publisher/media/README.md#the-code-1)\n",
     "README.md: link to publisher/media/README.md#the-code-1: no such heading"),
    ("README.md", "[media](publisher/media/README.md#notes-2)\n", "#notes-2: no such heading"),
    ("publisher/media/README.md", "[up](../../README.md#nope)\n",
     "publisher/media/README.md: link to ../../README.md#nope: no such heading"),
    ("publisher/media/README.md", "[x](#missing)\n",
     "publisher/media/README.md: link to #missing: no such heading"),
    ("README.md", "# Sayin\n\n[x](#missing)\n", "README.md: link to #missing: no such heading"),
    ("publisher/media/README.md", '[x](missing.md "t")\n',
     "publisher/media/README.md: link to missing.md, which is not in the tree"),
    ("publisher/media/README.md", '[x](missing.md#the-code "t")\n',
     "link to missing.md#the-code, which is not in the tree"),
    ("publisher/media/README.md", "[w]\n\n[w]: missing.md\n",
     "publisher/media/README.md: link to missing.md, which is not in the tree"),
    ("publisher/media/README.md", '[w]\n\n[w]: missing.md "t"\n',
     "link to missing.md, which is not in the tree"),
    ("publisher/media/README.md", "[w]\n\n[w]: #missing\n", "link to #missing: no such heading"),
    ("publisher/media/README.md", "[x](missing.md 't')\n",
     "link to missing.md, which is not in the tree"),
    ("publisher/media/README.md", "[x](missing.md (t))\n",
     "link to missing.md, which is not in the tree"),
    ("publisher/media/README.md", "[w]\n\n[w]: missing.md 't'\n",
     "link to missing.md, which is not in the tree"),
])
def test_a_broken_readme_link_fails(tmp_path, readme, text, says):
    files = dict(CLEAN)
    files["publisher/media/README.md"] = MEDIA_README
    files[readme] += text
    r = run(tree(tmp_path, files))
    assert r.returncode == 1
    assert says in r.stderr, r.stderr


@pytest.mark.parametrize("readme,text", [
    ("README.md", "[media](publisher/media/README.md#the-code)\n"),
    ("README.md", "[media](publisher/media/README.md#notes) "
                  "[more](publisher/media/README.md#notes-1)\n"),
    ("publisher/media/README.md", "[x](#the-code) [y](#media) [z](#notes-1)\n"),
    ("README.md", "# Sayin\n\n## The code\n\n[x](#the-code) [y](#sayin)\n"),
    ("publisher/media/README.md", '[x](opus.c "the Opus encoder") [y](../../README.md "front")\n'),
    ("publisher/media/README.md", '[x](README.md#the-code "t")\n'),
    ("publisher/media/README.md", "[w] [v] [u]\n\n[w]: opus.c\n[v]: ../render \"t\"\n"
                                  "[u]: #the-code\n"),
    ("publisher/media/README.md", "```\n[x](missing.md)\n```\n"),
    ("publisher/media/README.md", "A claim.[^1]\n\n[^1]: A footnote, not a link.\n"),
])
def test_a_valid_readme_link_passes(tmp_path, readme, text):
    files = dict(CLEAN)
    files["publisher/media/README.md"] = MEDIA_README
    files[readme] += text
    r = run(tree(tmp_path, files))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""

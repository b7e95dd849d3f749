"""--version on both programs: the build's version (git describe at build
time), the store format, and each linked library's version as the library
reports it at run time. Exit 0, nothing on stderr."""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CORE_LIBS = ["libuv", "llhttp", "lmdb", "openssl"]
PUBLISHER_LIBS = CORE_LIBS + ["libcurl", "jansson", "opus", "ffmpeg", "libavformat",
                              "libavcodec", "libavutil", "soxr", "libebur128", "libseccomp",
                              "zlib", "brotli", "libpng"]


def version_lines(sayin, program, args):
    r = sayin.run(program, args, timeout=10)
    assert r.returncode == 0, r
    assert r.stderr == "", r.stderr
    return r.stdout.splitlines()


def pkg_version(pkg):
    r = subprocess.run(["pkg-config", "--modversion", pkg], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def git_describe():
    r = subprocess.run(["git", "-C", ROOT, "describe", "--always"], capture_output=True,
                       text=True)
    return r.stdout.strip() if r.returncode == 0 else None


@pytest.mark.parametrize("which, args, libs", [
    ("origin", ["--version"], CORE_LIBS),
    ("publisher", ["--version"], PUBLISHER_LIBS),
])
def test_version_names_build_store_format_and_libraries(sayin, which, args, libs):
    program = sayin.origin_bin if which == "origin" else sayin.publisher
    lines = version_lines(sayin, program, args)
    name = "sayin-origin" if which == "origin" else "sayin-publisher"
    first = lines[0].split(" ")
    assert first[0] == name and len(first) == 2, lines
    build = first[1]
    # Built from this git checkout (make rebuilds the version before the
    # tests): git describe's output for HEAD, "-dirty" with local changes.
    if git_describe() is not None:
        assert build in (git_describe(), git_describe() + "-dirty"), (build, git_describe())
    assert lines[1] == "store-format 1" or re.fullmatch(r"store-format [1-9][0-9]*", lines[1])
    got = {}
    for line in lines[2:]:
        lib, _, ver = line.partition(" ")
        got[lib] = ver
    assert list(got) == libs, lines
    for lib, ver in got.items():
        assert re.search(r"\d+\.\d+", ver), (lib, ver)
    # As the libraries report themselves at run time: the same as the
    # installed development packages say.
    assert got["libuv"] == pkg_version("libuv")
    assert pkg_version("lmdb") in got["lmdb"]
    assert got["openssl"] == pkg_version("libcrypto")
    if which == "publisher":
        assert got["libcurl"] == pkg_version("libcurl")
        assert got["jansson"] == pkg_version("jansson")
        assert got["libavformat"] == pkg_version("libavformat")
        assert got["libpng"] == pkg_version("libpng")
        assert got["zlib"] == pkg_version("zlib")
        assert got["libseccomp"] == pkg_version("libseccomp")
        assert pkg_version("opus") in got["opus"]


def test_version_of_both_programs_agree(sayin):
    o = version_lines(sayin, sayin.origin_bin, ["--version"])
    p = version_lines(sayin, sayin.publisher, ["--version"])
    assert o[0].split(" ")[1] == p[0].split(" ")[1]
    assert o[1:6] == p[1:6]


def test_version_is_listed_in_the_usage(sayin):
    r = sayin.run(sayin.origin_bin, ["--help"], timeout=10)
    assert "--version" in r.stdout
    r = sayin.run(sayin.publisher, ["help"], timeout=10)
    assert "--version" in r.stdout

"""The manual pages sayin-origin(8) and sayin-publisher(8) (issue 14, item
7): mdoc, clean under `mandoc -T lint`, and they document every command,
the signals, the files, the environment and the exit status.

mandoc's only allowed message is the STYLE note that the other sayin page
is not installed (each names the other with .Xr); an outdated system
mandoc.db note is about the host, not the pages."""

import os
import re
import shutil
import subprocess

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ORIGIN = os.path.join(REPO, "origin", "sayin-origin.8")
PUBLISHER = os.path.join(REPO, "publisher", "sayin-publisher.8")

ALLOWED = [re.compile(r"STYLE: referenced manual not found: Xr sayin-(origin|publisher) 8"),
           re.compile(r"^mandoc: outdated mandoc\.db ")]


def lint(page):
    exe = shutil.which("mandoc") or pytest.fail("mandoc is not installed (run scripts/bootstrap)")
    p = subprocess.run([exe, "-T", "lint", page], capture_output=True, text=True, timeout=60)
    msgs = [l for l in (p.stdout + p.stderr).splitlines() if l.strip()]
    return [m for m in msgs if not any(a.search(m) for a in ALLOWED)]


@pytest.mark.parametrize("page", [ORIGIN, PUBLISHER])
def test_mandoc_lint_clean(page):
    bad = lint(page)
    assert not bad, "\n".join(bad)


def test_lint_notices_a_broken_page(tmp_path):
    broken = tmp_path / "broken.8"
    broken.write_text(open(ORIGIN).read().replace(".Sh DESCRIPTION\n", ".Sh DESCRIPTION\n.Bl\n"))
    assert lint(str(broken))


def sections(page):
    text = open(page).read()
    assert text.startswith(".Dd "), "mdoc starts with .Dd"
    return text, re.findall(r"^\.Sh (.+)$", text, re.M)


@pytest.mark.parametrize("page", [ORIGIN, PUBLISHER])
def test_sections(page):
    text, secs = sections(page)
    for s in ("NAME", "SYNOPSIS", "DESCRIPTION", "SIGNALS", "ENVIRONMENT", "FILES",
              "EXIT STATUS", "SEE ALSO"):
        assert s in secs, s
    for sig in ("SIGHUP", "SIGTERM"):
        assert "Dv %s" % sig in text
    assert "README.md" in text, "points to the README for the settings"
    exits = text[text.index(".Sh EXIT STATUS"):text.index(".Sh", text.index(".Sh EXIT STATUS") + 3)]
    for code in ("0", "1", "2"):
        assert re.search(r"^\.It %s$" % code, exits, re.M), code
    assert "format" in exits, "exit 2 covers a store of another format"


def commands_documented(text):
    return {" ".join(m.split()[:2]) if m.split()[0] in ("author", "site", "config") else
            m.split()[0] for m in re.findall(r"^\.It Cm (.+)$", text, re.M)}


def test_publisher_page_documents_every_command(bin_dir):
    text, _ = sections(PUBLISHER)
    documented = commands_documented(text)
    # Every command the program lists in its usage...
    out = subprocess.run([os.path.join(bin_dir, "sayin-publisher"), "help"], capture_output=True,
                         text=True).stdout
    listed = re.findall(r"^  (\S+) ", out[out.index("Commands:"):], re.M)
    assert listed
    for cmd in listed:
        assert any(d == cmd or d.startswith(cmd + " ") for d in documented), cmd
    # ...the author subcommands, and the ones issue 14 adds.
    for cmd in ("author add", "author token", "author revoke", "author rebuild", "author list",
                "site init", "site set", "site show", "rebuild", "config check", "config show",
                "migrate", "backup", "restore", "fsck", "settings"):
        assert cmd in documented, cmd
    assert "Fl \\-all" in text and "Fl \\-example" in text and "Fl \\-to-s3" in text
    assert "Fl \\-version" in text


def test_origin_page_documents_its_options():
    text, _ = sections(ORIGIN)
    for opt in ("config", "data", "listen", "threads", "version", "help"):
        assert ".It Fl \\-%s" % opt in text, opt

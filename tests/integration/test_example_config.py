"""The example configuration (issue 14, item 7): `sayin-publisher settings
--example` prints every setting of the settings table, commented out with
its default, grouped by INI section; make install ships it as
sayin.ini.example (and, with the store in /var/lib/sayin/store, as the
sayin.ini the units read).

Python's configparser reads it; uncommented, every key is there with its
default, and the programs accept the file: `settings --config`, `push`,
`status` and the origin run on it."""

import configparser
import os
import re
import signal

import pytest

from helpers.procs import wait_healthy

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KEY_LINE = re.compile(r"^;([a-z0-9_]+) =(?: (.*))?$")


def table(sayin):
    """The settings table: [(flag, section, key, env, default or None)]."""
    p = sayin.run(sayin.publisher, ["settings"])
    assert p.returncode == 0, p.stderr
    rows = []
    for line in p.stdout.splitlines():
        m = re.match(r"^\| `--([a-z0-9-]+)` \| `\[([a-z]+)\] ([a-z0-9_]+)` \| `([A-Z0-9_]+)` \| "
                     r"(.*?) \| ", line)
        if m:
            default = None if m.group(5) == "(derived)" else m.group(5)
            rows.append((m.group(1), m.group(2), m.group(3), m.group(4), default))
    assert len(rows) > 50, p.stdout[:500]
    return rows


def example(sayin):
    p = sayin.run(sayin.publisher, ["settings", "--example"])
    assert p.returncode == 0, p.stderr
    return p.stdout


def uncomment(text, with_empty):
    out = []
    for line in text.splitlines():
        m = KEY_LINE.match(line)
        if m and (with_empty or m.group(2) is not None):
            line = line[1:]
        out.append(line)
    return "\n".join(out) + "\n"


def parse(text):
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.read_string(text)
    return cp


def test_every_key_commented_out_with_its_default(sayin):
    text = example(sayin)
    commented = parse(text)
    rows = table(sayin)
    sections = [s for s in dict.fromkeys(r[1] for r in rows)]
    # Grouped: each section once, in the table's order; nothing set while commented.
    assert commented.sections() == sections
    for s in sections:
        assert dict(commented[s]) == {}, "only comments in [%s]" % s
    assert not [l for l in text.splitlines() if l.strip() and not l.startswith((";", "["))]
    cp = parse(uncomment(text, with_empty=True))
    for flag, section, key, env, default in rows:
        assert key in cp[section], "[%s] %s missing" % (section, key)
        assert cp[section][key] == (default or ""), (section, key, default)
        # The comment above each key names its flag and environment variable.
        assert re.search(r"; flag --%s, environment \$%s\b[^\n]*\n;%s =" % (
            re.escape(flag), re.escape(env), re.escape(key)), text), flag
    assert sum(len(cp[s]) for s in cp.sections()) == len(rows)


def test_the_programs_accept_the_uncommented_defaults(sayin, tmp_path, short_wav):
    ini = tmp_path / "sayin.ini"
    ini.write_text(uncomment(example(sayin), with_empty=False))
    store = tmp_path / "store"
    p = sayin.run(sayin.publisher, ["settings", "--config", str(ini)])
    assert p.returncode == 0, p.stderr
    sayin.post(store, "demo", short_wav, args=["--config", str(ini)])
    for cmd in ("push", "status"):
        p = sayin.run(sayin.publisher, [cmd, "--config", str(ini), "--data", str(store)])
        assert p.returncode == 0, (cmd, p.stderr)
    origin = sayin.start_origin(store, args=["--config", str(ini)])
    assert origin.get("/u/demo/feed.json").status == 200
    origin.stop(signal.SIGTERM)


def test_a_bad_key_in_it_is_reported(sayin, tmp_path):
    """settings --config really reads the file (the check above means something)."""
    ini = tmp_path / "bad.ini"
    ini.write_text(uncomment(example(sayin), with_empty=False).replace(
        "\nmap_size = ", "\nmap_sise = "))
    p = sayin.run(sayin.publisher, ["settings", "--config", str(ini)])
    assert p.returncode == 2 and "map_sise" in p.stderr, p.stderr


def test_every_key_uncommented_is_accepted(sayin, tmp_path):
    ini = tmp_path / "all.ini"
    ini.write_text(uncomment(example(sayin), with_empty=True))
    os.chmod(ini, 0o600)
    p = sayin.run(sayin.publisher, ["settings", "--config", str(ini)])
    assert p.returncode == 0, p.stderr


def test_installed_example_is_the_generated_one(sayin):
    """make builds build/release/sayin.ini.example, which install ships."""
    built = os.path.join(REPO, "build", "release", "sayin.ini.example")
    if not os.path.exists(built):
        pytest.skip("build/release not built (a SANITIZE=1 run)")
    assert open(built).read() == example(sayin)
    ini = open(os.path.join(REPO, "build", "release", "sayin.ini")).read()
    assert ini.count("\ndata = /var/lib/sayin/store\n") == 1
    assert parse(ini)["store"]["data"] == "/var/lib/sayin/store"

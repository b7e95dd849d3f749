"""A strict parser of the Prometheus text exposition format (0.0.4), as
node_exporter's textfile collector and Prometheus read it, and promtool's
lint when Debian's prometheus package is installed."""

import math
import re
import shutil
import subprocess

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
SAMPLE_RE = re.compile(r"^(%s)(\{(?:%s(?:,%s)*)?,?\})? (\S+)( -?\d+)?$" % (NAME, LABEL, LABEL))
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class Exposition:
    def __init__(self, text):
        self.text = text
        self.types = {}    # family -> type
        self.helps = {}
        self.samples = {}  # (name, frozenset(labels.items())) -> value

    def get(self, name, **labels):
        key = (name, frozenset(labels.items()))
        assert key in self.samples, "no %s%r in:\n%s" % (name, labels, self.text)
        return self.samples[key]

    def has(self, name, **labels):
        return (name, frozenset(labels.items())) in self.samples


def _family(name, types):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[:-len(suffix)]) == "histogram":
            return name[:-len(suffix)]
    return name


def parse(text):
    """Parses text strictly; raises AssertionError naming the bad line."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    e = Exposition(text)
    seen_samples = set()  # families whose samples began
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d: %r" % (n, line)
        assert line, "empty " + where
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
                assert len(parts) >= 3 and re.fullmatch(NAME, parts[2]), where
                fam = parts[2]
                assert fam not in seen_samples, "HELP/TYPE after samples, " + where
                if parts[1] == "TYPE":
                    assert len(parts) == 4 and parts[3] in TYPES, where
                    assert fam not in e.types, "two TYPE lines, " + where
                    e.types[fam] = parts[3]
                else:
                    assert fam not in e.helps, "two HELP lines, " + where
                    e.helps[fam] = parts[3] if len(parts) == 4 else ""
            continue
        m = SAMPLE_RE.match(line)
        assert m, "malformed sample, " + where
        name, labels_text, value = m.group(1), m.group(2) or "", m.group(7)
        labels = dict(re.findall(LABEL, labels_text))
        v = float(value)  # raises on junk; NaN and +Inf are valid
        fam = _family(name, e.types)
        seen_samples.add(fam)
        key = (name, frozenset(labels.items()))
        assert key not in e.samples, "duplicate series, " + where
        e.samples[key] = v
        if e.types.get(fam) == "counter":
            assert math.isnan(v) or v >= 0, "negative counter, " + where
    return e


def promtool_check(text):
    """`promtool check metrics` on text when promtool is installed: returns
    its complaints ("" when none, None when not installed)."""
    tool = shutil.which("promtool")
    if tool is None:
        return None
    r = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode in (0, 1, 3), (r.returncode, r.stderr)
    return (r.stdout + r.stderr).strip()

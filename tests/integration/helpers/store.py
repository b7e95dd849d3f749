"""The LMDB store from outside: entry counts and keys (mdb_stat, mdb_dump), its
files, the written bytes of a sparse file, and the shapes of what it keys
(SHA-256 hex, post ids in Crockford base 32)."""

import hashlib
import os
import re
import subprocess

HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Crockford base 32, lowercase: no i, l, o, u.
CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
POST_ID_RE = re.compile(r"^[0-9abcdefghjkmnpqrstvwxyz]{26}$")


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def file_data(path):
    """The bytes of a file without its holes: the written extents, joined by
    a NUL. The store's data.mdb is sparse, as large as its map (64 GiB by
    default), so reading it whole would not fit in memory."""
    parts = []
    with open(path, "rb") as f:
        fd, end, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < end:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break  # ENXIO: only a hole is left
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            f.seek(start)
            parts.append(f.read(stop - start))
            pos = stop
    return b"\0".join(parts)


def mdb_stat_all(data_dir):
    """{database name: entries} from `mdb_stat -a DIR` ("" = the main DB)."""
    out = subprocess.run(["mdb_stat", "-a", str(data_dir)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, "mdb_stat -a %s failed: %s" % (data_dir, out.stderr)
    stats = {}
    current = None
    for line in out.stdout.splitlines():
        m = re.match(r"^Status of (.*)$", line.strip())
        if m:
            name = m.group(1)
            current = "" if name == "Main DB" else name
            continue
        m = re.match(r"^\s*Entries:\s*(\d+)", line)
        if m and current is not None:
            stats[current] = int(m.group(1))
    return stats


def store_counts(data_dir):
    """Entries of the named databases that matter (0 when absent)."""
    s = mdb_stat_all(data_dir)
    return {k: s.get(k, 0) for k in ("objects", "names", "posts", "author_posts", "authors")}


def mdb_keys(data_dir, db):
    """The keys of database db, as hex strings (via mdb_dump)."""
    out = subprocess.run(["mdb_dump", "-s", db, str(data_dir)], capture_output=True,
                         timeout=60)
    assert out.returncode == 0, "mdb_dump -s %s %s failed: %s" % (db, data_dir, out.stderr)
    lines = out.stdout.decode("latin-1").splitlines()
    try:
        start = lines.index("HEADER=END") + 1
    except ValueError:
        raise AssertionError("unexpected mdb_dump output: %r" % lines[:10])
    keys = []
    body = [l for l in lines[start:] if l != "DATA=END"]
    for i in range(0, len(body), 2):
        keys.append(body[i].strip())
    return keys


def store_files(data_dir):
    return sorted(os.listdir(data_dir))

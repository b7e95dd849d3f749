"""Build flags, make install and the Debian package (issue 14, item 7).

- The Makefile passes CPPFLAGS, CFLAGS and LDFLAGS, hardens by default
  (stack protector, _FORTIFY_SOURCE when optimising and not under the
  sanitizers, PIE, relro and now) and makes warnings errors only with
  WERROR=1, which make check sets (read from `make -n`, cheap).
- `hardening-check` says yes on the installed binaries (see assert_hardened
  for its two checks that cannot on Debian 12, and what is checked instead).
- `make install` / `make uninstall` into a DESTDIR.
- `make deb`: the package's files, Depends from dpkg-shlibdeps, no lintian
  error (its warnings are printed), and, as root, on a Debian 12 root made
  by debootstrap (cached in ~/.cache/sayin-tests/debootstrap/; `make test-debian` makes
  the cache, make check uses it when it is there), `apt-get install
  ./sayin_*.deb` creates the users and the store layout and the installed
  units verify.

The package is made from the release build (build/release), which make
check builds before the integration tests; a SANITIZE=1 run skips these.
"""

import os
import re
import shutil
import subprocess
import time
import urllib.request

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RELEASE = os.path.join(REPO, "build", "release")
# Outside the clone, so that a clean clone (CI) on the same machine reuses
# the root: SAYIN_TEST_CACHE, else $XDG_CACHE_HOME or ~/.cache.
DEBOOTSTRAP = os.path.join(
    os.environ.get("SAYIN_TEST_CACHE")
    or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                    "sayin-tests"), "debootstrap")
MIRROR = "http://deb.debian.org/debian"


# Under make check, the make running pytest passes its own command line
# (WERROR=1, SANITIZE=1, -j) down through MAKEFLAGS: a make started here
# must not inherit it.
MAKE_VARS = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "MAKE_TERMOUT",
             "MAKE_TERMERR")
# The dry runs ask what the Makefile does with given flags, not the caller's.
FLAG_VARS = ("CPPFLAGS", "CFLAGS", "LDFLAGS", "WERROR", "SANITIZE", "CC")


def make(*args, dry=False, timeout=300):
    # A make started here builds what the project builds (the release
    # binaries), whatever the caller's make check exported (SANITIZE=1, CFLAGS).
    drop = MAKE_VARS + FLAG_VARS
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return subprocess.run(["make", "--no-print-directory", "-C", REPO] + list(args),
                          capture_output=True, text=True, env=env, timeout=timeout)


def dry_run(target, *assignments):
    """The commands make would run for target, forced (make -n -B)."""
    p = make("-n", "-B", target, *assignments, dry=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def compile_line(out, source):
    lines = [l for l in out.splitlines() if (" -c " in l and l.rstrip().endswith(source))]
    assert lines, "no compile command for %s in:\n%s" % (source, out)
    return lines[0].split()


OBJ = "build/release/origin/core/buf.o"
PUB_OBJ = "build/release/publisher/cmd/settings.o"


def test_hardening_flags_by_default():
    for target, src in ((OBJ, "origin/core/buf.c"), (PUB_OBJ, "publisher/cmd/settings.c")):
        flags = compile_line(dry_run(target), src)
        for f in ("-D_FORTIFY_SOURCE=2", "-fstack-protector-strong", "-fPIE"):
            assert f in flags, (f, flags)
        assert "-Werror" not in flags, "warnings are errors only with WERROR=1"


def test_werror_only_when_asked_and_make_check_asks():
    assert "-Werror" in compile_line(dry_run(OBJ, "WERROR=1"), "origin/core/buf.c")
    p = make("-n", "check", dry=True)
    assert p.returncode == 0, p.stderr
    assert re.search(r"^\S*make WERROR=1 all$", p.stdout, re.M), \
        "make check must build with WERROR=1:\n" + p.stdout[:2000]
    p = make("-n", "check", "WERROR=0", dry=True)
    assert "WERROR=0 all" in p.stdout


def test_cppflags_cflags_ldflags_are_passed():
    out = dry_run(OBJ, "CPPFLAGS=-DSAYIN_FROM_CPPFLAGS", "CFLAGS=-O2 -DSAYIN_FROM_CFLAGS")
    flags = compile_line(out, "origin/core/buf.c")
    assert "-DSAYIN_FROM_CPPFLAGS" in flags and "-DSAYIN_FROM_CFLAGS" in flags
    flags = compile_line(dry_run(PUB_OBJ, "CPPFLAGS=-DSAYIN_FROM_CPPFLAGS"),
                         "publisher/cmd/settings.c")
    assert "-DSAYIN_FROM_CPPFLAGS" in flags
    # The caller's flags come after the defaults, so they win.
    assert flags.index("-DSAYIN_FROM_CPPFLAGS") > flags.index("-fstack-protector-strong")
    link = [l for l in dry_run("build/release/bin/sayin-origin", "LDFLAGS=-Wl,--as-needed")
            .splitlines() if "-o build/release/bin/sayin-origin" in l]
    assert link, "no link command"
    for f in ("-pie", "-Wl,-z,relro", "-Wl,-z,now", "-Wl,--as-needed"):
        assert f in link[0].split(), (f, link[0])


def test_fortify_only_when_optimising_and_not_twice():
    assert "-D_FORTIFY_SOURCE=2" not in compile_line(dry_run(OBJ, "CFLAGS=-O0 -g"),
                                                     "origin/core/buf.c")
    assert "-D_FORTIFY_SOURCE=2" not in compile_line(dry_run(OBJ, "CFLAGS=-g"),
                                                     "origin/core/buf.c")
    san = compile_line(dry_run("build/sanitize/origin/core/buf.o", "SANITIZE=1"),
                       "origin/core/buf.c")
    assert "-D_FORTIFY_SOURCE=2" not in san and "-fsanitize=address,undefined" in san
    # A distribution's own level (dpkg-buildflags: -D_FORTIFY_SOURCE=2 in
    # CPPFLAGS) is the only one, so no redefinition warning.
    flags = compile_line(dry_run(OBJ, "CPPFLAGS=-D_FORTIFY_SOURCE=3"), "origin/core/buf.c")
    assert [f for f in flags if "_FORTIFY_SOURCE" in f] == ["-D_FORTIFY_SOURCE=3"]


@pytest.fixture(scope="module")
def release_built():
    for b in ("sayin-origin", "sayin-publisher"):
        if not os.access(os.path.join(RELEASE, "bin", b), os.X_OK):
            pytest.skip("the package is made from the release build, and build/release/bin/%s "
                        "is missing (a SANITIZE=1 run): run make" % b)


@pytest.fixture(scope="module")
def installed(release_built, tmp_path_factory):
    """make install into a DESTDIR, Debian's paths."""
    dest = tmp_path_factory.mktemp("destdir")
    p = make("install", "DESTDIR=%s" % dest, "PREFIX=/usr", "SYSCONFDIR=/etc")
    assert p.returncode == 0, p.stdout + p.stderr
    return dest


INSTALLED = ["usr/bin/sayin-origin", "usr/bin/sayin-publisher",
             "usr/share/man/man8/sayin-origin.8", "usr/share/man/man8/sayin-publisher.8",
             "etc/sayin/sayin.ini", "etc/sayin/sayin.ini.example",
             "usr/lib/systemd/system/sayin-origin.service",
             "usr/lib/systemd/system/sayin-publisher.service",
             "usr/lib/systemd/system/sayin-push.service", "usr/lib/systemd/system/sayin-push.timer",
             "usr/lib/systemd/system/sayin-crosspost.service",
             "usr/lib/systemd/system/sayin-crosspost.timer",
             "usr/lib/systemd/system/sayin-backup.service",
             "usr/lib/systemd/system/sayin-backup.timer",
             "usr/lib/sysusers.d/sayin.conf", "usr/lib/tmpfiles.d/sayin.conf",
             "usr/share/doc/sayin/examples/crontab"]


def files_under(root):
    out = set()
    for d, _, files in os.walk(root):
        for f in files:
            out.add(os.path.relpath(os.path.join(d, f), root))
    return out


def test_make_install_and_uninstall(release_built, tmp_path):
    dest = tmp_path / "dest"
    p = make("install", "DESTDIR=%s" % dest, "PREFIX=/opt/sayin")
    assert p.returncode == 0, p.stdout + p.stderr
    got = files_under(dest)
    want = {f.replace("usr/", "opt/sayin/", 1).replace("etc/", "opt/sayin/etc/", 1)
            for f in INSTALLED}
    assert got == want
    unit = (dest / "opt/sayin/lib/systemd/system/sayin-origin.service").read_text()
    assert "ExecStart=/opt/sayin/bin/sayin-origin" in unit
    assert "SAYIN_CONFIG=/opt/sayin/etc/sayin/sayin.ini" in unit
    cron = (dest / "opt/sayin/share/doc/sayin/examples/crontab").read_text()
    assert "/opt/sayin/bin/sayin-publisher push" in cron
    assert os.access(dest / "opt/sayin/bin/sayin-origin", os.X_OK)
    # An operator's edited config survives a reinstall and an uninstall.
    ini = dest / "opt/sayin/etc/sayin/sayin.ini"
    ini.write_text("[store]\ndata = /srv/sayin\n")
    assert make("install", "DESTDIR=%s" % dest, "PREFIX=/opt/sayin").returncode == 0
    assert ini.read_text() == "[store]\ndata = /srv/sayin\n"
    p = make("uninstall", "DESTDIR=%s" % dest, "PREFIX=/opt/sayin")
    assert p.returncode == 0, p.stdout + p.stderr
    assert files_under(dest) == {"opt/sayin/etc/sayin/sayin.ini"}
    ini.unlink()
    assert make("install", "DESTDIR=%s" % dest, "PREFIX=/opt/sayin").returncode == 0
    assert make("uninstall", "DESTDIR=%s" % dest, "PREFIX=/opt/sayin").returncode == 0
    assert files_under(dest) == set()


def hardening_check(paths, *opts):
    exe = shutil.which("hardening-check")
    if exe is None:
        pytest.fail("hardening-check is not installed (devscripts; run scripts/bootstrap)")
    return subprocess.run([exe] + list(opts) + [str(x) for x in paths], capture_output=True,
                          text=True, timeout=120)


def has_cet_note(path):
    notes = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True).stdout
    return re.search(r"Properties: x86 feature: IBT, SHSTK", notes) is not None


def assert_hardened(paths):
    """hardening-check says yes to PIE, stack protector, fortify, relro and
    bindnow. Its two newer checks cannot say yes on Debian 12, and for each
    the test checks the protection itself instead:
    - stack clash: hardening-check only recognises the probing *loop* gcc
      emits for frames over 16 KiB or alloca; our largest frames get the
      unrolled probes (sub rsp,0x1000; or QWORD PTR [rsp],0x0), read here
      with objdump; Debian's own ls, curl and nginx also read "unknown";
    - control flow integrity: it wants the IBT+SHSTK note on the program,
      which ld sets only when every input has it, and Debian 12's glibc
      start files (Scrt1.o, crti.o, crtn.o) do not: every Debian 12 program
      reads "no". Our objects carry it (-fcf-protection), checked here."""
    p = hardening_check(paths, "--nocfprotection")
    print(p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    reports, current = {}, None
    for line in p.stdout.splitlines():
        if line and not line.startswith(" "):
            current = reports.setdefault(line.rstrip(":"), {})
        elif ": " in line and current is not None:
            k, v = line.strip().split(": ", 1)
            current[k] = v
    assert sorted(reports) == sorted(str(x) for x in paths), p.stdout
    for path in paths:
        lines = reports[str(path)]
        for check in ("Position Independent Executable", "Stack protected",
                      "Fortify Source functions", "Read-only relocations", "Immediate binding"):
            assert lines[check].startswith("yes"), (path, check, lines[check])
        clash = lines["Stack clash protection"]
        if not clash.startswith("yes"):
            dis = subprocess.run(["objdump", "-d", "-M", "intel", str(path)], capture_output=True,
                                 text=True).stdout
            assert re.search(r"sub\s+rsp,0x1000\n.*or\s+QWORD PTR \[rsp\],0x0", dis), \
                "%s: no stack clash probe (%s)" % (path, clash)
        if not lines["Control flow integrity"].startswith("yes"):
            if os.uname().machine != "x86_64":
                continue
            crt = "/usr/lib/x86_64-linux-gnu/Scrt1.o"
            assert os.path.exists(crt) and not has_cet_note(crt), \
                "%s lacks the CET note although the start files have it" % path
            assert has_cet_note(os.path.join(RELEASE, "origin", "core", "buf.o")), \
                "our objects are not built with -fcf-protection"


def test_hardening_check_says_yes(installed):
    assert_hardened([installed / "usr/bin/sayin-origin", installed / "usr/bin/sayin-publisher"])


def test_hardening_check_notices_a_plain_build(tmp_path):
    """The check above is real: a program built without the flags fails it."""
    src = tmp_path / "plain.c"
    src.write_text("#include <stdio.h>\n#include <string.h>\nint main(int c, char **v)"
                   "{ char b[8]; strcpy(b, v[0]); puts(b); return c; }\n")
    out = tmp_path / "plain"
    subprocess.run(["cc", "-O2", "-fno-stack-protector", "-no-pie", "-U_FORTIFY_SOURCE",
                    "-o", str(out), str(src)], check=True)
    assert hardening_check([out], "--nocfprotection").returncode != 0


@pytest.fixture(scope="module")
def deb(release_built, tmp_path_factory):
    out = tmp_path_factory.mktemp("deb")
    t = time.monotonic()
    p = make("deb", "DEB_DIR=%s" % out)
    assert p.returncode == 0, p.stdout + p.stderr
    debs = [f for f in os.listdir(out) if f.startswith("sayin_") and f.endswith(".deb")]
    assert len(debs) == 1, os.listdir(out)
    print("make deb: %.1f s" % (time.monotonic() - t))
    return out / debs[0]


def deb_field(deb_path, field):
    return subprocess.run(["dpkg-deb", "--field", str(deb_path), field], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_deb_contents(deb, tmp_path):
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True,
                             text=True, check=True).stdout
    paths = {l.split()[5].lstrip("./") for l in listing.splitlines() if not l.startswith("d")}
    for f in ("usr/bin/sayin-origin", "usr/bin/sayin-publisher",
              "usr/share/man/man8/sayin-origin.8.gz", "usr/share/man/man8/sayin-publisher.8.gz",
              "etc/sayin/sayin.ini", "etc/sayin/sayin.ini.example",
              "lib/systemd/system/sayin-origin.service",
              "lib/systemd/system/sayin-publisher.service",
              "lib/systemd/system/sayin-push.timer", "lib/systemd/system/sayin-crosspost.timer",
              "lib/systemd/system/sayin-backup.timer",
              "usr/lib/sysusers.d/sayin.conf", "usr/lib/tmpfiles.d/sayin.conf",
              "usr/share/doc/sayin/copyright", "usr/share/doc/sayin/changelog.gz",
              "usr/share/doc/sayin/examples/crontab"):
        assert f in paths, f
    depends = deb_field(deb, "Depends")
    # From dpkg-shlibdeps: the libraries the binaries link, with versions.
    for lib in ("libuv1 (>=", "liblmdb0 (>=", "libopus0 (>=", "libc6 (>="):
        assert lib in depends, depends
    assert deb_field(deb, "Package") == "sayin"
    ctrl = tmp_path / "ctrl"
    subprocess.run(["dpkg-deb", "--control", str(deb), str(ctrl)], check=True)
    assert (ctrl / "conffiles").read_text().split() == ["/etc/sayin/sayin.ini",
                                                        "/etc/sayin/sayin.ini.example"]
    for s in ("postinst", "prerm", "postrm"):
        assert os.access(ctrl / s, os.X_OK), s
    # The installed config puts the store where tmpfiles.d lays it out.
    x = tmp_path / "x"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(x)], check=True)
    ini = (x / "etc/sayin/sayin.ini").read_text()
    assert "\ndata = /var/lib/sayin/store\n" in ini
    assert_hardened([x / "usr/bin/sayin-origin", x / "usr/bin/sayin-publisher"])


def test_lintian_reports_no_error(deb):
    exe = shutil.which("lintian")
    if exe is None:
        pytest.fail("lintian is not installed (run scripts/bootstrap)")
    p = subprocess.run([exe, "--pedantic", "--info", str(deb)], capture_output=True, text=True,
                       timeout=600)
    tags = [l for l in p.stdout.splitlines() if re.match(r"^[EWIPX]: ", l)]
    print("lintian:\n" + "\n".join(tags))
    assert p.returncode in (0, 2) or not p.stderr.strip().startswith("Usage"), p.stderr
    errors = [l for l in tags if l.startswith("E: ")]
    assert not errors, "\n".join(errors)


# ---- a clean Debian 12 (debootstrap + chroot) ----

def mirror_reachable():
    try:
        with urllib.request.urlopen(MIRROR + "/dists/bookworm/Release", timeout=10) as r:
            return r.status == 200
    except OSError:
        return False


class Chroot:
    """A Debian root with /proc and the shared apt archive mounted."""

    def __init__(self, root):
        self.root = str(root)
        self.mounts = []

    def __enter__(self):
        archives = os.path.join(DEBOOTSTRAP, "archives")
        os.makedirs(os.path.join(archives, "partial"), exist_ok=True)
        for args, where in ((["--bind", archives], "var/cache/apt/archives"),
                            (["-t", "proc", "proc"], "proc")):
            path = os.path.join(self.root, where)
            subprocess.run(["mount"] + args + [path], check=True)
            self.mounts.append(path)
        return self

    def __exit__(self, *exc):
        for m in reversed(self.mounts):
            subprocess.run(["umount", "-l", m])

    def run(self, cmd, timeout=900):
        return subprocess.run(["chroot", self.root, "sh", "-c", cmd], capture_output=True,
                              text=True, timeout=timeout,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                   "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"})


def install_and_check(root, deb):
    """apt-get install ./sayin_*.deb in root; then the users, the store
    layout, the units (systemd-analyze verify) and the programs run."""
    shutil.copy(deb, os.path.join(str(root), "tmp"))
    with Chroot(root) as c:
        # systemd for systemd-analyze, man-db so Documentation=man: resolves.
        p = c.run("apt-get install -y -q --no-install-recommends /tmp/%s systemd man-db"
                  % deb.name)
        if p.returncode != 0 and ("Could not resolve" in p.stdout + p.stderr
                                  or "Failed to fetch" in p.stdout + p.stderr):
            pytest.skip("apt-get could not download the dependencies: %s" % p.stdout[-500:])
        assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
        p = c.run("id sayin; id sayin-origin; stat -c '%a %U %G %n' /var/lib/sayin/store "
                  "/var/lib/sayin/store/lock.mdb /etc/sayin/credentials")
        assert p.returncode == 0, p.stderr
        out = p.stdout
        assert re.search(r"uid=\d+\(sayin-origin\).*groups=.*\(sayin\)", out), out
        assert "750 sayin sayin /var/lib/sayin/store\n" in out, out
        assert "660 sayin sayin /var/lib/sayin/store/lock.mdb\n" in out, out
        assert "700 root root /etc/sayin/credentials\n" in out, out
        p = c.run("systemd-analyze verify /lib/systemd/system/sayin-*.service "
                  "/lib/systemd/system/sayin-*.timer")
        assert p.returncode == 0 and not p.stderr.strip(), p.stdout + p.stderr
        p = c.run("sayin-origin --help >/dev/null && sayin-publisher settings --example "
                  "--config /etc/sayin/sayin.ini >/dev/null")
        assert p.returncode == 0, p.stderr
        return c


def debian_root(deb):
    """DEBOOTSTRAP/rootfs: made once (debootstrap minbase bookworm,
    about 70 s here, then apt-get update), and checked there with a first,
    truly clean install of the package. That install is then purged and its
    users deleted, so the cached root keeps only the dependencies apt
    brought (the libraries, systemd, man-db): later runs install the
    package in a copy in seconds instead of a minute and a half. The
    packages apt downloads are kept in DEBOOTSTRAP/archives."""
    root = os.path.join(DEBOOTSTRAP, "rootfs")
    if os.path.isfile(os.path.join(root, "var", "lib", "sayin-test-ready")):
        return root
    if os.environ.get("SAYIN_TEST_DEBOOTSTRAP") != "1":
        pytest.skip("no cached Debian 12 root in %s/rootfs: `make check` or `make test-debian` "
                    "makes it (3 to 4 minutes, as root, from %s); later runs reuse it (about "
                    "10 s)" % (DEBOOTSTRAP, MIRROR))
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is not installed (run scripts/bootstrap)")
    if not mirror_reachable():
        pytest.skip("no cached Debian root in %s and %s is unreachable" % (DEBOOTSTRAP, MIRROR))
    tmp = root + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(DEBOOTSTRAP, exist_ok=True)
    p = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", tmp, MIRROR],
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    p = subprocess.run(["chroot", tmp, "apt-get", "update", "-qq"], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    install_and_check(tmp, deb)
    with Chroot(tmp) as c:
        p = c.run("apt-get purge -y -q sayin && userdel sayin-origin && userdel sayin && "
                  "rm -rf /var/lib/sayin /etc/sayin /tmp/*.deb && ! getent group sayin")
        assert p.returncode == 0, p.stdout + p.stderr
    open(os.path.join(tmp, "var", "lib", "sayin-test-ready"), "w").close()
    os.rename(tmp, root)
    return root


@pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap and chroot need root")
def test_installs_on_a_clean_debian_12(deb, tmp_path):
    t0 = time.monotonic()
    root = debian_root(deb)
    t1 = time.monotonic()
    scratch = tmp_path / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", root, str(scratch)], check=True)
    p = subprocess.run(["chroot", str(scratch), "getent", "passwd", "sayin"],
                       capture_output=True, text=True)
    assert p.returncode != 0, "the cached root still has the user sayin"
    try:
        install_and_check(scratch, deb)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("debian root %.1f s, install + checks %.1f s" % (t1 - t0, time.monotonic() - t1))

"""CDN edges from cdn-config/: Varnish and nginx started with the shipped
files (the policy file is copied byte for byte, and only the site part,
origin address, listening address and purge ACL, is written per test), and
the origin's request counters that show what got past them."""

import os
import re
import shutil
import signal
import subprocess

import pytest

from helpers.http import HttpConn, parse_metrics
from helpers.procs import find_program, free_port, read_log, wait_healthy

CDN_CONFIG = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..",
                                          "cdn-config"))
VARNISH_VCL = os.path.join(CDN_CONFIG, "varnish", "sayin.vcl")
NGINX_CONF = os.path.join(CDN_CONFIG, "nginx", "edge.conf")
# The shipped default: plain HTTP to the origin.
NGINX_ORIGIN_TLS = os.path.join(CDN_CONFIG, "nginx", "site", "origin-tls.conf")
LOOPBACK_PURGERS = ("127.0.0.1", "::1")


def origin_content_requests(origin):
    """How many requests sayin-origin answered for objects and names (its
    own sayin_origin_requests_total, routes object and name, every method
    and status). Scraping /metrics counts as route other, and so do health
    probes."""
    r = origin.get("/metrics")
    assert r.status == 200, "the origin's /metrics: %r" % r
    total = 0.0
    seen = False
    for key, value in parse_metrics(r.body.decode()).items():
        if not key.startswith("sayin_origin_requests_total{"):
            continue
        seen = True
        if 'route="object"' in key or 'route="name"' in key:
            total += value
    assert seen, "sayin_origin_requests_total missing from the origin's /metrics"
    return int(total)


def origin_metric(origin, name):
    r = origin.get("/metrics")
    assert r.status == 200, r
    return int(sum(v for k, v in parse_metrics(r.body.decode()).items()
                   if k == name or k.startswith(name + "{")))


class Edge:
    """A running edge (Varnish or nginx) on 127.0.0.1:port."""

    kind = "edge"

    def __init__(self, proc, port, base, log_path):
        self.proc = proc
        self.port = port
        self.base = base
        self.log_path = log_path

    def log(self):
        return read_log(self.log_path)

    def request(self, method, path, headers=None, timeout=10.0, host=None):
        """One request on a fresh connection, with Host: host (default the
        edge's address, as the purge driver sends it)."""
        hdrs = [("Host", host or "127.0.0.1:%d" % self.port)]
        hdrs += list((headers or {}).items())
        head = "%s %s HTTP/1.1\r\n" % (method, path)
        head += "".join("%s: %s\r\n" % (k, v) for k, v in hdrs)
        with HttpConn(self.port, timeout=timeout) as c:
            c.send(head.encode("latin-1") + b"\r\n")
            return c.read_response(head=(method == "HEAD"))

    def get(self, path, headers=None, host=None):
        return self.request("GET", path, headers=headers, host=host)

    def purge(self, path, headers=None):
        return self.request("PURGE", path, headers=headers)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        # The master leads its own process group (its children are in it).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


class VarnishEdge(Edge):
    kind = "varnish"

    def __init__(self, proc, port, base, log_path, workdir, vcl_path):
        super().__init__(proc, port, base, log_path)
        self.workdir = workdir  # varnishd -n
        self.vcl_path = vcl_path

    def stat(self, field):
        """One counter from varnishstat (e.g. MAIN.busy_sleep)."""
        r = subprocess.run([find_program("varnishstat", "varnish"), "-n", self.workdir, "-1",
                            "-f", field], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, "varnishstat failed: %s" % r.stderr
        for line in r.stdout.splitlines():
            parts = line.split()
            if parts and parts[0] == field:
                return int(parts[1])
        raise AssertionError("varnishstat has no %s: %s" % (field, r.stdout))

    def backend_log(self, url):
        """What Varnish sent to and got from the origin for url: one dict
        per backend transaction {"headers": [(name, value)], "statuses":
        [int]} from varnishlog on this instance's shared memory log (a 304
        is logged as 304, then as the 200 Varnish merges it into)."""
        r = subprocess.run([find_program("varnishlog", "varnish"), "-n", self.workdir, "-d",
                            "-b", "-g", "vxid", "-i", "BereqURL,BereqHeader,BerespStatus"],
                           capture_output=True, text=True, errors="replace", timeout=30)
        assert r.returncode == 0, "varnishlog failed: %s" % r.stderr
        txs, cur = [], None
        for line in r.stdout.splitlines():
            if line.startswith("*"):
                cur = {"url": None, "headers": [], "statuses": []}
                txs.append(cur)
                continue
            m = re.match(r"^[-\s]+(\w+)\s+(.*)$", line)
            if not m or cur is None:
                continue
            tag, value = m.group(1), m.group(2)
            if tag == "BereqURL":
                cur["url"] = value.strip()
            elif tag == "BereqHeader":
                k, _, v = value.partition(":")
                cur["headers"].append((k.strip(), v.strip()))
            elif tag == "BerespStatus":
                cur["statuses"].append(int(value.strip()))
        return [t for t in txs if t["url"] == url]


class NginxEdge(Edge):
    kind = "nginx"


def _start_edge(make, base, ready_timeout):
    """Starts an edge on a free port, retrying when another test took the
    port in between. make(port, attempt) -> (argv, edge factory)."""
    last, status, argv = "", "", []
    for attempt in range(5):
        port = free_port()
        argv, build = make(port, attempt)
        log_path = os.path.join(base, "edge-%d.log" % attempt)
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=base, start_new_session=True)
        edge = build(proc, port, log_path)
        # HEAD /healthz through the edge until it answers (any HTTP status).
        status = wait_healthy(edge, ready_timeout, method="HEAD", any_status=True,
                              conn_timeout=2.0, interval=0.05)
        if status == "ok":
            return edge
        last = edge.log()
        edge.stop()
        low = last.lower()
        if "address already in use" in low or "could not get socket" in low:
            continue
        break
    pytest.fail("edge did not start (%s): %s\n%s" % (status, " ".join(argv), last[-3000:]))


def varnish_site_vcl(origin_port, purgers=LOOPBACK_PURGERS, backend_response=""):
    """cdn-config/varnish/site.vcl for a test: the origin on loopback, the
    purge ACL, and statements for sayin_site_backend_response."""
    with open(os.path.join(CDN_CONFIG, "varnish", "site.vcl")) as f:
        site = f.read()
    site, n = re.subn(r'\.port = "\d+";', '.port = "%d";' % origin_port, site, count=1)
    assert n == 1, "no .port line in cdn-config/varnish/site.vcl"
    acl = "acl purgers {\n%s}" % "".join('    "%s";\n' % a for a in purgers)
    site, n = re.subn(r"acl purgers \{[^}]*\}", lambda m: acl, site, count=1)
    assert n == 1, "no acl purgers in cdn-config/varnish/site.vcl"
    hook = "sub sayin_site_backend_response {\n    %s\n}" % backend_response
    site, n = re.subn(r"sub sayin_site_backend_response \{[^}]*\}", lambda m: hook, site,
                      count=1)
    assert n == 1, "no sub sayin_site_backend_response in cdn-config/varnish/site.vcl"
    return site


def start_varnish(base, origin_port, purgers=LOOPBACK_PURGERS, backend_response="",
                  ready_timeout=60.0, params=()):
    """varnishd with cdn-config/varnish/sayin.vcl (copied unchanged) and a
    test site.vcl, in the foreground (-F), its working directory (-n) under
    base, no management port (-T none), no privilege separation (-j none:
    as root the default jail would switch to the varnish user, who cannot
    enter pytest's 0700 tmp_path), and http_gzip_support off as sayin.vcl
    requires. Nothing in /etc or /var is used."""
    varnishd = find_program("varnishd", "varnish")
    os.makedirs(base, exist_ok=True)
    vcl_path = os.path.join(base, "sayin.vcl")
    shutil.copyfile(VARNISH_VCL, vcl_path)
    with open(os.path.join(base, "site.vcl"), "w") as f:
        f.write(varnish_site_vcl(origin_port, purgers, backend_response))

    def make(port, attempt):
        workdir = os.path.join(base, "vinst-%d" % attempt)
        argv = [varnishd, "-F", "-j", "none", "-n", workdir, "-a", "127.0.0.1:%d" % port,
                "-f", vcl_path, "-s", "malloc,64m", "-T", "none",
                "-p", "http_gzip_support=off"]
        for p in params:  # extra varnishd parameters, "name=value"
            argv += ["-p", p]
        return argv, lambda proc, p, log: VarnishEdge(proc, p, base, log, workdir, vcl_path)

    return _start_edge(make, base, ready_timeout)


def write_nginx_site(site_dir, origin_port, listen_port, purgers=LOOPBACK_PURGERS,
                     site_files=None):
    """The site/ files edge.conf includes; site_files {name: text} replace
    or add files (origin-tls.conf is the shipped one unless replaced)."""
    os.makedirs(site_dir, exist_ok=True)
    shutil.copyfile(NGINX_ORIGIN_TLS, os.path.join(site_dir, "origin-tls.conf"))
    with open(os.path.join(site_dir, "origin.conf"), "w") as f:
        f.write("server 127.0.0.1:%d max_fails=0;\n" % origin_port)
    with open(os.path.join(site_dir, "listen.conf"), "w") as f:
        f.write("listen 127.0.0.1:%d backlog=4096;\n" % listen_port)
    with open(os.path.join(site_dir, "purgers.conf"), "w") as f:
        f.write("".join("allow %s;\n" % a for a in purgers))
    for name, text in (site_files or {}).items():
        with open(os.path.join(site_dir, name), "w") as f:
            f.write(text)


def start_nginx(base, origin_port, purgers=LOOPBACK_PURGERS, ready_timeout=30.0,
                site_files=None):
    """nginx with cdn-config/nginx/edge.conf (copied unchanged) and a test
    site/ (site_files: see write_nginx_site), prefix (-p) base, in the
    foreground. As root, workers keep root (-g user root) so that they can
    write the cache under pytest's 0700 tmp_path."""
    nginx = find_program("nginx", "nginx-light")
    os.makedirs(os.path.join(base, "temp"), exist_ok=True)
    conf = os.path.join(base, "edge.conf")
    shutil.copyfile(NGINX_CONF, conf)
    directives = "daemon off;"
    if os.geteuid() == 0:
        directives += " user root;"

    def make(port, attempt):
        write_nginx_site(os.path.join(base, "site"), origin_port, port, purgers, site_files)
        argv = [nginx, "-p", base + "/", "-c", conf, "-e", "stderr", "-g", directives]
        return argv, lambda proc, p, log: NginxEdge(proc, p, base, log)

    return _start_edge(make, base, ready_timeout)

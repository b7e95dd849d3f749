"""scripts/prometheus/ (issue 15, item 5): the alert rules pass `promtool
check rules` and their unit tests (`promtool test rules`), every rule has a
firing and a non-firing case, and the tests notice a rule that loses its
`for:`, its traffic guard or its firing condition; the example scrape
config passes `promtool check config`; the Grafana dashboard is JSON whose
queries parse and name only metrics the programs export, so renaming a
metric in the code breaks this test."""

import json
import os
import re
import shutil
import subprocess

import pytest

from helpers.procs import free_port
from helpers import tlsca

try:
    import yaml
except ImportError:
    pytest.fail("python3-yaml is not installed (run scripts/bootstrap)", pytrace=False)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROM = os.path.join(REPO, "scripts", "prometheus")
RULES = os.path.join(PROM, "sayin.rules.yml")
RULE_TESTS = os.path.join(PROM, "sayin.rules.test.yml")
DASHBOARD = os.path.join(PROM, "grafana-dashboard.json")
README = os.path.join(PROM, "README.md")

# Named in issue 15 and made by its metrics work (process_*, the reader
# gauges, accept errors, the publish histogram, the cron textfiles): each
# must be in the code too (test_issue_15_metrics_are_in_the_code).
ISSUE_15 = {
    "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
    "process_max_fds", "process_start_time_seconds",
    "sayin_store_readers_used", "sayin_store_readers_max",
    "sayin_origin_accept_errors_total", "sayin_api_accept_errors_total",
    "sayin_api_publish_seconds",
    "sayin_cron_last_success_timestamp_seconds", "sayin_cron_last_run_timestamp_seconds",
    "sayin_cron_success", "sayin_cron_duration_seconds", "sayin_cron_jobs",
}
# Series Prometheus makes itself.
PROMETHEUS_OWN = {"up"}
STRING = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
NAME = re.compile(r"\b(?:sayin|process)_[a-z0-9_]*[a-z0-9]")


def promtool(*args, cwd=PROM):
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed: run scripts/bootstrap "
                    "(Debian's prometheus package provides it)")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def code_metric_names():
    """Metric names in the string literals of the programs' C sources."""
    names = set()
    for top in ("origin", "publisher"):
        for d, _, files in os.walk(os.path.join(REPO, top)):
            for f in files:
                if f.endswith((".c", ".h")):
                    with open(os.path.join(d, f), encoding="utf-8", errors="replace") as fh:
                        for s in STRING.findall(fh.read()):
                            names.update(NAME.findall(s))
    return names


def known_names():
    return code_metric_names() | ISSUE_15 | PROMETHEUS_OWN


def names_in(expr):
    """Metric names a PromQL expression selects: every sayin_/process_ name,
    and any other name written with a label selector."""
    found = set(NAME.findall(expr))
    found.update(n for n in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", expr)
                 if n not in ("by", "without", "on", "ignoring", "group_left", "group_right"))
    return found


def unknown(names, known):
    out = set()
    for n in names:
        base = re.sub(r"_(bucket|sum|count)$", "", n)
        if n not in known and base not in known:
            out.add(n)
    return out


def load(path):
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def alerts():
    return [r for g in load(RULES)["groups"] for r in g["rules"] if "alert" in r]


def dashboard_exprs():
    with open(DASHBOARD, encoding="utf-8") as fh:
        dash = json.load(fh)
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []))
            walk(p.get("panels", []))
    walk(dash["panels"])
    return exprs


def github_slugs(path):
    with open(path, encoding="utf-8") as fh:
        text = re.sub(r"^```.*?^```", "", fh.read(), flags=re.M | re.S)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-")
            for h in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M)}


def test_promtool_checks_the_rules():
    r = promtool("check", "rules", RULES)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in r.stdout


def test_promtool_unit_tests_pass():
    r = promtool("test", "rules", RULE_TESTS)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_checks_the_scrape_config():
    r = promtool("check", "config", os.path.join(PROM, "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_rule_is_complete():
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)), names
    slugs = github_slugs(README)
    for a in alerts():
        assert "for" in a, a["alert"]
        assert a.get("labels", {}).get("severity") in ("warning", "critical"), a["alert"]
        ann = a.get("annotations", {})
        assert ann.get("summary") and ann.get("description"), a["alert"]
        target, _, anchor = ann.get("runbook", "").partition("#")
        assert target == "scripts/prometheus/README.md", a["alert"]
        assert anchor in slugs, f"{a['alert']}: README.md has no section #{anchor}"


def test_every_rule_has_a_firing_and_a_quiet_case():
    firing, quiet = set(), set()
    for t in load(RULE_TESTS)["tests"]:
        for case in t.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    for a in alerts():
        assert a["alert"] in firing, f"{a['alert']}: no test where it fires"
        assert a["alert"] in quiet, f"{a['alert']}: no test where it does not fire"


def run_with_rules(tmp_path, groups, alert=None):
    """promtool test rules with these rules; with alert, only the tests that
    check that alert (a mutated rule shows there; the rest cost time)."""
    with open(tmp_path / "sayin.rules.yml", "w", encoding="utf-8") as fh:
        yaml.safe_dump({"groups": groups}, fh, sort_keys=False)
    tests = load(RULE_TESTS)
    if alert is not None:
        tests["tests"] = [t for t in tests["tests"]
                          if any(c["alertname"] == alert for c in t.get("alert_rule_test", []))]
        assert tests["tests"], f"no test checks {alert}"
    with open(tmp_path / "sayin.rules.test.yml", "w", encoding="utf-8") as fh:
        yaml.safe_dump(tests, fh, sort_keys=False)
    return promtool("test", "rules", "sayin.rules.test.yml", cwd=tmp_path)


def mutated(edit):
    groups = load(RULES)["groups"]
    for g in groups:
        for r in g["rules"]:
            edit(r)
    return groups


def test_the_unmutated_copy_passes(tmp_path):
    r = run_with_rules(tmp_path, mutated(lambda r: None))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("name", [a["alert"] for a in alerts()])
def test_the_tests_notice_a_rule_without_its_for(tmp_path, name):
    r = run_with_rules(tmp_path, mutated(lambda r: r.pop("for") if r.get("alert") == name else None),
                       name)
    assert r.returncode != 0 and name in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize("name", [a["alert"] for a in alerts()])
def test_the_tests_notice_a_rule_that_never_fires(tmp_path, name):
    def edit(r):
        if r.get("alert") == name:
            r["expr"] = f"({r['expr']}) < -1e300"
    r = run_with_rules(tmp_path, mutated(edit), name)
    assert r.returncode != 0 and name in r.stdout + r.stderr, r.stdout + r.stderr


def test_the_tests_notice_the_5xx_rule_without_its_traffic_guard(tmp_path):
    def edit(r):
        if r.get("alert") == "SayinOrigin5xxRatio":
            expr, guard = r["expr"].split("\nand\n")
            assert ">= 1" in guard
            r["expr"] = expr
    r = run_with_rules(tmp_path, mutated(edit), "SayinOrigin5xxRatio")
    assert r.returncode != 0, r.stdout + r.stderr
    assert "traffic guard - 50% 5xx at 0.2 requests/s does not fire" in r.stderr, r.stderr


def test_the_tests_notice_the_tls_rule_without_its_traffic_guard(tmp_path):
    def edit(r):
        if r.get("alert") == "SayinTlsHandshakeFailures":
            expr, guard = r["expr"].split("\nand\n")
            assert ">= 0.05" in guard
            r["expr"] = expr
    r = run_with_rules(tmp_path, mutated(edit), "SayinTlsHandshakeFailures")
    assert r.returncode != 0, r.stdout + r.stderr
    assert "the TLS traffic guard - 50% failed at 2 handshakes a minute does not fire" in r.stderr, \
        r.stderr


def test_the_rules_name_only_metrics_that_exist():
    bad = {a["alert"]: unknown(names_in(a["expr"]), known_names()) for a in alerts()}
    assert not any(bad.values()), bad


def test_the_dashboard_names_only_metrics_that_exist():
    exprs = dashboard_exprs()
    assert len(exprs) > 20
    known = known_names()
    for e in exprs:
        assert names_in(e), f"no metric in {e}"
        assert not unknown(names_in(e), known), f"{e}: {unknown(names_in(e), known)}"


def test_the_dashboard_covers_every_alerted_metric():
    used = set()
    for e in dashboard_exprs():
        used |= names_in(e)
    for a in alerts():
        for n in names_in(a["expr"]):
            assert n in used, f"{a['alert']} alerts on {n}, which no panel shows"


def test_the_dashboard_queries_parse(tmp_path):
    """Each query as a recording rule, so promtool parses it as Prometheus would
    (Grafana's $__rate_interval and $__range replaced by durations)."""
    rules = [{"record": f"dashboard:query_{i}",
              "expr": e.replace("$__rate_interval", "5m").replace("$__range", "1h")}
             for i, e in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard.rules.yml"
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, fh)
    r = promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_renamed_metric_is_noticed():
    assert "sayin_outbox_parked" in code_metric_names()
    assert unknown({"sayin_outbox_parked_jobs"}, known_names()) == {"sayin_outbox_parked_jobs"}
    assert unknown({"sayin_api_publish_seconds_bucket"}, known_names()) == set()


def test_issue_15_metrics_are_in_the_code():
    missing = ISSUE_15 - code_metric_names()
    assert not missing, f"named in issue 15 but in no C source yet: {sorted(missing)}"


EXPOSED = re.compile(r"^(?:# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) |([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ])", re.M)


def exposed(text):
    """The metric names (families and samples) of a Prometheus text exposition."""
    return {a or b for a, b in EXPOSED.findall(text)}


def test_the_running_programs_export_what_the_rules_and_dashboard_use(api_site, sayin, tmp_path):
    """End to end: the origin's and the API's /metrics (and a TLS origin's)
    and a push run's --metrics-textfile hold every metric a rule or a
    dashboard query names.
    The API has a CDN target (a Varnish edge nobody asks: no post, no job),
    as in production: sayin_outbox_jobs_total has series per target only."""
    edge = "http://127.0.0.1:%d" % free_port()
    site = api_site(args=["--varnish-edges", edge], authors=("alice",))
    r = site.origin.get("/metrics")
    assert r.status == 200, r
    names = exposed(r.body.decode())
    r = site.api.request("GET", "/metrics")
    assert r.status == 200, r
    names |= exposed(r.body.decode())
    prom = tmp_path / "sayin-push.prom"
    p = sayin.run(sayin.publisher, ["push", "--data", str(site.data), "--public-url",
                                    "https://cdn.test", "--metrics-textfile", str(prom)])
    assert p.returncode == 0, p.stderr
    names |= exposed(prom.read_text())
    # The sayin_tls_* metrics exist only with a certificate: an origin with
    # one, on the same store, scraped on its plain-HTTP admin listener.
    ca = tlsca.TestCA(tmp_path)
    cert, key = ca.server("origin")
    admin = free_port()
    tls_origin = sayin.start_origin(
        site.data, listen=False, port=admin,
        args=["--listen", "127.0.0.1:%d" % free_port(), "--tls-cert", cert, "--tls-key", key,
              "--admin-listen", "127.0.0.1:%d" % admin])
    r = tls_origin.get("/metrics")
    assert r.status == 200, r
    names |= exposed(r.body.decode())
    used = set()
    for e in [a["expr"] for a in alerts()] + dashboard_exprs():
        used |= names_in(e)
    missing = unknown(used - PROMETHEUS_OWN, names)
    assert not missing, f"used by the rules or the dashboard, exported by no program: {sorted(missing)}"

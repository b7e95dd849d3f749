"""SIGHUP on sayin-origin and on the ingest API (sayin-publisher serve):
the configuration is read again and what may change while running (cache
lifetimes, log level, access log) is applied without dropping a connection;
a bad file keeps the old settings; the access log file is reopened (for
logrotate); reloads and failures are counted in /metrics."""

import json
import re
import signal
import time

import pytest

from helpers.api import start_api
from helpers.http import url_path
from helpers.procs import wait_for

THREADS = "2"  # more than one event loop: each must take the new settings


def write_ini(path, max_age=60, shared=86400, access_log="off", level="info", api_log="off"):
    path.write_text(
        "[cache]\nname_max_age = %s\nname_shared_max_age = %s\n"
        "[origin]\naccess_log = %s\n"
        "[api]\naccess_log = %s\n"
        "[log]\nlevel = %s\n" % (max_age, shared, access_log, api_log, level))


def metric(text, name, labels):
    m = re.search(r"^%s\{%s\} (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    assert m, "no %s{%s} in:\n%s" % (name, labels, text)
    return float(m.group(1))


def reloads(origin):
    text = origin.get("/metrics").body.decode()
    return (metric(text, "sayin_config_reloads_total", 'result="ok"'),
            metric(text, "sayin_config_reloads_total", 'result="failed"'))


def get_on(conn, path):
    conn.request("GET", path)
    return conn.read_response()


@pytest.fixture
def feed(sayin, store, short_wav):
    return url_path(sayin.post(store, "alice", short_wav, text="first").json["feed_url"])


def test_origin_reload_applies_new_lifetimes_on_open_connections(sayin, store, feed, tmp_path):
    ini = tmp_path / "sayin.ini"
    access = tmp_path / "access.log"
    write_ini(ini)
    origin = sayin.start_origin(store, args=["--config", str(ini), "--threads", THREADS])
    # Connections opened before the reload, spread over the loops by the kernel.
    conns = [origin.conn() for _ in range(6)]
    for c in conns:
        r = get_on(c, feed)
        assert r.status == 200 and r.header("Cache-Control").startswith("public, max-age=60,")
    assert reloads(origin) == (0, 0)

    write_ini(ini, max_age=7, shared=1234, access_log=str(access))
    origin.proc.send_signal(signal.SIGHUP)
    for c in conns:  # still open, now answered with the new lifetimes
        got = {}

        def updated():
            got["r"] = get_on(c, feed)
            return got["r"].header("Cache-Control").startswith("public, max-age=7, s-maxage=1234,")
        wait_for(updated, timeout=5.0)
        assert updated(), got["r"].headers
        assert got["r"].header("CDN-Cache-Control").startswith("max-age=1234,"), got["r"].headers
    with origin.conn() as fresh:
        assert get_on(fresh, feed).header("Cache-Control").startswith("public, max-age=7,")
    for c in conns:
        c.close()
    assert origin.proc.poll() is None
    assert reloads(origin) == (1, 0)
    assert "SIGHUP: settings reloaded" in origin.log()
    # The access log was switched on by the reload.
    wait_for(lambda: access.exists() and feed in access.read_text())
    assert any(json.loads(l)["path"] == feed for l in access.read_text().splitlines())
    assert origin.stop() == 0


def test_origin_bad_config_on_reload_keeps_the_old_settings(sayin, store, feed, tmp_path):
    ini = tmp_path / "sayin.ini"
    write_ini(ini, max_age=30)
    origin = sayin.start_origin(store, args=["--config", str(ini), "--threads", THREADS])
    with origin.conn() as c:
        assert get_on(c, feed).header("Cache-Control").startswith("public, max-age=30,")
        write_ini(ini, max_age="two")
        origin.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP" in origin.log())
        assert re.search(r"error origin: SIGHUP: .*sayin\.ini:\d+: name_max_age: .*the settings in force stay",
                         origin.log()), origin.log()
        assert get_on(c, feed).header("Cache-Control").startswith("public, max-age=30,")
        assert reloads(origin) == (0, 1)
        # A bad access log path is refused the same way, and keeps the sink.
        write_ini(ini, max_age=5, access_log="/nonexistent-dir/a.log")
        origin.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: origin.log().count("the settings in force stay") >= 2)
        assert "cannot open /nonexistent-dir/a.log" in origin.log()
        assert get_on(c, feed).header("Cache-Control").startswith("public, max-age=30,")
        assert reloads(origin) == (0, 2)
        # Fixed, the next SIGHUP applies.
        write_ini(ini, max_age=5)
        origin.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: get_on(c, feed).header("Cache-Control").startswith(
            "public, max-age=5,"))
        assert reloads(origin) == (1, 2)
    assert origin.stop() == 0


def test_origin_reopens_the_access_log_for_logrotate(sayin, store, feed, tmp_path):
    access = tmp_path / "access.log"
    origin = sayin.start_origin(store, args=["--access-log", str(access)])
    origin.get(feed + "?before")
    wait_for(lambda: access.exists() and "before" in access.read_text())
    access.rename(tmp_path / "access.log.1")
    origin.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: access.exists())
    origin.get(feed + "?after")
    wait_for(lambda: "after" in access.read_text())
    assert "before" not in access.read_text()
    assert "after" not in (tmp_path / "access.log.1").read_text()


def test_origin_settings_that_need_a_restart_are_named(sayin, store, feed, tmp_path):
    ini = tmp_path / "sayin.ini"
    write_ini(ini)
    origin = sayin.start_origin(store, args=["--config", str(ini)])
    ini.write_text(ini.read_text() + "[origin]\nmax_headers = 10\n")
    origin.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "--max-headers changed" in origin.log())
    assert "takes effect on restart" in origin.log()
    assert origin.proc.poll() is None


def test_api_reload_applies_log_level_and_access_log(sayin, store, tmp_path):
    ini = tmp_path / "sayin.ini"
    access = tmp_path / "api-access.log"
    write_ini(ini)
    api = start_api(sayin, store, args=["--config", str(ini)])
    with api.conn() as c:  # one keep-alive connection across the reload
        c.request("GET", "/v1/posts?author=a")
        assert c.read_response().status == 401
        assert "api: GET /v1/posts -> 401" not in api.log()  # a debug line
        write_ini(ini, level="debug", api_log=str(access))
        api.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP" in api.log())
        c.request("GET", "/v1/posts?author=b")
        assert c.read_response().status == 401
        wait_for(lambda: "api: GET /v1/posts -> 401" in api.log())
        wait_for(lambda: access.exists() and "author=b" in access.read_text())
        line = json.loads(access.read_text().splitlines()[-1])
        assert (line["query"], line["status"]) == ("author=b", 401)
        # A bad file: old settings stay, the failure is counted.
        ini.write_text("[log]\nlevel = loud\n")
        api.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "the settings in force stay" in api.log())
        c.request("GET", "/metrics")
        text = c.read_response().body.decode()
    assert metric(text, "sayin_config_reloads_total", 'result="ok"') == 1
    assert metric(text, "sayin_config_reloads_total", 'result="failed"') == 1
    assert api.proc.poll() is None
    assert api.stop(signal.SIGTERM) == 0

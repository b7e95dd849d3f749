"""Settings: a flag beats the environment, which beats the INI file
(--config FILE or SAYIN_CONFIG), which beats the default. Unknown INI keys
are refused. --help everywhere."""

import os
import socket

import pytest

from helpers.audio import write_noise_wav
from helpers.procs import EXIT_STORE_FULL, EXIT_USAGE, free_port
from helpers.store import store_counts


def write_ini(path, sections):
    lines = []
    for section, values in sections.items():
        lines.append("[%s]" % section)
        lines += ["%s = %s" % kv for kv in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_public_url_flag_beats_env_beats_file(sayin, tmp_path, short_wav):
    ini = write_ini(tmp_path / "sayin.ini", {"publisher": {"public_url": "https://ini.example"}})
    cfg = ["--config", str(ini)]

    j = sayin.post(tmp_path / "s1", "alice", short_wav).json
    assert j["feed_url"] == "http://127.0.0.1:8080/u/alice/feed.json", "default"
    j = sayin.post(tmp_path / "s2", "alice", short_wav, args=cfg).json
    assert j["feed_url"] == "https://ini.example/u/alice/feed.json", "file"
    j = sayin.post(tmp_path / "s3", "alice", short_wav,
                   env={"SAYIN_CONFIG": str(ini)}).json
    assert j["feed_url"] == "https://ini.example/u/alice/feed.json", "SAYIN_CONFIG"
    env = {"SAYIN_PUBLIC_URL": "https://env.example"}
    j = sayin.post(tmp_path / "s4", "alice", short_wav, args=cfg, env=env).json
    assert j["feed_url"] == "https://env.example/u/alice/feed.json", "env beats file"
    j = sayin.post(tmp_path / "s5", "alice", short_wav, env=env,
                   args=cfg + ["--public-url", "https://flag.example"]).json
    assert j["feed_url"] == "https://flag.example/u/alice/feed.json", "flag beats env"
    assert j["audio_url"].startswith("https://flag.example/a/")
    # The stored feed agrees with what the command printed.
    origin = sayin.start_origin(tmp_path / "s5")
    assert origin.get("/u/alice/feed.json").json()["feed_url"] == j["feed_url"]


def test_listen_sets_the_default_public_url(sayin, tmp_path, short_wav):
    ini = write_ini(tmp_path / "sayin.ini", {"origin": {"listen": "127.0.0.1:7001"}})
    cfg = ["--config", str(ini)]
    assert sayin.post(tmp_path / "s", "a", short_wav, args=cfg).json["url"].startswith(
        "http://127.0.0.1:7001/p/")
    # Each on a store of its own: the first publish records the site's URL
    # in its store (test_site.py).
    env = {"SAYIN_LISTEN": "127.0.0.1:7002"}
    assert sayin.post(tmp_path / "s2", "a", short_wav, args=cfg, env=env).json["url"].startswith(
        "http://127.0.0.1:7002/p/")
    j = sayin.post(tmp_path / "s3", "a", short_wav, env=env,
                   args=cfg + ["--listen", "127.0.0.1:7003"]).json
    assert j["url"].startswith("http://127.0.0.1:7003/p/")


def test_data_dir_flag_beats_env_beats_file(sayin, tmp_path, short_wav, lmdb_tools):
    ini = write_ini(tmp_path / "sayin.ini", {"store": {"data": str(tmp_path / "ini-store")}})
    cfg = ["--config", str(ini)]
    env = {"SAYIN_DATA": str(tmp_path / "env-store")}

    sayin.post(None, "alice", short_wav, args=cfg)
    assert store_counts(tmp_path / "ini-store")["posts"] == 1
    sayin.post(None, "alice", short_wav, args=cfg, env=env)
    assert store_counts(tmp_path / "env-store")["posts"] == 1
    sayin.post(None, "alice", short_wav, env=env,
               args=cfg + ["--data", str(tmp_path / "flag-store")])
    assert store_counts(tmp_path / "flag-store")["posts"] == 1
    # Each post went to exactly one store.
    assert store_counts(tmp_path / "ini-store")["posts"] == 1
    assert store_counts(tmp_path / "env-store")["posts"] == 1


def test_feed_items_flag_beats_env_beats_file(sayin, store, tmp_path, wav_factory):
    # A store of its own per level: the first publish records the site's
    # feed-items in its store (test_site.py).
    ini = write_ini(tmp_path / "sayin.ini", {"feed": {"items": "1"}})
    cfg = ["--config", str(ini)]
    env = {"SAYIN_FEED_ITEMS": "2"}
    levels = [("file", {}, [], 1), ("env beats file", env, [], 2),
              ("flag beats env", env, ["--feed-items", "4"], 4)]
    for n, (level, level_env, flags, items) in enumerate(levels):
        data = tmp_path / ("store-%d" % n)
        for i in range(items + 1):
            sayin.post(data, "alice", wav_factory("%d-%d.wav" % (n, i), seconds=0.1, seed=i),
                       args=cfg + flags, env=level_env)
        origin = sayin.start_origin(data)
        assert len(origin.get("/u/alice/feed.json").json()["items"]) == items, level
        origin.stop()


def test_bitrate_flag_beats_env_beats_file(sayin, tmp_path):
    wav = tmp_path / "noise.wav"
    write_noise_wav(wav, 48000, 2)
    ini = write_ini(tmp_path / "sayin.ini", {"media": {"bitrate": "96000"}})
    cfg = ["--config", str(ini)]
    low_env = {"SAYIN_BITRATE": "8000"}
    file_size = sayin.post(tmp_path / "a", "a", wav, args=cfg).json["size_in_bytes"]
    env_size = sayin.post(tmp_path / "b", "a", wav, args=cfg, env=low_env).json["size_in_bytes"]
    flag_size = sayin.post(tmp_path / "c", "a", wav, env=low_env,
                           args=cfg + ["--bitrate", "96000"]).json["size_in_bytes"]
    assert file_size > 4 * env_size, (file_size, env_size)
    assert flag_size == file_size, (flag_size, file_size)


def test_map_size_from_file_and_env(sayin, tmp_path, big_noise_wav):
    ini = write_ini(tmp_path / "sayin.ini", {"store": {"map_size": "1M"},
                                             "media": {"bitrate": "510000"}})
    cfg = ["--config", str(ini)]
    r = sayin.post(tmp_path / "a", "a", big_noise_wav, args=cfg, check=False)
    assert r.returncode == EXIT_STORE_FULL, r.describe()
    r = sayin.post(tmp_path / "b", "a", big_noise_wav, args=cfg + ["--map-size", "1G"],
                   env={"SAYIN_MAP_SIZE": "1M"})
    assert r.json["size_in_bytes"] > 1 << 20


def test_origin_listen_flag_beats_env_beats_file(sayin, store, tmp_path, short_wav):
    sayin.post(store, "alice", short_wav)
    p_file, p_env, p_flag = free_port(), free_port(), free_port()
    ini = write_ini(tmp_path / "origin.ini", {"origin": {"listen": "127.0.0.1:%d" % p_file},
                                              "store": {"data": str(store)}})
    cfg = ["--config", str(ini)]

    o = sayin.start_origin(None, args=cfg, listen=False, port=p_file)
    assert o.get("/u/alice/feed.json").status == 200, "data and listen from the file"
    assert o.stop() == 0

    env = {"SAYIN_LISTEN": "127.0.0.1:%d" % p_env}
    o = sayin.start_origin(None, args=cfg, env=env, listen=False, port=p_env)
    assert not listening(p_file), "env must beat the file"
    assert o.stop() == 0

    o = sayin.start_origin(None, args=cfg + ["--listen", "127.0.0.1:%d" % p_flag], env=env,
                           listen=False, port=p_flag)
    assert not listening(p_env) and not listening(p_file), "the flag must beat env"
    assert o.get("/u/alice/feed.json").status == 200
    assert o.stop() == 0


def test_origin_data_from_env(sayin, store, tmp_path, short_wav):
    sayin.post(store, "alice", short_wav)
    o = sayin.start_origin(None, env={"SAYIN_DATA": str(store)})
    assert o.get("/u/alice/feed.json").status == 200


@pytest.mark.parametrize("program", ["publisher", "origin"])
@pytest.mark.parametrize("ini,named", [
    ({"store": {"data": "x", "colour": "blue"}}, "colour"),
    ({"nosuchsection": {"data": "x"}}, "nosuchsection"),
    ({"media": {"bitrat": "32000"}}, "bitrat"),
])
def test_unknown_ini_key_is_refused(sayin, tmp_path, short_wav, program, ini, named):
    path = write_ini(tmp_path / "bad.ini", ini)
    store = tmp_path / "store"
    if program == "publisher":
        r = sayin.run(sayin.publisher, ["post", "--config", str(path), "--data", str(store),
                                        "--author", "alice", "--create-author", str(short_wav)])
    else:
        r = sayin.run(sayin.origin_bin, ["--config", str(path), "--data", str(store),
                                         "--listen", "127.0.0.1:%d" % free_port()],
                      timeout=10)
    assert r.returncode == EXIT_USAGE, "exit %d: %s" % (r.returncode, r.stderr)
    assert named in r.stderr, "the message does not name %r: %r" % (named, r.stderr)
    assert not store.exists()


def test_unknown_ini_key_via_sayin_config(sayin, tmp_path, short_wav):
    path = write_ini(tmp_path / "bad.ini", {"log": {"lvl": "debug"}})
    r = sayin.run(sayin.publisher, ["post", "--data", str(tmp_path / "s"), "--author", "a",
                                    "--create-author", str(short_wav)], env={"SAYIN_CONFIG": str(path)})
    assert r.returncode == EXIT_USAGE and "lvl" in r.stderr, r


def test_missing_config_file_is_an_error(sayin, tmp_path, short_wav):
    missing = tmp_path / "nope.ini"
    r = sayin.run(sayin.publisher, ["post", "--config", str(missing), "--data",
                                    str(tmp_path / "s"), "--author", "a", "--create-author", str(short_wav)])
    assert r.returncode != 0 and str(missing) in r.stderr, r
    r = sayin.run(sayin.origin_bin, ["--config", str(missing)], timeout=10)
    assert r.returncode != 0 and str(missing) in r.stderr, r


def test_invalid_setting_values_exit_2(sayin, tmp_path, short_wav):
    for env in ({"SAYIN_BITRATE": "loud"}, {"SAYIN_LOG_LEVEL": "chatty"},
                {"SAYIN_MAP_SIZE": "huge"}, {"SAYIN_FEED_ITEMS": "-1"}):
        r = sayin.post(tmp_path / "s", "a", short_wav, env=env, check=False)
        assert r.returncode == EXIT_USAGE, "%s: %s" % (env, r.describe())
        assert r.stderr.strip()
    r = sayin.run(sayin.origin_bin, ["--data", str(tmp_path / "s")],
                  env={"SAYIN_LOG_LEVEL": "chatty"}, timeout=10)
    assert r.returncode == 2, r


def test_log_level_flag_beats_env(sayin, tmp_path, wav_factory):
    quiet = sayin.post(tmp_path / "s", "a", wav_factory("1.wav", seed=1),
                       env={"SAYIN_LOG_LEVEL": "error"})
    assert quiet.stderr == "", "log level error still logs: %r" % quiet.stderr
    chatty = sayin.post(tmp_path / "s", "a", wav_factory("2.wav", seed=2),
                        env={"SAYIN_LOG_LEVEL": "error"}, args=["--log-level", "debug"])
    assert chatty.stderr.strip(), "--log-level debug did not beat SAYIN_LOG_LEVEL=error"


@pytest.mark.parametrize("argv,must_mention", [
    (["publisher", "--help"], ["post"]),
    (["publisher", "help"], ["post"]),
    (["publisher", "post", "--help"], ["--author", "--text", "--data", "--public-url",
                                        "--bitrate", "--map-size", "--feed-items", "--config"]),
    (["origin", "--help"], ["--data", "--listen", "--config"]),
])
def test_help_exits_0_and_prints_usage(sayin, tmp_path, argv, must_mention):
    program = sayin.publisher if argv[0] == "publisher" else sayin.origin_bin
    store = tmp_path / "store"
    extra = ["--data", str(store)] if argv[-1] == "--help" else []
    r = sayin.run(program, argv[1:] + extra, timeout=10)
    assert r.returncode == 0, r
    assert "usage" in r.stdout.lower(), r.stdout
    for word in must_mention:
        assert word in r.stdout, "%s --help does not mention %s" % (" ".join(argv), word)
    assert not store.exists()


def test_the_settings_table_in_publisher_readme_is_what_the_program_prints(sayin):
    """Docs live beside the code and stay in step with it: the settings
    table in publisher/README.md is, line for line and in order, what
    `sayin-publisher settings` prints."""
    r = sayin.run(sayin.publisher, ["settings"], timeout=10)
    assert r.returncode == 0, r
    table = r.stdout.strip()
    assert table.count("\n") > 20, table
    readme = os.path.join(os.path.dirname(__file__), "..", "..", "publisher", "README.md")
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    assert table in text, "publisher/README.md's settings table differs from `settings`"


# ---------------------------------------------------------------- secrets


def _fastly_args_with_key_file(fake, key_file):
    from helpers.delivery import driver_args
    a = driver_args("fastly", fake)
    i = a.index("--fastly-api-key")
    return a[:i] + ["--fastly-api-key-file", str(key_file)] + a[i + 2:]


def test_a_secret_is_read_from_its_file(sayin, tmp_path, fakes, short_wav):
    """--fastly-api-key-file: the key in the file (0600, one trailing newline)
    is what push sends: the fake Fastly accepts it, a wrong key in the file
    is rejected by it, and a world-readable file is refused with exit 2.
    No warning is logged for the file form."""
    from helpers.delivery import push
    from helpers.fakes_cdn import BASE, FASTLY_KEY
    data = tmp_path / "store"
    fake = fakes("fastly")
    key = tmp_path / "fastly.key"
    key.write_text(FASTLY_KEY + "\n")
    key.chmod(0o600)
    args = _fastly_args_with_key_file(fake, key)
    sayin.post(data, "ann", short_wav, args=["--public-url", BASE] + args)
    r = push(sayin, data, args)
    assert "delivered 1, failed 0" in r.stdout, (r.stdout, r.stderr)
    assert fake.rejections() == [], fake.rejections()
    assert "command line" not in r.stderr, r.stderr
    # The file's content is what is sent: a wrong one is refused by the fake.
    key.write_text("wrong-key\n")
    sayin.post(data, "ann", short_wav, text="two", args=["--public-url", BASE] + args)
    r = push(sayin, data, args, expect=None)
    assert "delivered 0" in r.stdout, (r.stdout, r.stderr)
    assert fake.rejections(), "the wrong key from the file was accepted"
    key.chmod(0o644)
    r = push(sayin, data, args, expect=EXIT_USAGE)
    assert "--fastly-api-key-file" in r.stderr and "chmod 600" in r.stderr, r.stderr
    assert "wrong-key" not in r.stderr


def test_a_secret_flag_is_warned_about_and_hidden_from_cmdline(sayin, tmp_path):
    """`serve --fastly-api-key CANARY` logs a warning naming the setting and
    the safer ways, and the canary is gone from /proc/PID/cmdline."""
    from helpers.api import start_api
    from helpers.procs import wait_for
    canary = "canary-9f8e7d6c5b4a"
    api = start_api(sayin, tmp_path / "store", args=["--fastly-api-key", canary])
    cmdline = open("/proc/%d/cmdline" % api.proc.pid, "rb").read()
    assert canary.encode() not in cmdline, cmdline
    assert b"--fastly-api-key" in cmdline
    assert wait_for(lambda: "--fastly-api-key was given on the command line" in api.log())
    log = api.log()
    for safer in ("$SAYIN_FASTLY_API_KEY", "--fastly-api-key-file", "mode 600"):
        assert safer in log, log
    assert canary not in log
    # Through the environment: no warning.
    api2 = start_api(sayin, tmp_path / "store2", env={"SAYIN_FASTLY_API_KEY": canary})
    assert "command line" not in api2.log(), api2.log()

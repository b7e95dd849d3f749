"""`sayin-publisher config check` and `config show` (issue 14, item 3), and
the file and line in every configuration error of the programs."""

from helpers.procs import EXIT_OK, EXIT_USAGE

EXIT_ERRORS = 1


def write(path, text):
    path.write_text(text)
    path.chmod(0o600)
    return path


def check(sayin, *args, env=None):
    return sayin.run(sayin.publisher, ["config", "check"] + [str(a) for a in args], env=env)


def test_every_error_is_reported_with_its_file_and_line(sayin, tmp_path):
    ini = write(tmp_path / "sayin.ini",
                "[store\n"                           # 1: not closed
                "data = /tmp/nowhere\n"              # 2: under the broken header
                "[origin]\n"                         # 3
                "threads = two\n"                    # 4
                "bogus = 1\n"                        # 5
                "[publisher]\n"                      # 6
                "public_url = cdn.example.com\n"     # 7: no scheme
                "[cdn]\n"                            # 8
                "varnish_edges = http://e1:6081, ftp://e2\n"  # 9
                "this line is wrong\n")              # 10
    r = check(sayin, "--config", ini)
    assert r.returncode == EXIT_ERRORS, (r.returncode, r.stdout, r.stderr)
    err = r.stderr
    for expected in ("%s:1: section header '[store' is not closed" % ini,
                     "%s:4: threads: 'two' is not a number" % ini,
                     "%s:5: unknown setting [origin] bogus" % ini,
                     "%s:7: public_url: 'cdn.example.com' is not an http:// or https:// URL" % ini,
                     "%s:9: varnish_edges: 'ftp://e2' is not an http:// or https:// URL" % ini,
                     "%s:10: syntax error" % ini):
        assert expected in err, "missing %r in:\n%s" % (expected, err)
    assert "unknown setting []" not in err, err
    assert "data" not in err.replace("/tmp/nowhere", ""), "the broken section's key was reported"
    assert r.stdout.strip() != "ok"


def test_a_clean_configuration_is_ok(sayin, tmp_path):
    ini = write(tmp_path / "sayin.ini",
                "[store]\ndata = %s\n[publisher]\npublic_url = https://cdn.example.org\n"
                "[media]\nbitrate = 24000\n" % (tmp_path / "store"))
    r = check(sayin, "--config", ini)
    assert r.returncode == EXIT_OK, (r.stdout, r.stderr)
    assert r.stdout.strip() == "ok"
    assert not (tmp_path / "store").exists(), "config check created the store"
    assert check(sayin, env={"SAYIN_CONFIG": str(ini)}).returncode == EXIT_OK


def test_a_value_out_of_range_is_an_error_with_its_line(sayin, tmp_path):
    ini = write(tmp_path / "sayin.ini", "[media]\n\nbitrate = 5\n")
    r = check(sayin, "--config", ini)
    assert r.returncode == EXIT_ERRORS, (r.stdout, r.stderr)
    assert "%s:3: bitrate: 5 is outside" % ini in r.stderr, r.stderr


def test_flag_and_environment_errors_are_named_by_their_source(sayin, tmp_path):
    r = check(sayin, "--public-url", "ftp://x", env={"SAYIN_THREADS": "many"})
    assert r.returncode == EXIT_ERRORS
    assert "--public-url: 'ftp://x' is not an http:// or https:// URL" in r.stderr, r.stderr
    assert "$SAYIN_THREADS: 'many' is not a number" in r.stderr, r.stderr


def test_the_programs_errors_carry_file_and_line(sayin, tmp_path, short_wav):
    ini = write(tmp_path / "sayin.ini", "[origin]\nthreads = two\n")
    r = sayin.run(sayin.origin_bin, ["--config", str(ini), "--data", str(tmp_path / "s")])
    assert r.returncode == EXIT_USAGE
    assert "%s:2: threads: 'two' is not a number" % ini in r.stderr, r.stderr

    ini = write(tmp_path / "media.ini", "[media]\n; a comment\nloudness_target = loud\n")
    p = sayin.post(tmp_path / "s", "alice", short_wav, args=["--config", ini], check=False)
    assert p.returncode == EXIT_USAGE
    assert "%s:3: loudness_target: 'loud' is not a loudness" % ini in p.stderr, p.describe()

    ini = write(tmp_path / "broken.ini", "[store\ndata = x\n")
    p = sayin.post(tmp_path / "s", "alice", short_wav, args=["--config", ini], check=False)
    assert p.returncode == EXIT_USAGE
    assert "%s:1: section header '[store' is not closed" % ini in p.stderr, p.describe()
    assert "unknown setting" not in p.stderr


def test_config_show_prints_values_and_sources_with_secrets_masked(sayin, tmp_path):
    ini = write(tmp_path / "sayin.ini", "[media]\n\nbitrate = 24000\n")
    canary = "canary-secret-4711"
    r = sayin.run(sayin.publisher, ["config", "show", "--config", str(ini), "--feed-items", "7"],
                  env={"SAYIN_MAX_TEXT": "300", "SAYIN_FASTLY_API_KEY": canary})
    assert r.returncode == EXIT_OK, r.stderr
    rows = {}
    for line in r.stdout.splitlines():
        name, rest = line.split(None, 1)
        value, source = rest.rsplit("#", 1)
        rows[name] = (value.strip(), source.strip())
    assert rows["bitrate"] == ("24000", "%s:3" % ini)
    assert rows["feed-items"] == ("7", "flag --feed-items")
    assert rows["max-text"] == ("300", "environment $SAYIN_MAX_TEXT")
    assert rows["aac-bitrate"] == ("48000", "default")
    assert rows["fastly-api-key"][0] == "********"
    assert canary not in r.stdout + r.stderr


def test_a_long_list_continues_on_indented_lines_and_an_overlong_line_is_an_error(sayin,
                                                                                  tmp_path):
    """libinih reads 200 bytes of a line at most: a longer one is refused
    with its line (not read as two), and an indented line continues the
    value above it, so a long list (a CDN's address ranges) can be written
    across lines without losing any of it."""
    ranges = ["173.245.48.0/20", "103.21.244.0/22", "103.22.200.0/22", "103.31.4.0/22",
              "141.101.64.0/18", "108.162.192.0/18", "190.93.240.0/20", "188.114.96.0/20",
              "197.234.240.0/22", "198.41.128.0/17", "162.158.0.0/15", "104.16.0.0/13",
              "104.24.0.0/14", "172.64.0.0/13", "131.0.72.0/22"]
    long_line = write(tmp_path / "long.ini", "[log]\ntrusted_edges = %s\n[cdn]\n"
                      "varnish_edges = http://e1:6081\n" % ", ".join(ranges))
    r = check(sayin, "--config", long_line)
    assert r.returncode == EXIT_ERRORS, (r.stdout, r.stderr)
    assert "%s:2: line longer than" % long_line in r.stderr, r.stderr
    assert "syntax error" not in r.stderr, "the rest of the line was read as a line: " + r.stderr

    split = write(tmp_path / "split.ini",
                  "[log]\nclient_ip_header = CF-Connecting-IP\ntrusted_edges = %s,\n  %s,\n"
                  "  %s\n[cdn]\nvarnish_edges = http://e1:6081,\n  http://e2:6081\n"
                  % (", ".join(ranges[:5]), ", ".join(ranges[5:10]), ", ".join(ranges[10:])))
    r = check(sayin, "--config", split)
    assert r.returncode == EXIT_OK, (r.stdout, r.stderr)
    r = sayin.run(sayin.publisher, ["config", "show", "--config", str(split)])
    assert r.returncode == EXIT_OK, r.stderr
    shown = {l.split(None, 1)[0]: l for l in r.stdout.splitlines() if l.strip()}
    assert "http://e1:6081, http://e2:6081" in shown["varnish-edges"], shown["varnish-edges"]
    for cidr in ranges:
        assert cidr in shown["trusted-edges"], (cidr, shown["trusted-edges"])


def test_check_refuses_what_the_origin_and_the_api_would(sayin, tmp_path):
    """The ranges of the origin's limits and lifetimes and of serve's
    workers, the access-log targets and the trusted edges are checked as the
    programs read them: config check never says ok to a file sayin-origin
    or serve would refuse."""
    ini = write(tmp_path / "sayin.ini",
                "[origin]\n"
                "max_header_bytes = 10\n"                 # 2: below 256
                "access_log = of\n"                       # 3: a typo, not a path
                "[cache]\n"
                "name_max_age = 999999999999\n"           # 5: over ten years
                "[api]\n"
                "workers = 0\n"                           # 7: at least 1
                "access_log = %s/missing/api.log\n"       # 8: no such folder
                "[log]\n"
                "trusted_edges = 10.0.0.0/33\n"           # 10: not a CIDR
                % tmp_path)
    r = check(sayin, "--config", ini)
    assert r.returncode == EXIT_ERRORS, (r.stdout, r.stderr)
    for expected in ("%s:2: max_header_bytes: " % ini, "%s:3: access_log: 'of'" % ini,
                     "%s:5: name_max_age: " % ini, "%s:7: workers: " % ini,
                     "%s:8: access_log: cannot write in the folder" % ini, "10.0.0.0/33"):
        assert expected in r.stderr, "missing %r in:\n%s" % (expected, r.stderr)
    # And each is what the program itself refuses.
    origin = sayin.run(sayin.origin_bin, ["--config", str(write(tmp_path / "o.ini",
                                                             "[origin]\nmax_header_bytes = 10\n"))])
    assert origin.returncode != 0 and "max_header_bytes" in origin.stderr, origin.stderr

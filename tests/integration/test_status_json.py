"""`sayin-publisher status` for scripts and monitoring checks (issue 15,
item 6): --json prints the outbox, its jobs and the cross-posts done as one
object, and the exit code is 3 exactly when a job is parked (it needs
`retry`), 0 otherwise.

Run: SAYIN_BIN=$PWD/bin /usr/bin/python3 -m pytest -q -n 2 tests/integration/test_status_json.py
"""

import json

from helpers.delivery import BASE, driver_args, push

EXIT_NEEDS_ACTION = 3


def status(sayin, data, *args):
    return sayin.run(sayin.publisher, ["status", "--data", str(data)] + [str(a) for a in args])


def test_status_json_of_an_empty_outbox_exits_0(sayin, store, short_wav):
    sayin.post(store, "ann", short_wav)
    r = status(sayin, store, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc == {"outbox": {"depth": 0, "leased": 0, "parked": 0, "oldest_seconds": 0.0},
                   "jobs": [], "crossposts": [], "needs_action": False}, doc


def test_parked_job_exits_3_until_retried(sayin, tmp_path, fakes, short_wav):
    data = tmp_path / "store"
    fastly = fakes("fastly")
    args = driver_args("fastly", fastly) + ["--outbox-max-attempts", "1",
                                            "--outbox-backoff-ms", "20"]
    sayin.post(data, "ann", short_wav, args=["--public-url", BASE] + args)
    r = status(sayin, data, "--json", *args)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["outbox"]["depth"] == 1 and doc["outbox"]["parked"] == 0, doc
    job = doc["jobs"][0]
    assert job["target"] == "fastly" and job["state"] == "due" and job["event"] == "publish"
    assert job["attempts"] == 0 and job["last_error"] == "" and job["age_seconds"] >= 0, job
    assert doc["needs_action"] is False

    fastly.down(500, body=b'{"msg":"Internal Server Error"}')
    push(sayin, data, args, expect=1)
    r = status(sayin, data, "--json", *args)
    assert r.returncode == EXIT_NEEDS_ACTION, (r.returncode, r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["outbox"]["parked"] == 1 and doc["needs_action"] is True, doc
    job = doc["jobs"][0]
    assert job["state"] == "parked" and job["attempts"] == 1 and "500" in job["last_error"], job
    # The text form says so too, with the same exit code.
    r = status(sayin, data, *args)
    assert r.returncode == EXIT_NEEDS_ACTION and "needs action: 1 parked job" in r.stderr, r

    r = sayin.run(sayin.publisher, ["retry", "--all", "--data", str(data)] + args)
    assert r.returncode == 0, r.stderr
    r = status(sayin, data, "--json", *args)
    assert r.returncode == 0, (r.returncode, r.stdout)
    assert json.loads(r.stdout)["needs_action"] is False


def test_status_json_lists_the_crossposts_done(sayin, world):
    w = world(("ann",))
    p = w.post("ann", "to the networks")
    r = w.crosspost()
    assert r.returncode == 0, r.stdout + r.stderr
    r = w.run(["status", "--json", "--data", w.data])
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    done = {(c["post"], c["network"]): c for c in doc["crossposts"]}
    assert set(done) == {(p["id"], "x"), (p["id"], "facebook")}, doc
    assert all(c["url"].startswith("http") and c["found"] is False for c in done.values()), doc
    assert doc["jobs"] == [] and doc["needs_action"] is False


def test_status_usage_error_is_exit_2(sayin, store):
    r = status(sayin, store, "--jsn")
    assert r.returncode == 2 and "jsn" in r.stderr, r

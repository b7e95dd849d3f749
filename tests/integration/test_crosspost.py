"""Cross-posting to X and Facebook (issue 7), through the real binaries:
each network gets a post once, with the text fitted and the link; the API
shows the delivery; the crosspost field, accounts file and environment
choose the networks; rate limits, 500s and hangs back off; rejected
credentials park; X's duplicate content counts as posted.

The fake X and Facebook (helpers/fakes_social.py) check every request as
the real services do and inject faults on demand; the world of one test is
helpers/crossposting.py. Crashes and concurrency: test_crosspost_crash.py.

Run: SAYIN_BIN=$PWD/bin /usr/bin/python3 -m pytest -q -n 2 tests/integration/test_crosspost.py
"""

import secrets
import time

from helpers.api import author_add, start_api
from helpers.crossposting import (
    CJK_TEXT, LONG_TEXT, PUBLIC, awkward_secret, check_fitted, counts_of, one_fb_post, one_tweet)
from helpers.delivery import outbox
from helpers.procs import TIME_SCALE


def test_post_goes_to_each_network_once_with_fitted_text_and_link(sayin, world):
    w = world(("ann",))
    short = w.post("ann", "Short & sweet: 100% me + you = \u2764")
    long = w.post("ann", LONG_TEXT)
    cjk = w.post("ann", CJK_TEXT)
    st = w.status()
    assert {k for k in st.jobs} == {(p["id"], n) for p in (short, long, cjk)
                                    for n in ("x", "facebook")}, st.text
    assert all(j["state"] == "due" for j in st.jobs.values()), st.text

    r = w.crosspost()
    assert r.returncode == 0, r.stdout + r.stderr
    assert counts_of(r.stdout) == (6, 0, 0, 0), r.stdout
    assert w.x.auth_failures == [] and w.fb.auth_failures == []

    t = one_tweet(w, short["url"])
    assert t["raw"] == "Short & sweet: 100% me + you = \u2764 " + short["url"], t
    check_fitted(one_tweet(w, long["url"])["raw"], LONG_TEXT, long["url"])
    check_fitted(one_tweet(w, cjk["url"])["raw"], CJK_TEXT, cjk["url"])
    for p, text in ((short, "Short & sweet: 100% me + you = \u2764"), (long, LONG_TEXT),
                    (cjk, CJK_TEXT)):
        fbp = one_fb_post(w, p["url"])
        assert fbp["message"] == text and fbp["link"] == p["url"], fbp
    # The post is posted once per network, not once per lookup or retry.
    assert len(w.x.requests("create")) == 3 and len(w.fb.requests("create")) == 3

    st = w.status()
    assert st.waiting == 0 and st.parked == 0 and st.jobs == {}, st.text
    for p in (short, long, cjk):
        x_id = one_tweet(w, p["url"])["id"]
        fb_id = one_fb_post(w, p["url"])["id"]
        assert st.done[(p["id"], "x")] == {"url": "https://x.com/i/web/status/" + x_id,
                                           "found": False}, st.text
        assert st.done[(p["id"], "facebook")] == {"url": "https://www.facebook.com/" + fb_id,
                                                  "found": False}, st.text

    # Nothing is due: the next cron run sends nothing.
    before = len(w.x.log) + len(w.fb.log)
    r = w.crosspost()
    assert r.returncode == 0 and counts_of(r.stdout) == (0, 0, 0, 0), r.stdout + r.stderr
    assert len(w.x.log) + len(w.fb.log) == before
    w.assert_no_secret_anywhere()


def test_api_post_shows_crosspost_delivery(sayin, world):
    w = world(("ann",))
    # The site's settings serve is given, recorded by this first publish.
    token = author_add(sayin, w.data, "ann", args=("--public-url", PUBLIC,
                                                   "--aac-fallback", "off"))
    api = start_api(sayin, w.data, args=["--social-accounts", w.accounts_path,
                                           "--aac-fallback", "off"], base=PUBLIC)
    audio = w.wav.read_bytes()
    r = api.post_form(token, [("audio", audio, "v.wav", "audio/wav"),
                              ("text", "From the API", None, None),
                              ("crosspost", "x,facebook", None, None)])
    assert r.status == 201, r
    post = r.json()
    r = api.request("POST", "/v1/posts?crosspost=x", token,
                    [("Content-Type", "audio/wav"), ("Content-Length", str(len(audio)))], audio)
    assert r.status == 201, r
    only_x = r.json()
    r = api.request("POST", "/v1/posts?crosspost=", token,
                    [("Content-Type", "audio/wav"), ("Content-Length", str(len(audio)))], audio)
    assert r.status == 201, r
    none = r.json()

    view = api.get_post(token, post["id"]).json()["delivery"]["crosspost"]
    assert set(view) == {"x", "facebook"}, view
    assert view["x"]["state"] == "pending" and view["facebook"]["state"] == "pending", view
    assert set(api.get_post(token, only_x["id"]).json()["delivery"]["crosspost"]) == {"x"}
    assert api.get_post(token, none["id"]).json()["delivery"]["crosspost"] == {}

    r = w.crosspost()
    assert r.returncode == 0 and counts_of(r.stdout) == (3, 0, 0, 0), r.stdout + r.stderr
    view = api.get_post(token, post["id"]).json()["delivery"]["crosspost"]
    tweet, fbp = one_tweet(w, post["url"]), one_fb_post(w, post["url"])
    assert view["x"]["state"] == "done" and view["x"]["remote_id"] == tweet["id"], view
    assert view["x"]["remote_url"] == "https://x.com/i/web/status/" + tweet["id"], view
    assert view["facebook"]["state"] == "done" and view["facebook"]["remote_id"] == fbp["id"]
    assert tweet["raw"] == "From the API " + post["url"]
    assert fbp["message"] == "From the API"
    one_tweet(w, only_x["url"])
    assert w.fb.posts_for(only_x["url"]) == []
    assert w.x.posts_for(none["url"]) == [] and w.fb.posts_for(none["url"]) == []
    view = api.get_post(token, only_x["id"]).json()["delivery"]["crosspost"]
    assert list(view) == ["x"] and view["x"]["state"] == "done", view
    assert "Authorization" not in api.log()
    w.outputs.append(api.log())
    w.assert_no_secret_anywhere()


def test_crosspost_field_and_accounts_choose_the_networks(sayin, world):
    w = world(("ann", "bob", "cat"))
    w.enabled = {"ann": ("x", "facebook"), "bob": (), "cat": ("facebook",)}
    w.write_accounts()
    only_x = w.post("ann", "only to X", crosspost="x")
    only_fb = w.post("ann", "only to Facebook", crosspost="facebook")
    nowhere = w.post("ann", "not cross-posted", crosspost="")
    both = w.post("ann", "everywhere")
    disabled = w.post("bob", "bob has accounts, none enabled")
    no_account = w.post("dan", "dan has no account at all")
    cat_all = w.post("cat", "cat asks for both, has facebook", crosspost="x,facebook")

    st = w.status()
    assert set(st.jobs) == {(only_x["id"], "x"), (only_fb["id"], "facebook"),
                            (both["id"], "x"), (both["id"], "facebook"),
                            (cat_all["id"], "facebook")}, st.text
    r = w.crosspost()
    assert r.returncode == 0 and counts_of(r.stdout) == (5, 0, 0, 0), r.stdout + r.stderr
    one_tweet(w, only_x["url"])
    one_tweet(w, both["url"])
    one_fb_post(w, only_fb["url"])
    one_fb_post(w, both["url"])
    one_fb_post(w, cat_all["url"])
    assert len(w.x.tweets) == 2 and len(w.fb.posts) == 3
    for p in (nowhere, disabled, no_account):
        assert w.x.posts_for(p["url"]) == [] and w.fb.posts_for(p["url"]) == []

    # An unknown network is refused at publish time, naming it.
    r = w.sayin.post(w.data, "ann", w.wav, text="x", check=False,
                     args=["--social-accounts", w.accounts_path, "--crosspost", "myspace"])
    assert r.returncode != 0 and "myspace" in r.stderr, r.describe()


def test_environment_supplies_and_overrides_accounts(sayin, world):
    w = world(("ann", "bob"))
    good = w.accounts["ann"]["x"]["consumer_secret"]
    bob = w.accounts["bob"]["facebook"]
    del w.accounts["bob"]       # bob only in the environment
    w.enabled = {"ann": ("x",)}
    w.write_accounts(override={("ann", "x"): {"consumer_secret": "wrong-secret"}})
    w.accounts["bob"] = {"x": w.accounts["ann"]["x"], "facebook": bob}  # for the grep
    env = {"SAYIN_SOCIAL_ANN_X_CONSUMER_SECRET": good,
           "SAYIN_SOCIAL_BOB_FACEBOOK_ENABLED": "true",
           "SAYIN_SOCIAL_BOB_FACEBOOK_PAGE_ID": bob["page_id"],
           "SAYIN_SOCIAL_BOB_FACEBOOK_PAGE_ACCESS_TOKEN": bob["page_access_token"],
           "SAYIN_SOCIAL_BOB_FACEBOOK_APP_SECRET": bob["app_secret"]}
    a = w.post("ann", "signed with the secret from the environment")
    b = w.post("bob", "bob's page is configured by environment only", env=env)
    st = w.status()
    assert set(st.jobs) == {(a["id"], "x"), (b["id"], "facebook")}, st.text
    r = w.crosspost(env=env)
    assert r.returncode == 0 and counts_of(r.stdout) == (2, 0, 0, 0), r.stdout + r.stderr
    one_tweet(w, a["url"])
    one_fb_post(w, b["url"])
    assert w.x.auth_failures == []
    w.assert_no_secret_anywhere()


def test_x_429_waits_for_the_reset_time_and_facebook_4_backs_off(sayin, world):
    w = world(("ann",))
    p = w.post("ann", "rate limited at first")
    reset = int(time.time()) + 3
    w.x.inject("429", reset=reset)
    w.fb.inject("4")
    backoff = int(800 * TIME_SCALE)
    r = w.crosspost(backoff_ms=backoff)
    assert r.returncode == 1 and counts_of(r.stdout) == (0, 0, 2, 0), r.stdout + r.stderr
    fb_due = [j["next_ms"] for j in outbox(w.data) if j["target"] == "facebook"][0] / 1000
    first_429 = w.x.requests("create")[0]
    assert first_429["status"] == 429
    st = w.status()
    jx, jf = st.jobs[(p["id"], "x")], st.jobs[(p["id"], "facebook")]
    assert jx["state"] == "backoff" and "429" in jx["error"] and "rate limited" in jx["error"], \
        st.text
    assert "error 4" in jf["error"], st.text
    assert jf["state"] == "backoff" or time.time() >= fb_due, st.text

    st = w.until_done(deadline_s=12 * TIME_SCALE, interval=0.1, backoff_ms=backoff)
    x_after = [e for e in w.x.log if e["t"] > first_429["t"]]
    assert x_after, "X was never asked again"
    assert min(e["t"] for e in x_after) >= reset - 0.01, \
        "X asked again %.3f s before x-rate-limit-reset" % (reset - min(e["t"] for e in x_after))
    one_tweet(w, p["url"])
    one_fb_post(w, p["url"])
    assert [e["status"] for e in w.x.requests("create")] == [429, 201]
    assert [e["status"] for e in w.fb.requests("create")] == [403, 200]
    fb_creates = w.fb.requests("create")
    assert fb_creates[1]["t"] - fb_creates[0]["t"] >= backoff / 2000 - 0.01, \
        "no backoff after code 4"
    assert st.parked == 0 and len(st.done) == 2, st.text


def test_500_backs_off_then_posts_once(sayin, world):
    w = world(("ann",))
    p = w.post("ann", "server trouble")
    w.x.inject("500")
    w.fb.inject("500")
    # Jitter draws the delay from [backoff/2, backoff); scaled so that a
    # status and a run fit in it under the sanitizer too.
    backoff = int(1500 * TIME_SCALE)
    r = w.crosspost(backoff_ms=backoff)
    assert r.returncode == 1 and counts_of(r.stdout) == (0, 0, 2, 0), r.stdout + r.stderr
    first_due = min(j["next_ms"] for j in outbox(w.data)) / 1000
    st = w.status()
    for net, want in (("x", "X: HTTP 500"), ("facebook", "Facebook: HTTP 500")):
        j = st.jobs[(p["id"], net)]
        assert want in j["error"] and j["attempts"] == 1, st.text
        assert j["state"] == "backoff" or time.time() >= first_due, st.text
    # Not due yet: a run that ended before the first was due left them
    # alone (judged by the jobs' own next attempt, not a process's speed).
    n = len(w.x.log) + len(w.fb.log)
    r = w.crosspost(backoff_ms=backoff)
    if time.time() < first_due:
        assert r.returncode == 0 and counts_of(r.stdout) == (0, 0, 0, 0), r.stdout + r.stderr
        assert len(w.x.log) + len(w.fb.log) == n
    st = w.until_done(deadline_s=10 * TIME_SCALE, interval=0.1, backoff_ms=backoff)
    for fake in (w.x, w.fb):
        creates = fake.requests("create")
        assert [e["status"] for e in creates][-1] in (200, 201) and len(creates) == 2
        assert creates[1]["t"] - creates[0]["t"] >= backoff / 2000 - 0.01, \
            "retried before the backoff"
    one_tweet(w, p["url"])
    one_fb_post(w, p["url"])
    assert st.parked == 0 and len(st.done) == 2, st.text


def test_hang_past_the_timeout_backs_off_then_posts_once(sayin, world):
    w = world(("ann",))
    p = w.post("ann", "a slow network")
    w.x.inject("hang", seconds=3)
    w.fb.inject("hang", seconds=3)
    t0 = time.monotonic()
    r = w.crosspost(timeout_ms=500)
    took = time.monotonic() - t0
    assert r.returncode == 1 and counts_of(r.stdout) == (0, 0, 2, 0), r.stdout + r.stderr
    assert took < 2.5, "the run waited %.1f s for a 0.5 s timeout" % took
    st = w.status()
    assert "no answer" in st.jobs[(p["id"], "x")]["error"], st.text
    assert "no answer" in st.jobs[(p["id"], "facebook")]["error"], st.text
    w.x.release_all()
    w.fb.release_all()
    w.until_done(deadline_s=10, timeout_ms=500)
    one_tweet(w, p["url"])
    one_fb_post(w, p["url"])


def test_rejected_credentials_park_and_retry_after_fixing_the_file(sayin, world):
    w = world(("ann", "dan"))
    right = w.accounts["ann"]["x"]["consumer_secret"]
    wrong_x = awkward_secret("bad-")
    wrong_app = secrets.token_hex(16)
    w.write_accounts(override={("ann", "x"): {"consumer_secret": wrong_x},
                               ("dan", "facebook"): {"app_secret": wrong_app}})
    _, page = w.fb.page_by_handle("ann")
    page["expired"] = True
    a = w.post("ann", "parked until fixed")
    d = w.post("dan", "dan's proof is wrong", crosspost="facebook")
    r = w.crosspost()
    assert r.returncode == 1 and counts_of(r.stdout) == (0, 0, 3, 3), r.stdout + r.stderr
    assert w.x.auth_failures and "signature mismatch" in w.x.auth_failures[0]
    st = w.status()
    assert st.parked == 3 and st.waiting == 0, st.text
    jx = st.jobs[(a["id"], "x")]
    assert jx["state"] == "PARKED" and "credentials rejected" in jx["error"], st.text
    jf = st.jobs[(a["id"], "facebook")]
    assert jf["state"] == "PARKED" and "token expired, re-authorize" in jf["error"], st.text
    jd = st.jobs[(d["id"], "facebook")]
    assert jd["state"] == "PARKED" and "Invalid appsecret_proof" in jd["error"], st.text
    assert w.x.tweets == [] and w.fb.posts == []
    # Parked: cron runs leave them alone.
    n = len(w.x.log) + len(w.fb.log)
    r = w.crosspost()
    assert r.returncode == 0 and counts_of(r.stdout) == (0, 0, 0, 0)
    assert len(w.x.log) + len(w.fb.log) == n

    # Every secret, the wrong ones too, is absent from every output so far.
    w.accounts["wrong"] = {"x": {"access_token": wrong_x, "access_token_secret": wrong_x,
                                 "consumer_key": "", "consumer_secret": wrong_x},
                           "facebook": {"page_access_token": wrong_app, "page_id": "",
                                        "app_secret": wrong_app}}
    w.assert_no_secret_anywhere()
    del w.accounts["wrong"]

    # The operator re-authorizes: a new page token, the right secrets.
    new_token = "EAAB" + secrets.token_urlsafe(40)
    page["token"], page["expired"] = new_token, False
    w.accounts["ann"]["facebook"]["page_access_token"] = new_token
    assert w.accounts["ann"]["x"]["consumer_secret"] == right
    w.write_accounts()
    assert "3 jobs made due again" in w.retry_all()
    r = w.crosspost()
    assert r.returncode == 0 and counts_of(r.stdout) == (3, 0, 0, 0), r.stdout + r.stderr
    one_tweet(w, a["url"])
    one_fb_post(w, a["url"])
    one_fb_post(w, d["url"])
    st = w.status()
    assert st.waiting == 0 and st.parked == 0 and len(st.done) == 3, st.text
    w.assert_no_secret_anywhere()


def test_facebook_190_on_a_live_token_parks_with_reauthorize(sayin, world):
    w = world(("ann",))
    p = w.post("ann", "token revoked on Facebook's side", crosspost="facebook")
    w.fb.inject("190")
    r = w.crosspost()
    assert r.returncode == 1 and counts_of(r.stdout) == (0, 0, 1, 1), r.stdout + r.stderr
    st = w.status()
    j = st.jobs[(p["id"], "facebook")]
    assert j["state"] == "PARKED" and "token expired, re-authorize" in j["error"], st.text
    assert "error 190" in j["error"], st.text
    assert w.fb.posts == []


def test_x_duplicate_content_is_recorded_as_posted_not_retried(sayin, world):
    w = world(("ann",))
    w.x.dup_detect = True
    p1 = w.post("ann", "the same words twice", crosspost="x")
    # Already on X (posted by hand, or by a run whose record was lost).
    earlier = w.x.add_tweet(w.x.user_by_handle("ann"), "the same words twice " + p1["url"])
    r = w.crosspost()
    assert r.returncode == 0 and counts_of(r.stdout) == (0, 1, 0, 0), r.stdout + r.stderr
    assert [e["status"] for e in w.x.requests("create")] == [403]
    assert one_tweet(w, p1["url"]) is earlier
    st = w.status()
    assert st.done[(p1["id"], "x")] == {"url": "https://x.com/i/web/status/" + earlier["id"],
                                        "found": True}, st.text

    # A duplicate X reports but our link is not in the recent timeline:
    # still posted (X says so), recorded, never sent again.
    p2 = w.post("ann", "X says duplicate, timeline disagrees", crosspost="x")
    w.x.inject("dup403")
    r = w.crosspost()
    assert r.returncode == 0 and counts_of(r.stdout) == (0, 1, 0, 0), r.stdout + r.stderr
    st = w.status()
    assert (p2["id"], "x") in st.done and st.waiting == 0 and st.parked == 0, st.text
    n = len(w.x.log)
    for _ in range(2):
        r = w.crosspost()
        assert r.returncode == 0 and counts_of(r.stdout) == (0, 0, 0, 0)
    assert len(w.x.log) == n
    assert len(w.x.requests("create")) == 2


def test_accounts_file_readable_by_others_is_refused(sayin, world):
    w = world(("ann",))
    for mode in (0o644, 0o640, 0o604):
        w.write_accounts(mode=mode)
        r = w.sayin.post(w.data, "ann", w.wav, text="x", check=False,
                         args=["--social-accounts", w.accounts_path])
        w.outputs.append(r.stdout + r.stderr)
        assert r.returncode != 0, r.describe()
        assert "chmod 600" in r.stderr, r.stderr
        r = w.crosspost()
        assert r.returncode not in (0, 1) and "chmod 600" in r.stderr, r.stdout + r.stderr
    assert w.x.log == [] and w.fb.log == []
    w.assert_no_secret_anywhere()
    w.write_accounts(mode=0o600)
    p = w.post("ann", "now it is private")
    r = w.crosspost()
    assert r.returncode == 0, r.stdout + r.stderr
    one_tweet(w, p["url"])
    one_fb_post(w, p["url"])


def test_a_post_deleted_before_its_turn_is_not_crossposted(sayin, world):
    """A takedown (post delete) between publishing and the cron run: the
    link would point at a 404, so its queued cross-posts are dropped, not
    sent; the other post goes out as usual."""
    w = world(("ann",))
    gone = w.post("ann", "This one is taken down before cron runs.")
    kept = w.post("ann", "This one stays.")
    r = w.run(["post", "delete", gone["id"], "--data", w.data, "--public-url", PUBLIC,
               "--aac-fallback", "off", "--waveform-points", "10"])
    assert r.returncode == 0, r.stdout + r.stderr
    r = w.crosspost()
    assert r.returncode == 0, r.stdout + r.stderr
    assert counts_of(r.stdout) == (2, 0, 0, 0), r.stdout
    assert "post %s was deleted: not cross-posted" % gone["id"] in r.stderr, r.stderr
    assert w.x.posts_for(gone["url"]) == [] and w.fb.posts_for(gone["url"]) == []
    assert len(w.x.posts_for(kept["url"])) == 1 and len(w.fb.posts_for(kept["url"])) == 1
    assert [k for k in w.status().jobs if k[0] == gone["id"]] == [], w.status().text

"""The pages fans open, in a real browser: headless Chromium (Debian's
chromium) driven over the DevTools protocol (python3-websocket), against
pages and audio published by the real sayin-publisher and served by a real
sayin-origin on loopback.

Each test starts its own Chromium with its own profile directory and lets it
pick a free debugging port itself (--remote-debugging-port=0, read back from
DevToolsActivePort), so tests run in parallel; the browser is killed at
teardown. Every console error, uncaught exception and failed load is
collected and must be absent; every request must go to the origin.
"""

import array
import html.parser
import json
import math
import os
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

from helpers.audio import write_wav_module
from helpers.http import FEED_TYPE, OBJECT_CACHE, OPUS_TYPE, page_path
from helpers.procs import free_port
from helpers.store import sha256_hex

websocket = pytest.importorskip(
    "websocket", reason="python3-websocket is not installed (run scripts/bootstrap)")

PHONE = {"width": 375, "height": 740, "deviceScaleFactor": 2, "mobile": True}
TRICKY_TEXT = 'Hi <script>alert(1)</script> "quoted" & \'single\' caf\u00e9 \U0001F399\ufe0f'


class BrowserError(AssertionError):
    pass


class Chromium:
    """One headless Chromium with one page, driven over its DevTools socket."""

    def __init__(self, workdir):
        exe = shutil.which("chromium")
        if exe is None:
            pytest.fail("chromium is not installed (run scripts/bootstrap: Debian package chromium)")
        self.profile = os.path.join(workdir, "chromium-profile")
        os.makedirs(self.profile)
        self.log_path = os.path.join(workdir, "chromium.log")
        argv = [exe, "--headless=new", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                "--disable-background-networking", "--disable-component-update",
                "--disable-default-apps", "--disable-features=Translate,MediaRouter",
                "--mute-audio", "--autoplay-policy=no-user-gesture-required",
                "--user-data-dir=" + self.profile,
                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                "about:blank"]
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.ws = None
        self.next_id = 0
        self.errors = []     # console errors, exceptions, failed loads
        self.requests = []   # every URL the page asked for
        self.loaded = False
        try:
            self._connect()
        except BaseException:
            self.close()
            raise

    def _connect(self, timeout=20.0):
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        port = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrowserError("chromium exited %s:\n%s" % (self.proc.returncode, self.log()))
            try:
                with open(port_file) as f:
                    first = f.readline().strip()
                if first.isdigit():
                    port = int(first)
                    break
            except OSError:
                pass
            time.sleep(0.05)
        if port is None:
            raise BrowserError("chromium wrote no DevToolsActivePort:\n" + self.log())
        with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=5) as r:
            targets = json.load(r)
        pages = [t for t in targets if t.get("type") == "page"]
        assert pages, targets
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=10,
                                              suppress_origin=True)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(domain + ".enable")

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def close(self):
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the browser and its helpers
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    # ------------------------------------------------------------ protocol

    def _event(self, msg):
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console.%s: %s" % (p["type"], " ".join(
                str(a.get("value", a.get("description"))) for a in p.get("args", []))))
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.errors.append("exception: %s %s" % (
                d.get("text"), d.get("exception", {}).get("description", "")))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.errors.append("log (%s): %s %s" % (e.get("source"), e.get("text"),
                                                    e.get("url", "")))
        elif method == "Network.requestWillBeSent":
            self.requests.append(p["request"]["url"])
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            self.errors.append("load failed: %s %s" % (p.get("errorText"),
                                                       p.get("blockedReason", "")))
        elif method == "Page.loadEventFired":
            self.loaded = True

    def _pump(self, until_id=None, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("no answer from chromium in %.0f s" % timeout)
            self.ws.settimeout(left)
            msg = json.loads(self.ws.recv())
            if "id" in msg:
                if msg["id"] == until_id:
                    if "error" in msg:
                        raise BrowserError("DevTools error: %r" % msg["error"])
                    return msg.get("result", {})
            else:
                self._event(msg)

    def call(self, method, params=None, timeout=10.0):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method,
                                 "params": params or {}}))
        return self._pump(self.next_id, timeout)

    def js(self, expression, timeout=10.0):
        """Evaluates expression (promises awaited); returns its JSON value."""
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True, "userGesture": False},
                      timeout=timeout)
        if "exceptionDetails" in r:
            raise BrowserError("JavaScript failed: %s\n%s" % (
                r["exceptionDetails"].get("exception", {}).get("description"), expression))
        return r["result"].get("value")

    def wait(self, condition, timeout=10.0, what=None):
        """Polls the JavaScript condition until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(condition)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError("timed out after %.0f s waiting for %s" % (
                    timeout, what or condition))
            time.sleep(0.05)

    def open(self, url, metrics=PHONE, timeout=15.0):
        self.call("Emulation.setDeviceMetricsOverride", metrics)
        self.loaded = False
        r = self.call("Page.navigate", {"url": url})
        assert not r.get("errorText"), r
        deadline = time.monotonic() + timeout
        while not self.loaded:
            self.js("1")  # pumps events
            if time.monotonic() > deadline:
                raise BrowserError("%s did not finish loading" % url)
            time.sleep(0.02)

    def key(self, key, code, keycode, text=None):
        """Presses and releases one key in the focused element."""
        down = {"type": "keyDown", "key": key, "code": code,
                "windowsVirtualKeyCode": keycode, "nativeVirtualKeyCode": keycode}
        if text is not None:
            down["text"] = text
        self.call("Input.dispatchKeyEvent", down)
        self.call("Input.dispatchKeyEvent", {"type": "keyUp", "key": key, "code": code,
                                             "windowsVirtualKeyCode": keycode,
                                             "nativeVirtualKeyCode": keycode})

    def assert_clean(self, origin):
        self.js("1")  # collects events still in flight
        assert self.errors == [], "errors in the browser:\n" + "\n".join(self.errors)
        foreign = [u for u in self.requests
                   if not (u.startswith(origin.base + "/") or u.startswith("data:")
                           or u == "about:blank")]
        assert foreign == [], "requests outside the origin: %r" % foreign


@pytest.fixture
def browser(tmp_path):
    b = Chromium(str(tmp_path))
    yield b
    b.close()


# JavaScript: per canvas column, how many rows hold a drawn pixel.
COLUMN_HEIGHTS = """(function (c) {
  var w = c.width, h = c.height, d = c.getContext("2d").getImageData(0, 0, w, h).data, out = [];
  for (var x = 0; x < w; x++) {
    var n = 0;
    for (var y = 0; y < h; y++) if (d[(y * w + x) * 4 + 3] > 0) n++;
    out.push(n);
  }
  return out;
})(%s)"""


def speech_like_wav(path, seed, seconds=0.8, rate=16000):
    """A tone whose loudness rises and falls like syllables (a waveform with
    shape, unlike a steady tone); seed moves pitch and rhythm."""
    frames = int(rate * seconds)
    f0, beats = 180.0 + 40.0 * seed, 2.0 + seed % 3
    samples = array.array("d", (
        0.6 * abs(math.sin(math.pi * beats * n / rate)) * math.sin(2 * math.pi * f0 * n / rate)
        for n in range(frames)))
    write_wav_module(path, rate, 1, samples=samples)
    return path


def drawn_bars(browser, canvas_expr):
    """Heights of the drawn bars (columns with pixels) of a canvas."""
    cols = browser.js(COLUMN_HEIGHTS % canvas_expr)
    return [n for n in cols if n > 0]


def assert_waveform_drawn(browser, player_expr, what):
    browser.wait("%s.getAttribute('data-waveform-state') === 'drawn'" % player_expr, 10,
                 "the waveform of %s" % what)
    bars = drawn_bars(browser, player_expr + ".querySelector('canvas')")
    # A waveform, not a flat line: many bars, of many different heights.
    assert len(bars) > 100, "only %d drawn columns in %s" % (len(bars), what)
    assert len(set(bars)) >= 8 and max(bars) >= 4 * min(bars), \
        "%s is flat: heights %r" % (what, sorted(set(bars)))


class Site:
    """Posts published for one origin port, so that their absolute URLs (the
    public URL) name the origin the browser talks to."""

    def __init__(self, sayin, store, extra_args=()):
        self.sayin, self.store = sayin, store
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.args = ["--public-url", self.base] + list(extra_args)
        self.origin = None

    def post(self, author, wav, text):
        return self.sayin.post(self.store, author, wav, text=text, args=self.args).json

    def serve(self):
        self.origin = self.sayin.start_origin(self.store, port=self.port)
        return self.origin


class TagParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.meta = {}
        self.links = []
        self.sources = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "meta":
            key = a.get("property") or a.get("name")
            if key:
                self.meta.setdefault(key, []).append(a.get("content"))
        elif tag == "link":
            self.links.append(a)
        elif tag == "source":
            self.sources.append(a)


def test_post_page_social_tags_are_absolute(sayin, store, espeak_wav):
    site = Site(sayin, store)
    post = site.post("alice", espeak_wav, "tags")
    origin = site.serve()
    r = origin.get(page_path(post))
    assert r.status == 200
    p = TagParser()
    p.feed(r.body.decode("utf-8"))
    m = {k: v[0] for k, v in p.meta.items()}
    for key in ("og:title", "og:description", "og:url", "og:type", "og:audio", "og:audio:type",
                "twitter:card", "twitter:title", "twitter:player", "twitter:player:width",
                "twitter:player:height", "twitter:player:stream",
                "twitter:player:stream:content_type"):
        assert m.get(key), "%s missing: %r" % (key, p.meta)
    assert m["twitter:card"] == "player"
    assert m["og:url"] == post["url"]
    assert p.meta["og:audio"] == [post["audio_url"], post["fallback_url"]]
    assert p.meta["og:audio:type"][0] == OPUS_TYPE
    assert m["twitter:player"] == post["url"] + "/embed"
    assert m["twitter:player:stream"] == post["fallback_url"]
    assert int(m["twitter:player:width"]) > 0 and int(m["twitter:player:height"]) > 0
    for key in ("og:url", "og:audio", "twitter:player", "twitter:player:stream"):
        assert m[key].startswith(origin.base + "/"), (key, m[key])
    feeds = [l for l in p.links if l.get("rel") == "alternate"]
    assert [l.get("type") for l in feeds] == [FEED_TYPE]
    assert feeds[0]["href"] == post["feed_url"]
    assert [s["src"] for s in p.sources] == [post["audio_url"], post["fallback_url"]]


def test_post_page_plays_in_chromium(sayin, store, espeak_wav, browser):
    site = Site(sayin, store)
    post = site.post("alice", espeak_wav, TRICKY_TEXT)
    origin = site.serve()
    browser.open(post["url"])

    # The text arrives as text: no script of the post's runs, nothing is lost.
    assert browser.js("document.querySelector('.text').textContent") == TRICKY_TEXT
    assert browser.js("document.scripts.length") == 1
    assert TRICKY_TEXT.split(" ")[1] in browser.js("document.title")
    # A phone-sized screen: nothing wider than it.
    assert browser.js("document.documentElement.scrollWidth") <= PHONE["width"]

    # The browser reads the Opus source's metadata: its duration is the post's.
    duration = browser.wait(
        "(function (a) { return a.readyState >= 1 && a.duration; })"
        "(document.querySelector('audio'))", 10, "the audio's metadata")
    assert abs(duration - post["duration_in_seconds"]) <= 0.1, (duration, post)
    assert browser.js("document.querySelector('audio').currentSrc") == post["audio_url"]

    assert_waveform_drawn(browser, "document.querySelector('.player')", "the post's waveform")
    assert post["waveform_url"] in browser.requests

    # The keyboard: focus the labelled play button, Space plays.
    label = browser.js("document.querySelector('.play').getAttribute('aria-label')")
    assert label.startswith("Play"), label
    browser.js("document.querySelector('.play').focus()")
    assert browser.js("document.activeElement.className") == "play"
    browser.key(" ", "Space", 32, text=" ")
    browser.wait("!document.querySelector('audio').paused", 5, "playback to start")
    browser.wait("document.querySelector('audio').currentTime > 0.3", 5,
                 "currentTime to advance")
    label = browser.js("document.querySelector('.play').getAttribute('aria-label')")
    assert label.startswith("Pause"), label
    browser.key(" ", "Space", 32, text=" ")
    browser.wait("document.querySelector('audio').paused", 5, "Space to pause")

    # The waveform is a slider: Home, arrows and End seek, aria-valuenow follows.
    seek = "document.querySelector('[role=slider]')"
    assert browser.js(seek + ".getAttribute('aria-label')").startswith("Seek")
    browser.js(seek + ".focus()")
    browser.key("Home", "Home", 36)
    assert browser.js("document.querySelector('audio').currentTime") == 0
    browser.key("ArrowRight", "ArrowRight", 39)
    t = browser.js("document.querySelector('audio').currentTime")
    assert 0 < t < duration, t
    assert abs(float(browser.js(seek + ".getAttribute('aria-valuenow')")) - t) < 0.06
    browser.key("End", "End", 35)
    browser.wait("Math.abs(document.querySelector('audio').currentTime - %r) < 0.05" % duration,
                 5, "End to seek to the end")
    valuemax = float(browser.js(seek + ".getAttribute('aria-valuemax')"))
    assert abs(valuemax - post["duration_in_seconds"]) <= 0.05, valuemax

    browser.assert_clean(origin)


# JavaScript: a detached <audio> for one URL alone (no <source> to fall back
# from), every media event it fires logged with its time, in window.__m4a.
M4A_PLAYER = """(function (url) {
  var a = new Audio(), log = [], updates = [];
  window.__m4a = {audio: a, log: log, updates: updates};
  ["loadstart", "loadedmetadata", "loadeddata", "canplay", "canplaythrough", "seeking",
   "seeked", "play", "playing", "pause", "waiting", "stalled", "ended", "error",
   "emptied", "abort"].forEach(function (type) {
    a.addEventListener(type, function () {
      log.push({type: type, currentTime: a.currentTime, readyState: a.readyState});
    });
  });
  a.addEventListener("timeupdate", function () { updates.push(a.currentTime); });
  a.muted = true;
  a.preload = "auto";
  a.src = url;
  a.load();
  return true;
})(%s)"""

# JavaScript: the state of that <audio>, for assertions and failure messages.
M4A_STATE = """(function (m) {
  var a = m.audio, ranges = function (r) {
    var out = [];
    for (var i = 0; i < r.length; i++) out.push([r.start(i), r.end(i)]);
    return out;
  };
  return {readyState: a.readyState, networkState: a.networkState, duration: a.duration,
          currentTime: a.currentTime, paused: a.paused, ended: a.ended, seeking: a.seeking,
          playbackRate: a.playbackRate, currentSrc: a.currentSrc,
          error: a.error && {code: a.error.code, message: a.error.message},
          buffered: ranges(a.buffered), seekable: ranges(a.seekable), played: ranges(a.played),
          events: m.log.map(function (e) { return e.type + "@" + e.currentTime.toFixed(3); }),
          updates: m.updates.length};
})(window.__m4a)"""

MEDIA_ERRORS = {1: "MEDIA_ERR_ABORTED", 2: "MEDIA_ERR_NETWORK", 3: "MEDIA_ERR_DECODE",
                4: "MEDIA_ERR_SRC_NOT_SUPPORTED"}


def m4a_state(browser):
    return browser.js(M4A_STATE)


def m4a_report(browser, state=None):
    """What went wrong, for a failure message: the element's state (error
    code named), the browser's collected errors and Chromium's own log."""
    try:
        state = state or m4a_state(browser)
    except BrowserError as e:
        state = {"unreadable": str(e)}
    err = state.get("error")
    if err:
        err = "%s (%s) %r" % (err["code"], MEDIA_ERRORS.get(err["code"], "?"), err["message"])
    log = "\n".join(l for l in browser.log().splitlines() if "dbus" not in l)  # no D-Bus here
    return ("element error: %s\nstate: %s\nbrowser errors: %s\nchromium log tail:\n%s" % (
        err, json.dumps(state, sort_keys=True), browser.errors or "none",
        log[-1500:] or "(nothing but D-Bus noise)"))


def m4a_wait(browser, condition, timeout, what):
    """Polls condition (JavaScript over `a`, the element) until truthy; fails
    at once, with the full report, if the element reports an error."""
    expr = "(function (a) { return a.error ? {error: a.error.code} : {ok: !!(%s)}; })" \
           "(window.__m4a.audio)" % condition
    deadline = time.monotonic() + timeout
    while True:
        r = browser.js(expr)
        if "error" in r:
            pytest.fail("the M4A fallback failed while waiting for %s\n%s" % (
                what, m4a_report(browser)))
        if r["ok"]:
            return m4a_state(browser)
        if time.monotonic() > deadline:
            pytest.fail("timed out after %.0f s waiting for %s of the M4A fallback\n%s" % (
                timeout, what, m4a_report(browser)))
        time.sleep(0.05)


def test_m4a_fallback_plays_in_chromium(sayin, store, espeak_wav, browser):
    """The AAC-LC-in-M4A rendition, for browsers without Opus: the post
    page's <audio> lists it second, so Chromium never picks it there. Here
    Chromium gets it alone, on the post page's origin: it loads whole, its
    duration is the post's, it seeks, and it plays to the end."""
    site = Site(sayin, store)
    post = site.post("alice", espeak_wav, "the fallback")
    origin = site.serve()
    url, want = post["fallback_url"], post["duration_in_seconds"]
    assert url.startswith(origin.base + "/a/") and url.endswith(".m4a"), url
    r = origin.get_url(url)
    assert r.status == 200 and r.header("content-type") == "audio/mp4", (r.status, r.headers)

    browser.open(post["url"])
    # The page's own player must not join in: it holds the Opus source.
    browser.js("document.querySelector('audio').pause()")
    can = browser.js("new Audio().canPlayType('audio/mp4; codecs=\"mp4a.40.2\"')")
    assert can in ("maybe", "probably"), \
        "this Chromium cannot play AAC-LC in MP4 (canPlayType %r)" % can
    browser.js(M4A_PLAYER % json.dumps(url))

    # It loads: all of it, without error, and it is the M4A that loaded.
    state = m4a_wait(browser, "a.readyState >= 4", 10, "HAVE_ENOUGH_DATA")
    assert state["error"] is None, m4a_report(browser, state)
    assert state["currentSrc"] == url, m4a_report(browser, state)
    duration = state["duration"]
    assert isinstance(duration, (int, float)) and math.isfinite(duration), \
        m4a_report(browser, state)
    assert abs(duration - want) <= 0.05, \
        "the M4A lasts %.4f s in Chromium, the post %.4f s\n%s" % (
            duration, want, m4a_report(browser, state))
    assert url in browser.requests, browser.requests
    # Seekable throughout (the origin answers ranges), else seeks snap to 0.
    assert state["seekable"] and state["seekable"][0][0] <= 0.05 \
        and abs(state["seekable"][-1][1] - duration) <= 0.1, \
        "the M4A is not seekable throughout\n" + m4a_report(browser, state)

    # It seeks, before it has played at all: to the middle, paused there.
    middle = duration / 2
    browser.js("window.__m4a.audio.currentTime = %r" % middle)
    state = m4a_wait(browser, "!a.seeking && window.__m4a.log.some("
                     "function (e) { return e.type === 'seeked'; })", 10, "'seeked'")
    assert abs(state["currentTime"] - middle) <= 0.05 and state["paused"], \
        m4a_report(browser, state)

    # It plays on from the middle to the end (four times as fast).
    played = browser.js("(function (a) { a.playbackRate = 4; return a.play().then("
                        "function () { return 'playing'; }, function (e) { return String(e); });"
                        " })(window.__m4a.audio)")
    assert played == "playing", "play() was refused: %s\n%s" % (played, m4a_report(browser))
    state = m4a_wait(browser, "a.ended", 10, "'ended' after the seek")
    assert "ended@" in " ".join(state["events"]), m4a_report(browser, state)
    assert abs(state["currentTime"] - duration) <= 0.1, m4a_report(browser, state)
    # It played from the middle (not restarted at 0) through to the end.
    assert state["played"] and abs(state["played"][0][0] - middle) <= 0.1 \
        and abs(state["played"][-1][1] - duration) <= 0.1, m4a_report(browser, state)
    assert state["updates"] >= 2, m4a_report(browser, state)

    # And from the start, all of it, to the end again.
    browser.js("window.__m4a.log.length = 0; window.__m4a.updates.length = 0;"
               " window.__m4a.audio.currentTime = 0")
    m4a_wait(browser, "!a.seeking && window.__m4a.log.some("
             "function (e) { return e.type === 'seeked'; })", 10, "'seeked' to the start")
    played = browser.js("window.__m4a.audio.play().then(function () { return 'playing'; },"
                        " function (e) { return String(e); })")
    assert played == "playing", "play() was refused: %s\n%s" % (played, m4a_report(browser))
    state = m4a_wait(browser, "a.ended", 10, "'ended' from the start")
    assert state["error"] is None, m4a_report(browser, state)
    assert abs(state["currentTime"] - duration) <= 0.1, m4a_report(browser, state)
    assert abs(state["duration"] - duration) <= 0.001, m4a_report(browser, state)
    assert state["played"] and state["played"][0][0] <= 0.05 \
        and abs(state["played"][-1][1] - duration) <= 0.1, m4a_report(browser, state)
    assert state["updates"] >= 2, m4a_report(browser, state)

    browser.assert_clean(origin)


def test_share_card_is_served(sayin, store, espeak_wav):
    site = Site(sayin, store)
    post = site.post("alice", espeak_wav, "a card")
    origin = site.serve()
    p = TagParser()
    p.feed(origin.get(page_path(post)).body.decode("utf-8"))
    image = p.meta.get("og:image")
    assert image and p.meta.get("twitter:image") == image, p.meta
    assert image[0].startswith(origin.base + "/a/") and image[0].endswith(".png"), image
    r = origin.get_url(image[0])
    assert r.status == 200, (image, r.status)
    assert r.header("content-type") == "image/png"
    assert r.header("cache-control") == OBJECT_CACHE
    png = r.body
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (1200, 630)
    assert image[0].rsplit("/", 1)[1] == sha256_hex(png) + ".png"


def test_embed_page_plays_and_may_be_framed(sayin, store, espeak_wav, browser):
    site = Site(sayin, store)
    post = site.post("alice", espeak_wav, "in a frame")
    origin = site.serve()
    embed = post["url"] + "/embed"
    # The networks may frame it: no X-Frame-Options, and a CSP naming them.
    r = origin.get_url(embed)
    assert r.status == 200 and r.header("content-type").startswith("text/html")
    assert r.header("x-frame-options") is None, r.headers
    csp = " ".join(r.header_all("content-security-policy"))
    assert "frame-ancestors" in csp, r.headers
    for network in ("https://twitter.com", "https://x.com"):
        assert network in csp.split("frame-ancestors", 1)[1].split(";")[0], csp
    browser.open(embed, metrics={"width": 480, "height": 200, "deviceScaleFactor": 1,
                                 "mobile": False})
    assert browser.js("document.documentElement.scrollWidth") <= 480
    assert browser.js("document.documentElement.scrollHeight") <= 200
    duration = browser.wait(
        "(function (a) { return a.readyState >= 1 && a.duration; })"
        "(document.querySelector('audio'))", 10, "the audio's metadata")
    assert abs(duration - post["duration_in_seconds"]) <= 0.1
    assert_waveform_drawn(browser, "document.querySelector('.player')", "the embed's waveform")
    browser.js("document.querySelector('.play').focus()")
    browser.key(" ", "Space", 32, text=" ")
    browser.wait("document.querySelector('audio').currentTime > 0.3", 5, "playback")
    browser.assert_clean(origin)


def test_author_page_newest_first_and_loads_older(sayin, store, tmp_path, browser):
    site = Site(sayin, store, ["--feed-items", "2", "--feed-page-items", "2"])
    posts = [site.post("alice", speech_like_wav(tmp_path / ("p%d.wav" % i), i),
                       "post number %d" % i) for i in range(5)]
    origin = site.serve()
    author_url = post_author_url(posts[0])
    r = origin.get_url(author_url)
    assert r.status == 200, (author_url, r.status)
    newest_first = [p["id"] for p in reversed(posts)]

    browser.open(author_url)
    ids = "Array.from(document.querySelectorAll('article.post')).map(function (a) {" \
          " return a.id.slice(5); })"
    shown = browser.js(ids)
    assert shown == newest_first[:len(shown)] and 1 <= len(shown) < len(posts), shown
    assert browser.js("document.querySelector('article.post .text').textContent") == \
        "post number 4"
    assert_waveform_drawn(browser, "document.querySelector('.player')", "the newest waveform")

    # "Load older posts" by keyboard until every post is there, newest first.
    button = "document.getElementById('older')"
    for _ in range(len(posts)):
        if browser.js(button + ".hidden"):
            break
        before = len(browser.js(ids))
        browser.js(button + ".focus()")
        assert browser.js("document.activeElement.id") == "older"
        browser.key("Enter", "Enter", 13, text="\r")
        browser.wait("(%s).length > %d || %s.hidden" % (ids, before, button), 10,
                     "older posts to be appended")
        browser.wait("!%s.hasAttribute('aria-disabled')" % button, 10, "the load to finish")
    assert browser.js(ids) == newest_first
    assert browser.js(button + ".hidden")

    # An appended post has a working player of its own.
    last = "document.querySelectorAll('.player')[%d]" % (len(posts) - 1)
    assert_waveform_drawn(browser, last, "the oldest post's waveform")
    browser.js(last + ".querySelector('.play').focus()")
    browser.key(" ", "Space", 32, text=" ")
    browser.wait(last + ".querySelector('audio').currentTime > 0.2", 5, "the oldest post to play")
    browser.assert_clean(origin)


def post_author_url(post):
    """The author page's URL: the feed URL's directory."""
    return post["feed_url"].rsplit("/", 1)[0] + "/"

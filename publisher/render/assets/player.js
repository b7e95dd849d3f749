(function () {
"use strict";
var players = [];
function fmt(t) {
  if (!isFinite(t) || t < 0) t = 0;
  t = Math.floor(t);
  var s = t % 60;
  return Math.floor(t / 60) + ":" + (s < 10 ? "0" : "") + s;
}
function httpUrl(u) {
  if (typeof u !== "string" || !u) return null;
  try {
    var url = new URL(u, location.href);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch (e) { return null; }
}
function peaksOf(doc) {
  if (!doc || !Array.isArray(doc.data)) return null;
  var ch = doc.channels > 1 ? doc.channels : 1, scale = doc.bits === 16 ? 32768 : 128;
  var n = Math.floor(doc.data.length / (2 * ch)), out = new Float32Array(2 * n), top = 0, i;
  if (!n) return null;
  for (i = 0; i < n; i++) {
    var lo = (+doc.data[2 * ch * i] || 0) / scale, hi = (+doc.data[2 * ch * i + 1] || 0) / scale;
    out[2 * i] = lo; out[2 * i + 1] = hi;
    top = Math.max(top, -lo, hi);
  }
  if (top > 0) for (i = 0; i < out.length; i++) out[i] /= top;
  return out;
}
function Player(box) {
  var self = this, audio = box.querySelector("audio");
  var name = audio.getAttribute("aria-label") || "Voice post";
  var bar = document.createElement("div"), play = document.createElement("button");
  var seek = document.createElement("div"), canvas = document.createElement("canvas");
  var time = document.createElement("span");
  this.box = box; this.audio = audio; this.name = name; this.peaks = null;
  this.play = play; this.seek = seek; this.canvas = canvas; this.time = time;
  this.raf = 0; this.dragging = false;
  bar.className = "bar";
  play.type = "button"; play.className = "play";
  seek.className = "seek"; seek.tabIndex = 0;
  seek.setAttribute("role", "slider");
  seek.setAttribute("aria-label", "Seek: " + name);
  seek.setAttribute("aria-valuemin", "0");
  canvas.setAttribute("aria-hidden", "true");
  time.className = "time"; time.setAttribute("aria-hidden", "true");
  seek.appendChild(canvas);
  bar.appendChild(play); bar.appendChild(seek); bar.appendChild(time);
  box.appendChild(bar);
  audio.controls = false;
  play.addEventListener("click", function () { self.toggle(); });
  seek.addEventListener("keydown", function (e) { self.key(e); });
  seek.addEventListener("pointerdown", function (e) {
    if (e.button !== 0) return;
    seek.focus();
    seek.setPointerCapture(e.pointerId);
    self.dragging = true; self.pointer(e); e.preventDefault();
  });
  seek.addEventListener("pointermove", function (e) { if (self.dragging) self.pointer(e); });
  seek.addEventListener("pointerup", function () { self.dragging = false; });
  seek.addEventListener("pointercancel", function () { self.dragging = false; });
  ["play", "pause", "ended", "timeupdate", "durationchange", "loadedmetadata", "seeked"].forEach(function (ev) {
    audio.addEventListener(ev, function () { self.update(); });
  });
  if (window.ResizeObserver) new ResizeObserver(function () { self.draw(); }).observe(seek);
  else window.addEventListener("resize", function () { self.draw(); });
  this.update();
  var url = httpUrl(box.getAttribute("data-waveform"));
  if (!url) { box.setAttribute("data-waveform-state", "none"); return; }
  fetch(url).then(function (r) {
    if (!r.ok) throw new Error("HTTP " + r.status);
    return r.json();
  }).then(function (doc) {
    self.peaks = peaksOf(doc);
    self.draw();
    box.setAttribute("data-waveform-state", self.peaks ? "drawn" : "empty");
  }).catch(function () { box.setAttribute("data-waveform-state", "failed"); });
}
Player.prototype.duration = function () {
  var d = parseFloat(this.box.getAttribute("data-duration"));
  if (isFinite(d) && d > 0) return d;
  d = this.audio.duration;
  return isFinite(d) && d > 0 ? d : 0;
};
Player.prototype.toggle = function () {
  var self = this, a = this.audio;
  if (a.paused || a.ended) {
    var p = a.play();
    if (p && p.catch) p.catch(function () { self.update(); });
  } else {
    a.pause();
  }
};
Player.prototype.seekTo = function (t) {
  var d = this.duration();
  if (!(d > 0)) return;
  this.audio.currentTime = Math.max(0, Math.min(d, t));
  this.update();
};
Player.prototype.key = function (e) {
  var d = this.duration(), t = this.audio.currentTime || 0;
  var step = Math.min(5, Math.max(0.1, d / 10)), big = Math.min(30, Math.max(step, d / 4));
  switch (e.key) {
  case "ArrowLeft": case "ArrowDown": t -= step; break;
  case "ArrowRight": case "ArrowUp": t += step; break;
  case "PageDown": t -= big; break;
  case "PageUp": t += big; break;
  case "Home": t = 0; break;
  case "End": t = d; break;
  default: return;
  }
  e.preventDefault();
  this.seekTo(t);
};
Player.prototype.pointer = function (e) {
  var r = this.seek.getBoundingClientRect();
  if (r.width > 0) this.seekTo((e.clientX - r.left) / r.width * this.duration());
};
Player.prototype.update = function () {
  var self = this, a = this.audio, d = this.duration();
  var t = Math.min(a.currentTime || 0, d), playing = !a.paused && !a.ended;
  var total = d > 0 ? fmt(Math.max(1, Math.round(d))) : fmt(0);
  this.play.setAttribute("aria-label", (playing ? "Pause: " : "Play: ") + this.name);
  this.play.setAttribute("data-state", playing ? "playing" : "paused");
  this.seek.setAttribute("aria-valuemax", d.toFixed(1));
  this.seek.setAttribute("aria-valuenow", t.toFixed(1));
  this.seek.setAttribute("aria-valuetext", fmt(t) + " of " + total);
  this.time.textContent = fmt(t) + " / " + total;
  this.draw();
  if (playing && !this.raf)
    this.raf = requestAnimationFrame(function () { self.raf = 0; self.update(); });
};
Player.prototype.draw = function () {
  var c = this.canvas, dpr = window.devicePixelRatio || 1;
  var w = Math.round(c.clientWidth * dpr), h = Math.round(c.clientHeight * dpr);
  if (!w || !h) return;
  if (c.width !== w) c.width = w;
  if (c.height !== h) c.height = h;
  var g = c.getContext("2d"), st = getComputedStyle(this.seek);
  var played = st.getPropertyValue("--accent").trim() || "#c2185b";
  var rest = st.getPropertyValue("--rest").trim() || "#c8c4d4";
  var bw = Math.max(1, Math.round(2 * dpr)), pitch = bw + Math.max(1, Math.round(dpr));
  var n = Math.max(1, Math.floor((w + pitch - bw) / pitch)), p = this.peaks;
  var m = p ? p.length / 2 : 0, mid = h / 2, amp = mid * 0.95, d = this.duration();
  var done = d > 0 ? Math.min(1, (this.audio.currentTime || 0) / d) : 0;
  g.clearRect(0, 0, w, h);
  for (var i = 0; i < n; i++) {
    var lo = 0, hi = 0;
    if (m) {
      var a = Math.floor(i * m / n), b = Math.max(a + 1, Math.floor((i + 1) * m / n));
      for (var k = a; k < b && k < m; k++) {
        if (p[2 * k] < lo) lo = p[2 * k];
        if (p[2 * k + 1] > hi) hi = p[2 * k + 1];
      }
    }
    var top = mid - hi * amp, bottom = mid - lo * amp;
    if (bottom - top < dpr) { top = mid - dpr / 2; bottom = mid + dpr / 2; }
    g.fillStyle = (i + 0.5) / n <= done ? played : rest;
    g.fillRect(i * pitch, top, bw, bottom - top);
  }
};
function localTime(el) {
  var d = new Date(el.getAttribute("datetime"));
  if (isNaN(d.getTime())) return;
  el.title = el.textContent;
  el.textContent = d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
function postItem(item) {
  var li = document.createElement("li"), art = document.createElement("article");
  var text = document.createElement("p"), box = document.createElement("div");
  var audio = document.createElement("audio"), meta = document.createElement("p");
  var link = document.createElement("a"), time = document.createElement("time");
  var atts = Array.isArray(item.attachments) ? item.attachments : [];
  var first = atts[0] || {}, ext = item._sayin || {};
  art.className = "post"; art.id = "post-" + item.id; art.tabIndex = -1;
  text.className = "text";
  text.textContent = typeof item.content_text === "string" ? item.content_text : "";
  box.className = "player";
  if (httpUrl(ext.waveform_url)) box.setAttribute("data-waveform", httpUrl(ext.waveform_url));
  if (typeof first.duration_in_seconds === "number")
    box.setAttribute("data-duration", String(first.duration_in_seconds));
  audio.controls = true; audio.preload = "metadata";
  audio.setAttribute("aria-label", "Voice post: " +
    (typeof first.title === "string" && first.title ? first.title : "Voice post"));
  atts.forEach(function (att) {
    var u = att && httpUrl(att.url);
    if (!u) return;
    var s = document.createElement("source");
    s.src = u;
    if (typeof att.mime_type === "string") s.type = att.mime_type;
    audio.appendChild(s);
  });
  meta.className = "meta";
  if (httpUrl(item.url)) link.href = httpUrl(item.url);
  if (typeof item.date_published === "string") {
    time.setAttribute("datetime", item.date_published);
    time.textContent = item.date_published;
    localTime(time);
  }
  link.appendChild(time); meta.appendChild(link);
  box.appendChild(audio);
  art.appendChild(text); art.appendChild(box); art.appendChild(meta);
  li.appendChild(art);
  return li;
}
function loadOlder(button, list, status) {
  var busy = false;
  button.hidden = false;
  button.addEventListener("click", function () {
    var url = httpUrl(button.getAttribute("data-feed"));
    if (busy || !url) return;
    busy = true;
    button.setAttribute("aria-disabled", "true");
    status.textContent = "Loading older posts\u2026";
    fetch(url).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }).then(function (feed) {
      var items = Array.isArray(feed.items) ? feed.items : [], added = 0, first = null;
      items.forEach(function (item) {
        if (!item || typeof item.id !== "string" || !item.id) return;
        if (document.getElementById("post-" + item.id)) return;
        var li = postItem(item);
        list.appendChild(li);
        players.push(new Player(li.querySelector(".player")));
        if (!first) first = li.firstChild;
        added++;
      });
      var next = httpUrl(feed.next_url);
      status.textContent = "Loaded " + added + (added === 1 ? " older post." : " older posts.");
      if (next) {
        button.setAttribute("data-feed", next);
      } else {
        button.removeAttribute("data-feed");
        button.hidden = true;
        status.textContent += " No more posts.";
        (first || status).focus();
      }
    }).catch(function () {
      status.textContent = "Could not load older posts. Try again.";
    }).then(function () {
      busy = false;
      button.removeAttribute("aria-disabled");
    });
  });
}
document.querySelectorAll("time[datetime]").forEach(localTime);
document.querySelectorAll(".player").forEach(function (box) {
  if (box.querySelector("audio")) players.push(new Player(box));
});
document.addEventListener("play", function (e) {
  players.forEach(function (p) { if (p.audio !== e.target) p.audio.pause(); });
}, true);
var older = document.getElementById("older"), list = document.getElementById("posts");
var status = document.getElementById("older-status");
if (older && list && status) loadOlder(older, list, status);
})();

/* page: post, embed and author HTML pages and the PNG share card. */
#include "render/page.h"

#include "core/error.h"
#include "core/log.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <openssl/evp.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STR_(x) #x
#define STR(x) STR_(x)

/* ------------------------------------------------------------------ paths */

int page_path_embed(char *buf, size_t len, const char *id)
{
	int n = snprintf(buf, len, "/p/%s/embed", id);
	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

int page_path_card(char *buf, size_t len, const char *sha256_hex)
{
	int n = snprintf(buf, len, "/a/%s.png", sha256_hex);
	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

/* ------------------------------------------------------ script and style */

/* The one stylesheet of every page. Colours are custom properties, so the
 * script draws the waveform in the same ones, dark mode included. */
static const char page_style[] =
	":root{color-scheme:light dark;--fg:#1c1a24;--bg:#fff;--muted:#5f5b6b;--accent:#c2185b;"
	"--rest:#c8c4d4;--line:#e4e1ec;font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,"
	"sans-serif}\n"
	"@media (prefers-color-scheme:dark){:root{--fg:#eeebf5;--bg:#16131f;--muted:#aaa5b8;"
	"--accent:#ff6f9c;--rest:#4b4659;--line:#2c2937}}\n"
	"*,::before,::after{box-sizing:border-box}\n"
	"body{margin:0;background:var(--bg);color:var(--fg)}\n"
	"main{max-width:40rem;margin:0 auto;padding:1rem}\n"
	"a{color:inherit}\n"
	"h1{font-size:1.25rem;margin:0 0 .75rem}\n"
	".handle,.meta{color:var(--muted);font-size:.875rem}\n"
	".text{white-space:pre-line;overflow-wrap:anywhere;font-size:1.25rem;margin:0 0 .75rem}\n"
	".posts{list-style:none;margin:0;padding:0}\n"
	".posts>li{border-top:1px solid var(--line);padding:1rem 0}\n"
	".posts .text{font-size:1.0625rem}\n"
	".post:focus{outline:none}\n"
	"audio{width:100%}\n"
	".bar{display:flex;align-items:center;gap:.75rem}\n"
	".play{flex:none;width:3rem;height:3rem;padding:0;border:0;border-radius:50%;"
	"background:var(--accent);color:var(--bg);cursor:pointer;display:grid;place-items:center}\n"
	".play::before{content:\"\";width:0;height:0;border-style:solid;"
	"border-width:.65rem 0 .65rem 1.1rem;border-color:transparent transparent transparent "
	"currentColor;margin-left:.25rem}\n"
	".play[data-state=playing]::before{width:1rem;height:1.2rem;border-width:0 .35rem;"
	"border-color:currentColor;margin:0}\n"
	".seek{flex:1;min-width:0;height:3.5rem;cursor:pointer;touch-action:none}\n"
	".seek canvas{display:block;width:100%;height:100%}\n"
	".play:focus-visible,.seek:focus-visible,.older:focus-visible{outline:3px solid var(--fg);"
	"outline-offset:2px}\n"
	".time{flex:none;min-width:5.5em;text-align:right;font-variant-numeric:tabular-nums;"
	"color:var(--muted);font-size:.875rem}\n"
	".older{margin:1rem 0;padding:.75rem 1.25rem;font:inherit;color:inherit;background:none;"
	"border:1px solid var(--muted);border-radius:2rem;cursor:pointer}\n"
	".older[aria-disabled=true]{opacity:.6;cursor:progress}\n"
	".embed main{max-width:none;padding:.75rem}\n"
	".who{margin:0;font-weight:600}\n"
	".line{white-space:nowrap;overflow:hidden;text-overflow:ellipsis;margin:.25rem 0 .5rem}\n";

/* The one script of every page: players for every .player box (a labelled
 * play/pause button, the waveform as a seek slider, the time), local dates,
 * and the author page's "Load older posts". No library, no build step. */
static const char page_script[] =
	"(function () {\n"
	"\"use strict\";\n"
	"var players = [];\n"
	"function fmt(t) {\n"
	"  if (!isFinite(t) || t < 0) t = 0;\n"
	"  t = Math.floor(t);\n"
	"  var s = t % 60;\n"
	"  return Math.floor(t / 60) + \":\" + (s < 10 ? \"0\" : \"\") + s;\n"
	"}\n"
	"function httpUrl(u) {\n"
	"  if (typeof u !== \"string\" || !u) return null;\n"
	"  try {\n"
	"    var url = new URL(u, location.href);\n"
	"    return url.protocol === \"https:\" || url.protocol === \"http:\" ? url.href : null;\n"
	"  } catch (e) { return null; }\n"
	"}\n"
	/* Channel 0's min/max pairs scaled so the loudest peak is 1, or null. */
	"function peaksOf(doc) {\n"
	"  if (!doc || !Array.isArray(doc.data)) return null;\n"
	"  var ch = doc.channels > 1 ? doc.channels : 1, scale = doc.bits === 16 ? 32768 : 128;\n"
	"  var n = Math.floor(doc.data.length / (2 * ch)), out = new Float32Array(2 * n), top = 0, i;\n"
	"  if (!n) return null;\n"
	"  for (i = 0; i < n; i++) {\n"
	"    var lo = (+doc.data[2 * ch * i] || 0) / scale, hi = (+doc.data[2 * ch * i + 1] || 0) / scale;\n"
	"    out[2 * i] = lo; out[2 * i + 1] = hi;\n"
	"    top = Math.max(top, -lo, hi);\n"
	"  }\n"
	"  if (top > 0) for (i = 0; i < out.length; i++) out[i] /= top;\n"
	"  return out;\n"
	"}\n"
	"function Player(box) {\n"
	"  var self = this, audio = box.querySelector(\"audio\");\n"
	"  var name = audio.getAttribute(\"aria-label\") || \"Voice post\";\n"
	"  var bar = document.createElement(\"div\"), play = document.createElement(\"button\");\n"
	"  var seek = document.createElement(\"div\"), canvas = document.createElement(\"canvas\");\n"
	"  var time = document.createElement(\"span\");\n"
	"  this.box = box; this.audio = audio; this.name = name; this.peaks = null;\n"
	"  this.play = play; this.seek = seek; this.canvas = canvas; this.time = time;\n"
	"  this.raf = 0; this.dragging = false;\n"
	"  bar.className = \"bar\";\n"
	"  play.type = \"button\"; play.className = \"play\";\n"
	"  seek.className = \"seek\"; seek.tabIndex = 0;\n"
	"  seek.setAttribute(\"role\", \"slider\");\n"
	"  seek.setAttribute(\"aria-label\", \"Seek: \" + name);\n"
	"  seek.setAttribute(\"aria-valuemin\", \"0\");\n"
	"  canvas.setAttribute(\"aria-hidden\", \"true\");\n"
	"  time.className = \"time\"; time.setAttribute(\"aria-hidden\", \"true\");\n"
	"  seek.appendChild(canvas);\n"
	"  bar.appendChild(play); bar.appendChild(seek); bar.appendChild(time);\n"
	"  box.appendChild(bar);\n"
	"  audio.controls = false;\n"
	"  play.addEventListener(\"click\", function () { self.toggle(); });\n"
	"  seek.addEventListener(\"keydown\", function (e) { self.key(e); });\n"
	"  seek.addEventListener(\"pointerdown\", function (e) {\n"
	"    if (e.button !== 0) return;\n"
	"    seek.focus();\n"
	"    seek.setPointerCapture(e.pointerId);\n"
	"    self.dragging = true; self.pointer(e); e.preventDefault();\n"
	"  });\n"
	"  seek.addEventListener(\"pointermove\", function (e) { if (self.dragging) self.pointer(e); });\n"
	"  seek.addEventListener(\"pointerup\", function () { self.dragging = false; });\n"
	"  seek.addEventListener(\"pointercancel\", function () { self.dragging = false; });\n"
	"  [\"play\", \"pause\", \"ended\", \"timeupdate\", \"durationchange\", \"loadedmetadata\", "
	"\"seeked\"].forEach(function (ev) {\n"
	"    audio.addEventListener(ev, function () { self.update(); });\n"
	"  });\n"
	"  if (window.ResizeObserver) new ResizeObserver(function () { self.draw(); }).observe(seek);\n"
	"  else window.addEventListener(\"resize\", function () { self.draw(); });\n"
	"  this.update();\n"
	"  var url = httpUrl(box.getAttribute(\"data-waveform\"));\n"
	"  if (!url) { box.setAttribute(\"data-waveform-state\", \"none\"); return; }\n"
	"  fetch(url).then(function (r) {\n"
	"    if (!r.ok) throw new Error(\"HTTP \" + r.status);\n"
	"    return r.json();\n"
	"  }).then(function (doc) {\n"
	"    self.peaks = peaksOf(doc);\n"
	"    self.draw();\n"
	"    box.setAttribute(\"data-waveform-state\", self.peaks ? \"drawn\" : \"empty\");\n"
	"  }).catch(function () { box.setAttribute(\"data-waveform-state\", \"failed\"); });\n"
	"}\n"
	/* The published duration: exact (the browser's may count the Opus
	 * pre-skip, and Chromium stretches it after a seek to the very end);
	 * the browser's only when the page has none. */
	"Player.prototype.duration = function () {\n"
	"  var d = parseFloat(this.box.getAttribute(\"data-duration\"));\n"
	"  if (isFinite(d) && d > 0) return d;\n"
	"  d = this.audio.duration;\n"
	"  return isFinite(d) && d > 0 ? d : 0;\n"
	"};\n"
	"Player.prototype.toggle = function () {\n"
	"  var self = this, a = this.audio;\n"
	"  if (a.paused || a.ended) {\n"
	"    var p = a.play();\n"
	"    if (p && p.catch) p.catch(function () { self.update(); });\n"
	"  } else {\n"
	"    a.pause();\n"
	"  }\n"
	"};\n"
	"Player.prototype.seekTo = function (t) {\n"
	"  var d = this.duration();\n"
	"  if (!(d > 0)) return;\n"
	"  this.audio.currentTime = Math.max(0, Math.min(d, t));\n"
	"  this.update();\n"
	"};\n"
	"Player.prototype.key = function (e) {\n"
	"  var d = this.duration(), t = this.audio.currentTime || 0;\n"
	"  var step = Math.min(5, Math.max(0.1, d / 10)), big = Math.min(30, Math.max(step, d / 4));\n"
	"  switch (e.key) {\n"
	"  case \"ArrowLeft\": case \"ArrowDown\": t -= step; break;\n"
	"  case \"ArrowRight\": case \"ArrowUp\": t += step; break;\n"
	"  case \"PageDown\": t -= big; break;\n"
	"  case \"PageUp\": t += big; break;\n"
	"  case \"Home\": t = 0; break;\n"
	"  case \"End\": t = d; break;\n"
	"  default: return;\n"
	"  }\n"
	"  e.preventDefault();\n"
	"  this.seekTo(t);\n"
	"};\n"
	"Player.prototype.pointer = function (e) {\n"
	"  var r = this.seek.getBoundingClientRect();\n"
	"  if (r.width > 0) this.seekTo((e.clientX - r.left) / r.width * this.duration());\n"
	"};\n"
	"Player.prototype.update = function () {\n"
	"  var self = this, a = this.audio, d = this.duration();\n"
	"  var t = Math.min(a.currentTime || 0, d), playing = !a.paused && !a.ended;\n"
	"  var total = d > 0 ? fmt(Math.max(1, Math.round(d))) : fmt(0);\n"
	"  this.play.setAttribute(\"aria-label\", (playing ? \"Pause: \" : \"Play: \") + this.name);\n"
	"  this.play.setAttribute(\"data-state\", playing ? \"playing\" : \"paused\");\n"
	"  this.seek.setAttribute(\"aria-valuemax\", d.toFixed(1));\n"
	"  this.seek.setAttribute(\"aria-valuenow\", t.toFixed(1));\n"
	"  this.seek.setAttribute(\"aria-valuetext\", fmt(t) + \" of \" + total);\n"
	"  this.time.textContent = fmt(t) + \" / \" + total;\n"
	"  this.draw();\n"
	"  if (playing && !this.raf)\n"
	"    this.raf = requestAnimationFrame(function () { self.raf = 0; self.update(); });\n"
	"};\n"
	/* Bars of 2 CSS pixels; played ones in the accent colour. */
	"Player.prototype.draw = function () {\n"
	"  var c = this.canvas, dpr = window.devicePixelRatio || 1;\n"
	"  var w = Math.round(c.clientWidth * dpr), h = Math.round(c.clientHeight * dpr);\n"
	"  if (!w || !h) return;\n"
	"  if (c.width !== w) c.width = w;\n"
	"  if (c.height !== h) c.height = h;\n"
	"  var g = c.getContext(\"2d\"), st = getComputedStyle(this.seek);\n"
	"  var played = st.getPropertyValue(\"--accent\").trim() || \"#c2185b\";\n"
	"  var rest = st.getPropertyValue(\"--rest\").trim() || \"#c8c4d4\";\n"
	"  var bw = Math.max(1, Math.round(2 * dpr)), pitch = bw + Math.max(1, Math.round(dpr));\n"
	"  var n = Math.max(1, Math.floor((w + pitch - bw) / pitch)), p = this.peaks;\n"
	"  var m = p ? p.length / 2 : 0, mid = h / 2, amp = mid * 0.95, d = this.duration();\n"
	"  var done = d > 0 ? Math.min(1, (this.audio.currentTime || 0) / d) : 0;\n"
	"  g.clearRect(0, 0, w, h);\n"
	"  for (var i = 0; i < n; i++) {\n"
	"    var lo = 0, hi = 0;\n"
	"    if (m) {\n"
	"      var a = Math.floor(i * m / n), b = Math.max(a + 1, Math.floor((i + 1) * m / n));\n"
	"      for (var k = a; k < b && k < m; k++) {\n"
	"        if (p[2 * k] < lo) lo = p[2 * k];\n"
	"        if (p[2 * k + 1] > hi) hi = p[2 * k + 1];\n"
	"      }\n"
	"    }\n"
	"    var top = mid - hi * amp, bottom = mid - lo * amp;\n"
	"    if (bottom - top < dpr) { top = mid - dpr / 2; bottom = mid + dpr / 2; }\n"
	"    g.fillStyle = (i + 0.5) / n <= done ? played : rest;\n"
	"    g.fillRect(i * pitch, top, bw, bottom - top);\n"
	"  }\n"
	"};\n"
	"function localTime(el) {\n"
	"  var d = new Date(el.getAttribute(\"datetime\"));\n"
	"  if (isNaN(d.getTime())) return;\n"
	"  el.title = el.textContent;\n"
	"  el.textContent = d.toLocaleString(undefined, { dateStyle: \"medium\", timeStyle: \"short\" });\n"
	"}\n"
	/* An author page item from a JSON Feed item: the same markup as the
	 * server's, built with textContent and checked URLs only. */
	"function postItem(item) {\n"
	"  var li = document.createElement(\"li\"), art = document.createElement(\"article\");\n"
	"  var text = document.createElement(\"p\"), box = document.createElement(\"div\");\n"
	"  var audio = document.createElement(\"audio\"), meta = document.createElement(\"p\");\n"
	"  var link = document.createElement(\"a\"), time = document.createElement(\"time\");\n"
	"  var atts = Array.isArray(item.attachments) ? item.attachments : [];\n"
	"  var first = atts[0] || {}, ext = item._sayin || {};\n"
	"  art.className = \"post\"; art.id = \"post-\" + item.id; art.tabIndex = -1;\n"
	"  text.className = \"text\";\n"
	"  text.textContent = typeof item.content_text === \"string\" ? item.content_text : \"\";\n"
	"  box.className = \"player\";\n"
	"  if (httpUrl(ext.waveform_url)) box.setAttribute(\"data-waveform\", httpUrl(ext.waveform_url));\n"
	"  if (typeof first.duration_in_seconds === \"number\")\n"
	"    box.setAttribute(\"data-duration\", String(first.duration_in_seconds));\n"
	"  audio.controls = true; audio.preload = \"metadata\";\n"
	"  audio.setAttribute(\"aria-label\", \"Voice post: \" +\n"
	"    (typeof first.title === \"string\" && first.title ? first.title : \"Voice post\"));\n"
	"  atts.forEach(function (att) {\n"
	"    var u = att && httpUrl(att.url);\n"
	"    if (!u) return;\n"
	"    var s = document.createElement(\"source\");\n"
	"    s.src = u;\n"
	"    if (typeof att.mime_type === \"string\") s.type = att.mime_type;\n"
	"    audio.appendChild(s);\n"
	"  });\n"
	"  meta.className = \"meta\";\n"
	"  if (httpUrl(item.url)) link.href = httpUrl(item.url);\n"
	"  if (typeof item.date_published === \"string\") {\n"
	"    time.setAttribute(\"datetime\", item.date_published);\n"
	"    time.textContent = item.date_published;\n"
	"    localTime(time);\n"
	"  }\n"
	"  link.appendChild(time); meta.appendChild(link);\n"
	"  box.appendChild(audio);\n"
	"  art.appendChild(text); art.appendChild(box); art.appendChild(meta);\n"
	"  li.appendChild(art);\n"
	"  return li;\n"
	"}\n"
	"function loadOlder(button, list, status) {\n"
	"  var busy = false;\n"
	"  button.hidden = false;\n"
	"  button.addEventListener(\"click\", function () {\n"
	"    var url = httpUrl(button.getAttribute(\"data-feed\"));\n"
	"    if (busy || !url) return;\n"
	"    busy = true;\n"
	"    button.setAttribute(\"aria-disabled\", \"true\");\n"
	"    status.textContent = \"Loading older posts\\u2026\";\n"
	"    fetch(url).then(function (r) {\n"
	"      if (!r.ok) throw new Error(\"HTTP \" + r.status);\n"
	"      return r.json();\n"
	"    }).then(function (feed) {\n"
	"      var items = Array.isArray(feed.items) ? feed.items : [], added = 0, first = null;\n"
	"      items.forEach(function (item) {\n"
	"        if (!item || typeof item.id !== \"string\" || !item.id) return;\n"
	"        if (document.getElementById(\"post-\" + item.id)) return;\n"
	"        var li = postItem(item);\n"
	"        list.appendChild(li);\n"
	"        players.push(new Player(li.querySelector(\".player\")));\n"
	"        if (!first) first = li.firstChild;\n"
	"        added++;\n"
	"      });\n"
	"      var next = httpUrl(feed.next_url);\n"
	"      status.textContent = \"Loaded \" + added + (added === 1 ? \" older post.\" : \" older posts.\");\n"
	"      if (next) {\n"
	"        button.setAttribute(\"data-feed\", next);\n"
	"      } else {\n"
	"        button.removeAttribute(\"data-feed\");\n"
	"        button.hidden = true;\n"
	"        status.textContent += \" No more posts.\";\n"
	"        (first || status).focus();\n"
	"      }\n"
	"    }).catch(function () {\n"
	"      status.textContent = \"Could not load older posts. Try again.\";\n"
	"    }).then(function () {\n"
	"      busy = false;\n"
	"      button.removeAttribute(\"aria-disabled\");\n"
	"    });\n"
	"  });\n"
	"}\n"
	"document.querySelectorAll(\"time[datetime]\").forEach(localTime);\n"
	"document.querySelectorAll(\".player\").forEach(function (box) {\n"
	"  if (box.querySelector(\"audio\")) players.push(new Player(box));\n"
	"});\n"
	/* One voice at a time. */
	"document.addEventListener(\"play\", function (e) {\n"
	"  players.forEach(function (p) { if (p.audio !== e.target) p.audio.pause(); });\n"
	"}, true);\n"
	"var older = document.getElementById(\"older\"), list = document.getElementById(\"posts\");\n"
	"var status = document.getElementById(\"older-status\");\n"
	"if (older && list && status) loadOlder(older, list, status);\n"
	"})();\n";

/* ------------------------------------------------------------ HTML output */

/* A growable string; a failed allocation sticks and is reported at the end. */
struct buf {
	char *data;
	size_t len, cap;
	int failed;
};

static void buf_put(struct buf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 8192;
		char *p;
		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->data, cap);
		if (p == NULL) {
			b->failed = 1;
			return;
		}
		b->data = p;
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

/* Escapes text for element content and double- or single-quoted attribute
 * values. C0 controls other than tab, newline and carriage return are
 * dropped: HTML forbids them. s is UTF-8 (jansson checked it). */
static void buf_html(struct buf *b, const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		switch (c) {
		case '&': buf_str(b, "&amp;"); break;
		case '<': buf_str(b, "&lt;"); break;
		case '>': buf_str(b, "&gt;"); break;
		case '"': buf_str(b, "&quot;"); break;
		case '\'': buf_str(b, "&#39;"); break;
		default:
			if (c >= 0x20 || c == '\t' || c == '\n' || c == '\r')
				buf_put(b, s, 1);
			break;
		}
	}
}

/* base_url + path, escaped for an attribute. */
static void buf_url(struct buf *b, const char *base_url, const char *path)
{
	buf_html(b, base_url);
	buf_html(b, path);
}

/* <meta ATTR="KEY" content="...">: the NULL-terminated values after key,
 * escaped and joined. */
static void buf_meta(struct buf *b, const char *attr, const char *key, ...)
{
	va_list ap;
	const char *part;

	buf_str(b, "<meta ");
	buf_str(b, attr);
	buf_str(b, "=\"");
	buf_str(b, key);
	buf_str(b, "\" content=\"");
	va_start(ap, key);
	while ((part = va_arg(ap, const char *)) != NULL)
		buf_html(b, part);
	va_end(ap);
	buf_str(b, "\">\n");
}

static void buf_meta_url(struct buf *b, const char *attr, const char *key, const char *base_url,
                         const char *path)
{
	buf_str(b, "<meta ");
	buf_str(b, attr);
	buf_str(b, "=\"");
	buf_str(b, key);
	buf_str(b, "\" content=\"");
	buf_url(b, base_url, path);
	buf_str(b, "\">\n");
}

static int buf_finish(struct buf *b, char **out, size_t *out_len)
{
	if (b->failed) {
		free(b->data);
		return -ENOMEM;
	}
	*out = b->data;
	*out_len = b->len;
	return 0;
}

/* ---------------------------------------------------------------- records */

#define PAGE_TITLE_MAX 80        /* characters: <title>, labels, the embed's line */
#define PAGE_DESCRIPTION_MAX 300 /* characters: og:description */

struct post_view {
	const char *id;
	const char *text;
	const char *date;
	const char *sha256;
	const char *mime;
	double duration;
	const char *fallback_sha256; /* NULL: none */
	const char *fallback_mime;
	const char *waveform_sha256; /* NULL: none */
	const char *card_sha256;     /* NULL: none */
};

static int is_hex(const char *s)
{
	if (s == NULL || *s == '\0')
		return 0;
	for (; *s != '\0'; s++) {
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return 0;
	}
	return 1;
}

/* Post ids go into paths and element ids: letters, digits, '-', '_'. */
static int is_id(const char *s)
{
	if (s == NULL || *s == '\0')
		return 0;
	for (; *s != '\0'; s++) {
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      *s == '-' || *s == '_'))
			return 0;
	}
	return 1;
}

/* The sha256 of an optional sub-object: 0 with *hex NULL when the key is
 * absent, SAYIN_ECORRUPT when it is there without a hex "sha256". */
static int optional_hash(const json_t *post, const char *key, const char **hex)
{
	const json_t *o = json_object_get(post, key);

	*hex = NULL;
	if (o == NULL || json_is_null(o))
		return 0;
	*hex = json_string_value(json_object_get(o, "sha256"));
	return is_hex(*hex) ? 0 : SAYIN_ECORRUPT;
}

static int post_view_read(const json_t *post, struct post_view *v)
{
	const json_t *audio = json_object_get(post, "audio");
	const json_t *text = json_object_get(post, "text");
	const json_t *duration = json_object_get(audio, "duration_in_seconds");

	if (!json_is_object(post) || !json_is_object(audio))
		return SAYIN_ECORRUPT;
	v->id = json_string_value(json_object_get(post, "id"));
	v->date = json_string_value(json_object_get(post, "date_published"));
	v->sha256 = json_string_value(json_object_get(audio, "sha256"));
	v->mime = json_string_value(json_object_get(audio, "mime_type"));
	if (!is_id(v->id) || v->date == NULL || !is_hex(v->sha256) || v->mime == NULL)
		return SAYIN_ECORRUPT;
	if (text != NULL && !json_is_string(text))
		return SAYIN_ECORRUPT;
	v->text = text != NULL ? json_string_value(text) : "";
	if (duration != NULL && !json_is_number(duration))
		return SAYIN_ECORRUPT;
	v->duration = duration != NULL ? json_number_value(duration) : 0.0;
	if (!isfinite(v->duration) || v->duration < 0)
		return SAYIN_ECORRUPT;
	if (optional_hash(post, "fallback", &v->fallback_sha256) != 0 ||
	    optional_hash(post, "waveform", &v->waveform_sha256) != 0 ||
	    optional_hash(post, "card", &v->card_sha256) != 0)
		return SAYIN_ECORRUPT;
	v->fallback_mime = NULL;
	if (v->fallback_sha256 != NULL) {
		v->fallback_mime =
			json_string_value(json_object_get(json_object_get(post, "fallback"), "mime_type"));
		if (v->fallback_mime == NULL)
			return SAYIN_ECORRUPT;
	}
	return 0;
}

static int author_ok(const feed_author *author)
{
	return author != NULL && author->handle != NULL && author->name != NULL &&
	       author->handle[0] != '\0';
}

/* text on one line (runs of white space and controls become one space),
 * cut after max characters (at a word when one ends in the last quarter,
 * then "…"), or fallback when nothing is left (then returns 1, else 0).
 * buf holds max * 4 + 4 bytes. */
static int one_line(const char *text, size_t max, const char *fallback, char *buf, size_t len)
{
	size_t n = 0, chars = 0, last_space = 0;
	int cut = 0, space = 0;

	for (const unsigned char *p = (const unsigned char *)text; *p != '\0';) {
		size_t k = *p < 0x80 ? 1 : *p < 0xe0 ? 2 : *p < 0xf0 ? 3 : 4;

		if (*p <= 0x20 || *p == 0x7f) {
			space = n > 0;
			p++;
			continue;
		}
		if (chars + space >= max) {
			cut = 1;
			break;
		}
		if (n + space + k + 4 > len)
			break;
		if (space) {
			last_space = n;
			buf[n++] = ' ';
			chars++;
			space = 0;
		}
		size_t i = 0;
		for (; i < k && p[i] != '\0'; i++)
			buf[n++] = (char)p[i];
		p += i;
		chars++;
	}
	if (cut && last_space > n * 3 / 4)
		n = last_space;
	if (n == 0) {
		snprintf(buf, len, "%s", fallback);
		return 1;
	}
	if (cut) {
		memcpy(buf + n, "\xe2\x80\xa6", 3); /* U+2026 … */
		n += 3;
	}
	buf[n] = '\0';
	return 0;
}

/* "2026-01-02T03:04:05Z" -> "2 Jan 2026" (the date where it was posted; the
 * script shows the reader's local date and time). Anything else is kept. */
static void human_date(const char *rfc3339, char *buf, size_t len)
{
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
		                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	int y, m, d, used = 0;

	if (sscanf(rfc3339, "%4d-%2d-%2d%n", &y, &m, &d, &used) == 3 && used == 10 && m >= 1 &&
	    m <= 12 && d >= 1 && d <= 31)
		snprintf(buf, len, "%d %s %d", d, months[m - 1], y);
	else
		snprintf(buf, len, "%s", rfc3339);
}

/* ------------------------------------------------------------------ heads */

/* "sha256-BASE64" of s, for a CSP source; 0 or -ENOMEM. */
static int csp_hash(const char *s, char *out, size_t len)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;

	if (len < 7 + 45 || EVP_Digest(s, strlen(s), md, &md_len, EVP_sha256(), NULL) != 1)
		return -ENOMEM;
	memcpy(out, "sha256-", 7);
	EVP_EncodeBlock((unsigned char *)out + 7, md, (int)md_len);
	return 0;
}

/* The origin (scheme://host[:port]) of base_url, for CSP sources. */
static void url_origin(const char *url, char *buf, size_t len)
{
	const char *host = strstr(url, "://");
	size_t n = host != NULL ? (size_t)(host - url) + 3 + strcspn(host + 3, "/?#") : strlen(url);

	if (n >= len)
		n = len - 1;
	memcpy(buf, url, n);
	buf[n] = '\0';
}

/* doctype to the end of the shared head elements, with the title "NAME on
 * sayin: “LABEL”" (no label: "NAME on sayin"); the caller adds its tags and
 * closes the head with head_end. */
static int head_start(struct buf *b, const char *base_url, const char *name, const char *label)
{
	char script_hash[64], style_hash[64], origin[256];

	if (csp_hash(page_script, script_hash, sizeof(script_hash)) != 0 ||
	    csp_hash(page_style, style_hash, sizeof(style_hash)) != 0)
		return -ENOMEM;
	url_origin(base_url, origin, sizeof(origin));
	buf_str(b, "<!doctype html>\n<html lang=\"und\">\n<head>\n<meta charset=\"utf-8\">\n"
	           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
	/* Only our own script and style run, and nothing is fetched from a third party. */
	buf_str(b, "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
	           "script-src '");
	buf_str(b, script_hash);
	buf_str(b, "'; style-src '");
	buf_str(b, style_hash);
	buf_str(b, "'; img-src 'self' data: ");
	buf_html(b, origin);
	buf_str(b, "; media-src 'self' ");
	buf_html(b, origin);
	buf_str(b, "; connect-src 'self' ");
	buf_html(b, origin);
	buf_str(b, "; base-uri 'none'; form-action 'none'\">\n");
	/* No favicon request. */
	buf_str(b, "<link rel=\"icon\" href=\"data:,\">\n<title>");
	buf_html(b, name);
	buf_str(b, " on sayin");
	if (label != NULL) {
		buf_str(b, ": \xe2\x80\x9c"); /* “label” */
		buf_html(b, label);
		buf_str(b, "\xe2\x80\x9d");
	}
	buf_str(b, "</title>\n");
	return 0;
}

static void head_end(struct buf *b, int embed)
{
	buf_str(b, "<style>");
	buf_str(b, page_style);
	buf_str(b, "</style>\n</head>\n");
	buf_str(b, embed ? "<body class=\"embed\">\n" : "<body>\n");
}

static void body_end(struct buf *b)
{
	buf_str(b, "<script>");
	buf_str(b, page_script);
	buf_str(b, "</script>\n</body>\n</html>\n");
}

static void feed_link(struct buf *b, const char *base_url, const feed_author *author)
{
	char path[256];

	feed_path_feed(path, sizeof(path), author->handle);
	buf_str(b, "<link rel=\"alternate\" type=\"" FEED_CONTENT_TYPE "\" title=\"");
	buf_html(b, author->name);
	buf_str(b, " on sayin\" href=\"");
	buf_url(b, base_url, path);
	buf_str(b, "\">\n");
}

/* ----------------------------------------------------------------- player */

/* The .player box: <audio controls preload="metadata"> with the Opus source
 * first (browsers take the first they can play) and the M4A second; the
 * script replaces the browser's controls with its own. label names the post
 * for screen readers. */
static void player(struct buf *b, const char *base_url, const struct post_view *v,
                   const char *label)
{
	char path[256], num[32];

	buf_str(b, "<div class=\"player\"");
	if (v->waveform_sha256 != NULL) {
		feed_path_waveform(path, sizeof(path), v->waveform_sha256);
		buf_str(b, " data-waveform=\"");
		buf_url(b, base_url, path);
		buf_str(b, "\"");
	}
	snprintf(num, sizeof(num), "%.3f", v->duration);
	buf_str(b, " data-duration=\"");
	buf_str(b, num);
	buf_str(b, "\">\n<audio controls preload=\"metadata\" aria-label=\"Voice post: ");
	buf_html(b, label);
	buf_str(b, "\">\n<source src=\"");
	feed_path_audio(path, sizeof(path), v->sha256);
	buf_url(b, base_url, path);
	buf_str(b, "\" type=\"");
	buf_html(b, v->mime);
	buf_str(b, "\">\n");
	if (v->fallback_sha256 != NULL) {
		buf_str(b, "<source src=\"");
		feed_path_fallback(path, sizeof(path), v->fallback_sha256);
		buf_url(b, base_url, path);
		buf_str(b, "\" type=\"");
		buf_html(b, v->fallback_mime);
		buf_str(b, "\">\n");
	}
	buf_str(b, "<a href=\"");
	feed_path_audio(path, sizeof(path), v->sha256);
	buf_url(b, base_url, path);
	buf_str(b, "\">Download the audio</a>\n</audio>\n</div>\n");
}

static void date_line(struct buf *b, const char *date)
{
	char human[64];

	human_date(date, human, sizeof(human));
	buf_str(b, "<time datetime=\"");
	buf_html(b, date);
	buf_str(b, "\">");
	buf_html(b, human);
	buf_str(b, "</time>");
}

/* --------------------------------------------------------------- post page */

int page_post_html(const char *base_url, const feed_author *author, const json_t *post,
                   char **out, size_t *out_len)
{
	struct post_view v;
	struct buf b = { 0 };
	char path[256], label[PAGE_TITLE_MAX * 4 + 8], desc[PAGE_DESCRIPTION_MAX * 4 + 8];
	const char *desc_by = "";

	if (base_url == NULL || !author_ok(author) || post_view_read(post, &v) != 0)
		return SAYIN_ECORRUPT;
	one_line(v.text, PAGE_TITLE_MAX, "Voice post", label, sizeof(label));
	/* No text: "A voice post by NAME". */
	if (one_line(v.text, PAGE_DESCRIPTION_MAX, "A voice post by ", desc, sizeof(desc)))
		desc_by = author->name;

	if (head_start(&b, base_url, author->name, label) != 0) {
		free(b.data);
		return -ENOMEM;
	}
	buf_meta(&b, "name", "description", desc, desc_by, NULL);
	feed_path_post(path, sizeof(path), v.id);
	buf_str(&b, "<link rel=\"canonical\" href=\"");
	buf_url(&b, base_url, path);
	buf_str(&b, "\">\n");
	feed_link(&b, base_url, author);

	/* Open Graph (Facebook, most link previews). */
	buf_meta(&b, "property", "og:site_name", "sayin", NULL);
	buf_meta(&b, "property", "og:type", "article", NULL);
	buf_meta(&b, "property", "og:title", author->name, " on sayin", NULL);
	buf_meta(&b, "property", "og:description", desc, desc_by, NULL);
	buf_meta_url(&b, "property", "og:url", base_url, path);
	buf_meta(&b, "property", "article:published_time", v.date, NULL);
	feed_path_audio(path, sizeof(path), v.sha256);
	buf_meta_url(&b, "property", "og:audio", base_url, path);
	buf_meta(&b, "property", "og:audio:type", v.mime, NULL);
	if (v.fallback_sha256 != NULL) {
		feed_path_fallback(path, sizeof(path), v.fallback_sha256);
		buf_meta_url(&b, "property", "og:audio", base_url, path);
		buf_meta(&b, "property", "og:audio:type", v.fallback_mime, NULL);
	}
	if (v.card_sha256 != NULL) {
		page_path_card(path, sizeof(path), v.card_sha256);
		buf_meta_url(&b, "property", "og:image", base_url, path);
		buf_meta(&b, "property", "og:image:type", PAGE_CARD_TYPE, NULL);
		buf_meta(&b, "property", "og:image:width", STR(PAGE_CARD_WIDTH), NULL);
		buf_meta(&b, "property", "og:image:height", STR(PAGE_CARD_HEIGHT), NULL);
		buf_meta(&b, "property", "og:image:alt", "Waveform of a voice post by ", author->name, NULL);
	}

	/* The X player card: the embed page in a frame; the stream is the MP4
	 * rendition when there is one (X plays MP4 streams, not Ogg). */
	buf_meta(&b, "name", "twitter:card", "player", NULL);
	buf_meta(&b, "name", "twitter:title", author->name, " on sayin", NULL);
	buf_meta(&b, "name", "twitter:description", desc, desc_by, NULL);
	page_path_embed(path, sizeof(path), v.id);
	buf_meta_url(&b, "name", "twitter:player", base_url, path);
	buf_meta(&b, "name", "twitter:player:width", STR(PAGE_EMBED_WIDTH), NULL);
	buf_meta(&b, "name", "twitter:player:height", STR(PAGE_EMBED_HEIGHT), NULL);
	if (v.fallback_sha256 != NULL)
		feed_path_fallback(path, sizeof(path), v.fallback_sha256);
	else
		feed_path_audio(path, sizeof(path), v.sha256);
	buf_meta_url(&b, "name", "twitter:player:stream", base_url, path);
	buf_meta(&b, "name", "twitter:player:stream:content_type",
	         v.fallback_sha256 != NULL ? v.fallback_mime : v.mime, NULL);
	if (v.card_sha256 != NULL) {
		page_path_card(path, sizeof(path), v.card_sha256);
		buf_meta_url(&b, "name", "twitter:image", base_url, path);
		buf_meta(&b, "name", "twitter:image:alt", "Waveform of a voice post by ", author->name, NULL);
	}
	head_end(&b, 0);

	buf_str(&b, "<main>\n<h1><a href=\"");
	feed_path_author(path, sizeof(path), author->handle);
	buf_url(&b, base_url, path);
	buf_str(&b, "\">");
	buf_html(&b, author->name);
	buf_str(&b, "</a> <span class=\"handle\">@");
	buf_html(&b, author->handle);
	buf_str(&b, "</span></h1>\n<article class=\"post\">\n<p class=\"text\">");
	buf_html(&b, v.text);
	buf_str(&b, "</p>\n");
	player(&b, base_url, &v, label);
	buf_str(&b, "<p class=\"meta\">");
	date_line(&b, v.date);
	buf_str(&b, "</p>\n</article>\n</main>\n");
	body_end(&b);
	return buf_finish(&b, out, out_len);
}

/* -------------------------------------------------------------- embed page */

int page_embed_html(const char *base_url, const feed_author *author, const json_t *post,
                    char **out, size_t *out_len)
{
	struct post_view v;
	struct buf b = { 0 };
	char path[256], label[PAGE_TITLE_MAX * 4 + 8];

	if (base_url == NULL || !author_ok(author) || post_view_read(post, &v) != 0)
		return SAYIN_ECORRUPT;
	one_line(v.text, PAGE_TITLE_MAX, "Voice post", label, sizeof(label));
	if (head_start(&b, base_url, author->name, label) != 0) {
		free(b.data);
		return -ENOMEM;
	}
	buf_meta(&b, "name", "robots", "noindex", NULL);
	feed_path_post(path, sizeof(path), v.id);
	buf_str(&b, "<link rel=\"canonical\" href=\"");
	buf_url(&b, base_url, path);
	buf_str(&b, "\">\n");
	head_end(&b, 1);
	/* In a frame: links open outside it. */
	buf_str(&b, "<main>\n<p class=\"who\"><a href=\"");
	buf_url(&b, base_url, path);
	buf_str(&b, "\" target=\"_blank\" rel=\"noopener\">");
	buf_html(&b, author->name);
	buf_str(&b, "</a> <span class=\"handle\">on sayin</span></p>\n<p class=\"line\">");
	buf_html(&b, label);
	buf_str(&b, "</p>\n");
	player(&b, base_url, &v, label);
	buf_str(&b, "</main>\n");
	body_end(&b);
	return buf_finish(&b, out, out_len);
}

/* ------------------------------------------------------------- author page */

int page_author_html(const char *base_url, const feed_author *author, json_t *const *posts,
                     size_t n_posts, const char *older_feed_url, char **out, size_t *out_len)
{
	struct buf b = { 0 };
	char path[256];

	if (base_url == NULL || !author_ok(author) || (posts == NULL && n_posts > 0))
		return SAYIN_ECORRUPT;
	if (head_start(&b, base_url, author->name, NULL) != 0) {
		free(b.data);
		return -ENOMEM;
	}
	buf_meta(&b, "name", "description", "Voice posts by ", author->name, NULL);
	feed_path_author(path, sizeof(path), author->handle);
	buf_str(&b, "<link rel=\"canonical\" href=\"");
	buf_url(&b, base_url, path);
	buf_str(&b, "\">\n");
	feed_link(&b, base_url, author);
	buf_meta(&b, "property", "og:site_name", "sayin", NULL);
	buf_meta(&b, "property", "og:type", "profile", NULL);
	buf_meta(&b, "property", "og:title", author->name, " on sayin", NULL);
	buf_meta(&b, "property", "og:description", "Voice posts by ", author->name, NULL);
	buf_meta_url(&b, "property", "og:url", base_url, path);
	buf_meta(&b, "name", "twitter:card", "summary", NULL);
	buf_meta(&b, "name", "twitter:title", author->name, " on sayin", NULL);
	head_end(&b, 0);

	buf_str(&b, "<main>\n<h1>");
	buf_html(&b, author->name);
	buf_str(&b, " <span class=\"handle\">@");
	buf_html(&b, author->handle);
	buf_str(&b, "</span></h1>\n<p class=\"meta\"><a href=\"");
	feed_path_feed(path, sizeof(path), author->handle);
	buf_url(&b, base_url, path);
	buf_str(&b, "\">JSON Feed</a></p>\n");
	if (n_posts == 0)
		buf_str(&b, "<p>No posts yet.</p>\n");
	buf_str(&b, "<ol class=\"posts\" id=\"posts\">\n");
	for (size_t i = 0; i < n_posts; i++) {
		struct post_view v;
		char label[PAGE_TITLE_MAX * 4 + 8];

		if (post_view_read(posts[i], &v) != 0) {
			free(b.data);
			return SAYIN_ECORRUPT;
		}
		one_line(v.text, PAGE_TITLE_MAX, "Voice post", label, sizeof(label));
		/* The same markup the script builds for older posts. */
		buf_str(&b, "<li><article class=\"post\" id=\"post-");
		buf_str(&b, v.id);
		buf_str(&b, "\" tabindex=\"-1\">\n<p class=\"text\">");
		buf_html(&b, v.text);
		buf_str(&b, "</p>\n");
		player(&b, base_url, &v, label);
		buf_str(&b, "<p class=\"meta\"><a href=\"");
		feed_path_post(path, sizeof(path), v.id);
		buf_url(&b, base_url, path);
		buf_str(&b, "\">");
		date_line(&b, v.date);
		buf_str(&b, "</a></p>\n</article></li>\n");
	}
	buf_str(&b, "</ol>\n");
	/* Hidden until the script that makes it work runs. */
	if (older_feed_url != NULL) {
		buf_str(&b, "<button type=\"button\" class=\"older\" id=\"older\" hidden data-feed=\"");
		buf_html(&b, older_feed_url);
		buf_str(&b, "\">Load older posts</button>\n");
	}
	buf_str(&b, "<p id=\"older-status\" role=\"status\" tabindex=\"-1\"></p>\n</main>\n");
	body_end(&b);
	return buf_finish(&b, out, out_len);
}

/* ------------------------------------------------------------- share card */

/* Rounded bars across the middle of a dark card, in the pages' dark-mode
 * accent colour; a 16-entry palette blends background to bar for the
 * anti-aliased edges. */
#define CARD_BARS 108
#define CARD_BAR_WIDTH 6
#define CARD_BAR_PITCH 10
#define CARD_LEFT ((PAGE_CARD_WIDTH - (CARD_BARS * CARD_BAR_PITCH - (CARD_BAR_PITCH - CARD_BAR_WIDTH))) / 2)
#define CARD_MID (PAGE_CARD_HEIGHT / 2)
#define CARD_HALF 220 /* the loudest bar's half height, caps included */
#define CARD_LEVELS 16

static const unsigned char card_bg[3] = { 0x16, 0x13, 0x1f };
static const unsigned char card_fg[3] = { 0xff, 0x6f, 0x9c };

/* The amplitude of each bar, 0..1 (the loudest bar is 1), from
 * audiowaveform JSON; 0 or SAYIN_ECORRUPT. */
static int card_amplitudes(const void *json, size_t len, double amp[CARD_BARS])
{
	json_t *doc = json_loadb(json, len, 0, NULL);
	const json_t *data = json_object_get(doc, "data");
	const json_t *version = json_object_get(doc, "version");
	const json_t *channels = json_object_get(doc, "channels");
	const json_t *length = json_object_get(doc, "length");
	json_int_t bits = json_integer_value(json_object_get(doc, "bits"));
	json_int_t ch = 1, scale = bits == 16 ? 32768 : 128;
	size_t n, pixels;
	double top = 0;
	int rc = SAYIN_ECORRUPT;

	memset(amp, 0, sizeof(double) * CARD_BARS);
	if (!json_is_object(doc) || !json_is_array(data) || !json_is_integer(version) ||
	    json_integer_value(version) < 1 || json_integer_value(version) > 2 ||
	    (bits != 8 && bits != 16))
		goto done;
	if (channels != NULL) {
		if (!json_is_integer(channels) || json_integer_value(channels) < 1 ||
		    json_integer_value(channels) > 24)
			goto done;
		ch = json_integer_value(channels);
	}
	n = json_array_size(data);
	pixels = n / (2 * (size_t)ch);
	if (n == 0 || n % (2 * (size_t)ch) != 0 ||
	    (length != NULL && (!json_is_integer(length) ||
	                        json_integer_value(length) != (json_int_t)pixels)))
		goto done;
	for (size_t bar = 0; bar < CARD_BARS; bar++) {
		size_t a = bar * pixels / CARD_BARS, z = (bar + 1) * pixels / CARD_BARS;

		if (z <= a)
			z = a + 1;
		for (size_t i = a; i < z && i < pixels; i++) {
			const json_t *lo = json_array_get(data, 2 * (size_t)ch * i);
			const json_t *hi = json_array_get(data, 2 * (size_t)ch * i + 1);
			json_int_t l = json_integer_value(lo), h = json_integer_value(hi);
			double peak;

			if (!json_is_integer(lo) || !json_is_integer(hi) || l < -scale || l >= scale ||
			    h < -scale || h >= scale)
				goto done;
			peak = (double)(-l > h ? -l : h) / (double)scale;
			if (peak > amp[bar])
				amp[bar] = peak;
		}
		if (amp[bar] > top)
			top = amp[bar];
	}
	if (top > 0) {
		for (size_t bar = 0; bar < CARD_BARS; bar++)
			amp[bar] /= top;
	}
	rc = 0;
done:
	json_decref(doc);
	return rc;
}

/* One row of palette indexes (4 bits each, high nibble first): each bar is
 * a vertical capsule; a pixel's index is its coverage in sixteenths. */
static void card_row(int y, const double amp[CARD_BARS], unsigned char *row)
{
	const double r = CARD_BAR_WIDTH / 2.0, py = y + 0.5;

	memset(row, 0, PAGE_CARD_WIDTH / 2);
	for (int bar = 0; bar < CARD_BARS; bar++) {
		double half = amp[bar] * (CARD_HALF - r);
		double y0 = CARD_MID - half, y1 = CARD_MID + half;
		double cx = CARD_LEFT + bar * CARD_BAR_PITCH + r;
		double dy = py < y0 ? y0 - py : py > y1 ? py - y1 : 0;

		if (dy > r + 1)
			continue;
		for (int x = (int)(cx - r) - 1; x <= (int)(cx + r) + 1; x++) {
			double dx = x + 0.5 - cx, cover = 0.5 - (sqrt(dx * dx + dy * dy) - r);
			int level;

			if (x < 0 || x >= PAGE_CARD_WIDTH || cover <= 0)
				continue;
			level = (int)lround((cover > 1 ? 1 : cover) * (CARD_LEVELS - 1));
			row[x / 2] |= (unsigned char)(x % 2 == 0 ? level << 4 : level);
		}
	}
}

/* PNG bytes collected in memory. */
struct card_sink {
	unsigned char *data;
	size_t len, cap;
	unsigned char row[PAGE_CARD_WIDTH / 2];
};

static void card_write(png_structp png, png_bytep bytes, png_size_t n)
{
	struct card_sink *s = png_get_io_ptr(png);

	if (s->len + n > s->cap) {
		size_t cap = s->cap ? s->cap : 16384;
		unsigned char *p;
		while (cap < s->len + n)
			cap *= 2;
		p = realloc(s->data, cap);
		if (p == NULL)
			png_error(png, "out of memory");
		s->data = p;
		s->cap = cap;
	}
	memcpy(s->data + s->len, bytes, n);
	s->len += n;
}

static void card_flush(png_structp png)
{
	(void)png;
}

static void card_error(png_structp png, png_const_charp msg)
{
	log_error("page: libpng: %s", msg);
	png_longjmp(png, 1);
}

static void card_warning(png_structp png, png_const_charp msg)
{
	(void)png;
	log_warn("page: libpng: %s", msg);
}

int page_card_png(const void *waveform_json, size_t waveform_len, unsigned char **out,
                  size_t *out_len)
{
	double amp[CARD_BARS] = { 0 };
	png_color palette[CARD_LEVELS];
	struct card_sink *sink;
	png_structp png;
	png_infop info;

	if (waveform_json != NULL && card_amplitudes(waveform_json, waveform_len, amp) != 0)
		return SAYIN_ECORRUPT;
	for (int i = 0; i < CARD_LEVELS; i++) {
		palette[i].red = (png_byte)(card_bg[0] + (card_fg[0] - card_bg[0]) * i / (CARD_LEVELS - 1));
		palette[i].green = (png_byte)(card_bg[1] + (card_fg[1] - card_bg[1]) * i / (CARD_LEVELS - 1));
		palette[i].blue = (png_byte)(card_bg[2] + (card_fg[2] - card_bg[2]) * i / (CARD_LEVELS - 1));
	}
	/* On the heap: libpng longjmps back here, and nothing the error path
	 * reads may live in a local the jump leaves indeterminate. */
	sink = calloc(1, sizeof(*sink));
	if (sink == NULL)
		return -ENOMEM;
	png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, card_error, card_warning);
	info = png != NULL ? png_create_info_struct(png) : NULL;
	if (png == NULL || info == NULL) {
		png_destroy_write_struct(&png, &info);
		free(sink);
		return -ENOMEM;
	}
	if (setjmp(png_jmpbuf(png))) {
		png_destroy_write_struct(&png, &info);
		free(sink->data);
		free(sink);
		return -ENOMEM;
	}
	png_set_write_fn(png, sink, card_write, card_flush);
	png_set_IHDR(png, info, PAGE_CARD_WIDTH, PAGE_CARD_HEIGHT, 4, PNG_COLOR_TYPE_PALETTE,
	             PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	png_set_PLTE(png, info, palette, CARD_LEVELS);
	/* Palette images compress best unfiltered; no tIME or text chunk is
	 * written, so the bytes depend on the waveform alone. */
	png_set_filter(png, 0, PNG_FILTER_NONE);
	png_set_compression_level(png, 9);
	png_write_info(png, info);
	for (int y = 0; y < PAGE_CARD_HEIGHT; y++) {
		card_row(y, amp, sink->row);
		png_write_row(png, sink->row);
	}
	png_write_end(png, NULL);
	png_destroy_write_struct(&png, &info);
	*out = sink->data;
	*out_len = sink->len;
	free(sink);
	return 0;
}

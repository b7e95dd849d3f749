/* page: the post, embed and author HTML pages (the share card: card.c). */
#include "render/page.h"

#include "core/buf.h"
#include "core/error.h"
#include "render/assets.h"
#include "render/record.h"

#include <errno.h>
#include <stdarg.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STR_(x) #x
#define STR(x) STR_(x)

/* ------------------------------------------------------------------ paths */

int page_path_embed(char *dst, size_t len, const char *id)
{
	int n = snprintf(dst, len, "/p/%s/embed", id);
	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

int page_path_card(char *dst, size_t len, const char *sha256_hex)
{
	int n = snprintf(dst, len, "/a/%s.png", sha256_hex);
	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

/* ------------------------------------------------------------ HTML output */

/* Escapes text for element content and double- or single-quoted attribute
 * values. C0 controls other than tab, newline and carriage return are
 * dropped: HTML forbids them. s is UTF-8 (jansson checked it). */
static void html_text(buf *b, const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		switch (c) {
		case '&': buf_puts(b, "&amp;"); break;
		case '<': buf_puts(b, "&lt;"); break;
		case '>': buf_puts(b, "&gt;"); break;
		case '"': buf_puts(b, "&quot;"); break;
		case '\'': buf_puts(b, "&#39;"); break;
		default:
			if (c >= 0x20 || c == '\t' || c == '\n' || c == '\r')
				buf_putc(b, *s);
			break;
		}
	}
}

/* base_url + path, escaped for an attribute. */
static void html_url(buf *b, const char *base_url, const char *path)
{
	html_text(b, base_url);
	html_text(b, path);
}

/* <meta ATTR="KEY" content="...">: the NULL-terminated values after key,
 * escaped and joined. */
static void html_meta(buf *b, const char *attr, const char *key, ...)
{
	va_list ap;
	const char *part;

	buf_puts(b, "<meta ");
	buf_puts(b, attr);
	buf_puts(b, "=\"");
	buf_puts(b, key);
	buf_puts(b, "\" content=\"");
	va_start(ap, key);
	while ((part = va_arg(ap, const char *)) != NULL)
		html_text(b, part);
	va_end(ap);
	buf_puts(b, "\">\n");
}

static void html_meta_url(buf *b, const char *attr, const char *key, const char *base_url,
                         const char *path)
{
	buf_puts(b, "<meta ");
	buf_puts(b, attr);
	buf_puts(b, "=\"");
	buf_puts(b, key);
	buf_puts(b, "\" content=\"");
	html_url(b, base_url, path);
	buf_puts(b, "\">\n");
}

/* Hands the page to the caller, or frees it after a failed append. */
static int html_finish(buf *b, char **out, size_t *out_len)
{
	if (buf_failed(b)) {
		buf_free(b);
		return -ENOMEM;
	}
	*out = buf_take(b, out_len);
	return 0;
}

/* ---------------------------------------------------------------- records */

#define PAGE_TITLE_MAX 80        /* characters: <title>, labels, the embed's line */
#define PAGE_DESCRIPTION_MAX 300 /* characters: og:description */

static int author_ok(const feed_author *author)
{
	return author != NULL && author->handle != NULL && author->name != NULL &&
	       author->handle[0] != '\0';
}

/* text on one line (runs of white space and controls become one space),
 * cut after max characters (at a word when one ends in the last quarter,
 * then "…"), or fallback when nothing is left (then returns 1, else 0).
 * dst holds max * 4 + 4 bytes. */
static int one_line(const char *text, size_t max, const char *fallback, char *dst, size_t len)
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
			dst[n++] = ' ';
			chars++;
			space = 0;
		}
		size_t i = 0;
		for (; i < k && p[i] != '\0'; i++)
			dst[n++] = (char)p[i];
		p += i;
		chars++;
	}
	if (cut && last_space > n * 3 / 4)
		n = last_space;
	if (n == 0) {
		snprintf(dst, len, "%s", fallback);
		return 1;
	}
	if (cut) {
		memcpy(dst + n, "\xe2\x80\xa6", 3); /* U+2026 … */
		n += 3;
	}
	dst[n] = '\0';
	return 0;
}

/* "2026-01-02T03:04:05Z" -> "2 Jan 2026" (the date where it was posted; the
 * script shows the reader's local date and time). Anything else is kept. */
static void human_date(const char *rfc3339, char *dst, size_t len)
{
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
		                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	int y, m, d, used = 0;

	if (sscanf(rfc3339, "%4d-%2d-%2d%n", &y, &m, &d, &used) == 3 && used == 10 && m >= 1 &&
	    m <= 12 && d >= 1 && d <= 31)
		snprintf(dst, len, "%d %s %d", d, months[m - 1], y);
	else
		snprintf(dst, len, "%s", rfc3339);
}

/* ------------------------------------------------------------------ heads */

/* "sha256-BASE64" of s, for a CSP source; 0 or -ENOMEM. */
static int csp_hash(const char *s, size_t s_len, char *out, size_t len)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;

	if (len < 7 + 45 || EVP_Digest(s, s_len, md, &md_len, EVP_sha256(), NULL) != 1)
		return -ENOMEM;
	memcpy(out, "sha256-", 7);
	EVP_EncodeBlock((unsigned char *)out + 7, md, (int)md_len);
	return 0;
}

/* The origin (scheme://host[:port]) of base_url, for CSP sources. */
static void url_origin(const char *url, char *dst, size_t len)
{
	const char *host = strstr(url, "://");
	size_t n = host != NULL ? (size_t)(host - url) + 3 + strcspn(host + 3, "/?#") : strlen(url);

	if (n >= len)
		n = len - 1;
	memcpy(dst, url, n);
	dst[n] = '\0';
}

/* doctype to the end of the shared head elements, with the title "NAME on
 * sayin: “LABEL”" (no label: "NAME on sayin"); the caller adds its tags and
 * closes the head with head_end. */
static int head_start(buf *b, const char *base_url, const char *name, const char *label)
{
	char script_hash[64], style_hash[64], origin[256];

	if (csp_hash(assets_player_js, assets_player_js_len, script_hash, sizeof(script_hash)) != 0 ||
	    csp_hash(assets_style_css, assets_style_css_len, style_hash, sizeof(style_hash)) != 0)
		return -ENOMEM;
	url_origin(base_url, origin, sizeof(origin));
	buf_puts(b, "<!doctype html>\n<html lang=\"und\">\n<head>\n<meta charset=\"utf-8\">\n"
	           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
	/* Only our own script and style run, and nothing is fetched from a third party. */
	buf_puts(b, "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
	           "script-src '");
	buf_puts(b, script_hash);
	buf_puts(b, "'; style-src '");
	buf_puts(b, style_hash);
	buf_puts(b, "'; img-src 'self' data: ");
	html_text(b, origin);
	buf_puts(b, "; media-src 'self' ");
	html_text(b, origin);
	buf_puts(b, "; connect-src 'self' ");
	html_text(b, origin);
	buf_puts(b, "; base-uri 'none'; form-action 'none'\">\n");
	/* No favicon request. */
	buf_puts(b, "<link rel=\"icon\" href=\"data:,\">\n<title>");
	html_text(b, name);
	buf_puts(b, " on sayin");
	if (label != NULL) {
		buf_puts(b, ": \xe2\x80\x9c"); /* “label” */
		html_text(b, label);
		buf_puts(b, "\xe2\x80\x9d");
	}
	buf_puts(b, "</title>\n");
	return 0;
}

static void head_end(buf *b, int embed)
{
	buf_puts(b, "<style>");
	buf_append(b, assets_style_css, assets_style_css_len);
	buf_puts(b, "</style>\n</head>\n");
	buf_puts(b, embed ? "<body class=\"embed\">\n" : "<body>\n");
}

static void body_end(buf *b)
{
	buf_puts(b, "<script>");
	buf_append(b, assets_player_js, assets_player_js_len);
	buf_puts(b, "</script>\n</body>\n</html>\n");
}

static void feed_link(buf *b, const char *base_url, const feed_author *author)
{
	char path[256];

	feed_path_feed(path, sizeof(path), author->handle);
	buf_puts(b, "<link rel=\"alternate\" type=\"" FEED_CONTENT_TYPE "\" title=\"");
	html_text(b, author->name);
	buf_puts(b, " on sayin\" href=\"");
	html_url(b, base_url, path);
	buf_puts(b, "\">\n");
}

static void canonical_link(buf *b, const char *base_url, const char *path)
{
	buf_puts(b, "<link rel=\"canonical\" href=\"");
	html_url(b, base_url, path);
	buf_puts(b, "\">\n");
}

/* What the post and author pages share: the description, the canonical
 * URL (path), the feed link, and the Open Graph basics (Facebook, most link
 * previews). The description is desc followed by desc_more. */
static void share_head(buf *b, const char *base_url, const char *path,
                       const feed_author *author, const char *og_type, const char *desc,
                       const char *desc_more)
{
	html_meta(b, "name", "description", desc, desc_more, NULL);
	canonical_link(b, base_url, path);
	feed_link(b, base_url, author);
	html_meta(b, "property", "og:site_name", "sayin", NULL);
	html_meta(b, "property", "og:type", og_type, NULL);
	html_meta(b, "property", "og:title", author->name, " on sayin", NULL);
	html_meta(b, "property", "og:description", desc, desc_more, NULL);
	html_meta_url(b, "property", "og:url", base_url, path);
}

/* ----------------------------------------------------------------- player */

/* <source src="BASE_URL+PATH" type="MIME"> and a newline. */
static void source_tag(buf *b, const char *base_url, const char *path, const char *mime)
{
	buf_puts(b, "<source src=\"");
	html_url(b, base_url, path);
	buf_puts(b, "\" type=\"");
	html_text(b, mime);
	buf_puts(b, "\">\n");
}

/* The .player box: <audio controls preload="metadata"> with the Opus source
 * first (browsers take the first they can play) and the M4A second; the
 * script replaces the browser's controls with its own. label names the post
 * for screen readers. */
static void player(buf *b, const char *base_url, const record_view *v,
                   const char *label)
{
	char path[256], num[32];

	buf_puts(b, "<div class=\"player\"");
	if (v->waveform_sha256 != NULL) {
		feed_path_waveform(path, sizeof(path), v->waveform_sha256);
		buf_puts(b, " data-waveform=\"");
		html_url(b, base_url, path);
		buf_puts(b, "\"");
	}
	snprintf(num, sizeof(num), "%.3f", v->duration);
	buf_puts(b, " data-duration=\"");
	buf_puts(b, num);
	buf_puts(b, "\">\n<audio controls preload=\"metadata\" aria-label=\"Voice post: ");
	html_text(b, label);
	buf_puts(b, "\">\n");
	feed_path_audio(path, sizeof(path), v->audio_sha256);
	source_tag(b, base_url, path, v->audio_mime);
	if (v->fallback_sha256 != NULL) {
		feed_path_fallback(path, sizeof(path), v->fallback_sha256);
		source_tag(b, base_url, path, v->fallback_mime);
	}
	buf_puts(b, "<a href=\"");
	feed_path_audio(path, sizeof(path), v->audio_sha256);
	html_url(b, base_url, path);
	buf_puts(b, "\">Download the audio</a>\n</audio>\n</div>\n");
}

static void date_line(buf *b, const char *date)
{
	char human[64];

	human_date(date, human, sizeof(human));
	buf_puts(b, "<time datetime=\"");
	html_text(b, date);
	buf_puts(b, "\">");
	html_text(b, human);
	buf_puts(b, "</time>");
}

/* --------------------------------------------------------------- post page */

int page_post_html(const char *base_url, const feed_author *author, const json_t *post,
                   char **out, size_t *out_len)
{
	record_view v;
	buf b = BUF_INIT;
	char path[256], label[PAGE_TITLE_MAX * 4 + 8], desc[PAGE_DESCRIPTION_MAX * 4 + 8];
	const char *desc_by = "";

	if (base_url == NULL || !author_ok(author) || record_view_read(post, &v) != 0)
		return SAYIN_ECORRUPT;
	one_line(v.text, PAGE_TITLE_MAX, "Voice post", label, sizeof(label));
	/* No text: "A voice post by NAME". */
	if (one_line(v.text, PAGE_DESCRIPTION_MAX, "A voice post by ", desc, sizeof(desc)))
		desc_by = author->name;

	if (head_start(&b, base_url, author->name, label) != 0) {
		buf_free(&b);
		return -ENOMEM;
	}
	feed_path_post(path, sizeof(path), v.id);
	share_head(&b, base_url, path, author, "article", desc, desc_by);
	html_meta(&b, "property", "article:published_time", v.date, NULL);
	feed_path_audio(path, sizeof(path), v.audio_sha256);
	html_meta_url(&b, "property", "og:audio", base_url, path);
	html_meta(&b, "property", "og:audio:type", v.audio_mime, NULL);
	if (v.fallback_sha256 != NULL) {
		feed_path_fallback(path, sizeof(path), v.fallback_sha256);
		html_meta_url(&b, "property", "og:audio", base_url, path);
		html_meta(&b, "property", "og:audio:type", v.fallback_mime, NULL);
	}
	if (v.card_sha256 != NULL) {
		page_path_card(path, sizeof(path), v.card_sha256);
		html_meta_url(&b, "property", "og:image", base_url, path);
		html_meta(&b, "property", "og:image:type", PAGE_CARD_TYPE, NULL);
		html_meta(&b, "property", "og:image:width", STR(PAGE_CARD_WIDTH), NULL);
		html_meta(&b, "property", "og:image:height", STR(PAGE_CARD_HEIGHT), NULL);
		html_meta(&b, "property", "og:image:alt", "Waveform of a voice post by ", author->name, NULL);
	}

	/* The X player card: the embed page in a frame; the stream is the MP4
	 * rendition when there is one (X plays MP4 streams, not Ogg). */
	html_meta(&b, "name", "twitter:card", "player", NULL);
	html_meta(&b, "name", "twitter:title", author->name, " on sayin", NULL);
	html_meta(&b, "name", "twitter:description", desc, desc_by, NULL);
	page_path_embed(path, sizeof(path), v.id);
	html_meta_url(&b, "name", "twitter:player", base_url, path);
	html_meta(&b, "name", "twitter:player:width", STR(PAGE_EMBED_WIDTH), NULL);
	html_meta(&b, "name", "twitter:player:height", STR(PAGE_EMBED_HEIGHT), NULL);
	if (v.fallback_sha256 != NULL)
		feed_path_fallback(path, sizeof(path), v.fallback_sha256);
	else
		feed_path_audio(path, sizeof(path), v.audio_sha256);
	html_meta_url(&b, "name", "twitter:player:stream", base_url, path);
	html_meta(&b, "name", "twitter:player:stream:content_type",
	         v.fallback_sha256 != NULL ? v.fallback_mime : v.audio_mime, NULL);
	if (v.card_sha256 != NULL) {
		page_path_card(path, sizeof(path), v.card_sha256);
		html_meta_url(&b, "name", "twitter:image", base_url, path);
		html_meta(&b, "name", "twitter:image:alt", "Waveform of a voice post by ", author->name, NULL);
	}
	head_end(&b, 0);

	buf_puts(&b, "<main>\n<h1><a href=\"");
	feed_path_author(path, sizeof(path), author->handle);
	html_url(&b, base_url, path);
	buf_puts(&b, "\">");
	html_text(&b, author->name);
	buf_puts(&b, "</a> <span class=\"handle\">@");
	html_text(&b, author->handle);
	buf_puts(&b, "</span></h1>\n<article class=\"post\">\n<p class=\"text\">");
	html_text(&b, v.text);
	buf_puts(&b, "</p>\n");
	player(&b, base_url, &v, label);
	buf_puts(&b, "<p class=\"meta\">");
	date_line(&b, v.date);
	buf_puts(&b, "</p>\n</article>\n</main>\n");
	body_end(&b);
	return html_finish(&b, out, out_len);
}

/* -------------------------------------------------------------- embed page */

int page_embed_html(const char *base_url, const feed_author *author, const json_t *post,
                    char **out, size_t *out_len)
{
	record_view v;
	buf b = BUF_INIT;
	char path[256], label[PAGE_TITLE_MAX * 4 + 8];

	if (base_url == NULL || !author_ok(author) || record_view_read(post, &v) != 0)
		return SAYIN_ECORRUPT;
	one_line(v.text, PAGE_TITLE_MAX, "Voice post", label, sizeof(label));
	if (head_start(&b, base_url, author->name, label) != 0) {
		buf_free(&b);
		return -ENOMEM;
	}
	html_meta(&b, "name", "robots", "noindex", NULL);
	feed_path_post(path, sizeof(path), v.id);
	canonical_link(&b, base_url, path);
	head_end(&b, 1);
	/* In a frame: links open outside it. */
	buf_puts(&b, "<main>\n<p class=\"who\"><a href=\"");
	html_url(&b, base_url, path);
	buf_puts(&b, "\" target=\"_blank\" rel=\"noopener\">");
	html_text(&b, author->name);
	buf_puts(&b, "</a> <span class=\"handle\">on sayin</span></p>\n<p class=\"line\">");
	html_text(&b, label);
	buf_puts(&b, "</p>\n");
	player(&b, base_url, &v, label);
	buf_puts(&b, "</main>\n");
	body_end(&b);
	return html_finish(&b, out, out_len);
}

/* ------------------------------------------------------------- author page */

int page_author_html(const char *base_url, const feed_author *author, json_t *const *posts,
                     size_t n_posts, const char *older_feed_url, char **out, size_t *out_len)
{
	buf b = BUF_INIT;
	char path[256];

	if (base_url == NULL || !author_ok(author) || (posts == NULL && n_posts > 0))
		return SAYIN_ECORRUPT;
	if (head_start(&b, base_url, author->name, NULL) != 0) {
		buf_free(&b);
		return -ENOMEM;
	}
	feed_path_author(path, sizeof(path), author->handle);
	share_head(&b, base_url, path, author, "profile", "Voice posts by ", author->name);
	html_meta(&b, "name", "twitter:card", "summary", NULL);
	html_meta(&b, "name", "twitter:title", author->name, " on sayin", NULL);
	head_end(&b, 0);

	buf_puts(&b, "<main>\n<h1>");
	html_text(&b, author->name);
	buf_puts(&b, " <span class=\"handle\">@");
	html_text(&b, author->handle);
	buf_puts(&b, "</span></h1>\n");
	if (author->bio != NULL && *author->bio != '\0') {
		buf_puts(&b, "<p class=\"bio\">");
		html_text(&b, author->bio);
		buf_puts(&b, "</p>\n");
	}
	buf_puts(&b, "<p class=\"meta\"><a href=\"");
	feed_path_feed(path, sizeof(path), author->handle);
	html_url(&b, base_url, path);
	buf_puts(&b, "\">JSON Feed</a></p>\n");
	if (n_posts == 0)
		buf_puts(&b, "<p>No posts yet.</p>\n");
	buf_puts(&b, "<ol class=\"posts\" id=\"posts\">\n");
	for (size_t i = 0; i < n_posts; i++) {
		record_view v;
		char label[PAGE_TITLE_MAX * 4 + 8];

		if (record_view_read(posts[i], &v) != 0) {
			buf_free(&b);
			return SAYIN_ECORRUPT;
		}
		one_line(v.text, PAGE_TITLE_MAX, "Voice post", label, sizeof(label));
		/* The same markup the script builds for older posts. */
		buf_puts(&b, "<li><article class=\"post\" id=\"post-");
		buf_puts(&b, v.id);
		buf_puts(&b, "\" tabindex=\"-1\">\n<p class=\"text\">");
		html_text(&b, v.text);
		buf_puts(&b, "</p>\n");
		player(&b, base_url, &v, label);
		buf_puts(&b, "<p class=\"meta\"><a href=\"");
		feed_path_post(path, sizeof(path), v.id);
		html_url(&b, base_url, path);
		buf_puts(&b, "\">");
		date_line(&b, v.date);
		buf_puts(&b, "</a></p>\n</article></li>\n");
	}
	buf_puts(&b, "</ol>\n");
	/* Hidden until the script that makes it work runs. */
	if (older_feed_url != NULL) {
		buf_puts(&b, "<button type=\"button\" class=\"older\" id=\"older\" hidden data-feed=\"");
		html_text(&b, older_feed_url);
		buf_puts(&b, "\">Load older posts</button>\n");
	}
	buf_puts(&b, "<p id=\"older-status\" role=\"status\" tabindex=\"-1\"></p>\n</main>\n");
	body_end(&b);
	return html_finish(&b, out, out_len);
}

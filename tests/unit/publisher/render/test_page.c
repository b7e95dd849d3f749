/* test_page: the post, embed and author pages (escaping, absolute URLs,
 * every social tag, source order, the card present or absent, the CSP that
 * lets the inline script run) and the PNG share card (parses, 1200x630,
 * draws the waveform, deterministic), and corrupt records. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "render/page.h"

#include <errno.h>
#include <openssl/evp.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BASE "https://cdn.example"
#define H_AUDIO "aaaa0000aaaa0000aaaa0000aaaa0000aaaa0000aaaa0000aaaa0000aaaa0000"
#define H_M4A "bbbb1111bbbb1111bbbb1111bbbb1111bbbb1111bbbb1111bbbb1111bbbb1111"
#define H_WAVE "cccc2222cccc2222cccc2222cccc2222cccc2222cccc2222cccc2222cccc2222"
#define H_CARD "dddd3333dddd3333dddd3333dddd3333dddd3333dddd3333dddd3333dddd3333"
#define OPUS_TYPE "audio/ogg; codecs=opus"

static const feed_author ann = { "ann", "Ann Example", NULL };

/* A complete record: fallback, waveform and, when with_card, a card. */
static json_t *record(const char *id, const char *text, int with_card)
{
	json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s, s:i, s:f},"
	                      " s:{s:s, s:s, s:i}, s:{s:s, s:i, s:i}}",
	                      "id", id, "author", "ann", "text", text, "date_published",
	                      "2026-01-02T03:04:05.678Z", "audio", "sha256", H_AUDIO, "mime_type",
	                      OPUS_TYPE, "size_in_bytes", 1234, "duration_in_seconds", 2.5,
	                      "fallback", "sha256", H_M4A, "mime_type", "audio/mp4",
	                      "size_in_bytes", 2345, "waveform", "sha256", H_WAVE,
	                      "size_in_bytes", 4000, "points", 1000);
	assert_non_null(j);
	if (with_card)
		assert_int_equal(json_object_set_new(j, "card", json_pack("{s:s}", "sha256", H_CARD)),
		                 0);
	return j;
}

static char *post_html(const json_t *rec)
{
	char *out = NULL;
	size_t len = 0;
	assert_int_equal(page_post_html(BASE, &ann, rec, &out, &len), 0);
	assert_non_null(out);
	assert_int_equal(strlen(out), len);
	return out;
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;
	for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
		n++;
	return n;
}

/* The content of <meta ATTR="KEY" content="...">, exactly one such tag. */
static char *meta(const char *html, const char *attr, const char *key)
{
	char open[128];
	const char *p, *q;
	char *v;

	snprintf(open, sizeof(open), "<meta %s=\"%s\" content=\"", attr, key);
	p = strstr(html, open);
	if (p == NULL)
		fail_msg("no %s", open);
	assert_null(strstr(p + 1, open));
	p += strlen(open);
	q = strchr(p, '"');
	assert_non_null(q);
	v = strndup(p, (size_t)(q - p));
	assert_non_null(v);
	return v;
}

static void assert_meta(const char *html, const char *attr, const char *key, const char *want)
{
	char *v = meta(html, attr, key);
	if (strcmp(v, want) != 0)
		fail_msg("%s: \"%s\", want \"%s\"", key, v, want);
	free(v);
}

static void test_post_escapes_text(void **state)
{
	(void)state;
	feed_author evil = { "ann", "Ann <b>&\"'", NULL };
	json_t *rec = record("01", "<script>alert(1)</script> \"q\" & 'a' caf\xc3\xa9 "
	                           "\xf0\x9f\x8e\x99\xef\xb8\x8f\x01" "end",
	                     1);
	char *out = NULL;
	size_t len;

	assert_int_equal(page_post_html(BASE, &evil, rec, &out, &len), 0);
	assert_non_null(strstr(out, "<p class=\"text\">&lt;script&gt;alert(1)&lt;/script&gt; "
	                            "&quot;q&quot; &amp; &#39;a&#39; caf\xc3\xa9 "
	                            "\xf0\x9f\x8e\x99\xef\xb8\x8f" "end</p>"));
	/* Only the page's own script; no raw markup from the text or name. */
	assert_int_equal(count(out, "<script"), 1);
	assert_null(strstr(out, "<b>"));
	assert_null(strstr(out, "\x01"));
	assert_non_null(strstr(out, ">Ann &lt;b&gt;&amp;&quot;&#39;</a>"));
	/* In attributes too. */
	assert_non_null(strstr(out, "aria-label=\"Voice post: &lt;script&gt;"));
	assert_meta(out, "property", "og:title", "Ann &lt;b&gt;&amp;&quot;&#39; on sayin");
	free(out);
	json_decref(rec);
}

static void test_post_every_social_tag_absolute(void **state)
{
	(void)state;
	json_t *rec = record("01abc", "Hello fans", 1);
	char *out = post_html(rec);

	assert_meta(out, "property", "og:title", "Ann Example on sayin");
	assert_meta(out, "property", "og:description", "Hello fans");
	assert_meta(out, "property", "og:url", BASE "/p/01abc");
	assert_meta(out, "property", "og:type", "article");
	assert_int_equal(count(out, "<meta property=\"og:audio\""), 2);
	assert_non_null(strstr(out, "<meta property=\"og:audio\" content=\"" BASE "/a/" H_AUDIO
	                            ".opus\">\n<meta property=\"og:audio:type\" content=\"" OPUS_TYPE
	                            "\">\n<meta property=\"og:audio\" content=\"" BASE "/a/" H_M4A
	                            ".m4a\">\n<meta property=\"og:audio:type\" content=\"audio/mp4\">"));
	assert_meta(out, "property", "og:image", BASE "/a/" H_CARD ".png");
	assert_meta(out, "property", "og:image:width", "1200");
	assert_meta(out, "property", "og:image:height", "630");
	assert_meta(out, "name", "twitter:card", "player");
	assert_meta(out, "name", "twitter:title", "Ann Example on sayin");
	assert_meta(out, "name", "twitter:player", BASE "/p/01abc/embed");
	assert_meta(out, "name", "twitter:player:width", "480");
	assert_meta(out, "name", "twitter:player:height", "200");
	/* X plays MP4 streams: the fallback when there is one. */
	assert_meta(out, "name", "twitter:player:stream", BASE "/a/" H_M4A ".m4a");
	assert_meta(out, "name", "twitter:player:stream:content_type", "audio/mp4");
	assert_meta(out, "name", "twitter:image", BASE "/a/" H_CARD ".png");
	assert_non_null(strstr(out, "<link rel=\"alternate\" type=\"application/feed+json\" "
	                            "title=\"Ann Example on sayin\" href=\"" BASE
	                            "/u/ann/feed.json\">"));
	assert_non_null(strstr(out, "<link rel=\"canonical\" href=\"" BASE "/p/01abc\">"));
	assert_non_null(strstr(out, "<meta name=\"viewport\" content=\"width=device-width, "
	                            "initial-scale=1\">"));
	assert_non_null(strstr(out, "<time datetime=\"2026-01-02T03:04:05.678Z\">2 Jan 2026</time>"));
	assert_non_null(strstr(out, "<h1><a href=\"" BASE "/u/ann/\">Ann Example</a>"));

	/* Every URL in an attribute is absolute and on the base. */
	for (const char *p = strstr(out, "=\"http"); p != NULL; p = strstr(p + 1, "=\"http"))
		assert_int_equal(strncmp(p + 2, BASE "/", strlen(BASE) + 1), 0);
	assert_null(strstr(out, "=\"/"));
	free(out);
	json_decref(rec);
}

static void test_post_sources_in_order(void **state)
{
	(void)state;
	json_t *rec = record("01", "x", 0);
	char *out = post_html(rec);
	const char *audio = strstr(out, "<audio controls preload=\"metadata\"");
	const char *opus = strstr(out, "<source src=\"" BASE "/a/" H_AUDIO ".opus\" type=\"" OPUS_TYPE
	                               "\">");
	const char *m4a = strstr(out, "<source src=\"" BASE "/a/" H_M4A ".m4a\" type=\"audio/mp4\">");

	assert_non_null(audio);
	assert_non_null(opus);
	assert_non_null(m4a);
	assert_true(audio < opus && opus < m4a);
	assert_true(m4a < strstr(out, "</audio>"));
	assert_int_equal(count(out, "<source "), 2);
	assert_non_null(strstr(out, "<div class=\"player\" data-waveform=\"" BASE "/a/" H_WAVE
	                            ".json\" data-duration=\"2.500\">"));
	free(out);
	json_decref(rec);
}

static void test_post_without_fallback_or_waveform(void **state)
{
	(void)state;
	json_t *rec = record("01", "", 0);
	char *out;

	json_object_del(rec, "fallback");
	json_object_del(rec, "waveform");
	out = post_html(rec);
	assert_int_equal(count(out, "<source "), 1);
	assert_int_equal(count(out, "<meta property=\"og:audio\""), 1);
	assert_meta(out, "name", "twitter:player:stream", BASE "/a/" H_AUDIO ".opus");
	assert_meta(out, "name", "twitter:player:stream:content_type", OPUS_TYPE);
	assert_null(strstr(out, " data-waveform=\""));
	/* No text: a description and title that still say something. */
	assert_meta(out, "property", "og:description", "A voice post by Ann Example");
	assert_non_null(strstr(out, "<title>Ann Example on sayin: \xe2\x80\x9cVoice post\xe2\x80\x9d"
	                            "</title>"));
	free(out);
	json_decref(rec);
}

static void test_post_card_present_and_absent(void **state)
{
	(void)state;
	json_t *with = record("01", "x", 1), *without = record("01", "x", 0);
	char *a = post_html(with), *b = post_html(without);

	assert_int_equal(count(a, "og:image\""), 1);
	assert_int_equal(count(a, "twitter:image\""), 1);
	assert_null(strstr(b, "og:image"));
	assert_null(strstr(b, "twitter:image"));
	assert_null(strstr(b, ".png"));
	/* The rest of the player card stays. */
	assert_meta(b, "name", "twitter:card", "player");
	assert_meta(b, "name", "twitter:player", BASE "/p/01/embed");
	free(a);
	free(b);
	json_decref(with);
	json_decref(without);
}

static void test_post_long_text_title(void **state)
{
	(void)state;
	char text[1200];
	json_t *rec;
	char *out, *desc;

	/* 150 words "word" + " " + newlines now and then: 750 characters. */
	text[0] = '\0';
	for (int i = 0; i < 150; i++)
		strcat(text, i % 10 == 9 ? "word\n" : "word ");
	rec = record("01", text, 0);
	out = post_html(rec);
	/* The title keeps 80 characters at most, on one line, cut at a word. */
	assert_non_null(strstr(out, "<title>Ann Example on sayin: \xe2\x80\x9cword word"));
	assert_non_null(strstr(out, "word\xe2\x80\xa6\xe2\x80\x9d</title>"));
	desc = meta(out, "property", "og:description");
	assert_null(strchr(desc, '\n'));
	assert_true(strlen(desc) <= 300 + 3);
	assert_true(strlen(desc) > 250);
	free(desc);
	/* The page's text keeps its line breaks. */
	assert_non_null(strstr(out, "word\nword"));
	free(out);
	json_decref(rec);
}

/* "sha256-BASE64" of the text between open and close in html. */
static void hash_of(const char *html, const char *open, const char *close, char *out)
{
	const char *p = strstr(html, open), *q;
	unsigned char md[32];
	unsigned int n;

	assert_non_null(p);
	p += strlen(open);
	q = strstr(p, close);
	assert_non_null(q);
	assert_int_equal(EVP_Digest(p, (size_t)(q - p), md, &n, EVP_sha256(), NULL), 1);
	strcpy(out, "sha256-");
	EVP_EncodeBlock((unsigned char *)out + 7, md, (int)n);
}

/* The CSP allows exactly the inline script and style the page holds, and
 * nothing from a third party. */
static void test_csp_allows_own_script_and_style(void **state)
{
	(void)state;
	json_t *rec = record("01", "x", 1);
	char *pages[3];
	size_t len;
	char script[64], style[64], want[256];

	pages[0] = post_html(rec);
	assert_int_equal(page_embed_html(BASE, &ann, rec, &pages[1], &len), 0);
	assert_int_equal(page_author_html(BASE, &ann, &rec, 1, NULL, &pages[2], &len), 0);
	for (int i = 0; i < 3; i++) {
		const char *csp = strstr(pages[i], "<meta http-equiv=\"Content-Security-Policy\" "
		                                   "content=\"default-src 'none'; ");
		assert_non_null(csp);
		hash_of(pages[i], "<script>", "</script>", script);
		hash_of(pages[i], "<style>", "</style>", style);
		snprintf(want, sizeof(want), "script-src '%s'; style-src '%s'; ", script, style);
		assert_non_null(strstr(csp, want));
		assert_non_null(strstr(csp, "connect-src 'self' " BASE ";"));
		assert_non_null(strstr(csp, "media-src 'self' " BASE ";"));
		assert_int_equal(count(pages[i], "<script"), 1);
		assert_null(strstr(pages[i], "<script src"));
		free(pages[i]);
	}
	json_decref(rec);
}

static void test_embed_page(void **state)
{
	(void)state;
	json_t *rec = record("01xyz", "in a frame", 1);
	char *out = NULL, buf[128];
	size_t len;

	assert_int_equal(page_embed_html(BASE, &ann, rec, &out, &len), 0);
	assert_int_equal(strlen(out), len);
	assert_non_null(strstr(out, "<body class=\"embed\">"));
	assert_non_null(strstr(out, "<audio controls preload=\"metadata\""));
	assert_true(strstr(out, ".opus\"") < strstr(out, ".m4a\""));
	/* Links leave the frame. */
	assert_non_null(strstr(out, "<a href=\"" BASE "/p/01xyz\" target=\"_blank\" "
	                            "rel=\"noopener\">Ann Example</a>"));
	assert_non_null(strstr(out, "<p class=\"line\">in a frame</p>"));
	assert_non_null(strstr(out, "<meta name=\"robots\" content=\"noindex\">"));
	free(out);
	json_decref(rec);

	assert_int_equal(page_path_embed(buf, sizeof(buf), "01xyz"), 0);
	assert_string_equal(buf, "/p/01xyz/embed");
	assert_int_equal(page_path_card(buf, sizeof(buf), H_CARD), 0);
	assert_string_equal(buf, "/a/" H_CARD ".png");
	assert_int_equal(page_path_card(buf, 10, H_CARD), -ENOSPC);
	assert_int_equal(page_path_embed(buf, 5, "01xyz"), -ENOSPC);
}

static void test_author_page(void **state)
{
	(void)state;
	json_t *posts[3] = { record("03", "third <3", 0), record("02", "second", 1),
		             record("01", "first", 0) };
	char *out = NULL;
	size_t len;
	const char *a, *b, *c;

	assert_int_equal(page_author_html(BASE, &ann, posts, 3,
	                                  BASE "/u/ann/feed/1.json?x=\"1\"&y=2", &out, &len),
	                 0);
	assert_int_equal(strlen(out), len);
	/* The caller's order: newest first. */
	a = strstr(out, "<article class=\"post\" id=\"post-03\"");
	b = strstr(out, "<article class=\"post\" id=\"post-02\"");
	c = strstr(out, "<article class=\"post\" id=\"post-01\"");
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	assert_true(a < b && b < c);
	assert_non_null(strstr(out, "<p class=\"text\">third &lt;3</p>"));
	assert_int_equal(count(out, "<audio controls preload=\"metadata\""), 3);
	assert_int_equal(count(out, "<source "), 6);
	assert_non_null(strstr(out, "<a href=\"" BASE "/p/02\"><time datetime="));
	/* Load older: a real button, the next page's URL escaped. */
	assert_non_null(strstr(out, "<button type=\"button\" class=\"older\" id=\"older\" hidden "
	                            "data-feed=\"" BASE "/u/ann/feed/1.json?x=&quot;1&quot;&amp;y=2\">"
	                            "Load older posts</button>"));
	assert_non_null(strstr(out, "<p id=\"older-status\" role=\"status\""));
	assert_non_null(strstr(out, "<link rel=\"alternate\" type=\"application/feed+json\""));
	assert_meta(out, "property", "og:url", BASE "/u/ann/");
	free(out);

	/* No older page: no button. No posts: says so. */
	assert_int_equal(page_author_html(BASE, &ann, posts, 3, NULL, &out, &len), 0);
	assert_null(strstr(out, "id=\"older\""));
	free(out);
	assert_int_equal(page_author_html(BASE, &ann, NULL, 0, NULL, &out, &len), 0);
	assert_non_null(strstr(out, "No posts yet."));
	assert_null(strstr(out, "<article"));
	assert_null(strstr(out, "class=\"bio\""));
	free(out);
	/* The bio, escaped, under the name. */
	feed_author with_bio = { "ann", "Ann Example", "I read <poems> & stories." };
	assert_int_equal(page_author_html(BASE, &with_bio, NULL, 0, NULL, &out, &len), 0);
	assert_non_null(strstr(out, "</h1>\n<p class=\"bio\">I read &lt;poems&gt; &amp; "
	                            "stories.</p>\n"));
	free(out);
	for (int i = 0; i < 3; i++)
		json_decref(posts[i]);
}

static void expect_corrupt(json_t *rec)
{
	char *out = (char *)"untouched";
	size_t len = 7;
	json_t *list[2];

	assert_int_equal(page_post_html(BASE, &ann, rec, &out, &len), SAYIN_ECORRUPT);
	assert_int_equal(page_embed_html(BASE, &ann, rec, &out, &len), SAYIN_ECORRUPT);
	/* One bad record spoils the author page. */
	list[0] = record("09", "fine", 0);
	list[1] = rec;
	assert_int_equal(page_author_html(BASE, &ann, list, 2, NULL, &out, &len), SAYIN_ECORRUPT);
	assert_string_equal(out, "untouched");
	assert_int_equal(len, 7);
	json_decref(list[0]);
	json_decref(rec);
}

static void test_corrupt_records(void **state)
{
	(void)state;
	json_t *r;

	expect_corrupt(json_pack("{s:s}", "id", "01"));
	expect_corrupt(json_string("not an object"));
	r = record("01", "x", 0);
	json_object_del(r, "id");
	expect_corrupt(r);
	r = record("01", "x", 0);
	json_object_del(r, "date_published");
	expect_corrupt(r);
	r = record("01", "x", 0);
	json_object_del(json_object_get(r, "audio"), "mime_type");
	expect_corrupt(r);
	r = record("01", "x", 0);
	json_object_set_new(json_object_get(r, "audio"), "sha256", json_string("../../etc"));
	expect_corrupt(r);
	r = record("01", "x", 0);
	json_object_set_new(json_object_get(r, "audio"), "duration_in_seconds", json_string("2"));
	expect_corrupt(r);
	r = record("01/\"x", "x", 0); /* an id that is no path segment */
	expect_corrupt(r);
	r = record("01", "x", 0);
	json_object_set_new(r, "text", json_integer(5));
	expect_corrupt(r);
	r = record("01", "x", 0);
	json_object_del(json_object_get(r, "fallback"), "mime_type");
	expect_corrupt(r);
	r = record("01", "x", 0);
	json_object_set_new(r, "card", json_object());
	expect_corrupt(r);
	r = record("01", "x", 0);
	json_object_set_new(json_object_get(r, "waveform"), "sha256", json_integer(1));
	expect_corrupt(r);
}

/* ------------------------------------------------------------------ card */

struct png_read_src {
	const unsigned char *p;
	size_t len, pos;
};

static void read_mem(png_structp png, png_bytep out, png_size_t n)
{
	struct png_read_src *s = png_get_io_ptr(png);
	if (s->pos + n > s->len)
		png_error(png, "read past the end");
	memcpy(out, s->p + s->pos, n);
	s->pos += n;
}

/* Decodes a PNG with libpng (palette expanded to RGB); returns the pixels
 * (width * height * 3) and checks the header. */
static unsigned char *decode_png(const unsigned char *png_bytes, size_t len)
{
	struct png_read_src src = { png_bytes, len, 0 };
	png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
	png_infop info = png_create_info_struct(png);
	unsigned char *volatile pixels = NULL;
	png_uint_32 w, h;
	int depth, type;

	assert_non_null(png);
	assert_non_null(info);
	if (setjmp(png_jmpbuf(png))) {
		png_destroy_read_struct(&png, &info, NULL);
		free(pixels);
		fail_msg("libpng could not decode the card");
	}
	png_set_read_fn(png, &src, read_mem);
	png_read_info(png, info);
	png_get_IHDR(png, info, &w, &h, &depth, &type, NULL, NULL, NULL);
	assert_int_equal(w, 1200);
	assert_int_equal(h, 630);
	assert_int_equal(type, PNG_COLOR_TYPE_PALETTE);
	png_set_palette_to_rgb(png);
	png_set_packing(png);
	png_read_update_info(png, info);
	assert_int_equal(png_get_rowbytes(png, info), 1200 * 3);
	pixels = malloc(1200 * 630 * 3);
	assert_non_null(pixels);
	for (int y = 0; y < 630; y++)
		png_read_row(png, pixels + (size_t)y * 1200 * 3, NULL);
	png_read_end(png, NULL);
	png_destroy_read_struct(&png, &info, NULL);
	assert_int_equal(src.pos, len);
	return pixels;
}

/* Drawn (not background) pixels in columns [x0, x1). */
static long drawn(const unsigned char *px, int x0, int x1)
{
	long n = 0;
	for (int y = 0; y < 630; y++)
		for (int x = x0; x < x1; x++) {
			const unsigned char *p = px + ((size_t)y * 1200 + (size_t)x) * 3;
			if (p[0] != px[0] || p[1] != px[1] || p[2] != px[2])
				n++;
		}
	return n;
}

/* audiowaveform JSON v2: n pixels, the first half at amplitude loud, the
 * rest at quiet. */
static char *waveform(int n, int loud, int quiet)
{
	size_t cap = 200 + (size_t)n * 10, len;
	char *s = malloc(cap);
	assert_non_null(s);
	len = (size_t)snprintf(s, cap, "{\"version\":2,\"channels\":1,\"sample_rate\":48000,"
	                               "\"samples_per_pixel\":48,\"bits\":8,\"length\":%d,\"data\":[",
	                       n);
	for (int i = 0; i < n; i++) {
		int a = i < n / 2 ? loud : quiet;
		len += (size_t)snprintf(s + len, cap - len, "%s%d,%d", i ? "," : "", -a, a);
	}
	snprintf(s + len, cap - len, "]}");
	return s;
}

/* The chunk types in file order, e.g. "IHDR PLTE IDAT IEND ". */
static void chunk_types(const unsigned char *p, size_t len, char *out, size_t out_len)
{
	size_t pos = 8;
	out[0] = '\0';
	while (pos + 12 <= len) {
		uint32_t n = (uint32_t)p[pos] << 24 | (uint32_t)p[pos + 1] << 16 |
		             (uint32_t)p[pos + 2] << 8 | p[pos + 3];
		char type[6] = { (char)p[pos + 4], (char)p[pos + 5], (char)p[pos + 6], (char)p[pos + 7],
			         ' ', '\0' };
		if (strstr(out, type) == NULL && strlen(out) + 6 < out_len)
			strcat(out, type);
		pos += 12 + n;
	}
	assert_int_equal(pos, len);
}

static void test_card_png_parses_and_draws(void **state)
{
	(void)state;
	char *wf = waveform(1000, 120, 0), types[64];
	unsigned char *png = NULL, *plain = NULL, *px, *plain_px;
	size_t len, plain_len;

	assert_int_equal(page_card_png(wf, strlen(wf), &png, &len), 0);
	assert_int_equal(memcmp(png, "\x89PNG\r\n\x1a\n", 8), 0);
	assert_int_equal(memcmp(png + 12, "IHDR", 4), 0);
	assert_int_equal(memcmp(png + 16, "\x00\x00\x04\xb0\x00\x00\x02\x76", 8), 0); /* 1200x630 */
	chunk_types(png, len, types, sizeof(types));
	assert_string_equal(types, "IHDR PLTE IDAT IEND "); /* no tIME, no text */
	assert_true(len > 500 && len < 64 * 1024);

	px = decode_png(png, len);
	/* Loud first half: tall bars; silent second half: only dots on the midline. */
	assert_true(drawn(px, 0, 600) > 20 * drawn(px, 600, 1200));
	assert_true(drawn(px, 600, 1200) > 0);
	/* A loud bar reaches far above the middle; the margins stay empty. */
	assert_true(drawn(px, 0, 60) == 0 && drawn(px, 1140, 1200) == 0);
	{
		long top_rows = 0;
		for (int y = 0; y < 150; y++)
			for (int x = 60; x < 600; x++)
				top_rows += memcmp(px + ((size_t)y * 1200 + (size_t)x) * 3, px, 3) != 0;
		assert_true(top_rows > 0);
	}

	assert_int_equal(page_card_png(NULL, 0, &plain, &plain_len), 0);
	plain_px = decode_png(plain, plain_len);
	assert_true(drawn(plain_px, 0, 1200) > 0);
	assert_true(drawn(plain_px, 0, 1200) * 10 < drawn(px, 0, 1200));
	assert_memory_equal(plain_px, px, 3); /* the same background */
	free(px);
	free(plain_px);
	free(png);
	free(plain);
	free(wf);
}

static void test_card_png_deterministic(void **state)
{
	(void)state;
	char *wf = waveform(1000, 100, 20), *other = waveform(1000, 100, 60);
	unsigned char *a = NULL, *b = NULL, *c = NULL;
	size_t la, lb, lc;

	assert_int_equal(page_card_png(wf, strlen(wf), &a, &la), 0);
	assert_int_equal(page_card_png(wf, strlen(wf), &b, &lb), 0);
	assert_int_equal(page_card_png(other, strlen(other), &c, &lc), 0);
	assert_int_equal(la, lb);
	assert_memory_equal(a, b, la);
	assert_true(la != lc || memcmp(a, c, la) != 0);
	free(a);
	free(b);
	free(c);
	free(wf);
	free(other);

	/* Few points (short audio) and 16-bit data work too. */
	wf = waveform(3, 100, 50);
	assert_int_equal(page_card_png(wf, strlen(wf), &a, &la), 0);
	free(decode_png(a, la));
	free(a);
	free(wf);
	{
		const char *w16 = "{\"version\":2,\"channels\":1,\"bits\":16,\"length\":2,"
		                  "\"data\":[-30000,30000,-100,100]}";
		assert_int_equal(page_card_png(w16, strlen(w16), &a, &la), 0);
		free(a);
	}
}

static void test_card_png_corrupt_waveform(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"not json",
		"[]",
		"{\"version\":2,\"bits\":8,\"channels\":1}",
		"{\"version\":2,\"bits\":8,\"channels\":1,\"length\":0,\"data\":[]}",
		"{\"version\":2,\"bits\":7,\"channels\":1,\"length\":1,\"data\":[-1,1]}",
		"{\"version\":3,\"bits\":8,\"channels\":1,\"length\":1,\"data\":[-1,1]}",
		"{\"version\":2,\"bits\":8,\"channels\":1,\"length\":2,\"data\":[-1,1,2]}",
		"{\"version\":2,\"bits\":8,\"channels\":1,\"length\":1,\"data\":[-1,200]}",
		"{\"version\":2,\"bits\":8,\"channels\":1,\"length\":5,\"data\":[-1,1]}",
		"{\"version\":2,\"bits\":8,\"channels\":1,\"length\":1,\"data\":[\"a\",1]}",
		"{\"version\":2,\"bits\":8,\"channels\":0,\"length\":1,\"data\":[-1,1]}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		unsigned char *out = (unsigned char *)"x";
		size_t len = 1;
		if (page_card_png(bad[i], strlen(bad[i]), &out, &len) != SAYIN_ECORRUPT)
			fail_msg("accepted: %s", bad[i]);
		assert_int_equal(len, 1);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_post_escapes_text),
		cmocka_unit_test(test_post_every_social_tag_absolute),
		cmocka_unit_test(test_post_sources_in_order),
		cmocka_unit_test(test_post_without_fallback_or_waveform),
		cmocka_unit_test(test_post_card_present_and_absent),
		cmocka_unit_test(test_post_long_text_title),
		cmocka_unit_test(test_csp_allows_own_script_and_style),
		cmocka_unit_test(test_embed_page),
		cmocka_unit_test(test_author_page),
		cmocka_unit_test(test_corrupt_records),
		cmocka_unit_test(test_card_png_parses_and_draws),
		cmocka_unit_test(test_card_png_deterministic),
		cmocka_unit_test(test_card_png_corrupt_waveform),
	};
	return cmocka_run_group_tests_name("page", tests, NULL, NULL);
}

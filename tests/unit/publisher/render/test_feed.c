/* test_feed: JSON Feed 1.1 fields, order, absolute URLs, HTML escaping, the
 * fallback attachment and the _sayin extension. Pages: test_page.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "render/feed.h"

#include <math.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static json_t *record(const char *id, const char *text, const char *date)
{
	json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s, s:i, s:f}}", "id", id, "author",
	                      "ann", "text", text, "date_published", date, "audio", "sha256",
	                      "ab12", "mime_type", "audio/ogg; codecs=opus", "size_in_bytes", 1234,
	                      "duration_in_seconds", 2.5);
	assert_non_null(j);
	return j;
}

static void test_feed_fields_and_order(void **state)
{
	(void)state;
	feed_author a = { "ann", "Ann Example", NULL };
	json_t *posts[2] = { record("02", "second", "2026-01-02T00:00:00.000Z"),
		             record("01", "first", "2026-01-01T00:00:00.000Z") };
	char *out;
	size_t len;
	json_t *doc, *items, *att;

	assert_int_equal(feed_author_json("https://cdn.example", &a, posts, 2, NULL, &out, &len), 0);
	doc = json_loadb(out, len, 0, NULL);
	/* The last page has no next_url. */
	assert_null(json_object_get(doc, "next_url"));
	assert_non_null(doc);
	assert_string_equal(json_string_value(json_object_get(doc, "version")),
	                    "https://jsonfeed.org/version/1.1");
	assert_string_equal(json_string_value(json_object_get(doc, "title")), "Ann Example on sayin");
	assert_string_equal(json_string_value(json_object_get(doc, "home_page_url")),
	                    "https://cdn.example/u/ann/");
	assert_string_equal(json_string_value(json_object_get(doc, "feed_url")),
	                    "https://cdn.example/u/ann/feed.json");
	items = json_object_get(doc, "items");
	assert_int_equal(json_array_size(items), 2);
	/* Order is the caller's (newest first), kept as given. */
	assert_string_equal(json_string_value(json_object_get(json_array_get(items, 0), "id")), "02");
	assert_string_equal(
		json_string_value(json_object_get(json_array_get(items, 0), "url")),
		"https://cdn.example/p/02");
	assert_string_equal(
		json_string_value(json_object_get(json_array_get(items, 1), "content_text")), "first");
	att = json_array_get(json_object_get(json_array_get(items, 0), "attachments"), 0);
	assert_string_equal(json_string_value(json_object_get(att, "url")),
	                    "https://cdn.example/a/ab12.opus");
	assert_string_equal(json_string_value(json_object_get(att, "mime_type")),
	                    "audio/ogg; codecs=opus");
	assert_int_equal(json_integer_value(json_object_get(att, "size_in_bytes")), 1234);
	assert_true(json_real_value(json_object_get(att, "duration_in_seconds")) == 2.5);
	json_decref(doc);
	free(out);

	/* An archive page links the older page and names the feed by its head. */
	assert_int_equal(feed_author_json("https://cdn.example", &a, posts, 1,
	                                  "https://cdn.example/u/ann/feed/3.json", &out, &len), 0);
	doc = json_loadb(out, len, 0, NULL);
	assert_non_null(doc);
	assert_string_equal(json_string_value(json_object_get(doc, "next_url")),
	                    "https://cdn.example/u/ann/feed/3.json");
	assert_string_equal(json_string_value(json_object_get(doc, "feed_url")),
	                    "https://cdn.example/u/ann/feed.json");
	assert_int_equal(json_array_size(json_object_get(doc, "items")), 1);
	json_decref(doc);
	free(out);
	json_decref(posts[0]);
	json_decref(posts[1]);
}

/* The author's bio is the feed's description; no bio, no description. */
static void test_feed_description_is_the_bio(void **state)
{
	(void)state;
	feed_author a = { "ann", "Ann", "I read <poems> aloud." };
	json_t *post = record("01", "first", "2026-01-01T00:00:00.000Z");
	char *out;
	size_t len;
	json_t *doc;

	assert_int_equal(feed_author_json("https://cdn.example", &a, &post, 1, NULL, &out, &len), 0);
	doc = json_loadb(out, len, 0, NULL);
	assert_non_null(doc);
	assert_string_equal(json_string_value(json_object_get(doc, "description")),
	                    "I read <poems> aloud.");
	json_decref(doc);
	free(out);
	for (int i = 0; i < 2; i++) {
		a.bio = i == 0 ? NULL : "";
		assert_int_equal(feed_author_json("https://cdn.example", &a, &post, 1, NULL, &out,
		                                  &len), 0);
		doc = json_loadb(out, len, 0, NULL);
		assert_null(json_object_get(doc, "description"));
		json_decref(doc);
		free(out);
	}
	json_decref(post);
}

static void test_authors_json(void **state)
{
	(void)state;
	feed_author a[2] = { { "ann", "Ann <A> \"Example\"", NULL }, { "bob", "Bob", NULL } };
	char *out, path[64];
	size_t len;
	json_t *doc, *first;

	assert_int_equal(feed_authors_json("https://cdn.example", a, 2, &out, &len), 0);
	doc = json_loadb(out, len, 0, NULL);
	assert_non_null(doc);
	assert_int_equal(json_array_size(json_object_get(doc, "authors")), 2);
	first = json_array_get(json_object_get(doc, "authors"), 0);
	assert_string_equal(json_string_value(json_object_get(first, "name")), "Ann <A> \"Example\"");
	assert_string_equal(json_string_value(json_object_get(first, "feed_url")),
	                    "https://cdn.example/u/ann/feed.json");
	assert_string_equal(json_string_value(json_object_get(first, "home_page_url")),
	                    "https://cdn.example/u/ann/");
	json_decref(doc);
	free(out);
	assert_int_equal(feed_path_page(path, sizeof(path), "ann", 12), 0);
	assert_string_equal(path, "/u/ann/feed/12.json");
	assert_int_equal(feed_path_page(path, 8, "ann", 12), -ENOSPC);
}

static void test_feed_rejects_incomplete_record(void **state)
{
	(void)state;
	feed_author a = { "ann", "Ann", NULL };
	json_t *bad = json_pack("{s:s}", "id", "01");
	char *out = NULL;
	size_t len;
	assert_int_equal(feed_author_json("http://x", &a, &bad, 1, NULL, &out, &len), SAYIN_ECORRUPT);
	assert_null(out);
	json_decref(bad);
}

/* A record with every rendition: the fallback, the waveform, the loudness. */
static json_t *full_record(const char *text)
{
	json_t *j = record("03", text, "2026-01-03T00:00:00.000Z");
	assert_int_equal(json_object_set_new(j, "fallback",
	                                     json_pack("{s:s, s:s, s:i}", "sha256", "cd34", "mime_type",
	                                               "audio/mp4", "size_in_bytes", 2345)), 0);
	assert_int_equal(json_object_set_new(j, "waveform",
	                                     json_pack("{s:s, s:i, s:i}", "sha256", "ef56",
	                                               "size_in_bytes", 5000, "points", 1000)), 0);
	assert_int_equal(json_object_set_new(j, "loudness",
	                                     json_pack("{s:f, s:f, s:f, s:f}", "input_lufs", -20.5,
	                                               "gain_db", 4.5, "true_peak_dbtp", -1.5,
	                                               "output_lufs", -16.02)), 0);
	return j;
}

static json_t *one_item(json_t *post, char **out)
{
	feed_author a = { "ann", "Ann", NULL };
	size_t len;
	json_t *doc;

	assert_int_equal(feed_author_json("https://cdn.example", &a, &post, 1, NULL, out, &len), 0);
	doc = json_loadb(*out, len, 0, NULL);
	assert_non_null(doc);
	return doc;
}

/* Opus first, the M4A fallback second with the same title; the waveform and
 * the loudness in the _sayin extension object. */
static void test_feed_fallback_and_waveform(void **state)
{
	json_t *post = full_record("Hello fans");
	char *out;
	json_t *doc = one_item(post, &out);
	json_t *item = json_array_get(json_object_get(doc, "items"), 0);
	json_t *atts = json_object_get(item, "attachments"), *opus, *m4a, *ext;

	(void)state;
	assert_int_equal(json_array_size(atts), 2);
	opus = json_array_get(atts, 0);
	m4a = json_array_get(atts, 1);
	assert_string_equal(json_string_value(json_object_get(opus, "mime_type")),
	                    "audio/ogg; codecs=opus");
	assert_string_equal(json_string_value(json_object_get(m4a, "url")),
	                    "https://cdn.example/a/cd34.m4a");
	assert_string_equal(json_string_value(json_object_get(m4a, "mime_type")), "audio/mp4");
	assert_int_equal(json_integer_value(json_object_get(m4a, "size_in_bytes")), 2345);
	assert_true(json_real_value(json_object_get(m4a, "duration_in_seconds")) == 2.5);
	assert_string_equal(json_string_value(json_object_get(opus, "title")), "Hello fans");
	assert_string_equal(json_string_value(json_object_get(m4a, "title")), "Hello fans");
	ext = json_object_get(item, "_sayin");
	assert_non_null(ext);
	assert_string_equal(json_string_value(json_object_get(ext, "waveform_url")),
	                    "https://cdn.example/a/ef56.json");
	assert_true(fabs(json_number_value(json_object_get(ext, "loudness_lufs")) - -16.02) < 1e-9);
	json_decref(doc);
	free(out);
	json_decref(post);

	/* A post without them: one attachment, no extension object. */
	post = record("01", "", "2026-01-01T00:00:00.000Z");
	doc = one_item(post, &out);
	item = json_array_get(json_object_get(doc, "items"), 0);
	assert_int_equal(json_array_size(json_object_get(item, "attachments")), 1);
	assert_null(json_object_get(item, "_sayin"));
	/* No text: a generic title. */
	assert_string_equal(json_string_value(json_object_get(
		                    json_array_get(json_object_get(item, "attachments"), 0), "title")),
	                    "Voice post");
	json_decref(doc);
	free(out);
	json_decref(post);
}

/* Titles are one line, cut after FEED_TITLE_MAX characters (not bytes). */
static void test_feed_title_truncated(void **state)
{
	char text[600] = "  line one\nline two ";
	json_t *post, *doc, *att;
	const char *title;
	char *out;

	(void)state;
	post = full_record(text);
	doc = one_item(post, &out);
	att = json_array_get(json_object_get(json_array_get(json_object_get(doc, "items"), 0),
	                                     "attachments"), 1);
	assert_string_equal(json_string_value(json_object_get(att, "title")), "line one line two");
	json_decref(doc);
	free(out);
	json_decref(post);

	/* 150 two-byte characters: 80 kept, then an ellipsis. */
	text[0] = '\0';
	for (int i = 0; i < 150; i++)
		strcat(text, "\xc3\xa9");
	post = full_record(text);
	doc = one_item(post, &out);
	att = json_array_get(json_object_get(json_array_get(json_object_get(doc, "items"), 0),
	                                     "attachments"), 0);
	title = json_string_value(json_object_get(att, "title"));
	assert_non_null(title);
	assert_int_equal(strlen(title), FEED_TITLE_MAX * 2 + 3);
	assert_string_equal(title + FEED_TITLE_MAX * 2, "\xe2\x80\xa6");
	json_decref(doc);
	free(out);
	json_decref(post);
}

/* The page offers Opus first, then the M4A, and names the waveform. */
int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_feed_fields_and_order),
		cmocka_unit_test(test_authors_json),
		cmocka_unit_test(test_feed_rejects_incomplete_record),
		cmocka_unit_test(test_feed_fallback_and_waveform),
		cmocka_unit_test(test_feed_title_truncated),
		cmocka_unit_test(test_feed_description_is_the_bio),
	};
	return cmocka_run_group_tests_name("feed", tests, NULL, NULL);
}

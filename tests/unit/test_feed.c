/* test_feed: JSON Feed 1.1 fields, order, absolute URLs and HTML escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "error.h"
#include "feed.h"

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
	feed_author a = { "ann", "Ann Example" };
	json_t *posts[2] = { record("02", "second", "2026-01-02T00:00:00.000Z"),
		             record("01", "first", "2026-01-01T00:00:00.000Z") };
	char *out;
	size_t len;
	json_t *doc, *items, *att;

	assert_int_equal(feed_author_json("https://cdn.example", &a, posts, 2, &out, &len), 0);
	doc = json_loadb(out, len, 0, NULL);
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
	json_decref(posts[0]);
	json_decref(posts[1]);
}

static void test_feed_rejects_incomplete_record(void **state)
{
	(void)state;
	feed_author a = { "ann", "Ann" };
	json_t *bad = json_pack("{s:s}", "id", "01");
	char *out = NULL;
	size_t len;
	assert_int_equal(feed_author_json("http://x", &a, &bad, 1, &out, &len), SAYIN_ECORRUPT);
	assert_null(out);
	json_decref(bad);
}

static void test_page_escapes_text(void **state)
{
	(void)state;
	feed_author a = { "ann", "Ann <b>&</b>" };
	json_t *p = record("01", "<script>alert(\"x\")</script> & 'q'", "2026-01-01T00:00:00.000Z");
	char *out;
	size_t len;

	assert_int_equal(feed_post_html("https://cdn.example", &a, p, &out, &len), 0);
	assert_null(strstr(out, "<script>"));
	assert_non_null(strstr(out, "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;q&#39;"));
	assert_non_null(strstr(out, "Ann &lt;b&gt;&amp;&lt;/b&gt;"));
	assert_non_null(strstr(out, "<source src=\"https://cdn.example/a/ab12.opus\""));
	assert_non_null(strstr(out, "<audio controls preload=\"metadata\""));
	free(out);
	json_decref(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_feed_fields_and_order),
		cmocka_unit_test(test_feed_rejects_incomplete_record),
		cmocka_unit_test(test_page_escapes_text),
	};
	return cmocka_run_group_tests_name("feed", tests, NULL, NULL);
}

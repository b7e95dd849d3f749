/* test_httpsem: the origin's pure HTTP parsers, each on valid, edge and
 * malformed input: HTTP-date, entity-tag lists, If-Range, Range and
 * Accept-Encoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/http.h"
#include "httpsem.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define TAG "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define TAG_LEN (sizeof(TAG) - 1)
#define ALL_CODINGS ((1u << HTTPSEM_IDENTITY) | (1u << HTTPSEM_GZIP) | (1u << HTTPSEM_BR))

/* ---- formatting helpers ---- */

static void test_put_helpers(void **state)
{
	(void)state;
	char out[64], *p = out;

	p = httpsem_put_str(p, "n=");
	p = httpsem_put_u64(p, 0);
	*p++ = ',';
	p = httpsem_put_u64(p, 1234567890);
	*p++ = ',';
	p = httpsem_put_u64(p, UINT64_MAX);
	*p = '\0';
	assert_string_equal(out, "n=0,1234567890,18446744073709551615");
}

/* ---- HTTP-date ---- */

static void test_parse_date_three_forms(void **state)
{
	(void)state;
	int64_t t = 0;

	assert_int_equal(httpsem_parse_date("Sun, 06 Nov 1994 08:49:37 GMT", &t), 0);
	assert_int_equal(t, 784111777);
	t = 0;
	assert_int_equal(httpsem_parse_date("Sun Nov  6 08:49:37 1994", &t), 0);
	assert_int_equal(t, 784111777);
	t = 0;
	assert_int_equal(httpsem_parse_date("Sun Nov 16 08:49:37 1994", &t), 0);
	assert_int_equal(t, 784111777 + 10 * 86400);
	t = 0;
	assert_int_equal(httpsem_parse_date("Sunday, 06-Nov-94 08:49:37 GMT", &t), 0);
	assert_int_equal(t, 784111777);
	t = 0;
	assert_int_equal(httpsem_parse_date("Wednesday, 06-Nov-02 08:49:37 GMT", &t), 0);
	assert_int_equal(t, 1036572577);
}

static void test_parse_date_edges(void **state)
{
	(void)state;
	int64_t t = 0;
	char s[40];

	/* Trailing white space is ignored. */
	assert_int_equal(httpsem_parse_date("Sun, 06 Nov 1994 08:49:37 GMT \t ", &t), 0);
	assert_int_equal(t, 784111777);
	/* The day name is checked for form only, not against the date. */
	assert_int_equal(httpsem_parse_date("Mon, 06 Nov 1994 08:49:37 GMT", &t), 0);
	assert_int_equal(t, 784111777);
	/* A leap second is read as the next second. */
	assert_int_equal(httpsem_parse_date("Sun, 06 Nov 1994 23:59:60 GMT", &t), 0);
	assert_int_equal(t, 784166400);
	/* Round trip through the formatter, at the epoch and far ahead. */
	for (int64_t v = 0; v < 253402300800; v += 7777777777) {
		http_format_date(v, s);
		assert_int_equal(httpsem_parse_date(s, &t), 0);
		assert_int_equal(t, v);
	}
	/* RFC 850: a two-digit year more than 50 years ahead is last century. */
	time_t now = time(NULL);
	struct tm tm;
	assert_non_null(gmtime_r(&now, &tm));
	int year = tm.tm_year + 1900;
	int64_t want;
	snprintf(s, sizeof(s), "Thursday, 01-Jan-%02d 00:00:00 GMT", (year + 51) % 100);
	assert_int_equal(httpsem_parse_date("Thursday, 01-Jan-70 00:00:00 GMT", &want), 0);
	assert_int_equal(httpsem_parse_date(s, &t), 0);
	assert_true(t < (int64_t)now);
	snprintf(s, sizeof(s), "Thursday, 01-Jan-%02d 00:00:00 GMT", (year + 1) % 100);
	assert_int_equal(httpsem_parse_date(s, &t), 0);
	assert_true(t > (int64_t)now);
	(void)want;
}

static void test_parse_date_malformed(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"",
		"   ",
		"yesterday",
		"Sun, 06 Nov 1994 08:49:37 UTC",   /* only GMT */
		"sun, 06 Nov 1994 08:49:37 GMT",   /* names are case-sensitive */
		"Sun, 06 nov 1994 08:49:37 GMT",
		"Sun, 06 Foo 1994 08:49:37 GMT",
		"Sun, 00 Nov 1994 08:49:37 GMT",   /* day 0 */
		"Sun, 32 Nov 1994 08:49:37 GMT",
		"Sun, 06 Nov 1994 24:00:00 GMT",   /* hour 24 */
		"Sun, 06 Nov 1994 08:60:00 GMT",
		"Sun, 06 Nov 1994 08:49:61 GMT",
		"Sun, 6 Nov 1994 08:49:37 GMT",    /* one-digit day */
		"Sun, 06 Nov 94 08:49:37 GMT",     /* two-digit year in the fixdate */
		"Sun, 06 Nov 1994 08.49.37 GMT",
		"Sun, 06 Nov 1994 08:49:37 GMT x",
		" Sun, 06 Nov 1994 08:49:37 GMT",  /* leading white space */
		"Sun,06 Nov 1994 08:49:37 GMT ",
		"Sun Nov 6 08:49:37 1994",         /* asctime pads the day */
		"Sun Nov  6 08:49:37 94",
		"Sun Nov  x 08:49:37 1994",
		"Sunday, 06-Nov-1994 08:49:37 GMT",
		"Sonday, 06-Nov-94 08:49:37 GMT",
		"Sunday 06-Nov-94 08:49:37 GMT",
		"Sunday, 06 Nov 94 08:49:37 GMT",
		"Sunday, 06-Nov-94 08:49:37 UTC",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int64_t t = 12345;
		if (httpsem_parse_date(bad[i], &t) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_int_equal(t, 12345); /* nothing written */
	}
}

/* ---- entity tags ---- */

static void test_etag_list_matches(void **state)
{
	(void)state;
	assert_int_equal(httpsem_etag_list_matches("\"" TAG "\"", TAG, TAG_LEN), 1);
	assert_int_equal(httpsem_etag_list_matches("*", TAG, TAG_LEN), 1);
	assert_int_equal(httpsem_etag_list_matches(" \t*", TAG, TAG_LEN), 1);
	/* Weak comparison: W/"x" matches "x". */
	assert_int_equal(httpsem_etag_list_matches("W/\"" TAG "\"", TAG, TAG_LEN), 1);
	assert_int_equal(httpsem_etag_list_matches("\"a\", W/\"b\" ,\t\"" TAG "\"", TAG, TAG_LEN), 1);
	assert_int_equal(httpsem_etag_list_matches(",,\"" TAG "\",", TAG, TAG_LEN), 1);
	assert_int_equal(httpsem_etag_list_matches("\"a\", \"b\"", TAG, TAG_LEN), 0);
	/* Length and bytes must both match. */
	assert_int_equal(httpsem_etag_list_matches("\"" TAG "0\"", TAG, TAG_LEN), 0);
	assert_int_equal(httpsem_etag_list_matches("\"0123\"", TAG, TAG_LEN), 0);
	assert_int_equal(httpsem_etag_list_matches("\"0123\"", "0123", 4), 1);
	assert_int_equal(httpsem_etag_list_matches("\"\"", "", 0), 1);
	assert_int_equal(httpsem_etag_list_matches("", TAG, TAG_LEN), 0);
	assert_int_equal(httpsem_etag_list_matches(" , ", TAG, TAG_LEN), 0);
}

static void test_etag_list_malformed(void **state)
{
	(void)state;
	/* Unquoted, unterminated, lower-case weak prefix: no match. */
	assert_int_equal(httpsem_etag_list_matches(TAG, TAG, TAG_LEN), 0);
	assert_int_equal(httpsem_etag_list_matches("\"" TAG, TAG, TAG_LEN), 0);
	assert_int_equal(httpsem_etag_list_matches("w/\"" TAG "\"", TAG, TAG_LEN), 0);
	/* A malformed element ends the scan: what follows it is not read... */
	assert_int_equal(httpsem_etag_list_matches("junk, \"" TAG "\"", TAG, TAG_LEN), 0);
	assert_int_equal(httpsem_etag_list_matches("junk, *", TAG, TAG_LEN), 0);
	/* ...but a match before it stands. */
	assert_int_equal(httpsem_etag_list_matches("\"" TAG "\", junk", TAG, TAG_LEN), 1);
	/* Elements need no separator between them. */
	assert_int_equal(httpsem_etag_list_matches("\"a\"\"" TAG "\"", TAG, TAG_LEN), 1);
}

static void test_if_range_matches(void **state)
{
	(void)state;
	const int64_t when = 784111777;

	assert_int_equal(httpsem_if_range_matches("\"" TAG "\"", TAG, TAG_LEN, when, 0), 1);
	assert_int_equal(httpsem_if_range_matches(" \t\"" TAG "\" \t", TAG, TAG_LEN, when, 0), 1);
	/* Weak tags never validate a range. */
	assert_int_equal(httpsem_if_range_matches("W/\"" TAG "\"", TAG, TAG_LEN, when, 1), 0);
	assert_int_equal(httpsem_if_range_matches("\"" TAG "0\"", TAG, TAG_LEN, when, 1), 0);
	assert_int_equal(httpsem_if_range_matches("\"" TAG, TAG, TAG_LEN, when, 1), 0);
	assert_int_equal(httpsem_if_range_matches("\"x\", \"" TAG "\"", TAG, TAG_LEN, when, 1), 0);
	/* A date validates only when it is strong, and only when equal. */
	assert_int_equal(httpsem_if_range_matches("Sun, 06 Nov 1994 08:49:37 GMT", TAG, TAG_LEN,
	                                          when, 1), 1);
	assert_int_equal(httpsem_if_range_matches("Sun, 06 Nov 1994 08:49:37 GMT", TAG, TAG_LEN,
	                                          when, 0), 0);
	assert_int_equal(httpsem_if_range_matches("Sun, 06 Nov 1994 08:49:38 GMT", TAG, TAG_LEN,
	                                          when, 1), 0);
	assert_int_equal(httpsem_if_range_matches("Sun, 06 Nov 1994 08:49:36 GMT", TAG, TAG_LEN,
	                                          when, 1), 0);
	assert_int_equal(httpsem_if_range_matches("", TAG, TAG_LEN, when, 1), 0);
	assert_int_equal(httpsem_if_range_matches("garbage", TAG, TAG_LEN, when, 1), 0);
}

/* ---- Range ---- */

static enum httpsem_range range(const char *v, uint64_t len, uint64_t *first, uint64_t *last)
{
	*first = 777;
	*last = 777;
	return httpsem_parse_range(v, len, first, last);
}

static void test_range_single(void **state)
{
	(void)state;
	uint64_t a, b;

	assert_int_equal(range("bytes=0-99", 1000, &a, &b), HTTPSEM_RANGE_SINGLE);
	assert_int_equal(a, 0);
	assert_int_equal(b, 99);
	assert_int_equal(range("bytes=500-", 1000, &a, &b), HTTPSEM_RANGE_SINGLE);
	assert_int_equal(a, 500);
	assert_int_equal(b, 999);
	assert_int_equal(range("bytes=-100", 1000, &a, &b), HTTPSEM_RANGE_SINGLE);
	assert_int_equal(a, 900);
	assert_int_equal(b, 999);
	/* The unit is case-insensitive; white space and empty elements pass. */
	assert_int_equal(range("BYTES=  , 10-19 ,", 1000, &a, &b), HTTPSEM_RANGE_SINGLE);
	assert_int_equal(a, 10);
	assert_int_equal(b, 19);
	assert_int_equal(range("bytes=5-5", 6, &a, &b), HTTPSEM_RANGE_SINGLE);
	assert_int_equal(a, 5);
	assert_int_equal(b, 5);
}

static void test_range_clamps(void **state)
{
	(void)state;
	uint64_t a, b;

	/* A last position past the end, and a suffix longer than the object. */
	assert_int_equal(range("bytes=10-5000", 1000, &a, &b), HTTPSEM_RANGE_SINGLE);
	assert_int_equal(a, 10);
	assert_int_equal(b, 999);
	assert_int_equal(range("bytes=-5000", 1000, &a, &b), HTTPSEM_RANGE_SINGLE);
	assert_int_equal(a, 0);
	assert_int_equal(b, 999);
	/* Numbers saturate rather than wrap. */
	assert_int_equal(range("bytes=0-99999999999999999999999999", 1000, &a, &b),
	                 HTTPSEM_RANGE_SINGLE);
	assert_int_equal(a, 0);
	assert_int_equal(b, 999);
	assert_int_equal(range("bytes=-99999999999999999999999999", 1000, &a, &b),
	                 HTTPSEM_RANGE_SINGLE);
	assert_int_equal(a, 0);
	assert_int_equal(b, 999);
}

static void test_range_unsatisfiable(void **state)
{
	(void)state;
	uint64_t a, b;

	assert_int_equal(range("bytes=1000-", 1000, &a, &b), HTTPSEM_RANGE_UNSATISFIABLE);
	assert_int_equal(range("bytes=1000-2000", 1000, &a, &b), HTTPSEM_RANGE_UNSATISFIABLE);
	assert_int_equal(range("bytes=-0", 1000, &a, &b), HTTPSEM_RANGE_UNSATISFIABLE);
	assert_int_equal(range("bytes=99999999999999999999999999-", 1000, &a, &b),
	                 HTTPSEM_RANGE_UNSATISFIABLE);
	assert_int_equal(a, 777); /* left alone */
	assert_int_equal(b, 777);
}

static void test_range_ignored(void **state)
{
	(void)state;
	static const char *const ignored[] = {
		"",
		"bytes=",
		"bytes= , ",
		"bytes",
		"items=0-1",
		"bytes 0-1",
		"bytes=0-1,5-9",   /* several ranges: the whole object */
		"bytes=0-1, -5",
		"bytes=5-1",       /* last before first */
		"bytes=a-1",
		"bytes=1",
		"bytes=-",
		"bytes=--1",
		"bytes=0-1 x",
		"bytes=0-1;",
		"bytes=0-1x",
		"bytes=-1-2",
		"bytes=1000-, 0-1", /* an unsatisfiable one among several */
	};
	for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++) {
		uint64_t a, b;
		if (range(ignored[i], 1000, &a, &b) != HTTPSEM_RANGE_IGNORE)
			fail_msg("did not ignore \"%s\"", ignored[i]);
		assert_int_equal(a, 777);
		assert_int_equal(b, 777);
	}
	/* An empty representation ignores every range. */
	uint64_t a, b;
	assert_int_equal(range("bytes=0-0", 0, &a, &b), HTTPSEM_RANGE_IGNORE);
	assert_int_equal(range("bytes=-1", 0, &a, &b), HTTPSEM_RANGE_IGNORE);
}

/* ---- Accept-Encoding ---- */

static void test_encoding_preference(void **state)
{
	(void)state;
	/* Without the header, identity. */
	assert_int_equal(httpsem_choose_encoding(NULL, ALL_CODINGS), HTTPSEM_IDENTITY);
	/* An empty header lists nothing: identity, implicitly acceptable. */
	assert_int_equal(httpsem_choose_encoding("", ALL_CODINGS), HTTPSEM_IDENTITY);
	/* Equal q: br, then gzip, then identity. */
	assert_int_equal(httpsem_choose_encoding("gzip, deflate, br", ALL_CODINGS), HTTPSEM_BR);
	assert_int_equal(httpsem_choose_encoding("gzip, deflate", ALL_CODINGS), HTTPSEM_GZIP);
	assert_int_equal(httpsem_choose_encoding("gzip, identity", ALL_CODINGS), HTTPSEM_GZIP);
	/* Higher q wins. */
	assert_int_equal(httpsem_choose_encoding("br;q=0.5, gzip", ALL_CODINGS), HTTPSEM_GZIP);
	assert_int_equal(httpsem_choose_encoding("br;q=0.001, gzip;q=0.002", ALL_CODINGS),
	                 HTTPSEM_GZIP);
	assert_int_equal(httpsem_choose_encoding("br;q=0.5, identity", ALL_CODINGS),
	                 HTTPSEM_IDENTITY);
	/* Only what is available counts. */
	assert_int_equal(httpsem_choose_encoding("br", (1u << HTTPSEM_IDENTITY) |
	                                                  (1u << HTTPSEM_GZIP)),
	                 HTTPSEM_IDENTITY);
	assert_int_equal(httpsem_choose_encoding("gzip, br", 1u << HTTPSEM_IDENTITY),
	                 HTTPSEM_IDENTITY);
	/* Implicit identity loses to any listed coding with q > 0. */
	assert_int_equal(httpsem_choose_encoding("gzip;q=0.001", ALL_CODINGS), HTTPSEM_GZIP);
}

static void test_encoding_tokens(void **state)
{
	(void)state;
	/* Names are case-insensitive; x-gzip is gzip. */
	assert_int_equal(httpsem_choose_encoding("GZIP", ALL_CODINGS), HTTPSEM_GZIP);
	assert_int_equal(httpsem_choose_encoding("x-gzip", ALL_CODINGS), HTTPSEM_GZIP);
	assert_int_equal(httpsem_choose_encoding("Br", ALL_CODINGS), HTTPSEM_BR);
	assert_int_equal(httpsem_choose_encoding("gzipx, brotli", ALL_CODINGS), HTTPSEM_IDENTITY);
	/* "*" covers every coding not listed. */
	assert_int_equal(httpsem_choose_encoding("*", ALL_CODINGS), HTTPSEM_BR);
	assert_int_equal(httpsem_choose_encoding("br;q=0, *", ALL_CODINGS), HTTPSEM_GZIP);
	/* A coding listed twice counts at its best. */
	assert_int_equal(httpsem_choose_encoding("gzip;q=0, gzip;q=1", ALL_CODINGS), HTTPSEM_GZIP);
	/* Parameters other than q are skipped; white space around ; and =. */
	assert_int_equal(httpsem_choose_encoding("br;level=5;q=1", ALL_CODINGS), HTTPSEM_BR);
	assert_int_equal(httpsem_choose_encoding("gzip ; q = 0.9 , br ;Q=0.8", ALL_CODINGS),
	                 HTTPSEM_GZIP);
	assert_int_equal(httpsem_choose_encoding("br;q=1.000", ALL_CODINGS), HTTPSEM_BR);
}

static void test_encoding_refusals(void **state)
{
	(void)state;
	/* Identity refused and nothing else available: -1 (406). */
	assert_int_equal(httpsem_choose_encoding("identity;q=0", 1u << HTTPSEM_IDENTITY), -1);
	assert_int_equal(httpsem_choose_encoding("*;q=0", 1u << HTTPSEM_IDENTITY), -1);
	assert_int_equal(httpsem_choose_encoding("*;q=0", ALL_CODINGS), -1);
	assert_int_equal(httpsem_choose_encoding("br, *;q=0", ALL_CODINGS), HTTPSEM_BR);
	/* Refusing a coding leaves identity. */
	assert_int_equal(httpsem_choose_encoding("br;q=0, gzip;q=0", ALL_CODINGS),
	                 HTTPSEM_IDENTITY);
	/* Nothing available at all. */
	assert_int_equal(httpsem_choose_encoding("gzip", 0), -1);
}

static void test_encoding_malformed(void **state)
{
	(void)state;
	/* A malformed element is dropped; the rest still count. */
	assert_int_equal(httpsem_choose_encoding("br;q=2", ALL_CODINGS), HTTPSEM_IDENTITY);
	assert_int_equal(httpsem_choose_encoding("br;q=1.5, gzip", ALL_CODINGS), HTTPSEM_GZIP);
	assert_int_equal(httpsem_choose_encoding("br;q=x, gzip", ALL_CODINGS), HTTPSEM_GZIP);
	assert_int_equal(httpsem_choose_encoding("br;q=, gzip", ALL_CODINGS), HTTPSEM_GZIP);
	assert_int_equal(httpsem_choose_encoding("br junk, gzip", ALL_CODINGS), HTTPSEM_GZIP);
	assert_int_equal(httpsem_choose_encoding(";q=1, gzip", ALL_CODINGS), HTTPSEM_GZIP);
	assert_int_equal(httpsem_choose_encoding("\"br\", gzip", ALL_CODINGS), HTTPSEM_GZIP);
	/* q beyond three decimals: the element is malformed. */
	assert_int_equal(httpsem_choose_encoding("br;q=0.0001, gzip;q=0.5", ALL_CODINGS),
	                 HTTPSEM_GZIP);
	/* A malformed identity refusal does not refuse identity. */
	assert_int_equal(httpsem_choose_encoding("identity;q=-1", 1u << HTTPSEM_IDENTITY),
	                 HTTPSEM_IDENTITY);
	assert_int_equal(httpsem_choose_encoding(",,, ,", ALL_CODINGS), HTTPSEM_IDENTITY);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_helpers),
		cmocka_unit_test(test_parse_date_three_forms),
		cmocka_unit_test(test_parse_date_edges),
		cmocka_unit_test(test_parse_date_malformed),
		cmocka_unit_test(test_etag_list_matches),
		cmocka_unit_test(test_etag_list_malformed),
		cmocka_unit_test(test_if_range_matches),
		cmocka_unit_test(test_range_single),
		cmocka_unit_test(test_range_clamps),
		cmocka_unit_test(test_range_unsatisfiable),
		cmocka_unit_test(test_range_ignored),
		cmocka_unit_test(test_encoding_preference),
		cmocka_unit_test(test_encoding_tokens),
		cmocka_unit_test(test_encoding_refusals),
		cmocka_unit_test(test_encoding_malformed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

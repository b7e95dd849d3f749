/* test_http_date: http_format_date, the one IMF-fixdate writer (the core's
 * Date header, serve's Last-Modified); httpsem_parse_date reads it back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/http.h"
#include "httpsem.h"

#include <string.h>

static void test_format_date(void **state)
{
	(void)state;
	char out[32];

	http_format_date(784111777, out);
	assert_string_equal(out, "Sun, 06 Nov 1994 08:49:37 GMT");
	http_format_date(0, out);
	assert_string_equal(out, "Thu, 01 Jan 1970 00:00:00 GMT");
	http_format_date(-1, out);
	assert_string_equal(out, "Wed, 31 Dec 1969 23:59:59 GMT");
	http_format_date(951782400, out); /* a leap day */
	assert_string_equal(out, "Tue, 29 Feb 2000 00:00:00 GMT");
	http_format_date(253402300799, out); /* the last second it can write */
	assert_string_equal(out, "Fri, 31 Dec 9999 23:59:59 GMT");
}

static void test_format_date_clamps_years(void **state)
{
	(void)state;
	char out[32];

	/* Past year 9999 the date is clamped (the day name is the real one's). */
	http_format_date(253402300800, out);
	assert_int_equal(strlen(out), 29);
	assert_string_equal(out + 3, ", 31 Dec 9999 23:59:59 GMT");
	http_format_date(-62167219201, out); /* one second before year 0 */
	assert_int_equal(strlen(out), 29);
	assert_string_equal(out + 3, ", 01 Jan 0000 00:00:00 GMT");
}

/* Clamped dates carry their own weekday, and the extremes do not overflow. */
static void test_format_date_clamped_weekday(void **state)
{
	(void)state;
	char out[32];

	http_format_date(253402300800, out);
	assert_string_equal(out, "Fri, 31 Dec 9999 23:59:59 GMT");
	http_format_date(INT64_MAX, out);
	assert_string_equal(out, "Fri, 31 Dec 9999 23:59:59 GMT");
	http_format_date(INT64_MIN, out);
	assert_string_equal(out, "Sat, 01 Jan 0000 00:00:00 GMT");
}

/* What the writer writes, the parser reads back, across the whole range. */
static void test_format_then_parse_round_trips(void **state)
{
	(void)state;
	char out[32];
	int64_t back;

	for (int64_t t = -62167219200; t <= 253402300799; t += 86400 * 365 + 3607) {
		http_format_date(t, out);
		assert_int_equal(httpsem_parse_date(out, &back), 0);
		assert_int_equal(back, t);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_date),
		cmocka_unit_test(test_format_date_clamps_years),
		cmocka_unit_test(test_format_date_clamped_weekday),
		cmocka_unit_test(test_format_then_parse_round_trips),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_cdn_answers: how the CDN drivers read answers (deliver/cdn/cdn.h's
 * exported checks) and Retry-After, including the inputs fuzzing found
 * (tests/fuzz/corpus/cdn_answer/regression-*). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "deliver/cdn/cdn.h"

#include <string.h>

#define NOW_MS 1700000000000LL

static void test_retry_after_seconds_and_date(void **state)
{
	(void)state;
	assert_int_equal(cdn_retry_after_value(NULL, NOW_MS), 0);
	assert_int_equal(cdn_retry_after_value("120", NOW_MS), NOW_MS + 120000);
	assert_int_equal(cdn_retry_after_value("0", NOW_MS), NOW_MS);
	assert_int_equal(cdn_retry_after_value("Wed, 21 Oct 2015 07:28:00 GMT", NOW_MS),
	                 1445412480000LL);
	assert_int_equal(cdn_retry_after_value("-5", NOW_MS), 0);
	assert_int_equal(cdn_retry_after_value("soon", NOW_MS), 0);
	assert_int_equal(cdn_retry_after_value("12s", NOW_MS), 0);
}

/* Found by fuzz_cdn_answer: a delay whose milliseconds overflow int64 was
 * signed overflow (undefined behaviour) and gave a time in the past or the
 * far future depending on the compiler. Now unreadable: back off. */
static void test_retry_after_overflow_is_unreadable(void **state)
{
	(void)state;
	assert_int_equal(cdn_retry_after_value("444444444444444444481", NOW_MS), 0);
	assert_int_equal(cdn_retry_after_value("9223372036854775", NOW_MS), 0);
	assert_int_equal(cdn_retry_after_value("9223372036854775807", NOW_MS), 0);
	/* The largest delay that fits is still read. */
	assert_int_equal(cdn_retry_after_value("9221672036854775", NOW_MS),
	                 NOW_MS + 9221672036854775LL * 1000);
	/* A date whose year overflows milliseconds, or before 1970. */
	assert_int_equal(cdn_retry_after_value("Wed, 21 Oct 999999999 07:28:00 GMT", NOW_MS), 0);
	assert_int_equal(cdn_retry_after_value("Wed, 21 Oct 1900 07:28:00 GMT", NOW_MS), 0);
}

static void test_cloudflare_answer(void **state)
{
	const char *ok = "{\"success\":true,\"errors\":[]}";
	const char *bad = "{\"success\":false,\"errors\":[{\"code\":10000,\"message\":\"Auth\"}]}";
	net_response res = { .status = 200, .body = ok, .body_len = strlen(ok) };
	cdn_result out = { 0 };
	(void)state;

	assert_int_equal(cdn_cloudflare_check(&res, NULL, &out), 0);
	res.body = "not json";
	res.body_len = 8;
	assert_int_equal(cdn_cloudflare_check(&res, NULL, &out), -1);
	assert_string_equal(out.error, "HTTP 200: no success in the answer");
	res.status = 403;
	res.body = bad;
	res.body_len = strlen(bad);
	memset(&out, 0, sizeof(out));
	assert_int_equal(cdn_cloudflare_check(&res, NULL, &out), -1);
	assert_int_equal(out.permanent, 1);
	assert_string_equal(out.error, "HTTP 403: Auth (API token rejected)");
}

static void test_aws_xml_error(void **state)
{
	const char *xml = "<Error><Code>AccessDenied</Code></Error>";
	net_response res = { .status = 403, .body = xml, .body_len = strlen(xml) };
	cdn_result out = { 0 };
	(void)state;

	assert_int_equal(cdn_s3_check(&res, NULL, &out), -1);
	assert_string_equal(out.error, "HTTP 403 AccessDenied");
	assert_int_equal(out.permanent, 1);
	res.body = "<Code>Unterminated";
	res.body_len = strlen(res.body);
	memset(&out, 0, sizeof(out));
	assert_int_equal(cdn_cloudfront_check(&res, NULL, &out), -1);
	assert_string_equal(out.error, "HTTP 403 Unterminated");
	res.status = 201;
	assert_int_equal(cdn_cloudfront_check(&res, NULL, &out), 0);
}

static void test_status_rules(void **state)
{
	net_response res = { .status = 404, .body = "", .body_len = 0 };
	cdn_result out = { 0 };
	(void)state;

	assert_int_equal(cdn_varnish_check(&res, NULL, &out), 0);
	assert_int_equal(cdn_nginx_check(&res, NULL, &out), 0);
	assert_int_equal(cdn_fastly_check(&res, NULL, &out), -1);
	assert_int_equal(cdn_check_2xx(&res, NULL, &out), -1);
	assert_string_equal(out.error, "HTTP 404");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_retry_after_seconds_and_date),
		cmocka_unit_test(test_retry_after_overflow_is_unreadable),
		cmocka_unit_test(test_cloudflare_answer),
		cmocka_unit_test(test_aws_xml_error),
		cmocka_unit_test(test_status_rules),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_config_urls: config_check_url's rules, and every load refusing a bad URL setting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/config.h"
#include "core/error.h"

#include <string.h>

static void test_good_urls_pass(void **state)
{
	static const char *const good[] = { "https://cdn.example.com", "https://cdn.example.com/",
		                            "https://cdn.example.com/base/path", "http://127.0.0.1:8080",
		                            "http://localhost:81", "http://[::1]:8080",
		                            "https://[2001:db8::1]/x", "HTTPS://CDN.Example.com",
		                            "https://edge_1.internal:6081" };
	char why[256];
	int insecure;

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_int_equal(config_check_url(good[i], why, sizeof(why), &insecure), 0);
		assert_int_equal(insecure, 0);
	}
}

static void test_bad_urls_are_refused_with_a_reason(void **state)
{
	static const struct {
		const char *url, *why;
	} bad[] = {
		{ "cdn.example.com", "not an http:// or https:// URL" },
		{ "ftp://x", "not an http:// or https:// URL" },
		{ "HTTPS//x", "not an http:// or https:// URL" },
		{ "https://", "no host" },
		{ "https:///path", "no host" },
		{ "https://:80", "no host" },
		{ "https://x/?q=1", "query or fragment" },
		{ "https://x/#f", "query or fragment" },
		{ "https://x:port", "bad port" },
		{ "https://x:99999", "bad port" },
		{ "https://u:p@x", "credentials" },
		{ "https://x y", "space" },
		{ "https://h\\evil.com", "the host holds '\\'" },
		{ "https://h%2fevil.com", "the host holds '%'" },
		{ "https://[zz]", "not an IPv6 address" },
		{ "https://[::1", "no host" },
		{ "https://h:0", "bad port" },
		{ "https://h:00080", "bad port" },
	};
	char why[256];
	int insecure;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(config_check_url(bad[i].url, why, sizeof(why), &insecure),
		                 SAYIN_ECONFIG);
		if (strstr(why, bad[i].why) == NULL)
			fail_msg("%s: '%s' does not say '%s'", bad[i].url, why, bad[i].why);
	}
}

static void test_plain_http_off_loopback_is_insecure(void **state)
{
	char why[256];
	int insecure;

	(void)state;
	assert_int_equal(config_check_url("http://cdn.example.com", why, sizeof(why), &insecure), 0);
	assert_int_equal(insecure, 1);
	assert_int_equal(config_check_url("http://127.12.0.1", why, sizeof(why), &insecure), 0);
	assert_int_equal(insecure, 0);
	assert_int_equal(config_check_url("http://127.evil.com", why, sizeof(why), &insecure), 0);
	assert_int_equal(insecure, 1);
}

static void test_a_load_refuses_a_bad_edge_in_a_list(void **state)
{
	char *argv[] = { "x", "--nginx-edges", "http://a:80, https://b", "--prewarm-edges",
		         "http://c,d.example", NULL };
	config *cfg = NULL;
	char err[512];

	(void)state;
	assert_int_equal(config_load(5, argv, NULL, 0, &cfg, err, sizeof(err)), SAYIN_ECONFIG);
	assert_non_null(strstr(err, "--prewarm-edges: 'd.example' is not an http"));
	assert_null(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_urls_pass),
		cmocka_unit_test(test_bad_urls_are_refused_with_a_reason),
		cmocka_unit_test(test_plain_http_off_loopback_is_insecure),
		cmocka_unit_test(test_a_load_refuses_a_bad_edge_in_a_list),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

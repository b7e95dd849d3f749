/* test_config: precedence (flag > environment > file > default), parsing and errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/config.h"
#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const config_arg args[] = {
	{ "author", "HANDLE", "author", 0 },
	{ "dry-run", NULL, "switch", 1 },
};

static char *write_ini(const char *text)
{
	char tmpl[] = "/tmp/sayin-config-XXXXXX";
	int fd = mkstemp(tmpl);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return strdup(tmpl);
}

static int load(int argc, char **argv, config **cfg, char *err)
{
	return config_load(argc, argv, args, 2, cfg, err, 256);
}

static void test_defaults(void **state)
{
	(void)state;
	char *argv[] = { "post", NULL };
	config *cfg;
	char err[256];
	unsetenv("SAYIN_BITRATE");
	unsetenv("SAYIN_CONFIG");
	assert_int_equal(load(1, argv, &cfg, err), 0);
	assert_string_equal(config_get(cfg, "bitrate"), "32000");
	assert_string_equal(config_get(cfg, "listen"), "127.0.0.1:8080");
	assert_null(config_get(cfg, "public-url"));
	assert_null(config_get(cfg, "author"));
	config_free(cfg);
}

static void test_precedence(void **state)
{
	(void)state;
	char *ini = write_ini("[media]\nbitrate = 24000\n[feed]\nitems = 7\n[origin]\nlisten=1.2.3.4:1\n");
	char *argv[] = { "post", "--config", ini, "--bitrate=40000", "--author", "ann", "file.wav",
		         "--dry-run", NULL };
	config *cfg;
	char err[256];
	uint64_t v;

	setenv("SAYIN_BITRATE", "28000", 1);
	setenv("SAYIN_FEED_ITEMS", "9", 1);
	assert_int_equal(load(8, argv, &cfg, err), 0);
	assert_string_equal(config_get(cfg, "bitrate"), "40000"); /* flag */
	assert_string_equal(config_get(cfg, "feed-items"), "9");  /* env over file */
	assert_string_equal(config_get(cfg, "listen"), "1.2.3.4:1"); /* file over default */
	assert_string_equal(config_get(cfg, "author"), "ann");
	assert_string_equal(config_get(cfg, "dry-run"), "1");
	assert_int_equal(config_positional_count(cfg), 1);
	assert_string_equal(config_positional(cfg, 0), "file.wav");
	assert_int_equal(config_get_u64(cfg, "bitrate", 6000, 510000, &v, err, sizeof(err)), 0);
	assert_int_equal(v, 40000);
	config_free(cfg);
	unsetenv("SAYIN_BITRATE");
	unsetenv("SAYIN_FEED_ITEMS");
	unlink(ini);
	free(ini);
}

static void test_errors_name_the_cause(void **state)
{
	(void)state;
	char *ini = write_ini("[media]\nbitrat = 1\n");
	char *argv1[] = { "post", "--config", ini, NULL };
	char *argv2[] = { "post", "--nope", NULL };
	char *argv3[] = { "post", "--author", NULL };
	char *argv4[] = { "post", "--config", "/tmp/sayin-no-such.ini", NULL };
	char *argv5[] = { "post", "--help", NULL };
	config *cfg = NULL;
	char err[256];

	assert_int_equal(load(3, argv1, &cfg, err), SAYIN_ECONFIG);
	assert_non_null(strstr(err, "bitrat"));
	assert_int_equal(load(2, argv2, &cfg, err), SAYIN_ECONFIG);
	assert_non_null(strstr(err, "--nope"));
	assert_int_equal(load(2, argv3, &cfg, err), SAYIN_ECONFIG);
	assert_non_null(strstr(err, "needs a value"));
	assert_int_equal(load(3, argv4, &cfg, err), SAYIN_ECONFIG);
	assert_non_null(strstr(err, "sayin-no-such.ini"));
	assert_int_equal(load(2, argv5, &cfg, err), 1);
	config_free(cfg);
	unlink(ini);
	free(ini);
}

/* A file that holds a credential must be private (mkstemp makes 0600). */
static void test_secrets_need_a_private_file(void **state)
{
	(void)state;
	char *secret = write_ini("[cdn]\nfastly_service_id = svc\nfastly_api_key = k3y\n");
	char *plain = write_ini("[cdn]\nfastly_service_id = svc\n");
	char *argv[] = { "push", "--config", secret, NULL };
	config *cfg;
	char err[256];

	assert_int_equal(load(3, argv, &cfg, err), 0);
	assert_string_equal(config_get(cfg, "fastly-api-key"), "k3y");
	config_free(cfg);
	assert_int_equal(chmod(secret, 0644), 0);
	assert_int_equal(load(3, argv, &cfg, err), SAYIN_ECONFIG);
	assert_non_null(strstr(err, "chmod 600"));
	assert_non_null(strstr(err, "fastly-api-key"));
	assert_null(strstr(err, "k3y")); /* the message never shows the secret */
	/* Without a secret the same mode is fine. */
	assert_int_equal(chmod(plain, 0644), 0);
	argv[2] = plain;
	assert_int_equal(load(3, argv, &cfg, err), 0);
	config_free(cfg);
	unlink(secret);
	unlink(plain);
	free(secret);
	free(plain);
}

static void test_sizes_and_ranges(void **state)
{
	(void)state;
	char *argv[] = { "post", "--map-size", "2G", "--bitrate", "12abc", NULL };
	config *cfg;
	char err[256];
	uint64_t v;

	assert_int_equal(load(5, argv, &cfg, err), 0);
	assert_int_equal(config_get_size(cfg, "map-size", 1, UINT64_MAX, &v, err, sizeof(err)), 0);
	assert_int_equal(v, 2ull << 30);
	assert_int_equal(config_get_u64(cfg, "bitrate", 6000, 510000, &v, err, sizeof(err)),
	                 SAYIN_ECONFIG);
	assert_non_null(strstr(err, "--bitrate"));
	assert_int_equal(config_get_size(cfg, "map-size", 1, 1 << 20, &v, err, sizeof(err)),
	                 SAYIN_ECONFIG);
	assert_non_null(strstr(err, "outside"));
	config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_precedence),
		cmocka_unit_test(test_errors_name_the_cause),
		cmocka_unit_test(test_sizes_and_ranges),
		cmocka_unit_test(test_secrets_need_a_private_file),
	};
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}

/* test_accesslog: the access log's settings: trusted edges (CIDRs, the
 * header that needs them) and the sink's values (off, stderr, a path; a
 * typo is refused, a file is created 0640 and reopened in place). The lines
 * themselves are checked end to end by tests/integration/test_access_log.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/accesslog.h"
#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_edges_parse(void **state)
{
	accesslog_edges *e = (accesslog_edges *)1;
	char err[256];

	(void)state;
	assert_int_equal(accesslog_edges_parse(NULL, NULL, &e, err, sizeof(err)), 0);
	assert_null(e);
	assert_int_equal(accesslog_edges_parse("", " , ", &e, err, sizeof(err)), 0);
	assert_null(e);
	assert_int_equal(accesslog_edges_parse("Fastly-Client-IP",
	                                       "10.0.0.0/8, 192.0.2.1 2001:db8::/32,::1", &e, err,
	                                       sizeof(err)),
	                 0);
	assert_non_null(e);
	accesslog_edges_free(e);
	/* Edges without a header: nothing is believed, but it is not wrong. */
	assert_int_equal(accesslog_edges_parse(NULL, "127.0.0.1", &e, err, sizeof(err)), 0);
	accesslog_edges_free(e);
}

static void test_edges_refused(void **state)
{
	static const char *const bad[] = { "10.0.0.0/33", "2001:db8::/129", "10.0.0.0/", "10.0.0/8",
		                           "example.com", "10.0.0.0/8x", "10.0.0.0/-1" };
	accesslog_edges *e = NULL;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(accesslog_edges_parse("X-Forwarded-For", bad[i], &e, err, sizeof(err)),
		                 SAYIN_ECONFIG);
		assert_null(e);
		assert_non_null(strstr(err, bad[i]));
	}
	assert_int_equal(accesslog_edges_parse("X-Forwarded-For", "", &e, err, sizeof(err)),
	                 SAYIN_ECONFIG);
	assert_non_null(strstr(err, "needs --trusted-edges"));
}

static void test_sink_values(void **state)
{
	char dir[] = "/tmp/test_accesslog.XXXXXX", path[128], err[256];
	struct stat st;

	(void)state;
	umask(022); /* the mode asked for, not the runner's umask */
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/access.log", dir);
	assert_int_equal(accesslog_configure("access-log", "off", err, sizeof(err)), 0);
	assert_false(accesslog_enabled());
	assert_int_equal(accesslog_configure("access-log", "of", err, sizeof(err)), SAYIN_ECONFIG);
	assert_non_null(strstr(err, "'of' is not off, stderr or a file path"));
	assert_false(accesslog_enabled());
	assert_int_equal(accesslog_configure("access-log", path, err, sizeof(err)), 0);
	assert_true(accesslog_enabled());
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);
	/* Reopen after a move: a new file appears under the same name. */
	char moved[160];
	snprintf(moved, sizeof(moved), "%s.1", path);
	assert_int_equal(rename(path, moved), 0);
	assert_int_equal(accesslog_configure("access-log", path, err, sizeof(err)), 0);
	assert_int_equal(stat(path, &st), 0);
	/* A file that cannot be opened leaves the sink as it was. */
	assert_true(accesslog_configure("access-log", "/nonexistent-dir/x.log", err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "cannot open /nonexistent-dir/x.log"));
	assert_true(accesslog_enabled());
	assert_int_equal(accesslog_configure("access-log", "stderr", err, sizeof(err)), 0);
	assert_true(accesslog_enabled());
	assert_int_equal(accesslog_configure("access-log", "off", err, sizeof(err)), 0);
	assert_false(accesslog_enabled());
	unlink(path);
	unlink(moved);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_edges_parse),
		cmocka_unit_test(test_edges_refused),
		cmocka_unit_test(test_sink_values),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_config_secrets: secrets from NAME-file (a path, or a bare name in
 * $CREDENTIALS_DIRECTORY), its precedence and refusals, and a secret given as
 * a flag (warned about, blanked in argv). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/config.h"
#include "core/error.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const secrets[] = { "fastly-api-key", "cloudflare-api-token",
	                               "aws-secret-access-key" };
static const char *const secret_envs[] = { "SAYIN_FASTLY_API_KEY", "SAYIN_CLOUDFLARE_API_TOKEN",
	                                   "AWS_SECRET_ACCESS_KEY" };

static char dir[64];

static int make_dir(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/sayin-secrets-XXXXXX");
	assert_non_null(mkdtemp(dir));
	unsetenv("SAYIN_CONFIG");
	unsetenv("CREDENTIALS_DIRECTORY");
	for (size_t i = 0; i < 3; i++)
		unsetenv(secret_envs[i]);
	unsetenv("SAYIN_FASTLY_API_KEY_FILE");
	return 0;
}

static int remove_dir(void **state)
{
	char cmd[128];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

/* Writes bytes into dir/name with mode; returns the path (static buffer). */
static const char *put(const char *name, const char *bytes, size_t len, mode_t mode)
{
	static char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, bytes, len), (ssize_t)len);
	close(fd);
	assert_int_equal(chmod(path, mode), 0);
	return path;
}

/* config_load on a writable copy of the strings (secrets in argv are
 * overwritten); returns its result, *cfg set on 0. */
static int load_args(size_t n, const char *const *in, char copies[][256], config **cfg,
                     char *err)
{
	char *argv[16];
	assert_true(n < 16);
	for (size_t i = 0; i < n; i++) {
		snprintf(copies[i], 256, "%s", in[i]);
		argv[i] = copies[i];
	}
	argv[n] = NULL;
	return config_load((int)n, argv, NULL, 0, cfg, err, 256);
}

static void test_every_secret_reads_its_file(void **state)
{
	char flag[64], copies[4][256], err[256];
	config *cfg;
	(void)state;

	for (size_t i = 0; i < 3; i++) {
		const char *path = put("s", "t0ps3cret\n", 10, 0600);
		snprintf(flag, sizeof(flag), "--%s-file", secrets[i]);
		const char *argv[] = { "push", flag, path };
		assert_int_equal(load_args(3, argv, copies, &cfg, err), 0);
		assert_string_equal(config_get(cfg, secrets[i]), "t0ps3cret"); /* one \n trimmed */
		config_free(cfg);
	}
}

static void test_trims_one_newline_only(void **state)
{
	char copies[4][256], err[256];
	config *cfg;
	const char *argv[] = { "push", "--fastly-api-key-file", NULL };
	(void)state;

	argv[2] = put("crlf", "abc\r\n", 5, 0600);
	assert_int_equal(load_args(3, argv, copies, &cfg, err), 0);
	assert_string_equal(config_get(cfg, "fastly-api-key"), "abc");
	config_free(cfg);
	argv[2] = put("none", "abc", 3, 0600);
	assert_int_equal(load_args(3, argv, copies, &cfg, err), 0);
	assert_string_equal(config_get(cfg, "fastly-api-key"), "abc");
	config_free(cfg);
	/* Two newlines: the second line is not a secret's. */
	argv[2] = put("two", "abc\n\n", 5, 0600);
	assert_int_equal(load_args(3, argv, copies, &cfg, err), SAYIN_ECONFIG);
	assert_non_null(strstr(err, "one line"));
}

static void test_bad_files_are_refused_naming_the_setting(void **state)
{
	char copies[4][256], err[256];
	config *cfg;
	const char *argv[] = { "push", "--aws-secret-access-key-file", NULL };
	char big[70000];
	(void)state;

	memset(big, 'a', sizeof(big));
	struct {
		const char *name, *bytes;
		size_t len;
		mode_t mode;
		const char *says;
	} cases[] = {
		{ "world", "k3y\n", 4, 0604, "chmod 600" },
		{ "empty", "\n", 1, 0600, "empty" },
		{ "lines", "k3y\nmore\n", 9, 0600, "one line" },
		{ "nul", "k3\0y", 4, 0600, "one line" },
		{ "big", big, sizeof(big), 0600, "larger" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		argv[2] = put(cases[i].name, cases[i].bytes, cases[i].len, cases[i].mode);
		assert_int_equal(load_args(3, argv, copies, &cfg, err), SAYIN_ECONFIG);
		assert_non_null(strstr(err, "--aws-secret-access-key-file"));
		assert_non_null(strstr(err, cases[i].says));
		assert_null(strstr(err, "k3y")); /* never the secret */
	}
	/* Group access is allowed (systemd's credential ACLs show as group bits). */
	argv[2] = put("group", "k3y\n", 4, 0640);
	assert_int_equal(load_args(3, argv, copies, &cfg, err), 0);
	config_free(cfg);
	argv[2] = "/nonexistent/secret";
	assert_int_equal(load_args(3, argv, copies, &cfg, err), SAYIN_ECONFIG);
	assert_non_null(strstr(err, "/nonexistent/secret"));
	argv[2] = dir; /* a directory */
	assert_int_equal(load_args(3, argv, copies, &cfg, err), SAYIN_ECONFIG);
	assert_non_null(strstr(err, "not a regular file"));
}

static void test_bare_name_is_read_from_the_credentials_directory(void **state)
{
	char copies[4][256], err[256], rel[300];
	config *cfg;
	const char *argv[] = { "push", "--cloudflare-api-token-file", "cf" };
	(void)state;

	put("cf", "from-systemd\n", 13, 0400);
	setenv("CREDENTIALS_DIRECTORY", dir, 1);
	assert_int_equal(load_args(3, argv, copies, &cfg, err), 0);
	assert_string_equal(config_get(cfg, "cloudflare-api-token"), "from-systemd");
	config_free(cfg);
	/* A name with a slash is a path, credentials directory or not. */
	snprintf(rel, sizeof(rel), "%s/cf", dir);
	argv[2] = rel;
	assert_int_equal(load_args(3, argv, copies, &cfg, err), 0);
	config_free(cfg);
	/* Without the directory, a bare name is relative to the working directory. */
	unsetenv("CREDENTIALS_DIRECTORY");
	argv[2] = "cf-not-here";
	assert_int_equal(load_args(3, argv, copies, &cfg, err), SAYIN_ECONFIG);
}

static void test_precedence_between_a_secret_and_its_file(void **state)
{
	char copies[6][256], err[256], ini[300];
	config *cfg;
	const char *path = put("f", "from-file\n", 10, 0600);
	char fpath[256];
	(void)state;

	snprintf(fpath, sizeof(fpath), "%s", path);
	/* The file named by a flag beats the secret in the environment. */
	setenv("SAYIN_FASTLY_API_KEY", "from-env", 1);
	const char *a1[] = { "push", "--fastly-api-key-file", fpath };
	assert_int_equal(load_args(3, a1, copies, &cfg, err), 0);
	assert_string_equal(config_get(cfg, "fastly-api-key"), "from-file");
	config_free(cfg);
	/* The secret in the environment beats the file named in the config file. */
	snprintf(ini, sizeof(ini), "[cdn]\nfastly_api_key_file = %s\n", fpath);
	const char *ipath = put("c.ini", ini, strlen(ini), 0644);
	char ip[256];
	snprintf(ip, sizeof(ip), "%s", ipath);
	const char *a2[] = { "push", "--config", ip };
	assert_int_equal(load_args(3, a2, copies, &cfg, err), 0);
	assert_string_equal(config_get(cfg, "fastly-api-key"), "from-env");
	config_free(cfg);
	unsetenv("SAYIN_FASTLY_API_KEY");
	/* A file path is not a secret: a config file naming it may be 0644. */
	assert_int_equal(load_args(3, a2, copies, &cfg, err), 0);
	assert_string_equal(config_get(cfg, "fastly-api-key"), "from-file");
	config_free(cfg);
	/* Both at one level is an error. */
	const char *a3[] = { "push", "--fastly-api-key", "x", "--fastly-api-key-file", fpath };
	assert_int_equal(load_args(5, a3, copies, &cfg, err), SAYIN_ECONFIG);
	assert_non_null(strstr(err, "both"));
	setenv("SAYIN_FASTLY_API_KEY", "from-env", 1);
	setenv("SAYIN_FASTLY_API_KEY_FILE", fpath, 1);
	const char *a4[] = { "push" };
	assert_int_equal(load_args(1, a4, copies, &cfg, err), SAYIN_ECONFIG);
	assert_non_null(strstr(err, "environment"));
	unsetenv("SAYIN_FASTLY_API_KEY");
	unsetenv("SAYIN_FASTLY_API_KEY_FILE");
}

/* The warning goes to stderr: captured through a pipe on fd 2. */
static void test_a_secret_flag_is_warned_about_and_blanked(void **state)
{
	char copies[4][256], err[256], out[2048];
	int fds[2], saved;
	ssize_t n;
	config *cfg;
	const char *argv[] = { "push", "--fastly-api-key", "hunter2" };
	(void)state;

	assert_int_equal(pipe(fds), 0);
	saved = dup(2);
	dup2(fds[1], 2);
	assert_int_equal(load_args(3, argv, copies, &cfg, err), 0);
	dup2(saved, 2);
	close(saved);
	close(fds[1]);
	n = read(fds[0], out, sizeof(out) - 1);
	close(fds[0]);
	assert_true(n > 0);
	out[n] = '\0';
	assert_non_null(strstr(out, "warn"));
	assert_non_null(strstr(out, "--fastly-api-key"));
	assert_non_null(strstr(out, "SAYIN_FASTLY_API_KEY"));
	assert_non_null(strstr(out, "--fastly-api-key-file"));
	assert_null(strstr(out, "hunter2"));
	assert_string_equal(config_get(cfg, "fastly-api-key"), "hunter2");
	assert_string_equal(copies[2], "xxxxxxx"); /* gone from argv (/proc/PID/cmdline) */
	config_free(cfg);
	/* --flag=value form too; other flags are left alone. */
	const char *b[] = { "push", "--aws-secret-access-key=abc", "--bitrate", "24000" };
	assert_int_equal(load_args(4, b, copies, &cfg, err), 0);
	assert_string_equal(config_get(cfg, "aws-secret-access-key"), "abc");
	assert_string_equal(copies[1], "--aws-secret-access-key=xxx");
	assert_string_equal(copies[3], "24000");
	config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_every_secret_reads_its_file, make_dir, remove_dir),
		cmocka_unit_test_setup_teardown(test_trims_one_newline_only, make_dir, remove_dir),
		cmocka_unit_test_setup_teardown(test_bad_files_are_refused_naming_the_setting, make_dir,
		                                remove_dir),
		cmocka_unit_test_setup_teardown(test_bare_name_is_read_from_the_credentials_directory,
		                                make_dir, remove_dir),
		cmocka_unit_test_setup_teardown(test_precedence_between_a_secret_and_its_file, make_dir,
		                                remove_dir),
		cmocka_unit_test_setup_teardown(test_a_secret_flag_is_warned_about_and_blanked,
		                                make_dir, remove_dir),
	};
	return cmocka_run_group_tests_name("config_secrets", tests, NULL, NULL);
}

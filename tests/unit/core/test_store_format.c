/* test_store_format: the store's format version: recorded at creation, refused when newer or
 * (unless any_format) older, migrated in one transaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "core/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *make_dir(void)
{
	char tmpl[] = "/tmp/sayin-format-XXXXXX";
	char *d = mkdtemp(tmpl);
	assert_non_null(d);
	return strdup(d);
}

static void remove_dir(char *dir)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	free(dir);
}

static int open_store(const char *dir, int read_only, int any_format, store **st)
{
	store_options opt = { .map_size = 8 << 20, .read_only = read_only,
		              .any_format = any_format };
	return store_open(dir, &opt, st);
}

static unsigned version_of(store *st)
{
	store_txn *txn;
	unsigned v = 0;
	assert_int_equal(store_txn_begin(st, 0, &txn), 0);
	assert_int_equal(store_format_version(txn, &v), 0);
	store_txn_abort(txn);
	return v;
}

/* Writes (value != NULL) or deletes the format record, as another
 * version of the program would have left it. */
static void set_format(const char *dir, const char *value)
{
	store *st;
	store_txn *txn;
	assert_int_equal(open_store(dir, 0, 1, &st), 0);
	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	if (value != NULL)
		assert_int_equal(store_put_record(txn, STORE_META, STORE_FORMAT_KEY, value,
		                                  strlen(value)), 0);
	else
		assert_int_equal(store_delete_record(txn, STORE_META, STORE_FORMAT_KEY), 0);
	assert_int_equal(store_txn_commit(txn), 0);
	store_close(st);
}

static void test_a_new_store_is_at_the_current_format(void **state)
{
	(void)state;
	char *dir = make_dir();
	store *st;

	assert_int_equal(open_store(dir, 0, 0, &st), 0);
	assert_int_equal(version_of(st), STORE_FORMAT_VERSION);
	store_close(st);
	/* Reopened, by a writer and a reader: nothing to refuse. */
	assert_int_equal(open_store(dir, 0, 0, &st), 0);
	store_close(st);
	assert_int_equal(open_store(dir, 1, 0, &st), 0);
	assert_int_equal(version_of(st), STORE_FORMAT_VERSION);
	store_close(st);
	remove_dir(dir);
}

static void test_a_newer_store_is_refused_even_when_migrating(void **state)
{
	(void)state;
	char *dir = make_dir();
	store *st = NULL;

	assert_int_equal(open_store(dir, 0, 0, &st), 0);
	store_close(st);
	set_format(dir, "99");
	assert_int_equal(open_store(dir, 0, 0, &st), SAYIN_ESTORENEWER);
	assert_int_equal(open_store(dir, 1, 0, &st), SAYIN_ESTORENEWER);
	assert_int_equal(open_store(dir, 0, 1, &st), SAYIN_ESTORENEWER);
	assert_string_equal(sayin_strerror(SAYIN_ESTORENEWER),
	                    "store format is newer than this program's (upgrade the program)");
	remove_dir(dir);
}

static void test_an_older_store_is_refused_until_migrated(void **state)
{
	(void)state;
	char *dir = make_dir();
	store *st = NULL;
	unsigned from = 0;

	assert_int_equal(open_store(dir, 0, 0, &st), 0);
	store_close(st);
	set_format(dir, NULL); /* as every store was before the record existed */
	assert_int_equal(open_store(dir, 0, 0, &st), SAYIN_ESTOREOLDER);
	assert_int_equal(open_store(dir, 1, 0, &st), SAYIN_ESTOREOLDER);
	assert_int_equal(open_store(dir, 0, 1, &st), 0);
	assert_int_equal(version_of(st), 1);
	assert_int_equal(store_migrate(st, &from), 0);
	assert_int_equal(from, 1);
	assert_int_equal(version_of(st), STORE_FORMAT_VERSION);
	assert_int_equal(store_migrate(st, &from), 0);
	assert_int_equal(from, STORE_FORMAT_VERSION);
	store_close(st);
	assert_int_equal(open_store(dir, 1, 0, &st), 0);
	store_close(st);
	remove_dir(dir);
}

static void test_a_garbled_format_record_is_corrupt(void **state)
{
	(void)state;
	char *dir = make_dir();
	store *st = NULL;

	assert_int_equal(open_store(dir, 0, 0, &st), 0);
	store_close(st);
	set_format(dir, "two");
	assert_int_equal(open_store(dir, 0, 0, &st), SAYIN_ECORRUPT);
	remove_dir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_new_store_is_at_the_current_format),
		cmocka_unit_test(test_a_newer_store_is_refused_even_when_migrating),
		cmocka_unit_test(test_an_older_store_is_refused_until_migrated),
		cmocka_unit_test(test_a_garbled_format_record_is_corrupt),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

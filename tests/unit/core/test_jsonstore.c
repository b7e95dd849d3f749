/* test_jsonstore: JSON records in and out of the store, in one canonical form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "core/jsonstore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fixture {
	char dir[64];
	store *st;
	store_txn *txn;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	store_options opt = { 0 };

	snprintf(f->dir, sizeof(f->dir), "/tmp/sayin-jsonstore-XXXXXX");
	if (f == NULL || mkdtemp(f->dir) == NULL || store_open(f->dir, &opt, &f->st) != 0 ||
	    store_txn_begin(f->st, 1, &f->txn) != 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	store_txn_abort(f->txn);
	store_close(f->st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

static void test_put_then_get_in_canonical_form(void **state)
{
	struct fixture *f = *state;
	json_t *doc = json_pack("{s:s, s:i, s:[i,i]}", "zeta", "last", "alpha", 1, "list", 2, 3);
	json_t *back = NULL;
	const void *raw;
	size_t len;

	assert_int_equal(jsonstore_put(f->txn, STORE_META, "k", doc), 0);
	assert_int_equal(store_get_record(f->txn, STORE_META, "k", &raw, &len), 0);
	/* Compact, keys in insertion order: the same document is the same bytes. */
	assert_int_equal(len, strlen("{\"zeta\":\"last\",\"alpha\":1,\"list\":[2,3]}"));
	assert_memory_equal(raw, "{\"zeta\":\"last\",\"alpha\":1,\"list\":[2,3]}", len);
	assert_int_equal(jsonstore_get(f->txn, STORE_META, "k", &back), 0);
	assert_true(json_equal(doc, back));
	json_decref(doc);
	json_decref(back);
}

static void test_missing_and_corrupt_records(void **state)
{
	struct fixture *f = *state;
	json_t *before = json_object(), *out = before;

	/* *out is set to NULL on error, whatever it held. */
	assert_int_equal(jsonstore_get(f->txn, STORE_META, "absent", &out), SAYIN_ENOTFOUND);
	assert_null(out);
	json_decref(before);
	assert_int_equal(store_put_record(f->txn, STORE_META, "bad", "{\"a\":", 5), 0);
	assert_int_equal(jsonstore_get(f->txn, STORE_META, "bad", &out), SAYIN_ECORRUPT);
	assert_null(out);
	/* A record must be an object: a bare value is corrupt too. */
	assert_int_equal(jsonstore_parse("[1]", 3, &out), SAYIN_ECORRUPT);
	assert_int_equal(jsonstore_parse("{}", 2, &out), 0);
	assert_true(json_is_object(out));
	json_decref(out);
}

/* jansson's allocations, the Nth of which fails (0: none). */
static unsigned long alloc_calls, alloc_fail_at;

static void *failing_malloc(size_t n)
{
	if (++alloc_calls == alloc_fail_at)
		return NULL;
	return malloc(n);
}

/* Regression (tests/fault): jansson 2.14's json_dumps ignores a failed
 * write of an object's key and went on, so a record was stored as
 * {"id":"1",":"varnish"}. Whichever allocation fails, a dump is whole or
 * NULL. */
static void test_dump_is_whole_or_null_when_memory_runs_out(void **state)
{
	json_t *doc = json_pack("{s:s, s:s, s:{s:[s,s,s], s:i}, s:s}", "id", "00000000000000000001",
	                        "target", "varnish", "payload", "paths", "/u/ann/feed.json",
	                        "/u/ann/", "/p/01m990epvmp5hc084cjzv9ab3c", "attempts", 3,
	                        "last_error", "a longer text so that the output grows many times");
	char *whole = jsonstore_dumps(doc, NULL);
	(void)state;
	assert_non_null(whole);
	json_set_alloc_funcs(failing_malloc, free);
	for (alloc_fail_at = 1; alloc_fail_at < 200; alloc_fail_at++) {
		size_t len = 0;
		char *s;
		alloc_calls = 0;
		s = jsonstore_dumps(doc, &len);
		if (s == NULL)
			continue;
		assert_string_equal(s, whole);
		assert_int_equal(len, strlen(whole));
		free(s);
	}
	json_set_alloc_funcs(malloc, free);
	json_decref(doc);
	free(whole);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_put_then_get_in_canonical_form, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_and_corrupt_records, setup, teardown),
		cmocka_unit_test(test_dump_is_whole_or_null_when_memory_runs_out),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

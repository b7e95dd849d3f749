/* test_store: the store's contract: content addressing, names, posts, atomicity, limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "error.h"
#include "store.h"

#include <lmdb.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *make_dir(void)
{
	char tmpl[] = "/tmp/sayin-store-XXXXXX";
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

static store *open_rw(const char *dir, uint64_t map_size)
{
	store_options opt = { .map_size = map_size };
	store *st = NULL;
	assert_int_equal(store_open(dir, &opt, &st), 0);
	return st;
}

static void test_identical_bytes_stored_once(void **state)
{
	(void)state;
	char *dir = make_dir();
	store *st = open_rw(dir, 0);
	store_txn *txn;
	uint8_t h1[STORE_HASH_LEN], h2[STORE_HASH_LEN];
	int is_new = -1;
	store_stats stats;
	store_object obj;
	char hex[STORE_HASH_HEX_LEN + 1];

	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	assert_int_equal(store_put_object(txn, "abc", 3, "text/plain", 100, h1, &is_new), 0);
	assert_int_equal(is_new, 1);
	assert_int_equal(store_put_object(txn, "abc", 3, "text/other", 200, h2, &is_new), 0);
	assert_int_equal(is_new, 0);
	assert_memory_equal(h1, h2, STORE_HASH_LEN);
	assert_int_equal(store_txn_commit(txn), 0);

	/* The key is SHA-256 of the bytes. */
	store_hash_to_hex(h1, hex);
	assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

	assert_int_equal(store_txn_begin(st, 0, &txn), 0);
	assert_int_equal(store_get_object(txn, h1, &obj), 0);
	assert_int_equal(obj.size, 3);
	assert_memory_equal(obj.data, "abc", 3);
	/* The first writer's metadata is kept. */
	assert_string_equal(obj.content_type, "text/plain");
	assert_int_equal(obj.created, 100);
	assert_int_equal(store_stats_get(txn, &stats), 0);
	assert_int_equal(stats.objects, 1);
	store_txn_abort(txn);
	store_close(st);
	remove_dir(dir);
}

static void test_names_are_mutable_pointers(void **state)
{
	(void)state;
	char *dir = make_dir();
	store *st = open_rw(dir, 0);
	store_txn *txn;
	uint8_t a[STORE_HASH_LEN], b[STORE_HASH_LEN], missing[STORE_HASH_LEN] = { 1 };
	store_name name;

	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	assert_int_equal(store_put_object(txn, "one", 3, "text/plain", 1, a, NULL), 0);
	assert_int_equal(store_put_object(txn, "two", 3, "text/plain", 1, b, NULL), 0);
	assert_int_equal(store_set_name(txn, "/u/x/feed.json", a, 10), 0);
	assert_int_equal(store_get_name(txn, "/u/x/feed.json", &name), 0);
	assert_memory_equal(name.hash, a, STORE_HASH_LEN);
	assert_int_equal(store_set_name(txn, "/u/x/feed.json", b, 20), 0);
	assert_int_equal(store_get_name(txn, "/u/x/feed.json", &name), 0);
	assert_memory_equal(name.hash, b, STORE_HASH_LEN);
	assert_int_equal(name.updated, 20);
	/* A name cannot point at nothing. */
	assert_int_equal(store_set_name(txn, "/dangling", missing, 1), SAYIN_ENOTFOUND);
	assert_int_equal(store_get_name(txn, "/nope", &name), SAYIN_ENOTFOUND);
	store_txn_abort(txn);
	store_close(st);
	remove_dir(dir);
}

static void test_name_variants_and_keys(void **state)
{
	(void)state;
	char *dir = make_dir();
	store *st = open_rw(dir, 0);
	store_txn *txn;
	uint8_t id[STORE_HASH_LEN], br[STORE_HASH_LEN], missing[STORE_HASH_LEN] = { 7 };
	char long_key[STORE_SURROGATE_KEY_MAX + 2];
	store_name name;

	memset(long_key, 'k', sizeof(long_key) - 1);
	long_key[sizeof(long_key) - 1] = '\0';
	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	assert_int_equal(store_put_object(txn, "plain", 5, "text/plain", 1, id, NULL), 0);
	assert_int_equal(store_put_object(txn, "brbr", 4, "text/plain", 1, br, NULL), 0);
	store_name_spec spec = { .variant = { [STORE_ENC_IDENTITY] = id, [STORE_ENC_BR] = br },
		                 .surrogate_key = "author-ann feed-ann" };
	assert_int_equal(store_set_name_variants(txn, "/f", &spec, 5), 0);
	assert_int_equal(store_get_name(txn, "/f", &name), 0);
	assert_int_equal(name.encodings, (1u << STORE_ENC_IDENTITY) | (1u << STORE_ENC_BR));
	assert_memory_equal(name.hash, id, STORE_HASH_LEN);
	assert_memory_equal(name.variant[STORE_ENC_BR], br, STORE_HASH_LEN);
	assert_string_equal(name.surrogate_key, "author-ann feed-ann");
	/* Every variant must exist; identity is required; keys are bounded. */
	spec.variant[STORE_ENC_GZIP] = missing;
	assert_int_equal(store_set_name_variants(txn, "/g", &spec, 5), SAYIN_ENOTFOUND);
	spec.variant[STORE_ENC_GZIP] = NULL;
	spec.surrogate_key = long_key;
	assert_int_equal(store_set_name_variants(txn, "/g", &spec, 5), SAYIN_EINVAL);
	store_name_spec no_identity = { .variant = { [STORE_ENC_BR] = br } };
	assert_int_equal(store_set_name_variants(txn, "/g", &no_identity, 5), SAYIN_EINVAL);
	/* The plain form leaves no key and only identity. */
	assert_int_equal(store_set_name(txn, "/f", id, 6), 0);
	assert_int_equal(store_get_name(txn, "/f", &name), 0);
	assert_int_equal(name.encodings, 1u);
	assert_string_equal(name.surrogate_key, "");
	store_txn_abort(txn);
	store_close(st);
	remove_dir(dir);
}

static int collect_ids(void *arg, const char *id, uint64_t seq, const void *record, size_t len)
{
	char *out = arg;
	size_t used = strlen(out);
	(void)record;
	(void)len;
	(void)seq;
	snprintf(out + used, 256 - used, "%s,", id);
	return 0;
}

static void test_author_posts_newest_first(void **state)
{
	(void)state;
	char *dir = make_dir();
	store *st = open_rw(dir, 0);
	store_txn *txn;
	char ids[256] = "";
	size_t count = 0;
	const void *rec;
	size_t len;

	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	/* The index orders by seq, not by id. */
	assert_int_equal(store_put_post(txn, "01b", "ann", 2, "{\"n\":2}", 7), 0);
	assert_int_equal(store_put_post(txn, "01z", "ann", 1, "{\"n\":1}", 7), 0);
	assert_int_equal(store_put_post(txn, "01c", "ann", 3, "{\"n\":3}", 7), 0);
	assert_int_equal(store_put_post(txn, "01d", "bob", 1, "{}", 2), 0);
	assert_int_equal(store_put_post(txn, "01z", "ann", 4, "{}", 2), -EEXIST);
	assert_int_equal(store_txn_commit(txn), 0);

	assert_int_equal(store_txn_begin(st, 0, &txn), 0);
	assert_int_equal(store_author_posts(txn, "ann", 0, collect_ids, ids), 0);
	assert_string_equal(ids, "01c,01b,01z,");
	ids[0] = '\0';
	assert_int_equal(store_author_posts(txn, "ann", 2, collect_ids, ids), 0);
	assert_string_equal(ids, "01c,01b,");
	assert_int_equal(store_author_post_count(txn, "ann", &count), 0);
	assert_int_equal(count, 3);
	assert_int_equal(store_author_post_count(txn, "nobody", &count), 0);
	assert_int_equal(count, 0);
	assert_int_equal(store_get_post(txn, "01b", &rec, &len), 0);
	assert_memory_equal(rec, "{\"n\":2}", 7);
	store_txn_abort(txn);
	store_close(st);
	remove_dir(dir);
}

static void test_author_posts_range_and_delete(void **state)
{
	(void)state;
	char *dir = make_dir();
	store *st = open_rw(dir, 0);
	store_txn *txn;
	char ids[256] = "", id[16];
	size_t count = 0;

	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	/* seq 1..300 for ann, 256 and 257 straddle a byte boundary. */
	for (unsigned i = 1; i <= 300; i++) {
		snprintf(id, sizeof(id), "p%03u", i);
		assert_int_equal(store_put_post(txn, id, "ann", i, "{}", 2), 0);
	}
	assert_int_equal(store_put_post(txn, "q1", "bob", 1, "{}", 2), 0);
	assert_int_equal(store_txn_commit(txn), 0);

	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	assert_int_equal(store_author_posts_range(txn, "ann", 258, 255, 0, collect_ids, ids), 0);
	assert_string_equal(ids, "p258,p257,p256,p255,");
	ids[0] = '\0';
	assert_int_equal(store_author_posts_range(txn, "ann", 3, 1, 2, collect_ids, ids), 0);
	assert_string_equal(ids, "p003,p002,");
	ids[0] = '\0';
	/* A range past the newest post starts at the newest. */
	assert_int_equal(store_author_posts_range(txn, "ann", 1000, 299, 0, collect_ids, ids), 0);
	assert_string_equal(ids, "p300,p299,");
	ids[0] = '\0';
	assert_int_equal(store_author_posts_range(txn, "bob", 5, 1, 0, collect_ids, ids), 0);
	assert_string_equal(ids, "q1,");
	ids[0] = '\0';
	assert_int_equal(store_author_posts_range(txn, "ann", 2, 3, 0, collect_ids, ids), 0);
	assert_string_equal(ids, "");

	/* Deleting leaves a gap; a wrong seq is refused. */
	assert_int_equal(store_delete_post(txn, "p257", "ann", 257), 0);
	assert_int_equal(store_delete_post(txn, "p257", "ann", 257), SAYIN_ENOTFOUND);
	assert_int_equal(store_delete_post(txn, "p256", "ann", 9), SAYIN_ECORRUPT);
	store_txn_abort(txn);

	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	assert_int_equal(store_delete_post(txn, "p257", "ann", 257), 0);
	assert_int_equal(store_txn_commit(txn), 0);
	assert_int_equal(store_txn_begin(st, 0, &txn), 0);
	assert_int_equal(store_author_posts_range(txn, "ann", 258, 256, 0, collect_ids, ids), 0);
	assert_string_equal(ids, "p258,p256,");
	assert_int_equal(store_author_post_count(txn, "ann", &count), 0);
	assert_int_equal(count, 299);
	store_txn_abort(txn);
	store_close(st);
	remove_dir(dir);
}

static void test_refs_count_posts(void **state)
{
	(void)state;
	char *dir = make_dir();
	store *st = open_rw(dir, 0);
	store_txn *txn;
	uint8_t h[STORE_HASH_LEN];
	size_t left = 99;

	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	assert_int_equal(store_put_object(txn, "x", 1, "text/plain", 1, h, NULL), 0);
	assert_int_equal(store_ref_add(txn, h, "p1"), 0);
	assert_int_equal(store_ref_add(txn, h, "p2"), 0);
	assert_int_equal(store_ref_add(txn, h, "p2"), 0);
	assert_int_equal(store_ref_remove(txn, h, "p1", &left), 0);
	assert_int_equal(left, 1);
	assert_int_equal(store_ref_remove(txn, h, "p1", &left), 0);
	assert_int_equal(left, 1);
	assert_int_equal(store_ref_remove(txn, h, "p2", &left), 0);
	assert_int_equal(left, 0);
	store_txn_abort(txn);
	store_close(st);
	remove_dir(dir);
}

struct seen_records {
	char keys[256];
	int delete_each;
	store_txn *txn;
};

static int collect_records(void *arg, const char *key, const void *record, size_t len)
{
	struct seen_records *s = arg;
	size_t used = strlen(s->keys);
	snprintf(s->keys + used, sizeof(s->keys) - used, "%s=%.*s,", key, (int)len,
	         (const char *)record);
	if (s->delete_each)
		assert_int_equal(store_delete_record(s->txn, STORE_TOKENS, key), 0);
	return 0;
}

static void test_records_tables(void **state)
{
	(void)state;
	char *dir = make_dir();
	store *st = open_rw(dir, 0);
	store_txn *txn;
	struct seen_records s = { .keys = "" };
	const void *rec;
	size_t len;

	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	assert_int_equal(store_put_record(txn, STORE_TOKENS, "ann\nb", "2", 1), 0);
	assert_int_equal(store_put_record(txn, STORE_TOKENS, "ann\na", "1", 1), 0);
	assert_int_equal(store_put_record(txn, STORE_TOKENS, "anna\na", "3", 1), 0);
	assert_int_equal(store_put_record(txn, STORE_TOKENS, "bob\na", "4", 1), 0);
	assert_int_equal(store_put_record(txn, STORE_IDEMPOTENCY, "ann\na", "other", 5), 0);
	assert_int_equal(store_put_record(txn, STORE_TOKENS, "", "x", 1), SAYIN_EINVAL);
	assert_int_equal(store_get_record(txn, STORE_TOKENS, "ann\na", &rec, &len), 0);
	assert_memory_equal(rec, "1", 1);
	assert_int_equal(store_each_record(txn, STORE_TOKENS, "ann\n", collect_records, &s), 0);
	assert_string_equal(s.keys, "ann\na=1,ann\nb=2,");
	s.keys[0] = '\0';
	s.delete_each = 1;
	s.txn = txn;
	assert_int_equal(store_each_record(txn, STORE_TOKENS, "", collect_records, &s), 0);
	assert_string_equal(s.keys, "ann\na=1,ann\nb=2,anna\na=3,bob\na=4,");
	assert_int_equal(store_get_record(txn, STORE_TOKENS, "bob\na", &rec, &len), SAYIN_ENOTFOUND);
	assert_int_equal(store_delete_record(txn, STORE_TOKENS, "bob\na"), SAYIN_ENOTFOUND);
	/* Tables are separate. */
	assert_int_equal(store_get_record(txn, STORE_IDEMPOTENCY, "ann\na", &rec, &len), 0);
	assert_memory_equal(rec, "other", 5);
	assert_int_equal(store_delete_name(txn, "/nothing"), SAYIN_ENOTFOUND);
	store_txn_abort(txn);
	store_close(st);
	remove_dir(dir);
}

/* A store written by an older publisher, before the newer tables existed,
 * still opens read-only (the origin), its missing tables reading as empty. */
static void test_reader_of_an_older_store(void **state)
{
	(void)state;
	static const char *const old_dbs[] = { "objects", "names", "posts", "author_posts",
		                               "authors" };
	char *dir = make_dir();
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	store *st;
	store_txn *t;
	store_options ro = { .read_only = 1 };
	const void *rec;
	size_t len;

	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
	assert_int_equal(mdb_env_open(env, dir, 0, 0640), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(mdb_dbi_open(txn, old_dbs[i], MDB_CREATE | (i == 3 ? MDB_DUPSORT : 0),
		                              &dbi), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);

	assert_int_equal(store_open(dir, &ro, &st), 0);
	assert_int_equal(store_txn_begin(st, 0, &t), 0);
	assert_int_equal(store_get_record(t, STORE_TOKENS, "abc", &rec, &len), SAYIN_ENOTFOUND);
	assert_int_equal(store_get_record(t, STORE_OUTBOX, "abc", &rec, &len), SAYIN_ENOTFOUND);
	assert_int_equal(store_each_record(t, STORE_OUTBOX, "", NULL, NULL), 0);
	store_txn_abort(t);
	store_close(st);
	remove_dir(dir);
}

static void test_aborted_txn_leaves_nothing(void **state)
{
	(void)state;
	char *dir = make_dir();
	store *st = open_rw(dir, 0);
	store_txn *txn;
	uint8_t h[STORE_HASH_LEN];
	const void *rec;
	size_t len;
	store_name name;

	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	assert_int_equal(store_put_object(txn, "x", 1, "text/plain", 1, h, NULL), 0);
	assert_int_equal(store_set_name(txn, "/n", h, 1), 0);
	assert_int_equal(store_put_post(txn, "p1", "ann", 1, "{}", 2), 0);
	store_txn_abort(txn);

	assert_int_equal(store_txn_begin(st, 0, &txn), 0);
	assert_int_equal(store_get_post(txn, "p1", &rec, &len), SAYIN_ENOTFOUND);
	assert_int_equal(store_get_name(txn, "/n", &name), SAYIN_ENOTFOUND);
	store_object obj;
	assert_int_equal(store_get_object(txn, h, &obj), SAYIN_ENOTFOUND);
	store_txn_abort(txn);
	store_close(st);
	remove_dir(dir);
}

static void test_full_map_is_store_full(void **state)
{
	(void)state;
	char *dir = make_dir();
	store *st = open_rw(dir, 1 << 20); /* 1 MiB */
	store_txn *txn;
	uint8_t h[STORE_HASH_LEN], keep[STORE_HASH_LEN];
	size_t big = 256 * 1024;
	unsigned char *bytes = malloc(big);
	store_object obj;
	int rc = 0;

	assert_non_null(bytes);
	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	assert_int_equal(store_put_object(txn, "keep", 4, "text/plain", 1, keep, NULL), 0);
	assert_int_equal(store_txn_commit(txn), 0);

	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	for (int i = 0; i < 16 && rc == 0; i++) {
		memset(bytes, i + 1, big);
		rc = store_put_object(txn, bytes, big, "application/octet-stream", 1, h, NULL);
	}
	if (rc == 0)
		rc = store_txn_commit(txn);
	else
		store_txn_abort(txn);
	assert_int_equal(rc, SAYIN_ESTOREFULL);
	assert_string_equal(sayin_strerror(rc), "store full (raise map-size)");

	/* What was committed before is intact and the store still works. */
	assert_int_equal(store_txn_begin(st, 0, &txn), 0);
	assert_int_equal(store_get_object(txn, keep, &obj), 0);
	assert_memory_equal(obj.data, "keep", 4);
	store_txn_abort(txn);
	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	assert_int_equal(store_put_object(txn, "small", 5, "text/plain", 1, h, NULL), 0);
	assert_int_equal(store_txn_commit(txn), 0);
	free(bytes);
	store_close(st);
	remove_dir(dir);
}

static void test_read_only_refuses_writes_and_sees_commits(void **state)
{
	(void)state;
	char *dir = make_dir();
	store *rw = open_rw(dir, 0), *ro = NULL;
	store_options opt = { .read_only = 1 };
	store_txn *wtxn, *rtxn;
	uint8_t h[STORE_HASH_LEN];
	store_name name;

	assert_int_equal(store_open(dir, &opt, &ro), 0);
	assert_int_equal(store_txn_begin(ro, 1, &rtxn), SAYIN_EREADONLY);

	/* A reader that began before a commit keeps its snapshot; a new one sees it. */
	assert_int_equal(store_txn_begin(ro, 0, &rtxn), 0);
	assert_int_equal(store_txn_begin(rw, 1, &wtxn), 0);
	assert_int_equal(store_put_object(wtxn, "v1", 2, "text/plain", 1, h, NULL), 0);
	assert_int_equal(store_set_name(wtxn, "/n", h, 1), 0);
	assert_int_equal(store_txn_commit(wtxn), 0);
	assert_int_equal(store_get_name(rtxn, "/n", &name), SAYIN_ENOTFOUND);
	store_txn_abort(rtxn);
	assert_int_equal(store_txn_begin(ro, 0, &rtxn), 0);
	assert_int_equal(store_get_name(rtxn, "/n", &name), 0);
	store_txn_abort(rtxn);

	store_close(ro);
	store_close(rw);
	remove_dir(dir);
}

static void test_read_only_open_of_missing_store(void **state)
{
	(void)state;
	store_options opt = { .read_only = 1 };
	store *st = NULL;
	assert_int_equal(store_open("/tmp/sayin-no-such-store-dir", &opt, &st), -ENOENT);
	assert_null(st);
}

static void test_hex_round_trip(void **state)
{
	(void)state;
	uint8_t h[STORE_HASH_LEN], back[STORE_HASH_LEN];
	char hex[STORE_HASH_HEX_LEN + 1];
	for (int i = 0; i < STORE_HASH_LEN; i++)
		h[i] = (uint8_t)(i * 37);
	store_hash_to_hex(h, hex);
	assert_int_equal(store_hash_from_hex(hex, strlen(hex), back), 0);
	assert_memory_equal(h, back, STORE_HASH_LEN);
	hex[5] = 'G';
	assert_int_equal(store_hash_from_hex(hex, strlen(hex), back), SAYIN_EINVAL);
	assert_int_equal(store_hash_from_hex("abcd", 4, back), SAYIN_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_identical_bytes_stored_once),
		cmocka_unit_test(test_names_are_mutable_pointers),
		cmocka_unit_test(test_name_variants_and_keys),
		cmocka_unit_test(test_author_posts_newest_first),
		cmocka_unit_test(test_author_posts_range_and_delete),
		cmocka_unit_test(test_refs_count_posts),
		cmocka_unit_test(test_records_tables),
		cmocka_unit_test(test_reader_of_an_older_store),
		cmocka_unit_test(test_aborted_txn_leaves_nothing),
		cmocka_unit_test(test_full_map_is_store_full),
		cmocka_unit_test(test_read_only_refuses_writes_and_sees_commits),
		cmocka_unit_test(test_read_only_open_of_missing_store),
		cmocka_unit_test(test_hex_round_trip),
	};
	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}

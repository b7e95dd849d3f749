/* test_store: the store's contract: content addressing, names, posts, atomicity, limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "core/store.h"

#include <lmdb.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
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

/* Tombstones cover their path and what is under it, by whole segments. */
static void test_tombstones_cover_whole_segments(void **state)
{
	(void)state;
	char *dir = make_dir();
	store *st = open_rw(dir, 0);
	store_txn *txn;

	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	assert_int_equal(store_find_gone(txn, "/u/ann/feed.json"), SAYIN_ENOTFOUND);
	assert_int_equal(store_put_gone(txn, "/u/ann", 1), 0);
	assert_int_equal(store_put_gone(txn, "/p/01abc", 1), 0);
	assert_int_equal(store_put_gone(txn, "/p/01abc", 2), 0); /* again: no-op */
	assert_int_equal(store_put_gone(txn, "no-slash", 1), SAYIN_EINVAL);
	assert_int_equal(store_txn_commit(txn), 0);

	assert_int_equal(store_txn_begin(st, 0, &txn), 0);
	assert_int_equal(store_find_gone(txn, "/u/ann"), 0);
	assert_int_equal(store_find_gone(txn, "/u/ann/"), 0);
	assert_int_equal(store_find_gone(txn, "/u/ann/feed.json"), 0);
	assert_int_equal(store_find_gone(txn, "/u/ann/feed/3.json"), 0);
	assert_int_equal(store_find_gone(txn, "/p/01abc/embed"), 0);
	assert_int_equal(store_find_gone(txn, "/u/anna/feed.json"), SAYIN_ENOTFOUND);
	assert_int_equal(store_find_gone(txn, "/u/an"), SAYIN_ENOTFOUND);
	assert_int_equal(store_find_gone(txn, "/u"), SAYIN_ENOTFOUND);
	assert_int_equal(store_find_gone(txn, "/p/01abcd"), SAYIN_ENOTFOUND);
	assert_int_equal(store_find_gone(txn, "/"), SAYIN_ENOTFOUND);
	store_txn_abort(txn);

	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	assert_int_equal(store_delete_gone(txn, "/u/ann"), 0);
	assert_int_equal(store_delete_gone(txn, "/u/ann"), SAYIN_ENOTFOUND);
	assert_int_equal(store_find_gone(txn, "/u/ann/feed.json"), SAYIN_ENOTFOUND);
	store_txn_abort(txn);
	store_close(st);
	remove_dir(dir);
}

/* A store written by an older publisher, before the newer tables existed,
 * opens read-only with any_format (an older format is otherwise refused:
 * test_store_format), its missing tables reading as empty. */
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
	store_options ro = { .read_only = 1, .any_format = 1 };
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


/* An unlinked temporary file holding len bytes of a pattern seeded by seed,
 * written in pieces. */
static int pattern_file(uint64_t len, unsigned seed)
{
	char tmpl[] = "/tmp/sayin-obj-XXXXXX";
	int fd = mkstemp(tmpl);
	unsigned char buf[65536];
	uint32_t x = seed * 2654435761u + 1;

	assert_true(fd >= 0);
	unlink(tmpl);
	for (uint64_t done = 0; done < len;) {
		size_t n = len - done < sizeof(buf) ? (size_t)(len - done) : sizeof(buf);
		for (size_t i = 0; i < n; i++) {
			x = x * 1664525u + 1013904223u;
			buf[i] = (unsigned char)(x >> 24);
		}
		assert_int_equal(write(fd, buf, n), (ssize_t)n);
		done += n;
	}
	/* The file offset must not matter. */
	assert_int_equal(lseek(fd, 7, SEEK_SET), 7);
	return fd;
}

static unsigned char *file_bytes(int fd, uint64_t len)
{
	unsigned char *b = malloc(len ? len : 1);
	assert_non_null(b);
	assert_int_equal(pread(fd, b, len, 0), (ssize_t)len);
	return b;
}

static void test_object_from_a_file(void **state)
{
	(void)state;
	/* Through the map (small), into the file (large), and around a page. */
	static const uint64_t sizes[] = { 0, 100, 4000, 65535, 65536, 1048579, 3u << 20 };
	char *dir = make_dir();
	store *st = open_rw(dir, 0);

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		int fd = pattern_file(sizes[i], (unsigned)i);
		unsigned char *bytes = file_bytes(fd, sizes[i]);
		uint8_t from_file[STORE_HASH_LEN], from_mem[STORE_HASH_LEN];
		store_txn *txn;
		store_object obj;
		int is_new = -1;

		assert_int_equal(store_txn_begin(st, 1, &txn), 0);
		assert_int_equal(store_put_object_file(txn, fd, sizes[i], "audio/ogg", 5, from_file,
		                                       &is_new), 0);
		assert_int_equal(is_new, 1);
		/* The same bytes from memory are the same object, stored once. */
		assert_int_equal(store_put_object(txn, bytes, sizes[i], "audio/ogg", 6, from_mem,
		                                  &is_new), 0);
		assert_int_equal(is_new, 0);
		assert_memory_equal(from_file, from_mem, STORE_HASH_LEN);
		assert_int_equal(store_txn_commit(txn), 0);

		assert_int_equal(store_txn_begin(st, 0, &txn), 0);
		assert_int_equal(store_get_object(txn, from_file, &obj), 0);
		assert_int_equal(obj.size, sizes[i]);
		assert_string_equal(obj.content_type, "audio/ogg");
		assert_int_equal(obj.created, 5);
		if (sizes[i] > 0)
			assert_memory_equal(obj.data, bytes, sizes[i]);
		store_txn_abort(txn);
		free(bytes);
		close(fd);
	}
	store_close(st);
	remove_dir(dir);
}

static void test_object_from_a_short_file_is_refused(void **state)
{
	(void)state;
	char *dir = make_dir();
	store *st = open_rw(dir, 0);
	int fd = pattern_file(200000, 3);
	uint8_t h[STORE_HASH_LEN];
	store_txn *txn;
	store_stats stats;

	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	assert_int_equal(store_put_object_file(txn, fd, 200001, "audio/ogg", 1, h, NULL), -EIO);
	store_txn_abort(txn);
	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	assert_int_equal(store_put_object_file(txn, -1, 10, "audio/ogg", 1, h, NULL), SAYIN_EINVAL);
	assert_int_equal(store_stats_get(txn, &stats), 0);
	assert_int_equal(stats.objects, 0);
	store_txn_abort(txn);
	close(fd);
	store_close(st);
	remove_dir(dir);
}

/* The peak resident memory of this process, in KiB, since the last reset. */
static long peak_rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kib = -1;
	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
			break;
	}
	fclose(f);
	return kib;
}

static void reset_peak_rss(void)
{
	FILE *f = fopen("/proc/self/clear_refs", "w");
	assert_non_null(f);
	assert_true(fputs("5", f) >= 0);
	fclose(f);
}

/* Storing a 64 MiB object from a file, and one from memory, does not cost
 * the writer memory for the bytes: LMDB's dirty pages would (without
 * MDB_WRITEMAP every dirty page is a malloc'd copy), and so would writing
 * them through the map. */
static void test_big_objects_cost_no_memory(void **state)
{
	(void)state;
	const uint64_t len = 64u << 20;
	char *dir = make_dir();
	store *st = open_rw(dir, 0);
	int fd = pattern_file(len, 9);
	unsigned char *bytes = file_bytes(fd, len);
	uint8_t h1[STORE_HASH_LEN], h2[STORE_HASH_LEN];
	store_txn *txn;
	store_object obj;
	long before, grew_file, grew_mem;

	bytes[0] ^= 1; /* a different object from the file's */
	reset_peak_rss();
	before = peak_rss_kib();
	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	assert_int_equal(store_put_object_file(txn, fd, len, "audio/mp4", 1, h1, NULL), 0);
	assert_int_equal(store_txn_commit(txn), 0);
	grew_file = peak_rss_kib() - before;

	reset_peak_rss();
	before = peak_rss_kib();
	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	assert_int_equal(store_put_object(txn, bytes, len, "audio/mp4", 1, h2, NULL), 0);
	assert_int_equal(store_txn_commit(txn), 0);
	grew_mem = peak_rss_kib() - before;
	print_message("peak RSS growth storing 64 MiB: from a file %ld KiB, from memory %ld KiB\n",
	              grew_file, grew_mem);
	assert_true(grew_file < 4096);
	assert_true(grew_mem < 4096);

	assert_int_equal(store_txn_begin(st, 0, &txn), 0);
	assert_int_equal(store_get_object(txn, h2, &obj), 0);
	assert_int_equal(obj.size, len);
	assert_memory_equal(obj.data, bytes, len);
	assert_int_equal(store_get_object(txn, h1, &obj), 0);
	bytes[0] ^= 1;
	assert_memory_equal(obj.data, bytes, len);
	store_txn_abort(txn);
	free(bytes);
	close(fd);
	store_close(st);
	remove_dir(dir);
}

/* The child of test_full_disk_is_an_error: a store on an 8 MiB tmpfs of its
 * own mount namespace. Exit 0: passed; 77: cannot mount here; else the
 * failed step. */
static int full_disk_child(void)
{
	char *dir = make_dir();
	char path[300];
	uint8_t small[STORE_HASH_LEN], big[STORE_HASH_LEN], h[STORE_HASH_LEN];
	store_options opt = { .map_size = 256u << 20 };
	store *st = NULL;
	store_txn *txn;
	store_object obj;
	int fd1, fd2, rc;

	if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
	    mount("tmpfs", dir, "tmpfs", 0, "size=8m") != 0)
		return 77;
	snprintf(path, sizeof(path), "%s/store", dir);
	if (store_open(path, &opt, &st) != 0)
		return 1;
	fd1 = pattern_file(1u << 20, 1);
	fd2 = pattern_file(16u << 20, 2); /* in /tmp, outside the small disk */
	if (store_txn_begin(st, 1, &txn) != 0 ||
	    store_put_object_file(txn, fd1, 1u << 20, "audio/ogg", 1, small, NULL) != 0 ||
	    store_txn_commit(txn) != 0)
		return 2;
	/* 16 MiB cannot fit on 8 MiB: an error, not SIGBUS. */
	if (store_txn_begin(st, 1, &txn) != 0)
		return 3;
	rc = store_put_object_file(txn, fd2, 16u << 20, "audio/ogg", 1, big, NULL);
	store_txn_abort(txn);
	if (rc != -ENOSPC)
		return 4;
	/* What was committed is intact, and a small object still goes in. */
	if (store_txn_begin(st, 0, &txn) != 0 || store_get_object(txn, small, &obj) != 0 ||
	    obj.size != 1u << 20)
		return 5;
	store_txn_abort(txn);
	if (store_txn_begin(st, 1, &txn) != 0 ||
	    store_put_object(txn, "still works", 11, "text/plain", 1, h, NULL) != 0 ||
	    store_txn_commit(txn) != 0)
		return 6;
	store_close(st);
	return 0;
}

static void test_full_disk_is_an_error(void **state)
{
	(void)state;
	int status = 0;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0)
		_exit(full_disk_child());
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
		skip(); /* not root, or no mount namespaces here */
	if (WIFSIGNALED(status))
		fail_msg("the writer died of signal %d on a full disk", WTERMSIG(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* store_readers counts the slots taken now, in every process. */
static void test_readers_counts_read_transactions(void **state)
{
	char *dir = make_dir();
	store *st = open_rw(dir, 1 << 20);
	store_txn *a, *b;
	unsigned used0, used, max;

	(void)state;
	assert_int_equal(store_readers(st, &used0, &max), 0);
	assert_int_equal(max, 4096);
	assert_int_equal(store_txn_begin(st, 0, &a), 0);
	assert_int_equal(store_txn_begin(st, 0, &b), 0);
	assert_int_equal(store_readers(st, &used, &max), 0);
	assert_int_equal(used, used0 + 2);
	store_txn_abort(a);
	store_txn_abort(b);
	assert_int_equal(store_readers(st, &used, &max), 0);
	assert_int_equal(used, used0);
	store_close(st);
	remove_dir(dir);
}

/* A reader's transactions are reset and renewed, not begun again: the same
 * transaction comes back, on the newest commit, and beyond `keep` the
 * extra ones are freed. */
static void test_reader_renews_reset_transactions(void **state)
{
	(void)state;
	char *dir = make_dir();
	store *st = open_rw(dir, 0);
	store_reader *rd = NULL;
	store_txn *w, *r1, *r2, *r3, *again;
	store_stats stats;
	uint8_t h[STORE_HASH_LEN];
	unsigned used = 0, max = 0;

	assert_int_equal(store_reader_new(st, 1, &rd), 0);
	assert_int_equal(store_reader_begin(rd, &r1), 0);
	assert_int_equal(store_stats_get(r1, &stats), 0);
	assert_int_equal(stats.objects, 0);
	store_txn_abort(r1);

	/* A commit after the reset is seen by the renewed transaction. */
	assert_int_equal(store_txn_begin(st, 1, &w), 0);
	assert_int_equal(store_put_object(w, "abc", 3, "text/plain", 100, h, NULL), 0);
	assert_int_equal(store_txn_commit(w), 0);
	assert_int_equal(store_reader_begin(rd, &again), 0);
	assert_ptr_equal(again, r1);
	assert_int_equal(store_stats_get(again, &stats), 0);
	assert_int_equal(stats.objects, 1);

	/* Two at once: the second is new; only one is kept when both end. */
	assert_int_equal(store_reader_begin(rd, &r2), 0);
	assert_ptr_not_equal(r2, again);
	store_txn_abort(again);
	store_txn_abort(r2);
	assert_int_equal(store_reader_begin(rd, &r3), 0);
	assert_ptr_equal(r3, again);
	store_txn_abort(r3);
	/* The kept one holds its slot (reset, without a snapshot). */
	assert_int_equal(store_readers(st, &used, &max), 0);
	assert_int_equal(used, 1);
	store_reader_free(rd);
	assert_int_equal(store_readers(st, &used, &max), 0);
	assert_int_equal(used, 0);
	store_close(st);
	remove_dir(dir);
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
		cmocka_unit_test(test_tombstones_cover_whole_segments),
		cmocka_unit_test(test_reader_of_an_older_store),
		cmocka_unit_test(test_aborted_txn_leaves_nothing),
		cmocka_unit_test(test_full_map_is_store_full),
		cmocka_unit_test(test_read_only_refuses_writes_and_sees_commits),
		cmocka_unit_test(test_read_only_open_of_missing_store),
		cmocka_unit_test(test_hex_round_trip),
		cmocka_unit_test(test_object_from_a_file),
		cmocka_unit_test(test_object_from_a_short_file_is_refused),
		cmocka_unit_test(test_big_objects_cost_no_memory),
		cmocka_unit_test(test_full_disk_is_an_error),
		cmocka_unit_test(test_readers_counts_read_transactions),
		cmocka_unit_test(test_reader_renews_reset_transactions),
	};
	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}

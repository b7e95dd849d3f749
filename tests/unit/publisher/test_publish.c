/* test_publish: the publish transaction is all-or-nothing, ids sort in time,
 * feeds list the newest posts first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "publish.h"
#include "core/store.h"

#include <brotli/decode.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fixture {
	char dir[64];
	store *st;
};

static int setup_map(void **state, uint64_t map_size)
{
	struct fixture *f = calloc(1, sizeof(*f));
	store_options opt = { .map_size = map_size };
	snprintf(f->dir, sizeof(f->dir), "/tmp/sayin-publish-XXXXXX");
	if (mkdtemp(f->dir) == NULL || store_open(f->dir, &opt, &f->st) != 0)
		return -1;
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_map(state, 0);
}

static int setup_small(void **state)
{
	return setup_map(state, 1 << 20);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];
	store_close(f->st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

/* Head of 2, archive pages of 3: small enough to cross many pages. */
static const publish_settings settings = { .base_url = "https://cdn.example", .feed_items = 2,
	                                   .page_items = 3, .create_authors = 1 };

/* A post with its renditions: the fallback and the waveform are derived
 * from the audio's bytes, so identical audio gives identical renditions. */
static int post(store *st, const char *author, const char *text, const void *audio, size_t len,
                int64_t now_ms, publish_result *res)
{
	char err[256], m4a[64], waveform[256];
	publish_input in = { .author = author, .text = text, .audio = audio, .audio_len = len,
		             .duration = 1.5, .input_format = "wav/pcm_s16le", .input_rate = 48000,
		             .input_channels = 1, .now_ms = now_ms, .has_loudness = 1,
		             .input_lufs = -20, .gain_db = 4, .true_peak_dbtp = -1.5,
		             .output_lufs = -16.04 };
	int n = snprintf(m4a, sizeof(m4a), "M4A of %.*s", (int)(len < 16 ? len : 16),
	                 (const char *)audio);
	in.fallback = m4a;
	in.fallback_len = (size_t)n;
	/* A valid audiowaveform JSON (the share card is drawn from it) whose
	 * peaks depend on the audio's first and last bytes. */
	n = snprintf(waveform, sizeof(waveform),
	             "{\"version\":2,\"channels\":1,\"sample_rate\":48000,"
	             "\"samples_per_pixel\":480,\"bits\":8,\"length\":2,"
	             "\"data\":[-%d,%d,-%d,%d]}",
	             ((const unsigned char *)audio)[0] % 128, ((const unsigned char *)audio)[0] % 128,
	             ((const unsigned char *)audio)[len - 1] % 128,
	             ((const unsigned char *)audio)[len - 1] % 128);
	in.waveform = waveform;
	in.waveform_len = (size_t)n;
	in.waveform_points = 1000;
	return publish_post(st, &settings, &in, res, err, sizeof(err));
}

/* The named document's bytes as JSON, or NULL. */
static json_t *load_name(store *st, const char *name)
{
	store_txn *txn;
	store_name n;
	store_object obj;
	json_t *j = NULL;
	assert_int_equal(store_txn_begin(st, 0, &txn), 0);
	if (store_get_name(txn, name, &n) == 0 && store_get_object(txn, n.hash, &obj) == 0)
		j = json_loadb(obj.data, obj.size, 0, NULL);
	store_txn_abort(txn);
	return j;
}

static store_stats stats(store *st)
{
	store_txn *txn;
	store_stats s;
	assert_int_equal(store_txn_begin(st, 0, &txn), 0);
	assert_int_equal(store_stats_get(txn, &s), 0);
	store_txn_abort(txn);
	return s;
}

static void test_ids_are_time_ordered_and_url_safe(void **state)
{
	(void)state;
	char a[PUBLISH_ID_LEN + 1], b[PUBLISH_ID_LEN + 1], c[PUBLISH_ID_LEN + 1];
	assert_int_equal(publish_new_id(1700000000000, a), 0);
	assert_int_equal(publish_new_id(1700000000001, b), 0);
	assert_int_equal(publish_new_id(1700000000001, c), 0);
	assert_true(strcmp(a, b) < 0);
	assert_true(strcmp(a, c) < 0);
	assert_string_not_equal(b, c);
	assert_int_equal(strlen(a), PUBLISH_ID_LEN);
	assert_int_equal(strspn(a, "0123456789abcdefghjkmnpqrstvwxyz"), PUBLISH_ID_LEN);
}

static void test_handles(void **state)
{
	(void)state;
	assert_true(publish_valid_handle("ann_99"));
	assert_true(publish_valid_handle("a"));
	assert_false(publish_valid_handle(""));
	assert_false(publish_valid_handle("Ann"));
	assert_false(publish_valid_handle("a-b"));
	assert_false(publish_valid_handle("abcdefghijklmnopqrstuvwxyz0123456"));
}

static void test_feed_newest_first_and_limited(void **state)
{
	struct fixture *f = *state;
	publish_result r1, r2, r3;
	json_t *feed, *items;

	assert_int_equal(post(f->st, "ann", "one", "AUDIO1", 6, 1000, &r1), 0);
	assert_int_equal(post(f->st, "ann", "two", "AUDIO2", 6, 2000, &r2), 0);
	assert_int_equal(post(f->st, "ann", "three", "AUDIO3", 6, 3000, &r3), 0);
	feed = load_name(f->st, "/u/ann/feed.json");
	assert_non_null(feed);
	items = json_object_get(feed, "items");
	assert_int_equal(json_array_size(items), 2); /* feed_items = 2 */
	assert_string_equal(json_string_value(json_object_get(json_array_get(items, 0), "id")), r3.id);
	assert_string_equal(json_string_value(json_object_get(json_array_get(items, 1), "id")), r2.id);
	json_decref(feed);
	/* Per post an Opus, an M4A, a waveform and a share card (3 x 4), plus,
	 * for the head, archive page 1 (post 1), /authors.json (ann's first
	 * post made her), the author page, three post pages and three embed
	 * pages, an identity, a gzip and a brotli object each: superseded
	 * documents are gone. */
	assert_int_equal(stats(f->st).objects, 3 * 4 + 10 * 3);
	assert_int_equal(stats(f->st).posts, 3);
}

static void test_names_carry_variants_and_keys(void **state)
{
	struct fixture *f = *state;
	publish_result r;
	store_txn *txn;
	store_name feed, page;
	store_object id_obj, gz_obj, br_obj;
	char path[64];
	unsigned char plain[8192];
	size_t plain_len = sizeof(plain);

	assert_int_equal(post(f->st, "ann", "hello", "AUDIO", 5, 1000, &r), 0);
	assert_int_equal(store_txn_begin(f->st, 0, &txn), 0);
	assert_int_equal(store_get_name(txn, "/u/ann/feed.json", &feed), 0);
	assert_int_equal(feed.encodings, 7u);
	assert_string_equal(feed.surrogate_key, "author-ann feed-ann");
	snprintf(path, sizeof(path), "/p/%s", r.id);
	assert_int_equal(store_get_name(txn, path, &page), 0);
	assert_int_equal(page.encodings, 7u);
	assert_non_null(strstr(page.surrogate_key, "author-ann"));
	assert_non_null(strstr(page.surrogate_key, r.id));
	/* The brotli variant decodes to the identity bytes. */
	assert_int_equal(store_get_object(txn, feed.variant[STORE_ENC_IDENTITY], &id_obj), 0);
	assert_int_equal(store_get_object(txn, feed.variant[STORE_ENC_GZIP], &gz_obj), 0);
	assert_int_equal(store_get_object(txn, feed.variant[STORE_ENC_BR], &br_obj), 0);
	assert_true(gz_obj.size < id_obj.size && br_obj.size < id_obj.size);
	assert_int_equal(BrotliDecoderDecompress(br_obj.size, br_obj.data, &plain_len, plain),
	                 BROTLI_DECODER_RESULT_SUCCESS);
	assert_int_equal(plain_len, id_obj.size);
	assert_memory_equal(plain, id_obj.data, plain_len);
	store_txn_abort(txn);
}

/* The record names the renditions; they are objects of the types the
 * origin serves under .m4a and .json; the feed links them. */
static void test_renditions_stored_and_recorded(void **state)
{
	struct fixture *f = *state;
	publish_result r;
	store_txn *txn;
	store_object obj;
	uint8_t hash[STORE_HASH_LEN];
	const void *rec;
	size_t rec_len;
	json_t *post_rec, *feed, *item, *atts;
	char url[256];

	assert_int_equal(post(f->st, "ann", "hello", "AUDIO", 5, 1000, &r), 0);
	assert_true(r.has_fallback && r.has_waveform);
	assert_int_equal(r.fallback_size, strlen("M4A of AUDIO"));
	assert_int_equal(store_txn_begin(f->st, 0, &txn), 0);
	assert_int_equal(store_hash_from_hex(r.fallback_hex, STORE_HASH_HEX_LEN, hash), 0);
	assert_int_equal(store_get_object(txn, hash, &obj), 0);
	assert_string_equal(obj.content_type, "audio/mp4");
	assert_memory_equal(obj.data, "M4A of AUDIO", obj.size);
	assert_int_equal(store_hash_from_hex(r.waveform_hex, STORE_HASH_HEX_LEN, hash), 0);
	assert_int_equal(store_get_object(txn, hash, &obj), 0);
	assert_string_equal(obj.content_type, "application/json");
	assert_int_equal(store_get_post(txn, r.id, &rec, &rec_len), 0);
	post_rec = json_loadb(rec, rec_len, 0, NULL);
	store_txn_abort(txn);
	assert_non_null(post_rec);
	assert_string_equal(json_string_value(json_object_get(json_object_get(post_rec, "fallback"),
	                                                      "sha256")), r.fallback_hex);
	assert_string_equal(json_string_value(json_object_get(json_object_get(post_rec, "fallback"),
	                                                      "mime_type")), "audio/mp4");
	assert_string_equal(json_string_value(json_object_get(json_object_get(post_rec, "waveform"),
	                                                      "sha256")), r.waveform_hex);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(post_rec, "waveform"),
	                                                    "points")), 1000);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(post_rec, "waveform"),
	                                                    "size_in_bytes")), r.waveform_size);
	assert_true(json_real_value(json_object_get(json_object_get(post_rec, "loudness"),
	                                            "output_lufs")) == -16.04);
	json_decref(post_rec);

	feed = load_name(f->st, "/u/ann/feed.json");
	item = json_array_get(json_object_get(feed, "items"), 0);
	atts = json_object_get(item, "attachments");
	assert_int_equal(json_array_size(atts), 2);
	snprintf(url, sizeof(url), "https://cdn.example/a/%s.m4a", r.fallback_hex);
	assert_string_equal(json_string_value(json_object_get(json_array_get(atts, 1), "url")), url);
	snprintf(url, sizeof(url), "https://cdn.example/a/%s.json", r.waveform_hex);
	assert_string_equal(json_string_value(json_object_get(json_object_get(item, "_sayin"),
	                                                      "waveform_url")), url);
	json_decref(feed);
}

static void test_identical_audio_shared(void **state)
{
	struct fixture *f = *state;
	publish_result r1, r2;
	assert_int_equal(post(f->st, "ann", "x", "SAME", 4, 1000, &r1), 0);
	assert_int_equal(post(f->st, "bob", "y", "SAME", 4, 2000, &r2), 0);
	assert_string_equal(r1.audio_hex, r2.audio_hex);
	assert_int_equal(r1.audio_was_new, 1);
	assert_int_equal(r2.audio_was_new, 0);
}

static void test_bad_text_stores_nothing(void **state)
{
	struct fixture *f = *state;
	publish_result r;
	store_stats before = stats(f->st);
	assert_int_equal(post(f->st, "ann", "bad \xff utf-8", "AUDIO", 5, 1000, &r), SAYIN_EINVAL);
	assert_int_equal(post(f->st, "Not-A-Handle", "x", "AUDIO", 5, 1000, &r), SAYIN_EINVAL);
	assert_int_equal(stats(f->st).objects, before.objects);
	assert_int_equal(stats(f->st).posts, 0);
	assert_null(load_name(f->st, "/u/ann/feed.json"));
}

/* Follows next_url from the head; returns the ids seen, newest first. */
static size_t walk_feed(store *st, const char *handle, char ids[][PUBLISH_ID_LEN + 1], size_t max)
{
	char path[256];
	size_t n = 0;
	json_t *doc;

	snprintf(path, sizeof(path), "/u/%s/feed.json", handle);
	doc = load_name(st, path);
	while (doc != NULL) {
		json_t *items = json_object_get(doc, "items");
		const char *next = json_string_value(json_object_get(doc, "next_url"));
		for (size_t i = 0; i < json_array_size(items) && n < max; i++)
			snprintf(ids[n++], PUBLISH_ID_LEN + 1, "%s",
			         json_string_value(json_object_get(json_array_get(items, i), "id")));
		if (next == NULL) {
			json_decref(doc);
			break;
		}
		assert_true(strncmp(next, "https://cdn.example", 19) == 0);
		snprintf(path, sizeof(path), "%s", next + 19);
		json_decref(doc);
		doc = load_name(st, path);
		assert_non_null(doc); /* a link to a page that does not exist */
	}
	return n;
}

static int name_hash(store *st, const char *name, uint8_t out[STORE_HASH_LEN])
{
	store_txn *txn;
	store_name n;
	int rc;
	assert_int_equal(store_txn_begin(st, 0, &txn), 0);
	rc = store_get_name(txn, name, &n);
	if (rc == 0)
		memcpy(out, n.hash, STORE_HASH_LEN);
	store_txn_abort(txn);
	return rc;
}

static void test_pages_walk_every_post_once(void **state)
{
	struct fixture *f = *state;
	publish_result r[17];
	char audio[16], seen[32][PUBLISH_ID_LEN + 1], path[64];
	uint8_t before[8][STORE_HASH_LEN], after[STORE_HASH_LEN];

	for (int i = 0; i < 17; i++) {
		snprintf(audio, sizeof(audio), "AUDIO%02d", i);
		assert_int_equal(post(f->st, "ann", "x", audio, strlen(audio), 1000 + i, &r[i]), 0);
		assert_int_equal(r[i].seq, (uint64_t)i + 1);
		/* Every post visible, in order, exactly once after each publish. */
		size_t n = walk_feed(f->st, "ann", seen, 32);
		assert_int_equal(n, (size_t)i + 1);
		for (int k = 0; k <= i; k++)
			assert_string_equal(seen[k], r[i - k].id);
	}
	/* 17 posts, head 2: pages 1..5 hold seq 1-3, 4-6, 7-9, 10-12, 13-15. */
	assert_int_equal(name_hash(f->st, "/u/ann/feed/5.json", before[5]), 0);
	assert_int_equal(name_hash(f->st, "/u/ann/feed/6.json", after), SAYIN_ENOTFOUND);
	for (int k = 1; k <= 5; k++) {
		snprintf(path, sizeof(path), "/u/ann/feed/%d.json", k);
		assert_int_equal(name_hash(f->st, path, before[k]), 0);
	}
	/* Two more posts fill page 6 with seq 16 and 17; full pages 1-5 keep
	 * their bytes. */
	assert_int_equal(post(f->st, "ann", "x", "MORE1", 5, 5000, &r[0]), 0);
	assert_int_equal(post(f->st, "ann", "x", "MORE2", 5, 5001, &r[1]), 0);
	for (int k = 1; k <= 5; k++) {
		snprintf(path, sizeof(path), "/u/ann/feed/%d.json", k);
		assert_int_equal(name_hash(f->st, path, after), 0);
		assert_memory_equal(after, before[k], STORE_HASH_LEN);
	}
	json_t *p6 = load_name(f->st, "/u/ann/feed/6.json");
	assert_int_equal(json_array_size(json_object_get(p6, "items")), 2);
	assert_string_equal(json_string_value(json_object_get(p6, "next_url")),
	                    "https://cdn.example/u/ann/feed/5.json");
	json_decref(p6);
	json_t *p1 = load_name(f->st, "/u/ann/feed/1.json");
	assert_null(json_object_get(p1, "next_url"));
	assert_int_equal(json_array_size(json_object_get(p1, "items")), 3);
	json_decref(p1);
	assert_int_equal(walk_feed(f->st, "ann", seen, 32), 19);
}

static void test_delete_keeps_shared_objects(void **state)
{
	struct fixture *f = *state;
	publish_result a, b, c, d, e;
	publish_deleted del;
	char err[256], path[64], seen[8][PUBLISH_ID_LEN + 1];
	uint8_t hash[STORE_HASH_LEN];
	store_txn *txn;
	store_object obj;

	assert_int_equal(post(f->st, "ann", "a", "SHARED", 6, 1000, &a), 0);
	assert_int_equal(post(f->st, "ann", "b", "SHARED", 6, 2000, &b), 0);
	assert_int_equal(post(f->st, "ann", "c", "ONLY_C", 6, 3000, &c), 0);
	assert_int_equal(post(f->st, "ann", "d", "ONLY_D", 6, 4000, &d), 0);
	assert_int_equal(post(f->st, "bob", "e", "ONLY_E", 6, 5000, &e), 0);

	assert_int_equal(publish_delete(f->st, &settings, a.id, "bob", 6000, &del, err, sizeof(err)),
	                 -EPERM);
	assert_int_equal(publish_delete(f->st, &settings, "nope", NULL, 6000, &del, err,
	                                sizeof(err)), SAYIN_ENOTFOUND);
	/* a shares its audio (and so its renditions) with b: kept. a is in
	 * archive page 1 (head: c, d). */
	assert_int_equal(publish_delete(f->st, &settings, a.id, "ann", 6000, &del, err,
	                                sizeof(err)), 0);
	assert_int_equal(del.objects_deleted, 0);
	assert_int_equal(del.objects_kept, 4); /* audio, fallback, waveform, card */
	assert_int_equal(store_txn_begin(f->st, 0, &txn), 0);
	assert_int_equal(store_hash_from_hex(a.audio_hex, STORE_HASH_HEX_LEN, hash), 0);
	assert_int_equal(store_get_object(txn, hash, &obj), 0);
	store_txn_abort(txn);
	snprintf(path, sizeof(path), "/p/%s", a.id);
	assert_int_equal(name_hash(f->st, path, hash), SAYIN_ENOTFOUND);
	snprintf(path, sizeof(path), "/p/%s/embed", a.id);
	assert_int_equal(name_hash(f->st, path, hash), SAYIN_ENOTFOUND);
	snprintf(path, sizeof(path), "/p/%s/embed", b.id);
	assert_int_equal(name_hash(f->st, path, hash), 0);
	assert_int_equal(walk_feed(f->st, "ann", seen, 8), 3);
	assert_string_equal(seen[0], d.id);
	assert_string_equal(seen[2], b.id);

	/* d is in the head and alone with its audio: all four objects go. */
	assert_int_equal(publish_delete(f->st, &settings, d.id, NULL, 7000, &del, err, sizeof(err)),
	                 0);
	assert_string_equal(del.author, "ann");
	assert_int_equal(del.objects_deleted, 4);
	assert_int_equal(store_txn_begin(f->st, 0, &txn), 0);
	assert_int_equal(store_hash_from_hex(d.audio_hex, STORE_HASH_HEX_LEN, hash), 0);
	assert_int_equal(store_get_object(txn, hash, &obj), SAYIN_ENOTFOUND);
	assert_int_equal(store_hash_from_hex(d.fallback_hex, STORE_HASH_HEX_LEN, hash), 0);
	assert_int_equal(store_get_object(txn, hash, &obj), SAYIN_ENOTFOUND);
	store_txn_abort(txn);
	assert_int_equal(walk_feed(f->st, "ann", seen, 8), 2);
	assert_string_equal(seen[0], c.id);
	assert_string_equal(seen[1], b.id);
	/* Deleting b, the last user of the shared audio, removes it. */
	assert_int_equal(publish_delete(f->st, &settings, b.id, NULL, 8000, &del, err, sizeof(err)),
	                 0);
	assert_int_equal(del.objects_deleted, 4);
	assert_int_equal(walk_feed(f->st, "bob", seen, 8), 1);
}

static void test_authors_and_idempotency_record(void **state)
{
	struct fixture *f = *state;
	publish_settings strict = settings;
	publish_result r;
	char err[256];
	json_t *authors, *feed;
	store_txn *txn;
	const void *rec;
	size_t len;

	strict.create_authors = 0;
	assert_int_equal(publish_author_add(f->st, &settings, "ann", "Ann \xe2\x98\x85", 1000, err,
	                                    sizeof(err)), 0);
	assert_int_equal(publish_author_add(f->st, &settings, "ann", "Again", 1000, err,
	                                    sizeof(err)), -EEXIST);
	assert_int_equal(publish_author_add(f->st, &settings, "bob", "", 1000, err, sizeof(err)),
	                 SAYIN_EINVAL);
	assert_int_equal(publish_author_add(f->st, &settings, "bob", "Bob\n", 1000, err,
	                                    sizeof(err)), SAYIN_EINVAL);
	assert_int_equal(publish_author_add(f->st, &settings, "abe", "Abe", 1000, err, sizeof(err)),
	                 0);
	authors = load_name(f->st, "/authors.json");
	assert_int_equal(json_array_size(json_object_get(authors, "authors")), 2);
	assert_string_equal(json_string_value(json_object_get(
	                        json_array_get(json_object_get(authors, "authors"), 1), "name")),
	                    "Ann \xe2\x98\x85");
	json_decref(authors);
	/* A new author has an empty feed. */
	feed = load_name(f->st, "/u/ann/feed.json");
	assert_int_equal(json_array_size(json_object_get(feed, "items")), 0);
	json_decref(feed);

	publish_input in = { .author = "zed", .audio = "A", .audio_len = 1, .duration = 1,
		             .now_ms = 2000 };
	assert_int_equal(publish_post(f->st, &strict, &in, &r, err, sizeof(err)), SAYIN_ENOTFOUND);
	in.author = "ann";
	in.idempotency_key = "key-1";
	in.request_sha256 = "abc";
	assert_int_equal(publish_post(f->st, &strict, &in, &r, err, sizeof(err)), 0);
	assert_int_equal(store_txn_begin(f->st, 0, &txn), 0);
	assert_int_equal(store_get_record(txn, STORE_IDEMPOTENCY, "ann\nkey-1", &rec, &len), 0);
	json_t *j = json_loadb(rec, len, 0, NULL);
	store_txn_abort(txn);
	assert_string_equal(json_string_value(json_object_get(j, "post_id")), r.id);
	assert_string_equal(json_string_value(json_object_get(j, "request_sha256")), "abc");
	json_t *body = json_loads(json_string_value(json_object_get(j, "body")), 0, NULL);
	assert_string_equal(json_string_value(json_object_get(body, "id")), r.id);
	json_decref(body);
	json_decref(j);
}

static void test_store_full_leaves_nothing(void **state)
{
	struct fixture *f = *state;
	publish_result r;
	size_t big = 2 << 20;
	unsigned char *audio = calloc(1, big);
	json_t *feed;

	assert_int_equal(post(f->st, "ann", "small", "AUDIO", 5, 1000, &r), 0);
	store_stats before = stats(f->st);
	assert_int_equal(post(f->st, "ann", "too big", audio, big, 2000, &r), SAYIN_ESTOREFULL);
	assert_int_equal(stats(f->st).objects, before.objects);
	assert_int_equal(stats(f->st).posts, 1);
	feed = load_name(f->st, "/u/ann/feed.json");
	assert_int_equal(json_array_size(json_object_get(feed, "items")), 1);
	json_decref(feed);
	free(audio);
}


/* An unlinked temporary file holding the bytes. */
static int temp_file_of(const void *bytes, size_t len)
{
	char tmpl[] = "/tmp/sayin-publish-obj-XXXXXX";
	int fd = mkstemp(tmpl);
	assert_true(fd >= 0);
	unlink(tmpl);
	assert_int_equal(write(fd, bytes, len), (ssize_t)len);
	return fd;
}

/* The audio and the fallback may come as files (what the pipeline hands
 * over): the same objects, sizes and record as from memory. */
static void test_renditions_from_files(void **state)
{
	struct fixture *f = *state;
	size_t len = 300000;
	unsigned char *audio = malloc(len);
	static const char m4a[] = "M4A rendition bytes";
	publish_file audio_file, m4a_file;
	publish_result by_file, by_mem;
	char err[256];
	store_txn *txn;
	store_object obj;
	uint8_t hash[STORE_HASH_LEN];

	assert_non_null(audio);
	for (size_t i = 0; i < len; i++)
		audio[i] = (unsigned char)(i * 7 + i / 1000);
	audio_file = (publish_file){ temp_file_of(audio, len), len };
	m4a_file = (publish_file){ temp_file_of(m4a, sizeof(m4a) - 1), sizeof(m4a) - 1 };
	publish_input in = { .author = "filer", .text = "from files", .audio_file = &audio_file,
		             .fallback_file = &m4a_file, .duration = 2, .input_format = "wav",
		             .input_rate = 48000, .input_channels = 1, .now_ms = 1700000000000 };
	assert_int_equal(publish_post(f->st, &settings, &in, &by_file, err, sizeof(err)), 0);
	assert_int_equal(by_file.audio_size, len);
	assert_true(by_file.audio_was_new);
	assert_true(by_file.has_fallback);
	assert_int_equal(by_file.fallback_size, sizeof(m4a) - 1);

	assert_int_equal(store_txn_begin(f->st, 0, &txn), 0);
	assert_int_equal(store_hash_from_hex(by_file.audio_hex, STORE_HASH_HEX_LEN, hash), 0);
	assert_int_equal(store_get_object(txn, hash, &obj), 0);
	assert_int_equal(obj.size, len);
	assert_memory_equal(obj.data, audio, len);
	assert_string_equal(obj.content_type, PUBLISH_OPUS_TYPE);
	assert_int_equal(store_hash_from_hex(by_file.fallback_hex, STORE_HASH_HEX_LEN, hash), 0);
	assert_int_equal(store_get_object(txn, hash, &obj), 0);
	assert_memory_equal(obj.data, m4a, sizeof(m4a) - 1);
	store_txn_abort(txn);
	{
		json_t *feed = load_name(f->st, "/u/filer/feed.json");
		json_t *att = json_array_get(json_object_get(json_array_get(json_object_get(feed,
		                                 "items"), 0), "attachments"), 0);
		assert_int_equal(json_integer_value(json_object_get(att, "size_in_bytes")), len);
		json_decref(feed);
	}

	/* The same bytes from memory are the same objects. */
	in.audio_file = NULL;
	in.fallback_file = NULL;
	in.audio = audio;
	in.audio_len = len;
	in.fallback = m4a;
	in.fallback_len = sizeof(m4a) - 1;
	in.now_ms += 1000;
	assert_int_equal(publish_post(f->st, &settings, &in, &by_mem, err, sizeof(err)), 0);
	assert_false(by_mem.audio_was_new);
	assert_string_equal(by_mem.audio_hex, by_file.audio_hex);
	assert_string_equal(by_mem.fallback_hex, by_file.fallback_hex);
	close(audio_file.fd);
	close(m4a_file.fd);
	free(audio);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ids_are_time_ordered_and_url_safe),
		cmocka_unit_test(test_handles),
		cmocka_unit_test_setup_teardown(test_renditions_from_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_feed_newest_first_and_limited, setup, teardown),
		cmocka_unit_test_setup_teardown(test_identical_audio_shared, setup, teardown),
		cmocka_unit_test_setup_teardown(test_renditions_stored_and_recorded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_names_carry_variants_and_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_text_stores_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pages_walk_every_post_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_keeps_shared_objects, setup, teardown),
		cmocka_unit_test_setup_teardown(test_authors_and_idempotency_record, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_full_leaves_nothing, setup_small, teardown),
	};
	return cmocka_run_group_tests_name("publish", tests, NULL, NULL);
}

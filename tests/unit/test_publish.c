/* test_publish: the publish transaction is all-or-nothing, ids sort in time,
 * feeds list the newest posts first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "error.h"
#include "publish.h"
#include "store.h"

#include <brotli/decode.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static const publish_settings settings = { "https://cdn.example", 2 };

/* A post with its renditions: the fallback and the waveform are derived
 * from the audio's bytes, so identical audio gives identical renditions. */
static int post(store *st, const char *author, const char *text, const void *audio, size_t len,
                int64_t now_ms, publish_result *res)
{
	char err[256], m4a[64], waveform[128];
	publish_input in = { .author = author, .text = text, .audio = audio, .audio_len = len,
		             .duration = 1.5, .input_format = "wav/pcm_s16le", .input_rate = 48000,
		             .input_channels = 1, .now_ms = now_ms, .has_loudness = 1,
		             .input_lufs = -20, .gain_db = 4, .true_peak_dbtp = -1.5,
		             .output_lufs = -16.04 };
	int n = snprintf(m4a, sizeof(m4a), "M4A of %.*s", (int)(len < 16 ? len : 16),
	                 (const char *)audio);
	in.fallback = m4a;
	in.fallback_len = (size_t)n;
	n = snprintf(waveform, sizeof(waveform), "{\"version\":2,\"for\":\"%.*s\"}",
	             (int)(len < 16 ? len : 16), (const char *)audio);
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
	/* Per post an Opus, an M4A and a waveform object (3 x 3), plus, for one
	 * feed and three pages, an identity, a gzip and a brotli object each:
	 * superseded feeds are gone. */
	assert_int_equal(stats(f->st).objects, 3 * 3 + 4 * 3);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ids_are_time_ordered_and_url_safe),
		cmocka_unit_test(test_handles),
		cmocka_unit_test_setup_teardown(test_feed_newest_first_and_limited, setup, teardown),
		cmocka_unit_test_setup_teardown(test_identical_audio_shared, setup, teardown),
		cmocka_unit_test_setup_teardown(test_renditions_stored_and_recorded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_names_carry_variants_and_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_text_stores_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_full_leaves_nothing, setup_small, teardown),
	};
	return cmocka_run_group_tests_name("publish", tests, NULL, NULL);
}

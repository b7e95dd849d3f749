/* publish: one write transaction per post: audio, fallback and waveform
 * objects, record, feed, page, names. */
#include "publish.h"

#include "compress.h"
#include "error.h"
#include "feed.h"
#include "log.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int publish_valid_handle(const char *handle)
{
	size_t len = strlen(handle);
	if (len < 1 || len > PUBLISH_HANDLE_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = handle[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
			return 0;
	}
	return 1;
}

int publish_new_id(int64_t now_ms, char id[PUBLISH_ID_LEN + 1])
{
	static const char digits[] = "0123456789abcdefghjkmnpqrstvwxyz"; /* Crockford */
	uint8_t rnd[10];
	uint64_t t = (uint64_t)now_ms;
	ssize_t got = getrandom(rnd, sizeof(rnd), 0);

	if (got != (ssize_t)sizeof(rnd))
		return got < 0 ? -errno : -EIO;
	for (int i = 9; i >= 0; i--) {
		id[i] = digits[t & 31];
		t >>= 5;
	}
	/* 80 random bits as 16 five-bit digits. */
	for (int i = 0; i < 16; i++) {
		int bit = i * 5, byte = bit / 8, shift = bit % 8;
		unsigned v = (unsigned)rnd[byte] << 8 | (byte + 1 < 10 ? rnd[byte + 1] : 0);
		id[10 + i] = digits[(v >> (11 - shift)) & 31];
	}
	id[PUBLISH_ID_LEN] = '\0';
	return 0;
}

void publish_format_time(int64_t now_ms, char *buf, size_t len)
{
	time_t secs = (time_t)(now_ms / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(now_ms % 1000));
}

/* Loads the author record, creating it on a handle's first post. */
static int ensure_author(store_txn *txn, const char *handle, int64_t now_ms, json_t **record_out)
{
	const void *rec;
	size_t len;
	json_t *j;
	char *s;
	int rc = store_get_author(txn, handle, &rec, &len);

	if (rc == 0) {
		j = json_loadb(rec, len, 0, NULL);
		if (j == NULL || json_string_value(json_object_get(j, "name")) == NULL) {
			json_decref(j);
			return SAYIN_ECORRUPT;
		}
		*record_out = j;
		return 0;
	}
	if (rc != SAYIN_ENOTFOUND)
		return rc;
	/* First post of a new handle: its display name is the handle until an
	 * operator sets one. */
	j = json_pack("{s:s, s:s, s:I}", "handle", handle, "name", handle, "created_ms",
	              (json_int_t)now_ms);
	if (j == NULL)
		return -ENOMEM;
	s = json_dumps(j, JSON_COMPACT);
	if (s == NULL) {
		json_decref(j);
		return -ENOMEM;
	}
	rc = store_put_author(txn, handle, s, strlen(s));
	free(s);
	if (rc != 0) {
		json_decref(j);
		return rc;
	}
	log_info("publish: new author %s", handle);
	*record_out = j;
	return 0;
}

struct post_list {
	json_t **items;
	size_t n, cap;
};

static int collect_post(void *arg, const char *id, const void *record, size_t len)
{
	struct post_list *l = arg;
	json_t *j = json_loadb(record, len, 0, NULL);
	if (j == NULL) {
		log_error("publish: post %s has a corrupt record", id);
		return SAYIN_ECORRUPT;
	}
	if (l->n == l->cap) {
		json_decref(j);
		return -ENOSPC;
	}
	l->items[l->n++] = j;
	return 0;
}

/* Deletes the objects a name pointed at before, except those it still
 * points at: names own their generated documents (a feed or page embeds its
 * own URL, so no other name can share its bytes). */
static int drop_replaced(store_txn *txn, const store_name *old, const store_name *now)
{
	for (int e = 0; e < STORE_ENC_COUNT; e++) {
		int still_used = 0;
		if (!(old->encodings & (1u << e)))
			continue;
		for (int k = 0; k < STORE_ENC_COUNT; k++) {
			if ((now->encodings & (1u << k)) &&
			    memcmp(old->variant[e], now->variant[k], STORE_HASH_LEN) == 0)
				still_used = 1;
		}
		if (!still_used) {
			int rc = store_delete_object(txn, old->variant[e]);
			if (rc != 0 && rc != SAYIN_ENOTFOUND)
				return rc;
		}
	}
	return 0;
}

/* Stores a document with its gzip and brotli variants (each kept only when
 * smaller than the original) and points name at them, tagged with the
 * surrogate keys CDNs purge by. */
static int put_named(store_txn *txn, const char *name, const char *bytes, size_t len,
                     const char *ctype, const char *surrogate_key, int64_t now)
{
	static int (*const encoders[STORE_ENC_COUNT])(const void *, size_t, unsigned char **,
	                                              size_t *) = {
		[STORE_ENC_GZIP] = compress_gzip,
		[STORE_ENC_BR] = compress_brotli,
	};
	uint8_t hashes[STORE_ENC_COUNT][STORE_HASH_LEN];
	store_name_spec spec = { .surrogate_key = surrogate_key };
	store_name old, cur;
	int had_old = store_get_name(txn, name, &old) == 0;
	int rc = store_put_object(txn, bytes, len, ctype, now, hashes[STORE_ENC_IDENTITY], NULL);

	spec.variant[STORE_ENC_IDENTITY] = hashes[STORE_ENC_IDENTITY];
	for (int e = 0; rc == 0 && e < STORE_ENC_COUNT; e++) {
		unsigned char *enc = NULL;
		size_t enc_len = 0;
		if (encoders[e] == NULL)
			continue;
		rc = encoders[e](bytes, len, &enc, &enc_len);
		/* The variant object records the document's type; the encoding
		 * lives in the name, which is how the origin picks it. */
		if (rc == 0 && enc_len < len) {
			rc = store_put_object(txn, enc, enc_len, ctype, now, hashes[e], NULL);
			if (rc == 0)
				spec.variant[e] = hashes[e];
		}
		free(enc);
	}
	if (rc == 0)
		rc = store_set_name_variants(txn, name, &spec, now);
	if (rc == 0 && had_old && store_get_name(txn, name, &cur) == 0)
		rc = drop_replaced(txn, &old, &cur);
	return rc;
}

/* "author-HANDLE <kind>ID": the keys a CDN purges a name by (Surrogate-Key). */
static int surrogate_keys(char *buf, size_t len, const char *handle, const char *kind,
                          const char *id)
{
	int n = snprintf(buf, len, "author-%s %s%s", handle, kind, id);
	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

static int write_feed(store_txn *txn, const publish_settings *set, const feed_author *author,
                      int64_t now)
{
	struct post_list list = { 0 };
	char path[256], keys[STORE_SURROGATE_KEY_MAX + 1], *doc = NULL;
	size_t len;
	int rc;

	list.cap = set->feed_items;
	list.items = calloc(list.cap ? list.cap : 1, sizeof(json_t *));
	if (list.items == NULL)
		return -ENOMEM;
	rc = store_author_posts(txn, author->handle, set->feed_items, collect_post, &list);
	if (rc == 0)
		rc = feed_author_json(set->base_url, author, list.items, list.n, &doc, &len);
	if (rc == 0)
		rc = feed_path_feed(path, sizeof(path), author->handle);
	if (rc == 0)
		rc = surrogate_keys(keys, sizeof(keys), author->handle, "feed-", author->handle);
	if (rc == 0)
		rc = put_named(txn, path, doc, len, FEED_CONTENT_TYPE, keys, now);
	for (size_t i = 0; i < list.n; i++)
		json_decref(list.items[i]);
	free(list.items);
	free(doc);
	return rc;
}

static int write_page(store_txn *txn, const publish_settings *set, const feed_author *author,
                      const json_t *post, const char *id, int64_t now)
{
	char path[256], keys[STORE_SURROGATE_KEY_MAX + 1], *doc = NULL;
	size_t len;
	int rc = feed_post_html(set->base_url, author, post, &doc, &len);
	if (rc == 0)
		rc = feed_path_post(path, sizeof(path), id);
	if (rc == 0)
		rc = surrogate_keys(keys, sizeof(keys), author->handle, "post-", id);
	if (rc == 0)
		rc = put_named(txn, path, doc, len, FEED_HTML_TYPE, keys, now);
	free(doc);
	return rc;
}

static json_t *post_record(const publish_input *in, const publish_result *res, const char *date)
{
	json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:I, s:{s:s, s:s, s:I, s:f}, s:{s:s, s:i, s:i}}",
	                 "id", res->id, "author", in->author, "text", in->text ? in->text : "",
	                 "date_published", date, "created_ms", (json_int_t)in->now_ms,
	                 "audio", "sha256", res->audio_hex, "mime_type", PUBLISH_OPUS_TYPE,
	                 "size_in_bytes", (json_int_t)in->audio_len, "duration_in_seconds",
	                 in->duration, "input", "format",
	                 in->input_format ? in->input_format : "unknown", "sample_rate",
	                 (int)in->input_rate, "channels", (int)in->input_channels);

	/* Rounded to 0.01 dB: more digits would only be noise. -inf has no JSON. */
	if (rec != NULL && in->has_loudness && isfinite(in->input_lufs) && isfinite(in->gain_db) &&
	    isfinite(in->true_peak_dbtp)) {
		json_t *l = json_pack("{s:f, s:f, s:f}", "input_lufs", round(in->input_lufs * 100) / 100,
		                      "gain_db", round(in->gain_db * 100) / 100, "true_peak_dbtp",
		                      round(in->true_peak_dbtp * 100) / 100);
		if (l != NULL && isfinite(in->output_lufs) &&
		    json_object_set_new(l, "output_lufs", json_real(round(in->output_lufs * 100) / 100)) != 0) {
			json_decref(l);
			l = NULL;
		}
		if (l == NULL || json_object_set_new(rec, "loudness", l) != 0)
			goto fail;
	}
	if (rec != NULL && res->has_waveform &&
	    json_object_set_new(rec, "waveform",
	                        json_pack("{s:s, s:I, s:i}", "sha256", res->waveform_hex,
	                                  "size_in_bytes", (json_int_t)res->waveform_size, "points",
	                                  (int)in->waveform_points)) != 0)
		goto fail;
	if (rec != NULL && res->has_fallback &&
	    json_object_set_new(rec, "fallback",
	                        json_pack("{s:s, s:s, s:I}", "sha256", res->fallback_hex, "mime_type",
	                                  PUBLISH_M4A_TYPE, "size_in_bytes",
	                                  (json_int_t)res->fallback_size)) != 0)
		goto fail;
	return rec;
fail:
	json_decref(rec);
	return NULL;
}

int publish_post(store *st, const publish_settings *set, const publish_input *in,
                 publish_result *out, char *err, size_t errlen)
{
	store_txn *txn = NULL;
	json_t *author_rec = NULL, *post = NULL;
	feed_author author;
	uint8_t hash[STORE_HASH_LEN];
	char date[40], *record = NULL;
	int64_t now = in->now_ms / 1000;
	const char *stage = "begin";
	int rc;

	if (!publish_valid_handle(in->author)) {
		snprintf(err, errlen, "invalid author handle '%s': use 1-32 of a-z, 0-9, _", in->author);
		return SAYIN_EINVAL;
	}
	memset(out, 0, sizeof(*out));
	rc = publish_new_id(in->now_ms, out->id);
	if (rc != 0) {
		snprintf(err, errlen, "cannot make a post id: %s", sayin_strerror(rc));
		return rc;
	}
	publish_format_time(in->now_ms, date, sizeof(date));

	rc = store_txn_begin(st, 1, &txn);
	if (rc != 0)
		goto fail;
	stage = "author";
	rc = ensure_author(txn, in->author, in->now_ms, &author_rec);
	if (rc != 0)
		goto fail;
	author.handle = in->author;
	author.name = json_string_value(json_object_get(author_rec, "name"));

	stage = "audio object";
	rc = store_put_object(txn, in->audio, in->audio_len, PUBLISH_OPUS_TYPE, now, hash,
	                      &out->audio_was_new);
	if (rc != 0)
		goto fail;
	store_hash_to_hex(hash, out->audio_hex);
	out->audio_size = in->audio_len;
	out->duration = in->duration;

	/* The fallback rendition and the waveform: immutable objects too,
	 * shared by identical bytes like the audio. */
	if (in->fallback != NULL && in->fallback_len > 0) {
		stage = "fallback audio object";
		rc = store_put_object(txn, in->fallback, in->fallback_len, PUBLISH_M4A_TYPE, now, hash,
		                      NULL);
		if (rc != 0)
			goto fail;
		store_hash_to_hex(hash, out->fallback_hex);
		out->fallback_size = in->fallback_len;
		out->has_fallback = 1;
	}
	if (in->waveform != NULL && in->waveform_len > 0) {
		stage = "waveform object";
		rc = store_put_object(txn, in->waveform, in->waveform_len, PUBLISH_WAVEFORM_TYPE, now,
		                      hash, NULL);
		if (rc != 0)
			goto fail;
		store_hash_to_hex(hash, out->waveform_hex);
		out->waveform_size = in->waveform_len;
		out->has_waveform = 1;
	}

	stage = "post record";
	post = post_record(in, out, date);
	if (post == NULL) {
		/* jansson refuses text that is not valid UTF-8. */
		snprintf(err, errlen, "post text is not valid UTF-8");
		rc = SAYIN_EINVAL;
		goto fail_quiet;
	}
	record = json_dumps(post, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (record == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = store_put_post(txn, out->id, in->author, record, strlen(record));
	if (rc != 0)
		goto fail;

	stage = "feed";
	rc = write_feed(txn, set, &author, now);
	if (rc != 0)
		goto fail;
	stage = "post page";
	rc = write_page(txn, set, &author, post, out->id, now);
	if (rc != 0)
		goto fail;

	stage = "commit";
	rc = store_txn_commit(txn);
	txn = NULL;
	if (rc != 0)
		goto fail;
	log_info("publish: post %s by %s committed (audio %s, %llu bytes%s)", out->id, in->author,
	         out->audio_hex, (unsigned long long)out->audio_size,
	         out->audio_was_new ? "" : ", already stored");
	json_decref(author_rec);
	json_decref(post);
	free(record);
	return 0;

fail:
	snprintf(err, errlen, "publish failed at %s: %s", stage, sayin_strerror(rc));
fail_quiet:
	store_txn_abort(txn);
	json_decref(author_rec);
	json_decref(post);
	free(record);
	return rc;
}

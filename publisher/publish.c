/* publish: the write transactions (a post, a deletion, an author, a
 * rebuild, an import): objects and their references, the post record,
 * delivery jobs; the documents they regenerate are documents.c's. */
#include "publish.h"
#include "publish_internal.h"
#include "site.h"

#include "documents.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/jsonstore.h"
#include "core/log.h"
#include "deliver/outbox.h"
#include "deliver/payload.h"
#include "idempotency.h"
#include "render/feed.h"
#include "render/page.h"
#include "render/record.h"

#include <errno.h>
#include <jansson.h>
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

/* /a/HEX.ext for an object's content type. */
static const char *object_ext(const char *ctype)
{
	if (strcmp(ctype, PUBLISH_OPUS_TYPE) == 0)
		return "opus";
	if (strcmp(ctype, PUBLISH_M4A_TYPE) == 0)
		return "m4a";
	if (strcmp(ctype, PAGE_CARD_TYPE) == 0)
		return "png";
	return "json";
}

static int note_object(documents_changes *ch, const char *hex, const char *ctype, int removed)
{
	char path[128];
	if (ch == NULL)
		return 0;
	snprintf(path, sizeof(path), "/a/%s.%s", hex, object_ext(ctype));
	if (removed)
		return documents_note_name(ch, path, NULL, 1);
	return json_array_append_new(ch->objects, payload_object_new(path, hex, ctype)) == 0
	               ? 0
	               : -ENOMEM;
}

/* 1 when network is in the comma-separated list (NULL: every network). */
static int network_selected(const char *list, const char *network)
{
	size_t n = strlen(network);
	if (list == NULL)
		return 1;
	while (*list != '\0') {
		size_t len = strcspn(list, ",");
		if (len == n && strncmp(list, network, n) == 0)
			return 1;
		list += len;
		if (*list == ',')
			list++;
	}
	return 0;
}

/* SAYIN_EINVAL when list names a network we do not know. */
static int check_networks(const char *list, char *err, size_t errlen)
{
	static const char *const known[] = PUBLISH_NETWORKS;
	while (list != NULL && *list != '\0') {
		size_t len = strcspn(list, ","), k;
		for (k = 0; k < sizeof(known) / sizeof(known[0]); k++)
			if (strlen(known[k]) == len && strncmp(list, known[k], len) == 0)
				break;
		if (len > 0 && k == sizeof(known) / sizeof(known[0])) {
			snprintf(err, errlen, "crosspost: unknown network '%.*s' (use x, facebook)",
			         (int)len, list);
			return SAYIN_EINVAL;
		}
		list += len;
		if (*list == ',')
			list++;
	}
	return 0;
}

/* Enqueues one delivery job per target in txn, each stage waiting for the
 * jobs of the stages before it; then, for a post, one cross-post job per
 * network, waiting for the last CDN stage. Nothing changed, or no target:
 * no CDN job. */
int publish__enqueue_deliveries(store_txn *txn, const publish_settings *set,
                              const documents_changes *ch, const char *event, const char *author,
                              const char *post_id, int64_t now_ms, struct enqueued *q)
{
	struct enqueued local;
	char (*ids)[OUTBOX_ID_LEN + 1];
	const char **prev;
	size_t n_prev = 0, n_ids = 0;
	json_t *payload;
	int rc = 0;

	if (q == NULL)
		q = &local;
	q->n_last = q->n_ids = 0;
	ids = q->ids;
	prev = q->last;

	if (set->n_targets == 0 || (json_array_size(ch->paths) == 0 &&
	                            json_array_size(ch->removed) == 0 &&
	                            json_array_size(ch->objects) == 0))
		return 0;
	json_t *const lists[PAYLOAD_LIST_COUNT] = {
		[PAYLOAD_PATHS] = ch->paths, [PAYLOAD_KEYS] = ch->keys,
		[PAYLOAD_OBJECTS] = ch->objects, [PAYLOAD_REMOVED] = ch->removed,
	};
	payload = payload_cdn_new(event, author, post_id, lists);
	if (payload == NULL)
		return -ENOMEM;
	for (int stage = 0; rc == 0 && stage < 8; stage++) {
		size_t first = n_ids;
		for (size_t i = 0; rc == 0 && i < set->n_targets && n_ids < 16; i++) {
			if (set->targets[i].stage != stage)
				continue;
			rc = outbox_enqueue(txn, set->targets[i].name, payload, prev, n_prev, now_ms,
			                    ids[n_ids]);
			if (rc == 0)
				n_ids++;
		}
		/* The next stage waits for this one's jobs (or, when this stage
		 * has none, for the same jobs this one would have waited for). */
		if (n_ids > first) {
			n_prev = 0;
			for (size_t k = first; k < n_ids; k++)
				prev[n_prev++] = ids[k];
		}
	}
	q->n_last = n_prev;
	q->n_ids = n_ids;
	json_decref(payload);
	return rc;
}

/* The post's cross-post jobs, after every CDN job of the transaction (the
 * page must be live at the edges when the network's crawler comes). */
static int enqueue_crossposts(store_txn *txn, const publish_settings *set, const publish_input *in,
                              const publish_result *res, const struct enqueued *cdn,
                              int64_t now_ms)
{
	static const char *const networks[] = PUBLISH_NETWORKS;
	char url[1024], path[256], id[OUTBOX_ID_LEN + 1];
	int rc;

	if (set->crosspost_enabled == NULL)
		return 0;
	rc = feed_path_post(path, sizeof(path), res->id);
	if (rc != 0)
		return rc;
	snprintf(url, sizeof(url), "%s%s", set->base_url, path);
	for (size_t i = 0; rc == 0 && i < sizeof(networks) / sizeof(networks[0]); i++) {
		json_t *payload;
		if (!network_selected(in->crosspost, networks[i]) ||
		    !set->crosspost_enabled(set->crosspost_arg, in->author, networks[i]))
			continue;
		payload = payload_crosspost_new(res->id, in->author, in->text, url);
		if (payload == NULL)
			return -ENOMEM;
		rc = outbox_enqueue(txn, networks[i], payload, cdn->last, cdn->n_last, now_ms, id);
		json_decref(payload);
	}
	return rc;
}

/* Stores an immutable object, from memory or (file not NULL) from a file,
 * and records that post id uses it. */
static int put_referenced(store_txn *txn, documents_changes *ch, const void *bytes, size_t len,
                          const publish_file *file, const char *ctype, int64_t now,
                          const char *id, char hex[STORE_HASH_HEX_LEN + 1], int *is_new)
{
	uint8_t hash[STORE_HASH_LEN];
	int fresh = 0;
	int rc = file != NULL
	                 ? store_put_object_file(txn, file->fd, file->len, ctype, now, hash, &fresh)
	                 : store_put_object(txn, bytes, len, ctype, now, hash, &fresh);
	if (rc == 0)
		rc = store_ref_add(txn, hash, id);
	if (rc == 0)
		store_hash_to_hex(hash, hex);
	if (rc == 0 && fresh)
		rc = note_object(ch, hex, ctype, 0);
	if (is_new != NULL)
		*is_new = fresh;
	return rc;
}

/* Stores an immutable object without a reference (publish_import adds one
 * per post). */
static int put_plain(store_txn *txn, const void *bytes, size_t len, const char *ctype,
                     int64_t now, char hex[STORE_HASH_HEX_LEN + 1])
{
	uint8_t hash[STORE_HASH_LEN];
	int rc = store_put_object(txn, bytes, len, ctype, now, hash, NULL);
	if (rc == 0)
		store_hash_to_hex(hash, hex);
	return rc;
}

/* The post record (render/record.h) of a post made of in and res. */
static json_t *post_record(const publish_input *in, const publish_result *res, const char *date)
{
	record_post p = {
		.id = res->id,
		.author = in->author,
		.seq = res->seq,
		.text = in->text,
		.date = date,
		.created_ms = in->now_ms,
		.audio_sha256 = res->audio_hex,
		.audio_mime = PUBLISH_OPUS_TYPE,
		.audio_size = res->audio_size,
		.duration = in->duration,
		.input_format = in->input_format,
		.input_rate = in->input_rate,
		.input_channels = in->input_channels,
		.has_loudness = in->has_loudness,
		.input_lufs = in->input_lufs,
		.gain_db = in->gain_db,
		.true_peak_dbtp = in->true_peak_dbtp,
		.output_lufs = in->output_lufs,
		.waveform_sha256 = res->has_waveform ? res->waveform_hex : NULL,
		.waveform_size = res->waveform_size,
		.waveform_points = in->waveform_points,
		.card_sha256 = res->card_hex[0] != '\0' ? res->card_hex : NULL,
		.fallback_sha256 = res->has_fallback ? res->fallback_hex : NULL,
		.fallback_mime = PUBLISH_M4A_TYPE,
		.fallback_size = res->fallback_size,
	};

	return record_new(&p);
}

static int url_of(char *buf, size_t len, const char *base, int (*path_fn)(char *, size_t, const char *),
                  const char *arg)
{
	char path[256];
	int rc = path_fn(path, sizeof(path), arg), n;
	if (rc != 0)
		return rc;
	n = snprintf(buf, len, "%s%s", base, path);
	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

int publish_response_json(const char *base_url, const char *author, const publish_result *res,
                          char **out)
{
	char url[1024], audio_url[1024], feed_url[1024], more[1024];
	json_t *j = NULL;
	int rc = url_of(url, sizeof(url), base_url, feed_path_post, res->id);

	if (rc == 0)
		rc = url_of(audio_url, sizeof(audio_url), base_url, feed_path_audio, res->audio_hex);
	if (rc == 0)
		rc = url_of(feed_url, sizeof(feed_url), base_url, feed_path_feed, author);
	if (rc != 0)
		return rc;
	j = json_pack("{s:s, s:s, s:s, s:s, s:f, s:I}", "id", res->id, "url", url, "audio_url",
	              audio_url, "feed_url", feed_url, "duration_in_seconds", res->duration,
	              "size_in_bytes", (json_int_t)res->audio_size);
	if (j != NULL && res->has_fallback &&
	    (url_of(more, sizeof(more), base_url, feed_path_fallback, res->fallback_hex) != 0 ||
	     json_object_set_new(j, "fallback_url", json_string(more)) != 0))
		rc = -ENOMEM;
	if (j != NULL && rc == 0 && res->has_waveform &&
	    (url_of(more, sizeof(more), base_url, feed_path_waveform, res->waveform_hex) != 0 ||
	     json_object_set_new(j, "waveform_url", json_string(more)) != 0))
		rc = -ENOMEM;
	*out = j != NULL && rc == 0
	       ? jsonstore_dump_flags(j, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6), NULL)
	       : NULL;
	json_decref(j);
	return *out != NULL ? 0 : -ENOMEM;
}

/* The first response to an idempotent request, kept with what identifies
 * the request (ingest/idempotency owns the record). */
static int record_idempotency(store_txn *txn, const publish_settings *set, const publish_input *in,
                              const publish_result *res)
{
	char *body = NULL;
	int rc;

	if (in->idempotency_key == NULL)
		return 0;
	rc = publish_response_json(set->base_url, in->author, res, &body);
	if (rc != 0)
		return rc;
	rc = idempotency_record(txn, in->author, in->idempotency_key, in->now_ms,
	                        in->request_sha256 ? in->request_sha256 : "", res->id, body);
	free(body);
	return rc;
}

/* Starts a write transaction for the documents of an author: c from the
 * settings, ch (NULL: changes are not noted) made empty. */
int publish__txn_begin(store *st, const publish_settings *set, int64_t now_ms,
                     documents_changes *ch, documents_author *c)
{
	int rc = ch != NULL ? documents_changes_init(ch) : 0;

	memset(c, 0, sizeof(*c));
	c->ch = ch;
	c->base_url = set->base_url;
	c->feed_items = set->feed_items;
	c->page_items = set->page_items;
	c->now = now_ms / 1000;
	if (rc == 0)
		rc = store_txn_begin(st, 1, &c->txn);
	if (rc == 0 && set->site_record != NULL) {
		char why[256];
		rc = site_ensure(c->txn, set->site_record, why, sizeof(why));
		if (rc == SAYIN_ECONFIG)
			log_error("publish: %s", why);
	}
	return rc;
}

/* Ends c's transaction: commits it when rc is 0, aborts it otherwise. On
 * failure err says "WHAT failed at STAGE: error", unless stage is NULL (the
 * caller has said why in err). Frees the author record and the change list.
 * Returns the outcome. */
int publish__txn_end(documents_author *c, int rc, const char *what, const char *stage, char *err,
                   size_t errlen)
{
	if (rc == 0) {
		stage = "commit";
		rc = store_txn_commit(c->txn);
		c->txn = NULL;
	}
	if (rc != 0) {
		if (stage != NULL)
			snprintf(err, errlen, "%s failed at %s: %s", what, stage, sayin_strerror(rc));
		store_txn_abort(c->txn);
	}
	json_decref(c->record);
	c->record = NULL;
	if (c->ch != NULL)
		documents_changes_free(c->ch);
	return rc;
}

int publish_post(store *st, const publish_settings *set, const publish_input *in,
                 publish_result *out, char *err, size_t errlen)
{
	documents_changes ch = { 0 };
	documents_author c = { 0 };
	struct enqueued q;
	json_t *post = NULL;
	unsigned char *card = NULL;
	size_t card_len = 0, record_len = 0;
	char date[40], *record = NULL;
	const char *stage = "begin";
	int rc, created = 0;
	double t0;

	if (!publish_valid_handle(in->author)) {
		snprintf(err, errlen, "invalid author handle '%s': use 1-32 of a-z, 0-9, _", in->author);
		return SAYIN_EINVAL;
	}
	if (set->feed_items == 0 || set->page_items == 0) {
		snprintf(err, errlen, "feed-items and feed-page-items must be at least 1");
		return SAYIN_EINVAL;
	}
	if (check_networks(in->crosspost, err, errlen) != 0)
		return SAYIN_EINVAL;
	memset(out, 0, sizeof(*out));
	rc = publish_new_id(in->now_ms, out->id);
	if (rc != 0) {
		snprintf(err, errlen, "cannot make a post id: %s", sayin_strerror(rc));
		return rc;
	}
	publish_format_time(in->now_ms, date, sizeof(date));

	/* The share card networks show (og:image), drawn from the waveform
	 * (so identical recordings share it), is rendered before the write
	 * transaction: it needs nothing from the store. */
	rc = page_card_png(in->waveform != NULL && in->waveform_len > 0 ? in->waveform : NULL,
	                   in->waveform != NULL ? in->waveform_len : 0, &card, &card_len);
	if (rc != 0) {
		snprintf(err, errlen, "publish failed at share card: %s", sayin_strerror(rc));
		return rc;
	}
	rc = publish__txn_begin(st, set, in->now_ms, &ch, &c);
	if (rc != 0)
		goto done;
	t0 = clock_mono_ms_f();
	stage = "author";
	rc = documents_load_author(&c, in->author, set->create_authors, in->now_ms, &created);
	if (rc == SAYIN_ENOTFOUND) {
		snprintf(err, errlen, "no author '%s' (create it with: sayin-publisher author add)",
		         in->author);
		stage = NULL;
		goto done;
	}
	if (rc == -EEXIST) {
		snprintf(err, errlen, "author '%s' was removed: a removed handle is not reused",
		         in->author);
		stage = NULL;
		goto done;
	}
	if (rc != 0)
		goto done;
	c.last_seq++;
	out->seq = c.last_seq;

	stage = "audio object";
	rc = put_referenced(c.txn, c.ch, in->audio, in->audio_len, in->audio_file, PUBLISH_OPUS_TYPE,
	                    c.now, out->id, out->audio_hex, &out->audio_was_new);
	if (rc != 0)
		goto done;
	out->audio_size = in->audio_file != NULL ? in->audio_file->len : in->audio_len;
	out->duration = in->duration;
	/* The fallback rendition and the waveform: immutable objects too,
	 * shared by identical bytes like the audio. */
	if (in->fallback_file != NULL ? in->fallback_file->len > 0
	                              : in->fallback != NULL && in->fallback_len > 0) {
		stage = "fallback audio object";
		rc = put_referenced(c.txn, c.ch, in->fallback, in->fallback_len, in->fallback_file,
		                    PUBLISH_M4A_TYPE, c.now, out->id, out->fallback_hex, NULL);
		if (rc != 0)
			goto done;
		out->fallback_size = in->fallback_file != NULL ? in->fallback_file->len
		                                               : in->fallback_len;
		out->has_fallback = 1;
	}
	if (in->waveform != NULL && in->waveform_len > 0) {
		stage = "waveform object";
		rc = put_referenced(c.txn, c.ch, in->waveform, in->waveform_len, NULL,
		                    PUBLISH_WAVEFORM_TYPE, c.now, out->id, out->waveform_hex, NULL);
		if (rc != 0)
			goto done;
		out->waveform_size = in->waveform_len;
		out->has_waveform = 1;
	}
	stage = "share card";
	rc = put_referenced(c.txn, c.ch, card, card_len, NULL, PAGE_CARD_TYPE, c.now, out->id,
	                    out->card_hex, NULL);
	if (rc != 0)
		goto done;

	stage = "post record";
	post = post_record(in, out, date);
	if (post == NULL) {
		/* jansson refuses text that is not valid UTF-8; if it takes the
		 * text alone, memory ran out (the API once answered 400 to that). */
		json_t *probe = json_string(in->text != NULL ? in->text : "");
		if (probe != NULL) {
			json_decref(probe);
			rc = -ENOMEM;
			goto done;
		}
		snprintf(err, errlen, "post text is not valid UTF-8");
		rc = SAYIN_EINVAL;
		stage = NULL;
		goto done;
	}
	record = jsonstore_dumps(post, &record_len);
	if (record == NULL) {
		rc = -ENOMEM;
		goto done;
	}
	rc = store_put_post(c.txn, out->id, in->author, out->seq, record, record_len);
	if (rc == 0)
		rc = documents_save_author(&c);
	if (rc == 0) {
		stage = "idempotency key";
		rc = record_idempotency(c.txn, set, in, out);
	}
	if (rc != 0)
		goto done;
	out->ms_objects = clock_mono_ms_f() - t0;

	t0 = clock_mono_ms_f();
	stage = "feed";
	rc = documents_write_head(&c);
	/* The post pushed seq n-H out of the head, into its archive page. */
	if (rc == 0 && c.last_seq > set->feed_items) {
		stage = "archive page";
		rc = documents_write_archive_page(&c, documents_page_of(&c, c.last_seq - set->feed_items));
	}
	if (rc == 0 && created) {
		stage = "authors.json";
		rc = documents_write_authors_json(c.txn, c.ch, set->base_url, c.now);
	}
	if (rc != 0)
		goto done;
	out->ms_feed = clock_mono_ms_f() - t0;
	t0 = clock_mono_ms_f();
	stage = "post pages";
	rc = documents_write_post_pages(&c, post, out->id);
	if (rc != 0)
		goto done;
	stage = "outbox";
	rc = publish__enqueue_deliveries(c.txn, set, &ch, "publish", in->author, out->id, in->now_ms, &q);
	if (rc == 0)
		rc = enqueue_crossposts(c.txn, set, in, out, &q, in->now_ms);
	if (rc != 0)
		goto done;
	out->ms_pages = clock_mono_ms_f() - t0;

done:
	t0 = clock_mono_ms_f();
	rc = publish__txn_end(&c, rc, "publish", stage, err, errlen);
	if (rc == 0) {
		out->ms_commit = clock_mono_ms_f() - t0;
		log_info("publish: post %s (#%llu) by %s committed (audio %s, %llu bytes%s)", out->id,
		         (unsigned long long)out->seq, in->author, out->audio_hex,
		         (unsigned long long)out->audio_size,
		         out->audio_was_new ? "" : ", already stored");
	}
	json_decref(post);
	free(record);
	free(card);
	return rc;
}


/* Drops post id's reference to the object named by hex; deletes the object
 * when it was the last. */
static int release_object(store_txn *txn, documents_changes *ch, const char *hex, const char *ctype,
                          const char *id, publish_deleted *out)
{
	uint8_t hash[STORE_HASH_LEN];
	size_t left = 0;
	int rc;

	if (hex == NULL)
		return 0;
	if (store_hash_from_hex(hex, strlen(hex), hash) != 0)
		return SAYIN_ECORRUPT;
	rc = store_ref_remove(txn, hash, id, &left);
	if (rc != 0)
		return rc;
	if (left > 0) {
		out->objects_kept++;
		return 0;
	}
	rc = store_delete_object(txn, hash);
	if (rc == SAYIN_ENOTFOUND)
		return 0;
	if (rc == 0)
		out->objects_deleted++;
	if (rc == 0)
		rc = note_object(ch, hex, ctype, 1);
	return rc;
}

/* What a deletion and an author's removal share: the post's record and
 * index entry, its objects unless another post still refers to them, its
 * page and embed. *stage names the step on error. */
int publish__drop_post(documents_author *c, const char *id, const record_view *v,
                     publish_deleted *out, const char **stage)
{
	char path[256];
	int rc;

	*stage = "post record";
	rc = store_delete_post(c->txn, id, v->author, v->seq);
	if (rc != 0)
		return rc;
	*stage = "objects";
	const struct {
		const char *hex, *ctype;
	} objects[] = { { v->audio_sha256, PUBLISH_OPUS_TYPE },
		        { v->fallback_sha256, PUBLISH_M4A_TYPE },
		        { v->waveform_sha256, PUBLISH_WAVEFORM_TYPE },
		        { v->card_sha256, PAGE_CARD_TYPE } };
	for (size_t i = 0; rc == 0 && i < sizeof(objects) / sizeof(objects[0]); i++)
		rc = release_object(c->txn, c->ch, objects[i].hex, objects[i].ctype, id, out);
	if (rc != 0)
		return rc;
	*stage = "post page";
	rc = feed_path_post(path, sizeof(path), id);
	if (rc == 0)
		rc = documents_remove_named(c->txn, c->ch, path);
	if (rc == 0)
		rc = page_path_embed(path, sizeof(path), id);
	if (rc == 0)
		rc = documents_remove_named(c->txn, c->ch, path);
	return rc;
}

int publish_delete(store *st, const publish_settings *set, const char *id, const char *author,
                   int64_t now_ms, publish_deleted *out, char *err, size_t errlen)
{
	documents_changes ch = { 0 };
	documents_author c = { 0 };
	json_t *post = NULL;
	record_view v;
	const void *rec;
	size_t len;
	const char *stage = "begin", *owner;
	int rc, created;
	uint64_t seq = 0;

	memset(out, 0, sizeof(*out));
	rc = publish__txn_begin(st, set, now_ms, &ch, &c);
	if (rc != 0)
		goto done;
	stage = "post record";
	rc = store_get_post(c.txn, id, &rec, &len);
	if (rc == SAYIN_ENOTFOUND) {
		snprintf(err, errlen, "no post '%s'", id);
		stage = NULL;
		goto done;
	}
	if (rc != 0)
		goto done;
	/* Any post can be deleted, even one a page could not render: only
	 * its author, seq and object hashes are needed. */
	jsonstore_parse(rec, len, &post);
	record_view_read(post, &v);
	owner = v.author;
	seq = v.seq;
	if (owner == NULL || seq == 0 || strlen(owner) > PUBLISH_HANDLE_MAX) {
		rc = SAYIN_ECORRUPT;
		goto done;
	}
	if (author != NULL && strcmp(author, owner) != 0) {
		snprintf(err, errlen, "post '%s' belongs to another author", id);
		rc = -EPERM;
		stage = NULL;
		goto done;
	}
	snprintf(out->author, sizeof(out->author), "%s", owner);
	out->seq = seq;
	rc = documents_load_author(&c, owner, 0, now_ms, &created);
	if (rc == 0)
		rc = publish__drop_post(&c, id, &v, out, &stage);
	if (rc != 0)
		goto done;
	/* The head always (its window is by seq, so it may now hold H-1
	 * posts), and the archive page that held the post. */
	stage = "feed";
	rc = documents_write_head(&c);
	if (rc == 0 && seq < documents_head_low(&c))
		rc = documents_write_archive_page(&c, documents_page_of(&c, seq));
	if (rc != 0)
		goto done;
	/* The CDN forgets the post in this same transaction: an acknowledged
	 * deletion cannot leave the audio cached at the edges. */
	stage = "outbox";
	rc = publish__enqueue_deliveries(c.txn, set, &ch, "delete", out->author, id, now_ms, NULL);
done:
	rc = publish__txn_end(&c, rc, "delete", stage, err, errlen);
	if (rc == 0)
		log_info("publish: post %s (#%llu) by %s deleted (%u objects deleted, %u shared kept)",
		         id, (unsigned long long)seq, out->author, out->objects_deleted,
		         out->objects_kept);
	json_decref(post);
	return rc;
}

int publish_rebuild(store *st, const publish_settings *set, const char *handle, int64_t now_ms,
                    char *err, size_t errlen)
{
	documents_changes ch = { 0 };
	documents_author c = { 0 };
	const char *stage = "begin";
	int rc, created;

	rc = publish__txn_begin(st, set, now_ms, &ch, &c);
	if (rc != 0)
		goto done;
	stage = "author";
	rc = documents_load_author(&c, handle, 0, now_ms, &created);
	if (rc != 0)
		goto done;
	stage = "feed";
	rc = documents_write_head(&c);
	for (uint64_t k = 1; rc == 0 && k <= documents_newest_page(&c); k++) {
		stage = "archive page";
		rc = documents_write_archive_page(&c, k);
	}
	if (rc == 0) {
		stage = "outbox";
		rc = publish__enqueue_deliveries(c.txn, set, &ch, "rebuild", handle, NULL, now_ms, NULL);
	}
done:
	rc = publish__txn_end(&c, rc, "rebuild", stage, err, errlen);
	if (rc == 0)
		log_info("publish: %s's feed rebuilt (%llu posts, %llu archive pages)", handle,
		         (unsigned long long)c.last_seq,
		         (unsigned long long)documents_newest_page(&c));
	return rc;
}

static int collect_key(void *arg, const char *key, const void *record, size_t len)
{
	(void)record;
	(void)len;
	return json_array_append_new(arg, json_string(key)) == 0 ? 0 : -ENOMEM;
}

int publish__collect_post_id(void *arg, const char *id, uint64_t seq, const void *record,
                              size_t len)
{
	(void)seq;
	(void)record;
	(void)len;
	return json_array_append_new(arg, json_string(id)) == 0 ? 0 : -ENOMEM;
}

/* Rewrites every document of the author c has loaded: head feed, archive
 * pages, each post's page and embed; the post ids go into ids. *stage
 * names the step for a failure's message. */
int publish__rewrite_author_documents(documents_author *c, const char *handle, json_t *ids,
                                    const char **stage)
{
	size_t i;
	json_t *v;
	int rc;

	*stage = "feed";
	rc = documents_write_head(c);
	for (uint64_t k = 1; rc == 0 && k <= documents_newest_page(c); k++) {
		*stage = "archive page";
		rc = documents_write_archive_page(c, k);
	}
	if (rc == 0) {
		*stage = "post pages";
		rc = store_author_posts(c->txn, handle, 0, publish__collect_post_id, ids);
	}
	json_array_foreach(ids, i, v) {
		const void *rec;
		size_t len;
		json_t *post = NULL;
		if (rc != 0)
			break;
		rc = store_get_post(c->txn, json_string_value(v), &rec, &len);
		if (rc == 0)
			rc = jsonstore_parse(rec, len, &post);
		if (rc == 0)
			rc = documents_write_post_pages(c, post, json_string_value(v));
		json_decref(post);
	}
	return rc;
}

/* Every document of one author, post pages included, in one transaction. */
static int rebuild_author_all(store *st, const publish_settings *set, const char *handle,
                              int64_t now_ms, size_t *posts, char *err, size_t errlen)
{
	documents_changes ch = { 0 };
	documents_author c = { 0 };
	const char *stage = "begin";
	json_t *ids = json_array();
	int rc, created;

	rc = ids == NULL ? -ENOMEM : publish__txn_begin(st, set, now_ms, &ch, &c);
	if (rc != 0)
		goto done;
	stage = "author";
	rc = documents_load_author(&c, handle, 0, now_ms, &created);
	if (rc != 0)
		goto done;
	rc = publish__rewrite_author_documents(&c, handle, ids, &stage);
	if (rc == 0) {
		stage = "outbox";
		rc = publish__enqueue_deliveries(c.txn, set, &ch, "rebuild", handle, NULL, now_ms, NULL);
	}
done:
	rc = publish__txn_end(&c, rc, "rebuild", stage, err, errlen);
	if (rc == 0)
		*posts += json_array_size(ids);
	json_decref(ids);
	return rc;
}

int publish_rebuild_all(store *st, const publish_settings *set, int64_t now_ms, size_t *authors,
                        size_t *posts, char *err, size_t errlen)
{
	documents_changes ch = { 0 };
	documents_author c = { 0 };
	const char *stage = "authors";
	json_t *handles = json_array();
	store_txn *txn;
	size_t i;
	json_t *v;
	int rc = handles != NULL ? store_txn_begin(st, 0, &txn) : -ENOMEM;

	*authors = *posts = 0;
	if (rc == 0) {
		rc = store_each_record(txn, STORE_AUTHORS, "", collect_key, handles);
		store_txn_abort(txn);
	}
	if (rc != 0) {
		snprintf(err, errlen, "rebuild: cannot list the authors: %s", sayin_strerror(rc));
		json_decref(handles);
		return rc;
	}
	json_array_foreach(handles, i, v) {
		rc = rebuild_author_all(st, set, json_string_value(v), now_ms, posts, err, errlen);
		if (rc != 0) {
			json_decref(handles);
			return rc;
		}
		(*authors)++;
	}
	json_decref(handles);
	rc = publish__txn_begin(st, set, now_ms, &ch, &c);
	if (rc == 0) {
		stage = "authors.json";
		rc = documents_write_authors_json(c.txn, c.ch, set->base_url, c.now);
	}
	if (rc == 0) {
		stage = "outbox";
		rc = publish__enqueue_deliveries(c.txn, set, &ch, "rebuild", "", NULL, now_ms, NULL);
	}
	rc = publish__txn_end(&c, rc, "rebuild", stage, err, errlen);
	if (rc == 0)
		log_info("publish: site rebuilt: %zu authors, %zu posts", *authors, *posts);
	return rc;
}

int publish_import(store *st, const publish_settings *set, const publish_input *in, size_t count,
                   char *err, size_t errlen)
{
	const size_t batch = 10000;
	size_t done = 0;
	int rc = 0;

	while (rc == 0 && done < count) {
		documents_author c;
		publish_result res = { 0 };
		const char *stage = "author";
		int created;

		rc = publish__txn_begin(st, set, in->now_ms, NULL, &c);
		if (rc == 0)
			rc = documents_load_author(&c, in->author, set->create_authors, in->now_ms, &created);
		if (rc == 0) {
			stage = "objects";
			rc = put_plain(c.txn, in->audio, in->audio_len, PUBLISH_OPUS_TYPE, c.now,
			               res.audio_hex);
		}
		res.audio_size = in->audio_len;
		if (rc == 0 && in->fallback != NULL) {
			rc = put_plain(c.txn, in->fallback, in->fallback_len, PUBLISH_M4A_TYPE, c.now,
			               res.fallback_hex);
			res.has_fallback = 1;
			res.fallback_size = in->fallback_len;
		}
		if (rc == 0 && in->waveform != NULL) {
			rc = put_plain(c.txn, in->waveform, in->waveform_len, PUBLISH_WAVEFORM_TYPE, c.now,
			               res.waveform_hex);
			res.has_waveform = 1;
			res.waveform_size = in->waveform_len;
		}
		for (size_t i = 0; rc == 0 && i < batch && done < count; i++, done++) {
			int64_t t = in->now_ms + (int64_t)done;
			char date[40], *record;
			size_t record_len = 0;
			json_t *post;
			stage = "post";
			rc = publish_new_id(t, res.id);
			if (rc != 0)
				break;
			res.seq = ++c.last_seq;
			publish_format_time(t, date, sizeof(date));
			post = post_record(in, &res, date);
			record = post ? jsonstore_dumps(post, &record_len) : NULL;
			json_decref(post);
			if (record == NULL) {
				rc = -ENOMEM;
				break;
			}
			rc = store_put_post(c.txn, res.id, in->author, res.seq, record, record_len);
			free(record);
			/* Each post refers to the shared objects, as a published one would. */
			for (int k = 0; rc == 0 && k < 3; k++) {
				const char *hex = k == 0 ? res.audio_hex : k == 1 ? res.fallback_hex
				                                                  : res.waveform_hex;
				uint8_t hash[STORE_HASH_LEN];
				if (hex[0] != '\0' && store_hash_from_hex(hex, STORE_HASH_HEX_LEN, hash) == 0)
					rc = store_ref_add(c.txn, hash, res.id);
			}
		}
		if (rc == 0)
			rc = documents_save_author(&c);
		if (rc == 0) {
			stage = "commit";
			rc = store_txn_commit(c.txn);
			c.txn = NULL;
		}
		if (rc != 0)
			snprintf(err, errlen, "import failed at %s after %zu posts: %s", stage, done,
			         sayin_strerror(rc));
		store_txn_abort(c.txn);
		json_decref(c.record);
	}
	return rc;
}

/* publish: one write transaction per post (or deletion): objects and their
 * references, record, head feed, one archive page, author and post pages,
 * names. */
#include "publish.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/jsonstore.h"
#include "core/log.h"
#include "deliver/outbox.h"
#include "render/compress.h"
#include "render/feed.h"
#include "render/page.h"
#include "render/record.h"

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

/* What a transaction changed, for the delivery jobs it enqueues (the
 * payload cdn/cdn.h documents). */
struct changes {
	json_t *paths;   /* names written */
	json_t *keys;    /* their surrogate keys, except author-* (that would purge everything) */
	json_t *objects; /* new immutable objects: {path, sha256, type} */
	json_t *removed; /* names and objects deleted */
};

static int changes_init(struct changes *ch)
{
	ch->paths = json_array();
	ch->keys = json_array();
	ch->objects = json_array();
	ch->removed = json_array();
	return ch->paths && ch->keys && ch->objects && ch->removed ? 0 : -ENOMEM;
}

static void changes_free(struct changes *ch)
{
	json_decref(ch->paths);
	json_decref(ch->keys);
	json_decref(ch->objects);
	json_decref(ch->removed);
}

static int array_add_unique(json_t *a, const char *s, size_t len)
{
	json_t *v;
	size_t i;
	json_array_foreach(a, i, v) {
		const char *x = json_string_value(v);
		if (strlen(x) == len && memcmp(x, s, len) == 0)
			return 0;
	}
	return json_array_append_new(a, json_stringn(s, len)) == 0 ? 0 : -ENOMEM;
}

static int note_name(struct changes *ch, const char *path, const char *keys, int removed)
{
	int rc;
	if (ch == NULL)
		return 0;
	rc = array_add_unique(removed ? ch->removed : ch->paths, path, strlen(path));
	while (rc == 0 && keys != NULL && *keys != '\0') {
		size_t n = strcspn(keys, " ");
		if (n > 0 && strncmp(keys, "author-", 7) != 0)
			rc = array_add_unique(ch->keys, keys, n);
		keys += n;
		while (*keys == ' ')
			keys++;
	}
	return rc;
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

static int note_object(struct changes *ch, const char *hex, const char *ctype, int removed)
{
	char path[128];
	if (ch == NULL)
		return 0;
	snprintf(path, sizeof(path), "/a/%s.%s", hex, object_ext(ctype));
	if (removed)
		return array_add_unique(ch->removed, path, strlen(path));
	return json_array_append_new(ch->objects, json_pack("{s:s, s:s, s:s}", "path", path,
	                                                    "sha256", hex, "type", ctype)) == 0
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
struct enqueued {
	char ids[16][OUTBOX_ID_LEN + 1];
	const char *last[16]; /* the last stage's jobs: what waits for the CDN waits for these */
	size_t n_last, n_ids;
};

static int enqueue_deliveries(store_txn *txn, const publish_settings *set,
                              const struct changes *ch, const char *event, const char *author,
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
	payload = json_pack("{s:s, s:s, s:s, s:O, s:O, s:O, s:O}", "event", event, "author", author,
	                    "post", post_id ? post_id : "", "paths", ch->paths, "keys", ch->keys,
	                    "objects", ch->objects, "removed", ch->removed);
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
		payload = json_pack("{s:s, s:s, s:s, s:s, s:s}", "event", "crosspost", "post", res->id,
		                    "author", in->author, "text", in->text ? in->text : "", "url", url);
		if (payload == NULL)
			return -ENOMEM;
		rc = outbox_enqueue(txn, networks[i], payload, cdn->last, cdn->n_last, now_ms, id);
		json_decref(payload);
	}
	return rc;
}

/* Everything one transaction needs to rewrite an author's documents. */
struct author_ctx {
	struct changes *ch;
	store_txn *txn;
	const publish_settings *set;
	feed_author author;
	json_t *record;    /* the author record; "last_seq" is n */
	uint64_t last_seq;
	int64_t now;       /* unix seconds */
};

/* Loads the author record into ctx; creates it on a handle's first post
 * when the settings allow (*created = 1). */
static int load_author(struct author_ctx *ctx, const char *handle, int create, int64_t now_ms,
                       int *created)
{
	const void *rec;
	size_t len;
	json_t *j;
	int rc = store_get_author(ctx->txn, handle, &rec, &len);

	*created = 0;
	if (rc == 0) {
		jsonstore_parse(rec, len, &j);
		if (j == NULL || json_string_value(json_object_get(j, "name")) == NULL) {
			json_decref(j);
			return SAYIN_ECORRUPT;
		}
	} else if (rc == SAYIN_ENOTFOUND && create) {
		/* Its display name is the handle until an operator sets one. */
		j = json_pack("{s:s, s:s, s:I, s:I}", "handle", handle, "name", handle, "created_ms",
		              (json_int_t)now_ms, "last_seq", (json_int_t)0);
		if (j == NULL)
			return -ENOMEM;
		*created = 1;
	} else {
		return rc;
	}
	ctx->record = j;
	ctx->author.handle = json_string_value(json_object_get(j, "handle"));
	if (ctx->author.handle == NULL)
		ctx->author.handle = handle;
	ctx->author.name = json_string_value(json_object_get(j, "name"));
	ctx->last_seq = (uint64_t)json_integer_value(json_object_get(j, "last_seq"));
	return 0;
}

struct post_list {
	json_t **items;
	size_t n, cap;
};

static int collect_post(void *arg, const char *id, uint64_t seq, const void *record, size_t len)
{
	struct post_list *l = arg;
	json_t *j;

	(void)seq;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 32;
		json_t **items = realloc(l->items, cap * sizeof(*items));
		if (items == NULL)
			return -ENOMEM;
		l->items = items;
		l->cap = cap;
	}
	if (jsonstore_parse(record, len, &j) != 0) {
		log_error("publish: post %s has a corrupt record", id);
		return SAYIN_ECORRUPT;
	}
	l->items[l->n++] = j;
	return 0;
}

static void post_list_free(struct post_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		json_decref(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->n = l->cap = 0;
}

/* Deletes the objects a name pointed at before, except those it still
 * points at (now may be NULL: the name is gone). Names own their generated
 * documents (a feed or page embeds its own URL, so no other name can share
 * its bytes). */
static int drop_replaced(store_txn *txn, const store_name *old, const store_name *now)
{
	for (int e = 0; e < STORE_ENC_COUNT; e++) {
		int still_used = 0;
		if (!(old->encodings & (1u << e)))
			continue;
		for (int k = 0; now != NULL && k < STORE_ENC_COUNT; k++) {
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
static int put_named(store_txn *txn, struct changes *ch, const char *name, const char *bytes,
                     size_t len, const char *ctype, const char *surrogate_key, int64_t now)
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
	if (rc == 0)
		rc = note_name(ch, name, surrogate_key, 0);
	return rc;
}

/* Removes a name and the documents it owned. Absent: 0. */
static int remove_named(store_txn *txn, struct changes *ch, const char *name)
{
	store_name old;
	int rc = store_get_name(txn, name, &old);
	if (rc == SAYIN_ENOTFOUND)
		return 0;
	if (rc == 0)
		rc = note_name(ch, name, old.surrogate_key, 1);
	if (rc == 0)
		rc = drop_replaced(txn, &old, NULL);
	if (rc == 0)
		rc = store_delete_name(txn, name);
	return rc;
}

/* "author-HANDLE <kind>..." : the keys a CDN purges a name by (Surrogate-Key). */
static int surrogate_keys(char *buf, size_t len, const char *handle, const char *kind,
                          const char *id)
{
	int n = snprintf(buf, len, "author-%s %s%s", handle, kind, id);
	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

/* Page windows (see publish.h). */
static uint64_t head_low(const struct author_ctx *c)
{
	uint64_t h = c->set->feed_items;
	return c->last_seq > h ? c->last_seq - h + 1 : 1;
}

/* The newest archive page: the one holding seq n-H; 0 when the head holds
 * everything. */
static uint64_t newest_page(const struct author_ctx *c)
{
	uint64_t h = c->set->feed_items, p = c->set->page_items;
	return c->last_seq > h ? (c->last_seq - h + p - 1) / p : 0;
}

static uint64_t page_of(const struct author_ctx *c, uint64_t seq)
{
	return (seq + c->set->page_items - 1) / c->set->page_items;
}

static int page_url(const struct author_ctx *c, uint64_t page, char *buf, size_t len)
{
	char path[256];
	int rc = feed_path_page(path, sizeof(path), c->author.handle, page);
	int n;
	if (rc != 0)
		return rc;
	n = snprintf(buf, len, "%s%s", c->set->base_url, path);
	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

/* Writes a JSON Feed page of the posts in [lo, hi] to path. */
static int write_feed_doc(struct author_ctx *c, const char *path, uint64_t hi, uint64_t lo,
                          uint64_t next_page, const char *keys, struct post_list *list)
{
	char next[1024], *doc = NULL;
	size_t len;
	int rc = store_author_posts_range(c->txn, c->author.handle, hi, lo, 0, collect_post, list);

	if (rc == 0 && next_page > 0)
		rc = page_url(c, next_page, next, sizeof(next));
	if (rc == 0)
		rc = feed_author_json(c->set->base_url, &c->author, list->items, list->n,
		                      next_page > 0 ? next : NULL, &doc, &len);
	if (rc == 0)
		rc = put_named(c->txn, c->ch, path, doc, len, FEED_CONTENT_TYPE, keys, c->now);
	free(doc);
	return rc;
}

/* The author page /u/HANDLE/: the head's posts, linking the same older page. */
static int write_author_page(struct author_ctx *c, const struct post_list *list)
{
	char path[256], keys[STORE_SURROGATE_KEY_MAX + 1], older[1024], *doc = NULL;
	uint64_t page = newest_page(c);
	size_t len;
	int rc = page > 0 ? page_url(c, page, older, sizeof(older)) : 0;

	if (rc == 0)
		rc = page_author_html(c->set->base_url, &c->author, list->items, list->n,
		                      page > 0 ? older : NULL, &doc, &len);
	if (rc == 0)
		rc = feed_path_author(path, sizeof(path), c->author.handle);
	if (rc == 0)
		rc = surrogate_keys(keys, sizeof(keys), c->author.handle, "feed-", c->author.handle);
	if (rc == 0)
		rc = put_named(c->txn, c->ch, path, doc, len, PAGE_HTML_TYPE, keys, c->now);
	free(doc);
	return rc;
}

/* The head feed.json: the newest H posts; and the author page, which shows
 * the same posts (and is purged with the feed: same surrogate key). */
static int write_head(struct author_ctx *c)
{
	struct post_list list = { 0 };
	char path[256], keys[STORE_SURROGATE_KEY_MAX + 1];
	int rc = feed_path_feed(path, sizeof(path), c->author.handle);

	if (rc == 0)
		rc = surrogate_keys(keys, sizeof(keys), c->author.handle, "feed-", c->author.handle);
	if (rc == 0)
		rc = write_feed_doc(c, path, c->last_seq, head_low(c), newest_page(c), keys, &list);
	if (rc == 0)
		rc = write_author_page(c, &list);
	post_list_free(&list);
	return rc;
}

/* Archive page k. Pages past the newest do not exist. */
static int write_archive_page(struct author_ctx *c, uint64_t k)
{
	struct post_list list = { 0 };
	char path[256], keys[STORE_SURROGATE_KEY_MAX + 1], kind[64];
	uint64_t p = c->set->page_items, hi;
	int rc;

	if (k == 0 || k > newest_page(c))
		return 0;
	hi = k * p < head_low(c) - 1 ? k * p : head_low(c) - 1;
	snprintf(kind, sizeof(kind), "page-%s-", c->author.handle);
	rc = feed_path_page(path, sizeof(path), c->author.handle, k);
	if (rc == 0) {
		char num[24];
		snprintf(num, sizeof(num), "%llu", (unsigned long long)k);
		rc = surrogate_keys(keys, sizeof(keys), c->author.handle, kind, num);
	}
	if (rc == 0)
		rc = write_feed_doc(c, path, hi, (k - 1) * p + 1, k - 1, keys, &list);
	post_list_free(&list);
	return rc;
}

/* /authors.json: every author, in handle order. O(authors): written only
 * when an author is added. */
struct author_list {
	feed_author *items;
	json_t **records;
	size_t n, cap;
};

static int collect_author(void *arg, const char *key, const void *record, size_t len)
{
	struct author_list *l = arg;
	json_t *j;
	(void)key;
	jsonstore_parse(record, len, &j);
	if (j == NULL || json_string_value(json_object_get(j, "name")) == NULL) {
		json_decref(j);
		return SAYIN_ECORRUPT;
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		feed_author *items = realloc(l->items, cap * sizeof(*items));
		json_t **records = items ? realloc(l->records, cap * sizeof(*records)) : NULL;
		if (items != NULL)
			l->items = items;
		if (records == NULL) {
			json_decref(j);
			return -ENOMEM;
		}
		l->records = records;
		l->cap = cap;
	}
	l->records[l->n] = j;
	l->items[l->n].handle = json_string_value(json_object_get(j, "handle"));
	l->items[l->n].name = json_string_value(json_object_get(j, "name"));
	if (l->items[l->n].handle == NULL) {
		json_decref(j);
		return SAYIN_ECORRUPT;
	}
	l->n++;
	return 0;
}

static int write_authors_json(store_txn *txn, struct changes *ch, const publish_settings *set,
                              int64_t now)
{
	struct author_list l = { 0 };
	char *doc = NULL;
	size_t len;
	int rc = store_each_record(txn, STORE_AUTHORS, "", collect_author, &l);

	if (rc == 0)
		rc = feed_authors_json(set->base_url, l.items, l.n, &doc, &len);
	if (rc == 0)
		rc = put_named(txn, ch, FEED_PATH_AUTHORS, doc, len, "application/json", "authors", now);
	for (size_t i = 0; i < l.n; i++)
		json_decref(l.records[i]);
	free(l.records);
	free(l.items);
	free(doc);
	return rc;
}

/* /p/ID and /p/ID/embed. */
static int write_post_pages(struct author_ctx *c, const json_t *post, const char *id)
{
	static int (*const render[2])(const char *, const feed_author *, const json_t *, char **,
	                              size_t *) = { page_post_html, page_embed_html };
	char path[256], keys[STORE_SURROGATE_KEY_MAX + 1], *doc = NULL;
	size_t len;
	int rc = surrogate_keys(keys, sizeof(keys), c->author.handle, "post-", id);

	for (int i = 0; rc == 0 && i < 2; i++) {
		rc = render[i](c->set->base_url, &c->author, post, &doc, &len);
		if (rc == 0)
			rc = i == 0 ? feed_path_post(path, sizeof(path), id)
			            : page_path_embed(path, sizeof(path), id);
		if (rc == 0)
			rc = put_named(c->txn, c->ch, path, doc, len, PAGE_HTML_TYPE, keys, c->now);
		free(doc);
		doc = NULL;
	}
	return rc;
}

static int save_author(struct author_ctx *c)
{
	if (json_object_set_new(c->record, "last_seq", json_integer((json_int_t)c->last_seq)) != 0)
		return -ENOMEM;
	return jsonstore_put(c->txn, STORE_AUTHORS, c->author.handle, c->record);
}

/* Stores an immutable object, from memory or (file not NULL) from a file,
 * and records that post id uses it. */
static int put_referenced(store_txn *txn, struct changes *ch, const void *bytes, size_t len,
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
	*out = j != NULL && rc == 0 ? json_dumps(j, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6))
	                            : NULL;
	json_decref(j);
	return *out != NULL ? 0 : -ENOMEM;
}

/* The first response to an idempotent request, kept with what identifies
 * the request. */
static int record_idempotency(store_txn *txn, const publish_settings *set, const publish_input *in,
                              const publish_result *res)
{
	char key[PUBLISH_HANDLE_MAX + 2 + 256], *body = NULL;
	json_t *j;
	int rc;

	if (in->idempotency_key == NULL)
		return 0;
	snprintf(key, sizeof(key), "%s\n%s", in->author, in->idempotency_key);
	rc = publish_response_json(set->base_url, in->author, res, &body);
	if (rc != 0)
		return rc;
	j = json_pack("{s:I, s:s, s:s, s:i, s:s}", "created_ms", (json_int_t)in->now_ms,
	              "request_sha256", in->request_sha256 ? in->request_sha256 : "", "post_id",
	              res->id, "status", 201, "body", body);
	free(body);
	if (j == NULL)
		return -ENOMEM;
	rc = jsonstore_put(txn, STORE_IDEMPOTENCY, key, j);
	json_decref(j);
	return rc;
}

int publish_post(store *st, const publish_settings *set, const publish_input *in,
                 publish_result *out, char *err, size_t errlen)
{
	struct changes ch = { 0 };
	struct author_ctx c = { .ch = &ch, .set = set, .now = in->now_ms / 1000 };
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
	rc = changes_init(&ch);
	if (rc == 0)
		rc = store_txn_begin(st, 1, &c.txn);
	if (rc != 0)
		goto fail;
	t0 = clock_mono_ms_f();
	stage = "author";
	rc = load_author(&c, in->author, set->create_authors, in->now_ms, &created);
	if (rc == SAYIN_ENOTFOUND) {
		snprintf(err, errlen, "no author '%s' (create it with: sayin-publisher author add)",
		         in->author);
		goto fail_quiet;
	}
	if (rc != 0)
		goto fail;
	c.last_seq++;
	out->seq = c.last_seq;

	stage = "audio object";
	rc = put_referenced(c.txn, c.ch, in->audio, in->audio_len, in->audio_file, PUBLISH_OPUS_TYPE,
	                    c.now, out->id, out->audio_hex, &out->audio_was_new);
	if (rc != 0)
		goto fail;
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
			goto fail;
		out->fallback_size = in->fallback_file != NULL ? in->fallback_file->len
		                                               : in->fallback_len;
		out->has_fallback = 1;
	}
	if (in->waveform != NULL && in->waveform_len > 0) {
		stage = "waveform object";
		rc = put_referenced(c.txn, c.ch, in->waveform, in->waveform_len, NULL,
		                    PUBLISH_WAVEFORM_TYPE, c.now, out->id, out->waveform_hex, NULL);
		if (rc != 0)
			goto fail;
		out->waveform_size = in->waveform_len;
		out->has_waveform = 1;
	}
	stage = "share card";
	rc = put_referenced(c.txn, c.ch, card, card_len, NULL, PAGE_CARD_TYPE, c.now, out->id,
	                    out->card_hex, NULL);
	if (rc != 0)
		goto fail;

	stage = "post record";
	post = post_record(in, out, date);
	if (post == NULL) {
		/* jansson refuses text that is not valid UTF-8. */
		snprintf(err, errlen, "post text is not valid UTF-8");
		rc = SAYIN_EINVAL;
		goto fail_quiet;
	}
	record = jsonstore_dumps(post, &record_len);
	if (record == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = store_put_post(c.txn, out->id, in->author, out->seq, record, record_len);
	if (rc == 0)
		rc = save_author(&c);
	if (rc == 0) {
		stage = "idempotency key";
		rc = record_idempotency(c.txn, set, in, out);
	}
	if (rc != 0)
		goto fail;
	out->ms_objects = clock_mono_ms_f() - t0;

	t0 = clock_mono_ms_f();
	stage = "feed";
	rc = write_head(&c);
	/* The post pushed seq n-H out of the head, into its archive page. */
	if (rc == 0 && c.last_seq > set->feed_items) {
		stage = "archive page";
		rc = write_archive_page(&c, page_of(&c, c.last_seq - set->feed_items));
	}
	if (rc == 0 && created) {
		stage = "authors.json";
		rc = write_authors_json(c.txn, c.ch, set, c.now);
	}
	if (rc != 0)
		goto fail;
	out->ms_feed = clock_mono_ms_f() - t0;
	t0 = clock_mono_ms_f();
	stage = "post pages";
	rc = write_post_pages(&c, post, out->id);
	if (rc != 0)
		goto fail;
	stage = "outbox";
	rc = enqueue_deliveries(c.txn, set, &ch, "publish", in->author, out->id, in->now_ms, &q);
	if (rc == 0)
		rc = enqueue_crossposts(c.txn, set, in, out, &q, in->now_ms);
	if (rc != 0)
		goto fail;
	out->ms_pages = clock_mono_ms_f() - t0;

	t0 = clock_mono_ms_f();
	stage = "commit";
	rc = store_txn_commit(c.txn);
	c.txn = NULL;
	if (rc != 0)
		goto fail;
	out->ms_commit = clock_mono_ms_f() - t0;
	log_info("publish: post %s (#%llu) by %s committed (audio %s, %llu bytes%s)", out->id,
	         (unsigned long long)out->seq, in->author, out->audio_hex,
	         (unsigned long long)out->audio_size, out->audio_was_new ? "" : ", already stored");
	json_decref(c.record);
	json_decref(post);
	free(record);
	free(card);
	changes_free(&ch);
	return 0;

fail:
	snprintf(err, errlen, "publish failed at %s: %s", stage, sayin_strerror(rc));
fail_quiet:
	store_txn_abort(c.txn);
	json_decref(c.record);
	json_decref(post);
	free(record);
	free(card);
	changes_free(&ch);
	return rc;
}

/* A display name: UTF-8, 1 to 100 characters, no control characters. */
static int valid_name(const char *name)
{
	size_t chars = 0;
	json_t *j;
	if (name == NULL || *name == '\0')
		return 0;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			return 0;
		if ((*p & 0xc0) != 0x80)
			chars++;
	}
	j = json_string(name); /* NULL unless valid UTF-8 */
	json_decref(j);
	return j != NULL && chars <= 100;
}

int publish_author_add(store *st, const publish_settings *set, const char *handle,
                       const char *name, int64_t now_ms, char *err, size_t errlen)
{
	struct changes ch = { 0 };
	struct author_ctx c = { .ch = &ch, .set = set, .now = now_ms / 1000 };
	const void *rec;
	size_t len;
	const char *stage = "begin";
	int rc, created;

	if (!publish_valid_handle(handle)) {
		snprintf(err, errlen, "invalid author handle '%s': use 1-32 of a-z, 0-9, _", handle);
		return SAYIN_EINVAL;
	}
	if (!valid_name(name)) {
		snprintf(err, errlen, "invalid name: use 1-100 characters of UTF-8 text");
		return SAYIN_EINVAL;
	}
	rc = changes_init(&ch);
	if (rc == 0)
		rc = store_txn_begin(st, 1, &c.txn);
	if (rc != 0)
		goto fail;
	stage = "author";
	rc = store_get_author(c.txn, handle, &rec, &len);
	if (rc == 0) {
		snprintf(err, errlen, "author '%s' exists", handle);
		rc = -EEXIST;
		goto fail_quiet;
	}
	if (rc != SAYIN_ENOTFOUND)
		goto fail;
	rc = load_author(&c, handle, 1, now_ms, &created);
	if (rc == 0 && json_object_set_new(c.record, "name", json_string(name)) != 0)
		rc = -ENOMEM;
	if (rc == 0) {
		c.author.name = json_string_value(json_object_get(c.record, "name"));
		rc = save_author(&c);
	}
	if (rc != 0)
		goto fail;
	stage = "feed";
	rc = write_head(&c);
	if (rc != 0)
		goto fail;
	stage = "authors.json";
	rc = write_authors_json(c.txn, c.ch, set, c.now);
	if (rc == 0) {
		stage = "outbox";
		rc = enqueue_deliveries(c.txn, set, &ch, "author", handle, NULL, now_ms, NULL);
	}
	if (rc != 0)
		goto fail;
	stage = "commit";
	rc = store_txn_commit(c.txn);
	c.txn = NULL;
	if (rc != 0)
		goto fail;
	log_info("publish: author %s added", handle);
	json_decref(c.record);
	changes_free(&ch);
	return 0;
fail:
	snprintf(err, errlen, "adding author failed at %s: %s", stage, sayin_strerror(rc));
fail_quiet:
	store_txn_abort(c.txn);
	json_decref(c.record);
	changes_free(&ch);
	return rc;
}

/* Drops post id's reference to the object named by hex; deletes the object
 * when it was the last. */
static int release_object(store_txn *txn, struct changes *ch, const char *hex, const char *ctype,
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

int publish_delete(store *st, const publish_settings *set, const char *id, const char *author,
                   int64_t now_ms, publish_deleted *out, char *err, size_t errlen)
{
	struct changes ch = { 0 };
	struct author_ctx c = { .ch = &ch, .set = set, .now = now_ms / 1000 };
	json_t *post = NULL;
	record_view v;
	const void *rec;
	size_t len;
	const char *stage = "begin", *owner;
	char path[256];
	int rc, created;
	uint64_t seq;

	memset(out, 0, sizeof(*out));
	rc = changes_init(&ch);
	if (rc == 0)
		rc = store_txn_begin(st, 1, &c.txn);
	if (rc != 0)
		goto fail;
	stage = "post record";
	rc = store_get_post(c.txn, id, &rec, &len);
	if (rc == SAYIN_ENOTFOUND) {
		snprintf(err, errlen, "no post '%s'", id);
		goto fail_quiet;
	}
	if (rc != 0)
		goto fail;
	/* Any post can be deleted, even one a page could not render: only
	 * its author, seq and object hashes are needed. */
	jsonstore_parse(rec, len, &post);
	record_view_read(post, &v);
	owner = v.author;
	seq = v.seq;
	if (owner == NULL || seq == 0 || strlen(owner) > PUBLISH_HANDLE_MAX) {
		rc = SAYIN_ECORRUPT;
		goto fail;
	}
	if (author != NULL && strcmp(author, owner) != 0) {
		snprintf(err, errlen, "post '%s' belongs to another author", id);
		rc = -EPERM;
		goto fail_quiet;
	}
	snprintf(out->author, sizeof(out->author), "%s", owner);
	out->seq = seq;
	rc = load_author(&c, owner, 0, now_ms, &created);
	if (rc != 0)
		goto fail;
	rc = store_delete_post(c.txn, id, owner, seq);
	if (rc != 0)
		goto fail;
	stage = "objects";
	const struct {
		const char *hex, *ctype;
	} objects[] = { { v.audio_sha256, PUBLISH_OPUS_TYPE },
		        { v.fallback_sha256, PUBLISH_M4A_TYPE },
		        { v.waveform_sha256, PUBLISH_WAVEFORM_TYPE },
		        { v.card_sha256, PAGE_CARD_TYPE } };
	for (size_t i = 0; rc == 0 && i < sizeof(objects) / sizeof(objects[0]); i++)
		rc = release_object(c.txn, c.ch, objects[i].hex, objects[i].ctype, id, out);
	if (rc != 0)
		goto fail;
	stage = "post page";
	rc = feed_path_post(path, sizeof(path), id);
	if (rc == 0)
		rc = remove_named(c.txn, c.ch, path);
	if (rc == 0)
		rc = page_path_embed(path, sizeof(path), id);
	if (rc == 0)
		rc = remove_named(c.txn, c.ch, path);
	if (rc != 0)
		goto fail;
	/* The head always (its window is by seq, so it may now hold H-1
	 * posts), and the archive page that held the post. */
	stage = "feed";
	rc = write_head(&c);
	if (rc == 0 && seq < head_low(&c))
		rc = write_archive_page(&c, page_of(&c, seq));
	if (rc != 0)
		goto fail;
	/* The CDN forgets the post in this same transaction: an acknowledged
	 * deletion cannot leave the audio cached at the edges. */
	stage = "outbox";
	rc = enqueue_deliveries(c.txn, set, &ch, "delete", out->author, id, now_ms, NULL);
	if (rc != 0)
		goto fail;
	stage = "commit";
	rc = store_txn_commit(c.txn);
	c.txn = NULL;
	if (rc != 0)
		goto fail;
	log_info("publish: post %s (#%llu) by %s deleted (%u objects deleted, %u shared kept)", id,
	         (unsigned long long)seq, out->author, out->objects_deleted, out->objects_kept);
	json_decref(c.record);
	json_decref(post);
	changes_free(&ch);
	return 0;
fail:
	snprintf(err, errlen, "delete failed at %s: %s", stage, sayin_strerror(rc));
fail_quiet:
	store_txn_abort(c.txn);
	json_decref(c.record);
	json_decref(post);
	changes_free(&ch);
	return rc;
}

int publish_rebuild(store *st, const publish_settings *set, const char *handle, int64_t now_ms,
                    char *err, size_t errlen)
{
	struct changes ch = { 0 };
	struct author_ctx c = { .ch = &ch, .set = set, .now = now_ms / 1000 };
	const char *stage = "begin";
	int rc, created;

	rc = changes_init(&ch);
	if (rc == 0)
		rc = store_txn_begin(st, 1, &c.txn);
	if (rc != 0)
		goto fail;
	stage = "author";
	rc = load_author(&c, handle, 0, now_ms, &created);
	if (rc != 0)
		goto fail;
	stage = "feed";
	rc = write_head(&c);
	for (uint64_t k = 1; rc == 0 && k <= newest_page(&c); k++) {
		stage = "archive page";
		rc = write_archive_page(&c, k);
	}
	if (rc == 0) {
		stage = "outbox";
		rc = enqueue_deliveries(c.txn, set, &ch, "rebuild", handle, NULL, now_ms, NULL);
	}
	if (rc != 0)
		goto fail;
	stage = "commit";
	rc = store_txn_commit(c.txn);
	c.txn = NULL;
	if (rc != 0)
		goto fail;
	log_info("publish: %s's feed rebuilt (%llu posts, %llu archive pages)", handle,
	         (unsigned long long)c.last_seq, (unsigned long long)newest_page(&c));
	json_decref(c.record);
	changes_free(&ch);
	return 0;
fail:
	snprintf(err, errlen, "rebuild failed at %s: %s", stage, sayin_strerror(rc));
	store_txn_abort(c.txn);
	json_decref(c.record);
	changes_free(&ch);
	return rc;
}

int publish_import(store *st, const publish_settings *set, const publish_input *in, size_t count,
                   char *err, size_t errlen)
{
	const size_t batch = 10000;
	size_t done = 0;
	int rc = 0;

	while (rc == 0 && done < count) {
		struct author_ctx c = { .set = set, .now = in->now_ms / 1000 };
		publish_result res = { 0 };
		const char *stage = "author";
		int created;

		rc = store_txn_begin(st, 1, &c.txn);
		if (rc == 0)
			rc = load_author(&c, in->author, set->create_authors, in->now_ms, &created);
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
			rc = save_author(&c);
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

/* documents: the documents a write transaction generates and stores under
 * public names (an author's head feed, archive pages and author page,
 * /authors.json, the post pages), each with its compressed variants, and
 * the list of what the transaction changed, for delivery. See documents.h. */
#include "documents.h"

#include "core/error.h"
#include "core/jsonstore.h"
#include "core/log.h"
#include "render/record.h"
#include "render/compress.h"
#include "render/page.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int documents_changes_init(documents_changes *ch)
{
	ch->paths = json_array();
	ch->keys = json_array();
	ch->objects = json_array();
	ch->removed = json_array();
	return ch->paths && ch->keys && ch->objects && ch->removed ? 0 : -ENOMEM;
}

void documents_changes_free(documents_changes *ch)
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

int documents_note_name(documents_changes *ch, const char *path, const char *keys, int removed)
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


int documents_author_removed(store_txn *txn, const char *handle)
{
	char path[PUBLISH_AUTHOR_PATH_MAX];
	int n = snprintf(path, sizeof(path), "/u/%s", handle);
	int rc;

	if (n < 0 || (size_t)n >= sizeof(path))
		return 0;
	rc = store_find_gone(txn, path);
	if (rc == 0)
		return -EEXIST;
	return rc == SAYIN_ENOTFOUND ? 0 : rc;
}

/* Loads the author record into ctx; creates it on a handle's first post
 * when the settings allow (*created = 1). */
int documents_load_author(documents_author *ctx, const char *handle, int create, int64_t now_ms,
                       int *created)
{
	const void *rec;
	size_t len;
	json_t *j;
	int rc = store_get_author(ctx->txn, handle, &rec, &len);

	record_author v;

	*created = 0;
	if (rc == 0) {
		jsonstore_parse(rec, len, &j);
		if (j == NULL || record_author_read(j, &v) != 0) {
			json_decref(j);
			return SAYIN_ECORRUPT;
		}
	} else if (rc == SAYIN_ENOTFOUND && create) {
		/* A removed author's handle is not taken again: its feed's
		 * subscribers must not start hearing someone else. */
		rc = documents_author_removed(ctx->txn, handle);
		if (rc != 0)
			return rc;
		j = record_author_new(handle, now_ms);
		if (j == NULL)
			return -ENOMEM;
		record_author_read(j, &v);
		*created = 1;
	} else {
		return rc;
	}
	ctx->record = j;
	ctx->author.handle = v.handle != NULL ? v.handle : handle;
	ctx->author.name = v.name;
	ctx->author.bio = v.bio;
	ctx->last_seq = v.last_seq;
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
static int put_named(store_txn *txn, documents_changes *ch, const char *name, const char *bytes,
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
		rc = documents_note_name(ch, name, surrogate_key, 0);
	return rc;
}

/* Removes a name and the documents it owned. Absent: 0. */
int documents_remove_named(store_txn *txn, documents_changes *ch, const char *name)
{
	store_name old;
	int rc = store_get_name(txn, name, &old);
	if (rc == SAYIN_ENOTFOUND)
		return 0;
	if (rc == 0)
		rc = documents_note_name(ch, name, old.surrogate_key, 1);
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
uint64_t documents_head_low(const documents_author *c)
{
	uint64_t h = c->feed_items;
	return c->last_seq > h ? c->last_seq - h + 1 : 1;
}

/* The newest archive page: the one holding seq n-H; 0 when the head holds
 * everything. */
uint64_t documents_newest_page(const documents_author *c)
{
	uint64_t h = c->feed_items, p = c->page_items;
	return c->last_seq > h ? (c->last_seq - h + p - 1) / p : 0;
}

uint64_t documents_page_of(const documents_author *c, uint64_t seq)
{
	return (seq + c->page_items - 1) / c->page_items;
}

static int page_url(const documents_author *c, uint64_t page, char *buf, size_t len)
{
	char path[256];
	int rc = feed_path_page(path, sizeof(path), c->author.handle, page);
	int n;
	if (rc != 0)
		return rc;
	n = snprintf(buf, len, "%s%s", c->base_url, path);
	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

/* Writes a JSON Feed page of the posts in [lo, hi] to path. */
static int write_feed_doc(documents_author *c, const char *path, uint64_t hi, uint64_t lo,
                          uint64_t next_page, const char *keys, struct post_list *list)
{
	char next[1024], *doc = NULL;
	size_t len;
	int rc = store_author_posts_range(c->txn, c->author.handle, hi, lo, 0, collect_post, list);

	if (rc == 0 && next_page > 0)
		rc = page_url(c, next_page, next, sizeof(next));
	if (rc == 0)
		rc = feed_author_json(c->base_url, &c->author, list->items, list->n,
		                      next_page > 0 ? next : NULL, &doc, &len);
	if (rc == 0)
		rc = put_named(c->txn, c->ch, path, doc, len, FEED_CONTENT_TYPE, keys, c->now);
	free(doc);
	return rc;
}

/* The author page /u/HANDLE/: the head's posts, linking the same older page. */
static int write_author_page(documents_author *c, const struct post_list *list)
{
	char path[256], keys[STORE_SURROGATE_KEY_MAX + 1], older[1024], *doc = NULL;
	uint64_t page = documents_newest_page(c);
	size_t len;
	int rc = page > 0 ? page_url(c, page, older, sizeof(older)) : 0;

	if (rc == 0)
		rc = page_author_html(c->base_url, &c->author, list->items, list->n,
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
int documents_write_head(documents_author *c)
{
	struct post_list list = { 0 };
	char path[256], keys[STORE_SURROGATE_KEY_MAX + 1];
	int rc = feed_path_feed(path, sizeof(path), c->author.handle);

	if (rc == 0)
		rc = surrogate_keys(keys, sizeof(keys), c->author.handle, "feed-", c->author.handle);
	if (rc == 0)
		rc = write_feed_doc(c, path, c->last_seq, documents_head_low(c), documents_newest_page(c), keys, &list);
	if (rc == 0)
		rc = write_author_page(c, &list);
	post_list_free(&list);
	return rc;
}

/* Archive page k. Pages past the newest do not exist. */
int documents_write_archive_page(documents_author *c, uint64_t k)
{
	struct post_list list = { 0 };
	char path[256], keys[STORE_SURROGATE_KEY_MAX + 1], kind[64];
	uint64_t p = c->page_items, hi;
	int rc;

	if (k == 0 || k > documents_newest_page(c))
		return 0;
	hi = k * p < documents_head_low(c) - 1 ? k * p : documents_head_low(c) - 1;
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
	record_author v;
	json_t *j;
	(void)key;
	jsonstore_parse(record, len, &j);
	if (j == NULL || record_author_read(j, &v) != 0) {
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
	l->items[l->n].handle = v.handle;
	l->items[l->n].name = v.name;
	l->items[l->n].bio = v.bio;
	if (l->items[l->n].handle == NULL) {
		json_decref(j);
		return SAYIN_ECORRUPT;
	}
	l->n++;
	return 0;
}

int documents_write_authors_json(store_txn *txn, documents_changes *ch, const char *base_url,
                                 int64_t now)
{
	struct author_list l = { 0 };
	char *doc = NULL;
	size_t len;
	int rc = store_each_record(txn, STORE_AUTHORS, "", collect_author, &l);

	if (rc == 0)
		rc = feed_authors_json(base_url, l.items, l.n, &doc, &len);
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
int documents_write_post_pages(documents_author *c, const json_t *post, const char *id)
{
	static int (*const render[2])(const char *, const feed_author *, const json_t *, char **,
	                              size_t *) = { page_post_html, page_embed_html };
	char path[256], keys[STORE_SURROGATE_KEY_MAX + 1], *doc = NULL;
	size_t len;
	int rc = surrogate_keys(keys, sizeof(keys), c->author.handle, "post-", id);

	for (int i = 0; rc == 0 && i < 2; i++) {
		rc = render[i](c->base_url, &c->author, post, &doc, &len);
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

int documents_save_author(documents_author *c)
{
	int rc = record_author_set_last_seq(c->record, c->last_seq);
	if (rc != 0)
		return rc;
	return jsonstore_put(c->txn, STORE_AUTHORS, c->author.handle, c->record);
}

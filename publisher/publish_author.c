/* publish_author: the author lifecycle's write transactions: add, edit
 * (name, bio), remove (the author's posts, documents and tokens, with
 * tombstones). Each is one store transaction, as in publish.c. */
#include "publish.h"
#include "publish_internal.h"

#include "documents.h"

#include "core/error.h"
#include "core/jsonstore.h"
#include "core/log.h"
#include "deliver/outbox.h"
#include "render/feed.h"
#include "render/record.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	documents_changes ch = { 0 };
	documents_author c = { 0 };
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
	rc = publish__txn_begin(st, set, now_ms, &ch, &c);
	if (rc != 0)
		goto done;
	stage = "author";
	rc = store_get_author(c.txn, handle, &rec, &len);
	if (rc == 0) {
		snprintf(err, errlen, "author '%s' exists", handle);
		rc = -EEXIST;
		stage = NULL;
		goto done;
	}
	if (rc != SAYIN_ENOTFOUND)
		goto done;
	rc = documents_load_author(&c, handle, 1, now_ms, &created);
	if (rc == -EEXIST) {
		snprintf(err, errlen, "author '%s' was removed: a removed handle is not reused",
		         handle);
		stage = NULL;
		goto done;
	}
	if (rc == 0)
		rc = record_author_set_name(c.record, name);
	if (rc == 0) {
		record_author v;
		record_author_read(c.record, &v);
		c.author.name = v.name;
		rc = documents_save_author(&c);
	}
	if (rc != 0)
		goto done;
	stage = "feed";
	rc = documents_write_head(&c);
	if (rc != 0)
		goto done;
	stage = "authors.json";
	rc = documents_write_authors_json(c.txn, c.ch, set->base_url, c.now);
	if (rc == 0) {
		stage = "outbox";
		rc = publish__enqueue_deliveries(c.txn, set, &ch, "author", handle, NULL, now_ms, NULL);
	}
done:
	rc = publish__txn_end(&c, rc, "adding author", stage, err, errlen);
	if (rc == 0)
		log_info("publish: author %s added", handle);
	return rc;
}

/* A bio: UTF-8, at most PUBLISH_BIO_MAX characters; newlines allowed, no
 * other control characters. "" clears it. */
static int valid_bio(const char *bio)
{
	size_t chars = 0;
	json_t *j;
	for (const unsigned char *p = (const unsigned char *)bio; *p; p++) {
		if ((*p < 0x20 && *p != '\n') || *p == 0x7f)
			return 0;
		if ((*p & 0xc0) != 0x80)
			chars++;
	}
	j = json_string(bio); /* NULL unless valid UTF-8 */
	json_decref(j);
	return j != NULL && chars <= PUBLISH_BIO_MAX;
}

int publish_author_edit(store *st, const publish_settings *set, const char *handle,
                        const char *name, const char *bio, int64_t now_ms, size_t *posts,
                        char *err, size_t errlen)
{
	documents_changes ch = { 0 };
	documents_author c = { 0 };
	const char *stage = "begin";
	json_t *ids = json_array();
	int rc, created;

	*posts = 0;
	if (name != NULL && !valid_name(name)) {
		snprintf(err, errlen, "invalid name: use 1-100 characters of UTF-8 text");
		json_decref(ids);
		return SAYIN_EINVAL;
	}
	if (bio != NULL && !valid_bio(bio)) {
		snprintf(err, errlen, "invalid bio: use at most %d characters of UTF-8 text",
		         PUBLISH_BIO_MAX);
		json_decref(ids);
		return SAYIN_EINVAL;
	}
	rc = ids == NULL ? -ENOMEM : publish__txn_begin(st, set, now_ms, &ch, &c);
	if (rc != 0)
		goto done;
	stage = "author";
	rc = documents_load_author(&c, handle, 0, now_ms, &created);
	if (rc == SAYIN_ENOTFOUND) {
		snprintf(err, errlen, "no author '%s'", handle);
		stage = NULL;
		goto done;
	}
	if (rc == 0 && name != NULL)
		rc = record_author_set_name(c.record, name);
	if (rc == 0 && bio != NULL)
		rc = record_author_set_bio(c.record, bio);
	if (rc == 0) {
		record_author v;
		record_author_read(c.record, &v);
		c.author.name = v.name;
		c.author.bio = v.bio;
		rc = documents_save_author(&c);
	}
	/* The name shows on every document of the author: the feeds, the
	 * author page, each post's page and embed; and in /authors.json. */
	if (rc == 0)
		rc = publish__rewrite_author_documents(&c, handle, ids, &stage);
	if (rc == 0) {
		stage = "authors.json";
		rc = documents_write_authors_json(c.txn, c.ch, set->base_url, c.now);
	}
	if (rc == 0) {
		stage = "outbox";
		rc = publish__enqueue_deliveries(c.txn, set, &ch, "author", handle, NULL, now_ms, NULL);
	}
done:
	rc = publish__txn_end(&c, rc, "editing author", stage, err, errlen);
	if (rc == 0) {
		*posts = json_array_size(ids);
		log_info("publish: author %s edited (%zu post pages rewritten)", handle, *posts);
	}
	json_decref(ids);
	return rc;
}

/* Deletes every record of the table whose key starts with prefix. */
struct drop_prefix {
	store_txn *txn;
	enum store_table table;
};

static int drop_record(void *arg, const char *key, const void *record, size_t len)
{
	struct drop_prefix *d = arg;
	(void)record;
	(void)len;
	return store_delete_record(d->txn, d->table, key);
}

int publish_author_remove(store *st, const publish_settings *set, const char *handle,
                          int64_t now_ms, int (*in_txn)(void *arg, store_txn *txn), void *arg,
                          publish_removed *out, char *err, size_t errlen)
{
	documents_changes ch = { 0 };
	documents_author c = { 0 };
	const char *stage = "begin";
	json_t *ids = json_array();
	char path[256], prefix[PUBLISH_HANDLE_MAX + 2];
	publish_deleted del = { 0 };
	size_t i;
	json_t *id;
	int rc, created;

	memset(out, 0, sizeof(*out));
	rc = ids == NULL ? -ENOMEM : publish__txn_begin(st, set, now_ms, &ch, &c);
	if (rc != 0)
		goto done;
	stage = "author";
	rc = documents_load_author(&c, handle, 0, now_ms, &created);
	if (rc == SAYIN_ENOTFOUND) {
		snprintf(err, errlen, "no author '%s'", handle);
		stage = NULL;
		goto done;
	}
	if (rc == 0)
		rc = store_author_posts(c.txn, handle, 0, publish__collect_post_id, ids);
	/* Each post as a deletion drops it, and a tombstone on its pages. */
	json_array_foreach(ids, i, id) {
		const char *pid = json_string_value(id);
		const void *rec;
		size_t len;
		json_t *post = NULL;
		record_view v;
		if (rc != 0)
			break;
		stage = "post record";
		rc = store_get_post(c.txn, pid, &rec, &len);
		if (rc == 0) {
			/* As in publish_delete: only author, seq and hashes are read. */
			jsonstore_parse(rec, len, &post);
			record_view_read(post, &v);
			if (v.author == NULL || v.seq == 0)
				rc = SAYIN_ECORRUPT;
		}
		if (rc == 0)
			rc = publish__drop_post(&c, pid, &v, &del, &stage);
		if (rc == 0) {
			stage = "tombstone";
			rc = feed_path_post(path, sizeof(path), pid);
		}
		if (rc == 0)
			rc = store_put_gone(c.txn, path, c.now);
		json_decref(post);
	}
	out->posts = json_array_size(ids);
	out->objects_deleted = del.objects_deleted;
	out->objects_kept = del.objects_kept;
	/* The author's own names: the head feed, every archive page, the
	 * author page; then the tombstone that makes them all 410. */
	if (rc == 0) {
		stage = "feed";
		rc = feed_path_feed(path, sizeof(path), handle);
	}
	if (rc == 0)
		rc = documents_remove_named(c.txn, c.ch, path);
	for (uint64_t k = 1; rc == 0 && k <= documents_newest_page(&c); k++) {
		stage = "archive page";
		rc = feed_path_page(path, sizeof(path), handle, k);
		if (rc == 0)
			rc = documents_remove_named(c.txn, c.ch, path);
	}
	if (rc == 0) {
		stage = "author page";
		rc = feed_path_author(path, sizeof(path), handle);
	}
	if (rc == 0)
		rc = documents_remove_named(c.txn, c.ch, path);
	if (rc == 0) {
		stage = "tombstone";
		snprintf(path, sizeof(path), "/u/%s", handle);
		rc = store_put_gone(c.txn, path, c.now);
	}
	/* The record, then what hangs off it: idempotency keys, and whatever
	 * the caller adds (the tokens: ingest's business, not publish's). */
	if (rc == 0) {
		stage = "author record";
		rc = store_delete_record(c.txn, STORE_AUTHORS, handle);
	}
	if (rc == 0) {
		struct drop_prefix d = { c.txn, STORE_IDEMPOTENCY };
		stage = "idempotency keys";
		snprintf(prefix, sizeof(prefix), "%s\n", handle);
		rc = store_each_record(c.txn, STORE_IDEMPOTENCY, prefix, drop_record, &d);
	}
	if (rc == 0 && in_txn != NULL) {
		stage = "tokens";
		rc = in_txn(arg, c.txn);
	}
	if (rc == 0) {
		stage = "authors.json";
		rc = documents_write_authors_json(c.txn, c.ch, set->base_url, c.now);
	}
	if (rc == 0) {
		stage = "outbox";
		rc = publish__enqueue_deliveries(c.txn, set, &ch, "remove", handle, NULL, now_ms, NULL);
	}
done:
	rc = publish__txn_end(&c, rc, "removing author", stage, err, errlen);
	if (rc == 0)
		log_info("publish: author %s removed (%zu posts, %u objects deleted, %u shared kept)",
		         handle, out->posts, out->objects_deleted, out->objects_kept);
	json_decref(ids);
	return rc;
}

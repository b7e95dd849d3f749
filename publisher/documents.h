/* documents: what a write transaction (publish.h) regenerates and stores
 * under public names: an author's head feed, archive pages and author page,
 * /authors.json, a post's pages; each with its gzip and brotli variants and
 * the surrogate keys CDNs purge by. It also keeps the list of what the
 * transaction changed, which publish turns into delivery jobs.
 *
 * Every function works inside the caller's write transaction and returns 0,
 * -ENOMEM, SAYIN_ECORRUPT (a stored record that does not parse or render),
 * or a store error; the caller aborts the transaction on error.
 * Threading: as the transaction. */
#ifndef SAYIN_DOCUMENTS_H
#define SAYIN_DOCUMENTS_H

#include "core/store.h"
#include "render/feed.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* What a transaction changed, for the delivery jobs it enqueues (the
 * payload cdn/cdn.h documents). */
typedef struct documents_changes {
	json_t *paths;   /* names written */
	json_t *keys;    /* their surrogate keys, except author-* (that would purge everything) */
	json_t *objects; /* new immutable objects: {path, sha256, type} */
	json_t *removed; /* names and objects deleted */
} documents_changes;

int documents_changes_init(documents_changes *ch);
void documents_changes_free(documents_changes *ch);
/* Notes path as written (removed 0) or deleted (1), once, and its
 * space-separated surrogate keys (NULL: none). ch NULL: nothing to note. */
int documents_note_name(documents_changes *ch, const char *path, const char *keys, int removed);

/* Everything one transaction needs to rewrite an author's documents. The
 * caller sets ch (NULL: changes are not noted), txn, base_url, feed_items
 * and page_items (publish_settings) and now; documents_load_author sets
 * the rest. Page windows: publish.h. */
typedef struct documents_author {
	documents_changes *ch;
	store_txn *txn;
	const char *base_url; /* no trailing slash */
	size_t feed_items;    /* H */
	size_t page_items;    /* P */
	int64_t now;          /* unix seconds */
	feed_author author;   /* borrowed from record */
	json_t *record;       /* the author record (the caller decrefs it); "last_seq" is n */
	uint64_t last_seq;
} documents_author;

/* Loads the author record; on a handle's first post, with create, makes a
 * new one (*created = 1) whose name is the handle. SAYIN_ENOTFOUND for an
 * unknown handle without create; -EEXIST, with create, for the handle of
 * a removed author. */
int documents_load_author(documents_author *c, const char *handle, int create, int64_t now_ms,
                          int *created);
/* The tombstone that covers an author's feeds and pages: "/u/HANDLE". */
#define PUBLISH_AUTHOR_PATH_MAX 64
/* 0 when handle was never removed, -EEXIST when it was (a tombstone covers
 * /u/HANDLE), or a store error. documents_load_author with create refuses
 * a removed handle the same way. */
int documents_author_removed(store_txn *txn, const char *handle);
/* Stores the author record with last_seq. */
int documents_save_author(documents_author *c);

/* The lowest seq in the head; the newest archive page (0: none); the page
 * that holds seq. */
uint64_t documents_head_low(const documents_author *c);
uint64_t documents_newest_page(const documents_author *c);
uint64_t documents_page_of(const documents_author *c, uint64_t seq);

/* The head feed.json (the newest H posts) and the author page, which shows
 * the same posts. */
int documents_write_head(documents_author *c);
/* Archive page k; nothing for a page past the newest. */
int documents_write_archive_page(documents_author *c, uint64_t k);
/* /authors.json: every author, in handle order. O(authors). */
int documents_write_authors_json(store_txn *txn, documents_changes *ch, const char *base_url,
                                 int64_t now);
/* /p/ID and /p/ID/embed from the post record. */
int documents_write_post_pages(documents_author *c, const json_t *post, const char *id);
/* Removes a name and the documents it owned. Absent: 0. */
int documents_remove_named(store_txn *txn, documents_changes *ch, const char *name);

#endif

/* publish_internal: what publish.c and publish_author.c share. Private to
 * publisher/publish*.c. */
#ifndef SAYIN_PUBLISH_INTERNAL_H
#define SAYIN_PUBLISH_INTERNAL_H

#include "documents.h"

#include "core/store.h"
#include "deliver/outbox.h"
#include "render/record.h"

#include <jansson.h>
#include <stdint.h>

struct publish_settings;
struct publish_deleted;

/* Opens a write transaction into c (with ch, the change list, when not
 * NULL) and checks the store's site against set. Returns 0 or an error;
 * publish__txn_end must follow either way. */
int publish__txn_begin(store *st, const struct publish_settings *set, int64_t now_ms,
                       documents_changes *ch, documents_author *c);

/* Ends c's transaction: commits it when rc is 0, aborts it otherwise. On
 * failure err says "WHAT failed at STAGE: error", unless stage is NULL (the
 * caller has said why in err). Frees the author record and the change list.
 * Returns the outcome. */
int publish__txn_end(documents_author *c, int rc, const char *what, const char *stage, char *err,
                     size_t errlen);

/* The delivery jobs enqueued for one change (their ids, and those of the
 * last stage: what waits for the CDN waits for these). */
struct enqueued {
	char ids[16][OUTBOX_ID_LEN + 1];
	const char *last[16];
	size_t n_last, n_ids;
};

/* Enqueues the CDN jobs for the changes in ch (event "publish", "delete",
 * "author"...); q may be NULL. */
int publish__enqueue_deliveries(store_txn *txn, const struct publish_settings *set,
                                const documents_changes *ch, const char *event,
                                const char *author, const char *post_id, int64_t now_ms,
                                struct enqueued *q);

/* What a deletion and an author's removal share: the post's record and
 * index entry, its objects unless another post still refers to them, its
 * page and embed. *stage names the step on error. */
int publish__drop_post(documents_author *c, const char *id, const record_view *v,
                       struct publish_deleted *out, const char **stage);

/* Rewrites every document of the author c has loaded: head feed, archive
 * pages, each post's page and embed; the post ids go into ids. *stage
 * names the step for a failure's message. */
int publish__rewrite_author_documents(documents_author *c, const char *handle, json_t *ids,
                                      const char **stage);

/* A store_author_posts callback: appends each post id to the JSON array
 * arg. */
int publish__collect_post_id(void *arg, const char *id, uint64_t seq, const void *record,
                             size_t len);

#endif

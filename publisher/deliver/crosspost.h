/* crosspost: the authors' network accounts and the worker that posts the
 * outbox's cross-post jobs (`sayin-publisher crosspost`, run by cron).
 *
 * Accounts come from a credentials file (INI, libinih), one section per
 * author and network:
 *
 *   [ann.x]                      [ann.facebook]
 *   enabled = true               enabled = true
 *   consumer_key = ...           page_id = ...
 *   consumer_secret = ...        page_access_token = ...
 *   access_token = ...           app_secret = ...
 *   access_token_secret = ...
 *
 * and any value may come from the environment instead:
 * SAYIN_SOCIAL_<HANDLE>_<NETWORK>_<KEY> (uppercase), e.g.
 * SAYIN_SOCIAL_ANN_X_CONSUMER_SECRET. The file is refused when its group or
 * others may read it. Secrets are never logged or printed.
 *
 * Guarantees (publisher/README.md, "Cross-posting"): a job is posted by one worker at a
 * time (an exclusive lock on DATA/crosspost.lock for overlapping cron runs,
 * plus the outbox lease); the remote id is recorded in the transaction that
 * completes the job; an attempt is recorded before the request, and a job
 * found with an attempt but no outcome (the process died in between) is
 * reconciled (the network searched for our post URL) before it is retried.
 *
 * Threading: the accounts are loaded, and crosspost_run runs (blocking, on
 * a loop of its own), on the calling thread; the accounts (and their
 * secrets, wiped on free) are the caller's until crosspost_accounts_free.
 * The crosspost_done readers run in the caller's transaction. */
#ifndef SAYIN_CROSSPOST_H
#define SAYIN_CROSSPOST_H

#include "core/config.h"
#include "deliver/outbox.h"
#include "core/store.h"

#include <jansson.h>

typedef struct crosspost_accounts crosspost_accounts;

/* Loads path (NULL or "": no file, accounts from the environment only).
 * Returns 0 and *out, or SAYIN_ECONFIG with err (unreadable file, mode too
 * open, unknown network or key, syntax). */
int crosspost_accounts_load(const char *path, crosspost_accounts **out, char *err,
                            size_t errlen);
void crosspost_accounts_free(crosspost_accounts *a);

/* 1 when handle has an enabled account on network (for
 * publish_settings.crosspost_enabled; arg is the accounts). */
int crosspost_enabled(void *accounts, const char *handle, const char *network);

typedef struct crosspost_options {
	store *st;
	outbox_policy policy;
	const char *x_api_url;
	const char *facebook_api_url;
	const char *facebook_version;
	uint64_t timeout_ms;
} crosspost_options;

typedef struct crosspost_counts {
	unsigned long posted, found, failed, parked;
	unsigned long skipped; /* the post was deleted before its turn: not posted */
} crosspost_counts;

/* Posts every due cross-post job once (blocking; its own loop), then
 * returns. Returns 0, or a negative errno / store error that stopped it. */
int crosspost_run(const crosspost_options *opt, const crosspost_accounts *accounts,
                  crosspost_counts *counts);

/* A cross-post done: the remote post recorded (STORE_CROSSPOSTS) in the
 * transaction that completed its job. Only crosspost.c knows the record's
 * layout; readers (status, the API's delivery state) get this view. The
 * strings are borrowed from record: valid until crosspost_done_release (or,
 * in crosspost_each_done, until fn returns). A field the record lacks is
 * NULL (strings) or 0. */
typedef struct crosspost_done {
	const char *network;
	const char *remote_id;
	const char *remote_url;
	int found;                /* 1: found by reconciling, not posted by this job */
	int64_t done_ms;
	json_t *record;
} crosspost_done;

/* The cross-post of post_id on network, in txn. Returns 0 and *out (release
 * it), SAYIN_ENOTFOUND (not done), SAYIN_ECORRUPT or a store error; *out is
 * empty on error. */
int crosspost_done_get(store_txn *txn, const char *post_id, const char *network,
                       crosspost_done *out);
void crosspost_done_release(crosspost_done *d);

/* Calls fn for every cross-post done, in (post id, network) order. A
 * corrupt record is logged and given to fn as an empty view (every field
 * NULL or 0), so a listing still shows it. Returns 0, fn's first non-zero
 * return, or a store error. Threading: as txn. */
typedef int (*crosspost_done_fn)(void *arg, const char *post_id, const crosspost_done *done);
int crosspost_each_done(store_txn *txn, crosspost_done_fn fn, void *arg);

#endif

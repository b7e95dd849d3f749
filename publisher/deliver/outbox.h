/* outbox: durable delivery jobs (CDN purges and pushes, cross-posts), kept
 * in the store so that the transaction that publishes a post also enqueues
 * its deliveries: an acknowledged post cannot be missed, even if the process
 * dies right after the commit.
 *
 * A job names a target (a driver, e.g. "varnish") and carries a JSON
 * payload the outbox does not read. Workers lease due jobs (a write
 * transaction sets lease_until and the owner, so two workers, in one process
 * or two, never hold the same job), deliver them, then complete them
 * (deleted) or fail them: attempts + 1, the next attempt after an
 * exponential backoff with jitter (or at the time the target asked for),
 * the last error kept; after max_attempts or max_age the job is parked
 * (dead-lettered) until an operator retries it. A worker that dies holding a
 * lease loses nothing: the lease expires and the job is due again, so
 * delivery is at least once (purges and PUTs are idempotent; cross-posts
 * reconcile before retrying).
 *
 * A job may wait for others ("after"): it is due only once they are
 * completed (they no longer exist).
 *
 * Threading: any thread; every call is its own store transaction, except
 * outbox_enqueue, which joins the caller's. Knows no driver. */
#ifndef SAYIN_OUTBOX_H
#define SAYIN_OUTBOX_H

#include "core/store.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define OUTBOX_ID_LEN 20

typedef struct outbox_policy {
	uint64_t lease_ms;        /* how long a worker holds a job: 60000 */
	uint64_t backoff_ms;      /* first retry delay: 1000 */
	uint64_t backoff_max_ms;  /* cap of the delay: 600000 */
	unsigned max_attempts;    /* parked after this many failures: 10 */
	uint64_t max_age_ms;      /* parked when older than this and failing: 86400000 */
} outbox_policy;
/* Zero fields take the defaults above. */

typedef struct outbox_job {
	char id[OUTBOX_ID_LEN + 1];
	char target[32];
	json_t *payload;          /* owned by the job */
	unsigned attempts;        /* failures so far */
	int64_t created_ms;
	int attempted;            /* outbox_mark_attempt was called for an attempt that
	                             never recorded its outcome (the worker died) */
} outbox_job;

/* Adds a job to the write transaction txn. after: ids of jobs this one
 * waits for (may be NULL). Returns 0 and the new id, or a store error. */
int outbox_enqueue(store_txn *txn, const char *target, json_t *payload, const char *const *after,
                   size_t n_after, int64_t now_ms, char id[OUTBOX_ID_LEN + 1]);

/* Leases at most max due jobs (not parked, lease free or expired, next
 * attempt reached, every "after" job gone), oldest first, for owner (a
 * string unique to the worker). *jobs is malloc'd; free with
 * outbox_jobs_free. The scan is O(queue depth). */
int outbox_lease(store *st, const outbox_policy *pol, const char *owner, int64_t now_ms,
                 size_t max, outbox_job **jobs, size_t *n);
/* The same for jobs whose target is one of targets (NULL-terminated); a
 * worker leases only what it can deliver. */
int outbox_lease_targets(store *st, const outbox_policy *pol, const char *owner,
                         const char *const *targets, int64_t now_ms, size_t max,
                         outbox_job **jobs, size_t *n);

/* Records, before a non-idempotent delivery (a cross-post) starts, that an
 * attempt is under way; a job leased again after a crash then has
 * attempted = 1, and the worker must reconcile before retrying. */
int outbox_mark_attempt(store *st, const char *id, const char *owner);
void outbox_jobs_free(outbox_job *jobs, size_t n);

/* Completes a leased job: deleted. -ESTALE when owner no longer holds the
 * lease (it expired and another worker took it): the caller's work is
 * then a duplicate, which the lease made unlikely, not impossible. */
int outbox_complete(store *st, const char *id, const char *owner);
/* The same, and in the same transaction stores the JSON document record
 * (jsonstore's canonical form) under key in table: the outcome (a remote
 * post id) is recorded exactly when the job ends. */
int outbox_complete_record(store *st, const char *id, const char *owner, enum store_table table,
                           const char *key, const json_t *record);

/* Records a failed attempt of a leased job. retry_at_ms > 0 asks for that
 * time (a target's Retry-After); permanent != 0 parks the job at once (a
 * rejected credential). Sets *parked when the job was parked. -ESTALE as in
 * outbox_complete. */
int outbox_fail(store *st, const outbox_policy *pol, const char *id, const char *owner,
                const char *error, int permanent, int64_t retry_at_ms, int64_t now_ms,
                int *parked);

/* Makes parked jobs due now (id NULL: every parked job), attempts reset.
 * *count: jobs retried. SAYIN_ENOTFOUND for an unknown id. */
int outbox_retry(store *st, const char *id, int64_t now_ms, unsigned *count);

/* Parks, with reason as their last error, every job that is not parked,
 * not leased, and names a target not in known (NULL-terminated): jobs
 * enqueued for a target the configuration no longer has would otherwise
 * stay due forever. And makes due again every job parked for that reason
 * (last error starting with reason) whose target is in known: a run with
 * another configuration parked it, this one can deliver it. *count: jobs
 * parked; *unparked: jobs made due again. */
int outbox_park_unknown(store *st, const char *const *known, const char *reason, int64_t now_ms,
                        unsigned *count, unsigned *unparked);

typedef struct outbox_stats {
	uint64_t depth;           /* jobs not parked */
	uint64_t parked;
	uint64_t leased;          /* with a lease that has not expired */
	int64_t oldest_ms;        /* creation time of the oldest unparked job; 0 when none */
} outbox_stats;

int outbox_stats_get(store *st, int64_t now_ms, outbox_stats *out);

/* A job as the outbox keeps it, for readers (status, the API's delivery
 * state): only outbox.c knows the record's fields. Pointers are valid
 * during the callback only. */
typedef struct outbox_job_view {
	const char *target;
	const json_t *payload;    /* what the enqueuer gave, as given */
	unsigned attempts;        /* failures so far */
	int parked;               /* 1: waits for `sayin-publisher retry` */
	int64_t created_ms;
	int64_t next_ms;          /* the next attempt, after a failure */
	int64_t lease_until_ms;   /* a worker holds it until then */
	const char *last_error;   /* "" when none */
} outbox_job_view;

/* Calls fn for every job (parked or not), in id order, in its own read
 * transaction (outbox_each) or in txn (outbox_each_in). A job record that
 * does not parse is logged and passed over, as leasing does, so a reader
 * sees every other job. Returns 0, fn's first non-zero return, or a store
 * error. */
typedef int (*outbox_each_fn)(void *arg, const char *id, const outbox_job_view *job);
int outbox_each(store *st, outbox_each_fn fn, void *arg);
int outbox_each_in(store_txn *txn, outbox_each_fn fn, void *arg);

#endif

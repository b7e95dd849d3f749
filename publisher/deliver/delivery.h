/* delivery: the outbox worker. Leases due jobs, hands each to the driver
 * its target names (cdn/cdn.h), and completes or fails it with the
 * driver's answer. One delivery runs on one libuv loop; outbound HTTP goes
 * through net on that loop, and its store transactions are synchronous on
 * that thread (serve gives it a thread of its own, so a publish holding the
 * store's write lock never stalls the API's loop).
 *
 * Modes: continuous (serve: polls every poll_ms and when kicked) or once
 * (`sayin-publisher push`: delivers until no job is due, then calls
 * on_idle). */
#ifndef SAYIN_DELIVERY_H
#define SAYIN_DELIVERY_H

#include "deliver/cdn/cdn.h"
#include "core/config.h"
#include "core/metrics.h"
#include "deliver/outbox.h"
#include "publish.h"
#include "core/store.h"

#include <uv.h>

/* Reads the outbox-* settings. */
int delivery_policy_configure(const config *cfg, outbox_policy *out, char *err, size_t errlen);

typedef struct delivery_targets delivery_targets;

/* Configures every driver whose settings are present. Returns 0 and
 * *out (possibly with no target), or SAYIN_ECONFIG with err. */
int delivery_targets_configure(const config *cfg, delivery_targets **out, char *err,
                               size_t errlen);
void delivery_targets_free(delivery_targets *t);
/* The configured targets, for publish_settings (valid while t lives). */
const publish_target *delivery_targets_list(const delivery_targets *t, size_t *n);

typedef struct delivery_options {
	store *st;
	const char *base_url;
	outbox_policy policy;
	int once;                 /* deliver what is due, then on_idle */
	uint64_t poll_ms;         /* continuous mode: 500 */
	unsigned batch;           /* jobs leased at a time: 64 */
	metrics *metrics;         /* NULL: none; definitions are made at start */
} delivery_options;

typedef struct delivery delivery;

/* Defines sayin_outbox_depth, sayin_outbox_parked and
 * sayin_outbox_oldest_seconds on m, read from st's outbox at scrape time.
 * delivery_start defines them with its metrics; serve calls this itself
 * when no target is configured, so they are always present. Returns 0 or
 * -ENOMEM. */
int delivery_outbox_metrics_define(metrics *m, store *st);

typedef struct delivery_counts {
	unsigned long delivered, failed, parked, stale;
} delivery_counts;

/* Starts on loop (the caller runs it). on_idle (once mode) is called when
 * nothing more is due. Returns 0, -ENOMEM or -EIO (libcurl). */
int delivery_start(uv_loop_t *loop, const delivery_options *opt, delivery_targets *targets,
                   void (*on_idle)(void *arg, const delivery_counts *c), void *arg,
                   delivery **out);

/* Stops: requests in flight are cancelled (their jobs' leases expire and
 * they run again later), handles closed, then on_stopped(arg) on the loop. */
void delivery_stop(delivery *d, void (*on_stopped)(void *arg), void *arg);

/* Runs a continuous delivery on a thread of its own with its own loop. */
typedef struct delivery_thread delivery_thread;
int delivery_thread_start(const delivery_options *opt, delivery_targets *targets,
                          delivery_thread **out);
void delivery_thread_kick(delivery_thread *t);
/* Stops the delivery and joins the thread. */
void delivery_thread_stop(delivery_thread *t);

#endif

/* serve: the origin's request handler: URL path -> store object -> response,
 * with HTTP semantics a CDN expects (conditional and range requests,
 * precompressed variants, CORS) and the caching policy table. It only reads
 * the store.
 *
 * Threading: a serve_handler serves one loop; create one per loop thread.
 * The store and metrics registry may be shared by all of them. */
#ifndef SAYIN_SERVE_H
#define SAYIN_SERVE_H

#include "core/accesslog.h"
#include "core/http.h"
#include "core/metrics.h"
#include "core/store.h"

#include <stdint.h>

typedef struct serve_handler serve_handler;

typedef struct serve_options {
	/* Lifetimes for names (feeds, pages), in seconds. */
	uint64_t name_max_age;          /* browsers: Cache-Control max-age */
	uint64_t name_shared_max_age;   /* CDNs: s-maxage and CDN-Cache-Control */
	uint64_t stale_while_revalidate;
	uint64_t stale_if_error;
	/* Who may name the client in the access log (core/accesslog); NULL:
	 * nobody, the socket's peer is the client. Whether lines are written
	 * at all is the access log's own switch. */
	const accesslog_edges *edges;
	/* Render /metrics here (NULL: /metrics is 404, e.g. when an admin
	 * listener serves it instead). */
	metrics *metrics_page;
} serve_options;

/* The handler's metric series ids, defined once and shared read-only by every
 * handler. */
typedef struct serve_metrics serve_metrics;

/* Defines the handler's series in m (before any shard is created).
 * Returns 0 or a negative errno. */
int serve_metrics_define(metrics *m, serve_metrics **out);
void serve_metrics_free(serve_metrics *ids);

/* opt is copied; opt->metrics_page, opt->edges, st and ids must outlive the
 * handler. shard is
 * this loop thread's metrics shard; ids and shard may be NULL (no metrics).
 * Returns 0 or -ENOMEM. */
int serve_create(store *st, const serve_options *opt, const serve_metrics *ids,
                 metrics_shard *shard, serve_handler **out);
void serve_destroy(serve_handler *sh);
/* Replaces the handler's options (SIGHUP: new cache lifetimes). On the
 * handler's loop thread only, between requests; responses already queued
 * keep the headers they were given. */
void serve_set_options(serve_handler *sh, const serve_options *opt);
/* The http_handler to pass to http_server_start(). */
http_handler *serve_http_handler(serve_handler *sh);

#endif

/* metrics: Prometheus counters, gauges and histograms for both programs, in
 * the text exposition format (version 0.0.4).
 *
 * Hot paths never share a cache line: every writer thread owns a shard, and
 * metrics_add / metrics_observe are plain stores into that shard's memory
 * (relaxed atomics, single writer). metrics_render sums all shards; a scrape
 * racing with writers may see a value a few increments stale, never a torn
 * one.
 *
 * Definitions (metrics_counter, metrics_histogram, metrics_gauge_fn) must all
 * happen before the first shard is created; after that the registry is
 * read-only apart from the shards' values. Series with the same name and
 * different labels form one family (one HELP and TYPE line).
 *
 * Threading: definitions and shard creation on one thread at start-up;
 * metrics_add/metrics_observe only by the shard's owner thread;
 * metrics_render from any thread. */
#ifndef SAYIN_METRICS_H
#define SAYIN_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct metrics metrics;
typedef struct metrics_shard metrics_shard;
typedef int metrics_id; /* >= 0; negative values are errors from the definers */

/* Returns 0 or -ENOMEM. */
int metrics_create(metrics **out);
/* Frees the registry and every shard. */
void metrics_destroy(metrics *m);

/* labels: NULL or a Prometheus label list without braces, e.g.
 * "method=\"GET\",route=\"object\"". name and labels are copied.
 * Return the series id, or -ENOMEM, or -EINVAL (bad name, or a definition
 * after the first shard, or the name already used with another type; also a
 * malformed label list, a histogram label named le, or the same name and
 * labels twice). */
metrics_id metrics_counter(metrics *m, const char *name, const char *help, const char *labels);
/* bounds: ascending upper bounds of the buckets (seconds for latencies);
 * +Inf is implicit. */
metrics_id metrics_histogram(metrics *m, const char *name, const char *help, const char *labels,
                             const double *bounds, size_t n_bounds);
/* A gauge computed at scrape time by fn(arg), called on the rendering thread:
 * fn must be safe to call from there (read atomics or take a lock). */
typedef double (*metrics_gauge_cb)(void *arg);
metrics_id metrics_gauge_fn(metrics *m, const char *name, const char *help, const char *labels,
                            metrics_gauge_cb fn, void *arg);
/* The same for a counter kept elsewhere (e.g. a server's own statistics):
 * rendered with TYPE counter, so fn must never return less than before. */
metrics_id metrics_counter_fn(metrics *m, const char *name, const char *help, const char *labels,
                              metrics_gauge_cb fn, void *arg);

/* A new shard for one writer thread; NULL on allocation failure. Freed by
 * metrics_destroy. */
metrics_shard *metrics_shard_new(metrics *m);

/* Adds n to a counter. An id that is not a counter is ignored. */
void metrics_add(metrics_shard *s, metrics_id id, uint64_t n);
/* Records one observation in a histogram. */
void metrics_observe(metrics_shard *s, metrics_id id, double value);

/* Renders every family into a malloc'd buffer (*out, *len; free()).
 * Returns 0 or -ENOMEM. */
int metrics_render(metrics *m, char **out, size_t *len);

/* Defines the process_* series of Prometheus' client conventions, read at
 * scrape time from the kernel: process_cpu_seconds_total (getrusage, user +
 * system), process_resident_memory_bytes (/proc/self/statm),
 * process_open_fds (entries of /proc/self/fd), process_max_fds
 * (RLIMIT_NOFILE's soft limit) and process_start_time_seconds (the time of
 * this call, Unix seconds: call it at start-up). A value that cannot be read
 * renders as NaN. Returns 0 or an error from the definers. */
int metrics_process_define(metrics *m);

/* The content type of the rendered text. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif

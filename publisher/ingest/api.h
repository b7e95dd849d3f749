/* api: the ingest API of `sayin-publisher serve`, a handler on core/http.
 * Its files: api.c (routes, responses, reads), upload.c (the body of
 * POST /v1/posts), jobs.c (the thread pool), idempotency.[ch]; internal.h
 * is what they share.
 *
 *   POST   /v1/posts        upload a recording (multipart/form-data with an
 *                           "audio" file part and "text", "crosspost" fields,
 *                           or the raw recording with ?text=); 201
 *   GET    /v1/posts/ID     the post and the state of its delivery
 *   GET    /v1/posts?author=HANDLE[&before=SEQ][&limit=N]   newest first
 *   DELETE /v1/posts/ID     removes the post (one transaction)
 *   GET    /healthz, /metrics
 *
 * Every /v1 request carries "Authorization: Bearer TOKEN" (see auth.h).
 * Uploads stream to a temporary file in upload_dir, capped while reading;
 * transcoding and every store write run on libuv's thread pool (workers
 * threads), never on the loop, so the API answers while posts encode. When
 * workers + queue uploads are already accepted, POST answers 503 with
 * Retry-After before reading the body; an author who already has
 * per_author of them gets 429. A retry of a known Idempotency-Key may pass
 * a full capacity, but only into one of retry_slots. A body that, after
 * rate_grace_ms, brings less than min_rate bytes/s over a rate window, or
 * is not in by deadline_ms + Content-Length / min_rate, is cut with 408
 * (publisher/README.md, "Upload limits").
 *
 * Threading: api_start, api_stop and every callback run on the loop's
 * thread; the store and the pipeline are shared with the workers. */
#ifndef SAYIN_API_H
#define SAYIN_API_H

#include "core/accesslog.h"
#include "core/config.h"
#include "core/metrics.h"
#include "pipeline.h"
#include "core/store.h"

#include <uv.h>

typedef struct api api;

typedef struct api_options {
	const char *listen;       /* "127.0.0.1:8081" */
	const char *upload_dir;   /* created if missing; leftovers are removed at start */
	unsigned workers;         /* transcoding threads (UV_THREADPOOL_SIZE) */
	unsigned queue;           /* accepted uploads beyond the workers */
	uint64_t max_upload;      /* bytes of the recording (413 beyond) */
	/* Fairness between uploads (api_options_read_limits fills them). */
	unsigned per_author;      /* slots one author may hold, >= 1 */
	unsigned retry_slots;     /* idempotent retries let in past the capacity */
	uint64_t min_rate;        /* bytes/s, >= 1 */
	uint64_t rate_window_ms;  /* >= 1 */
	uint64_t rate_grace_ms;
	uint64_t deadline_ms;     /* on top of Content-Length / min_rate */
	metrics *metrics;         /* definitions are made by api_start */
	/* HTTPS on listen when not NULL (core/tls); must outlive the api. */
	struct tls_server *tls;
	uint64_t handshake_timeout_ms; /* TLS: accept to handshake done; 0: 10000 */
	/* Who may name the client in the access log (core/accesslog); NULL:
	 * the socket's peer. Must outlive the api. */
	const accesslog_edges *edges;
	/* Called on the loop after each committed post or deletion (serve
	 * kicks the delivery worker with it); may be NULL. */
	void (*on_commit)(void *arg);
	void *on_commit_arg;
} api_options;

/* Reads upload-per-author (default: half of opt->workers + opt->queue,
 * which must be set, at least 1), upload-retry-slots, upload-min-rate,
 * upload-rate-window-ms, upload-rate-grace-ms and upload-deadline-ms into
 * opt. Returns 0, or SAYIN_ECONFIG with err naming the bad setting. */
int api_options_read_limits(const config *cfg, api_options *opt, char *err, size_t errlen);

/* The TLS context for --api-tls-cert and --api-tls-key, or *out NULL when
 * neither is set. A listen address that is not loopback without TLS is
 * refused unless insecure_http: bearer tokens must not cross a network in
 * clear. Returns 0, or SAYIN_ECONFIG with err naming the settings. */
int api_tls_configure(const config *cfg, int insecure_http, struct tls_server **out, char *err,
                      size_t errlen);

/* Starts serving on loop. The store and pipeline must outlive the api.
 * Returns 0 and *out, or a negative errno / SAYIN_ECONFIG (bad address),
 * with err naming the cause. */
int api_start(uv_loop_t *loop, store *st, const pipeline *pipe, const api_options *opt,
              api **out, char *err, size_t errlen);

/* Stops accepting, lets responses and jobs in flight finish, then frees the
 * api and calls on_stopped(arg). */
void api_stop(api *a, uint64_t grace_ms, void (*on_stopped)(void *arg), void *arg);

/* The bound port (for listen addresses with port 0). */
int api_port(const api *a);

#endif

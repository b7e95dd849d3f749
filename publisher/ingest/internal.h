/* ingest internals shared by api.c (routes, responses, reads, start and
 * stop), upload.c (the body of POST /v1/posts into a temporary file) and
 * jobs.c (work on libuv's thread pool); not a public contract (the api__
 * prefix says so). Everything here runs on the api's loop thread, except
 * a job's work function, which runs on the pool and touches only its job.
 *
 * Ownership: a request's struct req_state is req->data from on_headers
 * until on_complete or on_abort frees it (api.c). A post job
 * takes the upload's file and text from it; the job frees them. */
#ifndef SAYIN_INGEST_INTERNAL_H
#define SAYIN_INGEST_INTERNAL_H

#include "core/accesslog.h"
#include "core/buf.h"
#include "core/http.h"
#include "core/metrics.h"
#include "core/store.h"
#include "ingest/auth.h"
#include "idempotency.h"
#include "ingest/multipart.h"
#include "pipeline.h"
#include "publish.h"

#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <uv.h>

#define FIELD_MAX 64              /* bytes of the crosspost field */
#define MULTIPART_SLACK (1u << 20) /* room for fields and part headers */
#define UPLOAD_PREFIX "upload-"

struct job;

struct api {
	http_handler handler; /* first: the core hands it back to us */
	uv_loop_t *loop;
	store *st;
	const pipeline *pipe;
	http_server *server;
	/* From api_options. */
	uint64_t max_upload;
	unsigned capacity;    /* workers + queue: uploads accepted at once */
	metrics *metrics;
	const accesslog_edges *edges; /* for the access log; may be NULL */
	void (*on_commit)(void *arg);
	void *on_commit_arg;
	char upload_dir[PATH_MAX];
	unsigned per_author;  /* slots one author may hold (429 beyond) */
	unsigned retry_slots; /* retries let in past capacity at once */
	uint64_t min_rate;    /* bytes/s, averaged over rate_window_ms */
	uint64_t rate_window_ms, rate_grace_ms, deadline_ms;
	unsigned slots_used;  /* uploads accepted and not yet answered */
	unsigned retries_used; /* of them, retries let in past capacity */
	struct req_state *holders; /* every request holding a slot, newest first */
	uv_timer_t pace_timer; /* checks receiving uploads' rate and deadline */
	int pace_timer_on;
	unsigned jobs_running; /* jobs on the pool (posts, deletions, sweeps) */
	struct job *inflight; /* post jobs with an idempotency key */
	uv_timer_t sweep_timer;
	int stopping;
	void (*on_stopped)(void *);
	void *stopped_arg;
	int server_stopped;
	metrics_shard *shard;
	metrics_id m_created, m_replayed, m_rejected, m_failed, m_overloaded, m_deleted;
	metrics_id m_too_slow, m_throttled, m_cut_rate, m_cut_deadline;
	metrics_id m_upload_bytes, m_media_s, m_publish_s, m_stage_s[4];
	metrics_id m_wait_s; /* sayin_api_publish_seconds */
};

enum req_kind { REQ_OTHER, REQ_UPLOAD };

/* req->data of every request: what the handler keeps until it answers. */
struct req_state {
	enum req_kind kind;
	struct api *api;
	http_request *req;       /* the request whose data this is */
	uint64_t body_bytes;
	int has_slot;            /* holds one of workers + queue (or a retry slot) */
	struct req_state *prev_holder, *next_holder; /* api->holders while has_slot */
	/* Pace of the body (upload.c): while receiving, the pace timer cuts it
	 * when a window brings less than min_rate or deadline_at passes. */
	int receiving;           /* body streaming, not yet answered */
	uint64_t body_end_ns;    /* uv_hrtime() at the last body byte (on_request) */
	uint64_t start_ms, deadline_at, window_start_ms, window_start_bytes;
	int window_armed;
	auth_token_info who;
	int authed;
	/* uploads */
	int fd;
	char path[PATH_MAX];
	uint64_t audio_bytes;
	int audio_parts;
	EVP_MD_CTX *sha;
	multipart *mp;
	enum { PART_NONE, PART_AUDIO, PART_TEXT, PART_CROSSPOST, PART_OTHER } part;
	buf text;
	int has_text;
	char crosspost[FIELD_MAX + 1];
	size_t crosspost_len;
	int has_crosspost;
	char idem_key[IDEMPOTENCY_KEY_MAX + 1];
	int has_idem;
	int over_limit;          /* let in past workers + queue as a retry of a known key:
	                            holds one of upload-retry-slots, not a worker slot */
	struct part_ctx {
		struct req_state *rs;
		http_request *req;
		int answered; /* a callback already responded */
	} mpctx;
};

struct waiter {
	http_request *req;
	struct waiter *next;
};

enum job_kind { JOB_POST, JOB_DELETE, JOB_SWEEP };

struct job {
	uv_work_t work;
	enum job_kind kind;
	struct api *api;
	http_request *req; /* NULL for sweeps */
	struct waiter *waiters;
	struct job *next_inflight;
	char author[PUBLISH_HANDLE_MAX + 1];
	char path[PATH_MAX];
	char *text;
	char crosspost[FIELD_MAX + 1];
	int crosspost_given;     /* the form had the field ("" = no network) */
	char idem_key[IDEMPOTENCY_KEY_MAX + 1];
	int has_idem;
	char request_sha[65];
	char id[PUBLISH_ID_LEN + 8];
	/* results */
	int rc;
	int input_fault;
	char err[512];
	publish_result res;
	pipeline_timing timing;
	publish_deleted del;
	unsigned swept;
};

/* ---- api.c: responses (each answers req exactly once) ---- */

/* Sends body (malloc'd; freed after the write, or a 500 when NULL) as JSON
 * with no-store and the extra headers (at most 6). */
void api__respond_owned(http_request *req, int status, char *body, const http_header *extra,
                        size_t n_extra, int close_after);
/* A body that outlives the response (a string literal): for answers that
 * must not fail when memory has run out, e.g. a commit already made. */
void api__respond_static(http_request *req, int status, const char *body,
                         const http_header *extra, size_t n_extra);
/* {"error": {"code", "message"}} with the status. */
void api__respond_error(http_request *req, int status, const char *code, const char *message,
                        const http_header *extra, size_t n_extra, int close_after);
/* j (not consumed) as the body. */
void api__respond_json(http_request *req, int status, json_t *j, const http_header *extra,
                       size_t n_extra);
/* The status and code for an error of the pipeline or of publish_delete. */
void api__error_status(int rc, int input_fault, int *status, const char **code);
/* Checks the Bearer token. Returns 0 and fills rs->who, or -1 after
 * answering 401 (or 500). */
int api__authenticate(struct api *a, http_request *req, struct req_state *rs);
/* The query parameter name of target, percent-decoded ('+' is a space)
 * into a malloc'd string of *len bytes. Returns NULL when absent (or on a
 * bad escape: *bad = 1). */
char *api__query_param(const char *target, const char *name, size_t *len, int *bad);
/* Gives back the request's upload slot (or retry slot), if it holds one,
 * and stops pacing it. */
void api__release_slot(struct req_state *rs);
/* Frees the api once it is stopping, the server has stopped and no job is
 * left; else nothing. */
void api__maybe_stopped(struct api *a);

/* posts.c: the reads and the deletion; each answers req itself. */
void api__get_post(struct api *a, http_request *req, const char *id);
void api__list_posts(struct api *a, http_request *req);
void api__delete_post(struct api *a, http_request *req, struct req_state *rs, const char *id);

/* ---- upload.c: POST /v1/posts ---- */

/* Headers in: authenticates, checks capacity, size and type, opens the
 * temporary file. Returns HTTP_BODY_ACCEPT, or HTTP_BODY_REJECT after
 * answering. */
int api__upload_headers(struct api *a, http_request *req, struct req_state *rs);
/* Body bytes: returns 0 to go on, 1 after answering (an error). */
int api__upload_body(struct req_state *rs, http_request *req, const char *data, size_t len);
/* The body is in: checks it, then queues the job, joins the one in flight
 * with the same idempotency key or answers from the record. */
void api__upload_complete(struct api *a, http_request *req, struct req_state *rs);
/* Closes and removes the request's temporary file, if any. */
void api__upload_discard(struct req_state *rs);
/* Removes upload files a previous run left behind in dir. */
void api__sweep_upload_dir(const char *dir);
/* The pace timer's callback (a->pace_timer.data is a): cuts receiving
 * uploads that are too slow or past their deadline with 408. */
void api__pace_check(uv_timer_t *t);

/* ---- jobs.c: the thread pool ---- */

/* Queues j (calloc'd, kind and request set) on the loop's pool; on_work_done
 * answers its request and frees it. Returns 0 or a libuv error (j is then
 * still the caller's). */
int api__queue_job(struct api *a, struct job *j);
/* Frees a job that is not queued, removing its recording. */
void api__job_free(struct job *j);

#endif

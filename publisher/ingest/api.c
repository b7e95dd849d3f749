/* api: the ingest API: auth, streaming uploads, the worker pool,
 * idempotency keys, reads and deletions, JSON errors. */
#include "ingest/api.h"

#include "ingest/auth.h"
#include "core/clock.h"
#include "core/error.h"
#include "render/feed.h"
#include "core/http.h"
#include "core/log.h"
#include "ingest/multipart.h"
#include "publish.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define IDEMPOTENCY_TTL_MS (24LL * 3600 * 1000)
#define IDEMPOTENCY_KEY_MAX 255
#define FIELD_MAX 64              /* bytes of the crosspost field */
#define MULTIPART_SLACK (1u << 20) /* room for fields and part headers */
#define SMALL_BODY_MAX 65536      /* any other request's body */
#define LIST_DEFAULT 20
#define LIST_MAX 100
#define SWEEP_INTERVAL_MS (3600u * 1000)
#define UPLOAD_PREFIX "upload-"

struct job;

struct api {
	http_handler handler; /* first: the core hands it back to us */
	uv_loop_t *loop;
	store *st;
	const pipeline *pipe;
	http_server *server;
	api_options opt;
	char upload_dir[PATH_MAX];
	unsigned slots_used;  /* uploads accepted and not yet answered */
	unsigned jobs_running; /* jobs on the pool (posts, deletions, sweeps) */
	struct job *inflight; /* post jobs with an idempotency key */
	uv_timer_t sweep_timer;
	int stopping;
	void (*on_stopped)(void *);
	void *stopped_arg;
	int server_stopped;
	metrics_shard *shard;
	metrics_id m_created, m_replayed, m_rejected, m_failed, m_overloaded, m_deleted;
	metrics_id m_upload_bytes, m_media_s, m_publish_s, m_stage_s[4];
};

enum req_kind { REQ_OTHER, REQ_UPLOAD };

/* req->data of every request: what the handler keeps until it answers. */
struct req_state {
	enum req_kind kind;
	struct api *api;
	uint64_t body_bytes;
	int has_slot;            /* holds one of workers + queue */
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
	char *text;
	size_t text_len, text_cap;
	int has_text;
	char crosspost[FIELD_MAX + 1];
	size_t crosspost_len;
	int has_crosspost;
	char idem_key[IDEMPOTENCY_KEY_MAX + 1];
	int has_idem;
	int over_limit;          /* let in past workers + queue as a retry of a known key */
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
	int64_t started_ms;
	/* results */
	int rc;
	int input_fault;
	char err[512];
	publish_result res;
	pipeline_timing timing;
	publish_deleted del;
	unsigned swept;
};

/* ---- responses ---- */

static void free_body(void *arg)
{
	free(arg);
}

/* Every POST /v1/posts is counted once in sayin_api_posts_total: created
 * and replayed where they happen, overloaded with its 503, and every other
 * answer here, by status: 4xx rejected (the request's fault: headers, body,
 * text or recording), 5xx failed (ours). */
static void count_upload_outcome(http_request *req, int status)
{
	struct req_state *rs = req->data;

	if (rs == NULL || rs->kind != REQ_UPLOAD || status == 201 || status == 503)
		return;
	metrics_add(rs->api->shard, status < 500 ? rs->api->m_rejected : rs->api->m_failed, 1);
}

static void respond_owned(http_request *req, int status, char *body, const http_header *extra,
                          size_t n_extra, int close_after)
{
	http_header h[8];
	size_t n = 0;

	count_upload_outcome(req, body == NULL ? 500 : status);

	h[n++] = (http_header){ "Content-Type", "application/json" };
	h[n++] = (http_header){ "Cache-Control", "no-store" };
	for (size_t i = 0; i < n_extra && n < 8; i++)
		h[n++] = extra[i];
	if (body == NULL) {
		static const char oom[] = "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
		http_respond(req, 500, h, n, oom, sizeof(oom) - 1, strcmp(req->method, "HEAD") != 0, 1,
		             NULL, NULL);
		return;
	}
	http_respond(req, status, h, n, body, strlen(body), strcmp(req->method, "HEAD") != 0,
	             close_after, free_body, body);
}

/* {"error": {"code", "message"}} with the status. */
static void respond_error(http_request *req, int status, const char *code, const char *message,
                          const http_header *extra, size_t n_extra, int close_after)
{
	json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", message);
	char *body = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(j);
	log_debug("api: %s %s -> %d %s: %s", req->method, req->path, status, code, message);
	respond_owned(req, status, body, extra, n_extra, close_after);
}

static void respond_json(http_request *req, int status, json_t *j, const http_header *extra,
                         size_t n_extra)
{
	char *body = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6))
	               : NULL;
	respond_owned(req, status, body, extra, n_extra, 0);
}

/* The status and code for an error of the pipeline or of publish_delete. */
static void error_status(int rc, int input_fault, int *status, const char **code)
{
	switch (rc) {
	case SAYIN_EFORMAT:
	case SAYIN_EUNSUPPORTED:
		*status = 415;
		*code = "unsupported_audio";
		return;
	case SAYIN_ETRUNCATED:
	case SAYIN_EEMPTY:
	case SAYIN_EBADDATA:
	case SAYIN_EDECODER:
		*status = 415;
		*code = "undecodable_audio";
		return;
	case SAYIN_ETOOLONG:
		*status = 422;
		*code = "too_long";
		return;
	case SAYIN_ESILENT:
		*status = 422;
		*code = "silent";
		return;
	case SAYIN_ETOOLARGE:
		*status = 413;
		*code = "too_large";
		return;
	case SAYIN_ESTOREFULL:
	case -ENOSPC: /* the store's disk, or the temporary files' */
		*status = 507;
		*code = "store_full";
		return;
	case SAYIN_ENOTFOUND:
		*status = 404;
		*code = "not_found";
		return;
	case -EPERM:
		*status = 403;
		*code = "forbidden";
		return;
	default:
		break;
	}
	if (rc == SAYIN_EINVAL && input_fault) {
		*status = 400;
		*code = "bad_request";
		return;
	}
	*status = 500;
	*code = "internal";
}

/* ---- request state ---- */

static void upload_discard(struct req_state *rs)
{
	if (rs->fd >= 0) {
		close(rs->fd);
		rs->fd = -1;
	}
	if (rs->path[0] != '\0') {
		if (unlink(rs->path) != 0 && errno != ENOENT)
			log_warn("api: cannot remove %s: %s", rs->path, strerror(errno));
		rs->path[0] = '\0';
	}
}

static void release_slot(struct req_state *rs)
{
	if (rs->has_slot) {
		rs->has_slot = 0;
		rs->api->slots_used--;
	}
}

static void req_state_free(struct req_state *rs)
{
	if (rs == NULL)
		return;
	upload_discard(rs);
	release_slot(rs);
	EVP_MD_CTX_free(rs->sha);
	multipart_free(rs->mp);
	free(rs->text);
	free(rs);
}

/* ---- helpers ---- */

static int hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The query parameter name of target, percent-decoded ('+' is a space) into
 * a malloc'd string of *len bytes. Returns NULL when absent (or on a bad
 * escape: *bad = 1). */
static char *query_param(const char *target, const char *name, size_t *len, int *bad)
{
	const char *q = strchr(target, '?');
	size_t nlen = strlen(name);

	*bad = 0;
	while (q != NULL && *q != '\0') {
		const char *start = q + 1, *end = start + strcspn(start, "&#");
		if ((size_t)(end - start) > nlen && strncmp(start, name, nlen) == 0 && start[nlen] == '=') {
			const char *v = start + nlen + 1;
			char *out = malloc((size_t)(end - v) + 1);
			size_t n = 0;
			if (out == NULL)
				return NULL;
			for (const char *p = v; p < end; p++) {
				int hi, lo;
				if (*p != '%') {
					out[n++] = *p == '+' ? ' ' : *p;
					continue;
				}
				hi = end - p >= 3 ? hex_digit(p[1]) : -1;
				lo = hi >= 0 ? hex_digit(p[2]) : -1;
				if (lo < 0) {
					free(out);
					*bad = 1;
					return NULL;
				}
				out[n++] = (char)(hi << 4 | lo);
				p += 2;
			}
			out[n] = '\0';
			*len = n;
			return out;
		}
		if (*end != '&')
			break;
		q = end;
	}
	return NULL;
}

/* Checks the Bearer token. Returns 0 and fills rs->who, or answers 401. */
static int authenticate(struct api *a, http_request *req, struct req_state *rs)
{
	static const http_header challenge[] = { { "WWW-Authenticate", "Bearer realm=\"sayin\"" } };
	const char *h = http_request_header(req, "Authorization");
	store_txn *txn;
	int rc;

	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0) {
		respond_error(req, 401, "unauthorized", "an Authorization: Bearer token is required",
		              challenge, 1, 0);
		return -1;
	}
	h += 7;
	while (*h == ' ')
		h++;
	rc = store_txn_begin(a->st, 0, &txn);
	if (rc == 0) {
		rc = auth_token_check(txn, h, strlen(h), &rs->who);
		store_txn_abort(txn);
	}
	if (rc == SAYIN_ENOTFOUND) {
		respond_error(req, 401, "unauthorized", "the token is not valid (revoked or mistyped)",
		              challenge, 1, 0);
		return -1;
	}
	if (rc != 0) {
		log_error("api: token check failed: %s", sayin_strerror(rc));
		respond_error(req, 500, "internal", sayin_strerror(rc), NULL, 0, 0);
		return -1;
	}
	rs->authed = 1;
	return 0;
}

/* A key of 1-255 visible ASCII characters. */
static int valid_idempotency_key(const char *k)
{
	size_t n = strlen(k);
	if (n == 0 || n > IDEMPOTENCY_KEY_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (k[i] < 0x21 || k[i] > 0x7e)
			return 0;
	return 1;
}

static int raw_audio_type(const char *ctype)
{
	return strncasecmp(ctype, "audio/", 6) == 0 || strncasecmp(ctype, "video/", 6) == 0 ||
	       strncasecmp(ctype, "application/octet-stream", 24) == 0 ||
	       strncasecmp(ctype, "application/ogg", 15) == 0;
}

/* ---- uploads ---- */

static int open_upload_file(struct api *a, struct req_state *rs)
{
	int n = snprintf(rs->path, sizeof(rs->path), "%s/" UPLOAD_PREFIX "XXXXXX", a->upload_dir);
	if (n < 0 || (size_t)n >= sizeof(rs->path)) {
		rs->path[0] = '\0';
		return -ENAMETOOLONG;
	}
	rs->fd = mkostemp(rs->path, O_CLOEXEC);
	if (rs->fd < 0) {
		int rc = -errno;
		rs->path[0] = '\0';
		return rc;
	}
	return 0;
}

static int write_audio(struct req_state *rs, http_request *req, const char *data, size_t len)
{
	rs->audio_bytes += len;
	if (rs->audio_bytes > rs->api->opt.max_upload) {
		char msg[128];
		snprintf(msg, sizeof(msg), "the recording is larger than the limit of %llu bytes",
		         (unsigned long long)rs->api->opt.max_upload);
		respond_error(req, 413, "too_large", msg, NULL, 0, 1);
		return -1;
	}
	if (EVP_DigestUpdate(rs->sha, data, len) != 1) {
		respond_error(req, 500, "internal", "hashing failed", NULL, 0, 1);
		return -1;
	}
	/* A synchronous write of at most 16 KiB into the page cache: cheaper
	 * than a round trip through the thread pool, which the encoders use. */
	while (len > 0) {
		ssize_t w = write(rs->fd, data, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			log_error("api: writing the upload to %s: %s", rs->path, strerror(errno));
			respond_error(req, errno == ENOSPC ? 507 : 500,
			              errno == ENOSPC ? "store_full" : "internal",
			              "cannot write the upload to a temporary file", NULL, 0, 1);
			return -1;
		}
		data += w;
		len -= (size_t)w;
	}
	return 0;
}

static int on_mp_part(void *arg, const char *name, const char *filename, const char *ctype)
{
	struct part_ctx *c = arg;
	struct req_state *rs = c->rs;
	(void)filename;
	(void)ctype;
	if (strcmp(name, "audio") == 0) {
		if (++rs->audio_parts > 1) {
			respond_error(c->req, 400, "bad_request", "more than one audio part", NULL, 0, 1);
			c->answered = 1;
			return 1;
		}
		rs->part = PART_AUDIO;
	} else if (strcmp(name, "text") == 0) {
		rs->part = PART_TEXT;
		rs->has_text = 1;
		rs->text_len = 0;
	} else if (strcmp(name, "crosspost") == 0) {
		rs->part = PART_CROSSPOST;
		rs->crosspost_len = 0;
		rs->crosspost[0] = '\0';
		rs->has_crosspost = 1;
	} else {
		rs->part = PART_OTHER; /* ignored, but counted in the body's cap */
	}
	return 0;
}

static int append_text(struct req_state *rs, const char *data, size_t len)
{
	size_t max = rs->api->pipe->max_text_chars * 4; /* UTF-8: 4 bytes a character */
	if (rs->text_len + len > max)
		return -1;
	if (rs->text_len + len + 1 > rs->text_cap) {
		size_t cap = rs->text_len + len + 1 > 256 ? rs->text_len + len + 1 : 256;
		char *t = realloc(rs->text, cap);
		if (t == NULL)
			return -1;
		rs->text = t;
		rs->text_cap = cap;
	}
	memcpy(rs->text + rs->text_len, data, len);
	rs->text_len += len;
	rs->text[rs->text_len] = '\0';
	return 0;
}

static int on_mp_data(void *arg, const char *data, size_t len)
{
	struct part_ctx *c = arg;
	struct req_state *rs = c->rs;

	switch (rs->part) {
	case PART_AUDIO:
		if (write_audio(rs, c->req, data, len) != 0) {
			c->answered = 1;
			return 1;
		}
		return 0;
	case PART_TEXT:
		if (append_text(rs, data, len) != 0) {
			respond_error(c->req, 400, "bad_request", "the text is too long", NULL, 0, 1);
			c->answered = 1;
			return 1;
		}
		return 0;
	case PART_CROSSPOST:
		if (rs->crosspost_len + len > FIELD_MAX) {
			respond_error(c->req, 400, "bad_request", "the crosspost field is too long", NULL,
			              0, 1);
			c->answered = 1;
			return 1;
		}
		memcpy(rs->crosspost + rs->crosspost_len, data, len);
		rs->crosspost_len += len;
		rs->crosspost[rs->crosspost_len] = '\0';
		return 0;
	default:
		return 0;
	}
}

static int on_mp_part_end(void *arg)
{
	struct part_ctx *c = arg;
	c->rs->part = PART_NONE;
	return 0;
}

static const multipart_callbacks mp_callbacks = { on_mp_part, on_mp_data, on_mp_part_end };

static void respond_overloaded(struct api *a, http_request *req, int close_after)
{
	static const http_header retry[] = { { "Retry-After", "5" } };
	metrics_add(a->shard, a->m_overloaded, 1);
	log_warn("api: %u uploads accepted and waiting: answering 503 (raise workers or queue)",
	         a->slots_used);
	respond_error(req, 503, "overloaded", "too many recordings are being encoded; retry", retry,
	              1, close_after);
}

static int idem_lookup(struct api *a, const char *handle, const char *idem_key, json_t **out);

/* 1 if (handle, key) has a first request encoding, or a response on record
 * that has not expired. */
static int idem_known(struct api *a, const char *handle, const char *idem_key)
{
	json_t *j = NULL;
	int known;

	for (struct job *q = a->inflight; q != NULL; q = q->next_inflight) {
		if (strcmp(q->author, handle) == 0 && strcmp(q->idem_key, idem_key) == 0)
			return 1;
	}
	known = idem_lookup(a, handle, idem_key, &j) == 0;
	json_decref(j);
	return known;
}

/* POST /v1/posts, headers in: authenticate, check capacity, size and type,
 * open the temporary file. Returns HTTP_BODY_ACCEPT or REJECT. */
static int upload_headers(struct api *a, http_request *req, struct req_state *rs)
{
	const char *ctype = http_request_header(req, "Content-Type");
	const char *idem = http_request_header(req, "Idempotency-Key");
	uint64_t cap;
	char boundary[MULTIPART_BOUNDARY_MAX + 1];
	int multipart_body = 0, rc;

	if (authenticate(a, req, rs) != 0)
		return HTTP_BODY_REJECT;
	if (!req->chunked && http_request_header(req, "Content-Length") == NULL) {
		respond_error(req, 411, "length_required",
		              "send Content-Length or Transfer-Encoding: chunked", NULL, 0, 1);
		return HTTP_BODY_REJECT;
	}
	if (ctype == NULL) {
		respond_error(req, 415, "unsupported_media",
		              "Content-Type is required: multipart/form-data or the audio's type", NULL,
		              0, 1);
		return HTTP_BODY_REJECT;
	}
	if (multipart_boundary(ctype, boundary) == 0) {
		multipart_body = 1;
	} else if (strncasecmp(ctype, "multipart/", 10) == 0) {
		respond_error(req, 400, "bad_request", "multipart/form-data needs a valid boundary",
		              NULL, 0, 1);
		return HTTP_BODY_REJECT;
	} else if (!raw_audio_type(ctype)) {
		respond_error(req, 415, "unsupported_media",
		              "send multipart/form-data, or a recording as audio/*, video/* or "
		              "application/octet-stream", NULL, 0, 1);
		return HTTP_BODY_REJECT;
	}
	cap = a->opt.max_upload + (multipart_body ? MULTIPART_SLACK : 0);
	if (req->content_length != HTTP_LENGTH_UNKNOWN && req->content_length > cap) {
		char msg[128];
		snprintf(msg, sizeof(msg), "the upload is larger than the limit of %llu bytes",
		         (unsigned long long)a->opt.max_upload);
		respond_error(req, 413, "too_large", msg, NULL, 0, 1);
		return HTTP_BODY_REJECT;
	}
	if (req->content_length == 0 && !req->chunked) {
		respond_error(req, 400, "bad_request", "the request has no recording", NULL, 0, 1);
		return HTTP_BODY_REJECT;
	}
	if (idem != NULL) {
		if (!valid_idempotency_key(idem)) {
			respond_error(req, 400, "bad_request",
			              "Idempotency-Key must be 1-255 visible ASCII characters", NULL, 0, 1);
			return HTTP_BODY_REJECT;
		}
		snprintf(rs->idem_key, sizeof(rs->idem_key), "%s", idem);
		rs->has_idem = 1;
	}
	if (a->slots_used >= a->opt.workers + a->opt.queue) {
		/* A retry of a key whose first request is done or encoding needs
		 * no worker: it is answered from the record or with the first
		 * request's outcome. Anything else waits for room. */
		if (rs->has_idem && idem_known(a, rs->who.handle, rs->idem_key)) {
			rs->over_limit = 1;
		} else {
			respond_overloaded(a, req, 1);
			return HTTP_BODY_REJECT;
		}
	}
	rs->sha = EVP_MD_CTX_new();
	if (rs->sha == NULL || EVP_DigestInit_ex(rs->sha, EVP_sha256(), NULL) != 1) {
		respond_error(req, 500, "internal", "out of memory", NULL, 0, 1);
		return HTTP_BODY_REJECT;
	}
	if (multipart_body) {
		rs->mpctx.rs = rs;
		rs->mpctx.req = req;
		rs->mp = multipart_new(boundary, &mp_callbacks, &rs->mpctx);
		if (rs->mp == NULL) {
			respond_error(req, 500, "internal", "out of memory", NULL, 0, 1);
			return HTTP_BODY_REJECT;
		}
	} else {
		size_t tlen;
		int bad;
		rs->text = query_param(req->target, "text", &tlen, &bad);
		if (bad) {
			respond_error(req, 400, "bad_request", "the text parameter has a bad %-escape",
			              NULL, 0, 1);
			return HTTP_BODY_REJECT;
		}
		if (rs->text != NULL) {
			rs->has_text = 1;
			rs->text_len = tlen;
			rs->text_cap = tlen + 1;
		}
		tlen = 0;
		char *cp = query_param(req->target, "crosspost", &tlen, &bad);
		if (cp != NULL && tlen <= FIELD_MAX) {
			memcpy(rs->crosspost, cp, tlen + 1);
			rs->crosspost_len = tlen;
			rs->has_crosspost = 1;
		}
		free(cp);
		if (bad || tlen > FIELD_MAX) {
			respond_error(req, 400, "bad_request", "bad crosspost parameter", NULL, 0, 1);
			return HTTP_BODY_REJECT;
		}
		rs->audio_parts = 1;
	}
	rc = open_upload_file(a, rs);
	if (rc != 0) {
		log_error("api: cannot create an upload file in %s: %s", a->upload_dir,
		          sayin_strerror(rc));
		respond_error(req, 500, "internal", "cannot create a temporary file", NULL, 0, 1);
		return HTTP_BODY_REJECT;
	}
	rs->has_slot = 1;
	a->slots_used++;
	return HTTP_BODY_ACCEPT;
}

static int upload_body(struct req_state *rs, http_request *req, const char *data, size_t len)
{
	metrics_add(rs->api->shard, rs->api->m_upload_bytes, len);
	if (rs->mp != NULL) {
		int rc;
		/* The whole form, not only its audio part: a chunked body has no
		 * Content-Length for upload_headers to check. */
		if (rs->body_bytes > rs->api->opt.max_upload + MULTIPART_SLACK) {
			respond_error(req, 413, "too_large", "the form is larger than the recording's "
			              "limit plus 1 MiB", NULL, 0, 1);
			return 1;
		}
		rc = multipart_feed(rs->mp, data, len);
		if (rc == 0)
			return 0;
		if (!rs->mpctx.answered)
			respond_error(req, 400, "bad_request",
			              rc == -ENOMEM ? "out of memory" : "malformed multipart/form-data body",
			              NULL, 0, 1);
		return 1;
	}
	return write_audio(rs, req, data, len) == 0 ? 0 : 1;
}

/* ---- jobs on the thread pool ---- */

static void job_free(struct job *j)
{
	if (j == NULL)
		return;
	if (j->path[0] != '\0' && unlink(j->path) != 0 && errno != ENOENT)
		log_warn("api: cannot remove %s: %s", j->path, strerror(errno));
	free(j->text);
	free(j);
}

static void work_post(struct job *j)
{
	struct api *a = j->api;
	pipeline_post post = { .file = j->path, .author = j->author, .text = j->text,
		               .idempotency_key = j->has_idem ? j->idem_key : NULL,
		               .request_sha256 = j->request_sha,
		               .crosspost = j->crosspost_given ? j->crosspost : NULL,
		               .now_ms = clock_now_ms() };
	j->rc = pipeline_run(a->pipe, a->st, &post, &j->res, &j->timing, &j->input_fault, j->err,
	                     sizeof(j->err));
	/* The recording is not needed any more, whatever happened. */
	if (unlink(j->path) != 0 && errno != ENOENT)
		log_warn("api: cannot remove %s: %s", j->path, strerror(errno));
	j->path[0] = '\0';
}

/* Deletes idempotency records older than the TTL. */
struct sweep_ctx {
	store_txn *txn;
	int64_t cutoff;
	unsigned n;
};

static int sweep_one(void *arg, const char *key, const void *record, size_t len)
{
	struct sweep_ctx *c = arg;
	json_t *j = json_loadb(record, len, 0, NULL);
	int64_t created = j ? json_integer_value(json_object_get(j, "created_ms")) : 0;
	int rc = 0;
	json_decref(j);
	if (created < c->cutoff) {
		rc = store_delete_record(c->txn, STORE_IDEMPOTENCY, key);
		if (rc == 0)
			c->n++;
	}
	return rc;
}

static void work_sweep(struct job *j)
{
	struct sweep_ctx c = { .cutoff = clock_now_ms() - IDEMPOTENCY_TTL_MS };
	j->rc = store_txn_begin(j->api->st, 1, &c.txn);
	if (j->rc != 0)
		return;
	j->rc = store_each_record(c.txn, STORE_IDEMPOTENCY, "", sweep_one, &c);
	if (j->rc == 0 && c.n > 0)
		j->rc = store_txn_commit(c.txn);
	else
		store_txn_abort(c.txn);
	j->swept = c.n;
}

static void on_work(uv_work_t *w)
{
	struct job *j = w->data;
	switch (j->kind) {
	case JOB_POST:
		work_post(j);
		break;
	case JOB_DELETE:
		j->rc = publish_delete(j->api->st, &j->api->pipe->publish, j->id, j->author,
		                       clock_now_ms(), &j->del, j->err, sizeof(j->err));
		break;
	case JOB_SWEEP:
		work_sweep(j);
		break;
	}
}

static void maybe_stopped(struct api *a);

static void inflight_remove(struct api *a, struct job *j)
{
	for (struct job **p = &a->inflight; *p != NULL; p = &(*p)->next_inflight) {
		if (*p == j) {
			*p = j->next_inflight;
			return;
		}
	}
}

/* Answers req with the outcome of a post job. */
static void answer_post(struct job *j, http_request *req, int replayed)
{
	static const http_header replay_hdr[] = { { "Idempotent-Replayed", "true" } };
	char location[128], *body = NULL;
	http_header h[2];
	size_t n = 0;

	if (j->rc != 0) {
		int status;
		const char *code;
		error_status(j->rc, j->input_fault, &status, &code);
		respond_error(req, status, code, j->err, NULL, 0, 0);
		return;
	}
	if (publish_response_json(j->api->pipe->base_url, j->author, &j->res, &body) != 0) {
		respond_error(req, 500, "internal", "out of memory", NULL, 0, 0);
		return;
	}
	snprintf(location, sizeof(location), "/v1/posts/%s", j->res.id);
	h[n++] = (http_header){ "Location", location };
	if (replayed)
		h[n++] = replay_hdr[0];
	respond_owned(req, 201, body, h, n, 0);
}

static void on_work_done(uv_work_t *w, int status)
{
	struct job *j = w->data;
	struct api *a = j->api;

	a->jobs_running--;
	if (status == UV_ECANCELED) {
		j->rc = -ECANCELED;
		snprintf(j->err, sizeof(j->err), "the server is stopping");
	}
	switch (j->kind) {
	case JOB_POST: {
		struct req_state *rs = j->req->data;
		release_slot(rs);
		if (j->has_idem)
			inflight_remove(a, j);
		if (j->rc == 0) {
			metrics_add(a->shard, a->m_created, 1);
			metrics_observe(a->shard, a->m_media_s, j->timing.media_ms / 1e3);
			metrics_observe(a->shard, a->m_publish_s, j->timing.publish_ms / 1e3);
			metrics_observe(a->shard, a->m_stage_s[0], j->res.ms_objects / 1e3);
			metrics_observe(a->shard, a->m_stage_s[1], j->res.ms_feed / 1e3);
			metrics_observe(a->shard, a->m_stage_s[2], j->res.ms_pages / 1e3);
			metrics_observe(a->shard, a->m_stage_s[3], j->res.ms_commit / 1e3);
		} else {
			/* Counted as rejected or failed by its answer. */
			if (j->input_fault)
				log_info("api: post by %s refused: %s", j->author, j->err);
			else
				log_error("api: post by %s failed: %s", j->author, j->err);
		}
		answer_post(j, j->req, 0);
		while (j->waiters != NULL) {
			struct waiter *wt = j->waiters;
			j->waiters = wt->next;
			if (j->rc == 0)
				metrics_add(a->shard, a->m_replayed, 1);
			answer_post(j, wt->req, 1);
			free(wt);
		}
		break;
	}
	case JOB_DELETE:
		if (j->rc == 0) {
			json_t *r = json_pack("{s:s, s:b, s:i, s:i}", "id", j->id, "deleted", 1,
			                      "objects_deleted", (int)j->del.objects_deleted,
			                      "objects_kept", (int)j->del.objects_kept);
			metrics_add(a->shard, a->m_deleted, 1);
			respond_json(j->req, 200, r, NULL, 0);
			json_decref(r);
		} else {
			int st;
			const char *code;
			error_status(j->rc, 1, &st, &code);
			respond_error(j->req, st, code, j->err, NULL, 0, 0);
		}
		break;
	case JOB_SWEEP:
		if (j->rc != 0)
			log_warn("api: idempotency sweep failed: %s", sayin_strerror(j->rc));
		else if (j->swept > 0)
			log_info("api: %u idempotency keys expired", j->swept);
		break;
	}
	if ((j->kind == JOB_POST || j->kind == JOB_DELETE) && j->rc == 0 && a->opt.on_commit != NULL)
		a->opt.on_commit(a->opt.on_commit_arg);
	job_free(j);
	maybe_stopped(a);
}

static int queue_job(struct api *a, struct job *j)
{
	int rc;
	j->work.data = j;
	j->api = a;
	rc = uv_queue_work(a->loop, &j->work, on_work, on_work_done);
	if (rc == 0)
		a->jobs_running++;
	return rc;
}

/* ---- idempotency ---- */

/* The first response to (handle, key) on record and not expired: 0 and
 * *out (the record's JSON, the caller's), SAYIN_ENOTFOUND, or an error
 * (SAYIN_ECORRUPT for a record that is not JSON). */
static int idem_lookup(struct api *a, const char *handle, const char *idem_key, json_t **out)
{
	char key[PUBLISH_HANDLE_MAX + 2 + IDEMPOTENCY_KEY_MAX + 1];
	const void *rec;
	size_t len;
	store_txn *txn;
	json_t *j = NULL;
	int rc;

	*out = NULL;
	snprintf(key, sizeof(key), "%s\n%s", handle, idem_key);
	rc = store_txn_begin(a->st, 0, &txn);
	if (rc == 0) {
		rc = store_get_record(txn, STORE_IDEMPOTENCY, key, &rec, &len);
		if (rc == 0)
			j = json_loadb(rec, len, 0, NULL);
		store_txn_abort(txn);
	}
	if (rc == 0 && j == NULL)
		rc = SAYIN_ECORRUPT;
	if (rc == 0 && json_integer_value(json_object_get(j, "created_ms")) <
	                       clock_now_ms() - IDEMPOTENCY_TTL_MS)
		rc = SAYIN_ENOTFOUND; /* expired: the key is free again */
	if (rc != 0) {
		json_decref(j);
		return rc;
	}
	*out = j;
	return 0;
}

/* Looks for the first response to (author, key). Returns 1 and answers req
 * when one is on record (or 422 when the key came with another request),
 * 0 when there is none, -1 after answering an error. */
static int replay_recorded(struct api *a, http_request *req, struct req_state *rs,
                           const char *request_sha)
{
	static const http_header replay_hdr[] = { { "Idempotent-Replayed", "true" } };
	json_t *j = NULL;
	int rc = idem_lookup(a, rs->who.handle, rs->idem_key, &j);
	const char *sha, *body;

	if (rc == SAYIN_ENOTFOUND)
		return 0;
	if (rc != 0) {
		respond_error(req, 500, "internal", sayin_strerror(rc), NULL, 0, 0);
		return -1;
	}
	sha = json_string_value(json_object_get(j, "request_sha256"));
	body = json_string_value(json_object_get(j, "body"));
	if (sha == NULL || body == NULL || strcmp(sha, request_sha) != 0) {
		respond_error(req, 422, "idempotency_key_reused",
		              "this Idempotency-Key was used for a different request", NULL, 0, 0);
	} else {
		char location[128], *copy = strdup(body);
		http_header h[2] = { { "Location", location }, replay_hdr[0] };
		snprintf(location, sizeof(location), "/v1/posts/%s",
		         json_string_value(json_object_get(j, "post_id")));
		metrics_add(a->shard, a->m_replayed, 1);
		respond_owned(req, 201, copy, h, 2, 0);
	}
	json_decref(j);
	return 1;
}

static void request_digest(struct req_state *rs, char out[65])
{
	unsigned char d[32];
	unsigned int n = 0;
	static const char hexd[] = "0123456789abcdef";

	/* The request is the recording, the text and the crosspost field. */
	EVP_DigestUpdate(rs->sha, "\0text\0", 6);
	if (rs->has_text)
		EVP_DigestUpdate(rs->sha, rs->text, rs->text_len);
	EVP_DigestUpdate(rs->sha, "\0crosspost\0", 11);
	EVP_DigestUpdate(rs->sha, rs->crosspost, rs->crosspost_len);
	EVP_DigestFinal_ex(rs->sha, d, &n);
	for (unsigned i = 0; i < 32; i++) {
		out[2 * i] = hexd[d[i] >> 4];
		out[2 * i + 1] = hexd[d[i] & 15];
	}
	out[64] = '\0';
}

/* The body is in: checks it, then queues the job (or joins the one in
 * flight with the same idempotency key). */
static void upload_complete(struct api *a, http_request *req, struct req_state *rs)
{
	char sha[65];
	struct job *j;
	int rc;

	if (rs->mp != NULL && multipart_finish(rs->mp) != 0) {
		respond_error(req, 400, "bad_request", "the multipart body ends before its closing "
		              "boundary", NULL, 0, 0);
		goto discard;
	}
	if (rs->audio_parts == 0 || rs->audio_bytes == 0) {
		respond_error(req, 400, "bad_request", rs->audio_parts == 0
		              ? "no \"audio\" part in the form" : "the recording is empty", NULL, 0, 0);
		goto discard;
	}
	if (rs->has_text) {
		char err[160];
		if (pipeline_check_text(a->pipe, rs->text, rs->text_len, err, sizeof(err)) != 0) {
			respond_error(req, 400, "bad_request", err, NULL, 0, 0);
			goto discard;
		}
	}
	if (rs->crosspost_len > 0 && strspn(rs->crosspost, "abcdefghijklmnopqrstuvwxyz,") !=
	                                     rs->crosspost_len) {
		respond_error(req, 400, "bad_request",
		              "crosspost is a comma-separated list of networks, e.g. x,facebook", NULL,
		              0, 0);
		goto discard;
	}
	request_digest(rs, sha);
	if (rs->has_idem) {
		rc = replay_recorded(a, req, rs, sha);
		if (rc != 0)
			goto discard;
		for (j = a->inflight; j != NULL; j = j->next_inflight) {
			if (strcmp(j->author, rs->who.handle) == 0 && strcmp(j->idem_key, rs->idem_key) == 0)
				break;
		}
		if (j != NULL) {
			struct waiter *wt;
			if (strcmp(j->request_sha, sha) != 0) {
				respond_error(req, 422, "idempotency_key_reused",
				              "this Idempotency-Key is in use by a different request", NULL, 0,
				              0);
				goto discard;
			}
			wt = malloc(sizeof(*wt));
			if (wt == NULL) {
				respond_error(req, 500, "internal", "out of memory", NULL, 0, 0);
				goto discard;
			}
			/* Answered with the first request's outcome. */
			wt->req = req;
			wt->next = j->waiters;
			j->waiters = wt;
			upload_discard(rs);
			release_slot(rs);
			log_info("api: %s retried idempotency key while the first is encoding: waiting",
			         rs->who.handle);
			return;
		}
	}
	if (rs->over_limit) {
		/* Let in as a retry, but the first request failed meanwhile (no
		 * record): a new job, for which there is no room. */
		respond_overloaded(a, req, 0);
		goto discard;
	}
	j = calloc(1, sizeof(*j));
	if (j == NULL) {
		respond_error(req, 500, "internal", "out of memory", NULL, 0, 0);
		goto discard;
	}
	j->kind = JOB_POST;
	j->req = req;
	snprintf(j->author, sizeof(j->author), "%s", rs->who.handle);
	memcpy(j->request_sha, sha, sizeof(sha));
	if (rs->has_idem) {
		snprintf(j->idem_key, sizeof(j->idem_key), "%s", rs->idem_key);
		j->has_idem = 1;
	}
	if (rs->has_text) {
		j->text = rs->text; /* ownership moves to the job */
		rs->text = NULL;
	}
	snprintf(j->crosspost, sizeof(j->crosspost), "%s", rs->crosspost);
	j->crosspost_given = rs->has_crosspost;
	/* The file moves to the job, which removes it. */
	close(rs->fd);
	rs->fd = -1;
	snprintf(j->path, sizeof(j->path), "%s", rs->path);
	rs->path[0] = '\0';
	j->started_ms = clock_now_ms();
	rc = queue_job(a, j);
	if (rc != 0) {
		respond_error(req, 500, "internal", "cannot queue the job", NULL, 0, 0);
		job_free(j);
		release_slot(rs);
		return;
	}
	if (j->has_idem) {
		j->next_inflight = a->inflight;
		a->inflight = j;
	}
	return;
discard:
	upload_discard(rs);
	release_slot(rs);
}

/* ---- reads and deletions ---- */

static json_t *post_view(const pipeline *p, const json_t *rec)
{
	char path[256], url[1024];
	const char *id = json_string_value(json_object_get(rec, "id"));
	const char *author = json_string_value(json_object_get(rec, "author"));
	const json_t *audio = json_object_get(rec, "audio");
	const char *sha = json_string_value(json_object_get(audio, "sha256"));
	const char *fb = json_string_value(json_object_get(json_object_get(rec, "fallback"), "sha256"));
	const char *wf = json_string_value(json_object_get(json_object_get(rec, "waveform"), "sha256"));
	json_t *v;

	if (id == NULL || author == NULL || sha == NULL)
		return NULL;
	v = json_object();
	if (v == NULL)
		return NULL;
	json_object_set_new(v, "id", json_string(id));
	json_object_set_new(v, "author", json_string(author));
	json_object_set(v, "seq", json_object_get(rec, "seq"));
	json_object_set(v, "text", json_object_get(rec, "text"));
	json_object_set(v, "date_published", json_object_get(rec, "date_published"));
	json_object_set(v, "duration_in_seconds", json_object_get(audio, "duration_in_seconds"));
	json_object_set(v, "size_in_bytes", json_object_get(audio, "size_in_bytes"));
	feed_path_post(path, sizeof(path), id);
	snprintf(url, sizeof(url), "%s%s", p->base_url, path);
	json_object_set_new(v, "url", json_string(url));
	feed_path_audio(path, sizeof(path), sha);
	snprintf(url, sizeof(url), "%s%s", p->base_url, path);
	json_object_set_new(v, "audio_url", json_string(url));
	feed_path_feed(path, sizeof(path), author);
	snprintf(url, sizeof(url), "%s%s", p->base_url, path);
	json_object_set_new(v, "feed_url", json_string(url));
	if (fb != NULL) {
		feed_path_fallback(path, sizeof(path), fb);
		snprintf(url, sizeof(url), "%s%s", p->base_url, path);
		json_object_set_new(v, "fallback_url", json_string(url));
	}
	if (wf != NULL) {
		feed_path_waveform(path, sizeof(path), wf);
		snprintf(url, sizeof(url), "%s%s", p->base_url, path);
		json_object_set_new(v, "waveform_url", json_string(url));
	}
	if (json_object_get(rec, "loudness") != NULL)
		json_object_set(v, "loudness", json_object_get(rec, "loudness"));
	return v;
}

struct delivery_scan {
	const char *post;
	int cdn_pending, cdn_parked;
	json_t *crosspost; /* network -> state */
};

static int scan_job(void *arg, const char *key, const void *record, size_t len)
{
	struct delivery_scan *d = arg;
	json_t *j = json_loadb(record, len, 0, NULL);
	const json_t *payload = json_object_get(j, "payload");
	const char *post = json_string_value(json_object_get(payload, "post"));
	const char *target = json_string_value(json_object_get(j, "target"));
	int parked = json_is_true(json_object_get(j, "parked"));
	(void)key;
	if (post != NULL && target != NULL && strcmp(post, d->post) == 0) {
		if (strcmp(target, "x") == 0 || strcmp(target, "facebook") == 0) {
			json_object_set_new(d->crosspost, target,
			                    json_pack("{s:s, s:I, s:s}", "state",
			                              parked ? "needs action" : "pending", "attempts",
			                              json_integer_value(json_object_get(j, "attempts")),
			                              "last_error",
			                              json_string_value(json_object_get(j, "last_error"))
			                                      ?: ""));
		} else if (parked) {
			d->cdn_parked++;
		} else {
			d->cdn_pending++;
		}
	}
	json_decref(j);
	return 0;
}

/* The post's delivery: the CDN jobs still waiting (none: delivered, or no
 * CDN configured) and each cross-post, done (with the remote post) or not. */
static json_t *delivery_view(store_txn *txn, const char *id)
{
	struct delivery_scan d = { .post = id, .crosspost = json_object() };
	static const char *const networks[] = { "x", "facebook" };
	for (size_t i = 0; i < 2; i++) {
		char key[128];
		const void *rec;
		size_t len;
		snprintf(key, sizeof(key), "%s\n%s", id, networks[i]);
		if (store_get_record(txn, STORE_CROSSPOSTS, key, &rec, &len) == 0) {
			json_t *r = json_loadb(rec, len, 0, NULL);
			if (r != NULL) {
				json_object_set_new(r, "state", json_string("done"));
				json_object_set_new(d.crosspost, networks[i], r);
			}
		}
	}
	/* O(queue depth): the queue is short unless a target is down, and
	 * this is a per-post read, not a fan's path. */
	store_each_record(txn, STORE_OUTBOX, "", scan_job, &d);
	return json_pack("{s:s, s:{s:s, s:i, s:i}, s:o}", "origin", "live", "cdn", "state",
	                 d.cdn_parked ? "needs action" : d.cdn_pending ? "pending" : "done",
	                 "jobs_pending", d.cdn_pending, "jobs_parked", d.cdn_parked, "crosspost",
	                 d.crosspost);
}

static void get_post(struct api *a, http_request *req, const char *id)
{
	store_txn *txn;
	const void *rec;
	size_t len;
	json_t *j = NULL, *v = NULL;
	int rc = store_txn_begin(a->st, 0, &txn);

	if (rc == 0) {
		rc = store_get_post(txn, id, &rec, &len);
		if (rc == 0)
			j = json_loadb(rec, len, 0, NULL);
		v = j ? post_view(a->pipe, j) : NULL;
		if (v != NULL)
			json_object_set_new(v, "delivery", delivery_view(txn, id));
		store_txn_abort(txn);
	}
	if (rc == SAYIN_ENOTFOUND) {
		respond_error(req, 404, "not_found", "no such post", NULL, 0, 0);
		json_decref(v);
		json_decref(j);
		return;
	}
	if (rc != 0 || v == NULL) {
		respond_error(req, 500, "internal", rc ? sayin_strerror(rc) : "corrupt post record",
		              NULL, 0, 0);
	} else {
		respond_json(req, 200, v, NULL, 0);
	}
	json_decref(v);
	json_decref(j);
}

struct list_ctx {
	const pipeline *pipe;
	json_t *posts;
	uint64_t last_seq;
};

static int list_one(void *arg, const char *id, uint64_t seq, const void *record, size_t len)
{
	struct list_ctx *c = arg;
	json_t *j = json_loadb(record, len, 0, NULL);
	json_t *v = j ? post_view(c->pipe, j) : NULL;
	json_decref(j);
	if (v == NULL) {
		log_error("api: post %s has a corrupt record", id);
		return SAYIN_ECORRUPT;
	}
	c->last_seq = seq;
	return json_array_append_new(c->posts, v) == 0 ? 0 : -ENOMEM;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

static void list_posts(struct api *a, http_request *req)
{
	struct list_ctx c = { .pipe = a->pipe };
	size_t len;
	int bad1 = 0, bad2 = 0, bad3 = 0, rc;
	char *author = query_param(req->target, "author", &len, &bad1);
	char *before_s = query_param(req->target, "before", &len, &bad2);
	char *limit_s = query_param(req->target, "limit", &len, &bad3);
	uint64_t before = UINT64_MAX, limit = LIST_DEFAULT;
	store_txn *txn;
	const void *rec;
	size_t rlen;

	if (author == NULL || bad1 || bad2 || bad3 || !publish_valid_handle(author) ||
	    (before_s != NULL && parse_u64(before_s, &before) != 0) ||
	    (limit_s != NULL && (parse_u64(limit_s, &limit) != 0 || limit < 1 || limit > LIST_MAX))) {
		respond_error(req, 400, "bad_request",
		              "use ?author=HANDLE, with optional before=SEQ and limit=1..100", NULL, 0, 0);
		goto done;
	}
	c.posts = json_array();
	rc = store_txn_begin(a->st, 0, &txn);
	if (rc == 0) {
		rc = store_get_author(txn, author, &rec, &rlen);
		if (rc == 0 && before > 0)
			rc = store_author_posts_range(txn, author, before - 1, 0, (size_t)limit,
			                              list_one, &c);
		store_txn_abort(txn);
	}
	if (rc == SAYIN_ENOTFOUND) {
		respond_error(req, 404, "not_found", "no such author", NULL, 0, 0);
	} else if (rc != 0 || c.posts == NULL) {
		respond_error(req, 500, "internal", sayin_strerror(rc), NULL, 0, 0);
	} else {
		json_t *r = json_pack("{s:O}", "posts", c.posts);
		if (r != NULL && json_array_size(c.posts) == limit && c.last_seq > 1) {
			char next[128];
			snprintf(next, sizeof(next), "/v1/posts?author=%s&before=%llu&limit=%llu", author,
			         (unsigned long long)c.last_seq, (unsigned long long)limit);
			json_object_set_new(r, "next_url", json_string(next));
		}
		respond_json(req, 200, r, NULL, 0);
		json_decref(r);
	}
done:
	json_decref(c.posts);
	free(author);
	free(before_s);
	free(limit_s);
}

static void delete_post(struct api *a, http_request *req, struct req_state *rs, const char *id)
{
	struct job *j = calloc(1, sizeof(*j));
	if (j == NULL) {
		respond_error(req, 500, "internal", "out of memory", NULL, 0, 0);
		return;
	}
	j->kind = JOB_DELETE;
	j->req = req;
	snprintf(j->author, sizeof(j->author), "%s", rs->who.handle);
	snprintf(j->id, sizeof(j->id), "%s", id);
	/* A write transaction waits for the publisher's other writers: off
	 * the loop, like the encodes. */
	if (queue_job(a, j) != 0) {
		respond_error(req, 500, "internal", "cannot queue the job", NULL, 0, 0);
		free(j);
	}
}

/* ---- the handler ---- */

static int is_post_id(const char *s)
{
	size_t n = strlen(s);
	return n == PUBLISH_ID_LEN && strspn(s, "0123456789abcdefghjkmnpqrstvwxyz") == n;
}

static void serve_metrics(struct api *a, http_request *req)
{
	char *text = NULL;
	size_t len = 0;
	http_header h = { "Content-Type", METRICS_CONTENT_TYPE };
	if (a->opt.metrics == NULL || metrics_render(a->opt.metrics, &text, &len) != 0) {
		respond_error(req, 500, "internal", "cannot render metrics", NULL, 0, 0);
		return;
	}
	http_respond(req, 200, &h, 1, text, len, 1, 0, free_body, text);
}

static void method_not_allowed(http_request *req, const char *allow)
{
	http_header h = { "Allow", allow };
	respond_error(req, 405, "method_not_allowed", "method not allowed here", &h, 1, 0);
}

static int api_on_headers(http_handler *self, http_request *req)
{
	struct api *a = (struct api *)self;
	struct req_state *rs = calloc(1, sizeof(*rs));

	if (rs == NULL) {
		respond_error(req, 500, "internal", "out of memory", NULL, 0, 1);
		return HTTP_BODY_REJECT;
	}
	rs->api = a;
	rs->fd = -1;
	req->data = rs;
	if (strcmp(req->path, "/v1/posts") == 0 && strcmp(req->method, "POST") == 0) {
		rs->kind = REQ_UPLOAD;
		if (a->stopping) {
			static const http_header retry[] = { { "Retry-After", "5" } };
			respond_error(req, 503, "overloaded", "the server is stopping", retry, 1, 1);
			return HTTP_BODY_REJECT;
		}
		return upload_headers(a, req, rs);
	}
	if (req->content_length != HTTP_LENGTH_UNKNOWN && req->content_length > SMALL_BODY_MAX) {
		respond_error(req, 413, "too_large", "request body too large", NULL, 0, 1);
		return HTTP_BODY_REJECT;
	}
	return HTTP_BODY_ACCEPT;
}

static int api_on_body(http_handler *self, http_request *req, const char *data, size_t len)
{
	struct req_state *rs = req->data;
	(void)self;
	rs->body_bytes += len;
	if (rs->kind == REQ_UPLOAD)
		return upload_body(rs, req, data, len);
	if (rs->body_bytes > SMALL_BODY_MAX) {
		respond_error(req, 413, "too_large", "request body too large", NULL, 0, 1);
		return 1;
	}
	return 0; /* other requests' bodies are read and ignored */
}

static void api_on_request(http_handler *self, http_request *req)
{
	struct api *a = (struct api *)self;
	struct req_state *rs = req->data;
	const char *path = req->path;
	int get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;

	if (rs->kind == REQ_UPLOAD) {
		upload_complete(a, req, rs);
		return;
	}
	if (strcmp(path, "/healthz") == 0) {
		static const char ok[] = "{\"status\":\"ok\"}";
		http_header h = { "Content-Type", "application/json" };
		if (!get)
			method_not_allowed(req, "GET, HEAD");
		else
			http_respond(req, 200, &h, 1, ok, sizeof(ok) - 1, req->method[0] == 'G', 0, NULL,
			             NULL);
		return;
	}
	if (strcmp(path, "/metrics") == 0) {
		if (!get)
			method_not_allowed(req, "GET, HEAD");
		else
			serve_metrics(a, req);
		return;
	}
	if (strcmp(path, "/v1/posts") == 0) {
		if (!get) {
			method_not_allowed(req, "GET, HEAD, POST");
			return;
		}
		if (authenticate(a, req, rs) == 0)
			list_posts(a, req);
		return;
	}
	if (strncmp(path, "/v1/posts/", 10) == 0 && is_post_id(path + 10)) {
		int del = strcmp(req->method, "DELETE") == 0;
		if (!get && !del) {
			method_not_allowed(req, "GET, HEAD, DELETE");
			return;
		}
		if (authenticate(a, req, rs) != 0)
			return;
		if (del)
			delete_post(a, req, rs, path + 10);
		else
			get_post(a, req, path + 10);
		return;
	}
	respond_error(req, 404, "not_found", "no such resource", NULL, 0, 0);
}

static void api_on_complete(http_handler *self, http_request *req, const http_completion *done)
{
	(void)self;
	(void)done;
	req_state_free(req->data);
	req->data = NULL;
}

static void api_on_abort(http_handler *self, http_request *req)
{
	struct req_state *rs = req->data;
	(void)self;
	if (rs != NULL && rs->kind == REQ_UPLOAD)
		log_info("api: upload from %s abandoned after %llu bytes", rs->authed ? rs->who.handle
		                                                                      : "?",
		         (unsigned long long)rs->body_bytes);
	req_state_free(rs);
	req->data = NULL;
}

/* ---- start, sweep, stop ---- */

static void on_sweep_timer(uv_timer_t *t)
{
	struct api *a = t->data;
	struct job *j;
	if (a->stopping)
		return;
	j = calloc(1, sizeof(*j));
	if (j == NULL)
		return;
	j->kind = JOB_SWEEP;
	if (queue_job(a, j) != 0)
		free(j);
}

/* Removes upload files a previous run left behind (it crashed or was
 * killed mid-upload). */
static void sweep_upload_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	unsigned n = 0;
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, UPLOAD_PREFIX, strlen(UPLOAD_PREFIX)) == 0 &&
		    unlinkat(dirfd(d), e->d_name, 0) == 0)
			n++;
	}
	closedir(d);
	if (n > 0)
		log_warn("api: removed %u upload files left by an earlier run in %s", n, dir);
}

static int define_metrics(struct api *a, metrics *m)
{
	static const double seconds[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 };
	static const char *const stages[4] = { "stage=\"objects\"", "stage=\"feed\"",
		                                "stage=\"pages\"", "stage=\"commit\"" };
	const size_t nb = sizeof(seconds) / sizeof(seconds[0]);

	a->m_created = metrics_counter(m, "sayin_api_posts_total", "Uploads by outcome.",
	                               "result=\"created\"");
	a->m_replayed = metrics_counter(m, "sayin_api_posts_total", "Uploads by outcome.",
	                                "result=\"replayed\"");
	a->m_rejected = metrics_counter(m, "sayin_api_posts_total", "Uploads by outcome.",
	                                "result=\"rejected\"");
	a->m_failed = metrics_counter(m, "sayin_api_posts_total", "Uploads by outcome.",
	                              "result=\"failed\"");
	a->m_overloaded = metrics_counter(m, "sayin_api_posts_total", "Uploads by outcome.",
	                                  "result=\"overloaded\"");
	a->m_deleted = metrics_counter(m, "sayin_api_deletes_total", "Posts deleted.", NULL);
	a->m_upload_bytes = metrics_counter(m, "sayin_api_upload_bytes_total",
	                                    "Request body bytes received by POST /v1/posts.", NULL);
	a->m_media_s = metrics_histogram(m, "sayin_publish_media_seconds",
	                                 "Decode, loudness, encodes and waveform per post.", NULL,
	                                 seconds, nb);
	a->m_publish_s = metrics_histogram(m, "sayin_publish_transaction_seconds",
	                                   "The publish transaction per post, commit included.",
	                                   NULL, seconds, nb);
	for (int i = 0; i < 4; i++)
		a->m_stage_s[i] = metrics_histogram(m, "sayin_publish_stage_seconds",
		                                    "The publish transaction by stage.", stages[i],
		                                    seconds, nb);
	if (a->m_created < 0 || a->m_replayed < 0 || a->m_rejected < 0 || a->m_failed < 0 ||
	    a->m_overloaded < 0 || a->m_deleted < 0 || a->m_upload_bytes < 0 || a->m_media_s < 0 ||
	    a->m_publish_s < 0 || a->m_stage_s[0] < 0 || a->m_stage_s[1] < 0 ||
	    a->m_stage_s[2] < 0 || a->m_stage_s[3] < 0)
		return -ENOMEM;
	return 0;
}

static double gauge_slots(void *arg)
{
	const struct api *a = arg;
	return (double)__atomic_load_n(&a->slots_used, __ATOMIC_RELAXED);
}

static double gauge_capacity(void *arg)
{
	const struct api *a = arg;
	return (double)(a->opt.workers + a->opt.queue);
}

int api_start(uv_loop_t *loop, store *st, const pipeline *pipe, const api_options *opt,
              api **out, char *err, size_t errlen)
{
	struct api *a = calloc(1, sizeof(*a));
	http_limits limits = { 0 };
	int rc;

	if (a == NULL)
		return -ENOMEM;
	a->handler.on_request = api_on_request;
	a->handler.on_complete = api_on_complete;
	a->handler.on_headers = api_on_headers;
	a->handler.on_body = api_on_body;
	a->handler.on_abort = api_on_abort;
	a->loop = loop;
	a->st = st;
	a->pipe = pipe;
	a->opt = *opt;
	snprintf(a->upload_dir, sizeof(a->upload_dir), "%s", opt->upload_dir);
	if (mkdir(a->upload_dir, 0700) != 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "cannot create upload directory %s: %s", a->upload_dir,
		         strerror(errno));
		free(a);
		return rc;
	}
	sweep_upload_dir(a->upload_dir);
	if (opt->metrics != NULL) {
		rc = define_metrics(a, opt->metrics);
		if (rc == 0 &&
		    (metrics_gauge_fn(opt->metrics, "sayin_api_uploads_accepted",
		                      "Uploads accepted and not yet answered (encoding or queued).",
		                      NULL, gauge_slots, a) < 0 ||
		     metrics_gauge_fn(opt->metrics, "sayin_api_uploads_capacity",
		                      "workers + queue: beyond it POST answers 503.", NULL,
		                      gauge_capacity, a) < 0))
			rc = -ENOMEM;
		a->shard = rc == 0 ? metrics_shard_new(opt->metrics) : NULL;
		if (a->shard == NULL) {
			snprintf(err, errlen, "cannot define metrics");
			free(a);
			return -ENOMEM;
		}
	}
	rc = http_server_start(loop, opt->listen, 0, &limits, &a->handler, &a->server);
	if (rc != 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", opt->listen, sayin_strerror(rc));
		free(a);
		return rc;
	}
	uv_timer_init(loop, &a->sweep_timer);
	a->sweep_timer.data = a;
	uv_timer_start(&a->sweep_timer, on_sweep_timer, 1000, SWEEP_INTERVAL_MS);
	*out = a;
	return 0;
}

int api_port(const api *a)
{
	return http_server_port(a->server);
}

static void on_timer_closed(uv_handle_t *h)
{
	struct api *a = h->data;
	void (*cb)(void *) = a->on_stopped;
	void *arg = a->stopped_arg;
	free(a);
	if (cb != NULL)
		cb(arg);
}

/* Frees the api once the server has stopped and no job is left. */
static void maybe_stopped(struct api *a)
{
	if (!a->stopping || !a->server_stopped || a->jobs_running > 0)
		return;
	a->server_stopped = 0; /* once */
	a->stopping = 2;
	uv_close((uv_handle_t *)&a->sweep_timer, on_timer_closed);
}

static void on_server_stopped(void *arg)
{
	struct api *a = arg;
	a->server_stopped = 1;
	maybe_stopped(a);
}

void api_stop(api *a, uint64_t grace_ms, void (*on_stopped)(void *arg), void *arg)
{
	if (a->stopping)
		return;
	a->stopping = 1;
	a->on_stopped = on_stopped;
	a->stopped_arg = arg;
	uv_timer_stop(&a->sweep_timer);
	http_server_stop(a->server, grace_ms, on_server_stopped, a);
}

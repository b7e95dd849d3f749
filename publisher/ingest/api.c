/* api: the ingest API's routes, JSON responses, reads, deletions, start and stop. */
#include "ingest/api.h"

#include "core/error.h"
#include "core/jsonstore.h"
#include "core/log.h"
#include "core/tls.h"
#include "deliver/crosspost.h"
#include "deliver/outbox.h"
#include "deliver/payload.h"
#include "deliver/social/social.h"
#include "ingest/internal.h"
#include "media/media.h"
#include "render/feed.h"
#include "render/record.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define SMALL_BODY_MAX 65536      /* any other request's body */
#define LIST_DEFAULT 20
#define LIST_MAX 100
#define SWEEP_INTERVAL_MS (3600u * 1000)

/* ---- responses ---- */

static void free_body(void *arg)
{
	free(arg);
}

/* Every POST /v1/posts is counted once in sayin_api_posts_total: created
 * and replayed where they happen, overloaded with its 503, too_slow with its
 * 408, throttled with its 429, and every other
 * answer here, by status: 4xx rejected (the request's fault: headers, body,
 * text or recording), 5xx failed (ours). */
static void count_upload_outcome(http_request *req, int status)
{
	struct req_state *rs = req->data;

	if (rs == NULL || rs->kind != REQ_UPLOAD)
		return;
	rs->receiving = 0; /* answered: the pace timer leaves it alone */
	if (status == 201 && rs->body_end_ns != 0)
		metrics_observe(rs->api->shard, rs->api->m_wait_s,
		                (double)(uv_hrtime() - rs->body_end_ns) / 1e9);
	/* 408 (too_slow) and 429 (throttled) are counted where they happen. */
	if (status == 201 || status == 503 || status == 408 || status == 429)
		return;
	metrics_add(rs->api->shard, status < 500 ? rs->api->m_rejected : rs->api->m_failed, 1);
}

void api__respond_owned(http_request *req, int status, char *body, const http_header *extra,
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

void api__respond_static(http_request *req, int status, const char *body,
                         const http_header *extra, size_t n_extra)
{
	http_header h[8];
	size_t n = 0;

	count_upload_outcome(req, status);
	h[n++] = (http_header){ "Content-Type", "application/json" };
	h[n++] = (http_header){ "Cache-Control", "no-store" };
	for (size_t i = 0; i < n_extra && n < 8; i++)
		h[n++] = extra[i];
	http_respond(req, status, h, n, body, strlen(body), strcmp(req->method, "HEAD") != 0, 0,
	             NULL, NULL);
}

/* {"error": {"code", "message"}} with the status. */
void api__respond_error(http_request *req, int status, const char *code, const char *message,
                          const http_header *extra, size_t n_extra, int close_after)
{
	json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", message);
	char *body = j ? jsonstore_dump_flags(j, JSON_COMPACT | JSON_PRESERVE_ORDER, NULL) : NULL;
	json_decref(j);
	log_debug("api: %s %s -> %d %s: %s", req->method, req->path, status, code, message);
	api__respond_owned(req, status, body, extra, n_extra, close_after);
}

void api__respond_json(http_request *req, int status, json_t *j, const http_header *extra,
                         size_t n_extra)
{
	char *body = j ? jsonstore_dump_flags(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6), NULL)
	               : NULL;
	api__respond_owned(req, status, body, extra, n_extra, 0);
}

/* The status and code for an error of the pipeline or of publish_delete. */
void api__error_status(int rc, int input_fault, int *status, const char **code)
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


void api__release_slot(struct req_state *rs)
{
	struct api *a = rs->api;

	rs->receiving = 0;
	if (!rs->has_slot)
		return;
	rs->has_slot = 0;
	if (rs->over_limit)
		a->retries_used--;
	else
		a->slots_used--;
	if (rs->prev_holder != NULL)
		rs->prev_holder->next_holder = rs->next_holder;
	else
		a->holders = rs->next_holder;
	if (rs->next_holder != NULL)
		rs->next_holder->prev_holder = rs->prev_holder;
	rs->prev_holder = rs->next_holder = NULL;
}

static void req_state_free(struct req_state *rs)
{
	if (rs == NULL)
		return;
	api__upload_discard(rs);
	api__release_slot(rs);
	EVP_MD_CTX_free(rs->sha);
	multipart_free(rs->mp);
	buf_free(&rs->text);
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
char *api__query_param(const char *target, const char *name, size_t *len, int *bad)
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
int api__authenticate(struct api *a, http_request *req, struct req_state *rs)
{
	static const http_header challenge[] = { { "WWW-Authenticate", "Bearer realm=\"sayin\"" } };
	const char *h = http_request_header(req, "Authorization");
	store_txn *txn;
	int rc;

	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0) {
		api__respond_error(req, 401, "unauthorized", "an Authorization: Bearer token is required",
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
		api__respond_error(req, 401, "unauthorized", "the token is not valid (revoked or mistyped)",
		                   challenge, 1, 0);
		return -1;
	}
	if (rc != 0) {
		log_error("api: token check failed: %s", sayin_strerror(rc));
		api__respond_error(req, 500, "internal", sayin_strerror(rc), NULL, 0, 0);
		return -1;
	}
	rs->authed = 1;
	return 0;
}

/* ---- reads and deletions ---- */

static json_t *post_view(const pipeline *p, const json_t *rec)
{
	char path[256], url[1024];
	record_view r;
	json_t *v;

	/* The API shows any post it can name, even one a page could not render. */
	record_view_read(rec, &r);
	if (r.id == NULL || r.author == NULL || r.audio_sha256 == NULL)
		return NULL;
	v = json_object();
	if (v == NULL)
		return NULL;
	json_object_set_new(v, "id", json_string(r.id));
	json_object_set_new(v, "author", json_string(r.author));
	if (r.seq > 0)
		json_object_set_new(v, "seq", json_integer((json_int_t)r.seq));
	json_object_set_new(v, "text", json_string(r.text));
	if (r.date != NULL)
		json_object_set_new(v, "date_published", json_string(r.date));
	json_object_set_new(v, "duration_in_seconds", json_real(r.duration));
	json_object_set_new(v, "size_in_bytes", json_integer(r.audio_size));
	/* The absolute URLs, in this order; an absent rendition has none. */
	const struct {
		const char *key;
		int (*path)(char *, size_t, const char *);
		const char *arg;
	} urls[] = {
		{ "url", feed_path_post, r.id },
		{ "audio_url", feed_path_audio, r.audio_sha256 },
		{ "feed_url", feed_path_feed, r.author },
		{ "fallback_url", feed_path_fallback, r.fallback_sha256 },
		{ "waveform_url", feed_path_waveform, r.waveform_sha256 },
	};
	for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
		if (urls[i].arg == NULL)
			continue;
		urls[i].path(path, sizeof(path), urls[i].arg);
		snprintf(url, sizeof(url), "%s%s", p->base_url, path);
		json_object_set_new(v, urls[i].key, json_string(url));
	}
	if (r.loudness != NULL)
		json_object_set(v, "loudness", (json_t *)r.loudness);
	return v;
}

struct delivery_scan {
	const char *post;
	int cdn_pending, cdn_parked;
	json_t *crosspost; /* network -> state */
};

static int scan_job(void *arg, const char *id, const outbox_job_view *job)
{
	struct delivery_scan *d = arg;
	payload_view pv;
	(void)id;
	payload_read(job->payload, &pv);
	if (pv.post == NULL || strcmp(pv.post, d->post) != 0)
		return 0;
	if (social_driver_find(job->target) != NULL) {
		json_object_set_new(d->crosspost, job->target,
		                    json_pack("{s:s, s:I, s:s}", "state",
		                              job->parked ? "needs action" : "pending", "attempts",
		                              (json_int_t)job->attempts, "last_error", job->last_error));
	} else if (job->parked) {
		d->cdn_parked++;
	} else {
		d->cdn_pending++;
	}
	return 0;
}

/* A cross-post done as the API shows it: the fields on record, then
 * "state": "done". */
static json_t *crosspost_done_json(const crosspost_done *d)
{
	json_t *j = json_object();

	if (d->network != NULL)
		json_object_set_new(j, "network", json_string(d->network));
	if (d->remote_id != NULL)
		json_object_set_new(j, "remote_id", json_string(d->remote_id));
	if (d->remote_url != NULL)
		json_object_set_new(j, "remote_url", json_string(d->remote_url));
	json_object_set_new(j, "found", json_boolean(d->found));
	json_object_set_new(j, "done_ms", json_integer((json_int_t)d->done_ms));
	json_object_set_new(j, "state", json_string("done"));
	return j;
}

/* The post's delivery: the CDN jobs still waiting (none: delivered, or no
 * CDN configured) and each cross-post, done (with the remote post) or not. */
static json_t *delivery_view(store_txn *txn, const char *id)
{
	struct delivery_scan d = { .post = id, .crosspost = json_object() };
	for (size_t i = 0; social_drivers[i] != NULL; i++) {
		crosspost_done done;
		if (crosspost_done_get(txn, id, social_drivers[i]->name, &done) == 0) {
			json_object_set_new(d.crosspost, social_drivers[i]->name,
			                    crosspost_done_json(&done));
			crosspost_done_release(&done);
		}
	}
	/* O(queue depth): the queue is short unless a target is down, and
	 * this is a per-post read, not a fan's path. */
	outbox_each_in(txn, scan_job, &d);
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
			jsonstore_parse(rec, len, &j);
		v = j ? post_view(a->pipe, j) : NULL;
		if (v != NULL)
			json_object_set_new(v, "delivery", delivery_view(txn, id));
		store_txn_abort(txn);
	}
	if (rc == SAYIN_ENOTFOUND) {
		api__respond_error(req, 404, "not_found", "no such post", NULL, 0, 0);
		json_decref(v);
		json_decref(j);
		return;
	}
	if (rc != 0 || v == NULL) {
		api__respond_error(req, 500, "internal", rc ? sayin_strerror(rc) : "corrupt post record",
		                   NULL, 0, 0);
	} else {
		api__respond_json(req, 200, v, NULL, 0);
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
	json_t *j = NULL, *v;

	jsonstore_parse(record, len, &j);
	v = j ? post_view(c->pipe, j) : NULL;
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
	char *author = api__query_param(req->target, "author", &len, &bad1);
	char *before_s = api__query_param(req->target, "before", &len, &bad2);
	char *limit_s = api__query_param(req->target, "limit", &len, &bad3);
	uint64_t before = UINT64_MAX, limit = LIST_DEFAULT;
	store_txn *txn;
	const void *rec;
	size_t rlen;

	if (author == NULL || bad1 || bad2 || bad3 || !publish_valid_handle(author) ||
	    (before_s != NULL && parse_u64(before_s, &before) != 0) ||
	    (limit_s != NULL && (parse_u64(limit_s, &limit) != 0 || limit < 1 || limit > LIST_MAX))) {
		api__respond_error(req, 400, "bad_request",
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
		api__respond_error(req, 404, "not_found", "no such author", NULL, 0, 0);
	} else if (rc != 0 || c.posts == NULL) {
		api__respond_error(req, 500, "internal", sayin_strerror(rc), NULL, 0, 0);
	} else {
		json_t *r = json_pack("{s:O}", "posts", c.posts);
		if (r != NULL && json_array_size(c.posts) == limit && c.last_seq > 1) {
			char next[128];
			snprintf(next, sizeof(next), "/v1/posts?author=%s&before=%llu&limit=%llu", author,
			         (unsigned long long)c.last_seq, (unsigned long long)limit);
			json_object_set_new(r, "next_url", json_string(next));
		}
		api__respond_json(req, 200, r, NULL, 0);
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
		api__respond_error(req, 500, "internal", "out of memory", NULL, 0, 0);
		return;
	}
	j->kind = JOB_DELETE;
	j->req = req;
	snprintf(j->author, sizeof(j->author), "%s", rs->who.handle);
	snprintf(j->id, sizeof(j->id), "%s", id);
	/* A write transaction waits for the publisher's other writers: off
	 * the loop, like the encodes. */
	if (api__queue_job(a, j) != 0) {
		api__respond_error(req, 500, "internal", "cannot queue the job", NULL, 0, 0);
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
	if (a->metrics == NULL || metrics_render(a->metrics, &text, &len) != 0) {
		api__respond_error(req, 500, "internal", "cannot render metrics", NULL, 0, 0);
		return;
	}
	http_respond(req, 200, &h, 1, text, len, 1, 0, free_body, text);
}

static void method_not_allowed(http_request *req, const char *allow)
{
	http_header h = { "Allow", allow };
	api__respond_error(req, 405, "method_not_allowed", "method not allowed here", &h, 1, 0);
}

static int api_on_headers(http_handler *self, http_request *req)
{
	struct api *a = (struct api *)self;
	struct req_state *rs = calloc(1, sizeof(*rs));

	if (rs == NULL) {
		api__respond_error(req, 500, "internal", "out of memory", NULL, 0, 1);
		return HTTP_BODY_REJECT;
	}
	rs->api = a;
	rs->req = req;
	rs->fd = -1;
	req->data = rs;
	if (strcmp(req->path, "/v1/posts") == 0 && strcmp(req->method, "POST") == 0) {
		rs->kind = REQ_UPLOAD;
		if (a->stopping) {
			static const http_header retry[] = { { "Retry-After", "5" } };
			api__respond_error(req, 503, "overloaded", "the server is stopping", retry, 1, 1);
			return HTTP_BODY_REJECT;
		}
		return api__upload_headers(a, req, rs);
	}
	if (req->content_length != HTTP_LENGTH_UNKNOWN && req->content_length > SMALL_BODY_MAX) {
		api__respond_error(req, 413, "too_large", "request body too large", NULL, 0, 1);
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
		return api__upload_body(rs, req, data, len);
	if (rs->body_bytes > SMALL_BODY_MAX) {
		api__respond_error(req, 413, "too_large", "request body too large", NULL, 0, 1);
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
		rs->body_end_ns = uv_hrtime();
		api__upload_complete(a, req, rs);
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
		if (api__authenticate(a, req, rs) == 0)
			list_posts(a, req);
		return;
	}
	if (strncmp(path, "/v1/posts/", 10) == 0 && is_post_id(path + 10)) {
		int del = strcmp(req->method, "DELETE") == 0;
		if (!get && !del) {
			method_not_allowed(req, "GET, HEAD, DELETE");
			return;
		}
		if (api__authenticate(a, req, rs) != 0)
			return;
		if (del)
			delete_post(a, req, rs, path + 10);
		else
			get_post(a, req, path + 10);
		return;
	}
	api__respond_error(req, 404, "not_found", "no such resource", NULL, 0, 0);
}

static void api_on_complete(http_handler *self, http_request *req, const http_completion *done)
{
	struct api *a = (struct api *)self;

	if (accesslog_enabled())
		accesslog_write(a->edges, req, done, NULL);
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
	if (api__queue_job(a, j) != 0)
		free(j);
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
	a->m_too_slow = metrics_counter(m, "sayin_api_posts_total", "Uploads by outcome.",
	                                "result=\"too_slow\"");
	a->m_throttled = metrics_counter(m, "sayin_api_posts_total", "Uploads by outcome.",
	                                 "result=\"throttled\"");
	a->m_cut_rate = metrics_counter(m, "sayin_api_uploads_cut_total",
	                                "Upload bodies cut with 408, by the limit they broke.",
	                                "limit=\"min_rate\"");
	a->m_cut_deadline = metrics_counter(m, "sayin_api_uploads_cut_total",
	                                    "Upload bodies cut with 408, by the limit they broke.",
	                                    "limit=\"deadline\"");
	a->m_deleted = metrics_counter(m, "sayin_api_deletes_total", "Posts deleted.", NULL);
	a->m_upload_bytes = metrics_counter(m, "sayin_api_upload_bytes_total",
	                                    "Request body bytes received by POST /v1/posts.", NULL);
	a->m_media_s = metrics_histogram(m, "sayin_publish_media_seconds",
	                                 "Decode, loudness, encodes and waveform per post.", NULL,
	                                 seconds, nb);
	a->m_publish_s = metrics_histogram(m, "sayin_publish_transaction_seconds",
	                                   "The publish transaction per post, commit included.",
	                                   NULL, seconds, nb);
	a->m_wait_s = metrics_histogram(m, "sayin_api_publish_seconds",
	                                "What an author waits for: from the upload's last body "
	                                "byte to its 201.",
	                                NULL, seconds, nb);
	for (int i = 0; i < 4; i++)
		a->m_stage_s[i] = metrics_histogram(m, "sayin_publish_stage_seconds",
		                                    "The publish transaction by stage.", stages[i],
		                                    seconds, nb);
	if (a->m_created < 0 || a->m_replayed < 0 || a->m_rejected < 0 || a->m_failed < 0 ||
	    a->m_overloaded < 0 || a->m_too_slow < 0 || a->m_throttled < 0 || a->m_cut_rate < 0 ||
	    a->m_cut_deadline < 0 || a->m_deleted < 0 || a->m_upload_bytes < 0 || a->m_media_s < 0 ||
	    a->m_publish_s < 0 || a->m_wait_s < 0 || a->m_stage_s[0] < 0 || a->m_stage_s[1] < 0 ||
	    a->m_stage_s[2] < 0 || a->m_stage_s[3] < 0)
		return -ENOMEM;
	return 0;
}

static double gauge_slots(void *arg)
{
	const struct api *a = arg;
	return (double)__atomic_load_n(&a->slots_used, __ATOMIC_RELAXED);
}

static double gauge_retries(void *arg)
{
	const struct api *a = arg;
	return (double)__atomic_load_n(&a->retries_used, __ATOMIC_RELAXED);
}

/* The requests the HTTP core refused itself (malformed, over a limit):
 * read on the loop thread that serves /metrics, before or after start. */
static double counter_bad_requests(void *arg)
{
	const struct api *a = arg;
	http_stats st = { 0 };

	if (a->server != NULL)
		http_server_stats(a->server, &st);
	return (double)st.bad_requests;
}

static double accept_errors(const struct api *a, size_t offset)
{
	http_stats st = { 0 };
	uint64_t v;

	if (a->server != NULL)
		http_server_stats(a->server, &st);
	memcpy(&v, (const char *)&st + offset, sizeof(v));
	return (double)v;
}

static double accept_emfile(void *arg)
{
	return accept_errors(arg, offsetof(http_stats, accept_errors_emfile));
}

static double accept_enfile(void *arg)
{
	return accept_errors(arg, offsetof(http_stats, accept_errors_enfile));
}

static double accept_other(void *arg)
{
	return accept_errors(arg, offsetof(http_stats, accept_errors_other));
}

static int define_accept_errors(struct api *a, metrics *m)
{
	static const char help[] =
		"accept() failures by errno: EMFILE/ENFILE pause accepting for 100 ms.";

	if (metrics_counter_fn(m, "sayin_api_accept_errors_total", help, "reason=\"EMFILE\"",
	                       accept_emfile, a) < 0 ||
	    metrics_counter_fn(m, "sayin_api_accept_errors_total", help, "reason=\"ENFILE\"",
	                       accept_enfile, a) < 0 ||
	    metrics_counter_fn(m, "sayin_api_accept_errors_total", help, "reason=\"other\"",
	                       accept_other, a) < 0)
		return -ENOMEM;
	return 0;
}

/* 1 for each of the decoder sandbox's protections that applied in the
 * latest decoder child: an alert on 0 catches a kernel or a unit file that
 * took one away. arg is the enum media_protection, cast. */
static double gauge_protection(void *arg)
{
	return media_protection_applied((enum media_protection)(uintptr_t)arg) ? 1 : 0;
}

static int define_protection_gauges(metrics *m)
{
	char labels[64];

	for (int p = 0; p < MEDIA_PROTECTION_COUNT; p++) {
		snprintf(labels, sizeof(labels), "protection=\"%s\"", media_protection_name(p));
		if (metrics_gauge_fn(m, "sayin_decoder_sandbox_protection",
		                     "1 when the decoder sandbox's protection applied in the latest "
		                     "decoder child (0 before any ran).",
		                     labels, gauge_protection, (void *)(uintptr_t)p) < 0)
			return -ENOMEM;
	}
	return 0;
}

static double gauge_capacity(void *arg)
{
	const struct api *a = arg;
	return (double)a->capacity;
}

int api_options_read_limits(const config *cfg, api_options *opt, char *err, size_t errlen)
{
	uint64_t per_author, retry_slots;
	const uint64_t day_ms = 24ull * 3600 * 1000;

	/* By default no author holds more than half the slots, so another
	 * always finds room. */
	per_author = (opt->workers + opt->queue) / 2;
	if (per_author < 1)
		per_author = 1;
	if ((config_get(cfg, "upload-per-author") != NULL &&
	     config_get_u64(cfg, "upload-per-author", 1, 100000, &per_author, err, errlen) != 0) ||
	    config_get_u64(cfg, "upload-retry-slots", 0, 100000, &retry_slots, err, errlen) != 0 ||
	    config_get_size(cfg, "upload-min-rate", 1, 1ull << 30, &opt->min_rate, err, errlen) != 0 ||
	    config_get_u64(cfg, "upload-rate-window-ms", 10, day_ms, &opt->rate_window_ms, err,
	                   errlen) != 0 ||
	    config_get_u64(cfg, "upload-rate-grace-ms", 0, day_ms, &opt->rate_grace_ms, err,
	                   errlen) != 0 ||
	    config_get_u64(cfg, "upload-deadline-ms", 0, day_ms, &opt->deadline_ms, err, errlen) != 0)
		return SAYIN_ECONFIG;
	opt->per_author = (unsigned)per_author;
	opt->retry_slots = (unsigned)retry_slots;
	return 0;
}

int api_start(uv_loop_t *loop, store *st, const pipeline *pipe, const api_options *opt,
              api **out, char *err, size_t errlen)
{
	struct api *a = calloc(1, sizeof(*a));
	http_limits limits = { 0 };
	int rc;

	if (a == NULL)
		return -ENOMEM;
	limits.handshake_timeout_ms = opt->handshake_timeout_ms;
	a->handler.on_request = api_on_request;
	a->handler.on_complete = api_on_complete;
	a->handler.on_headers = api_on_headers;
	a->handler.on_body = api_on_body;
	a->handler.on_abort = api_on_abort;
	a->loop = loop;
	a->st = st;
	a->pipe = pipe;
	a->max_upload = opt->max_upload;
	a->capacity = opt->workers + opt->queue;
	a->per_author = opt->per_author;
	a->retry_slots = opt->retry_slots;
	a->min_rate = opt->min_rate;
	a->rate_window_ms = opt->rate_window_ms;
	a->rate_grace_ms = opt->rate_grace_ms;
	a->deadline_ms = opt->deadline_ms;
	if (a->per_author == 0 || a->min_rate == 0 || a->rate_window_ms == 0) {
		snprintf(err, errlen, "api_start: per_author, min_rate and rate_window_ms must be set");
		free(a);
		return SAYIN_EINVAL;
	}
	a->metrics = opt->metrics;
	a->edges = opt->edges;
	a->on_commit = opt->on_commit;
	a->on_commit_arg = opt->on_commit_arg;
	snprintf(a->upload_dir, sizeof(a->upload_dir), "%s", opt->upload_dir);
	if (mkdir(a->upload_dir, 0700) != 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "cannot create upload directory %s: %s", a->upload_dir,
		         strerror(errno));
		free(a);
		return rc;
	}
	api__sweep_upload_dir(a->upload_dir);
	if (opt->metrics != NULL) {
		rc = define_metrics(a, opt->metrics);
		if (rc == 0 &&
		    (metrics_gauge_fn(opt->metrics, "sayin_api_uploads_accepted",
		                      "Uploads accepted and not yet answered (encoding or queued).",
		                      NULL, gauge_slots, a) < 0 ||
		     metrics_gauge_fn(opt->metrics, "sayin_api_uploads_capacity",
		                      "workers + queue: beyond it POST answers 503.", NULL,
		                      gauge_capacity, a) < 0 ||
		     metrics_gauge_fn(opt->metrics, "sayin_api_upload_retries_accepted",
		                      "Retries of a known Idempotency-Key let in past the capacity.",
		                      NULL, gauge_retries, a) < 0 ||
		     metrics_counter_fn(opt->metrics, "sayin_api_bad_requests_total",
		                        "Malformed or over-limit requests the HTTP core answered "
		                        "itself (400, 413, 414, 431, 505).",
		                        NULL, counter_bad_requests, a) < 0 ||
		     define_accept_errors(a, opt->metrics) < 0 ||
		     define_protection_gauges(opt->metrics) < 0))
			rc = -ENOMEM;
		a->shard = rc == 0 ? metrics_shard_new(opt->metrics) : NULL;
		if (a->shard == NULL) {
			snprintf(err, errlen, "cannot define metrics");
			free(a);
			return -ENOMEM;
		}
	}
	rc = http_server_start_tls(loop, opt->listen, 0, &limits, opt->tls, &a->handler, &a->server);
	if (rc != 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", opt->listen, sayin_strerror(rc));
		free(a);
		return rc;
	}
	uv_timer_init(loop, &a->sweep_timer);
	a->sweep_timer.data = a;
	uv_timer_init(loop, &a->pace_timer);
	a->pace_timer.data = a;
	uv_timer_start(&a->sweep_timer, on_sweep_timer, 1000, SWEEP_INTERVAL_MS);
	*out = a;
	return 0;
}

int api_tls_configure(const config *cfg, int insecure_http, struct tls_server **out, char *err,
                      size_t errlen)
{
	const char *listen = config_get(cfg, "api-listen");
	tls_options topt = { .cert_file = config_get(cfg, "api-tls-cert"),
		             .key_file = config_get(cfg, "api-tls-key"),
		             .cert_setting = "--api-tls-cert",
		             .key_setting = "--api-tls-key" };
	int loopback;

	*out = NULL;
	if (topt.cert_file == NULL && topt.key_file == NULL) {
		loopback = http_listen_is_loopback(listen);
		if (loopback == 0 && !insecure_http) {
			snprintf(err, errlen,
			         "--api-listen %s is not a loopback address, and bearer tokens must not "
			         "cross a network in clear: give --api-tls-cert and --api-tls-key, or "
			         "--insecure-http when a TLS proxy in front terminates HTTPS",
			         listen);
			return SAYIN_ECONFIG;
		}
		return 0; /* a bad address is reported where it is bound */
	}
	if (topt.cert_file == NULL || topt.key_file == NULL) {
		snprintf(err, errlen,
		         "--api-tls-cert and --api-tls-key go together: %s is set, %s is not",
		         topt.cert_file != NULL ? "--api-tls-cert" : "--api-tls-key",
		         topt.cert_file != NULL ? "--api-tls-key" : "--api-tls-cert");
		return SAYIN_ECONFIG;
	}
	if (config_get_ranged(cfg, "tls-ticket-rotate-s", &topt.ticket_rotate_s, err, errlen) != 0)
		return SAYIN_ECONFIG;
	return tls_server_new(&topt, out, err, errlen);
}

int api_port(const api *a)
{
	return http_server_port(a->server);
}

static void on_pace_timer_closed(uv_handle_t *h)
{
	struct api *a = h->data;
	void (*cb)(void *) = a->on_stopped;
	void *arg = a->stopped_arg;
	free(a);
	if (cb != NULL)
		cb(arg);
}

static void on_sweep_timer_closed(uv_handle_t *h)
{
	struct api *a = h->data;
	uv_close((uv_handle_t *)&a->pace_timer, on_pace_timer_closed);
}

/* Frees the api once the server has stopped and no job is left. */
void api__maybe_stopped(struct api *a)
{
	if (!a->stopping || !a->server_stopped || a->jobs_running > 0)
		return;
	a->server_stopped = 0; /* once */
	a->stopping = 2;
	uv_close((uv_handle_t *)&a->sweep_timer, on_sweep_timer_closed);
}

static void on_server_stopped(void *arg)
{
	struct api *a = arg;
	a->server_stopped = 1;
	api__maybe_stopped(a);
}

void api_stop(api *a, uint64_t grace_ms, void (*on_stopped)(void *arg), void *arg)
{
	if (a->stopping)
		return;
	a->stopping = 1;
	a->on_stopped = on_stopped;
	a->stopped_arg = arg;
	uv_timer_stop(&a->sweep_timer);
	uv_timer_stop(&a->pace_timer);
	a->pace_timer_on = 0;
	http_server_stop(a->server, grace_ms, on_server_stopped, a);
}

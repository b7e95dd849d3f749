/* upload: POST /v1/posts streamed to a temporary file under its limits, then queued. */
#include "core/clock.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"
#include "ingest/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static int raw_audio_type(const char *ctype)
{
	return strncasecmp(ctype, "audio/", 6) == 0 || strncasecmp(ctype, "video/", 6) == 0 ||
	       strncasecmp(ctype, "application/octet-stream", 24) == 0 ||
	       strncasecmp(ctype, "application/ogg", 15) == 0;
}

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

void api__upload_discard(struct req_state *rs)
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

/* Removes upload files a previous run left behind (it crashed or was
 * killed mid-upload). */
void api__sweep_upload_dir(const char *dir)
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

static int write_audio(struct req_state *rs, http_request *req, const char *data, size_t len)
{
	int rc;

	rs->audio_bytes += len;
	if (rs->audio_bytes > rs->api->max_upload) {
		char msg[128];
		snprintf(msg, sizeof(msg), "the recording is larger than the limit of %llu bytes",
		         (unsigned long long)rs->api->max_upload);
		api__respond_error(req, 413, "too_large", msg, NULL, 0, 1);
		return -1;
	}
	if (EVP_DigestUpdate(rs->sha, data, len) != 1) {
		api__respond_error(req, 500, "internal", "hashing failed", NULL, 0, 1);
		return -1;
	}
	/* A synchronous write of at most 16 KiB into the page cache: cheaper
	 * than a round trip through the thread pool, which the encoders use. */
	rc = fileio_write(rs->fd, data, len, -1);
	if (rc != 0) {
		log_error("api: writing the upload to %s: %s", rs->path, strerror(-rc));
		api__respond_error(req, rc == -ENOSPC ? 507 : 500,
		                   rc == -ENOSPC ? "store_full" : "internal",
		                   "cannot write the upload to a temporary file", NULL, 0, 1);
		return -1;
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
			api__respond_error(c->req, 400, "bad_request", "more than one audio part", NULL, 0, 1);
			c->answered = 1;
			return 1;
		}
		rs->part = PART_AUDIO;
	} else if (strcmp(name, "text") == 0) {
		rs->part = PART_TEXT;
		rs->has_text = 1;
		buf_reset(&rs->text);
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
	if (rs->text.len + len > max)
		return -1;
	return buf_append(&rs->text, data, len) == 0 ? 0 : -ENOMEM;
}

static int on_mp_data(void *arg, const char *data, size_t len)
{
	struct part_ctx *c = arg;
	struct req_state *rs = c->rs;
	int rc;

	switch (rs->part) {
	case PART_AUDIO:
		if (write_audio(rs, c->req, data, len) != 0) {
			c->answered = 1;
			return 1;
		}
		return 0;
	case PART_TEXT:
		rc = append_text(rs, data, len);
		if (rc == -ENOMEM) {
			api__respond_error(c->req, 500, "internal", "out of memory", NULL, 0, 1);
			c->answered = 1;
			return 1;
		}
		if (rc != 0) {
			api__respond_error(c->req, 400, "bad_request", "the text is too long", NULL, 0, 1);
			c->answered = 1;
			return 1;
		}
		return 0;
	case PART_CROSSPOST:
		if (rs->crosspost_len + len > FIELD_MAX) {
			api__respond_error(c->req, 400, "bad_request", "the crosspost field is too long", NULL,
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

static void respond_overloaded(struct api *a, http_request *req, int close_after,
                               const char *why)
{
	static const http_header retry[] = { { "Retry-After", "5" } };
	metrics_add(a->shard, a->m_overloaded, 1);
	log_warn("api: %u uploads accepted and waiting, %u retries past them: answering 503 (%s)",
	         a->slots_used, a->retries_used, why);
	api__respond_error(req, 503, "overloaded", "too many recordings are being encoded; retry", retry,
	                   1, close_after);
}

/* Slots (worker or retry) the author's requests hold. O(capacity). */
static unsigned author_slots(const struct api *a, const char *handle)
{
	unsigned n = 0;
	for (const struct req_state *h = a->holders; h != NULL; h = h->next_holder) {
		if (strcmp(h->who.handle, handle) == 0)
			n++;
	}
	return n;
}

static void respond_throttled(struct api *a, http_request *req, const char *handle)
{
	static const http_header retry[] = { { "Retry-After", "5" } };
	char msg[160];

	metrics_add(a->shard, a->m_throttled, 1);
	log_warn("api: %s already has %u uploads in progress (upload-per-author): answering 429",
	         handle, a->per_author);
	snprintf(msg, sizeof(msg), "you already have %u uploads in progress, the most one author "
	         "may have; retry once one is answered", a->per_author);
	api__respond_error(req, 429, "too_many_uploads", msg, retry, 1, 1);
}

/* ---- pace: the minimum rate and the deadline of a body ---- */

/* Takes the slot counted by the caller: rs joins the holders and, until
 * its body is in, the pace timer's checks. */
static void hold_slot(struct api *a, struct req_state *rs, uint64_t max_body)
{
	uint64_t now = uv_now(a->loop);
	uint64_t length = rs->req->content_length != HTTP_LENGTH_UNKNOWN ? rs->req->content_length
	                                                                 : max_body;

	rs->has_slot = 1;
	rs->next_holder = a->holders;
	if (a->holders != NULL)
		a->holders->prev_holder = rs;
	a->holders = rs;
	rs->receiving = 1;
	rs->start_ms = now;
	rs->deadline_at = now + a->deadline_ms + length * 1000 / a->min_rate;
	if (!a->pace_timer_on) {
		uint64_t tick = a->rate_window_ms / 4;
		tick = tick < 10 ? 10 : tick > 1000 ? 1000 : tick;
		a->pace_timer_on = 1;
		uv_timer_start(&a->pace_timer, api__pace_check, tick, tick);
	}
}

static void cut_upload(struct api *a, struct req_state *rs, int deadline, uint64_t got,
                       uint64_t elapsed)
{
	char msg[256];

	metrics_add(a->shard, a->m_too_slow, 1);
	metrics_add(a->shard, deadline ? a->m_cut_deadline : a->m_cut_rate, 1);
	if (deadline) {
		snprintf(msg, sizeof(msg), "the upload was not complete within %llu ms (upload-deadline-ms "
		         "plus its length at upload-min-rate, %llu bytes/s); cut after %llu bytes",
		         (unsigned long long)(rs->deadline_at - rs->start_ms),
		         (unsigned long long)a->min_rate, (unsigned long long)rs->body_bytes);
	} else {
		snprintf(msg, sizeof(msg), "the upload sent %llu bytes in %llu ms, slower than "
		         "upload-min-rate (%llu bytes/s); cut after %llu bytes", (unsigned long long)got,
		         (unsigned long long)elapsed, (unsigned long long)a->min_rate,
		         (unsigned long long)rs->body_bytes);
	}
	log_warn("api: upload from %s cut with 408: %s", rs->who.handle, msg);
	/* Connection: close; on_complete then removes the file and frees the slot. */
	api__respond_error(rs->req, 408, "too_slow", msg, NULL, 0, 1);
}

void api__pace_check(uv_timer_t *t)
{
	struct api *a = t->data;
	uint64_t now = uv_now(a->loop);
	struct req_state *rs, *next;
	int pacing = 0;

	for (rs = a->holders; rs != NULL; rs = next) {
		next = rs->next_holder; /* a cut may free rs */
		if (!rs->receiving)
			continue;
		if (now >= rs->deadline_at) {
			cut_upload(a, rs, 1, 0, 0);
			continue;
		}
		pacing = 1;
		if (now - rs->start_ms < a->rate_grace_ms)
			continue;
		if (!rs->window_armed) {
			rs->window_armed = 1;
			rs->window_start_ms = now;
			rs->window_start_bytes = rs->body_bytes;
			continue;
		}
		uint64_t elapsed = now - rs->window_start_ms;
		uint64_t got = rs->body_bytes - rs->window_start_bytes;
		if (elapsed < a->rate_window_ms)
			continue;
		if (got * 1000 < a->min_rate * elapsed) {
			cut_upload(a, rs, 0, got, elapsed);
			continue;
		}
		rs->window_start_ms = now;
		rs->window_start_bytes = rs->body_bytes;
	}
	if (!pacing) {
		uv_timer_stop(t);
		a->pace_timer_on = 0;
	}
}

/* 1 if (handle, key) has a first request encoding, or a response on record
 * that has not expired. */
static int idem_known(struct api *a, const char *handle, const char *idem_key)
{
	for (struct job *q = a->inflight; q != NULL; q = q->next_inflight) {
		if (strcmp(q->author, handle) == 0 && strcmp(q->idem_key, idem_key) == 0)
			return 1;
	}
	return idempotency_lookup(a->st, handle, idem_key, clock_now_ms(), NULL) == 0;
}

/* POST /v1/posts, headers in: authenticate, check capacity, size and type,
 * open the temporary file. Returns HTTP_BODY_ACCEPT or REJECT. */
int api__upload_headers(struct api *a, http_request *req, struct req_state *rs)
{
	const char *ctype = http_request_header(req, "Content-Type");
	const char *idem = http_request_header(req, "Idempotency-Key");
	uint64_t cap;
	char boundary[MULTIPART_BOUNDARY_MAX + 1];
	int multipart_body = 0, rc;

	if (api__authenticate(a, req, rs) != 0)
		return HTTP_BODY_REJECT;
	if (!req->chunked && http_request_header(req, "Content-Length") == NULL) {
		api__respond_error(req, 411, "length_required",
		                   "send Content-Length or Transfer-Encoding: chunked", NULL, 0, 1);
		return HTTP_BODY_REJECT;
	}
	if (ctype == NULL) {
		api__respond_error(req, 415, "unsupported_media",
		                   "Content-Type is required: multipart/form-data or the audio's type", NULL,
		                   0, 1);
		return HTTP_BODY_REJECT;
	}
	if (multipart_boundary(ctype, boundary) == 0) {
		multipart_body = 1;
	} else if (strncasecmp(ctype, "multipart/", 10) == 0) {
		api__respond_error(req, 400, "bad_request", "multipart/form-data needs a valid boundary",
		                   NULL, 0, 1);
		return HTTP_BODY_REJECT;
	} else if (!raw_audio_type(ctype)) {
		api__respond_error(req, 415, "unsupported_media",
		                   "send multipart/form-data, or a recording as audio/*, video/* or "
		                   "application/octet-stream", NULL, 0, 1);
		return HTTP_BODY_REJECT;
	}
	cap = a->max_upload + (multipart_body ? MULTIPART_SLACK : 0);
	if (req->content_length != HTTP_LENGTH_UNKNOWN && req->content_length > cap) {
		char msg[128];
		snprintf(msg, sizeof(msg), "the upload is larger than the limit of %llu bytes",
		         (unsigned long long)a->max_upload);
		api__respond_error(req, 413, "too_large", msg, NULL, 0, 1);
		return HTTP_BODY_REJECT;
	}
	if (req->content_length == 0 && !req->chunked) {
		api__respond_error(req, 400, "bad_request", "the request has no recording", NULL, 0, 1);
		return HTTP_BODY_REJECT;
	}
	if (idem != NULL) {
		if (!idempotency_key_valid(idem)) {
			api__respond_error(req, 400, "bad_request",
			                   "Idempotency-Key must be 1-255 visible ASCII characters", NULL, 0, 1);
			return HTTP_BODY_REJECT;
		}
		snprintf(rs->idem_key, sizeof(rs->idem_key), "%s", idem);
		rs->has_idem = 1;
	}
	/* Fairness first: an author at the cap is told so even when the
	 * server is full, since waiting for its own uploads is the remedy. */
	if (author_slots(a, rs->who.handle) >= a->per_author) {
		respond_throttled(a, req, rs->who.handle);
		return HTTP_BODY_REJECT;
	}
	if (a->slots_used >= a->capacity) {
		/* A retry of a key whose first request is done or encoding needs
		 * no worker: it is answered from the record or with the first
		 * request's outcome. But its body is still read (to compare it
		 * with the first), so it takes one of upload-retry-slots, under
		 * the same pace limits. Anything else waits for room. */
		if (!rs->has_idem || !idem_known(a, rs->who.handle, rs->idem_key)) {
			respond_overloaded(a, req, 1, "raise workers or queue");
			return HTTP_BODY_REJECT;
		}
		if (a->retries_used >= a->retry_slots) {
			respond_overloaded(a, req, 1, "every upload-retry-slots slot is taken");
			return HTTP_BODY_REJECT;
		}
		rs->over_limit = 1;
	}
	rs->sha = EVP_MD_CTX_new();
	if (rs->sha == NULL || EVP_DigestInit_ex(rs->sha, EVP_sha256(), NULL) != 1) {
		api__respond_error(req, 500, "internal", "out of memory", NULL, 0, 1);
		return HTTP_BODY_REJECT;
	}
	if (multipart_body) {
		rs->mpctx.rs = rs;
		rs->mpctx.req = req;
		rs->mp = multipart_new(boundary, &mp_callbacks, &rs->mpctx);
		if (rs->mp == NULL) {
			api__respond_error(req, 500, "internal", "out of memory", NULL, 0, 1);
			return HTTP_BODY_REJECT;
		}
	} else {
		size_t tlen;
		int bad, rc_text = 0;
		char *text = api__query_param(req->target, "text", &tlen, &bad);
		if (bad) {
			api__respond_error(req, 400, "bad_request", "the text parameter has a bad %-escape",
			                   NULL, 0, 1);
			return HTTP_BODY_REJECT;
		}
		if (text != NULL) {
			rs->has_text = 1;
			rc_text = buf_append(&rs->text, text, tlen);
			free(text);
		}
		if (rc_text != 0) {
			api__respond_error(req, 500, "internal", "out of memory", NULL, 0, 1);
			return HTTP_BODY_REJECT;
		}
		tlen = 0;
		char *cp = api__query_param(req->target, "crosspost", &tlen, &bad);
		if (cp != NULL && tlen <= FIELD_MAX) {
			memcpy(rs->crosspost, cp, tlen + 1);
			rs->crosspost_len = tlen;
			rs->has_crosspost = 1;
		}
		free(cp);
		if (bad || tlen > FIELD_MAX) {
			api__respond_error(req, 400, "bad_request", "bad crosspost parameter", NULL, 0, 1);
			return HTTP_BODY_REJECT;
		}
		rs->audio_parts = 1;
	}
	rc = open_upload_file(a, rs);
	if (rc != 0) {
		log_error("api: cannot create an upload file in %s: %s", a->upload_dir,
		          sayin_strerror(rc));
		api__respond_error(req, 500, "internal", "cannot create a temporary file", NULL, 0, 1);
		return HTTP_BODY_REJECT;
	}
	if (rs->over_limit)
		a->retries_used++;
	else
		a->slots_used++;
	hold_slot(a, rs, cap);
	return HTTP_BODY_ACCEPT;
}

int api__upload_body(struct req_state *rs, http_request *req, const char *data, size_t len)
{
	metrics_add(rs->api->shard, rs->api->m_upload_bytes, len);
	if (rs->mp != NULL) {
		int rc;
		/* The whole form, not only its audio part: a chunked body has no
		 * Content-Length for upload_headers to check. */
		if (rs->body_bytes > rs->api->max_upload + MULTIPART_SLACK) {
			api__respond_error(req, 413, "too_large", "the form is larger than the recording's "
			                   "limit plus 1 MiB", NULL, 0, 1);
			return 1;
		}
		rc = multipart_feed(rs->mp, data, len);
		if (rc == 0)
			return 0;
		if (!rs->mpctx.answered && rc == -ENOMEM)
			api__respond_error(req, 500, "internal", "out of memory", NULL, 0, 1);
		else if (!rs->mpctx.answered)
			api__respond_error(req, 400, "bad_request", "malformed multipart/form-data body",
			                   NULL, 0, 1);
		return 1;
	}
	return write_audio(rs, req, data, len) == 0 ? 0 : 1;
}

/* Looks for the first response to (author, key). Returns 1 and answers req
 * when one is on record (or 422 when the key came with another request),
 * 0 when there is none, -1 after answering an error. */
static int replay_recorded(struct api *a, http_request *req, struct req_state *rs,
                           const char *request_sha)
{
	static const http_header replay_hdr[] = { { "Idempotent-Replayed", "true" } };
	idempotency_response r;
	int rc = idempotency_lookup(a->st, rs->who.handle, rs->idem_key, clock_now_ms(), &r);

	if (rc == SAYIN_ENOTFOUND)
		return 0;
	if (rc != 0) {
		api__respond_error(req, 500, "internal", sayin_strerror(rc), NULL, 0, 0);
		return -1;
	}
	if (r.request_sha256 == NULL || r.body == NULL || strcmp(r.request_sha256, request_sha) != 0) {
		api__respond_error(req, 422, "idempotency_key_reused",
		                   "this Idempotency-Key was used for a different request", NULL, 0, 0);
	} else {
		char location[128], *copy = strdup(r.body);
		http_header h[2] = { { "Location", location }, replay_hdr[0] };
		snprintf(location, sizeof(location), "/v1/posts/%s", r.post_id);
		metrics_add(a->shard, a->m_replayed, 1);
		api__respond_owned(req, 201, copy, h, 2, 0);
	}
	idempotency_response_free(&r);
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
		EVP_DigestUpdate(rs->sha, rs->text.data, rs->text.len);
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
void api__upload_complete(struct api *a, http_request *req, struct req_state *rs)
{
	char sha[65];
	struct job *j;
	int rc;

	rs->receiving = 0; /* the body is in: no more pace checks */
	if (rs->mp != NULL && multipart_finish(rs->mp) != 0) {
		api__respond_error(req, 400, "bad_request", "the multipart body ends before its closing "
		                   "boundary", NULL, 0, 0);
		goto discard;
	}
	if (rs->audio_parts == 0 || rs->audio_bytes == 0) {
		api__respond_error(req, 400, "bad_request", rs->audio_parts == 0
		                   ? "no \"audio\" part in the form" : "the recording is empty", NULL, 0, 0);
		goto discard;
	}
	if (rs->has_text) {
		char err[160];
		if (pipeline_check_text(a->pipe, rs->text.data, rs->text.len, err, sizeof(err)) != 0) {
			api__respond_error(req, 400, "bad_request", err, NULL, 0, 0);
			goto discard;
		}
	}
	if (rs->crosspost_len > 0 && strspn(rs->crosspost, "abcdefghijklmnopqrstuvwxyz,") !=
	                                     rs->crosspost_len) {
		api__respond_error(req, 400, "bad_request",
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
				api__respond_error(req, 422, "idempotency_key_reused",
				                   "this Idempotency-Key is in use by a different request", NULL, 0,
				                   0);
				goto discard;
			}
			wt = malloc(sizeof(*wt));
			if (wt == NULL) {
				api__respond_error(req, 500, "internal", "out of memory", NULL, 0, 0);
				goto discard;
			}
			/* Answered with the first request's outcome. */
			wt->req = req;
			wt->next = j->waiters;
			j->waiters = wt;
			api__upload_discard(rs);
			api__release_slot(rs);
			log_info("api: %s retried idempotency key while the first is encoding: waiting",
			         rs->who.handle);
			return;
		}
	}
	if (rs->over_limit) {
		/* Let in as a retry, but the first request failed meanwhile (no
		 * record): a new job, for which there is no room. */
		respond_overloaded(a, req, 0, "a retry whose first request failed meanwhile");
		goto discard;
	}
	j = calloc(1, sizeof(*j));
	if (j == NULL) {
		api__respond_error(req, 500, "internal", "out of memory", NULL, 0, 0);
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
		j->text = buf_take(&rs->text, NULL); /* ownership moves to the job */
	}
	snprintf(j->crosspost, sizeof(j->crosspost), "%s", rs->crosspost);
	j->crosspost_given = rs->has_crosspost;
	/* The file moves to the job, which removes it. */
	close(rs->fd);
	rs->fd = -1;
	snprintf(j->path, sizeof(j->path), "%s", rs->path);
	rs->path[0] = '\0';
	rc = api__queue_job(a, j);
	if (rc != 0) {
		api__respond_error(req, 500, "internal", "cannot queue the job", NULL, 0, 0);
		api__job_free(j);
		api__release_slot(rs);
		return;
	}
	if (j->has_idem) {
		j->next_inflight = a->inflight;
		a->inflight = j;
	}
	return;
discard:
	api__upload_discard(rs);
	api__release_slot(rs);
}

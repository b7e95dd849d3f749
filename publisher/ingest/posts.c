/* posts: the ingest API's reads and deletions: GET /v1/posts/ID (the post
 * with its delivery and cross-posts), GET /v1/posts?author= (pages by
 * sequence number), DELETE /v1/posts/ID. */
#include "ingest/internal.h"

#include "core/error.h"
#include "core/jsonstore.h"
#include "core/log.h"
#include "deliver/crosspost.h"
#include "deliver/outbox.h"
#include "deliver/payload.h"
#include "deliver/social/social.h"
#include "render/feed.h"
#include "render/record.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT 20
#define LIST_MAX 100

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

void api__get_post(struct api *a, http_request *req, const char *id)
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

void api__list_posts(struct api *a, http_request *req)
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

void api__delete_post(struct api *a, http_request *req, struct req_state *rs, const char *id)
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

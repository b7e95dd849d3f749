/* jobs: the api's work on libuv's thread pool, answered on the loop when done. */
#include "core/clock.h"
#include "core/error.h"
#include "core/jsonstore.h"
#include "core/log.h"
#include "ingest/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void api__job_free(struct job *j)
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
		j->rc = idempotency_sweep(j->api->st, clock_now_ms(), &j->swept);
		break;
	}
}

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
		api__error_status(j->rc, j->input_fault, &status, &code);
		api__respond_error(req, status, code, j->err, NULL, 0, 0);
		return;
	}
	snprintf(location, sizeof(location), "/v1/posts/%s", j->res.id);
	h[n++] = (http_header){ "Location", location };
	if (replayed)
		h[n++] = replay_hdr[0];
	if (publish_response_json(j->api->pipe->base_url, j->author, &j->res, &body) != 0) {
		/* The post is committed and live: a 500 would make the app post
		 * it again. It is created; its details are at the Location. */
		log_warn("api: post %s published, but its answer could not be built (out of "
		         "memory): answered 201 with its Location only", j->res.id);
		api__respond_static(req, 201,
		                    "{\"created\":true,\"details\":\"out of memory: GET the Location\"}",
		                    h, n);
		return;
	}
	api__respond_owned(req, 201, body, h, n, 0);
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
		api__release_slot(rs);
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
			char *body = r != NULL ? jsonstore_dump_flags(r, JSON_COMPACT | JSON_PRESERVE_ORDER,
			                                              NULL)
			                       : NULL;
			json_decref(r);
			metrics_add(a->shard, a->m_deleted, 1);
			/* The deletion is committed: out of memory now must not
			 * turn it into a 500 the app would retry. */
			if (body != NULL)
				api__respond_owned(j->req, 200, body, NULL, 0, 0);
			else
				api__respond_static(j->req, 200, "{\"deleted\":true}", NULL, 0);
		} else {
			int st;
			const char *code;
			api__error_status(j->rc, 1, &st, &code);
			api__respond_error(j->req, st, code, j->err, NULL, 0, 0);
		}
		break;
	case JOB_SWEEP:
		if (j->rc != 0)
			log_warn("api: idempotency sweep failed: %s", sayin_strerror(j->rc));
		else if (j->swept > 0)
			log_info("api: %u idempotency keys expired", j->swept);
		break;
	}
	if ((j->kind == JOB_POST || j->kind == JOB_DELETE) && j->rc == 0 && a->on_commit != NULL)
		a->on_commit(a->on_commit_arg);
	api__job_free(j);
	api__maybe_stopped(a);
}

int api__queue_job(struct api *a, struct job *j)
{
	int rc;
	j->work.data = j;
	j->api = a;
	rc = uv_queue_work(a->loop, &j->work, on_work, on_work_done);
	if (rc == 0)
		a->jobs_running++;
	return rc;
}

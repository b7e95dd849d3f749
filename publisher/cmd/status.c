/* cmd status: prints the outbox and the cross-posts done (text or JSON),
 * and says by its exit code whether something needs an operator. */
#include "cmd/cmd.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/jsonstore.h"
#include "deliver/crosspost.h"
#include "deliver/outbox.h"
#include "deliver/payload.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The exit code when a job is parked: it waits for `retry`, nothing else
 * will deliver it. Distinct from EXIT_FAIL (status itself failed). */
enum { EXIT_NEEDS_ACTION = 3 };

static const config_arg status_args[] = {
	{ "json", NULL, "print one JSON object (outbox, jobs, cross-posts, needs_action)", 1 },
};

static const cmd_spec status_spec = {
	.name = "status",
	.usage = "Usage: sayin-publisher status [--json] [options]\n\n"
	         "Prints the outbox: queue depth, the oldest job's age, and every job with\n"
	         "its target, attempts, next attempt and last error; parked jobs need\n"
	         "`sayin-publisher retry`. Never prints a credential. --json prints one\n"
	         "object instead: {\"outbox\": {depth, leased, parked, oldest_seconds},\n"
	         "\"jobs\": [...], \"crossposts\": [...], \"needs_action\": bool}.\n"
	         "Exit codes: 0 nothing needs action, 3 a job is parked (run retry),\n"
	         "1 status failed, 2 usage.\n\n",
	.args = status_args,
	.nargs = sizeof(status_args) / sizeof(status_args[0]),
	.settings = cmd_outbox_settings,
};

struct status_ctx {
	int64_t now;
	json_t *jobs;       /* --json: the job objects; NULL: print lines */
	json_t *crossposts; /* likewise */
};

static const char *job_state(const outbox_job_view *job, int64_t now)
{
	return job->parked                  ? "parked"
	       : job->lease_until_ms > now  ? "leased"
	       : job->next_ms > now         ? "backoff"
	                                    : "due";
}

static int print_job(void *arg, const char *id, const outbox_job_view *job)
{
	struct status_ctx *c = arg;
	int64_t now = c->now;
	payload_view pv;
	const char *subject, *state = job_state(job, now);

	payload_read(job->payload, &pv);
	subject = pv.post != NULL && *pv.post != '\0' ? pv.post : pv.author != NULL ? pv.author : "?";
	if (c->jobs != NULL) {
		json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:f, s:s}", "id", id, "target",
		                      job->target, "state", state, "event", pv.event ?: "?", "subject",
		                      subject, "attempts", (json_int_t)job->attempts,
		                      "age_seconds", (double)(now - job->created_ms) / 1e3,
		                      "last_error", job->last_error);
		if (j != NULL && !job->parked && job->next_ms > now)
			json_object_set_new(j, "next_in_seconds",
			                    json_real((double)(job->next_ms - now) / 1e3));
		return j != NULL && json_array_append_new(c->jobs, j) == 0 ? 0 : -ENOMEM;
	}
	printf("%s  %-10s %-7s %s %s  attempts %lld  ", id, job->target,
	       job->parked ? "PARKED" : state, pv.event ?: "?", subject, (long long)job->attempts);
	if (!job->parked && job->next_ms > now)
		printf("next in %.1f s  ", (double)(job->next_ms - now) / 1e3);
	if (*job->last_error != '\0')
		printf("last error: %s", job->last_error);
	printf("\n");
	return 0;
}

static int print_crosspost(void *arg, const char *post_id, const crosspost_done *done)
{
	struct status_ctx *c = arg;
	if (c->crossposts != NULL) {
		json_t *j = json_pack("{s:s, s:s?, s:s?, s:s?, s:b, s:I}", "post", post_id, "network",
		                      done->network, "remote_id", done->remote_id, "url",
		                      done->remote_url, "found", done->found, "done_ms",
		                      (json_int_t)done->done_ms);
		return j != NULL && json_array_append_new(c->crossposts, j) == 0 ? 0 : -ENOMEM;
	}
	printf("  %s  %-8s %s %s\n", post_id, done->network ? done->network : "?",
	       done->remote_url ? done->remote_url : "", done->found ? "(found by reconciling)" : "");
	return 0;
}

/* Prints the --json object. */
static int print_json(struct status_ctx *c, const outbox_stats *s)
{
	json_t *doc = json_pack(
		"{s:{s:I, s:I, s:I, s:f}, s:O, s:O, s:b}", "outbox", "depth", (json_int_t)s->depth,
		"leased", (json_int_t)s->leased, "parked", (json_int_t)s->parked, "oldest_seconds",
		s->oldest_ms ? (double)(c->now - s->oldest_ms) / 1e3 : 0.0, "jobs", c->jobs,
		"crossposts", c->crossposts, "needs_action", s->parked > 0);
	char *text = doc != NULL ? jsonstore_dump_flags(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER,
	                                                NULL)
	                         : NULL;
	json_decref(doc);
	if (text == NULL)
		return -ENOMEM;
	printf("%s\n", text);
	free(text);
	return 0;
}

int cmd_status(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	outbox_stats s = { 0 };
	struct status_ctx c = { .now = clock_now_ms() };
	int code, rc, json;

	code = cmd_load_config(&status_spec, argc, argv, &cfg);
	if (code >= 0)
		return code;
	json = config_get(cfg, "json") != NULL;
	code = cmd_open_store(cfg, "status", &st);
	if (code >= 0)
		goto done;
	if (json) {
		c.jobs = json_array();
		c.crossposts = json_array();
	}
	rc = json && (c.jobs == NULL || c.crossposts == NULL) ? -ENOMEM
	                                                      : outbox_stats_get(st, c.now, &s);
	if (rc == 0) {
		if (!json)
			printf("outbox: %llu jobs waiting (%llu leased), %llu parked, oldest %.1f s\n",
			       (unsigned long long)s.depth, (unsigned long long)s.leased,
			       (unsigned long long)s.parked,
			       s.oldest_ms ? (double)(c.now - s.oldest_ms) / 1e3 : 0.0);
		rc = outbox_each(st, print_job, &c);
	}
	if (rc == 0) {
		store_txn *txn;
		rc = store_txn_begin(st, 0, &txn);
		if (rc == 0) {
			if (!json)
				printf("cross-posts done:\n");
			rc = crosspost_each_done(txn, print_crosspost, &c);
			store_txn_abort(txn);
		}
	}
	if (rc == 0 && json)
		rc = print_json(&c, &s);
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher status: %s\n", sayin_strerror(rc));
		code = EXIT_FAIL;
	} else if (s.parked > 0) {
		/* On stderr: stdout's lines keep their format for parsers. */
		fprintf(stderr, "sayin-publisher status: needs action: %llu parked job%s "
		                "(sayin-publisher retry)\n",
		        (unsigned long long)s.parked, s.parked == 1 ? "" : "s");
		code = EXIT_NEEDS_ACTION;
	} else {
		code = EXIT_OK;
	}
done:
	json_decref(c.jobs);
	json_decref(c.crossposts);
	store_close(st);
	config_free(cfg);
	return code;
}

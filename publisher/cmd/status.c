/* cmd status: prints the outbox and the cross-posts done. */
#include "cmd/cmd.h"

#include "core/clock.h"
#include "core/error.h"
#include "deliver/crosspost.h"
#include "deliver/outbox.h"
#include "deliver/payload.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static const cmd_spec status_spec = {
	.name = "status",
	.usage = "Usage: sayin-publisher status [options]\n\n"
	         "Prints the outbox: queue depth, the oldest job's age, and every job with\n"
	         "its target, attempts, next attempt and last error; parked jobs need\n"
	         "`sayin-publisher retry`. Never prints a credential.\n\n",
	.settings = cmd_outbox_settings,
};

static int print_job(void *arg, const char *id, const outbox_job_view *job)
{
	int64_t now = *(const int64_t *)arg;
	payload_view pv;
	const char *subject;

	payload_read(job->payload, &pv);
	subject = pv.post != NULL && *pv.post != '\0' ? pv.post : pv.author != NULL ? pv.author : "?";

	printf("%s  %-10s %-7s %s %s  attempts %lld  ", id, job->target,
	       job->parked ? "PARKED" : job->lease_until_ms > now ? "leased"
	                              : job->next_ms > now        ? "backoff"
	                                                          : "due",
	       pv.event ?: "?", subject,
	       (long long)job->attempts);
	if (!job->parked && job->next_ms > now)
		printf("next in %.1f s  ", (double)(job->next_ms - now) / 1e3);
	if (*job->last_error != '\0')
		printf("last error: %s", job->last_error);
	printf("\n");
	return 0;
}

static int print_crosspost(void *arg, const char *post_id, const crosspost_done *done)
{
	(void)arg;
	printf("  %s  %-8s %s %s\n", post_id, done->network ? done->network : "?",
	       done->remote_url ? done->remote_url : "", done->found ? "(found by reconciling)" : "");
	return 0;
}

int cmd_status(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	outbox_stats s;
	int64_t now = clock_now_ms();
	int code, rc;

	code = cmd_load_config(&status_spec, argc, argv, &cfg);
	if (code >= 0)
		return code;
	code = cmd_open_store(cfg, "status", &st);
	if (code >= 0)
		goto done;
	rc = outbox_stats_get(st, now, &s);
	if (rc == 0) {
		printf("outbox: %llu jobs waiting (%llu leased), %llu parked, oldest %.1f s\n",
		       (unsigned long long)s.depth, (unsigned long long)s.leased,
		       (unsigned long long)s.parked,
		       s.oldest_ms ? (double)(now - s.oldest_ms) / 1e3 : 0.0);
		rc = outbox_each(st, print_job, &now);
	}
	if (rc == 0) {
		store_txn *txn;
		rc = store_txn_begin(st, 0, &txn);
		if (rc == 0) {
			printf("cross-posts done:\n");
			rc = crosspost_each_done(txn, print_crosspost, NULL);
			store_txn_abort(txn);
		}
	}
	if (rc != 0)
		fprintf(stderr, "sayin-publisher status: %s\n", sayin_strerror(rc));
	code = rc == 0 ? EXIT_OK : EXIT_FAIL;
done:
	store_close(st);
	config_free(cfg);
	return code;
}

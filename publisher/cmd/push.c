/* cmd push: delivers the due outbox jobs once and exits. */
#include "cmd/cmd.h"
#include "cmd/textfile.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "deliver/delivery.h"
#include "pipeline.h"

#include <stdio.h>
#include <string.h>
#include <uv.h>

static const config_arg push_args[] = {
	{ "metrics-textfile", "FILE", "write this run's metrics to FILE for node_exporter's "
	                               "textfile collector (replaced atomically)", 0 },
};

static const cmd_spec push_spec = {
	.name = "push",
	.usage = "Usage: sayin-publisher push [options]\n\n"
	         "Delivers every due outbox job (CDN purges, pushes, prewarming) once and\n"
	         "exits: for cron, or when serve is not running. Safe to run next to serve\n"
	         "or another push: jobs are leased. Exit codes: 0 all delivered, 1 some\n"
	         "failed (they are retried later, or parked: see status), 2 usage.\n\n",
	.args = push_args,
	.nargs = sizeof(push_args) / sizeof(push_args[0]),
	.settings = cmd_outbox_settings,
};

struct push_state {
	uv_loop_t loop;
	delivery *d;
	delivery_counts counts;
};

static void on_push_idle(void *arg, const delivery_counts *c)
{
	struct push_state *p = arg;
	p->counts = *c;
	delivery_stop(p->d, NULL, NULL);
}

struct unconfigured {
	const delivery_targets *targets;
	unsigned long n;
};

/* Parked jobs of a target this configuration does not have: they wait
 * for it to come back (then `retry`), whatever this run delivered. */
static int count_unconfigured(void *arg, const char *id, const outbox_job_view *job)
{
	static const char *const networks[] = PUBLISH_NETWORKS;
	struct unconfigured *u = arg;
	size_t n;
	const publish_target *list = delivery_targets_list(u->targets, &n);

	(void)id;
	if (!job->parked)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(list[i].name, job->target) == 0)
			return 0;
	}
	for (size_t i = 0; i < sizeof(networks) / sizeof(networks[0]); i++) {
		if (strcmp(networks[i], job->target) == 0)
			return 0;
	}
	u->n++;
	return 0;
}

static int read_policy(const config *cfg, const pipeline *pipe, void *arg, char *err,
                       size_t errlen)
{
	(void)pipe;
	return delivery_policy_configure(cfg, arg, err, errlen);
}

int cmd_push(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	pipeline pipe = { 0 };
	struct push_state p = { 0 };
	delivery_options dopt = { 0 };
	int code, rc, loop_ready = 0, ran = 0;
	double t0 = clock_mono_ms_f();

	code = cmd_load_config(&push_spec, argc, argv, &cfg);
	if (code >= 0)
		return code;
	code = cmd_prepare(&push_spec, cfg, &pipe, read_policy, &dopt.policy, &st);
	if (code >= 0)
		goto done;
	code = EXIT_FAIL;
	rc = uv_loop_init(&p.loop);
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher push: cannot start the event loop: %s\n",
		        uv_strerror(rc));
		goto done;
	}
	loop_ready = 1;
	dopt.st = st;
	dopt.base_url = pipe.base_url;
	dopt.once = 1;
	rc = delivery_start(&p.loop, &dopt, pipe.targets, on_push_idle, &p, &p.d);
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher push: %s\n", sayin_strerror(rc));
		goto done;
	}
	uv_run(&p.loop, UV_RUN_DEFAULT);
	ran = 1;
	printf("delivered %lu, failed %lu (parked %lu)\n", p.counts.delivered, p.counts.failed,
	       p.counts.parked);
	if (p.counts.parked > 0)
		printf("%lu job%s parked (target not configured, or failing too long): see "
		       "`sayin-publisher status`, then `sayin-publisher retry`\n", p.counts.parked,
		       p.counts.parked == 1 ? "" : "s");
	code = p.counts.failed == 0 ? EXIT_OK : EXIT_FAIL;
	{
		struct unconfigured u = { pipe.targets, 0 };
		if (outbox_each(st, count_unconfigured, &u) == 0 && u.n > 0) {
			printf("%lu parked job%s name%s a target that is not configured: configure it "
			       "and run `sayin-publisher retry` (see `sayin-publisher status`)\n", u.n,
			       u.n == 1 ? "" : "s", u.n == 1 ? "s" : "");
			code = EXIT_FAIL;
		}
	}
done:
	if (cfg != NULL && config_get(cfg, "metrics-textfile") != NULL && code != EXIT_USAGE) {
		cron_run run = { .command = "push", .success = code == EXIT_OK,
			         .duration_s = (clock_mono_ms_f() - t0) / 1e3, .has_jobs = 1 };
		if (ran) {
			run.delivered = p.counts.delivered;
			run.failed = p.counts.failed - p.counts.parked;
			run.parked = p.counts.parked;
		}
		if (cron_textfile_write(config_get(cfg, "metrics-textfile"), &run) != 0 &&
		    code == EXIT_OK)
			code = EXIT_FAIL;
	}
	if (loop_ready && uv_loop_close(&p.loop) != 0)
		log_warn("push: loop closed with handles open");
	pipeline_free(&pipe);
	store_close(st);
	config_free(cfg);
	return code;
}

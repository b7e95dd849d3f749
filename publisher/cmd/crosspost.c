/* cmd crosspost: posts the due cross-posts once, one run at a time (cron). */
#include "cmd/cmd.h"
#include "cmd/textfile.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "deliver/crosspost.h"
#include "pipeline.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static const char *const crosspost_settings[] = {
	"data", "map-size", "public-url", "listen", "social-accounts", "x-api-url",
	"facebook-api-url", "facebook-api-version", "crosspost-timeout-ms", "outbox-max-attempts",
	"outbox-max-age", "outbox-lease-ms", "outbox-backoff-ms", "log-level", NULL
};

static const config_arg crosspost_args[] = {
	{ "metrics-textfile", "FILE", "write this run's metrics to FILE for node_exporter's "
	                               "textfile collector (replaced atomically)", 0 },
};

static const cmd_spec crosspost_spec = {
	.name = "crosspost",
	.usage = "Usage: sayin-publisher crosspost [options]\n\n"
	         "Posts every due cross-post job to X and Facebook once and exits: run it\n"
	         "from cron (scripts/crontab). Overlapping runs do not post twice: the run\n"
	         "holds DATA/crosspost.lock (a run that finds it taken exits 0 at once),\n"
	         "and jobs are leased. Exit codes: 0 done (or another run is active),\n"
	         "1 some posts failed (retried later, or parked: see status), 2 usage.\n\n",
	.args = crosspost_args,
	.nargs = sizeof(crosspost_args) / sizeof(crosspost_args[0]),
	.settings = crosspost_settings,
};

/* The delivery policy and the networks' timeout. */
static int read_settings(const config *cfg, const pipeline *pipe, void *arg, char *err,
                         size_t errlen)
{
	crosspost_options *copt = arg;

	(void)pipe;
	return delivery_policy_configure(cfg, &copt->policy, err, errlen) != 0 ||
	       config_get_u64(cfg, "crosspost-timeout-ms", 100, 600000, &copt->timeout_ms, err,
	                      errlen) != 0;
}

int cmd_crosspost(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	pipeline pipe = { 0 };
	crosspost_options copt = { 0 };
	crosspost_counts counts = { 0 };
	char lock_path[PATH_MAX];
	int code, rc, lock_fd = -1, skipped = 0;
	double t0 = clock_mono_ms_f();

	code = cmd_load_config(&crosspost_spec, argc, argv, &cfg);
	if (code >= 0)
		return code;
	code = cmd_prepare(&crosspost_spec, cfg, &pipe, read_settings, &copt, &st);
	if (code >= 0)
		goto done;
	code = EXIT_FAIL;
	/* One run at a time: cron starts the next while a slow one still runs. */
	snprintf(lock_path, sizeof(lock_path), "%s/crosspost.lock", config_get(cfg, "data"));
	lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock_fd < 0) {
		fprintf(stderr, "sayin-publisher crosspost: %s: %s\n", lock_path, strerror(errno));
		goto done;
	}
	if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno == EWOULDBLOCK) {
			log_info("crosspost: another run holds %s: leaving the work to it", lock_path);
			code = EXIT_OK;
			skipped = 1; /* the run holding the lock writes the metrics */
		} else {
			fprintf(stderr, "sayin-publisher crosspost: lock %s: %s\n", lock_path,
			        strerror(errno));
		}
		goto done;
	}
	copt.st = st;
	copt.x_api_url = config_get(cfg, "x-api-url");
	copt.facebook_api_url = config_get(cfg, "facebook-api-url");
	copt.facebook_version = config_get(cfg, "facebook-api-version");
	rc = crosspost_run(&copt, pipe.accounts, &counts);
	printf("posted %lu, found already posted %lu, failed %lu (parked %lu)\n", counts.posted,
	       counts.found, counts.failed, counts.parked);
	if (rc != 0)
		fprintf(stderr, "sayin-publisher crosspost: %s\n", sayin_strerror(rc));
	code = rc == 0 && counts.failed == 0 ? EXIT_OK : EXIT_FAIL;
done:
	if (cfg != NULL && config_get(cfg, "metrics-textfile") != NULL && code != EXIT_USAGE &&
	    !skipped) {
		cron_run run = { .command = "crosspost", .success = code == EXIT_OK,
			         .duration_s = (clock_mono_ms_f() - t0) / 1e3, .has_jobs = 1,
			         .delivered = counts.posted + counts.found, .failed = counts.failed - counts.parked,
			         .parked = counts.parked };
		if (cron_textfile_write(config_get(cfg, "metrics-textfile"), &run) != 0 &&
		    code == EXIT_OK)
			code = EXIT_FAIL;
	}
	if (lock_fd >= 0)
		close(lock_fd); /* releases the lock */
	pipeline_free(&pipe);
	store_close(st);
	config_free(cfg);
	return code;
}

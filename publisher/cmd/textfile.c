/* textfile: a cron run's metrics in node_exporter's textfile format, written atomically. */
#include "cmd/textfile.h"

#include "core/buf.h"
#include "core/fileio.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SUCCESS_NAME "sayin_cron_last_success_timestamp_seconds"

/* The last success the old file recorded for command, or 0. */
static double previous_success(const char *path, const char *command)
{
	char line[512], prefix[128];
	double v = 0;
	FILE *f = fopen(path, "re");
	size_t n;

	if (f == NULL)
		return 0;
	n = (size_t)snprintf(prefix, sizeof(prefix), SUCCESS_NAME "{command=\"%s\"} ", command);
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, prefix, n) == 0) {
			char *end;
			double x = strtod(line + n, &end);
			if (end != line + n && x >= 0)
				v = x;
			break;
		}
	}
	fclose(f);
	return v;
}

static int render(buf *b, const cron_run *run, double now, double success_at)
{
	const char *c = run->command;
	int rc = buf_printf(b,
	                    "# HELP " SUCCESS_NAME " When the command last succeeded (Unix "
	                    "seconds; 0: never, as far as this file knows).\n"
	                    "# TYPE " SUCCESS_NAME " gauge\n" SUCCESS_NAME "{command=\"%s\"} %.3f\n"
	                    "# HELP sayin_cron_last_run_timestamp_seconds When the command last "
	                    "ended (Unix seconds).\n"
	                    "# TYPE sayin_cron_last_run_timestamp_seconds gauge\n"
	                    "sayin_cron_last_run_timestamp_seconds{command=\"%s\"} %.3f\n"
	                    "# HELP sayin_cron_success 1 if the command's last run succeeded, "
	                    "else 0.\n"
	                    "# TYPE sayin_cron_success gauge\n"
	                    "sayin_cron_success{command=\"%s\"} %d\n"
	                    "# HELP sayin_cron_duration_seconds How long the command's last run "
	                    "took.\n"
	                    "# TYPE sayin_cron_duration_seconds gauge\n"
	                    "sayin_cron_duration_seconds{command=\"%s\"} %.3f\n",
	                    c, success_at, c, now, c, run->success ? 1 : 0, c, run->duration_s);
	if (rc == 0 && run->has_jobs)
		rc = buf_printf(b,
		                "# HELP sayin_cron_jobs Jobs the command's last run ended, by "
		                "outcome (failed: retried later; parked: need action).\n"
		                "# TYPE sayin_cron_jobs gauge\n"
		                "sayin_cron_jobs{command=\"%s\",outcome=\"delivered\"} %lu\n"
		                "sayin_cron_jobs{command=\"%s\",outcome=\"failed\"} %lu\n"
		                "sayin_cron_jobs{command=\"%s\",outcome=\"parked\"} %lu\n",
		                c, run->delivered, c, run->failed, c, run->parked);
	if (rc == 0 && run->extra != NULL)
		rc = buf_append(b, run->extra, strlen(run->extra));
	return rc;
}

int cron_textfile_write(const char *path, const cron_run *run)
{
	struct timespec ts;
	double now;
	buf b = BUF_INIT;
	char *tmp;
	size_t len = strlen(path) + sizeof(".tmp-XXXXXX");
	int fd, rc;

	clock_gettime(CLOCK_REALTIME, &ts);
	now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	rc = render(&b, run, now, run->success ? now : previous_success(path, run->command));
	tmp = malloc(len);
	if (rc != 0 || tmp == NULL) {
		log_error("%s: cannot write the metrics textfile %s: out of memory", run->command, path);
		buf_free(&b);
		free(tmp);
		return -ENOMEM;
	}
	/* Same directory as path, so the rename stays on one file system. */
	snprintf(tmp, len, "%s.tmp-XXXXXX", path);
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		log_error("%s: cannot write the metrics textfile %s: %s", run->command, path,
		          strerror(errno));
		goto out;
	}
	rc = fchmod(fd, 0644) != 0 ? -errno : 0;
	if (rc == 0)
		rc = fileio_write(fd, b.data, b.len, -1);
	if (rc == 0 && fsync(fd) != 0)
		rc = -errno;
	if (close(fd) != 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) != 0)
		rc = -errno;
	if (rc != 0) {
		log_error("%s: cannot write the metrics textfile %s: %s", run->command, path,
		          strerror(-rc));
		unlink(tmp);
	}
out:
	buf_free(&b);
	free(tmp);
	return rc;
}

/* textfile: a cron command's run (push, crosspost, backup) as metrics for
 * node_exporter's textfile collector, one file per command, replaced
 * atomically. Every command writes the same families with the same HELP
 * text, so the collector can merge the files. */
#ifndef SAYIN_CMD_TEXTFILE_H
#define SAYIN_CMD_TEXTFILE_H

typedef struct cron_run {
	const char *command;     /* "push", "crosspost", "backup": the command label */
	int success;             /* 1: the run did all it had to */
	double duration_s;
	int has_jobs;            /* push, crosspost: write sayin_cron_jobs */
	unsigned long delivered, failed, parked;
	const char *extra;       /* more exposition text (HELP, TYPE, samples), or NULL */
} cron_run;

/* Writes the run to path: sayin_cron_last_run_timestamp_seconds (now),
 * sayin_cron_last_success_timestamp_seconds (now on success; on failure the
 * value path held before, 0 when it held none), sayin_cron_success,
 * sayin_cron_duration_seconds and, with has_jobs,
 * sayin_cron_jobs{outcome=delivered|failed|parked}, then extra. The text
 * goes to a temporary file in path's directory, is fsync'ed and renamed
 * over path: a scrape sees the old file or the new one. Returns 0, or a
 * negative errno after logging the cause; path is then untouched and no
 * temporary file remains. */
int cron_textfile_write(const char *path, const cron_run *run);

#endif

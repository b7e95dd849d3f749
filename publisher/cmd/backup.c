/* cmd backup and restore: a verified snapshot of the live store, optionally
 * sent to S3; installing one into a store directory. */
#include "cmd/cmd.h"
#include "cmd/textfile.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "core/store_backup.h"
#include "deliver/cdn/aws.h"
#include "deliver/cdn/cdn.h"
#include "deliver/net.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define S3_MAX_DEFAULT "1G"
#define S3_PUT_LIMIT (5ull << 30) /* S3's largest single PUT */

static const config_arg backup_args[] = {
	{ "to-s3", NULL, "also upload the snapshot to the S3 bucket (--s3-bucket, --s3-endpoint, "
	                 "--aws-*) as backups/SITE/UTC-TIME.mdb, SITE being the recorded public URL's host", 1 },
	{ "metrics-textfile", "FILE", "write this run's metrics to FILE for node_exporter's "
	                              "textfile collector (replaced atomically)", 0 },
	{ "metrics-file", "FILE", "deprecated name of --metrics-textfile", 0 },
	{ "s3-max-size", "SIZE", "largest snapshot --to-s3 uploads (one PUT, held in memory; at "
	                         "most 5G, S3's limit for one PUT); default " S3_MAX_DEFAULT, 0 },
};

static const char *const backup_settings[] = {
	"data", "public-url", "s3-bucket", "s3-endpoint", "aws-access-key-id",
	"aws-secret-access-key", "aws-secret-access-key-file", "aws-region", "log-level", NULL
};

static const cmd_spec backup_spec = {
	.name = "backup",
	.usage = "Usage: sayin-publisher backup [--to-s3] [options] DEST\n\n"
	         "Writes a consistent, compacted snapshot of the store (--data) to the file\n"
	         "DEST while the API, the origin and other commands go on using it. The copy\n"
	         "is written next to DEST, synced, verified (every table walked, entry counts\n"
	         "compared with the store's when no write happened during the copy), then\n"
	         "renamed to DEST: DEST is a whole verified snapshot or untouched. Prints one\n"
	         "JSON line (dest, bytes, seconds, entries, s3_key). Restore it with\n"
	         "`sayin-publisher restore DEST --data DIR`. Exit codes: 0 done, 1 failed\n"
	         "(nothing left behind), 2 usage.\n",
	.args = backup_args,
	.nargs = sizeof(backup_args) / sizeof(backup_args[0]),
	.settings = backup_settings,
};

static const config_arg restore_args[] = {
	{ "force", NULL, "replace the store in --data (never one in use)", 1 },
};

static const char *const restore_settings[] = { "data", "log-level", NULL };

static const cmd_spec restore_spec = {
	.name = "restore",
	.usage = "Usage: sayin-publisher restore [--force] --data DIR SNAPSHOT\n\n"
	         "Verifies SNAPSHOT (a file written by `sayin-publisher backup`) and installs\n"
	         "it as the store in DIR (DIR/data.mdb), atomically. Refuses a store that a\n"
	         "process has open (stop the origin, the API and the timers first), and a DIR\n"
	         "that already holds a store unless --force. Exit codes: 0 restored, 1\n"
	         "failed (DIR unchanged), 2 usage, 5 the store is in use or DIR is not empty.\n",
	.args = restore_args,
	.nargs = sizeof(restore_args) / sizeof(restore_args[0]),
	.settings = restore_settings,
};

struct upload {
	net *net;
	long status;
	char error[512];
	int done;
};

static void upload_done(void *arg, const net_response *res, const net_headers *h)
{
	struct upload *u = arg;
	const char *code = res->body != NULL ? strstr(res->body, "<Code>") : NULL;

	(void)h;
	u->status = res->status;
	u->done = 1;
	if (res->status == 0)
		snprintf(u->error, sizeof(u->error), "%s", res->error ? res->error : "transport failed");
	else if (res->status < 200 || res->status >= 300)
		snprintf(u->error, sizeof(u->error), "HTTP %ld %.*s", res->status,
		         code ? (int)strcspn(code + 6, "<") : 0, code ? code + 6 : "");
	net_close(u->net, NULL, NULL);
}

/* The site's name in the key: public-url's host. */
static int site_name(const config *cfg, char *out, size_t len)
{
	const char *url = config_get(cfg, "public-url"), *host;
	size_t n;

	if (url == NULL || (host = strstr(url, "://")) == NULL)
		return -1;
	host += 3;
	n = strcspn(host, "/:?#");
	if (n == 0 || n >= len)
		return -1;
	memcpy(out, host, n);
	out[n] = '\0';
	return 0;
}

/* Where --to-s3 sends the snapshot, read from the settings before the
 * snapshot is taken, so a bad setting costs no copy. */
struct s3_target {
	char url[2048];
	char key[512];   /* backups/SITE/YYYYMMDDTHHMMSSZ.mdb */
	char bucket[128];
	char sigv4[128];
	cdn_aws aws;
};

/* Returns 0, or SAYIN_ECONFIG with err naming the missing setting. */
static int s3_target_configure(const config *cfg, struct s3_target *t, char *err, size_t errlen)
{
	const char *bucket = config_get(cfg, "s3-bucket"), *endpoint = config_get(cfg, "s3-endpoint");
	char site[256], stamp[32], base[512];
	time_t now = time(NULL);
	struct tm tm;
	int rc;

	if (bucket == NULL || *bucket == '\0' || strlen(bucket) >= sizeof(t->bucket)) {
		snprintf(err, errlen, "--to-s3 needs --s3-bucket");
		return SAYIN_ECONFIG;
	}
	if (site_name(cfg, site, sizeof(site)) != 0) {
		snprintf(err, errlen, "--to-s3 needs --public-url (its host names the site in the key)");
		return SAYIN_ECONFIG;
	}
	rc = cdn_aws_configure(cfg, "--to-s3", &t->aws, err, errlen);
	if (rc != 0)
		return rc;
	if (endpoint != NULL && *endpoint != '\0')
		cdn_copy_base_url(base, sizeof(base), endpoint);
	else
		snprintf(base, sizeof(base), "https://s3.%s.amazonaws.com", t->aws.region);
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(t->bucket, sizeof(t->bucket), "%s", bucket);
	snprintf(t->key, sizeof(t->key), "backups/%s/%s.mdb", site, stamp);
	snprintf(t->url, sizeof(t->url), "%s/%s/%s", base, bucket, t->key);
	snprintf(t->sigv4, sizeof(t->sigv4), "aws:amz:%s:s3", t->aws.region);
	return 0;
}

/* PUTs the snapshot at path to t; err says why not. */
static int upload_s3(const struct s3_target *t, const char *path, uint64_t max, char *err,
                     size_t errlen)
{
	char sha[65], h_sha[100];
	const char *hdrs[] = { h_sha, "Content-Type: application/octet-stream", NULL };
	struct upload u = { 0 };
	struct stat sb;
	void *map = MAP_FAILED;
	uv_loop_t loop;
	int fd = -1, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) != 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, sayin_strerror(rc));
		goto done;
	}
	if ((uint64_t)sb.st_size > max) {
		snprintf(err, errlen, "the snapshot is %lld bytes, more than --s3-max-size (%llu): "
		         "upload %s with another tool", (long long)sb.st_size, (unsigned long long)max,
		         path);
		rc = -EFBIG;
		goto done;
	}
	map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED) {
		rc = -errno;
		snprintf(err, errlen, "%s: mmap: %s", path, sayin_strerror(rc));
		goto done;
	}
	cdn_aws_sha256_hex(map, (size_t)sb.st_size, sha);
	snprintf(h_sha, sizeof(h_sha), "x-amz-content-sha256: %s", sha);
	rc = uv_loop_init(&loop);
	if (rc != 0) {
		snprintf(err, errlen, "event loop: %s", uv_strerror(rc));
		goto done;
	}
	rc = net_create(&loop, 1, &u.net);
	if (rc == 0) {
		/* Ten minutes per GiB, and at least two. */
		uint64_t timeout = 120000 + (uint64_t)sb.st_size / (1u << 30) * 600000;
		net_request req = { .method = "PUT", .url = t->url, .headers = hdrs, .body = map,
			            .body_len = (size_t)sb.st_size, .aws_sigv4 = t->sigv4,
			            .userpwd = t->aws.userpwd, .timeout_ms = timeout };
		rc = net_send(u.net, &req, upload_done, &u);
		if (rc != 0)
			net_close(u.net, NULL, NULL);
		uv_run(&loop, UV_RUN_DEFAULT);
	}
	uv_loop_close(&loop);
	if (rc != 0)
		snprintf(err, errlen, "cannot start the upload: %s", sayin_strerror(rc));
	else if (!u.done || u.error[0] != '\0') {
		snprintf(err, errlen, "PUT %.500s: %.400s", t->url, u.done ? u.error : "no answer");
		rc = SAYIN_ESTORE;
	}
done:
	if (map != MAP_FAILED)
		munmap(map, (size_t)sb.st_size);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* The run for node_exporter's textfile collector (cmd/textfile.h), with
 * the snapshot's own gauges. */
static void write_metrics(const char *path, int ok, const store_snapshot_info *info,
                          double seconds, int uploaded, int *code)
{
	char extra[1024];
	cron_run run = { .command = "backup", .success = ok, .duration_s = seconds,
		         .extra = extra };

	snprintf(extra, sizeof(extra),
	         "# HELP sayin_backup_bytes The last snapshot's size (0 when it failed).\n"
	         "# TYPE sayin_backup_bytes gauge\nsayin_backup_bytes %llu\n"
	         "# HELP sayin_backup_entries Entries in the last snapshot's tables.\n"
	         "# TYPE sayin_backup_entries gauge\nsayin_backup_entries %llu\n"
	         "# HELP sayin_backup_uploaded 1 if the last snapshot went to S3.\n"
	         "# TYPE sayin_backup_uploaded gauge\nsayin_backup_uploaded %d\n",
	         ok ? (unsigned long long)info->bytes : 0ull,
	         ok ? (unsigned long long)info->entries : 0ull, uploaded);
	if (cron_textfile_write(path, &run) != 0 && *code == EXIT_OK)
		*code = EXIT_FAIL;
}

int cmd_backup(int argc, char **argv)
{
	store_options sopt = { .read_only = 1 };
	store_snapshot_info info = { 0 };
	config *cfg = NULL;
	store *st = NULL;
	const char *dest;
	char err[1024] = "";
	struct s3_target s3 = { 0 };
	uint64_t s3_max = 0;
	double t0, seconds = 0, run_t0 = clock_mono_ms_f();
	int code, rc, ok = 0, uploaded = 0, to_s3 = 0;

	code = cmd_load_config(&backup_spec, argc, argv, &cfg);
	if (code >= 0)
		return code;
	if (config_positional_count(cfg) != 1) {
		fprintf(stderr, "sayin-publisher backup: give one DEST (the snapshot file to write)\n");
		code = EXIT_USAGE;
		goto out;
	}
	dest = config_positional(cfg, 0);
	if (config_get(cfg, "s3-max-size") == NULL)
		s3_max = 1ull << 30;
	else if (config_get_size(cfg, "s3-max-size", 1, S3_PUT_LIMIT, &s3_max, err,
	                         sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher backup: %s\n", err);
		code = EXIT_USAGE;
		goto out;
	}
	to_s3 = config_get(cfg, "to-s3") != NULL;
	/* Any format: the upgrade procedure takes a backup before `migrate`. */
	sopt.any_format = 1;
	rc = store_open(config_get(cfg, "data"), &sopt, &st);
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher backup: cannot open store %s: %s\n",
		        config_get(cfg, "data"), sayin_strerror(rc));
		code = rc == SAYIN_ESTORENEWER ? EXIT_USAGE : EXIT_FAIL;
		goto out;
	}
	/* The key names the site the store records (its public URL's host). */
	if (to_s3 && (code = cmd_apply_site(st, cfg, "backup")) >= 0)
		goto out;
	code = EXIT_OK;
	if (to_s3 && s3_target_configure(cfg, &s3, err, sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher backup: %s\n", err);
		code = EXIT_USAGE;
		goto out;
	}
	t0 = clock_mono_ms_f();
	rc = store_snapshot(st, dest, &info, err, sizeof(err));
	seconds = (clock_mono_ms_f() - t0) / 1e3;
	if (rc != 0) {
		log_error("backup: failed after %.3f s: %s", seconds, err);
		fprintf(stderr, "sayin-publisher backup: %s\n", err);
		code = EXIT_FAIL;
		goto out;
	}
	log_info("backup: %s: %llu bytes, %llu entries in %u tables, %.3f s (store transaction "
	         "%llu..%llu%s)", dest, (unsigned long long)info.bytes,
	         (unsigned long long)info.entries, info.tables, seconds,
	         (unsigned long long)info.txn_before, (unsigned long long)info.txn_after,
	         info.counts_compared ? ", counts compared" : ", written meanwhile");
	if (to_s3) {
		double t1 = clock_mono_ms_f();
		rc = upload_s3(&s3, dest, s3_max, err, sizeof(err));
		if (rc != 0) {
			log_error("backup: upload to S3 failed after %.3f s: %s",
			          (clock_mono_ms_f() - t1) / 1e3, err);
			fprintf(stderr, "sayin-publisher backup: %s (the local snapshot %s is kept)\n",
			        err, dest);
			code = EXIT_FAIL;
			goto out;
		}
		uploaded = 1;
		log_info("backup: uploaded %s as s3://%s/%s: %llu bytes, %.3f s", dest, s3.bucket,
		         s3.key, (unsigned long long)info.bytes,
		         (clock_mono_ms_f() - t1) / 1e3);
	}
	{
		json_t *j = json_pack("{s:s, s:I, s:f, s:I, s:b, s:s?}", "dest", dest, "bytes",
		                      (json_int_t)info.bytes, "seconds", seconds, "entries",
		                      (json_int_t)info.entries, "counts_compared",
		                      info.counts_compared, "s3_key", to_s3 ? s3.key : NULL);
		char *line = j != NULL ? json_dumps(j, JSON_PRESERVE_ORDER | JSON_COMPACT |
		                                             JSON_REAL_PRECISION(6))
		                       : NULL;
		if (line != NULL)
			printf("%s\n", line);
		free(line);
		json_decref(j);
	}
	code = EXIT_OK;
	ok = 1;
out:
	if (cfg != NULL && code != EXIT_USAGE) {
		const char *textfile = config_get(cfg, "metrics-textfile");
		if (textfile == NULL && config_get(cfg, "metrics-file") != NULL) {
			textfile = config_get(cfg, "metrics-file");
			log_warn("backup: --metrics-file is deprecated: use --metrics-textfile");
		}
		if (textfile != NULL)
			write_metrics(textfile, ok, &info, (clock_mono_ms_f() - run_t0) / 1e3,
			              uploaded, &code);
	}
	memset(&s3.aws, 0, sizeof(s3.aws)); /* the secret */
	store_close(st);
	config_free(cfg);
	return code;
}

int cmd_restore(int argc, char **argv)
{
	store_snapshot_info info;
	config *cfg = NULL;
	const char *src, *dir;
	char err[1024] = "";
	pid_t pid = 0;
	double t0;
	int code, rc;

	code = cmd_load_config(&restore_spec, argc, argv, &cfg);
	if (code >= 0)
		return code;
	if (config_positional_count(cfg) != 1) {
		fprintf(stderr, "sayin-publisher restore: give one SNAPSHOT (a file `backup` wrote)\n");
		config_free(cfg);
		return EXIT_USAGE;
	}
	src = config_positional(cfg, 0);
	dir = config_get(cfg, "data");
	t0 = clock_mono_ms_f();
	rc = store_restore(src, dir, config_get(cfg, "force") != NULL, &pid, &info, err,
	                   sizeof(err));
	if (rc == -EBUSY) {
		fprintf(stderr, "sayin-publisher restore: refused: the store in %s is in use (process "
		        "%d has it open): stop it first\n", dir, (int)pid);
		code = EXIT_REFUSED;
	} else if (rc == -ENOTEMPTY) {
		fprintf(stderr, "sayin-publisher restore: refused: %s\n", err);
		code = EXIT_REFUSED;
	} else if (rc != 0) {
		fprintf(stderr, "sayin-publisher restore: %s\n", err[0] ? err : sayin_strerror(rc));
		code = EXIT_FAIL;
	} else {
		log_info("restore: %s installed in %s: %llu bytes, %llu entries, %.3f s", src, dir,
		         (unsigned long long)info.bytes, (unsigned long long)info.entries,
		         (clock_mono_ms_f() - t0) / 1e3);
		printf("restored %s into %s: %llu bytes, %llu entries\n", src, dir,
		       (unsigned long long)info.bytes, (unsigned long long)info.entries);
		code = EXIT_OK;
	}
	if (rc != 0)
		log_error("restore: %s into %s failed: %s", src, dir, err[0] ? err : sayin_strerror(rc));
	config_free(cfg);
	return code;
}

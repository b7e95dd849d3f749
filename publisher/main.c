/* sayin-publisher: publishes voice posts into the store (the only writer). */
#include "ingest/api.h"
#include "ingest/auth.h"
#include "deliver/crosspost.h"
#include "deliver/delivery.h"
#include "deliver/outbox.h"
#include "core/config.h"
#include "pipeline.h"
#include "core/error.h"
#include "render/feed.h"
#include "core/log.h"
#include "media/media.h"
#include "publish.h"
#include "core/store.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>
#include <unistd.h>
#include <signal.h>
#include <time.h>
#include <uv.h>

/* Exit codes, documented in README. */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_BAD_INPUT = 3, EXIT_STORE_FULL = 4 };

static const config_arg post_args[] = {
	{ "author", "HANDLE", "author handle (1-32 of a-z, 0-9, _); created on first post", 0 },
	{ "text", "TEXT", "the post's text (UTF-8)", 0 },
	{ "crosspost", "NETWORKS", "x, facebook or x,facebook (default: every network the author "
	                           "has enabled; \"\" for none)", 0 },
};
#define N_POST_ARGS (sizeof(post_args) / sizeof(post_args[0]))

static const char *const post_settings[] = {
	"data", "map-size", "public-url", "listen", "bitrate", "loudness-target", "max-input-bytes",
	"max-duration", "decode-timeout-ms", "decode-memory", "waveform-points", "aac-fallback",
	"aac-bitrate", "aac-coder", "feed-items", "feed-page-items", "max-text", "log-level", NULL
};

static void usage(FILE *out)
{
	fprintf(out, "Usage: sayin-publisher COMMAND [options]\n\n"
	             "Commands:\n"
	             "  post      publish a recording as a voice post\n"
	             "  author    add authors, issue and revoke API tokens, list them\n"
	             "  serve     run the ingest API (and the delivery worker)\n"
	             "  push      deliver due outbox jobs (CDN purges, pushes) once\n"
	             "  status    the outbox: depth, oldest job, parked jobs\n"
	             "  retry     make parked jobs due again\n"
	             "  crosspost post due cross-posts to X and Facebook once (cron)\n"
	             "  settings  print every setting as a Markdown table\n"
	             "  help      this text\n\n"
	             "Run 'sayin-publisher COMMAND --help' for a command's options.\n");
}

static void post_usage(FILE *out)
{
	fprintf(out, "Usage: sayin-publisher post --author HANDLE [--text TEXT] [options] FILE\n\n"
	             "Publishes FILE (WAV, FLAC, MP3, Ogg Vorbis/Opus, M4A/MP4 AAC, WebM/MKV\n"
	             "Opus, CAF, AIFF, AMR; the first audio track of a video) as an Ogg Opus\n"
	             "voice post normalized to the loudness target, with an AAC-in-M4A\n"
	             "fallback and a waveform, updates the author's feed and prints the\n"
	             "post as one JSON object. Exit codes: 0 published,\n"
	             "1 failed, 2 usage, 3 bad input file, 4 store full.\n");
	config_usage(out, post_args, N_POST_ARGS, post_settings);
}

/* Loads a command's config; prints usage on --help. Returns -1 to go on,
 * else the exit code. */
static int load_command_config(const char *name, int argc, char **argv, const config_arg *args,
                               size_t nargs, void (*usage_fn)(FILE *), config **cfg)
{
	enum log_level level;
	char err[512];
	int rc = config_load(argc, argv, args, nargs, cfg, err, sizeof(err));

	if (rc == 1) {
		usage_fn(stdout);
		config_free(*cfg);
		*cfg = NULL;
		return EXIT_OK;
	}
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher %s: %s\n", name, err);
		return EXIT_USAGE;
	}
	if (log_parse_level(config_get(*cfg, "log-level"), &level) != 0) {
		fprintf(stderr, "sayin-publisher %s: --log-level must be error, warn, info or debug\n",
		        name);
		config_free(*cfg);
		*cfg = NULL;
		return EXIT_USAGE;
	}
	log_set_level(level);
	return -1;
}

static int open_store(const config *cfg, const char *cmd, store **st)
{
	store_options sopt = { 0 };
	char err[256];
	int rc;

	if (config_get_size(cfg, "map-size", 1 << 20, UINT64_MAX, &sopt.map_size, err,
	                    sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher %s: %s\n", cmd, err);
		return EXIT_USAGE;
	}
	rc = store_open(config_get(cfg, "data"), &sopt, st);
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher %s: cannot open store %s: %s\n", cmd,
		        config_get(cfg, "data"), sayin_strerror(rc));
		return EXIT_FAIL;
	}
	return -1;
}

static int cmd_post(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	pipeline pipe = { 0 };
	publish_result res;
	pipeline_timing timing;
	char err[512], *json = NULL;
	const char *file, *author, *text;
	int rc, input_fault, code;

	code = load_command_config("post", argc, argv, post_args, N_POST_ARGS, post_usage, &cfg);
	if (code >= 0)
		return code;
	code = EXIT_USAGE;
	author = config_get(cfg, "author");
	text = config_get(cfg, "text");
	if (config_positional_count(cfg) != 1) {
		fprintf(stderr, "sayin-publisher post: give exactly one recording FILE (see --help)\n");
		goto done;
	}
	file = config_positional(cfg, 0);
	if (author == NULL) {
		fprintf(stderr, "sayin-publisher post: --author HANDLE is required\n");
		goto done;
	}
	if (!publish_valid_handle(author)) {
		fprintf(stderr, "sayin-publisher post: invalid author handle '%s': use 1-32 of "
		                "a-z, 0-9, _\n", author);
		goto done;
	}
	if (pipeline_configure(&pipe, cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher post: %s\n", err);
		goto done;
	}
	if (text != NULL && pipeline_check_text(&pipe, text, strlen(text), err, sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher post: --text: %s\n", err);
		goto done;
	}
	/* The store is opened before the media work (a missing or read-only
	 * store fails fast), but nothing is written until the publish. */
	code = open_store(cfg, "post", &st);
	if (code >= 0)
		goto done;
	pipeline_post post = { .file = file, .author = author, .text = text,
		               .crosspost = config_get(cfg, "crosspost"),
		               .now_ms = pipeline_now_ms() };
	rc = pipeline_run(&pipe, st, &post, &res, &timing, &input_fault, err, sizeof(err));
	if (rc != 0) {
		if (rc == SAYIN_ESTOREFULL || rc == -ENOSPC)
			code = EXIT_STORE_FULL;
		else if (rc == SAYIN_EINVAL && input_fault)
			code = EXIT_USAGE;
		else
			code = input_fault ? EXIT_BAD_INPUT : EXIT_FAIL;
		if (timing.publish_ms == 0 && rc != SAYIN_EINVAL)
			fprintf(stderr, "sayin-publisher post: %s: %s\n", file, err);
		else
			fprintf(stderr, "sayin-publisher post: %s\n", err);
		goto done;
	}
	if (publish_response_json(pipe.base_url, author, &res, &json) != 0) {
		code = EXIT_FAIL;
		goto done;
	}
	printf("%s\n", json);
	code = EXIT_OK;
done:
	pipeline_free(&pipe);
	free(json);
	store_close(st);
	config_free(cfg);
	return code;
}

static const config_arg author_args[] = {
	{ "name", "NAME", "display name (author add)", 0 },
};
#define N_AUTHOR_ARGS (sizeof(author_args) / sizeof(author_args[0]))
static const char *const author_settings[] = { "data", "map-size", "public-url", "listen",
	                                       "feed-items", "feed-page-items", "log-level",
	                                       NULL };

static void author_usage(FILE *out)
{
	fprintf(out, "Usage: sayin-publisher author add HANDLE --name \"Display Name\"\n"
	             "       sayin-publisher author token HANDLE\n"
	             "       sayin-publisher author revoke HANDLE [TOKEN-ID]\n"
	             "       sayin-publisher author rebuild HANDLE\n"
	             "       sayin-publisher author list\n\n"
	             "add creates an author (its empty feed, author page and /authors.json) and\n"
	             "prints a new API token once; token issues another; revoke removes one\n"
	             "token, or all of the author's; rebuild rewrites the author's feed, every\n"
	             "archive page and the author page (after changing feed-items,\n"
	             "feed-page-items or public-url); list prints authors, their post counts\n"
	             "and token ids. Tokens are stored only as hashes: a lost token cannot be\n"
	             "shown again, only revoked and replaced.\n\n");
	config_usage(out, author_args, N_AUTHOR_ARGS, author_settings);
}

/* Prints a new token of handle (a write transaction of its own). */
static int issue_token(store *st, const char *handle)
{
	char token[AUTH_TOKEN_LEN + 1];
	auth_token_info info;
	store_txn *txn;
	int rc = store_txn_begin(st, 1, &txn);

	if (rc == 0) {
		rc = auth_token_issue(txn, handle, pipeline_now_ms(), token, &info);
		if (rc == 0)
			rc = store_txn_commit(txn);
		else
			store_txn_abort(txn);
	}
	if (rc == SAYIN_ENOTFOUND) {
		fprintf(stderr, "sayin-publisher author: no author '%s'\n", handle);
		return EXIT_FAIL;
	}
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher author: cannot issue a token: %s\n",
		        sayin_strerror(rc));
		return rc == SAYIN_ESTOREFULL || rc == -ENOSPC ? EXIT_STORE_FULL : EXIT_FAIL;
	}
	printf("token %s for %s (shown once; id %s)\n%s\n", info.id, handle, info.id, token);
	return EXIT_OK;
}

struct list_ctx {
	store_txn *txn;
	int failed;
};

static int print_token(void *arg, const auth_token_info *info)
{
	(void)arg;
	printf("  token %s  created %lld\n", info->id, (long long)(info->created_ms / 1000));
	return 0;
}

static int print_author(void *arg, const char *key, const void *record, size_t len)
{
	struct list_ctx *c = arg;
	json_t *j = json_loadb(record, len, 0, NULL);
	size_t count = 0;

	store_author_post_count(c->txn, key, &count);
	printf("%s\t%s\t%zu posts\n", key, j ? json_string_value(json_object_get(j, "name")) : "?",
	       count);
	json_decref(j);
	return auth_token_each(c->txn, key, print_token, NULL);
}

static int cmd_author(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	pipeline pipe = { 0 };
	char err[512];
	const char *verb, *handle = NULL;
	int rc, code;

	code = load_command_config("author", argc, argv, author_args, N_AUTHOR_ARGS, author_usage,
	                           &cfg);
	if (code >= 0)
		return code;
	code = EXIT_USAGE;
	if (config_positional_count(cfg) < 1) {
		author_usage(stderr);
		goto done;
	}
	verb = config_positional(cfg, 0);
	if (strcmp(verb, "list") != 0) {
		if (config_positional_count(cfg) < 2) {
			fprintf(stderr, "sayin-publisher author %s: give the author's HANDLE\n", verb);
			goto done;
		}
		handle = config_positional(cfg, 1);
		if (!publish_valid_handle(handle)) {
			fprintf(stderr, "sayin-publisher author: invalid handle '%s': use 1-32 of a-z, "
			                "0-9, _\n", handle);
			goto done;
		}
	}
	if (pipeline_configure(&pipe, cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher author: %s\n", err);
		goto done;
	}
	if (strcmp(verb, "add") == 0) {
		const char *name = config_get(cfg, "name");
		if (name == NULL || config_positional_count(cfg) != 2) {
			fprintf(stderr, "sayin-publisher author add: usage: author add HANDLE --name NAME\n");
			goto done;
		}
		code = open_store(cfg, "author", &st);
		if (code >= 0)
			goto done;
		rc = publish_author_add(st, &pipe.publish, handle, name, pipeline_now_ms(), err,
		                        sizeof(err));
		if (rc != 0) {
			fprintf(stderr, "sayin-publisher author add: %s\n", err);
			code = rc == SAYIN_EINVAL ? EXIT_USAGE
			       : rc == SAYIN_ESTOREFULL || rc == -ENOSPC ? EXIT_STORE_FULL : EXIT_FAIL;
			goto done;
		}
		code = issue_token(st, handle);
	} else if (strcmp(verb, "token") == 0 && config_positional_count(cfg) == 2) {
		code = open_store(cfg, "author", &st);
		if (code < 0)
			code = issue_token(st, handle);
	} else if (strcmp(verb, "revoke") == 0 && config_positional_count(cfg) <= 3) {
		const char *id = config_positional_count(cfg) == 3 ? config_positional(cfg, 2) : NULL;
		store_txn *txn;
		unsigned n = 0;
		code = open_store(cfg, "author", &st);
		if (code >= 0)
			goto done;
		rc = store_txn_begin(st, 1, &txn);
		if (rc == 0) {
			rc = auth_token_revoke(txn, handle, id, &n);
			if (rc == 0)
				rc = store_txn_commit(txn);
			else
				store_txn_abort(txn);
		}
		if (rc == SAYIN_ENOTFOUND) {
			fprintf(stderr, "sayin-publisher author revoke: %s has no token %s\n", handle,
			        id ? id : "");
			code = EXIT_FAIL;
		} else if (rc != 0) {
			fprintf(stderr, "sayin-publisher author revoke: %s\n", sayin_strerror(rc));
			code = EXIT_FAIL;
		} else {
			printf("revoked %u token%s of %s\n", n, n == 1 ? "" : "s", handle);
			code = EXIT_OK;
		}
	} else if (strcmp(verb, "rebuild") == 0 && config_positional_count(cfg) == 2) {
		code = open_store(cfg, "author", &st);
		if (code >= 0)
			goto done;
		pipe.publish.create_authors = 0;
		rc = publish_rebuild(st, &pipe.publish, handle, pipeline_now_ms(), err, sizeof(err));
		if (rc != 0)
			fprintf(stderr, "sayin-publisher author rebuild: %s\n", err);
		code = rc == 0 ? EXIT_OK : rc == SAYIN_ESTOREFULL || rc == -ENOSPC ? EXIT_STORE_FULL : EXIT_FAIL;
	} else if (strcmp(verb, "list") == 0 && config_positional_count(cfg) == 1) {
		struct list_ctx c = { 0 };
		code = open_store(cfg, "author", &st);
		if (code >= 0)
			goto done;
		rc = store_txn_begin(st, 0, &c.txn);
		if (rc == 0) {
			rc = store_each_record(c.txn, STORE_AUTHORS, "", print_author, &c);
			store_txn_abort(c.txn);
		}
		code = rc == 0 ? EXIT_OK : EXIT_FAIL;
		if (rc != 0)
			fprintf(stderr, "sayin-publisher author list: %s\n", sayin_strerror(rc));
	} else {
		author_usage(stderr);
	}
done:
	pipeline_free(&pipe);
	store_close(st);
	config_free(cfg);
	return code;
}

static const char *const serve_settings[] = {
	"data", "map-size", "public-url", "listen", "api-listen", "workers", "queue", "upload-dir",
	"bitrate", "loudness-target", "max-input-bytes", "max-duration", "decode-timeout-ms",
	"decode-memory", "waveform-points", "aac-fallback", "aac-bitrate", "aac-coder", "feed-items",
	"feed-page-items", "max-text", "shutdown-grace-ms", "log-level", NULL
};

static void serve_usage(FILE *out)
{
	fprintf(out, "Usage: sayin-publisher serve [options]\n\n"
	             "Runs the ingest API (see README: POST /v1/posts, GET and DELETE\n"
	             "/v1/posts/ID, GET /v1/posts?author=, /healthz, /metrics) on --api-listen.\n"
	             "Uploads are transcoded and published by --workers threads; SIGINT or\n"
	             "SIGTERM finishes the work in flight, then exits.\n\n");
	config_usage(out, NULL, 0, serve_settings);
}

struct serve_state {
	uv_loop_t loop;
	uv_signal_t sigint, sigterm;
	api *api;
	delivery_thread *delivery;
	uint64_t grace_ms;
};

static void kick_delivery(void *arg)
{
	delivery_thread_kick(arg);
}

static void on_api_stopped(void *arg)
{
	struct serve_state *s = arg;
	uv_close((uv_handle_t *)&s->sigint, NULL);
	uv_close((uv_handle_t *)&s->sigterm, NULL);
}

static void on_serve_signal(uv_signal_t *h, int signum)
{
	struct serve_state *s = h->data;
	log_info("serve: %s: finishing uploads and posts in flight, then exiting", strsignal(signum));
	uv_signal_stop(&s->sigint);
	uv_signal_stop(&s->sigterm);
	api_stop(s->api, s->grace_ms, on_api_stopped, s);
}

static int cmd_serve(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	metrics *reg = NULL;
	pipeline pipe = { 0 };
	struct serve_state s = { 0 };
	api_options aopt = { 0 };
	uint64_t workers, queue;
	char err[512], upload_dir[PATH_MAX], threads[16];
	int code, rc, loop_ready = 0;

	code = load_command_config("serve", argc, argv, NULL, 0, serve_usage, &cfg);
	if (code >= 0)
		return code;
	code = EXIT_USAGE;
	if (config_positional_count(cfg) != 0) {
		fprintf(stderr, "sayin-publisher serve: unexpected argument '%s'\n",
		        config_positional(cfg, 0));
		goto done;
	}
	if (pipeline_configure(&pipe, cfg, err, sizeof(err)) != 0 ||
	    config_get_u64(cfg, "workers", 1, 64, &workers, err, sizeof(err)) != 0 ||
	    config_get_u64(cfg, "queue", 0, 10000, &queue, err, sizeof(err)) != 0 ||
	    config_get_u64(cfg, "shutdown-grace-ms", 0, 3600 * 1000, &s.grace_ms, err,
	                   sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher serve: %s\n", err);
		goto done;
	}
	/* The API creates authors explicitly (author add): a token's author
	 * always exists. */
	pipe.publish.create_authors = 0;
	if (config_get(cfg, "upload-dir") != NULL)
		snprintf(upload_dir, sizeof(upload_dir), "%s", config_get(cfg, "upload-dir"));
	else
		snprintf(upload_dir, sizeof(upload_dir), "%s/uploads", config_get(cfg, "data"));
	code = open_store(cfg, "serve", &st);
	if (code >= 0)
		goto done;
	code = EXIT_FAIL;
	/* libuv's pool runs the encodes: one thread per worker. Read when the
	 * pool first starts, so set before any work is queued. */
	snprintf(threads, sizeof(threads), "%llu", (unsigned long long)workers);
	setenv("UV_THREADPOOL_SIZE", threads, 1);
	if (metrics_create(&reg) != 0 || uv_loop_init(&s.loop) != 0)
		goto done;
	loop_ready = 1;
	if (pipe.publish.n_targets > 0) {
		delivery_options dopt = { .st = st, .base_url = pipe.base_url, .metrics = reg };
		if (delivery_policy_configure(cfg, &dopt.policy, err, sizeof(err)) != 0) {
			fprintf(stderr, "sayin-publisher serve: %s\n", err);
			code = EXIT_USAGE;
			goto done;
		}
		rc = delivery_thread_start(&dopt, pipe.targets, &s.delivery);
		if (rc != 0) {
			fprintf(stderr, "sayin-publisher serve: cannot start the delivery worker: %s\n",
			        sayin_strerror(rc));
			goto done;
		}
	}
	aopt = (api_options){ .listen = config_get(cfg, "api-listen"), .upload_dir = upload_dir,
		              .workers = (unsigned)workers, .queue = (unsigned)queue,
		              .max_upload = pipe.media.max_input_bytes, .metrics = reg,
		              .on_commit = s.delivery ? kick_delivery : NULL,
		              .on_commit_arg = s.delivery };
	rc = api_start(&s.loop, st, &pipe, &aopt, &s.api, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher serve: %s\n", err);
		goto done;
	}
	uv_signal_init(&s.loop, &s.sigint);
	uv_signal_init(&s.loop, &s.sigterm);
	s.sigint.data = s.sigterm.data = &s;
	uv_signal_start(&s.sigint, on_serve_signal, SIGINT);
	uv_signal_start(&s.sigterm, on_serve_signal, SIGTERM);
	log_info("serve: ingest API on http://%s (port %d), %llu workers, queue %llu, uploads in %s",
	         aopt.listen, api_port(s.api), (unsigned long long)workers,
	         (unsigned long long)queue, upload_dir);
	uv_run(&s.loop, UV_RUN_DEFAULT);
	log_info("serve: stopped");
	code = EXIT_OK;
done:
	/* The worker finishes the request in flight or leaves its lease to
	 * expire; either way the jobs stay in the outbox. */
	delivery_thread_stop(s.delivery);
	pipeline_free(&pipe);
	if (loop_ready && uv_loop_close(&s.loop) != 0)
		log_warn("serve: loop closed with handles open");
	metrics_destroy(reg);
	store_close(st);
	config_free(cfg);
	return code;
}

static const char *const outbox_settings[] = {
	"data", "map-size", "public-url", "listen", "varnish-edges", "varnish-soft-purge",
	"nginx-edges", "prewarm-edges", "fastly-service-id", "fastly-api-key", "fastly-api-url",
	"fastly-soft-purge", "cloudflare-zone-id", "cloudflare-api-token", "cloudflare-api-url",
	"cloudflare-purge-by", "cloudfront-distribution-id", "cloudfront-api-url", "s3-bucket",
	"s3-endpoint", "aws-access-key-id", "aws-secret-access-key", "aws-region",
	"outbox-max-attempts", "outbox-max-age", "outbox-lease-ms", "outbox-backoff-ms",
	"log-level", NULL
};

static void push_usage(FILE *out)
{
	fprintf(out, "Usage: sayin-publisher push [options]\n\n"
	             "Delivers every due outbox job (CDN purges, pushes, prewarming) once and\n"
	             "exits: for cron, or when serve is not running. Safe to run next to serve\n"
	             "or another push: jobs are leased. Exit codes: 0 all delivered, 1 some\n"
	             "failed (they are retried later, or parked: see status), 2 usage.\n\n");
	config_usage(out, NULL, 0, outbox_settings);
}

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

static int cmd_push(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	pipeline pipe = { 0 };
	struct push_state p = { 0 };
	delivery_options dopt = { 0 };
	char err[512];
	int code, rc, loop_ready = 0;

	code = load_command_config("push", argc, argv, NULL, 0, push_usage, &cfg);
	if (code >= 0)
		return code;
	code = EXIT_USAGE;
	if (pipeline_configure(&pipe, cfg, err, sizeof(err)) != 0 ||
	    delivery_policy_configure(cfg, &dopt.policy, err, sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher push: %s\n", err);
		goto done;
	}
	code = open_store(cfg, "push", &st);
	if (code >= 0)
		goto done;
	code = EXIT_FAIL;
	if (uv_loop_init(&p.loop) != 0)
		goto done;
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
	printf("delivered %lu, failed %lu (parked %lu)\n", p.counts.delivered, p.counts.failed,
	       p.counts.parked);
	code = p.counts.failed == 0 ? EXIT_OK : EXIT_FAIL;
done:
	if (loop_ready && uv_loop_close(&p.loop) != 0)
		log_warn("push: loop closed with handles open");
	pipeline_free(&pipe);
	store_close(st);
	config_free(cfg);
	return code;
}

static void status_usage(FILE *out)
{
	fprintf(out, "Usage: sayin-publisher status [options]\n\n"
	             "Prints the outbox: queue depth, the oldest job's age, and every job with\n"
	             "its target, attempts, next attempt and last error; parked jobs need\n"
	             "`sayin-publisher retry`. Never prints a credential.\n\n");
	config_usage(out, NULL, 0, outbox_settings);
}

static int print_job(void *arg, const char *id, const json_t *rec)
{
	int64_t now = *(const int64_t *)arg;
	const json_t *payload = json_object_get(rec, "payload");
	int parked = json_is_true(json_object_get(rec, "parked"));
	int64_t next = json_integer_value(json_object_get(rec, "next_ms"));
	int64_t lease = json_integer_value(json_object_get(rec, "lease_until_ms"));
	const char *err = json_string_value(json_object_get(rec, "last_error"));
	const char *post = json_string_value(json_object_get(payload, "post"));
	const char *author = json_string_value(json_object_get(payload, "author"));
	const char *subject = post != NULL && *post != '\0' ? post : author != NULL ? author : "?";

	printf("%s  %-10s %-7s %s %s  attempts %lld  ", id,
	       json_string_value(json_object_get(rec, "target")),
	       parked ? "PARKED" : lease > now ? "leased" : next > now ? "backoff" : "due",
	       json_string_value(json_object_get(payload, "event")) ?: "?", subject,
	       (long long)json_integer_value(json_object_get(rec, "attempts")));
	if (!parked && next > now)
		printf("next in %.1f s  ", (double)(next - now) / 1e3);
	if (err != NULL && *err != '\0')
		printf("last error: %s", err);
	printf("\n");
	return 0;
}

static int print_crosspost(void *arg, const char *key, const void *record, size_t len)
{
	json_t *j = json_loadb(record, len, 0, NULL);
	(void)arg;
	printf("  %.*s  %-8s %s %s\n", (int)strcspn(key, "\n"), key,
	       json_string_value(json_object_get(j, "network")) ?: "?",
	       json_string_value(json_object_get(j, "remote_url")) ?: "",
	       json_is_true(json_object_get(j, "found")) ? "(found by reconciling)" : "");
	json_decref(j);
	return 0;
}

static int cmd_status(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	outbox_stats s;
	int64_t now = pipeline_now_ms();
	int code, rc;

	code = load_command_config("status", argc, argv, NULL, 0, status_usage, &cfg);
	if (code >= 0)
		return code;
	code = open_store(cfg, "status", &st);
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
			rc = store_each_record(txn, STORE_CROSSPOSTS, "", print_crosspost, NULL);
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

static const config_arg retry_args[] = {
	{ "all", NULL, "retry every parked job", 1 },
};

static void retry_usage(FILE *out)
{
	fprintf(out, "Usage: sayin-publisher retry JOB-ID | --all [options]\n\n"
	             "Makes parked jobs due again with their attempts reset (push or serve\n"
	             "delivers them).\n\n");
	config_usage(out, retry_args, 1, outbox_settings);
}

static int cmd_retry(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	unsigned n = 0;
	const char *id;
	int code, rc;

	code = load_command_config("retry", argc, argv, retry_args, 1, retry_usage, &cfg);
	if (code >= 0)
		return code;
	code = EXIT_USAGE;
	id = config_positional_count(cfg) == 1 ? config_positional(cfg, 0) : NULL;
	if ((id == NULL) == (config_get(cfg, "all") == NULL)) {
		retry_usage(stderr);
		goto done;
	}
	code = open_store(cfg, "retry", &st);
	if (code >= 0)
		goto done;
	rc = outbox_retry(st, id, pipeline_now_ms(), &n);
	if (rc == SAYIN_ENOTFOUND)
		fprintf(stderr, "sayin-publisher retry: no job %s\n", id);
	else if (rc != 0)
		fprintf(stderr, "sayin-publisher retry: %s\n", sayin_strerror(rc));
	else
		printf("%u job%s made due again\n", n, n == 1 ? "" : "s");
	code = rc == 0 ? EXIT_OK : EXIT_FAIL;
done:
	store_close(st);
	config_free(cfg);
	return code;
}

static const char *const crosspost_settings[] = {
	"data", "map-size", "public-url", "listen", "social-accounts", "x-api-url",
	"facebook-api-url", "facebook-api-version", "crosspost-timeout-ms", "outbox-max-attempts",
	"outbox-max-age", "outbox-lease-ms", "outbox-backoff-ms", "log-level", NULL
};

static void crosspost_usage(FILE *out)
{
	fprintf(out, "Usage: sayin-publisher crosspost [options]\n\n"
	             "Posts every due cross-post job to X and Facebook once and exits: run it\n"
	             "from cron (scripts/crontab). Overlapping runs do not post twice: the run\n"
	             "holds DATA/crosspost.lock (a run that finds it taken exits 0 at once),\n"
	             "and jobs are leased. Exit codes: 0 done (or another run is active),\n"
	             "1 some posts failed (retried later, or parked: see status), 2 usage.\n\n");
	config_usage(out, NULL, 0, crosspost_settings);
}

static int cmd_crosspost(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	pipeline pipe = { 0 };
	crosspost_options copt = { 0 };
	crosspost_counts counts;
	char err[512], lock_path[PATH_MAX];
	uint64_t timeout_ms;
	int code, rc, lock_fd = -1;

	code = load_command_config("crosspost", argc, argv, NULL, 0, crosspost_usage, &cfg);
	if (code >= 0)
		return code;
	code = EXIT_USAGE;
	if (pipeline_configure(&pipe, cfg, err, sizeof(err)) != 0 ||
	    delivery_policy_configure(cfg, &copt.policy, err, sizeof(err)) != 0 ||
	    config_get_u64(cfg, "crosspost-timeout-ms", 100, 600000, &timeout_ms, err,
	                   sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher crosspost: %s\n", err);
		goto done;
	}
	code = open_store(cfg, "crosspost", &st);
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
	copt.timeout_ms = timeout_ms;
	rc = crosspost_run(&copt, pipe.accounts, &counts);
	printf("posted %lu, found already posted %lu, failed %lu (parked %lu)\n", counts.posted,
	       counts.found, counts.failed, counts.parked);
	if (rc != 0)
		fprintf(stderr, "sayin-publisher crosspost: %s\n", sayin_strerror(rc));
	code = rc == 0 && counts.failed == 0 ? EXIT_OK : EXIT_FAIL;
done:
	if (lock_fd >= 0)
		close(lock_fd); /* releases the lock */
	pipeline_free(&pipe);
	store_close(st);
	config_free(cfg);
	return code;
}

int main(int argc, char **argv)
{
	/* The decoder child (see media_transcode_file): before anything else. */
	if (argc >= 2 && strcmp(argv[1], MEDIA_DECODER_COMMAND) == 0)
		return media_decoder_main(argc, argv);
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "post") == 0)
		return cmd_post(argc - 1, argv + 1);
	if (strcmp(argv[1], "author") == 0)
		return cmd_author(argc - 1, argv + 1);
	if (strcmp(argv[1], "serve") == 0)
		return cmd_serve(argc - 1, argv + 1);
	if (strcmp(argv[1], "push") == 0)
		return cmd_push(argc - 1, argv + 1);
	if (strcmp(argv[1], "status") == 0)
		return cmd_status(argc - 1, argv + 1);
	if (strcmp(argv[1], "retry") == 0)
		return cmd_retry(argc - 1, argv + 1);
	if (strcmp(argv[1], "crosspost") == 0)
		return cmd_crosspost(argc - 1, argv + 1);
	if (strcmp(argv[1], "settings") == 0) {
		config_print_reference(stdout);
		return EXIT_OK;
	}
	if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return EXIT_OK;
	}
	fprintf(stderr, "sayin-publisher: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}

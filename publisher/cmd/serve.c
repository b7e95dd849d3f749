/* cmd serve: runs the ingest API and the delivery worker until a signal.
 * SIGHUP reads the configuration again and applies the log level and the
 * API's access log (reopening its file); anything else takes a restart. A
 * bad configuration keeps the settings in force and logs why. systemd is
 * told READY=1 once listening, RELOADING=1 around a reload, STOPPING=1 on
 * SIGTERM, and gets watchdog pings when it asks for them (core/notify). */
#include "cmd/cmd.h"

#include "core/accesslog.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/notify.h"
#include "core/tls.h"
#include "deliver/delivery.h"
#include "ingest/api.h"
#include "pipeline.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const char *const serve_settings[] = {
	"data", "map-size", "public-url", "listen", "api-listen", "workers", "queue", "upload-dir",
	"upload-per-author", "upload-retry-slots", "upload-min-rate", "upload-rate-window-ms",
	"upload-rate-grace-ms", "upload-deadline-ms",
	"bitrate", "loudness-target", "max-input-bytes", "max-duration", "decode-timeout-ms",
	"decode-memory", "waveform-points", "aac-fallback", "aac-bitrate", "aac-coder", "feed-items",
	"feed-page-items", "max-text", "shutdown-grace-ms", "log-level", "api-access-log",
	"client-ip-header", "trusted-edges", "api-tls-cert", "api-tls-key",
	"tls-handshake-timeout-ms", "tls-ticket-rotate-s", NULL
};

static const config_arg serve_args[] = {
	{ "insecure-http", NULL,
	  "serve plain HTTP on an --api-listen that is not loopback (a TLS proxy in front)", 1 },
};

static const cmd_spec serve_spec = {
	.name = "serve",
	.usage = "Usage: sayin-publisher serve [options]\n\n"
	         "Runs the ingest API (publisher/README.md: POST /v1/posts, GET and DELETE\n"
	         "/v1/posts/ID, GET /v1/posts?author=, /healthz, /metrics) on --api-listen.\n"
	         "Uploads are transcoded and published by --workers threads; SIGINT or\n"
	         "SIGTERM finishes the work in flight, then exits. SIGHUP reloads the log\n"
	         "level and the access log (--api-access-log, reopened).\n\n",
	.settings = serve_settings,
	.args = serve_args,
	.nargs = sizeof(serve_args) / sizeof(serve_args[0]),
};

struct serve_state {
	uv_loop_t loop;
	uv_signal_t sigint, sigterm, sighup;
	int argc;
	char **argv; /* read again on SIGHUP */
	atomic_ullong reloads, reload_failures;
	notify_watchdog *watchdog;
	api *api;
	tls_server *tls; /* NULL: plain HTTP */
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
	uv_close((uv_handle_t *)&s->sighup, NULL);
	notify_watchdog_stop(s->watchdog);
	s->watchdog = NULL;
}

static void on_serve_signal(uv_signal_t *h, int signum)
{
	struct serve_state *s = h->data;
	log_info("serve: %s: finishing uploads and posts in flight, then exiting", strsignal(signum));
	notify_stopping();
	uv_signal_stop(&s->sigint);
	uv_signal_stop(&s->sigterm);
	uv_signal_stop(&s->sighup);
	api_stop(s->api, s->grace_ms, on_api_stopped, s);
}

/* SIGHUP: everything is checked before anything is applied. */
static void on_serve_reload(uv_signal_t *h, int signum)
{
	struct serve_state *s = h->data;
	config *cfg = NULL;
	enum log_level level;
	char err[512];

	(void)signum;
	notify_reloading();
	if (config_load(s->argc, s->argv, serve_spec.args, serve_spec.nargs, &cfg, err,
	                sizeof(err)) != 0)
		goto fail;
	if (log_parse_level(config_get(cfg, "log-level"), &level) != 0) {
		snprintf(err, sizeof(err), "--log-level: '%s' is not error, warn, info or debug",
		         config_get(cfg, "log-level"));
		goto fail;
	}
	/* Both apply themselves, and keep what was in force when they fail. */
	if (s->tls != NULL && tls_server_reload(s->tls, err, sizeof(err)) != 0)
		goto fail;
	if (accesslog_configure("api-access-log", config_get(cfg, "api-access-log"), err,
	                        sizeof(err)) != 0)
		goto fail;
	log_set_level(level);
	atomic_fetch_add(&s->reloads, 1);
	log_info("serve: SIGHUP: settings reloaded (log level %s, access log %s)",
	         config_get(cfg, "log-level"), config_get(cfg, "api-access-log"));
	config_free(cfg);
	notify_ready("serving");
	return;
fail:
	config_free(cfg);
	atomic_fetch_add(&s->reload_failures, 1);
	log_error("serve: SIGHUP: %s; the settings in force stay", err);
	notify_ready("serving; the last reload failed");
}

static double atomic_count(void *arg)
{
	return (double)atomic_load((atomic_ullong *)arg);
}

static double access_log_failures(void *arg)
{
	(void)arg;
	return (double)accesslog_write_failures();
}

static int define_reload_metrics(metrics *reg, struct serve_state *s)
{
	metrics_id id = metrics_counter_fn(reg, "sayin_config_reloads_total",
	                                   "SIGHUP reloads of the settings, by result (failed: the "
	                                   "old settings stayed).",
	                                   "result=\"ok\"", atomic_count, &s->reloads);
	if (id < 0)
		return id;
	id = metrics_counter_fn(reg, "sayin_config_reloads_total", "", "result=\"failed\"",
	                        atomic_count, &s->reload_failures);
	if (id < 0)
		return id;
	id = metrics_counter_fn(reg, "sayin_access_log_write_failures_total",
	                        "Access log lines lost to a failed write (full disk, closed stderr).",
	                        NULL, access_log_failures, NULL);
	return id < 0 ? id : 0;
}

struct serve_limits {
	uint64_t workers, queue, grace_ms;
};

static int read_limits(const config *cfg, const pipeline *pipe, void *arg, char *err,
                       size_t errlen)
{
	struct serve_limits *l = arg;

	(void)pipe;
	return config_get_ranged(cfg, "workers", &l->workers, err, errlen) != 0 ||
	       config_get_ranged(cfg, "queue", &l->queue, err, errlen) != 0 ||
	       config_get_ranged(cfg, "shutdown-grace-ms", &l->grace_ms, err, errlen) != 0;
}

int cmd_serve(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	metrics *reg = NULL;
	pipeline pipe = { 0 };
	struct serve_state s = { 0 };
	api_options aopt = { 0 };
	struct serve_limits lim;
	accesslog_edges *edges = NULL;
	char err[512], upload_dir[PATH_MAX], threads[16];
	int code, rc, loop_ready = 0;

	code = cmd_load_config(&serve_spec, argc, argv, &cfg);
	if (code >= 0)
		return code;
	/* A client that resets mid-response must cost a write error, not the
	 * process (libuv and OpenSSL's socket BIO both write(2)). */
	signal(SIGPIPE, SIG_IGN);
	code = EXIT_USAGE;
	if (config_positional_count(cfg) != 0) {
		fprintf(stderr, "sayin-publisher serve: unexpected argument '%s'\n",
		        config_positional(cfg, 0));
		goto done;
	}
	code = cmd_prepare(&serve_spec, cfg, &pipe, read_limits, &lim, &st);
	if (code >= 0)
		goto done;
	s.argc = argc;
	s.argv = argv;
	atomic_init(&s.reloads, 0);
	atomic_init(&s.reload_failures, 0);
	rc = accesslog_edges_parse(config_get(cfg, "client-ip-header"),
	                           config_get(cfg, "trusted-edges"), &edges, err, sizeof(err));
	if (rc == 0)
		rc = accesslog_configure("api-access-log", config_get(cfg, "api-access-log"), err,
		                         sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher serve: %s\n", rc == -ENOMEM ? "out of memory" : err);
		code = rc == SAYIN_ECONFIG ? EXIT_USAGE : EXIT_FAIL;
		goto done;
	}
	rc = api_tls_configure(cfg, config_get(cfg, "insecure-http") != NULL, &s.tls, err,
	                       sizeof(err));
	if (rc == 0)
		rc = config_get_ranged(cfg, "tls-handshake-timeout-ms", &aopt.handshake_timeout_ms, err,
		                       sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher serve: %s\n", rc == -ENOMEM ? "out of memory" : err);
		code = rc == SAYIN_ECONFIG ? EXIT_USAGE : EXIT_FAIL;
		goto done;
	}
	aopt.tls = s.tls;
	code = EXIT_FAIL;
	s.grace_ms = lim.grace_ms;
	/* The API creates authors explicitly (author add): a token's author
	 * always exists. */
	pipe.publish.create_authors = 0;
	if (config_get(cfg, "upload-dir") != NULL)
		snprintf(upload_dir, sizeof(upload_dir), "%s", config_get(cfg, "upload-dir"));
	else
		snprintf(upload_dir, sizeof(upload_dir), "%s/uploads", config_get(cfg, "data"));
	/* libuv's pool runs the encodes: one thread per worker. Read when the
	 * pool first starts, so set before any work is queued. */
	snprintf(threads, sizeof(threads), "%llu", (unsigned long long)lim.workers);
	setenv("UV_THREADPOOL_SIZE", threads, 1);
	if (metrics_create(&reg) != 0 || define_reload_metrics(reg, &s) != 0 ||
	    metrics_process_define(reg) != 0 || store_metrics_define(reg, st) != 0 ||
	    (s.tls != NULL && tls_metrics_define(reg, s.tls) != 0) ||
	    (pipe.publish.n_targets == 0 && delivery_outbox_metrics_define(reg, st) != 0) ||
	    uv_loop_init(&s.loop) != 0) {
		fprintf(stderr, "sayin-publisher serve: cannot make the metrics or the event loop\n");
		goto done;
	}
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
		              .tls = aopt.tls, .handshake_timeout_ms = aopt.handshake_timeout_ms,
		              .workers = (unsigned)lim.workers, .queue = (unsigned)lim.queue,
		              .max_upload = pipe.media.max_input_bytes, .metrics = reg,
		              .edges = edges,
		              .on_commit = s.delivery ? kick_delivery : NULL,
		              .on_commit_arg = s.delivery };
	if (api_options_read_limits(cfg, &aopt, err, sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher serve: %s\n", err);
		code = EXIT_USAGE;
		goto done;
	}
	rc = api_start(&s.loop, st, &pipe, &aopt, &s.api, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher serve: %s\n", err);
		goto done;
	}
	uv_signal_init(&s.loop, &s.sigint);
	uv_signal_init(&s.loop, &s.sigterm);
	uv_signal_init(&s.loop, &s.sighup);
	s.sigint.data = s.sigterm.data = s.sighup.data = &s;
	uv_signal_start(&s.sigint, on_serve_signal, SIGINT);
	uv_signal_start(&s.sigterm, on_serve_signal, SIGTERM);
	uv_signal_start(&s.sighup, on_serve_reload, SIGHUP);
	if (notify_watchdog_start(&s.loop, NULL, NULL, &s.watchdog) != 0)
		log_warn("serve: the systemd watchdog is not pinged");
	log_info("serve: ingest API on %s://%s (port %d), %llu workers, queue %llu, uploads in %s",
	         s.tls != NULL ? "https" : "http", aopt.listen, api_port(s.api), (unsigned long long)lim.workers,
	         (unsigned long long)lim.queue, upload_dir);
	notify_ready("serving");
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
	accesslog_edges_free(edges);
	store_close(st);
	tls_server_free(s.tls);
	config_free(cfg);
	return code;
}

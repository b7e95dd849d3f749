/* sayin-origin: serves the store, read-only, to CDN edges over HTTP/1.1 on
 * one event loop per core.
 *
 * Shape of the process:
 * - --threads N worker threads. Each runs its own uv loop with its own
 *   listening socket on --listen (SO_REUSEPORT: the kernel spreads new
 *   connections), its own serve handler and its own metrics shard, so the
 *   request path shares no lock and no written cache line. The store is
 *   opened once, read-only, and shared.
 * - The main thread runs a small loop of its own for SIGTERM/SIGINT, SIGHUP
 *   (reload, below), the systemd watchdog's pings and, with
 *   --admin-listen, a server that answers only /metrics and /healthz. That
 *   keeps scrapes off the fans' listener (which then answers /metrics with
 *   404) and lets them through while the workers are saturated. Without
 *   --admin-listen every worker serves /metrics itself.
 * - Everything is set up on the main thread before any worker thread starts,
 *   so a socket that cannot be bound leaves nothing running (exit 1).
 * - Process-wide series (connections, timeouts, the store's figures) are
 *   callbacks evaluated at scrape time on the scraping thread: the HTTP
 *   core's own counters are relaxed atomics, and the store is read in a
 *   short read transaction.
 * - SIGHUP reloads what may change while running: the log level, the access
 *   log (reopened, so logrotate can move it) and the cache lifetimes. The
 *   main thread reads the configuration again (same arguments, same file,
 *   the environment as it was at start), checks every value, and only then
 *   applies: a bad file keeps the old settings and logs why. The new
 *   serve_options go to each loop through its reload_async, and each loop
 *   copies them into its own handler between requests, so no request sees
 *   half of them and no connection is touched. Listening addresses, limits
 *   and threads take a restart; a change to them is logged as ignored.
 * - With --tls-cert and --tls-key, --listen speaks HTTPS only (core/tls):
 *   one TLS context, shared by every loop, so that a session ticket from
 *   one loop resumes on another. SIGHUP reads the certificate and key
 *   again; open connections keep theirs. --admin-listen stays plain HTTP
 *   (a private address for Prometheus). */
#include "core/accesslog.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/error.h"
#include "core/http.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/notify.h"
#include "serve.h"
#include "core/store.h"
#include "core/tls.h"
#include "core/version.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

struct origin;

/* Arguments of the scrape-time callbacks: which origin, which field. */
struct field_arg {
	struct origin *o;
	size_t offset;
};

struct worker {
	struct origin *o;
	uv_loop_t loop;
	uv_thread_t thread;
	uv_async_t stop_async; /* main thread -> this loop: stop serving */
	uv_async_t reload_async; /* main thread -> this loop: take o->next_opt */
	serve_handler *sh;
	metrics_shard *shard;
	/* Scrapes on other threads read the server's counters. The server is
	 * freed once stopped, so it is handed over under the lock, and its
	 * last counters stay behind in last. */
	uv_mutex_t stats_lock;
	http_server *server;
	http_stats last;
	/* The systemd watchdog: this loop's timer counts beats; the main
	 * loop pings only while every loop's count moves (workers_healthy). */
	uv_timer_t beat_timer;
	atomic_ullong beats;
	unsigned long long beats_seen; /* main thread only */
	int loop_ready, lock_ready, async_ready, reload_ready, beat_ready;
	int started; /* the thread runs the loop (and drains it when stopped) */
	int joined;
};

struct admin_handler {
	http_handler base; /* first: the core hands us &base */
	metrics *reg;
};

struct origin {
	config *cfg;
	int argc;
	char **argv; /* read again on SIGHUP */
	store *st;
	metrics *reg;
	serve_metrics *ids;
	serve_options serve_opt;
	accesslog_edges *edges;
	/* SIGHUP: the options the loops take next, under reload_lock (a loop
	 * copies them while the main thread may write the next ones). */
	uv_mutex_t reload_lock;
	int reload_lock_ready;
	serve_options next_opt;
	atomic_ullong reloads, reload_failures;
	notify_watchdog *watchdog;
	uint64_t watchdog_ms; /* ping interval, 0: no watchdog */
	unsigned long long watchdog_ticks;
	http_limits limits;
	tls_server *tls; /* NULL: plain HTTP on --listen */
	uint64_t grace_ms;
	const char *listen;
	const char *admin_listen;
	char bound[300]; /* listen with the port actually bound (for port 0) */

	unsigned n_workers;
	struct worker *workers;

	uv_loop_t loop; /* main thread: signals and the admin listener */
	uv_signal_t sigint, sigterm, sighup;
	uv_async_t stopped_async; /* a worker finished stopping */
	atomic_uint workers_stopped;
	http_server *admin;
	struct admin_handler admin_handler;
	int loop_ready, handles_ready, signals_closed, async_closed;
	int stopping, admin_stopped;

	struct field_arg http_args[10];
	struct field_arg store_args[3];
};

static const char *const origin_settings[] = {
	"data", "listen", "threads", "admin-listen", "access-log", "max-header-bytes", "max-headers",
	"max-uri", "max-connections", "idle-timeout-ms", "header-timeout-ms", "write-timeout-ms",
	"shutdown-grace-ms", "tls-cert", "tls-key", "tls-handshake-timeout-ms", "tls-ticket-rotate-s",
	"name-max-age", "name-shared-max-age", "stale-while-revalidate",
	"stale-if-error", "log-level", "client-ip-header", "trusted-edges", NULL
};

static void usage(FILE *out)
{
	fprintf(out, "Usage: sayin-origin [--data DIR] [--listen HOST:PORT] [--threads N] "
	             "[--config FILE] [settings]\n"
	             "       sayin-origin --version\n\n"
	             "Serves the sayin store read-only over HTTP/1.1 for CDN edges.\n"
	             "SIGHUP reloads the log level, the access log and the cache lifetimes.\n");
	config_usage(out, NULL, 0, origin_settings);
}

/* ---- settings ---- */

struct u64_setting {
	const char *name;
	uint64_t *out; /* its range: core/config.c's table (config_get_ranged) */
};

/* The settings SIGHUP may change, from cfg into opt (other fields kept).
 * Returns 0, or SAYIN_ECONFIG with the message in err. */
static int read_lifetimes(const config *cfg, serve_options *opt, char *err, size_t errlen)
{
	const struct u64_setting numbers[] = {
		{ "name-max-age", &opt->name_max_age },
		{ "name-shared-max-age", &opt->name_shared_max_age },
		{ "stale-while-revalidate", &opt->stale_while_revalidate },
		{ "stale-if-error", &opt->stale_if_error },
	};

	for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
		int rc = config_get_ranged(cfg, numbers[i].name, numbers[i].out, err, errlen);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* Reads and range-checks every numeric setting. Returns 0, or SAYIN_ECONFIG
 * with the message in err. */
static int read_settings(struct origin *o, uint64_t *threads, char *err, size_t errlen)
{
	uint64_t header_bytes, headers, uri, conns, idle, head_to, write_to, handshake_to;
	const struct u64_setting numbers[] = {
		{ "threads", threads },
		{ "max-header-bytes", &header_bytes },
		{ "max-headers", &headers },
		{ "max-uri", &uri },
		{ "max-connections", &conns },
		{ "idle-timeout-ms", &idle },
		{ "header-timeout-ms", &head_to },
		{ "write-timeout-ms", &write_to },
		{ "tls-handshake-timeout-ms", &handshake_to },
		{ "shutdown-grace-ms", &o->grace_ms },
	};

	for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
		int rc = config_get_ranged(o->cfg, numbers[i].name, numbers[i].out, err, errlen);
		if (rc != 0)
			return rc;
	}
	if (read_lifetimes(o->cfg, &o->serve_opt, err, errlen) != 0)
		return SAYIN_ECONFIG;
	o->listen = config_get(o->cfg, "listen");
	o->admin_listen = config_get(o->cfg, "admin-listen");
	if (o->admin_listen != NULL && o->admin_listen[0] == '\0')
		o->admin_listen = NULL;

	/* Bodies up to 64 KiB are read and dropped so the handler can answer a
	 * POST with 405 and a GET with a body with 400, rather than 413. */
	o->limits.max_body = 64 * 1024;
	o->limits.max_header_bytes = (size_t)header_bytes;
	o->limits.max_headers = (size_t)headers;
	o->limits.max_uri = (size_t)uri;
	o->limits.max_connections = (unsigned)conns;
	o->limits.idle_timeout_ms = idle;
	o->limits.header_timeout_ms = head_to;
	o->limits.write_timeout_ms = write_to;
	o->limits.handshake_timeout_ms = handshake_to;
	return 0;
}

/* The TLS context when --tls-cert and --tls-key are set. Returns 0, or
 * SAYIN_ECONFIG (one without the other, a bad file) with err set. */
static int origin_tls(struct origin *o, char *err, size_t errlen)
{
	tls_options topt = { .cert_file = config_get(o->cfg, "tls-cert"),
		             .key_file = config_get(o->cfg, "tls-key"),
		             .cert_setting = "--tls-cert",
		             .key_setting = "--tls-key" };

	if (topt.cert_file == NULL && topt.key_file == NULL)
		return 0;
	if (topt.cert_file == NULL || topt.key_file == NULL) {
		snprintf(err, errlen, "--tls-cert and --tls-key go together: %s is set, %s is not",
		         topt.cert_file != NULL ? "--tls-cert" : "--tls-key",
		         topt.cert_file != NULL ? "--tls-key" : "--tls-cert");
		return SAYIN_ECONFIG;
	}
	if (config_get_ranged(o->cfg, "tls-ticket-rotate-s", &topt.ticket_rotate_s, err, errlen) !=
	    0)
		return SAYIN_ECONFIG;
	return tls_server_new(&topt, &o->tls, err, errlen);
}

/* ---- scrape-time series ---- */

static void worker_stats(struct worker *w, http_stats *out)
{
	uv_mutex_lock(&w->stats_lock);
	if (w->server != NULL)
		http_server_stats(w->server, out);
	else
		*out = w->last;
	uv_mutex_unlock(&w->stats_lock);
}

/* Sums one http_stats field over the workers. One lock per worker per
 * series per scrape: scrapes are rare, the request path never takes it. */
static double http_stat_sum(void *arg)
{
	const struct field_arg *f = arg;
	uint64_t total = 0;

	for (unsigned i = 0; i < f->o->n_workers; i++) {
		http_stats s;
		uint64_t v;
		worker_stats(&f->o->workers[i], &s);
		memcpy(&v, (const char *)&s + f->offset, sizeof(v));
		total += v;
	}
	return (double)total;
}

/* One short read transaction per series; NaN if the store cannot be read. */
static double store_stat(void *arg)
{
	const struct field_arg *f = arg;
	store_txn *txn;
	store_stats s;
	uint64_t v;
	int rc;

	if (store_txn_begin(f->o->st, 0, &txn) != 0)
		return NAN;
	rc = store_stats_get(txn, &s);
	store_txn_abort(txn);
	if (rc != 0)
		return NAN;
	memcpy(&v, (const char *)&s + f->offset, sizeof(v));
	return (double)v;
}

static double thread_count(void *arg)
{
	return (double)((struct origin *)arg)->n_workers;
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

static const struct {
	const char *name, *help, *labels;
	int counter;
	size_t offset;
} http_series[] = {
	{ "sayin_origin_connections_open", "Client connections open now, over all event loops.",
	  NULL, 0, offsetof(http_stats, connections_open) },
	{ "sayin_origin_connections_accepted_total", "Client connections accepted.", NULL, 1,
	  offsetof(http_stats, connections_accepted) },
	{ "sayin_origin_connections_refused_total",
	  "Connections over --max-connections, answered 503 and closed.", NULL, 1,
	  offsetof(http_stats, connections_refused) },
	{ "sayin_origin_timeouts_total", "Connections closed by a timeout, by kind.",
	  "kind=\"header\"", 1, offsetof(http_stats, timeouts_header) },
	{ "sayin_origin_timeouts_total", "", "kind=\"idle\"", 1, offsetof(http_stats, timeouts_idle) },
	{ "sayin_origin_timeouts_total", "", "kind=\"write\"", 1,
	  offsetof(http_stats, timeouts_write) },
	{ "sayin_origin_bad_requests_total",
	  "Malformed or over-limit requests the HTTP core answered itself (400, 413, 414, 431).",
	  NULL, 1, offsetof(http_stats, bad_requests) },
	{ "sayin_origin_accept_errors_total",
	  "accept() failures by errno: EMFILE/ENFILE pause accepting for 100 ms.",
	  "reason=\"EMFILE\"", 1, offsetof(http_stats, accept_errors_emfile) },
	{ "sayin_origin_accept_errors_total", "", "reason=\"ENFILE\"", 1,
	  offsetof(http_stats, accept_errors_enfile) },
	{ "sayin_origin_accept_errors_total", "", "reason=\"other\"", 1,
	  offsetof(http_stats, accept_errors_other) },
};

static const struct {
	const char *name, *help;
	size_t offset;
} store_series[] = {
	{ "sayin_store_objects", "Content-addressed objects in the store.",
	  offsetof(store_stats, objects) },
	{ "sayin_store_names", "Names (feeds, pages) in the store.", offsetof(store_stats, names) },
	{ "sayin_store_posts", "Posts in the store.", offsetof(store_stats, posts) },
};

/* Defines every series, before any shard exists. Returns 0 or an error. */
static int define_metrics(struct origin *o)
{
	metrics_id id;
	int rc;

	_Static_assert(sizeof(http_series) / sizeof(http_series[0]) ==
	                       sizeof(((struct origin *)0)->http_args) /
	                               sizeof(((struct origin *)0)->http_args[0]),
	               "one argument per http series");
	_Static_assert(sizeof(store_series) / sizeof(store_series[0]) ==
	                       sizeof(((struct origin *)0)->store_args) /
	                               sizeof(((struct origin *)0)->store_args[0]),
	               "one argument per store series");
	rc = metrics_create(&o->reg);
	if (rc != 0)
		return rc;
	rc = serve_metrics_define(o->reg, &o->ids);
	if (rc != 0)
		return rc;
	for (size_t i = 0; i < sizeof(http_series) / sizeof(http_series[0]); i++) {
		o->http_args[i].o = o;
		o->http_args[i].offset = http_series[i].offset;
		if (http_series[i].counter)
			id = metrics_counter_fn(o->reg, http_series[i].name, http_series[i].help,
			                        http_series[i].labels, http_stat_sum, &o->http_args[i]);
		else
			id = metrics_gauge_fn(o->reg, http_series[i].name, http_series[i].help,
			                      http_series[i].labels, http_stat_sum, &o->http_args[i]);
		if (id < 0)
			return id;
	}
	for (size_t i = 0; i < sizeof(store_series) / sizeof(store_series[0]); i++) {
		o->store_args[i].o = o;
		o->store_args[i].offset = store_series[i].offset;
		id = metrics_gauge_fn(o->reg, store_series[i].name, store_series[i].help, NULL,
		                      store_stat, &o->store_args[i]);
		if (id < 0)
			return id;
	}
	id = metrics_gauge_fn(o->reg, "sayin_origin_threads", "Event loops serving --listen.", NULL,
	                      thread_count, o);
	if (id < 0)
		return id;
	id = metrics_counter_fn(o->reg, "sayin_config_reloads_total",
	                        "SIGHUP reloads of the settings, by result (failed: the old "
	                        "settings stayed).",
	                        "result=\"ok\"", atomic_count, &o->reloads);
	if (id < 0)
		return id;
	id = metrics_counter_fn(o->reg, "sayin_config_reloads_total", "", "result=\"failed\"",
	                        atomic_count, &o->reload_failures);
	if (id < 0)
		return id;
	id = metrics_counter_fn(o->reg, "sayin_access_log_write_failures_total",
	                        "Access log lines lost to a failed write (full disk, closed stderr).",
	                        NULL, access_log_failures, NULL);
	if (id < 0)
		return id;
	rc = store_metrics_define(o->reg, o->st);
	if (rc != 0)
		return rc;
	if (o->tls != NULL) {
		rc = tls_metrics_define(o->reg, o->tls);
		if (rc != 0)
			return rc;
	}
	return metrics_process_define(o->reg);
}

/* ---- the admin listener (main thread) ---- */

static void free_page(void *arg)
{
	free(arg);
}

static void admin_respond_text(http_request *req, int status, const char *text,
                               const http_header *extra, size_t n_extra)
{
	http_header h[3] = { { "Content-Type", "text/plain; charset=utf-8" },
		             { "Cache-Control", "no-store" } };
	size_t n = 2;

	if (n_extra > 0)
		h[n++] = extra[0];
	http_respond(req, status, h, n, text, strlen(text), 1, 0, NULL, NULL);
}

static void admin_on_request(http_handler *self, http_request *req)
{
	struct admin_handler *ah = (struct admin_handler *)self;
	static const http_header allow = { "Allow", "GET, HEAD" };
	http_header h[2] = { { "Content-Type", METRICS_CONTENT_TYPE }, { "Cache-Control", "no-store" } };
	char *text;
	size_t len;

	if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
		admin_respond_text(req, 405, "method not allowed\n", &allow, 1);
		return;
	}
	if (strcmp(req->path, "/healthz") == 0) {
		admin_respond_text(req, 200, "ok\n", NULL, 0);
		return;
	}
	if (strcmp(req->path, "/metrics") != 0) {
		admin_respond_text(req, 404, "not found\n", NULL, 0);
		return;
	}
	if (metrics_render(ah->reg, &text, &len) != 0) {
		admin_respond_text(req, 503, "out of memory\n", NULL, 0);
		return;
	}
	/* The core drops the body of a HEAD itself. */
	http_respond(req, 200, h, 2, text, len, 1, 0, free_page, text);
}

/* ---- stopping ---- */

/* The signal handles keep the main loop running. stopped_async does not
 * (it is unref'd): a worker may still be inside uv_async_send on it, so it
 * is closed only after every worker thread has been joined. */
static void close_signals(struct origin *o)
{
	if (!o->handles_ready || o->signals_closed)
		return;
	o->signals_closed = 1;
	uv_close((uv_handle_t *)&o->sigint, NULL);
	uv_close((uv_handle_t *)&o->sigterm, NULL);
	uv_close((uv_handle_t *)&o->sighup, NULL);
}

/* The main loop ends once the admin listener and every worker are done. */
static void main_check_done(struct origin *o)
{
	if (o->admin_stopped && atomic_load(&o->workers_stopped) == o->n_workers)
		close_signals(o);
}

static void on_worker_async_stopped(uv_async_t *async)
{
	main_check_done(async->data);
}

static void on_admin_stopped(void *arg)
{
	struct origin *o = arg;

	o->admin = NULL;
	o->admin_stopped = 1;
	main_check_done(o);
}

/* Worker thread: the server is gone, so the loop only has this handle left;
 * closing it ends the thread's uv_run. */
static void on_worker_server_stopped(void *arg)
{
	struct worker *w = arg;
	struct origin *o = w->o;

	uv_close((uv_handle_t *)&w->stop_async, NULL);
	uv_close((uv_handle_t *)&w->reload_async, NULL);
	if (w->beat_ready)
		uv_close((uv_handle_t *)&w->beat_timer, NULL);
	atomic_fetch_add(&o->workers_stopped, 1);
	uv_async_send(&o->stopped_async);
}

/* Worker thread. Responses in flight get grace_ms to finish. */
static void on_worker_stop(uv_async_t *async)
{
	struct worker *w = async->data;
	http_server *server;

	uv_mutex_lock(&w->stats_lock);
	server = w->server;
	if (server != NULL)
		http_server_stats(server, &w->last);
	w->server = NULL;
	uv_mutex_unlock(&w->stats_lock);
	if (server != NULL)
		http_server_stop(server, w->o->grace_ms, on_worker_server_stopped, w);
}

static void stop_serving(struct origin *o)
{
	if (o->stopping)
		return;
	o->stopping = 1;
	for (unsigned i = 0; i < o->n_workers; i++) {
		if (o->workers[i].started)
			uv_async_send(&o->workers[i].stop_async);
	}
	if (o->admin != NULL)
		http_server_stop(o->admin, o->grace_ms, on_admin_stopped, o);
	else
		o->admin_stopped = 1;
	main_check_done(o);
}

static void on_signal(uv_signal_t *handle, int signum)
{
	struct origin *o = handle->data;

	if (o->stopping) {
		log_info("origin: %s: already stopping", strsignal(signum));
		return;
	}
	log_info("origin: %s: finishing responses in flight (up to %llu ms), then exiting",
	         strsignal(signum), (unsigned long long)o->grace_ms);
	notify_stopping();
	stop_serving(o);
}

/* ---- the systemd watchdog ---- */

/* Worker thread: proof that this loop still turns. */
static void on_worker_beat(uv_timer_t *timer)
{
	struct worker *w = timer->data;

	atomic_fetch_add(&w->beats, 1);
}

/* Main thread, before each ping: every loop beat since the last one. A
 * worker beats four times per ping interval, so one silent interval means
 * a loop is stuck (a hung handler, a blocked read). */
static int workers_healthy(void *arg)
{
	struct origin *o = arg;
	int healthy = 1;

	if (o->stopping)
		return 1; /* the loops close their timers as they finish */
	for (unsigned i = 0; i < o->n_workers; i++) {
		struct worker *w = &o->workers[i];
		unsigned long long n = atomic_load(&w->beats);
		if (n == w->beats_seen && o->watchdog_ticks > 0)
			healthy = 0;
		w->beats_seen = n;
	}
	o->watchdog_ticks++;
	return healthy;
}

/* ---- SIGHUP: reload ---- */

/* Worker thread: takes the options the main thread published. */
static void on_worker_reload(uv_async_t *async)
{
	struct worker *w = async->data;
	serve_options opt;

	uv_mutex_lock(&w->o->reload_lock);
	opt = w->o->next_opt;
	uv_mutex_unlock(&w->o->reload_lock);
	serve_set_options(w->sh, &opt);
}

/* Settings a reload does not apply: a changed value is logged. */
static void warn_restart_only(const config *old, const config *cur)
{
	static const char *const reloadable[] = { "log-level", "access-log", "name-max-age",
		                                  "name-shared-max-age", "stale-while-revalidate",
		                                  "stale-if-error" };

	for (size_t i = 0; origin_settings[i] != NULL; i++) {
		const char *name = origin_settings[i], *a, *b;
		int reloads = 0;
		for (size_t j = 0; j < sizeof(reloadable) / sizeof(reloadable[0]); j++)
			reloads |= strcmp(name, reloadable[j]) == 0;
		if (reloads)
			continue;
		a = config_get(old, name);
		b = config_get(cur, name);
		if ((a == NULL) != (b == NULL) || (a != NULL && strcmp(a, b) != 0))
			log_warn("origin: SIGHUP: --%s changed; it takes effect on restart", name);
	}
}

/* Reads the configuration again and applies what may change while
 * running; on any error the settings in force stay and the error is
 * logged (and counted). */
static void origin_reload(struct origin *o)
{
	config *cfg = NULL;
	serve_options opt = o->serve_opt;
	enum log_level level;
	char err[512];
	int rc;

	notify_reloading();
	rc = config_load(o->argc, o->argv, NULL, 0, &cfg, err, sizeof(err));
	if (rc != 0)
		goto fail;
	if (log_parse_level(config_get(cfg, "log-level"), &level) != 0) {
		snprintf(err, sizeof(err), "--log-level: '%s' is not error, warn, info or debug",
		         config_get(cfg, "log-level"));
		goto fail;
	}
	if (read_lifetimes(cfg, &opt, err, sizeof(err)) != 0)
		goto fail;
	/* These two apply themselves; each keeps what was in force when it
	 * fails. The certificate comes from the files named at start. */
	if (o->tls != NULL && tls_server_reload(o->tls, err, sizeof(err)) != 0)
		goto fail;
	rc = accesslog_configure("access-log", config_get(cfg, "access-log"), err, sizeof(err));
	if (rc != 0)
		goto fail;
	log_set_level(level);
	o->serve_opt = opt;
	uv_mutex_lock(&o->reload_lock);
	o->next_opt = opt;
	uv_mutex_unlock(&o->reload_lock);
	for (unsigned i = 0; i < o->n_workers; i++)
		uv_async_send(&o->workers[i].reload_async);
	warn_restart_only(o->cfg, cfg);
	atomic_fetch_add(&o->reloads, 1);
	log_info("origin: SIGHUP: settings reloaded (log level %s, access log %s, names max-age %llu "
	         "s-maxage %llu)",
	         config_get(cfg, "log-level"), config_get(cfg, "access-log"),
	         (unsigned long long)opt.name_max_age, (unsigned long long)opt.name_shared_max_age);
	config_free(cfg);
	notify_ready("serving");
	return;
fail:
	config_free(cfg);
	atomic_fetch_add(&o->reload_failures, 1);
	log_error("origin: SIGHUP: %s; the settings in force stay", err);
	notify_ready("serving; the last reload failed");
}

static void on_sighup(uv_signal_t *handle, int signum)
{
	struct origin *o = handle->data;

	(void)signum;
	if (o->stopping)
		return;
	origin_reload(o);
}

static void worker_main(void *arg)
{
	struct worker *w = arg;

	uv_run(&w->loop, UV_RUN_DEFAULT);
}

/* ---- start-up and teardown ---- */

/* Sets a worker up and binds its socket, on the main thread: the loop does
 * not run yet, so nothing else touches it. addr names the port actually
 * bound after the first worker (for port 0). */
static int worker_init(struct origin *o, struct worker *w, const char *addr)
{
	int rc;

	w->o = o;
	rc = uv_loop_init(&w->loop);
	if (rc != 0)
		return rc;
	w->loop_ready = 1;
	rc = uv_mutex_init(&w->stats_lock);
	if (rc != 0)
		return rc;
	w->lock_ready = 1;
	rc = uv_async_init(&w->loop, &w->stop_async, on_worker_stop);
	if (rc != 0)
		return rc;
	w->stop_async.data = w;
	w->async_ready = 1;
	rc = uv_async_init(&w->loop, &w->reload_async, on_worker_reload);
	if (rc != 0)
		return rc;
	w->reload_async.data = w;
	w->reload_ready = 1;
	if (o->watchdog_ms > 0) {
		rc = uv_timer_init(&w->loop, &w->beat_timer);
		if (rc != 0)
			return rc;
		w->beat_timer.data = w;
		w->beat_ready = 1;
		uv_timer_start(&w->beat_timer, on_worker_beat, 0,
		               o->watchdog_ms / 4 > 0 ? o->watchdog_ms / 4 : 1);
		uv_unref((uv_handle_t *)&w->beat_timer);
	}
	w->shard = metrics_shard_new(o->reg);
	if (w->shard == NULL)
		return -ENOMEM;
	rc = serve_create(o->st, &o->serve_opt, o->ids, w->shard, &w->sh);
	if (rc != 0)
		return rc;
	return http_server_start_tls(&w->loop, addr, 1, &o->limits, o->tls, serve_http_handler(w->sh),
	                             &w->server);
}

/* "host:0" with the port the first worker got, so the others join it. */
static int bound_address(const char *listen, int port, char *out, size_t size)
{
	const char *colon = strrchr(listen, ':');
	int n;

	if (colon == NULL)
		return SAYIN_ECONFIG;
	n = snprintf(out, size, "%.*s:%d", (int)(colon - listen), listen, port);
	return n > 0 && (size_t)n < size ? 0 : SAYIN_ECONFIG;
}

/* Stops whatever start-up left running, on any path: workers whose thread
 * runs are stopped through their loop and joined; the others are unwound
 * here. Then everything is freed. */
static void origin_teardown(struct origin *o)
{
	if (o->workers != NULL && !o->stopping) {
		for (unsigned i = 0; i < o->n_workers; i++) {
			if (o->workers[i].started)
				uv_async_send(&o->workers[i].stop_async);
		}
		o->stopping = 1;
	}
	for (unsigned i = 0; o->workers != NULL && i < o->n_workers; i++) {
		struct worker *w = &o->workers[i];
		if (w->started) {
			if (!w->joined)
				uv_thread_join(&w->thread);
			w->joined = 1;
		} else if (w->loop_ready) {
			if (w->server != NULL)
				http_server_stop(w->server, 0, NULL, NULL);
			w->server = NULL;
			if (w->async_ready)
				uv_close((uv_handle_t *)&w->stop_async, NULL);
			if (w->reload_ready)
				uv_close((uv_handle_t *)&w->reload_async, NULL);
			if (w->beat_ready)
				uv_close((uv_handle_t *)&w->beat_timer, NULL);
			uv_run(&w->loop, UV_RUN_DEFAULT);
		}
		if (w->loop_ready && uv_loop_close(&w->loop) != 0)
			log_error("origin: event loop %u still had open handles at exit", i);
		serve_destroy(w->sh);
		if (w->lock_ready)
			uv_mutex_destroy(&w->stats_lock);
	}
	if (o->loop_ready) {
		if (o->admin != NULL)
			http_server_stop(o->admin, 0, NULL, NULL);
		o->admin = NULL;
		close_signals(o);
		notify_watchdog_stop(o->watchdog);
		o->watchdog = NULL;
		if (o->handles_ready && !o->async_closed) {
			o->async_closed = 1;
			uv_close((uv_handle_t *)&o->stopped_async, NULL);
		}
		uv_run(&o->loop, UV_RUN_DEFAULT);
		if (uv_loop_close(&o->loop) != 0)
			log_error("origin: main loop still had open handles at exit");
	}
	free(o->workers);
	if (o->reload_lock_ready)
		uv_mutex_destroy(&o->reload_lock);
	accesslog_edges_free(o->edges);
	serve_metrics_free(o->ids);
	metrics_destroy(o->reg);
	store_close(o->st);
	tls_server_free(o->tls);
	config_free(o->cfg);
}

static void listen_failed(const char *flag, const char *addr, int rc)
{
	if (rc == SAYIN_ECONFIG)
		fprintf(stderr, "sayin-origin: %s %s: not an address (want host:port or [v6]:port)\n",
		        flag, addr);
	else
		fprintf(stderr, "sayin-origin: cannot listen on %s %s: %s\n", flag, addr,
		        sayin_strerror(rc));
}

/* Binds every socket and starts the threads. Returns 0, or 1 after printing
 * why (the caller tears down). */
static int origin_start(struct origin *o)
{
	char *addr = o->bound;
	int rc;

	/* SO_REUSEPORT would let us join another process's group on the same
	 * port without a word: refuse a taken address first. */
	rc = http_listen_check(o->listen);
	if (rc != 0) {
		listen_failed("--listen", o->listen, rc);
		return 1;
	}
	o->workers = calloc(o->n_workers, sizeof(*o->workers));
	if (o->workers == NULL) {
		fprintf(stderr, "sayin-origin: out of memory\n");
		return 1;
	}
	snprintf(addr, sizeof(o->bound), "%s", o->listen);
	for (unsigned i = 0; i < o->n_workers; i++) {
		rc = worker_init(o, &o->workers[i], addr);
		if (rc != 0) {
			listen_failed("--listen", addr, rc);
			return 1;
		}
		if (i == 0 &&
		    bound_address(o->listen, http_server_port(o->workers[0].server), addr,
		                  sizeof(o->bound)) != 0) {
			fprintf(stderr, "sayin-origin: bad listen address %s\n", o->listen);
			return 1;
		}
	}
	if (o->admin_listen != NULL) {
		o->admin_handler.base.on_request = admin_on_request;
		o->admin_handler.reg = o->reg;
		rc = http_server_start(&o->loop, o->admin_listen, 0, NULL, &o->admin_handler.base,
		                       &o->admin);
		if (rc != 0) {
			listen_failed("--admin-listen", o->admin_listen, rc);
			return 1;
		}
	}
	for (unsigned i = 0; i < o->n_workers; i++) {
		rc = uv_thread_create(&o->workers[i].thread, worker_main, &o->workers[i]);
		if (rc != 0) {
			fprintf(stderr, "sayin-origin: cannot start a thread: %s\n", uv_strerror(rc));
			return 1;
		}
		o->workers[i].started = 1;
	}
	return 0;
}

static int main_loop_init(struct origin *o)
{
	if (uv_loop_init(&o->loop) != 0)
		return -1;
	o->loop_ready = 1;
	uv_signal_init(&o->loop, &o->sigint);
	uv_signal_init(&o->loop, &o->sigterm);
	uv_signal_init(&o->loop, &o->sighup);
	uv_async_init(&o->loop, &o->stopped_async, on_worker_async_stopped);
	o->sigint.data = o->sigterm.data = o->sighup.data = o->stopped_async.data = o;
	uv_unref((uv_handle_t *)&o->stopped_async);
	o->handles_ready = 1;
	uv_signal_start(&o->sigint, on_signal, SIGINT);
	uv_signal_start(&o->sigterm, on_signal, SIGTERM);
	uv_signal_start(&o->sighup, on_sighup, SIGHUP);
	return 0;
}

int main(int argc, char **argv)
{
	struct origin o;
	store_options sopt = { .read_only = 1 };
	enum log_level level;
	uint64_t threads;
	char err[512];
	int rc;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--version") == 0) {
			version_print(stdout, "sayin-origin");
			return 0;
		}
	}
	memset(&o, 0, sizeof(o));
	atomic_init(&o.workers_stopped, 0);
	atomic_init(&o.reloads, 0);
	atomic_init(&o.reload_failures, 0);
	o.argc = argc;
	o.argv = argv;

	rc = config_load(argc, argv, NULL, 0, &o.cfg, err, sizeof(err));
	if (rc == 1) {
		usage(stdout);
		config_free(o.cfg);
		return 0;
	}
	if (rc != 0) {
		fprintf(stderr, "sayin-origin: %s\n", err);
		return 2;
	}
	if (config_positional_count(o.cfg) > 0) {
		fprintf(stderr, "sayin-origin: unexpected argument '%s'\n", config_positional(o.cfg, 0));
		config_free(o.cfg);
		return 2;
	}
	if (log_parse_level(config_get(o.cfg, "log-level"), &level) != 0) {
		fprintf(stderr, "sayin-origin: --log-level: '%s' is not error, warn, info or debug\n",
		        config_get(o.cfg, "log-level"));
		config_free(o.cfg);
		return 2;
	}
	if (read_settings(&o, &threads, err, sizeof(err)) != 0) {
		fprintf(stderr, "sayin-origin: %s\n", err);
		config_free(o.cfg);
		return 2;
	}
	rc = accesslog_edges_parse(config_get(o.cfg, "client-ip-header"),
	                           config_get(o.cfg, "trusted-edges"), &o.edges, err, sizeof(err));
	if (rc == 0)
		rc = accesslog_configure("access-log", config_get(o.cfg, "access-log"), err,
		                         sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "sayin-origin: %s\n", rc == -ENOMEM ? "out of memory" : err);
		accesslog_edges_free(o.edges);
		config_free(o.cfg);
		return rc == SAYIN_ECONFIG ? 2 : 1;
	}
	o.serve_opt.edges = o.edges;
	rc = origin_tls(&o, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "sayin-origin: %s\n", rc == -ENOMEM ? "out of memory" : err);
		accesslog_edges_free(o.edges);
		config_free(o.cfg);
		return rc == SAYIN_ECONFIG ? 2 : 1;
	}
	o.n_workers = threads > 0 ? (unsigned)threads : uv_available_parallelism();
	if (o.n_workers == 0)
		o.n_workers = 1;
	log_set_level(level);
	signal(SIGPIPE, SIG_IGN);

	/* Read-only: the public-facing process cannot change the store. */
	rc = store_open(config_get(o.cfg, "data"), &sopt, &o.st);
	if (rc != 0) {
		if (rc == -ENOENT)
			fprintf(stderr, "sayin-origin: no store at %s: publish a post first "
			                "(sayin-publisher post)\n", config_get(o.cfg, "data"));
		else
			fprintf(stderr, "sayin-origin: cannot open store %s: %s\n",
			        config_get(o.cfg, "data"), sayin_strerror(rc));
		accesslog_edges_free(o.edges);
		config_free(o.cfg);
		/* A store of another format: a usage problem, not a crash. */
		return rc == SAYIN_ESTORENEWER || rc == SAYIN_ESTOREOLDER ? 2 : 1;
	}
	rc = define_metrics(&o);
	if (rc != 0) {
		fprintf(stderr, "sayin-origin: cannot define metrics: %s\n", sayin_strerror(rc));
		origin_teardown(&o);
		return 1;
	}
	/* /metrics on the fans' listener unless an admin listener takes it. */
	o.serve_opt.metrics_page = o.admin_listen != NULL ? NULL : o.reg;
	if (uv_mutex_init(&o.reload_lock) != 0) {
		fprintf(stderr, "sayin-origin: cannot create a lock\n");
		origin_teardown(&o);
		return 1;
	}
	o.reload_lock_ready = 1;
	o.watchdog_ms = notify_watchdog_interval_ms();
	if (main_loop_init(&o) != 0) {
		fprintf(stderr, "sayin-origin: cannot create the event loop\n");
		origin_teardown(&o);
		return 1;
	}
	if (origin_start(&o) != 0) {
		origin_teardown(&o);
		return 1;
	}
	log_info("origin: serving %s on %s://%s with %u event loop(s) (read-only); "
	         "/metrics on %s",
	         config_get(o.cfg, "data"), o.tls != NULL ? "https" : "http", o.bound, o.n_workers,
	         o.admin_listen != NULL ? o.admin_listen : o.bound);
	if (notify_watchdog_start(&o.loop, workers_healthy, &o, &o.watchdog) != 0)
		log_warn("origin: the systemd watchdog is not pinged");
	notify_ready("serving");
	uv_run(&o.loop, UV_RUN_DEFAULT);
	for (unsigned i = 0; i < o.n_workers; i++) {
		uv_thread_join(&o.workers[i].thread);
		o.workers[i].joined = 1;
	}
	log_info("origin: stopped");
	origin_teardown(&o);
	return 0;
}

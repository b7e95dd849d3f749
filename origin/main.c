/* sayin-origin: serves the store, read-only, to CDN edges over HTTP/1.1. */
#include "config.h"
#include "error.h"
#include "http.h"
#include "log.h"
#include "serve.h"
#include "store.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

struct origin {
	uv_loop_t *loop;
	http_server *server;
	uv_signal_t sigint, sigterm;
	int stopping;
};

static const char *const origin_settings[] = { "data", "listen", "log-level", NULL };

static void usage(FILE *out)
{
	fprintf(out, "Usage: sayin-origin [--data DIR] [--listen HOST:PORT] [--config FILE]\n\n"
	             "Serves the sayin store read-only over HTTP/1.1 for CDN edges.\n");
	config_usage(out, NULL, 0, origin_settings);
}

static void on_server_stopped(void *arg)
{
	struct origin *o = arg;
	uv_close((uv_handle_t *)&o->sigint, NULL);
	uv_close((uv_handle_t *)&o->sigterm, NULL);
}

static void on_signal(uv_signal_t *handle, int signum)
{
	struct origin *o = handle->data;
	if (o->stopping)
		return;
	o->stopping = 1;
	log_info("origin: %s: finishing responses in flight, then exiting", strsignal(signum));
	http_server_stop(o->server, 5000, on_server_stopped, o);
}

int main(int argc, char **argv)
{
	struct origin o = { 0 };
	store_options sopt = { .read_only = 1 };
	enum log_level level;
	serve_handler *sh = NULL;
	store *st = NULL;
	config *cfg = NULL;
	char err[512];
	int rc;

	rc = config_load(argc, argv, NULL, 0, &cfg, err, sizeof(err));
	if (rc == 1) {
		usage(stdout);
		config_free(cfg);
		return 0;
	}
	if (rc != 0) {
		fprintf(stderr, "sayin-origin: %s\n", err);
		return 2;
	}
	if (config_positional_count(cfg) > 0) {
		fprintf(stderr, "sayin-origin: unexpected argument '%s'\n", config_positional(cfg, 0));
		config_free(cfg);
		return 2;
	}
	if (log_parse_level(config_get(cfg, "log-level"), &level) != 0) {
		fprintf(stderr, "sayin-origin: --log-level: '%s' is not error, warn, info or debug\n",
		        config_get(cfg, "log-level"));
		config_free(cfg);
		return 2;
	}
	log_set_level(level);
	signal(SIGPIPE, SIG_IGN);

	/* Read-only: the public-facing process cannot change the store. */
	rc = store_open(config_get(cfg, "data"), &sopt, &st);
	if (rc != 0) {
		if (rc == -ENOENT)
			fprintf(stderr, "sayin-origin: no store at %s: publish a post first "
			                "(sayin-publisher post)\n", config_get(cfg, "data"));
		else
			fprintf(stderr, "sayin-origin: cannot open store %s: %s\n",
			        config_get(cfg, "data"), sayin_strerror(rc));
		config_free(cfg);
		return 1;
	}
	o.loop = uv_default_loop();
	if (serve_create(st, &sh) != 0) {
		fprintf(stderr, "sayin-origin: out of memory\n");
		rc = 1;
		goto done;
	}
	/* Bodies up to 64 KiB are read and dropped so the handler can answer a
	 * POST with 405 and a GET with a body with 400, rather than 413. */
	http_limits limits = { .max_body = 64 * 1024 };
	rc = http_server_start(o.loop, config_get(cfg, "listen"), 0, &limits, serve_http_handler(sh),
	                       &o.server);
	if (rc != 0) {
		fprintf(stderr, "sayin-origin: cannot listen on %s: %s\n", config_get(cfg, "listen"),
		        sayin_strerror(rc));
		rc = 1;
		goto done;
	}
	uv_signal_init(o.loop, &o.sigint);
	uv_signal_init(o.loop, &o.sigterm);
	o.sigint.data = o.sigterm.data = &o;
	uv_signal_start(&o.sigint, on_signal, SIGINT);
	uv_signal_start(&o.sigterm, on_signal, SIGTERM);
	log_info("origin: serving %s on http://%s (read-only)", config_get(cfg, "data"),
	         config_get(cfg, "listen"));
	uv_run(o.loop, UV_RUN_DEFAULT);
	log_info("origin: stopped");
	rc = 0;
done:
	uv_loop_close(o.loop);
	serve_destroy(sh);
	store_close(st);
	config_free(cfg);
	return rc;
}

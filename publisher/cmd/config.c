/* cmd config: checks the configuration like `nginx -t`, or shows it with sources. */
#include "cmd/cmd.h"

#include "core/accesslog.h"
#include "core/error.h"
#include "core/tls.h"
#include "deliver/delivery.h"
#include "ingest/api.h"
#include "pipeline.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const cmd_spec config_spec = {
	.name = "config",
	.usage = "Usage: sayin-publisher config check [--config FILE] [settings]\n"
	         "       sayin-publisher config show [--config FILE] [settings]\n\n"
	         "check reads the configuration as every command would (the file, the\n"
	         "environment, the flags) and prints every error with where it comes\n"
	         "from (FILE:LINE, $VARIABLE or --flag), then \"ok\" when there is none.\n"
	         "Exit codes: 0 ok, 1 errors, 2 usage. show prints each setting's\n"
	         "effective value and its source (flag, environment, FILE:LINE,\n"
	         "default), secrets masked. Neither opens the store: the site's recorded\n"
	         "settings are shown by `sayin-publisher site show`.\n",
};

static int wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return 1;
	}
	return 0;
}

/* What the readers of the settings would refuse beyond their types: the
 * ranges, the CDN drivers, the social accounts file, the outbox policy. */
static unsigned check_readers(const config *cfg)
{
	pipeline pipe = { 0 };
	outbox_policy pol;
	char err[1024];
	unsigned errors = 0;

	if (pipeline_configure(&pipe, cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		errors++;
	}
	pipeline_free(&pipe);
	if (delivery_policy_configure(cfg, &pol, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		errors++;
	}
	/* The API's upload limits. */
	{
		api_options aopt = { .workers = 1, .queue = 1 };
		uint64_t workers = 1, queue = 1;
		if (config_get_ranged(cfg, "workers", &workers, err, sizeof(err)) == 0 &&
		    config_get_ranged(cfg, "queue", &queue, err, sizeof(err)) == 0) {
			aopt.workers = (unsigned)workers;
			aopt.queue = (unsigned)queue;
		}
		if (api_options_read_limits(cfg, &aopt, err, sizeof(err)) != 0) {
			fprintf(stderr, "%s\n", err);
			errors++;
		}
	}
	return errors;
}

/* The certificates and keys both servers would load (a file missing, not
 * PEM, a key that does not match). */
static unsigned check_tls(const config *cfg)
{
	static const char *const pairs[][2] = { { "tls-cert", "tls-key" },
		                                { "api-tls-cert", "api-tls-key" } };
	unsigned errors = 0;

	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		tls_server *ts = NULL;
		char err[1024];
		int rc = tls_server_configure(cfg, pairs[i][0], pairs[i][1], &ts, err, sizeof(err));
		tls_server_free(ts);
		if (rc == 0)
			continue;
		fprintf(stderr, "%s\n", rc == -ENOMEM ? "out of memory" : err);
		errors++;
	}
	return errors;
}

/* Which edges may name the client (both programs' access logs): no type
 * check covers it, so it runs whatever else is wrong. */
static unsigned check_edges(const config *cfg)
{
	accesslog_edges *edges = NULL;
	char err[1024];
	int rc = accesslog_edges_parse(config_get(cfg, "client-ip-header"),
	                               config_get(cfg, "trusted-edges"), &edges, err, sizeof(err));

	accesslog_edges_free(edges);
	if (rc != SAYIN_ECONFIG)
		return 0;
	fprintf(stderr, "%s\n", err);
	return 1;
}

int cmd_config(int argc, char **argv)
{
	config *cfg = NULL;
	const char *verb = argc > 1 ? argv[1] : "";
	int n;

	if (wants_help(argc, argv)) {
		cmd_usage(stdout, &config_spec);
		return EXIT_OK;
	}
	if (strcmp(verb, "check") != 0 && strcmp(verb, "show") != 0) {
		cmd_usage(stderr, &config_spec);
		return EXIT_USAGE;
	}
	/* argv[1] is the verb: the settings follow it. */
	n = config_check(argc - 1, argv + 1, NULL, 0, stderr, &cfg);
	if (n < 0) {
		fprintf(stderr, "sayin-publisher config: out of memory\n");
		return EXIT_FAIL;
	}
	if (config_positional_count(cfg) != 0) {
		fprintf(stderr, "sayin-publisher config %s: unexpected argument '%s'\n", verb,
		        config_positional(cfg, 0));
		config_free(cfg);
		return EXIT_USAGE;
	}
	if (strcmp(verb, "show") == 0) {
		config_show(cfg, stdout);
		config_free(cfg);
		return n == 0 ? EXIT_OK : EXIT_FAIL;
	}
	n += (int)check_edges(cfg);
	n += (int)check_tls(cfg);
	if (n == 0)
		n = (int)check_readers(cfg);
	config_free(cfg);
	if (n > 0) {
		fprintf(stderr, "sayin-publisher config check: %d error%s\n", n, n == 1 ? "" : "s");
		return EXIT_FAIL;
	}
	printf("ok\n");
	return EXIT_OK;
}

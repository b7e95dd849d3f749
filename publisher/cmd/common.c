/* cmd common: what every command shares: usage, settings, the store. */
#include "cmd/cmd.h"

#include "core/error.h"
#include "core/log.h"

#include <errno.h>
#include <stdint.h>

const char *const cmd_outbox_settings[] = {
	"data", "map-size", "public-url", "listen", "varnish-edges", "varnish-soft-purge",
	"nginx-edges", "prewarm-edges", "fastly-service-id", "fastly-api-key", "fastly-api-key-file", "fastly-api-url",
	"fastly-soft-purge", "cloudflare-zone-id", "cloudflare-api-token", "cloudflare-api-token-file", "cloudflare-api-url",
	"cloudflare-purge-by", "cloudfront-distribution-id", "cloudfront-api-url", "s3-bucket",
	"s3-endpoint", "aws-access-key-id", "aws-secret-access-key", "aws-secret-access-key-file", "aws-region",
	"outbox-max-attempts", "outbox-max-age", "outbox-lease-ms", "outbox-backoff-ms",
	"log-level", NULL
};

void cmd_usage(FILE *out, const cmd_spec *spec)
{
	fputs(spec->usage, out);
	config_usage(out, spec->args, spec->nargs, spec->settings);
}

int cmd_load_config(const cmd_spec *spec, int argc, char **argv, config **cfg)
{
	enum log_level level;
	char err[512];
	int rc = config_load(argc, argv, spec->args, spec->nargs, cfg, err, sizeof(err));

	if (rc == 1) {
		cmd_usage(stdout, spec);
		config_free(*cfg);
		*cfg = NULL;
		return EXIT_OK;
	}
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher %s: %s\n", spec->name, err);
		return EXIT_USAGE;
	}
	if (log_parse_level(config_get(*cfg, "log-level"), &level) != 0) {
		fprintf(stderr, "sayin-publisher %s: --log-level must be error, warn, info or debug\n",
		        spec->name);
		config_free(*cfg);
		*cfg = NULL;
		return EXIT_USAGE;
	}
	log_set_level(level);
	return -1;
}

int cmd_open_store(const config *cfg, const char *name, store **st)
{
	store_options sopt = { 0 };
	char err[256];
	int rc;

	if (config_get_size(cfg, "map-size", 1 << 20, UINT64_MAX, &sopt.map_size, err,
	                    sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher %s: %s\n", name, err);
		return EXIT_USAGE;
	}
	rc = store_open(config_get(cfg, "data"), &sopt, st);
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher %s: cannot open store %s: %s\n", name,
		        config_get(cfg, "data"), sayin_strerror(rc));
		return EXIT_FAIL;
	}
	return -1;
}

int cmd_prepare(const cmd_spec *spec, const config *cfg, pipeline *pipe, cmd_settings_fn more,
                void *arg, store **st)
{
	char err[512];

	if (pipeline_configure(pipe, cfg, err, sizeof(err)) != 0 ||
	    (more != NULL && more(cfg, pipe, arg, err, sizeof(err)) != 0)) {
		fprintf(stderr, "sayin-publisher %s: %s\n", spec->name, err);
		return EXIT_USAGE;
	}
	return cmd_open_store(cfg, spec->name, st);
}

int cmd_store_exit(int rc)
{
	if (rc == 0)
		return EXIT_OK;
	return rc == SAYIN_ESTOREFULL || rc == -ENOSPC ? EXIT_STORE_FULL : EXIT_FAIL;
}

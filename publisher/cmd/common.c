/* cmd common: what every command shares: usage, settings, the store. */
#include "cmd/cmd.h"

#include "core/error.h"
#include "core/log.h"
#include "site.h"

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
		char where[512];
		config_describe(*cfg, "log-level", where, sizeof(where));
		fprintf(stderr, "sayin-publisher %s: %s: '%s' is not error, warn, info or debug\n",
		        spec->name, where, config_get(*cfg, "log-level"));
		config_free(*cfg);
		*cfg = NULL;
		return EXIT_USAGE;
	}
	log_set_level(level);
	return -1;
}

int cmd_open_store_format(const config *cfg, const char *name, int any_format, store **st)
{
	store_options sopt = { .any_format = any_format };
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
		return rc == SAYIN_ESTORENEWER || rc == SAYIN_ESTOREOLDER ? EXIT_USAGE : EXIT_FAIL;
	}
	return -1;
}

int cmd_open_store(const config *cfg, const char *name, store **st)
{
	return cmd_open_store_format(cfg, name, 0, st);
}

int cmd_apply_site(store *st, config *cfg, const char *name)
{
	char err[1536];
	int rc = site_apply(st, cfg, err, sizeof(err));

	if (rc == 0)
		return -1;
	fprintf(stderr, "sayin-publisher %s: %s\n", name, err);
	return rc == SAYIN_ECONFIG ? EXIT_USAGE : EXIT_FAIL;
}

int cmd_prepare(const cmd_spec *spec, config *cfg, pipeline *pipe, cmd_settings_fn more,
                void *arg, store **st)
{
	char err[1024];
	int code;

	/* The settings are checked before the store is opened (or created),
	 * then read again once the store's site settings are in cfg. */
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1) {
			code = cmd_open_store(cfg, spec->name, st);
			if (code < 0)
				code = cmd_apply_site(*st, cfg, spec->name);
			if (code >= 0)
				return code;
			pipeline_free(pipe);
		}
		if (pipeline_configure(pipe, cfg, err, sizeof(err)) != 0 ||
		    (more != NULL && more(cfg, pipe, arg, err, sizeof(err)) != 0)) {
			fprintf(stderr, "sayin-publisher %s: %s\n", spec->name, err);
			return EXIT_USAGE;
		}
	}
	cmd_warn_public_url(pipe);
	return -1;
}

void cmd_warn_public_url(const pipeline *pipe)
{
	if (pipe->insecure_url)
		log_warn("config: the public URL %s is http:// on a host that is not loopback: X and "
		         "Facebook fetch share cards over https only", pipe->base_url);
}

int cmd_store_exit(int rc)
{
	if (rc == 0)
		return EXIT_OK;
	return rc == SAYIN_ESTOREFULL || rc == -ENOSPC ? EXIT_STORE_FULL : EXIT_FAIL;
}

/* cmd site: records, changes and shows the site's settings kept in the store. */
#include "cmd/cmd.h"

#include "core/error.h"
#include "pipeline.h"
#include "site.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static const char *const site_settings[] = {
	"data", "map-size", "public-url", "listen", "feed-items", "feed-page-items",
	"loudness-target", "bitrate", "aac-fallback", "aac-bitrate", "aac-coder", "waveform-points",
	"log-level", NULL
};

static const cmd_spec site_spec = {
	.name = "site",
	.usage = "Usage: sayin-publisher site init --public-url https://HOST [settings]\n"
	         "       sayin-publisher site set KEY VALUE | site set --KEY VALUE ...\n"
	         "       sayin-publisher site show\n\n"
	         "The settings that shape published bytes (public-url, feed-items,\n"
	         "feed-page-items, loudness-target, bitrate, aac-fallback, aac-bitrate,\n"
	         "aac-coder, waveform-points) are recorded in the store, by init or by the\n"
	         "first publish; every command then uses them, and refuses to run with a\n"
	         "configuration that gives another value. init records them (once); set\n"
	         "changes one (then run `sayin-publisher rebuild --all`); show prints them.\n"
	         "Exit codes: 0 done, 1 failed (show: none recorded), 2 usage.\n",
	.settings = site_settings,
};

static int is_site_key(const char *key)
{
	for (size_t i = 0; site_keys[i] != NULL; i++) {
		if (strcmp(site_keys[i], key) == 0)
			return 1;
	}
	return 0;
}

static void print_site(const json_t *rec)
{
	for (size_t i = 0; site_keys[i] != NULL; i++) {
		const char *v = json_string_value(json_object_get(rec, site_keys[i]));
		printf("%s = %s\n", site_keys[i], v != NULL ? v : "(not recorded)");
	}
}

static int site_init(store *st, config *cfg)
{
	pipeline pipe = { 0 };
	json_t *rec = NULL;
	char err[1024];
	int rc, code = EXIT_FAIL;

	if (!config_explicit(cfg, "public-url")) {
		fprintf(stderr, "sayin-publisher site init: give the site's --public-url "
		                "(https://HOST, the CDN's address)\n");
		return EXIT_USAGE;
	}
	rc = site_load(st, &rec);
	if (rc == 0 && rec != NULL) {
		fprintf(stderr, "sayin-publisher site init: the store already records this site's "
		                "settings (site show); change one with `sayin-publisher site set KEY "
		                "VALUE`\n");
		json_decref(rec);
		return EXIT_USAGE;
	}
	if (rc == 0 && pipeline_configure(&pipe, cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher site init: %s\n", err);
		code = EXIT_USAGE;
		goto done;
	}
	cmd_warn_public_url(&pipe);
	if (rc == 0)
		rc = site_put(st, pipe.site_record);
	if (rc == 0)
		rc = site_load(st, &rec);
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher site init: %s\n", sayin_strerror(rc));
		code = cmd_store_exit(rc);
		goto done;
	}
	print_site(rec);
	code = EXIT_OK;
done:
	json_decref(rec);
	pipeline_free(&pipe);
	return code;
}

/* Changes the recorded site: key to value, or (key NULL) every site
 * setting cfg gives explicitly (site set --public-url URL ...). */
static int site_set(store *st, config *cfg, const char *key, const char *value)
{
	json_t *changes = json_object(); /* copies: config_set frees cfg's values */
	const char *k_name;
	json_t *k_val;
	pipeline pipe = { 0 };
	json_t *rec = NULL;
	char err[1024];
	int rc, code = EXIT_FAIL;

	if (changes == NULL)
		return EXIT_FAIL;
	if (key != NULL && !is_site_key(key)) {
		fprintf(stderr, "sayin-publisher site set: '%s' is not a site setting (one of: "
		                "public-url, feed-items, feed-page-items, loudness-target, bitrate, "
		                "aac-fallback, aac-bitrate, aac-coder, waveform-points)\n", key);
		code = EXIT_USAGE;
		goto done;
	}
	if (key != NULL)
		json_object_set_new(changes, key, json_string(value));
	for (size_t i = 0; key == NULL && site_keys[i] != NULL; i++) {
		if (config_explicit(cfg, site_keys[i]))
			json_object_set_new(changes, site_keys[i],
			                    json_string(config_get(cfg, site_keys[i])));
	}
	if (json_object_size(changes) == 0) {
		fprintf(stderr, "sayin-publisher site set: give KEY VALUE, or the settings to change "
		                "as flags (e.g. --public-url https://HOST)\n");
		code = EXIT_USAGE;
		goto done;
	}
	rc = site_load(st, &rec);
	if (rc == 0 && rec == NULL) {
		fprintf(stderr, "sayin-publisher site set: no site is recorded yet: run "
		                "`sayin-publisher site init --public-url https://HOST` first\n");
		code = EXIT_USAGE;
		goto done;
	}
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher site set: %s\n", sayin_strerror(rc));
		goto done;
	}
	/* The recorded site with the changes, checked as every command would
	 * read it. */
	for (size_t i = 0; rc == 0 && site_keys[i] != NULL; i++) {
		const char *v = json_string_value(json_object_get(rec, site_keys[i]));
		const char *change = json_string_value(json_object_get(changes, site_keys[i]));
		if (change != NULL)
			v = change;
		if (v != NULL)
			rc = config_set(cfg, site_keys[i], v);
	}
	if (rc == 0 && pipeline_configure(&pipe, cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher site set: %s\n", err);
		code = EXIT_USAGE;
		goto done;
	}
	cmd_warn_public_url(&pipe);
	if (rc == 0)
		rc = site_put(st, pipe.site_record);
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher site set: %s\n", sayin_strerror(rc));
		code = cmd_store_exit(rc);
		goto done;
	}
	json_object_foreach(changes, k_name, k_val) {
		const char *old = json_string_value(json_object_get(rec, k_name));
		printf("%s: '%s' -> '%s'\n", k_name, old ? old : "", json_string_value(k_val));
	}
	printf("now re-render what was published with the old values: "
	       "sayin-publisher rebuild --all\n");
	code = EXIT_OK;
done:
	json_decref(changes);
	json_decref(rec);
	pipeline_free(&pipe);
	return code;
}

static int site_show(store *st)
{
	json_t *rec = NULL;
	int rc = site_load(st, &rec);

	if (rc != 0) {
		fprintf(stderr, "sayin-publisher site show: %s\n", sayin_strerror(rc));
		return EXIT_FAIL;
	}
	if (rec == NULL) {
		fprintf(stderr, "sayin-publisher site show: no site is recorded yet (site init, or "
		                "the first publish records it)\n");
		return EXIT_FAIL;
	}
	print_site(rec);
	json_decref(rec);
	return EXIT_OK;
}

int cmd_site(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	const char *verb;
	size_t npos;
	int code = cmd_load_config(&site_spec, argc, argv, &cfg);

	if (code >= 0)
		return code;
	code = EXIT_USAGE;
	npos = config_positional_count(cfg);
	verb = npos > 0 ? config_positional(cfg, 0) : "";
	if (!((strcmp(verb, "init") == 0 && npos == 1) || (strcmp(verb, "show") == 0 && npos == 1) ||
	      (strcmp(verb, "set") == 0 && (npos == 3 || npos == 1)))) {
		cmd_usage(stderr, &site_spec);
		goto done;
	}
	code = cmd_open_store(cfg, "site", &st);
	if (code >= 0)
		goto done;
	if (strcmp(verb, "init") == 0)
		code = site_init(st, cfg);
	else if (strcmp(verb, "set") == 0)
		code = site_set(st, cfg, config_positional(cfg, 1), config_positional(cfg, 2));

	else
		code = site_show(st);
done:
	store_close(st);
	config_free(cfg);
	return code;
}

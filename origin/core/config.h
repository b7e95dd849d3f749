/* config: one mechanism for every setting of both programs. Each setting has
 * a default, an INI key (file given with --config or SAYIN_CONFIG, parsed by
 * libinih), an environment variable and a command-line flag; a flag overrides
 * the environment, which overrides the file, which overrides the default.
 * Commands add arguments of their own (flag-only, e.g. --author).
 *
 * Threading: load once at start-up on the main thread; afterwards the config
 * is read-only and may be read from any thread. */
#ifndef SAYIN_CONFIG_H
#define SAYIN_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct config config;

/* A command-only argument: --name VALUE, or --name alone when is_switch. */
typedef struct config_arg {
	const char *name;
	const char *metavar; /* e.g. "HANDLE"; NULL for a switch */
	const char *help;
	int is_switch;
} config_arg;

/* Parses argv (argv[0] is the command name and is skipped). Positional
 * arguments are kept in order (config_positional). Secrets (fastly-api-key,
 * cloudflare-api-token, aws-secret-access-key) may come from a file named by
 * their NAME-file setting (a bare name is looked up in
 * $CREDENTIALS_DIRECTORY); a secret given as a flag logs a warning and its
 * value is overwritten with 'x' in argv, which must therefore be writable
 * (main's is). Returns 0; 1 when --help
 * was given (the caller prints usage and exits 0); or SAYIN_ECONFIG with one
 * line in err naming the bad flag, file line, variable or value. *out is set
 * on 0 and 1 and must be freed with config_free(). */
int config_load(int argc, char **argv, const config_arg *args, size_t nargs, config **out,
                char *err, size_t errlen);
void config_free(config *cfg);

/* The value of a setting or argument by its flag name ("map-size", "author"),
 * or NULL when unset. Valid until config_free(). A switch reads "1" when set. */
const char *config_get(const config *cfg, const char *name);
/* Typed reads: sizes accept K, M, G, T suffixes (powers of 1024). Return 0,
 * or SAYIN_ECONFIG with a message naming the setting when the value does not
 * parse or is outside [min, max]. */
int config_get_u64(const config *cfg, const char *name, uint64_t min, uint64_t max, uint64_t *out,
                   char *err, size_t errlen);
int config_get_size(const config *cfg, const char *name, uint64_t min, uint64_t max,
                    uint64_t *out, char *err, size_t errlen);
/* The same for a setting whose range the settings table itself holds (the
 * origin's limits and lifetimes, serve's workers and queue), so that
 * `config check` refuses exactly what the program would. */
int config_get_ranged(const config *cfg, const char *name, uint64_t *out, char *err,
                      size_t errlen);

/* Where a setting's value comes from, for messages: "FILE:LINE: KEY" (the
 * config file), "$ENV", "--name" (a flag or the default) or "name
 * (recorded in the store)". Returns snprintf's count. */
int config_describe(const config *cfg, const char *name, char *buf, size_t len);
/* 1 when the setting was given (file, environment or flag), 0 when it is
 * its default or a value config_set put. */
int config_explicit(const config *cfg, const char *name);
/* Replaces a setting's value with one the store records (publisher/site.h).
 * 0, -ENOMEM, or SAYIN_EINVAL for an unknown name. Main thread, before the
 * config is shared. */
int config_set(config *cfg, const char *name, const char *value);

/* Checks a base URL: http:// or https://, a host, an optional numeric
 * port, no query, fragment or credentials. Returns 0, or SAYIN_ECONFIG with
 * why. *insecure is 1 for http:// on a host that is not loopback (X and
 * Facebook fetch cards over https only). Every load checks the URL
 * settings (public-url, the CDN and social API URLs, the edge lists). */
int config_check_url(const char *url, char *why, size_t whylen, int *insecure);

/* config check: loads like config_load, but goes on after an error and
 * prints every one to report ("FILE:LINE: ...", one a line), then checks
 * each setting's type. Returns the number of errors (0: clean) with *out
 * set (free with config_free), or -ENOMEM. */
int config_check(int argc, char **argv, const config_arg *args, size_t nargs, FILE *report,
                 config **out);
/* Prints every setting's effective value and where it comes from (flag,
 * environment, FILE:LINE, default), secrets masked. */
void config_show(const config *cfg, FILE *out);

size_t config_positional_count(const config *cfg);
const char *config_positional(const config *cfg, size_t i);

/* Prints the command's arguments, then each named setting with its flag, INI
 * key, environment variable and default. settings is NULL-terminated. */
void config_usage(FILE *out, const config_arg *args, size_t nargs, const char *const *settings);

/* Prints every setting as a README-ready Markdown table. */
void config_print_reference(FILE *out);

/* Prints an INI file with every setting commented out with its default,
 * grouped by [section] (sayin-publisher settings --example). */
void config_print_example(FILE *out);

#endif

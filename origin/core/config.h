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

/* config_internal: the tables of core/config_settings.c, read by
 * core/config.c. Private to core/config*.c. */
#ifndef SAYIN_CONFIG_INTERNAL_H
#define SAYIN_CONFIG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Every setting either program knows. publisher/README.md's table is what
 * `sayin-publisher settings` prints (test_config checks it). */
typedef struct setting {
	const char *name;    /* flag: --name */
	const char *section; /* INI [section] */
	const char *key;     /* INI key */
	const char *env;
	const char *def;     /* NULL: unset unless derived (see the help) */
	const char *help;
} setting;

extern const setting config__settings[];
extern const size_t config__n_settings;

/* The setting whose flag is name[0..len), or NULL; *index gets its place. */
const setting *config__find_setting(const char *name, size_t len, size_t *index);

/* A credential: its NAME-file companion follows it in the table. */
int config__is_secret(const setting *s);

/* NULL-terminated: the settings that are one URL, and lists of URLs. */
extern const char *const config__url_settings[];
extern const char *const config__url_list_settings[];

enum config_kind_type {
	CONFIG_K_NUMBER,
	CONFIG_K_SIZE,
	CONFIG_K_ON_OFF,
	CONFIG_K_DECIMAL,
	CONFIG_K_LEVEL,
	CONFIG_K_LOG_TARGET
};

/* The type of a setting, and its range when max != 0. */
typedef struct config_kind {
	const char *name;
	enum config_kind_type kind;
	uint64_t min, max;
} config_kind;

extern const config_kind config__kinds[];
extern const size_t config__n_kinds;

#endif

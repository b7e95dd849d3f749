/* site: the site identity, i.e. the settings that shape published bytes
 * (the public URL in every feed, page and card link; feed sizes; loudness
 * target; bitrates and renditions), recorded in the store (meta "site") so
 * that every command, whatever its flags, environment or file, publishes
 * the same site. Recorded by `site init` or by the first publish; changed
 * only by `site set`, followed by `rebuild --all`.
 *
 * The record is a JSON object of strings, keyed by setting name (flag
 * name), in site_keys order, so the same settings are the same bytes.
 *
 * Threading: main thread (site_apply, site_record) or the publish
 * transaction's thread (site_ensure). */
#ifndef SAYIN_SITE_H
#define SAYIN_SITE_H

#include "core/config.h"
#include "core/store.h"

#include <jansson.h>
#include <stddef.h>

#define SITE_RECORD_KEY "site" /* in STORE_META */

/* The settings recorded, NULL-terminated. */
extern const char *const site_keys[];

/* Reads the record in a read transaction of its own: 0 and *out (a new
 * reference) or *out NULL when the store has none; a store error. */
int site_load(store *st, json_t **out);

/* Makes cfg publish the recorded site: a setting cfg does not give
 * explicitly takes the recorded value (config_set); one it gives with
 * another value is refused: SAYIN_ECONFIG with err naming the setting,
 * where it comes from, both values and the fix (site set, then rebuild
 * --all). No record: cfg is left as it is (0). */
int site_apply(store *st, config *cfg, char *err, size_t errlen);

/* The record of cfg's effective settings, public-url being base_url (the
 * derived one when unset), malloc'd into *out: 0 or -ENOMEM. */
int site_record(const config *cfg, const char *base_url, char **out);

/* In the write transaction txn: records record (site_record's bytes) when
 * the store has none yet (the first publish). 0; SAYIN_ECONFIG with err
 * when another site was recorded since the caller read it (a `site set`
 * meanwhile: restart); a store error. */
int site_ensure(store_txn *txn, const char *record, char *err, size_t errlen);

/* Writes record as the site in its own write transaction (site init, site
 * set). 0 or a store error. */
int site_put(store *st, const char *record);

#endif

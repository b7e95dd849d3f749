/* site: the settings that shape published bytes, recorded in the store. */
#include "site.h"

#include "core/error.h"
#include "core/jsonstore.h"
#include "core/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Each changes bytes a reader gets: URLs in every document (public-url),
 * which posts a feed or page holds (feed-items, feed-page-items), the
 * audio itself (loudness-target, bitrate, aac-*, waveform-points). */
const char *const site_keys[] = { "public-url", "feed-items", "feed-page-items",
	                          "loudness-target", "bitrate", "aac-fallback", "aac-bitrate",
	                          "aac-coder", "waveform-points", NULL };

int site_load(store *st, json_t **out)
{
	store_txn *txn;
	int rc = store_txn_begin(st, 0, &txn);

	*out = NULL;
	if (rc != 0)
		return rc;
	rc = jsonstore_get(txn, STORE_META, SITE_RECORD_KEY, out);
	store_txn_abort(txn);
	if (rc == SAYIN_ENOTFOUND) {
		*out = NULL;
		return 0;
	}
	return rc;
}

/* Two values of a setting are the same when equal as text, as numbers
 * ("-16" and "-16.0"), or as URLs but for trailing slashes. */
static int same_value(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *ea, *eb;
	double da, db;

	while (la > 0 && a[la - 1] == '/')
		la--;
	while (lb > 0 && b[lb - 1] == '/')
		lb--;
	if (la == lb && strncmp(a, b, la) == 0)
		return 1;
	da = strtod(a, &ea);
	db = strtod(b, &eb);
	return ea != a && *ea == '\0' && eb != b && *eb == '\0' && da == db;
}

int site_apply(store *st, config *cfg, char *err, size_t errlen)
{
	json_t *rec;
	int rc = site_load(st, &rec);

	if (rc != 0) {
		snprintf(err, errlen, "cannot read the site's settings from the store: %s",
		         sayin_strerror(rc));
		return rc;
	}
	if (rec == NULL)
		return 0;
	for (size_t i = 0; rc == 0 && site_keys[i] != NULL; i++) {
		const char *name = site_keys[i];
		const char *want = json_string_value(json_object_get(rec, name));
		const char *have = config_get(cfg, name);
		char where[512];

		if (want == NULL)
			continue;
		if (!config_explicit(cfg, name)) {
			rc = config_set(cfg, name, want);
			if (rc != 0)
				snprintf(err, errlen, "out of memory");
			continue;
		}
		if (have != NULL && same_value(have, want)) {
			/* The recorded spelling, so the record this run writes
			 * is the same bytes. */
			rc = config_set(cfg, name, want);
			if (rc != 0)
				snprintf(err, errlen, "out of memory");
			continue;
		}
		config_describe(cfg, name, where, sizeof(where));
		snprintf(err, errlen, "%s is '%s', but the store records %s = '%s' for this site: "
		         "drop the setting to use the recorded one, or change the site with "
		         "`sayin-publisher site set %s %s` and then `sayin-publisher rebuild --all`",
		         where, have ? have : "", name, want, name, have ? have : "VALUE");
		rc = SAYIN_ECONFIG;
	}
	json_decref(rec);
	return rc;
}

int site_record(const config *cfg, const char *base_url, char **out)
{
	json_t *rec = json_object();
	int rc = rec != NULL ? 0 : -ENOMEM;

	for (size_t i = 0; rc == 0 && site_keys[i] != NULL; i++) {
		const char *v = strcmp(site_keys[i], "public-url") == 0 ? base_url
		                                                        : config_get(cfg, site_keys[i]);
		if (v != NULL && json_object_set_new(rec, site_keys[i], json_string(v)) != 0)
			rc = -ENOMEM;
	}
	if (rc == 0) {
		*out = jsonstore_dumps(rec, NULL);
		if (*out == NULL)
			rc = -ENOMEM;
	}
	json_decref(rec);
	return rc;
}

int site_ensure(store_txn *txn, const char *record, char *err, size_t errlen)
{
	const void *have;
	size_t len;
	int rc = store_get_record(txn, STORE_META, SITE_RECORD_KEY, &have, &len);

	if (rc == SAYIN_ENOTFOUND) {
		rc = store_put_record(txn, STORE_META, SITE_RECORD_KEY, record, strlen(record));
		if (rc == 0)
			log_info("site: recorded by this first publish: %s", record);
		return rc;
	}
	if (rc != 0)
		return rc;
	if (len != strlen(record) || memcmp(have, record, len) != 0) {
		snprintf(err, errlen, "the site's settings in the store changed after this process "
		         "read them (sayin-publisher site set): restart it");
		return SAYIN_ECONFIG;
	}
	return 0;
}

int site_put(store *st, const char *record)
{
	store_txn *txn;
	int rc = store_txn_begin(st, 1, &txn);

	if (rc != 0)
		return rc;
	rc = store_put_record(txn, STORE_META, SITE_RECORD_KEY, record, strlen(record));
	if (rc != 0) {
		store_txn_abort(txn);
		return rc;
	}
	return store_txn_commit(txn);
}

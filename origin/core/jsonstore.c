/* jsonstore: see jsonstore.h. */
#include "core/jsonstore.h"

#include "core/error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

char *jsonstore_dumps(const json_t *doc, size_t *len)
{
	char *s = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (s != NULL && len != NULL)
		*len = strlen(s);
	return s;
}

int jsonstore_put(store_txn *txn, enum store_table table, const char *key, const json_t *doc)
{
	size_t len;
	char *s = jsonstore_dumps(doc, &len);
	int rc;

	if (s == NULL)
		return -ENOMEM;
	rc = store_put_record(txn, table, key, s, len);
	free(s);
	return rc;
}

int jsonstore_parse(const void *record, size_t len, json_t **out)
{
	json_t *j = json_loadb(record, len, 0, NULL);

	if (j == NULL || !json_is_object(j)) {
		json_decref(j);
		*out = NULL;
		return SAYIN_ECORRUPT;
	}
	*out = j;
	return 0;
}

int jsonstore_get(store_txn *txn, enum store_table table, const char *key, json_t **out)
{
	const void *rec;
	size_t len;
	int rc = store_get_record(txn, table, key, &rec, &len);

	*out = NULL;
	if (rc != 0)
		return rc;
	return jsonstore_parse(rec, len, out);
}

/* jsonstore: see jsonstore.h. */
#include "core/jsonstore.h"

#include "core/buf.h"
#include "core/error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int dump_to_buf(const char *p, size_t n, void *arg)
{
	return buf_append(arg, p, n) == 0 ? 0 : -1;
}

char *jsonstore_dump_flags(const json_t *doc, size_t flags, size_t *len)
{
	buf b = BUF_INIT;

	/* Into a buf, whose failure sticks: jansson may go on past a failed
	 * write, but a buf that failed once hands nothing on. */
	if (json_dump_callback(doc, dump_to_buf, &b, flags) != 0 || buf_failed(&b) ||
	    b.data == NULL) {
		buf_free(&b);
		return NULL;
	}
	return buf_take(&b, len);
}

char *jsonstore_dumps(const json_t *doc, size_t *len)
{
	return jsonstore_dump_flags(doc, JSON_COMPACT | JSON_PRESERVE_ORDER, len);
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
	json_error_t err;
	json_t *j = json_loadb(record, len, 0, &err);

	*out = NULL;
	/* Running out of memory while parsing is not a corrupt record. */
	if (j == NULL && json_error_code(&err) == json_error_out_of_memory)
		return -ENOMEM;
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

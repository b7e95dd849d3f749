/* jsonstore: the store's keyed records as JSON documents (jansson), the one
 * place the publisher turns a record into JSON and back. The canonical form
 * is compact with the keys in insertion order, so the same document is the
 * same bytes.
 *
 * Only the publisher links this file (the origin serves bytes and never
 * parses a record); it sits in core/ because every publisher stage that
 * keeps a record (ingest, publish, deliver) uses it.
 * Threading: as the transaction it is given. */
#ifndef SAYIN_CORE_JSONSTORE_H
#define SAYIN_CORE_JSONSTORE_H

#include "core/store.h"

#include <jansson.h>
#include <stddef.h>

/* The canonical bytes of doc (malloc'd, NUL-terminated; free() them), or
 * NULL when out of memory. *len (if not NULL) gets the length. */
char *jsonstore_dumps(const json_t *doc, size_t *len);
/* The same with jansson's dump flags (JSON_*), for documents other than
 * records (feeds, responses). Use it instead of json_dumps: under memory
 * pressure jansson 2.14's json_dumps can return JSON with an object's key
 * cut out (it ignores a failed write of a key), which this never does. */
char *jsonstore_dump_flags(const json_t *doc, size_t flags, size_t *len);

/* Stores doc as key's record in table. Returns 0, -ENOMEM, or an error of
 * store_put_record. */
int jsonstore_put(store_txn *txn, enum store_table table, const char *key, const json_t *doc);

/* Parses a record's bytes. Returns 0 and *out (a new reference, the
 * caller's), SAYIN_ECORRUPT when the bytes are not a JSON object, or -ENOMEM. */
int jsonstore_parse(const void *record, size_t len, json_t **out);

/* Reads key's record from table and parses it as jsonstore_parse does.
 * Returns 0 and *out (the caller's), SAYIN_ENOTFOUND, SAYIN_ECORRUPT, or an
 * error of store_get_record. */
int jsonstore_get(store_txn *txn, enum store_table table, const char *key, json_t **out);

#endif

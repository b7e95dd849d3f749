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

/* Stores doc as key's record in table. Returns 0, -ENOMEM, or an error of
 * store_put_record. */
int jsonstore_put(store_txn *txn, enum store_table table, const char *key, const json_t *doc);

/* Parses a record's bytes. Returns 0 and *out (a new reference, the
 * caller's), or SAYIN_ECORRUPT when the bytes are not a JSON object. */
int jsonstore_parse(const void *record, size_t len, json_t **out);

/* Reads key's record from table and parses it as jsonstore_parse does.
 * Returns 0 and *out (the caller's), SAYIN_ENOTFOUND, SAYIN_ECORRUPT, or an
 * error of store_get_record. */
int jsonstore_get(store_txn *txn, enum store_table table, const char *key, json_t **out);

#endif

/* idempotency: the Idempotency-Key records of POST /v1/posts, and the only
 * code that knows their layout. It sits below both its users, the ingest
 * API (lookups, sweeps) and publish (the record, written in the post's
 * transaction), and depends on the store alone. The publish transaction records the first
 * response to (author, key) through idempotency_record (publish_input's
 * idempotency_key), in the transaction that makes the post; this module
 * finds it again for a retry and removes it once it has expired.
 *
 * A record lives in STORE_IDEMPOTENCY under "HANDLE\nKEY" as JSON:
 * created_ms, request_sha256 (what identifies the request), post_id, status
 * and body (the first response). It counts for IDEMPOTENCY_TTL_MS.
 *
 * Threading: any thread; each function runs its own store transaction,
 * except idempotency_record, which writes in the caller's. */
#ifndef SAYIN_IDEMPOTENCY_H
#define SAYIN_IDEMPOTENCY_H

#include "core/store.h"

#include <jansson.h>
#include <stdint.h>

#define IDEMPOTENCY_KEY_MAX 255
#define IDEMPOTENCY_TTL_MS (24LL * 3600 * 1000)

/* 1 if k is a valid key: 1-255 visible ASCII characters; else 0. */
int idempotency_key_valid(const char *k);

/* Records body, the first response (status 201) to the request identified
 * by request_sha256 ("" when unknown) that made post_id, under (handle,
 * key), in txn. Returns 0, -ENOMEM, or an error of store_put_record. */
int idempotency_record(store_txn *txn, const char *handle, const char *key, int64_t now_ms,
                       const char *request_sha256, const char *post_id, const char *body);

/* A first response on record. The strings live in record, until
 * idempotency_response_free. */
typedef struct idempotency_response {
	const char *request_sha256; /* what identified the request; NULL if missing */
	const char *post_id;
	const char *body;           /* the response body; NULL if missing */
	json_t *record;
} idempotency_response;

/* The first response to (handle, key) on record and not expired at now_ms.
 * Returns 0 and *out (out may be NULL: is there one?), SAYIN_ENOTFOUND
 * (none, or expired: the key is free again), SAYIN_ECORRUPT (a record that
 * is not a JSON object) or a store error; *out is empty on error. */
int idempotency_lookup(store *st, const char *handle, const char *key, int64_t now_ms,
                       idempotency_response *out);
void idempotency_response_free(idempotency_response *r);

/* Deletes the records that have expired at now_ms, in one write
 * transaction (committed only when it deleted some). Returns 0 and *swept,
 * or a store error (nothing deleted). */
int idempotency_sweep(store *st, int64_t now_ms, unsigned *swept);

#endif

/* idempotency: finds and expires the recorded first responses to Idempotency-Keys. */
#include "idempotency.h"

#include "core/error.h"
#include "core/jsonstore.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int idempotency_key_valid(const char *k)
{
	size_t n = strlen(k);
	if (n == 0 || n > IDEMPOTENCY_KEY_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (k[i] < 0x21 || k[i] > 0x7e)
			return 0;
	return 1;
}

/* The record's key: "HANDLE\nKEY" (a store key holds at most 400 bytes). */
#define RECORD_KEY_MAX 401

static void record_key(char out[RECORD_KEY_MAX], const char *handle, const char *key)
{
	snprintf(out, RECORD_KEY_MAX, "%s\n%s", handle, key);
}

int idempotency_record(store_txn *txn, const char *handle, const char *key, int64_t now_ms,
                       const char *request_sha256, const char *post_id, const char *body)
{
	char rkey[RECORD_KEY_MAX];
	json_t *j = json_pack("{s:I, s:s, s:s, s:i, s:s}", "created_ms", (json_int_t)now_ms,
	                      "request_sha256", request_sha256, "post_id", post_id, "status",
	                      201, "body", body);
	int rc;

	if (j == NULL)
		return -ENOMEM;
	record_key(rkey, handle, key);
	rc = jsonstore_put(txn, STORE_IDEMPOTENCY, rkey, j);
	json_decref(j);
	return rc;
}

int idempotency_lookup(store *st, const char *handle, const char *key, int64_t now_ms,
                       idempotency_response *out)
{
	char rkey[RECORD_KEY_MAX];
	store_txn *txn;
	json_t *j = NULL;
	int rc;

	if (out != NULL)
		memset(out, 0, sizeof(*out));
	record_key(rkey, handle, key);
	rc = store_txn_begin(st, 0, &txn);
	if (rc == 0) {
		rc = jsonstore_get(txn, STORE_IDEMPOTENCY, rkey, &j);
		store_txn_abort(txn);
	}
	if (rc == 0 && json_integer_value(json_object_get(j, "created_ms")) <
	                       now_ms - IDEMPOTENCY_TTL_MS)
		rc = SAYIN_ENOTFOUND; /* expired: the key is free again */
	if (rc != 0 || out == NULL) {
		json_decref(j);
		return rc;
	}
	out->request_sha256 = json_string_value(json_object_get(j, "request_sha256"));
	out->post_id = json_string_value(json_object_get(j, "post_id"));
	out->body = json_string_value(json_object_get(j, "body"));
	out->record = j;
	return 0;
}

void idempotency_response_free(idempotency_response *r)
{
	json_decref(r->record);
	memset(r, 0, sizeof(*r));
}

struct sweep_ctx {
	store_txn *txn;
	int64_t cutoff;
	unsigned n;
};

/* A record that does not parse has no age: it goes too. */
static int sweep_one(void *arg, const char *key, const void *record, size_t len)
{
	struct sweep_ctx *c = arg;
	json_t *j = NULL;
	int64_t created;
	int rc = 0;

	jsonstore_parse(record, len, &j);
	created = j ? json_integer_value(json_object_get(j, "created_ms")) : 0;
	json_decref(j);
	if (created < c->cutoff) {
		rc = store_delete_record(c->txn, STORE_IDEMPOTENCY, key);
		if (rc == 0)
			c->n++;
	}
	return rc;
}

int idempotency_sweep(store *st, int64_t now_ms, unsigned *swept)
{
	struct sweep_ctx c = { .cutoff = now_ms - IDEMPOTENCY_TTL_MS };
	int rc = store_txn_begin(st, 1, &c.txn);

	*swept = 0;
	if (rc != 0)
		return rc;
	rc = store_each_record(c.txn, STORE_IDEMPOTENCY, "", sweep_one, &c);
	if (rc == 0 && c.n > 0)
		rc = store_txn_commit(c.txn);
	else
		store_txn_abort(c.txn);
	if (rc == 0)
		*swept = c.n;
	return rc;
}

/* auth: API tokens stored as hashes, checked in constant time. */
#include "ingest/auth.h"

#include "core/error.h"
#include "core/jsonstore.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#define PREFIX "sayin_"
#define SECRET_BYTES 32
#define SECRET_LEN 43 /* base64url of 32 bytes, unpadded */

static int random_bytes(void *buf, size_t len)
{
	ssize_t got = getrandom(buf, len, 0);
	if (got != (ssize_t)len)
		return got < 0 ? -errno : -EIO;
	return 0;
}

static void base64url(const unsigned char *in, size_t len, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0, i = 0;
	for (; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = a[v >> 18 & 63];
		out[o++] = a[v >> 12 & 63];
		out[o++] = a[v >> 6 & 63];
		out[o++] = a[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = a[v >> 18 & 63];
		out[o++] = a[v >> 12 & 63];
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = a[v >> 18 & 63];
		out[o++] = a[v >> 12 & 63];
		out[o++] = a[v >> 6 & 63];
	}
	out[o] = '\0';
}

static int secret_hash(const char *secret, size_t len, unsigned char out[32])
{
	unsigned int n = 0;
	return EVP_Digest(secret, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -EIO;
}

static void hex(const unsigned char *in, size_t len, char *out)
{
	static const char d[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = d[in[i] >> 4];
		out[2 * i + 1] = d[in[i] & 15];
	}
	out[2 * len] = '\0';
}

int auth_token_issue(store_txn *txn, const char *handle, int64_t now_ms,
                     char token[AUTH_TOKEN_LEN + 1], auth_token_info *info)
{
	unsigned char id_raw[AUTH_TOKEN_ID_LEN / 2], secret_raw[SECRET_BYTES], digest[32];
	char secret[SECRET_LEN + 1], digest_hex[65];
	const void *rec;
	size_t len;
	json_t *j;
	int rc = store_get_author(txn, handle, &rec, &len);

	if (rc != 0)
		return rc;
	rc = random_bytes(id_raw, sizeof(id_raw));
	if (rc == 0)
		rc = random_bytes(secret_raw, sizeof(secret_raw));
	if (rc != 0)
		return rc;
	hex(id_raw, sizeof(id_raw), info->id);
	base64url(secret_raw, sizeof(secret_raw), secret);
	OPENSSL_cleanse(secret_raw, sizeof(secret_raw));
	rc = secret_hash(secret, SECRET_LEN, digest);
	if (rc != 0)
		return rc;
	hex(digest, sizeof(digest), digest_hex);
	j = json_pack("{s:s, s:s, s:I}", "handle", handle, "sha256", digest_hex, "created_ms",
	              (json_int_t)now_ms);
	rc = j ? jsonstore_put(txn, STORE_TOKENS, info->id, j) : -ENOMEM;
	json_decref(j);
	if (rc != 0)
		return rc;
	snprintf(info->handle, sizeof(info->handle), "%s", handle);
	info->created_ms = now_ms;
	snprintf(token, AUTH_TOKEN_LEN + 1, PREFIX "%s_%s", info->id, secret);
	OPENSSL_cleanse(secret, sizeof(secret));
	return 0;
}

static int read_info(const char *id, const void *rec, size_t len, auth_token_info *info,
                     char digest_hex[65])
{
	json_t *j = NULL;
	const char *handle, *sha;

	jsonstore_parse(rec, len, &j);
	handle = json_string_value(json_object_get(j, "handle"));
	sha = json_string_value(json_object_get(j, "sha256"));
	if (handle == NULL || sha == NULL || strlen(sha) != 64 || strlen(handle) > PUBLISH_HANDLE_MAX) {
		json_decref(j);
		return SAYIN_ECORRUPT;
	}
	snprintf(info->id, sizeof(info->id), "%s", id);
	snprintf(info->handle, sizeof(info->handle), "%s", handle);
	info->created_ms = json_integer_value(json_object_get(j, "created_ms"));
	if (digest_hex != NULL)
		memcpy(digest_hex, sha, 65);
	json_decref(j);
	return 0;
}

int auth_token_check(store_txn *txn, const char *token, size_t len, auth_token_info *info)
{
	char id[AUTH_TOKEN_ID_LEN + 1], stored_hex[65], given_hex[65];
	unsigned char digest[32];
	const void *rec;
	size_t rlen, plen = strlen(PREFIX);
	int rc;

	if (len != AUTH_TOKEN_LEN || memcmp(token, PREFIX, plen) != 0 ||
	    token[plen + AUTH_TOKEN_ID_LEN] != '_')
		return SAYIN_ENOTFOUND;
	for (size_t i = 0; i < AUTH_TOKEN_ID_LEN; i++) {
		char c = token[plen + i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return SAYIN_ENOTFOUND;
	}
	memcpy(id, token + plen, AUTH_TOKEN_ID_LEN);
	id[AUTH_TOKEN_ID_LEN] = '\0';
	rc = secret_hash(token + plen + AUTH_TOKEN_ID_LEN + 1, SECRET_LEN, digest);
	if (rc != 0)
		return rc;
	hex(digest, sizeof(digest), given_hex);
	rc = store_get_record(txn, STORE_TOKENS, id, &rec, &rlen);
	if (rc != 0)
		return rc;
	rc = read_info(id, rec, rlen, info, stored_hex);
	if (rc != 0)
		return rc;
	return CRYPTO_memcmp(stored_hex, given_hex, 64) == 0 ? 0 : SAYIN_ENOTFOUND;
}

struct each_ctx {
	const char *handle;
	auth_token_fn fn;
	void *arg;
};

static int each_token(void *arg, const char *key, const void *record, size_t len)
{
	struct each_ctx *c = arg;
	auth_token_info info;
	int rc = read_info(key, record, len, &info, NULL);
	if (rc != 0)
		return rc;
	if (c->handle != NULL && strcmp(c->handle, info.handle) != 0)
		return 0;
	return c->fn(c->arg, &info);
}

int auth_token_each(store_txn *txn, const char *handle, auth_token_fn fn, void *arg)
{
	struct each_ctx c = { handle, fn, arg };
	return store_each_record(txn, STORE_TOKENS, "", each_token, &c);
}

struct revoke_ctx {
	store_txn *txn;
	unsigned n;
};

static int revoke_one(void *arg, const auth_token_info *info)
{
	struct revoke_ctx *c = arg;
	int rc = store_delete_record(c->txn, STORE_TOKENS, info->id);
	if (rc == 0)
		c->n++;
	return rc;
}

int auth_token_revoke(store_txn *txn, const char *handle, const char *id, unsigned *revoked)
{
	struct revoke_ctx c = { txn, 0 };
	int rc;

	*revoked = 0;
	if (id == NULL) {
		rc = auth_token_each(txn, handle, revoke_one, &c);
		*revoked = c.n;
		return rc;
	} else {
		auth_token_info info;
		const void *rec;
		size_t len;
		rc = store_get_record(txn, STORE_TOKENS, id, &rec, &len);
		if (rc == 0)
			rc = read_info(id, rec, len, &info, NULL);
		if (rc == 0 && strcmp(info.handle, handle) != 0)
			rc = SAYIN_ENOTFOUND;
		if (rc == 0)
			rc = store_delete_record(txn, STORE_TOKENS, id);
		if (rc == 0)
			*revoked = 1;
		return rc;
	}
}

/* auth: API tokens. A token is "sayin_" + a 16-hex-digit id + "_" + a
 * 256-bit secret from the OS (base64url, 43 characters). The store keeps the
 * id, the author and the SHA-256 of the secret, never the secret: a stolen
 * store does not hand out tokens. The secret's hash is compared in constant
 * time (CRYPTO_memcmp).
 *
 * Threading: any thread, inside the caller's store transaction. */
#ifndef SAYIN_AUTH_H
#define SAYIN_AUTH_H

#include "publish.h"
#include "core/store.h"

#include <stdint.h>

#define AUTH_TOKEN_ID_LEN 16
#define AUTH_TOKEN_LEN (6 + AUTH_TOKEN_ID_LEN + 1 + 43)

typedef struct auth_token_info {
	char id[AUTH_TOKEN_ID_LEN + 1];
	char handle[PUBLISH_HANDLE_MAX + 1];
	int64_t created_ms;
} auth_token_info;

/* Issues a token for handle (which must be an author: SAYIN_ENOTFOUND) in
 * the write transaction txn. token receives the whole token (shown once),
 * info its id. Returns 0, SAYIN_ENOTFOUND, a negative errno (no randomness)
 * or a store error. */
int auth_token_issue(store_txn *txn, const char *handle, int64_t now_ms,
                     char token[AUTH_TOKEN_LEN + 1], auth_token_info *info);

/* Checks a token. Returns 0 and *info, or SAYIN_ENOTFOUND for a malformed,
 * unknown or revoked token (one answer: callers must not tell them apart),
 * or a store error. */
int auth_token_check(store_txn *txn, const char *token, size_t len, auth_token_info *info);

/* Revokes one token (id) or, with id NULL, all of handle's tokens.
 * *revoked counts them. SAYIN_ENOTFOUND when id is not a token of handle. */
int auth_token_revoke(store_txn *txn, const char *handle, const char *id, unsigned *revoked);

/* Calls fn for each of handle's tokens (handle NULL: everyone's). */
typedef int (*auth_token_fn)(void *arg, const auth_token_info *info);
int auth_token_each(store_txn *txn, const char *handle, auth_token_fn fn, void *arg);

#endif

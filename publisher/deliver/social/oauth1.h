/* oauth1: signs HTTP requests with OAuth 1.0a HMAC-SHA1 (RFC 5849), as X
 * wants for user-context calls. Pure: no network and no store. The nonce
 * comes from getrandom(2) and the timestamp from the clock unless the
 * caller gives them (tests do).
 *
 * What is signed (RFC 5849 section 3.4.1): the method in uppercase, the
 * base string URI (scheme and host lowercased, default port dropped, no
 * query or fragment), and the parameters of the URL's query, of a
 * form-encoded body and the oauth_* protocol parameters. Any other body
 * (JSON, as POST /2/tweets sends) is not part of the signature.
 *
 * Threading: any thread; no shared state. */
#ifndef SAYIN_OAUTH1_H
#define SAYIN_OAUTH1_H

#include <stddef.h>
#include <stdint.h>

typedef struct oauth1_request {
	const char *method;          /* "GET", "POST", ...; uppercased for signing */
	const char *url;             /* absolute http(s) URL; its query is signed */
	/* An application/x-www-form-urlencoded body, whose parameters are
	 * signed; NULL when there is no body or it is of another type. */
	const char *form_body;
	size_t form_body_len;
	const char *consumer_key;
	const char *consumer_secret;
	const char *token;           /* NULL: no oauth_token (token_secret then "") */
	const char *token_secret;    /* NULL: "" */
	const char *realm;           /* NULL: no realm in the header (never signed) */
	const char *nonce;           /* NULL: 32 hex digits from getrandom(2) */
	int64_t timestamp;           /* 0: now (unix seconds) */
	int with_version;            /* adds oauth_version="1.0" (optional per RFC) */
} oauth1_request;

typedef struct oauth1_signature {
	char signature[32];          /* base64 of the HMAC-SHA1 digest (28 characters) */
	char *base_string;           /* malloc'd; what was signed */
	char *key;                   /* malloc'd; enc(consumer_secret)&enc(token_secret): a secret */
	char *authorization;         /* malloc'd; "OAuth k=\"v\", ..." the Authorization value */
} oauth1_signature;

/* Signs req. Returns 0 and fills *out (release with oauth1_signature_free,
 * also after a failure), or:
 *   -EINVAL  not an absolute http(s) URL, a bad %-escape in the query or
 *            body, or a missing method or consumer credential;
 *   -ENOMEM;
 *   -EIO     the OS random source or the HMAC failed. */
int oauth1_sign(const oauth1_request *req, oauth1_signature *out);

/* Frees the strings (the key is wiped first) and zeroes sig. */
void oauth1_signature_free(oauth1_signature *sig);

/* Percent-encodes len bytes of s as RFC 5849 section 3.6 says: every byte
 * but ALPHA, DIGIT, '-', '.', '_' and '~' becomes %XX with uppercase hex.
 * Also a valid application/x-www-form-urlencoded encoding. Returns a
 * malloc'd string, or NULL when out of memory. */
char *oauth1_encode(const char *s, size_t len);

/* The base string URI of url (RFC 5849 section 3.4.1.2), malloc'd, before
 * it is encoded. NULL with *err = -EINVAL (not http(s)) or -ENOMEM. */
char *oauth1_base_uri(const char *url, int *err);

#endif

/* fuzz_oauth1: OAuth 1.0a signing (publisher/deliver/social/oauth1.c): the
 * percent-encoding, the base string URI and a whole signature over a
 * fuzzed method, URL (its query is parsed and re-encoded), form body and
 * token.
 *
 * Input: METHOD NUL URL NUL BODY NUL TOKEN. oauth1_encode gets the whole
 * input; its output must be RFC 5849 3.6 (only unreserved bytes and %XX in
 * uppercase) and decode back to the input. */
#include "deliver/social/oauth1.h"
#include "split.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int unreserved(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

static int hexval(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Aborts unless enc is the RFC 5849 encoding of the len bytes of raw. */
static void check_encoding(const char *enc, const uint8_t *raw, size_t len)
{
	size_t i = 0;
	for (const char *p = enc; *p != '\0'; i++) {
		int c;
		if (*p == '%') {
			int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
			if (hi < 0 || lo < 0)
				abort();
			c = hi * 16 + lo;
			if (unreserved(c))
				abort(); /* an unreserved byte is never encoded */
			p += 3;
		} else {
			c = (unsigned char)*p++;
			if (!unreserved(c))
				abort();
		}
		if (i >= len || raw[i] != c)
			abort();
	}
	if (i != len)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *field[4];
	char *block, *enc, *uri;
	oauth1_signature sig = { 0 };
	int err = 0;

	enc = oauth1_encode((const char *)data, size);
	if (enc != NULL) {
		check_encoding(enc, data, size);
		free(enc);
	}
	if (fuzz_split(data, size, &block, field, 4) < 0)
		return 0;
	uri = oauth1_base_uri(field[1], &err);
	if (uri != NULL) {
		if (err != 0 || strpbrk(uri, "?#") != NULL ||
		    (strncmp(uri, "http://", 7) != 0 && strncmp(uri, "https://", 8) != 0))
			abort();
		free(uri);
	}
	const oauth1_request req = {
		.method = field[0], .url = field[1], .form_body = field[2],
		.form_body_len = strlen(field[2]), .consumer_key = "key", .consumer_secret = "secret",
		.token = field[3][0] ? field[3] : NULL, .token_secret = "ts", .nonce = "nonce",
		.timestamp = 1318622958, .with_version = 1,
	};
	if (oauth1_sign(&req, &sig) == 0) {
		if (sig.authorization == NULL || sig.base_string == NULL ||
		    strlen(sig.signature) != 28)
			abort();
	}
	oauth1_signature_free(&sig);
	free(block);
	return 0;
}

/* fuzz_xtext: X text fitting (publisher/deliver/social/xtext.c):
 * xtext_weighted_length and xtext_fit.
 *
 * Input: byte 0 picks the output buffer (odd: exactly as large as xtext.h
 * says is always enough; even: byte 0 / 2 bytes), then TEXT NUL URL (no
 * NUL: no URL). Checks what xtext.h promises: a fitted post weighs at most
 * 280 and ends with the URL, a large enough buffer is never too small, and
 * the output is NUL-terminated inside the buffer. */
#include "deliver/social/xtext.h"
#include "split.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *field[2];
	char *block, *out;
	size_t outlen, enough;
	int rc, w;

	if (size < 1 || fuzz_split(data + 1, size - 1, &block, field, 2) < 0)
		return 0;
	enough = strlen(field[0]) + strlen(field[1]) + 5 + 1;
	outlen = (data[0] & 1) ? enough : data[0] / 2u;
	out = malloc(outlen > 0 ? outlen : 1);
	if (out == NULL) {
		free(block);
		return 0;
	}
	w = xtext_weighted_length(field[0]);
	if (w < 0 && w != -EILSEQ)
		abort();
	rc = xtext_fit(field[0], field[1], out, outlen);
	if (rc == 0) {
		size_t n = strnlen(out, outlen), ulen = strlen(field[1]);
		if (n == outlen)
			abort(); /* not NUL-terminated inside the buffer */
		w = xtext_weighted_length(out);
		if (w < 0 || w > XTEXT_MAX_WEIGHT)
			abort();
		if (ulen > 0 && (n < ulen || memcmp(out + n - ulen, field[1], ulen) != 0))
			abort();
	} else if (rc == -ENOSPC && outlen >= enough) {
		abort();
	} else if (rc != -ENOSPC && rc != -EILSEQ && rc != -EMSGSIZE && rc != -ENOMEM) {
		abort();
	}
	free(out);
	free(block);
	return 0;
}

/* compress: the gzip (zlib) and brotli (libbrotlienc) encodings of a document,
 * made once at publish time so the origin never compresses on the fly.
 * Pure: bytes in, bytes out. Deterministic: the same input gives the same
 * bytes (gzip header with no name and mtime 0), so variants are
 * content-addressed like everything else.
 *
 * Threading: no shared state. Output buffers are malloc'd; the caller frees. */
#ifndef SAYIN_COMPRESS_H
#define SAYIN_COMPRESS_H

#include <stddef.h>

/* gzip (RFC 1952) at level 9. Returns 0, -ENOMEM, or SAYIN_EENCODE (logged). */
int compress_gzip(const void *in, size_t len, unsigned char **out, size_t *out_len);

/* Documents are compressed inside the publish transaction, which has one
 * writer at a time: quality 11 took 27 ms on a 16 KiB post page against
 * 0.6 ms at 5, for 8% fewer bytes (4,701 against 5,120), and a publish
 * writes six documents, so 11 capped the API at about 2.5 posts/s. */
#define COMPRESS_BROTLI_QUALITY 5

/* brotli (RFC 7932) at COMPRESS_BROTLI_QUALITY, text mode. Returns 0, -ENOMEM or
 * SAYIN_EENCODE. */
int compress_brotli(const void *in, size_t len, unsigned char **out, size_t *out_len);

/* "zlib X\nbrotli Y\n", as the linked libraries report them, into buf
 * (for --version). Returns out. */
const char *compress_library_versions(char *out, size_t size);

#endif

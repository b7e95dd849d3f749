/* compress: gzip and brotli encodings for precompressed documents. */
#include "render/compress.h"

#include "core/error.h"
#include "core/log.h"

#include <brotli/encode.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

int compress_gzip(const void *in, size_t len, unsigned char **out, size_t *out_len)
{
	z_stream zs = { 0 };
	unsigned char *buf;
	size_t cap;
	int rc;

	/* windowBits 15 + 16: a gzip wrapper; zlib writes mtime 0 and no name. */
	rc = deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY);
	if (rc != Z_OK) {
		log_error("compress: deflateInit2: %s", zs.msg ? zs.msg : "failed");
		return rc == Z_MEM_ERROR ? -ENOMEM : SAYIN_EENCODE;
	}
	cap = deflateBound(&zs, (uLong)len) + 32;
	buf = malloc(cap);
	if (buf == NULL) {
		deflateEnd(&zs);
		return -ENOMEM;
	}
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)len;
	zs.next_out = buf;
	zs.avail_out = (uInt)cap;
	rc = deflate(&zs, Z_FINISH);
	deflateEnd(&zs);
	if (rc != Z_STREAM_END) {
		log_error("compress: deflate did not finish (%d)", rc);
		free(buf);
		return SAYIN_EENCODE;
	}
	*out = buf;
	*out_len = zs.total_out;
	return 0;
}

int compress_brotli(const void *in, size_t len, unsigned char **out, size_t *out_len)
{
	size_t cap = BrotliEncoderMaxCompressedSize(len);
	unsigned char *buf;

	if (cap == 0)
		cap = len + 1024; /* the bound overflowed: a generous guess */
	buf = malloc(cap);
	if (buf == NULL)
		return -ENOMEM;
	if (!BrotliEncoderCompress(COMPRESS_BROTLI_QUALITY, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_TEXT, len,
	                           in, &cap, buf)) {
		log_error("compress: brotli failed on %zu bytes", len);
		free(buf);
		return SAYIN_EENCODE;
	}
	*out = buf;
	*out_len = cap;
	return 0;
}

const char *compress_library_versions(char *out, size_t size)
{
	uint32_t v = BrotliEncoderVersion(); /* 0xMMMmmmppp, 12 bits each */

	snprintf(out, size, "zlib %s\nbrotli %u.%u.%u\n", zlibVersion(), (unsigned)(v >> 24),
	         (unsigned)((v >> 12) & 0xfff), (unsigned)(v & 0xfff));
	return out;
}

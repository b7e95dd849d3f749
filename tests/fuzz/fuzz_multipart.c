/* fuzz_multipart: the streaming multipart/form-data parser
 * (publisher/ingest/multipart.c) and its boundary extraction.
 *
 * Input: byte 0 sets the size of the pieces the body is fed in (1..64
 * bytes, or all at once for 0), then a Content-Type line ending in '\n',
 * then the body. Checks the callbacks' contract: a part's data comes only
 * between its start and its end and is never empty, and parts are
 * balanced when the parser says the body ended well. */
#include "core/error.h"
#include "ingest/multipart.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct events {
	int in_part;
	size_t parts, ended;
	size_t bytes;
};

static int on_part(void *arg, const char *name, const char *filename, const char *content_type)
{
	struct events *e = arg;
	if (e->in_part || name == NULL)
		abort();
	/* The strings are read, as the upload handler does. */
	e->bytes += strlen(name) + (filename ? strlen(filename) : 0) +
	            (content_type ? strlen(content_type) : 0);
	e->in_part = 1;
	e->parts++;
	return 0;
}

static int on_data(void *arg, const char *data, size_t len)
{
	struct events *e = arg;
	volatile char sink;
	if (!e->in_part || len == 0)
		abort();
	sink = data[0];
	sink = data[len - 1];
	(void)sink;
	e->bytes += len;
	return 0;
}

static int on_part_end(void *arg)
{
	struct events *e = arg;
	if (!e->in_part)
		abort();
	e->in_part = 0;
	e->ended++;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const multipart_callbacks cb = { on_part, on_data, on_part_end };
	char boundary[MULTIPART_BOUNDARY_MAX + 1];
	const uint8_t *nl;
	struct events ev = { 0 };
	size_t piece, off, ct_len;
	char *ct;
	multipart *m;
	int rc = 0;

	if (size < 1)
		return 0;
	piece = data[0] % 65;
	data++;
	size--;
	nl = memchr(data, '\n', size);
	if (nl == NULL)
		return 0;
	ct_len = (size_t)(nl - data);
	ct = malloc(ct_len + 1);
	if (ct == NULL)
		return 0;
	memcpy(ct, data, ct_len);
	ct[ct_len] = '\0';
	if (multipart_boundary(ct, boundary) != 0) {
		free(ct);
		return 0;
	}
	free(ct);
	if (strlen(boundary) == 0 || strlen(boundary) > MULTIPART_BOUNDARY_MAX)
		abort();
	m = multipart_new(boundary, &cb, &ev);
	if (m == NULL)
		return 0;
	data += ct_len + 1;
	size -= ct_len + 1;
	if (piece == 0)
		piece = size;
	for (off = 0; off < size && rc == 0; off += piece) {
		size_t n = size - off < piece ? size - off : piece;
		/* Each piece in its own allocation, so ASan sees a read past it. */
		char *chunk = malloc(n);
		if (chunk == NULL)
			break;
		memcpy(chunk, data + off, n);
		rc = multipart_feed(m, chunk, n);
		free(chunk);
	}
	if (rc == 0 && multipart_finish(m) == 0 && (ev.in_part || ev.parts != ev.ended))
		abort();
	multipart_free(m);
	return 0;
}

/* multipart: a streaming parser for multipart/form-data request bodies
 * (RFC 7578 over RFC 2046). Bytes go in as they arrive, in pieces of any
 * size; part headers and part data come out through callbacks, so a 100 MiB
 * upload never sits in memory.
 *
 * Written here because no Debian-packaged C library parses multipart
 * streams on their own (libmicrohttpd's post processor is tied to its
 * server). It handles what browsers, curl and mobile HTTP stacks send:
 * CRLF line breaks, Content-Disposition with quoted name and filename,
 * an optional preamble and epilogue. It refuses what it does not
 * understand (SAYIN_EFORMAT) rather than guessing.
 *
 * Threading: one parser per request, one thread at a time. */
#ifndef SAYIN_MULTIPART_H
#define SAYIN_MULTIPART_H

#include <stddef.h>

#define MULTIPART_BOUNDARY_MAX 70  /* RFC 2046 */
#define MULTIPART_HEADERS_MAX 8192 /* bytes of one part's headers */

typedef struct multipart multipart;

typedef struct multipart_callbacks {
	/* A part starts. name and filename (NULL when absent) and content_type
	 * (NULL when absent) are valid during the call only. */
	int (*on_part)(void *arg, const char *name, const char *filename, const char *content_type);
	/* Some of the current part's bytes (never empty). */
	int (*on_data)(void *arg, const char *data, size_t len);
	/* The current part ended. */
	int (*on_part_end)(void *arg);
} multipart_callbacks;
/* A callback returns 0 to go on; anything else stops the parser, and
 * multipart_feed returns that value. */

/* Extracts the boundary parameter of a multipart/form-data Content-Type
 * into out (MULTIPART_BOUNDARY_MAX + 1 bytes). Returns 0, or SAYIN_EFORMAT
 * when the type is not multipart/form-data or the boundary is missing or
 * invalid. */
int multipart_boundary(const char *content_type, char *out);

/* Returns a parser or NULL (-ENOMEM). */
multipart *multipart_new(const char *boundary, const multipart_callbacks *cb, void *arg);
/* Parses the next bytes. Returns 0, SAYIN_EFORMAT (malformed), -ENOMEM,
 * or a callback's nonzero value; after any error the parser is dead. */
int multipart_feed(multipart *m, const char *data, size_t len);
/* The body ended: returns 0 if the closing boundary was seen, else
 * SAYIN_ETRUNCATED. */
int multipart_finish(const multipart *m);
void multipart_free(multipart *m);

#endif

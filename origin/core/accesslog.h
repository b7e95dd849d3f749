/* accesslog: the access log of the origin and of the ingest API, one JSON
 * object per line (origin/README.md, "Access log", lists the fields), to
 * stderr or to a file that SIGHUP reopens.
 *
 * The sink is process-wide (like core/log's level): accesslog_configure
 * and accesslog_edges_parse run on the main thread (start-up, SIGHUP);
 * accesslog_write may run on any thread at any time, also while the main
 * thread reconfigures: the sink is one file descriptor whose number never
 * changes once opened, and a new file replaces the old one under it with
 * dup3(2), atomically for concurrent writers. Each line is one write(2)
 * of at most ACCESSLOG_LINE_MAX bytes (O_APPEND for files), so lines from
 * several threads or processes never interleave. */
#ifndef SAYIN_ACCESSLOG_H
#define SAYIN_ACCESSLOG_H

#include "core/http.h"

#include <stddef.h>
#include <stdint.h>

#define ACCESSLOG_LINE_MAX 4096

/* Points the sink at target, the value of the setting named setting (for
 * the messages, e.g. "access-log"): "off", "stderr" (or "on", the older word for
 * it) or a file path (created 0640, appended). A path is opened afresh on
 * every call, so calling it again with the same value reopens the file
 * after logrotate moved it. Returns 0, or SAYIN_ECONFIG (bad value) or a
 * negative errno (the file cannot be opened) with err naming the cause;
 * on error the sink is left as it was. */
int accesslog_configure(const char *setting, const char *target, char *err, size_t errlen);
/* Nonzero when lines are being written: callers skip building an entry
 * otherwise. One relaxed atomic load. */
int accesslog_enabled(void);

/* Which peers may name the client: the CDN's client-IP header (e.g.
 * Fastly-Client-IP, CF-Connecting-IP, X-Forwarded-For, whose last element
 * is the one the edge added) counts only when the socket's peer is in one
 * of the trusted CIDRs. Immutable once parsed; any thread may read it. */
typedef struct accesslog_edges accesslog_edges;

/* header: the header name, NULL or "" for none. cidrs: comma- or
 * space-separated "ADDR[/BITS]" (IPv4 or IPv6), NULL or "" for none.
 * Returns 0 and *out (NULL when there is nothing to trust), or
 * SAYIN_ECONFIG with err naming the bad entry, or -ENOMEM. */
int accesslog_edges_parse(const char *header, const char *cidrs, accesslog_edges **out,
                          char *err, size_t errlen);
void accesslog_edges_free(accesslog_edges *edges);

/* How a request's validators turned out. */
enum accesslog_validator {
	ACCESSLOG_VALIDATOR_NONE,     /* no conditional header, or not looked at */
	ACCESSLOG_VALIDATOR_ETAG,     /* 304 by If-None-Match */
	ACCESSLOG_VALIDATOR_IMS,      /* 304 by If-Modified-Since */
	ACCESSLOG_VALIDATOR_CHANGED,  /* conditional, but the content changed: full response */
};

/* What the caller knows beyond the request and its completion. */
typedef struct accesslog_entry {
	enum accesslog_validator validator;
	int partial;                  /* a 206: range_first..range_last were sent */
	uint64_t range_first, range_last;
	const char *encoding;         /* content coding sent, NULL: none or not known */
} accesslog_entry;

/* Writes req's line, when the sink is on. edges may be NULL. Allocates
 * nothing: the line is built on the stack, long fields are cut ("..."),
 * and bytes that are not valid UTF-8 become U+FFFD. */
void accesslog_write(const accesslog_edges *edges, const http_request *req,
                     const http_completion *done, const accesslog_entry *extra);

/* Lines lost because write(2) failed or was short (full disk, closed
 * stderr), since start; any thread. Each program exports it as
 * sayin_access_log_write_failures_total. */
uint64_t accesslog_write_failures(void);

/* The JSON line (with its '\n') for the arguments, without writing it:
 * what accesslog_write sends. Returns its length, < size. size must be at
 * least ACCESSLOG_LINE_MAX. now_ms is the Unix time in ms. For tests. */
size_t accesslog_format(char *out, size_t size, int64_t now_ms, const accesslog_edges *edges,
                        const http_request *req, const http_completion *done,
                        const accesslog_entry *extra);

#endif

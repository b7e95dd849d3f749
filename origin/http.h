/* http: the HTTP/1.1 server core on libuv and llhttp. It owns connections,
 * parsing, limits, timeouts and writes; it knows nothing of sayin's URLs.
 *
 * Threading: a server runs on one uv_loop_t; every function here must be
 * called on that loop's thread. Several servers (one per loop) may run at once.
 *
 * Flow: the core parses a request, then calls handler->on_request(). The
 * handler answers by calling http_respond() exactly once, either before
 * on_request returns or later on the same loop. Requests on one connection are
 * answered in order: the core stops parsing a pipelined request until the
 * previous response has been written.
 *
 * Malformed requests (parse errors, over-limit headers or URI, a request with
 * both Content-Length and Transfer-Encoding, a bad Content-Length) are answered
 * by the core itself with 400 (or 431 / 414) and the connection is closed; the
 * handler never sees them. */
#ifndef SAYIN_HTTP_H
#define SAYIN_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct http_server http_server;
typedef struct http_request http_request;

typedef struct http_header {
	const char *name;
	const char *value;
} http_header;

/* Zero in any field selects the default given beside it. */
typedef struct http_limits {
	size_t max_header_bytes;      /* request line + headers: 16384 */
	size_t max_headers;           /* header fields: 64 */
	size_t max_uri;               /* request-target bytes: 4096 */
	size_t max_body;              /* request body bytes accepted and discarded: 0 = none */
	unsigned max_connections;     /* open connections: 10000 */
	uint64_t idle_timeout_ms;     /* keep-alive idle: 60000 */
	uint64_t header_timeout_ms;   /* first byte to end of headers: 10000 */
	uint64_t write_timeout_ms;    /* a write making no progress: 30000 */
} http_limits;

/* A handler is embedded first in its module's struct (h2o style), so the
 * callback can recover the module with a cast. */
typedef struct http_completion {
	int status;           /* the status sent */
	uint64_t bytes_sent;  /* header and body bytes written; when aborted, those
	                         known to have left (a lower bound) */
	uint64_t duration_ns; /* from the request's first byte to its last byte written
	                         (monotonic; a pipelined request starts when the
	                         core starts parsing it) */
	int aborted;          /* the connection died before the response was written */
} http_completion;

typedef struct http_handler {
	void (*on_request)(struct http_handler *self, http_request *req);
	/* Optional (NULL): called once per response the handler sent, after it
	 * was written or failed and before its release callback; req is still
	 * valid. For metrics and access logs. Also called (aborted, nothing
	 * sent) when http_respond fails, e.g. the client left while the handler
	 * worked. Never for requests the core answered itself. */
	void (*on_complete)(struct http_handler *self, http_request *req,
	                    const http_completion *done);
} http_handler;

/* The parsed request. Strings are NUL-terminated and owned by the core; they
 * stay valid until the release callback given to http_respond() has run. */
struct http_request {
	const char *method;  /* "GET", "HEAD", ... as sent */
	const char *target;  /* request-target as sent, e.g. "/a/xx.opus?x=1" */
	const char *path;    /* target up to '?' or '#', not percent-decoded */
	int version_major;
	int version_minor;
	int has_body;        /* the request carried a non-empty body */
	void *data;          /* free for the handler */
};

/* Case-insensitive lookup of a request header. Returns its value (the first
 * if repeated), or NULL if absent. */
const char *http_request_header(const http_request *req, const char *name);

/* Number of header fields and the i-th one, for handlers that must see all. */
size_t http_request_header_count(const http_request *req);
http_header http_request_header_at(const http_request *req, size_t i);

typedef void (*http_release_fn)(void *arg);

/* Sends the response to req. The core adds Date, Content-Length (body_len,
 * also for HEAD) and Connection: close when it will close the connection
 * (HTTP/1.0 without keep-alive, "Connection: close", or close_after != 0).
 * headers are copied before this returns. body is NOT copied: it must stay
 * valid and unchanged until release(release_arg) is called, which happens
 * once, after the bytes are written or the connection died, and also when
 * http_respond itself fails. send_body == 0 sends the headers only (HEAD, 304).
 * Returns 0, or a negative errno if the response could not be queued (the
 * connection is then closed). */
int http_respond(http_request *req, int status, const http_header *headers, size_t n_headers,
                 const void *body, size_t body_len, int send_body, int close_after,
                 http_release_fn release, void *release_arg);

/* Reason phrase for a status code ("OK", "Not Found", ...). */
const char *http_status_text(int status);

/* Binds listen_addr ("127.0.0.1:8080", "[::1]:8080", "0.0.0.0:80") on loop
 * and starts accepting. With reuseport != 0 the socket gets SO_REUSEPORT
 * before listen(), so several loops may bind the same address.
 * On error a negative errno (e.g. -EADDRINUSE) or SAYIN_ECONFIG for a bad
 * address is returned, nothing is left open and *out is untouched. */
int http_server_start(uv_loop_t *loop, const char *listen_addr, int reuseport,
                      const http_limits *limits, http_handler *handler, http_server **out);

/* Fails with -EADDRINUSE if anything, even another process's SO_REUSEPORT
 * group, already listens on listen_addr (bind without SO_REUSEPORT, then
 * close). Call it before the first http_server_start with reuseport != 0,
 * which would otherwise silently join such a group. Returns 0 (always for
 * port 0), a negative errno, or SAYIN_ECONFIG for a bad address. */
int http_listen_check(const char *listen_addr);

/* The port actually bound (useful with port 0). */
int http_server_port(const http_server *server);

/* Stops accepting, lets responses in flight finish (closing idle keep-alive
 * connections at once), then frees the server and calls on_stopped(arg).
 * Connections still busy after grace_ms are closed. */
void http_server_stop(http_server *server, uint64_t grace_ms, void (*on_stopped)(void *arg),
                      void *arg);

/* Counters, for /metrics. Written only by the loop thread with relaxed
 * atomic stores, so any thread may read them. */
typedef struct http_stats {
	uint64_t connections_open;
	uint64_t connections_accepted;
	uint64_t connections_refused;  /* over max_connections */
	uint64_t requests;
	uint64_t bad_requests;         /* answered 4xx by the core */
	uint64_t timeouts_header;
	uint64_t timeouts_idle;
	uint64_t timeouts_write;
	uint64_t bytes_sent;
} http_stats;

/* Any thread may call this while the server runs; the caller makes sure it
 * does not race with the end of http_server_stop, which frees the server. */
void http_server_stats(const http_server *server, http_stats *out);

#endif

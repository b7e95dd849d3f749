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
 * Malformed requests are answered by the core itself with 400 (or 431, 414,
 * 505) and the connection is closed; the handler never sees them. llhttp
 * runs in strict mode (the server refuses to start otherwise), and the core
 * adds its own rules: a request-target with '#' or any byte outside
 * printable ASCII; a line in the head not ending in CRLF, or an obs-fold;
 * HTTP/1.1 without Host, two Host fields or a bad Host value; both
 * Content-Length and Transfer-Encoding, a bad Content-Length, or
 * Transfer-Encoding in HTTP/1.0; a version other than HTTP/1.0 and 1.1
 * (505). Each is counted (stats.bad_requests) and logged, at most one line
 * per 10 s per server.
 *
 * Request bodies: a handler without on_headers never sees one; the core reads
 * and discards up to limits.max_body bytes (413 and close beyond). A handler
 * with on_headers streams them instead:
 *
 *   on_headers -> on_body* -> on_request -> http_respond -> on_complete, release
 *
 * on_headers sees every request once its headers are parsed. It accepts the
 * body (HTTP_BODY_ACCEPT), or answers at once with http_respond and returns
 * HTTP_BODY_REJECT. The decoded body (chunked framing removed) then arrives
 * through on_body, and on_request follows at the end of the message. A
 * response given in on_headers, in on_body, or later before on_request (e.g.
 * from the handler's own callback when a write to its sink failed) always
 * carries "Connection: close": the core reads no more of the body, shuts the
 * write side down once the response is written and discards what still
 * arrives for at most 2 s (so the client's reset cannot destroy the response)
 * before it closes. on_body is not called again after such a response.
 *
 * "Expect: 100-continue" (HTTP/1.1, with a body) is answered with
 * "HTTP/1.1 100 Continue" only after on_headers accepted; a rejected request
 * gets only its final response. Any other expectation is answered 417 by the
 * core, before on_headers. Handlers without on_headers keep ignoring Expect.
 *
 * End of a streamed request, exactly once: when the handler responded, its
 * release callback (and on_complete) runs as for any response; when the
 * request died before the handler responded and before on_request (client
 * reset or EOF mid-body, idle timeout during the body, server stop, a body
 * the core rejected: malformed chunking, over limits.max_stream_body),
 * on_abort runs instead. Either way the handler frees its per-request state
 * (its temp file) there, and only there. After on_request the rules are the
 * usual ones: http_respond is owed and reports failure itself.
 *
 * Timeouts during a body: each body byte resets the idle timeout
 * (limits.idle_timeout_ms); a body that stalls longer is an idle timeout
 * (stats.timeouts_idle), the connection is closed without a response, and a
 * streaming handler gets on_abort. While the handler has paused the body
 * (http_request_pause_body) no timeout runs: the stall is the handler's. */
#ifndef SAYIN_HTTP_H
#define SAYIN_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
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
	size_t max_body;              /* request body bytes accepted and discarded: 0 = none;
	                                 not used for a handler with on_headers */
	unsigned max_connections;     /* open connections: 10000 */
	uint64_t idle_timeout_ms;     /* keep-alive idle: 60000 */
	uint64_t header_timeout_ms;   /* first byte to end of headers: 10000 */
	uint64_t write_timeout_ms;    /* a write making no progress: 30000 */
	uint64_t handshake_timeout_ms; /* TLS: accept to handshake complete: 10000 */
	/* Safety net for handlers with on_headers, which enforce their own cap:
	 * body bytes the core passes to on_body for one request: 1 GiB. A body
	 * accepted by on_headers with a larger Content-Length, or a chunked one
	 * that grows past it, is answered 413 by the core (connection closed)
	 * and the handler gets on_abort. */
	uint64_t max_stream_body;
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

/* on_headers verdicts. */
#define HTTP_BODY_ACCEPT 0 /* read the body and pass it to on_body */
#define HTTP_BODY_REJECT 1 /* http_respond was called: do not read the body */

typedef struct http_handler {
	void (*on_request)(struct http_handler *self, http_request *req);
	/* Optional (NULL): called once per response the handler sent, after it
	 * was written or failed and before its release callback; req is still
	 * valid. For metrics and access logs. Also called (aborted, nothing
	 * sent) when http_respond fails, e.g. the client left while the handler
	 * worked. Never for requests the core answered itself. */
	void (*on_complete)(struct http_handler *self, http_request *req,
	                    const http_completion *done);

	/* The members below are for request bodies; see "Request bodies" at the
	 * top. All NULL: bodies are discarded as before. on_headers and on_body
	 * go together (http_server_start fails with SAYIN_EINVAL otherwise). */

	/* Optional: called once per request when its headers are complete,
	 * before any body byte (also for requests without a body: then
	 * on_request follows at once). req->content_length and req->chunked
	 * tell the size to expect; req->data may be set here and stays for
	 * on_body, on_request, on_complete and on_abort. Returns
	 * HTTP_BODY_ACCEPT, or calls http_respond and returns HTTP_BODY_REJECT.
	 * A response given here always wins (ACCEPT after http_respond counts
	 * as REJECT); REJECT without a response is a handler bug: the core logs
	 * it, answers 500, closes, and calls on_abort. */
	int (*on_headers)(struct http_handler *self, http_request *req);
	/* Required with on_headers: one piece of the decoded body, valid only
	 * during the call; pieces follow the wire (one per read and chunk, at
	 * most 16 KiB), never empty. Returns 0 to go on. To stop, the handler
	 * calls http_respond (e.g. 413 past its cap, 500 when its sink failed)
	 * and returns nonzero; nonzero without a response is treated as in
	 * on_headers (500, on_abort). It must not block the loop: a slow sink
	 * pauses the body (http_request_pause_body) instead. */
	int (*on_body)(struct http_handler *self, http_request *req, const char *data,
	               size_t len);
	/* Optional: the request accepted by on_headers ended before the
	 * handler responded and before on_request (see "End of a streamed
	 * request"). Called once, from a close callback or right after the core
	 * rejected the body, never from inside on_headers or on_body. req and
	 * its strings are valid during the call only; the handler must not call
	 * http_respond, pause or resume for it, then or later. */
	void (*on_abort)(struct http_handler *self, http_request *req);
} http_handler;

/* The parsed request. Strings are NUL-terminated and owned by the core; they
 * stay valid until the release callback given to http_respond() has run. */
struct http_request {
	const char *method;  /* "GET", "HEAD", ... as sent */
	const char *target;  /* request-target as sent, e.g. "/a/xx.opus?x=1" */
	const char *path;    /* target up to '?', not percent-decoded (a target
	                        with '#' never gets here) */
	int version_major;
	int version_minor;
	int has_body;        /* the request carried a non-empty body (known at
	                        on_request, not yet at on_headers) */
	void *data;          /* free for the handler; NULL when parsing starts */
	uint64_t content_length; /* the Content-Length; HTTP_LENGTH_UNKNOWN when
	                            chunked; 0 when the request has no body */
	int chunked;         /* Transfer-Encoding: chunked */
};

#define HTTP_LENGTH_UNKNOWN UINT64_MAX

/* Case-insensitive lookup of a request header. Returns its value (the first
 * if repeated), or NULL if absent. */
const char *http_request_header(const http_request *req, const char *name);

/* The address of req's client as the socket sees it (the CDN's edge, not
 * the fan): AF_INET, AF_INET6 or AF_UNIX (an adopted socket). Read with
 * one getpeername(2) per connection, on the first call. NULL when it
 * cannot be read (e.g. the connection is already closed). Valid while req
 * is. */
const struct sockaddr_storage *http_request_peer(const http_request *req);

/* Number of header fields and the i-th one, for handlers that must see all. */
size_t http_request_header_count(const http_request *req);
http_header http_request_header_at(const http_request *req, size_t i);

typedef void (*http_release_fn)(void *arg);

/* Writes the IMF-fixdate of unix time t ("Sun, 06 Nov 1994 08:49:37 GMT",
 * RFC 9110 5.6.7) and a NUL into out (at least 30 bytes), without printf.
 * Years outside 0..9999 are clamped to 0000-01-01 00:00:00 or 9999-12-31
 * 23:59:59. The core writes every response's Date with it. */
void http_format_date(int64_t t, char *out);

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

/* Flow control for a streamed body, from on_headers until on_request (or
 * until the handler responds). pause stops reading the socket: no on_body
 * call follows until resume, not even for input already buffered, and no
 * idle timeout runs meanwhile. Called inside on_body, the current piece has
 * been delivered and the rest waits. resume restarts reading; buffered body
 * is delivered from the loop on its next turn, never before resume returns,
 * so it is safe from the handler's own I/O callbacks. While paused the core
 * does not read, so it learns that the client left only after resume (then
 * on_abort); a body paused for good ends at server stop. Both return 0, or
 * UV_EINVAL when req's body is not streaming (no on_headers, body complete,
 * the handler responded). Pausing twice, or resuming an unpaused body, is a
 * no-op. Never call them after on_abort: req may be freed. */
int http_request_pause_body(http_request *req);
int http_request_resume_body(http_request *req);

/* Reason phrase for a status code ("OK", "Not Found", ...). */
const char *http_status_text(int status);

/* Binds listen_addr ("127.0.0.1:8080", "[::1]:8080", "0.0.0.0:80") on loop
 * and starts accepting. With reuseport != 0 the socket gets SO_REUSEPORT
 * before listen(), so several loops may bind the same address.
 * On error a negative errno (e.g. -EADDRINUSE), SAYIN_ECONFIG for a bad
 * address or SAYIN_EINVAL for a bad handler (no on_request, on_headers
 * without on_body) is returned, nothing is left open and *out is untouched. */
int http_server_start(uv_loop_t *loop, const char *listen_addr, int reuseport,
                      const http_limits *limits, http_handler *handler, http_server **out);

/* As http_server_start, serving HTTPS when tls is not NULL: every
 * connection (accepted or adopted) is a TLS stream on that context (see
 * core/tls.h), with limits.handshake_timeout_ms from accept to the end of
 * the handshake. tls must outlive the server; it may be shared by servers
 * on other loops. */
struct tls_server;
int http_server_start_tls(uv_loop_t *loop, const char *listen_addr, int reuseport,
                          const http_limits *limits, struct tls_server *tls,
                          http_handler *handler, http_server **out);

/* 1 when listen_addr binds a loopback address only (127.0.0.0/8, ::1),
 * 0 when not, SAYIN_ECONFIG when it is not an address. */
int http_listen_is_loopback(const char *listen_addr);

/* Fails with -EADDRINUSE if anything, even another process's SO_REUSEPORT
 * group, already listens on listen_addr (bind without SO_REUSEPORT, then
 * close). Call it before the first http_server_start with reuseport != 0,
 * which would otherwise silently join such a group. Returns 0 (always for
 * port 0), a negative errno, or SAYIN_ECONFIG for a bad address. */
int http_listen_check(const char *listen_addr);

/* Serves a connected stream socket fd (AF_UNIX, AF_INET or AF_INET6, e.g.
 * one end of a socketpair, or a socket passed by a supervisor) as if the
 * listener had accepted it: same limits, timeouts and handler. On success
 * the server owns fd and closes it with the connection. On error fd is
 * left to the caller: UV_ECANCELED once http_server_stop was called,
 * UV_EBUSY at max_connections (counted as refused), UV_EINVAL for another
 * kind of socket, UV_ENOMEM, or a negative errno (e.g. -ENOTSOCK). */
int http_server_adopt(http_server *server, int fd);

/* The port actually bound (useful with port 0). */
int http_server_port(const http_server *server);

/* Stops accepting, lets responses in flight finish (closing idle keep-alive
 * connections at once), then frees the server and calls on_stopped(arg).
 * Connections still busy after grace_ms are closed; a body still streaming
 * then gets on_abort, before on_stopped. */
void http_server_stop(http_server *server, uint64_t grace_ms, void (*on_stopped)(void *arg),
                      void *arg);

/* Counters, for /metrics. Written only by the loop thread with relaxed
 * atomic stores, so any thread may read them. */
typedef struct http_stats {
	uint64_t connections_open;
	uint64_t connections_accepted;
	uint64_t connections_refused;  /* over max_connections */
	uint64_t requests;
	uint64_t bad_requests;         /* answered 4xx or 505 by the core */
	uint64_t timeouts_header;
	uint64_t timeouts_idle;
	uint64_t timeouts_write;
	uint64_t bytes_sent;
	/* accept() failures, by errno: each pauses accepting for 100 ms and is
	 * logged at most once a second. */
	uint64_t accept_errors_emfile;
	uint64_t accept_errors_enfile;
	uint64_t accept_errors_other; /* ENOBUFS, ENOMEM, EPERM... */
} http_stats;

/* Any thread may call this while the server runs; the caller makes sure it
 * does not race with the end of http_server_stop, which frees the server. */
void http_server_stats(const http_server *server, http_stats *out);

/* "libuv X\nllhttp Y\n": the versions of the libraries the core runs on,
 * libuv's as it reports itself at run time, llhttp's as compiled in (it has
 * no run-time call). Writes into out and returns it. */
const char *http_library_versions(char *out, size_t size);

#endif

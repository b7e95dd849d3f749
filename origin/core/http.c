/* http: the HTTP/1.1 server core: connections, parsing, limits, timeouts, writes. */
#include "core/http.h"

#include "core/error.h"
#include "core/log.h"
#include "core/tls.h"

#include <llhttp.h>

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAX_HEADER_BYTES 16384
#define DEFAULT_MAX_HEADERS 64
#define DEFAULT_MAX_URI 4096
#define DEFAULT_MAX_CONNECTIONS 10000
#define DEFAULT_IDLE_TIMEOUT_MS 60000
#define DEFAULT_HEADER_TIMEOUT_MS 10000
#define DEFAULT_WRITE_TIMEOUT_MS 30000
#define DEFAULT_HANDSHAKE_TIMEOUT_MS 10000
#define DEFAULT_MAX_STREAM_BODY (UINT64_C(1) << 30)

#define LISTEN_BACKLOG 511
/* Input kept per connection. While a response is pending, reading stops once
 * this much of the next pipelined request(s) is buffered. */
#define IN_BUF_SIZE 16384
/* Response head space in a connection's buffers; a larger head gets its own
 * allocation for that response. */
#define OUT_INLINE 2048
/* Buffers of connections gone idle that a server keeps for the next request
 * (each IN_BUF_SIZE + OUT_INLINE + the request block, ~38 KiB by default).
 * Reusing them avoids malloc handing the memory back to the kernel and
 * faulting it in again on every keep-alive request. */
#define FREE_BUFFERS_MAX 64
/* After a response with "Connection: close" the write side is shut down and
 * input is discarded this long, so the kernel does not reset the connection
 * (and destroy the response) because of unread request bytes. */
#define LINGER_MS 2000
/* Input discarded while lingering, at most: a client that ignores an early
 * 413 must not push its whole upload through us for LINGER_MS. By then the
 * response has been written for a while, so the reset a close with unread
 * input sends is unlikely to destroy it. */
#define LINGER_MAX_BYTES (1u << 20)
#define REFUSE_LOG_INTERVAL_MS 10000
/* accept() failing (EMFILE, ENFILE, ENOBUFS...): the listener stops for
 * this long, as the pending connections would fail again at once, and the
 * failure is logged at most once per interval. */
#define ACCEPT_PAUSE_MS 100
#define ACCEPT_LOG_INTERVAL_MS 1000
/* Connections taken per readable event: the rest wait for the next loop
 * turn (the poll is level-triggered), so requests in flight keep going. */
#define ACCEPT_BATCH 64
/* Requests the core rejects are logged at most once per this interval,
 * with the number left unlogged since. */
#define BAD_REQUEST_LOG_INTERVAL_MS 10000

enum conn_phase {
	PH_IDLE,    /* waiting for the first byte of a request: idle timer */
	PH_HEAD,    /* request line and headers: header timer from the first byte */
	PH_BODY,    /* body being read (discarded, or passed to on_body): idle
	               timer per body read, none while the handler paused it */
	PH_HANDLER, /* request given to the handler, no response yet: no timer */
	PH_WRITE,   /* response being written: write-stall timer */
	PH_LINGER,  /* write side shut down, discarding input until EOF */
	PH_CLOSED   /* uv_close() called on the handles */
};

enum span_kind { SPAN_NONE, SPAN_URL, SPAN_FIELD, SPAN_VALUE };

/* A header field as offsets into the request arena. */
struct header_span {
	size_t name;
	size_t value;
};

/* The server's counters. Only the loop thread writes them, with a relaxed
 * load and store (no locked instruction on the hot path); any thread may
 * read them through http_server_stats. */
struct server_stats {
	_Atomic uint64_t connections_open;
	_Atomic uint64_t connections_accepted;
	_Atomic uint64_t connections_refused;
	_Atomic uint64_t requests;
	_Atomic uint64_t bad_requests;
	_Atomic uint64_t timeouts_header;
	_Atomic uint64_t timeouts_idle;
	_Atomic uint64_t timeouts_write;
	_Atomic uint64_t bytes_sent;
	_Atomic uint64_t accept_errors_emfile;
	_Atomic uint64_t accept_errors_enfile;
	_Atomic uint64_t accept_errors_other;
};

static void stat_add(_Atomic uint64_t *counter, uint64_t n)
{
	atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
	                      memory_order_relaxed);
}

static void stat_sub(_Atomic uint64_t *counter, uint64_t n)
{
	atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) - n,
	                      memory_order_relaxed);
}

static uint64_t stat_get(const _Atomic uint64_t *counter)
{
	return atomic_load_explicit(counter, memory_order_relaxed);
}

struct http_conn {
	size_t linger_bytes;   /* input discarded since the write side shut down */
	http_request req; /* handed to the handler; the conn is found from it */
	http_server *server;
	struct http_conn *prev, *next;
	/* A TCP connection from the listener, or any stream socket given to
	 * http_server_adopt (a pipe handle for AF_UNIX). Only stream calls
	 * touch it after it is opened. */
	union {
		uv_tcp_t tcp;
		uv_pipe_t pipe;
		uv_stream_t stream;
		uv_handle_t handle;
	} sock;
	/* With TLS the socket is the stream's instead, and sock is unused. */
	tls_stream *tls;
	tls_write tls_write_req;
	int handshaking;       /* TLS: accepted, handshake not complete */
	uv_timer_t timer;
	uv_write_t write_req;
	uv_shutdown_t shutdown_req;
	llhttp_t parser;
	enum conn_phase phase;
	int handles_open;      /* tcp and timer until their close callbacks ran */
	/* Timeouts are checked lazily: deadline is when the current phase
	 * times out (loop time, ms; 0: none), timer_due when the timer fires
	 * (0: not running). timer_due <= deadline whenever both are set, so
	 * moving a deadline later costs nothing; the timer re-arms itself. */
	uint64_t deadline;
	uint64_t timer_due;
	int handler_pending;   /* on_headers or on_request called, http_respond not yet */
	int reading;           /* uv_read_start active */
	/* A body streamed to the handler: on_headers accepted it and neither
	 * on_request nor a response followed yet. If the connection dies now,
	 * on_abort is due (conn_abort_body). */
	int body_streaming;
	int body_paused;       /* http_request_pause_body, no resume yet */
	int body_resume_due;   /* resumed: the timer parses on the next loop turn */
	int parse_pending;     /* run the parser once even without new input */
	int in_handler_call;   /* inside on_headers or on_body */
	int eof;               /* the client half-closed */

	/* in, the request block and the inline response head are one
	 * allocation (bufs), taken from the server's pool when input arrives
	 * and given back when the connection goes idle or is freed. */
	char *bufs;
	char *out_inline;
	/* Unparsed input: bytes [in_off, in_len) of in. */
	char *in;
	size_t in_len;
	size_t in_off;
	size_t head_bytes; /* bytes fed to the parser before headers completed */

	/* Request being parsed: the header spans and the strings, in bufs,
	 * which never move while the request lives, so pointers stay valid. */
	struct header_span *headers;
	char *arena;
	size_t arena_len;
	size_t arena_cap;
	size_t n_headers;
	enum span_kind span;
	size_t url_off;
	size_t url_len;
	uint64_t body_bytes;
	int headers_done;
	int message_done;
	int keep_alive;
	int upgrade;
	int is_head;
	int error_status; /* set by a parser callback that rejects the request */
	const char *error_reason; /* why, for the log; NULL: llhttp's reason */
	unsigned host_count;      /* Host fields in the head */
	uint32_t tail;            /* the last 4 bytes fed to the parser */
	/* The head's line endings, checked before llhttp sees the bytes
	 * (head_scan): the previous byte, whether the current line has a byte
	 * other than CR, lines so far, and whether the empty line ending the
	 * head was seen. */
	unsigned char scan_prev;
	int scan_nonempty;
	size_t scan_lines;
	int scan_done;

	/* Response being written. */
	char *out_head;          /* the head if it did not fit out_inline, else NULL */
	struct http_conn *done_prev, *done_next; /* in server->done */
	int write_done;          /* written at once; on_write is due from the idle handle */
	int write_status;
	size_t out_bytes;
	http_release_fn release;
	void *release_arg;
	int close_after_write;
	size_t write_queue_seen; /* bytes of it last known unsent */
	int handler_response;    /* the write is a handler's: on_complete is due */
	int response_status;
	uint64_t start_ns;       /* uv_hrtime() at the request's first byte */
	/* The peer's address, read once per connection on the first
	 * http_request_peer call (peer_known: 1 read, -1 unreadable). */
	struct sockaddr_storage peer;
	int peer_known;
};

struct http_server {
	uv_loop_t *loop;
	/* The listening socket is ours, polled rather than uv_listen'ed: libuv's
	 * accept loop hides EMFILE/ENFILE (it closes the pending connections
	 * with a reserve descriptor and never tells the callback), and spins
	 * when the reserve is gone. Here a failed accept is counted, logged
	 * and pauses the poll for ACCEPT_PAUSE_MS (accept_timer). */
	uv_poll_t listener;
	int listen_fd;
	uv_timer_t accept_timer;
	uint64_t last_accept_log;
	uint64_t accept_unlogged; /* failures since the last line */
	uv_timer_t grace_timer;
	/* Responses written at once by uv_try_write complete from here on the
	 * next loop turn, as libuv's own write callbacks would. */
	uv_idle_t idle;
	struct http_conn *done;
	int idle_active;
	char *free_bufs;   /* pool of connection buffers, linked through their first bytes */
	unsigned n_free_bufs;
	size_t bufs_size;
	size_t spans_size;
	http_handler *handler;
	http_limits limits;
	tls_server *tls; /* NULL: plain HTTP */
	int port;
	struct http_conn *conns;
	size_t n_conns; /* allocated, including closed ones a handler still holds */
	struct server_stats stats;
	time_t date_sec;
	size_t date_len;
	char date[40];
	uint64_t last_refuse_log;
	uint64_t last_bad_log;
	uint64_t bad_unlogged; /* rejections not logged since last_bad_log */
	int handles_open;
	int stopping;
	int listener_open;
	int finishing;
	void (*on_stopped)(void *arg);
	void *stopped_arg;
};

static const char refuse_response[] = "HTTP/1.1 503 Service Unavailable\r\n"
                                      "Content-Length: 0\r\n"
                                      "Connection: close\r\n\r\n";
/* When a connection's own memory cannot be had: written from static
 * storage, so the client still learns why. */
static const char oom_response[] = "HTTP/1.1 503 Service Unavailable\r\n"
                                   "Content-Type: text/plain\r\n"
                                   "Content-Length: 34\r\n"
                                   "Connection: close\r\n\r\n"
                                   "server out of memory, retry later\n";

static void conn_close(struct http_conn *conn);
static void conn_parse(struct http_conn *conn);

static struct http_conn *conn_of(const http_request *req)
{
	return (struct http_conn *)(void *)((char *)(uintptr_t)req - offsetof(struct http_conn, req));
}

/* ---- timers and reading ---- */

static void on_conn_timer(uv_timer_t *timer);

/* Bytes of the response still to leave (plaintext with TLS). */
static size_t conn_write_queue_size(const struct http_conn *conn)
{
	if (conn->tls != NULL)
		return tls_stream_write_queue_size(conn->tls);
	return uv_stream_get_write_queue_size(&conn->sock.stream);
}

/* The current phase times out ms from now. Starts the timer only when it
 * would fire too late (or not at all); otherwise it fires early and
 * re-arms itself for the rest. */
static void conn_deadline(struct http_conn *conn, uint64_t ms)
{
	uint64_t due = uv_now(conn->server->loop) + ms;

	conn->deadline = due;
	if (conn->timer_due == 0 || conn->timer_due > due) {
		uv_timer_start(&conn->timer, on_conn_timer, ms, 0);
		conn->timer_due = due;
	}
}

/* No timeout in the current phase; a running timer finds nothing to do. */
static void conn_no_deadline(struct http_conn *conn)
{
	conn->deadline = 0;
}

static void conn_body_resume(struct http_conn *conn);

static void on_conn_timer(uv_timer_t *timer)
{
	struct http_conn *conn = timer->data;
	struct server_stats *stats = &conn->server->stats;
	uint64_t now;
	size_t queued;

	conn->timer_due = 0;
	if (conn->body_resume_due) {
		conn->body_resume_due = 0;
		conn_body_resume(conn);
	}
	if (conn->deadline == 0 || conn->phase == PH_CLOSED)
		return;
	now = uv_now(conn->server->loop);
	if (now < conn->deadline) {
		/* The deadline moved since the timer was started. */
		uv_timer_start(&conn->timer, on_conn_timer, conn->deadline - now, 0);
		conn->timer_due = conn->deadline;
		return;
	}
	conn->deadline = 0;
	switch (conn->phase) {
	case PH_IDLE:
		if (conn->handshaking) {
			tls_server_count_timeout(conn->server->tls);
			log_debug("http: TLS handshake timeout");
		} else {
			stat_add(&stats->timeouts_idle, 1);
		}
		conn_close(conn);
		break;
	case PH_BODY:
		stat_add(&stats->timeouts_idle, 1);
		conn_close(conn);
		break;
	case PH_HEAD:
		stat_add(&stats->timeouts_header, 1);
		log_debug("http: header timeout");
		conn_close(conn);
		break;
	case PH_WRITE:
		/* libuv reports no progress, so compare the queue with the last
		 * check: a stall is detected between one and two periods after the
		 * last byte left. An empty queue means the callback is due. */
		queued = conn_write_queue_size(conn);
		if (queued == 0 || queued < conn->write_queue_seen) {
			conn->write_queue_seen = queued;
			conn_deadline(conn, conn->server->limits.write_timeout_ms);
			break;
		}
		stat_add(&stats->timeouts_write, 1);
		log_debug("http: write timeout");
		conn_close(conn);
		break;
	case PH_LINGER:
		conn_close(conn);
		break;
	case PH_HANDLER:
	case PH_CLOSED:
		break;
	}
}

/* ---- connection buffers ---- */

/* Gives the connection its buffers: input, then the request block (header
 * spans, the inline response head, the request arena). The block's size
 * bounds everything the parser can store: the request line and headers are
 * capped at max_header_bytes of input, the path is a copy of at most
 * max_uri bytes. */
static int conn_bufs_get(struct http_conn *conn)
{
	http_server *server = conn->server;
	char *b = server->free_bufs;
	char *block;

	if (b != NULL) {
		memcpy(&server->free_bufs, b, sizeof(char *));
		server->n_free_bufs--;
	} else {
		b = malloc(server->bufs_size);
		if (b == NULL)
			return -1;
	}
	block = b + IN_BUF_SIZE;
	conn->bufs = b;
	conn->in = b;
	conn->in_len = 0;
	conn->in_off = 0;
	conn->headers = (struct header_span *)(void *)block;
	conn->out_inline = block + server->spans_size;
	conn->arena = conn->out_inline + OUT_INLINE;
	conn->arena_cap = server->limits.max_header_bytes + server->limits.max_uri + 64;
	return 0;
}

/* Back to the pool (or to malloc beyond FREE_BUFFERS_MAX). */
static void conn_bufs_put(struct http_conn *conn)
{
	http_server *server = conn->server;
	char *b = conn->bufs;

	if (b == NULL)
		return;
	conn->bufs = NULL;
	conn->in = NULL;
	conn->in_len = 0;
	conn->in_off = 0;
	conn->headers = NULL;
	conn->out_inline = NULL;
	conn->arena = NULL;
	if (server->n_free_bufs < FREE_BUFFERS_MAX) {
		memcpy(b, &server->free_bufs, sizeof(char *));
		server->free_bufs = b;
		server->n_free_bufs++;
	} else {
		free(b);
	}
}

static void server_free_bufs(http_server *server)
{
	while (server->free_bufs != NULL) {
		char *b = server->free_bufs;
		memcpy(&server->free_bufs, b, sizeof(char *));
		free(b);
	}
	server->n_free_bufs = 0;
}

static void conn_alloc(struct http_conn *conn, uv_buf_t *buf)
{
	if (conn->in == NULL && conn_bufs_get(conn) != 0) {
		*buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
		return;
	}
	if (conn->phase == PH_LINGER)
		conn->in_len = 0;
	*buf = uv_buf_init(conn->in + conn->in_len, (unsigned)(IN_BUF_SIZE - conn->in_len));
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	conn_alloc(handle->data, buf);
}

static void on_tls_alloc(void *data, uv_buf_t *buf)
{
	conn_alloc(data, buf);
}

static void conn_on_read(struct http_conn *conn, ssize_t nread);

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	(void)buf;
	conn_on_read(stream->data, nread);
}

static void on_tls_read(void *data, ssize_t nread)
{
	conn_on_read(data, nread);
}

static void conn_read_start(struct http_conn *conn)
{
	int err;

	if (conn->reading || conn->eof || conn->phase == PH_CLOSED)
		return;
	if (conn->tls != NULL)
		err = tls_stream_read_start(conn->tls, on_tls_alloc, on_tls_read);
	else
		err = uv_read_start(&conn->sock.stream, on_alloc, on_read);
	if (err != 0) {
		conn_close(conn);
		return;
	}
	conn->reading = 1;
}

static void conn_read_stop(struct http_conn *conn)
{
	if (!conn->reading)
		return;
	if (conn->tls != NULL)
		tls_stream_read_stop(conn->tls);
	else
		uv_read_stop(&conn->sock.stream);
	conn->reading = 0;
}

/* ---- lifetime ---- */

static void server_check_stopped(http_server *server);
static void conn_written(struct http_conn *conn, int status);

static void conn_free(struct http_conn *conn)
{
	http_server *server = conn->server;

	if (conn->prev != NULL)
		conn->prev->next = conn->next;
	else
		server->conns = conn->next;
	if (conn->next != NULL)
		conn->next->prev = conn->prev;
	server->n_conns--;
	conn_bufs_put(conn);
	free(conn);
	server_check_stopped(server);
}

/* ---- writes that completed at once ---- */

/* A response went out whole in conn_send: its completion (on_complete,
 * release, the next request) runs from the server's idle handle on the
 * next loop turn, where libuv would have run the write callback, but
 * without a uv_write_t, whose end re-arms the fd in epoll (epoll_ctl). */
static void on_server_idle(uv_idle_t *idle);

static void conn_done_add(struct http_conn *conn, int status)
{
	http_server *server = conn->server;

	conn->write_done = 1;
	conn->write_status = status;
	conn->done_prev = NULL;
	conn->done_next = server->done;
	if (server->done != NULL)
		server->done->done_prev = conn;
	server->done = conn;
	if (!server->idle_active) {
		server->idle_active = 1;
		uv_idle_start(&server->idle, on_server_idle);
	}
}

static void conn_done_remove(struct http_conn *conn)
{
	http_server *server = conn->server;

	if (conn->done_prev != NULL)
		conn->done_prev->done_next = conn->done_next;
	else if (server->done == conn)
		server->done = conn->done_next;
	if (conn->done_next != NULL)
		conn->done_next->done_prev = conn->done_prev;
	conn->done_prev = conn->done_next = NULL;
	conn->write_done = 0;
}

static void on_server_idle(uv_idle_t *idle)
{
	http_server *server = idle->data;
	struct http_conn *list = server->done;

	/* Completions added meanwhile wait for the next turn, as libuv's
	 * pending callbacks do. No conn is freed during this loop: frees
	 * happen in close callbacks only. */
	server->done = NULL;
	while (list != NULL) {
		struct http_conn *conn = list;
		list = conn->done_next;
		conn->done_prev = conn->done_next = NULL;
		conn->write_done = 0;
		conn_written(conn, conn->write_status);
	}
	if (server->done == NULL) {
		server->idle_active = 0;
		uv_idle_stop(&server->idle);
	}
}

/* The streamed request ended before the handler responded or got
 * on_request: on_abort, once. Never from inside on_headers or on_body. */
static void conn_abort_body(struct http_conn *conn)
{
	http_handler *handler = conn->server->handler;

	if (!conn->body_streaming)
		return;
	conn->body_streaming = 0;
	conn->body_paused = 0;
	conn->body_resume_due = 0;
	conn->handler_pending = 0;
	if (handler->on_abort != NULL)
		handler->on_abort(handler, &conn->req);
}

static void conn_handle_closed(struct http_conn *conn)
{
	/* A completion still due runs now, as libuv runs a finished write's
	 * callback before the close callbacks. */
	if (conn->write_done) {
		conn_done_remove(conn);
		conn_written(conn, conn->write_status);
	}
	conn->handles_open--;
	/* A body cut off mid-stream (client gone, timeout, server stop). */
	if (conn->handles_open == 0)
		conn_abort_body(conn);
	/* A handler that still holds the request frees the conn in http_respond. */
	if (conn->handles_open == 0 && !conn->handler_pending)
		conn_free(conn);
}

static void on_conn_handle_closed(uv_handle_t *handle)
{
	conn_handle_closed(handle->data);
}

static void on_tls_closed(void *data)
{
	conn_handle_closed(data);
}

/* Closes the socket at once. A write in flight is cancelled; its callback
 * still runs (before the handle's close callback) and calls release. */
static void conn_close(struct http_conn *conn)
{
	if (conn->phase == PH_CLOSED)
		return;
	/* What is still queued never leaves: on_write reports the rest. */
	if (conn->phase == PH_WRITE)
		conn->write_queue_seen = conn_write_queue_size(conn);
	conn->phase = PH_CLOSED;
	conn->reading = 0;
	stat_sub(&conn->server->stats.connections_open, 1);
	if (conn->tls != NULL)
		tls_stream_close(conn->tls, on_tls_closed);
	else
		uv_close(&conn->sock.handle, on_conn_handle_closed);
	uv_close((uv_handle_t *)&conn->timer, on_conn_handle_closed);
}

static void conn_shutdown_done(struct http_conn *conn, int status)
{
	if (conn->phase != PH_LINGER)
		return; /* closed meanwhile */
	if (status < 0 || conn->eof || conn->server->stopping) {
		conn_close(conn);
		return;
	}
	conn_deadline(conn, LINGER_MS);
	conn_read_start(conn);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	conn_shutdown_done(req->data, status);
}

static void on_tls_shutdown(void *data, int status)
{
	conn_shutdown_done(data, status);
}

/* Graceful close after a complete response: FIN, then discard input. */
static void conn_shutdown(struct http_conn *conn)
{
	conn->phase = PH_LINGER;
	conn_no_deadline(conn);
	conn->shutdown_req.data = conn;
	if (conn->tls != NULL) {
		/* close_notify, then FIN: it may wait for the socket, so it has
		 * the write timeout (on_conn_timer closes in PH_LINGER). */
		conn_deadline(conn, conn->server->limits.write_timeout_ms);
		if (tls_stream_shutdown(conn->tls, on_tls_shutdown) != 0)
			conn_close(conn);
		return;
	}
	if (uv_shutdown(&conn->shutdown_req, &conn->sock.stream, on_shutdown) != 0)
		conn_close(conn);
}

/* ---- request arena ---- */

/* A parser callback rejects the request: the core answers status and
 * logs reason. Returns -1, the llhttp verdict for an error. */
static int conn_fail(struct http_conn *conn, int status, const char *reason)
{
	conn->error_status = status;
	conn->error_reason = reason;
	return -1;
}

/* Checks the head's line endings in [at, at + len), before llhttp sees
 * those bytes, up to the empty line that ends the head. RFC 9112 2.2 lets a
 * recipient take a bare LF as a line end; llhttp 8 does after the request
 * line and as the empty line but not after a field, and a front end that
 * reads it otherwise frames the request differently: every line must end
 * in CRLF. An obs-fold line (starting with SP or HTAB, 5.2) is refused
 * too. (A bare CR is llhttp's: strict mode refuses it.) Returns 0, or -1
 * with error_status set. */
static int head_scan(struct http_conn *conn, const char *at, size_t len)
{
	const char *p = at, *end = at + len;

	/* A line at a time (memchr), as the head is scanned on every request. */
	while (p < end && !conn->scan_done) {
		const char *lf, *stop;

		if (conn->scan_prev == '\n' && conn->scan_lines > 0 && (*p == ' ' || *p == '\t'))
			return conn_fail(conn, 400, "obsolete line folding");
		lf = memchr(p, '\n', (size_t)(end - p));
		stop = lf != NULL ? lf : end;
		for (const char *q = p; q < stop && !conn->scan_nonempty; q++)
			conn->scan_nonempty = *q != '\r';
		if (stop > p)
			conn->scan_prev = (unsigned char)stop[-1];
		if (lf == NULL)
			break;
		if (conn->scan_prev != '\r')
			return conn_fail(conn, 400, "bare LF in the head");
		if (conn->scan_nonempty)
			conn->scan_lines++;
		else if (conn->scan_lines > 0)
			conn->scan_done = 1; /* leading empty lines are skipped */
		conn->scan_nonempty = 0;
		conn->scan_prev = '\n';
		p = lf + 1;
	}
	return 0;
}

static void head_scan_reset(struct http_conn *conn)
{
	conn->scan_prev = 0;
	conn->scan_nonempty = 0;
	conn->scan_lines = 0;
	conn->scan_done = 0;
}

/* Keeps the last 4 bytes given to the parser in conn->tail. */
static void tail_push(struct http_conn *conn, const char *at, size_t len)
{
	for (size_t i = len > 4 ? len - 4 : 0; i < len; i++)
		conn->tail = (conn->tail << 8) | (unsigned char)at[i];
}

/* "\r\n\r\n" as tail_push leaves it. */
#define TAIL_CRLFCRLF UINT32_C(0x0d0a0d0a)

/* Resets the arena for one request (its space comes with the input
 * buffer, see conn_bufs_get). */
static int conn_arena_init(struct http_conn *conn)
{
	if (conn->bufs == NULL)
		return -1;
	conn->arena_len = 0;
	conn->n_headers = 0;
	conn->span = SPAN_NONE;
	conn->url_off = 0;
	conn->url_len = 0;
	conn->body_bytes = 0;
	conn->error_status = 0;
	conn->error_reason = NULL;
	conn->host_count = 0;
	memset(&conn->req, 0, sizeof(conn->req));
	return 0;
}

/* Appends bytes; on overflow the request is rejected with 431. */
static int arena_append(struct http_conn *conn, const char *at, size_t len)
{
	if (len >= conn->arena_cap - conn->arena_len)
		return conn_fail(conn, 431, "head over the arena");
	memcpy(conn->arena + conn->arena_len, at, len);
	conn->arena_len += len;
	return 0;
}

static int arena_terminate(struct http_conn *conn)
{
	if (conn->arena_len >= conn->arena_cap)
		return conn_fail(conn, 431, "head over the arena");
	conn->arena[conn->arena_len++] = '\0';
	return 0;
}

/* ---- llhttp callbacks ---- */

static int on_message_begin(llhttp_t *parser)
{
	struct http_conn *conn = parser->data;

	if (conn_arena_init(conn) != 0)
		return conn_fail(conn, 503, "out of memory");
	/* vDSO clock read, no syscall. A pipelined request starts when its
	 * parsing does, after the response before it. */
	conn->start_ns = uv_hrtime();
	if (conn->phase == PH_IDLE) {
		conn->phase = PH_HEAD;
		conn_deadline(conn, conn->server->limits.header_timeout_ms);
	}
	return 0;
}

static int on_url(llhttp_t *parser, const char *at, size_t len)
{
	struct http_conn *conn = parser->data;

	if (conn->span != SPAN_URL) {
		conn->span = SPAN_URL;
		conn->url_off = conn->arena_len;
	}
	conn->url_len += len;
	if (conn->url_len > conn->server->limits.max_uri)
		return conn_fail(conn, 414, "request-target over max_uri");
	return arena_append(conn, at, len);
}

static int on_url_complete(llhttp_t *parser)
{
	struct http_conn *conn = parser->data;

	if (conn->span != SPAN_URL)
		conn->url_off = conn->arena_len;
	conn->span = SPAN_NONE;
	/* A fragment is never sent (RFC 9110 7.1); an edge that keeps it
	 * in its cache key while we cut it gives anyone unlimited misses. */
	if (memchr(conn->arena + conn->url_off, '#', conn->url_len) != NULL)
		return conn_fail(conn, 400, "'#' in the request-target");
	return arena_terminate(conn);
}

static int header_begin(struct http_conn *conn)
{
	if (conn->n_headers >= conn->server->limits.max_headers)
		return conn_fail(conn, 431, "more than max_headers fields");
	conn->headers[conn->n_headers].name = conn->arena_len;
	conn->span = SPAN_FIELD;
	return 0;
}

/* Chunked trailers arrive through the same callbacks after the headers;
 * they are not exposed to handlers (RFC 9110 6.5.1), so they are skipped. */
static int on_header_field(llhttp_t *parser, const char *at, size_t len)
{
	struct http_conn *conn = parser->data;

	if (conn->headers_done)
		return 0;
	if (conn->span != SPAN_FIELD && header_begin(conn) != 0)
		return -1;
	return arena_append(conn, at, len);
}

/* RFC 9110 5.6.2 tchar. */
static const unsigned char token_chars[256] = {
	['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
	['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
	['8'] = 1, ['9'] = 1,
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
	['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
	['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
	['Y'] = 1, ['Z'] = 1,
	['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
	['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
	['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
	['y'] = 1, ['z'] = 1,
};

static int is_token_char(unsigned char c)
{
	return token_chars[c];
}

static int on_header_field_complete(llhttp_t *parser)
{
	struct http_conn *conn = parser->data;
	size_t start;

	if (conn->headers_done)
		return 0;
	if (conn->span != SPAN_FIELD && header_begin(conn) != 0)
		return -1;
	/* llhttp 8 lets an unknown name contain spaces ("Bad Name: x");
	 * RFC 9112 5.1 requires a 400, and proxies may read it differently. */
	start = conn->headers[conn->n_headers].name;
	if (start == conn->arena_len)
		return conn_fail(conn, 400, "empty field name");
	for (size_t i = start; i < conn->arena_len; i++) {
		if (!is_token_char((unsigned char)conn->arena[i]))
			return conn_fail(conn, 400, "bad character in a field name");
	}
	if (conn->arena_len - start == 4 && strncasecmp(conn->arena + start, "Host", 4) == 0)
		conn->host_count++;
	if (arena_terminate(conn) != 0)
		return -1;
	conn->headers[conn->n_headers].value = conn->arena_len;
	conn->span = SPAN_VALUE;
	return 0;
}

/* The value span starts right after the name's NUL (set above), so bytes
 * split across reads simply accumulate. */
static int on_header_value(llhttp_t *parser, const char *at, size_t len)
{
	struct http_conn *conn = parser->data;

	if (conn->headers_done)
		return 0;
	if (conn->span != SPAN_VALUE)
		return conn_fail(conn, 400, "field value without a name");
	return arena_append(conn, at, len);
}

static int on_header_value_complete(llhttp_t *parser)
{
	struct http_conn *conn = parser->data;
	size_t start;

	if (conn->headers_done)
		return 0;
	if (conn->span != SPAN_VALUE)
		return conn_fail(conn, 400, "field value without a name");
	start = conn->headers[conn->n_headers].value;
	while (conn->arena_len > start &&
	       (conn->arena[conn->arena_len - 1] == ' ' || conn->arena[conn->arena_len - 1] == '\t'))
		conn->arena_len--;
	if (arena_terminate(conn) != 0)
		return -1;
	conn->n_headers++;
	conn->span = SPAN_NONE;
	return 0;
}

/* ---- streamed bodies ---- */

static const char continue_response[] = "HTTP/1.1 100 Continue\r\n\r\n";

static void continue_written(struct http_conn *conn, int status)
{
	if (status < 0) {
		if (conn->phase != PH_CLOSED)
			conn_close(conn);
		return;
	}
	stat_add(&conn->server->stats.bytes_sent, sizeof(continue_response) - 1);
}

static void on_continue_written(uv_write_t *req, int status)
{
	struct http_conn *conn = req->data;

	free(req);
	continue_written(conn, status);
}

/* TLS: the request is allocated with the conn pointer behind it. */
struct tls_continue {
	tls_write w;
	struct http_conn *conn;
};

static void on_tls_continue_written(void *data, int status)
{
	struct tls_continue *c = data;
	struct http_conn *conn = c->conn;

	free(c);
	continue_written(conn, status);
}

static void conn_send_continue_tls(struct http_conn *conn)
{
	uv_buf_t buf = uv_buf_init((char *)(uintptr_t)continue_response,
	                           sizeof(continue_response) - 1);
	struct tls_continue *c = malloc(sizeof(*c));
	int rc;

	if (c == NULL) {
		conn_close(conn);
		return;
	}
	c->conn = conn;
	rc = tls_stream_write(conn->tls, &c->w, &buf, 1, on_tls_continue_written, c);
	if (rc == 0)
		return;
	free(c);
	if (rc == 1)
		stat_add(&conn->server->stats.bytes_sent, buf.len);
	else
		conn_close(conn);
}

/* The interim 100 after on_headers accepted a body the client holds back.
 * Nothing else is being written: the previous response is complete, and a
 * response from the handler queues behind this in libuv. On failure the
 * connection is closed. */
static void conn_send_continue(struct http_conn *conn)
{
	uv_stream_t *stream = &conn->sock.stream;
	uv_buf_t buf = uv_buf_init((char *)(uintptr_t)continue_response,
	                           sizeof(continue_response) - 1);
	uv_write_t *req;
	int n;

	if (conn->tls != NULL) {
		conn_send_continue_tls(conn);
		return;
	}
	n = uv_try_write(stream, &buf, 1);
	if (n == (int)buf.len) {
		stat_add(&conn->server->stats.bytes_sent, buf.len);
		return;
	}
	if (n < 0 && n != UV_EAGAIN) {
		conn_close(conn);
		return;
	}
	if (n > 0) {
		buf.base += n;
		buf.len -= (unsigned)n;
	}
	/* Rare (a full socket buffer): the rest goes through uv_write. */
	req = malloc(sizeof(*req));
	if (req == NULL) {
		conn_close(conn);
		return;
	}
	req->data = conn;
	if (uv_write(req, stream, &buf, 1, on_continue_written) != 0) {
		free(req);
		conn_close(conn);
	}
}

/* What the parser does after on_headers or on_body returned verdict. */
static int conn_handler_verdict(struct http_conn *conn, int verdict, const char *what)
{
	if (!conn->handler_pending)
		return -1; /* it responded: conn_parse stops, the write closes */
	if (verdict != 0) {
		log_error("http: %s refused the body without responding", what);
		conn->error_status = 500;
		return -1;
	}
	return conn->body_paused ? HPE_PAUSED : 0;
}

/* Headers complete, the handler has on_headers: ask it, then send 100
 * Continue if the client waits for one. Returns an llhttp verdict. */
static int conn_start_body(struct http_conn *conn)
{
	http_server *server = conn->server;
	http_handler *handler = server->handler;
	const char *expect = http_request_header(&conn->req, "Expect");
	int expect_continue = 0, verdict;

	if (expect != NULL) {
		if (strcasecmp(expect, "100-continue") != 0)
			return conn_fail(conn, 417, "unknown expectation");
		/* RFC 9110 10.1.1: not for HTTP/1.0, and moot without a body. */
		expect_continue = conn->req.version_major == 1 && conn->req.version_minor >= 1 &&
		                  conn->req.content_length > 0;
	}
	stat_add(&server->stats.requests, 1);
	conn->handler_pending = 1;
	conn->body_streaming = 1;
	conn->in_handler_call = 1;
	verdict = handler->on_headers(handler, &conn->req);
	conn->in_handler_call = 0;
	verdict = conn_handler_verdict(conn, verdict, "on_headers");
	if (verdict == -1)
		return -1;
	if (conn->req.content_length != HTTP_LENGTH_UNKNOWN &&
	    conn->req.content_length > server->limits.max_stream_body)
		return conn_fail(conn, 413, "Content-Length over max_stream_body");
	if (expect_continue) {
		conn_send_continue(conn);
		if (conn->phase == PH_CLOSED)
			return -1;
	}
	return verdict;
}

/* One piece of a streamed body for on_body. */
static int conn_stream_body(struct http_conn *conn, const char *at, size_t len)
{
	http_handler *handler = conn->server->handler;
	int verdict;

	/* A parse resumed without new input ends an open span empty. */
	if (len == 0)
		return 0;
	conn->body_bytes += len;
	if (conn->body_bytes > conn->server->limits.max_stream_body)
		return conn_fail(conn, 413, "body over max_stream_body");
	conn_deadline(conn, conn->server->limits.idle_timeout_ms);
	conn->in_handler_call = 1;
	verdict = handler->on_body(handler, &conn->req, at, len);
	conn->in_handler_call = 0;
	return conn_handler_verdict(conn, verdict, "on_body");
}

/* RFC 3986 3.2.2 reg-name characters: unreserved, sub-delims and '%'. */
static int is_reg_name_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("-._~!$&'()*+,;=%", c) != NULL);
}

/* Host = uri-host [ ":" port ] (RFC 9110 7.2), or empty. An IP-literal is
 * checked only for its characters; a bad one is then just an unknown name. */
static int host_value_valid(const char *v)
{
	size_t i = 0;

	if (v[0] == '[') {
		for (i = 1; v[i] != ']'; i++) {
			unsigned char c = (unsigned char)v[i];
			if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
			      c == ':' || c == '.'))
				return 0;
		}
		i++;
	} else {
		while (is_reg_name_char((unsigned char)v[i]))
			i++;
	}
	if (v[i] == ':') {
		i++;
		while (v[i] >= '0' && v[i] <= '9')
			i++;
	}
	return v[i] == '\0';
}

/* RFC 9112 3.2: an HTTP/1.1 request has exactly one Host, and no request
 * has two or a bad one. HTTP/1.0 may go without. */
static int check_host(struct http_conn *conn)
{
	const char *host;

	if (conn->host_count > 1)
		return conn_fail(conn, 400, "more than one Host");
	if (conn->host_count == 0) {
		if (conn->parser.http_minor >= 1)
			return conn_fail(conn, 400, "HTTP/1.1 request without Host");
		return 0;
	}
	host = http_request_header(&conn->req, "Host");
	if (host == NULL || !host_value_valid(host))
		return conn_fail(conn, 400, "bad Host value");
	return 0;
}

static int on_headers_complete(llhttp_t *parser)
{
	struct http_conn *conn = parser->data;
	const char *target;
	size_t path_len;

	/* A value with no on_header_value_complete means a parser we do not
	 * understand: refuse rather than guess. */
	if (conn->span != SPAN_NONE)
		return conn_fail(conn, 400, "unterminated field");
	/* llhttp also takes HTTP/0.9 and HTTP/2.0 request lines. */
	if (parser->http_major != 1)
		return conn_fail(conn, 505, "HTTP version other than 1.x");
	if (check_host(conn) != 0)
		return -1;
	/* RFC 9112 6.1: HTTP/1.0 framing with Transfer-Encoding is faulty. */
	if (parser->http_minor == 0 && (parser->flags & F_TRANSFER_ENCODING))
		return conn_fail(conn, 400, "Transfer-Encoding in HTTP/1.0");
	/* Smuggling: llhttp already refuses most of these, but a length
	 * over max_body must not turn a 400 into a 413. */
	if ((parser->flags & F_CONTENT_LENGTH) && (parser->flags & F_TRANSFER_ENCODING))
		return conn_fail(conn, 400, "Content-Length with Transfer-Encoding");
	/* A handler with on_headers sets its own cap (max_stream_body is the
	 * core's net, checked once the handler accepted). */
	if ((parser->flags & F_CONTENT_LENGTH) && parser->content_length > conn->server->limits.max_body &&
	    conn->server->handler->on_headers == NULL)
		return conn_fail(conn, 413, "Content-Length over max_body");
	target = conn->arena + conn->url_off;
	path_len = strcspn(target, "?");
	conn->req.target = target;
	conn->req.path = conn->arena + conn->arena_len;
	if (arena_append(conn, target, path_len) != 0 || arena_terminate(conn) != 0)
		return -1;
	conn->req.method = llhttp_method_name((llhttp_method_t)parser->method);
	conn->req.version_major = parser->http_major;
	conn->req.version_minor = parser->http_minor;
	conn->keep_alive = llhttp_should_keep_alive(parser);
	conn->upgrade = parser->upgrade;
	conn->is_head = parser->method == HTTP_HEAD;
	conn->req.chunked = (parser->flags & F_CHUNKED) != 0;
	if (parser->flags & F_CONTENT_LENGTH)
		conn->req.content_length = parser->content_length;
	else if (conn->req.chunked)
		conn->req.content_length = HTTP_LENGTH_UNKNOWN;
	conn->headers_done = 1;
	if (conn->phase == PH_HEAD) {
		conn->phase = PH_BODY;
		conn_deadline(conn, conn->server->limits.idle_timeout_ms);
	}
	if (conn->server->handler->on_headers != NULL)
		return conn_start_body(conn);
	return 0;
}

static int on_body(llhttp_t *parser, const char *at, size_t len)
{
	struct http_conn *conn = parser->data;

	if (conn->body_streaming)
		return conn_stream_body(conn, at, len);
	conn->body_bytes += len;
	if (conn->body_bytes > conn->server->limits.max_body)
		return conn_fail(conn, 413, "body over max_body");
	/* Only body bytes count as progress: chunk framing, trailers or
	 * whitespace cannot keep a connection alive on their own. */
	conn_deadline(conn, conn->server->limits.idle_timeout_ms);
	return 0;
}

/* Pauses so the request is handled, and the next one parsed only after the
 * response has been written. */
static int on_message_complete(llhttp_t *parser)
{
	struct http_conn *conn = parser->data;

	conn->message_done = 1;
	return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_url_complete = on_url_complete,
	.on_header_field = on_header_field,
	.on_header_field_complete = on_header_field_complete,
	.on_header_value = on_header_value,
	.on_header_value_complete = on_header_value_complete,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

/* ---- responses ---- */

static const char day_names[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
static const char month_names[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

static char *put_str(char *p, const char *s)
{
	size_t n = strlen(s);
	memcpy(p, s, n);
	return p + n;
}

static char *put_2digits(char *p, unsigned v)
{
	*p++ = (char)('0' + v / 10 % 10);
	*p++ = (char)('0' + v % 10);
	return p;
}

/* The proleptic Gregorian date of a day count since 1970-01-01 (H.
 * Hinnant's algorithm). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* The first and last second an IMF-fixdate can write. */
#define DATE_MIN (-62167219200LL) /* 0000-01-01 00:00:00 */
#define DATE_MAX 253402300799LL   /* 9999-12-31 23:59:59 */

void http_format_date(int64_t t, char *out)
{
	int64_t days, secs, y;
	unsigned m, d;
	char *p = out;

	/* Clamped first, so the weekday is the printed date's and -t cannot
	 * overflow. */
	t = t < DATE_MIN ? DATE_MIN : t > DATE_MAX ? DATE_MAX : t;
	days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
	secs = t - days * 86400;
	civil_from_days(days, &y, &m, &d);
	p = put_str(p, day_names[((days % 7) + 11) % 7]); /* 1970-01-01 was a Thursday */
	p = put_str(p, ", ");
	p = put_2digits(p, d);
	*p++ = ' ';
	p = put_str(p, month_names[m - 1]);
	*p++ = ' ';
	p = put_2digits(p, (unsigned)(y / 100));
	p = put_2digits(p, (unsigned)(y % 100));
	*p++ = ' ';
	p = put_2digits(p, (unsigned)(secs / 3600));
	*p++ = ':';
	p = put_2digits(p, (unsigned)(secs / 60 % 60));
	*p++ = ':';
	p = put_2digits(p, (unsigned)(secs % 60));
	p = put_str(p, " GMT");
	*p = '\0';
}

/* The Date of this second, formatted once per second. */
static const char *server_date(http_server *server)
{
	time_t now = time(NULL);

	if (now == server->date_sec && server->date[0] != '\0')
		return server->date;
	http_format_date((int64_t)now, server->date);
	server->date_len = strlen(server->date);
	server->date_sec = now;
	return server->date;
}

/* Headers the core writes itself; a handler's copies are dropped. The
 * length and first letter rule out nearly every name without a compare. */
static int header_is_reserved(const char *name, size_t len)
{
	switch (len) {
	case 4:
		return (name[0] | 0x20) == 'd' && strncasecmp(name, "Date", 4) == 0;
	case 10:
		return (name[0] | 0x20) == 'c' && strncasecmp(name, "Connection", 10) == 0;
	case 14:
		return (name[0] | 0x20) == 'c' && strncasecmp(name, "Content-Length", 14) == 0;
	case 17:
		return (name[0] | 0x20) == 't' && strncasecmp(name, "Transfer-Encoding", 17) == 0;
	default:
		return 0;
	}
}

/* The response head: in the connection's inline space, moved to the heap
 * if it outgrows it. */
struct out_buf {
	char *p;
	size_t len;
	size_t cap;
	int heap;
};

static int out_grow(struct out_buf *out, size_t need)
{
	size_t cap;
	char *p;

	cap = out->cap * 2;
	if (cap < out->len + need)
		cap = out->len + need;
	if (cap < 4096)
		cap = 4096;
	p = malloc(cap);
	if (p == NULL)
		return -1;
	if (out->len > 0)
		memcpy(p, out->p, out->len);
	if (out->heap)
		free(out->p);
	out->p = p;
	out->cap = cap;
	out->heap = 1;
	return 0;
}

static inline int out_reserve(struct out_buf *out, size_t need)
{
	return need <= out->cap - out->len ? 0 : out_grow(out, need);
}

/* Call out_reserve first. */
static void out_put(struct out_buf *out, const char *s, size_t len)
{
	memcpy(out->p + out->len, s, len);
	out->len += len;
}

static void out_u64(struct out_buf *out, uint64_t v)
{
	char tmp[20];
	size_t n = sizeof(tmp);

	do {
		tmp[--n] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	out_put(out, tmp + n, sizeof(tmp) - n);
}

static void on_write(uv_write_t *req, int status);
static void on_tls_written(void *data, int status);

/* Queues status line, headers and body. The caller has set release; on
 * failure nothing is queued and the caller releases and closes.
 *
 * The write is first tried at once (uv_try_write): a response the socket
 * takes whole completes from the idle handle on the next loop turn; only
 * the rest of a partial write goes through uv_write. */
static int conn_send(struct http_conn *conn, int status, const http_header *headers,
                     size_t n_headers, const void *body, size_t body_len, int send_body,
                     int close_after)
{
	static const char conn_close_line[] = "Connection: close\r\n";
	static const char conn_keep_line[] = "Connection: keep-alive\r\n";
	static const char length_name[] = "Content-Length: ";
	http_server *server = conn->server;
	const char *reason = http_status_text(status);
	const char *date = server_date(server);
	const char *connection = NULL;
	size_t connection_len = 0, reason_len = strlen(reason);
	int closing, with_length;
	struct out_buf out;
	uv_buf_t bufs[2];
	unsigned n_bufs = 1;
	size_t total;
	int err, n;

	closing = close_after || !conn->keep_alive || conn->upgrade || server->stopping;
	if (closing) {
		connection = conn_close_line;
		connection_len = sizeof(conn_close_line) - 1;
	} else if (conn->req.version_major == 1 && conn->req.version_minor == 0) {
		connection = conn_keep_line;
		connection_len = sizeof(conn_keep_line) - 1;
	}

	/* RFC 9110 8.6: no Content-Length on 1xx or 204; a 304 carries the
	 * length of the representation, which only the handler knows. */
	with_length = !(status < 200 || status == 204 || (status == 304 && body_len == 0));
	if (conn->is_head || status < 200 || status == 204 || status == 304)
		send_body = 0;
	if (send_body && body_len > 0 && body == NULL)
		return UV_EINVAL;

	out.p = conn->out_inline;
	out.cap = out.p != NULL ? OUT_INLINE : 0;
	out.len = 0;
	out.heap = 0;
	/* Status line, Date, Content-Length (20 digits at most), Connection. */
	if (out_reserve(&out, 16 + reason_len + 8 + server->date_len + 2 + sizeof(length_name) +
	                          22 + connection_len) != 0)
		return UV_ENOMEM;
	out_put(&out, "HTTP/1.1 ", 9);
	out.p[out.len++] = (char)('0' + (status / 100) % 10);
	out.p[out.len++] = (char)('0' + (status / 10) % 10);
	out.p[out.len++] = (char)('0' + status % 10);
	out.p[out.len++] = ' ';
	out_put(&out, reason, reason_len);
	out_put(&out, "\r\nDate: ", 8);
	out_put(&out, date, server->date_len);
	out_put(&out, "\r\n", 2);
	if (with_length) {
		out_put(&out, length_name, sizeof(length_name) - 1);
		out_u64(&out, body_len);
		out_put(&out, "\r\n", 2);
	}
	if (connection != NULL)
		out_put(&out, connection, connection_len);

	/* One pass over each of the handler's strings measures it and
	 * refuses CR/LF (and ':' in a name); reserved names are dropped. */
	for (size_t i = 0; i < n_headers; i++) {
		const char *name = headers[i].name, *value = headers[i].value;
		size_t name_len, value_len;

		if (name == NULL || value == NULL)
			goto invalid;
		name_len = strcspn(name, "\r\n:");
		value_len = strcspn(value, "\r\n");
		if (name[name_len] != '\0' || value[value_len] != '\0')
			goto invalid;
		if (header_is_reserved(name, name_len))
			continue;
		if (out_reserve(&out, name_len + value_len + 4) != 0)
			goto nomem;
		out_put(&out, name, name_len);
		out_put(&out, ": ", 2);
		out_put(&out, value, value_len);
		out_put(&out, "\r\n", 2);
	}
	if (out_reserve(&out, 2) != 0)
		goto nomem;
	out_put(&out, "\r\n", 2);

	bufs[0] = uv_buf_init(out.p, (unsigned)out.len);
	if (send_body && body_len > 0) {
		if (body_len > UINT32_MAX) {
			err = UV_E2BIG;
			goto fail;
		}
		/* Zero-copy: libuv writes straight from the caller's memory. */
		bufs[1] = uv_buf_init((char *)(uintptr_t)body, (unsigned)body_len);
		n_bufs = 2;
	}
	total = out.len + (n_bufs == 2 ? body_len : 0);
	conn->out_head = out.heap ? out.p : NULL;
	conn->out_bytes = total;
	conn->close_after_write = closing;

	if (conn->tls != NULL) {
		n = tls_stream_write(conn->tls, &conn->tls_write_req, bufs, n_bufs, on_tls_written, conn);
		if (n == 1) {
			conn->write_queue_seen = 0;
			conn_done_add(conn, 0);
		} else if (n == 0) {
			conn->write_queue_seen = tls_stream_write_queue_size(conn->tls);
		} else if (n == UV_EINVAL) {
			conn->out_head = NULL;
			err = n;
			goto fail;
		} else {
			conn->write_queue_seen = total;
			conn_done_add(conn, n);
		}
		conn->phase = PH_WRITE;
		conn_deadline(conn, server->limits.write_timeout_ms);
		return 0;
	}
	/* uv_try_write returns an int count. */
	n = total <= INT32_MAX ? uv_try_write(&conn->sock.stream, bufs, n_bufs) : UV_EAGAIN;
	if (n >= 0 && (size_t)n == total) {
		conn->write_queue_seen = 0;
		conn_done_add(conn, 0);
	} else if (n < 0 && n != UV_EAGAIN) {
		/* Reported from the idle handle, as uv_write reports it. */
		conn->write_queue_seen = total;
		conn_done_add(conn, n);
	} else {
		uv_buf_t *rest = bufs;
		unsigned n_rest = n_bufs;

		if (n > 0) {
			size_t done = (size_t)n;
			if (done >= bufs[0].len) {
				done -= bufs[0].len;
				rest++;
				n_rest--;
			}
			rest[0].base += done;
			rest[0].len -= (unsigned)done;
		}
		conn->write_req.data = conn;
		err = uv_write(&conn->write_req, &conn->sock.stream, rest, n_rest, on_write);
		if (err != 0) {
			conn->out_head = NULL;
			goto fail;
		}
		conn->write_queue_seen = uv_stream_get_write_queue_size(&conn->sock.stream);
	}
	conn->phase = PH_WRITE;
	conn_deadline(conn, server->limits.write_timeout_ms);
	return 0;

invalid:
	log_error("http: handler passed an invalid response header");
	err = UV_EINVAL;
	goto fail;
nomem:
	err = UV_ENOMEM;
fail:
	if (out.heap)
		free(out.p);
	return err;
}

/* Logs a rejected request, at most once per BAD_REQUEST_LOG_INTERVAL_MS
 * per server: a client sending garbage must not flood the log. */
static void log_bad_request(http_server *server, int status, const char *reason)
{
	uint64_t now = uv_now(server->loop);

	if (server->last_bad_log != 0 && now - server->last_bad_log < BAD_REQUEST_LOG_INTERVAL_MS) {
		server->bad_unlogged++;
		return;
	}
	if (server->bad_unlogged > 0)
		log_warn("http: bad request answered %d: %s (and %" PRIu64 " more not logged)", status,
		         reason, server->bad_unlogged);
	else
		log_warn("http: bad request answered %d: %s", status, reason);
	server->last_bad_log = now;
	server->bad_unlogged = 0;
}

/* The core answers a request the handler never sees, then closes. reason
 * (NULL: conn->error_reason) goes to the log with client errors. */
static void conn_reject(struct http_conn *conn, int status, const char *reason)
{
	if (status < 500 || status == 505) {
		stat_add(&conn->server->stats.bad_requests, 1);
		if (reason == NULL)
			reason = conn->error_reason;
		log_bad_request(conn->server, status, reason != NULL ? reason : "malformed request");
	}
	conn->release = NULL;
	conn->release_arg = NULL;
	conn->req.version_major = 1;
	conn->req.version_minor = 1;
	conn->is_head = 0;
	conn_read_stop(conn);
	if (conn_send(conn, status, NULL, 0, NULL, 0, 0, 1) != 0)
		conn_close(conn);
}

/* After a keep-alive response: the next request may already be buffered. */
static void conn_next_request(struct http_conn *conn)
{
	conn->headers_done = 0;
	conn->head_bytes = 0;
	conn->upgrade = 0;
	conn->is_head = 0;
	head_scan_reset(conn);
	conn->phase = PH_IDLE;
	conn_deadline(conn, conn->server->limits.idle_timeout_ms);
	llhttp_resume(&conn->parser);
	conn_read_start(conn);
	if (conn->in_off < conn->in_len) {
		conn_parse(conn);
		return;
	}
	if (conn->eof) {
		conn_close(conn);
		return;
	}
	/* Idle keep-alive connections hold no buffers: they go back to the
	 * server's pool, where the next request finds them. */
	conn_bufs_put(conn);
}

/* Tells the handler how its response ended; req is still valid. */
static void conn_complete(struct http_conn *conn, uint64_t bytes_sent, int aborted)
{
	http_handler *handler = conn->server->handler;
	http_completion done;

	if (handler->on_complete == NULL)
		return;
	done.status = conn->response_status;
	done.bytes_sent = bytes_sent;
	done.duration_ns = uv_hrtime() - conn->start_ns;
	done.aborted = aborted;
	handler->on_complete(handler, &conn->req, &done);
}

/* The response's write ended (status < 0: failed), from on_write, the
 * idle handle, or a close callback. */
static void conn_written(struct http_conn *conn, int status)
{
	http_release_fn release = conn->release;
	void *release_arg = conn->release_arg;
	int failed = status < 0 || conn->phase == PH_CLOSED;
	uint64_t sent = conn->out_bytes;

	/* A failed write reports what is known to have left: a lower bound,
	 * from the queue size last seen (at close, at a stall check, or right
	 * after queueing). */
	if (failed)
		sent -= conn->write_queue_seen < sent ? conn->write_queue_seen : sent;
	stat_add(&conn->server->stats.bytes_sent, sent);
	if (conn->handler_response) {
		conn->handler_response = 0;
		conn_complete(conn, sent, failed);
	}
	free(conn->out_head);
	conn->out_head = NULL;
	conn->release = NULL;
	conn->release_arg = NULL;
	if (release != NULL)
		release(release_arg);

	if (conn->phase == PH_CLOSED)
		return; /* cancelled by conn_close */
	if (status < 0) {
		log_debug("http: write failed: %s", uv_strerror(status));
		conn_close(conn);
		return;
	}
	if (conn->close_after_write || conn->server->stopping) {
		conn_shutdown(conn);
		return;
	}
	conn_next_request(conn);
}

static void on_write(uv_write_t *req, int status)
{
	conn_written(req->data, status);
}

static void on_tls_written(void *data, int status)
{
	conn_written(data, status);
}

int http_respond(http_request *req, int status, const http_header *headers, size_t n_headers,
                 const void *body, size_t body_len, int send_body, int close_after,
                 http_release_fn release, void *release_arg)
{
	struct http_conn *conn = conn_of(req);
	int err;

	if (!conn->handler_pending) {
		log_error("http: http_respond called twice for one request");
		if (release != NULL)
			release(release_arg);
		return UV_EINVAL;
	}
	conn->handler_pending = 0;
	conn->response_status = status;
	if (conn->body_streaming) {
		/* Answered before the body was read: the rest is never read. */
		conn->body_streaming = 0;
		conn->body_paused = 0;
		conn->body_resume_due = 0;
		close_after = 1;
		conn_read_stop(conn);
	}
	if (conn->phase == PH_CLOSED) {
		/* The client went away while the handler worked. */
		conn_complete(conn, 0, 1);
		if (release != NULL)
			release(release_arg);
		if (conn->handles_open == 0)
			conn_free(conn);
		return UV_ECONNRESET;
	}
	if (status < 200 || status > 599) {
		err = UV_EINVAL;
	} else {
		conn->release = release;
		conn->release_arg = release_arg;
		err = conn_send(conn, status, headers, n_headers, body, body_len, send_body, close_after);
	}
	if (err != 0) {
		conn->release = NULL;
		conn->release_arg = NULL;
		conn_complete(conn, 0, 1);
		if (release != NULL)
			release(release_arg);
		conn_close(conn);
	} else {
		conn->handler_response = 1;
	}
	return err;
}

/* ---- flow control of streamed bodies ---- */

int http_request_pause_body(http_request *req)
{
	struct http_conn *conn = conn_of(req);

	if (!conn->body_streaming || conn->phase != PH_BODY)
		return UV_EINVAL;
	conn->body_paused = 1;
	conn->body_resume_due = 0;
	/* Inside on_headers or on_body the parser stops when it returns. */
	if (!conn->in_handler_call) {
		conn_read_stop(conn);
		conn_no_deadline(conn);
	}
	return 0;
}

int http_request_resume_body(http_request *req)
{
	struct http_conn *conn = conn_of(req);

	if (!conn->body_streaming || conn->phase != PH_BODY)
		return UV_EINVAL;
	if (!conn->body_paused)
		return 0;
	conn->body_paused = 0;
	if (conn->in_handler_call)
		return 0; /* paused and resumed in one call: nothing stopped */
	/* Parse from the timer on the next loop turn, not inside the
	 * handler's call; conn_deadline re-arms the timer for the idle
	 * timeout from there. */
	conn->body_resume_due = 1;
	uv_timer_start(&conn->timer, on_conn_timer, 0, 0);
	conn->timer_due = uv_now(conn->server->loop);
	return 0;
}

/* The deferred half of http_request_resume_body. */
static void conn_body_resume(struct http_conn *conn)
{
	if (conn->phase != PH_BODY || !conn->body_streaming || conn->body_paused)
		return;
	llhttp_resume(&conn->parser);
	conn_deadline(conn, conn->server->limits.idle_timeout_ms);
	/* The parser may owe callbacks with no input left, e.g. the end of
	 * a message whose last byte was read before the pause. */
	conn->parse_pending = 1;
	conn_parse(conn);
	if (conn->phase == PH_BODY && !conn->body_paused && conn->in_len < IN_BUF_SIZE)
		conn_read_start(conn);
}

/* ---- parsing ---- */

static void conn_dispatch(struct http_conn *conn)
{
	http_server *server = conn->server;

	conn->message_done = 0;
	conn->phase = PH_HANDLER;
	conn_no_deadline(conn);
	conn->req.has_body = conn->body_bytes > 0;
	conn->handler_pending = 1;
	/* A streamed request was counted at on_headers. */
	if (!conn->body_streaming)
		stat_add(&server->stats.requests, 1);
	conn->body_streaming = 0;
	/* The conn outlives this call: it is freed only from a close callback
	 * or a later http_respond, never synchronously here. */
	server->handler->on_request(server->handler, &conn->req);
}

/* Feeds buffered input to the parser until a request completes, more input
 * is needed, or the request is rejected. */
static void conn_parse(struct http_conn *conn)
{
	const http_limits *limits = &conn->server->limits;

	while ((conn->in_off < conn->in_len || conn->parse_pending) && !conn->body_paused &&
	       (conn->phase == PH_IDLE || conn->phase == PH_HEAD || conn->phase == PH_BODY)) {
		const char *start = conn->in + conn->in_off;
		size_t n = conn->in_len - conn->in_off;
		size_t consumed;
		int in_head = !conn->headers_done;
		llhttp_errno_t err;

		/* Feed no more than the header budget, so an endless header is
		 * cut off at exactly max_header_bytes. */
		if (in_head && n > limits->max_header_bytes - conn->head_bytes)
			n = limits->max_header_bytes - conn->head_bytes;
		conn->parse_pending = 0;
		if (in_head && !conn->scan_done && head_scan(conn, start, n) != 0) {
			conn_reject(conn, 400, NULL);
			return;
		}
		err = llhttp_execute(&conn->parser, start, n);
		if (err == HPE_OK)
			consumed = n;
		else
			consumed = (size_t)(llhttp_get_error_pos(&conn->parser) - start);
		conn->in_off += consumed;
		if (in_head)
			conn->head_bytes += consumed;
		tail_push(conn, start, consumed);

		/* The handler answered from on_headers or on_body (the write
		 * closes the connection), or a failed 100 Continue closed it. */
		if (conn->phase == PH_WRITE || conn->phase == PH_CLOSED)
			break;
		if (conn->message_done && (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE)) {
			/* llhttp ends a chunked body's trailer section at a bare
			 * LF too ("0\r\n\n"): the same rule as head_scan. */
			if (conn->req.chunked && conn->tail != TAIL_CRLFCRLF) {
				conn_fail(conn, 400, "bare LF ending a chunked body");
				conn_abort_body(conn);
				conn_reject(conn, 400, NULL);
				return;
			}
			conn_dispatch(conn);
			break;
		}
		if (err == HPE_PAUSED && conn->body_paused) {
			/* Until http_request_resume_body; the stall is not the client's. */
			conn_read_stop(conn);
			conn_no_deadline(conn);
			break;
		}
		if (err != HPE_OK) {
			conn_abort_body(conn);
			/* A callback's own verdict (400, 413, 414, 417, 431, 500,
			 * 505) or a parse error. */
			if (conn->error_status != 0)
				conn_reject(conn, conn->error_status, NULL);
			else
				conn_reject(conn, 400, llhttp_get_error_reason(&conn->parser));
			return;
		}
		if (!conn->headers_done && conn->head_bytes >= limits->max_header_bytes) {
			conn_reject(conn, 431, "head over max_header_bytes");
			return;
		}
	}
	if (conn->phase == PH_CLOSED)
		return;
	/* Keep only the unparsed tail. */
	if (conn->in_off > 0) {
		memmove(conn->in, conn->in + conn->in_off, conn->in_len - conn->in_off);
		conn->in_len -= conn->in_off;
		conn->in_off = 0;
	}
	if (conn->eof && (conn->phase == PH_IDLE || conn->phase == PH_HEAD || conn->phase == PH_BODY))
		conn_close(conn); /* a request cut short can never complete */
	else if (conn->in_len >= IN_BUF_SIZE)
		conn_read_stop(conn); /* full of pipelined requests: wait */
}

static void conn_on_read(struct http_conn *conn, ssize_t nread)
{
	if (nread == 0)
		return;
	if (nread < 0) {
		if (nread == UV_ENOBUFS && conn->in != NULL) {
			conn_read_stop(conn); /* buffer full; resumed after the response */
			return;
		}
		if (nread == UV_ENOBUFS && conn->tls == NULL) {
			/* No input buffer could be allocated: say so, then close.
			 * (Over TLS the static answer cannot be sent: just close.) */
			uv_buf_t b = uv_buf_init((char *)(uintptr_t)oom_response,
			                         sizeof(oom_response) - 1);
			log_error("http: out of memory for a connection's buffers: answered 503");
			(void)uv_try_write(&conn->sock.stream, &b, 1);
		}
		if (nread == UV_EOF && (conn->phase == PH_HANDLER || conn->phase == PH_WRITE)) {
			/* Half-close: still answer what was sent. */
			conn->eof = 1;
			conn_read_stop(conn);
			return;
		}
		conn_close(conn);
		return;
	}
	if (conn->phase == PH_LINGER) {
		conn->in_len = 0;
		conn->linger_bytes += (size_t)nread;
		if (conn->linger_bytes > LINGER_MAX_BYTES)
			conn_close(conn);
		return;
	}
	conn->in_len += (size_t)nread;
	switch (conn->phase) {
	case PH_IDLE:
	case PH_HEAD:
	case PH_BODY:
		conn_parse(conn);
		break;
	case PH_HANDLER:
	case PH_WRITE:
		/* Pipelined input waits; stop reading once the buffer is full. */
		if (conn->in_len >= IN_BUF_SIZE)
			conn_read_stop(conn);
		break;
	case PH_LINGER:
	case PH_CLOSED:
		break;
	}
}

/* ---- accepting ---- */

/* A refused connection: answered, its write side shut down, then its input
 * discarded until EOF (at most LINGER_MAX_BYTES, for at most LINGER_MS),
 * as a connection's own linger does. Closing at once while the client is
 * still sending (an upload) would reset the connection, and the client
 * would see a broken pipe instead of the 503. It needs no conn: only this. */
struct refused {
	uv_tcp_t tcp;
	uv_timer_t timer;
	size_t drained;
	int open; /* handles not yet closed */
};

static void refused_handle_closed(uv_handle_t *handle)
{
	struct refused *r = handle->data;
	if (--r->open == 0)
		free(r);
}

static void refused_close(struct refused *r)
{
	if (uv_is_closing((uv_handle_t *)&r->tcp))
		return;
	uv_close((uv_handle_t *)&r->tcp, refused_handle_closed);
	uv_close((uv_handle_t *)&r->timer, refused_handle_closed);
}

static void refused_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	static _Thread_local char discard[4096]; /* read and dropped: never looked at */
	(void)handle;
	(void)suggested;
	*buf = uv_buf_init(discard, sizeof(discard));
}

static void refused_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct refused *r = stream->data;
	(void)buf;
	if (nread < 0 || (r->drained += (size_t)nread) > LINGER_MAX_BYTES)
		refused_close(r);
}

static void refused_timeout(uv_timer_t *timer)
{
	refused_close(timer->data);
}

/* Over max_connections (oom 0) or out of memory for the connection
 * (oom 1): say 503 if the socket takes it at once, then linger and close
 * fd; without memory even for that, drain what has arrived and close. */
static void conn_refuse(http_server *server, int fd, int oom)
{
	struct refused *r = malloc(sizeof(*r));
	uint64_t now = uv_now(server->loop);
	const char *answer = oom ? oom_response : refuse_response;
	size_t answer_len = oom ? sizeof(oom_response) - 1 : sizeof(refuse_response) - 1;
	char drain[4096];

	stat_add(&server->stats.connections_refused, 1);
	if (server->last_refuse_log == 0 || now - server->last_refuse_log >= REFUSE_LOG_INTERVAL_MS) {
		if (oom)
			log_error("http: out of memory for a new connection, refusing");
		else
			log_warn("http: over %u connections, refusing", server->limits.max_connections);
		server->last_refuse_log = now;
	}
	/* A TLS client cannot read plain text: it only sees the close. */
	if (server->tls == NULL)
		(void)send(fd, answer, answer_len, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (r != NULL) {
		r->drained = 0;
		r->open = 2;
		uv_tcp_init(server->loop, &r->tcp);
		uv_timer_init(server->loop, &r->timer);
		r->tcp.data = r;
		r->timer.data = r;
		if (uv_tcp_open(&r->tcp, fd) == 0) {
			if (shutdown(fd, SHUT_WR) == 0 &&
			    uv_read_start((uv_stream_t *)&r->tcp, refused_alloc, refused_read) == 0 &&
			    uv_timer_start(&r->timer, refused_timeout, LINGER_MS, 0) == 0)
				return;
			refused_close(r); /* the handle owns fd now: closing it closes fd */
			return;
		}
		refused_close(r);
	}
	/* Unread input would turn our close into a reset that can destroy the
	 * 503 at the client: take what has arrived. */
	for (int i = 0; i < 4 && recv(fd, drain, sizeof(drain), MSG_DONTWAIT) > 0; i++)
		;
	close(fd);
}

/* A new connection in PH_IDLE with its timer; the caller inits the socket
 * handle (sock, whose data is set here) before the loop runs again, and
 * closes with conn_close on failure. NULL when out of memory. */
static struct http_conn *conn_new(http_server *server)
{
	struct http_conn *conn = calloc(1, sizeof(*conn));

	if (conn == NULL)
		return NULL;
	conn->server = server;
	uv_timer_init(server->loop, &conn->timer);
	conn->timer.data = conn;
	conn->handles_open = 2;
	conn->phase = PH_IDLE;
	conn->next = server->conns;
	if (server->conns != NULL)
		server->conns->prev = conn;
	server->conns = conn;
	server->n_conns++;
	stat_add(&server->stats.connections_open, 1);
	llhttp_init(&conn->parser, HTTP_REQUEST, &parser_settings);
	conn->parser.data = conn;
	return conn;
}

/* The socket is open: wait for the first request. */
static void conn_begin(struct http_conn *conn)
{
	const http_limits *limits = &conn->server->limits;

	if (conn->tls == NULL)
		conn->sock.handle.data = conn;
	stat_add(&conn->server->stats.connections_accepted, 1);
	/* TLS: the handshake has its own deadline, which bytes do not move
	 * (a client trickling a ClientHello is cut off all the same). */
	conn->handshaking = conn->tls != NULL;
	conn_deadline(conn, conn->handshaking ? limits->handshake_timeout_ms
	                                      : limits->idle_timeout_ms);
	conn_read_start(conn);
}

static void on_tls_handshake(void *data, int status)
{
	struct http_conn *conn = data;

	(void)status;
	conn->handshaking = 0;
	if (conn->phase == PH_IDLE)
		conn_deadline(conn, conn->server->limits.idle_timeout_ms);
}

/* Serves fd over TLS: the stream owns fd from here on, also on failure.
 * Returns 0, or an error after which the caller closes conn. */
static int conn_open_tls(struct http_conn *conn, int fd, int tcp)
{
	int one = 1, err;

	if (tcp)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	err = tls_stream_open(conn->server->tls, conn->server->loop, fd, conn, on_tls_handshake,
	                      &conn->tls);
	if (err != 0) {
		/* conn_close closes sock: give it a handle that holds no fd. */
		conn->tls = NULL;
		uv_tcp_init(conn->server->loop, &conn->sock.tcp);
		conn->sock.handle.data = conn;
	}
	return err;
}

static void on_listen_readable(uv_poll_t *poll, int status, int events);

static void on_accept_resume(uv_timer_t *timer)
{
	http_server *server = timer->data;

	if (!server->stopping)
		uv_poll_start(&server->listener, UV_READABLE, on_listen_readable);
}

/* accept() failed with err (an errno): count it, log at most once per
 * ACCEPT_LOG_INTERVAL_MS, and stop polling the listener for
 * ACCEPT_PAUSE_MS. Pending connections wait in the kernel's backlog
 * meanwhile instead of being reset. */
static void accept_failed(http_server *server, int err)
{
	uint64_t now = uv_now(server->loop);
	_Atomic uint64_t *counter = err == EMFILE   ? &server->stats.accept_errors_emfile
	                            : err == ENFILE ? &server->stats.accept_errors_enfile
	                                            : &server->stats.accept_errors_other;

	stat_add(counter, 1);
	server->accept_unlogged++;
	if (server->last_accept_log == 0 || now - server->last_accept_log >= ACCEPT_LOG_INTERVAL_MS) {
		log_error("http: accept failed: %s (%" PRIu64 " time(s) since the last line); "
		          "pausing accepts for %d ms",
		          strerror(err), server->accept_unlogged, ACCEPT_PAUSE_MS);
		server->last_accept_log = now;
		server->accept_unlogged = 0;
	}
	uv_poll_stop(&server->listener);
	uv_timer_start(&server->accept_timer, on_accept_resume, ACCEPT_PAUSE_MS, 0);
}

/* A socket accept() gave us: serve it, or refuse it. */
static void conn_take(http_server *server, int fd)
{
	struct http_conn *conn;
	int err;

	if (stat_get(&server->stats.connections_open) >= server->limits.max_connections) {
		conn_refuse(server, fd, 0);
		return;
	}
	conn = conn_new(server);
	if (conn == NULL) {
		conn_refuse(server, fd, 1);
		return;
	}
	if (server->tls != NULL) {
		err = conn_open_tls(conn, fd, 1);
		if (err != 0) {
			log_warn("http: cannot serve an accepted connection: %s", uv_strerror(err));
			conn_close(conn);
			return;
		}
		conn_begin(conn);
		return;
	}
	uv_tcp_init(server->loop, &conn->sock.tcp);
	conn->sock.handle.data = conn;
	err = uv_tcp_open(&conn->sock.tcp, fd);
	if (err != 0) {
		/* The handle never took fd. */
		log_warn("http: cannot serve an accepted connection: %s", uv_strerror(err));
		close(fd);
		conn_close(conn);
		return;
	}
	uv_tcp_nodelay(&conn->sock.tcp, 1);
	conn_begin(conn);
}

static void on_listen_readable(uv_poll_t *poll, int status, int events)
{
	http_server *server = poll->data;

	(void)events;
	if (status < 0) {
		accept_failed(server, -status);
		return;
	}
	for (int i = 0; i < ACCEPT_BATCH && !server->stopping; i++) {
		int fd = accept4(server->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			/* The client left before we took it; or a signal. */
			if (errno == ECONNABORTED || errno == EINTR)
				continue;
			accept_failed(server, errno);
			return;
		}
		conn_take(server, fd);
	}
}

int http_server_adopt(http_server *server, int fd)
{
	struct sockaddr_storage sa;
	socklen_t sa_len = sizeof(sa), type_len = sizeof(int);
	struct http_conn *conn;
	int type = 0, err;

	if (server->stopping)
		return UV_ECANCELED;
	if (getsockname(fd, (struct sockaddr *)&sa, &sa_len) != 0)
		return -errno;
	if (sa.ss_family != AF_UNIX && sa.ss_family != AF_INET && sa.ss_family != AF_INET6)
		return UV_EINVAL;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0)
		return -errno;
	if (type != SOCK_STREAM)
		return UV_EINVAL;
	if (stat_get(&server->stats.connections_open) >= server->limits.max_connections) {
		stat_add(&server->stats.connections_refused, 1);
		return UV_EBUSY;
	}
	conn = conn_new(server);
	if (conn == NULL)
		return UV_ENOMEM;
	/* libuv's TCP handle calls TCP-only options (nodelay, keepalive) on
	 * its socket; a Unix socket gets the pipe handle. Both are streams. */
	if (server->tls != NULL) {
		/* The stream takes fd even when it fails: give the caller a
		 * copy to keep, as the contract says fd stays theirs on error.
		 * The stream polls a non-blocking socket (uv_tcp_open would set
		 * that too). */
		int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (own >= 0 && fcntl(own, F_SETFL, fcntl(own, F_GETFL) | O_NONBLOCK) != 0) {
			close(own);
			own = -1;
		}
		if (own < 0) {
			err = -errno;
			uv_tcp_init(server->loop, &conn->sock.tcp);
			conn->sock.handle.data = conn;
			conn_close(conn);
			return err;
		}
		err = conn_open_tls(conn, own, sa.ss_family != AF_UNIX);
		if (err != 0) {
			conn_close(conn);
			return err;
		}
		close(fd);
	} else if (sa.ss_family == AF_UNIX) {
		uv_pipe_init(server->loop, &conn->sock.pipe, 0);
		conn->sock.handle.data = conn;
		err = uv_pipe_open(&conn->sock.pipe, fd);
	} else {
		uv_tcp_init(server->loop, &conn->sock.tcp);
		conn->sock.handle.data = conn;
		err = uv_tcp_open(&conn->sock.tcp, fd);
		if (err == 0)
			uv_tcp_nodelay(&conn->sock.tcp, 1);
	}
	if (err != 0) {
		/* The handle never took fd: closing it leaves fd to the caller. */
		conn_close(conn);
		return err;
	}
	conn_begin(conn);
	return 0;
}

/* ---- requests: header access ---- */

const char *http_request_header(const http_request *req, const char *name)
{
	const struct http_conn *conn = conn_of(req);

	/* The first byte, case folded, screens out most names cheaply. */
	unsigned char first = (unsigned char)name[0] | 0x20;

	for (size_t i = 0; i < conn->n_headers; i++) {
		const char *h = conn->arena + conn->headers[i].name;
		if (((unsigned char)h[0] | 0x20) == first && strcasecmp(h, name) == 0)
			return conn->arena + conn->headers[i].value;
	}
	return NULL;
}

const struct sockaddr_storage *http_request_peer(const http_request *req)
{
	struct http_conn *conn = conn_of(req);
	socklen_t len = sizeof(conn->peer);
	uv_os_fd_t fd;

	if (conn->peer_known == 0) {
		conn->peer_known = -1;
		if (conn->tls != NULL)
			fd = tls_stream_fd(conn->tls);
		else if (uv_fileno(&conn->sock.handle, &fd) != 0)
			fd = -1;
		if (fd >= 0 && getpeername(fd, (struct sockaddr *)&conn->peer, &len) == 0)
			conn->peer_known = 1;
	}
	return conn->peer_known > 0 ? &conn->peer : NULL;
}

size_t http_request_header_count(const http_request *req)
{
	return conn_of(req)->n_headers;
}

http_header http_request_header_at(const http_request *req, size_t i)
{
	const struct http_conn *conn = conn_of(req);
	http_header h = { NULL, NULL };

	if (i < conn->n_headers) {
		h.name = conn->arena + conn->headers[i].name;
		h.value = conn->arena + conn->headers[i].value;
	}
	return h;
}

const char *http_status_text(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 203: return "Non-Authoritative Information";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 417: return "Expectation Failed";
	case 421: return "Misdirected Request";
	case 422: return "Unprocessable Content";
	case 426: return "Upgrade Required";
	case 428: return "Precondition Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

/* ---- server ---- */

/* Splits "host:port" or "[v6]:port" and fills a socket address. */
static int parse_listen_addr(const char *text, struct sockaddr_storage *sa)
{
	char host[64];
	const char *colon, *port_text, *host_start;
	size_t host_len;
	unsigned long port;
	char *end;
	int v6 = 0;

	if (text == NULL)
		return SAYIN_ECONFIG;
	if (text[0] == '[') {
		const char *bracket = strchr(text, ']');
		if (bracket == NULL || bracket[1] != ':')
			return SAYIN_ECONFIG;
		host_start = text + 1;
		host_len = (size_t)(bracket - host_start);
		port_text = bracket + 2;
		v6 = 1;
	} else {
		colon = strrchr(text, ':');
		if (colon == NULL)
			return SAYIN_ECONFIG;
		host_start = text;
		host_len = (size_t)(colon - text);
		port_text = colon + 1;
	}
	if (host_len == 0 || host_len >= sizeof(host))
		return SAYIN_ECONFIG;
	memcpy(host, host_start, host_len);
	host[host_len] = '\0';
	if (port_text[0] < '0' || port_text[0] > '9')
		return SAYIN_ECONFIG;
	errno = 0;
	port = strtoul(port_text, &end, 10);
	if (errno != 0 || *end != '\0' || port > 65535)
		return SAYIN_ECONFIG;
	memset(sa, 0, sizeof(*sa));
	if (v6) {
		if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)sa) != 0)
			return SAYIN_ECONFIG;
	} else {
		if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)sa) != 0)
			return SAYIN_ECONFIG;
	}
	return 0;
}

/* Binds and listens on a socket of our own: libuv 1.44 cannot set
 * SO_REUSEPORT. Returns the fd, or a negative errno with nothing open. */
static int listen_socket(const struct sockaddr_storage *sa, int reuseport, int *port)
{
	socklen_t len = sa->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
	                                          : sizeof(struct sockaddr_in);
	struct sockaddr_storage bound;
	socklen_t bound_len = sizeof(bound);
	int one = 1;
	int fd, err;

	fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
		goto fail;
	if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
		goto fail;
	if (bind(fd, (const struct sockaddr *)sa, len) != 0)
		goto fail;
	if (listen(fd, LISTEN_BACKLOG) != 0)
		goto fail;
	if (getsockname(fd, (struct sockaddr *)&bound, &bound_len) != 0)
		goto fail;
	if (bound.ss_family == AF_INET6)
		*port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
	else
		*port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
	return fd;
fail:
	err = -errno;
	close(fd);
	return err;
}

int http_listen_is_loopback(const char *listen_addr)
{
	struct sockaddr_storage sa;

	if (parse_listen_addr(listen_addr, &sa) != 0)
		return SAYIN_ECONFIG;
	if (sa.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&sa;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&sa)->sin6_addr);
}

int http_listen_check(const char *listen_addr)
{
	struct sockaddr_storage sa;
	socklen_t len;
	int one = 1;
	int fd, err;

	err = parse_listen_addr(listen_addr, &sa);
	if (err != 0)
		return err;
	len = sa.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	if ((sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
	                              : ((struct sockaddr_in *)&sa)->sin_port) == 0)
		return 0; /* port 0: the kernel picks a free one */
	fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* SO_REUSEADDR as listen_socket sets it, so only TIME_WAIT is
	 * forgiven; without SO_REUSEPORT any listener, ours or not, refuses. */
	err = 0;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(fd, (const struct sockaddr *)&sa, len) != 0)
		err = -errno;
	close(fd);
	return err;
}

static void on_server_handle_closed(uv_handle_t *handle)
{
	http_server *server = handle->data;
	void (*on_stopped)(void *arg) = server->on_stopped;
	void *arg = server->stopped_arg;

	server->handles_open--;
	if (server->handles_open > 0) {
		if (handle == (uv_handle_t *)&server->listener) {
			server->listener_open = 0;
			server_check_stopped(server);
		}
		return;
	}
	server_free_bufs(server);
	free(server);
	if (on_stopped != NULL)
		on_stopped(arg);
}

static void server_check_stopped(http_server *server)
{
	if (!server->stopping || server->finishing || server->listener_open || server->n_conns > 0)
		return;
	server->finishing = 1;
	uv_close((uv_handle_t *)&server->grace_timer, on_server_handle_closed);
	uv_close((uv_handle_t *)&server->idle, on_server_handle_closed);
}

static void with_default(size_t *value, size_t def)
{
	if (*value == 0)
		*value = def;
}

static void with_default_ms(uint64_t *value, uint64_t def)
{
	if (*value == 0)
		*value = def;
}

/* The Makefile builds llhttp with LLHTTP_STRICT_MODE=1. Built without it,
 * llhttp takes "\r\n\rX" as the end of a head and parses what follows as
 * a second request (smuggling), and takes TAB, form feed and bytes above
 * 0x7F in a request-target: better not to serve at all. */
static int llhttp_is_strict(void)
{
	static const char probe[] = "GET / HTTP/1.1\r\nHost: a\r\n\rX";
	llhttp_settings_t settings;
	llhttp_t parser;

	llhttp_settings_init(&settings);
	llhttp_init(&parser, HTTP_REQUEST, &settings);
	return llhttp_execute(&parser, probe, sizeof(probe) - 1) == HPE_STRICT;
}

int http_server_start(uv_loop_t *loop, const char *listen_addr, int reuseport,
                      const http_limits *limits, http_handler *handler, http_server **out)
{
	return http_server_start_tls(loop, listen_addr, reuseport, limits, NULL, handler, out);
}

int http_server_start_tls(uv_loop_t *loop, const char *listen_addr, int reuseport,
                          const http_limits *limits, tls_server *tls, http_handler *handler,
                          http_server **out)
{
	struct sockaddr_storage sa;
	http_server *server;
	int fd, port = 0, err;

	if (loop == NULL || handler == NULL || handler->on_request == NULL || out == NULL ||
	    (handler->on_headers != NULL && handler->on_body == NULL))
		return SAYIN_EINVAL;
	if (!llhttp_is_strict()) {
		log_error("http: llhttp was built without LLHTTP_STRICT_MODE=1; not serving");
		return SAYIN_ECONFIG;
	}
	err = parse_listen_addr(listen_addr, &sa);
	if (err != 0) {
		log_error("http: bad listen address '%s' (want host:port or [v6]:port)",
		          listen_addr != NULL ? listen_addr : "");
		return err;
	}
	server = calloc(1, sizeof(*server));
	if (server == NULL)
		return UV_ENOMEM;
	if (limits != NULL)
		server->limits = *limits;
	with_default(&server->limits.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
	with_default(&server->limits.max_headers, DEFAULT_MAX_HEADERS);
	with_default(&server->limits.max_uri, DEFAULT_MAX_URI);
	if (server->limits.max_connections == 0)
		server->limits.max_connections = DEFAULT_MAX_CONNECTIONS;
	with_default_ms(&server->limits.idle_timeout_ms, DEFAULT_IDLE_TIMEOUT_MS);
	with_default_ms(&server->limits.header_timeout_ms, DEFAULT_HEADER_TIMEOUT_MS);
	with_default_ms(&server->limits.write_timeout_ms, DEFAULT_WRITE_TIMEOUT_MS);
	with_default_ms(&server->limits.handshake_timeout_ms, DEFAULT_HANDSHAKE_TIMEOUT_MS);
	with_default_ms(&server->limits.max_stream_body, DEFAULT_MAX_STREAM_BODY);

	fd = listen_socket(&sa, reuseport, &port);
	if (fd < 0) {
		log_error("http: cannot listen on %s: %s", listen_addr, uv_strerror(fd));
		free(server);
		return fd;
	}
	server->loop = loop;
	server->handler = handler;
	server->tls = tls;
	server->port = port;
	err = uv_poll_init(loop, &server->listener, fd);
	if (err != 0) {
		log_error("http: cannot poll the listener on %s: %s", listen_addr, uv_strerror(err));
		close(fd);
		free(server);
		return err;
	}
	server->listen_fd = fd;
	uv_timer_init(loop, &server->accept_timer);
	uv_timer_init(loop, &server->grace_timer);
	uv_idle_init(loop, &server->idle);
	server->listener.data = server;
	server->accept_timer.data = server;
	server->grace_timer.data = server;
	server->idle.data = server;
	server->handles_open = 4;
	server->spans_size = server->limits.max_headers * sizeof(struct header_span);
	server->bufs_size = IN_BUF_SIZE + server->spans_size + OUT_INLINE +
	                    server->limits.max_header_bytes + server->limits.max_uri + 64;
	server->listener_open = 1;

	err = uv_poll_start(&server->listener, UV_READABLE, on_listen_readable);
	if (err != 0) {
		/* The handles close on the next loop turn; the server is freed there. */
		log_error("http: cannot listen on %s: %s", listen_addr, uv_strerror(err));
		server->finishing = 1;
		uv_close((uv_handle_t *)&server->listener, on_server_handle_closed);
		close(fd);
		uv_close((uv_handle_t *)&server->accept_timer, on_server_handle_closed);
		uv_close((uv_handle_t *)&server->grace_timer, on_server_handle_closed);
		uv_close((uv_handle_t *)&server->idle, on_server_handle_closed);
		return err;
	}
	*out = server;
	return 0;
}

int http_server_port(const http_server *server)
{
	return server->port;
}

static void server_close_all(http_server *server)
{
	struct http_conn *conn = server->conns;

	while (conn != NULL) {
		struct http_conn *next = conn->next;
		conn_close(conn);
		conn = next;
	}
}

static void on_grace_timer(uv_timer_t *timer)
{
	http_server *server = timer->data;

	if (server->n_conns > 0)
		log_warn("http: closing %zu busy connection(s) at shutdown", server->n_conns);
	server_close_all(server);
}

void http_server_stop(http_server *server, uint64_t grace_ms, void (*on_stopped)(void *arg),
                      void *arg)
{
	struct http_conn *conn;

	if (server->stopping)
		return;
	server->stopping = 1;
	server->on_stopped = on_stopped;
	server->stopped_arg = arg;
	/* Closing the poll stops it at once, so the socket may go now. */
	uv_close((uv_handle_t *)&server->listener, on_server_handle_closed);
	close(server->listen_fd);
	server->listen_fd = -1;
	uv_close((uv_handle_t *)&server->accept_timer, on_server_handle_closed);
	/* Idle connections go at once; busy ones finish their response, which
	 * then carries "Connection: close". conn_close never frees
	 * synchronously, so walking the list is safe. */
	for (conn = server->conns; conn != NULL; conn = conn->next) {
		if (conn->phase == PH_IDLE || conn->phase == PH_LINGER)
			conn_close(conn);
	}
	if (grace_ms == 0)
		server_close_all(server);
	else
		uv_timer_start(&server->grace_timer, on_grace_timer, grace_ms, 0);
	server_check_stopped(server);
}

const char *http_library_versions(char *out, size_t size)
{
	snprintf(out, size, "libuv %s\nllhttp %d.%d.%d\n", uv_version_string(), LLHTTP_VERSION_MAJOR,
	         LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
	return out;
}

void http_server_stats(const http_server *server, http_stats *out)
{
	const struct server_stats *s = &server->stats;

	out->connections_open = stat_get(&s->connections_open);
	out->connections_accepted = stat_get(&s->connections_accepted);
	out->connections_refused = stat_get(&s->connections_refused);
	out->requests = stat_get(&s->requests);
	out->bad_requests = stat_get(&s->bad_requests);
	out->timeouts_header = stat_get(&s->timeouts_header);
	out->timeouts_idle = stat_get(&s->timeouts_idle);
	out->timeouts_write = stat_get(&s->timeouts_write);
	out->bytes_sent = stat_get(&s->bytes_sent);
	out->accept_errors_emfile = stat_get(&s->accept_errors_emfile);
	out->accept_errors_enfile = stat_get(&s->accept_errors_enfile);
	out->accept_errors_other = stat_get(&s->accept_errors_other);
}

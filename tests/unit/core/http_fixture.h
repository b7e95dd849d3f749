/* http_fixture: the one fixture of the HTTP core's unit tests
 * (tests/unit/core/test_http_*.c): a server on its own uv loop in a second
 * thread, with a plain handler (fx_start) or a streaming one
 * (fx_start_stream), and a blocking client on the test's thread.
 *
 * Every cmocka assertion runs on the main thread. The loop thread is only
 * reached through uv_async commands, so server functions are always called
 * on their loop. fx_stop (or fx_command(CMD_STOP) then fx_join) checks that
 * every response was completed and released exactly once; the caller then
 * frees the fixture.
 *
 * The plain handler answers /hello ("hello world\n"), /echo* (the target),
 * /big (BIG_BODY bytes), /slow (after slow_ms, from a timer), /post (201
 * with a body) and 404 otherwise. The streaming handler answers /upload*
 * with the body's length and FNV-1a, refuses bodies over upload_cap with
 * 413, pauses /upload/slow after every piece, and rejects
 * /upload/misbehave without a response. */
#ifndef SAYIN_TESTS_HTTP_FIXTURE_H
#define SAYIN_TESTS_HTTP_FIXTURE_H

#include "core/http.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BIG_BODY (32u << 20) /* larger than any loopback socket buffering */
#define WAIT_MS 5000

enum fx_cmd { CMD_NONE, CMD_STATS, CMD_STOP, CMD_ADOPT };

struct fixture;

struct test_handler {
	http_handler base; /* first: the core hands us &base */
	struct fixture *fx;
};

struct fixture {
	uv_loop_t loop;
	uv_thread_t thread;
	uv_async_t async;
	uv_mutex_t mu;
	uv_cond_t cv;
	enum fx_cmd cmd;
	int cmd_done;
	uint64_t grace_ms;
	http_stats stats;
	int adopt_fd;  /* CMD_ADOPT's socket, and http_server_adopt's result */
	int adopt_err;
	http_server *server;
	int port;
	struct test_handler handler;
	atomic_int requests;
	atomic_int responses;
	atomic_int releases;
	atomic_int stopped;
	atomic_int slow_respond_err;
	int slow_ms;

	/* on_complete: how many, and whether any came after its release. */
	atomic_int completes;
	atomic_int completes_aborted;
	atomic_int complete_out_of_order;
	http_completion last_done; /* under mu */
	char last_done_path[64];

	/* Filled by the handler under mu. */
	char seen_method[16];
	char seen_target[256];
	char seen_path[256];
	int seen_minor;
	int seen_has_body;
	char seen_x_test[64];
	int seen_x_test_null;
	char seen_x_empty[16];
	int seen_x_empty_null;
	int seen_missing_null;
	size_t seen_count;
	char seen_at1[32];
	int seen_at_out_of_range_null;
	uint64_t seen_content_length;
	int seen_chunked;

	/* The streaming handler (fx_start_stream): per-request state taken in
	 * on_headers and freed exactly once, in the release callback or
	 * on_abort. */
	uint64_t upload_cap;
	atomic_int up_allocs;
	atomic_int up_frees;
	atomic_int up_aborts;
	atomic_int up_heads;
	atomic_int up_bodies;
	atomic_int up_violations; /* on_body when it must not come, failed resume, ... */
	_Atomic uint64_t up_bytes;
};

#define FX_FNV_OFFSET UINT64_C(14695981039346656037)

struct client {
	int fd;
	size_t len;
	char buf[1 << 16];
};

struct response {
	int status;
	long content_length; /* -1 when absent */
	char head[8192];
	char body[8192];
	size_t body_len;
};

/* How the server ended a connection: client_close_kind. */
enum { OPEN = 0, CLOSED_FIN = 1, CLOSED_RESET = 2 };

/* ---- the server (its loop runs in a second thread) ---- */

/* Starts a server on 127.0.0.1, any port (fx->port), with the plain
 * handler; limits may be NULL (defaults). Asserts it started. */
struct fixture *fx_start(const http_limits *limits);
/* The same at addr; on failure returns NULL with *err set (nothing to free). */
struct fixture *fx_start_at(const http_limits *limits, const char *addr, int *err);
/* The same with the streaming handler, refusing bodies over upload_cap. */
struct fixture *fx_start_stream(const http_limits *limits, uint64_t upload_cap);
/* Runs cmd on the loop thread and waits until it has run. */
void fx_command(struct fixture *fx, enum fx_cmd cmd);
/* http_server_adopt(fx->server, fd) on the loop thread; its result. */
int fx_adopt(struct fixture *fx, int fd);
/* A client on an already connected socket (e.g. a socketpair's end). */
struct client *client_from_fd(int fd);
/* The server's counters, read on its loop. */
http_stats fx_stats(struct fixture *fx);
/* Waits for the loop to finish after a stop; everything must be closed and
 * every response released exactly once. */
void fx_join(struct fixture *fx);
/* Stops the server and returns its last counters. */
http_stats fx_stop(struct fixture *fx, uint64_t grace_ms);
/* The last http_completion on_complete saw, and its request's path. */
http_completion last_completion(struct fixture *fx, char *path, size_t size);

/* The plain and streaming handlers' callbacks, for tests that start a
 * server of their own. */
void fx_on_request(http_handler *self, http_request *req);
int fx_stream_on_headers(http_handler *self, http_request *req);
/* FNV-1a of data, continuing from h (FX_FNV_OFFSET to start). */
uint64_t fx_fnv1a(uint64_t h, const void *data, size_t len);

/* Milliseconds on the monotonic clock. */
uint64_t now_ms(void);
/* Polls an atomic counter until it reaches want or WAIT_MS pass. */
int wait_for(atomic_int *counter, int want);

/* ---- the client (the test's thread, blocking) ---- */

/* Connects to 127.0.0.1:port with TCP_NODELAY and, when rcvbuf > 0, that
 * receive buffer. Asserts it connected. */
struct client *client_open_opts(int port, int rcvbuf);
struct client *client_open(int port);
void client_free(struct client *c);
/* Closes with RST instead of FIN: the client vanishes. */
void client_abort(struct client *c);
/* Sends all len bytes: 0, or -1 when the connection failed. */
int client_send_len(struct client *c, const char *data, size_t len);
/* Sends a string; asserts it was sent. */
void client_send(struct client *c, const char *data);
/* One read into the buffer: >0 bytes, 0 at EOF, -1 on error (reset),
 * -2 on timeout. A full buffer is discarded first. */
ssize_t client_fill(struct client *c, int timeout_ms);
/* Reads one response; the body only when with_body (not for HEAD).
 * 0, or -1 on a timeout, EOF or a response too large for struct response. */
int read_response(struct client *c, struct response *r, int with_body);
/* The first value of a response header, copied into out; NULL if absent. */
const char *resp_header(const struct response *r, const char *name, char *out, size_t size);
/* How many times a response header appears. */
int resp_header_count(const struct response *r, const char *name);
/* How the server ended the connection within timeout_ms: CLOSED_FIN,
 * CLOSED_RESET, or OPEN (still open). Bytes that arrive meanwhile are kept. */
int client_close_kind(struct client *c, int timeout_ms);
/* 1 if the server closed, cleanly or not, within timeout_ms. */
int client_closed(struct client *c, int timeout_ms);

/* On a new connection: sends request, expects status with
 * "Connection: close" and then a FIN. */
void expect_status_then_close(int port, const char *request, int status);
/* GET /hello on c, expecting the plain handler's 200 "hello world\n". */
void get_hello(struct client *c);

#endif

/* test_http: the HTTP core against real sockets on 127.0.0.1.
 *
 * Each test runs a server on its own uv loop in a second thread; the test
 * (and every cmocka assertion) runs on the main thread as a blocking client.
 * The loop thread is only reached through uv_async commands, so server
 * functions are always called on their loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "core/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BIG_BODY (32u << 20) /* larger than any loopback socket buffering */
#define WAIT_MS 5000

enum fx_cmd { CMD_NONE, CMD_STATS, CMD_STOP };

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

/* ---- the handler (loop thread) ---- */

struct release_arg {
	struct fixture *fx;
	void *buf;
};

static void on_release(void *arg)
{
	struct release_arg *rel = arg;

	atomic_fetch_add(&rel->fx->releases, 1);
	free(rel->buf);
	free(rel); /* a second call would be a double free under ASan */
}

static int respond(struct fixture *fx, http_request *req, int status, const char *body,
                   size_t len, void *owned)
{
	static const http_header headers[] = { { "Content-Type", "text/plain" },
		                               { "Content-Length", "999" } /* must be dropped */ };
	struct release_arg *rel = malloc(sizeof(*rel));

	rel->fx = fx;
	rel->buf = owned;
	atomic_fetch_add(&fx->responses, 1);
	/* send_body = 1 even for HEAD: the core must drop that body itself. */
	return http_respond(req, status, headers, 2, body, len, 1, 0, on_release, rel);
}

struct slow_reply {
	uv_timer_t timer;
	http_request *req;
	struct fixture *fx;
};

static void on_slow_closed(uv_handle_t *handle)
{
	free(handle->data);
}

static void on_slow_timer(uv_timer_t *timer)
{
	struct slow_reply *slow = timer->data;

	atomic_store(&slow->fx->slow_respond_err, respond(slow->fx, slow->req, 200, "slow\n", 5, NULL));
	uv_close((uv_handle_t *)timer, on_slow_closed);
}

static void copy_str(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src != NULL ? src : "");
}

static void record(struct fixture *fx, http_request *req)
{
	const char *v;

	uv_mutex_lock(&fx->mu);
	copy_str(fx->seen_method, sizeof(fx->seen_method), req->method);
	copy_str(fx->seen_target, sizeof(fx->seen_target), req->target);
	copy_str(fx->seen_path, sizeof(fx->seen_path), req->path);
	fx->seen_minor = req->version_minor;
	fx->seen_has_body = req->has_body;
	v = http_request_header(req, "x-test");
	fx->seen_x_test_null = v == NULL;
	copy_str(fx->seen_x_test, sizeof(fx->seen_x_test), v);
	v = http_request_header(req, "X-EMPTY");
	fx->seen_x_empty_null = v == NULL;
	copy_str(fx->seen_x_empty, sizeof(fx->seen_x_empty), v);
	fx->seen_missing_null = http_request_header(req, "missing") == NULL;
	fx->seen_count = http_request_header_count(req);
	copy_str(fx->seen_at1, sizeof(fx->seen_at1), http_request_header_at(req, 1).name);
	fx->seen_at_out_of_range_null = http_request_header_at(req, fx->seen_count).name == NULL;
	fx->seen_content_length = req->content_length;
	fx->seen_chunked = req->chunked;
	uv_mutex_unlock(&fx->mu);
}

static void on_request(http_handler *self, http_request *req)
{
	struct fixture *fx = ((struct test_handler *)self)->fx;

	atomic_fetch_add(&fx->requests, 1);
	record(fx, req);
	if (strcmp(req->path, "/hello") == 0) {
		respond(fx, req, 200, "hello world\n", 12, NULL);
	} else if (strncmp(req->path, "/echo", 5) == 0) {
		char *copy = strdup(req->target);
		respond(fx, req, 200, copy, strlen(copy), copy);
	} else if (strcmp(req->path, "/big") == 0) {
		char *big = malloc(BIG_BODY);
		memset(big, 'x', BIG_BODY);
		respond(fx, req, 200, big, BIG_BODY, big);
	} else if (strcmp(req->path, "/slow") == 0) {
		struct slow_reply *slow = malloc(sizeof(*slow));
		slow->req = req;
		slow->fx = fx;
		uv_timer_init(&fx->loop, &slow->timer);
		slow->timer.data = slow;
		uv_timer_start(&slow->timer, on_slow_timer, (uint64_t)fx->slow_ms, 0);
	} else if (strcmp(req->path, "/post") == 0) {
		respond(fx, req, req->has_body ? 201 : 200, "posted\n", 7, NULL);
	} else {
		respond(fx, req, 404, "not found\n", 10, NULL);
	}
}

/* Runs before the response's release: every earlier response has been
 * completed and released, this one not yet. */
static void on_complete(http_handler *self, http_request *req, const http_completion *done)
{
	struct fixture *fx = ((struct test_handler *)self)->fx;

	if (atomic_load(&fx->releases) != atomic_load(&fx->completes))
		atomic_fetch_add(&fx->complete_out_of_order, 1);
	uv_mutex_lock(&fx->mu);
	fx->last_done = *done;
	copy_str(fx->last_done_path, sizeof(fx->last_done_path), req->path);
	uv_mutex_unlock(&fx->mu);
	if (done->aborted)
		atomic_fetch_add(&fx->completes_aborted, 1);
	atomic_fetch_add(&fx->completes, 1);
}

static http_completion last_completion(struct fixture *fx, char *path, size_t size)
{
	http_completion done;

	uv_mutex_lock(&fx->mu);
	done = fx->last_done;
	copy_str(path, size, fx->last_done_path);
	uv_mutex_unlock(&fx->mu);
	return done;
}


/* ---- the streaming handler: on_headers, on_body, on_abort (loop thread) ---- */

#define FNV_OFFSET UINT64_C(14695981039346656037)

static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= UINT64_C(1099511628211);
	}
	return h;
}

/* One request's state, as an upload handler would keep its temp file. */
struct upload {
	struct fixture *fx;
	uint64_t received;
	uint64_t hash;
	int slow;      /* /upload/slow: paused after every piece, resumed by a timer */
	int paused;
	int responded;
	uv_timer_t *timer;
	http_request *req;
	char body[64];
};

static void on_upload_timer_closed(uv_handle_t *handle)
{
	free(handle);
}

static void upload_free(struct upload *up)
{
	atomic_fetch_add(&up->fx->up_frees, 1);
	if (up->timer != NULL)
		uv_close((uv_handle_t *)up->timer, on_upload_timer_closed);
	free(up); /* a second call would be a double free under ASan */
}

static void on_upload_release(void *arg)
{
	struct upload *up = arg;

	atomic_fetch_add(&up->fx->releases, 1);
	upload_free(up);
}

/* up may be gone when this returns (released on failure). */
static void upload_respond(struct upload *up, http_request *req, int status, const char *text)
{
	snprintf(up->body, sizeof(up->body), "%s", text);
	up->responded = 1;
	atomic_fetch_add(&up->fx->responses, 1);
	/* close_after = 0: the core must add the close itself before the body
	 * is read. */
	http_respond(req, status, NULL, 0, up->body, strlen(up->body), 1, 0, on_upload_release, up);
}

static void on_upload_timer(uv_timer_t *timer)
{
	struct upload *up = timer->data;

	up->paused = 0;
	if (http_request_resume_body(up->req) != 0)
		atomic_fetch_add(&up->fx->up_violations, 1);
}

/* A slow sink: no more body for ms. */
static void upload_pause(struct upload *up, http_request *req, uint64_t ms)
{
	if (up->timer == NULL) {
		up->timer = malloc(sizeof(*up->timer));
		uv_timer_init(&up->fx->loop, up->timer);
		up->timer->data = up;
	}
	up->req = req;
	up->paused = 1;
	if (http_request_pause_body(req) != 0)
		atomic_fetch_add(&up->fx->up_violations, 1);
	uv_timer_start(up->timer, on_upload_timer, ms, 0);
}

static int stream_on_headers(http_handler *self, http_request *req)
{
	struct fixture *fx = ((struct test_handler *)self)->fx;
	struct upload *up = calloc(1, sizeof(*up));

	up->fx = fx;
	up->hash = FNV_OFFSET;
	req->data = up;
	atomic_fetch_add(&fx->up_allocs, 1);
	atomic_fetch_add(&fx->up_heads, 1);
	uv_mutex_lock(&fx->mu);
	fx->seen_content_length = req->content_length;
	fx->seen_chunked = req->chunked;
	uv_mutex_unlock(&fx->mu);
	if (strcmp(req->path, "/upload/misbehave") == 0)
		return HTTP_BODY_REJECT; /* without a response: a handler bug */
	if (req->content_length != HTTP_LENGTH_UNKNOWN && req->content_length > fx->upload_cap) {
		upload_respond(up, req, 413, "too large\n");
		return HTTP_BODY_REJECT;
	}
	if (strcmp(req->path, "/upload/slow") == 0) {
		up->slow = 1;
		upload_pause(up, req, (uint64_t)fx->slow_ms);
	}
	return HTTP_BODY_ACCEPT;
}

static int stream_on_body(http_handler *self, http_request *req, const char *data, size_t len)
{
	struct fixture *fx = ((struct test_handler *)self)->fx;
	struct upload *up = req->data;

	if (up->paused || up->responded || len == 0)
		atomic_fetch_add(&fx->up_violations, 1);
	atomic_fetch_add(&fx->up_bodies, 1);
	atomic_fetch_add(&fx->up_bytes, len);
	up->received += len;
	up->hash = fnv1a(up->hash, data, len);
	if (up->received > fx->upload_cap) {
		upload_respond(up, req, 413, "too large\n");
		return 1;
	}
	if (up->slow)
		upload_pause(up, req, 1);
	return 0;
}

static void stream_on_request(http_handler *self, http_request *req)
{
	struct fixture *fx = ((struct test_handler *)self)->fx;
	struct upload *up = req->data;
	char text[64];

	atomic_fetch_add(&fx->requests, 1);
	record(fx, req);
	if (up->paused || up->responded)
		atomic_fetch_add(&fx->up_violations, 1);
	if (strncmp(req->path, "/upload", 7) == 0) {
		snprintf(text, sizeof(text), "%llu %016llx\n", (unsigned long long)up->received,
		         (unsigned long long)up->hash);
		upload_respond(up, req, 200, text);
	} else if (strcmp(req->path, "/hello") == 0) {
		upload_respond(up, req, 200, "hello world\n");
	} else {
		upload_respond(up, req, 404, "not found\n");
	}
}

static void stream_on_abort(http_handler *self, http_request *req)
{
	struct fixture *fx = ((struct test_handler *)self)->fx;

	atomic_fetch_add(&fx->up_aborts, 1);
	upload_free(req->data);
}

/* ---- fixture plumbing ---- */

static void on_stopped(void *arg)
{
	struct fixture *fx = arg;

	atomic_store(&fx->stopped, 1);
	uv_close((uv_handle_t *)&fx->async, NULL);
}

static void on_async(uv_async_t *async)
{
	struct fixture *fx = async->data;
	enum fx_cmd cmd;

	uv_mutex_lock(&fx->mu);
	cmd = fx->cmd;
	fx->cmd = CMD_NONE;
	uv_mutex_unlock(&fx->mu);
	if (cmd == CMD_NONE)
		return;
	http_server_stats(fx->server, &fx->stats);
	if (cmd == CMD_STOP)
		http_server_stop(fx->server, fx->grace_ms, on_stopped, fx);
	uv_mutex_lock(&fx->mu);
	fx->cmd_done = 1;
	uv_cond_signal(&fx->cv);
	uv_mutex_unlock(&fx->mu);
}

static void loop_thread(void *arg)
{
	struct fixture *fx = arg;

	uv_run(&fx->loop, UV_RUN_DEFAULT);
}

/* upload_cap != 0 selects the streaming handler, with that cap. */
static struct fixture *fx_start_with(const http_limits *limits, const char *addr,
                                     uint64_t upload_cap, int *err)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	assert_int_equal(uv_loop_init(&fx->loop), 0);
	uv_mutex_init(&fx->mu);
	uv_cond_init(&fx->cv);
	fx->slow_ms = 300;
	fx->handler.base.on_request = on_request;
	fx->handler.base.on_complete = on_complete;
	if (upload_cap != 0) {
		fx->upload_cap = upload_cap;
		fx->handler.base.on_request = stream_on_request;
		fx->handler.base.on_headers = stream_on_headers;
		fx->handler.base.on_body = stream_on_body;
		fx->handler.base.on_abort = stream_on_abort;
	}
	fx->handler.fx = fx;
	*err = http_server_start(&fx->loop, addr, 0, limits, &fx->handler.base, &fx->server);
	if (*err != 0) {
		uv_run(&fx->loop, UV_RUN_DEFAULT);
		assert_int_equal(uv_loop_close(&fx->loop), 0);
		uv_mutex_destroy(&fx->mu);
		uv_cond_destroy(&fx->cv);
		free(fx);
		return NULL;
	}
	fx->port = http_server_port(fx->server);
	assert_true(fx->port > 0);
	assert_int_equal(uv_async_init(&fx->loop, &fx->async, on_async), 0);
	fx->async.data = fx;
	assert_int_equal(uv_thread_create(&fx->thread, loop_thread, fx), 0);
	return fx;
}

static struct fixture *fx_start_at(const http_limits *limits, const char *addr, int *err)
{
	return fx_start_with(limits, addr, 0, err);
}

static struct fixture *fx_start_stream(const http_limits *limits, uint64_t upload_cap)
{
	int err;
	struct fixture *fx = fx_start_with(limits, "127.0.0.1:0", upload_cap, &err);

	assert_int_equal(err, 0);
	return fx;
}

static struct fixture *fx_start(const http_limits *limits)
{
	int err;
	struct fixture *fx = fx_start_at(limits, "127.0.0.1:0", &err);

	assert_int_equal(err, 0);
	return fx;
}

static void fx_command(struct fixture *fx, enum fx_cmd cmd)
{
	uv_mutex_lock(&fx->mu);
	fx->cmd = cmd;
	fx->cmd_done = 0;
	uv_mutex_unlock(&fx->mu);
	uv_async_send(&fx->async);
	uv_mutex_lock(&fx->mu);
	while (!fx->cmd_done)
		uv_cond_wait(&fx->cv, &fx->mu);
	uv_mutex_unlock(&fx->mu);
}

static http_stats fx_stats(struct fixture *fx)
{
	http_stats s;

	fx_command(fx, CMD_STATS);
	uv_mutex_lock(&fx->mu);
	s = fx->stats;
	uv_mutex_unlock(&fx->mu);
	return s;
}

/* Waits for the loop to finish after a stop; everything must be closed and
 * every response released exactly once. */
static void fx_join(struct fixture *fx)
{
	assert_int_equal(uv_thread_join(&fx->thread), 0);
	assert_int_equal(atomic_load(&fx->stopped), 1);
	assert_int_equal(uv_loop_close(&fx->loop), 0);
	assert_int_equal(atomic_load(&fx->releases), atomic_load(&fx->responses));
	/* Exactly one completion per handler response, each before its release. */
	assert_int_equal(atomic_load(&fx->completes), atomic_load(&fx->responses));
	assert_int_equal(atomic_load(&fx->complete_out_of_order), 0);
	/* Streamed requests: each state freed exactly once, no misdelivery. */
	assert_int_equal(atomic_load(&fx->up_frees), atomic_load(&fx->up_allocs));
	assert_int_equal(atomic_load(&fx->up_violations), 0);
	uv_mutex_destroy(&fx->mu);
	uv_cond_destroy(&fx->cv);
}

/* Stops the server and returns its last counters. */
static http_stats fx_stop(struct fixture *fx, uint64_t grace_ms)
{
	http_stats s;

	fx->grace_ms = grace_ms;
	fx_command(fx, CMD_STOP);
	s = fx->stats;
	fx_join(fx);
	return s;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Polls an atomic counter until it reaches want or WAIT_MS pass. */
static int wait_for(atomic_int *counter, int want)
{
	uint64_t deadline = now_ms() + WAIT_MS;

	while (atomic_load(counter) < want && now_ms() < deadline)
		usleep(5000);
	return atomic_load(counter);
}

/* ---- the client (main thread) ---- */

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

static struct client *client_open_opts(int port, int rcvbuf)
{
	struct client *c = calloc(1, sizeof(*c));
	struct sockaddr_in sa;
	int one = 1;

	assert_non_null(c);
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(c->fd >= 0);
	if (rcvbuf > 0)
		setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return c;
}

static struct client *client_open(int port)
{
	return client_open_opts(port, 0);
}

static void client_free(struct client *c)
{
	close(c->fd);
	free(c);
}

/* Closes with RST instead of FIN: the client vanishes. */
static void client_abort(struct client *c)
{
	struct linger lg = { 1, 0 };

	setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	client_free(c);
}

static int client_send_len(struct client *c, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
		if (n < 0)
			return -1;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

static void client_send(struct client *c, const char *data)
{
	assert_int_equal(client_send_len(c, data, strlen(data)), 0);
}

/* One read into the buffer: >0 bytes, 0 at EOF, -1 on error (reset),
 * -2 on timeout. A full buffer is discarded first. */
static ssize_t client_fill(struct client *c, int timeout_ms)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	ssize_t n;

	if (c->len == sizeof(c->buf))
		c->len = 0;
	if (poll(&p, 1, timeout_ms) <= 0)
		return -2;
	n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
	if (n > 0)
		c->len += (size_t)n;
	return n < 0 ? -1 : n;
}

static void client_consume(struct client *c, size_t n)
{
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
}

static const char *resp_header(const struct response *r, const char *name, char *out, size_t size)
{
	const char *line = strstr(r->head, "\r\n");
	size_t name_len = strlen(name);

	while (line != NULL && line[2] != '\r' && line[2] != '\0') {
		const char *end;
		line += 2;
		end = strstr(line, "\r\n");
		if (end == NULL)
			break;
		if (strncasecmp(line, name, name_len) == 0 && line[name_len] == ':') {
			const char *v = line + name_len + 1;
			while (*v == ' ')
				v++;
			snprintf(out, size, "%.*s", (int)(end - v), v);
			return out;
		}
		line = end;
	}
	return NULL;
}

static int resp_header_count(const struct response *r, const char *name)
{
	const char *p = r->head;
	char pattern[64];
	int n = 0;

	snprintf(pattern, sizeof(pattern), "\r\n%s:", name);
	while ((p = strcasestr(p, pattern)) != NULL) {
		n++;
		p++;
	}
	return n;
}

/* Reads one response; the body only when with_body (not for HEAD). */
static int read_response(struct client *c, struct response *r, int with_body)
{
	char value[64];
	char *end;
	size_t head_len;

	memset(r, 0, sizeof(*r));
	while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL) {
		if (c->len == sizeof(c->buf) || client_fill(c, WAIT_MS) <= 0)
			return -1;
	}
	head_len = (size_t)(end + 4 - c->buf);
	if (head_len >= sizeof(r->head) || strncmp(c->buf, "HTTP/1.1 ", 9) != 0)
		return -1;
	memcpy(r->head, c->buf, head_len);
	r->head[head_len] = '\0';
	r->status = (int)strtol(r->head + 9, NULL, 10);
	r->content_length = -1;
	if (resp_header(r, "Content-Length", value, sizeof(value)) != NULL)
		r->content_length = strtol(value, NULL, 10);
	client_consume(c, head_len);
	if (with_body && r->content_length > 0) {
		size_t want = (size_t)r->content_length;
		if (want >= sizeof(r->body))
			return -1;
		while (c->len < want) {
			if (client_fill(c, WAIT_MS) <= 0)
				return -1;
		}
		memcpy(r->body, c->buf, want);
		r->body_len = want;
		client_consume(c, want);
	}
	return 0;
}

enum { OPEN = 0, CLOSED_FIN = 1, CLOSED_RESET = 2 };

/* How the server ended the connection within timeout_ms: CLOSED_FIN,
 * CLOSED_RESET, or OPEN (still open). Bytes that arrive meanwhile are kept. */
static int client_close_kind(struct client *c, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		uint64_t now = now_ms();
		ssize_t n;

		if (now >= deadline)
			return OPEN;
		n = client_fill(c, (int)(deadline - now));
		if (n == 0)
			return CLOSED_FIN;
		if (n == -1)
			return CLOSED_RESET;
		if (n == -2)
			return OPEN;
	}
}

/* 1 if the server closed, cleanly or not, within timeout_ms. */
static int client_closed(struct client *c, int timeout_ms)
{
	return client_close_kind(c, timeout_ms) != OPEN;
}

static void expect_status_then_close(int port, const char *request, int status)
{
	struct client *c = client_open(port);
	struct response r;
	char v[64];

	client_send(c, request);
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, status);
	assert_non_null(resp_header(&r, "Connection", v, sizeof(v)));
	assert_string_equal(v, "close");
	/* A FIN, not a reset that could destroy the response in flight. */
	assert_int_equal(client_close_kind(c, WAIT_MS), CLOSED_FIN);
	client_free(c);
}

static void get_hello(struct client *c)
{
	struct response r;

	client_send(c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body_len, 12);
	assert_memory_equal(r.body, "hello world\n", 12);
}

/* ---- tests ---- */

static void test_get_body(void **state)
{
	struct fixture *fx = fx_start(NULL);
	struct client *c = client_open(fx->port);
	struct response r;
	http_stats s;
	char v[64];

	(void)state;
	client_send(c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.head, "HTTP/1.1 200 OK\r\n"));
	assert_int_equal(r.content_length, 12);
	assert_int_equal(resp_header_count(&r, "Content-Length"), 1);
	assert_memory_equal(r.body, "hello world\n", 12);
	assert_non_null(resp_header(&r, "Content-Type", v, sizeof(v)));
	assert_string_equal(v, "text/plain");
	assert_non_null(resp_header(&r, "Date", v, sizeof(v)));
	assert_int_equal(strlen(v), 29); /* IMF-fixdate */
	assert_non_null(strstr(v, " GMT"));
	assert_null(resp_header(&r, "Connection", v, sizeof(v)));
	assert_false(client_closed(c, 100)); /* keep-alive */
	client_free(c);

	uv_mutex_lock(&fx->mu);
	assert_string_equal(fx->seen_method, "GET");
	assert_int_equal(fx->seen_minor, 1);
	assert_int_equal(fx->seen_has_body, 0);
	uv_mutex_unlock(&fx->mu);

	s = fx_stop(fx, 1000);
	assert_int_equal(s.requests, 1);
	assert_int_equal(s.connections_accepted, 1);
	assert_int_equal(s.bad_requests, 0);
	assert_true(s.bytes_sent > 12);
	assert_int_equal(atomic_load(&fx->releases), 1);
	free(fx);
}

static void test_head_has_length_no_body(void **state)
{
	struct fixture *fx = fx_start(NULL);
	struct client *c = client_open(fx->port);
	struct response r;

	(void)state;
	client_send(c, "HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response(c, &r, 0), 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.content_length, 12);
	/* No body bytes may follow the header. */
	assert_int_equal(client_fill(c, 200), -2);
	assert_int_equal(c->len, 0);
	/* The next response starts right away on the same connection. */
	get_hello(c);
	client_free(c);
	uv_mutex_lock(&fx->mu);
	assert_string_equal(fx->seen_method, "GET");
	uv_mutex_unlock(&fx->mu);
	fx_stop(fx, 1000);
	assert_int_equal(atomic_load(&fx->releases), 2);
	free(fx);
}

static void test_pipelined_in_order(void **state)
{
	struct fixture *fx = fx_start(NULL);
	struct client *c = client_open(fx->port);
	struct response r;
	http_stats s;

	(void)state;
	fx->slow_ms = 150;
	/* The slow one in the middle is answered later by a timer; order must
	 * still be kept. */
	client_send(c, "GET /echo/1 HTTP/1.1\r\nHost: t\r\n\r\n"
	               "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"
	               "GET /echo/3?q HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 200);
	assert_memory_equal(r.body, "/echo/1", 7);
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_memory_equal(r.body, "slow\n", 5);
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.body_len, 9);
	assert_memory_equal(r.body, "/echo/3?q", 9);
	/* Still open. */
	get_hello(c);
	client_free(c);
	s = fx_stop(fx, 1000);
	assert_int_equal(s.connections_accepted, 1);
	assert_int_equal(s.requests, 4);
	assert_int_equal(atomic_load(&fx->slow_respond_err), 0);
	free(fx);
}

/* More pipelined input than the core buffers: it must stop reading, not
 * fail, and answer every request in order. */
static void test_pipeline_flood(void **state)
{
	enum { N = 2000 };
	struct fixture *fx = fx_start(NULL);
	struct client *c = client_open(fx->port);
	struct response r;
	char *all = malloc(N * 64);
	size_t len = 0;
	http_stats s;

	(void)state;
	for (int i = 0; i < N; i++)
		len += (size_t)snprintf(all + len, 64, "GET /echo/%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
	assert_int_equal(client_send_len(c, all, len), 0);
	free(all);
	for (int i = 0; i < N; i++) {
		char want[32];
		int n = snprintf(want, sizeof(want), "/echo/%d", i);
		assert_int_equal(read_response(c, &r, 1), 0);
		assert_int_equal(r.body_len, (size_t)n);
		assert_memory_equal(r.body, want, (size_t)n);
	}
	client_free(c);
	s = fx_stop(fx, 1000);
	assert_int_equal(s.requests, N);
	assert_int_equal(s.connections_accepted, 1);
	free(fx);
}

static void test_http10_closes(void **state)
{
	struct fixture *fx = fx_start(NULL);
	struct client *c;
	struct response r;
	char v[64];

	(void)state;
	c = client_open(fx->port);
	client_send(c, "GET /hello HTTP/1.0\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 200);
	assert_memory_equal(r.body, "hello world\n", 12);
	assert_non_null(resp_header(&r, "Connection", v, sizeof(v)));
	assert_string_equal(v, "close");
	assert_true(client_closed(c, WAIT_MS));
	client_free(c);

	/* HTTP/1.0 keep-alive is honoured and echoed. */
	c = client_open(fx->port);
	client_send(c, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_non_null(resp_header(&r, "Connection", v, sizeof(v)));
	assert_string_equal(v, "keep-alive");
	assert_false(client_closed(c, 100));
	client_send(c, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 200);
	uv_mutex_lock(&fx->mu);
	assert_int_equal(fx->seen_minor, 0);
	uv_mutex_unlock(&fx->mu);
	client_free(c);
	fx_stop(fx, 1000);
	free(fx);
}

static void test_connection_close_closes(void **state)
{
	struct fixture *fx = fx_start(NULL);
	struct client *c = client_open(fx->port);
	struct response r;
	http_stats s;
	char v[64];

	(void)state;
	/* The pipelined second request must not be answered. */
	client_send(c, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
	               "GET /echo/2 HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 200);
	assert_non_null(resp_header(&r, "Connection", v, sizeof(v)));
	assert_string_equal(v, "close");
	assert_true(client_closed(c, WAIT_MS));
	assert_int_equal(c->len, 0);
	client_free(c);
	s = fx_stop(fx, 1000);
	assert_int_equal(s.requests, 1);
	free(fx);
}

static void test_malformed_400(void **state)
{
	struct fixture *fx = fx_start(NULL);
	http_stats s;

	(void)state;
	expect_status_then_close(fx->port, "GET / HTTP/1.1\r\nHost t\r\n\r\n", 400);
	expect_status_then_close(fx->port, "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400);
	expect_status_then_close(fx->port, "GET / HTTP/1.1\r\nX-Len : 5\r\n\r\n", 400);
	expect_status_then_close(fx->port, "GET / HTTX/1.1\r\n\r\n", 400);
	expect_status_then_close(fx->port, "\x01\x02garbage\r\n\r\n", 400);
	s = fx_stop(fx, 1000);
	assert_int_equal(s.bad_requests, 5);
	assert_int_equal(s.requests, 0);
	assert_int_equal(atomic_load(&fx->requests), 0);
	free(fx);
}

static void test_smuggling_400(void **state)
{
	http_limits limits = { .max_body = 100 };
	struct fixture *fx;
	http_stats s;
	int i;
	static const char *const bad[] = {
		"POST /post HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
		"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /post HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
		"Content-Length: 5\r\n\r\n0\r\n\r\n",
		"POST /post HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
		"POST /post HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
		"POST /post HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
		"POST /post HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nhello",
	};

	(void)state;
	/* With a body limit, so 413 cannot hide the 400. */
	fx = fx_start(&limits);
	for (i = 0; i < 6; i++)
		expect_status_then_close(fx->port, bad[i], 400);
	s = fx_stop(fx, 1000);
	assert_int_equal(s.bad_requests, 6);
	assert_int_equal(atomic_load(&fx->requests), 0);
	free(fx);

	/* And with the origin's max_body = 0. */
	fx = fx_start(NULL);
	expect_status_then_close(fx->port, bad[0], 400);
	expect_status_then_close(fx->port, bad[1], 400);
	fx_stop(fx, 1000);
	assert_int_equal(atomic_load(&fx->requests), 0);
	free(fx);
}

static char *request_with(const char *line, const char *header_name, size_t value_len,
                          size_t n_headers)
{
	size_t size = strlen(line) + n_headers * (value_len + 32) + 64;
	char *req = malloc(size);
	size_t len;

	len = (size_t)snprintf(req, size, "%sHost: t\r\n", line);
	for (size_t i = 0; i < n_headers; i++) {
		len += (size_t)snprintf(req + len, size - len, "%s%zu: ", header_name, i);
		memset(req + len, 'a', value_len);
		len += value_len;
		len += (size_t)snprintf(req + len, size - len, "\r\n");
	}
	snprintf(req + len, size - len, "\r\n");
	return req;
}

/* prefix, then fill bytes, then "v\r\n\r\n": total bytes in all. */
static char *padded_request(const char *prefix, char fill, size_t total)
{
	size_t prefix_len = strlen(prefix);
	char *req = malloc(total + 1);

	assert_true(total > prefix_len + 5);
	memcpy(req, prefix, prefix_len);
	memset(req + prefix_len, fill, total - prefix_len - 5);
	memcpy(req + total - 5, "v\r\n\r\n", 6);
	return req;
}

static void test_header_limits_431(void **state)
{
	http_limits small = { .max_header_bytes = 1000 };
	struct fixture *fx = fx_start(NULL);
	struct client *c;
	http_stats s;
	char *req;

	(void)state;
	/* Just under 16384 bytes of headers: accepted. */
	req = request_with("GET /hello HTTP/1.1\r\n", "X-Big", 15000, 1);
	c = client_open(fx->port);
	client_send(c, req);
	free(req);
	get_hello(c); /* reads the big request's response; both are /hello */
	client_free(c);

	/* One header of 20000 bytes. */
	req = request_with("GET /hello HTTP/1.1\r\n", "X-Big", 20000, 1);
	expect_status_then_close(fx->port, req, 431);
	free(req);
	/* Many small headers adding up past the limit. */
	req = request_with("GET /hello HTTP/1.1\r\n", "X-Many", 300, 60);
	expect_status_then_close(fx->port, req, 431);
	free(req);
	/* More than 64 header fields. */
	req = request_with("GET /hello HTTP/1.1\r\n", "X-N", 1, 70);
	expect_status_then_close(fx->port, req, 431);
	free(req);
	/* Whitespace the parser skips and never stores still counts. */
	req = padded_request("GET /hello HTTP/1.1\r\nX-Pad:", ' ', 20100);
	expect_status_then_close(fx->port, req, 431);
	free(req);

	s = fx_stop(fx, 1000);
	assert_int_equal(s.bad_requests, 4);
	assert_int_equal(s.requests, 2);
	free(fx);

	/* The limit is exact: 1000 bytes through the blank line pass, one more
	 * does not, even when both arrive in one read. */
	fx = fx_start(&small);
	req = padded_request("GET /hello HTTP/1.1\r\nConnection: close\r\nX-Pad: ", 'a', 1000);
	expect_status_then_close(fx->port, req, 200);
	free(req);
	req = padded_request("GET /hello HTTP/1.1\r\nConnection: close\r\nX-Pad: ", 'a', 1001);
	expect_status_then_close(fx->port, req, 431);
	free(req);
	s = fx_stop(fx, 1000);
	assert_int_equal(s.bad_requests, 1);
	assert_int_equal(s.requests, 1);
	free(fx);
}

static void test_uri_too_long_414(void **state)
{
	struct fixture *fx = fx_start(NULL);
	char line[6000];
	http_stats s;

	(void)state;
	memset(line, 'a', sizeof(line));
	memcpy(line, "GET /", 5);
	/* A 4096-byte target is within the limit. */
	snprintf(line + 5 + 4095, sizeof(line) - 5 - 4095, " HTTP/1.1\r\nConnection: close\r\n\r\n");
	expect_status_then_close(fx->port, line, 404);
	memset(line, 'a', sizeof(line));
	memcpy(line, "GET /", 5);
	snprintf(line + 5 + 4096, sizeof(line) - 5 - 4096, " HTTP/1.1\r\n\r\n"); /* 4097: too long */
	expect_status_then_close(fx->port, line, 414);
	s = fx_stop(fx, 1000);
	assert_int_equal(s.requests, 1);
	assert_int_equal(s.bad_requests, 1);
	free(fx);
}

static void test_body_limits(void **state)
{
	http_limits limits = { .max_body = 100 };
	struct fixture *fx;
	struct client *c;
	struct response r;
	http_stats s;
	char *req;

	(void)state;
	/* Origin default: no body at all. */
	fx = fx_start(NULL);
	expect_status_then_close(fx->port,
	                         "POST /post HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", 413);
	expect_status_then_close(fx->port, "POST /post HTTP/1.1\r\nHost: t\r\n"
	                                   "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	                         413);
	c = client_open(fx->port);
	client_send(c, "GET /post HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 200); /* has_body == 0 */
	client_free(c);
	s = fx_stop(fx, 1000);
	assert_int_equal(s.bad_requests, 2);
	assert_int_equal(s.requests, 1);
	free(fx);

	/* Bodies within max_body are read, discarded and flagged. */
	fx = fx_start(&limits);
	c = client_open(fx->port);
	client_send(c, "POST /post HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
	               "POST /post HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
	               "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
	               "GET /post HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 201);
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 201);
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 200);
	/* Trailers are read but not shown to the handler as headers. */
	client_send(c, "POST /post HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
	               "2\r\nhi\r\n0\r\nX-Test: trailer\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 201);
	uv_mutex_lock(&fx->mu);
	assert_int_equal(fx->seen_x_test_null, 1);
	assert_int_equal(fx->seen_count, 2);
	uv_mutex_unlock(&fx->mu);
	client_free(c);
	req = request_with("POST /post HTTP/1.1\r\nContent-Length: 101\r\n", "X", 1, 1);
	expect_status_then_close(fx->port, req, 413);
	free(req);
	expect_status_then_close(fx->port, "POST /post HTTP/1.1\r\nHost: t\r\n"
	                                   "Transfer-Encoding: chunked\r\n\r\n"
	                                   "64\r\n" /* 100 */
	                                   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	                                   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	                                   "\r\n1\r\nb\r\n0\r\n\r\n",
	                         413);
	s = fx_stop(fx, 1000);
	assert_int_equal(s.requests, 4);
	assert_int_equal(s.bad_requests, 2);
	free(fx);
}

static void test_max_connections_refused(void **state)
{
	http_limits limits = { .max_connections = 2 };
	struct fixture *fx = fx_start(&limits);
	struct client *a, *b, *c, *d;
	uint64_t deadline;
	http_stats s;

	(void)state;
	a = client_open(fx->port);
	get_hello(a);
	b = client_open(fx->port);
	get_hello(b);
	/* The third is accepted by the kernel, then closed by the server,
	 * possibly after a 503. It must not hang. */
	c = client_open(fx->port);
	assert_true(client_closed(c, WAIT_MS));
	if (c->len > 0)
		assert_memory_equal(c->buf, "HTTP/1.1 503", 12);
	client_free(c);
	get_hello(a); /* the others still work */

	s = fx_stats(fx);
	assert_int_equal(s.connections_refused, 1);
	assert_int_equal(s.connections_accepted, 2);
	assert_int_equal(s.connections_open, 2);

	/* A slot frees up when a client leaves. */
	client_free(b);
	deadline = now_ms() + WAIT_MS;
	while (fx_stats(fx).connections_open != 1 && now_ms() < deadline)
		usleep(5000);
	d = client_open(fx->port);
	get_hello(d);
	client_free(d);
	client_free(a);
	s = fx_stop(fx, 1000);
	assert_int_equal(s.connections_refused, 1);
	assert_int_equal(s.connections_accepted, 3);
	free(fx);
}

static void test_header_timeout_slowloris(void **state)
{
	http_limits limits = { .header_timeout_ms = 200 };
	struct fixture *fx = fx_start(&limits);
	struct client *c = client_open(fx->port);
	uint64_t start = now_ms();
	int closed = 0;
	http_stats s;

	(void)state;
	/* A header line every 100 ms: each byte is progress, but the request
	 * never completes. Only a deadline from the first byte stops it. */
	client_send(c, "GET /hello HTTP/1.1\r\n");
	while (!closed && now_ms() - start < 3000) {
		if (client_send_len(c, "X-a: b\r\n", 8) != 0)
			closed = 1;
		else
			closed = client_closed(c, 100);
	}
	assert_true(closed);
	assert_true(now_ms() - start < 2000);
	client_free(c);
	s = fx_stop(fx, 1000);
	assert_int_equal(s.timeouts_header, 1);
	assert_int_equal(s.requests, 0);
	free(fx);
}

static void test_idle_timeout(void **state)
{
	http_limits limits = { .idle_timeout_ms = 200 };
	struct fixture *fx = fx_start(&limits);
	struct client *c = client_open(fx->port);
	uint64_t start;
	http_stats s;

	(void)state;
	get_hello(c);
	start = now_ms();
	assert_true(client_closed(c, WAIT_MS));
	assert_true(now_ms() - start >= 100);
	assert_int_equal(c->len, 0);
	client_free(c);
	s = fx_stop(fx, 1000);
	assert_int_equal(s.timeouts_idle, 1);
	assert_int_equal(s.timeouts_header, 0);
	free(fx);
}

static void test_write_timeout(void **state)
{
	http_limits limits = { .write_timeout_ms = 200 };
	struct fixture *fx = fx_start(&limits);
	struct client *c = client_open_opts(fx->port, 4096);
	http_stats s;

	(void)state;
	/* Ask for 32 MiB and never read. */
	client_send(c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(wait_for(&fx->releases, 1), 1);
	s = fx_stats(fx);
	assert_int_equal(s.timeouts_write, 1);
	assert_int_equal(s.connections_open, 0);
	client_free(c);
	s = fx_stop(fx, 1000);
	assert_int_equal(atomic_load(&fx->releases), 1);
	free(fx);
}

static void test_release_when_client_vanishes(void **state)
{
	struct fixture *fx = fx_start(NULL);
	struct client *c;
	http_stats s;

	(void)state;
	/* Reset mid-body. */
	c = client_open(fx->port);
	client_send(c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_true(client_fill(c, WAIT_MS) > 0);
	client_abort(c);
	assert_int_equal(wait_for(&fx->releases, 1), 1);

	/* Plain close mid-body: the server's next writes fail. */
	c = client_open(fx->port);
	client_send(c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_true(client_fill(c, WAIT_MS) > 0);
	client_free(c);
	assert_int_equal(wait_for(&fx->releases, 2), 2);

	/* Gone while the handler is still working: http_respond fails and
	 * still releases. */
	fx->slow_ms = 300;
	atomic_store(&fx->slow_respond_err, 1); /* not yet called */
	c = client_open(fx->port);
	client_send(c, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(wait_for(&fx->requests, 3), 3);
	client_abort(c);
	assert_int_equal(wait_for(&fx->releases, 3), 3);
	while (atomic_load(&fx->slow_respond_err) == 1) /* stored after release ran */
		usleep(1000);
	assert_true(atomic_load(&fx->slow_respond_err) < 0);

	s = fx_stats(fx);
	assert_int_equal(s.connections_open, 0);
	assert_int_equal(s.timeouts_write, 0);
	s = fx_stop(fx, 1000);
	assert_int_equal(atomic_load(&fx->releases), 3);
	assert_int_equal(atomic_load(&fx->responses), 3);
	free(fx);
}

static void test_stop_is_graceful(void **state)
{
	struct fixture *fx = fx_start(NULL);
	struct client *idle, *busy;
	struct response r;
	char v[64];
	int port = fx->port;
	struct sockaddr_in sa;
	int fd;

	(void)state;
	fx->slow_ms = 300;
	idle = client_open(port);
	get_hello(idle);
	busy = client_open(port);
	client_send(busy, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(wait_for(&fx->requests, 2), 2);

	fx->grace_ms = 5000;
	fx_command(fx, CMD_STOP);
	/* The idle keep-alive connection goes at once... */
	assert_true(client_closed(idle, 200));
	/* ...new ones are refused by the kernel... */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), -1);
	close(fd);
	/* ...and the one in flight is answered, then closed. */
	assert_int_equal(read_response(busy, &r, 1), 0);
	assert_int_equal(r.status, 200);
	assert_memory_equal(r.body, "slow\n", 5);
	assert_non_null(resp_header(&r, "Connection", v, sizeof(v)));
	assert_string_equal(v, "close");
	assert_true(client_closed(busy, WAIT_MS));
	fx_join(fx);
	client_free(idle);
	client_free(busy);
	free(fx);
}

static void test_stop_grace_expires(void **state)
{
	struct fixture *fx = fx_start(NULL);
	struct client *c = client_open_opts(fx->port, 4096);
	uint64_t start;

	(void)state;
	client_send(c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(wait_for(&fx->requests, 1), 1);
	usleep(50000);
	start = now_ms();
	fx->grace_ms = 200;
	fx_command(fx, CMD_STOP);
	fx_join(fx); /* asserts the release and on_stopped */
	assert_true(now_ms() - start >= 150);
	assert_true(now_ms() - start < WAIT_MS);
	assert_int_equal(atomic_load(&fx->releases), 1);
	client_free(c);
	free(fx);
}

static void test_request_fields_split_reads(void **state)
{
	struct fixture *fx = fx_start(NULL);
	struct client *c = client_open(fx->port);
	struct response r;
	const char *req = "GET /echo/x?a=b HTTP/1.1\r\nHost: t\r\nX-Test:  split value \r\n"
	                  "x-test: second\r\nX-Empty:\r\n\r\n";

	(void)state;
	/* One byte per segment: every span arrives in pieces. */
	for (const char *p = req; *p != '\0'; p++) {
		assert_int_equal(client_send_len(c, p, 1), 0);
		usleep(1000);
	}
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 200);
	assert_memory_equal(r.body, "/echo/x?a=b", 11);
	client_free(c);

	uv_mutex_lock(&fx->mu);
	assert_string_equal(fx->seen_method, "GET");
	assert_string_equal(fx->seen_target, "/echo/x?a=b");
	assert_string_equal(fx->seen_path, "/echo/x");
	assert_int_equal(fx->seen_x_test_null, 0);
	assert_string_equal(fx->seen_x_test, "split value");
	assert_int_equal(fx->seen_x_empty_null, 0);
	assert_string_equal(fx->seen_x_empty, "");
	assert_int_equal(fx->seen_missing_null, 1);
	assert_int_equal(fx->seen_count, 4);
	assert_string_equal(fx->seen_at1, "X-Test");
	assert_int_equal(fx->seen_at_out_of_range_null, 1);
	uv_mutex_unlock(&fx->mu);
	fx_stop(fx, 1000);
	free(fx);
}

static uint64_t ms_ns(uint64_t ms)
{
	return ms * 1000000u;
}

/* on_complete reports the status, every byte written, the time from the
 * request's first byte to the response's last, and no abort. */
static void test_on_complete_reports(void **state)
{
	struct fixture *fx = fx_start(NULL);
	struct client *c = client_open(fx->port);
	struct response r;
	http_completion done;
	char path[64];

	(void)state;
	get_hello(c);
	assert_int_equal(wait_for(&fx->completes, 1), 1);
	done = last_completion(fx, path, sizeof(path));
	assert_string_equal(path, "/hello");
	assert_int_equal(done.status, 200);
	assert_int_equal(done.aborted, 0);
	assert_true(done.duration_ns > 0);
	assert_true(done.duration_ns < ms_ns(WAIT_MS));

	/* Byte count: exactly what the client received. */
	client_send(c, "GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(wait_for(&fx->completes, 2), 2);
	done = last_completion(fx, path, sizeof(path));
	assert_int_equal(done.status, 404);
	assert_int_equal(done.bytes_sent, strlen(r.head) + r.body_len);
	client_send(c, "HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response(c, &r, 0), 0);
	assert_int_equal(wait_for(&fx->completes, 3), 3);
	done = last_completion(fx, path, sizeof(path));
	assert_int_equal(done.bytes_sent, strlen(r.head)); /* no body for HEAD */

	/* The clock starts at the request's first byte, not at its last. */
	client_send(c, "GET /hello HTTP/1.1\r\n");
	usleep(200000);
	client_send(c, "Host: t\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(wait_for(&fx->completes, 4), 4);
	done = last_completion(fx, path, sizeof(path));
	assert_true(done.duration_ns >= ms_ns(190));

	/* And stops at the last byte written, after a handler that takes time. */
	fx->slow_ms = 150;
	client_send(c, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(wait_for(&fx->completes, 5), 5);
	done = last_completion(fx, path, sizeof(path));
	assert_string_equal(path, "/slow");
	assert_true(done.duration_ns >= ms_ns(140));
	assert_true(done.duration_ns < ms_ns(WAIT_MS));
	client_free(c);

	/* What the core answers itself is not the handler's: no completion. */
	expect_status_then_close(fx->port, "GET / HTTP/1.1\r\nHost t\r\n\r\n", 400);
	usleep(50000);
	assert_int_equal(atomic_load(&fx->completes), 5);
	assert_int_equal(atomic_load(&fx->completes_aborted), 0);
	fx_stop(fx, 1000);
	free(fx);
}

/* Responses that never fully leave are reported once, as aborted. */
static void test_on_complete_aborted(void **state)
{
	http_limits limits = { .write_timeout_ms = 200 };
	struct fixture *fx = fx_start(&limits);
	http_completion done;
	struct client *c;
	char path[64];
	http_stats s;

	(void)state;
	/* Reset mid-body: some bytes left, not all. */
	c = client_open(fx->port);
	client_send(c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_true(client_fill(c, WAIT_MS) > 0);
	client_abort(c);
	assert_int_equal(wait_for(&fx->completes, 1), 1);
	done = last_completion(fx, path, sizeof(path));
	assert_int_equal(done.status, 200);
	assert_int_equal(done.aborted, 1);
	assert_true(done.bytes_sent > 0);
	assert_true(done.bytes_sent < BIG_BODY);

	/* Gone while the handler worked: http_respond fails, nothing sent. */
	fx->slow_ms = 300;
	c = client_open(fx->port);
	client_send(c, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(wait_for(&fx->requests, 2), 2);
	client_abort(c);
	assert_int_equal(wait_for(&fx->completes, 2), 2);
	done = last_completion(fx, path, sizeof(path));
	assert_string_equal(path, "/slow");
	assert_int_equal(done.aborted, 1);
	assert_int_equal(done.bytes_sent, 0);

	/* A stalled reader is cut by the write timeout. */
	c = client_open_opts(fx->port, 4096);
	client_send(c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(wait_for(&fx->completes, 3), 3);
	done = last_completion(fx, path, sizeof(path));
	assert_int_equal(done.aborted, 1);
	assert_true(done.bytes_sent < BIG_BODY);
	assert_true(done.duration_ns >= ms_ns(190));
	s = fx_stats(fx);
	assert_int_equal(s.timeouts_write, 1);
	client_free(c);
	assert_int_equal(atomic_load(&fx->completes_aborted), 3);
	fx_stop(fx, 1000);
	free(fx);
}

/* The grace period ends responses still in flight: reported as aborted. */
static void test_on_complete_at_shutdown(void **state)
{
	struct fixture *fx = fx_start(NULL);
	struct client *c = client_open_opts(fx->port, 4096);

	(void)state;
	client_send(c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(wait_for(&fx->requests, 1), 1);
	fx_stop(fx, 100);
	assert_int_equal(atomic_load(&fx->completes), 1);
	/* The loop thread is joined: its writes are visible without the lock. */
	assert_int_equal(fx->last_done.aborted, 1);
	assert_string_equal(fx->last_done_path, "/big");
	client_free(c);
	free(fx);
}

struct hammer {
	int port;
	int n;
	atomic_int done;
	atomic_int failures;
};

/* Client thread: no cmocka assertions off the main thread. */
static void hammer_thread(void *arg)
{
	struct hammer *h = arg;
	struct client *c = calloc(1, sizeof(*c));
	struct sockaddr_in sa;
	struct response r;

	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)h->port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		atomic_fetch_add(&h->failures, 1);
	for (int i = 0; i < h->n && atomic_load(&h->failures) == 0; i++) {
		const char *req = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";
		if (client_send_len(c, req, strlen(req)) != 0 || read_response(c, &r, 1) != 0 ||
		    r.status != 200)
			atomic_fetch_add(&h->failures, 1);
	}
	client_free(c);
	atomic_store(&h->done, 1);
}

/* http_server_stats may be read from any thread while the loop serves. */
static void test_stats_from_another_thread(void **state)
{
	struct fixture *fx = fx_start(NULL);
	struct hammer h = { .port = fx->port, .n = 2000 };
	uint64_t last_requests = 0, last_bytes = 0;
	uv_thread_t t;
	http_stats s;
	int reads = 0;

	(void)state;
	assert_int_equal(uv_thread_create(&t, hammer_thread, &h), 0);
	while (!atomic_load(&h.done)) {
		http_server_stats(fx->server, &s); /* on this thread, not the loop's */
		assert_true(s.requests >= last_requests);
		assert_true(s.bytes_sent >= last_bytes);
		assert_true(s.connections_open <= 1);
		last_requests = s.requests;
		last_bytes = s.bytes_sent;
		reads++;
	}
	assert_int_equal(uv_thread_join(&t), 0);
	assert_int_equal(atomic_load(&h.failures), 0);
	assert_true(reads > 0);
	http_server_stats(fx->server, &s);
	assert_int_equal(s.requests, 2000);
	assert_int_equal(s.connections_accepted, 1);
	fx_stop(fx, 1000);
	free(fx);
}

static void on_stopped_count(void *arg)
{
	(*(int *)arg)++;
}

static void test_start_errors(void **state)
{
	static const char *const bad[] = { "nonsense", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999",
		                           "127.0.0.1:80x", "localhost:80", "[::1]80", "[::1:80",
		                           "1.2.3.999:80", ":80", "", "[]:80", "127.0.0.1:-1" };
	http_server *sentinel = (http_server *)(uintptr_t)0x1;
	http_server *out, *a, *r1, *r2;
	struct test_handler handler = { .base = { .on_request = on_request } };
	uv_loop_t loop;
	int stopped = 0;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		out = sentinel;
		assert_int_equal(http_server_start(&loop, bad[i], 0, NULL, &handler.base, &out),
		                 SAYIN_ECONFIG);
		assert_ptr_equal(out, sentinel);
	}
	assert_int_equal(http_server_start(&loop, "127.0.0.1:0", 0, NULL, &handler.base, &a), 0);
	{
		char addr[64];
		snprintf(addr, sizeof(addr), "127.0.0.1:%d", http_server_port(a));
		out = sentinel;
		assert_int_equal(http_server_start(&loop, addr, 0, NULL, &handler.base, &out), -EADDRINUSE);
		assert_ptr_equal(out, sentinel);
	}
	/* SO_REUSEPORT lets two servers share the address. */
	assert_int_equal(http_server_start(&loop, "127.0.0.1:0", 1, NULL, &handler.base, &r1), 0);
	{
		char addr[64];
		snprintf(addr, sizeof(addr), "127.0.0.1:%d", http_server_port(r1));
		assert_int_equal(http_server_start(&loop, addr, 1, NULL, &handler.base, &r2), 0);
		assert_int_equal(http_server_port(r2), http_server_port(r1));
		out = sentinel;
		assert_int_equal(http_server_start(&loop, addr, 0, NULL, &handler.base, &out), -EADDRINUSE);
	}
	http_server_stop(a, 0, on_stopped_count, &stopped);
	http_server_stop(r1, 0, on_stopped_count, &stopped);
	http_server_stop(r2, 100, on_stopped_count, &stopped);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(stopped, 3);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* http_listen_check refuses an address a SO_REUSEPORT group already holds,
 * which a reuseport bind would silently join. */
static void test_listen_check(void **state)
{
	struct test_handler handler = { .base = { .on_request = on_request } };
	http_server *r1;
	uv_loop_t loop;
	char addr[64];
	int stopped = 0, port;

	(void)state;
	assert_int_equal(http_listen_check("nonsense"), SAYIN_ECONFIG);
	assert_int_equal(http_listen_check("127.0.0.1:0"), 0);
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(http_server_start(&loop, "127.0.0.1:0", 1, NULL, &handler.base, &r1), 0);
	port = http_server_port(r1);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	assert_int_equal(http_listen_check(addr), -EADDRINUSE);
	http_server_stop(r1, 0, on_stopped_count, &stopped);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(stopped, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
	/* Free again once the listener is gone. */
	assert_int_equal(http_listen_check(addr), 0);
}

static void test_ipv6(void **state)
{
	struct fixture *fx;
	struct sockaddr_in6 sa;
	struct client *c;
	int err;

	(void)state;
	fx = fx_start_at(NULL, "[::1]:0", &err);
	if (fx == NULL) {
		assert_true(err == -EADDRNOTAVAIL || err == -EAFNOSUPPORT);
		skip();
	}
	c = calloc(1, sizeof(*c));
	c->fd = socket(AF_INET6, SOCK_STREAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin6_family = AF_INET6;
	sa.sin6_port = htons((uint16_t)fx->port);
	sa.sin6_addr = in6addr_loopback;
	assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	get_hello(c);
	client_free(c);
	fx_stop(fx, 1000);
	free(fx);
}

static void test_status_text(void **state)
{
	(void)state;
	assert_string_equal(http_status_text(200), "OK");
	assert_string_equal(http_status_text(304), "Not Modified");
	assert_string_equal(http_status_text(404), "Not Found");
	assert_string_equal(http_status_text(431), "Request Header Fields Too Large");
	assert_non_null(http_status_text(799));
}

/* ---- streamed request bodies (on_headers / on_body / on_abort) ---- */

#define MIB (UINT64_C(1) << 20)

static unsigned char *random_bytes(size_t len, uint32_t seed)
{
	unsigned char *p = malloc(len);

	for (size_t i = 0; i < len; i++) {
		seed = seed * 1664525u + 1013904223u;
		p[i] = (unsigned char)(seed >> 24);
	}
	return p;
}

/* data in chunked encoding, with chunk sizes from 1 to 5000, a chunk
 * extension and a trailer. */
static char *chunked_encode(const unsigned char *data, size_t len, size_t *out_len)
{
	size_t cap = len * 2 + 4096; /* each chunk of >= 1 byte adds < 24 */
	char *out = malloc(cap);
	size_t n = 0, off = 0, i = 0;

	while (off < len) {
		size_t chunk = (i * 7919) % 5000 + 1;
		if (chunk > len - off)
			chunk = len - off;
		assert_true(cap - n > chunk + 64);
		n += (size_t)snprintf(out + n, cap - n, i == 3 ? "%zx;ext=1\r\n" : "%zx\r\n", chunk);
		memcpy(out + n, data + off, chunk);
		n += chunk;
		memcpy(out + n, "\r\n", 2);
		n += 2;
		off += chunk;
		i++;
	}
	n += (size_t)snprintf(out + n, cap - n, "0\r\nX-Trailer: t\r\n\r\n");
	*out_len = n;
	return out;
}

/* Sends in pieces of 1 to 3000 bytes with pauses, so the server reads the
 * body in many small reads. */
static void send_in_pieces(struct client *c, const char *data, size_t len)
{
	size_t off = 0;

	for (int k = 0; off < len; k++) {
		size_t piece = (size_t)(k * 31) % 3000 + 1;
		if (piece > len - off)
			piece = len - off;
		assert_int_equal(client_send_len(c, data + off, piece), 0);
		off += piece;
		if (k % 8 == 0)
			usleep(500);
	}
}

/* The streaming handler's answer for a body: its length and FNV-1a. */
static void expect_upload_echo(struct client *c, const void *data, size_t len)
{
	struct response r;
	char want[64];

	snprintf(want, sizeof(want), "%zu %016llx\n", len,
	         (unsigned long long)fnv1a(FNV_OFFSET, data, len));
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body_len, strlen(want));
	assert_memory_equal(r.body, want, strlen(want));
}

static void send_upload_head(struct client *c, const char *path, uint64_t length,
                             const char *extra)
{
	char head[512];

	snprintf(head, sizeof(head), "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %llu\r\n%s\r\n",
	         path, (unsigned long long)length, extra != NULL ? extra : "");
	client_send(c, head);
}

/* Reads a final response with "Connection: close", then a clean FIN. */
static void expect_close_response(struct client *c, int status)
{
	struct response r;
	char v[64];

	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, status);
	assert_non_null(resp_header(&r, "Connection", v, sizeof(v)));
	assert_string_equal(v, "close");
	assert_int_equal(client_close_kind(c, WAIT_MS), CLOSED_FIN);
}

/* Content-Length and chunked bodies reach on_body exactly, however the
 * reads split them, and on_request follows. */
static void test_stream_body_exact(void **state)
{
	struct fixture *fx = fx_start_stream(NULL, 64 * MIB);
	size_t big = 3 * (size_t)MIB, small = 300000, chunked_len;
	unsigned char *data = random_bytes(big, 7);
	struct client *c = client_open(fx->port);
	char *chunked;
	http_stats s;

	(void)state;
	/* 3 MiB at once: the core's 16 KiB buffer makes many pieces. */
	send_upload_head(c, "/upload", big, NULL);
	assert_int_equal(client_send_len(c, (const char *)data, big), 0);
	expect_upload_echo(c, data, big);
	assert_true(atomic_load(&fx->up_bodies) >= (int)(big / 16384));
	uv_mutex_lock(&fx->mu);
	assert_int_equal(fx->seen_content_length, big);
	assert_int_equal(fx->seen_chunked, 0);
	assert_int_equal(fx->seen_has_body, 1);
	uv_mutex_unlock(&fx->mu);

	/* Trickled in small pieces on the same connection. */
	send_upload_head(c, "/upload", small, NULL);
	send_in_pieces(c, (const char *)data + 11, small);
	expect_upload_echo(c, data + 11, small);

	/* Chunked, decoded by the core, trailer and extension dropped. */
	chunked = chunked_encode(data + 5, small, &chunked_len);
	client_send(c, "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
	send_in_pieces(c, chunked, chunked_len);
	expect_upload_echo(c, data + 5, small);
	uv_mutex_lock(&fx->mu);
	assert_true(fx->seen_content_length == HTTP_LENGTH_UNKNOWN);
	assert_int_equal(fx->seen_chunked, 1);
	uv_mutex_unlock(&fx->mu);

	/* An empty body: on_headers, no on_body, on_request. */
	send_upload_head(c, "/upload", 0, NULL);
	expect_upload_echo(c, "", 0);
	uv_mutex_lock(&fx->mu);
	assert_int_equal(fx->seen_has_body, 0);
	uv_mutex_unlock(&fx->mu);
	client_free(c);

	assert_int_equal(atomic_load(&fx->up_bytes), big + 2 * small);
	s = fx_stop(fx, 1000);
	assert_int_equal(s.requests, 4);
	assert_int_equal(atomic_load(&fx->up_allocs), 4);
	assert_int_equal(atomic_load(&fx->up_aborts), 0);
	free(chunked);
	free(data);
	free(fx);
}

/* on_headers refuses by Content-Length: the response goes out at once with
 * Connection: close and the connection ends, though 200 MiB were announced
 * and only 4 KiB sent; not one body byte reaches the handler. */
static void test_stream_reject_by_length(void **state)
{
	struct fixture *fx = fx_start_stream(NULL, MIB);
	struct client *c = client_open(fx->port);
	char *some = calloc(1, 4096);
	http_stats s;

	(void)state;
	send_upload_head(c, "/upload", 200 * MIB, NULL);
	assert_int_equal(client_send_len(c, some, 4096), 0);
	expect_close_response(c, 413);
	client_free(c);
	assert_int_equal(atomic_load(&fx->up_bodies), 0);
	assert_int_equal(atomic_load(&fx->requests), 0); /* no on_request */
	s = fx_stop(fx, 1000);
	assert_int_equal(s.requests, 1);
	assert_int_equal(atomic_load(&fx->up_aborts), 0); /* released, not aborted */
	assert_int_equal(atomic_load(&fx->up_frees), 1);
	free(some);
	free(fx);
}

/* on_body refuses past the handler's cap: 413, close, and the rest of an
 * endless chunked body is never passed on. */
static void test_stream_reject_mid_body(void **state)
{
	struct fixture *fx = fx_start_stream(NULL, 64 * 1024);
	struct client *c = client_open(fx->port);
	char chunk[8192 + 16];
	size_t sent = 0;
	int n;

	(void)state;
	client_send(c, "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
	n = snprintf(chunk, sizeof(chunk), "2000\r\n");
	memset(chunk + n, 'u', 8192);
	memcpy(chunk + n + 8192, "\r\n", 2);
	/* Keep sending until the answer comes (no final chunk ever). */
	while (sent < 4 * MIB && c->len == 0) {
		if (client_send_len(c, chunk, (size_t)n + 8194) != 0)
			break;
		sent += 8192;
		(void)client_fill(c, 1);
	}
	assert_true(sent < 4 * MIB);
	expect_close_response(c, 413);
	client_free(c);
	assert_true(atomic_load(&fx->up_bytes) > 64 * 1024);
	assert_true(atomic_load(&fx->up_bytes) <= 64 * 1024 + 16384);
	fx_stop(fx, 1000);
	assert_int_equal(atomic_load(&fx->requests), 0);
	assert_int_equal(atomic_load(&fx->up_aborts), 0);
	free(fx);
}

/* 100 Continue only once the handler accepted; 417 for anything else. */
static void test_stream_expect(void **state)
{
	struct fixture *fx = fx_start_stream(NULL, MIB);
	struct client *c;
	struct response r;
	http_stats s;
	int heads;

	(void)state;
	/* Accepted: the 100 comes before the client sends any body. */
	c = client_open(fx->port);
	send_upload_head(c, "/upload", 10, "Expect: 100-continue\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 100);
	assert_non_null(strstr(r.head, "HTTP/1.1 100 Continue\r\n\r\n"));
	client_send(c, "0123456789");
	expect_upload_echo(c, "0123456789", 10);
	/* Still keep-alive, and the next request without Expect gets no 100. */
	send_upload_head(c, "/upload", 3, NULL);
	client_send(c, "abc");
	expect_upload_echo(c, "abc", 3);
	client_free(c);

	/* Rejected: the final response only, then close. */
	c = client_open(fx->port);
	send_upload_head(c, "/upload", 200 * MIB, "Expect: 100-Continue\r\n");
	expect_close_response(c, 413);
	assert_null(memmem(c->buf, c->len, "100 Continue", 12));
	client_free(c);

	/* Unknown expectation: 417 from the core, on_headers never called. */
	heads = atomic_load(&fx->up_heads);
	c = client_open(fx->port);
	send_upload_head(c, "/upload", 10, "Expect: 200-ok\r\n");
	expect_close_response(c, 417);
	client_free(c);
	assert_int_equal(atomic_load(&fx->up_heads), heads);

	/* HTTP/1.0 clients get no 100 (RFC 9110 10.1.1). */
	c = client_open(fx->port);
	client_send(c, "POST /upload HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello");
	expect_upload_echo(c, "hello", 5);
	client_free(c);

	s = fx_stop(fx, 1000);
	assert_int_equal(s.bad_requests, 1); /* the 417 */
	assert_int_equal(atomic_load(&fx->up_aborts), 0);
	free(fx);
}

/* A client that leaves mid-body, by reset or FIN, or while the handler has
 * paused the body: on_abort runs once and on_request never. */
static void test_stream_client_disconnect(void **state)
{
	struct fixture *fx = fx_start_stream(NULL, 64 * MIB);
	char *some = calloc(1, 65536);
	struct client *c;
	http_stats s;

	(void)state;
	c = client_open(fx->port);
	send_upload_head(c, "/upload", MIB, NULL);
	assert_int_equal(client_send_len(c, some, 65536), 0);
	assert_true(wait_for(&fx->up_bodies, 1) >= 1);
	client_abort(c);
	assert_int_equal(wait_for(&fx->up_aborts, 1), 1);

	c = client_open(fx->port);
	send_upload_head(c, "/upload", MIB, NULL);
	assert_int_equal(client_send_len(c, some, 65536), 0);
	client_free(c);
	assert_int_equal(wait_for(&fx->up_aborts, 2), 2);

	/* Paused in on_headers (for slow_ms): the loss is seen on resume. */
	fx->slow_ms = 100;
	c = client_open(fx->port);
	send_upload_head(c, "/upload/slow", MIB, NULL);
	assert_int_equal(client_send_len(c, some, 4096), 0);
	assert_int_equal(wait_for(&fx->up_heads, 3), 3);
	client_abort(c);
	assert_int_equal(wait_for(&fx->up_aborts, 3), 3);

	usleep(100000);
	assert_int_equal(atomic_load(&fx->up_aborts), 3);
	assert_int_equal(atomic_load(&fx->up_frees), 3);
	s = fx_stop(fx, 1000);
	assert_int_equal(s.timeouts_idle, 0);
	assert_int_equal(atomic_load(&fx->requests), 0);
	assert_int_equal(atomic_load(&fx->responses), 0);
	free(some);
	free(fx);
}

/* A body that stalls past the idle timeout: closed, on_abort once. One
 * that trickles slower than the whole timeout but keeps moving lives. */
static void test_stream_idle_timeout(void **state)
{
	http_limits limits = { .idle_timeout_ms = 200 };
	struct fixture *fx = fx_start_stream(&limits, MIB);
	struct client *c;
	uint64_t start;
	http_stats s;

	(void)state;
	c = client_open(fx->port);
	send_upload_head(c, "/upload", 20, NULL);
	for (int i = 0; i < 20; i++) {
		assert_int_equal(client_send_len(c, "x", 1), 0);
		usleep(50000); /* 1 s in all, each gap under 200 ms */
	}
	expect_upload_echo(c, "xxxxxxxxxxxxxxxxxxxx", 20);
	client_free(c);

	c = client_open(fx->port);
	send_upload_head(c, "/upload", 1000, NULL);
	client_send(c, "only ten b");
	start = now_ms();
	assert_true(client_closed(c, WAIT_MS));
	assert_true(now_ms() - start >= 150);
	assert_int_equal(c->len, 0); /* no response */
	client_free(c);
	assert_int_equal(wait_for(&fx->up_aborts, 1), 1);
	s = fx_stop(fx, 1000);
	assert_int_equal(s.timeouts_idle, 1);
	assert_int_equal(atomic_load(&fx->up_aborts), 1);
	free(fx);
}

/* Requests pipelined behind streamed bodies are answered in order. */
static void test_stream_pipelined(void **state)
{
	struct fixture *fx = fx_start_stream(NULL, MIB);
	struct client *c = client_open(fx->port);
	struct response r;
	http_stats s;

	(void)state;
	client_send(c, "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
	               "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
	               "3\r\nabc\r\n0\r\n\r\n"
	               "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
	expect_upload_echo(c, "hello", 5);
	expect_upload_echo(c, "abc", 3);
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 200);
	assert_memory_equal(r.body, "hello world\n", 12);
	uv_mutex_lock(&fx->mu);
	assert_string_equal(fx->seen_method, "GET");
	assert_int_equal(fx->seen_content_length, 0);
	assert_int_equal(fx->seen_has_body, 0);
	uv_mutex_unlock(&fx->mu);
	get_hello(c);
	client_free(c);
	s = fx_stop(fx, 1000);
	assert_int_equal(s.requests, 4);
	assert_int_equal(s.connections_accepted, 1);
	assert_int_equal(atomic_load(&fx->up_allocs), 4);
	free(fx);
}

/* A paused body gets no on_body (not even for buffered input) and no idle
 * timeout; resume delivers the rest, also the end of a message whose last
 * byte was read before the pause. */
static void test_stream_pause_resume(void **state)
{
	http_limits limits = { .idle_timeout_ms = 200 };
	struct fixture *fx = fx_start_stream(&limits, 64 * MIB);
	size_t len = 256 * 1024, chunked_len;
	unsigned char *data = random_bytes(len, 3);
	struct client *c = client_open(fx->port);
	char *chunked;

	(void)state;
	fx->slow_ms = 400; /* the pause in on_headers outlasts the idle timeout */
	send_upload_head(c, "/upload/slow", len, NULL);
	assert_int_equal(client_send_len(c, (const char *)data, len), 0);
	expect_upload_echo(c, data, len);
	assert_true(atomic_load(&fx->up_bodies) > 1);

	send_upload_head(c, "/upload/slow", 0, NULL);
	expect_upload_echo(c, "", 0);

	chunked = chunked_encode(data, 50000, &chunked_len);
	client_send(c, "POST /upload/slow HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
	assert_int_equal(client_send_len(c, chunked, chunked_len), 0);
	expect_upload_echo(c, data, 50000);
	get_hello(c);
	client_free(c);
	fx_stop(fx, 1000);
	assert_int_equal(atomic_load(&fx->up_aborts), 0);
	free(chunked);
	free(data);
	free(fx);
}

/* What the core refuses after on_headers accepted (its max_stream_body net,
 * broken chunking, a handler that refuses without answering) ends in
 * on_abort, once. */
static void test_stream_core_rejects(void **state)
{
	http_limits limits = { .max_stream_body = 1000, .max_body = 5000 };
	struct fixture *fx = fx_start_stream(&limits, 64 * MIB);
	struct client *c;
	char body[700];
	http_stats s;

	(void)state;
	memset(body, 'b', sizeof(body));
	/* max_body (5000) does not apply, the net (1000) does, after on_headers. */
	c = client_open(fx->port);
	send_upload_head(c, "/upload", 2000, "Expect: 100-continue\r\n");
	expect_close_response(c, 413);
	assert_null(memmem(c->buf, c->len, "100 Continue", 12));
	client_free(c);
	assert_int_equal(wait_for(&fx->up_aborts, 1), 1);
	assert_int_equal(atomic_load(&fx->up_heads), 1);

	c = client_open(fx->port);
	client_send(c, "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2bc\r\n");
	assert_int_equal(client_send_len(c, body, sizeof(body)), 0);
	client_send(c, "\r\n2bc\r\n");
	assert_int_equal(client_send_len(c, body, sizeof(body)), 0);
	expect_close_response(c, 413);
	client_free(c);
	assert_int_equal(wait_for(&fx->up_aborts, 2), 2);
	assert_int_equal(atomic_load(&fx->up_bytes), 700);

	c = client_open(fx->port);
	client_send(c, "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
	               "3\r\nabc\r\nzz\r\n");
	expect_close_response(c, 400);
	client_free(c);
	assert_int_equal(wait_for(&fx->up_aborts, 3), 3);

	c = client_open(fx->port);
	send_upload_head(c, "/upload/misbehave", 3, NULL);
	expect_close_response(c, 500);
	client_free(c);
	assert_int_equal(wait_for(&fx->up_aborts, 4), 4);

	s = fx_stop(fx, 1000);
	assert_int_equal(s.requests, 4);
	assert_int_equal(atomic_load(&fx->requests), 0);
	assert_int_equal(atomic_load(&fx->up_aborts), 4);
	free(fx);
}

/* A body still streaming when the grace period ends: on_abort before
 * on_stopped (fx_join checks every state was freed). */
static void test_stream_server_stop(void **state)
{
	struct fixture *fx = fx_start_stream(NULL, 64 * MIB);
	struct client *c = client_open(fx->port);
	char some[1000] = { 0 };

	(void)state;
	send_upload_head(c, "/upload", MIB, NULL);
	assert_int_equal(client_send_len(c, some, sizeof(some)), 0);
	assert_true(wait_for(&fx->up_bodies, 1) >= 1);
	fx_stop(fx, 100);
	assert_int_equal(atomic_load(&fx->up_aborts), 1);
	assert_true(client_closed(c, WAIT_MS));
	client_free(c);
	free(fx);
}

/* Handlers without on_headers see the new fields too; a handler with
 * on_headers needs on_body. */
static void test_stream_fields_and_start(void **state)
{
	http_limits limits = { .max_body = 100 };
	struct fixture *fx = fx_start(&limits);
	struct client *c = client_open(fx->port);
	struct test_handler handler = { .base = { .on_request = on_request,
		                                  .on_headers = stream_on_headers } };
	struct response r;
	http_server *out = NULL;
	uv_loop_t loop;

	(void)state;
	client_send(c, "POST /post HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 201);
	uv_mutex_lock(&fx->mu);
	assert_int_equal(fx->seen_content_length, 5);
	assert_int_equal(fx->seen_chunked, 0);
	uv_mutex_unlock(&fx->mu);
	client_send(c, "POST /post HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
	               "2\r\nhi\r\n0\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	uv_mutex_lock(&fx->mu);
	assert_true(fx->seen_content_length == HTTP_LENGTH_UNKNOWN);
	assert_int_equal(fx->seen_chunked, 1);
	uv_mutex_unlock(&fx->mu);
	client_free(c);
	fx_stop(fx, 1000);
	free(fx);

	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(http_server_start(&loop, "127.0.0.1:0", 0, NULL, &handler.base, &out),
	                 SAYIN_EINVAL);
	assert_null(out);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_body),
		cmocka_unit_test(test_head_has_length_no_body),
		cmocka_unit_test(test_pipelined_in_order),
		cmocka_unit_test(test_pipeline_flood),
		cmocka_unit_test(test_http10_closes),
		cmocka_unit_test(test_connection_close_closes),
		cmocka_unit_test(test_malformed_400),
		cmocka_unit_test(test_smuggling_400),
		cmocka_unit_test(test_header_limits_431),
		cmocka_unit_test(test_uri_too_long_414),
		cmocka_unit_test(test_body_limits),
		cmocka_unit_test(test_max_connections_refused),
		cmocka_unit_test(test_header_timeout_slowloris),
		cmocka_unit_test(test_idle_timeout),
		cmocka_unit_test(test_write_timeout),
		cmocka_unit_test(test_release_when_client_vanishes),
		cmocka_unit_test(test_stop_is_graceful),
		cmocka_unit_test(test_stop_grace_expires),
		cmocka_unit_test(test_request_fields_split_reads),
		cmocka_unit_test(test_start_errors),
		cmocka_unit_test(test_listen_check),
		cmocka_unit_test(test_ipv6),
		cmocka_unit_test(test_status_text),
		cmocka_unit_test(test_on_complete_reports),
		cmocka_unit_test(test_on_complete_aborted),
		cmocka_unit_test(test_on_complete_at_shutdown),
		cmocka_unit_test(test_stats_from_another_thread),
		cmocka_unit_test(test_stream_body_exact),
		cmocka_unit_test(test_stream_reject_by_length),
		cmocka_unit_test(test_stream_reject_mid_body),
		cmocka_unit_test(test_stream_expect),
		cmocka_unit_test(test_stream_client_disconnect),
		cmocka_unit_test(test_stream_idle_timeout),
		cmocka_unit_test(test_stream_pipelined),
		cmocka_unit_test(test_stream_pause_resume),
		cmocka_unit_test(test_stream_core_rejects),
		cmocka_unit_test(test_stream_server_stop),
		cmocka_unit_test(test_stream_fields_and_start),
	};

	signal(SIGPIPE, SIG_IGN);
	alarm(600); /* a hung test fails instead of blocking the build */
	return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}

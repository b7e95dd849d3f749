/* http_fixture: the HTTP core's test server and client (http_fixture.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/http_fixture.h"

#include "core/error.h"

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

void fx_on_request(http_handler *self, http_request *req)
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

http_completion last_completion(struct fixture *fx, char *path, size_t size)
{
	http_completion done;

	uv_mutex_lock(&fx->mu);
	done = fx->last_done;
	copy_str(path, size, fx->last_done_path);
	uv_mutex_unlock(&fx->mu);
	return done;
}

/* ---- the streaming handler: on_headers, on_body, on_abort (loop thread) ---- */

uint64_t fx_fnv1a(uint64_t h, const void *data, size_t len)
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

int fx_stream_on_headers(http_handler *self, http_request *req)
{
	struct fixture *fx = ((struct test_handler *)self)->fx;
	struct upload *up = calloc(1, sizeof(*up));

	up->fx = fx;
	up->hash = FX_FNV_OFFSET;
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
	up->hash = fx_fnv1a(up->hash, data, len);
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
	if (cmd == CMD_ADOPT)
		fx->adopt_err = http_server_adopt(fx->server, fx->adopt_fd);
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
	fx->handler.base.on_request = fx_on_request;
	fx->handler.base.on_complete = on_complete;
	if (upload_cap != 0) {
		fx->upload_cap = upload_cap;
		fx->handler.base.on_request = stream_on_request;
		fx->handler.base.on_headers = fx_stream_on_headers;
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

struct fixture *fx_start_at(const http_limits *limits, const char *addr, int *err)
{
	return fx_start_with(limits, addr, 0, err);
}

struct fixture *fx_start_stream(const http_limits *limits, uint64_t upload_cap)
{
	int err;
	struct fixture *fx = fx_start_with(limits, "127.0.0.1:0", upload_cap, &err);

	assert_int_equal(err, 0);
	return fx;
}

struct fixture *fx_start(const http_limits *limits)
{
	int err;
	struct fixture *fx = fx_start_at(limits, "127.0.0.1:0", &err);

	assert_int_equal(err, 0);
	return fx;
}

void fx_command(struct fixture *fx, enum fx_cmd cmd)
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

int fx_adopt(struct fixture *fx, int fd)
{
	int err;

	fx->adopt_fd = fd;
	fx_command(fx, CMD_ADOPT);
	uv_mutex_lock(&fx->mu);
	err = fx->adopt_err;
	uv_mutex_unlock(&fx->mu);
	return err;
}

http_stats fx_stats(struct fixture *fx)
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
void fx_join(struct fixture *fx)
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
http_stats fx_stop(struct fixture *fx, uint64_t grace_ms)
{
	http_stats s;

	fx->grace_ms = grace_ms;
	fx_command(fx, CMD_STOP);
	s = fx->stats;
	fx_join(fx);
	return s;
}

uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Polls an atomic counter until it reaches want or WAIT_MS pass. */
int wait_for(atomic_int *counter, int want)
{
	uint64_t deadline = now_ms() + WAIT_MS;

	while (atomic_load(counter) < want && now_ms() < deadline)
		usleep(5000);
	return atomic_load(counter);
}

/* ---- the client (main thread) ---- */

struct client *client_open_opts(int port, int rcvbuf)
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

struct client *client_from_fd(int fd)
{
	struct client *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->fd = fd;
	return c;
}

struct client *client_open(int port)
{
	return client_open_opts(port, 0);
}

void client_free(struct client *c)
{
	close(c->fd);
	free(c);
}

/* Closes with RST instead of FIN: the client vanishes. */
void client_abort(struct client *c)
{
	struct linger lg = { 1, 0 };

	setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	client_free(c);
}

int client_send_len(struct client *c, const char *data, size_t len)
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

void client_send(struct client *c, const char *data)
{
	assert_int_equal(client_send_len(c, data, strlen(data)), 0);
}

/* One read into the buffer: >0 bytes, 0 at EOF, -1 on error (reset),
 * -2 on timeout. A full buffer is discarded first. */
ssize_t client_fill(struct client *c, int timeout_ms)
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

const char *resp_header(const struct response *r, const char *name, char *out, size_t size)
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

int resp_header_count(const struct response *r, const char *name)
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
int read_response(struct client *c, struct response *r, int with_body)
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

/* How the server ended the connection within timeout_ms: CLOSED_FIN,
 * CLOSED_RESET, or OPEN (still open). Bytes that arrive meanwhile are kept. */
int client_close_kind(struct client *c, int timeout_ms)
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
int client_closed(struct client *c, int timeout_ms)
{
	return client_close_kind(c, timeout_ms) != OPEN;
}

void expect_status_then_close(int port, const char *request, int status)
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

void get_hello(struct client *c)
{
	struct response r;

	client_send(c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body_len, 12);
	assert_memory_equal(r.body, "hello world\n", 12);
}


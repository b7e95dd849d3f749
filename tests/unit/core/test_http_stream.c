/* test_http_stream: the HTTP core's streamed request bodies (on_headers,
 * on_body, on_abort): exact delivery however reads split them, rejection by
 * length and mid-body, Expect: 100-continue, disconnects, idle timeout,
 * pipelining, pause and resume, and the server stopping mid-upload. The
 * server and client are the shared fixture, core/http_fixture.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/http_fixture.h"

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
	         (unsigned long long)fx_fnv1a(FX_FNV_OFFSET, data, len));
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
	struct test_handler handler = { .base = { .on_request = fx_on_request,
		                                  .on_headers = fx_stream_on_headers } };
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
	return cmocka_run_group_tests_name("http_stream", tests, NULL, NULL);
}

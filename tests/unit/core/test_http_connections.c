/* test_http_connections: the HTTP core's connections: keep-alive, pipelining
 * in order (also past what it buffers), HTTP/1.0 and Connection: close, and
 * the connection limit. The server and client are the shared fixture,
 * core/http_fixture.h. */
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pipelined_in_order),
		cmocka_unit_test(test_pipeline_flood),
		cmocka_unit_test(test_http10_closes),
		cmocka_unit_test(test_connection_close_closes),
		cmocka_unit_test(test_max_connections_refused),
	};

	signal(SIGPIPE, SIG_IGN);
	alarm(600); /* a hung test fails instead of blocking the build */
	return cmocka_run_group_tests_name("http_connections", tests, NULL, NULL);
}

/* test_http_server: the HTTP core's server: what on_complete reports (also
 * for aborted responses and at shutdown), stats read from another thread,
 * start and listen errors, IPv6, and connections handed over with
 * http_server_adopt (a socketpair, an accepted TCP socket). The server and client are the shared
 * fixture, core/http_fixture.h. */
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
	uint64_t timeouts_before;

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

	/* A stalled reader is cut by the write timeout. Counted from here: on a
	 * starved machine the reset above can itself outlast the 200 ms. */
	timeouts_before = fx_stats(fx).timeouts_write;
	c = client_open_opts(fx->port, 4096);
	client_send(c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(wait_for(&fx->completes, 3), 3);
	done = last_completion(fx, path, sizeof(path));
	assert_int_equal(done.aborted, 1);
	assert_true(done.bytes_sent < BIG_BODY);
	assert_true(done.duration_ns >= ms_ns(190));
	s = fx_stats(fx);
	assert_int_equal(s.timeouts_write - timeouts_before, 1);
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
	struct test_handler handler = { .base = { .on_request = fx_on_request } };
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
	struct test_handler handler = { .base = { .on_request = fx_on_request } };
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

/* A socketpair's end is served like an accepted connection: pipelined
 * requests, keep-alive, the close when the client leaves. */
static void test_adopt_socketpair(void **state)
{
	struct fixture *fx = fx_start(NULL);
	struct client *c;
	struct response r;
	http_stats s;
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(fx_adopt(fx, sv[0]), 0);
	c = client_from_fd(sv[1]);
	get_hello(c);
	client_send(c, "GET /echo/1 HTTP/1.1\r\nHost: t\r\n\r\nGET /echo/2 HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_memory_equal(r.body, "/echo/1", 7);
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_memory_equal(r.body, "/echo/2", 7);
	/* The core's own rules hold there too. */
	client_send(c, "GET /echo/3 HTTP/1.1\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 400);
	assert_int_equal(client_close_kind(c, WAIT_MS), CLOSED_FIN);
	client_free(c);

	s = fx_stop(fx, 1000);
	assert_int_equal(s.connections_accepted, 1);
	assert_int_equal(s.requests, 3);
	assert_int_equal(s.bad_requests, 1);
	assert_int_equal(atomic_load(&fx->requests), 3);
	free(fx);
}

/* An accepted TCP socket goes through libuv's TCP handle; a socket that is
 * not a stream, or no socket, is refused and left to the caller. */
static void test_adopt_tcp_and_errors(void **state)
{
	struct fixture *fx = fx_start(NULL);
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	struct client *c;
	int lfd, cfd, sfd, udp, p[2];

	(void)state;
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(lfd >= 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(cfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	sfd = accept(lfd, NULL, NULL);
	assert_true(sfd >= 0);
	close(lfd);
	assert_int_equal(fx_adopt(fx, sfd), 0);
	c = client_from_fd(cfd);
	get_hello(c);
	client_free(c);

	udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_int_equal(fx_adopt(fx, udp), UV_EINVAL);
	assert_int_equal(close(udp), 0); /* still ours */
	assert_int_equal(pipe(p), 0);
	assert_int_equal(fx_adopt(fx, p[0]), -ENOTSOCK);
	assert_int_equal(close(p[0]), 0);
	close(p[1]);

	assert_int_equal(fx_stop(fx, 1000).connections_accepted, 1);
	free(fx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_start_errors),
		cmocka_unit_test(test_listen_check),
		cmocka_unit_test(test_ipv6),
		cmocka_unit_test(test_on_complete_reports),
		cmocka_unit_test(test_on_complete_aborted),
		cmocka_unit_test(test_on_complete_at_shutdown),
		cmocka_unit_test(test_stats_from_another_thread),
		cmocka_unit_test(test_adopt_socketpair),
		cmocka_unit_test(test_adopt_tcp_and_errors),
	};

	signal(SIGPIPE, SIG_IGN);
	alarm(600); /* a hung test fails instead of blocking the build */
	return cmocka_run_group_tests_name("http_server", tests, NULL, NULL);
}

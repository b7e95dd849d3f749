/* test_http_timeouts: the HTTP core's deadlines and writes: header
 * (slowloris), idle and write timeouts, a client that vanishes mid-response,
 * and the graceful stop with its grace period. The server and client are the
 * shared fixture, core/http_fixture.h. */
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_timeout_slowloris),
		cmocka_unit_test(test_idle_timeout),
		cmocka_unit_test(test_write_timeout),
		cmocka_unit_test(test_release_when_client_vanishes),
		cmocka_unit_test(test_stop_is_graceful),
		cmocka_unit_test(test_stop_grace_expires),
	};

	signal(SIGPIPE, SIG_IGN);
	alarm(600); /* a hung test fails instead of blocking the build */
	return cmocka_run_group_tests_name("http_timeouts", tests, NULL, NULL);
}

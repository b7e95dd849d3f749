/* test_http_requests: the HTTP core reads requests: the response to a GET
 * and a HEAD, request fields however reads split them, malformed and
 * smuggling requests (400), the strict parse (line endings, bytes and '#'
 * in the target, Host, the version), and the size limits (413, 414, 431). The server
 * and client are the shared fixture, core/http_fixture.h. */
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
	req = padded_request("GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Pad: ", 'a', 1000);
	expect_status_then_close(fx->port, req, 200);
	free(req);
	req = padded_request("GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Pad: ", 'a', 1001);
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
	snprintf(line + 5 + 4095, sizeof(line) - 5 - 4095, " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
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

/* Runs each request on its own connection and expects status then a
 * close; the handler must see none of them. */
static void expect_all(const char *const *reqs, size_t n, int status, uint64_t body_limit)
{
	http_limits limits = { .max_body = body_limit };
	struct fixture *fx = fx_start(&limits);
	http_stats s;

	for (size_t i = 0; i < n; i++) {
		print_message("  %d for request %zu\n", status, i);
		expect_status_then_close(fx->port, reqs[i], status);
	}
	s = fx_stop(fx, 1000);
	assert_int_equal(s.bad_requests, n);
	assert_int_equal(s.requests, 0);
	assert_int_equal(atomic_load(&fx->requests), 0);
	free(fx);
}

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* "\r\n\rX" once ended the head (llhttp built lenient) and the request
 * after it ran; a bare LF, a lone CR or an obs-fold must not frame a
 * request either. Each is 400, and the request hidden after it never
 * reaches the handler. */
static void test_line_endings_400(void **state)
{
	static const char *const bad[] = {
		"GET /echo/a HTTP/1.1\r\nHost: t\r\n\rXGET /echo/smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: t\r\n\r\rGET /echo/smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /echo/a HTTP/1.1\nHost: t\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: t\r\n\nGET /echo/smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: t\n\n",
		"GET /echo/a HTTP/1.1\r\nHost: t\rX: y\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: t\r\nX: a\r\n\tb\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\n Host: t\r\n\r\n",
		/* Chunked framing: a bare LF after the data or ending the trailers. */
		"POST /post HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n",
		"POST /post HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\n"
		"GET /echo/smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
		"POST /post HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\r\n",
		"POST /post HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3;x\ry\r\nabc\r\n0\r\n\r\n",
		/* HTTP/1.0 with Transfer-Encoding has faulty framing (RFC 9112 6.1). */
		"POST /post HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	};

	(void)state;
	expect_all(bad, N_OF(bad), 400, 100);
}

/* What the strict parse still accepts: leading empty lines, and each line
 * ending split across reads. */
static void test_line_endings_accepted(void **state)
{
	http_limits limits = { .max_body = 100 };
	struct fixture *fx = fx_start(&limits);
	struct client *c = client_open(fx->port);
	struct response r;
	static const char *const pieces[] = {
		"\r\nGET /echo/a HTTP/1.1\r", "\nHost: t\r\nX: y\r\n", "\r", "\n",
		"POST /post HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n", "\r",
		"\n",
		"POST /post HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: y\r\n\r\n",
	};

	(void)state;
	for (size_t i = 0; i < N_OF(pieces); i++) {
		client_send(c, pieces[i]);
		usleep(2000);
	}
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 200);
	assert_memory_equal(r.body, "/echo/a", 7);
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 201); /* with its body */
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 200); /* empty, with a trailer */
	client_free(c);
	assert_int_equal(fx_stop(fx, 1000).bad_requests, 0);
	free(fx);

	/* An obs-fold split across reads is still one. */
	fx = fx_start(NULL);
	c = client_open(fx->port);
	client_send(c, "GET /echo/a HTTP/1.1\r\nHost: t\r\nX: a\r\n");
	usleep(2000);
	client_send(c, " b\r\n\r\n");
	assert_int_equal(read_response(c, &r, 1), 0);
	assert_int_equal(r.status, 400);
	client_free(c);
	assert_int_equal(fx_stop(fx, 1000).bad_requests, 1);
	assert_int_equal(atomic_load(&fx->requests), 0);
	free(fx);
}

/* Only printable ASCII, and no '#', in the request-target: a TAB or form
 * feed splits it differently in other parsers, and a fragment cut by the
 * origin but kept by an edge gives every request its own cache key. */
static void test_target_bytes_400(void **state)
{
	static const char *const bad[] = {
		"GET /echo/a\tb HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /echo/a\fb HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /echo/a\x80 HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /echo/\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /echo/\xff HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /echo/a\x7f HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /echo/a\x01 HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /echo/a?q=\t HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /echo/a?q=\xe2\x82\xac HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /echo/a#b HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /metrics#x HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /echo/a?q#b HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET # HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /echo/a\x0b HTTP/1.1\r\nHost: t\r\n\r\n",
	};

	(void)state;
	expect_all(bad, N_OF(bad), 400, 0);
}

/* RFC 9112 3.2: HTTP/1.1 needs exactly one valid Host; HTTP/1.0 may go
 * without, but never with two. */
static void test_host_rules(void **state)
{
	static const char *const bad[] = {
		"GET /echo/a HTTP/1.1\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nX-Host: t\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
		"GET /echo/a HTTP/1.0\r\nHost: a\r\nHOST: a\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: a b\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: a/b\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: u@a\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: a:80x\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: [zz]:80\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: [::1\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: \xc3\xa9t\xc3\xa9\r\n\r\n",
		/* Last: sub-delims are reg-name characters, so it is answered. */
		"GET /echo/a HTTP/1.1\r\nHost: a,b\r\nConnection: close\r\n\r\n",
	};
	static const char *const good[] = {
		"GET /echo/a HTTP/1.0\r\n\r\n",
		"GET /echo/a HTTP/1.0\r\nHost: t\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: example.com:8080\r\nConnection: close\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nhost: 127.0.0.1\r\nConnection: close\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
		"GET /echo/a HTTP/1.1\r\nHost: xn--d1acj3b.%41:\r\nConnection: close\r\n\r\n",
	};
	struct fixture *fx;

	(void)state;
	expect_all(bad, N_OF(bad) - 1, 400, 0);
	fx = fx_start(NULL);
	for (size_t i = 0; i < N_OF(good); i++) {
		print_message("  200 for request %zu\n", i);
		expect_status_then_close(fx->port, good[i], 200);
	}
	expect_status_then_close(fx->port, bad[N_OF(bad) - 1], 200);
	assert_int_equal(fx_stop(fx, 1000).bad_requests, 0);
	free(fx);
}

/* llhttp parses HTTP/0.9 and HTTP/2.0 request lines: 505. */
static void test_version_505(void **state)
{
	static const char *const bad[] = {
		"GET /echo/a HTTP/2.0\r\nHost: t\r\n\r\n",
		"GET /echo/a HTTP/0.9\r\n\r\n",
	};

	(void)state;
	expect_all(bad, N_OF(bad), 505, 0);
}

/* The streaming handler (the publisher's API) is held to the same rules:
 * on_headers never sees the request, nor the one hidden after it. */
static void test_stream_handler_strict(void **state)
{
	static const char *const bad[] = {
		"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\rX"
		"POST /upload/smuggled HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
		"POST /upload#x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
		"POST /upload HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
		"POST /upload HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 0\r\n\r\n",
		"POST /upload\t HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
	};
	struct fixture *fx = fx_start_stream(NULL, 1 << 20);
	http_stats s;

	(void)state;
	for (size_t i = 0; i < N_OF(bad); i++)
		expect_status_then_close(fx->port, bad[i], 400);
	s = fx_stop(fx, 1000);
	assert_int_equal(s.bad_requests, N_OF(bad));
	assert_int_equal(atomic_load(&fx->up_heads), 0);
	assert_int_equal(atomic_load(&fx->up_allocs), 0);
	free(fx);
}

/* Every rejection is logged with its reason, but a client sending garbage
 * gets one line per 10 s, not one per request. */
static void test_bad_requests_logged_once_per_interval(void **state)
{
	char path[] = "/tmp/test_http_log.XXXXXX";
	int log_fd = mkstemp(path);
	int saved = dup(STDERR_FILENO);
	struct fixture *fx;
	char text[4096];
	ssize_t n;
	const char *first, *second;

	(void)state;
	assert_true(log_fd >= 0 && saved >= 0);
	unlink(path);
	fflush(stderr);
	assert_int_equal(dup2(log_fd, STDERR_FILENO), STDERR_FILENO);
	fx = fx_start(NULL);
	expect_status_then_close(fx->port, "GET /echo/a#b HTTP/1.1\r\nHost: t\r\n\r\n", 400);
	expect_status_then_close(fx->port, "GET /echo/a HTTP/1.1\r\n\r\n", 400);
	expect_status_then_close(fx->port, "GET /echo/a HTTP/1.1\r\nHost: t\n\n", 400);
	assert_int_equal(fx_stop(fx, 1000).bad_requests, 3);
	free(fx);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	n = pread(log_fd, text, sizeof(text) - 1, 0);
	close(log_fd);
	assert_true(n > 0);
	text[n] = '\0';
	first = strstr(text, "http: bad request answered 400: '#' in the request-target");
	assert_non_null(first);
	second = strstr(first + strlen("http: bad request answered"), "bad request answered");
	if (second != NULL)
		print_message("%s", text);
	assert_null(second);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_body),
		cmocka_unit_test(test_head_has_length_no_body),
		cmocka_unit_test(test_malformed_400),
		cmocka_unit_test(test_smuggling_400),
		cmocka_unit_test(test_header_limits_431),
		cmocka_unit_test(test_uri_too_long_414),
		cmocka_unit_test(test_body_limits),
		cmocka_unit_test(test_request_fields_split_reads),
		cmocka_unit_test(test_line_endings_400),
		cmocka_unit_test(test_line_endings_accepted),
		cmocka_unit_test(test_target_bytes_400),
		cmocka_unit_test(test_host_rules),
		cmocka_unit_test(test_version_505),
		cmocka_unit_test(test_stream_handler_strict),
		cmocka_unit_test(test_bad_requests_logged_once_per_interval),
		cmocka_unit_test(test_status_text),
	};

	signal(SIGPIPE, SIG_IGN);
	alarm(600); /* a hung test fails instead of blocking the build */
	return cmocka_run_group_tests_name("http_requests", tests, NULL, NULL);
}

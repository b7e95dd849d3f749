/* net: outbound HTTP for the drivers: libcurl's multi interface driven by a
 * libuv loop (curl_multi_socket_action with uv_poll and one uv_timer), so
 * hundreds of requests run concurrently on one thread. Connections are
 * reused (one multi handle, shared connection cache); every request has a
 * timeout; TLS peers are verified (libcurl's defaults, never turned off).
 * The only module that includes curl.h: CURLcode never leaves it.
 *
 * Threading: everything on the loop's thread. */
#ifndef SAYIN_NET_H
#define SAYIN_NET_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct net net;
typedef struct net_headers net_headers;

typedef struct net_request {
	const char *method;          /* "GET", "POST", "PUT", "DELETE", "PURGE", ... */
	const char *url;
	const char *const *headers;  /* "Name: value" strings, NULL-terminated; may be NULL */
	const void *body;            /* copied; NULL for none */
	size_t body_len;
	uint64_t timeout_ms;         /* whole request; 0 = 10000 */
	/* AWS Signature Version 4 by libcurl (CURLOPT_AWS_SIGV4), e.g.
	 * "aws:amz:us-east-1:s3", with userpwd "ACCESS_KEY:SECRET_KEY". */
	const char *aws_sigv4;
	const char *userpwd;
	int no_body_wanted;          /* HEAD-like: do not keep the response body */
} net_request;

typedef struct net_response {
	long status;                 /* HTTP status; 0 when the transport failed */
	const char *error;           /* NULL, or why the transport failed */
	const char *body;            /* NUL-terminated; valid during the callback */
	size_t body_len;
	double seconds;              /* total time */
} net_response;

/* Called once per request, on the loop thread; h holds the final
 * response's headers (valid during the call). */
typedef void (*net_done_fn)(void *arg, const net_response *res, const net_headers *h);

/* Where a job's time went, for its log line: seconds is the wall-clock
 * time during which at least one request sent on its behalf was in flight
 * (concurrent requests count once), so the rest of the job's time is its
 * driver's (or the loop's). Zero-initialise it. */
typedef struct net_usage {
	double seconds;
	unsigned requests;    /* finished */
	long last_status;     /* the last response's HTTP status; 0: transport failure */
	unsigned in_flight;   /* net's own bookkeeping */
	uint64_t busy_since_ns;
} net_usage;

/* Accounts the requests sent from now on to u (NULL: to nobody), and
 * those sent from their done callbacks too (a driver's follow-up request
 * inherits its job). Returns the previous usage, to put back once the
 * job's driver call returns. */
net_usage *net_account(net *n, net_usage *u);
/* Requests still in flight for u are accounted to nobody: call it before
 * freeing u. O(requests in flight). */
void net_usage_forget(net *n, const net_usage *u);

/* "in 812.3 ms (network 790.1 ms over 2 requests, HTTP 200; driver 22.2 ms)":
 * where one job's time went since start_ms (clock_mono_ms_f), for its one
 * log line; the rest of the time is the driver's. */
void net_usage_describe(const net_usage *u, double start_ms, char *out, size_t size);

/* A response header's value (the last if repeated, trimmed), or NULL. For
 * drivers that read Retry-After or rate-limit headers. */
const char *net_header(const net_headers *h, const char *name);

/* Returns 0 and *out, or -ENOMEM / -EIO (libcurl failed). max_per_host caps
 * concurrent connections to one host (0 = 16). */
int net_create(uv_loop_t *loop, unsigned max_per_host, net **out);

/* Starts a request. Returns 0 (done will be called, later, never from
 * inside net_send), or -ENOMEM / -EINVAL (done is not called). */
int net_send(net *n, const net_request *req, net_done_fn done, void *arg);

/* Aborts what is in flight (their callbacks run with error "cancelled"),
 * closes the handles and frees n once they are closed, then calls
 * on_closed(arg). */
void net_close(net *n, void (*on_closed)(void *arg), void *arg);

/* "libcurl X\n", as the linked libcurl reports it, into out (for
 * --version). Returns out. */
const char *net_library_versions(char *out, size_t size);

#endif

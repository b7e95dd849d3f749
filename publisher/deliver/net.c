/* net: outbound HTTP for the drivers: libcurl multi driven by a libuv loop. */
/* The multi-uv pattern from curl's examples: uv_poll per socket, one
 * uv_timer for curl's timeouts. */
#include "deliver/net.h"

#include "core/buf.h"
#include "core/clock.h"
#include "core/log.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BODY_MAX (1u << 20)    /* response bytes kept: drivers read small JSON */
#define HEADERS_MAX 16384

struct net {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer;
	struct transfer *transfers;
	int closing;
	unsigned open_handles; /* uv handles not yet closed (the timer, polls) */
	/* Socket watchers made ahead, in net_send, where running out of memory
	 * is a clean -ENOMEM: libcurl's socket callback cannot fail (a -1 makes
	 * libcurl 7.88 abandon every transfer; one then hung, the next crashed
	 * inside libcurl). A closed watcher comes back here. */
	struct sock *spare;
	unsigned n_spare, in_flight;
	net_usage *usage; /* what net_send accounts new requests to */
	void (*on_closed)(void *);
	void *closed_arg;
};

struct net_headers {
	char buf[HEADERS_MAX];
	size_t len;
	char value[1024];
};

struct transfer {
	net *n;
	struct transfer *prev, *next; /* in flight, for net_close */
	CURL *easy;
	struct curl_slist *headers;
	net_done_fn done;
	void *arg;
	net_usage *usage;
	buf body;
	int keep_body;
	struct net_headers h;
	char errbuf[CURL_ERROR_SIZE];
};

struct sock {
	uv_poll_t poll;
	net *n;
	curl_socket_t fd;
	struct sock *next_spare;
};

/* Watchers kept ready per transfer in flight: a connection's socket, and
 * a second for happy eyeballs or the resolver. */
#define SPARE_PER_TRANSFER 2

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

const char *net_header(const net_headers *hc, const char *name)
{
	struct net_headers *h = (struct net_headers *)hc;
	size_t nlen = strlen(name);
	const char *found = NULL, *p = h->buf, *end = h->buf + h->len;
	size_t flen = 0;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		size_t len = eol ? (size_t)(eol - p) : (size_t)(end - p);
		if (len > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
			found = p + nlen + 1;
			flen = len - nlen - 1;
		}
		p += len + 1;
	}
	if (found == NULL)
		return NULL;
	while (flen > 0 && (*found == ' ' || *found == '\t')) {
		found++;
		flen--;
	}
	while (flen > 0 && (found[flen - 1] == '\r' || found[flen - 1] == ' '))
		flen--;
	if (flen >= sizeof(h->value))
		flen = sizeof(h->value) - 1;
	memcpy(h->value, found, flen);
	h->value[flen] = '\0';
	return h->value;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userp)
{
	struct transfer *t = userp;
	size_t len = size * nmemb;
	/* A new status line (after 100 Continue, or a redirect): start over. */
	if (len >= 5 && strncmp(data, "HTTP/", 5) == 0)
		t->h.len = 0;
	if (t->h.len + len < sizeof(t->h.buf)) {
		memcpy(t->h.buf + t->h.len, data, len);
		t->h.len += len;
	}
	return len;
}

static size_t on_data(char *data, size_t size, size_t nmemb, void *userp)
{
	struct transfer *t = userp;
	size_t len = size * nmemb;
	if (!t->keep_body || t->body.len + len > BODY_MAX)
		return len; /* dropped, but the transfer goes on */
	if (buf_append(&t->body, data, len) != 0)
		return 0; /* out of memory: aborts the transfer (CURLE_WRITE_ERROR) */
	return len;
}

static void transfer_free(struct transfer *t)
{
	curl_slist_free_all(t->headers);
	curl_easy_cleanup(t->easy);
	buf_free(&t->body);
	free(t);
}

static void finish(struct transfer *t, CURLcode code)
{
	net_response res = { 0 };
	long status = 0;
	double secs = 0;

	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME, &secs);
	res.status = code == CURLE_OK ? status : 0;
	res.error = code == CURLE_OK ? NULL : (t->errbuf[0] ? t->errbuf : curl_easy_strerror(code));
	res.body = t->body.data ? t->body.data : "";
	res.body_len = t->body.len;
	res.seconds = secs;
	if (t->prev != NULL)
		t->prev->next = t->next;
	else
		t->n->transfers = t->next;
	if (t->next != NULL)
		t->next->prev = t->prev;
	t->n->in_flight--;
	if (t->usage != NULL) {
		t->usage->requests++;
		t->usage->last_status = res.status;
		if (--t->usage->in_flight == 0)
			t->usage->seconds += (double)(uv_hrtime() - t->usage->busy_since_ns) / 1e9;
	}
	{
		/* Requests the callback sends belong to the same job. */
		net *n = t->n;
		net_usage *before = n->usage;
		n->usage = t->usage;
		t->done(t->arg, &res, &t->h);
		n->usage = before;
	}
	transfer_free(t);
}

static void check_done(net *n)
{
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(n->multi, &left)) != NULL) {
		if (msg->msg == CURLMSG_DONE) {
			struct transfer *t = NULL;
			CURL *easy = msg->easy_handle;
			CURLcode code = msg->data.result;
			curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
			curl_multi_remove_handle(n->multi, easy);
			finish(t, code);
		}
	}
}

static void on_handle_closed(uv_handle_t *h)
{
	net *n = h->data;
	if (h->type == UV_POLL) {
		struct sock *s = (struct sock *)h;
		s->next_spare = n->spare;
		n->spare = s;
		n->n_spare++;
	}
	if (--n->open_handles == 0 && n->closing) {
		void (*cb)(void *) = n->on_closed;
		void *arg = n->closed_arg;
		while (n->spare != NULL) {
			struct sock *s = n->spare;
			n->spare = s->next_spare;
			free(s);
		}
		curl_multi_cleanup(n->multi);
		free(n);
		if (cb != NULL)
			cb(arg);
	}
}

static void on_poll(uv_poll_t *p, int status, int events)
{
	struct sock *s = (struct sock *)p;
	net *n = s->n;
	int flags = 0, running;

	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	curl_multi_socket_action(n->multi, s->fd, flags, &running);
	check_done(n);
}

static int on_socket(CURL *easy, curl_socket_t fd, int action, void *userp, void *socketp)
{
	net *n = userp;
	struct sock *s = socketp;
	(void)easy;

	if (action == CURL_POLL_REMOVE) {
		if (s != NULL) {
			uv_poll_stop(&s->poll);
			curl_multi_assign(n->multi, fd, NULL);
			uv_close((uv_handle_t *)&s->poll, on_handle_closed);
		}
		return 0;
	}
	if (s == NULL) {
		s = n->spare;
		if (s != NULL) {
			n->spare = s->next_spare;
			n->n_spare--;
			memset(s, 0, sizeof(*s));
		} else {
			s = calloc(1, sizeof(*s));
		}
		if (s == NULL || uv_poll_init_socket(n->loop, &s->poll, fd) != 0) {
			free(s);
			return -1;
		}
		s->n = n;
		s->fd = fd;
		s->poll.data = n;
		n->open_handles++;
		curl_multi_assign(n->multi, fd, s);
	}
	uv_poll_start(&s->poll,
	              (action == CURL_POLL_IN ? UV_READABLE : 0) |
	                  (action == CURL_POLL_OUT ? UV_WRITABLE : 0) |
	                  (action == CURL_POLL_INOUT ? UV_READABLE | UV_WRITABLE : 0),
	              on_poll);
	return 0;
}

static void on_timer(uv_timer_t *timer)
{
	net *n = timer->data;
	int running;
	curl_multi_socket_action(n->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(n);
}

static int on_timeout(CURLM *multi, long timeout_ms, void *userp)
{
	net *n = userp;
	(void)multi;
	if (timeout_ms < 0)
		uv_timer_stop(&n->timer);
	else /* 0 means "now": from the loop, never inside the caller's call */
		uv_timer_start(&n->timer, on_timer, (uint64_t)timeout_ms, 0);
	return 0;
}

int net_create(uv_loop_t *loop, unsigned max_per_host, net **out)
{
	net *n;

	pthread_once(&global_once, global_init);
	if (global_rc != CURLE_OK) {
		log_error("net: curl_global_init: %s", curl_easy_strerror(global_rc));
		return -EIO;
	}
	n = calloc(1, sizeof(*n));
	if (n == NULL)
		return -ENOMEM;
	n->loop = loop;
	n->multi = curl_multi_init();
	if (n->multi == NULL) {
		free(n);
		return -ENOMEM;
	}
	uv_timer_init(loop, &n->timer);
	n->timer.data = n;
	n->open_handles = 1;
	curl_multi_setopt(n->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(n->multi, CURLMOPT_SOCKETDATA, n);
	curl_multi_setopt(n->multi, CURLMOPT_TIMERFUNCTION, on_timeout);
	curl_multi_setopt(n->multi, CURLMOPT_TIMERDATA, n);
	curl_multi_setopt(n->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
	                  (long)(max_per_host ? max_per_host : 16));
	*out = n;
	return 0;
}

net_usage *net_account(net *n, net_usage *u)
{
	net_usage *before = n->usage;
	n->usage = u;
	return before;
}

void net_usage_forget(net *n, const net_usage *u)
{
	for (struct transfer *t = n->transfers; t != NULL; t = t->next) {
		if (t->usage == u)
			t->usage = NULL;
	}
	if (n->usage == u)
		n->usage = NULL;
}

int net_send(net *n, const net_request *req, net_done_fn done, void *arg)
{
	struct transfer *t;
	CURL *e;

	if (n->closing || req->url == NULL || req->method == NULL)
		return -EINVAL;
	while (n->n_spare < SPARE_PER_TRANSFER * (n->in_flight + 1)) {
		struct sock *s = calloc(1, sizeof(*s));
		if (s == NULL)
			return -ENOMEM;
		s->next_spare = n->spare;
		n->spare = s;
		n->n_spare++;
	}
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	e = t->easy = curl_easy_init();
	if (e == NULL) {
		free(t);
		return -ENOMEM;
	}
	t->n = n;
	t->done = done;
	t->arg = arg;
	t->keep_body = !req->no_body_wanted;
	for (const char *const *h = req->headers; h != NULL && *h != NULL; h++) {
		struct curl_slist *l = curl_slist_append(t->headers, *h);
		if (l == NULL)
			goto nomem;
		t->headers = l;
	}
	/* No "Expect: 100-continue" round trip for our small bodies. Not on
	 * signed requests: libcurl's SigV4 (7.88) lists this removal in
	 * SignedHeaders as an empty "expect" header that is never sent, so
	 * the signature cannot be verified from the headers that arrive.
	 * S3 handles 100-continue (bodies over 1 MiB). */
	if (req->aws_sigv4 == NULL) {
		struct curl_slist *l = curl_slist_append(t->headers, "Expect:");
		if (l == NULL)
			goto nomem;
		t->headers = l;
	}
	curl_easy_setopt(e, CURLOPT_URL, req->url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, t);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(req->timeout_ms ? req->timeout_ms : 10000));
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_USERAGENT, "sayin-publisher");
	if (strcmp(req->method, "HEAD") == 0) {
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	} else if (strcmp(req->method, "GET") != 0 || req->body != NULL) {
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
	}
	if (req->body != NULL) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
		curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body);
	}
	if (req->aws_sigv4 != NULL) {
		curl_easy_setopt(e, CURLOPT_AWS_SIGV4, req->aws_sigv4);
		curl_easy_setopt(e, CURLOPT_USERPWD, req->userpwd);
	}
	if (curl_multi_add_handle(n->multi, e) != CURLM_OK) {
		transfer_free(t);
		return -ENOMEM;
	}
	t->next = n->transfers;
	if (t->next != NULL)
		t->next->prev = t;
	n->transfers = t;
	n->in_flight++;
	t->usage = n->usage;
	if (t->usage != NULL && t->usage->in_flight++ == 0)
		t->usage->busy_since_ns = uv_hrtime();
	return 0;
nomem:
	transfer_free(t);
	return -ENOMEM;
}

void net_close(net *n, void (*on_closed)(void *arg), void *arg)
{
	n->closing = 1;
	n->on_closed = on_closed;
	n->closed_arg = arg;
	/* Cancel what is in flight: each transfer's callback reports it. */
	while (n->transfers != NULL) {
		struct transfer *t = n->transfers;
		curl_multi_remove_handle(n->multi, t->easy);
		snprintf(t->errbuf, sizeof(t->errbuf), "cancelled");
		finish(t, CURLE_ABORTED_BY_CALLBACK);
	}
	uv_timer_stop(&n->timer);
	uv_close((uv_handle_t *)&n->timer, on_handle_closed);
}

const char *net_library_versions(char *out, size_t size)
{
	snprintf(out, size, "libcurl %s\n", curl_version_info(CURLVERSION_NOW)->version);
	return out;
}

void net_usage_describe(const net_usage *u, double start_ms, char *out, size_t size)
{
	double total = clock_mono_ms_f() - start_ms;
	double network = u->seconds * 1e3;
	double driver = total > network ? total - network : 0;

	if (u->requests == 0)
		snprintf(out, size, "in %.1f ms (no request; driver %.1f ms)", total, driver);
	else
		snprintf(out, size, "in %.1f ms (network %.1f ms over %u request%s, HTTP %ld; "
		         "driver %.1f ms)", total, network, u->requests, u->requests == 1 ? "" : "s",
		         u->last_status, driver);
}

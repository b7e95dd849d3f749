/* test_social: the X and Facebook drivers driven for real through net
 * against a fake API server on loopback (libuv, in this process): each
 * request's OAuth signature or appsecret_proof is checked, and every
 * outcome is played: 201, duplicate, 401, 429 with a reset time, 500, a
 * hang past the timeout, token expired, rate limits and usage headers,
 * reconcile found and not found. Also the pure classifiers and the table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "deliver/social/facebook.h"
#include "deliver/net.h"
#include "deliver/social/oauth1.h"
#include "deliver/social/social.h"
#include "deliver/social/x.h"
#include "deliver/social/xtext.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define CONSUMER_KEY "ck-test"
#define CONSUMER_SECRET "cs-SECRET-x1"
#define ACCESS_TOKEN "42-at-test"
#define TOKEN_SECRET "ts-SECRET-x2"
#define PAGE_ID "1001"
#define PAGE_TOKEN "EAAB-page-TOKEN-SECRET"
#define APP_SECRET "app-SECRET-x3"
#define POST_URL "https://sayin.example.com/p/abcdef"
#define POST_TEXT "A voice message about cats & dogs, \"quoted\" + more"
#define MAX_REQ 8

struct req {
	char method[16];
	char target[1024];      /* path and query */
	char auth[1024];
	char content_type[128];
	char body[4096];
	int x_signature_ok;     /* the OAuth signature verifies with the test secrets */
	int fb_proof_ok;        /* access_token and appsecret_proof are right */
};

struct answer {
	int hang;               /* never answer */
	int status;
	char headers[512];      /* extra "Name: value\r\n" lines */
	char body[4096];
};

struct conn {
	uv_tcp_t tcp;
	struct fixture *fx;
	char buf[16384];
	size_t len;
	int answered;
	char out[8192]; /* the answer: uv_write needs it until written */
};

struct fixture {
	uv_loop_t loop;
	uv_tcp_t server;
	int port;
	char base[64];
	net *net;
	social_env env;
	social_account x_acct, fb_acct;
	/* behaviour, by request path */
	void (*handle)(struct fixture *fx, const struct req *r, struct answer *a);
	const char *timeline;   /* the answer to /2/users/{id}/tweets */
	const char *feed;       /* the answer to GET .../feed */
	struct answer post;     /* the answer to the POST */
	/* what happened */
	struct req reqs[MAX_REQ];
	int n;
	int done;
	social_result res;
	int net_closed;
};

/* ---- the fake server ---- */

static int hexv(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 :
	       c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes (and '+' as a space when form != 0) into out. */
static void pdecode(const char *s, size_t n, char *out, size_t outlen, int form)
{
	size_t o = 0;
	for (size_t i = 0; i < n && o + 1 < outlen; i++) {
		if (s[i] == '%' && i + 2 < n && hexv(s[i + 1]) >= 0 && hexv(s[i + 2]) >= 0) {
			out[o++] = (char)(hexv(s[i + 1]) * 16 + hexv(s[i + 2]));
			i += 2;
		} else {
			out[o++] = form && s[i] == '+' ? ' ' : s[i];
		}
	}
	out[o] = '\0';
}

/* The decoded value of name in a form string ("a=1&b=2"), or "" if absent. */
static void form_get(const char *form, const char *name, char *out, size_t outlen)
{
	size_t nl = strlen(name);
	const char *p = form;
	out[0] = '\0';
	while (p != NULL && *p) {
		const char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);
		if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
			pdecode(p + nl + 1, len - nl - 1, out, outlen, 1);
			return;
		}
		p = amp ? amp + 1 : NULL;
	}
}

/* A parameter of an "OAuth k=\"v\", ..." header, decoded. */
static void oauth_get(const char *auth, const char *name, char *out, size_t outlen)
{
	char key[64];
	const char *p, *end;
	snprintf(key, sizeof(key), "%s=\"", name);
	out[0] = '\0';
	p = strstr(auth, key);
	if (p == NULL)
		return;
	p += strlen(key);
	end = strchr(p, '"');
	if (end != NULL)
		pdecode(p, (size_t)(end - p), out, outlen, 0);
}

/* Recomputes the signature of r as X would, from the header's nonce and
 * timestamp and the test secrets. */
static int x_verify(const struct fixture *fx, const struct req *r)
{
	char url[1200], nonce[128], ts[32], sig[64], key[128], tok[128], ver[16];
	oauth1_signature s;
	int ok;

	if (strncmp(r->auth, "OAuth ", 6) != 0)
		return 0;
	oauth_get(r->auth, "oauth_nonce", nonce, sizeof(nonce));
	oauth_get(r->auth, "oauth_timestamp", ts, sizeof(ts));
	oauth_get(r->auth, "oauth_signature", sig, sizeof(sig));
	oauth_get(r->auth, "oauth_consumer_key", key, sizeof(key));
	oauth_get(r->auth, "oauth_token", tok, sizeof(tok));
	oauth_get(r->auth, "oauth_version", ver, sizeof(ver));
	if (strcmp(key, CONSUMER_KEY) != 0 || strcmp(tok, ACCESS_TOKEN) != 0 || nonce[0] == '\0')
		return 0;
	if (llabs(strtoll(ts, NULL, 10) - (long long)time(NULL)) > 300)
		return 0;
	snprintf(url, sizeof(url), "%s%s", fx->base, r->target);
	oauth1_request o = { .method = r->method, .url = url, .consumer_key = CONSUMER_KEY,
		             .consumer_secret = CONSUMER_SECRET, .token = ACCESS_TOKEN,
		             .token_secret = TOKEN_SECRET, .nonce = nonce,
		             .timestamp = strtoll(ts, NULL, 10), .with_version = ver[0] != '\0' };
	/* A form body would be signed; X's JSON body is not. */
	if (strstr(r->content_type, "x-www-form-urlencoded") != NULL) {
		o.form_body = r->body;
		o.form_body_len = strlen(r->body);
	}
	if (oauth1_sign(&o, &s) != 0)
		return 0;
	ok = strcmp(s.signature, sig) == 0;
	oauth1_signature_free(&s);
	return ok;
}

static int fb_verify(const struct req *r)
{
	const char *q = strchr(r->target, '?');
	const char *form = strcmp(r->method, "POST") == 0 ? r->body : q ? q + 1 : "";
	char token[256], proof[128], want[65];
	form_get(form, "access_token", token, sizeof(token));
	form_get(form, "appsecret_proof", proof, sizeof(proof));
	if (strcmp(token, PAGE_TOKEN) != 0)
		return 0;
	facebook_appsecret_proof(APP_SECRET, PAGE_TOKEN, want);
	return strcmp(proof, want) == 0;
}

static void on_closed_conn(uv_handle_t *h)
{
	free(h->data);
}

static void on_written(uv_write_t *w, int status)
{
	struct conn *c = w->data;
	(void)status;
	free(w);
	uv_close((uv_handle_t *)&c->tcp, on_closed_conn);
}

static void respond(struct conn *c, const struct answer *a)
{
	char *out = c->out;
	uv_write_t *w = malloc(sizeof(*w));
	int n = snprintf(out, sizeof(c->out),
	                 "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
	                 "Connection: close\r\n%s\r\n%s",
	                 a->status, strlen(a->body), a->headers, a->body);
	uv_buf_t b = uv_buf_init(out, (unsigned)n);
	w->data = c;
	c->answered = 1;
	uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written);
}

static void header_value(const char *head, const char *name, char *out, size_t outlen)
{
	const char *p = head;
	size_t nl = strlen(name);
	out[0] = '\0';
	while ((p = strstr(p, "\r\n")) != NULL) {
		p += 2;
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1, *end = strstr(v, "\r\n");
			while (*v == ' ')
				v++;
			snprintf(out, outlen, "%.*s", (int)(end - v), v);
			return;
		}
	}
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = s->data;
	struct fixture *fx = c->fx;
	char *eoh, cl[32];
	size_t head_len, body_len;
	struct req *r;
	struct answer a = { .status = 500, .body = "{}" };

	(void)buf;
	if (nread < 0) {
		if (!uv_is_closing((uv_handle_t *)s))
			uv_close((uv_handle_t *)s, on_closed_conn);
		return;
	}
	c->len += (size_t)nread;
	c->buf[c->len] = '\0';
	eoh = strstr(c->buf, "\r\n\r\n");
	if (eoh == NULL || c->answered)
		return;
	head_len = (size_t)(eoh - c->buf) + 4;
	header_value(c->buf, "Content-Length", cl, sizeof(cl));
	body_len = (size_t)strtoul(cl, NULL, 10);
	if (c->len < head_len + body_len)
		return;
	assert_true(fx->n < MAX_REQ);
	r = &fx->reqs[fx->n++];
	sscanf(c->buf, "%15s %1023s", r->method, r->target);
	header_value(c->buf, "Authorization", r->auth, sizeof(r->auth));
	header_value(c->buf, "Content-Type", r->content_type, sizeof(r->content_type));
	snprintf(r->body, sizeof(r->body), "%.*s", (int)body_len, c->buf + head_len);
	r->x_signature_ok = x_verify(fx, r);
	r->fb_proof_ok = fb_verify(r);
	fx->handle(fx, r, &a);
	if (a.hang) {
		c->answered = 1; /* the client gives up; its close ends this */
		return;
	}
	respond(c, &a);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;
	(void)suggested;
	*buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - 1 - c->len));
}

static void on_connection(uv_stream_t *server, int status)
{
	struct fixture *fx = server->data;
	struct conn *c = calloc(1, sizeof(*c));
	assert_int_equal(status, 0);
	c->fx = fx;
	uv_tcp_init(&fx->loop, &c->tcp);
	c->tcp.data = c;
	assert_int_equal(uv_accept(server, (uv_stream_t *)&c->tcp), 0);
	uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- the API the fake plays ---- */

static void handle_api(struct fixture *fx, const struct req *r, struct answer *a)
{
	a->status = 200;
	if (strcmp(r->method, "POST") == 0) {
		*a = fx->post;
	} else if (strcmp(r->target, "/2/users/me") == 0) {
		snprintf(a->body, sizeof(a->body), "{\"data\":{\"id\":\"42\",\"username\":\"ann\"}}");
	} else if (strncmp(r->target, "/2/users/", 9) == 0) {
		snprintf(a->body, sizeof(a->body), "%s", fx->timeline);
	} else if (strstr(r->target, "/feed?") != NULL) {
		snprintf(a->body, sizeof(a->body), "%s", fx->feed);
	} else {
		a->status = 404;
		snprintf(a->body, sizeof(a->body), "{\"title\":\"Not Found\"}");
	}
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	struct sockaddr_in addr;
	struct sockaddr_storage name;
	int len = sizeof(name);

	uv_loop_init(&fx->loop);
	uv_tcp_init(&fx->loop, &fx->server);
	fx->server.data = fx;
	uv_ip4_addr("127.0.0.1", 0, &addr);
	if (uv_tcp_bind(&fx->server, (const struct sockaddr *)&addr, 0) != 0 ||
	    uv_listen((uv_stream_t *)&fx->server, 64, on_connection) != 0)
		return -1;
	uv_tcp_getsockname(&fx->server, (struct sockaddr *)&name, &len);
	fx->port = ntohs(((struct sockaddr_in *)&name)->sin_port);
	snprintf(fx->base, sizeof(fx->base), "http://127.0.0.1:%d", fx->port);
	if (net_create(&fx->loop, 0, &fx->net) != 0)
		return -1;
	fx->env = (social_env){ .loop = &fx->loop, .net = fx->net, .x_api_url = fx->base,
		                .facebook_api_url = fx->base, .facebook_version = "v19.0",
		                .timeout_ms = 2000 };
	fx->x_acct = (social_account){ .network = "x", .handle = "ann", .enabled = 1,
		                       .consumer_key = CONSUMER_KEY,
		                       .consumer_secret = CONSUMER_SECRET,
		                       .access_token = ACCESS_TOKEN,
		                       .access_token_secret = TOKEN_SECRET };
	fx->fb_acct = (social_account){ .network = "facebook", .handle = "ann", .enabled = 1,
		                        .page_id = PAGE_ID, .page_access_token = PAGE_TOKEN,
		                        .app_secret = APP_SECRET };
	fx->handle = handle_api;
	fx->timeline = "{\"data\":[],\"meta\":{\"result_count\":0}}";
	fx->feed = "{\"data\":[]}";
	*state = fx;
	return 0;
}

static void on_net_closed(void *arg)
{
	((struct fixture *)arg)->net_closed = 1;
}

static void close_any(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, h->type == UV_TCP && h->data != NULL && h->data != arg ? on_closed_conn :
		                                                                   NULL);
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	net_close(fx->net, on_net_closed, fx);
	while (!fx->net_closed)
		uv_run(&fx->loop, UV_RUN_ONCE);
	uv_walk(&fx->loop, close_any, fx);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&fx->loop) != 0)
		return -1;
	free(fx);
	return 0;
}

static void on_done(void *arg, const social_result *res)
{
	struct fixture *fx = arg;
	fx->done++;
	fx->res = *res;
}

static void assert_no_secret(const char *s)
{
	assert_null(strstr(s, "SECRET"));
	assert_null(strstr(s, PAGE_TOKEN));
}

static social_result run(struct fixture *fx, const char *network, int reconcile)
{
	const social_driver *d = social_driver_find(network);
	social_post p = { .post_id = "abcdef", .text = POST_TEXT, .url = POST_URL };
	const social_account *acct = strcmp(network, "x") == 0 ? &fx->x_acct : &fx->fb_acct;

	assert_non_null(d);
	fx->done = 0;
	fx->n = 0;
	assert_int_equal(d->crosspost(&fx->env, acct, &p, reconcile, on_done, fx), 0);
	while (!fx->done)
		uv_run(&fx->loop, UV_RUN_ONCE);
	/* Exactly once: nothing more arrives. */
	uv_run(&fx->loop, UV_RUN_NOWAIT);
	assert_int_equal(fx->done, 1);
	assert_no_secret(fx->res.error);
	return fx->res;
}

/* run, then the outcome: a failure, permanent or not, with why (when not
 * NULL) in its text. */
static social_result run_failed(struct fixture *fx, const char *network, int reconcile,
                                int permanent, const char *why)
{
	social_result r = run(fx, network, reconcile);
	assert_false(r.ok);
	if (permanent)
		assert_true(r.permanent);
	else
		assert_false(r.permanent);
	if (why != NULL)
		assert_non_null(strstr(r.error, why));
	return r;
}

/* run, then the outcome: a success, the post made now or (found) found
 * already posted, as remote_id ("": its id is unknown). */
static social_result run_ok(struct fixture *fx, const char *network, int reconcile, int found,
                            const char *remote_id)
{
	social_result r = run(fx, network, reconcile);
	assert_true(r.ok);
	assert_int_equal(r.found, found);
	assert_string_equal(r.remote_id, remote_id);
	return r;
}

static void set_post(struct fixture *fx, int status, const char *headers, const char *body)
{
	fx->post.hang = 0;
	fx->post.status = status;
	snprintf(fx->post.headers, sizeof(fx->post.headers), "%s", headers ? headers : "");
	snprintf(fx->post.body, sizeof(fx->post.body), "%s", body);
}

/* ---- X ---- */

static void test_x_posts_signed_json(void **state)
{
	struct fixture *fx = *state;
	social_result r;
	json_t *j;
	const char *text;

	set_post(fx, 201, NULL, "{\"data\":{\"id\":\"1445880548472328192\",\"text\":\"hi\"}}");
	r = run_ok(fx, "x", 0, 0, "1445880548472328192");
	assert_string_equal(r.remote_url, "https://x.com/i/web/status/1445880548472328192");
	assert_int_equal(fx->n, 1);
	assert_string_equal(fx->reqs[0].method, "POST");
	assert_string_equal(fx->reqs[0].target, "/2/tweets");
	assert_string_equal(fx->reqs[0].content_type, "application/json");
	assert_true(fx->reqs[0].x_signature_ok);
	assert_non_null(strstr(fx->reqs[0].auth, "oauth_signature_method=\"HMAC-SHA1\""));
	j = json_loads(fx->reqs[0].body, 0, NULL);
	text = json_string_value(json_object_get(j, "text"));
	assert_non_null(text);
	assert_string_equal(text, POST_TEXT " " POST_URL);
	assert_true(xtext_weighted_length(text) <= 280);
	json_decref(j);
}

/* A tampered secret makes the fake reject the signature: the check in the
 * other tests can fail. */
static void test_x_signature_check_can_fail(void **state)
{
	struct fixture *fx = *state;
	set_post(fx, 201, NULL, "{\"data\":{\"id\":\"1\",\"text\":\"hi\"}}");
	snprintf(fx->x_acct.access_token_secret, sizeof(fx->x_acct.access_token_secret), "wrong");
	run(fx, "x", 0);
	assert_int_equal(fx->n, 1);
	assert_false(fx->reqs[0].x_signature_ok);
}

static void test_x_long_text_is_fitted(void **state)
{
	struct fixture *fx = *state;
	const social_driver *d = social_driver_find("x");
	char text[2000];
	social_post p = { .post_id = "abcdef", .text = text, .url = POST_URL };
	json_t *j;
	const char *sent;

	for (size_t i = 0; i + 6 < sizeof(text); i += 6)
		memcpy(text + i, "words ", 6);
	text[sizeof(text) - 1 - ((sizeof(text) - 1) % 6)] = '\0';
	set_post(fx, 201, NULL, "{\"data\":{\"id\":\"7\",\"text\":\"x\"}}");
	fx->n = 0;
	fx->done = 0;
	assert_int_equal(d->crosspost(&fx->env, &fx->x_acct, &p, 0, on_done, fx), 0);
	while (!fx->done)
		uv_run(&fx->loop, UV_RUN_ONCE);
	j = json_loads(fx->reqs[0].body, 0, NULL);
	sent = json_string_value(json_object_get(j, "text"));
	assert_non_null(sent);
	assert_true(xtext_weighted_length(sent) <= 280);
	assert_non_null(strstr(sent, "\xe2\x80\xa6 " POST_URL));
	json_decref(j);
}

/* 403 duplicate: already posted. The driver looks the id up. */
static void test_x_duplicate_is_found(void **state)
{
	struct fixture *fx = *state;

	set_post(fx, 403, NULL,
	         "{\"detail\":\"" X_DUPLICATE_DETAIL "\",\"type\":\"about:blank\",\"title\":"
	         "\"Forbidden\",\"status\":403}");
	fx->timeline = "{\"data\":[{\"id\":\"555\",\"text\":\"hello https://t.co/abc\",\"entities\":"
	               "{\"urls\":[{\"url\":\"https://t.co/abc\",\"expanded_url\":\"" POST_URL "\"}]}}]}";
	run_ok(fx, "x", 0, 1, "555");
	assert_int_equal(fx->n, 3);
	assert_string_equal(fx->reqs[1].target, "/2/users/me");
	assert_string_equal(fx->reqs[2].target, "/2/users/42/tweets?max_results=100&tweet.fields=entities");
	assert_true(fx->reqs[1].x_signature_ok);
	assert_true(fx->reqs[2].x_signature_ok);

	/* Not in the latest 100: still already posted, without an id. */
	fx->timeline = "{\"data\":[{\"id\":\"9\",\"text\":\"other\"}]}";
	run_ok(fx, "x", 0, 1, "");
}

static void test_x_401_is_permanent(void **state)
{
	struct fixture *fx = *state;
	set_post(fx, 401, NULL, "{\"title\":\"Unauthorized\",\"type\":\"about:blank\",\"status\":401,"
	                        "\"detail\":\"Unauthorized\"}");
	run_failed(fx, "x", 0, 1, "credentials rejected");
}

static void test_x_429_waits_for_reset(void **state)
{
	struct fixture *fx = *state;
	social_result r;
	char hdr[128];
	long long reset = (long long)time(NULL) + 600;

	snprintf(hdr, sizeof(hdr), "x-rate-limit-limit: 200\r\nx-rate-limit-reset: %lld\r\n", reset);
	set_post(fx, 429, hdr, "{\"title\":\"Too Many Requests\",\"detail\":\"Too Many Requests\"}");
	r = run_failed(fx, "x", 0, 0, NULL);
	assert_int_equal(r.retry_at_ms, reset * 1000);
}

static void test_x_500_and_timeout_back_off(void **state)
{
	struct fixture *fx = *state;
	social_result r;

	set_post(fx, 503, NULL, "{\"title\":\"Service Unavailable\"}");
	r = run_failed(fx, "x", 0, 0, NULL);
	assert_int_equal(r.retry_at_ms, 0);

	fx->post.hang = 1;
	fx->env.timeout_ms = 300;
	r = run_failed(fx, "x", 0, 0, "no answer");
	assert_int_equal(r.retry_at_ms, 0);
}

static void test_x_other_4xx_is_permanent_with_message(void **state)
{
	struct fixture *fx = *state;
	set_post(fx, 403, NULL, "{\"detail\":\"You are not permitted to perform this action.\","
	                        "\"title\":\"Forbidden\",\"status\":403}");
	run_failed(fx, "x", 0, 1, "You are not permitted to perform this action.");
}

static void test_x_reconcile_found_does_not_post(void **state)
{
	struct fixture *fx = *state;
	social_result r;
	set_post(fx, 201, NULL, "{\"data\":{\"id\":\"999\",\"text\":\"dup\"}}");
	fx->timeline = "{\"data\":[{\"id\":\"1\",\"text\":\"a\"},{\"id\":\"777\",\"text\":\"b https://t.co/x\","
	               "\"entities\":{\"urls\":[{\"expanded_url\":\"" POST_URL "/\"}]}}]}";
	r = run_ok(fx, "x", 1, 1, "777");
	assert_string_equal(r.remote_url, "https://x.com/i/web/status/777");
	assert_int_equal(fx->n, 2);
	for (int i = 0; i < fx->n; i++) {
		assert_string_equal(fx->reqs[i].method, "GET");
		assert_true(fx->reqs[i].x_signature_ok);
	}

	/* With user_id set, no /2/users/me. */
	snprintf(fx->x_acct.user_id, sizeof(fx->x_acct.user_id), "42");
	run_ok(fx, "x", 1, 1, "777");
	assert_int_equal(fx->n, 1);
	assert_string_equal(fx->reqs[0].target, "/2/users/42/tweets?max_results=100&tweet.fields=entities");
}

static void test_x_reconcile_not_found_posts(void **state)
{
	struct fixture *fx = *state;
	set_post(fx, 201, NULL, "{\"data\":{\"id\":\"999\",\"text\":\"new\"}}");
	fx->timeline = "{\"data\":[{\"id\":\"1\",\"text\":\"https://sayin.example.com/p/other\","
	               "\"entities\":{\"urls\":[{\"expanded_url\":\"https://sayin.example.com/p/other\"}]}}]}";
	run_ok(fx, "x", 1, 0, "999");
	assert_int_equal(fx->n, 3);
	assert_string_equal(fx->reqs[2].method, "POST");

	/* The lookup failing is a failure: never post blind. */
	fx->timeline = "not json";
	run_failed(fx, "x", 1, 0, NULL);
	assert_int_equal(fx->n, 2);
}

/* ---- Facebook ---- */

static void test_facebook_posts_with_proof(void **state)
{
	struct fixture *fx = *state;
	social_result r;
	char v[512];

	set_post(fx, 200, NULL, "{\"id\":\"1001_2002\"}");
	r = run_ok(fx, "facebook", 0, 0, "1001_2002");
	assert_string_equal(r.remote_url, "https://www.facebook.com/1001_2002");
	assert_int_equal(fx->n, 1);
	assert_string_equal(fx->reqs[0].target, "/v19.0/" PAGE_ID "/feed");
	assert_string_equal(fx->reqs[0].content_type, "application/x-www-form-urlencoded");
	assert_true(fx->reqs[0].fb_proof_ok);
	form_get(fx->reqs[0].body, "message", v, sizeof(v));
	assert_string_equal(v, POST_TEXT);
	form_get(fx->reqs[0].body, "link", v, sizeof(v));
	assert_string_equal(v, POST_URL);
}

/* The proof check is real: a wrong app secret fails it. */
static void test_facebook_proof_check_can_fail(void **state)
{
	struct fixture *fx = *state;
	set_post(fx, 200, NULL, "{\"id\":\"1\"}");
	snprintf(fx->fb_acct.app_secret, sizeof(fx->fb_acct.app_secret), "other");
	run(fx, "facebook", 0);
	assert_false(fx->reqs[0].fb_proof_ok);
}

static void test_facebook_190_is_permanent(void **state)
{
	struct fixture *fx = *state;
	set_post(fx, 400, NULL, "{\"error\":{\"message\":\"Error validating access token: Session has "
	                        "expired\",\"type\":\"OAuthException\",\"code\":190,\"error_subcode\":463}}");
	run_failed(fx, "facebook", 0, 1, "token expired, re-authorize");
}

static void test_facebook_rate_limits_back_off(void **state)
{
	struct fixture *fx = *state;
	social_result r;
	static const int codes[] = { 4, 17, 32, 613 };

	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		char body[256];
		snprintf(body, sizeof(body), "{\"error\":{\"message\":\"(#%d) limit\",\"type\":"
		                             "\"OAuthException\",\"code\":%d}}", codes[i], codes[i]);
		set_post(fx, 400, NULL, body);
		r = run_failed(fx, "facebook", 0, 0, NULL);
		assert_int_equal(r.retry_at_ms, 0);
	}

	/* An unknown code is permanent... */
	set_post(fx, 400, NULL, "{\"error\":{\"message\":\"Invalid parameter\",\"type\":"
	                        "\"OAuthException\",\"code\":100}}");
	run_failed(fx, "facebook", 0, 1, "Invalid parameter");
	/* ...unless a usage header says the app or Page is at its limit. */
	set_post(fx, 400, "x-app-usage: {\"call_count\":100,\"total_cputime\":20,\"total_time\":30}\r\n",
	         "{\"error\":{\"message\":\"Invalid parameter\",\"type\":\"OAuthException\",\"code\":100}}");
	run_failed(fx, "facebook", 0, 0, NULL);
	set_post(fx, 400, "x-app-usage: {\"call_count\":5}\r\nx-page-usage: {\"call_count\":3,"
	         "\"total_cputime\":100,\"total_time\":1}\r\n",
	         "{\"error\":{\"message\":\"Invalid parameter\",\"type\":\"OAuthException\",\"code\":100}}");
	run_failed(fx, "facebook", 0, 0, NULL);
	/* A success at 100% usage is still a success. */
	set_post(fx, 200, "x-app-usage: {\"call_count\":100}\r\n", "{\"id\":\"1001_3\"}");
	run_ok(fx, "facebook", 0, 0, "1001_3");
}

static void test_facebook_500_and_timeout_back_off(void **state)
{
	struct fixture *fx = *state;
	set_post(fx, 500, NULL, "{\"error\":{\"message\":\"An unknown error occurred\",\"code\":1}}");
	run_failed(fx, "facebook", 0, 0, NULL);
	fx->post.hang = 1;
	fx->env.timeout_ms = 300;
	run_failed(fx, "facebook", 0, 0, NULL);
}

static void test_facebook_reconcile(void **state)
{
	struct fixture *fx = *state;

	set_post(fx, 200, NULL, "{\"id\":\"1001_9\"}");
	fx->feed = "{\"data\":[{\"id\":\"1001_5\",\"message\":\"x\",\"link\":\"https://other/\"},"
	           "{\"id\":\"1001_6\",\"message\":\"A voice message\",\"link\":\"" POST_URL "\"}]}";
	run_ok(fx, "facebook", 1, 1, "1001_6");
	assert_int_equal(fx->n, 1);
	assert_string_equal(fx->reqs[0].method, "GET");
	assert_non_null(strstr(fx->reqs[0].target, "/v19.0/" PAGE_ID "/feed?fields=id,link,message&limit=100&"));
	assert_true(fx->reqs[0].fb_proof_ok);

	/* Not there: post. */
	fx->feed = "{\"data\":[{\"id\":\"1001_5\",\"link\":\"https://other/\"}]}";
	run_ok(fx, "facebook", 1, 0, "1001_9");
	assert_int_equal(fx->n, 2);
	assert_string_equal(fx->reqs[1].method, "POST");

	/* The feed failing (token expired) is reported as such, with no post. */
	fx->feed = "{\"error\":{\"message\":\"expired\",\"code\":190}}";
	run_failed(fx, "facebook", 1, 1, NULL);
	assert_int_equal(fx->n, 1);
}

/* 506, a duplicate status message: ours only if the Page shows our link. */
static void test_facebook_duplicate(void **state)
{
	struct fixture *fx = *state;
	set_post(fx, 400, NULL, "{\"error\":{\"message\":\"(#506) Duplicate status message\","
	                        "\"type\":\"OAuthException\",\"code\":506}}");
	fx->feed = "{\"data\":[{\"id\":\"1001_6\",\"link\":\"" POST_URL "\"}]}";
	run_ok(fx, "facebook", 0, 1, "1001_6");
	fx->feed = "{\"data\":[]}";
	run_failed(fx, "facebook", 0, 1, NULL);
}

/* ---- pure parts ---- */

static void test_classifiers(void **state)
{
	social_result r = { 0 };
	char id[96];
	(void)state;

	assert_int_equal(x_classify("Operation timed out", 0, "", NULL, &r), X_OUTCOME_FAILED);
	assert_false(r.permanent);
	assert_int_equal(x_classify(NULL, 201, "{}", NULL, &r), X_OUTCOME_OK);
	/* A reset already past, or garbage: plain backoff. */
	assert_int_equal(x_classify(NULL, 429, "{}", "12", &r), X_OUTCOME_FAILED);
	assert_int_equal(r.retry_at_ms, 0);
	assert_int_equal(x_classify(NULL, 429, "{}", "soon", &r), X_OUTCOME_FAILED);
	assert_int_equal(r.retry_at_ms, 0);
	/* Found by fuzz_social_answer: a reset whose ms overflow int64 (the
	 * product wrapped to a time ~50000 years ahead, and is undefined). */
	assert_int_equal(x_classify(NULL, 429, "{}", "18448444073709552", &r), X_OUTCOME_FAILED);
	assert_int_equal(r.retry_at_ms, 0);
	assert_int_equal(x_classify(NULL, 429, "{}", "9223372036854775807", &r), X_OUTCOME_FAILED);
	assert_int_equal(r.retry_at_ms, 0);
	assert_int_equal(x_classify(NULL, 400, "{\"errors\":[{\"message\":\"bad text\"}]}", NULL, &r),
	                 X_OUTCOME_FAILED);
	assert_true(r.permanent);
	assert_non_null(strstr(r.error, "bad text"));
	assert_int_equal(x_find_post("{\"meta\":{\"result_count\":0}}", POST_URL, id, sizeof(id)), 0);
	assert_int_equal(x_find_post("[]", POST_URL, id, sizeof(id)), -1);
	/* Found by fuzz_social_answer: a post carrying our URL under an empty
	 * id was "found", and the job recorded "" as the remote id. */
	assert_int_equal(x_find_post("{\"data\":[{\"id\":\"\",\"text\":\"" POST_URL "\"}]}",
	                             POST_URL, id, sizeof(id)),
	                 0);
	assert_int_equal(facebook_find_post("{\"data\":[{\"id\":\"\",\"link\":\"" POST_URL
	                                    "\"}]}",
	                                    POST_URL, id, sizeof(id)),
	                 0);
	assert_int_equal(x_find_post("{\"data\":[{\"id\":\"3\",\"text\":\"see " POST_URL "\"}]}",
	                             POST_URL, id, sizeof(id)),
	                 1);
	assert_string_equal(id, "3");
	/* A longer URL that starts with ours is another post. */
	assert_int_equal(x_find_post("{\"data\":[{\"id\":\"3\",\"entities\":{\"urls\":[{\"expanded_url\":"
	                             "\"" POST_URL "0\"}]}}]}",
	                             POST_URL, id, sizeof(id)),
	                 0);

	assert_int_equal(facebook_classify(NULL, 200, "{\"id\":\"1_2\"}", NULL, NULL, &r),
	                 FACEBOOK_OUTCOME_OK);
	assert_int_equal(facebook_classify(NULL, 400, "{\"error\":{\"code\":368,\"is_transient\":true,"
	                                   "\"message\":\"m\"}}", NULL, NULL, &r),
	                 FACEBOOK_OUTCOME_FAILED);
	assert_false(r.permanent);
	assert_int_equal(facebook_usage_exhausted("{\"call_count\":99.5}"), 0);
	assert_int_equal(facebook_usage_exhausted("{\"total_time\":100}"), 1);
	assert_int_equal(facebook_usage_exhausted("not json"), 0);
	assert_int_equal(facebook_usage_exhausted(NULL), 0);
}

/* appsecret_proof is HMAC-SHA256(key = app secret, data = token) in hex:
 * checked against RFC 4231 test case 2 (key "Jefe"). */
static void test_appsecret_proof(void **state)
{
	char proof[65];
	char *body;
	(void)state;
	assert_int_equal(facebook_appsecret_proof("Jefe", "what do ya want for nothing?", proof), 0);
	assert_string_equal(proof, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	body = facebook_post_body("a b&c=d", "https://e/p?q=1", "t+k", "ff");
	assert_string_equal(body, "message=a%20b%26c%3Dd&link=https%3A%2F%2Fe%2Fp%3Fq%3D1&"
	                          "access_token=t%2Bk&appsecret_proof=ff");
	free(body);
	body = facebook_post_body("", "https://e/", "t", NULL);
	assert_string_equal(body, "link=https%3A%2F%2Fe%2F&access_token=t");
	free(body);
}

static void test_driver_table(void **state)
{
	(void)state;
	assert_non_null(social_driver_find("x"));
	assert_non_null(social_driver_find("facebook"));
	assert_string_equal(social_driver_find("x")->name, "x");
	assert_null(social_driver_find("myspace"));
	assert_null(social_driver_find(NULL));
	assert_true(social_same_url("https://a/p", "https://a/p/"));
	assert_false(social_same_url("https://a/p", "https://a/p2"));
	assert_false(social_same_url(NULL, "x"));
}

/* Missing credentials: refused at once, done not called. */
static void test_missing_credentials(void **state)
{
	struct fixture *fx = *state;
	social_post p = { .post_id = "a", .text = "t", .url = POST_URL };
	social_account empty = { .network = "x" };
	fx->done = 0;
	assert_int_equal(social_x.crosspost(&fx->env, &empty, &p, 0, on_done, fx), -EINVAL);
	assert_int_equal(social_facebook.crosspost(&fx->env, &empty, &p, 0, on_done, fx), -EINVAL);
	uv_run(&fx->loop, UV_RUN_NOWAIT);
	assert_int_equal(fx->done, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_x_posts_signed_json, setup, teardown),
		cmocka_unit_test_setup_teardown(test_x_signature_check_can_fail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_x_long_text_is_fitted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_x_duplicate_is_found, setup, teardown),
		cmocka_unit_test_setup_teardown(test_x_401_is_permanent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_x_429_waits_for_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_x_500_and_timeout_back_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_x_other_4xx_is_permanent_with_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_x_reconcile_found_does_not_post, setup, teardown),
		cmocka_unit_test_setup_teardown(test_x_reconcile_not_found_posts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_facebook_posts_with_proof, setup, teardown),
		cmocka_unit_test_setup_teardown(test_facebook_proof_check_can_fail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_facebook_190_is_permanent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_facebook_rate_limits_back_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_facebook_500_and_timeout_back_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_facebook_reconcile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_facebook_duplicate, setup, teardown),
		cmocka_unit_test(test_classifiers),
		cmocka_unit_test(test_appsecret_proof),
		cmocka_unit_test(test_driver_table),
		cmocka_unit_test_setup_teardown(test_missing_credentials, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

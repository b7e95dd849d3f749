/* cdn: the CDN driver table and the helpers the drivers share. */
#include "deliver/cdn/cdn.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A Retry-After header (seconds or an HTTP date) as unix ms; 0 if absent. */
static int64_t cdn_retry_after(const net_headers *h, int64_t now_ms);

extern const cdn_driver cdn_s3, cdn_varnish, cdn_nginx, cdn_fastly, cdn_cloudflare,
	cdn_cloudfront, cdn_prewarm;

const cdn_driver *const cdn_drivers[] = {
	&cdn_s3, &cdn_varnish, &cdn_nginx, &cdn_fastly, &cdn_cloudflare, &cdn_cloudfront,
	&cdn_prewarm, NULL,
};

struct cdn_batch {
	char driver[32];
	cdn_done_fn done;
	void *arg;
	unsigned pending;
	int sealed;
	cdn_result res;
	uv_timer_t timer; /* only for an empty batch */
};

struct one {
	cdn_batch *b;
	cdn_check_fn check;
	char what[300];
};

static void batch_finish(cdn_batch *b)
{
	if (b->res.error[0] == '\0')
		b->res.ok = 1;
	b->done(b->arg, &b->res);
	free(b);
}

static void on_empty_timer_closed(uv_handle_t *h)
{
	batch_finish(h->data);
}

static void on_empty_timer(uv_timer_t *t)
{
	uv_close((uv_handle_t *)t, on_empty_timer_closed);
}

cdn_batch *cdn_batch_new(const char *driver, cdn_done_fn done, void *arg)
{
	cdn_batch *b = calloc(1, sizeof(*b));
	if (b == NULL)
		return NULL;
	snprintf(b->driver, sizeof(b->driver), "%s", driver);
	b->done = done;
	b->arg = arg;
	return b;
}

int cdn_check_2xx(const net_response *res, const net_headers *h, cdn_result *out)
{
	(void)h;
	if (res->status >= 200 && res->status < 300)
		return 0;
	snprintf(out->error, sizeof(out->error), "HTTP %ld", res->status);
	return -1;
}

static void on_one(void *arg, const net_response *res, const net_headers *h)
{
	struct one *o = arg;
	cdn_batch *b = o->b;
	cdn_result r = { 0 };

	if (res->error != NULL) {
		if (snprintf(r.error, sizeof(r.error), "%s: %s", o->what, res->error) < 0)
			r.error[0] = '?'; /* truncation is fine: the start names the request */
	} else if ((o->check ? o->check : cdn_check_2xx)(res, h, &r) != 0) {
		char why[sizeof(r.error)];
		snprintf(why, sizeof(why), "%s", r.error[0] ? r.error : "refused");
		if (snprintf(r.error, sizeof(r.error), "%s: %s", o->what, why) < 0)
			r.error[0] = '?';
		if (r.retry_at_ms == 0)
			r.retry_at_ms = cdn_retry_after(h, clock_now_ms());
	}
	if (r.error[0] != '\0') {
		log_warn("cdn %s: %s", b->driver, r.error);
		/* The first failure is the one reported; permanence and the
		 * latest Retry-After accumulate. */
		if (b->res.error[0] == '\0')
			snprintf(b->res.error, sizeof(b->res.error), "%s", r.error);
		b->res.permanent |= r.permanent;
		if (r.retry_at_ms > b->res.retry_at_ms)
			b->res.retry_at_ms = r.retry_at_ms;
	}
	free(o);
	if (--b->pending == 0 && b->sealed)
		batch_finish(b);
}

int cdn_batch_send(cdn_batch *b, net *n, const net_request *req, cdn_check_fn check)
{
	struct one *o = calloc(1, sizeof(*o));
	int rc;
	if (o == NULL)
		return -ENOMEM;
	o->b = b;
	o->check = check;
	snprintf(o->what, sizeof(o->what), "%s %s", req->method, req->url);
	rc = net_send(n, req, on_one, o);
	if (rc != 0) {
		free(o);
		if (b->res.error[0] == '\0')
			snprintf(b->res.error, sizeof(b->res.error), "%s %s: %s", req->method, req->url,
			         sayin_strerror(rc));
		return rc;
	}
	b->pending++;
	return 0;
}

void cdn_batch_seal(cdn_batch *b, uv_loop_t *loop)
{
	b->sealed = 1;
	if (b->pending > 0)
		return;
	uv_timer_init(loop, &b->timer);
	b->timer.data = b;
	uv_timer_start(&b->timer, on_empty_timer, 0, 0);
}

int cdn_state_keep(const void *tmp, size_t size, void **state)
{
	void *copy = malloc(size);
	if (copy == NULL)
		return -ENOMEM;
	memcpy(copy, tmp, size);
	*state = copy;
	return 0;
}

void cdn_state_free(void *state)
{
	free(state);
}

void cdn_copy_base_url(char *out, size_t len, const char *url)
{
	size_t n;
	snprintf(out, len, "%s", url);
	n = strlen(out);
	while (n > 0 && out[n - 1] == '/')
		out[--n] = '\0';
}

int cdn_on_off(const config *cfg, const char *setting, int *on, char *err, size_t errlen)
{
	const char *v = config_get(cfg, setting);
	if (v != NULL && strcmp(v, "on") != 0 && strcmp(v, "off") != 0) {
		snprintf(err, errlen, "--%s: '%s' is not on or off", setting, v);
		return SAYIN_ECONFIG;
	}
	*on = v != NULL && strcmp(v, "on") == 0;
	return 0;
}

int cdn_api_configure(const config *cfg, const char *driver, const char *id_setting,
                      const char *secret_setting, const char *url_setting,
                      const char *auth_prefix, cdn_api *out, char *err, size_t errlen)
{
	const char *id = config_get(cfg, id_setting);
	const char *secret = config_get(cfg, secret_setting);

	if (id == NULL || *id == '\0')
		return 1;
	if (secret == NULL || *secret == '\0' || strlen(secret) > 500 || strlen(id) > 100 ||
	    strchr(secret, '\n') != NULL) {
		snprintf(err, errlen, "%s: --%s is required with --%s", driver, secret_setting,
		         id_setting);
		return SAYIN_ECONFIG;
	}
	cdn_copy_base_url(out->url, sizeof(out->url), config_get(cfg, url_setting));
	snprintf(out->id, sizeof(out->id), "%s", id);
	snprintf(out->auth, sizeof(out->auth), "%s%s", auth_prefix, secret);
	return 0;
}

/* Splits a comma-separated setting into a NULL-terminated malloc'd array
 * of trimmed, non-empty strings (free with cdn_list_free). */
static char **cdn_list(const char *value, size_t *n)
{
	size_t cap = 1, count = 0;
	const char *p;
	char **list;

	for (p = value; p != NULL && *p; p++)
		if (*p == ',')
			cap++;
	list = calloc(cap + 1, sizeof(char *));
	if (list == NULL)
		return NULL;
	p = value ? value : "";
	while (*p != '\0') {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *s = p;
		while (len > 0 && (*s == ' ' || *s == '\t')) {
			s++;
			len--;
		}
		while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '/'))
			len--;
		if (len > 0) {
			list[count] = strndup(s, len);
			if (list[count] == NULL) {
				cdn_list_free(list);
				return NULL;
			}
			count++;
		}
		if (end == NULL)
			break;
		p = end + 1;
	}
	if (n != NULL)
		*n = count;
	return list;
}

void cdn_list_free(char **list)
{
	for (size_t i = 0; list != NULL && list[i] != NULL; i++)
		free(list[i]);
	free(list);
}

int cdn_edges_configure(const config *cfg, const char *setting, char ***edges, char *err,
                        size_t errlen)
{
	const char *value = config_get(cfg, setting);
	size_t n = 0;

	if (value == NULL || *value == '\0')
		return 1;
	*edges = cdn_list(value, &n);
	if (*edges == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (strncmp((*edges)[i], "http://", 7) != 0 && strncmp((*edges)[i], "https://", 8) != 0)
			n = 0;
	}
	if (n == 0) {
		cdn_list_free(*edges);
		*edges = NULL;
		snprintf(err, errlen, "--%s: give http(s) base URLs, e.g. http://127.0.0.1:6081",
		         setting);
		return SAYIN_ECONFIG;
	}
	return 0;
}

int cdn_edges_state(const config *cfg, const char *setting, void **state, char *err,
                    size_t errlen)
{
	char **edges = NULL;
	int rc = cdn_edges_configure(cfg, setting, &edges, err, errlen);
	if (rc == 0)
		*state = edges;
	return rc;
}

void cdn_edges_free(void *state)
{
	cdn_list_free(state);
}

int cdn_purge_paths(cdn_batch *b, net *n, const char *edge, const json_t *paths,
                    cdn_check_fn check)
{
	const json_t *p;
	size_t i;
	json_array_foreach(paths, i, p) {
		char url[2048];
		net_request req = { .method = "PURGE", .url = url, .no_body_wanted = 1 };
		int rc;
		snprintf(url, sizeof(url), "%s%s", edge, json_string_value(p));
		rc = cdn_batch_send(b, n, &req, check);
		if (rc != 0)
			return rc;
	}
	return 0;
}

static int64_t cdn_retry_after(const net_headers *h, int64_t now_ms)
{
	return cdn_retry_after_value(h ? net_header(h, "Retry-After") : NULL, now_ms);
}

int64_t cdn_retry_after_value(const char *v, int64_t now_ms)
{
	char *end;
	long secs;
	struct tm tm;
	time_t t;

	if (v == NULL)
		return 0;
	secs = strtol(v, &end, 10);
	/* A delay or a date past what int64 ms can hold is nonsense: unreadable. */
	if (end != v && *end == '\0' && secs >= 0)
		return secs <= (INT64_MAX - now_ms) / 1000 ? now_ms + (int64_t)secs * 1000 : 0;
	memset(&tm, 0, sizeof(tm));
	if (strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm) == NULL)
		return 0;
	t = timegm(&tm);
	return t > 0 && t <= INT64_MAX / 1000 ? (int64_t)t * 1000 : 0;
}

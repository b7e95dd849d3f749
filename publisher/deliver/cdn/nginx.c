/* cdn/nginx: purges nginx edges (cdn-config/nginx/edge.conf, the cache
 * purge module): PURGE of every changed URL. nginx has no surrogate keys. */
#include "deliver/cdn/cdn.h"

#include "core/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct nginx {
	char **edges;
};

static int nginx_configure(const config *cfg, void **state, char *err, size_t errlen)
{
	struct nginx *x;
	char **edges = NULL;
	int rc = cdn_edges_configure(cfg, "nginx-edges", &edges, err, errlen);

	if (rc != 0)
		return rc;
	x = calloc(1, sizeof(*x));
	if (x == NULL) {
		cdn_list_free(edges);
		return -ENOMEM;
	}
	x->edges = edges;
	*state = x;
	return 0;
}

/* The purge module answers 404 for a URL it does not hold: fine. */
static int purge_ok(const net_response *res, const net_headers *h, cdn_result *out)
{
	(void)h;
	if ((res->status >= 200 && res->status < 300) || res->status == 404)
		return 0;
	snprintf(out->error, sizeof(out->error), "HTTP %ld", res->status);
	return -1;
}

static int nginx_deliver(void *state, const cdn_env *env, const char *job_id, const json_t *payload,
                         cdn_done_fn done, void *arg)
{
	struct nginx *x = state;
	cdn_batch *b = cdn_batch_new("nginx", done, arg);
	static const char *const lists[] = { "paths", "removed" };

	(void)job_id;
	if (b == NULL)
		return -ENOMEM;
	for (size_t e = 0; x->edges[e] != NULL; e++) {
		for (size_t l = 0; l < 2; l++) {
			const json_t *p;
			size_t i;
			json_array_foreach(json_object_get(payload, lists[l]), i, p) {
				char url[2048];
				net_request req = { .method = "PURGE", .url = url, .no_body_wanted = 1 };
				snprintf(url, sizeof(url), "%s%s", x->edges[e], json_string_value(p));
				cdn_batch_send(b, env->net, &req, purge_ok);
			}
		}
	}
	cdn_batch_seal(b, env->loop);
	return 0;
}

static void nginx_destroy(void *state)
{
	struct nginx *x = state;
	cdn_list_free(x->edges);
	free(x);
}

const cdn_driver cdn_nginx = { "nginx", CDN_STAGE_PURGE, nginx_configure, nginx_deliver,
	                       nginx_destroy };

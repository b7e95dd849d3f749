/* cdn/varnish: purges Varnish edges: PURGE of every changed URL, then one
 * xkey purge of the event's surrogate keys (cdn-config/varnish/sayin.vcl
 * accepts both from its ACL). */
#include "deliver/cdn/cdn.h"

#include "core/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct varnish {
	char **edges;
	int soft;
};

static int varnish_configure(const config *cfg, void **state, char *err, size_t errlen)
{
	const char *soft = config_get(cfg, "varnish-soft-purge");
	struct varnish *v;
	char **edges = NULL;
	int rc;

	if (soft != NULL && strcmp(soft, "on") != 0 && strcmp(soft, "off") != 0) {
		snprintf(err, errlen, "--varnish-soft-purge: '%s' is not on or off", soft);
		return SAYIN_ECONFIG;
	}
	rc = cdn_edges_configure(cfg, "varnish-edges", &edges, err, errlen);
	if (rc != 0)
		return rc;
	v = calloc(1, sizeof(*v));
	if (v == NULL) {
		cdn_list_free(edges);
		return -ENOMEM;
	}
	v->edges = edges;
	v->soft = soft != NULL && strcmp(soft, "on") == 0;
	*state = v;
	return 0;
}

/* A URL purge of something not cached is fine. */
static int purge_ok(const net_response *res, const net_headers *h, cdn_result *out)
{
	(void)h;
	if ((res->status >= 200 && res->status < 300) || res->status == 404)
		return 0;
	snprintf(out->error, sizeof(out->error), "HTTP %ld%s", res->status,
	         res->status == 403 || res->status == 405 ? " (not in the edge's purge ACL?)" : "");
	return -1;
}

static int purge_paths(cdn_batch *b, const cdn_env *env, const char *edge, const json_t *paths)
{
	const json_t *p;
	size_t i;
	json_array_foreach(paths, i, p) {
		char url[2048];
		net_request req = { .method = "PURGE", .url = url, .no_body_wanted = 1 };
		snprintf(url, sizeof(url), "%s%s", edge, json_string_value(p));
		if (cdn_batch_send(b, env->net, &req, purge_ok) != 0)
			return -1;
	}
	return 0;
}

static int varnish_deliver(void *state, const cdn_env *env, const char *job_id,
                           const json_t *payload, cdn_done_fn done, void *arg)
{
	struct varnish *v = state;
	cdn_batch *b = cdn_batch_new("varnish", done, arg);
	const json_t *keys = json_object_get(payload, "keys"), *k;
	char header[4096];
	size_t i, used;

	(void)job_id;
	if (b == NULL)
		return -ENOMEM;
	used = (size_t)snprintf(header, sizeof(header), "%s:", v->soft ? "xkey-softpurge" : "xkey-purge");
	json_array_foreach(keys, i, k) {
		int n = snprintf(header + used, sizeof(header) - used, " %s", json_string_value(k));
		if (n > 0 && (size_t)n < sizeof(header) - used)
			used += (size_t)n;
	}
	for (size_t e = 0; v->edges[e] != NULL; e++) {
		if (purge_paths(b, env, v->edges[e], json_object_get(payload, "paths")) != 0 ||
		    purge_paths(b, env, v->edges[e], json_object_get(payload, "removed")) != 0)
			break;
		if (json_array_size(keys) > 0) {
			char url[2048];
			const char *hdrs[] = { header, NULL };
			net_request req = { .method = "PURGE", .url = url, .headers = hdrs,
				            .no_body_wanted = 1 };
			snprintf(url, sizeof(url), "%s/", v->edges[e]);
			if (cdn_batch_send(b, env->net, &req, NULL) != 0)
				break;
		}
	}
	cdn_batch_seal(b, env->loop);
	return 0;
}

static void varnish_destroy(void *state)
{
	struct varnish *v = state;
	cdn_list_free(v->edges);
	free(v);
}

const cdn_driver cdn_varnish = { "varnish", CDN_STAGE_PURGE, varnish_configure, varnish_deliver,
	                         varnish_destroy };

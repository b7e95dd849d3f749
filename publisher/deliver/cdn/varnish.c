/* cdn/varnish: the Varnish driver: purges by URL and by surrogate key. */
/* PURGE of every changed URL, then one xkey purge of the event's surrogate
 * keys, on each edge (cdn-config/varnish/sayin.vcl accepts both from its
 * ACL). */
#include "deliver/cdn/cdn.h"
#include "deliver/payload.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

struct varnish {
	char **edges;
	int soft;
};

static int varnish_configure(const config *cfg, void **state, char *err, size_t errlen)
{
	struct varnish v = { 0 };
	int rc = cdn_on_off(cfg, "varnish-soft-purge", &v.soft, err, errlen);

	if (rc == 0)
		rc = cdn_edges_configure(cfg, "varnish-edges", &v.edges, err, errlen);
	if (rc != 0)
		return rc;
	rc = cdn_state_keep(&v, sizeof(v), state);
	if (rc != 0)
		cdn_list_free(v.edges);
	return rc;
}

/* A URL purge of something not cached is fine. */
int cdn_varnish_check(const net_response *res, const net_headers *h, cdn_result *out)
{
	(void)h;
	if ((res->status >= 200 && res->status < 300) || res->status == 404)
		return 0;
	snprintf(out->error, sizeof(out->error), "HTTP %ld%s", res->status,
	         res->status == 403 || res->status == 405 ? " (not in the edge's purge ACL?)" : "");
	return -1;
}

static int varnish_deliver(void *state, const cdn_env *env, const char *job_id,
                           const json_t *payload, cdn_done_fn done, void *arg)
{
	struct varnish *v = state;
	cdn_batch *b = cdn_batch_new("varnish", done, arg);
	const json_t *keys = payload_list(payload, PAYLOAD_KEYS), *k;
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
		if (cdn_purge_paths(b, env->net, v->edges[e], payload_list(payload, PAYLOAD_PATHS),
		                    cdn_varnish_check) != 0 ||
		    cdn_purge_paths(b, env->net, v->edges[e], payload_list(payload, PAYLOAD_REMOVED),
		                    cdn_varnish_check) != 0)
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

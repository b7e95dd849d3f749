/* cdn/nginx: the nginx driver: PURGE of every changed URL on each edge. */
/* For edges with the cache purge module (cdn-config/nginx/edge.conf).
 * nginx has no surrogate keys. */
#include "deliver/cdn/cdn.h"
#include "deliver/payload.h"

#include <errno.h>
#include <stdio.h>

static int nginx_configure(const config *cfg, void **state, char *err, size_t errlen)
{
	return cdn_edges_state(cfg, "nginx-edges", state, err, errlen);
}

/* The purge module answers 404 for a URL it does not hold: fine. */
int cdn_nginx_check(const net_response *res, const net_headers *h, cdn_result *out)
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
	char **edges = state;
	cdn_batch *b = cdn_batch_new("nginx", done, arg);

	(void)job_id;
	if (b == NULL)
		return -ENOMEM;
	/* A request that cannot be sent fails the batch and ends its list; the
	 * other lists and edges still go. */
	for (size_t e = 0; edges[e] != NULL; e++) {
		cdn_purge_paths(b, env->net, edges[e], payload_list(payload, PAYLOAD_PATHS),
		                cdn_nginx_check);
		cdn_purge_paths(b, env->net, edges[e], payload_list(payload, PAYLOAD_REMOVED),
		                cdn_nginx_check);
	}
	cdn_batch_seal(b, env->loop);
	return 0;
}

const cdn_driver cdn_nginx = { "nginx", CDN_STAGE_PURGE, nginx_configure, nginx_deliver,
	                       cdn_edges_free };

/* cdn/prewarm: the prewarm driver: fills the edges' caches after the purges. */
/* GETs the event's new and changed URLs through each configured edge once
 * per encoding variant (br, gzip, identity), so the first fans find them
 * in the cache. */
#include "deliver/cdn/cdn.h"
#include "deliver/payload.h"

#include <errno.h>
#include <stdio.h>

static int prewarm_configure(const config *cfg, void **state, char *err, size_t errlen)
{
	return cdn_edges_state(cfg, "prewarm-edges", state, err, errlen);
}

static void warm(cdn_batch *b, const cdn_env *env, const char *edge, const char *path,
                 int variants)
{
	/* The edges keep one variant per normalized Accept-Encoding: br
	 * (browsers), gzip (older clients) and identity (tools, crawlers).
	 * Objects have one representation. */
	static const char *const encodings[] = { "Accept-Encoding: br", "Accept-Encoding: gzip",
		                                 NULL };
	for (int i = 0; i < (variants ? 3 : 1); i++) {
		char url[2048];
		const char *hdrs[] = { encodings[i], NULL };
		net_request req = { .method = "GET", .url = url, .headers = hdrs, .no_body_wanted = 1,
			            .timeout_ms = 30000 };
		snprintf(url, sizeof(url), "%s%s", edge, path);
		cdn_batch_send(b, env->net, &req, NULL);
	}
}

static int prewarm_deliver(void *state, const cdn_env *env, const char *job_id,
                           const json_t *payload, cdn_done_fn done, void *arg)
{
	char **edges = state;
	cdn_batch *b = cdn_batch_new("prewarm", done, arg);
	const json_t *v;
	size_t i;

	(void)job_id;
	if (b == NULL)
		return -ENOMEM;
	for (size_t e = 0; edges[e] != NULL; e++) {
		json_array_foreach(payload_list(payload, PAYLOAD_PATHS), i, v)
			warm(b, env, edges[e], json_string_value(v), 1);
		json_array_foreach(payload_list(payload, PAYLOAD_OBJECTS), i, v)
			warm(b, env, edges[e], payload_object_path(v), 0);
	}
	cdn_batch_seal(b, env->loop);
	return 0;
}

const cdn_driver cdn_prewarm = { "prewarm", CDN_STAGE_PREWARM, prewarm_configure,
	                         prewarm_deliver, cdn_edges_free };

/* cdn/fastly: the Fastly driver: purges by surrogate key and by URL. */
/* Purges by surrogate key (POST /service/{id}/purge/{key} with Fastly-Key;
 * Fastly-Soft-Purge: 1 when soft), and removed objects by URL (POST
 * /purge/{host}{path}). Fastly tags cached names with the origin's
 * Surrogate-Key header itself. */
#include "deliver/cdn/cdn.h"
#include "deliver/payload.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

struct fastly {
	cdn_api api;            /* api.id: the service; api.auth: Fastly-Key */
	int soft;
};

static int fastly_configure(const config *cfg, void **state, char *err, size_t errlen)
{
	struct fastly f = { 0 };
	int rc = cdn_api_configure(cfg, "fastly", "fastly-service-id", "fastly-api-key",
	                           "fastly-api-url", "Fastly-Key: ", &f.api, err, errlen);

	if (rc == 0)
		rc = cdn_on_off(cfg, "fastly-soft-purge", &f.soft, err, errlen);
	if (rc != 0)
		return rc;
	return cdn_state_keep(&f, sizeof(f), state);
}

/* 401/403: the key is wrong or lacks purge_select: retrying cannot help. */
int cdn_fastly_check(const net_response *res, const net_headers *h, cdn_result *out)
{
	(void)h;
	if (res->status >= 200 && res->status < 300)
		return 0;
	out->permanent = res->status == 401 || res->status == 403;
	snprintf(out->error, sizeof(out->error), "HTTP %ld%s", res->status,
	         out->permanent ? " (API key rejected)" : "");
	return -1;
}

static int fastly_deliver(void *state, const cdn_env *env, const char *job_id,
                          const json_t *payload, cdn_done_fn done, void *arg)
{
	struct fastly *f = state;
	cdn_batch *b = cdn_batch_new("fastly", done, arg);
	const char *hdrs[4] = { f->api.auth, "Accept: application/json",
		                f->soft ? "Fastly-Soft-Purge: 1" : NULL, NULL };
	const char *host = strstr(env->base_url, "://");
	const json_t *v;
	size_t i;

	(void)job_id;
	if (b == NULL)
		return -ENOMEM;
	host = host ? host + 3 : env->base_url;
	json_array_foreach(payload_list(payload, PAYLOAD_KEYS), i, v) {
		char url[1024];
		net_request req = { .method = "POST", .url = url, .headers = hdrs };
		snprintf(url, sizeof(url), "%s/service/%s/purge/%s", f->api.url, f->api.id,
		         json_string_value(v));
		cdn_batch_send(b, env->net, &req, cdn_fastly_check);
	}
	json_array_foreach(payload_list(payload, PAYLOAD_REMOVED), i, v) {
		char url[2048];
		net_request req = { .method = "POST", .url = url, .headers = hdrs };
		snprintf(url, sizeof(url), "%s/purge/%s%s", f->api.url, host, json_string_value(v));
		cdn_batch_send(b, env->net, &req, cdn_fastly_check);
	}
	cdn_batch_seal(b, env->loop);
	return 0;
}

const cdn_driver cdn_fastly = { "fastly", CDN_STAGE_PURGE, fastly_configure, fastly_deliver,
	                        cdn_state_free };

/* cdn/fastly: purges by surrogate key (POST /service/{id}/purge/{key} with
 * Fastly-Key; Fastly-Soft-Purge: 1 when soft), and removed objects by URL
 * (POST /purge/{host}{path}). Fastly tags cached names with the origin's
 * Surrogate-Key header itself. */
#include "deliver/cdn/cdn.h"

#include "core/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fastly {
	char api[512];
	char service[128];
	char key_header[600];
	int soft;
};

static int fastly_configure(const config *cfg, void **state, char *err, size_t errlen)
{
	const char *service = config_get(cfg, "fastly-service-id");
	const char *key = config_get(cfg, "fastly-api-key");
	const char *api = config_get(cfg, "fastly-api-url");
	const char *soft = config_get(cfg, "fastly-soft-purge");
	struct fastly *f;

	if (service == NULL || *service == '\0')
		return 1;
	if (key == NULL || *key == '\0' || strlen(key) > 500 || strlen(service) > 100 ||
	    strchr(key, '\n') != NULL) {
		snprintf(err, errlen, "fastly: --fastly-api-key is required with --fastly-service-id");
		return SAYIN_ECONFIG;
	}
	if (soft != NULL && strcmp(soft, "on") != 0 && strcmp(soft, "off") != 0) {
		snprintf(err, errlen, "--fastly-soft-purge: '%s' is not on or off", soft);
		return SAYIN_ECONFIG;
	}
	f = calloc(1, sizeof(*f));
	if (f == NULL)
		return -ENOMEM;
	snprintf(f->api, sizeof(f->api), "%s", api);
	while (strlen(f->api) > 0 && f->api[strlen(f->api) - 1] == '/')
		f->api[strlen(f->api) - 1] = '\0';
	snprintf(f->service, sizeof(f->service), "%s", service);
	snprintf(f->key_header, sizeof(f->key_header), "Fastly-Key: %s", key);
	f->soft = soft != NULL && strcmp(soft, "on") == 0;
	*state = f;
	return 0;
}

/* 401/403: the key is wrong or lacks purge_select: retrying cannot help. */
static int fastly_ok(const net_response *res, const net_headers *h, cdn_result *out)
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
	const char *hdrs[4] = { f->key_header, "Accept: application/json",
		                f->soft ? "Fastly-Soft-Purge: 1" : NULL, NULL };
	const char *host = strstr(env->base_url, "://");
	const json_t *v;
	size_t i;

	(void)job_id;
	if (b == NULL)
		return -ENOMEM;
	host = host ? host + 3 : env->base_url;
	json_array_foreach(json_object_get(payload, "keys"), i, v) {
		char url[1024];
		net_request req = { .method = "POST", .url = url, .headers = hdrs };
		snprintf(url, sizeof(url), "%s/service/%s/purge/%s", f->api, f->service,
		         json_string_value(v));
		cdn_batch_send(b, env->net, &req, fastly_ok);
	}
	json_array_foreach(json_object_get(payload, "removed"), i, v) {
		char url[2048];
		net_request req = { .method = "POST", .url = url, .headers = hdrs };
		snprintf(url, sizeof(url), "%s/purge/%s%s", f->api, host, json_string_value(v));
		cdn_batch_send(b, env->net, &req, fastly_ok);
	}
	cdn_batch_seal(b, env->loop);
	return 0;
}

static void fastly_destroy(void *state)
{
	free(state);
}

const cdn_driver cdn_fastly = { "fastly", CDN_STAGE_PURGE, fastly_configure, fastly_deliver,
	                        fastly_destroy };

/* cdn/cloudflare: the Cloudflare driver: purges by URL or by cache tag. */
/* POST /zones/{zone}/purge_cache with an API token, by "files" (absolute
 * URLs, at most 30 a request) or by "tags" (Cache-Tag: the edge must be
 * told to read our Surrogate-Key as tags, see
 * cdn-config/cloudflare/README.md). */
#include "deliver/cdn/cdn.h"

#include "core/error.h"
#include "core/jsonstore.h"
#include "deliver/payload.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FILES_PER_REQUEST 30 /* also the limit of tags in one purge */

struct cloudflare {
	cdn_api api;            /* api.id: the zone */
	int by_tags;
};

static int cloudflare_configure(const config *cfg, void **state, char *err, size_t errlen)
{
	const char *by = config_get(cfg, "cloudflare-purge-by");
	struct cloudflare c = { 0 };
	int rc = cdn_api_configure(cfg, "cloudflare", "cloudflare-zone-id", "cloudflare-api-token",
	                           "cloudflare-api-url", "Authorization: Bearer ", &c.api, err,
	                           errlen);

	if (rc != 0)
		return rc;
	if (by == NULL || (strcmp(by, "files") != 0 && strcmp(by, "tags") != 0)) {
		snprintf(err, errlen, "--cloudflare-purge-by: '%s' is not files or tags", by ? by : "");
		return SAYIN_ECONFIG;
	}
	c.by_tags = strcmp(by, "tags") == 0;
	return cdn_state_keep(&c, sizeof(c), state);
}

/* Cloudflare answers {"success": true|false, "errors": [{"code","message"}]}. */
int cdn_cloudflare_check(const net_response *res, const net_headers *h, cdn_result *out)
{
	json_t *j = json_loadb(res->body, res->body_len, 0, NULL);
	const json_t *e0 = json_array_get(json_object_get(j, "errors"), 0);
	(void)h;
	if (res->status >= 200 && res->status < 300 && json_is_true(json_object_get(j, "success"))) {
		json_decref(j);
		return 0;
	}
	out->permanent = res->status == 401 || res->status == 403;
	snprintf(out->error, sizeof(out->error), "HTTP %ld: %s%s", res->status,
	         json_string_value(json_object_get(e0, "message")) ?: "no success in the answer",
	         out->permanent ? " (API token rejected)" : "");
	json_decref(j);
	return -1;
}

/* Sends {"files": [...]} or {"tags": [...]} (name) and empties list. */
static void send_list(cdn_batch *b, const cdn_env *env, const struct cloudflare *c,
                      const char *name, json_t *list)
{
	json_t *body = json_pack("{s:O}", name, list);
	char url[1024], *s = body ? jsonstore_dump_flags(body, JSON_COMPACT, NULL) : NULL;
	const char *hdrs[] = { c->api.auth, "Content-Type: application/json", NULL };
	net_request req = { .method = "POST", .url = url, .headers = hdrs, .body = s,
		            .body_len = s ? strlen(s) : 0 };
	snprintf(url, sizeof(url), "%s/zones/%s/purge_cache", c->api.url, c->api.id);
	if (s != NULL)
		cdn_batch_send(b, env->net, &req, cdn_cloudflare_check);
	free(s);
	json_decref(body);
	json_array_clear(list);
}

static int cloudflare_deliver(void *state, const cdn_env *env, const char *job_id,
                              const json_t *payload, cdn_done_fn done, void *arg)
{
	struct cloudflare *c = state;
	cdn_batch *b = cdn_batch_new("cloudflare", done, arg);
	json_t *files = json_array(), *tags = json_array();
	static const enum payload_list lists[] = { PAYLOAD_PATHS, PAYLOAD_REMOVED };
	const json_t *v;
	size_t i;

	(void)job_id;
	if (b == NULL || files == NULL || tags == NULL) {
		json_decref(files);
		json_decref(tags);
		free(b);
		return -ENOMEM;
	}
	if (c->by_tags) {
		json_array_foreach(payload_list(payload, PAYLOAD_KEYS), i, v) {
			json_array_append(tags, (json_t *)v);
			if (json_array_size(tags) == FILES_PER_REQUEST)
				send_list(b, env, c, "tags", tags);
		}
	}
	/* Removed objects carry no tag: purged by URL in either mode. */
	for (int l = c->by_tags ? 1 : 0; l < 2; l++) {
		json_array_foreach(payload_list(payload, lists[l]), i, v) {
			char url[2048];
			snprintf(url, sizeof(url), "%s%s", env->base_url, json_string_value(v));
			json_array_append_new(files, json_string(url));
			if (json_array_size(files) == FILES_PER_REQUEST)
				send_list(b, env, c, "files", files);
		}
	}
	if (json_array_size(files) > 0)
		send_list(b, env, c, "files", files);
	if (json_array_size(tags) > 0)
		send_list(b, env, c, "tags", tags);
	json_decref(files);
	json_decref(tags);
	cdn_batch_seal(b, env->loop);
	return 0;
}

const cdn_driver cdn_cloudflare = { "cloudflare", CDN_STAGE_PURGE, cloudflare_configure,
	                            cloudflare_deliver, cdn_state_free };

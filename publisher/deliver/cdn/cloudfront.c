/* cdn/cloudfront: the CloudFront driver: one invalidation per event. */
/* CreateInvalidation (POST /2020-05-31/distribution/{id}/invalidation, an
 * InvalidationBatch XML) for the changed and removed paths, signed with
 * SigV4 (service cloudfront, region us-east-1: CloudFront's API is
 * global). The CallerReference is the outbox job's id, so a retried job
 * cannot create a second invalidation. */
#include "deliver/cdn/aws.h"
#include "deliver/cdn/cdn.h"

#include "core/buf.h"
#include "core/error.h"
#include "deliver/payload.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define PATHS_MAX 3000 /* CloudFront's limit of paths in one invalidation */

struct cloudfront {
	char api[512];
	char distribution[128];
	cdn_aws aws;
};

static int cloudfront_configure(const config *cfg, void **state, char *err, size_t errlen)
{
	const char *dist = config_get(cfg, "cloudfront-distribution-id");
	struct cloudfront c = { 0 };
	int rc;

	if (dist == NULL || *dist == '\0')
		return 1;
	if (strlen(dist) > 100 || strspn(dist, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != strlen(dist)) {
		snprintf(err, errlen, "--cloudfront-distribution-id: '%s' is not a distribution id", dist);
		return SAYIN_ECONFIG;
	}
	rc = cdn_aws_configure(cfg, "cloudfront", &c.aws, err, errlen);
	if (rc != 0)
		return rc;
	cdn_copy_base_url(c.api, sizeof(c.api), config_get(cfg, "cloudfront-api-url"));
	snprintf(c.distribution, sizeof(c.distribution), "%s", dist);
	return cdn_state_keep(&c, sizeof(c), state);
}

int cdn_cloudfront_check(const net_response *res, const net_headers *h, cdn_result *out)
{
	const char *code = strstr(res->body, "<Code>");
	(void)h;
	if (res->status == 201)
		return 0;
	out->permanent = res->status == 403 || res->status == 401;
	snprintf(out->error, sizeof(out->error), "HTTP %ld %.*s", res->status,
	         code ? (int)strcspn(code + 6, "<") : 0, code ? code + 6 : "");
	return -1;
}

static int cloudfront_deliver(void *state, const cdn_env *env, const char *job_id,
                              const json_t *payload, cdn_done_fn done, void *arg)
{
	struct cloudfront *c = state;
	static const enum payload_list lists[] = { PAYLOAD_PATHS, PAYLOAD_REMOVED };
	buf xml = BUF_INIT;
	char url[1024], sigv4[128];
	size_t n = 0;
	cdn_batch *b;

	for (int l = 0; l < 2; l++)
		n += json_array_size(payload_list(payload, lists[l]));
	if (n > PATHS_MAX)
		n = PATHS_MAX; /* more would be refused: the rest waits for the next event */
	/* The paths are ours ([A-Za-z0-9/._-]), so no escaping is needed, but
	 * <, > and & are refused rather than trusted. */
	buf_printf(&xml, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	                 "<InvalidationBatch xmlns=\"http://cloudfront.amazonaws.com/doc/"
	                 "2020-05-31/\"><Paths><Quantity>%zu</Quantity><Items>", n);
	for (int l = 0, k = 0; l < 2; l++) {
		const json_t *v;
		size_t i;
		json_array_foreach(payload_list(payload, lists[l]), i, v) {
			const char *p = json_string_value(v);
			if ((size_t)k++ >= n)
				break;
			if (p == NULL || strpbrk(p, "<>&") != NULL) {
				buf_free(&xml);
				return -EINVAL;
			}
			buf_printf(&xml, "<Path>%s</Path>", p);
		}
	}
	buf_printf(&xml, "</Items></Paths><CallerReference>sayin-%s</CallerReference>"
	                 "</InvalidationBatch>", job_id);
	b = buf_failed(&xml) ? NULL : cdn_batch_new("cloudfront", done, arg);
	if (b == NULL) {
		buf_free(&xml);
		return -ENOMEM;
	}
	if (n > 0) {
		char sha[65], sha_header[100];
		cdn_aws_sha256_hex(xml.data, xml.len, sha);
		snprintf(sha_header, sizeof(sha_header), "x-amz-content-sha256: %s", sha);
		const char *hdrs[] = { "Content-Type: text/xml", sha_header, NULL };
		net_request req = { .method = "POST", .url = url, .headers = hdrs, .body = xml.data,
			            .body_len = xml.len, .aws_sigv4 = sigv4, .userpwd = c->aws.userpwd,
			            .timeout_ms = 30000 };
		snprintf(url, sizeof(url), "%s/2020-05-31/distribution/%s/invalidation", c->api,
		         c->distribution);
		/* CloudFront's endpoint is global: signed for us-east-1. */
		snprintf(sigv4, sizeof(sigv4), "aws:amz:us-east-1:cloudfront");
		cdn_batch_send(b, env->net, &req, cdn_cloudfront_check);
	}
	buf_free(&xml);
	cdn_batch_seal(b, env->loop);
	return 0;
}

const cdn_driver cdn_cloudfront = { "cloudfront", CDN_STAGE_PURGE, cloudfront_configure,
	                            cloudfront_deliver, cdn_state_free };

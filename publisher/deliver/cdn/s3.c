/* cdn/s3: the S3 driver: mirrors changed names and new objects into a bucket. */
/* Pushes to an S3-compatible bucket (CloudFront on S3, Cloudflare on R2,
 * Bunny storage), path-style: PUT {endpoint}/{bucket}/{key} of every new
 * immutable object and of the current bytes of every changed name, each
 * with its Content-Type and the origin's Cache-Control; DELETE of removed
 * names and objects. Signed with SigV4 (service s3) by libcurl, with
 * x-amz-content-sha256. A name ending in "/" is stored as ".../index.html".
 * Only the identity encoding is pushed: a bucket cannot negotiate. */
#include "deliver/cdn/aws.h"
#include "deliver/cdn/cdn.h"

#include "core/error.h"
#include "core/log.h"
#include "deliver/payload.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define OBJECT_CACHE "public, max-age=31536000, immutable"

struct s3 {
	char endpoint[512];
	char bucket[128];
	char sigv4[128];
	char name_cache[256];
	cdn_aws aws;
};

static int s3_configure(const config *cfg, void **state, char *err, size_t errlen)
{
	const char *bucket = config_get(cfg, "s3-bucket");
	const char *endpoint = config_get(cfg, "s3-endpoint");
	struct s3 s = { 0 };
	int rc;

	if (bucket == NULL || *bucket == '\0')
		return 1;
	if (strlen(bucket) > 63 || strspn(bucket, "abcdefghijklmnopqrstuvwxyz0123456789.-") !=
	                               strlen(bucket)) {
		snprintf(err, errlen, "--s3-bucket: '%s' is not a bucket name", bucket);
		return SAYIN_ECONFIG;
	}
	rc = cdn_aws_configure(cfg, "s3", &s.aws, err, errlen);
	if (rc != 0)
		return rc;
	if (endpoint != NULL && *endpoint != '\0')
		cdn_copy_base_url(s.endpoint, sizeof(s.endpoint), endpoint);
	else
		snprintf(s.endpoint, sizeof(s.endpoint), "https://s3.%s.amazonaws.com", s.aws.region);
	snprintf(s.bucket, sizeof(s.bucket), "%s", bucket);
	snprintf(s.sigv4, sizeof(s.sigv4), "aws:amz:%s:s3", s.aws.region);
	/* The same policy the origin sends for names (see origin/serve.c). */
	snprintf(s.name_cache, sizeof(s.name_cache),
	         "public, max-age=%s, s-maxage=%s, stale-while-revalidate=%s, stale-if-error=%s",
	         config_get(cfg, "name-max-age"), config_get(cfg, "name-shared-max-age"),
	         config_get(cfg, "stale-while-revalidate"), config_get(cfg, "stale-if-error"));
	return cdn_state_keep(&s, sizeof(s), state);
}

int cdn_s3_check(const net_response *res, const net_headers *h, cdn_result *out)
{
	const char *code = strstr(res->body, "<Code>");
	(void)h;
	if (res->status >= 200 && res->status < 300)
		return 0;
	out->permanent = res->status == 403 || res->status == 401;
	snprintf(out->error, sizeof(out->error), "HTTP %ld %.*s", res->status,
	         code ? (int)strcspn(code + 6, "<") : 0, code ? code + 6 : "");
	return -1;
}

static void object_url(const struct s3 *s, const char *path, char *url, size_t len)
{
	size_t plen = strlen(path);
	snprintf(url, len, "%s/%s%s%s", s->endpoint, s->bucket, path,
	         plen > 0 && path[plen - 1] == '/' ? "index.html" : "");
}

static void put(cdn_batch *b, const cdn_env *env, const struct s3 *s, const char *path,
                const void *bytes, size_t len, const char *ctype, const char *cache)
{
	char url[2048], sha[65], h_sha[100], h_type[128], h_cache[300];
	const char *hdrs[] = { h_sha, h_type, h_cache, NULL };
	net_request req = { .method = "PUT", .url = url, .headers = hdrs,
		            .body = len ? bytes : "", .body_len = len, .aws_sigv4 = s->sigv4,
		            .userpwd = s->aws.userpwd, .timeout_ms = 120000 };

	object_url(s, path, url, sizeof(url));
	cdn_aws_sha256_hex(bytes, len, sha);
	snprintf(h_sha, sizeof(h_sha), "x-amz-content-sha256: %s", sha);
	snprintf(h_type, sizeof(h_type), "Content-Type: %s", ctype);
	snprintf(h_cache, sizeof(h_cache), "Cache-Control: %s", cache);
	cdn_batch_send(b, env->net, &req, cdn_s3_check);
}

static void del(cdn_batch *b, const cdn_env *env, const struct s3 *s, const char *path)
{
	static const char empty_sha[] =
		"x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
	char url[2048];
	const char *hdrs[] = { empty_sha, NULL };
	net_request req = { .method = "DELETE", .url = url, .headers = hdrs, .aws_sigv4 = s->sigv4,
		            .userpwd = s->aws.userpwd };
	object_url(s, path, url, sizeof(url));
	cdn_batch_send(b, env->net, &req, cdn_s3_check);
}

static int s3_deliver(void *state, const cdn_env *env, const char *job_id, const json_t *payload,
                      cdn_done_fn done, void *arg)
{
	struct s3 *s = state;
	cdn_batch *b;
	store_txn *txn;
	const json_t *v;
	size_t i;
	int rc;

	(void)job_id;
	rc = store_txn_begin(env->st, 0, &txn);
	if (rc != 0)
		return rc;
	b = cdn_batch_new("s3", done, arg);
	if (b == NULL) {
		store_txn_abort(txn);
		return -ENOMEM;
	}
	/* Bytes are copied into each request (net copies bodies), so the
	 * read transaction ends before any request goes out. */
	json_array_foreach(payload_list(payload, PAYLOAD_OBJECTS), i, v) {
		uint8_t hash[STORE_HASH_LEN];
		const char *hex = payload_object_sha256(v);
		store_object obj;
		if (hex != NULL && store_hash_from_hex(hex, strlen(hex), hash) == 0 &&
		    store_get_object(txn, hash, &obj) == 0)
			put(b, env, s, payload_object_path(v), obj.data,
			    (size_t)obj.size, obj.content_type, OBJECT_CACHE);
		/* An object gone since (its post deleted) needs no upload. */
	}
	json_array_foreach(payload_list(payload, PAYLOAD_PATHS), i, v) {
		const char *path = json_string_value(v);
		store_name name;
		store_object obj;
		if (store_get_name(txn, path, &name) == 0 && store_get_object(txn, name.hash, &obj) == 0)
			put(b, env, s, path, obj.data, (size_t)obj.size, obj.content_type, s->name_cache);
		else
			del(b, env, s, path); /* removed since: the bucket follows */
	}
	json_array_foreach(payload_list(payload, PAYLOAD_REMOVED), i, v)
		del(b, env, s, json_string_value(v));
	store_txn_abort(txn);
	cdn_batch_seal(b, env->loop);
	return 0;
}

const cdn_driver cdn_s3 = { "s3", CDN_STAGE_STORAGE, s3_configure, s3_deliver, cdn_state_free };

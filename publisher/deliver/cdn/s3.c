/* cdn/s3: the S3 driver: mirrors changed names and new objects into a bucket. */
/* Pushes to an S3-compatible bucket (CloudFront on S3, Cloudflare on R2,
 * Ceph RGW, MinIO), path-style: PUT {endpoint}/{bucket}/{key} of every new
 * immutable object and of the current bytes of every changed name; DELETE
 * of removed names and objects. Signed with SigV4 (service s3) by libcurl,
 * with x-amz-content-sha256. A name ending in "/" is stored as
 * ".../index.html", so no key ends in "/" and no edge needs a listing.
 *
 * What the origin would answer travels with each key, so an edge whose
 * backend is the bucket can answer the same (cdn-config/README.md,
 * "Storage as the backend"):
 * - Content-Type and Cache-Control as the origin sends them;
 * - a name's CDN-Cache-Control and Surrogate-Key, which S3 cannot store as
 *   headers, as the user metadata x-amz-meta-cdn-cache-control and
 *   x-amz-meta-surrogate-key (an edge maps them back; S3 returns them as
 *   x-amz-meta-* response headers);
 * - Content-Encoding of a precompressed variant.
 *
 * Precompressed variants. A bucket cannot negotiate Accept-Encoding: a key
 * has one set of bytes. So each encoding is a key of its own: a name's
 * identity bytes under its key (what a client without any coding gets, and
 * what a plain S3 website or a CDN without a URL rewrite serves), its gzip
 * variant under "_gzip/" + key and its brotli variant under "_br/" + key,
 * each with its Content-Encoding. An edge picks the key from the fan's
 * normalized Accept-Encoding (br, gzip or none, as the origin chooses),
 * and adds Vary: Accept-Encoding. When the store holds no such variant
 * (a small name is not compressed), the variant key holds the identity
 * bytes without Content-Encoding: the edge needs no fallback, and every key
 * holds what the origin would send a client that accepts that coding and
 * no better one. Objects (audio, images, JSON) are stored once, identity:
 * Opus and PNG do not compress, and an object has no variants at the
 * origin either. No name starts with "_", so the prefixes collide with
 * nothing. */
#include "deliver/cdn/aws.h"
#include "deliver/cdn/cdn.h"

#include "core/error.h"
#include "core/log.h"
#include "deliver/payload.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define OBJECT_CACHE "public, max-age=31536000, immutable"

/* Key prefixes and Content-Encoding by enum store_encoding. */
static const char *const variant_prefix[STORE_ENC_COUNT] = {
	[STORE_ENC_IDENTITY] = "",
	[STORE_ENC_GZIP] = "/_gzip",
	[STORE_ENC_BR] = "/_br",
};
static const char *const variant_coding[STORE_ENC_COUNT] = {
	[STORE_ENC_IDENTITY] = NULL,
	[STORE_ENC_GZIP] = "gzip",
	[STORE_ENC_BR] = "br",
};

struct s3 {
	char endpoint[512];
	char bucket[128];
	char sigv4[128];
	char name_cache[256];
	char name_cdn_cache[256];
	cdn_aws aws;
};

/* What a name's PUT carries besides its bytes and type. */
struct name_meta {
	const char *coding;        /* Content-Encoding; NULL: identity */
	const char *surrogate_key; /* "" or NULL: none */
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
	snprintf(s.name_cdn_cache, sizeof(s.name_cdn_cache),
	         "max-age=%s, stale-while-revalidate=%s, stale-if-error=%s",
	         config_get(cfg, "name-shared-max-age"), config_get(cfg, "stale-while-revalidate"),
	         config_get(cfg, "stale-if-error"));
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

/* The URL of path's key; prefix is one of variant_prefix. */
static void object_url(const struct s3 *s, const char *prefix, const char *path, char *url,
                       size_t len)
{
	size_t plen = strlen(path);
	snprintf(url, len, "%s/%s%s%s%s", s->endpoint, s->bucket, prefix, path,
	         plen > 0 && path[plen - 1] == '/' ? "index.html" : "");
}

/* PUT of one key. meta NULL: an object (no metadata); else a name's. */
static void put(cdn_batch *b, const cdn_env *env, const struct s3 *s, const char *prefix,
                const char *path, const void *bytes, size_t len, const char *ctype,
                const struct name_meta *meta)
{
	char url[2048], sha[65], h_sha[100], h_type[128], h_cache[300], h_cdn[300], h_enc[64];
	char h_key[STORE_SURROGATE_KEY_MAX + 32];
	const char *hdrs[8];
	size_t n = 0;
	net_request req = { .method = "PUT", .url = url, .headers = hdrs,
		            .body = len ? bytes : "", .body_len = len, .aws_sigv4 = s->sigv4,
		            .userpwd = s->aws.userpwd, .timeout_ms = 120000 };

	object_url(s, prefix, path, url, sizeof(url));
	cdn_aws_sha256_hex(bytes, len, sha);
	snprintf(h_sha, sizeof(h_sha), "x-amz-content-sha256: %s", sha);
	snprintf(h_type, sizeof(h_type), "Content-Type: %s", ctype);
	snprintf(h_cache, sizeof(h_cache), "Cache-Control: %s", meta ? s->name_cache : OBJECT_CACHE);
	hdrs[n++] = h_sha;
	hdrs[n++] = h_type;
	hdrs[n++] = h_cache;
	if (meta != NULL) {
		snprintf(h_cdn, sizeof(h_cdn), "x-amz-meta-cdn-cache-control: %s", s->name_cdn_cache);
		hdrs[n++] = h_cdn;
		if (meta->surrogate_key != NULL && meta->surrogate_key[0] != '\0') {
			snprintf(h_key, sizeof(h_key), "x-amz-meta-surrogate-key: %s",
			         meta->surrogate_key);
			hdrs[n++] = h_key;
		}
		if (meta->coding != NULL) {
			snprintf(h_enc, sizeof(h_enc), "Content-Encoding: %s", meta->coding);
			hdrs[n++] = h_enc;
		}
	}
	hdrs[n] = NULL;
	cdn_batch_send(b, env->net, &req, cdn_s3_check);
}

static void del_key(cdn_batch *b, const cdn_env *env, const struct s3 *s, const char *prefix,
                    const char *path)
{
	static const char empty_sha[] =
		"x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
	char url[2048];
	const char *hdrs[] = { empty_sha, NULL };
	net_request req = { .method = "DELETE", .url = url, .headers = hdrs, .aws_sigv4 = s->sigv4,
		            .userpwd = s->aws.userpwd };
	object_url(s, prefix, path, url, sizeof(url));
	cdn_batch_send(b, env->net, &req, cdn_s3_check);
}

/* DELETE of a removed path: an object's one key, a name's every variant
 * key (S3 answers 204 for a key that is not there). */
static void del(cdn_batch *b, const cdn_env *env, const struct s3 *s, const char *path)
{
	int e;
	for (e = 0; e < STORE_ENC_COUNT; e++) {
		del_key(b, env, s, variant_prefix[e], path);
		if (strncmp(path, "/a/", 3) == 0)
			break; /* objects have no variants */
	}
}

/* PUT of every variant key of a name: the store's variant for each coding
 * it holds, else the identity bytes (see the header comment). */
static void put_name(cdn_batch *b, const cdn_env *env, const struct s3 *s, store_txn *txn,
                     const char *path, const store_name *name, const store_object *identity)
{
	int e;
	for (e = 0; e < STORE_ENC_COUNT; e++) {
		store_object obj;
		struct name_meta meta = { NULL, name->surrogate_key };
		if (e != STORE_ENC_IDENTITY && (name->encodings & (1u << e)) != 0 &&
		    store_get_object(txn, name->variant[e], &obj) == 0)
			meta.coding = variant_coding[e];
		else
			obj = *identity; /* identity, or a variant gone missing */
		put(b, env, s, variant_prefix[e], path, obj.data, (size_t)obj.size,
		    identity->content_type, &meta);
	}
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
			put(b, env, s, "", payload_object_path(v), obj.data, (size_t)obj.size,
			    obj.content_type, NULL);
		/* An object gone since (its post deleted) needs no upload. */
	}
	json_array_foreach(payload_list(payload, PAYLOAD_PATHS), i, v) {
		const char *path = json_string_value(v);
		store_name name;
		store_object obj;
		if (store_get_name(txn, path, &name) == 0 && store_get_object(txn, name.hash, &obj) == 0)
			put_name(b, env, s, txn, path, &name, &obj);
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

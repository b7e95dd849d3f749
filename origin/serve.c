/* serve: the origin's request handler: URL path -> stored object -> response,
 * with the HTTP semantics CDNs and browsers expect (RFC 9110, 9111, 9213):
 * conditional and range requests, precompressed variants, CORS, and the one
 * caching policy table. It only reads the store. */
#include "serve.h"

#include "httpsem.h"

#include "core/accesslog.h"
#include "core/error.h"
#include "core/log.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
/* Read transactions a loop keeps reset for the next requests: about the
 * responses in flight at once on one loop over a few hundred edge
 * connections; more are freed when they end. */
#define READERS_KEPT 64

enum route_kind { ROUTE_OBJECT, ROUTE_NAME, ROUTE_OTHER, ROUTE_COUNT };
enum method_kind { METHOD_GET, METHOD_HEAD, METHOD_OPTIONS, METHOD_OTHER, METHOD_COUNT };
enum { STATUS_CLASSES = 5 }; /* 1xx .. 5xx */

/* httpsem numbers content codings as the store numbers variants. */
_Static_assert((int)HTTPSEM_IDENTITY == (int)STORE_ENC_IDENTITY &&
	               (int)HTTPSEM_GZIP == (int)STORE_ENC_GZIP &&
	               (int)HTTPSEM_BR == (int)STORE_ENC_BR &&
	               (int)HTTPSEM_CODING_COUNT == (int)STORE_ENC_COUNT,
               "httpsem codings must match enum store_encoding");

static const char *const route_labels[ROUTE_COUNT] = { "object", "name", "other" };
static const char *const method_labels[METHOD_COUNT] = { "GET", "HEAD", "OPTIONS", "other" };
static const char *const encoding_tokens[STORE_ENC_COUNT] = {
	[STORE_ENC_IDENTITY] = "identity",
	[STORE_ENC_GZIP] = "gzip",
	[STORE_ENC_BR] = "br",
};

/* ---- the caching policy table ----
 * Every Cache-Control and CDN-Cache-Control the origin sends comes from this
 * table, filled once by serve_create from serve_options. */
enum cache_policy_kind {
	POLICY_OBJECT, /* content-addressed: the bytes under a URL never change */
	POLICY_NAME,   /* feeds and pages: short for browsers, long for CDNs, purged by key */
	/* 404: cacheable briefly. A miss costs little to answer, but scanners
	 * and clients polling a feed that does not exist yet would otherwise
	 * reach the origin through every edge on every request; 10 s bounds
	 * both that load and how long a newly published name (which has no
	 * surrogate key to purge while it is a 404) can stay hidden. */
	POLICY_MISS,
	/* 410: a name taken down for good (publisher's author remove). Cached
	 * as briefly as a name is by browsers (name-max-age), by CDNs too: the
	 * edges were purged when it went, and a 410 that stayed for the long
	 * shared lifetime would outlive a mistaken removal's repair. */
	POLICY_GONE,
	/* Everything else (errors, 406, 416, /healthz, /metrics, OPTIONS):
	 * never stored, so a transient answer is never replayed. */
	POLICY_NONE,
	POLICY_COUNT
};

struct cache_policy {
	const char *cache_control;
	const char *cdn_cache_control; /* RFC 9213 CDN-Cache-Control; NULL: none */
};

/* Extensions of /a/<sha256>.<ext> and the content type each must have. */
static const struct {
	const char *ext;
	const char *content_type;
} object_exts[] = {
	{ "opus", "audio/ogg; codecs=opus" },
	{ "m4a", "audio/mp4" },
	{ "json", "application/json" },
	{ "png", "image/png" }, /* share cards (og:image) */
};

#define ALLOW_METHODS "GET, HEAD, OPTIONS"
#define EMBED_FRAME_ANCESTORS                                                                \
	"frame-ancestors 'self' https://twitter.com https://*.twitter.com https://x.com "      \
	"https://*.x.com https://*.facebook.com"
#define CORS_EXPOSE "Content-Range, Content-Length, ETag"
#define CORS_ALLOW_HEADERS "Range, If-None-Match, If-Modified-Since, If-Range"
#define TEXT_TYPE "text/plain; charset=utf-8"

/* Latency buckets, seconds: from a hot 304 to a slow client's large object. */
static const double duration_bounds[] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
	                                  0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
	                                  1,      2.5,     5,      10 };

struct serve_metrics {
	metrics_id requests[METHOD_COUNT][STATUS_CLASSES][ROUTE_COUNT];
	metrics_id response_bytes[ROUTE_COUNT];
	metrics_id duration[ROUTE_COUNT];
	metrics_id not_modified;
	metrics_id partial;
	metrics_id aborted;
};

/* What one request needs after on_request returns: the read transaction the
 * body points into, a malloc'd body, and what on_complete records. Taken
 * from the handler's free list and given back by the release callback, so
 * steady traffic allocates nothing. */
struct serve_req {
	struct serve_req *next_free;
	serve_handler *sh;
	store_txn *txn; /* open while the body points into LMDB's map */
	char *owned;    /* a malloc'd body (/metrics), freed on release */
	unsigned char method, route;
	signed char encoding; /* enum store_encoding, -1 when not a name */
	unsigned char partial;
	unsigned char validator; /* enum accesslog_validator */
	uint64_t range_first, range_last;
};

enum { REQ_BLOCK = 64 };
struct req_block {
	struct req_block *next;
	struct serve_req reqs[REQ_BLOCK];
};

struct serve_handler {
	http_handler base; /* first: the http core hands us this pointer */
	store *st;
	/* Read transactions renewed rather than begun per request; one per
	 * loop, like the handler. */
	store_reader *reader;
	serve_options opt; /* a copy: serve_set_options replaces it on this loop */
	const serve_metrics *ids; /* NULL: no metrics */
	metrics_shard *shard;     /* likewise */
	struct cache_policy policy[POLICY_COUNT];
	char name_cache_control[192];
	char name_cdn_cache_control[160];
	char gone_cache_control[96];  /* POLICY_GONE: name-max-age for browsers and CDNs */
	struct serve_req *free_reqs;
	struct req_block *blocks;
	/* Last-Modified of the last response: hot objects repeat. */
	int64_t date_cache_time;
	char date_cache[32];
};

/* ---- request headers, scanned once ---- */

struct req_headers {
	const char *range;
	const char *if_range;
	const char *if_none_match;
	const char *if_modified_since;
	const char *accept_encoding;
	const char *origin;
	const char *ac_request_method;
};

/* The fields serve reads, by name length: one string compare per field, as
 * a switch on the length would do. */
#define REQ_FIELD(name, field) [sizeof(name) - 1] = { name, offsetof(struct req_headers, field) }
static const struct {
	const char *name;
	size_t offset;
} req_fields[30] = {
	REQ_FIELD("Range", range),
	REQ_FIELD("Origin", origin),
	REQ_FIELD("If-Range", if_range),
	REQ_FIELD("If-None-Match", if_none_match),
	REQ_FIELD("Accept-Encoding", accept_encoding),
	REQ_FIELD("If-Modified-Since", if_modified_since),
	REQ_FIELD("Access-Control-Request-Method", ac_request_method),
};

/* One pass over the fields; the first of a repeated field wins. */
static void scan_headers(const http_request *req, struct req_headers *out)
{
	size_t count = http_request_header_count(req);

	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < count; i++) {
		http_header h = http_request_header_at(req, i);
		size_t len = strlen(h.name);
		if (len >= ARRAY_LEN(req_fields) || req_fields[len].name == NULL ||
		    strcasecmp(h.name, req_fields[len].name) != 0)
			continue;
		const char **slot = (const char **)((char *)out + req_fields[len].offset);
		if (*slot == NULL)
			*slot = h.value;
	}
}

/* ---- per-request state ---- */

static struct serve_req *req_state_get(serve_handler *sh)
{
	struct serve_req *r = sh->free_reqs;

	if (r == NULL) {
		struct req_block *b = malloc(sizeof(*b));
		if (b == NULL)
			return NULL;
		b->next = sh->blocks;
		sh->blocks = b;
		for (size_t i = 0; i < REQ_BLOCK; i++) {
			b->reqs[i].next_free = sh->free_reqs;
			sh->free_reqs = &b->reqs[i];
		}
		r = sh->free_reqs;
	}
	sh->free_reqs = r->next_free;
	memset(r, 0, sizeof(*r));
	r->sh = sh;
	r->encoding = -1;
	return r;
}

/* The http release callback: runs once, after on_complete, also when the
 * response could not be sent. Ends the read transaction the body pointed
 * into. */
static void req_state_release(void *arg)
{
	struct serve_req *r = arg;
	serve_handler *sh = r->sh;

	if (r->txn != NULL)
		store_txn_abort(r->txn);
	free(r->owned);
	r->txn = NULL;
	r->owned = NULL;
	r->next_free = sh->free_reqs;
	sh->free_reqs = r;
}

/* ---- responses ---- */

enum { MAX_RESPONSE_HEADERS = 20 };

struct response {
	http_header h[MAX_RESPONSE_HEADERS];
	size_t n;
};

static void add_header(struct response *resp, const char *name, const char *value)
{
	if (resp->n < MAX_RESPONSE_HEADERS)
		resp->h[resp->n++] = (http_header){ name, value };
}

static void add_cors(struct response *resp)
{
	add_header(resp, "Access-Control-Allow-Origin", "*");
	add_header(resp, "Access-Control-Expose-Headers", CORS_EXPOSE);
}

/* The purge keys, as Fastly and Varnish's xkey read them (Surrogate-Key,
 * space-separated) and as Cloudflare and CloudFront read them (Cache-Tag,
 * comma-separated). buf (STORE_SURROGATE_KEY_MAX + 1 bytes) must live until
 * the response is queued. */
static void add_surrogate_keys(struct response *resp, const char *keys, char *buf)
{
	size_t i = 0;
	for (; keys[i] != '\0' && i < STORE_SURROGATE_KEY_MAX; i++)
		buf[i] = keys[i] == ' ' ? ',' : keys[i];
	buf[i] = '\0';
	add_header(resp, "Surrogate-Key", keys);
	add_header(resp, "Cache-Tag", buf);
}

static void add_policy(serve_handler *sh, struct response *resp, enum cache_policy_kind kind)
{
	add_header(resp, "Cache-Control", sh->policy[kind].cache_control);
	if (sh->policy[kind].cdn_cache_control != NULL)
		add_header(resp, "CDN-Cache-Control", sh->policy[kind].cdn_cache_control);
}

/* A short text response. resp may already hold extra headers. */
static void respond_text(serve_handler *sh, http_request *req, struct serve_req *r,
                         struct response *resp, int status, const char *body,
                         enum cache_policy_kind policy, int close_after)
{
	add_header(resp, "Content-Type", TEXT_TYPE);
	add_policy(sh, resp, policy);
	add_header(resp, "X-Content-Type-Options", "nosniff");
	add_cors(resp);
	http_respond(req, status, resp->h, resp->n, body, strlen(body),
	             r == NULL || r->method != METHOD_HEAD, close_after,
	             r != NULL ? req_state_release : NULL, r);
}

static enum method_kind classify_method(const char *m)
{
	if (strcmp(m, "GET") == 0)
		return METHOD_GET;
	if (strcmp(m, "HEAD") == 0)
		return METHOD_HEAD;
	if (strcmp(m, "OPTIONS") == 0)
		return METHOD_OPTIONS;
	return METHOD_OTHER;
}

/* Parses "/a/<64 lowercase hex>.<ext>"; returns 0 and fills hash and the
 * expected content type, or -1 when the path is not an object URL. */
static int parse_object_path(const char *path, uint8_t hash[STORE_HASH_LEN],
                             const char **content_type)
{
	const char *hex = path + 3;

	if (strncmp(path, "/a/", 3) != 0 || strlen(hex) < STORE_HASH_HEX_LEN + 2 ||
	    hex[STORE_HASH_HEX_LEN] != '.' || store_hash_from_hex(hex, STORE_HASH_HEX_LEN, hash) != 0)
		return -1;
	for (size_t i = 0; i < ARRAY_LEN(object_exts); i++) {
		if (strcmp(hex + STORE_HASH_HEX_LEN + 1, object_exts[i].ext) == 0) {
			*content_type = object_exts[i].content_type;
			return 0;
		}
	}
	return -1;
}

static const char *cached_http_date(serve_handler *sh, int64_t t)
{
	if (sh->date_cache[0] == '\0' || sh->date_cache_time != t) {
		http_format_date(t, sh->date_cache);
		sh->date_cache_time = t;
	}
	return sh->date_cache;
}

/* OPTIONS on any path: a CORS preflight (Origin and
 * Access-Control-Request-Method present) or a plain capability query. */
static void respond_options(serve_handler *sh, http_request *req, struct serve_req *r,
                            const struct req_headers *hd)
{
	struct response resp = { .n = 0 };

	add_header(&resp, "Allow", ALLOW_METHODS);
	add_header(&resp, "Access-Control-Allow-Origin", "*");
	if (hd->origin != NULL && hd->ac_request_method != NULL) {
		add_header(&resp, "Access-Control-Allow-Methods", ALLOW_METHODS);
		/* A fixed list rather than an echo: the same answer for every
		 * client, and browsers refuse any header not in it. */
		add_header(&resp, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS);
		add_header(&resp, "Access-Control-Max-Age", "86400");
	}
	add_policy(sh, &resp, POLICY_NONE);
	http_respond(req, 204, resp.h, resp.n, NULL, 0, 0, 0, req_state_release, r);
}

static void respond_metrics(serve_handler *sh, http_request *req, struct serve_req *r)
{
	struct response resp = { .n = 0 };
	char *text = NULL;
	size_t len = 0;
	int rc = metrics_render(sh->opt.metrics_page, &text, &len);

	if (rc != 0) {
		log_warn("serve: /metrics: %s", sayin_strerror(rc));
		respond_text(sh, req, r, &resp, 500, "internal error\n", POLICY_NONE, 0);
		return;
	}
	r->owned = text;
	add_header(&resp, "Content-Type", METRICS_CONTENT_TYPE);
	add_policy(sh, &resp, POLICY_NONE);
	add_header(&resp, "X-Content-Type-Options", "nosniff");
	http_respond(req, 200, resp.h, resp.n, text, len, r->method != METHOD_HEAD, 0,
	             req_state_release, r);
}

/* Serves an object or a name: conditional requests, ranges and variants. */
static void respond_content(serve_handler *sh, http_request *req, struct serve_req *r,
                            const struct req_headers *hd, const uint8_t hash[STORE_HASH_LEN],
                            const char *want_type)
{
	int is_head = r->method == METHOD_HEAD, is_name = r->route == ROUTE_NAME;
	struct response resp = { .n = 0 };
	const char *surrogate_key = NULL;
	char cache_tag[STORE_SURROGATE_KEY_MAX + 1];
	store_txn *txn;
	store_object obj;
	store_name name;
	int64_t modified;
	int rc;

	rc = store_reader_begin(sh->reader, &txn);
	if (rc != 0) {
		log_warn("serve: %s: cannot read the store: %s", req->path, sayin_strerror(rc));
		add_header(&resp, "Retry-After", "1");
		respond_text(sh, req, r, &resp, 503, "store unavailable\n", POLICY_NONE, 0);
		return;
	}
	if (!is_name) {
		rc = store_get_object(txn, hash, &obj);
		/* The extension must match what was stored: one URL per object. */
		if (rc == 0 && strcmp(obj.content_type, want_type) != 0)
			rc = SAYIN_ENOTFOUND;
		modified = obj.created;
	} else {
		rc = store_get_name(txn, req->path, &name);
		if (rc == 0) {
			r->encoding = (signed char)httpsem_choose_encoding(hd->accept_encoding,
			                                           name.encodings | 1u);
			if (r->encoding < 0) {
				store_txn_abort(txn);
				add_header(&resp, "Vary", "Accept-Encoding");
				respond_text(sh, req, r, &resp, 406,
				             "not acceptable: no content coding the client accepts\n",
				             POLICY_NONE, 0);
				return;
			}
			rc = store_get_object(txn, name.variant[r->encoding], &obj);
			surrogate_key = name.surrogate_key;
		}
		modified = name.updated;
	}
	/* A name that was taken down (a removed author's feed and pages)
	 * answers 410, so clients and crawlers stop asking. */
	if (rc == SAYIN_ENOTFOUND && is_name && store_find_gone(txn, req->path) == 0) {
		store_txn_abort(txn);
		respond_text(sh, req, r, &resp, 410, "gone\n", POLICY_GONE, 0);
		return;
	}
	if (rc != 0) {
		store_txn_abort(txn);
		if (rc != SAYIN_ENOTFOUND)
			log_warn("serve: %s: %s", req->path, sayin_strerror(rc));
		if (rc == SAYIN_ENOTFOUND)
			respond_text(sh, req, r, &resp, 404, "not found\n", POLICY_MISS, 0);
		else
			respond_text(sh, req, r, &resp, 500, "internal error\n", POLICY_NONE, 0);
		return;
	}

	/* The ETag is the hash of the bytes sent, so it differs per encoding. */
	char etag[STORE_HASH_HEX_LEN + 3];
	const char *hex = etag + 1;
	const char *last_modified = cached_http_date(sh, modified);
	etag[0] = '"';
	store_hash_to_hex(obj.hash, etag + 1);
	etag[STORE_HASH_HEX_LEN + 1] = '"';
	etag[STORE_HASH_HEX_LEN + 2] = '\0';

	/* RFC 9110 13.2.2: If-None-Match, else If-Modified-Since, then Range. */
	int not_modified;
	int64_t since;
	if (hd->if_none_match != NULL)
		not_modified = httpsem_etag_list_matches(hd->if_none_match, hex, STORE_HASH_HEX_LEN);
	else
		not_modified = hd->if_modified_since != NULL &&
		               httpsem_parse_date(hd->if_modified_since, &since) == 0 && modified <= since;
	if (hd->if_none_match != NULL || hd->if_modified_since != NULL)
		r->validator = !not_modified ? ACCESSLOG_VALIDATOR_CHANGED
		               : hd->if_none_match != NULL ? ACCESSLOG_VALIDATOR_ETAG
		                                           : ACCESSLOG_VALIDATOR_IMS;
	if (not_modified) {
		add_header(&resp, "ETag", etag);
		add_header(&resp, "Last-Modified", last_modified);
		add_policy(sh, &resp, is_name ? POLICY_NAME : POLICY_OBJECT);
		if (is_name) {
			if (surrogate_key[0] != '\0')
				add_surrogate_keys(&resp, surrogate_key, cache_tag);
			add_header(&resp, "Vary", "Accept-Encoding");
		}
		add_cors(&resp);
		/* Headers are copied by http_respond: the map may go now. */
		http_respond(req, 304, resp.h, resp.n, NULL, 0, 0, 0, req_state_release, r);
		store_txn_abort(txn);
		return;
	}

	/* Ranges apply to the bytes sent (the encoded variant for names). An
	 * object's date never changes, so it validates If-Range; a name can
	 * change twice within its one-second Last-Modified, so only its ETag
	 * does (RFC 9110 8.8.2.2). HEAD answers as GET would. */
	enum httpsem_range range = HTTPSEM_RANGE_IGNORE;
	uint64_t first = 0, last = 0;
	if (hd->range != NULL &&
	    (hd->if_range == NULL ||
	     httpsem_if_range_matches(hd->if_range, hex, STORE_HASH_HEX_LEN, modified, !is_name)))
		range = httpsem_parse_range(hd->range, obj.size, &first, &last);

	char content_range[80], *p = content_range;
	p = httpsem_put_str(p, "bytes ");
	if (range == HTTPSEM_RANGE_UNSATISFIABLE) {
		store_txn_abort(txn);
		*p++ = '*';
		*p++ = '/';
		p = httpsem_put_u64(p, obj.size);
		*p = '\0';
		add_header(&resp, "Content-Range", content_range);
		if (is_name)
			add_header(&resp, "Vary", "Accept-Encoding");
		respond_text(sh, req, r, &resp, 416, "range not satisfiable\n", POLICY_NONE, 0);
		return;
	}

	add_header(&resp, "Content-Type", obj.content_type);
	add_header(&resp, "ETag", etag);
	add_header(&resp, "Last-Modified", last_modified);
	add_policy(sh, &resp, is_name ? POLICY_NAME : POLICY_OBJECT);
	if (is_name) {
		size_t plen = strlen(req->path);
		/* The player card page is made to be framed by the networks
		 * (twitter:player); nothing else of ours needs framing. */
		if (plen > 6 && strcmp(req->path + plen - 6, "/embed") == 0)
			add_header(&resp, "Content-Security-Policy", EMBED_FRAME_ANCESTORS);
		if (surrogate_key[0] != '\0')
			add_surrogate_keys(&resp, surrogate_key, cache_tag);
		if (r->encoding != STORE_ENC_IDENTITY)
			add_header(&resp, "Content-Encoding", encoding_tokens[(int)r->encoding]);
		add_header(&resp, "Vary", "Accept-Encoding");
	}
	add_header(&resp, "Accept-Ranges", "bytes");
	add_header(&resp, "X-Content-Type-Options", "nosniff");
	add_cors(&resp);

	const char *body = obj.data;
	uint64_t body_len = obj.size;
	int status = 200;
	if (range == HTTPSEM_RANGE_SINGLE) {
		p = httpsem_put_u64(p, first);
		*p++ = '-';
		p = httpsem_put_u64(p, last);
		*p++ = '/';
		p = httpsem_put_u64(p, obj.size);
		*p = '\0';
		add_header(&resp, "Content-Range", content_range);
		body += first;
		body_len = last - first + 1;
		status = 206;
		r->partial = 1;
		r->range_first = first;
		r->range_last = last;
	}

	if (is_head) {
		/* Headers only: copied by http_respond, so the map may go now. */
		http_respond(req, status, resp.h, resp.n, NULL, body_len, 0, 0, req_state_release, r);
		store_txn_abort(txn);
		return;
	}
	/* Zero-copy: the body points into LMDB's map, so the read transaction
	 * stays open until the core has written it (req_state_release). */
	r->txn = txn;
	http_respond(req, status, resp.h, resp.n, body, body_len, 1, 0, req_state_release, r);
}

static void on_request(http_handler *self, http_request *req)
{
	serve_handler *sh = (serve_handler *)self;
	struct response resp = { .n = 0 };
	enum method_kind method = classify_method(req->method);
	struct req_headers hd;
	uint8_t hash[STORE_HASH_LEN];
	const char *want_type = NULL;
	struct serve_req *r = req_state_get(sh);

	req->data = r;
	if (r == NULL) {
		log_warn("serve: %s: out of memory", req->path);
		respond_text(sh, req, NULL, &resp, 503, "out of memory\n", POLICY_NONE, 1);
		return;
	}
	r->method = (unsigned char)method;
	r->route = ROUTE_OTHER;
	if (method == METHOD_OTHER) {
		add_header(&resp, "Allow", ALLOW_METHODS);
		respond_text(sh, req, r, &resp, 405, "method not allowed\n", POLICY_NONE, 0);
		return;
	}
	if (req->has_body) {
		/* GET, HEAD and OPTIONS have no use for a body; refuse rather than
		 * guess where it ends, and close so it is never read as a request. */
		respond_text(sh, req, r, &resp, 400, "bad request: body not allowed\n", POLICY_NONE, 1);
		return;
	}
	scan_headers(req, &hd);
	if (method == METHOD_OPTIONS) {
		respond_options(sh, req, r, &hd);
		return;
	}
	if (strcmp(req->path, "/healthz") == 0) {
		respond_text(sh, req, r, &resp, 200, "ok\n", POLICY_NONE, 0);
		return;
	}
	if (sh->opt.metrics_page != NULL && strcmp(req->path, "/metrics") == 0) {
		respond_metrics(sh, req, r);
		return;
	}
	r->route = parse_object_path(req->path, hash, &want_type) == 0 ? ROUTE_OBJECT : ROUTE_NAME;
	respond_content(sh, req, r, &hd, hash, want_type);
}

/* ---- metrics and access log, once the response is done ---- */

static void log_access(serve_handler *sh, const http_request *req, const struct serve_req *r,
                       const http_completion *done)
{
	accesslog_entry e = {
		.validator = (enum accesslog_validator)r->validator,
		.partial = r->partial,
		.range_first = r->range_first,
		.range_last = r->range_last,
		.encoding = r->encoding >= 0 ? encoding_tokens[(int)r->encoding] : NULL,
	};

	accesslog_write(sh->opt.edges, req, done, &e);
}

static void on_complete(http_handler *self, http_request *req, const http_completion *done)
{
	serve_handler *sh = (serve_handler *)self;
	const struct serve_req *r = req->data;

	if (r == NULL)
		return;
	if (sh->ids != NULL && sh->shard != NULL) {
		const serve_metrics *ids = sh->ids;
		int cls = done->status / 100;
		cls = cls < 1 ? 1 : cls > STATUS_CLASSES ? STATUS_CLASSES : cls;
		metrics_add(sh->shard, ids->requests[r->method][cls - 1][r->route], 1);
		metrics_add(sh->shard, ids->response_bytes[r->route], done->bytes_sent);
		metrics_observe(sh->shard, ids->duration[r->route], (double)done->duration_ns / 1e9);
		if (done->status == 304)
			metrics_add(sh->shard, ids->not_modified, 1);
		else if (done->status == 206)
			metrics_add(sh->shard, ids->partial, 1);
		if (done->aborted)
			metrics_add(sh->shard, ids->aborted, 1);
	}
	if (accesslog_enabled())
		log_access(sh, req, r, done);
}

/* ---- public API ---- */

int serve_metrics_define(metrics *m, serve_metrics **out)
{
	serve_metrics *ids = calloc(1, sizeof(*ids));
	char labels[128];
	metrics_id id;

	if (ids == NULL)
		return -ENOMEM;
	for (int me = 0; me < METHOD_COUNT; me++) {
		for (int c = 0; c < STATUS_CLASSES; c++) {
			for (int ro = 0; ro < ROUTE_COUNT; ro++) {
				snprintf(labels, sizeof(labels), "method=\"%s\",status=\"%dxx\",route=\"%s\"",
				         method_labels[me], c + 1, route_labels[ro]);
				id = metrics_counter(m, "sayin_origin_requests_total",
				                     "Requests answered by the origin's handler", labels);
				if (id < 0)
					goto fail;
				ids->requests[me][c][ro] = id;
			}
		}
	}
	for (int ro = 0; ro < ROUTE_COUNT; ro++) {
		snprintf(labels, sizeof(labels), "route=\"%s\"", route_labels[ro]);
		id = metrics_counter(m, "sayin_origin_response_bytes_total",
		                     "Response bytes written, headers included", labels);
		if (id < 0)
			goto fail;
		ids->response_bytes[ro] = id;
		id = metrics_histogram(m, "sayin_origin_request_duration_seconds",
		                       "From a request's first byte to its response's last byte written",
		                       labels, duration_bounds, ARRAY_LEN(duration_bounds));
		if (id < 0)
			goto fail;
		ids->duration[ro] = id;
	}
	id = ids->not_modified = metrics_counter(m, "sayin_origin_not_modified_total",
	                                         "304 responses to conditional requests", NULL);
	if (id < 0)
		goto fail;
	id = ids->partial = metrics_counter(m, "sayin_origin_partial_total",
	                                    "206 responses to range requests", NULL);
	if (id < 0)
		goto fail;
	id = ids->aborted = metrics_counter(
		m, "sayin_origin_aborted_total",
		"Responses cut off because the connection died before they were written", NULL);
	if (id < 0)
		goto fail;
	*out = ids;
	return 0;
fail:
	free(ids);
	return id;
}

void serve_metrics_free(serve_metrics *ids)
{
	free(ids);
}

/* Writes "<s-maxage>, stale-while-revalidate=N, stale-if-error=N" and a NUL
 * at p: the lifetimes names share between Cache-Control and
 * CDN-Cache-Control. */
static void put_shared_lifetimes(char *p, const serve_options *opt)
{
	p = httpsem_put_u64(p, opt->name_shared_max_age);
	p = httpsem_put_str(p, ", stale-while-revalidate=");
	p = httpsem_put_u64(p, opt->stale_while_revalidate);
	p = httpsem_put_str(p, ", stale-if-error=");
	p = httpsem_put_u64(p, opt->stale_if_error);
	*p = '\0';
}

void serve_set_options(serve_handler *sh, const serve_options *opt)
{
	char *p;

	sh->opt = *opt;
	p = httpsem_put_str(sh->name_cache_control, "public, max-age=");
	p = httpsem_put_u64(p, opt->name_max_age);
	p = httpsem_put_str(p, ", s-maxage=");
	put_shared_lifetimes(p, opt);
	put_shared_lifetimes(httpsem_put_str(sh->name_cdn_cache_control, "max-age="), opt);
	p = httpsem_put_str(sh->gone_cache_control, "public, max-age=");
	p = httpsem_put_u64(p, opt->name_max_age);
	p = httpsem_put_str(p, ", s-maxage=");
	p = httpsem_put_u64(p, opt->name_max_age);
	*p = '\0';
}

int serve_create(store *st, const serve_options *opt, const serve_metrics *ids,
                 metrics_shard *shard, serve_handler **out)
{
	serve_handler *sh = calloc(1, sizeof(*sh));

	if (sh == NULL)
		return -ENOMEM;
	if (store_reader_new(st, READERS_KEPT, &sh->reader) != 0) {
		free(sh);
		return -ENOMEM;
	}
	sh->base.on_request = on_request;
	sh->base.on_complete = on_complete;
	sh->st = st;
	sh->ids = ids;
	sh->shard = shard;
	serve_set_options(sh, opt);

	sh->policy[POLICY_OBJECT] = (struct cache_policy){ "public, max-age=31536000, immutable", NULL };
	sh->policy[POLICY_NAME] =
		(struct cache_policy){ sh->name_cache_control, sh->name_cdn_cache_control };
	sh->policy[POLICY_MISS] = (struct cache_policy){ "public, max-age=10", NULL };
	sh->policy[POLICY_GONE] = (struct cache_policy){ sh->gone_cache_control, NULL };
	sh->policy[POLICY_NONE] = (struct cache_policy){ "no-store", NULL };
	*out = sh;
	return 0;
}

void serve_destroy(serve_handler *sh)
{
	if (sh == NULL)
		return;
	/* Every response has been released by now (the server is stopped). */
	while (sh->blocks != NULL) {
		struct req_block *next = sh->blocks->next;
		free(sh->blocks);
		sh->blocks = next;
	}
	store_reader_free(sh->reader);
	free(sh);
}

http_handler *serve_http_handler(serve_handler *sh)
{
	return &sh->base;
}

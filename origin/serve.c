/* serve: maps origin URLs to stored objects and answers with CDN-friendly headers. */
#include "serve.h"

#include "error.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* What a URL resolves to decides its caching policy: one table, here. */
enum route_kind { ROUTE_OBJECT, ROUTE_NAME, ROUTE_OTHER };

static const char *const cache_policy[] = {
	/* Content-addressed: the bytes under a URL never change. */
	[ROUTE_OBJECT] = "public, max-age=31536000, immutable",
	/* Names change on publish: short-lived everywhere until purging lands. */
	[ROUTE_NAME] = "public, max-age=60",
	[ROUTE_OTHER] = "no-store",
};

/* Extensions of /a/<sha256>.<ext> and the content type each must have. */
static const struct {
	const char *ext;
	const char *content_type;
} object_exts[] = {
	{ "opus", "audio/ogg; codecs=opus" },
	{ "m4a", "audio/mp4" },
	{ "json", "application/json" },
};

struct serve_handler {
	http_handler base; /* first: the http core hands us this pointer */
	store *st;
};

static void format_http_date(int64_t t, char *buf, size_t len)
{
	time_t secs = (time_t)t;
	struct tm tm;
	gmtime_r(&secs, &tm);
	strftime(buf, len, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static void release_txn(void *arg)
{
	store_txn_abort(arg);
}

static void respond_text(http_request *req, int status, const char *body, const http_header *extra,
                         size_t n_extra)
{
	http_header h[4] = {
		{ "Content-Type", "text/plain; charset=utf-8" },
		{ "Cache-Control", cache_policy[ROUTE_OTHER] },
	};
	size_t n = 2;
	for (size_t i = 0; i < n_extra && n < sizeof(h) / sizeof(h[0]); i++)
		h[n++] = extra[i];
	http_respond(req, status, h, n, body, strlen(body), strcmp(req->method, "HEAD") != 0, 0,
	             NULL, NULL);
}

/* Parses "/a/<64 hex>.<ext>"; returns 0 and fills hash and the expected
 * content type, or -1 when the path is not an object URL. */
static int parse_object_path(const char *path, uint8_t hash[STORE_HASH_LEN],
                             const char **content_type)
{
	const char *hex = path + 3, *dot;
	if (strncmp(path, "/a/", 3) != 0)
		return -1;
	dot = strchr(hex, '.');
	if (dot == NULL || store_hash_from_hex(hex, (size_t)(dot - hex), hash) != 0)
		return -1;
	for (size_t i = 0; i < sizeof(object_exts) / sizeof(object_exts[0]); i++) {
		if (strcmp(dot + 1, object_exts[i].ext) == 0) {
			*content_type = object_exts[i].content_type;
			return 0;
		}
	}
	return -1;
}

static void on_request(http_handler *self, http_request *req)
{
	serve_handler *sh = (serve_handler *)self;
	int is_head = strcmp(req->method, "HEAD") == 0;
	uint8_t hash[STORE_HASH_LEN];
	const char *want_type = NULL;
	enum route_kind kind;
	store_txn *txn;
	store_object obj;
	int64_t modified;
	int rc;

	if (!is_head && strcmp(req->method, "GET") != 0) {
		http_header allow = { "Allow", "GET, HEAD" };
		respond_text(req, 405, "method not allowed\n", &allow, 1);
		return;
	}
	if (req->has_body) {
		/* A GET or HEAD has no use for a body; refuse rather than guess. */
		http_respond(req, 400, (http_header[]){ { "Content-Type", "text/plain" } }, 1,
		             "bad request: body not allowed\n", 30, !is_head, 1, NULL, NULL);
		return;
	}
	if (strcmp(req->path, "/healthz") == 0) {
		respond_text(req, 200, "ok\n", NULL, 0);
		return;
	}

	rc = store_txn_begin(sh->st, 0, &txn);
	if (rc != 0) {
		log_warn("serve: %s: cannot read the store: %s", req->path, sayin_strerror(rc));
		respond_text(req, 503, "store unavailable\n", (http_header[]){ { "Retry-After", "1" } },
		             1);
		return;
	}
	if (parse_object_path(req->path, hash, &want_type) == 0) {
		kind = ROUTE_OBJECT;
		rc = store_get_object(txn, hash, &obj);
		/* The extension must match what was stored: one URL per object. */
		if (rc == 0 && strcmp(obj.content_type, want_type) != 0)
			rc = SAYIN_ENOTFOUND;
		modified = obj.created;
	} else {
		store_name name;
		kind = ROUTE_NAME;
		rc = store_get_name(txn, req->path, &name);
		if (rc == 0)
			rc = store_get_object(txn, name.hash, &obj);
		modified = name.updated;
	}
	if (rc != 0) {
		store_txn_abort(txn);
		if (rc != SAYIN_ENOTFOUND)
			log_warn("serve: %s: %s", req->path, sayin_strerror(rc));
		respond_text(req, rc == SAYIN_ENOTFOUND ? 404 : 500,
		             rc == SAYIN_ENOTFOUND ? "not found\n" : "internal error\n", NULL, 0);
		return;
	}

	char etag[STORE_HASH_HEX_LEN + 3], hex[STORE_HASH_HEX_LEN + 1], date[40];
	store_hash_to_hex(obj.hash, hex);
	snprintf(etag, sizeof(etag), "\"%s\"", hex);
	format_http_date(modified, date, sizeof(date));
	http_header h[] = {
		{ "Content-Type", obj.content_type },
		{ "ETag", etag },
		{ "Last-Modified", date },
		{ "Cache-Control", cache_policy[kind] },
		{ "X-Content-Type-Options", "nosniff" },
	};
	/* Zero-copy: the body points into LMDB's map, so the read transaction
	 * stays open until the core has written it (release_txn). */
	http_respond(req, 200, h, sizeof(h) / sizeof(h[0]), obj.data, obj.size, !is_head, 0,
	             release_txn, txn);
}

int serve_create(store *st, serve_handler **out)
{
	serve_handler *sh = calloc(1, sizeof(*sh));
	if (sh == NULL)
		return -ENOMEM;
	sh->base.on_request = on_request;
	sh->st = st;
	*out = sh;
	return 0;
}

void serve_destroy(serve_handler *sh)
{
	free(sh);
}

http_handler *serve_http_handler(serve_handler *sh)
{
	return &sh->base;
}

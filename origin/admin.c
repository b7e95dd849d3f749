/* admin: the admin listener's handler (--admin-listen): /metrics and
 * /healthz only, on the main thread, apart from fans' traffic. */
#include "admin.h"

#include <stdlib.h>
#include <string.h>

static void free_page(void *arg)
{
	free(arg);
}

static void admin_respond_text(http_request *req, int status, const char *text,
                               const http_header *extra, size_t n_extra)
{
	http_header h[3] = { { "Content-Type", "text/plain; charset=utf-8" },
		             { "Cache-Control", "no-store" } };
	size_t n = 2;

	if (n_extra > 0)
		h[n++] = extra[0];
	http_respond(req, status, h, n, text, strlen(text), 1, 0, NULL, NULL);
}

static void admin_on_request(http_handler *self, http_request *req)
{
	admin_handler *ah = (admin_handler *)self;
	static const http_header allow = { "Allow", "GET, HEAD" };
	http_header h[2] = { { "Content-Type", METRICS_CONTENT_TYPE }, { "Cache-Control", "no-store" } };
	char *text;
	size_t len;

	if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
		admin_respond_text(req, 405, "method not allowed\n", &allow, 1);
		return;
	}
	if (strcmp(req->path, "/healthz") == 0) {
		admin_respond_text(req, 200, "ok\n", NULL, 0);
		return;
	}
	if (strcmp(req->path, "/metrics") != 0) {
		admin_respond_text(req, 404, "not found\n", NULL, 0);
		return;
	}
	if (metrics_render(ah->reg, &text, &len) != 0) {
		admin_respond_text(req, 503, "out of memory\n", NULL, 0);
		return;
	}
	/* The core drops the body of a HEAD itself. */
	http_respond(req, 200, h, 2, text, len, 1, 0, free_page, text);
}

void admin_handler_init(admin_handler *ah, metrics *reg)
{
	memset(ah, 0, sizeof(*ah));
	ah->base.on_request = admin_on_request;
	ah->reg = reg;
}

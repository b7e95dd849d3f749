/* serve: the origin's request handler: URL path -> store object -> response,
 * with the caching policy table. It only reads the store.
 *
 * Threading: a serve_handler serves one loop; create one per loop. */
#ifndef SAYIN_SERVE_H
#define SAYIN_SERVE_H

#include "http.h"
#include "store.h"

typedef struct serve_handler serve_handler;

/* st must outlive the handler and may be shared between handlers.
 * Returns 0 or -ENOMEM. */
int serve_create(store *st, serve_handler **out);
void serve_destroy(serve_handler *sh);
/* The http_handler to pass to http_server_start(). */
http_handler *serve_http_handler(serve_handler *sh);

#endif

/* admin: the handler of --admin-listen: GET and HEAD of /metrics (the
 * registry rendered at each scrape) and /healthz; 404 elsewhere, 405 for
 * other methods. It keeps Prometheus off the fans' listener, and its scrapes
 * go through while the workers are saturated. Runs on one loop (the
 * origin's main thread). */
#ifndef SAYIN_ADMIN_H
#define SAYIN_ADMIN_H

#include "core/http.h"
#include "core/metrics.h"

typedef struct admin_handler {
	http_handler base; /* first: the core hands us &base */
	metrics *reg;
} admin_handler;

/* Sets ah up to serve reg, which must outlive the server. */
void admin_handler_init(admin_handler *ah, metrics *reg);

#endif

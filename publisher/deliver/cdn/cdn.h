/* cdn: the interface every CDN driver implements, one file per driver
 * (varnish.c, fastly.c, cloudflare.c, cloudfront.c, s3.c, prewarm.c), and
 * the table that lists them. Adding a CDN means adding a file and a line in
 * cdn_drivers (cdn.c).
 *
 * A driver delivers one outbox job: the payload publish enqueued for it
 * (deliver/payload.h: the names that changed, their surrogate keys, the new
 * immutable objects and those removed), read through payload_list, with as
 * many HTTP requests as it needs (concurrently, through net), then
 * reports once. Drivers are configured from the settings (config.c) and
 * each takes an API base URL so tests point them at local endpoints.
 *
 * Threading: configure on the main thread; deliver and its callback on the
 * delivery loop's thread. */
#ifndef SAYIN_CDN_H
#define SAYIN_CDN_H

#include "core/config.h"
#include "deliver/net.h"
#include "core/store.h"

#include <jansson.h>
#include <stdint.h>

/* The order jobs of one event are delivered in: storage first (a CDN that
 * serves from the bucket must find the new bytes before it is purged), then
 * purges, then prewarming through the edges. */
enum cdn_stage { CDN_STAGE_STORAGE, CDN_STAGE_PURGE, CDN_STAGE_PREWARM, CDN_STAGE_COUNT };

typedef struct cdn_result {
	int ok;
	int permanent;          /* retrying cannot help (credentials rejected): park */
	int64_t retry_at_ms;    /* the target asked to come back then (Retry-After); 0: backoff */
	char error[512];        /* why it failed: logged, kept in the job; never a secret */
} cdn_result;

typedef void (*cdn_done_fn)(void *arg, const cdn_result *res);

typedef struct cdn_env {
	uv_loop_t *loop;
	net *net;
	store *st;              /* read transactions only (s3 reads object bytes) */
	const char *base_url;   /* public-url, no trailing slash */
} cdn_env;

typedef struct cdn_driver {
	const char *name;       /* the job's target */
	enum cdn_stage stage;
	/* Reads the driver's settings. Returns 0 and *state (configured), 1
	 * when its settings are absent (the driver is off), or SAYIN_ECONFIG
	 * with err naming the setting. */
	int (*configure)(const config *cfg, void **state, char *err, size_t errlen);
	/* Starts delivering payload (job_id is stable across retries: an
	 * idempotency token for APIs that take one). Returns 0 and calls done exactly once,
	 * later, on the loop; or a negative errno and does not call it. */
	int (*deliver)(void *state, const cdn_env *env, const char *job_id, const json_t *payload,
	               cdn_done_fn done, void *arg);
	void (*destroy)(void *state);
} cdn_driver;

/* NULL-terminated. */
extern const cdn_driver *const cdn_drivers[];

/* ---- helpers shared by the drivers (cdn.c) ---- */

/* Configuring. A driver fills its state on the stack, then keeps it:
 * cdn_state_keep stores a malloc'd copy of the size bytes at tmp in *state
 * (0, or -ENOMEM), and cdn_state_free is the destroy of a state that owns
 * no pointers. */
int cdn_state_keep(const void *tmp, size_t size, void **state);
void cdn_state_free(void *state);

/* Copies a base URL into out (len bytes, cut to fit) without its trailing
 * slashes. */
void cdn_copy_base_url(char *out, size_t len, const char *url);

/* Reads an on/off setting into *on (absent: off). Returns 0, or
 * SAYIN_ECONFIG with err for any other value. */
int cdn_on_off(const config *cfg, const char *setting, int *on, char *err, size_t errlen);

/* A CDN's HTTP API as a driver reaches it. */
typedef struct cdn_api {
	char url[512];          /* the API's base URL, without trailing slash */
	char id[128];           /* the account's object: a zone, a service */
	char auth[600];         /* the header line that carries the secret */
} cdn_api;

/* Reads id_setting (absent or empty: returns 1, the driver is off),
 * secret_setting (then required, one line of at most 500 bytes; the id at
 * most 100) and url_setting; the auth header is auth_prefix followed by
 * the secret. Returns 0, 1, or SAYIN_ECONFIG with err (driver names the
 * driver in it; the secret is never put there). */
int cdn_api_configure(const config *cfg, const char *driver, const char *id_setting,
                      const char *secret_setting, const char *url_setting,
                      const char *auth_prefix, cdn_api *out, char *err, size_t errlen);

/* A fan-out of requests reported as one result: the first failure wins;
 * done runs when the last request finished. */
typedef struct cdn_batch cdn_batch;
cdn_batch *cdn_batch_new(const char *driver, cdn_done_fn done, void *arg);
/* Sends one request as part of the batch; the response is checked by ok_fn
 * (NULL: any 2xx). Returns 0 or -errno (the batch then fails). */
typedef int (*cdn_check_fn)(const net_response *res, const net_headers *h, cdn_result *out);
int cdn_batch_send(cdn_batch *b, net *n, const net_request *req, cdn_check_fn check);
/* No more requests: done runs once every request answered (at once, from
 * the loop, when there were none). */
void cdn_batch_seal(cdn_batch *b, uv_loop_t *loop);

/* Frees a list of edges (cdn_edges_state's). */
void cdn_list_free(char **list);

/* Reads a list-of-edges setting (comma-separated base URLs) into *edges
 * (free with cdn_list_free). Returns 0, 1 when the setting is absent (the
 * driver is off), or SAYIN_ECONFIG / -ENOMEM with err. */
int cdn_edges_configure(const config *cfg, const char *setting, char ***edges, char *err,
                        size_t errlen);

/* For a driver whose whole state is its list of edges: configure reads
 * setting as cdn_edges_configure does, with the list as *state, and
 * cdn_edges_free is its destroy. */
int cdn_edges_state(const config *cfg, const char *setting, void **state, char *err,
                    size_t errlen);
void cdn_edges_free(void *state);

/* Sends PURGE {edge}{path} for every path (a JSON array of strings), each
 * checked by check, as part of b. Returns 0, or -errno at the first
 * request that could not be sent (the rest are not). */
int cdn_purge_paths(cdn_batch *b, net *n, const char *edge, const json_t *paths,
                    cdn_check_fn check);

/* ---- how the drivers read answers: exported for tests/fuzz ---- */

/* Each driver's check of an answer (a cdn_check_fn): 0 when the request
 * did what it asked; else -1 with out's error, and permanent when retrying
 * cannot help. res->body is NUL-terminated, as net hands it over.
 *   cdn_check_2xx         any 2xx (prewarm, and a NULL check);
 *   cdn_cloudflare_check  2xx with {"success": true}, else the first of
 *                         "errors"[].message;
 *   cdn_cloudfront_check  201, else the <Code> of the XML error;
 *   cdn_s3_check          2xx, else the <Code> of the XML error;
 *   cdn_fastly_check      2xx;
 *   cdn_varnish_check,
 *   cdn_nginx_check       2xx or 404 (a URL not in the cache). */
int cdn_check_2xx(const net_response *res, const net_headers *h, cdn_result *out);
int cdn_cloudflare_check(const net_response *res, const net_headers *h, cdn_result *out);
int cdn_cloudfront_check(const net_response *res, const net_headers *h, cdn_result *out);
int cdn_s3_check(const net_response *res, const net_headers *h, cdn_result *out);
int cdn_fastly_check(const net_response *res, const net_headers *h, cdn_result *out);
int cdn_varnish_check(const net_response *res, const net_headers *h, cdn_result *out);
int cdn_nginx_check(const net_response *res, const net_headers *h, cdn_result *out);

/* A Retry-After value (NULL: absent), delay-seconds or an IMF-fixdate, as
 * the unix time in ms to retry at (now_ms + the delay); 0 when absent,
 * unreadable, or a time past what int64 ms hold (back off as usual). A
 * failed request's batch reads it. */
int64_t cdn_retry_after_value(const char *v, int64_t now_ms);

#endif

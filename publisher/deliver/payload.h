/* payload: the messages publish enqueues for the delivery drivers (an
 * outbox job's payload), and the only code that names their fields. The
 * outbox stores them opaquely; publish writes them with the *_new
 * functions; the CDN drivers, the cross-poster, `status` and the API read
 * them through payload_read and payload_list.
 *
 * A CDN job's payload (cdn.h says what each driver does with it):
 *   { "event": "publish" | "delete" | "author" | "rebuild", "author", "post",
 *     "paths":   [ names written or removed, e.g. "/u/ann/feed.json" ],
 *     "keys":    [ their surrogate keys, e.g. "feed-ann", "post-ID" ],
 *     "objects": [ { "path": "/a/HASH.opus", "sha256", "type" } new immutable objects ],
 *     "removed": [ "/a/HASH.opus", ... immutable objects deleted ] }
 * A cross-post job's payload:
 *   { "event": "crosspost", "post", "author", "text", "url" }
 *
 * Pure: no store, no I/O. Threading: any thread. Pointers read from a
 * payload are borrowed and live as long as it does. */
#ifndef SAYIN_PAYLOAD_H
#define SAYIN_PAYLOAD_H

#include <jansson.h>

enum payload_list { PAYLOAD_PATHS, PAYLOAD_KEYS, PAYLOAD_OBJECTS, PAYLOAD_REMOVED,
	            PAYLOAD_LIST_COUNT };

/* A CDN job's payload: post NULL for none; lists[] are JSON arrays, taken
 * with a reference of their own. Returns it (the caller's), or NULL when out
 * of memory. */
json_t *payload_cdn_new(const char *event, const char *author, const char *post,
                        json_t *const lists[PAYLOAD_LIST_COUNT]);

/* One entry of PAYLOAD_OBJECTS, or NULL when out of memory. */
json_t *payload_object_new(const char *path, const char *sha256, const char *type);

/* A cross-post job's payload (text NULL: ""), or NULL when out of memory. */
json_t *payload_crosspost_new(const char *post, const char *author, const char *text,
                              const char *url);

/* What every payload says about itself; a field it lacks reads as NULL. */
typedef struct payload_view {
	const char *event;
	const char *author;
	const char *post;        /* "" for an author-wide event */
	const char *text;        /* cross-post jobs */
	const char *url;         /* cross-post jobs */
} payload_view;
void payload_read(const json_t *payload, payload_view *v);

/* One of a CDN payload's lists: a JSON array (NULL when absent, which
 * json_array_foreach and json_array_size take as empty). */
const json_t *payload_list(const json_t *payload, enum payload_list which);

/* The fields of a PAYLOAD_OBJECTS entry (NULL when absent). */
const char *payload_object_path(const json_t *object);
const char *payload_object_sha256(const json_t *object);

#endif

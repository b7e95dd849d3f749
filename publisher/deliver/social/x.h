/* social/x: the X (Twitter) driver's pure parts, exposed for tests: how
 * its answers are classified and read. The driver itself is social_x
 * (x.c), reached through social_drivers.
 *
 * Requests (all signed with OAuth 1.0a user context, oauth1.h):
 *   POST {x_api_url}/2/tweets  {"text": "TEXT… URL"}  (JSON: not signed)
 *   GET  {x_api_url}/2/users/me                        (reconcile, no user_id)
 *   GET  {x_api_url}/2/users/{id}/tweets?max_results=100&tweet.fields=entities
 *
 * Threading: any thread; no state. */
#ifndef SAYIN_SOCIAL_X_H
#define SAYIN_SOCIAL_X_H

#include "deliver/social/social.h"

#include <stddef.h>

/* X's answer to a duplicate post (403). */
#define X_DUPLICATE_DETAIL "You are not allowed to create a Tweet with duplicate content."

enum x_outcome {
	X_OUTCOME_OK,         /* 2xx */
	X_OUTCOME_DUPLICATE,  /* 403 duplicate content: already posted */
	X_OUTCOME_FAILED,     /* out->error, permanent and retry_at_ms set */
};

/* Classifies an answer of any X endpoint: transport_error (non-NULL when
 * no HTTP answer came: a timeout, a refused connection) or status, body
 * and the x-rate-limit-reset header (NULL if absent).
 *   429                 retry at x-rate-limit-reset (unix s), else backoff;
 *   5xx, 408, transport backoff;
 *   401                 permanent: "credentials rejected";
 *   403 duplicate       X_OUTCOME_DUPLICATE;
 *   other 4xx (and 3xx) permanent, with the API's detail or title. */
enum x_outcome x_classify(const char *transport_error, long status, const char *body,
                          const char *rate_limit_reset, social_result *out);

/* The new post's id from a 2xx answer to POST /2/tweets
 * ({"data":{"id":"...","text":...}}). Returns 0, or -1 if absent. */
int x_created_id(const char *body, char *id, size_t idlen);

/* The user id from GET /2/users/me. Returns 0, or -1. */
int x_me_id(const char *body, char *id, size_t idlen);

/* Looks for post_url in the answer of GET /2/users/{id}/tweets: in each
 * tweet's entities.urls[].expanded_url (or unwound_url), then in its text.
 * Returns 1 and the tweet's id, 0 when not there, -1 when the body is not
 * such an answer. */
int x_find_post(const char *body, const char *post_url, char *id, size_t idlen);

/* "https://x.com/i/web/status/{id}" */
void x_remote_url(const char *id, char *out, size_t outlen);

extern const social_driver social_x;

#endif

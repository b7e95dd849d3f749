/* social/facebook: the Facebook Page driver's pure parts, exposed for
 * tests: the request body, appsecret_proof, and how answers are
 * classified and read. The driver itself is social_facebook
 * (facebook.c), reached through social_drivers.
 *
 * Requests (Graph API, version from the settings, e.g. "v19.0"):
 *   POST {facebook_api_url}/{version}/{page_id}/feed
 *        form: message, link, access_token, appsecret_proof
 *   GET  {facebook_api_url}/{version}/{page_id}/feed
 *        ?fields=id,link,message&limit=100&access_token=..&appsecret_proof=..
 *        (reconcile)
 * The token travels in the body or the query: such URLs are never logged.
 *
 * Threading: any thread; no state. */
#ifndef SAYIN_SOCIAL_FACEBOOK_H
#define SAYIN_SOCIAL_FACEBOOK_H

#include "deliver/social/social.h"

#include <stddef.h>

enum facebook_outcome {
	FACEBOOK_OUTCOME_OK,         /* 2xx and not an error object */
	FACEBOOK_OUTCOME_DUPLICATE,  /* error 506: "Duplicate status message" */
	FACEBOOK_OUTCOME_FAILED,     /* out->error and permanent set */
};

/* Classifies an answer: transport_error (non-NULL when no HTTP answer
 * came), status, body ({"error":{"message","type","code","error_subcode"}})
 * and the x-app-usage / x-page-usage headers (NULL if absent).
 *   5xx, transport                      backoff;
 *   codes 1, 2, 4, 17, 32, 341, 613, 80001, "is_transient": true, or a
 *   usage header with a value >= 100    backoff (Facebook gives no time);
 *   190                                 permanent: "token expired, re-authorize";
 *   506                                 FACEBOOK_OUTCOME_DUPLICATE;
 *   any other code or 4xx               permanent, with Facebook's message. */
enum facebook_outcome facebook_classify(const char *transport_error, long status,
                                        const char *body, const char *app_usage,
                                        const char *page_usage, social_result *out);

/* 1 when a usage header's JSON ({"call_count":..,"total_time":..,...})
 * has a number >= 100; 0 otherwise (absent, unparsable). */
int facebook_usage_exhausted(const char *header);

/* appsecret_proof: hex HMAC-SHA256 of token keyed with app_secret.
 * Returns 0, or -EIO. */
int facebook_appsecret_proof(const char *app_secret, const char *token, char out[65]);

/* The form body of the post: message (left out when empty), link,
 * access_token, appsecret_proof (left out when NULL). malloc'd; NULL when
 * out of memory. A secret: the caller wipes and frees it. */
char *facebook_post_body(const char *message, const char *link, const char *token,
                         const char *proof);

/* The id from {"id":"PAGEID_POSTID"}. Returns 0, or -1. */
int facebook_created_id(const char *body, char *id, size_t idlen);

/* Looks for post_url in the feed answer: each post's "link", then its
 * "message". Returns 1 and the post's id, 0 when not there, -1 when the
 * body is not a feed. */
int facebook_find_post(const char *body, const char *post_url, char *id, size_t idlen);

/* "https://www.facebook.com/{id}" */
void facebook_remote_url(const char *id, char *out, size_t outlen);

extern const social_driver social_facebook;

#endif

/* social: the interface every cross-posting network implements, one file
 * per network (x.c, facebook.c), and the table that lists them.
 *
 * A cross-post job (outbox target "x" or "facebook", enqueued by the publish
 * transaction and delivered by `sayin-publisher crosspost`) hands its driver
 * the post and the author's account on that network. The driver posts it
 * (text with a link to the post page, whose player card plays the voice
 * message) and reports once: the remote id, or why not.
 *
 * Exactly once: before the first request of an attempt the worker records
 * the attempt in the store. When a job comes back with such a record (the
 * process died between the remote call and recording its result), the
 * driver is called with reconcile = 1 and must first look for the post on
 * the network (the account's recent posts carrying our post URL) and report
 * it as found instead of posting again.
 *
 * Secrets (consumer secrets, tokens, app secrets) are in social_account;
 * drivers never log them and never put them in an error text.
 *
 * Threading: everything on the crosspost worker's loop thread. */
#ifndef SAYIN_SOCIAL_H
#define SAYIN_SOCIAL_H

#include "deliver/net.h"

#include <jansson.h>

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define SOCIAL_FIELD_MAX 256

/* One author's account on one network, from the credentials file. */
typedef struct social_account {
	char network[16];          /* "x" or "facebook" */
	char handle[33];           /* the sayin author */
	int enabled;
	/* X (OAuth 1.0a user context) */
	char consumer_key[SOCIAL_FIELD_MAX];
	char consumer_secret[SOCIAL_FIELD_MAX];
	char access_token[SOCIAL_FIELD_MAX];
	char access_token_secret[SOCIAL_FIELD_MAX];
	char user_id[64];          /* optional: saves a /2/users/me lookup when reconciling */
	/* Facebook (a Page) */
	char page_id[64];
	char page_access_token[SOCIAL_FIELD_MAX * 2];
	char app_secret[SOCIAL_FIELD_MAX];
} social_account;

typedef struct social_post {
	const char *post_id;
	const char *text;          /* the post's text (UTF-8, may be empty) */
	const char *url;           /* the post page, absolute (https in production) */
} social_post;

typedef struct social_result {
	int ok;
	int found;                 /* reconcile found it already posted (or the network
	                              said duplicate): no new post was made */
	char remote_id[96];
	char remote_url[512];
	int permanent;             /* park: credentials rejected, token expired, ... */
	int64_t retry_at_ms;       /* the network said when to come back (rate limit) */
	char error[512];           /* why: logged and kept in the job; never a secret */
} social_result;

typedef void (*social_done_fn)(void *arg, const social_result *res);

typedef struct social_env {
	uv_loop_t *loop;
	net *net;
	const char *x_api_url;         /* "https://api.twitter.com" (tests: a local server) */
	const char *facebook_api_url;  /* "https://graph.facebook.com" */
	const char *facebook_version;  /* "v19.0" */
	uint64_t timeout_ms;
} social_env;

typedef struct social_driver {
	const char *name;          /* the outbox target and the credentials file's network */
	/* Posts p for acct (after looking for it first when reconcile != 0).
	 * Returns 0 and calls done exactly once, later, on the loop; or a
	 * negative errno without calling it. */
	int (*crosspost)(const social_env *env, const social_account *acct, const social_post *p,
	                 int reconcile, social_done_fn done, void *arg);
	const char *label;         /* the network's name in error texts: "X", "Facebook" */
	/* The public page of the remote post id, into out. */
	void (*remote_url)(const char *id, char *out, size_t outlen);
} social_driver;

/* Lifetimes: a driver copies acct, p and env's strings before crosspost
 * returns; env->loop and env->net must outlive the call (until done).
 * A negative return (-EINVAL: credentials missing; -EILSEQ: the text is
 * not UTF-8; -ENOMEM) means nothing was sent.
 * The drivers: x.h and facebook.h say what each sends and how it reads
 * the answers. */

/* NULL-terminated (social.c). */
extern const social_driver *const social_drivers[];
/* The driver named name ("x", "facebook"), or NULL. */
const social_driver *social_driver_find(const char *name);

/* ---- helpers shared by the drivers (social.c) ---- */

/* 1 when a and b name the same page: equal, or equal but for a trailing
 * slash (networks normalize links that way); 0 otherwise or if one is NULL. */
int social_same_url(const char *a, const char *b);

/* Copies an API's own error message into out as "prefix: message", cut
 * to fit (at a UTF-8 boundary). */
void social_set_error(social_result *out, const char *prefix, const char *message);

/* Sends a request that must never be sent twice (a new post) on a
 * connection opened for it alone, closed after the answer; done is called
 * as by net_send. Why: libcurl sends a request again, on a fresh
 * connection, when a reused one dies before the first byte of the answer
 * (it takes that for a server closing an idle connection), so a post the
 * network took just before the connection died would go out twice (X
 * refuses the replayed nonce with 401). A fresh connection is never
 * retried. Costs one connection (and TLS handshake) per post. Returns 0,
 * or -ENOMEM / -EIO / -EINVAL without calling done. The request's time is
 * accounted (net_account) to the job parent accounts to now, and requests
 * parent sends from done belong to that job too; parent may be NULL. */
int social_send_once(uv_loop_t *loop, net *parent, const net_request *req, net_done_fn done,
                     void *arg);

/* Starts classifying an answer: clears out's ok, permanent and retry_at_ms,
 * and when no HTTP answer came (transport_error, or status 0) sets
 * "LABEL: no answer: why" and returns 1; else returns 0. */
int social_no_answer(social_result *out, const char *label, const char *transport_error,
                     long status);

/* Reads the remote id from an answer {"id": "..."}, or {within: {"id":
 * "..."}} when within is not NULL, into id. Returns 0, or -1 when it is
 * absent, empty or too long. */
int social_answer_id(const char *body, const char *within, char *id, size_t idlen);

/* Looks through the posts in an answer's "data" array, newest first, for
 * the first that carries post_url (as carries judges) and has a non-empty
 * id that fits idlen. Returns 1 and the id, 0 when none does (or, with
 * absent_is_empty, when "data" is absent: no posts at all), -1 when the
 * body is not such an answer. */
int social_find_post(const char *body, const char *post_url, int absent_is_empty,
                     int (*carries)(const json_t *post, const char *post_url), char *id,
                     size_t idlen);

/* ---- one cross-post in flight (a driver's "call") ---- */

/* What every driver keeps while it posts: embedded first in the driver's
 * own struct, which social_call_new allocates. */
typedef struct social_call {
	const social_driver *driver;
	size_t size;               /* of the driver's whole struct */
	net *net;
	uv_loop_t *loop;
	char api[512];             /* the API's base URL, without trailing slash */
	uint64_t timeout_ms;
	social_account acct;       /* a copy, secrets included: wiped when freed */
	char *text;                /* the post's text ("" when none) */
	char *url;                 /* the post page */
	social_done_fn done;
	void *arg;
	int after_duplicate;       /* the network said duplicate: looking for our post */
} social_call;

/* Allocates a driver's call of size bytes (social_call first, the rest
 * zeroed) for p by acct, with env's loop, net and timeout, api (NULL: the
 * network is not configured) and copies of everything it points to.
 * Returns 0 and *out, -EINVAL when env, api or p's url is missing, or
 * -ENOMEM. */
int social_call_new(const social_driver *driver, size_t size, const social_env *env,
                    const char *api, const social_account *acct, const social_post *p,
                    social_done_fn done, void *arg, void **out);
/* Wipes the whole struct (it holds secrets) and frees it with its strings. */
void social_call_free(social_call *c);
/* Calls done with res (logged first when it is a failure), then frees c. */
void social_call_finish(social_call *c, social_result *res);
/* Finishes with ok and found: reconcile (or a duplicate) found the post,
 * with the remote id and its page when id is not NULL. */
void social_call_found(social_call *c, const char *id);
/* Finishes with the answer to the post: ok with the remote id and its page,
 * or, when id is NULL (posted, most likely, but we cannot tell its id:
 * the retry reconciles and finds it), "LABEL: HTTP status without a post
 * id". */
void social_call_created(social_call *c, const char *id, long status);
/* Finishes with "LABEL: could not send the request: ..." for the -errno rc;
 * permanent as the driver judges. */
void social_call_fail_send(social_call *c, int rc, int permanent);
/* Sends req; a post (once != 0) on a connection of its own, as
 * social_send_once says, the rest on env's net. on_answer gets c as its
 * arg. Returns 0, or -errno without calling on_answer. */
int social_call_send(social_call *c, const net_request *req, int once, net_done_fn on_answer);

#endif

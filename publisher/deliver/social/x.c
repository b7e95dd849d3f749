/* social/x: the X driver: posts with POST /2/tweets, signed with OAuth 1.0a. */
/* User context; reconciles by looking for our link in the account's
 * latest 100 posts. */
#include "deliver/social/x.h"

#include "core/clock.h"
#include "core/jsonstore.h"
#include "core/log.h"
#include "deliver/social/oauth1.h"
#include "deliver/social/xtext.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

enum x_stage { X_STAGE_ME, X_STAGE_TWEETS, X_STAGE_POST };

struct x_call {
	social_call base;    /* first: base.after_duplicate: looking up the id of a post X
	                        says we made */
	enum x_stage stage;
	char user_id[64];
};

static void set_api_message(social_result *out, long status, const char *body, const char *why)
{
	json_t *j = json_loads(body ? body : "", 0, NULL);
	const char *msg = json_string_value(json_object_get(j, "detail"));
	char prefix[96];

	if (msg == NULL)
		msg = json_string_value(json_object_get(j, "title"));
	if (msg == NULL)
		msg = json_string_value(json_object_get(json_array_get(json_object_get(j, "errors"), 0),
		                                        "message"));
	snprintf(prefix, sizeof(prefix), "X: HTTP %ld%s%s", status, why ? ", " : "", why ? why : "");
	social_set_error(out, prefix, msg);
	json_decref(j);
}

enum x_outcome x_classify(const char *transport_error, long status, const char *body,
                          const char *rate_limit_reset, social_result *out)
{
	if (social_no_answer(out, "X", transport_error, status))
		return X_OUTCOME_FAILED;
	if (status >= 200 && status < 300)
		return X_OUTCOME_OK;
	if (status == 429) {
		char *end;
		long long reset = rate_limit_reset ? strtoll(rate_limit_reset, &end, 10) : 0;
		/* A reset past what int64 ms hold is nonsense: back off instead. */
		if (rate_limit_reset != NULL && end != rate_limit_reset && *end == '\0' && reset > 0 &&
		    reset <= INT64_MAX / 1000 && reset * 1000 > clock_now_ms())
			out->retry_at_ms = (int64_t)reset * 1000;
		set_api_message(out, status, body, "rate limited");
		return X_OUTCOME_FAILED;
	}
	if (status >= 500 || status == 408) {
		set_api_message(out, status, body, NULL);
		return X_OUTCOME_FAILED;
	}
	if (status == 401) {
		out->permanent = 1;
		set_api_message(out, status, body, "credentials rejected");
		return X_OUTCOME_FAILED;
	}
	if (status == 403) {
		json_t *j = json_loads(body ? body : "", 0, NULL);
		const char *detail = json_string_value(json_object_get(j, "detail"));
		int dup = detail != NULL && strcmp(detail, X_DUPLICATE_DETAIL) == 0;
		json_decref(j);
		if (dup)
			return X_OUTCOME_DUPLICATE;
	}
	out->permanent = 1;
	set_api_message(out, status, body, NULL);
	return X_OUTCOME_FAILED;
}

int x_created_id(const char *body, char *id, size_t idlen)
{
	return social_answer_id(body, "data", id, idlen);
}

int x_me_id(const char *body, char *id, size_t idlen)
{
	return social_answer_id(body, "data", id, idlen);
}

/* A tweet carries post_url in its text or as one of its links. */
static int tweet_carries(const json_t *tweet, const char *post_url)
{
	const char *text = json_string_value(json_object_get(tweet, "text"));
	const json_t *u;
	size_t k;

	if (text != NULL && strstr(text, post_url) != NULL)
		return 1;
	json_array_foreach(json_object_get(json_object_get(tweet, "entities"), "urls"), k, u) {
		if (social_same_url(json_string_value(json_object_get(u, "expanded_url")), post_url) ||
		    social_same_url(json_string_value(json_object_get(u, "unwound_url")), post_url))
			return 1;
	}
	return 0;
}

int x_find_post(const char *body, const char *post_url, char *id, size_t idlen)
{
	/* No posts at all: X leaves "data" out (meta.result_count 0). */
	return social_find_post(body, post_url, 1, tweet_carries, id, idlen);
}

void x_remote_url(const char *id, char *out, size_t outlen)
{
	snprintf(out, outlen, "https://x.com/i/web/status/%s", id);
}

/* ---- the driver ---- */

static void on_answer(void *arg, const net_response *r, const net_headers *h);

/* Sends one signed request for the current stage; the post (json != NULL)
 * on a connection of its own (social_send_once). Returns 0 or -errno. */
static int send_signed(struct x_call *c, const char *method, const char *url, const char *json)
{
	const social_account *acct = &c->base.acct;
	oauth1_request oreq = {
		.method = method,
		.url = url,
		.consumer_key = acct->consumer_key,
		.consumer_secret = acct->consumer_secret,
		.token = acct->access_token,
		.token_secret = acct->access_token_secret,
		.with_version = 1,
	};
	oauth1_signature sig;
	char *auth = NULL;
	const char *headers[4];
	net_request req = { .method = method, .url = url, .timeout_ms = c->base.timeout_ms };
	int rc = oauth1_sign(&oreq, &sig);

	if (rc == 0 && asprintf(&auth, "Authorization: %s", sig.authorization) < 0) {
		auth = NULL;
		rc = -ENOMEM;
	}
	oauth1_signature_free(&sig);
	if (rc != 0)
		return rc;
	headers[0] = auth;
	headers[1] = "Accept: application/json";
	headers[2] = json ? "Content-Type: application/json" : NULL;
	headers[3] = NULL;
	req.headers = headers;
	if (json != NULL) {
		req.body = json;
		req.body_len = strlen(json);
	}
	rc = social_call_send(&c->base, &req, json != NULL, on_answer);
	free(auth);
	return rc;
}

static int send_me(struct x_call *c)
{
	char url[640];
	c->stage = X_STAGE_ME;
	snprintf(url, sizeof(url), "%s/2/users/me", c->base.api);
	return send_signed(c, "GET", url, NULL);
}

static int send_tweets(struct x_call *c)
{
	char url[800];
	char *id = oauth1_encode(c->user_id, strlen(c->user_id));
	int rc;
	if (id == NULL)
		return -ENOMEM;
	c->stage = X_STAGE_TWEETS;
	snprintf(url, sizeof(url), "%s/2/users/%s/tweets?max_results=100&tweet.fields=entities",
	         c->base.api, id);
	free(id);
	rc = send_signed(c, "GET", url, NULL);
	return rc;
}

static int send_lookup(struct x_call *c)
{
	return c->user_id[0] != '\0' ? send_tweets(c) : send_me(c);
}

static int send_post(struct x_call *c)
{
	char url[640];
	size_t cap = strlen(c->base.text) + strlen(c->base.url) + 8;
	char *fitted = malloc(cap);
	json_t *j;
	char *json;
	int rc;

	if (fitted == NULL)
		return -ENOMEM;
	rc = xtext_fit(c->base.text, c->base.url, fitted, cap);
	if (rc != 0) {
		free(fitted);
		return rc;
	}
	j = json_pack("{s:s}", "text", fitted);
	free(fitted);
	json = j ? jsonstore_dump_flags(j, JSON_COMPACT, NULL) : NULL;
	json_decref(j);
	if (json == NULL)
		return -ENOMEM;
	c->stage = X_STAGE_POST;
	snprintf(url, sizeof(url), "%s/2/tweets", c->base.api);
	rc = send_signed(c, "POST", url, json);
	free(json);
	return rc;
}

/* A lookup failed. After a duplicate it only wanted the id: the post is
 * there. Otherwise res says why. */
static void lookup_failed(struct x_call *c, social_result *res)
{
	if (c->base.after_duplicate)
		social_call_found(&c->base, NULL);
	else
		social_call_finish(&c->base, res);
}

static void on_answer(void *arg, const net_response *r, const net_headers *h)
{
	struct x_call *c = arg;
	social_result res = { 0 };
	enum x_outcome o = x_classify(r->error, r->status, r->body,
	                              h ? net_header(h, "x-rate-limit-reset") : NULL, &res);
	char id[96] = "";
	int rc = 0;

	switch (c->stage) {
	case X_STAGE_ME:
	case X_STAGE_TWEETS:
		if (o != X_OUTCOME_OK) {
			lookup_failed(c, &res);
			return;
		}
		if (c->stage == X_STAGE_ME) {
			if (x_me_id(r->body, c->user_id, sizeof(c->user_id)) != 0) {
				snprintf(res.error, sizeof(res.error), "X: /2/users/me answered without an id");
				lookup_failed(c, &res);
				return;
			}
			rc = send_tweets(c);
			break;
		}
		switch (x_find_post(r->body, c->base.url, id, sizeof(id))) {
		case 1:
			log_info("x %s: %s is already posted as %s", c->base.acct.handle, c->base.url, id);
			social_call_found(&c->base, id[0] != '\0' ? id : NULL);
			return;
		case 0:
			if (c->base.after_duplicate) {
				social_call_found(&c->base, NULL);
				return;
			}
			rc = send_post(c);
			break;
		default:
			snprintf(res.error, sizeof(res.error), "X: the timeline answer is not JSON");
			lookup_failed(c, &res);
			return;
		}
		break;
	case X_STAGE_POST:
		if (o == X_OUTCOME_DUPLICATE) {
			log_info("x %s: X says %s is already posted", c->base.acct.handle, c->base.url);
			c->base.after_duplicate = 1;
			rc = send_lookup(c);
			break;
		}
		if (o == X_OUTCOME_FAILED) {
			social_call_finish(&c->base, &res);
			return;
		}
		social_call_created(&c->base, x_created_id(r->body, id, sizeof(id)) == 0 ? id : NULL,
		                    r->status);
		return;
	}
	if (rc != 0 && c->base.after_duplicate)
		social_call_found(&c->base, NULL);
	else if (rc != 0)
		social_call_fail_send(&c->base, rc, rc == -EILSEQ || rc == -EMSGSIZE || rc == -EINVAL);
}

static int x_crosspost(const social_env *env, const social_account *acct, const social_post *p,
                       int reconcile, social_done_fn done, void *arg)
{
	struct x_call *c;
	void *call;
	int rc;

	if (acct->consumer_key[0] == '\0' || acct->consumer_secret[0] == '\0' ||
	    acct->access_token[0] == '\0' || acct->access_token_secret[0] == '\0')
		return -EINVAL;
	rc = social_call_new(&social_x, sizeof(*c), env, env ? env->x_api_url : NULL, acct, p, done,
	                     arg, &call);
	if (rc != 0)
		return rc;
	c = call;
	snprintf(c->user_id, sizeof(c->user_id), "%s", acct->user_id);
	rc = reconcile ? send_lookup(c) : send_post(c);
	if (rc != 0)
		social_call_free(&c->base);
	return rc;
}

const social_driver social_x = { "x", x_crosspost, "X", x_remote_url };

/* social/x: posts to X with POST /2/tweets, signed with OAuth 1.0a user
 * context; reconciles by looking for our link in the account's latest
 * 100 posts. */
#include "deliver/social/x.h"

#include "core/clock.h"
#include "core/log.h"
#include "deliver/social/oauth1.h"
#include "deliver/social/xtext.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum x_stage { X_STAGE_ME, X_STAGE_TWEETS, X_STAGE_POST };

struct x_call {
	net *net;
	uv_loop_t *loop;
	char api[512];
	uint64_t timeout_ms;
	social_account acct;
	char *text;
	char *url;
	social_done_fn done;
	void *arg;
	enum x_stage stage;
	int after_duplicate; /* looking up the id of a post X says we made */
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
	out->ok = 0;
	out->permanent = 0;
	out->retry_at_ms = 0;
	if (transport_error != NULL || status == 0) {
		social_set_error(out, "X: no answer", transport_error ? transport_error : "no status");
		return X_OUTCOME_FAILED;
	}
	if (status >= 200 && status < 300)
		return X_OUTCOME_OK;
	if (status == 429) {
		char *end;
		long long reset = rate_limit_reset ? strtoll(rate_limit_reset, &end, 10) : 0;
		if (rate_limit_reset != NULL && end != rate_limit_reset && *end == '\0' && reset > 0 &&
		    reset * 1000 > clock_now_ms())
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

static int data_id(const char *body, char *id, size_t idlen)
{
	json_t *j = json_loads(body ? body : "", 0, NULL);
	const char *v = json_string_value(json_object_get(json_object_get(j, "data"), "id"));
	int rc = -1;
	if (v != NULL && *v != '\0' && strlen(v) < idlen) {
		snprintf(id, idlen, "%s", v);
		rc = 0;
	}
	json_decref(j);
	return rc;
}

int x_created_id(const char *body, char *id, size_t idlen)
{
	return data_id(body, id, idlen);
}

int x_me_id(const char *body, char *id, size_t idlen)
{
	return data_id(body, id, idlen);
}

int x_find_post(const char *body, const char *post_url, char *id, size_t idlen)
{
	json_t *j = json_loads(body ? body : "", 0, NULL), *data, *tweet;
	size_t i;
	int rc = 0;

	if (!json_is_object(j)) {
		json_decref(j);
		return -1;
	}
	data = json_object_get(j, "data");
	if (data == NULL) {
		/* No posts at all: X leaves "data" out (meta.result_count 0). */
		json_decref(j);
		return 0;
	}
	if (!json_is_array(data)) {
		json_decref(j);
		return -1;
	}
	json_array_foreach(data, i, tweet) {
		json_t *urls = json_object_get(json_object_get(tweet, "entities"), "urls"), *u;
		const char *text = json_string_value(json_object_get(tweet, "text"));
		const char *tid = json_string_value(json_object_get(tweet, "id"));
		size_t k;
		int match = text != NULL && strstr(text, post_url) != NULL;

		json_array_foreach(urls, k, u) {
			if (social_same_url(json_string_value(json_object_get(u, "expanded_url")), post_url) ||
			    social_same_url(json_string_value(json_object_get(u, "unwound_url")), post_url))
				match = 1;
		}
		if (match && tid != NULL && strlen(tid) < idlen) {
			snprintf(id, idlen, "%s", tid);
			rc = 1;
			break;
		}
	}
	json_decref(j);
	return rc;
}

void x_remote_url(const char *id, char *out, size_t outlen)
{
	snprintf(out, outlen, "https://x.com/i/web/status/%s", id);
}

/* ---- the driver ---- */

static void call_free(struct x_call *c)
{
	free(c->text);
	free(c->url);
	OPENSSL_cleanse(&c->acct, sizeof(c->acct)); /* secrets */
	free(c);
}

static void finish(struct x_call *c, social_result *res)
{
	if (!res->ok)
		log_warn("x %s: %s", c->acct.handle, res->error);
	c->done(c->arg, res);
	call_free(c);
}

static void finish_found(struct x_call *c, const char *id)
{
	social_result res = { .ok = 1, .found = 1 };
	if (id != NULL && *id != '\0') {
		snprintf(res.remote_id, sizeof(res.remote_id), "%s", id);
		x_remote_url(id, res.remote_url, sizeof(res.remote_url));
	}
	finish(c, &res);
}

static void on_answer(void *arg, const net_response *r, const net_headers *h);

/* Sends one signed request for the current stage; the post (json != NULL)
 * on a connection of its own (social_send_once). Returns 0 or -errno. */
static int send_signed(struct x_call *c, const char *method, const char *url, const char *json)
{
	oauth1_request oreq = {
		.method = method,
		.url = url,
		.consumer_key = c->acct.consumer_key,
		.consumer_secret = c->acct.consumer_secret,
		.token = c->acct.access_token,
		.token_secret = c->acct.access_token_secret,
		.with_version = 1,
	};
	oauth1_signature sig;
	char *auth = NULL;
	const char *headers[4];
	net_request req = { .method = method, .url = url, .timeout_ms = c->timeout_ms };
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
	if (json != NULL)
		rc = social_send_once(c->loop, &req, on_answer, c);
	else
		rc = net_send(c->net, &req, on_answer, c);
	free(auth);
	return rc;
}

static int send_me(struct x_call *c)
{
	char url[640];
	c->stage = X_STAGE_ME;
	snprintf(url, sizeof(url), "%s/2/users/me", c->api);
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
	         c->api, id);
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
	size_t cap = strlen(c->text) + strlen(c->url) + 8;
	char *fitted = malloc(cap);
	json_t *j;
	char *json;
	int rc;

	if (fitted == NULL)
		return -ENOMEM;
	rc = xtext_fit(c->text, c->url, fitted, cap);
	if (rc != 0) {
		free(fitted);
		return rc;
	}
	j = json_pack("{s:s}", "text", fitted);
	free(fitted);
	json = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (json == NULL)
		return -ENOMEM;
	c->stage = X_STAGE_POST;
	snprintf(url, sizeof(url), "%s/2/tweets", c->api);
	rc = send_signed(c, "POST", url, json);
	free(json);
	return rc;
}

static void fail_send(struct x_call *c, int rc)
{
	social_result res = { 0 };
	snprintf(res.error, sizeof(res.error), "X: could not send the request: %s", strerror(-rc));
	res.permanent = rc == -EILSEQ || rc == -EMSGSIZE || rc == -EINVAL;
	finish(c, &res);
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
			/* A lookup after a duplicate only wanted the id: the post is there. */
			if (c->after_duplicate) {
				finish_found(c, NULL);
				return;
			}
			finish(c, &res);
			return;
		}
		if (c->stage == X_STAGE_ME) {
			if (x_me_id(r->body, c->user_id, sizeof(c->user_id)) != 0) {
				if (c->after_duplicate) {
					finish_found(c, NULL);
					return;
				}
				snprintf(res.error, sizeof(res.error), "X: /2/users/me answered without an id");
				finish(c, &res);
				return;
			}
			rc = send_tweets(c);
			break;
		}
		switch (x_find_post(r->body, c->url, id, sizeof(id))) {
		case 1:
			log_info("x %s: %s is already posted as %s", c->acct.handle, c->url, id);
			finish_found(c, id);
			return;
		case 0:
			if (c->after_duplicate) {
				finish_found(c, NULL);
				return;
			}
			rc = send_post(c);
			break;
		default:
			if (c->after_duplicate) {
				finish_found(c, NULL);
				return;
			}
			snprintf(res.error, sizeof(res.error), "X: the timeline answer is not JSON");
			finish(c, &res);
			return;
		}
		break;
	case X_STAGE_POST:
		if (o == X_OUTCOME_DUPLICATE) {
			log_info("x %s: X says %s is already posted", c->acct.handle, c->url);
			c->after_duplicate = 1;
			rc = send_lookup(c);
			break;
		}
		if (o == X_OUTCOME_FAILED) {
			finish(c, &res);
			return;
		}
		if (x_created_id(r->body, id, sizeof(id)) != 0) {
			/* Posted, most likely, but we cannot tell its id: the retry
			 * reconciles and finds it. */
			snprintf(res.error, sizeof(res.error), "X: HTTP %ld without a post id", r->status);
			finish(c, &res);
			return;
		}
		res.ok = 1;
		snprintf(res.remote_id, sizeof(res.remote_id), "%s", id);
		x_remote_url(id, res.remote_url, sizeof(res.remote_url));
		finish(c, &res);
		return;
	}
	if (rc != 0) {
		if (c->after_duplicate)
			finish_found(c, NULL);
		else
			fail_send(c, rc);
	}
}

static int x_crosspost(const social_env *env, const social_account *acct, const social_post *p,
                       int reconcile, social_done_fn done, void *arg)
{
	struct x_call *c;
	int rc;

	if (env == NULL || env->net == NULL || env->loop == NULL || env->x_api_url == NULL ||
	    p == NULL || p->url == NULL || *p->url == '\0' || acct->consumer_key[0] == '\0' ||
	    acct->consumer_secret[0] == '\0' || acct->access_token[0] == '\0' ||
	    acct->access_token_secret[0] == '\0')
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	c->net = env->net;
	c->loop = env->loop;
	snprintf(c->api, sizeof(c->api), "%s", env->x_api_url);
	while (strlen(c->api) > 0 && c->api[strlen(c->api) - 1] == '/')
		c->api[strlen(c->api) - 1] = '\0';
	c->timeout_ms = env->timeout_ms;
	c->acct = *acct;
	snprintf(c->user_id, sizeof(c->user_id), "%s", acct->user_id);
	c->text = strdup(p->text ? p->text : "");
	c->url = strdup(p->url);
	c->done = done;
	c->arg = arg;
	if (c->text == NULL || c->url == NULL) {
		call_free(c);
		return -ENOMEM;
	}
	rc = reconcile ? send_lookup(c) : send_post(c);
	if (rc != 0) {
		call_free(c);
		return rc;
	}
	return 0;
}

const social_driver social_x = { "x", x_crosspost };

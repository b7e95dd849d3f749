/* social/facebook: the Facebook driver: posts to a Page's feed. */
/* With a Page access token and appsecret_proof; reconciles by looking for
 * our link in the Page's latest 100 posts. */
#include "deliver/social/facebook.h"

#include "core/log.h"
#include "deliver/social/oauth1.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum facebook_stage { FB_STAGE_FEED, FB_STAGE_POST };

struct facebook_call {
	social_call base;    /* first: base.after_duplicate: Facebook said duplicate: is it
	                        ours? */
	char version[32];
	char proof[65];      /* appsecret_proof, "" without an app secret */
	enum facebook_stage stage;
};

int facebook_usage_exhausted(const char *header)
{
	json_t *j = header ? json_loads(header, 0, NULL) : NULL;
	const char *k;
	json_t *v;
	int full = 0;
	json_object_foreach(j, k, v) {
		if (json_is_number(v) && json_number_value(v) >= 100)
			full = 1;
	}
	json_decref(j);
	return full;
}

static int is_throttle_code(json_int_t code)
{
	return code == 1 || code == 2 || code == 4 || code == 17 || code == 32 || code == 341 ||
	       code == 613 || code == 80001;
}

enum facebook_outcome facebook_classify(const char *transport_error, long status,
                                        const char *body, const char *app_usage,
                                        const char *page_usage, social_result *out)
{
	json_t *j, *err;
	json_int_t code;
	const char *msg;
	char prefix[96];
	enum facebook_outcome o = FACEBOOK_OUTCOME_FAILED;
	int throttled = facebook_usage_exhausted(app_usage) || facebook_usage_exhausted(page_usage);

	if (social_no_answer(out, "Facebook", transport_error, status))
		return FACEBOOK_OUTCOME_FAILED;
	j = json_loads(body ? body : "", 0, NULL);
	err = json_object_get(j, "error");
	if (status >= 200 && status < 300 && err == NULL) {
		json_decref(j);
		return FACEBOOK_OUTCOME_OK;
	}
	code = json_integer_value(json_object_get(err, "code"));
	msg = json_string_value(json_object_get(err, "message"));
	if (code != 0)
		snprintf(prefix, sizeof(prefix), "Facebook: HTTP %ld, error %lld", status, (long long)code);
	else
		snprintf(prefix, sizeof(prefix), "Facebook: HTTP %ld", status);

	if (status >= 500 || is_throttle_code(code) ||
	    json_is_true(json_object_get(err, "is_transient"))) {
		social_set_error(out, prefix, msg);
	} else if (code == 190) {
		char why[160];
		snprintf(why, sizeof(why), "%s, token expired, re-authorize", prefix);
		out->permanent = 1;
		social_set_error(out, why, msg);
	} else if (code == 506) {
		social_set_error(out, prefix, msg);
		o = FACEBOOK_OUTCOME_DUPLICATE;
	} else if (throttled) {
		/* The usage headers say we are at the limit: whatever the code,
		 * trying again later is the answer. */
		char why[160];
		snprintf(why, sizeof(why), "%s, rate limited (usage at 100%%)", prefix);
		social_set_error(out, why, msg);
	} else {
		out->permanent = 1;
		social_set_error(out, prefix, msg);
	}
	json_decref(j);
	return o;
}

int facebook_appsecret_proof(const char *app_secret, const char *token, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	if (HMAC(EVP_sha256(), app_secret, (int)strlen(app_secret), (const unsigned char *)token,
	         strlen(token), mac, &len) == NULL ||
	    len != 32)
		return -EIO;
	for (unsigned int i = 0; i < len; i++) {
		out[2 * i] = hex[mac[i] >> 4];
		out[2 * i + 1] = hex[mac[i] & 15];
	}
	out[64] = '\0';
	OPENSSL_cleanse(mac, sizeof(mac));
	return 0;
}

/* name=enc(value), '&'-joined; a NULL value leaves the field out. */
static char *form(const char *const *pairs, size_t n)
{
	size_t cap = 1;
	char **enc = calloc(n, sizeof(char *));
	char *out = NULL;

	if (enc == NULL)
		return NULL;
	for (size_t i = 0; i < n; i += 2) {
		if (pairs[i + 1] == NULL)
			continue;
		enc[i + 1] = oauth1_encode(pairs[i + 1], strlen(pairs[i + 1]));
		if (enc[i + 1] == NULL)
			goto done;
		cap += strlen(pairs[i]) + strlen(enc[i + 1]) + 2;
	}
	out = malloc(cap);
	if (out == NULL)
		goto done;
	out[0] = '\0';
	for (size_t i = 0, len = 0; i < n; i += 2) {
		if (enc[i + 1] == NULL)
			continue;
		len += (size_t)snprintf(out + len, cap - len, "%s%s=%s", len ? "&" : "", pairs[i],
		                        enc[i + 1]);
	}
done:
	for (size_t i = 0; i < n; i++) {
		if (enc[i] != NULL)
			OPENSSL_cleanse(enc[i], strlen(enc[i]));
		free(enc[i]);
	}
	free(enc);
	return out;
}

char *facebook_post_body(const char *message, const char *link, const char *token,
                         const char *proof)
{
	const char *pairs[] = {
		"message", message && *message ? message : NULL,
		"link", link,
		"access_token", token,
		"appsecret_proof", proof,
	};
	return form(pairs, sizeof(pairs) / sizeof(pairs[0]));
}

int facebook_created_id(const char *body, char *id, size_t idlen)
{
	return social_answer_id(body, NULL, id, idlen);
}

/* A post carries post_url as its link or in its message. */
static int post_carries(const json_t *post, const char *post_url)
{
	const char *message = json_string_value(json_object_get(post, "message"));
	return social_same_url(json_string_value(json_object_get(post, "link")), post_url) ||
	       (message != NULL && strstr(message, post_url) != NULL);
}

int facebook_find_post(const char *body, const char *post_url, char *id, size_t idlen)
{
	return social_find_post(body, post_url, 0, post_carries, id, idlen);
}

void facebook_remote_url(const char *id, char *out, size_t outlen)
{
	snprintf(out, outlen, "https://www.facebook.com/%s", id);
}

/* ---- the driver ---- */

static void on_answer(void *arg, const net_response *r, const net_headers *h);

static int send_feed(struct facebook_call *c)
{
	const social_account *acct = &c->base.acct;
	char *page = oauth1_encode(acct->page_id, strlen(acct->page_id));
	char *token = oauth1_encode(acct->page_access_token, strlen(acct->page_access_token));
	char *url = NULL;
	net_request req = { .method = "GET", .timeout_ms = c->base.timeout_ms };
	const char *headers[] = { "Accept: application/json", NULL };
	int rc = -ENOMEM;

	if (page != NULL && token != NULL &&
	    asprintf(&url, "%s/%s/%s/feed?fields=id,link,message&limit=100&access_token=%s%s%s",
	             c->base.api, c->version, page, token, c->proof[0] ? "&appsecret_proof=" : "",
	             c->proof) >= 0) {
		c->stage = FB_STAGE_FEED;
		req.url = url;
		req.headers = headers;
		rc = social_call_send(&c->base, &req, 0, on_answer);
		OPENSSL_cleanse(url, strlen(url));
		free(url);
	}
	free(page);
	if (token != NULL)
		OPENSSL_cleanse(token, strlen(token));
	free(token);
	return rc;
}

static int send_post(struct facebook_call *c)
{
	const social_account *acct = &c->base.acct;
	char *page = oauth1_encode(acct->page_id, strlen(acct->page_id));
	char *body = facebook_post_body(c->base.text, c->base.url, acct->page_access_token,
	                                c->proof[0] ? c->proof : NULL);
	char url[1024];
	net_request req = { .method = "POST", .url = url, .timeout_ms = c->base.timeout_ms };
	const char *headers[] = { "Accept: application/json",
		                  "Content-Type: application/x-www-form-urlencoded", NULL };
	int rc = -ENOMEM;

	if (page != NULL && body != NULL) {
		snprintf(url, sizeof(url), "%s/%s/%s/feed", c->base.api, c->version, page);
		c->stage = FB_STAGE_POST;
		req.headers = headers;
		req.body = body;
		req.body_len = strlen(body);
		/* Never sent twice: see social_send_once. */
		rc = social_call_send(&c->base, &req, 1, on_answer);
	}
	free(page);
	if (body != NULL)
		OPENSSL_cleanse(body, strlen(body));
	free(body);
	return rc;
}

static void on_answer(void *arg, const net_response *r, const net_headers *h)
{
	struct facebook_call *c = arg;
	social_result res = { 0 };
	char app_usage[512] = "", page_usage[512] = "";
	enum facebook_outcome o;
	char id[96] = "";
	int rc = 0;

	/* net_header's value lives in one buffer per response: copy each. */
	if (h != NULL) {
		const char *v = net_header(h, "x-app-usage");
		if (v != NULL)
			snprintf(app_usage, sizeof(app_usage), "%s", v);
		v = net_header(h, "x-page-usage");
		if (v != NULL)
			snprintf(page_usage, sizeof(page_usage), "%s", v);
	}
	o = facebook_classify(r->error, r->status, r->body, app_usage[0] ? app_usage : NULL,
	                      page_usage[0] ? page_usage : NULL, &res);

	if (c->stage == FB_STAGE_FEED) {
		if (o != FACEBOOK_OUTCOME_OK) {
			social_call_finish(&c->base, &res);
			return;
		}
		switch (facebook_find_post(r->body, c->base.url, id, sizeof(id))) {
		case 1:
			log_info("facebook %s: %s is already posted as %s", c->base.acct.handle,
			         c->base.url, id);
			social_call_found(&c->base, id);
			return;
		case 0:
			if (c->base.after_duplicate) {
				res.permanent = 1;
				snprintf(res.error, sizeof(res.error),
				         "Facebook: refused as a duplicate status message, and the Page's "
				         "latest posts do not carry our link");
				social_call_finish(&c->base, &res);
				return;
			}
			rc = send_post(c);
			break;
		default:
			snprintf(res.error, sizeof(res.error), "Facebook: the feed answer is not JSON");
			social_call_finish(&c->base, &res);
			return;
		}
	} else if (o == FACEBOOK_OUTCOME_DUPLICATE) {
		c->base.after_duplicate = 1;
		rc = send_feed(c);
	} else if (o == FACEBOOK_OUTCOME_FAILED) {
		social_call_finish(&c->base, &res);
		return;
	} else {
		social_call_created(&c->base,
		                    facebook_created_id(r->body, id, sizeof(id)) == 0 ? id : NULL,
		                    r->status);
		return;
	}
	if (rc != 0)
		social_call_fail_send(&c->base, rc, 0);
}

static int facebook_crosspost(const social_env *env, const social_account *acct,
                              const social_post *p, int reconcile, social_done_fn done,
                              void *arg)
{
	struct facebook_call *c;
	void *call;
	int rc;

	if (env == NULL || env->facebook_version == NULL || acct->page_id[0] == '\0' ||
	    acct->page_access_token[0] == '\0')
		return -EINVAL;
	rc = social_call_new(&social_facebook, sizeof(*c), env, env->facebook_api_url, acct, p,
	                     done, arg, &call);
	if (rc != 0)
		return rc;
	c = call;
	snprintf(c->version, sizeof(c->version), "%s", env->facebook_version);
	if (acct->app_secret[0] != '\0')
		rc = facebook_appsecret_proof(acct->app_secret, acct->page_access_token, c->proof);
	if (rc == 0)
		rc = reconcile ? send_feed(c) : send_post(c);
	if (rc != 0)
		social_call_free(&c->base);
	return rc;
}

const social_driver social_facebook = { "facebook", facebook_crosspost, "Facebook",
	                                facebook_remote_url };

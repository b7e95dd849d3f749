/* social: the cross-posting driver table and the plumbing its drivers share. */
#include "deliver/social/social.h"

#include "core/log.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The drivers, one file each; adding a network adds a file and a name here. */
extern const social_driver social_x, social_facebook;

const social_driver *const social_drivers[] = { &social_x, &social_facebook, NULL };

const social_driver *social_driver_find(const char *name)
{
	for (size_t i = 0; name != NULL && social_drivers[i] != NULL; i++)
		if (strcmp(social_drivers[i]->name, name) == 0)
			return social_drivers[i];
	return NULL;
}

int social_same_url(const char *a, const char *b)
{
	size_t la, lb;
	if (a == NULL || b == NULL)
		return 0;
	la = strlen(a);
	lb = strlen(b);
	if (la > 0 && a[la - 1] == '/')
		la--;
	if (lb > 0 && b[lb - 1] == '/')
		lb--;
	return la == lb && la > 0 && strncmp(a, b, la) == 0;
}

void social_set_error(social_result *out, const char *prefix, const char *message)
{
	size_t len;
	if (message == NULL || *message == '\0')
		snprintf(out->error, sizeof(out->error), "%s", prefix);
	else if (snprintf(out->error, sizeof(out->error), "%s: %s", prefix, message) <
	         (int)sizeof(out->error))
		return;
	/* Cut: do not leave half a UTF-8 sequence at the end. */
	len = strlen(out->error);
	while (len > 0 && ((unsigned char)out->error[len - 1] & 0xc0) == 0x80)
		len--;
	if (len > 0 && ((unsigned char)out->error[len - 1] & 0x80) != 0) {
		/* A lead byte: keep its sequence only if it is complete. */
		unsigned char lead = (unsigned char)out->error[len - 1];
		size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
		if (strlen(out->error) - (len - 1) < need)
			out->error[len - 1] = '\0';
	}
}

struct send_once {
	net *net;
	net *parent;
	net_usage *usage;
	net_done_fn done;
	void *arg;
};

static void once_answered(void *arg, const net_response *r, const net_headers *h)
{
	struct send_once *o = arg;
	net_usage *before = o->parent ? net_account(o->parent, o->usage) : NULL;
	o->done(o->arg, r, h);
	if (o->parent != NULL)
		net_account(o->parent, before);
	net_close(o->net, NULL, NULL); /* freed once its handles are closed */
	free(o);
}

int social_send_once(uv_loop_t *loop, net *parent, const net_request *req, net_done_fn done,
                     void *arg)
{
	struct send_once *o = malloc(sizeof(*o));
	int rc;

	if (o == NULL)
		return -ENOMEM;
	*o = (struct send_once){ .parent = parent, .done = done, .arg = arg };
	if (parent != NULL) {
		o->usage = net_account(parent, NULL);
		net_account(parent, o->usage);
	}
	rc = net_create(loop, 1, &o->net);
	if (rc == 0) {
		net_account(o->net, o->usage);
		rc = net_send(o->net, req, once_answered, o);
		if (rc != 0)
			net_close(o->net, NULL, NULL);
	}
	if (rc != 0)
		free(o);
	return rc;
}

int social_no_answer(social_result *out, const char *label, const char *transport_error,
                     long status)
{
	char prefix[64];

	out->ok = 0;
	out->permanent = 0;
	out->retry_at_ms = 0;
	if (transport_error == NULL && status != 0)
		return 0;
	snprintf(prefix, sizeof(prefix), "%s: no answer", label);
	social_set_error(out, prefix, transport_error ? transport_error : "no status");
	return 1;
}

int social_answer_id(const char *body, const char *within, char *id, size_t idlen)
{
	json_t *j = json_loads(body ? body : "", 0, NULL);
	const json_t *o = within != NULL ? json_object_get(j, within) : j;
	const char *v = json_string_value(json_object_get(o, "id"));
	int rc = -1;
	if (v != NULL && *v != '\0' && strlen(v) < idlen) {
		snprintf(id, idlen, "%s", v);
		rc = 0;
	}
	json_decref(j);
	return rc;
}

int social_find_post(const char *body, const char *post_url, int absent_is_empty,
                     int (*carries)(const json_t *post, const char *post_url), char *id,
                     size_t idlen)
{
	json_t *j = json_loads(body ? body : "", 0, NULL);
	const json_t *data = json_object_get(j, "data"), *post;
	size_t i;
	int rc = -1;

	if (json_is_array(data))
		rc = 0;
	else if (json_is_object(j) && data == NULL && absent_is_empty)
		rc = 0;
	json_array_foreach(data, i, post) {
		const char *pid = json_string_value(json_object_get(post, "id"));
		/* An empty id is no id, as social_answer_id says. */
		if (carries(post, post_url) && pid != NULL && *pid != '\0' && strlen(pid) < idlen) {
			snprintf(id, idlen, "%s", pid);
			rc = 1;
			break;
		}
	}
	json_decref(j);
	return rc;
}

int social_call_new(const social_driver *driver, size_t size, const social_env *env,
                    const char *api, const social_account *acct, const social_post *p,
                    social_done_fn done, void *arg, void **out)
{
	social_call *c;
	size_t n;

	if (env == NULL || env->net == NULL || env->loop == NULL || api == NULL || p == NULL ||
	    p->url == NULL || *p->url == '\0')
		return -EINVAL;
	c = calloc(1, size);
	if (c == NULL)
		return -ENOMEM;
	c->driver = driver;
	c->size = size;
	c->net = env->net;
	c->loop = env->loop;
	snprintf(c->api, sizeof(c->api), "%s", api);
	n = strlen(c->api);
	while (n > 0 && c->api[n - 1] == '/')
		c->api[--n] = '\0';
	c->timeout_ms = env->timeout_ms;
	c->acct = *acct;
	c->text = strdup(p->text ? p->text : "");
	c->url = strdup(p->url);
	c->done = done;
	c->arg = arg;
	if (c->text == NULL || c->url == NULL) {
		social_call_free(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

void social_call_free(social_call *c)
{
	free(c->text);
	free(c->url);
	OPENSSL_cleanse(c, c->size); /* secrets */
	free(c);
}

void social_call_finish(social_call *c, social_result *res)
{
	if (!res->ok)
		log_warn("%s %s: %s", c->driver->name, c->acct.handle, res->error);
	c->done(c->arg, res);
	social_call_free(c);
}

void social_call_found(social_call *c, const char *id)
{
	social_result res = { .ok = 1, .found = 1 };
	if (id != NULL) {
		snprintf(res.remote_id, sizeof(res.remote_id), "%s", id);
		c->driver->remote_url(id, res.remote_url, sizeof(res.remote_url));
	}
	social_call_finish(c, &res);
}

void social_call_created(social_call *c, const char *id, long status)
{
	social_result res = { 0 };
	if (id == NULL) {
		snprintf(res.error, sizeof(res.error), "%s: HTTP %ld without a post id",
		         c->driver->label, status);
	} else {
		res.ok = 1;
		snprintf(res.remote_id, sizeof(res.remote_id), "%s", id);
		c->driver->remote_url(id, res.remote_url, sizeof(res.remote_url));
	}
	social_call_finish(c, &res);
}

void social_call_fail_send(social_call *c, int rc, int permanent)
{
	social_result res = { 0 };
	snprintf(res.error, sizeof(res.error), "%s: could not send the request: %s",
	         c->driver->label, strerror(-rc));
	res.permanent = permanent;
	social_call_finish(c, &res);
}

int social_call_send(social_call *c, const net_request *req, int once, net_done_fn on_answer)
{
	if (once)
		return social_send_once(c->loop, c->net, req, on_answer, c);
	return net_send(c->net, req, on_answer, c);
}

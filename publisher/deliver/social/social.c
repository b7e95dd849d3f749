/* social: the driver table and the helpers the drivers share. */
#include "deliver/social/social.h"

#include <errno.h>
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
	net_done_fn done;
	void *arg;
};

static void once_answered(void *arg, const net_response *r, const net_headers *h)
{
	struct send_once *o = arg;
	o->done(o->arg, r, h);
	net_close(o->net, NULL, NULL); /* freed once its handles are closed */
	free(o);
}

int social_send_once(uv_loop_t *loop, const net_request *req, net_done_fn done, void *arg)
{
	struct send_once *o = calloc(1, sizeof(*o));
	int rc;

	if (o == NULL)
		return -ENOMEM;
	o->done = done;
	o->arg = arg;
	rc = net_create(loop, 1, &o->net);
	if (rc == 0) {
		rc = net_send(o->net, req, once_answered, o);
		if (rc != 0)
			net_close(o->net, NULL, NULL);
	}
	if (rc != 0)
		free(o);
	return rc;
}

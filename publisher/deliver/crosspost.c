/* crosspost: loads the social accounts file and runs the worker that posts cross-post jobs. */
#include "deliver/crosspost.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/jsonstore.h"
#include "core/log.h"
#include "deliver/net.h"
#include "deliver/social/social.h"
#include "deliver/payload.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <openssl/crypto.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define ACCOUNTS_MAX 256

struct crosspost_accounts {
	social_account a[ACCOUNTS_MAX];
	size_t n;
};

static social_account *account_get(struct crosspost_accounts *s, const char *handle,
                                   const char *network, int create)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->a[i].handle, handle) == 0 && strcmp(s->a[i].network, network) == 0)
			return &s->a[i];
	if (!create || s->n == ACCOUNTS_MAX)
		return NULL;
	social_account *a = &s->a[s->n++];
	memset(a, 0, sizeof(*a));
	snprintf(a->handle, sizeof(a->handle), "%s", handle);
	snprintf(a->network, sizeof(a->network), "%s", network);
	return a;
}

/* Sets key on a; 0, or -1 for an unknown key or an over-long value. */
static int account_set(social_account *a, const char *key, const char *value)
{
	static const struct {
		const char *network, *key;
		size_t off, size;
	} fields[] = {
#define F(net, name)                                                                       \
	{ net, #name, offsetof(social_account, name), sizeof(((social_account *)0)->name) }
		F("x", consumer_key), F("x", consumer_secret), F("x", access_token),
		F("x", access_token_secret), F("x", user_id), F("facebook", page_id),
		F("facebook", page_access_token), F("facebook", app_secret),
#undef F
	};
	if (strcmp(key, "enabled") == 0) {
		a->enabled = strcmp(value, "true") == 0 || strcmp(value, "on") == 0 ||
		             strcmp(value, "1") == 0 || strcmp(value, "yes") == 0;
		return 0;
	}
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		if (strcmp(fields[i].network, a->network) == 0 && strcmp(fields[i].key, key) == 0) {
			if (strlen(value) >= fields[i].size)
				return -1;
			snprintf((char *)a + fields[i].off, fields[i].size, "%s", value);
			return 0;
		}
	}
	return -1;
}

struct ini_ctx {
	struct crosspost_accounts *s;
	char *err;
	size_t errlen;
};

static int known_network(const char *n)
{
	return strcmp(n, "x") == 0 || strcmp(n, "facebook") == 0;
}

static int on_entry(void *user, const char *section, const char *key, const char *value)
{
	struct ini_ctx *c = user;
	char handle[64];
	const char *dot = strrchr(section, '.');
	social_account *a;

	if (dot == NULL || (size_t)(dot - section) >= sizeof(handle) || !known_network(dot + 1)) {
		snprintf(c->err, c->errlen, "section [%s]: use [HANDLE.x] or [HANDLE.facebook]", section);
		return 0;
	}
	memcpy(handle, section, (size_t)(dot - section));
	handle[dot - section] = '\0';
	a = account_get(c->s, handle, dot + 1, 1);
	if (a == NULL || account_set(a, key, value) != 0) {
		/* The value may be a secret: name the key only. */
		snprintf(c->err, c->errlen, "[%s] %s: unknown key or value too long", section, key);
		return 0;
	}
	return 1;
}

/* SAYIN_SOCIAL_<HANDLE>_<NETWORK>_<KEY> overrides for every account known
 * from the file, and accounts wholly from the environment. */
static void apply_environment(struct crosspost_accounts *s)
{
	extern char **environ;
	static const char *const networks[] = { "x", "facebook" };
	for (char **e = environ; *e != NULL; e++) {
		const char *v = strchr(*e, '=');
		char name[256], lower[256];
		if (strncmp(*e, "SAYIN_SOCIAL_", 13) != 0 || v == NULL || (size_t)(v - *e) >= sizeof(name))
			continue;
		memcpy(name, *e + 13, (size_t)(v - *e) - 13);
		name[v - *e - 13] = '\0';
		for (size_t i = 0; name[i] != '\0'; i++)
			lower[i] = (char)tolower((unsigned char)name[i]);
		lower[strlen(name)] = '\0';
		/* handle_network_key: handles may hold '_', networks do not. */
		for (size_t n = 0; n < 2; n++) {
			char pat[32];
			char *hit;
			snprintf(pat, sizeof(pat), "_%s_", networks[n]);
			hit = strstr(lower, pat);
			if (hit == NULL || hit == lower)
				continue;
			*hit = '\0';
			social_account *a = account_get(s, lower, networks[n], 1);
			if (a != NULL && account_set(a, hit + strlen(pat), v + 1) != 0)
				log_warn("crosspost: %.*s: unknown key", (int)(v - *e), *e);
			break;
		}
	}
}

int crosspost_accounts_load(const char *path, crosspost_accounts **out, char *err, size_t errlen)
{
	struct crosspost_accounts *s = calloc(1, sizeof(*s));
	struct ini_ctx c = { s, err, errlen };

	if (s == NULL)
		return -ENOMEM;
	err[0] = '\0';
	if (path != NULL && *path != '\0') {
		struct stat sb;
		FILE *f = fopen(path, "r");
		int rc;
		if (f == NULL) {
			snprintf(err, errlen, "cannot open the social accounts file %s: %s", path,
			         strerror(errno));
			free(s);
			return SAYIN_ECONFIG;
		}
		if (fstat(fileno(f), &sb) == 0 && (sb.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
			snprintf(err, errlen, "%s holds secrets and others may read it: chmod 600 %s", path,
			         path);
			fclose(f);
			free(s);
			return SAYIN_ECONFIG;
		}
		rc = ini_parse_file(f, on_entry, &c);
		fclose(f);
		if (rc != 0) {
			if (err[0] == '\0')
				snprintf(err, errlen, "%s: syntax error on line %d", path, rc);
			else {
				size_t used = strlen(err);
				snprintf(err + used, errlen - used, " (%s line %d)", path, rc);
			}
			free(s);
			return SAYIN_ECONFIG;
		}
	}
	apply_environment(s);
	*out = s;
	return 0;
}

void crosspost_accounts_free(crosspost_accounts *a)
{
	if (a != NULL)
		OPENSSL_cleanse(a, sizeof(*a)); /* secrets do not outlive their use */
	free(a);
}

int crosspost_enabled(void *arg, const char *handle, const char *network)
{
	social_account *a = account_get(arg, handle, network, 0);
	return a != NULL && a->enabled;
}

/* ---- the worker ---- */

struct run {
	uv_loop_t loop;
	net *net;
	social_env env;
	const crosspost_options *opt;
	const crosspost_accounts *accounts;
	crosspost_counts *counts;
	char owner[64];
	unsigned pending;
	int stop;
	int rc;
};

struct job_ctx {
	struct run *r;
	char id[OUTBOX_ID_LEN + 1];
	char key[128];
	char network[32];
	double start_ms;  /* clock_mono_ms_f() when the driver got the job */
	net_usage usage;  /* its requests' time: the rest is the driver's */
};


static void lease_round(struct run *r);

/* The key of a cross-post done: "POST\nNETWORK". 0, or -1 when it does not
 * fit in len. */
static int done_key(char *key, size_t len, const char *post_id, const char *network)
{
	int n = snprintf(key, len, "%s\n%s", post_id, network);
	return n >= 0 && (size_t)n < len ? 0 : -1;
}

static int done_read(const void *record, size_t len, crosspost_done *out)
{
	json_t *j = NULL;
	int rc = jsonstore_parse(record, len, &j);

	memset(out, 0, sizeof(*out));
	if (rc != 0)
		return rc;
	out->network = json_string_value(json_object_get(j, "network"));
	out->remote_id = json_string_value(json_object_get(j, "remote_id"));
	out->remote_url = json_string_value(json_object_get(j, "remote_url"));
	out->found = json_is_true(json_object_get(j, "found"));
	out->done_ms = (int64_t)json_integer_value(json_object_get(j, "done_ms"));
	out->record = j;
	return 0;
}

void crosspost_done_release(crosspost_done *d)
{
	json_decref(d->record);
	memset(d, 0, sizeof(*d));
}

int crosspost_done_get(store_txn *txn, const char *post_id, const char *network,
                       crosspost_done *out)
{
	char key[512];
	const void *rec;
	size_t len;
	int rc;

	memset(out, 0, sizeof(*out));
	if (done_key(key, sizeof(key), post_id, network) != 0)
		return SAYIN_ENOTFOUND;
	rc = store_get_record(txn, STORE_CROSSPOSTS, key, &rec, &len);
	return rc != 0 ? rc : done_read(rec, len, out);
}

struct each_done_ctx {
	crosspost_done_fn fn;
	void *arg;
};

static int each_done(void *arg, const char *key, const void *record, size_t len)
{
	struct each_done_ctx *c = arg;
	size_t id_len = strcspn(key, "\n");
	char *post_id = strndup(key, id_len);
	crosspost_done d;
	int rc;

	if (post_id == NULL)
		return -ENOMEM;
	if (done_read(record, len, &d) != 0)
		log_error("crosspost: the record of %s is corrupt", key);
	rc = c->fn(c->arg, post_id, &d);
	crosspost_done_release(&d);
	free(post_id);
	return rc;
}

int crosspost_each_done(store_txn *txn, crosspost_done_fn fn, void *arg)
{
	struct each_done_ctx c = { fn, arg };
	return store_each_record(txn, STORE_CROSSPOSTS, "", each_done, &c);
}

static void on_posted(void *arg, const social_result *res)
{
	struct job_ctx *j = arg;
	struct run *r = j->r;
	int rc, parked = 0;
	char timing[160];

	net_usage_forget(r->net, &j->usage);
	net_usage_describe(&j->usage, j->start_ms, timing, sizeof(timing));
	if (res->ok) {
		json_t *rec = json_pack("{s:s, s:s, s:s, s:b, s:I}", "network", j->network,
		                        "remote_id", res->remote_id, "remote_url", res->remote_url,
		                        "found", res->found, "done_ms", (json_int_t)clock_now_ms());
		rc = rec ? outbox_complete_record(r->opt->st, j->id, r->owner, STORE_CROSSPOSTS, j->key,
		                                  rec)
		         : -ENOMEM;
		json_decref(rec);
		if (rc == 0) {
			if (res->found)
				r->counts->found++;
			else
				r->counts->posted++;
			log_info("crosspost: job %s: %s post %s %s %s", j->id, j->network,
			         res->remote_id[0] ? res->remote_id : "(id unknown)",
			         res->found ? "found already there (not posted again)" : "created",
			         timing);
		}
	} else {
		rc = outbox_fail(r->opt->st, &r->opt->policy, j->id, r->owner, res->error, res->permanent,
		                 res->retry_at_ms, clock_now_ms(), &parked);
		if (rc == 0) {
			r->counts->failed++;
			if (parked)
				r->counts->parked++;
			log_warn("crosspost: job %s (%s) %s %s: %s", j->id, j->network,
			         parked ? "parked, needs action," : "failed, will retry,", timing,
			         res->error);
		}
	}
	if (rc != 0)
		log_error("crosspost: job %s: cannot record the outcome: %s (the next run reconciles "
		          "before posting again)", j->id, sayin_strerror(rc));
	free(j);
	if (--r->pending == 0)
		lease_round(r);
}

/* 1 when the post's record is gone from the store (a read of one key). */
static int post_gone(store *st, const char *post)
{
	const void *rec;
	size_t len;
	store_txn *txn;
	int rc = store_txn_begin(st, 0, &txn);

	if (rc != 0)
		return 0; /* cannot tell: go on as before, the post is checked next run */
	rc = store_get_post(txn, post, &rec, &len);
	store_txn_abort(txn);
	return rc == SAYIN_ENOTFOUND;
}

static void start_job(struct run *r, const outbox_job *job)
{
	const social_driver *drv = social_driver_find(job->target);
	payload_view pv;
	const char *author, *post;
	social_account *acct;
	struct job_ctx *j = calloc(1, sizeof(*j));
	social_result fail = { 0 };
	int rc;

	payload_read(job->payload, &pv);
	author = pv.author;
	post = pv.post;
	acct = author ? account_get((struct crosspost_accounts *)r->accounts, author, job->target, 0)
	              : NULL;
	if (j == NULL)
		return;
	j->r = r;
	j->start_ms = clock_mono_ms_f();
	snprintf(j->id, sizeof(j->id), "%s", job->id);
	snprintf(j->network, sizeof(j->network), "%s", job->target);
	(void)done_key(j->key, sizeof(j->key), post ? post : "", job->target);
	r->pending++;
	if (drv == NULL || post == NULL || acct == NULL || !acct->enabled) {
		snprintf(fail.error, sizeof(fail.error), "%s", drv == NULL ? "unknown network"
		         : post == NULL ? "job without a post" : "no enabled account for this author");
		fail.permanent = 1;
		on_posted(j, &fail);
		return;
	}
	/* Taken down (post delete, the API's DELETE, author remove) after the
	 * job was queued: a link to a 404/410 page must not go out. Done,
	 * without a post; one an earlier attempt made stays (takedowns list
	 * cross-posts already made, they do not undo them). */
	if (post_gone(r->opt->st, post)) {
		rc = outbox_complete(r->opt->st, job->id, r->owner);
		if (rc == 0) {
			r->counts->skipped++;
			log_info("crosspost: job %s (%s): post %s was deleted: not cross-posted%s", job->id,
			         job->target, post,
			         job->attempted ? " (an earlier attempt may have posted it)" : "");
		} else {
			log_error("crosspost: job %s: cannot drop the job of deleted post %s: %s", job->id,
			          post, sayin_strerror(rc));
		}
		free(j);
		r->pending--;
		return;
	}
	/* Recorded before the request: if we die after the network took the
	 * post and before we record it, the next run reconciles first. */
	rc = outbox_mark_attempt(r->opt->st, job->id, r->owner);
	if (rc == 0) {
		social_post p = { post, pv.text, pv.url };
		if (job->attempted)
			log_info("crosspost: job %s (%s): an earlier attempt has no outcome: reconciling "
			         "first", job->id, job->target);
		net_usage *before = net_account(r->net, &j->usage);
		rc = drv->crosspost(&r->env, acct, &p, job->attempted, on_posted, j);
		/* j may be gone (a driver that answers at once): only restore. */
		net_account(r->net, before);
	}
	if (rc != 0) {
		snprintf(fail.error, sizeof(fail.error), "cannot start: %s", sayin_strerror(rc));
		on_posted(j, &fail);
	}
}

static void lease_round(struct run *r)
{
	static const char *const networks[] = { "x", "facebook", NULL };
	outbox_job *jobs = NULL;
	size_t n = 0;
	int rc;

	if (r->stop)
		return;
	rc = outbox_lease_targets(r->opt->st, &r->opt->policy, r->owner, networks, clock_now_ms(), 16,
	                          &jobs, &n);
	if (rc != 0 || n == 0) {
		if (rc != 0) {
			log_error("crosspost: cannot lease jobs: %s", sayin_strerror(rc));
			r->rc = rc;
		}
		outbox_jobs_free(jobs, n);
		r->stop = 1;
		net_close(r->net, NULL, NULL);
		return;
	}
	r->pending++; /* held while starting, so a quick answer cannot end the round */
	for (size_t i = 0; i < n; i++)
		start_job(r, &jobs[i]);
	outbox_jobs_free(jobs, n);
	if (--r->pending == 0)
		lease_round(r);
}

static void on_start(uv_timer_t *t)
{
	uv_close((uv_handle_t *)t, NULL);
	lease_round(t->data);
}

int crosspost_run(const crosspost_options *opt, const crosspost_accounts *accounts,
                  crosspost_counts *counts)
{
	struct run r = { .opt = opt, .accounts = accounts, .counts = counts };
	unsigned char rnd[8];
	uv_timer_t start;
	int rc;

	memset(counts, 0, sizeof(*counts));
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		memset(rnd, 0, sizeof(rnd));
	snprintf(r.owner, sizeof(r.owner), "crosspost-%d-%02x%02x%02x%02x%02x%02x%02x%02x",
	         (int)getpid(), rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	rc = uv_loop_init(&r.loop);
	if (rc != 0)
		return rc;
	rc = net_create(&r.loop, 8, &r.net);
	if (rc != 0) {
		uv_loop_close(&r.loop);
		return rc;
	}
	r.env = (social_env){ .loop = &r.loop, .net = r.net, .x_api_url = opt->x_api_url,
		              .facebook_api_url = opt->facebook_api_url,
		              .facebook_version = opt->facebook_version,
		              .timeout_ms = opt->timeout_ms };
	uv_timer_init(&r.loop, &start);
	start.data = &r;
	uv_timer_start(&start, on_start, 0, 0);
	uv_run(&r.loop, UV_RUN_DEFAULT);
	uv_loop_close(&r.loop);
	return r.rc;
}

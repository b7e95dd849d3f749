/* outbox: keeps delivery jobs in the store: enqueue, lease, complete, fail, park, retry. */
#include "deliver/outbox.h"

#include "core/error.h"
#include "core/jsonstore.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define SEQ_KEY "outbox_next_id"

static void policy_defaults(const outbox_policy *in, outbox_policy *p)
{
	*p = in ? *in : (outbox_policy){ 0 };
	if (p->lease_ms == 0)
		p->lease_ms = 60000;
	if (p->backoff_ms == 0)
		p->backoff_ms = 1000;
	if (p->backoff_max_ms == 0)
		p->backoff_max_ms = 600000;
	if (p->max_attempts == 0)
		p->max_attempts = 10;
	if (p->max_age_ms == 0)
		p->max_age_ms = 86400000;
}

static int next_id(store_txn *txn, char id[OUTBOX_ID_LEN + 1])
{
	const void *rec;
	size_t len;
	unsigned long long n = 1;
	char buf[32];
	int rc = store_get_record(txn, STORE_META, SEQ_KEY, &rec, &len);

	if (rc == 0) {
		if (len == 0 || len >= sizeof(buf))
			return SAYIN_ECORRUPT;
		memcpy(buf, rec, len);
		buf[len] = '\0';
		n = strtoull(buf, NULL, 10);
	} else if (rc != SAYIN_ENOTFOUND) {
		return rc;
	}
	snprintf(id, OUTBOX_ID_LEN + 1, "%020llu", n);
	snprintf(buf, sizeof(buf), "%llu", n + 1);
	return store_put_record(txn, STORE_META, SEQ_KEY, buf, strlen(buf));
}

int outbox_enqueue(store_txn *txn, const char *target, json_t *payload, const char *const *after,
                   size_t n_after, int64_t now_ms, char id[OUTBOX_ID_LEN + 1])
{
	json_t *j, *deps = json_array();
	int rc = next_id(txn, id);

	if (rc != 0 || deps == NULL) {
		json_decref(deps);
		return rc != 0 ? rc : -ENOMEM;
	}
	for (size_t i = 0; i < n_after; i++)
		json_array_append_new(deps, json_string(after[i]));
	j = json_pack("{s:s, s:s, s:O, s:o, s:I, s:i, s:I, s:I, s:s, s:s, s:b}", "id", id, "target",
	              target, "payload", payload, "after", deps, "created_ms", (json_int_t)now_ms,
	              "attempts", 0, "next_ms", (json_int_t)now_ms, "lease_until_ms",
	              (json_int_t)0, "lease_owner", "", "last_error", "", "parked", 0);
	if (j == NULL)
		return -ENOMEM;
	rc = jsonstore_put(txn, STORE_OUTBOX, id, j);
	json_decref(j);
	return rc;
}

void outbox_jobs_free(outbox_job *jobs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		json_decref(jobs[i].payload);
	free(jobs);
}

struct lease_ctx {
	const char *const *targets; /* NULL: any */
	store_txn *txn;
	const outbox_policy *pol;
	const char *owner;
	int64_t now;
	size_t max;
	outbox_job *jobs;
	size_t n;
	int rc;
};

static int64_t jint(const json_t *j, const char *k)
{
	return (int64_t)json_integer_value(json_object_get(j, k));
}

/* 1 when every job in "after" is gone. */
static int deps_done(store_txn *txn, const json_t *rec)
{
	const json_t *deps = json_object_get(rec, "after"), *d;
	size_t i;
	json_array_foreach(deps, i, d) {
		const void *r;
		size_t len;
		const char *id = json_string_value(d);
		if (id != NULL && store_get_record(txn, STORE_OUTBOX, id, &r, &len) == 0)
			return 0;
	}
	return 1;
}

static int lease_one(void *arg, const char *key, const void *record, size_t len)
{
	struct lease_ctx *c = arg;
	json_t *j;
	int rc;

	if (c->n >= c->max)
		return 1; /* enough: stop the walk */
	if (jsonstore_parse(record, len, &j) != 0) {
		log_error("outbox: job %s has a corrupt record", key);
		return 0;
	}
	if (c->targets != NULL) {
		const char *t = json_string_value(json_object_get(j, "target"));
		size_t k = 0;
		while (c->targets[k] != NULL && (t == NULL || strcmp(c->targets[k], t) != 0))
			k++;
		if (c->targets[k] == NULL) {
			json_decref(j);
			return 0;
		}
	}
	if (json_is_true(json_object_get(j, "parked")) || jint(j, "next_ms") > c->now ||
	    jint(j, "lease_until_ms") > c->now || !deps_done(c->txn, j)) {
		json_decref(j);
		return 0;
	}
	json_object_set_new(j, "lease_until_ms", json_integer(c->now + (json_int_t)c->pol->lease_ms));
	json_object_set_new(j, "lease_owner", json_string(c->owner));
	rc = jsonstore_put(c->txn, STORE_OUTBOX, key, j);
	if (rc == 0) {
		outbox_job *job = &c->jobs[c->n++];
		snprintf(job->id, sizeof(job->id), "%s", key);
		snprintf(job->target, sizeof(job->target), "%s",
		         json_string_value(json_object_get(j, "target")) ?: "");
		job->payload = json_incref(json_object_get(j, "payload"));
		job->attempts = (unsigned)jint(j, "attempts");
		job->created_ms = jint(j, "created_ms");
		job->attempted = json_is_true(json_object_get(j, "attempt_started"));
	}
	json_decref(j);
	c->rc = rc;
	return rc;
}

int outbox_lease(store *st, const outbox_policy *pol, const char *owner, int64_t now_ms,
                 size_t max, outbox_job **jobs, size_t *n)
{
	return outbox_lease_targets(st, pol, owner, NULL, now_ms, max, jobs, n);
}

int outbox_lease_targets(store *st, const outbox_policy *pol_in, const char *owner,
                         const char *const *targets, int64_t now_ms, size_t max,
                         outbox_job **jobs, size_t *n)
{
	outbox_policy pol;
	struct lease_ctx c = { .targets = targets, .owner = owner, .now = now_ms, .max = max };
	int rc;

	policy_defaults(pol_in, &pol);
	c.pol = &pol;
	*jobs = NULL;
	*n = 0;
	c.jobs = calloc(max ? max : 1, sizeof(*c.jobs));
	if (c.jobs == NULL)
		return -ENOMEM;
	rc = store_txn_begin(st, 1, &c.txn);
	if (rc != 0) {
		free(c.jobs);
		return rc;
	}
	rc = store_each_record(c.txn, STORE_OUTBOX, "", lease_one, &c);
	if (rc == 1)
		rc = 0;
	if (rc == 0 && c.n == 0) {
		store_txn_abort(c.txn);
	} else if (rc == 0) {
		rc = store_txn_commit(c.txn);
	} else {
		store_txn_abort(c.txn);
	}
	if (rc != 0) {
		outbox_jobs_free(c.jobs, c.n);
		return rc;
	}
	*jobs = c.jobs;
	*n = c.n;
	return 0;
}

/* Changes the leased job j (id) inside the write transaction txn. */
typedef int (*leased_fn)(store_txn *txn, const char *id, json_t *j, void *arg);

/* Runs fn on job id in a write transaction of its own, committed when fn
 * returns 0. -ESTALE when owner no longer holds the lease (or the job is
 * gone: completed by someone else); SAYIN_ECORRUPT; a store error; or
 * fn's error (the transaction is then aborted). */
static int with_leased(store *st, const char *id, const char *owner, leased_fn fn, void *arg)
{
	store_txn *txn;
	json_t *j = NULL;
	const char *held;
	int rc = store_txn_begin(st, 1, &txn);

	if (rc != 0)
		return rc;
	rc = jsonstore_get(txn, STORE_OUTBOX, id, &j);
	if (rc == SAYIN_ENOTFOUND)
		rc = -ESTALE;
	held = json_string_value(json_object_get(j, "lease_owner"));
	if (rc == 0 && (held == NULL || strcmp(held, owner) != 0))
		rc = -ESTALE;
	if (rc == 0)
		rc = fn(txn, id, j, arg);
	json_decref(j);
	if (rc == 0)
		return store_txn_commit(txn);
	store_txn_abort(txn);
	return rc;
}

struct complete_ctx {
	enum store_table table;
	const char *key;
	const json_t *record;
};

static int complete_one(store_txn *txn, const char *id, json_t *j, void *arg)
{
	const struct complete_ctx *c = arg;
	int rc = store_delete_record(txn, STORE_OUTBOX, id);
	(void)j;
	if (rc == 0 && c->key != NULL)
		rc = jsonstore_put(txn, c->table, c->key, c->record);
	return rc;
}

int outbox_complete_record(store *st, const char *id, const char *owner, enum store_table table,
                           const char *key, const json_t *record)
{
	struct complete_ctx c = { table, key, record };
	return with_leased(st, id, owner, complete_one, &c);
}

int outbox_complete(store *st, const char *id, const char *owner)
{
	return outbox_complete_record(st, id, owner, STORE_OUTBOX, NULL, NULL);
}

static int mark_one(store_txn *txn, const char *id, json_t *j, void *arg)
{
	(void)arg;
	if (json_object_set_new(j, "attempt_started", json_true()) != 0)
		return -ENOMEM;
	return jsonstore_put(txn, STORE_OUTBOX, id, j);
}

int outbox_mark_attempt(store *st, const char *id, const char *owner)
{
	return with_leased(st, id, owner, mark_one, NULL);
}

/* Full jitter on the upper half: [d/2, d). */
static uint64_t jitter(uint64_t d)
{
	uint32_t r = 0;
	if (d < 2 || getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
		return d;
	return d / 2 + r % (d / 2);
}

struct fail_ctx {
	outbox_policy pol;
	const char *error;
	int permanent;
	int64_t retry_at_ms, now_ms;
	int *parked;
};

static int fail_one(store_txn *txn, const char *id, json_t *j, void *arg)
{
	const struct fail_ctx *c = arg;
	unsigned attempts = (unsigned)jint(j, "attempts") + 1;

	if (c->permanent || attempts >= c->pol.max_attempts ||
	    c->now_ms - jint(j, "created_ms") >= (int64_t)c->pol.max_age_ms) {
		*c->parked = 1;
	} else {
		uint64_t d = c->pol.backoff_ms;
		for (unsigned i = 1; i < attempts && d < c->pol.backoff_max_ms; i++)
			d *= 2;
		if (d > c->pol.backoff_max_ms)
			d = c->pol.backoff_max_ms;
		int64_t next = c->now_ms + (int64_t)jitter(d);
		if (c->retry_at_ms > next)
			next = c->retry_at_ms;
		json_object_set_new(j, "next_ms", json_integer(next));
	}
	json_object_set_new(j, "attempts", json_integer(attempts));
	json_object_set_new(j, "last_error", json_string(c->error ? c->error : "failed"));
	json_object_set_new(j, "parked", json_boolean(*c->parked));
	json_object_set_new(j, "lease_until_ms", json_integer(0));
	json_object_set_new(j, "lease_owner", json_string(""));
	return jsonstore_put(txn, STORE_OUTBOX, id, j);
}

int outbox_fail(store *st, const outbox_policy *pol, const char *id, const char *owner,
                const char *error, int permanent, int64_t retry_at_ms, int64_t now_ms,
                int *parked)
{
	struct fail_ctx c = { .error = error, .permanent = permanent, .retry_at_ms = retry_at_ms,
		              .now_ms = now_ms, .parked = parked };

	policy_defaults(pol, &c.pol);
	*parked = 0;
	return with_leased(st, id, owner, fail_one, &c);
}

/* Called with a job's parsed record (the callee may change it, not keep it). */
typedef int (*job_fn)(void *arg, const char *id, json_t *job);

struct each_ctx {
	job_fn fn;
	void *arg;
	int skip_corrupt; /* readers: log a corrupt job and go on, as leasing does */
};

static int each_parsed(void *arg, const char *key, const void *record, size_t len)
{
	struct each_ctx *c = arg;
	json_t *j;
	int rc = jsonstore_parse(record, len, &j);
	if (rc != 0 && c->skip_corrupt) {
		log_error("outbox: job %s has a corrupt record", key);
		return 0;
	}
	if (rc != 0)
		return rc;
	rc = c->fn(c->arg, key, j);
	json_decref(j);
	return rc;
}

/* Calls fn for every job in txn (id NULL), or for job id alone. Returns 0,
 * the first non-zero return of fn, SAYIN_ENOTFOUND, SAYIN_ECORRUPT, or a
 * store error. */
static int each_job(store_txn *txn, const char *id, job_fn fn, void *arg)
{
	struct each_ctx c = { fn, arg, 0 };
	const void *rec;
	size_t len;
	int rc;

	if (id == NULL)
		return store_each_record(txn, STORE_OUTBOX, "", each_parsed, &c);
	rc = store_get_record(txn, STORE_OUTBOX, id, &rec, &len);
	return rc != 0 ? rc : each_parsed(&c, id, rec, len);
}

struct retry_ctx {
	store_txn *txn;
	int64_t now;
	unsigned n;
};

static int retry_one(void *arg, const char *id, json_t *j)
{
	struct retry_ctx *c = arg;
	int rc = 0;
	if (json_is_true(json_object_get(j, "parked"))) {
		json_object_set_new(j, "parked", json_false());
		json_object_set_new(j, "attempts", json_integer(0));
		json_object_set_new(j, "next_ms", json_integer(c->now));
		/* A retried job gets a fresh age, or it would park again at once. */
		json_object_set_new(j, "created_ms", json_integer(c->now));
		rc = jsonstore_put(c->txn, STORE_OUTBOX, id, j);
		if (rc == 0)
			c->n++;
	}
	return rc;
}

int outbox_retry(store *st, const char *id, int64_t now_ms, unsigned *count)
{
	struct retry_ctx c = { .now = now_ms };
	int rc = store_txn_begin(st, 1, &c.txn);

	*count = 0;
	if (rc != 0)
		return rc;
	rc = each_job(c.txn, id, retry_one, &c);
	if (rc == 0) {
		*count = c.n;
		return store_txn_commit(c.txn);
	}
	store_txn_abort(c.txn);
	return rc;
}

struct user_ctx {
	outbox_each_fn fn;
	void *arg;
};

static int each_user(void *arg, const char *id, json_t *j)
{
	struct user_ctx *u = arg;
	outbox_job_view v = {
		.target = json_string_value(json_object_get(j, "target")),
		.payload = json_object_get(j, "payload"),
		.attempts = (unsigned)jint(j, "attempts"),
		.parked = json_is_true(json_object_get(j, "parked")),
		.created_ms = jint(j, "created_ms"),
		.next_ms = jint(j, "next_ms"),
		.lease_until_ms = jint(j, "lease_until_ms"),
		.last_error = json_string_value(json_object_get(j, "last_error")),
	};
	if (v.target == NULL)
		v.target = "";
	if (v.last_error == NULL)
		v.last_error = "";
	return u->fn(u->arg, id, &v);
}

int outbox_each_in(store_txn *txn, outbox_each_fn fn, void *arg)
{
	struct user_ctx u = { fn, arg };
	struct each_ctx c = { each_user, &u, 1 };
	return store_each_record(txn, STORE_OUTBOX, "", each_parsed, &c);
}

int outbox_each(store *st, outbox_each_fn fn, void *arg)
{
	store_txn *txn;
	int rc = store_txn_begin(st, 0, &txn);
	if (rc != 0)
		return rc;
	rc = outbox_each_in(txn, fn, arg);
	store_txn_abort(txn);
	return rc;
}

struct stats_ctx {
	outbox_stats *s;
	int64_t now;
};

static int stats_one(void *arg, const char *id, const outbox_job_view *job)
{
	struct stats_ctx *c = arg;
	(void)id;
	if (job->parked) {
		c->s->parked++;
		return 0;
	}
	c->s->depth++;
	if (job->lease_until_ms > c->now)
		c->s->leased++;
	if (c->s->oldest_ms == 0 || job->created_ms < c->s->oldest_ms)
		c->s->oldest_ms = job->created_ms;
	return 0;
}

int outbox_stats_get(store *st, int64_t now_ms, outbox_stats *out)
{
	struct stats_ctx c = { out, now_ms };
	memset(out, 0, sizeof(*out));
	return outbox_each(st, stats_one, &c);
}

struct park_ctx {
	store_txn *txn;
	const char *const *known;
	const char *reason;
	int64_t now;
	unsigned n, unparked;
};

static int park_one(void *arg, const char *id, json_t *j)
{
	struct park_ctx *c = arg;
	const char *target = json_string_value(json_object_get(j, "target"));
	const char *error = json_string_value(json_object_get(j, "last_error"));
	int known = 0;

	for (size_t i = 0; target != NULL && c->known[i] != NULL && !known; i++)
		known = strcmp(c->known[i], target) == 0;
	if (json_is_true(json_object_get(j, "parked"))) {
		/* Parked only because a process without its target saw it (a
		 * run with another config): this one has the target, so the job
		 * is due again, attempts kept. */
		if (!known || error == NULL || strncmp(error, c->reason, strlen(c->reason)) != 0)
			return 0;
		json_object_set_new(j, "parked", json_false());
		json_object_set_new(j, "next_ms", json_integer(c->now));
		log_info("outbox: job %s for target '%s' is due again: the target is configured", id,
		         target);
		c->unparked++;
		return jsonstore_put(c->txn, STORE_OUTBOX, id, j);
	}
	if (known || jint(j, "lease_until_ms") > c->now)
		return 0;
	json_object_set_new(j, "parked", json_true());
	json_object_set_new(j, "last_error", json_string(c->reason));
	json_object_set_new(j, "lease_until_ms", json_integer(0));
	json_object_set_new(j, "lease_owner", json_string(""));
	log_error("outbox: job %s for target '%s' parked: %s (configure the target and run "
	          "`sayin-publisher retry %s`)", id, target ? target : "?", c->reason, id);
	c->n++;
	return jsonstore_put(c->txn, STORE_OUTBOX, id, j);
}

int outbox_park_unknown(store *st, const char *const *known, const char *reason, int64_t now_ms,
                        unsigned *count, unsigned *unparked)
{
	struct park_ctx c = { .known = known, .reason = reason, .now = now_ms };
	int rc = store_txn_begin(st, 1, &c.txn);

	*count = *unparked = 0;
	if (rc != 0)
		return rc;
	rc = each_job(c.txn, NULL, park_one, &c);
	if (rc != 0 || c.n + c.unparked == 0) {
		store_txn_abort(c.txn);
		return rc;
	}
	rc = store_txn_commit(c.txn);
	if (rc == 0) {
		*count = c.n;
		*unparked = c.unparked;
	}
	return rc;
}

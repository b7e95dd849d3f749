/* delivery: the CDN outbox worker: lease -> driver -> complete or fail, on one loop. */
#include "deliver/delivery.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "deliver/net.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

struct target {
	const cdn_driver *driver;
	void *state;
	/* Written by the delivery's thread, read by /metrics (counter_fn):
	 * not shard counters, because the API defines its metrics after
	 * serve started the delivery, and a shard freezes the registry. */
	_Atomic uint64_t n_ok, n_failed, n_parked;
};

struct delivery_targets {
	struct target t[16];
	publish_target list[16];
	const char *names[17]; /* NULL-terminated, for outbox_lease_targets */
	size_t n;
};

struct delivery {
	uv_loop_t *loop;
	delivery_options opt;
	delivery_targets *targets;
	net *net;
	cdn_env env;
	char owner[64];
	uv_timer_t timer;
	uv_async_t async;
	int busy;            /* a round is in flight */
	unsigned pending;    /* jobs of the round not yet answered */
	int again;           /* kicked during a round */
	int stopping;
	unsigned closing;    /* handles (and net) still closing */
	void (*on_idle)(void *, const delivery_counts *);
	void *idle_arg;
	void (*on_stopped)(void *);
	void *stopped_arg;
	delivery_counts counts;
};

struct inflight {
	delivery *d;
	struct target *target;
	char id[OUTBOX_ID_LEN + 1];
	double start_ms;  /* clock_mono_ms_f() when the driver got the job */
	net_usage usage;  /* its requests' time: the rest is the driver's */
};


static void count(_Atomic uint64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

int delivery_targets_configure(const config *cfg, delivery_targets **out, char *err,
                               size_t errlen)
{
	delivery_targets *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	for (size_t i = 0; cdn_drivers[i] != NULL && t->n < 16; i++) {
		void *state = NULL;
		int rc = cdn_drivers[i]->configure(cfg, &state, err, errlen);
		if (rc == 1)
			continue;
		if (rc != 0) {
			delivery_targets_free(t);
			return rc;
		}
		t->t[t->n].driver = cdn_drivers[i];
		t->t[t->n].state = state;
		t->list[t->n].name = cdn_drivers[i]->name;
		t->list[t->n].stage = (int)cdn_drivers[i]->stage;
		t->names[t->n] = cdn_drivers[i]->name;
		t->n++;
	}
	*out = t;
	return 0;
}

void delivery_targets_free(delivery_targets *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->n; i++)
		t->t[i].driver->destroy(t->t[i].state);
	free(t);
}

const publish_target *delivery_targets_list(const delivery_targets *t, size_t *n)
{
	*n = t->n;
	return t->list;
}

int delivery_policy_configure(const config *cfg, outbox_policy *out, char *err, size_t errlen)
{
	uint64_t attempts, age;
	memset(out, 0, sizeof(*out));
	if (config_get_u64(cfg, "outbox-max-attempts", 1, 1000, &attempts, err, errlen) != 0 ||
	    config_get_u64(cfg, "outbox-max-age", 1, 365 * 86400ull, &age, err, errlen) != 0 ||
	    config_get_u64(cfg, "outbox-lease-ms", 100, 86400000, &out->lease_ms, err, errlen) != 0 ||
	    config_get_u64(cfg, "outbox-backoff-ms", 1, 3600000, &out->backoff_ms, err, errlen) != 0)
		return SAYIN_ECONFIG;
	out->max_attempts = (unsigned)attempts;
	out->max_age_ms = age * 1000;
	return 0;
}

static void round_start(delivery *d);

static void on_timer(uv_timer_t *t)
{
	round_start(t->data);
}

static void round_end(delivery *d)
{
	d->busy = 0;
	if (d->stopping)
		return;
	if (d->again) {
		d->again = 0;
		round_start(d);
	} else if (!d->opt.once) {
		uv_timer_start(&d->timer, on_timer, d->opt.poll_ms, 0);
	}
}

static void on_delivered(void *arg, const cdn_result *res)
{
	struct inflight *f = arg;
	delivery *d = f->d;
	int rc, parked = 0;
	char timing[160];

	net_usage_forget(d->net, &f->usage);
	net_usage_describe(&f->usage, f->start_ms, timing, sizeof(timing));
	if (!d->stopping) {
		if (res->ok) {
			rc = outbox_complete(d->opt.st, f->id, d->owner);
			if (rc == 0) {
				d->counts.delivered++;
				count(&f->target->n_ok);
				log_info("delivery: job %s (%s) delivered %s", f->id,
				         f->target->driver->name, timing);
			}
		} else {
			rc = outbox_fail(d->opt.st, &d->opt.policy, f->id, d->owner, res->error,
			                 res->permanent, res->retry_at_ms, clock_now_ms(), &parked);
			if (rc == 0) {
				d->counts.failed++;
				count(parked ? &f->target->n_parked : &f->target->n_failed);
				if (parked) {
					d->counts.parked++;
					log_error("delivery: job %s (%s) parked %s: %s (retry with: "
					          "sayin-publisher retry %s)", f->id, f->target->driver->name,
					          timing, res->error, f->id);
				} else {
					log_warn("delivery: job %s (%s) failed %s, will retry: %s", f->id,
					         f->target->driver->name, timing, res->error);
				}
			}
		}
		if (rc == -ESTALE) {
			d->counts.stale++;
			log_warn("delivery: job %s: our lease expired while delivering (the target is "
			         "slower than outbox-lease-ms)", f->id);
		} else if (rc != 0) {
			log_error("delivery: job %s: cannot record the outcome: %s (the lease will "
			          "expire and the job run again)", f->id, sayin_strerror(rc));
		}
	}
	free(f);
	if (--d->pending == 0) {
		/* A full batch, or jobs that waited for these: look again now. */
		d->again = 1;
		round_end(d);
	}
}

static void round_start(delivery *d)
{
	outbox_job *jobs = NULL;
	size_t n = 0;
	int rc;

	if (d->busy || d->stopping)
		return;
	uv_timer_stop(&d->timer);
	/* Only our targets: cross-posts have a worker of their own. */
	rc = outbox_lease_targets(d->opt.st, &d->opt.policy, d->owner, d->targets->names,
	                          clock_now_ms(), d->opt.batch, &jobs, &n);
	if (rc != 0) {
		log_error("delivery: cannot lease jobs: %s", sayin_strerror(rc));
		n = 0;
	}
	if (n == 0) {
		outbox_jobs_free(jobs, 0);
		if (d->opt.once && d->on_idle != NULL && !d->again) {
			void (*cb)(void *, const delivery_counts *) = d->on_idle;
			d->on_idle = NULL;
			cb(d->idle_arg, &d->counts);
			return;
		}
		d->again = 0;
		if (!d->opt.once)
			uv_timer_start(&d->timer, on_timer, d->opt.poll_ms, 0);
		return;
	}
	d->busy = 1;
	d->pending = (unsigned)n;
	for (size_t i = 0; i < n; i++) {
		struct inflight *f = calloc(1, sizeof(*f));
		struct target *t = NULL;
		for (size_t k = 0; k < d->targets->n; k++)
			if (strcmp(d->targets->t[k].driver->name, jobs[i].target) == 0)
				t = &d->targets->t[k];
		if (f == NULL) {
			d->pending--;
			continue;
		}
		f->d = d;
		f->target = t;
		snprintf(f->id, sizeof(f->id), "%s", jobs[i].id);
		if (t == NULL) {
			/* Enqueued while a target was configured that is not any
			 * more: park it, visibly, rather than drop it. */
			int parked;
			outbox_fail(d->opt.st, &d->opt.policy, f->id, d->owner,
			            "target not configured in this process", 1, 0, clock_now_ms(), &parked);
			log_error("delivery: job %s names target '%s', which is not configured: parked",
			          f->id, jobs[i].target);
			free(f);
			d->pending--;
			continue;
		}
		f->start_ms = clock_mono_ms_f();
		{
			net_usage *before = net_account(d->net, &f->usage);
			rc = t->driver->deliver(t->state, &d->env, jobs[i].id, jobs[i].payload,
			                        on_delivered, f);
			/* f may be gone (a driver that answers at once): only restore. */
			net_account(d->net, before);
		}
		if (rc != 0) {
			cdn_result r = { 0 };
			snprintf(r.error, sizeof(r.error), "cannot start: %s", sayin_strerror(rc));
			d->pending++; /* on_delivered decrements */
			on_delivered(f, &r);
			d->pending--;
		}
	}
	outbox_jobs_free(jobs, n);
	if (d->pending == 0) {
		d->again = 1;
		round_end(d);
	}
}

static void on_async(uv_async_t *a)
{
	delivery *d = a->data;
	if (d->busy)
		d->again = 1;
	else
		round_start(d);
}

static double gauge_depth(void *arg)
{
	outbox_stats s;
	return outbox_stats_get(arg, clock_now_ms(), &s) == 0 ? (double)s.depth : -1;
}

static double gauge_parked(void *arg)
{
	outbox_stats s;
	return outbox_stats_get(arg, clock_now_ms(), &s) == 0 ? (double)s.parked : -1;
}

static double gauge_oldest(void *arg)
{
	outbox_stats s;
	if (outbox_stats_get(arg, clock_now_ms(), &s) != 0 || s.oldest_ms == 0)
		return 0;
	return (double)(clock_now_ms() - s.oldest_ms) / 1e3;
}

int delivery_outbox_metrics_define(metrics *m, store *st)
{
	if (metrics_gauge_fn(m, "sayin_outbox_depth", "Jobs waiting or in flight (not parked).",
	                     NULL, gauge_depth, st) < 0 ||
	    metrics_gauge_fn(m, "sayin_outbox_parked", "Jobs parked after failing: need action.",
	                     NULL, gauge_parked, st) < 0 ||
	    metrics_gauge_fn(m, "sayin_outbox_oldest_seconds", "Age of the oldest unparked job.",
	                     NULL, gauge_oldest, st) < 0)
		return -ENOMEM;
	return 0;
}

static double read_count(void *arg)
{
	return (double)atomic_load_explicit((_Atomic uint64_t *)arg, memory_order_relaxed);
}

static int define_metrics(delivery *d, metrics *m)
{
	static const char *const results[] = { "ok", "failed", "parked" };
	char labels[64];
	for (size_t i = 0; i < d->targets->n; i++) {
		struct target *t = &d->targets->t[i];
		_Atomic uint64_t *counters[] = { &t->n_ok, &t->n_failed, &t->n_parked };
		for (size_t r = 0; r < 3; r++) {
			snprintf(labels, sizeof(labels), "target=\"%s\",result=\"%s\"", t->driver->name,
			         results[r]);
			if (metrics_counter_fn(m, "sayin_outbox_jobs_total", "Delivery attempts by outcome.",
			                       labels, read_count, counters[r]) < 0)
				return -ENOMEM;
		}
	}
	return delivery_outbox_metrics_define(m, d->opt.st);
}

/* Jobs for a CDN target this configuration does not have (it was removed,
 * or this process runs with another config) are parked, named in the log
 * and counted as failed, rather than left due forever. The social
 * networks' jobs belong to the cross-post worker. */
static void park_unconfigured(delivery *d)
{
	static const char *const networks[] = PUBLISH_NETWORKS;
	const char *known[sizeof(d->targets->names) / sizeof(d->targets->names[0]) + 2];
	size_t n = 0;
	unsigned parked = 0, unparked = 0;
	int rc;

	for (size_t i = 0; d->targets->names[i] != NULL; i++)
		known[n++] = d->targets->names[i];
	for (size_t i = 0; i < sizeof(networks) / sizeof(networks[0]); i++)
		known[n++] = networks[i];
	known[n] = NULL;
	rc = outbox_park_unknown(d->opt.st, known, "target not configured", clock_now_ms(), &parked,
	                         &unparked);
	if (rc != 0)
		log_error("delivery: cannot look for jobs of unconfigured targets: %s",
		          sayin_strerror(rc));
	d->counts.parked += parked;
	d->counts.failed += parked;
}

int delivery_start(uv_loop_t *loop, const delivery_options *opt, delivery_targets *targets,
                   void (*on_idle)(void *arg, const delivery_counts *c), void *arg,
                   delivery **out)
{
	delivery *d = calloc(1, sizeof(*d));
	unsigned char rnd[8];
	int rc;

	if (d == NULL)
		return -ENOMEM;
	d->loop = loop;
	d->opt = *opt;
	if (d->opt.poll_ms == 0)
		d->opt.poll_ms = 500;
	if (d->opt.batch == 0)
		d->opt.batch = 64;
	d->targets = targets;
	d->on_idle = on_idle;
	d->idle_arg = arg;
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		memset(rnd, 0, sizeof(rnd));
	snprintf(d->owner, sizeof(d->owner), "%d-%02x%02x%02x%02x%02x%02x%02x%02x", (int)getpid(),
	         rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	rc = net_create(loop, 16, &d->net);
	if (rc == 0 && opt->metrics != NULL)
		rc = define_metrics(d, opt->metrics);
	if (rc != 0) {
		if (d->net != NULL)
			net_close(d->net, NULL, NULL);
		free(d);
		return rc;
	}
	d->env = (cdn_env){ .loop = loop, .net = d->net, .st = opt->st, .base_url = opt->base_url };
	uv_timer_init(loop, &d->timer);
	d->timer.data = d;
	uv_async_init(loop, &d->async, on_async);
	d->async.data = d;
	park_unconfigured(d);
	uv_timer_start(&d->timer, on_timer, 0, 0);
	*out = d;
	return 0;
}

/* Asks for a lease round now. Any thread. */
static void delivery_kick(delivery *d)
{
	uv_async_send(&d->async);
}

static void on_part_closed(void *arg)
{
	delivery *d = arg;
	if (--d->closing == 0) {
		void (*cb)(void *) = d->on_stopped;
		void *a = d->stopped_arg;
		free(d);
		if (cb != NULL)
			cb(a);
	}
}

static void on_handle_closed(uv_handle_t *h)
{
	on_part_closed(h->data);
}

void delivery_stop(delivery *d, void (*on_stopped)(void *arg), void *arg)
{
	d->stopping = 1;
	d->on_stopped = on_stopped;
	d->stopped_arg = arg;
	d->closing = 3;
	uv_timer_stop(&d->timer);
	uv_close((uv_handle_t *)&d->timer, on_handle_closed);
	uv_close((uv_handle_t *)&d->async, on_handle_closed);
	net_close(d->net, on_part_closed, d);
}

/* ---- on a thread of its own ---- */

struct delivery_thread {
	pthread_t thread;
	uv_loop_t loop;
	uv_async_t stop;
	delivery *d;
};

static void on_thread_stop(uv_async_t *a)
{
	struct delivery_thread *t = a->data;
	uv_close((uv_handle_t *)&t->stop, NULL);
	delivery_stop(t->d, NULL, NULL);
}

static void *thread_main(void *arg)
{
	struct delivery_thread *t = arg;
	uv_run(&t->loop, UV_RUN_DEFAULT);
	return NULL;
}

int delivery_thread_start(const delivery_options *opt, delivery_targets *targets,
                          delivery_thread **out)
{
	struct delivery_thread *t = calloc(1, sizeof(*t));
	int rc;

	if (t == NULL)
		return -ENOMEM;
	rc = uv_loop_init(&t->loop);
	if (rc != 0) {
		free(t);
		return rc;
	}
	rc = delivery_start(&t->loop, opt, targets, NULL, NULL, &t->d);
	if (rc == 0) {
		uv_async_init(&t->loop, &t->stop, on_thread_stop);
		t->stop.data = t;
		rc = pthread_create(&t->thread, NULL, thread_main, t);
		rc = rc == 0 ? 0 : -rc;
	}
	if (rc != 0) {
		log_error("delivery: cannot start its thread: %s", sayin_strerror(rc));
		free(t); /* the loop leaks here; start-up fails and the process exits */
		return rc;
	}
	*out = t;
	return 0;
}

void delivery_thread_kick(delivery_thread *t)
{
	delivery_kick(t->d);
}

void delivery_thread_stop(delivery_thread *t)
{
	if (t == NULL)
		return;
	uv_async_send(&t->stop);
	pthread_join(t->thread, NULL);
	uv_loop_close(&t->loop);
	free(t);
}

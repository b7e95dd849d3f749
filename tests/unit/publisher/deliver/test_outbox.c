/* test_outbox: enqueue, lease exclusivity, dependencies, backoff, parking,
 * retry, lease expiry; and the publish transaction enqueueing its jobs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "deliver/outbox.h"
#include "publish.h"
#include "core/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fixture {
	char dir[64];
	store *st;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/sayin-outbox-XXXXXX");
	if (mkdtemp(f->dir) == NULL || store_open(f->dir, NULL, &f->st) != 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];
	store_close(f->st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

static void enqueue(store *st, const char *target, const char *const *after, size_t n_after,
                    int64_t now, char id[OUTBOX_ID_LEN + 1])
{
	store_txn *txn;
	json_t *payload = json_pack("{s:s}", "event", "publish");
	assert_int_equal(store_txn_begin(st, 1, &txn), 0);
	assert_int_equal(outbox_enqueue(txn, target, payload, after, n_after, now, id), 0);
	assert_int_equal(store_txn_commit(txn), 0);
	json_decref(payload);
}

static const outbox_policy pol = { .lease_ms = 1000, .backoff_ms = 100, .backoff_max_ms = 1000,
	                           .max_attempts = 3, .max_age_ms = 60000 };

static void test_lease_is_exclusive_and_ordered(void **state)
{
	struct fixture *f = *state;
	char a[OUTBOX_ID_LEN + 1], b[OUTBOX_ID_LEN + 1];
	outbox_job *jobs;
	size_t n;

	enqueue(f->st, "varnish", NULL, 0, 1000, a);
	enqueue(f->st, "fastly", NULL, 0, 1000, b);
	assert_true(strcmp(a, b) < 0);
	assert_int_equal(outbox_lease(f->st, &pol, "w1", 1000, 1, &jobs, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(jobs[0].id, a);
	assert_string_equal(jobs[0].target, "varnish");
	assert_string_equal(json_string_value(json_object_get(jobs[0].payload, "event")), "publish");
	outbox_jobs_free(jobs, n);
	/* Another worker gets only what is left. */
	assert_int_equal(outbox_lease(f->st, &pol, "w2", 1000, 10, &jobs, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(jobs[0].id, b);
	outbox_jobs_free(jobs, n);
	assert_int_equal(outbox_lease(f->st, &pol, "w3", 1500, 10, &jobs, &n), 0);
	assert_int_equal(n, 0);
	outbox_jobs_free(jobs, n);
	/* Only the holder completes; the lease expires and w3 takes over. */
	assert_int_equal(outbox_complete(f->st, a, "w2"), -ESTALE);
	assert_int_equal(outbox_lease(f->st, &pol, "w3", 2001, 10, &jobs, &n), 0);
	assert_int_equal(n, 2);
	outbox_jobs_free(jobs, n);
	assert_int_equal(outbox_complete(f->st, a, "w1"), -ESTALE); /* its lease is gone */
	assert_int_equal(outbox_complete(f->st, a, "w3"), 0);
	assert_int_equal(outbox_complete(f->st, a, "w3"), -ESTALE);
}

static void test_dependencies_wait(void **state)
{
	struct fixture *f = *state;
	char purge[OUTBOX_ID_LEN + 1], warm[OUTBOX_ID_LEN + 1];
	const char *after[] = { purge };
	outbox_job *jobs;
	size_t n;

	enqueue(f->st, "varnish", NULL, 0, 1000, purge);
	enqueue(f->st, "prewarm", after, 1, 1000, warm);
	assert_int_equal(outbox_lease(f->st, &pol, "w", 1000, 10, &jobs, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(jobs[0].id, purge);
	outbox_jobs_free(jobs, n);
	assert_int_equal(outbox_complete(f->st, purge, "w"), 0);
	assert_int_equal(outbox_lease(f->st, &pol, "w", 1000, 10, &jobs, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(jobs[0].id, warm);
	outbox_jobs_free(jobs, n);
}

static void test_backoff_park_retry(void **state)
{
	struct fixture *f = *state;
	char id[OUTBOX_ID_LEN + 1];
	outbox_job *jobs;
	outbox_stats s;
	size_t n;
	int parked;
	unsigned count;

	enqueue(f->st, "varnish", NULL, 0, 1000, id);
	assert_int_equal(outbox_lease(f->st, &pol, "w", 1000, 10, &jobs, &n), 0);
	outbox_jobs_free(jobs, n);
	assert_int_equal(outbox_fail(f->st, &pol, id, "w", "HTTP 503", 0, 0, 1000, &parked), 0);
	assert_false(parked);
	/* Not due before the backoff (50..100 ms with jitter), due after. */
	assert_int_equal(outbox_lease(f->st, &pol, "w", 1049, 10, &jobs, &n), 0);
	assert_int_equal(n, 0);
	outbox_jobs_free(jobs, n);
	assert_int_equal(outbox_lease(f->st, &pol, "w", 1100, 10, &jobs, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(jobs[0].attempts, 1);
	outbox_jobs_free(jobs, n);
	/* A target's Retry-After wins over a shorter backoff. */
	assert_int_equal(outbox_fail(f->st, &pol, id, "w", "HTTP 429", 0, 9000, 1100, &parked), 0);
	assert_int_equal(outbox_lease(f->st, &pol, "w", 8999, 10, &jobs, &n), 0);
	assert_int_equal(n, 0);
	outbox_jobs_free(jobs, n);
	assert_int_equal(outbox_lease(f->st, &pol, "w", 9000, 10, &jobs, &n), 0);
	assert_int_equal(n, 1);
	outbox_jobs_free(jobs, n);
	/* The third failure parks it (max_attempts 3). */
	assert_int_equal(outbox_fail(f->st, &pol, id, "w", "HTTP 503", 0, 0, 9000, &parked), 0);
	assert_true(parked);
	assert_int_equal(outbox_stats_get(f->st, 9000, &s), 0);
	assert_int_equal(s.parked, 1);
	assert_int_equal(s.depth, 0);
	assert_int_equal(outbox_lease(f->st, &pol, "w", 1000000, 10, &jobs, &n), 0);
	assert_int_equal(n, 0);
	outbox_jobs_free(jobs, n);
	assert_int_equal(outbox_retry(f->st, "nope", 9000, &count), SAYIN_ENOTFOUND);
	assert_int_equal(outbox_retry(f->st, NULL, 9000, &count), 0);
	assert_int_equal(count, 1);
	assert_int_equal(outbox_lease(f->st, &pol, "w", 9000, 10, &jobs, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(jobs[0].attempts, 0);
	outbox_jobs_free(jobs, n);
	/* A permanent failure parks at once. */
	assert_int_equal(outbox_fail(f->st, &pol, id, "w", "401", 1, 0, 9000, &parked), 0);
	assert_true(parked);
}

static void test_publish_enqueues_in_its_transaction(void **state)
{
	struct fixture *f = *state;
	static const publish_target targets[] = { { "prewarm", 2 }, { "varnish", 1 }, { "s3", 0 },
		                                  { "fastly", 1 } };
	publish_settings set = { .base_url = "https://cdn.example", .feed_items = 2, .page_items = 2,
		                 .create_authors = 1, .targets = targets, .n_targets = 4 };
	publish_input in = { .author = "ann", .audio = "AUDIO", .audio_len = 5, .duration = 1,
		             .now_ms = 5000 };
	publish_result res;
	publish_deleted del;
	outbox_job *jobs;
	size_t n;
	char err[256];

	assert_int_equal(publish_post(f->st, &set, &in, &res, err, sizeof(err)), 0);
	/* Stage by stage: s3 alone, then both purges, then prewarm. */
	assert_int_equal(outbox_lease(f->st, &pol, "w", 5000, 10, &jobs, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(jobs[0].target, "s3");
	const json_t *p = jobs[0].payload;
	assert_string_equal(json_string_value(json_object_get(p, "post")), res.id);
	/* New objects: the audio and its share card; names: feed, author
	 * page, authors.json, post and embed pages. */
	assert_int_equal(json_array_size(json_object_get(p, "objects")), 2);
	assert_int_equal(json_array_size(json_object_get(p, "paths")), 5);
	int has_feed_key = 0;
	const json_t *k;
	size_t i;
	json_array_foreach(json_object_get(p, "keys"), i, k) {
		assert_true(strncmp(json_string_value(k), "author-", 7) != 0);
		has_feed_key |= strcmp(json_string_value(k), "feed-ann") == 0;
	}
	assert_true(has_feed_key);
	assert_int_equal(outbox_complete(f->st, jobs[0].id, "w"), 0);
	outbox_jobs_free(jobs, n);
	assert_int_equal(outbox_lease(f->st, &pol, "w", 5000, 10, &jobs, &n), 0);
	assert_int_equal(n, 2);
	assert_true(strcmp(jobs[0].target, "prewarm") != 0 && strcmp(jobs[1].target, "prewarm") != 0);
	assert_int_equal(outbox_complete(f->st, jobs[0].id, "w"), 0);
	assert_int_equal(outbox_complete(f->st, jobs[1].id, "w"), 0);
	outbox_jobs_free(jobs, n);
	assert_int_equal(outbox_lease(f->st, &pol, "w", 5000, 10, &jobs, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(jobs[0].target, "prewarm");
	assert_int_equal(outbox_complete(f->st, jobs[0].id, "w"), 0);
	outbox_jobs_free(jobs, n);

	/* A deletion names the removed page and objects. */
	assert_int_equal(publish_delete(f->st, &set, res.id, NULL, 6000, &del, err, sizeof(err)), 0);
	assert_int_equal(outbox_lease(f->st, &pol, "w", 6000, 10, &jobs, &n), 0);
	assert_int_equal(n, 1);
	p = jobs[0].payload;
	assert_string_equal(json_string_value(json_object_get(p, "event")), "delete");
	char audio[128];
	snprintf(audio, sizeof(audio), "/a/%s.opus", res.audio_hex);
	int found = 0;
	const json_t *r;
	json_array_foreach(json_object_get(p, "removed"), i, r)
		found |= strcmp(json_string_value(r), audio) == 0;
	assert_true(found);
	outbox_jobs_free(jobs, n);

	/* A failed publish enqueues nothing. */
	in.author = "Bad-Handle";
	assert_int_equal(publish_post(f->st, &set, &in, &res, err, sizeof(err)), SAYIN_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_lease_is_exclusive_and_ordered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dependencies_wait, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backoff_park_retry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_publish_enqueues_in_its_transaction, setup,
		                                teardown),
	};
	return cmocka_run_group_tests_name("outbox", tests, NULL, NULL);
}

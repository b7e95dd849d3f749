/* test_metrics: the registry, shards and the text exposition format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

static double fixed_gauge(void *arg)
{
	return *(const double *)arg;
}

static char *render(metrics *m)
{
	char *text = NULL;
	size_t len = 0;

	assert_int_equal(metrics_render(m, &text, &len), 0);
	assert_non_null(text);
	assert_int_equal(strlen(text), len);
	return text;
}

/* The whole text for a small registry, byte for byte: families grouped in
 * definition order, HELP escaped, labels merged with le, cumulative buckets. */
static void test_exposition_text(void **state)
{
	static const double bounds[] = { 0.005, 0.1, 1 };
	double queue = 7, temp = -2.5, served = 12;
	metrics *m;
	metrics_shard *s;
	metrics_id get, head, lat, other, plain;
	char *text;

	(void)state;
	assert_int_equal(metrics_create(&m), 0);
	get = metrics_counter(m, "req_total", "Requests\\answered\nby method.", "method=\"GET\"");
	lat = metrics_histogram(m, "lat_seconds", "Latency.", "route=\"object\"", bounds, 3);
	assert_true(metrics_gauge_fn(m, "queue_depth", "Jobs queued.", NULL, fixed_gauge, &queue) >= 0);
	/* Same name later: joins the first family, no second HELP/TYPE. */
	head = metrics_counter(m, "req_total", "ignored", "method=\"HEAD\"");
	other = metrics_histogram(m, "lat_seconds", NULL, NULL, bounds, 3);
	assert_true(metrics_gauge_fn(m, "temp", "", "where=\"a \\\"b\\\"\"", fixed_gauge, &temp) >= 0);
	assert_true(metrics_counter_fn(m, "served_total", "Served elsewhere.", NULL, fixed_gauge,
	                               &served) >= 0);
	plain = metrics_counter(m, "plain_total", NULL, NULL);
	assert_true(get >= 0 && head >= 0 && lat >= 0 && other >= 0 && plain >= 0);

	s = metrics_shard_new(m);
	assert_non_null(s);
	metrics_add(s, get, 3);
	metrics_add(s, get, 2);
	metrics_add(s, head, 1);
	metrics_observe(s, lat, 0.005); /* on a bound: that bucket (le is <=) */
	metrics_observe(s, lat, 0.05);
	metrics_observe(s, lat, 0.5);
	metrics_observe(s, lat, 3);
	metrics_observe(s, lat, NAN); /* dropped */
	metrics_observe(s, other, 0.001);
	metrics_add(s, lat, 100);       /* not a counter: ignored */
	metrics_observe(s, get, 1);     /* not a histogram: ignored */
	metrics_add(s, 12345, 1);       /* unknown ids: ignored */
	metrics_add(s, -1, 1);

	text = render(m);
	assert_string_equal(text,
	                    "# HELP req_total Requests\\\\answered\\nby method.\n"
	                    "# TYPE req_total counter\n"
	                    "req_total{method=\"GET\"} 5\n"
	                    "req_total{method=\"HEAD\"} 1\n"
	                    "# HELP lat_seconds Latency.\n"
	                    "# TYPE lat_seconds histogram\n"
	                    "lat_seconds_bucket{route=\"object\",le=\"0.005\"} 1\n"
	                    "lat_seconds_bucket{route=\"object\",le=\"0.1\"} 2\n"
	                    "lat_seconds_bucket{route=\"object\",le=\"1\"} 3\n"
	                    "lat_seconds_bucket{route=\"object\",le=\"+Inf\"} 4\n"
	                    "lat_seconds_sum{route=\"object\"} 3.555\n"
	                    "lat_seconds_count{route=\"object\"} 4\n"
	                    "lat_seconds_bucket{le=\"0.005\"} 1\n"
	                    "lat_seconds_bucket{le=\"0.1\"} 1\n"
	                    "lat_seconds_bucket{le=\"1\"} 1\n"
	                    "lat_seconds_bucket{le=\"+Inf\"} 1\n"
	                    "lat_seconds_sum 0.001\n"
	                    "lat_seconds_count 1\n"
	                    "# HELP queue_depth Jobs queued.\n"
	                    "# TYPE queue_depth gauge\n"
	                    "queue_depth 7\n"
	                    "# TYPE temp gauge\n"
	                    "temp{where=\"a \\\"b\\\"\"} -2.5\n"
	                    "# HELP served_total Served elsewhere.\n"
	                    "# TYPE served_total counter\n"
	                    "served_total 12\n"
	                    "# TYPE plain_total counter\n"
	                    "plain_total 0\n");
	free(text);

	/* Callbacks run at every render. */
	queue = NAN;
	temp = INFINITY;
	served = 1e20;
	text = render(m);
	assert_non_null(strstr(text, "\nqueue_depth NaN\n"));
	assert_non_null(strstr(text, "} +Inf\n"));
	assert_non_null(strstr(text, "\nserved_total 1e+20\n"));
	free(text);
	metrics_destroy(m);
}

static void test_empty_registry(void **state)
{
	metrics *m;
	char *text;

	(void)state;
	assert_int_equal(metrics_create(&m), 0);
	text = render(m);
	assert_string_equal(text, "");
	free(text);
	metrics_destroy(m);
	metrics_destroy(NULL);
}

enum { WRITES = 1000000 };

struct writer {
	metrics_shard *shard;
	metrics_id counter, hist;
	atomic_int *go;
};

static void writer_thread(void *arg)
{
	struct writer *w = arg;

	while (!atomic_load(w->go))
		;
	for (int i = 0; i < WRITES; i++) {
		metrics_add(w->shard, w->counter, 1);
		if (i % 10 == 0)
			metrics_observe(w->shard, w->hist, (i / 10) % 2 ? 0.25 : 2.0);
	}
}

static uint64_t sample(const char *text, const char *line_prefix)
{
	const char *p = strstr(text, line_prefix);

	assert_non_null(p);
	return strtoull(p + strlen(line_prefix), NULL, 10);
}

/* Two shards written at once by two threads, a third thread rendering all
 * the while: after the join, the totals are exact. */
static void test_shards_sum_exactly(void **state)
{
	static const double bounds[] = { 0.5, 1 };
	struct writer w[2];
	uv_thread_t t[2];
	atomic_int go;
	metrics *m;
	metrics_id counter, hist;
	char *text;
	int renders = 0;

	(void)state;
	atomic_init(&go, 0);
	assert_int_equal(metrics_create(&m), 0);
	counter = metrics_counter(m, "hits_total", "Hits.", NULL);
	hist = metrics_histogram(m, "size", "Sizes.", NULL, bounds, 2);
	assert_true(counter >= 0 && hist >= 0);
	for (int i = 0; i < 2; i++) {
		w[i].shard = metrics_shard_new(m);
		assert_non_null(w[i].shard);
		w[i].counter = counter;
		w[i].hist = hist;
		w[i].go = &go;
		assert_int_equal(uv_thread_create(&t[i], writer_thread, &w[i]), 0);
	}
	atomic_store(&go, 1);
	/* A scrape racing the writers sees consistent, never torn, values. */
	for (int i = 0; i < 50; i++) {
		uint64_t hits;
		text = render(m);
		hits = sample(text, "\nhits_total ");
		assert_true(hits <= 2u * WRITES);
		assert_int_equal(sample(text, "size_bucket{le=\"+Inf\"} "), sample(text, "size_count "));
		free(text);
		renders++;
	}
	for (int i = 0; i < 2; i++)
		assert_int_equal(uv_thread_join(&t[i]), 0);
	text = render(m);
	assert_int_equal(sample(text, "\nhits_total "), 2u * WRITES);
	assert_int_equal(sample(text, "size_bucket{le=\"0.5\"} "), 2u * WRITES / 20);
	assert_int_equal(sample(text, "size_bucket{le=\"1\"} "), 2u * WRITES / 20);
	assert_int_equal(sample(text, "size_bucket{le=\"+Inf\"} "), 2u * WRITES / 10);
	assert_int_equal(sample(text, "size_count "), 2u * WRITES / 10);
	/* 100000 x 0.25 + 100000 x 2: exact in binary floating point. */
	assert_non_null(strstr(text, "\nsize_sum 225000\n"));
	free(text);
	assert_int_equal(renders, 50);
	metrics_destroy(m);
}

/* Once a shard exists the registry is frozen: every definer refuses. */
static void test_definitions_after_shard(void **state)
{
	static const double bounds[] = { 1 };
	double v = 0;
	metrics *m;

	(void)state;
	assert_int_equal(metrics_create(&m), 0);
	assert_true(metrics_counter(m, "a_total", "A.", NULL) >= 0);
	assert_non_null(metrics_shard_new(m));
	assert_int_equal(metrics_counter(m, "b_total", "B.", NULL), -EINVAL);
	assert_int_equal(metrics_histogram(m, "c", "C.", NULL, bounds, 1), -EINVAL);
	assert_int_equal(metrics_gauge_fn(m, "d", "D.", NULL, fixed_gauge, &v), -EINVAL);
	assert_int_equal(metrics_counter_fn(m, "e_total", "E.", NULL, fixed_gauge, &v), -EINVAL);
	/* A second shard is still fine. */
	assert_non_null(metrics_shard_new(m));
	metrics_destroy(m);
}

static void test_bad_definitions(void **state)
{
	static const double bounds[] = { 1, 2 };
	static const double unsorted[] = { 2, 1 };
	static const double dup[] = { 1, 1 };
	double v = 0;
	metrics *m;
	metrics_id id;

	(void)state;
	assert_int_equal(metrics_create(&m), 0);
	id = metrics_counter(m, "x_total", "X.", "a=\"1\"");
	assert_int_equal(id, 0);
	/* Type clash with an existing family, in every direction. */
	assert_int_equal(metrics_histogram(m, "x_total", "X.", "a=\"2\"", bounds, 2), -EINVAL);
	assert_int_equal(metrics_gauge_fn(m, "x_total", "X.", "a=\"2\"", fixed_gauge, &v), -EINVAL);
	assert_true(metrics_gauge_fn(m, "g", "G.", NULL, fixed_gauge, &v) >= 0);
	assert_int_equal(metrics_counter(m, "g", "G.", "a=\"1\""), -EINVAL);
	assert_int_equal(metrics_counter_fn(m, "g", "G.", "a=\"1\"", fixed_gauge, &v), -EINVAL);
	/* A counter kept elsewhere is a counter: it may join a counter family. */
	assert_true(metrics_counter_fn(m, "x_total", "X.", "a=\"3\"", fixed_gauge, &v) >= 0);
	/* The same series twice. */
	assert_int_equal(metrics_counter(m, "x_total", "X.", "a=\"1\""), -EINVAL);
	/* Names. */
	assert_int_equal(metrics_counter(m, NULL, "X.", NULL), -EINVAL);
	assert_int_equal(metrics_counter(m, "", "X.", NULL), -EINVAL);
	assert_int_equal(metrics_counter(m, "9lives", "X.", NULL), -EINVAL);
	assert_int_equal(metrics_counter(m, "has-dash", "X.", NULL), -EINVAL);
	assert_int_equal(metrics_counter(m, "has space", "X.", NULL), -EINVAL);
	assert_true(metrics_counter(m, "ns:sub_total", "X.", NULL) >= 0);
	/* Labels. */
	assert_int_equal(metrics_counter(m, "l_total", "", "a=1"), -EINVAL);
	assert_int_equal(metrics_counter(m, "l_total", "", "a=\"1\","), -EINVAL);
	assert_int_equal(metrics_counter(m, "l_total", "", "{a=\"1\"}"), -EINVAL);
	assert_int_equal(metrics_counter(m, "l_total", "", "a=\"unterminated"), -EINVAL);
	assert_int_equal(metrics_counter(m, "l_total", "", "a=\"bad\\escape\""), -EINVAL);
	assert_int_equal(metrics_counter(m, "l_total", "", "1a=\"x\""), -EINVAL);
	assert_true(metrics_counter(m, "l_total", "", "a=\"1\",b=\"q\\\"\\n\\\\\"") >= 0);
	/* Histograms: le is theirs, bounds must ascend and be finite. */
	assert_int_equal(metrics_histogram(m, "h", "", "le=\"1\"", bounds, 2), -EINVAL);
	assert_int_equal(metrics_histogram(m, "h", "", NULL, unsorted, 2), -EINVAL);
	assert_int_equal(metrics_histogram(m, "h", "", NULL, dup, 2), -EINVAL);
	assert_int_equal(metrics_histogram(m, "h", "", NULL, NULL, 2), -EINVAL);
	assert_true(metrics_histogram(m, "h", "", "let=\"1\"", bounds, 2) >= 0);
	assert_true(metrics_histogram(m, "h0", "", NULL, NULL, 0) >= 0); /* +Inf only */
	assert_int_equal(metrics_gauge_fn(m, "nofn", "", NULL, NULL, NULL), -EINVAL);
	metrics_destroy(m);
}

/* The value of an unlabelled series in a rendered page. */
static double process_sample(metrics *m, const char *name)
{
	char *text, key[128];
	size_t len;
	double v;
	const char *p;

	assert_int_equal(metrics_render(m, &text, &len), 0);
	snprintf(key, sizeof(key), "\n%s ", name);
	p = strstr(text, key);
	assert_non_null(p);
	v = strtod(p + strlen(key), NULL);
	free(text);
	return v;
}

/* The process series read the kernel at scrape time: each moves with what
 * it measures. */
static void test_process_series_move(void **state)
{
	metrics *m;
	struct rlimit old, low;
	int fds[10];
	double open0, cpu0, rss0;
	volatile double x = 0;
	char *big;

	(void)state;
	assert_int_equal(metrics_create(&m), 0);
	assert_int_equal(metrics_process_define(m), 0);

	open0 = process_sample(m, "process_open_fds");
	for (int i = 0; i < 10; i++)
		assert_true((fds[i] = dup(0)) >= 0);
	assert_true(process_sample(m, "process_open_fds") == open0 + 10);
	for (int i = 0; i < 10; i++)
		close(fds[i]);
	assert_true(process_sample(m, "process_open_fds") == open0);

	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = 321;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	assert_true(process_sample(m, "process_max_fds") == 321);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);

	cpu0 = process_sample(m, "process_cpu_seconds_total");
	for (long i = 0; i < 50000000; i++)
		x += (double)i;
	assert_true(process_sample(m, "process_cpu_seconds_total") > cpu0);

	rss0 = process_sample(m, "process_resident_memory_bytes");
	big = malloc(64 << 20);
	assert_non_null(big);
	memset(big, 1, 64 << 20);
	assert_true(process_sample(m, "process_resident_memory_bytes") >= rss0 + (60 << 20));
	free(big);

	assert_true(fabs(process_sample(m, "process_start_time_seconds") - (double)time(NULL)) < 60);
	metrics_destroy(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exposition_text),
		cmocka_unit_test(test_empty_registry),
		cmocka_unit_test(test_shards_sum_exactly),
		cmocka_unit_test(test_definitions_after_shard),
		cmocka_unit_test(test_bad_definitions),
		cmocka_unit_test(test_process_series_move),
	};

	return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}

/* bench_publish: publish latency (the publish transaction: objects, feed
 * head, one archive page, author, post and embed pages, commit) for an
 * author with few posts and one with many, in the same store, interleaved,
 * with the audio already encoded so only the feed work varies.
 *
 *   bench_publish STORE_DIR RECORDING PUBLISHER_BIN SMALL BIG RUNS
 *
 * Prints one line per run and a summary, both as JSON, on stdout.
 * scripts/bench/publish drives it and writes scripts/bench/README.md. */
#include "core/error.h"
#include "core/log.h"
#include "media/media.h"
#include "publish.h"
#include "core/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return v[(size_t)(p * (double)(n - 1) + 0.5)];
}

static double mean(const double *v, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += v[i];
	return s / (double)n;
}

enum { T_TOTAL, T_OBJECTS, T_FEED, T_PAGES, T_COMMIT, T_COUNT };
static const char *const names[T_COUNT] = { "total", "objects", "feed", "pages", "commit" };

int main(int argc, char **argv)
{
	media_transcode_options mopt = { 0 };
	media_result media = { 0 };
	publish_settings set = { .base_url = "https://cdn.example.com", .feed_items = 20,
	                         .page_items = 20, .create_authors = 1 };
	store *st;
	store_options sopt = { 0 };
	char err[512], handle[40];
	size_t small, big, runs;
	double *t[2][T_COUNT];
	int rc;

	if (argc != 7) {
		fprintf(stderr, "usage: %s STORE_DIR RECORDING PUBLISHER_BIN SMALL BIG RUNS\n", argv[0]);
		return 2;
	}
	small = strtoul(argv[4], NULL, 10);
	big = strtoul(argv[5], NULL, 10);
	runs = strtoul(argv[6], NULL, 10);
	log_set_level(LOG_WARN);
	mopt.decoder_exe = argv[3];
	mopt.opus.complexity = -1;
	if (media_transcode_file(argv[2], &mopt, &media, err, sizeof(err)) != 0) {
		fprintf(stderr, "bench_publish: %s\n", err);
		return 1;
	}
	if (store_open(argv[1], &sopt, &st) != 0) {
		fprintf(stderr, "bench_publish: cannot open store %s\n", argv[1]);
		return 1;
	}
	publish_input in = { .text = "A voice post for the benchmark, about as long as a real one.",
		             .audio = media.opus.data, .audio_len = media.opus.len,
		             .duration = media.duration, .input_format = media.input_format,
		             .input_rate = media.input_rate, .input_channels = media.input_channels,
		             .has_loudness = 1, .input_lufs = media.input_lufs,
		             .gain_db = media.gain_db, .true_peak_dbtp = media.true_peak_dbtp,
		             .output_lufs = media.output_lufs, .waveform = media.waveform.data,
		             .waveform_len = media.waveform.len,
		             .waveform_points = media.waveform_length, .fallback = media.m4a.data,
		             .fallback_len = media.m4a.len };

	/* RUNS authors with SMALL posts each (every timed publish lands on an
	 * author with exactly SMALL posts), and one with BIG. */
	double t0 = mono_ms();
	for (size_t r = 0; r < runs; r++) {
		snprintf(handle, sizeof(handle), "small%zu", r);
		in.author = handle;
		in.now_ms = now_ms() - 86400000;
		rc = publish_import(st, &set, &in, small, err, sizeof(err));
		if (rc == 0)
			rc = publish_rebuild(st, &set, handle, now_ms(), err, sizeof(err));
		if (rc != 0) {
			fprintf(stderr, "bench_publish: %s\n", err);
			return 1;
		}
	}
	double t1 = mono_ms();
	in.author = "big";
	in.now_ms = now_ms() - 86400000;
	rc = publish_import(st, &set, &in, big, err, sizeof(err));
	double t2 = mono_ms();
	if (rc == 0)
		rc = publish_rebuild(st, &set, "big", now_ms(), err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "bench_publish: %s\n", err);
		return 1;
	}
	double t3 = mono_ms();
	printf("{\"seed\": {\"small_s\": %.2f, \"big_import_s\": %.2f, \"big_rebuild_s\": %.2f}}\n",
	       (t1 - t0) / 1e3, (t2 - t1) / 1e3, (t3 - t2) / 1e3);

	for (int k = 0; k < 2; k++)
		for (int i = 0; i < T_COUNT; i++)
			t[k][i] = calloc(runs, sizeof(double));
	/* Interleaved: whatever drifts (page cache, disk) drifts for both. */
	for (size_t r = 0; r < runs; r++) {
		for (int k = 0; k < 2; k++) {
			publish_result res;
			double a, b;
			if (k == 0)
				snprintf(handle, sizeof(handle), "small%zu", r);
			in.author = k == 0 ? handle : "big";
			in.now_ms = now_ms();
			a = mono_ms();
			rc = publish_post(st, &set, &in, &res, err, sizeof(err));
			b = mono_ms();
			if (rc != 0) {
				fprintf(stderr, "bench_publish: %s\n", err);
				return 1;
			}
			t[k][T_TOTAL][r] = b - a;
			t[k][T_OBJECTS][r] = res.ms_objects;
			t[k][T_FEED][r] = res.ms_feed;
			t[k][T_PAGES][r] = res.ms_pages;
			t[k][T_COMMIT][r] = res.ms_commit;
			printf("{\"run\": %zu, \"posts_before\": %llu, \"total_ms\": %.3f}\n", r,
			       (unsigned long long)(res.seq - 1), b - a);
		}
	}
	for (int k = 0; k < 2; k++) {
		printf("{\"summary\": {\"posts_before\": %zu, \"runs\": %zu", k == 0 ? small : big, runs);
		for (int i = 0; i < T_COUNT; i++) {
			double m = mean(t[k][i], runs);
			printf(", \"%s\": {\"mean\": %.3f, \"median\": %.3f, \"p90\": %.3f}", names[i], m,
			       pct(t[k][i], runs, 0.5), pct(t[k][i], runs, 0.9));
		}
		printf("}}\n");
	}
	store_close(st);
	media_result_free(&media);
	return 0;
}

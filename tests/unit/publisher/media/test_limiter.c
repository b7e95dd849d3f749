/* test_limiter: the look-ahead true-peak limiter and the true-peak meter. Shared fixtures:
 * fixture.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <ogg/ogg.h>
#include <opus.h>

#include "core/error.h"
#include "media/media.h"
#include "media/internal.h"
#include "publisher/media/fixture.h"

#include <ebur128.h>
#include <jansson.h>
#include <time.h>

/* The limiter keeps every sample and every interpolated point under its
 * ceiling, delays by exactly its latency, and leaves quiet signal alone. */
static void test_limiter_ceiling_and_latency(void **state)
{
	const double ceiling = 0.5;
	media__limiter *lim = media__limiter_new(ceiling);
	size_t lat, n = 48000;
	float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
	double max_ratio_jump = 0;

	(void)state;
	assert_non_null(lim);
	assert_non_null(x);
	assert_non_null(y);
	lat = media__limiter_latency(lim);
	/* Quiet 0.1 tone, then a burst at 1.6 (three times the ceiling), then quiet. */
	for (size_t i = 0; i < n; i++) {
		double amp = (i >= 16000 && i < 24000) ? 1.6 : 0.1;
		x[i] = (float)(amp * sin(2 * M_PI * 997 * (double)i / 48000));
	}
	for (size_t i = 0; i < n + lat; i++) {
		float out = media__limiter_step(lim, i < n ? x[i] : 0.0f);
		if (i >= lat)
			y[i - lat] = out;
	}
	for (size_t i = 0; i < n; i++) {
		assert_true(fabsf(y[i]) <= ceiling + 1e-6);
		/* The gain follows the burst smoothly: no sample-to-sample jumps
		 * as a clipper would make. */
		if (i > 0 && fabsf(x[i]) > 0.05f && fabsf(x[i - 1]) > 0.05f) {
			double jump = fabs(y[i] / x[i] - y[i - 1] / x[i - 1]);
			if (jump > max_ratio_jump)
				max_ratio_jump = jump;
		}
	}
	assert_true(max_ratio_jump < 0.02);
	/* Far from the burst the signal passes unchanged, in time. */
	for (size_t i = 1000; i < 10000; i++)
		assert_true(fabsf(y[i] - x[i]) < 1e-6);
	for (size_t i = 44000; i < n; i++)
		assert_true(fabsf(y[i] - x[i]) < 1e-3);
	/* Inside the burst it limits, close to the ceiling. */
	{
		float peak = 0;
		for (size_t i = 17000; i < 23000; i++)
			peak = fabsf(y[i]) > peak ? fabsf(y[i]) : peak;
		assert_true(peak > 0.9 * ceiling);
	}
	media__limiter_free(lim);
	free(x);
	free(y);
}

/* The true-peak meter: as brute-force 4x interpolation with the limiter's
 * own filter would find (the block skip is exact), whatever the chunking. */
static void test_peak_meter(void **state)
{
	const size_t n = 48000;
	float *x = malloc(n * sizeof(float));
	media__peak_meter *pm;
	double a, b;

	(void)state;
	assert_non_null(x);
	/* Quiet noise with one loud inter-sample peak: a tone near fs/4 with
	 * its samples straddling the crest. */
	for (size_t i = 0; i < n; i++)
		x[i] = 0.05f * (float)sin(0.37 * (double)i);
	for (size_t i = 30000; i < 30064; i++)
		x[i] = 0.8f * (float)sin(M_PI / 2 * ((double)i + 0.5));
	pm = media__peak_meter_new();
	assert_non_null(pm);
	media__peak_add(pm, x, n);
	a = media__peak_finish(pm);
	media__peak_meter_free(pm);
	/* The same in odd-sized pieces. */
	pm = media__peak_meter_new();
	for (size_t i = 0; i < n; i += 333)
		media__peak_add(pm, x + i, n - i < 333 ? n - i : 333);
	b = media__peak_finish(pm);
	media__peak_meter_free(pm);
	assert_true(a == b);
	/* The samples are at 0.8 * sin(45 deg) = 0.566; the crest between
	 * them reaches about 0.8. */
	if (!(a > 0.75 && a < 0.85))
		fail_msg("true peak %.4f", a);
	free(x);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_limiter_ceiling_and_latency),
		cmocka_unit_test(test_peak_meter),
	};

	return mtest_main(argc, argv, tests, sizeof(tests) / sizeof(tests[0]));
}

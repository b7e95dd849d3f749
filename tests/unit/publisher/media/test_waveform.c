/* test_waveform: the streamed audiowaveform peaks and their JSON. Shared fixtures:
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
#include "publisher/media/fixture.h"

#include <ebur128.h>
#include <jansson.h>
#include <time.h>

static void waveform_of(const float *x, size_t frames, unsigned points, size_t chunk,
                        media_waveform *w)
{
	assert_int_equal(media_waveform_begin(w, frames, points), 0);
	for (size_t i = 0; i < frames; i += chunk)
		media_waveform_add(w, x + i, frames - i < chunk ? frames - i : chunk);
	assert_true(media_waveform_done(w));
}

/* Known signals give known min/max pairs, whatever the chunking. */
static void test_waveform_known_signal(void **state)
{
	/* Ten samples, five pixels of two: each pair is that pixel's min, max. */
	static const float ten[10] = { 0.5f, -0.25f, 1.0f, -1.0f, 0.0f, 0.0f,
		                       0.1f, 0.2f,   -0.5f, -0.75f };
	static const int8_t ten_want[10] = { -32, 64, -128, 127, 0, 0, 13, 26, -96, -64 };
	/* Seven samples, three pixels: widths 2, 2, 3 (floor(i*7/3) boundaries). */
	static const float seven[7] = { 0.25f, 0.5f, -0.5f, -0.25f, 0.75f, -0.75f, 0.0f };
	static const int8_t seven_want[6] = { 32, 64, -64, -32, -96, 96 };
	/* Fewer samples than points: one pixel per sample. */
	static const float three[3] = { 0.5f, -0.5f, 2.0f };
	static const int8_t three_want[6] = { 64, 64, -64, -64, 127, 127 };
	media_waveform w;

	(void)state;
	for (size_t chunk = 1; chunk <= 10; chunk += 3) {
		waveform_of(ten, 10, 5, chunk, &w);
		assert_int_equal(w.length, 5);
		assert_int_equal(w.samples_per_pixel, 2);
		assert_memory_equal(w.data, ten_want, sizeof(ten_want));
		media_waveform_free(&w);
	}
	waveform_of(seven, 7, 3, 7, &w);
	assert_int_equal(w.length, 3);
	assert_int_equal(w.samples_per_pixel, 3);
	assert_memory_equal(w.data, seven_want, sizeof(seven_want));
	media_waveform_free(&w);
	waveform_of(three, 3, 5, 2, &w);
	assert_int_equal(w.length, 3);
	assert_int_equal(w.samples_per_pixel, 1);
	assert_memory_equal(w.data, three_want, sizeof(three_want));
	media_waveform_free(&w);
	assert_null(w.data);
}

/* 1000 pixels by default over a long signal: a sine's peaks in every pixel,
 * a ramp's pixels in order; and the JSON carries the documented fields. */
static void test_waveform_points_and_json(void **state)
{
	size_t frames = 48000 * 3 + 123;
	float *x = malloc(frames * sizeof(float));
	media_waveform w;
	media_buffer js;
	json_t *doc, *data;
	json_error_t jerr;

	(void)state;
	assert_non_null(x);
	for (size_t i = 0; i < frames; i++)
		x[i] = (float)(0.5 * sin(2 * M_PI * 1000.0 * (double)i / 48000.0));
	waveform_of(x, frames, 0, 4096, &w);
	assert_int_equal(w.length, MEDIA_DEFAULT_WAVEFORM_POINTS);
	assert_int_equal(w.samples_per_pixel, (frames + 999) / 1000);
	/* Every pixel spans more than a period of 1 kHz (48 samples): +-0.5. */
	for (size_t i = 0; i < w.length; i++) {
		assert_in_range(w.data[2 * i], -64, -63);
		assert_in_range(w.data[2 * i + 1], 63, 64);
	}
	assert_int_equal(media_waveform_json(&w, &js), 0);
	doc = json_loadb((const char *)js.data, js.len, 0, &jerr);
	if (doc == NULL)
		fail_msg("waveform JSON does not parse: %s", jerr.text);
	assert_int_equal(json_integer_value(json_object_get(doc, "version")), 2);
	assert_int_equal(json_integer_value(json_object_get(doc, "channels")), 1);
	assert_int_equal(json_integer_value(json_object_get(doc, "sample_rate")), 48000);
	assert_int_equal(json_integer_value(json_object_get(doc, "samples_per_pixel")),
	                 w.samples_per_pixel);
	assert_int_equal(json_integer_value(json_object_get(doc, "bits")), 8);
	assert_int_equal(json_integer_value(json_object_get(doc, "length")), 1000);
	data = json_object_get(doc, "data");
	assert_int_equal(json_array_size(data), 2000);
	for (size_t i = 0; i < 2000; i++)
		assert_int_equal(json_integer_value(json_array_get(data, i)), w.data[i]);
	json_decref(doc);
	media_buffer_free(&js);
	media_waveform_free(&w);

	/* A ramp from -1 to 1 over 100 pixels: mins and maxes rise. */
	for (size_t i = 0; i < frames; i++)
		x[i] = (float)(-1.0 + 2.0 * (double)i / (double)(frames - 1));
	waveform_of(x, frames, 100, 999, &w);
	assert_int_equal(w.length, 100);
	assert_int_equal(w.data[0], -128);
	assert_int_equal(w.data[199], 127);
	for (size_t i = 1; i < 100; i++) {
		assert_true(w.data[2 * i] >= w.data[2 * i - 2]);
		assert_true(w.data[2 * i] <= w.data[2 * i + 1]);
	}
	media_waveform_free(&w);
	free(x);
}

static void test_waveform_rejects(void **state)
{
	media_waveform w;
	media_buffer js;
	float x[4] = { 0 };

	(void)state;
	assert_int_equal(media_waveform_begin(&w, 0, 10), SAYIN_EINVAL);
	assert_int_equal(media_waveform_begin(&w, 100, MEDIA_MAX_WAVEFORM_POINTS + 1), SAYIN_EINVAL);
	assert_int_equal(media_waveform_begin(&w, 100, 10), 0);
	media_waveform_add(&w, x, 4);
	/* Not all samples went in yet. */
	assert_false(media_waveform_done(&w));
	assert_int_equal(media_waveform_json(&w, &js), SAYIN_EINVAL);
	assert_null(js.data);
	media_waveform_free(&w);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_waveform_known_signal),
		cmocka_unit_test(test_waveform_points_and_json),
		cmocka_unit_test(test_waveform_rejects),
	};

	return mtest_main(argc, argv, tests, sizeof(tests) / sizeof(tests[0]));
}

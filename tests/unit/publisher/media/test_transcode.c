/* test_transcode: the whole pipeline through the decoder child: loudness,
 * rejections, a crashing or hanging decoder, waveform, M4A, thread faults. Shared fixtures:
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

static media_transcode_options pipeline_options(void)
{
	media_transcode_options o = { 0 };

	o.decoder_exe = "/proc/self/exe";
	o.log_level = "error";
	o.opus.complexity = -1;
	return o;
}

/* Measures a stream with libopus + libebur128: integrated loudness and true
 * peak, as a player would hear it. */
static void measure_stream(const media_buffer *buf, double *lufs, double *tp_db)
{
	size_t n;
	float *y = mtest_decode_stream(buf, &n);
	ebur128_state *st = ebur128_init(1, 48000, EBUR128_MODE_I | EBUR128_MODE_TRUE_PEAK);
	double tp;

	assert_non_null(st);
	assert_int_equal(ebur128_add_frames_float(st, y, n), EBUR128_SUCCESS);
	assert_int_equal(ebur128_loudness_global(st, lufs), EBUR128_SUCCESS);
	assert_int_equal(ebur128_true_peak(st, 0, &tp), EBUR128_SUCCESS);
	*tp_db = 20 * log10(tp);
	ebur128_destroy(&st);
	free(y);
}

/* A quiet stereo speech-like signal comes out at -16 LUFS, under -1 dBTP,
 * with its length, deterministically. */
static void test_transcode_normalizes(void **state)
{
	struct wav_spec s = { .tag = 1, .channels = 2, .rate = 44100, .bits = 16, .frames = 44100 * 3 };
	struct bytes b;
	media_transcode_options o = pipeline_options();
	media_result r, again;
	char path[256], err[256] = "";
	double lufs, tp;
	size_t data;
	uint32_t x = 7;
	int rc;

	(void)state;
	mtest_build_wav(&s, &b);
	/* Bursts of a harmonic tone with noise at about -30 dBFS: quiet and peaky. */
	data = mtest_data_size_offset + 4;
	for (size_t i = 0; i < s.frames; i++) {
		double t = (double)i / s.rate, env = fmod(t, 0.5) < 0.3 ? 1.0 : 0.05;
		double v = env * (0.03 * sin(2 * M_PI * 150 * t) + 0.02 * sin(2 * M_PI * 450 * t));
		x = x * 1103515245u + 12345u;
		v += env * 0.005 * ((double)(x >> 8) / (double)(1u << 24) - 0.5);
		for (unsigned c = 0; c < 2; c++) {
			unsigned short u = (unsigned short)(int16_t)lrint(v * 32767.0);
			b.p[data + 4 * i + 2 * c] = (unsigned char)(u & 0xff);
			b.p[data + 4 * i + 2 * c + 1] = (unsigned char)(u >> 8);
		}
	}
	mtest_tmp_path(path, sizeof(path), "quiet.wav");
	mtest_write_file(path, b.p, b.len);
	free(b.p);

	rc = media_transcode_file(path, &o, &r, err, sizeof(err));
	if (rc != 0)
		fail_msg("transcode: %d %s", rc, err);
	assert_int_equal(r.frames, 48000 * 3);
	assert_int_equal(r.input_rate, 44100);
	assert_int_equal(r.input_channels, 2);
	assert_string_equal(r.input_format, "wav/pcm_s16le");
	assert_true(r.input_lufs < -25 && r.input_lufs > -40);
	assert_true(r.gain_db > 9);
	assert_true(fabs(r.output_lufs - -16) <= 1.0);
	assert_true(r.true_peak_dbtp <= -1.0);
	measure_stream(&r.opus, &lufs, &tp);
	if (fabs(lufs - -16) > 1.0 || tp > -1.0)
		fail_msg("decoded: %.2f LUFS, %.2f dBTP", lufs, tp);
	/* OpusHead output gain stays 0: the samples carry the normalization. */
	{
		struct ogg_info *info = mtest_parse_ogg(&r.opus);
		assert_int_equal(info->packets[0].data[16] | info->packets[0].data[17] << 8, 0);
		mtest_free_ogg(info);
	}
	rc = media_transcode_file(path, &o, &again, err, sizeof(err));
	assert_int_equal(rc, 0);
	assert_int_equal(again.opus.len, r.opus.len);
	assert_memory_equal(again.opus.data, r.opus.data, r.opus.len);
	assert_int_equal(again.serial, r.serial);
	media_result_free(&again);

	/* Another target moves the output. */
	o.loudness_target = -23;
	rc = media_transcode_file(path, &o, &again, err, sizeof(err));
	assert_int_equal(rc, 0);
	measure_stream(&again.opus, &lufs, &tp);
	assert_true(fabs(lufs - -23) <= 1.0);
	media_result_free(&again);
	media_result_free(&r);
	assert_null(r.opus.data);
}

static void expect_transcode_error(const char *path, const media_transcode_options *o, int want,
                                   const char *needle)
{
	media_result r;
	char err[512] = "";
	int rc;

	memset(&r, 0xab, sizeof(r));
	rc = media_transcode_file(path, o, &r, err, sizeof(err));
	if (rc != want)
		fail_msg("%s: got %d (%s), want %d (%s); err: %s", path, rc, sayin_strerror(rc), want,
		         sayin_strerror(want), err);
	if (strstr(err, needle) == NULL)
		fail_msg("error '%s' does not say '%s'", err, needle);
	assert_null(strchr(err, '\n'));
	assert_null(r.opus.data);
	assert_null(r.m4a.data);
	assert_null(r.waveform.data);
	assert_int_equal(r.frames, 0);
}

static void test_transcode_rejections(void **state)
{
	struct wav_spec tone = { .tag = 1, .channels = 1, .rate = 16000, .bits = 16, .frames = 32000 };
	struct wav_spec silent = { .tag = 1, .channels = 1, .rate = 16000, .bits = 16, .frames = 32000 };
	media_transcode_options o = pipeline_options();
	char path[256], quiet[256], cut[256];
	struct bytes b;

	(void)state;
	mtest_write_wav("tone2s.wav", &tone, path, sizeof(path));
	o.max_duration_ms = 1000;
	expect_transcode_error(path, &o, SAYIN_ETOOLONG, "too long");
	o.max_duration_ms = 0;
	o.max_input_bytes = 1000;
	expect_transcode_error(path, &o, SAYIN_ETOOLARGE, "too large");
	o.max_input_bytes = 0;

	mtest_build_wav(&silent, &b);
	memset(b.p + mtest_data_size_offset + 4, 0, silent.frames * 2);
	mtest_tmp_path(quiet, sizeof(quiet), "silent.wav");
	mtest_write_file(quiet, b.p, b.len);
	expect_transcode_error(quiet, &o, SAYIN_ESILENT, "silent");
	/* The child's strict WAV reader still refuses a cut-off file. */
	mtest_tmp_path(cut, sizeof(cut), "cut.wav");
	mtest_write_file(cut, b.p, b.len - 101);
	expect_transcode_error(cut, &o, SAYIN_ETRUNCATED, "remain");
	free(b.p);
	mtest_tmp_path(cut, sizeof(cut), "empty.wav");
	mtest_write_file(cut, "", 0);
	expect_transcode_error(cut, &o, SAYIN_EEMPTY, "empty");
	mtest_write_file(cut, "just some text, not audio at all\n", 33);
	expect_transcode_error(cut, &o, SAYIN_EFORMAT, "format");
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A decoder that crashes or hangs costs only its process: a clear error,
 * and the next transcode works. */
static void test_transcode_survives_decoder_crash_and_hang(void **state)
{
	struct wav_spec tone = { .tag = 1, .channels = 1, .rate = 16000, .bits = 16, .frames = 16000 };
	media_transcode_options o = pipeline_options();
	media_result r;
	char path[256], err[256];
	double t0;

	(void)state;
	mtest_write_wav("crash.wav", &tone, path, sizeof(path));
	setenv("SAYIN_TEST_DECODER_CRASH", "segv", 1);
	expect_transcode_error(path, &o, SAYIN_EDECODER, "decoder crashed (signal 11");
	setenv("SAYIN_TEST_DECODER_CRASH", "hang", 1);
	o.decode_timeout_ms = 300;
	t0 = now_s();
	expect_transcode_error(path, &o, SAYIN_EDECODER, "timed out");
	assert_true(now_s() - t0 < 2.0);
	unsetenv("SAYIN_TEST_DECODER_CRASH");
	o.decoder_exe = "/nonexistent/decoder";
	expect_transcode_error(path, &o, SAYIN_EDECODER, "cannot start");
	o = pipeline_options();
	assert_int_equal(media_transcode_file(path, &o, &r, err, sizeof(err)), 0);
	assert_int_equal(r.frames, 48000);
	media_result_free(&r);
}

/* The pipeline's waveform is that of the normalized signal it encodes:
 * `waveform-points` pairs, peaks under the limiter's ceiling but well above
 * the quiet input's. */
static void test_transcode_waveform(void **state)
{
	struct wav_spec s = { .tag = 1, .channels = 1, .rate = 16000, .bits = 16, .frames = 16000 * 2 };
	media_transcode_options o = pipeline_options();
	media_result r;
	char path[256], err[256] = "";
	json_t *doc;
	int hi = 0;

	(void)state;
	mtest_write_wav("wf.wav", &s, path, sizeof(path));
	o.waveform_points = 250;
	o.no_fallback = 1;
	assert_int_equal(media_transcode_file(path, &o, &r, err, sizeof(err)), 0);
	assert_int_equal(r.waveform_length, 250);
	assert_null(r.m4a.data);
	doc = json_loadb((const char *)r.waveform.data, r.waveform.len, 0, NULL);
	assert_non_null(doc);
	assert_int_equal(json_integer_value(json_object_get(doc, "length")), 250);
	assert_int_equal(json_integer_value(json_object_get(doc, "samples_per_pixel")), 96000 / 250);
	assert_int_equal(json_array_size(json_object_get(doc, "data")), 500);
	for (size_t i = 0; i < 500; i++) {
		int v = (int)json_integer_value(json_array_get(json_object_get(doc, "data"), i));
		if (abs(v) > hi)
			hi = abs(v);
	}
	/* A 0.8 sine tone normalized to -16 LUFS peaks near 0.22 (-13 dBFS);
	 * the limiter's ceiling (-2.5 dBTP) is 0.75. */
	assert_in_range(hi, 16, 96);
	json_decref(doc);
	media_result_free(&r);
	assert_null(r.waveform.data);
}

/* The file holds exactly the buffer's bytes. */
static void assert_file_holds(const media_file *f, const media_buffer *b)
{
	unsigned char *got = malloc(b->len + 1);
	assert_non_null(got);
	assert_int_equal(f->len, b->len);
	assert_int_equal(pread(f->fd, got, b->len + 1, 0), (ssize_t)b->len);
	assert_memory_equal(got, b->data, b->len);
	free(got);
}

/* The pipeline makes the M4A rendition from the samples it encodes to Opus,
 * unless told not to; it is as long as the Opus one. */
static void test_transcode_m4a(void **state)
{
	struct wav_spec s = { .tag = 1, .channels = 2, .rate = 44100, .bits = 16, .frames = 44100 * 2 };
	media_transcode_options o = pipeline_options();
	media_result r, again;
	char path[256], m4a[256], v[128], err[256] = "";

	(void)state;
	mtest_write_wav("fallback.wav", &s, path, sizeof(path));
	assert_int_equal(media_transcode_file(path, &o, &r, err, sizeof(err)), 0);
	assert_non_null(r.m4a.data);
	assert_memory_equal(r.m4a.data + 4, "ftypM4A ", 8);
	assert_int_equal(r.waveform_length, 1000);
	/* Deterministic through the whole pipeline. */
	assert_int_equal(media_transcode_file(path, &o, &again, err, sizeof(err)), 0);
	assert_int_equal(again.m4a.len, r.m4a.len);
	assert_memory_equal(again.m4a.data, r.m4a.data, r.m4a.len);
	assert_int_equal(again.waveform.len, r.waveform.len);
	assert_memory_equal(again.waveform.data, r.waveform.data, r.waveform.len);
	media_result_free(&again);
	/* keep_files hands over the same bytes as files, and nothing in memory. */
	o.keep_files = 1;
	assert_int_equal(media_transcode_file(path, &o, &again, err, sizeof(err)), 0);
	assert_null(again.opus.data);
	assert_null(again.m4a.data);
	assert_file_holds(&again.opus_file, &r.opus);
	assert_file_holds(&again.m4a_file, &r.m4a);
	assert_int_equal(again.waveform.len, r.waveform.len);
	{
		int fds[2] = { again.opus_file.fd, again.m4a_file.fd };
		media_result_free(&again);
		/* media_result_free closed them. */
		assert_int_equal(fcntl(fds[0], F_GETFD), -1);
		assert_int_equal(fcntl(fds[1], F_GETFD), -1);
	}
	o.keep_files = 0;
	if (mtest_have_tool("ffprobe")) {
		mtest_tmp_path(m4a, sizeof(m4a), "pipeline.m4a");
		mtest_write_file(m4a, r.m4a.data, r.m4a.len);
		mtest_probe(m4a, "format=duration", v, sizeof(v));
		assert_true(fabs(atof(v) - 2.0) <= 0.050);
	}
	media_result_free(&r);
	assert_null(r.m4a.data);

	o.no_fallback = 1;
	assert_int_equal(media_transcode_file(path, &o, &r, err, sizeof(err)), 0);
	assert_null(r.m4a.data);
	assert_int_equal(r.m4a.len, 0);
	assert_non_null(r.opus.data);
	media_result_free(&r);
	o.no_fallback = 0;
	o.aac.bitrate = 8000;
	expect_transcode_error(path, &o, SAYIN_EINVAL, "AAC bitrate");
	o.aac.bitrate = 0;
	o.aac.coder = "anmr";
	expect_transcode_error(path, &o, SAYIN_EINVAL, "AAC coder");
	/* twoloop is the other coder: other bytes of the same length. */
	o.aac.coder = "twoloop";
	assert_int_equal(media_transcode_file(path, &o, &again, err, sizeof(err)), 0);
	o.aac.coder = NULL;
	assert_int_equal(media_transcode_file(path, &o, &r, err, sizeof(err)), 0);
	assert_memory_equal(again.m4a.data + 4, "ftypM4A ", 8);
	assert_true(again.m4a.len != r.m4a.len ||
	            memcmp(again.m4a.data, r.m4a.data, r.m4a.len) != 0);
	media_result_free(&again);
	media_result_free(&r);
}

/* A failure in any thread of the encoding pass stops the others: one
 * clear error, nothing half-made, no hang; the next run works. */
static void test_transcode_thread_faults(void **state)
{
	static const struct {
		const char *stage;
		int rc;
		const char *msg;
	} faults[] = {
		{ "feeder", -EIO, "reading the temporary file failed" },
		{ "verifier", SAYIN_EENCODE, "checking the encoded output failed" },
		{ "aac", SAYIN_EENCODE, "AAC encoder failed (injected" },
	};
	struct wav_spec s = { .tag = 1, .channels = 1, .rate = 48000, .bits = 16,
		              .frames = 48000 * 2 };
	media_transcode_options o = pipeline_options();
	media_result r, zero;
	char path[256], err[256];

	(void)state;
	memset(&zero, 0, sizeof(zero));
	mtest_write_wav("faults.wav", &s, path, sizeof(path));
	for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
		double t0 = now_s();
		int rc;

		setenv("SAYIN_TEST_MEDIA_FAULT", faults[i].stage, 1);
		err[0] = '\0';
		rc = media_transcode_file(path, &o, &r, err, sizeof(err));
		unsetenv("SAYIN_TEST_MEDIA_FAULT");
		if (rc != faults[i].rc || strstr(err, faults[i].msg) == NULL)
			fail_msg("%s: %d %s", faults[i].stage, rc, err);
		assert_memory_equal(&r, &zero, sizeof(r));
		assert_true(now_s() - t0 < 10);
	}
	assert_int_equal(media_transcode_file(path, &o, &r, err, sizeof(err)), 0);
	assert_true(r.m4a.len > 0 && r.opus.len > 0 && r.waveform.len > 0);
	media_result_free(&r);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_transcode_normalizes),
		cmocka_unit_test(test_transcode_rejections),
		cmocka_unit_test(test_transcode_survives_decoder_crash_and_hang),
		cmocka_unit_test(test_transcode_waveform),
		cmocka_unit_test(test_transcode_m4a),
		cmocka_unit_test(test_transcode_thread_faults),
	};

	return mtest_main(argc, argv, tests, sizeof(tests) / sizeof(tests[0]));
}

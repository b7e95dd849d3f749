/* test_wav: the strict WAV reader: formats, downmix and resampling to mono
 * 48 kHz, streamed sizes, and every way a WAV is refused. Shared fixtures:
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

/* Counts upward zero crossings, a frequency estimate that a missing or wrong
 * resampling cannot pass. */
static size_t upward_crossings(const float *x, size_t n)
{
	size_t count = 0;
	for (size_t i = 1; i < n; i++) {
		if (x[i - 1] < 0 && x[i] >= 0)
			count++;
	}
	return count;
}

static size_t expected_out_frames(uint64_t frames, unsigned rate)
{
	return (size_t)llround((double)frames * 48000.0 / rate);
}

/* Decodes a generated tone and checks every field and the signal itself. */
static void check_tone(const char *path, const struct wav_spec *s, const char *format)
{
	media_audio a;
	char err[256] = "";
	size_t want = expected_out_frames(s->frames, s->rate);
	double peak = 0, seconds = (double)s->frames / s->rate, want_crossings;
	size_t edge = 480; /* skip the resampler's edges */
	size_t crossings, half;
	int rc = media_decode_file(path, &a, err, sizeof(err));

	if (rc != 0)
		fail_msg("decode %s: %d %s", path, rc, err);
	assert_int_equal(a.input_rate, s->rate);
	assert_int_equal(a.input_channels, s->channels);
	assert_int_equal(a.input_frames, s->frames);
	assert_int_equal(a.frames, want);
	assert_string_equal(a.input_format, format);
	assert_true(fabs(media_audio_duration(&a) - seconds) < 1e-9);
	assert_non_null(a.samples);
	for (size_t i = 0; i < a.frames; i++) {
		assert_true(a.samples[i] >= -1.0f && a.samples[i] <= 1.0f);
		if (i >= edge && i + edge < a.frames && fabs(a.samples[i]) > peak)
			peak = fabs(a.samples[i]);
	}
	/* Channels are averaged, not summed or picked. */
	if (fabs(peak - mtest_expected_mono_amp(s->channels)) > 0.02)
		fail_msg("peak %f, want %f", peak, mtest_expected_mono_amp(s->channels));
	/* A 1 kHz tone is still 1 kHz at 48 kHz, in each half of the output (the
	 * total alone would only count the input's cycles). */
	half = (a.frames - 2 * edge) / 2;
	want_crossings = TONE_HZ * (double)half / 48000.0;
	for (size_t h = 0; h < 2; h++) {
		crossings = upward_crossings(a.samples + edge + h * half, half);
		if (fabs((double)crossings - want_crossings) > 2)
			fail_msg("%zu zero crossings in half %zu, want about %.0f", crossings, h,
			         want_crossings);
	}
	media_audio_free(&a);
	assert_null(a.samples);
	assert_int_equal(a.frames, 0);
}

static void test_decode_s16_mono_48k(void **state)
{
	struct wav_spec s = { .tag = 1, .channels = 1, .rate = 48000, .bits = 16, .frames = 24000 };
	char path[256];
	media_audio a;
	char err[256];

	(void)state;
	mtest_write_wav("s16_48k.wav", &s, path, sizeof(path));
	check_tone(path, &s, "wav/pcm_s16le");

	/* At 48 kHz mono nothing is resampled: samples come through exactly. */
	assert_int_equal(media_decode_file(path, &a, err, sizeof(err)), 0);
	for (size_t i = 0; i < s.frames; i++) {
		float want = (float)(int16_t)lrint(mtest_sample_value(&s, i, 0) * 32767.0) / 32768.0f;
		assert_true(a.samples[i] == want);
	}
	media_audio_free(&a);
}

static void test_decode_s24_stereo_44k1(void **state)
{
	struct wav_spec s = { .tag = 1, .channels = 2, .rate = 44100, .bits = 24, .frames = 44100 };
	char path[256];

	(void)state;
	mtest_write_wav("s24_44k1.wav", &s, path, sizeof(path));
	check_tone(path, &s, "wav/pcm_s24le");
}

static void test_decode_f32_stereo_22k05(void **state)
{
	struct wav_spec s = { .tag = 3, .channels = 2, .rate = 22050, .bits = 32, .frames = 11025 };
	char path[256];

	(void)state;
	mtest_write_wav("f32_22k05.wav", &s, path, sizeof(path));
	check_tone(path, &s, "wav/pcm_f32le");
}

static void test_decode_s16_mono_8k(void **state)
{
	struct wav_spec s = { .tag = 1, .channels = 1, .rate = 8000, .bits = 16, .frames = 4001 };
	char path[256];

	(void)state;
	mtest_write_wav("s16_8k.wav", &s, path, sizeof(path));
	check_tone(path, &s, "wav/pcm_s16le");
}

static void test_decode_extensible(void **state)
{
	struct wav_spec pcm = { .tag = 1, .channels = 6, .rate = 96000, .bits = 24,
		                .frames = 48000, .extensible = true };
	struct wav_spec flt = { .tag = 3, .channels = 2, .rate = 48000, .bits = 32,
		                .frames = 9600, .extensible = true };
	struct wav_spec s16 = { .tag = 1, .channels = 1, .rate = 16000, .bits = 16,
		                .frames = 16000, .extensible = true };
	char path[256];

	(void)state;
	mtest_write_wav("ext_s24.wav", &pcm, path, sizeof(path));
	check_tone(path, &pcm, "wav/pcm_s24le");
	mtest_write_wav("ext_f32.wav", &flt, path, sizeof(path));
	check_tone(path, &flt, "wav/pcm_f32le");
	mtest_write_wav("ext_s16.wav", &s16, path, sizeof(path));
	check_tone(path, &s16, "wav/pcm_s16le");
}

/* Output frames are round(input_frames * 48000 / input_rate) exactly. */
static void test_decode_output_frame_count(void **state)
{
	static const struct {
		unsigned rate;
		size_t frames;
	} cases[] = {
		{ 44100, 1001 }, { 22050, 1001 }, { 8000, 1 }, { 44100, 3 }, { 11025, 7 },
		{ 192000, 5 },   { 192000, 2 },   { 32000, 12345 }, { 96000, 1 }, { 12000, 999 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct wav_spec s = { .tag = 1, .channels = 1, .rate = cases[i].rate, .bits = 16,
			              .frames = cases[i].frames };
		char path[256], err[256];
		media_audio a;
		int rc;

		mtest_write_wav("count.wav", &s, path, sizeof(path));
		rc = media_decode_file(path, &a, err, sizeof(err));
		if (rc != 0)
			fail_msg("rate %u frames %zu: %d %s", s.rate, s.frames, rc, err);
		if (a.frames != expected_out_frames(s.frames, s.rate))
			fail_msg("rate %u frames %zu: got %zu output frames, want %zu", s.rate,
			         s.frames, a.frames, expected_out_frames(s.frames, s.rate));
		media_audio_free(&a);
	}
}

static void test_decode_skips_unknown_chunks(void **state)
{
	/* Odd-sized chunks before fmt and data, and an odd-sized data chunk
	 * (mono 24-bit, odd frame count) followed by a pad byte and a LIST. */
	struct wav_spec s = { .tag = 1, .channels = 1, .rate = 44100, .bits = 24, .frames = 4411,
		              .extra_chunks = true, .list_after = true };
	char path[256];

	(void)state;
	mtest_write_wav("chunks.wav", &s, path, sizeof(path));
	check_tone(path, &s, "wav/pcm_s24le");
}

/* Streamed writers leave placeholders for the data size; the data then runs
 * to the end of the file. */
static void test_decode_streamed_sizes(void **state)
{
	static const uint32_t sizes[] = { 0xFFFFFFFFu, 0x7FFFF000u, 0 };
	struct wav_spec s = { .tag = 1, .channels = 2, .rate = 22050, .bits = 16, .frames = 2205 };

	(void)state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct bytes b;
		char path[256];

		mtest_build_wav(&s, &b);
		mtest_set_le32(&b, mtest_data_size_offset, sizes[i]);
		/* The RIFF size as each writer leaves it. */
		mtest_set_le32(&b, 4, sizes[i] == 0x7FFFF000u ? sizes[i] + 36 : sizes[i]);
		mtest_tmp_path(path, sizeof(path), "streamed.wav");
		mtest_write_file(path, b.p, b.len);
		free(b.p);
		check_tone(path, &s, "wav/pcm_s16le");
	}
}

static void expect_spec_error(const struct wav_spec *s, int want)
{
	struct bytes b;

	mtest_build_wav(s, &b);
	mtest_expect_bytes_error(b.p, b.len, want);
	free(b.p);
}

static void test_decode_rejects_truncated_data(void **state)
{
	struct wav_spec s = { .tag = 1, .channels = 2, .rate = 44100, .bits = 16, .frames = 4410 };
	struct bytes b;

	(void)state;
	mtest_build_wav(&s, &b);
	/* The data chunk claims more bytes than the file has. */
	mtest_expect_bytes_error(b.p, b.len - 1000, SAYIN_ETRUNCATED);
	mtest_expect_bytes_error(b.p, b.len - 4, SAYIN_ETRUNCATED);
	mtest_expect_bytes_error(b.p, b.len - 1, SAYIN_ETRUNCATED);
	/* A data size that ends inside a sample frame. */
	mtest_set_le32(&b, mtest_data_size_offset, (uint32_t)(s.frames * 4 - 1));
	mtest_expect_bytes_error(b.p, b.len - 1, SAYIN_ETRUNCATED);
	/* A streamed file cut inside a frame. */
	mtest_set_le32(&b, mtest_data_size_offset, 0xFFFFFFFFu);
	mtest_expect_bytes_error(b.p, b.len - 2, SAYIN_ETRUNCATED);
	free(b.p);
}

static void test_decode_rejects_truncated_header(void **state)
{
	struct wav_spec s = { .tag = 1, .channels = 1, .rate = 48000, .bits = 16, .frames = 100 };
	struct wav_spec ext = { .tag = 1, .channels = 2, .rate = 48000, .bits = 16, .frames = 100,
		                .extensible = true };
	/* Inside the RIFF header, the fmt chunk header, the fmt body, before the
	 * data chunk, inside the data chunk header, right after it. */
	static const size_t cuts[] = { 2, 4, 6, 11, 14, 20, 30, 36, 40, 44 };
	struct bytes b;

	(void)state;
	mtest_build_wav(&s, &b);
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++)
		mtest_expect_bytes_error(b.p, cuts[i], SAYIN_ETRUNCATED);
	free(b.p);
	mtest_build_wav(&ext, &b);
	mtest_expect_bytes_error(b.p, 50, SAYIN_ETRUNCATED); /* inside the 40-byte fmt */
	free(b.p);
}

static void test_decode_rejects_unsupported(void **state)
{
	static const struct wav_spec specs[] = {
		{ .tag = 1, .channels = 1, .rate = 8000, .bits = 8, .frames = 800 },      /* 8-bit */
		{ .tag = 6, .channels = 1, .rate = 8000, .bits = 8, .frames = 800 },      /* A-law */
		{ .tag = 7, .channels = 1, .rate = 8000, .bits = 8, .frames = 800 },      /* mu-law */
		{ .tag = 2, .channels = 1, .rate = 8000, .bits = 4, .frames = 800 },      /* ADPCM */
		{ .tag = 0x11, .channels = 1, .rate = 8000, .bits = 4, .frames = 800 },   /* IMA */
		{ .tag = 3, .channels = 1, .rate = 48000, .bits = 64, .frames = 800 },    /* f64 */
		{ .tag = 1, .channels = 1, .rate = 48000, .bits = 32, .frames = 800 },    /* s32 */
		{ .tag = 1, .channels = 0, .rate = 48000, .bits = 16, .frames = 800 },
		{ .tag = 1, .channels = 9, .rate = 48000, .bits = 16, .frames = 800 },
		{ .tag = 1, .channels = 1, .rate = 4000, .bits = 16, .frames = 800 },
		{ .tag = 1, .channels = 1, .rate = 384000, .bits = 16, .frames = 800 },
		{ .tag = 6, .channels = 1, .rate = 8000, .bits = 8, .frames = 800, .extensible = true },
		{ .tag = 1, .channels = 1, .rate = 8000, .bits = 8, .frames = 800, .extensible = true },
	};
	struct wav_spec s = { .tag = 1, .channels = 1, .rate = 48000, .bits = 16, .frames = 800,
		              .extensible = true };
	struct bytes b;

	(void)state;
	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++)
		expect_spec_error(&specs[i], SAYIN_EUNSUPPORTED);

	/* An extensible subformat GUID that is neither PCM nor float. */
	mtest_build_wav(&s, &b);
	b.p[12 + 8 + 24 + 4] ^= 0xff;
	mtest_expect_bytes_error(b.p, b.len, SAYIN_EUNSUPPORTED);
	free(b.p);
}

static void add_chunk(struct bytes *b, const char *id, const void *data, uint32_t len)
{
	mtest_put(b, id, 4);
	mtest_put_le32(b, len);
	mtest_put(b, data, len);
	if (len & 1)
		mtest_put(b, "", 1);
}

/* RIFF/WAVE files that parse up to a contradiction in their own headers. */
static void test_decode_rejects_malformed(void **state)
{
	/* PCM, mono, 48 kHz, 16-bit */
	static const unsigned char fmt[16] = { 1, 0, 1, 0, 0x80, 0xbb, 0, 0,
		                               0, 0x77, 1, 0, 2, 0, 16, 0 };
	static const unsigned char samples[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	struct wav_spec s = { .tag = 1, .channels = 1, .rate = 48000, .bits = 16, .frames = 100 };
	struct wav_spec ext = { .tag = 1, .channels = 2, .rate = 48000, .bits = 16, .frames = 100,
		                .extensible = true };
	struct bytes b;

	(void)state;
	/* Block align that does not match channels and bits. */
	mtest_build_wav(&s, &b);
	b.p[12 + 8 + 12] = 3;
	mtest_expect_bytes_error(b.p, b.len, SAYIN_EFORMAT);
	free(b.p);
	/* Extensible with more valid bits than its container holds. */
	mtest_build_wav(&ext, &b);
	b.p[12 + 8 + 18] = 32;
	mtest_expect_bytes_error(b.p, b.len, SAYIN_EFORMAT);
	free(b.p);

	memset(&b, 0, sizeof(b));
	mtest_put(&b, "RIFF\0\0\0\0WAVE", 12);
	add_chunk(&b, "fmt ", fmt, 14); /* too short */
	add_chunk(&b, "data", samples, 8);
	mtest_set_le32(&b, 4, (uint32_t)b.len - 8);
	mtest_expect_bytes_error(b.p, b.len, SAYIN_EFORMAT);
	b.len = 12;
	add_chunk(&b, "fmt ", fmt, 16);
	add_chunk(&b, "fmt ", fmt, 16); /* twice */
	add_chunk(&b, "data", samples, 8);
	mtest_set_le32(&b, 4, (uint32_t)b.len - 8);
	mtest_expect_bytes_error(b.p, b.len, SAYIN_EFORMAT);
	b.len = 12;
	add_chunk(&b, "data", samples, 8); /* before fmt */
	add_chunk(&b, "fmt ", fmt, 16);
	mtest_set_le32(&b, 4, (uint32_t)b.len - 8);
	mtest_expect_bytes_error(b.p, b.len, SAYIN_EFORMAT);
	b.len = 12;
	add_chunk(&b, "fmt ", fmt, 16); /* and no data chunk, though complete */
	mtest_set_le32(&b, 4, (uint32_t)b.len - 8);
	mtest_expect_bytes_error(b.p, b.len, SAYIN_EFORMAT);
	b.len = 12; /* no chunks at all */
	mtest_set_le32(&b, 4, 4);
	mtest_expect_bytes_error(b.p, b.len, SAYIN_EFORMAT);
	/* The same, but the RIFF size says chunks were cut off. */
	mtest_set_le32(&b, 4, 1000);
	mtest_expect_bytes_error(b.p, b.len, SAYIN_ETRUNCATED);
	free(b.p);
}

static void test_decode_empty(void **state)
{
	struct wav_spec s = { .tag = 1, .channels = 1, .rate = 48000, .bits = 16, .frames = 0 };
	struct wav_spec listed = { .tag = 1, .channels = 1, .rate = 48000, .bits = 16, .frames = 0,
		                   .list_after = true };

	(void)state;
	expect_spec_error(&s, SAYIN_EEMPTY);
	/* An empty data chunk followed by other chunks is empty, not streamed. */
	expect_spec_error(&listed, SAYIN_EEMPTY);
	mtest_expect_bytes_error("", 0, SAYIN_EEMPTY);
	/* One frame at 192 kHz rounds to no sample at 48 kHz. */
	s.rate = 192000;
	s.frames = 1;
	expect_spec_error(&s, SAYIN_EEMPTY);
}

static void test_decode_float_sanitized(void **state)
{
	struct wav_spec s = { .tag = 3, .channels = 1, .rate = 44100, .bits = 32, .frames = 4410 };
	static const float bad[] = { NAN, INFINITY, -INFINITY, 2.0f, -3.0f };
	struct bytes b;
	char path[256], err[256];
	media_audio a;
	size_t data = 0;

	(void)state;
	mtest_build_wav(&s, &b);
	data = mtest_data_size_offset + 4;
	for (size_t i = 0; i < s.frames; i++) {
		uint32_t u;
		memcpy(&u, &bad[i % 5], 4);
		mtest_set_le32(&b, data + 4 * i, u);
	}
	mtest_tmp_path(path, sizeof(path), "nan.wav");
	mtest_write_file(path, b.p, b.len);
	free(b.p);
	assert_int_equal(media_decode_file(path, &a, err, sizeof(err)), 0);
	for (size_t i = 0; i < a.frames; i++)
		assert_true(isfinite(a.samples[i]) && fabsf(a.samples[i]) <= 1.0f);
	media_audio_free(&a);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decode_s16_mono_48k),
		cmocka_unit_test(test_decode_s24_stereo_44k1),
		cmocka_unit_test(test_decode_f32_stereo_22k05),
		cmocka_unit_test(test_decode_s16_mono_8k),
		cmocka_unit_test(test_decode_extensible),
		cmocka_unit_test(test_decode_output_frame_count),
		cmocka_unit_test(test_decode_skips_unknown_chunks),
		cmocka_unit_test(test_decode_streamed_sizes),
		cmocka_unit_test(test_decode_rejects_truncated_data),
		cmocka_unit_test(test_decode_rejects_truncated_header),
		cmocka_unit_test(test_decode_rejects_unsupported),
		cmocka_unit_test(test_decode_rejects_malformed),
		cmocka_unit_test(test_decode_empty),
		cmocka_unit_test(test_decode_float_sanitized),
	};

	return mtest_main(argc, argv, tests, sizeof(tests) / sizeof(tests[0]));
}

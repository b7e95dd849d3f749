/* test_media: the strict WAV reader, downmix/resampling to mono 48 kHz, the
 * Ogg Opus encoder (page layout, granules, determinism, bitrate), the
 * waveform and the AAC-in-M4A fallback. Fixtures are
 * generated here into a temporary directory. */
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

#include <ebur128.h>
#include <jansson.h>
#include <time.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

static char tmp_dir[] = "/tmp/test_media.XXXXXX";

static void tmp_path(char *buf, size_t len, const char *name)
{
	int n = snprintf(buf, len, "%s/%s", tmp_dir, name);
	assert_true(n > 0 && (size_t)n < len);
}

/* ---- a small byte builder ---------------------------------------------- */

struct bytes {
	unsigned char *p;
	size_t len, cap;
};

static void put(struct bytes *b, const void *data, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n)
			cap *= 2;
		b->p = realloc(b->p, cap);
		assert_non_null(b->p);
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
}

static void put_le16(struct bytes *b, unsigned v)
{
	unsigned char x[2] = { (unsigned char)(v & 0xff), (unsigned char)((v >> 8) & 0xff) };
	put(b, x, 2);
}

static void put_le32(struct bytes *b, uint32_t v)
{
	unsigned char x[4] = { (unsigned char)(v & 0xff), (unsigned char)((v >> 8) & 0xff),
		               (unsigned char)((v >> 16) & 0xff), (unsigned char)(v >> 24) };
	put(b, x, 4);
}

static void set_le32(struct bytes *b, size_t off, uint32_t v)
{
	b->p[off] = (unsigned char)(v & 0xff);
	b->p[off + 1] = (unsigned char)((v >> 8) & 0xff);
	b->p[off + 2] = (unsigned char)((v >> 16) & 0xff);
	b->p[off + 3] = (unsigned char)(v >> 24);
}

static uint32_t get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	if (len > 0)
		assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* ---- WAV fixtures ------------------------------------------------------ */

#define TONE_HZ 1000.0

struct wav_spec {
	unsigned tag;       /* format tag; the subformat when extensible */
	unsigned channels;
	unsigned rate;
	unsigned bits;
	size_t frames;
	bool extensible;    /* write WAVE_FORMAT_EXTENSIBLE */
	bool extra_chunks;  /* an odd-sized chunk before fmt and a LIST before data */
	bool list_after;    /* a LIST chunk after the data chunk */
};

/* Channel c carries a 1 kHz sine at 0.8 (even c) or 0.4 (odd c), so the
 * average of a stereo pair peaks at 0.6: neither channel alone, nor the sum. */
static double chan_amp(unsigned c)
{
	return (c % 2 == 0) ? 0.8 : 0.4;
}

static double expected_mono_amp(unsigned channels)
{
	double sum = 0;
	for (unsigned c = 0; c < channels; c++)
		sum += chan_amp(c);
	return sum / channels;
}

static double sample_value(const struct wav_spec *s, size_t i, unsigned c)
{
	return chan_amp(c) * sin(2 * M_PI * TONE_HZ * (double)i / s->rate);
}

/* Offset of the data chunk's size field in the last built WAV. */
static size_t data_size_offset;

static void build_wav(const struct wav_spec *s, struct bytes *b)
{
	unsigned block = s->channels * (s->bits / 8);
	size_t data_len = s->frames * block;

	memset(b, 0, sizeof(*b));
	put(b, "RIFF", 4);
	put_le32(b, 0); /* patched below */
	put(b, "WAVE", 4);
	if (s->extra_chunks) {
		put(b, "junk", 4);
		put_le32(b, 3);
		put(b, "abc\0", 4); /* 3 bytes and the pad byte */
	}
	put(b, "fmt ", 4);
	put_le32(b, s->extensible ? 40 : 16);
	put_le16(b, s->extensible ? 0xFFFE : s->tag);
	put_le16(b, s->channels);
	put_le32(b, s->rate);
	put_le32(b, s->rate * block);
	put_le16(b, block);
	put_le16(b, s->bits);
	if (s->extensible) {
		static const unsigned char tail[14] = { 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80,
			                                0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71 };
		put_le16(b, 22);
		put_le16(b, s->bits);                          /* valid bits */
		put_le32(b, (1u << s->channels) - 1);          /* channel mask */
		put_le16(b, s->tag);
		put(b, tail, sizeof(tail));
	}
	if (s->extra_chunks) {
		put(b, "LIST", 4);
		put_le32(b, 9);
		put(b, "INFOxxxxx\0", 10);
	}
	put(b, "data", 4);
	data_size_offset = b->len;
	put_le32(b, (uint32_t)data_len);
	for (size_t i = 0; i < s->frames; i++) {
		for (unsigned c = 0; c < s->channels; c++) {
			double v = sample_value(s, i, c);
			if (s->tag == 1 && s->bits == 16) {
				put_le16(b, (unsigned)(int16_t)lrint(v * 32767.0) & 0xffff);
			} else if (s->tag == 1 && s->bits == 24) {
				uint32_t u = (uint32_t)(int32_t)lrint(v * 8388607.0);
				unsigned char x[3] = { (unsigned char)(u & 0xff),
					               (unsigned char)((u >> 8) & 0xff),
					               (unsigned char)((u >> 16) & 0xff) };
				put(b, x, 3);
			} else if (s->tag == 3 && s->bits == 32) {
				float f = (float)v;
				uint32_t u;
				memcpy(&u, &f, 4);
				put_le32(b, u);
			} else {
				/* Encodings the reader must refuse: any bytes will do. */
				unsigned char x[8] = { 0x55, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde };
				put(b, x, s->bits / 8);
			}
		}
	}
	if (data_len & 1)
		put(b, "\0", 1);
	if (s->list_after) {
		put(b, "LIST", 4);
		put_le32(b, 4);
		put(b, "INFO", 4);
	}
	set_le32(b, 4, (uint32_t)(b->len - 8));
}

static void write_wav(const char *name, const struct wav_spec *s, char *path, size_t pathlen)
{
	struct bytes b;

	build_wav(s, &b);
	tmp_path(path, pathlen, name);
	write_file(path, b.p, b.len);
	free(b.p);
}

static size_t expected_out_frames(uint64_t frames, unsigned rate)
{
	return (size_t)llround((double)frames * 48000.0 / rate);
}

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
	if (fabs(peak - expected_mono_amp(s->channels)) > 0.02)
		fail_msg("peak %f, want %f", peak, expected_mono_amp(s->channels));
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
	write_wav("s16_48k.wav", &s, path, sizeof(path));
	check_tone(path, &s, "wav/pcm_s16le");

	/* At 48 kHz mono nothing is resampled: samples come through exactly. */
	assert_int_equal(media_decode_file(path, &a, err, sizeof(err)), 0);
	for (size_t i = 0; i < s.frames; i++) {
		float want = (float)(int16_t)lrint(sample_value(&s, i, 0) * 32767.0) / 32768.0f;
		assert_true(a.samples[i] == want);
	}
	media_audio_free(&a);
}

static void test_decode_s24_stereo_44k1(void **state)
{
	struct wav_spec s = { .tag = 1, .channels = 2, .rate = 44100, .bits = 24, .frames = 44100 };
	char path[256];

	(void)state;
	write_wav("s24_44k1.wav", &s, path, sizeof(path));
	check_tone(path, &s, "wav/pcm_s24le");
}

static void test_decode_f32_stereo_22k05(void **state)
{
	struct wav_spec s = { .tag = 3, .channels = 2, .rate = 22050, .bits = 32, .frames = 11025 };
	char path[256];

	(void)state;
	write_wav("f32_22k05.wav", &s, path, sizeof(path));
	check_tone(path, &s, "wav/pcm_f32le");
}

static void test_decode_s16_mono_8k(void **state)
{
	struct wav_spec s = { .tag = 1, .channels = 1, .rate = 8000, .bits = 16, .frames = 4001 };
	char path[256];

	(void)state;
	write_wav("s16_8k.wav", &s, path, sizeof(path));
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
	write_wav("ext_s24.wav", &pcm, path, sizeof(path));
	check_tone(path, &pcm, "wav/pcm_s24le");
	write_wav("ext_f32.wav", &flt, path, sizeof(path));
	check_tone(path, &flt, "wav/pcm_f32le");
	write_wav("ext_s16.wav", &s16, path, sizeof(path));
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

		write_wav("count.wav", &s, path, sizeof(path));
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
	write_wav("chunks.wav", &s, path, sizeof(path));
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

		build_wav(&s, &b);
		set_le32(&b, data_size_offset, sizes[i]);
		/* The RIFF size as each writer leaves it. */
		set_le32(&b, 4, sizes[i] == 0x7FFFF000u ? sizes[i] + 36 : sizes[i]);
		tmp_path(path, sizeof(path), "streamed.wav");
		write_file(path, b.p, b.len);
		free(b.p);
		check_tone(path, &s, "wav/pcm_s16le");
	}
}

/* Every failure gives its code, a message, and a zeroed output. */
static void expect_decode_error(const char *path, int want)
{
	media_audio a;
	char err[256] = "";
	int rc;

	memset(&a, 0xab, sizeof(a));
	rc = media_decode_file(path, &a, err, sizeof(err));
	if (rc != want)
		fail_msg("%s: got %d (%s), want %d (%s); err: %s", path, rc, sayin_strerror(rc), want,
		         sayin_strerror(want), err);
	assert_true(strlen(err) > 0);
	assert_null(strchr(err, '\n'));
	assert_null(a.samples);
	assert_int_equal(a.frames, 0);
	assert_int_equal(a.input_rate, 0);
	assert_int_equal(a.input_frames, 0);
	/* A small buffer truncates the message without overflowing. */
	assert_int_equal(media_decode_file(path, &a, err, 8), want);
	assert_true(strlen(err) < 8);
	assert_int_equal(media_decode_file(path, &a, NULL, 0), want);
}

static void expect_bytes_error(const void *data, size_t len, int want)
{
	char path[256];

	tmp_path(path, sizeof(path), "bad.wav");
	write_file(path, data, len);
	expect_decode_error(path, want);
}

/* Either of two codes will do (FFmpeg's probe decides which). */
static void expect_bytes_error_any(const void *data, size_t len, int want, int or_want)
{
	char path[256], err[256] = "";
	media_audio a;
	int rc;

	tmp_path(path, sizeof(path), "bad.bin");
	write_file(path, data, len);
	rc = media_decode_file(path, &a, err, sizeof(err));
	if (rc != want && rc != or_want)
		fail_msg("got %d (%s), want %s or %s; err: %s", rc, sayin_strerror(rc),
		         sayin_strerror(want), sayin_strerror(or_want), err);
	assert_true(strlen(err) > 0);
	assert_null(a.samples);
}

static void expect_spec_error(const struct wav_spec *s, int want)
{
	struct bytes b;

	build_wav(s, &b);
	expect_bytes_error(b.p, b.len, want);
	free(b.p);
}

static void test_decode_rejects_other_formats(void **state)
{
	unsigned char noise[4096];
	static const unsigned char mp3[] = "ID3\x03\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x64";
	static const unsigned char mp3_frame[] = "\xff\xfb\x90\x64\x00\x00\x00\x00\x00\x00\x00\x00";
	static const unsigned char ogg[] = "OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00";
	static const unsigned char avi[] = "RIFF\x10\x00\x00\x00" "AVI LIST\x04\x00\x00\x00";
	uint32_t x = 12345;

	(void)state;
	for (size_t i = 0; i < sizeof(noise); i++) {
		x = x * 1103515245u + 12345u;
		noise[i] = (unsigned char)(x >> 24);
	}
	noise[0] = 'X'; /* never "RIFF" by chance */
	expect_bytes_error(noise, sizeof(noise), SAYIN_EFORMAT);
	expect_bytes_error(avi, sizeof(avi) - 1, SAYIN_EFORMAT);
	expect_bytes_error("hi", 2, SAYIN_EFORMAT);
	/* Fragments of formats FFmpeg takes: recognised, but they do not decode. */
	expect_bytes_error_any(mp3, sizeof(mp3) - 1, SAYIN_EBADDATA, SAYIN_EFORMAT);
	expect_bytes_error_any(mp3_frame, sizeof(mp3_frame) - 1, SAYIN_EBADDATA, SAYIN_EFORMAT);
	expect_bytes_error_any(ogg, sizeof(ogg) - 1, SAYIN_EBADDATA, SAYIN_EFORMAT);
}

static void test_decode_rejects_truncated_data(void **state)
{
	struct wav_spec s = { .tag = 1, .channels = 2, .rate = 44100, .bits = 16, .frames = 4410 };
	struct bytes b;

	(void)state;
	build_wav(&s, &b);
	/* The data chunk claims more bytes than the file has. */
	expect_bytes_error(b.p, b.len - 1000, SAYIN_ETRUNCATED);
	expect_bytes_error(b.p, b.len - 4, SAYIN_ETRUNCATED);
	expect_bytes_error(b.p, b.len - 1, SAYIN_ETRUNCATED);
	/* A data size that ends inside a sample frame. */
	set_le32(&b, data_size_offset, (uint32_t)(s.frames * 4 - 1));
	expect_bytes_error(b.p, b.len - 1, SAYIN_ETRUNCATED);
	/* A streamed file cut inside a frame. */
	set_le32(&b, data_size_offset, 0xFFFFFFFFu);
	expect_bytes_error(b.p, b.len - 2, SAYIN_ETRUNCATED);
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
	build_wav(&s, &b);
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++)
		expect_bytes_error(b.p, cuts[i], SAYIN_ETRUNCATED);
	free(b.p);
	build_wav(&ext, &b);
	expect_bytes_error(b.p, 50, SAYIN_ETRUNCATED); /* inside the 40-byte fmt */
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
	build_wav(&s, &b);
	b.p[12 + 8 + 24 + 4] ^= 0xff;
	expect_bytes_error(b.p, b.len, SAYIN_EUNSUPPORTED);
	free(b.p);
}

static void add_chunk(struct bytes *b, const char *id, const void *data, uint32_t len)
{
	put(b, id, 4);
	put_le32(b, len);
	put(b, data, len);
	if (len & 1)
		put(b, "", 1);
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
	build_wav(&s, &b);
	b.p[12 + 8 + 12] = 3;
	expect_bytes_error(b.p, b.len, SAYIN_EFORMAT);
	free(b.p);
	/* Extensible with more valid bits than its container holds. */
	build_wav(&ext, &b);
	b.p[12 + 8 + 18] = 32;
	expect_bytes_error(b.p, b.len, SAYIN_EFORMAT);
	free(b.p);

	memset(&b, 0, sizeof(b));
	put(&b, "RIFF\0\0\0\0WAVE", 12);
	add_chunk(&b, "fmt ", fmt, 14); /* too short */
	add_chunk(&b, "data", samples, 8);
	set_le32(&b, 4, (uint32_t)b.len - 8);
	expect_bytes_error(b.p, b.len, SAYIN_EFORMAT);
	b.len = 12;
	add_chunk(&b, "fmt ", fmt, 16);
	add_chunk(&b, "fmt ", fmt, 16); /* twice */
	add_chunk(&b, "data", samples, 8);
	set_le32(&b, 4, (uint32_t)b.len - 8);
	expect_bytes_error(b.p, b.len, SAYIN_EFORMAT);
	b.len = 12;
	add_chunk(&b, "data", samples, 8); /* before fmt */
	add_chunk(&b, "fmt ", fmt, 16);
	set_le32(&b, 4, (uint32_t)b.len - 8);
	expect_bytes_error(b.p, b.len, SAYIN_EFORMAT);
	b.len = 12;
	add_chunk(&b, "fmt ", fmt, 16); /* and no data chunk, though complete */
	set_le32(&b, 4, (uint32_t)b.len - 8);
	expect_bytes_error(b.p, b.len, SAYIN_EFORMAT);
	b.len = 12; /* no chunks at all */
	set_le32(&b, 4, 4);
	expect_bytes_error(b.p, b.len, SAYIN_EFORMAT);
	/* The same, but the RIFF size says chunks were cut off. */
	set_le32(&b, 4, 1000);
	expect_bytes_error(b.p, b.len, SAYIN_ETRUNCATED);
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
	expect_bytes_error("", 0, SAYIN_EEMPTY);
	/* One frame at 192 kHz rounds to no sample at 48 kHz. */
	s.rate = 192000;
	s.frames = 1;
	expect_spec_error(&s, SAYIN_EEMPTY);
}

static void test_decode_file_errors(void **state)
{
	char path[256];

	(void)state;
	tmp_path(path, sizeof(path), "does-not-exist.wav");
	expect_decode_error(path, -ENOENT);
	expect_decode_error(tmp_dir, -EISDIR);
	assert_int_equal(media_decode_file(NULL, NULL, NULL, 0), SAYIN_EINVAL);
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
	build_wav(&s, &b);
	data = data_size_offset + 4;
	for (size_t i = 0; i < s.frames; i++) {
		uint32_t u;
		memcpy(&u, &bad[i % 5], 4);
		set_le32(&b, data + 4 * i, u);
	}
	tmp_path(path, sizeof(path), "nan.wav");
	write_file(path, b.p, b.len);
	free(b.p);
	assert_int_equal(media_decode_file(path, &a, err, sizeof(err)), 0);
	for (size_t i = 0; i < a.frames; i++)
		assert_true(isfinite(a.samples[i]) && fabsf(a.samples[i]) <= 1.0f);
	media_audio_free(&a);
}

static void test_audio_duration_and_free(void **state)
{
	media_audio a = { .input_rate = 44100, .input_frames = 88200 };

	(void)state;
	assert_true(media_audio_duration(&a) == 2.0);
	a.input_rate = 0;
	assert_true(media_audio_duration(&a) == 0.0);
	assert_true(media_audio_duration(NULL) == 0.0);
	media_audio_free(NULL);
	media_buffer_free(NULL);
}

/* ---- Ogg Opus ---------------------------------------------------------- */

/* Deterministic test signal: a 220 Hz tone with harmonics plus noise. */
static void make_audio(media_audio *a, size_t frames, unsigned input_rate)
{
	uint32_t x = 1;

	memset(a, 0, sizeof(*a));
	a->samples = malloc((frames ? frames : 1) * sizeof(float));
	assert_non_null(a->samples);
	a->frames = frames;
	a->input_rate = input_rate;
	a->input_channels = 1;
	a->input_frames = frames;
	for (size_t i = 0; i < frames; i++) {
		double t = (double)i / 48000.0;
		double v = 0.3 * sin(2 * M_PI * 220 * t) + 0.15 * sin(2 * M_PI * 660 * t) +
		           0.08 * sin(2 * M_PI * 1760 * t);
		x = x * 1103515245u + 12345u;
		v += 0.05 * ((double)(x >> 8) / (double)(1u << 24) - 0.5);
		a->samples[i] = (float)v;
	}
}

static int encoder_lookahead(void)
{
	int err, lookahead = -1;
	/* The application mode media.c uses; VOIP and AUDIO share the lookahead. */
	OpusEncoder *enc = opus_encoder_create(48000, 1, OPUS_APPLICATION_VOIP, &err);

	assert_non_null(enc);
	assert_int_equal(opus_encoder_ctl(enc, OPUS_GET_LOOKAHEAD(&lookahead)), OPUS_OK);
	opus_encoder_destroy(enc);
	return lookahead;
}

struct ogg_info {
	size_t n_pages;
	struct page_info {
		int64_t granule;
		bool bos, eos, continued;
		uint32_t serial;
		long seqno;
		size_t packets_done; /* packets that end on this page */
		size_t len;          /* header + body bytes */
	} pages[4096];
	size_t n_packets;
	struct {
		unsigned char *data;
		long len;
		size_t page; /* where it ends */
	} packets[8192];
};

/* Demuxes with libogg (which also checks every page's CRC) and asserts that
 * the whole buffer is pages of one logical stream. */
static struct ogg_info *parse_ogg(const media_buffer *buf)
{
	struct ogg_info *info = calloc(1, sizeof(*info));
	ogg_sync_state sync;
	ogg_stream_state os;
	ogg_page og;
	size_t total = 0;
	char *dst;

	assert_non_null(info);
	assert_true(buf->len >= 4 && memcmp(buf->data, "OggS", 4) == 0);
	ogg_sync_init(&sync);
	dst = ogg_sync_buffer(&sync, (long)buf->len);
	memcpy(dst, buf->data, buf->len);
	ogg_sync_wrote(&sync, (long)buf->len);
	for (;;) {
		int r = ogg_sync_pageout(&sync, &og);
		ogg_packet op;
		struct page_info *p;

		if (r == 0)
			break;
		assert_int_equal(r, 1); /* -1: garbage or a bad CRC */
		assert_true(info->n_pages < 4096);
		p = &info->pages[info->n_pages];
		p->granule = ogg_page_granulepos(&og);
		p->bos = ogg_page_bos(&og);
		p->eos = ogg_page_eos(&og);
		p->continued = ogg_page_continued(&og);
		p->serial = (uint32_t)ogg_page_serialno(&og);
		p->seqno = ogg_page_pageno(&og);
		p->len = (size_t)(og.header_len + og.body_len);
		total += p->len;
		if (info->n_pages == 0)
			assert_int_equal(ogg_stream_init(&os, ogg_page_serialno(&og)), 0);
		assert_int_equal(ogg_stream_pagein(&os, &og), 0);
		while ((r = ogg_stream_packetout(&os, &op)) != 0) {
			assert_int_equal(r, 1);
			assert_true(info->n_packets < 8192);
			info->packets[info->n_packets].data = malloc((size_t)op.bytes);
			assert_non_null(info->packets[info->n_packets].data);
			memcpy(info->packets[info->n_packets].data, op.packet, (size_t)op.bytes);
			info->packets[info->n_packets].len = op.bytes;
			info->packets[info->n_packets].page = info->n_pages;
			info->n_packets++;
			p->packets_done++;
		}
		info->n_pages++;
	}
	assert_int_equal(total, buf->len);
	ogg_stream_clear(&os);
	ogg_sync_clear(&sync);
	return info;
}

static void free_ogg(struct ogg_info *info)
{
	for (size_t i = 0; i < info->n_packets; i++)
		free(info->packets[i].data);
	free(info);
}

static void encode(const media_audio *a, const media_opus_options *o, media_buffer *out)
{
	char err[256] = "";
	int rc = media_encode_opus(a, o, out, err, sizeof(err));

	if (rc != 0)
		fail_msg("encode: %d %s", rc, err);
	assert_non_null(out->data);
}

static void test_encode_stream_layout(void **state)
{
	static const media_comment comments[] = {
		{ "TITLE", "Hello, fans" },
		{ "ARTIST", "Zoë" },
		{ "DESCRIPTION", "" },
	};
	media_opus_options o = { .bitrate = 32000, .complexity = -1, .serial = 0xdeadbeef,
		                 .comments = comments, .n_comments = 3 };
	media_audio a;
	media_buffer buf;
	struct ogg_info *info;
	int lookahead = encoder_lookahead();
	const unsigned char *head, *tags;
	size_t n_audio, pos, tags_page, audio_pages = 0;
	int64_t last_granule = 0;
	long min_len = 100000, max_len = 0;

	(void)state;
	make_audio(&a, 48000 * 3 + 123, 44100);
	encode(&a, &o, &buf);
	info = parse_ogg(&buf);

	/* Page 1: OpusHead alone, BOS. */
	assert_true(info->n_pages >= 3);
	assert_true(info->pages[0].bos);
	assert_false(info->pages[0].eos);
	assert_int_equal(info->pages[0].granule, 0);
	assert_int_equal(info->pages[0].packets_done, 1);
	assert_int_equal(info->packets[0].len, 19);
	head = info->packets[0].data;
	assert_memory_equal(head, "OpusHead", 8);
	assert_int_equal(head[8], 1);                              /* version */
	assert_int_equal(head[9], 1);                              /* channels */
	assert_int_equal(head[10] | head[11] << 8, lookahead);     /* pre-skip */
	assert_int_equal(get_le32(head + 12), 44100);              /* input rate */
	assert_int_equal(head[16] | head[17] << 8, 0);             /* gain */
	assert_int_equal(head[18], 0);                             /* mapping family */

	/* OpusTags: vendor and comments, on pages of its own. */
	assert_true(info->n_packets >= 3);
	tags = info->packets[1].data;
	assert_memory_equal(tags, "OpusTags", 8);
	{
		uint32_t vlen = get_le32(tags + 8);
		const char *want[] = { "TITLE=Hello, fans", "ARTIST=Zoë", "DESCRIPTION=" };

		assert_true(vlen >= 6 && memcmp(tags + 12, "sayin ", 6) == 0);
		pos = 12 + vlen;
		assert_int_equal(get_le32(tags + pos), 3);
		pos += 4;
		for (size_t i = 0; i < 3; i++) {
			uint32_t clen = get_le32(tags + pos);
			assert_int_equal(clen, strlen(want[i]));
			assert_memory_equal(tags + pos + 4, want[i], clen);
			pos += 4 + clen;
		}
		assert_int_equal(pos, (size_t)info->packets[1].len);
	}
	tags_page = info->packets[1].page;
	assert_int_equal(info->pages[tags_page].packets_done, 1);
	assert_int_equal(info->pages[tags_page].granule, 0);
	/* Audio starts on a fresh page. */
	assert_false(info->pages[tags_page + 1].continued);
	assert_int_equal(info->packets[2].page > tags_page, 1);

	/* Audio: ceil((frames + pre-skip) / 960) packets of 20 ms. */
	n_audio = info->n_packets - 2;
	assert_int_equal(n_audio, (a.frames + (size_t)lookahead + 959) / 960);
	for (size_t i = 2; i < info->n_packets; i++) {
		assert_int_equal(opus_packet_get_nb_samples(info->packets[i].data,
		                                            (opus_int32)info->packets[i].len, 48000),
		                 960);
		assert_int_equal(opus_packet_get_nb_channels(info->packets[i].data), 1);
		if (info->packets[i].len < min_len)
			min_len = info->packets[i].len;
		if (info->packets[i].len > max_len)
			max_len = info->packets[i].len;
	}
	/* VBR: packet sizes follow the signal (CBR would make them all equal). */
	assert_true(max_len > min_len + 10);

	/* Every page: one serial, consecutive sequence numbers; EOS only last. */
	for (size_t i = 0; i < info->n_pages; i++) {
		const struct page_info *p = &info->pages[i];

		assert_int_equal(p->serial, 0xdeadbeef);
		assert_int_equal(p->seqno, (long)i);
		assert_int_equal(p->bos, i == 0);
		assert_int_equal(p->eos, i + 1 == info->n_pages);
		if (i <= tags_page)
			continue;
		audio_pages++;
		if (p->packets_done == 0) {
			assert_int_equal(p->granule, -1);
			continue;
		}
		/* Granule = samples decoded up to the page's last complete packet. */
		if (i + 1 < info->n_pages) {
			size_t done = 0;
			for (size_t k = 2; k < info->n_packets; k++)
				done += info->packets[k].page <= i;
			assert_int_equal(p->granule, (int64_t)(done * 960));
		}
		assert_true(p->granule > last_granule);
		/* Pages stay around a second long or shorter. */
		assert_true(p->granule - last_granule <= 48000);
		last_granule = p->granule;
	}
	assert_true(audio_pages >= 3);
	/* End trimming: exactly the input's samples after pre-skip. */
	assert_int_equal(info->pages[info->n_pages - 1].granule, lookahead + (int64_t)a.frames);
	assert_int_equal(info->packets[info->n_packets - 1].page, info->n_pages - 1);

	free_ogg(info);
	media_buffer_free(&buf);
	assert_null(buf.data);
	assert_int_equal(buf.len, 0);
	media_audio_free(&a);
}

/* Short inputs and inputs whose padded length lands exactly on a packet. */
static void test_encode_lengths(void **state)
{
	int lookahead = encoder_lookahead();
	const size_t lengths[] = { 1, 2, (size_t)(960 - lookahead), (size_t)(961 - lookahead), 960,
		                   1919, 48000, (size_t)(48000 * 2 - lookahead) };
	media_opus_options o = { .complexity = -1, .serial = 7 };

	(void)state;
	for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
		media_audio a;
		media_buffer buf;
		struct ogg_info *info;
		size_t want_packets = (lengths[i] + (size_t)lookahead + 959) / 960;

		make_audio(&a, lengths[i], 48000);
		encode(&a, &o, &buf);
		info = parse_ogg(&buf);
		assert_int_equal(info->n_packets - 2, want_packets);
		assert_true(info->pages[info->n_pages - 1].eos);
		assert_int_equal(info->pages[info->n_pages - 1].granule,
		                 lookahead + (int64_t)lengths[i]);
		free_ogg(info);
		media_buffer_free(&buf);
		media_audio_free(&a);
	}
}

/* Decodes the packets with libopus and applies pre-skip and end trimming as
 * RFC 7845 says a player must. Returns the samples; *n receives the count. */
static float *decode_stream(const media_buffer *buf, size_t *n)
{
	struct ogg_info *info = parse_ogg(buf);
	int err, preskip = info->packets[0].data[10] | info->packets[0].data[11] << 8;
	OpusDecoder *dec = opus_decoder_create(48000, 1, &err);
	size_t total = (info->n_packets - 2) * 960, have = 0;
	int64_t end = info->pages[info->n_pages - 1].granule - preskip;
	float *pcm = malloc(total * sizeof(float));
	float *out;

	assert_non_null(dec);
	assert_non_null(pcm);
	for (size_t i = 2; i < info->n_packets; i++) {
		int got = opus_decode_float(dec, info->packets[i].data, (opus_int32)info->packets[i].len,
		                            pcm + have, 960, 0);
		assert_int_equal(got, 960);
		have += 960;
	}
	assert_true(end > 0 && (size_t)end + (size_t)preskip <= total);
	out = malloc((size_t)end * sizeof(float));
	assert_non_null(out);
	memcpy(out, pcm + preskip, (size_t)end * sizeof(float));
	*n = (size_t)end;
	free(pcm);
	opus_decoder_destroy(dec);
	free_ogg(info);
	return out;
}

static double rms(const float *x, size_t n)
{
	double sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += (double)x[i] * x[i];
	return sqrt(sum / (double)n);
}

/* Pre-skip lines decoded audio up with the input, and the tail survives:
 * silence, then a tone that runs to the very last sample. */
static void test_encode_alignment_and_tail(void **state)
{
	const size_t onset = 24000, frames = 48000 + 500;
	media_opus_options o = { .complexity = -1, .serial = 1 };
	media_audio a;
	media_buffer buf;
	float *y;
	size_t n, first = 0;

	(void)state;
	make_audio(&a, frames, 48000);
	for (size_t i = 0; i < frames; i++)
		a.samples[i] = i < onset ? 0.0f
		                         : (float)(0.5 * sin(2 * M_PI * 440 * (double)(i - onset) / 48000));
	encode(&a, &o, &buf);
	y = decode_stream(&buf, &n);
	assert_int_equal(n, frames);
	while (first < n && fabsf(y[first]) < 0.25f)
		first++;
	/* The input first reaches 0.25 nine samples after the onset; without
	 * pre-skip it would come 312 samples late. */
	if (first + 16 < onset + 9 || first > onset + 9 + 16)
		fail_msg("tone starts at %zu, want about %zu", first, onset + 9);
	assert_true(rms(y, onset - 960) < 0.01);
	assert_true(rms(y + onset + 2400, frames - onset - 2400 - 480) > 0.3);
	/* The last 10 ms are still the tone, not silence lost in the lookahead. */
	if (rms(y + n - 480, 480) < 0.25)
		fail_msg("tail rms %f", rms(y + n - 480, 480));
	free(y);
	media_buffer_free(&buf);
	media_audio_free(&a);
}

static void test_encode_deterministic(void **state)
{
	static const media_comment c[] = { { "TITLE", "x" } };
	media_opus_options o = { .complexity = -1, .serial = 42, .comments = c, .n_comments = 1 };
	media_audio a;
	media_buffer one, two, other;

	(void)state;
	make_audio(&a, 48000 * 2, 48000);
	encode(&a, &o, &one);
	encode(&a, &o, &two);
	assert_int_equal(one.len, two.len);
	assert_memory_equal(one.data, two.data, one.len);
	/* The serial is in every page header, so it changes the bytes. */
	o.serial = 43;
	encode(&a, &o, &other);
	assert_true(other.len != one.len || memcmp(other.data, one.data, one.len) != 0);
	assert_int_equal(get_le32(one.data + 14), 42);
	assert_int_equal(get_le32(other.data + 14), 43);
	media_buffer_free(&one);
	media_buffer_free(&two);
	media_buffer_free(&other);
	media_audio_free(&a);
}

/* Defaults resolve to the documented values; the options reach libopus. */
static void test_encode_options(void **state)
{
	media_opus_options o = { .bitrate = 0, .complexity = -1, .serial = 5 };
	media_audio a;
	media_buffer def, explicit_opts, low, high;

	(void)state;
	make_audio(&a, 48000 * 2, 48000);
	encode(&a, &o, &def);
	o.bitrate = 32000;
	o.complexity = 10;
	encode(&a, &o, &explicit_opts);
	assert_int_equal(def.len, explicit_opts.len);
	assert_memory_equal(def.data, explicit_opts.data, def.len);
	o.complexity = 0;
	encode(&a, &o, &low);
	assert_true(low.len != def.len || memcmp(low.data, def.data, def.len) != 0);
	o.complexity = 10;
	o.bitrate = 96000;
	encode(&a, &o, &high);
	assert_true(high.len > def.len * 2);
	media_buffer_free(&def);
	media_buffer_free(&explicit_opts);
	media_buffer_free(&low);
	media_buffer_free(&high);
	media_audio_free(&a);
}

/* 5 s of tone and noise at 32 kb/s averages close to 32 kb/s. */
static void test_encode_bitrate(void **state)
{
	media_opus_options o = { .bitrate = 32000, .complexity = -1, .serial = 9 };
	media_audio a;
	media_buffer buf;
	struct ogg_info *info;
	size_t payload = 0;
	double kbps;

	(void)state;
	make_audio(&a, 48000 * 5, 48000);
	encode(&a, &o, &buf);
	info = parse_ogg(&buf);
	for (size_t i = 2; i < info->n_packets; i++)
		payload += (size_t)info->packets[i].len;
	kbps = (double)payload * 8 / 5.0 / 1000.0;
	if (kbps < 22 || kbps > 42)
		fail_msg("%.1f kb/s at a 32 kb/s target", kbps);
	/* Whole-file rate, Ogg overhead included, stays sane too. */
	assert_true((double)buf.len * 8 / 5.0 / 1000.0 < 45);
	free_ogg(info);
	media_buffer_free(&buf);

	/* At 6 kb/s pages still close about every second. */
	o.bitrate = 6000;
	encode(&a, &o, &buf);
	info = parse_ogg(&buf);
	for (size_t i = 3; i < info->n_pages; i++) {
		if (info->pages[i - 1].granule > 0 && info->pages[i].granule > 0)
			assert_true(info->pages[i].granule - info->pages[i - 1].granule <= 48000);
	}
	assert_true(info->n_pages >= 2 + 5);
	free_ogg(info);
	media_buffer_free(&buf);
	media_audio_free(&a);
}

static void expect_encode_error(const media_audio *a, const media_opus_options *o, int want)
{
	media_buffer buf;
	char err[256] = "";
	int rc;

	memset(&buf, 0xab, sizeof(buf));
	rc = media_encode_opus(a, o, &buf, err, sizeof(err));
	if (rc != want)
		fail_msg("got %d (%s), want %d; err: %s", rc, sayin_strerror(rc), want, err);
	assert_true(strlen(err) > 0);
	assert_null(buf.data);
	assert_int_equal(buf.len, 0);
}

static void test_encode_rejects_bad_input(void **state)
{
	static const media_comment eq[] = { { "A=B", "x" } };
	static const media_comment empty_key[] = { { "", "x" } };
	static const media_comment null_value[] = { { "TITLE", NULL } };
	static const media_comment ctl[] = { { "TI\nTLE", "x" } };
	media_audio a, none = { 0 };
	media_opus_options o = { .complexity = -1 };

	(void)state;
	make_audio(&a, 960, 48000);
	o.bitrate = 5999;
	expect_encode_error(&a, &o, SAYIN_EINVAL);
	o.bitrate = 510001;
	expect_encode_error(&a, &o, SAYIN_EINVAL);
	o.bitrate = -1;
	expect_encode_error(&a, &o, SAYIN_EINVAL);
	o.bitrate = 0;
	o.complexity = 11;
	expect_encode_error(&a, &o, SAYIN_EINVAL);
	o.complexity = -2;
	expect_encode_error(&a, &o, SAYIN_EINVAL);
	o.complexity = -1;
	o.comments = eq;
	o.n_comments = 1;
	expect_encode_error(&a, &o, SAYIN_EINVAL);
	o.comments = empty_key;
	expect_encode_error(&a, &o, SAYIN_EINVAL);
	o.comments = null_value;
	expect_encode_error(&a, &o, SAYIN_EINVAL);
	o.comments = ctl;
	expect_encode_error(&a, &o, SAYIN_EINVAL);
	o.comments = NULL;
	expect_encode_error(&a, &o, SAYIN_EINVAL);
	o.n_comments = 0;
	expect_encode_error(&none, &o, SAYIN_EEMPTY);
	expect_encode_error(NULL, &o, SAYIN_EINVAL);
	assert_int_equal(media_encode_opus(&a, &o, NULL, NULL, 0), SAYIN_EINVAL);
	media_audio_free(&a);
}

/* ---- independent validation with opus-tools and ffprobe ------------------ */

static bool have_tool(const char *name)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
	return system(cmd) == 0;
}

static int run(const char *cmd)
{
	int status = system(cmd);

	assert_true(status != -1);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static bool file_contains(const char *path, const char *needle)
{
	char line[1024];
	bool found = false;
	FILE *f = fopen(path, "r");

	assert_non_null(f);
	while (!found && fgets(line, sizeof(line), f) != NULL)
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

/* A recording goes WAV -> media -> .opus, then opusinfo must accept it without
 * warnings and opusdec must give back exactly the decoded frame count. */
static void test_encode_validates_with_tools(void **state)
{
	struct wav_spec s = { .tag = 1, .channels = 2, .rate = 44100, .bits = 16, .frames = 44100 * 3 + 17 };
	static const media_comment c[] = { { "TITLE", "tools" } };
	media_opus_options o = { .complexity = -1, .serial = 99, .comments = c, .n_comments = 1 };
	char wav[256], opus[256], logfile[256], back[256], cmd[1200], err[256];
	media_audio a, decoded;
	media_buffer buf;
	bool any = false;

	(void)state;
	write_wav("tools.wav", &s, wav, sizeof(wav));
	assert_int_equal(media_decode_file(wav, &a, err, sizeof(err)), 0);
	encode(&a, &o, &buf);
	tmp_path(opus, sizeof(opus), "tools.opus");
	tmp_path(logfile, sizeof(logfile), "tools.log");
	tmp_path(back, sizeof(back), "tools-back.wav");
	write_file(opus, buf.data, buf.len);

	if (have_tool("opusinfo")) {
		any = true;
		snprintf(cmd, sizeof(cmd), "opusinfo '%s' >'%s' 2>&1", opus, logfile);
		assert_int_equal(run(cmd), 0);
		assert_false(file_contains(logfile, "WARNING"));
		assert_false(file_contains(logfile, "rror"));
		assert_true(file_contains(logfile, "Original sample rate: 44100 Hz"));
		assert_true(file_contains(logfile, "TITLE=tools"));
	}
	if (have_tool("opusdec")) {
		any = true;
		snprintf(cmd, sizeof(cmd), "opusdec --quiet --rate 48000 '%s' '%s' >'%s' 2>&1", opus,
		         back, logfile);
		assert_int_equal(run(cmd), 0);
		assert_int_equal(media_decode_file(back, &decoded, err, sizeof(err)), 0);
		assert_int_equal(decoded.input_rate, 48000);
		assert_int_equal(decoded.input_frames, a.frames);
		media_audio_free(&decoded);
	}
	if (have_tool("ffprobe")) {
		any = true;
		snprintf(cmd, sizeof(cmd),
		         "ffprobe -v error -show_entries stream=codec_name,channels -of csv=p=0 "
		         "'%s' >'%s' 2>&1",
		         opus, logfile);
		assert_int_equal(run(cmd), 0);
		assert_true(file_contains(logfile, "opus,1"));
	}
	media_buffer_free(&buf);
	media_audio_free(&a);
	if (!any)
		skip();
}


/* ---- loudness, limiter and the isolated pipeline ------------------------ */

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
	float *y = decode_stream(buf, &n);
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
	build_wav(&s, &b);
	/* Bursts of a harmonic tone with noise at about -30 dBFS: quiet and peaky. */
	data = data_size_offset + 4;
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
	tmp_path(path, sizeof(path), "quiet.wav");
	write_file(path, b.p, b.len);
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
		struct ogg_info *info = parse_ogg(&r.opus);
		assert_int_equal(info->packets[0].data[16] | info->packets[0].data[17] << 8, 0);
		free_ogg(info);
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
	write_wav("tone2s.wav", &tone, path, sizeof(path));
	o.max_duration_ms = 1000;
	expect_transcode_error(path, &o, SAYIN_ETOOLONG, "too long");
	o.max_duration_ms = 0;
	o.max_input_bytes = 1000;
	expect_transcode_error(path, &o, SAYIN_ETOOLARGE, "too large");
	o.max_input_bytes = 0;

	build_wav(&silent, &b);
	memset(b.p + data_size_offset + 4, 0, silent.frames * 2);
	tmp_path(quiet, sizeof(quiet), "silent.wav");
	write_file(quiet, b.p, b.len);
	expect_transcode_error(quiet, &o, SAYIN_ESILENT, "silent");
	/* The child's strict WAV reader still refuses a cut-off file. */
	tmp_path(cut, sizeof(cut), "cut.wav");
	write_file(cut, b.p, b.len - 101);
	expect_transcode_error(cut, &o, SAYIN_ETRUNCATED, "remain");
	free(b.p);
	tmp_path(cut, sizeof(cut), "empty.wav");
	write_file(cut, "", 0);
	expect_transcode_error(cut, &o, SAYIN_EEMPTY, "empty");
	write_file(cut, "just some text, not audio at all\n", 33);
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
	write_wav("crash.wav", &tone, path, sizeof(path));
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

/* FFmpeg decodes what the ffmpeg tool wrote: FLAC is lossless, so it must
 * give exactly what the WAV reader gives for the same samples. */
static void test_decode_flac_matches_wav(void **state)
{
	struct wav_spec s = { .tag = 1, .channels = 2, .rate = 44100, .bits = 16, .frames = 22050 };
	char wav[256], flac[256], cmd[700], err[256];
	media_audio a, f;

	(void)state;
	if (!have_tool("ffmpeg"))
		skip();
	write_wav("lossless.wav", &s, wav, sizeof(wav));
	tmp_path(flac, sizeof(flac), "lossless.flac");
	snprintf(cmd, sizeof(cmd), "ffmpeg -nostdin -loglevel error -y -i '%s' -c:a flac '%s'", wav,
	         flac);
	assert_int_equal(run(cmd), 0);
	assert_int_equal(media_decode_file(wav, &a, err, sizeof(err)), 0);
	if (media_decode_file(flac, &f, err, sizeof(err)) != 0)
		fail_msg("flac: %s", err);
	assert_string_equal(f.input_format, "flac/flac");
	assert_int_equal(f.input_rate, 44100);
	assert_int_equal(f.input_channels, 2);
	assert_int_equal(f.input_frames, s.frames);
	assert_int_equal(f.frames, a.frames);
	assert_memory_equal(f.samples, a.samples, a.frames * sizeof(float));
	media_audio_free(&a);
	media_audio_free(&f);
	/* Cut in half, the FLAC says it is shorter than its header declares. */
	snprintf(cmd, sizeof(cmd), "truncate -s 40000 '%s'", flac);
	assert_int_equal(run(cmd), 0);
	expect_decode_error(flac, SAYIN_EBADDATA);
}

/* ---- the waveform ------------------------------------------------------- */

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
	write_wav("wf.wav", &s, path, sizeof(path));
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

/* ---- the M4A rendition -------------------------------------------------- */

static uint32_t get_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The top-level box types of an ISO BMFF file, in order, as "ftyp moov mdat"
 * (fails on a box running past the end). */
static void top_level_boxes(const media_buffer *b, char *out, size_t len)
{
	size_t pos = 0, n = 0;

	out[0] = '\0';
	while (pos < b->len) {
		uint64_t size;

		assert_true(b->len - pos >= 8);
		size = get_be32(b->data + pos);
		if (size == 1) {
			assert_true(b->len - pos >= 16);
			size = (uint64_t)get_be32(b->data + pos + 8) << 32 | get_be32(b->data + pos + 12);
		} else if (size == 0) {
			size = b->len - pos;
		}
		assert_true(size >= 8 && size <= b->len - pos);
		assert_true(n + 6 < len);
		n += (size_t)snprintf(out + n, len - n, "%s%.4s", n ? " " : "", b->data + pos + 4);
		pos += (size_t)size;
	}
}

/* A stream's value by ffprobe, e.g. "stream=codec_name" -> "aac". */
static void probe(const char *path, const char *entries, char *out, size_t len)
{
	char cmd[600], logfile[256];
	FILE *f;

	tmp_path(logfile, sizeof(logfile), "probe.txt");
	snprintf(cmd, sizeof(cmd), "ffprobe -v error -select_streams a:0 -show_entries %s "
	         "-of default=nw=1:nk=1 '%s' >'%s' 2>&1", entries, path, logfile);
	assert_int_equal(run(cmd), 0);
	f = fopen(logfile, "r");
	assert_non_null(f);
	if (fgets(out, (int)len, f) == NULL)
		out[0] = '\0';
	fclose(f);
	out[strcspn(out, "\n")] = '\0';
}

/* What FFmpeg's own mov muxer (ipod, +faststart, bitexact) writes for the
 * same packets: the encoder set up as aac.c does, its packets muxed into a
 * file by libavformat. The reference for our streaming M4A writer. */
static void ffmpeg_m4a(const media_audio *a, const char *coder, int bitrate, const char *path,
                       media_buffer *out)
{
	const AVCodec *codec = avcodec_find_encoder_by_name("aac");
	AVCodecContext *enc = avcodec_alloc_context3(codec);
	AVFormatContext *fmt = NULL;
	AVDictionary *opts = NULL;
	AVFrame *frame = av_frame_alloc();
	AVPacket *pkt = av_packet_alloc();
	AVStream *st;
	FILE *f;
	long len;

	assert_non_null(enc);
	enc->sample_fmt = AV_SAMPLE_FMT_FLTP;
	enc->sample_rate = MEDIA_RATE;
	av_channel_layout_default(&enc->ch_layout, 1);
	enc->bit_rate = bitrate;
	enc->profile = FF_PROFILE_AAC_LOW;
	enc->time_base = (AVRational){ 1, MEDIA_RATE };
	enc->flags |= AV_CODEC_FLAG_BITEXACT | AV_CODEC_FLAG_GLOBAL_HEADER;
	enc->thread_count = 1;
	av_dict_set(&opts, "aac_coder", coder, 0);
	assert_true(avcodec_open2(enc, codec, &opts) >= 0);
	av_dict_free(&opts);

	assert_true(avformat_alloc_output_context2(&fmt, NULL, "ipod", path) >= 0);
	fmt->flags |= AVFMT_FLAG_BITEXACT;
	st = avformat_new_stream(fmt, NULL);
	st->time_base = enc->time_base;
	assert_true(avcodec_parameters_from_context(st->codecpar, enc) >= 0);
	assert_true(avio_open(&fmt->pb, path, AVIO_FLAG_WRITE) >= 0);
	av_dict_set(&opts, "movflags", "+faststart", 0);
	assert_true(avformat_write_header(fmt, &opts) >= 0);
	av_dict_free(&opts);

	for (size_t done = 0;; done += (size_t)enc->frame_size) {
		int r;
		if (done < a->frames) {
			size_t n = a->frames - done < (size_t)enc->frame_size ? a->frames - done
			                                                    : (size_t)enc->frame_size;
			frame->format = AV_SAMPLE_FMT_FLTP;
			frame->sample_rate = MEDIA_RATE;
			frame->nb_samples = enc->frame_size;
			av_channel_layout_copy(&frame->ch_layout, &enc->ch_layout);
			if (frame->data[0] == NULL)
				assert_true(av_frame_get_buffer(frame, 0) >= 0);
			assert_true(av_frame_make_writable(frame) >= 0);
			memcpy(frame->data[0], a->samples + done, n * sizeof(float));
			frame->nb_samples = (int)n;
			frame->pts = (int64_t)done;
			assert_true(avcodec_send_frame(enc, frame) >= 0);
		} else {
			assert_true(avcodec_send_frame(enc, NULL) >= 0);
		}
		while ((r = avcodec_receive_packet(enc, pkt)) >= 0) {
			pkt->stream_index = st->index;
			av_packet_rescale_ts(pkt, enc->time_base, st->time_base);
			assert_true(av_write_frame(fmt, pkt) >= 0);
		}
		if (r == AVERROR_EOF)
			break;
	}
	assert_true(av_write_trailer(fmt) >= 0);
	avio_closep(&fmt->pb);
	avformat_free_context(fmt);
	av_frame_free(&frame);
	av_packet_free(&pkt);
	avcodec_free_context(&enc);

	f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	len = ftell(f);
	rewind(f);
	out->data = malloc((size_t)len);
	out->len = (size_t)len;
	assert_int_equal(fread(out->data, 1, out->len, f), out->len);
	fclose(f);
}

/* Our streaming M4A writer (mp4.c) writes what FFmpeg's mov muxer writes,
 * byte for byte: lengths around whole AAC frames and odd milliseconds (the
 * edit list's rounding), both coders, two bitrates. */
static void test_m4a_same_bytes_as_ffmpeg_muxer(void **state)
{
	static const size_t lengths[] = { 1000, 1024, 19200, 48000 + 1, 59256, 96777, 48000 * 7 + 3 };
	static const struct {
		const char *coder;
		int bitrate;
	} encoders[] = { { "fast", 48000 }, { "twoloop", 64000 } };
	char path[256], err[256];

	(void)state;
	tmp_path(path, sizeof(path), "reference.m4a");
	for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
		for (size_t e = 0; e < sizeof(encoders) / sizeof(encoders[0]); e++) {
			media_aac_options opt = { .bitrate = encoders[e].bitrate,
				                  .coder = encoders[e].coder };
			media_audio a;
			media_buffer ours, theirs;

			make_audio(&a, lengths[i], 48000);
			assert_int_equal(media_encode_m4a(&a, &opt, &ours, err, sizeof(err)), 0);
			ffmpeg_m4a(&a, encoders[e].coder, encoders[e].bitrate, path, &theirs);
			if (ours.len != theirs.len || memcmp(ours.data, theirs.data, ours.len) != 0) {
				size_t at = 0;
				char mine[256];
				while (at < ours.len && at < theirs.len && ours.data[at] == theirs.data[at])
					at++;
				tmp_path(mine, sizeof(mine), "ours.m4a");
				write_file(mine, ours.data, ours.len);
				fail_msg("%zu samples, %s: %zu bytes against FFmpeg's %zu, first "
				         "difference at byte %zu (%s, %s)", lengths[i], encoders[e].coder,
				         ours.len, theirs.len, at, mine, path);
			}
			media_buffer_free(&ours);
			media_buffer_free(&theirs);
			media_audio_free(&a);
		}
	}
}

/* The M4A writer's output is AAC-LC, mono, 48 kHz, moov before mdat, plays
 * in FFmpeg without a word on stderr, lasts as long as its input (the
 * encoder delay is trimmed by an edit list), and is the same bytes twice. */
static void test_m4a_valid_faststart_deterministic(void **state)
{
	media_audio a;
	media_buffer m, again;
	media_aac_options opt = { 0 };
	char path[256], logfile[256], cmd[800], err[256], boxes[64], v[128];
	size_t frames = 48000 * 2 + 777; /* not a whole number of AAC frames */

	(void)state;
	make_audio(&a, frames, 44100);
	assert_int_equal(media_encode_m4a(&a, &opt, &m, err, sizeof(err)), 0);
	assert_int_equal(media_encode_m4a(&a, &opt, &again, err, sizeof(err)), 0);
	assert_int_equal(m.len, again.len);
	assert_memory_equal(m.data, again.data, m.len);
	media_buffer_free(&again);

	top_level_boxes(&m, boxes, sizeof(boxes));
	/* ftyp first with the M4A brand, then moov, then the data. */
	assert_memory_equal(m.data + 4, "ftypM4A ", 8);
	assert_non_null(strstr(boxes, "moov"));
	assert_non_null(strstr(boxes, "mdat"));
	if (strstr(boxes, "moov") > strstr(boxes, "mdat"))
		fail_msg("moov after mdat (no faststart): %s", boxes);
	/* No encoder string, no wall-clock creation time. */
	assert_null(memmem(m.data, m.len, "Lavf", 4));
	assert_null(memmem(m.data, m.len, "Lavc", 4));

	tmp_path(path, sizeof(path), "fallback.m4a");
	write_file(path, m.data, m.len);
	if (!have_tool("ffprobe") || !have_tool("ffmpeg")) {
		media_buffer_free(&m);
		media_audio_free(&a);
		skip();
	}
	tmp_path(logfile, sizeof(logfile), "m4a.log");
	snprintf(cmd, sizeof(cmd), "ffmpeg -nostdin -v error -i '%s' -f null - >'%s' 2>&1", path,
	         logfile);
	assert_int_equal(run(cmd), 0);
	{
		struct stat st;
		assert_int_equal(stat(logfile, &st), 0);
		if (st.st_size != 0)
			fail_msg("ffmpeg complains about the M4A (see %s)", logfile);
	}
	probe(path, "stream=codec_name", v, sizeof(v));
	assert_string_equal(v, "aac");
	probe(path, "stream=profile", v, sizeof(v));
	assert_string_equal(v, "LC");
	probe(path, "stream=channels", v, sizeof(v));
	assert_string_equal(v, "1");
	probe(path, "stream=sample_rate", v, sizeof(v));
	assert_string_equal(v, "48000");
	probe(path, "format=duration", v, sizeof(v));
	if (fabs(atof(v) - (double)frames / 48000.0) > 0.050)
		fail_msg("duration %s s, input %.3f s", v, (double)frames / 48000.0);
	media_buffer_free(&m);
	media_audio_free(&a);
}

static void test_m4a_options(void **state)
{
	media_audio a, empty = { 0 };
	media_buffer lo, hi;
	media_aac_options opt = { .bitrate = 32000 };
	char err[256];

	(void)state;
	make_audio(&a, 48000 * 3, 48000);
	assert_int_equal(media_encode_m4a(&a, &opt, &lo, err, sizeof(err)), 0);
	opt.bitrate = 128000;
	assert_int_equal(media_encode_m4a(&a, &opt, &hi, err, sizeof(err)), 0);
	/* 3 s at 32 and 128 kb/s: about 12 and 48 kB. */
	assert_in_range(lo.len, 6000, 20000);
	assert_true(hi.len > 2 * lo.len);
	media_buffer_free(&lo);
	media_buffer_free(&hi);
	opt.bitrate = 16000;
	assert_int_equal(media_encode_m4a(&a, &opt, &lo, err, sizeof(err)), SAYIN_EINVAL);
	assert_non_null(strstr(err, "bitrate"));
	assert_null(lo.data);
	opt.bitrate = 0;
	assert_int_equal(media_encode_m4a(&empty, &opt, &lo, err, sizeof(err)), SAYIN_EEMPTY);
	assert_int_equal(media_encode_m4a(NULL, &opt, &lo, err, sizeof(err)), SAYIN_EINVAL);
	media_audio_free(&a);
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
	write_wav("fallback.wav", &s, path, sizeof(path));
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
	if (have_tool("ffprobe")) {
		tmp_path(m4a, sizeof(m4a), "pipeline.m4a");
		write_file(m4a, r.m4a.data, r.m4a.len);
		probe(m4a, "format=duration", v, sizeof(v));
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

/* ---- runner -------------------------------------------------------------- */

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
	write_wav("faults.wav", &s, path, sizeof(path));
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

static int setup_dir(void **state)
{
	(void)state;
	return mkdtemp(tmp_dir) == NULL ? -1 : 0;
}

static int remove_dir(void **state)
{
	char cmd[300];

	(void)state;
	/* The directory name comes from mkdtemp: no quoting issues. */
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
	return system(cmd) == 0 ? 0 : -1;
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
		cmocka_unit_test(test_decode_rejects_other_formats),
		cmocka_unit_test(test_decode_rejects_truncated_data),
		cmocka_unit_test(test_decode_rejects_truncated_header),
		cmocka_unit_test(test_decode_rejects_unsupported),
		cmocka_unit_test(test_decode_rejects_malformed),
		cmocka_unit_test(test_decode_empty),
		cmocka_unit_test(test_decode_file_errors),
		cmocka_unit_test(test_decode_float_sanitized),
		cmocka_unit_test(test_audio_duration_and_free),
		cmocka_unit_test(test_encode_stream_layout),
		cmocka_unit_test(test_encode_lengths),
		cmocka_unit_test(test_encode_alignment_and_tail),
		cmocka_unit_test(test_encode_deterministic),
		cmocka_unit_test(test_encode_options),
		cmocka_unit_test(test_encode_bitrate),
		cmocka_unit_test(test_encode_rejects_bad_input),
		cmocka_unit_test(test_encode_validates_with_tools),
		cmocka_unit_test(test_limiter_ceiling_and_latency),
		cmocka_unit_test(test_transcode_normalizes),
		cmocka_unit_test(test_transcode_rejections),
		cmocka_unit_test(test_transcode_survives_decoder_crash_and_hang),
		cmocka_unit_test(test_decode_flac_matches_wav),
		cmocka_unit_test(test_waveform_known_signal),
		cmocka_unit_test(test_waveform_points_and_json),
		cmocka_unit_test(test_waveform_rejects),
		cmocka_unit_test(test_transcode_waveform),
		cmocka_unit_test(test_m4a_valid_faststart_deterministic),
		cmocka_unit_test(test_m4a_same_bytes_as_ffmpeg_muxer),
		cmocka_unit_test(test_m4a_options),
		cmocka_unit_test(test_transcode_m4a),
		cmocka_unit_test(test_transcode_thread_faults),
		cmocka_unit_test(test_peak_meter),
	};

	/* The pipeline tests run this binary as their decoder child. */
	if (argc >= 2 && strcmp(argv[1], MEDIA_DECODER_COMMAND) == 0)
		return media_decoder_main(argc, argv);

	return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}

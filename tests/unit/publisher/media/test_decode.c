/* test_decode: media_decode_file beyond WAV: formats it refuses, file errors,
 * FFmpeg decoding (FLAC against its WAV) and the audio helpers. Shared fixtures:
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

/* Either of two codes will do (FFmpeg's probe decides which). */
static void expect_bytes_error_any(const void *data, size_t len, int want, int or_want)
{
	char path[256], err[256] = "";
	media_audio a;
	int rc;

	mtest_tmp_path(path, sizeof(path), "bad.bin");
	mtest_write_file(path, data, len);
	rc = media_decode_file(path, &a, err, sizeof(err));
	if (rc != want && rc != or_want)
		fail_msg("got %d (%s), want %s or %s; err: %s", rc, sayin_strerror(rc),
		         sayin_strerror(want), sayin_strerror(or_want), err);
	assert_true(strlen(err) > 0);
	assert_null(a.samples);
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
	mtest_expect_bytes_error(noise, sizeof(noise), SAYIN_EFORMAT);
	mtest_expect_bytes_error(avi, sizeof(avi) - 1, SAYIN_EFORMAT);
	mtest_expect_bytes_error("hi", 2, SAYIN_EFORMAT);
	/* Fragments of formats FFmpeg takes: recognised, but they do not decode. */
	expect_bytes_error_any(mp3, sizeof(mp3) - 1, SAYIN_EBADDATA, SAYIN_EFORMAT);
	expect_bytes_error_any(mp3_frame, sizeof(mp3_frame) - 1, SAYIN_EBADDATA, SAYIN_EFORMAT);
	expect_bytes_error_any(ogg, sizeof(ogg) - 1, SAYIN_EBADDATA, SAYIN_EFORMAT);
}

static void test_decode_file_errors(void **state)
{
	char path[256];

	(void)state;
	mtest_tmp_path(path, sizeof(path), "does-not-exist.wav");
	mtest_expect_decode_error(path, -ENOENT);
	mtest_expect_decode_error(mtest_tmp_dir, -EISDIR);
	assert_int_equal(media_decode_file(NULL, NULL, NULL, 0), SAYIN_EINVAL);
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

/* FFmpeg decodes what the ffmpeg tool wrote: FLAC is lossless, so it must
 * give exactly what the WAV reader gives for the same samples. */
static void test_decode_flac_matches_wav(void **state)
{
	struct wav_spec s = { .tag = 1, .channels = 2, .rate = 44100, .bits = 16, .frames = 22050 };
	char wav[256], flac[256], cmd[700], err[256];
	media_audio a, f;

	(void)state;
	if (!mtest_have_tool("ffmpeg"))
		skip();
	mtest_write_wav("lossless.wav", &s, wav, sizeof(wav));
	mtest_tmp_path(flac, sizeof(flac), "lossless.flac");
	snprintf(cmd, sizeof(cmd), "ffmpeg -nostdin -loglevel error -y -i '%s' -c:a flac '%s'", wav,
	         flac);
	assert_int_equal(mtest_run(cmd), 0);
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
	assert_int_equal(mtest_run(cmd), 0);
	mtest_expect_decode_error(flac, SAYIN_EBADDATA);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decode_rejects_other_formats),
		cmocka_unit_test(test_decode_file_errors),
		cmocka_unit_test(test_audio_duration_and_free),
		cmocka_unit_test(test_decode_flac_matches_wav),
	};

	return mtest_main(argc, argv, tests, sizeof(tests) / sizeof(tests[0]));
}

/* test_opus: the Ogg Opus encoder: page layout, granules, lengths, alignment,
 * determinism, options, bitrate, and validation by opusinfo and ffprobe. Shared fixtures:
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

static uint32_t get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static int encoder_lookahead(void)
{
	int err, lookahead = -1;
	/* The application mode opus.c uses; VOIP and AUDIO share the lookahead. */
	OpusEncoder *enc = opus_encoder_create(48000, 1, OPUS_APPLICATION_VOIP, &err);

	assert_non_null(enc);
	assert_int_equal(opus_encoder_ctl(enc, OPUS_GET_LOOKAHEAD(&lookahead)), OPUS_OK);
	opus_encoder_destroy(enc);
	return lookahead;
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
	mtest_make_audio(&a, 48000 * 3 + 123, 44100);
	encode(&a, &o, &buf);
	info = mtest_parse_ogg(&buf);

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

	mtest_free_ogg(info);
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

		mtest_make_audio(&a, lengths[i], 48000);
		encode(&a, &o, &buf);
		info = mtest_parse_ogg(&buf);
		assert_int_equal(info->n_packets - 2, want_packets);
		assert_true(info->pages[info->n_pages - 1].eos);
		assert_int_equal(info->pages[info->n_pages - 1].granule,
		                 lookahead + (int64_t)lengths[i]);
		mtest_free_ogg(info);
		media_buffer_free(&buf);
		media_audio_free(&a);
	}
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
	mtest_make_audio(&a, frames, 48000);
	for (size_t i = 0; i < frames; i++)
		a.samples[i] = i < onset ? 0.0f
		                         : (float)(0.5 * sin(2 * M_PI * 440 * (double)(i - onset) / 48000));
	encode(&a, &o, &buf);
	y = mtest_decode_stream(&buf, &n);
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
	mtest_make_audio(&a, 48000 * 2, 48000);
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
	mtest_make_audio(&a, 48000 * 2, 48000);
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
	mtest_make_audio(&a, 48000 * 5, 48000);
	encode(&a, &o, &buf);
	info = mtest_parse_ogg(&buf);
	for (size_t i = 2; i < info->n_packets; i++)
		payload += (size_t)info->packets[i].len;
	kbps = (double)payload * 8 / 5.0 / 1000.0;
	if (kbps < 22 || kbps > 42)
		fail_msg("%.1f kb/s at a 32 kb/s target", kbps);
	/* Whole-file rate, Ogg overhead included, stays sane too. */
	assert_true((double)buf.len * 8 / 5.0 / 1000.0 < 45);
	mtest_free_ogg(info);
	media_buffer_free(&buf);

	/* At 6 kb/s pages still close about every second. */
	o.bitrate = 6000;
	encode(&a, &o, &buf);
	info = mtest_parse_ogg(&buf);
	for (size_t i = 3; i < info->n_pages; i++) {
		if (info->pages[i - 1].granule > 0 && info->pages[i].granule > 0)
			assert_true(info->pages[i].granule - info->pages[i - 1].granule <= 48000);
	}
	assert_true(info->n_pages >= 2 + 5);
	mtest_free_ogg(info);
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
	mtest_make_audio(&a, 960, 48000);
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
	mtest_write_wav("tools.wav", &s, wav, sizeof(wav));
	assert_int_equal(media_decode_file(wav, &a, err, sizeof(err)), 0);
	encode(&a, &o, &buf);
	mtest_tmp_path(opus, sizeof(opus), "tools.opus");
	mtest_tmp_path(logfile, sizeof(logfile), "tools.log");
	mtest_tmp_path(back, sizeof(back), "tools-back.wav");
	mtest_write_file(opus, buf.data, buf.len);

	if (mtest_have_tool("opusinfo")) {
		any = true;
		snprintf(cmd, sizeof(cmd), "opusinfo '%s' >'%s' 2>&1", opus, logfile);
		assert_int_equal(mtest_run(cmd), 0);
		assert_false(file_contains(logfile, "WARNING"));
		assert_false(file_contains(logfile, "rror"));
		assert_true(file_contains(logfile, "Original sample rate: 44100 Hz"));
		assert_true(file_contains(logfile, "TITLE=tools"));
	}
	if (mtest_have_tool("opusdec")) {
		any = true;
		snprintf(cmd, sizeof(cmd), "opusdec --quiet --rate 48000 '%s' '%s' >'%s' 2>&1", opus,
		         back, logfile);
		assert_int_equal(mtest_run(cmd), 0);
		assert_int_equal(media_decode_file(back, &decoded, err, sizeof(err)), 0);
		assert_int_equal(decoded.input_rate, 48000);
		assert_int_equal(decoded.input_frames, a.frames);
		media_audio_free(&decoded);
	}
	if (mtest_have_tool("ffprobe")) {
		any = true;
		snprintf(cmd, sizeof(cmd),
		         "ffprobe -v error -show_entries stream=codec_name,channels -of csv=p=0 "
		         "'%s' >'%s' 2>&1",
		         opus, logfile);
		assert_int_equal(mtest_run(cmd), 0);
		assert_true(file_contains(logfile, "opus,1"));
	}
	media_buffer_free(&buf);
	media_audio_free(&a);
	if (!any)
		skip();
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_encode_stream_layout),
		cmocka_unit_test(test_encode_lengths),
		cmocka_unit_test(test_encode_alignment_and_tail),
		cmocka_unit_test(test_encode_deterministic),
		cmocka_unit_test(test_encode_options),
		cmocka_unit_test(test_encode_bitrate),
		cmocka_unit_test(test_encode_rejects_bad_input),
		cmocka_unit_test(test_encode_validates_with_tools),
	};

	return mtest_main(argc, argv, tests, sizeof(tests) / sizeof(tests[0]));
}

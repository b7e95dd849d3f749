/* test_aac: the AAC-in-M4A rendition: byte for byte what FFmpeg's muxer
 * writes, faststart, determinism and options. Shared fixtures:
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
	mtest_tmp_path(path, sizeof(path), "reference.m4a");
	for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
		for (size_t e = 0; e < sizeof(encoders) / sizeof(encoders[0]); e++) {
			media_aac_options opt = { .bitrate = encoders[e].bitrate,
				                  .coder = encoders[e].coder };
			media_audio a;
			media_buffer ours, theirs;

			mtest_make_audio(&a, lengths[i], 48000);
			assert_int_equal(media_encode_m4a(&a, &opt, &ours, err, sizeof(err)), 0);
			ffmpeg_m4a(&a, encoders[e].coder, encoders[e].bitrate, path, &theirs);
			if (ours.len != theirs.len || memcmp(ours.data, theirs.data, ours.len) != 0) {
				size_t at = 0;
				char mine[256];
				while (at < ours.len && at < theirs.len && ours.data[at] == theirs.data[at])
					at++;
				mtest_tmp_path(mine, sizeof(mine), "ours.m4a");
				mtest_write_file(mine, ours.data, ours.len);
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
	mtest_make_audio(&a, frames, 44100);
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

	mtest_tmp_path(path, sizeof(path), "fallback.m4a");
	mtest_write_file(path, m.data, m.len);
	if (!mtest_have_tool("ffprobe") || !mtest_have_tool("ffmpeg")) {
		media_buffer_free(&m);
		media_audio_free(&a);
		skip();
	}
	mtest_tmp_path(logfile, sizeof(logfile), "m4a.log");
	snprintf(cmd, sizeof(cmd), "ffmpeg -nostdin -v error -i '%s' -f null - >'%s' 2>&1", path,
	         logfile);
	assert_int_equal(mtest_run(cmd), 0);
	{
		struct stat st;
		assert_int_equal(stat(logfile, &st), 0);
		if (st.st_size != 0)
			fail_msg("ffmpeg complains about the M4A (see %s)", logfile);
	}
	mtest_probe(path, "stream=codec_name", v, sizeof(v));
	assert_string_equal(v, "aac");
	mtest_probe(path, "stream=profile", v, sizeof(v));
	assert_string_equal(v, "LC");
	mtest_probe(path, "stream=channels", v, sizeof(v));
	assert_string_equal(v, "1");
	mtest_probe(path, "stream=sample_rate", v, sizeof(v));
	assert_string_equal(v, "48000");
	mtest_probe(path, "format=duration", v, sizeof(v));
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
	mtest_make_audio(&a, 48000 * 3, 48000);
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

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_m4a_valid_faststart_deterministic),
		cmocka_unit_test(test_m4a_same_bytes_as_ffmpeg_muxer),
		cmocka_unit_test(test_m4a_options),
	};

	return mtest_main(argc, argv, tests, sizeof(tests) / sizeof(tests[0]));
}

/* fixture: what the media unit tests share: a temporary directory, a byte
 * builder, generated WAV files and test signals, Ogg parsing and decoding,
 * external tools, and the main every test_*.c runs. */
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
#include <ebur128.h>
#include <jansson.h>
#include <time.h>

#include "core/error.h"
#include "media/media.h"
#include "publisher/media/fixture.h"

char mtest_tmp_dir[] = "/tmp/test_media.XXXXXX";

void mtest_tmp_path(char *buf, size_t len, const char *name)
{
	int n = snprintf(buf, len, "%s/%s", mtest_tmp_dir, name);
	assert_true(n > 0 && (size_t)n < len);
}

void mtest_put(struct bytes *b, const void *data, size_t n)
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

void mtest_put_le16(struct bytes *b, unsigned v)
{
	unsigned char x[2] = { (unsigned char)(v & 0xff), (unsigned char)((v >> 8) & 0xff) };
	mtest_put(b, x, 2);
}

void mtest_put_le32(struct bytes *b, uint32_t v)
{
	unsigned char x[4] = { (unsigned char)(v & 0xff), (unsigned char)((v >> 8) & 0xff),
		               (unsigned char)((v >> 16) & 0xff), (unsigned char)(v >> 24) };
	mtest_put(b, x, 4);
}

void mtest_set_le32(struct bytes *b, size_t off, uint32_t v)
{
	b->p[off] = (unsigned char)(v & 0xff);
	b->p[off + 1] = (unsigned char)((v >> 8) & 0xff);
	b->p[off + 2] = (unsigned char)((v >> 16) & 0xff);
	b->p[off + 3] = (unsigned char)(v >> 24);
}

void mtest_write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	if (len > 0)
		assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Channel c carries a 1 kHz sine at 0.8 (even c) or 0.4 (odd c), so the
 * average of a stereo pair peaks at 0.6: neither channel alone, nor the sum. */
double mtest_chan_amp(unsigned c)
{
	return (c % 2 == 0) ? 0.8 : 0.4;
}

double mtest_expected_mono_amp(unsigned channels)
{
	double sum = 0;
	for (unsigned c = 0; c < channels; c++)
		sum += mtest_chan_amp(c);
	return sum / channels;
}

double mtest_sample_value(const struct wav_spec *s, size_t i, unsigned c)
{
	return mtest_chan_amp(c) * sin(2 * M_PI * TONE_HZ * (double)i / s->rate);
}

/* Offset of the data chunk's size field in the last built WAV. */
size_t mtest_data_size_offset;

void mtest_build_wav(const struct wav_spec *s, struct bytes *b)
{
	unsigned block = s->channels * (s->bits / 8);
	size_t data_len = s->frames * block;

	memset(b, 0, sizeof(*b));
	mtest_put(b, "RIFF", 4);
	mtest_put_le32(b, 0); /* patched below */
	mtest_put(b, "WAVE", 4);
	if (s->extra_chunks) {
		mtest_put(b, "junk", 4);
		mtest_put_le32(b, 3);
		mtest_put(b, "abc\0", 4); /* 3 bytes and the pad byte */
	}
	mtest_put(b, "fmt ", 4);
	mtest_put_le32(b, s->extensible ? 40 : 16);
	mtest_put_le16(b, s->extensible ? 0xFFFE : s->tag);
	mtest_put_le16(b, s->channels);
	mtest_put_le32(b, s->rate);
	mtest_put_le32(b, s->rate * block);
	mtest_put_le16(b, block);
	mtest_put_le16(b, s->bits);
	if (s->extensible) {
		static const unsigned char tail[14] = { 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80,
			                                0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71 };
		mtest_put_le16(b, 22);
		mtest_put_le16(b, s->bits);                          /* valid bits */
		mtest_put_le32(b, (1u << s->channels) - 1);          /* channel mask */
		mtest_put_le16(b, s->tag);
		mtest_put(b, tail, sizeof(tail));
	}
	if (s->extra_chunks) {
		mtest_put(b, "LIST", 4);
		mtest_put_le32(b, 9);
		mtest_put(b, "INFOxxxxx\0", 10);
	}
	mtest_put(b, "data", 4);
	mtest_data_size_offset = b->len;
	mtest_put_le32(b, (uint32_t)data_len);
	for (size_t i = 0; i < s->frames; i++) {
		for (unsigned c = 0; c < s->channels; c++) {
			double v = mtest_sample_value(s, i, c);
			if (s->tag == 1 && s->bits == 16) {
				mtest_put_le16(b, (unsigned)(int16_t)lrint(v * 32767.0) & 0xffff);
			} else if (s->tag == 1 && s->bits == 24) {
				uint32_t u = (uint32_t)(int32_t)lrint(v * 8388607.0);
				unsigned char x[3] = { (unsigned char)(u & 0xff),
					               (unsigned char)((u >> 8) & 0xff),
					               (unsigned char)((u >> 16) & 0xff) };
				mtest_put(b, x, 3);
			} else if (s->tag == 3 && s->bits == 32) {
				float f = (float)v;
				uint32_t u;
				memcpy(&u, &f, 4);
				mtest_put_le32(b, u);
			} else {
				/* Encodings the reader must refuse: any bytes will do. */
				unsigned char x[8] = { 0x55, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde };
				mtest_put(b, x, s->bits / 8);
			}
		}
	}
	if (data_len & 1)
		mtest_put(b, "\0", 1);
	if (s->list_after) {
		mtest_put(b, "LIST", 4);
		mtest_put_le32(b, 4);
		mtest_put(b, "INFO", 4);
	}
	mtest_set_le32(b, 4, (uint32_t)(b->len - 8));
}

void mtest_write_wav(const char *name, const struct wav_spec *s, char *path, size_t pathlen)
{
	struct bytes b;

	mtest_build_wav(s, &b);
	mtest_tmp_path(path, pathlen, name);
	mtest_write_file(path, b.p, b.len);
	free(b.p);
}

/* Every failure gives its code, a message, and a zeroed output. */
void mtest_expect_decode_error(const char *path, int want)
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

void mtest_expect_bytes_error(const void *data, size_t len, int want)
{
	char path[256];

	mtest_tmp_path(path, sizeof(path), "bad.wav");
	mtest_write_file(path, data, len);
	mtest_expect_decode_error(path, want);
}

/* Deterministic test signal: a 220 Hz tone with harmonics plus noise. */
void mtest_make_audio(media_audio *a, size_t frames, unsigned input_rate)
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

/* Demuxes with libogg (which also checks every page's CRC) and asserts that
 * the whole buffer is pages of one logical stream. */
struct ogg_info *mtest_parse_ogg(const media_buffer *buf)
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

void mtest_free_ogg(struct ogg_info *info)
{
	for (size_t i = 0; i < info->n_packets; i++)
		free(info->packets[i].data);
	free(info);
}

/* Decodes the packets with libopus and applies pre-skip and end trimming as
 * RFC 7845 says a player must. Returns the samples; *n receives the count. */
float *mtest_decode_stream(const media_buffer *buf, size_t *n)
{
	struct ogg_info *info = mtest_parse_ogg(buf);
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
	mtest_free_ogg(info);
	return out;
}

bool mtest_have_tool(const char *name)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
	return system(cmd) == 0;
}

int mtest_run(const char *cmd)
{
	int status = system(cmd);

	assert_true(status != -1);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* A stream's value by ffprobe, e.g. "stream=codec_name" -> "aac". */
void mtest_probe(const char *path, const char *entries, char *out, size_t len)
{
	char cmd[600], logfile[256];
	FILE *f;

	mtest_tmp_path(logfile, sizeof(logfile), "probe.txt");
	snprintf(cmd, sizeof(cmd), "ffprobe -v error -select_streams a:0 -show_entries %s "
	         "-of default=nw=1:nk=1 '%s' >'%s' 2>&1", entries, path, logfile);
	assert_int_equal(mtest_run(cmd), 0);
	f = fopen(logfile, "r");
	assert_non_null(f);
	if (fgets(out, (int)len, f) == NULL)
		out[0] = '\0';
	fclose(f);
	out[strcspn(out, "\n")] = '\0';
}

static int setup_dir(void **state)
{
	(void)state;
	return mkdtemp(mtest_tmp_dir) == NULL ? -1 : 0;
}

static int remove_dir(void **state)
{
	char cmd[300];

	(void)state;
	/* The directory name comes from mkdtemp: no quoting issues. */
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", mtest_tmp_dir);
	return system(cmd) == 0 ? 0 : -1;
}

int mtest_main(int argc, char **argv, const struct CMUnitTest *tests, size_t n)
{
	/* The pipeline tests run this binary as their decoder child. */
	if (argc >= 2 && strcmp(argv[1], MEDIA_DECODER_COMMAND) == 0)
		return media_decoder_main(argc, argv);

	return _cmocka_run_group_tests("tests", tests, n, setup_dir, remove_dir);
}

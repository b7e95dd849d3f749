/* aac: the AAC-LC in M4A fallback rendition for players without Opus (Safari
 * before 18.4), with FFmpeg's native AAC encoder and its ipod (M4A) muxer,
 * muxed into an unlinked temporary file, so the encoded stream does not sit
 * in a growing buffer while it is made; finish reads it back once.
 *
 * +faststart: the mov muxer writes mdat first, then moves it behind the moov
 * by reopening its output for reading (AVFormatContext.io_open). io_open
 * hands the muxer a read context over the same file (pread): the muxer opens
 * nothing by name, and nothing is left behind. */
#include "media_internal.h"

#include "error.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>

#define set_err media__set_err

#define M4A_IO_BUFFER 65536
#define M4A_URL "sayin.m4a" /* our output's name: the only one io_open opens */

/* FFmpeg 6.1 made write_packet's buffer const. */
#if LIBAVFORMAT_VERSION_MAJOR >= 61
#define WRITE_BUF const uint8_t *
#else
#define WRITE_BUF uint8_t *
#endif

/* The output file and the writer's position. */
struct out_file {
	int fd;
	uint64_t len, pos;
};

/* A reader over an out_file, for the muxer's faststart pass. */
struct file_reader {
	const struct out_file *f;
	uint64_t pos;
};

struct media__m4a {
	AVCodecContext *enc;
	AVFormatContext *fmt;
	AVStream *st;
	AVFrame *frame;
	AVPacket *pkt;
	struct out_file file;
	int fill;                /* samples in frame so far */
	int64_t pts;             /* samples sent to the encoder */
	bool header_written;
};

static int file_write(void *opaque, WRITE_BUF buf, int n)
{
	struct out_file *f = opaque;

	for (int done = 0; done < n;) {
		ssize_t k = pwrite(f->fd, buf + done, (size_t)(n - done), (off_t)(f->pos + (uint64_t)done));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return AVERROR(k < 0 ? errno : EIO);
		done += (int)k;
	}
	f->pos += (uint64_t)n;
	if (f->pos > f->len)
		f->len = f->pos;
	return n;
}

static int64_t seek_to(uint64_t *pos, uint64_t len, int64_t offset, int whence)
{
	switch (whence & ~AVSEEK_FORCE) {
	case AVSEEK_SIZE: return (int64_t)len;
	case SEEK_SET: break;
	case SEEK_CUR: offset += (int64_t)*pos; break;
	case SEEK_END: offset += (int64_t)len; break;
	default: return AVERROR(EINVAL);
	}
	if (offset < 0)
		return AVERROR(EINVAL);
	*pos = (uint64_t)offset;
	return offset;
}

static int64_t file_seek(void *opaque, int64_t offset, int whence)
{
	struct out_file *f = opaque;
	return seek_to(&f->pos, f->len, offset, whence);
}

static int file_read(void *opaque, uint8_t *buf, int n)
{
	struct file_reader *r = opaque;
	ssize_t k;

	if (r->pos >= r->f->len)
		return AVERROR_EOF;
	if ((uint64_t)n > r->f->len - r->pos)
		n = (int)(r->f->len - r->pos);
	do
		k = pread(r->f->fd, buf, (size_t)n, (off_t)r->pos);
	while (k < 0 && errno == EINTR);
	if (k < 0)
		return AVERROR(errno);
	if (k == 0)
		return AVERROR_EOF;
	r->pos += (uint64_t)k;
	return (int)k;
}

static int64_t file_reader_seek(void *opaque, int64_t offset, int whence)
{
	struct file_reader *r = opaque;
	return seek_to(&r->pos, r->f->len, offset, whence);
}

static AVIOContext *mem_context(void *opaque, int write,
                                int (*read)(void *, uint8_t *, int),
                                int (*writefn)(void *, WRITE_BUF, int),
                                int64_t (*seek)(void *, int64_t, int))
{
	unsigned char *buf = av_malloc(M4A_IO_BUFFER);
	AVIOContext *pb;

	if (buf == NULL)
		return NULL;
	pb = avio_alloc_context(buf, M4A_IO_BUFFER, write, opaque, read, writefn, seek);
	if (pb == NULL)
		av_free(buf);
	return pb;
}

/* The muxer reopening its output for reading (faststart); nothing else may
 * be opened. */
static int m4a_io_open(struct AVFormatContext *s, AVIOContext **pb, const char *url, int flags,
                       AVDictionary **options)
{
	struct media__m4a *m = s->opaque;
	struct file_reader *r;

	(void)options;
	if (url == NULL || strcmp(url, M4A_URL) != 0 || (flags & AVIO_FLAG_WRITE)) {
		log_debug("media: the M4A muxer asked to open %s: refused", url ? url : "(null)");
		return AVERROR(EPERM);
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return AVERROR(ENOMEM);
	r->f = &m->file;
	*pb = mem_context(r, 0, file_read, NULL, file_reader_seek);
	if (*pb == NULL) {
		free(r);
		return AVERROR(ENOMEM);
	}
	return 0;
}

static void free_context(AVIOContext **pb)
{
	if (*pb == NULL)
		return;
	av_freep(&(*pb)->buffer);
	avio_context_free(pb);
}

static int m4a_io_close2(struct AVFormatContext *s, AVIOContext *pb)
{
	(void)s;
	if (pb != NULL) {
		free(pb->opaque);
		free_context(&pb);
	}
	return 0;
}

/* FFmpeg logs through our log in this process too (its muxer announces the
 * faststart pass at info level). */
static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void install_log(void)
{
	av_log_set_callback(media__ff_log);
}

static int ff_fail(int averr, const char *what, char *err, size_t errlen)
{
	char msg[128];

	if (av_strerror(averr, msg, sizeof(msg)) < 0)
		snprintf(msg, sizeof(msg), "error %d", averr);
	log_error("media: AAC/M4A: %s: %s", what, msg);
	if (averr == AVERROR(ENOMEM)) {
		set_err(err, errlen, "out of memory making the M4A rendition");
		return -ENOMEM;
	}
	set_err(err, errlen, "the AAC encoder or M4A muxer failed: %s: %s", what, msg);
	return SAYIN_EENCODE;
}

void media__m4a_free(media__m4a *m)
{
	if (m == NULL)
		return;
	av_frame_free(&m->frame);
	av_packet_free(&m->pkt);
	avcodec_free_context(&m->enc);
	if (m->fmt != NULL) {
		free_context(&m->fmt->pb);
		avformat_free_context(m->fmt);
	}
	if (m->file.fd >= 0)
		close(m->file.fd);
	free(m);
}

int media_aac_coder_valid(const char *name)
{
	return name != NULL && (strcmp(name, "fast") == 0 || strcmp(name, "twoloop") == 0);
}

int media__m4a_begin(const media_aac_options *opt, const char *tmp_dir, media__m4a **out,
                     char *err, size_t errlen)
{
	static const media_aac_options defaults = { 0 };
	const AVCodec *codec;
	AVDictionary *opts = NULL;
	media__m4a *m;
	const char *coder;
	int bitrate, r;

	*out = NULL;
	if (opt == NULL)
		opt = &defaults;
	bitrate = opt->bitrate == 0 ? MEDIA_DEFAULT_AAC_BITRATE : opt->bitrate;
	if (bitrate < MEDIA_MIN_AAC_BITRATE || bitrate > MEDIA_MAX_AAC_BITRATE) {
		set_err(err, errlen, "AAC bitrate %d is outside %d..%d", opt->bitrate,
		        MEDIA_MIN_AAC_BITRATE, MEDIA_MAX_AAC_BITRATE);
		return SAYIN_EINVAL;
	}
	coder = opt->coder != NULL ? opt->coder : MEDIA_DEFAULT_AAC_CODER;
	if (!media_aac_coder_valid(coder)) {
		set_err(err, errlen, "AAC coder '%s' is not fast or twoloop", coder);
		return SAYIN_EINVAL;
	}
	pthread_once(&log_once, install_log);
	codec = avcodec_find_encoder_by_name("aac");
	if (codec == NULL) {
		log_error("media: this FFmpeg has no native AAC encoder");
		set_err(err, errlen, "the AAC encoder is missing from FFmpeg");
		return SAYIN_EENCODE;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		set_err(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (tmp_dir == NULL) {
		tmp_dir = getenv("TMPDIR");
		if (tmp_dir == NULL || tmp_dir[0] == '\0')
			tmp_dir = "/tmp";
	}
	m->file.fd = media__open_tmp(tmp_dir, err, errlen);
	if (m->file.fd < 0) {
		r = m->file.fd;
		free(m);
		return r;
	}

	/* The encoder: AAC-LC, mono, 48 kHz, planar float (mono: one plane). */
	m->enc = avcodec_alloc_context3(codec);
	if (m->enc == NULL) {
		r = AVERROR(ENOMEM);
		goto fail_what;
	}
	m->enc->sample_fmt = AV_SAMPLE_FMT_FLTP;
	m->enc->sample_rate = MEDIA_RATE;
	av_channel_layout_default(&m->enc->ch_layout, 1);
	m->enc->bit_rate = bitrate;
	m->enc->profile = FF_PROFILE_AAC_LOW;
	m->enc->time_base = (AVRational){ 1, MEDIA_RATE };
	m->enc->flags |= AV_CODEC_FLAG_BITEXACT | AV_CODEC_FLAG_GLOBAL_HEADER;
	m->enc->thread_count = 1;
	av_dict_set(&opts, "aac_coder", coder, 0);
	r = avcodec_open2(m->enc, codec, &opts);
	if (r >= 0 && av_dict_count(opts) != 0) {
		log_error("media: the AAC encoder ignored an option: %s",
		          av_dict_get(opts, "", NULL, AV_DICT_IGNORE_SUFFIX)->key);
		r = AVERROR(EINVAL);
	}
	av_dict_free(&opts);
	if (r < 0) {
		r = ff_fail(r, "opening the encoder", err, errlen);
		goto fail;
	}

	/* The muxer: ipod = M4A brand; into memory. */
	r = avformat_alloc_output_context2(&m->fmt, NULL, "ipod", NULL);
	if (r < 0 || m->fmt == NULL) {
		r = ff_fail(r < 0 ? r : AVERROR(ENOMEM), "creating the M4A muxer", err, errlen);
		goto fail;
	}
	av_freep(&m->fmt->url);
	m->fmt->url = av_strdup(M4A_URL);
	m->fmt->pb = mem_context(&m->file, 1, NULL, file_write, file_seek);
	if (m->fmt->url == NULL || m->fmt->pb == NULL) {
		r = ff_fail(AVERROR(ENOMEM), "creating the M4A muxer", err, errlen);
		goto fail;
	}
	m->fmt->flags |= AVFMT_FLAG_CUSTOM_IO | AVFMT_FLAG_BITEXACT;
	m->fmt->opaque = m;
	m->fmt->io_open = m4a_io_open;
	m->fmt->io_close2 = m4a_io_close2;
	m->st = avformat_new_stream(m->fmt, NULL);
	if (m->st == NULL) {
		r = ff_fail(AVERROR(ENOMEM), "creating the M4A stream", err, errlen);
		goto fail;
	}
	m->st->time_base = m->enc->time_base;
	r = avcodec_parameters_from_context(m->st->codecpar, m->enc);
	if (r < 0) {
		r = ff_fail(r, "setting the M4A stream", err, errlen);
		goto fail;
	}
	av_dict_set(&opts, "movflags", "+faststart", 0);
	r = avformat_write_header(m->fmt, &opts);
	if (r >= 0 && av_dict_count(opts) != 0) {
		log_error("media: the M4A muxer ignored an option: %s",
		          av_dict_get(opts, "", NULL, AV_DICT_IGNORE_SUFFIX)->key);
		r = AVERROR(EINVAL);
	}
	av_dict_free(&opts);
	if (r < 0) {
		r = ff_fail(r, "writing the M4A header", err, errlen);
		goto fail;
	}
	m->header_written = true;

	m->frame = av_frame_alloc();
	m->pkt = av_packet_alloc();
	if (m->frame == NULL || m->pkt == NULL) {
		r = AVERROR(ENOMEM);
		goto fail_what;
	}
	m->frame->format = AV_SAMPLE_FMT_FLTP;
	m->frame->sample_rate = MEDIA_RATE;
	m->frame->nb_samples = m->enc->frame_size;
	r = av_channel_layout_copy(&m->frame->ch_layout, &m->enc->ch_layout);
	if (r >= 0)
		r = av_frame_get_buffer(m->frame, 0);
	if (r < 0)
		goto fail_what;
	*out = m;
	return 0;

fail_what:
	r = ff_fail(r, "setting up the encoder", err, errlen);
fail:
	media__m4a_free(m);
	return r;
}

/* Writes every packet the encoder has ready. */
static int drain(media__m4a *m, char *err, size_t errlen)
{
	for (;;) {
		int r = avcodec_receive_packet(m->enc, m->pkt);

		if (r == AVERROR(EAGAIN) || r == AVERROR_EOF)
			return 0;
		if (r < 0)
			return ff_fail(r, "encoding", err, errlen);
		m->pkt->stream_index = m->st->index;
		av_packet_rescale_ts(m->pkt, m->enc->time_base, m->st->time_base);
		r = av_write_frame(m->fmt, m->pkt);
		av_packet_unref(m->pkt);
		if (r < 0)
			return ff_fail(r, "muxing", err, errlen);
	}
}

/* Sends the frame's fill samples to the encoder. */
static int send_frame(media__m4a *m, char *err, size_t errlen)
{
	int r;

	m->frame->nb_samples = m->fill;
	m->frame->pts = m->pts;
	r = avcodec_send_frame(m->enc, m->frame);
	if (r < 0)
		return ff_fail(r, "encoding", err, errlen);
	m->pts += m->fill;
	m->fill = 0;
	return drain(m, err, errlen);
}

int media__m4a_add(media__m4a *m, const float *x, size_t n, char *err, size_t errlen)
{
	while (n > 0) {
		size_t k = (size_t)(m->enc->frame_size - m->fill);
		int r;

		if (m->fill == 0) {
			/* The encoder may still hold the last frame's buffer. */
			r = av_frame_make_writable(m->frame);
			if (r < 0)
				return ff_fail(r, "encoding", err, errlen);
			m->frame->nb_samples = m->enc->frame_size;
		}
		if (k > n)
			k = n;
		memcpy((float *)m->frame->data[0] + m->fill, x, k * sizeof(float));
		m->fill += (int)k;
		x += k;
		n -= k;
		if (m->fill == m->enc->frame_size) {
			r = send_frame(m, err, errlen);
			if (r != 0)
				return r;
		}
	}
	return 0;
}

int media__m4a_finish(media__m4a *m, media_buffer *out, media_file *file, char *err,
                      size_t errlen)
{
	int r;

	if (out != NULL)
		memset(out, 0, sizeof(*out));
	/* A short last frame is fine: the encoder has SMALL_LAST_FRAME. */
	if (m->fill > 0) {
		r = send_frame(m, err, errlen);
		if (r != 0)
			return r;
	}
	if (m->pts == 0) {
		set_err(err, errlen, "no samples to encode");
		return SAYIN_EEMPTY;
	}
	r = avcodec_send_frame(m->enc, NULL);
	if (r < 0)
		return ff_fail(r, "flushing the encoder", err, errlen);
	r = drain(m, err, errlen);
	if (r != 0)
		return r;
	r = av_write_trailer(m->fmt);
	m->header_written = false;
	if (r < 0)
		return ff_fail(r, "writing the M4A index", err, errlen);
	/* The file is exactly what the muxer wrote: len bytes. */
	if (ftruncate(m->file.fd, (off_t)m->file.len) != 0) {
		r = -errno;
		set_err(err, errlen, "cannot write the M4A file: %s", strerror(errno));
		return r;
	}
	if (file != NULL) {
		file->fd = m->file.fd;
		file->len = m->file.len;
		m->file.fd = -1;
		return 0;
	}
	r = media__read_back(m->file.fd, out);
	if (r != 0)
		set_err(err, errlen, "cannot read back the M4A file: %s", strerror(-r));
	return r;
}

int media_encode_m4a(const media_audio *audio, const media_aac_options *opt, media_buffer *out,
                     char *err, size_t errlen)
{
	media__m4a *m = NULL;
	int rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (audio == NULL || out == NULL) {
		set_err(err, errlen, "media_encode_m4a: no audio or no output");
		return SAYIN_EINVAL;
	}
	if (audio->frames == 0 || audio->samples == NULL) {
		set_err(err, errlen, "no samples to encode");
		return SAYIN_EEMPTY;
	}
	rc = media__m4a_begin(opt, NULL, &m, err, errlen);
	if (rc == 0)
		rc = media__m4a_add(m, audio->samples, audio->frames, err, errlen);
	if (rc == 0)
		rc = media__m4a_finish(m, out, NULL, err, errlen);
	media__m4a_free(m);
	return rc;
}

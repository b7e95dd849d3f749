/* aac: the AAC-LC in M4A fallback rendition for players without Opus (Safari
 * before 18.4): FFmpeg's native AAC encoder, and our streaming M4A writer
 * (mp4.c), whose memory does not grow with the length as FFmpeg's mov
 * muxer's index does. */
#include "media/internal.h"

#include "core/error.h"
#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavutil/channel_layout.h>

#define set_err media__set_err

struct media__m4a {
	AVCodecContext *enc;
	AVFrame *frame;
	AVPacket *pkt;
	media__mp4 *mp4;
	const char *tmp_dir;
	int fill;                /* samples in frame so far */
	int64_t pts;             /* samples sent to the encoder */
};

/* FFmpeg logs through our log in this process too. */
static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void install_log(void)
{
	av_log_set_callback(media__ff_log);
}

static int ff_fail(int averr, const char *what, char *err, size_t errlen)
{
	char msg[128];

	log_error("media: AAC/M4A: %s: %s", what, media__av_strerror(averr, msg, sizeof(msg)));
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
	media__mp4_free(m->mp4);
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
	tmp_dir = media__tmp_dir(tmp_dir);
	m->tmp_dir = tmp_dir;
	r = media__mp4_begin(tmp_dir, &m->mp4, err, errlen);
	if (r != 0) {
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

	if (m->enc->extradata == NULL || m->enc->extradata_size <= 0 ||
	    m->enc->initial_padding < 0) {
		r = ff_fail(AVERROR(EINVAL), "the encoder gave no AudioSpecificConfig", err, errlen);
		goto fail;
	}

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
		if (m->pkt->size <= 0 || m->pkt->duration <= 0 || m->pkt->duration > UINT32_MAX)
			r = -EINVAL;
		else
			r = media__mp4_packet(m->mp4, m->pkt->data, (size_t)m->pkt->size,
			                      (uint32_t)m->pkt->duration);
		av_packet_unref(m->pkt);
		if (r != 0) {
			set_err(err, errlen, "cannot write the M4A packets: %s", strerror(-r));
			return r;
		}
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
	{
		media__mp4_track t = { .rate = MEDIA_RATE, .delay = (uint32_t)m->enc->initial_padding,
			               .asc = m->enc->extradata,
			               .asc_len = (size_t)m->enc->extradata_size,
			               .bitrate = (uint32_t)m->enc->bit_rate,
			               .tmp_dir = m->tmp_dir };
		uint64_t len;
		int fd;

		r = media__mp4_finish(m->mp4, &t, &fd, &len, err, errlen);
		if (r != 0)
			return r;
		if (file != NULL) {
			file->fd = fd;
			file->len = len;
			return 0;
		}
		r = media__read_back(fd, out);
		close(fd);
	}
	if (r != 0)
		set_err(err, errlen, "cannot read back the M4A file: %s", strerror(-r));
	return r;
}

int media_encode_m4a(const media_audio *audio, const media_aac_options *opt, media_buffer *out,
                     char *err, size_t errlen)
{
	media__m4a *m = NULL;
	int rc = media__enter_encode(audio, out, "media_encode_m4a: no audio or no output", err,
	                             errlen);

	if (rc != 0)
		return rc;
	rc = media__m4a_begin(opt, NULL, &m, err, errlen);
	if (rc == 0)
		rc = media__m4a_add(m, audio->samples, audio->frames, err, errlen);
	if (rc == 0)
		rc = media__m4a_finish(m, out, NULL, err, errlen);
	media__m4a_free(m);
	return rc;
}

/* ffmpeg: every format but WAV, decoded through FFmpeg restricted to the
 * demuxers and decoders listed here, from the bytes alone, with no nested
 * opens; FFmpeg's errors become ours here (media never leaks AVERROR). */
#include "media/internal.h"

#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avstring.h>
#include <libavutil/avutil.h>

#define set_err media__set_err

/* The demuxers we let FFmpeg use (av_match_list matches any name of a
 * demuxer: "mov" is mov,mp4,m4a,3gp,3g2,mj2; "matroska" is matroska,webm).
 * WAV is not here: it always goes through the strict reader (wav.c). */
#define FF_FORMATS "flac,mp3,ogg,mov,matroska,caf,aiff,amr"

/* The decoders, by codec and by the name of FFmpeg's native decoder. */
static const struct ff_codec {
	enum AVCodecID id;
	const char *decoder;
} ff_codecs[] = {
	{ AV_CODEC_ID_FLAC, "flac" },           { AV_CODEC_ID_MP3, "mp3float" },
	{ AV_CODEC_ID_VORBIS, "vorbis" },       { AV_CODEC_ID_OPUS, "opus" },
	{ AV_CODEC_ID_AAC, "aac" },             { AV_CODEC_ID_ALAC, "alac" },
	{ AV_CODEC_ID_AMR_NB, "amrnb" },        { AV_CODEC_ID_AMR_WB, "amrwb" },
	{ AV_CODEC_ID_PCM_S8, "pcm_s8" },       { AV_CODEC_ID_PCM_S16BE, "pcm_s16be" },
	{ AV_CODEC_ID_PCM_S16LE, "pcm_s16le" }, { AV_CODEC_ID_PCM_S24BE, "pcm_s24be" },
	{ AV_CODEC_ID_PCM_S24LE, "pcm_s24le" }, { AV_CODEC_ID_PCM_S32BE, "pcm_s32be" },
	{ AV_CODEC_ID_PCM_S32LE, "pcm_s32le" }, { AV_CODEC_ID_PCM_F32BE, "pcm_f32be" },
	{ AV_CODEC_ID_PCM_F32LE, "pcm_f32le" }, { AV_CODEC_ID_PCM_F64BE, "pcm_f64be" },
	{ AV_CODEC_ID_PCM_F64LE, "pcm_f64le" },
};
#define FF_CODECS                                                                             \
	"flac,mp3float,vorbis,opus,aac,alac,amrnb,amrwb,pcm_s8,pcm_s16be,pcm_s16le,pcm_s24be," \
	"pcm_s24le,pcm_s32be,pcm_s32le,pcm_f32be,pcm_f32le,pcm_f64be,pcm_f64le"

#define FF_IO_BUFFER 65536
#define FF_MIN_RATE 8000
#define FF_MAX_RATE 192000
#define FF_MAX_CHANNELS 64

struct ff_io {
	int fd;
	uint64_t size;
	uint64_t pos;
};

static int ff_read(void *opaque, uint8_t *buf, int size)
{
	struct ff_io *io = opaque;
	size_t got;
	int rc = fileio_read(io->fd, buf, (size_t)size, (int64_t)io->pos, &got);

	if (got == 0)
		return rc < 0 ? AVERROR(-rc) : AVERROR_EOF;
	io->pos += (uint64_t)got;
	return (int)got;
}

static int64_t ff_seek(void *opaque, int64_t offset, int whence)
{
	struct ff_io *io = opaque;

	switch (whence & ~AVSEEK_FORCE) {
	case AVSEEK_SIZE: return (int64_t)io->size;
	case SEEK_SET: break;
	case SEEK_CUR: offset += (int64_t)io->pos; break;
	case SEEK_END: offset += (int64_t)io->size; break;
	default: return AVERROR(EINVAL);
	}
	if (offset < 0)
		return AVERROR(EINVAL);
	io->pos = (uint64_t)offset;
	return offset;
}

/* No demuxer may open anything else (mov references, playlists, ...). */
static int ff_deny_open(struct AVFormatContext *s, AVIOContext **pb, const char *url, int flags,
                        AVDictionary **options)
{
	(void)s;
	(void)pb;
	(void)flags;
	(void)options;
	log_debug("media: refused a nested open of %s", url);
	return AVERROR(EPERM);
}

/* FFmpeg's errors become ours here; its message is logged. */
static int ff_translate(int averr, const char *what, const char *fmt_name, char *err, size_t errlen)
{
	char msg[128];

	log_debug("media: %s: %s", what, media__av_strerror(averr, msg, sizeof(msg)));
	if (averr == AVERROR(ENOMEM)) {
		set_err(err, errlen, "out of memory decoding %s", fmt_name);
		return -ENOMEM;
	}
	set_err(err, errlen, "corrupt data: %s %s (%s)", fmt_name, what, msg);
	return SAYIN_EBADDATA;
}

static const struct ff_codec *ff_codec_for(enum AVCodecID id)
{
	for (size_t i = 0; i < sizeof(ff_codecs) / sizeof(ff_codecs[0]); i++) {
		if (ff_codecs[i].id == id)
			return &ff_codecs[i];
	}
	return NULL;
}

/* Averages a decoded frame's channels into mono. Non-finite floats become
 * silence; everything is clamped to [-1, 1] like the WAV reader does. */
static int ff_to_mono(const AVFrame *fr, float *mono)
{
	enum AVSampleFormat fmt = (enum AVSampleFormat)fr->format;
	enum AVSampleFormat packed = av_get_packed_sample_fmt(fmt);
	int planar = av_sample_fmt_is_planar(fmt);
	int nch = fr->ch_layout.nb_channels;
	float scale = 1.0f / (float)nch;

	for (int i = 0; i < fr->nb_samples; i++) {
		float sum = 0.0f;

		for (int c = 0; c < nch; c++) {
			const uint8_t *base = fr->extended_data[planar ? c : 0];
			size_t k = planar ? (size_t)i : (size_t)i * (size_t)nch + (size_t)c;
			float v;

			switch (packed) {
			case AV_SAMPLE_FMT_U8: v = ((float)base[k] - 128.0f) / 128.0f; break;
			case AV_SAMPLE_FMT_S16: v = (float)((const int16_t *)base)[k] / 32768.0f; break;
			case AV_SAMPLE_FMT_S32:
				v = (float)((double)((const int32_t *)base)[k] / 2147483648.0);
				break;
			case AV_SAMPLE_FMT_S64:
				v = (float)((double)((const int64_t *)base)[k] / 9223372036854775808.0);
				break;
			case AV_SAMPLE_FMT_FLT: v = ((const float *)base)[k]; break;
			case AV_SAMPLE_FMT_DBL: v = (float)((const double *)base)[k]; break;
			default: return -1;
			}
			sum += media__clamp_sample(v);
		}
		mono[i] = sum * scale;
	}
	return 0;
}

struct ff_state {
	struct ff_io io;
	AVIOContext *pb;
	AVFormatContext *fmt;
	AVCodecContext *dec;
	AVPacket *pkt;
	AVFrame *frame;
	media__resampler rs;
	bool rs_live;
	float *mono;
	int mono_cap;
	int stream;
	uint64_t limit;         /* input frames allowed at the stream's rate */
	uint64_t max_duration_ms;
	const char *name;       /* short format name, for messages */
};

/* Takes one decoded frame: checks it, then downmixes, counts and resamples. */
static int ff_take_frame(struct ff_state *s, media__info *info, const media__sink *sink,
                         char *err, size_t errlen)
{
	AVFrame *fr = s->frame;
	int nch = fr->ch_layout.nb_channels;
	int rc;

	if (!s->rs_live) {
		if (fr->sample_rate < FF_MIN_RATE || fr->sample_rate > FF_MAX_RATE) {
			set_err(err, errlen, "unsupported format: sample rate %d Hz (%d..%d)",
			        fr->sample_rate, FF_MIN_RATE, FF_MAX_RATE);
			return SAYIN_EUNSUPPORTED;
		}
		if (nch < 1 || nch > FF_MAX_CHANNELS) {
			set_err(err, errlen, "unsupported format: %d channels (1..%d)", nch,
			        FF_MAX_CHANNELS);
			return SAYIN_EUNSUPPORTED;
		}
		info->rate = (unsigned)fr->sample_rate;
		info->channels = (unsigned)nch;
		s->limit = media__frame_limit(s->max_duration_ms, info->rate);
		rc = media__resampler_init(&s->rs, info->rate, sink, err, errlen);
		s->rs_live = true;
		if (rc != 0)
			return rc;
	}
	if ((unsigned)fr->sample_rate != info->rate || (unsigned)nch != info->channels) {
		set_err(err, errlen, "unsupported format: the sample rate or channel count changes "
		                     "mid-stream");
		return SAYIN_EUNSUPPORTED;
	}
	if (fr->nb_samples <= 0)
		return 0;
	/* Counted before any work, so a decompression bomb stops here. */
	info->input_frames += (uint64_t)fr->nb_samples;
	if (info->input_frames > s->limit)
		return media__too_long(s->max_duration_ms, err, errlen);
	if (fr->nb_samples > s->mono_cap) {
		float *m = realloc(s->mono, (size_t)fr->nb_samples * sizeof(float));
		if (m == NULL) {
			set_err(err, errlen, "out of memory decoding %s", s->name);
			return -ENOMEM;
		}
		s->mono = m;
		s->mono_cap = fr->nb_samples;
	}
	if (ff_to_mono(fr, s->mono) != 0) {
		set_err(err, errlen, "unsupported format: decoder sample format %s",
		        av_get_sample_fmt_name((enum AVSampleFormat)fr->format));
		return SAYIN_EUNSUPPORTED;
	}
	rc = media__resampler_feed(&s->rs, s->mono, (size_t)fr->nb_samples);
	if (rc == SAYIN_EENCODE)
		set_err(err, errlen, "resampling from %u Hz failed", info->rate);
	return rc;
}

/* Sends a packet (NULL: drain) and takes every frame that comes out. */
static int ff_decode(struct ff_state *s, const AVPacket *pkt, media__info *info,
                     const media__sink *sink, char *err, size_t errlen)
{
	int r = avcodec_send_packet(s->dec, pkt);

	if (r < 0 && r != AVERROR_EOF)
		return ff_translate(r, "audio does not decode", s->name, err, errlen);
	for (;;) {
		int rc;

		r = avcodec_receive_frame(s->dec, s->frame);
		if (r == AVERROR(EAGAIN) || r == AVERROR_EOF)
			return 0;
		if (r < 0)
			return ff_translate(r, "audio does not decode", s->name, err, errlen);
		rc = ff_take_frame(s, info, sink, err, errlen);
		av_frame_unref(s->frame);
		if (rc != 0)
			return rc;
	}
}

/* Opens the container, picks the first audio stream and its decoder. */
static int ff_open(struct ff_state *s, media__info *info, char *err, size_t errlen)
{
	const AVInputFormat *ifmt = NULL;
	const struct ff_codec *codec;
	const AVCodec *decoder;
	AVDictionary *opts = NULL;
	unsigned char *buf = av_malloc(FF_IO_BUFFER);
	int r;

	if (buf == NULL)
		return -ENOMEM;
	s->pb = avio_alloc_context(buf, FF_IO_BUFFER, 0, &s->io, ff_read, NULL, ff_seek);
	if (s->pb == NULL) {
		av_free(buf);
		return -ENOMEM;
	}
	/* The format comes from the bytes alone: no file name is given. */
	r = av_probe_input_buffer2(s->pb, &ifmt, "", NULL, 0, 1 << 20);
	/* Running out of memory says nothing about the format. */
	if (r == AVERROR(ENOMEM)) {
		set_err(err, errlen, "out of memory detecting the format");
		return -ENOMEM;
	}
	/* A weak match is a guess (random bytes can look like MP3 frames). */
	if (r < AVPROBE_SCORE_MAX / 4 || ifmt == NULL) {
		set_err(err, errlen, "unsupported format: not a recording in a format we recognise");
		return SAYIN_EFORMAT;
	}
	if (av_match_list(ifmt->name, FF_FORMATS, ',') <= 0) {
		set_err(err, errlen, "unsupported format: %s (%s)",
		        ifmt->long_name ? ifmt->long_name : ifmt->name, ifmt->name);
		return SAYIN_EFORMAT;
	}
	snprintf(info->format, sizeof(info->format), "%s", ifmt->name);
	*strchrnul(info->format, ',') = '\0';
	s->name = info->format;

	s->fmt = avformat_alloc_context();
	if (s->fmt == NULL)
		return -ENOMEM;
	s->fmt->pb = s->pb;
	s->fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
	s->fmt->io_open = ff_deny_open;
	s->fmt->error_recognition = AV_EF_CRCCHECK | AV_EF_BITSTREAM | AV_EF_EXPLODE;
	av_dict_set(&opts, "format_whitelist", FF_FORMATS, 0);
	av_dict_set(&opts, "codec_whitelist", FF_CODECS, 0);
	av_dict_set(&opts, "protocol_whitelist", "none", 0);
	r = avformat_open_input(&s->fmt, "", ifmt, &opts);
	av_dict_free(&opts);
	if (r < 0) {
		s->fmt = NULL; /* freed by avformat_open_input */
		return ff_translate(r, "headers do not parse", s->name, err, errlen);
	}
	/* Streams we do not decode are not even demuxed. */
	s->stream = -1;
	for (unsigned i = 0; i < s->fmt->nb_streams; i++) {
		AVStream *st = s->fmt->streams[i];
		if (s->stream < 0 && st->codecpar->codec_type == AVMEDIA_TYPE_AUDIO)
			s->stream = (int)i;
		else
			st->discard = AVDISCARD_ALL;
	}
	if (s->stream < 0) {
		set_err(err, errlen, "no audio track in this %s file (a video without sound?)",
		        s->name);
		return SAYIN_EEMPTY;
	}
	codec = ff_codec_for(s->fmt->streams[s->stream]->codecpar->codec_id);
	if (codec == NULL) {
		set_err(err, errlen, "unsupported format: %s audio in %s",
		        avcodec_get_name(s->fmt->streams[s->stream]->codecpar->codec_id), s->name);
		return SAYIN_EUNSUPPORTED;
	}
	{
		size_t used = strlen(info->format);
		snprintf(info->format + used, sizeof(info->format) - used, "/%s",
		         avcodec_get_name(codec->id));
	}
	decoder = avcodec_find_decoder_by_name(codec->decoder);
	if (decoder == NULL) {
		set_err(err, errlen, "unsupported format: this FFmpeg has no %s decoder",
		        codec->decoder);
		return SAYIN_EUNSUPPORTED;
	}
	s->dec = avcodec_alloc_context3(decoder);
	if (s->dec == NULL)
		return -ENOMEM;
	r = avcodec_parameters_to_context(s->dec, s->fmt->streams[s->stream]->codecpar);
	if (r < 0)
		return ff_translate(r, "audio parameters are invalid", s->name, err, errlen);
	/* One thread, and decode errors are errors, not glitches to skip. */
	s->dec->thread_count = 1;
	s->dec->err_recognition = AV_EF_CRCCHECK | AV_EF_BITSTREAM | AV_EF_EXPLODE;
	av_dict_set(&opts, "codec_whitelist", FF_CODECS, 0);
	r = avcodec_open2(s->dec, decoder, &opts);
	av_dict_free(&opts);
	if (r < 0)
		return ff_translate(r, "audio decoder does not open", s->name, err, errlen);
	s->pkt = av_packet_alloc();
	s->frame = av_frame_alloc();
	if (s->pkt == NULL || s->frame == NULL)
		return -ENOMEM;
	return 0;
}

/* The duration the container declares for the stream, in seconds; < 0 when
 * it declares none or only estimates one from the bitrate. */
static double ff_declared_seconds(const struct ff_state *s)
{
	const AVStream *st = s->fmt->streams[s->stream];

	if (s->fmt->duration_estimation_method == AVFMT_DURATION_FROM_BITRATE)
		return -1.0;
	if (st->duration != AV_NOPTS_VALUE && st->duration > 0)
		return (double)st->duration * av_q2d(st->time_base);
	/* The file's duration covers every track (Matroska keeps no other):
	 * it is the audio's only when there is nothing else. */
	if (s->fmt->nb_streams == 1 && s->fmt->duration != AV_NOPTS_VALUE && s->fmt->duration > 0)
		return (double)s->fmt->duration / AV_TIME_BASE;
	return -1.0;
}

int media__decode_ffmpeg(int fd, uint64_t size, uint64_t max_duration_ms,
                         const media__sink *sink, media__info *info, char *err, size_t errlen)
{
	struct ff_state s = { .io = { .fd = fd, .size = size }, .max_duration_ms = max_duration_ms,
		              .limit = UINT64_MAX, .name = "input" };
	double declared, decoded;
	int rc = ff_open(&s, info, err, errlen);

	if (rc == -ENOMEM)
		set_err(err, errlen, "out of memory opening the recording");
	if (rc == 0)
		rc = media__check_container(fd, size, s.name, err, errlen);
	if (rc != 0)
		goto out;
	/* A header that declares too long a recording is refused before any
	 * decoding (the limit is checked again on the samples themselves). */
	declared = ff_declared_seconds(&s);
	if (max_duration_ms > 0 && declared > (double)max_duration_ms / 1000.0 + 1.0) {
		rc = media__too_long(max_duration_ms, err, errlen);
		goto out;
	}
	for (;;) {
		int r = av_read_frame(s.fmt, s.pkt);

		if (r == AVERROR_EOF)
			break;
		if (r < 0) {
			rc = ff_translate(r, "container does not demux", s.name, err, errlen);
			goto out;
		}
		if (s.pkt->stream_index == s.stream)
			rc = ff_decode(&s, s.pkt, info, sink, err, errlen);
		av_packet_unref(s.pkt);
		if (rc != 0)
			goto out;
	}
	rc = ff_decode(&s, NULL, info, sink, err, errlen);
	if (rc != 0)
		goto out;
	if (!s.rs_live || info->input_frames == 0) {
		set_err(err, errlen, "no samples: the %s file holds no audio", s.name);
		rc = SAYIN_EEMPTY;
		goto out;
	}
	/* FFmpeg stops quietly at a cut-off end; the header's duration tells. */
	decoded = (double)info->input_frames / info->rate;
	if (declared > 0 && decoded < declared * 0.99 - 0.1) {
		set_err(err, errlen, "corrupt data: the %s file ends after %.2f s of the %.2f s its "
		                     "header declares (truncated?)", s.name, decoded, declared);
		rc = SAYIN_EBADDATA;
		goto out;
	}
	rc = media__resampler_finish(&s.rs, info->input_frames, &info->frames, err, errlen);
out:
	if (s.rs_live)
		media__resampler_free(&s.rs);
	free(s.mono);
	av_frame_free(&s.frame);
	av_packet_free(&s.pkt);
	avcodec_free_context(&s.dec);
	avformat_close_input(&s.fmt);
	if (s.pb != NULL)
		av_freep(&s.pb->buffer);
	avio_context_free(&s.pb);
	return rc;
}

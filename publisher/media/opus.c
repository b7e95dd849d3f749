/* opus: the Ogg Opus (RFC 7845) encoder: libopus for the packets, libogg for
 * the pages, into a buffer or a file, with every packet also handed to an
 * optional sink (the encoding pass's verifier). */
#include "media/internal.h"

#include "core/buf.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ogg/ogg.h>
#include <opus.h>

#define set_err media__set_err

static void put_le16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)(v & 0xff);
	p[1] = (unsigned char)(v >> 8);
}

static void put_le32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v & 0xff);
	p[1] = (unsigned char)((v >> 8) & 0xff);
	p[2] = (unsigned char)((v >> 16) & 0xff);
	p[3] = (unsigned char)(v >> 24);
}

/* OPUS_APPLICATION_VOIP rather than AUDIO: the input is one person talking
 * into a phone. VOIP mode high-passes below the voice band (handling noise,
 * rumble) and tunes its analysis for intelligibility, which is where bits
 * matter at 32 kb/s; AUDIO mode aims at faithful music, which we never
 * carry. Both have the same lookahead (2.5 ms + 4 ms at 48 kHz). */
#define OPUS_APP OPUS_APPLICATION_VOIP
#define OPUS_FRAME MEDIA__OPUS_FRAME
#define OPUS_MAX_PACKET 4000      /* libopus's recommended output buffer */
#define OPUS_DEFAULT_BITRATE 32000
#define OPUS_DEFAULT_COMPLEXITY 10
/* Audio pages are cut after at most this many samples even when the 4 KiB
 * that ogg_stream_pageout waits for has not filled (low bitrates), so a
 * player can seek and start within about a second. */
#define OGG_MAX_PAGE_SAMPLES 48000

/* Where the Ogg pages go: a growing buffer, or (fd >= 0) a file. */
struct ogg_out {
	buf buf;
	int fd;
};

static int write_page(struct ogg_out *o, const ogg_page *og)
{
	int rc;

	if (o->fd >= 0) {
		rc = fileio_write(o->fd, og->header, (size_t)og->header_len, -1);
		if (rc == 0)
			rc = fileio_write(o->fd, og->body, (size_t)og->body_len, -1);
		return rc;
	}
	rc = buf_append(&o->buf, og->header, (size_t)og->header_len);
	if (rc == 0)
		rc = buf_append(&o->buf, og->body, (size_t)og->body_len);
	return rc;
}

/* Writes every complete page (flush: every buffered packet). Sets *granule
 * to the granule position of the last page written that ends a packet. */
static int drain_pages(ogg_stream_state *os, struct ogg_out *o, bool flush, int64_t *granule)
{
	ogg_page og;

	while (flush ? ogg_stream_flush(os, &og) : ogg_stream_pageout(os, &og)) {
		int rc = write_page(o, &og);

		if (rc < 0)
			return rc;
		if (ogg_page_granulepos(&og) >= 0)
			*granule = ogg_page_granulepos(&og);
	}
	return 0;
}

/* Vorbis comment field names: printable ASCII without '='. */
static bool comment_key_ok(const char *key)
{
	if (key == NULL || key[0] == '\0')
		return false;
	for (const char *p = key; *p != '\0'; p++) {
		if (*p < 0x20 || *p > 0x7d || *p == '=')
			return false;
	}
	return true;
}

/* Builds the OpusTags packet (RFC 7845 section 5.2). */
static int build_tags(const media_opus_options *opt, buf *b, char *err, size_t errlen)
{
	const char *version = opus_get_version_string();
	const char *prefix = "sayin ";
	unsigned char le[4];
	size_t vendor_len = strlen(prefix) + strlen(version);
	int rc;

	if (opt->n_comments > UINT32_MAX) {
		set_err(err, errlen, "too many comments");
		return SAYIN_EINVAL;
	}
	put_le32(le, (uint32_t)vendor_len);
	rc = buf_append(b, "OpusTags", 8);
	if (rc == 0)
		rc = buf_append(b, le, 4);
	if (rc == 0)
		rc = buf_append(b, prefix, strlen(prefix));
	if (rc == 0)
		rc = buf_append(b, version, strlen(version));
	put_le32(le, (uint32_t)opt->n_comments);
	if (rc == 0)
		rc = buf_append(b, le, 4);
	for (size_t i = 0; rc == 0 && i < opt->n_comments; i++) {
		const media_comment *c = &opt->comments[i];
		size_t klen = strlen(c->key), vlen = strlen(c->value);

		if (klen + 1 + vlen > UINT32_MAX) {
			set_err(err, errlen, "comment %s is too long", c->key);
			return SAYIN_EINVAL;
		}
		put_le32(le, (uint32_t)(klen + 1 + vlen));
		rc = buf_append(b, le, 4);
		if (rc == 0)
			rc = buf_append(b, c->key, klen);
		if (rc == 0)
			rc = buf_append(b, "=", 1);
		if (rc == 0)
			rc = buf_append(b, c->value, vlen);
	}
	if (rc < 0)
		set_err(err, errlen, "out of memory building OpusTags");
	return rc;
}

/* Resolves defaults and checks the options. Returns 0 or SAYIN_EINVAL. */
static int check_options(const media_opus_options *opt, int *bitrate, int *complexity,
                         char *err, size_t errlen)
{
	*bitrate = opt->bitrate == 0 ? OPUS_DEFAULT_BITRATE : opt->bitrate;
	*complexity = opt->complexity == -1 ? OPUS_DEFAULT_COMPLEXITY : opt->complexity;
	if (*bitrate < 6000 || *bitrate > 510000) {
		set_err(err, errlen, "Opus bitrate %d is outside 6000..510000", opt->bitrate);
		return SAYIN_EINVAL;
	}
	if (*complexity < 0 || *complexity > 10) {
		set_err(err, errlen, "Opus complexity %d is outside 0..10", opt->complexity);
		return SAYIN_EINVAL;
	}
	if (opt->n_comments > 0 && opt->comments == NULL) {
		set_err(err, errlen, "%zu comments but no comment array", opt->n_comments);
		return SAYIN_EINVAL;
	}
	for (size_t i = 0; i < opt->n_comments; i++) {
		if (!comment_key_ok(opt->comments[i].key)) {
			set_err(err, errlen, "comment %zu has an invalid key", i);
			return SAYIN_EINVAL;
		}
		if (opt->comments[i].value == NULL) {
			set_err(err, errlen, "comment %s has no value", opt->comments[i].key);
			return SAYIN_EINVAL;
		}
	}
	return 0;
}

/* Creates and configures the encoder. Returns 0 or SAYIN_EENCODE (logged). */
static int create_encoder(int bitrate, int complexity, OpusEncoder **enc, int *lookahead,
                          char *err, size_t errlen)
{
	int oerr = OPUS_OK;

	*enc = opus_encoder_create(MEDIA_RATE, 1, OPUS_APP, &oerr);
	if (*enc == NULL || oerr != OPUS_OK) {
		log_error("media: opus_encoder_create: %s", opus_strerror(oerr));
		set_err(err, errlen, "cannot create the Opus encoder: %s", opus_strerror(oerr));
		*enc = NULL;
		return SAYIN_EENCODE;
	}
	/* Unconstrained VBR: a file has no channel buffer to respect, so let
	 * hard passages take the bits. */
	oerr = opus_encoder_ctl(*enc, OPUS_SET_BITRATE(bitrate));
	if (oerr == OPUS_OK)
		oerr = opus_encoder_ctl(*enc, OPUS_SET_VBR(1));
	if (oerr == OPUS_OK)
		oerr = opus_encoder_ctl(*enc, OPUS_SET_VBR_CONSTRAINT(0));
	if (oerr == OPUS_OK)
		oerr = opus_encoder_ctl(*enc, OPUS_SET_COMPLEXITY(complexity));
	if (oerr == OPUS_OK)
		oerr = opus_encoder_ctl(*enc, OPUS_SET_SIGNAL(OPUS_SIGNAL_VOICE));
	if (oerr == OPUS_OK)
		oerr = opus_encoder_ctl(*enc, OPUS_GET_LOOKAHEAD(lookahead));
	if (oerr == OPUS_OK && (*lookahead < 0 || *lookahead > UINT16_MAX))
		oerr = OPUS_INTERNAL_ERROR;
	if (oerr != OPUS_OK) {
		log_error("media: opus_encoder_ctl: %s", opus_strerror(oerr));
		set_err(err, errlen, "cannot configure the Opus encoder: %s", opus_strerror(oerr));
		opus_encoder_destroy(*enc);
		*enc = NULL;
		return SAYIN_EENCODE;
	}
	return 0;
}

/* Queues a packet; libogg fails only when it cannot allocate. */
static int put_packet(ogg_stream_state *os, unsigned char *data, long len, int bos, int eos,
                      int64_t granule, int64_t packetno, char *err, size_t errlen)
{
	ogg_packet op = {
		.packet = data,
		.bytes = len,
		.b_o_s = bos,
		.e_o_s = eos,
		.granulepos = granule,
		.packetno = packetno,
	};

	if (ogg_stream_packetin(os, &op) != 0) {
		log_error("media: ogg_stream_packetin failed (out of memory?)");
		set_err(err, errlen, "the Ogg muxer failed");
		return SAYIN_EENCODE;
	}
	return 0;
}

int media__opus_encode(media__reader read, void *ctx, size_t frames, unsigned input_rate,
                       const media_opus_options *opt, const media__packet_sink *sink, int out_fd,
                       media_buffer *out, char *err, size_t errlen)
{
	static const media_opus_options defaults = { .bitrate = 0, .complexity = -1 };
	OpusEncoder *enc = NULL;
	ogg_stream_state os;
	bool os_live = false;
	struct ogg_out file = { .buf = BUF_INIT, .fd = out_fd };
	buf tags = BUF_INIT;
	unsigned char head[19];
	unsigned char packet[OPUS_MAX_PACKET];
	float pcm[OPUS_FRAME];
	int bitrate, complexity, lookahead = 0, rc;
	int64_t page_granule = 0;
	uint64_t n_packets, end_granule;

	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (opt == NULL)
		opt = &defaults;
	if (frames == 0) {
		set_err(err, errlen, "no samples to encode");
		return SAYIN_EEMPTY;
	}
	/* Granule positions are signed 64-bit. */
	if ((uint64_t)frames > (uint64_t)INT64_MAX - 2 * OPUS_FRAME - UINT16_MAX) {
		set_err(err, errlen, "too many samples to encode");
		return SAYIN_EINVAL;
	}
	rc = check_options(opt, &bitrate, &complexity, err, errlen);
	if (rc != 0)
		return rc;
	rc = create_encoder(bitrate, complexity, &enc, &lookahead, err, errlen);
	if (rc != 0)
		return rc;
	if (sink != NULL && sink->start(sink->ctx, lookahead) != 0) {
		set_err(err, errlen, "checking the encoded output failed");
		rc = SAYIN_EENCODE;
		goto out;
	}
	if (ogg_stream_init(&os, (int)opt->serial) != 0) {
		log_error("media: ogg_stream_init failed (out of memory?)");
		set_err(err, errlen, "the Ogg muxer failed");
		rc = SAYIN_EENCODE;
		goto out;
	}
	os_live = true;

	/* OpusHead (RFC 7845 section 5.1), alone on the first page. */
	memcpy(head, "OpusHead", 8);
	head[8] = 1;                              /* version */
	head[9] = 1;                              /* channels */
	put_le16(head + 10, (uint16_t)lookahead); /* pre-skip */
	put_le32(head + 12, input_rate);          /* original rate, informational */
	put_le16(head + 16, 0);                   /* output gain */
	head[18] = 0;                             /* mapping family: mono/stereo */
	rc = put_packet(&os, head, sizeof(head), 1, 0, 0, 0, err, errlen);
	if (rc == 0)
		rc = drain_pages(&os, &file, true, &page_granule);

	/* OpusTags, flushed so that audio starts on a fresh page. */
	if (rc == 0)
		rc = build_tags(opt, &tags, err, errlen);
	if (rc == 0 && tags.len > LONG_MAX) {
		set_err(err, errlen, "OpusTags is too large");
		rc = SAYIN_EINVAL;
	}
	if (rc == 0)
		rc = put_packet(&os, (unsigned char *)tags.data, (long)tags.len, 0, 0, 0, 1, err, errlen);
	if (rc == 0)
		rc = drain_pages(&os, &file, true, &page_granule);
	if (rc == -ENOMEM)
		set_err(err, errlen, "out of memory writing Ogg pages");
	else if (rc < 0 && rc > -4096 && (err == NULL || err[0] == '\0'))
		set_err(err, errlen, "cannot write the Ogg stream: %s", strerror(-rc));
	if (rc != 0)
		goto out;

	/* Encode pre-skip extra samples of silence so the encoder's lookahead
	 * flushes the real tail out; the last page's granule then trims the
	 * padding so a decoder yields exactly `frames` samples. */
	n_packets = ((uint64_t)frames + (uint64_t)lookahead + OPUS_FRAME - 1) / OPUS_FRAME;
	end_granule = (uint64_t)lookahead + frames;
	for (uint64_t k = 0; k < n_packets; k++) {
		uint64_t start = k * OPUS_FRAME;
		size_t n = 0;
		bool last = k + 1 == n_packets;
		int64_t granule = last ? (int64_t)end_granule : (int64_t)((k + 1) * OPUS_FRAME);
		opus_int32 len;

		if (start < frames) {
			n = frames - (size_t)start;
			if (n > OPUS_FRAME)
				n = OPUS_FRAME;
			rc = read(ctx, pcm, n);
			if (rc != 0) {
				set_err(err, errlen, "reading the samples to encode failed: %s",
				        sayin_strerror(rc));
				goto out;
			}
		}
		memset(pcm + n, 0, (OPUS_FRAME - n) * sizeof(float));
		len = opus_encode_float(enc, pcm, OPUS_FRAME, packet, sizeof(packet));
		if (len < 0) {
			log_error("media: opus_encode_float: %s", opus_strerror(len));
			set_err(err, errlen, "the Opus encoder failed: %s", opus_strerror(len));
			rc = SAYIN_EENCODE;
			goto out;
		}
		if (sink != NULL && sink->packet(sink->ctx, packet, len) != 0) {
			set_err(err, errlen, "checking the encoded output failed");
			rc = SAYIN_EENCODE;
			goto out;
		}
		rc = put_packet(&os, packet, len, 0, last, granule, (int64_t)(2 + k), err, errlen);
		if (rc != 0)
			goto out;
		/* The EOS packet forces out the final page. */
		rc = drain_pages(&os, &file,
		                 last || granule - page_granule >= OGG_MAX_PAGE_SAMPLES, &page_granule);
		if (rc != 0) {
			if (rc == -ENOMEM)
				set_err(err, errlen, "out of memory writing Ogg pages");
			else
				set_err(err, errlen, "cannot write the Ogg stream: %s", strerror(-rc));
			goto out;
		}
	}
	if (out_fd >= 0 && out == NULL) {
		rc = 0;
	} else if (out_fd >= 0) {
		rc = media__read_back(out_fd, out);
		if (rc != 0) {
			set_err(err, errlen, "cannot read back the encoded stream: %s", strerror(-rc));
			goto out;
		}
	} else {
		out->data = (unsigned char *)buf_take(&file.buf, &out->len);
	}
out:
	if (os_live)
		ogg_stream_clear(&os);
	opus_encoder_destroy(enc);
	buf_free(&tags);
	buf_free(&file.buf);
	return rc;
}

struct mem_reader {
	const float *samples;
	size_t pos;
};

static int mem_read(void *ctx, float *pcm, size_t n)
{
	struct mem_reader *r = ctx;

	memcpy(pcm, r->samples + r->pos, n * sizeof(float));
	r->pos += n;
	return 0;
}

int media_encode_opus(const media_audio *audio, const media_opus_options *opt, media_buffer *out,
                      char *err, size_t errlen)
{
	struct mem_reader r;
	int rc = media__enter_encode(audio, out, "media_encode_opus: no audio or no output", err,
	                             errlen);

	if (rc != 0)
		return rc;
	r.samples = audio->samples;
	r.pos = 0;
	return media__opus_encode(mem_read, &r, audio->frames, audio->input_rate, opt, NULL, -1, out,
	                          err, errlen);
}

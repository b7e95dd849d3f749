/* media: the Ogg Opus (RFC 7845) encoder built on libopus and libogg, and the
 * pipeline that runs an isolated decode, loudness normalization and the
 * encoder over a file. Decoding lives in decode.c, the limiter in limiter.c. */
#include "media/internal.h"

#include "core/error.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ebur128.h>
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

/* ---- Ogg Opus encoding ------------------------------------------------- */

/* OPUS_APPLICATION_VOIP rather than AUDIO: the input is one person talking
 * into a phone. VOIP mode high-passes below the voice band (handling noise,
 * rumble) and tunes its analysis for intelligibility, which is where bits
 * matter at 32 kb/s; AUDIO mode aims at faithful music, which we never
 * carry. Both have the same lookahead (2.5 ms + 4 ms at 48 kHz). */
#define OPUS_APP OPUS_APPLICATION_VOIP
#define OPUS_FRAME 960            /* 20 ms at 48 kHz */
#define OPUS_MAX_PACKET 4000      /* libopus's recommended output buffer */
#define OPUS_DEFAULT_BITRATE 32000
#define OPUS_DEFAULT_COMPLEXITY 10
/* Audio pages are cut after at most this many samples even when the 4 KiB
 * that ogg_stream_pageout waits for has not filled (low bitrates), so a
 * player can seek and start within about a second. */
#define OGG_MAX_PAGE_SAMPLES 48000

struct byte_buf {
	unsigned char *data;
	size_t len;
	size_t cap;
};

/* Returns 0 or -ENOMEM; the buffer is unchanged on failure. */
static int buf_append(struct byte_buf *b, const void *p, size_t n)
{
	if (n > SIZE_MAX - b->len)
		return -ENOMEM;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 16384;
		unsigned char *d;

		while (cap < b->len + n) {
			if (cap > SIZE_MAX / 2)
				return -ENOMEM;
			cap *= 2;
		}
		d = realloc(b->data, cap);
		if (d == NULL)
			return -ENOMEM;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

/* Where the Ogg pages go: a growing buffer, or (fd >= 0) a file. */
struct ogg_out {
	struct byte_buf buf;
	int fd;
};

static int write_page(struct ogg_out *o, const ogg_page *og)
{
	int rc;

	if (o->fd >= 0) {
		rc = media__write_all(o->fd, og->header, (size_t)og->header_len);
		if (rc == 0)
			rc = media__write_all(o->fd, og->body, (size_t)og->body_len);
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
static int build_tags(const media_opus_options *opt, struct byte_buf *b, char *err,
                      size_t errlen)
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

/* Who else sees what the encoder makes: start gets the pre-skip (the
 * encoder's lookahead) before any packet, packet each packet in order.
 * Either returns 0 or an error, which stops the encoding. */
struct packet_sink {
	int (*start)(void *ctx, int lookahead);
	int (*packet)(void *ctx, const unsigned char *data, int len);
	void *ctx;
};

/* media_encode_opus on a stream of `frames` samples pulled from read, in
 * reads of OPUS_FRAME samples (fewer for the last); every packet also goes
 * to sink when it is not NULL. With out_fd >= 0 the pages are written
 * there (from its current offset) and out (unless NULL: the file is the
 * result) receives the file read back in one exact-size buffer. */
static int encode_stream(media__reader read, void *ctx, size_t frames, unsigned input_rate,
                         const media_opus_options *opt, const struct packet_sink *sink,
                         int out_fd, media_buffer *out, char *err, size_t errlen)
{
	static const media_opus_options defaults = { .bitrate = 0, .complexity = -1 };
	OpusEncoder *enc = NULL;
	ogg_stream_state os;
	bool os_live = false;
	struct ogg_out file = { .fd = out_fd };
	struct byte_buf tags = { 0 };
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
		rc = put_packet(&os, tags.data, (long)tags.len, 0, 0, 0, 1, err, errlen);
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
		out->data = file.buf.data;
		out->len = file.buf.len;
		file.buf.data = NULL;
	}
out:
	if (os_live)
		ogg_stream_clear(&os);
	opus_encoder_destroy(enc);
	free(tags.data);
	free(file.buf.data);
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

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (audio == NULL || out == NULL) {
		set_err(err, errlen, "media_encode_opus: no audio or no output");
		return SAYIN_EINVAL;
	}
	if (audio->frames == 0 || audio->samples == NULL) {
		set_err(err, errlen, "no samples to encode");
		return SAYIN_EEMPTY;
	}
	r.samples = audio->samples;
	r.pos = 0;
	return encode_stream(mem_read, &r, audio->frames, audio->input_rate, opt, NULL, -1, out, err,
	                     errlen);
}

void media_buffer_free(media_buffer *buf)
{
	if (buf == NULL)
		return;
	free(buf->data);
	buf->data = NULL;
	buf->len = 0;
}

/* ---- the pipeline ------------------------------------------------------ */

/* The limiter's ceiling sits below MEDIA_TRUE_PEAK_CEILING because the
 * promise is about the decoded stream, and Opus at 32 kb/s does not keep
 * the waveform: on espeak-ng speech it moved limited true peaks up by
 * 1.2-2.0 dB (with the high-pass below; 2.3-3.1 dB without it). */
#define LIMITER_CEILING_DB (MEDIA_TRUE_PEAK_CEILING - 2.5)
/* Opus in VOIP mode high-passes its input itself (an adaptive 60-100 Hz
 * filter). Its phase shift re-shapes peaks the limiter has just flattened,
 * by up to 3 dB on voiced speech, which then needs a second encoding with a
 * lower ceiling. A 100 Hz high-pass of our own before the limiter takes
 * out most of what the codec's filter would move, so the limiter sees
 * nearly the waveform the codec carries: the overshoot halves. */
#define HIGHPASS_HZ 100.0
/* What the codec takes off integrated loudness on speech at 32 kb/s
 * (measured on the test fixtures and the bench clip: -0.47 to -0.63 LU);
 * the limiter aims that much above target. */
#define CODEC_LOUDNESS_SHIFT (-0.5)
#define SILENCE_GATE_LUFS (-70.0) /* BS.1770's absolute gate */
/* Every loudness meter: integrated loudness in histogram mode, which keeps
 * the gating blocks' energies in 1000 bins of 0.1 dB instead of a list that
 * grows by 10 blocks per second, so memory does not grow with the length.
 * The bins cost at most 0.05 LU (libebur128's own tests). */
#define METER_MODE (EBUR128_MODE_I | EBUR128_MODE_M | EBUR128_MODE_HISTOGRAM)
#define PASS2_CHUNK 8192

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int media__open_tmp(const char *dir, char *err, size_t errlen)
{
	char path[4096];
	int fd = open(dir, O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600), n;

	if (fd >= 0)
		return fd;
	n = snprintf(path, sizeof(path), "%s/sayin-pcm.XXXXXX", dir);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		set_err(err, errlen, "temporary directory path is too long");
		return -ENAMETOOLONG;
	}
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0) {
		int rc = -errno;
		set_err(err, errlen, "cannot create a temporary file in %s: %s", dir, strerror(errno));
		return rc;
	}
	unlink(path);
	return fd;
}

int media__write_all(int fd, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int media__read_back(int fd, media_buffer *out)
{
	struct stat st;
	unsigned char *data;
	size_t len;

	memset(out, 0, sizeof(*out));
	if (fstat(fd, &st) != 0)
		return -errno;
	if (st.st_size <= 0 || (uint64_t)st.st_size > SIZE_MAX)
		return -EIO;
	len = (size_t)st.st_size;
	data = malloc(len);
	if (data == NULL)
		return -ENOMEM;
	for (size_t done = 0; done < len;) {
		ssize_t n = pread(fd, data + done, len - done, (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int rc = n < 0 ? -errno : -EIO;
			free(data);
			return rc;
		}
		done += (size_t)n;
	}
	out->data = data;
	out->len = len;
	return 0;
}

void media_file_close(media_file *f)
{
	if (f->len > 0)
		close(f->fd);
	f->fd = -1;
	f->len = 0;
}

/* The decoder child and what it has told us so far. */
struct child {
	pid_t pid;
	int fd;              /* its stdout */
	int64_t deadline;    /* monotonic ms */
	bool timed_out;
	int status;          /* from waitpid, once reaped */
	bool reaped;
};

/* Starts `exe __decode LEVEL MAX_MS` on the recording with its limits set
 * between fork and exec (async-signal-safe calls only there). */
static int spawn_decoder(const media_transcode_options *o, const char *exe, int file_fd,
                         struct child *c, char *err, size_t errlen)
{
	char max_ms[32], memory[32];
	char *argv[6];
	int fds[2];
	uint64_t cpu_s = o->decode_timeout_ms / 1000 + 2;
	struct rlimit cpu = { cpu_s, cpu_s };
	struct rlimit zero = { 0, 0 };
	struct rlimit nofile = { 16, 16 };

	snprintf(max_ms, sizeof(max_ms), "%llu", (unsigned long long)o->max_duration_ms);
	/* The child sets its address-space limit itself, after exec: the
	 * dynamic loader must not be the one to fail. */
	snprintf(memory, sizeof(memory), "%llu",
	         UNDER_ASAN ? 0ULL : (unsigned long long)o->decoder_memory);
	argv[0] = (char *)exe;
	argv[1] = (char *)MEDIA_DECODER_COMMAND;
	argv[2] = (char *)(o->log_level != NULL ? o->log_level : "info");
	argv[3] = max_ms;
	argv[4] = memory;
	argv[5] = NULL;
	if (pipe2(fds, O_CLOEXEC) != 0) {
		int rc = -errno;
		set_err(err, errlen, "cannot start the decoder: pipe: %s", strerror(errno));
		return rc;
	}
	c->pid = fork();
	if (c->pid < 0) {
		int rc = -errno;
		set_err(err, errlen, "cannot start the decoder: fork: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return rc;
	}
	if (c->pid == 0) {
		if (dup2(file_fd, 0) < 0 || dup2(fds[1], 1) < 0)
			_exit(127);
		close_range(3, ~0u, 0);
		/* The decoder dies with us, cannot gain privileges, and neither
		 * writes files nor opens more than a few descriptors. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
		setrlimit(RLIMIT_CPU, &cpu);
		setrlimit(RLIMIT_FSIZE, &zero);
		setrlimit(RLIMIT_CORE, &zero);
		setrlimit(RLIMIT_NOFILE, &nofile);
		execv(exe, argv);
		_exit(127);
	}
	close(fds[1]);
	c->fd = fds[0];
	c->deadline = mono_ms() + (int64_t)o->decode_timeout_ms;
	return 0;
}

/* Reads exactly len bytes from the child before its deadline. Returns 0,
 * 1 at a clean end of stream before any byte, SAYIN_EDECODER on a timeout
 * or a stream cut inside a record, or -errno. */
static int child_read(struct child *c, void *buf, size_t len)
{
	unsigned char *p = buf;
	size_t done = 0;

	while (done < len) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		int64_t left = c->deadline - mono_ms();
		ssize_t n;
		int r;

		if (left <= 0) {
			c->timed_out = true;
			return SAYIN_EDECODER;
		}
		r = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r <= 0)
			continue;
		n = read(c->fd, p + done, len - done);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		if (n == 0)
			return done == 0 ? 1 : SAYIN_EDECODER;
		done += (size_t)n;
	}
	return 0;
}

/* Reaps the child, killing it first when kill_it. */
static void child_reap(struct child *c, bool kill_it)
{
	if (c->pid <= 0 || c->reaped)
		return;
	if (kill_it)
		kill(c->pid, SIGKILL);
	while (waitpid(c->pid, &c->status, 0) < 0 && errno == EINTR)
		;
	c->reaped = true;
}

/* Why the child stopped talking, as one line. */
static int child_failure(struct child *c, const media_transcode_options *o, char *err,
                         size_t errlen)
{
	if (c->timed_out) {
		child_reap(c, true);
		set_err(err, errlen, "decoder timed out after %llu ms (decode-timeout-ms); killed",
		        (unsigned long long)o->decode_timeout_ms);
		return SAYIN_EDECODER;
	}
	/* It closed its end: it is exiting or has exited. Give it until the
	 * deadline, then kill it. */
	child_reap(c, false);
	if (WIFSIGNALED(c->status)) {
		int sig = WTERMSIG(c->status);
		set_err(err, errlen, "decoder crashed (signal %d, %s)%s", sig, strsignal(sig),
		        sig == SIGXCPU ? ": CPU time limit" : "");
		return SAYIN_EDECODER;
	}
	if (WIFEXITED(c->status) && WEXITSTATUS(c->status) == 127) {
		set_err(err, errlen, "decoder crashed: cannot start %s",
		        o->decoder_exe ? o->decoder_exe : "/proc/self/exe");
		return SAYIN_EDECODER;
	}
	set_err(err, errlen, "decoder crashed (exit %d) without a result",
	        WIFEXITED(c->status) ? WEXITSTATUS(c->status) : -1);
	return SAYIN_EDECODER;
}

/* State of pass 1: child -> temporary file, loudness, serial. */
struct pass1 {
	int tmp_fd;
	ebur128_state *meter;
	uint32_t hash;          /* FNV-1a of the samples' bytes */
	uint64_t frames;
	uint64_t limit;         /* samples the child may send */
	float buf[MEDIA__REC_MAX_SAMPLES];
};

/* Takes one SAMPLES record body (already read into p->buf). The child is
 * not trusted: its samples are made finite and clamped here too. */
static int take_samples(struct pass1 *p, size_t n, char *err, size_t errlen)
{
	const unsigned char *bytes = (const unsigned char *)p->buf;
	int rc;

	for (size_t i = 0; i < n; i++) {
		float v = p->buf[i];
		if (!isfinite(v))
			v = 0.0f;
		p->buf[i] = v > 1.0f ? 1.0f : v < -1.0f ? -1.0f : v;
	}
	for (size_t i = 0; i < n * sizeof(float); i++) {
		p->hash ^= bytes[i];
		p->hash *= 16777619u;
	}
	if (ebur128_add_frames_float(p->meter, p->buf, n) != EBUR128_SUCCESS) {
		set_err(err, errlen, "loudness measurement failed");
		return SAYIN_EENCODE;
	}
	rc = media__write_all(p->tmp_fd, p->buf, n * sizeof(float));
	if (rc != 0) {
		set_err(err, errlen, "cannot write the temporary file: %s", strerror(-rc));
		return rc;
	}
	p->frames += n;
	return 0;
}

/* Pass 1: runs the decoder child over the recording. */
static int run_decoder(const media_transcode_options *o, int file_fd, struct pass1 *p,
                       media__rec_end *end, char *err, size_t errlen)
{
	struct child c = { .pid = -1, .fd = -1 };
	const char *exe = o->decoder_exe != NULL ? o->decoder_exe : "/proc/self/exe";
	bool got_end = false;
	int rc = spawn_decoder(o, exe, file_fd, &c, err, errlen);

	if (rc != 0)
		return rc;
	while (!got_end) {
		media__rec_header h;

		rc = child_read(&c, &h, sizeof(h));
		if (rc == 1 || rc == SAYIN_EDECODER) {
			rc = child_failure(&c, o, err, errlen);
			goto out;
		}
		if (rc != 0)
			break;
		if (h.type == MEDIA__REC_SAMPLES && h.len > 0 && h.len % sizeof(float) == 0 &&
		    h.len <= sizeof(p->buf)) {
			rc = child_read(&c, p->buf, h.len);
			if (rc == 0 && p->frames + h.len / sizeof(float) > p->limit) {
				/* The child should have stopped: it is not to be trusted. */
				set_err(err, errlen, "too long: the decoder went past the %llu s limit",
				        (unsigned long long)(o->max_duration_ms / 1000));
				rc = SAYIN_ETOOLONG;
				break;
			}
			if (rc == 0)
				rc = take_samples(p, h.len / sizeof(float), err, errlen);
		} else if (h.type == MEDIA__REC_END && h.len == sizeof(*end)) {
			rc = child_read(&c, end, sizeof(*end));
			got_end = rc == 0;
		} else {
			set_err(err, errlen, "decoder crashed: it broke its protocol (record %u, %u bytes)",
			        h.type, h.len);
			rc = SAYIN_EDECODER;
			break;
		}
		if (rc == 1 || rc == SAYIN_EDECODER) {
			rc = child_failure(&c, o, err, errlen);
			goto out;
		}
		if (rc != 0)
			break;
	}
	/* What is left: -errno from poll or read, or a pass-1 error (err set). */
	if (rc < 0 && rc > -4096 && (err == NULL || err[0] == '\0'))
		set_err(err, errlen, "reading from the decoder failed: %s", strerror(-rc));
out:
	child_reap(&c, !got_end || rc != 0);
	if (c.fd >= 0)
		close(c.fd);
	if (rc == 0 && end->code == 0 && end->frames != p->frames) {
		set_err(err, errlen, "decoder crashed: it announced %llu samples and sent %llu",
		        (unsigned long long)end->frames, (unsigned long long)p->frames);
		rc = SAYIN_EDECODER;
	}
	return rc;
}

/* Integrated loudness; a clip shorter than one 400 ms gating block is
 * measured over its whole length instead. */
static double measure_lufs(ebur128_state *st, uint64_t frames)
{
	double lufs = -HUGE_VAL;

	if (frames >= (uint64_t)MEDIA_RATE * 4 / 10) {
		if (ebur128_loudness_global(st, &lufs) != EBUR128_SUCCESS)
			return -HUGE_VAL;
	} else {
		unsigned long ms = (unsigned long)(frames * 1000 / MEDIA_RATE);
		if (ebur128_loudness_window(st, ms > 0 ? ms : 1, &lufs) != EBUR128_SUCCESS)
			return -HUGE_VAL;
	}
	return lufs;
}

/* What an encoding gives. */
struct pass2_result {
	double lufs;            /* of the decoded Opus */
	double true_peak_db;    /* of the decoded Opus */
};

/* Everything an encoding needs besides gain and ceiling. */
struct encode_ctx {
	const media_transcode_options *o;
	const media_opus_options *oopt;
	int pcm_fd;             /* the decoded signal */
	int opus_fd;            /* the Ogg Opus stream is written here */
	uint64_t frames;
	media_result *out;
};

/* ---- threads ------------------------------------------------------------- */

/* The encoding pass runs as a pipeline of threads joined by FIFOs: a feeder
 * (high-pass, gain, limiter, waveform) hands 20 ms frames to the Opus
 * encoder (the calling thread), which hands packets to a verifier (decode,
 * loudness, true peak); an AAC thread takes the same frames as the encoder.
 * Opus dominates, so on two cores the others ride along almost for free.
 * Every stage sees its data in the same order whatever the timing, so the
 * bytes do not depend on the scheduling.
 *
 * A FIFO of records of up to FIFO_SLOT_BYTES, one producer, one consumer. */
#define FIFO_SLOTS 32
#define FIFO_SLOT_BYTES 4096 /* an Opus frame of floats or a packet */

#define FIFO_BATCH 8 /* a waiting side is woken once this many records can move */

enum { REC_DATA = 0, REC_LOOKAHEAD = 1 };

struct fifo {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t head, count;
	bool closed;            /* no more records will come */
	bool cancelled;         /* stop: push and pop fail */
	bool pusher_waits, popper_waits;
	int tag[FIFO_SLOTS];
	size_t len[FIFO_SLOTS];
	unsigned char slot[FIFO_SLOTS][FIFO_SLOT_BYTES];
};

static void fifo_init(struct fifo *f)
{
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	f->head = f->count = 0;
	f->closed = f->cancelled = false;
	f->pusher_waits = f->popper_waits = false;
}

static void fifo_destroy(struct fifo *f)
{
	pthread_mutex_destroy(&f->mu);
	pthread_cond_destroy(&f->cv);
}

/* Waits for room. Returns 0, or -ECANCELED once the FIFO is cancelled.
 * A waiting consumer is woken once FIFO_BATCH records are in, not for
 * each: a thread switch per 20 ms frame cost more than the copying. */
static int fifo_push(struct fifo *f, int tag, const void *data, size_t len)
{
	size_t i;

	pthread_mutex_lock(&f->mu);
	while (f->count == FIFO_SLOTS && !f->cancelled) {
		f->pusher_waits = true;
		pthread_cond_wait(&f->cv, &f->mu);
	}
	f->pusher_waits = false;
	if (f->cancelled) {
		pthread_mutex_unlock(&f->mu);
		return -ECANCELED;
	}
	i = (f->head + f->count) % FIFO_SLOTS;
	f->tag[i] = tag;
	f->len[i] = len;
	memcpy(f->slot[i], data, len);
	f->count++;
	if (f->popper_waits && f->count >= FIFO_BATCH)
		pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	return 0;
}

/* Waits for a record. Returns 0, 1 at the end (closed and empty), or
 * -ECANCELED. */
static int fifo_pop(struct fifo *f, int *tag, void *data, size_t *len)
{
	pthread_mutex_lock(&f->mu);
	while (f->count == 0 && !f->closed && !f->cancelled) {
		f->popper_waits = true;
		pthread_cond_wait(&f->cv, &f->mu);
	}
	f->popper_waits = false;
	if (f->cancelled) {
		pthread_mutex_unlock(&f->mu);
		return -ECANCELED;
	}
	if (f->count == 0) {
		pthread_mutex_unlock(&f->mu);
		return 1;
	}
	*tag = f->tag[f->head];
	*len = f->len[f->head];
	memcpy(data, f->slot[f->head], *len);
	f->head = (f->head + 1) % FIFO_SLOTS;
	f->count--;
	if (f->pusher_waits && f->count <= FIFO_SLOTS - FIFO_BATCH)
		pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	return 0;
}

static void fifo_close(struct fifo *f)
{
	pthread_mutex_lock(&f->mu);
	f->closed = true;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

static void fifo_cancel(struct fifo *f)
{
	pthread_mutex_lock(&f->mu);
	f->cancelled = true;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

/* ---- pass 2 ---------------------------------------------------------------- */

/* State of pass 2: temporary file -> high-pass -> gain -> limiter ->
 * (measuring meter, or encoder, waveform and AAC). */
struct pass2 {
	int fd;
	uint64_t offset;        /* next byte to read */
	uint64_t left;          /* samples still in the file */
	float buf[PASS2_CHUNK];
	size_t pos, len;
	float gain;
	media__highpass hp;
	media__limiter *lim;
	size_t skip;            /* limiter outputs still to drop (its latency) */
	ebur128_state *meter;   /* measuring only: the limiter's output */
	media_waveform *wf;     /* encoding only */
};

/* Reads exactly len bytes at offset. Returns 0, -EIO at a premature end,
 * or -errno. */
static int pread_all(int fd, void *buf, size_t len, uint64_t offset)
{
	unsigned char *p = buf;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)offset);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		offset += (uint64_t)n;
	}
	return 0;
}

static int pass2_refill(struct pass2 *p)
{
	size_t n = p->left < PASS2_CHUNK ? (size_t)p->left : PASS2_CHUNK;
	int rc;

	if (n == 0) {
		/* Past the end: zeros flush the limiter's look-ahead. */
		memset(p->buf, 0, sizeof(p->buf));
		p->len = PASS2_CHUNK;
	} else {
		rc = pread_all(p->fd, p->buf, n * sizeof(float), p->offset);
		if (rc != 0)
			return rc;
		p->offset += n * sizeof(float);
		p->len = n;
		p->left -= n;
	}
	p->pos = 0;
	return 0;
}

/* The next n samples of the limiter's output. */
static int pass2_read(struct pass2 *p, float *pcm, size_t n)
{
	for (size_t i = 0; i < n;) {
		float y;

		if (p->pos == p->len) {
			int rc = pass2_refill(p);
			if (rc != 0)
				return rc;
		}
		y = media__highpass_step(&p->hp, p->buf[p->pos++]) * p->gain;
		y = media__limiter_step(p->lim, y);
		if (p->skip > 0) {
			p->skip--;
			continue;
		}
		pcm[i++] = y;
	}
	if (p->meter != NULL && ebur128_add_frames_float(p->meter, pcm, n) != EBUR128_SUCCESS)
		return SAYIN_EENCODE;
	if (p->wf != NULL)
		media_waveform_add(p->wf, pcm, n);
	return 0;
}

static void pass2_free(struct pass2 *p)
{
	if (p == NULL)
		return;
	media__limiter_free(p->lim);
	if (p->meter != NULL)
		ebur128_destroy(&p->meter);
	free(p);
}

/* Sets up a pass over the file at gain and ceiling (dB). NULL when out of
 * memory. */
static struct pass2 *pass2_new(int fd, uint64_t frames, double gain_db, double ceiling_db,
                               bool measure)
{
	struct pass2 *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->fd = fd;
	p->left = frames;
	p->gain = (float)pow(10.0, gain_db / 20.0);
	media__highpass_init(&p->hp, HIGHPASS_HZ);
	p->lim = media__limiter_new(pow(10.0, ceiling_db / 20.0));
	if (measure)
		p->meter = ebur128_init(1, MEDIA_RATE, METER_MODE);
	if (p->lim == NULL || (measure && p->meter == NULL)) {
		pass2_free(p);
		return NULL;
	}
	p->skip = media__limiter_latency(p->lim);
	return p;
}

/* ---- measuring passes ------------------------------------------------------ */

/* One measuring pass: the loudness of the limiter's output at gain. */
struct measure_job {
	int fd;
	uint64_t frames;
	double gain, ceiling;
	double lufs;            /* result */
	int rc;
};

static void *measure_run(void *arg)
{
	struct measure_job *j = arg;
	struct pass2 *p = pass2_new(j->fd, j->frames, j->gain, j->ceiling, true);
	float chunk[OPUS_FRAME];

	j->rc = p == NULL ? -ENOMEM : 0;
	for (uint64_t done = 0; j->rc == 0 && done < j->frames; done += OPUS_FRAME) {
		size_t n = j->frames - done < OPUS_FRAME ? (size_t)(j->frames - done) : OPUS_FRAME;
		j->rc = pass2_read(p, chunk, n);
	}
	if (j->rc == 0)
		j->lufs = measure_lufs(p->meter, j->frames);
	pass2_free(p);
	return NULL;
}

/* Measures at two gains at once, one on a second thread (the second core).
 * Returns 0 or an error with err set. */
static int measure_two(const struct encode_ctx *c, double ceiling, struct measure_job *a,
                       struct measure_job *b, char *err, size_t errlen)
{
	pthread_t t;
	bool threaded;

	a->fd = b->fd = c->pcm_fd;
	a->frames = b->frames = c->frames;
	a->ceiling = b->ceiling = ceiling;
	threaded = pthread_create(&t, NULL, measure_run, b) == 0;
	measure_run(a);
	if (threaded)
		pthread_join(t, NULL);
	else
		measure_run(b);
	if (a->rc != 0 || b->rc != 0) {
		int rc = a->rc != 0 ? a->rc : b->rc;
		set_err(err, errlen, "reading the temporary file failed: %s", sayin_strerror(rc));
		return rc;
	}
	log_debug("media: measuring: ceiling %.2f dBTP: gain %+.2f dB -> %.2f LUFS, %+.2f dB -> "
	          "%.2f LUFS", ceiling, a->gain, a->lufs, b->gain, b->lufs);
	return 0;
}

/* ---- the encoding pass ----------------------------------------------------- */

/* The feeder: the limiter's output in OPUS_FRAME frames, to the encoder's
 * FIFO and the AAC thread's. */
struct feeder {
	struct pass2 *p;
	uint64_t frames;
	struct fifo *to_opus, *to_aac;
	uint64_t fail_at;       /* tests: fail at this frame (0: never) */
	int rc;
};

static void *feeder_run(void *arg)
{
	struct feeder *fd = arg;
	float frame[OPUS_FRAME];

	fd->rc = 0;
	for (uint64_t done = 0; done < fd->frames; done += OPUS_FRAME) {
		size_t n = fd->frames - done < OPUS_FRAME ? (size_t)(fd->frames - done) : OPUS_FRAME;

		fd->rc = pass2_read(fd->p, frame, n);
		if (fd->rc == 0 && fd->fail_at != 0 && done / OPUS_FRAME + 1 == fd->fail_at)
			fd->rc = -EIO;
		if (fd->rc == 0)
			fd->rc = fifo_push(fd->to_opus, REC_DATA, frame, n * sizeof(float));
		if (fd->rc == 0 && fd->to_aac != NULL)
			fd->rc = fifo_push(fd->to_aac, REC_DATA, frame, n * sizeof(float));
		if (fd->rc != 0)
			break;
	}
	if (fd->rc != 0) {
		/* The encoder waits on this FIFO: wake it with the failure. */
		fifo_cancel(fd->to_opus);
		if (fd->to_aac != NULL)
			fifo_cancel(fd->to_aac);
	} else {
		fifo_close(fd->to_opus);
		if (fd->to_aac != NULL)
			fifo_close(fd->to_aac);
	}
	return NULL;
}

/* encode_stream's reader: the feeder's next frame. */
static int fifo_reader(void *ctx, float *pcm, size_t n)
{
	size_t len = 0;
	int tag = 0;
	int rc = fifo_pop(ctx, &tag, pcm, &len);

	if (rc == 0 && len != n * sizeof(float))
		rc = -EPROTO;
	return rc == 1 ? -EPROTO : rc;
}

/* The verifier: decodes each packet again and meters what a player will
 * hear, so loudness and true peak are checked on the real output. */
struct verifier {
	struct fifo *in;
	OpusDecoder *dec;
	ebur128_state *meter;   /* integrated loudness */
	media__peak_meter *peak;
	uint64_t skip;          /* pre-skip samples still to drop */
	uint64_t left;          /* samples of the recording still to meter */
	uint64_t packets;
	uint64_t fail_at;       /* tests: fail at this packet (0: never) */
	int rc;
	unsigned char packet[FIFO_SLOT_BYTES];
	float pcm[OPUS_FRAME];
};

static int verify_packet(struct verifier *v, const unsigned char *packet, opus_int32 len)
{
	int n = opus_decode_float(v->dec, packet, len, v->pcm, OPUS_FRAME, 0);
	size_t from = 0, count;

	if (n < 0) {
		log_error("media: opus_decode_float: %s", opus_strerror(n));
		return SAYIN_EENCODE;
	}
	if (v->skip > 0) {
		from = v->skip < (uint64_t)n ? (size_t)v->skip : (size_t)n;
		v->skip -= from;
	}
	count = (size_t)n - from;
	if (count > v->left)
		count = (size_t)v->left;
	v->left -= count;
	if (count > 0 && ebur128_add_frames_float(v->meter, v->pcm + from, count) != EBUR128_SUCCESS)
		return SAYIN_EENCODE;
	if (count > 0)
		media__peak_add(v->peak, v->pcm + from, count);
	return 0;
}

static void *verifier_run(void *arg)
{
	struct verifier *v = arg;

	for (;;) {
		size_t len = 0;
		int tag = 0, rc = fifo_pop(v->in, &tag, v->packet, &len);

		if (rc == 1)
			break;
		if (rc == 0 && tag == REC_LOOKAHEAD) {
			int lookahead;
			memcpy(&lookahead, v->packet, sizeof(lookahead));
			v->skip = (uint64_t)lookahead;
		} else if (rc == 0) {
			rc = ++v->packets == v->fail_at ? SAYIN_EENCODE
			                                : verify_packet(v, v->packet, (opus_int32)len);
		}
		if (rc != 0) {
			v->rc = rc;
			/* The encoder may wait for room: let it go. */
			fifo_cancel(v->in);
			break;
		}
	}
	return NULL;
}

static int sink_start(void *ctx, int lookahead)
{
	return fifo_push(ctx, REC_LOOKAHEAD, &lookahead, sizeof(lookahead));
}

static int sink_packet(void *ctx, const unsigned char *data, int len)
{
	return fifo_push(ctx, REC_DATA, data, (size_t)len);
}

/* The AAC thread: frames from its FIFO into the M4A encoder. */
struct aac_job {
	struct fifo *in;
	media__m4a *m4a;
	uint64_t frames;
	uint64_t fail_at;       /* tests: fail at this frame (0: never) */
	int rc;
	char err[256];
	float frame[OPUS_FRAME];
};

static void *aac_run(void *arg)
{
	struct aac_job *j = arg;

	for (;;) {
		size_t len = 0;
		int tag = 0, rc = fifo_pop(j->in, &tag, j->frame, &len);

		if (rc == 1)
			break;
		if (rc == 0 && ++j->frames == j->fail_at) {
			snprintf(j->err, sizeof(j->err), "the AAC encoder failed (injected by a test)");
			rc = SAYIN_EENCODE;
		} else if (rc == 0) {
			rc = media__m4a_add(j->m4a, j->frame, len / sizeof(float), j->err, sizeof(j->err));
		} else if (rc != 0) {
			snprintf(j->err, sizeof(j->err), "the AAC encoding was stopped");
		}
		if (rc != 0) {
			j->rc = rc;
			fifo_cancel(j->in);
			break;
		}
	}
	return NULL;
}

/* What the encoding pass shares between its threads. */
struct encode_pass {
	struct fifo to_opus, to_verifier, to_aac;
	struct feeder feeder;
	struct verifier verifier;
	struct aac_job aac;
	pthread_t feeder_t, verifier_t, aac_t;
	bool feeder_live, verifier_live, aac_live;
};

/* For tests only: SAYIN_TEST_MEDIA_FAULT=feeder|verifier|aac makes that
 * thread fail at its 20th frame, to prove that a failure anywhere stops
 * the whole pass cleanly (no hang, no half result). */
static void inject_faults(struct encode_pass *e)
{
	const char *stage = getenv("SAYIN_TEST_MEDIA_FAULT");

	if (stage == NULL)
		return;
	if (strcmp(stage, "feeder") == 0)
		e->feeder.fail_at = 20;
	else if (strcmp(stage, "verifier") == 0)
		e->verifier.fail_at = 20;
	else if (strcmp(stage, "aac") == 0)
		e->aac.fail_at = 20;
}

/* Runs the temporary file through high-pass, gain and limiter and encodes
 * it: Opus, and from the same samples the waveform and, unless no_fallback,
 * the M4A (replacing those in out); res gets the loudness and true peak of
 * the decoded Opus stream. Returns 0 or an error with err set. */
static int encode_pass(const struct encode_ctx *c, double gain_db, double ceiling_db,
                       struct pass2_result *res, char *err, size_t errlen)
{
	media_result *out = c->out;
	media_waveform wf = { 0 };
	struct encode_pass *e = calloc(1, sizeof(*e));
	struct packet_sink sink;
	struct pass2 *p = pass2_new(c->pcm_fd, c->frames, gain_db, ceiling_db, false);
	int oerr = OPUS_OK, rc = 0;
	double tp = 0;

	media_buffer_free(&out->opus);
	media_buffer_free(&out->waveform);
	media_buffer_free(&out->m4a);
	media_file_close(&out->m4a_file);
	out->waveform_length = 0;
	if (e == NULL || p == NULL) {
		set_err(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	fifo_init(&e->to_opus);
	fifo_init(&e->to_verifier);
	fifo_init(&e->to_aac);
	rc = media_waveform_begin(&wf, c->frames, c->o->waveform_points);
	if (rc != 0) {
		set_err(err, errlen, "cannot make the waveform: %s", sayin_strerror(rc));
		goto out;
	}
	p->wf = &wf;
	if (lseek(c->opus_fd, 0, SEEK_SET) != 0 || ftruncate(c->opus_fd, 0) != 0) {
		rc = -errno;
		set_err(err, errlen, "cannot rewind the temporary file: %s", strerror(errno));
		goto out;
	}

	e->verifier.in = &e->to_verifier;
	e->verifier.left = c->frames;
	e->verifier.dec = opus_decoder_create(MEDIA_RATE, 1, &oerr);
	e->verifier.meter = ebur128_init(1, MEDIA_RATE, METER_MODE);
	e->verifier.peak = media__peak_meter_new();
	if (e->verifier.dec == NULL || e->verifier.meter == NULL || e->verifier.peak == NULL) {
		log_error("media: cannot set up the output check: %s", opus_strerror(oerr));
		set_err(err, errlen, "cannot create the Opus decoder that checks the output");
		rc = e->verifier.dec == NULL ? SAYIN_EENCODE : -ENOMEM;
		goto out;
	}
	if (!c->o->no_fallback) {
		rc = media__m4a_begin(&c->o->aac, c->o->tmp_dir, &e->aac.m4a, err, errlen);
		if (rc != 0)
			goto out;
		e->aac.in = &e->to_aac;
	}
	e->feeder.p = p;
	e->feeder.frames = c->frames;
	e->feeder.to_opus = &e->to_opus;
	e->feeder.to_aac = e->aac.m4a != NULL ? &e->to_aac : NULL;
	inject_faults(e);

	rc = pthread_create(&e->verifier_t, NULL, verifier_run, &e->verifier);
	e->verifier_live = rc == 0;
	if (rc == 0 && e->aac.m4a != NULL) {
		rc = pthread_create(&e->aac_t, NULL, aac_run, &e->aac);
		e->aac_live = rc == 0;
	}
	if (rc == 0) {
		rc = pthread_create(&e->feeder_t, NULL, feeder_run, &e->feeder);
		e->feeder_live = rc == 0;
	}
	if (rc != 0) {
		set_err(err, errlen, "cannot start a thread: %s", strerror(rc));
		rc = -rc;
		goto out;
	}

	sink = (struct packet_sink){ .start = sink_start, .packet = sink_packet,
		                     .ctx = &e->to_verifier };
	rc = encode_stream(fifo_reader, &e->to_opus, (size_t)c->frames, out->input_rate, c->oopt,
	                   &sink, c->opus_fd, c->o->keep_files ? NULL : &out->opus, err, errlen);
	if (rc == 0)
		fifo_close(&e->to_verifier);
out:
	if (e != NULL) {
		if (rc != 0) {
			fifo_cancel(&e->to_opus);
			fifo_cancel(&e->to_verifier);
			fifo_cancel(&e->to_aac);
		}
		if (e->feeder_live)
			pthread_join(e->feeder_t, NULL);
		if (e->verifier_live)
			pthread_join(e->verifier_t, NULL);
		if (e->aac_live)
			pthread_join(e->aac_t, NULL);
		/* A failing thread cancels the FIFOs around it, and the others
		 * then fail with -ECANCELED: report the one that did not. */
		if (e->feeder.rc != 0 && e->feeder.rc != -ECANCELED) {
			rc = e->feeder.rc;
			set_err(err, errlen, "reading the temporary file failed: %s", sayin_strerror(rc));
		} else if (e->aac.rc != 0 && e->aac.rc != -ECANCELED) {
			rc = e->aac.rc;
			set_err(err, errlen, "%s", e->aac.err);
		} else if (e->verifier.rc != 0 && e->verifier.rc != -ECANCELED) {
			rc = e->verifier.rc;
			set_err(err, errlen, "checking the encoded output failed");
		}
		if (rc == 0 && e->aac.m4a != NULL)
			rc = media__m4a_finish(e->aac.m4a, c->o->keep_files ? NULL : &out->m4a,
			                       c->o->keep_files ? &out->m4a_file : NULL, err, errlen);
		if (rc == 0) {
			rc = media_waveform_json(&wf, &out->waveform);
			if (rc != 0)
				set_err(err, errlen, "cannot make the waveform: %s", sayin_strerror(rc));
			out->waveform_length = wf.length;
		}
		if (rc == 0) {
			tp = media__peak_finish(e->verifier.peak);
			res->lufs = measure_lufs(e->verifier.meter, c->frames);
			res->true_peak_db = tp > 0 ? 20.0 * log10(tp) : -HUGE_VAL;
		}
		media__m4a_free(e->aac.m4a);
		if (e->verifier.dec != NULL)
			opus_decoder_destroy(e->verifier.dec);
		if (e->verifier.meter != NULL)
			ebur128_destroy(&e->verifier.meter);
		media__peak_meter_free(e->verifier.peak);
		fifo_destroy(&e->to_opus);
		fifo_destroy(&e->to_verifier);
		fifo_destroy(&e->to_aac);
		free(e);
	}
	if (rc != 0) {
		media_buffer_free(&out->opus);
		media_buffer_free(&out->waveform);
		media_buffer_free(&out->m4a);
		media_file_close(&out->m4a_file);
	}
	pass2_free(p);
	media_waveform_free(&wf);
	return rc;
}

/* Finds the gain and limiter ceiling that put the decoded Opus at the
 * target loudness with its true peak at or under MEDIA_TRUE_PEAK_CEILING,
 * and keeps that encoding (with its waveform and M4A) in out.
 *
 * One encoding in the usual case: the limiter's ceiling leaves the codec
 * LIMITER_CEILING_DB's margin, and the loudness the codec takes away is
 * expected (CODEC_LOUDNESS_SHIFT). Before it, measuring passes (high-pass,
 * gain and limiter only, about 1/12 of an encoding each, two at a time)
 * win back with more gain, up to MAX_EXTRA_GAIN_DB, what the limiter takes
 * off peaky speech. The encoding is decoded and metered as it is made; a
 * miss is corrected with what it measured and encoded again, at most
 * ENCODE_ATTEMPTS times. */
#define MAX_EXTRA_GAIN_DB 10.0
#define ENCODE_ATTEMPTS 4
#define LOUDNESS_TOLERANCE 0.5 /* LU */
#define MEASURE_TOLERANCE 0.1  /* LU */
#define PROBE_SPREAD_DB 1.0   /* the second round brackets its estimate by this much */

/* The gain where a line through (g0, l0) and (g1, l1) reaches want; the
 * slope is kept within [0.1, 1] (the limiter flattens it, nothing makes it
 * steeper than the gain itself). */
static double secant(double g0, double l0, double g1, double l1, double want, double *slope_out)
{
	double slope = g1 != g0 ? (l1 - l0) / (g1 - g0) : 1.0;

	slope = fmin(1.0, fmax(0.1, slope));
	if (slope_out != NULL)
		*slope_out = slope;
	return g1 + (want - l1) / slope;
}

/* Picks the gain for the limiter's output to measure want LUFS at ceiling,
 * in at most two rounds of two measuring passes: the plain gain and 6 dB
 * more, then two gains bracketing the estimate, between which the curve
 * is close enough to a line. *measured gets the loudness at that gain,
 * measured or, between measured points, interpolated. */
static int find_gain(const struct encode_ctx *c, double start, double max_gain, double ceiling,
                     double want, double *gain, double *measured, bool *estimated, char *err,
                     size_t errlen)
{
	struct measure_job a = { .gain = start }, b = { .gain = fmin(start + 6.0, max_gain) };
	double next, slope;
	int rc;

	for (int round = 0; round < 2; round++) {
		rc = measure_two(c, ceiling, &a, &b, err, errlen);
		if (rc != 0)
			return rc;
		/* b is the closer one from here on. */
		if (fabs(a.lufs - want) < fabs(b.lufs - want)) {
			struct measure_job t = a;
			a = b;
			b = t;
		}
		*estimated = false;
		if (fabs(b.lufs - want) <= MEASURE_TOLERANCE) {
			*gain = b.gain;
			*measured = b.lufs;
			return 0;
		}
		*estimated = true;
		next = secant(a.gain, a.lufs, b.gain, b.lufs, want, &slope);
		if (next >= max_gain) {
			/* As loud as the limiter may make it: no need to look closer. */
			*gain = max_gain;
			*measured = b.lufs + slope * (max_gain - b.gain);
			return 0;
		}
		if (round == 1)
			break;
		a.gain = next - PROBE_SPREAD_DB;
		b.gain = fmin(next + PROBE_SPREAD_DB, max_gain);
	}
	*gain = next;
	*measured = want;
	return 0;
}

static int normalize(const struct encode_ctx *c, double in_lufs, char *err, size_t errlen)
{
	double target = c->o->loudness_target, gain = target - in_lufs;
	double max_gain = gain + MAX_EXTRA_GAIN_DB, ceiling = LIMITER_CEILING_DB;
	double codec_shift = CODEC_LOUDNESS_SHIFT; /* decoded loudness minus the limiter's */
	double limited = 0;
	bool estimated = false;
	struct pass2_result r = { 0 };
	int rc = 0;

	for (int attempt = 0; attempt < ENCODE_ATTEMPTS; attempt++) {
		rc = find_gain(c, gain, max_gain, ceiling, target - codec_shift, &gain, &limited,
		               &estimated, err, errlen);
		if (rc != 0)
			return rc;
		rc = encode_pass(c, gain, ceiling, &r, err, errlen);
		if (rc != 0)
			return rc;
		log_debug("media: encoding %d: gain %+.2f dB, ceiling %.2f dBTP -> %.2f LUFS "
		          "(limiter %.2f%s), %.2f dBTP", attempt + 1, gain, ceiling, r.lufs, limited,
		          estimated ? ", estimated" : "", r.true_peak_db);
		if (r.true_peak_db <= MEDIA_TRUE_PEAK_CEILING &&
		    (fabs(r.lufs - target) <= LOUDNESS_TOLERANCE || gain >= max_gain))
			break;
		if (r.true_peak_db > MEDIA_TRUE_PEAK_CEILING)
			ceiling -= r.true_peak_db - MEDIA_TRUE_PEAK_CEILING + 0.5;
		codec_shift = r.lufs - limited;
	}
	if (r.true_peak_db > MEDIA_TRUE_PEAK_CEILING)
		log_warn("media: true peak %.2f dBTP stays above %.1f dBTP after %d encodings",
		         r.true_peak_db, MEDIA_TRUE_PEAK_CEILING, ENCODE_ATTEMPTS);
	c->out->gain_db = gain;
	c->out->output_lufs = r.lufs;
	c->out->true_peak_dbtp = r.true_peak_db;
	return 0;
}

static void resolve_options(const media_transcode_options *in, media_transcode_options *o)
{
	*o = *in;
	if (o->loudness_target == 0)
		o->loudness_target = MEDIA_DEFAULT_LOUDNESS_TARGET;
	if (o->max_input_bytes == 0)
		o->max_input_bytes = MEDIA_DEFAULT_MAX_INPUT_BYTES;
	if (o->max_duration_ms == 0)
		o->max_duration_ms = MEDIA_DEFAULT_MAX_DURATION_MS;
	if (o->decode_timeout_ms == 0)
		o->decode_timeout_ms = MEDIA_DEFAULT_DECODE_TIMEOUT_MS;
	if (o->decoder_memory == 0)
		o->decoder_memory = MEDIA_DEFAULT_DECODER_MEMORY;
	if (o->tmp_dir == NULL) {
		o->tmp_dir = getenv("TMPDIR");
		if (o->tmp_dir == NULL || o->tmp_dir[0] == '\0')
			o->tmp_dir = "/tmp";
	}
}

int media_transcode_file(const char *path, const media_transcode_options *opt,
                         media_result *out, char *err, size_t errlen)
{
	media_transcode_options o;
	media__rec_end end;
	struct pass1 *p1 = NULL;
	media_opus_options oopt;
	uint64_t size = 0;
	double lufs;
	int file_fd = -1, opus_fd = -1, rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (path == NULL || opt == NULL || out == NULL) {
		set_err(err, errlen, "media_transcode_file: no path, options or output");
		return SAYIN_EINVAL;
	}
	resolve_options(opt, &o);
	if (o.waveform_points > MEDIA_MAX_WAVEFORM_POINTS) {
		set_err(err, errlen, "waveform points %u is outside 1..%u", o.waveform_points,
		        MEDIA_MAX_WAVEFORM_POINTS);
		return SAYIN_EINVAL;
	}
	if (!o.no_fallback && o.aac.bitrate != 0 &&
	    (o.aac.bitrate < MEDIA_MIN_AAC_BITRATE || o.aac.bitrate > MEDIA_MAX_AAC_BITRATE)) {
		set_err(err, errlen, "AAC bitrate %d is outside %d..%d", o.aac.bitrate,
		        MEDIA_MIN_AAC_BITRATE, MEDIA_MAX_AAC_BITRATE);
		return SAYIN_EINVAL;
	}
	if (!(o.loudness_target >= -70.0 && o.loudness_target <= 0.0)) {
		set_err(err, errlen, "loudness target %.1f LUFS is outside -70..0", o.loudness_target);
		return SAYIN_EINVAL;
	}
	file_fd = media__open_recording(path, &size, err, errlen);
	if (file_fd < 0)
		return file_fd;
	if (size > o.max_input_bytes) {
		set_err(err, errlen, "too large: %llu bytes, more than the %llu-byte limit "
		                     "(max-input-bytes)", (unsigned long long)size,
		        (unsigned long long)o.max_input_bytes);
		rc = SAYIN_ETOOLARGE;
		goto out;
	}
	if (size == 0) {
		set_err(err, errlen, "the file is empty");
		rc = SAYIN_EEMPTY;
		goto out;
	}

	/* Pass 1: decode in the child, keep the samples in an unlinked file,
	 * measure loudness. */
	p1 = calloc(1, sizeof(*p1));
	if (p1 == NULL) {
		set_err(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	p1->tmp_fd = -1;
	p1->hash = 2166136261u;
	p1->limit = o.max_duration_ms * (MEDIA_RATE / 1000) + MEDIA_RATE;
	p1->meter = ebur128_init(1, MEDIA_RATE, METER_MODE);
	if (p1->meter == NULL) {
		set_err(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	rc = media__open_tmp(o.tmp_dir, err, errlen);
	if (rc < 0)
		goto out;
	p1->tmp_fd = rc;
	memset(&end, 0, sizeof(end));
	rc = run_decoder(&o, file_fd, p1, &end, err, errlen);
	if (rc != 0)
		goto out;
	end.format[sizeof(end.format) - 1] = '\0';
	end.message[sizeof(end.message) - 1] = '\0';
	if (end.code != 0) {
		/* The child's line, kept to one line whatever it holds. */
		for (char *q = end.message; *q != '\0'; q++) {
			if (*q == '\n' || *q == '\r')
				*q = ' ';
		}
		set_err(err, errlen, "%s", end.message[0] ? end.message : sayin_strerror(end.code));
		rc = end.code;
		if (rc == -ENOMEM) {
			set_err(err, errlen, "decoder ran out of memory (decode-memory is %llu bytes)",
			        (unsigned long long)o.decoder_memory);
			rc = SAYIN_EDECODER;
		}
		/* Only codes we know pass: a sayin code or a negative errno. */
		if (!((rc >= SAYIN_EBASE && rc < SAYIN_ELAST) || (rc < 0 && rc > -4096)))
			rc = SAYIN_EDECODER;
		goto out;
	}
	if (p1->frames == 0 || end.rate == 0) {
		set_err(err, errlen, "no samples: the recording holds no audio");
		rc = SAYIN_EEMPTY;
		goto out;
	}
	lufs = measure_lufs(p1->meter, p1->frames);
	log_debug("media: decoded %llu samples (%s), %.2f LUFS",
	          (unsigned long long)p1->frames, end.format, lufs);
	if (!(lufs > SILENCE_GATE_LUFS)) {
		set_err(err, errlen, "silent: nothing above the %.0f LUFS gate (EBU R128); a silent "
		                     "recording is not amplified into noise", SILENCE_GATE_LUFS);
		rc = SAYIN_ESILENT;
		goto out;
	}

	/* Pass 2: read back, gain, limit, encode. */
	out->input_lufs = lufs;
	out->frames = (size_t)p1->frames;
	out->input_rate = end.rate;
	out->input_channels = end.channels;
	out->input_frames = end.input_frames;
	snprintf(out->input_format, sizeof(out->input_format), "%s", end.format);
	out->duration = (double)end.input_frames / end.rate;
	out->serial = p1->hash ^ end.rate;
	oopt = o.opus;
	oopt.serial = out->serial;
	opus_fd = media__open_tmp(o.tmp_dir, err, errlen);
	if (opus_fd < 0) {
		rc = opus_fd;
		goto out;
	}
	{
		struct encode_ctx c = { .o = &o, .oopt = &oopt, .pcm_fd = p1->tmp_fd,
			                .opus_fd = opus_fd, .frames = p1->frames, .out = out };
		rc = normalize(&c, lufs, err, errlen);
	}
	if (rc == 0 && o.keep_files) {
		/* The Opus stream is the file: hand it over. */
		struct stat st;
		if (fstat(opus_fd, &st) != 0 || st.st_size <= 0) {
			rc = -EIO;
			set_err(err, errlen, "cannot measure the encoded stream: %s", strerror(errno));
		} else {
			out->opus_file.fd = opus_fd;
			out->opus_file.len = (uint64_t)st.st_size;
			opus_fd = -1;
		}
	}
	if (rc != 0)
		goto out;
	log_debug("media: %s: %s, %.2f s, %.1f LUFS, gain %+.1f dB -> %.1f LUFS, %.1f dBTP",
	          path, out->input_format, out->duration, out->input_lufs, out->gain_db,
	          out->output_lufs, out->true_peak_dbtp);
out:
	if (p1 != NULL) {
		if (p1->meter != NULL)
			ebur128_destroy(&p1->meter);
		if (p1->tmp_fd >= 0)
			close(p1->tmp_fd);
	}
	free(p1);
	if (opus_fd >= 0)
		close(opus_fd);
	if (file_fd >= 0)
		close(file_fd);
	if (rc != 0)
		media_result_free(out);
	return rc;
}

void media_result_free(media_result *res)
{
	if (res == NULL)
		return;
	media_buffer_free(&res->opus);
	media_buffer_free(&res->m4a);
	media_file_close(&res->opus_file);
	media_file_close(&res->m4a_file);
	media_buffer_free(&res->waveform);
	memset(res, 0, sizeof(*res));
}

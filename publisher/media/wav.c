/* decode: recordings to mono 48 kHz floats. RIFF/WAVE goes through a strict
 * hand-written reader; everything else through FFmpeg, restricted to the
 * demuxers and decoders listed below. Also the decoder child's main. */
#include "media/internal.h"

#include "core/error.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avstring.h>
#include <libavutil/avutil.h>
#include <soxr.h>

#define set_err media__set_err

void media__set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static uint16_t get_le16(const unsigned char *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

/* ---- WAV decoding ------------------------------------------------------ */

/* Streamed writers cannot seek back to patch the data chunk's size and leave a
 * placeholder instead: ffmpeg writing to a pipe leaves 0xFFFFFFFF, espeak-ng
 * --stdout leaves 0x7FFFF000, and some older tools leave 0. We read such a
 * data chunk until the end of the file:
 *  - 0xFFFFFFFF always (a real chunk that size cannot fit a 32-bit RIFF);
 *  - 0x7FFFF000 when the file is shorter than that (a real 2 GiB chunk that
 *    was cut short looks the same, but uploads are capped far below that);
 *  - 0 when bytes follow that do not parse as a chain of chunks ending
 *    exactly at the end of the file; if they do parse, the data chunk really
 *    is empty and other chunks (e.g. LIST) follow it.
 * Any other size that claims more than the file holds means truncation. */
#define WAV_SIZE_STREAMED 0xFFFFFFFFu
#define WAV_SIZE_ESPEAK 0x7FFFF000u

#define WAV_MAX_CHANNELS 8
#define WAV_MIN_RATE 8000
#define WAV_MAX_RATE 192000
#define WAV_CHUNK_FRAMES 4096 /* frames read, downmixed and resampled at a time */

enum wav_tag {
	WAV_TAG_PCM = 0x0001,
	WAV_TAG_FLOAT = 0x0003,
	WAV_TAG_EXTENSIBLE = 0xFFFE,
};

enum sample_kind { SAMPLE_S16, SAMPLE_S24, SAMPLE_F32 };

struct wav_format {
	unsigned channels;
	unsigned rate;
	unsigned block_align; /* bytes per frame, all channels */
	enum sample_kind kind;
	const char *name;     /* input_format */
};

struct wav_file {
	int fd;
	uint64_t size;
};

/* Reads up to len bytes at off; *got < len only at end of file.
 * Returns 0 or -errno. */
static int read_at(const struct wav_file *f, uint64_t off, void *buf, size_t len, size_t *got)
{
	unsigned char *p = buf;
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(f->fd, p + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*got = done;
	return 0;
}

/* Copies a four-character code into a printable, NUL-terminated string. */
static void fourcc_text(const unsigned char *id, char out[5])
{
	for (int i = 0; i < 4; i++)
		out[i] = (id[i] >= 0x20 && id[i] < 0x7f) ? (char)id[i] : '?';
	out[4] = '\0';
}

static const char *wav_tag_name(unsigned tag)
{
	switch (tag) {
	case 0x0002: return "Microsoft ADPCM";
	case 0x0006: return "A-law";
	case 0x0007: return "mu-law";
	case 0x0011: return "IMA ADPCM";
	case 0x0031: return "GSM 6.10";
	case 0x0050: return "MPEG";
	case 0x0055: return "MP3";
	default: return "unknown";
	}
}

/* Parses a fmt chunk body. Returns 0, SAYIN_EFORMAT or SAYIN_EUNSUPPORTED. */
static int parse_fmt(const unsigned char *b, size_t len, struct wav_format *fmt, char *err,
                     size_t errlen)
{
	/* The GUID tail shared by KSDATAFORMAT_SUBTYPE_PCM and _IEEE_FLOAT; the
	 * first two bytes of the GUID hold the plain format tag. */
	static const unsigned char guid_tail[14] = { 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80,
	                                             0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71 };
	unsigned tag, channels, rate, block_align, bits;

	if (len < 16) {
		set_err(err, errlen, "WAV fmt chunk is %zu bytes, shorter than 16", len);
		return SAYIN_EFORMAT;
	}
	tag = get_le16(b);
	channels = get_le16(b + 2);
	rate = get_le32(b + 4);
	block_align = get_le16(b + 12);
	bits = get_le16(b + 14);

	if (tag == WAV_TAG_EXTENSIBLE) {
		unsigned valid_bits;

		if (len < 40 || get_le16(b + 16) < 22) {
			set_err(err, errlen, "WAVE_FORMAT_EXTENSIBLE fmt chunk is too short (%zu bytes)",
			        len);
			return SAYIN_EFORMAT;
		}
		valid_bits = get_le16(b + 18);
		if (memcmp(b + 26, guid_tail, sizeof(guid_tail)) != 0) {
			set_err(err, errlen,
			        "WAVE_FORMAT_EXTENSIBLE with a non-PCM, non-float subformat is not "
			        "supported");
			return SAYIN_EUNSUPPORTED;
		}
		/* Valid bits below the container size are left-justified, so they
		 * read correctly as the container type. */
		if (valid_bits > bits) {
			set_err(err, errlen, "WAV claims %u valid bits in a %u-bit container",
			        valid_bits, bits);
			return SAYIN_EFORMAT;
		}
		tag = get_le16(b + 24);
	}

	if (tag == WAV_TAG_PCM && bits == 16) {
		fmt->kind = SAMPLE_S16;
		fmt->name = "wav/pcm_s16le";
	} else if (tag == WAV_TAG_PCM && bits == 24) {
		fmt->kind = SAMPLE_S24;
		fmt->name = "wav/pcm_s24le";
	} else if (tag == WAV_TAG_FLOAT && bits == 32) {
		fmt->kind = SAMPLE_F32;
		fmt->name = "wav/pcm_f32le";
	} else if (tag == WAV_TAG_PCM) {
		set_err(err, errlen,
		        "%u-bit PCM WAV is not supported (use 16- or 24-bit PCM or 32-bit float)",
		        bits);
		return SAYIN_EUNSUPPORTED;
	} else if (tag == WAV_TAG_FLOAT) {
		set_err(err, errlen,
		        "%u-bit float WAV is not supported (use 16- or 24-bit PCM or 32-bit float)",
		        bits);
		return SAYIN_EUNSUPPORTED;
	} else {
		set_err(err, errlen,
		        "WAV encoding %s (format tag 0x%04x) is not supported (use 16- or 24-bit "
		        "PCM or 32-bit float)",
		        wav_tag_name(tag), tag);
		return SAYIN_EUNSUPPORTED;
	}

	if (channels < 1 || channels > WAV_MAX_CHANNELS) {
		set_err(err, errlen, "WAV with %u channels is not supported (1..%d)", channels,
		        WAV_MAX_CHANNELS);
		return SAYIN_EUNSUPPORTED;
	}
	if (rate < WAV_MIN_RATE || rate > WAV_MAX_RATE) {
		set_err(err, errlen, "WAV sample rate %u Hz is not supported (%d..%d)", rate,
		        WAV_MIN_RATE, WAV_MAX_RATE);
		return SAYIN_EUNSUPPORTED;
	}
	/* A wrong block align means we cannot know where frames start. */
	if (block_align != channels * (bits / 8)) {
		set_err(err, errlen, "WAV block align %u does not match %u channels of %u bits",
		        block_align, channels, bits);
		return SAYIN_EFORMAT;
	}
	fmt->channels = channels;
	fmt->rate = rate;
	fmt->block_align = block_align;
	return 0;
}

/* Tells whether the bytes from off to the end of the file are a well-formed
 * chain of chunks. Returns 1, 0, or -errno. */
static int chunks_follow(const struct wav_file *f, uint64_t off)
{
	while (off < f->size) {
		unsigned char hdr[8];
		size_t got;
		uint32_t size;
		int rc = read_at(f, off, hdr, sizeof(hdr), &got);

		if (rc < 0)
			return rc;
		if (got < sizeof(hdr))
			return 0;
		for (int i = 0; i < 4; i++) {
			if (hdr[i] < 0x20 || hdr[i] > 0x7e)
				return 0;
		}
		size = get_le32(hdr + 4);
		off += 8 + (uint64_t)size;
		if (off > f->size)
			return 0;
		off += size & 1; /* the pad byte may be missing only at the very end */
	}
	return 1;
}

/* Converts one chunk of interleaved frames to mono by averaging channels.
 * Non-finite floats become silence and everything is clamped to [-1, 1], so
 * the resampler never sees NaN. */
static void downmix(const unsigned char *raw, size_t frames, const struct wav_format *fmt,
                    float *mono)
{
	const unsigned char *p = raw;
	float scale = 1.0f / (float)fmt->channels;

	for (size_t i = 0; i < frames; i++) {
		float sum = 0.0f;

		for (unsigned c = 0; c < fmt->channels; c++) {
			float v;

			switch (fmt->kind) {
			case SAMPLE_S16:
				v = (float)(int16_t)get_le16(p) / 32768.0f;
				p += 2;
				break;
			case SAMPLE_S24: {
				int32_t s = (int32_t)((uint32_t)p[0] << 8 | (uint32_t)p[1] << 16 |
				                      (uint32_t)p[2] << 24) >> 8;
				v = (float)s / 8388608.0f;
				p += 3;
				break;
			}
			case SAMPLE_F32:
			default: {
				uint32_t u = get_le32(p);
				memcpy(&v, &u, sizeof(v));
				p += 4;
				if (!isfinite(v))
					v = isnan(v) ? 0.0f : (v > 0 ? 1.0f : -1.0f);
				else if (v > 1.0f)
					v = 1.0f;
				else if (v < -1.0f)
					v = -1.0f;
				break;
			}
			}
			sum += v;
		}
		mono[i] = sum * scale;
	}
}

/* ---- resampling to MEDIA_RATE ------------------------------------------ */

/* Mono input at `rate` goes to the sink at MEDIA_RATE: copied when the rate
 * already matches, else through soxr. The last RS_HOLD output samples are
 * held back until the end, when the total is cut or zero-padded to exactly
 * round(input_frames * 48000 / rate) (soxr's count differs by a sample or
 * two). */
#define RS_HOLD 1024
#define RS_SCRATCH 16384

struct resampler {
	soxr_t soxr;      /* NULL when no resampling is needed */
	unsigned rate;
	float *scratch;   /* soxr's output, RS_SCRATCH samples */
	float *hold;      /* RS_HOLD + RS_SCRATCH samples */
	size_t held;
	uint64_t emitted;
	const media__sink *sink;
};

/* Returns 0, -ENOMEM or SAYIN_EENCODE (logged), with err set. */
static int resampler_init(struct resampler *rs, unsigned rate, const media__sink *sink,
                          char *err, size_t errlen)
{
	memset(rs, 0, sizeof(*rs));
	rs->rate = rate;
	rs->sink = sink;
	rs->scratch = malloc(RS_SCRATCH * sizeof(float));
	rs->hold = malloc((RS_HOLD + RS_SCRATCH) * sizeof(float));
	if (rs->scratch == NULL || rs->hold == NULL) {
		set_err(err, errlen, "out of memory creating the resampler");
		return -ENOMEM;
	}
	if (rate != MEDIA_RATE) {
		soxr_error_t e = NULL;
		/* HQ (20-bit) is already beyond what 32 kb/s Opus keeps. One
		 * thread: a decode never starts threads behind its caller's back. */
		soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
		soxr_runtime_spec_t run = soxr_runtime_spec(1);

		rs->soxr = soxr_create(rate, MEDIA_RATE, 1, &e, NULL, &q, &run);
		if (rs->soxr == NULL || e != NULL) {
			log_error("media: soxr_create(%u -> %d) failed: %s", rate, MEDIA_RATE,
			          e != NULL ? e : "unknown error");
			set_err(err, errlen, "cannot create a resampler from %u Hz", rate);
			return SAYIN_EENCODE;
		}
	}
	return 0;
}

static void resampler_free(struct resampler *rs)
{
	if (rs->soxr != NULL)
		soxr_delete(rs->soxr);
	free(rs->scratch);
	free(rs->hold);
	memset(rs, 0, sizeof(*rs));
}

/* Sends n samples to the sink, clamped: the resampler's filter can
 * overshoot full scale slightly. */
static int emit(struct resampler *rs, float *x, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (x[i] > 1.0f)
			x[i] = 1.0f;
		else if (x[i] < -1.0f)
			x[i] = -1.0f;
	}
	rs->emitted += n;
	return n > 0 ? rs->sink->write(rs->sink->ctx, x, n) : 0;
}

/* Appends n <= RS_SCRATCH samples and emits all but the last RS_HOLD. */
static int resampler_append(struct resampler *rs, const float *in, size_t n)
{
	size_t out;
	int rc;

	memcpy(rs->hold + rs->held, in, n * sizeof(float));
	rs->held += n;
	if (rs->held <= RS_HOLD)
		return 0;
	out = rs->held - RS_HOLD;
	rc = emit(rs, rs->hold, out);
	memmove(rs->hold, rs->hold + out, RS_HOLD * sizeof(float));
	rs->held = RS_HOLD;
	return rc;
}

/* Feeds n mono frames, or flushes soxr when in is NULL. Returns 0, a sink
 * error, or SAYIN_EENCODE (logged). */
static int resampler_feed(struct resampler *rs, const float *in, size_t n)
{
	size_t used = 0;
	int rc = 0;

	if (rs->soxr == NULL) {
		while (rc == 0 && used < n) {
			size_t k = n - used < RS_SCRATCH ? n - used : RS_SCRATCH;
			rc = resampler_append(rs, in + used, k);
			used += k;
		}
		return rc;
	}
	do {
		size_t idone = 0, odone = 0;
		soxr_error_t e = soxr_process(rs->soxr, in == NULL ? NULL : in + used,
		                              in == NULL ? 0 : n - used, &idone, rs->scratch,
		                              RS_SCRATCH, &odone);
		if (e != NULL) {
			log_error("media: soxr failed: %s", e);
			return SAYIN_EENCODE;
		}
		rc = resampler_append(rs, rs->scratch, odone);
		used += idone;
		if (in == NULL && odone == 0)
			break;
	} while (rc == 0 && (in == NULL || used < n));
	return rc;
}

/* Flushes and emits exactly round(input_frames * 48000 / rate) samples in
 * all. Returns 0, a sink error, SAYIN_EEMPTY or SAYIN_EENCODE. */
static int resampler_finish(struct resampler *rs, uint64_t input_frames, uint64_t *total,
                            char *err, size_t errlen)
{
	uint64_t want, left;
	int rc;

	if (input_frames > UINT64_MAX / MEDIA_RATE) {
		set_err(err, errlen, "recording is too long");
		return SAYIN_EUNSUPPORTED;
	}
	/* round(input_frames * 48000 / rate), in integers */
	want = (input_frames * MEDIA_RATE + rs->rate / 2) / rs->rate;
	rc = resampler_feed(rs, NULL, 0);
	if (rc != 0) {
		set_err(err, errlen, "resampling from %u Hz failed", rs->rate);
		return rc;
	}
	if (rs->emitted > want) {
		log_error("media: resampler gave %llu samples, %llu wanted", (unsigned long long)rs->emitted,
		          (unsigned long long)want);
		set_err(err, errlen, "resampling from %u Hz failed", rs->rate);
		return SAYIN_EENCODE;
	}
	left = want - rs->emitted;
	rc = emit(rs, rs->hold, left < rs->held ? (size_t)left : rs->held);
	if (rc == 0 && rs->emitted < want)
		log_debug("media: resampler gave %llu of %llu frames; padding",
		          (unsigned long long)rs->emitted, (unsigned long long)want);
	memset(rs->hold, 0, RS_SCRATCH * sizeof(float));
	while (rc == 0 && rs->emitted < want) {
		left = want - rs->emitted;
		rc = emit(rs, rs->hold, left < RS_SCRATCH ? (size_t)left : RS_SCRATCH);
	}
	*total = rs->emitted;
	if (rc == 0 && want == 0) {
		/* e.g. a single frame at 192 kHz rounds to nothing */
		set_err(err, errlen, "the recording is too short to yield a sample at %d Hz", MEDIA_RATE);
		return SAYIN_EEMPTY;
	}
	return rc;
}

/* The duration limit in input frames; UINT64_MAX when there is none. */
static uint64_t frame_limit(uint64_t max_duration_ms, unsigned rate)
{
	if (max_duration_ms == 0 || max_duration_ms > UINT64_MAX / rate)
		return UINT64_MAX;
	return max_duration_ms * rate / 1000;
}

static int too_long(uint64_t max_duration_ms, char *err, size_t errlen)
{
	set_err(err, errlen, "too long: the recording lasts more than the %llu s limit (max-duration)",
	        (unsigned long long)(max_duration_ms / 1000));
	return SAYIN_ETOOLONG;
}

/* Reads, downmixes and resamples the data chunk into the sink. */
static int decode_data(const struct wav_file *f, uint64_t off, const struct wav_format *fmt,
                       uint64_t input_frames, uint64_t max_duration_ms, const media__sink *sink,
                       media__info *info, char *err, size_t errlen)
{
	struct resampler rs;
	unsigned char *raw = NULL;
	float *mono = NULL;
	uint64_t done = 0;
	int rc;

	if (input_frames > frame_limit(max_duration_ms, fmt->rate))
		return too_long(max_duration_ms, err, errlen);
	rc = resampler_init(&rs, fmt->rate, sink, err, errlen);
	raw = malloc((size_t)WAV_CHUNK_FRAMES * fmt->block_align);
	mono = malloc(WAV_CHUNK_FRAMES * sizeof(float));
	if (rc == 0 && (raw == NULL || mono == NULL)) {
		set_err(err, errlen, "out of memory decoding the WAV data");
		rc = -ENOMEM;
	}
	while (rc == 0 && done < input_frames) {
		uint64_t left = input_frames - done;
		size_t frames = left < WAV_CHUNK_FRAMES ? (size_t)left : WAV_CHUNK_FRAMES;
		size_t bytes = frames * fmt->block_align, got;

		rc = read_at(f, off + done * fmt->block_align, raw, bytes, &got);
		if (rc < 0) {
			set_err(err, errlen, "read failed: %s", strerror(-rc));
			break;
		}
		if (got < bytes) {
			/* The file shrank after we measured it. */
			set_err(err, errlen, "the file ends before its data chunk does");
			rc = SAYIN_ETRUNCATED;
			break;
		}
		downmix(raw, frames, fmt, mono);
		rc = resampler_feed(&rs, mono, frames);
		if (rc == SAYIN_EENCODE)
			set_err(err, errlen, "resampling from %u Hz failed", fmt->rate);
		done += frames;
	}
	if (rc == 0)
		rc = resampler_finish(&rs, input_frames, &info->frames, err, errlen);
	resampler_free(&rs);
	free(mono);
	free(raw);
	return rc;
}

/* Checks the RIFF header. Returns 0 or an error with err set. */
static int check_riff_header(const struct wav_file *f, uint32_t *riff_size, char *err,
                             size_t errlen)
{
	unsigned char hdr[12];
	char id[5];
	size_t got;
	int rc = read_at(f, 0, hdr, sizeof(hdr), &got);

	if (rc < 0) {
		set_err(err, errlen, "read failed: %s", strerror(-rc));
		return rc;
	}
	if (got < sizeof(hdr)) {
		size_t n = got < 4 ? got : 4;

		if (memcmp(hdr, "RIFF", n) == 0) {
			set_err(err, errlen, "the file ends inside the RIFF header (%zu bytes)", got);
			return SAYIN_ETRUNCATED;
		}
		set_err(err, errlen, "not a WAV file (%zu bytes)", got);
		return SAYIN_EFORMAT;
	}
	if (memcmp(hdr, "RIFF", 4) != 0) {
		if (memcmp(hdr, "RIFX", 4) == 0 || memcmp(hdr, "RF64", 4) == 0) {
			fourcc_text(hdr, id);
			set_err(err, errlen, "%s WAV files are not supported", id);
			return SAYIN_EUNSUPPORTED;
		}
		set_err(err, errlen, "not a RIFF/WAVE file");
		return SAYIN_EFORMAT;
	}
	if (memcmp(hdr + 8, "WAVE", 4) != 0) {
		fourcc_text(hdr + 8, id);
		set_err(err, errlen, "a RIFF file of type '%s', not WAVE", id);
		return SAYIN_EFORMAT;
	}
	*riff_size = get_le32(hdr + 4);
	return 0;
}

/* Walks the chunks up to the data chunk and decodes it. */
static int decode_wav(const struct wav_file *f, uint64_t max_duration_ms, const media__sink *sink,
                      media__info *info, char *err, size_t errlen)
{
	struct wav_format fmt = { 0 };
	bool have_fmt = false;
	uint32_t riff_size = 0;
	uint32_t data_size = 0;
	uint64_t off = 12, left, data_bytes;
	int rc = check_riff_header(f, &riff_size, err, errlen);

	if (rc != 0)
		return rc;

	for (;;) {
		unsigned char hdr[8];
		char id[5];
		uint32_t size;
		size_t got;

		if (off >= f->size) {
			const char *missing = have_fmt ? "data" : "fmt";

			/* The RIFF size tells a cut-off file from one that never had
			 * the chunk; streamed placeholders say nothing either way. */
			if (riff_size != 0 && riff_size != WAV_SIZE_STREAMED &&
			    (uint64_t)riff_size + 8 > f->size) {
				set_err(err, errlen,
				        "the file ends before its %s chunk (%llu of %llu bytes)",
				        missing, (unsigned long long)f->size,
				        (unsigned long long)riff_size + 8);
				return SAYIN_ETRUNCATED;
			}
			set_err(err, errlen, "WAV file has no %s chunk", missing);
			return SAYIN_EFORMAT;
		}
		rc = read_at(f, off, hdr, sizeof(hdr), &got);
		if (rc < 0) {
			set_err(err, errlen, "read failed: %s", strerror(-rc));
			return rc;
		}
		if (got < sizeof(hdr)) {
			set_err(err, errlen, "the file ends inside a chunk header at offset %llu",
			        (unsigned long long)off);
			return SAYIN_ETRUNCATED;
		}
		fourcc_text(hdr, id);
		size = get_le32(hdr + 4);
		off += 8;
		left = f->size - off;

		if (memcmp(hdr, "data", 4) == 0) {
			data_size = size;
			break;
		}

		if (size > left) {
			set_err(err, errlen, "WAV chunk '%s' claims %u bytes but only %llu remain", id,
			        size, (unsigned long long)left);
			return SAYIN_ETRUNCATED;
		}
		if (memcmp(hdr, "fmt ", 4) == 0) {
			unsigned char body[64];

			if (have_fmt) {
				set_err(err, errlen, "WAV file has two fmt chunks");
				return SAYIN_EFORMAT;
			}
			/* Bytes past the 40 of WAVE_FORMAT_EXTENSIBLE carry nothing we use. */
			rc = read_at(f, off, body, size < sizeof(body) ? size : sizeof(body), &got);
			if (rc < 0) {
				set_err(err, errlen, "read failed: %s", strerror(-rc));
				return rc;
			}
			rc = parse_fmt(body, got, &fmt, err, errlen);
			if (rc != 0)
				return rc;
			have_fmt = true;
		}
		/* Chunks are word-aligned: an odd-sized chunk is followed by a pad byte. */
		off += (uint64_t)size + (size & 1);
	}

	if (!have_fmt) {
		set_err(err, errlen, "WAV data chunk comes before the fmt chunk");
		return SAYIN_EFORMAT;
	}
	if (data_size == WAV_SIZE_STREAMED || (data_size == WAV_SIZE_ESPEAK && data_size > left)) {
		data_bytes = left;
	} else if (data_size == 0 && left > 0) {
		rc = chunks_follow(f, off);
		if (rc < 0) {
			set_err(err, errlen, "read failed: %s", strerror(-rc));
			return rc;
		}
		data_bytes = rc == 1 ? 0 : left;
	} else if (data_size > left) {
		set_err(err, errlen, "WAV data chunk claims %u bytes but only %llu remain",
		        data_size, (unsigned long long)left);
		return SAYIN_ETRUNCATED;
	} else {
		data_bytes = data_size;
	}
	if (data_bytes % fmt.block_align != 0) {
		set_err(err, errlen, "WAV data ends inside a sample frame (%llu bytes, %u per frame)",
		        (unsigned long long)data_bytes, fmt.block_align);
		return SAYIN_ETRUNCATED;
	}
	if (data_bytes == 0) {
		set_err(err, errlen, "WAV file has no samples (empty data chunk)");
		return SAYIN_EEMPTY;
	}
	info->rate = fmt.rate;
	info->channels = fmt.channels;
	info->input_frames = data_bytes / fmt.block_align;
	snprintf(info->format, sizeof(info->format), "%s", fmt.name);
	return decode_data(f, off, &fmt, info->input_frames, max_duration_ms, sink, info, err,
	                   errlen);
}

/* ---- everything else, through FFmpeg ----------------------------------- */

/* The demuxers we let FFmpeg use (av_match_list matches any name of a
 * demuxer: "mov" is mov,mp4,m4a,3gp,3g2,mj2; "matroska" is matroska,webm).
 * WAV is not here: it always goes through the strict reader above. */
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
	ssize_t n;

	do
		n = pread(io->fd, buf, (size_t)size, (off_t)io->pos);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return AVERROR(errno);
	if (n == 0)
		return AVERROR_EOF;
	io->pos += (uint64_t)n;
	return (int)n;
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

static const char *ff_error(int averr, char *buf, size_t len)
{
	if (av_strerror(averr, buf, len) < 0)
		snprintf(buf, len, "error %d", averr);
	return buf;
}

/* FFmpeg's errors become ours here; its message is logged. */
static int ff_translate(int averr, const char *what, const char *fmt_name, char *err, size_t errlen)
{
	char msg[128];

	log_debug("media: %s: %s", what, ff_error(averr, msg, sizeof(msg)));
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
			if (!isfinite(v))
				v = isnan(v) ? 0.0f : (v > 0 ? 1.0f : -1.0f);
			else if (v > 1.0f)
				v = 1.0f;
			else if (v < -1.0f)
				v = -1.0f;
			sum += v;
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
	struct resampler rs;
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
		s->limit = frame_limit(s->max_duration_ms, info->rate);
		rc = resampler_init(&s->rs, info->rate, sink, err, errlen);
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
		return too_long(s->max_duration_ms, err, errlen);
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
	rc = resampler_feed(&s->rs, s->mono, (size_t)fr->nb_samples);
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

/* ---- container checks: what FFmpeg's demuxers let through -------------- */

/* FFmpeg stops quietly where a file ends. For most containers the duration
 * in the header catches a cut (checked in decode_ffmpeg), but three get
 * their "declared" duration from the end of the file itself, or from no
 * header at all, so a cut file looks complete. These walks look at the
 * structure instead:
 *  - Ogg: every page must be whole and follow the last, and every logical
 *    stream must end with its end-of-stream page (RFC 3533). A cut between
 *    two pages leaves the EOS page out.
 *  - MP3: the chain of frame headers must not end inside a frame (or its
 *    header). What it cannot see: a file without a Xing/Info header cut
 *    exactly at a frame boundary is a valid, shorter MP3.
 *  - CAF: the data chunk's size must fit in the file (a size of -1 means
 *    "to the end of the file", and such a file cannot be checked).
 *  - Matroska/WebM: every element must fit in the file. A browser's
 *    MediaRecorder writes WebM live, with no duration in its header, so
 *    this is the only check such a file gets; a cut exactly between two
 *    blocks is not seen.
 *  - AIFF: every chunk's size must fit in the file (FFmpeg would otherwise
 *    fail on a partial sample frame, or not at all when the cut falls on
 *    one).
 * Each returns 0, SAYIN_ETRUNCATED or SAYIN_EBADDATA with err set, or
 * -errno. */

/* A window of the file for the walks: refilled with pread as they move. */
struct file_window {
	int fd;
	uint64_t size;
	uint64_t start;         /* file offset of buf[0] */
	size_t len;
	unsigned char buf[65536];
};

/* Makes [off, off + n) available (n <= sizeof buf) and returns it, or NULL
 * when the file ends first or cannot be read (*rc: 0 or -errno). */
static const unsigned char *window_at(struct file_window *w, uint64_t off, size_t n, int *rc)
{
	*rc = 0;
	if (off > w->size || w->size - off < n)
		return NULL;
	if (off < w->start || off + n > w->start + w->len) {
		size_t want = sizeof(w->buf);
		ssize_t got;

		if (w->size - off < want)
			want = (size_t)(w->size - off);
		do
			got = pread(w->fd, w->buf, want, (off_t)off);
		while (got < 0 && errno == EINTR);
		if (got < 0) {
			*rc = -errno;
			return NULL;
		}
		w->start = off;
		w->len = (size_t)got;
		if (w->len < n)
			return NULL;
	}
	return w->buf + (off - w->start);
}

#define OGG_MAX_STREAMS 64

static int check_ogg(struct file_window *w, char *err, size_t errlen)
{
	uint32_t serial[OGG_MAX_STREAMS];
	bool ended[OGG_MAX_STREAMS];
	size_t n = 0, open = 0;
	uint64_t off = 0;
	int rc;

	while (off < w->size) {
		const unsigned char *h = window_at(w, off, 27, &rc);
		const unsigned char *seg;
		uint64_t body = 0;
		uint32_t sn;
		size_t i;

		if (rc != 0)
			return rc;
		if (h == NULL) {
			set_err(err, errlen, "truncated: the ogg file ends inside a page header");
			return SAYIN_ETRUNCATED;
		}
		if (memcmp(h, "OggS", 4) != 0 || h[4] != 0) {
			/* After the last stream's end, anything may follow. */
			if (n > 0 && open == 0)
				return 0;
			set_err(err, errlen, "corrupt data: byte %llu of the ogg file is not the start "
			        "of a page", (unsigned long long)off);
			return SAYIN_EBADDATA;
		}
		sn = (uint32_t)h[14] | (uint32_t)h[15] << 8 | (uint32_t)h[16] << 16 |
		     (uint32_t)h[17] << 24;
		{
			unsigned flags = h[5], nseg = h[26];

			seg = window_at(w, off + 27, nseg, &rc);
			if (rc != 0)
				return rc;
			if (seg == NULL) {
				set_err(err, errlen, "truncated: the ogg file ends inside a page header");
				return SAYIN_ETRUNCATED;
			}
			for (i = 0; i < nseg; i++)
				body += seg[i];
			off += 27 + nseg;
			if (body > w->size - off) {
				set_err(err, errlen, "truncated: the ogg file ends inside a page (%llu of "
				        "%llu bytes)", (unsigned long long)(w->size - off),
				        (unsigned long long)body);
				return SAYIN_ETRUNCATED;
			}
			off += body;
			for (i = 0; i < n && serial[i] != sn; i++)
				;
			if (i == n) {
				if (n == OGG_MAX_STREAMS) {
					set_err(err, errlen, "unsupported format: more than %d ogg streams",
					        OGG_MAX_STREAMS);
					return SAYIN_EUNSUPPORTED;
				}
				serial[n] = sn;
				ended[n] = false;
				n++;
				open++;
			}
			if ((flags & 0x04) && !ended[i]) {
				ended[i] = true;
				open--;
			}
		}
	}
	if (open > 0) {
		set_err(err, errlen, "truncated: the ogg file ends without its end-of-stream page "
		                     "(cut short?)");
		return SAYIN_ETRUNCATED;
	}
	return 0;
}

/* The length of the MPEG audio frame whose header is h, or 0 when h is not
 * one (free-format bitrates count as not one: their length is not in the
 * header). */
static uint32_t mp3_frame_len(const unsigned char *h)
{
	static const uint16_t kbps[2][3][15] = {
		{ /* MPEG-1: layer I, II, III */
		  { 0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448 },
		  { 0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384 },
		  { 0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320 } },
		{ /* MPEG-2 and 2.5 */
		  { 0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256 },
		  { 0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160 },
		  { 0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160 } },
	};
	static const uint32_t rates[3] = { 44100, 48000, 32000 };
	unsigned version, layer, br, sr, pad;
	uint32_t bitrate, rate;

	if (h[0] != 0xFF || (h[1] & 0xE0) != 0xE0)
		return 0;
	version = (h[1] >> 3) & 3; /* 0: 2.5, 1: reserved, 2: 2, 3: 1 */
	layer = (h[1] >> 1) & 3;   /* 0: reserved, 1: III, 2: II, 3: I */
	br = h[2] >> 4;
	sr = (h[2] >> 2) & 3;
	pad = (h[2] >> 1) & 1;
	if (version == 1 || layer == 0 || br == 0 || br == 15 || sr == 3)
		return 0;
	bitrate = kbps[version == 3 ? 0 : 1][3 - layer][br] * 1000u;
	rate = rates[sr] >> (version == 3 ? 0 : version == 2 ? 1 : 2);
	if (layer == 3)
		return (12 * bitrate / rate + pad) * 4;
	if (layer == 1 && version != 3)
		return 72 * bitrate / rate + pad;
	return 144 * bitrate / rate + pad;
}

/* Bytes of ID3v2 tag at off (0 when there is none). */
static uint64_t id3v2_len(const unsigned char *h)
{
	if (memcmp(h, "ID3", 3) != 0 || (h[6] | h[7] | h[8] | h[9]) & 0x80)
		return 0;
	return 10 + ((uint64_t)h[6] << 21 | (uint64_t)h[7] << 14 | (uint64_t)h[8] << 7 | h[9]) +
	       ((h[5] & 0x10) ? 10 : 0);
}

/* Whether what is left from off on is a tag or padding, not audio. */
static bool mp3_tail_is_tag(struct file_window *w, uint64_t off)
{
	uint64_t left = w->size - off;
	const unsigned char *t;
	int rc;

	t = window_at(w, off, left < 10 ? (size_t)left : 10, &rc);
	if (t == NULL)
		return false;
	if (left == 128 && memcmp(t, "TAG", 3) == 0)
		return true;
	if (left >= 8 && (memcmp(t, "APETAGEX", 8) == 0 || memcmp(t, "LYRICSBE", 8) == 0))
		return true;
	if (left >= 10 && id3v2_len(t) > 0)
		return true;
	for (uint64_t i = off; i < w->size; i++) {
		const unsigned char *b = window_at(w, i, 1, &rc);
		if (b == NULL || *b != 0)
			return false;
	}
	return true; /* zero padding */
}

/* Finds the next offset from off where two frames follow each other (or
 * one ends exactly at the end of the file); w->size when there is none
 * within the next MP3_RESYNC bytes. */
#define MP3_RESYNC 65536
static uint64_t mp3_resync(struct file_window *w, uint64_t off)
{
	uint64_t end = w->size - off > MP3_RESYNC ? off + MP3_RESYNC : w->size;
	int rc;

	for (; off + 4 <= end; off++) {
		const unsigned char *h = window_at(w, off, 4, &rc);
		uint32_t len = h != NULL ? mp3_frame_len(h) : 0;
		const unsigned char *h2;

		if (len == 0 || len > w->size - off)
			continue;
		if (len == w->size - off)
			return off;
		h2 = w->size - off - len >= 4 ? window_at(w, off + len, 4, &rc) : NULL;
		if (h2 != NULL && mp3_frame_len(h2) != 0)
			return off;
	}
	return w->size;
}

static int check_mp3(struct file_window *w, char *err, size_t errlen)
{
	uint64_t off = 0, frames = 0;
	int rc;

	for (;;) {
		const unsigned char *h = window_at(w, off, 10, &rc);
		uint64_t tag = h != NULL ? id3v2_len(h) : 0;

		if (rc != 0)
			return rc;
		if (tag == 0)
			break;
		off += tag;
	}
	off = mp3_resync(w, off);
	while (off < w->size) {
		const unsigned char *h = window_at(w, off, 4, &rc);
		uint32_t len;

		if (rc != 0)
			return rc;
		len = h != NULL ? mp3_frame_len(h) : 0;
		if (len != 0 && len <= w->size - off) {
			off += len;
			frames++;
			continue;
		}
		if (mp3_tail_is_tag(w, off))
			return 0;
		if (len != 0 || (h == NULL && frames > 0)) {
			set_err(err, errlen, "truncated: the mp3 file ends inside a frame (%llu bytes "
			        "short)", (unsigned long long)(len != 0 ? off + len - w->size : 0));
			return SAYIN_ETRUNCATED;
		}
		/* Not a frame: junk between frames, which the decoder skips too
		 * (and reports when it is damaged audio). Find the next one. */
		off = mp3_resync(w, off + 1);
	}
	return 0;
}

static uint64_t be64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static int check_caf(struct file_window *w, char *err, size_t errlen)
{
	uint64_t off = 8; /* "caff", version, flags */
	int rc;

	while (off < w->size) {
		const unsigned char *c = window_at(w, off, 12, &rc);
		uint64_t size;

		if (rc != 0)
			return rc;
		if (c == NULL) {
			set_err(err, errlen, "truncated: the caf file ends inside a chunk header");
			return SAYIN_ETRUNCATED;
		}
		size = be64(c + 4);
		off += 12;
		if (memcmp(c, "data", 4) == 0 && size == UINT64_MAX)
			return 0; /* to the end of the file: nothing to compare */
		if (size > w->size - off) {
			set_err(err, errlen, "truncated: the caf file's %.4s chunk claims %llu bytes but "
			        "only %llu remain", (const char *)c, (unsigned long long)size,
			        (unsigned long long)(w->size - off));
			return SAYIN_ETRUNCATED;
		}
		off += size;
	}
	return 0;
}

static int check_aiff(struct file_window *w, char *err, size_t errlen)
{
	uint64_t off = 12; /* "FORM", size, "AIFF" or "AIFC" */
	int rc;

	while (off < w->size) {
		const unsigned char *c = window_at(w, off, 8, &rc);
		uint64_t size;

		if (rc != 0)
			return rc;
		if (c == NULL) {
			set_err(err, errlen, "truncated: the aiff file ends inside a chunk header");
			return SAYIN_ETRUNCATED;
		}
		size = (uint64_t)c[4] << 24 | (uint64_t)c[5] << 16 | (uint64_t)c[6] << 8 | c[7];
		off += 8;
		if (size > w->size - off) {
			set_err(err, errlen, "truncated: the aiff file's %.4s chunk claims %llu bytes but "
			        "only %llu remain", (const char *)c, (unsigned long long)size,
			        (unsigned long long)(w->size - off));
			return SAYIN_ETRUNCATED;
		}
		off += size + (size & 1); /* chunks are padded to even sizes */
	}
	return 0;
}

/* An EBML variable-length integer at p (at most avail bytes): its value
 * (the marker bit removed), its length in *len (0: invalid or cut), and
 * *unknown set when all value bits are 1 (an element of unknown size). */
static uint64_t ebml_vint(const unsigned char *p, size_t avail, bool keep_marker, size_t *len,
                          bool *unknown)
{
	size_t n = 1;
	uint64_t v;
	bool ones;

	*len = 0;
	if (avail == 0 || p[0] == 0)
		return 0;
	while (!(p[0] & (0x80 >> (n - 1))))
		n++;
	if (n > avail)
		return 0;
	v = keep_marker ? p[0] : (p[0] & (0xFFu >> n));
	ones = (p[0] & (0xFFu >> n)) == (0xFFu >> n);
	for (size_t i = 1; i < n; i++) {
		v = v << 8 | p[i];
		ones = ones && p[i] == 0xFF;
	}
	*len = n;
	if (unknown != NULL)
		*unknown = ones;
	return v;
}

#define MKV_SEGMENT 0x18538067u
#define MKV_CLUSTER 0x1F43B675u
#define MKV_BLOCKGROUP 0xA0u

static int check_matroska(struct file_window *w, char *err, size_t errlen)
{
	uint64_t off = 0, end[4]; /* where the elements we are inside end */
	size_t depth = 0;
	int rc;

	while (off < w->size) {
		size_t avail = w->size - off < 12 ? (size_t)(w->size - off) : 12, idlen, szlen;
		const unsigned char *h = window_at(w, off, avail, &rc);
		uint64_t id, size, start = off;
		bool unknown;

		if (rc != 0)
			return rc;
		if (h == NULL)
			return 0;
		while (depth > 0 && off >= end[depth - 1])
			depth--;
		id = ebml_vint(h, avail, true, &idlen, NULL);
		size = idlen > 0 && idlen <= 4 ? ebml_vint(h + idlen, avail - idlen, false, &szlen, &unknown)
		                               : 0;
		if (idlen == 0 || idlen > 4 || szlen == 0) {
			if (avail < 12 && (idlen == 0 ? h[0] != 0 : idlen <= 4)) {
				set_err(err, errlen, "truncated: the matroska file ends inside an element "
				                     "header");
				return SAYIN_ETRUNCATED;
			}
			set_err(err, errlen, "corrupt data: byte %llu of the matroska file is not an "
			        "element", (unsigned long long)off);
			return SAYIN_EBADDATA;
		}
		off += idlen + szlen;
		if (!unknown && depth > 0 && size > end[depth - 1] - off) {
			/* A child cannot outgrow its parent: a damaged size. */
			set_err(err, errlen, "corrupt data: an element at byte %llu of the matroska "
			        "file claims %llu bytes, more than the element around it holds",
			        (unsigned long long)start, (unsigned long long)size);
			return SAYIN_EBADDATA;
		}
		if (!unknown && size > w->size - off) {
			set_err(err, errlen, "truncated: the matroska file ends inside an element "
			        "(%llu of %llu bytes)", (unsigned long long)(w->size - off),
			        (unsigned long long)size);
			return SAYIN_ETRUNCATED;
		}
		/* The audio sits in blocks inside clusters inside the segment:
		 * walk into those, step over everything else. */
		if (id == MKV_SEGMENT || id == MKV_CLUSTER || id == MKV_BLOCKGROUP) {
			if (depth == sizeof(end) / sizeof(end[0])) {
				set_err(err, errlen, "corrupt data: matroska elements nested too deep at "
				        "byte %llu", (unsigned long long)start);
				return SAYIN_EBADDATA;
			}
			/* An element of unknown size ends where its parent does. */
			end[depth] = !unknown ? off + size : depth > 0 ? end[depth - 1] : UINT64_MAX;
			depth++;
			continue;
		}
		if (unknown)
			return 0; /* cannot be stepped over: nothing more to check */
		off += size;
	}
	return 0;
}

/* Whether name ("ogg/opus") is in the container ("ogg"). */
static bool container_is(const char *name, const char *container)
{
	size_t n = strlen(container);
	return strncmp(name, container, n) == 0 && (name[n] == '\0' || name[n] == '/');
}

/* Runs the walk for the container FFmpeg found, if it has one. */
static int check_container(const struct ff_state *s, char *err, size_t errlen)
{
	struct file_window *w;
	int rc = 0;

	if (!container_is(s->name, "ogg") && !container_is(s->name, "mp3") &&
	    !container_is(s->name, "caf") && !container_is(s->name, "aiff") &&
	    !container_is(s->name, "matroska"))
		return 0;
	w = malloc(sizeof(*w));
	if (w == NULL) {
		set_err(err, errlen, "out of memory checking the %s file", s->name);
		return -ENOMEM;
	}
	w->fd = s->io.fd;
	w->size = s->io.size;
	w->start = 0;
	w->len = 0;
	if (container_is(s->name, "ogg"))
		rc = check_ogg(w, err, errlen);
	else if (container_is(s->name, "mp3"))
		rc = check_mp3(w, err, errlen);
	else if (container_is(s->name, "caf"))
		rc = check_caf(w, err, errlen);
	else if (container_is(s->name, "matroska"))
		rc = check_matroska(w, err, errlen);
	else
		rc = check_aiff(w, err, errlen);
	if (rc < 0 && rc > -4096)
		set_err(err, errlen, "cannot read the recording: %s", strerror(-rc));
	free(w);
	return rc;
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

static int decode_ffmpeg(int fd, uint64_t size, uint64_t max_duration_ms, const media__sink *sink,
                         media__info *info, char *err, size_t errlen)
{
	struct ff_state s = { .io = { .fd = fd, .size = size }, .max_duration_ms = max_duration_ms,
		              .limit = UINT64_MAX, .name = "input" };
	double declared, decoded;
	int rc = ff_open(&s, info, err, errlen);

	if (rc == -ENOMEM)
		set_err(err, errlen, "out of memory opening the recording");
	if (rc == 0)
		rc = check_container(&s, err, errlen);
	if (rc != 0)
		goto out;
	/* A header that declares too long a recording is refused before any
	 * decoding (the limit is checked again on the samples themselves). */
	declared = ff_declared_seconds(&s);
	if (max_duration_ms > 0 && declared > (double)max_duration_ms / 1000.0 + 1.0) {
		rc = too_long(max_duration_ms, err, errlen);
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
	rc = resampler_finish(&s.rs, info->input_frames, &info->frames, err, errlen);
out:
	if (s.rs_live)
		resampler_free(&s.rs);
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

/* ---- dispatch, the in-process API and the child ------------------------- */

int media__decode_fd(int fd, uint64_t size, uint64_t max_duration_ms, const media__sink *sink,
                     media__info *info, char *err, size_t errlen)
{
	struct wav_file f = { .fd = fd, .size = size };
	unsigned char magic[4];
	size_t got;
	int rc;

	memset(info, 0, sizeof(*info));
	if (size == 0) {
		set_err(err, errlen, "the file is empty");
		return SAYIN_EEMPTY;
	}
	rc = read_at(&f, 0, magic, sizeof(magic), &got);
	if (rc < 0) {
		set_err(err, errlen, "read failed: %s", strerror(-rc));
		return rc;
	}
	/* RIFF goes to the strict reader, also when cut inside the magic. */
	if (memcmp(magic, "RIFF", got) == 0 || (got == 4 && (memcmp(magic, "RIFX", 4) == 0 ||
	                                                     memcmp(magic, "RF64", 4) == 0)))
		return decode_wav(&f, max_duration_ms, sink, info, err, errlen);
	return decode_ffmpeg(fd, size, max_duration_ms, sink, info, err, errlen);
}

/* Collects the whole signal in memory (media_decode_file). */
struct mem_sink {
	float *samples;
	size_t len, cap;
};

static int mem_write(void *ctx, const float *x, size_t n)
{
	struct mem_sink *m = ctx;

	if (n > SIZE_MAX / sizeof(float) - m->len)
		return -ENOMEM;
	if (m->len + n > m->cap) {
		size_t cap = m->cap ? m->cap : 65536;
		float *p;

		while (cap < m->len + n) {
			if (cap > SIZE_MAX / sizeof(float) / 2)
				return -ENOMEM;
			cap *= 2;
		}
		p = realloc(m->samples, cap * sizeof(float));
		if (p == NULL)
			return -ENOMEM;
		m->samples = p;
		m->cap = cap;
	}
	memcpy(m->samples + m->len, x, n * sizeof(float));
	m->len += n;
	return 0;
}

/* Opens path as a regular file for decoding. Returns the fd or an error with
 * err set. */
static int open_recording(const char *path, uint64_t *size, char *err, size_t errlen)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

	if (fd < 0) {
		rc = -errno;
		set_err(err, errlen, "cannot open: %s", strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		set_err(err, errlen, "cannot stat: %s", strerror(-rc));
	} else if (S_ISDIR(st.st_mode)) {
		/* The readers need the file's size to spot truncation. */
		rc = -EISDIR;
		set_err(err, errlen, "cannot read: %s", strerror(EISDIR));
	} else if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		set_err(err, errlen, "cannot read: not a regular file");
	} else {
		*size = (uint64_t)st.st_size;
		return fd;
	}
	close(fd);
	return rc;
}

int media__open_recording(const char *path, uint64_t *size, char *err, size_t errlen)
{
	return open_recording(path, size, err, errlen);
}

int media_decode_file(const char *path, media_audio *out, char *err, size_t errlen)
{
	struct mem_sink mem = { 0 };
	media__sink sink = { mem_write, &mem };
	media__info info;
	uint64_t size = 0;
	int fd, rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (path == NULL || out == NULL) {
		set_err(err, errlen, "media_decode_file: no path or no output");
		return SAYIN_EINVAL;
	}
	fd = open_recording(path, &size, err, errlen);
	if (fd < 0)
		return fd;
	rc = media__decode_fd(fd, size, 0, &sink, &info, err, errlen);
	close(fd);
	if (rc == -ENOMEM && (err == NULL || errlen == 0 || err[0] == '\0'))
		set_err(err, errlen, "out of memory decoding the recording");
	if (rc != 0) {
		free(mem.samples);
		return rc;
	}
	out->samples = mem.samples;
	out->frames = mem.len;
	out->input_rate = info.rate;
	out->input_channels = info.channels;
	out->input_frames = info.input_frames;
	snprintf(out->input_format, sizeof(out->input_format), "%s", info.format);
	return 0;
}

void media_audio_free(media_audio *audio)
{
	if (audio == NULL)
		return;
	free(audio->samples);
	memset(audio, 0, sizeof(*audio));
}

double media_audio_duration(const media_audio *audio)
{
	if (audio == NULL || audio->input_rate == 0)
		return 0.0;
	return (double)audio->input_frames / (double)audio->input_rate;
}

/* ---- the decoder child --------------------------------------------------- */

static int write_record(int fd, uint32_t type, const void *body, size_t len)
{
	media__rec_header h = { .type = type, .len = (uint32_t)len };
	int rc = media__write_all(fd, &h, sizeof(h));

	return rc == 0 ? media__write_all(fd, body, len) : rc;
}

static int pipe_write(void *ctx, const float *x, size_t n)
{
	int fd = *(const int *)ctx;

	while (n > 0) {
		size_t k = n < MEDIA__REC_MAX_SAMPLES ? n : MEDIA__REC_MAX_SAMPLES;
		int rc = write_record(fd, MEDIA__REC_SAMPLES, x, k * sizeof(float));
		if (rc != 0)
			return rc;
		x += k;
		n -= k;
	}
	return 0;
}

/* FFmpeg's own messages, at debug level: its warnings about odd files are
 * not ours to print, and the error that matters reaches the parent. */
void media__ff_log(void *avcl, int level, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	(void)avcl;
	if (level > av_log_get_level())
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n > 0 && line[n - 1] == '\n')
		line[--n] = '\0';
	if (n > 0)
		log_debug("ffmpeg: %s", line);
}

/* A test hook, honoured only here in the child: SAYIN_TEST_DECODER_CRASH=segv
 * dies of SIGSEGV, =hang sleeps forever. */
static void test_hook(void)
{
	const char *what = getenv("SAYIN_TEST_DECODER_CRASH");

	if (what == NULL)
		return;
	if (strcmp(what, "segv") == 0) {
		signal(SIGSEGV, SIG_DFL); /* past any sanitizer's handler */
		raise(SIGSEGV);
	}
	if (strcmp(what, "hang") == 0) {
		for (;;)
			pause();
	}
}

int media_decoder_main(int argc, char **argv)
{
	media__rec_end end;
	media__info info;
	media__sink sink;
	struct stat st;
	enum log_level level = LOG_INFO;
	unsigned long long max_ms = 0, memory = 0;
	int out_fd = 1;
	char *tail = NULL;

	/* Writes to a file (a log on stderr) fail instead of killing us under
	 * RLIMIT_FSIZE 0. */
	signal(SIGXFSZ, SIG_IGN);
	if (argc != 5 || log_parse_level(argv[2], &level) != 0) {
		fprintf(stderr, "usage: %s LOG_LEVEL MAX_DURATION_MS MEMORY < FILE\n",
		        MEDIA_DECODER_COMMAND);
		return 2;
	}
	errno = 0;
	max_ms = strtoull(argv[3], &tail, 10);
	if (errno == 0 && tail != argv[3] && *tail == '\0')
		memory = strtoull(argv[4], &tail, 10);
	if (errno != 0 || tail == argv[3] || tail == argv[4] || *tail != '\0') {
		fprintf(stderr, "%s: bad MAX_DURATION_MS or MEMORY\n", MEDIA_DECODER_COMMAND);
		return 2;
	}
	/* 0: no limit (sanitizer builds reserve terabytes of shadow memory). */
	if (memory > 0) {
		struct rlimit as = { memory, memory };
		setrlimit(RLIMIT_AS, &as);
	}
	log_set_level(level);
	av_log_set_level(level >= LOG_DEBUG ? AV_LOG_VERBOSE : AV_LOG_ERROR);
	av_log_set_callback(media__ff_log);
	test_hook();

	memset(&end, 0, sizeof(end));
	sink.write = pipe_write;
	sink.ctx = &out_fd;
	if (fstat(0, &st) != 0 || !S_ISREG(st.st_mode)) {
		end.code = -EINVAL;
		set_err(end.message, sizeof(end.message), "cannot read: not a regular file");
	} else {
		end.code = media__decode_fd(0, (uint64_t)st.st_size, max_ms, &sink, &info, end.message,
		                            sizeof(end.message));
		end.rate = info.rate;
		end.channels = info.channels;
		end.input_frames = info.input_frames;
		end.frames = info.frames;
		memcpy(end.format, info.format, sizeof(end.format));
	}
	if (end.code == -ENOMEM && end.message[0] == '\0')
		set_err(end.message, sizeof(end.message), "out of memory decoding the recording");
	return write_record(out_fd, MEDIA__REC_END, &end, sizeof(end)) == 0 ? 0 : 1;
}

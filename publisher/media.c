/* media: a strict RIFF/WAVE reader, downmix and resampling to mono 48 kHz,
 * and an Ogg Opus (RFC 7845) encoder built on libopus and libogg. */
#include "media.h"

#include "error.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ogg/ogg.h>
#include <opus.h>
#include <soxr.h>

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
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

/* Names what a non-RIFF file looks like, so the error says more than "no". */
static const char *sniff_other_format(const unsigned char *b, size_t n)
{
	if (n >= 3 && memcmp(b, "ID3", 3) == 0)
		return "MP3 (ID3 tag)";
	if (n >= 2 && b[0] == 0xff && (b[1] & 0xe0) == 0xe0)
		return "MPEG audio (MP3 or ADTS AAC)";
	if (n >= 4 && memcmp(b, "OggS", 4) == 0)
		return "Ogg";
	if (n >= 4 && memcmp(b, "fLaC", 4) == 0)
		return "FLAC";
	if (n >= 8 && memcmp(b + 4, "ftyp", 4) == 0)
		return "MP4/M4A";
	if (n >= 4 && memcmp(b, "FORM", 4) == 0)
		return "AIFF";
	if (n >= 4 && memcmp(b, "\x1a\x45\xdf\xa3", 4) == 0)
		return "Matroska/WebM";
	return NULL;
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

/* Collects mono output at MEDIA_RATE: copies it when the input is already at
 * that rate, or runs it through soxr. Output beyond `want` frames is dropped
 * and a short output is zero-padded, so the count is exactly `want`. */
struct resampler {
	soxr_t soxr;    /* NULL when no resampling is needed */
	float *out;
	size_t have;
	size_t want;
	float *scratch; /* soxr's output before it is appended */
	size_t scratch_len;
};

static void resampler_append(struct resampler *rs, const float *in, size_t n)
{
	size_t room = rs->want - rs->have;

	if (n > room)
		n = room;
	memcpy(rs->out + rs->have, in, n * sizeof(float));
	rs->have += n;
}

/* Feeds n mono frames, or flushes the resampler when in is NULL.
 * Returns 0 or SAYIN_EENCODE (logged). */
static int resampler_feed(struct resampler *rs, const float *in, size_t n)
{
	size_t used = 0;

	if (rs->soxr == NULL) {
		if (in != NULL)
			resampler_append(rs, in, n);
		return 0;
	}
	if (in == NULL) {
		for (;;) {
			size_t odone = 0;
			soxr_error_t e = soxr_process(rs->soxr, NULL, 0, NULL, rs->scratch,
			                              rs->scratch_len, &odone);
			if (e != NULL) {
				log_error("media: soxr flush failed: %s", e);
				return SAYIN_EENCODE;
			}
			if (odone == 0)
				return 0;
			resampler_append(rs, rs->scratch, odone);
		}
	}
	while (used < n) {
		size_t idone = 0, odone = 0;
		soxr_error_t e = soxr_process(rs->soxr, in + used, n - used, &idone, rs->scratch,
		                              rs->scratch_len, &odone);
		if (e != NULL) {
			log_error("media: soxr failed: %s", e);
			return SAYIN_EENCODE;
		}
		if (idone == 0 && odone == 0) {
			log_error("media: soxr made no progress");
			return SAYIN_EENCODE;
		}
		resampler_append(rs, rs->scratch, odone);
		used += idone;
	}
	return 0;
}

/* Reads, downmixes and resamples the data chunk into out->samples. */
static int decode_data(const struct wav_file *f, uint64_t off, const struct wav_format *fmt,
                       media_audio *out, char *err, size_t errlen)
{
	struct resampler rs = { 0 };
	unsigned char *raw = NULL;
	float *mono = NULL;
	uint64_t want, done = 0;
	int rc = 0;

	if (out->input_frames > UINT64_MAX / MEDIA_RATE) {
		set_err(err, errlen, "recording is too long");
		return SAYIN_EUNSUPPORTED;
	}
	/* round(input_frames * 48000 / input_rate), in integers */
	want = (out->input_frames * MEDIA_RATE + fmt->rate / 2) / fmt->rate;
	if (want == 0) {
		/* e.g. a single frame at 192 kHz rounds to nothing */
		set_err(err, errlen, "WAV file is too short to yield a sample at %d Hz", MEDIA_RATE);
		return SAYIN_EEMPTY;
	}
	if (want > SIZE_MAX / sizeof(float)) {
		set_err(err, errlen, "recording is too long to hold in memory");
		return -ENOMEM;
	}
	rs.want = (size_t)want;
	rs.out = malloc(rs.want * sizeof(float));
	raw = malloc((size_t)WAV_CHUNK_FRAMES * fmt->block_align);
	mono = malloc(WAV_CHUNK_FRAMES * sizeof(float));
	if (rs.out == NULL || raw == NULL || mono == NULL) {
		set_err(err, errlen, "out of memory decoding the WAV data");
		rc = -ENOMEM;
		goto out;
	}
	if (fmt->rate != MEDIA_RATE) {
		soxr_error_t e = NULL;
		/* HQ (20-bit) is already beyond what 32 kb/s Opus keeps. One
		 * thread: a decode never starts threads behind its caller's back. */
		soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
		soxr_runtime_spec_t run = soxr_runtime_spec(1);

		rs.scratch_len = WAV_CHUNK_FRAMES * (MEDIA_RATE / WAV_MIN_RATE) + 1024;
		rs.scratch = malloc(rs.scratch_len * sizeof(float));
		if (rs.scratch == NULL) {
			set_err(err, errlen, "out of memory decoding the WAV data");
			rc = -ENOMEM;
			goto out;
		}
		rs.soxr = soxr_create(fmt->rate, MEDIA_RATE, 1, &e, NULL, &q, &run);
		if (rs.soxr == NULL || e != NULL) {
			log_error("media: soxr_create(%u -> %d) failed: %s", fmt->rate, MEDIA_RATE,
			          e != NULL ? e : "unknown error");
			set_err(err, errlen, "cannot create a resampler from %u Hz", fmt->rate);
			rc = SAYIN_EENCODE;
			goto out;
		}
	}

	while (done < out->input_frames) {
		uint64_t left = out->input_frames - done;
		size_t frames = left < WAV_CHUNK_FRAMES ? (size_t)left : WAV_CHUNK_FRAMES;
		size_t bytes = frames * fmt->block_align, got;

		rc = read_at(f, off + done * fmt->block_align, raw, bytes, &got);
		if (rc < 0) {
			set_err(err, errlen, "read failed: %s", strerror(-rc));
			goto out;
		}
		if (got < bytes) {
			/* The file shrank after we measured it. */
			set_err(err, errlen, "the file ends before its data chunk does");
			rc = SAYIN_ETRUNCATED;
			goto out;
		}
		downmix(raw, frames, fmt, mono);
		rc = resampler_feed(&rs, mono, frames);
		if (rc < 0) {
			set_err(err, errlen, "resampling from %u Hz failed", fmt->rate);
			goto out;
		}
		done += frames;
	}
	rc = resampler_feed(&rs, NULL, 0);
	if (rc < 0) {
		set_err(err, errlen, "resampling from %u Hz failed", fmt->rate);
		goto out;
	}
	if (rs.have < rs.want) {
		log_debug("media: resampler gave %zu of %zu frames; padding", rs.have, rs.want);
		memset(rs.out + rs.have, 0, (rs.want - rs.have) * sizeof(float));
	}
	/* The resampler's filter can overshoot full scale slightly. */
	for (size_t i = 0; i < rs.want; i++) {
		if (rs.out[i] > 1.0f)
			rs.out[i] = 1.0f;
		else if (rs.out[i] < -1.0f)
			rs.out[i] = -1.0f;
	}
	out->samples = rs.out;
	out->frames = rs.want;
	rs.out = NULL;
out:
	if (rs.soxr != NULL)
		soxr_delete(rs.soxr);
	free(rs.scratch);
	free(rs.out);
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
	const char *other;
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
		other = sniff_other_format(hdr, got);
		if (other != NULL)
			set_err(err, errlen, "not a WAV file: looks like %s", other);
		else
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
static int decode_wav(const struct wav_file *f, media_audio *out, char *err, size_t errlen)
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
			set_err(err, errlen, "WAV chunk '%s' claims %u bytes but only %llu remain", id, size, (unsigned long long)left);
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
	out->input_rate = fmt.rate;
	out->input_channels = fmt.channels;
	out->input_frames = data_bytes / fmt.block_align;
	snprintf(out->input_format, sizeof(out->input_format), "%s", fmt.name);
	return decode_data(f, off, &fmt, out, err, errlen);
}

int media_decode_file(const char *path, media_audio *out, char *err, size_t errlen)
{
	struct wav_file f = { .fd = -1 };
	struct stat st;
	int rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (path == NULL || out == NULL) {
		set_err(err, errlen, "media_decode_file: no path or no output");
		return SAYIN_EINVAL;
	}
	f.fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f.fd < 0) {
		rc = -errno;
		set_err(err, errlen, "cannot open: %s", strerror(-rc));
		return rc;
	}
	if (fstat(f.fd, &st) < 0) {
		rc = -errno;
		set_err(err, errlen, "cannot stat: %s", strerror(-rc));
		goto out;
	}
	/* The reader needs the file's size to spot truncation. */
	if (S_ISDIR(st.st_mode)) {
		rc = -EISDIR;
		set_err(err, errlen, "cannot read: %s", strerror(EISDIR));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		set_err(err, errlen, "cannot read: not a regular file");
		goto out;
	}
	f.size = (uint64_t)st.st_size;
	if (f.size == 0) {
		rc = SAYIN_EEMPTY;
		set_err(err, errlen, "the file is empty");
		goto out;
	}
	rc = decode_wav(&f, out, err, errlen);
out:
	close(f.fd);
	if (rc != 0)
		memset(out, 0, sizeof(*out));
	return rc;
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

static int write_page(struct byte_buf *b, const ogg_page *og)
{
	int rc = buf_append(b, og->header, (size_t)og->header_len);

	if (rc == 0)
		rc = buf_append(b, og->body, (size_t)og->body_len);
	return rc;
}

/* Writes every complete page (flush: every buffered packet). Sets *granule
 * to the granule position of the last page written that ends a packet. */
static int drain_pages(ogg_stream_state *os, struct byte_buf *b, bool flush, int64_t *granule)
{
	ogg_page og;

	while (flush ? ogg_stream_flush(os, &og) : ogg_stream_pageout(os, &og)) {
		int rc = write_page(b, &og);

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

int media_encode_opus(const media_audio *audio, const media_opus_options *opt, media_buffer *out,
                      char *err, size_t errlen)
{
	static const media_opus_options defaults = { .bitrate = 0, .complexity = -1 };
	OpusEncoder *enc = NULL;
	ogg_stream_state os;
	bool os_live = false;
	struct byte_buf file = { 0 }, tags = { 0 };
	unsigned char head[19];
	unsigned char packet[OPUS_MAX_PACKET];
	float pcm[OPUS_FRAME];
	int bitrate, complexity, lookahead = 0, rc;
	int64_t page_granule = 0;
	uint64_t n_packets, end_granule;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (audio == NULL || out == NULL) {
		set_err(err, errlen, "media_encode_opus: no audio or no output");
		return SAYIN_EINVAL;
	}
	if (opt == NULL)
		opt = &defaults;
	if (audio->frames == 0 || audio->samples == NULL) {
		set_err(err, errlen, "no samples to encode");
		return SAYIN_EEMPTY;
	}
	/* Granule positions are signed 64-bit. */
	if ((uint64_t)audio->frames > (uint64_t)INT64_MAX - 2 * OPUS_FRAME - UINT16_MAX) {
		set_err(err, errlen, "too many samples to encode");
		return SAYIN_EINVAL;
	}
	rc = check_options(opt, &bitrate, &complexity, err, errlen);
	if (rc != 0)
		return rc;
	rc = create_encoder(bitrate, complexity, &enc, &lookahead, err, errlen);
	if (rc != 0)
		return rc;
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
	put_le32(head + 12, audio->input_rate);   /* original rate, informational */
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
	if (rc != 0)
		goto out;

	/* Encode pre-skip extra samples of silence so the encoder's lookahead
	 * flushes the real tail out; the last page's granule then trims the
	 * padding so a decoder yields exactly audio->frames samples. */
	n_packets = ((uint64_t)audio->frames + (uint64_t)lookahead + OPUS_FRAME - 1) / OPUS_FRAME;
	end_granule = (uint64_t)lookahead + audio->frames;
	for (uint64_t k = 0; k < n_packets; k++) {
		uint64_t start = k * OPUS_FRAME;
		size_t n = 0;
		bool last = k + 1 == n_packets;
		int64_t granule = last ? (int64_t)end_granule : (int64_t)((k + 1) * OPUS_FRAME);
		opus_int32 len;

		if (start < audio->frames) {
			n = audio->frames - (size_t)start;
			if (n > OPUS_FRAME)
				n = OPUS_FRAME;
			memcpy(pcm, audio->samples + start, n * sizeof(float));
		}
		memset(pcm + n, 0, (OPUS_FRAME - n) * sizeof(float));
		len = opus_encode_float(enc, pcm, OPUS_FRAME, packet, sizeof(packet));
		if (len < 0) {
			log_error("media: opus_encode_float: %s", opus_strerror(len));
			set_err(err, errlen, "the Opus encoder failed: %s", opus_strerror(len));
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
			set_err(err, errlen, "out of memory writing Ogg pages");
			goto out;
		}
	}
	out->data = file.data;
	out->len = file.len;
	file.data = NULL;
out:
	if (os_live)
		ogg_stream_clear(&os);
	opus_encoder_destroy(enc);
	free(tags.data);
	free(file.data);
	return rc;
}

void media_buffer_free(media_buffer *buf)
{
	if (buf == NULL)
		return;
	free(buf->data);
	buf->data = NULL;
	buf->len = 0;
}

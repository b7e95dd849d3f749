/* wav: the strict RIFF/WAVE reader (FFmpeg accepts truncated WAVs): PCM 16/24
 * and float 32, WAVE_FORMAT_EXTENSIBLE, streamed size placeholders; the
 * samples are downmixed here and resampled by resample.c. */
#include "media/internal.h"

#include "core/error.h"
#include "core/fileio.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define set_err media__set_err

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
	return fileio_read(f->fd, buf, len, (int64_t)off, got);
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
				v = media__clamp_sample(v);
				break;
			}
			}
			sum += v;
		}
		mono[i] = sum * scale;
	}
}

/* Reads, downmixes and resamples the data chunk into the sink. */
static int decode_data(const struct wav_file *f, uint64_t off, const struct wav_format *fmt,
                       uint64_t input_frames, uint64_t max_duration_ms, const media__sink *sink,
                       media__info *info, char *err, size_t errlen)
{
	media__resampler rs;
	unsigned char *raw = NULL;
	float *mono = NULL;
	uint64_t done = 0;
	int rc;

	if (input_frames > media__frame_limit(max_duration_ms, fmt->rate))
		return media__too_long(max_duration_ms, err, errlen);
	rc = media__resampler_init(&rs, fmt->rate, sink, err, errlen);
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
		rc = media__resampler_feed(&rs, mono, frames);
		if (rc == SAYIN_EENCODE)
			set_err(err, errlen, "resampling from %u Hz failed", fmt->rate);
		done += frames;
	}
	if (rc == 0)
		rc = media__resampler_finish(&rs, input_frames, &info->frames, err, errlen);
	media__resampler_free(&rs);
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

int media__decode_wav(int fd, uint64_t file_size, uint64_t max_duration_ms,
                      const media__sink *sink, media__info *info, char *err, size_t errlen)
{
	const struct wav_file file = { .fd = fd, .size = file_size }, *f = &file;
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

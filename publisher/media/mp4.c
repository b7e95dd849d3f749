/* mp4: the M4A container of the AAC fallback, written as it streams.
 *
 * Why not FFmpeg's mov muxer: it keeps a 48-byte entry per AAC packet (46.9
 * a second) in memory until its trailer, 8 MiB for an hour, the one thing
 * in the pipeline whose memory grew with the recording's length; and for
 * +faststart it then rewrites the whole file. Here the packets go to one
 * unlinked temporary file and their sizes to another as they come, and
 * finish writes the moov from those and copies the packets behind it in the
 * kernel: memory does not depend on the length.
 *
 * The layout is the one FFmpeg's ipod muxer writes with movflags=+faststart
 * and +bitexact for one AAC track, box for box and byte for byte (a unit
 * test muxes the same packets with libavformat and compares): ftyp M4A,
 * moov (mvhd, trak (tkhd, edts/elst skipping the encoder delay, mdia (mdhd,
 * hdlr, minf (smhd, dinf, stbl (stsd/mp4a/esds, stts, stsc, stsz, stco,
 * sgpd/sbgp 'roll'))))), udta/meta), free, mdat with every packet in one
 * chunk. References: ISO/IEC 14496-12 (boxes), 14496-14 (mp4a, esds),
 * 14496-1 (descriptors). */
#include "media/internal.h"

#include "core/buf.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define set_err media__set_err

#define MOVIE_TIMESCALE 1000
#define SIZES_BUFFER 4096 /* stsz entries staged before a write */
#define MAX_RUNS 64       /* stts runs: AAC has two (full frames, the last) */

struct run {
	uint32_t count, delta;
};

struct media__mp4 {
	int data_fd;          /* the packets, back to back */
	int sizes_fd;         /* their sizes, 32-bit big-endian (stsz entries) */
	uint64_t data_len;
	uint64_t packets;
	uint8_t sizes[SIZES_BUFFER * 4];
	size_t staged;        /* entries in sizes not yet written */
	struct run runs[MAX_RUNS];
	size_t n_runs;
	uint64_t duration;    /* the media timescale's ticks: sum of durations */
};

/* The boxes, built in one core/buf (whose failure is checked once, at the
 * end). stsz is written without its entries (4 bytes per packet, streamed
 * from sizes_fd at the end): boxes around it count them through
 * `deferred`. */
struct boxes {
	buf b;
	size_t stsz_at;       /* where stsz starts; SIZE_MAX before it */
	uint64_t deferred;    /* its entries' bytes */
	int too_big;          /* a box over 4 GiB */
};

static void put(struct boxes *b, const void *src, size_t n)
{
	buf_append(&b->b, src, n);
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void u8(struct boxes *b, uint8_t v)
{
	put(b, &v, 1);
}

static void u16(struct boxes *b, uint16_t v)
{
	uint8_t x[2] = { (uint8_t)(v >> 8), (uint8_t)v };
	put(b, x, 2);
}

static void u24(struct boxes *b, uint32_t v)
{
	uint8_t x[3] = { (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
	put(b, x, 3);
}

static void u32(struct boxes *b, uint32_t v)
{
	uint8_t x[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
	put(b, x, 4);
}

static void zeros(struct boxes *b, size_t n)
{
	buf_zeros(&b->b, n);
}

/* Starts a box; returns where it starts, for end_box. */
static size_t begin_box(struct boxes *b, const char type[4])
{
	size_t at = b->b.len;
	u32(b, 0);
	put(b, type, 4);
	return at;
}

/* A full box: version and flags after the type. */
static size_t begin_full(struct boxes *b, const char type[4], uint8_t version, uint32_t flags)
{
	size_t at = begin_box(b, type);
	u8(b, version);
	u24(b, flags);
	return at;
}

static void end_box(struct boxes *b, size_t at)
{
	uint64_t size = b->b.len - at;
	if (b->stsz_at != SIZE_MAX && at <= b->stsz_at)
		size += b->deferred;
	if (buf_failed(&b->b) || b->too_big)
		return;
	if (size > UINT32_MAX) {
		b->too_big = 1;
		return;
	}
	put_be32((uint8_t *)b->b.data + at, (uint32_t)size);
}

/* The unity matrix of mvhd and tkhd. */
static void matrix(struct boxes *b)
{
	static const uint32_t m[9] = { 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000 };
	for (int i = 0; i < 9; i++)
		u32(b, m[i]);
}

/* An MPEG-4 descriptor's tag and length, in FFmpeg's 4-byte length form. */
static void descriptor(struct boxes *b, uint8_t tag, uint32_t len)
{
	u8(b, tag);
	u8(b, (uint8_t)(0x80 | ((len >> 21) & 0x7f)));
	u8(b, (uint8_t)(0x80 | ((len >> 14) & 0x7f)));
	u8(b, (uint8_t)(0x80 | ((len >> 7) & 0x7f)));
	u8(b, (uint8_t)(len & 0x7f));
}

void media__mp4_free(media__mp4 *w)
{
	if (w == NULL)
		return;
	if (w->data_fd >= 0)
		close(w->data_fd);
	if (w->sizes_fd >= 0)
		close(w->sizes_fd);
	free(w);
}

int media__mp4_begin(const char *tmp_dir, media__mp4 **out, char *err, size_t errlen)
{
	media__mp4 *w = calloc(1, sizeof(*w));

	*out = NULL;
	if (w == NULL) {
		set_err(err, errlen, "out of memory");
		return -ENOMEM;
	}
	w->sizes_fd = -1;
	w->data_fd = media__open_tmp(tmp_dir, err, errlen);
	if (w->data_fd >= 0)
		w->sizes_fd = media__open_tmp(tmp_dir, err, errlen);
	if (w->data_fd < 0 || w->sizes_fd < 0) {
		int rc = w->data_fd < 0 ? w->data_fd : w->sizes_fd;
		media__mp4_free(w);
		return rc;
	}
	*out = w;
	return 0;
}

static int flush_sizes(media__mp4 *w)
{
	int rc = fileio_write(w->sizes_fd, w->sizes, w->staged * 4, -1);
	w->staged = 0;
	return rc;
}

int media__mp4_packet(media__mp4 *w, const uint8_t *data, size_t len, uint32_t duration)
{
	int rc;

	if (len == 0 || len > UINT32_MAX || w->packets >= UINT32_MAX)
		return -EINVAL;
	if (w->n_runs > 0 && w->runs[w->n_runs - 1].delta == duration) {
		w->runs[w->n_runs - 1].count++;
	} else {
		if (w->n_runs == MAX_RUNS)
			return -E2BIG;
		w->runs[w->n_runs++] = (struct run){ 1, duration };
	}
	rc = fileio_write(w->data_fd, data, len, -1);
	if (rc != 0)
		return rc;
	w->data_len += len;
	w->duration += duration;
	put_be32(w->sizes + w->staged * 4, (uint32_t)len);
	w->packets++;
	if (++w->staged == SIZES_BUFFER)
		return flush_sizes(w);
	return 0;
}

/* ceil(a * b / c) without overflow for our ranges (a < 2^40). */
static uint64_t rescale_up(uint64_t a, uint64_t b, uint64_t c)
{
	return (a * b + c - 1) / c;
}

/* Where finish patches and splits the boxes. */
struct layout {
	size_t stsz_end; /* the stsz entries go here */
	size_t stco_at;  /* the chunk offset */
	size_t mdat_at;  /* the mdat box */
};

/* Everything before the stsz entries, and after them up to the mdat's
 * payload. */
static void write_boxes(struct boxes *b, const media__mp4 *w, const media__mp4_track *t,
                        struct layout *l)
{
	uint64_t presentation = w->duration - t->delay; /* media ticks a player plays */
	uint32_t movie_duration = (uint32_t)rescale_up(presentation, MOVIE_TIMESCALE, t->rate);
	/* FFmpeg's edit: the whole track rounded up, less the delay rounded
	 * up (a millisecond shorter than movie_duration at times). */
	uint32_t edit_duration = (uint32_t)(rescale_up(w->duration, MOVIE_TIMESCALE, t->rate) -
	                                    rescale_up(t->delay, MOVIE_TIMESCALE, t->rate));
	uint32_t avg_bitrate = (uint32_t)(w->duration ? w->data_len * 8 * t->rate / w->duration : 0);
	size_t moov, trak, edts, mdia, minf, dinf, stbl, stsd, mp4a, esds, box, udta, meta;
	static const uint8_t compatible[] = "M4A isomiso2";

	box = begin_box(b, "ftyp");
	put(b, "M4A ", 4);
	u32(b, 0x200);
	put(b, compatible, 12);
	end_box(b, box);

	moov = begin_box(b, "moov");
	box = begin_full(b, "mvhd", 0, 0);
	u32(b, 0); /* creation and modification time: none (bitexact) */
	u32(b, 0);
	u32(b, MOVIE_TIMESCALE);
	u32(b, movie_duration);
	u32(b, 0x00010000); /* rate 1.0 */
	u16(b, 0x0100);     /* volume 1.0 */
	zeros(b, 10);
	matrix(b);
	zeros(b, 24);
	u32(b, 2);          /* next track id */
	end_box(b, box);

	trak = begin_box(b, "trak");
	box = begin_full(b, "tkhd", 0, 3); /* enabled, in movie */
	u32(b, 0);
	u32(b, 0);
	u32(b, 1);          /* track id */
	u32(b, 0);
	u32(b, movie_duration);
	zeros(b, 8);
	u16(b, 0);          /* layer */
	u16(b, 1);          /* alternate group */
	u16(b, 0x0100);     /* volume */
	u16(b, 0);
	matrix(b);
	u32(b, 0);          /* width, height */
	u32(b, 0);
	end_box(b, box);

	edts = begin_box(b, "edts");
	box = begin_full(b, "elst", 0, 0);
	u32(b, 1);
	u32(b, edit_duration);
	u32(b, (uint32_t)t->delay); /* media time: the encoder delay is skipped */
	u32(b, 0x00010000);
	end_box(b, box);
	end_box(b, edts);

	mdia = begin_box(b, "mdia");
	box = begin_full(b, "mdhd", 0, 0);
	u32(b, 0);
	u32(b, 0);
	u32(b, t->rate);
	u32(b, (uint32_t)w->duration);
	u16(b, 0x55c4);     /* language "und" */
	u16(b, 0);
	end_box(b, box);
	box = begin_full(b, "hdlr", 0, 0);
	u32(b, 0);
	put(b, "soun", 4);
	zeros(b, 12);
	put(b, "SoundHandler", 13);
	end_box(b, box);

	minf = begin_box(b, "minf");
	box = begin_full(b, "smhd", 0, 0);
	u32(b, 0);          /* balance, reserved */
	end_box(b, box);
	dinf = begin_box(b, "dinf");
	box = begin_full(b, "dref", 0, 0);
	u32(b, 1);
	end_box(b, begin_full(b, "url ", 0, 1)); /* the data is in this file */
	end_box(b, box);
	end_box(b, dinf);

	stbl = begin_box(b, "stbl");
	stsd = begin_full(b, "stsd", 0, 0);
	u32(b, 1);
	mp4a = begin_box(b, "mp4a");
	zeros(b, 6);
	u16(b, 1);          /* data reference index */
	zeros(b, 8);        /* version, revision, vendor */
	u16(b, 2);          /* channel count: ISO's template value */
	u16(b, 16);         /* sample size */
	u32(b, 0);
	u32(b, t->rate << 16);
	esds = begin_full(b, "esds", 0, 0);
	descriptor(b, 0x03, 3 + 5 + 13 + 5 + (uint32_t)t->asc_len + 5 + 1);
	u16(b, 1);          /* ES_ID */
	u8(b, 0);
	descriptor(b, 0x04, 13 + 5 + (uint32_t)t->asc_len);
	u8(b, 0x40);        /* object type: MPEG-4 audio */
	u8(b, 0x15);        /* stream type: audio, upstream 0, reserved 1 */
	u24(b, 0);          /* buffer size */
	/* The max bitrate as FFmpeg gives it without CPB data: the larger of
	 * the encoder's target and the average. */
	u32(b, t->bitrate > avg_bitrate ? t->bitrate : avg_bitrate);
	u32(b, avg_bitrate);
	descriptor(b, 0x05, (uint32_t)t->asc_len);
	put(b, t->asc, t->asc_len);
	descriptor(b, 0x06, 1);
	u8(b, 0x02);        /* SL config: predefined for MP4 */
	end_box(b, esds);
	end_box(b, mp4a);
	end_box(b, stsd);

	box = begin_full(b, "stts", 0, 0);
	u32(b, (uint32_t)w->n_runs);
	for (size_t i = 0; i < w->n_runs; i++) {
		u32(b, w->runs[i].count);
		u32(b, w->runs[i].delta);
	}
	end_box(b, box);
	box = begin_full(b, "stsc", 0, 0);
	u32(b, 1);
	u32(b, 1);          /* first chunk */
	u32(b, (uint32_t)w->packets); /* all samples in one chunk */
	u32(b, 1);
	end_box(b, box);

	b->stsz_at = begin_full(b, "stsz", 0, 0);
	b->deferred = w->packets * 4;
	u32(b, 0);          /* sizes differ */
	u32(b, (uint32_t)w->packets);
	end_box(b, b->stsz_at);
	l->stsz_end = b->b.len;

	box = begin_full(b, "stco", 0, 0);
	u32(b, 1);
	l->stco_at = b->b.len;
	u32(b, 0);          /* set once the moov's size is known */
	end_box(b, box);
	box = begin_full(b, "sgpd", 1, 0);
	put(b, "roll", 4);
	u32(b, 2);          /* default length */
	u32(b, 1);
	u16(b, 0xffff);     /* roll distance -1: decode one packet before */
	end_box(b, box);
	box = begin_full(b, "sbgp", 0, 0);
	put(b, "roll", 4);
	u32(b, 1);
	u32(b, (uint32_t)w->packets);
	u32(b, 1);
	end_box(b, box);
	end_box(b, stbl);
	end_box(b, minf);
	end_box(b, mdia);
	end_box(b, trak);

	udta = begin_box(b, "udta");
	meta = begin_full(b, "meta", 0, 0);
	box = begin_full(b, "hdlr", 0, 0);
	u32(b, 0);
	put(b, "mdirappl", 8);
	zeros(b, 9);
	end_box(b, box);
	end_box(b, begin_box(b, "ilst"));
	end_box(b, meta);
	end_box(b, udta);
	end_box(b, moov);

	end_box(b, begin_box(b, "free"));
	l->mdat_at = begin_box(b, "mdat");
}

int media__mp4_finish(media__mp4 *w, const media__mp4_track *track, int *out_fd,
                      uint64_t *out_len, char *err, size_t errlen)
{
	struct boxes b = { .b = BUF_INIT, .stsz_at = SIZE_MAX };
	const media__mp4_track *t = track;
	struct layout l = { 0 };
	uint64_t payload_at, mdat_size;
	uint8_t *p;
	int fd = -1, rc, failed;

	*out_fd = -1;
	*out_len = 0;
	if (w->packets == 0 || t->rate == 0 || t->asc_len == 0 || t->asc_len > 64 ||
	    w->duration <= t->delay) {
		set_err(err, errlen, "no AAC packets to put in the M4A");
		return SAYIN_EEMPTY;
	}
	rc = flush_sizes(w);
	if (rc != 0)
		goto io;
	write_boxes(&b, w, t, &l);
	mdat_size = 8 + w->data_len;
	failed = buf_failed(&b.b) || b.too_big;
	if (failed || mdat_size > UINT32_MAX) {
		buf_free(&b.b);
		set_err(err, errlen, failed ? "out of memory writing the M4A index"
		                            : "the M4A rendition is over 4 GiB");
		return failed ? -ENOMEM : SAYIN_EENCODE;
	}
	p = (uint8_t *)b.b.data;
	/* The mdat header, and the one chunk's offset: everything before the
	 * payload, the stsz entries included. */
	put_be32(p + l.mdat_at, (uint32_t)mdat_size);
	payload_at = b.b.len + b.deferred;
	if (payload_at > UINT32_MAX) {
		buf_free(&b.b);
		set_err(err, errlen, "the M4A index is over 4 GiB");
		return SAYIN_EENCODE;
	}
	put_be32(p + l.stco_at, (uint32_t)payload_at);

	fd = media__open_tmp(t->tmp_dir, err, errlen);
	if (fd < 0) {
		buf_free(&b.b);
		return fd;
	}
	rc = fileio_write(fd, p, l.stsz_end, -1);
	if (rc == 0)
		rc = fileio_copy(w->sizes_fd, fd, -1, w->packets * 4);
	if (rc == 0)
		rc = fileio_write(fd, p + l.stsz_end, b.b.len - l.stsz_end, -1);
	if (rc == 0)
		rc = fileio_copy(w->data_fd, fd, -1, w->data_len);
	buf_free(&b.b);
	if (rc != 0)
		goto io;
	*out_fd = fd;
	*out_len = payload_at + w->data_len;
	return 0;
io:
	if (fd >= 0)
		close(fd);
	set_err(err, errlen, "cannot write the M4A file: %s", strerror(-rc));
	return rc;
}

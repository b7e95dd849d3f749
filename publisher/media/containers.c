/* containers: structure walks that catch a cut-off Ogg, MP3, CAF, AIFF or
 * Matroska file, which FFmpeg's demuxers decode quietly up to the cut. */
#include "media/internal.h"

#include "core/error.h"
#include "core/fileio.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define set_err media__set_err

/* FFmpeg stops quietly where a file ends. For most containers the duration
 * in the header catches a cut (checked in ffmpeg.c), but three get
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
		size_t want = sizeof(w->buf), got;

		if (w->size - off < want)
			want = (size_t)(w->size - off);
		*rc = fileio_read(w->fd, w->buf, want, (int64_t)off, &got);
		if (*rc != 0)
			return NULL;
		w->start = off;
		w->len = got;
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

/* CAF and AIFF: a chain of chunks from off, each a header of hdr bytes (its
 * id in the first 4, its size after: 64-bit in CAF, 32-bit and the body
 * padded to an even size in AIFF). */
static int check_chunks(struct file_window *w, const char *fmt, uint64_t off, size_t hdr,
                        bool caf, char *err, size_t errlen)
{
	int rc;

	while (off < w->size) {
		const unsigned char *c = window_at(w, off, hdr, &rc);
		uint64_t size;

		if (rc != 0)
			return rc;
		if (c == NULL) {
			set_err(err, errlen, "truncated: the %s file ends inside a chunk header", fmt);
			return SAYIN_ETRUNCATED;
		}
		size = caf ? be64(c + 4)
		           : (uint64_t)c[4] << 24 | (uint64_t)c[5] << 16 | (uint64_t)c[6] << 8 | c[7];
		off += hdr;
		if (caf && memcmp(c, "data", 4) == 0 && size == UINT64_MAX)
			return 0; /* to the end of the file: nothing to compare */
		if (size > w->size - off) {
			set_err(err, errlen, "truncated: the %s file's %.4s chunk claims %llu bytes but "
			        "only %llu remain", fmt, (const char *)c, (unsigned long long)size,
			        (unsigned long long)(w->size - off));
			return SAYIN_ETRUNCATED;
		}
		off += size;
		if (!caf)
			off += size & 1; /* AIFF chunks are padded to even sizes */
	}
	return 0;
}

static int check_caf(struct file_window *w, char *err, size_t errlen)
{
	return check_chunks(w, "caf", 8, 12, true, err, errlen); /* after "caff", version, flags */
}

static int check_aiff(struct file_window *w, char *err, size_t errlen)
{
	/* after "FORM", size, "AIFF" or "AIFC" */
	return check_chunks(w, "aiff", 12, 8, false, err, errlen);
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

int media__check_container(int fd, uint64_t size, const char *name, char *err, size_t errlen)
{
	struct file_window *w;
	int rc = 0;

	if (!container_is(name, "ogg") && !container_is(name, "mp3") &&
	    !container_is(name, "caf") && !container_is(name, "aiff") &&
	    !container_is(name, "matroska"))
		return 0;
	w = malloc(sizeof(*w));
	if (w == NULL) {
		set_err(err, errlen, "out of memory checking the %s file", name);
		return -ENOMEM;
	}
	w->fd = fd;
	w->size = size;
	w->start = 0;
	w->len = 0;
	if (container_is(name, "ogg"))
		rc = check_ogg(w, err, errlen);
	else if (container_is(name, "mp3"))
		rc = check_mp3(w, err, errlen);
	else if (container_is(name, "caf"))
		rc = check_caf(w, err, errlen);
	else if (container_is(name, "matroska"))
		rc = check_matroska(w, err, errlen);
	else
		rc = check_aiff(w, err, errlen);
	if (rc < 0 && rc > -4096)
		set_err(err, errlen, "cannot read the recording: %s", strerror(-rc));
	free(w);
	return rc;
}

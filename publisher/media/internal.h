/* media internals shared by media.c, decode.c and limiter.c; not a public
 * contract (the media_ prefix with a double underscore says so). */
#ifndef SAYIN_MEDIA_INTERNAL_H
#define SAYIN_MEDIA_INTERNAL_H

#include "media/media.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

void media__set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Where a decoder puts its mono MEDIA_RATE output, in order. write returns 0
 * or an error code, which stops the decode and is returned from it. */
typedef struct media__sink {
	int (*write)(void *ctx, const float *samples, size_t n);
	void *ctx;
} media__sink;

/* What a decode found. */
typedef struct media__info {
	unsigned rate;
	unsigned channels;
	uint64_t input_frames;
	uint64_t frames;        /* written to the sink: round(input_frames * 48000 / rate) */
	char format[32];
} media__info;

/* Decodes the regular file open on fd (size bytes; read from offset 0 with
 * pread and lseek, so the offset moves) into sink. max_duration_ms (0: none)
 * is checked while decoding: longer input gives SAYIN_ETOOLONG early.
 * Returns 0 or an error of media_decode_file with err set; samples already
 * written stay written. */
int media__decode_fd(int fd, uint64_t size, uint64_t max_duration_ms, const media__sink *sink,
                     media__info *info, char *err, size_t errlen);

/* Opens path read-only and checks that it is a regular file. Returns the fd
 * and its size, or -errno with err set. */
/* Writes all of buf to fd, retrying on EINTR. Returns 0 or -errno. */
int media__write_all(int fd, const void *buf, size_t len);

int media__open_recording(const char *path, uint64_t *size, char *err, size_t errlen);

/* An unlinked temporary file in dir (O_TMPFILE where the file system has
 * it), read-write. Returns the fd, or -errno with err set. */
int media__open_tmp(const char *dir, char *err, size_t errlen);

/* Reads the whole file open on fd into one exact-size malloc'd buffer
 * (released with media_buffer_free). Returns 0, -EIO for an empty file or a
 * short read, -ENOMEM or -errno. */
int media__read_back(int fd, media_buffer *out);

/* The decoder child's wire format on its stdout (same binary, so native byte
 * order): records of a header then len bytes. SAMPLES carries floats (mono,
 * MEDIA_RATE); END comes once, last. */
enum { MEDIA__REC_SAMPLES = 1, MEDIA__REC_END = 2 };
#define MEDIA__REC_MAX_SAMPLES 16384

typedef struct media__rec_header {
	uint32_t type;
	uint32_t len;
} media__rec_header;

typedef struct media__rec_end {
	int32_t code;           /* 0 or the decode's error */
	uint32_t rate;
	uint32_t channels;
	uint32_t reserved;
	uint64_t input_frames;
	uint64_t frames;
	char format[32];
	char message[448];      /* the error line, NUL-terminated */
} media__rec_end;

/* Pulls the next n samples into pcm; returns 0 or an error. */
typedef int (*media__reader)(void *ctx, float *pcm, size_t n);

/* A look-ahead true-peak limiter (see limiter.c). */
typedef struct media__limiter media__limiter;

/* ceiling: linear amplitude the true peak must stay under. Returns NULL when
 * out of memory. */
media__limiter *media__limiter_new(double ceiling);
void media__limiter_free(media__limiter *lim);
/* Samples of delay between a sample going in and coming out. */
size_t media__limiter_latency(const media__limiter *lim);
/* Takes one sample, returns the sample that went in latency() steps ago,
 * scaled so that no true peak exceeds the ceiling (0 before that). */
float media__limiter_step(media__limiter *lim, float x);

/* A second-order Butterworth high-pass (see media.c for why it runs). */
typedef struct media__highpass {
	double b0, b1, b2, a1, a2, z1, z2;
} media__highpass;
void media__highpass_init(media__highpass *hp, double cutoff_hz);
float media__highpass_step(media__highpass *hp, float x);

/* The true peak of a signal: its samples and three points interpolated
 * between each two (4x oversampling, the limiter's interpolator), zeros
 * before and after it. Metering costs little where the signal stays well
 * under the peak found so far. new returns NULL when out of memory. */
typedef struct media__peak_meter media__peak_meter;
media__peak_meter *media__peak_meter_new(void);
void media__peak_meter_free(media__peak_meter *pm);
void media__peak_add(media__peak_meter *pm, const float *x, size_t n);
/* Meters the last samples and returns the linear true peak of all of it. */
double media__peak_finish(media__peak_meter *pm);

/* The M4A rendition, streamed (see media_encode_m4a and aac.c). begin
 * checks the options and muxes into an unlinked temporary file in tmp_dir
 * (NULL: $TMPDIR or /tmp); add takes the next n mono MEDIA_RATE samples;
 * finish flushes the encoder, writes the trailer (moov moved to the front)
 * and hands over the file: as the file itself when file is not NULL (its
 * descriptor is then the caller's), else read back into one exact-size
 * buffer. Each returns 0 or an error with err set. */
typedef struct media__m4a media__m4a;
int media__m4a_begin(const media_aac_options *opt, const char *tmp_dir, media__m4a **out,
                     char *err, size_t errlen);
int media__m4a_add(media__m4a *m, const float *x, size_t n, char *err, size_t errlen);
int media__m4a_finish(media__m4a *m, media_buffer *out, media_file *file, char *err,
                      size_t errlen);
void media__m4a_free(media__m4a *m);

/* The M4A container of one AAC track, written as it streams (mp4.c): begin
 * opens two unlinked temporary files in tmp_dir (packets, sizes); packet
 * appends one encoded packet and its duration in media ticks; finish writes
 * the file (faststart: moov first) into a third unlinked temporary file and
 * hands over its descriptor and length. Memory does not grow with the
 * number of packets. Errors: -errno, -ENOMEM, SAYIN_EEMPTY (no packets),
 * SAYIN_EENCODE (over 4 GiB); err is set by begin and finish. */
typedef struct media__mp4 media__mp4;
typedef struct media__mp4_track {
	unsigned rate;           /* sample rate, the media timescale */
	uint32_t delay;          /* encoder delay (priming samples): the edit list skips it */
	const uint8_t *asc;      /* AudioSpecificConfig: the encoder's extradata */
	size_t asc_len;
	uint32_t bitrate;        /* the encoder's target, bits/s */
	const char *tmp_dir;     /* for the output file */
} media__mp4_track;
int media__mp4_begin(const char *tmp_dir, media__mp4 **out, char *err, size_t errlen);
int media__mp4_packet(media__mp4 *w, const uint8_t *data, size_t len, uint32_t duration);
int media__mp4_finish(media__mp4 *w, const media__mp4_track *track, int *out_fd,
                      uint64_t *out_len, char *err, size_t errlen);
void media__mp4_free(media__mp4 *w);

/* Routes FFmpeg's messages to our log at debug level (av_log callback). */
void media__ff_log(void *avcl, int level, const char *fmt, va_list ap);

#endif

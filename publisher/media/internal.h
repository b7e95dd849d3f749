/* media internals shared between the files of publisher/media/; not a public
 * contract (the media_ prefix with a double underscore says so). Sections
 * follow the files, lowest first: a file uses only the sections above its
 * own (scripts/check-layers --objects checks that the calls have no cycle).
 * Threading: as media.h says; nothing here holds global state except
 * FFmpeg's log callback (media__ff_log). */
#ifndef SAYIN_MEDIA_INTERNAL_H
#define SAYIN_MEDIA_INTERNAL_H

#include "media/media.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ebur128.h>

#define MEDIA__OPUS_FRAME 960 /* samples in an Opus frame: 20 ms at MEDIA_RATE */

/* ---- util.c: shared helpers ------------------------------------------------ */

/* Writes one printf-formatted line into err (nothing when err is NULL). */
void media__set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Opens path read-only and checks that it is a regular file. Returns the fd
 * (the caller's to close) and its size, or -errno (-EISDIR, -EINVAL for a
 * non-regular file) with err set. */
int media__open_recording(const char *path, uint64_t *size, char *err, size_t errlen);

/* An unlinked temporary file in dir (O_TMPFILE where the file system has
 * it), read-write. Returns the fd (the caller's), or -errno with err set. */
int media__open_tmp(const char *dir, char *err, size_t errlen);

/* The temporary directory: dir, or $TMPDIR when dir is NULL, else /tmp. */
const char *media__tmp_dir(const char *dir);

/* Reads the whole file open on fd into one exact-size malloc'd buffer
 * (released with media_buffer_free). Returns 0, -EIO for an empty file or a
 * short read, -ENOMEM or -errno. */
int media__read_back(int fd, media_buffer *out);

/* How every public entry point starts: clears err and out (size bytes),
 * then returns SAYIN_EINVAL with err set to what when ok is false or out
 * is NULL, else 0. */
int media__enter(bool ok, void *out, size_t size, const char *what, char *err, size_t errlen);
/* media__enter for an encoder of audio into out, which also returns
 * SAYIN_EEMPTY with err set when audio has no samples. */
int media__enter_encode(const media_audio *audio, media_buffer *out, const char *what, char *err,
                        size_t errlen);

/* The duration limit in input frames at rate; UINT64_MAX when there is
 * none (max_duration_ms 0). */
uint64_t media__frame_limit(uint64_t max_duration_ms, unsigned rate);
/* Sets err to the max-duration message and returns SAYIN_ETOOLONG. */
int media__too_long(uint64_t max_duration_ms, char *err, size_t errlen);

/* Routes FFmpeg's messages to our log at debug level (av_log callback). */
void media__ff_log(void *avcl, int level, const char *fmt, va_list ap);
/* FFmpeg's text for averr in buf (len bytes); returns buf. */
const char *media__av_strerror(int averr, char *buf, size_t len);

/* A decoded sample made safe: NaN becomes silence, infinities full scale,
 * everything clamped to [-1, 1]. Inline: it runs once per sample. */
static inline float media__clamp_sample(float v)
{
	if (!isfinite(v))
		return isnan(v) ? 0.0f : (v > 0 ? 1.0f : -1.0f);
	return v > 1.0f ? 1.0f : v < -1.0f ? -1.0f : v;
}

/* ---- decoding: resample.c, wav.c, containers.c, ffmpeg.c, decode.c -------- */

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

/* Mono input at rate goes to sink at MEDIA_RATE: copied when the rate
 * already matches, else through soxr (HQ, one thread). The fields are the
 * resampler's own; the struct is here so that a decoder can embed it. */
typedef struct media__resampler {
	struct soxr *soxr;      /* NULL when no resampling is needed */
	unsigned rate;
	float *scratch;         /* soxr's output */
	float *hold;            /* the output held back until the end */
	size_t held;
	uint64_t emitted;
	const media__sink *sink;
} media__resampler;

/* Returns 0, -ENOMEM or SAYIN_EENCODE (logged), with err set; free it in
 * either case. */
int media__resampler_init(media__resampler *rs, unsigned rate, const media__sink *sink,
                          char *err, size_t errlen);
/* Feeds n mono frames. Returns 0, a sink error, or SAYIN_EENCODE (logged;
 * err is the caller's to set). */
int media__resampler_feed(media__resampler *rs, const float *in, size_t n);
/* Flushes and emits exactly round(input_frames * 48000 / rate) samples in
 * all (*total). Returns 0, a sink error, SAYIN_EEMPTY (nothing at 48 kHz),
 * SAYIN_EUNSUPPORTED (too long) or SAYIN_EENCODE, with err set. */
int media__resampler_finish(media__resampler *rs, uint64_t input_frames, uint64_t *total,
                            char *err, size_t errlen);
void media__resampler_free(media__resampler *rs);

/* The decoders of one format each. Each decodes the regular file open on fd
 * (size bytes, read with pread: its offset does not matter) into sink;
 * max_duration_ms (0: none) is checked while decoding, so longer input
 * gives SAYIN_ETOOLONG early. Returns 0 or an error of media_decode_file
 * with err set; samples already written stay written. */
int media__decode_wav(int fd, uint64_t size, uint64_t max_duration_ms, const media__sink *sink,
                      media__info *info, char *err, size_t errlen);
int media__decode_ffmpeg(int fd, uint64_t size, uint64_t max_duration_ms,
                         const media__sink *sink, media__info *info, char *err, size_t errlen);

/* Checks that the file FFmpeg found to be name ("ogg/opus", "mp3", ...) is
 * not cut short, where its container lets a cut file look whole (see
 * containers.c). Returns 0 (also for containers it has no walk for),
 * SAYIN_ETRUNCATED, SAYIN_EBADDATA, SAYIN_EUNSUPPORTED, -ENOMEM or -errno,
 * with err set. */
int media__check_container(int fd, uint64_t size, const char *name, char *err, size_t errlen);

/* Decodes the file by its bytes: RIFF to media__decode_wav, everything else
 * to media__decode_ffmpeg. Same contract as those. */
int media__decode_fd(int fd, uint64_t size, uint64_t max_duration_ms, const media__sink *sink,
                     media__info *info, char *err, size_t errlen);

/* ---- decoder.c: the isolated decoder child, parent side -------------------- */

/* Runs the child (o->decoder_exe __decode, limits from o, which must have
 * its defaults resolved) on the recording open on file_fd, on this thread,
 * until it ends or o->decode_timeout_ms passes. Each block of samples it
 * sends is made finite and clamped and goes to sink; a sink error stops the
 * child and is returned (the sink sets err). info receives what the child
 * reported. Returns 0, the decode's own error as the child reported it,
 * SAYIN_ETOOLONG, SAYIN_EEMPTY, SAYIN_EDECODER (crashed, killed, timed out
 * or broke the protocol), -ENOMEM or -errno, with err set. The child is
 * always reaped before it returns. */
int media__decoder_run(const media_transcode_options *o, int file_fd, const media__sink *sink,
                       media__info *info, char *err, size_t errlen);

/* ---- opus.c: the Ogg Opus encoder ------------------------------------------- */

/* Pulls the next n samples into pcm; returns 0 or an error. */
typedef int (*media__reader)(void *ctx, float *pcm, size_t n);

/* Who else sees what the encoder makes: start gets the pre-skip (the
 * encoder's lookahead) before any packet, packet each packet in order.
 * Either returns 0 or an error, which stops the encoding. */
typedef struct media__packet_sink {
	int (*start)(void *ctx, int lookahead);
	int (*packet)(void *ctx, const unsigned char *data, int len);
	void *ctx;
} media__packet_sink;

/* media_encode_opus on a stream of frames samples pulled from read, in
 * reads of MEDIA__OPUS_FRAME samples (fewer for the last); every packet
 * also goes to sink when it is not NULL. With out_fd >= 0 the pages are
 * written there (from its current offset) and out (unless NULL: the file
 * is the result) receives the file read back in one exact-size buffer;
 * else out receives the stream. Errors as media_encode_opus, plus the
 * reader's, the sink's (as SAYIN_EENCODE) and -errno, with err set. */
int media__opus_encode(media__reader read, void *ctx, size_t frames, unsigned input_rate,
                       const media_opus_options *opt, const media__packet_sink *sink, int out_fd,
                       media_buffer *out, char *err, size_t errlen);

/* ---- limiter.c: limiter, high-pass, true-peak meter --------------------------- */

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

/* A second-order Butterworth high-pass (chain.c says why it runs). */
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

/* ---- waveform.c: see media.h ----------------------------------------------- */

/* ---- mp4.c and aac.c: the M4A rendition ------------------------------------ */

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

/* ---- chain.c: the decoded signal through high-pass, gain and limiter --------- */

/* A loudness meter: integrated and momentary loudness in histogram mode,
 * whose memory does not grow with the length. NULL when out of memory;
 * release with ebur128_destroy. */
ebur128_state *media__meter_new(void);
/* Integrated loudness in LUFS (-HUGE_VAL for silence or a failure); a clip
 * shorter than one 400 ms gating block is measured over its whole length. */
double media__measure_lufs(ebur128_state *st, uint64_t frames);

/* One read of the decoded signal (frames floats in the file open on fd)
 * through a 100 Hz high-pass, gain_db and a limiter at ceiling_db (dBTP),
 * delay compensated, zeros flushing the limiter at the end. With measure,
 * its own meter takes the output; wf (unless NULL) takes it too. One
 * thread at a time; several chains may read one file at once. new returns
 * NULL when out of memory. */
typedef struct media__chain media__chain;
media__chain *media__chain_new(int fd, uint64_t frames, double gain_db, double ceiling_db,
                               bool measure, media_waveform *wf);
/* The next n samples of the limiter's output. Returns 0, -EIO when the file
 * ends early, -errno, or SAYIN_EENCODE when the meter fails. */
int media__chain_read(media__chain *p, float *pcm, size_t n);
void media__chain_free(media__chain *p);

/* One measuring pass: the loudness of the limiter's output at gain. */
typedef struct media__measure_job {
	int fd;
	uint64_t frames;
	double gain, ceiling;
	double lufs;            /* result */
	int rc;
} media__measure_job;

/* Measures a->gain and b->gain at ceiling, over the frames floats in fd, at
 * once: one on a second thread (joined before it returns). Returns 0 or an
 * error with err set. */
int media__measure_two(int fd, uint64_t frames, double ceiling, media__measure_job *a,
                       media__measure_job *b, char *err, size_t errlen);

/* ---- encodepass.c: one encoding of the signal --------------------------------- */

/* Everything an encoding needs besides gain and ceiling. */
typedef struct media__encode_ctx {
	const media_transcode_options *o;
	const media_opus_options *oopt;
	int pcm_fd;             /* the decoded signal */
	int opus_fd;            /* the Ogg Opus stream is written here */
	uint64_t frames;
	media_result *out;
} media__encode_ctx;

/* What an encoding gives. */
typedef struct media__encode_result {
	double lufs;            /* of the decoded Opus */
	double true_peak_db;    /* of the decoded Opus */
} media__encode_result;

/* Runs the signal through media__chain at gain_db and ceiling_db and
 * encodes it: Opus (into c->opus_fd, and c->out->opus unless keep_files),
 * and from the same samples the waveform and, unless no_fallback, the M4A
 * (replacing those in c->out). res gets the loudness and true peak of the
 * decoded Opus. Starts and joins up to three threads. Returns 0 or an error
 * with err set; on error those fields of c->out are empty. */
int media__encode_pass(const media__encode_ctx *c, double gain_db, double ceiling_db,
                       media__encode_result *res, char *err, size_t errlen);

#endif

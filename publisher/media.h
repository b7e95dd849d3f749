/* media: turns a recording into a normalized PCM signal and encodes it as an
 * Ogg Opus stream (RFC 7845). Pure: bytes and files in, bytes out; it never
 * touches the store or the network. Only this module touches libopus, libogg
 * and the resampler (later FFmpeg too).
 *
 * Threading: no shared state; functions may run on any thread concurrently. */
#ifndef SAYIN_MEDIA_H
#define SAYIN_MEDIA_H

#include <stddef.h>
#include <stdint.h>

#define MEDIA_RATE 48000 /* every signal this module hands out is mono at 48 kHz */

/* A decoded recording: mono float samples in [-1, 1] at MEDIA_RATE.
 * Owned by the caller; release with media_audio_free(). */
typedef struct media_audio {
	float *samples;
	size_t frames;               /* samples at MEDIA_RATE */
	unsigned input_rate;         /* sample rate of the recording, Hz */
	unsigned input_channels;
	uint64_t input_frames;       /* frames in the recording at input_rate */
	char input_format[32];       /* e.g. "wav/pcm_s16le", "wav/pcm_f32le" */
} media_audio;

/* Decodes the recording at path, detecting its format from its bytes (never
 * the file name), downmixes to mono and resamples to MEDIA_RATE.
 * Issue-2 scope: RIFF/WAVE with PCM 16- or 24-bit integer or 32-bit float
 * (also WAVE_FORMAT_EXTENSIBLE), 1..8 channels, 8000..192000 Hz.
 * Returns 0, or:
 *   -errno            the file could not be opened or read (-EISDIR, -EINVAL
 *                     for a non-regular file), or -ENOMEM
 *   SAYIN_EFORMAT     not a format we accept (not RIFF/WAVE), or a WAV whose
 *                     headers contradict themselves
 *   SAYIN_ETRUNCATED  the data ends before the header says it should
 *   SAYIN_EUNSUPPORTED a WAV with another encoding, bit depth, channel count or rate
 *   SAYIN_EEMPTY      no samples (also an empty file)
 *   SAYIN_EENCODE     the resampler failed (logged)
 *   SAYIN_EINVAL      path or out is NULL
 * On error, err (if not NULL) receives one line naming the problem, and out
 * is left zeroed. */
int media_decode_file(const char *path, media_audio *out, char *err, size_t errlen);

void media_audio_free(media_audio *audio);

/* Duration of the recording in seconds (input_frames / input_rate). */
double media_audio_duration(const media_audio *audio);

typedef struct media_comment {
	const char *key;   /* e.g. "ARTIST" */
	const char *value; /* UTF-8 */
} media_comment;

typedef struct media_opus_options {
	int bitrate;                  /* bits/s, 6000..510000; 0 = 32000 */
	int complexity;               /* 0..10; -1 = default (10) */
	uint32_t serial;              /* Ogg stream serial; derive it from the input so
	                                 that the same input yields the same bytes */
	const media_comment *comments; /* OpusTags user comments */
	size_t n_comments;
} media_opus_options;

/* An encoded stream. Owned by the caller; release with media_buffer_free(). */
typedef struct media_buffer {
	unsigned char *data;
	size_t len;
} media_buffer;

/* Encodes audio with libopus (mono, VBR, OPUS_SIGNAL_VOICE, 20 ms frames) and
 * muxes it with libogg into an Ogg Opus stream: OpusHead with the encoder's
 * lookahead as pre-skip and audio->input_rate as the original rate, OpusTags
 * with a vendor string and the comments, granule positions per RFC 7845, and
 * end trimming so that decoding yields exactly audio->frames samples.
 * Deterministic: the same audio and options give the same bytes.
 * Returns 0, SAYIN_EEMPTY for no samples, SAYIN_EINVAL for bad options,
 * SAYIN_EENCODE if libopus fails (logged), or -ENOMEM. */
int media_encode_opus(const media_audio *audio, const media_opus_options *opt, media_buffer *out,
                      char *err, size_t errlen);

void media_buffer_free(media_buffer *buf);

#endif

/* media: turns a recording into a loudness-normalized mono 48 kHz signal and
 * encodes it as an Ogg Opus stream (RFC 7845), with an AAC-in-M4A fallback
 * rendition and a waveform (audiowaveform JSON) of the same signal. Pure:
 * files in, bytes out; it never touches the store or the network. Only this
 * module touches FFmpeg, libopus, libogg, libsoxr and libebur128.
 *
 * Untrusted recordings are decoded in a child process (media_transcode_file);
 * media_decode_file decodes in the calling process and is meant for tests and
 * trusted input.
 *
 * Threading: no shared state; functions may run on any thread concurrently.
 * media_transcode_file forks and execs, so call it where that is safe, and
 * runs up to three threads of its own for the duration of the call (all
 * joined before it returns). The first M4A encoding routes FFmpeg's log
 * messages (process-wide) to our log at debug level. */
#ifndef SAYIN_MEDIA_H
#define SAYIN_MEDIA_H

#include <stdbool.h>
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

/* Decodes the recording at path in this process, detecting its format from
 * its bytes (never the file name), downmixes to mono (channels averaged) and
 * resamples to MEDIA_RATE. Output frames are round(input_frames * 48000 /
 * input_rate). Formats:
 *  - RIFF/WAVE by a strict hand-written reader (FFmpeg accepts truncated
 *    WAVs): PCM 16/24-bit or float 32-bit, also WAVE_FORMAT_EXTENSIBLE,
 *    1..8 channels, 8000..192000 Hz;
 *  - through FFmpeg, restricted to these demuxers and decoders: FLAC, MP3,
 *    Ogg (Vorbis, Opus, FLAC), MP4/M4A/MOV (AAC, ALAC, MP3), Matroska/WebM
 *    (Opus, Vorbis), CAF, AIFF (big-endian PCM), AMR (AMR-NB/WB); the first
 *    audio stream of a file with video.
 * Holds the whole signal in memory; media_transcode_file streams.
 * Returns 0, or:
 *   -errno            the file could not be opened or read (-EISDIR, -EINVAL
 *                     for a non-regular file), or -ENOMEM
 *   SAYIN_EFORMAT     not a format we accept, or a WAV whose headers
 *                     contradict themselves
 *   SAYIN_ETRUNCATED  a WAV whose data ends before its header says it should
 *   SAYIN_EUNSUPPORTED a known format with an encoding, bit depth, channel
 *                     count or rate we do not take; a file without audio
 *   SAYIN_EBADDATA    data that does not decode (corrupt or cut short)
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

/* ---- the waveform: peaks for a player UI --------------------------------- */

#define MEDIA_DEFAULT_WAVEFORM_POINTS 1000u
#define MEDIA_MAX_WAVEFORM_POINTS 100000u

/* Peaks of a signal in BBC audiowaveform's JSON format, version 2, computed
 * while the signal streams past (min and max per pixel, 8-bit):
 *   {"version":2,"channels":1,"sample_rate":48000,"samples_per_pixel":S,
 *    "bits":8,"length":L,"data":[min0,max0,min1,max1,...]}
 * A recording of F samples gets L = min(points, F) pixels: always `points`
 * unless the recording has fewer samples than that. Pixel i covers samples
 * [floor(i*F/L), floor((i+1)*F/L)), so pixel widths differ by at most one
 * sample and every sample is in exactly one pixel; S = ceil(F/L), the widest.
 * Values are round(x * 128) clamped to -128..127 (x in [-1, 1]).
 * Streaming: memory is 2*L bytes whatever F is. Owned by the caller;
 * release with media_waveform_free(). */
typedef struct media_waveform {
	uint64_t frames;             /* F: the samples the signal will have */
	uint32_t length;             /* L: pixels (min/max pairs) */
	uint32_t samples_per_pixel;  /* S */
	int8_t *data;                /* 2 * L values: min, max per pixel */
	/* streaming state */
	uint64_t pos;                /* samples taken */
	uint64_t pixel_end;          /* sample index where the current pixel ends */
	uint32_t pixel;              /* pixels done */
	float lo, hi;
} media_waveform;

/* Prepares w for a signal of frames samples. points: 1..MEDIA_MAX_WAVEFORM_POINTS,
 * 0 = MEDIA_DEFAULT_WAVEFORM_POINTS. Returns 0, SAYIN_EINVAL (no frames,
 * points out of range) or -ENOMEM. */
int media_waveform_begin(media_waveform *w, uint64_t frames, unsigned points);
/* Takes the next n samples (samples beyond frames are ignored). */
void media_waveform_add(media_waveform *w, const float *x, size_t n);
/* 1 once all frames samples went in. */
int media_waveform_done(const media_waveform *w);
/* The JSON document (no trailing newline). Returns 0, SAYIN_EINVAL when
 * not all samples went in, or -ENOMEM. */
int media_waveform_json(const media_waveform *w, media_buffer *out);
void media_waveform_free(media_waveform *w);

/* ---- the AAC-in-M4A fallback rendition -------------------------------------- */

#define MEDIA_DEFAULT_AAC_BITRATE 48000
#define MEDIA_MIN_AAC_BITRATE 32000
#define MEDIA_MAX_AAC_BITRATE 128000
#define MEDIA_M4A_TYPE "audio/mp4"

/* FFmpeg's AAC coders (its aac_coder option) that a media_aac_options may
 * name. fast is the default: a quarter of twoloop's CPU; what it costs in
 * quality was measured by scripts/bench/aac-quality (publisher/media/README.md). */
#define MEDIA_DEFAULT_AAC_CODER "fast"

typedef struct media_aac_options {
	int bitrate;                 /* bits/s, MEDIA_MIN_AAC_BITRATE..MEDIA_MAX_AAC_BITRATE;
	                                0 = MEDIA_DEFAULT_AAC_BITRATE */
	const char *coder;           /* "fast" or "twoloop"; NULL = MEDIA_DEFAULT_AAC_CODER */
} media_aac_options;

/* 1 if name is an AAC coder media_aac_options.coder accepts. */
int media_aac_coder_valid(const char *name);

/* Encodes audio (mono, MEDIA_RATE) with FFmpeg's native AAC encoder (AAC-LC)
 * into an M4A file (FFmpeg's ipod muxer, brand M4A) laid out for progressive
 * playback: moov before mdat (movflags +faststart). Muxed into an unlinked
 * temporary file in $TMPDIR (or /tmp) and read back into out; the muxer
 * opens nothing by name. The encoder delay is recorded in an edit list, so a
 * player yields audio->frames samples. Deterministic: bitexact flags, no
 * creation time, no encoder string. Returns 0, SAYIN_EEMPTY, SAYIN_EINVAL
 * (bitrate, coder), SAYIN_EENCODE (FFmpeg failed; logged) or -ENOMEM. */
int media_encode_m4a(const media_audio *audio, const media_aac_options *opt, media_buffer *out,
                     char *err, size_t errlen);

/* ---- the whole pipeline: isolated decode, loudness, Opus ---------------- */

#define MEDIA_DEFAULT_LOUDNESS_TARGET (-16.0)      /* LUFS */
#define MEDIA_TRUE_PEAK_CEILING (-1.0)             /* dBTP, after encoding */
#define MEDIA_DEFAULT_MAX_INPUT_BYTES (100u << 20)
#define MEDIA_DEFAULT_MAX_DURATION_MS (600u * 1000)
#define MEDIA_DEFAULT_DECODE_TIMEOUT_MS 60000u
#define MEDIA_DEFAULT_DECODER_MEMORY (1u << 30)    /* RLIMIT_AS of the child */

/* The hidden command a program must route to media_decoder_main():
 * `PROGRAM __decode ...` (see media_transcode_options.decoder_exe). */
#define MEDIA_DECODER_COMMAND "__decode"

typedef struct media_transcode_options {
	double loudness_target;      /* LUFS; 0 = MEDIA_DEFAULT_LOUDNESS_TARGET */
	uint64_t max_input_bytes;    /* 0 = default */
	uint64_t max_duration_ms;    /* 0 = default; longer input: SAYIN_ETOOLONG */
	uint64_t decode_timeout_ms;  /* wall clock for the decoder; 0 = default */
	uint64_t decoder_memory;     /* the child's address space, bytes; 0 = default
	                                (not applied under AddressSanitizer) */
	const char *decoder_exe;     /* program run as `decoder_exe __decode`;
	                                NULL = /proc/self/exe */
	const char *tmp_dir;         /* for the unlinked temporary files; NULL = $TMPDIR or /tmp */
	const char *log_level;       /* the child's: "error".."debug"; NULL = "info" */
	media_opus_options opus;     /* serial is ignored: derived from the signal */
	unsigned waveform_points;    /* 0 = MEDIA_DEFAULT_WAVEFORM_POINTS */
	int no_fallback;             /* 1: make no M4A rendition */
	media_aac_options aac;       /* the M4A rendition's encoder */
	int keep_files;              /* 1: the Opus and M4A streams stay in their
	                                unlinked temporary files (opus_file,
	                                m4a_file) instead of being read into memory
	                                (opus, m4a), so that nothing in memory grows
	                                with the recording's length */
} media_transcode_options;

/* An encoded stream left in an unlinked temporary file: len bytes from
 * offset 0 of fd. Valid when len > 0; media_result_free closes it. */
typedef struct media_file {
	int fd;
	uint64_t len;
} media_file;

/* What media_transcode_file made. Owned by the caller; release with
 * media_result_free(). */
typedef struct media_result {
	media_buffer opus;           /* the Ogg Opus stream */
	media_buffer m4a;            /* AAC-LC in M4A; empty when no_fallback */
	media_file opus_file;        /* with keep_files, instead of opus */
	media_file m4a_file;         /* with keep_files, instead of m4a */
	media_buffer waveform;       /* audiowaveform JSON v2 of what opus and m4a carry */
	uint32_t waveform_length;    /* its pixels (min/max pairs) */
	size_t frames;               /* samples at MEDIA_RATE */
	unsigned input_rate;
	unsigned input_channels;
	uint64_t input_frames;
	char input_format[32];       /* e.g. "wav/pcm_s16le", "flac", "mov/aac" */
	double duration;             /* seconds, input_frames / input_rate */
	double input_lufs;           /* integrated loudness of the input (BS.1770) */
	double gain_db;              /* gain applied before the limiter */
	double output_lufs;          /* integrated loudness after gain and limiter */
	double true_peak_dbtp;       /* true peak after gain and limiter */
	uint32_t serial;             /* the Ogg serial used */
} media_result;

/* The whole pipeline for an untrusted recording:
 *  1. a child process (decoder_exe __decode, with RLIMIT_AS, RLIMIT_CPU,
 *     RLIMIT_FSIZE 0, RLIMIT_NOFILE and a wall-clock timeout, an empty
 *     environment, and once started a user and network namespace and a
 *     seccomp allow-list: see publisher/media/README.md) decodes as
 *     media_decode_file does and streams mono 48 kHz floats through a pipe;
 *  2. this process writes them to an unlinked temporary file while measuring
 *     integrated loudness with libebur128 (EBU R128);
 *  3. it finds the gain that puts the limiter's output at loudness_target
 *     (measuring passes, two at a time), then reads the signal back once
 *     more through a high-pass, that gain and a look-ahead true-peak
 *     limiter (ceiling below MEDIA_TRUE_PEAK_CEILING with a margin for the
 *     codec) and encodes as media_encode_opus does (OpusHead output gain 0:
 *     the samples are already normalized), decoding every packet again to
 *     meter what a player will hear. The same samples, in the same pass,
 *     feed the waveform and (unless no_fallback) the M4A rendition on its
 *     own thread (as media_encode_m4a), so all three carry exactly the
 *     same signal. A decoded stream that misses the loudness target or the
 *     true-peak ceiling is corrected and the pass runs again (see
 *     normalize in transcode.c; once is the usual case).
 * Memory stays bounded whatever the input's length. The encoded streams
 * are written to unlinked temporary files as they are made; with keep_files
 * they are handed over as those files, otherwise read back into exact-size
 * buffers at the end (bitrate x duration: memory that grows). Disk: the decoded signal (11 MiB per
 * minute) and the two streams, in tmp_dir, all unlinked.
 * Deterministic: the same file and options give the same bytes.
 * Returns 0, or the errors of media_decode_file, or:
 *   SAYIN_ETOOLARGE   the file has more than max_input_bytes
 *   SAYIN_ETOOLONG    the recording lasts longer than max_duration_ms
 *                     (found while decoding, so a small file that expands
 *                     into hours of audio stops early)
 *   SAYIN_ESILENT     nothing above the -70 LUFS gate
 *   SAYIN_EDECODER    the child crashed (killed by a signal), timed out, or
 *                     broke the protocol; nothing else is affected
 *   SAYIN_EENCODE, SAYIN_EINVAL, -errno (temporary file, fork, pipe)
 * On error, err receives one line naming the cause and out is left zeroed. */
int media_transcode_file(const char *path, const media_transcode_options *opt,
                         media_result *out, char *err, size_t errlen);

void media_result_free(media_result *res);
/* Closes a media_file (if len > 0) and zeroes it. */
void media_file_close(media_file *f);

/* The decoder child: `PROGRAM __decode LOG_LEVEL MAX_DURATION_MS MEMORY
 * [--test-hook=WHAT]` with the recording on fd 0 and the pipe on fd 1; it
 * confines itself before it reads the recording, and a forbidden call kills
 * it with SIGSYS. Returns the process exit code.
 * Programs that call media_transcode_file route MEDIA_DECODER_COMMAND here
 * before anything else in main(). */
int media_decoder_main(int argc, char **argv);

/* Which of the decoder sandbox's protections applied in the latest child
 * that reported (any thread): true for one that applied, false for one that
 * did not or before any child has run. */
enum media_protection {
	MEDIA_PROTECTION_SECCOMP,
	MEDIA_PROTECTION_NO_NEW_PRIVS,
	MEDIA_PROTECTION_USERNS,
	MEDIA_PROTECTION_NETNS,
	MEDIA_PROTECTION_EMPTY_ENV,
	MEDIA_PROTECTION_COUNT
};
const char *media_protection_name(enum media_protection p);
bool media_protection_applied(enum media_protection p);

/* One "LIBRARY VERSION" line per library the media code links (libopus,
 * libavformat, libavcodec, libavutil, libsoxr, libebur128, libseccomp),
 * each as the library reports it at run time, into out (for --version).
 * Returns out. */
const char *media_library_versions(char *out, size_t size);

#endif

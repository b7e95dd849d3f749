/* transcode: the whole pipeline over an untrusted recording. Pass 1 runs the
 * decoder child (decoder.c) into an unlinked file while measuring loudness;
 * then measuring passes (chain.c) find the gain and the encoding pass
 * (encodepass.c) makes Opus, waveform and M4A, again until the decoded Opus
 * meets the loudness target and the true-peak ceiling. */
#include "media/internal.h"
#include "media/sandbox.h"

#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define set_err media__set_err

/* The limiter's ceiling sits below MEDIA_TRUE_PEAK_CEILING because the
 * promise is about the decoded stream, and Opus at 32 kb/s does not keep
 * the waveform: on espeak-ng speech it moved limited true peaks up by
 * 1.2-2.0 dB (with the high-pass below; 2.3-3.1 dB without it). */
#define LIMITER_CEILING_DB (MEDIA_TRUE_PEAK_CEILING - 2.5)
/* What the codec takes off integrated loudness on speech at 32 kb/s
 * (measured on the test fixtures and the bench clip: -0.47 to -0.63 LU);
 * the limiter aims that much above target. */
#define CODEC_LOUDNESS_SHIFT (-0.5)
#define SILENCE_GATE_LUFS (-70.0) /* BS.1770's absolute gate */

/* State of pass 1: child -> temporary file, loudness, serial. */
struct pass1 {
	int tmp_fd;
	ebur128_state *meter;
	uint32_t hash;          /* FNV-1a of the samples' bytes */
	uint64_t frames;
	char *err;              /* the line for a failure here */
	size_t errlen;
};

/* Pass 1's sink: takes the child's samples (already made finite and
 * clamped by decoder.c). */
static int pass1_write(void *ctx, const float *x, size_t n)
{
	struct pass1 *p = ctx;
	const unsigned char *bytes = (const unsigned char *)x;
	int rc;

	for (size_t i = 0; i < n * sizeof(float); i++) {
		p->hash ^= bytes[i];
		p->hash *= 16777619u;
	}
	if (ebur128_add_frames_float(p->meter, x, n) != EBUR128_SUCCESS) {
		set_err(p->err, p->errlen, "loudness measurement failed");
		return SAYIN_EENCODE;
	}
	rc = fileio_write(p->tmp_fd, x, n * sizeof(float), -1);
	if (rc != 0) {
		set_err(p->err, p->errlen, "cannot write the temporary file: %s", strerror(-rc));
		return rc;
	}
	p->frames += n;
	return 0;
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
static int find_gain(const media__encode_ctx *c, double start, double max_gain, double ceiling,
                     double want, double *gain, double *measured, bool *estimated, char *err,
                     size_t errlen)
{
	media__measure_job a = { .gain = start }, b = { .gain = fmin(start + 6.0, max_gain) };
	double next, slope;
	int rc;

	for (int round = 0; round < 2; round++) {
		rc = media__measure_two(c->pcm_fd, c->frames, ceiling, &a, &b, err, errlen);
		if (rc != 0)
			return rc;
		/* b is the closer one from here on. */
		if (fabs(a.lufs - want) < fabs(b.lufs - want)) {
			media__measure_job t = a;
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

static int normalize(const media__encode_ctx *c, double in_lufs, char *err, size_t errlen)
{
	double target = c->o->loudness_target, gain = target - in_lufs;
	double max_gain = gain + MAX_EXTRA_GAIN_DB, ceiling = LIMITER_CEILING_DB;
	double codec_shift = CODEC_LOUDNESS_SHIFT; /* decoded loudness minus the limiter's */
	double limited = 0;
	bool estimated = false;
	media__encode_result r = { 0 };
	int rc = 0;

	for (int attempt = 0; attempt < ENCODE_ATTEMPTS; attempt++) {
		rc = find_gain(c, gain, max_gain, ceiling, target - codec_shift, &gain, &limited,
		               &estimated, err, errlen);
		if (rc != 0)
			return rc;
		rc = media__encode_pass(c, gain, ceiling, &r, err, errlen);
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
	o->tmp_dir = media__tmp_dir(o->tmp_dir);
}

int media_transcode_file(const char *path, const media_transcode_options *opt,
                         media_result *out, char *err, size_t errlen)
{
	media_transcode_options o;
	media__info info;
	media__sink sink;
	struct pass1 *p1 = NULL;
	media_opus_options oopt;
	uint64_t size = 0;
	double lufs;
	int file_fd = -1, opus_fd = -1, rc;

	rc = media__enter(path != NULL && opt != NULL, out, sizeof(*out),
	                  "media_transcode_file: no path, options or output", err, errlen);
	if (rc != 0)
		return rc;
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
	p1->err = err;
	p1->errlen = errlen;
	p1->meter = media__meter_new();
	if (p1->meter == NULL) {
		set_err(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	rc = media__open_tmp(o.tmp_dir, err, errlen);
	if (rc < 0)
		goto out;
	p1->tmp_fd = rc;
	sink.write = pass1_write;
	sink.ctx = p1;
	rc = media__decoder_run(&o, file_fd, &sink, &info, err, errlen);
	if (rc != 0)
		goto out;
	lufs = media__measure_lufs(p1->meter, p1->frames);
	log_debug("media: decoded %llu samples (%s), %.2f LUFS",
	          (unsigned long long)p1->frames, info.format, lufs);
	if (!(lufs > SILENCE_GATE_LUFS)) {
		set_err(err, errlen, "silent: nothing above the %.0f LUFS gate (EBU R128); a silent "
		                     "recording is not amplified into noise", SILENCE_GATE_LUFS);
		rc = SAYIN_ESILENT;
		goto out;
	}

	/* Pass 2: read back, gain, limit, encode. */
	out->input_lufs = lufs;
	out->frames = (size_t)p1->frames;
	out->input_rate = info.rate;
	out->input_channels = info.channels;
	out->input_frames = info.input_frames;
	snprintf(out->input_format, sizeof(out->input_format), "%s", info.format);
	out->duration = (double)info.input_frames / info.rate;
	out->serial = p1->hash ^ info.rate;
	oopt = o.opus;
	oopt.serial = out->serial;
	opus_fd = media__open_tmp(o.tmp_dir, err, errlen);
	if (opus_fd < 0) {
		rc = opus_fd;
		goto out;
	}
	{
		media__encode_ctx c = { .o = &o, .oopt = &oopt, .pcm_fd = p1->tmp_fd,
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
	media__sandbox_log_once();
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

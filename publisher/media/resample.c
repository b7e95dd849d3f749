/* resample: mono input at any rate to the sink at MEDIA_RATE, with exactly
 * round(input_frames * 48000 / rate) samples out (soxr, HQ, one thread). */
#include "media/internal.h"

#include "core/error.h"
#include "core/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <soxr.h>

#define set_err media__set_err

/* Mono input at `rate` goes to the sink at MEDIA_RATE: copied when the rate
 * already matches, else through soxr. The last RS_HOLD output samples are
 * held back until the end, when the total is cut or zero-padded to exactly
 * round(input_frames * 48000 / rate) (soxr's count differs by a sample or
 * two). */
#define RS_HOLD 1024
#define RS_SCRATCH 16384

int media__resampler_init(media__resampler *rs, unsigned rate, const media__sink *sink,
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

void media__resampler_free(media__resampler *rs)
{
	if (rs->soxr != NULL)
		soxr_delete(rs->soxr);
	free(rs->scratch);
	free(rs->hold);
	memset(rs, 0, sizeof(*rs));
}

/* Sends n samples to the sink, clamped: the resampler's filter can
 * overshoot full scale slightly. */
static int emit(media__resampler *rs, float *x, size_t n)
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
static int resampler_append(media__resampler *rs, const float *in, size_t n)
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

/* Also flushes soxr when in is NULL (resampler_finish). */
int media__resampler_feed(media__resampler *rs, const float *in, size_t n)
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

int media__resampler_finish(media__resampler *rs, uint64_t input_frames, uint64_t *total,
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
	rc = media__resampler_feed(rs, NULL, 0);
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

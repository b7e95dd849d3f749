/* waveform: min/max peaks per pixel, streamed, as BBC audiowaveform JSON v2. */
#include "media/internal.h"

#include "core/error.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* First sample after pixel i (0-based): floor((i + 1) * F / L). F * L fits
 * in 64 bits: F is at most max-duration (24 h) at 48 kHz, L at most 1e5. */
static uint64_t pixel_end(const media_waveform *w, uint64_t i)
{
	return (uint64_t)(((unsigned __int128)w->frames * (i + 1)) / w->length);
}

int media_waveform_begin(media_waveform *w, uint64_t frames, unsigned points)
{
	memset(w, 0, sizeof(*w));
	if (points == 0)
		points = MEDIA_DEFAULT_WAVEFORM_POINTS;
	if (frames == 0 || points > MEDIA_MAX_WAVEFORM_POINTS)
		return SAYIN_EINVAL;
	w->length = frames < points ? (uint32_t)frames : points;
	if ((frames + w->length - 1) / w->length > UINT32_MAX)
		return SAYIN_EINVAL;
	w->samples_per_pixel = (uint32_t)((frames + w->length - 1) / w->length);
	w->data = calloc(2 * (size_t)w->length, 1);
	if (w->data == NULL)
		return -ENOMEM;
	w->frames = frames;
	w->pixel_end = pixel_end(w, 0);
	w->lo = INFINITY;
	w->hi = -INFINITY;
	return 0;
}

/* round(x * 128), clamped to the 8-bit range; NaN counts as 0. */
static int8_t quantize(float x)
{
	float v = x * 128.0f;

	if (!(v > -128.0f))
		return v < 0 ? -128 : 0;
	if (v >= 127.0f)
		return 127;
	return (int8_t)lrintf(v);
}

void media_waveform_add(media_waveform *w, const float *x, size_t n)
{
	for (size_t i = 0; i < n && w->pos < w->frames; i++) {
		float v = x[i];

		if (v < w->lo)
			w->lo = v;
		if (v > w->hi)
			w->hi = v;
		if (++w->pos == w->pixel_end) {
			w->data[2 * (size_t)w->pixel] = quantize(w->lo);
			w->data[2 * (size_t)w->pixel + 1] = quantize(w->hi);
			w->pixel++;
			w->lo = INFINITY;
			w->hi = -INFINITY;
			if (w->pixel < w->length)
				w->pixel_end = pixel_end(w, w->pixel);
		}
	}
}

int media_waveform_done(const media_waveform *w)
{
	return w->data != NULL && w->pixel == w->length && w->pos == w->frames;
}

int media_waveform_json(const media_waveform *w, media_buffer *out)
{
	/* The header, then at most 5 bytes per value ("-128,"). */
	size_t cap = 160 + 10 * (size_t)w->length, len;
	char *s;
	int n;

	memset(out, 0, sizeof(*out));
	if (!media_waveform_done(w))
		return SAYIN_EINVAL;
	s = malloc(cap);
	if (s == NULL)
		return -ENOMEM;
	n = snprintf(s, cap,
	             "{\"version\":2,\"channels\":1,\"sample_rate\":%d,\"samples_per_pixel\":%u,"
	             "\"bits\":8,\"length\":%u,\"data\":[",
	             MEDIA_RATE, w->samples_per_pixel, w->length);
	len = (size_t)n;
	for (size_t i = 0; i < 2 * (size_t)w->length; i++) {
		n = snprintf(s + len, cap - len, i == 0 ? "%d" : ",%d", w->data[i]);
		len += (size_t)n;
	}
	memcpy(s + len, "]}", 3);
	len += 2;
	out->data = (unsigned char *)s;
	out->len = len;
	return 0;
}

void media_waveform_free(media_waveform *w)
{
	if (w == NULL)
		return;
	free(w->data);
	memset(w, 0, sizeof(*w));
}

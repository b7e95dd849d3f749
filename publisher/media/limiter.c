/* limiter: a look-ahead true-peak limiter for mono MEDIA_RATE samples.
 *
 * Per sample k: p[k] is the true peak around k (the sample and three points
 * interpolated between it and the next, 4x oversampling); the gain it needs
 * is g[k] = min(1, ceiling / p[k]). m[k] is the minimum of g over the last
 * L+1 samples; h[k] = min(m[k], release(h[k-1])) recovers slowly; and the
 * gain applied to sample n is the mean of h[n..n+L]. Every term of that mean
 * is at most g[n], so the output never exceeds the ceiling, and the gain
 * ramps down over L samples instead of jumping: limiting, not clipping.
 * Latency: L plus the interpolator's half-length.
 *
 * Also here, sharing the interpolator: a true-peak meter for the decoded
 * output and the high-pass that runs before the limiter. */
#include "media/internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

#define LOOKAHEAD 240    /* L: 5 ms at 48 kHz, the attack time */
#define HALF_TAPS 8      /* T: interpolator taps on each side */
#define PHASES 3         /* points between two samples: 1/4, 2/4, 3/4 */
#define RING 512         /* power of two > LOOKAHEAD + 2 * HALF_TAPS */
#define RELEASE_MS 80.0

/* The three phases' coefficients side by side (a fourth lane of zeros), so
 * one pass over the taps computes all three interpolated points. */
typedef float v4f __attribute__((vector_size(16)));

struct media__limiter {
	float ceiling;
	float coef[PHASES][2 * HALF_TAPS];
	v4f coef4[2 * HALF_TAPS];
	float gain_bound;        /* max over phases of sum |coef| */
	uint64_t last_loud;      /* last index + 1 whose |x| * gain_bound > ceiling; 0: none */
	float release;           /* per-sample recovery toward 1 */
	float x[RING];           /* input, by index mod RING */
	float h[RING];           /* smoothed gain, by index mod RING */
	double h_sum;            /* sum of the last L+1 h */
	float h_prev;
	/* monotonic deque of (index, gain) for the sliding minimum */
	uint64_t dq_idx[RING];
	float dq_val[RING];
	size_t dq_head, dq_len;
	uint64_t n;              /* samples taken */
};

media__limiter *media__limiter_new(double ceiling)
{
	media__limiter *lim = calloc(1, sizeof(*lim));

	if (lim == NULL)
		return NULL;
	lim->ceiling = (float)ceiling;
	lim->release = (float)(1.0 - exp(-1.0 / (RELEASE_MS * MEDIA_RATE / 1000.0)));
	/* Hann-windowed sinc; tap j sits at sample k + j - (T - 1). */
	for (int ph = 0; ph < PHASES; ph++) {
		double t = (ph + 1) / (double)(PHASES + 1), sum = 0;
		for (int j = 0; j < 2 * HALF_TAPS; j++) {
			double d = t - (j - (HALF_TAPS - 1));
			double sinc = d == 0 ? 1.0 : sin(M_PI * d) / (M_PI * d);
			double w = 0.5 * (1.0 + cos(M_PI * d / HALF_TAPS));
			lim->coef[ph][j] = (float)(sinc * w);
			sum += sinc * w;
		}
		for (int j = 0; j < 2 * HALF_TAPS; j++)
			lim->coef[ph][j] = (float)(lim->coef[ph][j] / sum);
	}
	for (int j = 0; j < 2 * HALF_TAPS; j++) {
		for (int ph = 0; ph < PHASES; ph++)
			lim->coef4[j][ph] = lim->coef[ph][j];
		lim->coef4[j][3] = 0.0f;
	}
	for (int ph = 0; ph < PHASES; ph++) {
		float sum = 0;
		for (int j = 0; j < 2 * HALF_TAPS; j++)
			sum += fabsf(lim->coef[ph][j]);
		if (sum > lim->gain_bound)
			lim->gain_bound = sum;
	}
	/* A little above the sum, for rounding in the products. */
	lim->gain_bound *= 1.001f;
	for (int i = 0; i < RING; i++)
		lim->h[i] = 1.0f;
	lim->h_sum = LOOKAHEAD + 1;
	lim->h_prev = 1.0f;
	return lim;
}

void media__limiter_free(media__limiter *lim)
{
	free(lim);
}

size_t media__limiter_latency(const media__limiter *lim)
{
	(void)lim;
	return LOOKAHEAD + HALF_TAPS;
}

static float x_at(const media__limiter *lim, uint64_t i)
{
	return lim->x[i & (RING - 1)];
}

/* The three points interpolated after sample k (taps k - T + 1 .. k + T). */
static v4f interpolate(const v4f *coef4, const float *x, uint64_t k)
{
	v4f y = { 0, 0, 0, 0 };

	for (int j = 0; j < 2 * HALF_TAPS; j++)
		y += coef4[j] * x[(k + (uint64_t)j - (HALF_TAPS - 1)) & (RING - 1)];
	return y;
}

static float max3(v4f y)
{
	float a = fabsf(y[0]), b = fabsf(y[1]), c = fabsf(y[2]);
	float m = a > b ? a : b;
	return m > c ? m : c;
}

/* The true peak around sample k, whose neighbours up to k + T are in. An
 * interpolated point is at most gain_bound times the largest sample under
 * its taps, so while no sample there exceeds ceiling / gain_bound the
 * sample itself (under the ceiling too) is all the limiter needs. */
static float true_peak(const media__limiter *lim, uint64_t k)
{
	float a = fabsf(x_at(lim, k)), y;

	if (lim->last_loud == 0 || lim->last_loud - 1 + (HALF_TAPS - 1) < k)
		return a;
	y = max3(interpolate(lim->coef4, lim->x, k));
	return y > a ? y : a;
}

float media__limiter_step(media__limiter *lim, float x)
{
	uint64_t i = lim->n++, k, out;
	float p, g, m, h;

	lim->x[i & (RING - 1)] = x;
	if (fabsf(x) * lim->gain_bound > lim->ceiling)
		lim->last_loud = i + 1;
	/* Sample k = i - T now has T neighbours on each side (zeros before 0). */
	if (i < HALF_TAPS)
		return 0.0f;
	k = i - HALF_TAPS;
	p = true_peak(lim, k);
	g = p > lim->ceiling ? lim->ceiling / p : 1.0f;

	/* Sliding minimum of g over [k - L, k]. */
	while (lim->dq_len > 0 &&
	       lim->dq_val[(lim->dq_head + lim->dq_len - 1) & (RING - 1)] >= g)
		lim->dq_len--;
	lim->dq_idx[(lim->dq_head + lim->dq_len) & (RING - 1)] = k;
	lim->dq_val[(lim->dq_head + lim->dq_len) & (RING - 1)] = g;
	lim->dq_len++;
	while (lim->dq_idx[lim->dq_head] + LOOKAHEAD < k) {
		lim->dq_head = (lim->dq_head + 1) & (RING - 1);
		lim->dq_len--;
	}
	m = lim->dq_val[lim->dq_head];

	h = lim->h_prev + (1.0f - lim->h_prev) * lim->release;
	if (m < h)
		h = m;
	lim->h_prev = h;
	/* h[k] replaces h[k - L - 1] in the window sum. */
	lim->h_sum += (double)h - lim->h[(k - LOOKAHEAD - 1) & (RING - 1)];
	lim->h[k & (RING - 1)] = h;
	if (k < LOOKAHEAD)
		return 0.0f;
	out = k - LOOKAHEAD;
	return x_at(lim, out) * (float)(lim->h_sum / (LOOKAHEAD + 1));
}

/* ---- high-pass --------------------------------------------------------- */

void media__highpass_init(media__highpass *hp, double cutoff_hz)
{
	/* RBJ biquad, Butterworth Q. */
	double w = 2.0 * M_PI * cutoff_hz / MEDIA_RATE, c = cos(w), alpha = sin(w) / (2.0 * M_SQRT1_2);
	double a0 = 1.0 + alpha;

	memset(hp, 0, sizeof(*hp));
	hp->b0 = (1.0 + c) / 2.0 / a0;
	hp->b1 = -(1.0 + c) / a0;
	hp->b2 = hp->b0;
	hp->a1 = -2.0 * c / a0;
	hp->a2 = (1.0 - alpha) / a0;
}

float media__highpass_step(media__highpass *hp, float x)
{
	double y = hp->b0 * x + hp->z1;

	hp->z1 = hp->b1 * x - hp->a1 * y + hp->z2;
	hp->z2 = hp->b2 * x - hp->a2 * y;
	return (float)y;
}

/* ---- true-peak meter --------------------------------------------------- */

/* Blocks of the signal; a block whose every interpolated point is bounded
 * below the peak found so far is not interpolated (see media__peak_add). */
#define PM_BLOCK 1024

struct media__peak_meter {
	v4f coef4[2 * HALF_TAPS];
	float gain_bound;        /* max over phases of sum |coef|: |y| <= bound * max|x| */
	float peak;
	/* HALF_TAPS - 1 samples of history, the block, HALF_TAPS of future */
	float x[HALF_TAPS - 1 + PM_BLOCK + HALF_TAPS];
	size_t fill;             /* samples in x */
	uint64_t n;              /* samples taken */
};

media__peak_meter *media__peak_meter_new(void)
{
	media__peak_meter *pm = calloc(1, sizeof(*pm));
	media__limiter *lim;

	if (pm == NULL)
		return NULL;
	/* The limiter's interpolator: the same coefficients, so the meter and
	 * the limiter agree on what a true peak is. */
	lim = media__limiter_new(1.0);
	if (lim == NULL) {
		free(pm);
		return NULL;
	}
	memcpy(pm->coef4, lim->coef4, sizeof(pm->coef4));
	pm->gain_bound = lim->gain_bound;
	media__limiter_free(lim);
	pm->fill = HALF_TAPS - 1; /* zeros before the signal */
	return pm;
}

void media__peak_meter_free(media__peak_meter *pm)
{
	free(pm);
}

/* Meters samples [HALF_TAPS - 1, end - HALF_TAPS) of pm->x: every sample
 * and the three points after it. Blocks that cannot beat the peak so far
 * are skipped: exact, since |y| <= gain_bound * max|x| over its taps. */
static void peak_block(media__peak_meter *pm, size_t end)
{
	size_t first = HALF_TAPS - 1, last = end - HALF_TAPS;
	float m = 0;

	for (size_t i = 0; i < end; i++) {
		float a = fabsf(pm->x[i]);
		if (a > m)
			m = a;
	}
	if (m * pm->gain_bound <= pm->peak)
		return;
	for (size_t k = first; k < last; k++) {
		const float *x = pm->x + k - (HALF_TAPS - 1);
		v4f y = { 0, 0, 0, 0 };
		float a = fabsf(pm->x[k]), p;

		for (int j = 0; j < 2 * HALF_TAPS; j++)
			y += pm->coef4[j] * x[j];
		p = max3(y);
		if (a > p)
			p = a;
		if (p > pm->peak)
			pm->peak = p;
	}
}

void media__peak_add(media__peak_meter *pm, const float *x, size_t n)
{
	const size_t cap = sizeof(pm->x) / sizeof(pm->x[0]);

	while (n > 0) {
		size_t k = cap - pm->fill;

		if (k > n)
			k = n;
		memcpy(pm->x + pm->fill, x, k * sizeof(float));
		pm->fill += k;
		pm->n += k;
		x += k;
		n -= k;
		if (pm->fill == cap) {
			size_t keep = 2 * HALF_TAPS - 1;
			peak_block(pm, cap);
			/* The last T - 1 metered samples' history and T future ones
			 * stay for the next block. */
			memmove(pm->x, pm->x + cap - keep, keep * sizeof(float));
			pm->fill = keep;
		}
	}
}

double media__peak_finish(media__peak_meter *pm)
{
	/* Zeros after the signal, as before it. */
	memset(pm->x + pm->fill, 0, HALF_TAPS * sizeof(float));
	peak_block(pm, pm->fill + HALF_TAPS);
	pm->fill = HALF_TAPS - 1;
	memset(pm->x, 0, sizeof(pm->x));
	return pm->peak;
}

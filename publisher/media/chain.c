/* chain: the decoded signal read back from its temporary file through the
 * high-pass, the gain and the true-peak limiter; the loudness meters; and
 * the measuring passes, two at a time, that find what a gain gives. */
#include "media/internal.h"

#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define set_err media__set_err

/* Opus in VOIP mode high-passes its input itself (an adaptive 60-100 Hz
 * filter). Its phase shift re-shapes peaks the limiter has just flattened,
 * by up to 3 dB on voiced speech, which then needs a second encoding with a
 * lower ceiling. A 100 Hz high-pass of our own before the limiter takes
 * out most of what the codec's filter would move, so the limiter sees
 * nearly the waveform the codec carries: the overshoot halves. */
#define HIGHPASS_HZ 100.0
/* Every loudness meter: integrated loudness in histogram mode, which keeps
 * the gating blocks' energies in 1000 bins of 0.1 dB instead of a list that
 * grows by 10 blocks per second, so memory does not grow with the length.
 * The bins cost at most 0.05 LU (libebur128's own tests). */
#define METER_MODE (EBUR128_MODE_I | EBUR128_MODE_M | EBUR128_MODE_HISTOGRAM)
#define READ_CHUNK 8192

ebur128_state *media__meter_new(void)
{
	return ebur128_init(1, MEDIA_RATE, METER_MODE);
}

/* Integrated loudness; a clip shorter than one 400 ms gating block is
 * measured over its whole length instead. */
double media__measure_lufs(ebur128_state *st, uint64_t frames)
{
	double lufs = -HUGE_VAL;

	if (frames >= (uint64_t)MEDIA_RATE * 4 / 10) {
		if (ebur128_loudness_global(st, &lufs) != EBUR128_SUCCESS)
			return -HUGE_VAL;
	} else {
		unsigned long ms = (unsigned long)(frames * 1000 / MEDIA_RATE);
		if (ebur128_loudness_window(st, ms > 0 ? ms : 1, &lufs) != EBUR128_SUCCESS)
			return -HUGE_VAL;
	}
	return lufs;
}

/* Temporary file -> high-pass -> gain -> limiter -> (measuring meter, or
 * encoder, waveform and AAC). */
struct media__chain {
	int fd;
	uint64_t offset;        /* next byte to read */
	uint64_t left;          /* samples still in the file */
	float buf[READ_CHUNK];
	size_t pos, len;
	float gain;
	media__highpass hp;
	media__limiter *lim;
	size_t skip;            /* limiter outputs still to drop (its latency) */
	ebur128_state *meter;   /* measuring only: the limiter's output */
	media_waveform *wf;     /* encoding only */
};

static int refill(media__chain *p)
{
	size_t n = p->left < READ_CHUNK ? (size_t)p->left : READ_CHUNK, got;
	int rc;

	if (n == 0) {
		/* Past the end: zeros flush the limiter's look-ahead. */
		memset(p->buf, 0, sizeof(p->buf));
		p->len = READ_CHUNK;
	} else {
		rc = fileio_read(p->fd, p->buf, n * sizeof(float), (int64_t)p->offset, &got);
		if (rc == 0 && got < n * sizeof(float))
			rc = -EIO; /* the file ends early */
		if (rc != 0)
			return rc;
		p->offset += n * sizeof(float);
		p->len = n;
		p->left -= n;
	}
	p->pos = 0;
	return 0;
}

int media__chain_read(media__chain *p, float *pcm, size_t n)
{
	for (size_t i = 0; i < n;) {
		float y;

		if (p->pos == p->len) {
			int rc = refill(p);
			if (rc != 0)
				return rc;
		}
		y = media__highpass_step(&p->hp, p->buf[p->pos++]) * p->gain;
		y = media__limiter_step(p->lim, y);
		if (p->skip > 0) {
			p->skip--;
			continue;
		}
		pcm[i++] = y;
	}
	if (p->meter != NULL && ebur128_add_frames_float(p->meter, pcm, n) != EBUR128_SUCCESS)
		return SAYIN_EENCODE;
	if (p->wf != NULL)
		media_waveform_add(p->wf, pcm, n);
	return 0;
}

void media__chain_free(media__chain *p)
{
	if (p == NULL)
		return;
	media__limiter_free(p->lim);
	if (p->meter != NULL)
		ebur128_destroy(&p->meter);
	free(p);
}

media__chain *media__chain_new(int fd, uint64_t frames, double gain_db, double ceiling_db,
                               bool measure, media_waveform *wf)
{
	media__chain *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->fd = fd;
	p->left = frames;
	p->wf = wf;
	p->gain = (float)pow(10.0, gain_db / 20.0);
	media__highpass_init(&p->hp, HIGHPASS_HZ);
	p->lim = media__limiter_new(pow(10.0, ceiling_db / 20.0));
	if (measure)
		p->meter = media__meter_new();
	if (p->lim == NULL || (measure && p->meter == NULL)) {
		media__chain_free(p);
		return NULL;
	}
	p->skip = media__limiter_latency(p->lim);
	return p;
}

/* One measuring pass: the loudness of the limiter's output at j->gain. */
static void *measure_run(void *arg)
{
	media__measure_job *j = arg;
	media__chain *p = media__chain_new(j->fd, j->frames, j->gain, j->ceiling, true, NULL);
	float chunk[MEDIA__OPUS_FRAME];

	j->rc = p == NULL ? -ENOMEM : 0;
	for (uint64_t done = 0; j->rc == 0 && done < j->frames; done += MEDIA__OPUS_FRAME) {
		uint64_t left = j->frames - done;
		size_t n = left < MEDIA__OPUS_FRAME ? (size_t)left : MEDIA__OPUS_FRAME;

		j->rc = media__chain_read(p, chunk, n);
	}
	if (j->rc == 0)
		j->lufs = media__measure_lufs(p->meter, j->frames);
	media__chain_free(p);
	return NULL;
}

int media__measure_two(int fd, uint64_t frames, double ceiling, media__measure_job *a,
                       media__measure_job *b, char *err, size_t errlen)
{
	pthread_t t;
	bool threaded;

	a->fd = b->fd = fd;
	a->frames = b->frames = frames;
	a->ceiling = b->ceiling = ceiling;
	threaded = pthread_create(&t, NULL, measure_run, b) == 0;
	measure_run(a);
	if (threaded)
		pthread_join(t, NULL);
	else
		measure_run(b);
	if (a->rc != 0 || b->rc != 0) {
		int rc = a->rc != 0 ? a->rc : b->rc;
		set_err(err, errlen, "reading the temporary file failed: %s", sayin_strerror(rc));
		return rc;
	}
	log_debug("media: measuring: ceiling %.2f dBTP: gain %+.2f dB -> %.2f LUFS, %+.2f dB -> "
	          "%.2f LUFS", ceiling, a->gain, a->lufs, b->gain, b->lufs);
	return 0;
}

/* encodepass: one read of the limited signal feeds, on their own threads,
 * the Opus encoder, a verifier that decodes and meters every packet, the
 * waveform and the M4A rendition, so all of them carry the same samples. */
#include "media/internal.h"

#include "core/error.h"
#include "core/log.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <opus.h>

#define set_err media__set_err

#define OPUS_FRAME MEDIA__OPUS_FRAME

/* The encoding pass runs as a pipeline of threads joined by FIFOs: a feeder
 * (high-pass, gain, limiter, waveform) hands 20 ms frames to the Opus
 * encoder (the calling thread), which hands packets to a verifier (decode,
 * loudness, true peak); an AAC thread takes the same frames as the encoder.
 * Opus dominates, so on two cores the others ride along almost for free.
 * Every stage sees its data in the same order whatever the timing, so the
 * bytes do not depend on the scheduling.
 *
 * A FIFO of records of up to FIFO_SLOT_BYTES, one producer, one consumer. */
#define FIFO_SLOTS 32
#define FIFO_SLOT_BYTES 4096 /* an Opus frame of floats or a packet */

#define FIFO_BATCH 8 /* a waiting side is woken once this many records can move */

enum { REC_DATA = 0, REC_LOOKAHEAD = 1 };

struct fifo {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t head, count;
	bool closed;            /* no more records will come */
	bool cancelled;         /* stop: push and pop fail */
	bool pusher_waits, popper_waits;
	int tag[FIFO_SLOTS];
	size_t len[FIFO_SLOTS];
	unsigned char slot[FIFO_SLOTS][FIFO_SLOT_BYTES];
};

static void fifo_init(struct fifo *f)
{
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	f->head = f->count = 0;
	f->closed = f->cancelled = false;
	f->pusher_waits = f->popper_waits = false;
}

static void fifo_destroy(struct fifo *f)
{
	pthread_mutex_destroy(&f->mu);
	pthread_cond_destroy(&f->cv);
}

/* Waits for room. Returns 0, or -ECANCELED once the FIFO is cancelled.
 * A waiting consumer is woken once FIFO_BATCH records are in, not for
 * each: a thread switch per 20 ms frame cost more than the copying. */
static int fifo_push(struct fifo *f, int tag, const void *data, size_t len)
{
	size_t i;

	pthread_mutex_lock(&f->mu);
	while (f->count == FIFO_SLOTS && !f->cancelled) {
		f->pusher_waits = true;
		pthread_cond_wait(&f->cv, &f->mu);
	}
	f->pusher_waits = false;
	if (f->cancelled) {
		pthread_mutex_unlock(&f->mu);
		return -ECANCELED;
	}
	i = (f->head + f->count) % FIFO_SLOTS;
	f->tag[i] = tag;
	f->len[i] = len;
	memcpy(f->slot[i], data, len);
	f->count++;
	if (f->popper_waits && f->count >= FIFO_BATCH)
		pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	return 0;
}

/* Waits for a record. Returns 0, 1 at the end (closed and empty), or
 * -ECANCELED. */
static int fifo_pop(struct fifo *f, int *tag, void *data, size_t *len)
{
	pthread_mutex_lock(&f->mu);
	while (f->count == 0 && !f->closed && !f->cancelled) {
		f->popper_waits = true;
		pthread_cond_wait(&f->cv, &f->mu);
	}
	f->popper_waits = false;
	if (f->cancelled) {
		pthread_mutex_unlock(&f->mu);
		return -ECANCELED;
	}
	if (f->count == 0) {
		pthread_mutex_unlock(&f->mu);
		return 1;
	}
	*tag = f->tag[f->head];
	*len = f->len[f->head];
	memcpy(data, f->slot[f->head], *len);
	f->head = (f->head + 1) % FIFO_SLOTS;
	f->count--;
	if (f->pusher_waits && f->count <= FIFO_SLOTS - FIFO_BATCH)
		pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	return 0;
}

static void fifo_close(struct fifo *f)
{
	pthread_mutex_lock(&f->mu);
	f->closed = true;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

static void fifo_cancel(struct fifo *f)
{
	pthread_mutex_lock(&f->mu);
	f->cancelled = true;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

/* ---- the encoding pass ----------------------------------------------------- */

/* The feeder: the limiter's output in OPUS_FRAME frames, to the encoder's
 * FIFO and the AAC thread's. */
struct feeder {
	media__chain *p;
	uint64_t frames;
	struct fifo *to_opus, *to_aac;
	uint64_t fail_at;       /* tests: fail at this frame (0: never) */
	int rc;
};

static void *feeder_run(void *arg)
{
	struct feeder *fd = arg;
	float frame[OPUS_FRAME];

	fd->rc = 0;
	for (uint64_t done = 0; done < fd->frames; done += OPUS_FRAME) {
		size_t n = fd->frames - done < OPUS_FRAME ? (size_t)(fd->frames - done) : OPUS_FRAME;

		fd->rc = media__chain_read(fd->p, frame, n);
		if (fd->rc == 0 && fd->fail_at != 0 && done / OPUS_FRAME + 1 == fd->fail_at)
			fd->rc = -EIO;
		if (fd->rc == 0)
			fd->rc = fifo_push(fd->to_opus, REC_DATA, frame, n * sizeof(float));
		if (fd->rc == 0 && fd->to_aac != NULL)
			fd->rc = fifo_push(fd->to_aac, REC_DATA, frame, n * sizeof(float));
		if (fd->rc != 0)
			break;
	}
	if (fd->rc != 0) {
		/* The encoder waits on this FIFO: wake it with the failure. */
		fifo_cancel(fd->to_opus);
		if (fd->to_aac != NULL)
			fifo_cancel(fd->to_aac);
	} else {
		fifo_close(fd->to_opus);
		if (fd->to_aac != NULL)
			fifo_close(fd->to_aac);
	}
	return NULL;
}

/* The Opus encoder's reader: the feeder's next frame. */
static int fifo_reader(void *ctx, float *pcm, size_t n)
{
	size_t len = 0;
	int tag = 0;
	int rc = fifo_pop(ctx, &tag, pcm, &len);

	if (rc == 0 && len != n * sizeof(float))
		rc = -EPROTO;
	return rc == 1 ? -EPROTO : rc;
}

/* The verifier: decodes each packet again and meters what a player will
 * hear, so loudness and true peak are checked on the real output. */
struct verifier {
	struct fifo *in;
	OpusDecoder *dec;
	ebur128_state *meter;   /* integrated loudness */
	media__peak_meter *peak;
	uint64_t skip;          /* pre-skip samples still to drop */
	uint64_t left;          /* samples of the recording still to meter */
	uint64_t packets;
	uint64_t fail_at;       /* tests: fail at this packet (0: never) */
	int rc;
	unsigned char packet[FIFO_SLOT_BYTES];
	float pcm[OPUS_FRAME];
};

static int verify_packet(struct verifier *v, const unsigned char *packet, opus_int32 len)
{
	int n = opus_decode_float(v->dec, packet, len, v->pcm, OPUS_FRAME, 0);
	size_t from = 0, count;

	if (n < 0) {
		log_error("media: opus_decode_float: %s", opus_strerror(n));
		return SAYIN_EENCODE;
	}
	if (v->skip > 0) {
		from = v->skip < (uint64_t)n ? (size_t)v->skip : (size_t)n;
		v->skip -= from;
	}
	count = (size_t)n - from;
	if (count > v->left)
		count = (size_t)v->left;
	v->left -= count;
	if (count > 0 && ebur128_add_frames_float(v->meter, v->pcm + from, count) != EBUR128_SUCCESS)
		return SAYIN_EENCODE;
	if (count > 0)
		media__peak_add(v->peak, v->pcm + from, count);
	return 0;
}

/* A consumer thread's loop: pops records into data and hands each to take,
 * until the FIFO ends (0) or a pop (-ECANCELED) or take fails. A failure
 * cancels the FIFO, since its producer may wait for room, and is returned. */
static int consume(struct fifo *in, void *data, int (*take)(void *ctx, int tag, size_t len),
                   void *ctx)
{
	for (;;) {
		size_t len = 0;
		int tag = 0, rc = fifo_pop(in, &tag, data, &len);

		if (rc == 1)
			return 0;
		if (rc == 0)
			rc = take(ctx, tag, len);
		if (rc != 0) {
			fifo_cancel(in);
			return rc;
		}
	}
}

static int verifier_take(void *ctx, int tag, size_t len)
{
	struct verifier *v = ctx;

	if (tag == REC_LOOKAHEAD) {
		int lookahead;
		memcpy(&lookahead, v->packet, sizeof(lookahead));
		v->skip = (uint64_t)lookahead;
		return 0;
	}
	return ++v->packets == v->fail_at ? SAYIN_EENCODE
	                                  : verify_packet(v, v->packet, (opus_int32)len);
}

static void *verifier_run(void *arg)
{
	struct verifier *v = arg;

	v->rc = consume(v->in, v->packet, verifier_take, v);
	return NULL;
}

static int sink_start(void *ctx, int lookahead)
{
	return fifo_push(ctx, REC_LOOKAHEAD, &lookahead, sizeof(lookahead));
}

static int sink_packet(void *ctx, const unsigned char *data, int len)
{
	return fifo_push(ctx, REC_DATA, data, (size_t)len);
}

/* The AAC thread: frames from its FIFO into the M4A encoder. */
struct aac_job {
	struct fifo *in;
	media__m4a *m4a;
	uint64_t frames;
	uint64_t fail_at;       /* tests: fail at this frame (0: never) */
	int rc;
	char err[256];
	float frame[OPUS_FRAME];
};

static int aac_take(void *ctx, int tag, size_t len)
{
	struct aac_job *j = ctx;

	(void)tag;
	if (++j->frames == j->fail_at) {
		snprintf(j->err, sizeof(j->err), "the AAC encoder failed (injected by a test)");
		return SAYIN_EENCODE;
	}
	return media__m4a_add(j->m4a, j->frame, len / sizeof(float), j->err, sizeof(j->err));
}

static void *aac_run(void *arg)
{
	struct aac_job *j = arg;

	j->rc = consume(j->in, j->frame, aac_take, j);
	/* Only a pop fails with -ECANCELED: the pass was stopped elsewhere. */
	if (j->rc == -ECANCELED)
		snprintf(j->err, sizeof(j->err), "the AAC encoding was stopped");
	return NULL;
}

/* What the encoding pass shares between its threads. */
struct encode_pass {
	struct fifo to_opus, to_verifier, to_aac;
	struct feeder feeder;
	struct verifier verifier;
	struct aac_job aac;
	pthread_t feeder_t, verifier_t, aac_t;
	bool feeder_live, verifier_live, aac_live;
};

/* For tests only: SAYIN_TEST_MEDIA_FAULT=feeder|verifier|aac makes that
 * thread fail at its 20th frame, to prove that a failure anywhere stops
 * the whole pass cleanly (no hang, no half result). */
static void inject_faults(struct encode_pass *e)
{
	const char *stage = getenv("SAYIN_TEST_MEDIA_FAULT");

	if (stage == NULL)
		return;
	if (strcmp(stage, "feeder") == 0)
		e->feeder.fail_at = 20;
	else if (strcmp(stage, "verifier") == 0)
		e->verifier.fail_at = 20;
	else if (strcmp(stage, "aac") == 0)
		e->aac.fail_at = 20;
}

/* Runs the temporary file through high-pass, gain and limiter and encodes
 * it: Opus, and from the same samples the waveform and, unless no_fallback,
 * the M4A (replacing those in out); res gets the loudness and true peak of
 * the decoded Opus stream. Returns 0 or an error with err set. */
int media__encode_pass(const media__encode_ctx *c, double gain_db, double ceiling_db,
                       media__encode_result *res, char *err, size_t errlen)
{
	media_result *out = c->out;
	media_waveform wf = { 0 };
	struct encode_pass *e = calloc(1, sizeof(*e));
	media__packet_sink sink;
	media__chain *p = media__chain_new(c->pcm_fd, c->frames, gain_db, ceiling_db, false, &wf);
	int oerr = OPUS_OK, rc = 0;
	double tp = 0;

	media_buffer_free(&out->opus);
	media_buffer_free(&out->waveform);
	media_buffer_free(&out->m4a);
	media_file_close(&out->m4a_file);
	out->waveform_length = 0;
	if (e == NULL || p == NULL) {
		set_err(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	fifo_init(&e->to_opus);
	fifo_init(&e->to_verifier);
	fifo_init(&e->to_aac);
	rc = media_waveform_begin(&wf, c->frames, c->o->waveform_points);
	if (rc != 0) {
		set_err(err, errlen, "cannot make the waveform: %s", sayin_strerror(rc));
		goto out;
	}
	if (lseek(c->opus_fd, 0, SEEK_SET) != 0 || ftruncate(c->opus_fd, 0) != 0) {
		rc = -errno;
		set_err(err, errlen, "cannot rewind the temporary file: %s", strerror(errno));
		goto out;
	}

	e->verifier.in = &e->to_verifier;
	e->verifier.left = c->frames;
	e->verifier.dec = opus_decoder_create(MEDIA_RATE, 1, &oerr);
	e->verifier.meter = media__meter_new();
	e->verifier.peak = media__peak_meter_new();
	if (e->verifier.dec == NULL || e->verifier.meter == NULL || e->verifier.peak == NULL) {
		log_error("media: cannot set up the output check: %s", opus_strerror(oerr));
		set_err(err, errlen, "cannot create the Opus decoder that checks the output");
		rc = e->verifier.dec == NULL ? SAYIN_EENCODE : -ENOMEM;
		goto out;
	}
	if (!c->o->no_fallback) {
		rc = media__m4a_begin(&c->o->aac, c->o->tmp_dir, &e->aac.m4a, err, errlen);
		if (rc != 0)
			goto out;
		e->aac.in = &e->to_aac;
	}
	e->feeder.p = p;
	e->feeder.frames = c->frames;
	e->feeder.to_opus = &e->to_opus;
	e->feeder.to_aac = e->aac.m4a != NULL ? &e->to_aac : NULL;
	inject_faults(e);

	rc = pthread_create(&e->verifier_t, NULL, verifier_run, &e->verifier);
	e->verifier_live = rc == 0;
	if (rc == 0 && e->aac.m4a != NULL) {
		rc = pthread_create(&e->aac_t, NULL, aac_run, &e->aac);
		e->aac_live = rc == 0;
	}
	if (rc == 0) {
		rc = pthread_create(&e->feeder_t, NULL, feeder_run, &e->feeder);
		e->feeder_live = rc == 0;
	}
	if (rc != 0) {
		set_err(err, errlen, "cannot start a thread: %s", strerror(rc));
		rc = -rc;
		goto out;
	}

	sink = (media__packet_sink){ .start = sink_start, .packet = sink_packet,
		                     .ctx = &e->to_verifier };
	rc = media__opus_encode(fifo_reader, &e->to_opus, (size_t)c->frames, out->input_rate,
	                        c->oopt, &sink, c->opus_fd, c->o->keep_files ? NULL : &out->opus,
	                        err, errlen);
	if (rc == 0)
		fifo_close(&e->to_verifier);
out:
	if (e != NULL) {
		if (rc != 0) {
			fifo_cancel(&e->to_opus);
			fifo_cancel(&e->to_verifier);
			fifo_cancel(&e->to_aac);
		}
		if (e->feeder_live)
			pthread_join(e->feeder_t, NULL);
		if (e->verifier_live)
			pthread_join(e->verifier_t, NULL);
		if (e->aac_live)
			pthread_join(e->aac_t, NULL);
		/* A failing thread cancels the FIFOs around it, and the others
		 * then fail with -ECANCELED: report the one that did not. */
		if (e->feeder.rc != 0 && e->feeder.rc != -ECANCELED) {
			rc = e->feeder.rc;
			set_err(err, errlen, "reading the temporary file failed: %s", sayin_strerror(rc));
		} else if (e->aac.rc != 0 && e->aac.rc != -ECANCELED) {
			rc = e->aac.rc;
			set_err(err, errlen, "%s", e->aac.err);
		} else if (e->verifier.rc != 0 && e->verifier.rc != -ECANCELED) {
			rc = e->verifier.rc;
			set_err(err, errlen, "checking the encoded output failed");
		}
		if (rc == 0 && e->aac.m4a != NULL)
			rc = media__m4a_finish(e->aac.m4a, c->o->keep_files ? NULL : &out->m4a,
			                       c->o->keep_files ? &out->m4a_file : NULL, err, errlen);
		if (rc == 0) {
			rc = media_waveform_json(&wf, &out->waveform);
			if (rc != 0)
				set_err(err, errlen, "cannot make the waveform: %s", sayin_strerror(rc));
			out->waveform_length = wf.length;
		}
		if (rc == 0) {
			tp = media__peak_finish(e->verifier.peak);
			res->lufs = media__measure_lufs(e->verifier.meter, c->frames);
			res->true_peak_db = tp > 0 ? 20.0 * log10(tp) : -HUGE_VAL;
		}
		media__m4a_free(e->aac.m4a);
		if (e->verifier.dec != NULL)
			opus_decoder_destroy(e->verifier.dec);
		if (e->verifier.meter != NULL)
			ebur128_destroy(&e->verifier.meter);
		media__peak_meter_free(e->verifier.peak);
		fifo_destroy(&e->to_opus);
		fifo_destroy(&e->to_verifier);
		fifo_destroy(&e->to_aac);
		free(e);
	}
	if (rc != 0) {
		media_buffer_free(&out->opus);
		media_buffer_free(&out->waveform);
		media_buffer_free(&out->m4a);
		media_file_close(&out->m4a_file);
	}
	media__chain_free(p);
	media_waveform_free(&wf);
	return rc;
}

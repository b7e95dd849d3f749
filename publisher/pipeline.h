/* pipeline: from a recording on disk to a committed post: media (decode in a
 * child, loudness, Opus, AAC, waveform) then the publish transaction. Shared
 * by `sayin-publisher post` and the ingest API's workers, so both read the
 * same settings and report the same errors.
 *
 * Threading: pipeline_run may be called from several threads at once with
 * one pipeline (read-only after pipeline_configure) and one store. */
#ifndef SAYIN_PIPELINE_H
#define SAYIN_PIPELINE_H

#include "core/config.h"
#include "deliver/crosspost.h"
#include "deliver/delivery.h"
#include "media/media.h"
#include "publish.h"
#include "core/store.h"

typedef struct pipeline {
	media_transcode_options media;
	publish_settings publish;
	char base_url[512];
	uint64_t max_text_chars;
	delivery_targets *targets;  /* the configured CDN drivers (publish enqueues for them) */
	crosspost_accounts *accounts; /* the authors' network accounts */
	char *site_record;          /* the site identity these settings publish (site.h) */
	int insecure_url;           /* base_url is http:// on a host that is not loopback */
} pipeline;

/* Reads the media, feed, URL and CDN settings from cfg (after site_apply
 * made it agree with the store's site). Returns 0, or SAYIN_ECONFIG with
 * err naming the setting (and where it comes from), or -ENOMEM. cfg must outlive p; free with
 * pipeline_free. */
int pipeline_configure(pipeline *p, const config *cfg, char *err, size_t errlen);
void pipeline_free(pipeline *p);

typedef struct pipeline_post {
	const char *file;             /* the recording */
	const char *author;
	const char *text;             /* NULL: none */
	const char *idempotency_key;  /* NULL: none (see publish_input) */
	const char *request_sha256;
	const char *crosspost;        /* networks, comma-separated; NULL: every enabled one */
	int64_t now_ms;
} pipeline_post;

typedef struct pipeline_timing {
	double media_ms;
	double publish_ms;
} pipeline_timing;

/* Transcodes and publishes. Returns 0 or the error of media_transcode_file
 * or publish_post (err holds one line naming the cause); nothing is stored
 * on error. *input_fault is set to 1 when the recording or the request is
 * to blame (bad, too long, silent file; bad text), 0 when we are (encoder,
 * memory, store). */
int pipeline_run(const pipeline *p, store *st, const pipeline_post *post, publish_result *res,
                 pipeline_timing *timing, int *input_fault, char *err, size_t errlen);

/* Checks post text: valid UTF-8, at most max_chars code points, no control
 * characters but newline and tab. Returns 0 or SAYIN_EINVAL with err. */
int pipeline_check_text(const pipeline *p, const char *text, size_t len, char *err, size_t errlen);

#endif

/* pipeline: settings in, a committed post out (media, then publish). */
#include "pipeline.h"
#include "site.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads --loudness-target: a decimal number of LUFS. */
static int get_loudness_target(const config *cfg, double *out, char *err, size_t errlen)
{
	const char *v = config_get(cfg, "loudness-target");
	char *end = NULL, where[512];
	double d;

	errno = 0;
	d = v != NULL ? strtod(v, &end) : 0;
	if (v == NULL || end == v || *end != '\0' || errno != 0 || !(d >= -60.0 && d <= -5.0)) {
		config_describe(cfg, "loudness-target", where, sizeof(where));
		snprintf(err, errlen, "%s: '%s' is not a loudness in LUFS from -60 to -5", where,
		         v ? v : "");
		return SAYIN_ECONFIG;
	}
	*out = d;
	return 0;
}

static int get_on_off(const config *cfg, const char *name, int *out, char *err, size_t errlen)
{
	const char *v = config_get(cfg, name);
	char where[512];

	if (v != NULL && strcmp(v, "on") == 0)
		*out = 1;
	else if (v != NULL && strcmp(v, "off") == 0)
		*out = 0;
	else {
		config_describe(cfg, name, where, sizeof(where));
		snprintf(err, errlen, "%s: '%s' is not on or off", where, v ? v : "");
		return SAYIN_ECONFIG;
	}
	return 0;
}

/* The public base URL, without a trailing slash. */
static void public_base(const config *cfg, char *buf, size_t len)
{
	const char *url = config_get(cfg, "public-url");
	size_t n;
	if (url != NULL && *url != '\0')
		snprintf(buf, len, "%s", url);
	else
		snprintf(buf, len, "http://%s", config_get(cfg, "listen"));
	n = strlen(buf);
	while (n > 0 && buf[n - 1] == '/')
		buf[--n] = '\0';
}

int pipeline_configure(pipeline *p, const config *cfg, char *err, size_t errlen)
{
	uint64_t bitrate, feed_items, page_items, waveform_points, aac_bitrate, max_duration_s;
	int aac_fallback = 1;
	media_transcode_options *m = &p->media;

	memset(p, 0, sizeof(*p));
	if (config_get_u64(cfg, "bitrate", 6000, 510000, &bitrate, err, errlen) != 0 ||
	    config_get_u64(cfg, "feed-items", 1, 1000, &feed_items, err, errlen) != 0 ||
	    config_get_u64(cfg, "feed-page-items", 1, 1000, &page_items, err, errlen) != 0 ||
	    config_get_size(cfg, "max-input-bytes", 1, UINT64_MAX, &m->max_input_bytes, err,
	                    errlen) != 0 ||
	    config_get_u64(cfg, "max-duration", 1, 24 * 3600, &max_duration_s, err, errlen) != 0 ||
	    config_get_u64(cfg, "decode-timeout-ms", 100, 24 * 3600 * 1000, &m->decode_timeout_ms,
	                   err, errlen) != 0 ||
	    config_get_size(cfg, "decode-memory", 16 << 20, UINT64_MAX, &m->decoder_memory, err,
	                    errlen) != 0 ||
	    config_get_u64(cfg, "waveform-points", 10, MEDIA_MAX_WAVEFORM_POINTS, &waveform_points,
	                   err, errlen) != 0 ||
	    config_get_u64(cfg, "aac-bitrate", MEDIA_MIN_AAC_BITRATE, MEDIA_MAX_AAC_BITRATE,
	                   &aac_bitrate, err, errlen) != 0 ||
	    config_get_u64(cfg, "max-text", 1, 100000, &p->max_text_chars, err, errlen) != 0 ||
	    get_on_off(cfg, "aac-fallback", &aac_fallback, err, errlen) != 0 ||
	    get_loudness_target(cfg, &m->loudness_target, err, errlen) != 0)
		return SAYIN_ECONFIG;
	m->aac.coder = config_get(cfg, "aac-coder");
	if (!media_aac_coder_valid(m->aac.coder)) {
		char where[512];
		config_describe(cfg, "aac-coder", where, sizeof(where));
		snprintf(err, errlen, "%s: '%s' is not fast or twoloop", where,
		         m->aac.coder ? m->aac.coder : "");
		return SAYIN_ECONFIG;
	}
	public_base(cfg, p->base_url, sizeof(p->base_url));
	{
		char why[512];
		if (config_check_url(p->base_url, why, sizeof(why), &p->insecure_url) != 0) {
			snprintf(err, errlen, "public URL: %s", why);
			return SAYIN_ECONFIG;
		}
	}
	if (site_record(cfg, p->base_url, &p->site_record) != 0) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	m->max_duration_ms = max_duration_s * 1000;
	m->log_level = config_get(cfg, "log-level");
	m->opus = (media_opus_options){ .bitrate = (int)bitrate, .complexity = -1 };
	m->waveform_points = (unsigned)waveform_points;
	m->no_fallback = !aac_fallback;
	m->aac.bitrate = (int)aac_bitrate;
	p->publish = (publish_settings){ .base_url = p->base_url,
		                         .feed_items = (size_t)feed_items,
		                         .page_items = (size_t)page_items,
		                         .create_authors = 1 };
	if (delivery_targets_configure(cfg, &p->targets, err, errlen) != 0)
		return SAYIN_ECONFIG;
	p->publish.targets = delivery_targets_list(p->targets, &p->publish.n_targets);
	if (crosspost_accounts_load(config_get(cfg, "social-accounts"), &p->accounts, err,
	                            errlen) != 0)
		return SAYIN_ECONFIG;
	p->publish.crosspost_enabled = crosspost_enabled;
	p->publish.crosspost_arg = p->accounts;
	p->publish.site_record = p->site_record;
	return 0;
}

void pipeline_free(pipeline *p)
{
	delivery_targets_free(p->targets);
	p->targets = NULL;
	crosspost_accounts_free(p->accounts);
	p->accounts = NULL;
	p->publish.targets = NULL;
	p->publish.n_targets = 0;
	free(p->site_record);
	p->site_record = NULL;
	p->publish.site_record = NULL;
}

int pipeline_check_text(const pipeline *p, const char *text, size_t len, char *err, size_t errlen)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t chars = 0, i = 0;

	while (i < len) {
		unsigned c = s[i], need;
		uint32_t cp;
		if (c < 0x80) {
			if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) {
				snprintf(err, errlen, "text holds a control character (byte %zu)", i);
				return SAYIN_EINVAL;
			}
			i++;
			chars++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			cp = c & 0x07;
		} else {
			goto bad;
		}
		if (i + need >= len)
			goto bad;
		for (unsigned k = 1; k <= need; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				goto bad;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		/* Overlong forms, surrogates and values past U+10FFFF. */
		if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			goto bad;
		/* The C1 controls, U+0080..U+009F: no text means them (NEL would
		 * break lines only in some renderers). */
		if (cp <= 0x9f) {
			snprintf(err, errlen, "text holds a control character (byte %zu)", i);
			return SAYIN_EINVAL;
		}
		i += need + 1;
		chars++;
	}
	if (chars > p->max_text_chars) {
		snprintf(err, errlen, "text is %zu characters long; the limit is %llu", chars,
		         (unsigned long long)p->max_text_chars);
		return SAYIN_EINVAL;
	}
	return 0;
bad:
	snprintf(err, errlen, "text is not valid UTF-8 (byte %zu)", i);
	return SAYIN_EINVAL;
}

int pipeline_run(const pipeline *p, store *st, const pipeline_post *post, publish_result *res,
                 pipeline_timing *timing, int *input_fault, char *err, size_t errlen)
{
	media_transcode_options mopt = p->media;
	media_result media = { 0 };
	media_comment comments[2] = { { "ARTIST", post->author },
		                      { "TITLE", post->text ? post->text : "" } };
	double t0 = clock_mono_ms_f(), t1;
	int rc;

	*input_fault = 1;
	if (post->text != NULL) {
		rc = pipeline_check_text(p, post->text, strlen(post->text), err, errlen);
		if (rc != 0)
			return rc;
	}
	/* The author and text go into OpusTags: the same recording with another
	 * text is another object. */
	mopt.opus.comments = comments;
	mopt.opus.n_comments = post->text ? 2 : 1;
	/* The store copies the streams from their files: memory does not grow
	 * with the recording's length. */
	mopt.keep_files = 1;
	rc = media_transcode_file(post->file, &mopt, &media, err, errlen);
	t1 = clock_mono_ms_f();
	if (timing != NULL)
		timing->media_ms = t1 - t0;
	if (rc != 0) {
		/* The recording's fault, except ours (encoder, memory, bad options). */
		if (rc == SAYIN_EENCODE || rc == -ENOMEM || rc == SAYIN_EINVAL || rc == -EMFILE ||
		    rc == -ENOSPC || rc == -EAGAIN)
			*input_fault = 0;
		return rc;
	}
	publish_file opus = { media.opus_file.fd, media.opus_file.len };
	publish_file m4a = { media.m4a_file.fd, media.m4a_file.len };
	publish_input in = { .author = post->author, .text = post->text, .audio_file = &opus,
		             .duration = media.duration,
		             .input_format = media.input_format, .input_rate = media.input_rate,
		             .input_channels = media.input_channels, .now_ms = post->now_ms,
		             .has_loudness = 1, .input_lufs = media.input_lufs,
		             .gain_db = media.gain_db, .true_peak_dbtp = media.true_peak_dbtp,
		             .output_lufs = media.output_lufs, .waveform = media.waveform.data,
		             .waveform_len = media.waveform.len,
		             .waveform_points = media.waveform_length,
		             .fallback_file = m4a.len > 0 ? &m4a : NULL,
		             .idempotency_key = post->idempotency_key,
		             .request_sha256 = post->request_sha256, .crosspost = post->crosspost };
	rc = publish_post(st, &p->publish, &in, res, err, errlen);
	if (timing != NULL)
		timing->publish_ms = clock_mono_ms_f() - t1;
	*input_fault = rc == SAYIN_EINVAL;
	if (rc == 0)
		log_info("post: %s: media %.1f ms, publish %.1f ms (objects %.1f, feed %.1f, page %.1f, "
		         "commit %.1f) for %.1f s of %s, %.1f LUFS, gain %+.1f dB",
		         res->id, t1 - t0, clock_mono_ms_f() - t1, res->ms_objects, res->ms_feed,
		         res->ms_pages, res->ms_commit, res->duration, media.input_format,
		         media.input_lufs, media.gain_db);
	media_result_free(&media);
	return rc;
}

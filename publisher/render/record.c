/* record: the post record's one writer and one view (see record.h). */
#include "render/record.h"

#include "core/error.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>

/* 0.01 dB: more digits would only be noise. */
static double centi(double x)
{
	return round(x * 100) / 100;
}

/* The loudness object, or NULL when out of memory. */
static json_t *loudness_new(const record_post *p)
{
	json_t *l = json_pack("{s:f, s:f, s:f}", "input_lufs", centi(p->input_lufs), "gain_db",
	                      centi(p->gain_db), "true_peak_dbtp", centi(p->true_peak_dbtp));

	if (l != NULL && isfinite(p->output_lufs) &&
	    json_object_set_new(l, "output_lufs", json_real(centi(p->output_lufs))) != 0) {
		json_decref(l);
		l = NULL;
	}
	return l;
}

json_t *record_new(const record_post *p)
{
	json_t *rec = json_pack(
		"{s:s, s:s, s:I, s:s, s:s, s:I, s:{s:s, s:s, s:I, s:f}, s:{s:s, s:i, s:i}}", "id",
		p->id, "author", p->author, "seq", (json_int_t)p->seq, "text",
		p->text ? p->text : "", "date_published", p->date, "created_ms",
		(json_int_t)p->created_ms, "audio", "sha256", p->audio_sha256, "mime_type",
		p->audio_mime, "size_in_bytes", (json_int_t)p->audio_size, "duration_in_seconds",
		p->duration, "input", "format", p->input_format ? p->input_format : "unknown",
		"sample_rate", (int)p->input_rate, "channels", (int)p->input_channels);

	if (rec == NULL)
		return NULL;
	/* -inf (silence) has no JSON: no loudness then. */
	if (p->has_loudness && isfinite(p->input_lufs) && isfinite(p->gain_db) &&
	    isfinite(p->true_peak_dbtp) && json_object_set_new(rec, "loudness", loudness_new(p)) != 0)
		goto fail;
	if (p->waveform_sha256 != NULL &&
	    json_object_set_new(rec, "waveform",
	                        json_pack("{s:s, s:I, s:i}", "sha256", p->waveform_sha256,
	                                  "size_in_bytes", (json_int_t)p->waveform_size, "points",
	                                  (int)p->waveform_points)) != 0)
		goto fail;
	if (p->card_sha256 != NULL &&
	    json_object_set_new(rec, "card", json_pack("{s:s}", "sha256", p->card_sha256)) != 0)
		goto fail;
	if (p->fallback_sha256 != NULL &&
	    json_object_set_new(rec, "fallback",
	                        json_pack("{s:s, s:s, s:I}", "sha256", p->fallback_sha256,
	                                  "mime_type", p->fallback_mime, "size_in_bytes",
	                                  (json_int_t)p->fallback_size)) != 0)
		goto fail;
	return rec;
fail:
	json_decref(rec);
	return NULL;
}

static int is_hex(const char *s)
{
	if (s == NULL || *s == '\0')
		return 0;
	for (; *s != '\0'; s++) {
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return 0;
	}
	return 1;
}

/* Post ids go into paths and element ids: letters, digits, '-', '_'. */
static int is_id(const char *s)
{
	if (s == NULL || *s == '\0')
		return 0;
	for (; *s != '\0'; s++) {
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      *s == '-' || *s == '_'))
			return 0;
	}
	return 1;
}

/* The "sha256" of an optional sub-object; *ok becomes 0 when the key is
 * there (and not null) without a hex one. */
static const char *optional_hash(const json_t *post, const char *key, int *ok)
{
	const json_t *o = json_object_get(post, key);
	const char *hex = json_string_value(json_object_get(o, "sha256"));

	if (o != NULL && !json_is_null(o) && !is_hex(hex))
		*ok = 0;
	return hex;
}

int record_view_read(const json_t *post, record_view *v)
{
	const json_t *audio = json_object_get(post, "audio");
	const json_t *text = json_object_get(post, "text");
	const json_t *duration = json_object_get(audio, "duration_in_seconds");
	const json_t *fallback = json_object_get(post, "fallback");
	const json_t *loudness = json_object_get(post, "loudness");
	const json_t *lufs = json_object_get(loudness, "output_lufs");
	int ok = json_is_object(post) && json_is_object(audio);

	v->id = json_string_value(json_object_get(post, "id"));
	v->author = json_string_value(json_object_get(post, "author"));
	v->seq = (uint64_t)json_integer_value(json_object_get(post, "seq"));
	v->text = json_is_string(text) ? json_string_value(text) : "";
	v->date = json_string_value(json_object_get(post, "date_published"));
	v->audio_sha256 = json_string_value(json_object_get(audio, "sha256"));
	v->audio_mime = json_string_value(json_object_get(audio, "mime_type"));
	v->audio_size = json_integer_value(json_object_get(audio, "size_in_bytes"));
	v->duration = json_number_value(duration);
	v->fallback_sha256 = optional_hash(post, "fallback", &ok);
	v->fallback_mime = json_string_value(json_object_get(fallback, "mime_type"));
	v->fallback_size = json_integer_value(json_object_get(fallback, "size_in_bytes"));
	v->waveform_sha256 = optional_hash(post, "waveform", &ok);
	v->card_sha256 = optional_hash(post, "card", &ok);
	v->has_output_lufs = json_is_number(lufs);
	v->output_lufs = json_number_value(lufs);
	v->loudness = loudness;

	if (!is_id(v->id) || v->date == NULL || !is_hex(v->audio_sha256) || v->audio_mime == NULL)
		ok = 0;
	if (text != NULL && !json_is_string(text))
		ok = 0;
	if (duration != NULL &&
	    (!json_is_number(duration) || !isfinite(v->duration) || v->duration < 0))
		ok = 0;
	if (v->fallback_sha256 != NULL && v->fallback_mime == NULL)
		ok = 0;
	return ok ? 0 : SAYIN_ECORRUPT;
}

json_t *record_author_new(const char *handle, int64_t created_ms)
{
	return json_pack("{s:s, s:s, s:I, s:I}", "handle", handle, "name", handle, "created_ms",
	                 (json_int_t)created_ms, "last_seq", (json_int_t)0);
}

int record_author_read(const json_t *author, record_author *v)
{
	v->handle = json_string_value(json_object_get(author, "handle"));
	v->name = json_string_value(json_object_get(author, "name"));
	v->bio = json_string_value(json_object_get(author, "bio"));
	v->created_ms = (int64_t)json_integer_value(json_object_get(author, "created_ms"));
	v->last_seq = (uint64_t)json_integer_value(json_object_get(author, "last_seq"));
	return v->name != NULL ? 0 : SAYIN_ECORRUPT;
}

int record_author_set_name(json_t *author, const char *name)
{
	return json_object_set_new(author, "name", json_string(name)) == 0 ? 0 : -ENOMEM;
}

int record_author_set_last_seq(json_t *author, uint64_t last_seq)
{
	return json_object_set_new(author, "last_seq", json_integer((json_int_t)last_seq)) == 0
	               ? 0
	               : -ENOMEM;
}

int record_author_set_bio(json_t *author, const char *bio)
{
	if (*bio == '\0') {
		json_object_del(author, "bio");
		return 0;
	}
	return json_object_set_new(author, "bio", json_string(bio)) == 0 ? 0 : -ENOMEM;
}

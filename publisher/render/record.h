/* record: the post record, the JSON document publish stores for every post
 * (the store's posts table), and the author record (the authors table): the
 * one file that knows their fields. The post record has one writer,
 * record_new (publish), and one view, record_view_read (the feed, the
 * pages, the API, a deletion); the author record likewise
 * record_author_new / record_author_read (publish, the author list).
 * Pure: no store, no clock. Threading: no shared state; any thread.
 *
 * The record, as stored (keys in this order):
 *   { "id", "author", "seq", "text", "date_published" (RFC 3339), "created_ms",
 *     "audio": { "sha256", "mime_type", "size_in_bytes", "duration_in_seconds" },
 *     "input": { "format", "sample_rate", "channels" },
 *   and, when the post has them:
 *     "loudness": { "input_lufs", "gain_db", "true_peak_dbtp", "output_lufs" },
 *     "waveform": { "sha256", "size_in_bytes", "points" },
 *     "card": { "sha256" },
 *     "fallback": { "sha256", "mime_type", "size_in_bytes" } } */
#ifndef SAYIN_RECORD_H
#define SAYIN_RECORD_H

#include <jansson.h>
#include <stdint.h>

/* What a post record is made of. Strings are borrowed for the call; NULL
 * for an optional part (loudness: has_loudness 0) leaves it out. */
typedef struct record_post {
	const char *id;
	const char *author;
	uint64_t seq;
	const char *text;         /* NULL: "" */
	const char *date;         /* date_published, RFC 3339 */
	int64_t created_ms;
	const char *audio_sha256; /* hex */
	const char *audio_mime;
	uint64_t audio_size;
	double duration;          /* seconds */
	const char *input_format; /* NULL: "unknown" */
	unsigned input_rate;
	unsigned input_channels;
	int has_loudness;         /* 1: the loudness object is written, when its three
	                             measures are finite (output_lufs when it is) */
	double input_lufs, gain_db, true_peak_dbtp, output_lufs;
	const char *waveform_sha256; /* NULL: no waveform */
	uint64_t waveform_size;
	unsigned waveform_points;
	const char *card_sha256;     /* NULL: no share card */
	const char *fallback_sha256; /* NULL: no fallback rendition */
	const char *fallback_mime;
	uint64_t fallback_size;
} record_post;

/* A new record (the caller's reference), or NULL when out of memory or when
 * text is not valid UTF-8 (jansson refuses it). Loudness measures are
 * rounded to 0.01 dB. Store it with jsonstore_dumps: the canonical form. */
json_t *record_new(const record_post *p);

/* A post record as its readers see it. Every pointer is borrowed from the
 * record and lives as long as the record does. A field that is absent or
 * of the wrong type reads as NULL (strings, loudness), 0 (numbers), or ""
 * (text). */
typedef struct record_view {
	const char *id;
	const char *author;
	uint64_t seq;
	const char *text;            /* never NULL */
	const char *date;            /* date_published */
	const char *audio_sha256;
	const char *audio_mime;
	json_int_t audio_size;
	double duration;             /* seconds */
	const char *fallback_sha256; /* NULL: no fallback rendition */
	const char *fallback_mime;
	json_int_t fallback_size;
	const char *waveform_sha256; /* NULL: no waveform */
	const char *card_sha256;     /* NULL: no share card */
	int has_output_lufs;         /* output_lufs is the published loudness */
	double output_lufs;
	const json_t *loudness;      /* the loudness object as stored, or NULL */
} record_view;

/* Reads post into *v, which is filled in every case. Returns 0 when the
 * record is complete and well-formed (what a page needs to render it: a
 * path-safe id of [A-Za-z0-9_-], a date, a hex audio sha256 and its type, a
 * text string or none, a finite duration >= 0 or none, and each of
 * fallback, waveform and card absent, null, or with a hex sha256, the
 * fallback with its type), or SAYIN_ECORRUPT. A reader that needs less
 * (the feed, the API, a deletion) may use v after SAYIN_ECORRUPT and check
 * only the fields it uses. */
int record_view_read(const json_t *post, record_view *v);

/* The author record, as stored (keys in this order):
 *   { "handle", "name", "created_ms", "last_seq" [, "bio"] }
 * A new author's name is its handle until an operator sets one. Returns the
 * record (the caller's), or NULL when out of memory. */
json_t *record_author_new(const char *handle, int64_t created_ms);

/* An author record as its readers see it; pointers borrowed from the
 * record. A field that is absent or of the wrong type reads as NULL or 0. */
typedef struct record_author {
	const char *handle;
	const char *name;
	const char *bio;            /* NULL: none */
	int64_t created_ms;
	uint64_t last_seq;          /* the newest post's seq; 0 before the first */
} record_author;

/* Reads author into *v (filled in every case). Returns 0, or
 * SAYIN_ECORRUPT when the name is missing. */
int record_author_read(const json_t *author, record_author *v);

/* Set the name or last_seq of an author record. Return 0 or -ENOMEM. */
int record_author_set_name(json_t *author, const char *name);
int record_author_set_last_seq(json_t *author, uint64_t last_seq);
/* Sets the bio; "" removes it. 0 or -ENOMEM. */
int record_author_set_bio(json_t *author, const char *bio);

#endif

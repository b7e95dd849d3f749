/* publish: the write transactions. A post's objects (audio, fallback audio,
 * waveform, feed, page), its names and its record are written in ONE store
 * write transaction, so a reader sees all of a post or none of it, and a
 * failure leaves nothing; deletions, authors and rebuilds likewise.
 *
 * Threading: any thread; the store serializes writers. Media work (decoding,
 * encoding) happens before, outside the transaction. */
#ifndef SAYIN_PUBLISH_H
#define SAYIN_PUBLISH_H

#include "core/store.h"

#include <stddef.h>
#include <stdint.h>

#define PUBLISH_ID_LEN 26       /* time-ordered, URL-safe: see publish_new_id */
#define PUBLISH_HANDLE_MAX 32
#define PUBLISH_OPUS_TYPE "audio/ogg; codecs=opus"
#define PUBLISH_M4A_TYPE "audio/mp4"            /* the fallback rendition */
#define PUBLISH_WAVEFORM_TYPE "application/json" /* audiowaveform JSON */

/* A delivery target (a configured CDN driver) and its stage (cdn.h): the
 * publish transaction enqueues one outbox job per target, each waiting for
 * the jobs of the earlier stages. */
typedef struct publish_target {
	const char *name;
	int stage;
} publish_target;

typedef struct publish_settings {
	const char *base_url;   /* public base of every URL, no trailing slash */
	size_t feed_items;      /* H: posts in the head feed.json (and the author page) */
	size_t page_items;      /* P: posts in a full archive page */
	int create_authors;     /* 1: a post by an unknown handle creates its author
	                           (the CLI); 0: SAYIN_ENOTFOUND (the API) */
	const publish_target *targets; /* NULL: no delivery jobs */
	size_t n_targets;
	/* Cross-posting: a post enqueues one job per network (target "x",
	 * "facebook") for which crosspost_enabled says the author has an
	 * enabled account, narrowed by publish_input.crosspost; each waits for
	 * the post's CDN jobs, so the network's card crawler finds the page
	 * live. NULL: none. */
	int (*crosspost_enabled)(void *arg, const char *author, const char *network);
	void *crosspost_arg;
	/* The site identity these settings publish (site.h, site_record):
	 * every write transaction records it when the store has none yet (the
	 * first publish), and fails with SAYIN_ECONFIG when the store records
	 * another. NULL: not checked (tests, benchmarks). */
	const char *site_record;
} publish_settings;

#define PUBLISH_NETWORKS { "x", "facebook" }

/* Bytes in a file: len bytes of fd from offset 0 (the store copies them
 * without reading them into memory). */
typedef struct publish_file {
	int fd;
	uint64_t len;
} publish_file;

typedef struct publish_input {
	const char *author;       /* handle; created on first post */
	const char *text;         /* UTF-8 or NULL */
	const void *audio;        /* the encoded Ogg Opus stream */
	size_t audio_len;
	double duration;          /* seconds */
	const char *input_format; /* e.g. "wav/pcm_s16le" */
	unsigned input_rate;
	unsigned input_channels;
	int64_t now_ms;           /* publication time, unix ms */
	int has_loudness;         /* 1: the three below go into the record */
	double input_lufs;        /* measured integrated loudness of the input */
	double gain_db;           /* gain applied to reach the target */
	double true_peak_dbtp;    /* true peak of the normalized signal */
	double output_lufs;       /* with has_loudness: loudness of the published audio */
	const void *waveform;     /* audiowaveform JSON of the audio, or NULL: none */
	size_t waveform_len;
	unsigned waveform_points; /* its length (pairs) */
	const void *fallback;     /* the AAC-in-M4A rendition, or NULL: none */
	size_t fallback_len;
	/* publish_post only: when not NULL, the audio (fallback) is in this
	 * file, and audio and audio_len (fallback and fallback_len) are not
	 * used. */
	const publish_file *audio_file;
	const publish_file *fallback_file;
	/* With an idempotency key (from the API), the response is recorded
	 * under "HANDLE\nKEY" in the same transaction, with request_sha256
	 * (hex, identifies the request), so a retry finds it. */
	const char *idempotency_key;
	const char *request_sha256;
	/* Networks to cross-post to, comma-separated ("x,facebook"); NULL:
	 * every network the author has enabled; "": none. Unknown names:
	 * SAYIN_EINVAL. */
	const char *crosspost;
} publish_input;

typedef struct publish_result {
	char id[PUBLISH_ID_LEN + 1];
	char audio_hex[STORE_HASH_HEX_LEN + 1];
	uint64_t audio_size;
	double duration;
	int audio_was_new;        /* 0: identical audio was already stored */
	int has_waveform;         /* the two below are set */
	char waveform_hex[STORE_HASH_HEX_LEN + 1];
	uint64_t waveform_size;
	int has_fallback;         /* the two below are set */
	char fallback_hex[STORE_HASH_HEX_LEN + 1];
	uint64_t fallback_size;
	char card_hex[STORE_HASH_HEX_LEN + 1]; /* the share card PNG (/a/HASH.png) */
	uint64_t seq;             /* the post's number in its author's sequence */
	/* Where the transaction's time went, in milliseconds (monotonic). */
	double ms_objects;        /* audio, fallback, waveform objects and refs */
	double ms_feed;           /* head feed, archive page, author page */
	double ms_pages;          /* post page */
	double ms_commit;         /* store_txn_commit (the fsync) */
} publish_result;

/* Publishes one post: the audio, and when given the waveform (/a/HASH.json)
 * and the fallback rendition (/a/HASH.m4a), each an immutable object
 * referenced by the post, the post record, the author's head feed, the one
 * archive page the post pushes its oldest item into, the author page
 * (/u/HANDLE/), the post page (/p/ID), its embeddable player (/p/ID/embed)
 * and its share card (/a/HASH.png, drawn from the waveform). The work does not depend on how many posts the author has.
 *
 * Feed pages (H = feed_items, P = page_items, n = the author's last seq):
 * the head holds seq n-H+1..n; archive page k holds seq (k-1)P+1 ..
 * min(kP, n-H), newest first, and links page k-1 by next_url; the head links
 * page ceil((n-H)/P). Page k is full, and never changes again except by a
 * deletion, once n-H >= kP. Walking next_url from the head visits every post
 * once.
 *
 * Returns 0, or SAYIN_EINVAL (bad handle or text: err says which),
 * SAYIN_ENOTFOUND (unknown author and !create_authors), SAYIN_ESTOREFULL,
 * or another store error; on any error nothing was written. */
int publish_post(store *st, const publish_settings *set, const publish_input *in,
                 publish_result *out, char *err, size_t errlen);

/* The JSON object that reports a published post (the CLI prints it, the API
 * answers 201 with it): id, url, audio_url, feed_url, fallback_url and
 * waveform_url when present, duration_in_seconds, size_in_bytes. malloc'd
 * into *out; 0 or -ENOMEM. */
int publish_response_json(const char *base_url, const char *author, const publish_result *res,
                          char **out);

/* Creates an author: its record, an empty feed, its author page, and the
 * updated /authors.json. -EEXIST if the handle exists, SAYIN_EINVAL for a
 * bad handle or a name that is empty, longer than 100 characters or not
 * UTF-8. */
int publish_author_add(store *st, const publish_settings *set, const char *handle,
                       const char *name, int64_t now_ms, char *err, size_t errlen);

/* Rewrites every document of an author from the post records: the head
 * feed, every archive page, the author page. O(posts): for a change of
 * feed-items, feed-page-items or public-url, and after publish_import. One
 * transaction; SAYIN_ENOTFOUND for an unknown author. */
int publish_rebuild(store *st, const publish_settings *set, const char *handle, int64_t now_ms,
                    char *err, size_t errlen);

/* Rewrites every document of the site from the records: for each author
 * (one transaction each) the head feed, every archive page, the author
 * page, and every post's page and embed; then /authors.json. Each
 * transaction enqueues the purges of what it wrote. For a change of the
 * site's settings (site set): O(posts). Audio, waveforms and share cards
 * are immutable objects and are not re-made. *authors and *posts count
 * what was rebuilt. On error the authors already done stay rebuilt (run it
 * again). */
int publish_rebuild_all(store *st, const publish_settings *set, int64_t now_ms, size_t *authors,
                        size_t *posts, char *err, size_t errlen);

/* Imports count posts of in->author made of in's audio, renditions and
 * text (the objects are stored once), ids and dates from in->now_ms on, one
 * millisecond apart, in transactions of at most 10,000 posts, WITHOUT
 * rendering feeds or pages: call publish_rebuild afterwards. For bulk
 * migrations and for benchmarks that need an author with many posts. */
int publish_import(store *st, const publish_settings *set, const publish_input *in, size_t count,
                   char *err, size_t errlen);

typedef struct publish_deleted {
	char author[PUBLISH_HANDLE_MAX + 1];
	uint64_t seq;
	unsigned objects_deleted; /* objects no other post referred to */
	unsigned objects_kept;    /* shared with another post */
} publish_deleted;

/* Deletes a post in one transaction: its record and index entry, its post
 * page, its audio, fallback and waveform objects unless another post still
 * refers to them, and rewrites the head feed or the one archive page that
 * held it, and the author page. With author != NULL the post must be that
 * author's (-EPERM otherwise). Returns 0, SAYIN_ENOTFOUND, -EPERM,
 * SAYIN_ECORRUPT or a store error; on error nothing changed. */
int publish_delete(store *st, const publish_settings *set, const char *id, const char *author,
                   int64_t now_ms, publish_deleted *out, char *err, size_t errlen);

#define PUBLISH_BIO_MAX 300 /* characters of an author's bio */

/* Changes an author's name (NULL: kept) and bio (NULL: kept, "": removed;
 * UTF-8, at most PUBLISH_BIO_MAX characters, newlines allowed), then
 * rewrites every document that shows them: the head feed (its
 * "description" is the bio), every archive page, the author page (which
 * shows the bio), each post's page and embed, /authors.json; and enqueues
 * their purges. One transaction, O(posts); *posts counts the post pages.
 * SAYIN_EINVAL (err says which), SAYIN_ENOTFOUND, or a store error. */
int publish_author_edit(store *st, const publish_settings *set, const char *handle,
                        const char *name, const char *bio, int64_t now_ms, size_t *posts,
                        char *err, size_t errlen);

typedef struct publish_removed {
	size_t posts;             /* posts deleted */
	unsigned objects_deleted; /* objects no other author's post referred to */
	unsigned objects_kept;    /* shared with another post */
} publish_removed;

/* Removes an author in one transaction: every post as publish_delete
 * deletes one (record, objects unless shared, page and embed), the head
 * feed, every archive page, the author page, the author record and its
 * idempotency keys; then in_txn(arg, txn) when not NULL (the caller
 * revokes the tokens there), the rewritten /authors.json and the purges
 * of everything removed. Tombstones (store_put_gone) on /u/HANDLE and on
 * each /p/ID make the origin answer 410 Gone for them, and the handle is
 * never created again (publish_author_add and a creating post refuse it
 * with -EEXIST). Cross-posts already made are not touched. O(posts).
 * Returns 0, SAYIN_ENOTFOUND, SAYIN_ECORRUPT, in_txn's error or a store
 * error; on error nothing changed. */
int publish_author_remove(store *st, const publish_settings *set, const char *handle,
                          int64_t now_ms, int (*in_txn)(void *arg, store_txn *txn), void *arg,
                          publish_removed *out, char *err, size_t errlen);

/* 1 if handle is 1..32 of [a-z0-9_], else 0. */
int publish_valid_handle(const char *handle);

/* A new post id: 10 Crockford base-32 digits of milliseconds since the epoch
 * then 16 of randomness from the OS (80 bits), lowercase. Ids sort in time
 * order; two in the same millisecond collide with odds of 2^-80.
 * Returns 0 or a negative errno when the OS has no randomness to give. */
int publish_new_id(int64_t now_ms, char id[PUBLISH_ID_LEN + 1]);

/* RFC 3339 UTC timestamp with milliseconds; buf holds at least 32 bytes. */
void publish_format_time(int64_t now_ms, char *buf, size_t len);

#endif

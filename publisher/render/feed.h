/* feed: JSON Feed 1.1 documents built from post records (pages: page.h).
 * Pure: records in, bytes out; no store, no network, no clock.
 *
 * Post records are read through render/record.h, the one file that knows
 * their fields.
 *
 * A feed item lists the Opus audio first and the fallback (AAC in M4A)
 * second, both with the same "title": JSON Feed's way of saying "the same
 * thing in another format". The item's extension object "_sayin" carries
 * "waveform_url" (absolute) and "loudness_lufs" (the published loudness).
 *
 * Threading: no shared state. Errors: 0, -ENOMEM, or SAYIN_ECORRUPT when a
 * record lacks a field the output needs. Output buffers are malloc'd and
 * owned by the caller (free()). */
#ifndef SAYIN_FEED_H
#define SAYIN_FEED_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define FEED_VERSION "https://jsonfeed.org/version/1.1"
#define FEED_CONTENT_TYPE "application/feed+json"
#define FEED_HTML_TYPE "text/html; charset=utf-8"
#define FEED_TITLE_MAX 80       /* characters of the text an attachment title keeps */
#define FEED_DEFAULT_TITLE "Voice post"

typedef struct feed_author {
	const char *handle;
	const char *name;  /* display name */
	const char *bio;   /* a short description, or NULL: none */
} feed_author;

/* URL paths (no base): written into buf of size len; returns 0 or -ENOSPC. */
int feed_path_audio(char *buf, size_t len, const char *sha256_hex);    /* /a/HASH.opus */
int feed_path_fallback(char *buf, size_t len, const char *sha256_hex); /* /a/HASH.m4a */
int feed_path_waveform(char *buf, size_t len, const char *sha256_hex); /* /a/HASH.json */
int feed_path_feed(char *buf, size_t len, const char *handle);
int feed_path_author(char *buf, size_t len, const char *handle);
int feed_path_post(char *buf, size_t len, const char *id);
/* /u/HANDLE/feed/PAGE.json: archive page PAGE (1 = the oldest posts). */
int feed_path_page(char *buf, size_t len, const char *handle, uint64_t page);
#define FEED_PATH_AUTHORS "/authors.json"

/* One page of the author's feed (the head feed.json or an archive page):
 * posts are records, newest first. base_url has no trailing slash
 * ("https://cdn.example.com"). next_url is the absolute URL of the page of
 * older posts, or NULL on the last page. feed_url is always the head's: it
 * names the feed, whichever page this is. */
int feed_author_json(const char *base_url, const feed_author *author, json_t *const *posts,
                     size_t n_posts, const char *next_url, char **out, size_t *out_len);

/* /authors.json: { "authors": [ { "handle", "name", "feed_url",
 * "home_page_url" } ] } in the order given. */
int feed_authors_json(const char *base_url, const feed_author *authors, size_t n, char **out,
                      size_t *out_len);

#endif

/* page: the HTML pages fans open (post, embeddable player, author; page.c)
 * and the PNG share card social networks show (card.c), built from post
 * records. Pure: records in, bytes out; no store, no network, no clock.
 *
 * Post records are read through render/record.h; a page needs the record to
 * be complete and well-formed as record_view_read says. A record with a
 * share card (/a/HASH.png) gets og:image and twitter:image.
 *
 * Every URL in a page is absolute: base_url (no trailing slash, e.g.
 * "https://cdn.example.com") + path. The pages carry one inline script and
 * one inline style (render/assets/, see assets.h), allowed by a
 * Content-Security-Policy meta tag by their SHA-256, and load nothing from
 * anywhere but the page's own origin and base_url: no external scripts, no
 * third-party requests. The script draws
 * the waveform (fetched from the URL in data-waveform), gives each <audio> a
 * labelled play/pause button and a seek slider (arrow keys, Home, End), and
 * on the author page loads older posts from the JSON Feed archive pages.
 *
 * Threading: no shared state; any thread may call. Errors: 0, -ENOMEM, or
 * SAYIN_ECORRUPT when a record (or the waveform JSON) lacks a field the output
 * needs or has one of the wrong type. On error *out is left unchanged.
 * Output buffers are malloc'd and owned by the caller (free()). */
#ifndef SAYIN_PAGE_H
#define SAYIN_PAGE_H

#include "render/feed.h"

#include <jansson.h>
#include <stddef.h>

#define PAGE_HTML_TYPE "text/html; charset=utf-8"
#define PAGE_CARD_TYPE "image/png"
#define PAGE_CARD_WIDTH 1200 /* the size Open Graph and X show large */
#define PAGE_CARD_HEIGHT 630
/* The player card's frame (twitter:player:width/height); the embed page
 * fills whatever frame it gets. */
#define PAGE_EMBED_WIDTH 480
#define PAGE_EMBED_HEIGHT 200

/* /p/ID: the post page: author, text, date, <audio controls
 * preload="metadata"> with the Opus source first and the M4A fallback
 * second, the waveform player, Open Graph and Twitter player card tags, and a
 * link to the author's JSON Feed. */
int page_post_html(const char *base_url, const feed_author *author, const json_t *post,
                   char **out, size_t *out_len);

/* /p/ID/embed: the player card page networks frame (twitter:player): just the
 * author, a line of text and the player. The origin must allow framing it. */
int page_embed_html(const char *base_url, const feed_author *author, const json_t *post,
                    char **out, size_t *out_len);

/* /u/HANDLE/: the author page: posts (records) newest first as in the head
 * feed; older_feed_url is the absolute URL of the next (older) JSON Feed
 * archive page, or NULL when there is none. A "Load older posts" button
 * fetches it and appends its items, following next_url until there is none. */
int page_author_html(const char *base_url, const feed_author *author, json_t *const *posts,
                     size_t n_posts, const char *older_feed_url, char **out, size_t *out_len);

/* The share image (og:image / twitter:image): a PNG of PAGE_CARD_WIDTH x
 * PAGE_CARD_HEIGHT (4-bit palette, a few KiB) drawing the post's waveform
 * from waveform_json (audiowaveform JSON version 1 or 2, as stored: 8- or
 * 16-bit min/max pairs, one channel used), or a plain card when waveform_json
 * is NULL. The same input gives the same bytes (no time, no text chunks).
 * Errors: SAYIN_ECORRUPT for waveform JSON that does not parse or holds no
 * data; -ENOMEM (also for libpng failures, which can only be allocations). */
int page_card_png(const void *waveform_json, size_t waveform_len, unsigned char **out,
                  size_t *out_len);

/* URL paths (no base): written into buf of size len; returns 0 or -ENOSPC. */
int page_path_embed(char *buf, size_t len, const char *id);        /* /p/ID/embed */
int page_path_card(char *buf, size_t len, const char *sha256_hex); /* /a/HASH.png */

/* "libpng X\n", as the linked libpng reports it, into out (for
 * --version; card.c). Returns out. */
const char *card_library_versions(char *out, size_t size);

#endif

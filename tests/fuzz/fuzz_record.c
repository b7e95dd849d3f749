/* fuzz_record: the post and author record readers
 * (publisher/render/record.c) on stored bytes, parsed as the store's
 * readers parse them (core/jsonstore's jsonstore_parse), and what is built
 * from a record: the post, embed and author pages (render/page.c) and the
 * author's JSON Feed (render/feed.c).
 *
 * Checks record.h's promises: a record read as complete has a path-safe
 * id, a date, a hex audio sha256 and type, a finite duration >= 0 and a
 * text; and what it read, written again with record_new, reads back as
 * complete with the same fields. A text holding '<' adds no markup to the
 * pages (the same count of '<' as with a plain text), and the feed is JSON. */
#include "core/jsonstore.h"
#include "render/feed.h"
#include "render/page.h"
#include "render/record.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int same(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void check_complete(const record_view *v)
{
	if (v->id == NULL || strspn(v->id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                                   "0123456789-_") != strlen(v->id) || v->id[0] == '\0')
		abort();
	if (v->date == NULL || v->audio_sha256 == NULL || v->audio_mime == NULL || v->text == NULL)
		abort();
	if (strspn(v->audio_sha256, "0123456789abcdef") != strlen(v->audio_sha256))
		abort();
	if (!isfinite(v->duration) || v->duration < 0)
		abort();
}

/* Writes v back as a record and reads it again. */
static void round_trip(const record_view *v)
{
	const record_post p = {
		.id = v->id, .author = v->author ? v->author : "", .seq = v->seq, .text = v->text,
		.date = v->date, .audio_sha256 = v->audio_sha256, .audio_mime = v->audio_mime,
		.audio_size = (uint64_t)v->audio_size, .duration = v->duration,
		.waveform_sha256 = v->waveform_sha256, .card_sha256 = v->card_sha256,
		.fallback_sha256 = v->fallback_sha256, .fallback_mime = v->fallback_mime,
		.fallback_size = (uint64_t)v->fallback_size,
	};
	json_t *again = record_new(&p);
	record_view w;

	if (again == NULL)
		return; /* out of memory */
	if (record_view_read(again, &w) != 0)
		abort();
	if (!same(w.id, v->id) || !same(w.text, v->text) || !same(w.date, v->date) ||
	    !same(w.audio_sha256, v->audio_sha256) || !same(w.fallback_sha256, v->fallback_sha256) ||
	    !same(w.waveform_sha256, v->waveform_sha256) || !same(w.card_sha256, v->card_sha256))
		abort();
	json_decref(again);
}

static size_t count_lt(const char *html)
{
	size_t n = 0;
	for (; *html != '\0'; html++)
		n += *html == '<';
	return n;
}

/* Renders post's three pages and, when plain is not NULL, the same record
 * with a plain text: the text must not add a single '<' (markup) to any
 * page, whatever it holds. */
static void render_pages(const json_t *post, const json_t *plain, const feed_author *author)
{
	static const char base[] = "https://cdn.example.com";
	size_t lt[3] = { 0 }, len;
	int ok[3];

	for (int pass = 0; pass < (plain ? 2 : 1); pass++) {
		const json_t *rec = pass == 0 ? post : plain;
		for (int k = 0; k < 3; k++) {
			char *html = NULL;
			int rc = k == 0 ? page_post_html(base, author, rec, &html, &len)
			       : k == 1 ? page_embed_html(base, author, rec, &html, &len)
			                : page_author_html(base, author, (json_t *const *)&rec, 1, NULL,
			                                   &html, &len);
			if (pass == 0) {
				ok[k] = rc == 0;
				lt[k] = rc == 0 ? count_lt(html) : 0;
			} else if (ok[k] && rc == 0 && count_lt(html) != lt[k]) {
				abort();
			}
			if (rc == 0)
				free(html);
		}
	}
}

static void render(const json_t *post, const record_view *v)
{
	static const char base[] = "https://cdn.example.com";
	const feed_author author = { .handle = v->author && v->author[0] ? v->author : "ann",
		                        .name = "Ann <b>", .bio = "Says <i>things</i> & more" };
	json_t *plain = NULL, *feed;
	char *out = NULL;
	size_t len = 0;

	if (strchr(v->text, '<') != NULL) {
		plain = json_deep_copy(post);
		if (plain != NULL)
			json_object_set_new(plain, "text", json_string("plain text"));
	}
	render_pages(post, plain, &author);
	json_decref(plain);
	if (feed_author_json(base, &author, (json_t *const *)&post, 1, NULL, &out, &len) == 0) {
		feed = json_loadb(out, len, 0, NULL);
		if (feed == NULL)
			abort();
		json_decref(feed);
		free(out);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *doc = NULL;
	record_view v;
	record_author a;

	if (jsonstore_parse(data, size, &doc) != 0)
		return 0;
	memset(&v, 0, sizeof(v));
	if (record_view_read(doc, &v) == 0) {
		check_complete(&v);
		round_trip(&v);
	} else if (v.text == NULL) {
		abort(); /* "filled in every case": text is never NULL */
	}
	/* Incomplete records too: the renderers must refuse them cleanly. */
	render(doc, &v);
	if (record_author_read(doc, &a) == 0 && a.name == NULL)
		abort();
	json_decref(doc);
	return 0;
}

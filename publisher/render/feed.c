/* feed: JSON Feed 1.1 with jansson, and small static HTML pages. */
#include "render/feed.h"

#include "core/error.h"
#include "core/jsonstore.h"
#include "render/record.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* prefix + arg + suffix into buf, or -ENOSPC. */
static int path_fmt(char *buf, size_t len, const char *prefix, const char *arg, const char *suffix)
{
	int n = snprintf(buf, len, "%s%s%s", prefix, arg, suffix);
	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

/* The paths that are prefix + one argument + suffix (feed.h). */
#define FEED_PATH(name, prefix, suffix)                          \
	int name(char *buf, size_t len, const char *arg)         \
	{                                                        \
		return path_fmt(buf, len, prefix, arg, suffix);  \
	}

FEED_PATH(feed_path_audio, "/a/", ".opus")
FEED_PATH(feed_path_fallback, "/a/", ".m4a")
FEED_PATH(feed_path_waveform, "/a/", ".json")
FEED_PATH(feed_path_feed, "/u/", "/feed.json")
FEED_PATH(feed_path_author, "/u/", "/")
FEED_PATH(feed_path_post, "/p/", "")

int feed_path_page(char *buf, size_t len, const char *handle, uint64_t page)
{
	int n = snprintf(buf, len, "/u/%s/feed/%llu.json", handle, (unsigned long long)page);
	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

/* base_url + path as a new JSON string; NULL on failure. */
static json_t *url_json(const char *base_url, const char *path)
{
	size_t len = strlen(base_url) + strlen(path) + 1;
	char *s = malloc(len);
	json_t *j;

	if (s == NULL)
		return NULL;
	snprintf(s, len, "%s%s", base_url, path);
	j = json_string(s);
	free(s);
	return j;
}

/* The attachments' title: the post text on one line, cut after
 * FEED_TITLE_MAX characters (at a word when one ends near there, then "…"),
 * or FEED_DEFAULT_TITLE for a post without text. text is valid UTF-8
 * (jansson checked it). */
static void make_title(const char *text, char *buf, size_t len)
{
	size_t n = 0, chars = 0, last_space = 0;
	int cut = 0;

	while (*text == ' ' || (*text > 0 && *text < 0x20))
		text++;
	for (const unsigned char *p = (const unsigned char *)text; *p != '\0';) {
		size_t k = *p < 0x80 ? 1 : *p < 0xe0 ? 2 : *p < 0xf0 ? 3 : 4;

		if (chars == FEED_TITLE_MAX) {
			cut = 1;
			break;
		}
		if (n + k + 4 > len)
			break;
		if (k == 1 && (*p < 0x20 || *p == 0x7f)) {
			buf[n++] = ' '; /* newlines and tabs: one line */
		} else {
			for (size_t i = 0; i < k && p[i] != '\0'; i++)
				buf[n++] = (char)p[i];
		}
		if (*p == ' ' || *p < 0x20)
			last_space = n - 1;
		p += k;
		chars++;
	}
	if (cut && last_space > n * 3 / 4)
		n = last_space;
	while (n > 0 && buf[n - 1] == ' ')
		n--;
	if (n == 0) {
		snprintf(buf, len, "%s", FEED_DEFAULT_TITLE);
		return;
	}
	if (cut) {
		memcpy(buf + n, "\xe2\x80\xa6", 3); /* U+2026 ... */
		n += 3;
	}
	buf[n] = '\0';
}

/* A feed item needs less than a page: any id, a date, the audio's hash and
 * type, and the fallback's type when it has one. */
static int item_view_read(const json_t *post, record_view *v)
{
	record_view_read(post, v);
	if (v->id == NULL || v->date == NULL || v->audio_sha256 == NULL || v->audio_mime == NULL)
		return SAYIN_ECORRUPT;
	if (v->fallback_sha256 != NULL && v->fallback_mime == NULL)
		return SAYIN_ECORRUPT;
	return 0;
}

/* One attachment: url, mime_type, title, size_in_bytes, duration_in_seconds. */
static int add_attachment(json_t *atts, const char *base_url, const char *path, const char *mime,
                          const char *title, json_int_t size, double duration)
{
	json_t *att = json_object();

	if (att == NULL || json_object_set_new(att, "url", url_json(base_url, path)) != 0 ||
	    json_object_set_new(att, "mime_type", json_string(mime)) != 0 ||
	    json_object_set_new(att, "title", json_string(title)) != 0 ||
	    json_object_set_new(att, "size_in_bytes", json_integer(size)) != 0 ||
	    json_object_set_new(att, "duration_in_seconds", json_real(duration)) != 0) {
		json_decref(att);
		return -ENOMEM;
	}
	return json_array_append_new(atts, att) == 0 ? 0 : -ENOMEM;
}

static json_t *feed_item(const char *base_url, const json_t *post)
{
	record_view v;
	char path[256], title[FEED_TITLE_MAX * 4 + 8];
	json_t *item, *atts, *ext = NULL;

	if (item_view_read(post, &v) != 0)
		return NULL;
	make_title(v.text, title, sizeof(title));
	item = json_object();
	atts = json_array();
	if (item == NULL || atts == NULL)
		goto fail;
	if (feed_path_post(path, sizeof(path), v.id) != 0 ||
	    json_object_set_new(item, "id", json_string(v.id)) != 0 ||
	    json_object_set_new(item, "url", url_json(base_url, path)) != 0 ||
	    json_object_set_new(item, "content_text", json_string(v.text)) != 0 ||
	    json_object_set_new(item, "date_published", json_string(v.date)) != 0)
		goto fail;
	/* Opus first; the fallback, with the same title, is its alternate. */
	if (feed_path_audio(path, sizeof(path), v.audio_sha256) != 0 ||
	    add_attachment(atts, base_url, path, v.audio_mime, title, v.audio_size, v.duration) != 0)
		goto fail;
	if (v.fallback_sha256 != NULL &&
	    (feed_path_fallback(path, sizeof(path), v.fallback_sha256) != 0 ||
	     add_attachment(atts, base_url, path, v.fallback_mime, title, v.fallback_size,
	                    v.duration) != 0))
		goto fail;
	if (json_object_set(item, "attachments", atts) != 0)
		goto fail;
	/* The extension object (JSON Feed: keys starting with "_"). */
	if (v.waveform_sha256 != NULL || v.has_output_lufs) {
		ext = json_object();
		if (ext == NULL)
			goto fail;
		if (v.waveform_sha256 != NULL &&
		    (feed_path_waveform(path, sizeof(path), v.waveform_sha256) != 0 ||
		     json_object_set_new(ext, "waveform_url", url_json(base_url, path)) != 0))
			goto fail;
		if (v.has_output_lufs &&
		    json_object_set_new(ext, "loudness_lufs", json_real(v.output_lufs)) != 0)
			goto fail;
		if (json_object_set(item, "_sayin", ext) != 0)
			goto fail;
	}
	json_decref(atts);
	json_decref(ext);
	return item;
fail:
	json_decref(item);
	json_decref(atts);
	json_decref(ext);
	return NULL;
}

static int dump(json_t *doc, char **out, size_t *out_len)
{
	/* Compact, key order as built: the same records give the same bytes.
	 * Not json_dumps, which can drop a key when memory runs out. */
	char *s = jsonstore_dump_flags(doc, JSON_COMPACT | JSON_PRESERVE_ORDER |
	                                    JSON_REAL_PRECISION(6), out_len);
	if (s == NULL)
		return -ENOMEM;
	*out = s;
	return 0;
}

int feed_author_json(const char *base_url, const feed_author *author, json_t *const *posts,
                     size_t n_posts, const char *next_url, char **out, size_t *out_len)
{
	char path[256], title[256];
	json_t *doc = json_object(), *items = json_array(), *authors = json_array(), *a = json_object();
	int rc = -ENOMEM;

	if (doc == NULL || items == NULL || authors == NULL || a == NULL)
		goto done;
	snprintf(title, sizeof(title), "%s on sayin", author->name);
	if (json_object_set_new(doc, "version", json_string(FEED_VERSION)) != 0 ||
	    json_object_set_new(doc, "title", json_string(title)) != 0)
		goto done;
	if (feed_path_author(path, sizeof(path), author->handle) != 0 ||
	    json_object_set_new(doc, "home_page_url", url_json(base_url, path)) != 0 ||
	    json_object_set_new(a, "url", url_json(base_url, path)) != 0 ||
	    json_object_set_new(a, "name", json_string(author->name)) != 0)
		goto done;
	if (feed_path_feed(path, sizeof(path), author->handle) != 0 ||
	    json_object_set_new(doc, "feed_url", url_json(base_url, path)) != 0)
		goto done;
	if (json_array_append(authors, a) != 0 || json_object_set(doc, "authors", authors) != 0)
		goto done;
	if (author->bio != NULL && *author->bio != '\0' &&
	    json_object_set_new(doc, "description", json_string(author->bio)) != 0)
		goto done;
	json_object_set_new(doc, "language", json_string("und"));
	for (size_t i = 0; i < n_posts; i++) {
		json_t *item = feed_item(base_url, posts[i]);
		if (item == NULL) {
			rc = SAYIN_ECORRUPT;
			goto done;
		}
		if (json_array_append_new(items, item) != 0)
			goto done;
	}
	if (json_object_set(doc, "items", items) != 0)
		goto done;
	if (next_url != NULL && json_object_set_new(doc, "next_url", json_string(next_url)) != 0)
		goto done;
	rc = dump(doc, out, out_len);
done:
	json_decref(a);
	json_decref(authors);
	json_decref(items);
	json_decref(doc);
	return rc;
}

int feed_authors_json(const char *base_url, const feed_author *authors, size_t n, char **out,
                      size_t *out_len)
{
	json_t *doc = json_object(), *list = json_array();
	char path[256];
	int rc = -ENOMEM;

	if (doc == NULL || list == NULL || json_object_set(doc, "authors", list) != 0)
		goto done;
	for (size_t i = 0; i < n; i++) {
		json_t *a = json_object();
		if (a == NULL || json_array_append_new(list, a) != 0)
			goto done;
		if (json_object_set_new(a, "handle", json_string(authors[i].handle)) != 0 ||
		    json_object_set_new(a, "name", json_string(authors[i].name)) != 0 ||
		    feed_path_feed(path, sizeof(path), authors[i].handle) != 0 ||
		    json_object_set_new(a, "feed_url", url_json(base_url, path)) != 0 ||
		    feed_path_author(path, sizeof(path), authors[i].handle) != 0 ||
		    json_object_set_new(a, "home_page_url", url_json(base_url, path)) != 0)
			goto done;
	}
	rc = dump(doc, out, out_len);
done:
	json_decref(list);
	json_decref(doc);
	return rc;
}

/* cmd post: publishes one recording as a voice post and prints it as JSON;
 * deletes a post (any author's); lists an author's posts. */
#include "cmd/cmd.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/jsonstore.h"
#include "core/log.h"
#include "documents.h"
#include "pipeline.h"
#include "publish.h"
#include "render/feed.h"
#include "render/record.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const config_arg post_args[] = {
	{ "author", "HANDLE", "author handle (1-32 of a-z, 0-9, _); must exist, unless "
	                      "--create-author", 0 },
	{ "create-author", NULL, "create the author on its first post (its name is the handle)",
	  1 },
	{ "json", NULL, "post list: one JSON array instead of lines", 1 },
	{ "text", "TEXT", "the post's text (UTF-8)", 0 },
	{ "crosspost", "NETWORKS", "x, facebook or x,facebook (default: every network the author "
	                           "has enabled; \"\" for none)", 0 },
};

static const char *const post_settings[] = {
	"data", "map-size", "public-url", "listen", "bitrate", "loudness-target", "max-input-bytes",
	"max-duration", "decode-timeout-ms", "decode-memory", "waveform-points", "aac-fallback",
	"aac-bitrate", "aac-coder", "feed-items", "feed-page-items", "max-text", "varnish-edges",
	"nginx-edges", "fastly-service-id", "cloudflare-zone-id", "cloudfront-distribution-id",
	"s3-bucket", "log-level", NULL
};

static const cmd_spec post_spec = {
	.name = "post",
	.usage = "Usage: sayin-publisher post --author HANDLE [--text TEXT] [--create-author]\n"
	         "                            [options] FILE\n"
	         "       sayin-publisher post delete ID [options]\n"
	         "       sayin-publisher post list --author HANDLE [--json] [options]\n\n"
	         "Publishes FILE (WAV, FLAC, MP3, Ogg Vorbis/Opus, M4A/MP4 AAC, WebM/MKV\n"
	         "Opus, CAF, AIFF, AMR; the first audio track of a video) as an Ogg Opus\n"
	         "voice post normalized to the loudness target, with an AAC-in-M4A\n"
	         "fallback and a waveform, updates the author's feed and prints the\n"
	         "post as one JSON object. An unknown author is refused (exit 2) unless\n"
	         "--create-author is given. Exit codes: 0 published, 1 failed, 2 usage,\n"
	         "3 bad input file, 4 store full. (A recording named delete or list:\n"
	         "write ./delete, ./list.)\n\n"
	         "delete removes any author's post as the API's DELETE /v1/posts/ID does (one\n"
	         "transaction: its record, page, embed and objects no other post uses, the\n"
	         "feeds that listed it, and the CDN purges); exit 1 for an unknown ID.\n"
	         "list prints the author's posts, newest first: id, time, text excerpt,\n"
	         "page URL and audio URL, tab-separated (--json: one array).\n",
	.args = post_args,
	.nargs = sizeof(post_args) / sizeof(post_args[0]),
	.settings = post_settings,
};

/* --text, checked before anything is opened. */
static int check_text(const config *cfg, const pipeline *pipe, void *arg, char *err,
                      size_t errlen)
{
	const char *text = arg;
	char msg[512];

	(void)cfg;
	if (text == NULL || pipeline_check_text(pipe, text, strlen(text), msg, sizeof(msg)) == 0)
		return 0;
	snprintf(err, errlen, "--text: %s", msg);
	return SAYIN_EINVAL;
}

/* post delete ID: the API's DELETE, for any author. */
static int post_delete(config *cfg, const char *id)
{
	store *st = NULL;
	pipeline pipe = { 0 };
	publish_deleted del;
	char err[512];
	int rc, code = cmd_prepare(&post_spec, cfg, &pipe, NULL, NULL, &st);

	if (code >= 0)
		goto done;
	rc = publish_delete(st, &pipe.publish, id, NULL, clock_now_ms(), &del, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher post delete: %s\n", err);
		code = cmd_store_exit(rc);
		goto done;
	}
	printf("deleted post %s (#%llu) by %s: %u objects deleted, %u shared kept\n", id,
	       (unsigned long long)del.seq, del.author, del.objects_deleted, del.objects_kept);
	code = EXIT_OK;
done:
	pipeline_free(&pipe);
	store_close(st);
	return code;
}

struct list_ctx {
	const char *base_url;
	json_t *array; /* --json: the entries; NULL: print lines */
};

/* One post of post list: a line, or an entry of the array. */
static int list_one(void *arg, const char *id, uint64_t seq, const void *record, size_t len)
{
	struct list_ctx *l = arg;
	json_t *post = NULL, *e;
	record_view v;
	char page[1024], audio[1024], path[256], excerpt[128];
	size_t n = 0;

	(void)seq;
	jsonstore_parse(record, len, &post);
	record_view_read(post, &v);
	page[0] = audio[0] = '\0';
	if (feed_path_post(path, sizeof(path), id) == 0)
		snprintf(page, sizeof(page), "%s%s", l->base_url, path);
	if (v.audio_sha256 != NULL && feed_path_audio(path, sizeof(path), v.audio_sha256) == 0)
		snprintf(audio, sizeof(audio), "%s%s", l->base_url, path);
	if (l->array != NULL) {
		e = json_pack("{s:s, s:s?, s:s?, s:s, s:s}", "id", id, "date_published", v.date,
		              "text", v.text, "url", page, "audio_url", audio);
		json_decref(post);
		return e != NULL && json_array_append_new(l->array, e) == 0 ? 0 : -ENOMEM;
	}
	/* An excerpt of at most 60 characters on one line. */
	for (const char *t = v.text ? v.text : ""; *t != '\0' && n + 4 < sizeof(excerpt); t++) {
		if (((unsigned char)*t & 0xc0) != 0x80 && n >= 60) {
			memcpy(excerpt + n, "...", 3);
			n += 3;
			break;
		}
		excerpt[n++] = (*t == '\t' || *t == '\n' || *t == '\r') ? ' ' : *t;
	}
	excerpt[n] = '\0';
	printf("%s\t%s\t%s\t%s\t%s\n", id, v.date ? v.date : "?", excerpt, page, audio);
	json_decref(post);
	return 0;
}

/* post list --author HANDLE: read only, no write transaction. */
static int post_list(config *cfg, const char *author)
{
	store *st = NULL;
	store_txn *txn = NULL;
	pipeline pipe = { 0 };
	const void *rec;
	size_t len;
	struct list_ctx l = { 0 };
	char *out = NULL;
	int rc, code = cmd_prepare(&post_spec, cfg, &pipe, NULL, NULL, &st);

	if (code >= 0)
		goto done;
	l.base_url = pipe.base_url;
	if (config_get(cfg, "json") != NULL && (l.array = json_array()) == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = store_txn_begin(st, 0, &txn);
	if (rc == 0)
		rc = store_get_author(txn, author, &rec, &len);
	if (rc == SAYIN_ENOTFOUND) {
		fprintf(stderr, "sayin-publisher post list: no author '%s'\n", author);
		code = EXIT_FAIL;
		goto done;
	}
	if (rc == 0)
		rc = store_author_posts(txn, author, 0, list_one, &l);
	if (rc == 0 && l.array != NULL) {
		out = jsonstore_dump_flags(l.array, JSON_INDENT(2) | JSON_PRESERVE_ORDER, NULL);
		if (out == NULL)
			rc = -ENOMEM;
		else
			printf("%s\n", out);
	}
fail:
	if (rc != 0)
		fprintf(stderr, "sayin-publisher post list: %s\n", sayin_strerror(rc));
	code = rc == 0 ? EXIT_OK : EXIT_FAIL;
done:
	free(out);
	json_decref(l.array);
	store_txn_abort(txn);
	pipeline_free(&pipe);
	store_close(st);
	return code;
}

/* 0 when the author exists or may be created; else prints why and
 * returns EXIT_USAGE (or EXIT_FAIL when the store cannot be read). Checked
 * before the media work, so a typo costs no transcoding; the publish
 * transaction checks again. */
static int check_author(store *st, const char *author, int create)
{
	store_txn *txn;
	const void *rec;
	size_t len;
	int rc = store_txn_begin(st, 0, &txn);

	if (rc == 0) {
		rc = store_get_author(txn, author, &rec, &len);
		if (rc == SAYIN_ENOTFOUND && documents_author_removed(txn, author) == -EEXIST) {
			store_txn_abort(txn);
			fprintf(stderr, "sayin-publisher post: author '%s' was removed: a removed "
			                "handle is not reused\n", author);
			return EXIT_FAIL;
		}
		store_txn_abort(txn);
	}
	if (rc == 0 || (rc == SAYIN_ENOTFOUND && create))
		return 0;
	if (rc == SAYIN_ENOTFOUND) {
		fprintf(stderr, "sayin-publisher post: no author '%s': add it with `sayin-publisher "
		                "author add %s --name NAME`, or pass --create-author\n", author, author);
		return EXIT_USAGE;
	}
	fprintf(stderr, "sayin-publisher post: cannot read the store: %s\n", sayin_strerror(rc));
	return EXIT_FAIL;
}

int cmd_post(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	pipeline pipe = { 0 };
	publish_result res;
	pipeline_timing timing;
	char err[512], *json = NULL;
	const char *file, *author, *text;
	int rc, input_fault, code;

	code = cmd_load_config(&post_spec, argc, argv, &cfg);
	if (code >= 0)
		return code;
	code = EXIT_USAGE;
	author = config_get(cfg, "author");
	text = config_get(cfg, "text");
	if (config_positional_count(cfg) == 2 &&
	    strcmp(config_positional(cfg, 0), "delete") == 0) {
		code = post_delete(cfg, config_positional(cfg, 1));
		goto done;
	}
	if (config_positional_count(cfg) == 1 && strcmp(config_positional(cfg, 0), "list") == 0) {
		if (author == NULL || !publish_valid_handle(author)) {
			fprintf(stderr, "sayin-publisher post list: --author HANDLE is required\n");
			goto done;
		}
		code = post_list(cfg, author);
		goto done;
	}
	if (config_positional_count(cfg) != 1) {
		fprintf(stderr, "sayin-publisher post: give exactly one recording FILE (see --help)\n");
		goto done;
	}
	file = config_positional(cfg, 0);
	if (author == NULL) {
		fprintf(stderr, "sayin-publisher post: --author HANDLE is required\n");
		goto done;
	}
	if (!publish_valid_handle(author)) {
		fprintf(stderr, "sayin-publisher post: invalid author handle '%s': use 1-32 of "
		                "a-z, 0-9, _\n", author);
		goto done;
	}
	/* The store is opened before the media work (a missing or read-only
	 * store fails fast), but nothing is written until the publish. */
	code = cmd_prepare(&post_spec, cfg, &pipe, check_text, (void *)text, &st);
	if (code >= 0)
		goto done;
	pipe.publish.create_authors = config_get(cfg, "create-author") != NULL;
	code = check_author(st, author, pipe.publish.create_authors);
	if (code != 0)
		goto done;
	pipeline_post post = { .file = file, .author = author, .text = text,
		               .crosspost = config_get(cfg, "crosspost"),
		               .now_ms = clock_now_ms() };
	rc = pipeline_run(&pipe, st, &post, &res, &timing, &input_fault, err, sizeof(err));
	if (rc != 0) {
		if (rc == SAYIN_ESTOREFULL || rc == -ENOSPC)
			code = EXIT_STORE_FULL;
		else if (rc == SAYIN_EINVAL && input_fault)
			code = EXIT_USAGE;
		else
			code = input_fault ? EXIT_BAD_INPUT : EXIT_FAIL;
		if (timing.publish_ms == 0 && rc != SAYIN_EINVAL)
			fprintf(stderr, "sayin-publisher post: %s: %s\n", file, err);
		else
			fprintf(stderr, "sayin-publisher post: %s\n", err);
		goto done;
	}
	/* The post is committed and live: from here on, nothing may turn it
	 * into a failure (a retry would post it twice). Without memory for the
	 * whole answer, its id and page are printed from the stack. */
	if (publish_response_json(pipe.base_url, author, &res, &json) != 0) {
		log_error("post: %s published, but out of memory for the full answer", res.id);
		printf("{\"id\": \"%s\", \"url\": \"%s/p/%s\"}\n", res.id, pipe.base_url, res.id);
		code = EXIT_OK;
		goto done;
	}
	printf("%s\n", json);
	code = EXIT_OK;
done:
	pipeline_free(&pipe);
	free(json);
	store_close(st);
	config_free(cfg);
	return code;
}

/* cmd post: publishes one recording as a voice post and prints it as JSON. */
#include "cmd/cmd.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "pipeline.h"
#include "publish.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const config_arg post_args[] = {
	{ "author", "HANDLE", "author handle (1-32 of a-z, 0-9, _); created on first post", 0 },
	{ "text", "TEXT", "the post's text (UTF-8)", 0 },
	{ "crosspost", "NETWORKS", "x, facebook or x,facebook (default: every network the author "
	                           "has enabled; \"\" for none)", 0 },
};

static const char *const post_settings[] = {
	"data", "map-size", "public-url", "listen", "bitrate", "loudness-target", "max-input-bytes",
	"max-duration", "decode-timeout-ms", "decode-memory", "waveform-points", "aac-fallback",
	"aac-bitrate", "aac-coder", "feed-items", "feed-page-items", "max-text", "log-level", NULL
};

static const cmd_spec post_spec = {
	.name = "post",
	.usage = "Usage: sayin-publisher post --author HANDLE [--text TEXT] [options] FILE\n\n"
	         "Publishes FILE (WAV, FLAC, MP3, Ogg Vorbis/Opus, M4A/MP4 AAC, WebM/MKV\n"
	         "Opus, CAF, AIFF, AMR; the first audio track of a video) as an Ogg Opus\n"
	         "voice post normalized to the loudness target, with an AAC-in-M4A\n"
	         "fallback and a waveform, updates the author's feed and prints the\n"
	         "post as one JSON object. Exit codes: 0 published,\n"
	         "1 failed, 2 usage, 3 bad input file, 4 store full.\n",
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

/* sayin-publisher: publishes voice posts into the store (the only writer). */
#include "config.h"
#include "error.h"
#include "feed.h"
#include "log.h"
#include "media.h"
#include "publish.h"
#include "store.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Exit codes, documented in README. */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_BAD_INPUT = 3, EXIT_STORE_FULL = 4 };

static const config_arg post_args[] = {
	{ "author", "HANDLE", "author handle (1-32 of a-z, 0-9, _); created on first post", 0 },
	{ "text", "TEXT", "the post's text (UTF-8)", 0 },
};
#define N_POST_ARGS (sizeof(post_args) / sizeof(post_args[0]))

static const char *const post_settings[] = { "data", "map-size", "public-url", "listen", "bitrate",
	                                     "feed-items", "log-level", NULL };

static void usage(FILE *out)
{
	fprintf(out, "Usage: sayin-publisher COMMAND [options]\n\n"
	             "Commands:\n"
	             "  post      publish a recording as a voice post\n"
	             "  settings  print every setting as a Markdown table\n"
	             "  help      this text\n\n"
	             "Run 'sayin-publisher COMMAND --help' for a command's options.\n");
}

static void post_usage(FILE *out)
{
	fprintf(out, "Usage: sayin-publisher post --author HANDLE [--text TEXT] [options] FILE\n\n"
	             "Publishes FILE (WAV: PCM 16/24-bit or float 32-bit, mono or stereo,\n"
	             "8-48 kHz) as an Ogg Opus voice post, updates the author's feed and\n"
	             "prints the post as one JSON object. Exit codes: 0 published,\n"
	             "1 failed, 2 usage, 3 bad input file, 4 store full.\n");
	config_usage(out, post_args, N_POST_ARGS, post_settings);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds on the monotonic clock, for stage timings. */
static double mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The Ogg serial comes from the signal, so the same recording always yields
 * the same bytes and thus the same content address (FNV-1a, 32 bits). */
static uint32_t serial_for(const media_audio *audio)
{
	const unsigned char *p = (const unsigned char *)audio->samples;
	size_t n = audio->frames * sizeof(float);
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 16777619u;
	}
	return h ^ audio->input_rate;
}

/* Resolves the public base URL, without a trailing slash, into buf. */
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

static int print_result(const char *base, const char *author, const publish_result *res)
{
	char path[256], url[1024], audio_url[1024], feed_url[1024];
	json_t *j;
	char *s;

	feed_path_post(path, sizeof(path), res->id);
	snprintf(url, sizeof(url), "%s%s", base, path);
	feed_path_audio(path, sizeof(path), res->audio_hex);
	snprintf(audio_url, sizeof(audio_url), "%s%s", base, path);
	feed_path_feed(path, sizeof(path), author);
	snprintf(feed_url, sizeof(feed_url), "%s%s", base, path);
	j = json_pack("{s:s, s:s, s:s, s:s, s:f, s:I}", "id", res->id, "url", url, "audio_url",
	              audio_url, "feed_url", feed_url, "duration_in_seconds", res->duration,
	              "size_in_bytes", (json_int_t)res->audio_size);
	s = j ? json_dumps(j, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6)) : NULL;
	json_decref(j);
	if (s == NULL)
		return -1;
	printf("%s\n", s);
	free(s);
	return 0;
}

static int cmd_post(int argc, char **argv)
{
	config *cfg = NULL;
	media_audio audio = { 0 };
	media_buffer opus = { 0 };
	store *st = NULL;
	store_options sopt = { 0 };
	publish_result res;
	enum log_level level;
	uint64_t bitrate, feed_items;
	char err[512], base[512];
	const char *file, *author, *text;
	int rc, code = EXIT_FAIL;

	rc = config_load(argc, argv, post_args, N_POST_ARGS, &cfg, err, sizeof(err));
	if (rc == 1) {
		post_usage(stdout);
		config_free(cfg);
		return EXIT_OK;
	}
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher post: %s\n", err);
		return EXIT_USAGE;
	}
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
	if (log_parse_level(config_get(cfg, "log-level"), &level) != 0) {
		fprintf(stderr, "sayin-publisher post: --log-level must be error, warn, info or debug\n");
		goto done;
	}
	log_set_level(level);
	if (config_get_u64(cfg, "bitrate", 6000, 510000, &bitrate, err, sizeof(err)) != 0 ||
	    config_get_u64(cfg, "feed-items", 1, 1000, &feed_items, err, sizeof(err)) != 0 ||
	    config_get_size(cfg, "map-size", 1 << 20, UINT64_MAX, &sopt.map_size, err,
	                    sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher post: %s\n", err);
		goto done;
	}
	public_base(cfg, base, sizeof(base));

	/* Media work first, outside any transaction: a bad file stores nothing. */
	code = EXIT_BAD_INPUT;
	double t0 = mono_ms();
	rc = media_decode_file(file, &audio, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher post: %s: %s\n", file, err);
		goto done;
	}
	media_comment comments[] = { { "ARTIST", author }, { "TITLE", text ? text : "" } };
	media_opus_options oopt = { .bitrate = (int)bitrate, .complexity = -1,
		                    .serial = serial_for(&audio), .comments = comments,
		                    .n_comments = text ? 2 : 1 };
	code = EXIT_FAIL;
	double t1 = mono_ms();
	rc = media_encode_opus(&audio, &oopt, &opus, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher post: %s: encoding failed: %s\n", file, err);
		goto done;
	}

	double t2 = mono_ms();
	rc = store_open(config_get(cfg, "data"), &sopt, &st);
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher post: cannot open store %s: %s\n",
		        config_get(cfg, "data"), sayin_strerror(rc));
		goto done;
	}
	publish_settings pset = { .base_url = base, .feed_items = (size_t)feed_items };
	publish_input in = { .author = author, .text = text, .audio = opus.data,
		             .audio_len = opus.len, .duration = media_audio_duration(&audio),
		             .input_format = audio.input_format, .input_rate = audio.input_rate,
		             .input_channels = audio.input_channels, .now_ms = now_ms() };
	rc = publish_post(st, &pset, &in, &res, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher post: %s\n", err);
		code = rc == SAYIN_ESTOREFULL ? EXIT_STORE_FULL
		       : rc == SAYIN_EINVAL   ? EXIT_USAGE
		                              : EXIT_FAIL;
		goto done;
	}
	/* Where the time went, stage by stage: the first place to look when
	 * publishing gets slow. */
	log_info("post: %s: decode %.1f ms, encode %.1f ms, publish %.1f ms (%.1f s of audio)",
	         res.id, t1 - t0, t2 - t1, mono_ms() - t2, res.duration);
	code = print_result(base, author, &res) == 0 ? EXIT_OK : EXIT_FAIL;
done:
	store_close(st);
	media_buffer_free(&opus);
	media_audio_free(&audio);
	config_free(cfg);
	return code;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "post") == 0)
		return cmd_post(argc - 1, argv + 1);
	if (strcmp(argv[1], "settings") == 0) {
		config_print_reference(stdout);
		return EXIT_OK;
	}
	if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return EXIT_OK;
	}
	fprintf(stderr, "sayin-publisher: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}

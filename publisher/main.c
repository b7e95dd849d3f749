/* sayin-publisher: publishes voice posts into the store (the only writer). */
#include "config.h"
#include "error.h"
#include "feed.h"
#include "log.h"
#include "media.h"
#include "publish.h"
#include "store.h"

#include <errno.h>
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

static const char *const post_settings[] = {
	"data", "map-size", "public-url", "listen", "bitrate", "loudness-target", "max-input-bytes",
	"max-duration", "decode-timeout-ms", "decode-memory", "waveform-points", "aac-fallback",
	"aac-bitrate", "feed-items", "log-level", NULL
};

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
	             "Publishes FILE (WAV, FLAC, MP3, Ogg Vorbis/Opus, M4A/MP4 AAC, WebM/MKV\n"
	             "Opus, CAF, AIFF, AMR; the first audio track of a video) as an Ogg Opus\n"
	             "voice post normalized to the loudness target, with an AAC-in-M4A\n"
	             "fallback and a waveform, updates the author's feed and prints the\n"
	             "post as one JSON object. Exit codes: 0 published,\n"
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
	char path[256], url[1024], audio_url[1024], feed_url[1024], more_url[1024];
	json_t *j;
	char *s;
	int rc = 0;

	feed_path_post(path, sizeof(path), res->id);
	snprintf(url, sizeof(url), "%s%s", base, path);
	feed_path_audio(path, sizeof(path), res->audio_hex);
	snprintf(audio_url, sizeof(audio_url), "%s%s", base, path);
	feed_path_feed(path, sizeof(path), author);
	snprintf(feed_url, sizeof(feed_url), "%s%s", base, path);
	j = json_pack("{s:s, s:s, s:s, s:s, s:f, s:I}", "id", res->id, "url", url, "audio_url",
	              audio_url, "feed_url", feed_url, "duration_in_seconds", res->duration,
	              "size_in_bytes", (json_int_t)res->audio_size);
	if (j != NULL && res->has_fallback) {
		feed_path_fallback(path, sizeof(path), res->fallback_hex);
		snprintf(more_url, sizeof(more_url), "%s%s", base, path);
		rc = json_object_set_new(j, "fallback_url", json_string(more_url));
	}
	if (j != NULL && rc == 0 && res->has_waveform) {
		feed_path_waveform(path, sizeof(path), res->waveform_hex);
		snprintf(more_url, sizeof(more_url), "%s%s", base, path);
		rc = json_object_set_new(j, "waveform_url", json_string(more_url));
	}
	s = j && rc == 0 ? json_dumps(j, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6)) : NULL;
	json_decref(j);
	if (s == NULL)
		return -1;
	printf("%s\n", s);
	free(s);
	return 0;
}

/* Reads --loudness-target: a decimal number of LUFS. */
static int get_loudness_target(const config *cfg, double *out, char *err, size_t errlen)
{
	const char *v = config_get(cfg, "loudness-target");
	char *end = NULL;
	double d;

	errno = 0;
	d = v != NULL ? strtod(v, &end) : 0;
	if (v == NULL || end == v || *end != '\0' || errno != 0 || !(d >= -60.0 && d <= -5.0)) {
		snprintf(err, errlen, "--loudness-target: '%s' is not a loudness in LUFS from -60 to -5",
		         v ? v : "");
		return -1;
	}
	*out = d;
	return 0;
}

/* Reads --aac-fallback: on or off. */
static int get_on_off(const config *cfg, const char *name, int *out, char *err, size_t errlen)
{
	const char *v = config_get(cfg, name);

	if (v != NULL && strcmp(v, "on") == 0)
		*out = 1;
	else if (v != NULL && strcmp(v, "off") == 0)
		*out = 0;
	else {
		snprintf(err, errlen, "--%s: '%s' is not on or off", name, v ? v : "");
		return -1;
	}
	return 0;
}

static int cmd_post(int argc, char **argv)
{
	config *cfg = NULL;
	media_result media = { 0 };
	media_transcode_options mopt = { 0 };
	uint64_t max_duration_s = 0;
	store *st = NULL;
	store_options sopt = { 0 };
	publish_result res;
	enum log_level level;
	uint64_t bitrate, feed_items, waveform_points, aac_bitrate;
	int aac_fallback = 1;
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
	                    sizeof(err)) != 0 ||
	    config_get_size(cfg, "max-input-bytes", 1, UINT64_MAX, &mopt.max_input_bytes, err,
	                    sizeof(err)) != 0 ||
	    config_get_u64(cfg, "max-duration", 1, 24 * 3600, &max_duration_s, err, sizeof(err)) != 0 ||
	    config_get_u64(cfg, "decode-timeout-ms", 100, 24 * 3600 * 1000, &mopt.decode_timeout_ms,
	                   err, sizeof(err)) != 0 ||
	    config_get_size(cfg, "decode-memory", 16 << 20, UINT64_MAX, &mopt.decoder_memory, err,
	                    sizeof(err)) != 0 ||
	    config_get_u64(cfg, "waveform-points", 10, MEDIA_MAX_WAVEFORM_POINTS, &waveform_points,
	                   err, sizeof(err)) != 0 ||
	    config_get_u64(cfg, "aac-bitrate", MEDIA_MIN_AAC_BITRATE, MEDIA_MAX_AAC_BITRATE,
	                   &aac_bitrate, err, sizeof(err)) != 0 ||
	    get_on_off(cfg, "aac-fallback", &aac_fallback, err, sizeof(err)) != 0 ||
	    get_loudness_target(cfg, &mopt.loudness_target, err, sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher post: %s\n", err);
		goto done;
	}
	public_base(cfg, base, sizeof(base));

	/* Media work first, outside any transaction and before the store is
	 * mapped: a bad file stores nothing, and the decoder child starts small. */
	media_comment comments[] = { { "ARTIST", author }, { "TITLE", text ? text : "" } };
	mopt.max_duration_ms = max_duration_s * 1000;
	mopt.log_level = config_get(cfg, "log-level");
	mopt.opus = (media_opus_options){ .bitrate = (int)bitrate, .complexity = -1,
		                          .comments = comments, .n_comments = text ? 2 : 1 };
	mopt.waveform_points = (unsigned)waveform_points;
	mopt.no_fallback = !aac_fallback;
	mopt.aac.bitrate = (int)aac_bitrate;
	code = EXIT_BAD_INPUT;
	double t0 = mono_ms();
	rc = media_transcode_file(file, &mopt, &media, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher post: %s: %s\n", file, err);
		/* The recording's fault is exit 3; ours (encoder, memory) is 1. */
		if (rc == SAYIN_EENCODE || rc == -ENOMEM || rc == SAYIN_EINVAL)
			code = EXIT_FAIL;
		goto done;
	}
	code = EXIT_FAIL;
	double t1 = mono_ms();
	rc = store_open(config_get(cfg, "data"), &sopt, &st);
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher post: cannot open store %s: %s\n",
		        config_get(cfg, "data"), sayin_strerror(rc));
		goto done;
	}
	publish_settings pset = { .base_url = base, .feed_items = (size_t)feed_items };
	publish_input in = { .author = author, .text = text, .audio = media.opus.data,
		             .audio_len = media.opus.len, .duration = media.duration,
		             .input_format = media.input_format, .input_rate = media.input_rate,
		             .input_channels = media.input_channels, .now_ms = now_ms(),
		             .has_loudness = 1, .input_lufs = media.input_lufs,
		             .gain_db = media.gain_db, .true_peak_dbtp = media.true_peak_dbtp,
		             .output_lufs = media.output_lufs, .waveform = media.waveform.data,
		             .waveform_len = media.waveform.len,
		             .waveform_points = media.waveform_length, .fallback = media.m4a.data,
		             .fallback_len = media.m4a.len };
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
	log_info("post: %s: media %.1f ms, publish %.1f ms (%.1f s of %s, %.1f LUFS, gain %+.1f dB)",
	         res.id, t1 - t0, mono_ms() - t1, res.duration, media.input_format, media.input_lufs,
	         media.gain_db);
	code = print_result(base, author, &res) == 0 ? EXIT_OK : EXIT_FAIL;
done:
	store_close(st);
	media_result_free(&media);
	config_free(cfg);
	return code;
}

int main(int argc, char **argv)
{
	/* The decoder child (see media_transcode_file): before anything else. */
	if (argc >= 2 && strcmp(argv[1], MEDIA_DECODER_COMMAND) == 0)
		return media_decoder_main(argc, argv);
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

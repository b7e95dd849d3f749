/* config: settings from defaults, an INI file, the environment and flags. */
#include "core/config.h"

#include "core/error.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRET_FILE_MAX 65536 /* bytes of a secret file; more is a wrong path */

/* Every setting either program knows. publisher/README.md's table is what
 * `sayin-publisher settings` prints (test_config checks it). */
typedef struct setting {
	const char *name;    /* flag: --name */
	const char *section; /* INI [section] */
	const char *key;     /* INI key */
	const char *env;
	const char *def;     /* NULL: unset unless derived (see the help) */
	const char *help;
} setting;

static const setting settings[] = {
	{ "data", "store", "data", "SAYIN_DATA", "./var/store", "store directory (the LMDB environment)" },
	{ "map-size", "store", "map_size", "SAYIN_MAP_SIZE", "64G",
	  "LMDB map size: the most the store may hold (address space, not disk)" },
	{ "listen", "origin", "listen", "SAYIN_LISTEN", "127.0.0.1:8080", "origin listen address" },
	{ "threads", "origin", "threads", "SAYIN_THREADS", "0",
	  "event loops, each with its own SO_REUSEPORT socket (0 = one per core)" },
	{ "admin-listen", "origin", "admin_listen", "SAYIN_ADMIN_LISTEN", NULL,
	  "address serving /metrics apart from fans' traffic; default: /metrics on listen" },
	{ "access-log", "origin", "access_log", "SAYIN_ACCESS_LOG", "off",
	  "origin access log: off, stderr (or on) or a file path; JSON lines, SIGHUP reopens" },
	{ "max-header-bytes", "origin", "max_header_bytes", "SAYIN_MAX_HEADER_BYTES", "16384",
	  "request line and headers, bytes (431 beyond)" },
	{ "max-headers", "origin", "max_headers", "SAYIN_MAX_HEADERS", "64",
	  "header fields per request (431 beyond)" },
	{ "max-uri", "origin", "max_uri", "SAYIN_MAX_URI", "4096", "request-target bytes (414 beyond)" },
	{ "max-connections", "origin", "max_connections", "SAYIN_MAX_CONNECTIONS", "10000",
	  "open connections per event loop; beyond: 503 and close, counted" },
	{ "idle-timeout-ms", "origin", "idle_timeout_ms", "SAYIN_IDLE_TIMEOUT_MS", "60000",
	  "keep-alive connection idle time" },
	{ "header-timeout-ms", "origin", "header_timeout_ms", "SAYIN_HEADER_TIMEOUT_MS", "10000",
	  "time to receive a request's headers (cuts off slowloris clients)" },
	{ "write-timeout-ms", "origin", "write_timeout_ms", "SAYIN_WRITE_TIMEOUT_MS", "30000",
	  "a response write making no progress this long closes the connection" },
	{ "tls-cert", "origin", "tls_cert", "SAYIN_TLS_CERT", NULL,
	  "PEM certificate chain (leaf first): listen speaks HTTPS only (with tls-key)" },
	{ "tls-key", "origin", "tls_key", "SAYIN_TLS_KEY", NULL,
	  "PEM private key of tls-cert; SIGHUP reads both again" },
	{ "shutdown-grace-ms", "origin", "shutdown_grace_ms", "SAYIN_SHUTDOWN_GRACE_MS", "5000",
	  "on SIGTERM/SIGINT, time responses in flight get to finish" },
	{ "name-max-age", "cache", "name_max_age", "SAYIN_NAME_MAX_AGE", "60",
	  "browser lifetime of feeds and pages, seconds" },
	{ "name-shared-max-age", "cache", "name_shared_max_age", "SAYIN_NAME_SHARED_MAX_AGE",
	  "86400", "CDN lifetime of feeds and pages (s-maxage, CDN-Cache-Control); purged on change" },
	{ "stale-while-revalidate", "cache", "stale_while_revalidate", "SAYIN_STALE_WHILE_REVALIDATE",
	  "60", "seconds a cache may serve a stale name while it revalidates" },
	{ "stale-if-error", "cache", "stale_if_error", "SAYIN_STALE_IF_ERROR", "86400",
	  "seconds a cache may serve a stale name while the origin fails" },
	{ "public-url", "publisher", "public_url", "SAYIN_PUBLIC_URL", NULL,
	  "base of every URL in feeds and pages (the CDN); default: http://LISTEN" },
	{ "bitrate", "media", "bitrate", "SAYIN_BITRATE", "32000", "Opus bitrate, bits/s (6000-510000)" },
	/* [media]: loudness and the limits on untrusted recordings */
	{ "loudness-target", "media", "loudness_target", "SAYIN_LOUDNESS_TARGET", "-16",
	  "integrated loudness every post is normalized to, LUFS (EBU R128; -60 to -5)" },
	{ "max-input-bytes", "media", "max_input_bytes", "SAYIN_MAX_INPUT_BYTES", "100M",
	  "largest recording accepted, bytes (K, M, G suffixes); beyond: too large" },
	{ "max-duration", "media", "max_duration", "SAYIN_MAX_DURATION", "600",
	  "longest recording accepted, seconds; checked while decoding, beyond: too long" },
	{ "decode-timeout-ms", "media", "decode_timeout_ms", "SAYIN_DECODE_TIMEOUT_MS", "60000",
	  "wall-clock time the decoder process gets before it is killed" },
	{ "decode-memory", "media", "decode_memory", "SAYIN_DECODE_MEMORY", "1G",
	  "address space of the decoder process (RLIMIT_AS; not applied under ASan)" },
	/* [media]: the renditions beside the Opus audio */
	{ "waveform-points", "media", "waveform_points", "SAYIN_WAVEFORM_POINTS", "1000",
	  "min/max pairs in each post's waveform JSON (10-100000; fewer only for shorter audio)" },
	{ "aac-fallback", "media", "aac_fallback", "SAYIN_AAC_FALLBACK", "on",
	  "on: also publish an AAC-in-M4A rendition for players without Opus (old Safari)" },
	{ "aac-bitrate", "media", "aac_bitrate", "SAYIN_AAC_BITRATE", "48000",
	  "bitrate of the AAC fallback, bits/s (32000-128000)" },
	{ "aac-coder", "media", "aac_coder", "SAYIN_AAC_CODER", "fast",
	  "FFmpeg's AAC coder for the fallback: fast, or twoloop (4x the CPU)" },
	{ "feed-items", "feed", "items", "SAYIN_FEED_ITEMS", "20",
	  "posts in an author's head feed.json and author page" },
	{ "feed-page-items", "feed", "page_items", "SAYIN_FEED_PAGE_ITEMS", "20",
	  "posts in a full archive page /u/HANDLE/feed/N.json" },
	{ "api-listen", "api", "listen", "SAYIN_API_LISTEN", "127.0.0.1:8081",
	  "ingest API listen address (serve)" },
	{ "api-tls-cert", "api", "tls_cert", "SAYIN_API_TLS_CERT", NULL,
	  "PEM certificate chain: api-listen speaks HTTPS only (with api-tls-key; serve)" },
	{ "api-tls-key", "api", "tls_key", "SAYIN_API_TLS_KEY", NULL,
	  "PEM private key of api-tls-cert; SIGHUP reads both again" },
	{ "tls-handshake-timeout-ms", "tls", "handshake_timeout_ms",
	  "SAYIN_TLS_HANDSHAKE_TIMEOUT_MS", "10000",
	  "from accept to the end of the TLS handshake, whatever the client sends meanwhile" },
	{ "tls-ticket-rotate-s", "tls", "ticket_rotate_s", "SAYIN_TLS_TICKET_ROTATE_S", "3600",
	  "session-ticket keys rotate this often; the previous key still resumes (tickets live 2x)" },
	{ "workers", "api", "workers", "SAYIN_WORKERS", "2",
	  "threads that transcode and publish uploads (serve)" },
	{ "queue", "api", "queue", "SAYIN_QUEUE", "16",
	  "uploads waiting for a worker before POST answers 503 (serve)" },
	{ "max-text", "api", "max_text", "SAYIN_MAX_TEXT", "500", "characters of a post's text" },
	{ "upload-dir", "api", "upload_dir", "SAYIN_UPLOAD_DIR", NULL,
	  "temporary upload files (default: DATA/uploads; swept at start)" },
	/* [api]: fairness between uploads (publisher/README.md, Upload limits) */
	{ "upload-per-author", "api", "upload_per_author", "SAYIN_UPLOAD_PER_AUTHOR", NULL,
	  "uploads one author may have accepted at once (receiving, queued or encoding); beyond: 429; "
	  "default: half of workers + queue, at least 1" },
	{ "upload-retry-slots", "api", "upload_retry_slots", "SAYIN_UPLOAD_RETRY_SLOTS", "4",
	  "retries of a known Idempotency-Key let in past workers + queue at once; beyond: 503" },
	{ "upload-min-rate", "api", "upload_min_rate", "SAYIN_UPLOAD_MIN_RATE", "8K",
	  "bytes/s an upload body must average over each rate window after the grace; slower: 408" },
	{ "upload-rate-window-ms", "api", "upload_rate_window_ms", "SAYIN_UPLOAD_RATE_WINDOW_MS",
	  "10000", "window over which --upload-min-rate is averaged" },
	{ "upload-rate-grace-ms", "api", "upload_rate_grace_ms", "SAYIN_UPLOAD_RATE_GRACE_MS", "10000",
	  "time from an upload's headers before its rate is first checked" },
	{ "upload-deadline-ms", "api", "upload_deadline_ms", "SAYIN_UPLOAD_DEADLINE_MS", "60000",
	  "an upload body must be in within this plus Content-Length / --upload-min-rate; later: 408" },
	{ "varnish-edges", "cdn", "varnish_edges", "SAYIN_VARNISH_EDGES", NULL,
	  "Varnish edges to purge (URL PURGE and xkey), comma-separated base URLs" },
	{ "varnish-soft-purge", "cdn", "varnish_soft_purge", "SAYIN_VARNISH_SOFT_PURGE", "off",
	  "on: xkey soft purges (stale kept for grace) instead of hard ones" },
	{ "nginx-edges", "cdn", "nginx_edges", "SAYIN_NGINX_EDGES", NULL,
	  "nginx edges (cache purge module) to purge by URL, comma-separated base URLs" },
	{ "prewarm-edges", "cdn", "prewarm_edges", "SAYIN_PREWARM_EDGES", NULL,
	  "edges to GET new feeds and objects through after the purges, comma-separated" },
	{ "fastly-service-id", "cdn", "fastly_service_id", "SAYIN_FASTLY_SERVICE_ID", NULL,
	  "Fastly service to purge by surrogate key (turns the driver on)" },
	{ "fastly-api-key", "cdn", "fastly_api_key", "SAYIN_FASTLY_API_KEY", NULL,
	  "Fastly API token with purge_select (secret)" },
	{ "fastly-api-key-file", "cdn", "fastly_api_key_file", "SAYIN_FASTLY_API_KEY_FILE", NULL,
	  "file holding --fastly-api-key (see Secrets in publisher/README.md)" },
	{ "fastly-api-url", "cdn", "fastly_api_url", "SAYIN_FASTLY_API_URL", "https://api.fastly.com",
	  "Fastly API base URL" },
	{ "fastly-soft-purge", "cdn", "fastly_soft_purge", "SAYIN_FASTLY_SOFT_PURGE", "off",
	  "on: Fastly-Soft-Purge (mark stale) instead of hard purges" },
	{ "cloudflare-zone-id", "cdn", "cloudflare_zone_id", "SAYIN_CLOUDFLARE_ZONE_ID", NULL,
	  "Cloudflare zone to purge (turns the driver on)" },
	{ "cloudflare-api-token", "cdn", "cloudflare_api_token", "SAYIN_CLOUDFLARE_API_TOKEN", NULL,
	  "Cloudflare API token with Cache Purge (secret)" },
	{ "cloudflare-api-token-file", "cdn", "cloudflare_api_token_file",
	  "SAYIN_CLOUDFLARE_API_TOKEN_FILE", NULL,
	  "file holding --cloudflare-api-token (see Secrets in publisher/README.md)" },
	{ "cloudflare-api-url", "cdn", "cloudflare_api_url", "SAYIN_CLOUDFLARE_API_URL",
	  "https://api.cloudflare.com/client/v4", "Cloudflare API base URL" },
	{ "cloudflare-purge-by", "cdn", "cloudflare_purge_by", "SAYIN_CLOUDFLARE_PURGE_BY", "files",
	  "files (URLs) or tags (Cache-Tag; Enterprise)" },
	{ "cloudfront-distribution-id", "cdn", "cloudfront_distribution_id",
	  "SAYIN_CLOUDFRONT_DISTRIBUTION_ID", NULL,
	  "CloudFront distribution to invalidate (turns the driver on)" },
	{ "cloudfront-api-url", "cdn", "cloudfront_api_url", "SAYIN_CLOUDFRONT_API_URL",
	  "https://cloudfront.amazonaws.com", "CloudFront API base URL" },
	{ "s3-bucket", "cdn", "s3_bucket", "SAYIN_S3_BUCKET", NULL,
	  "S3-compatible bucket to push objects and names to (turns the driver on)" },
	{ "s3-endpoint", "cdn", "s3_endpoint", "SAYIN_S3_ENDPOINT", NULL,
	  "S3 endpoint, path-style (default: https://s3.REGION.amazonaws.com)" },
	{ "aws-access-key-id", "cdn", "aws_access_key_id", "AWS_ACCESS_KEY_ID", NULL,
	  "AWS (or S3-compatible) access key id for cloudfront and s3" },
	{ "aws-secret-access-key", "cdn", "aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", NULL,
	  "AWS secret access key (secret)" },
	{ "aws-secret-access-key-file", "cdn", "aws_secret_access_key_file",
	  "SAYIN_AWS_SECRET_ACCESS_KEY_FILE", NULL,
	  "file holding --aws-secret-access-key (see Secrets in publisher/README.md)" },
	{ "aws-region", "cdn", "aws_region", "AWS_REGION", "us-east-1", "region for s3 signatures" },
	{ "social-accounts", "social", "accounts", "SAYIN_SOCIAL_ACCOUNTS", NULL,
	  "authors' X and Facebook credentials (INI, mode 600; see publisher/README.md)" },
	{ "x-api-url", "social", "x_api_url", "SAYIN_X_API_URL", "https://api.twitter.com",
	  "X API base URL" },
	{ "facebook-api-url", "social", "facebook_api_url", "SAYIN_FACEBOOK_API_URL",
	  "https://graph.facebook.com", "Facebook Graph API base URL" },
	{ "facebook-api-version", "social", "facebook_api_version", "SAYIN_FACEBOOK_API_VERSION",
	  "v19.0", "Graph API version in request paths" },
	{ "crosspost-timeout-ms", "social", "timeout_ms", "SAYIN_CROSSPOST_TIMEOUT_MS", "15000",
	  "a network request taking longer fails (and is retried)" },
	{ "outbox-max-attempts", "outbox", "max_attempts", "SAYIN_OUTBOX_MAX_ATTEMPTS", "10",
	  "failed deliveries before a job is parked" },
	{ "outbox-max-age", "outbox", "max_age", "SAYIN_OUTBOX_MAX_AGE", "86400",
	  "seconds a failing job is retried before it is parked" },
	{ "outbox-lease-ms", "outbox", "lease_ms", "SAYIN_OUTBOX_LEASE_MS", "60000",
	  "how long a worker holds a job before another may take it" },
	{ "outbox-backoff-ms", "outbox", "backoff_ms", "SAYIN_OUTBOX_BACKOFF_MS", "1000",
	  "first retry delay; doubles per failure (with jitter) up to 10 minutes" },
	{ "log-level", "log", "level", "SAYIN_LOG_LEVEL", "info", "error, warn, info or debug" },
	{ "api-access-log", "api", "access_log", "SAYIN_API_ACCESS_LOG", "off",
	  "ingest API access log (serve): off, stderr or a file path; JSON lines, SIGHUP reopens" },
	{ "client-ip-header", "log", "client_ip_header", "SAYIN_CLIENT_IP_HEADER", NULL,
	  "header naming the client in access logs (e.g. Fastly-Client-IP, X-Forwarded-For), "
	  "believed only from trusted-edges; unset: the socket's peer is the client" },
	{ "trusted-edges", "log", "trusted_edges", "SAYIN_TRUSTED_EDGES", NULL,
	  "CIDRs of the CDN edges or proxy (comma-separated) whose client-ip-header is believed; "
	  "unset: none" },
};
#define N_SETTINGS (sizeof(settings) / sizeof(settings[0]))

/* The settings that are credentials. Each has a NAME-file companion right
 * after it in the table; a config file that sets one must be private; a
 * flag that gives one is warned about and blanked in argv. (The social
 * accounts are a private file already, see --social-accounts.) */
static const char *const secret_settings[] = { "fastly-api-key", "cloudflare-api-token",
	                                       "aws-secret-access-key" };

static int is_secret(const setting *s)
{
	for (size_t i = 0; i < sizeof(secret_settings) / sizeof(secret_settings[0]); i++) {
		if (strcmp(s->name, secret_settings[i]) == 0)
			return 1;
	}
	return 0;
}

/* Where a setting's value came from, lowest precedence first; a value the
 * store records (config_set) comes last. */
enum source { FROM_DEFAULT, FROM_FILE, FROM_ENV, FROM_FLAG, FROM_STORE };

struct config {
	char *values[N_SETTINGS];
	unsigned char source[N_SETTINGS]; /* enum source */
	int line[N_SETTINGS];             /* FROM_FILE: the line in file */
	char *file;                       /* the config file, or NULL */
	const config_arg *args;
	size_t nargs;
	char **arg_values;
	char **positional;
	size_t npositional;
};

/* How a load reports its errors: the first goes into err; with report,
 * every one is also printed there, one per line, and the load goes on
 * (config check). */
struct loader {
	char *err;
	size_t errlen;
	FILE *report;
	unsigned errors;
};

static void fail(struct loader *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct loader *ld, const char *fmt, ...)
{
	va_list ap;

	if (ld->errors++ == 0 && ld->err != NULL && ld->errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(ld->err, ld->errlen, fmt, ap);
		va_end(ap);
	}
	if (ld->report != NULL) {
		va_start(ap, fmt);
		vfprintf(ld->report, fmt, ap);
		va_end(ap);
		fputc('\n', ld->report);
	}
}

static int set_value(char **slot, const char *value)
{
	char *copy = strdup(value);
	if (copy == NULL)
		return -ENOMEM;
	free(*slot);
	*slot = copy;
	return 0;
}

/* libinih hands the handler no line number (Debian builds it without
 * INI_HANDLER_LINENO), so the file is fed to it through read_line, which
 * counts lines and sees each raw line first: that is also where a section
 * header without its ']' is caught, which libinih only reports as the
 * first error's line (and then files the keys under the previous
 * section). */
struct ini_state {
	config *cfg;
	struct loader *ld;
	FILE *f;
	const char *path;
	int line;          /* the line libinih is parsing */
	int next_line;
	int bad_section;   /* after a broken header: its keys are not reported again */
	int reported_line; /* the last line an error was reported for */
	int nomem;
	const char *secret; /* a secret setting the file sets, or NULL */
	int indented;      /* this line starts with blanks: libinih continues a value */
	ssize_t last;      /* the setting the previous entry set, or -1 */
};

static char *read_line(char *str, int num, void *stream)
{
	struct ini_state *st = stream;
	char *line = fgets(str, num, st->f);
	const char *p;
	size_t n;

	if (line == NULL)
		return NULL;
	st->line = st->next_line;
	n = strlen(line);
	if (n > 0 && line[n - 1] == '\n') {
		st->next_line++;
	} else if (!feof(st->f)) {
		/* libinih reads INI_MAX_LINE bytes at most: the rest of this line
		 * would come back as a line of its own. Report it, and drop it. */
		int c;
		while ((c = fgetc(st->f)) != EOF && c != '\n')
			;
		st->next_line++;
		fail(st->ld, "%s:%d: line longer than %d bytes: continue a long value on indented "
		     "lines", st->path, st->line, num - 2);
		st->reported_line = st->line;
	}
	p = line;
	if (st->line == 1 && strncmp(p, "\xEF\xBB\xBF", 3) == 0)
		p += 3;
	while (*p == ' ' || *p == '\t')
		p++;
	st->indented = p != line;
	if (*p == '[') {
		const char *close = strchr(p, ']');
		st->bad_section = close == NULL;
		if (close == NULL) {
			size_t len = strcspn(p, "\r\n;#");
			while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
				len--;
			fail(st->ld, "%s:%d: section header '%.*s' is not closed: write [NAME]", st->path,
			     st->line, (int)len, p);
			st->reported_line = st->line;
		}
	} else if (p == line && *p != '\0' && *p != '\r' && *p != '\n' && *p != ';' &&
	           *p != '#' && strpbrk(p, "=:") == NULL) {
		/* Not indented (that would continue the previous value), not a
		 * comment, and no '=': libinih's syntax error. */
		size_t len = strcspn(p, "\r\n");
		fail(st->ld, "%s:%d: syntax error: '%.*s' is not KEY = VALUE", st->path, st->line,
		     (int)(len > 60 ? 60 : len), p);
		st->reported_line = st->line;
	}
	return line;
}

static int on_ini_entry(void *user, const char *section, const char *key, const char *value)
{
	struct ini_state *st = user;

	if (st->bad_section)
		return 1; /* its header was reported; guessing its keys' section would mislead */
	for (size_t i = 0; i < N_SETTINGS; i++) {
		if (strcmp(settings[i].section, section) == 0 && strcmp(settings[i].key, key) == 0) {
			/* An indented line continues the value above it (libinih
			 * hands it over alone): join the two with a space, so that a
			 * long list (trusted_edges, *_edges) can span lines. */
			if (st->indented && st->last == (ssize_t)i && st->cfg->values[i] != NULL) {
				char *joined;
				if (asprintf(&joined, "%s %s", st->cfg->values[i], value) < 0) {
					st->nomem = 1;
					return 0;
				}
				free(st->cfg->values[i]);
				st->cfg->values[i] = joined;
				return 1;
			}
			st->last = (ssize_t)i;
			/* `key =` with no value is the default, as in the example
			 * config, where every key is written out commented. */
			if (value[0] == '\0')
				return 1;
			if (set_value(&st->cfg->values[i], value) != 0) {
				st->nomem = 1;
				return 0;
			}
			st->cfg->source[i] = FROM_FILE;
			st->cfg->line[i] = st->line;
			if (is_secret(&settings[i]))
				st->secret = settings[i].name;
			return 1;
		}
	}
	st->last = -1;
	/* An unknown key is a typo until proven otherwise: refuse it. */
	if (section[0] == '\0')
		fail(st->ld, "%s:%d: setting '%s' is outside any [section]", st->path, st->line, key);
	else
		fail(st->ld, "%s:%d: unknown setting [%s] %s", st->path, st->line, section, key);
	st->reported_line = st->line;
	return 1;
}

static int load_file(config *cfg, const char *path, struct loader *ld)
{
	struct ini_state st = { .cfg = cfg, .ld = ld, .path = path, .next_line = 1, .last = -1 };
	struct stat sb;
	int rc, open_mode;

	st.f = fopen(path, "r");
	if (st.f == NULL) {
		fail(ld, "cannot open config file %s: %s", path, strerror(errno));
		return 0;
	}
	if (set_value(&cfg->file, path) != 0) {
		fclose(st.f);
		return -ENOMEM;
	}
	open_mode = fstat(fileno(st.f), &sb) == 0 && (sb.st_mode & (S_IRWXG | S_IRWXO)) != 0;
	rc = ini_parse_stream(read_line, &st, on_ini_entry, &st);
	fclose(st.f);
	if (st.nomem)
		return -ENOMEM;
	/* An error libinih saw that read_line did not (e.g. a line too long). */
	if (rc > 0 && rc != st.reported_line && ld->errors == 0)
		fail(ld, "%s:%d: syntax error", path, rc);
	else if (rc < 0)
		fail(ld, "%s: cannot parse (out of memory)", path);
	if (st.secret != NULL && open_mode)
		fail(ld, "config file %s holds a secret (%s) and others may read it: "
		     "chmod 600 %s, or pass the secret in the environment", path, st.secret, path);
	return 0;
}

static const setting *find_setting(const char *name, size_t len, size_t *index)
{
	for (size_t i = 0; i < N_SETTINGS; i++) {
		if (strlen(settings[i].name) == len && strncmp(settings[i].name, name, len) == 0) {
			*index = i;
			return &settings[i];
		}
	}
	return NULL;
}

static const config_arg *find_arg(const config *cfg, const char *name, size_t len, size_t *index)
{
	for (size_t i = 0; i < cfg->nargs; i++) {
		if (strlen(cfg->args[i].name) == len && strncmp(cfg->args[i].name, name, len) == 0) {
			*index = i;
			return &cfg->args[i];
		}
	}
	return NULL;
}

/* Finds --config in argv before anything else, since the file comes first. */
static const char *config_file_arg(int argc, char **argv)
{
	const char *path = getenv("SAYIN_CONFIG");
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			path = argv[i + 1];
		else if (strncmp(argv[i], "--config=", 9) == 0)
			path = argv[i] + 9;
	}
	return path;
}

/* A secret on the command line is readable by every local user in
 * /proc/PID/cmdline and ps until the process overwrites it, which it does
 * here (the copy is already in the config); the warning says what to use. */
static void hide_secret_flag(const setting *s, char *value)
{
	log_warn("config: --%s was given on the command line, where other local users can read it "
	         "(ps, /proc/PID/cmdline): use $%s, --%s-file FILE (e.g. a systemd credential) or "
	         "a config file of mode 600", s->name, s->env, s->name);
	memset(value, 'x', strlen(value));
}

static int parse_flags(config *cfg, int argc, char **argv, char *err, size_t errlen)
{
	int only_positional = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *name, *eq, *value = NULL;
		size_t len, idx;
		char **slot;
		int is_switch = 0, secret = 0;

		if (only_positional || a[0] != '-' || a[1] == '\0') {
			cfg->positional[cfg->npositional++] = argv[i];
			continue;
		}
		if (strcmp(a, "--") == 0) {
			only_positional = 1;
			continue;
		}
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
			return 1;
		if (a[1] != '-') {
			snprintf(err, errlen, "unknown option %s (options are --long)", a);
			return SAYIN_ECONFIG;
		}
		name = a + 2;
		eq = strchr(name, '=');
		len = eq != NULL ? (size_t)(eq - name) : strlen(name);
		if (len == 6 && strncmp(name, "config", 6) == 0) {
			if (eq == NULL)
				i++; /* value already read by config_file_arg */
			continue;
		}
		if (find_setting(name, len, &idx) != NULL) {
			slot = &cfg->values[idx];
			cfg->source[idx] = FROM_FLAG;
			secret = is_secret(&settings[idx]);
		} else if (find_arg(cfg, name, len, &idx) != NULL) {
			slot = &cfg->arg_values[idx];
			is_switch = cfg->args[idx].is_switch;
		} else {
			snprintf(err, errlen, "unknown option --%.*s", (int)len, name);
			return SAYIN_ECONFIG;
		}
		if (is_switch) {
			if (eq != NULL) {
				snprintf(err, errlen, "option --%.*s takes no value", (int)len, name);
				return SAYIN_ECONFIG;
			}
			value = "1";
		} else if (eq != NULL) {
			value = eq + 1;
		} else if (i + 1 < argc) {
			value = argv[++i];
		} else {
			snprintf(err, errlen, "option --%.*s needs a value", (int)len, name);
			return SAYIN_ECONFIG;
		}
		if (set_value(slot, value) != 0)
			return -ENOMEM;
		if (secret)
			hide_secret_flag(&settings[idx], (char *)value);
	}
	return 0;
}

/* Reads the secret of setting s from path into *out (malloc'd): a bare name
 * (no '/') is looked up in $CREDENTIALS_DIRECTORY when that is set (systemd
 * LoadCredential=NAME:PATH), anything else is a path. One trailing newline
 * ("\n" or "\r\n") is trimmed. Refused, with SAYIN_ECONFIG and a message
 * naming the setting and the file (never the secret): a file that cannot be
 * read, that others may read, that is empty, longer than SECRET_FILE_MAX or
 * holds more than one line or a NUL. */
static int read_secret_file(const setting *s, const char *path, char **out, char *err,
                            size_t errlen)
{
	const char *creds = getenv("CREDENTIALS_DIRECTORY");
	char full[4096], *data = NULL;
	size_t len = 0;
	struct stat sb;
	int fd, rc = SAYIN_ECONFIG;

	if (strchr(path, '/') == NULL && creds != NULL && creds[0] != '\0')
		snprintf(full, sizeof(full), "%s/%s", creds, path);
	else
		snprintf(full, sizeof(full), "%s", path);
	fd = open(full, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 || fstat(fd, &sb) != 0) {
		snprintf(err, errlen, "--%s-file: cannot read %s: %s", s->name, full, strerror(errno));
		goto done;
	}
	/* Group read is allowed: systemd grants the service's user access to
	 * its credentials through an ACL, whose mask shows as group bits. */
	if (!S_ISREG(sb.st_mode) || (sb.st_mode & S_IRWXO) != 0) {
		snprintf(err, errlen, "--%s-file: %s is %s: chmod 600 %s", s->name, full,
		         S_ISREG(sb.st_mode) ? "readable by other users" : "not a regular file", full);
		goto done;
	}
	data = malloc(SECRET_FILE_MAX + 1);
	if (data == NULL) {
		rc = -ENOMEM;
		goto done;
	}
	for (;;) {
		ssize_t n = read(fd, data + len, SECRET_FILE_MAX + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "--%s-file: reading %s: %s", s->name, full, strerror(errno));
			goto done;
		}
		if (n == 0 || (len += (size_t)n) > SECRET_FILE_MAX)
			break;
	}
	if (len > SECRET_FILE_MAX) {
		snprintf(err, errlen, "--%s-file: %s is larger than %d bytes: not a secret", s->name,
		         full, SECRET_FILE_MAX);
		goto done;
	}
	if (len > 0 && data[len - 1] == '\n')
		len--;
	if (len > 0 && data[len - 1] == '\r')
		len--;
	data[len] = '\0';
	if (len == 0 || memchr(data, '\0', len) != NULL || strpbrk(data, "\r\n") != NULL) {
		snprintf(err, errlen, "--%s-file: %s must hold the secret on one line (%s)", s->name,
		         full, len == 0 ? "it is empty" : "it holds more");
		goto done;
	}
	*out = data;
	data = NULL;
	rc = 0;
done:
	if (data != NULL) {
		memset(data, 0, SECRET_FILE_MAX + 1);
		free(data);
	}
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Each secret whose NAME-file companion is set is read from that file. The
 * two follow the usual precedence (a flag over the environment over the
 * config file): the one given at the higher level wins, and both at the
 * same level is an error. */
static int resolve_secret_files(config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i + 1 < N_SETTINGS; i++) {
		size_t f = i + 1; /* the table puts NAME-file right after NAME */
		char *secret = NULL;
		int rc;

		size_t n = strlen(settings[i].name);

		if (!is_secret(&settings[i]))
			continue;
		if (strncmp(settings[f].name, settings[i].name, n) != 0 ||
		    strcmp(settings[f].name + n, "-file") != 0) {
			snprintf(err, errlen, "settings table: --%s-file must follow --%s",
			         settings[i].name, settings[i].name);
			return SAYIN_EINVAL;
		}
		if (cfg->values[f] == NULL)
			continue;
		if (cfg->values[i] != NULL && cfg->source[i] == cfg->source[f]) {
			snprintf(err, errlen, "--%s and --%s are both given (%s): give one", settings[i].name,
			         settings[f].name, cfg->source[f] == FROM_FLAG ? "flags" :
			         cfg->source[f] == FROM_ENV ? "environment" : "config file");
			return SAYIN_ECONFIG;
		}
		if (cfg->values[i] != NULL && cfg->source[i] > cfg->source[f])
			continue;
		rc = read_secret_file(&settings[i], cfg->values[f], &secret, err, errlen);
		if (rc != 0)
			return rc;
		free(cfg->values[i]);
		cfg->values[i] = secret;
		cfg->source[i] = cfg->source[f];
	}
	return 0;
}

static int check_urls(const config *cfg, struct loader *ld);

/* Builds the config; errors go through ld (stopping at the first unless
 * ld->report). Returns 0 or 1 (--help) with *out set, whatever ld->errors
 * says; -ENOMEM. */
static int load_config(int argc, char **argv, const config_arg *args, size_t nargs,
                       struct loader *ld, config **out)
{
	config *cfg = calloc(1, sizeof(*cfg));
	const char *file;
	char msg[10240]; /* a secret file's path (up to 4095 bytes) may appear twice */
	int rc = -ENOMEM;

	if (cfg == NULL)
		return -ENOMEM;
	cfg->args = args;
	cfg->nargs = nargs;
	cfg->arg_values = calloc(nargs + 1, sizeof(char *));
	cfg->positional = calloc((size_t)argc + 1, sizeof(char *));
	if (cfg->arg_values == NULL || cfg->positional == NULL)
		goto fail;
	for (size_t i = 0; i < N_SETTINGS; i++) {
		if (settings[i].def != NULL && set_value(&cfg->values[i], settings[i].def) != 0)
			goto fail;
	}
	file = config_file_arg(argc, argv);
	if (file != NULL) {
		rc = load_file(cfg, file, ld);
		if (rc != 0)
			goto fail;
		if (ld->errors > 0 && ld->report == NULL)
			goto done;
	}
	for (size_t i = 0; i < N_SETTINGS; i++) {
		const char *v = getenv(settings[i].env);
		if (v != NULL && set_value(&cfg->values[i], v) != 0) {
			rc = -ENOMEM;
			goto fail;
		}
		if (v != NULL)
			cfg->source[i] = FROM_ENV;
	}
	rc = parse_flags(cfg, argc, argv, msg, sizeof(msg));
	if (rc == -ENOMEM)
		goto fail;
	if (rc == SAYIN_ECONFIG) {
		fail(ld, "%s", msg);
		rc = 0;
	}
	if (rc == 0 && (ld->errors == 0 || ld->report != NULL)) {
		int src = resolve_secret_files(cfg, msg, sizeof(msg));
		if (src == -ENOMEM) {
			rc = src;
			goto fail;
		}
		if (src != 0)
			fail(ld, "%s", msg);
	}
	if (rc == 0 && (ld->errors == 0 || ld->report != NULL))
		check_urls(cfg, ld);
done:
	*out = cfg;
	return rc;
fail:
	config_free(cfg);
	return rc;
}

int config_load(int argc, char **argv, const config_arg *args, size_t nargs, config **out,
                char *err, size_t errlen)
{
	struct loader ld = { err, errlen, NULL, 0 };
	config *cfg = NULL;
	int rc = load_config(argc, argv, args, nargs, &ld, &cfg);

	if (rc == -ENOMEM) {
		snprintf(err, errlen, "out of memory");
		return rc;
	}
	if (ld.errors > 0) {
		config_free(cfg);
		return SAYIN_ECONFIG;
	}
	*out = cfg;
	return rc;
}

void config_free(config *cfg)
{
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < N_SETTINGS; i++)
		free(cfg->values[i]);
	free(cfg->file);
	if (cfg->arg_values != NULL) {
		for (size_t i = 0; i < cfg->nargs; i++)
			free(cfg->arg_values[i]);
	}
	free(cfg->arg_values);
	free(cfg->positional);
	free(cfg);
}

const char *config_get(const config *cfg, const char *name)
{
	size_t idx, len = strlen(name);
	if (find_setting(name, len, &idx) != NULL)
		return cfg->values[idx];
	if (find_arg(cfg, name, len, &idx) != NULL)
		return cfg->arg_values[idx];
	return NULL;
}

static int parse_u64(const char *s, int allow_suffix, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	if (allow_suffix && *end != '\0' && end[1] == '\0') {
		switch (*end) {
		case 'K': case 'k': shift = 10; break;
		case 'M': case 'm': shift = 20; break;
		case 'G': case 'g': shift = 30; break;
		case 'T': case 't': shift = 40; break;
		default: return -1;
		}
		end++;
	}
	if (*end != '\0' || (shift != 0 && v > (UINT64_MAX >> shift)))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

static int get_number(const config *cfg, const char *name, int allow_suffix, uint64_t min,
                      uint64_t max, uint64_t *out, char *err, size_t errlen)
{
	const char *v = config_get(cfg, name);
	char where[512];
	uint64_t n;

	config_describe(cfg, name, where, sizeof(where));
	if (parse_u64(v, allow_suffix, &n) != 0) {
		snprintf(err, errlen, "%s: '%s' is not a %s", where, v ? v : "",
		         allow_suffix ? "size (e.g. 512M, 64G)" : "number");
		return SAYIN_ECONFIG;
	}
	if (n < min || n > max) {
		snprintf(err, errlen, "%s: %s is outside %llu..%llu", where, v,
		         (unsigned long long)min, (unsigned long long)max);
		return SAYIN_ECONFIG;
	}
	*out = n;
	return 0;
}

int config_get_u64(const config *cfg, const char *name, uint64_t min, uint64_t max, uint64_t *out,
                   char *err, size_t errlen)
{
	return get_number(cfg, name, 0, min, max, out, err, errlen);
}

int config_get_size(const config *cfg, const char *name, uint64_t min, uint64_t max,
                    uint64_t *out, char *err, size_t errlen)
{
	return get_number(cfg, name, 1, min, max, out, err, errlen);
}

size_t config_positional_count(const config *cfg)
{
	return cfg->npositional;
}

const char *config_positional(const config *cfg, size_t i)
{
	return i < cfg->npositional ? cfg->positional[i] : NULL;
}

static const setting *setting_at(const config *cfg, const char *name, size_t *idx)
{
	(void)cfg;
	return find_setting(name, strlen(name), idx);
}

int config_describe(const config *cfg, const char *name, char *buf, size_t len)
{
	size_t i;
	const setting *s = setting_at(cfg, name, &i);

	if (s == NULL)
		return snprintf(buf, len, "--%s", name);
	switch (cfg->source[i]) {
	case FROM_FILE:
		return snprintf(buf, len, "%s:%d: %s", cfg->file ? cfg->file : "?", cfg->line[i],
		                s->key);
	case FROM_ENV:
		return snprintf(buf, len, "$%s", s->env);
	case FROM_STORE:
		return snprintf(buf, len, "%s (recorded in the store)", s->name);
	default:
		return snprintf(buf, len, "--%s", s->name);
	}
}

int config_explicit(const config *cfg, const char *name)
{
	size_t i;
	if (setting_at(cfg, name, &i) == NULL)
		return 0;
	return cfg->source[i] == FROM_FILE || cfg->source[i] == FROM_ENV ||
	       cfg->source[i] == FROM_FLAG;
}

int config_set(config *cfg, const char *name, const char *value)
{
	size_t i;
	int rc;

	if (setting_at(cfg, name, &i) == NULL)
		return SAYIN_EINVAL;
	rc = set_value(&cfg->values[i], value);
	if (rc == 0)
		cfg->source[i] = FROM_STORE;
	return rc;
}

static int is_loopback(const char *host, size_t len)
{
	if ((len == 9 && strncasecmp(host, "localhost", 9) == 0) ||
	    (len == 5 && strncmp(host, "[::1]", 5) == 0))
		return 1;
	if (len >= 4 && strncmp(host, "127.", 4) == 0) {
		for (size_t i = 4; i < len; i++) {
			if (!isdigit((unsigned char)host[i]) && host[i] != '.')
				return 0;
		}
		return 1;
	}
	return 0;
}

int config_check_url(const char *url, char *why, size_t len, int *insecure)
{
	const char *p, *host, *end;
	size_t hlen;

	*insecure = 0;
	if (strncasecmp(url, "https://", 8) == 0)
		p = url + 8;
	else if (strncasecmp(url, "http://", 7) == 0)
		p = url + 7;
	else {
		snprintf(why, len, "'%s' is not an http:// or https:// URL", url);
		return SAYIN_ECONFIG;
	}
	if (strpbrk(url, "?#") != NULL) {
		snprintf(why, len, "'%s' has a query or fragment: give a base URL", url);
		return SAYIN_ECONFIG;
	}
	for (const char *c = url; *c != '\0'; c++) {
		if ((unsigned char)*c <= ' ' || *c == 0x7f) {
			snprintf(why, len, "'%s' holds a space or control character", url);
			return SAYIN_ECONFIG;
		}
	}
	host = p;
	end = host + strcspn(host, "/");
	if (memchr(host, '@', (size_t)(end - host)) != NULL) {
		snprintf(why, len, "'%s' carries credentials (user@): give them as settings", url);
		return SAYIN_ECONFIG;
	}
	if (*host == '[') {
		const char *close = memchr(host, ']', (size_t)(end - host));
		char v6[INET6_ADDRSTRLEN];
		unsigned char bin[16];
		hlen = close != NULL ? (size_t)(close - host) + 1 : 0;
		if (hlen > 2 && (hlen - 2 >= sizeof(v6) ||
		                 (memcpy(v6, host + 1, hlen - 2), v6[hlen - 2] = '\0',
		                  inet_pton(AF_INET6, v6, bin) != 1))) {
			snprintf(why, len, "'%s': the host in brackets is not an IPv6 address", url);
			return SAYIN_ECONFIG;
		}
	} else {
		hlen = strcspn(host, ":/");
		/* A DNS name or an IPv4 address: letters, digits, '-', '.', '_'.
		 * Anything else ('\\', '%', ...) is read differently by
		 * different parsers (a browser takes '\\' for '/'). */
		for (size_t i = 0; i < hlen; i++) {
			unsigned char c = (unsigned char)host[i];
			if (!isalnum(c) && c != '-' && c != '.' && c != '_') {
				snprintf(why, len, "'%s': the host holds '%c'", url, c);
				return SAYIN_ECONFIG;
			}
		}
	}
	if (hlen == 0 || (*host == '[' && hlen <= 2)) {
		snprintf(why, len, "'%s' has no host", url);
		return SAYIN_ECONFIG;
	}
	if (host + hlen < end) {
		const char *port = host + hlen;
		int digits = 0;
		if (*port != ':')
			goto bad_port;
		for (port++; port < end; port++, digits++) {
			if (!isdigit((unsigned char)*port))
				goto bad_port;
		}
		if (digits == 0 || digits > 5 || host[hlen + 1] == '0' ||
		    atoi(host + hlen + 1) > 65535)
			goto bad_port; /* none, too long, 0 or a leading zero, too big */
	}
	*insecure = strncasecmp(url, "http://", 7) == 0 && !is_loopback(host, hlen);
	return 0;
bad_port:
	snprintf(why, len, "'%s' has a bad port", url);
	return SAYIN_ECONFIG;
}

/* The settings that are URLs, and those that are comma-separated lists of
 * URLs: checked by every load. */
static const char *const url_settings[] = { "public-url", "fastly-api-url", "cloudflare-api-url",
	                                    "cloudfront-api-url", "s3-endpoint", "x-api-url",
	                                    "facebook-api-url", NULL };
static const char *const url_list_settings[] = { "varnish-edges", "nginx-edges", "prewarm-edges",
	                                         NULL };

static void check_one_url(const config *cfg, const char *name, const char *url, size_t len,
                          struct loader *ld)
{
	char where[512], why[512], copy[1024];
	int insecure;

	snprintf(copy, sizeof(copy), "%.*s", (int)len, url);
	if (config_check_url(copy, why, sizeof(why), &insecure) != 0) {
		config_describe(cfg, name, where, sizeof(where));
		fail(ld, "%s: %s", where, why);
	}
}

static int check_urls(const config *cfg, struct loader *ld)
{
	unsigned before = ld->errors;

	for (size_t i = 0; url_settings[i] != NULL; i++) {
		const char *v = config_get(cfg, url_settings[i]);
		if (v != NULL && *v != '\0')
			check_one_url(cfg, url_settings[i], v, strlen(v), ld);
	}
	for (size_t i = 0; url_list_settings[i] != NULL; i++) {
		const char *v = config_get(cfg, url_list_settings[i]);
		while (v != NULL && *v != '\0') {
			size_t n = strcspn(v, ",");
			const char *item = v;
			size_t ilen = n;
			while (ilen > 0 && *item == ' ') {
				item++;
				ilen--;
			}
			while (ilen > 0 && item[ilen - 1] == ' ')
				ilen--;
			if (ilen > 0)
				check_one_url(cfg, url_list_settings[i], item, ilen, ld);
			v += n;
			if (*v == ',')
				v++;
		}
	}
	return ld->errors > before ? SAYIN_ECONFIG : 0;
}

/* The type of each setting config check knows, beyond the URLs: what the
 * programs would refuse when they read it. The origin's ranges live here,
 * read by the origin through config_get_ranged, so config check and the
 * origin cannot disagree; the publisher's are its readers' own (config
 * check runs them after these). max 0: no range here. */
#define MAX_CACHE_SECONDS 315360000ull /* ten years */
#define MAX_TIMEOUT_MS 86400000ull     /* a day */
enum kind { K_NUMBER, K_SIZE, K_ON_OFF, K_DECIMAL, K_LEVEL, K_LOG_TARGET };
static const struct {
	const char *name;
	enum kind kind;
	uint64_t min, max;
} kinds[] = {
	{ "map-size", K_SIZE, 0, 0 }, { "threads", K_NUMBER, 0, 1024 },
	{ "max-header-bytes", K_NUMBER, 256, 1 << 20 }, { "max-headers", K_NUMBER, 1, 10000 },
	{ "max-uri", K_NUMBER, 16, 1 << 20 }, { "max-connections", K_NUMBER, 1, 10000000 },
	{ "idle-timeout-ms", K_NUMBER, 1, MAX_TIMEOUT_MS },
	{ "header-timeout-ms", K_NUMBER, 1, MAX_TIMEOUT_MS },
	{ "write-timeout-ms", K_NUMBER, 1, MAX_TIMEOUT_MS },
	{ "shutdown-grace-ms", K_NUMBER, 0, MAX_TIMEOUT_MS },
	{ "tls-handshake-timeout-ms", K_NUMBER, 1, MAX_TIMEOUT_MS },
	{ "tls-ticket-rotate-s", K_NUMBER, 60, 604800 },
	{ "name-max-age", K_NUMBER, 0, MAX_CACHE_SECONDS },
	{ "name-shared-max-age", K_NUMBER, 0, MAX_CACHE_SECONDS },
	{ "stale-while-revalidate", K_NUMBER, 0, MAX_CACHE_SECONDS },
	{ "stale-if-error", K_NUMBER, 0, MAX_CACHE_SECONDS },
	{ "workers", K_NUMBER, 1, 64 }, { "queue", K_NUMBER, 0, 10000 },
	{ "bitrate", K_NUMBER, 0, 0 }, { "loudness-target", K_DECIMAL, 0, 0 },
	{ "max-input-bytes", K_SIZE, 0, 0 }, { "max-duration", K_NUMBER, 0, 0 },
	{ "decode-timeout-ms", K_NUMBER, 0, 0 }, { "decode-memory", K_SIZE, 0, 0 },
	{ "waveform-points", K_NUMBER, 0, 0 }, { "aac-fallback", K_ON_OFF, 0, 0 },
	{ "aac-bitrate", K_NUMBER, 0, 0 }, { "feed-items", K_NUMBER, 0, 0 },
	{ "feed-page-items", K_NUMBER, 0, 0 }, { "max-text", K_NUMBER, 0, 0 },
	{ "upload-per-author", K_NUMBER, 0, 0 }, { "upload-retry-slots", K_NUMBER, 0, 0 },
	{ "upload-min-rate", K_SIZE, 0, 0 }, { "upload-rate-window-ms", K_NUMBER, 0, 0 },
	{ "upload-rate-grace-ms", K_NUMBER, 0, 0 }, { "upload-deadline-ms", K_NUMBER, 0, 0 },
	{ "varnish-soft-purge", K_ON_OFF, 0, 0 }, { "fastly-soft-purge", K_ON_OFF, 0, 0 },
	{ "crosspost-timeout-ms", K_NUMBER, 0, 0 }, { "outbox-max-attempts", K_NUMBER, 0, 0 },
	{ "outbox-max-age", K_NUMBER, 0, 0 }, { "outbox-lease-ms", K_NUMBER, 0, 0 },
	{ "outbox-backoff-ms", K_NUMBER, 0, 0 }, { "log-level", K_LEVEL, 0, 0 },
	{ "access-log", K_LOG_TARGET, 0, 0 }, { "api-access-log", K_LOG_TARGET, 0, 0 },
};

int config_get_ranged(const config *cfg, const char *name, uint64_t *out, char *err,
                      size_t errlen)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		if (strcmp(kinds[i].name, name) != 0 || kinds[i].max == 0)
			continue;
		return get_number(cfg, name, kinds[i].kind == K_SIZE, kinds[i].min, kinds[i].max, out,
		                  err, errlen);
	}
	snprintf(err, errlen, "%s: no range is known for it (a bug)", name);
	return SAYIN_ECONFIG;
}

static void check_kinds(const config *cfg, struct loader *ld)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		const char *v = config_get(cfg, kinds[i].name);
		char where[512], *end;
		uint64_t n;
		const char *want = NULL;

		if (v == NULL)
			continue;
		switch (kinds[i].kind) {
		case K_NUMBER:
		case K_SIZE:
			if (parse_u64(v, kinds[i].kind == K_SIZE, &n) != 0) {
				want = kinds[i].kind == K_SIZE ? "a size (e.g. 512M, 64G)" : "a number";
			} else if (kinds[i].max != 0) {
				char why[512];
				if (config_get_ranged(cfg, kinds[i].name, &n, why, sizeof(why)) != 0)
					fail(ld, "%s", why);
			}
			break;
		case K_LOG_TARGET:
			/* What accesslog_configure takes, without opening the file:
			 * only the directory is checked (the file is created). */
			if (strcmp(v, "off") != 0 && strcmp(v, "on") != 0 && strcmp(v, "stderr") != 0) {
				char *dir = strdup(v);
				if (strchr(v, '/') == NULL)
					want = "off, stderr or a file path (with a '/')";
				else if (dir != NULL && access(dirname(dir), W_OK) != 0) {
					config_describe(cfg, kinds[i].name, where, sizeof(where));
					fail(ld, "%s: cannot write in the folder of %s: %s", where, v,
					     strerror(errno));
				}
				free(dir);
			}
			break;
		case K_ON_OFF:
			if (strcmp(v, "on") != 0 && strcmp(v, "off") != 0)
				want = "on or off";
			break;
		case K_DECIMAL:
			errno = 0;
			(void)strtod(v, &end);
			if (end == v || *end != '\0' || errno != 0)
				want = "a decimal number";
			break;
		case K_LEVEL:
			if (strcmp(v, "error") != 0 && strcmp(v, "warn") != 0 &&
			    strcmp(v, "info") != 0 && strcmp(v, "debug") != 0)
				want = "error, warn, info or debug";
			break;
		}
		if (want != NULL) {
			config_describe(cfg, kinds[i].name, where, sizeof(where));
			fail(ld, "%s: '%s' is not %s", where, v, want);
		}
	}
}

int config_check(int argc, char **argv, const config_arg *args, size_t nargs, FILE *report,
                 config **out)
{
	struct loader ld = { NULL, 0, report, 0 };
	config *cfg = NULL;
	int rc = load_config(argc, argv, args, nargs, &ld, &cfg);

	if (rc < 0)
		return rc;
	check_kinds(cfg, &ld);
	*out = cfg;
	return (int)ld.errors;
}

void config_show(const config *cfg, FILE *out)
{
	static const char *const names[] = { "default", "file", "environment", "flag", "store" };

	for (size_t i = 0; i < N_SETTINGS; i++) {
		const setting *s = &settings[i];
		const char *v = cfg->values[i];
		char where[512];

		if (cfg->source[i] == FROM_FILE)
			snprintf(where, sizeof(where), "%s:%d", cfg->file, cfg->line[i]);
		else if (cfg->source[i] == FROM_ENV)
			snprintf(where, sizeof(where), "environment $%s", s->env);
		else if (cfg->source[i] == FROM_FLAG)
			snprintf(where, sizeof(where), "flag --%s", s->name);
		else
			snprintf(where, sizeof(where), "%s", names[cfg->source[i]]);
		/* A secret read from its -file companion has that one's source. */
		if (v != NULL && is_secret(s))
			v = "********";
		fprintf(out, "%-28s %-40s # %s\n", s->name, v != NULL ? v : "(unset)", where);
	}
}

void config_usage(FILE *out, const config_arg *args, size_t nargs, const char *const *names)
{
	size_t idx;

	if (nargs > 0)
		fprintf(out, "\nArguments:\n");
	for (size_t i = 0; i < nargs; i++) {
		char flag[64];
		snprintf(flag, sizeof(flag), "--%s%s%s", args[i].name, args[i].metavar ? " " : "",
		         args[i].metavar ? args[i].metavar : "");
		fprintf(out, "  %-24s %s\n", flag, args[i].help);
	}
	fprintf(out, "\nSettings (flag > environment > --config FILE > default):\n");
	for (; names != NULL && *names != NULL; names++) {
		const setting *s = find_setting(*names, strlen(*names), &idx);
		if (s == NULL)
			continue;
		fprintf(out, "  --%-22s %s\n  %24s [%s] %s, $%s, default: %s\n", s->name, s->help, "",
		        s->section, s->key, s->env, s->def ? s->def : "(see above)");
	}
	fprintf(out, "  --%-22s %s\n", "config FILE", "INI file of settings (also $SAYIN_CONFIG)");
}

void config_print_reference(FILE *out)
{
	fprintf(out, "| flag | INI | environment | default | meaning |\n|---|---|---|---|---|\n");
	for (size_t i = 0; i < N_SETTINGS; i++) {
		const setting *s = &settings[i];
		fprintf(out, "| `--%s` | `[%s] %s` | `%s` | %s | %s |\n", s->name, s->section, s->key,
		        s->env, s->def ? s->def : "(derived)", s->help);
	}
}

/* Prints an INI file holding every setting, commented out with its default,
 * grouped by section in the order the sections first appear in the table.
 * A setting without a default is shown with an empty value: it stays unset
 * while commented. */
void config_print_example(FILE *out)
{
	fprintf(out, "; sayin.ini: every setting of sayin-origin and sayin-publisher, commented\n"
	             "; out with its default (made by `sayin-publisher settings --example`).\n"
	             "; A flag overrides the environment, which overrides this file, which\n"
	             "; overrides the default. A setting shown empty has no default: leave it\n"
	             "; commented to keep it unset. Secrets belong in a NAME_file (a systemd\n"
	             "; credential), or this file must be mode 600. See sayin-publisher(8) and\n"
	             "; publisher/README.md, Settings.\n");
	for (size_t i = 0; i < N_SETTINGS; i++) {
		int first = 1;
		for (size_t j = 0; j < i; j++) {
			if (strcmp(settings[j].section, settings[i].section) == 0)
				first = 0;
		}
		if (!first)
			continue;
		fprintf(out, "\n[%s]\n", settings[i].section);
		for (size_t j = i; j < N_SETTINGS; j++) {
			const setting *s = &settings[j];
			if (strcmp(s->section, settings[i].section) != 0)
				continue;
			fprintf(out, "\n; %s\n; flag --%s, environment $%s%s\n;%s =%s%s\n", s->help, s->name,
			        s->env, s->def ? "" : "; no default", s->key, s->def ? " " : "",
			        s->def ? s->def : "");
		}
	}
}

/* config_settings: every setting either program knows and what each one
 * is: its flag, INI key, variable and default; which are secrets and URLs;
 * the type and range config check and the origin read; and the help,
 * reference table and example file printed from them. config.c reads the
 * settings (how); this file says what exists. */
#include "core/config_internal.h"

#include "core/config.h"

#include <stdio.h>
#include <string.h>

/* Every setting either program knows. publisher/README.md's table is what
 * `sayin-publisher settings` prints (test_config checks it). */
const setting config__settings[] = {
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

const size_t config__n_settings = sizeof(config__settings) / sizeof(config__settings[0]);

/* The settings that are credentials. Each has a NAME-file companion right
 * after it in the table; a config file that sets one must be private; a
 * flag that gives one is warned about and blanked in argv. (The social
 * accounts are a private file already, see --social-accounts.) */
static const char *const secret_settings[] = { "fastly-api-key", "cloudflare-api-token",
	                                       "aws-secret-access-key" };

int config__is_secret(const setting *s)
{
	for (size_t i = 0; i < sizeof(secret_settings) / sizeof(secret_settings[0]); i++) {
		if (strcmp(s->name, secret_settings[i]) == 0)
			return 1;
	}
	return 0;
}

/* The settings that are URLs, and those that are comma-separated lists of
 * URLs: checked by every load. */
const char *const config__url_settings[] = { "public-url", "fastly-api-url", "cloudflare-api-url",
	                                    "cloudfront-api-url", "s3-endpoint", "x-api-url",
	                                    "facebook-api-url", NULL };
const char *const config__url_list_settings[] = { "varnish-edges", "nginx-edges", "prewarm-edges",
	                                         NULL };

/* The type of each setting config check knows, beyond the URLs: what the
 * programs would refuse when they read it. The origin's ranges live here,
 * read by the origin through config_get_ranged, so config check and the
 * origin cannot disagree; the publisher's are its readers' own (config
 * check runs them after these). max 0: no range here. */
#define MAX_CACHE_SECONDS 315360000ull /* ten years */
#define MAX_TIMEOUT_MS 86400000ull     /* a day */
const config_kind config__kinds[] = {
	{ "map-size", CONFIG_K_SIZE, 0, 0 }, { "threads", CONFIG_K_NUMBER, 0, 1024 },
	{ "max-header-bytes", CONFIG_K_NUMBER, 256, 1 << 20 },
	{ "max-headers", CONFIG_K_NUMBER, 1, 10000 },
	{ "max-uri", CONFIG_K_NUMBER, 16, 1 << 20 }, { "max-connections", CONFIG_K_NUMBER, 1, 10000000 },
	{ "idle-timeout-ms", CONFIG_K_NUMBER, 1, MAX_TIMEOUT_MS },
	{ "header-timeout-ms", CONFIG_K_NUMBER, 1, MAX_TIMEOUT_MS },
	{ "write-timeout-ms", CONFIG_K_NUMBER, 1, MAX_TIMEOUT_MS },
	{ "shutdown-grace-ms", CONFIG_K_NUMBER, 0, MAX_TIMEOUT_MS },
	{ "tls-handshake-timeout-ms", CONFIG_K_NUMBER, 1, MAX_TIMEOUT_MS },
	{ "tls-ticket-rotate-s", CONFIG_K_NUMBER, 1, 604800 },
	{ "name-max-age", CONFIG_K_NUMBER, 0, MAX_CACHE_SECONDS },
	{ "name-shared-max-age", CONFIG_K_NUMBER, 0, MAX_CACHE_SECONDS },
	{ "stale-while-revalidate", CONFIG_K_NUMBER, 0, MAX_CACHE_SECONDS },
	{ "stale-if-error", CONFIG_K_NUMBER, 0, MAX_CACHE_SECONDS },
	{ "workers", CONFIG_K_NUMBER, 1, 64 }, { "queue", CONFIG_K_NUMBER, 0, 10000 },
	{ "bitrate", CONFIG_K_NUMBER, 0, 0 }, { "loudness-target", CONFIG_K_DECIMAL, 0, 0 },
	{ "max-input-bytes", CONFIG_K_SIZE, 0, 0 }, { "max-duration", CONFIG_K_NUMBER, 0, 0 },
	{ "decode-timeout-ms", CONFIG_K_NUMBER, 0, 0 }, { "decode-memory", CONFIG_K_SIZE, 0, 0 },
	{ "waveform-points", CONFIG_K_NUMBER, 0, 0 }, { "aac-fallback", CONFIG_K_ON_OFF, 0, 0 },
	{ "aac-bitrate", CONFIG_K_NUMBER, 0, 0 }, { "feed-items", CONFIG_K_NUMBER, 0, 0 },
	{ "feed-page-items", CONFIG_K_NUMBER, 0, 0 }, { "max-text", CONFIG_K_NUMBER, 0, 0 },
	{ "upload-per-author", CONFIG_K_NUMBER, 0, 0 }, { "upload-retry-slots", CONFIG_K_NUMBER, 0, 0 },
	{ "upload-min-rate", CONFIG_K_SIZE, 0, 0 }, { "upload-rate-window-ms", CONFIG_K_NUMBER, 0, 0 },
	{ "upload-rate-grace-ms", CONFIG_K_NUMBER, 0, 0 }, { "upload-deadline-ms", CONFIG_K_NUMBER, 0, 0 },
	{ "varnish-soft-purge", CONFIG_K_ON_OFF, 0, 0 }, { "fastly-soft-purge", CONFIG_K_ON_OFF, 0, 0 },
	{ "crosspost-timeout-ms", CONFIG_K_NUMBER, 0, 0 },
	{ "outbox-max-attempts", CONFIG_K_NUMBER, 0, 0 },
	{ "outbox-max-age", CONFIG_K_NUMBER, 0, 0 }, { "outbox-lease-ms", CONFIG_K_NUMBER, 0, 0 },
	{ "outbox-backoff-ms", CONFIG_K_NUMBER, 0, 0 }, { "log-level", CONFIG_K_LEVEL, 0, 0 },
	{ "access-log", CONFIG_K_LOG_TARGET, 0, 0 }, { "api-access-log", CONFIG_K_LOG_TARGET, 0, 0 },
};

const size_t config__n_kinds = sizeof(config__kinds) / sizeof(config__kinds[0]);

const setting *config__find_setting(const char *name, size_t len, size_t *index)
{
	for (size_t i = 0; i < config__n_settings; i++) {
		const char *n = config__settings[i].name;
		if (strlen(n) == len && strncmp(n, name, len) == 0) {
			*index = i;
			return &config__settings[i];
		}
	}
	return NULL;
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
		const setting *s = config__find_setting(*names, strlen(*names), &idx);
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
	for (size_t i = 0; i < config__n_settings; i++) {
		const setting *s = &config__settings[i];
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
	for (size_t i = 0; i < config__n_settings; i++) {
		int first = 1;
		for (size_t j = 0; j < i; j++) {
			if (strcmp(config__settings[j].section, config__settings[i].section) == 0)
				first = 0;
		}
		if (!first)
			continue;
		fprintf(out, "\n[%s]\n", config__settings[i].section);
		for (size_t j = i; j < config__n_settings; j++) {
			const setting *s = &config__settings[j];
			if (strcmp(s->section, config__settings[i].section) != 0)
				continue;
			fprintf(out, "\n; %s\n; flag --%s, environment $%s%s\n;%s =%s%s\n", s->help, s->name,
			        s->env, s->def ? "" : "; no default", s->key, s->def ? " " : "",
			        s->def ? s->def : "");
		}
	}
}

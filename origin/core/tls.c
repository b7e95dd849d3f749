/* tls: TLS 1.2/1.3 server streams on OpenSSL, driven by libuv polls. */
#include "core/tls.h"

#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Mozilla's "intermediate" configuration (ssl-config.mozilla.org, v5.7):
 * TLS 1.2 suites with forward secrecy and AEAD only; TLS 1.3's defaults. */
#define TLS12_CIPHERS                                                                      \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                        \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                        \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                        \
	"DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define TLS_GROUPS "X25519:prime256v1:secp384r1"

/* h2o's record rule (lib/common/socket.c): records of one segment until
 * this much was written on the connection, then full ones. */
#define SMALL_RECORD_BYTES 1400
#define SMALL_RECORD_PHASE (64 * 1024)
#define FULL_RECORD 16384
/* Bytes a record adds around its payload, most of them: TLS 1.3 (5 header,
 * 1 inner type, 16 tag) and TLS 1.2 AES-GCM (5 header, 8 nonce, 16 tag). */
#define OVERHEAD_TLS13 22
#define OVERHEAD_TLS12 29
/* The write buffer under OpenSSL, so that the small records of a response
 * leave in one write(2); a full record bypasses it. */
#define WRITE_BUFFER (FULL_RECORD + 512)
/* Reads per poll event before other connections get their turn. */
#define READS_PER_EVENT 16
#define FAIL_LOG_INTERVAL_S 10
#define DEFAULT_TICKET_ROTATE_S 3600

/* A session-ticket key: its name (sent in the ticket), AES-256-CBC key and
 * HMAC-SHA256 key (RFC 5077's recommended construction, what OpenSSL's
 * own ticket keys use). */
struct ticket_key {
	unsigned char name[16];
	unsigned char aes[32];
	unsigned char hmac[32];
	time_t created;
	int valid;
};

struct tls_server {
	/* The context new connections get; swapped whole by a reload.
	 * ctx_lock guards the pointer (a stream takes its own reference
	 * under it). */
	uv_mutex_t ctx_lock;
	SSL_CTX *ctx;
	int64_t not_after;
	char *cert_file, *key_file, *cert_setting, *key_setting;

	/* The ticket keys: current encrypts, previous still decrypts. */
	uv_mutex_t key_lock;
	struct ticket_key current, previous;
	uint64_t rotate_s;

	_Atomic uint64_t handshakes_ok, handshakes_failed, handshakes_timeout, resumed, ktls;
	_Atomic int64_t last_fail_log;   /* unix seconds */
	_Atomic uint64_t fails_unlogged;
};

struct tls_stream {
	uv_poll_t poll;
	uv_idle_t kick; /* bytes OpenSSL holds are read on the next turn */
	int handles_open;
	int fd;
	SSL *ssl;
	BIO *sock_bio;
	tls_server *ts;
	void *data;
	tls_status_cb on_handshake;
	tls_alloc_cb alloc;
	tls_read_cb read;
	int events;          /* what the poll waits for now */
	int reading;
	int handshake_done;
	int read_wants_write; /* the last SSL_read/handshake wanted to write */
	int write_wants_read; /* the last SSL_write/flush wanted to read */
	int write_blocked;    /* the queue waits for the socket */
	int ktls_send;
	int closing;
	int failed;           /* a fatal TLS or socket error: no more I/O */
	uint64_t bytes_written;
	tls_write *wq_head, *wq_tail;
	tls_status_cb shutdown_cb;
	int shutdown_state;   /* 0 none, 1 requested, 2 done */
	void (*on_closed)(void *data);
};

static int ex_index = -1; /* SSL_CTX ex_data slot holding the tls_server */
static uv_once_t ex_once = UV_ONCE_INIT;

static void ex_index_init(void)
{
	ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

const char *tls_library_version(void)
{
	return OpenSSL_version(OPENSSL_VERSION);
}

/* ---- errors ---- */

/* OpenSSL's reason for the last error on this thread's queue, or "unknown". */
static const char *ssl_reason(void)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
	return r != NULL ? r : "unknown";
}

/* Counts a failed handshake and logs at most one line per
 * FAIL_LOG_INTERVAL_S per server (scanners must not flood the log). */
static void handshake_failed(tls_server *ts, const char *reason)
{
	int64_t now = (int64_t)time(NULL);
	int64_t last = atomic_load_explicit(&ts->last_fail_log, memory_order_relaxed);

	atomic_fetch_add_explicit(&ts->handshakes_failed, 1, memory_order_relaxed);
	if (now - last < FAIL_LOG_INTERVAL_S ||
	    !atomic_compare_exchange_strong(&ts->last_fail_log, &last, now)) {
		atomic_fetch_add_explicit(&ts->fails_unlogged, 1, memory_order_relaxed);
		return;
	}
	log_warn("tls: handshake failed: %s (and %" PRIu64 " more not logged)", reason,
	         atomic_exchange(&ts->fails_unlogged, 0));
}

/* ---- ticket keys ---- */

static int ticket_key_make(struct ticket_key *k)
{
	if (RAND_bytes(k->name, sizeof(k->name)) != 1 || RAND_bytes(k->aes, sizeof(k->aes)) != 1 ||
	    RAND_bytes(k->hmac, sizeof(k->hmac)) != 1)
		return -1;
	k->created = time(NULL);
	k->valid = 1;
	return 0;
}

/* Under key_lock: a new current key once the current one is rotate_s old. */
static void ticket_keys_rotate(tls_server *ts)
{
	struct ticket_key next;
	time_t now = time(NULL);

	if (ts->current.valid && now - ts->current.created < (time_t)ts->rotate_s)
		return;
	if (ticket_key_make(&next) != 0) {
		log_error("tls: cannot make a session-ticket key: %s", ssl_reason());
		return;
	}
	ts->previous = ts->current;
	ts->current = next;
	/* A key older than two periods decrypts nothing any more. */
	if (ts->previous.valid && now - ts->previous.created >= 2 * (time_t)ts->rotate_s)
		ts->previous.valid = 0;
	OPENSSL_cleanse(&next, sizeof(next));
}

static int ticket_crypto_init(const struct ticket_key *k, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                              EVP_MAC_CTX *hctx, int enc)
{
	OSSL_PARAM params[2];
	int ok;

	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (EVP_MAC_CTX_set_params(hctx, params) != 1 ||
	    EVP_MAC_init(hctx, k->hmac, sizeof(k->hmac), NULL) != 1)
		return -1;
	if (enc)
		ok = EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv);
	else
		ok = EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv);
	return ok == 1 ? 0 : -1;
}

/* OpenSSL's ticket callback: 1 ticket ok, 2 ok but renew it, 0 not ours
 * (a full handshake follows), -1 error. */
static int on_ticket_key(SSL *ssl, unsigned char key_name[16], unsigned char *iv,
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	tls_server *ts = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ex_index);
	struct ticket_key k;
	int rc = 0;

	uv_mutex_lock(&ts->key_lock);
	ticket_keys_rotate(ts);
	if (enc) {
		k = ts->current;
		rc = k.valid ? 1 : -1;
	} else if (ts->current.valid && memcmp(key_name, ts->current.name, 16) == 0) {
		k = ts->current;
		rc = 1;
	} else if (ts->previous.valid && memcmp(key_name, ts->previous.name, 16) == 0) {
		k = ts->previous;
		rc = 2;
	}
	uv_mutex_unlock(&ts->key_lock);
	if (rc <= 0)
		return rc;
	if (enc) {
		if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1)
			rc = -1;
		else
			memcpy(key_name, k.name, 16);
	}
	if (rc > 0 && ticket_crypto_init(&k, iv, cctx, hctx, enc) != 0)
		rc = -1;
	OPENSSL_cleanse(&k, sizeof(k));
	return rc;
}

/* ---- the context ---- */

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char ours[] = "\x08http/1.1";
	unsigned char *sel;

	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL; /* RFC 7301 3.2: no_application_protocol */
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static int file_readable(const char *setting, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		snprintf(err, errlen, "%s %s: cannot read: %s", setting, path, strerror(errno));
		return SAYIN_ECONFIG;
	}
	fclose(f);
	return 0;
}

static int64_t cert_not_after(SSL_CTX *ctx)
{
	X509 *cert = SSL_CTX_get0_certificate(ctx);
	const ASN1_TIME *t = cert != NULL ? X509_get0_notAfter(cert) : NULL;
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return (int64_t)timegm(&tm);
}

/* A context for ts's files; NULL with err set. */
static SSL_CTX *context_build(tls_server *ts, int64_t *not_after, char *err, size_t errlen)
{
	SSL_CTX *ctx;

	if (file_readable(ts->cert_setting, ts->cert_file, err, errlen) != 0 ||
	    file_readable(ts->key_setting, ts->key_file, err, errlen) != 0)
		return NULL;
	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		snprintf(err, errlen, "cannot create a TLS context: %s", ssl_reason());
		return NULL;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, ts->cert_file) != 1) {
		snprintf(err, errlen, "%s %s: not a PEM certificate chain (%s)", ts->cert_setting,
		         ts->cert_file, ssl_reason());
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, ts->key_file, SSL_FILETYPE_PEM) != 1) {
		snprintf(err, errlen, "%s %s: not a PEM private key (%s)", ts->key_setting,
		         ts->key_file, ssl_reason());
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "%s %s does not match the certificate in %s %s (%s)",
		         ts->key_setting, ts->key_file, ts->cert_setting, ts->cert_file, ssl_reason());
		goto fail;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) != 1 || SSL_CTX_set_dh_auto(ctx, 1) != 1 ||
	    SSL_CTX_set_num_tickets(ctx, 1) != 1 ||
	    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key) != 1 ||
	    SSL_CTX_set_ex_data(ctx, ex_index, ts) != 1) {
		snprintf(err, errlen, "cannot configure TLS: %s", ssl_reason());
		goto fail;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
	                             SSL_OP_ENABLE_KTLS | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1);
	SSL_CTX_clear_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
	/* Stateless tickets only: a server-side cache would not be shared
	 * between loop threads or processes. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_timeout(ctx, (long)(2 * ts->rotate_s));
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
	*not_after = cert_not_after(ctx);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static char *dup_or_null(const char *s, int *nomem)
{
	char *d = strdup(s != NULL ? s : "");
	if (d == NULL)
		*nomem = 1;
	return d;
}

int tls_server_new(const tls_options *opt, tls_server **out, char *err, size_t errlen)
{
	tls_server *ts;
	int nomem = 0;

	if (opt == NULL || opt->cert_file == NULL || opt->key_file == NULL) {
		snprintf(err, errlen, "TLS needs a certificate and a key");
		return SAYIN_EINVAL;
	}
	uv_once(&ex_once, ex_index_init);
	if (ex_index < 0) {
		snprintf(err, errlen, "cannot initialize OpenSSL");
		return -ENOMEM;
	}
	ts = calloc(1, sizeof(*ts));
	if (ts == NULL)
		return -ENOMEM;
	ts->cert_file = dup_or_null(opt->cert_file, &nomem);
	ts->key_file = dup_or_null(opt->key_file, &nomem);
	ts->cert_setting = dup_or_null(opt->cert_setting ? opt->cert_setting : "tls-cert", &nomem);
	ts->key_setting = dup_or_null(opt->key_setting ? opt->key_setting : "tls-key", &nomem);
	ts->rotate_s = opt->ticket_rotate_s > 0 ? opt->ticket_rotate_s : DEFAULT_TICKET_ROTATE_S;
	if (nomem || uv_mutex_init(&ts->ctx_lock) != 0) {
		free(ts->cert_file);
		free(ts->key_file);
		free(ts->cert_setting);
		free(ts->key_setting);
		free(ts);
		return -ENOMEM;
	}
	if (uv_mutex_init(&ts->key_lock) != 0) {
		uv_mutex_destroy(&ts->ctx_lock);
		ts->ctx = NULL;
		tls_server_free(ts);
		return -ENOMEM;
	}
	ts->ctx = context_build(ts, &ts->not_after, err, errlen);
	if (ts->ctx == NULL) {
		tls_server_free(ts);
		return SAYIN_ECONFIG;
	}
	uv_mutex_lock(&ts->key_lock);
	ticket_keys_rotate(ts);
	uv_mutex_unlock(&ts->key_lock);
	*out = ts;
	return 0;
}

int tls_server_reload(tls_server *ts, char *err, size_t errlen)
{
	int64_t not_after = 0;
	SSL_CTX *ctx = context_build(ts, &not_after, err, errlen), *old;

	if (ctx == NULL)
		return SAYIN_ECONFIG;
	uv_mutex_lock(&ts->ctx_lock);
	old = ts->ctx;
	ts->ctx = ctx;
	ts->not_after = not_after;
	uv_mutex_unlock(&ts->ctx_lock);
	SSL_CTX_free(old); /* streams hold their own references */
	return 0;
}

void tls_server_free(tls_server *ts)
{
	if (ts == NULL)
		return;
	SSL_CTX_free(ts->ctx);
	OPENSSL_cleanse(&ts->current, sizeof(ts->current));
	OPENSSL_cleanse(&ts->previous, sizeof(ts->previous));
	uv_mutex_destroy(&ts->ctx_lock);
	uv_mutex_destroy(&ts->key_lock);
	free(ts->cert_file);
	free(ts->key_file);
	free(ts->cert_setting);
	free(ts->key_setting);
	free(ts);
}

void tls_server_stats(const tls_server *ts, tls_stats *out)
{
	tls_server *m = (tls_server *)ts; /* the lock is not part of the value */

	out->handshakes_ok = atomic_load_explicit(&ts->handshakes_ok, memory_order_relaxed);
	out->handshakes_failed = atomic_load_explicit(&ts->handshakes_failed, memory_order_relaxed);
	out->handshakes_timeout = atomic_load_explicit(&ts->handshakes_timeout, memory_order_relaxed);
	out->resumed = atomic_load_explicit(&ts->resumed, memory_order_relaxed);
	out->ktls = atomic_load_explicit(&ts->ktls, memory_order_relaxed);
	uv_mutex_lock(&m->ctx_lock);
	out->not_after = ts->not_after;
	uv_mutex_unlock(&m->ctx_lock);
}

void tls_server_count_timeout(tls_server *ts)
{
	atomic_fetch_add_explicit(&ts->handshakes_timeout, 1, memory_order_relaxed);
}

/* ---- metrics ---- */

static double count_of(_Atomic uint64_t *counter)
{
	return (double)atomic_load_explicit(counter, memory_order_relaxed);
}

static double stat_ok(void *arg)
{
	return count_of(&((tls_server *)arg)->handshakes_ok);
}

static double stat_failed(void *arg)
{
	return count_of(&((tls_server *)arg)->handshakes_failed);
}

static double stat_timeout(void *arg)
{
	return count_of(&((tls_server *)arg)->handshakes_timeout);
}

static double stat_resumed(void *arg)
{
	return count_of(&((tls_server *)arg)->resumed);
}

static double stat_ktls(void *arg)
{
	return count_of(&((tls_server *)arg)->ktls);
}

static double stat_not_after(void *arg)
{
	tls_stats s;
	tls_server_stats(arg, &s);
	return (double)s.not_after;
}

int tls_metrics_define(struct metrics *reg, tls_server *ts)
{
	static const struct {
		const char *name, *help, *labels;
		double (*read)(void *arg);
		int counter;
	} series[] = {
		{ "sayin_tls_handshakes_total",
		  "TLS handshakes by result (failed: a protocol error such as an old version, no "
		  "shared cipher or plain HTTP; timeout: not complete within "
		  "--tls-handshake-timeout-ms).",
		  "result=\"ok\"", stat_ok, 1 },
		{ "sayin_tls_handshakes_total", "", "result=\"failed\"", stat_failed, 1 },
		{ "sayin_tls_handshakes_total", "", "result=\"timeout\"", stat_timeout, 1 },
		{ "sayin_tls_resumed_total", "TLS handshakes that resumed a session from a ticket.",
		  NULL, stat_resumed, 1 },
		{ "sayin_tls_ktls_total",
		  "TLS connections whose sends the kernel encrypts (kTLS; needs Linux's tls module).",
		  NULL, stat_ktls, 1 },
		{ "sayin_tls_certificate_expiry_timestamp_seconds",
		  "notAfter of the certificate in force, unix time (SIGHUP reloads it).", NULL,
		  stat_not_after, 0 },
	};

	for (size_t i = 0; i < sizeof(series) / sizeof(series[0]); i++) {
		metrics_id id = series[i].counter
		                        ? metrics_counter_fn(reg, series[i].name, series[i].help,
		                                             series[i].labels, series[i].read, ts)
		                        : metrics_gauge_fn(reg, series[i].name, series[i].help,
		                                           series[i].labels, series[i].read, ts);
		if (id < 0)
			return id;
	}
	return 0;
}

/* ---- streams: polling ---- */

static void on_poll(uv_poll_t *poll, int status, int events);
static void stream_reads(tls_stream *s);

/* Polls for what the stream waits on now. */
static void stream_update_poll(tls_stream *s)
{
	int events = 0;

	if (s->closing)
		return; /* uv_close stopped the poll */
	if (!s->failed) {
		if (s->reading || !s->handshake_done)
			events |= s->read_wants_write ? UV_WRITABLE : UV_READABLE;
		if (s->write_blocked)
			events |= s->write_wants_read ? UV_READABLE : UV_WRITABLE;
	}
	if (events == s->events)
		return;
	s->events = events;
	if (events == 0)
		uv_poll_stop(&s->poll);
	else
		uv_poll_start(&s->poll, events, on_poll);
}

static void on_kick(uv_idle_t *idle)
{
	tls_stream *s = idle->data;

	uv_idle_stop(idle);
	stream_reads(s);
}

static void stream_kick(tls_stream *s)
{
	if (!s->closing)
		uv_idle_start(&s->kick, on_kick);
}

/* ---- streams: writing ---- */

static size_t record_payload(const tls_stream *s, size_t remaining)
{
	size_t max = FULL_RECORD;

	if (!s->ktls_send && s->bytes_written < SMALL_RECORD_PHASE)
		max = SMALL_RECORD_BYTES -
		      (SSL_version(s->ssl) == TLS1_3_VERSION ? OVERHEAD_TLS13 : OVERHEAD_TLS12);
	return remaining < max ? remaining : max;
}

/* The socket took everything OpenSSL buffered: 0; -1 would block; or a
 * negative errno. */
static int stream_flush(tls_stream *s)
{
	BIO *wbio = SSL_get_wbio(s->ssl);

	if (BIO_wpending(wbio) == 0)
		return 0;
	if (BIO_flush(wbio) == 1)
		return 0;
	if (BIO_should_retry(wbio)) {
		s->write_wants_read = 0;
		return -1;
	}
	return errno != 0 ? -errno : UV_EPIPE;
}

/* One SSL_write; returns bytes taken, -1 would block (wants noted), or a
 * negative errno other than -1. */
static ssize_t stream_ssl_write(tls_stream *s, const char *p, size_t len)
{
	int n, e;

	ERR_clear_error();
	errno = 0;
	n = SSL_write(s->ssl, p, (int)len);
	if (n > 0)
		return n;
	e = SSL_get_error(s->ssl, n);
	if (e == SSL_ERROR_WANT_WRITE) {
		s->write_wants_read = 0;
		return -1;
	}
	if (e == SSL_ERROR_WANT_READ) {
		s->write_wants_read = 1;
		return -1;
	}
	if (e == SSL_ERROR_SYSCALL && errno != 0)
		return -errno;
	return UV_EPIPE;
}

static void stream_fail_writes(tls_stream *s, int status);

/* Sends what is queued. Returns 0 when the queue is empty (head_done says
 * whether `head` completed here), -1 when it waits for the socket, or a
 * negative errno after which the stream is failed. Callbacks of writes
 * other than `head` run here. */
static int stream_pump(tls_stream *s, const tls_write *head)
{
	tls_write *w;

	while ((w = s->wq_head) != NULL) {
		while (w->index < w->n_bufs) {
			uv_buf_t *b = &w->bufs[w->index];
			size_t left = b->len - w->off;
			ssize_t n;

			if (left == 0) {
				w->index++;
				w->off = 0;
				continue;
			}
			n = stream_ssl_write(s, b->base + w->off, record_payload(s, left));
			if (n == -1)
				goto blocked;
			if (n < 0)
				return (int)n;
			w->off += (size_t)n;
			s->bytes_written += (uint64_t)n;
		}
		{
			int rc = stream_flush(s);
			if (rc == -1)
				goto blocked;
			if (rc < 0)
				return rc;
		}
		s->wq_head = w->next;
		if (s->wq_head == NULL)
			s->wq_tail = NULL;
		w->next = NULL;
		if (w != head) {
			w->cb(w->cb_data, 0);
			if (s->closing || s->failed)
				return 0;
		}
	}
	s->write_blocked = 0;
	return 0;
blocked:
	s->write_blocked = 1;
	return -1;
}

static void stream_shutdown_step(tls_stream *s);

/* Writes from the poll: callbacks for every write that completes. */
static void stream_writes(tls_stream *s)
{
	int rc = stream_pump(s, NULL);

	if (rc < -1) {
		stream_fail_writes(s, rc);
		return;
	}
	if (s->closing || s->failed)
		return;
	if (rc == 0 && s->shutdown_state == 1)
		stream_shutdown_step(s);
	stream_update_poll(s);
}

int tls_stream_write(tls_stream *s, tls_write *w, const uv_buf_t *bufs, unsigned n_bufs,
                     tls_status_cb cb, void *cb_data)
{
	int was_empty = s->wq_head == NULL, rc;

	if (s->closing || s->failed || s->shutdown_state != 0 || n_bufs > 2)
		return s->failed ? UV_EPIPE : UV_EINVAL;
	memset(w, 0, sizeof(*w));
	for (unsigned i = 0; i < n_bufs; i++)
		w->bufs[i] = bufs[i];
	w->n_bufs = n_bufs;
	w->cb = cb;
	w->cb_data = cb_data;
	if (s->wq_tail != NULL)
		s->wq_tail->next = w;
	else
		s->wq_head = w;
	s->wq_tail = w;
	if (!was_empty)
		return 0;
	rc = stream_pump(s, w);
	if (rc == 0)
		return 1; /* w was the head, and it is done */
	if (rc == -1) {
		stream_update_poll(s);
		return 0;
	}
	/* Failed: w leaves the queue unreported, the caller hears rc. */
	s->wq_head = s->wq_tail = NULL;
	s->failed = 1;
	stream_update_poll(s);
	return rc;
}

size_t tls_stream_write_queue_size(const tls_stream *s)
{
	size_t n = 0;

	for (const tls_write *w = s->wq_head; w != NULL; w = w->next) {
		for (unsigned i = w->index; i < w->n_bufs; i++)
			n += w->bufs[i].len - (i == w->index ? w->off : 0);
	}
	if (s->ssl != NULL)
		n += BIO_wpending(SSL_get_wbio(s->ssl));
	return n;
}

/* Every queued write ends with status; the stream does no more I/O. */
static void stream_fail_writes(tls_stream *s, int status)
{
	s->failed = 1;
	stream_update_poll(s);
	while (s->wq_head != NULL) {
		tls_write *w = s->wq_head;
		s->wq_head = w->next;
		if (s->wq_head == NULL)
			s->wq_tail = NULL;
		w->next = NULL;
		w->cb(w->cb_data, status);
	}
}

/* ---- streams: shutdown ---- */

static void stream_shutdown_done(tls_stream *s, int status)
{
	tls_status_cb cb = s->shutdown_cb;

	s->shutdown_state = 2;
	s->shutdown_cb = NULL;
	if (cb != NULL)
		cb(s->data, status);
}

/* close_notify, flushed, then FIN. */
static void stream_shutdown_step(tls_stream *s)
{
	int rc;

	ERR_clear_error();
	rc = SSL_shutdown(s->ssl);
	if (rc < 0) {
		int e = SSL_get_error(s->ssl, rc);
		if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
			s->write_wants_read = e == SSL_ERROR_WANT_READ;
			s->write_blocked = 1;
			stream_update_poll(s);
			return;
		}
	}
	rc = stream_flush(s);
	if (rc == -1) {
		s->write_blocked = 1;
		stream_update_poll(s);
		return;
	}
	s->write_blocked = 0;
	if (rc == 0 && shutdown(s->fd, SHUT_WR) != 0)
		rc = -errno;
	stream_update_poll(s);
	stream_shutdown_done(s, rc);
}

int tls_stream_shutdown(tls_stream *s, tls_status_cb cb)
{
	if (s->closing || s->shutdown_state != 0)
		return UV_EINVAL;
	s->shutdown_state = 1;
	s->shutdown_cb = cb;
	if (s->failed) {
		stream_shutdown_done(s, UV_EPIPE);
		return 0;
	}
	if (s->wq_head == NULL)
		stream_shutdown_step(s);
	return 0;
}

/* ---- streams: reading ---- */

/* After the handshake: counters, kernel TLS, the caller's callback. */
static void stream_handshake_done(tls_stream *s)
{
	tls_server *ts = s->ts;
	BIO *wbio = SSL_get_wbio(s->ssl);

	s->handshake_done = 1;
	atomic_fetch_add_explicit(&ts->handshakes_ok, 1, memory_order_relaxed);
	if (SSL_session_reused(s->ssl))
		atomic_fetch_add_explicit(&ts->resumed, 1, memory_order_relaxed);
	if (BIO_get_ktls_send(wbio)) {
		/* The kernel encrypts from here on, and frames records itself:
		 * OpenSSL must write to the socket directly (a control record's
		 * type travels with the write that carries it). The buffer is
		 * empty: OpenSSL flushed it before it turned kTLS on. */
		BIO_up_ref(s->sock_bio);
		SSL_set0_wbio(s->ssl, s->sock_bio);
		s->ktls_send = 1;
		atomic_fetch_add_explicit(&ts->ktls, 1, memory_order_relaxed);
	}
	if (s->on_handshake != NULL)
		s->on_handshake(s->data, 0);
}

/* An SSL_read or handshake result: 1 go on, 0 wait (wants noted), or a
 * negative code to report (UV_EOF, UV_EPROTO, -errno). */
static int stream_read_error(tls_stream *s, int n)
{
	int e = SSL_get_error(s->ssl, n);

	switch (e) {
	case SSL_ERROR_WANT_READ:
		s->read_wants_write = 0;
		return 0;
	case SSL_ERROR_WANT_WRITE:
		s->read_wants_write = 1;
		return 0;
	case SSL_ERROR_ZERO_RETURN:
		return UV_EOF;
	case SSL_ERROR_SYSCALL:
		/* No error queued and errno 0: EOF without close_notify. */
		if (ERR_peek_error() == 0 && errno == 0)
			return UV_EOF;
		if (errno != 0)
			return -errno;
		break;
	default:
		break;
	}
	if (!s->handshake_done)
		handshake_failed(s->ts, ssl_reason());
	else
		log_debug("tls: connection failed: %s", ssl_reason());
	return UV_EPROTO;
}

static void stream_reads(tls_stream *s)
{
	for (int i = 0; i < READS_PER_EVENT && !s->closing && !s->failed; i++) {
		uv_buf_t buf;
		int n, rc;

		if (!s->handshake_done) {
			ERR_clear_error();
			errno = 0;
			n = SSL_do_handshake(s->ssl);
			if (n == 1) {
				s->read_wants_write = 0;
				stream_handshake_done(s);
				continue;
			}
			rc = stream_read_error(s, n);
			if (rc == 0)
				break;
			/* The alert OpenSSL wrote (protocol_version...) is in the
			 * write buffer: the client should hear why. */
			(void)stream_flush(s);
			s->failed = 1;
			stream_update_poll(s);
			if (s->read != NULL)
				s->read(s->data, rc);
			return;
		}
		if (!s->reading)
			break;
		s->alloc(s->data, &buf);
		if (buf.base == NULL || buf.len == 0) {
			s->read(s->data, UV_ENOBUFS);
			return;
		}
		ERR_clear_error();
		errno = 0;
		n = SSL_read(s->ssl, buf.base, (int)buf.len);
		if (n > 0) {
			s->read_wants_write = 0;
			s->read(s->data, n);
			continue;
		}
		rc = stream_read_error(s, n);
		if (rc == 0)
			break;
		if (rc != UV_EOF) {
			(void)stream_flush(s); /* the alert, if any */
			s->failed = 1;
		} else {
			s->reading = 0;
		}
		stream_update_poll(s);
		s->read(s->data, rc);
		return;
	}
	if (s->closing)
		return;
	/* Out of turns with bytes left in OpenSSL: next loop turn. */
	if (s->reading && !s->failed && SSL_has_pending(s->ssl))
		stream_kick(s);
	stream_update_poll(s);
}

static void on_poll(uv_poll_t *poll, int status, int events)
{
	tls_stream *s = poll->data;

	if (status < 0) {
		stream_fail_writes(s, status);
		if (!s->closing && s->read != NULL && s->reading)
			s->read(s->data, status);
		return;
	}
	if (s->write_blocked &&
	    (events & (s->write_wants_read ? UV_READABLE : UV_WRITABLE)) != 0)
		stream_writes(s);
	if (s->closing || s->failed)
		return;
	if ((s->reading || !s->handshake_done) &&
	    (events & (s->read_wants_write ? UV_WRITABLE : UV_READABLE)) != 0)
		stream_reads(s);
}

int tls_stream_read_start(tls_stream *s, tls_alloc_cb alloc, tls_read_cb read)
{
	if (s->closing)
		return UV_EINVAL;
	s->alloc = alloc;
	s->read = read;
	s->reading = 1;
	if (s->failed)
		return 0;
	if (s->handshake_done && SSL_has_pending(s->ssl))
		stream_kick(s);
	stream_update_poll(s);
	return 0;
}

void tls_stream_read_stop(tls_stream *s)
{
	s->reading = 0;
	if (!s->closing)
		uv_idle_stop(&s->kick);
	stream_update_poll(s);
}

/* ---- streams: life ---- */

int tls_stream_open(tls_server *ts, uv_loop_t *loop, int fd, void *data,
                    tls_status_cb on_handshake, tls_stream **out)
{
	tls_stream *s = calloc(1, sizeof(*s));
	SSL_CTX *ctx;
	BIO *buf;
	int rc;

	if (s == NULL) {
		close(fd);
		return -ENOMEM;
	}
	s->fd = fd;
	s->ts = ts;
	s->data = data;
	s->on_handshake = on_handshake;
	uv_mutex_lock(&ts->ctx_lock);
	ctx = ts->ctx;
	SSL_CTX_up_ref(ctx);
	uv_mutex_unlock(&ts->ctx_lock);
	s->ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* the SSL holds its own reference */
	s->sock_bio = BIO_new_socket(fd, BIO_NOCLOSE);
	buf = BIO_new(BIO_f_buffer());
	if (s->ssl == NULL || s->sock_bio == NULL || buf == NULL ||
	    BIO_set_write_buffer_size(buf, WRITE_BUFFER) != 1) {
		BIO_free(buf);
		BIO_free(s->sock_bio);
		SSL_free(s->ssl);
		free(s);
		close(fd);
		return -ENOMEM;
	}
	/* Reads go straight to the socket (OpenSSL reads ahead); writes
	 * through the buffer. The SSL holds two references to the socket BIO:
	 * one as rbio, one through the buffer's chain. */
	BIO_push(buf, s->sock_bio);
	BIO_up_ref(s->sock_bio);
	SSL_set0_rbio(s->ssl, s->sock_bio);
	SSL_set0_wbio(s->ssl, buf);
	SSL_set_accept_state(s->ssl);
	rc = uv_poll_init(loop, &s->poll, fd);
	if (rc != 0) {
		SSL_free(s->ssl);
		free(s);
		close(fd);
		return rc;
	}
	uv_idle_init(loop, &s->kick);
	s->poll.data = s;
	s->kick.data = s;
	s->handles_open = 2;
	*out = s;
	return 0;
}

static void on_stream_handle_closed(uv_handle_t *handle)
{
	tls_stream *s = handle->data;

	if (--s->handles_open > 0)
		return;
	/* libuv's order: cancelled writes, then the shutdown, then close. */
	while (s->wq_head != NULL) {
		tls_write *w = s->wq_head;
		s->wq_head = w->next;
		w->next = NULL;
		w->cb(w->cb_data, UV_ECANCELED);
	}
	s->wq_tail = NULL;
	if (s->shutdown_state == 1)
		stream_shutdown_done(s, UV_ECANCELED);
	SSL_free(s->ssl);
	close(s->fd);
	if (s->on_closed != NULL)
		s->on_closed(s->data);
	free(s);
}

void tls_stream_close(tls_stream *s, void (*on_closed)(void *data))
{
	if (s->closing)
		return;
	s->closing = 1;
	s->reading = 0;
	s->on_closed = on_closed;
	uv_close((uv_handle_t *)&s->poll, on_stream_handle_closed);
	uv_close((uv_handle_t *)&s->kick, on_stream_handle_closed);
}

int tls_stream_fd(const tls_stream *s)
{
	return s->fd;
}

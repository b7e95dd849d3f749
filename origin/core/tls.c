/* tls: the TLS context: certificate, protocol settings, ticket keys, counters. */
#include "core/tls.h"
#include "core/tls_internal.h"

#include "core/config.h"
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

#define FAIL_LOG_INTERVAL_S 10
#define DEFAULT_TICKET_ROTATE_S 3600

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

const char *tls__ssl_reason(void)
{
	unsigned long e = ERR_peek_error(); /* the first: the cause, not its echo */
	const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
	return r != NULL ? r : "unknown";
}

/* Scanners must not flood the log. */
void tls__handshake_failed(tls_server *ts, const char *reason)
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
		log_error("tls: cannot make a session-ticket key: %s", tls__ssl_reason());
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

/* RFC 7919's ffdhe2048 group for the DHE suites, as Mozilla's
 * intermediate profile names it (SSL_CTX_set_dh_auto would pick RFC 3526's
 * group 14 instead). NULL on failure. */
static EVP_PKEY *ffdhe2048(void)
{
	EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_name(NULL, "DH", NULL);
	EVP_PKEY *pkey = NULL;
	OSSL_PARAM params[2];

	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"ffdhe2048",
	                                             0);
	params[1] = OSSL_PARAM_construct_end();
	if (pctx == NULL || EVP_PKEY_paramgen_init(pctx) != 1 ||
	    EVP_PKEY_CTX_set_params(pctx, params) != 1 || EVP_PKEY_paramgen(pctx, &pkey) != 1)
		pkey = NULL;
	EVP_PKEY_CTX_free(pctx);
	return pkey;
}

/* 1 when ctx has the DHE group. */
static int set_dh_group(SSL_CTX *ctx)
{
	EVP_PKEY *dh = ffdhe2048();

	if (dh != NULL && SSL_CTX_set0_tmp_dh_pkey(ctx, dh) == 1)
		return 1; /* ctx owns dh */
	EVP_PKEY_free(dh);
	return 0;
}

/* OpenSSL's passphrase callback: none is given, and the key is noted as
 * encrypted. */
static int no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	*(int *)userdata = 1;
	return -1;
}

/* Whether path holds a "-----BEGIN ... PRIVATE KEY-----" line (in its
 * first 64 KiB), to tell "not a key" from "a key OpenSSL refused". */
static int pem_has_private_key(const char *path)
{
	char buf[65537];
	FILE *f = fopen(path, "r");
	size_t n;

	if (f == NULL)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, "-----BEGIN ") != NULL && strstr(buf, "PRIVATE KEY-----") != NULL;
}

/* OpenSSL's error for a private key that is not the certificate's. */
static int key_mismatch(unsigned long e)
{
	return ERR_GET_LIB(e) == ERR_LIB_X509 && (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
	                                          ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH);
}

/* A context for ts's files; NULL with err set. */
static SSL_CTX *context_build(tls_server *ts, int64_t *not_after, char *err, size_t errlen)
{
	SSL_CTX *ctx;
	int key_ok, encrypted = 0;

	if (file_readable(ts->cert_setting, ts->cert_file, err, errlen) != 0 ||
	    file_readable(ts->key_setting, ts->key_file, err, errlen) != 0)
		return NULL;
	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		snprintf(err, errlen, "cannot create a TLS context: %s", tls__ssl_reason());
		return NULL;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, ts->cert_file) != 1) {
		snprintf(err, errlen, "%s %s: not a PEM certificate chain (%s)", ts->cert_setting,
		         ts->cert_file, tls__ssl_reason());
		goto fail;
	}
	/* Never a prompt on the terminal: an encrypted key is refused. */
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	SSL_CTX_set_default_passwd_cb_userdata(ctx, &encrypted);
	key_ok = SSL_CTX_use_PrivateKey_file(ctx, ts->key_file, SSL_FILETYPE_PEM) == 1;
	if (!key_ok && encrypted) {
		snprintf(err, errlen,
		         "%s %s: the key is encrypted; passphrases are not supported: store it "
		         "decrypted, readable by the service's user only",
		         ts->key_setting, ts->key_file);
		goto fail;
	}
	if (!key_ok && !key_mismatch(ERR_peek_error()) && !pem_has_private_key(ts->key_file)) {
		snprintf(err, errlen, "%s %s: no PEM private key in it (want a -----BEGIN ... PRIVATE "
		         "KEY----- block)", ts->key_setting, ts->key_file);
		goto fail;
	}
	if (!key_ok && !key_mismatch(ERR_peek_error())) {
		snprintf(err, errlen, "%s %s: not a PEM private key (%s)", ts->key_setting, ts->key_file,
		         tls__ssl_reason());
		goto fail;
	}
	/* A key, but another certificate's (OpenSSL may also drop the
	 * certificate and say nothing). */
	if (!key_ok || SSL_CTX_get0_certificate(ctx) == NULL || SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "%s %s does not match the certificate in %s %s",
		         ts->key_setting, ts->key_file, ts->cert_setting, ts->cert_file);
		goto fail;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) != 1 || set_dh_group(ctx) != 1 ||
	    SSL_CTX_set_num_tickets(ctx, 1) != 1 ||
	    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key) != 1 ||
	    SSL_CTX_set_ex_data(ctx, ex_index, ts) != 1) {
		snprintf(err, errlen, "cannot configure TLS: %s", tls__ssl_reason());
		goto fail;
	}
	/* A peer that closes without close_notify is at EOF, not in error:
	 * HTTP/1.1 frames its own messages (Content-Length, chunks), so a cut
	 * request is still seen as one, and health checks that connect and
	 * close are not failed handshakes. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
	                             SSL_OP_ENABLE_KTLS | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 |
	                             SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* The server's order (AES-GCM first: the origin's clients are CDN
	 * edges and the API's are phones, both with AES in hardware today),
	 * except that a client that puts ChaCha20 first (no AES hardware) gets
	 * it. Every suite offered is strong; an order is what scanners (and
	 * testssl) expect. */
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA);
	SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
	/* Stateless tickets only: a server-side cache would not be shared
	 * between loop threads or processes. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_timeout(ctx, (long)(2 * ts->rotate_s));
	/* RELEASE_BUFFERS: an idle keep-alive connection gives its record
	 * buffers back, as the core's own buffers go back to its pool (no
	 * difference in CPU per request was measurable on the feed). */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                              SSL_MODE_RELEASE_BUFFERS);
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

int tls_server_configure(const config *cfg, const char *cert_setting, const char *key_setting,
                         tls_server **out, char *err, size_t errlen)
{
	char cert_flag[64], key_flag[64];
	tls_options topt = { .cert_file = config_get(cfg, cert_setting),
		             .key_file = config_get(cfg, key_setting),
		             .cert_setting = cert_flag,
		             .key_setting = key_flag };

	*out = NULL;
	snprintf(cert_flag, sizeof(cert_flag), "--%s", cert_setting);
	snprintf(key_flag, sizeof(key_flag), "--%s", key_setting);
	if (topt.cert_file == NULL && topt.key_file == NULL)
		return 0;
	if (topt.cert_file == NULL || topt.key_file == NULL) {
		snprintf(err, errlen, "%s and %s go together: %s is set, %s is not", cert_flag,
		         key_flag, topt.cert_file != NULL ? cert_flag : key_flag,
		         topt.cert_file != NULL ? key_flag : cert_flag);
		return SAYIN_ECONFIG;
	}
	if (config_get_ranged(cfg, "tls-ticket-rotate-s", &topt.ticket_rotate_s, err, errlen) != 0)
		return SAYIN_ECONFIG;
	return tls_server_new(&topt, out, err, errlen);
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

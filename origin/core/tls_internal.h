/* tls_internal: what core/tls.c (the context) and core/tls_stream.c (the
 * connections) share. Private to core/tls*.c. */
#ifndef SAYIN_TLS_INTERNAL_H
#define SAYIN_TLS_INTERNAL_H

#include <openssl/ssl.h>
#include <uv.h>

#include <stdint.h>

#include <stdatomic.h>
#include <time.h>

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

/* OpenSSL's reason for the last error on this thread's queue, or "unknown". */
const char *tls__ssl_reason(void);

/* Counts a failed handshake and logs at most one line per 10 s per server. */
void tls__handshake_failed(struct tls_server *ts, const char *reason);

#endif

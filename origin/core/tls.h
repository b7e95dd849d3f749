/* tls: HTTPS for the HTTP core. TLS 1.2 and 1.3 on OpenSSL's libssl (the
 * only file that calls it), as a transport under core/http's one state
 * machine: a tls_stream reads, writes, shuts down and closes like a libuv
 * stream, and the core decides what to send.
 *
 * Two objects:
 * - tls_server: the process-wide context (certificate and key, protocol
 *   settings, session-ticket keys, counters). One is shared by every event
 *   loop thread; every tls_server_* function may be called from any thread.
 * - tls_stream: one connection, on one loop; its functions must be called
 *   on that loop's thread.
 *
 * Protocol, fixed (README "HTTPS"): TLS 1.2 and 1.3 only, Mozilla's
 * "intermediate" ciphers and groups, ALPN "http/1.1" (a client offering
 * ALPN without it gets no_application_protocol), no renegotiation, no
 * compression. Sessions resume by stateless tickets only; the ticket keys
 * live in the tls_server, so every loop thread and every certificate
 * reload shares them, and they rotate every ticket_rotate_s (the previous
 * key still decrypts, and its tickets are renewed). Records: the first
 * 64 KiB written on a connection go in records of one TCP segment (1400
 * bytes on the wire), then in full 16 KiB records, as h2o does: the first
 * bytes of a response can be decrypted as soon as their packet arrives.
 * With kernel TLS (SSL_OP_ENABLE_KTLS; Linux's tls module) the kernel
 * encrypts what is written after the handshake, and records are its own. */
#ifndef SAYIN_TLS_H
#define SAYIN_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

typedef struct tls_server tls_server;
typedef struct tls_stream tls_stream;

typedef struct tls_options {
	const char *cert_file;    /* PEM: the certificate, then its chain */
	const char *key_file;     /* PEM: its private key */
	const char *cert_setting; /* names for messages, e.g. "--tls-cert" */
	const char *key_setting;
	uint64_t ticket_rotate_s; /* 0: 3600 */
} tls_options;

/* Loads the certificate and key and builds the context. On error
 * SAYIN_ECONFIG (a file missing, unreadable, not PEM, or a key that does
 * not match the certificate; err names the setting, the file and
 * OpenSSL's reason), -ENOMEM, or SAYIN_EINVAL; *out is untouched. */
int tls_server_new(const tls_options *opt, tls_server **out, char *err, size_t errlen);

/* Reads the certificate and key files again (SIGHUP). New connections get
 * the new ones; open connections keep theirs. On error the certificate in
 * force stays and the error (as for tls_server_new) is in err. */
int tls_server_reload(tls_server *ts, char *err, size_t errlen);

/* Frees the context. Streams still open keep what they use alive. */
void tls_server_free(tls_server *ts);

/* Counters since start; any thread. */
typedef struct tls_stats {
	uint64_t handshakes_ok;
	uint64_t handshakes_failed; /* protocol errors: old versions, no shared
	                               cipher, plain HTTP, bad records */
	uint64_t handshakes_timeout; /* not complete in time (counted by the caller) */
	uint64_t resumed;           /* handshakes that resumed by ticket */
	uint64_t ktls;              /* connections whose sends use kernel TLS */
	int64_t not_after;          /* the certificate in force: notAfter, unix time */
} tls_stats;
void tls_server_stats(const tls_server *ts, tls_stats *out);

/* A handshake ran out of time (the caller keeps the clock). */
void tls_server_count_timeout(tls_server *ts);

/* The TLS series on reg, read from ts at scrape time (README "HTTPS"):
 * sayin_tls_handshakes_total{result}, sayin_tls_resumed_total,
 * sayin_tls_ktls_total and sayin_tls_certificate_expiry_timestamp_seconds.
 * Returns 0 or a negative error. */
struct metrics;
int tls_metrics_define(struct metrics *reg, tls_server *ts);

/* "OpenSSL 3.0.x ..." as the library reports itself at run time. */
const char *tls_library_version(void);

/* ---- streams ---- */

typedef void (*tls_alloc_cb)(void *data, uv_buf_t *buf);
/* nread > 0: bytes decrypted into the buffer alloc gave. nread < 0:
 * UV_EOF (the peer closed, with or without close_notify), UV_ENOBUFS
 * (alloc gave an empty buffer), UV_EPROTO (a TLS error, logged at most once
 * per 10 s per server and counted), or another negative errno. */
typedef void (*tls_read_cb)(void *data, ssize_t nread);
typedef void (*tls_status_cb)(void *data, int status);

/* Serves the connected socket fd (non-blocking) as a TLS server. data is
 * given to every callback; on_handshake(data, 0) runs once when the
 * handshake completes (the caller then moves from its handshake timeout to
 * its idle one). The stream owns fd from here on, also on error, and
 * closes it in tls_stream_close. Returns 0, -ENOMEM, or a negative errno. */
int tls_stream_open(tls_server *ts, uv_loop_t *loop, int fd, void *data,
                    tls_status_cb on_handshake, tls_stream **out);

/* Reading, as uv_read_start/uv_read_stop: while started, the handshake
 * runs and decrypted bytes arrive through read; never from inside
 * read_start itself (bytes OpenSSL already holds arrive on the next loop
 * turn). Return 0, or UV_EINVAL once closing. */
int tls_stream_read_start(tls_stream *s, tls_alloc_cb alloc, tls_read_cb read);
void tls_stream_read_stop(tls_stream *s);

/* A write request, owned by the caller until its callback ran (or until
 * tls_stream_write returned 1 or an error). Fields are private. */
typedef struct tls_write {
	struct tls_write *next;
	uv_buf_t bufs[2];
	unsigned n_bufs, index;
	size_t off;
	tls_status_cb cb;
	void *cb_data;
} tls_write;

/* Encrypts and sends bufs (at most 2) in order after the writes already
 * queued. The buffers must stay valid until the write completes.
 * Returns 1 when everything was sent at once (cb is not called), 0 when
 * queued (cb(cb_data, status) follows, status UV_ECANCELED when the stream
 * is closed first), or a negative errno (nothing queued, cb not called). */
int tls_stream_write(tls_stream *s, tls_write *w, const uv_buf_t *bufs, unsigned n_bufs,
                     tls_status_cb cb, void *cb_data);

/* Bytes queued and not yet handed to the socket (plaintext), for stall
 * checks. */
size_t tls_stream_write_queue_size(const tls_stream *s);

/* After the queued writes: close_notify, then shutdown(SHUT_WR). cb(data,
 * status) follows (UV_ECANCELED when closed first). Returns 0 or
 * UV_EINVAL (closing, or a shutdown already requested). */
int tls_stream_shutdown(tls_stream *s, tls_status_cb cb);

/* Closes at once: queued writes get UV_ECANCELED, a pending shutdown too,
 * then on_closed(data) runs from the loop, after which s is freed. */
void tls_stream_close(tls_stream *s, void (*on_closed)(void *data));

int tls_stream_fd(const tls_stream *s);

#endif

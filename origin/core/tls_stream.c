/* tls_stream: TLS server connections on OpenSSL, driven by libuv polls. */
#include "core/tls.h"
#include "core/tls_internal.h"

#include "core/log.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
	/* The last read wanted bytes the socket does not have yet: what
	 * OpenSSL holds (SSL_has_pending) is then a partial record, which the
	 * poll, not a kick, must complete. */
	int need_socket;
	int close_notify_sent;
	int closing;
	int failed;           /* a fatal TLS or socket error: no more I/O */
	uint64_t bytes_written;
	tls_write *wq_head, *wq_tail;
	tls_status_cb shutdown_cb;
	int shutdown_state;   /* 0 none, 1 requested, 2 done */
	void (*on_closed)(void *data);
};

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
	errno = 0;
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

	/* close_notify is written once: a second SSL_shutdown would wait for
	 * the peer's, while ours sits unflushed in the buffer. */
	if (!s->close_notify_sent) {
		ERR_clear_error();
		rc = SSL_shutdown(s->ssl);
		if (rc < 0 && SSL_get_error(s->ssl, rc) == SSL_ERROR_WANT_WRITE) {
			/* The alert could not even be buffered: write it later. */
			s->write_wants_read = 0;
			s->write_blocked = 1;
			stream_update_poll(s);
			return;
		}
		s->close_notify_sent = 1; /* sent, or the session is past sending */
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
		s->need_socket = 1;
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
		tls__handshake_failed(s->ts, tls__ssl_reason());
	else
		log_debug("tls: connection failed: %s", tls__ssl_reason());
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
				s->need_socket = 0;
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
			s->need_socket = 0;
			s->read(s->data, n);
			/* Nothing left in OpenSSL: the (level-triggered) poll says
			 * when the socket has more, which saves the read(2) that
			 * would only say EAGAIN; libuv stops after a short read the
			 * same way. */
			if (!SSL_has_pending(s->ssl))
				break;
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
	if (s->reading && !s->failed && !s->need_socket && SSL_has_pending(s->ssl))
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
	if (s->handshake_done && !s->need_socket && SSL_has_pending(s->ssl))
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

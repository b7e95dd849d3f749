/* fuzz_http: libFuzzer target for the HTTP core (origin/core/http.c): the
 * input is a client's byte stream, written into one end of a socketpair
 * whose other end the real core serves (http_server_adopt) on a real libuv
 * loop, in pieces, with an optional half-close or early close.
 *
 * Input layout:
 *   byte 0  flags: 0x01 the streaming handler (on_headers, on_body: the
 *                  publisher API's kind) instead of the plain one;
 *                  0x02 half-close (shutdown) after the last piece;
 *                  0x04 close the client after byte 2 pieces;
 *                  0x08 a small server send buffer, so responses go out in
 *                  several writes while the client reads
 *   byte 1  piece size (0: everything in one write); one piece is written
 *           per loop turn, so the core reads it separately
 *   byte 2  pieces written before an early close (with 0x04)
 *   rest    the bytes the client sends
 *
 * The plain handler answers /hello, /big (64 KiB), /slow (from a timer),
 * /close (close_after), 404 otherwise. The streaming handler accepts
 * bodies and answers their length and hash; /reject answers 413 from
 * on_headers, /misbehave rejects without answering (a handler bug the core
 * must survive), /upload/slow pauses after every piece and resumes from a
 * timer, /upload/stop answers 500 from the first on_body.
 *
 * Each input runs on its own loop and server until the client has sent
 * everything and nothing has happened for a few loop turns; then the
 * server stops with no grace. Every handle must be closed (uv_loop_close
 * succeeds), every response released once and every streamed request's
 * state freed once; anything else aborts, and ASan reports leaks.
 *
 * Build llhttp's sources with -DLLHTTP_STRICT_MODE=1, as the Makefile does:
 * the core refuses to start on a lenient llhttp. By hand:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DLLHTTP_STRICT_MODE=1 \
 *     -std=c11 -D_GNU_SOURCE -Iorigin -I/usr/share/include/llhttp \
 *     tests/fuzz/fuzz_http.c origin/core/{http,log,error,clock}.c \
 *     /usr/share/llhttp/{api,http,llhttp}.c $(pkg-config --cflags --libs libuv) -o fuzz_http */
#include "core/http.h"
#include "core/log.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define FLAG_STREAM 0x01
#define FLAG_HALF_CLOSE 0x02
#define FLAG_EARLY_CLOSE 0x04
#define FLAG_SMALL_SNDBUF 0x08
#define BIG_LEN (64u << 10)
#define QUIET_TURNS 8 /* loop turns without I/O before the run ends */

struct run;

struct fuzz_handler {
	http_handler base; /* first: the core hands us &base */
	struct run *run;
};

struct run {
	uv_loop_t loop;
	struct fuzz_handler handler;
	http_server *server;
	uv_pipe_t client;
	uv_idle_t idle;
	uv_write_t write_req;
	uv_shutdown_t shutdown_req;
	const uint8_t *data;
	size_t len, off, piece;
	unsigned pieces_sent, close_after_pieces;
	int flags;
	int client_open;
	int writing, shutting_down, sent_all;
	int activity;
	unsigned quiet;
	int timers;   /* handler timers pending: the run is not over */
	int stopping, stopped;
	long responses, releases, allocs, frees, violations;
	char read_buf[65536];
};

static char big_body[BIG_LEN];

static void fail(const char *what)
{
	fprintf(stderr, "fuzz_http: %s\n", what);
	abort();
}

/* ---- the plain handler ---- */

static void on_release(void *arg)
{
	struct run *run = arg;

	run->releases++;
}

static void respond(struct run *run, http_request *req, int status, const char *body,
                    size_t len, int close_after)
{
	static const http_header headers[] = { { "Content-Type", "text/plain" } };

	run->responses++;
	http_respond(req, status, headers, 1, body, len, 1, close_after, on_release, run);
}

struct slow_reply {
	uv_timer_t timer;
	http_request *req;
	struct run *run;
};

static void on_slow_closed(uv_handle_t *handle)
{
	free(handle);
}

static void on_slow_timer(uv_timer_t *timer)
{
	struct slow_reply *slow = timer->data;

	slow->run->timers--;
	/* The client may have left meanwhile: http_respond says so and
	 * still releases. */
	respond(slow->run, slow->req, 200, "slow\n", 5, 0);
	uv_close((uv_handle_t *)&slow->timer, on_slow_closed);
}

static void plain_on_request(http_handler *self, http_request *req)
{
	struct run *run = ((struct fuzz_handler *)self)->run;

	if (strcmp(req->path, "/hello") == 0) {
		respond(run, req, 200, "hello world\n", 12, 0);
	} else if (strcmp(req->path, "/big") == 0) {
		respond(run, req, 200, big_body, sizeof(big_body), 0);
	} else if (strcmp(req->path, "/close") == 0) {
		respond(run, req, 200, "bye\n", 4, 1);
	} else if (strcmp(req->path, "/slow") == 0) {
		struct slow_reply *slow = malloc(sizeof(*slow));
		if (slow == NULL)
			fail("out of memory");
		slow->req = req;
		slow->run = run;
		uv_timer_init(&run->loop, &slow->timer);
		slow->timer.data = slow;
		uv_timer_start(&slow->timer, on_slow_timer, 0, 0);
		run->timers++;
	} else {
		respond(run, req, 404, "not found\n", 10, 0);
	}
}

/* ---- the streaming handler ---- */

struct upload {
	struct run *run;
	http_request *req;
	uv_timer_t *timer; /* /upload/slow's resume */
	uint64_t received;
	uint64_t hash;
	int slow, paused, responded;
	char text[64];
};

static void upload_free(struct upload *up)
{
	up->run->frees++;
	if (up->timer != NULL) {
		if (uv_is_active((uv_handle_t *)up->timer))
			up->run->timers--;
		uv_close((uv_handle_t *)up->timer, on_slow_closed);
	}
	free(up);
}

static void on_upload_release(void *arg)
{
	struct upload *up = arg;

	up->run->releases++;
	upload_free(up);
}

/* up may be freed when this returns. */
static void upload_respond(struct upload *up, http_request *req, int status, const char *text)
{
	snprintf(up->text, sizeof(up->text), "%s", text);
	up->responded = 1;
	up->run->responses++;
	http_respond(req, status, NULL, 0, up->text, strlen(up->text), 1, 0, on_upload_release, up);
}

static void on_resume_timer(uv_timer_t *timer)
{
	struct upload *up = timer->data;

	up->run->timers--;
	up->paused = 0;
	if (http_request_resume_body(up->req) != 0)
		up->run->violations++;
}

static void upload_pause(struct upload *up, http_request *req)
{
	if (up->timer == NULL) {
		up->timer = malloc(sizeof(*up->timer));
		if (up->timer == NULL)
			fail("out of memory");
		uv_timer_init(&up->run->loop, up->timer);
		up->timer->data = up;
	}
	up->req = req;
	up->paused = 1;
	if (http_request_pause_body(req) != 0)
		up->run->violations++;
	if (!uv_is_active((uv_handle_t *)up->timer))
		up->run->timers++;
	uv_timer_start(up->timer, on_resume_timer, 0, 0);
}

static int stream_on_headers(http_handler *self, http_request *req)
{
	struct run *run = ((struct fuzz_handler *)self)->run;
	struct upload *up = calloc(1, sizeof(*up));

	if (up == NULL)
		fail("out of memory");
	up->run = run;
	up->hash = UINT64_C(14695981039346656037);
	req->data = up;
	run->allocs++;
	if (strcmp(req->path, "/misbehave") == 0)
		return HTTP_BODY_REJECT; /* no response: the core answers 500 */
	if (strcmp(req->path, "/reject") == 0) {
		upload_respond(up, req, 413, "too large\n");
		return HTTP_BODY_REJECT;
	}
	if (strcmp(req->path, "/upload/slow") == 0) {
		up->slow = 1;
		upload_pause(up, req);
	}
	return HTTP_BODY_ACCEPT;
}

static int stream_on_body(http_handler *self, http_request *req, const char *data, size_t len)
{
	struct upload *up = req->data;

	(void)self;
	if (up->paused || up->responded || len == 0)
		up->run->violations++;
	up->received += len;
	for (size_t i = 0; i < len; i++)
		up->hash = (up->hash ^ (uint8_t)data[i]) * UINT64_C(1099511628211);
	if (strcmp(req->path, "/upload/stop") == 0) {
		upload_respond(up, req, 500, "sink failed\n");
		return 1;
	}
	if (up->slow)
		upload_pause(up, req);
	return 0;
}

static void stream_on_request(http_handler *self, http_request *req)
{
	struct upload *up = req->data;
	char text[64];

	(void)self;
	if (up->paused || up->responded)
		up->run->violations++;
	snprintf(text, sizeof(text), "%llu %016llx\n", (unsigned long long)up->received,
	         (unsigned long long)up->hash);
	upload_respond(up, req, 200, text);
}

static void stream_on_abort(http_handler *self, http_request *req)
{
	(void)self;
	upload_free(req->data);
}

/* ---- the client ---- */

static void on_client_closed(uv_handle_t *handle)
{
	(void)handle;
}

static void client_close(struct run *run)
{
	if (!run->client_open)
		return;
	run->client_open = 0;
	uv_close((uv_handle_t *)&run->client, on_client_closed);
}

static void on_client_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	struct run *run = handle->data;

	(void)suggested;
	*buf = uv_buf_init(run->read_buf, sizeof(run->read_buf));
}

static void on_client_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct run *run = stream->data;

	(void)buf;
	if (nread == 0)
		return;
	run->activity = 1;
	if (nread < 0) {
		/* The server closed (EOF, or a reset after its close). */
		uv_read_stop(stream);
		if (!run->writing && !run->shutting_down)
			client_close(run);
	}
}

static void send_next(struct run *run);

static void on_client_written(uv_write_t *req, int status)
{
	struct run *run = req->data;

	run->writing = 0;
	run->activity = 1;
	if (status < 0 || !run->client_open) {
		run->sent_all = 1; /* the server is gone: nothing more to send */
		client_close(run);
		return;
	}
	send_next(run);
}

static void on_client_shutdown(uv_shutdown_t *req, int status)
{
	struct run *run = req->data;

	(void)status;
	run->shutting_down = 0;
	run->sent_all = 1;
	run->activity = 1;
}

/* One piece per call; the next goes from this write's callback, a loop
 * turn later. */
static void send_next(struct run *run)
{
	uv_buf_t buf;
	size_t n;

	if (!run->client_open)
		return;
	if ((run->flags & FLAG_EARLY_CLOSE) && run->pieces_sent >= run->close_after_pieces) {
		run->sent_all = 1;
		client_close(run);
		return;
	}
	if (run->off >= run->len) {
		if (run->flags & FLAG_HALF_CLOSE) {
			run->shutting_down = 1;
			run->shutdown_req.data = run;
			if (uv_shutdown(&run->shutdown_req, (uv_stream_t *)&run->client,
			                on_client_shutdown) != 0) {
				run->shutting_down = 0;
				run->sent_all = 1;
			}
		} else {
			run->sent_all = 1;
		}
		return;
	}
	n = run->len - run->off;
	if (run->piece != 0 && n > run->piece)
		n = run->piece;
	buf = uv_buf_init((char *)(uintptr_t)(run->data + run->off), (unsigned)n);
	run->off += n;
	run->pieces_sent++;
	run->writing = 1;
	run->write_req.data = run;
	if (uv_write(&run->write_req, (uv_stream_t *)&run->client, &buf, 1, on_client_written) != 0) {
		run->writing = 0;
		run->sent_all = 1;
		client_close(run);
	}
}

/* ---- the run ---- */

static void on_server_stopped(void *arg)
{
	struct run *run = arg;

	run->stopped = 1;
}

static void on_idle_closed(uv_handle_t *handle)
{
	(void)handle;
}

/* Every loop turn (and it keeps poll from blocking): once everything is
 * sent and a few turns passed with no I/O and no handler timer due, the
 * server stops and the client goes. */
static void on_idle(uv_idle_t *idle)
{
	struct run *run = idle->data;

	if (run->activity) {
		run->activity = 0;
		run->quiet = 0;
		return;
	}
	if (!run->sent_all || run->writing || run->shutting_down || run->timers > 0 ||
	    ++run->quiet < QUIET_TURNS)
		return;
	run->stopping = 1;
	uv_idle_stop(idle);
	uv_close((uv_handle_t *)idle, on_idle_closed);
	http_server_stop(run->server, 0, on_server_stopped, run);
	client_close(run);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	signal(SIGPIPE, SIG_IGN);
	log_set_level(LOG_ERROR); /* one "bad request" line per input otherwise */
	memset(big_body, 'b', sizeof(big_body));
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run run;
	http_limits limits = { .max_body = 4096, .max_stream_body = 1 << 20 };
	int sv[2], err;

	if (size < 3)
		return 0;
	memset(&run, 0, sizeof(run));
	run.flags = data[0];
	run.piece = data[1];
	run.close_after_pieces = data[2];
	run.data = data + 3;
	run.len = size - 3;

	if (uv_loop_init(&run.loop) != 0)
		fail("uv_loop_init");
	run.handler.run = &run;
	run.handler.base.on_request = plain_on_request;
	if (run.flags & FLAG_STREAM) {
		run.handler.base.on_request = stream_on_request;
		run.handler.base.on_headers = stream_on_headers;
		run.handler.base.on_body = stream_on_body;
		run.handler.base.on_abort = stream_on_abort;
	}
	err = http_server_start(&run.loop, "127.0.0.1:0", 0, &limits, &run.handler.base, &run.server);
	if (err != 0)
		fail("http_server_start failed (llhttp must be built with -DLLHTTP_STRICT_MODE=1)");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		fail("socketpair");
	if (run.flags & FLAG_SMALL_SNDBUF) {
		int small = 4096;
		setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	}
	if (http_server_adopt(run.server, sv[0]) != 0)
		fail("http_server_adopt");
	uv_pipe_init(&run.loop, &run.client, 0);
	run.client.data = &run;
	if (uv_pipe_open(&run.client, sv[1]) != 0)
		fail("uv_pipe_open");
	run.client_open = 1;
	uv_read_start((uv_stream_t *)&run.client, on_client_alloc, on_client_read);
	uv_idle_init(&run.loop, &run.idle);
	run.idle.data = &run;
	uv_idle_start(&run.idle, on_idle);
	send_next(&run);

	uv_run(&run.loop, UV_RUN_DEFAULT);

	if (!run.stopped)
		fail("the loop ended before the server stopped");
	if (uv_loop_close(&run.loop) != 0)
		fail("a handle is still open after the run");
	if (run.releases != run.responses)
		fail("a response was not released exactly once");
	if (run.frees != run.allocs)
		fail("a streamed request's state was not freed exactly once");
	if (run.violations != 0)
		fail("on_body, pause or resume out of order");
	return 0;
}

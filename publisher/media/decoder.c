/* decoder: the isolated decoder child. The parent side starts it on a
 * recording with its limits set, reads its records against a deadline and
 * reaps it; the child side (media_decoder_main) decodes and writes them.
 * The wire format between the two lives only here. */
#include "media/internal.h"
#include "media/sandbox.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/futex.h>

#include <libavutil/log.h>

#define set_err media__set_err

extern char **environ;

/* The child's wire format on its stdout (same binary, so native byte
 * order): records of a header then len bytes. SAMPLES carries floats (mono,
 * MEDIA_RATE); END comes once, last. */
enum { REC_SAMPLES = 1, REC_END = 2 };
#define REC_MAX_SAMPLES 16384

struct rec_header {
	uint32_t type;
	uint32_t len;
};

struct rec_end {
	int32_t code;           /* 0 or the decode's error */
	uint32_t rate;
	uint32_t channels;
	uint32_t sandbox;       /* MEDIA_SANDBOX_* bits: what confined it */
	uint64_t input_frames;
	uint64_t frames;
	char format[32];
	char message[448];      /* the error line, NUL-terminated */
};

/* The decoder child and what it has told us so far. */
struct child {
	pid_t pid;
	int fd;              /* its stdout */
	int64_t deadline;    /* monotonic ms */
	bool timed_out;
	int status;          /* from waitpid, once reaped */
	bool reaped;
};

/* The test hook's argument (see test_hook_prepare), or NULL. */
#define TEST_HOOK_ENV "SAYIN_TEST_DECODER_CRASH"
#define TEST_HOOK_FLAG "--test-hook="

/* The child's environment: empty. It needs none (no locale: the C locale
 * is what an empty environment gives; no TMPDIR: it writes no file). A
 * sanitizer build passes its runtime's options on, which hold no secret. */
#define ENV_KEPT 2
static void child_environment(char **envp, size_t n, char kept[ENV_KEPT][512])
{
	size_t k = 0;

	if (MEDIA_UNDER_ASAN) {
		static const char *const keep[ENV_KEPT] = { "ASAN_OPTIONS", "UBSAN_OPTIONS" };

		for (size_t i = 0; i < ENV_KEPT && k + 1 < n; i++) {
			const char *v = getenv(keep[i]);
			size_t nl = strlen(keep[i]), vl = v != NULL ? strlen(v) : 0;

			if (v == NULL || nl + vl + 2 > 512)
				continue;
			memcpy(kept[i], keep[i], nl);
			kept[i][nl] = '=';
			memcpy(kept[i] + nl + 1, v, vl + 1);
			envp[k++] = kept[i];
		}
	}
	envp[k] = NULL;
}

/* Starts `exe __decode LEVEL MAX_MS MEMORY [--test-hook=WHAT]` on the
 * recording with its limits set between fork and exec (async-signal-safe
 * calls only there), with an empty environment. */
static int spawn_decoder(const media_transcode_options *o, const char *exe, int file_fd,
                         struct child *c, char *err, size_t errlen)
{
	char max_ms[32], memory[32], hook[256];
	const char *hook_what = getenv(TEST_HOOK_ENV);
	char *argv[7];
	char *envp[ENV_KEPT + 1], env_kept[ENV_KEPT][512];
	int fds[2];
	uint64_t cpu_s = o->decode_timeout_ms / 1000 + 2;
	struct rlimit cpu = { cpu_s, cpu_s };
	struct rlimit zero = { 0, 0 };
	struct rlimit nofile = { 16, 16 };

	snprintf(max_ms, sizeof(max_ms), "%llu", (unsigned long long)o->max_duration_ms);
	/* The child sets its address-space limit itself, after exec: the
	 * dynamic loader must not be the one to fail. */
	snprintf(memory, sizeof(memory), "%llu",
	         MEDIA_UNDER_ASAN ? 0ULL : (unsigned long long)o->decoder_memory);
	argv[0] = (char *)exe;
	argv[1] = (char *)MEDIA_DECODER_COMMAND;
	argv[2] = (char *)(o->log_level != NULL ? o->log_level : "info");
	argv[3] = max_ms;
	argv[4] = memory;
	argv[5] = NULL;
	/* Tests only: the publisher's own environment asks for a hook, passed
	 * on as a flag because the child gets no environment. An upload cannot
	 * reach either. */
	if (hook_what != NULL && hook_what[0] != '\0') {
		snprintf(hook, sizeof(hook), "%s%s", TEST_HOOK_FLAG, hook_what);
		argv[5] = hook;
		argv[6] = NULL;
	}
	child_environment(envp, sizeof(envp) / sizeof(envp[0]), env_kept);
	if (pipe2(fds, O_CLOEXEC) != 0) {
		int rc = -errno;
		set_err(err, errlen, "cannot start the decoder: pipe: %s", strerror(errno));
		return rc;
	}
	c->pid = fork();
	if (c->pid < 0) {
		int rc = -errno;
		set_err(err, errlen, "cannot start the decoder: fork: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return rc;
	}
	if (c->pid == 0) {
		if (dup2(file_fd, 0) < 0 || dup2(fds[1], 1) < 0)
			_exit(127);
		close_range(3, ~0u, 0);
		/* The decoder dies with us, cannot gain privileges, and neither
		 * writes files nor opens more than a few descriptors. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
		setrlimit(RLIMIT_CPU, &cpu);
		setrlimit(RLIMIT_FSIZE, &zero);
		setrlimit(RLIMIT_CORE, &zero);
		setrlimit(RLIMIT_NOFILE, &nofile);
		execve(exe, argv, envp);
		_exit(127);
	}
	close(fds[1]);
	c->fd = fds[0];
	c->deadline = clock_mono_ms() + (int64_t)o->decode_timeout_ms;
	return 0;
}

/* Reads exactly len bytes from the child before its deadline. Returns 0,
 * 1 at a clean end of stream before any byte, SAYIN_EDECODER on a timeout
 * or a stream cut inside a record, or -errno. */
static int child_read(struct child *c, void *buf, size_t len)
{
	unsigned char *p = buf;
	size_t done = 0;

	while (done < len) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		int64_t left = c->deadline - clock_mono_ms();
		ssize_t n;
		int r;

		if (left <= 0) {
			c->timed_out = true;
			return SAYIN_EDECODER;
		}
		r = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r <= 0)
			continue;
		n = read(c->fd, p + done, len - done);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		if (n == 0)
			return done == 0 ? 1 : SAYIN_EDECODER;
		done += (size_t)n;
	}
	return 0;
}

/* Reaps the child, killing it first when kill_it. */
static void child_reap(struct child *c, bool kill_it)
{
	if (c->pid <= 0 || c->reaped)
		return;
	if (kill_it)
		kill(c->pid, SIGKILL);
	while (waitpid(c->pid, &c->status, 0) < 0 && errno == EINTR)
		;
	c->reaped = true;
}

/* Why the child stopped talking, as one line. */
static int child_failure(struct child *c, const media_transcode_options *o, char *err,
                         size_t errlen)
{
	if (c->timed_out) {
		child_reap(c, true);
		set_err(err, errlen, "decoder timed out after %llu ms (decode-timeout-ms); killed",
		        (unsigned long long)o->decode_timeout_ms);
		return SAYIN_EDECODER;
	}
	/* It closed its end: it is exiting or has exited. Give it until the
	 * deadline, then kill it. */
	child_reap(c, false);
	if (WIFSIGNALED(c->status)) {
		int sig = WTERMSIG(c->status);
		set_err(err, errlen, "decoder crashed (signal %d, %s)%s", sig, strsignal(sig),
		        sig == SIGXCPU ? ": CPU time limit"
		        : sig == SIGSYS ? ": the sandbox stopped a forbidden system call" : "");
		return SAYIN_EDECODER;
	}
	if (WIFEXITED(c->status) && WEXITSTATUS(c->status) == 127) {
		set_err(err, errlen, "decoder crashed: cannot start %s",
		        o->decoder_exe ? o->decoder_exe : "/proc/self/exe");
		return SAYIN_EDECODER;
	}
	set_err(err, errlen, "decoder crashed (exit %d) without a result",
	        WIFEXITED(c->status) ? WEXITSTATUS(c->status) : -1);
	return SAYIN_EDECODER;
}

/* Takes one SAMPLES record body. The child is not trusted: its samples are
 * made finite and clamped here too. */
static int take_samples(float *x, size_t n, const media__sink *sink)
{
	for (size_t i = 0; i < n; i++) {
		float v = x[i];
		if (!isfinite(v))
			v = 0.0f;
		x[i] = v > 1.0f ? 1.0f : v < -1.0f ? -1.0f : v;
	}
	return sink->write(sink->ctx, x, n);
}

/* What the child's END record says, as our result: its error (one line), or
 * the signal's description in info. */
static int take_end(const media_transcode_options *o, struct rec_end *end, media__info *info,
                    char *err, size_t errlen)
{
	int rc;

	end->format[sizeof(end->format) - 1] = '\0';
	end->message[sizeof(end->message) - 1] = '\0';
	if (end->code != 0) {
		/* The child's line, kept to one line whatever it holds. */
		for (char *q = end->message; *q != '\0'; q++) {
			if (*q == '\n' || *q == '\r')
				*q = ' ';
		}
		set_err(err, errlen, "%s", end->message[0] ? end->message : sayin_strerror(end->code));
		rc = end->code;
		if (rc == -ENOMEM) {
			set_err(err, errlen, "decoder ran out of memory (decode-memory is %llu bytes)",
			        (unsigned long long)o->decoder_memory);
			rc = SAYIN_EDECODER;
		}
		/* Only codes we know pass: a sayin code or a negative errno. */
		if (!((rc >= SAYIN_EBASE && rc < SAYIN_ELAST) || (rc < 0 && rc > -4096)))
			rc = SAYIN_EDECODER;
		return rc;
	}
	if (end->frames == 0 || end->rate == 0) {
		set_err(err, errlen, "no samples: the recording holds no audio");
		return SAYIN_EEMPTY;
	}
	info->rate = end->rate;
	info->channels = end->channels;
	info->input_frames = end->input_frames;
	info->frames = end->frames;
	snprintf(info->format, sizeof(info->format), "%s", end->format);
	return 0;
}

int media__decoder_run(const media_transcode_options *o, int file_fd, const media__sink *sink,
                       media__info *info, char *err, size_t errlen)
{
	struct child c = { .pid = -1, .fd = -1 };
	const char *exe = o->decoder_exe != NULL ? o->decoder_exe : "/proc/self/exe";
	struct rec_end end_rec, *end = &end_rec;
	float *samples = malloc(REC_MAX_SAMPLES * sizeof(float));
	/* The samples the child may send. */
	uint64_t frames = 0, limit = o->max_duration_ms * (MEDIA_RATE / 1000) + MEDIA_RATE;
	bool got_end = false;
	int rc;

	memset(info, 0, sizeof(*info));
	memset(end, 0, sizeof(*end));
	if (samples == NULL) {
		set_err(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rc = spawn_decoder(o, exe, file_fd, &c, err, errlen);
	if (rc != 0) {
		free(samples);
		return rc;
	}
	while (!got_end) {
		struct rec_header h;

		rc = child_read(&c, &h, sizeof(h));
		if (rc == 1 || rc == SAYIN_EDECODER) {
			rc = child_failure(&c, o, err, errlen);
			goto out;
		}
		if (rc != 0)
			break;
		if (h.type == REC_SAMPLES && h.len > 0 && h.len % sizeof(float) == 0 &&
		    h.len <= REC_MAX_SAMPLES * sizeof(float)) {
			rc = child_read(&c, samples, h.len);
			if (rc == 0 && frames + h.len / sizeof(float) > limit) {
				/* The child should have stopped: it is not to be trusted. */
				set_err(err, errlen, "too long: the decoder went past the %llu s limit",
				        (unsigned long long)(o->max_duration_ms / 1000));
				rc = SAYIN_ETOOLONG;
				break;
			}
			if (rc == 0)
				rc = take_samples(samples, h.len / sizeof(float), sink);
			if (rc == 0)
				frames += h.len / sizeof(float);
		} else if (h.type == REC_END && h.len == sizeof(*end)) {
			rc = child_read(&c, end, sizeof(*end));
			got_end = rc == 0;
		} else {
			set_err(err, errlen, "decoder crashed: it broke its protocol (record %u, %u bytes)",
			        h.type, h.len);
			rc = SAYIN_EDECODER;
			break;
		}
		if (rc == 1 || rc == SAYIN_EDECODER) {
			rc = child_failure(&c, o, err, errlen);
			goto out;
		}
		if (rc != 0)
			break;
	}
	/* What is left: -errno from poll or read, or the sink's error (err set). */
	if (rc < 0 && rc > -4096 && (err == NULL || err[0] == '\0'))
		set_err(err, errlen, "reading from the decoder failed: %s", strerror(-rc));
out:
	child_reap(&c, !got_end || rc != 0);
	if (c.fd >= 0)
		close(c.fd);
	free(samples);
	if (got_end)
		media__sandbox_note(end->sandbox);
	if (rc == 0 && end->code == 0 && end->frames != frames) {
		set_err(err, errlen, "decoder crashed: it announced %llu samples and sent %llu",
		        (unsigned long long)end->frames, (unsigned long long)frames);
		rc = SAYIN_EDECODER;
	}
	if (rc == 0)
		rc = take_end(o, end, info, err, errlen);
	return rc;
}

/* ---- the decoder child --------------------------------------------------- */

static int write_record(int fd, uint32_t type, const void *body, size_t len)
{
	struct rec_header h = { .type = type, .len = (uint32_t)len };
	int rc = fileio_write(fd, &h, sizeof(h), -1);

	return rc == 0 ? fileio_write(fd, body, len, -1) : rc;
}

static int pipe_write(void *ctx, const float *x, size_t n)
{
	int fd = *(const int *)ctx;

	while (n > 0) {
		size_t k = n < REC_MAX_SAMPLES ? n : REC_MAX_SAMPLES;
		int rc = write_record(fd, REC_SAMPLES, x, k * sizeof(float));
		if (rc != 0)
			return rc;
		x += k;
		n -= k;
	}
	return 0;
}

/* Blocks for good without a system call the sandbox forbids. */
static void hang_forever(void)
{
	static int never;

	for (;;)
		syscall(SYS_futex, &never, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
}

/* The child's test hook, for tests only: the publisher passes its own
 * SAYIN_TEST_DECODER_CRASH as `--test-hook=WHAT` (an upload reaches
 * neither). Each WHAT stands for what an exploited decoder would try, from
 * inside the sandbox:
 *   segv           die of SIGSEGV
 *   hang           block until killed (also lets a test look at the child)
 *   socket         open a TCP socket
 *   exec           execve this program again, without the hook
 *   open-rw:PATH   open PATH read-write (the store)
 *   read:PATH      open PATH and read it (a secret, the accounts file)
 *   secret         read the publisher's environment (/proc/PPID/environ,
 *                  named before the sandbox: getppid is not allowed in it)
 * Where the attempt succeeds, the child goes on and decodes as if nothing
 * happened (so a test sees the upload pass; what it opened stays open: no
 * other call, such as close, may be the one that gets it killed); where
 * the call fails it returns -errno with msg set; the sandbox kills it with
 * SIGSYS instead. */
static int test_hook_run(const char *what, char **argv, char *msg, size_t len)
{
	if (what == NULL)
		return 0;
	if (strcmp(what, "segv") == 0) {
		/* Not a null store: UBSan would report that, and its report
		 * needs calls the sandbox forbids. */
		raise(SIGSEGV);
		return 0;
	}
	if (strcmp(what, "hang") == 0)
		hang_forever();
	if (strcmp(what, "socket") == 0) {
		if (socket(AF_INET, SOCK_STREAM, 0) < 0) {
			int rc = -errno;
			set_err(msg, len, "test hook: socket: %s", strerror(errno));
			return rc;
		}
		return 0;
	}
	if (strcmp(what, "exec") == 0) {
		char *again[] = { argv[0], argv[1], argv[2], argv[3], argv[4], NULL };
		execve("/proc/self/exe", again, environ);
		set_err(msg, len, "test hook: execve: %s", strerror(errno));
		return -EPERM;
	}
	if (strncmp(what, "open-rw:", 8) == 0 || strncmp(what, "read:", 5) == 0) {
		bool rw = what[0] == 'o';
		const char *path = strchr(what, ':') + 1;
		char buf[256];
		int fd = open(path, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC);
		int rc = 0;

		if (fd < 0 || (!rw && read(fd, buf, sizeof(buf)) <= 0))
			rc = errno != 0 ? -errno : -EIO;
		if (rc != 0)
			set_err(msg, len, "test hook: %s: %s", path, strerror(-rc));
		return rc;
	}
	set_err(msg, len, "test hook: unknown %s", what);
	return -EINVAL;
}

int media_decoder_main(int argc, char **argv)
{
	struct rec_end end;
	media__info info;
	media__sink sink;
	struct stat st;
	enum log_level level = LOG_INFO;
	unsigned long long max_ms = 0, memory = 0;
	const char *hook = NULL;
	char secret_hook[64];
	unsigned applied = 0;
	int out_fd = 1, rc;
	char *tail = NULL;

	/* Writes to a file (a log on stderr) fail instead of killing us under
	 * RLIMIT_FSIZE 0. */
	signal(SIGXFSZ, SIG_IGN);
	if (argc == 6 && strncmp(argv[5], TEST_HOOK_FLAG, strlen(TEST_HOOK_FLAG)) == 0)
		hook = argv[5] + strlen(TEST_HOOK_FLAG);
	if ((argc != 5 && hook == NULL) || log_parse_level(argv[2], &level) != 0) {
		fprintf(stderr, "usage: %s LOG_LEVEL MAX_DURATION_MS MEMORY < FILE\n",
		        MEDIA_DECODER_COMMAND);
		return 2;
	}
	errno = 0;
	max_ms = strtoull(argv[3], &tail, 10);
	if (errno == 0 && tail != argv[3] && *tail == '\0')
		memory = strtoull(argv[4], &tail, 10);
	if (errno != 0 || tail == argv[3] || tail == argv[4] || *tail != '\0') {
		fprintf(stderr, "%s: bad MAX_DURATION_MS or MEMORY\n", MEDIA_DECODER_COMMAND);
		return 2;
	}
	/* 0: no limit (sanitizer builds reserve terabytes of shadow memory). */
	if (memory > 0) {
		struct rlimit as = { memory, memory };
		setrlimit(RLIMIT_AS, &as);
	}
	log_set_level(level);
	av_log_set_level(level >= LOG_DEBUG ? AV_LOG_VERBOSE : AV_LOG_ERROR);
	av_log_set_callback(media__ff_log);
	if (hook != NULL && strcmp(hook, "segv") == 0)
		signal(SIGSEGV, SIG_DFL); /* past any sanitizer's handler */
	if (hook != NULL && strcmp(hook, "secret") == 0) {
		snprintf(secret_hook, sizeof(secret_hook), "read:/proc/%ld/environ", (long)getppid());
		hook = secret_hook;
	}

	memset(&end, 0, sizeof(end));
	sink.write = pipe_write;
	sink.ctx = &out_fd;
	rc = fstat(0, &st) != 0 ? -errno : 0;
	/* Start-up is done: from here on the recording is read, and nothing
	 * but what media__sandbox_enter allows can happen. */
	if (rc == 0)
		rc = media__sandbox_enter(&applied, end.message, sizeof(end.message));
	end.sandbox = applied;
	if (rc != 0) {
		end.code = SAYIN_EDECODER;
		if (end.message[0] == '\0')
			set_err(end.message, sizeof(end.message), "cannot read: %s", strerror(-rc));
	} else if (test_hook_run(hook, argv, end.message, sizeof(end.message)) != 0) {
		end.code = SAYIN_EDECODER;
	} else if (!S_ISREG(st.st_mode)) {
		end.code = -EINVAL;
		set_err(end.message, sizeof(end.message), "cannot read: not a regular file");
	} else {
		end.code = media__decode_fd(0, (uint64_t)st.st_size, max_ms, &sink, &info, end.message,
		                            sizeof(end.message));
		end.rate = info.rate;
		end.channels = info.channels;
		end.input_frames = info.input_frames;
		end.frames = info.frames;
		memcpy(end.format, info.format, sizeof(end.format));
	}
	if (end.code == -ENOMEM && end.message[0] == '\0')
		set_err(end.message, sizeof(end.message), "out of memory decoding the recording");
	return write_record(out_fd, REC_END, &end, sizeof(end)) == 0 ? 0 : 1;
}

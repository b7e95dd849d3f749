/* test_sandbox: media__sandbox_enter, the decoder child's confinement. Each
 * case forks, confines the child, makes it try one thing and looks at how it
 * ended: what the decoder needs works, anything else dies of SIGSYS. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "media/sandbox.h"

enum attempt {
	DECODER_WORK, /* read and pread fd 0, write fd 1, allocate, free: must work */
	OPEN_READ,
	OPEN_WRITE,
	SOCKET,
	EXEC,
	PTRACE,
	MMAP_EXEC,
	KILL_PARENT,
	READ_OTHER_FD,
	FORK,
	ABORT,
};

/* What the child does once confined. Returns only when the call was let
 * through (then the child exits 0 after DECODER_WORK, 3 otherwise). */
static void attempt(enum attempt what, pid_t parent, const char *scratch)
{
	char buf[16];
	void *p;

	switch (what) {
	case DECODER_WORK:
		if (read(0, buf, 4) != 4 || pread(0, buf, 4, 5) != 4 || memcmp(buf, "ding", 4) != 0)
			_exit(4);
		p = malloc(64 << 20); /* mmap'd by glibc */
		if (p == NULL)
			_exit(5);
		memset(p, 1, 64 << 20);
		free(p);
		p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED || munmap(p, 1 << 20) != 0)
			_exit(6);
		_exit(0);
	case OPEN_READ:
		(void)open("/etc/hostname", O_RDONLY);
		break;
	case OPEN_WRITE:
		(void)open(scratch, O_WRONLY | O_CREAT, 0600);
		break;
	case SOCKET:
		(void)socket(AF_INET, SOCK_STREAM, 0);
		break;
	case EXEC: {
		char *argv[] = { "/bin/true", NULL }, *envp[] = { NULL };
		execve(argv[0], argv, envp);
		break;
	}
	case PTRACE:
		(void)ptrace(PTRACE_ATTACH, parent, NULL, NULL);
		break;
	case MMAP_EXEC:
		(void)mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		break;
	case KILL_PARENT:
		(void)kill(parent, 0);
		break;
	case READ_OTHER_FD:
		/* (void) does not silence _FORTIFY_SOURCE's warn_unused_result. */
		if (read(3, buf, 1) < 0)
			break;
		break;
	case FORK:
		if (fork() == 0)
			_exit(0);
		break;
	case ABORT:
		abort();
	}
	_exit(3);
}

/* Runs what in a confined child; returns its wait status and what applied
 * (the child reports it on its stdout). The child's stdin is a file holding
 * "recording", fd 3 a pipe's read end. */
static int run_confined(enum attempt what, unsigned *applied)
{
	int in, other[2], out[2], status = 0;
	char dir[] = "/tmp/sayin-test-sandbox-XXXXXX", input[64], scratch[64];
	pid_t pid;
	ssize_t n;

	assert_non_null(mkdtemp(dir));
	snprintf(input, sizeof(input), "%s/in", dir);
	snprintf(scratch, sizeof(scratch), "%s/f", dir);
	in = open(input, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(in >= 0);
	assert_int_equal(write(in, "recording", 9), 9);
	assert_int_equal(lseek(in, 0, SEEK_SET), 0);
	assert_int_equal(pipe(other), 0);
	assert_int_equal(pipe(out), 0);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		pid_t parent = getppid();
		unsigned got = 0;
		char err[256] = "";

		if (dup2(in, 0) < 0 || dup2(out[1], 1) < 0 || dup2(other[0], 3) < 0)
			_exit(100);
		signal(SIGABRT, SIG_DFL); /* not cmocka's handler */
		if (media__sandbox_enter(&got, err, sizeof(err)) != 0) {
			fprintf(stderr, "%s\n", err);
			_exit(101);
		}
		if (write(1, &got, sizeof(got)) != (ssize_t)sizeof(got))
			_exit(102);
		attempt(what, parent, scratch);
	}
	close(in);
	close(other[0]);
	close(other[1]);
	close(out[1]);
	*applied = 0;
	n = read(out[0], applied, sizeof(*applied));
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	close(out[0]);
	assert_int_equal(n, sizeof(*applied));
	/* Nothing was created where the child tried. */
	assert_int_equal(access(scratch, F_OK), -1);
	assert_int_equal(unlink(input), 0);
	assert_int_equal(rmdir(dir), 0);
	return status;
}

static void test_what_the_decoder_needs_works(void **state)
{
	unsigned applied;
	int status = run_confined(DECODER_WORK, &applied);

	(void)state;
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_true(applied & MEDIA_SANDBOX_VALID);
	assert_true(applied & MEDIA_SANDBOX_SECCOMP);
	assert_true(applied & MEDIA_SANDBOX_NO_NEW_PRIVS);
	/* The tests run as root here, where namespaces are always allowed. */
	if (geteuid() == 0) {
		assert_true(applied & MEDIA_SANDBOX_USERNS);
		assert_true(applied & MEDIA_SANDBOX_NETNS);
	}
}

static void test_everything_else_dies_of_sigsys(void **state)
{
	static const struct {
		enum attempt what;
		const char *name;
	} cases[] = {
		{ OPEN_READ, "open for reading" }, { OPEN_WRITE, "open for writing" },
		{ SOCKET, "socket" },               { EXEC, "execve" },
		{ PTRACE, "ptrace" },               { MMAP_EXEC, "executable mmap" },
		{ KILL_PARENT, "kill" },            { READ_OTHER_FD, "read of fd 3" },
		{ FORK, "fork" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned applied;
		int status = run_confined(cases[i].what, &applied);

		if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSYS)
			fail_msg("%s: the child was not killed by SIGSYS (status 0x%x)", cases[i].name,
			         status);
	}
}

/* abort() (an FFmpeg assertion) still reads as SIGABRT: the child may
 * signal itself. */
static void test_abort_is_sigabrt(void **state)
{
	unsigned applied;
	int status = run_confined(ABORT, &applied);

	(void)state;
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
}

static void test_describe(void **state)
{
	char line[160];

	(void)state;
	media__sandbox_describe(MEDIA_SANDBOX_VALID | MEDIA_SANDBOX_SECCOMP |
	                                MEDIA_SANDBOX_NO_NEW_PRIVS | MEDIA_SANDBOX_USERNS |
	                                MEDIA_SANDBOX_NETNS | MEDIA_SANDBOX_EMPTY_ENV,
	                        line, sizeof(line));
	assert_string_equal(line, "seccomp on, no_new_privs on, user+net namespace on, "
	                          "environment empty");
	media__sandbox_describe(MEDIA_SANDBOX_VALID | MEDIA_SANDBOX_SECCOMP, line, sizeof(line));
	assert_string_equal(line, "seccomp on, no_new_privs off, user+net namespace off, "
	                          "environment not empty");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_what_the_decoder_needs_works),
		cmocka_unit_test(test_everything_else_dies_of_sigsys),
		cmocka_unit_test(test_abort_is_sigabrt),
		cmocka_unit_test(test_describe),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* sandbox: the decoder child's namespaces and seccomp-bpf allow-list. The
 * list was made by tracing real decodes of every supported format (strace
 * -f of `sayin-publisher __decode` on the test fixtures) from the point where
 * decoder.c calls media__sandbox_enter: read/pread64 of the input, write,
 * brk/mmap/munmap, futex and exit_group were all they used. */
#include "media/sandbox.h"
#include "media/internal.h"

#include "core/log.h"

#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

extern char **environ;

#if MEDIA_UNDER_ASAN
/* LeakSanitizer checks at exit by stopping the world with clone and ptrace,
 * which the filter forbids: a sandboxed child skips that check (the decode
 * code's leaks are checked in-process by the unit tests instead). */
static volatile int sandboxed;
int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void)
{
	return sandboxed;
}
#endif

/* A private user namespace (so that no capability of ours means anything
 * outside it) and network namespace (no interface but a down loopback).
 * The kernel may refuse (no user namespaces for unprivileged users, a
 * limit of 0, a seccomp profile around us): that costs these two bits. */
static unsigned enter_namespaces(void)
{
	if (unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0)
		return MEDIA_SANDBOX_USERNS | MEDIA_SANDBOX_NETNS;
	if (unshare(CLONE_NEWNET) == 0)
		return MEDIA_SANDBOX_NETNS;
	return 0;
}

#define ALLOW(ctx, name, ...) \
	seccomp_rule_add((ctx), SCMP_ACT_ALLOW, SCMP_SYS(name), __VA_ARGS__)

/* The allow-list. Every call not named here kills the process. */
static int add_rules(scmp_filter_ctx ctx)
{
	static const int plain[] = {
		SCMP_SYS(brk), SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(madvise),
		SCMP_SYS(futex), SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigreturn),
		SCMP_SYS(clock_gettime), SCMP_SYS(gettid), SCMP_SYS(getpid),
		SCMP_SYS(exit), SCMP_SYS(exit_group),
	};
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < sizeof(plain) / sizeof(plain[0]); i++)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, plain[i], 0);
	/* The recording on fd 0; the pipe on fd 1 and the log on fd 2. */
	if (rc == 0)
		rc = ALLOW(ctx, read, 1, SCMP_A0(SCMP_CMP_EQ, 0));
	if (rc == 0)
		rc = ALLOW(ctx, pread64, 1, SCMP_A0(SCMP_CMP_EQ, 0));
	if (rc == 0)
		rc = ALLOW(ctx, write, 1, SCMP_A0(SCMP_CMP_EQ, 1));
	if (rc == 0)
		rc = ALLOW(ctx, write, 1, SCMP_A0(SCMP_CMP_EQ, 2));
	/* Memory, never executable: no new code in this process. */
	if (rc == 0)
		rc = ALLOW(ctx, mmap, 1, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	if (rc == 0)
		rc = ALLOW(ctx, mprotect, 1, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	/* The sanitizer runtime asks for its alternate signal stack on _exit. */
	if (rc == 0 && MEDIA_UNDER_ASAN)
		rc = ALLOW(ctx, sigaltstack, 0);
	/* abort() signals itself, and nobody else. */
	if (rc == 0)
		rc = ALLOW(ctx, tgkill, 1, SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid()));
	return rc;
}

int media__sandbox_enter(unsigned *applied, char *err, size_t errlen)
{
	unsigned got = MEDIA_SANDBOX_VALID;
	scmp_filter_ctx ctx;
	int rc;

	if (environ == NULL || environ[0] == NULL)
		got |= MEDIA_SANDBOX_EMPTY_ENV;
	got |= enter_namespaces();
	/* libseccomp sets it too (SCMP_FLTATR_CTL_NNP); set first so that it is
	 * on even where the filter fails. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1)
		got |= MEDIA_SANDBOX_NO_NEW_PRIVS;
	*applied = got;
	ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
	if (ctx == NULL) {
		media__set_err(err, errlen, "decoder sandbox: seccomp_init failed");
		return -ENOMEM;
	}
	/* A call from another ABI (int 0x80, x32) is no way around the list. */
	rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (rc == 0)
		rc = add_rules(ctx);
	if (rc == 0)
		rc = seccomp_load(ctx);
	seccomp_release(ctx);
	if (rc != 0) {
		/* libseccomp returns -errno; -ECANCELED for a kernel error. */
		media__set_err(err, errlen, "decoder sandbox: cannot load the seccomp filter: %s",
		               strerror(-rc));
		return rc < 0 && rc > -4096 ? rc : -EINVAL;
	}
#if MEDIA_UNDER_ASAN
	sandboxed = 1;
#endif
	*applied = got | MEDIA_SANDBOX_SECCOMP;
	return 0;
}

/* What the last child reported, and whether it was logged: the only
 * global state here, written by any thread through atomics. */
static unsigned noted;
static int logged;

void media__sandbox_note(unsigned applied)
{
	if (applied & MEDIA_SANDBOX_VALID)
		__atomic_store_n(&noted, applied, __ATOMIC_RELAXED);
}

unsigned media__sandbox_noted(void)
{
	return __atomic_load_n(&noted, __ATOMIC_RELAXED);
}

static const struct {
	const char *name;
	unsigned bit;
} protections[MEDIA_PROTECTION_COUNT] = {
	[MEDIA_PROTECTION_SECCOMP] = { "seccomp", MEDIA_SANDBOX_SECCOMP },
	[MEDIA_PROTECTION_NO_NEW_PRIVS] = { "no_new_privs", MEDIA_SANDBOX_NO_NEW_PRIVS },
	[MEDIA_PROTECTION_USERNS] = { "user_namespace", MEDIA_SANDBOX_USERNS },
	[MEDIA_PROTECTION_NETNS] = { "network_namespace", MEDIA_SANDBOX_NETNS },
	[MEDIA_PROTECTION_EMPTY_ENV] = { "empty_environment", MEDIA_SANDBOX_EMPTY_ENV },
};

const char *media_protection_name(enum media_protection p)
{
	return (unsigned)p < MEDIA_PROTECTION_COUNT ? protections[p].name : "";
}

bool media_protection_applied(enum media_protection p)
{
	unsigned applied = media__sandbox_noted();

	return (unsigned)p < MEDIA_PROTECTION_COUNT && (applied & MEDIA_SANDBOX_VALID) &&
	       (applied & protections[p].bit);
}

void media__sandbox_log_once(void)
{
	unsigned applied = media__sandbox_noted();
	char line[160];

	if (!(applied & MEDIA_SANDBOX_VALID) || __atomic_exchange_n(&logged, 1, __ATOMIC_RELAXED))
		return;
	media__sandbox_describe(applied, line, sizeof(line));
	log_info("decoder: sandbox: %s", line);
}

void media__sandbox_describe(unsigned applied, char *buf, size_t len)
{
	const char *ns = "off";

	if ((applied & (MEDIA_SANDBOX_USERNS | MEDIA_SANDBOX_NETNS)) ==
	    (MEDIA_SANDBOX_USERNS | MEDIA_SANDBOX_NETNS))
		ns = "user+net namespace on";
	else if (applied & MEDIA_SANDBOX_NETNS)
		ns = "net namespace on, user namespace off";
	else
		ns = "user+net namespace off";
	snprintf(buf, len, "seccomp %s, no_new_privs %s, %s, environment %s",
	         applied & MEDIA_SANDBOX_SECCOMP ? "on" : "off",
	         applied & MEDIA_SANDBOX_NO_NEW_PRIVS ? "on" : "off", ns,
	         applied & MEDIA_SANDBOX_EMPTY_ENV ? "empty" : "not empty");
}

const char *media__sandbox_library_version(char *out, size_t size)
{
	const struct scmp_version *v = seccomp_version();

	snprintf(out, size, "libseccomp %u.%u.%u\n", v->major, v->minor, v->micro);
	return out;
}

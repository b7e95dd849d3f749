/* sandbox: confines the decoder child (publisher/media/decoder.c) once its
 * own start-up is done: a private user and network namespace where the
 * kernel allows one, then a seccomp-bpf allow-list (libseccomp; this pair of
 * files is its only user), and the parent's note of what applied.
 * Private to publisher/media/ and its tests. media__sandbox_enter is for a
 * single-threaded child only: unshare(CLONE_NEWUSER) refuses a process
 * with threads, and the filter covers the calling thread and its future
 * children only. */
#ifndef SAYIN_MEDIA_SANDBOX_H
#define SAYIN_MEDIA_SANDBOX_H

#include <stddef.h>

/* 1 in an AddressSanitizer build, whose runtime the child must keep: its
 * options in the environment, and no leak check under the filter. */
#if defined(__SANITIZE_ADDRESS__)
#define MEDIA_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MEDIA_UNDER_ASAN 1
#endif
#endif
#ifndef MEDIA_UNDER_ASAN
#define MEDIA_UNDER_ASAN 0
#endif

/* What applied, as bits (the decoder reports them to the parent). */
enum {
	MEDIA_SANDBOX_SECCOMP = 1u << 0,   /* the allow-list is loaded */
	MEDIA_SANDBOX_NO_NEW_PRIVS = 1u << 1,
	MEDIA_SANDBOX_USERNS = 1u << 2,    /* a private user namespace */
	MEDIA_SANDBOX_NETNS = 1u << 3,     /* a private network namespace (no interface up) */
	MEDIA_SANDBOX_EMPTY_ENV = 1u << 4, /* no environment variable at all */
	MEDIA_SANDBOX_VALID = 1u << 31     /* set by every report, so 0 means "none" */
};

/* Confines the calling process for the rest of its life. After it returns
 * 0 the process may only:
 *   read and pread64 fd 0 (the recording),
 *   write to fds 1 and 2 (the pipe to the parent, the log),
 *   manage memory (brk, munmap, mremap, madvise; mmap and mprotect without
 *   PROT_EXEC),
 *   wait on futexes, block and unblock signals, return from a handler,
 *   signal itself (abort), read clocks, and exit.
 * Anything else (open of any kind, socket, connect, execve, ptrace, kill,
 * fork, ...) kills the process with SIGSYS. The namespaces are tried first
 * and their refusal is not an error: *applied says what took. Returns 0,
 * or -errno with err set when the filter could not be built or loaded (the
 * caller must then not go on: there is no sandbox). */
int media__sandbox_enter(unsigned *applied, char *err, size_t errlen);

/* "seccomp on, no_new_privs on, user+net namespace on, environment empty"
 * (or "off" where a protection did not apply) into out. */
void media__sandbox_describe(unsigned applied, char *buf, size_t len);

/* The parent's side, any thread: media__sandbox_note keeps what a child
 * reported (the latest); media__sandbox_noted returns it (0: no child has
 * reported yet); media__sandbox_log_once logs it at info, the first time
 * it is called after a report, once per process: transcode.c calls it
 * after a recording went through, so that a refused one keeps its one
 * line of error. */
void media__sandbox_note(unsigned applied);
unsigned media__sandbox_noted(void);
void media__sandbox_log_once(void);

/* "libseccomp X\n", as the linked library reports it, into out. */
const char *media__sandbox_library_version(char *out, size_t size);

#endif

/* shim: fault injection for the fault build (tests/fault/README.md). Linked
 * with -Wl,--wrap=SYMBOL, every call our objects (and the static liblmdb.a)
 * make to an allocator or a write-like call comes here first. The calls are
 * counted by kind, and the Nth of the chosen kind fails once:
 *
 *   SAYIN_FAULT=alloc:N   the Nth allocation returns NULL (errno ENOMEM)
 *   SAYIN_FAULT=io:N      the Nth write-like call returns -1 with errno EIO
 *   SAYIN_FAULT=count     nothing fails; only count
 *   SAYIN_FAULT_REPORT=F  the counters live in F (mapped shared), so the
 *                         sweep reads how far a run got even if it crashed
 *   SAYIN_FAULT_STACK=1   the fault prints its stack (ASan's symbolizer) to fd 2
 *   SAYIN_FAULT_TRACE=F   each log line (a write to fd 2) is copied to F after
 *                         the counters reached so far: where the stages begin
 *
 * Both variables are read once, before main, and removed from the
 * environment so a child the program starts never inherits them. Counting
 * stops in a forked child (pthread_atfork). Writes to fds 0-2 (logs, the
 * printed result) are never failed nor counted: the fault is in the store's
 * and the temporary files' I/O, and the error must still be reported. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

enum fault_kind { FAULT_NONE, FAULT_ALLOC, FAULT_IO };

/* The report file's layout (the sweep reads it: 5 little-endian u64). */
struct fault_counters {
	_Atomic unsigned long alloc_calls;
	_Atomic unsigned long io_calls;
	_Atomic unsigned long fired_kind; /* enum fault_kind of the fault that fired, 0 if none */
	_Atomic unsigned long fired_at;
	_Atomic unsigned long version;    /* 1 once the shim initialised */
};

static struct fault_counters local_counters;
static struct fault_counters *counters = &local_counters;
static enum fault_kind fault_kind;
static unsigned long fault_at;
static atomic_int counting; /* 0 before init and in a forked child */
static atomic_int init_done;
static int trace_fd = -1;
static int print_stack;

void __sanitizer_print_stack_trace(void);

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
int __real_posix_memalign(void **p, size_t align, size_t n);
void *__real_aligned_alloc(size_t align, size_t n);
ssize_t __real_write(int fd, const void *buf, size_t n);
ssize_t __real_pwrite(int fd, const void *buf, size_t n, off_t off);
ssize_t __real_writev(int fd, const struct iovec *iov, int cnt);
ssize_t __real_pwritev(int fd, const struct iovec *iov, int cnt, off_t off);
int __real_fsync(int fd);
int __real_fdatasync(int fd);
int __real_msync(void *addr, size_t len, int flags);
ssize_t __real_copy_file_range(int in, loff_t *in_off, int out, loff_t *out_off, size_t n,
                               unsigned flags);
int __real_fallocate(int fd, int mode, off_t off, off_t len);

static void on_fork_child(void)
{
	atomic_store(&counting, 0);
}

static void *json_alloc(size_t n);

static void fault_init(void)
{
	const char *spec, *report;
	int expected = 0;

	if (!atomic_compare_exchange_strong(&init_done, &expected, 1))
		return;
	spec = getenv("SAYIN_FAULT");
	report = getenv("SAYIN_FAULT_REPORT");
	print_stack = getenv("SAYIN_FAULT_STACK") != NULL;
	if (getenv("SAYIN_FAULT_TRACE") != NULL)
		trace_fd = open(getenv("SAYIN_FAULT_TRACE"), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
		                0600);
	if (spec == NULL && report == NULL)
		return;
	if (report != NULL) {
		int fd = open(report, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd >= 0 && ftruncate(fd, sizeof(struct fault_counters)) == 0) {
			void *m = mmap(NULL, sizeof(struct fault_counters), PROT_READ | PROT_WRITE,
			               MAP_SHARED, fd, 0);
			if (m != MAP_FAILED)
				counters = m;
		}
		if (fd >= 0)
			close(fd);
	}
	if (spec != NULL && strncmp(spec, "alloc:", 6) == 0) {
		fault_kind = FAULT_ALLOC;
		fault_at = strtoul(spec + 6, NULL, 10);
	} else if (spec != NULL && strncmp(spec, "io:", 3) == 0) {
		fault_kind = FAULT_IO;
		fault_at = strtoul(spec + 3, NULL, 10);
	}
	atomic_store(&counters->version, 1);
	pthread_atfork(NULL, NULL, on_fork_child);
	/* jansson is a shared library: --wrap does not reach it, its allocator
	 * hook does. Set before it allocates anything. libuv's hook is left
	 * alone: libuv aborts when some of its own allocations fail (in
	 * uv_loop_init, uv_signal_init), which no caller can handle. */
	json_set_alloc_funcs(json_alloc, free);
	unsetenv("SAYIN_FAULT");
	unsetenv("SAYIN_FAULT_REPORT");
	unsetenv("SAYIN_FAULT_TRACE");
	unsetenv("SAYIN_FAULT_STACK");
	atomic_store(&counting, 1);
}

__attribute__((constructor(101))) static void fault_constructor(void)
{
	fault_init();
}

/* Counts one call of kind; 1 if this one must fail. */
static int fault_hit(enum fault_kind kind)
{
	unsigned long n;

	if (!atomic_load_explicit(&counting, memory_order_relaxed))
		return 0;
	n = 1 + atomic_fetch_add(kind == FAULT_ALLOC ? &counters->alloc_calls : &counters->io_calls,
	                         1);
	if (kind != fault_kind || n != fault_at)
		return 0;
	atomic_store(&counters->fired_at, n);
	atomic_store(&counters->fired_kind, (unsigned long)kind);
	if (print_stack)
		__sanitizer_print_stack_trace();
	return 1;
}

static int alloc_fails(void)
{
	if (fault_hit(FAULT_ALLOC)) {
		errno = ENOMEM;
		return 1;
	}
	return 0;
}

static int io_fails(int fd)
{
	if (fd >= 0 && fd <= 2)
		return 0;
	if (fault_hit(FAULT_IO)) {
		errno = EIO;
		return 1;
	}
	return 0;
}

void *__wrap_malloc(size_t n);
void *__wrap_malloc(size_t n)
{
	return alloc_fails() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size)
{
	return alloc_fails() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n)
{
	if (p != NULL && n == 0)
		return __real_realloc(p, n); /* a free */
	return alloc_fails() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s);
char *__wrap_strdup(const char *s)
{
	return alloc_fails() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n);
char *__wrap_strndup(const char *s, size_t n)
{
	return alloc_fails() ? NULL : __real_strndup(s, n);
}

int __wrap_posix_memalign(void **p, size_t align, size_t n);
int __wrap_posix_memalign(void **p, size_t align, size_t n)
{
	return alloc_fails() ? ENOMEM : __real_posix_memalign(p, align, n);
}

void *__wrap_aligned_alloc(size_t align, size_t n);
void *__wrap_aligned_alloc(size_t align, size_t n)
{
	return alloc_fails() ? NULL : __real_aligned_alloc(align, n);
}

int __wrap_asprintf(char **out, const char *fmt, ...);
int __wrap_asprintf(char **out, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (alloc_fails())
		return -1; /* *out is undefined, as glibc documents */
	va_start(ap, fmt);
	n = vasprintf(out, fmt, ap);
	va_end(ap);
	return n;
}

static void *json_alloc(size_t n)
{
	return __wrap_malloc(n);
}

ssize_t __wrap_write(int fd, const void *buf, size_t n);
ssize_t __wrap_write(int fd, const void *buf, size_t n)
{
	if (fd == 2 && trace_fd >= 0 && atomic_load(&counting)) {
		char head[64];
		int len = snprintf(head, sizeof(head), "alloc=%lu io=%lu\t",
		                   atomic_load(&counters->alloc_calls), atomic_load(&counters->io_calls));
		if (__real_write(trace_fd, head, (size_t)len) < 0 || __real_write(trace_fd, buf, n) < 0)
			trace_fd = -1;
	}
	return io_fails(fd) ? -1 : __real_write(fd, buf, n);
}

ssize_t __wrap_pwrite(int fd, const void *buf, size_t n, off_t off);
ssize_t __wrap_pwrite(int fd, const void *buf, size_t n, off_t off)
{
	return io_fails(fd) ? -1 : __real_pwrite(fd, buf, n, off);
}

ssize_t __wrap_writev(int fd, const struct iovec *iov, int cnt);
ssize_t __wrap_writev(int fd, const struct iovec *iov, int cnt)
{
	return io_fails(fd) ? -1 : __real_writev(fd, iov, cnt);
}

ssize_t __wrap_pwritev(int fd, const struct iovec *iov, int cnt, off_t off);
ssize_t __wrap_pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return io_fails(fd) ? -1 : __real_pwritev(fd, iov, cnt, off);
}

int __wrap_fsync(int fd);
int __wrap_fsync(int fd)
{
	return io_fails(fd) ? -1 : __real_fsync(fd);
}

int __wrap_fdatasync(int fd);
int __wrap_fdatasync(int fd)
{
	return io_fails(fd) ? -1 : __real_fdatasync(fd);
}

int __wrap_msync(void *addr, size_t len, int flags);
int __wrap_msync(void *addr, size_t len, int flags)
{
	return io_fails(-1) ? -1 : __real_msync(addr, len, flags);
}

ssize_t __wrap_copy_file_range(int in, loff_t *in_off, int out, loff_t *out_off, size_t n,
                               unsigned flags);
ssize_t __wrap_copy_file_range(int in, loff_t *in_off, int out, loff_t *out_off, size_t n,
                               unsigned flags)
{
	return io_fails(out) ? -1 : __real_copy_file_range(in, in_off, out, out_off, n, flags);
}

int __wrap_fallocate(int fd, int mode, off_t off, off_t len);
int __wrap_fallocate(int fd, int mode, off_t off, off_t len)
{
	return io_fails(fd) ? -1 : __real_fallocate(fd, mode, off, len);
}

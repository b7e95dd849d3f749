/* memfd: the fuzz input as a file descriptor, for the readers that take one
 * (the WAV decoder, the container walks): an anonymous memory file. */
#ifndef SAYIN_FUZZ_MEMFD_H
#define SAYIN_FUZZ_MEMFD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/* Returns a descriptor holding the size bytes of data (offset 0), or -1. */
static inline int fuzz_memfd(const uint8_t *data, size_t size)
{
	int fd = memfd_create("fuzz", MFD_CLOEXEC);
	size_t off = 0;

	if (fd < 0)
		return -1;
	while (off < size) {
		ssize_t n = write(fd, data + off, size - off);
		if (n <= 0) {
			close(fd);
			return -1;
		}
		off += (size_t)n;
	}
	return fd;
}

#endif

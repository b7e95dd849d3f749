/* fileio: whole-buffer reads and writes and file copies, EINTR-safe (fileio.h). */
#include "core/fileio.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define COPY_CHUNK (256u << 10)

int fileio_write(int fd, const void *buf, size_t len, int64_t off)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = off < 0 ? write(fd, p, len) : pwrite(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
		if (off >= 0)
			off += n;
	}
	return 0;
}

int fileio_read(int fd, void *buf, size_t len, int64_t off, size_t *got)
{
	char *p = buf;
	size_t done = 0;

	*got = 0;
	while (done < len) {
		ssize_t n = off < 0 ? read(fd, p + done, len - done)
		                    : pread(fd, p + done, len - done, (off_t)(off + (int64_t)done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*got = done;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*got = done;
	return 0;
}

int fileio_copy(int src, int dst, int64_t dst_off, uint64_t len)
{
	loff_t in = 0, out = dst_off;
	unsigned char *buf;

	while ((uint64_t)in < len) {
		ssize_t n = copy_file_range(src, &in, dst, dst_off < 0 ? NULL : &out,
		                            (size_t)(len - (uint64_t)in), 0);
		if (n > 0 || (n < 0 && errno == EINTR))
			continue;
		if (n == 0)
			return -EIO; /* src ends early */
		if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
			return -errno;
		break; /* not between these two files: copy through a buffer */
	}
	if ((uint64_t)in == len)
		return 0;
	buf = malloc(COPY_CHUNK);
	if (buf == NULL)
		return -ENOMEM;
	while ((uint64_t)in < len) {
		size_t want = len - (uint64_t)in < COPY_CHUNK ? (size_t)(len - (uint64_t)in) : COPY_CHUNK;
		ssize_t n = pread(src, buf, want, in);
		int rc;
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(buf);
			return n < 0 ? -errno : -EIO;
		}
		rc = fileio_write(dst, buf, (size_t)n, dst_off < 0 ? -1 : out);
		if (rc != 0) {
			free(buf);
			return rc;
		}
		in += n;
		out += n;
	}
	free(buf);
	return 0;
}

/* fileio: the one home of the EINTR and short-transfer loops: whole-buffer
 * reads and writes, and file-to-file copies, for every module that does
 * file I/O (the store, media, ingest). Threading: any thread; no state. */
#ifndef SAYIN_FILEIO_H
#define SAYIN_FILEIO_H

#include <stddef.h>
#include <stdint.h>

/* Writes all len bytes at fd's file offset (off < 0) or at off.
 * Returns 0 or -errno (-EIO for a write of 0 bytes). */
int fileio_write(int fd, const void *buf, size_t len, int64_t off);

/* Reads up to len bytes from fd at off, or at its file offset (which then
 * moves) when off < 0, retrying on EINTR and short reads: *got < len only at
 * end of file. Returns 0 or -errno (*got then says what was read). */
int fileio_read(int fd, void *buf, size_t len, int64_t off, size_t *got);

/* Copies len bytes of src, from its offset 0 (its file offset is neither
 * used nor moved), to dst at dst_off, or at dst's file offset when dst_off
 * < 0. In the kernel with copy_file_range where the two files allow it,
 * else through a 256 KiB buffer. Returns 0, -EIO if src is shorter than
 * len, -ENOMEM or -errno. */
int fileio_copy(int src, int dst, int64_t dst_off, uint64_t len);

#endif

/* util: the helpers every media file may use: error lines, the recording and
 * temporary files, reading a file back, FFmpeg's messages and error text. */
#include "media/internal.h"

#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libavutil/avutil.h>
#include <libavutil/error.h>

void media__set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int media__open_recording(const char *path, uint64_t *size, char *err, size_t errlen)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

	if (fd < 0) {
		rc = -errno;
		media__set_err(err, errlen, "cannot open: %s", strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		media__set_err(err, errlen, "cannot stat: %s", strerror(-rc));
	} else if (S_ISDIR(st.st_mode)) {
		/* The readers need the file's size to spot truncation. */
		rc = -EISDIR;
		media__set_err(err, errlen, "cannot read: %s", strerror(EISDIR));
	} else if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		media__set_err(err, errlen, "cannot read: not a regular file");
	} else {
		*size = (uint64_t)st.st_size;
		return fd;
	}
	close(fd);
	return rc;
}

int media__open_tmp(const char *dir, char *err, size_t errlen)
{
	char path[4096];
	int fd = open(dir, O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600), n;

	if (fd >= 0)
		return fd;
	n = snprintf(path, sizeof(path), "%s/sayin-pcm.XXXXXX", dir);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		media__set_err(err, errlen, "temporary directory path is too long");
		return -ENAMETOOLONG;
	}
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0) {
		int rc = -errno;
		media__set_err(err, errlen, "cannot create a temporary file in %s: %s", dir,
		               strerror(errno));
		return rc;
	}
	unlink(path);
	return fd;
}

const char *media__tmp_dir(const char *dir)
{
	if (dir == NULL) {
		dir = getenv("TMPDIR");
		if (dir == NULL || dir[0] == '\0')
			dir = "/tmp";
	}
	return dir;
}

int media__read_back(int fd, media_buffer *out)
{
	struct stat st;
	unsigned char *data;
	size_t len, got;
	int rc;

	memset(out, 0, sizeof(*out));
	if (fstat(fd, &st) != 0)
		return -errno;
	if (st.st_size <= 0 || (uint64_t)st.st_size > SIZE_MAX)
		return -EIO;
	len = (size_t)st.st_size;
	data = malloc(len);
	if (data == NULL)
		return -ENOMEM;
	rc = fileio_read(fd, data, len, 0, &got);
	if (rc == 0 && got < len)
		rc = -EIO;
	if (rc != 0) {
		free(data);
		return rc;
	}
	out->data = data;
	out->len = len;
	return 0;
}

void media_buffer_free(media_buffer *buf)
{
	if (buf == NULL)
		return;
	free(buf->data);
	buf->data = NULL;
	buf->len = 0;
}

void media_file_close(media_file *f)
{
	if (f->len > 0)
		close(f->fd);
	f->fd = -1;
	f->len = 0;
}

int media__enter(bool ok, void *out, size_t size, const char *what, char *err, size_t errlen)
{
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (out != NULL)
		memset(out, 0, size);
	if (!ok || out == NULL) {
		media__set_err(err, errlen, "%s", what);
		return SAYIN_EINVAL;
	}
	return 0;
}

int media__enter_encode(const media_audio *audio, media_buffer *out, const char *what, char *err,
                        size_t errlen)
{
	int rc = media__enter(audio != NULL, out, sizeof(*out), what, err, errlen);

	if (rc == 0 && (audio->frames == 0 || audio->samples == NULL)) {
		media__set_err(err, errlen, "no samples to encode");
		rc = SAYIN_EEMPTY;
	}
	return rc;
}

uint64_t media__frame_limit(uint64_t max_duration_ms, unsigned rate)
{
	if (max_duration_ms == 0 || max_duration_ms > UINT64_MAX / rate)
		return UINT64_MAX;
	return max_duration_ms * rate / 1000;
}

int media__too_long(uint64_t max_duration_ms, char *err, size_t errlen)
{
	media__set_err(err, errlen,
	               "too long: the recording lasts more than the %llu s limit (max-duration)",
	               (unsigned long long)(max_duration_ms / 1000));
	return SAYIN_ETOOLONG;
}

/* FFmpeg's own messages, at debug level: its warnings about odd files are
 * not ours to print, and the error that matters reaches the caller. */
void media__ff_log(void *avcl, int level, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	(void)avcl;
	if (level > av_log_get_level())
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n > 0 && line[n - 1] == '\n')
		line[--n] = '\0';
	if (n > 0)
		log_debug("ffmpeg: %s", line);
}

const char *media__av_strerror(int averr, char *buf, size_t len)
{
	if (av_strerror(averr, buf, len) < 0)
		snprintf(buf, len, "error %d", averr);
	return buf;
}

/* decode: a recording to mono MEDIA_RATE floats, its format told by its bytes:
 * RIFF to the strict reader (wav.c), everything else to FFmpeg (ffmpeg.c);
 * and media_decode_file, which does that in this process. */
#include "media/internal.h"

#include "core/buf.h"
#include "core/error.h"
#include "core/fileio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define set_err media__set_err

int media__decode_fd(int fd, uint64_t size, uint64_t max_duration_ms, const media__sink *sink,
                     media__info *info, char *err, size_t errlen)
{
	unsigned char magic[4];
	size_t got;
	int rc;

	memset(info, 0, sizeof(*info));
	if (size == 0) {
		set_err(err, errlen, "the file is empty");
		return SAYIN_EEMPTY;
	}
	rc = fileio_read(fd, magic, sizeof(magic), 0, &got);
	if (rc < 0) {
		set_err(err, errlen, "read failed: %s", strerror(-rc));
		return rc;
	}
	/* RIFF goes to the strict reader, also when cut inside the magic. */
	if (memcmp(magic, "RIFF", got) == 0 || (got == 4 && (memcmp(magic, "RIFX", 4) == 0 ||
	                                                     memcmp(magic, "RF64", 4) == 0)))
		return media__decode_wav(fd, size, max_duration_ms, sink, info, err, errlen);
	return media__decode_ffmpeg(fd, size, max_duration_ms, sink, info, err, errlen);
}

/* media_decode_file's sink: the whole signal in memory. */
static int mem_write(void *ctx, const float *x, size_t n)
{
	if (n > SIZE_MAX / sizeof(float))
		return -ENOMEM;
	return buf_append(ctx, x, n * sizeof(float));
}

int media_decode_file(const char *path, media_audio *out, char *err, size_t errlen)
{
	buf mem = BUF_INIT;
	media__sink sink = { mem_write, &mem };
	media__info info;
	uint64_t size = 0;
	size_t len = 0;
	int fd, rc = media__enter(path != NULL, out, sizeof(*out),
	                          "media_decode_file: no path or no output", err, errlen);

	if (rc != 0)
		return rc;
	fd = media__open_recording(path, &size, err, errlen);
	if (fd < 0)
		return fd;
	rc = media__decode_fd(fd, size, 0, &sink, &info, err, errlen);
	close(fd);
	if (rc == -ENOMEM && (err == NULL || errlen == 0 || err[0] == '\0'))
		set_err(err, errlen, "out of memory decoding the recording");
	if (rc != 0) {
		buf_free(&mem);
		return rc;
	}
	/* buf's memory comes from malloc: aligned for floats. */
	out->samples = (float *)(void *)buf_take(&mem, &len);
	out->frames = len / sizeof(float);
	out->input_rate = info.rate;
	out->input_channels = info.channels;
	out->input_frames = info.input_frames;
	snprintf(out->input_format, sizeof(out->input_format), "%s", info.format);
	return 0;
}

void media_audio_free(media_audio *audio)
{
	if (audio == NULL)
		return;
	free(audio->samples);
	memset(audio, 0, sizeof(*audio));
}

double media_audio_duration(const media_audio *audio)
{
	if (audio == NULL || audio->input_rate == 0)
		return 0.0;
	return (double)audio->input_frames / (double)audio->input_rate;
}

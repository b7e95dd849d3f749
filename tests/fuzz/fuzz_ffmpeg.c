/* fuzz_ffmpeg: the FFmpeg decode path of publisher/media/ffmpeg.c,
 * media__decode_ffmpeg on the input as a file (a memfd): our AVIO over the
 * descriptor, the demuxer and decoder allow-lists, the duration limit, the
 * container walks (containers.c) and the declared-against-decoded duration
 * check that catches a cut FLAC or MP4. FFmpeg itself is Debian's,
 * uninstrumented: coverage counts our code only, but ASan still sees our
 * buffers.
 *
 * Checks: samples are finite, a success delivered info.frames samples, a
 * failure names its cause. In production this runs in the decoder's child
 * process; here in-process, so a crash inside FFmpeg shows as one. */
#include "core/log.h"
#include "media/internal.h"
#include "memfd.h"

#include <libavutil/log.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

struct counter {
	uint64_t samples;
};

static int count(void *ctx, const float *samples, size_t n)
{
	struct counter *c = ctx;
	for (size_t i = 0; i < n; i++) {
		if (!isfinite(samples[i]))
			abort();
	}
	c->samples += n;
	return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* As the decoder's child sets up: FFmpeg logs through our log. */
	log_set_level(LOG_ERROR);
	av_log_set_level(AV_LOG_ERROR);
	av_log_set_callback(media__ff_log);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct counter c = { 0 };
	const media__sink sink = { count, &c };
	media__info info = { 0 };
	char err[256] = "";
	int fd = fuzz_memfd(data, size);
	int rc;

	if (fd < 0)
		return 0;
	rc = media__decode_ffmpeg(fd, size, 30000, &sink, &info, err, sizeof(err));
	close(fd);
	if (rc == 0 && c.samples != info.frames)
		abort();
	if (rc != 0 && err[0] == '\0')
		abort();
	return 0;
}

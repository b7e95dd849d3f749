/* fuzz_wav: the WAV reader (publisher/media/wav.c), media__decode_wav on the
 * input as a file (a memfd), decoding into a sink that counts.
 *
 * Checks the decoder's promises: samples are finite, and on success the
 * sink got exactly info.frames samples, at least one. The duration limit
 * is 30 s, as a short post's would be, so one input stays fast. */
#include "core/log.h"
#include "media/internal.h"
#include "memfd.h"

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
	log_set_level(LOG_ERROR);
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
	rc = media__decode_wav(fd, size, 30000, &sink, &info, err, sizeof(err));
	close(fd);
	if (rc == 0 && (c.samples != info.frames || c.samples == 0))
		abort();
	if (rc != 0 && err[0] == '\0')
		abort(); /* every failure names its cause */
	return 0;
}

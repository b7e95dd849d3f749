/* fuzz_containers: the cut-file checks of publisher/media/containers.c
 * (media__check_container) on the input as a file (a memfd).
 *
 * Input: byte 0 picks the container name FFmpeg would have reported; the
 * rest is the file. Ogg, MP3, CAF, AIFF and Matroska have a walk; FLAC and
 * MP4 ("mov") have none (their header's duration is checked in ffmpeg.c)
 * and must answer 0 without reading. Checks that every failure says why. */
#include "core/log.h"
#include "media/internal.h"
#include "memfd.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[] = { "ogg", "mp3", "caf", "aiff", "matroska", "flac", "mov" };
#define N_NAMES (sizeof(names) / sizeof(names[0]))

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
	const char *name;
	char err[256] = "";
	int fd, rc;

	if (size < 1)
		return 0;
	name = names[data[0] % N_NAMES];
	fd = fuzz_memfd(data + 1, size - 1);
	if (fd < 0)
		return 0;
	rc = media__check_container(fd, size - 1, name, err, sizeof(err));
	close(fd);
	if (rc != 0 && err[0] == '\0')
		abort();
	if ((strcmp(name, "flac") == 0 || strcmp(name, "mov") == 0) && rc != 0)
		abort();
	return 0;
}

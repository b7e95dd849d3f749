/* versions: the media libraries' own version reports, for --version. */
#include "media/media.h"
#include "media/sandbox.h"

#include <ebur128.h>
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avutil.h>
#include <opus.h>
#include <soxr.h>
#include <stdio.h>

/* "X.Y.Z" of an FFmpeg library's version integer. */
static void ffmpeg_version(char *out, size_t size, unsigned v)
{
	snprintf(out, size, "%u.%u.%u", AV_VERSION_MAJOR(v), AV_VERSION_MINOR(v), AV_VERSION_MICRO(v));
}

const char *media_library_versions(char *out, size_t size)
{
	char fmt[32], codec[32], util[32], seccomp[64];
	int major, minor, patch;

	ffmpeg_version(fmt, sizeof(fmt), avformat_version());
	ffmpeg_version(codec, sizeof(codec), avcodec_version());
	ffmpeg_version(util, sizeof(util), avutil_version());
	ebur128_get_version(&major, &minor, &patch);
	snprintf(out, size,
	         "opus %s\nffmpeg %s\nlibavformat %s\nlibavcodec %s\nlibavutil %s\nsoxr %s\n"
	         "libebur128 %d.%d.%d\n%s",
	         opus_get_version_string(), av_version_info(), fmt, codec, util, soxr_version(),
	         major, minor, patch, media__sandbox_library_version(seccomp, sizeof(seccomp)));
	return out;
}

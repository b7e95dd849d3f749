/* fixture: the one fixture of the media unit tests (fixture.c). Each
 * test_*.c under this folder is its own program; fixture.c is linked into
 * every one of them, so its names carry the mtest_ prefix. */
#ifndef SAYIN_TEST_MEDIA_FIXTURE_H
#define SAYIN_TEST_MEDIA_FIXTURE_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>

#include "media/media.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* The temporary directory of this program's run (made before the first
 * test, removed after the last), and a path in it. */
extern char mtest_tmp_dir[];
void mtest_tmp_path(char *buf, size_t len, const char *name);

/* ---- a small byte builder (fails the test when out of memory) ------------ */

struct bytes {
	unsigned char *p;
	size_t len, cap;
};

void mtest_put(struct bytes *b, const void *data, size_t n);
void mtest_put_le16(struct bytes *b, unsigned v);
void mtest_put_le32(struct bytes *b, uint32_t v);
void mtest_set_le32(struct bytes *b, size_t off, uint32_t v);
void mtest_write_file(const char *path, const void *data, size_t len);

/* ---- WAV files of a known tone ------------------------------------------------ */

#define TONE_HZ 1000.0

struct wav_spec {
	unsigned tag;       /* format tag; the subformat when extensible */
	unsigned channels;
	unsigned rate;
	unsigned bits;
	size_t frames;
	bool extensible;    /* write WAVE_FORMAT_EXTENSIBLE */
	bool extra_chunks;  /* an odd-sized chunk before fmt and a LIST before data */
	bool list_after;    /* a LIST chunk after the data chunk */
};

/* The tone's amplitude in channel c, and that of the mono average. */
double mtest_chan_amp(unsigned c);
double mtest_expected_mono_amp(unsigned channels);
/* Sample i of channel c. */
double mtest_sample_value(const struct wav_spec *s, size_t i, unsigned c);
/* Offset of the data chunk's size field in the last built WAV. */
extern size_t mtest_data_size_offset;
void mtest_build_wav(const struct wav_spec *s, struct bytes *b);
/* Builds the WAV and writes it to name in the temporary directory. */
void mtest_write_wav(const char *name, const struct wav_spec *s, char *path, size_t pathlen);

/* media_decode_file must fail with want, a message and a zeroed output:
 * on the file at path, or on data written to a file. */
void mtest_expect_decode_error(const char *path, int want);
void mtest_expect_bytes_error(const void *data, size_t len, int want);

/* ---- test signals and Ogg Opus streams ----------------------------------- */

/* Deterministic test signal: a 220 Hz tone with harmonics plus noise. */
void mtest_make_audio(media_audio *a, size_t frames, unsigned input_rate);

struct ogg_info {
	size_t n_pages;
	struct page_info {
		int64_t granule;
		bool bos, eos, continued;
		uint32_t serial;
		long seqno;
		size_t packets_done; /* packets that end on this page */
		size_t len;          /* header + body bytes */
	} pages[4096];
	size_t n_packets;
	struct {
		unsigned char *data;
		long len;
		size_t page; /* where it ends */
	} packets[8192];
};

/* Demuxes with libogg (checking every page's CRC); free with mtest_free_ogg. */
struct ogg_info *mtest_parse_ogg(const media_buffer *buf);
void mtest_free_ogg(struct ogg_info *info);
/* Decodes the packets with libopus, pre-skip and end trimming applied
 * (*n samples; free() them). */
float *mtest_decode_stream(const media_buffer *buf, size_t *n);

/* ---- external tools ---------------------------------------------------------- */

bool mtest_have_tool(const char *name);
/* Runs a shell command; its exit status. */
int mtest_run(const char *cmd);
/* A stream's value by ffprobe, e.g. "stream=codec_name" -> "aac". */
void mtest_probe(const char *path, const char *entries, char *out, size_t len);

/* ---- the runner ---------------------------------------------------------------- */

/* Every test program's main: runs tests (n of them) around the temporary
 * directory, or acts as the decoder child when called as one (the pipeline
 * tests run their own binary as media_transcode_file's decoder_exe). */
int mtest_main(int argc, char **argv, const struct CMUnitTest *tests, size_t n);

#endif

/* card: the PNG share card (og:image), a post's waveform drawn with libpng
 * (contract: page.h, page_card_png). */
#include "render/page.h"

#include "core/buf.h"
#include "core/error.h"
#include "core/log.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rounded bars across the middle of a dark card, in the pages' dark-mode
 * accent colour; a 16-entry palette blends background to bar for the
 * anti-aliased edges. */
#define CARD_BARS 108
#define CARD_BAR_WIDTH 6
#define CARD_BAR_PITCH 10
#define CARD_LEFT ((PAGE_CARD_WIDTH - (CARD_BARS * CARD_BAR_PITCH - (CARD_BAR_PITCH - CARD_BAR_WIDTH))) / 2)
#define CARD_MID (PAGE_CARD_HEIGHT / 2)
#define CARD_HALF 220 /* the loudest bar's half height, caps included */
#define CARD_LEVELS 16

static const unsigned char card_bg[3] = { 0x16, 0x13, 0x1f };
static const unsigned char card_fg[3] = { 0xff, 0x6f, 0x9c };

/* The amplitude of each bar, 0..1 (the loudest bar is 1), from
 * audiowaveform JSON; 0 or SAYIN_ECORRUPT. */
static int card_amplitudes(const void *json, size_t len, double amp[CARD_BARS])
{
	json_t *doc = json_loadb(json, len, 0, NULL);
	const json_t *data = json_object_get(doc, "data");
	const json_t *version = json_object_get(doc, "version");
	const json_t *channels = json_object_get(doc, "channels");
	const json_t *length = json_object_get(doc, "length");
	json_int_t bits = json_integer_value(json_object_get(doc, "bits"));
	json_int_t ch = 1, scale = bits == 16 ? 32768 : 128;
	size_t n, pixels;
	double top = 0;
	int rc = SAYIN_ECORRUPT;

	memset(amp, 0, sizeof(double) * CARD_BARS);
	if (!json_is_object(doc) || !json_is_array(data) || !json_is_integer(version) ||
	    json_integer_value(version) < 1 || json_integer_value(version) > 2 ||
	    (bits != 8 && bits != 16))
		goto done;
	if (channels != NULL) {
		if (!json_is_integer(channels) || json_integer_value(channels) < 1 ||
		    json_integer_value(channels) > 24)
			goto done;
		ch = json_integer_value(channels);
	}
	n = json_array_size(data);
	pixels = n / (2 * (size_t)ch);
	if (n == 0 || n % (2 * (size_t)ch) != 0 ||
	    (length != NULL && (!json_is_integer(length) ||
	                        json_integer_value(length) != (json_int_t)pixels)))
		goto done;
	for (size_t bar = 0; bar < CARD_BARS; bar++) {
		size_t a = bar * pixels / CARD_BARS, z = (bar + 1) * pixels / CARD_BARS;

		if (z <= a)
			z = a + 1;
		for (size_t i = a; i < z && i < pixels; i++) {
			const json_t *lo = json_array_get(data, 2 * (size_t)ch * i);
			const json_t *hi = json_array_get(data, 2 * (size_t)ch * i + 1);
			json_int_t l = json_integer_value(lo), h = json_integer_value(hi);
			double peak;

			if (!json_is_integer(lo) || !json_is_integer(hi) || l < -scale || l >= scale ||
			    h < -scale || h >= scale)
				goto done;
			peak = (double)(-l > h ? -l : h) / (double)scale;
			if (peak > amp[bar])
				amp[bar] = peak;
		}
		if (amp[bar] > top)
			top = amp[bar];
	}
	if (top > 0) {
		for (size_t bar = 0; bar < CARD_BARS; bar++)
			amp[bar] /= top;
	}
	rc = 0;
done:
	json_decref(doc);
	return rc;
}

/* One row of palette indexes (4 bits each, high nibble first): each bar is
 * a vertical capsule; a pixel's index is its coverage in sixteenths. */
static void card_row(int y, const double amp[CARD_BARS], unsigned char *row)
{
	const double r = CARD_BAR_WIDTH / 2.0, py = y + 0.5;

	memset(row, 0, PAGE_CARD_WIDTH / 2);
	for (int bar = 0; bar < CARD_BARS; bar++) {
		double half = amp[bar] * (CARD_HALF - r);
		double y0 = CARD_MID - half, y1 = CARD_MID + half;
		double cx = CARD_LEFT + bar * CARD_BAR_PITCH + r;
		double dy = py < y0 ? y0 - py : py > y1 ? py - y1 : 0;

		if (dy > r + 1)
			continue;
		for (int x = (int)(cx - r) - 1; x <= (int)(cx + r) + 1; x++) {
			double dx = x + 0.5 - cx, cover = 0.5 - (sqrt(dx * dx + dy * dy) - r);
			int level;

			if (x < 0 || x >= PAGE_CARD_WIDTH || cover <= 0)
				continue;
			level = (int)lround((cover > 1 ? 1 : cover) * (CARD_LEVELS - 1));
			row[x / 2] |= (unsigned char)(x % 2 == 0 ? level << 4 : level);
		}
	}
}

/* PNG bytes collected in memory. */
struct card_sink {
	buf png;
	unsigned char row[PAGE_CARD_WIDTH / 2];
};

static void card_write(png_structp png, png_bytep bytes, png_size_t n)
{
	struct card_sink *s = png_get_io_ptr(png);

	if (buf_append(&s->png, bytes, n) != 0)
		png_error(png, "out of memory");
}

static void card_flush(png_structp png)
{
	(void)png;
}

static void card_error(png_structp png, png_const_charp msg)
{
	log_error("page: libpng: %s", msg);
	png_longjmp(png, 1);
}

static void card_warning(png_structp png, png_const_charp msg)
{
	(void)png;
	log_warn("page: libpng: %s", msg);
}

int page_card_png(const void *waveform_json, size_t waveform_len, unsigned char **out,
                  size_t *out_len)
{
	double amp[CARD_BARS] = { 0 };
	png_color palette[CARD_LEVELS];
	struct card_sink *sink;
	png_structp png;
	png_infop info;

	if (waveform_json != NULL && card_amplitudes(waveform_json, waveform_len, amp) != 0)
		return SAYIN_ECORRUPT;
	for (int i = 0; i < CARD_LEVELS; i++) {
		palette[i].red = (png_byte)(card_bg[0] + (card_fg[0] - card_bg[0]) * i / (CARD_LEVELS - 1));
		palette[i].green = (png_byte)(card_bg[1] + (card_fg[1] - card_bg[1]) * i / (CARD_LEVELS - 1));
		palette[i].blue = (png_byte)(card_bg[2] + (card_fg[2] - card_bg[2]) * i / (CARD_LEVELS - 1));
	}
	/* On the heap: libpng longjmps back here, and nothing the error path
	 * reads may live in a local the jump leaves indeterminate. */
	sink = calloc(1, sizeof(*sink));
	if (sink == NULL)
		return -ENOMEM;
	png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, card_error, card_warning);
	info = png != NULL ? png_create_info_struct(png) : NULL;
	if (png == NULL || info == NULL) {
		png_destroy_write_struct(&png, &info);
		free(sink);
		return -ENOMEM;
	}
	if (setjmp(png_jmpbuf(png))) {
		png_destroy_write_struct(&png, &info);
		buf_free(&sink->png);
		free(sink);
		return -ENOMEM;
	}
	png_set_write_fn(png, sink, card_write, card_flush);
	png_set_IHDR(png, info, PAGE_CARD_WIDTH, PAGE_CARD_HEIGHT, 4, PNG_COLOR_TYPE_PALETTE,
	             PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	png_set_PLTE(png, info, palette, CARD_LEVELS);
	/* Palette images compress best unfiltered; no tIME or text chunk is
	 * written, so the bytes depend on the waveform alone. */
	png_set_filter(png, 0, PNG_FILTER_NONE);
	png_set_compression_level(png, 9);
	png_write_info(png, info);
	for (int y = 0; y < PAGE_CARD_HEIGHT; y++) {
		card_row(y, amp, sink->row);
		png_write_row(png, sink->row);
	}
	png_write_end(png, NULL);
	png_destroy_write_struct(&png, &info);
	*out = (unsigned char *)buf_take(&sink->png, out_len);
	free(sink);
	return 0;
}

const char *card_library_versions(char *out, size_t size)
{
	snprintf(out, size, "libpng %s\n", png_get_libpng_ver(NULL));
	return out;
}

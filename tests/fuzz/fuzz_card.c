/* fuzz_card: the share card (publisher/render/card.c): page_card_png reads
 * the stored waveform (audiowaveform JSON, version 1 or 2, 8- or 16-bit
 * pairs) and draws a PNG.
 *
 * Checks page.h's promises: a success is a PNG (its signature and an IHDR
 * of PAGE_CARD_WIDTH x PAGE_CARD_HEIGHT), and the same input gives the same
 * bytes. */
#include "render/page.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned char sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
	unsigned char *png = NULL, *again = NULL;
	size_t len = 0, len2 = 0;

	if (page_card_png(data, size, &png, &len) != 0)
		return 0;
	if (len < 24 || memcmp(png, sig, 8) != 0 || memcmp(png + 12, "IHDR", 4) != 0 ||
	    be32(png + 16) != PAGE_CARD_WIDTH || be32(png + 20) != PAGE_CARD_HEIGHT)
		abort();
	if (page_card_png(data, size, &again, &len2) != 0 || len2 != len ||
	    memcmp(again, png, len) != 0)
		abort();
	free(png);
	free(again);
	return 0;
}

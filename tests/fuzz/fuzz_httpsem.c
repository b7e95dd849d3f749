/* fuzz_httpsem: the origin's header parsers (origin/httpsem.c): Range,
 * If-None-Match, If-Range, HTTP-date and Accept-Encoding.
 *
 * Input: byte 0 picks the parser (and, for Range, byte 1 the
 * representation's length, for Accept-Encoding the available codings);
 * the rest is the header value, cut at its first NUL as the http core
 * hands it over. Beyond "no crash", it checks each parser's promises: a
 * Range answer lies inside the representation, a parsed date formats and
 * parses back to itself, a chosen coding is one of the available ones. */
#include "core/http.h"
#include "httpsem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* An HTTP-date's year is four digits: [1970, 9999] formats back. */
#define DATE_MAX 253402300799LL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t lengths[] = { 0, 1, 2, 10, 100, 1000, 65536, 1ULL << 40, UINT64_MAX };
	char *value;
	uint8_t pick, arg;

	if (size < 2)
		return 0;
	pick = data[0];
	arg = data[1];
	value = malloc(size - 1);
	if (value == NULL)
		return 0;
	memcpy(value, data + 2, size - 2);
	value[size - 2] = '\0';

	switch (pick % 5) {
	case 0: {
		uint64_t len = lengths[arg % (sizeof(lengths) / sizeof(lengths[0]))];
		uint64_t first = 7, last = 7;
		enum httpsem_range r = httpsem_parse_range(value, len, &first, &last);
		if (r == HTTPSEM_RANGE_SINGLE && (first > last || last >= len))
			abort();
		if (r != HTTPSEM_RANGE_SINGLE && (first != 7 || last != 7))
			abort(); /* "otherwise they are left alone" */
		break;
	}
	case 1: {
		/* The tag is the value's last bytes, up to arg % 16 of them. */
		size_t n = strlen(value), tag_len = arg % 16 < n ? arg % 16 : n;
		int m = httpsem_etag_list_matches(value, value + n - tag_len, tag_len);
		if (m != 0 && m != 1)
			abort();
		break;
	}
	case 2: {
		size_t n = strlen(value), tag_len = arg % 16 < n ? arg % 16 : n;
		int64_t modified = 0;
		int m;
		httpsem_parse_date(value, &modified);
		m = httpsem_if_range_matches(value, value + n - tag_len, tag_len, modified, arg & 1);
		if (m != 0 && m != 1)
			abort();
		break;
	}
	case 3: {
		int64_t t = INT64_MIN, again = INT64_MIN;
		char text[64];
		if (httpsem_parse_date(value, &t) == 0 && t >= 0 && t <= DATE_MAX) {
			http_format_date(t, text);
			if (httpsem_parse_date(text, &again) != 0 || again != t)
				abort();
		}
		break;
	}
	default: {
		unsigned available = (arg & 7u) | 1u; /* identity is always there */
		int c = httpsem_choose_encoding(value, available);
		if (c != -1 && (c < 0 || c >= HTTPSEM_CODING_COUNT || !(available & (1u << c))))
			abort();
		break;
	}
	}
	free(value);
	return 0;
}

/* test_compress: gzip and brotli variants round-trip and are deterministic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "render/compress.h"

#include <brotli/decode.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static const char doc[] =
	"{\"version\":\"https://jsonfeed.org/version/1.1\",\"title\":\"ann on sayin\","
	"\"items\":[{\"id\":\"01\",\"content_text\":\"hello hello hello hello hello\"},"
	"{\"id\":\"02\",\"content_text\":\"hello hello hello hello hello\"}]}";

static void test_gzip_round_trip_and_determinism(void **state)
{
	(void)state;
	unsigned char *a, *b, plain[1024];
	size_t alen, blen;
	uLongf plain_len = sizeof(plain);
	z_stream zs = { 0 };

	assert_int_equal(compress_gzip(doc, strlen(doc), &a, &alen), 0);
	assert_int_equal(compress_gzip(doc, strlen(doc), &b, &blen), 0);
	assert_int_equal(alen, blen);
	assert_memory_equal(a, b, alen);
	assert_true(alen < strlen(doc));
	/* A gzip member: magic, deflate, mtime 0. */
	assert_int_equal(a[0], 0x1f);
	assert_int_equal(a[1], 0x8b);
	assert_int_equal(a[2], 8);
	assert_int_equal(a[4] | a[5] | a[6] | a[7], 0);
	assert_int_equal(inflateInit2(&zs, 15 + 16), Z_OK);
	zs.next_in = a;
	zs.avail_in = (uInt)alen;
	zs.next_out = plain;
	zs.avail_out = (uInt)plain_len;
	assert_int_equal(inflate(&zs, Z_FINISH), Z_STREAM_END);
	assert_int_equal(zs.total_out, strlen(doc));
	assert_memory_equal(plain, doc, strlen(doc));
	inflateEnd(&zs);
	free(a);
	free(b);
}

static void test_brotli_round_trip(void **state)
{
	(void)state;
	unsigned char *a, plain[1024];
	size_t alen, plain_len = sizeof(plain);

	assert_int_equal(compress_brotli(doc, strlen(doc), &a, &alen), 0);
	assert_true(alen < strlen(doc));
	assert_int_equal(BrotliDecoderDecompress(alen, a, &plain_len, plain),
	                 BROTLI_DECODER_RESULT_SUCCESS);
	assert_int_equal(plain_len, strlen(doc));
	assert_memory_equal(plain, doc, plain_len);
	free(a);
}

static void test_empty_input(void **state)
{
	(void)state;
	unsigned char *a;
	size_t alen;
	assert_int_equal(compress_gzip("", 0, &a, &alen), 0);
	assert_true(alen > 0);
	free(a);
	assert_int_equal(compress_brotli("", 0, &a, &alen), 0);
	assert_true(alen > 0);
	free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gzip_round_trip_and_determinism),
		cmocka_unit_test(test_brotli_round_trip),
		cmocka_unit_test(test_empty_input),
	};
	return cmocka_run_group_tests_name("compress", tests, NULL, NULL);
}

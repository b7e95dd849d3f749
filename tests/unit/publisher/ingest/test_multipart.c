/* test_multipart: multipart/form-data parsed from pieces of every size,
 * boundaries inside data, malformed and truncated bodies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "ingest/multipart.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct seen {
	char log[4096];
	size_t len;
	int stop_at_part; /* return 7 from on_part number N (1-based), 0: never */
	int parts;
};

/* Appends pre, a[0..alen) and post to the log. */
static void log_bytes(struct seen *s, const char *pre, const char *a, size_t alen, const char *post)
{
	size_t n = strlen(pre) + alen + strlen(post);
	assert_true(s->len + n < sizeof(s->log));
	memcpy(s->log + s->len, pre, strlen(pre));
	memcpy(s->log + s->len + strlen(pre), a, alen);
	memcpy(s->log + s->len + strlen(pre) + alen, post, strlen(post));
	s->len += n;
	s->log[s->len] = '\0';
}

static int on_part(void *arg, const char *name, const char *filename, const char *ctype)
{
	struct seen *s = arg;
	char desc[512];
	snprintf(desc, sizeof(desc), "%s|%s|%s", name, filename ? filename : "-", ctype ? ctype : "-");
	log_bytes(s, "[", desc, strlen(desc), "]");
	s->parts++;
	return s->stop_at_part == s->parts ? 7 : 0;
}

static int on_data(void *arg, const char *data, size_t len)
{
	struct seen *s = arg;
	assert_true(len > 0);
	log_bytes(s, "", data, len, "");
	return 0;
}

static int on_part_end(void *arg)
{
	log_bytes(arg, "", "<end>", 5, "");
	return 0;
}

static const multipart_callbacks cbs = { on_part, on_data, on_part_end };

static const char body[] =
	"preamble to ignore\r\n"
	"--XyZ\r\n"
	"Content-Disposition: form-data; name=\"text\"\r\n"
	"\r\n"
	"hello\r\n--Xy is only a prefix \r\n-- nor this\r\n"
	"--XyZ  \r\n"
	"Content-Disposition: form-data; name=\"audio\"; filename=\"a \\\"b\\\".m4a\"\r\n"
	"Content-Type: audio/mp4\r\n"
	"\r\n"
	"\x00\x01\r\n--XyX\r\n\xff"
	"\r\n--XyZ--\r\n"
	"epilogue";

static const char expected[] =
	"[text|-|-]hello\r\n--Xy is only a prefix \r\n-- nor this<end>"
	"[audio|a \"b\".m4a|audio/mp4]\x00\x01\r\n--XyX\r\n\xff<end>";

/* Concatenated data pieces and markers are the same however the body is cut. */
static void test_every_split(void **state)
{
	(void)state;
	size_t blen = sizeof(body) - 1;
	for (size_t piece = 1; piece <= blen; piece++) {
		struct seen s = { 0 };
		multipart *m = multipart_new("XyZ", &cbs, &s);
		assert_non_null(m);
		for (size_t off = 0; off < blen; off += piece) {
			size_t n = blen - off < piece ? blen - off : piece;
			assert_int_equal(multipart_feed(m, body + off, n), 0);
		}
		assert_int_equal(multipart_finish(m), 0);
		assert_int_equal(s.len, sizeof(expected) - 1);
		assert_memory_equal(s.log, expected, s.len);
		multipart_free(m);
	}
}

static int feed_all(const char *b, const char *boundary, struct seen *s)
{
	multipart *m = multipart_new(boundary, &cbs, s);
	int rc = multipart_feed(m, b, strlen(b));
	if (rc == 0)
		rc = multipart_finish(m);
	multipart_free(m);
	return rc;
}

static void test_malformed_and_truncated(void **state)
{
	(void)state;
	struct seen s = { 0 };
	char big[MULTIPART_HEADERS_MAX + 200];

	/* No closing boundary. */
	assert_int_equal(feed_all("--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nxx", "b",
	                          &s), SAYIN_ETRUNCATED);
	/* Never a boundary at all. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(feed_all("just bytes", "b", &s), SAYIN_ETRUNCATED);
	/* A part without a name, or not form-data. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(feed_all("--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--", "b", &s),
	                 SAYIN_EFORMAT);
	memset(&s, 0, sizeof(s));
	assert_int_equal(feed_all("--b\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--b--",
	                          "b", &s), SAYIN_EFORMAT);
	/* Garbage after a boundary. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(feed_all("--bx\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--b--",
	                          "b", &s), SAYIN_EFORMAT);
	/* Headers over the limit. */
	memset(&s, 0, sizeof(s));
	memset(big, 'h', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memcpy(big, "--b\r\nX: ", 8);
	assert_int_equal(feed_all(big, "b", &s), SAYIN_EFORMAT);
	/* A callback's refusal stops the parser and comes back. */
	memset(&s, 0, sizeof(s));
	s.stop_at_part = 1;
	assert_int_equal(feed_all(body, "XyZ", &s), 7);
}

static void test_boundary_parameter(void **state)
{
	(void)state;
	char b[MULTIPART_BOUNDARY_MAX + 1];
	assert_int_equal(multipart_boundary("multipart/form-data; boundary=abc123", b), 0);
	assert_string_equal(b, "abc123");
	assert_int_equal(multipart_boundary("Multipart/Form-Data;charset=utf-8; BOUNDARY=\"a b:c\"", b), 0);
	assert_string_equal(b, "a b:c");
	assert_int_equal(multipart_boundary("multipart/form-data; boundary=------------------------"
	                                    "d74496d66958873e", b), 0);
	assert_int_equal(multipart_boundary("multipart/form-data", b), SAYIN_EFORMAT);
	assert_int_equal(multipart_boundary("multipart/form-data; boundary=", b), SAYIN_EFORMAT);
	assert_int_equal(multipart_boundary("multipart/mixed; boundary=abc", b), SAYIN_EFORMAT);
	assert_int_equal(multipart_boundary("multipart/form-data; boundary=a{b", b), SAYIN_EFORMAT);
	assert_int_equal(multipart_boundary("multipart/form-data; boundary=\"unterminated", b),
	                 SAYIN_EFORMAT);
	/* 71 characters: over RFC 2046's 70. */
	assert_int_equal(multipart_boundary("multipart/form-data; boundary=aaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	                                    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", b),
	                 SAYIN_EFORMAT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_split),
		cmocka_unit_test(test_malformed_and_truncated),
		cmocka_unit_test(test_boundary_parameter),
	};
	return cmocka_run_group_tests_name("multipart", tests, NULL, NULL);
}

/* test_buf: the growable buffer's appends and its one out-of-memory rule;
 * fileio_read's short reads and end of file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/fileio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The huge request below must fail with NULL under ASan too. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allocator_may_return_null=1";
}

static void test_appends_keep_a_c_string(void **state)
{
	buf b = BUF_INIT;
	(void)state;

	assert_null(b.data);
	assert_int_equal(buf_puts(&b, "abc"), 0);
	assert_int_equal(buf_putc(&b, '-'), 0);
	assert_int_equal(buf_printf(&b, "%d/%s", 42, "x"), 0);
	assert_int_equal(buf_append(&b, "\0z", 2), 0);
	assert_int_equal(b.len, 10);
	assert_memory_equal(b.data, "abc-42/x\0z", 10);
	assert_int_equal(b.data[b.len], '\0');
	assert_int_equal(buf_zeros(&b, 3), 0);
	assert_int_equal(b.len, 13);
	assert_int_equal(b.data[12], 0);
	buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
}

static void test_printf_grows_past_the_first_block(void **state)
{
	buf b = BUF_INIT;
	char big[5000];
	(void)state;

	memset(big, 'q', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(buf_puts(&b, "<"), 0);
	assert_int_equal(buf_printf(&b, "%s>%d", big, 7), 0);
	assert_int_equal(b.len, 1 + 4999 + 2);
	assert_int_equal(b.data[0], '<');
	assert_int_equal(b.data[5000], '>');
	assert_string_equal(b.data + 5001, "7");
	buf_free(&b);
}

/* One rule: a failed append leaves the contents, and every later append
 * fails until reset, so a writer checks once at the end. */
static void test_out_of_memory_is_sticky_and_harmless(void **state)
{
	buf b = BUF_INIT;
	(void)state;

	assert_int_equal(buf_puts(&b, "kept"), 0);
	assert_int_equal(buf_reserve(&b, SIZE_MAX), -ENOMEM);       /* overflow */
	assert_true(buf_failed(&b));
	assert_int_equal(b.len, 4);
	assert_string_equal(b.data, "kept");
	assert_int_equal(buf_puts(&b, "more"), -ENOMEM);
	assert_int_equal(buf_printf(&b, "%d", 1), -ENOMEM);
	assert_string_equal(b.data, "kept");
	buf_reset(&b);
	assert_false(buf_failed(&b));
	assert_int_equal(buf_reserve(&b, SIZE_MAX / 4), -ENOMEM);   /* realloc fails */
	assert_true(buf_failed(&b));
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	buf_free(&b);
}

static void test_consume_drops_the_front(void **state)
{
	buf b = BUF_INIT;
	(void)state;

	buf_consume(&b, 3); /* nothing yet: nothing to do */
	assert_null(b.data);
	assert_int_equal(buf_puts(&b, "abcdef"), 0);
	buf_consume(&b, 2);
	assert_int_equal(b.len, 4);
	assert_string_equal(b.data, "cdef");
	buf_consume(&b, 10);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	buf_free(&b);
}

/* A failed buffer's partial contents are never handed on. */
static void test_take_of_a_failed_buffer_is_null(void **state)
{
	buf b = BUF_INIT;
	size_t len = 99;
	(void)state;

	assert_int_equal(buf_puts(&b, "partial"), 0);
	assert_int_equal(buf_reserve(&b, SIZE_MAX), -ENOMEM);
	assert_null(buf_take(&b, &len));
	assert_int_equal(len, 0);
	assert_null(b.data);
	assert_false(buf_failed(&b));
}

static void test_take_hands_over(void **state)
{
	buf b = BUF_INIT;
	size_t len;
	char *p;
	(void)state;

	assert_int_equal(buf_puts(&b, "mine"), 0);
	p = buf_take(&b, &len);
	assert_int_equal(len, 4);
	assert_string_equal(p, "mine");
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	free(p);
	assert_null(buf_take(&b, &len));
	assert_int_equal(len, 0);
}

/* A socket hands data over in pieces: fileio_read collects them until len
 * or the end of the stream. */
static void test_fileio_read_collects_short_reads(void **state)
{
	int sv[2];
	char got[16];
	size_t n = 99;
	(void)state;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(write(sv[1], "abc", 3), 3);
	assert_int_equal(write(sv[1], "defg", 4), 4);
	close(sv[1]);
	assert_int_equal(fileio_read(sv[0], got, 5, -1, &n), 0);
	assert_int_equal(n, 5);
	assert_memory_equal(got, "abcde", 5);
	assert_int_equal(fileio_read(sv[0], got, sizeof(got), -1, &n), 0);
	assert_int_equal(n, 2);                                /* end of stream */
	assert_memory_equal(got, "fg", 2);
	assert_int_equal(fileio_read(-1, got, 1, 0, &n), -EBADF);
	close(sv[0]);
}

static void test_fileio_read_at_offset(void **state)
{
	FILE *f = tmpfile();
	char got[8];
	size_t n;
	(void)state;

	assert_non_null(f);
	assert_int_equal(fileio_write(fileno(f), "0123456789", 10, 0), 0);
	assert_int_equal(fileio_read(fileno(f), got, 4, 3, &n), 0);
	assert_int_equal(n, 4);
	assert_memory_equal(got, "3456", 4);
	assert_int_equal(fileio_read(fileno(f), got, 8, 8, &n), 0);
	assert_int_equal(n, 2);
	fclose(f);
}

static void test_clocks_move_forward(void **state)
{
	int64_t wall = clock_now_ms(), mono = clock_mono_ms();
	double monof = clock_mono_ms_f();
	(void)state;

	assert_true(wall > 1700000000000LL);        /* after 2023 */
	usleep(20000);
	assert_true(clock_mono_ms() >= mono + 19);
	assert_true(clock_mono_ms_f() >= monof + 19.0);
	assert_true(clock_now_ms() >= wall);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_appends_keep_a_c_string),
		cmocka_unit_test(test_printf_grows_past_the_first_block),
		cmocka_unit_test(test_out_of_memory_is_sticky_and_harmless),
		cmocka_unit_test(test_take_hands_over),
		cmocka_unit_test(test_consume_drops_the_front),
		cmocka_unit_test(test_take_of_a_failed_buffer_is_null),
		cmocka_unit_test(test_fileio_read_collects_short_reads),
		cmocka_unit_test(test_fileio_read_at_offset),
		cmocka_unit_test(test_clocks_move_forward),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

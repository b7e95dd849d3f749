/* buf: the one growable byte buffer, for every text or binary document the
 * programs build in memory (metrics pages, HTML, JSON bodies, MP4 boxes).
 *
 * Out of memory, one rule: an append that cannot grow the buffer (no memory,
 * or a size that would overflow size_t) returns -ENOMEM, leaves the contents
 * as they were and marks the buffer failed; every later append then fails at
 * once. A writer may therefore append freely and check once, at the end,
 * with buf_failed (or the last return value).
 *
 * data is NUL-terminated after every successful append (not counted in len),
 * so a text buffer is a C string; it is NULL until the first append.
 * Threading: a buf belongs to one thread at a time; no global state. */
#ifndef SAYIN_CORE_BUF_H
#define SAYIN_CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct buf {
	char *data;
	size_t len;
	size_t cap;
	int failed;
} buf;

#define BUF_INIT { NULL, 0, 0, 0 }

/* Makes room for more bytes (and the NUL) beyond len. 0 or -ENOMEM. */
int buf_reserve(buf *b, size_t more);
/* Appends n bytes of p. 0 or -ENOMEM. */
int buf_append(buf *b, const void *p, size_t n);
/* Appends the string s (without its NUL). 0 or -ENOMEM. */
int buf_puts(buf *b, const char *s);
/* Appends one byte. 0 or -ENOMEM. */
int buf_putc(buf *b, char c);
/* Appends printf-formatted text. 0, -ENOMEM, or -EINVAL for a format error
 * (which, like running out of memory, marks the buffer failed). */
int buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Appends n zero bytes. 0 or -ENOMEM. */
int buf_zeros(buf *b, size_t n);
/* Drops the first n bytes (n at most len); the rest moves to the front.
 * O(len - n). */
void buf_consume(buf *b, size_t n);
/* 1 if an append has failed since init or the last reset. */
int buf_failed(const buf *b);
/* Empties the buffer and clears failed; keeps the memory for reuse. */
void buf_reset(buf *b);
/* Hands the contents to the caller (free() them) and leaves b as BUF_INIT.
 * *len (if not NULL) gets the length. Returns NULL when nothing was ever
 * appended, and for a failed buffer (whose contents it frees: partial
 * output is never handed on); an emptied buffer gives "". */
char *buf_take(buf *b, size_t *len);
/* Frees the memory; b is then as BUF_INIT. */
void buf_free(buf *b);

#endif

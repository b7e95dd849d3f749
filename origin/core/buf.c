/* buf: see buf.h. */
#include "core/buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_MIN_CAP 256

int buf_reserve(buf *b, size_t more)
{
	size_t need, cap;
	char *p;

	if (b->failed)
		return -ENOMEM;
	if (more > SIZE_MAX - 1 - b->len)
		goto fail;
	need = b->len + more + 1;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : BUF_MIN_CAP;
	while (cap < need) {
		if (cap > SIZE_MAX / 2) {
			cap = need;
			break;
		}
		cap *= 2;
	}
	p = realloc(b->data, cap);
	if (p == NULL)
		goto fail;
	b->data = p;
	b->cap = cap;
	return 0;
fail:
	b->failed = 1;
	return -ENOMEM;
}

int buf_append(buf *b, const void *p, size_t n)
{
	int rc = buf_reserve(b, n);
	if (rc != 0)
		return rc;
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int buf_puts(buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

int buf_putc(buf *b, char c)
{
	return buf_append(b, &c, 1);
}

int buf_zeros(buf *b, size_t n)
{
	int rc = buf_reserve(b, n);
	if (rc != 0)
		return rc;
	memset(b->data + b->len, 0, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int buf_vprintf(buf *b, const char *fmt, va_list ap)
{
	va_list again;
	int n, rc;

	if (b->failed)
		return -ENOMEM;
	va_copy(again, ap);
	n = vsnprintf(b->len < b->cap ? b->data + b->len : NULL,
	              b->len < b->cap ? b->cap - b->len : 0, fmt, ap);
	if (n < 0) {
		/* A format error fails the buffer too: one rule for the writer. */
		if (b->data != NULL)
			b->data[b->len] = '\0';
		b->failed = 1;
		va_end(again);
		return -EINVAL;
	}
	if (b->len + (size_t)n < b->cap) {
		b->len += (size_t)n;
		va_end(again);
		return 0;
	}
	rc = buf_reserve(b, (size_t)n);
	if (rc == 0) {
		vsnprintf(b->data + b->len, b->cap - b->len, fmt, again);
		b->len += (size_t)n;
	} else if (b->data != NULL) {
		b->data[b->len] = '\0'; /* the contents stay as they were */
	}
	va_end(again);
	return rc;
}

int buf_printf(buf *b, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = buf_vprintf(b, fmt, ap);
	va_end(ap);
	return rc;
}

void buf_consume(buf *b, size_t n)
{
	if (n > b->len)
		n = b->len;
	if (n == 0)
		return;
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
	b->data[b->len] = '\0';
}

int buf_failed(const buf *b)
{
	return b->failed;
}

void buf_reset(buf *b)
{
	b->len = 0;
	b->failed = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}

char *buf_take(buf *b, size_t *len)
{
	char *p = b->data;

	if (b->failed) {
		free(p);
		p = NULL;
		b->len = 0;
	}
	if (len != NULL)
		*len = b->len;
	b->data = NULL;
	b->len = b->cap = 0;
	b->failed = 0;
	return p;
}

void buf_free(buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
	b->failed = 0;
}

/* split: cuts a fuzz input into NUL-terminated fields at its NUL bytes, for
 * targets that take several strings. */
#ifndef SAYIN_FUZZ_SPLIT_H
#define SAYIN_FUZZ_SPLIT_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Copies data into a malloc'd block (*block, to free) and points field[0..n)
 * at its NUL-separated pieces; the missing ones point at "". Returns the
 * number of pieces present (at most n), or -1 when out of memory. */
static inline int fuzz_split(const uint8_t *data, size_t size, char **block, const char **field,
                             int n)
{
	char *b = malloc(size + 1);
	int found = 0;

	*block = b;
	if (b == NULL)
		return -1;
	memcpy(b, data, size);
	b[size] = '\0';
	for (int i = 0; i < n; i++)
		field[i] = "";
	for (char *p = b; found < n && p <= b + size; p += strlen(p) + 1)
		field[found++] = p;
	return found;
}

#endif

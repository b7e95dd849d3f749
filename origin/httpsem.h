/* httpsem: the origin's pure HTTP parsers: HTTP-date, entity-tag lists
 * (If-None-Match, If-Range), Range and Accept-Encoding with q-values
 * (RFC 9110). Bytes in, answers out: no I/O, no store, no allocation, so
 * each parser can be a fuzz target on its own.
 *
 * Every input is a NUL-terminated header value as the http core hands it
 * over. A malformed value never fails the request: each function documents
 * what it answers for one (usually "as if the header were absent").
 * Threading: any thread; no state. */
#ifndef SAYIN_HTTPSEM_H
#define SAYIN_HTTPSEM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Content codings, numbered as enum store_encoding (serve.c checks that at
 * compile time), so a set of them is a bit mask of 1u << coding. */
enum httpsem_coding { HTTPSEM_IDENTITY, HTTPSEM_GZIP, HTTPSEM_BR, HTTPSEM_CODING_COUNT };

/* ---- formatting helpers: inline, as the header writers sit on the hot path
 * (no printf there) ---- */

/* Copies s (without its NUL) to p; returns the end. */
static inline char *httpsem_put_str(char *p, const char *s)
{
	size_t n = strlen(s);
	memcpy(p, s, n);
	return p + n;
}

/* Writes v in decimal (at most 20 bytes, no NUL); returns the end. */
static inline char *httpsem_put_u64(char *p, uint64_t v)
{
	char tmp[20];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	while (n > 0)
		*p++ = tmp[--n];
	return p;
}

/* ---- HTTP-date (RFC 9110 5.6.7) ---- */

/* (The IMF-fixdate writer is core/http.h's http_format_date: the core's
 * Date header and serve's Last-Modified share it.) */

/* Parses an HTTP-date in any of its three forms (IMF-fixdate, the obsolete
 * RFC 850 and asctime forms); trailing spaces and tabs are ignored. Returns
 * 0 and unix seconds in *out, or -1 (nothing written) when s is none of
 * them. An RFC 850 two-digit year more than 50 years ahead of the current
 * year is read as the past century: that form alone reads the clock. */
int httpsem_parse_date(const char *s, int64_t *out);

/* ---- entity tags (RFC 9110 8.8.3, 13.1) ---- */

/* If-None-Match: 1 when list is "*" or names the opaque tag (tag_len bytes,
 * without quotes) by weak comparison (W/"x" matches "x"), else 0. A
 * malformed list matches nothing from the malformed element on, so the full
 * response is sent. */
int httpsem_etag_list_matches(const char *list, const char *tag, size_t tag_len);

/* If-Range (RFC 9110 13.1.5): 1 when value is the strong entity tag "tag",
 * or, when date_is_strong, an HTTP-date equal to modified; else 0 (weak
 * tags and malformed values never validate a range). */
int httpsem_if_range_matches(const char *value, const char *tag, size_t tag_len,
                             int64_t modified, int date_is_strong);

/* ---- Range (RFC 9110 14.1.2, 14.2) ---- */

enum httpsem_range {
	HTTPSEM_RANGE_IGNORE,        /* absent, invalid or several ranges: send everything (200) */
	HTTPSEM_RANGE_SINGLE,        /* one satisfiable range: 206 */
	HTTPSEM_RANGE_UNSATISFIABLE, /* 416 */
};

/* Parses a Range value ("bytes=..."; unit case-insensitive) against a
 * representation of len bytes. On HTTPSEM_RANGE_SINGLE, *first and *last are
 * the inclusive byte positions, clamped to len; otherwise they are left
 * alone. An empty representation, another unit or a malformed set gives
 * HTTPSEM_RANGE_IGNORE. */
enum httpsem_range httpsem_parse_range(const char *value, uint64_t len, uint64_t *first,
                                       uint64_t *last);

/* ---- Accept-Encoding (RFC 9110 12.5.3) ---- */

/* Picks the coding to send for an Accept-Encoding value (NULL: the header
 * is absent): the highest q-value among the codings in available (bit
 * 1u << coding), br before gzip before identity at equal q. Identity the
 * header does not mention (and no "*" covers) is acceptable but least
 * preferred. Without the header, identity: old clients that send none may
 * not decode a coding. Malformed elements are skipped. Returns an enum
 * httpsem_coding, or -1 when nothing available is acceptable (identity
 * refused by "identity;q=0" or "*;q=0"). */
int httpsem_choose_encoding(const char *accept, unsigned available);

#endif

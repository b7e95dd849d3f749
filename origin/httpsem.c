/* httpsem: the origin's pure HTTP parsers: HTTP-date, entity-tag lists,
 * Range and Accept-Encoding (RFC 9110). No I/O, no store: see httpsem.h. */
#include "httpsem.h"

#include <string.h>
#include <strings.h>
#include <time.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static const char *skip_ows(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* ---- HTTP dates (RFC 9110 5.6.7) ---- */

static const char day_names[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
static const char *const day_names_long[7] = { "Sunday",   "Monday", "Tuesday", "Wednesday",
	                                       "Thursday", "Friday", "Saturday" };
static const char month_names[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static int parse_digits(const char *p, size_t n, unsigned *out)
{
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(p[i] - '0');
	}
	*out = v;
	return 0;
}

static int parse_month(const char *p, unsigned *m)
{
	for (unsigned i = 0; i < 12; i++) {
		if (memcmp(p, month_names[i], 3) == 0) {
			*m = i + 1;
			return 0;
		}
	}
	return -1;
}

static int parse_day_name(const char *p)
{
	for (unsigned i = 0; i < 7; i++) {
		if (memcmp(p, day_names[i], 3) == 0)
			return 0;
	}
	return -1;
}

/* "HH:MM:SS" -> seconds of the day. */
static int parse_clock(const char *p, int64_t *secs)
{
	unsigned h, m, s;
	if (parse_digits(p, 2, &h) != 0 || p[2] != ':' || parse_digits(p + 3, 2, &m) != 0 ||
	    p[5] != ':' || parse_digits(p + 6, 2, &s) != 0 || h > 23 || m > 59 || s > 60)
		return -1;
	*secs = (int64_t)h * 3600 + m * 60 + s;
	return 0;
}

/* Parses an HTTP-date in any of its three formats (IMF-fixdate, the obsolete
 * RFC 850 and asctime forms). Returns 0 and unix seconds, or -1. */
int httpsem_parse_date(const char *s, int64_t *out)
{
	size_t len = strlen(s);
	unsigned day, month, year;
	int64_t clock;

	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (len == 29 && s[3] == ',') {
		/* Sun, 06 Nov 1994 08:49:37 GMT */
		if (parse_day_name(s) != 0 || s[4] != ' ' || parse_digits(s + 5, 2, &day) != 0 ||
		    s[7] != ' ' || parse_month(s + 8, &month) != 0 || s[11] != ' ' ||
		    parse_digits(s + 12, 4, &year) != 0 || s[16] != ' ' ||
		    parse_clock(s + 17, &clock) != 0 || memcmp(s + 25, " GMT", 4) != 0)
			return -1;
	} else if (len == 24 && s[3] == ' ') {
		/* Sun Nov  6 08:49:37 1994 */
		if (parse_day_name(s) != 0 || parse_month(s + 4, &month) != 0 || s[7] != ' ' ||
		    s[10] != ' ' || parse_clock(s + 11, &clock) != 0 || s[19] != ' ' ||
		    parse_digits(s + 20, 4, &year) != 0)
			return -1;
		if (s[8] == ' ' ? parse_digits(s + 9, 1, &day) : parse_digits(s + 8, 2, &day))
			return -1;
	} else {
		/* Sunday, 06-Nov-94 08:49:37 GMT */
		const char *p = NULL;
		unsigned yy;
		for (unsigned i = 0; i < 7 && p == NULL; i++) {
			size_t n = strlen(day_names_long[i]);
			if (len == n + 24 && memcmp(s, day_names_long[i], n) == 0)
				p = s + n;
		}
		if (p == NULL || p[0] != ',' || p[1] != ' ' || parse_digits(p + 2, 2, &day) != 0 ||
		    p[4] != '-' || parse_month(p + 5, &month) != 0 || p[8] != '-' ||
		    parse_digits(p + 9, 2, &yy) != 0 || p[11] != ' ' ||
		    parse_clock(p + 12, &clock) != 0 || memcmp(p + 20, " GMT", 4) != 0)
			return -1;
		/* RFC 9110: a two-digit year more than 50 years ahead is in the
		 * past century. */
		time_t now = time(NULL);
		struct tm tm;
		int this_year = gmtime_r(&now, &tm) != NULL ? tm.tm_year + 1900 : 2000;
		year = (unsigned)(this_year / 100 * 100) + yy;
		if ((int)year > this_year + 50)
			year -= 100;
	}
	if (day < 1 || day > 31)
		return -1;
	*out = days_from_civil(year, month, day) * 86400 + clock;
	return 0;
}

/* ---- entity tags (RFC 9110 8.8.3, 13.1) ---- */

/* If-None-Match: "*" or a list of entity tags, weak comparison (W/"x"
 * matches "x"). A malformed list matches nothing, so the full response is
 * sent. */
int httpsem_etag_list_matches(const char *list, const char *tag, size_t tag_len)
{
	const char *p = list;

	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			return 0;
		if (*p == '*')
			return 1;
		if (p[0] == 'W' && p[1] == '/')
			p += 2;
		if (*p != '"')
			return 0;
		const char *end = strchr(p + 1, '"');
		if (end == NULL)
			return 0;
		if ((size_t)(end - p - 1) == tag_len && memcmp(p + 1, tag, tag_len) == 0)
			return 1;
		p = end + 1;
	}
}

/* If-Range (RFC 9110 13.1.5): a strong entity tag equal to ours, or a date
 * equal to Last-Modified when that date is a strong validator. */
int httpsem_if_range_matches(const char *value, const char *tag, size_t tag_len,
                             int64_t modified, int date_is_strong)
{
	const char *p = skip_ows(value);
	int64_t when;

	if (p[0] == 'W' && p[1] == '/')
		return 0; /* weak tags never validate a range */
	if (*p == '"') {
		size_t len = strlen(p);
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		return len == tag_len + 2 && p[len - 1] == '"' && memcmp(p + 1, tag, tag_len) == 0;
	}
	return date_is_strong && httpsem_parse_date(p, &when) == 0 && when == modified;
}

/* ---- Range (RFC 9110 14.1.2, 14.2) ---- */

/* Reads decimal digits, saturating at UINT64_MAX. Returns the end, or NULL
 * when there is no digit. */
static const char *parse_u64(const char *p, uint64_t *out)
{
	uint64_t v = 0;
	const char *start = p;

	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');
		v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
	}
	*out = v;
	return p == start ? NULL : p;
}

/* Parses a Range value against a representation of len bytes. On
 * HTTPSEM_RANGE_SINGLE, *first and *last are the inclusive byte positions. */
enum httpsem_range httpsem_parse_range(const char *value, uint64_t len, uint64_t *first,
                                       uint64_t *last)
{
	const char *p = value;
	int specs = 0, satisfiable = 0;
	uint64_t a = 0, b = 0;

	if (strncasecmp(p, "bytes=", 6) != 0 || len == 0)
		return HTTPSEM_RANGE_IGNORE;
	p += 6;
	for (;;) {
		uint64_t x, y;
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		if (*p == '-') {
			/* suffix-range: the last y bytes */
			p = parse_u64(p + 1, &y);
			if (p == NULL)
				return HTTPSEM_RANGE_IGNORE;
			if (y > 0) {
				satisfiable = 1;
				a = y >= len ? 0 : len - y;
				b = len - 1;
			}
		} else {
			p = parse_u64(p, &x);
			if (p == NULL || *p != '-')
				return HTTPSEM_RANGE_IGNORE;
			p++;
			y = UINT64_MAX;
			if (*p >= '0' && *p <= '9') {
				p = parse_u64(p, &y);
				if (y < x)
					return HTTPSEM_RANGE_IGNORE; /* syntactically invalid */
			}
			if (x < len) {
				satisfiable = 1;
				a = x;
				b = y >= len ? len - 1 : y;
			}
		}
		specs++;
		p = skip_ows(p);
		if (*p != ',' && *p != '\0')
			return HTTPSEM_RANGE_IGNORE;
	}
	if (specs == 0)
		return HTTPSEM_RANGE_IGNORE;
	/* Several ranges get the whole representation, as nginx does: cheaper
	 * than multipart/byteranges and allowed by RFC 9110 14.2. */
	if (specs > 1)
		return HTTPSEM_RANGE_IGNORE;
	if (!satisfiable)
		return HTTPSEM_RANGE_UNSATISFIABLE;
	*first = a;
	*last = b;
	return HTTPSEM_RANGE_SINGLE;
}

/* ---- Accept-Encoding (RFC 9110 12.5.3) ---- */

static int is_tchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* qvalue = "0" [ "." 0*3DIGIT ] / "1" [ "." 0*3("0") ], in thousandths.
 * Returns the end or NULL. */
static const char *parse_qvalue(const char *p, int *q)
{
	int v, scale = 100;

	if (*p != '0' && *p != '1')
		return NULL;
	v = (*p++ - '0') * 1000;
	if (*p == '.') {
		p++;
		for (int i = 0; i < 3 && *p >= '0' && *p <= '9'; i++, p++) {
			v += (*p - '0') * scale;
			scale /= 10;
		}
	}
	if (v > 1000)
		return NULL;
	*q = v;
	return p;
}

/* Identity that the header does not mention (and no "*" covers) is
 * acceptable (RFC 9110 12.5.3) but the least preferred: any coding the
 * client lists with q > 0 wins over it. */
#define Q_IMPLICIT_IDENTITY 1

/* Picks the variant of a name for an Accept-Encoding value: the highest
 * q-value among the variants present (bit set in available), br before gzip
 * before identity at equal q. Returns an enum httpsem_coding, or -1 when
 * nothing present is acceptable (identity refused by "identity;q=0" or
 * "*;q=0"). A request without the header gets identity: RFC 9110 allows any
 * coding then, but old clients that send none may not decode one. */
int httpsem_choose_encoding(const char *accept, unsigned available)
{
	/* q in thousandths by encoding; -1 = not mentioned */
	int q[HTTPSEM_CODING_COUNT] = { -1, -1, -1 }, q_star = -1, best = -1, best_q = -1;
	const char *p = accept;

	if (accept == NULL)
		return HTTPSEM_IDENTITY;
	for (;;) {
		const char *tok;
		size_t tok_len;
		int qv = 1000, *slot = NULL;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		tok = p;
		while (is_tchar(*p))
			p++;
		tok_len = (size_t)(p - tok);
		/* parameters: only q matters; a malformed one drops the element */
		for (;;) {
			p = skip_ows(p);
			if (*p != ';')
				break;
			p = skip_ows(p + 1);
			if ((*p == 'q' || *p == 'Q') && *skip_ows(p + 1) == '=') {
				p = parse_qvalue(skip_ows(skip_ows(p + 1) + 1), &qv);
				if (p == NULL)
					break;
			} else {
				while (is_tchar(*p) || *p == '=' || *p == '"')
					p++;
			}
		}
		if (p == NULL || (*p != ',' && *p != '\0') || tok_len == 0) {
			/* skip the rest of a malformed element */
			if (p == NULL)
				p = tok;
			while (*p != ',' && *p != '\0')
				p++;
			continue;
		}
		if (tok_len == 1 && tok[0] == '*')
			slot = &q_star;
		else if ((tok_len == 4 && strncasecmp(tok, "gzip", 4) == 0) ||
		         (tok_len == 6 && strncasecmp(tok, "x-gzip", 6) == 0))
			slot = &q[HTTPSEM_GZIP];
		else if (tok_len == 2 && strncasecmp(tok, "br", 2) == 0)
			slot = &q[HTTPSEM_BR];
		else if (tok_len == 8 && strncasecmp(tok, "identity", 8) == 0)
			slot = &q[HTTPSEM_IDENTITY];
		if (slot != NULL && *slot < qv)
			*slot = qv; /* a coding listed twice counts at its best */
	}
	for (int e = 0; e < HTTPSEM_CODING_COUNT; e++) {
		if (q[e] < 0)
			q[e] = q_star >= 0 ? q_star : e == HTTPSEM_IDENTITY ? Q_IMPLICIT_IDENTITY : 0;
	}
	/* Highest q wins; on ties br, then gzip, then identity. */
	static const int order[] = { HTTPSEM_BR, HTTPSEM_GZIP, HTTPSEM_IDENTITY };
	for (size_t i = 0; i < ARRAY_LEN(order); i++) {
		int e = order[i];
		if ((available & (1u << e)) && q[e] > 0 && q[e] > best_q) {
			best = e;
			best_q = q[e];
		}
	}
	return best;
}

/* multipart: multipart/form-data, parsed as it streams. */
#include "ingest/multipart.h"

#include "core/buf.h"
#include "core/error.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum state { ST_PREAMBLE, ST_AFTER_BOUNDARY, ST_HEADERS, ST_BODY, ST_DONE, ST_FAILED };

struct multipart {
	multipart_callbacks cb;
	void *arg;
	enum state state;
	char delim[MULTIPART_BOUNDARY_MAX + 5]; /* "\r\n--" boundary */
	size_t delim_len;
	/* Bytes not yet resolved: a possible delimiter's start, or part
	 * headers. Bounded by MULTIPART_HEADERS_MAX + one feed's piece. */
	buf pending;
};

static int bchar(int c)
{
	return isalnum(c) || strchr("'()+_,-./:=? ", c) != NULL;
}

int multipart_boundary(const char *content_type, char *out)
{
	const char *p = content_type;
	size_t n = 0;

	while (*p == ' ')
		p++;
	if (strncasecmp(p, "multipart/form-data", 19) != 0)
		return SAYIN_EFORMAT;
	p += 19;
	while (*p != '\0') {
		while (*p == ';' || *p == ' ' || *p == '\t')
			p++;
		if (strncasecmp(p, "boundary=", 9) == 0) {
			int quoted;
			p += 9;
			quoted = *p == '"';
			if (quoted)
				p++;
			while (*p != '\0' && (quoted ? *p != '"' : (*p != ';' && *p != ' ')) &&
			       n < MULTIPART_BOUNDARY_MAX) {
				if (!bchar((unsigned char)*p))
					return SAYIN_EFORMAT;
				out[n++] = *p++;
			}
			if (n == 0 || (quoted ? *p != '"' : (*p != '\0' && *p != ';' && *p != ' ')))
				return SAYIN_EFORMAT;
			out[n] = '\0';
			return out[n - 1] == ' ' ? SAYIN_EFORMAT : 0;
		}
		while (*p != '\0' && *p != ';')
			p++;
	}
	return SAYIN_EFORMAT;
}

multipart *multipart_new(const char *boundary, const multipart_callbacks *cb, void *arg)
{
	size_t blen = strlen(boundary);
	multipart *m;

	if (blen == 0 || blen > MULTIPART_BOUNDARY_MAX)
		return NULL;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return NULL;
	m->cb = *cb;
	m->arg = arg;
	/* The body starts with "--boundary" (no CRLF before the first one):
	 * pretend a CRLF was there, so one delimiter fits every case. */
	memcpy(m->delim, "\r\n--", 4);
	memcpy(m->delim + 4, boundary, blen);
	m->delim_len = blen + 4;
	m->state = ST_PREAMBLE;
	if (buf_append(&m->pending, "\r\n", 2) != 0) {
		free(m);
		return NULL;
	}
	return m;
}

void multipart_free(multipart *m)
{
	if (m == NULL)
		return;
	buf_free(&m->pending);
	free(m);
}

static void consume(multipart *m, size_t n)
{
	buf_consume(&m->pending, n);
}

/* A header parameter: name="value" (quoted, with \-escapes) or name=token,
 * copied into out. Returns 1 if found. */
static int header_param(const char *value, const char *name, char *out, size_t outlen)
{
	size_t nlen = strlen(name);
	const char *p = value;

	while ((p = strchr(p, ';')) != NULL) {
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (strncasecmp(p, name, nlen) != 0 || p[nlen] != '=')
			continue;
		p += nlen + 1;
		size_t n = 0;
		if (*p == '"') {
			p++;
			while (*p != '\0' && *p != '"' && n + 1 < outlen) {
				if (*p == '\\' && p[1] != '\0')
					p++;
				out[n++] = *p++;
			}
			if (*p != '"')
				return 0;
		} else {
			while (*p != '\0' && *p != ';' && *p != ' ' && n + 1 < outlen)
				out[n++] = *p++;
		}
		out[n] = '\0';
		return 1;
	}
	return 0;
}

/* Parses one part's header block (buf[0..len), lines ending in CRLF). */
static int part_headers(multipart *m, char *block, size_t len)
{
	char name[256], filename[512], ctype[256];
	int has_name = 0, has_file = 0, has_type = 0;
	char *line = block, *end = block + len;

	while (line < end) {
		char *eol = memchr(line, '\r', (size_t)(end - line));
		char *colon, *v;
		if (eol == NULL || eol + 1 >= end || eol[1] != '\n')
			return SAYIN_EFORMAT;
		*eol = '\0';
		if (memchr(line, '\0', (size_t)(eol - line)) != NULL)
			return SAYIN_EFORMAT;
		colon = strchr(line, ':');
		if (colon == NULL)
			return SAYIN_EFORMAT;
		*colon = '\0';
		v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		if (strcasecmp(line, "Content-Disposition") == 0) {
			if (strncasecmp(v, "form-data", 9) != 0)
				return SAYIN_EFORMAT;
			has_name = header_param(v, "name", name, sizeof(name));
			has_file = header_param(v, "filename", filename, sizeof(filename));
		} else if (strcasecmp(line, "Content-Type") == 0) {
			snprintf(ctype, sizeof(ctype), "%s", v);
			has_type = 1;
		}
		line = eol + 2;
	}
	if (!has_name)
		return SAYIN_EFORMAT;
	return m->cb.on_part(m->arg, name, has_file ? filename : NULL, has_type ? ctype : NULL);
}

static int step(multipart *m)
{
	for (;;) {
		switch (m->state) {
		case ST_PREAMBLE:
		case ST_BODY: {
			char *hit = memmem(m->pending.data, m->pending.len, m->delim, m->delim_len);
			size_t keep = m->delim_len - 1, emit;
			if (hit != NULL) {
				emit = (size_t)(hit - m->pending.data);
				if (m->state == ST_BODY && emit > 0) {
					int rc = m->cb.on_data(m->arg, m->pending.data, emit);
					if (rc != 0)
						return rc;
				}
				if (m->state == ST_BODY) {
					int rc = m->cb.on_part_end(m->arg);
					if (rc != 0)
						return rc;
				}
				consume(m, emit + m->delim_len);
				m->state = ST_AFTER_BOUNDARY;
				continue;
			}
			/* No delimiter: everything but a possible delimiter's start
			 * is part data (or preamble, dropped). */
			if (m->pending.len > keep) {
				emit = m->pending.len - keep;
				if (m->state == ST_BODY) {
					int rc = m->cb.on_data(m->arg, m->pending.data, emit);
					if (rc != 0)
						return rc;
				}
				consume(m, emit);
			}
			return 0;
		}
		case ST_AFTER_BOUNDARY:
			/* "--" closes the body; otherwise optional whitespace, CRLF. */
			if (m->pending.len < 2)
				return 0;
			if (m->pending.data[0] == '-' && m->pending.data[1] == '-') {
				m->state = ST_DONE;
				buf_reset(&m->pending);
				return 0;
			} else {
				char *crlf = memmem(m->pending.data, m->pending.len, "\r\n", 2);
				if (crlf == NULL) {
					if (m->pending.len > 64)
						return SAYIN_EFORMAT;
					return 0;
				}
				for (char *p = m->pending.data; p < crlf; p++)
					if (*p != ' ' && *p != '\t')
						return SAYIN_EFORMAT;
				consume(m, (size_t)(crlf - m->pending.data) + 2);
				m->state = ST_HEADERS;
			}
			continue;
		case ST_HEADERS: {
			char *end = memmem(m->pending.data, m->pending.len, "\r\n\r\n", 4);
			int rc;
			if (end == NULL) {
				if (m->pending.len >= 2 && m->pending.data[0] == '\r' && m->pending.data[1] == '\n')
					return SAYIN_EFORMAT; /* a part without headers */
				return m->pending.len > MULTIPART_HEADERS_MAX ? SAYIN_EFORMAT : 0;
			}
			if ((size_t)(end - m->pending.data) > MULTIPART_HEADERS_MAX)
				return SAYIN_EFORMAT;
			rc = part_headers(m, m->pending.data, (size_t)(end - m->pending.data) + 2);
			if (rc != 0)
				return rc;
			consume(m, (size_t)(end - m->pending.data) + 4);
			/* The data's CRLF before the next delimiter belongs to the
			 * delimiter, which starts with CRLF. */
			m->state = ST_BODY;
			continue;
		}
		case ST_DONE:
			buf_reset(&m->pending); /* the epilogue is ignored */
			return 0;
		case ST_FAILED:
			return SAYIN_EFORMAT;
		}
	}
}

int multipart_feed(multipart *m, const char *data, size_t len)
{
	int rc;

	if (m->state == ST_FAILED)
		return SAYIN_EFORMAT;
	if (m->state == ST_DONE)
		return 0;
	rc = buf_append(&m->pending, data, len);
	if (rc == 0)
		rc = step(m);
	if (rc != 0)
		m->state = ST_FAILED;
	return rc;
}

int multipart_finish(const multipart *m)
{
	return m->state == ST_DONE ? 0 : m->state == ST_FAILED ? SAYIN_EFORMAT : SAYIN_ETRUNCATED;
}

/* accesslog: JSON-lines access log lines, built on the stack, one write each. */
#include "core/accesslog.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Output bytes each client-supplied string may take inside the line
 * (escapes included). Their sum plus the fixed part stays under
 * ACCESSLOG_LINE_MAX, so every line is one write below PIPE_BUF. */
enum {
	BUDGET_METHOD = 32,
	BUDGET_PATH = 1024,
	BUDGET_QUERY = 768,
	BUDGET_USER_AGENT = 512,
	BUDGET_REFERER = 768,
	BUDGET_SHORT = 64,
};

/* The sink: sink_fd is opened once and keeps its number; reconfiguring
 * swaps the file under it (dup3). */
static atomic_int sink_on;
static atomic_int sink_fd = -1;
static atomic_ullong write_failures;

struct cidr {
	int family; /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	unsigned bits;
};

struct accesslog_edges {
	char header[64]; /* "" when no header is trusted */
	size_t n;
	struct cidr cidr[]; /* n of them */
};

/* ---- the sink ---- */

static int install_fd(int fd)
{
	int cur = atomic_load(&sink_fd);

	if (cur < 0) {
		atomic_store(&sink_fd, fd);
		return 0;
	}
	/* Atomic for writers: they see the old file or the new one. */
	if (dup3(fd, cur, O_CLOEXEC) < 0) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	close(fd);
	return 0;
}

int accesslog_configure(const char *setting, const char *target, char *err, size_t errlen)
{
	int fd, rc;

	if (target == NULL || strcmp(target, "off") == 0) {
		atomic_store(&sink_on, 0);
		return 0;
	}
	if (strcmp(target, "stderr") == 0 || strcmp(target, "on") == 0) {
		fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
		if (fd < 0) {
			rc = -errno;
			snprintf(err, errlen, "--%s: cannot use stderr: %s", setting, strerror(errno));
			return rc;
		}
	} else if (strchr(target, '/') == NULL) {
		/* A typo ("of", "stdout") must not become a file in the cwd. */
		snprintf(err, errlen,
		         "--%s: '%s' is not off, stderr or a file path (with a '/', e.g. "
		         "./access.log)",
		         setting, target);
		return SAYIN_ECONFIG;
	} else {
		fd = open(target, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
		if (fd < 0) {
			rc = -errno;
			snprintf(err, errlen, "--%s: cannot open %s: %s", setting, target,
			         strerror(errno));
			return rc;
		}
	}
	rc = install_fd(fd);
	if (rc != 0) {
		snprintf(err, errlen, "--%s: cannot switch to %s: %s", setting, target,
		         strerror(-rc));
		return rc;
	}
	atomic_store_explicit(&sink_on, 1, memory_order_release);
	return 0;
}

int accesslog_enabled(void)
{
	return atomic_load_explicit(&sink_on, memory_order_acquire);
}

/* ---- trusted edges ---- */

static int parse_cidr(const char *text, struct cidr *out)
{
	char addr[64];
	const char *slash = strchr(text, '/');
	size_t len = slash != NULL ? (size_t)(slash - text) : strlen(text);
	unsigned max;

	if (len == 0 || len >= sizeof(addr))
		return -1;
	memcpy(addr, text, len);
	addr[len] = '\0';
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, addr, out->addr) == 1) {
		out->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
		out->family = AF_INET6;
		max = 128;
	} else {
		return -1;
	}
	out->bits = max;
	if (slash != NULL) {
		char *end;
		unsigned long bits;
		if (slash[1] < '0' || slash[1] > '9')
			return -1;
		errno = 0;
		bits = strtoul(slash + 1, &end, 10);
		if (errno != 0 || *end != '\0' || bits > max)
			return -1;
		out->bits = (unsigned)bits;
	}
	return 0;
}

int accesslog_edges_parse(const char *header, const char *cidrs, accesslog_edges **out,
                          char *err, size_t errlen)
{
	accesslog_edges *e;
	size_t n = 0, cap = 0;
	const char *p;

	*out = NULL;
	if (header == NULL)
		header = "";
	if (cidrs == NULL)
		cidrs = "";
	if (strlen(header) >= sizeof(e->header)) {
		snprintf(err, errlen, "--client-ip-header: '%.40s...' is too long", header);
		return SAYIN_ECONFIG;
	}
	for (p = cidrs; *p != '\0'; p++)
		cap += *p == ',' || *p == ' ';
	cap++;
	if (header[0] == '\0' && strspn(cidrs, ", ") == strlen(cidrs))
		return 0;
	e = calloc(1, sizeof(*e) + cap * sizeof(e->cidr[0]));
	if (e == NULL)
		return -ENOMEM;
	snprintf(e->header, sizeof(e->header), "%s", header);
	for (p = cidrs; *p != '\0';) {
		char item[80];
		size_t len = strcspn(p, ", ");
		if (len == 0) {
			p++;
			continue;
		}
		if (len >= sizeof(item) || n >= cap) {
			snprintf(err, errlen, "--trusted-edges: '%.*s' is not an address or CIDR",
			         (int)(len > 60 ? 60 : len), p);
			free(e);
			return SAYIN_ECONFIG;
		}
		memcpy(item, p, len);
		item[len] = '\0';
		if (parse_cidr(item, &e->cidr[n]) != 0) {
			snprintf(err, errlen,
			         "--trusted-edges: '%s' is not an address or CIDR (e.g. 10.0.0.0/8, "
			         "2001:db8::/32)",
			         item);
			free(e);
			return SAYIN_ECONFIG;
		}
		n++;
		p += len;
	}
	e->n = n;
	if (e->header[0] != '\0' && n == 0) {
		snprintf(err, errlen, "--client-ip-header %s needs --trusted-edges: the header is "
		                      "believed only from the CDN's own addresses", e->header);
		free(e);
		return SAYIN_ECONFIG;
	}
	*out = e;
	return 0;
}

void accesslog_edges_free(accesslog_edges *edges)
{
	free(edges);
}

static int cidr_contains(const struct cidr *c, int family, const unsigned char *addr)
{
	unsigned full = c->bits / 8, rest = c->bits % 8;

	if (c->family != family)
		return 0;
	if (memcmp(c->addr, addr, full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));
	return (c->addr[full] & mask) == (addr[full] & mask);
}

/* The peer as an address family and bytes, IPv4-mapped IPv6 as IPv4.
 * Returns 0, or -1 for a Unix socket or an unknown peer. */
static int peer_bytes(const struct sockaddr_storage *sa, int *family, unsigned char out[16])
{
	static const unsigned char v4_mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (sa == NULL)
		return -1;
	if (sa->ss_family == AF_INET) {
		*family = AF_INET;
		memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return 0;
	}
	if (sa->ss_family == AF_INET6) {
		const unsigned char *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		if (memcmp(a, v4_mapped, 12) == 0) {
			*family = AF_INET;
			memcpy(out, a + 12, 4);
		} else {
			*family = AF_INET6;
			memcpy(out, a, 16);
		}
		return 0;
	}
	return -1;
}

/* The peer as text ("unix" for a Unix socket, "" when unknown). */
static void peer_text(const struct sockaddr_storage *sa, char *out, size_t size)
{
	unsigned char addr[16];
	int family;

	out[0] = '\0';
	if (sa != NULL && sa->ss_family == AF_UNIX)
		snprintf(out, size, "unix");
	else if (peer_bytes(sa, &family, addr) == 0 &&
	         inet_ntop(family, addr, out, (socklen_t)size) == NULL)
		out[0] = '\0';
}

/* The client the trusted edge names in its header: the value, or for a
 * list (X-Forwarded-For) its last element, which that edge appended. Only
 * a well-formed address is taken. Returns 0 and the text, or -1. */
static int header_client(const accesslog_edges *e, const http_request *req,
                         const struct sockaddr_storage *sa, char *out, size_t size)
{
	unsigned char addr[16], parsed[16];
	char text[INET6_ADDRSTRLEN];
	const char *value, *start, *end;
	int family, trusted = 0;

	if (e == NULL || e->header[0] == '\0' || peer_bytes(sa, &family, addr) != 0)
		return -1;
	for (size_t i = 0; i < e->n && !trusted; i++)
		trusted = cidr_contains(&e->cidr[i], family, addr);
	if (!trusted)
		return -1;
	/* The last element of the LAST copy: a proxy may append its own header
	 * line rather than extend the client's, so an earlier copy (or element)
	 * is what the client sent and proves nothing. */
	value = NULL;
	for (size_t i = 0, n = http_request_header_count(req); i < n; i++) {
		http_header h = http_request_header_at(req, i);
		if (strcasecmp(h.name, e->header) == 0)
			value = h.value;
	}
	if (value == NULL)
		return -1;
	start = strrchr(value, ',');
	start = start != NULL ? start + 1 : value;
	while (*start == ' ' || *start == '\t')
		start++;
	end = start + strlen(start);
	while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if ((size_t)(end - start) >= sizeof(text))
		return -1;
	memcpy(text, start, (size_t)(end - start));
	text[end - start] = '\0';
	if (inet_pton(AF_INET, text, parsed) != 1 && inet_pton(AF_INET6, text, parsed) != 1)
		return -1;
	snprintf(out, size, "%s", text);
	return 0;
}

/* ---- the line ---- */

struct line {
	char *p, *end; /* end: the last byte kept for the closing "}\n" */
};

static void put_raw(struct line *l, const char *s, size_t n)
{
	if (n > (size_t)(l->end - l->p))
		n = (size_t)(l->end - l->p);
	memcpy(l->p, s, n);
	l->p += n;
}

static void put_str(struct line *l, const char *s)
{
	put_raw(l, s, strlen(s));
}

static void put_u64(struct line *l, uint64_t v)
{
	char digits[24];
	int n = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)v);
	put_raw(l, digits, (size_t)n);
}

/* The length of the valid UTF-8 sequence at s (1 to 4), or 0 when the
 * bytes there are not one (RFC 3629: no overlongs, no surrogates, nothing
 * above U+10FFFF). s is NUL-terminated, so a cut sequence fails on the NUL. */
static size_t utf8_sequence(const unsigned char *s)
{
	unsigned char c = s[0];
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;

	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++) {
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	}
	return n;
}

/* "key":"value" with value JSON-escaped into at most budget bytes (cut
 * with "..."), or "key":null when value is NULL. Invalid UTF-8 bytes become
 * U+FFFD, one per byte. */
static void put_field_str(struct line *l, const char *key, const char *value, size_t budget)
{
	static const char hexd[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)value;
	size_t used = 0;

	put_str(l, ",\"");
	put_str(l, key);
	put_str(l, "\":");
	if (value == NULL) {
		put_str(l, "null");
		return;
	}
	put_raw(l, "\"", 1);
	while (*s != '\0') {
		char esc[6];
		const char *unit = esc;
		size_t n, adv = 1;
		if (*s == '"' || *s == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*s;
			n = 2;
		} else if (*s < 0x20 || *s == 0x7f) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hexd[*s >> 4];
			esc[5] = hexd[*s & 15];
			n = 6;
		} else if (*s < 0x80) {
			unit = (const char *)s;
			n = 1;
		} else if ((adv = utf8_sequence(s)) > 0) {
			unit = (const char *)s;
			n = adv;
		} else {
			unit = "\\ufffd";
			n = 6;
			adv = 1;
		}
		if (used + n > budget - 3) {
			put_raw(l, "...", 3);
			break;
		}
		put_raw(l, unit, n);
		used += n;
		s += adv;
	}
	put_raw(l, "\"", 1);
}

static void put_field_u64(struct line *l, const char *key, uint64_t v)
{
	put_str(l, ",\"");
	put_str(l, key);
	put_str(l, "\":");
	put_u64(l, v);
}

static const char *const validator_names[] = {
	[ACCESSLOG_VALIDATOR_NONE] = "none",
	[ACCESSLOG_VALIDATOR_ETAG] = "etag",
	[ACCESSLOG_VALIDATOR_IMS] = "ims",
	[ACCESSLOG_VALIDATOR_CHANGED] = "changed",
};

size_t accesslog_format(char *out, size_t size, int64_t now_ms, const accesslog_edges *edges,
                        const http_request *req, const http_completion *done,
                        const accesslog_entry *extra)
{
	static const accesslog_entry no_extra = { .validator = ACCESSLOG_VALIDATOR_NONE };
	const struct sockaddr_storage *sa = http_request_peer(req);
	struct line l = { out, out + size - 3 };
	char stamp[80], peer[INET6_ADDRSTRLEN + 8], client[INET6_ADDRSTRLEN + 8], proto[16];
	char range[48];
	const char *query = strchr(req->target, '?');
	time_t sec = (time_t)(now_ms / 1000);
	struct tm tm;

	if (extra == NULL)
		extra = &no_extra;
	gmtime_r(&sec, &tm);
	snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         (int)(now_ms % 1000));
	peer_text(sa, peer, sizeof(peer));
	if (header_client(edges, req, sa, client, sizeof(client)) != 0)
		snprintf(client, sizeof(client), "%s", peer);
	snprintf(proto, sizeof(proto), "HTTP/%d.%d", req->version_major, req->version_minor);

	put_str(&l, "{\"time\":\"");
	put_str(&l, stamp);
	put_raw(&l, "\"", 1);
	put_field_str(&l, "client", client[0] != '\0' ? client : NULL, BUDGET_SHORT);
	put_field_str(&l, "peer", peer[0] != '\0' ? peer : NULL, BUDGET_SHORT);
	put_field_str(&l, "method", req->method, BUDGET_METHOD);
	put_field_str(&l, "path", req->path, BUDGET_PATH);
	put_field_str(&l, "query", query != NULL ? query + 1 : NULL, BUDGET_QUERY);
	put_field_str(&l, "protocol", proto, BUDGET_SHORT);
	put_field_u64(&l, "status", (uint64_t)(done->status < 0 ? 0 : done->status));
	put_field_u64(&l, "bytes", done->bytes_sent);
	put_field_u64(&l, "duration_us", done->duration_ns / 1000);
	put_field_str(&l, "user_agent", http_request_header(req, "User-Agent"), BUDGET_USER_AGENT);
	put_field_str(&l, "referer", http_request_header(req, "Referer"), BUDGET_REFERER);
	put_field_str(&l, "validator", validator_names[extra->validator], BUDGET_SHORT);
	if (extra->partial) {
		snprintf(range, sizeof(range), "%llu-%llu", (unsigned long long)extra->range_first,
		         (unsigned long long)extra->range_last);
		put_field_str(&l, "range", range, BUDGET_SHORT);
	} else {
		put_field_str(&l, "range", NULL, BUDGET_SHORT);
	}
	put_field_str(&l, "encoding", extra->encoding, BUDGET_SHORT);
	put_str(&l, ",\"aborted\":");
	put_str(&l, done->aborted ? "true" : "false");
	/* end was kept back for these. */
	l.end += 3;
	put_raw(&l, "}\n", 2);
	*l.p = '\0';
	return (size_t)(l.p - out);
}

void accesslog_write(const accesslog_edges *edges, const http_request *req,
                     const http_completion *done, const accesslog_entry *extra)
{
	char line[ACCESSLOG_LINE_MAX];
	size_t len;
	int fd;

	if (!accesslog_enabled())
		return;
	fd = atomic_load_explicit(&sink_fd, memory_order_relaxed);
	len = accesslog_format(line, sizeof(line), clock_now_ms(), edges, req, done, extra);
	/* A full disk or a closed stderr loses the line, never the response;
	 * it is counted, and logged on the 1st, 2nd, 4th, 8th... failure. */
	if (write(fd, line, len) != (ssize_t)len) {
		int saved = errno;
		unsigned long long n = atomic_fetch_add(&write_failures, 1) + 1;
		if ((n & (n - 1)) == 0)
			log_warn("accesslog: a line could not be written (%llu so far): %s", n,
			         strerror(saved));
	}
}

uint64_t accesslog_write_failures(void)
{
	return atomic_load(&write_failures);
}

/* oauth1: signs a request with OAuth 1.0a HMAC-SHA1 (RFC 5849). */
#include "deliver/social/oauth1.h"

#include "core/buf.h"
#include "core/clock.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

/* The strings are built in bufs (core/buf.h): an append that fails marks
 * the buf, and each function checks buf_failed once, at the end. */

/* Appends the encoding of n bytes of s. */
static void append_encoded(buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		int unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		                 (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
		if (unreserved) {
			buf_putc(b, (char)c);
		} else {
			char esc[3] = { '%', hex[c >> 4], hex[c & 15] };
			buf_append(b, esc, 3);
		}
	}
}

char *oauth1_encode(const char *s, size_t len)
{
	buf b = BUF_INIT;
	buf_append(&b, "", 0);
	append_encoded(&b, s, len);
	if (buf_failed(&b)) {
		buf_free(&b);
		return NULL;
	}
	return buf_take(&b, NULL);
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Form-decodes n bytes of s ('+' is a space, %XX a byte) and appends their
 * encoding to b. Returns 0, -EINVAL for a broken escape, or -ENOMEM. */
static int append_reencoded(buf *b, const char *s, size_t n)
{
	char *raw = malloc(n + 1);
	size_t len = 0;
	if (raw == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '+') {
			raw[len++] = ' ';
		} else if (s[i] == '%') {
			int hi = i + 2 < n ? hexval((unsigned char)s[i + 1]) : -1;
			int lo = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
			if (hi < 0 || lo < 0) {
				free(raw);
				return -EINVAL;
			}
			raw[len++] = (char)(hi * 16 + lo);
			i += 2;
		} else {
			raw[len++] = s[i];
		}
	}
	append_encoded(b, raw, len);
	free(raw);
	return buf_failed(b) ? -ENOMEM : 0;
}

struct param {
	char *name;  /* encoded */
	char *value; /* encoded */
};

struct params {
	struct param *v;
	size_t n, cap;
};

static void params_free(struct params *ps)
{
	for (size_t i = 0; i < ps->n; i++) {
		free(ps->v[i].name);
		free(ps->v[i].value);
	}
	free(ps->v);
}

static int params_push(struct params *ps, char *name, char *value)
{
	if (name == NULL || value == NULL) {
		free(name);
		free(value);
		return -ENOMEM;
	}
	if (ps->n == ps->cap) {
		size_t cap = ps->cap ? ps->cap * 2 : 16;
		struct param *v = realloc(ps->v, cap * sizeof(*v));
		if (v == NULL) {
			free(name);
			free(value);
			return -ENOMEM;
		}
		ps->v = v;
		ps->cap = cap;
	}
	ps->v[ps->n].name = name;
	ps->v[ps->n].value = value;
	ps->n++;
	return 0;
}

/* A raw (not yet encoded) parameter. */
static int params_add_raw(struct params *ps, const char *name, const char *value)
{
	return params_push(ps, oauth1_encode(name, strlen(name)), oauth1_encode(value, strlen(value)));
}

/* Adds the pairs of a form-encoded string (a query or a body): "a=1&b&c=".
 * A name without '=' has an empty value; empty pairs are skipped. */
static int params_add_form(struct params *ps, const char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		const char *pair = s + i;
		const char *amp = memchr(pair, '&', n - i);
		size_t plen = amp ? (size_t)(amp - pair) : n - i;
		const char *eq = memchr(pair, '=', plen);
		size_t nlen = eq ? (size_t)(eq - pair) : plen;
		buf name = BUF_INIT, value = BUF_INIT;
		int rc;

		i += plen + 1;
		if (plen == 0)
			continue;
		buf_append(&name, "", 0);
		buf_append(&value, "", 0);
		rc = append_reencoded(&name, pair, nlen);
		if (rc == 0 && eq != NULL)
			rc = append_reencoded(&value, eq + 1, plen - nlen - 1);
		if (rc == 0 && (buf_failed(&name) || buf_failed(&value)))
			rc = -ENOMEM;
		if (rc != 0) {
			buf_free(&name);
			buf_free(&value);
			return rc;
		}
		rc = params_push(ps, buf_take(&name, NULL), buf_take(&value, NULL));
		if (rc != 0)
			return rc;
	}
	return 0;
}

static int param_cmp(const void *a, const void *b)
{
	const struct param *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c != 0 ? c : strcmp(x->value, y->value);
}

char *oauth1_base_uri(const char *url, int *err)
{
	const char *sep = strstr(url, "://");
	const char *auth, *auth_end, *host, *host_end, *port = NULL, *path, *path_end, *at;
	buf b = BUF_INIT;
	size_t slen;

	*err = -EINVAL;
	if (sep == NULL)
		return NULL;
	slen = (size_t)(sep - url);
	if (!((slen == 4 && strncasecmp(url, "http", 4) == 0) ||
	      (slen == 5 && strncasecmp(url, "https", 5) == 0)))
		return NULL;
	auth = sep + 3;
	auth_end = auth + strcspn(auth, "/?#");
	/* Userinfo is not part of the base string URI. */
	at = NULL;
	for (const char *p = auth; p < auth_end; p++)
		if (*p == '@')
			at = p;
	host = at ? at + 1 : auth;
	if (*host == '[') {
		host_end = memchr(host, ']', (size_t)(auth_end - host));
		if (host_end == NULL)
			return NULL;
		host_end++;
	} else {
		host_end = memchr(host, ':', (size_t)(auth_end - host));
		if (host_end == NULL)
			host_end = auth_end;
	}
	if (host_end == host)
		return NULL;
	if (host_end < auth_end && *host_end == ':')
		port = host_end + 1;
	path = auth_end;
	path_end = path + strcspn(path, "?#");

	for (size_t i = 0; i < slen; i++)
		buf_putc(&b, (char)tolower((unsigned char)url[i]));
	buf_puts(&b, "://");
	for (const char *p = host; p < host_end; p++)
		buf_putc(&b, (char)tolower((unsigned char)*p));
	if (port != NULL && port < auth_end) {
		size_t plen = (size_t)(auth_end - port);
		int is_default = (slen == 4 && plen == 2 && strncmp(port, "80", 2) == 0) ||
		                 (slen == 5 && plen == 3 && strncmp(port, "443", 3) == 0);
		if (!is_default) {
			buf_putc(&b, ':');
			buf_append(&b, port, plen);
		}
	}
	if (path_end == path)
		buf_putc(&b, '/');
	else
		buf_append(&b, path, (size_t)(path_end - path));
	if (buf_failed(&b)) {
		buf_free(&b);
		*err = -ENOMEM;
		return NULL;
	}
	*err = 0;
	return buf_take(&b, NULL);
}

static int make_nonce(char out[33])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char raw[16];
	size_t got = 0;
	while (got < sizeof(raw)) {
		ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -EIO;
		}
		got += (size_t)n;
	}
	for (size_t i = 0; i < sizeof(raw); i++) {
		out[2 * i] = hex[raw[i] >> 4];
		out[2 * i + 1] = hex[raw[i] & 15];
	}
	out[32] = '\0';
	return 0;
}

/* The protocol parameters in the order they go into the header. */
enum { P_CONSUMER_KEY, P_NONCE, P_SIGNATURE_METHOD, P_TIMESTAMP, P_TOKEN, P_VERSION, P_COUNT };

int oauth1_sign(const oauth1_request *req, oauth1_signature *out)
{
	static const char *const names[P_COUNT] = { "oauth_consumer_key", "oauth_nonce",
		                                    "oauth_signature_method", "oauth_timestamp",
		                                    "oauth_token", "oauth_version" };
	const char *values[P_COUNT] = { 0 };
	char nonce[33], timestamp[24];
	struct params ps = { 0 };
	buf base = BUF_INIT, key = BUF_INIT, params = BUF_INIT, hdr = BUF_INIT;
	const char *sep = "";
	const char *query, *query_end;
	char *uri = NULL;
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (req->method == NULL || req->url == NULL || req->consumer_key == NULL ||
	    req->consumer_secret == NULL)
		return -EINVAL;
	uri = oauth1_base_uri(req->url, &rc);
	if (uri == NULL)
		return rc;

	if (req->nonce == NULL) {
		rc = make_nonce(nonce);
		if (rc != 0)
			goto out;
	} else {
		snprintf(nonce, sizeof(nonce), "%s", req->nonce);
	}
	snprintf(timestamp, sizeof(timestamp), "%lld",
	         (long long)(req->timestamp != 0 ? req->timestamp : clock_now_ms() / 1000));
	values[P_CONSUMER_KEY] = req->consumer_key;
	values[P_NONCE] = req->nonce != NULL ? req->nonce : nonce;
	values[P_SIGNATURE_METHOD] = "HMAC-SHA1";
	values[P_TIMESTAMP] = timestamp;
	values[P_TOKEN] = req->token;
	values[P_VERSION] = req->with_version ? "1.0" : NULL;

	/* Parameter sources (3.4.1.3.1): the query, the form body, the protocol. */
	query = strchr(req->url, '?');
	if (query != NULL) {
		query++;
		query_end = query + strcspn(query, "#");
		rc = params_add_form(&ps, query, (size_t)(query_end - query));
		if (rc != 0)
			goto out;
	}
	if (req->form_body != NULL) {
		rc = params_add_form(&ps, req->form_body, req->form_body_len);
		if (rc != 0)
			goto out;
	}
	for (int i = 0; i < P_COUNT; i++) {
		if (values[i] == NULL)
			continue;
		rc = params_add_raw(&ps, names[i], values[i]);
		if (rc != 0)
			goto out;
	}
	qsort(ps.v, ps.n, sizeof(*ps.v), param_cmp);

	/* Normalized parameters (3.4.1.3.2), then the base string (3.4.1.1). */
	for (size_t i = 0; i < ps.n; i++)
		buf_printf(&params, "%s%s=%s", i > 0 ? "&" : "", ps.v[i].name, ps.v[i].value);
	for (const char *m = req->method; *m; m++) {
		char c = (char)toupper((unsigned char)*m);
		append_encoded(&base, &c, 1);
	}
	buf_putc(&base, '&');
	append_encoded(&base, uri, strlen(uri));
	buf_putc(&base, '&');
	append_encoded(&base, params.data, params.len);

	/* The key (3.4.2): both secrets encoded, '&' even when one is empty. */
	append_encoded(&key, req->consumer_secret, strlen(req->consumer_secret));
	buf_putc(&key, '&');
	if (req->token_secret != NULL)
		append_encoded(&key, req->token_secret, strlen(req->token_secret));
	if (buf_failed(&base) || buf_failed(&key) || buf_failed(&params)) {
		rc = -ENOMEM;
		goto out;
	}
	if (HMAC(EVP_sha1(), key.data, (int)key.len, (const unsigned char *)base.data, base.len,
	         digest, &digest_len) == NULL) {
		rc = -EIO;
		goto out;
	}
	EVP_EncodeBlock((unsigned char *)out->signature, digest, (int)digest_len);

	/* The header (3.5.1): realm first, then each protocol parameter,
	 * ", "-separated. */
	buf_puts(&hdr, "OAuth ");
	if (req->realm != NULL) {
		buf_puts(&hdr, "realm=\"");
		append_encoded(&hdr, req->realm, strlen(req->realm));
		buf_putc(&hdr, '"');
		sep = ", ";
	}
	for (int i = 0; i < P_COUNT; i++) {
		if (values[i] == NULL)
			continue;
		buf_printf(&hdr, "%s%s=\"", sep, names[i]);
		append_encoded(&hdr, values[i], strlen(values[i]));
		buf_putc(&hdr, '"');
		sep = ", ";
		if (i == P_NONCE) {
			buf_printf(&hdr, "%soauth_signature=\"", sep);
			append_encoded(&hdr, out->signature, strlen(out->signature));
			buf_putc(&hdr, '"');
		}
	}
	if (buf_failed(&hdr)) {
		rc = -ENOMEM;
		goto out;
	}
	out->base_string = buf_take(&base, NULL);
	out->key = buf_take(&key, NULL);
	out->authorization = buf_take(&hdr, NULL);
out:
	params_free(&ps);
	free(uri);
	buf_free(&params);
	buf_free(&base);
	if (key.data != NULL)
		OPENSSL_cleanse(key.data, key.len);
	buf_free(&key);
	buf_free(&hdr);
	OPENSSL_cleanse(digest, sizeof(digest));
	return rc;
}

void oauth1_signature_free(oauth1_signature *sig)
{
	free(sig->base_string);
	if (sig->key != NULL)
		OPENSSL_cleanse(sig->key, strlen(sig->key));
	free(sig->key);
	free(sig->authorization);
	memset(sig, 0, sizeof(*sig));
}

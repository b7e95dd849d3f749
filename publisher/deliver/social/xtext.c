/* xtext: X's weighted length (twitter-text v3) and fitting a post into it. */
#include "deliver/social/xtext.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SCALE 100
#define DEFAULT_WEIGHT 200
#define LINK_WEIGHT (XTEXT_URL_WEIGHT * SCALE)
#define MAX_WEIGHT (XTEXT_MAX_WEIGHT * SCALE)
#define ELLIPSIS "\xe2\x80\xa6" /* U+2026, weight 2 */

enum kind { K_SPACE, K_TEXT, K_CJK, K_CJK_PUNCT, K_LINK };

/* An indivisible piece of text: a code point with its combining marks, an
 * emoji sequence or a link. */
struct unit {
	size_t start, end; /* bytes */
	size_t cstart, cend; /* code points */
	int weight;
	enum kind kind;
};

struct text {
	const char *s;
	uint32_t *cp;
	size_t *off; /* byte offset of each code point, and the length at [n] */
	size_t n;
	struct unit *u;
	size_t nu;
};

static int decode(const char *s, struct text *t)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t len = strlen(s), i = 0;

	t->s = s;
	t->cp = malloc((len + 1) * sizeof(*t->cp));
	t->off = malloc((len + 1) * sizeof(*t->off));
	t->u = malloc((len + 1) * sizeof(*t->u));
	t->n = t->nu = 0;
	if (t->cp == NULL || t->off == NULL || t->u == NULL)
		return -ENOMEM;
	while (i < len) {
		uint32_t c = p[i], min;
		size_t k;
		if (c < 0x80) {
			k = 0;
			min = 0;
		} else if ((c & 0xe0) == 0xc0) {
			k = 1;
			c &= 0x1f;
			min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			k = 2;
			c &= 0x0f;
			min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			k = 3;
			c &= 0x07;
			min = 0x10000;
		} else {
			return -EILSEQ;
		}
		if (i + k >= len)
			return -EILSEQ;
		for (size_t j = 1; j <= k; j++) {
			if ((p[i + j] & 0xc0) != 0x80)
				return -EILSEQ;
			c = (c << 6) | (p[i + j] & 0x3f);
		}
		if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
			return -EILSEQ;
		t->cp[t->n] = c;
		t->off[t->n] = i;
		t->n++;
		i += k + 1;
	}
	t->off[t->n] = len;
	return 0;
}

static void text_free(struct text *t)
{
	free(t->cp);
	free(t->off);
	free(t->u);
}

/* twitter-text v3 "ranges": weight 100 there, defaultWeight 200 elsewhere. */
static int cp_weight(uint32_t c)
{
	if (c <= 4351 || (c >= 8192 && c <= 8205) || (c >= 8208 && c <= 8223) ||
	    (c >= 8242 && c <= 8247))
		return SCALE;
	return DEFAULT_WEIGHT;
}

static int is_space(uint32_t c)
{
	return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0x1680 ||
	       (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x205f ||
	       c == 0x3000;
}

/* Code points that never start a unit: combining marks of the common
 * scripts, variation selectors, joiners. A table of the main blocks, not
 * the whole Unicode database: a mark it misses can only be separated from
 * its base by a character-boundary cut. */
static int is_extend(uint32_t c)
{
	if ((c >= 0x0300 && c <= 0x036f) || (c >= 0x0483 && c <= 0x0489) ||
	    (c >= 0x0591 && c <= 0x05bd) || (c >= 0x05bf && c <= 0x05c7 && c != 0x05c0 &&
	                                     c != 0x05c3 && c != 0x05c6) ||
	    (c >= 0x0610 && c <= 0x061a) || (c >= 0x064b && c <= 0x065f) || c == 0x0670 ||
	    (c >= 0x06d6 && c <= 0x06ed && c != 0x06dd && c != 0x06de && c != 0x06e5 &&
	     c != 0x06e6 && c != 0x06e9) ||
	    c == 0x0e31 || (c >= 0x0e34 && c <= 0x0e3a) || (c >= 0x0e47 && c <= 0x0e4e) ||
	    c == 0x0eb1 || (c >= 0x0eb4 && c <= 0x0ebc) || (c >= 0x0ec8 && c <= 0x0ece) ||
	    (c >= 0x1160 && c <= 0x11ff) || (c >= 0x1ab0 && c <= 0x1aff) ||
	    (c >= 0x1dc0 && c <= 0x1dff) || c == 0x200c || c == 0x200d ||
	    (c >= 0x20d0 && c <= 0x20ff) || (c >= 0x3099 && c <= 0x309a) ||
	    (c >= 0xfe00 && c <= 0xfe0f) || (c >= 0xfe20 && c <= 0xfe2f) ||
	    (c >= 0xe0100 && c <= 0xe01ef))
		return 1;
	/* Indic blocks share a layout: signs at 01-03, vowel signs and virama
	 * at 3A-4D (3D is a letter), length marks 55-57, vowel signs 62-63. */
	if (c >= 0x0900 && c <= 0x0dff) {
		uint32_t o = c & 0x7f;
		return (o >= 0x01 && o <= 0x03) || (o >= 0x3a && o <= 0x4d && o != 0x3d) ||
		       (o >= 0x55 && o <= 0x57) || (o >= 0x62 && o <= 0x63);
	}
	return 0;
}

static int is_regional(uint32_t c)
{
	return c >= 0x1f1e6 && c <= 0x1f1ff;
}

static int is_modifier(uint32_t c)
{
	return c >= 0x1f3fb && c <= 0x1f3ff;
}

/* Extended_Pictographic, approximately (every emoji base is in it). */
static int is_pictographic(uint32_t c)
{
	return c == 0x00a9 || c == 0x00ae || c == 0x203c || c == 0x2049 || c == 0x2122 ||
	       c == 0x2139 || (c >= 0x2194 && c <= 0x2199) || (c >= 0x21a9 && c <= 0x21aa) ||
	       (c >= 0x231a && c <= 0x231b) || c == 0x2328 || c == 0x23cf ||
	       (c >= 0x23e9 && c <= 0x23f3) || (c >= 0x23f8 && c <= 0x23fa) || c == 0x24c2 ||
	       (c >= 0x25aa && c <= 0x25ab) || c == 0x25b6 || c == 0x25c0 ||
	       (c >= 0x25fb && c <= 0x25fe) || (c >= 0x2600 && c <= 0x27bf) ||
	       (c >= 0x2934 && c <= 0x2935) || (c >= 0x2b05 && c <= 0x2b07) ||
	       (c >= 0x2b1b && c <= 0x2b1c) || c == 0x2b50 || c == 0x2b55 || c == 0x3030 ||
	       c == 0x303d || c == 0x3297 || c == 0x3299 ||
	       (c >= 0x1f000 && c <= 0x1faff && !is_regional(c) && !is_modifier(c)) ||
	       (c >= 0x1fc00 && c <= 0x1fffd);
}

/* After an emoji element's base at k: U+FE0F, a skin tone, a tag sequence. */
static size_t element_end(const struct text *t, size_t k)
{
	size_t j = k + 1;
	if (j < t->n && t->cp[j] == 0xfe0f)
		j++;
	if (j < t->n && is_modifier(t->cp[j]))
		j++;
	if (j < t->n && t->cp[j] >= 0xe0020 && t->cp[j] <= 0xe007e) {
		while (j < t->n && t->cp[j] >= 0xe0020 && t->cp[j] <= 0xe007e)
			j++;
		if (j < t->n && t->cp[j] == 0xe007f)
			j++;
	}
	return j;
}

/* The number of code points of the emoji sequence at i, or 0. */
static size_t emoji_len(const struct text *t, size_t i)
{
	uint32_t c = t->cp[i];
	size_t j;

	if (is_regional(c))
		return i + 1 < t->n && is_regional(t->cp[i + 1]) ? 2 : 1;
	if ((c >= '0' && c <= '9') || c == '#' || c == '*') {
		j = i + 1;
		if (j < t->n && t->cp[j] == 0xfe0f)
			j++;
		return j < t->n && t->cp[j] == 0x20e3 ? j + 1 - i : 0;
	}
	if (!is_pictographic(c) && !is_modifier(c))
		return 0;
	if (i + 1 < t->n && t->cp[i + 1] == 0xfe0e)
		return 0; /* text presentation */
	j = element_end(t, i);
	while (j + 1 < t->n && t->cp[j] == 0x200d && is_pictographic(t->cp[j + 1]))
		j = element_end(t, j + 1);
	return j - i;
}

static int is_cjk_letter(uint32_t c)
{
	return (c >= 0x1100 && c <= 0x115f) || (c >= 0x2e80 && c <= 0x2fdf) ||
	       (c >= 0x3040 && c <= 0x30ff) || (c >= 0x3100 && c <= 0x31ff) ||
	       (c >= 0x3400 && c <= 0x4dbf) || (c >= 0x4e00 && c <= 0x9fff) ||
	       (c >= 0xa960 && c <= 0xa97f) || (c >= 0xac00 && c <= 0xd7af) ||
	       (c >= 0xf900 && c <= 0xfaff) || (c >= 0x20000 && c <= 0x3ffff);
}

static int is_cjk_punct(uint32_t c)
{
	return (c >= 0x3000 && c <= 0x303f) || (c >= 0xfe30 && c <= 0xfe4f) ||
	       (c >= 0xff00 && c <= 0xffef);
}

static int is_cjk_opening(uint32_t c)
{
	return c == 0x3008 || c == 0x300a || c == 0x300c || c == 0x300e || c == 0x3010 ||
	       c == 0x3014 || c == 0x3016 || c == 0x3018 || c == 0x301a || c == 0x301d ||
	       c == 0xff08 || c == 0xff3b || c == 0xff5b || c == 0xff62;
}

static int is_ascii_alnum(uint32_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_label_char(uint32_t c)
{
	return is_ascii_alnum(c) || c == '-' || c == '_';
}

/* Characters a link runs over (ASCII only: X stops at most others). */
static int is_url_char(uint32_t c)
{
	return c > 0x20 && c < 0x7f && c != '<' && c != '>' && c != '"' && c != '^' && c != '`' &&
	       c != '{' && c != '}' && c != '\\';
}

/* Characters a link may end with; others at its end are punctuation. */
static int is_url_end_char(uint32_t c)
{
	return is_ascii_alnum(c) || c == '/' || c == '=' || c == '_' || c == '#' || c == '+' ||
	       c == '-';
}

/* A domain at i: labels, then '.' and a last label of 2+ ASCII letters,
 * ending at a non-label character. Returns the index after it, or 0. */
static size_t domain_end(const struct text *t, size_t i)
{
	size_t j = i, label_start = i, dots = 0;
	int alpha_label = 0;

	for (;;) {
		label_start = j;
		alpha_label = 1;
		while (j < t->n && is_label_char(t->cp[j])) {
			if (!((t->cp[j] >= 'a' && t->cp[j] <= 'z') || (t->cp[j] >= 'A' && t->cp[j] <= 'Z')))
				alpha_label = 0;
			j++;
		}
		if (j == label_start)
			return 0;
		if (j + 1 < t->n && t->cp[j] == '.' && is_label_char(t->cp[j + 1])) {
			j++;
			dots++;
			continue;
		}
		break;
	}
	if (dots == 0 || !alpha_label || j - label_start < 2)
		return 0;
	return j;
}

/* The end of a link whose host ends at j: over URL characters, then
 * without trailing punctuation (a ')' stays when it closes a '('). */
static size_t link_end(const struct text *t, size_t start, size_t j)
{
	size_t end;
	int open = 0;

	if (j < t->n && (t->cp[j] == '/' || t->cp[j] == ':' || t->cp[j] == '?' || t->cp[j] == '#'))
		while (j < t->n && is_url_char(t->cp[j]))
			j++;
	end = j;
	for (;;) {
		while (end > start && !is_url_end_char(t->cp[end - 1]) && t->cp[end - 1] != ')')
			end--;
		if (end > start && t->cp[end - 1] == ')') {
			open = 0;
			for (size_t k = start; k < end; k++)
				open += t->cp[k] == '(' ? 1 : t->cp[k] == ')' ? -1 : 0;
			if (open < 0) {
				end--;
				continue;
			}
		}
		break;
	}
	return end;
}

static int starts_with_ci(const struct text *t, size_t i, const char *lit)
{
	for (size_t k = 0; lit[k]; k++) {
		uint32_t c;
		if (i + k >= t->n)
			return 0;
		c = t->cp[i + k];
		if (c >= 'A' && c <= 'Z')
			c += 32;
		if (c != (uint32_t)lit[k])
			return 0;
	}
	return 1;
}

/* A link with a scheme at i: the index after it, or 0. */
static size_t scheme_link_end(const struct text *t, size_t i)
{
	size_t host, dend;
	if (i > 0 && (is_ascii_alnum(t->cp[i - 1]) || t->cp[i - 1] == '/'))
		return 0;
	if (starts_with_ci(t, i, "https://"))
		host = i + 8;
	else if (starts_with_ci(t, i, "http://"))
		host = i + 7;
	else
		return 0;
	dend = domain_end(t, host);
	if (dend == 0)
		return 0;
	return link_end(t, i, dend);
}

static void push_unit(struct text *t, size_t cs, size_t ce, int weight, enum kind kind)
{
	struct unit *u = &t->u[t->nu++];
	u->cstart = cs;
	u->cend = ce;
	u->start = t->off[cs];
	u->end = t->off[ce];
	u->weight = weight;
	u->kind = kind;
}

static int sum_weight(const struct text *t, size_t cs, size_t ce)
{
	int w = 0;
	for (size_t k = cs; k < ce; k++)
		w += cp_weight(t->cp[k]);
	return w;
}

/* Splits the text into units. Bare domains are found within words: a word
 * is everything between spaces. */
static void tokenize(struct text *t)
{
	size_t i = 0;
	while (i < t->n) {
		uint32_t c = t->cp[i];
		size_t e;

		if (is_space(c)) {
			push_unit(t, i, i + 1, cp_weight(c), K_SPACE);
			i++;
			continue;
		}
		e = scheme_link_end(t, i);
		if (e > i) {
			push_unit(t, i, e, LINK_WEIGHT, K_LINK);
			i = e;
			continue;
		}
		/* A bare domain: at a word start or after punctuation. */
		if (is_label_char(c) &&
		    (i == 0 || !(is_label_char(t->cp[i - 1]) || t->cp[i - 1] == '.'))) {
			size_t d = domain_end(t, i);
			if (d > 0) {
				int w;
				e = link_end(t, i, d);
				w = sum_weight(t, i, e);
				push_unit(t, i, e, w > LINK_WEIGHT ? w : LINK_WEIGHT, K_LINK);
				i = e;
				continue;
			}
		}
		e = emoji_len(t, i);
		if (e > 0) {
			/* Marks after the sequence are not part of the emoji: they
			 * count on their own, but stay with it. */
			size_t m = i + e;
			while (m < t->n && is_extend(t->cp[m]))
				m++;
			push_unit(t, i, m, DEFAULT_WEIGHT + sum_weight(t, i + e, m), K_TEXT);
			i = m;
			continue;
		}
		e = i + 1;
		while (e < t->n && is_extend(t->cp[e]) && !is_space(t->cp[e]))
			e++;
		push_unit(t, i, e, sum_weight(t, i, e),
		          is_cjk_letter(c) ? K_CJK : is_cjk_punct(c) ? K_CJK_PUNCT : K_TEXT);
		i = e;
	}
}

static int parse(const char *s, struct text *t)
{
	int rc = decode(s, t);
	if (rc == 0)
		tokenize(t);
	return rc;
}

int xtext_weighted_length(const char *text)
{
	struct text t;
	int rc = parse(text, &t), w = 0;
	for (size_t k = 0; rc == 0 && k < t.nu; k++)
		w += t.u[k].weight;
	text_free(&t);
	return rc != 0 ? rc : (w + SCALE - 1) / SCALE;
}

/* May the text be cut between units a and b (keeping a)? */
static int may_cut(const struct text *t, const struct unit *a, const struct unit *b)
{
	if (a->kind == K_SPACE)
		return 0;
	if (b->kind == K_SPACE)
		return 1;
	if (b->kind == K_CJK_PUNCT)
		return 0; /* never before 。、」 */
	if (a->kind == K_CJK_PUNCT)
		return !is_cjk_opening(t->cp[a->cstart]);
	return a->kind == K_CJK || b->kind == K_CJK;
}

static int is_trailing_punct(const struct text *t, const struct unit *u)
{
	uint32_t c = t->cp[u->cstart];
	return u->kind == K_SPACE ||
	       (u->cend - u->cstart == 1 && (c == ',' || c == ';' || c == ':' || c == 0x3001));
}

static int append(char *out, size_t outlen, size_t *pos, const char *s, size_t n)
{
	if (*pos + n + 1 > outlen)
		return -ENOSPC;
	memcpy(out + *pos, s, n);
	*pos += n;
	out[*pos] = '\0';
	return 0;
}

int xtext_fit(const char *text, const char *url, char *out, size_t outlen)
{
	struct text t = { 0 };
	size_t first = 0, last, keep = 0, best_word = 0, best_char = 0, pos = 0;
	int url_w = 0, sep, total = 0, budget, cum, rc, cut = 0;

	if (outlen == 0)
		return -ENOSPC;
	out[0] = '\0';
	if (url != NULL && *url != '\0') {
		url_w = xtext_weighted_length(url);
		if (url_w < 0)
			return url_w;
		url_w *= SCALE;
		if (url_w > MAX_WEIGHT - 2 * SCALE)
			return -EMSGSIZE;
	}
	rc = parse(text ? text : "", &t);
	if (rc != 0)
		goto out;

	/* The text without its leading and trailing whitespace. */
	while (first < t.nu && t.u[first].kind == K_SPACE)
		first++;
	last = t.nu;
	while (last > first && t.u[last - 1].kind == K_SPACE)
		last--;
	sep = url_w > 0 && last > first ? SCALE : 0;
	for (size_t k = first; k < last; k++)
		total += t.u[k].weight;

	if (total + sep + url_w <= MAX_WEIGHT) {
		keep = last;
	} else {
		budget = MAX_WEIGHT - url_w - sep - DEFAULT_WEIGHT; /* the ellipsis weighs 2 */
		cum = 0;
		for (size_t k = first; k < last; k++) {
			cum += t.u[k].weight;
			if (cum > budget)
				break;
			if (t.u[k].kind != K_SPACE)
				best_char = k + 1;
			if (k + 1 < last && may_cut(&t, &t.u[k], &t.u[k + 1]))
				best_word = k + 1;
		}
		keep = best_word > first ? best_word : best_char;
		while (keep > first && is_trailing_punct(&t, &t.u[keep - 1]))
			keep--;
		cut = 1;
	}

	for (;;) {
		int w;

		pos = 0;
		out[0] = '\0';
		if (keep > first) {
			rc = append(out, outlen, &pos, text + t.u[first].start,
			            t.u[keep - 1].end - t.u[first].start);
			if (rc == 0 && cut)
				rc = append(out, outlen, &pos, ELLIPSIS, strlen(ELLIPSIS));
			if (rc == 0 && url_w > 0)
				rc = append(out, outlen, &pos, " ", 1);
		}
		if (rc == 0 && url_w > 0)
			rc = append(out, outlen, &pos, url, strlen(url));
		if (rc != 0 || !cut || keep <= first)
			break;
		/* A cut inside a word can end it in a bare domain the whole text
		 * did not have ("(go.ab-c" cut to "(go.ab…" weighs 23 more), so
		 * what was built is measured, and cut one unit shorter until it
		 * fits. Dropping characters breaks such a domain within a few. */
		w = xtext_weighted_length(out);
		if (w < 0) {
			rc = w;
			break;
		}
		if (w <= XTEXT_MAX_WEIGHT)
			break;
		keep--;
		while (keep > first && is_trailing_punct(&t, &t.u[keep - 1]))
			keep--;
	}
out:
	text_free(&t);
	if (rc != 0)
		out[0] = '\0';
	return rc;
}

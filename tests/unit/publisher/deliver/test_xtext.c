/* test_xtext: X's weighted length (twitter-text v3: code points, CJK 2,
 * emoji sequences 2, links 23) and fitting a post's text and link into
 * 280 at a word boundary with an ellipsis. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "deliver/social/xtext.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define URL "https://sayin.example.com/p/0123456789abcdef0123"
#define ELLIPSIS "\xe2\x80\xa6"

static char *repeat(const char *s, size_t times)
{
	size_t n = strlen(s);
	char *r = malloc(n * times + 1);
	for (size_t i = 0; i < times; i++)
		memcpy(r + i * n, s, n);
	r[n * times] = '\0';
	return r;
}

static void test_weights(void **state)
{
	(void)state;
	assert_int_equal(xtext_weighted_length(""), 0);
	assert_int_equal(xtext_weighted_length("hello"), 5);
	assert_int_equal(xtext_weighted_length("caf\xc3\xa9"), 4);            /* U+00E9: 1 */
	assert_int_equal(xtext_weighted_length("cafe\xcc\x81"), 5);           /* e + U+0301 */
	assert_int_equal(xtext_weighted_length("\xe2\x80\x9cq\xe2\x80\x9d"), 3); /* U+201C/D: 1 */
	assert_int_equal(xtext_weighted_length("\xe2\x80\x94"), 1);           /* U+2014 em dash */
	assert_int_equal(xtext_weighted_length(ELLIPSIS), 2);                  /* U+2026: 2 */
	assert_int_equal(xtext_weighted_length("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"), 6); /* 日本語 */
	assert_int_equal(xtext_weighted_length("\xed\x95\x9c"), 2);           /* 한 */
	assert_int_equal(xtext_weighted_length("\xd0\x9f\xd1\x80\xd0\xb8"), 3); /* Cyrillic: 1 each */
	assert_int_equal(xtext_weighted_length("\xf0\x9f\x98\x80"), 2);       /* 😀 */
	/* ZWJ family: 7 code points, one emoji. */
	assert_int_equal(xtext_weighted_length("\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80"
	                                       "\x8d\xf0\x9f\x91\xa7\xe2\x80\x8d\xf0\x9f\x91\xa6"),
	                 2);
	assert_int_equal(xtext_weighted_length("\xf0\x9f\x87\xaf\xf0\x9f\x87\xb5"), 2); /* 🇯🇵 */
	assert_int_equal(xtext_weighted_length("\xf0\x9f\x87\xaf\xf0\x9f\x87\xb5\xf0\x9f\x87\xab"
	                                       "\xf0\x9f\x87\xb7"),
	                 4); /* 🇯🇵🇫🇷 */
	assert_int_equal(xtext_weighted_length("\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd"), 2); /* 👍🏽 */
	/* 🧑🏽‍💻 skin tone inside a ZWJ sequence */
	assert_int_equal(xtext_weighted_length("\xf0\x9f\xa7\x91\xf0\x9f\x8f\xbd\xe2\x80\x8d\xf0\x9f"
	                                       "\x92\xbb"),
	                 2);
	/* 🏳️‍🌈 */
	assert_int_equal(xtext_weighted_length("\xf0\x9f\x8f\xb3\xef\xb8\x8f\xe2\x80\x8d\xf0\x9f\x8c\x88"), 2);
	/* 🏴 + tags gbsct + cancel tag (Scotland) */
	assert_int_equal(xtext_weighted_length("\xf0\x9f\x8f\xb4\xf3\xa0\x81\xa7\xf3\xa0\x81\xa2\xf3"
	                                       "\xa0\x81\xb3\xf3\xa0\x81\xa3\xf3\xa0\x81\xb4\xf3\xa0"
	                                       "\x81\xbf"),
	                 2);
	assert_int_equal(xtext_weighted_length("\xe2\x9d\xa4\xef\xb8\x8f"), 2);       /* ❤️ */
	assert_int_equal(xtext_weighted_length("1\xef\xb8\x8f\xe2\x83\xa3"), 2);      /* 1️⃣ */
	assert_int_equal(xtext_weighted_length("\xe2\x98\xba\xef\xb8\x8e"), 4);       /* ☺︎ text style */
	assert_int_equal(xtext_weighted_length("a\xe2\x80\x8d" "b"), 3);              /* lone ZWJ: 1 */
	assert_int_equal(xtext_weighted_length("\xf0\x90\x8c\xb0"), 2);               /* non-BMP letter */
	assert_int_equal(xtext_weighted_length("\xff"), -EILSEQ);
	assert_int_equal(xtext_weighted_length("\xc0\xaf"), -EILSEQ);                 /* overlong */
	assert_int_equal(xtext_weighted_length("\xed\xa0\x80"), -EILSEQ);             /* surrogate */
	assert_int_equal(xtext_weighted_length("\xe6\x97"), -EILSEQ);                 /* truncated */
}

static void test_links_count_23(void **state)
{
	(void)state;
	assert_int_equal(xtext_weighted_length("https://example.com/a/very/long/path/that/goes/on/and/on"), 23);
	assert_int_equal(xtext_weighted_length("HTTP://EXAMPLE.COM"), 23);
	assert_int_equal(xtext_weighted_length("see https://example.com/x."), 4 + 23 + 1);
	assert_int_equal(xtext_weighted_length("(https://en.wikipedia.org/wiki/Foo_(bar))"), 1 + 23 + 1);
	assert_int_equal(xtext_weighted_length("a https://x.com/1 b https://x.com/2"), 2 + 23 + 3 + 23);
	/* A link stops where X stops: at non-ASCII characters. */
	assert_int_equal(xtext_weighted_length("https://example.com/a\xe6\x97\xa5"), 23 + 2);
	/* Not linked by X: no domain with a TLD. Counted as text. */
	assert_int_equal(xtext_weighted_length("http://localhost:8080/p"), 23);
	assert_int_equal(xtext_weighted_length("http://127.0.0.1/p/1"), 20);
	assert_int_equal(xtext_weighted_length("http://127.0.0.1:41234/p/0123456789"), 35);
	/* Bare domains: at least 23. */
	assert_int_equal(xtext_weighted_length("example.com"), 23);
	assert_int_equal(xtext_weighted_length("go to example.com/path!"), 6 + 23 + 1);
	assert_int_equal(xtext_weighted_length("example.com/a-path-that-is-longer-than-23"), 41);
	/* Not domains. */
	assert_int_equal(xtext_weighted_length("e.g. 3.14 U.S.A."), 16);
}

/* Checks a fitted post: at most 280, ends with " URL", and returns the
 * text part (malloc'd) with its ellipsis, if any, removed; *cut says
 * whether there was one. */
static char *check_fit(const char *text, const char *url, int *cut)
{
	size_t cap = strlen(text) + strlen(url) + 5;
	char *out = malloc(cap);
	size_t n, un = strlen(url);
	int w;

	assert_int_equal(xtext_fit(text, url, out, cap), 0);
	w = xtext_weighted_length(out);
	assert_true(w >= 0 && w <= 280);
	n = strlen(out);
	if (un > 0) {
		assert_true(n >= un);
		assert_string_equal(out + n - un, url);
		n -= un;
		if (n > 0) {
			assert_int_equal(out[n - 1], ' ');
			n--;
		}
	}
	out[n] = '\0';
	*cut = n >= 3 && strcmp(out + n - 3, ELLIPSIS) == 0;
	if (*cut)
		out[n - 3] = '\0';
	return out;
}

static void test_fits_whole(void **state)
{
	int cut;
	char *p;
	(void)state;
	p = check_fit("Listen to this!", URL, &cut);
	assert_string_equal(p, "Listen to this!");
	assert_false(cut);
	free(p);
	/* Leading and trailing whitespace go. */
	p = check_fit("  \n Hello\nworld \t", URL, &cut);
	assert_string_equal(p, "Hello\nworld");
	free(p);
}

static void test_empty_text_is_just_the_url(void **state)
{
	char out[128];
	(void)state;
	assert_int_equal(xtext_fit("", URL, out, sizeof(out)), 0);
	assert_string_equal(out, URL);
	assert_int_equal(xtext_fit(NULL, URL, out, sizeof(out)), 0);
	assert_string_equal(out, URL);
	assert_int_equal(xtext_fit(" \n\t\xe3\x80\x80 ", URL, out, sizeof(out)), 0);
	assert_string_equal(out, URL);
}

/* "TEXT URL" weighing exactly 280 is kept whole; one more and it is cut. */
static void test_exact_boundary(void **state)
{
	char text[300], *p;
	int cut;
	(void)state;

	/* 256 + 1 (space) + 23 = 280 */
	memset(text, 'a', 256);
	for (int i = 9; i < 256; i += 10)
		text[i] = ' ';
	text[256] = '\0';
	assert_int_equal(xtext_weighted_length(text), 256);
	p = check_fit(text, URL, &cut);
	assert_false(cut);
	assert_string_equal(p, text);
	free(p);

	/* 257: cut at the last space that leaves room for "…" (2). */
	text[256] = 'a';
	text[257] = '\0';
	p = check_fit(text, URL, &cut);
	assert_true(cut);
	assert_true(strlen(p) <= 254);
	assert_int_equal(strncmp(p, text, strlen(p)), 0);
	assert_int_equal(text[strlen(p)], ' ');
	assert_int_equal(strlen(p), 249);
	free(p);
}

/* One word longer than the budget: cut at a character, using it all. */
static void test_single_long_word(void **state)
{
	char *text = repeat("a", 400), *p;
	char out[600];
	int cut;
	(void)state;
	p = check_fit(text, URL, &cut);
	assert_true(cut);
	assert_int_equal(strlen(p), 254);
	free(p);
	assert_int_equal(xtext_fit(text, URL, out, sizeof(out)), 0);
	assert_int_equal(xtext_weighted_length(out), 280);
	free(text);
}

static void test_long_latin_text(void **state)
{
	char *text = repeat("The quick brown fox, jumps over the lazy dog. ", 20), *p;
	int cut;
	size_t n;
	(void)state;
	p = check_fit(text, URL, &cut);
	assert_true(cut);
	n = strlen(p);
	assert_true(n > 200);
	assert_int_equal(strncmp(p, text, n), 0);
	/* At a word boundary, with no dangling comma or space before "…". */
	assert_true(text[n] == ' ' || (text[n] == ',' && text[n + 1] == ' '));
	assert_true(p[n - 1] != ' ' && p[n - 1] != ',');
	free(p);
	free(text);
}

/* Links in the text count 23 each and are never cut through. */
static void test_text_with_urls(void **state)
{
	const char *long_link = "https://example.org/a/long/path/with/many/segments/to/make/it/long";
	char text[4096], *p;
	int cut;
	(void)state;

	/* Raw, this is over 280; weighted, 6 links are 6 * 24 + ~10. */
	snprintf(text, sizeof(text), "links: %s %s %s %s %s %s", long_link, long_link, long_link,
	         long_link, long_link, long_link);
	assert_true(strlen(text) > 280);
	assert_int_equal(xtext_weighted_length(text), 6 + 6 * 24);
	p = check_fit(text, URL, &cut);
	assert_false(cut);
	assert_string_equal(p, text);
	free(p);

	/* 12 links do not fit: the cut keeps whole links only. */
	size_t len = 0;
	len += (size_t)snprintf(text + len, sizeof(text) - len, "links:");
	for (int i = 0; i < 12; i++)
		len += (size_t)snprintf(text + len, sizeof(text) - len, " %s", long_link);
	p = check_fit(text, URL, &cut);
	assert_true(cut);
	assert_int_equal(strncmp(p, text, strlen(p)), 0);
	assert_int_equal(text[strlen(p)], ' ');
	assert_int_equal(strcmp(p + strlen(p) - strlen(long_link), long_link), 0);
	/* 6 + 10 * 24 + 2 + 1 + 23 = 272; an 11th link would make 296. */
	assert_int_equal(xtext_weighted_length(p), 6 + 10 * 24);
	free(p);
}

/* Emoji sequences without spaces: the cut falls between sequences. */
static void check_emoji_run(const char *emoji, size_t expect_count)
{
	char *text = repeat(emoji, 300), *p;
	size_t el = strlen(emoji);
	int cut;
	p = check_fit(text, URL, &cut);
	assert_true(cut);
	assert_int_equal(strlen(p) % el, 0);
	assert_int_equal(strlen(p) / el, expect_count);
	assert_int_equal(strncmp(p, text, strlen(p)), 0);
	free(p);
	free(text);
}

static void test_emoji(void **state)
{
	(void)state;
	/* budget 254 / 2 = 127 emoji */
	check_emoji_run("\xf0\x9f\x98\x80", 127);                                 /* 😀 */
	check_emoji_run("\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7"
	                "\xe2\x80\x8d\xf0\x9f\x91\xa6",
	                127);                                                      /* family */
	check_emoji_run("\xf0\x9f\x87\xaf\xf0\x9f\x87\xb5", 127);                 /* 🇯🇵 */
	check_emoji_run("\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", 127);                 /* 👍🏽 */
	check_emoji_run("\xe2\x9d\xa4\xef\xb8\x8f", 127);                         /* ❤️ */
	/* With spaces: 😀 + space = 3 each, cut at a space. */
	char *text = repeat("\xf0\x9f\x98\x80 ", 200), *p;
	int cut;
	p = check_fit(text, URL, &cut);
	assert_true(cut);
	assert_int_equal(text[strlen(p)], ' ');
	assert_int_equal(xtext_weighted_length(p), 85 * 3 - 1);
	free(p);
	free(text);
}

/* CJK has no spaces: cut between characters, never before 。or 、. */
static void test_cjk(void **state)
{
	/* 日本語の文章、とても長い。 */
	const char *sentence = "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe6\x96\x87\xe7"
	                       "\xab\xa0\xe3\x80\x81\xe3\x81\xa8\xe3\x81\xa6\xe3\x82\x82\xe9\x95"
	                       "\xb7\xe3\x81\x84\xe3\x80\x82";
	char *text = repeat(sentence, 30), *p;
	int cut;
	size_t n;
	(void)state;
	p = check_fit(text, URL, &cut);
	assert_true(cut);
	n = strlen(p);
	assert_int_equal(n % 3, 0);
	assert_int_equal(strncmp(p, text, n), 0);
	/* 127 characters fit in 254; fewer only to avoid a cut before 。、 */
	assert_true(n / 3 >= 125 && n / 3 <= 127);
	assert_true(strncmp(text + n, "\xe3\x80\x82", 3) != 0);
	assert_true(strncmp(text + n, "\xe3\x80\x81", 3) != 0);
	free(p);
	free(text);
}

/* Latin words, CJK, emoji and a link together. */
static void test_mixed(void **state)
{
	const char *chunk = "Tokyo \xe6\x9d\xb1\xe4\xba\xac\xf0\x9f\x97\xbc trip https://example.com/t "
	                    "caf\xc3\xa9 \xf0\x9f\x87\xaf\xf0\x9f\x87\xb5! ";
	char *text = repeat(chunk, 20), *p;
	int cut;
	size_t n;
	(void)state;
	p = check_fit(text, URL, &cut);
	assert_true(cut);
	n = strlen(p);
	assert_int_equal(strncmp(p, text, n), 0);
	assert_true(text[n] == ' ' || (unsigned char)text[n] >= 0x80);
	assert_true(xtext_weighted_length(p) > 240);
	free(p);
	free(text);
}

/* A mark is never cut from its base. */
static void test_combining_marks_stay(void **state)
{
	char *text = repeat("e\xcc\x81", 300), *p; /* 2 weight, 3 bytes each */
	int cut;
	(void)state;
	p = check_fit(text, URL, &cut);
	assert_true(cut);
	assert_int_equal(strlen(p) % 3, 0);
	assert_int_equal(strlen(p) / 3, 127);
	free(p);
	free(text);
}

static void test_without_url(void **state)
{
	char *text = repeat("word ", 100);
	char out[600];
	(void)state;
	assert_int_equal(xtext_fit(text, NULL, out, sizeof(out)), 0);
	assert_int_equal(xtext_weighted_length(out), 4 + 5 * 54 + 2); /* 278 allows 54 more words */
	assert_int_equal(strcmp(out + strlen(out) - 3, ELLIPSIS), 0);
	assert_int_equal(xtext_fit("short", "", out, sizeof(out)), 0);
	assert_string_equal(out, "short");
	free(text);
}

/* Found by fuzz_xtext: a word cut at a character can end in a bare domain
 * the whole word was not ("(go.ab-cc" is text, "(go.ab…" links "go.ab",
 * which weighs 23, not 5), and the fitted post weighed 298. Now the cut
 * steps back until the post fits. */
static void test_cut_that_makes_a_domain(void **state)
{
	char *y = repeat("y", 272), text[400], want[400], out[600];
	(void)state;
	snprintf(text, sizeof(text), "%s(go.ab-cccccccccc", y);
	assert_int_equal(xtext_weighted_length(text), 289);
	assert_int_equal(xtext_fit(text, NULL, out, sizeof(out)), 0);
	assert_true(xtext_weighted_length(out) <= 280);
	snprintf(want, sizeof(want), "%s(go.a" ELLIPSIS, y);
	assert_string_equal(out, want);
	/* With a link after it, the same. */
	assert_int_equal(xtext_fit(text, URL, out, sizeof(out)), 0);
	assert_true(xtext_weighted_length(out) <= 280);
	free(y);
}

static void test_errors(void **state)
{
	char out[16];
	char *big = repeat("a", 300);
	(void)state;
	assert_int_equal(xtext_fit("hello", URL, out, sizeof(out)), -ENOSPC);
	assert_string_equal(out, "");
	assert_int_equal(xtext_fit("bad \xff", URL, out, sizeof(out)), -EILSEQ);
	assert_int_equal(xtext_fit("ok", "http://x/\xff", out, sizeof(out)), -EILSEQ);
	assert_int_equal(xtext_fit("ok", big, out, sizeof(out)), -EMSGSIZE);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_weights),
		cmocka_unit_test(test_links_count_23),
		cmocka_unit_test(test_fits_whole),
		cmocka_unit_test(test_empty_text_is_just_the_url),
		cmocka_unit_test(test_exact_boundary),
		cmocka_unit_test(test_single_long_word),
		cmocka_unit_test(test_long_latin_text),
		cmocka_unit_test(test_text_with_urls),
		cmocka_unit_test(test_emoji),
		cmocka_unit_test(test_cjk),
		cmocka_unit_test(test_mixed),
		cmocka_unit_test(test_combining_marks_stay),
		cmocka_unit_test(test_without_url),
		cmocka_unit_test(test_cut_that_makes_a_domain),
		cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

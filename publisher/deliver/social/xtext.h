/* xtext: counts a text as X counts a post (twitter-text configuration
 * "v3") and fits a post's text and link into one post. Pure: bytes in,
 * bytes out.
 *
 * The count (weights in hundredths, like twitter-text's "scale" 100):
 *   - code points, not bytes or UTF-16 units; U+0000-U+10FF, U+2000-U+200D,
 *     U+2010-U+201F and U+2032-U+2037 weigh 1, every other code point 2
 *     (so CJK counts 2);
 *   - an emoji sequence weighs 2 as a whole: a pictographic code point
 *     with an optional U+FE0F, skin tone modifier and tag sequence,
 *     joined by U+200D to more of them (ZWJ families), a pair of regional
 *     indicators (a flag), a keycap ([0-9#*] U+FE0F? U+20E3); a
 *     pictographic code point followed by U+FE0E (text style) is not an
 *     emoji and counts per code point;
 *   - a link weighs 23 (t.co): "http(s)://" followed by a host whose last
 *     label is at least two letters, running over ASCII URL characters,
 *     without trailing punctuation. A host without such a label
 *     (localhost, an IP address) is not linked by X and is counted as
 *     text. A bare domain ("example.com/x") is counted as
 *     max(its own weight, 23): X links it only when it knows the TLD.
 * Differences from X, all on the safe side (we never count less than X
 * for what we produce): no NFC normalization (a decomposed accent counts
 * as two code points), (c) and (R) count 2 even without U+FE0F, a bare
 * domain X does not link counts at least 23. A ZWJ sequence that is not
 * in Unicode's list still counts as one emoji here but as its parts on X.
 *
 * Threading: any thread; no state. */
#ifndef SAYIN_XTEXT_H
#define SAYIN_XTEXT_H

#include <stddef.h>

#define XTEXT_MAX_WEIGHT 280   /* maxWeightedTweetLength */
#define XTEXT_URL_WEIGHT 23    /* transformedURLLength */

/* The weighted length of the UTF-8 text (NUL-terminated), or -EILSEQ when
 * it is not valid UTF-8. */
int xtext_weighted_length(const char *text);

/* Writes to out the post for X: "TEXT URL" when it fits in 280; else the
 * text cut at a word boundary (whitespace; between CJK characters, which
 * need no space; at a character boundary only when a single word does not
 * fit) with "…" appended: "TEXT… URL". Just the URL when the text is
 * empty or blank; just the text when url is NULL or empty. Never splits a
 * code point, an emoji sequence, a combining mark from its base or a link.
 * Returns 0, or:
 *   -EILSEQ    text or url is not valid UTF-8;
 *   -ENOSPC    out (outlen bytes, NUL included) is too small: the fitted
 *              post is at most strlen(text) + strlen(url) + 5 bytes;
 *   -EMSGSIZE  the url alone weighs more than 278. */
int xtext_fit(const char *text, const char *url, char *out, size_t outlen);

#endif

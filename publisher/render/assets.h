/* assets: the pages' one stylesheet and one script, the files
 * render/assets/style.css and render/assets/player.js embedded byte for
 * byte at build time (scripts/embed-assets writes the C file; the Makefile
 * rebuilds it when a file changes). The pages carry them inline and allow
 * them by their SHA-256, so an edit changes every page's CSP and ETag.
 * Each array is NUL-terminated; the length does not count the NUL. */
#ifndef SAYIN_ASSETS_H
#define SAYIN_ASSETS_H

#include <stddef.h>

extern const char assets_style_css[];
extern const size_t assets_style_css_len;
extern const char assets_player_js[];
extern const size_t assets_player_js_len;

#endif

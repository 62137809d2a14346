/*
 * ui_assets.h - the setup UI's static files, built into keeld.
 *
 * The table is generated at build time from ui/ by cmake/EmbedUI.cmake
 * (keel_embed_ui): one entry per file, sorted by path with strcmp order, so a
 * server may binary-search it. Paths start with '/' ("/index.html",
 * "/app.js"); the server maps "/" to "/index.html". Everything is static and
 * read-only: the server sends `data` as is, with `type` as Content-Type.
 */
#ifndef KEEL_UI_ASSETS_H
#define KEEL_UI_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *path;          /* "/index.html" */
    const char *type;          /* Content-Type, e.g. "text/html; charset=utf-8" */
    const unsigned char *data; /* the file's bytes (not NUL-terminated) */
    size_t len;                /* their number */
} keel_ui_asset_t;

extern const keel_ui_asset_t keel_ui_assets[];
extern const size_t keel_ui_assets_len;

#endif

/*
 * Fuzz target: the report of `keel assess run` (src/assess/report.c). Every
 * string in a report may have come from the device under test, so a report
 * is treated as hostile: the input is parsed as JSON (first byte, bit 0:
 * with JSON_ALLOW_NUL, as a report built in memory may hold a NUL), checked
 * with keel_assess_report_check, and a report the check takes is rendered
 * three ways. What must hold: each rendering of a checked report succeeds;
 * report.html holds no "<script" and every '&' in it starts an entity;
 * junit.xml holds no control character but LF and TAB, and no U+FFFE/U+FFFF;
 * all three are valid UTF-8.
 */
#include "fuzz.h"

#include "keel/assess_report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RENDER_CAP (16u * 1024u * 1024u)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

/* Well-formed UTF-8 (no overlong form, surrogate or code point past U+10FFFF);
 * *nonchar set when U+FFFE or U+FFFF is there. */
static int utf8_ok(const uint8_t *p, size_t n, int *nonchar)
{
    *nonchar = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = p[i];
        size_t len;
        uint32_t v, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            len = 2, v = c & 0x1Fu, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF)
            len = 3, v = c & 0x0Fu, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4)
            len = 4, v = c & 0x07u, min = 0x10000;
        else
            return 0;
        if (n - i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
            v = v << 6 | (p[i + k] & 0x3Fu);
        }
        if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
            return 0;
        if (v == 0xFFFE || v == 0xFFFF)
            *nonchar = 1;
        i += len;
    }
    return 1;
}

/* Every '&' starts one of the entities the renderers write. */
static int entities_ok(const char *s, size_t n)
{
    static const char *const ents[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#39;", "&#10;", "&#9;", "&#13;"};
    for (const char *a = memchr(s, '&', n); a != NULL; a = memchr(a + 1, '&', n - (size_t)(a + 1 - s))) {
        int ok = 0;
        for (size_t k = 0; k < sizeof ents / sizeof ents[0] && !ok; k++)
            ok = strncmp(a, ents[k], strlen(ents[k])) == 0;
        if (!ok)
            return 0;
    }
    return 1;
}

/* A case-insensitive search in n bytes (the rendering is NUL-terminated). */
static int has_ci(const char *s, size_t n, const char *lit)
{
    size_t k = strlen(lit);
    for (size_t i = 0; i + k <= n; i++)
        if (strncasecmp(s + i, lit, k) == 0)
            return 1;
    return 0;
}

static void render(const json_t *report)
{
    keel_buf_t md, html, xml;
    keel_buf_init(&md, RENDER_CAP);
    keel_buf_init(&html, RENDER_CAP);
    keel_buf_init(&xml, RENDER_CAP);
    fuzz_must(keel_assess_report_md(report, &md) == KEEL_OK, "report.md of a checked report");
    fuzz_must(keel_assess_report_html(report, &html) == KEEL_OK, "report.html of a checked report");
    fuzz_must(keel_assess_report_junit(report, &xml) == KEEL_OK, "junit.xml of a checked report");
    int nonchar = 0;
    fuzz_must(utf8_ok(md.data, md.len, &nonchar), "report.md is not UTF-8");
    fuzz_must(memchr(md.data, '\0', md.len) == NULL, "report.md holds a NUL");

    const char *h = (const char *)html.data;
    fuzz_must(utf8_ok(html.data, html.len, &nonchar), "report.html is not UTF-8");
    fuzz_must(!has_ci(h, html.len, "<script"), "report.html holds <script");
    fuzz_must(entities_ok(h, html.len), "report.html holds a raw '&'");
    for (size_t i = 0; i < html.len; i++)
        fuzz_must(html.data[i] >= 0x20 || html.data[i] == '\n' || html.data[i] == '\t', "report.html holds a control");

    const char *x = (const char *)xml.data;
    fuzz_must(utf8_ok(xml.data, xml.len, &nonchar) && !nonchar, "junit.xml is not XML 1.0 characters");
    fuzz_must(entities_ok(x, xml.len), "junit.xml holds a raw '&'");
    for (size_t i = 0; i < xml.len; i++)
        fuzz_must(xml.data[i] >= 0x20 || xml.data[i] == '\n' || xml.data[i] == '\t', "junit.xml holds a control");
    fuzz_must(strstr(x, "]]>") == NULL, "junit.xml holds ]]>");
    keel_buf_free(&md);
    keel_buf_free(&html);
    keel_buf_free(&xml);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t flags = JSON_REJECT_DUPLICATES | ((data[0] & 1) ? JSON_ALLOW_NUL : 0);
    json_t *report = json_loadb((const char *)data + 1, size - 1, flags, NULL);
    if (report == NULL)
        return 0;
    keel_status_t st = keel_assess_report_check(report);
    if (st == KEEL_OK) {
        render(report);
    } else {
        /* a refused report renders nothing */
        keel_buf_t b;
        keel_buf_init(&b, RENDER_CAP);
        fuzz_must(keel_assess_report_md(report, &b) == st && b.len == 0, "a refused report was rendered");
        keel_buf_free(&b);
    }
    json_decref(report);
    keel_error_clear();
    return 0;
}

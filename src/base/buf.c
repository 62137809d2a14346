/* Bounded buffers and bounded string helpers. */
#include "keel/base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void keel_buf_init(keel_buf_t *b, size_t cap)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->cap = cap;
}

keel_status_t keel_buf_append(keel_buf_t *b, const void *p, size_t n)
{
    if (n > b->cap || b->len > b->cap - n)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "buffer limit of %zu bytes exceeded", b->cap);
    size_t need = b->len + n + 1;
    if (need > b->alloc) {
        size_t a = b->alloc ? b->alloc : 256;
        while (a < need)
            a *= 2;
        if (a > b->cap + 1)
            a = b->cap + 1;
        /* Grow by copy so a secret never lingers in a block realloc released. */
        uint8_t *d = malloc(a);
        if (d == NULL)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        if (b->data != NULL) {
            memcpy(d, b->data, b->len);
            keel_wipe(b->data, b->alloc);
            free(b->data);
        }
        b->data = d;
        b->alloc = a;
    }
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return KEEL_OK;
}

static keel_status_t buf_vprintf(keel_buf_t *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static keel_status_t buf_vprintf(keel_buf_t *b, const char *fmt, va_list ap)
{
    char tmp[1024];
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    if (n < 0) {
        va_end(again);
        keel_wipe(tmp, sizeof tmp);
        return keel_errorf(KEEL_ERR_FORMAT, "formatting failed");
    }
    if ((size_t)n < sizeof tmp) {
        va_end(again);
        keel_status_t st = keel_buf_append(b, tmp, (size_t)n);
        keel_wipe(tmp, sizeof tmp);
        return st;
    }
    char *big = malloc((size_t)n + 1);
    if (big == NULL) {
        va_end(again);
        keel_wipe(tmp, sizeof tmp);
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    (void)vsnprintf(big, (size_t)n + 1, fmt, again);
    va_end(again);
    keel_status_t st = keel_buf_append(b, big, (size_t)n);
    keel_wipe(big, (size_t)n + 1);
    free(big);
    keel_wipe(tmp, sizeof tmp);
    return st;
}

keel_status_t keel_buf_printf(keel_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    keel_status_t st = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return st;
}

void keel_out_put(keel_out_t *o, const void *p, size_t n)
{
    if (o->st == KEEL_OK && n > 0)
        o->st = keel_buf_append(o->b, p, n);
}

void keel_out_puts(keel_out_t *o, const char *s)
{
    keel_out_put(o, s, strlen(s));
}

void keel_out_printf(keel_out_t *o, const char *fmt, ...)
{
    if (o->st != KEEL_OK)
        return;
    va_list ap;
    va_start(ap, fmt);
    o->st = buf_vprintf(o->b, fmt, ap);
    va_end(ap);
}

void keel_buf_reset(keel_buf_t *b)
{
    if (b->data != NULL)
        keel_wipe(b->data, b->alloc);
    b->len = 0;
}

void keel_buf_free(keel_buf_t *b)
{
    if (b->data != NULL) {
        keel_wipe(b->data, b->alloc);
        free(b->data);
    }
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
}

keel_status_t keel_strlcpy(char *dst, const char *src, size_t cap)
{
    size_t n = strlen(src);
    if (cap == 0 || n >= cap)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "string of %zu bytes exceeds %zu", n, cap);
    memcpy(dst, src, n + 1);
    return KEEL_OK;
}

keel_status_t keel_snprintf(char *dst, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "formatted string exceeds %zu bytes", cap);
    return KEEL_OK;
}

keel_status_t keel_path_join(char *out, size_t cap, const char *dir, const char *name)
{
    if (cap > KEEL_PATH_MAX)
        cap = KEEL_PATH_MAX;
    if (keel_snprintf(out, cap, "%s/%s", dir, name) != KEEL_OK)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "path %s/%s is longer than %zu bytes", dir, name, cap);
    return KEEL_OK;
}

int keel_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool keel_pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return false;
            int hi = keel_hex_digit(s[i + 1]), lo = keel_hex_digit(s[i + 2]);
            if (hi < 0 || lo < 0)
                return false;
            c = hi << 4 | lo;
            i += 2;
        }
        if (c == 0 || k + 1 >= cap)
            return false;
        out[k++] = (char)c;
    }
    if (cap == 0)
        return false;
    out[k] = '\0';
    return true;
}

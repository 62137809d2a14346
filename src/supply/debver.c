/*
 * Debian version order, exactly as dpkg compares (lib/dpkg/version.c):
 * epoch numerically, then upstream version and revision by verrevcmp, where
 * runs of non-digits compare character by character (letters before other
 * characters, '~' before everything, even the end) and runs of digits
 * numerically. The test checks it against dpkg --compare-versions.
 */
#include "keel/supply.h"

#include <string.h>

typedef struct {
    unsigned long epoch;
    char upstream[KEEL_DEBVER_MAX];
    char revision[KEEL_DEBVER_MAX];
} debver_t;

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_alnum(int c)
{
    return is_digit(c) || is_alpha(c);
}

/* Splits v as dpkg's parseversion does; false for anything dpkg refuses. */
static bool split(const char *v, debver_t *out)
{
    size_t n = strlen(v);
    if (n == 0 || n >= KEEL_DEBVER_MAX)
        return false;
    memset(out, 0, sizeof *out);
    const char *colon = strchr(v, ':');
    const char *up = v;
    if (colon != NULL) {
        if (colon == v)
            return false;
        for (const char *c = v; c < colon; c++) {
            if (!is_digit((unsigned char)*c))
                return false;
            out->epoch = out->epoch * 10 + (unsigned long)(*c - '0');
            if (out->epoch > 2147483647ul)
                return false;
        }
        up = colon + 1;
    }
    const char *hyphen = strrchr(up, '-');
    size_t ulen = hyphen != NULL ? (size_t)(hyphen - up) : strlen(up);
    if (ulen == 0 || (hyphen != NULL && hyphen[1] == '\0'))
        return false;
    memcpy(out->upstream, up, ulen);
    out->upstream[ulen] = '\0';
    if (hyphen != NULL)
        memcpy(out->revision, hyphen + 1, strlen(hyphen + 1) + 1);
    if (!is_digit((unsigned char)out->upstream[0]))
        return false;
    for (const char *c = out->upstream; *c != '\0'; c++)
        if (!is_alnum((unsigned char)*c) && strchr(".-+~:", *c) == NULL)
            return false;
    for (const char *c = out->revision; *c != '\0'; c++)
        if (!is_alnum((unsigned char)*c) && strchr(".+~", *c) == NULL)
            return false;
    return true;
}

bool keel_debver_valid(const char *v)
{
    debver_t d;
    return v != NULL && split(v, &d);
}

static int order(int c)
{
    if (is_digit(c))
        return 0;
    if (is_alpha(c))
        return c;
    if (c == '~')
        return -1;
    if (c != 0)
        return c + 256;
    return 0;
}

static int verrevcmp(const char *a, const char *b)
{
    while (*a != '\0' || *b != '\0') {
        int first_diff = 0;
        while ((*a != '\0' && !is_digit((unsigned char)*a)) || (*b != '\0' && !is_digit((unsigned char)*b))) {
            int ac = order((unsigned char)*a), bc = order((unsigned char)*b);
            if (ac != bc)
                return ac - bc;
            a++;
            b++;
        }
        while (*a == '0')
            a++;
        while (*b == '0')
            b++;
        while (is_digit((unsigned char)*a) && is_digit((unsigned char)*b)) {
            if (first_diff == 0)
                first_diff = *a - *b;
            a++;
            b++;
        }
        if (is_digit((unsigned char)*a))
            return 1;
        if (is_digit((unsigned char)*b))
            return -1;
        if (first_diff != 0)
            return first_diff;
    }
    return 0;
}

int keel_debver_cmp(const char *a, const char *b)
{
    debver_t x, y;
    bool okx = a != NULL && split(a, &x), oky = b != NULL && split(b, &y);
    if (!okx || !oky) /* callers check validity first; keep a total order anyway */
        return okx == oky ? strcmp(a ? a : "", b ? b : "") : (okx ? 1 : -1);
    if (x.epoch != y.epoch)
        return x.epoch > y.epoch ? 1 : -1;
    int r = verrevcmp(x.upstream, y.upstream);
    if (r != 0)
        return r;
    return verrevcmp(x.revision, y.revision);
}

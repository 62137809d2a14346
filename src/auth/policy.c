/*
 * src/auth/policy.c - what a new password must be (5.1-1, 5.1-4): long
 * enough, not common, not the device's own names. The common list is
 * compiled in (cmake/CommonPasswords.cmake): lower case, sorted byte-wise.
 */
#include "auth_internal.h"

#include <string.h>

/* A listed word with only digits or symbols around it counts as listed when
 * what is left has at least this many bytes ("Password1234!"). */
#define POLICY_BASE_MIN 6
/* The device's names are refused only from this length on: a two-letter
 * model would otherwise refuse half of all passwords. */
#define POLICY_NAME_MIN 4

static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

/* memcmp order of p[0..n) against the NUL-terminated entry e. */
static int cmp_entry(const char *p, size_t n, const char *e)
{
    size_t elen = strlen(e);
    int c = memcmp(p, e, n < elen ? n : elen);
    if (c != 0)
        return c;
    return n < elen ? -1 : n > elen ? 1 : 0;
}

bool auth_common_contains(const char *p, size_t n)
{
    size_t lo = 0, hi = keel_auth_common_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_entry(p, n, keel_auth_common[mid]);
        if (c == 0)
            return true;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return false;
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* ASCII punctuation and space; bytes of UTF-8 sequences are not symbols. */
static bool is_symbol(unsigned char c)
{
    return c >= 0x20 && c < 0x7f && !is_digit(c) && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z');
}

/* Is the middle of p, with what `strip` accepts cut from both ends, a listed
 * word of at least POLICY_BASE_MIN bytes? */
static bool listed_base(const char *p, size_t n, bool digits_too)
{
    size_t b = 0, e = n;
    while (b < e && (is_symbol((unsigned char)p[b]) || (digits_too && is_digit((unsigned char)p[b]))))
        b++;
    while (e > b && (is_symbol((unsigned char)p[e - 1]) || (digits_too && is_digit((unsigned char)p[e - 1]))))
        e--;
    if (e - b < POLICY_BASE_MIN || (b == 0 && e == n))
        return false;
    return auth_common_contains(p + b, e - b);
}

static bool is_common(const char *low, size_t n)
{
    return auth_common_contains(low, n) || listed_base(low, n, true) || listed_base(low, n, false);
}

/* Does low[0..n) contain `name` (compared in lower case)? */
static bool contains_name(const char *low, size_t n, const char *name)
{
    size_t m = name != NULL ? strlen(name) : 0;
    if (m < POLICY_NAME_MIN || m > n)
        return false;
    for (size_t i = 0; i + m <= n; i++) {
        size_t j = 0;
        while (j < m && (unsigned char)low[i + j] == lower((unsigned char)name[j]))
            j++;
        if (j == m)
            return true;
    }
    return false;
}

static keel_status_t refuse(char *why, const char **code, const char *c, const char *sentence)
{
    if (code != NULL)
        *code = c;
    if (why != NULL && keel_strlcpy(why, sentence, KEEL_AUTH_WHY_MAX) != KEEL_OK)
        why[0] = '\0';
    return keel_errorf(KEEL_ERR_ARG, "auth: the new password was refused (%s)", c);
}

keel_status_t keel_auth_policy_check(const keel_auth_t *a, const char *pw, size_t len, char *why,
                                     const char **code)
{
    if (code != NULL)
        *code = NULL;
    if (why != NULL)
        why[0] = '\0';
    if (a == NULL || (pw == NULL && len > 0))
        return keel_errorf(KEEL_ERR_ARG, "auth policy: missing argument");
    if (len < KEEL_AUTH_PASSWORD_MIN)
        return refuse(why, code, "too_short", "The password must be at least 10 characters long.");
    if (len > KEEL_AUTH_PASSWORD_MAX)
        return refuse(why, code, "too_long", "The password must be at most 128 bytes long.");

    char low[KEEL_AUTH_PASSWORD_MAX];
    for (size_t i = 0; i < len; i++)
        low[i] = (char)lower((unsigned char)pw[i]);
    keel_status_t st = KEEL_OK;
    if (is_common(low, len))
        st = refuse(why, code, "common", "This password is too common and easy to guess; choose another one.");
    else if (contains_name(low, len, a->cfg.serial))
        st = refuse(why, code, "contains_serial", "The password must not contain the device's serial number.");
    else if (contains_name(low, len, a->cfg.device_id))
        st = refuse(why, code, "contains_id", "The password must not contain the device ID.");
    else if (contains_name(low, len, a->cfg.model))
        st = refuse(why, code, "contains_model", "The password must not contain the device's model name.");
    keel_wipe(low, sizeof low);
    return st;
}

/* The fleet updater's pure part (updater.h): no I/O, no clock, no randomness
 * of its own, so tests/unit/test_updater.c can pin every rule. */
#include "updater.h"

#include "keel/link.h"
#include "keel/update.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <string.h>

#define RETRY_BASE_S 30.0 /* first retry window after a failed check or download */

static bool hex_lower(const char *in, size_t want, char *out)
{
    if (strlen(in) != want)
        return false;
    for (size_t i = 0; i < want; i++) {
        char c = in[i];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
        out[i] = c;
    }
    out[want] = '\0';
    return true;
}

keel_status_t keeld_offer_parse(const void *json, size_t len, uint64_t size_cap, keeld_offer_t *out)
{
    if (json == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "offer: missing argument");
    memset(out, 0, sizeof *out);
    if (len > KEELD_OFFER_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "offer: %zu bytes, over %u", len, KEELD_OFFER_MAX);
    json_error_t e;
    json_t *j = json_loadb(json, len, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL)
        return keel_errorf(KEEL_ERR_FORMAT, "offer: not JSON: %s", e.text);
    keel_status_t st = KEEL_OK;
    const char *k;
    json_t *v;
    static const char *const known[] = {"campaign", "version", "security_version", "size", "sha256", "security"};
    if (!json_is_object(j)) {
        st = keel_errorf(KEEL_ERR_FORMAT, "offer: not a JSON object");
    } else {
        json_object_foreach(j, k, v) {
            bool ok = false;
            for (size_t i = 0; i < sizeof known / sizeof known[0] && !ok; i++)
                ok = strcmp(k, known[i]) == 0;
            if (!ok) {
                st = keel_errorf(KEEL_ERR_FORMAT, "offer: unknown field \"%.32s\"", k);
                break;
            }
        }
    }
    json_t *c = json_object_get(j, "campaign"), *ver = json_object_get(j, "version"),
           *sv = json_object_get(j, "security_version"), *sz = json_object_get(j, "size"),
           *sha = json_object_get(j, "sha256"), *sec = json_object_get(j, "security");
    if (st != KEEL_OK) {
    } else if (!json_is_string(c) || !hex_lower(json_string_value(c), KEELD_CAMPAIGN_LEN, out->campaign)) {
        st = keel_errorf(KEEL_ERR_FORMAT, "offer: campaign must be %d hex characters", KEELD_CAMPAIGN_LEN);
    } else if (!json_is_string(ver) || json_string_length(ver) > KEEL_SLOT_VERSION_MAX ||
               strlen(json_string_value(ver)) != json_string_length(ver) || !keel_semver_ok(json_string_value(ver))) {
        st = keel_errorf(KEEL_ERR_FORMAT, "offer: version must be SemVer of at most %d characters",
                         KEEL_SLOT_VERSION_MAX);
    } else if (!json_is_integer(sv) || json_integer_value(sv) < 0 || json_integer_value(sv) > (json_int_t)UINT32_MAX) {
        st = keel_errorf(KEEL_ERR_FORMAT, "offer: security_version must be an integer 0..4294967295");
    } else if (!json_is_integer(sz) || json_integer_value(sz) < 1) {
        st = keel_errorf(KEEL_ERR_FORMAT, "offer: size must be a positive integer");
    } else if ((uint64_t)json_integer_value(sz) > size_cap) {
        st = keel_errorf(KEEL_ERR_TOO_LARGE, "offer: a bundle of %lld bytes is over the cap of %llu",
                         (long long)json_integer_value(sz), (unsigned long long)size_cap);
    } else if (!json_is_string(sha) || !hex_lower(json_string_value(sha), 64, out->sha256)) {
        st = keel_errorf(KEEL_ERR_FORMAT, "offer: sha256 must be 64 hex characters");
    } else if (!json_is_boolean(sec)) {
        st = keel_errorf(KEEL_ERR_FORMAT, "offer: security must be true or false");
    } else {
        memcpy(out->version, json_string_value(ver), json_string_length(ver) + 1);
        out->security_version = (uint32_t)json_integer_value(sv);
        out->size = (uint64_t)json_integer_value(sz);
        out->security = json_is_true(sec);
    }
    json_decref(j);
    if (st != KEEL_OK)
        memset(out, 0, sizeof *out);
    return st;
}

keeld_offer_verdict_t keeld_offer_decide(const keeld_offer_t *o, const char *running, const char *pending,
                                         bool automatic, const char *postpone_until, const char *today)
{
    if ((running != NULL && strcmp(running, o->version) == 0) || (pending != NULL && strcmp(pending, o->version) == 0))
        return KEELD_OFFER_IGNORE;
    if (!automatic)
        return KEELD_OFFER_POSTPONE;
    if (postpone_until != NULL && postpone_until[0] != '\0' && (today == NULL || strcmp(today, postpone_until) < 0))
        return KEELD_OFFER_POSTPONE;
    return KEELD_OFFER_INSTALL;
}

static double unit(double u)
{
    return u >= 0 && u < 1 ? u : 0; /* also NaN */
}

double keeld_check_delay(double interval, double jitter, double u)
{
    double lo = interval - jitter, hi = interval + jitter;
    if (lo < 1)
        lo = 1;
    if (hi < lo)
        hi = lo;
    return lo + unit(u) * (hi - lo);
}

double keeld_first_check_delay(double first, double u)
{
    return first > 0 ? unit(u) * first : 0;
}

double keeld_retry_delay(unsigned failures, double cap, double u)
{
    if (cap < RETRY_BASE_S)
        cap = RETRY_BASE_S;
    keel_backoff_t b = {.base_s = RETRY_BASE_S, .cap_s = cap};
    return keel_backoff_delay(&b, failures > 0 ? failures - 1 : 0, unit(u));
}

void keeld_progress_start(keeld_progress_t *p, uint64_t total, double now)
{
    p->total = total;
    p->last_bytes = 0;
    p->last_quarter = 0;
    p->last_time = now;
}

bool keeld_progress_due(keeld_progress_t *p, uint64_t bytes, double now)
{
    unsigned q = 0;
    if (p->total > 0)
        q = bytes >= p->total ? KEELD_PROGRESS_QUARTERS
                              : (unsigned)((double)bytes / (double)p->total * KEELD_PROGRESS_QUARTERS);
    bool due = q > p->last_quarter || (now - p->last_time >= KEELD_PROGRESS_EVERY_S && bytes > p->last_bytes);
    if (due) {
        p->last_quarter = q > p->last_quarter ? q : p->last_quarter;
        p->last_bytes = bytes;
        p->last_time = now;
    }
    return due;
}

static bool host_name_ok(const char *h, size_t n)
{
    if (n == 0 || n > KEELD_UPDATE_HOST_MAX || h[0] == '-' || h[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return false;
    }
    return true;
}

keel_status_t keeld_update_server_parse(const char *url, char host[KEELD_UPDATE_HOST_MAX + 1], unsigned *port,
                                        bool *v6)
{
    static const char scheme[] = "https://";
    if (url == NULL || host == NULL || port == NULL || v6 == NULL)
        return keel_errorf(KEEL_ERR_ARG, "update.server: missing argument");
    if (strncmp(url, scheme, sizeof scheme - 1) != 0)
        return keel_errorf(KEEL_ERR_CONFIG, "update.server must start with https://");
    const char *h = url + sizeof scheme - 1, *end, *rest;
    *v6 = h[0] == '[';
    if (*v6) {
        end = strchr(h, ']');
        if (end == NULL)
            return keel_errorf(KEEL_ERR_CONFIG, "update.server: unclosed [ in the address");
        h++;
        rest = end + 1;
    } else {
        end = h + strcspn(h, ":/?#@");
        rest = end;
    }
    size_t n = (size_t)(end - h);
    if (n == 0 || n > KEELD_UPDATE_HOST_MAX)
        return keel_errorf(KEEL_ERR_CONFIG, "update.server has no usable host");
    memcpy(host, h, n);
    host[n] = '\0';
    unsigned char a[16];
    if (*v6 ? inet_pton(AF_INET6, host, a) != 1 : !host_name_ok(host, n))
        return keel_errorf(KEEL_ERR_CONFIG, "update.server: \"%.64s\" is not a host name or address", host);
    *port = 443;
    if (*rest == ':') {
        unsigned long p = 0;
        const char *d = rest + 1;
        if (*d == '\0')
            return keel_errorf(KEEL_ERR_CONFIG, "update.server: empty port");
        for (; *d >= '0' && *d <= '9' && p <= 65535; d++)
            p = p * 10 + (unsigned long)(*d - '0');
        if (p == 0 || p > 65535)
            return keel_errorf(KEEL_ERR_CONFIG, "update.server: bad port");
        *port = (unsigned)p;
        rest = d;
    }
    if (*rest != '\0')
        return keel_errorf(KEEL_ERR_CONFIG, "update.server must be https://host[:port] without a path");
    return KEEL_OK;
}

/*
 * The pure parts of keel-fleetd's operator API (admin_logic.h): nothing here
 * does I/O or reads the clock.
 */
#include "admin_logic.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- tokens ------------------------------------------------------------------------------------ */

static bool name_char(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-' || c == '@';
}

bool fleetd_token_name_ok(const char *name)
{
    if (name == NULL || name[0] == '\0' || name[0] == '.')
        return false;
    size_t n = strnlen(name, FLEETD_TOKEN_NAME_MAX + 1);
    if (n > FLEETD_TOKEN_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!name_char(name[i]))
            return false;
    return true;
}

const char *fleetd_role_name(fleetd_role_t r)
{
    return r == FLEETD_ROLE_ADMIN ? "admin" : "read";
}

/* The next field of a line: skips blanks, returns its start and length. */
static const char *field(const char **p, const char *end, size_t *len)
{
    while (*p < end && (**p == ' ' || **p == '\t'))
        (*p)++;
    const char *s = *p;
    while (*p < end && **p != ' ' && **p != '\t')
        (*p)++;
    *len = (size_t)(*p - s);
    return *len > 0 ? s : NULL;
}

static keel_status_t token_line(const char *p, const char *end, unsigned lineno, fleetd_token_t *t)
{
    size_t ln, lr, lh, lx;
    const char *name = field(&p, end, &ln);
    const char *role = field(&p, end, &lr);
    const char *hex = field(&p, end, &lh);
    const char *extra = field(&p, end, &lx);
    if (name == NULL || role == NULL || hex == NULL || extra != NULL)
        return keel_errorf(KEEL_ERR_FORMAT, "tokens line %u: not \"NAME ROLE SHA256HEX\"", lineno);
    if (ln > FLEETD_TOKEN_NAME_MAX)
        return keel_errorf(KEEL_ERR_FORMAT, "tokens line %u: the name is longer than %d", lineno,
                           FLEETD_TOKEN_NAME_MAX);
    memcpy(t->name, name, ln);
    t->name[ln] = '\0';
    if (!fleetd_token_name_ok(t->name))
        return keel_errorf(KEEL_ERR_FORMAT, "tokens line %u: a name is [A-Za-z0-9._@-]", lineno);
    if (lr == 5 && memcmp(role, "admin", 5) == 0)
        t->role = FLEETD_ROLE_ADMIN;
    else if (lr == 4 && memcmp(role, "read", 4) == 0)
        t->role = FLEETD_ROLE_READ;
    else
        return keel_errorf(KEEL_ERR_FORMAT, "tokens line %u: the role is admin or read", lineno);
    if (lh != 2 * KEEL_SHA256_LEN)
        return keel_errorf(KEEL_ERR_FORMAT, "tokens line %u: the hash is 64 hex digits", lineno);
    for (size_t i = 0; i < KEEL_SHA256_LEN; i++) {
        int hi = keel_hex_digit(hex[2 * i]), lo = keel_hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return keel_errorf(KEEL_ERR_FORMAT, "tokens line %u: the hash is 64 hex digits", lineno);
        t->sha256[i] = (uint8_t)(hi << 4 | lo);
    }
    return KEEL_OK;
}

keel_status_t fleetd_tokens_parse(const char *text, size_t len, fleetd_token_t *out, size_t cap, size_t *n)
{
    if (text == NULL || n == NULL || (out == NULL && cap > 0))
        return keel_errorf(KEEL_ERR_ARG, "tokens: no input");
    *n = 0;
    if (len > FLEETD_TOKENS_FILE_MAX)
        return keel_errorf(KEEL_ERR_FORMAT, "tokens: the file is larger than %u bytes", FLEETD_TOKENS_FILE_MAX);
    if (memchr(text, '\0', len) != NULL)
        return keel_errorf(KEEL_ERR_FORMAT, "tokens: the file holds a NUL byte");
    const char *p = text, *end = text + len;
    unsigned lineno = 0;
    size_t count = 0;
    while (p < end) {
        lineno++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl != NULL ? nl : end;
        if (le > p && le[-1] == '\r')
            le--;
        const char *q = p;
        while (q < le && (*q == ' ' || *q == '\t'))
            q++;
        if (q < le && *q != '#') {
            if (count == cap)
                return keel_errorf(KEEL_ERR_FORMAT, "tokens line %u: more than %zu tokens", lineno, cap);
            keel_status_t st = token_line(q, le, lineno, &out[count]);
            if (st != KEEL_OK)
                return st;
            for (size_t i = 0; i < count; i++)
                if (strcmp(out[i].name, out[count].name) == 0)
                    return keel_errorf(KEEL_ERR_FORMAT, "tokens line %u: the name %s is there already", lineno,
                                       out[count].name);
            count++;
        }
        p = nl != NULL ? nl + 1 : end;
    }
    *n = count;
    return KEEL_OK;
}

bool fleetd_token_match(const fleetd_token_t *v, size_t n, const char *tok, size_t len, size_t *which)
{
    uint8_t d[KEEL_SHA256_LEN];
    keel_sha256(tok, len, d);
    size_t found = 0;
    unsigned hit = 0;
    for (size_t i = 0; i < n; i++) {
        /* No branch on the outcome: every entry is compared, the first match is kept by a mask. */
        unsigned eq = (unsigned)keel_ct_equal(d, v[i].sha256, sizeof d) & 1u;
        size_t take = (size_t)0 - (size_t)(eq & (hit ^ 1u));
        found = (found & ~take) | (i & take);
        hit |= eq;
    }
    keel_wipe(d, sizeof d);
    if (which != NULL)
        *which = found;
    return hit != 0;
}

static bool token68(char c)
{
    return isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

keel_status_t fleetd_bearer_parse(const char *header, const char **tok, size_t *len)
{
    if (header == NULL || strncasecmp(header, "Bearer ", 7) != 0)
        return keel_errorf(KEEL_ERR_FORMAT, "not a bearer token");
    const char *p = header + 7;
    while (*p == ' ')
        p++;
    const char *s = p;
    while (token68(*p))
        p++;
    while (*p == '=')
        p++;
    size_t n = (size_t)(p - s);
    while (*p == ' ' || *p == '\t')
        p++;
    if (n == 0 || n > FLEETD_TOKEN_TEXT_MAX || *p != '\0')
        return keel_errorf(KEEL_ERR_FORMAT, "a malformed bearer token");
    *tok = s;
    *len = n;
    return KEEL_OK;
}

keel_status_t fleetd_b64url(const uint8_t *in, size_t n, char *out, size_t cap)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t need = n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1) + 1;
    if (out == NULL || cap < need)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "base64url: %zu bytes do not fit", n);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        size_t left = n - i;
        if (left > 1)
            v |= (uint32_t)in[i + 1] << 8;
        if (left > 2)
            v |= in[i + 2];
        out[o++] = al[v >> 18 & 63];
        out[o++] = al[v >> 12 & 63];
        if (left > 1)
            out[o++] = al[v >> 6 & 63];
        if (left > 2)
            out[o++] = al[v & 63];
    }
    out[o] = '\0';
    return KEEL_OK;
}

keel_status_t fleetd_token_make(const uint8_t rnd[FLEETD_TOKEN_RANDOM], const char *name, fleetd_role_t role,
                                char tok[FLEETD_TOKEN_LEN + 1], char line[FLEETD_TOKEN_LINE_MAX])
{
    if (!fleetd_token_name_ok(name))
        return keel_errorf(KEEL_ERR_ARG, "a token's name is 1..%d of [A-Za-z0-9._@-], not starting with '.'",
                           FLEETD_TOKEN_NAME_MAX);
    memcpy(tok, FLEETD_TOKEN_PREFIX, 4); /* NOLINT(bugprone-not-null-terminated-result): fleetd_b64url ends the token */
    keel_status_t st = fleetd_b64url(rnd, FLEETD_TOKEN_RANDOM, tok + 4, FLEETD_TOKEN_LEN + 1 - 4);
    uint8_t d[KEEL_SHA256_LEN];
    char hex[2 * KEEL_SHA256_LEN + 1];
    if (st == KEEL_OK) {
        keel_sha256(tok, strlen(tok), d);
        st = keel_hex_encode(d, sizeof d, hex, sizeof hex);
    }
    if (st == KEEL_OK)
        st = keel_snprintf(line, FLEETD_TOKEN_LINE_MAX, "%s %s %s\n", name, fleetd_role_name(role), hex);
    keel_wipe(d, sizeof d);
    if (st != KEEL_OK)
        keel_wipe(tok, FLEETD_TOKEN_LEN + 1);
    return st;
}

/* ---- failed tokens per source address ------------------------------------------------------------ */

static const fleetd_rl_slot_t *rl_find(const fleetd_ratelimit_t *rl, const char *addr)
{
    for (size_t i = 0; i < FLEETD_RL_SLOTS; i++)
        if (rl->s[i].fails > 0 && strcmp(rl->s[i].addr, addr) == 0)
            return &rl->s[i];
    return NULL;
}

unsigned fleetd_ratelimit_wait(const fleetd_ratelimit_t *rl, const char *addr, int64_t now)
{
    const fleetd_rl_slot_t *s = rl_find(rl, addr);
    if (s == NULL || s->fails < FLEETD_RL_FAILS || now >= s->start + FLEETD_RL_WINDOW_S)
        return 0;
    int64_t w = s->start + FLEETD_RL_WINDOW_S - now;
    return w > FLEETD_RL_WINDOW_S ? FLEETD_RL_WINDOW_S : (unsigned)w;
}

unsigned fleetd_ratelimit_fail(fleetd_ratelimit_t *rl, const char *addr, int64_t now)
{
    fleetd_rl_slot_t *s = (fleetd_rl_slot_t *)rl_find(rl, addr);
    if (s == NULL) {
        /* a free slot, else the one whose window started first */
        s = &rl->s[0];
        for (size_t i = 0; i < FLEETD_RL_SLOTS && s->fails > 0; i++)
            if (rl->s[i].fails == 0 || rl->s[i].start < s->start)
                s = &rl->s[i];
        memset(s, 0, sizeof *s);
        snprintf(s->addr, sizeof s->addr, "%s", addr);
    }
    if (s->fails == 0 || now >= s->start + FLEETD_RL_WINDOW_S || now < s->start) {
        s->start = now;
        s->fails = 0;
    }
    if (s->fails < UINT32_MAX)
        s->fails++;
    return s->fails;
}

/* ---- routing --------------------------------------------------------------------------------------- */

static bool word_ok(const char *s, size_t max, const char *extra)
{
    if (s == NULL || s[0] == '\0' || s[0] == '.')
        return false;
    size_t n = strnlen(s, max + 1);
    if (n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && strchr(extra, s[i]) == NULL)
            return false;
    return true;
}

bool fleetd_device_id_ok(const char *s)
{
    return word_ok(s, KEEL_FLEET_ID_MAX, "._:-");
}

bool fleetd_model_ok(const char *s)
{
    return word_ok(s, KEEL_FLEET_MODEL_MAX, "._-");
}

bool fleetd_campaign_id_ok(const char *s)
{
    if (s == NULL || strlen(s) != KEEL_FLEET_CAMPAIGN_MAX)
        return false;
    for (const char *p = s; *p != '\0'; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

/* Splits path into up to 3 non-empty segments; false for more or an empty one. */
static bool segments(const char *path, char seg[3][KEEL_FLEET_ID_MAX + 1], size_t *n)
{
    *n = 0;
    const char *p = path;
    if (*p == '\0')
        return false;
    for (;;) {
        const char *e = strchr(p, '/');
        size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
        if (len == 0 || len > KEEL_FLEET_ID_MAX || *n == 3)
            return false;
        memcpy(seg[*n], p, len);
        seg[*n][len] = '\0';
        (*n)++;
        if (e == NULL)
            return true;
        p = e + 1;
    }
}

static int want(fleetd_method_t m, fleetd_method_t need, const char *allow, fleetd_route_t *out,
                fleetd_route_kind_t kind)
{
    out->kind = kind;
    out->write = need == FLEETD_M_POST;
    out->allow = allow;
    return m == need ? 0 : 405;
}

int fleetd_admin_route(fleetd_method_t m, const char *path, fleetd_route_t *out)
{
    char seg[3][KEEL_FLEET_ID_MAX + 1];
    size_t n = 0;
    memset(out, 0, sizeof *out);
    if (path == NULL || !segments(path, seg, &n))
        return 404;
    const char *a = seg[0];
    if (n == 1 && strcmp(a, "status") == 0)
        return want(m, FLEETD_M_GET, "GET", out, FLEETD_R_STATUS);
    if (n == 1 && strcmp(a, "alerts") == 0)
        return want(m, FLEETD_M_GET, "GET", out, FLEETD_R_ALERTS);
    if (n == 1 && strcmp(a, "devices") == 0)
        return want(m, FLEETD_M_GET, "GET", out, FLEETD_R_DEVICES);
    if (n == 1 && strcmp(a, "campaigns") == 0) {
        if (m == FLEETD_M_POST)
            return want(m, FLEETD_M_POST, "GET, POST", out, FLEETD_R_CAMPAIGN_CREATE);
        return want(m, FLEETD_M_GET, "GET, POST", out, FLEETD_R_CAMPAIGNS);
    }
    if (strcmp(a, "devices") == 0 && n >= 2) {
        if (n == 2 && strcmp(seg[1], "import") == 0 && m == FLEETD_M_POST)
            return want(m, FLEETD_M_POST, "POST", out, FLEETD_R_DEVICES_IMPORT);
        if (!fleetd_device_id_ok(seg[1]))
            return 404;
        memcpy(out->id, seg[1], sizeof out->id);
        if (n == 2)
            return want(m, FLEETD_M_GET, "GET", out, FLEETD_R_DEVICE);
        if (strcmp(seg[2], "export") == 0)
            return want(m, FLEETD_M_GET, "GET", out, FLEETD_R_DEVICE_EXPORT);
        if (strcmp(seg[2], "revoke") == 0)
            return want(m, FLEETD_M_POST, "POST", out, FLEETD_R_DEVICE_REVOKE);
        if (strcmp(seg[2], "erase") == 0)
            return want(m, FLEETD_M_POST, "POST", out, FLEETD_R_DEVICE_ERASE);
        memset(out, 0, sizeof *out);
        return 404;
    }
    if (strcmp(a, "campaigns") == 0 && n >= 2) {
        if (!fleetd_campaign_id_ok(seg[1]))
            return 404;
        memcpy(out->id, seg[1], KEEL_FLEET_CAMPAIGN_MAX + 1);
        if (n == 2)
            return want(m, FLEETD_M_GET, "GET", out, FLEETD_R_CAMPAIGN);
        if (strcmp(seg[2], "pause") == 0)
            return want(m, FLEETD_M_POST, "POST", out, FLEETD_R_CAMPAIGN_PAUSE);
        if (strcmp(seg[2], "resume") == 0)
            return want(m, FLEETD_M_POST, "POST", out, FLEETD_R_CAMPAIGN_RESUME);
        memset(out, 0, sizeof *out);
        return 404;
    }
    return 404;
}

/* ---- query strings ------------------------------------------------------------------------------------ */

/* Percent-decodes [s, s+n) into out (cap with NUL); printable ASCII only. */
static bool decode(const char *s, size_t n, char *out, size_t cap)
{
    if (!keel_pct_decode(s, n, out, cap))
        return false;
    for (const unsigned char *p = (const unsigned char *)out; *p != '\0'; p++)
        if (*p < 0x20 || *p > 0x7E)
            return false;
    return true;
}

keel_status_t fleetd_query_parse(const char *q, const char *const *allowed, fleetd_query_t *out)
{
    memset(out, 0, sizeof *out);
    if (q == NULL || *q == '\0')
        return KEEL_OK;
    size_t total = strnlen(q, FLEETD_QUERY_TEXT_MAX + 1);
    if (total > FLEETD_QUERY_TEXT_MAX)
        return keel_errorf(KEEL_ERR_FORMAT, "the query is longer than %d bytes", FLEETD_QUERY_TEXT_MAX);
    const char *p = q;
    for (;;) {
        const char *amp = strchr(p, '&');
        size_t len = amp != NULL ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (len == 0 || eq == NULL)
            return keel_errorf(KEEL_ERR_FORMAT, "the query holds a part that is not key=value");
        if (out->n == FLEETD_QUERY_PARAMS_MAX)
            return keel_errorf(KEEL_ERR_FORMAT, "more than %d query parameters", FLEETD_QUERY_PARAMS_MAX);
        char *key = out->p[out->n].key, *val = out->p[out->n].value;
        if (!decode(p, (size_t)(eq - p), key, FLEETD_QUERY_KEY_MAX + 1) || key[0] == '\0')
            return keel_errorf(KEEL_ERR_FORMAT, "a malformed query parameter name");
        bool known = false;
        for (size_t i = 0; allowed != NULL && allowed[i] != NULL; i++)
            known = known || strcmp(allowed[i], key) == 0;
        if (!known)
            return keel_errorf(KEEL_ERR_FORMAT, "unknown query parameter \"%s\"", key);
        for (size_t i = 0; i < out->n; i++)
            if (strcmp(out->p[i].key, key) == 0)
                return keel_errorf(KEEL_ERR_FORMAT, "query parameter \"%s\" given twice", key);
        if (!decode(eq + 1, len - (size_t)(eq + 1 - p), val, FLEETD_QUERY_VALUE_MAX + 1))
            return keel_errorf(KEEL_ERR_FORMAT, "query parameter \"%s\": a malformed or overlong value", key);
        out->n++;
        if (amp == NULL)
            return KEEL_OK;
        p = amp + 1;
    }
}

const char *fleetd_query_get(const fleetd_query_t *q, const char *key)
{
    for (size_t i = 0; i < q->n; i++)
        if (strcmp(q->p[i].key, key) == 0)
            return q->p[i].value;
    return NULL;
}

keel_status_t fleetd_query_u64(const fleetd_query_t *q, const char *key, uint64_t min, uint64_t max, uint64_t def,
                               uint64_t *out)
{
    const char *v = fleetd_query_get(q, key);
    if (v == NULL) {
        *out = def;
        return KEEL_OK;
    }
    uint64_t x = 0;
    size_t n = strlen(v);
    if (n == 0 || n > 19)
        return keel_errorf(KEEL_ERR_FORMAT, "%s must be a number from %llu to %llu", key, (unsigned long long)min,
                           (unsigned long long)max);
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return keel_errorf(KEEL_ERR_FORMAT, "%s must be a number from %llu to %llu", key,
                               (unsigned long long)min, (unsigned long long)max);
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    if (x < min || x > max)
        return keel_errorf(KEEL_ERR_FORMAT, "%s must be a number from %llu to %llu", key, (unsigned long long)min,
                           (unsigned long long)max);
    *out = x;
    return KEEL_OK;
}

keel_status_t fleetd_query_bool(const fleetd_query_t *q, const char *key, bool def, bool *out)
{
    const char *v = fleetd_query_get(q, key);
    if (v == NULL)
        *out = def;
    else if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0)
        *out = true;
    else if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0)
        *out = false;
    else
        return keel_errorf(KEEL_ERR_FORMAT, "%s must be 0 or 1", key);
    return KEEL_OK;
}

keel_status_t fleetd_campaign_params(const char *query, unsigned def_fail_permille, fleetd_campaign_params_t *out)
{
    static const char *const keys[] = {"model", "percent", "security", "fail_permille", NULL};
    fleetd_query_t q;
    uint64_t pct = 0, fp = 0;
    memset(out, 0, sizeof *out);
    keel_status_t st = fleetd_query_parse(query, keys, &q);
    const char *model = st == KEEL_OK ? fleetd_query_get(&q, "model") : NULL;
    if (st == KEEL_OK && !fleetd_model_ok(model))
        st = keel_errorf(KEEL_ERR_FORMAT, "model is required: 1..%d of [A-Za-z0-9._-]", KEEL_FLEET_MODEL_MAX);
    if (st == KEEL_OK)
        st = fleetd_query_u64(&q, "percent", 1, 100, 100, &pct);
    if (st == KEEL_OK)
        st = fleetd_query_bool(&q, "security", false, &out->security);
    if (st == KEEL_OK)
        st = fleetd_query_u64(&q, "fail_permille", 1, 1000, def_fail_permille, &fp);
    if (st == KEEL_OK && (fp < 1 || fp > 1000))
        st = keel_errorf(KEEL_ERR_FORMAT, "fail_permille must be a number from 1 to 1000");
    if (st != KEEL_OK)
        return st;
    memcpy(out->model, model, strlen(model) + 1);
    out->percent = (unsigned)pct;
    out->fail_permille = (unsigned)fp;
    return KEEL_OK;
}

keel_status_t fleetd_alert_params(const char *query, fleetd_alert_params_t *out)
{
    static const char *const keys[] = {"since", "kind", "device", "limit", NULL};
    fleetd_query_t q;
    uint64_t since = 0, limit = 0;
    memset(out, 0, sizeof *out);
    keel_status_t st = fleetd_query_parse(query, keys, &q);
    if (st == KEEL_OK)
        st = fleetd_query_u64(&q, "since", 0, (uint64_t)INT64_MAX, 0, &since);
    if (st == KEEL_OK)
        st = fleetd_query_u64(&q, "limit", 1, FLEETD_ALERTS_LIMIT_MAX, FLEETD_ALERTS_LIMIT_DEFAULT, &limit);
    const char *kind = st == KEEL_OK ? fleetd_query_get(&q, "kind") : NULL;
    const char *dev = st == KEEL_OK ? fleetd_query_get(&q, "device") : NULL;
    if (st == KEEL_OK && kind != NULL && !word_ok(kind, sizeof out->kind - 1, "_-"))
        st = keel_errorf(KEEL_ERR_FORMAT, "kind must be 1..32 of [A-Za-z0-9_-]");
    if (st == KEEL_OK && dev != NULL && !fleetd_device_id_ok(dev))
        st = keel_errorf(KEEL_ERR_FORMAT, "device is not a device id");
    if (st != KEEL_OK)
        return st;
    out->since = (int64_t)since;
    out->limit = (unsigned)limit;
    if (kind != NULL)
        memcpy(out->kind, kind, strlen(kind) + 1);
    if (dev != NULL)
        memcpy(out->device, dev, strlen(dev) + 1);
    return KEEL_OK;
}

keel_status_t fleetd_device_params(const char *query, fleetd_device_params_t *out)
{
    static const char *const keys[] = {"model", "after", "limit", NULL};
    fleetd_query_t q;
    uint64_t limit = 0;
    memset(out, 0, sizeof *out);
    keel_status_t st = fleetd_query_parse(query, keys, &q);
    if (st == KEEL_OK)
        st = fleetd_query_u64(&q, "limit", 1, KEEL_FLEET_LIST_MAX, FLEETD_DEVICES_LIMIT_DEFAULT, &limit);
    const char *model = st == KEEL_OK ? fleetd_query_get(&q, "model") : NULL;
    const char *after = st == KEEL_OK ? fleetd_query_get(&q, "after") : NULL;
    if (st == KEEL_OK && model != NULL && !fleetd_model_ok(model))
        st = keel_errorf(KEEL_ERR_FORMAT, "model must be 1..%d of [A-Za-z0-9._-]", KEEL_FLEET_MODEL_MAX);
    if (st == KEEL_OK && after != NULL && !fleetd_device_id_ok(after))
        st = keel_errorf(KEEL_ERR_FORMAT, "after is not a device id");
    if (st != KEEL_OK)
        return st;
    out->limit = (unsigned)limit;
    if (model != NULL)
        memcpy(out->model, model, strlen(model) + 1);
    if (after != NULL)
        memcpy(out->after, after, strlen(after) + 1);
    return KEEL_OK;
}

/* ---- bodies and replies ------------------------------------------------------------------------------ */

bool fleetd_content_type_is(const char *header, const char *want)
{
    if (header == NULL)
        return false;
    while (*header == ' ')
        header++;
    size_t n = strlen(want);
    if (strncasecmp(header, want, n) != 0)
        return false;
    const char *p = header + n;
    while (*p == ' ' || *p == '\t')
        p++;
    return *p == '\0' || *p == ';';
}

keel_status_t fleetd_json_object(const char *data, size_t len, size_t cap, json_t **out)
{
    if (len > cap)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "the body is larger than %zu bytes", cap);
    json_error_t e;
    json_t *j = json_loadb(data != NULL ? data : "", len, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL)
        return keel_errorf(KEEL_ERR_FORMAT, "the body is not JSON: %.200s (line %d)", e.text, e.line);
    if (!json_is_object(j)) {
        json_decref(j);
        return keel_errorf(KEEL_ERR_FORMAT, "the body is not a JSON object");
    }
    *out = j;
    return KEEL_OK;
}

keel_status_t fleetd_action_body(const char *data, size_t len)
{
    size_t i = 0;
    while (i < len && isspace((unsigned char)data[i]))
        i++;
    if (i == len)
        return KEEL_OK;
    json_t *j = NULL;
    keel_status_t st = fleetd_json_object(data, len, FLEETD_ACTION_BODY_MAX, &j);
    if (st != KEEL_OK)
        return st;
    const char *k = NULL;
    void *it = json_object_iter(j);
    if (it != NULL)
        k = json_object_iter_key(it);
    if (k != NULL)
        st = keel_errorf(KEEL_ERR_FORMAT, "unknown field \"%.64s\"", k);
    json_decref(j);
    return st;
}

const char *fleetd_campaign_state_name(keel_fleet_campaign_state_t s)
{
    switch (s) {
    case KEEL_FLEET_CAMPAIGN_RUNNING: return "running";
    case KEEL_FLEET_CAMPAIGN_PAUSED: return "paused";
    case KEEL_FLEET_CAMPAIGN_HALTED: return "halted";
    case KEEL_FLEET_CAMPAIGN_DONE: return "done";
    }
    return "unknown";
}

static const char *device_state_name(keel_fleet_dev_state_t s)
{
    switch (s) {
    case KEEL_FLEET_DEV_REGISTERED: return "registered";
    case KEEL_FLEET_DEV_ACTIVE: return "active";
    case KEEL_FLEET_DEV_REVOKED: return "revoked";
    }
    return "unknown";
}

/* 0 (never) as null. */
static json_t *when(int64_t t)
{
    return t != 0 ? json_integer((json_int_t)t) : json_null();
}

json_t *fleetd_device_json(const keel_fleet_device_t *d)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:o, s:o, s:o, s:s?, s:o, s:I, s:I}", "id", d->id,
                     "serial", d->serial, "model", d->model, "cert_sha256", d->cert_sha256, "cert_serial",
                     d->cert_serial, "state", device_state_name(d->state), "registered", (json_int_t)d->registered,
                     "first_seen", when(d->first_seen), "last_seen", when(d->last_seen), "revoked_at",
                     when(d->revoked_at), "version", d->version[0] != '\0' ? d->version : NULL, "security_version",
                     d->security_version >= 0 ? json_integer((json_int_t)d->security_version) : json_null(),
                     "last_seq", (json_int_t)(d->last_seq > INT64_MAX ? INT64_MAX : d->last_seq), "dropped_reported",
                     (json_int_t)(d->dropped_reported > INT64_MAX ? INT64_MAX : d->dropped_reported));
}

static json_int_t cnt(uint64_t v)
{
    return (json_int_t)(v > INT64_MAX ? INT64_MAX : v);
}

json_t *fleetd_campaign_json(const keel_fleet_campaign_t *c, const keel_fleet_campaign_counts_t *k)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:s, s:I, s:i, s:b, s:i, s:s, s:I, s:I}", "id", c->id, "model",
                          c->model, "version", c->version, "security_version", (json_int_t)c->security_version,
                          "bundle_sha256", c->bundle_sha256, "bundle_size", (json_int_t)c->bundle_size, "percent",
                          (int)c->percent, "security", c->security ? 1 : 0, "fail_permille", (int)c->fail_permille,
                          "state", fleetd_campaign_state_name(c->state), "created", (json_int_t)c->created,
                          "updated", (json_int_t)c->updated);
    if (j == NULL || k == NULL)
        return j;
    json_t *first = k->first_confirmed > 0 ? json_integer((json_int_t)(k->first_confirmed - c->created)) : json_null();
    bool all = k->selected > 0 && k->confirmed >= k->selected && k->last_confirmed > 0;
    json_t *last = all ? json_integer((json_int_t)(k->last_confirmed - c->created)) : json_null();
    json_t *counts = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "selected", cnt(k->selected), "notified",
                               cnt(k->notified), "downloading", cnt(k->downloading), "installed", cnt(k->installed),
                               "confirmed", cnt(k->confirmed), "failed", cnt(k->failed), "postponed",
                               cnt(k->postponed));
    if (json_object_set_new(j, "counts", counts) != 0 ||
        json_object_set_new(j, "time_to", json_pack("{s:o, s:o}", "first_confirmed", first, "all_confirmed", last)) != 0) {
        json_decref(j);
        return NULL;
    }
    return j;
}

void fleetd_campaign_list_names(json_t *list)
{
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c) {
        json_t *s = json_object_get(c, "state");
        if (json_is_integer(s)) {
            json_int_t v = json_integer_value(s);
            const char *name = v >= KEEL_FLEET_CAMPAIGN_RUNNING && v <= KEEL_FLEET_CAMPAIGN_DONE
                                   ? fleetd_campaign_state_name((keel_fleet_campaign_state_t)v)
                                   : "unknown";
            if (json_object_set_new(c, "state", json_string(name)) != 0)
                continue;
        }
        /* where the bundle lies on the server is of no use to an operator's client */
        (void)json_object_del(c, "bundle_path");
    }
}

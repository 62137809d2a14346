/*
 * The fleet store: the registry (manifest import, revocation, versions,
 * detector state), ingest with its sequence bookkeeping, gaps and alerts;
 * and the helpers the other store files share (db_internal.h).
 */
#include "db_internal.h"
#include "keel/crypto.h"
#include "keel/fleet_store.h"
#include "keel/identity.h"

#include <ctype.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#define CERT_PEM_MAX (16u * 1024u)
#define ALERT_DETAIL_MAX (16u * 1024u)
#define ALERT_LIST_MAX 10000u
#define DEDUPE_MAX 256
#define WORD_MAX 32
#define ORG_MAX 256
#define TX_TRIES 3

/* ---- shared helpers ---------------------------------------------------------------------- */

keel_status_t keel_fleet_tx(keel_fleet_db_t *db, keel_fleet_tx_fn fn, void *arg)
{
    if (keel_fleet_db_in_tx(db))
        return fn(db, arg);
    keel_status_t st = KEEL_ERR_BUSY;
    for (int i = 0; i < TX_TRIES && st == KEEL_ERR_BUSY; i++) {
        if ((st = keel_fleet_db_begin(db)) != KEEL_OK)
            continue;
        st = fn(db, arg);
        if (st == KEEL_OK)
            st = keel_fleet_db_commit(db);
        else
            keel_fleet_db_rollback(db);
    }
    return st;
}

keel_status_t keel_fleet_col_text(const keel_fleet_val_t *v, char *dst, size_t cap)
{
    if (v->type == KEEL_FV_NULL) {
        dst[0] = '\0';
        return KEEL_OK;
    }
    if (v->type != KEEL_FV_TEXT)
        return keel_errorf(KEEL_ERR_FORMAT, "fleet store: a text column holds a number");
    if (v->len >= cap)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "fleet store: a value of %zu bytes does not fit in %zu", v->len, cap);
    memcpy(dst, v->s, v->len);
    dst[v->len] = '\0';
    return KEEL_OK;
}

bool keel_fleet_word_ok(const char *s, size_t max, bool space)
{
    if (s == NULL)
        return false;
    size_t n = strnlen(s, max + 1);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7E || (c == ' ' && !space))
            return false;
    }
    return true;
}

void keel_fleet_random_hex(char *out, size_t n)
{
    uint8_t b[32];
    static const char hex[] = "0123456789abcdef";
    if (n > sizeof b)
        n = sizeof b;
    keel_random_bytes(b, n);
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[2 * n] = '\0';
}

typedef struct {
    const char *spec;
    const char *const *names;
    size_t max, n;
    json_t *arr;
} qjson_t;

static keel_status_t qjson_row(void *arg, const keel_fleet_val_t *cols, unsigned ncols)
{
    qjson_t *q = arg;
    if (++q->n > q->max)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "fleet store: more than %zu rows", q->max);
    if (strlen(q->spec) != ncols)
        return keel_errorf(KEEL_ERR_ARG, "fleet store: %u columns for a spec of %zu", ncols, strlen(q->spec));
    json_t *o = json_object();
    if (o == NULL || json_array_append_new(q->arr, o) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    for (unsigned c = 0; c < ncols; c++) {
        const keel_fleet_val_t *v = &cols[c];
        json_t *j = NULL;
        int64_t x = 0;
        switch (q->spec[c]) {
        case '-':
            continue;
        case 'i':
        case 'b':
            if (v->type == KEEL_FV_NULL) {
                j = json_null();
                break;
            }
            if (keel_fleet_val_int(v, &x) != KEEL_OK)
                return keel_errorf(KEEL_ERR_FORMAT, "fleet store: column %s is not an integer", q->names[c]);
            j = q->spec[c] == 'b' ? json_boolean(x != 0) : json_integer((json_int_t)x);
            break;
        case 'j':
            if (v->type == KEEL_FV_TEXT) {
                j = json_loadb(v->s, v->len, JSON_REJECT_DUPLICATES, NULL);
                if (j != NULL)
                    break;
            }
            /* not JSON: kept as it is */
            __attribute__((fallthrough));
        default:
            j = v->type == KEEL_FV_TEXT ? json_stringn(v->s, v->len)
                : v->type == KEEL_FV_INT ? json_integer((json_int_t)v->i)
                                         : json_null();
        }
        if (j == NULL || json_object_set_new(o, q->names[c], j) != 0)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    return KEEL_OK;
}

keel_status_t keel_fleet_query_json(keel_fleet_db_t *db, const char *sql, const keel_fleet_val_t *params,
                                    unsigned nparams, const char *spec, const char *const *names,
                                    size_t max_rows, json_t **out)
{
    qjson_t q = {.spec = spec, .names = names, .max = max_rows, .arr = json_array()};
    if (q.arr == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_status_t st = keel_fleet_db_exec(db, sql, params, nparams, qjson_row, &q, NULL);
    if (st != KEEL_OK) {
        json_decref(q.arr);
        return st;
    }
    *out = q.arr;
    return KEEL_OK;
}

/* ---- registry ------------------------------------------------------------------------------- */

static bool id_ok(const char *id)
{
    return keel_fleet_word_ok(id, KEEL_FLEET_ID_MAX, false);
}

/* "AB:CD:..." (as the manifest writes it) or plain hex of 32 bytes, to lower-case hex. */
static bool sha256_norm(const char *in, char out[65])
{
    size_t n = strlen(in), k = 0;
    bool colons = n == 32 * 3 - 1;
    if (n != 64 && !colons)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (colons && i % 3 == 2) {
            if (in[i] != ':')
                return false;
            continue;
        }
        if (!isxdigit((unsigned char)in[i]))
            return false;
        out[k++] = (char)tolower((unsigned char)in[i]);
    }
    out[k] = '\0';
    return k == 64;
}

/* The certificate's checks; its serial (upper-case hex) into serial. */
static keel_status_t cert_check(const char *id, const char *pem, const char *sha_hex, char serial[65])
{
    size_t len = strlen(pem);
    static const char armour[] = "-----BEGIN CERTIFICATE-----"; /* the armour, no certificate: secret-scan: allow */
    if (len > CERT_PEM_MAX || strncmp(pem, armour, sizeof armour - 1) != 0)
        return keel_errorf(KEEL_ERR_FORMAT, "manifest device %s: the certificate is not one PEM certificate", id);
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    /* The block's own bytes must be exactly one DER certificate: d2i would
     * skip bytes after it inside the base64, and the registry would keep a
     * "certificate" that is not the one hashed. No PEM header either: an
     * encrypted block would make OpenSSL ask for a password on the terminal. */
    char *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    long dl = 0;
    X509 *x = NULL;
    if (b != NULL && PEM_read_bio(b, &name, &header, &der, &dl) == 1 && strcmp(name, PEM_STRING_X509) == 0 &&
        header[0] == '\0' && dl > 0) {
        const unsigned char *q = der;
        x = d2i_X509(NULL, &q, dl);
        if (x != NULL && q != der + dl) {
            X509_free(x);
            x = NULL;
        }
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    keel_status_t st = KEEL_OK;
    if (x == NULL) {
        st = keel_errorf(KEEL_ERR_FORMAT, "manifest device %s: the certificate does not parse", id);
    } else {
        char rest[256];
        int n;
        while (st == KEEL_OK && (n = BIO_read(b, rest, sizeof rest)) > 0)
            for (int i = 0; i < n; i++)
                if (!isspace((unsigned char)rest[i]))
                    st = keel_errorf(KEEL_ERR_FORMAT, "manifest device %s: more than one certificate", id);
    }
    if (st == KEEL_OK) {
        uint8_t h[KEEL_SHA256_LEN];
        char hex[65];
        keel_sha256(der, (size_t)dl, h);
        if ((st = keel_hex_encode(h, sizeof h, hex, sizeof hex)) == KEEL_OK && strcmp(hex, sha_hex) != 0)
            st = keel_errorf(KEEL_ERR_VERIFY, "manifest device %s: the certificate's SHA-256 is not cert_sha256", id);
    }
    OPENSSL_free(der);
    if (st == KEEL_OK) {
        X509_NAME *sub = X509_get_subject_name(x);
        int at = X509_NAME_get_index_by_NID(sub, NID_commonName, -1);
        const ASN1_STRING *cn = at >= 0 ? X509_NAME_ENTRY_get_data(X509_NAME_get_entry(sub, at)) : NULL;
        if (cn == NULL || (size_t)ASN1_STRING_length(cn) != strlen(id) ||
            memcmp(ASN1_STRING_get0_data(cn), id, strlen(id)) != 0 ||
            X509_NAME_get_index_by_NID(sub, NID_commonName, at) >= 0)
            st = keel_errorf(KEEL_ERR_VERIFY, "manifest device %s: the certificate's CN is not the id", id);
    }
    if (st == KEEL_OK) {
        char derived[KEEL_DEVICE_ID_LEN + 1];
        EVP_PKEY *pub = X509_get0_pubkey(x);
        if (pub == NULL || keel_identity_device_id(pub, derived) != KEEL_OK || strcmp(derived, id) != 0)
            st = keel_errorf(KEEL_ERR_VERIFY, "manifest device %s: the id is not derived from the certificate's key",
                             id);
    }
    if (st == KEEL_OK) {
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
        char *hex = bn != NULL && !BN_is_negative(bn) && !BN_is_zero(bn) ? BN_bn2hex(bn) : NULL;
        if (hex == NULL || strlen(hex) > 64)
            st = keel_errorf(KEEL_ERR_FORMAT, "manifest device %s: unusable certificate serial", id);
        else
            snprintf(serial, 65, "%s", hex);
        OPENSSL_free(hex);
        BN_free(bn);
    }
    X509_free(x);
    BIO_free(b);
    ERR_clear_error();
    return st;
}

typedef struct {
    const char *id, *serial, *model, *org, *pem;
    char sha[65], cert_serial[65];
    int64_t provisioned;
} man_dev_t;

static const char *const dev_fields[] = {"id", "serial", "model", "org", "keystore", "key_label",
                                         "cert_sha256", "provisioned", "certificate"};

static keel_status_t man_dev_parse(const json_t *d, size_t idx, man_dev_t *out)
{
    memset(out, 0, sizeof *out);
    if (!json_is_object(d))
        return keel_errorf(KEEL_ERR_FORMAT, "manifest device %zu: not an object", idx);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)d, key, v) {
        bool known = false;
        for (size_t i = 0; i < sizeof dev_fields / sizeof dev_fields[0]; i++)
            known = known || strcmp(key, dev_fields[i]) == 0;
        if (!known)
            return keel_errorf(KEEL_ERR_FORMAT, "manifest device %zu: unknown field \"%.64s\"", idx, key);
        bool is_int = strcmp(key, "provisioned") == 0;
        if (is_int ? !json_is_integer(v) : !json_is_string(v))
            return keel_errorf(KEEL_ERR_FORMAT, "manifest device %zu: \"%s\" must be %s", idx, key,
                               is_int ? "an integer" : "a string");
    }
    out->id = json_string_value(json_object_get(d, "id"));
    out->serial = json_string_value(json_object_get(d, "serial"));
    out->model = json_string_value(json_object_get(d, "model"));
    out->org = json_string_value(json_object_get(d, "org"));
    out->pem = json_string_value(json_object_get(d, "certificate"));
    const char *sha = json_string_value(json_object_get(d, "cert_sha256"));
    json_t *prov = json_object_get(d, "provisioned");
    out->provisioned = prov != NULL ? (int64_t)json_integer_value(prov) : 0;
    if (out->id == NULL || !keel_identity_id_ok(out->id))
        return keel_errorf(KEEL_ERR_FORMAT, "manifest device %zu: missing or malformed id", idx);
    if (out->serial == NULL || !keel_fleet_word_ok(out->serial, 64, false))
        return keel_errorf(KEEL_ERR_FORMAT, "manifest device %s: missing or malformed serial", out->id);
    if (out->model == NULL || !keel_identity_model_ok(out->model))
        return keel_errorf(KEEL_ERR_FORMAT, "manifest device %s: missing or malformed model", out->id);
    if (out->org != NULL && !keel_fleet_word_ok(out->org, ORG_MAX, true))
        return keel_errorf(KEEL_ERR_FORMAT, "manifest device %s: malformed org", out->id);
    if (sha == NULL || !sha256_norm(sha, out->sha))
        return keel_errorf(KEEL_ERR_FORMAT, "manifest device %s: missing or malformed cert_sha256", out->id);
    if (out->provisioned < 0)
        return keel_errorf(KEEL_ERR_FORMAT, "manifest device %s: negative provisioned time", out->id);
    if (out->pem == NULL)
        return keel_errorf(KEEL_ERR_FORMAT, "manifest device %s: no certificate", out->id);
    return cert_check(out->id, out->pem, out->sha, out->cert_serial);
}

typedef struct {
    unsigned n;
    char id[KEEL_FLEET_ID_MAX + 1], serial[65], sha[65], model[KEEL_FLEET_MODEL_MAX + 1];
} existing_t;

static keel_status_t existing_row(void *arg, const keel_fleet_val_t *c, unsigned n)
{
    existing_t *e = arg;
    if (n != 4 || e->n++ > 0)
        return KEEL_OK;
    keel_status_t st = keel_fleet_col_text(&c[0], e->id, sizeof e->id);
    if (st == KEEL_OK)
        st = keel_fleet_col_text(&c[1], e->serial, sizeof e->serial);
    if (st == KEEL_OK)
        st = keel_fleet_col_text(&c[2], e->sha, sizeof e->sha);
    if (st == KEEL_OK)
        st = keel_fleet_col_text(&c[3], e->model, sizeof e->model);
    return st;
}

typedef struct {
    const json_t *devices;
    const char *org;
    int64_t now;
    keel_fleet_import_stats_t stats;
} import_t;

static keel_status_t import_tx(keel_fleet_db_t *db, void *arg)
{
    import_t *im = arg;
    im->stats = (keel_fleet_import_stats_t){0};
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; st == KEEL_OK && i < json_array_size(im->devices); i++) {
        man_dev_t d;
        if ((st = man_dev_parse(json_array_get(im->devices, i), i, &d)) != KEEL_OK)
            break;
        existing_t e = {0};
        keel_fleet_val_t q[] = {KEEL_FV_S(d.id), KEEL_FV_S(d.serial), KEEL_FV_S(d.sha)};
        st = keel_fleet_db_exec(db,
                                "SELECT id, serial, cert_sha256, model FROM devices "
                                "WHERE id = $1 OR serial = $2 OR cert_sha256 = $3 LIMIT 2",
                                q, 3, existing_row, &e, NULL);
        if (st != KEEL_OK)
            break;
        if (e.n == 1 && strcmp(e.id, d.id) == 0 && strcmp(e.serial, d.serial) == 0 && strcmp(e.sha, d.sha) == 0 &&
            strcmp(e.model, d.model) == 0) {
            im->stats.unchanged++;
            continue;
        }
        if (e.n > 0) {
            st = keel_errorf(KEEL_ERR_EXISTS,
                             "manifest device %s: its id, serial or certificate is registered already with other "
                             "values (device %s)",
                             d.id, e.id);
            break;
        }
        char pseudonym[33];
        keel_fleet_random_hex(pseudonym, 16);
        const char *org = d.org != NULL ? d.org : im->org != NULL ? im->org : "";
        keel_fleet_val_t p[] = {KEEL_FV_S(d.id),         KEEL_FV_S(d.serial),     KEEL_FV_S(d.model),
                                KEEL_FV_S(org),          KEEL_FV_S(d.sha),        KEEL_FV_S(d.cert_serial),
                                KEEL_FV_S(d.pem),        KEEL_FV_I(d.provisioned), KEEL_FV_S(pseudonym),
                                KEEL_FV_I(im->now)};
        st = keel_fleet_db_exec(db,
                                "INSERT INTO devices (id, serial, model, org, cert_sha256, cert_serial, certificate, "
                                "provisioned, pseudonym, state, registered) "
                                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'registered', $10)",
                                p, 10, NULL, NULL, NULL);
        if (st == KEEL_OK)
            st = keel_fleet_db_exec(db, "INSERT INTO device_seq (device) VALUES ($1)", p, 1, NULL, NULL, NULL);
        if (st == KEEL_OK)
            im->stats.added++;
    }
    return st;
}

keel_status_t keel_fleet_import_manifest(keel_fleet_db_t *db, const json_t *manifest, int64_t now,
                                         keel_fleet_import_stats_t *stats)
{
    if (db == NULL || !json_is_object(manifest))
        return keel_errorf(KEEL_ERR_FORMAT, "manifest: not a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)manifest, key, v) {
        if (strcmp(key, "format") != 0 && strcmp(key, "org") != 0 && strcmp(key, "generated") != 0 &&
            strcmp(key, "devices") != 0)
            return keel_errorf(KEEL_ERR_FORMAT, "manifest: unknown field \"%.64s\"", key);
    }
    const char *fmt = json_string_value(json_object_get(manifest, "format"));
    if (fmt == NULL || strcmp(fmt, "keel-manifest-1") != 0)
        return keel_errorf(KEEL_ERR_FORMAT, "manifest: format is not keel-manifest-1");
    json_t *org = json_object_get(manifest, "org"), *gen = json_object_get(manifest, "generated");
    if ((org != NULL && !keel_fleet_word_ok(json_string_value(org), ORG_MAX, true)) ||
        (gen != NULL && !json_is_integer(gen)))
        return keel_errorf(KEEL_ERR_FORMAT, "manifest: malformed org or generated");
    import_t im = {.devices = json_object_get(manifest, "devices"), .org = json_string_value(org), .now = now};
    if (!json_is_array(im.devices))
        return keel_errorf(KEEL_ERR_FORMAT, "manifest: devices must be an array");
    keel_status_t st = keel_fleet_tx(db, import_tx, &im);
    if (st == KEEL_OK && stats != NULL)
        *stats = im.stats;
    return st;
}

#define DEVICE_COLS                                                                                            \
    "d.id, d.serial, d.model, d.cert_sha256, d.cert_serial, d.pseudonym, d.state, d.registered, s.first_seen, " \
    "s.last_seen, d.revoked_at, d.version, d.security_version, s.last_seq, s.dropped_reported"
#define DEVICE_JOIN " FROM devices d JOIN device_seq s ON s.device = d.id"

static keel_status_t device_row(void *arg, const keel_fleet_val_t *c, unsigned n)
{
    keel_fleet_device_t *d = arg;
    if (n != 15)
        return keel_errorf(KEEL_ERR_FORMAT, "fleet store: device row");
    char state[16] = ""; /* read below unless an earlier column failed */
    keel_status_t st = keel_fleet_col_text(&c[0], d->id, sizeof d->id);
    if (st == KEEL_OK)
        st = keel_fleet_col_text(&c[1], d->serial, sizeof d->serial);
    if (st == KEEL_OK)
        st = keel_fleet_col_text(&c[2], d->model, sizeof d->model);
    if (st == KEEL_OK)
        st = keel_fleet_col_text(&c[3], d->cert_sha256, sizeof d->cert_sha256);
    if (st == KEEL_OK)
        st = keel_fleet_col_text(&c[4], d->cert_serial, sizeof d->cert_serial);
    if (st == KEEL_OK)
        st = keel_fleet_col_text(&c[5], d->pseudonym, sizeof d->pseudonym);
    if (st == KEEL_OK)
        st = keel_fleet_col_text(&c[6], state, sizeof state);
    int64_t *ints[] = {&d->registered, &d->first_seen, &d->last_seen, &d->revoked_at};
    for (unsigned i = 0; st == KEEL_OK && i < 4; i++)
        st = keel_fleet_val_int(&c[7 + i], ints[i]);
    if (st == KEEL_OK)
        st = keel_fleet_col_text(&c[11], d->version, sizeof d->version);
    int64_t seq = 0, dropped = 0;
    if (st == KEEL_OK)
        st = keel_fleet_val_int(&c[12], &d->security_version);
    if (st == KEEL_OK)
        st = keel_fleet_val_int(&c[13], &seq);
    if (st == KEEL_OK)
        st = keel_fleet_val_int(&c[14], &dropped);
    d->last_seq = (uint64_t)seq;
    d->dropped_reported = (uint64_t)dropped;
    d->state = strcmp(state, "revoked") == 0  ? KEEL_FLEET_DEV_REVOKED
               : strcmp(state, "active") == 0 ? KEEL_FLEET_DEV_ACTIVE
                                              : KEEL_FLEET_DEV_REGISTERED;
    return st;
}

keel_status_t keel_fleet_device_get(keel_fleet_db_t *db, const char *id, keel_fleet_device_t *out)
{
    if (db == NULL || out == NULL || !id_ok(id))
        return keel_errorf(KEEL_ERR_ARG, "device: bad id");
    memset(out, 0, sizeof *out);
    out->id[0] = '\0';
    keel_fleet_val_t p[] = {KEEL_FV_S(id)};
    keel_status_t st = keel_fleet_db_exec(db, "SELECT " DEVICE_COLS DEVICE_JOIN " WHERE d.id = $1", p, 1,
                                          device_row, out, NULL);
    if (st == KEEL_OK && out->id[0] == '\0')
        st = keel_errorf(KEEL_ERR_NOT_FOUND, "device %s is not registered", id);
    return st;
}

static const char *const list_names[] = {"id",         "serial",    "model",      "cert_sha256", "cert_serial",
                                         "state",      "registered", "first_seen", "last_seen",   "revoked_at",
                                         "version",    "security_version", "last_seq", "dropped_reported"};
#define LIST_COLS                                                                                               \
    "d.id, d.serial, d.model, d.cert_sha256, d.cert_serial, d.state, d.registered, s.first_seen, s.last_seen, "  \
    "d.revoked_at, d.version, d.security_version, s.last_seq, s.dropped_reported" DEVICE_JOIN

static keel_status_t device_query(keel_fleet_db_t *db, const char *model, const char *after, unsigned limit,
                                  size_t max_rows, json_t **out)
{
    if (db == NULL || out == NULL || (model != NULL && !keel_identity_model_ok(model)) ||
        (after != NULL && *after != '\0' && !id_ok(after)))
        return keel_errorf(KEEL_ERR_ARG, "device list: bad model or position");
    keel_fleet_val_t p[] = {KEEL_FV_S(after != NULL ? after : ""), KEEL_FV_I(limit), KEEL_FV_S(model)};
    const char *sql = model != NULL ? "SELECT " LIST_COLS " WHERE d.id > $1 AND d.model = $3 ORDER BY d.id LIMIT $2"
                                    : "SELECT " LIST_COLS " WHERE d.id > $1 ORDER BY d.id LIMIT $2";
    return keel_fleet_query_json(db, sql, p, model != NULL ? 3 : 2, "ssssssiiiisiii", list_names, max_rows, out);
}

keel_status_t keel_fleet_device_list(keel_fleet_db_t *db, const char *model, json_t **out)
{
    return device_query(db, model, NULL, KEEL_FLEET_LIST_MAX + 1, KEEL_FLEET_LIST_MAX, out);
}

keel_status_t keel_fleet_device_page(keel_fleet_db_t *db, const char *model, const char *after, unsigned limit,
                                     json_t **out)
{
    if (limit < 1 || limit > KEEL_FLEET_LIST_MAX)
        return keel_errorf(KEEL_ERR_ARG, "device list: limit must be 1..%d", KEEL_FLEET_LIST_MAX);
    return device_query(db, model, after, limit, limit, out);
}

typedef struct {
    json_t *states, *versions;
    int64_t total;
} summary_t;

static keel_status_t state_row(void *arg, const keel_fleet_val_t *c, unsigned n)
{
    summary_t *s = arg;
    char state[16];
    int64_t count = 0;
    keel_status_t st = n == 2 ? keel_fleet_col_text(&c[0], state, sizeof state) : KEEL_ERR_FORMAT;
    if (st == KEEL_OK)
        st = keel_fleet_val_int(&c[1], &count);
    if (st == KEEL_OK && json_object_set_new(s->states, state, json_integer(count)) != 0)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    s->total += count;
    return st;
}

keel_status_t keel_fleet_device_summary(keel_fleet_db_t *db, json_t **out)
{
    if (db == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "device summary: no output");
    static const char *const vnames[] = {"model", "version", "devices"};
    summary_t s = {.states = json_pack("{s:i, s:i, s:i}", "registered", 0, "active", 0, "revoked", 0)};
    if (s.states == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_status_t st = keel_fleet_db_exec(db, "SELECT state, COUNT(*) FROM devices GROUP BY state", NULL, 0,
                                          state_row, &s, NULL);
    if (st == KEEL_OK)
        st = keel_fleet_query_json(db,
                                   "SELECT model, version, COUNT(*) FROM devices WHERE state <> 'revoked' "
                                   "GROUP BY model, version ORDER BY model, version LIMIT 100001",
                                   NULL, 0, "ssi", vnames, KEEL_FLEET_LIST_MAX, &s.versions);
    json_t *o = NULL;
    if (st == KEEL_OK &&
        (o = json_pack("{s:I, s:O, s:O}", "devices", (json_int_t)s.total, "states", s.states, "versions",
                       s.versions)) == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    json_decref(s.states);
    json_decref(s.versions);
    if (st == KEEL_OK)
        *out = o;
    return st;
}

typedef struct {
    const char *id;
    int64_t now;
} revoke_t;

static keel_status_t revoke_tx(keel_fleet_db_t *db, void *arg)
{
    revoke_t *r = arg;
    keel_fleet_val_t p[] = {KEEL_FV_S(r->id), KEEL_FV_I(r->now)};
    uint64_t changed = 0;
    keel_status_t st = keel_fleet_db_exec(db,
                                          "UPDATE devices SET state = 'revoked', revoked_at = $2 "
                                          "WHERE id = $1 AND state <> 'revoked'",
                                          p, 2, NULL, NULL, &changed);
    int64_t one = 0;
    if (st == KEEL_OK && changed == 0 &&
        keel_fleet_db_int(db, "SELECT COUNT(*) FROM devices WHERE id = $1", p, 1, &one) == KEEL_OK && one == 0)
        st = keel_errorf(KEEL_ERR_NOT_FOUND, "device %s is not registered", r->id);
    return st;
}

keel_status_t keel_fleet_device_revoke(keel_fleet_db_t *db, const char *id, int64_t now)
{
    if (db == NULL || !id_ok(id))
        return keel_errorf(KEEL_ERR_ARG, "revoke: bad id");
    revoke_t r = {id, now};
    return keel_fleet_tx(db, revoke_tx, &r);
}

typedef struct {
    char **v;
    size_t n, cap;
} strv_t;

static keel_status_t strv_row(void *arg, const keel_fleet_val_t *c, unsigned n)
{
    strv_t *s = arg;
    if (n != 1 || c[0].type != KEEL_FV_TEXT)
        return keel_errorf(KEEL_ERR_FORMAT, "fleet store: serial row");
    if (s->n >= KEEL_FLEET_LIST_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "more than %d revoked devices", KEEL_FLEET_LIST_MAX);
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        char **g = realloc(s->v, cap * sizeof *g);
        if (g == NULL)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        s->v = g;
        s->cap = cap;
    }
    if ((s->v[s->n] = strndup(c[0].s, c[0].len)) == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    s->n++;
    return KEEL_OK;
}

keel_status_t keel_fleet_revoked_serials(keel_fleet_db_t *db, char ***serials, size_t *n)
{
    if (db == NULL || serials == NULL || n == NULL)
        return keel_errorf(KEEL_ERR_ARG, "revoked serials: no output");
    strv_t s = {0};
    keel_status_t st = keel_fleet_db_exec(db,
                                          "SELECT cert_serial FROM devices WHERE state = 'revoked' "
                                          "ORDER BY cert_serial",
                                          NULL, 0, strv_row, &s, NULL);
    if (st != KEEL_OK) {
        keel_fleet_strv_free(s.v, s.n);
        return st;
    }
    *serials = s.v;
    *n = s.n;
    return KEEL_OK;
}

void keel_fleet_strv_free(char **v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

keel_status_t keel_fleet_device_report_version(keel_fleet_db_t *db, const char *id, const char *version,
                                               int64_t security_version, int64_t now)
{
    (void)now;
    if (db == NULL || !id_ok(id) || !keel_fleet_word_ok(version, KEEL_FLEET_VERSION_MAX, false) ||
        security_version < 0)
        return keel_errorf(KEEL_ERR_ARG, "version report: bad id, version or security version");
    keel_fleet_val_t p[] = {KEEL_FV_S(id), KEEL_FV_S(version), KEEL_FV_I(security_version)};
    uint64_t changed = 0;
    keel_status_t st = keel_fleet_db_exec(db,
                                          "UPDATE devices SET version = $2, security_version = $3 "
                                          "WHERE id = $1 AND state <> 'revoked'",
                                          p, 3, NULL, NULL, &changed);
    if (st == KEEL_OK && changed == 0)
        st = keel_errorf(KEEL_ERR_NOT_FOUND, "device %s is not registered or revoked", id);
    return st;
}

typedef struct {
    char *buf;
    size_t cap;
    bool seen;
} detector_t;

static keel_status_t detector_row(void *arg, const keel_fleet_val_t *c, unsigned n)
{
    detector_t *d = arg;
    d->seen = true;
    return n == 1 ? keel_fleet_col_text(&c[0], d->buf, d->cap) : keel_errorf(KEEL_ERR_FORMAT, "detector row");
}

keel_status_t keel_fleet_detector_get(keel_fleet_db_t *db, const char *id, char *buf, size_t cap)
{
    if (db == NULL || !id_ok(id) || buf == NULL || cap == 0)
        return keel_errorf(KEEL_ERR_ARG, "detector state: bad id or buffer");
    buf[0] = '\0';
    detector_t d = {buf, cap, false};
    keel_fleet_val_t p[] = {KEEL_FV_S(id)};
    int64_t n = 0;
    keel_status_t st = keel_fleet_db_int(db, "SELECT COUNT(*) FROM devices WHERE id = $1", p, 1, &n);
    if (st == KEEL_OK && n == 0)
        st = keel_errorf(KEEL_ERR_NOT_FOUND, "device %s is not registered", id);
    if (st == KEEL_OK)
        st = keel_fleet_db_exec(db, "SELECT state FROM detectors WHERE device = $1", p, 1, detector_row, &d, NULL);
    if (st != KEEL_OK)
        buf[0] = '\0';
    return st;
}

keel_status_t keel_fleet_detector_put(keel_fleet_db_t *db, const char *id, const char *text)
{
    if (db == NULL || !id_ok(id) || text == NULL)
        return keel_errorf(KEEL_ERR_ARG, "detector state: bad id or text");
    if (strnlen(text, KEEL_FLEET_DETECTOR_MAX + 1) > KEEL_FLEET_DETECTOR_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "detector state longer than %d bytes", KEEL_FLEET_DETECTOR_MAX);
    keel_fleet_val_t p[] = {KEEL_FV_S(id), KEEL_FV_S(text)};
    int64_t n = 0;
    /* Checked first: a foreign-key failure would end the caller's transaction on PostgreSQL. */
    keel_status_t st = keel_fleet_db_int(db, "SELECT COUNT(*) FROM devices WHERE id = $1", p, 1, &n);
    if (st == KEEL_OK && n == 0)
        st = keel_errorf(KEEL_ERR_NOT_FOUND, "device %s is not registered", id);
    if (st == KEEL_OK)
        st = keel_fleet_db_exec(db,
                                "INSERT INTO detectors (device, state) VALUES ($1, $2) "
                                "ON CONFLICT (device) DO UPDATE SET state = excluded.state",
                                p, 2, NULL, NULL, NULL);
    return st;
}

/* ---- ingest ------------------------------------------------------------------------------------ */

typedef struct {
    bool seen;
    int64_t first, last, opened, settled;
    char state[16];
} gap_row_t;

static keel_status_t gap_row(void *arg, const keel_fleet_val_t *c, unsigned n)
{
    gap_row_t *g = arg;
    if (g->seen || n != 5)
        return KEEL_OK;
    g->seen = true;
    int64_t *const to[] = {&g->first, &g->last, &g->opened, &g->settled};
    keel_status_t st = keel_fleet_val_ints(c, 4, to);
    if (st == KEEL_OK)
        st = keel_fleet_col_text(&c[4], g->state, sizeof g->state);
    return st;
}

/* A late message: its seq leaves the gap that holds it. */
static keel_status_t gap_fill(keel_fleet_db_t *db, const char *device, int64_t seq, bool *filled_open)
{
    gap_row_t g = {0};
    keel_fleet_val_t q[] = {KEEL_FV_S(device), KEEL_FV_I(seq)};
    keel_status_t st = keel_fleet_db_exec(db,
                                          "SELECT seq_first, seq_last, opened, settled, state FROM gaps "
                                          "WHERE device = $1 AND seq_first <= $2 AND seq_last >= $2",
                                          q, 2, gap_row, &g, NULL);
    if (st != KEEL_OK || !g.seen)
        return st;
    *filled_open = strcmp(g.state, "open") == 0;
    if (g.first == g.last) {
        keel_fleet_val_t k[] = {KEEL_FV_S(device), KEEL_FV_I(g.first)};
        return keel_fleet_db_exec(db, "DELETE FROM gaps WHERE device = $1 AND seq_first = $2", k, 2, NULL, NULL,
                                  NULL);
    }
    /* The front goes: the gap starts after seq. Otherwise it ends before
     * seq, and what lay after seq (if anything) becomes a gap of its own. */
    keel_fleet_val_t k[] = {KEEL_FV_S(device), KEEL_FV_I(g.first), KEEL_FV_I(seq == g.first ? seq + 1 : seq - 1)};
    if (seq == g.first)
        return keel_fleet_db_exec(db, "UPDATE gaps SET seq_first = $3 WHERE device = $1 AND seq_first = $2", k, 3,
                                  NULL, NULL, NULL);
    st = keel_fleet_db_exec(db, "UPDATE gaps SET seq_last = $3 WHERE device = $1 AND seq_first = $2", k, 3, NULL,
                            NULL, NULL);
    if (st != KEEL_OK || seq == g.last)
        return st;
    keel_fleet_val_t s[] = {KEEL_FV_S(device), KEEL_FV_I(seq + 1), KEEL_FV_I(g.last),
                            KEEL_FV_I(g.opened), KEEL_FV_S(g.state), KEEL_FV_I(g.settled)};
    return keel_fleet_db_exec(db,
                              "INSERT INTO gaps (device, seq_first, seq_last, opened, state, settled) "
                              "VALUES ($1, $2, $3, $4, $5, $6)",
                              s, 6, NULL, NULL, NULL);
}

/* A device's sequence row, read once for the run of its messages. */
typedef struct {
    bool seen;
    int64_t last_seq, erased_seq, first_seen, last_seen, dropped;
} seqrow_t;

static keel_status_t seqrow(void *arg, const keel_fleet_val_t *c, unsigned n)
{
    seqrow_t *r = arg;
    if (r->seen || n != 5)
        return KEEL_OK;
    r->seen = true;
    int64_t *const to[] = {&r->last_seq, &r->erased_seq, &r->first_seen, &r->last_seen, &r->dropped};
    return keel_fleet_val_ints(c, 5, to);
}

/* ---- SQLite: device_seq rows remembered between ingest's transactions ----
 * Each batch read every device's sequence row again (a join of two indexed
 * tables per device and batch: with 1000 devices, half a SELECT per
 * message). SQLite has one writer at a time, and while the rows cannot have
 * changed under us (db_internal.h: data_version, the hooks) the values
 * ingest itself wrote are the table's. PostgreSQL reads them each time: its
 * SELECT ... FOR UPDATE is also the lock two instances take turns on. */
#define SEQMEM_ID_MAX 32       /* longer ids are not remembered (keel's are 26) */
#define SEQMEM_SLOTS_MAX 65536 /* at most 3/4 used; past that it starts over */

typedef struct {
    char device[SEQMEM_ID_MAX + 1]; /* "" = empty slot */
    seqrow_t r;
} seqmem_slot_t;

struct keel_fleet_seqmem {
    seqmem_slot_t *slot;
    size_t cap, n; /* cap: a power of two */
    int64_t data_version;
};

void keel_fleet_seqmem_free(struct keel_fleet_seqmem *m)
{
    if (m != NULL)
        free(m->slot);
    free(m);
}

static size_t seqmem_at(const struct keel_fleet_seqmem *m, const char *device)
{
    size_t i = keel_fleet_hash(device) & (m->cap - 1);
    while (m->slot[i].device[0] != '\0' && strcmp(m->slot[i].device, device) != 0)
        i = (i + 1) & (m->cap - 1);
    return i;
}

static void seqmem_clear(struct keel_fleet_seqmem *m)
{
    for (size_t i = 0; i < m->cap; i++)
        m->slot[i].device[0] = '\0';
    m->n = 0;
}

/* The memory for this transaction (SQLite only; NULL: read every row). */
static struct keel_fleet_seqmem *seqmem_begin(keel_fleet_db_t *db)
{
    if (keel_fleet_db_driver(db) != KEEL_FLEET_DB_SQLITE)
        return NULL;
    int64_t v = 0;
    if (keel_fleet_db_int(db, "PRAGMA data_version", NULL, 0, &v) != KEEL_OK) {
        keel_error_clear();
        return NULL;
    }
    struct keel_fleet_seqmem *m = db->seqmem;
    if (m == NULL) {
        if ((m = calloc(1, sizeof *m)) == NULL || (m->slot = calloc(64, sizeof *m->slot)) == NULL) {
            free(m);
            return NULL;
        }
        m->cap = 64;
        db->seqmem = m;
        db->seq_stale = true;
    }
    if (db->seq_stale || v != m->data_version)
        seqmem_clear(m);
    m->data_version = v;
    db->seq_stale = false;
    return m;
}

static bool seqmem_get(const struct keel_fleet_seqmem *m, const char *device, seqrow_t *r)
{
    if (m == NULL || strlen(device) > SEQMEM_ID_MAX)
        return false;
    const seqmem_slot_t *s = &m->slot[seqmem_at(m, device)];
    if (s->device[0] == '\0')
        return false;
    *r = s->r;
    return true;
}

static void seqmem_put(struct keel_fleet_seqmem *m, const char *device, const seqrow_t *r)
{
    size_t len = strlen(device);
    if (m == NULL || len > SEQMEM_ID_MAX || !r->seen)
        return;
    if ((m->n + 1) * 4 > m->cap * 3) {
        seqmem_slot_t *old = m->slot;
        size_t old_cap = m->cap, cap = m->cap * 2;
        seqmem_slot_t *grown = cap <= SEQMEM_SLOTS_MAX ? calloc(cap, sizeof *grown) : NULL;
        if (grown == NULL) {
            seqmem_clear(m); /* at its size (or out of memory): start over */
        } else {
            m->slot = grown;
            m->cap = cap;
            m->n = 0;
            for (size_t i = 0; i < old_cap; i++)
                if (old[i].device[0] != '\0') {
                    m->slot[seqmem_at(m, old[i].device)] = old[i];
                    m->n++;
                }
            free(old);
        }
    }
    seqmem_slot_t *s = &m->slot[seqmem_at(m, device)];
    if (s->device[0] == '\0') {
        memcpy(s->device, device, len + 1);
        m->n++;
    }
    s->r = *r;
}

/*
 * The messages m[0..n) of one device, in order: its sequence row is read
 * once (on PostgreSQL locked until the commit, so two fleetd instances
 * ingesting for one device keep its gaps one after the other; SQLite's
 * writer holds the whole file), each message is one INSERT (a duplicate
 * changes nothing), gaps are worked out here from the running last seq,
 * and the row is written once.
 */
static keel_status_t ingest_run(keel_fleet_db_t *db, struct keel_fleet_seqmem *mem, const keel_fleet_msg_t *m,
                                size_t n, keel_fleet_ingest_result_t *res)
{
    seqrow_t r = {0};
    keel_fleet_val_t dev[] = {KEEL_FV_S(m[0].device)};
    bool remembered = seqmem_get(mem, m[0].device, &r);
    keel_status_t st = remembered ? KEEL_OK : keel_fleet_db_exec(
        db,
        keel_fleet_db_driver(db) == KEEL_FLEET_DB_POSTGRES
            ? "SELECT s.last_seq, s.erased_seq, s.first_seen, s.last_seen, s.dropped_reported FROM device_seq s "
              "JOIN devices d ON d.id = s.device WHERE s.device = $1 AND d.state <> 'revoked' FOR UPDATE OF s"
            : "SELECT s.last_seq, s.erased_seq, s.first_seen, s.last_seen, s.dropped_reported FROM device_seq s "
              "JOIN devices d ON d.id = s.device WHERE s.device = $1 AND d.state <> 'revoked'",
        dev, 1, seqrow, &r, NULL);
    if (st != KEEL_OK)
        return st;
    if (!r.seen) {
        for (size_t i = 0; i < n; i++)
            res[i].unknown = true;
        return KEEL_OK;
    }
    int64_t last = r.last_seq, before = r.last_seq;
    bool stored = false;
    for (size_t i = 0; i < n && st == KEEL_OK; i++) {
        int64_t seq = (int64_t)m[i].seq;
        uint64_t changed = 0;
        if (seq > r.erased_seq) {
            keel_fleet_val_t p[] = {KEEL_FV_S(m[i].device),   KEEL_FV_I(seq),       KEEL_FV_I(m[i].ts),
                                    KEEL_FV_I(m[i].received), KEEL_FV_S(m[i].kind), KEEL_FV_SN(m[i].body, m[i].body_len),
                                    KEEL_FV_I(m[i].body_len)};
            st = keel_fleet_db_exec(db,
                                    "INSERT INTO messages (device, seq, ts, received, kind, body, bytes) "
                                    "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (device, seq) DO NOTHING",
                                    p, 7, NULL, NULL, &changed);
        }
        /* At or below an erase's last seq: erased data does not come back. */
        if (st != KEEL_OK || changed == 0) {
            res[i].duplicate = true;
            continue;
        }
        stored = true;
        if (m[i].received > r.last_seen)
            r.last_seen = m[i].received;
        if (r.first_seen == 0)
            r.first_seen = m[i].received;
        if ((int64_t)m[i].dropped > r.dropped)
            r.dropped = (int64_t)m[i].dropped;
        if (seq > last + 1) {
            keel_fleet_val_t g[] = {KEEL_FV_S(m[i].device), KEEL_FV_I(last + 1), KEEL_FV_I(seq - 1),
                                    KEEL_FV_I(m[i].received)};
            st = keel_fleet_db_exec(db,
                                    "INSERT INTO gaps (device, seq_first, seq_last, opened, state) "
                                    "VALUES ($1, $2, $3, $4, 'open')",
                                    g, 4, NULL, NULL, NULL);
            res[i].gap_first = (uint64_t)last + 1;
            res[i].gap_last = m[i].seq - 1;
        } else if (seq < last) {
            st = gap_fill(db, m[i].device, seq, &res[i].filled_gap);
        }
        before = last;
        if (seq > last)
            last = seq;
    }
    if (st != KEEL_OK)
        return st;
    if (!stored) {
        seqmem_put(mem, m[0].device, &r);
        return KEEL_OK;
    }
    keel_fleet_val_t u[] = {KEEL_FV_S(m[0].device), KEEL_FV_I(last),      KEEL_FV_I(before),
                            KEEL_FV_I(r.last_seen), KEEL_FV_I(r.first_seen), KEEL_FV_I(r.dropped)};
    uint64_t changed = 0;
    db->seq_own = true; /* ingest's own writes leave its memory right */
    st = keel_fleet_db_exec(db,
                            "UPDATE device_seq SET last_seq = $2, seq_before = $3, last_seen = $4, first_seen = $5, "
                            "dropped_reported = $6 WHERE device = $1",
                            u, 6, NULL, NULL, &changed);
    /* The device's first message: registered becomes active (once per device). */
    if (st == KEEL_OK && r.last_seq == 0)
        st = keel_fleet_db_exec(db, "UPDATE devices SET state = 'active' WHERE id = $1 AND state = 'registered'", dev,
                                1, NULL, NULL, NULL);
    db->seq_own = false;
    if (st == KEEL_OK && changed != 1) {
        /* The row it remembered is gone: nothing should do that, but if something did, read again. */
        db->seq_stale = true;
        return keel_errorf(KEEL_ERR_BUSY, "ingest: the sequence row of %s changed underneath; retry", m[0].device);
    }
    if (st == KEEL_OK) {
        r.last_seq = last;
        seqmem_put(mem, m[0].device, &r);
    }
    return st;
}

static keel_status_t msg_check(const keel_fleet_msg_t *m)
{
    if (m == NULL || !id_ok(m->device) || m->kind == NULL || m->body == NULL)
        return keel_errorf(KEEL_ERR_ARG, "ingest: bad message");
    if (m->seq == 0 || m->seq > INT64_MAX || m->dropped > INT64_MAX)
        return keel_errorf(KEEL_ERR_ARG, "ingest: seq must be 1..2^63-1");
    if (strcmp(m->kind, "telemetry") != 0 && strcmp(m->kind, "event") != 0 && strcmp(m->kind, "alert") != 0)
        return keel_errorf(KEEL_ERR_ARG, "ingest: kind must be telemetry, event or alert");
    if (m->body_len > KEEL_FLEET_BODY_MAX)
        return keel_errorf(KEEL_ERR_ARG, "ingest: body longer than %u bytes", KEEL_FLEET_BODY_MAX);
    return KEEL_OK;
}

typedef struct {
    const keel_fleet_msg_t *m;
    size_t n;
    keel_fleet_ingest_result_t *res;
} ingest_t;

static keel_status_t ingest_tx(keel_fleet_db_t *db, void *arg)
{
    const ingest_t *in = arg;
    keel_status_t st = KEEL_OK;
    struct keel_fleet_seqmem *mem = seqmem_begin(db);
    for (size_t i = 0; i < in->n; i++)
        in->res[i] = (keel_fleet_ingest_result_t){0};
    for (size_t i = 0, j; i < in->n && st == KEEL_OK; i = j) {
        for (j = i + 1; j < in->n && strcmp(in->m[j].device, in->m[i].device) == 0; j++)
            ;
        st = ingest_run(db, mem, &in->m[i], j - i, &in->res[i]);
    }
    return st;
}

keel_status_t keel_fleet_ingest_many(keel_fleet_db_t *db, const keel_fleet_msg_t *m, size_t n,
                                     keel_fleet_ingest_result_t *res)
{
    if (db == NULL || (n > 0 && (m == NULL || res == NULL)))
        return keel_errorf(KEEL_ERR_ARG, "ingest: bad arguments");
    for (size_t i = 0; i < n; i++) {
        keel_status_t st = msg_check(&m[i]);
        if (st != KEEL_OK)
            return st;
    }
    ingest_t in = {m, n, res};
    return n == 0 ? KEEL_OK : keel_fleet_tx(db, ingest_tx, &in);
}

keel_status_t keel_fleet_ingest(keel_fleet_db_t *db, const keel_fleet_msg_t *m, keel_fleet_ingest_result_t *res)
{
    keel_fleet_ingest_result_t ignored;
    if (res == NULL)
        res = &ignored;
    *res = (keel_fleet_ingest_result_t){0};
    if (m == NULL)
        return keel_errorf(KEEL_ERR_ARG, "ingest: bad message");
    return keel_fleet_ingest_many(db, m, 1, res);
}

typedef struct {
    char device[KEEL_FLEET_ID_MAX + 1];
    int64_t first, last;
    bool explained;
} settled_t;

typedef struct {
    settled_t *v;
    size_t n, cap;
    int64_t older_than, now_settled;
} settle_t;

#define SETTLE_CHUNK 500

static keel_status_t settle_row(void *arg, const keel_fleet_val_t *c, unsigned n)
{
    settle_t *s = arg;
    if (n != 3 || s->n >= s->cap)
        return keel_errorf(KEEL_ERR_FORMAT, "fleet store: gap row");
    settled_t *g = &s->v[s->n];
    keel_status_t st = keel_fleet_col_text(&c[0], g->device, sizeof g->device);
    if (st == KEEL_OK)
        st = keel_fleet_val_int(&c[1], &g->first);
    if (st == KEEL_OK)
        st = keel_fleet_val_int(&c[2], &g->last);
    if (st == KEEL_OK)
        s->n++;
    return st;
}

/* One chunk: the oldest open gaps, oldest seq first per device, so earlier
 * gaps use the reported drops first. */
static keel_status_t settle_tx(keel_fleet_db_t *db, void *arg)
{
    settle_t *s = arg;
    s->n = 0; /* a retried transaction starts its chunk again */
    keel_fleet_val_t q[] = {KEEL_FV_I(s->older_than), KEEL_FV_I(SETTLE_CHUNK)};
    keel_status_t st = keel_fleet_db_exec(db,
                                          "SELECT device, seq_first, seq_last FROM gaps "
                                          "WHERE state = 'open' AND opened < $1 ORDER BY device, seq_first LIMIT $2",
                                          q, 2, settle_row, s, NULL);
    for (size_t i = 0; st == KEEL_OK && i < s->n; i++) {
        settled_t *g = &s->v[i];
        int64_t avail = 0, size = g->last - g->first + 1;
        keel_fleet_val_t d[] = {KEEL_FV_S(g->device), KEEL_FV_I(size), KEEL_FV_I(g->first)};
        st = keel_fleet_db_int(db, "SELECT dropped_reported - dropped_used FROM device_seq WHERE device = $1", d, 1, &avail);
        g->explained = st == KEEL_OK && avail >= size;
        if (st == KEEL_OK && g->explained)
            st = keel_fleet_db_exec(db, "UPDATE device_seq SET dropped_used = dropped_used + $2 WHERE device = $1", d, 2,
                                    NULL, NULL, NULL);
        keel_fleet_val_t u[] = {KEEL_FV_S(g->device), KEEL_FV_I(g->first),
                                KEEL_FV_S(g->explained ? "explained" : "lost"), KEEL_FV_I(s->now_settled)};
        if (st == KEEL_OK)
            st = keel_fleet_db_exec(db, "UPDATE gaps SET state = $3, settled = $4 WHERE device = $1 AND seq_first = $2",
                                    u, 4, NULL, NULL, NULL);
    }
    return st;
}

keel_status_t keel_fleet_gaps_settle(keel_fleet_db_t *db, int64_t older_than, keel_fleet_gap_fn cb, void *arg)
{
    if (db == NULL)
        return keel_errorf(KEEL_ERR_ARG, "gaps: no database");
    keel_status_t st = KEEL_OK;
    for (;;) {
        settle_t s = {.older_than = older_than, .now_settled = older_than, .cap = SETTLE_CHUNK};
        if ((s.v = calloc(SETTLE_CHUNK, sizeof *s.v)) == NULL)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        st = keel_fleet_tx(db, settle_tx, &s);
        for (size_t i = 0; st == KEEL_OK && cb != NULL && i < s.n; i++)
            cb(arg, s.v[i].device, (uint64_t)s.v[i].first, (uint64_t)s.v[i].last, s.v[i].explained);
        size_t got = s.n;
        free(s.v);
        if (st != KEEL_OK || got < SETTLE_CHUNK)
            break;
    }
    return st;
}

typedef struct {
    int64_t v[5];
} stats_row_t;

static keel_status_t stats_row(void *arg, const keel_fleet_val_t *c, unsigned n)
{
    stats_row_t *s = arg;
    keel_status_t st = KEEL_OK;
    for (unsigned i = 0; st == KEEL_OK && i < n && i < 5; i++) {
        st = keel_fleet_val_int(&c[i], &s->v[i]);
        if (st == KEEL_ERR_NOT_FOUND) {
            s->v[i] = 0;
            st = KEEL_OK;
        }
    }
    return st;
}

keel_status_t keel_fleet_seq_stats(keel_fleet_db_t *db, const char *device, keel_fleet_seq_stats_t *out)
{
    if (db == NULL || out == NULL || (device != NULL && !id_ok(device)))
        return keel_errorf(KEEL_ERR_ARG, "sequence stats: bad device");
    memset(out, 0, sizeof *out);
    keel_fleet_val_t p[] = {KEEL_FV_S(device)};
    unsigned np = device != NULL ? 1 : 0;
    int64_t msgs = 0;
    keel_status_t st = keel_fleet_db_int(db,
                                         device != NULL ? "SELECT COUNT(*) FROM messages WHERE device = $1"
                                                        : "SELECT COUNT(*) FROM messages",
                                         p, np, &msgs);
#define GAP_SUMS                                                                                                   \
    "SELECT CAST(COALESCE(SUM(CASE WHEN state = 'open' THEN 1 ELSE 0 END), 0) AS BIGINT), "                      \
    "CAST(COALESCE(SUM(CASE WHEN state = 'open' THEN seq_last - seq_first + 1 ELSE 0 END), 0) AS BIGINT), "      \
    "CAST(COALESCE(SUM(CASE WHEN state = 'lost' THEN seq_last - seq_first + 1 ELSE 0 END), 0) AS BIGINT), "      \
    "CAST(COALESCE(SUM(CASE WHEN state = 'explained' THEN seq_last - seq_first + 1 ELSE 0 END), 0) AS BIGINT) "  \
    "FROM gaps"
    stats_row_t r = {{0}};
    if (st == KEEL_OK)
        st = keel_fleet_db_exec(db, device != NULL ? GAP_SUMS " WHERE device = $1" : GAP_SUMS, p, np, stats_row, &r,
                                NULL);
#undef GAP_SUMS
    if (st == KEEL_OK) {
        out->messages = (uint64_t)msgs;
        out->open_gaps = (uint64_t)r.v[0];
        out->open_missing = (uint64_t)r.v[1];
        out->lost = (uint64_t)r.v[2];
        out->explained = (uint64_t)r.v[3];
    }
    return st;
}

/* ---- alerts --------------------------------------------------------------------------------------- */

keel_status_t keel_fleet_alert_add(keel_fleet_db_t *db, const keel_fleet_alert_t *a, bool *added)
{
    if (added != NULL)
        *added = false;
    if (db == NULL || a == NULL || !keel_fleet_word_ok(a->kind, WORD_MAX, false) ||
        (a->device != NULL && !id_ok(a->device)) || a->severity == NULL ||
        !keel_fleet_word_ok(a->dedupe, DEDUPE_MAX, true) || a->detail == NULL || a->time < 0)
        return keel_errorf(KEEL_ERR_ARG, "alert: bad kind, device, dedupe key, detail or time");
    if (strcmp(a->severity, "info") != 0 && strcmp(a->severity, "warning") != 0 &&
        strcmp(a->severity, "critical") != 0)
        return keel_errorf(KEEL_ERR_ARG, "alert: severity must be info, warning or critical");
    size_t dl = strnlen(a->detail, ALERT_DETAIL_MAX + 1);
    if (dl > ALERT_DETAIL_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "alert: detail longer than %u bytes", ALERT_DETAIL_MAX);
    json_t *d = json_loadb(a->detail, dl, JSON_REJECT_DUPLICATES, NULL);
    bool obj = json_is_object(d);
    json_decref(d);
    if (!obj)
        return keel_errorf(KEEL_ERR_FORMAT, "alert: detail is not a JSON object");
    char id[17];
    keel_fleet_random_hex(id, 8);
    keel_fleet_val_t p[] = {KEEL_FV_S(id),       KEEL_FV_I(a->time),   KEEL_FV_S(a->kind),  KEEL_FV_S(a->device),
                            KEEL_FV_S(a->severity), KEEL_FV_S(a->detail), KEEL_FV_S(a->dedupe)};
    uint64_t changed = 0;
    keel_status_t st = keel_fleet_db_exec(db,
                                          "INSERT INTO alerts (id, at, kind, device, severity, detail, dedupe) "
                                          "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (dedupe) DO NOTHING",
                                          p, 7, NULL, NULL, &changed);
    if (st == KEEL_OK && added != NULL)
        *added = changed > 0;
    return st;
}

keel_status_t keel_fleet_alert_list(keel_fleet_db_t *db, int64_t since, const char *kind, const char *device,
                                    unsigned limit, json_t **out)
{
    if (db == NULL || out == NULL || limit < 1 || limit > ALERT_LIST_MAX ||
        (kind != NULL && !keel_fleet_word_ok(kind, WORD_MAX, false)) || (device != NULL && !id_ok(device)))
        return keel_errorf(KEEL_ERR_ARG, "alert list: bad limit (1..%u), kind or device", ALERT_LIST_MAX);
    static const char *const names[] = {"id", "time", "kind", "device", "severity", "detail"};
#define ALERT_SEL "SELECT id, at, kind, device, severity, detail FROM alerts WHERE at >= $1"
#define ALERT_END " ORDER BY at DESC, id DESC LIMIT $2"
    static const char *const sql[] = {
        ALERT_SEL ALERT_END,
        ALERT_SEL " AND kind = $3" ALERT_END,
        ALERT_SEL " AND device = $3" ALERT_END,
        ALERT_SEL " AND kind = $3 AND device = $4" ALERT_END,
    };
#undef ALERT_SEL
#undef ALERT_END
    keel_fleet_val_t p[4] = {KEEL_FV_I(since), KEEL_FV_I(limit)};
    unsigned np = 2, which = 0;
    if (kind != NULL) {
        p[np++] = KEEL_FV_S(kind);
        which |= 1;
    }
    if (device != NULL) {
        p[np++] = KEEL_FV_S(device);
        which |= 2;
    }
    return keel_fleet_query_json(db, sql[which], p, np, "sisssj", names, limit, out);
}

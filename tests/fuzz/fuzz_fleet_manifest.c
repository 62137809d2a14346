/*
 * Fuzz target: the factory manifest an operator imports into keel-fleetd's
 * registry (POST /api/v1/devices/import, keel_fleet_import_manifest in
 * src/fleet/store.c). The manifest decides which certificates the fleet
 * trusts as which device, so it is parsed as hostile: the input is JSON (as
 * the admin API reads it, duplicate keys refused) imported into a SQLite
 * database opened once per process in a temporary directory (the import
 * runs its own transaction; the registry is emptied after each input).
 *
 * The repository holds no certificate (scripts/secret-scan.sh), so the
 * seeds name two devices by placeholders that are replaced before parsing:
 * @ID1@ (the id), @SHA1@ (cert_sha256 as the manifest writes it, colon
 * hex), @HEX1@ (plain hex), @PEM1@ (the certificate, JSON-escaped), @B64_1@
 * (its base64 lines alone), @BEGIN@ / @END@ (the armour lines); the same
 * with 2. The two devices are made in LLVMFuzzerInitialize from fixed
 * Ed25519 seeds with fixed serials and dates, so every run has the same
 * certificates and a failure reproduces. Test keys, public by design.
 *
 * What must hold: a refused import writes nothing; a taken one adds exactly
 * the devices it counts, and every device in the registry has a
 * cert_sha256 that is the SHA-256 of its certificate's DER (decoded from the
 * stored PEM independently of the X.509 parser), a certificate whose only
 * CN is the id, and an id derived from the certificate's key.
 */
#include "fuzz.h"

#include "keel/crypto.h"
#include "keel/fleet_db.h"
#include "keel/fleet_store.h"
#include "keel/identity.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXPANDED_MAX (1u << 20)

static keel_fleet_db_t *db;
static char dir[256];

typedef struct {
    char id[KEEL_DEVICE_ID_LEN + 1];
    char sha[KEEL_FINGERPRINT_LEN], hex[65];
    char pem[2048], b64[2048]; /* JSON-escaped: "\n" for each newline */
} tdev_t;
static tdev_t devs[2];
static char *expanded;

static void cleanup(void)
{
    keel_fleet_db_close(db);
    db = NULL;
    free(expanded);
    expanded = NULL;
    static const char *const files[] = {"fleet.db", "fleet.db-wal", "fleet.db-shm"};
    char path[512];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* text with each newline as the two characters \n (for a JSON string) */
static void json_lines(const char *in, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 3 < cap; i++) {
        if (in[i] == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = in[i];
        }
    }
    out[o] = '\0';
}

static bool tdev_try(tdev_t *d, int n, long serial);

/* A self-signed Ed25519 certificate, CN = the id its key derives, all fixed.
 * Its serial is the first of n, 0x100 + n, 0x10000 + n, ... that makes the
 * DER a multiple of 3 bytes long: base64 without padding, so text appended
 * to @B64_1@ decodes to bytes after the certificate. */
static void tdev_make(tdev_t *d, int n)
{
    for (long serial = n; serial < 0x1000000000L; serial = serial * 256 + n)
        if (tdev_try(d, n, serial))
            return;
    fuzz_must(0, "no test certificate of a length that is a multiple of 3");
}

static bool tdev_try(tdev_t *d, int n, long serial)
{
    char label[64];
    uint8_t seed[KEEL_SHA256_LEN];
    snprintf(label, sizeof label, "keel fuzz_fleet_manifest test device %d", n);
    keel_sha256(label, strlen(label), seed);
    EVP_PKEY *key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, sizeof seed);
    keel_wipe(seed, sizeof seed);
    X509 *x = X509_new();
    fuzz_must(key != NULL && x != NULL && keel_identity_device_id(key, d->id) == KEEL_OK, "test device key");
    X509_NAME *name = X509_get_subject_name(x);
    fuzz_must(X509_set_version(x, 2) == 1 && ASN1_INTEGER_set(X509_get_serialNumber(x), serial) == 1 &&
             ASN1_TIME_set(X509_getm_notBefore(x), 1700000000) != NULL &&
             ASN1_TIME_set(X509_getm_notAfter(x), 2000000000) != NULL &&
             X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)d->id, -1, -1, 0) == 1 &&
             X509_set_issuer_name(x, name) == 1 && X509_set_pubkey(x, key) == 1 && X509_sign(x, key, NULL) > 0 &&
             keel_identity_fingerprint(x, d->sha) == KEEL_OK,
         "test device certificate");
    unsigned char *der = NULL;
    int dl = i2d_X509(x, &der);
    uint8_t h[KEEL_SHA256_LEN];
    fuzz_must(dl > 0, "test device DER");
    if (dl % 3 != 0) {
        OPENSSL_free(der);
        X509_free(x);
        EVP_PKEY_free(key);
        return false;
    }
    keel_sha256(der, (size_t)dl, h);
    fuzz_must(keel_hex_encode(h, sizeof h, d->hex, sizeof d->hex) == KEEL_OK, "test device hash");
    OPENSSL_free(der);
    BIO *b = BIO_new(BIO_s_mem());
    char *p = NULL;
    fuzz_must(b != NULL && PEM_write_bio_X509(b, x) == 1, "test device PEM");
    long len = BIO_get_mem_data(b, &p);
    json_lines(p, (size_t)len, d->pem, sizeof d->pem);
    /* the base64 lines: between the armour's two lines */
    const char *s = memchr(p, '\n', (size_t)len), *e = NULL;
    for (const char *q = p + len - 2; q > p && e == NULL; q--)
        if (*q == '\n')
            e = q;
    fuzz_must(s != NULL && e != NULL && e > s, "test device base64");
    json_lines(s + 1, (size_t)(e - s - 1), d->b64, sizeof d->b64);
    BIO_free(b);
    X509_free(x);
    EVP_PKEY_free(key);
    return true;
}

/* The input with its placeholders replaced; NULL when the result would be over EXPANDED_MAX. */
static const char *expand(const uint8_t *data, size_t size, size_t *out_len)
{
    const char *names[] = {"@ID1@", "@SHA1@", "@HEX1@", "@PEM1@", "@B64_1@",
                           "@ID2@", "@SHA2@", "@HEX2@", "@PEM2@", "@B64_2@", "@BEGIN@", "@END@"};
    const char *values[] = {devs[0].id, devs[0].sha, devs[0].hex, devs[0].pem, devs[0].b64,
                            devs[1].id, devs[1].sha, devs[1].hex, devs[1].pem, devs[1].b64,
                            "-----BEGIN CERTIFICATE-----", /* the armour only: secret-scan: allow */
                            "-----END CERTIFICATE-----"};
    size_t o = 0;
    for (size_t i = 0; i < size;) {
        size_t k = 0, nl = 0;
        if (data[i] == '@')
            for (k = 0; k < sizeof names / sizeof names[0]; k++) {
                nl = strlen(names[k]);
                if (size - i >= nl && memcmp(data + i, names[k], nl) == 0)
                    break;
            }
        const char *v = data[i] == '@' && k < sizeof names / sizeof names[0] ? values[k] : NULL;
        size_t vl = v != NULL ? strlen(v) : 1;
        if (o + vl > EXPANDED_MAX)
            return NULL;
        if (v != NULL) {
            memcpy(expanded + o, v, vl);
            i += nl;
        } else {
            expanded[o] = (char)data[i++];
        }
        o += vl;
    }
    *out_len = o;
    return expanded;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    tdev_make(&devs[0], 1);
    tdev_make(&devs[1], 2);
    expanded = malloc(EXPANDED_MAX);
    fuzz_must(expanded != NULL, "out of memory");
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/keel-fuzz-manifest-XXXXXX", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    fuzz_must(mkdtemp(dir) != NULL, "mkdtemp");
    char url[512];
    snprintf(url, sizeof url, "sqlite:%s/fleet.db", dir);
    if (keel_fleet_db_open(url, &db) != KEEL_OK) {
        fprintf(stderr, "fuzz_fleet_manifest: open %s: %s\n", url, keel_error_message());
        abort();
    }
    atexit(cleanup);
    return 0;
}

/* The stored certificate, checked against its row without the importer's code path. */
static keel_status_t device_row(void *arg, const keel_fleet_val_t *c, unsigned n)
{
    unsigned *rows = arg;
    (*rows)++;
    fuzz_must(n == 3 && c[0].type == KEEL_FV_TEXT && c[1].type == KEEL_FV_TEXT && c[2].type == KEEL_FV_TEXT,
         "a registry row without id, cert_sha256 or certificate");
    char id[KEEL_FLEET_ID_MAX + 1], sha[65];
    fuzz_must(c[0].len <= KEEL_FLEET_ID_MAX && c[1].len == 64, "a registry row with an id or cert_sha256 of odd length");
    memcpy(id, c[0].s, c[0].len);
    id[c[0].len] = '\0';
    memcpy(sha, c[1].s, 64);
    sha[64] = '\0';

    /* the PEM's own bytes (base64 decoded), not what an X509 re-encodes */
    BIO *b = BIO_new_mem_buf(c[2].s, (int)c[2].len);
    char *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    long dl = 0;
    fuzz_must(b != NULL && PEM_read_bio(b, &name, &header, &der, &dl) == 1 && dl > 0,
         "a registered certificate is not PEM");
    fuzz_must(strcmp(name, PEM_STRING_X509) == 0, "a registered certificate is not a CERTIFICATE block");
    uint8_t h[KEEL_SHA256_LEN];
    char hex[65];
    keel_sha256(der, (size_t)dl, h);
    fuzz_must(keel_hex_encode(h, sizeof h, hex, sizeof hex) == KEEL_OK && strcmp(hex, sha) == 0,
         "a registered device's cert_sha256 is not its certificate's");

    const unsigned char *q = der;
    X509 *x = d2i_X509(NULL, &q, dl);
    fuzz_must(x != NULL && q == der + dl, "a registered certificate's DER does not parse whole");
    X509_NAME *sub = X509_get_subject_name(x);
    int at = X509_NAME_get_index_by_NID(sub, NID_commonName, -1);
    fuzz_must(at >= 0 && X509_NAME_get_index_by_NID(sub, NID_commonName, at) < 0, "a registered certificate's CN count");
    const ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(sub, at));
    fuzz_must((size_t)ASN1_STRING_length(cn) == strlen(id) && memcmp(ASN1_STRING_get0_data(cn), id, strlen(id)) == 0,
         "a registered certificate's CN is not the id");
    char derived[KEEL_DEVICE_ID_LEN + 1];
    fuzz_must(keel_identity_device_id(X509_get0_pubkey(x), derived) == KEEL_OK && strcmp(derived, id) == 0,
         "a registered id is not derived from its certificate's key");
    X509_free(x);
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    BIO_free(b);
    ERR_clear_error();
    return KEEL_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t len = 0;
    const char *text = expand(data, size, &len);
    if (text == NULL)
        return 0;
    json_error_t e;
    json_t *m = json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);
    if (m == NULL)
        return 0;
    keel_fleet_import_stats_t s = {0};
    keel_status_t st = keel_fleet_import_manifest(db, m, 1700000000, &s);
    json_decref(m);
    fuzz_must(st != KEEL_ERR_BUSY && st != KEEL_ERR_DB, "the database failed under the import");
    fuzz_must(!keel_fleet_db_in_tx(db), "the import left a transaction open");
    unsigned rows = 0;
    fuzz_must(keel_fleet_db_exec(db, "SELECT id, cert_sha256, certificate FROM devices", NULL, 0, device_row, &rows,
                            NULL) == KEEL_OK,
         "the registry does not read back");
    if (st == KEEL_OK)
        fuzz_must(rows == s.added, "the registry does not hold the devices the import counted");
    else
        fuzz_must(rows == 0, "a refused import wrote to the registry");
    keel_error_clear();
    if (rows > 0)
        fuzz_must(keel_fleet_db_exec(db, "DELETE FROM device_seq", NULL, 0, NULL, NULL, NULL) == KEEL_OK &&
                 keel_fleet_db_exec(db, "DELETE FROM devices", NULL, 0, NULL, NULL, NULL) == KEEL_OK,
             "the registry does not empty");
    return 0;
}

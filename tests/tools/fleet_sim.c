/*
 * fleet_sim: a simulated fleet for keel-fleetd's tests and bench/fleet_ingest.sh
 * (docs/internals/fleet-sim.md).
 *
 *   fleet_sim manifest --count N --model M --issuing-cert F --issuing-key F --org O --out DIR
 *     N devices: a P-256 key each (DIR/<id>.key, 0600), its id derived from the
 *     key as keeld's is, a certificate from the device issuing CA with the
 *     profile of keel_factory_issue_device (DIR/<id>.crt), and DIR/manifest.json
 *     in the keel-manifest-1 format of `keel factory provision`.
 *
 *   fleet_sim publish --broker HOST:PORT --ca SERVICE_ROOT --chain ISSUING_CHAIN --devices DIR
 *                     --messages M [--count N] [--rate R] [--size BYTES] [--dup-every K]
 *                     [--skip-every K] [--seq-start S] [--anomaly A]... [--state] [--window W]
 *                     [--connect-window C] [--server-name NAME] [--timeout S] [--json]
 *     One MQTT v5 client per device, each with its own certificate (client id =
 *     device id), all driven by one thread with poll(). Each publishes M QoS 1
 *     telemetry envelopes with seq S, S+1, ... on keel/v1/<id>/telemetry, at most
 *     W unacknowledged at a time; R is the total rate (0: as fast as the broker
 *     takes them). Publishing starts once every client is connected. Anomalies
 *     (first device of the manifest): flood, big, reconnect, auth, tamper,
 *     unreleased:VERSION, rollback:SV. Prints a summary (JSON with --json).
 *
 * Exit: 0 when every message was acknowledged, 1 otherwise (failed clients,
 * refused or unacknowledged messages, timeout), 2 usage or setup error.
 */
#include "keel/crypto.h"
#include "keel/factory.h"
#include "keel/identity.h"
#include "keel/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <openssl/core_names.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SIM_DEVICES_MAX 100000u
#define SIM_MANIFEST_MAX (256u * 1024u * 1024u)
#define SIM_PEM_MAX (16u * 1024u)
#define SIM_PAYLOAD_MAX (64u * 1024u) /* keel-fleetd's FLEETD_PAYLOAD_MAX */
#define SIM_WINDOW_MAX 1000u
#define SIM_TOPIC_MAX 160
#define SIM_VERSION_MAX 64            /* as KEEL_FLEET_VERSION_MAX */
#define SIM_BIG_BYTES 12000u          /* the "big" message: far above 250-byte telemetry, under 16 KiB */
#define SIM_FLOOD_FACTOR 10u
#define SIM_RECONNECTS 20u
#define SIM_AUTH_FAILURES 50u
#define SIM_CONNECT_TIMEOUT 30.0
#define DEVICE_NOT_AFTER "99991231235959Z" /* as src/factory/pki.c: IEEE 802.1AR, no expiry */

static void usage(void)
{
    fprintf(stderr,
            "usage: fleet_sim manifest --count N --model M --issuing-cert F --issuing-key F --org O --out DIR\n"
            "       fleet_sim publish --broker HOST:PORT --ca SERVICE_ROOT --chain ISSUING_CHAIN --devices DIR\n"
            "                 --messages M [--count N] [--rate R] [--size BYTES] [--dup-every K] [--skip-every K]\n"
            "                 [--seq-start S] [--anomaly flood|big|reconnect|auth|tamper|unreleased:V|rollback:SV]\n"
            "                 [--state] [--window W] [--connect-window C] [--server-name NAME] [--timeout S]\n"
            "                 [--json]\n");
    exit(2);
}

static void die(const char *what)
{
    fprintf(stderr, "fleet_sim: %s: %s\n", what, keel_error_message());
    exit(2);
}

/* Setup errors: a message with one string argument, exit 2. */
#define dief(fmt, arg)                                                                                        \
    do {                                                                                                       \
        fprintf(stderr, "fleet_sim: " fmt "\n", arg);                                                          \
        exit(2);                                                                                               \
    } while (0)

static uint64_t parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "fleet_sim: %s: a whole number in %" PRIu64 "..%" PRIu64 " expected\n", opt, min, max);
        exit(2);
    }
    return (uint64_t)v;
}

/* ---- manifest ------------------------------------------------------------------------ */

static EVP_PKEY *load_key(const char *path)
{
    BIO *b = BIO_new_file(path, "r");
    EVP_PKEY *k = b != NULL ? PEM_read_bio_PrivateKey(b, NULL, NULL, (void *)"") : NULL;
    BIO_free(b);
    return k;
}

static X509 *load_cert(const char *path)
{
    BIO *b = BIO_new_file(path, "r");
    X509 *x = b != NULL ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    return x;
}

static int org_ok(const char *org)
{
    size_t n = strlen(org);
    if (n == 0 || n > KEEL_ORG_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)org[i] < 0x20 || (unsigned char)org[i] > 0x7e || org[i] == '"' || org[i] == '\\')
            return 0;
    return 1;
}

/*
 * Speed: OpenSSL 3 spends about 120 us in its encoder framework for every
 * i2d_PUBKEY or PEM_write of a key, several times a device. The key's two
 * DER forms are fixed layouts for P-256, so they are built here from the raw
 * key (the public point and the 32-byte scalar), and the certificate's
 * public key is set from the bytes. The first device of every run is
 * checked against OpenSSL's own encoders and keel_identity_device_id, so a
 * mistake here cannot go unnoticed.
 */
#define P256_POINT 65
#define P256_SCALAR 32
#define SPKI_LEN 91
#define PKCS8_LEN 138
static const uint8_t spki_prefix[26] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                                        0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00};
static const uint8_t pkcs8_prefix[36] = {0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86,
                                         0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
                                         0x03, 0x01, 0x07, 0x04, 0x6d, 0x30, 0x6b, 0x02, 0x01, 0x01, 0x04, 0x20};
static const uint8_t pkcs8_mid[5] = {0xa1, 0x44, 0x03, 0x42, 0x00};

typedef struct {
    uint8_t spki[SPKI_LEN];
    uint8_t pkcs8[PKCS8_LEN]; /* secret: wiped */
} raw_key_t;

static keel_status_t raw_key(EVP_PKEY *k, raw_key_t *r)
{
    uint8_t point[P256_POINT];
    size_t plen = 0;
    BIGNUM *d = NULL;
    if (EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point, &plen) != 1 ||
        plen != P256_POINT || point[0] != 0x04 || EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_PRIV_KEY, &d) != 1)
        return keel_crypto_error(KEEL_ERR_CRYPTO, "P-256 key parameters");
    memcpy(r->spki, spki_prefix, sizeof spki_prefix);
    memcpy(r->spki + sizeof spki_prefix, point, P256_POINT);
    uint8_t *q = r->pkcs8;
    memcpy(q, pkcs8_prefix, sizeof pkcs8_prefix);
    q += sizeof pkcs8_prefix;
    int ok = BN_bn2binpad(d, q, P256_SCALAR) == P256_SCALAR;
    BN_clear_free(d);
    q += P256_SCALAR;
    memcpy(q, pkcs8_mid, sizeof pkcs8_mid);
    memcpy(q + sizeof pkcs8_mid, point, P256_POINT);
    return ok ? KEEL_OK : keel_crypto_error(KEEL_ERR_CRYPTO, "P-256 private scalar");
}

/* PEM of DER bytes (64-column base64, as OpenSSL writes it) into out. */
static keel_status_t pem_of(const char *label, const uint8_t *der, size_t len, keel_buf_t *out)
{
    uint8_t b64[4 * ((2048 + 2) / 3) + 1];
    if (len > 2048)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "PEM: %zu bytes", len);
    int n = EVP_EncodeBlock(b64, der, (int)len);
    keel_status_t st = keel_buf_printf(out, "-----BEGIN %s-----\n", label);
    for (int i = 0; st == KEEL_OK && i < n; i += 64) {
        st = keel_buf_append(out, b64 + i, (size_t)(n - i < 64 ? n - i : 64));
        if (st == KEEL_OK)
            st = keel_buf_append(out, "\n", 1);
    }
    if (st == KEEL_OK)
        st = keel_buf_printf(out, "-----END %s-----\n", label);
    keel_wipe(b64, sizeof b64);
    return st;
}

/* The profile of keel_factory_issue_device (src/factory/pki.c make_cert):
 * subject O, OU = model, CN = id, serialNumber; a random positive 128-bit
 * serial; notBefore an hour back, notAfter 9999-12-31; the same five
 * extensions in the same order; ECDSA-SHA256 by the issuing CA. */
static keel_status_t issue_device(X509 *issuer, EVP_PKEY *issuer_key, const uint8_t *point, const char *org,
                                  const char *model, const char *id, const char *serial, X509 **out)
{
    static const int nids[] = {NID_basic_constraints, NID_key_usage, NID_ext_key_usage, NID_subject_key_identifier,
                               NID_authority_key_identifier};
    static const char *const vals[] = {"critical,CA:FALSE", "critical,digitalSignature", "clientAuth,serverAuth",
                                       "hash", "keyid:always"};
    keel_status_t st = KEEL_OK;
    X509 *c = X509_new();
    X509_NAME *name = X509_NAME_new();
    uint8_t raw[16];
    keel_random_bytes(raw, sizeof raw);
    raw[0] &= 0x7f;
    raw[0] |= 0x01;
    BIGNUM *bn = BN_bin2bn(raw, sizeof raw, NULL);
    ASN1_INTEGER *ai = bn != NULL ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
    unsigned char *penc = OPENSSL_memdup(point, P256_POINT);
    const char *fields[4][2] = {{"O", org}, {"OU", model}, {"CN", id}, {"serialNumber", serial}};
    if (c == NULL || name == NULL || ai == NULL || penc == NULL) {
        OPENSSL_free(penc);
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* set0_param takes penc on success only */
    if (X509_PUBKEY_set0_param(X509_get_X509_PUBKEY(c), OBJ_nid2obj(NID_X9_62_id_ecPublicKey), V_ASN1_OBJECT,
                               OBJ_nid2obj(NID_X9_62_prime256v1), penc, P256_POINT) != 1) {
        OPENSSL_free(penc);
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "certificate public key");
        goto out;
    }
    for (int i = 0; i < 4; i++)
        if (X509_NAME_add_entry_by_txt(name, fields[i][0], MBSTRING_UTF8, (const unsigned char *)fields[i][1], -1,
                                       -1, 0) != 1) {
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "certificate name");
            goto out;
        }
    if (X509_set_version(c, X509_VERSION_3) != 1 || X509_set_subject_name(c, name) != 1 ||
        X509_set_issuer_name(c, X509_get_subject_name(issuer)) != 1 || X509_set_serialNumber(c, ai) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(c), -3600) == NULL ||
        ASN1_TIME_set_string_X509(X509_getm_notAfter(c), DEVICE_NOT_AFTER) != 1) {
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "certificate fields");
        goto out;
    }
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, c, NULL, NULL, 0);
    for (size_t i = 0; i < sizeof nids / sizeof nids[0]; i++) {
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nids[i], vals[i]);
        int ok = ext != NULL && X509_add_ext(c, ext, -1) == 1;
        X509_EXTENSION_free(ext);
        if (!ok) {
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "certificate extension");
            goto out;
        }
    }
    if (X509_sign(c, issuer_key, EVP_sha256()) <= 0)
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "certificate signature");
out:
    ASN1_INTEGER_free(ai);
    BN_free(bn);
    X509_NAME_free(name);
    if (st != KEEL_OK) {
        X509_free(c);
        c = NULL;
    }
    *out = c;
    return st;
}

/* A new file (never an existing one, never through a link) with `len` bytes. */
static keel_status_t write_new(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return keel_errorf(errno == EEXIST ? KEEL_ERR_EXISTS : KEEL_ERR_IO, "%s: %s", path, strerror(errno));
    const char *p = data;
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, p + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            return keel_errorf(KEEL_ERR_IO, "%s: %s", path, strerror(e));
        }
        done += (size_t)w;
    }
    if (close(fd) != 0)
        return keel_errorf(KEEL_ERR_IO, "%s: %s", path, strerror(errno));
    return KEEL_OK;
}

/* One device's entry, as `keel factory provision` writes it: device.json's
 * keys (dumped sorted, "format" dropped) and then "certificate". */
static json_t *device_entry(const char *id, const char *serial, const char *model, const char *org, const char *fp,
                            json_int_t provisioned, const char *pem)
{
    json_t *d = json_object();
    if (d == NULL || json_object_set_new(d, "cert_sha256", json_string(fp)) != 0 ||
        json_object_set_new(d, "id", json_string(id)) != 0 ||
        json_object_set_new(d, "key_label", json_string(KEEL_DEVICE_KEY_LABEL)) != 0 ||
        json_object_set_new(d, "keystore", json_string("file")) != 0 ||
        json_object_set_new(d, "model", json_string(model)) != 0 ||
        json_object_set_new(d, "org", json_string(org)) != 0 ||
        json_object_set_new(d, "provisioned", json_integer(provisioned)) != 0 ||
        json_object_set_new(d, "serial", json_string(serial)) != 0 ||
        json_object_set_new(d, "certificate", json_string(pem)) != 0) {
        json_decref(d);
        return NULL;
    }
    return d;
}

typedef struct {
    const char *out, *model, *org;
    X509 *issuer;
    EVP_PKEY *issuer_key;
    json_int_t now;
    size_t first, n;     /* this worker's devices */
    json_t **entries;    /* shared array, one slot per device */
    keel_status_t st;
    char err[KEEL_ERROR_MAX];
} mjob_t;

/* The first device's key in OpenSSL's own encodings and keel's id function. */
static keel_status_t self_check(EVP_PKEY *key, const raw_key_t *r, const char *id)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(key, &der);
    bool spki_ok = n == SPKI_LEN && memcmp(der, r->spki, SPKI_LEN) == 0;
    OPENSSL_free(der);
    der = NULL;
    n = i2d_PrivateKey(key, &der);
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(key);
    unsigned char *p8der = NULL;
    int n8 = p8 != NULL ? i2d_PKCS8_PRIV_KEY_INFO(p8, &p8der) : -1;
    bool pkcs8_ok = n8 == PKCS8_LEN && memcmp(p8der, r->pkcs8, PKCS8_LEN) == 0;
    if (der != NULL)
        OPENSSL_clear_free(der, (size_t)n);
    if (p8der != NULL)
        OPENSSL_clear_free(p8der, (size_t)n8);
    PKCS8_PRIV_KEY_INFO_free(p8);
    char want[KEEL_DEVICE_ID_LEN + 1];
    keel_status_t st = keel_identity_device_id(key, want);
    if (st != KEEL_OK)
        return st;
    if (!spki_ok || !pkcs8_ok || strcmp(want, id) != 0)
        return keel_errorf(KEEL_ERR_CRYPTO, "self-check: the hand-built key encodings differ from OpenSSL's "
                                            "(spki %d, pkcs8 %d, id %d)", spki_ok, pkcs8_ok, strcmp(want, id) == 0);
    return KEEL_OK;
}

static keel_status_t make_one(mjob_t *j, size_t idx, EVP_PKEY_CTX *kctx)
{
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    raw_key_t r;
    keel_buf_t kpem, cpem;
    keel_buf_init(&kpem, 4096);
    keel_buf_init(&cpem, 4096);
    char id[KEEL_DEVICE_ID_LEN + 1], serial[KEEL_SERIAL_LEN + 1], fp[KEEL_FINGERPRINT_LEN];
    char path[KEEL_PATH_MAX], name[KEEL_DEVICE_ID_LEN + 8];
    uint8_t h[KEEL_SHA256_LEN];
    unsigned char *der = NULL;
    keel_identity_new_serial(serial);
    keel_status_t st = EVP_PKEY_keygen(kctx, &key) == 1 ? KEEL_OK : keel_crypto_error(KEEL_ERR_CRYPTO, "keygen");
    if (st == KEEL_OK)
        st = raw_key(key, &r);
    if (st == KEEL_OK) {
        /* keel_identity_device_id: base32 of the first 16 bytes of SHA-256(SPKI) */
        keel_sha256(r.spki, SPKI_LEN, h);
        st = keel_base32_encode(h, 16, id, sizeof id);
    }
    if (st == KEEL_OK && idx == 0)
        st = self_check(key, &r, id);
    if (st == KEEL_OK)
        st = issue_device(j->issuer, j->issuer_key, r.spki + sizeof spki_prefix, j->org, j->model, id, serial, &cert);
    if (st == KEEL_OK)
        st = keel_identity_fingerprint(cert, fp);
    if (st == KEEL_OK)
        st = pem_of("PRIVATE KEY", r.pkcs8, PKCS8_LEN, &kpem);
    int dlen = st == KEEL_OK ? i2d_X509(cert, &der) : -1;
    if (st == KEEL_OK)
        st = dlen > 0 ? pem_of("CERTIFICATE", der, (size_t)dlen, &cpem)
                      : keel_crypto_error(KEEL_ERR_CRYPTO, "certificate DER");
    if (st == KEEL_OK && (st = keel_snprintf(name, sizeof name, "%s.key", id)) == KEEL_OK &&
        (st = keel_path_join(path, sizeof path, j->out, name)) == KEEL_OK)
        st = write_new(path, kpem.data, kpem.len, 0600);
    if (st == KEEL_OK && (st = keel_snprintf(name, sizeof name, "%s.crt", id)) == KEEL_OK &&
        (st = keel_path_join(path, sizeof path, j->out, name)) == KEEL_OK)
        st = write_new(path, cpem.data, cpem.len, 0644);
    if (st == KEEL_OK &&
        (j->entries[idx] = device_entry(id, serial, j->model, j->org, fp, j->now, (const char *)cpem.data)) == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_wipe(&r, sizeof r);
    keel_buf_free(&kpem);
    keel_buf_free(&cpem);
    OPENSSL_free(der);
    EVP_PKEY_free(key);
    X509_free(cert);
    return st;
}

static void *mworker(void *arg)
{
    mjob_t *j = arg;
    EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    j->st = kctx != NULL && EVP_PKEY_keygen_init(kctx) == 1 &&
                    EVP_PKEY_CTX_set_group_name(kctx, "P-256") == 1
                ? KEEL_OK
                : keel_crypto_error(KEEL_ERR_CRYPTO, "P-256 key generation");
    for (size_t i = j->first; j->st == KEEL_OK && i < j->first + j->n; i++)
        j->st = make_one(j, i, kctx);
    if (j->st != KEEL_OK)
        snprintf(j->err, sizeof j->err, "%s", keel_error_message());
    EVP_PKEY_CTX_free(kctx);
    return NULL;
}

static int cmp_entry_id(const void *a, const void *b)
{
    return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "id")),
                  json_string_value(json_object_get(*(json_t *const *)b, "id")));
}

static int manifest_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"count", required_argument, NULL, 'n'},        {"model", required_argument, NULL, 'm'},
        {"issuing-cert", required_argument, NULL, 'c'}, {"issuing-key", required_argument, NULL, 'k'},
        {"org", required_argument, NULL, 'o'},          {"out", required_argument, NULL, 'd'},
        {NULL, 0, NULL, 0}};
    uint64_t count = 0;
    const char *model = NULL, *cert_path = NULL, *key_path = NULL, *org = NULL, *out = NULL;
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'n': count = parse_u64("--count", optarg, 1, SIM_DEVICES_MAX); break;
        case 'm': model = optarg; break;
        case 'c': cert_path = optarg; break;
        case 'k': key_path = optarg; break;
        case 'o': org = optarg; break;
        case 'd': out = optarg; break;
        default: usage();
        }
    }
    if (optind != argc || count == 0 || model == NULL || cert_path == NULL || key_path == NULL || org == NULL ||
        out == NULL)
        usage();
    if (!keel_identity_model_ok(model))
        dief("--model %s: 1..64 characters of [A-Za-z0-9._-]", model);
    if (!org_ok(org))
        dief("--org %s: 1..45 printable characters without '\"' and '\\'", org);
    X509 *issuer = load_cert(cert_path);
    if (issuer == NULL)
        dief("%s: no PEM certificate", cert_path);
    EVP_PKEY *issuer_key = load_key(key_path);
    if (issuer_key == NULL)
        dief("%s: no unencrypted PEM private key", key_path);
    if (X509_check_private_key(issuer, issuer_key) != 1)
        dief("%s: not the key of the issuing certificate", key_path);
    if (X509_check_ca(issuer) == 0)
        dief("%s: not a CA certificate", cert_path);
    if (keel_dir_make(out, 0700) != KEEL_OK)
        die(out);

    double t0 = keel_now();
    size_t n = (size_t)count;
    json_t **entries = calloc(n, sizeof *entries);
    if (entries == NULL)
        die("out of memory");
    /* One worker per CPU (at most 8): each device is independent. */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nw = cpus < 1 ? 1 : cpus > 8 ? 8 : (size_t)cpus;
    if (nw > n)
        nw = n;
    mjob_t jobs[8];
    pthread_t th[8];
    size_t per = n / nw, extra = n % nw, first = 0;
    for (size_t w = 0; w < nw; w++) {
        jobs[w] = (mjob_t){.out = out, .model = model, .org = org, .issuer = issuer, .issuer_key = issuer_key,
                           .now = (json_int_t)time(NULL), .first = first, .n = per + (w < extra),
                           .entries = entries};
        first += jobs[w].n;
        if (pthread_create(&th[w], NULL, mworker, &jobs[w]) != 0)
            dief("%s", "pthread_create failed");
    }
    bool failed = false;
    for (size_t w = 0; w < nw; w++) {
        pthread_join(th[w], NULL);
        if (jobs[w].st != KEEL_OK) {
            fprintf(stderr, "fleet_sim: device: %s\n", jobs[w].err);
            failed = true;
        }
    }
    if (failed)
        exit(2);
    /* The manifest lists devices sorted by id, as provision's directory scan does. */
    qsort(entries, n, sizeof *entries, cmp_entry_id);
    json_t *devs = json_array();
    if (devs == NULL)
        die("out of memory");
    for (size_t i = 0; i < n; i++)
        if (json_array_append_new(devs, entries[i]) != 0)
            die("out of memory");
    free(entries);
    json_t *m = json_pack("{s:s, s:s, s:I, s:o}", "format", "keel-manifest-1", "org", org, "generated",
                          (json_int_t)time(NULL), "devices", devs);
    char *txt = m != NULL ? json_dumps(m, JSON_INDENT(2)) : NULL;
    json_decref(m);
    if (txt == NULL)
        die("out of memory");
    char path[KEEL_PATH_MAX];
    if (keel_path_join(path, sizeof path, out, "manifest.json") != KEEL_OK ||
        keel_file_write_atomic(path, txt, strlen(txt), 0644) != KEEL_OK)
        die("manifest.json");
    free(txt);
    fprintf(stderr, "fleet_sim: %" PRIu64 " devices in %.2f s (%zu threads)\n", count, keel_now() - t0, nw);
    X509_free(issuer);
    EVP_PKEY_free(issuer_key);
    return 0;
}

/* ---- publish ------------------------------------------------------------------------- */

typedef enum {
    C_WAITING,    /* not connected yet */
    C_CONNECTING, /* TCP, TLS, CONNECT sent */
    C_ONLINE,
    C_CYCLING,    /* reconnect anomaly: disconnected on purpose, connects again */
    C_DONE,       /* finished and disconnected */
    C_FAILED,
} cstate_t;

typedef enum { M_BIG, M_AUTH, M_TAMPER, M_BOOT_HIGH, M_BOOT } mkind_t;

typedef struct {
    int mid;       /* 0 = free slot */
    bool dup;      /* the second copy of a seq */
    bool state;    /* the retained state message */
} slot_t;

typedef struct {
    char id[KEEL_DEVICE_ID_LEN + 1];
    char model[KEEL_MODEL_MAX + 1];
    char topic_tel[SIM_TOPIC_MAX], topic_ev[SIM_TOPIC_MAX], topic_state[SIM_TOPIC_MAX];
    struct mosquitto *mosq;
    X509 *cert;
    EVP_PKEY *key;
    cstate_t st;
    double started;               /* this connection attempt */
    uint64_t seq, seq_end;        /* next seq to consider; one past the last */
    uint64_t tel_end;             /* seqs below it are telemetry, the rest anomaly events */
    bool dup_pending;             /* republish seq - 1 */
    bool state_wanted;            /* publish the retained state after each CONNACK */
    bool state_pending, state_acked_this;
    unsigned inflight;
    slot_t *slots;
    unsigned reconnects_left;
    unsigned connects;
    /* set by callbacks, acted on by the loop */
    bool connack, lost;
    int connack_rc;
} client_t;

static struct {
    const char *broker, *server_name, *ca, *chain, *dir;
    char host[256];
    int port;
    uint64_t count, messages, rate, size, dup_every, skip_every, seq_start, timeout;
    unsigned window, connect_window;
    bool json, state_all;
    /* anomalies, on clients[0] */
    bool flood, big, reconnect, auth, tamper;
    char unreleased[SIM_VERSION_MAX + 1];
    int64_t rollback_sv;
    client_t *c;
    size_t n;
    STACK_OF(X509) *chain_certs; /* issuing CA(s), no root */
    client_t *current;           /* the client whose libmosquitto call is running */
    /* counters */
    uint64_t sent, acked, duplicates, skipped, refused, state_sent, state_acked, events_acked, failed, losses,
        cycles, identity_mismatch;
    double t_pub, t_last_ack;
    double wall_offset; /* Unix time - keel_now(), for the report's absolute times */
    unsigned connecting;
} S = {.rollback_sv = -1};

static char pad_bytes[SIM_PAYLOAD_MAX];

/* The device's identity for the handshake running now. libmosquitto makes
 * the SSL object from our one context; the certificate callback gives it
 * the certificate of the client whose call into libmosquitto is running
 * (one thread: only one is), and checks that it is that client's socket. */
static int cert_cb(SSL *ssl, void *arg)
{
    (void)arg;
    client_t *c = S.current;
    if (c == NULL || c->mosq == NULL || SSL_get_fd(ssl) != mosquitto_socket(c->mosq)) {
        S.identity_mismatch++;
        return 0;
    }
    if (SSL_use_certificate(ssl, c->cert) != 1 || SSL_use_PrivateKey(ssl, c->key) != 1)
        return 0;
    for (int i = 0; i < sk_X509_num(S.chain_certs); i++)
        if (SSL_add1_chain_cert(ssl, sk_X509_value(S.chain_certs, i)) != 1)
            return 0;
    return 1;
}

static SSL_CTX *client_context(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        die("SSL_CTX_new");
    const char *name = S.server_name != NULL ? S.server_name : S.host;
    if (keel_tls_policy(ctx) != KEEL_OK || keel_tls_trust_root(ctx, S.ca) != KEEL_OK)
        die("TLS context");
    if (keel_tls_expect_server(ctx, name) != KEEL_OK)
        die("--server-name");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_cert_cb(ctx, cert_cb, NULL);
    STACK_OF(X509) *all = NULL;
    if (keel_tls_read_certs(S.chain, &all) != KEEL_OK)
        die("--chain");
    if ((S.chain_certs = sk_X509_new_null()) == NULL)
        die("out of memory");
    for (int i = 0; i < sk_X509_num(all); i++) {
        X509 *x = sk_X509_value(all, i);
        if (X509_check_issued(x, x) == X509_V_OK)
            continue; /* the root: the broker has it */
        if (X509_up_ref(x) != 1 || sk_X509_push(S.chain_certs, x) <= 0)
            die("out of memory");
    }
    sk_X509_pop_free(all, X509_free);
    if (sk_X509_num(S.chain_certs) == 0)
        dief("%s: no issuing CA certificate (only a root)", S.chain);
    return ctx;
}

static slot_t *slot_find(client_t *c, int mid)
{
    for (unsigned i = 0; i < S.window + 1; i++)
        if (c->slots[i].mid == mid)
            return &c->slots[i];
    return NULL;
}

static void on_connect(struct mosquitto *m, void *arg, int rc, int flags, const mosquitto_property *p)
{
    (void)m, (void)flags, (void)p;
    client_t *c = arg;
    c->connack = true;
    c->connack_rc = rc;
}

static void on_disconnect(struct mosquitto *m, void *arg, int rc, const mosquitto_property *p)
{
    (void)m, (void)rc, (void)p;
    client_t *c = arg;
    c->lost = true;
}

static void on_publish(struct mosquitto *m, void *arg, int mid, int reason, const mosquitto_property *p)
{
    (void)m, (void)p;
    client_t *c = arg;
    slot_t *s = slot_find(c, mid);
    if (s == NULL)
        return;
    bool ok = reason < 0x80;
    if (s->state) {
        S.state_acked += ok;
        c->state_acked_this = true;
    } else if (ok) {
        S.acked++;
        S.duplicates += s->dup;
    }
    if (!ok)
        S.refused++;
    s->mid = 0;
    c->inflight--;
    S.t_last_ack = keel_now();
}

static void client_close(client_t *c)
{
    if (c->mosq != NULL) {
        S.current = c;
        mosquitto_destroy(c->mosq);
        S.current = NULL;
    }
    c->mosq = NULL;
    c->inflight = 0;
    for (unsigned i = 0; i < S.window + 1; i++)
        c->slots[i].mid = 0;
}

static void client_fail(client_t *c, const char *why)
{
    if (c->st == C_CONNECTING)
        S.connecting--;
    if (!S.json || S.failed < 5)
        fprintf(stderr, "fleet_sim: %s: %s\n", c->id, why);
    S.failed++;
    client_close(c);
    c->st = C_FAILED;
}

static void client_connect(client_t *c, SSL_CTX *ctx)
{
    c->mosq = mosquitto_new(c->id, true, c);
    if (c->mosq == NULL) {
        client_fail(c, "mosquitto_new failed");
        return;
    }
    mosquitto_connect_v5_callback_set(c->mosq, on_connect);
    mosquitto_disconnect_v5_callback_set(c->mosq, on_disconnect);
    mosquitto_publish_v5_callback_set(c->mosq, on_publish);
    int rc = mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_int_option(c->mosq, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_void_option(c->mosq, MOSQ_OPT_SSL_CTX, ctx);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_int_option(c->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    if (rc == MOSQ_ERR_SUCCESS) {
        S.current = c;
        rc = mosquitto_connect_bind_async(c->mosq, S.host, S.port, 60, NULL);
        S.current = NULL;
    }
    c->connack = c->lost = false;
    c->started = keel_now();
    c->st = C_CONNECTING;
    S.connecting++;
    if (rc != MOSQ_ERR_SUCCESS || mosquitto_socket(c->mosq) < 0)
        client_fail(c, rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
}

/* The envelope of `seq` (kind from where the seq falls) into buf. */
static int envelope(const client_t *c, uint64_t seq, char *buf, size_t cap, const char **topic)
{
    long long ts = (long long)time(NULL);
    unsigned long long q = (unsigned long long)seq;
    *topic = c->topic_ev;
    if (seq < c->tel_end) {
        *topic = c->topic_tel;
        size_t want = S.size;
        int base = snprintf(buf, cap,
                            "{\"device\":\"%s\",\"seq\":%llu,\"ts\":%lld,\"kind\":\"telemetry\","
                            "\"data\":{\"n\":%llu,\"pad\":\"\"}}",
                            c->id, q, ts, q);
        size_t pad = base > 0 && want > (size_t)base ? want - (size_t)base : 0;
        return snprintf(buf, cap,
                        "{\"device\":\"%s\",\"seq\":%llu,\"ts\":%lld,\"kind\":\"telemetry\","
                        "\"data\":{\"n\":%llu,\"pad\":\"%.*s\"}}",
                        c->id, q, ts, q, (int)pad, pad_bytes);
    }
    /* The anomaly events, in this order, after the telemetry. */
    mkind_t k[6];
    unsigned nk = 0;
    if (S.big)
        k[nk++] = M_BIG;
    if (S.auth)
        k[nk++] = M_AUTH;
    if (S.tamper)
        k[nk++] = M_TAMPER;
    if (S.rollback_sv >= 0)
        k[nk++] = M_BOOT_HIGH;
    if (S.unreleased[0] != '\0' || S.rollback_sv >= 0)
        k[nk++] = M_BOOT;
    uint64_t i = seq - c->tel_end;
    if (i >= nk)
        return -1;
    switch (k[i]) {
    case M_BIG:
        *topic = c->topic_tel;
        return snprintf(buf, cap,
                        "{\"device\":\"%s\",\"seq\":%llu,\"ts\":%lld,\"kind\":\"telemetry\","
                        "\"data\":{\"n\":%llu,\"pad\":\"%.*s\"}}",
                        c->id, q, ts, q, (int)SIM_BIG_BYTES, pad_bytes);
    case M_AUTH:
        return snprintf(buf, cap,
                        "{\"device\":\"%s\",\"seq\":%llu,\"ts\":%lld,\"kind\":\"event\","
                        "\"data\":{\"type\":\"auth-failures\",\"count\":%u,\"window_s\":60}}",
                        c->id, q, ts, SIM_AUTH_FAILURES);
    case M_TAMPER:
        return snprintf(buf, cap,
                        "{\"device\":\"%s\",\"seq\":%llu,\"ts\":%lld,\"kind\":\"alert\","
                        "\"data\":{\"type\":\"tamper\",\"detail\":\"enclosure opened\"}}",
                        c->id, q, ts);
    case M_BOOT_HIGH:
        return snprintf(buf, cap,
                        "{\"device\":\"%s\",\"seq\":%llu,\"ts\":%lld,\"kind\":\"event\","
                        "\"data\":{\"type\":\"boot\",\"version\":\"%s\",\"security_version\":%lld,"
                        "\"slot\":\"A\",\"model\":\"%s\"}}",
                        c->id, q, ts, "2.0.0", (long long)S.rollback_sv + 1, c->model);
    case M_BOOT:
        if (S.rollback_sv >= 0)
            return snprintf(buf, cap,
                            "{\"device\":\"%s\",\"seq\":%llu,\"ts\":%lld,\"kind\":\"event\","
                            "\"data\":{\"type\":\"boot\",\"version\":\"%s\",\"security_version\":%lld,"
                            "\"slot\":\"B\",\"model\":\"%s\"}}",
                            c->id, q, ts, "1.0.0", (long long)S.rollback_sv, c->model);
        return snprintf(buf, cap,
                        "{\"device\":\"%s\",\"seq\":%llu,\"ts\":%lld,\"kind\":\"event\","
                        "\"data\":{\"type\":\"boot\",\"version\":\"%s\",\"security_version\":1,"
                        "\"slot\":\"A\",\"model\":\"%s\"}}",
                        c->id, q, ts, S.unreleased, c->model);
    }
    return -1;
}

static slot_t *slot_free(client_t *c)
{
    return slot_find(c, 0);
}

/* One publish; false when the client failed. */
static bool publish_one(client_t *c, const char *topic, const char *payload, int len, bool retain, bool dup,
                        bool state)
{
    slot_t *s = slot_free(c);
    if (s == NULL)
        return true;
    int mid = 0;
    S.current = c;
    int rc = mosquitto_publish_v5(c->mosq, &mid, topic, len, payload, 1, retain, NULL);
    S.current = NULL;
    if (rc != MOSQ_ERR_SUCCESS) {
        client_fail(c, mosquitto_strerror(rc));
        return false;
    }
    s->mid = mid;
    s->dup = dup;
    s->state = state;
    c->inflight++;
    if (state)
        S.state_sent++;
    else
        S.sent++;
    if (S.t_pub == 0 && !state)
        S.t_pub = keel_now();
    return true;
}

/* The client's next message, if its window has room; false when it has nothing to send now. */
static bool pump_one(client_t *c)
{
    static char buf[SIM_PAYLOAD_MAX + 1024];
    if (c->st != C_ONLINE || c->inflight >= S.window)
        return false;
    const char *topic;
    if (c->dup_pending) {
        int len = envelope(c, c->seq - 1, buf, sizeof buf, &topic);
        c->dup_pending = false;
        return len > 0 && (size_t)len < sizeof buf && publish_one(c, topic, buf, len, false, true, false);
    }
    while (c->seq < c->seq_end) {
        uint64_t seq = c->seq++;
        uint64_t k = seq - S.seq_start + 1; /* 1-based position in the stream */
        bool tel = seq < c->tel_end;
        if (tel && S.skip_every > 0 && k % S.skip_every == 0) {
            S.skipped++;
            continue;
        }
        int len = envelope(c, seq, buf, sizeof buf, &topic);
        if (len <= 0 || (size_t)len >= sizeof buf) {
            client_fail(c, "envelope too large");
            return false;
        }
        c->dup_pending = tel && S.dup_every > 0 && k % S.dup_every == 0;
        return publish_one(c, topic, buf, len, false, false, false);
    }
    return false;
}

static bool stream_done(const client_t *c)
{
    return c->seq >= c->seq_end && !c->dup_pending && c->inflight == 0 && !c->state_pending;
}

/* What the callbacks recorded, after each call into libmosquitto. */
static void after_io(client_t *c, int rc, SSL_CTX *ctx)
{
    if (c->connack) {
        c->connack = false;
        if (c->connack_rc != 0) {
            client_fail(c, mosquitto_reason_string(c->connack_rc));
            return;
        }
        if (c->st == C_CONNECTING)
            S.connecting--;
        c->st = C_ONLINE;
        c->connects++;
        c->state_pending = c->state_wanted;
        c->state_acked_this = false;
    }
    if (c->st == C_CYCLING) {
        /* our own DISCONNECT closed the socket: connect again */
        client_close(c);
        c->reconnects_left--;
        S.cycles++;
        client_connect(c, ctx);
        return;
    }
    if (rc != MOSQ_ERR_SUCCESS || c->lost || c->mosq == NULL || mosquitto_socket(c->mosq) < 0) {
        if (c->st == C_DONE || c->st == C_FAILED)
            return;
        S.losses++;
        client_fail(c, rc == MOSQ_ERR_ERRNO ? strerror(errno)
                       : rc != MOSQ_ERR_SUCCESS ? mosquitto_strerror(rc)
                                                : "the broker closed the connection");
        return;
    }
    if (c->st == C_ONLINE && c->state_pending) {
        char state[128];
        int len = snprintf(state, sizeof state, "{\"online\":true,\"connects\":%u}", c->connects);
        c->state_pending = false;
        if (!publish_one(c, c->topic_state, state, len, true, false, true))
            return;
    }
    /* The reconnect anomaly: after its stream, each connection publishes its
     * state, waits for the PUBACK, and leaves. */
    if (c->st == C_ONLINE && c->reconnects_left > 0 && c->state_acked_this && stream_done(c)) {
        c->st = C_CYCLING;
        S.current = c;
        int drc = mosquitto_disconnect_v5(c->mosq, MQTT_RC_NORMAL_DISCONNECTION, NULL);
        S.current = NULL;
        if (drc != MOSQ_ERR_SUCCESS || mosquitto_socket(c->mosq) < 0)
            after_io(c, MOSQ_ERR_SUCCESS, ctx);
    }
}

static void load_devices(void)
{
    char path[KEEL_PATH_MAX];
    keel_buf_t b;
    keel_buf_init(&b, SIM_MANIFEST_MAX);
    if (keel_path_join(path, sizeof path, S.dir, "manifest.json") != KEEL_OK ||
        keel_file_read(path, SIM_MANIFEST_MAX, &b) != KEEL_OK)
        die("manifest.json");
    json_error_t err;
    json_t *m = json_loadb((const char *)b.data, b.len, JSON_REJECT_DUPLICATES, &err);
    keel_buf_free(&b);
    const char *fmt = json_string_value(json_object_get(m, "format"));
    json_t *devs = json_object_get(m, "devices");
    if (m == NULL || fmt == NULL || strcmp(fmt, "keel-manifest-1") != 0 || !json_is_array(devs))
        dief("%s: not a keel-manifest-1 manifest", path);
    size_t n = json_array_size(devs);
    if (S.count > 0 && S.count < n)
        n = (size_t)S.count;
    if (n == 0 || (S.count > 0 && S.count > json_array_size(devs)))
        dief("%s: fewer devices than --count", path);
    if ((S.c = calloc(n, sizeof *S.c)) == NULL)
        die("out of memory");
    S.n = n;
    for (size_t i = 0; i < n; i++) {
        client_t *c = &S.c[i];
        json_t *d = json_array_get(devs, i);
        const char *id = json_string_value(json_object_get(d, "id"));
        const char *model = json_string_value(json_object_get(d, "model"));
        if (!keel_identity_id_ok(id) || !keel_identity_model_ok(model))
            dief("%s: a device without a keel id or model", path);
        memcpy(c->id, id, KEEL_DEVICE_ID_LEN + 1);
        if (keel_strlcpy(c->model, model, sizeof c->model) != KEEL_OK)
            die("model");
        char name[KEEL_DEVICE_ID_LEN + 8];
        if (keel_snprintf(name, sizeof name, "%s.key", id) != KEEL_OK ||
            keel_path_join(path, sizeof path, S.dir, name) != KEEL_OK || (c->key = load_key(path)) == NULL)
            dief("%s: no unencrypted PEM key", path);
        if (keel_snprintf(name, sizeof name, "%s.crt", id) != KEEL_OK ||
            keel_path_join(path, sizeof path, S.dir, name) != KEEL_OK || (c->cert = load_cert(path)) == NULL)
            dief("%s: no PEM certificate", path);
        if (X509_check_private_key(c->cert, c->key) != 1)
            dief("%s: the key does not match", path);
        if (keel_snprintf(c->topic_tel, SIM_TOPIC_MAX, "keel/v1/%s/telemetry", id) != KEEL_OK ||
            keel_snprintf(c->topic_ev, SIM_TOPIC_MAX, "keel/v1/%s/events", id) != KEEL_OK ||
            keel_snprintf(c->topic_state, SIM_TOPIC_MAX, "keel/v1/%s/state", id) != KEEL_OK)
            die("topic");
        if ((c->slots = calloc(S.window + 1, sizeof *c->slots)) == NULL)
            die("out of memory");
        uint64_t tel = S.messages * (i == 0 && S.flood ? SIM_FLOOD_FACTOR : 1);
        uint64_t events = 0;
        if (i == 0)
            events = (uint64_t)S.big + S.auth + S.tamper + (S.rollback_sv >= 0 ? 2 : 0) +
                     (S.unreleased[0] != '\0' && S.rollback_sv < 0 ? 1 : 0);
        c->seq = S.seq_start;
        c->tel_end = S.seq_start + tel;
        c->seq_end = c->tel_end + events;
        c->state_wanted = S.state_all || (i == 0 && S.reconnect);
        c->reconnects_left = i == 0 && S.reconnect ? SIM_RECONNECTS : 0;
    }
    ERR_clear_error();
    json_decref(m);
}

static void parse_anomaly(const char *a)
{
    if (strcmp(a, "flood") == 0)
        S.flood = true;
    else if (strcmp(a, "big") == 0)
        S.big = true;
    else if (strcmp(a, "reconnect") == 0)
        S.reconnect = true;
    else if (strcmp(a, "auth") == 0)
        S.auth = true;
    else if (strcmp(a, "tamper") == 0)
        S.tamper = true;
    else if (strncmp(a, "unreleased:", 11) == 0) {
        const char *v = a + 11;
        size_t n = strlen(v);
        if (n == 0 || n > SIM_VERSION_MAX || strspn(v, "0123456789abcdefghijklmnopqrstuvwxyz"
                                                       "ABCDEFGHIJKLMNOPQRSTUVWXYZ.-+") != n)
            dief("--anomaly %s: VERSION is 1..64 characters of [A-Za-z0-9.+-]", a);
        memcpy(S.unreleased, v, n + 1);
    } else if (strncmp(a, "rollback:", 9) == 0)
        S.rollback_sv = (int64_t)parse_u64("--anomaly rollback:SV", a + 9, 0, INT32_MAX);
    else
        dief("--anomaly %s: flood, big, reconnect, auth, tamper, unreleased:VERSION or rollback:SV", a);
}

static void parse_broker(void)
{
    const char *colon = strrchr(S.broker, ':');
    if (colon == NULL || colon == S.broker || (size_t)(colon - S.broker) >= sizeof S.host)
        dief("--broker %s: HOST:PORT expected", S.broker);
    memcpy(S.host, S.broker, (size_t)(colon - S.broker));
    S.host[colon - S.broker] = '\0';
    S.port = (int)parse_u64("--broker port", colon + 1, 1, 65535);
}

static void raise_fd_limit(size_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        fprintf(stderr, "fleet_sim: %zu clients need %zu descriptors, the limit is %llu (ulimit -n)\n", S.n, need,
                (unsigned long long)rl.rlim_cur);
        exit(2);
    }
}

static void report(double t_connect, bool timed_out)
{
    double secs = S.t_pub > 0 && S.t_last_ack > S.t_pub ? S.t_last_ack - S.t_pub : 0;
    uint64_t online = 0;
    for (size_t i = 0; i < S.n; i++)
        online += S.c[i].connects > 0;
    uint64_t unacked = S.sent - S.acked - S.refused;
    if (S.json) {
        json_t *j = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
                              " s:f, s:f, s:f, s:f, s:f, s:b, s:s}",
                              "devices", (json_int_t)S.n, "connected", (json_int_t)online, "failed",
                              (json_int_t)S.failed, "sent", (json_int_t)S.sent, "acked", (json_int_t)S.acked,
                              "duplicates", (json_int_t)S.duplicates, "unique",
                              (json_int_t)(S.acked - S.duplicates), "skipped", (json_int_t)S.skipped, "refused",
                              (json_int_t)S.refused, "unacked", (json_int_t)unacked, "state_sent",
                              (json_int_t)S.state_sent, "state_acked", (json_int_t)S.state_acked, "reconnects",
                              (json_int_t)S.cycles, "connection_losses", (json_int_t)S.losses, "seq_start",
                              (json_int_t)S.seq_start, "connect_seconds", t_connect, "first_publish_at",
                              S.t_pub > 0 ? S.t_pub + S.wall_offset : 0.0, "last_ack_at",
                              S.t_last_ack > 0 ? S.t_last_ack + S.wall_offset : 0.0, "seconds", secs, "rate",
                              secs > 0 ? (double)S.acked / secs : 0.0, "timed_out", timed_out, "anomaly_device",
                              S.c[0].id);
        char *txt = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
        if (txt == NULL)
            die("out of memory");
        printf("%s\n", txt);
        free(txt);
        json_decref(j);
    } else {
        printf("fleet_sim: %zu devices (%" PRIu64 " failed), connected in %.2f s; sent %" PRIu64 ", acked %" PRIu64
               " (%" PRIu64 " duplicates), skipped %" PRIu64 ", refused %" PRIu64 ", unacked %" PRIu64
               "; %.2f s, %.0f msg/s%s\n",
               S.n, S.failed, t_connect, S.sent, S.acked, S.duplicates, S.skipped, S.refused, unacked, secs,
               secs > 0 ? (double)S.acked / secs : 0.0, timed_out ? " (timed out)" : "");
    }
    fflush(stdout);
}

static int publish_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"broker", required_argument, NULL, 'b'},     {"ca", required_argument, NULL, 'a'},
        {"chain", required_argument, NULL, 'c'},      {"devices", required_argument, NULL, 'd'},
        {"count", required_argument, NULL, 'n'},      {"messages", required_argument, NULL, 'm'},
        {"rate", required_argument, NULL, 'r'},       {"size", required_argument, NULL, 's'},
        {"dup-every", required_argument, NULL, 'D'},  {"skip-every", required_argument, NULL, 'K'},
        {"seq-start", required_argument, NULL, 'S'},  {"anomaly", required_argument, NULL, 'A'},
        {"window", required_argument, NULL, 'w'},     {"connect-window", required_argument, NULL, 'W'},
        {"server-name", required_argument, NULL, 'N'}, {"timeout", required_argument, NULL, 't'},
        {"state", no_argument, NULL, 'x'},            {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0}};
    bool have_messages = false;
    S.window = 20;
    S.connect_window = 64;
    S.size = 250;
    S.seq_start = 1;
    S.timeout = 600;
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'b': S.broker = optarg; break;
        case 'a': S.ca = optarg; break;
        case 'c': S.chain = optarg; break;
        case 'd': S.dir = optarg; break;
        case 'n': S.count = parse_u64("--count", optarg, 1, SIM_DEVICES_MAX); break;
        case 'm':
            S.messages = parse_u64("--messages", optarg, 0, UINT32_MAX);
            have_messages = true;
            break;
        case 'r': S.rate = parse_u64("--rate", optarg, 0, 100000000); break;
        case 's': S.size = parse_u64("--size", optarg, 0, SIM_PAYLOAD_MAX - 512); break;
        case 'D': S.dup_every = parse_u64("--dup-every", optarg, 1, UINT32_MAX); break;
        case 'K': S.skip_every = parse_u64("--skip-every", optarg, 2, UINT32_MAX); break;
        case 'S': S.seq_start = parse_u64("--seq-start", optarg, 1, (uint64_t)1 << 52); break;
        case 'A': parse_anomaly(optarg); break;
        case 'w': S.window = (unsigned)parse_u64("--window", optarg, 1, SIM_WINDOW_MAX); break;
        case 'W': S.connect_window = (unsigned)parse_u64("--connect-window", optarg, 1, 100000); break;
        case 'N': S.server_name = optarg; break;
        case 't': S.timeout = parse_u64("--timeout", optarg, 1, 86400); break;
        case 'x': S.state_all = true; break;
        case 'j': S.json = true; break;
        default: usage();
        }
    }
    if (optind != argc || S.broker == NULL || S.ca == NULL || S.chain == NULL || S.dir == NULL || !have_messages)
        usage();
    parse_broker();
    memset(pad_bytes, 'x', sizeof pad_bytes);
    load_devices();
    raise_fd_limit(S.n + 64);
    signal(SIGPIPE, SIG_IGN);
    if (mosquitto_lib_init() != MOSQ_ERR_SUCCESS)
        dief("%s", "mosquitto_lib_init failed");
    SSL_CTX *ctx = client_context();
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    S.wall_offset = (double)wall.tv_sec + (double)wall.tv_nsec / 1e9 - keel_now();

    struct pollfd *pfd = calloc(S.n, sizeof *pfd);
    size_t *who = calloc(S.n, sizeof *who);
    if (pfd == NULL || who == NULL)
        die("out of memory");
    double t0 = keel_now(), t_connect = 0, last_misc = t0, deadline = t0 + (double)S.timeout;
    size_t next_connect = 0, cursor = 0;
    bool publishing = false, timed_out = false;
    for (;;) {
        double now = keel_now();
        if (now > deadline) {
            timed_out = true;
            break;
        }
        while (next_connect < S.n && S.connecting < S.connect_window)
            client_connect(&S.c[next_connect++], ctx);
        if (!publishing && next_connect == S.n && S.connecting == 0) {
            publishing = true;
            t_connect = now - t0;
        }
        /* Publish: round robin, one message a client a pass, within the budget. */
        if (publishing) {
            uint64_t budget = UINT64_MAX;
            if (S.rate > 0) {
                double start = S.t_pub > 0 ? S.t_pub : now;
                double allowed = (now - start) * (double)S.rate + 1;
                budget = allowed > (double)S.sent ? (uint64_t)(allowed - (double)S.sent) : 0;
            }
            bool any = true;
            while (budget > 0 && any) {
                any = false;
                for (size_t k = 0; k < S.n && budget > 0; k++) {
                    client_t *c = &S.c[(cursor + k) % S.n];
                    uint64_t before = S.sent;
                    if (pump_one(c)) {
                        any = true;
                        budget -= S.sent - before;
                    }
                }
                cursor = (cursor + 1) % S.n;
            }
        }
        bool all_done = publishing;
        size_t np = 0;
        for (size_t i = 0; i < S.n; i++) {
            client_t *c = &S.c[i];
            if (c->st == C_FAILED || c->st == C_DONE || c->st == C_WAITING)
                continue;
            if (!(c->st == C_ONLINE && c->reconnects_left == 0 && stream_done(c)))
                all_done = false;
            int fd = c->mosq != NULL ? mosquitto_socket(c->mosq) : -1;
            if (fd < 0)
                continue;
            pfd[np].fd = fd;
            pfd[np].events = (short)(POLLIN | (mosquitto_want_write(c->mosq) ? POLLOUT : 0));
            pfd[np].revents = 0;
            who[np++] = i;
        }
        if (all_done)
            break;
        int wait_ms = 100;
        if (publishing && S.rate > 0)
            wait_ms = 2;
        int r = poll(pfd, (nfds_t)np, wait_ms);
        if (r < 0 && errno != EINTR) {
            perror("fleet_sim: poll");
            exit(2);
        }
        for (size_t p = 0; r > 0 && p < np; p++) {
            if (pfd[p].revents == 0)
                continue;
            client_t *c = &S.c[who[p]];
            if (c->mosq == NULL || mosquitto_socket(c->mosq) != pfd[p].fd)
                continue;
            if (c->st == C_CONNECTING && pfd[p].revents & (POLLERR | POLLHUP)) {
                /* a refused or reset connect: libmosquitto's read would not say so */
                int err = 0;
                socklen_t len = sizeof err;
                if (getsockopt(pfd[p].fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0 ||
                    pfd[p].revents & POLLHUP) {
                    client_fail(c, err != 0 ? strerror(err) : "the connection closed during the handshake");
                    continue;
                }
            }
            int rc = MOSQ_ERR_SUCCESS;
            S.current = c;
            /* During the TLS handshake only loop_read advances it, also when it waits to write. */
            if (pfd[p].revents & (POLLIN | POLLERR | POLLHUP) || (c->st == C_CONNECTING && pfd[p].revents & POLLOUT))
                rc = mosquitto_loop_read(c->mosq, 1);
            if (rc == MOSQ_ERR_SUCCESS && c->mosq != NULL && mosquitto_socket(c->mosq) >= 0 &&
                pfd[p].revents & POLLOUT)
                rc = mosquitto_loop_write(c->mosq, 1);
            S.current = NULL;
            after_io(c, rc, ctx);
        }
        now = keel_now();
        if (now - last_misc >= 1.0) {
            last_misc = now;
            for (size_t i = 0; i < S.n; i++) {
                client_t *c = &S.c[i];
                if (c->mosq == NULL || (c->st != C_ONLINE && c->st != C_CONNECTING))
                    continue;
                if (c->st == C_CONNECTING && now - c->started > SIM_CONNECT_TIMEOUT) {
                    client_fail(c, "no CONNACK within 30 s");
                    continue;
                }
                S.current = c;
                int rc = mosquitto_loop_misc(c->mosq);
                S.current = NULL;
                after_io(c, rc, ctx);
            }
        }
    }
    report(t_connect, timed_out);
    bool ok = !timed_out && S.failed == 0 && S.refused == 0 && S.sent == S.acked && S.state_sent == S.state_acked &&
              S.identity_mismatch == 0;
    for (size_t i = 0; i < S.n; i++) {
        client_t *c = &S.c[i];
        if (c->mosq != NULL && c->st == C_ONLINE) {
            S.current = c;
            (void)mosquitto_disconnect_v5(c->mosq, MQTT_RC_NORMAL_DISCONNECTION, NULL);
            S.current = NULL;
        }
        client_close(c);
        X509_free(c->cert);
        EVP_PKEY_free(c->key);
        free(c->slots);
    }
    free(S.c);
    free(pfd);
    free(who);
    sk_X509_pop_free(S.chain_certs, X509_free);
    SSL_CTX_free(ctx);
    mosquitto_lib_cleanup();
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    keel_log_set_prefix("fleet_sim");
    if (strcmp(argv[1], "manifest") == 0)
        return manifest_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "publish") == 0)
        return publish_main(argc - 1, argv + 1);
    usage();
    return 2;
}

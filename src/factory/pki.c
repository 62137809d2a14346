/*
 * The manufacturer PKI: three hierarchies (device, release, service), each a
 * root and an issuing CA, ECDSA P-256 / SHA-256.
 */
#include "keel/factory.h"
#include "keel/crypto.h"

#include "keel/identity.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#define PEM_MAX (64u * 1024u)
#define ROOT_DAYS (30 * 365)
#define ISSUING_DAYS (20 * 365)
#define SERVER_DAYS 397
/* OWASP's figure for PBKDF2-HMAC-SHA256 (2023). */
#define KEY_PBKDF2_ITER 600000
/* Device identities follow IEEE 802.1AR: no well-defined expiry. */
#define DEVICE_NOT_AFTER "99991231235959Z"

struct keel_factory {
    char dir[KEEL_PATH_MAX]; /* where the CRL numbers are kept */
    char org[KEEL_ORG_MAX + 1];
    /* The passphrase the factory was opened with: signer keys are encrypted
     * with it like the CA keys. Wiped in keel_factory_free. */
    char pass[KEEL_PASSPHRASE_MAX + 1];
    size_t passlen;
    X509 *root[KEEL_PKI_COUNT];
    X509 *issuing[KEEL_PKI_COUNT];
    EVP_PKEY *issuing_key[KEEL_PKI_COUNT];
};

static const char *const pki_dirs[KEEL_PKI_COUNT] = {"device-ca", "release-ca", "service-ca"};
static const char *const pki_titles[KEEL_PKI_COUNT] = {"Device", "Release", "Service"};

const char *keel_pki_dirname(keel_pki_t which)
{
    return which < KEEL_PKI_COUNT ? pki_dirs[which] : "?";
}

const char *keel_factory_org(const keel_factory_t *f) { return f->org; }
X509 *keel_factory_root(const keel_factory_t *f, keel_pki_t w) { return f->root[w]; }
X509 *keel_factory_issuing(const keel_factory_t *f, keel_pki_t w) { return f->issuing[w]; }
EVP_PKEY *keel_factory_issuing_key(const keel_factory_t *f, keel_pki_t w) { return f->issuing_key[w]; }

static int org_ok(const char *org)
{
    /* "<org> Release Issuing CA" must fit the 64 characters of a CN. */
    size_t n = strlen(org);
    if (n == 0 || n > KEEL_ORG_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)org[i] < 0x20 || (unsigned char)org[i] > 0x7e || org[i] == '"' ||
            org[i] == '\\')
            return 0;
    return 1;
}

/* ---- PEM ---------------------------------------------------------------- */

static keel_status_t bio_to_buf(BIO *bio, keel_buf_t *out)
{
    char *p = NULL;
    long n = BIO_get_mem_data(bio, &p);
    if (n <= 0)
        return keel_errorf(KEEL_ERR_CRYPTO, "empty PEM output");
    return keel_buf_append(out, p, (size_t)n);
}

keel_status_t keel_pem_cert(X509 *cert, keel_buf_t *out)
{
    keel_buf_init(out, PEM_MAX); /* callers may free it on any path */
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_status_t st = PEM_write_bio_X509(bio, cert) == 1 ? bio_to_buf(bio, out)
                                                          : keel_crypto_error(KEEL_ERR_CRYPTO, "PEM encode");
    BIO_free(bio);
    return st;
}

static keel_status_t pem_key(EVP_PKEY *key, const char *pass, size_t passlen, keel_buf_t *out)
{
    keel_buf_init(out, PEM_MAX);
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    int ok = 0;
    if (pass == NULL) {
        ok = PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL);
    } else {
        /* PKCS#8 with PBES2: PBKDF2-HMAC-SHA256 at KEY_PBKDF2_ITER, AES-256-CBC.
         * (OpenSSL's PEM default is 2048 iterations: far too cheap offline.) */
        PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(key);
        X509_SIG *enc = p8 != NULL ? PKCS8_encrypt_ex(-1, EVP_aes_256_cbc(), pass, (int)passlen, NULL, 0,
                                                      KEY_PBKDF2_ITER, p8, NULL, NULL)
                                   : NULL;
        ok = enc != NULL && PEM_write_bio_PKCS8(bio, enc) == 1;
        X509_SIG_free(enc);
        PKCS8_PRIV_KEY_INFO_free(p8);
    }
    keel_status_t st = ok == 1 ? bio_to_buf(bio, out) : keel_crypto_error(KEEL_ERR_CRYPTO, "PEM key");
    /* The memory BIO held the key: clear it before freeing. */
    char *p = NULL;
    long n = BIO_get_mem_data(bio, &p);
    if (n > 0)
        keel_wipe(p, (size_t)n);
    BIO_free(bio);
    return st;
}

/* Reads a PEM file (capped) and hands it to one of OpenSSL's PEM readers. */
static void *pem_read(const char *path, void *(*reader)(BIO *, void *), void *arg, keel_status_t *st)
{
    keel_buf_t b;
    *st = keel_file_read(path, PEM_MAX, &b);
    if (*st != KEEL_OK)
        return NULL;
    BIO *bio = BIO_new_mem_buf(b.data, (int)b.len);
    void *obj = bio != NULL ? reader(bio, arg) : NULL;
    BIO_free(bio);
    keel_buf_free(&b);
    if (obj == NULL)
        *st = keel_crypto_error(KEEL_ERR_FORMAT, path);
    return obj;
}

static void *read_x509(BIO *bio, void *arg)
{
    (void)arg;
    return PEM_read_bio_X509(bio, NULL, keel_pem_no_password, NULL);
}

static void *read_key(BIO *bio, void *arg)
{
    return PEM_read_bio_PrivateKey(bio, NULL, NULL, arg);
}

keel_status_t keel_pem_load_cert(const char *path, X509 **out)
{
    keel_status_t st;
    *out = pem_read(path, read_x509, NULL, &st);
    return st;
}

static keel_status_t pem_load_key(const char *path, const char *pass, EVP_PKEY **out)
{
    keel_status_t st;
    /* Without a passphrase, an empty one makes an encrypted key fail instead
     * of prompting on the terminal. */
    *out = pem_read(path, read_key, (void *)(pass != NULL ? pass : ""), &st);
    if (st == KEEL_ERR_FORMAT && pass != NULL)
        st = keel_errorf(KEEL_ERR_VERIFY, "%s: wrong passphrase or damaged key", path);
    return st;
}

/* ---- certificates ------------------------------------------------------- */

typedef struct {
    const char *cn, *ou, *serial_number; /* subject (O is the org) */
    X509 *issuer;                         /* NULL = self-signed */
    EVP_PKEY *issuer_key;
    EVP_PKEY *subject_key;
    long days;                            /* 0 = DEVICE_NOT_AFTER */
    const char *const *exts;              /* "nid=value" pairs: nids[i], vals[i] */
    const int *ext_nids;
    size_t n_exts;
} cert_req_t;

static keel_status_t add_entry(X509_NAME *name, const char *field, const char *value)
{
    if (value == NULL)
        return KEEL_OK;
    if (X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8, (const unsigned char *)value, -1, -1,
                                   0) != 1)
        return keel_crypto_error(KEEL_ERR_CRYPTO, "certificate name");
    return KEEL_OK;
}

static keel_status_t random_serial(X509 *cert)
{
    uint8_t raw[16];
    keel_random_bytes(raw, sizeof raw);
    raw[0] &= 0x7f; /* positive */
    raw[0] |= 0x01; /* and full length */
    BIGNUM *bn = BN_bin2bn(raw, sizeof raw, NULL);
    ASN1_INTEGER *ai = bn != NULL ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
    int ok = ai != NULL && X509_set_serialNumber(cert, ai) == 1;
    ASN1_INTEGER_free(ai);
    BN_free(bn);
    return ok ? KEEL_OK : keel_crypto_error(KEEL_ERR_CRYPTO, "certificate serial");
}

static keel_status_t make_cert(const char *org, const cert_req_t *r, X509 **out)
{
    keel_status_t st = KEEL_OK;
    X509 *c = X509_new();
    X509_NAME *name = X509_NAME_new();
    if (c == NULL || name == NULL) {
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((st = add_entry(name, "O", org)) != KEEL_OK || (st = add_entry(name, "OU", r->ou)) != KEEL_OK ||
        (st = add_entry(name, "CN", r->cn)) != KEEL_OK ||
        (st = add_entry(name, "serialNumber", r->serial_number)) != KEEL_OK)
        goto out;
    if (X509_set_version(c, X509_VERSION_3) != 1 || X509_set_subject_name(c, name) != 1 ||
        X509_set_issuer_name(c, r->issuer ? X509_get_subject_name(r->issuer) : name) != 1 ||
        X509_set_pubkey(c, r->subject_key) != 1) {
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "certificate fields");
        goto out;
    }
    if ((st = random_serial(c)) != KEEL_OK)
        goto out;
    /* Back-date an hour so a device with a slightly slow clock accepts it. */
    if (X509_gmtime_adj(X509_getm_notBefore(c), -3600) == NULL ||
        (r->days > 0 ? X509_gmtime_adj(X509_getm_notAfter(c), r->days * 86400L) == NULL
                     : ASN1_TIME_set_string_X509(X509_getm_notAfter(c), DEVICE_NOT_AFTER) != 1)) {
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "certificate validity");
        goto out;
    }
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, r->issuer ? r->issuer : c, c, NULL, NULL, 0);
    for (size_t i = 0; i < r->n_exts; i++) {
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, r->ext_nids[i], r->exts[i]);
        int ok = ext != NULL && X509_add_ext(c, ext, -1) == 1;
        X509_EXTENSION_free(ext);
        if (!ok) {
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "certificate extension");
            goto out;
        }
    }
    if (X509_sign(c, r->issuer_key, EVP_sha256()) <= 0) {
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "certificate signature");
        goto out;
    }
out:
    X509_NAME_free(name);
    if (st != KEEL_OK) {
        X509_free(c);
        c = NULL;
    }
    *out = c;
    return st;
}

static keel_status_t write_pem_cert(const char *dir, const char *name, X509 *cert)
{
    char path[KEEL_PATH_MAX];
    keel_buf_t pem;
    keel_status_t st = keel_path_join(path, sizeof path, dir, name);
    if (st != KEEL_OK || (st = keel_pem_cert(cert, &pem)) != KEEL_OK)
        return st;
    st = keel_file_write_atomic(path, pem.data, pem.len, 0644);
    keel_buf_free(&pem);
    return st;
}

static keel_status_t write_pem_key(const char *dir, const char *name, EVP_PKEY *key, const char *pass,
                                   size_t passlen)
{
    char path[KEEL_PATH_MAX];
    keel_buf_t pem;
    keel_status_t st = keel_path_join(path, sizeof path, dir, name);
    if (st != KEEL_OK || (st = pem_key(key, pass, passlen, &pem)) != KEEL_OK)
        return st;
    st = keel_file_write_atomic(path, pem.data, pem.len, 0600);
    keel_buf_free(&pem);
    return st;
}

static keel_status_t write_chain(const char *dir, const char *name, X509 *const *certs, size_t n)
{
    char path[KEEL_PATH_MAX];
    keel_buf_t all;
    keel_buf_init(&all, PEM_MAX);
    keel_status_t st = keel_path_join(path, sizeof path, dir, name);
    for (size_t i = 0; st == KEEL_OK && i < n; i++) {
        keel_buf_t pem;
        st = keel_pem_cert(certs[i], &pem);
        if (st == KEEL_OK)
            st = keel_buf_append(&all, pem.data, pem.len);
        keel_buf_free(&pem);
    }
    if (st == KEEL_OK)
        st = keel_file_write_atomic(path, all.data, all.len, 0644);
    keel_buf_free(&all);
    return st;
}

static const int ca_nids[] = {NID_basic_constraints, NID_key_usage, NID_subject_key_identifier,
                              NID_authority_key_identifier};
static const char *const root_exts[] = {"critical,CA:TRUE", "critical,keyCertSign,cRLSign", "hash",
                                        "keyid:always"};
static const char *const issuing_exts[] = {"critical,CA:TRUE,pathlen:0", "critical,keyCertSign,cRLSign",
                                           "hash", "keyid:always"};

static keel_status_t init_pki(const char *fdir, const char *org, keel_pki_t which, const char *pass,
                              size_t passlen)
{
    char dir[KEEL_PATH_MAX], cn_root[128], cn_iss[128];
    /* The factory line uses the device issuing key unattended; the release and
     * service issuing keys are used by people and stay encrypted like roots. */
    const char *ipass = which == KEEL_PKI_DEVICE ? NULL : pass;
    EVP_PKEY *rk = NULL, *ik = NULL;
    X509 *rc = NULL, *ic = NULL;
    keel_status_t st = keel_path_join(dir, sizeof dir, fdir, pki_dirs[which]);
    if (st == KEEL_OK)
        st = keel_dir_make(dir, 0700);
    if (st == KEEL_OK)
        st = keel_snprintf(cn_root, sizeof cn_root, "%s %s Root CA", org, pki_titles[which]);
    if (st == KEEL_OK)
        st = keel_snprintf(cn_iss, sizeof cn_iss, "%s %s Issuing CA", org, pki_titles[which]);
    if (st == KEEL_OK && (st = keel_ec_generate(&rk)) == KEEL_OK &&
        (st = keel_ec_generate(&ik)) == KEEL_OK) {
        cert_req_t root = {.cn = cn_root, .issuer_key = rk, .subject_key = rk, .days = ROOT_DAYS,
                           .exts = root_exts, .ext_nids = ca_nids, .n_exts = 4};
        st = make_cert(org, &root, &rc);
    }
    if (st == KEEL_OK) {
        cert_req_t iss = {.cn = cn_iss, .issuer = rc, .issuer_key = rk, .subject_key = ik,
                          .days = ISSUING_DAYS, .exts = issuing_exts, .ext_nids = ca_nids, .n_exts = 4};
        st = make_cert(org, &iss, &ic);
    }
    if (st == KEEL_OK)
        st = write_pem_key(dir, "root.key", rk, pass, passlen);
    if (st == KEEL_OK)
        st = write_pem_key(dir, "issuing.key", ik, ipass, ipass != NULL ? passlen : 0);
    if (st == KEEL_OK)
        st = write_pem_cert(dir, "root.crt", rc);
    if (st == KEEL_OK)
        st = write_pem_cert(dir, "issuing.crt", ic);
    if (st == KEEL_OK) {
        X509 *chain[2] = {ic, rc};
        st = write_chain(dir, "chain.pem", chain, 2);
    }
    EVP_PKEY_free(rk);
    EVP_PKEY_free(ik);
    X509_free(rc);
    X509_free(ic);
    return st;
}

keel_status_t keel_factory_init(const char *dir, const char *org, const char *passphrase, size_t passlen)
{
    if (dir == NULL || org == NULL || !org_ok(org))
        return keel_errorf(KEEL_ERR_ARG, "organisation name must be 1..%d printable characters",
                           KEEL_ORG_MAX);
    if (passphrase != NULL && (passlen < 8 || passlen > KEEL_PASSPHRASE_MAX))
        return keel_errorf(KEEL_ERR_ARG, "root key passphrase must be 8..%d bytes", KEEL_PASSPHRASE_MAX);
    keel_status_t st = keel_crypto_init();
    if (st != KEEL_OK)
        return st;
    char marker[KEEL_PATH_MAX];
    if ((st = keel_dir_make(dir, 0700)) != KEEL_OK ||
        (st = keel_path_join(marker, sizeof marker, dir, "factory.json")) != KEEL_OK)
        return st;
    if (keel_path_exists(marker))
        return keel_errorf(KEEL_ERR_EXISTS, "%s already holds a factory; refusing to overwrite it", dir);
    /* CA directories without the marker may be a factory whose factory.json
     * was lost: never delete keys we did not just make. */
    for (int i = 0; i < KEEL_PKI_COUNT; i++) {
        char sub[KEEL_PATH_MAX];
        if ((st = keel_path_join(sub, sizeof sub, dir, pki_dirs[i])) != KEEL_OK)
            return st;
        if (keel_path_exists(sub))
            return keel_errorf(KEEL_ERR_EXISTS, "%s exists but %s has no factory.json (an interrupted init, "
                               "or a damaged factory): move it away before running init", sub, dir);
    }
    /* Build everything in a staging directory of our own, then move it in. */
    char staging[KEEL_PATH_MAX];
    if ((st = keel_path_join(staging, sizeof staging, dir, ".init-staging")) != KEEL_OK ||
        (st = keel_dir_remove_tree(staging)) != KEEL_OK || (st = keel_dir_make(staging, 0700)) != KEEL_OK)
        return st;
    for (int i = 0; i < KEEL_PKI_COUNT && st == KEEL_OK; i++)
        st = init_pki(staging, org, (keel_pki_t)i, passphrase, passlen);
    for (int i = 0; i < KEEL_PKI_COUNT && st == KEEL_OK; i++) {
        char from[KEEL_PATH_MAX], to[KEEL_PATH_MAX];
        if ((st = keel_path_join(from, sizeof from, staging, pki_dirs[i])) == KEEL_OK &&
            (st = keel_path_join(to, sizeof to, dir, pki_dirs[i])) == KEEL_OK)
            st = keel_rename_commit(from, to);
    }
    if (st == KEEL_OK)
        st = keel_dir_remove_tree(staging);
    if (st != KEEL_OK)
        return st;

    json_t *j = json_pack("{s:s, s:s, s:I, s:b, s:[s,s,s]}", "format", "keel-factory-1", "org", org,
                          "created", (json_int_t)time(NULL), "keys_encrypted", passphrase != NULL,
                          "pkis", pki_dirs[0], pki_dirs[1], pki_dirs[2]);
    char *txt = j != NULL ? json_dumps(j, JSON_INDENT(2)) : NULL;
    json_decref(j);
    if (txt == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    st = keel_file_write_atomic(marker, txt, strlen(txt), 0644);
    free(txt);
    return st;
}

void keel_factory_free(keel_factory_t *f)
{
    if (f == NULL)
        return;
    for (int i = 0; i < KEEL_PKI_COUNT; i++) {
        X509_free(f->root[i]);
        X509_free(f->issuing[i]);
        EVP_PKEY_free(f->issuing_key[i]);
    }
    keel_wipe(f->pass, sizeof f->pass);
    free(f);
}

keel_status_t keel_factory_load(const char *dir, unsigned need, const char *pass, keel_factory_t **out)
{
    char path[KEEL_PATH_MAX];
    keel_buf_t b;
    keel_status_t st = keel_crypto_init();
    if (st != KEEL_OK || (st = keel_path_join(path, sizeof path, dir, "factory.json")) != KEEL_OK)
        return st;
    if ((st = keel_file_read(path, 64 * 1024, &b)) != KEEL_OK) {
        char why[KEEL_ERROR_MAX];
        snprintf(why, sizeof why, "%s", keel_error_message());
        return keel_errorf(st == KEEL_ERR_NOT_FOUND ? KEEL_ERR_CONFIG : st,
                           "%s is not a Keel factory (run 'keel factory init'): %s", dir, why);
    }
    json_error_t jerr;
    json_t *j = json_loadb((const char *)b.data, b.len, JSON_REJECT_DUPLICATES, &jerr);
    keel_buf_free(&b);
    const char *fmt = NULL, *org = NULL;
    int encrypted = 0;
    if (j == NULL || json_unpack(j, "{s:s, s:s, s?b}", "format", &fmt, "org", &org, "keys_encrypted",
                                 &encrypted) != 0 ||
        strcmp(fmt, "keel-factory-1") != 0 || !org_ok(org)) {
        json_decref(j);
        return keel_errorf(KEEL_ERR_FORMAT, "%s: not a keel-factory-1 description", path);
    }
    keel_factory_t *f = calloc(1, sizeof *f);
    if (f == NULL) {
        json_decref(j);
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    st = keel_strlcpy(f->org, org, sizeof f->org);
    json_decref(j);
    if (st == KEEL_OK)
        st = keel_strlcpy(f->dir, dir, sizeof f->dir);
    if (st == KEEL_OK && pass != NULL && (st = keel_strlcpy(f->pass, pass, sizeof f->pass)) == KEEL_OK)
        f->passlen = strlen(f->pass);
    for (int i = 0; i < KEEL_PKI_COUNT && st == KEEL_OK; i++) {
        char sub[KEEL_PATH_MAX];
        st = keel_snprintf(sub, sizeof sub, "%s/%s/root.crt", dir, pki_dirs[i]);
        if (st == KEEL_OK)
            st = keel_pem_load_cert(sub, &f->root[i]);
        if (st == KEEL_OK)
            st = keel_snprintf(sub, sizeof sub, "%s/%s/issuing.crt", dir, pki_dirs[i]);
        if (st == KEEL_OK)
            st = keel_pem_load_cert(sub, &f->issuing[i]);
        /* Only the issuing keys this command needs are ever in memory. */
        if (st != KEEL_OK || !(need & KEEL_PKI_MASK(i)))
            continue;
        if (encrypted && i != KEEL_PKI_DEVICE && pass == NULL) {
            st = keel_errorf(KEEL_ERR_CONFIG, "the %s issuing key is encrypted: give its passphrase",
                             pki_dirs[i]);
            break;
        }
        st = keel_snprintf(sub, sizeof sub, "%s/%s/issuing.key", dir, pki_dirs[i]);
        if (st == KEEL_OK)
            st = pem_load_key(sub, i == KEEL_PKI_DEVICE ? NULL : pass, &f->issuing_key[i]);
        if (st == KEEL_OK && X509_check_private_key(f->issuing[i], f->issuing_key[i]) != 1)
            st = keel_crypto_error(KEEL_ERR_FORMAT, "issuing key does not match its certificate");
    }
    if (st != KEEL_OK) {
        keel_factory_free(f);
        return st;
    }
    *out = f;
    return KEEL_OK;
}

static const int device_nids[] = {NID_basic_constraints, NID_key_usage, NID_ext_key_usage,
                                  NID_subject_key_identifier, NID_authority_key_identifier};
static const char *const device_exts[] = {"critical,CA:FALSE", "critical,digitalSignature",
                                          "clientAuth,serverAuth", "hash", "keyid:always"};

keel_status_t keel_factory_issue_device(keel_factory_t *f, EVP_PKEY *pub, const char *device_id,
                                        const char *model, const char *serial, X509 **out)
{
    if (!keel_identity_id_ok(device_id) || !keel_identity_model_ok(model) || serial == NULL)
        return keel_errorf(KEEL_ERR_ARG, "device certificate: bad id, model or serial");
    if (f->issuing_key[KEEL_PKI_DEVICE] == NULL)
        return keel_errorf(KEEL_ERR_ARG, "the device issuing key was not loaded");
    cert_req_t r = {.cn = device_id, .ou = model, .serial_number = serial,
                    .issuer = f->issuing[KEEL_PKI_DEVICE], .issuer_key = f->issuing_key[KEEL_PKI_DEVICE],
                    .subject_key = pub, .days = 0, .exts = device_exts, .ext_nids = device_nids,
                    .n_exts = 5};
    return make_cert(f->org, &r, out);
}

/* A new key and an end-entity certificate for it from the service issuing CA
 * (server and client certificates of the fleet's services), written into
 * outdir (which exists) as key_name, crt_name, chain.pem (the certificate,
 * then the issuing CA) and ca.pem (the service root). cn may be NULL. */
static keel_status_t issue_service_cert(keel_factory_t *f, const char *cn, const char *const *exts,
                                        const int *nids, size_t n_exts, const char *outdir,
                                        const char *key_name, const char *crt_name)
{
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    keel_status_t st = keel_ec_generate(&key);
    if (st != KEEL_OK)
        return st;
    cert_req_t r = {.cn = cn, .issuer = f->issuing[KEEL_PKI_SERVICE], .issuer_key = f->issuing_key[KEEL_PKI_SERVICE],
                    .subject_key = key, .days = SERVER_DAYS, .exts = exts, .ext_nids = nids, .n_exts = n_exts};
    st = make_cert(f->org, &r, &cert);
    if (st == KEEL_OK)
        st = write_pem_key(outdir, key_name, key, NULL, 0);
    if (st == KEEL_OK)
        st = write_pem_cert(outdir, crt_name, cert);
    if (st == KEEL_OK) {
        X509 *chain[2] = {cert, f->issuing[KEEL_PKI_SERVICE]};
        st = write_chain(outdir, "chain.pem", chain, 2);
    }
    if (st == KEEL_OK)
        st = write_pem_cert(outdir, "ca.pem", f->root[KEEL_PKI_SERVICE]);
    EVP_PKEY_free(key);
    X509_free(cert);
    return st;
}

static int server_name_ok(const char *name, int *is_ip)
{
    unsigned char addr[16];
    *is_ip = inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
    if (*is_ip)
        return 1;
    size_t n = strlen(name);
    if (n == 0 || n > 253)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '.'))
            return 0;
    }
    return name[0] != '.' && name[0] != '-';
}

keel_status_t keel_factory_issue_server(keel_factory_t *f, const char *name, const char *outdir)
{
    int is_ip = 0;
    if (name == NULL || !server_name_ok(name, &is_ip))
        return keel_errorf(KEEL_ERR_ARG, "server name must be a DNS name or an IP address");
    if (f->issuing_key[KEEL_PKI_SERVICE] == NULL)
        return keel_errorf(KEEL_ERR_ARG, "the service issuing key was not loaded");
    char san[300];
    keel_status_t st = keel_snprintf(san, sizeof san, "%s:%s", is_ip ? "IP" : "DNS", name);
    if (st != KEEL_OK || (st = keel_dir_make(outdir, 0700)) != KEEL_OK)
        return st;
    static const int nids[] = {NID_basic_constraints, NID_key_usage, NID_ext_key_usage,
                               NID_subject_alt_name, NID_subject_key_identifier,
                               NID_authority_key_identifier};
    const char *exts[] = {"critical,CA:FALSE", "critical,digitalSignature", "serverAuth", san, "hash",
                          "keyid:always"};
    /* The subject alternative name is what TLS checks; a CN must fit 64. */
    return issue_service_cert(f, strlen(name) <= 64 ? name : NULL, exts, nids, 6, outdir, "server.key",
                              "server.crt");
}

static int client_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > KEEL_CLIENT_NAME_MAX || keel_identity_id_ok(name))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '.' || c == '_'))
            return 0;
    }
    return 1;
}

keel_status_t keel_factory_issue_client(keel_factory_t *f, const char *name, const char *outdir)
{
    if (name == NULL || !client_name_ok(name))
        return keel_errorf(KEEL_ERR_ARG, "client name must be 1..%d characters of [A-Za-z0-9._-] and not "
                           "a device id", KEEL_CLIENT_NAME_MAX);
    if (outdir == NULL)
        return keel_errorf(KEEL_ERR_ARG, "no output directory");
    if (f->issuing_key[KEEL_PKI_SERVICE] == NULL)
        return keel_errorf(KEEL_ERR_ARG, "the service issuing key was not loaded");
    keel_status_t st = keel_dir_make(outdir, 0700);
    if (st != KEEL_OK)
        return st;
    /* clientAuth only: the broker (OpenSSL's ssl_client purpose) refuses the
     * service CA's server certificates as clients, and this one as a server. */
    static const int nids[] = {NID_basic_constraints, NID_key_usage, NID_ext_key_usage,
                               NID_subject_key_identifier, NID_authority_key_identifier};
    static const char *const exts[] = {"critical,CA:FALSE", "critical,digitalSignature", "clientAuth", "hash",
                                       "keyid:always"};
    return issue_service_cert(f, name, exts, nids, 5, outdir, "client.key", "client.crt");
}

static int signer_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > KEEL_SIGNER_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] > 0x7e || name[i] == '"' || name[i] == '\\')
            return 0;
    return 1;
}

keel_status_t keel_factory_issue_signer(keel_factory_t *f, const char *name, const char *outdir)
{
    if (name == NULL || !signer_name_ok(name))
        return keel_errorf(KEEL_ERR_ARG, "signer name must be 1..%d printable characters", KEEL_SIGNER_NAME_MAX);
    if (outdir == NULL)
        return keel_errorf(KEEL_ERR_ARG, "no output directory");
    if (f->issuing_key[KEEL_PKI_RELEASE] == NULL)
        return keel_errorf(KEEL_ERR_ARG, "the release issuing key was not loaded");
    static const int nids[] = {NID_basic_constraints, NID_key_usage, NID_ext_key_usage,
                               NID_subject_key_identifier, NID_authority_key_identifier};
    static const char *const exts[] = {"critical,CA:FALSE", "critical,digitalSignature", "codeSigning", "hash",
                                       "keyid:always"};
    char keypath[KEEL_PATH_MAX];
    keel_status_t st = keel_path_join(keypath, sizeof keypath, outdir, "signer.key");
    if (st != KEEL_OK || (st = keel_dir_make(outdir, 0700)) != KEEL_OK)
        return st;
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    keel_buf_t pem;
    keel_buf_init(&pem, PEM_MAX);
    if ((st = keel_ec_generate(&key)) != KEEL_OK)
        return st;
    cert_req_t r = {.cn = name, .ou = "Update signing", .issuer = f->issuing[KEEL_PKI_RELEASE],
                    .issuer_key = f->issuing_key[KEEL_PKI_RELEASE], .subject_key = key,
                    .days = KEEL_SIGNER_DAYS, .exts = exts, .ext_nids = nids, .n_exts = 5};
    st = make_cert(f->org, &r, &cert);
    /* A signer key is never silently replaced: its certificate may be in use. */
    /* With a factory passphrase the signer key is encrypted like the CA keys:
     * it can sign software for the whole fleet. */
    if (st == KEEL_OK && (st = pem_key(key, f->passlen ? f->pass : NULL, f->passlen, &pem)) == KEEL_OK)
        st = keel_file_create_atomic(keypath, pem.data, pem.len, 0600);
    if (st == KEEL_ERR_EXISTS)
        st = keel_errorf(st, "%s already exists; refusing to replace a signer key (use a new directory)", keypath);
    if (st == KEEL_OK)
        st = write_pem_cert(outdir, "signer.crt", cert);
    if (st == KEEL_OK) {
        X509 *chain[2] = {cert, f->issuing[KEEL_PKI_RELEASE]};
        st = write_chain(outdir, "chain.pem", chain, 2);
    }
    keel_buf_free(&pem);
    EVP_PKEY_free(key);
    X509_free(cert);
    return st;
}

/* ---- revocation --------------------------------------------------------- */

#define CRL_NUMBER_FILE "crlnumber"
#define CRL_LOCK_FILE ".crl.lock"
/* Far below 2^63, so a damaged counter file cannot make the number wrap. */
#define CRL_NUMBER_MAX (UINT64_C(1) << 62)
/* 9999-12-31T23:59:59Z, the last second an X.509 time can hold. */
#define X509_TIME_LAST INT64_C(253402300799)

static int hex_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 2 * KEEL_CRL_SERIAL_MAX_BYTES)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') || (s[i] >= 'A' && s[i] <= 'F')))
            return 0;
    return 1;
}

static keel_status_t crl_add_serial(X509_CRL *crl, const char *hex, size_t index, const ASN1_TIME *when)
{
    if (hex == NULL || !hex_ok(hex))
        return keel_errorf(KEEL_ERR_ARG, "revoked serial #%zu is not 1..%d hex digits", index + 1,
                           2 * KEEL_CRL_SERIAL_MAX_BYTES);
    BIGNUM *bn = NULL;
    ASN1_INTEGER *ai = NULL;
    X509_REVOKED *r = NULL;
    keel_status_t st = KEEL_OK;
    if (BN_hex2bn(&bn, hex) != (int)strlen(hex) || (ai = BN_to_ASN1_INTEGER(bn, NULL)) == NULL ||
        (r = X509_REVOKED_new()) == NULL || X509_REVOKED_set_serialNumber(r, ai) != 1 ||
        X509_REVOKED_set_revocationDate(r, (ASN1_TIME *)when) != 1 || X509_CRL_add0_revoked(crl, r) != 1)
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "CRL entry");
    else
        r = NULL; /* the CRL owns it */
    X509_REVOKED_free(r);
    ASN1_INTEGER_free(ai);
    BN_free(bn);
    return st;
}

/* After X509_CRL_sort, equal serials are neighbours. */
static keel_status_t crl_check_unique(X509_CRL *crl)
{
    STACK_OF(X509_REVOKED) *rev = X509_CRL_get_REVOKED(crl);
    for (int i = 1; i < sk_X509_REVOKED_num(rev); i++) {
        const ASN1_INTEGER *a = X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(rev, i - 1));
        const ASN1_INTEGER *b = X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(rev, i));
        if (ASN1_INTEGER_cmp(a, b) != 0)
            continue;
        BIGNUM *bn = ASN1_INTEGER_to_BN(b, NULL);
        char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
        keel_status_t st = keel_errorf(KEEL_ERR_ARG, "revoked serial %s is listed twice", hex ? hex : "?");
        OPENSSL_free(hex);
        BN_free(bn);
        return st;
    }
    return KEEL_OK;
}

/* The last cRLNumber this CA issued (0 before the first). */
static keel_status_t crl_number_read(const char *path, uint64_t *last)
{
    keel_buf_t b;
    keel_status_t st = keel_file_read(path, 64, &b);
    *last = 0;
    if (st == KEEL_ERR_NOT_FOUND)
        return KEEL_OK;
    if (st != KEEL_OK)
        return st;
    const char *p = (const char *)b.data;
    size_t digits = 0;
    for (; *p >= '0' && *p <= '9' && *last <= CRL_NUMBER_MAX; p++, digits++)
        *last = *last * 10 + (uint64_t)(*p - '0');
    if (digits == 0 || *last > CRL_NUMBER_MAX || (*p != '\0' && strcmp(p, "\n") != 0))
        st = keel_errorf(KEEL_ERR_FORMAT, "%s: not a CRL number (one decimal number); fix it by hand, never "
                         "lower it", path);
    keel_buf_free(&b);
    return st;
}

static keel_status_t crl_sign(X509_CRL *crl, X509 *issuer, EVP_PKEY *key, uint64_t number)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, NULL, NULL, crl, 0);
    X509_EXTENSION *aki = X509V3_EXT_conf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid:always");
    ASN1_INTEGER *num = ASN1_INTEGER_new();
    int ok = aki != NULL && num != NULL && X509_CRL_add_ext(crl, aki, -1) == 1 &&
             ASN1_INTEGER_set_uint64(num, number) == 1 && X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, 0) == 1 &&
             X509_CRL_sign(crl, key, EVP_sha256()) > 0;
    ASN1_INTEGER_free(num);
    X509_EXTENSION_free(aki);
    return ok ? KEEL_OK : keel_crypto_error(KEEL_ERR_CRYPTO, "CRL signature");
}

keel_status_t keel_factory_crl(keel_factory_t *f, keel_pki_t which, const char *const *serials_hex, size_t n,
                               int64_t now, unsigned days, keel_buf_t *pem_out)
{
    /* Every entry is under 64 bytes of PEM; the rest is the CRL's frame. */
    keel_buf_init(pem_out, 4096 + (n <= KEEL_CRL_MAX_ENTRIES ? n : 0) * 64);
    if (f == NULL || which >= KEEL_PKI_COUNT || (n > 0 && serials_hex == NULL))
        return keel_errorf(KEEL_ERR_ARG, "CRL: bad arguments");
    if (n > KEEL_CRL_MAX_ENTRIES)
        return keel_errorf(KEEL_ERR_ARG, "CRL: at most %u revoked serials", KEEL_CRL_MAX_ENTRIES);
    if (days < 1 || days > KEEL_CRL_MAX_DAYS || now < 0 || now > X509_TIME_LAST - (int64_t)days * 86400)
        return keel_errorf(KEEL_ERR_ARG, "CRL: validity must be 1..%u days from a time before 9999",
                           KEEL_CRL_MAX_DAYS);
    if (f->issuing_key[which] == NULL)
        return keel_errorf(KEEL_ERR_ARG, "the %s issuing key was not loaded", pki_dirs[which]);

    keel_status_t st = KEEL_OK;
    X509_CRL *crl = X509_CRL_new();
    ASN1_TIME *last = ASN1_TIME_set(NULL, (time_t)now);
    ASN1_TIME *next = ASN1_TIME_adj(NULL, (time_t)now, (int)days, 0);
    if (crl == NULL || last == NULL || next == NULL || X509_CRL_set_version(crl, X509_CRL_VERSION_2) != 1 ||
        X509_CRL_set_issuer_name(crl, X509_get_subject_name(f->issuing[which])) != 1 ||
        X509_CRL_set1_lastUpdate(crl, last) != 1 || X509_CRL_set1_nextUpdate(crl, next) != 1) {
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "CRL fields");
        goto out;
    }
    for (size_t i = 0; i < n && st == KEEL_OK; i++)
        st = crl_add_serial(crl, serials_hex[i], i, last);
    if (st != KEEL_OK)
        goto out;
    if (X509_CRL_sort(crl) != 1) {
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "CRL sort");
        goto out;
    }
    if ((st = crl_check_unique(crl)) != KEEL_OK)
        goto out;

    /* The number is taken under a lock and stored before the CRL leaves us:
     * two runs never share one, and a crash can only skip one. */
    char cadir[KEEL_PATH_MAX], numpath[KEEL_PATH_MAX], lockpath[KEEL_PATH_MAX], txt[32];
    if ((st = keel_path_join(cadir, sizeof cadir, f->dir, pki_dirs[which])) != KEEL_OK ||
        (st = keel_path_join(numpath, sizeof numpath, cadir, CRL_NUMBER_FILE)) != KEEL_OK ||
        (st = keel_path_join(lockpath, sizeof lockpath, cadir, CRL_LOCK_FILE)) != KEEL_OK)
        goto out;
    int lock = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lock < 0) {
        st = keel_errorf(KEEL_ERR_IO, "open %s: %s", lockpath, strerror(errno));
        goto out;
    }
    if (flock(lock, LOCK_EX) != 0) {
        st = keel_errorf(KEEL_ERR_IO, "lock %s: %s", lockpath, strerror(errno));
    } else {
        uint64_t number = 0;
        if ((st = crl_number_read(numpath, &number)) == KEEL_OK &&
            (st = crl_sign(crl, f->issuing[which], f->issuing_key[which], number + 1)) == KEEL_OK &&
            (st = keel_snprintf(txt, sizeof txt, "%llu\n", (unsigned long long)number + 1)) == KEEL_OK)
            st = keel_file_write_atomic(numpath, txt, strlen(txt), 0644);
    }
    close(lock); /* releases the flock */
    if (st != KEEL_OK)
        goto out;

    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    else
        st = PEM_write_bio_X509_CRL(bio, crl) == 1 ? bio_to_buf(bio, pem_out)
                                                  : keel_crypto_error(KEEL_ERR_CRYPTO, "PEM encode CRL");
    BIO_free(bio);
out:
    ASN1_TIME_free(last);
    ASN1_TIME_free(next);
    X509_CRL_free(crl);
    return st;
}

keel_status_t keel_factory_device_crl(keel_factory_t *f, const char *const *serials_hex, size_t n, int64_t now,
                                      unsigned days, keel_buf_t *pem_out)
{
    return keel_factory_crl(f, KEEL_PKI_DEVICE, serials_hex, n, now, days, pem_out);
}

/*
 * Fuzz target: update bundles, the bytes a download or a USB stick delivers
 * (src/update/bundle.c, docs/bundle-format.md).
 *
 * Byte 0, bit 0 picks the input:
 *   0  raw: the rest is a bundle, through keel_bundle_inspect, keel_bundle_open
 *      (and its chunks) and keel_bundle_verify_signed_part.
 *   1  built: byte 1 = number of patches (mod 8), then 3 bytes per patch
 *      (offset, 16 bits big-endian, modulo the bundle's length; a byte to
 *      XOR there), then the manifest up to the first NUL, then the payload.
 *      The target signs header || manifest || chain with the signer it made
 *      at start-up (as the release tool does), appends the payload, applies
 *      the patches, and hands the result to the reader. Bit 1 of byte 0
 *      first sets the manifest's payload fields (size, sha256, chunks) to
 *      those of the payload, so the chunk reader runs on real digests.
 *
 * The release root and the signer (P-256, codeSigning) are made in
 * LLVMFuzzerInitialize from fixed scalars, so an input reproduces in every
 * run. What must hold:
 *   - a bundle the reader opens carries a signature that verifies, with the
 *     target's signer key, over its header || manifest || chain as received:
 *     mutated bytes are never taken unless the signature still holds;
 *   - a built bundle that nothing patched and whose manifest inspect takes
 *     is opened (the trust anchor accepts its own signer), and its payload
 *     comes out whole when the digests were set;
 *   - a payload byte is handed out only if it is the byte that was signed;
 *   - the signed part of an opened bundle verifies again (the boot check),
 *     with the same manifest.
 */
#include "fuzz.h"

#include "keel/update.h"

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PATCHES_MAX 8
#define BUNDLE_MAX (1u << 20)

static keel_trust_t *trust;
static EVP_PKEY *signer_key;
static uint8_t *chain_der;
static size_t chain_len;
static uint8_t *bundle, *orig;
static uint8_t chunk_buf[KEEL_BUNDLE_CHUNK_MAX];

/* ---- the keys and certificates of the run ------------------------------------------ */

static void need(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_bundle: set-up failed: %s\n", what);
        exit(2);
    }
}

/* A P-256 key whose private scalar is `hex` (a test key, made at start-up). */
static EVP_PKEY *p256_from(const char *hex)
{
    EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    BIGNUM *priv = NULL;
    EC_POINT *pub = g != NULL ? EC_POINT_new(g) : NULL;
    uint8_t pub_oct[65];
    need(g != NULL && pub != NULL && BN_hex2bn(&priv, hex) > 0 && EC_POINT_mul(g, pub, priv, NULL, NULL, NULL) == 1 &&
             EC_POINT_point2oct(g, pub, POINT_CONVERSION_UNCOMPRESSED, pub_oct, sizeof pub_oct, NULL) == sizeof pub_oct,
         "EC point");
    OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
    need(b != NULL && OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) == 1 &&
             OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_PRIV_KEY, priv) == 1 &&
             OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, pub_oct, sizeof pub_oct) == 1,
         "EC params");
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(b);
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    EVP_PKEY *k = NULL;
    need(params != NULL && c != NULL && EVP_PKEY_fromdata_init(c) == 1 &&
             EVP_PKEY_fromdata(c, &k, EVP_PKEY_KEYPAIR, params) == 1,
         "EC key");
    EVP_PKEY_CTX_free(c);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(b);
    BN_clear_free(priv);
    EC_POINT_free(pub);
    EC_GROUP_free(g);
    return k;
}

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    need(e != NULL && X509_add_ext(cert, e, -1) == 1, "extension");
    X509_EXTENSION_free(e);
}

static X509 *cert_make(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, long serial)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    need(x != NULL && name != NULL &&
             X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) == 1 &&
             X509_set_version(x, X509_VERSION_3) == 1 && ASN1_INTEGER_set(X509_get_serialNumber(x), serial) == 1 &&
             X509_set_subject_name(x, name) == 1 &&
             X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name) == 1 &&
             X509_gmtime_adj(X509_getm_notBefore(x), -86400) != NULL &&
             X509_gmtime_adj(X509_getm_notAfter(x), 3650L * 86400) != NULL && X509_set_pubkey(x, key) == 1,
         "certificate");
    X509_NAME_free(name);
    if (issuer == NULL) {
        add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
        add_ext(x, x, NID_subject_key_identifier, "hash");
    } else {
        add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE");
        add_ext(x, issuer, NID_key_usage, "critical,digitalSignature");
        add_ext(x, issuer, NID_ext_key_usage, "codeSigning");
        add_ext(x, issuer, NID_authority_key_identifier, "keyid");
    }
    need(X509_sign(x, issuer_key, EVP_sha256()) > 0, "signing a certificate");
    return x;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    keel_log_set_level(KEEL_LOG_ERROR);
    EVP_PKEY *root_key = p256_from("6b1f0e8c3a9d52a4c1e07f3b9a2d4c8e1f6a0b3d5c7e9f1a2b4c6d8e0f1a3b5c");
    signer_key = p256_from("3c5e7a9b1d2f4a6c8e0b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c");
    X509 *root = cert_make("Fuzz Release Root", root_key, NULL, root_key, 1);
    X509 *signer = cert_make("Fuzz Update Signer", signer_key, root, root_key, 2);
    int n = i2d_X509(signer, &chain_der);
    need(n > 0, "signer DER");
    chain_len = (size_t)n;
    char path[] = "/tmp/fuzz-bundle-root-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    need(f != NULL && PEM_write_X509(f, root) == 1 && fclose(f) == 0, "root file");
    need(keel_trust_load(path, NULL, &trust) == KEEL_OK, "trust store");
    unlink(path);
    X509_free(signer);
    X509_free(root);
    EVP_PKEY_free(root_key);
    bundle = malloc(BUNDLE_MAX);
    orig = malloc(BUNDLE_MAX);
    need(bundle != NULL && orig != NULL, "memory");
    return 0;
}

/* ---- reading ------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *p;
    size_t len, at;
} mem_t;

static ssize_t mem_read(void *ctx, void *buf, size_t n)
{
    mem_t *m = ctx;
    size_t k = m->len - m->at < n ? m->len - m->at : n;
    memcpy(buf, m->p + m->at, k);
    m->at += k;
    return (ssize_t)k;
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* Does the signature in b verify, with our signer's key, over header ||
 * manifest || chain? Independent of the reader. */
static int signer_verifies(const uint8_t *b, size_t len)
{
    if (len < KEEL_BUNDLE_HEADER_LEN)
        return 0;
    uint64_t m = be32(b + 12), s = be32(b + 16), c = be32(b + 20);
    if (KEEL_BUNDLE_HEADER_LEN + m + s + c > len)
        return 0;
    const uint8_t *sig = b + KEEL_BUNDLE_HEADER_LEN + m;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, signer_key) == 1 &&
             EVP_DigestVerifyUpdate(ctx, b, KEEL_BUNDLE_HEADER_LEN + m) == 1 &&
             EVP_DigestVerifyUpdate(ctx, sig + s, c) == 1 && EVP_DigestVerifyFinal(ctx, sig, s) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* Runs the reader over b. `plain` (may be NULL): the payload as signed, at
 * offset `payload_at` of b. Returns 1 when the bundle was opened, and sets
 * *whole when every chunk came out. */
static int read_bundle(const uint8_t *b, size_t len, const uint8_t *plain, size_t payload_at, int *whole)
{
    mem_t in = {b, len, 0};
    keel_bundle_header_t h;
    keel_manifest_t m;
    char subject[KEEL_BUNDLE_SUBJECT_MAX];
    if (keel_bundle_inspect(mem_read, &in, &h, &m, subject, sizeof subject) == KEEL_OK) {
        fuzz_must(m.payload_size == h.payload_len && m.n_models >= 1 && m.n_models <= KEEL_BUNDLE_MODELS_MAX,
                  "inspect took a manifest outside its rules");
        keel_manifest_free(&m);
    }
    keel_error_clear();
    in.at = 0;
    keel_bundle_reader_t *r = NULL;
    *whole = 0;
    if (keel_bundle_open(mem_read, &in, trust, &r) != KEEL_OK) {
        keel_error_clear();
        return 0;
    }
    fuzz_must(signer_verifies(b, len), "a bundle was opened whose signature does not verify with the signer's key");
    const keel_manifest_t *mf = keel_bundle_manifest(r);
    const uint8_t *sp = NULL;
    size_t sl = 0;
    fuzz_must(keel_bundle_signed_part(r, &sp, &sl) == KEEL_OK && sl <= len && memcmp(sp, b, sl) == 0,
              "the signed part is not the bundle's first bytes");
    keel_manifest_t again;
    fuzz_must(keel_bundle_verify_signed_part(sp, sl, trust, &again) == KEEL_OK &&
                  again.payload_size == mf->payload_size && again.n_chunks == mf->n_chunks &&
                  strcmp(again.version, mf->version) == 0,
              "the signed part of an opened bundle does not verify again");
    keel_manifest_free(&again);
    uint64_t done = 0;
    for (;;) {
        size_t n = 0;
        /* A buffer of one chunk, as the installer gives (a refused chunk is wiped whole). */
        if (keel_bundle_next_chunk(r, chunk_buf, mf->chunk_size, &n) != KEEL_OK) {
            keel_error_clear();
            break;
        }
        if (n == 0) {
            *whole = done == mf->payload_size;
            fuzz_must(*whole, "the reader finished before the payload's end");
            break;
        }
        fuzz_must(done + n <= mf->payload_size && sl + done + n <= len, "a chunk past the payload");
        if (plain != NULL)
            fuzz_must(sl == payload_at && memcmp(chunk_buf, plain + done, n) == 0,
                      "a payload byte was handed out that is not the one signed");
        done += n;
    }
    keel_bundle_close(r);
    return 1;
}

/* ---- building ----------------------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static char *hex_of(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
    return out;
}

/* Sets payload.size, .sha256 and .chunks (when chunk_size is usable) to the
 * payload's. Returns the new manifest text (malloc'ed) or NULL to keep it. */
static char *fix_payload(const uint8_t *text, size_t len, const uint8_t *pl, size_t plen)
{
    json_t *root = json_loadb((const char *)text, len, 0, NULL);
    json_t *p = json_object_get(root, "payload");
    char *out = NULL;
    if (json_is_object(p)) {
        uint8_t d[32];
        char hex[65];
        json_int_t cs = json_integer_value(json_object_get(p, "chunk_size"));
        unsigned dl = 0;
        json_object_set_new(p, "size", json_integer((json_int_t)plen));
        if (EVP_Digest(pl, plen, d, &dl, EVP_sha256(), NULL) == 1)
            json_object_set_new(p, "sha256", json_string(hex_of(d, 32, hex)));
        if (cs >= 4096 && cs <= KEEL_BUNDLE_CHUNK_MAX && (cs & (cs - 1)) == 0) {
            json_t *a = json_array();
            for (size_t at = 0; a != NULL && at < plen; at += (size_t)cs) {
                size_t k = plen - at < (size_t)cs ? plen - at : (size_t)cs;
                if (EVP_Digest(pl + at, k, d, &dl, EVP_sha256(), NULL) == 1)
                    json_array_append_new(a, json_string(hex_of(d, 32, hex)));
            }
            json_object_set_new(p, "chunks", a);
        }
        out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    }
    json_decref(root);
    return out;
}

/* header || manifest || signature || chain || payload into `bundle`; 0 if it
 * does not fit or could not be signed at the announced length. */
static size_t build(const uint8_t *mf, size_t mlen, const uint8_t *pl, size_t plen, size_t *payload_at)
{
    uint8_t sig[80];
    size_t slen = 72; /* what the header announces; signed again until it comes out */
    if (KEEL_BUNDLE_HEADER_LEN + mlen + sizeof sig + chain_len + plen > BUNDLE_MAX)
        return 0;
    uint8_t *h = bundle;
    memset(h, 0, KEEL_BUNDLE_HEADER_LEN);
    memcpy(h, KEEL_BUNDLE_MAGIC, 8);
    h[9] = KEEL_BUNDLE_VERSION;
    h[11] = KEEL_BUNDLE_ALG_ECDSA_P256_SHA256;
    put32(h + 12, (uint32_t)mlen);
    put32(h + 20, (uint32_t)chain_len);
    put32(h + 24, (uint32_t)((uint64_t)plen >> 32));
    put32(h + 28, (uint32_t)plen);
    for (int tries = 0; tries < 64; tries++) {
        put32(h + 16, (uint32_t)slen);
        memcpy(h + KEEL_BUNDLE_HEADER_LEN, mf, mlen);
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        size_t got = sizeof sig;
        int ok = c != NULL && EVP_DigestSignInit(c, NULL, EVP_sha256(), NULL, signer_key) == 1 &&
                 EVP_DigestSignUpdate(c, h, KEEL_BUNDLE_HEADER_LEN + mlen) == 1 &&
                 EVP_DigestSignUpdate(c, chain_der, chain_len) == 1 && EVP_DigestSignFinal(c, sig, &got) == 1;
        EVP_MD_CTX_free(c);
        need(ok, "signing a bundle");
        if (got == slen) {
            uint8_t *p = h + KEEL_BUNDLE_HEADER_LEN + mlen;
            memcpy(p, sig, slen);
            memcpy(p + slen, chain_der, chain_len);
            *payload_at = (size_t)(p + slen + chain_len - bundle);
            memcpy(bundle + *payload_at, pl, plen);
            return *payload_at + plen;
        }
        slen = got;
    }
    return 0;
}

static void built(uint8_t flags, const uint8_t *data, size_t size)
{
    if (size < 1)
        return;
    size_t n_patches = data[0] % PATCHES_MAX;
    if (size < 1 + 3 * n_patches)
        return;
    const uint8_t *patches = data + 1;
    const uint8_t *mf = patches + 3 * n_patches, *end = data + size;
    const uint8_t *nul = memchr(mf, '\0', (size_t)(end - mf));
    size_t mlen = (size_t)((nul != NULL ? nul : end) - mf);
    const uint8_t *pl = nul != NULL ? nul + 1 : end;
    size_t plen = (size_t)(end - pl);
    char *fixed = (flags & 2) ? fix_payload(mf, mlen, pl, plen) : NULL;
    size_t payload_at = 0;
    size_t len = fixed != NULL ? build((const uint8_t *)fixed, strlen(fixed), pl, plen, &payload_at)
                               : build(mf, mlen, pl, plen, &payload_at);
    free(fixed);
    if (len == 0)
        return;
    memcpy(orig, bundle, len);
    int changed = 0;
    for (size_t i = 0; i < n_patches; i++) {
        size_t at = ((size_t)patches[3 * i] << 8 | patches[3 * i + 1]) % len;
        bundle[at] ^= patches[3 * i + 2];
    }
    changed = memcmp(orig, bundle, len) != 0;
    /* The inspect verdict on what was signed, before any patch. */
    mem_t in = {orig, len, 0};
    keel_bundle_header_t h;
    keel_manifest_t m;
    int well_formed = keel_bundle_inspect(mem_read, &in, &h, &m, NULL, 0) == KEEL_OK;
    if (well_formed)
        keel_manifest_free(&m);
    keel_error_clear();
    int whole = 0;
    int opened = read_bundle(bundle, len, orig + payload_at, payload_at, &whole);
    if (!changed && well_formed)
        fuzz_must(opened, "a well-formed bundle signed by the trusted signer was refused");
    if (!changed && well_formed && (flags & 2) && plen <= KEEL_BUNDLE_CHUNK_MAX * (size_t)KEEL_BUNDLE_CHUNKS_MAX)
        fuzz_must(whole, "the payload of a good bundle did not come out whole");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > BUNDLE_MAX / 2)
        return 0;
    if (data[0] & 1) {
        built(data[0], data + 1, size - 1);
    } else {
        int whole = 0;
        (void)read_bundle(data + 1, size - 1, NULL, 0, &whole);
        keel_manifest_t m;
        if (keel_bundle_verify_signed_part(data + 1, size - 1, trust, &m) == KEEL_OK) {
            fuzz_must(signer_verifies(data + 1, size - 1), "a signed part verified that the signer did not sign");
            keel_manifest_free(&m);
        }
        keel_error_clear();
    }
    return 0;
}

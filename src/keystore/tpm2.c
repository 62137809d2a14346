/*
 * The tpm2 keystore driver: keys created inside a TPM 2.0 through OpenSSL's
 * tpm2 provider (Debian's tpm2-openssl), kept as TSS2 key blobs.
 *
 * A blob is the key's public part and its private part encrypted by the
 * TPM's storage root key (SRK), which never leaves the TPM: the blob is
 * useless on any other TPM, and a copied state directory with it. The key
 * is made inside the TPM (fixedTPM, fixedParent, sensitiveDataOrigin), has
 * an authorization value (the "PIN", from pin_file or pin_env), and no
 * `noDA`, so the TPM's dictionary-attack lockout limits guesses at it.
 *
 * Files in cfg->dir (PEM "TSS2 PRIVATE KEY", 0600):
 *   <label>.tpm2      the signing key
 *   <label>.tpm2wrap  the ECDH key that seals secrets for keel_keystore_seal
 *
 * The provider is loaded into a private OSSL_LIB_CTX, never into the default
 * one: the rest of the process keeps OpenSSL's own implementations, and a
 * file-key-only program never touches the TPM. The price is that a TPM key
 * works only in that library context, while TLS and X.509 in Keel run in the
 * default one. So private_key hands out a bridge: an EC key in the default
 * context whose ECDSA method sends the digest (computed in software) to the
 * TPM and gets the signature back. Hashing stays in software, TLS 1.2 and 1.3
 * both work, and the TPM does one TPM2_Sign per handshake.
 *
 * The provider's ESYS context is not thread-safe: every TPM operation runs
 * under the driver's lock.
 */
/* EC_KEY_METHOD is deprecated in OpenSSL 3, and it is still the only way in
 * 3.0 to give libssl and X509_sign a key whose signing is done elsewhere
 * without writing a whole provider (libp11 uses the same). */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "driver.h"

#include "keel/crypto.h"

#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/ec.h>
#include <openssl/encoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* A key's authorization value is at most its name-hash size (SHA-256: 32
 * bytes); the provider passes the PIN on as it is. */
#define TPM2_PIN_MAX 32
#define TPM2_BLOB_MAX 4096
#define TPM2_TCTI_MAX 256
#define TPM2_CACHE 8     /* keys kept loaded */
#define P256_POINT_COMPRESSED 33
#define SEAL_VERSION 0x01
#define SEAL_HEAD (1 + P256_POINT_COMPRESSED)

_Static_assert(SEAL_HEAD + KEEL_AEAD_OVERHEAD <= KEEL_KEYSTORE_SEAL_OVERHEAD, "seal overhead too small");

typedef struct {
    char label[KEEL_KEYSTORE_LABEL_MAX + 16];
    EVP_PKEY *key; /* in the tpm2 library context */
} cached_key_t;

typedef struct {
    pthread_mutex_t lock;
    OSSL_LIB_CTX *lc;
    OSSL_PROVIDER *tpm;
    OSSL_PROVIDER *dflt;
    char dir[KEEL_PATH_MAX];
    char pin[TPM2_PIN_MAX + 1];
    size_t pinlen;
    cached_key_t cache[TPM2_CACHE];
    size_t next_evict;
} tpm2_state_t;

/* What a bridge key carries: the TPM key it signs with and the driver. */
typedef struct {
    tpm2_state_t *s;
    EVP_PKEY *key;
} bridge_t;

/*
 * The provider's error, with the TPM's response decoded where it says what
 * a user can act on: a wrong PIN (each one counts towards the lockout) and
 * the dictionary-attack lockout itself.
 */
static keel_status_t tpm_error(keel_status_t st, const char *what)
{
    const char *data = NULL;
    int flags = 0;
    char reason[256] = "unknown reason", detail[256] = "";
    unsigned long e;
    /* the first error is the TPM's; the later ones are OpenSSL passing it up */
    if ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
        ERR_error_string_n(e, reason, sizeof reason);
        if (data != NULL && (flags & ERR_TXT_STRING) != 0)
            snprintf(detail, sizeof detail, "%s", data);
    }
    ERR_clear_error();
    /* tpm2-openssl's data is "<response code> <decoded text>" */
    char *end = NULL;
    unsigned long rc = detail[0] >= '0' && detail[0] <= '9' ? strtoul(detail, &end, 10) : 0;
    const char *hint = NULL;
    if ((rc & 0xfffu) == 0x921u)
        hint = "the TPM is in dictionary-attack lockout after too many wrong PINs (it forgives one failure per "
               "recovery interval; the owner of the lockout authorization can clear it)";
    else if ((rc & 0x80u) != 0 && (rc & 0x3fu) == 0x0eu)
        hint = "wrong PIN: the TPM refused the key's authorization value and counted a dictionary-attack failure";
    else if ((rc & 0x80u) != 0 && (rc & 0x3fu) == 0x22u)
        hint = "wrong PIN: the TPM refused the key's authorization value";
    else if ((rc & 0x80u) != 0 && (rc & 0x3fu) == 0x1fu)
        hint = "the key blob was not made by this TPM (or was altered)";
    if (hint != NULL)
        return keel_errorf(st, "%s: %s (TPM response 0x%03lx)", what, hint, rc);
    return keel_errorf(st, "%s: %s%s%s", what, reason, detail[0] ? ": " : "", detail);
}

static void tpm2_close(void *state)
{
    tpm2_state_t *s = state;
    if (s == NULL)
        return;
    for (size_t i = 0; i < TPM2_CACHE; i++)
        EVP_PKEY_free(s->cache[i].key);
    if (s->tpm != NULL && OSSL_PROVIDER_unload(s->tpm) != 1)
        keel_log(KEEL_LOG_WARN, "tpm2: unloading the provider failed");
    if (s->dflt != NULL && OSSL_PROVIDER_unload(s->dflt) != 1)
        keel_log(KEEL_LOG_WARN, "tpm2: unloading the default provider failed");
    OSSL_LIB_CTX_free(s->lc);
    ERR_clear_error();
    pthread_mutex_destroy(&s->lock);
    keel_wipe(s, sizeof *s);
    free(s);
}

/*
 * The provider reads its TCTI from TPM2OPENSSL_TCTI when it is loaded (on
 * OpenSSL 3.0 there is no way to hand a freshly loaded provider a parameter
 * without a configuration file), so a configured TCTI is put there. The
 * daemons open their keystore at start-up, before they start threads.
 */
static pthread_mutex_t provider_lock = PTHREAD_MUTEX_INITIALIZER;

/* Loads the provider into s->lc with `tcti`; keystores opened side by side
 * (factory provisioning) take turns. */
static keel_status_t provider_load(tpm2_state_t *s, const char *tcti)
{
    if (tcti != NULL && tcti[0] != '\0' && (strlen(tcti) > TPM2_TCTI_MAX || strpbrk(tcti, "\n\r") != NULL))
        return keel_errorf(KEEL_ERR_CONFIG, "tpm2 keystore: the TCTI setting is malformed");
    keel_status_t st = KEEL_OK;
    pthread_mutex_lock(&provider_lock);
    /* No TCTI configured: the environment's, else the TSS default search. */
    if (tcti != NULL && tcti[0] != '\0') {
        const char *cur = getenv("TPM2OPENSSL_TCTI");
        if ((cur == NULL || strcmp(cur, tcti) != 0) && setenv("TPM2OPENSSL_TCTI", tcti, 1) != 0)
            st = keel_errorf(KEEL_ERR_NOMEM, "tpm2 keystore: cannot set the TCTI");
    }
    /* tpm2 first: operations on TPM keys must come from it; default for the
     * encoders, decoders and software helpers the provider leans on. */
    if (st == KEEL_OK && (s->tpm = OSSL_PROVIDER_load(s->lc, "tpm2")) == NULL) {
        const char *t = getenv("TPM2OPENSSL_TCTI");
        char what[TPM2_TCTI_MAX + 128];
        snprintf(what, sizeof what, "tpm2: no TPM answers through TCTI '%s' (or tpm2-openssl is not installed)",
                 t != NULL ? t : "default: /dev/tpmrm0, /dev/tpm0, tabrmd, swtpm");
        st = tpm_error(KEEL_ERR_KEYSTORE, what);
    }
    pthread_mutex_unlock(&provider_lock);
    return st;
}

static keel_status_t tpm2_open(const keel_keystore_config_t *cfg, void **state)
{
    if (cfg->dir == NULL || cfg->dir[0] == '\0')
        return keel_errorf(KEEL_ERR_ARG, "tpm2 keystore: no directory configured");
    if (cfg->pin_file == NULL && (cfg->pin_env == NULL || cfg->pin_env[0] == '\0'))
        return keel_errorf(KEEL_ERR_ARG, "tpm2 keystore: no PIN file or PIN variable configured "
                                         "(the keys' authorization value)");
    tpm2_state_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    /* Recursive: a bridge key freed while the lock is held (bridge_make's
     * error path) takes it again to release its TPM key. */
    pthread_mutexattr_t ma;
    int locked = pthread_mutexattr_init(&ma) == 0;
    if (!locked || pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE) != 0 ||
        pthread_mutex_init(&s->lock, &ma) != 0) {
        if (locked)
            pthread_mutexattr_destroy(&ma);
        free(s);
        return keel_errorf(KEEL_ERR_NOMEM, "tpm2 keystore: cannot create a lock");
    }
    pthread_mutexattr_destroy(&ma);
    keel_status_t st = keel_strlcpy(s->dir, cfg->dir, sizeof s->dir);
    if (st == KEEL_OK)
        st = keel_keystore_secret_read("tpm2: the PIN", cfg->pin_file, cfg->pin_env, s->pin,
                                       sizeof s->pin, &s->pinlen);
    if (st == KEEL_OK && cfg->create)
        st = keel_dir_make(s->dir, 0700);
    if (st == KEEL_OK && (s->lc = OSSL_LIB_CTX_new()) == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "tpm2: cannot create a library context");
    if (st == KEEL_OK)
        st = provider_load(s, cfg->tcti);
    if (st == KEEL_OK && (s->dflt = OSSL_PROVIDER_load(s->lc, "default")) == NULL)
        st = tpm_error(KEEL_ERR_KEYSTORE, "tpm2: cannot load the default provider");
    ERR_clear_error();
    if (st != KEEL_OK) {
        tpm2_close(s);
        return st;
    }
    *state = s;
    return KEEL_OK;
}

static keel_status_t blob_path(const tpm2_state_t *s, const char *label, const char *ext, char *out)
{
    return keel_snprintf(out, KEEL_PATH_MAX, "%s/%s.%s", s->dir, label, ext);
}

/* A passphrase callback that hands the decoder the key's PIN. */
static int pin_cb(char *buf, size_t size, size_t *len, const OSSL_PARAM params[], void *arg)
{
    (void)params;
    const tpm2_state_t *s = arg;
    if (s->pinlen > size)
        return 0;
    memcpy(buf, s->pin, s->pinlen);
    *len = s->pinlen;
    return 1;
}

/* Reads and loads the key in `path` into the TPM (caller holds the lock). */
static keel_status_t blob_load(tpm2_state_t *s, const char *path, EVP_PKEY **out)
{
    keel_buf_t b;
    keel_status_t st = keel_file_read(path, TPM2_BLOB_MAX, &b);
    if (st != KEEL_OK)
        return st;
    EVP_PKEY *pk = NULL;
    OSSL_DECODER_CTX *d = OSSL_DECODER_CTX_new_for_pkey(&pk, "PEM", NULL, "EC", EVP_PKEY_KEYPAIR, s->lc,
                                                        "provider=tpm2");
    const unsigned char *p = b.data;
    size_t n = b.len;
    if (d == NULL || OSSL_DECODER_CTX_set_passphrase_cb(d, pin_cb, s) != 1)
        st = tpm_error(KEEL_ERR_KEYSTORE, "tpm2: decoder");
    else if (OSSL_DECODER_from_data(d, &p, &n) != 1 || pk == NULL)
        st = tpm_error(KEEL_ERR_KEYSTORE, "tpm2: loading the key into the TPM failed");
    OSSL_DECODER_CTX_free(d);
    keel_buf_free(&b);
    if (st == KEEL_OK)
        *out = pk;
    else
        EVP_PKEY_free(pk);
    return st;
}

/* The key for label.ext, loaded once and kept (caller holds the lock). */
static keel_status_t key_get(tpm2_state_t *s, const char *label, const char *ext, EVP_PKEY **out)
{
    char name[sizeof s->cache[0].label];
    keel_status_t st = keel_snprintf(name, sizeof name, "%s.%s", label, ext);
    if (st != KEEL_OK)
        return st;
    for (size_t i = 0; i < TPM2_CACHE; i++)
        if (s->cache[i].key != NULL && strcmp(s->cache[i].label, name) == 0) {
            *out = s->cache[i].key;
            return KEEL_OK;
        }
    char path[KEEL_PATH_MAX];
    EVP_PKEY *pk = NULL;
    if ((st = blob_path(s, label, ext, path)) != KEEL_OK)
        return st;
    if (!keel_path_exists(path))
        return keel_errorf(KEEL_ERR_NOT_FOUND, "tpm2: key '%s' does not exist", name);
    if ((st = blob_load(s, path, &pk)) != KEEL_OK)
        return st;
    cached_key_t *c = &s->cache[s->next_evict];
    s->next_evict = (s->next_evict + 1) % TPM2_CACHE;
    EVP_PKEY_free(c->key); /* bridges hold their own reference */
    c->key = pk;
    memcpy(c->label, name, sizeof name);
    *out = pk;
    return KEEL_OK;
}

static void cache_drop(tpm2_state_t *s, const char *label)
{
    size_t n = strlen(label);
    for (size_t i = 0; i < TPM2_CACHE; i++)
        if (s->cache[i].key != NULL && strncmp(s->cache[i].label, label, n) == 0 &&
            s->cache[i].label[n] == '.') {
            EVP_PKEY_free(s->cache[i].key);
            memset(&s->cache[i], 0, sizeof s->cache[i]);
        }
}

/* The public half of a TPM key as a plain key in the default context. */
static keel_status_t public_of(EVP_PKEY *tpmkey, EVP_PKEY **pub)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(tpmkey, &der);
    if (n <= 0)
        return tpm_error(KEEL_ERR_KEYSTORE, "tpm2: encode public key");
    const unsigned char *p = der;
    *pub = d2i_PUBKEY(NULL, &p, n);
    OPENSSL_free(der);
    return *pub != NULL ? KEEL_OK : tpm_error(KEEL_ERR_KEYSTORE, "tpm2: decode public key");
}

/* Creates a P-256 key in the TPM and writes its blob (caller holds the lock). */
static keel_status_t key_create(tpm2_state_t *s, const char *label, const char *ext, EVP_PKEY **pub)
{
    char path[KEEL_PATH_MAX];
    keel_status_t st = blob_path(s, label, ext, path);
    if (st != KEEL_OK)
        return st;
    /* A cheap early answer; the create below is what really refuses. */
    if (keel_path_exists(path))
        return keel_errorf(KEEL_ERR_EXISTS, "key '%s' already exists", label);
    EVP_PKEY *pk = NULL;
    EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_from_name(s->lc, "EC", "provider=tpm2");
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"P-256", 0),
        OSSL_PARAM_construct_utf8_string("user-auth", s->pin, s->pinlen),
        OSSL_PARAM_construct_end(),
    };
    if (kc == NULL || EVP_PKEY_keygen_init(kc) != 1 || EVP_PKEY_CTX_set_params(kc, params) != 1 ||
        EVP_PKEY_generate(kc, &pk) != 1)
        st = tpm_error(KEEL_ERR_KEYSTORE, "tpm2: creating a key in the TPM failed");
    EVP_PKEY_CTX_free(kc);
    unsigned char *pem = NULL;
    size_t pemlen = 0;
    if (st == KEEL_OK) {
        OSSL_ENCODER_CTX *e = OSSL_ENCODER_CTX_new_for_pkey(pk, EVP_PKEY_KEYPAIR, "PEM", "PrivateKeyInfo",
                                                            "provider=tpm2");
        if (e == NULL || OSSL_ENCODER_to_data(e, &pem, &pemlen) != 1)
            st = tpm_error(KEEL_ERR_KEYSTORE, "tpm2: encoding the key blob failed");
        OSSL_ENCODER_CTX_free(e);
    }
    if (st == KEEL_OK) {
        st = keel_file_create_atomic(path, pem, pemlen, 0600);
        if (st == KEEL_ERR_EXISTS)
            st = keel_errorf(KEEL_ERR_EXISTS, "key file %s already exists", path);
    }
    OPENSSL_free(pem); /* the private part in it is encrypted by the TPM */
    if (st == KEEL_OK && pub != NULL)
        st = public_of(pk, pub);
    EVP_PKEY_free(pk);
    return st;
}

static keel_status_t tpm2_generate(void *state, const char *label, EVP_PKEY **pub)
{
    tpm2_state_t *s = state;
    pthread_mutex_lock(&s->lock);
    keel_status_t st = key_create(s, label, "tpm2", pub);
    pthread_mutex_unlock(&s->lock);
    return st;
}

static keel_status_t tpm2_public_key(void *state, const char *label, EVP_PKEY **pub)
{
    tpm2_state_t *s = state;
    EVP_PKEY *k = NULL;
    pthread_mutex_lock(&s->lock);
    keel_status_t st = key_get(s, label, "tpm2", &k);
    if (st == KEEL_OK)
        st = public_of(k, pub);
    pthread_mutex_unlock(&s->lock);
    return st;
}

/* ECDSA over a digest (32, 48 or 64 bytes) in the TPM; DER out (caller holds the lock). */
static keel_status_t digest_sign(tpm2_state_t *s, EVP_PKEY *k, const uint8_t *dgst, size_t dlen,
                                 uint8_t *sig, size_t cap, size_t *siglen)
{
    const char *md = dlen == 32 ? "SHA256" : dlen == 48 ? "SHA384" : dlen == 64 ? "SHA512" : NULL;
    if (md == NULL)
        return keel_errorf(KEEL_ERR_UNSUPPORTED, "tpm2: cannot sign a %zu-byte digest", dlen);
    keel_status_t st = KEEL_OK;
    size_t n = cap;
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(s->lc, k, "provider=tpm2");
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, (char *)md, 0),
        OSSL_PARAM_construct_end(),
    };
    if (pc == NULL || EVP_PKEY_sign_init_ex(pc, params) != 1 || EVP_PKEY_sign(pc, sig, &n, dgst, dlen) != 1)
        st = tpm_error(KEEL_ERR_KEYSTORE, "tpm2: signing in the TPM failed");
    else
        *siglen = n;
    EVP_PKEY_CTX_free(pc);
    return st;
}

static keel_status_t tpm2_sign(void *state, const char *label, const void *msg, size_t len, uint8_t *sig,
                               size_t cap, size_t *siglen)
{
    tpm2_state_t *s = state;
    uint8_t h[KEEL_SHA256_LEN];
    keel_sha256(msg, len, h);
    EVP_PKEY *k = NULL;
    pthread_mutex_lock(&s->lock);
    keel_status_t st = key_get(s, label, "tpm2", &k);
    if (st == KEEL_OK)
        st = digest_sign(s, k, h, sizeof h, sig, cap, siglen);
    pthread_mutex_unlock(&s->lock);
    return st;
}

/* ---- the bridge: an EC key in the default context that signs in the TPM ---- */

static int bridge_index = -1;
static EC_KEY_METHOD *bridge_method;
static pthread_once_t bridge_once = PTHREAD_ONCE_INIT;

/* The last reference to a TPM key flushes it from the TPM: under the lock,
 * like every other use of the provider's TPM context. */
static void bridge_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    bridge_t *b = ptr;
    if (b == NULL)
        return;
    if (b->s != NULL) {
        pthread_mutex_lock(&b->s->lock);
        EVP_PKEY_free(b->key);
        pthread_mutex_unlock(&b->s->lock);
    } else {
        EVP_PKEY_free(b->key); /* bridge_make failed before it was tied to a keystore */
    }
    free(b);
}

/* A copied bridge key (EC_KEY_dup, EVP_PKEY_dup) gets its own reference to
 * the TPM key; without this both copies would share, and free, one. */
static int bridge_dup(CRYPTO_EX_DATA *to, const CRYPTO_EX_DATA *from, void **from_d, int idx, long argl,
                      void *argp)
{
    (void)to, (void)from, (void)idx, (void)argl, (void)argp;
    bridge_t *b = *from_d;
    if (b == NULL)
        return 1;
    bridge_t *c = malloc(sizeof *c);
    if (c == NULL || EVP_PKEY_up_ref(b->key) != 1) {
        free(c);
        *from_d = NULL;
        return 0;
    }
    *c = *b;
    *from_d = c;
    return 1;
}

static keel_status_t bridge_sign_der(EC_KEY *ec, const unsigned char *dgst, int dlen, uint8_t *sig,
                                     size_t cap, size_t *siglen)
{
    bridge_t *b = EC_KEY_get_ex_data(ec, bridge_index);
    if (b == NULL || dlen <= 0)
        return keel_errorf(KEEL_ERR_ARG, "tpm2: not a TPM key");
    pthread_mutex_lock(&b->s->lock);
    keel_status_t st = digest_sign(b->s, b->key, dgst, (size_t)dlen, sig, cap, siglen);
    pthread_mutex_unlock(&b->s->lock);
    return st;
}

static int bridge_sign(int type, const unsigned char *dgst, int dlen, unsigned char *sig, unsigned int *siglen,
                       const BIGNUM *kinv, const BIGNUM *r, EC_KEY *ec)
{
    (void)type, (void)kinv, (void)r;
    size_t n = 0;
    int cap = ECDSA_size(ec);
    if (cap <= 0 || bridge_sign_der(ec, dgst, dlen, sig, (size_t)cap, &n) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "%s", keel_error_message());
        return 0;
    }
    *siglen = (unsigned int)n;
    return 1;
}

static ECDSA_SIG *bridge_sign_sig(const unsigned char *dgst, int dlen, const BIGNUM *kinv, const BIGNUM *r,
                                  EC_KEY *ec)
{
    (void)kinv, (void)r;
    uint8_t der[KEEL_ECDSA_SIG_MAX];
    size_t n = 0;
    if (bridge_sign_der(ec, dgst, dlen, der, sizeof der, &n) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "%s", keel_error_message());
        return NULL;
    }
    const unsigned char *p = der;
    return d2i_ECDSA_SIG(NULL, &p, (long)n);
}

static void bridge_init(void)
{
    bridge_index = EC_KEY_get_ex_new_index(0, NULL, NULL, bridge_dup, bridge_free);
    EC_KEY_METHOD *m = EC_KEY_METHOD_new(EC_KEY_OpenSSL());
    if (bridge_index < 0 || m == NULL)
        return;
    EC_KEY_METHOD_set_sign(m, bridge_sign, NULL, bridge_sign_sig);
    bridge_method = m;
}

static keel_status_t bridge_make(tpm2_state_t *s, EVP_PKEY *tpmkey, EVP_PKEY **out)
{
    if (pthread_once(&bridge_once, bridge_init) != 0 || bridge_method == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "tpm2: cannot set up the signing bridge");
    EVP_PKEY *pub = NULL;
    keel_status_t st = public_of(tpmkey, &pub);
    if (st != KEEL_OK)
        return st;
    /* get1: a legacy EC_KEY copy of the public key, ours to change. */
    EC_KEY *ec = EVP_PKEY_get1_EC_KEY(pub);
    EVP_PKEY_free(pub);
    bridge_t *b = calloc(1, sizeof *b);
    EVP_PKEY *pk = EVP_PKEY_new();
    if (ec == NULL || b == NULL || pk == NULL) {
        st = tpm_error(KEEL_ERR_NOMEM, "tpm2: bridge key");
        goto fail;
    }
    b->s = s;
    b->key = tpmkey;
    if (EVP_PKEY_up_ref(tpmkey) != 1) {
        b->key = NULL;
        st = tpm_error(KEEL_ERR_KEYSTORE, "tpm2: bridge key reference");
        goto fail;
    }
    if (EC_KEY_set_ex_data(ec, bridge_index, b) != 1) {
        st = tpm_error(KEEL_ERR_NOMEM, "tpm2: bridge key data");
        goto fail;
    }
    b = NULL; /* the EC_KEY owns it now */
    /* A method other than OpenSSL's marks the key "foreign": OpenSSL 3 then
     * runs it on the legacy path instead of exporting it to a provider. */
    if (EC_KEY_set_method(ec, bridge_method) != 1 || EVP_PKEY_assign_EC_KEY(pk, ec) != 1) {
        st = tpm_error(KEEL_ERR_KEYSTORE, "tpm2: bridge key method");
        goto fail;
    }
    *out = pk;
    return KEEL_OK;
fail:
    if (b != NULL)
        bridge_free(NULL, b, NULL, 0, 0, NULL);
    EC_KEY_free(ec);
    EVP_PKEY_free(pk);
    return st;
}

static keel_status_t tpm2_private_key(void *state, const char *label, EVP_PKEY **priv)
{
    tpm2_state_t *s = state;
    EVP_PKEY *k = NULL;
    pthread_mutex_lock(&s->lock);
    keel_status_t st = key_get(s, label, "tpm2", &k);
    if (st == KEEL_OK)
        st = bridge_make(s, k, priv);
    pthread_mutex_unlock(&s->lock);
    return st;
}

/* ---- sealing: ECIES to a TPM-held ECDH key ---- */

/* HKDF-SHA256(z, salt = the ephemeral point, info = purpose) -> AEAD key. */
static keel_status_t seal_key(const uint8_t *z, size_t zlen, const uint8_t eph[P256_POINT_COMPRESSED],
                              const char *label, uint8_t key[KEEL_AEAD_KEY_LEN])
{
    char info[KEEL_KEYSTORE_LABEL_MAX + 32];
    keel_status_t st = keel_snprintf(info, sizeof info, "keel-keystore-tpm2-seal-v1|%s", label);
    if (st != KEEL_OK)
        return st;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kc = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)(uintptr_t)z, zlen),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)(uintptr_t)eph, P256_POINT_COMPRESSED),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, strlen(info)),
        OSSL_PARAM_construct_end(),
    };
    if (kc == NULL || EVP_KDF_derive(kc, key, KEEL_AEAD_KEY_LEN, p) != 1)
        st = tpm_error(KEEL_ERR_CRYPTO, "tpm2: HKDF");
    EVP_KDF_CTX_free(kc);
    EVP_KDF_free(kdf);
    return st;
}

#define P256_COORD 32

/* ECDH shared secret (the x coordinate, always 32 bytes) of `priv` and
 * `peer` in library context lc. A TPM may give x without its leading zero
 * bytes: padded back, so both sides feed HKDF the same bytes. */
static keel_status_t ecdh(OSSL_LIB_CTX *lc, const char *propq, EVP_PKEY *priv, EVP_PKEY *peer,
                          uint8_t z[P256_COORD])
{
    keel_status_t st = KEEL_OK;
    uint8_t buf[2 * P256_COORD];
    size_t n = sizeof buf;
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(lc, priv, propq);
    if (c == NULL || EVP_PKEY_derive_init(c) != 1 || EVP_PKEY_derive_set_peer(c, peer) != 1 ||
        EVP_PKEY_derive(c, buf, &n) != 1)
        st = tpm_error(KEEL_ERR_KEYSTORE, "tpm2: ECDH");
    else if (n == 0 || n > P256_COORD)
        st = keel_errorf(KEEL_ERR_KEYSTORE, "tpm2: ECDH gave %zu bytes, not %d", n, P256_COORD);
    else {
        memset(z, 0, P256_COORD - n);
        memcpy(z + (P256_COORD - n), buf, n);
    }
    keel_wipe(buf, sizeof buf);
    EVP_PKEY_CTX_free(c);
    return st;
}

#define P256_POINT_UNCOMPRESSED 65

/* The compressed encoding (0x02|y parity, x) of a P-256 public key. */
static keel_status_t point_compress(EVP_PKEY *k, uint8_t out[P256_POINT_COMPRESSED])
{
    uint8_t u[P256_POINT_UNCOMPRESSED];
    size_t n = 0;
    if (EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, u, sizeof u, &n) != 1 ||
        n != sizeof u || u[0] != 0x04)
        return tpm_error(KEEL_ERR_CRYPTO, "tpm2: encode point");
    out[0] = (uint8_t)(0x02 | (u[64] & 1));
    memcpy(out + 1, u + 1, 32);
    return KEEL_OK;
}

/* A P-256 public key in `lc` from an encoded point. */
static keel_status_t point_key(OSSL_LIB_CTX *lc, const char *propq, const uint8_t *pt, size_t n, EVP_PKEY **out)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(lc, "EC", propq);
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"P-256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)(uintptr_t)pt, n),
        OSSL_PARAM_construct_end(),
    };
    keel_status_t st = KEEL_OK;
    *out = NULL;
    if (c == NULL || EVP_PKEY_fromdata_init(c) != 1 || EVP_PKEY_fromdata(c, out, EVP_PKEY_PUBLIC_KEY, p) != 1)
        st = tpm_error(KEEL_ERR_FORMAT, "tpm2: bad public point");
    EVP_PKEY_CTX_free(c);
    return st;
}

static keel_status_t tpm2_seal(void *state, const char *label, const char *ad, const uint8_t *secret,
                               size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
    tpm2_state_t *s = state;
    EVP_PKEY *wrap = NULL, *wrap_pub = NULL, *eph = NULL;
    uint8_t z[P256_COORD], key[KEEL_AEAD_KEY_LEN];
    size_t n = 0;
    pthread_mutex_lock(&s->lock);
    keel_status_t st = key_get(s, label, "tpm2wrap", &wrap);
    if (st == KEEL_ERR_NOT_FOUND) {
        keel_error_clear();
        if ((st = key_create(s, label, "tpm2wrap", NULL)) == KEEL_OK)
            st = key_get(s, label, "tpm2wrap", &wrap);
    }
    if (st == KEEL_OK)
        st = public_of(wrap, &wrap_pub);
    pthread_mutex_unlock(&s->lock);
    /* The sender's half runs in software: an ephemeral key and ECDH with
     * the wrapping key's public point. */
    if (st == KEEL_OK)
        st = keel_ec_generate(&eph);
    if (st == KEEL_OK)
        st = ecdh(NULL, NULL, eph, wrap_pub, z);
    out[0] = SEAL_VERSION;
    if (st == KEEL_OK)
        st = point_compress(eph, out + 1);
    if (st == KEEL_OK)
        st = seal_key(z, P256_COORD, out + 1, label, key);
    if (st == KEEL_OK)
        st = keel_aead_seal(key, ad, strlen(ad), secret, len, out + SEAL_HEAD, cap - SEAL_HEAD, &n);
    if (st == KEEL_OK)
        *outlen = SEAL_HEAD + n;
    keel_wipe(z, sizeof z);
    keel_wipe(key, sizeof key);
    EVP_PKEY_free(eph);
    EVP_PKEY_free(wrap_pub);
    return st;
}

static keel_status_t tpm2_unseal(void *state, const char *label, const char *ad, const uint8_t *blob,
                                 size_t bloblen, uint8_t *out, size_t cap, size_t *outlen)
{
    tpm2_state_t *s = state;
    if (bloblen < SEAL_HEAD + KEEL_AEAD_OVERHEAD || blob[0] != SEAL_VERSION)
        return keel_errorf(KEEL_ERR_FORMAT, "tpm2: not a sealed blob of this keystore");
    EVP_PKEY *wrap = NULL, *peer = NULL;
    uint8_t z[P256_COORD], key[KEEL_AEAD_KEY_LEN];
    pthread_mutex_lock(&s->lock);
    keel_status_t st = key_get(s, label, "tpm2wrap", &wrap);
    /* The TPM wants the point whole: decompress in software first. */
    EVP_PKEY *soft = NULL;
    uint8_t u[P256_POINT_UNCOMPRESSED];
    size_t un = 0;
    if (st == KEEL_OK)
        st = point_key(NULL, NULL, blob + 1, P256_POINT_COMPRESSED, &soft);
    if (st == KEEL_OK && (EVP_PKEY_get_octet_string_param(soft, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, u, sizeof u,
                                                          &un) != 1 || un != sizeof u))
        st = tpm_error(KEEL_ERR_FORMAT, "tpm2: bad ephemeral point");
    EVP_PKEY_free(soft);
    if (st == KEEL_OK)
        st = point_key(s->lc, "provider=tpm2", u, sizeof u, &peer);
    /* The receiver's half runs in the TPM (TPM2_ECDH_ZGen). */
    if (st == KEEL_OK)
        st = ecdh(s->lc, "provider=tpm2", wrap, peer, z);
    pthread_mutex_unlock(&s->lock);
    if (st == KEEL_OK)
        st = seal_key(z, P256_COORD, blob + 1, label, key);
    if (st == KEEL_OK)
        st = keel_aead_open(key, ad, strlen(ad), blob + SEAL_HEAD, bloblen - SEAL_HEAD, out, cap, outlen);
    keel_wipe(z, sizeof z);
    keel_wipe(key, sizeof key);
    EVP_PKEY_free(peer);
    return st;
}

/* Deletes the blobs. The TPM holds nothing per key, so without the blob the
 * key is gone for good (unless a copy of the blob survives: then it still
 * loads on this TPM, and only on it). */
static keel_status_t tpm2_destroy(void *state, const char *label)
{
    tpm2_state_t *s = state;
    char path[KEEL_PATH_MAX];
    static const char *const exts[] = {"tpm2", "tpm2wrap"};
    pthread_mutex_lock(&s->lock);
    cache_drop(s, label);
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; i < 2 && st == KEEL_OK; i++) {
        st = blob_path(s, label, exts[i], path);
        if (st == KEEL_OK)
            st = keel_file_shred(path);
    }
    pthread_mutex_unlock(&s->lock);
    return st;
}

const keel_keystore_driver_t keel_keystore_tpm2_driver = {
    .name = "tpm2",
    .open = tpm2_open,
    .close = tpm2_close,
    .generate = tpm2_generate,
    .public_key = tpm2_public_key,
    .sign = tpm2_sign,
    .private_key = tpm2_private_key,
    .seal = tpm2_seal,
    .unseal = tpm2_unseal,
    .destroy = tpm2_destroy,
};

/*
 * The file keystore driver: private keys sealed with AES-256-GCM under a
 * key-encryption key (KEK). The KEK comes from a platform hook; on a dev box
 * it is a 0600 file next to the keys, which protects nothing against someone
 * who can read the whole state directory. It is the weakest driver and is
 * documented as such; use pkcs11 (or tpm2) where the hardware allows.
 *
 * Files in cfg->dir:
 *   <label>.key   "KEELKEY1" || AEAD(KEK, ad, DER private key)
 *   <label>.wrap  "KEELWRP1" || AEAD(KEK, ad, 32-byte wrapping key)
 */
#include "driver.h"

#include "keel/crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC_LEN 8
static const char key_magic[MAGIC_LEN] = "KEELKEY1";
static const char wrap_magic[MAGIC_LEN] = "KEELWRP1";
#define KEY_DER_MAX 512
#define FILE_MAX (MAGIC_LEN + KEY_DER_MAX + KEEL_AEAD_OVERHEAD)

typedef struct {
    char dir[KEEL_PATH_MAX];
    uint8_t kek[KEEL_KEYSTORE_KEK_LEN];
} file_state_t;

static keel_status_t kek_from_file(const char *path, int create, uint8_t kek[KEEL_KEYSTORE_KEK_LEN])
{
    int fd = -1;
    keel_status_t st = keel_file_open_private(path, &fd);
    if (st == KEEL_ERR_NOT_FOUND && create) {
        keel_error_clear();
        keel_random_bytes(kek, KEEL_KEYSTORE_KEK_LEN);
        return keel_file_create_atomic(path, kek, KEEL_KEYSTORE_KEK_LEN, 0600);
    }
    if (st != KEEL_OK) {
        char why[KEEL_ERROR_MAX];
        snprintf(why, sizeof why, "%s", keel_error_message());
        return keel_errorf(st == KEEL_ERR_NOT_FOUND ? st : KEEL_ERR_KEYSTORE, "key-encryption key %s", why);
    }
    keel_buf_t b;
    st = keel_fd_read(fd, path, KEEL_KEYSTORE_KEK_LEN, &b);
    close(fd);
    if (st == KEEL_ERR_TOO_LARGE || (st == KEEL_OK && b.len != KEEL_KEYSTORE_KEK_LEN))
        st = keel_errorf(KEEL_ERR_FORMAT, "key-encryption key %s must be %d bytes", path, KEEL_KEYSTORE_KEK_LEN);
    if (st == KEEL_OK)
        memcpy(kek, b.data, KEEL_KEYSTORE_KEK_LEN);
    keel_buf_free(&b); /* wipes */
    return st;
}

static keel_status_t file_open(const keel_keystore_config_t *cfg, void **state)
{
    if (cfg->dir == NULL)
        return keel_errorf(KEEL_ERR_ARG, "file keystore: no directory configured");
    if (cfg->kek_hook == NULL && cfg->kek_file == NULL)
        return keel_errorf(KEEL_ERR_ARG, "file keystore: no key-encryption key configured");
    file_state_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_status_t st = keel_strlcpy(s->dir, cfg->dir, sizeof s->dir);
    if (st == KEEL_OK && cfg->create)
        st = keel_dir_make(s->dir, 0700);
    if (st == KEEL_OK)
        st = cfg->kek_hook != NULL ? cfg->kek_hook(cfg->kek_arg, s->kek)
                                   : kek_from_file(cfg->kek_file, cfg->create, s->kek);
    if (st != KEEL_OK) {
        keel_wipe(s, sizeof *s);
        free(s);
        return st;
    }
    *state = s;
    return KEEL_OK;
}

static void file_close(void *state)
{
    keel_wipe(state, sizeof(file_state_t));
    free(state);
}

static keel_status_t file_path(const file_state_t *s, const char *label, const char *ext, char *out)
{
    return keel_snprintf(out, KEEL_PATH_MAX, "%s/%s.%s", s->dir, label, ext);
}

static keel_status_t make_ad(char *ad, size_t cap, const char *kind, const char *label, const char *extra)
{
    return keel_snprintf(ad, cap, "keel-keystore-file-v1|%s|%s|%s", kind, label, extra ? extra : "");
}

/* Seals `pt` under the KEK and writes magic || blob atomically, 0600. */
static keel_status_t write_sealed(const file_state_t *s, const char *path, const char *magic,
                                  const char *ad, const uint8_t *pt, size_t ptlen, int must_be_new)
{
    uint8_t file[FILE_MAX];
    size_t n = 0;
    if (ptlen > KEY_DER_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "key too large to seal");
    memcpy(file, magic, MAGIC_LEN);
    keel_status_t st = keel_aead_seal(s->kek, ad, strlen(ad), pt, ptlen, file + MAGIC_LEN,
                                      sizeof file - MAGIC_LEN, &n);
    if (st == KEEL_OK)
        st = must_be_new ? keel_file_create_atomic(path, file, MAGIC_LEN + n, 0600)
                         : keel_file_write_atomic(path, file, MAGIC_LEN + n, 0600);
    if (st == KEEL_ERR_EXISTS)
        st = keel_errorf(KEEL_ERR_EXISTS, "key file %s already exists", path);
    keel_wipe(file, sizeof file);
    return st;
}

static keel_status_t read_sealed(const file_state_t *s, const char *path, const char *magic,
                                 const char *ad, uint8_t *pt, size_t cap, size_t *ptlen)
{
    keel_buf_t b;
    keel_status_t st = keel_file_read(path, FILE_MAX, &b);
    if (st != KEEL_OK)
        return st;
    if (b.len < MAGIC_LEN || memcmp(b.data, magic, MAGIC_LEN) != 0)
        st = keel_errorf(KEEL_ERR_FORMAT, "%s is not a sealed Keel key", path);
    else if ((st = keel_aead_open(s->kek, ad, strlen(ad), b.data + MAGIC_LEN, b.len - MAGIC_LEN, pt,
                                  cap, ptlen)) != KEEL_OK)
        st = keel_errorf(KEEL_ERR_VERIFY, "%s does not unseal with this device's key-encryption key", path);
    keel_buf_free(&b);
    return st;
}

static keel_status_t load_private(const file_state_t *s, const char *label, EVP_PKEY **priv)
{
    char path[KEEL_PATH_MAX], ad[160];
    uint8_t der[KEY_DER_MAX];
    size_t n = 0;
    keel_status_t st = file_path(s, label, "key", path);
    if (st == KEEL_OK)
        st = make_ad(ad, sizeof ad, "key", label, NULL);
    if (st == KEEL_OK)
        st = read_sealed(s, path, key_magic, ad, der, sizeof der, &n);
    if (st == KEEL_OK) {
        const unsigned char *p = der;
        *priv = d2i_AutoPrivateKey(NULL, &p, (long)n);
        if (*priv == NULL)
            st = keel_crypto_error(KEEL_ERR_FORMAT, "decode sealed key");
    }
    keel_wipe(der, sizeof der);
    return st;
}

static keel_status_t public_of(EVP_PKEY *priv, EVP_PKEY **pub)
{
    keel_buf_t spki;
    keel_status_t st = keel_pkey_spki(priv, &spki);
    if (st != KEEL_OK)
        return st;
    const unsigned char *p = spki.data;
    *pub = d2i_PUBKEY(NULL, &p, (long)spki.len);
    keel_buf_free(&spki);
    return *pub != NULL ? KEEL_OK : keel_crypto_error(KEEL_ERR_CRYPTO, "decode public key");
}

static keel_status_t file_generate(void *state, const char *label, EVP_PKEY **pub)
{
    file_state_t *s = state;
    char path[KEEL_PATH_MAX], ad[160];
    keel_status_t st = file_path(s, label, "key", path);
    if (st != KEEL_OK)
        return st;
    /* A cheap early answer; the create below is what really refuses. */
    if (keel_path_exists(path))
        return keel_errorf(KEEL_ERR_EXISTS, "key '%s' already exists", label);
    EVP_PKEY *key = NULL;
    if ((st = keel_ec_generate(&key)) != KEEL_OK)
        return st;
    unsigned char *der = NULL;
    int n = i2d_PrivateKey(key, &der);
    if (n <= 0) {
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "encode private key");
    } else {
        st = make_ad(ad, sizeof ad, "key", label, NULL);
        if (st == KEEL_OK)
            st = write_sealed(s, path, key_magic, ad, der, (size_t)n, 1);
        OPENSSL_clear_free(der, (size_t)n);
    }
    if (st == KEEL_OK)
        st = public_of(key, pub);
    EVP_PKEY_free(key);
    return st;
}

static keel_status_t file_public_key(void *state, const char *label, EVP_PKEY **pub)
{
    EVP_PKEY *priv = NULL;
    keel_status_t st = load_private(state, label, &priv);
    if (st == KEEL_OK)
        st = public_of(priv, pub);
    EVP_PKEY_free(priv);
    return st;
}

static keel_status_t file_sign(void *state, const char *label, const void *msg, size_t len,
                               uint8_t *sig, size_t cap, size_t *siglen)
{
    EVP_PKEY *priv = NULL;
    keel_status_t st = load_private(state, label, &priv);
    if (st == KEEL_OK)
        st = keel_ecdsa_sign(priv, msg, len, sig, cap, siglen);
    EVP_PKEY_free(priv);
    return st;
}

static keel_status_t file_private_key(void *state, const char *label, EVP_PKEY **priv)
{
    return load_private(state, label, priv);
}

/* Loads the per-label wrapping key, creating it when `create`. */
static keel_status_t wrap_key(file_state_t *s, const char *label, int create,
                              uint8_t key[KEEL_AEAD_KEY_LEN])
{
    char path[KEEL_PATH_MAX], ad[160];
    size_t n = 0;
    keel_status_t st = file_path(s, label, "wrap", path);
    if (st == KEEL_OK)
        st = make_ad(ad, sizeof ad, "wrap", label, NULL);
    if (st != KEEL_OK)
        return st;
    if (!keel_path_exists(path)) {
        if (!create)
            return keel_errorf(KEEL_ERR_NOT_FOUND, "wrapping key '%s' does not exist", label);
        keel_random_bytes(key, KEEL_AEAD_KEY_LEN);
        return write_sealed(s, path, wrap_magic, ad, key, KEEL_AEAD_KEY_LEN, 1);
    }
    st = read_sealed(s, path, wrap_magic, ad, key, KEEL_AEAD_KEY_LEN, &n);
    if (st == KEEL_OK && n != KEEL_AEAD_KEY_LEN)
        st = keel_errorf(KEEL_ERR_FORMAT, "wrapping key '%s' has the wrong size", label);
    return st;
}

static keel_status_t file_seal(void *state, const char *label, const char *ad, const uint8_t *secret,
                               size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
    uint8_t key[KEEL_AEAD_KEY_LEN];
    keel_status_t st = wrap_key(state, label, 1, key);
    if (st == KEEL_OK)
        st = keel_aead_seal(key, ad, strlen(ad), secret, len, out, cap, outlen);
    keel_wipe(key, sizeof key);
    return st;
}

static keel_status_t file_unseal(void *state, const char *label, const char *ad, const uint8_t *blob,
                                 size_t bloblen, uint8_t *out, size_t cap, size_t *outlen)
{
    uint8_t key[KEEL_AEAD_KEY_LEN];
    keel_status_t st = wrap_key(state, label, 0, key);
    if (st == KEEL_OK)
        st = keel_aead_open(key, ad, strlen(ad), blob, bloblen, out, cap, outlen);
    keel_wipe(key, sizeof key);
    return st;
}

static keel_status_t file_destroy(void *state, const char *label)
{
    char path[KEEL_PATH_MAX];
    static const char *const exts[] = {"key", "wrap"};
    for (size_t i = 0; i < 2; i++) {
        keel_status_t st = file_path(state, label, exts[i], path);
        if (st == KEEL_OK)
            st = keel_file_shred(path);
        if (st != KEEL_OK)
            return st;
    }
    return KEEL_OK;
}

const keel_keystore_driver_t keel_keystore_file_driver = {
    .name = "file",
    .open = file_open,
    .close = file_close,
    .generate = file_generate,
    .public_key = file_public_key,
    .sign = file_sign,
    .private_key = file_private_key,
    .seal = file_seal,
    .unseal = file_unseal,
    .destroy = file_destroy,
};

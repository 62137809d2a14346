/* Thin wrappers over OpenSSL 3 and libsodium, at one place. */
#include "keel/crypto.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <sodium.h>
#include <string.h>

/* In parentheses: not the analyzer's macro of keel/crypto.h. */
keel_status_t(keel_crypto_error)(keel_status_t st, const char *what)
{
    unsigned long e = ERR_get_error();
    char reason[256] = "unknown reason";
    if (e != 0)
        ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    return keel_errorf(st, "%s: %s", what, reason);
}

keel_status_t keel_crypto_init(void)
{
    if (sodium_init() < 0)
        return keel_errorf(KEEL_ERR_CRYPTO, "libsodium failed to initialise");
    return KEEL_OK;
}

void keel_random_bytes(void *buf, size_t n)
{
    randombytes_buf(buf, n);
}

uint32_t keel_random_uniform(uint32_t upper)
{
    return randombytes_uniform(upper);
}

void keel_sha256(const void *data, size_t len, uint8_t out[KEEL_SHA256_LEN])
{
    crypto_hash_sha256(out, data, len);
}

keel_status_t keel_sha256_base64(const void *data, size_t len, char out[KEEL_SHA256_B64_LEN])
{
    uint8_t md[KEEL_SHA256_LEN];
    keel_sha256(data, len, md);
    if (EVP_EncodeBlock((unsigned char *)out, md, (int)sizeof md) != KEEL_SHA256_B64_LEN - 1)
        return keel_errorf(KEEL_ERR_CRYPTO, "base64 of a SHA-256 failed");
    return KEEL_OK;
}

int keel_ct_equal(const void *a, const void *b, size_t n)
{
    return sodium_memcmp(a, b, n) == 0;
}

keel_status_t keel_base32_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    size_t need = (n * 8 + 4) / 5 + 1;
    if (cap < need)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "base32 output needs %zu bytes", need);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 5) {
            out[o++] = alphabet[(acc >> (bits - 5)) & 31u];
            bits -= 5;
        }
    }
    if (bits > 0)
        out[o++] = alphabet[(acc << (5 - bits)) & 31u];
    out[o] = '\0';
    return KEEL_OK;
}

keel_status_t keel_hex_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
    if (cap < n * 2 + 1)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "hex output needs %zu bytes", n * 2 + 1);
    sodium_bin2hex(out, cap, in, n);
    return KEEL_OK;
}

static keel_status_t aead_run(int enc, const uint8_t *key, const uint8_t *nonce, const void *ad,
                              size_t adlen, const uint8_t *in, size_t inlen, uint8_t *out,
                              uint8_t *tag)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (c == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_status_t st = KEEL_OK;
    int len = 0;
    if (inlen > INT32_MAX || adlen > INT32_MAX) {
        st = keel_errorf(KEEL_ERR_TOO_LARGE, "AEAD input too large");
        goto out;
    }
    if (EVP_CipherInit_ex2(c, EVP_aes_256_gcm(), key, nonce, enc, NULL) != 1 ||
        (adlen > 0 && EVP_CipherUpdate(c, NULL, &len, ad, (int)adlen) != 1) ||
        (inlen > 0 && EVP_CipherUpdate(c, out, &len, in, (int)inlen) != 1)) {
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "AES-GCM");
        goto out;
    }
    if (!enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, KEEL_AEAD_TAG_LEN, tag) != 1) {
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "AES-GCM tag");
        goto out;
    }
    if (EVP_CipherFinal_ex(c, out + len, &len) != 1) {
        ERR_clear_error();
        st = enc ? keel_errorf(KEEL_ERR_CRYPTO, "AES-GCM seal failed")
                 : keel_errorf(KEEL_ERR_VERIFY, "authentication tag mismatch");
        goto out;
    }
    if (enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, KEEL_AEAD_TAG_LEN, tag) != 1)
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "AES-GCM tag");
out:
    EVP_CIPHER_CTX_free(c);
    return st;
}

keel_status_t keel_aead_seal(const uint8_t key[KEEL_AEAD_KEY_LEN], const void *ad, size_t adlen,
                             const void *pt, size_t ptlen, uint8_t *out, size_t cap, size_t *outlen)
{
    if (ptlen > SIZE_MAX - KEEL_AEAD_OVERHEAD || cap < ptlen + KEEL_AEAD_OVERHEAD)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "AEAD output buffer too small");
    keel_random_bytes(out, KEEL_AEAD_NONCE_LEN);
    keel_status_t st = aead_run(1, key, out, ad, adlen, pt, ptlen, out + KEEL_AEAD_NONCE_LEN,
                                out + KEEL_AEAD_NONCE_LEN + ptlen);
    if (st != KEEL_OK) {
        keel_wipe(out, cap);
        return st;
    }
    *outlen = ptlen + KEEL_AEAD_OVERHEAD;
    return KEEL_OK;
}

keel_status_t keel_aead_open(const uint8_t key[KEEL_AEAD_KEY_LEN], const void *ad, size_t adlen,
                             const uint8_t *in, size_t inlen, uint8_t *out, size_t cap, size_t *outlen)
{
    if (inlen < KEEL_AEAD_OVERHEAD)
        return keel_errorf(KEEL_ERR_FORMAT, "sealed value shorter than its overhead");
    size_t ptlen = inlen - KEEL_AEAD_OVERHEAD;
    if (cap < ptlen)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "AEAD output buffer too small");
    uint8_t tag[KEEL_AEAD_TAG_LEN];
    memcpy(tag, in + KEEL_AEAD_NONCE_LEN + ptlen, sizeof tag);
    keel_status_t st = aead_run(0, key, in, ad, adlen, in + KEEL_AEAD_NONCE_LEN, ptlen, out, tag);
    if (st != KEEL_OK) {
        keel_wipe(out, ptlen);
        return st;
    }
    *outlen = ptlen;
    return KEEL_OK;
}

keel_argon2_params_t keel_argon2_defaults(void)
{
    keel_argon2_params_t p = {KEEL_ARGON2_DEFAULT_T, KEEL_ARGON2_DEFAULT_M_KIB};
    return p;
}

keel_status_t keel_password_hash(const char *pw, size_t pwlen, const keel_argon2_params_t *params,
                                 char out[KEEL_PASSWORD_HASH_MAX])
{
    _Static_assert(KEEL_PASSWORD_HASH_MAX >= crypto_pwhash_STRBYTES, "hash buffer too small");
    keel_argon2_params_t p = params != NULL ? *params : keel_argon2_defaults();
    if (p.t_cost < 1 || p.m_cost_kib < 8)
        return keel_errorf(KEEL_ERR_ARG, "Argon2id cost too low (t=%u, m=%u KiB)", p.t_cost,
                           p.m_cost_kib);
    if (crypto_pwhash_str_alg(out, pw, pwlen, p.t_cost, (size_t)p.m_cost_kib * 1024u,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "Argon2id hashing failed (out of memory?)");
    return KEEL_OK;
}

keel_status_t keel_password_verify(const char *hash, const char *pw, size_t pwlen)
{
    if (strncmp(hash, crypto_pwhash_argon2id_STRPREFIX, strlen(crypto_pwhash_argon2id_STRPREFIX)) != 0)
        return keel_errorf(KEEL_ERR_FORMAT, "not an Argon2id hash");
    if (crypto_pwhash_str_verify(hash, pw, pwlen) != 0)
        return keel_errorf(KEEL_ERR_VERIFY, "password does not match");
    return KEEL_OK;
}

keel_status_t keel_ec_generate(EVP_PKEY **out)
{
    *out = EVP_EC_gen("P-256");
    if (*out == NULL)
        return keel_crypto_error(KEEL_ERR_CRYPTO, "P-256 key generation");
    return KEEL_OK;
}

keel_status_t keel_pkey_spki(const EVP_PKEY *key, keel_buf_t *out)
{
    keel_buf_init(out, 1024);
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(key, &der);
    if (n <= 0)
        return keel_crypto_error(KEEL_ERR_CRYPTO, "encode public key");
    keel_status_t st = keel_buf_append(out, der, (size_t)n);
    OPENSSL_free(der);
    return st;
}

keel_status_t keel_ecdsa_sign(EVP_PKEY *priv, const void *msg, size_t len, uint8_t *sig, size_t cap,
                              size_t *siglen)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (c == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_status_t st = KEEL_OK;
    size_t n = cap;
    if (EVP_DigestSignInit(c, NULL, EVP_sha256(), NULL, priv) != 1 ||
        EVP_DigestSign(c, sig, &n, msg, len) != 1)
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "ECDSA sign");
    else
        *siglen = n;
    EVP_MD_CTX_free(c);
    return st;
}

keel_status_t keel_ecdsa_verify(EVP_PKEY *pub, const void *msg, size_t len, const uint8_t *sig,
                                size_t siglen)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (c == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_status_t st = KEEL_OK;
    if (EVP_DigestVerifyInit(c, NULL, EVP_sha256(), NULL, pub) != 1) {
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "ECDSA verify init");
    } else if (EVP_DigestVerify(c, sig, siglen, msg, len) != 1) {
        ERR_clear_error();
        st = keel_errorf(KEEL_ERR_VERIFY, "signature does not verify");
    }
    EVP_MD_CTX_free(c);
    return st;
}

int keel_pem_no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

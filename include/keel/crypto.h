/*
 * keel/crypto.h - the one place Keel touches OpenSSL 3 and libsodium for
 * primitives: randomness, hashing, AEAD, Argon2id, ECDSA P-256.
 * Callers own every output buffer and pass its size.
 */
#ifndef KEEL_CRYPTO_H
#define KEEL_CRYPTO_H

#include "keel/base.h"

#include <openssl/types.h>

#define KEEL_SHA256_LEN 32
#define KEEL_AEAD_KEY_LEN 32
#define KEEL_AEAD_NONCE_LEN 12
#define KEEL_AEAD_TAG_LEN 16
/* A sealed blob is nonce || ciphertext || tag. */
#define KEEL_AEAD_OVERHEAD (KEEL_AEAD_NONCE_LEN + KEEL_AEAD_TAG_LEN)
/* Longest ECDSA P-256 signature in DER. */
#define KEEL_ECDSA_SIG_MAX 72
/* libsodium's encoded Argon2id string fits in 128 bytes. */
#define KEEL_PASSWORD_HASH_MAX 128

/* Must be called once before any other function here (idempotent). */
keel_status_t keel_crypto_init(void) KEEL_MUST_CHECK;

void keel_random_bytes(void *buf, size_t n);
/* Uniform in [0, upper), without modulo bias. */
uint32_t keel_random_uniform(uint32_t upper);

void keel_sha256(const void *data, size_t len, uint8_t out[KEEL_SHA256_LEN]);
/* Base64 of the SHA-256 of data (44 characters and a NUL): the form a
 * Content-Security-Policy 'sha256-...' source takes. */
#define KEEL_SHA256_B64_LEN 45
keel_status_t keel_sha256_base64(const void *data, size_t len, char out[KEEL_SHA256_B64_LEN]) KEEL_MUST_CHECK;
/* A pem_password_cb that never gives a password: an encrypted PEM block is
 * refused at once instead of OpenSSL asking on the terminal (a daemon must
 * never block on a prompt, and a PEM in outside data must not make it). */
int keel_pem_no_password(char *buf, int size, int rwflag, void *u);
/* Constant-time equality of two equally long byte strings: 1 if equal. */
int keel_ct_equal(const void *a, const void *b, size_t n);

/* Lower-case RFC 4648 base32 without padding; out needs 8*ceil(n/5)/5+1 bytes. */
keel_status_t keel_base32_encode(const uint8_t *in, size_t n, char *out, size_t cap) KEEL_MUST_CHECK;
keel_status_t keel_hex_encode(const uint8_t *in, size_t n, char *out, size_t cap) KEEL_MUST_CHECK;

/*
 * AES-256-GCM with a random 96-bit nonce. `ad` (associated data) is
 * authenticated but not encrypted: it binds the ciphertext to its place.
 * seal: out needs ptlen + KEEL_AEAD_OVERHEAD bytes.
 * open: KEEL_ERR_VERIFY when the tag, the key or the associated data differ.
 */
keel_status_t keel_aead_seal(const uint8_t key[KEEL_AEAD_KEY_LEN], const void *ad, size_t adlen,
                             const void *pt, size_t ptlen, uint8_t *out, size_t cap,
                             size_t *outlen) KEEL_MUST_CHECK;
keel_status_t keel_aead_open(const uint8_t key[KEEL_AEAD_KEY_LEN], const void *ad, size_t adlen,
                             const uint8_t *in, size_t inlen, uint8_t *out, size_t cap,
                             size_t *outlen) KEEL_MUST_CHECK;

/* Argon2id cost; the defaults follow OWASP's second profile (t=2, 19 MiB, p=1). */
typedef struct {
    uint32_t t_cost;
    uint32_t m_cost_kib;
} keel_argon2_params_t;
#define KEEL_ARGON2_DEFAULT_T 2u
#define KEEL_ARGON2_DEFAULT_M_KIB 19456u
keel_argon2_params_t keel_argon2_defaults(void);

/* Writes the encoded "$argon2id$v=19$m=...,t=...,p=1$salt$hash" string. */
keel_status_t keel_password_hash(const char *pw, size_t pwlen, const keel_argon2_params_t *params,
                                 char out[KEEL_PASSWORD_HASH_MAX]) KEEL_MUST_CHECK;
/* KEEL_OK when pw matches, KEEL_ERR_VERIFY when not, KEEL_ERR_FORMAT for a bad hash. */
keel_status_t keel_password_verify(const char *hash, const char *pw, size_t pwlen) KEEL_MUST_CHECK;

/* ECDSA P-256 / SHA-256 with software keys. */
keel_status_t keel_ec_generate(EVP_PKEY **out) KEEL_MUST_CHECK;
/* DER SubjectPublicKeyInfo of a key (public part only). */
keel_status_t keel_pkey_spki(const EVP_PKEY *key, keel_buf_t *out) KEEL_MUST_CHECK;
keel_status_t keel_ecdsa_sign(EVP_PKEY *priv, const void *msg, size_t len, uint8_t *sig, size_t cap,
                              size_t *siglen) KEEL_MUST_CHECK;
keel_status_t keel_ecdsa_verify(EVP_PKEY *pub, const void *msg, size_t len, const uint8_t *sig,
                                size_t siglen) KEEL_MUST_CHECK;
/* Records the OpenSSL error queue as the Keel error message and clears it. */
keel_status_t keel_crypto_error(keel_status_t st, const char *what);
#ifdef __clang_analyzer__
/* For the static analyzer (as keel_errorf in keel/base.h): it returns `st`. */
#define keel_crypto_error(st, what)                                                                                    \
    ({                                                                                                                 \
        keel_status_t keel_crypto_st_ = (st);                                                                          \
        (void)keel_crypto_error(keel_crypto_st_, (what));                                                              \
        keel_crypto_st_;                                                                                               \
    })
#endif

#endif

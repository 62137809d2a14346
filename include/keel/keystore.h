/*
 * keel/keystore.h - where a device's private keys live.
 *
 * One interface, several drivers (after PSA Crypto's core/driver split): the
 * core validates arguments and dispatches; the drivers hold the keys.
 *   file    private keys sealed with AES-256-GCM under a key-encryption key
 *           supplied by a platform hook (by default a 0600 file: the weakest
 *           option, for development boards without secure hardware).
 *   pkcs11  keys generated ON a PKCS#11 token (secure element, SoftHSM2 in
 *           tests), CKA_SENSITIVE and not CKA_EXTRACTABLE.
 *   tpm2    keys created IN a TPM 2.0 (fixedTPM, fixedParent, with an
 *           authorization value under the TPM's dictionary-attack lockout),
 *           kept as TSS2 blobs that only that TPM can load.
 *
 * Keys are named by a label ([A-Za-z0-9._-], at most KEEL_KEYSTORE_LABEL_MAX).
 * Every key is ECDSA P-256. Private key bytes never cross this interface.
 */
#ifndef KEEL_KEYSTORE_H
#define KEEL_KEYSTORE_H

#include "keel/base.h"

#include <openssl/types.h>

#define KEEL_KEYSTORE_LABEL_MAX 64
#define KEEL_KEYSTORE_KEK_LEN 32
/* Largest secret keel_keystore_seal accepts (data keys, tokens). */
#define KEEL_KEYSTORE_SEAL_MAX 1024

typedef struct keel_keystore keel_keystore_t;

/*
 * Platform hook for the file driver: fills `kek` with the device's
 * key-encryption key (from a fused OTP key, a TEE, ...). When NULL, the
 * driver reads the 32 raw bytes of `kek_file` (created 0600 if `create`).
 */
typedef keel_status_t (*keel_keystore_kek_fn)(void *arg, uint8_t kek[KEEL_KEYSTORE_KEK_LEN]);

typedef struct {
    const char *driver;   /* "file", "pkcs11" or "tpm2" */
    /* file and tpm2 drivers */
    const char *dir;      /* where sealed keys (file) or TSS2 key blobs (tpm2) are kept */
    const char *kek_file; /* key-encryption key (used when kek_hook is NULL) */
    keel_keystore_kek_fn kek_hook;
    void *kek_arg;
    int create;           /* create the KEK file if it does not exist */
    /* pkcs11 driver */
    const char *module;   /* path of the PKCS#11 module */
    const char *token;    /* token label */
    /* pkcs11: the user PIN; tpm2: the keys' authorization value. From a file
     * or an environment variable, never from a URI or argv. */
    const char *pin_file;
    const char *pin_env;
    /* tpm2 driver: the TSS2 TCTI, e.g. "device:/dev/tpmrm0" (the kernel's
     * resource manager) or "tabrmd:bus_type=system"; NULL: $TPM2OPENSSL_TCTI,
     * else the TSS default search. */
    const char *tcti;
} keel_keystore_config_t;

keel_status_t keel_keystore_open(const keel_keystore_config_t *cfg, keel_keystore_t **out) KEEL_MUST_CHECK;
void keel_keystore_close(keel_keystore_t *ks);
const char *keel_keystore_driver(const keel_keystore_t *ks);

/* Generates a new P-256 key under `label` (KEEL_ERR_EXISTS if taken) and
 * returns its public half (caller frees with EVP_PKEY_free). */
keel_status_t keel_keystore_generate(keel_keystore_t *ks, const char *label, EVP_PKEY **pub) KEEL_MUST_CHECK;
keel_status_t keel_keystore_public_key(keel_keystore_t *ks, const char *label, EVP_PKEY **pub) KEEL_MUST_CHECK;
/* ECDSA-SHA256 over msg; DER signature into sig (KEEL_ECDSA_SIG_MAX bytes suffice). */
keel_status_t keel_keystore_sign(keel_keystore_t *ks, const char *label, const void *msg, size_t len,
                                 uint8_t *sig, size_t cap, size_t *siglen) KEEL_MUST_CHECK;
/* An EVP_PKEY usable by OpenSSL for signing (X509, TLS). For hardware
 * drivers it is a handle: the key stays on the token. Free with EVP_PKEY_free,
 * and only before keel_keystore_close. */
keel_status_t keel_keystore_private_key(keel_keystore_t *ks, const char *label, EVP_PKEY **priv) KEEL_MUST_CHECK;
/*
 * Wraps a small secret (e.g. the vault's data key) so only this keystore can
 * unwrap it. `ad` binds the blob to its purpose. out needs
 * len + KEEL_KEYSTORE_SEAL_OVERHEAD bytes. The wrapping key named `label` is
 * created on first use.
 */
#define KEEL_KEYSTORE_SEAL_OVERHEAD 64
keel_status_t keel_keystore_seal(keel_keystore_t *ks, const char *label, const char *ad,
                                 const uint8_t *secret, size_t len, uint8_t *out, size_t cap,
                                 size_t *outlen) KEEL_MUST_CHECK;
keel_status_t keel_keystore_unseal(keel_keystore_t *ks, const char *label, const char *ad,
                                   const uint8_t *blob, size_t bloblen, uint8_t *out, size_t cap,
                                   size_t *outlen) KEEL_MUST_CHECK;
/* Destroys a key or wrapping key (crypto-erase). KEEL_OK if it did not exist. */
keel_status_t keel_keystore_destroy(keel_keystore_t *ks, const char *label) KEEL_MUST_CHECK;

/*
 * A secret such as a driver's PIN (a PKCS#11 user PIN, a TPM key's
 * authorization value): the
 * first line of `file` (opened with keel_file_open_private), else the value
 * of environment variable `env`. Into out (cap includes the NUL); errors
 * begin with `what` ("pkcs11: the PIN") and never show the value.
 */
keel_status_t keel_keystore_secret_read(const char *what, const char *file, const char *env, char *out,
                                        size_t cap, size_t *len) KEEL_MUST_CHECK;

/* 1 if `label` is a well-formed key label. */
int keel_keystore_label_ok(const char *label);

#endif

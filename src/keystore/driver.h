/*
 * The keystore driver contract. The core (keystore.c) has validated every
 * argument before a driver sees it: labels are well formed, buffers non-NULL.
 */
#ifndef KEEL_KEYSTORE_DRIVER_H
#define KEEL_KEYSTORE_DRIVER_H

#include "keel/keystore.h"

typedef struct keel_keystore_driver {
    const char *name;
    keel_status_t (*open)(const keel_keystore_config_t *cfg, void **state);
    void (*close)(void *state);
    keel_status_t (*generate)(void *state, const char *label, EVP_PKEY **pub);
    keel_status_t (*public_key)(void *state, const char *label, EVP_PKEY **pub);
    keel_status_t (*sign)(void *state, const char *label, const void *msg, size_t len, uint8_t *sig,
                          size_t cap, size_t *siglen);
    keel_status_t (*private_key)(void *state, const char *label, EVP_PKEY **priv);
    keel_status_t (*seal)(void *state, const char *label, const char *ad, const uint8_t *secret,
                          size_t len, uint8_t *out, size_t cap, size_t *outlen);
    keel_status_t (*unseal)(void *state, const char *label, const char *ad, const uint8_t *blob,
                            size_t bloblen, uint8_t *out, size_t cap, size_t *outlen);
    keel_status_t (*destroy)(void *state, const char *label);
} keel_keystore_driver_t;

extern const keel_keystore_driver_t keel_keystore_file_driver;
extern const keel_keystore_driver_t keel_keystore_pkcs11_driver;
extern const keel_keystore_driver_t keel_keystore_tpm2_driver;

#endif

/*
 * keel/identity.h - who a device is: its id, derived from its public key, and
 * the files of its identity in the state directory.
 *
 * The device id is the lower-case base32 of the first 16 bytes of
 * SHA-256(SubjectPublicKeyInfo DER): 26 characters, 128 bits, not sequential
 * and not guessable, and checkable by anyone who holds the certificate.
 */
#ifndef KEEL_IDENTITY_H
#define KEEL_IDENTITY_H

#include "keel/base.h"

#include <openssl/types.h>

#define KEEL_DEVICE_ID_LEN 26
#define KEEL_SERIAL_LEN 12
#define KEEL_MODEL_MAX 64

keel_status_t keel_identity_device_id(const EVP_PKEY *pub, char out[KEEL_DEVICE_ID_LEN + 1]) KEEL_MUST_CHECK;
/* 1 if s is a well-formed device id. */
int keel_identity_id_ok(const char *s);
/* 1 if s is a usable model designation: [A-Za-z0-9._-], 1..KEEL_MODEL_MAX. */
int keel_identity_model_ok(const char *s);
/* A fresh random serial number: KEEL_SERIAL_LEN characters of Crockford base32. */
void keel_identity_new_serial(char out[KEEL_SERIAL_LEN + 1]);

/* SHA-256 fingerprint of a certificate's DER, as colon-separated upper-case hex. */
#define KEEL_FINGERPRINT_LEN (32 * 3)
keel_status_t keel_identity_fingerprint(X509 *cert, char out[KEEL_FINGERPRINT_LEN]) KEEL_MUST_CHECK;

/*
 * Label passwords (5.1-1, 5.1-2): KEEL_LABEL_PW_CHARS characters drawn
 * uniformly by the CSPRNG from a 31-symbol alphabet without look-alikes
 * (no 0/o, 1/l/i), printed in groups of 6 ("k7m2qx-9fhw3c-tp8r4n"): 89 bits.
 * The device stores only the Argon2id hash of the normalised form (lower
 * case, group separators removed), so users may type it either way.
 */
#define KEEL_LABEL_PW_ALPHABET "23456789abcdefghjkmnpqrstuvwxyz"
#define KEEL_LABEL_PW_CHARS 18
#define KEEL_LABEL_PW_GROUP 6
#define KEEL_LABEL_PW_LEN (KEEL_LABEL_PW_CHARS + KEEL_LABEL_PW_CHARS / KEEL_LABEL_PW_GROUP - 1)
void keel_identity_label_password(char out[KEEL_LABEL_PW_LEN + 1]);
/* Lower-cases and drops '-' and ' '; KEEL_ERR_TOO_LARGE past cap. */
keel_status_t keel_identity_password_normalize(const char *in, char *out, size_t cap) KEEL_MUST_CHECK;

/* Layout of a device state directory (relative paths). */
#define KEEL_STATE_DEVICE_JSON "device.json"
#define KEEL_STATE_CERT "identity/device.crt"
#define KEEL_STATE_CHAIN "identity/chain.pem"
#define KEEL_STATE_LABEL_HASH "identity/label.hash"
#define KEEL_STATE_KEYSTORE_DIR "keystore"
#define KEEL_STATE_KEK "keystore/kek"
/* tpm2 keystore: the keys' authorization value, when the factory made one */
#define KEEL_STATE_TPM2_PIN "keystore/tpm2.pin"
#define KEEL_STATE_RELEASE_ROOT "trust/release-root.pem"
#define KEEL_STATE_SERVICE_ROOT "trust/service-root.pem"
#define KEEL_STATE_VAULT_DIR "vault"
#define KEEL_STATE_CONFIG "keeld.conf"
#define KEEL_DEVICE_KEY_LABEL "device"

#endif

/*
 * Fuzz target: sealed data a device reads back from its own storage, which an
 * attacker with the flash in hand can rewrite: a sealed key file of the file
 * keystore, a keystore-sealed blob, and a vault field. Every input must be
 * refused cleanly (the chance of forging AES-GCM is nil), never crash.
 */
#include "fuzz.h"

#include "keel/crypto.h"
#include "keel/keystore.h"
#include "keel/vault.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[KEEL_PATH_MAX], kdir[KEEL_PATH_MAX + 16], kek[KEEL_PATH_MAX + 32], keyfile[KEEL_PATH_MAX + 32];
static char vdir[KEEL_PATH_MAX + 16];
static keel_keystore_t *ks;
static keel_vault_t *vault;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/keel-fuzz-sealed-XXXXXX", base);
    if (mkdtemp(dir) == NULL || keel_crypto_init() != KEEL_OK)
        abort();
    snprintf(kdir, sizeof kdir, "%s/keystore", dir);
    snprintf(kek, sizeof kek, "%s/kek", kdir);
    snprintf(keyfile, sizeof keyfile, "%s/fuzzed.key", kdir);
    snprintf(vdir, sizeof vdir, "%s/vault", dir);
    keel_keystore_config_t c = {.driver = "file", .dir = kdir, .kek_file = kek, .create = 1};
    if (keel_keystore_open(&c, &ks) != KEEL_OK || keel_vault_open(vdir, ks, &vault) != KEEL_OK)
        abort();
    /* Make the wrapping key exist so unseal reaches the AEAD. */
    uint8_t secret[16] = {0}, blob[16 + KEEL_KEYSTORE_SEAL_OVERHEAD];
    size_t n = 0;
    if (keel_keystore_seal(ks, "wrap", "fuzz", secret, sizeof secret, blob, sizeof blob, &n) != KEEL_OK)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t out[KEEL_VAULT_VALUE_MAX];
    size_t n = 0;
    /* 1. A rewritten sealed key file. */
    if (keel_file_write_atomic(keyfile, data, size, 0600) != KEEL_OK)
        abort();
    EVP_PKEY *pub = NULL;
    if (keel_keystore_public_key(ks, "fuzzed", &pub) == KEEL_OK)
        abort(); /* a forged key file was accepted */
    /* 2. A keystore-sealed blob (the vault's wrapped data key). */
    if (keel_keystore_unseal(ks, "wrap", "fuzz", data, size, out, sizeof out, &n) == KEEL_OK)
        abort();
    /* 3. A vault field. */
    if (keel_vault_open_field(vault, "secrets", "value", "fuzz", data, size, out, sizeof out, &n) == KEEL_OK)
        abort();
    return 0;
}

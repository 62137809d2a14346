/*
 * keel/vault.h - the device's secure state: one SQLite database (WAL,
 * synchronous=FULL) with schema migrations, and field-level AEAD for secrets
 * and personal data.
 *
 * Every protected value is AES-256-GCM under the vault's data key, with
 * associated data "keel-vault-v1|<table>|<column>|<row>" so a ciphertext moved
 * to another row, column or table does not open. The 32-byte data key is
 * wrapped by the keystore (wrapping key label KEEL_VAULT_WRAP_LABEL) and kept
 * in a file of its own beside the database; keel_vault_erase destroys both the
 * wrapped key and the keystore's wrapping key, so nothing sealed before the
 * erase can be decrypted again (crypto-erase, 5.11-1).
 */
#ifndef KEEL_VAULT_H
#define KEEL_VAULT_H

#include "keel/base.h"
#include "keel/keystore.h"

typedef struct keel_vault keel_vault_t;
typedef struct sqlite3 sqlite3;

#define KEEL_VAULT_WRAP_LABEL "vault-data-key"
/* Largest plaintext one field may hold. */
#define KEEL_VAULT_VALUE_MAX (64u * 1024u)
/* Table, column and row names in the associated data. */
#define KEEL_VAULT_NAME_MAX 64

/*
 * Opens (creating if needed) the vault in directory `dir`: `dir/vault.db`
 * and `dir/vault.key`. A new vault gets a fresh random data key, wrapped by
 * `ks`; an existing one has its key unwrapped (KEEL_ERR_VERIFY when this
 * keystore cannot unwrap it). Migrations run inside a transaction. `ks` must
 * outlive the vault.
 */
keel_status_t keel_vault_open(const char *dir, keel_keystore_t *ks, keel_vault_t **out) KEEL_MUST_CHECK;
void keel_vault_close(keel_vault_t *v);
/* Schema version after migrations (PRAGMA user_version). */
int keel_vault_schema_version(keel_vault_t *v);
/* The database, for modules that keep their own tables (they must seal
 * protected columns with keel_vault_seal/keel_vault_open_field). */
sqlite3 *keel_vault_db(keel_vault_t *v);

/* Field-level AEAD. out needs len + KEEL_AEAD_OVERHEAD (28) bytes. */
keel_status_t keel_vault_seal(keel_vault_t *v, const char *table, const char *column, const char *row,
                              const void *pt, size_t len, uint8_t *out, size_t cap,
                              size_t *outlen) KEEL_MUST_CHECK;
/* KEEL_ERR_VERIFY when the blob was edited, moved or sealed under an erased key. */
keel_status_t keel_vault_open_field(keel_vault_t *v, const char *table, const char *column,
                                    const char *row, const uint8_t *blob, size_t bloblen, uint8_t *out,
                                    size_t cap, size_t *outlen) KEEL_MUST_CHECK;

/* A small sealed key/value store (table `secrets`, column `value`, row = name). */
keel_status_t keel_vault_secret_put(keel_vault_t *v, const char *name, const void *data,
                                    size_t len) KEEL_MUST_CHECK;
/* KEEL_ERR_NOT_FOUND when absent. */
keel_status_t keel_vault_secret_get(keel_vault_t *v, const char *name, uint8_t *out, size_t cap,
                                    size_t *outlen) KEEL_MUST_CHECK;
keel_status_t keel_vault_secret_delete(keel_vault_t *v, const char *name) KEEL_MUST_CHECK;
/* When the secret was last stored (unix seconds); KEEL_ERR_NOT_FOUND when absent. */
keel_status_t keel_vault_secret_time(keel_vault_t *v, const char *name, int64_t *updated) KEEL_MUST_CHECK;

/*
 * Crypto-erase: destroys the data key (the wrapped key file is shredded and
 * the keystore's wrapping key destroyed), deletes every row of protected
 * data, and starts a fresh data key, so the vault is usable again but empty.
 */
keel_status_t keel_vault_erase(keel_vault_t *v) KEEL_MUST_CHECK;

#endif

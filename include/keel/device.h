/*
 * keel/device.h - a device's configuration file (keeld.conf, written first by
 * `keel factory provision`) and the things it names: the keystore holding the
 * identity key and the vault. keeld and the device-side commands (`keel
 * update`, `keel boot`) open a device through here.
 */
#ifndef KEEL_DEVICE_H
#define KEEL_DEVICE_H

#include "keel/config.h"
#include "keel/keystore.h"
#include "keel/vault.h"

/* The schema of keeld.conf: every section and key a device understands. */
extern const keel_cfg_key_t keel_device_schema[];
extern const size_t keel_device_schema_len;

/* Loads keeld.conf and applies "section.key=value" overrides in order. */
keel_status_t keel_device_config_load(const char *path, char *const *overrides, size_t n_overrides,
                                      keel_config_t **out) KEEL_MUST_CHECK;
/* Opens the keystore the [keystore] section describes (never creating keys). */
keel_status_t keel_device_keystore_open(const keel_config_t *c, keel_keystore_t **out) KEEL_MUST_CHECK;
/* Opens (creating on first use) the vault of [vault] dir with that keystore. */
keel_status_t keel_device_vault_open(const keel_config_t *c, keel_keystore_t *ks,
                                     keel_vault_t **out) KEEL_MUST_CHECK;

#endif

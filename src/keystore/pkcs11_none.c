/*
 * The PKCS#11 driver's stand-in when Keel is built without it
 * (KEEL_WITH_PKCS11=OFF, docs/internals/build-profiles.md): a configuration
 * that names the driver is refused with a clear message, and neither the
 * PKCS#11 code nor the libp11 engine path is in the binary (5.6-6).
 */
#include "driver.h"

static keel_status_t none_open(const keel_keystore_config_t *cfg, void **state)
{
    (void)cfg;
    *state = NULL;
    return keel_errorf(KEEL_ERR_UNSUPPORTED,
                       "keystore driver 'pkcs11': built without PKCS#11 support (KEEL_WITH_PKCS11=OFF)");
}

/* Only open is ever called: it always fails, so no state exists for the rest. */
const keel_keystore_driver_t keel_keystore_pkcs11_driver = {
    .name = "pkcs11",
    .open = none_open,
};

/* keeld.conf: its schema, and opening the keystore and vault it names. */
#include "keel/device.h"

#include "keel/identity.h"
#include "keel/update.h"

#include <string.h>

#define STR(s, k, d) {s, k, KEEL_CFG_STRING, d, 0, 0}
#define PATH(s, k, d) {s, k, KEEL_CFG_PATH, d, 0, 0}
#define UINT(s, k, d, lo, hi) {s, k, KEEL_CFG_UINT, d, lo, hi}
#define BOOL(s, k, d) {s, k, KEEL_CFG_BOOL, d, 0, 0}

const keel_cfg_key_t keel_device_schema[] = {
    STR("device", "id", NULL),
    STR("device", "serial", NULL),
    STR("device", "model", NULL),
    PATH("device", "state_dir", "."),
    PATH("identity", "certificate", KEEL_STATE_CERT),
    PATH("identity", "chain", KEEL_STATE_CHAIN),
    PATH("identity", "label_password_hash", KEEL_STATE_LABEL_HASH),
    STR("keystore", "driver", "file"),
    PATH("keystore", "dir", KEEL_STATE_KEYSTORE_DIR),
    PATH("keystore", "kek_file", KEEL_STATE_KEK),
    STR("keystore", "key_label", KEEL_DEVICE_KEY_LABEL),
    PATH("keystore", "module", NULL),
    STR("keystore", "token", NULL),
    PATH("keystore", "pin_file", NULL),
    STR("keystore", "pin_env", NULL),
    STR("keystore", "tcti", NULL),
    PATH("trust", "release_root", KEEL_STATE_RELEASE_ROOT),
    PATH("trust", "service_root", KEEL_STATE_SERVICE_ROOT),
    PATH("vault", "dir", KEEL_STATE_VAULT_DIR),
    PATH("update", "dir", "update"),
    PATH("update", "slot_a", "update/slot-a.img"),
    PATH("update", "slot_b", "update/slot-b.img"),
    UINT("update", "boot_tries", "3", 1, 10),
    BOOL("update", "allow_downgrade", "false"),
    BOOL("update", "automatic", "true"),
    BOOL("update", "notifications", "true"),
    STR("update", "postpone_until", NULL), /* YYYY-MM-DD: automatic updates wait until then (5.3-6A) */
    /* keeld: fleet updates (docs/internals/updater.md); no server = no fleet updates */
    STR("update", "server", NULL),      /* https://host[:port] of the fleet's update server */
    STR("update", "server_name", NULL), /* name in its certificate (default: the server's host) */
    UINT("update", "check_interval", "86400", 10, 2592000), /* seconds between checks (5.3-5) */
    UINT("update", "check_jitter", "3600", 0, 86400),       /* each interval +- up to this */
    UINT("update", "first_check", "300", 0, 86400),         /* the first check: random within this after start */
    /* keeld: the local HTTPS API (docs/api.md) */
    STR("api", "listen", "0.0.0.0:8443"),
    UINT("api", "max_connections", "64", 4, 4096),
    UINT("api", "request_timeout", "10", 1, 300),
    UINT("api", "upload_max", "1073741824", 4096, 17179869184ull),
    /* keeld: the administrator account and its throttle (keel/auth.h) */
    UINT("auth", "argon2_t", "2", 1, 10),
    UINT("auth", "argon2_m_kib", "19456", 64, 1048576),
    UINT("auth", "parallel_hashes", "1", 1, 2),
    UINT("auth", "session_idle", "900", 60, 86400),
    UINT("auth", "session_max", "28800", 300, 604800),
    UINT("auth", "free_failures", "3", 1, 20),
    UINT("auth", "backoff_base", "1", 1, 60),
    UINT("auth", "backoff_max", "300", 1, 86400),
    UINT("auth", "global_per_minute", "20", 1, 600),
    UINT("auth", "report_window", "300", 1, 86400), /* auth-failures events: one per window with failures */
    /* keeld: the cloud link (keel/link.h); no broker = the device stays local */
    STR("link", "broker", NULL),      /* host:port or [v6]:port */
    STR("link", "server_name", NULL), /* name in the broker's certificate (default: the broker host) */
    UINT("link", "keepalive", "60", 5, 3600),
    UINT("link", "backoff_base", "1", 1, 600),
    UINT("link", "backoff_cap", "300", 1, 86400),
    UINT("link", "first_connect", "30", 0, 3600),
    UINT("link", "stable", "60", 1, 86400),
    UINT("link", "inflight", "20", 1, 1000),
    /* keeld: the persistent outbox (keel/outbox.h) */
    UINT("outbox", "max_messages", "50000", 10, 10000000),
    UINT("outbox", "max_bytes", "16777216", 65536, 1073741824),
    /* keeld: the product app's socket (keel/ipc.h) */
    PATH("ipc", "socket", "keeld.sock"),
    STR("ipc", "user", NULL),  /* a user name or uid allowed besides keeld's own */
    STR("ipc", "group", NULL), /* the socket's group; its members are allowed */
    UINT("ipc", "max_clients", "16", 1, 256),
    /* keeld: personal data (keel/privacy.h, docs/privacy.md) */
    PATH("privacy", "declaration", NULL),
    UINT("privacy", "retention_interval", "3600", 1, 86400),
    /* keeld: logging (never a secret) */
    STR("log", "level", "info"),  /* error, warn, info, debug */
    STR("log", "target", "stderr"), /* stderr or syslog */
    /* keeld: least privilege (keel/sandbox.h, docs/internals/sandbox.md) */
    STR("security", "user", NULL),      /* started as root: become this user before opening the state */
    STR("security", "seccomp", "kill"), /* kill, log or off: what an unlisted system call does */
};
const size_t keel_device_schema_len = sizeof keel_device_schema / sizeof keel_device_schema[0];

keel_status_t keel_device_config_load(const char *path, char *const *overrides, size_t n, keel_config_t **out)
{
    keel_config_t *c = NULL;
    keel_status_t st = keel_config_load(path, keel_device_schema, keel_device_schema_len, &c);
    for (size_t i = 0; st == KEEL_OK && i < n; i++)
        st = keel_config_override(c, overrides[i]);
    if (st == KEEL_OK && (!keel_identity_id_ok(keel_config_str(c, "device", "id")) ||
                          !keel_identity_model_ok(keel_config_str(c, "device", "model"))))
        st = keel_errorf(KEEL_ERR_CONFIG, "%s: [device] needs a valid id and model", path);
    const char *pu = st == KEEL_OK ? keel_config_str(c, "update", "postpone_until") : NULL;
    if (pu != NULL && !keel_date_ok(pu))
        st = keel_errorf(KEEL_ERR_CONFIG, "%s: update.postpone_until must be a date YYYY-MM-DD", path);
    if (st != KEEL_OK) {
        keel_config_free(c);
        return st;
    }
    *out = c;
    return KEEL_OK;
}

keel_status_t keel_device_keystore_open(const keel_config_t *c, keel_keystore_t **out)
{
    char dir[KEEL_PATH_MAX], kek[KEEL_PATH_MAX], module[KEEL_PATH_MAX], pin[KEEL_PATH_MAX];
    keel_keystore_config_t k = {.driver = keel_config_str(c, "keystore", "driver")};
    keel_status_t st = KEEL_OK;
    if (strcmp(k.driver, "file") == 0) {
        if ((st = keel_config_path(c, "keystore", "dir", dir)) == KEEL_OK &&
            (st = keel_config_path(c, "keystore", "kek_file", kek)) == KEEL_OK) {
            k.dir = dir;
            k.kek_file = kek;
        }
    } else {
        /* pkcs11 and tpm2: a PIN, and where the keys are */
        k.pin_env = keel_config_str(c, "keystore", "pin_env");
        if (keel_config_path(c, "keystore", "pin_file", pin) == KEEL_OK)
            k.pin_file = pin;
        if (strcmp(k.driver, "tpm2") == 0) {
            k.tcti = keel_config_str(c, "keystore", "tcti");
            if ((st = keel_config_path(c, "keystore", "dir", dir)) == KEEL_OK)
                k.dir = dir;
        } else {
            k.token = keel_config_str(c, "keystore", "token");
            if ((st = keel_config_path(c, "keystore", "module", module)) == KEEL_OK)
                k.module = module;
        }
    }
    if (st != KEEL_OK)
        return keel_errorf(KEEL_ERR_CONFIG, "[keystore] is incomplete for driver %s", k.driver);
    return keel_keystore_open(&k, out);
}

keel_status_t keel_device_vault_open(const keel_config_t *c, keel_keystore_t *ks, keel_vault_t **out)
{
    char dir[KEEL_PATH_MAX];
    keel_status_t st = keel_config_path(c, "vault", "dir", dir);
    return st == KEEL_OK ? keel_vault_open(dir, ks, out) : st;
}

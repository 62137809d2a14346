/*
 * keel factory provision: a unique identity for every device.
 *
 * Crash safety: a device is built in OUT/.staging-<serial>/ and becomes
 * OUT/<device-id>/ with one rename, after its label line is on disk. So at any
 * instant a device directory is complete and has its label. What an
 * interruption can leave (a staging directory, a label line without a device,
 * a key on the token without a device) is removed by the next run before it
 * starts. manifest.json is derived from the complete devices at the end.
 */
#include "keel/factory.h"

#include "keel/device.h"
#include "keel/identity.h"
#include "keel/privacy.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#define LABELS_MAX (256u * 1024u * 1024u)
#define STAGING_PREFIX ".staging-"
#define DEVICE_FILE_MAX (64u * 1024u)
#define PRODUCT_FORMAT "keel-product-1"
#define PRODUCT_FILE_MAX (KEEL_PRIVACY_DECL_MAX + 64u * 1024u)
#define DECLARATION_FILE "declaration.json"

typedef struct {
    keel_factory_t *f;
    const keel_provision_opts_t *o;
    keel_keystore_t *shared_ks; /* pkcs11: one token for the run; file, tpm2: one keystore per device */
    keel_buf_t chain_pem, release_pem, service_pem;
    char labels[KEEL_PATH_MAX];
    char *declaration; /* the product's declaration.json, or NULL */
    json_t *settings;  /* the product's "section.key": "value" (strings), or NULL */
} prov_t;

static int is_file_driver(const keel_provision_opts_t *o)
{
    return o->keystore.driver == NULL || strcmp(o->keystore.driver, "file") == 0;
}

static int is_tpm2_driver(const keel_provision_opts_t *o)
{
    return o->keystore.driver != NULL && strcmp(o->keystore.driver, "tpm2") == 0;
}

/* The file and tpm2 keystores live in the device's state directory; the
 * pkcs11 one is a token shared by the run. */
static int keystore_per_device(const keel_provision_opts_t *o)
{
    return is_file_driver(o) || is_tpm2_driver(o);
}

static const char *driver_name(const keel_provision_opts_t *o)
{
    return is_file_driver(o) ? "file" : o->keystore.driver;
}

static keel_status_t key_label(const prov_t *p, const char *serial, char *out, size_t cap)
{
    if (keystore_per_device(p->o))
        return keel_strlcpy(out, KEEL_DEVICE_KEY_LABEL, cap);
    return keel_snprintf(out, cap, "device-%s", serial);
}

/* Config values we write must not be able to inject lines or sections. */
static int config_value_ok(const char *s)
{
    if (s == NULL)
        return 1;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

/* Files of a staging directory need no temp-and-rename: the directory
 * becomes visible only through its own committing rename. */
static keel_status_t write_rel(const char *dir, const char *rel, const void *data, size_t len, mode_t mode)
{
    char path[KEEL_PATH_MAX];
    keel_status_t st = keel_path_join(path, sizeof path, dir, rel);
    return st == KEEL_OK ? keel_file_write_new(path, data, len, mode) : st;
}

/* Subdirectories of a state directory; the file keystore makes its own. */
static const char *const state_subdirs[] = {"identity", "trust", KEEL_STATE_KEYSTORE_DIR};

static keel_status_t make_subdirs(const char *dir)
{
    keel_status_t st = keel_dir_make(dir, 0700);
    for (size_t i = 0; st == KEEL_OK && i < 2; i++) {
        char path[KEEL_PATH_MAX];
        st = keel_path_join(path, sizeof path, dir, state_subdirs[i]);
        if (st == KEEL_OK)
            st = keel_dir_make(path, 0700);
    }
    return st;
}

/* Makes the staging directory's entries durable before it is committed. */
static keel_status_t sync_subdirs(const char *dir)
{
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; st == KEEL_OK && i < sizeof state_subdirs / sizeof state_subdirs[0]; i++) {
        char path[KEEL_PATH_MAX];
        st = keel_path_join(path, sizeof path, dir, state_subdirs[i]);
        if (st == KEEL_OK && keel_path_exists(path))
            st = keel_dir_sync(path);
    }
    return st == KEEL_OK ? keel_dir_sync(dir) : st;
}

typedef struct {
    const char *rel;
    const void *data;
    size_t len;
    mode_t mode;
} state_file_t;

/* ---- the product file ---------------------------------------------------- */

/* Sections the factory writes itself: identity, keys and trust are not a
 * product's to choose. */
static const char *const reserved_sections[] = {"device", "identity", "keystore", "trust", "vault"};

static const keel_cfg_key_t *schema_key(const char *section, const char *key)
{
    for (size_t i = 0; i < keel_device_schema_len; i++)
        if (strcmp(keel_device_schema[i].section, section) == 0 && strcmp(keel_device_schema[i].key, key) == 0)
            return &keel_device_schema[i];
    return NULL;
}

static keel_status_t product_setting(const char *file, json_t *out, const char *name, const json_t *v)
{
    char section[64], value[KEEL_CONFIG_VALUE_MAX + 1];
    const char *dot = strchr(name, '.');
    if (dot == NULL || (size_t)(dot - name) >= sizeof section)
        return keel_errorf(KEEL_ERR_CONFIG, "product file %s: $.settings: '%.64s' is not section.key", file, name);
    memcpy(section, name, (size_t)(dot - name));
    section[dot - name] = '\0';
    if (schema_key(section, dot + 1) == NULL)
        return keel_errorf(KEEL_ERR_CONFIG, "product file %s: $.settings.%.64s: keeld.conf has no such key", file,
                           name);
    for (size_t i = 0; i < sizeof reserved_sections / sizeof reserved_sections[0]; i++)
        if (strcmp(section, reserved_sections[i]) == 0)
            return keel_errorf(KEEL_ERR_CONFIG, "product file %s: $.settings.%s: [%s] is written by the factory",
                               file, name, section);
    if (strcmp(name, "privacy.declaration") == 0)
        return keel_errorf(KEEL_ERR_CONFIG, "product file %s: $.settings.%s: set by the product's \"declaration\"",
                           file, name);
    keel_status_t st;
    if (json_is_string(v))
        st = keel_strlcpy(value, json_string_value(v), sizeof value);
    else if (json_is_integer(v) && json_integer_value(v) >= 0)
        st = keel_snprintf(value, sizeof value, "%lld", (long long)json_integer_value(v));
    else if (json_is_boolean(v))
        st = keel_strlcpy(value, json_is_true(v) ? "true" : "false", sizeof value);
    else
        return keel_errorf(KEEL_ERR_CONFIG, "product file %s: $.settings.%s: must be a string, a whole number or "
                                            "a boolean", file, name);
    if (st != KEEL_OK || (json_is_string(v) && strlen(value) != json_string_length(v)) || !config_value_ok(value))
        return keel_errorf(KEEL_ERR_CONFIG, "product file %s: $.settings.%s: must be 1 line of at most %u bytes",
                           file, name, KEEL_CONFIG_VALUE_MAX);
    json_object_set_new(out, name, json_string(value));
    return KEEL_OK;
}

/* Reads and checks the product file: its declaration with the privacy
 * module's checks, its settings against keeld.conf's schema (their values
 * are checked by loading the first starter configuration). */
static keel_status_t product_load(prov_t *p)
{
    const char *file = p->o->product;
    keel_buf_t b;
    keel_status_t st = keel_file_read(file, PRODUCT_FILE_MAX, &b);
    if (st != KEEL_OK)
        return keel_errorf(st == KEEL_ERR_NOT_FOUND ? KEEL_ERR_CONFIG : st, "product file %s: %s", file,
                           st == KEEL_ERR_TOO_LARGE ? "too large" : keel_error_message());
    json_error_t e;
    json_t *j = json_loadb((const char *)b.data, b.len, JSON_REJECT_DUPLICATES, &e);
    keel_buf_free(&b);
    if (j == NULL)
        return keel_errorf(KEEL_ERR_CONFIG, "product file %s: line %d: %s", file, e.line, e.text);
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        if (strcmp(key, "format") != 0 && strcmp(key, "model") != 0 && strcmp(key, "declaration") != 0 &&
            strcmp(key, "settings") != 0) {
            st = keel_errorf(KEEL_ERR_CONFIG, "product file %s: $.%.64s: unknown key", file, key);
            break;
        }
    }
    const json_t *fmt = json_object_get(j, "format"), *model = json_object_get(j, "model"),
                 *decl = json_object_get(j, "declaration"), *set = json_object_get(j, "settings");
    if (st == KEEL_OK && (!json_is_string(fmt) || strcmp(json_string_value(fmt), PRODUCT_FORMAT) != 0))
        st = keel_errorf(KEEL_ERR_CONFIG, "product file %s: $.format must be \"" PRODUCT_FORMAT "\"", file);
    if (st == KEEL_OK && model != NULL && (!json_is_string(model) || strcmp(json_string_value(model), p->o->model) != 0))
        st = keel_errorf(KEEL_ERR_CONFIG, "product file %s: $.model is not the model provisioned (%s)", file,
                         p->o->model);
    if (st == KEEL_OK && decl == NULL)
        st = keel_errorf(KEEL_ERR_CONFIG, "product file %s: $.declaration is missing", file);
    if (st == KEEL_OK && keel_privacy_declaration_check(decl, "$.declaration") != KEEL_OK) {
        char why[KEEL_ERROR_MAX];
        snprintf(why, sizeof why, "%s", keel_error_message());
        st = keel_errorf(KEEL_ERR_CONFIG, "product file %s: %s", file, why);
    }
    if (st == KEEL_OK && set != NULL && !json_is_object(set))
        st = keel_errorf(KEEL_ERR_CONFIG, "product file %s: $.settings must be an object", file);
    if (st == KEEL_OK && (p->settings = json_object()) == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    json_object_foreach((json_t *)set, key, v) {
        if (st == KEEL_OK)
            st = product_setting(file, p->settings, key, v);
    }
    if (st == KEEL_OK) {
        char *text = json_dumps(decl, JSON_INDENT(2));
        if (text == NULL)
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        p->declaration = text;
    }
    json_decref(j);
    return st;
}

/* One [section] of product settings; `defaults` are the factory's own
 * key = value pairs of that section, which a setting replaces. */
static keel_status_t settings_section(const prov_t *p, const char *section, const char *const *defaults,
                                      size_t n_defaults, keel_buf_t *cfg)
{
    size_t len = strlen(section);
    keel_status_t st = keel_buf_printf(cfg, "[%s]\n", section);
    for (size_t i = 0; st == KEEL_OK && i + 1 < n_defaults; i += 2) {
        char name[128];
        snprintf(name, sizeof name, "%s.%s", section, defaults[i]);
        const json_t *v = p->settings != NULL ? json_object_get(p->settings, name) : NULL;
        st = keel_buf_printf(cfg, "%s = %s\n", defaults[i], v != NULL ? json_string_value(v) : defaults[i + 1]);
    }
    const char *key;
    json_t *v;
    json_object_foreach(p->settings, key, v) {
        if (st != KEEL_OK || strncmp(key, section, len) != 0 || key[len] != '.')
            continue;
        bool is_default = false;
        for (size_t i = 0; i + 1 < n_defaults; i += 2)
            is_default = is_default || strcmp(key + len + 1, defaults[i]) == 0;
        if (!is_default)
            st = keel_buf_printf(cfg, "%s = %s\n", key + len + 1, json_string_value(v));
    }
    return st == KEEL_OK ? keel_buf_printf(cfg, "\n") : st;
}

/* The product's settings, grouped per section in the schema's order. */
static keel_status_t product_config(const prov_t *p, keel_buf_t *cfg)
{
    /* Two file-backed slots in the state directory, so a freshly provisioned
     * device can be updated as it is; a product points them at partitions. */
    static const char *const update_defaults[] = {
        "dir", "update", "slot_a", "update/slot-a.img", "slot_b", "update/slot-b.img", "boot_tries", "3",
        "allow_downgrade", "false", "automatic", "true", "notifications", "true",
    };
    static const char *const privacy_defaults[] = {"declaration", DECLARATION_FILE};
    keel_status_t st = settings_section(p, "update", update_defaults,
                                        sizeof update_defaults / sizeof update_defaults[0], cfg);
    const char *done[32];
    size_t n_done = 0;
    for (size_t i = 0; st == KEEL_OK && i < keel_device_schema_len; i++) {
        const char *sec = keel_device_schema[i].section;
        bool skip = strcmp(sec, "update") == 0;
        for (size_t r = 0; r < sizeof reserved_sections / sizeof reserved_sections[0]; r++)
            skip = skip || strcmp(sec, reserved_sections[r]) == 0;
        for (size_t d = 0; d < n_done; d++)
            skip = skip || strcmp(sec, done[d]) == 0;
        if (skip || n_done == sizeof done / sizeof done[0])
            continue;
        done[n_done++] = sec;
        bool privacy = strcmp(sec, "privacy") == 0 && p->declaration != NULL;
        bool any = privacy;
        const char *key;
        json_t *v;
        size_t len = strlen(sec);
        json_object_foreach(p->settings, key, v) any = any || (strncmp(key, sec, len) == 0 && key[len] == '.');
        if (any)
            st = settings_section(p, sec, privacy ? privacy_defaults : NULL, privacy ? 2 : 0, cfg);
    }
    return st;
}

static keel_status_t starter_config(const prov_t *p, const char *id, const char *serial,
                                    const char *label, keel_buf_t *cfg)
{
    const keel_keystore_config_t *k = &p->o->keystore;
    keel_buf_init(cfg, DEVICE_FILE_MAX);
    keel_status_t st = keel_buf_printf(
        cfg,
        "# keeld configuration for device %s (model %s), written by keel factory provision.\n"
        "# Paths are relative to the directory of this file.\n\n"
        "[device]\nid = %s\nserial = %s\nmodel = %s\nstate_dir = .\n\n"
        "[identity]\ncertificate = %s\nchain = %s\nlabel_password_hash = %s\n\n",
        id, p->o->model, id, serial, p->o->model, KEEL_STATE_CERT, KEEL_STATE_CHAIN,
        KEEL_STATE_LABEL_HASH);
    if (st == KEEL_OK && is_file_driver(p->o))
        st = keel_buf_printf(cfg, "[keystore]\ndriver = file\ndir = %s\nkek_file = %s\nkey_label = %s\n\n",
                             KEEL_STATE_KEYSTORE_DIR, KEEL_STATE_KEK, label);
    else if (st == KEEL_OK && is_tpm2_driver(p->o)) {
        st = keel_buf_printf(cfg, "[keystore]\ndriver = tpm2\ndir = %s\nkey_label = %s\n", KEEL_STATE_KEYSTORE_DIR,
                             label);
        if (st == KEEL_OK && k->tcti != NULL)
            st = keel_buf_printf(cfg, "tcti = %s\n", k->tcti);
        if (st == KEEL_OK && k->pin_env != NULL)
            st = keel_buf_printf(cfg, "pin_env = %s\n", k->pin_env);
        else if (st == KEEL_OK)
            st = keel_buf_printf(cfg, "pin_file = %s\n", k->pin_file != NULL ? k->pin_file : KEEL_STATE_TPM2_PIN);
        if (st == KEEL_OK)
            st = keel_buf_printf(cfg, "\n");
    } else if (st == KEEL_OK) {
        st = keel_buf_printf(cfg, "[keystore]\ndriver = pkcs11\nmodule = %s\ntoken = %s\nkey_label = %s\n",
                             k->module, k->token, label);
        if (st == KEEL_OK && k->pin_file != NULL)
            st = keel_buf_printf(cfg, "pin_file = %s\n", k->pin_file);
        if (st == KEEL_OK && k->pin_env != NULL)
            st = keel_buf_printf(cfg, "pin_env = %s\n", k->pin_env);
        if (st == KEEL_OK)
            st = keel_buf_printf(cfg, "\n");
    }
    if (st == KEEL_OK)
        st = keel_buf_printf(cfg, "[trust]\nrelease_root = %s\nservice_root = %s\n\n[vault]\ndir = %s\n\n",
                             KEEL_STATE_RELEASE_ROOT, KEEL_STATE_SERVICE_ROOT, KEEL_STATE_VAULT_DIR);
    if (st == KEEL_OK)
        st = product_config(p, cfg);
    return st;
}

static keel_status_t device_json(const prov_t *p, const char *id, const char *serial, const char *label,
                                 const char *fp, char **out)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "format", "keel-device-1",
                          "id", id, "serial", serial, "model", p->o->model, "org",
                          keel_factory_org(p->f), "keystore",
                          driver_name(p->o), "key_label", label, "cert_sha256",
                          fp, "provisioned", (json_int_t)time(NULL));
    *out = j != NULL ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    return *out != NULL ? KEEL_OK : keel_errorf(KEEL_ERR_NOMEM, "out of memory");
}

/*
 * One device is built by two threads at once. The second thread makes the key,
 * the certificate and every file of the state directory (CPU for a moment,
 * then mostly waiting for the disk); the first computes the Argon2id hash of
 * the label password, which needs nothing from the other and costs more than
 * all of it. So the I/O adds little wall time. The hash stays on the main
 * thread: glibc serves its 19 MiB from the main arena without fresh page
 * faults, which a new thread's arena would not.
 */
typedef struct {
    prov_t *p;
    const char *staging, *serial, *label;
    char id[KEEL_DEVICE_ID_LEN + 1];
    char fp[KEEL_FINGERPRINT_LEN];
    double keygen, cert;
    int key_made; /* this run created the key (so may destroy it) */
    keel_status_t st;
    char err[KEEL_ERROR_MAX];
} device_job_t;

static keel_status_t tpm2_pin_make(const char *kdir, const char *path)
{
    uint8_t raw[16];
    char hex[2 * sizeof raw + 2];
    keel_random_bytes(raw, sizeof raw);
    keel_status_t st = keel_hex_encode(raw, sizeof raw, hex, sizeof hex);
    if (st == KEEL_OK)
        st = keel_dir_make(kdir, 0700);
    if (st == KEEL_OK) {
        size_t n = strlen(hex);
        hex[n] = '\n';
        st = keel_file_create_atomic(path, hex, n + 1, 0600);
    }
    keel_wipe(raw, sizeof raw);
    keel_wipe(hex, sizeof hex);
    return st;
}

static keel_status_t prepare(device_job_t *j)
{
    prov_t *p = j->p;
    keel_keystore_t *ks = p->shared_ks, *own_ks = NULL;
    EVP_PKEY *pub = NULL;
    X509 *cert = NULL;
    keel_buf_t pem, cfg;
    keel_buf_init(&pem, 0);
    keel_buf_init(&cfg, 0);
    char *dj = NULL, kdir[KEEL_PATH_MAX], kek[KEEL_PATH_MAX], pin[KEEL_PATH_MAX];

    keel_status_t st = KEEL_OK;
    if (ks == NULL) {
        keel_keystore_config_t c = p->o->keystore;
        c.driver = driver_name(p->o);
        c.create = 1;
        c.dir = kdir;
        if ((st = keel_path_join(kdir, sizeof kdir, j->staging, KEEL_STATE_KEYSTORE_DIR)) == KEEL_OK &&
            (st = keel_path_join(kek, sizeof kek, j->staging, KEEL_STATE_KEK)) == KEEL_OK &&
            (st = keel_path_join(pin, sizeof pin, j->staging, KEEL_STATE_TPM2_PIN)) == KEEL_OK)
            c.kek_file = kek;
        if (st == KEEL_OK && is_tpm2_driver(p->o) && c.pin_file == NULL && c.pin_env == NULL) {
            /* No PIN given: each device gets its own, kept beside its key
             * blobs. It stops other local users of the TPM, and guessing at
             * it runs into the TPM's dictionary-attack lockout. */
            c.pin_file = pin;
            st = tpm2_pin_make(kdir, pin);
        }
        if (st == KEEL_OK)
            st = keel_keystore_open(&c, &own_ks);
        ks = own_ks;
    }
    double t = keel_now();
    if (st == KEEL_OK && (st = keel_keystore_generate(ks, j->label, &pub)) == KEEL_OK)
        j->key_made = 1;
    j->keygen = keel_now() - t;
    if (st == KEEL_OK)
        st = keel_identity_device_id(pub, j->id);
    t = keel_now();
    if (st == KEEL_OK)
        st = keel_factory_issue_device(p->f, pub, j->id, p->o->model, j->serial, &cert);
    j->cert = keel_now() - t;

    if (st == KEEL_OK)
        st = keel_identity_fingerprint(cert, j->fp);
    if (st == KEEL_OK)
        st = keel_pem_cert(cert, &pem);
    if (st == KEEL_OK)
        st = starter_config(p, j->id, j->serial, j->label, &cfg);
    if (st == KEEL_OK)
        st = device_json(p, j->id, j->serial, j->label, j->fp, &dj);
    const state_file_t files[] = {
        {KEEL_STATE_CERT, pem.data, pem.len, 0644},
        {KEEL_STATE_CHAIN, p->chain_pem.data, p->chain_pem.len, 0644},
        {KEEL_STATE_RELEASE_ROOT, p->release_pem.data, p->release_pem.len, 0644},
        {KEEL_STATE_SERVICE_ROOT, p->service_pem.data, p->service_pem.len, 0644},
        {KEEL_STATE_CONFIG, cfg.data, cfg.len, 0600},
        {KEEL_STATE_DEVICE_JSON, dj, dj != NULL ? strlen(dj) : 0, 0644},
        /* No secret in it: what the device tells its owner anyway. */
        {DECLARATION_FILE, p->declaration, p->declaration != NULL ? strlen(p->declaration) : 0, 0644},
    };
    size_t n_files = sizeof files / sizeof files[0] - (p->declaration == NULL ? 1 : 0);
    for (size_t i = 0; st == KEEL_OK && i < n_files; i++)
        st = write_rel(j->staging, files[i].rel, files[i].data, files[i].len, files[i].mode);
    /* The product's settings pass exactly the checks keeld will apply. */
    if (st == KEEL_OK && p->declaration != NULL) {
        char path[KEEL_PATH_MAX];
        keel_config_t *c = NULL;
        st = keel_path_join(path, sizeof path, j->staging, KEEL_STATE_CONFIG);
        if (st == KEEL_OK && keel_device_config_load(path, NULL, 0, &c) != KEEL_OK) {
            char why[KEEL_ERROR_MAX];
            snprintf(why, sizeof why, "%s", keel_error_message());
            st = keel_errorf(KEEL_ERR_CONFIG, "product file %s: $.settings: %s", p->o->product, why);
        }
        keel_config_free(c);
    }

    free(dj);
    keel_buf_free(&pem);
    keel_buf_free(&cfg);
    X509_free(cert);
    EVP_PKEY_free(pub);
    keel_keystore_close(own_ks);
    return st;
}

static void *prepare_thread(void *arg)
{
    device_job_t *j = arg;
    j->st = prepare(j);
    if (j->st != KEEL_OK)
        snprintf(j->err, sizeof j->err, "%s", keel_error_message());
    return NULL;
}

/* Builds one device in its staging directory; on success *id holds its id. */
static keel_status_t build_device(prov_t *p, const char *staging, const char *serial, const char *label,
                                  keel_provision_stats_t *stats, char id[KEEL_DEVICE_ID_LEN + 1],
                                  keel_buf_t *label_line, int *key_made)
{
    char pw[KEEL_LABEL_PW_LEN + 1], norm[KEEL_LABEL_PW_LEN + 1], hash[KEEL_PASSWORD_HASH_MAX];
    device_job_t j = {.p = p, .staging = staging, .serial = serial, .label = label,
                      .st = KEEL_ERR_IO};
    keel_status_t st = make_subdirs(staging);
    if (st != KEEL_OK)
        return st;
    pthread_t worker;
    int started = pthread_create(&worker, NULL, prepare_thread, &j) == 0;
    if (!started)
        prepare_thread(&j); /* no thread to be had: do it in line */

    keel_identity_label_password(pw);
    double t = keel_now();
    st = keel_identity_password_normalize(pw, norm, sizeof norm);
    if (st == KEEL_OK)
        st = keel_password_hash(norm, strlen(norm), &p->o->argon2, hash);
    stats->hash += keel_now() - t;

    if (started && pthread_join(worker, NULL) != 0 && st == KEEL_OK)
        st = keel_errorf(KEEL_ERR_IO, "device preparation thread failed");
    stats->keygen += j.keygen;
    stats->cert += j.cert;
    *key_made = j.key_made;
    if (st == KEEL_OK && j.st != KEEL_OK)
        st = keel_errorf(j.st, "%s", j.err);
    if (st == KEEL_OK)
        st = write_rel(staging, KEEL_STATE_LABEL_HASH, hash, strlen(hash), 0600);
    if (st == KEEL_OK)
        st = sync_subdirs(staging);
    if (st == KEEL_OK) {
        memcpy(id, j.id, sizeof j.id);
        keel_buf_init(label_line, 512);
        st = keel_buf_printf(label_line, "%s,%s,%s,%s,%s\n", j.id, serial, p->o->model, pw, j.fp);
    }
    keel_wipe(pw, sizeof pw);
    keel_wipe(norm, sizeof norm);
    keel_wipe(hash, sizeof hash);
    return st;
}

/* Removes a device this run made but never committed. The token key goes
 * first: a crash in between leaves a staging directory, which names the key
 * for the next run to destroy. */
static void discard_staging(prov_t *p, const char *staging, const char *label, int destroy_key)
{
    if (destroy_key && p->shared_ks != NULL && keel_keystore_destroy(p->shared_ks, label) != KEEL_OK)
        keel_log(KEEL_LOG_WARN, "could not destroy key %s on the token: %s", label, keel_error_message());
    if (keel_dir_remove_tree(staging) != KEEL_OK)
        keel_log(KEEL_LOG_WARN, "could not remove %s: %s", staging, keel_error_message());
}

static keel_status_t provision_one(prov_t *p, keel_provision_stats_t *stats)
{
    char serial[KEEL_SERIAL_LEN + 1], label[KEEL_KEYSTORE_LABEL_MAX + 1];
    char staging[KEEL_PATH_MAX], final[KEEL_PATH_MAX], id[KEEL_DEVICE_ID_LEN + 1];
    keel_identity_new_serial(serial);
    keel_buf_t line;
    keel_buf_init(&line, 0);
    int key_made = 0;
    keel_status_t st = key_label(p, serial, label, sizeof label);
    if (st == KEEL_OK)
        st = keel_snprintf(staging, sizeof staging, "%s/%s%s", p->o->out, STAGING_PREFIX, serial);
    if (st != KEEL_OK)
        return st;
    st = build_device(p, staging, serial, label, stats, id, &line, &key_made);
    if (st == KEEL_OK)
        st = keel_path_join(final, sizeof final, p->o->out, id);
    if (st == KEEL_OK && keel_path_exists(final))
        st = keel_errorf(KEEL_ERR_EXISTS, "device %s already exists (duplicate key?)", id);
    /* Label first, then the rename that makes the device exist. */
    if (st == KEEL_OK)
        st = keel_file_append_sync(p->labels, line.data, line.len, 0600);
    if (st == KEEL_OK)
        st = keel_rename_commit(staging, final);
    keel_buf_free(&line);
    if (st == KEEL_OK) {
        stats->made++;
        return KEEL_OK;
    }
    char msg[KEEL_ERROR_MAX];
    snprintf(msg, sizeof msg, "%s", keel_error_message());
    if (!keel_path_exists(staging) && keel_path_exists(final)) {
        /* The rename happened and only the directory sync after it failed:
         * the device exists with its label. Report, never unmake it. */
        stats->made++;
    } else {
        discard_staging(p, staging, label, key_made);
    }
    return keel_errorf(st, "%s", msg);
}

/* Removes what an interrupted run left behind. */
static keel_status_t recover(prov_t *p)
{
    DIR *d = opendir(p->o->out);
    if (d == NULL)
        return keel_errorf(KEEL_ERR_IO, "opendir %s: %s", p->o->out, strerror(errno));
    keel_status_t st = KEEL_OK;
    struct dirent *e;
    while (st == KEEL_OK && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, STAGING_PREFIX, strlen(STAGING_PREFIX)) != 0)
            continue;
        char path[KEEL_PATH_MAX], label[KEEL_KEYSTORE_LABEL_MAX + 1];
        const char *serial = e->d_name + strlen(STAGING_PREFIX);
        st = keel_path_join(path, sizeof path, p->o->out, e->d_name);
        if (st == KEEL_OK && strlen(serial) == KEEL_SERIAL_LEN &&
            key_label(p, serial, label, sizeof label) == KEEL_OK) {
            keel_log(KEEL_LOG_WARN, "removing half-made device %s from an interrupted run", e->d_name);
            discard_staging(p, path, label, 1);
        } else if (st == KEEL_OK) {
            st = keel_dir_remove_tree(path);
        }
    }
    closedir(d);
    if (st != KEEL_OK)
        return st;

    keel_buf_t old, kept;
    st = keel_file_read(p->labels, LABELS_MAX, &old);
    if (st == KEEL_ERR_NOT_FOUND)
        return keel_file_write_atomic(p->labels, KEEL_LABELS_HEADER, strlen(KEEL_LABELS_HEADER), 0600);
    if (st != KEEL_OK)
        return st;
    keel_buf_init(&kept, LABELS_MAX);
    size_t dropped = 0;
    char *save = NULL;
    for (char *ln = strtok_r((char *)old.data, "\n", &save); ln != NULL && st == KEEL_OK;
         ln = strtok_r(NULL, "\n", &save)) {
        char id[KEEL_DEVICE_ID_LEN + 1], path[KEEL_PATH_MAX];
        int is_header = strncmp(ln, "device_id,", 10) == 0;
        int keep = is_header;
        if (!is_header && strlen(ln) > KEEL_DEVICE_ID_LEN && ln[KEEL_DEVICE_ID_LEN] == ',') {
            memcpy(id, ln, KEEL_DEVICE_ID_LEN);
            id[KEEL_DEVICE_ID_LEN] = '\0';
            keep = keel_identity_id_ok(id) && keel_path_join(path, sizeof path, p->o->out, id) == KEEL_OK &&
                   keel_path_exists(path);
        }
        if (keep) {
            st = keel_buf_append(&kept, ln, strlen(ln));
            if (st == KEEL_OK)
                st = keel_buf_append(&kept, "\n", 1);
        } else {
            dropped++;
        }
    }
    if (st == KEEL_OK && dropped > 0) {
        keel_log(KEEL_LOG_WARN, "dropping %zu label line(s) of devices an interrupted run never finished",
                 dropped);
        st = keel_file_write_atomic(p->labels, kept.data, kept.len, 0600);
    }
    keel_buf_free(&old);
    keel_buf_free(&kept);
    return st;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static keel_status_t write_manifest(prov_t *p)
{
    DIR *d = opendir(p->o->out);
    if (d == NULL)
        return keel_errorf(KEEL_ERR_IO, "opendir %s: %s", p->o->out, strerror(errno));
    char **ids = NULL;
    size_t n = 0, cap = 0;
    keel_status_t st = KEEL_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && st == KEEL_OK) {
        if (!keel_identity_id_ok(e->d_name))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            char **grown = realloc(ids, cap * sizeof *ids);
            if (grown == NULL) {
                st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
                break;
            }
            ids = grown;
        }
        if ((ids[n] = strdup(e->d_name)) == NULL)
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        else
            n++;
    }
    closedir(d);
    if (st == KEEL_OK && n > 0) /* qsort's array must not be NULL, even empty */
        qsort(ids, n, sizeof *ids, cmp_str);

    json_t *devs = json_array();
    for (size_t i = 0; st == KEEL_OK && i < n; i++) {
        char path[KEEL_PATH_MAX];
        keel_buf_t dj, crt;
        json_error_t jerr;
        if ((st = keel_snprintf(path, sizeof path, "%s/%s/%s", p->o->out, ids[i], KEEL_STATE_DEVICE_JSON)) != KEEL_OK ||
            (st = keel_file_read(path, DEVICE_FILE_MAX, &dj)) != KEEL_OK)
            break;
        json_t *dev = json_loadb((const char *)dj.data, dj.len, JSON_REJECT_DUPLICATES, &jerr);
        keel_buf_free(&dj);
        if (dev == NULL) {
            st = keel_errorf(KEEL_ERR_FORMAT, "%s: %s", path, jerr.text);
            break;
        }
        if ((st = keel_snprintf(path, sizeof path, "%s/%s/%s", p->o->out, ids[i], KEEL_STATE_CERT)) == KEEL_OK &&
            (st = keel_file_read(path, DEVICE_FILE_MAX, &crt)) == KEEL_OK) {
            json_object_set_new(dev, "certificate", json_stringn((const char *)crt.data, crt.len));
            keel_buf_free(&crt);
        }
        json_object_del(dev, "format");
        json_array_append_new(devs, dev);
    }
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    if (st != KEEL_OK) {
        json_decref(devs);
        return st;
    }
    json_t *m = json_pack("{s:s, s:s, s:I, s:o}", "format", "keel-manifest-1", "org",
                          keel_factory_org(p->f), "generated", (json_int_t)time(NULL), "devices", devs);
    char *txt = m != NULL ? json_dumps(m, JSON_INDENT(2)) : NULL;
    json_decref(m);
    if (txt == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    char path[KEEL_PATH_MAX];
    st = keel_path_join(path, sizeof path, p->o->out, KEEL_BATCH_MANIFEST);
    if (st == KEEL_OK)
        st = keel_file_write_atomic(path, txt, strlen(txt), 0644);
    free(txt);
    return st;
}

static keel_status_t check_opts(const keel_provision_opts_t *o)
{
    if (o->out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "no output directory");
    if (!keel_identity_model_ok(o->model))
        return keel_errorf(KEEL_ERR_ARG, "model must be 1..%d characters of [A-Za-z0-9._-]", KEEL_MODEL_MAX);
    if (o->count < 1 || o->count > KEEL_PROVISION_MAX_COUNT)
        return keel_errorf(KEEL_ERR_ARG, "count must be 1..%u", KEEL_PROVISION_MAX_COUNT);
    const keel_keystore_config_t *k = &o->keystore;
    if (is_tpm2_driver(o)) {
        if (!config_value_ok(k->tcti) || !config_value_ok(k->pin_file) || !config_value_ok(k->pin_env))
            return keel_errorf(KEEL_ERR_ARG, "tpm2 settings must not contain control characters");
        if (k->pin_file != NULL && k->pin_env != NULL)
            return keel_errorf(KEEL_ERR_ARG, "tpm2 keystore: give a PIN file or a PIN variable, not both");
        if (o->tpm2_lockout_tries > 0 && o->tpm2_lockout_recovery_s == 0)
            return keel_errorf(KEEL_ERR_ARG, "tpm2 lockout: a recovery interval of 0 turns the protection off");
    } else if (o->tpm2_lockout_tries > 0 || o->tpm2_lockout_auth_file != NULL) {
        return keel_errorf(KEEL_ERR_ARG, "tpm2 lockout settings need the tpm2 keystore");
    } else if (!is_file_driver(o)) {
        if (strcmp(k->driver, "pkcs11") != 0)
            return keel_errorf(KEEL_ERR_ARG, "keystore must be file, pkcs11 or tpm2");
        if (k->module == NULL || k->token == NULL || (k->pin_file == NULL && k->pin_env == NULL))
            return keel_errorf(KEEL_ERR_ARG, "pkcs11 keystore needs a module, a token and a PIN file or variable");
        if (!config_value_ok(k->module) || !config_value_ok(k->token) || !config_value_ok(k->pin_file) ||
            !config_value_ok(k->pin_env))
            return keel_errorf(KEEL_ERR_ARG, "pkcs11 settings must not contain control characters");
    }
    return KEEL_OK;
}

/*
 * The keys' PIN is only worth the TPM's dictionary-attack protection: apply
 * the settings asked for, then refuse a TPM that would let the PIN be
 * guessed without limit (recovery interval 0).
 */
static keel_status_t tpm2_lockout_prepare(const keel_provision_opts_t *o, keel_provision_stats_t *stats)
{
    keel_status_t st = KEEL_OK;
    /* The keystore hands a configured TCTI to the provider through
     * $TPM2OPENSSL_TCTI; set it here, before the device threads start. */
    if (o->keystore.tcti != NULL && o->keystore.tcti[0] != '\0' && setenv("TPM2OPENSSL_TCTI", o->keystore.tcti, 1) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "tpm2: cannot set the TCTI");
    if (o->tpm2_lockout_tries > 0) {
        char auth[256] = "";
        size_t n = 0;
        if (o->tpm2_lockout_auth_file != NULL)
            st = keel_keystore_secret_read("tpm2: the lockout authorization", o->tpm2_lockout_auth_file, NULL,
                                           auth, sizeof auth, &n);
        if (st == KEEL_OK)
            st = keel_tpm2_lockout_set(o->keystore.tcti, auth, o->tpm2_lockout_tries, o->tpm2_lockout_recovery_s,
                                       o->tpm2_lockout_lockout_recovery_s);
        keel_wipe(auth, sizeof auth);
    }
    if (st == KEEL_OK)
        st = keel_tpm2_lockout_get(o->keystore.tcti, &stats->tpm2_lockout);
    if (st != KEEL_OK)
        return st;
    stats->have_tpm2_lockout = 1;
    if (stats->tpm2_lockout.recovery_s == 0 || stats->tpm2_lockout.max_tries == 0)
        return keel_errorf(KEEL_ERR_KEYSTORE,
                           "tpm2: the TPM's dictionary-attack protection is off (%u tries, recovery interval %u s): "
                           "the keys' PIN could be guessed without limit; set it with --tpm2-lockout "
                           "TRIES,RECOVERY_S,LOCKOUT_RECOVERY_S",
                           (unsigned)stats->tpm2_lockout.max_tries, (unsigned)stats->tpm2_lockout.recovery_s);
    return KEEL_OK;
}

keel_status_t keel_factory_provision(keel_factory_t *f, const keel_provision_opts_t *o,
                                     keel_provision_stats_t *stats)
{
    memset(stats, 0, sizeof *stats);
    keel_status_t st = check_opts(o);
    if (st != KEEL_OK)
        return st;
    prov_t p = {.f = f, .o = o};
    keel_buf_init(&p.chain_pem, 0);
    keel_buf_init(&p.release_pem, 0);
    keel_buf_init(&p.service_pem, 0);
    if ((st = keel_dir_make(o->out, 0700)) != KEEL_OK ||
        (st = keel_path_join(p.labels, sizeof p.labels, o->out, KEEL_BATCH_LABELS)) != KEEL_OK)
        return st;

    char lockpath[KEEL_PATH_MAX];
    if ((st = keel_path_join(lockpath, sizeof lockpath, o->out, ".lock")) != KEEL_OK)
        return st;
    int lock = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0)
        return keel_errorf(KEEL_ERR_IO, "open %s: %s", lockpath, strerror(errno));
    if (flock(lock, LOCK_EX | LOCK_NB) != 0) {
        close(lock);
        return keel_errorf(KEEL_ERR_EXISTS, "another provisioning run is using %s", o->out);
    }

    double t0 = keel_now();
    keel_buf_t issuing;
    if ((st = keel_pem_cert(keel_factory_issuing(f, KEEL_PKI_DEVICE), &issuing)) == KEEL_OK) {
        keel_buf_t root;
        if ((st = keel_pem_cert(keel_factory_root(f, KEEL_PKI_DEVICE), &root)) == KEEL_OK) {
            keel_buf_init(&p.chain_pem, 2 * DEVICE_FILE_MAX);
            if ((st = keel_buf_append(&p.chain_pem, issuing.data, issuing.len)) == KEEL_OK)
                st = keel_buf_append(&p.chain_pem, root.data, root.len);
            keel_buf_free(&root);
        }
        keel_buf_free(&issuing);
    }
    if (st == KEEL_OK)
        st = keel_pem_cert(keel_factory_root(f, KEEL_PKI_RELEASE), &p.release_pem);
    if (st == KEEL_OK)
        st = keel_pem_cert(keel_factory_root(f, KEEL_PKI_SERVICE), &p.service_pem);
    if (st == KEEL_OK && o->product != NULL)
        st = product_load(&p);
    if (st == KEEL_OK && !keystore_per_device(o))
        st = keel_keystore_open(&o->keystore, &p.shared_ks);
    if (st == KEEL_OK && is_tpm2_driver(o))
        st = tpm2_lockout_prepare(o, stats);
    if (st == KEEL_OK)
        st = recover(&p);
    for (unsigned i = 0; st == KEEL_OK && i < o->count; i++) {
        st = provision_one(&p, stats);
        if (o->progress != NULL)
            o->progress(o->progress_arg, stats->made, o->count);
    }
    /* The manifest reflects whatever devices exist, even after a failure. */
    if (stats->made > 0) {
        keel_status_t mst = write_manifest(&p);
        if (st == KEEL_OK)
            st = mst;
    }
    stats->total = keel_now() - t0;
    keel_keystore_close(p.shared_ks);
    keel_buf_free(&p.chain_pem);
    keel_buf_free(&p.release_pem);
    keel_buf_free(&p.service_pem);
    free(p.declaration);
    json_decref(p.settings);
    close(lock);
    return st;
}

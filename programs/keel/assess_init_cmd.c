/*
 * keel assess init: drafts the ICS and IXIT of a Keel device from its own
 * keeld.conf and data declaration, and checks such a pair (--check).
 *
 * What Keel implements is answered in the draft with our justification; what
 * only the manufacturer knows (publication URLs, hardware, processes) is left
 * as a placeholder, so the draft validates as a draft and a strict check
 * refuses it until every placeholder is filled.
 */
#include "cli.h"

#include "keel/assess.h"
#include "keel/device.h"
#include "keel/privacy.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char init_usage[] =
    "usage: keel assess init --config keeld.conf --out DIR [--force] [-o section.key=value ...] [--json]\n"
    "       keel assess init --check DIR [--strict] [--json]\n"
    "\n"
    "Drafts DIR/ics.json (which provisions of EN 303 645 the device supports,\n"
    "with a justification each) and DIR/ixit.json (its interfaces, authentication,\n"
    "update mechanism, security parameters, personal data, ...) for a Keel device\n"
    "from its configuration and data declaration. What Keel cannot know is left\n"
    "as a placeholder \"" KEEL_ASSESS_PLACEHOLDER "...\" for the manufacturer, and the files\n"
    "are marked \"status\": \"draft\". The schemas: docs/assess.md.\n"
    "\n"
    "options:\n"
    "  --config FILE   the device's keeld.conf\n"
    "  --out DIR       where to write ics.json and ixit.json (created if absent)\n"
    "  --force         replace existing files\n"
    "  -o S.K=V        override a keeld.conf setting, as keeld -o does\n"
    "  --check DIR     check DIR/ics.json and DIR/ixit.json instead, and list what is\n"
    "                  left to fill (exit 1 when invalid)\n"
    "  --strict        with --check: refuse drafts\n"
    "  --json          one JSON document on stdout\n";

#define CMD "assess init"
#define OVERRIDES_MAX 64
#define DEVICE_JSON_MAX (64u * 1024u)
#define PH KEEL_ASSESS_PLACEHOLDER

/* What Keel answers per provision: 'Y' supported (text = justification), 'F'
 * for the manufacturer (text = what to give). Conditional provisions whose
 * feature the product lacks become not_applicable whatever the entry says. */
typedef struct {
    const char *id;
    char answer;
    const char *text;
} keel_answer_t;

static const keel_answer_t answers[] = {
    {"5.0-1", 'Y', "This ICS states every provision; each recommended one not met carries a justification."},
    {"5.1-1", 'Y', "Each device gets its own random label password at the factory, which only allows setting a "
                   "new password; the owner must choose one at first login."},
    {"5.1-2", 'Y', "Label passwords come from the CSPRNG: 18 characters of a 31-symbol alphabet (89 bits), "
                   "unrelated to serial, id or model; keel factory audit checks every batch."},
    {"5.1-2A", 'Y', "The cloud link authenticates with the device certificate (mutual TLS); the product app is "
                    "identified by the kernel's peer credentials on the local socket."},
    {"5.1-3", 'Y', "Argon2id password hashes, login over TLS 1.2+ only, 256-bit session tokens stored hashed, "
                   "constant-time comparisons."},
    {"5.1-4", 'Y', "The API and the UI change the password; every session ends and the old password stops working."},
    {"5.1-5", 'Y', NULL}, /* from [auth] */
    {"5.2-1", 'F', "whether the disclosure policy and security.txt are published"},
    {"5.2-2", 'F', "how reported vulnerabilities are handled, and in what time"},
    {"5.2-3", 'F', "how the product's components (SBOM) are monitored for vulnerabilities"},
    {"5.3-1", 'Y', "The whole software image is updated as one signed A/B bundle."},
    {"5.3-2", 'Y', "Signed bundles are verified while they stream into the inactive slot; the device boots the new "
                   "slot and rolls back unless it is confirmed."},
    {"5.3-3", 'Y', "Updates install automatically, or with one action in the API or the UI."},
    {"5.3-4A", 'Y', "[update] automatic switches automatic installation on or off."},
    {"5.3-4B", 'Y', NULL}, /* from [update] automatic */
    {"5.3-5", 'F', "when the device looks for updates (Keel devices receive them from the fleet's campaigns)"},
    {"5.3-6A", 'Y', "The owner switches automatic updates on or off and postpones them ([update] automatic and "
                    "postpone_until); the update status shows the policy."},
    {"5.3-6B", 'Y', "[update] notifications switches update notifications on or off."},
    {"5.3-7", 'Y', "Bundles are signed with ECDSA P-256 over SHA-256; the algorithm id is part of the signed header."},
    {"5.3-8", 'F', "how quickly security fixes are released and reach devices"},
    {"5.3-9", 'Y', "Signature, chain to the release root with its CRL, model, security version and every chunk "
                   "digest are checked before any byte is used, and the slot again at boot."},
    {"5.3-10", 'Y', "Bundles must chain to the release CA root kept on the device; no other root is trusted for "
                    "updates."},
    {"5.3-11", 'Y', "Each manifest lists the security fixes and the risk they address; the API and UI show them."},
    {"5.3-12", 'Y', "The manifest marks a disruptive update and its downtime; the API and UI show them."},
    {"5.3-13", 'Y', "The end of the support period is in every signed manifest and shown by the device API and UI; "
                    "where it is published is in the IXIT."},
    {"5.3-14", 'Y', "The software can be updated."},
    {"5.3-15A", 'Y', "The software can be updated."},
    {"5.3-15B", 'Y', "The software can be updated."},
    {"5.3-16", 'Y', "The model is in every device certificate, the device information API, the unauthenticated "
                    "status and the UI."},
    {"5.4-1", 'Y', NULL}, /* from [keystore] driver */
    {"5.4-2", 'Y', NULL}, /* from [keystore] driver */
    {"5.4-3", 'Y', "No secret is in the software: keys, certificates and passwords are made per device at run "
                   "time, and a secret scan runs in the build."},
    {"5.4-4", 'Y', "Every device has its own key, identity and password; for updates and the cloud it holds only "
                   "public trust anchors."},
    {"5.5-1", 'Y', "The local API is HTTPS only (TLS 1.2 with ECDHE and AEAD, or TLS 1.3); the cloud link is MQTT "
                   "over mutual TLS with the service root pinned; there is no plaintext port."},
    {"5.5-2", 'Y', "Cryptography comes from OpenSSL 3 and libsodium, both widely reviewed."},
    {"5.5-3", 'Y', "Bundles carry algorithm ids; the update trust store is replaced by a signed trust bundle."},
    {"5.5-4", 'Y', "Every API route except a minimal status needs a session."},
    {"5.5-5", 'Y', "Security settings need a session, and the factory reset the password again."},
    {"5.5-6", 'Y', "Critical parameters travel only inside TLS."},
    {"5.5-7", 'Y', "Critical parameters travel only inside TLS and are never logged."},
    {"5.5-8", 'Y', "Three separate hierarchies (device, release, service); root keys offline and encrypted; "
                   "revocation by CRL; each device key generated for that device."},
    {"5.6-1", 'Y', NULL}, /* from [api] listen */
    {"5.6-2", 'Y', "No server or version headers and generic errors; the unauthenticated status tells only the "
                   "model and whether setup is needed."},
    {"5.6-3", 'F', "the physical interfaces of the hardware and why each is exposed"},
    {"5.6-4A", 'Y', "keeld has no debug route or listener; the hardware's debug interfaces are listed in the IXIT."},
    {"5.6-4B", 'F', "how the physical debug interfaces are protected"},
    {"5.6-5", 'F', "which services the product's operating system runs besides keeld, and why"},
    {"5.6-6", 'F', "how code the product does not need is left out of the image"},
    {"5.6-7", 'F', "the users and privileges keeld and the product app run with"},
    {"5.6-8", 'F', "the hardware memory protection of the platform"},
    {"5.6-9", 'F', "the product's secure development process"},
    {"5.7-1", 'Y', "keel boot verifies the chosen slot against its signed manifest before handing over."},
    {"5.7-2", 'Y', "A slot failing the boot check raises a tamper alert and the device falls back to the other "
                   "slot."},
    {"5.8-1", 'Y', "Personal data leaves the device only over the mutual-TLS cloud link, and is sealed at rest."},
    {"5.8-2", 'Y', "Sensitive personal data leaves the device only over the mutual-TLS cloud link, and is sealed at "
                   "rest."},
    {"5.8-3", 'Y', "The data declaration lists every sensing capability; the API and UI show it."},
    {"5.9-1", 'Y', "Telemetry and events are stored in the vault before they are acknowledged and sent when the "
                   "link returns; state is written atomically."},
    {"5.9-2", 'Y', "The local API and UI work without the network; a restart restores the state."},
    {"5.9-3", 'Y', "Reconnects use exponential backoff with full jitter, reset only after a stable connection."},
    {"5.10-1", 'F', "how the fleet examines telemetry for security anomalies"},
    {"5.11-1", 'Y', "The factory reset crypto-erases the vault: records, consent, settings and queued messages."},
    {"5.11-2", 'Y', "The factory reset sends an erase request to the fleet through the outbox."},
    {"5.11-3", 'Y', "The factory-reset page says what is erased on the device and what is asked of the cloud."},
    {"5.11-4", 'Y', "The reset answers with a receipt; the fleet's erase receipt is kept and shown."},
    {"5.12-1", 'Y', "A first-run wizard with secure defaults: the label password must be replaced before anything "
                    "else works."},
    {"5.12-2", 'Y', "The setup wizard includes a secure-setup guide."},
    {"5.12-3", 'Y', "A security-check page shows whether the password was changed, automatic updates are on, the "
                    "firmware is current and support continues."},
    {"5.13-1A", 'Y', "The UI uses the same strict API; every input is checked against its schema and size caps."},
    {"5.13-1B", 'Y', "Strict JSON (duplicates, unknown fields, wrong types, oversized values refused), capped "
                     "headers and bodies, fuzzed parsers."},
    {"6-1", 'Y', "The data declaration names each category, purpose, recipients, legal basis and retention; the "
                 "API and UI show it."},
    {"6-2", 'Y', "Consent is given per purpose with the declaration's version and the time."},
    {"6-3A", 'Y', "Consent is withdrawn in the UI or API and consent-gated telemetry stops at once."},
    {"6-3B", 'Y', "Every consent change is logged with its time and version."},
    {"6-4", 'Y', "Telemetry carries only declared fields; an undeclared field is refused."},
    {"6-5", 'Y', "Every telemetry field and why it is sent is in the data declaration shown to the user."},
    {"6-6", 'Y', "Every kept record is tagged with its category and deleted when its retention period ends."},
    {"6-7", 'F', "which personal data the services aggregate, and when"},
    {"6-8", 'F', "which personal data the services anonymise or pseudonymise"},
};

_Static_assert(sizeof answers / sizeof answers[0] == KEEL_ASSESS_PROVISIONS, "an answer per provision");

/* What the draft is made from. */
typedef struct {
    keel_config_t *cfg;
    json_t *decl;         /* data declaration, or NULL */
    char *manufacturer;   /* from device.json's org, or NULL */
    int api_port;
    int broker_port;      /* 0 without a cloud link */
    int pkcs11;
    int tpm2;
    int have[32];         /* per feature: 1, 0, -1 unknown */
} src_t;

static keel_status_t listen_port(const char *what, const char *addr, int *port)
{
    const char *colon = strrchr(addr, ':');
    unsigned long v = 0;
    if (colon == NULL || (strchr(addr, ']') != NULL && colon < strchr(addr, ']')) ||
        !cli_parse_uint(colon + 1, 1, 65535, &v))
        return keel_errorf(KEEL_ERR_CONFIG, "%s \"%s\" is not address:port", what, addr);
    *port = (int)v;
    return KEEL_OK;
}

static int decl_any(const json_t *decl, const char *array, const char *key, const char *equals)
{
    const json_t *arr = json_object_get(decl, array);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *v = json_object_get(json_array_get(arr, i), key);
        if (key == NULL || (equals == NULL ? json_is_true(v)
                                           : json_is_string(v) && strcmp(json_string_value(v), equals) == 0))
            return 1;
    }
    return 0;
}

static void set_feature(src_t *s, const char *id, int v)
{
    for (size_t i = 0; i < keel_assess_feature_count(); i++)
        if (strcmp(keel_assess_feature_at(i)->id, id) == 0)
            s->have[i] = v;
}

static int feature(const src_t *s, const char *id)
{
    for (size_t i = 0; i < keel_assess_feature_count(); i++)
        if (strcmp(keel_assess_feature_at(i)->id, id) == 0)
            return s->have[i];
    return -1;
}

static keel_status_t read_sources(const char *config, char **overrides, size_t n, src_t *s)
{
    keel_status_t st = keel_device_config_load(config, overrides, n, &s->cfg);
    if (st != KEEL_OK)
        return st;
    char path[KEEL_PATH_MAX];
    if (keel_config_path(s->cfg, "privacy", "declaration", path) == KEEL_OK &&
        keel_privacy_declaration_load(path, &s->decl) != KEEL_OK)
        return keel_errorf(KEEL_ERR_CONFIG, "[privacy] declaration: %s", keel_error_message());
    if ((st = listen_port("[api] listen", keel_config_str(s->cfg, "api", "listen"), &s->api_port)) != KEEL_OK)
        return st;
    const char *broker = keel_config_str(s->cfg, "link", "broker");
    if (broker != NULL && (st = listen_port("[link] broker", broker, &s->broker_port)) != KEEL_OK)
        return st;
    s->pkcs11 = strcmp(keel_config_str(s->cfg, "keystore", "driver"), "pkcs11") == 0;
    s->tpm2 = strcmp(keel_config_str(s->cfg, "keystore", "driver"), "tpm2") == 0;

    /* device.json (written by keel factory provision) names the manufacturer. */
    char state[KEEL_PATH_MAX], dj[KEEL_PATH_MAX];
    keel_buf_t b;
    keel_buf_init(&b, DEVICE_JSON_MAX);
    if (keel_config_path(s->cfg, "device", "state_dir", state) == KEEL_OK &&
        keel_path_join(dj, sizeof dj, state, "device.json") == KEEL_OK && keel_path_exists(dj) &&
        keel_file_read(dj, DEVICE_JSON_MAX, &b) == KEEL_OK) {
        json_t *d = json_loadb((const char *)b.data, b.len, JSON_REJECT_DUPLICATES, NULL);
        const char *org = json_string_value(json_object_get(d, "org"));
        if (org != NULL && org[0] != '\0' && strlen(org) <= 4 * KEEL_ASSESS_NAME_MAX)
            s->manufacturer = strdup(org);
        json_decref(d);
    }
    keel_buf_free(&b);
    keel_error_clear();

    for (size_t i = 0; i < keel_assess_feature_count(); i++)
        s->have[i] = 0;
    set_feature(s, "user_interface", 1);
    set_feature(s, "authentication", 1);
    set_feature(s, "passwords", 1);
    set_feature(s, "remote_access", 1);
    set_feature(s, "updates", 1);
    set_feature(s, "constrained", 0);
    set_feature(s, "debug_interface", -1); /* hardware: the manufacturer's to say */
    set_feature(s, "personal_data", decl_any(s->decl, "categories", "personal", NULL));
    set_feature(s, "sensitive_data", decl_any(s->decl, "categories", "sensitive", NULL));
    set_feature(s, "sensing", json_array_size(json_object_get(s->decl, "sensing")) > 0);
    set_feature(s, "consent", decl_any(s->decl, "categories", "legal_basis", "consent"));
    set_feature(s, "telemetry", json_array_size(json_object_get(s->decl, "telemetry")) > 0);
    set_feature(s, "cloud", broker != NULL);
    set_feature(s, "hardware_identity", 1);
    return KEEL_OK;
}

static json_t *placeholder(const char *what)
{
    char buf[KEEL_ASSESS_TEXT_MAX];
    snprintf(buf, sizeof buf, PH "%.1000s", what);
    return json_string(buf);
}

/* Fills the answers whose text depends on the configuration. */
static const char *answer_text(const src_t *s, const keel_answer_t *a, char *buf, size_t cap, int *yes)
{
    const keel_config_t *c = s->cfg;
    *yes = 1;
    if (strcmp(a->id, "5.1-5") == 0) {
        snprintf(buf, cap,
                 "Failures are throttled before any hashing: after %llu free failures a source waits %llu s, "
                 "doubling up to %llu s; failing sources share a budget of %llu hashes a minute; the state "
                 "survives restarts.",
                 (unsigned long long)keel_config_uint(c, "auth", "free_failures"),
                 (unsigned long long)keel_config_uint(c, "auth", "backoff_base"),
                 (unsigned long long)keel_config_uint(c, "auth", "backoff_max"),
                 (unsigned long long)keel_config_uint(c, "auth", "global_per_minute"));
    } else if (strcmp(a->id, "5.3-4B") == 0) {
        *yes = keel_config_bool(c, "update", "automatic");
        snprintf(buf, cap, *yes ? "Automatic updates are on in this device's configuration ([update] automatic)."
                                : "the reason automatic updates are off by default ([update] automatic = false)");
    } else if (strcmp(a->id, "5.4-1") == 0) {
        snprintf(buf, cap, "%s Secrets and personal data are sealed field by field (AEAD) in the vault.",
                 s->pkcs11 ? "The identity key is generated on a PKCS#11 token and never leaves it."
                 : s->tpm2 ? "The identity key is generated inside the TPM 2.0 and never leaves it; the vault's "
                             "data key is sealed to the same TPM."
                           : "The identity key is sealed with AES-256-GCM under a key-encryption key from the "
                             "platform.");
    } else if (strcmp(a->id, "5.4-2") == 0) {
        *yes = s->pkcs11 || s->tpm2;
        snprintf(buf, cap, s->pkcs11 ? "The identity key is generated on the PKCS#11 token, sensitive and never "
                                       "extractable, usable only to sign."
                           : s->tpm2 ? "The identity key is generated inside the TPM 2.0 (fixedTPM, fixedParent, "
                                       "sensitiveDataOrigin) and kept as a blob only that TPM can load; its "
                                       "authorization value is guarded by the TPM's dictionary-attack lockout."
                                     : "how the platform protects the key-encryption key of the file keystore "
                                       "against tampering");
    } else if (strcmp(a->id, "5.6-1") == 0) {
        snprintf(buf, cap,
                 "keeld opens one network listener, HTTPS on %s, and the product app's local socket; no debug "
                 "or plaintext listener.",
                 keel_config_str(c, "api", "listen"));
    } else {
        *yes = a->answer == 'Y';
        snprintf(buf, cap, "%s", a->text);
    }
    return buf;
}

static json_t *draft_ics(const src_t *s)
{
    json_t *features = json_object(), *provisions = json_object();
    int ok = features != NULL && provisions != NULL;
    for (size_t i = 0; i < keel_assess_feature_count(); i++) {
        const keel_assess_feature_t *f = keel_assess_feature_at(i);
        char what[KEEL_ASSESS_TEXT_MAX];
        snprintf(what, sizeof what, "true or false: %.1000s", f->what);
        ok &= json_object_set_new(features, f->id, s->have[i] < 0 ? placeholder(what) : json_boolean(s->have[i])) == 0;
    }
    for (size_t i = 0; i < keel_assess_catalogue_count(); i++) {
        const keel_assess_provision_t *p = keel_assess_catalogue_at(i);
        const keel_answer_t *a = &answers[i];
        char text[KEEL_ASSESS_TEXT_MAX], ph[KEEL_ASSESS_TEXT_MAX];
        int yes, f = p->feature != NULL ? feature(s, p->feature) : 1;
        json_t *e;
        answer_text(s, a, text, sizeof text, &yes);
        if (f == 0) {
            const keel_assess_feature_t *ft = keel_assess_feature_find(p->feature);
            snprintf(text, sizeof text, "Not applicable: the product does not meet its condition (%.1000s).", ft->what);
            e = json_pack("{s:s, s:s, s:s}", "support", "not_applicable", "missing_feature", p->feature,
                          "justification", text);
        } else if (f < 0) {
            snprintf(ph, sizeof ph, "yes, no or not_applicable, once $.features.%s is known", p->feature);
            e = json_pack("{s:o}", "support", placeholder(ph));
        } else if (yes) {
            e = json_pack("{s:s, s:s}", "support", "yes", "justification", text);
        } else if (strcmp(a->id, "5.3-4B") != 0) {
            snprintf(ph, sizeof ph, "yes or no; justify it with %.1000s", text);
            e = json_pack("{s:o}", "support", placeholder(ph));
        } else {
            e = json_pack("{s:s, s:o}", "support", "no", "justification", placeholder(text));
        }
        ok &= json_object_set_new(provisions, p->id, e) == 0;
    }
    if (!ok) {
        json_decref(features);
        json_decref(provisions);
        return NULL;
    }
    return json_pack("{s:s, s:s, s:{s:o, s:s}, s:o, s:o}", "format", "keel-ics-1", "status", "draft", "product",
                     "manufacturer",
                     s->manufacturer ? json_string(s->manufacturer) : placeholder("the manufacturer's name"),
                     "model", keel_config_str(s->cfg, "device", "model"), "features", features, "provisions",
                     provisions);
}


/* How a lab speaks keeld's API (docs/api.md): the same for every Keel device. */
static json_t *keeld_http(void)
{
    static const char text[] =
        "{\"login\": {\"kind\": \"json\", \"path\": \"/api/v1/session\", \"user_field\": \"username\","
        " \"password_field\": \"password\"},"
        " \"password_change\": {\"kind\": \"json\", \"path\": \"/api/v1/password\","
        " \"current_field\": \"current\", \"new_field\": \"new\"},"
        " \"routes\": ["
        "{\"method\": \"GET\", \"path\": \"/api/v1/status\", \"authentication\": false},"
        "{\"method\": \"GET\", \"path\": \"/api/v1/device\", \"authentication\": true},"
        "{\"method\": \"GET\", \"path\": \"/api/v1/settings\", \"authentication\": true,"
        " \"security_relevant\": true},"
        "{\"method\": \"PUT\", \"path\": \"/api/v1/settings\", \"authentication\": true,"
        " \"security_relevant\": true},"
        "{\"method\": \"GET\", \"path\": \"/api/v1/update\", \"authentication\": true,"
        " \"security_relevant\": true},"
        "{\"method\": \"POST\", \"path\": \"/api/v1/update/stage\", \"authentication\": true,"
        " \"security_relevant\": true},"
        "{\"method\": \"GET\", \"path\": \"/api/v1/link\", \"authentication\": true},"
        "{\"method\": \"GET\", \"path\": \"/api/v1/privacy\", \"authentication\": true},"
        "{\"method\": \"GET\", \"path\": \"/api/v1/privacy/export\", \"authentication\": true},"
        "{\"method\": \"POST\", \"path\": \"/api/v1/factory-reset\", \"authentication\": true,"
        " \"security_relevant\": true}"
        "]}";
    return json_loads(text, JSON_REJECT_DUPLICATES, NULL);
}

static json_t *draft_ixit(const src_t *s)
{
    const keel_config_t *c = s->cfg;
    char sock[KEEL_PATH_MAX] = "keeld.sock", bf[KEEL_ASSESS_TEXT_MAX];
    if (keel_config_path(c, "ipc", "socket", sock) != KEEL_OK)
        keel_error_clear();
    const char *broker = keel_config_str(c, "link", "broker");
    snprintf(bf, sizeof bf,
             "After %llu failures a source waits %llu s, doubling up to %llu s; failing sources share %llu hashes a "
             "minute; answered with 429 and Retry-After.",
             (unsigned long long)keel_config_uint(c, "auth", "free_failures"),
             (unsigned long long)keel_config_uint(c, "auth", "backoff_base"),
             (unsigned long long)keel_config_uint(c, "auth", "backoff_max"),
             (unsigned long long)keel_config_uint(c, "auth", "global_per_minute"));

    json_t *auth = json_pack(
        "[{s:s, s:s, s:s, s:s, s:s, s:{s:s, s:s}}, {s:s, s:s, s:s}, {s:s, s:s, s:s}]", "name", "admin-password",
        "kind", "password", "description",
        "The label password, unique per device, only allows setting a new password; the owner's password then "
        "logs in as user admin.",
        "password_setting", "unique_per_device", "brute_force_protection", bf, "lab_credentials", "user", "admin",
        "password_env", "KEEL_ASSESS_PASSWORD", "name", "session-token", "kind", "token", "description",
        "A 256-bit token from login, as a bearer token or a cookie with a CSRF token; only its SHA-256 is kept.",
        "name", "peer-credentials", "kind", "peer_credentials", "description",
        "The kernel's peer credentials on the app socket: keeld's user and the [ipc] user and group only.");
    json_t *ifaces = json_pack(
        "[{s:s, s:s, s:s, s:s, s:s, s:i, s:b, s:[s,s], s:b, s:s, s:o}, {s:s, s:s, s:s, s:s, s:s, s:b, s:[s], s:b, s:s}]",
        "name", "local-api", "protocol", "https", "transport", "tcp", "role", "server", "address",
        keel_config_str(c, "api", "listen"), "port", s->api_port, "tls", 1, "authentication", "admin-password",
        "session-token", "enabled_by_default", 1, "purpose",
        "Local HTTPS API and setup UI: device information, password, updates, privacy, factory reset.", "http",
        keeld_http(), "name", "app-socket", "protocol", "keel-ipc", "transport", "unix", "role", "server", "address", sock, "tls", 0,
        "authentication", "peer-credentials", "enabled_by_default", 1, "purpose",
        "Local socket of the product's own app: telemetry, events and commands.");
    json_t *params = json_pack(
        "[{s:s, s:s, s:s}, {s:s, s:s, s:s}, {s:s, s:s, s:s}, {s:s, s:s, s:s}, {s:s, s:s, s:s}]", "name",
        "device identity key", "storage",
        s->pkcs11 ? "PKCS#11 token named in [keystore]"
        : s->tpm2 ? "TPM 2.0 key blob in the [keystore] directory (loads only in this device's TPM)"
                  : "sealed file in the [keystore] directory",
        "protection",
        s->pkcs11 ? "generated on the token, sensitive, not extractable, sign only"
        : s->tpm2 ? "generated in the TPM (fixedTPM, fixedParent, sensitiveDataOrigin), authorization value under "
                    "the TPM's dictionary-attack lockout"
                  : "AES-256-GCM under the key-encryption key ([keystore] kek_file) from the platform",
        "name", "label password hash", "storage", "identity/label.hash", "protection",
        "Argon2id hash only; the password itself is on the device's label", "name", "owner password and sessions",
        "storage", "vault", "protection", "Argon2id hash and SHA-256 of each session token, sealed in the vault",
        "name", "vault data key", "storage", "vault, wrapped by the keystore", "protection",
        "never stored in clear; destroyed by a factory reset", "name", "trust anchors", "storage",
        "trust/release-root.pem and trust/service-root.pem", "protection",
        "public keys only; the release root is replaced only by a signed trust bundle");
    if (auth == NULL || ifaces == NULL || params == NULL)
        goto fail;
    int ok = 1;
    if (broker != NULL) {
        ok &= json_array_append_new(auth, json_pack("{s:s, s:s, s:s}", "name", "device-certificate", "kind", "certificate",
                                              "description",
                                              "The device's own key and certificate from the device CA (mutual "
                                              "TLS); the broker's name and service root are checked.")) == 0;
        ok &= json_array_append_new(ifaces, json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:b, s:[s], s:b, s:s}", "name",
                                                "cloud-link", "protocol", "mqtt", "transport", "tcp", "role", "client",
                                                "address", broker, "port", s->broker_port, "tls", 1,
                                                "authentication", "device-certificate", "enabled_by_default", 1,
                                                "purpose", "MQTT v5 link to the manufacturer's broker (telemetry, "
                                                           "events, commands, erase requests).")) == 0;
    }
    ok &= json_array_append_new(ifaces, placeholder("any other interface of the product, physical ones included (USB, "
                                              "serial console, radios, buttons): one object each")) == 0;
    if (!s->pkcs11 && !s->tpm2)
        ok &= json_array_append_new(params, json_pack("{s:s, s:s, s:o}", "name", "key-encryption key", "storage",
                                                "[keystore] kek_file, from the platform", "protection",
                                                placeholder("how the platform protects the key-encryption key"))) == 0;
    if (!ok)
        goto fail;
    return json_pack(
        "{s:s, s:s, s:{s:o, s:s, s:o, s:{s:o, s:o}}, s:o, s:o, s:{s:s, s:s, s:{s:s}, s:{s:o, s:o, s:o, s:o}}, s:o,"
        " s:{s:o, s:o}, s:o, s:[{s:s, s:i}], s:o, s:{s:s, s:s, s:s}}",
        "format", "keel-ixit-1", "status", "draft", "product", "manufacturer",
        s->manufacturer ? json_string(s->manufacturer) : placeholder("the manufacturer's name"), "model",
        keel_config_str(c, "device", "model"), "firmware_version", placeholder("the firmware version under test"),
        "support_period", "end", placeholder("the last day of the support period, YYYY-MM-DD"), "published_at",
        placeholder("the URL or file where the support period is published"), "interfaces", ifaces,
        "authentication", auth, "update", "interface", "local-api", "authentication",
        "Bundles must be signed by an update signer of the release CA (ECDSA P-256 / SHA-256) and match the "
        "model and security version; uploading one needs an administrator session.",
        "upload", "kind", "keel-api-v1", "test_bundles", "good", placeholder("path of a correctly signed bundle for this model (keel bundle create)"),
        "tampered", placeholder("path of that bundle with a byte changed"), "downgraded",
        placeholder("path of a correctly signed bundle with a lower security version"), "wrong_signer",
        placeholder("path of a bundle signed by a key outside the release CA"), "security_parameters", params,
        "disclosure", "security_txt", placeholder("the URL or file of security.txt"),
        "policy", placeholder("the URL or file of the vulnerability disclosure policy"), "personal_data",
        s->decl != NULL ? json_pack("{s:O}", "declaration", s->decl) : json_null(), "expected_open_ports",
        "transport", "tcp", "port", s->api_port, "debug_interfaces",
        placeholder("the hardware's debug interfaces (UART, JTAG, SWD, ...): name, kind, state, protection"),
        "factory_reset", "procedure",
        "POST /api/v1/factory-reset with the password, or the factory-reset page of the UI.", "erases",
        "The vault is crypto-erased (records, consent, settings, queued messages, the owner's password); the "
        "identity and anti-rollback counters stay; the fleet is asked to erase its copy.",
        "interface", "local-api");
fail:
    json_decref(auth);
    json_decref(ifaces);
    json_decref(params);
    return NULL;
}

static void print_placeholders(const char *file, const json_t *ph)
{
    size_t i;
    const json_t *e;
    json_array_foreach(ph, i, e) {
        printf("  %s %s\n", file, json_string_value(json_object_get(e, "path")));
        cli_print_text("", json_string_value(json_object_get(e, "what")));
    }
}

static int check_dir(const char *dir, unsigned flags, int json)
{
    char ics_path[KEEL_PATH_MAX], ixit_path[KEEL_PATH_MAX];
    json_t *ics = NULL, *ixit = NULL, *ph1 = NULL, *ph2 = NULL;
    keel_status_t st = keel_path_join(ics_path, sizeof ics_path, dir, "ics.json");
    if (st == KEEL_OK)
        st = keel_path_join(ixit_path, sizeof ixit_path, dir, "ixit.json");
    if (st == KEEL_OK)
        st = keel_assess_ics_load(ics_path, flags, &ics, &ph1);
    if (st == KEEL_OK)
        st = keel_assess_ixit_load(ixit_path, flags, &ixit, &ph2);
    if (st == KEEL_OK)
        st = keel_assess_cross_check(ics, ixit);
    int rc = CLI_OK;
    if (st != KEEL_OK) {
        fprintf(stderr, "keel: " CMD ": %s\n", keel_error_message());
        rc = CLI_FAILED;
    } else if (json) {
        json_t *j = json_pack("{s:s, s:s, s:b, s:{s:O, s:O}}", "ics", ics_path, "ixit", ixit_path, "draft",
                              json_array_size(ph1) + json_array_size(ph2) > 0 ||
                                  strcmp(json_string_value(json_object_get(ics, "status")), "draft") == 0 ||
                                  strcmp(json_string_value(json_object_get(ixit, "status")), "draft") == 0,
                              "to_fill", "ics", ph1, "ixit", ph2);
        rc = cli_print_json(j);
        json_decref(j);
    } else {
        size_t n = json_array_size(ph1) + json_array_size(ph2);
        printf("%s and %s are valid%s\n", ics_path, ixit_path, n ? " as drafts" : "");
        if (n) {
            printf("%zu value%s to be filled by the manufacturer:\n", n, n == 1 ? "" : "s");
            print_placeholders("ics.json", ph1);
            print_placeholders("ixit.json", ph2);
        }
    }
    json_decref(ics);
    json_decref(ixit);
    json_decref(ph1);
    json_decref(ph2);
    return rc;
}

static keel_status_t write_doc(const char *path, const json_t *doc, int force)
{
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (text == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps leaves room for its NUL: we write len + 1 bytes, never read past them */
    keel_status_t st = force ? keel_file_write_atomic(path, text, len + 1, 0644)
                             : keel_file_create_atomic(path, text, len + 1, 0644);
    free(text);
    if (st == KEEL_ERR_EXISTS)
        return keel_errorf(st, "%s exists (use --force to replace it)", path);
    return st;
}

static int draft(const char *config, char **ov, size_t nov, const char *out, int force, int json)
{
    src_t s = {0};
    json_t *ics = NULL, *ixit = NULL, *ph1 = NULL, *ph2 = NULL;
    char ics_path[KEEL_PATH_MAX], ixit_path[KEEL_PATH_MAX];
    int rc = CLI_FAILED;
    keel_status_t st = read_sources(config, ov, nov, &s);
    if (st != KEEL_OK) {
        rc = cli_fail(CMD, st == KEEL_ERR_CONFIG || st == KEEL_ERR_FORMAT ? KEEL_ERR_CONFIG : st);
        goto done;
    }
    if ((ics = draft_ics(&s)) == NULL || (ixit = draft_ixit(&s)) == NULL) {
        fprintf(stderr, "keel: " CMD ": could not build the documents\n");
        goto done;
    }
    /* The draft must pass the same checks a lab's copy will. */
    if (keel_assess_ics_check(ics, 0, &ph1) != KEEL_OK || keel_assess_ixit_check(ixit, out, 0, &ph2) != KEEL_OK ||
        keel_assess_cross_check(ics, ixit) != KEEL_OK) {
        fprintf(stderr, "keel: " CMD ": the draft does not validate: %s\n", keel_error_message());
        goto done;
    }
    if (mkdir(out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "keel: " CMD ": %s: %s\n", out, strerror(errno));
        goto done;
    }
    if (keel_path_join(ics_path, sizeof ics_path, out, "ics.json") != KEEL_OK ||
        keel_path_join(ixit_path, sizeof ixit_path, out, "ixit.json") != KEEL_OK) {
        rc = cli_fail(CMD, KEEL_ERR_ARG);
        goto done;
    }
    /* Refuse before writing either file, so a refusal changes nothing. */
    if (!force && (keel_path_exists(ics_path) || keel_path_exists(ixit_path))) {
        fprintf(stderr, "keel: " CMD ": %s already holds ics.json or ixit.json (use --force to replace them)\n", out);
        goto done;
    }
    if ((st = write_doc(ics_path, ics, force)) != KEEL_OK || (st = write_doc(ixit_path, ixit, force)) != KEEL_OK) {
        rc = cli_fail(CMD, st);
        goto done;
    }
    size_t n = json_array_size(ph1) + json_array_size(ph2);
    if (json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:{s:O, s:O}}", "ics", ics_path, "ixit", ixit_path, "status", "draft",
                              "to_fill", "ics", ph1, "ixit", ph2);
        rc = cli_print_json(j);
        json_decref(j);
    } else {
        printf("drafted %s and %s\n%zu value%s to be filled by the manufacturer:\n", ics_path, ixit_path, n,
               n == 1 ? "" : "s");
        print_placeholders("ics.json", ph1);
        print_placeholders("ixit.json", ph2);
        printf("then set \"status\": \"final\" in both and check with 'keel assess init --check %s --strict'\n", out);
        rc = CLI_OK;
    }
done:
    json_decref(ics);
    json_decref(ixit);
    json_decref(ph1);
    json_decref(ph2);
    json_decref(s.decl);
    free(s.manufacturer);
    keel_config_free(s.cfg);
    return rc;
}

int assess_init_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"out", required_argument, NULL, 'O'},
        {"force", no_argument, NULL, 'f'},        {"check", required_argument, NULL, 'k'},
        {"strict", no_argument, NULL, 's'},       {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    const char *config = NULL, *out = NULL, *check = NULL;
    char *ov[OVERRIDES_MAX];
    size_t nov = 0;
    int force = 0, strict = 0, json = 0, c;
    while ((c = getopt_long(argc, argv, ":o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 'O': out = optarg; break;
        case 'f': force = 1; break;
        case 'k': check = optarg; break;
        case 's': strict = 1; break;
        case 'j': json = 1; break;
        case 'h': fputs(init_usage, stdout); return CLI_OK;
        case 'o':
            if (nov == OVERRIDES_MAX)
                return cli_usage(CMD, "at most %d -o options", OVERRIDES_MAX);
            ov[nov++] = optarg;
            break;
        default: return cli_bad_option(CMD, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage(CMD, "unexpected argument '%s'", argv[optind]);
    if (check != NULL) {
        if (config != NULL || out != NULL || force || nov > 0)
            return cli_usage(CMD, "--check takes only --strict and --json");
        return check_dir(check, strict ? KEEL_ASSESS_STRICT : 0, json);
    }
    if (strict)
        return cli_usage(CMD, "--strict goes with --check");
    if (config == NULL || out == NULL)
        return cli_usage(CMD, "--config and --out are required");
    return draft(config, ov, nov, out, force, json);
}

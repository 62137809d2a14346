/*
 * keel/factory.h - the factory line's side of Keel (not linked into devices):
 * the manufacturer PKI, per-device provisioning and the batch audit.
 *
 * A factory directory holds three separate hierarchies, each a root CA and an
 * issuing CA, ECDSA P-256 / SHA-256:
 *   device-ca/   issues one identity certificate per device
 *   release-ca/  issues update-signer certificates (devices trust its root for updates)
 *   service-ca/  issues broker and fleet server certificates (devices pin its root)
 * Each has root.crt, root.key (optionally passphrase-encrypted PKCS#8),
 * issuing.crt, issuing.key (0600) and chain.pem (issuing then root).
 * factory.json is written last and marks a complete factory.
 */
#ifndef KEEL_FACTORY_H
#define KEEL_FACTORY_H

#include "keel/base.h"
#include "keel/crypto.h"
#include "keel/keystore.h"

#include <jansson.h>
#include <openssl/types.h>

/* "<org> Release Issuing CA" must fit a 64-character common name. */
#define KEEL_ORG_MAX 45
#define KEEL_PASSPHRASE_MAX 1024
#define KEEL_PROVISION_MAX_COUNT 1000000u

typedef enum { KEEL_PKI_DEVICE, KEEL_PKI_RELEASE, KEEL_PKI_SERVICE, KEEL_PKI_COUNT } keel_pki_t;
const char *keel_pki_dirname(keel_pki_t which);

typedef struct keel_factory keel_factory_t;

/* Creates the three PKIs in `dir` (created 0700 if missing), building them
 * in a staging directory first. Refuses a directory that already holds a
 * factory, or CA directories without factory.json. With a passphrase, the
 * root keys and the release and service issuing keys are encrypted (PKCS#8,
 * PBKDF2-HMAC-SHA256 600000 iterations, AES-256); the device issuing key is
 * not, because the factory line uses it unattended. All keys are 0600. */
keel_status_t keel_factory_init(const char *dir, const char *org, const char *passphrase,
                                size_t passlen) KEEL_MUST_CHECK;

/*
 * Loads a factory: all CA certificates, and only the issuing keys named in
 * `need` (KEEL_PKI_MASK(KEEL_PKI_DEVICE) | ...). `pass` opens the encrypted
 * release and service issuing keys; KEEL_ERR_CONFIG when one is needed and
 * missing, KEEL_ERR_VERIFY when it is wrong. Root keys are never loaded.
 */
#define KEEL_PKI_MASK(which) (1u << (which))
keel_status_t keel_factory_load(const char *dir, unsigned need, const char *pass,
                                keel_factory_t **out) KEEL_MUST_CHECK;
void keel_factory_free(keel_factory_t *f);
const char *keel_factory_org(const keel_factory_t *f);
X509 *keel_factory_root(const keel_factory_t *f, keel_pki_t which);
X509 *keel_factory_issuing(const keel_factory_t *f, keel_pki_t which);
EVP_PKEY *keel_factory_issuing_key(const keel_factory_t *f, keel_pki_t which);

/* Issues a device identity certificate for `pub` from the device issuing CA. */
keel_status_t keel_factory_issue_device(keel_factory_t *f, EVP_PKEY *pub, const char *device_id,
                                        const char *model, const char *serial, X509 **out) KEEL_MUST_CHECK;
/* Issues a TLS server certificate (SAN = name, DNS or IP) from the service
 * issuing CA into outdir: server.key (0600), server.crt, chain.pem, ca.pem. */
keel_status_t keel_factory_issue_server(keel_factory_t *f, const char *name, const char *outdir) KEEL_MUST_CHECK;

/* Issues a TLS client certificate from the service issuing CA, for a service
 * that connects to the broker as itself (keel-fleetd): CN = name, clientAuth
 * only, digitalSignature (critical), CA:FALSE, valid 397 days like server
 * certificates. The broker takes the CN as the user name its ACL sees, so
 * name is 1..KEEL_CLIENT_NAME_MAX characters of [A-Za-z0-9._-] and never a
 * well-formed device id (it would get that device's topics). Writes into
 * outdir (made 0700), parallel to keel_factory_issue_server: client.key
 * (0600), client.crt, chain.pem (client, then the service issuing CA) and
 * ca.pem (the service root, which the broker's certificate chains to). Needs
 * the service issuing key. KEEL_ERR_ARG for a bad name or a missing key. */
#define KEEL_CLIENT_NAME_MAX 64
keel_status_t keel_factory_issue_client(keel_factory_t *f, const char *name, const char *outdir) KEEL_MUST_CHECK;

/*
 * A certificate revocation list (v2) signed by the issuing CA `which`:
 * lastUpdate = now, nextUpdate = now + days (1..KEEL_CRL_MAX_DAYS), one entry
 * per serial (revocation date = now, no reason code) sorted by serial,
 * authorityKeyIdentifier, and a cRLNumber one above the last one this CA
 * issued, kept in <factory>/<ca>/crlnumber (decimal; written atomically,
 * under an flock on <ca>/.crl.lock, before the CRL is returned, so a number
 * is never used twice). serials_hex: n (0..KEEL_CRL_MAX_ENTRIES) serials as
 * hex digits (no prefix, either case) of at most 20 bytes; a malformed or
 * repeated serial is KEEL_ERR_ARG. pem_out is initialised here (free it on
 * every path). Needs that CA's issuing key (KEEL_ERR_ARG without it).
 *
 * A relying party that checks CRLs (mosquitto's crlfile, OpenSSL's
 * X509_V_FLAG_CRL_CHECK) refuses every certificate of this CA once
 * nextUpdate has passed: issue the next CRL well before that.
 */
#define KEEL_CRL_MAX_ENTRIES 1000000u
#define KEEL_CRL_MAX_DAYS 3650u
#define KEEL_CRL_SERIAL_MAX_BYTES 20
keel_status_t keel_factory_crl(keel_factory_t *f, keel_pki_t which, const char *const *serials_hex, size_t n,
                               int64_t now, unsigned days, keel_buf_t *pem_out) KEEL_MUST_CHECK;
/* keel_factory_crl for the device CA (the factory loaded with the device key). */
keel_status_t keel_factory_device_crl(keel_factory_t *f, const char *const *serials_hex, size_t n, int64_t now,
                                      unsigned days, keel_buf_t *pem_out) KEEL_MUST_CHECK;

/* Issues an update-signer certificate from the release issuing CA: CN = name
 * (1..KEEL_SIGNER_NAME_MAX printable characters), codeSigning,
 * digitalSignature (critical), CA:FALSE, valid KEEL_SIGNER_DAYS. Writes into
 * outdir (made 0700): signer.key (0600; refuses to replace an existing one),
 * signer.crt and chain.pem (signer, then the release issuing CA). Needs the
 * release issuing key (keel_factory_load with KEEL_PKI_MASK(KEEL_PKI_RELEASE)). */
#define KEEL_SIGNER_NAME_MAX 64
#define KEEL_SIGNER_DAYS (2 * 365)
keel_status_t keel_factory_issue_signer(keel_factory_t *f, const char *name, const char *outdir) KEEL_MUST_CHECK;

/* PEM helpers shared by the factory commands. */
keel_status_t keel_pem_cert(X509 *cert, keel_buf_t *out) KEEL_MUST_CHECK;
keel_status_t keel_pem_load_cert(const char *path, X509 **out) KEEL_MUST_CHECK;

/*
 * A TPM's dictionary-attack (DA) settings: after max_tries wrong
 * authorization values the TPM refuses every DA-protected key (the tpm2
 * keystore's included) until failures are forgiven, one per recovery_s
 * (0: the protection is off), or the lockout hierarchy clears it (after a
 * wrong lockout authorization, it waits lockout_recovery_s).
 */
typedef struct {
    uint32_t max_tries;
    uint32_t recovery_s;
    uint32_t lockout_recovery_s;
    uint32_t failures; /* counted now */
    int in_lockout;
} keel_tpm2_lockout_t;

/* tcti NULL: $TPM2OPENSSL_TCTI, else the TSS default search. */
keel_status_t keel_tpm2_lockout_get(const char *tcti, keel_tpm2_lockout_t *out) KEEL_MUST_CHECK;
/* Needs the lockout hierarchy's authorization (NULL: empty, as on a fresh TPM). */
keel_status_t keel_tpm2_lockout_set(const char *tcti, const char *lockout_auth, uint32_t max_tries,
                                    uint32_t recovery_s, uint32_t lockout_recovery_s) KEEL_MUST_CHECK;

/* Per-phase timings of a provisioning run, in seconds (for `make bench`). */
typedef struct {
    unsigned made;
    double total;
    double keygen;
    double cert;
    double hash;
    int have_tpm2_lockout;          /* tpm2 keystore: the TPM's DA settings, as provisioning left them */
    keel_tpm2_lockout_t tpm2_lockout;
} keel_provision_stats_t;

typedef struct {
    const char *out;                 /* batch directory */
    const char *model;
    unsigned count;
    keel_keystore_config_t keystore; /* driver "file" or "tpm2" (per-device dir), or "pkcs11" */
    /* tpm2: DA settings to apply to the TPM before the first key (tries 0:
     * leave them as they are); the lockout authorization is the first line
     * of lockout_auth_file (NULL: empty). Provisioning refuses a TPM whose
     * DA protection is off. */
    uint32_t tpm2_lockout_tries;
    uint32_t tpm2_lockout_recovery_s;
    uint32_t tpm2_lockout_lockout_recovery_s;
    const char *tpm2_lockout_auth_file;
    keel_argon2_params_t argon2;
    /* A product file (NULL: none), {"format":"keel-product-1","model"?,
     * "declaration":{...},"settings"?:{"section.key":value}}: the declaration
     * (docs/privacy.md) goes to each device as declaration.json and the
     * settings into its keeld.conf. Checked before the first device is made
     * (KEEL_ERR_CONFIG naming the file and the JSON path). */
    const char *product;
    void (*progress)(void *arg, unsigned done, unsigned total);
    void *progress_arg;
} keel_provision_opts_t;

/*
 * Provisions `count` devices into opts->out. Each device is built in a
 * staging directory and committed with one rename, after its label line is
 * on disk; half-made devices and orphaned label lines from an interrupted
 * earlier run are cleaned up first. manifest.json is rewritten at the end
 * from the complete devices.
 */
keel_status_t keel_factory_provision(keel_factory_t *f, const keel_provision_opts_t *opts,
                                     keel_provision_stats_t *stats) KEEL_MUST_CHECK;

/* Files of a batch directory. */
#define KEEL_BATCH_LABELS "labels.csv"
#define KEEL_BATCH_MANIFEST "manifest.json"
#define KEEL_LABELS_HEADER "device_id,serial,model,password,cert_sha256\n"

typedef struct {
    const char *out;          /* batch directory */
    const char *common_list;  /* common-password list (one per line) */
    unsigned verify_hashes;   /* label hashes to check against labels (0 = none) */
} keel_audit_opts_t;

/*
 * Audits a batch for 5.1-2. *report receives a JSON object:
 * {"devices":N, "checks":[{"id","title","findings"}], "findings":[{"check",
 * "device","detail"}], "entropy_bits":{"min","mean"}, "pass":bool}. Returns
 * KEEL_OK when the audit ran (pass or not); findings are counted in
 * *findings. Passwords never appear in the report.
 */
keel_status_t keel_factory_audit(const keel_audit_opts_t *opts, json_t **report,
                                 unsigned *findings) KEEL_MUST_CHECK;

/* One label of any vendor's batch; NULL or "" for a field it does not have. */
typedef struct {
    const char *id, *serial, *mac, *model, *password;
} keel_label_t;

/*
 * The label checks of keel_factory_audit (labels-format, unique-passwords,
 * unique-ids, entropy, not-common, no-relation, no-pattern) over labels held
 * by the caller, without a batch directory: `keel assess passwords`. Same
 * report shape without "devices" and "hashes_verified"; a label with a field
 * of 128 characters or more is a labels-format finding and is left out.
 * The caller keeps and wipes the passwords; none reaches the report.
 */
keel_status_t keel_factory_audit_labels(const keel_label_t *labels, size_t n, const char *common_list,
                                        json_t **report, unsigned *findings) KEEL_MUST_CHECK;

#endif

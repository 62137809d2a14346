/*
 * keel/update.h - signed update bundles and the device's A/B slots
 * (EN 303 645 5.3, 5.7). Format: docs/bundle-format.md.
 *
 * A bundle is a fixed header, a JSON manifest, an ECDSA P-256/SHA-256
 * signature over header || manifest || chain, the signer's certificate chain
 * (DER, signer first), then the payload. The reader verifies the signature and
 * the chain (to the release root, honouring its CRL) before it returns a
 * single payload byte, and hands the payload out chunk by chunk, each chunk
 * checked against its digest in the manifest before the caller sees it.
 */
#ifndef KEEL_UPDATE_H
#define KEEL_UPDATE_H

#include "keel/base.h"
#include "keel/config.h"
#include "keel/crypto.h"

#include <openssl/types.h>
#include <stdbool.h>

/* ---- the bundle --------------------------------------------------------- */

#define KEEL_BUNDLE_MAGIC "KEELBNDL"
#define KEEL_BUNDLE_VERSION 1
#define KEEL_BUNDLE_HEADER_LEN 64
#define KEEL_BUNDLE_MANIFEST_MAX (1024u * 1024u)
#define KEEL_BUNDLE_SIG_MAX 512u
#define KEEL_BUNDLE_CHAIN_MAX (16u * 1024u)
#define KEEL_BUNDLE_PAYLOAD_MAX (64ull * 1024 * 1024 * 1024)
/* 256 KiB: the installer holds two chunks, so this is most of its own memory. */
#define KEEL_BUNDLE_CHUNK_DEFAULT (256u * 1024u)
#define KEEL_BUNDLE_CHUNK_MAX (16u * 1024u * 1024u)
/* 8192 digests (64 hex characters each) keep the manifest under its 1 MiB
 * cap; at 16 MiB chunks that still covers KEEL_BUNDLE_PAYLOAD_MAX. */
#define KEEL_BUNDLE_CHUNKS_MAX 8192u
#define KEEL_BUNDLE_NOTES_MAX 4096u
#define KEEL_BUNDLE_FIXES_MAX 64u
#define KEEL_BUNDLE_MODELS_MAX 16u
/* Algorithm ids carried in the header (5.5-3: they can change). */
#define KEEL_BUNDLE_ALG_ECDSA_P256_SHA256 1

/* What a bundle carries: a software image for a slot, or a new release
 * trust store (the release root and, optionally, its current CRL). */
typedef enum { KEEL_BUNDLE_IMAGE = 0, KEEL_BUNDLE_TRUST = 1 } keel_bundle_kind_t;
#define KEEL_TRUST_PAYLOAD_MAX (64u * 1024u)

/* The manifest, as parsed (strictly: unknown fields are refused). */
typedef struct {
    keel_bundle_kind_t kind;     /* "kind", optional, default "image" */
    char models[KEEL_BUNDLE_MODELS_MAX][65];
    unsigned n_models;
    char version[65];            /* SemVer 2.0 */
    uint32_t security_version;   /* anti-rollback counter */
    char support_until[11];      /* YYYY-MM-DD (5.3-13) */
    char created[32];            /* RFC 3339 UTC */
    char notes[KEEL_BUNDLE_NOTES_MAX + 1];
    char risk[KEEL_BUNDLE_NOTES_MAX + 1]; /* what the fixes protect against (5.3-11) */
    char security_fixes[KEEL_BUNDLE_FIXES_MAX][65];
    unsigned n_fixes;
    bool disruptive;             /* 5.3-12 */
    uint32_t downtime_seconds;
    uint64_t payload_size;
    uint32_t chunk_size;
    uint8_t payload_sha256[KEEL_SHA256_LEN];
    uint32_t n_chunks;
    uint8_t (*chunk_sha256)[KEEL_SHA256_LEN]; /* n_chunks digests */
} keel_manifest_t;

/* The fixed header, as parsed. */
typedef struct {
    uint16_t format_version;
    uint16_t algorithm;
    uint32_t manifest_len;
    uint32_t signature_len;
    uint32_t chain_len;
    uint64_t payload_len;
} keel_bundle_header_t;

/* Longest signer subject handed out (RFC 2253 form, cut there). */
#define KEEL_BUNDLE_SUBJECT_MAX 256

/* What the device trusts for updates: one to four release roots, and
 * optionally CRLs of revoked signer certificates, taken from root_pem itself
 * and from crl_pem when given (which must then hold at least one). */
typedef struct keel_trust keel_trust_t;
keel_status_t keel_trust_load(const char *root_pem, const char *crl_pem /* may be NULL */,
                              keel_trust_t **out) KEEL_MUST_CHECK;
void keel_trust_free(keel_trust_t *t);

/* Input for the reader: a file, a pipe, stdin. Returns bytes read, 0 at end,
 * -1 on error (errno set). */
typedef ssize_t (*keel_read_fn)(void *ctx, void *buf, size_t n);

typedef struct keel_bundle_reader keel_bundle_reader_t;

/*
 * Reads and verifies everything before the payload: header (lengths within
 * their caps, algorithm known, reserved bytes zero), manifest (strict JSON),
 * signature over header || manifest || chain, chain to the trust root (valid
 * now, codeSigning, not revoked). KEEL_ERR_VERIFY for anything that does not
 * verify, KEEL_ERR_FORMAT / KEEL_ERR_TOO_LARGE for malformed input; the error
 * message says which check failed.
 */
keel_status_t keel_bundle_open(keel_read_fn rd, void *ctx, const keel_trust_t *trust,
                               keel_bundle_reader_t **out) KEEL_MUST_CHECK;
const keel_manifest_t *keel_bundle_manifest(const keel_bundle_reader_t *r);
/* The signed part (header || manifest || signature || chain), for keeping
 * beside an installed slot so the boot check can verify it again. */
keel_status_t keel_bundle_signed_part(const keel_bundle_reader_t *r, const uint8_t **data,
                                      size_t *len) KEEL_MUST_CHECK;
/*
 * The next payload chunk, verified against its digest, into buf (at least
 * manifest->chunk_size bytes). *n = 0 once the whole payload was read, its
 * total digest checked, and the input shown to end there (trailing bytes are
 * KEEL_ERR_VERIFY). A chunk that does not match: KEEL_ERR_VERIFY, and nothing
 * of it is handed out (buf is zeroed, *n = 0). The last chunk is returned only
 * after the total digest and the end of input were checked. After a failure
 * the reader refuses every further call.
 */
keel_status_t keel_bundle_next_chunk(keel_bundle_reader_t *r, uint8_t *buf, size_t cap,
                                     size_t *n) KEEL_MUST_CHECK;
void keel_bundle_close(keel_bundle_reader_t *r);
/* The signer certificate's subject (RFC 2253), for logs and the UI. */
const char *keel_bundle_signer_subject(const keel_bundle_reader_t *r);

/*
 * Reads the signed part and parses header, chain and manifest (strictly)
 * WITHOUT verifying the signature or the chain: for `keel bundle inspect` on a
 * machine without the release root. Nothing it returns may be trusted. The
 * payload is not read. `subject` receives the signer's subject (cut to cap).
 */
keel_status_t keel_bundle_inspect(keel_read_fn rd, void *ctx, keel_bundle_header_t *hdr,
                                  keel_manifest_t *m, char *subject, size_t cap) KEEL_MUST_CHECK;

/* Verifies a stored signed part (from keel_bundle_signed_part) against the
 * trust store and returns its manifest: the boot-time check of a slot. */
keel_status_t keel_bundle_verify_signed_part(const uint8_t *data, size_t len, const keel_trust_t *trust,
                                             keel_manifest_t *out) KEEL_MUST_CHECK;
/* The same, with flags: KEEL_VERIFY_NO_TIME skips the validity dates of the
 * chain and CRL (the boot check: an image that verified when it was
 * installed stays bootable after its signer expires or with an unset clock). */
#define KEEL_VERIFY_NO_TIME 1u
keel_status_t keel_bundle_verify_signed_part_ex(const uint8_t *data, size_t len, const keel_trust_t *trust,
                                                unsigned flags, keel_manifest_t *out) KEEL_MUST_CHECK;
void keel_manifest_free(keel_manifest_t *m);

/* Release side: writes a bundle. */
typedef struct {
    const char *signer_key;   /* PEM private key of the signer (mode 0600) */
    const char *signer_pass;  /* its passphrase when encrypted, else NULL */
    const char *signer_chain; /* PEM: signer certificate, then the release issuing CA */
    const char *payload;      /* path, or "-" for stdin */
    const char *out;
    const char *const *models;
    unsigned n_models;
    const char *version;
    uint32_t security_version;
    const char *support_until;
    const char *notes;        /* may be NULL */
    const char *risk;         /* may be NULL */
    const char *const *security_fixes;
    unsigned n_fixes;
    bool disruptive;
    uint32_t downtime_seconds;
    uint32_t chunk_size;      /* 0 = KEEL_BUNDLE_CHUNK_DEFAULT */
    keel_bundle_kind_t kind;
} keel_bundle_create_opts_t;
keel_status_t keel_bundle_create(const keel_bundle_create_opts_t *o) KEEL_MUST_CHECK;

/* 1 if s is a real calendar date written YYYY-MM-DD (support_until,
 * [update] postpone_until). */
int keel_date_ok(const char *s);

/* Compares SemVer 2.0 strings by precedence (build metadata ignored): <0, 0,
 * >0. A string that is not valid SemVer sorts below every valid one. */
int keel_semver_cmp(const char *a, const char *b);
bool keel_semver_ok(const char *v);

#endif

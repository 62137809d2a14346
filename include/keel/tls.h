/*
 * keel/tls.h - the TLS policy Keel's two TLS endpoints share (5.5-1): keeld's
 * local HTTPS API (src/api/server.c, a server) and the cloud link
 * (src/link/link.c, a client). One place, so the two cannot drift apart.
 * In the keelapi library (libssl); the keel library has libcrypto only.
 */
#ifndef KEEL_TLS_H
#define KEEL_TLS_H

#include "keel/base.h"
#include "keel/keystore.h"

#include <openssl/ssl.h>
#include <stdbool.h>

/* Largest PEM file (certificate, chain, trust anchor) read for a context. */
#define KEEL_TLS_PEM_MAX (64u * 1024u)

/*
 * Protocol policy on a client or server context: TLS 1.2 minimum; in 1.2
 * only ECDHE key exchange with AEAD ciphers (AES-GCM, ChaCha20-Poly1305; the
 * RSA names serve a product that brings an RSA key), in 1.3 the AES-GCM and
 * ChaCha20 suites; groups X25519, P-256, P-384; no compression, no
 * renegotiation, no session tickets and no session cache (neither endpoint
 * resumes sessions, so they would only be state). KEEL_ERR_CRYPTO when
 * OpenSSL refuses a setting.
 */
keel_status_t keel_tls_policy(SSL_CTX *ctx) KEEL_MUST_CHECK;

/*
 * Every certificate of a PEM file, read with a KEEL_TLS_PEM_MAX cap, into a
 * new stack the caller frees with sk_X509_pop_free(sk, X509_free). The file
 * errors of keel_file_read; KEEL_ERR_CONFIG when it holds no certificate.
 */
keel_status_t keel_tls_read_certs(const char *path, STACK_OF(X509) **out) KEEL_MUST_CHECK;

/*
 * The endpoint's identity on a context: the first certificate of
 * `cert_path`, the issuing chain of `chain_path` without its self-signed root
 * (the peer trusts the root, so sending it is useless), and the private key
 * `key_label` of the keystore (a handle: a PKCS#11 or TPM key never leaves
 * its token; the context holds a reference, so the keystore must outlive
 * the context). KEEL_ERR_CONFIG when the certificate is unusable or the
 * chain holds no intermediate, KEEL_ERR_KEYSTORE when the key does not match
 * the certificate, the keystore's errors for the key.
 */
keel_status_t keel_tls_use_identity(SSL_CTX *ctx, keel_keystore_t *ks, const char *key_label, const char *cert_path,
                                    const char *chain_path) KEEL_MUST_CHECK;

/* The same with a key the caller holds (a service's PEM key file); the
 * context takes its own reference. */
keel_status_t keel_tls_use_identity_key(SSL_CTX *ctx, EVP_PKEY *key, const char *cert_path,
                                        const char *chain_path) KEEL_MUST_CHECK;

/*
 * A client's trust: exactly one CA certificate at `ca_path` (the service
 * root) becomes the context's whole trust store; the default verify paths
 * are never loaded, so the system store plays no part. KEEL_ERR_CONFIG for a
 * file with more than one certificate or a non-CA.
 */
keel_status_t keel_tls_trust_root(SSL_CTX *ctx, const char *ca_path) KEEL_MUST_CHECK;

/*
 * The name the server's certificate must carry, checked by OpenSSL during
 * the handshake (X509_VERIFY_PARAM: host without partial wildcards, or an
 * address), and purpose "SSL server". An empty or malformed name is
 * KEEL_ERR_CONFIG: an empty one would make set1_host clear the check.
 */
keel_status_t keel_tls_expect_server(SSL_CTX *ctx, const char *name) KEEL_MUST_CHECK;
bool keel_tls_name_is_ip(const char *name);

#endif

/* The TLS policy and identity loading shared by the API server and the cloud
 * link (keel/tls.h). */
#include "keel/tls.h"

#include "keel/crypto.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <string.h>

#define TLS12_CIPHERS                                                                                    \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:"         \
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define TLS_GROUPS "X25519:P-256:P-384"

keel_status_t keel_tls_policy(SSL_CTX *ctx)
{
    if (ctx == NULL)
        return keel_errorf(KEEL_ERR_ARG, "tls: no context");
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 || SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) != 1 ||
        SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) != 1)
        return keel_crypto_error(KEEL_ERR_CRYPTO, "TLS settings");
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return KEEL_OK;
}

keel_status_t keel_tls_read_certs(const char *path, STACK_OF(X509) **out)
{
    if (path == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "tls: no certificate file");
    keel_buf_t b;
    keel_buf_init(&b, KEEL_TLS_PEM_MAX);
    keel_status_t st = keel_file_read(path, KEEL_TLS_PEM_MAX, &b);
    if (st != KEEL_OK) {
        keel_buf_free(&b);
        return keel_errorf(st, "%s: %s", path, keel_error_message());
    }
    BIO *bio = BIO_new_mem_buf(b.data, (int)b.len);
    STACK_OF(X509) *sk = sk_X509_new_null();
    if (bio == NULL || sk == NULL)
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "BIO_new_mem_buf");
    X509 *x;
    while (st == KEEL_OK && (x = PEM_read_bio_X509(bio, NULL, keel_pem_no_password, NULL)) != NULL)
        if (sk_X509_push(sk, x) <= 0) {
            X509_free(x);
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "sk_X509_push");
        }
    ERR_clear_error(); /* the end of the PEM stream */
    BIO_free(bio);
    keel_buf_free(&b);
    if (st == KEEL_OK && sk_X509_num(sk) == 0)
        st = keel_errorf(KEEL_ERR_CONFIG, "%s holds no certificate", path);
    if (st != KEEL_OK) {
        sk_X509_pop_free(sk, X509_free);
        return st;
    }
    *out = sk;
    return KEEL_OK;
}

keel_status_t keel_tls_use_identity_key(SSL_CTX *ctx, EVP_PKEY *key, const char *cert_path, const char *chain_path)
{
    if (ctx == NULL || key == NULL || cert_path == NULL || chain_path == NULL)
        return keel_errorf(KEEL_ERR_ARG, "tls: incomplete identity");
    STACK_OF(X509) *sk = NULL;
    keel_status_t st = keel_tls_read_certs(cert_path, &sk);
    if (st != KEEL_OK)
        return st;
    if (SSL_CTX_use_certificate(ctx, sk_X509_value(sk, 0)) != 1)
        st = keel_crypto_error(KEEL_ERR_CONFIG, "the identity certificate");
    sk_X509_pop_free(sk, X509_free);
    sk = NULL;
    if (st == KEEL_OK)
        st = keel_tls_read_certs(chain_path, &sk);
    unsigned added = 0;
    for (int i = 0; st == KEEL_OK && i < sk_X509_num(sk); i++) {
        X509 *x = sk_X509_value(sk, i);
        if (X509_check_issued(x, x) == X509_V_OK)
            continue;
        if (SSL_CTX_add1_chain_cert(ctx, x) != 1)
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "SSL_CTX_add1_chain_cert");
        else
            added++;
    }
    sk_X509_pop_free(sk, X509_free);
    if (st == KEEL_OK && added == 0)
        st = keel_errorf(KEEL_ERR_CONFIG, "%s holds no intermediate certificate", chain_path);
    if (st != KEEL_OK)
        return st;
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1)
        return keel_crypto_error(KEEL_ERR_KEYSTORE, "the identity key does not match the certificate");
    return KEEL_OK;
}

keel_status_t keel_tls_use_identity(SSL_CTX *ctx, keel_keystore_t *ks, const char *key_label, const char *cert_path,
                                    const char *chain_path)
{
    if (ctx == NULL || ks == NULL || key_label == NULL || cert_path == NULL || chain_path == NULL)
        return keel_errorf(KEEL_ERR_ARG, "tls: incomplete identity");
    EVP_PKEY *key = NULL;
    keel_status_t st = keel_keystore_private_key(ks, key_label, &key);
    if (st != KEEL_OK)
        return st;
    st = keel_tls_use_identity_key(ctx, key, cert_path, chain_path);
    EVP_PKEY_free(key);
    return st;
}

keel_status_t keel_tls_trust_root(SSL_CTX *ctx, const char *ca_path)
{
    STACK_OF(X509) *sk = NULL;
    keel_status_t st = keel_tls_read_certs(ca_path, &sk);
    if (st != KEEL_OK)
        return st;
    X509 *root = sk_X509_value(sk, 0);
    if (sk_X509_num(sk) != 1)
        st = keel_errorf(KEEL_ERR_CONFIG, "%s: the trust anchor must be exactly one certificate (the service root)",
                         ca_path);
    else if (X509_check_ca(root) == 0)
        st = keel_errorf(KEEL_ERR_CONFIG, "%s is not a CA certificate", ca_path);
    X509_STORE *store = st == KEEL_OK ? X509_STORE_new() : NULL;
    if (st == KEEL_OK && (store == NULL || X509_STORE_add_cert(store, root) != 1)) {
        X509_STORE_free(store);
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "X509_STORE_add_cert");
    }
    if (st == KEEL_OK)
        SSL_CTX_set_cert_store(ctx, store); /* the context owns it now */
    sk_X509_pop_free(sk, X509_free);
    return st;
}

bool keel_tls_name_is_ip(const char *name)
{
    unsigned char addr[16];
    return name != NULL && (inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1);
}

keel_status_t keel_tls_expect_server(SSL_CTX *ctx, const char *name)
{
    size_t n = name != NULL ? strlen(name) : 0;
    bool ok = n > 0 && n <= 253;
    if (ok && !keel_tls_name_is_ip(name)) {
        for (size_t i = 0; i < n && ok; i++) {
            char ch = name[i];
            ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                 ch == '.';
        }
        ok = ok && name[0] != '-' && name[0] != '.';
    }
    if (!ok)
        return keel_errorf(KEEL_ERR_CONFIG, "\"%.64s\" is not a host name or address", name != NULL ? name : "");
    X509_VERIFY_PARAM *vp = SSL_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if ((keel_tls_name_is_ip(name) ? X509_VERIFY_PARAM_set1_ip_asc(vp, name) : X509_VERIFY_PARAM_set1_host(vp, name, 0)) !=
            1 ||
        X509_VERIFY_PARAM_set_purpose(vp, X509_PURPOSE_SSL_SERVER) != 1)
        return keel_crypto_error(KEEL_ERR_CONFIG, "the server's name");
    return KEEL_OK;
}

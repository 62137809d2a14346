/* Keystore core: validates arguments and dispatches to the chosen driver. */
#include "driver.h"

#include "keel/crypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct keel_keystore {
    const keel_keystore_driver_t *drv;
    void *state;
};

static const keel_keystore_driver_t *const drivers[] = {
    &keel_keystore_file_driver,
    &keel_keystore_pkcs11_driver,
    &keel_keystore_tpm2_driver,
};

/* Copies the first line of p into out, NUL-terminated. */
static keel_status_t secret_set(const char *what, const void *p, size_t n, const char *source, char *out,
                                size_t cap, size_t *len)
{
    const char *c = p;
    const char *eol = memchr(c, '\n', n);
    if (eol != NULL)
        n = (size_t)(eol - c);
    while (n > 0 && c[n - 1] == '\r')
        n--;
    if (n == 0)
        return keel_errorf(KEEL_ERR_CONFIG, "%s from %s is empty", what, source);
    if (n >= cap)
        return keel_errorf(KEEL_ERR_CONFIG, "%s from %s exceeds %zu bytes", what, source, cap - 1);
    if (memchr(c, '\0', n) != NULL)
        return keel_errorf(KEEL_ERR_CONFIG, "%s from %s contains a NUL byte", what, source);
    memcpy(out, c, n);
    out[n] = '\0';
    *len = n;
    return KEEL_OK;
}

keel_status_t keel_keystore_secret_read(const char *what, const char *file, const char *env, char *out,
                                        size_t cap, size_t *len)
{
    if (file != NULL) {
        int fd = -1;
        if (keel_file_open_private(file, &fd) != KEEL_OK) {
            char why[KEEL_ERROR_MAX];
            snprintf(why, sizeof why, "%s", keel_error_message());
            return keel_errorf(KEEL_ERR_CONFIG, "%s: file %s", what, why);
        }
        keel_buf_t b;
        /* a line, its CR LF, and one byte to tell "too long" */
        keel_status_t st = keel_fd_read(fd, file, cap + 2, &b);
        close(fd);
        if (st == KEEL_ERR_TOO_LARGE)
            return keel_errorf(KEEL_ERR_CONFIG, "%s: file %s is larger than %zu bytes", what, file, cap + 1);
        if (st != KEEL_OK)
            return st;
        st = secret_set(what, b.data, b.len, file, out, cap, len);
        keel_buf_free(&b); /* wipes */
        return st;
    }
    if (env == NULL || env[0] == '\0')
        return keel_errorf(KEEL_ERR_CONFIG, "%s: no file or variable configured", what);
    const char *v = getenv(env);
    if (v == NULL)
        return keel_errorf(KEEL_ERR_CONFIG, "%s: environment variable %s is not set", what, env);
    char source[80];
    if (keel_snprintf(source, sizeof source, "$%s", env) != KEEL_OK)
        return keel_errorf(KEEL_ERR_CONFIG, "%s: variable name too long", what);
    return secret_set(what, v, strnlen(v, cap + 1), source, out, cap, len);
}

int keel_keystore_label_ok(const char *label)
{
    if (label == NULL)
        return 0;
    size_t n = strlen(label);
    if (n == 0 || n > KEEL_KEYSTORE_LABEL_MAX || label[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = label[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

#define CHECK_LABEL(label)                                                                    \
    do {                                                                                      \
        if (!keel_keystore_label_ok(label))                                                   \
            return keel_errorf(KEEL_ERR_ARG, "invalid key label (use [A-Za-z0-9._-], at most " \
                                             "%d characters)", KEEL_KEYSTORE_LABEL_MAX);      \
    } while (0)

keel_status_t keel_keystore_open(const keel_keystore_config_t *cfg, keel_keystore_t **out)
{
    if (cfg == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "keystore: missing configuration");
    *out = NULL;
    const char *name = cfg->driver != NULL ? cfg->driver : "file";
    const keel_keystore_driver_t *drv = NULL;
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++)
        if (strcmp(drivers[i]->name, name) == 0)
            drv = drivers[i];
    if (drv == NULL)
        return keel_errorf(KEEL_ERR_UNSUPPORTED, "unknown keystore driver '%s' (file, pkcs11, tpm2)", name);
    keel_status_t st = keel_crypto_init();
    if (st != KEEL_OK)
        return st;
    keel_keystore_t *ks = calloc(1, sizeof *ks);
    if (ks == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    ks->drv = drv;
    st = drv->open(cfg, &ks->state);
    if (st != KEEL_OK) {
        free(ks);
        return st;
    }
    *out = ks;
    return KEEL_OK;
}

void keel_keystore_close(keel_keystore_t *ks)
{
    if (ks == NULL)
        return;
    ks->drv->close(ks->state);
    free(ks);
}

const char *keel_keystore_driver(const keel_keystore_t *ks)
{
    return ks->drv->name;
}

keel_status_t keel_keystore_generate(keel_keystore_t *ks, const char *label, EVP_PKEY **pub)
{
    CHECK_LABEL(label);
    if (ks == NULL || pub == NULL)
        return keel_errorf(KEEL_ERR_ARG, "keystore generate: missing argument");
    return ks->drv->generate(ks->state, label, pub);
}

keel_status_t keel_keystore_public_key(keel_keystore_t *ks, const char *label, EVP_PKEY **pub)
{
    CHECK_LABEL(label);
    if (ks == NULL || pub == NULL)
        return keel_errorf(KEEL_ERR_ARG, "keystore public key: missing argument");
    return ks->drv->public_key(ks->state, label, pub);
}

keel_status_t keel_keystore_sign(keel_keystore_t *ks, const char *label, const void *msg, size_t len,
                                 uint8_t *sig, size_t cap, size_t *siglen)
{
    CHECK_LABEL(label);
    if (ks == NULL || (msg == NULL && len > 0) || sig == NULL || siglen == NULL)
        return keel_errorf(KEEL_ERR_ARG, "keystore sign: missing argument");
    if (cap < KEEL_ECDSA_SIG_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "signature buffer smaller than %d", KEEL_ECDSA_SIG_MAX);
    return ks->drv->sign(ks->state, label, msg, len, sig, cap, siglen);
}

keel_status_t keel_keystore_private_key(keel_keystore_t *ks, const char *label, EVP_PKEY **priv)
{
    CHECK_LABEL(label);
    if (ks == NULL || priv == NULL)
        return keel_errorf(KEEL_ERR_ARG, "keystore private key: missing argument");
    return ks->drv->private_key(ks->state, label, priv);
}

keel_status_t keel_keystore_seal(keel_keystore_t *ks, const char *label, const char *ad,
                                 const uint8_t *secret, size_t len, uint8_t *out, size_t cap,
                                 size_t *outlen)
{
    CHECK_LABEL(label);
    if (ks == NULL || ad == NULL || secret == NULL || out == NULL || outlen == NULL)
        return keel_errorf(KEEL_ERR_ARG, "keystore seal: missing argument");
    if (len == 0 || len > KEEL_KEYSTORE_SEAL_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "secret to seal must be 1..%d bytes", KEEL_KEYSTORE_SEAL_MAX);
    if (cap < len + KEEL_KEYSTORE_SEAL_OVERHEAD)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "seal output buffer too small");
    return ks->drv->seal(ks->state, label, ad, secret, len, out, cap, outlen);
}

keel_status_t keel_keystore_unseal(keel_keystore_t *ks, const char *label, const char *ad,
                                   const uint8_t *blob, size_t bloblen, uint8_t *out, size_t cap,
                                   size_t *outlen)
{
    CHECK_LABEL(label);
    if (ks == NULL || ad == NULL || blob == NULL || out == NULL || outlen == NULL)
        return keel_errorf(KEEL_ERR_ARG, "keystore unseal: missing argument");
    if (bloblen > KEEL_KEYSTORE_SEAL_MAX + KEEL_KEYSTORE_SEAL_OVERHEAD)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "sealed blob too large");
    return ks->drv->unseal(ks->state, label, ad, blob, bloblen, out, cap, outlen);
}

keel_status_t keel_keystore_destroy(keel_keystore_t *ks, const char *label)
{
    CHECK_LABEL(label);
    if (ks == NULL)
        return keel_errorf(KEEL_ERR_ARG, "keystore destroy: missing argument");
    return ks->drv->destroy(ks->state, label);
}

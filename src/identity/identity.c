/* Device ids, serial numbers, label passwords and certificate fingerprints. */
#include "keel/identity.h"

#include "keel/crypto.h"

#include <ctype.h>
#include <openssl/x509.h>
#include <string.h>

keel_status_t keel_identity_device_id(const EVP_PKEY *pub, char out[KEEL_DEVICE_ID_LEN + 1])
{
    keel_buf_t spki;
    keel_status_t st = keel_pkey_spki(pub, &spki);
    if (st != KEEL_OK)
        return st;
    uint8_t h[KEEL_SHA256_LEN];
    keel_sha256(spki.data, spki.len, h);
    keel_buf_free(&spki);
    return keel_base32_encode(h, 16, out, KEEL_DEVICE_ID_LEN + 1);
}

int keel_identity_id_ok(const char *s)
{
    if (s == NULL || strlen(s) != KEEL_DEVICE_ID_LEN)
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '2' && *p <= '7')))
            return 0;
    return 1;
}

int keel_identity_model_ok(const char *s)
{
    if (s == NULL)
        return 0;
    size_t n = strlen(s);
    if (n == 0 || n > KEEL_MODEL_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

void keel_identity_new_serial(char out[KEEL_SERIAL_LEN + 1])
{
    static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    for (int i = 0; i < KEEL_SERIAL_LEN; i++)
        out[i] = crockford[keel_random_uniform(32)];
    out[KEEL_SERIAL_LEN] = '\0';
}

void keel_identity_label_password(char out[KEEL_LABEL_PW_LEN + 1])
{
    static const char alphabet[] = KEEL_LABEL_PW_ALPHABET;
    size_t o = 0;
    for (int i = 0; i < KEEL_LABEL_PW_CHARS; i++) {
        if (i > 0 && i % KEEL_LABEL_PW_GROUP == 0)
            out[o++] = '-';
        out[o++] = alphabet[keel_random_uniform((uint32_t)(sizeof alphabet - 1))];
    }
    out[o] = '\0';
}

keel_status_t keel_identity_password_normalize(const char *in, char *out, size_t cap)
{
    if (cap == 0)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "no room for the password");
    size_t o = 0;
    for (const char *p = in; *p; p++) {
        if (*p == '-' || *p == ' ')
            continue;
        if (o + 1 >= cap) {
            keel_wipe(out, cap);
            return keel_errorf(KEEL_ERR_TOO_LARGE, "password longer than %zu characters", cap - 1);
        }
        out[o++] = (char)tolower((unsigned char)*p);
    }
    out[o] = '\0';
    return KEEL_OK;
}

keel_status_t keel_identity_fingerprint(X509 *cert, char out[KEEL_FINGERPRINT_LEN])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (X509_digest(cert, EVP_sha256(), md, &n) != 1 || n != 32)
        return keel_crypto_error(KEEL_ERR_CRYPTO, "certificate fingerprint");
    static const char hex[] = "0123456789ABCDEF";
    for (unsigned i = 0; i < n; i++) {
        out[i * 3] = hex[md[i] >> 4];
        out[i * 3 + 1] = hex[md[i] & 15];
        out[i * 3 + 2] = i + 1 < n ? ':' : '\0';
    }
    return KEEL_OK;
}

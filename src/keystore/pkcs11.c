/*
 * The PKCS#11 keystore driver: keys are generated ON a token (a secure
 * element, an HSM, SoftHSM2 in tests) as CKA_SENSITIVE, non-extractable
 * objects, and every private-key operation runs inside the token.
 *
 * Objects on the token, all named by CKA_LABEL = the Keel label:
 *   CKO_PRIVATE_KEY  EC P-256, CKA_SIGN, never extractable   (generate)
 *   CKO_PUBLIC_KEY   EC P-256, CKA_VERIFY, same CKA_ID       (generate)
 *   CKO_SECRET_KEY   AES-256, CKA_ENCRYPT/DECRYPT, never extractable
 *                    (the wrapping key, created by the first seal)
 * A sealed blob is IV(12) || AES-256-GCM ciphertext || tag(16), computed by
 * the token with the caller's associated data.
 *
 * private_key hands OpenSSL a handle through libp11's pkcs11 ENGINE, which
 * loads the same module. PKCS#11 state is per process, so the two share one
 * C_Initialize and one login; see docs/internals/keystore-pkcs11.md.
 *
 * The PIN comes from a 0600 file or an environment variable; it is kept in
 * the state (the engine needs it later), wiped on every exit path, and never
 * appears in a URI, an argument vector or a message.
 */
/* The ENGINE API is deprecated in OpenSSL 3 but is the only way to libp11's
 * engine; this file alone uses it. */
#define OPENSSL_SUPPRESS_DEPRECATED

#include "driver.h"

#include "keel/crypto.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <p11-kit/pkcs11.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef CKR_AEAD_DECRYPT_FAILED
#define CKR_AEAD_DECRYPT_FAILED 0x35UL /* PKCS#11 3.0; absent from 2.40 headers */
#endif

#define P11_PIN_MAX 256
/* The PIN file may end in "\r\n". */
/* Token labels are 32 bytes, blank padded. */
#define P11_TOKEN_LABEL_LEN 32
#define P11_SLOTS_MAX 64
#define P11_ID_LEN 16
/* An uncompressed P-256 point, and its DER OCTET STRING wrapping. */
#define P256_POINT_LEN 65
#define P256_COORD_LEN 32
#define P11_EC_POINT_MAX 128
/* r || s for any curve up to P-521, so C_Sign never stops on a short buffer
 * (which would leave the operation active in the session). */
#define P11_SIG_RAW_MAX 132
#define P11_EC_PARAMS_MAX 32
#define GCM_IV_LEN 12
#define GCM_TAG_LEN 16
/* Objects of one label destroyed per round, and rounds, in destroy. */
#define P11_DESTROY_BATCH 16
#define P11_DESTROY_ROUNDS 16
/* "pkcs11:token=" + 32 bytes percent-encoded + ";object=" + label + ";type=private" */
#define P11_URI_MAX 256

_Static_assert(GCM_IV_LEN + GCM_TAG_LEN <= KEEL_KEYSTORE_SEAL_OVERHEAD, "seal overhead too small");

/* DER of OBJECT IDENTIFIER 1.2.840.10045.3.1.7 (prime256v1). */
static const uint8_t p256_oid[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};

/* The p11-kit header takes non-const pointers even for input buffers. */
#define UNCONST(p) ((void *)(uintptr_t)(p))

typedef struct {
    void *dl;
    CK_FUNCTION_LIST_PTR f;
    int initialized; /* our C_Initialize succeeded: we finalize */
    int have_session;
    CK_SESSION_HANDLE session;
    ENGINE *engine;  /* created by the first private_key */
    char module[KEEL_PATH_MAX];
    char token[P11_TOKEN_LABEL_LEN + 1];
    char pin[P11_PIN_MAX + 1];
    size_t pinlen;
} p11_state_t;

static const struct {
    CK_RV rv;
    const char *name;
} rv_names[] = {
#define RV(x) {x, #x}
    RV(CKR_OK), RV(CKR_CANCEL), RV(CKR_HOST_MEMORY), RV(CKR_SLOT_ID_INVALID),
    RV(CKR_GENERAL_ERROR), RV(CKR_FUNCTION_FAILED), RV(CKR_ARGUMENTS_BAD),
    RV(CKR_ATTRIBUTE_READ_ONLY), RV(CKR_ATTRIBUTE_SENSITIVE), RV(CKR_ATTRIBUTE_TYPE_INVALID),
    RV(CKR_ATTRIBUTE_VALUE_INVALID), RV(CKR_ACTION_PROHIBITED), RV(CKR_DATA_INVALID),
    RV(CKR_DATA_LEN_RANGE), RV(CKR_DEVICE_ERROR), RV(CKR_DEVICE_MEMORY), RV(CKR_DEVICE_REMOVED),
    RV(CKR_ENCRYPTED_DATA_INVALID), RV(CKR_ENCRYPTED_DATA_LEN_RANGE), RV(CKR_AEAD_DECRYPT_FAILED),
    RV(CKR_FUNCTION_NOT_SUPPORTED), RV(CKR_KEY_HANDLE_INVALID), RV(CKR_KEY_SIZE_RANGE),
    RV(CKR_KEY_TYPE_INCONSISTENT), RV(CKR_KEY_FUNCTION_NOT_PERMITTED), RV(CKR_MECHANISM_INVALID),
    RV(CKR_MECHANISM_PARAM_INVALID), RV(CKR_OBJECT_HANDLE_INVALID), RV(CKR_OPERATION_ACTIVE),
    RV(CKR_OPERATION_NOT_INITIALIZED), RV(CKR_PIN_INCORRECT), RV(CKR_PIN_INVALID),
    RV(CKR_PIN_LEN_RANGE), RV(CKR_PIN_EXPIRED), RV(CKR_PIN_LOCKED), RV(CKR_SESSION_CLOSED),
    RV(CKR_SESSION_COUNT), RV(CKR_SESSION_HANDLE_INVALID), RV(CKR_SESSION_READ_ONLY),
    RV(CKR_SIGNATURE_INVALID), RV(CKR_TEMPLATE_INCOMPLETE), RV(CKR_TEMPLATE_INCONSISTENT),
    RV(CKR_TOKEN_NOT_PRESENT), RV(CKR_TOKEN_NOT_RECOGNIZED), RV(CKR_TOKEN_WRITE_PROTECTED),
    RV(CKR_USER_ALREADY_LOGGED_IN), RV(CKR_USER_NOT_LOGGED_IN), RV(CKR_USER_PIN_NOT_INITIALIZED),
    RV(CKR_USER_TYPE_INVALID), RV(CKR_USER_ANOTHER_ALREADY_LOGGED_IN), RV(CKR_BUFFER_TOO_SMALL),
    RV(CKR_CRYPTOKI_NOT_INITIALIZED), RV(CKR_CRYPTOKI_ALREADY_INITIALIZED),
#undef RV
};

static const char *rv_name(CK_RV rv)
{
    for (size_t i = 0; i < sizeof rv_names / sizeof rv_names[0]; i++)
        if (rv_names[i].rv == rv)
            return rv_names[i].name;
    return "CKR_(unknown)";
}

static keel_status_t ckr(const char *fn, CK_RV rv)
{
    return keel_errorf(KEEL_ERR_KEYSTORE, "pkcs11: %s: %s (0x%lx)", fn, rv_name(rv), (unsigned long)rv);
}

static const char *class_name(CK_OBJECT_CLASS cls)
{
    switch (cls) {
    case CKO_PRIVATE_KEY: return "private key";
    case CKO_PUBLIC_KEY: return "public key";
    case CKO_SECRET_KEY: return "wrapping key";
    default: return "object";
    }
}

static void trim_right(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

static keel_status_t module_load(p11_state_t *s)
{
    s->dl = dlopen(s->module, RTLD_NOW | RTLD_LOCAL);
    if (s->dl == NULL)
        return keel_errorf(KEEL_ERR_CONFIG, "pkcs11: cannot load module: %s", dlerror());
    CK_C_GetFunctionList get_list = (CK_C_GetFunctionList)dlsym(s->dl, "C_GetFunctionList");
    if (get_list == NULL)
        return keel_errorf(KEEL_ERR_CONFIG, "pkcs11: %s is not a PKCS#11 module (no C_GetFunctionList)",
                           s->module);
    CK_RV rv = get_list(&s->f);
    if (rv != CKR_OK)
        return ckr("C_GetFunctionList", rv);
    if (s->f == NULL)
        return keel_errorf(KEEL_ERR_KEYSTORE, "pkcs11: C_GetFunctionList returned no functions");
    CK_C_INITIALIZE_ARGS args;
    memset(&args, 0, sizeof args);
    args.flags = CKF_OS_LOCKING_OK;
    rv = s->f->C_Initialize(&args);
    /* Someone else in this process (libp11, another keystore) initialised
     * it first: share it, and leave the C_Finalize to them. */
    if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED)
        return KEEL_OK;
    if (rv != CKR_OK)
        return ckr("C_Initialize", rv);
    s->initialized = 1;
    return KEEL_OK;
}

/* Finds the one initialised token labelled s->token. */
static keel_status_t slot_find(p11_state_t *s, CK_SLOT_ID *slot)
{
    CK_SLOT_ID slots[P11_SLOTS_MAX];
    CK_ULONG n = P11_SLOTS_MAX;
    CK_RV rv = s->f->C_GetSlotList(CK_TRUE, slots, &n);
    if (rv == CKR_BUFFER_TOO_SMALL)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "pkcs11: module has more than %d tokens", P11_SLOTS_MAX);
    if (rv != CKR_OK)
        return ckr("C_GetSlotList", rv);
    char seen[160] = "";
    size_t seen_len = 0;
    int matches = 0;
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO info;
        rv = s->f->C_GetTokenInfo(slots[i], &info);
        if (rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_TOKEN_NOT_RECOGNIZED)
            continue;
        if (rv != CKR_OK)
            return ckr("C_GetTokenInfo", rv);
        if ((info.flags & CKF_TOKEN_INITIALIZED) == 0)
            continue;
        char label[P11_TOKEN_LABEL_LEN + 1];
        memcpy(label, info.label, P11_TOKEN_LABEL_LEN);
        label[P11_TOKEN_LABEL_LEN] = '\0';
        trim_right(label);
        if (strcmp(label, s->token) == 0) {
            *slot = slots[i];
            matches++;
        }
        /* For the error message: which tokens there are (labels are public). */
        int w = snprintf(seen + seen_len, sizeof seen - seen_len, "%s'%s'", seen_len ? ", " : "", label);
        if (w > 0 && (size_t)w < sizeof seen - seen_len)
            seen_len += (size_t)w;
    }
    if (matches == 0)
        return keel_errorf(KEEL_ERR_CONFIG, "pkcs11: no token labelled '%s' in %s (tokens: %s)",
                           s->token, s->module, seen_len ? seen : "none");
    if (matches > 1)
        return keel_errorf(KEEL_ERR_KEYSTORE, "pkcs11: %d tokens are labelled '%s' in %s; labels must "
                           "be unique", matches, s->token, s->module);
    return KEEL_OK;
}

static keel_status_t session_open(p11_state_t *s)
{
    CK_SLOT_ID slot = 0;
    keel_status_t st = slot_find(s, &slot);
    if (st != KEEL_OK)
        return st;
    CK_RV rv = s->f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s->session);
    if (rv != CKR_OK)
        return ckr("C_OpenSession", rv);
    s->have_session = 1;
    rv = s->f->C_Login(s->session, CKU_USER, (CK_UTF8CHAR_PTR)s->pin, s->pinlen);
    /* Login state is per application: an earlier login in this process holds. */
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
        return ckr("C_Login", rv);
    return KEEL_OK;
}

/*
 * Teardown in the only order that works with libp11 sharing the module:
 * our session first, then the engine (libp11 calls C_Finalize when it lets
 * go of the module), then our C_Finalize if we were the one to initialise.
 * Closing the last session logs the user out, so there is no C_Logout,
 * which would also log out anyone else in the process.
 */
static void p11_close(void *state)
{
    p11_state_t *s = state;
    if (s == NULL)
        return;
    CK_RV rv;
    if (s->have_session && (rv = s->f->C_CloseSession(s->session)) != CKR_OK)
        keel_log(KEEL_LOG_WARN, "pkcs11: C_CloseSession: %s (0x%lx)", rv_name(rv), (unsigned long)rv);
    if (s->engine != NULL) {
        int finished = ENGINE_finish(s->engine);
        int freed = ENGINE_free(s->engine); /* even when finish failed */
        if (finished != 1 || freed != 1) {
            keel_log(KEEL_LOG_WARN, "pkcs11: releasing the OpenSSL engine failed");
            ERR_clear_error();
        }
    }
    if (s->initialized && (rv = s->f->C_Finalize(NULL)) != CKR_OK && rv != CKR_CRYPTOKI_NOT_INITIALIZED)
        keel_log(KEEL_LOG_WARN, "pkcs11: C_Finalize: %s (0x%lx)", rv_name(rv), (unsigned long)rv);
    if (s->dl != NULL && dlclose(s->dl) != 0)
        keel_log(KEEL_LOG_WARN, "pkcs11: unloading the module: %s", dlerror());
    keel_wipe(s, sizeof *s);
    free(s);
}

static keel_status_t p11_open(const keel_keystore_config_t *cfg, void **state)
{
    if (cfg->module == NULL || cfg->module[0] == '\0')
        return keel_errorf(KEEL_ERR_ARG, "pkcs11 keystore: no module configured");
    if (cfg->token == NULL || cfg->token[0] == '\0')
        return keel_errorf(KEEL_ERR_ARG, "pkcs11 keystore: no token label configured");
    if (strlen(cfg->token) > P11_TOKEN_LABEL_LEN)
        return keel_errorf(KEEL_ERR_ARG, "pkcs11 keystore: token label longer than %d bytes",
                           P11_TOKEN_LABEL_LEN);
    if (cfg->pin_file == NULL && (cfg->pin_env == NULL || cfg->pin_env[0] == '\0'))
        return keel_errorf(KEEL_ERR_ARG, "pkcs11 keystore: no PIN file or PIN variable configured");
    p11_state_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_status_t st = keel_strlcpy(s->module, cfg->module, sizeof s->module);
    if (st == KEEL_OK)
        st = keel_strlcpy(s->token, cfg->token, sizeof s->token);
    if (st == KEEL_OK) {
        trim_right(s->token);
        st = s->token[0] != '\0' ? keel_keystore_secret_read("pkcs11: the PIN", cfg->pin_file, cfg->pin_env,
                                                            s->pin, sizeof s->pin, &s->pinlen)
                                  : keel_errorf(KEEL_ERR_ARG, "pkcs11 keystore: token label is blank");
    }
    if (st == KEEL_OK)
        st = module_load(s);
    if (st == KEEL_OK)
        st = session_open(s);
    if (st != KEEL_OK) {
        p11_close(s);
        return st;
    }
    *state = s;
    return KEEL_OK;
}

/* Handles of the objects of class `cls` labelled `label`, at most `cap`. */
static keel_status_t objects_find(p11_state_t *s, CK_OBJECT_CLASS cls, const char *label,
                                  CK_OBJECT_HANDLE *h, CK_ULONG cap, CK_ULONG *n)
{
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},
        {CKA_LABEL, UNCONST(label), strlen(label)},
    };
    *n = 0;
    CK_RV rv = s->f->C_FindObjectsInit(s->session, tmpl, 2);
    if (rv != CKR_OK)
        return ckr("C_FindObjectsInit", rv);
    rv = s->f->C_FindObjects(s->session, h, cap, n);
    CK_RV rv_final = s->f->C_FindObjectsFinal(s->session);
    if (rv != CKR_OK)
        return ckr("C_FindObjects", rv);
    if (rv_final != CKR_OK)
        return ckr("C_FindObjectsFinal", rv_final);
    return KEEL_OK;
}

/* The one object of class `cls` labelled `label`: *found = 0 if none. */
static keel_status_t object_find(p11_state_t *s, CK_OBJECT_CLASS cls, const char *label,
                                 CK_OBJECT_HANDLE *h, int *found)
{
    CK_OBJECT_HANDLE hs[2];
    CK_ULONG n = 0;
    *found = 0;
    keel_status_t st = objects_find(s, cls, label, hs, 2, &n);
    if (st != KEEL_OK)
        return st;
    if (n > 1)
        return keel_errorf(KEEL_ERR_KEYSTORE, "pkcs11: several %ss are labelled '%s' on token '%s'",
                           class_name(cls), label, s->token);
    if (n == 1) {
        *h = hs[0];
        *found = 1;
    }
    return KEEL_OK;
}

static keel_status_t object_need(p11_state_t *s, CK_OBJECT_CLASS cls, const char *label,
                                 CK_OBJECT_HANDLE *h)
{
    int found = 0;
    keel_status_t st = object_find(s, cls, label, h, &found);
    if (st == KEEL_OK && !found)
        st = keel_errorf(KEEL_ERR_NOT_FOUND, "%s '%s' does not exist on token '%s'", class_name(cls),
                         label, s->token);
    return st;
}

static keel_status_t pkey_from_point(const uint8_t *point, size_t n, EVP_PKEY **out)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    keel_status_t st = KEEL_OK;
    *out = NULL;
    if (bld == NULL ||
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, n) != 1 ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
        (ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL ||
        EVP_PKEY_fromdata_init(ctx) != 1 || EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1)
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "pkcs11: decode the token's EC public key");
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    return st;
}

/*
 * The public half of `label` from its CKO_PUBLIC_KEY object. CKA_EC_POINT is
 * a DER OCTET STRING around the uncompressed point; some tokens give the raw
 * point, which is accepted too.
 */
static keel_status_t public_read(p11_state_t *s, const char *label, EVP_PKEY **pub)
{
    CK_OBJECT_HANDLE h;
    keel_status_t st = object_need(s, CKO_PUBLIC_KEY, label, &h);
    if (st != KEEL_OK)
        return st;
    CK_KEY_TYPE type = 0;
    uint8_t params[P11_EC_PARAMS_MAX], point[P11_EC_POINT_MAX];
    CK_ATTRIBUTE attrs[] = {
        {CKA_KEY_TYPE, &type, sizeof type},
        {CKA_EC_PARAMS, params, sizeof params},
        {CKA_EC_POINT, point, sizeof point},
    };
    CK_RV rv = s->f->C_GetAttributeValue(s->session, h, attrs, 3);
    if (rv != CKR_OK)
        return ckr("C_GetAttributeValue", rv);
    if (type != CKK_EC || attrs[1].ulValueLen != sizeof p256_oid ||
        memcmp(params, p256_oid, sizeof p256_oid) != 0)
        return keel_errorf(KEEL_ERR_UNSUPPORTED, "pkcs11: key '%s' on token '%s' is not an EC P-256 key",
                           label, s->token);
    const uint8_t *p = point;
    size_t n = attrs[2].ulValueLen;
    if (n == P256_POINT_LEN + 2 && point[0] == 0x04 && point[1] == P256_POINT_LEN) {
        p = point + 2;
        n -= 2;
    }
    if (n != P256_POINT_LEN || p[0] != 0x04)
        return keel_errorf(KEEL_ERR_FORMAT, "pkcs11: key '%s' has a malformed CKA_EC_POINT", label);
    return pkey_from_point(p, n, pub);
}

static keel_status_t p11_generate(void *state, const char *label, EVP_PKEY **pub)
{
    p11_state_t *s = state;
    CK_OBJECT_HANDLE h;
    int found = 0;
    keel_status_t st = object_find(s, CKO_PRIVATE_KEY, label, &h, &found);
    if (st == KEEL_OK && !found)
        st = object_find(s, CKO_PUBLIC_KEY, label, &h, &found);
    if (st != KEEL_OK)
        return st;
    if (found)
        return keel_errorf(KEEL_ERR_EXISTS, "key '%s' already exists on token '%s'", label, s->token);

    uint8_t id[P11_ID_LEN];
    keel_random_bytes(id, sizeof id);
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_MECHANISM mech = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    CK_ATTRIBUTE pub_tmpl[] = {
        {CKA_TOKEN, &yes, sizeof yes},
        {CKA_PRIVATE, &no, sizeof no},
        {CKA_VERIFY, &yes, sizeof yes},
        {CKA_ENCRYPT, &no, sizeof no},
        {CKA_WRAP, &no, sizeof no},
        {CKA_EC_PARAMS, UNCONST(p256_oid), sizeof p256_oid},
        {CKA_LABEL, UNCONST(label), strlen(label)},
        {CKA_ID, id, sizeof id},
    };
    CK_ATTRIBUTE priv_tmpl[] = {
        {CKA_TOKEN, &yes, sizeof yes},
        {CKA_PRIVATE, &yes, sizeof yes},
        {CKA_SENSITIVE, &yes, sizeof yes},
        {CKA_EXTRACTABLE, &no, sizeof no},
        /* An identity key signs and does nothing else. */
        {CKA_SIGN, &yes, sizeof yes},
        {CKA_DERIVE, &no, sizeof no},
        {CKA_DECRYPT, &no, sizeof no},
        {CKA_UNWRAP, &no, sizeof no},
        {CKA_LABEL, UNCONST(label), strlen(label)},
        {CKA_ID, id, sizeof id},
    };
    CK_OBJECT_HANDLE hpub, hpriv;
    CK_RV rv = s->f->C_GenerateKeyPair(s->session, &mech, pub_tmpl, sizeof pub_tmpl / sizeof pub_tmpl[0],
                                       priv_tmpl, sizeof priv_tmpl / sizeof priv_tmpl[0], &hpub, &hpriv);
    if (rv != CKR_OK)
        return ckr("C_GenerateKeyPair", rv);
    /* A token that ignored the template must not get away with it. */
    CK_BBOOL never_extractable = CK_FALSE, always_sensitive = CK_FALSE, extractable = CK_TRUE;
    CK_ATTRIBUTE check[] = {
        {CKA_NEVER_EXTRACTABLE, &never_extractable, sizeof never_extractable},
        {CKA_ALWAYS_SENSITIVE, &always_sensitive, sizeof always_sensitive},
        {CKA_EXTRACTABLE, &extractable, sizeof extractable},
    };
    rv = s->f->C_GetAttributeValue(s->session, hpriv, check, sizeof check / sizeof check[0]);
    if (rv != CKR_OK)
        st = ckr("C_GetAttributeValue", rv);
    else if (never_extractable != CK_TRUE || always_sensitive != CK_TRUE || extractable != CK_FALSE)
        st = keel_errorf(KEEL_ERR_KEYSTORE, "pkcs11: token '%s' made key '%s' extractable or not "
                         "sensitive; refusing it", s->token, label);
    else
        st = public_read(s, label, pub);
    if (st != KEEL_OK) {
        /* A key pair we cannot use would block the label forever. */
        CK_OBJECT_HANDLE made[] = {hpriv, hpub};
        for (size_t i = 0; i < 2; i++)
            if ((rv = s->f->C_DestroyObject(s->session, made[i])) != CKR_OK)
                keel_log(KEEL_LOG_WARN, "pkcs11: C_DestroyObject of half-made key '%s': %s (0x%lx)",
                         label, rv_name(rv), (unsigned long)rv);
    }
    return st;
}

static keel_status_t p11_public_key(void *state, const char *label, EVP_PKEY **pub)
{
    return public_read(state, label, pub);
}

/* Token ECDSA gives r || s; Keel's callers and X.509 want DER ECDSA-Sig-Value. */
static keel_status_t sig_to_der(const uint8_t raw[2 * P256_COORD_LEN], uint8_t *out, size_t cap,
                                size_t *outlen)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, P256_COORD_LEN, NULL);
    BIGNUM *sv = BN_bin2bn(raw + P256_COORD_LEN, P256_COORD_LEN, NULL);
    keel_status_t st = KEEL_OK;
    if (sig == NULL || r == NULL || sv == NULL || ECDSA_SIG_set0(sig, r, sv) != 1) {
        BN_free(r);
        BN_free(sv);
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "pkcs11: encode signature");
    } else {
        int n = i2d_ECDSA_SIG(sig, NULL);
        if (n <= 0) {
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "pkcs11: encode signature");
        } else if ((size_t)n > cap) {
            st = keel_errorf(KEEL_ERR_TOO_LARGE, "signature buffer smaller than %d", n);
        } else {
            unsigned char *p = out;
            if (i2d_ECDSA_SIG(sig, &p) != n)
                st = keel_crypto_error(KEEL_ERR_CRYPTO, "pkcs11: encode signature");
            else
                *outlen = (size_t)n;
        }
    }
    ECDSA_SIG_free(sig);
    return st;
}

static keel_status_t p11_sign(void *state, const char *label, const void *msg, size_t len, uint8_t *sig,
                              size_t cap, size_t *siglen)
{
    p11_state_t *s = state;
    CK_OBJECT_HANDLE h;
    keel_status_t st = object_need(s, CKO_PRIVATE_KEY, label, &h);
    if (st != KEEL_OK)
        return st;
    uint8_t digest[KEEL_SHA256_LEN], raw[P11_SIG_RAW_MAX];
    keel_sha256(msg, len, digest);
    CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
    CK_ULONG rawlen = sizeof raw;
    CK_RV rv = s->f->C_SignInit(s->session, &mech, h);
    if (rv != CKR_OK)
        return ckr("C_SignInit", rv);
    rv = s->f->C_Sign(s->session, digest, sizeof digest, raw, &rawlen);
    if (rv != CKR_OK)
        return ckr("C_Sign", rv);
    if (rawlen != 2 * P256_COORD_LEN)
        return keel_errorf(KEEL_ERR_UNSUPPORTED, "pkcs11: key '%s' gave a %lu-byte signature; "
                           "only P-256 is supported", label, (unsigned long)rawlen);
    return sig_to_der(raw, sig, cap, siglen);
}

/* libp11's engine, loaded once per keystore; MODULE_PATH must precede init. */
static keel_status_t engine_start(p11_state_t *s)
{
    ENGINE *e = ENGINE_by_id("dynamic");
    if (e == NULL)
        return keel_crypto_error(KEEL_ERR_KEYSTORE, "pkcs11: OpenSSL dynamic engine");
    if (ENGINE_ctrl_cmd_string(e, "SO_PATH", KEEL_OPENSSL_ENGINES_DIR "/pkcs11.so", 0) != 1 ||
        ENGINE_ctrl_cmd_string(e, "ID", "pkcs11", 0) != 1 ||
        ENGINE_ctrl_cmd_string(e, "LOAD", NULL, 0) != 1) {
        ENGINE_free(e);
        return keel_crypto_error(KEEL_ERR_KEYSTORE,
                                 "pkcs11: load engine " KEEL_OPENSSL_ENGINES_DIR "/pkcs11.so "
                                 "(install libengine-pkcs11-openssl)");
    }
    if (ENGINE_ctrl_cmd_string(e, "MODULE_PATH", s->module, 0) != 1) {
        ENGINE_free(e);
        return keel_crypto_error(KEEL_ERR_KEYSTORE, "pkcs11: engine MODULE_PATH");
    }
    if (ENGINE_init(e) != 1) {
        ENGINE_free(e);
        return keel_crypto_error(KEEL_ERR_KEYSTORE, "pkcs11: engine init");
    }
    if (ENGINE_ctrl_cmd_string(e, "PIN", s->pin, 0) != 1) {
        ENGINE_finish(e);
        ENGINE_free(e);
        /* The OpenSSL error names the command, never its argument. */
        return keel_crypto_error(KEEL_ERR_KEYSTORE, "pkcs11: engine PIN");
    }
    s->engine = e;
    return KEEL_OK;
}

/* RFC 7512 path attribute value: everything outside unreserved is %XX. */
static keel_status_t uri_escape(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p != '\0'; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                    *p == '-' || *p == '.' || *p == '_' || *p == '~';
        size_t need = plain ? 1 : 3;
        if (o + need >= cap)
            return keel_errorf(KEEL_ERR_TOO_LARGE, "pkcs11: URI too long");
        if (plain) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
    return KEEL_OK;
}

static keel_status_t p11_private_key(void *state, const char *label, EVP_PKEY **priv)
{
    p11_state_t *s = state;
    CK_OBJECT_HANDLE h;
    /* Our own lookup first: a clear NOT_FOUND beats the engine's error. */
    keel_status_t st = object_need(s, CKO_PRIVATE_KEY, label, &h);
    if (st == KEEL_OK && s->engine == NULL)
        st = engine_start(s);
    char token[3 * P11_TOKEN_LABEL_LEN + 1], uri[P11_URI_MAX];
    if (st == KEEL_OK)
        st = uri_escape(s->token, token, sizeof token);
    if (st == KEEL_OK)
        st = keel_snprintf(uri, sizeof uri, "pkcs11:token=%s;object=%s;type=private", token, label);
    if (st != KEEL_OK)
        return st;
    *priv = ENGINE_load_private_key(s->engine, uri, NULL, NULL);
    if (*priv == NULL)
        return keel_crypto_error(KEEL_ERR_KEYSTORE, "pkcs11: engine could not load the private key");
    /* libp11 leaves errors from its attempts before login on the queue. */
    ERR_clear_error();
    return KEEL_OK;
}

/* The AES-256 wrapping key labelled `label`, generated on the token when `create`. */
static keel_status_t wrap_key(p11_state_t *s, const char *label, int create, CK_OBJECT_HANDLE *h)
{
    int found = 0;
    keel_status_t st = object_find(s, CKO_SECRET_KEY, label, h, &found);
    if (st != KEEL_OK || found)
        return st;
    if (!create)
        return keel_errorf(KEEL_ERR_NOT_FOUND, "wrapping key '%s' does not exist on token '%s'", label,
                           s->token);
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_AES;
    CK_ULONG value_len = KEEL_AEAD_KEY_LEN;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_MECHANISM mech = {CKM_AES_KEY_GEN, NULL, 0};
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},
        {CKA_KEY_TYPE, &type, sizeof type},
        {CKA_VALUE_LEN, &value_len, sizeof value_len},
        {CKA_TOKEN, &yes, sizeof yes},
        {CKA_PRIVATE, &yes, sizeof yes},
        {CKA_SENSITIVE, &yes, sizeof yes},
        {CKA_EXTRACTABLE, &no, sizeof no},
        {CKA_ENCRYPT, &yes, sizeof yes},
        {CKA_DECRYPT, &yes, sizeof yes},
        {CKA_WRAP, &no, sizeof no},
        {CKA_UNWRAP, &no, sizeof no},
        {CKA_DERIVE, &no, sizeof no},
        {CKA_SIGN, &no, sizeof no},
        {CKA_VERIFY, &no, sizeof no},
        {CKA_MODIFIABLE, &no, sizeof no},
        {CKA_LABEL, UNCONST(label), strlen(label)},
    };
    CK_RV rv = s->f->C_GenerateKey(s->session, &mech, tmpl, sizeof tmpl / sizeof tmpl[0], h);
    return rv == CKR_OK ? KEEL_OK : ckr("C_GenerateKey", rv);
}

static void gcm_params(CK_GCM_PARAMS *p, const uint8_t *iv, const char *ad)
{
    memset(p, 0, sizeof *p);
    p->pIv = UNCONST(iv);
    p->ulIvLen = GCM_IV_LEN;
    p->ulIvBits = GCM_IV_LEN * 8;
    p->pAAD = UNCONST(ad);
    p->ulAADLen = strlen(ad);
    p->ulTagBits = GCM_TAG_LEN * 8;
}

static keel_status_t p11_seal(void *state, const char *label, const char *ad, const uint8_t *secret,
                              size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
    p11_state_t *s = state;
    CK_OBJECT_HANDLE h;
    keel_status_t st = wrap_key(s, label, 1, &h);
    if (st != KEEL_OK)
        return st;
    keel_random_bytes(out, GCM_IV_LEN);
    CK_GCM_PARAMS params;
    gcm_params(&params, out, ad);
    CK_MECHANISM mech = {CKM_AES_GCM, &params, sizeof params};
    CK_ULONG n = cap - GCM_IV_LEN;
    CK_RV rv = s->f->C_EncryptInit(s->session, &mech, h);
    if (rv != CKR_OK)
        return ckr("C_EncryptInit", rv);
    rv = s->f->C_Encrypt(s->session, UNCONST(secret), len, out + GCM_IV_LEN, &n);
    if (rv != CKR_OK)
        st = ckr("C_Encrypt", rv);
    else if (n != len + GCM_TAG_LEN)
        st = keel_errorf(KEEL_ERR_KEYSTORE, "pkcs11: C_Encrypt returned %lu bytes for %zu",
                         (unsigned long)n, len);
    if (st != KEEL_OK) {
        keel_wipe(out, cap);
        return st;
    }
    *outlen = GCM_IV_LEN + (size_t)n;
    return KEEL_OK;
}

static keel_status_t p11_unseal(void *state, const char *label, const char *ad, const uint8_t *blob,
                                size_t bloblen, uint8_t *out, size_t cap, size_t *outlen)
{
    p11_state_t *s = state;
    if (bloblen < GCM_IV_LEN + GCM_TAG_LEN)
        return keel_errorf(KEEL_ERR_FORMAT, "sealed blob shorter than its overhead");
    size_t ptlen = bloblen - GCM_IV_LEN - GCM_TAG_LEN;
    if (cap < ptlen)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "unseal output buffer too small");
    CK_OBJECT_HANDLE h;
    keel_status_t st = wrap_key(s, label, 0, &h);
    if (st != KEEL_OK)
        return st;
    CK_GCM_PARAMS params;
    gcm_params(&params, blob, ad);
    CK_MECHANISM mech = {CKM_AES_GCM, &params, sizeof params};
    CK_RV rv = s->f->C_DecryptInit(s->session, &mech, h);
    if (rv != CKR_OK)
        return ckr("C_DecryptInit", rv);
    /* Tokens differ on how much room they want (some, the tag too): decrypt
     * into a buffer large enough for any of them, then copy out. */
    uint8_t pt[KEEL_KEYSTORE_SEAL_MAX + KEEL_KEYSTORE_SEAL_OVERHEAD];
    CK_ULONG n = sizeof pt;
    rv = s->f->C_Decrypt(s->session, UNCONST(blob + GCM_IV_LEN), bloblen - GCM_IV_LEN, pt, &n);
    /* How tokens report a tag that does not verify. SoftHSM2 up to 2.6
     * says CKR_GENERAL_ERROR; C_DecryptInit has already accepted the key and
     * the parameters, so that is what it means here. */
    if (rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_ENCRYPTED_DATA_LEN_RANGE ||
        rv == CKR_AEAD_DECRYPT_FAILED || rv == CKR_SIGNATURE_INVALID || rv == CKR_GENERAL_ERROR)
        st = keel_errorf(KEEL_ERR_VERIFY, "sealed blob does not open with wrapping key '%s' and this "
                         "associated data (%s)", label, rv_name(rv));
    else if (rv != CKR_OK)
        st = ckr("C_Decrypt", rv);
    else if (n != ptlen)
        st = keel_errorf(KEEL_ERR_KEYSTORE, "pkcs11: C_Decrypt returned %lu bytes for %zu",
                         (unsigned long)n, ptlen);
    if (st == KEEL_OK) {
        memcpy(out, pt, ptlen);
        *outlen = ptlen;
    }
    keel_wipe(pt, sizeof pt);
    return st;
}

static keel_status_t p11_destroy(void *state, const char *label)
{
    p11_state_t *s = state;
    static const CK_OBJECT_CLASS classes[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_SECRET_KEY};
    for (size_t c = 0; c < sizeof classes / sizeof classes[0]; c++) {
        for (int round = 0;; round++) {
            CK_OBJECT_HANDLE hs[P11_DESTROY_BATCH];
            CK_ULONG n = 0;
            keel_status_t st = objects_find(s, classes[c], label, hs, P11_DESTROY_BATCH, &n);
            if (st != KEEL_OK)
                return st;
            if (n == 0)
                break;
            if (round == P11_DESTROY_ROUNDS)
                return keel_errorf(KEEL_ERR_KEYSTORE, "pkcs11: %ss labelled '%s' survive C_DestroyObject",
                                   class_name(classes[c]), label);
            for (CK_ULONG i = 0; i < n; i++) {
                CK_RV rv = s->f->C_DestroyObject(s->session, hs[i]);
                if (rv != CKR_OK)
                    return ckr("C_DestroyObject", rv);
            }
        }
    }
    return KEEL_OK;
}

const keel_keystore_driver_t keel_keystore_pkcs11_driver = {
    .name = "pkcs11",
    .open = p11_open,
    .close = p11_close,
    .generate = p11_generate,
    .public_key = p11_public_key,
    .sign = p11_sign,
    .private_key = p11_private_key,
    .seal = p11_seal,
    .unseal = p11_unseal,
    .destroy = p11_destroy,
};

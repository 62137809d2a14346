/*
 * The PKCS#11 keystore driver against a real token: the group setup makes a
 * SoftHSM2 token in a private temporary directory (fresh random PINs, never
 * committed), and the test reads the token's attributes through its own
 * PKCS#11 session to prove the keys are sensitive and never extractable.
 */
#include "keel/crypto.h"
#include "keel/keystore.h"
#include "keel/vault.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <p11-kit/pkcs11.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define TOKEN "keeltest"
#define PIN_ENV "KEEL_TEST_P11_PIN"
#define PIN_HEX_BYTES 12
#define PIN_LEN (2 * PIN_HEX_BYTES)

static char g_dir[KEEL_PATH_MAX];
static char g_pin_file[KEEL_PATH_MAX];
static char g_module[KEEL_PATH_MAX];
static char g_pin[PIN_LEN + 1];

#define assert_ok(expr)                                                                            \
    do {                                                                                           \
        keel_status_t st_ = (expr);                                                                \
        if (st_ != KEEL_OK)                                                                        \
            fail_msg("%s: %s: %s", #expr, keel_status_str(st_), keel_error_message());             \
    } while (0)

#define assert_status(expr, want)                                                                  \
    do {                                                                                           \
        keel_status_t st_ = (expr);                                                                \
        if (st_ != (want))                                                                         \
            fail_msg("%s: got %s (%s), want %s", #expr, keel_status_str(st_), keel_error_message(), \
                     keel_status_str(want));                                                       \
        assert_null(strstr(keel_error_message(), g_pin));                                          \
    } while (0)

/* KEEL_PKCS11_MODULE first, then where Debian and friends put SoftHSM2. */
static int module_find(char *out, size_t cap)
{
    static const char *const candidates[] = {
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/arm-linux-gnueabihf/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    };
    const char *env = getenv("KEEL_PKCS11_MODULE");
    if (env != NULL && env[0] != '\0')
        return keel_strlcpy(out, env, cap) == KEEL_OK && access(out, R_OK) == 0 ? 0 : -1;
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++)
        if (access(candidates[i], R_OK) == 0)
            return keel_strlcpy(out, candidates[i], cap) == KEEL_OK ? 0 : -1;
    return -1;
}

static void random_pin(char out[PIN_LEN + 1])
{
    uint8_t raw[PIN_HEX_BYTES];
    keel_random_bytes(raw, sizeof raw);
    if (keel_hex_encode(raw, sizeof raw, out, PIN_LEN + 1) != KEEL_OK)
        out[0] = '\0';
    keel_wipe(raw, sizeof raw);
}

/* Runs argv with stdout silenced; 0 if it exits 0. */
static int run(char *const argv[])
{
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0)
        return -1;
    pid_t pid;
    int rc = posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    if (rc == 0)
        rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(rc));
        return -1;
    }
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static keel_status_t write_text(const char *path, const char *text, mode_t mode)
{
    return keel_file_write_atomic(path, text, strlen(text), mode);
}

static int group_setup(void **unused)
{
    if (keel_crypto_init() != KEEL_OK)
        return -1;
    if (module_find(g_module, sizeof g_module) != 0) {
        fprintf(stderr, "SoftHSM2 not found: install softhsm2 or set KEEL_PKCS11_MODULE\n");
        return -1;
    }
    const char *tmp = getenv("TMPDIR");
    char conf[KEEL_PATH_MAX], tokens[KEEL_PATH_MAX], text[KEEL_PATH_MAX + 128];
    if (keel_snprintf(g_dir, sizeof g_dir, "%s/keel-p11-XXXXXX", tmp && tmp[0] ? tmp : "/tmp") != KEEL_OK ||
        mkdtemp(g_dir) == NULL) {
        fprintf(stderr, "mkdtemp %s: %s\n", g_dir, strerror(errno));
        g_dir[0] = '\0';
        return -1;
    }
    if (keel_path_join(tokens, sizeof tokens, g_dir, "tokens") != KEEL_OK ||
        keel_dir_make(tokens, 0700) != KEEL_OK ||
        keel_path_join(conf, sizeof conf, g_dir, "softhsm2.conf") != KEEL_OK ||
        keel_snprintf(text, sizeof text,
                      "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n",
                      tokens) != KEEL_OK ||
        write_text(conf, text, 0600) != KEEL_OK || setenv("SOFTHSM2_CONF", conf, 1) != 0) {
        fprintf(stderr, "SoftHSM2 configuration: %s\n", keel_error_message());
        return -1;
    }
    char so_pin[PIN_LEN + 1];
    random_pin(so_pin);
    random_pin(g_pin);
    char *argv[] = {"softhsm2-util", "--init-token", "--free", "--label", TOKEN,
                    "--so-pin", so_pin, "--pin", g_pin, NULL};
    int rc = run(argv);
    keel_wipe(so_pin, sizeof so_pin);
    if (rc != 0) {
        fprintf(stderr, "softhsm2-util --init-token failed\n");
        return -1;
    }
    char line[PIN_LEN + 2];
    if (keel_path_join(g_pin_file, sizeof g_pin_file, g_dir, "user.pin") != KEEL_OK ||
        keel_snprintf(line, sizeof line, "%s\n", g_pin) != KEEL_OK ||
        write_text(g_pin_file, line, 0600) != KEEL_OK) {
        keel_wipe(line, sizeof line);
        fprintf(stderr, "PIN file: %s\n", keel_error_message());
        return -1;
    }
    keel_wipe(line, sizeof line);
    return 0;
}

static int group_teardown(void **unused)
{
    int rc = 0;
    if (g_dir[0] != '\0' && keel_dir_remove_tree(g_dir) != KEEL_OK) {
        fprintf(stderr, "cleanup: %s\n", keel_error_message());
        rc = -1;
    }
    unsetenv("SOFTHSM2_CONF");
    unsetenv(PIN_ENV);
    keel_wipe(g_pin, sizeof g_pin);
    return rc;
}

static keel_keystore_config_t config(void)
{
    keel_keystore_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.driver = "pkcs11";
    cfg.module = g_module;
    cfg.token = TOKEN;
    cfg.pin_file = g_pin_file;
    return cfg;
}

static keel_keystore_t *ks_open(void)
{
    keel_keystore_config_t cfg = config();
    keel_keystore_t *ks = NULL;
    assert_ok(keel_keystore_open(&cfg, &ks));
    assert_string_equal(keel_keystore_driver(ks), "pkcs11");
    return ks;
}

/* Every test that needs a keystore gets one, closed even when it fails. */
static int ks_setup(void **state)
{
    *state = ks_open();
    return 0;
}

static int ks_teardown(void **state)
{
    keel_keystore_close(*state);
    *state = NULL;
    return 0;
}

/* The test's own view of the token, to check what the driver created. */
typedef struct {
    void *dl;
    CK_FUNCTION_LIST_PTR f;
    int initialized;
    CK_SESSION_HANDLE session;
} token_view_t;

static void view_open(token_view_t *v)
{
    memset(v, 0, sizeof *v);
    v->dl = dlopen(g_module, RTLD_NOW | RTLD_LOCAL);
    assert_non_null(v->dl);
    CK_C_GetFunctionList get_list = (CK_C_GetFunctionList)dlsym(v->dl, "C_GetFunctionList");
    assert_non_null(get_list);
    assert_int_equal(get_list(&v->f), CKR_OK);
    CK_C_INITIALIZE_ARGS args;
    memset(&args, 0, sizeof args);
    args.flags = CKF_OS_LOCKING_OK;
    CK_RV rv = v->f->C_Initialize(&args);
    assert_true(rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED);
    v->initialized = rv == CKR_OK;
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16;
    assert_int_equal(v->f->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO info;
        assert_int_equal(v->f->C_GetTokenInfo(slots[i], &info), CKR_OK);
        if (memcmp(info.label, TOKEN, strlen(TOKEN)) == 0 && info.label[strlen(TOKEN)] == ' ') {
            assert_int_equal(v->f->C_OpenSession(slots[i], CKF_SERIAL_SESSION, NULL, NULL, &v->session),
                             CKR_OK);
            return;
        }
    }
    fail_msg("token %s not found", TOKEN);
}

static void view_close(token_view_t *v)
{
    assert_int_equal(v->f->C_CloseSession(v->session), CKR_OK);
    if (v->initialized)
        assert_int_equal(v->f->C_Finalize(NULL), CKR_OK);
    assert_int_equal(dlclose(v->dl), 0);
}

static CK_OBJECT_HANDLE view_find(token_view_t *v, CK_OBJECT_CLASS cls, const char *label)
{
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},
        {CKA_LABEL, (void *)(uintptr_t)label, strlen(label)},
    };
    CK_OBJECT_HANDLE h[2];
    CK_ULONG n = 0;
    assert_int_equal(v->f->C_FindObjectsInit(v->session, tmpl, 2), CKR_OK);
    assert_int_equal(v->f->C_FindObjects(v->session, h, 2, &n), CKR_OK);
    assert_int_equal(v->f->C_FindObjectsFinal(v->session), CKR_OK);
    assert_int_equal(n, 1);
    return h[0];
}

static void assert_attr_bool(token_view_t *v, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
                             CK_BBOOL want, const char *name)
{
    CK_BBOOL got = 0xff;
    CK_ATTRIBUTE a = {type, &got, sizeof got};
    CK_RV rv = v->f->C_GetAttributeValue(v->session, h, &a, 1);
    if (rv != CKR_OK || got != want)
        fail_msg("%s: rv 0x%lx, value %d, want %d", name, (unsigned long)rv, got, want);
}

#define ASSERT_ATTR(v, h, attr, want) assert_attr_bool(v, h, attr, want, #attr)

/* Key material the token will not hand out. */
static void assert_value_sensitive(token_view_t *v, CK_OBJECT_HANDLE h)
{
    CK_ATTRIBUTE a = {CKA_VALUE, NULL, 0};
    assert_int_equal(v->f->C_GetAttributeValue(v->session, h, &a, 1), CKR_ATTRIBUTE_SENSITIVE);
}

static void test_generate_and_sign(void **state)
{
    keel_keystore_t *ks = *state;
    EVP_PKEY *pub = NULL, *again = NULL;
    assert_ok(keel_keystore_generate(ks, "device-id", &pub));
    assert_int_equal(EVP_PKEY_get_bits(pub), 256);
    assert_ok(keel_keystore_public_key(ks, "device-id", &again));
    assert_int_equal(EVP_PKEY_eq(pub, again), 1);

    static const char msg[] = "attestation nonce 42";
    uint8_t sig[KEEL_ECDSA_SIG_MAX];
    size_t siglen = 0;
    assert_ok(keel_keystore_sign(ks, "device-id", msg, sizeof msg - 1, sig, sizeof sig, &siglen));
    assert_true(siglen > 8 && siglen <= KEEL_ECDSA_SIG_MAX);
    assert_int_equal(sig[0], 0x30);
    assert_ok(keel_ecdsa_verify(pub, msg, sizeof msg - 1, sig, siglen));
    assert_status(keel_ecdsa_verify(pub, "attestation nonce 43", sizeof msg - 1, sig, siglen),
                  KEEL_ERR_VERIFY);
    assert_ok(keel_ecdsa_verify(again, msg, sizeof msg - 1, sig, siglen));

    assert_ok(keel_keystore_sign(ks, "device-id", NULL, 0, sig, sizeof sig, &siglen));
    assert_ok(keel_ecdsa_verify(pub, "", 0, sig, siglen));

    assert_status(keel_keystore_sign(ks, "no-such-key", msg, 1, sig, sizeof sig, &siglen),
                  KEEL_ERR_NOT_FOUND);
    EVP_PKEY_free(again);
    EVP_PKEY_free(pub);
    assert_ok(keel_keystore_destroy(ks, "device-id"));
}

static void test_key_attributes(void **state)
{
    keel_keystore_t *ks = *state;
    EVP_PKEY *pub = NULL;
    assert_ok(keel_keystore_generate(ks, "attr-key", &pub));
    EVP_PKEY_free(pub);
    uint8_t secret[32], blob[32 + KEEL_KEYSTORE_SEAL_OVERHEAD];
    size_t bloblen = 0;
    keel_random_bytes(secret, sizeof secret);
    assert_ok(keel_keystore_seal(ks, "attr-wrap", "test", secret, sizeof secret, blob, sizeof blob,
                                 &bloblen));

    token_view_t v;
    view_open(&v);
    CK_OBJECT_HANDLE priv = view_find(&v, CKO_PRIVATE_KEY, "attr-key");
    ASSERT_ATTR(&v, priv, CKA_TOKEN, CK_TRUE);
    ASSERT_ATTR(&v, priv, CKA_PRIVATE, CK_TRUE);
    ASSERT_ATTR(&v, priv, CKA_SENSITIVE, CK_TRUE);
    ASSERT_ATTR(&v, priv, CKA_EXTRACTABLE, CK_FALSE);
    ASSERT_ATTR(&v, priv, CKA_ALWAYS_SENSITIVE, CK_TRUE);
    ASSERT_ATTR(&v, priv, CKA_NEVER_EXTRACTABLE, CK_TRUE);
    ASSERT_ATTR(&v, priv, CKA_SIGN, CK_TRUE);
    assert_value_sensitive(&v, priv);

    /* The same CKA_ID on both halves lets libp11 pair them. */
    CK_OBJECT_HANDLE pubh = view_find(&v, CKO_PUBLIC_KEY, "attr-key");
    ASSERT_ATTR(&v, pubh, CKA_TOKEN, CK_TRUE);
    ASSERT_ATTR(&v, pubh, CKA_VERIFY, CK_TRUE);
    uint8_t id1[64], id2[64];
    CK_ATTRIBUTE a1 = {CKA_ID, id1, sizeof id1}, a2 = {CKA_ID, id2, sizeof id2};
    assert_int_equal(v.f->C_GetAttributeValue(v.session, priv, &a1, 1), CKR_OK);
    assert_int_equal(v.f->C_GetAttributeValue(v.session, pubh, &a2, 1), CKR_OK);
    assert_true(a1.ulValueLen > 0);
    assert_int_equal(a1.ulValueLen, a2.ulValueLen);
    assert_memory_equal(id1, id2, a1.ulValueLen);

    CK_OBJECT_HANDLE wrap = view_find(&v, CKO_SECRET_KEY, "attr-wrap");
    ASSERT_ATTR(&v, wrap, CKA_TOKEN, CK_TRUE);
    ASSERT_ATTR(&v, wrap, CKA_SENSITIVE, CK_TRUE);
    ASSERT_ATTR(&v, wrap, CKA_EXTRACTABLE, CK_FALSE);
    ASSERT_ATTR(&v, wrap, CKA_ALWAYS_SENSITIVE, CK_TRUE);
    ASSERT_ATTR(&v, wrap, CKA_NEVER_EXTRACTABLE, CK_TRUE);
    ASSERT_ATTR(&v, wrap, CKA_ENCRYPT, CK_TRUE);
    ASSERT_ATTR(&v, wrap, CKA_DECRYPT, CK_TRUE);
    CK_KEY_TYPE type = 0;
    CK_ULONG vlen = 0;
    CK_ATTRIBUTE ka[] = {{CKA_KEY_TYPE, &type, sizeof type}, {CKA_VALUE_LEN, &vlen, sizeof vlen}};
    assert_int_equal(v.f->C_GetAttributeValue(v.session, wrap, ka, 2), CKR_OK);
    assert_int_equal(type, CKK_AES);
    assert_int_equal(vlen, 32);
    assert_value_sensitive(&v, wrap);
    view_close(&v);

    assert_ok(keel_keystore_destroy(ks, "attr-key"));
    assert_ok(keel_keystore_destroy(ks, "attr-wrap"));
}

static void test_generate_existing(void **state)
{
    keel_keystore_t *ks = *state;
    EVP_PKEY *pub = NULL, *second = NULL;
    assert_ok(keel_keystore_generate(ks, "taken", &pub));
    assert_status(keel_keystore_generate(ks, "taken", &second), KEEL_ERR_EXISTS);
    assert_null(second);
    /* The first key is untouched. */
    EVP_PKEY *now = NULL;
    assert_ok(keel_keystore_public_key(ks, "taken", &now));
    assert_int_equal(EVP_PKEY_eq(pub, now), 1);
    EVP_PKEY_free(now);
    EVP_PKEY_free(pub);
    assert_ok(keel_keystore_destroy(ks, "taken"));
}

static void test_private_key_engine(void **state)
{
    keel_keystore_t *ks = *state;
    EVP_PKEY *pub = NULL;
    assert_ok(keel_keystore_generate(ks, "tls-client", &pub));
    static const char msg[] = "TLS CertificateVerify transcript";
    uint8_t sig[KEEL_ECDSA_SIG_MAX];
    size_t siglen = 0;
    for (int round = 0; round < 2; round++) {
        EVP_PKEY *priv = NULL;
        assert_ok(keel_keystore_private_key(ks, "tls-client", &priv));
        assert_non_null(priv);
        assert_ok(keel_ecdsa_sign(priv, msg, sizeof msg - 1, sig, sizeof sig, &siglen));
        assert_ok(keel_ecdsa_verify(pub, msg, sizeof msg - 1, sig, siglen));
        assert_status(keel_ecdsa_verify(pub, msg, sizeof msg - 2, sig, siglen), KEEL_ERR_VERIFY);
        EVP_PKEY_free(priv);
    }
    /* The driver's own signing still works next to the engine. */
    assert_ok(keel_keystore_sign(ks, "tls-client", msg, sizeof msg - 1, sig, sizeof sig, &siglen));
    assert_ok(keel_ecdsa_verify(pub, msg, sizeof msg - 1, sig, siglen));
    EVP_PKEY *none = NULL;
    assert_status(keel_keystore_private_key(ks, "no-such-key", &none), KEEL_ERR_NOT_FOUND);
    assert_null(none);
    EVP_PKEY_free(pub);
    assert_ok(keel_keystore_destroy(ks, "tls-client"));
}

static void test_seal_unseal(void **state)
{
    keel_keystore_t *ks = *state;
    uint8_t secret[32], blob[sizeof secret + KEEL_KEYSTORE_SEAL_OVERHEAD];
    uint8_t blob2[sizeof blob], out[sizeof secret + KEEL_KEYSTORE_SEAL_OVERHEAD];
    size_t bloblen = 0, bloblen2 = 0, outlen = 0;
    keel_random_bytes(secret, sizeof secret);

    assert_status(keel_keystore_unseal(ks, "vault-wrap", "vault-data-key", blob, 40, out, sizeof out,
                                       &outlen), KEEL_ERR_NOT_FOUND);
    assert_ok(keel_keystore_seal(ks, "vault-wrap", "vault-data-key", secret, sizeof secret, blob,
                                 sizeof blob, &bloblen));
    assert_int_equal(bloblen, 12 + sizeof secret + 16);
    assert_true(bloblen <= sizeof secret + KEEL_KEYSTORE_SEAL_OVERHEAD);
    assert_ok(keel_keystore_unseal(ks, "vault-wrap", "vault-data-key", blob, bloblen, out, sizeof out,
                                   &outlen));
    assert_int_equal(outlen, sizeof secret);
    assert_memory_equal(out, secret, sizeof secret);

    /* A second seal reuses the key with a fresh IV. */
    assert_ok(keel_keystore_seal(ks, "vault-wrap", "vault-data-key", secret, sizeof secret, blob2,
                                 sizeof blob2, &bloblen2));
    assert_int_equal(bloblen2, bloblen);
    assert_memory_not_equal(blob, blob2, bloblen);
    assert_ok(keel_keystore_unseal(ks, "vault-wrap", "vault-data-key", blob2, bloblen2, out,
                                   sizeof out, &outlen));
    assert_memory_equal(out, secret, sizeof secret);

    /* Any flipped bit: IV, ciphertext, tag. */
    static const size_t flips[] = {0, 11, 12, 12 + 31, 12 + 32, 12 + 32 + 15};
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        memcpy(blob2, blob, bloblen);
        blob2[flips[i]] ^= 0x01;
        assert_status(keel_keystore_unseal(ks, "vault-wrap", "vault-data-key", blob2, bloblen, out,
                                           sizeof out, &outlen), KEEL_ERR_VERIFY);
    }
    assert_status(keel_keystore_unseal(ks, "vault-wrap", "vault-data-key", blob, bloblen - 1, out,
                                       sizeof out, &outlen), KEEL_ERR_VERIFY);
    assert_status(keel_keystore_unseal(ks, "vault-wrap", "vault-data-key", blob, 27, out, sizeof out,
                                       &outlen), KEEL_ERR_FORMAT);
    assert_status(keel_keystore_unseal(ks, "vault-wrap", "vault-data-kez", blob, bloblen, out,
                                       sizeof out, &outlen), KEEL_ERR_VERIFY);
    assert_status(keel_keystore_unseal(ks, "vault-wrap", "", blob, bloblen, out, sizeof out, &outlen),
                  KEEL_ERR_VERIFY);

    /* Another label is another wrapping key. */
    assert_ok(keel_keystore_seal(ks, "other-wrap", "x", secret, 1, blob2, sizeof blob2, &bloblen2));
    assert_status(keel_keystore_unseal(ks, "other-wrap", "vault-data-key", blob, bloblen, out,
                                       sizeof out, &outlen), KEEL_ERR_VERIFY);

    /* Largest secret the core accepts, with the declared overhead. */
    static uint8_t big[KEEL_KEYSTORE_SEAL_MAX], bigblob[KEEL_KEYSTORE_SEAL_MAX + KEEL_KEYSTORE_SEAL_OVERHEAD],
        bigout[KEEL_KEYSTORE_SEAL_MAX];
    keel_random_bytes(big, sizeof big);
    assert_ok(keel_keystore_seal(ks, "vault-wrap", "big", big, sizeof big, bigblob, sizeof bigblob,
                                 &bloblen));
    assert_ok(keel_keystore_unseal(ks, "vault-wrap", "big", bigblob, bloblen, bigout, sizeof bigout,
                                   &outlen));
    assert_int_equal(outlen, sizeof big);
    assert_memory_equal(bigout, big, sizeof big);
    assert_status(keel_keystore_unseal(ks, "vault-wrap", "big", bigblob, bloblen, bigout,
                                       sizeof bigout - 1, &outlen), KEEL_ERR_TOO_LARGE);

    assert_ok(keel_keystore_destroy(ks, "vault-wrap"));
    assert_ok(keel_keystore_destroy(ks, "other-wrap"));
    keel_wipe(secret, sizeof secret);
    keel_wipe(out, sizeof out);
}

static void test_persists_across_sessions(void **state)
{
    keel_keystore_t *ks = *state;
    EVP_PKEY *pub = NULL, *later = NULL;
    uint8_t secret[16] = "sixteen byte key", blob[16 + KEEL_KEYSTORE_SEAL_OVERHEAD], out[16];
    size_t bloblen = 0, outlen = 0;
    assert_ok(keel_keystore_generate(ks, "persist", &pub));
    assert_ok(keel_keystore_seal(ks, "persist", "ad", secret, sizeof secret, blob, sizeof blob, &bloblen));
    keel_keystore_close(ks);
    *state = ks = NULL;

    *state = ks = ks_open();
    assert_ok(keel_keystore_public_key(ks, "persist", &later));
    assert_int_equal(EVP_PKEY_eq(pub, later), 1);
    assert_ok(keel_keystore_unseal(ks, "persist", "ad", blob, bloblen, out, sizeof out, &outlen));
    assert_memory_equal(out, secret, sizeof secret);
    EVP_PKEY_free(later);
    EVP_PKEY_free(pub);
    assert_ok(keel_keystore_destroy(ks, "persist"));
}

static void test_destroy(void **state)
{
    keel_keystore_t *ks = *state;
    EVP_PKEY *pub = NULL, *none = NULL;
    uint8_t secret[8] = "12345678", blob[8 + KEEL_KEYSTORE_SEAL_OVERHEAD], out[8], sig[KEEL_ECDSA_SIG_MAX];
    size_t bloblen = 0, outlen = 0, siglen = 0;
    assert_ok(keel_keystore_generate(ks, "doomed", &pub));
    EVP_PKEY_free(pub);
    assert_ok(keel_keystore_seal(ks, "doomed", "ad", secret, sizeof secret, blob, sizeof blob, &bloblen));

    assert_ok(keel_keystore_destroy(ks, "doomed"));
    assert_status(keel_keystore_unseal(ks, "doomed", "ad", blob, bloblen, out, sizeof out, &outlen),
                  KEEL_ERR_NOT_FOUND);
    assert_status(keel_keystore_public_key(ks, "doomed", &none), KEEL_ERR_NOT_FOUND);
    assert_status(keel_keystore_private_key(ks, "doomed", &none), KEEL_ERR_NOT_FOUND);
    assert_status(keel_keystore_sign(ks, "doomed", "m", 1, sig, sizeof sig, &siglen), KEEL_ERR_NOT_FOUND);
    assert_null(none);
    /* Nothing left to destroy is not an error, and the label is free again. */
    assert_ok(keel_keystore_destroy(ks, "doomed"));
    assert_ok(keel_keystore_destroy(ks, "never-existed"));
    assert_ok(keel_keystore_generate(ks, "doomed", &pub));
    EVP_PKEY_free(pub);
    assert_ok(keel_keystore_destroy(ks, "doomed"));

    token_view_t v;
    view_open(&v);
    CK_ATTRIBUTE tmpl[] = {{CKA_LABEL, "doomed", 6}};
    CK_OBJECT_HANDLE h[4];
    CK_ULONG n = 99;
    assert_int_equal(v.f->C_FindObjectsInit(v.session, tmpl, 1), CKR_OK);
    assert_int_equal(v.f->C_FindObjects(v.session, h, 4, &n), CKR_OK);
    assert_int_equal(v.f->C_FindObjectsFinal(v.session), CKR_OK);
    assert_int_equal(n, 0);
    view_close(&v);
}

/* PKCS#11 state is per process: a second handle on the same token shares
 * the first one's C_Initialize and login, and must be closed first. */
static void test_two_handles(void **state)
{
    keel_keystore_t *first = *state;
    keel_keystore_t *second = ks_open();
    EVP_PKEY *pub = NULL;
    uint8_t sig[KEEL_ECDSA_SIG_MAX];
    size_t siglen = 0;
    assert_ok(keel_keystore_generate(second, "shared", &pub));
    assert_ok(keel_keystore_sign(first, "shared", "m", 1, sig, sizeof sig, &siglen));
    assert_ok(keel_ecdsa_verify(pub, "m", 1, sig, siglen));
    keel_keystore_close(second);
    assert_ok(keel_keystore_sign(first, "shared", "n", 1, sig, sizeof sig, &siglen));
    assert_ok(keel_ecdsa_verify(pub, "n", 1, sig, siglen));
    EVP_PKEY_free(pub);
    assert_ok(keel_keystore_destroy(first, "shared"));
}

static void test_pin_from_env(void **unused)
{
    keel_keystore_config_t cfg = config();
    cfg.pin_file = NULL;
    cfg.pin_env = PIN_ENV;
    keel_keystore_t *ks = NULL;
    unsetenv(PIN_ENV);
    assert_status(keel_keystore_open(&cfg, &ks), KEEL_ERR_CONFIG);
    assert_null(ks);
    assert_int_equal(setenv(PIN_ENV, g_pin, 1), 0);
    assert_ok(keel_keystore_open(&cfg, &ks));
    EVP_PKEY *pub = NULL;
    assert_ok(keel_keystore_generate(ks, "env-key", &pub));
    EVP_PKEY_free(pub);
    assert_ok(keel_keystore_destroy(ks, "env-key"));
    keel_keystore_close(ks);
    unsetenv(PIN_ENV);
}

static void test_wrong_pin(void **unused)
{
    char wrong[PIN_LEN + 1], path[KEEL_PATH_MAX];
    random_pin(wrong);
    assert_ok(keel_path_join(path, sizeof path, g_dir, "wrong.pin"));
    assert_ok(write_text(path, wrong, 0600));
    keel_keystore_config_t cfg = config();
    cfg.pin_file = path;
    keel_keystore_t *ks = NULL;
    assert_status(keel_keystore_open(&cfg, &ks), KEEL_ERR_KEYSTORE);
    assert_null(ks);
    assert_non_null(strstr(keel_error_message(), "C_Login"));
    assert_non_null(strstr(keel_error_message(), "CKR_PIN_INCORRECT"));
    assert_null(strstr(keel_error_message(), wrong));

    /* The same through the environment. */
    cfg.pin_file = NULL;
    cfg.pin_env = PIN_ENV;
    assert_int_equal(setenv(PIN_ENV, wrong, 1), 0);
    assert_status(keel_keystore_open(&cfg, &ks), KEEL_ERR_KEYSTORE);
    assert_null(strstr(keel_error_message(), wrong));
    unsetenv(PIN_ENV);
    assert_ok(keel_file_shred(path));
    keel_wipe(wrong, sizeof wrong);

    /* The right PIN still works afterwards. */
    ks = ks_open();
    keel_keystore_close(ks);
}

static void test_pin_file_checks(void **unused)
{
    char path[KEEL_PATH_MAX];
    assert_ok(keel_path_join(path, sizeof path, g_dir, "loose.pin"));
    assert_ok(write_text(path, g_pin, 0644));
    keel_keystore_config_t cfg = config();
    cfg.pin_file = path;
    keel_keystore_t *ks = NULL;
    assert_status(keel_keystore_open(&cfg, &ks), KEEL_ERR_CONFIG);
    assert_non_null(strstr(keel_error_message(), "0600"));
    assert_ok(keel_file_shred(path));

    assert_ok(write_text(path, "\n", 0600));
    assert_status(keel_keystore_open(&cfg, &ks), KEEL_ERR_CONFIG);
    char big[400];
    memset(big, '7', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_ok(write_text(path, big, 0600));
    assert_status(keel_keystore_open(&cfg, &ks), KEEL_ERR_CONFIG);
    /* Only the first line is the PIN: a second line does not sneak into it. */
    char two_lines[PIN_LEN + 16];
    snprintf(two_lines, sizeof two_lines, "%s\nextra\n", g_pin);
    assert_ok(keel_file_shred(path));
    assert_ok(write_text(path, two_lines, 0600));
    assert_ok(keel_keystore_open(&cfg, &ks));
    keel_keystore_close(ks);
    ks = NULL;
    assert_ok(keel_file_shred(path));
    /* A symbolic link is not followed to a PIN. */
    char target[KEEL_PATH_MAX];
    assert_ok(keel_path_join(target, sizeof target, g_dir, "target.pin"));
    assert_ok(write_text(target, g_pin, 0600));
    assert_int_equal(symlink(target, path), 0);
    assert_status(keel_keystore_open(&cfg, &ks), KEEL_ERR_CONFIG);
    assert_int_equal(unlink(path), 0);
    assert_ok(keel_file_shred(target));
    cfg.pin_file = path;
    assert_status(keel_keystore_open(&cfg, &ks), KEEL_ERR_CONFIG);
    assert_null(ks);
}

static void test_bad_config(void **unused)
{
    keel_keystore_t *ks = NULL;
    keel_keystore_config_t cfg = config();
    cfg.token = "no-such-token";
    assert_status(keel_keystore_open(&cfg, &ks), KEEL_ERR_CONFIG);
    assert_non_null(strstr(keel_error_message(), "no token labelled 'no-such-token'"));
    assert_non_null(strstr(keel_error_message(), "'" TOKEN "'"));
    assert_null(ks);

    cfg = config();
    cfg.token = "a-token-label-longer-than-32-bytes";
    assert_status(keel_keystore_open(&cfg, &ks), KEEL_ERR_ARG);
    cfg = config();
    cfg.module = NULL;
    assert_status(keel_keystore_open(&cfg, &ks), KEEL_ERR_ARG);
    cfg = config();
    cfg.pin_file = NULL;
    assert_status(keel_keystore_open(&cfg, &ks), KEEL_ERR_ARG);
    cfg = config();
    cfg.module = "/nonexistent/libpkcs11.so";
    assert_status(keel_keystore_open(&cfg, &ks), KEEL_ERR_CONFIG);
    assert_non_null(strstr(keel_error_message(), "cannot load module"));
    cfg.module = "libc.so.6";
    assert_status(keel_keystore_open(&cfg, &ks), KEEL_ERR_CONFIG);
    assert_non_null(strstr(keel_error_message(), "C_GetFunctionList"));
    assert_null(ks);
}

/* The vault's data key wrapped by the token: secrets round-trip, a copy of the
 * vault is useless without the token's key, and erase destroys that key. */
static void test_vault_on_token(void **state)
{
    keel_keystore_t *ks = *state;
    char vdir[KEEL_PATH_MAX + 16];
    snprintf(vdir, sizeof vdir, "%s/vault", g_dir);
    keel_vault_t *v = NULL;
    assert_ok(keel_vault_open(vdir, ks, &v));
    assert_ok(keel_vault_secret_put(v, "wifi-psk", "correct horse", 13));
    keel_vault_close(v);
    assert_ok(keel_vault_open(vdir, ks, &v));
    uint8_t out[64];
    size_t n = 0;
    assert_ok(keel_vault_secret_get(v, "wifi-psk", out, sizeof out, &n));
    assert_int_equal(n, 13);
    assert_memory_equal(out, "correct horse", 13);
    /* The wrapping key lives on the token, sensitive and never extractable. */
    token_view_t tv;
    view_open(&tv);
    CK_OBJECT_HANDLE h = view_find(&tv, CKO_SECRET_KEY, KEEL_VAULT_WRAP_LABEL);
    ASSERT_ATTR(&tv, h, CKA_SENSITIVE, CK_TRUE);
    ASSERT_ATTR(&tv, h, CKA_EXTRACTABLE, CK_FALSE);
    assert_value_sensitive(&tv, h);
    view_close(&tv);
    assert_ok(keel_vault_erase(v));
    assert_int_equal(keel_vault_secret_get(v, "wifi-psk", out, sizeof out, &n), KEEL_ERR_NOT_FOUND);
    keel_vault_close(v);
    assert_int_equal(keel_keystore_destroy(ks, KEEL_VAULT_WRAP_LABEL), KEEL_OK);
    /* Without its wrapping key on the token, the vault does not open. */
    assert_int_equal(keel_vault_open(vdir, ks, &v), KEEL_ERR_VERIFY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_generate_and_sign, ks_setup, ks_teardown),
        cmocka_unit_test_setup_teardown(test_key_attributes, ks_setup, ks_teardown),
        cmocka_unit_test_setup_teardown(test_generate_existing, ks_setup, ks_teardown),
        cmocka_unit_test_setup_teardown(test_private_key_engine, ks_setup, ks_teardown),
        cmocka_unit_test_setup_teardown(test_seal_unseal, ks_setup, ks_teardown),
        cmocka_unit_test_setup_teardown(test_persists_across_sessions, ks_setup, ks_teardown),
        cmocka_unit_test_setup_teardown(test_destroy, ks_setup, ks_teardown),
        cmocka_unit_test_setup_teardown(test_two_handles, ks_setup, ks_teardown),
        cmocka_unit_test_setup_teardown(test_vault_on_token, ks_setup, ks_teardown),
        cmocka_unit_test(test_pin_from_env),
        cmocka_unit_test(test_wrong_pin),
        cmocka_unit_test(test_pin_file_checks),
        cmocka_unit_test(test_bad_config),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

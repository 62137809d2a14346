/* keel assess firmware: each finding kind on a tiny tree built at run time,
 * the same trees as archives, hostile archives; and the label checks of
 * keel assess passwords. Keys and hashes are made here, never committed. */
#include "testutil.h"

#include "keel/assess_firmware.h"
#include "keel/crypto.h"
#include "keel/factory.h"

#include <archive.h>
#include <archive_entry.h>
#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- building trees ------------------------------------------------------- */

typedef struct {
    char path[4096];
    char *data; /* owned */
    size_t len;
    unsigned mode;      /* 0: 0644 for files, 0755 for dirs */
    const char *link;   /* a symlink to this */
    int dir;
} node_t;

typedef struct {
    node_t n[64];
    size_t count;
} tree_t;

static void add_bytes(tree_t *t, const char *path, const void *data, size_t len, unsigned mode)
{
    assert_true(t->count < 64);
    node_t *n = &t->n[t->count++];
    memset(n, 0, sizeof *n);
    snprintf(n->path, sizeof n->path, "%s", path);
    n->data = malloc(len + 1);
    assert_non_null(n->data);
    memcpy(n->data, data, len);
    n->len = len;
    n->mode = mode;
}

static void add_text(tree_t *t, const char *path, const char *text, unsigned mode)
{
    add_bytes(t, path, text, strlen(text), mode);
}

static void add_link(tree_t *t, const char *path, const char *target)
{
    add_bytes(t, path, "", 0, 0777);
    t->n[t->count - 1].link = target;
}

static void add_dir(tree_t *t, const char *path, unsigned mode)
{
    add_bytes(t, path, "", 0, mode);
    t->n[t->count - 1].dir = 1;
}

static void tree_free(tree_t *t)
{
    for (size_t i = 0; i < t->count; i++)
        free(t->n[i].data);
    t->count = 0;
}

static void mkparents(const char *root, const char *rel)
{
    char p[KEEL_PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    for (char *s = p + strlen(root) + 1; (s = strchr(s, '/')) != NULL; s++) {
        *s = '\0';
        if (mkdir(p, 0755) != 0)
            assert_int_equal(errno, EEXIST);
        *s = '/';
    }
}

static void tree_write_dir(const tree_t *t, const char *root)
{
    assert_int_equal(mkdir(root, 0755), 0);
    for (size_t i = 0; i < t->count; i++) {
        const node_t *n = &t->n[i];
        char p[KEEL_PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", root, n->path);
        mkparents(root, n->path);
        if (n->link != NULL) {
            assert_int_equal(symlink(n->link, p), 0);
        } else if (n->dir) {
            assert_int_equal(mkdir(p, 0755), 0);
            assert_int_equal(chmod(p, n->mode ? n->mode : 0755), 0);
        } else {
            int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
            assert_true(fd >= 0);
            assert_int_equal(write(fd, n->data, n->len), (ssize_t)n->len);
            close(fd);
            assert_int_equal(chmod(p, n->mode ? n->mode : 0644), 0);
        }
    }
}

typedef enum { AR_TAR_GZ, AR_TAR_XZ, AR_CPIO, AR_ZIP } arkind_t;

static void tree_write_archive(const tree_t *t, const char *file, arkind_t kind)
{
    struct archive *a = archive_write_new();
    assert_non_null(a);
    switch (kind) {
    case AR_TAR_GZ:
        assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
        assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
        break;
    case AR_TAR_XZ:
        assert_int_equal(archive_write_set_format_gnutar(a), ARCHIVE_OK);
        assert_int_equal(archive_write_add_filter_xz(a), ARCHIVE_OK);
        break;
    case AR_CPIO: assert_int_equal(archive_write_set_format_cpio_newc(a), ARCHIVE_OK); break;
    case AR_ZIP: assert_int_equal(archive_write_set_format_zip(a), ARCHIVE_OK); break;
    }
    assert_int_equal(archive_write_open_filename(a, file), ARCHIVE_OK);
    for (size_t i = 0; i < t->count; i++) {
        const node_t *n = &t->n[i];
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, n->path);
        if (n->link != NULL) {
            archive_entry_set_filetype(e, AE_IFLNK);
            archive_entry_set_symlink(e, n->link);
            archive_entry_set_perm(e, 0777);
        } else if (n->dir) {
            archive_entry_set_filetype(e, AE_IFDIR);
            archive_entry_set_perm(e, n->mode ? n->mode : 0755);
        } else {
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_perm(e, n->mode ? n->mode : 0644);
            archive_entry_set_size(e, (la_int64_t)n->len);
        }
        assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
        if (n->len > 0)
            assert_int_equal(archive_write_data(a, n->data, n->len), (la_ssize_t)n->len);
        archive_entry_free(e);
    }
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
}

/* ---- keys, certificates, hashes made here ------------------------------- */

static EVP_PKEY *new_key(int rsa)
{
    EVP_PKEY *k = rsa ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048) : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(k);
    return k;
}

static char *bio_text(BIO *b, size_t *len)
{
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    char *out = malloc((size_t)n + 1);
    memcpy(out, p, (size_t)n);
    out[n] = '\0';
    *len = (size_t)n;
    BIO_free(b);
    return out;
}

static void add_pem_key(tree_t *t, const char *path, EVP_PKEY *k, int how)
{
    BIO *b = BIO_new(BIO_s_mem());
    switch (how) {
    case 0: assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1); break;
    case 1: assert_int_equal(PEM_write_bio_PrivateKey_traditional(b, k, NULL, NULL, 0, NULL, NULL), 1); break;
    case 2:
        assert_int_equal(PEM_write_bio_PKCS8PrivateKey(b, k, EVP_aes_256_cbc(), "pass-word", 9, NULL, NULL), 1);
        break;
    }
    size_t len;
    char *pem = bio_text(b, &len);
    add_bytes(t, path, pem, len, 0600);
    free(pem);
}

static void add_der_key(tree_t *t, const char *path, EVP_PKEY *k)
{
    unsigned char *der = NULL;
    int n = i2d_PrivateKey(k, &der);
    assert_true(n > 0);
    /* PKCS#8 DER, the usual form of a .der key */
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(i2d_PKCS8PrivateKey_bio(b, k, NULL, NULL, 0, NULL, NULL), 1);
    size_t len;
    char *p8 = bio_text(b, &len);
    add_bytes(t, path, p8, len, 0600);
    free(p8);
    OPENSSL_free(der);
}

static void add_cert(tree_t *t, const char *path, EVP_PKEY *k)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_NAME *nm = X509_NAME_new();
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)"device.example", -1, -1, 0);
    X509_set_subject_name(x, nm);
    X509_set_issuer_name(x, nm);
    X509_NAME_free(nm);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    X509_free(x);
    size_t len;
    char *pem = bio_text(b, &len);
    add_bytes(t, path, pem, len, 0644);
    free(pem);
}

static void put32(uint8_t *p, size_t *o, uint32_t v)
{
    p[(*o)++] = (uint8_t)(v >> 24);
    p[(*o)++] = (uint8_t)(v >> 16);
    p[(*o)++] = (uint8_t)(v >> 8);
    p[(*o)++] = (uint8_t)v;
}

static void putstr(uint8_t *p, size_t *o, const void *s, size_t n)
{
    put32(p, o, (uint32_t)n);
    memcpy(p + *o, s, n);
    *o += n;
}

/* An openssh-key-v1 file: the real layout, random key bytes. */
static void add_openssh_key(tree_t *t, const char *path, const char *cipher)
{
    uint8_t raw[512], pub[64], key[32];
    size_t o = 0, po = 0;
    assert_int_equal(RAND_bytes(key, sizeof key), 1);
    putstr(pub, &po, "ssh-ed25519", 11);
    putstr(pub, &po, key, 32);
    memcpy(raw, "openssh-key-v1", 15);
    o = 15;
    putstr(raw, &o, cipher, strlen(cipher));
    putstr(raw, &o, strcmp(cipher, "none") == 0 ? "none" : "bcrypt", strcmp(cipher, "none") == 0 ? 4 : 6);
    putstr(raw, &o, "", 0);
    put32(raw, &o, 1);
    putstr(raw, &o, pub, po);
    uint8_t priv[128];
    assert_int_equal(RAND_bytes(priv, sizeof priv), 1);
    putstr(raw, &o, priv, sizeof priv);
    char b64[800], text[1000];
    EVP_EncodeBlock((unsigned char *)b64, raw, (int)o);
    snprintf(text, sizeof text, "-----BEGIN OPENSSH PRIVATE KEY-----\n%s\n-----END OPENSSH PRIVATE KEY-----\n", b64); /* made at run time above; secret-scan: allow */
    add_text(t, path, text, 0600);
}

static void hash_of(const char *pw, const char *prefix, char *out, size_t cap)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    assert_non_null(crypt_gensalt_rn(prefix, 0, NULL, 0, salt, sizeof salt));
    struct crypt_data cd;
    memset(&cd, 0, sizeof cd);
    const char *h = crypt_rn(pw, salt, &cd, sizeof cd);
    assert_non_null(h);
    assert_true(h[0] != '*');
    snprintf(out, cap, "%s", h);
}

/* ---- scanning -------------------------------------------------------------- */

static char *root;
static int seq;

static json_t *scan_with(const char *path, const keel_assess_firmware_limits_t *lim)
{
    json_t *r = NULL;
    unsigned problems = 0;
    keel_status_t st = keel_assess_firmware_scan(path, lim, &r, &problems);
    if (st != KEEL_OK)
        fail_msg("scan of %s: %s", path, keel_error_message());
    return r;
}

static char *scan_text;
static json_t *scan_dir_of(const tree_t *t)
{
    char d[KEEL_PATH_MAX];
    snprintf(d, sizeof d, "%s/tree%d", root, seq++);
    tree_write_dir(t, d);
    json_t *r = scan_with(d, NULL);
    free(scan_text);
    scan_text = json_dumps(r, JSON_COMPACT);
    return r;
}

static json_t *scan_archive_of(const tree_t *t, arkind_t kind)
{
    char f[KEEL_PATH_MAX];
    snprintf(f, sizeof f, "%s/image%d", root, seq++);
    tree_write_archive(t, f, kind);
    return scan_with(f, NULL);
}

/* Findings of a kind at a path (NULL: any) with that severity; every finding
 * of the kind must name the provision. */
static unsigned count(const json_t *r, const char *kind, const char *path, const char *prov, const char *sev)
{
    unsigned n = 0;
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(r, "findings"), i, f) {
        if (strcmp(json_string_value(json_object_get(f, "kind")), kind) != 0)
            continue;
        assert_string_equal(json_string_value(json_object_get(f, "provision")), prov);
        if (path != NULL && strcmp(json_string_value(json_object_get(f, "path")), path) != 0)
            continue;
        n += strcmp(json_string_value(json_object_get(f, "severity")), sev) == 0;
    }
    return n;
}

static size_t nfindings(const json_t *r)
{
    return json_array_size(json_object_get(r, "findings"));
}

static int complete(const json_t *r)
{
    return json_is_true(json_object_get(r, "complete"));
}

static void dump_on_failure(const json_t *r)
{
    char *s = json_dumps(r, JSON_INDENT(1));
    print_message("%s\n", s);
    free(s);
}

/* A clean image to build on: a conforming tree has no finding at all. */
static void base_tree(tree_t *t)
{
    add_text(t, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1::/:/sbin/nologin\n", 0644);
    add_text(t, "etc/shadow", "root:*:19000:0:99999:7:::\ndaemon:!:19000::::::\n", 0600);
    add_text(t, "etc/init.d/S40network", "#!/bin/sh\n# telnetd was removed\nkillall telnetd\nifup -a\n", 0755);
    add_text(t, "etc/inittab", "::sysinit:/etc/init.d/rcS\nttyS0::respawn:/sbin/getty -L ttyS0 115200 vt100\n", 0644);
    add_text(t, "etc/app.conf", "password=$ADMIN_PASSWORD\nuser=admin\n", 0644);
    add_text(t, "etc/ssh/sshd_config", "PermitEmptyPasswords no\nPasswordAuthentication no\n", 0644);
    add_dir(t, "tmp", 01777);
    add_link(t, "bin/sh", "busybox");
}

static void test_clean_tree(void **state)
{
    (void)state;
    tree_t t = {0};
    base_tree(&t);
    EVP_PKEY *k = new_key(0);
    add_cert(&t, "etc/ssl/certs/ca.pem", k); /* a certificate alone is fine */
    EVP_PKEY_free(k);
    json_t *r = scan_dir_of(&t);
    if (nfindings(r) != 0 || !complete(r))
        dump_on_failure(r);
    assert_int_equal(nfindings(r), 0);
    assert_true(complete(r));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "stats"), "certificates")), 1);
    json_decref(r);
    tree_free(&t);
}

static void test_private_keys(void **state)
{
    (void)state;
    tree_t t = {0};
    base_tree(&t);
    EVP_PKEY *ec = new_key(0), *rsa = new_key(1);
    add_pem_key(&t, "etc/ssl/private/pkcs8.pem", ec, 0);
    add_pem_key(&t, "etc/ssl/private/rsa.key", rsa, 1);
    add_pem_key(&t, "etc/ssl/private/enc.pem", ec, 2);
    add_der_key(&t, "etc/keys/device.der", ec);
    add_openssh_key(&t, "etc/dropbear/id_plain", "none");
    add_openssh_key(&t, "root/.ssh/id_enc", "aes256-ctr");
    /* A key inside a binary, between NUL bytes. */
    BIO *b = BIO_new(BIO_s_mem());
    BIO_write(b, "\x7f" "ELF\0\0\0", 7);
    PEM_write_bio_PrivateKey(b, ec, NULL, NULL, 0, NULL, NULL);
    BIO_write(b, "\0\0\0tail", 7);
    size_t len;
    char *bin = bio_text(b, &len);
    add_bytes(&t, "usr/bin/app", bin, len, 0755);
    free(bin);
    json_t *r = scan_dir_of(&t);
    assert_int_equal(count(r, "private-key", "/etc/ssl/private/pkcs8.pem", "5.4-3", "fail"), 1);
    assert_int_equal(count(r, "private-key", "/etc/ssl/private/rsa.key", "5.4-3", "fail"), 1);
    assert_int_equal(count(r, "private-key", "/etc/ssl/private/enc.pem", "5.4-3", "warn"), 1);
    assert_int_equal(count(r, "private-key", "/etc/keys/device.der", "5.4-3", "fail"), 1);
    assert_int_equal(count(r, "private-key", "/etc/dropbear/id_plain", "5.4-3", "fail"), 1);
    assert_int_equal(count(r, "private-key", "/root/.ssh/id_enc", "5.4-3", "warn"), 1);
    assert_int_equal(count(r, "private-key", "/usr/bin/app", "5.4-3", "fail"), 1);
    /* Keys are named by their public key, the same in every encoding. */
    char hex[2 * KEEL_SHA256_LEN + 1];
    keel_buf_t spki;
    uint8_t h[KEEL_SHA256_LEN];
    assert_int_equal(keel_pkey_spki(ec, &spki), KEEL_OK);
    keel_sha256(spki.data, spki.len, h);
    keel_buf_free(&spki);
    assert_int_equal(keel_hex_encode(h, sizeof h, hex, sizeof hex), KEEL_OK);
    assert_non_null(strstr(scan_text, hex));
    /* No key material in the report. */
    assert_null(strstr(scan_text, "BEGIN"));
    BIO *kb = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(kb, ec, NULL, NULL, 0, NULL, NULL);
    char *pem = bio_text(kb, &len);
    char line2[65];
    snprintf(line2, sizeof line2, "%.64s", strchr(pem, '\n') + 1);
    assert_null(strstr(scan_text, line2));
    free(pem);
    json_decref(r);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(rsa);
    tree_free(&t);
}

static void test_cert_with_key(void **state)
{
    (void)state;
    tree_t t = {0};
    base_tree(&t);
    EVP_PKEY *k = new_key(0), *other = new_key(0);
    add_cert(&t, "etc/ssl/server.crt", k);
    add_cert(&t, "etc/ssl/ca.crt", other);
    add_pem_key(&t, "etc/ssl/server.key", k, 0);
    json_t *r = scan_dir_of(&t);
    assert_int_equal(count(r, "certificate-with-key", NULL, "5.4-3", "fail"), 1);
    assert_int_equal(count(r, "certificate-with-key", "/etc/ssl/server.crt", "5.4-3", "fail"), 1);
    assert_non_null(strstr(scan_text, "device.example"));
    json_decref(r);
    /* Archives give the key first or last: the match does not depend on order. */
    r = scan_archive_of(&t, AR_TAR_GZ);
    assert_int_equal(count(r, "certificate-with-key", "/etc/ssl/server.crt", "5.4-3", "fail"), 1);
    json_decref(r);
    EVP_PKEY_free(k);
    EVP_PKEY_free(other);
    tree_free(&t);
}

static void test_accounts_and_defaults(void **state)
{
    (void)state;
    tree_t t = {0};
    char h_root[256], h_alice[256], h_admin[256], line[2048];
    char secret[33];
    uint8_t rnd[16];
    assert_int_equal(RAND_bytes(rnd, sizeof rnd), 1);
    assert_int_equal(keel_hex_encode(rnd, sizeof rnd, secret, sizeof secret), KEEL_OK);
    hash_of("admin", "$6$", h_root, sizeof h_root);
    hash_of(secret, "$y$", h_alice, sizeof h_alice);
    hash_of("1234", "$2b$", h_admin, sizeof h_admin);
    add_text(&t, "etc/passwd", "root:x:0:0::/root:/bin/sh\nbob::1000:1000::/home/bob:/bin/sh\n"
                               "nobody::65534:65534::/:/usr/sbin/nologin\n", 0644);
    snprintf(line, sizeof line, "root:%s:19000::::::\nalice:%s:19000::::::\ndaemon:*:19000::::::\n"
                                "svc:$2b$31$abcdefghijklmnopqrstuuJ7Gq5Xo6eqH9yD1Yk2m3n4o5p6q7r8s:19000::::::\n",
             h_root, h_alice);
    add_text(&t, "etc/shadow", line, 0600);
    snprintf(line, sizeof line, "admin:%s\nviewer:{SHA}0DPiKuNIrrVmD8IUCuw1hQxNqZc=\n", h_admin);
    add_text(&t, "www/.htpasswd", line, 0644);
    keel_assess_firmware_limits_t lim = keel_assess_firmware_defaults();
    char d[KEEL_PATH_MAX];
    snprintf(d, sizeof d, "%s/tree%d", root, seq++);
    tree_write_dir(&t, d);
    double t0 = keel_now();
    json_t *r = scan_with(d, &lim);
    double took = keel_now() - t0;
    char *text = json_dumps(r, JSON_COMPACT);
    assert_int_equal(count(r, "default-credential", "/etc/shadow", "5.1-1", "fail"), 1);
    assert_int_equal(count(r, "password-hash", "/etc/shadow", "5.1-1", "warn"), 3); /* root, alice, svc */
    assert_int_equal(count(r, "empty-password", "/etc/passwd", "5.1-1", "fail"), 1); /* bob */
    assert_int_equal(count(r, "empty-password", "/etc/passwd", "5.1-1", "warn"), 1); /* nobody, nologin */
    assert_int_equal(count(r, "default-credential", "/www/.htpasswd", "5.1-1", "fail"), 2); /* 1234, admin */
    /* Only root's password is a default: alice's random one is not reported as such. */
    assert_non_null(strstr(text, "\"user\":\"root\""));
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(r, "findings"), i, f) {
        if (strcmp(json_string_value(json_object_get(f, "kind")), "default-credential") == 0)
            assert_string_not_equal(json_string_value(json_object_get(json_object_get(f, "detail"), "user")), "alice");
    }
    /* Never a hash or a password in the report; the costly hash was skipped, not tried. */
    assert_null(strstr(text, h_root + 3));
    assert_null(strstr(text, h_alice + 7));
    assert_null(strstr(text, secret));
    assert_null(strstr(text, "0DPiKuNIrrVmD8IUCuw1hQxNqZc"));
    assert_non_null(strstr(text, "cost not supported"));
    assert_true(took < 20);
    free(text);
    json_decref(r);
    tree_free(&t);
}

static void test_config_credentials(void **state)
{
    (void)state;
    tree_t t = {0};
    base_tree(&t);
    add_text(&t, "etc/config/web", "# web ui\nhttp_user=admin\nhttp_passwd=admin\n", 0644);
    add_text(&t, "etc/app.json", "{\n  \"user\": \"root\",\n  \"admin_password\": \"1234\"\n}\n", 0644);
    add_text(&t, "etc/onvif.xml", "<cfg><Password>xc3511</Password></cfg>\n", 0644);
    add_text(&t, "etc/ok.conf", "password = Zq8-unique-per-device\nbypass=1234\n", 0644);
    json_t *r = scan_dir_of(&t);
    assert_int_equal(count(r, "default-credential", "/etc/config/web", "5.1-1", "fail"), 1);
    assert_int_equal(count(r, "default-credential", "/etc/app.json", "5.1-1", "fail"), 1);
    assert_int_equal(count(r, "default-credential", "/etc/onvif.xml", "5.1-1", "fail"), 1);
    assert_int_equal(count(r, "default-credential", "/etc/ok.conf", "5.1-1", "fail"), 0);
    assert_null(strstr(scan_text, "xc3511"));
    json_decref(r);
    tree_free(&t);
}

static void test_debug_services(void **state)
{
    (void)state;
    tree_t t = {0};
    base_tree(&t);
    add_link(&t, "usr/sbin/telnetd", "../../bin/busybox");
    add_text(&t, "etc/init.d/S50telnet", "#!/bin/sh\nstart() {\n  /usr/sbin/telnetd -l /bin/sh -p 23\n}\n", 0755);
    add_text(&t, "etc/init.d/S51debug", "#!/bin/sh\ngdbserver :2345 /usr/bin/app &\n", 0755);
    add_text(&t, "etc/default/dropbear", "DROPBEAR_ARGS=\"-p 22 -B\"\n", 0644);
    add_text(&t, "etc/ssh/sshd_config.d/debug.conf", "PermitEmptyPasswords yes\n", 0644);
    add_text(&t, "system/build.prop", "ro.build.type=user\nro.adb.secure=0\n", 0644);
    add_text(&t, "lib/systemd/system/serial-getty@ttyS0.service",
             "[Service]\nExecStart=-/sbin/agetty --autologin root --keep-baud 115200 %I $TERM\n", 0644);
    json_t *r = scan_dir_of(&t);
    assert_int_equal(count(r, "debug-binary", "/usr/sbin/telnetd", "5.6-6", "warn"), 1);
    assert_non_null(strstr(scan_text, "BusyBox applet link"));
    assert_int_equal(count(r, "debug-service", "/etc/init.d/S50telnet", "5.6-4A", "fail"), 1);
    assert_non_null(strstr(scan_text, "shell without login"));
    assert_int_equal(count(r, "debug-service", "/etc/init.d/S51debug", "5.6-4A", "fail"), 1);
    assert_int_equal(count(r, "debug-service", "/etc/init.d/S40network", "5.6-4A", "fail"), 0); /* killall */
    assert_int_equal(count(r, "empty-password-login", "/etc/default/dropbear", "5.1-1", "fail"), 1);
    assert_int_equal(count(r, "empty-password-login", "/etc/ssh/sshd_config.d/debug.conf", "5.1-1", "fail"), 1);
    assert_int_equal(count(r, "debug-service", "/system/build.prop", "5.6-4A", "fail"), 1);
    assert_int_equal(count(r, "console-shell", "/lib/systemd/system/serial-getty@ttyS0.service", "5.6-4A", "fail"), 1);
    json_decref(r);
    tree_free(&t);

    /* A shell on the serial console, straight from inittab. */
    add_text(&t, "etc/inittab", "::sysinit:/etc/init.d/rcS\nttyS0::respawn:-/bin/sh\n", 0644);
    r = scan_dir_of(&t);
    assert_int_equal(count(r, "console-shell", "/etc/inittab", "5.6-4A", "fail"), 1);
    assert_non_null(strstr(scan_text, "ttyS0"));
    json_decref(r);
    tree_free(&t);
}

static void test_modes(void **state)
{
    (void)state;
    tree_t t = {0};
    base_tree(&t);
    add_text(&t, "etc/writable.conf", "x=1\n", 0666);
    add_dir(&t, "var/open", 0777);
    add_text(&t, "usr/bin/passwd", "\x7f" "ELF", 04755);
    add_text(&t, "usr/bin/bad", "\x7f" "ELF", 04777);
    json_t *r = scan_dir_of(&t);
    assert_int_equal(count(r, "world-writable", "/etc/writable.conf", "5.6-7", "warn"), 1);
    assert_int_equal(count(r, "world-writable", "/var/open", "5.6-7", "warn"), 1);
    assert_int_equal(count(r, "world-writable", "/tmp", "5.6-7", "warn"), 0); /* sticky */
    assert_int_equal(count(r, "setuid", "/usr/bin/passwd", "5.6-7", "info"), 1);
    assert_int_equal(count(r, "setuid", "/usr/bin/bad", "5.6-7", "fail"), 1);
    json_decref(r);
    tree_free(&t);
}

/* The same bad image as a tree and in every archive format: the same findings. */
static void test_archives_match_tree(void **state)
{
    (void)state;
    tree_t t = {0};
    char h[256], shadow[512];
    hash_of("admin", "$6$", h, sizeof h);
    snprintf(shadow, sizeof shadow, "root:%s:19000::::::\n", h);
    add_text(&t, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0644);
    add_text(&t, "etc/shadow", shadow, 0600);
    EVP_PKEY *k = new_key(0);
    add_pem_key(&t, "etc/ssl/device.key", k, 0);
    EVP_PKEY_free(k);
    add_text(&t, "etc/init.d/S50telnet", "#!/bin/sh\ntelnetd\n", 0755);
    add_text(&t, "www/data.txt", "x\n", 0666);
    json_t *ref = scan_dir_of(&t);
    assert_int_equal(nfindings(ref), 5); /* key, hash, default, telnetd, world-writable */
    static const arkind_t kinds[] = {AR_TAR_GZ, AR_TAR_XZ, AR_CPIO, AR_ZIP};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        json_t *r = scan_archive_of(&t, kinds[i]);
        if (nfindings(r) != nfindings(ref))
            dump_on_failure(r);
        assert_int_equal(nfindings(r), nfindings(ref));
        assert_true(complete(r));
        for (size_t j = 0; j < nfindings(ref); j++) {
            json_t *a = json_array_get(json_object_get(ref, "findings"), j);
            json_t *b = json_array_get(json_object_get(r, "findings"), j);
            assert_string_equal(json_string_value(json_object_get(a, "kind")),
                                json_string_value(json_object_get(b, "kind")));
            assert_string_equal(json_string_value(json_object_get(a, "path")),
                                json_string_value(json_object_get(b, "path")));
        }
        assert_string_equal(json_string_value(json_object_get(r, "source")), "archive");
        json_decref(r);
    }
    json_decref(ref);
    tree_free(&t);
}

/* ---- hostile input ---------------------------------------------------------- */

static void write_raw(const char *path, const void *d, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, d, n), (ssize_t)n);
    close(fd);
}

static void test_traversal_names(void **state)
{
    (void)state;
    tree_t t = {0};
    add_text(&t, "../../../etc/shadow", "root::19000::::::\n", 0600);
    add_text(&t, "./a/./b/../../etc/init.d/rcS", "telnetd\n", 0755);
    char f[KEEL_PATH_MAX], outside[KEEL_PATH_MAX];
    snprintf(f, sizeof f, "%s/trav.tar.gz", root);
    tree_write_archive(&t, f, AR_TAR_GZ);
    json_t *r = scan_with(f, NULL);
    char *text = json_dumps(r, JSON_COMPACT);
    assert_int_equal(count(r, "empty-password", "/etc/shadow", "5.1-1", "fail"), 1);
    assert_int_equal(count(r, "debug-service", "/etc/init.d/rcS", "5.6-4A", "fail"), 1);
    assert_non_null(strstr(text, "path traversal"));
    /* Nothing was extracted, here or above. */
    snprintf(outside, sizeof outside, "%s/../etc/shadow", root);
    assert_false(keel_path_exists(outside));
    free(text);
    json_decref(r);
    tree_free(&t);
}

static void test_deep_and_long_names(void **state)
{
    (void)state;
    tree_t t = {0};
    char deep[256 * 2 + 16] = "";
    for (int i = 0; i < 100; i++)
        memcpy(deep + 2 * i, "d/", 2);
    memcpy(deep + 200, "shadow", sizeof "shadow");
    add_text(&t, deep, "root::1::::::\n", 0600);
    char f[KEEL_PATH_MAX];
    snprintf(f, sizeof f, "%s/deep.tar", root);
    tree_write_archive(&t, f, AR_TAR_GZ);
    json_t *r = scan_with(f, NULL);
    assert_false(complete(r));
    assert_int_equal(nfindings(r), 0);
    json_decref(r);
    tree_free(&t);

    /* A name longer than any path: a pax header makes it possible. */
    char *longname = malloc(3000);
    memset(longname, 'a', 2999);
    longname[2999] = '\0';
    for (int i = 200; i < 2999; i += 200)
        longname[i] = '/';
    add_text(&t, longname, "x", 0644);
    free(longname);
    snprintf(f, sizeof f, "%s/long.tar.gz", root);
    tree_write_archive(&t, f, AR_TAR_GZ);
    r = scan_with(f, NULL);
    assert_false(complete(r));
    json_decref(r);
    tree_free(&t);

    /* A directory tree deeper than the limit, on disk. */
    char d[KEEL_PATH_MAX];
    snprintf(d, sizeof d, "%s/deepdir", root);
    assert_int_equal(mkdir(d, 0755), 0);
    size_t len = strlen(d);
    assert_true(len + 80 * 2 < sizeof d);
    for (int i = 0; i < 80; i++) {
        memcpy(d + len + 2 * (size_t)i, "/x", sizeof "/x");
        assert_int_equal(mkdir(d, 0755), 0);
    }
    d[len] = '\0';
    keel_assess_firmware_limits_t lim = keel_assess_firmware_defaults();
    r = scan_with(d, &lim);
    assert_false(complete(r));
    json_decref(r);
}

/* A tar header claiming an 8 GB file, followed by ten bytes. */
static void test_huge_declared_size(void **state)
{
    (void)state;
    uint8_t blk[512 + 10];
    memset(blk, 0, sizeof blk);
    memcpy(blk, "etc/shadow", sizeof "etc/shadow");
    memcpy(blk + 100, "0000644", 8);
    memcpy(blk + 108, "0000000", 8);
    memcpy(blk + 116, "0000000", 8);
    memcpy(blk + 124, "77777777777", 12);
    memcpy(blk + 136, "00000000000", 12);
    blk[156] = '0';
    memcpy(blk + 257, "ustar", 6);
    memcpy(blk + 263, "00", 2);
    memset(blk + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += blk[i];
    snprintf((char *)blk + 148, 8, "%06o", sum);
    memcpy(blk + 512, "root::1:::", 10);
    char f[KEEL_PATH_MAX];
    snprintf(f, sizeof f, "%s/huge.tar", root);
    write_raw(f, blk, sizeof blk);
    json_t *r = scan_with(f, NULL);
    assert_false(complete(r));
    json_decref(r);
}

/* 64 MiB of zeros compress to almost nothing; the unpacked cap stops the scan. */
static void test_bomb_and_entry_cap(void **state)
{
    (void)state;
    tree_t t = {0};
    size_t big = 64u << 20;
    char *zeros = calloc(1, big);
    add_bytes(&t, "zero.bin", zeros, big, 0644);
    free(zeros);
    add_text(&t, "etc/shadow", "root::1::::::\n", 0600);
    char f[KEEL_PATH_MAX];
    snprintf(f, sizeof f, "%s/bomb.tar.gz", root);
    tree_write_archive(&t, f, AR_TAR_GZ);
    struct stat st;
    assert_int_equal(stat(f, &st), 0);
    assert_true(st.st_size < 1 << 20);
    keel_assess_firmware_limits_t lim = keel_assess_firmware_defaults();
    lim.total_max = 8u << 20;
    lim.file_max = 1u << 20;
    json_t *r = scan_with(f, &lim);
    assert_false(complete(r));
    assert_true(json_integer_value(json_object_get(json_object_get(r, "stats"), "bytes_read")) <= (1 << 20));
    json_decref(r);
    tree_free(&t);

    for (int i = 0; i < 50; i++) {
        char p[32];
        snprintf(p, sizeof p, "f%d", i);
        add_text(&t, p, "x", 0644);
    }
    snprintf(f, sizeof f, "%s/many.cpio", root);
    tree_write_archive(&t, f, AR_CPIO);
    lim = keel_assess_firmware_defaults();
    lim.entries_max = 20;
    r = scan_with(f, &lim);
    assert_false(complete(r));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "stats"), "entries")), 20);
    json_decref(r);
    tree_free(&t);
}

static void test_not_an_image(void **state)
{
    (void)state;
    char f[KEEL_PATH_MAX];
    uint8_t junk[4096];
    assert_int_equal(RAND_bytes(junk, sizeof junk), 1);
    snprintf(f, sizeof f, "%s/junk.bin", root);
    write_raw(f, junk, sizeof junk);
    json_t *r = NULL;
    unsigned p = 0;
    assert_int_equal(keel_assess_firmware_scan(f, NULL, &r, &p), KEEL_ERR_FORMAT);
    snprintf(f, sizeof f, "%s/absent", root);
    assert_int_equal(keel_assess_firmware_scan(f, NULL, &r, &p), KEEL_ERR_NOT_FOUND);
    /* A truncated archive is scanned as far as it goes. */
    tree_t t = {0};
    base_tree(&t);
    add_text(&t, "etc/init.d/S99telnet", "telnetd\n", 0755);
    for (int i = 0; i < 20; i++) {
        char name[32];
        uint8_t rnd[8192];
        assert_int_equal(RAND_bytes(rnd, sizeof rnd), 1);
        snprintf(name, sizeof name, "usr/share/doc/f%d", i);
        add_bytes(&t, name, rnd, sizeof rnd, 0644); /* incompressible: half the file is many headers */
    }
    snprintf(f, sizeof f, "%s/cut.tar.gz", root);
    tree_write_archive(&t, f, AR_TAR_GZ);
    struct stat st;
    assert_int_equal(stat(f, &st), 0);
    assert_int_equal(truncate(f, st.st_size / 2), 0);
    r = scan_with(f, NULL);
    assert_false(complete(r));
    json_decref(r);
    tree_free(&t);
}

/* Links are never followed: a link to a secret outside the tree is not read. */
static void test_links_not_followed(void **state)
{
    (void)state;
    char outside[KEEL_PATH_MAX], d[KEEL_PATH_MAX];
    snprintf(outside, sizeof outside, "%s/outside-shadow", root);
    write_raw(outside, "root::1::::::\n", 14);
    tree_t t = {0};
    add_link(&t, "etc/shadow", outside);
    add_link(&t, "hostetc", "/etc");
    add_link(&t, "up", "..");
    snprintf(d, sizeof d, "%s/linktree", root);
    tree_write_dir(&t, d);
    json_t *r = scan_with(d, NULL);
    assert_int_equal(nfindings(r), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "stats"), "files_read")), 0);
    json_decref(r);
    tree_free(&t);
}

static void test_file_cap(void **state)
{
    (void)state;
    tree_t t = {0};
    size_t pad = 64 * 1024;
    EVP_PKEY *k = new_key(0);
    BIO *b = BIO_new(BIO_s_mem());
    char *zeros = calloc(1, pad);
    BIO_write(b, zeros, (int)pad);
    free(zeros);
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    EVP_PKEY_free(k);
    size_t len;
    char *blob = bio_text(b, &len);
    add_bytes(&t, "firmware.bin", blob, len, 0644);
    free(blob);
    char d[KEEL_PATH_MAX];
    snprintf(d, sizeof d, "%s/captree", root);
    tree_write_dir(&t, d);
    keel_assess_firmware_limits_t lim = keel_assess_firmware_defaults();
    lim.file_max = 32 * 1024;
    json_t *r = scan_with(d, &lim);
    assert_int_equal(nfindings(r), 0);
    char *text = json_dumps(r, 0);
    assert_non_null(strstr(text, "only the first 32768 bytes"));
    free(text);
    json_decref(r);
    lim.file_max = KEEL_ASSESS_FW_FILE_MAX;
    r = scan_with(d, &lim);
    assert_int_equal(count(r, "private-key", "/firmware.bin", "5.4-3", "fail"), 1);
    json_decref(r);
    tree_free(&t);
}

/* ---- keel assess passwords: the audit's label checks without a batch ------- */

static void test_labels(void **state)
{
    (void)state;
    char common[KEEL_PATH_MAX];
    snprintf(common, sizeof common, "%s/common.txt", root);
    write_raw(common, "123456\npassword\nadmin\n", 22);
    enum { N = 40 };
    static char pw[N][32], serial[N][16], mac[N][18];
    keel_label_t l[N];
    for (int i = 0; i < N; i++) {
        uint8_t r[12];
        assert_int_equal(RAND_bytes(r, sizeof r), 1);
        EVP_EncodeBlock((unsigned char *)pw[i], r, sizeof r); /* 96 random bits, mixed case */
        snprintf(serial[i], sizeof serial[i], "SN%08d", 4711 * (i + 1));
        snprintf(mac[i], sizeof mac[i], "00:1A:2B:%02X:%02X:%02X", i, 0x5c, 0x9e ^ i);
        l[i] = (keel_label_t){.serial = serial[i], .mac = mac[i], .password = pw[i]};
    }
    json_t *r = NULL;
    unsigned n = 0;
    assert_int_equal(keel_factory_audit_labels(l, N, common, &r, &n), KEEL_OK);
    if (n != 0)
        dump_on_failure(r);
    assert_int_equal(n, 0);
    assert_true(json_is_true(json_object_get(r, "pass")));
    assert_null(json_object_get(r, "devices"));
    json_decref(r);

    l[1].password = l[0].password;                  /* shared */
    l[2].password = "Admin";                        /* common, any case; weak */
    /* x + the MAC's last five octets without colons + q */
    size_t o = 0;
    pw[3][o++] = 'x';
    for (const char *p = mac[3] + 3; *p; p++)
        if (*p != ':')
            pw[3][o++] = *p;
    pw[3][o++] = 'q';
    pw[3][o] = '\0';
    snprintf(pw[4], sizeof pw[4], "%s!", serial[4]);
    assert_int_equal(keel_factory_audit_labels(l, N, common, &r, &n), KEEL_OK);
    assert_true(report_check_findings(r, "unique-passwords") >= 1);
    assert_true(report_check_findings(r, "not-common") >= 1);
    assert_true(report_check_findings(r, "entropy") >= 1);
    assert_true(report_check_findings(r, "no-relation") >= 2);
    char *text = json_dumps(r, 0);
    assert_non_null(strstr(text, "MAC address"));
    for (int i = 0; i < N; i++)
        assert_null(strstr(text, l[i].password));
    free(text);
    json_decref(r);

    /* An empty serial column is not a duplicate; a real duplicate is. */
    for (int i = 0; i < N; i++)
        l[i] = (keel_label_t){.id = serial[i], .password = pw[(i + 5) % N]};
    l[7].id = l[6].id;
    assert_int_equal(keel_factory_audit_labels(l, N, common, &r, &n), KEEL_OK);
    assert_int_equal(report_check_findings(r, "unique-ids"), 1);
    json_decref(r);
}

static int setup(void **state)
{
    (void)state;
    root = tmpdir_new();
    return keel_crypto_init() == KEEL_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    free(scan_text);
    tmpdir_free(root);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean_tree),
        cmocka_unit_test(test_private_keys),
        cmocka_unit_test(test_cert_with_key),
        cmocka_unit_test(test_accounts_and_defaults),
        cmocka_unit_test(test_config_credentials),
        cmocka_unit_test(test_debug_services),
        cmocka_unit_test(test_modes),
        cmocka_unit_test(test_archives_match_tree),
        cmocka_unit_test(test_traversal_names),
        cmocka_unit_test(test_deep_and_long_names),
        cmocka_unit_test(test_huge_declared_size),
        cmocka_unit_test(test_bomb_and_entry_cap),
        cmocka_unit_test(test_not_an_image),
        cmocka_unit_test(test_links_not_followed),
        cmocka_unit_test(test_file_cap),
        cmocka_unit_test(test_labels),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

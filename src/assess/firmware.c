/*
 * keel assess firmware: a static scan of a firmware tree or archive.
 *
 * Two readers (a directory walk that never follows a link, and libarchive
 * reading the stream without extracting) feed one scanner with entries:
 * their metadata first (mode, type, link target), then at most file_max bytes
 * of content. Keys and certificates are matched at the end, because an
 * archive gives them in any order, and the password hashes found are tried
 * against the built-in default list last, within a time budget.
 */
#define _GNU_SOURCE /* memmem */
#include "keel/assess_firmware.h"
#include "keel/assess_services.h"

#include "keel/crypto.h"

#include <archive.h>
#include <archive_entry.h>
#include <crypt.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEYS_MAX 4096      /* private keys and certificates remembered for matching */
#define HASHES_MAX 256     /* password hashes remembered for the default check */
#define NOTES_MAX 200
#define LINK_MAX 1024
#define TEXT_PROBE 8192    /* a file with no NUL in its first bytes is text */
#define DER_MAX 16384      /* files tried as DER keys or certificates */
#define PEM_BLOCK_MAX 65536
#define LINE_MAX_SCAN 4096 /* longer lines are not parsed as config */
#define CHUNK (64u * 1024u)

/* The default pairs are the built-in list of creds.c; an empty password is
 * reported by the account check itself, so those pairs are skipped here. */

typedef enum { E_FILE, E_DIR, E_LINK, E_OTHER } etype_t;

typedef struct {
    const char *path; /* in the image, "/a/b", printable ASCII */
    etype_t type;
    unsigned mode;    /* permission bits, 07777 */
    const char *link; /* symlink or hard-link target, else NULL */
} entry_t;

typedef struct {
    uint8_t spki[KEEL_SHA256_LEN];
    char *path;
    char *subject; /* certificates only */
} keyrec_t;

typedef struct {
    char *user, *hash, *path;
    const char *source; /* "shadow", "passwd", "htpasswd" */
} hashrec_t;

typedef struct {
    keel_assess_firmware_limits_t lim;
    json_t *findings, *notes;
    unsigned counts[3];
    size_t nfindings, entries, files_read;
    uint64_t bytes_read;
    int complete, stop;
    keyrec_t *keys, *certs;
    size_t nkeys, ncerts;
    hashrec_t hashes[HASHES_MAX];
    size_t nhashes;
    size_t pem_keys; /* private keys found, encrypted or not */
} fw_t;

enum { SEV_FAIL, SEV_WARN, SEV_INFO };
static const char *const sev_names[3] = {"fail", "warn", "info"};

keel_assess_firmware_limits_t keel_assess_firmware_defaults(void)
{
    keel_assess_firmware_limits_t l = {.file_max = KEEL_ASSESS_FW_FILE_MAX,
                                       .total_max = KEEL_ASSESS_FW_TOTAL_MAX,
                                       .entries_max = KEEL_ASSESS_FW_ENTRIES_MAX,
                                       .depth_max = KEEL_ASSESS_FW_DEPTH_MAX,
                                       .crypt_seconds = KEEL_ASSESS_FW_CRYPT_SECONDS};
    return l;
}

/* ---- findings and notes ------------------------------------------------- */

/* Copies a printable rendering of s (at most cap-1 bytes). */
static void printable(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        out[o++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[o] = '\0';
}

static void note(fw_t *fw, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(fw_t *fw, const char *fmt, ...)
{
    if (json_array_size(fw->notes) >= NOTES_MAX)
        return;
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (json_array_size(fw->notes) == NOTES_MAX - 1)
        snprintf(text, sizeof text, "further notes left out");
    char safe[sizeof text];
    printable(text, strlen(text), safe, sizeof safe); /* libarchive's messages quote raw entry names */
    json_array_append_new(fw->notes, json_string(safe));
}

/* Marks the scan incomplete, with the reason as a note. */
static void incomplete(fw_t *fw, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void incomplete(fw_t *fw, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fw->complete = 0;
    note(fw, "incomplete: %s", text);
}

/* `detail` is taken over (may be NULL). */
static void finding(fw_t *fw, const char *kind, const char *path, const char *provision, int sev, json_t *detail,
                    const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static void finding(fw_t *fw, const char *kind, const char *path, const char *provision, int sev, json_t *detail,
                    const char *fmt, ...)
{
    if (fw->nfindings >= KEEL_ASSESS_FW_FINDINGS_MAX) {
        if (fw->nfindings++ == KEEL_ASSESS_FW_FINDINGS_MAX)
            incomplete(fw, "more than %u findings; the rest are left out", KEEL_ASSESS_FW_FINDINGS_MAX);
        json_decref(detail);
        return;
    }
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    json_t *f = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "kind", kind, "path", path, "provision", provision,
                          "severity", sev_names[sev], "what", what, "detail",
                          detail != NULL ? detail : json_object());
    if (f != NULL)
        json_array_append_new(fw->findings, f);
    fw->counts[sev]++;
    fw->nfindings++;
}

/* ---- small text helpers ------------------------------------------------- */

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s != NULL ? s + 1 : path;
}

static int has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

static int has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

static int is_text(const uint8_t *d, size_t n)
{
    return memchr(d, '\0', n < TEXT_PROBE ? n : TEXT_PROBE) == NULL;
}

static void hex_of(const uint8_t *d, size_t n, char *out, size_t cap)
{
    if (keel_hex_encode(d, n, out, cap) != KEEL_OK)
        out[0] = '\0';
}

/* Calls fn for each line of a text buffer, with the line copied (NUL
 * terminated, at most LINE_MAX_SCAN bytes; longer lines are skipped). */
typedef void (*line_fn)(fw_t *fw, const char *path, char *line, size_t lineno);
static void each_line(fw_t *fw, const char *path, const uint8_t *d, size_t n, line_fn fn)
{
    char line[LINE_MAX_SCAN + 1];
    size_t lineno = 0;
    for (size_t i = 0; i < n && !fw->stop;) {
        const uint8_t *nl = memchr(d + i, '\n', n - i);
        size_t len = nl != NULL ? (size_t)(nl - (d + i)) : n - i;
        lineno++;
        if (len <= LINE_MAX_SCAN) {
            memcpy(line, d + i, len);
            line[len] = '\0';
            if (len > 0 && line[len - 1] == '\r')
                line[len - 1] = '\0';
            fn(fw, path, line, lineno);
        }
        i += len + 1;
    }
    keel_wipe(line, sizeof line);
}

/* Splits a line into blank-separated words (in place), at most max. */
static size_t words_of(char *line, char **w, size_t max)
{
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(line, " \t\"'`;|&()=", &save); t != NULL && n < max;
         t = strtok_r(NULL, " \t\"'`;|&()=", &save))
        w[n++] = t;
    return n;
}

static int comment_line(const char *line)
{
    while (*line == ' ' || *line == '\t')
        line++;
    return *line == '#' || *line == '\0';
}

/* ---- private keys and certificates ---------------------------------------- */

static void spki_hash(EVP_PKEY *pk, uint8_t out[KEEL_SHA256_LEN], int *ok)
{
    keel_buf_t b;
    *ok = 0;
    if (keel_pkey_spki(pk, &b) == KEEL_OK) {
        keel_sha256(b.data, b.len, out);
        keel_buf_free(&b);
        *ok = 1;
    }
}

static void remember(fw_t *fw, keyrec_t **arr, size_t *n, const uint8_t spki[KEEL_SHA256_LEN], const char *path,
                     const char *subject)
{
    if (*n >= KEYS_MAX) {
        if (*n == KEYS_MAX) {
            (*n)++;
            note(fw, "more than %d keys or certificates: the rest are not matched", KEYS_MAX);
        }
        return;
    }
    if (*arr == NULL && (*arr = calloc(KEYS_MAX, sizeof **arr)) == NULL)
        return;
    keyrec_t *k = &(*arr)[*n];
    memcpy(k->spki, spki, KEEL_SHA256_LEN);
    k->path = strdup(path);
    k->subject = subject != NULL ? strdup(subject) : NULL;
    if (k->path != NULL)
        (*n)++;
}

static const char *key_type_name(EVP_PKEY *pk)
{
    const char *t = EVP_PKEY_get0_type_name(pk);
    return t != NULL ? t : "unknown";
}

/* An unencrypted private key: a 5.4-3 failure, named by its public key. */
static void report_key(fw_t *fw, const char *path, EVP_PKEY *pk, const char *encoding)
{
    uint8_t spki[KEEL_SHA256_LEN];
    char hex[2 * KEEL_SHA256_LEN + 1] = "";
    int ok = 0;
    spki_hash(pk, spki, &ok);
    if (ok) {
        hex_of(spki, sizeof spki, hex, sizeof hex);
        remember(fw, &fw->keys, &fw->nkeys, spki, path, NULL);
    }
    fw->pem_keys++;
    finding(fw, "private-key", path, "5.4-3", SEV_FAIL,
            json_pack("{s:s, s:s, s:i, s:b, s:s}", "key_type", key_type_name(pk), "encoding", encoding, "bits",
                      EVP_PKEY_get_bits(pk), "encrypted", 0, "spki_sha256", hex),
            "unencrypted %s-%d private key (%s) in the image: every device shares it", key_type_name(pk),
            EVP_PKEY_get_bits(pk), encoding);
}

static void report_encrypted(fw_t *fw, const char *path, const char *encoding, const uint8_t *blob, size_t n)
{
    uint8_t h[KEEL_SHA256_LEN];
    char hex[2 * KEEL_SHA256_LEN + 1];
    keel_sha256(blob, n, h);
    hex_of(h, sizeof h, hex, sizeof hex);
    fw->pem_keys++;
    finding(fw, "private-key", path, "5.4-3", SEV_WARN,
            json_pack("{s:s, s:b, s:s}", "encoding", encoding, "encrypted", 1, "blob_sha256", hex),
            "encrypted private key (%s) in the image: every device shares it, and its passphrase is "
            "likely in the image too", encoding);
}

static void report_cert(fw_t *fw, const char *path, X509 *x)
{
    EVP_PKEY *pk = X509_get0_pubkey(x);
    if (pk == NULL)
        return;
    uint8_t spki[KEEL_SHA256_LEN];
    int ok = 0;
    spki_hash(pk, spki, &ok);
    if (!ok)
        return;
    char subj[256] = "";
    X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof subj);
    char safe[256];
    printable(subj, strlen(subj), safe, sizeof safe);
    remember(fw, &fw->certs, &fw->ncerts, spki, path, safe);
}

/* The public-key blob of an OpenSSH private key is in clear even when the
 * private part is encrypted: it names the key as ssh-keygen -l would. */
static void openssh_key(fw_t *fw, const char *path, const uint8_t *b64, size_t n)
{
    uint8_t *raw = malloc(n);
    char *text = malloc(n + 1);
    if (raw == NULL || text == NULL) {
        free(raw);
        free(text);
        return;
    }
    size_t t = 0;
    for (size_t i = 0; i < n; i++)
        if (!isspace(b64[i]))
            text[t++] = (char)b64[i];
    int len = EVP_DecodeBlock(raw, (const unsigned char *)text, (int)t);
    keel_wipe(text, n + 1);
    free(text);
    static const char magic[] = "openssh-key-v1";
    char cipher[64] = "?", ktype[64] = "?", fp[80] = "";
    size_t off = sizeof magic, fields = 0;
    /* ciphername, kdfname, kdfoptions, then nkeys and the first public key */
    if (len > (int)sizeof magic && memcmp(raw, magic, sizeof magic) == 0) {
        const uint8_t *pub = NULL;
        uint32_t publen = 0;
        while (fields < 5 && off + 4 <= (size_t)len) {
            uint32_t l = (uint32_t)raw[off] << 24 | (uint32_t)raw[off + 1] << 16 | (uint32_t)raw[off + 2] << 8 |
                         raw[off + 3];
            off += 4;
            if (fields == 3) { /* nkeys: a bare number */
                fields++;
                continue;
            }
            if (l > (size_t)len - off)
                break;
            if (fields == 0)
                printable((const char *)raw + off, l, cipher, sizeof cipher);
            if (fields == 4) {
                pub = raw + off;
                publen = l;
            }
            off += l;
            fields++;
        }
        if (pub != NULL && publen > 4) {
            uint32_t tl = (uint32_t)pub[0] << 24 | (uint32_t)pub[1] << 16 | (uint32_t)pub[2] << 8 | pub[3];
            if (tl <= publen - 4)
                printable((const char *)pub + 4, tl, ktype, sizeof ktype);
            uint8_t h[KEEL_SHA256_LEN];
            keel_sha256(pub, publen, h);
            char b[64];
            EVP_EncodeBlock((unsigned char *)b, h, sizeof h);
            char *eq = strchr(b, '=');
            if (eq != NULL)
                *eq = '\0';
            snprintf(fp, sizeof fp, "SHA256:%s", b);
        }
    }
    keel_wipe(raw, n);
    free(raw);
    int encrypted = strcmp(cipher, "none") != 0;
    fw->pem_keys++;
    finding(fw, "private-key", path, "5.4-3", encrypted ? SEV_WARN : SEV_FAIL,
            json_pack("{s:s, s:s, s:b, s:s, s:s}", "key_type", ktype, "encoding", "openssh", "encrypted", encrypted,
                      "cipher", cipher, "ssh_fingerprint", fp),
            "%s OpenSSH private key (%s) in the image: every device shares it",
            encrypted ? "encrypted" : "unencrypted", ktype);
}

/* One PEM block, BEGIN line to END line. */
static void pem_block(fw_t *fw, const char *path, const uint8_t *blk, size_t n, const char *label)
{
    if (strcmp(label, "OPENSSH PRIVATE KEY") == 0) {
        const uint8_t *body = memchr(blk, '\n', n);
        const uint8_t *end = memmem(blk, n, "-----END", 8);
        if (body != NULL && end != NULL && end > body)
            openssh_key(fw, path, body + 1, (size_t)(end - body - 1));
        return;
    }
    int is_cert = strcmp(label, "CERTIFICATE") == 0 || strcmp(label, "TRUSTED CERTIFICATE") == 0;
    int is_key = has_suffix(label, "PRIVATE KEY");
    if (!is_cert && !is_key)
        return;
    if (is_key && (strcmp(label, "ENCRYPTED PRIVATE KEY") == 0 || memmem(blk, n, "Proc-Type: 4,ENCRYPTED", 22))) {
        report_encrypted(fw, path, strcmp(label, "ENCRYPTED PRIVATE KEY") == 0 ? "PKCS#8 PEM" : "legacy PEM", blk,
                         n);
        return;
    }
    BIO *bio = BIO_new_mem_buf(blk, (int)n);
    if (bio == NULL)
        return;
    if (is_cert) {
        X509 *x = PEM_read_bio_X509_AUX(bio, NULL, keel_pem_no_password, NULL);
        if (x != NULL)
            report_cert(fw, path, x);
        X509_free(x);
    } else {
        EVP_PKEY *pk = PEM_read_bio_PrivateKey(bio, NULL, keel_pem_no_password, NULL);
        char enc[64];
        snprintf(enc, sizeof enc, "PEM %s", label);
        if (pk != NULL) {
            report_key(fw, path, pk, enc);
        } else {
            fw->pem_keys++;
            finding(fw, "private-key", path, "5.4-3", SEV_FAIL, json_pack("{s:s, s:b}", "encoding", enc,
                                                                           "parsed", 0),
                    "private key block (%s) in the image that does not parse: key material all the same", label);
        }
        EVP_PKEY_free(pk);
    }
    BIO_free(bio);
    ERR_clear_error();
}

static void scan_pem(fw_t *fw, const char *path, const uint8_t *d, size_t n)
{
    static const char begin[] = "-----BEGIN ";
    size_t off = 0;
    while (off < n && !fw->stop) {
        const uint8_t *b = memmem(d + off, n - off, begin, sizeof begin - 1);
        if (b == NULL)
            return;
        size_t at = (size_t)(b - d);
        const uint8_t *lab = b + sizeof begin - 1;
        const uint8_t *dash = memmem(lab, n - (size_t)(lab - d), "-----", 5);
        if (dash == NULL || dash - lab > 40) {
            off = at + 1;
            continue;
        }
        char label[48];
        printable((const char *)lab, (size_t)(dash - lab), label, sizeof label);
        char endmark[80];
        snprintf(endmark, sizeof endmark, "-----END %s-----", label);
        size_t lim = n - at < PEM_BLOCK_MAX ? n - at : PEM_BLOCK_MAX;
        const uint8_t *e = memmem(b, lim, endmark, strlen(endmark));
        if (e == NULL) {
            off = at + 1;
            continue;
        }
        size_t blen = (size_t)(e - b) + strlen(endmark);
        pem_block(fw, path, b, blen, label);
        off = at + blen;
    }
}

static void scan_der(fw_t *fw, const char *path, const uint8_t *d, size_t n)
{
    if (n < 64 || n > DER_MAX || d[0] != 0x30)
        return;
    const unsigned char *p = d;
    X509 *x = d2i_X509(NULL, &p, (long)n);
    if (x != NULL) {
        report_cert(fw, path, x);
        X509_free(x);
        return;
    }
    p = d;
    X509_SIG *sig = d2i_X509_SIG(NULL, &p, (long)n);
    if (sig != NULL && p == d + n) {
        X509_SIG_free(sig);
        report_encrypted(fw, path, "PKCS#8 DER", d, n);
        return;
    }
    X509_SIG_free(sig);
    p = d;
    EVP_PKEY *pk = d2i_AutoPrivateKey(NULL, &p, (long)n);
    if (pk != NULL && p == d + n)
        report_key(fw, path, pk, "DER");
    EVP_PKEY_free(pk);
    ERR_clear_error();
}

static void match_certs(fw_t *fw)
{
    for (size_t c = 0; c < fw->ncerts && c < KEYS_MAX; c++)
        for (size_t k = 0; k < fw->nkeys && k < KEYS_MAX; k++) {
            if (memcmp(fw->certs[c].spki, fw->keys[k].spki, KEEL_SHA256_LEN) != 0)
                continue;
            char hex[2 * KEEL_SHA256_LEN + 1];
            hex_of(fw->keys[k].spki, KEEL_SHA256_LEN, hex, sizeof hex);
            finding(fw, "certificate-with-key", fw->certs[c].path, "5.4-3", SEV_FAIL,
                    json_pack("{s:s, s:s, s:s}", "subject", fw->certs[c].subject ? fw->certs[c].subject : "",
                              "key_path", fw->keys[k].path, "spki_sha256", hex),
                    "certificate %s ships with its private key (%s): anyone with the image can impersonate it",
                    fw->certs[c].subject ? fw->certs[c].subject : "", fw->keys[k].path);
            break;
        }
}

/* ---- accounts and password hashes --------------------------------------- */

static const char *hash_type(const char *h)
{
    static const struct {
        const char *prefix, *name;
    } t[] = {{"$1$", "md5crypt"},   {"$5$", "sha256crypt"}, {"$6$", "sha512crypt"},  {"$y$", "yescrypt"},
             {"$gy$", "gost-yescrypt"}, {"$7$", "scrypt"}, {"$2a$", "bcrypt"},     {"$2b$", "bcrypt"},
             {"$2y$", "bcrypt"},    {"$2x$", "bcrypt"},     {"$apr1$", "apr1-md5"}, {"$sha1$", "sha1crypt"},
             {"$md5", "sunmd5"},    {"{SHA}", "sha1-base64"}, {"_", "bsdi-des"}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (has_prefix(h, t[i].prefix))
            return t[i].name;
    if (strlen(h) == 13 && strspn(h, "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") == 13)
        return "descrypt";
    return NULL;
}

static void remember_hash(fw_t *fw, const char *user, const char *hash, const char *path, const char *source)
{
    if (fw->nhashes >= HASHES_MAX) {
        if (fw->nhashes++ == HASHES_MAX)
            note(fw, "more than %d password hashes: the rest are not tried against defaults", HASHES_MAX);
        return;
    }
    hashrec_t *h = &fw->hashes[fw->nhashes];
    h->user = strdup(user);
    h->hash = strdup(hash);
    h->path = strdup(path);
    h->source = source;
    if (h->user == NULL || h->hash == NULL || h->path == NULL) {
        free(h->user);
        free(h->hash);
        free(h->path);
        return;
    }
    fw->nhashes++;
}

static int locked(const char *h)
{
    return h[0] == '!' || h[0] == '*' || strcmp(h, "x") == 0 || strcmp(h, "LK") == 0 || has_prefix(h, "*LK*");
}

static void account_line(fw_t *fw, const char *path, char *line, size_t lineno)
{
    if (comment_line(line))
        return;
    char *f[7] = {0};
    size_t nf = 0;
    char *p = line;
    while (nf < 7) {
        f[nf++] = p;
        char *c = strchr(p, ':');
        if (c == NULL)
            break;
        *c = '\0';
        p = c + 1;
    }
    if (nf < 2 || f[0][0] == '\0' || f[0][0] == '+' || f[0][0] == '-')
        return;
    const char *b = base_name(path);
    int in_passwd = has_prefix(b, "passwd") || strcmp(b, "master.passwd") == 0;
    char user[64];
    printable(f[0], strlen(f[0]), user, sizeof user);
    const char *hash = f[1];
    const char *shell = in_passwd && nf == 7 ? f[6] : NULL;
    if (hash[0] == '\0') {
        int nologin = shell != NULL && (has_suffix(shell, "nologin") || has_suffix(shell, "/false"));
        finding(fw, "empty-password", path, "5.1-1", nologin ? SEV_WARN : SEV_FAIL,
                json_pack("{s:s, s:i}", "user", user, "line", (int)lineno),
                "account %s has an empty password field%s", user,
                nologin ? " (its shell refuses logins, but other services may not)" : ": anyone can log in as it");
        return;
    }
    if (locked(hash))
        return;
    const char *type = hash_type(hash);
    if (type == NULL) {
        note(fw, "%s:%zu: password field of %s in an unknown format", path, lineno, user);
        return;
    }
    int weak = strcmp(type, "descrypt") == 0 || strcmp(type, "md5crypt") == 0 || strcmp(type, "bsdi-des") == 0;
    finding(fw, "password-hash", path, "5.1-1", SEV_WARN,
            json_pack("{s:s, s:s, s:i, s:b}", "user", user, "hash_type", type, "line", (int)lineno, "weak_hash", weak),
            "account %s has a %s password hash in the image%s: every device starts with the same password "
            "unless it must be changed on first use", user, type, in_passwd ? " (in a world-readable passwd)" : "");
    remember_hash(fw, user, hash, path, in_passwd ? "passwd" : "shadow"); /* secret-scan: allow (a name, not a secret) */
}

static void htpasswd_line(fw_t *fw, const char *path, char *line, size_t lineno)
{
    if (comment_line(line))
        return;
    char *c = strchr(line, ':');
    if (c == NULL)
        return;
    *c = '\0';
    const char *hash = c + 1;
    char user[64];
    printable(line, strlen(line), user, sizeof user);
    const char *type = hash_type(hash);
    if (hash[0] == '\0') {
        finding(fw, "empty-password", path, "5.1-1", SEV_FAIL, json_pack("{s:s, s:i}", "user", user, "line",
                                                                          (int)lineno),
                "web user %s has an empty password", user);
        return;
    }
    finding(fw, "password-hash", path, "5.1-1", SEV_WARN,
            json_pack("{s:s, s:s, s:i}", "user", user, "hash_type", type ? type : "plain-or-unknown", "line",
                      (int)lineno),
            "web user %s has a %s password in the image: every device starts with the same password", user,
            type ? type : "plain-text or unknown");
    remember_hash(fw, user, hash, path, "htpasswd");
}

/* A hash from the image sets its own cost: refuse those that would make one
 * trial take seconds or gigabytes (bcrypt 2^31 rounds, yescrypt N = 2^30). */
static int cost_ok(const char *h)
{
    static const char itoa64[] = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    if (has_prefix(h, "$2")) {
        const char *c = strchr(h + 2, '$');
        return c != NULL && isdigit((unsigned char)c[1]) && isdigit((unsigned char)c[2]) &&
               (c[1] - '0') * 10 + (c[2] - '0') <= 13;
    }
    if (has_prefix(h, "$5$rounds=") || has_prefix(h, "$6$rounds=")) {
        char *end = NULL;
        unsigned long r = strtoul(h + 10, &end, 10);
        return end != h + 10 && r <= 200000;
    }
    if (has_prefix(h, "$y$") || has_prefix(h, "$gy$")) {
        const char *p = strchr(h + 1, '$') + 1; /* the parameters: flags, N, r */
        if (p[0] != 'j' || p[1] == '\0' || p[2] == '\0' || p[3] != '$')
            return 0;
        const char *n = strchr(itoa64, p[1]), *r = strchr(itoa64, p[2]);
        return n != NULL && r != NULL && n - itoa64 <= 13 && r - itoa64 <= 31;
    }
    return !has_prefix(h, "$7$") && !has_prefix(h, "$sha1$");
}

static int try_password(const hashrec_t *h, const char *pw, struct crypt_data *cd)
{
    if (has_prefix(h->hash, "{SHA}")) {
        uint8_t md[20];
        unsigned int mdlen = 0;
        char b64[32];
        if (EVP_Digest(pw, strlen(pw), md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != sizeof md)
            return 0;
        EVP_EncodeBlock((unsigned char *)b64, md, sizeof md);
        return strcmp(b64, h->hash + 5) == 0;
    }
    const char *out = crypt_rn(pw, h->hash, cd, (int)sizeof *cd);
    return out != NULL && out[0] != '*' && strlen(out) == strlen(h->hash) &&
           CRYPTO_memcmp(out, h->hash, strlen(out)) == 0;
}

static void check_defaults(fw_t *fw)
{
    if (fw->nhashes == 0)
        return;
    struct crypt_data *cd = calloc(1, sizeof *cd);
    if (cd == NULL) {
        note(fw, "out of memory: hashes not tried against default passwords");
        return;
    }
    double deadline = keel_now() + fw->lim.crypt_seconds;
    size_t n = fw->nhashes < HASHES_MAX ? fw->nhashes : HASHES_MAX;
    for (size_t i = 0; i < n; i++) {
        hashrec_t *h = &fw->hashes[i];
        const char *type = hash_type(h->hash);
        if (type == NULL || strcmp(type, "apr1-md5") == 0 || strcmp(type, "sunmd5") == 0 || !cost_ok(h->hash)) {
            note(fw, "%s: the %s hash of %s is not tried against defaults (format or cost not supported)", h->path,
                 type ? type : "unknown", h->user);
            continue;
        }
        size_t NPAIRS;
        const keel_cred_pair_t *default_pairs = keel_assess_default_creds(&NPAIRS);
        int hit = -1, timed_out = 0;
        /* Pairs naming this user first, then every other listed password. */
        for (int pass = 0; pass < 2 && hit < 0 && !timed_out; pass++)
            for (size_t p = 0; p < NPAIRS && hit < 0; p++) {
                if ((strcmp(default_pairs[p].user, h->user) == 0) != (pass == 0) ||
                    default_pairs[p].password[0] == '\0')
                    continue;
                int dup = 0;
                for (size_t q = 0; q < p && !dup; q++)
                    dup = strcmp(default_pairs[q].password, default_pairs[p].password) == 0 &&
                          (pass == 1 || strcmp(default_pairs[q].user, h->user) == 0);
                if (dup)
                    continue;
                if (keel_now() > deadline) {
                    timed_out = 1;
                    break;
                }
                if (try_password(h, default_pairs[p].password, cd))
                    hit = (int)p;
            }
        if (timed_out) {
            incomplete(fw, "default-password trials stopped after %.0f s (at %s of %s)", fw->lim.crypt_seconds,
                       h->user, h->path);
            break;
        }
        if (hit >= 0) {
            int pair = strcmp(default_pairs[hit].user, h->user) == 0;
            finding(fw, "default-credential", h->path, "5.1-1", SEV_FAIL,
                    json_pack("{s:s, s:s, s:s, s:b}", "user", h->user, "hash_type", type ? type : "unknown",
                              "source", h->source, "listed_pair", pair),
                    "the password of %s is a well-known default%s", h->user,
                    pair ? " listed for that user name" : " (listed for another user name)");
        }
    }
    keel_wipe(cd, sizeof *cd);
    free(cd);
}

/* ---- plain-text credentials in configuration ------------------------------ */

static int listed_password(const char *v)
{
    size_t NPAIRS;
    const keel_cred_pair_t *default_pairs = keel_assess_default_creds(&NPAIRS);
    for (size_t p = 0; p < NPAIRS; p++)
        if (strcmp(default_pairs[p].password, v) == 0)
            return 1;
    return 0;
}

/* A key naming a password: password, passwd, pass, pwd, passphrase, with any
 * prefix (admin_password, http_passwd, wifi.pass). */
static int password_key(const char *k, size_t n)
{
    static const char *const names[] = {"password", "passwd", "passphrase", "pass", "pwd"};
    char low[64];
    if (n == 0 || n >= sizeof low)
        return 0;
    for (size_t i = 0; i < n; i++)
        low[i] = (char)tolower((unsigned char)k[i]);
    low[n] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        size_t m = strlen(names[i]);
        if (n < m || strcmp(low + n - m, names[i]) != 0)
            continue;
        /* "rootpassword" names a password, "bypass" and "compass" do not. */
        char before = n == m ? '_' : low[n - m - 1];
        if (before == '_' || before == '.' || before == '-' || (m >= 6 && isalpha((unsigned char)before)))
            return 1;
    }
    return 0;
}

/* Configuration, not program text: in a source file "password = pass" is code. */
static int config_file(const char *path)
{
    static const char *const conf[] = {".conf", ".cfg", ".cnf", ".ini", ".json", ".xml", ".yaml", ".yml",
                                       ".properties", ".env", ".txt", ".config", ".default"};
    static const char *const code[] = {".c", ".h", ".cc", ".cpp", ".py", ".pl", ".pm", ".lua", ".rb", ".pas",
                                       ".pp", ".inc", ".java", ".go", ".rs", ".js", ".ts", ".php", ".sh"};
    const char *b = base_name(path);
    for (size_t i = 0; i < sizeof code / sizeof code[0]; i++)
        if (has_suffix(b, code[i]))
            return 0;
    for (size_t i = 0; i < sizeof conf / sizeof conf[0]; i++)
        if (has_suffix(b, conf[i]))
            return 1;
    return has_prefix(path, "/etc/") || strstr(path, "/etc/") != NULL || strstr(path, "/config/") != NULL ||
           strstr(path, "/conf/") != NULL || has_prefix(path, "/var/") || has_prefix(path, "/data/");
}

static void config_line(fw_t *fw, const char *path, char *line, size_t lineno)
{
    if (comment_line(line))
        return;
    /* key = value, key: value, "key": "value", <key>value</key> */
    for (char *p = line; *p; p++) {
        if (*p != '=' && *p != ':' && *p != '>')
            continue;
        char *ke = p;
        while (ke > line && (ke[-1] == ' ' || ke[-1] == '"' || ke[-1] == '\''))
            ke--;
        char *ks = ke;
        while (ks > line && (isalnum((unsigned char)ks[-1]) || ks[-1] == '_' || ks[-1] == '.' || ks[-1] == '-'))
            ks--;
        if (*p == '>' && (ks == line || ks[-1] != '<'))
            continue;
        if (!password_key(ks, (size_t)(ke - ks)))
            continue;
        char *v = p + 1;
        while (*v == ' ' || *v == '\t' || *v == '"' || *v == '\'')
            v++;
        size_t vl = strcspn(v, "\"'<;, \t");
        if (vl == 0 || vl > 128 || v[0] == '$' || v[0] == '%' || v[0] == '{')
            return;
        char val[129];
        memcpy(val, v, vl);
        val[vl] = '\0';
        char key[64];
        printable(ks, (size_t)(ke - ks), key, sizeof key);
        if (listed_password(val))
            finding(fw, "default-credential", path, "5.1-1", SEV_FAIL,
                    json_pack("{s:s, s:i}", "key", key, "line", (int)lineno),
                    "line %zu sets %s to a well-known default password", lineno, key);
        keel_wipe(val, sizeof val);
        return;
    }
}

/* ---- services started at boot ------------------------------------------- */

static int init_path(const char *p)
{
    const char *b = base_name(p);
    return strstr(p, "/init.d/") != NULL || strstr(p, "/rc.d/") != NULL || has_prefix(p, "/etc/rc") ||
           strstr(p, "/xinetd.d/") != NULL || has_prefix(p, "/etc/init/") || has_prefix(p, "/etc/default/") ||
           strcmp(b, "inittab") == 0 || strcmp(b, "inetd.conf") == 0 || strcmp(b, "rc.local") == 0 ||
           has_suffix(b, ".service") || has_suffix(b, ".socket") || has_suffix(b, ".rc") ||
           strcmp(b, "preinit") == 0 || strcmp(b, "profile") == 0;
}

static const char *debug_daemon(const char *word)
{
    static const char *const d[] = {"telnetd", "utelnetd", "in.telnetd", "gdbserver", "adbd"};
    const char *b = base_name(word);
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (strcmp(b, d[i]) == 0)
            return d[i];
    return NULL;
}

static void boot_line(fw_t *fw, const char *path, char *line, size_t lineno)
{
    if (comment_line(line))
        return;
    char copy[LINE_MAX_SCAN + 1];
    snprintf(copy, sizeof copy, "%s", line);
    char *w[64];
    size_t n = words_of(copy, w, 64);
    int stops = 0, dropbear = 0, empty_ok = 0, shell_login = 0;
    const char *daemon = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *b = base_name(w[i]);
        if (strstr(b, "kill") != NULL || strcmp(b, "stop") == 0 || strcmp(b, "disable") == 0)
            stops = 1;
        if (daemon == NULL)
            daemon = debug_daemon(w[i]);
        if (strcasestr(w[i], "dropbear") != NULL)
            dropbear = 1;
        if (w[i][0] == '-' && w[i][1] != '-' && strchr(w[i], 'B') != NULL && strspn(w[i] + 1,
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") == strlen(w[i] + 1))
            empty_ok = 1;
        if (strcmp(w[i], "-l") == 0 && i + 1 < n && has_suffix(w[i + 1], "sh"))
            shell_login = 1;
    }
    if (daemon != NULL && !stops)
        finding(fw, "debug-service", path, "5.6-4A", SEV_FAIL,
                json_pack("{s:s, s:i, s:b}", "service", daemon, "line", (int)lineno, "shell_without_login",
                          shell_login),
                "%s is started at boot (line %zu)%s", daemon, lineno,
                shell_login ? ", giving a shell without login" : "");
    if (dropbear && empty_ok && !stops)
        finding(fw, "empty-password-login", path, "5.1-1", SEV_FAIL,
                json_pack("{s:s, s:i}", "service", "dropbear", "line", (int)lineno),
                "dropbear is started with -B (line %zu): accounts with an empty password can log in", lineno);
}

/* BusyBox and SysV inittab: id:runlevels:action:process. */
static void inittab_line(fw_t *fw, const char *path, char *line, size_t lineno)
{
    if (comment_line(line))
        return;
    char *f[4];
    size_t nf = 0;
    char *p = line;
    while (nf < 4) {
        f[nf++] = p;
        char *c = nf < 4 ? strchr(p, ':') : NULL;
        if (c == NULL)
            break;
        *c = '\0';
        p = c + 1;
    }
    if (nf != 4)
        return;
    char tty[32];
    printable(f[0][0] ? f[0] : "console", strlen(f[0][0] ? f[0] : "console"), tty, sizeof tty);
    char proc[LINE_MAX_SCAN + 1];
    snprintf(proc, sizeof proc, "%s", f[3]);
    char *w[32];
    size_t n = words_of(proc, w, 32);
    if (n == 0)
        return;
    const char *prog = base_name(w[0][0] == '-' ? w[0] + 1 : w[0]);
    int shell = strcmp(prog, "sh") == 0 || strcmp(prog, "ash") == 0 || strcmp(prog, "bash") == 0 ||
                strcmp(prog, "hush") == 0;
    int autologin = 0;
    if (strstr(prog, "getty") != NULL)
        for (size_t i = 1; i < n; i++)
            autologin |= strcmp(w[i], "-a") == 0 || strcmp(w[i], "--autologin") == 0 ||
                         (strcmp(w[i], "-l") == 0 && i + 1 < n && has_suffix(w[i + 1], "sh"));
    if (shell || autologin)
        finding(fw, "console-shell", path, "5.6-4A", SEV_FAIL,
                json_pack("{s:s, s:i, s:s}", "tty", tty, "line", (int)lineno, "program", prog),
                "the console on %s gives a shell without a password (%s, line %zu)", tty,
                shell ? "shell run directly" : "getty with automatic login", lineno);
}

static void unit_line(fw_t *fw, const char *path, char *line, size_t lineno)
{
    if (strstr(line, "getty") != NULL && strstr(line, "--autologin") != NULL && !comment_line(line))
        finding(fw, "console-shell", path, "5.6-4A", SEV_FAIL, json_pack("{s:i}", "line", (int)lineno),
                "a getty logs in automatically (line %zu)", lineno);
}

static void sshd_line(fw_t *fw, const char *path, char *line, size_t lineno)
{
    char *w[4];
    size_t n = words_of(line, w, 4);
    if (n >= 2 && strcasecmp(w[0], "PermitEmptyPasswords") == 0 && strcasecmp(w[1], "yes") == 0)
        finding(fw, "empty-password-login", path, "5.1-1", SEV_FAIL,
                json_pack("{s:s, s:i}", "service", "sshd", "line", (int)lineno),
                "sshd allows accounts with an empty password to log in (line %zu)", lineno);
}

/* Android properties: adb open to anyone, debuggable builds. */
static void prop_line(fw_t *fw, const char *path, char *line, size_t lineno)
{
    char *t = line;
    while (*t == ' ')
        t++;
    if ((strcmp(t, "ro.adb.secure=0") == 0 || strcmp(t, "ro.debuggable=1") == 0 ||
         (has_prefix(t, "persist.sys.usb.config=") && strstr(t, "adb") != NULL))) {
        char prop[64];
        printable(t, strcspn(t, "="), prop, sizeof prop);
        finding(fw, "debug-service", path, "5.6-4A", SEV_FAIL,
                json_pack("{s:s, s:s, s:i}", "service", "adb", "property", prop, "line", (int)lineno),
                "Android debugging is enabled by %s (line %zu)", prop, lineno);
    }
}

/* ---- one entry ------------------------------------------------------------ */

static void on_entry(fw_t *fw, const entry_t *e)
{
    const char *b = base_name(e->path);
    if (e->type != E_DIR) {
        const char *d = debug_daemon(b);
        if (d != NULL) {
            const char *via = e->link != NULL && strcmp(base_name(e->link), "busybox") == 0 ? " (a BusyBox applet link)"
                                                                                            : "";
            finding(fw, "debug-binary", e->path, "5.6-6", SEV_WARN, json_pack("{s:s, s:b}", "service", d,
                                                                              "busybox", via[0] != '\0'),
                    "%s is in the image%s: remove it unless the product needs it", d, via);
        }
    }
    if (e->type == E_LINK || e->type == E_OTHER)
        return;
    unsigned m = e->mode;
    if (e->type == E_DIR) {
        if ((m & 0002) && !(m & 01000))
            finding(fw, "world-writable", e->path, "5.6-7", SEV_WARN, json_pack("{s:s}", "mode", "dir"),
                    "directory writable by every user, without the sticky bit (mode %04o)", m);
        return;
    }
    if ((m & 06000) && (m & 0002))
        finding(fw, "setuid", e->path, "5.6-7", SEV_FAIL, json_pack("{s:b, s:b}", "setuid", (m & 04000) != 0,
                                                                    "world_writable", 1),
                "set-user/group-id file that every user can write (mode %04o): a direct way to root", m);
    else if (m & 0002)
        finding(fw, "world-writable", e->path, "5.6-7", SEV_WARN, NULL, "file writable by every user (mode %04o)", m);
    else if (m & 06000)
        finding(fw, "setuid", e->path, "5.6-7", SEV_INFO, json_pack("{s:b, s:b}", "setuid", (m & 04000) != 0,
                                                                    "world_writable", 0),
                "runs with the %s of its owner (mode %04o): check it needs to", (m & 04000) ? "user id" : "group id",
                m);
}

static void on_content(fw_t *fw, const char *path, const uint8_t *d, size_t n)
{
    fw->files_read++;
    fw->bytes_read += n;
    scan_pem(fw, path, d, n);
    scan_der(fw, path, d, n);
    if (!is_text(d, n))
        return;
    const char *b = base_name(path);
    if (strcmp(b, "shadow") == 0 || strcmp(b, "shadow-") == 0 || strcmp(b, "passwd") == 0 ||
        strcmp(b, "passwd-") == 0 || strcmp(b, "master.passwd") == 0)
        each_line(fw, path, d, n, account_line);
    else if (strstr(b, "htpasswd") != NULL)
        each_line(fw, path, d, n, htpasswd_line);
    else if (config_file(path))
        each_line(fw, path, d, n, config_line);
    if (strcmp(b, "inittab") == 0)
        each_line(fw, path, d, n, inittab_line);
    else if (init_path(path))
        each_line(fw, path, d, n, boot_line);
    if (has_suffix(b, ".service"))
        each_line(fw, path, d, n, unit_line);
    if (strcmp(b, "sshd_config") == 0 || strstr(path, "/sshd_config.d/") != NULL)
        each_line(fw, path, d, n, sshd_line);
    if (has_suffix(b, ".prop"))
        each_line(fw, path, d, n, prop_line);
}

/* Counts an entry; 0 when the entry cap is reached. */
static int count_entry(fw_t *fw)
{
    if (fw->entries >= fw->lim.entries_max) {
        incomplete(fw, "more than %zu entries", fw->lim.entries_max);
        fw->stop = 1;
        return 0;
    }
    fw->entries++;
    return 1;
}

/* ---- directory reader ----------------------------------------------------- */

/* Wipes what the last file left, not the whole allocation (keel_buf_reset
 * would wipe up to file_max bytes for every small file). */
static void buf_clear(keel_buf_t *b)
{
    if (b->data != NULL)
        keel_wipe(b->data, b->len);
    b->len = 0;
}

static keel_status_t read_fd(fw_t *fw, int fd, const char *path, keel_buf_t *buf)
{
    buf_clear(buf);
    uint8_t chunk[CHUNK];
    size_t want = fw->lim.file_max;
    while (buf->len < want) {
        size_t n = want - buf->len < sizeof chunk ? want - buf->len : sizeof chunk;
        ssize_t r = read(fd, chunk, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            note(fw, "%s: read: %s", path, strerror(errno));
            break;
        }
        if (r == 0)
            break;
        if (keel_buf_append(buf, chunk, (size_t)r) != KEEL_OK)
            break;
    }
    keel_wipe(chunk, sizeof chunk);
    if (buf->len == want) {
        char extra;
        if (read(fd, &extra, 1) == 1)
            note(fw, "%s: only the first %zu bytes were read", path, want);
    }
    return KEEL_OK;
}

static void walk(fw_t *fw, int dirfd, dev_t dev, const char *prefix, unsigned depth, keel_buf_t *buf)
{
    DIR *dir = fdopendir(dirfd);
    if (dir == NULL) {
        note(fw, "%s: opendir: %s", prefix[0] ? prefix : "/", strerror(errno));
        close(dirfd);
        return;
    }
    struct dirent *de;
    while (!fw->stop && (de = readdir(dir)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (!count_entry(fw))
            break;
        char name[256], path[KEEL_PATH_MAX];
        printable(de->d_name, strlen(de->d_name), name, sizeof name);
        if (keel_snprintf(path, sizeof path, "%s/%s", prefix, name) != KEEL_OK) {
            incomplete(fw, "%s/...: path longer than %d bytes", prefix, KEEL_PATH_MAX);
            continue;
        }
        struct stat st;
        if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            note(fw, "%s: stat: %s", path, strerror(errno));
            continue;
        }
        entry_t e = {.path = path, .mode = (unsigned)st.st_mode & 07777, .type = E_OTHER};
        char target[LINK_MAX + 1];
        if (S_ISLNK(st.st_mode)) {
            ssize_t l = readlinkat(dirfd, de->d_name, target, LINK_MAX);
            if (l >= 0) {
                target[l] = '\0';
                e.link = target;
            }
            e.type = E_LINK;
            on_entry(fw, &e);
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            e.type = E_DIR;
            on_entry(fw, &e);
            if (st.st_dev != dev) {
                note(fw, "%s: another file system, not entered", path);
                continue;
            }
            if (depth + 1 >= fw->lim.depth_max) {
                incomplete(fw, "%s: deeper than %u levels, not entered", path, fw->lim.depth_max);
                continue;
            }
            int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            struct stat st2;
            if (sub < 0 || fstat(sub, &st2) != 0 || st2.st_ino != st.st_ino || st2.st_dev != st.st_dev) {
                note(fw, "%s: cannot open the directory: %s", path, sub < 0 ? strerror(errno) : "it changed");
                if (sub >= 0)
                    close(sub);
                continue;
            }
            walk(fw, sub, dev, path, depth + 1, buf);
            continue;
        }
        if (!S_ISREG(st.st_mode)) {
            on_entry(fw, &e);
            continue;
        }
        e.type = E_FILE;
        on_entry(fw, &e);
        if (st.st_size == 0)
            continue;
        if (fw->bytes_read >= fw->lim.total_max) {
            incomplete(fw, "more than %llu bytes read", (unsigned long long)fw->lim.total_max);
            fw->stop = 1;
            break;
        }
        int fd = openat(dirfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        struct stat st2;
        if (fd < 0 || fstat(fd, &st2) != 0 || !S_ISREG(st2.st_mode) || st2.st_ino != st.st_ino) {
            note(fw, "%s: cannot open: %s", path, fd < 0 ? strerror(errno) : "it changed");
            if (fd >= 0)
                close(fd);
            continue;
        }
        if (read_fd(fw, fd, path, buf) == KEEL_OK && buf->len > 0)
            on_content(fw, path, buf->data, buf->len);
        close(fd);
    }
    closedir(dir);
}

static keel_status_t scan_dir(fw_t *fw, const char *root, keel_buf_t *buf)
{
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0)
            close(fd);
        return keel_errorf(KEEL_ERR_IO, "%s: %s", root, strerror(errno));
    }
    walk(fw, fd, st.st_dev, "", 0, buf);
    return KEEL_OK;
}

/* ---- archive reader ------------------------------------------------------- */

/* The entry name as it would land under the image root: "." dropped, ".."
 * clamped at the root (the image is never extracted, so a name cannot escape;
 * it is only reported). Returns 0 when the name is unusable. */
static int normalize(fw_t *fw, const char *raw, char *out, size_t cap, unsigned *depth)
{
    size_t o = 0;
    unsigned d = 0;
    int clamped = 0;
    out[0] = '\0';
    for (const char *p = raw; *p;) {
        while (*p == '/')
            p++;
        size_t len = strcspn(p, "/");
        if (len == 0)
            break;
        if (len == 1 && p[0] == '.') {
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            if (d == 0) {
                clamped = 1;
            } else {
                while (o > 0 && out[o - 1] != '/')
                    o--;
                o = o > 0 ? o - 1 : 0;
                out[o] = '\0';
                d--;
            }
        } else {
            if (o + 1 + len + 1 > cap)
                return 0;
            out[o++] = '/';
            char tmp[KEEL_PATH_MAX];
            printable(p, len, tmp, sizeof tmp);
            memcpy(out + o, tmp, len);
            o += len;
            out[o] = '\0';
            d++;
        }
        p += len;
    }
    if (o == 0) {
        out[0] = '/';
        out[1] = '\0';
    }
    if (clamped) {
        char safe[256];
        printable(raw, strlen(raw), safe, sizeof safe);
        note(fw, "entry name '%s' climbs above the image root (path traversal); scanned as %s", safe, out);
    }
    *depth = d;
    return 1;
}

static keel_status_t scan_archive(fw_t *fw, const char *file, json_t *info, keel_buf_t *buf)
{
    struct archive *a = archive_read_new();
    if (a == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    /* Only built-in decoders: a filter libarchive would run as an external
     * program (ARCHIVE_WARN) has no place on hostile input. */
    int (*const filters[])(struct archive *) = {archive_read_support_filter_gzip, archive_read_support_filter_bzip2,
                                                archive_read_support_filter_xz, archive_read_support_filter_lzma,
                                                archive_read_support_filter_zstd};
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; i < sizeof filters / sizeof filters[0] && st == KEEL_OK; i++)
        if (filters[i](a) != ARCHIVE_OK)
            st = keel_errorf(KEEL_ERR_UNSUPPORTED, "libarchive lacks a built-in decompressor: %s",
                             archive_error_string(a) ? archive_error_string(a) : "?");
    if (st == KEEL_OK && (archive_read_support_format_tar(a) != ARCHIVE_OK ||
                          archive_read_support_format_cpio(a) != ARCHIVE_OK ||
                          archive_read_support_format_zip(a) != ARCHIVE_OK))
        st = keel_errorf(KEEL_ERR_UNSUPPORTED, "libarchive: %s", archive_error_string(a));
    if (st == KEEL_OK && archive_read_open_filename(a, file, 64 * 1024) != ARCHIVE_OK)
        st = keel_errorf(KEEL_ERR_FORMAT, "%s: not a directory or a readable archive (tar, cpio, zip): %s", file,
                         archive_error_string(a) ? archive_error_string(a) : "unknown format");
    struct archive_entry *ae;
    uint8_t *chunk = st == KEEL_OK ? malloc(CHUNK) : NULL;
    if (st == KEEL_OK && chunk == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    uint64_t unpacked = 0;
    int first = 1;
    while (st == KEEL_OK && !fw->stop) {
        int r = archive_read_next_header(a, &ae);
        if (r == ARCHIVE_EOF)
            break;
        if (first) {
            /* The first header decides the format: an unknown file fails here. */
            if (r < ARCHIVE_WARN && archive_format(a) == 0) {
                st = keel_errorf(KEEL_ERR_FORMAT, "%s: not a directory or a readable archive (tar, cpio, zip): %s",
                                 file, archive_error_string(a) ? archive_error_string(a) : "unknown format");
                break;
            }
            json_object_set_new(info, "format", json_string(archive_format_name(a)));
            json_t *fl = json_array();
            for (int i = archive_filter_count(a) - 1; i >= 0; i--)
                if (archive_filter_code(a, i) != ARCHIVE_FILTER_NONE)
                    json_array_append_new(fl, json_string(archive_filter_name(a, i)));
            json_object_set_new(info, "filters", fl);
            first = 0;
        }
        if (r == ARCHIVE_WARN)
            note(fw, "archive: %s", archive_error_string(a) ? archive_error_string(a) : "warning");
        if (r < ARCHIVE_WARN) {
            incomplete(fw, "archive damaged or truncated: %s", archive_error_string(a) ? archive_error_string(a) : "?");
            break;
        }
        if (!count_entry(fw))
            break;
        const char *raw = archive_entry_pathname(ae);
        char path[KEEL_PATH_MAX];
        unsigned depth = 0;
        if (raw == NULL || !normalize(fw, raw, path, sizeof path, &depth)) {
            incomplete(fw, "an entry name is missing or longer than %d bytes; entry skipped", KEEL_PATH_MAX);
            continue;
        }
        if (depth > fw->lim.depth_max) {
            incomplete(fw, "an entry is nested deeper than %u levels; skipped", fw->lim.depth_max);
            continue;
        }
        char target[LINK_MAX + 1];
        entry_t e = {.path = path, .mode = (unsigned)archive_entry_perm(ae) & 07777, .type = E_OTHER};
        const char *hl = archive_entry_hardlink(ae), *sl = archive_entry_symlink(ae);
        unsigned ft = archive_entry_filetype(ae);
        if (hl != NULL || sl != NULL) {
            printable(hl ? hl : sl, strlen(hl ? hl : sl), target, sizeof target);
            e.link = target;
            e.type = E_LINK;
        } else if (ft == AE_IFDIR) {
            e.type = E_DIR;
        } else if (ft == AE_IFREG) {
            e.type = E_FILE;
        }
        on_entry(fw, &e);
        if (e.type != E_FILE)
            continue;
        /* Read through the data ourselves, even past file_max, so that the
         * unpacked bytes count against total_max: a bomb stops the scan. */
        buf_clear(buf);
        int cut = 0;
        for (;;) {
            la_ssize_t n = archive_read_data(a, chunk, CHUNK);
            if (n == 0)
                break;
            if (n < 0) {
                note(fw, "%s: %s", path, archive_error_string(a) ? archive_error_string(a) : "read error");
                if (n == ARCHIVE_FATAL) {
                    incomplete(fw, "the archive cannot be read past %s", path);
                    fw->stop = 1;
                }
                break;
            }
            unpacked += (uint64_t)n;
            if (unpacked > fw->lim.total_max) {
                incomplete(fw, "more than %llu bytes unpacked", (unsigned long long)fw->lim.total_max);
                fw->stop = 1;
                break;
            }
            size_t room = fw->lim.file_max - buf->len;
            size_t take = (size_t)n < room ? (size_t)n : room;
            if (take < (size_t)n)
                cut = 1;
            if (take > 0 && keel_buf_append(buf, chunk, take) != KEEL_OK)
                cut = 1;
        }
        if (cut)
            note(fw, "%s: only the first %zu bytes were read", path, fw->lim.file_max);
        if (buf->len > 0)
            on_content(fw, path, buf->data, buf->len);
    }
    if (chunk != NULL) {
        keel_wipe(chunk, CHUNK);
        free(chunk);
    }
    archive_read_free(a);
    return st;
}

/* ---- the scan ------------------------------------------------------------- */

static int cmp_finding(const void *x, const void *y)
{
    json_t *a = *(json_t *const *)x, *b = *(json_t *const *)y;
    int c = strcmp(json_string_value(json_object_get(a, "path")), json_string_value(json_object_get(b, "path")));
    return c != 0 ? c : strcmp(json_string_value(json_object_get(a, "kind")), json_string_value(json_object_get(b, "kind")));
}

static json_t *sorted(json_t *arr)
{
    size_t n = json_array_size(arr);
    json_t **v = malloc((n ? n : 1) * sizeof *v);
    if (v == NULL)
        return json_incref(arr);
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(arr, i);
    qsort(v, n, sizeof *v, cmp_finding);
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append(out, v[i]);
    free(v);
    return out;
}

static void free_fw(fw_t *fw)
{
    for (size_t i = 0; i < fw->nkeys && i < KEYS_MAX; i++)
        free(fw->keys[i].path);
    for (size_t i = 0; i < fw->ncerts && i < KEYS_MAX; i++) {
        free(fw->certs[i].path);
        free(fw->certs[i].subject);
    }
    free(fw->keys);
    free(fw->certs);
    for (size_t i = 0; i < fw->nhashes && i < HASHES_MAX; i++) {
        free(fw->hashes[i].user);
        keel_wipe(fw->hashes[i].hash, strlen(fw->hashes[i].hash));
        free(fw->hashes[i].hash);
        free(fw->hashes[i].path);
    }
    json_decref(fw->findings);
    json_decref(fw->notes);
}

keel_status_t keel_assess_firmware_scan(const char *path, const keel_assess_firmware_limits_t *lim, json_t **report,
                                        unsigned *problems)
{
    if (path == NULL || report == NULL || problems == NULL)
        return keel_errorf(KEEL_ERR_ARG, "firmware scan: path and outputs are required");
    keel_status_t st = keel_crypto_init();
    if (st != KEEL_OK)
        return st;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return keel_errorf(errno == ENOENT ? KEEL_ERR_NOT_FOUND : KEEL_ERR_IO, "%s: %s", path, strerror(errno));
    fw_t *fw = calloc(1, sizeof *fw);
    if (fw == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    fw->lim = lim != NULL ? *lim : keel_assess_firmware_defaults();
    fw->complete = 1;
    fw->findings = json_array();
    fw->notes = json_array();
    json_t *info = json_object();
    keel_buf_t buf;
    keel_buf_init(&buf, fw->lim.file_max + 1);
    double t0 = keel_now();
    if (fw->findings == NULL || fw->notes == NULL || info == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    else if (S_ISDIR(sb.st_mode))
        st = scan_dir(fw, path, &buf);
    else if (S_ISREG(sb.st_mode))
        st = scan_archive(fw, path, info, &buf);
    else
        st = keel_errorf(KEEL_ERR_FORMAT, "%s: neither a directory nor an archive file", path);
    keel_buf_free(&buf);
    if (st == KEEL_OK) {
        match_certs(fw);
        check_defaults(fw);
    }
    if (st != KEEL_OK) {
        json_decref(info);
        free_fw(fw);
        free(fw);
        return st;
    }
    char target[KEEL_PATH_MAX];
    printable(path, strlen(path), target, sizeof target);
    json_t *r = json_pack("{s:s, s:s, s:s, s:b, s:O, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:f}, s:o, s:{s:i, s:i, s:i}}",
                          "format", "keel-assess-firmware-1", "target", target, "source",
                          S_ISDIR(sb.st_mode) ? "directory" : "archive", "complete", fw->complete, "notes", fw->notes,
                          "stats", "entries", (json_int_t)fw->entries, "files_read", (json_int_t)fw->files_read,
                          "bytes_read", (json_int_t)fw->bytes_read, "private_keys", (json_int_t)fw->pem_keys,
                          "certificates", (json_int_t)(fw->ncerts < KEYS_MAX ? fw->ncerts : KEYS_MAX),
                          "password_hashes", (json_int_t)(fw->nhashes < HASHES_MAX ? fw->nhashes : HASHES_MAX),
                          "seconds", keel_now() - t0, "findings", sorted(fw->findings), "counts", "fail",
                          (int)fw->counts[SEV_FAIL], "warn", (int)fw->counts[SEV_WARN], "info",
                          (int)fw->counts[SEV_INFO]);
    if (r != NULL && !S_ISDIR(sb.st_mode))
        json_object_set(r, "archive", info);
    json_decref(info);
    *problems = fw->counts[SEV_FAIL] + fw->counts[SEV_WARN];
    free_fw(fw);
    free(fw);
    if (r == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    *report = r;
    return KEEL_OK;
}

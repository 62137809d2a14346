/*
 * Fuzz target: what `keel assess firmware` reads out of an image
 * (src/assess/firmware.c): the archive itself (libarchive: tar, cpio, zip,
 * compressed or not) and every file it parses (passwd/shadow/htpasswd,
 * sshd_config, init scripts, inittab, systemd units, .prop and config files,
 * PEM/DER/OpenSSH keys and certificates).
 *
 * Byte 0, bit 0 picks the input:
 *   0  raw: the rest is the image file.
 *   1  files: the rest is a list of files, separated by "\n=== ". Each one
 *      starts with a line naming it: "path", "path MODE" (octal), "dir/" or
 *      "path -> target" (a symbolic link); its content follows. The target
 *      packs them (bit 1 of byte 0: cpio newc, else POSIX tar) with
 *      libarchive in memory, so the fuzzer mutates the files, not the
 *      archive's checksums. "@HASH1@", "@HASH5@" and "@HASH6@" in a file
 *      become an MD5, SHA-256 or SHA-512 crypt hash of "admin" (a password
 *      of the public default list), made at start-up: the repository holds
 *      no password hash (scripts/secret-scan.sh).
 * The image goes to a memory file, scanned through /proc/self/fd/N with
 * small limits and a 10 ms budget for the default-password trials.
 *
 * What must hold: the scan runs or refuses the file as not an archive; a
 * report is a JSON object whose counts agree with its findings and with
 * *problems; no password hash of a passwd/shadow/htpasswd file in the image
 * appears in the report (findings name hashes by type, never by value)
 * unless its text is also elsewhere in the image (in a file or user name).
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include "keel/assess_firmware.h"

#include <archive.h>
#include <archive_entry.h>
#include <crypt.h>
#include <jansson.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define IMAGE_MAX (2u << 20)
#define FILES_MAX 64
#define SEPARATOR "\n=== "

static uint8_t *image, *files_text;

/* The placeholders and the hashes they stand for. */
static struct {
    const char *token, *setting;
    char hash[CRYPT_OUTPUT_SIZE];
} hashes[] = {{"@HASH1@", "$1$fuzzsalt$", ""}, {"@HASH5@", "$5$fuzzsalt$", ""}, {"@HASH6@", "$6$fuzzsalt$", ""}};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    keel_log_set_level(KEEL_LOG_ERROR);
    image = malloc(IMAGE_MAX);
    files_text = malloc(IMAGE_MAX);
    if (image == NULL || files_text == NULL)
        abort();
    for (size_t i = 0; i < sizeof hashes / sizeof hashes[0]; i++) {
        struct crypt_data cd;
        memset(&cd, 0, sizeof cd);
        const char *h = crypt_r("admin", hashes[i].setting, &cd);
        if (h == NULL || h[0] == '*' || keel_strlcpy(hashes[i].hash, h, sizeof hashes[i].hash) != KEEL_OK)
            abort();
    }
    return 0;
}

/* The input with its placeholders replaced, into files_text; its length. */
static size_t expand(const uint8_t *p, size_t n)
{
    size_t out = 0;
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        for (; k < sizeof hashes / sizeof hashes[0]; k++) {
            size_t tl = strlen(hashes[k].token);
            if (n - i >= tl && memcmp(p + i, hashes[k].token, tl) == 0)
                break;
        }
        if (k < sizeof hashes / sizeof hashes[0] && out + strlen(hashes[k].hash) <= IMAGE_MAX) {
            memcpy(files_text + out, hashes[k].hash, strlen(hashes[k].hash));
            out += strlen(hashes[k].hash);
            i += strlen(hashes[k].token);
        } else if (out < IMAGE_MAX) {
            files_text[out++] = p[i++];
        } else {
            break;
        }
    }
    return out;
}

typedef struct {
    const uint8_t *head; /* the naming line */
    size_t head_len;
    const uint8_t *body;
    size_t body_len;
} file_t;

static size_t split_files(const uint8_t *p, size_t n, file_t *out)
{
    size_t count = 0;
    const uint8_t *end = p + n;
    while (p < end && count < FILES_MAX) {
        const uint8_t *next = memmem(p, (size_t)(end - p), SEPARATOR, sizeof SEPARATOR - 1);
        const uint8_t *stop = next != NULL ? next : end;
        const uint8_t *nl = memchr(p, '\n', (size_t)(stop - p));
        out[count].head = p;
        out[count].head_len = (size_t)((nl != NULL ? nl : stop) - p);
        out[count].body = nl != NULL ? nl + 1 : stop;
        out[count].body_len = (size_t)(stop - out[count].body);
        count++;
        p = next != NULL ? next + sizeof SEPARATOR - 1 : end;
    }
    return count;
}

/* Packs the files into `image`; its length, 0 when libarchive refused. */
static size_t pack(const file_t *files, size_t n, int cpio)
{
    struct archive *a = archive_write_new();
    size_t used = 0;
    int ok = a != NULL && (cpio ? archive_write_set_format_cpio_newc(a) : archive_write_set_format_pax_restricted(a)) ==
                              ARCHIVE_OK &&
             archive_write_set_bytes_in_last_block(a, 1) == ARCHIVE_OK &&
             archive_write_open_memory(a, image, IMAGE_MAX, &used) == ARCHIVE_OK;
    for (size_t i = 0; ok && i < n; i++) {
        char head[512];
        size_t hl = files[i].head_len < sizeof head - 1 ? files[i].head_len : sizeof head - 1;
        memcpy(head, files[i].head, hl);
        head[hl] = '\0';
        if (hl == 0 || memchr(files[i].head, '\0', hl) != NULL)
            continue;
        struct archive_entry *e = archive_entry_new();
        if (e == NULL)
            break;
        char *arrow = strstr(head, " -> ");
        unsigned mode = 0644;
        if (arrow != NULL) {
            *arrow = '\0';
            archive_entry_set_filetype(e, AE_IFLNK);
            archive_entry_set_symlink(e, arrow + 4);
            mode = 0777;
        } else {
            char *sp = strrchr(head, ' ');
            if (sp != NULL && sp[1] != '\0' && strspn(sp + 1, "01234567") == strlen(sp + 1) && strlen(sp + 1) <= 5) {
                mode = (unsigned)strtoul(sp + 1, NULL, 8) & 07777;
                *sp = '\0';
            }
            size_t len = strlen(head);
            int dir = len > 0 && head[len - 1] == '/';
            archive_entry_set_filetype(e, dir ? AE_IFDIR : AE_IFREG);
            if (!dir)
                archive_entry_set_size(e, (la_int64_t)files[i].body_len);
        }
        archive_entry_set_pathname(e, head);
        archive_entry_set_perm(e, mode);
        archive_entry_set_mtime(e, 1700000000, 0);
        ok = archive_write_header(a, e) >= ARCHIVE_WARN;
        if (ok && archive_entry_filetype(e) == AE_IFREG && files[i].body_len > 0)
            ok = archive_write_data(a, files[i].body, files[i].body_len) == (la_ssize_t)files[i].body_len;
        archive_entry_free(e);
    }
    if (a != NULL) {
        ok = archive_write_close(a) == ARCHIVE_OK && ok;
        archive_write_free(a);
    }
    return ok ? used : 0;
}

/* Does `s` occur more than once in the files (names and contents)? The
 * report names files and users: a hash's text that is also part of a name
 * can show there without the hash leaking. */
static int elsewhere(const file_t *files, size_t n, const char *s)
{
    size_t seen = 0, len = strlen(s);
    for (size_t i = 0; i < n && seen < 2; i++) {
        const uint8_t *parts[2] = {files[i].head, files[i].body};
        size_t lens[2] = {files[i].head_len, files[i].body_len};
        for (int k = 0; k < 2; k++)
            for (const uint8_t *p = parts[k], *end = parts[k] + lens[k];
                 p < end && (p = memmem(p, (size_t)(end - p), s, len)) != NULL; p++)
                seen++;
    }
    return seen > 1;
}

/* The hash field of account lines ("user:HASH:..."), when it looks like one. */
static void hashes_absent(const file_t *f, const char *report, const file_t *files, size_t n_files)
{
    char head[512];
    size_t hl = f->head_len < sizeof head - 1 ? f->head_len : sizeof head - 1;
    memcpy(head, f->head, hl);
    head[hl] = '\0';
    const char *base = strrchr(head, '/') != NULL ? strrchr(head, '/') + 1 : head;
    if (strncmp(base, "shadow", 6) != 0 && strncmp(base, "passwd", 6) != 0 && strstr(base, "htpasswd") == NULL)
        return;
    const uint8_t *p = f->body, *end = f->body + f->body_len;
    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        const uint8_t *le = nl != NULL ? nl : end;
        const uint8_t *c1 = memchr(p, ':', (size_t)(le - p));
        if (c1 != NULL) {
            const uint8_t *h = c1 + 1;
            const uint8_t *c2 = memchr(h, ':', (size_t)(le - h));
            size_t len = (size_t)((c2 != NULL ? c2 : le) - h);
            char hash[256];
            if (len >= 20 && len < sizeof hash && h[0] == '$' && memchr(h, '\0', len) == NULL) {
                memcpy(hash, h, len);
                hash[len] = '\0';
                if (hash[len - 1] == '\r')
                    hash[len - 1] = '\0';
                fuzz_must(strstr(report, hash) == NULL || elsewhere(files, n_files, hash),
                          "a password hash of the image is in the report");
            }
        }
        p = le + 1;
    }
}

static void check_report(const json_t *r, unsigned problems)
{
    fuzz_must(json_is_object(r), "the report is not an object");
    json_t *findings = json_object_get(r, "findings"), *counts = json_object_get(r, "counts");
    fuzz_must(json_is_array(findings) && json_is_object(counts) && json_is_boolean(json_object_get(r, "complete")),
              "a report without findings, counts or complete");
    json_int_t seen[3] = {0, 0, 0};
    static const char *const sev[3] = {"fail", "warn", "info"};
    size_t i;
    json_t *f;
    json_array_foreach(findings, i, f) {
        const char *s = json_string_value(json_object_get(f, "severity"));
        int k = -1;
        for (int j = 0; j < 3 && s != NULL; j++)
            if (strcmp(s, sev[j]) == 0)
                k = j;
        fuzz_must(k >= 0 && json_is_string(json_object_get(f, "kind")) && json_is_string(json_object_get(f, "path")),
                  "a finding without severity, kind or path");
        seen[k]++;
    }
    for (int j = 0; j < 3; j++)
        fuzz_must(json_integer_value(json_object_get(counts, sev[j])) == seen[j] || json_array_size(findings) >=
                      KEEL_ASSESS_FW_FINDINGS_MAX,
                  "counts disagree with the findings");
    fuzz_must((json_int_t)problems == json_integer_value(json_object_get(counts, "fail")) +
                                          json_integer_value(json_object_get(counts, "warn")),
              "problems disagree with the counts");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > IMAGE_MAX / 4)
        return 0;
    file_t files[FILES_MAX];
    size_t n_files = 0, len;
    const uint8_t *img;
    if (data[0] & 1) {
        n_files = split_files(files_text, expand(data + 1, size - 1), files);
        len = pack(files, n_files, data[0] & 2);
        img = image;
        if (len == 0)
            return 0;
    } else {
        img = data + 1;
        len = size - 1;
    }
    int fd = memfd_create("fuzz-firmware", MFD_CLOEXEC);
    if (fd < 0)
        return 0;
    char path[64];
    if ((len > 0 && write(fd, img, len) != (ssize_t)len) || keel_snprintf(path, sizeof path, "/proc/self/fd/%d", fd) != KEEL_OK) {
        close(fd);
        return 0;
    }
    keel_assess_firmware_limits_t lim = keel_assess_firmware_defaults();
    lim.file_max = 64u * 1024u;
    lim.total_max = 4u << 20;
    lim.entries_max = 256;
    lim.depth_max = 16;
    lim.crypt_seconds = 0.01;
    json_t *r = NULL;
    unsigned problems = 0;
    keel_status_t st = keel_assess_firmware_scan(path, &lim, &r, &problems);
    if (st == KEEL_OK) {
        check_report(r, problems);
        char *text = json_dumps(r, JSON_COMPACT);
        fuzz_must(text != NULL, "the report does not dump as JSON");
        for (size_t i = 0; i < n_files; i++)
            hashes_absent(&files[i], text, files, n_files);
        free(text);
        json_decref(r);
    } else {
        fuzz_must(r == NULL && (st == KEEL_ERR_FORMAT || st == KEEL_ERR_UNSUPPORTED),
                  "a scan failed otherwise than by refusing the file");
    }
    keel_error_clear();
    close(fd);
    return 0;
}

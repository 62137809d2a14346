/*
 * The device side of A/B updates: install a verified bundle into the
 * inactive slot, the emulated bootloader's verify-and-choose, confirm, and
 * the anti-rollback counter in the vault. The boot state itself (codec,
 * backends, state machine) is in bootstate.c.
 */
#define _GNU_SOURCE /* sync_file_range */
#include "keel/slots.h"

#include "keel/crypto.h"
#include "keel/device.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SIGNED_PART_MAX \
    (KEEL_BUNDLE_HEADER_LEN + KEEL_BUNDLE_MANIFEST_MAX + KEEL_BUNDLE_SIG_MAX + KEEL_BUNDLE_CHAIN_MAX)
/* The boot check streams the image through a buffer of its own, whatever
 * the bundle's chunk size. */
#define VERIFY_BUF (256u * 1024u)
#define KEEL_TRUSTVER_SECRET "update.trust_version"

struct keel_slots {
    const keel_config_t *cfg;
    keel_keystore_t *ks;
    keel_vault_t *vault;
    keel_trust_t *trust;
    char dir[KEEL_PATH_MAX];
    char trust_path[KEEL_PATH_MAX]; /* the release root, and its CRL when there is one */
    char slot_path[KEEL_SLOTS_N][KEEL_PATH_MAX];
    char signed_path[KEEL_SLOTS_N][KEEL_PATH_MAX];
    keel_bootstate_file_t file;
    keel_bootstate_backend_t backend;
    const char *model;
    uint32_t boot_tries;
    bool allow_downgrade;
    int lock_fd;                    /* flock on <dir>/lock: one updater at a time */
    char vault_err[KEEL_ERROR_MAX]; /* why the vault did not open, if it did not */
};

void keel_slots_close(keel_slots_t *s)
{
    if (s == NULL)
        return;
    keel_trust_free(s->trust);
    keel_vault_close(s->vault);
    keel_keystore_close(s->ks);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the flock */
    free(s);
}

/* The release trust is one file: the root and, when there is one, the
 * current CRL of the release issuing CA. One file, so a trust update replaces
 * both with a single atomic write. */
static keel_status_t trust_load_file(const char *path, keel_trust_t **out)
{
    return keel_trust_load(path, NULL, out); /* it takes CRLs from the same file */
}

static keel_status_t trust_open(const keel_config_t *c, char *path, keel_trust_t **out)
{
    keel_status_t st = keel_config_path(c, "trust", "release_root", path);
    if (st != KEEL_OK)
        return keel_errorf(KEEL_ERR_CONFIG, "[trust] release_root is not set");
    return trust_load_file(path, out);
}

/* One updater at a time: keeld's automatic update and a person's CLI must
 * not write the same slot or race on the boot state. */
static keel_status_t journal_finish(keel_slots_t *s);

static keel_status_t lock_updates(keel_slots_t *s)
{
    char path[KEEL_PATH_MAX];
    keel_status_t st = keel_path_join(path, sizeof path, s->dir, "lock");
    if (st != KEEL_OK)
        return st;
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (s->lock_fd < 0)
        return keel_errorf(KEEL_ERR_IO, "open %s: %s", path, strerror(errno));
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return keel_errorf(KEEL_ERR_IO, "another update, boot or confirm is running on this device");
    return KEEL_OK;
}

keel_status_t keel_slots_open(const keel_config_t *c, keel_slots_t **out)
{
    if (c == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "slots: missing argument");
    keel_slots_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    s->lock_fd = -1;
    s->cfg = c;
    s->model = keel_config_str(c, "device", "model");
    s->boot_tries = (uint32_t)keel_config_uint(c, "update", "boot_tries");
    s->allow_downgrade = keel_config_bool(c, "update", "allow_downgrade") != 0;
    static const char *const slot_keys[KEEL_SLOTS_N] = {"slot_a", "slot_b"};
    static const char *const signed_names[KEEL_SLOTS_N] = {"slot-a.signed", "slot-b.signed"};
    keel_status_t st = keel_config_path(c, "update", "dir", s->dir);
    for (int i = 0; st == KEEL_OK && i < KEEL_SLOTS_N; i++) {
        st = keel_config_path(c, "update", slot_keys[i], s->slot_path[i]);
        if (st != KEEL_OK)
            st = keel_errorf(KEEL_ERR_CONFIG, "[update] %s is not set", slot_keys[i]);
        else
            st = keel_path_join(s->signed_path[i], sizeof s->signed_path[i], s->dir, signed_names[i]);
    }
    struct stat sa, sb;
    if (st == KEEL_OK && (strcmp(s->slot_path[0], s->slot_path[1]) == 0 ||
                          (stat(s->slot_path[0], &sa) == 0 && stat(s->slot_path[1], &sb) == 0 &&
                           sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino)))
        st = keel_errorf(KEEL_ERR_CONFIG, "[update] slot_a and slot_b are the same: %s", s->slot_path[0]);
    if (st == KEEL_OK)
        st = keel_dir_make(s->dir, 0700);
    if (st == KEEL_OK)
        st = lock_updates(s);
    if (st == KEEL_OK)
        st = keel_bootstate_file_backend(&s->file, s->dir, &s->backend);
    if (st == KEEL_OK)
        st = trust_open(c, s->trust_path, &s->trust);
    /* The vault holds the anti-rollback counters. Without it installs and
     * confirms are refused, but the bootloader still boots (from the counter
     * the boot state implies), or a broken vault would brick the device. */
    keel_status_t vst = KEEL_OK;
    if (st == KEEL_OK && (vst = keel_device_keystore_open(c, &s->ks)) == KEEL_OK)
        vst = keel_device_vault_open(c, s->ks, &s->vault);
    /* A factory reset cut off between its erase and putting the counters
     * back is finished by whoever opens the slots next: keeld, keel boot,
     * keel update. */
    if (st == KEEL_OK && vst == KEEL_OK)
        vst = journal_finish(s);
    if (st == KEEL_OK && vst != KEEL_OK) {
        snprintf(s->vault_err, sizeof s->vault_err, "%s", keel_error_message());
        keel_log(KEEL_LOG_WARN, "the vault is unavailable: %s", s->vault_err);
        keel_error_clear();
        keel_vault_close(s->vault);
        s->vault = NULL;
    }
    if (st != KEEL_OK) {
        keel_slots_close(s);
        return st;
    }
    *out = s;
    return KEEL_OK;
}

const char *keel_slots_path(const keel_slots_t *s, int slot)
{
    return slot == 0 || slot == 1 ? s->slot_path[slot] : "";
}

/* ---- the anti-rollback counter -------------------------------------------- */

/* A 32-bit counter kept sealed in the vault; absent reads as 0. */
static keel_status_t counter_get(keel_slots_t *s, const char *name, uint32_t *counter)
{
    if (s->vault == NULL)
        return keel_errorf(KEEL_ERR_IO, "the vault is unavailable: %s", s->vault_err);
    uint8_t b[4];
    size_t n = 0;
    keel_status_t st = keel_vault_secret_get(s->vault, name, b, sizeof b, &n);
    if (st == KEEL_ERR_NOT_FOUND) {
        keel_error_clear();
        *counter = 0;
        return KEEL_OK;
    }
    if (st != KEEL_OK)
        return st;
    if (n != sizeof b)
        return keel_errorf(KEEL_ERR_FORMAT, "vault secret %s is %zu bytes, not 4", name, n);
    *counter = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return KEEL_OK;
}

/* Raises a counter to `to`; it never decreases. */
static keel_status_t counter_raise(keel_slots_t *s, const char *name, uint32_t to)
{
    if (s->vault == NULL)
        return keel_errorf(KEEL_ERR_IO, "the vault is unavailable: %s", s->vault_err);
    uint32_t cur = 0;
    keel_status_t st = counter_get(s, name, &cur);
    if (st != KEEL_OK || to <= cur)
        return st;
    uint8_t b[4] = {(uint8_t)to, (uint8_t)(to >> 8), (uint8_t)(to >> 16), (uint8_t)(to >> 24)};
    return keel_vault_secret_put(s->vault, name, b, sizeof b);
}

/* ---- the factory-reset journal ---------------------------------------------- */

static const char *const journal_keys[] = {KEEL_SECVER_SECRET, KEEL_TRUSTVER_SECRET};
#define JOURNAL_N (sizeof journal_keys / sizeof journal_keys[0])
#define JOURNAL_MAX 256u

static keel_status_t journal_path(const keel_slots_t *s, char out[KEEL_PATH_MAX])
{
    return keel_path_join(out, KEEL_PATH_MAX, s->dir, KEEL_SLOTS_RESET_JOURNAL);
}

/* The journal's values (0 where absent); KEEL_ERR_NOT_FOUND without a journal. */
static keel_status_t journal_read(const keel_slots_t *s, uint32_t v[JOURNAL_N])
{
    char path[KEEL_PATH_MAX];
    keel_status_t st = journal_path(s, path);
    if (st != KEEL_OK)
        return st;
    keel_buf_t b;
    keel_buf_init(&b, JOURNAL_MAX);
    st = keel_file_read(path, JOURNAL_MAX, &b);
    for (size_t i = 0; i < JOURNAL_N; i++)
        v[i] = 0;
    for (size_t i = 0; st == KEEL_OK && i < JOURNAL_N; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s=", journal_keys[i]);
        const char *p = strstr((const char *)b.data, key);
        if (p == NULL)
            continue;
        char *end = NULL;
        errno = 0;
        unsigned long n = strtoul(p + strlen(key), &end, 10);
        if (errno != 0 || end == p + strlen(key) || *end != '\n' || n > UINT32_MAX)
            st = keel_errorf(KEEL_ERR_FORMAT, "%s: %s is malformed", path, journal_keys[i]);
        else
            v[i] = (uint32_t)n;
    }
    keel_buf_free(&b);
    return st;
}

keel_status_t keel_slots_reset_journal(keel_slots_t *s)
{
    if (s == NULL || s->vault == NULL)
        return keel_errorf(KEEL_ERR_IO, "the vault is unavailable: %s", s != NULL ? s->vault_err : "");
    uint32_t v[JOURNAL_N] = {0};
    keel_status_t st = journal_read(s, v);
    if (st == KEEL_ERR_NOT_FOUND) {
        keel_error_clear();
        st = KEEL_OK;
    }
    /* An earlier journal not yet finished is merged, never lowered. */
    for (size_t i = 0; st == KEEL_OK && i < JOURNAL_N; i++) {
        uint32_t cur = 0;
        st = counter_get(s, journal_keys[i], &cur);
        if (st == KEEL_OK && cur > v[i])
            v[i] = cur;
    }
    char path[KEEL_PATH_MAX], text[JOURNAL_MAX];
    if (st == KEEL_OK)
        st = journal_path(s, path);
    if (st == KEEL_OK)
        st = keel_snprintf(text, sizeof text, "%s=%" PRIu32 "\n%s=%" PRIu32 "\n", journal_keys[0], v[0],
                           journal_keys[1], v[1]);
    return st == KEEL_OK ? keel_file_write_atomic(path, text, strlen(text), 0600) : st;
}

static keel_status_t journal_finish(keel_slots_t *s)
{
    uint32_t v[JOURNAL_N] = {0};
    keel_status_t st = journal_read(s, v);
    if (st == KEEL_ERR_NOT_FOUND) {
        keel_error_clear();
        return KEEL_OK;
    }
    for (size_t i = 0; st == KEEL_OK && i < JOURNAL_N; i++)
        st = counter_raise(s, journal_keys[i], v[i]);
    char path[KEEL_PATH_MAX];
    if (st == KEEL_OK && (st = journal_path(s, path)) == KEEL_OK && unlink(path) != 0)
        st = keel_errorf(KEEL_ERR_IO, "remove %s: %s", path, strerror(errno));
    if (st == KEEL_OK)
        st = keel_dir_sync(s->dir);
    if (st == KEEL_OK)
        keel_log(KEEL_LOG_WARN, "update: a factory reset was finished: anti-rollback counters %s=%" PRIu32
                 ", %s=%" PRIu32 " kept", journal_keys[0], v[0], journal_keys[1], v[1]);
    return st;
}

keel_status_t keel_slots_counter(keel_slots_t *s, uint32_t *counter)
{
    return counter_get(s, KEEL_SECVER_SECRET, counter);
}

/*
 * The anti-rollback counter to enforce: the vault's, but never below the
 * security version of the confirmed (active) slot, so deleting the vault
 * does not reopen old versions. When the vault cannot be read, `strict`
 * callers (install, confirm) fail; the bootloader goes on with the boot
 * state's figure.
 */
static keel_status_t effective_counter(keel_slots_t *s, const keel_bootstate_t *bs, bool strict, uint32_t *out)
{
    uint32_t c = 0;
    keel_status_t st = keel_slots_counter(s, &c);
    if (st != KEEL_OK) {
        if (strict)
            return st;
        keel_log(KEEL_LOG_WARN, "%s; using the boot state's anti-rollback figure", keel_error_message());
        keel_error_clear();
        c = 0;
    }
    if ((bs->active == 0 || bs->active == 1) && bs->security_version[bs->active] > c)
        c = bs->security_version[bs->active];
    *out = c;
    return KEEL_OK;
}

/* ---- checks shared by install and boot ------------------------------------ */

static int model_listed(const keel_manifest_t *m, const char *model)
{
    for (unsigned i = 0; i < m->n_models && i < KEEL_BUNDLE_MODELS_MAX; i++)
        if (strcmp(m->models[i], model) == 0)
            return 1;
    return 0;
}

keel_status_t keel_slots_state(keel_slots_t *s, keel_bootstate_t *st)
{
    keel_status_t rc = keel_bootstate_load(&s->backend, st);
    if (rc == KEEL_ERR_NOT_FOUND) {
        keel_error_clear();
        return KEEL_OK;
    }
    return rc;
}

/* The signed manifest of a slot, verified against `trust`. */
static keel_status_t slot_manifest_under(keel_slots_t *s, int slot, const keel_trust_t *trust,
                                         unsigned flags, keel_manifest_t *out)
{
    if (slot != 0 && slot != 1)
        return keel_errorf(KEEL_ERR_ARG, "no such slot");
    keel_buf_t b;
    keel_status_t st = keel_file_read(s->signed_path[slot], SIGNED_PART_MAX, &b);
    if (st != KEEL_OK)
        return st;
    st = keel_bundle_verify_signed_part_ex(b.data, b.len, trust, flags, out);
    keel_buf_free(&b);
    /* Only software images boot: a signed trust bundle copied into a slot
     * must not run, nor raise the counter. */
    if (st == KEEL_OK && out->kind != KEEL_BUNDLE_IMAGE) {
        keel_manifest_free(out);
        st = keel_errorf(KEEL_ERR_VERIFY, "slot %c holds a trust store bundle, not a software image",
                         keel_slot_name(slot));
    }
    return st;
}

keel_status_t keel_slots_manifest(keel_slots_t *s, int slot, keel_manifest_t *out)
{
    return slot_manifest_under(s, slot, s->trust, 0, out);
}

/* A new trust store must still verify every slot the device may boot,
 * or the next boot would refuse the running software. */
static keel_status_t trust_keeps_slots(keel_slots_t *s, const keel_trust_t *t)
{
    keel_bootstate_t bs;
    keel_status_t st = keel_slots_state(s, &bs);
    for (int i = 0; st == KEEL_OK && i < KEEL_SLOTS_N; i++) {
        if (i != bs.active && i != bs.pending && !bs.good[i])
            continue;
        keel_manifest_t m;
        if (slot_manifest_under(s, i, t, KEEL_VERIFY_NO_TIME, &m) != KEEL_OK) {
            char why[KEEL_ERROR_MAX];
            snprintf(why, sizeof why, "%s", keel_error_message());
            return keel_errorf(KEEL_ERR_VERIFY, "the new trust store would not verify the software in slot %c "
                               "(%s): %s", keel_slot_name(i), bs.version[i], why);
        }
        keel_manifest_free(&m);
    }
    return st;
}

/* ---- install --------------------------------------------------------------- */

/* Every write of the image counts as a storage operation for power-cut tests. */
static int slot_write(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        if (keel_fault_hit("write")) {
            errno = EIO;
            return -1;
        }
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int slot_fsync(int fd)
{
    if (keel_fault_hit("fsync")) {
        errno = EIO;
        return -1;
    }
    return fsync(fd);
}

static keel_status_t install_policy(keel_slots_t *s, const keel_bootstate_t *bs, const keel_manifest_t *m)
{
    uint32_t counter = 0;
    keel_status_t st = effective_counter(s, bs, true, &counter);
    if (st != KEEL_OK)
        return st;
    if (!model_listed(m, s->model))
        return keel_errorf(KEEL_ERR_VERIFY, "bundle is not for this device's model %s", s->model);
    if (m->security_version < counter)
        return keel_errorf(KEEL_ERR_VERIFY, "security version %u is below the device's anti-rollback "
                           "counter %u", m->security_version, counter);
    if (strlen(m->version) > KEEL_SLOT_VERSION_MAX)
        return keel_errorf(KEEL_ERR_VERIFY, "version string is too long");
    int a = bs->active;
    if ((a == 0 || a == 1) && bs->version[a][0] != '\0' && !s->allow_downgrade &&
        m->security_version <= bs->security_version[a] && keel_semver_cmp(m->version, bs->version[a]) < 0)
        return keel_errorf(KEEL_ERR_VERIFY, "version %s is older than the running %s and [update] "
                           "allow_downgrade is off", m->version, bs->version[a]);
    return KEEL_OK;
}

static keel_status_t slot_open_for_write(const char *path, uint64_t size, int *fdout)
{
    bool existed = keel_path_exists(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return keel_errorf(KEEL_ERR_IO, "open slot %s: %s", path, strerror(errno));
    /* A slot file made here must survive a power cut as a name too. */
    if (!existed) {
        char dir[KEEL_PATH_MAX];
        const char *slash = strrchr(path, '/');
        size_t n = slash != NULL ? (size_t)(slash - path) : 0;
        if (n > 0 && n < sizeof dir) {
            memcpy(dir, path, n);
            dir[n] = '\0';
            if (keel_dir_sync(dir) != KEEL_OK) {
                close(fd);
                return keel_errorf(KEEL_ERR_IO, "sync the directory of slot %s", path);
            }
        }
    }
    struct stat sb;
    keel_status_t st = KEEL_OK;
    if (fstat(fd, &sb) != 0) {
        st = keel_errorf(KEEL_ERR_IO, "stat slot %s: %s", path, strerror(errno));
    } else if (S_ISREG(sb.st_mode)) {
        if (ftruncate(fd, 0) != 0)
            st = keel_errorf(KEEL_ERR_IO, "truncate slot %s: %s", path, strerror(errno));
    } else if (S_ISBLK(sb.st_mode)) {
        off_t end = lseek(fd, 0, SEEK_END);
        if (end < 0 || lseek(fd, 0, SEEK_SET) != 0)
            st = keel_errorf(KEEL_ERR_IO, "seek slot %s: %s", path, strerror(errno));
        else if ((uint64_t)end < size)
            st = keel_errorf(KEEL_ERR_VERIFY, "slot %s holds %lld bytes, the image needs %llu", path,
                             (long long)end, (unsigned long long)size);
    } else {
        st = keel_errorf(KEEL_ERR_CONFIG, "slot %s is neither a regular file nor a block device", path);
    }
    if (st != KEEL_OK) {
        close(fd);
        return st;
    }
    *fdout = fd;
    return KEEL_OK;
}

/*
 * The slot writer: a thread that writes chunk i while the main thread reads
 * and verifies chunk i+1, so install costs about max(hash, write) rather than
 * their sum. Two chunk buffers; a chunk reaches the writer only after it was
 * verified, so a tampered chunk is never written.
 */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int fd;
    const uint8_t *data; /* the chunk being written, NULL when idle */
    size_t len;
    off_t off;
    bool stop, threaded;
    int err;             /* errno of the first failed write */
} slot_writer_t;

/* Writes one chunk at `off` (the file position); returns 0 or an errno. */
static int write_chunk(int fd, const uint8_t *d, size_t len, off_t off)
{
    if (slot_write(fd, d, len) != 0)
        return errno ? errno : EIO;
#ifdef SYNC_FILE_RANGE_WRITE
    /* Start write-back now so the final fsync has little left to do. */
    (void)sync_file_range(fd, off, (off_t)len, SYNC_FILE_RANGE_WRITE);
#else
    (void)off;
#endif
    return 0;
}

static void *writer_main(void *arg)
{
    slot_writer_t *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->data == NULL && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->data == NULL)
            break;
        const uint8_t *d = w->data;
        size_t len = w->len;
        off_t off = w->off;
        pthread_mutex_unlock(&w->mu);
        int err = write_chunk(w->fd, d, len, off);
        pthread_mutex_lock(&w->mu);
        if (err != 0 && w->err == 0)
            w->err = err;
        w->data = NULL;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Waits until the writer is idle; returns the errno of a failed write, or 0. */
static int writer_wait(slot_writer_t *w)
{
    if (!w->threaded)
        return w->err;
    pthread_mutex_lock(&w->mu);
    while (w->data != NULL)
        pthread_cond_wait(&w->cv, &w->mu);
    int err = w->err;
    pthread_mutex_unlock(&w->mu);
    return err;
}

static void writer_submit(slot_writer_t *w, const uint8_t *d, size_t len, off_t off)
{
    if (!w->threaded) {
        int err = write_chunk(w->fd, d, len, off);
        if (err != 0 && w->err == 0)
            w->err = err;
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->data = d;
    w->len = len;
    w->off = off;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Streams the verified chunks into the slot. */
static keel_status_t write_payload(keel_bundle_reader_t *r, const keel_manifest_t *m, const char *path,
                                   uint64_t *written)
{
    size_t cap = m->chunk_size;
    if (cap == 0 || cap > KEEL_BUNDLE_CHUNK_MAX)
        return keel_errorf(KEEL_ERR_FORMAT, "chunk size %u is out of range", m->chunk_size);
    uint8_t *bufs[2] = {malloc(cap), malloc(cap)};
    if (bufs[0] == NULL || bufs[1] == NULL) {
        free(bufs[0]);
        free(bufs[1]);
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    slot_writer_t w = {.fd = -1};
    pthread_t thread;
    keel_status_t st = slot_open_for_write(path, m->payload_size, &w.fd);
    if (st == KEEL_OK && pthread_mutex_init(&w.mu, NULL) == 0) {
        if (pthread_cond_init(&w.cv, NULL) == 0)
            w.threaded = pthread_create(&thread, NULL, writer_main, &w) == 0;
        if (!w.threaded)
            pthread_mutex_destroy(&w.mu); /* no thread to be had: write in line */
    }
    uint64_t off = 0;
    int cur = 0, err = 0;
    while (st == KEEL_OK) {
        size_t n = 0;
        /* Verifies chunk i+1 into one buffer while the writer writes chunk i from the other. */
        st = keel_bundle_next_chunk(r, bufs[cur], cap, &n);
        if (st != KEEL_OK || n == 0)
            break;
        if ((err = writer_wait(&w)) != 0)
            break;
        writer_submit(&w, bufs[cur], n, (off_t)off);
        off += n;
        cur ^= 1;
    }
    int last = writer_wait(&w);
    if (err == 0)
        err = last;
    if (w.threaded) {
        pthread_mutex_lock(&w.mu);
        w.stop = true;
        pthread_cond_broadcast(&w.cv);
        pthread_mutex_unlock(&w.mu);
        pthread_join(thread, NULL); /* NOLINT(clang-analyzer-core.CallAndMessage): set when w.threaded */
        pthread_cond_destroy(&w.cv);
        pthread_mutex_destroy(&w.mu);
    }
    if (st == KEEL_OK && err != 0)
        st = keel_errorf(KEEL_ERR_IO, "write slot %s: %s", path, strerror(err));
    if (st == KEEL_OK && off != m->payload_size)
        st = keel_errorf(KEEL_ERR_VERIFY, "payload ended after %llu of %llu bytes",
                         (unsigned long long)off, (unsigned long long)m->payload_size);
    if (st == KEEL_OK && slot_fsync(w.fd) != 0)
        st = keel_errorf(KEEL_ERR_IO, "fsync slot %s: %s", path, strerror(errno));
    if (w.fd >= 0 && close(w.fd) != 0 && st == KEEL_OK)
        st = keel_errorf(KEEL_ERR_IO, "close slot %s: %s", path, strerror(errno));
    free(bufs[0]);
    free(bufs[1]);
    *written = off;
    return st;
}

/*
 * A trust bundle replaces the release trust (roots and CRL) the device checks
 * updates against (5.3-10, 5.5-3). It has been verified against the current
 * trust. Its payload must load as a trust store (self-signed CA roots, CRLs)
 * and still verify every slot the device may boot, so a move to a new release
 * hierarchy goes through a store holding both roots; its security version
 * must be above the last trust update's, so an old store cannot be replayed.
 * The new file is written beside the old one, loaded as a device would load
 * it, then put in place with one rename.
 */
static keel_status_t install_trust(keel_slots_t *s, keel_bundle_reader_t *r, const keel_manifest_t *m,
                                   keel_install_result_t *res)
{
    uint32_t last = 0;
    keel_status_t st = counter_get(s, KEEL_TRUSTVER_SECRET, &last);
    if (st != KEEL_OK)
        return st;
    if (!model_listed(m, s->model))
        return keel_errorf(KEEL_ERR_VERIFY, "bundle is not for this device's model %s", s->model);
    if (m->security_version <= last)
        return keel_errorf(KEEL_ERR_VERIFY, "trust store update %u is not newer than the installed one (%u)",
                           m->security_version, last);
    if (m->payload_size > KEEL_TRUST_PAYLOAD_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "trust store payload over %u bytes", KEEL_TRUST_PAYLOAD_MAX);
    uint8_t *buf = malloc(m->chunk_size ? m->chunk_size : 1);
    keel_buf_t pem;
    keel_buf_init(&pem, KEEL_TRUST_PAYLOAD_MAX);
    size_t n = 0;
    if (buf == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    while (st == KEEL_OK && (st = keel_bundle_next_chunk(r, buf, m->chunk_size, &n)) == KEEL_OK && n > 0)
        st = keel_buf_append(&pem, buf, n);
    free(buf);
    char staged[KEEL_PATH_MAX];
    keel_trust_t *t = NULL;
    if (st == KEEL_OK)
        st = keel_snprintf(staged, sizeof staged, "%s.new", s->trust_path);
    if (st == KEEL_OK)
        st = keel_file_write_atomic(staged, pem.data, pem.len, 0644);
    if (st == KEEL_OK && (st = trust_load_file(staged, &t)) != KEEL_OK) {
        char why[KEEL_ERROR_MAX];
        snprintf(why, sizeof why, "%s", keel_error_message());
        st = keel_errorf(KEEL_ERR_VERIFY, "the new trust store does not load: %s", why);
    }
    /* The new store must accept this very bundle, or it could lock out every
     * later update (a CRL from the wrong issuer, say). */
    const uint8_t *sp = NULL;
    size_t splen = 0;
    keel_manifest_t self;
    if (st == KEEL_OK && (st = keel_bundle_signed_part(r, &sp, &splen)) == KEEL_OK) {
        if ((st = keel_bundle_verify_signed_part(sp, splen, t, &self)) == KEEL_OK) {
            keel_manifest_free(&self);
        } else {
            char why[KEEL_ERROR_MAX];
            snprintf(why, sizeof why, "%s", keel_error_message());
            st = keel_errorf(KEEL_ERR_VERIFY, "the new trust store would refuse the bundle that carries it: %s",
                             why);
        }
    }
    if (st == KEEL_OK)
        st = trust_keeps_slots(s, t);
    keel_trust_free(t);
    if (st == KEEL_OK)
        st = keel_rename_commit(staged, s->trust_path);
    else
        (void)unlink(staged);
    /* After the switch: a cut before this only allows replaying this same bundle. */
    if (st == KEEL_OK)
        st = counter_raise(s, KEEL_TRUSTVER_SECRET, m->security_version);
    if (st == KEEL_OK) {
        memset(res, 0, sizeof *res);
        res->slot = KEEL_SLOT_NONE;
        if (keel_strlcpy(res->version, m->version, sizeof res->version) != KEEL_OK)
            res->version[0] = '\0';
        res->security_version = m->security_version;
        res->bytes = pem.len;
    }
    keel_buf_free(&pem);
    return st;
}

keel_status_t keel_slots_install(keel_slots_t *s, keel_read_fn rd, void *ctx, keel_install_result_t *res)
{
    if (s == NULL || rd == NULL || res == NULL)
        return keel_errorf(KEEL_ERR_ARG, "install: missing argument");
    keel_bootstate_t bs;
    keel_status_t st = keel_slots_state(s, &bs);
    if (st == KEEL_ERR_FORMAT) {
        char why[KEEL_ERROR_MAX];
        snprintf(why, sizeof why, "%s", keel_error_message());
        return keel_errorf(KEEL_ERR_VERIFY, "%s; run keel boot to recover before installing", why);
    }
    if (st != KEEL_OK)
        return st;
    keel_bundle_reader_t *r = NULL;
    st = keel_bundle_open(rd, ctx, s->trust, &r);
    if (st != KEEL_OK)
        return st;
    const keel_manifest_t *m = keel_bundle_manifest(r);
    if (m->kind == KEEL_BUNDLE_TRUST) {
        st = install_trust(s, r, m, res);
        keel_bundle_close(r);
        return st;
    }
    int slot = KEEL_SLOT_NONE;
    st = install_policy(s, &bs, m);
    if (st == KEEL_OK)
        st = keel_slots_install_target(&bs, &slot);
    /* The slot stops being bootable before its first byte changes. */
    if (st == KEEL_OK) {
        keel_slots_install_begin(&bs, slot);
        st = keel_bootstate_store(&s->backend, &bs);
    }
    /* The old signed manifest goes before the image changes, so a lost boot
     * state never pairs it with a half-written image (a false tamper alert). */
    if (st == KEEL_OK)
        st = keel_file_shred(s->signed_path[slot]);
    uint64_t written = 0;
    if (st == KEEL_OK)
        st = write_payload(r, m, s->slot_path[slot], &written);
    const uint8_t *sp = NULL;
    size_t splen = 0;
    if (st == KEEL_OK)
        st = keel_bundle_signed_part(r, &sp, &splen);
    if (st == KEEL_OK)
        st = keel_file_write_atomic(s->signed_path[slot], sp, splen, 0600);
    if (st == KEEL_OK) {
        keel_slots_install_commit(&bs, slot, m->version, m->security_version, s->boot_tries);
        st = keel_bootstate_store(&s->backend, &bs);
    }
    if (st == KEEL_OK) {
        memset(res, 0, sizeof *res);
        res->slot = slot;
        if (keel_strlcpy(res->version, m->version, sizeof res->version) != KEEL_OK)
            res->version[0] = '\0';
        res->security_version = m->security_version;
        res->bytes = written;
        res->tries = bs.tries_left;
    }
    keel_bundle_close(r);
    return st;
}

keel_status_t keel_slots_check(keel_slots_t *s, keel_read_fn rd, void *ctx, keel_manifest_t *out)
{
    if (s == NULL || rd == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "check: missing argument");
    keel_bootstate_t bs;
    keel_status_t st = keel_slots_state(s, &bs);
    if (st != KEEL_OK)
        return st;
    keel_bundle_reader_t *r = NULL;
    if ((st = keel_bundle_open(rd, ctx, s->trust, &r)) != KEEL_OK)
        return st;
    const keel_manifest_t *m = keel_bundle_manifest(r);
    if (m->kind == KEEL_BUNDLE_TRUST) {
        if (!model_listed(m, s->model))
            st = keel_errorf(KEEL_ERR_VERIFY, "bundle is not for this device's model %s", s->model);
    } else {
        st = install_policy(s, &bs, m);
    }
    if (st == KEEL_OK) {
        *out = *m;
        out->chunk_sha256 = NULL; /* the digests stay with the reader; install reads them again */
        out->n_chunks = 0;
    }
    keel_bundle_close(r);
    return st;
}

/* ---- boot -------------------------------------------------------------------- */

/* A tamper detail: shown to people, capped, and cut short rather than lost. */
static void detailf(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void detailf(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vsnprintf(out, cap, fmt, ap) < 0 && cap > 0)
        out[0] = '\0';
    va_end(ap);
}

static keel_status_t sha256_stream(int fd, EVP_MD_CTX *md, uint8_t *buf, uint64_t len)
{
    while (len > 0) {
        size_t want = len < VERIFY_BUF ? (size_t)len : VERIFY_BUF;
        ssize_t n = read(fd, buf, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return keel_errorf(KEEL_ERR_IO, "read: %s", strerror(errno));
        if (n == 0)
            return keel_errorf(KEEL_ERR_VERIFY, "image is shorter than its manifest");
        if (EVP_DigestUpdate(md, buf, (size_t)n) != 1)
            return keel_crypto_error(KEEL_ERR_CRYPTO, "sha256");
        len -= (uint64_t)n;
    }
    return KEEL_OK;
}

/*
 * Secure boot (5.7-1): the image holds exactly the signed payload, chunk by
 * chunk against the manifest's chunk digests: the same check install makes,
 * in one pass. A regular-file slot must be exactly the payload's size.
 */
static keel_status_t verify_image(const char *path, const keel_manifest_t *m, char *detail, size_t cap)
{
    keel_status_t st = KEEL_OK;
    uint8_t *buf = malloc(VERIFY_BUF);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (buf == NULL || md == NULL) {
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    } else if (fd < 0) {
        st = keel_errorf(KEEL_ERR_VERIFY, "image %s cannot be opened: %s", path, strerror(errno));
    } else if (fstat(fd, &sb) != 0) {
        st = keel_errorf(KEEL_ERR_IO, "stat %s: %s", path, strerror(errno));
    } else if (S_ISREG(sb.st_mode) && (uint64_t)sb.st_size != m->payload_size) {
        st = keel_errorf(KEEL_ERR_VERIFY, "image is %lld bytes, its manifest says %llu", (long long)sb.st_size,
                         (unsigned long long)m->payload_size);
    } else {
#ifdef POSIX_FADV_SEQUENTIAL
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
        uint64_t left = m->payload_size;
        for (uint32_t i = 0; st == KEEL_OK && i < m->n_chunks; i++) {
            uint64_t n = left < m->chunk_size ? left : m->chunk_size;
            uint8_t d[KEEL_SHA256_LEN];
            if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
                st = keel_crypto_error(KEEL_ERR_CRYPTO, "sha256");
            if (st == KEEL_OK)
                st = sha256_stream(fd, md, buf, n);
            if (st == KEEL_OK && EVP_DigestFinal_ex(md, d, NULL) != 1)
                st = keel_crypto_error(KEEL_ERR_CRYPTO, "sha256");
            /* Digests are public: a plain comparison is enough. */
            if (st == KEEL_OK && memcmp(d, m->chunk_sha256[i], sizeof d) != 0)
                st = keel_errorf(KEEL_ERR_VERIFY, "image digest mismatch in chunk %u", i);
            left -= n;
        }
    }
    if (st != KEEL_OK)
        detailf(detail, cap, "%s", keel_error_message());
    if (fd >= 0)
        close(fd);
    EVP_MD_CTX_free(md);
    free(buf);
    return st;
}

/* Verifies one slot; on failure `detail` says why (no secrets involved). */
static keel_status_t verify_slot(keel_slots_t *s, const keel_bootstate_t *bs, int slot, uint32_t counter,
                                 bool recovering, keel_manifest_t *m, char *detail, size_t cap)
{
    char why[KEEL_TAMPER_DETAIL_MAX + 1] = "";
    keel_status_t st = slot_manifest_under(s, slot, s->trust, KEEL_VERIFY_NO_TIME, m);
    if (st != KEEL_OK) {
        detailf(why, sizeof why, "signed manifest: %s", keel_error_message());
    } else if (!model_listed(m, s->model)) {
        st = keel_errorf(KEEL_ERR_VERIFY, "not for model %s", s->model);
        detailf(why, sizeof why, "image is not for model %s", s->model);
    } else if (m->security_version < counter) {
        st = keel_errorf(KEEL_ERR_VERIFY, "below the counter");
        detailf(why, sizeof why, "security version %u is below the anti-rollback counter %u",
                            m->security_version, counter);
    } else if (!recovering && (strcmp(m->version, bs->version[slot]) != 0 ||
                               m->security_version != bs->security_version[slot])) {
        st = keel_errorf(KEEL_ERR_VERIFY, "manifest does not match the boot state");
        detailf(why, sizeof why, "signed manifest (%.64s) is not the installed one (%s)",
                            m->version, bs->version[slot]);
    } else {
        st = verify_image(s->slot_path[slot], m, why, sizeof why);
    }
    if (st != KEEL_OK) {
        detailf(detail, cap, "slot %c refused at boot: %s", keel_slot_name(slot), why);
        keel_manifest_free(m);
    }
    return st;
}

/*
 * Both boot-state copies lost: rebuild from the signed manifests kept beside
 * the slots; the image checks at boot still decide what runs. A slot above
 * the anti-rollback counter was never confirmed: it gets a trial boot as the
 * pending slot (and rolls back if it never confirms), not the good mark.
 */
static void recover_state(keel_slots_t *s, keel_bootstate_t *bs)
{
    uint32_t counter = 0;
    if (keel_slots_counter(s, &counter) != KEEL_OK)
        counter = 0;
    keel_bootstate_init(bs);
    bool found[KEEL_SLOTS_N] = {false, false};
    for (int i = 0; i < KEEL_SLOTS_N; i++) {
        keel_manifest_t m;
        memset(&m, 0, sizeof m);
        if (slot_manifest_under(s, i, s->trust, KEEL_VERIFY_NO_TIME, &m) != KEEL_OK)
            continue;
        found[i] = keel_strlcpy(bs->version[i], m.version, sizeof bs->version[i]) == KEEL_OK;
        bs->security_version[i] = m.security_version;
        keel_manifest_free(&m);
    }
    keel_error_clear();
    int newest = KEEL_SLOT_NONE;
    for (int i = 0; i < KEEL_SLOTS_N; i++) {
        if (!found[i])
            continue;
        if (newest == KEEL_SLOT_NONE)
            newest = i;
        else {
            int cmp = bs->security_version[i] != bs->security_version[newest]
                          ? (bs->security_version[i] > bs->security_version[newest] ? 1 : -1)
                          : keel_semver_cmp(bs->version[i], bs->version[newest]);
            if (cmp > 0)
                newest = i;
        }
    }
    if (newest == KEEL_SLOT_NONE)
        return;
    int other = 1 - newest;
    if (bs->security_version[newest] > counter) {
        bs->pending = newest;
        bs->tries_left = s->boot_tries;
        if (found[other]) {
            bs->good[other] = true;
            bs->active = other;
        }
    } else {
        bs->good[newest] = true;
        bs->active = newest;
        bs->good[other] = found[other];
    }
}

keel_status_t keel_slots_boot(keel_slots_t *s, keel_boot_result_t *res)
{
    if (s == NULL || res == NULL)
        return keel_errorf(KEEL_ERR_ARG, "boot: missing argument");
    memset(res, 0, sizeof *res);
    res->slot = KEEL_SLOT_NONE;
    keel_bootstate_t bs;
    bool recovering = false;
    keel_status_t st = keel_slots_state(s, &bs);
    if (st == KEEL_ERR_FORMAT) {
        keel_log(KEEL_LOG_WARN, "%s; rebuilding it from the slots' signed manifests", keel_error_message());
        recover_state(s, &bs);
        recovering = true;
        st = KEEL_OK;
    }
    uint32_t counter = 0;
    if (st == KEEL_OK)
        st = effective_counter(s, &bs, false, &counter);
    if (st != KEEL_OK)
        return st;
    int order[KEEL_SLOTS_N], n = 0;
    res->rolled_back = keel_slots_boot_plan(&bs, order, &n);
    /* The try is spent before the slot runs: a hang or cut still counts. A
     * state that cannot be written (worn or full flash) must not stop the
     * boot of a slot that verifies. */
    if (keel_bootstate_store(&s->backend, &bs) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "boot state not written: %s", keel_error_message());
        keel_error_clear();
    }
    int booted = KEEL_SLOT_NONE;
    keel_manifest_t m;
    for (int i = 0; i < n && booted == KEEL_SLOT_NONE; i++) {
        char detail[KEEL_TAMPER_DETAIL_MAX + 1] = "";
        memset(&m, 0, sizeof m);
        keel_status_t vst = verify_slot(s, &bs, order[i], counter, recovering, &m, detail, sizeof detail);
        if (vst == KEEL_OK) {
            booted = order[i];
            res->security_version = m.security_version;
            if (keel_strlcpy(res->version, m.version, sizeof res->version) != KEEL_OK)
                res->version[0] = '\0';
            keel_manifest_free(&m);
        } else {
            keel_log(KEEL_LOG_WARN, "%s", detail);
            /* Only what does not verify is tampering; an I/O error skips the
             * slot this time and leaves its marks alone. */
            if (vst == KEEL_ERR_VERIFY || vst == KEEL_ERR_FORMAT || vst == KEEL_ERR_NOT_FOUND)
                keel_slots_boot_refuse(&bs, order[i], detail, (int64_t)time(NULL));
            res->refused++;
        }
    }
    res->pending = booted != KEEL_SLOT_NONE && booted == bs.pending;
    keel_slots_boot_done(&bs, booted);
    res->tries_left = bs.tries_left;
    res->slot = booted;
    if (keel_bootstate_store(&s->backend, &bs) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "boot state not written: %s", keel_error_message());
        keel_error_clear();
    }
    if (booted == KEEL_SLOT_NONE)
        return keel_errorf(KEEL_ERR_VERIFY, "no bootable slot");
    return KEEL_OK;
}

keel_status_t keel_slots_confirm_booted(keel_slots_t *s, int *slot, uint32_t *counter)
{
    keel_bootstate_t bs;
    uint32_t c = 0;
    keel_status_t st = keel_slots_state(s, &bs);
    if (st == KEEL_OK)
        st = effective_counter(s, &bs, true, &c);
    if (st == KEEL_OK)
        st = keel_slots_confirm(&bs, &c);
    /* State first: a cut before the counter moves is healed by the next
     * confirm, while a counter ahead of the state could strand the device. */
    if (st == KEEL_OK)
        st = keel_bootstate_store(&s->backend, &bs);
    if (st == KEEL_OK)
        st = counter_raise(s, KEEL_SECVER_SECRET, c);
    if (st == KEEL_OK) {
        *slot = bs.booted;
        *counter = c;
    }
    return st;
}

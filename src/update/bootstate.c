/*
 * The boot state: its record codec, the two-copy file backend, and the slot
 * state machine (pure functions over keel_bootstate_t). No bundle code here,
 * so a bootloader-side port needs only this file and SHA-256.
 */
#include "keel/crypto.h"
#include "keel/slots.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Record layout (little-endian), KEEL_BOOTSTATE_RECORD_LEN bytes. */
#define REC_MAGIC "KEELBST1"
#define REC_FORMAT 1u
#define OFF_FORMAT 8
#define OFF_RESERVED 12
#define OFF_SEQ 16
#define OFF_ACTIVE 24
#define OFF_PENDING 25
#define OFF_BOOTED 26
#define OFF_FLAGS 27
#define OFF_TRIES 28
#define OFF_SECVER 32 /* two u32 */
#define OFF_TAMPER_TIME 40
#define OFF_VERSION 48 /* two fields of KEEL_SLOT_VERSION_MAX + 1 */
#define OFF_DETAIL (OFF_VERSION + 2 * (KEEL_SLOT_VERSION_MAX + 1))
#define OFF_PAD (OFF_DETAIL + KEEL_TAMPER_DETAIL_MAX + 1)
#define OFF_DIGEST (KEEL_BOOTSTATE_RECORD_LEN - KEEL_SHA256_LEN)
#define FLAG_GOOD_A 0x01u
#define FLAG_GOOD_B 0x02u
#define FLAG_TAMPER 0x04u
#define FLAGS_KNOWN (FLAG_GOOD_A | FLAG_GOOD_B | FLAG_TAMPER)
/* Two counted writes per record, so a cut can tear it as flash would. */
#define REC_HALF (KEEL_BOOTSTATE_RECORD_LEN / 2)

_Static_assert(OFF_PAD <= OFF_DIGEST, "boot-state record overflows");

void keel_bootstate_init(keel_bootstate_t *st)
{
    memset(st, 0, sizeof *st);
    st->active = st->pending = st->booted = KEEL_SLOT_NONE;
}

char keel_slot_name(int slot)
{
    return slot == 0 ? 'A' : slot == 1 ? 'B' : '-';
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint8_t slot_byte(int slot)
{
    return slot == 0 || slot == 1 ? (uint8_t)slot : 0xffu;
}

static int slot_from_byte(uint8_t b, int *slot)
{
    if (b == 0xffu)
        *slot = KEEL_SLOT_NONE;
    else if (b < KEEL_SLOTS_N)
        *slot = b;
    else
        return 0;
    return 1;
}

/* A NUL-terminated string padded with zeros to exactly cap bytes. */
static void put_str(uint8_t *p, const char *s, size_t cap)
{
    size_t n = strnlen(s, cap - 1);
    memset(p, 0, cap);
    memcpy(p, s, n);
}

static int get_str(const uint8_t *p, size_t cap, char *out)
{
    size_t n = strnlen((const char *)p, cap);
    if (n == cap)
        return 0;
    for (size_t i = n; i < cap; i++)
        if (p[i] != 0)
            return 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7e)
            return 0;
    memcpy(out, p, n + 1);
    return 1;
}

void keel_bootstate_encode(const keel_bootstate_t *st, uint8_t rec[KEEL_BOOTSTATE_RECORD_LEN])
{
    memset(rec, 0, KEEL_BOOTSTATE_RECORD_LEN);
    memcpy(rec, REC_MAGIC, 8); /* NOLINT(bugprone-not-null-terminated-result): a binary record */
    put_u32(rec + OFF_FORMAT, REC_FORMAT);
    put_u64(rec + OFF_SEQ, st->seq);
    rec[OFF_ACTIVE] = slot_byte(st->active);
    rec[OFF_PENDING] = slot_byte(st->pending);
    rec[OFF_BOOTED] = slot_byte(st->booted);
    rec[OFF_FLAGS] = (uint8_t)((st->good[0] ? FLAG_GOOD_A : 0) | (st->good[1] ? FLAG_GOOD_B : 0) |
                               (st->tamper ? FLAG_TAMPER : 0));
    put_u32(rec + OFF_TRIES, st->tries_left);
    for (int i = 0; i < KEEL_SLOTS_N; i++) {
        put_u32(rec + OFF_SECVER + 4 * i, st->security_version[i]);
        put_str(rec + OFF_VERSION + i * (KEEL_SLOT_VERSION_MAX + 1), st->version[i],
                KEEL_SLOT_VERSION_MAX + 1);
    }
    put_u64(rec + OFF_TAMPER_TIME, (uint64_t)st->tamper_time);
    put_str(rec + OFF_DETAIL, st->tamper_detail, KEEL_TAMPER_DETAIL_MAX + 1);
    keel_sha256(rec, OFF_DIGEST, rec + OFF_DIGEST);
}

keel_status_t keel_bootstate_decode(const uint8_t *rec, size_t len, keel_bootstate_t *out)
{
    keel_bootstate_t st;
    keel_bootstate_init(&st);
    uint8_t digest[KEEL_SHA256_LEN];
    if (len != KEEL_BOOTSTATE_RECORD_LEN)
        return keel_errorf(KEEL_ERR_FORMAT, "boot-state record is %zu bytes, not %d", len,
                           KEEL_BOOTSTATE_RECORD_LEN);
    if (memcmp(rec, REC_MAGIC, 8) != 0)
        return keel_errorf(KEEL_ERR_FORMAT, "boot-state record: bad magic");
    keel_sha256(rec, OFF_DIGEST, digest);
    if (!keel_ct_equal(digest, rec + OFF_DIGEST, KEEL_SHA256_LEN))
        return keel_errorf(KEEL_ERR_FORMAT, "boot-state record: checksum mismatch (torn or corrupt)");
    if (get_u32(rec + OFF_FORMAT) != REC_FORMAT || get_u32(rec + OFF_RESERVED) != 0)
        return keel_errorf(KEEL_ERR_FORMAT, "boot-state record: unknown format");
    st.seq = get_u64(rec + OFF_SEQ);
    uint8_t flags = rec[OFF_FLAGS];
    st.tries_left = get_u32(rec + OFF_TRIES);
    int ok = slot_from_byte(rec[OFF_ACTIVE], &st.active) && slot_from_byte(rec[OFF_PENDING], &st.pending) &&
             slot_from_byte(rec[OFF_BOOTED], &st.booted) && (flags & ~FLAGS_KNOWN) == 0 &&
             st.tries_left <= KEEL_BOOT_TRIES_MAX &&
             (st.pending == KEEL_SLOT_NONE || st.pending != st.active) &&
             get_str(rec + OFF_DETAIL, KEEL_TAMPER_DETAIL_MAX + 1, st.tamper_detail);
    for (int i = 0; ok && i < KEEL_SLOTS_N; i++) {
        st.security_version[i] = get_u32(rec + OFF_SECVER + 4 * i);
        ok = get_str(rec + OFF_VERSION + i * (KEEL_SLOT_VERSION_MAX + 1), KEEL_SLOT_VERSION_MAX + 1,
                     st.version[i]);
    }
    for (size_t i = OFF_PAD; ok && i < OFF_DIGEST; i++)
        ok = rec[i] == 0;
    if (!ok)
        return keel_errorf(KEEL_ERR_FORMAT, "boot-state record: a field is out of range");
    st.good[0] = (flags & FLAG_GOOD_A) != 0;
    st.good[1] = (flags & FLAG_GOOD_B) != 0;
    st.tamper = (flags & FLAG_TAMPER) != 0;
    st.tamper_time = (int64_t)get_u64(rec + OFF_TAMPER_TIME);
    *out = st;
    return KEEL_OK;
}

keel_status_t keel_bootstate_load(const keel_bootstate_backend_t *b, keel_bootstate_t *out)
{
    if (b == NULL || b->load == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "boot state: missing argument");
    return b->load(b->ctx, out);
}

keel_status_t keel_bootstate_store(const keel_bootstate_backend_t *b, keel_bootstate_t *st)
{
    if (b == NULL || b->store == NULL || st == NULL)
        return keel_errorf(KEEL_ERR_ARG, "boot state: missing argument");
    return b->store(b->ctx, st);
}

/* ---- file backend -------------------------------------------------------- */

/* Reads one copy: 1 valid, 0 absent, -1 present but not valid. */
static int file_read_copy(const char *path, keel_bootstate_t *out, keel_status_t *io)
{
    uint8_t rec[KEEL_BOOTSTATE_RECORD_LEN + 1];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno != ENOENT)
            *io = keel_errorf(KEEL_ERR_IO, "open %s: %s", path, strerror(errno));
        return errno == ENOENT ? 0 : -1;
    }
    size_t got = 0;
    while (got < sizeof rec) {
        ssize_t n = read(fd, rec + got, sizeof rec - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    return keel_bootstate_decode(rec, got, out) == KEEL_OK ? 1 : -1;
}

/* Which copy holds the newest valid state: 0, 1, or -1 with *present set. */
static int file_newest(keel_bootstate_file_t *f, keel_bootstate_t *st, int *present, keel_status_t *io)
{
    keel_bootstate_t c[2];
    int v[2];
    *present = 0;
    for (int i = 0; i < 2; i++) {
        v[i] = file_read_copy(f->path[i], &c[i], io);
        *present |= v[i] != 0;
    }
    int best = -1;
    for (int i = 0; i < 2; i++)
        if (v[i] == 1 && (best < 0 || c[i].seq > c[best].seq))
            best = i;
    if (best >= 0)
        *st = c[best];
    return best;
}

static keel_status_t file_load(void *ctx, keel_bootstate_t *out)
{
    keel_bootstate_file_t *f = ctx;
    keel_bootstate_t st;
    int present = 0;
    keel_status_t io = KEEL_OK;
    keel_error_clear();
    int best = file_newest(f, &st, &present, &io);
    if (best >= 0) {
        *out = st;
        return KEEL_OK;
    }
    keel_bootstate_init(out);
    if (io != KEEL_OK)
        return io;
    if (!present)
        return keel_errorf(KEEL_ERR_NOT_FOUND, "no boot state yet (fresh device)");
    return keel_errorf(KEEL_ERR_FORMAT, "both boot-state copies (%s, %s) are corrupt: starting from a "
                       "fresh state", f->path[0], f->path[1]);
}

static int counted_pwrite(int fd, const uint8_t *p, size_t len, off_t off)
{
    while (len > 0) {
        if (keel_fault_hit("write")) {
            errno = EIO;
            return -1;
        }
        ssize_t n = pwrite(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        off += n;
        len -= (size_t)n;
    }
    return 0;
}

static keel_status_t file_store(void *ctx, keel_bootstate_t *st)
{
    keel_bootstate_file_t *f = ctx;
    keel_bootstate_t cur;
    int present = 0;
    keel_status_t io = KEEL_OK;
    int best = file_newest(f, &cur, &present, &io);
    if (best < 0 && io != KEEL_OK)
        return io;
    int target = best == 0 ? 1 : 0;
    st->seq = best >= 0 ? cur.seq + 1 : 1;
    uint8_t rec[KEEL_BOOTSTATE_RECORD_LEN];
    keel_bootstate_encode(st, rec);

    const char *path = f->path[target];
    int created = 0;
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) {
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        created = 1;
    }
    if (fd < 0)
        return keel_errorf(KEEL_ERR_IO, "open %s: %s", path, strerror(errno));
    /* In place, like a raw flash environment: the other copy stays intact. */
    int rc = counted_pwrite(fd, rec, REC_HALF, 0);
    if (rc == 0)
        rc = counted_pwrite(fd, rec + REC_HALF, sizeof rec - REC_HALF, REC_HALF);
    if (rc == 0 && ftruncate(fd, (off_t)sizeof rec) != 0)
        rc = -1;
    if (rc == 0 && keel_fault_hit("fsync"))
        rc = (errno = EIO, -1);
    if (rc == 0)
        rc = fsync(fd);
    int err = errno;
    if (close(fd) != 0 && rc == 0) {
        rc = -1;
        err = errno;
    }
    if (rc != 0)
        return keel_errorf(KEEL_ERR_IO, "write boot state %s: %s", path, strerror(err));
    if (created) {
        char dir[KEEL_PATH_MAX];
        const char *slash = strrchr(path, '/');
        size_t n = slash == NULL ? 0 : (size_t)(slash - path);
        if (n == 0 || n >= sizeof dir)
            return keel_dir_sync(slash == path ? "/" : ".");
        memcpy(dir, path, n);
        dir[n] = '\0';
        return keel_dir_sync(dir);
    }
    return KEEL_OK;
}

keel_status_t keel_bootstate_file_backend(keel_bootstate_file_t *f, const char *dir,
                                          keel_bootstate_backend_t *out)
{
    if (f == NULL || dir == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "boot state: missing argument");
    if (keel_path_join(f->path[0], sizeof f->path[0], dir, "bootstate.0") != KEEL_OK ||
        keel_path_join(f->path[1], sizeof f->path[1], dir, "bootstate.1") != KEEL_OK)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "path too long: %s", dir);
    *out = (keel_bootstate_backend_t){.name = "file", .load = file_load, .store = file_store, .ctx = f};
    return KEEL_OK;
}

/* ---- the slot state machine ----------------------------------------------- */

static int slot_ok(int slot)
{
    return slot >= 0 && slot < KEEL_SLOTS_N;
}

keel_status_t keel_slots_install_target(const keel_bootstate_t *st, int *slot)
{
    int t = slot_ok(st->active) ? 1 - st->active : 0;
    if (st->booted == t)
        return keel_errorf(KEEL_ERR_VERIFY, "slot %c is running but not confirmed: confirm it "
                           "(keel update confirm) or let it roll back before installing",
                           keel_slot_name(t));
    *slot = t;
    return KEEL_OK;
}

void keel_slots_install_begin(keel_bootstate_t *st, int slot)
{
    if (!slot_ok(slot))
        return;
    st->good[slot] = false;
    st->version[slot][0] = '\0';
    st->security_version[slot] = 0;
    if (st->pending == slot) {
        st->pending = KEEL_SLOT_NONE;
        st->tries_left = 0;
    }
}

void keel_slots_install_commit(keel_bootstate_t *st, int slot, const char *version, uint32_t secver,
                               uint32_t tries)
{
    if (!slot_ok(slot))
        return;
    st->good[slot] = false;
    put_str((uint8_t *)st->version[slot], version, sizeof st->version[slot]);
    st->security_version[slot] = secver;
    st->pending = slot;
    st->tries_left = tries > KEEL_BOOT_TRIES_MAX ? KEEL_BOOT_TRIES_MAX : tries;
}

static void add_unique(int order[KEEL_SLOTS_N], int *n, int slot)
{
    for (int i = 0; i < *n; i++)
        if (order[i] == slot)
            return;
    if (*n < KEEL_SLOTS_N)
        order[(*n)++] = slot;
}

bool keel_slots_boot_plan(keel_bootstate_t *st, int order[KEEL_SLOTS_N], int *n)
{
    bool rolled_back = false;
    *n = 0;
    /* Nothing is booted until this boot says so: a cut before it finishes
     * must not leave an earlier boot's slot for confirm to promote. */
    st->booted = KEEL_SLOT_NONE;
    if (slot_ok(st->pending)) {
        if (st->tries_left > 0) {
            st->tries_left--;
            add_unique(order, n, st->pending);
        } else {
            st->good[st->pending] = false;
            st->pending = KEEL_SLOT_NONE;
            rolled_back = true;
        }
    }
    if (slot_ok(st->active) && st->good[st->active])
        add_unique(order, n, st->active);
    for (int s = 0; s < KEEL_SLOTS_N; s++)
        if (st->good[s])
            add_unique(order, n, s);
    return rolled_back;
}

void keel_slots_boot_refuse(keel_bootstate_t *st, int slot, const char *detail, int64_t now)
{
    if (!slot_ok(slot))
        return;
    st->good[slot] = false;
    if (st->pending == slot) {
        st->pending = KEEL_SLOT_NONE;
        st->tries_left = 0;
    }
    st->tamper = true;
    put_str((uint8_t *)st->tamper_detail, detail != NULL ? detail : "", sizeof st->tamper_detail);
    /* Only printable ASCII is stored (the codec refuses anything else). */
    for (char *p = st->tamper_detail; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
    st->tamper_time = now;
}

void keel_slots_boot_done(keel_bootstate_t *st, int slot)
{
    st->booted = slot_ok(slot) ? slot : KEEL_SLOT_NONE;
    if (slot_ok(slot) && slot != st->pending)
        st->active = slot;
}

keel_status_t keel_slots_confirm(keel_bootstate_t *st, uint32_t *counter)
{
    int b = st->booted;
    if (!slot_ok(b))
        return keel_errorf(KEEL_ERR_NOT_FOUND, "no slot was booted: run keel boot first");
    if (b != st->pending && b != st->active)
        return keel_errorf(KEEL_ERR_NOT_FOUND, "slot %c is neither pending nor active", keel_slot_name(b));
    st->good[b] = true;
    if (b == st->pending) {
        st->active = b;
        st->pending = KEEL_SLOT_NONE;
        st->tries_left = 0;
    }
    if (st->security_version[b] > *counter)
        *counter = st->security_version[b];
    for (int s = 0; s < KEEL_SLOTS_N; s++)
        if (st->good[s] && st->security_version[s] < *counter)
            st->good[s] = false;
    return KEEL_OK;
}

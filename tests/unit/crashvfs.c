/*
 * crashvfs: see crashvfs.h and docs/internals/powercut.md. The shape of the
 * model follows SQLite's own crash-test VFS (src/test6.c): an unsynced write
 * reaches the disk, or does not, or leaves its sectors damaged; a sync makes
 * one file's writes durable. Unlike test6.c the writes go to the real files
 * at once (reads need no overlay) and the crash rolls them back.
 */
#include "crashvfs.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* The file types whose contents matter after a crash. Temporary files and
 * statement journals die with the process anyway. */
#define TYPE_MASK 0x0FFF00
#define TRACKED(t) ((t) == SQLITE_OPEN_MAIN_DB || (t) == SQLITE_OPEN_WAL || (t) == SQLITE_OPEN_MAIN_JOURNAL)
/* The types the unix VFS fsyncs the directory of at their first xSync. */
#define DIRSYNCED(t) ((t) == SQLITE_OPEN_WAL || (t) == SQLITE_OPEN_MAIN_JOURNAL || (t) == SQLITE_OPEN_SUPER_JOURNAL)

/* One write or truncate since the file's last sync. */
typedef struct rec {
    struct rec *next;
    struct rec *prev;
    bool trunc;
    sqlite3_int64 off;      /* write offset; for a truncate, the new size */
    size_t len;             /* bytes written */
    sqlite3_int64 old_size; /* file size before */
    uint8_t *old;           /* bytes overwritten (or cut off), within old_size */
    size_t old_len;
    uint8_t *data;          /* bytes written */
} rec_t;

/* One file by path: a sync or a crash concerns the file, not a handle. */
typedef struct node {
    struct node *next;
    char *path;
    bool new_entry; /* created here, its directory not synced since */
    rec_t *head;
    rec_t *tail;
} node_t;

typedef struct {
    sqlite3_file base;
    sqlite3_file *real; /* the unix VFS's file, right after this struct */
    node_t *node;       /* NULL: not tracked */
    bool dirsync;       /* the unix VFS will fsync the directory at the next xSync */
} cv_file_t;

static sqlite3_vfs *real_vfs;
static sqlite3_vfs cv_vfs;
static node_t *nodes;
static bool armed;
static uint64_t crash_at;
static uint64_t ops;
static crashvfs_mode_t crash_mode;
static uint64_t rng;

static void die(const char *what)
{
    fprintf(stderr, "crashvfs: %s: %s\n", what, strerror(errno));
    abort();
}

/* splitmix64: reproducible from the seed, independent of rand(). */
static uint64_t rnd(void)
{
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n > 0 ? n : 1);
    if (p == NULL)
        die("out of memory");
    return p;
}

static void recs_free(node_t *n)
{
    for (rec_t *r = n->head, *next; r != NULL; r = next) {
        next = r->next;
        free(r->old);
        free(r->data);
        free(r);
    }
    n->head = n->tail = NULL;
}

static node_t *node_get(const char *path)
{
    for (node_t *n = nodes; n != NULL; n = n->next)
        if (strcmp(n->path, path) == 0)
            return n;
    node_t *n = xmalloc(sizeof *n);
    memset(n, 0, sizeof *n);
    n->path = strdup(path);
    if (n->path == NULL)
        die("out of memory");
    n->next = nodes;
    nodes = n;
    return n;
}

static bool same_dir(const char *a, const char *b)
{
    const char *sa = strrchr(a, '/'), *sb = strrchr(b, '/');
    size_t la = sa != NULL ? (size_t)(sa - a) : 0, lb = sb != NULL ? (size_t)(sb - b) : 0;
    return la == lb && memcmp(a, b, la) == 0;
}

/* A directory fsync makes every entry in it durable. */
static void dir_synced(const char *path)
{
    for (node_t *n = nodes; n != NULL; n = n->next)
        if (same_dir(n->path, path))
            n->new_entry = false;
}

static void pwrite_all(int fd, const void *buf, size_t len, sqlite3_int64 off)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t w = pwrite(fd, p, len, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("pwrite");
        p += w;
        len -= (size_t)w;
        off += w;
    }
}

/* Puts the file back as it was at its last sync, then replays what the mode
 * lets reach the disk, in the order it was written. */
static void node_crash(node_t *n)
{
    if (n->new_entry) {
        if (unlink(n->path) != 0 && errno != ENOENT)
            die("unlink");
        return;
    }
    if (n->head == NULL)
        return;
    int fd = open(n->path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return;
        die("open");
    }
    for (rec_t *r = n->tail; r != NULL; r = r->prev) {
        if (ftruncate(fd, (off_t)r->old_size) != 0)
            die("ftruncate");
        if (r->old_len > 0)
            pwrite_all(fd, r->old, r->old_len, r->off);
    }
    if (crash_mode != CRASHVFS_LOSE_ALL) {
        uint8_t garbage[CRASHVFS_SECTOR];
        for (rec_t *r = n->head; r != NULL; r = r->next) {
            unsigned fate = (unsigned)(rnd() % 3); /* 0 reached the disk, 1 did not, 2 torn */
            if (r->trunc) {
                if (fate == 0 && ftruncate(fd, (off_t)r->off) != 0)
                    die("ftruncate");
                continue;
            }
            for (sqlite3_int64 a = r->off, end = r->off + (sqlite3_int64)r->len; a < end;) {
                sqlite3_int64 b = (a / CRASHVFS_SECTOR + 1) * CRASHVFS_SECTOR;
                if (b > end)
                    b = end;
                uint64_t roll = rnd();
                if (fate == 0 || (fate == 2 && (roll & 1))) {
                    pwrite_all(fd, r->data + (a - r->off), (size_t)(b - a), a);
                } else if (fate == 2 && crash_mode == CRASHVFS_GARBAGE && (roll & 6) == 6) {
                    for (size_t i = 0; i < (size_t)(b - a); i++)
                        garbage[i] = (uint8_t)rnd();
                    pwrite_all(fd, garbage, (size_t)(b - a), a);
                }
                a = b;
            }
        }
    }
    if (close(fd) != 0)
        die("close");
}

_Noreturn void crashvfs_crash(void)
{
    for (node_t *n = nodes; n != NULL; n = n->next)
        node_crash(n);
    _exit(CRASHVFS_EXIT_CODE);
}

static void count_op(void)
{
    ops++;
    if (armed && crash_at != 0 && ops == crash_at)
        crashvfs_crash();
}

static rec_t *rec_new(cv_file_t *f, bool trunc, sqlite3_int64 off, size_t len)
{
    rec_t *r = xmalloc(sizeof *r);
    memset(r, 0, sizeof *r);
    r->trunc = trunc;
    r->off = off;
    r->len = len;
    if (f->real->pMethods->xFileSize(f->real, &r->old_size) != SQLITE_OK)
        die("file size");
    sqlite3_int64 end = trunc ? r->old_size : off + (sqlite3_int64)len;
    if (end > r->old_size)
        end = r->old_size;
    if (end > off) {
        r->old_len = (size_t)(end - off);
        r->old = xmalloc(r->old_len);
        int rc = f->real->pMethods->xRead(f->real, r->old, (int)r->old_len, off);
        if (rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ)
            die("read old bytes");
    }
    node_t *n = f->node;
    r->prev = n->tail;
    if (n->tail != NULL)
        n->tail->next = r;
    else
        n->head = r;
    n->tail = r;
    return r;
}

/* ---- io methods: pass through, recording on tracked files ---- */

static int cv_close(sqlite3_file *pf)
{
    cv_file_t *f = (cv_file_t *)pf;
    return f->real->pMethods->xClose(f->real);
}

static int cv_read(sqlite3_file *pf, void *buf, int amt, sqlite3_int64 off)
{
    cv_file_t *f = (cv_file_t *)pf;
    return f->real->pMethods->xRead(f->real, buf, amt, off);
}

static int cv_write(sqlite3_file *pf, const void *buf, int amt, sqlite3_int64 off)
{
    cv_file_t *f = (cv_file_t *)pf;
    if (f->node == NULL)
        return f->real->pMethods->xWrite(f->real, buf, amt, off);
    rec_t *r = rec_new(f, false, off, (size_t)amt);
    r->data = xmalloc((size_t)amt);
    memcpy(r->data, buf, (size_t)amt);
    int rc = f->real->pMethods->xWrite(f->real, buf, amt, off);
    count_op();
    return rc;
}

static int cv_truncate(sqlite3_file *pf, sqlite3_int64 size)
{
    cv_file_t *f = (cv_file_t *)pf;
    if (f->node == NULL)
        return f->real->pMethods->xTruncate(f->real, size);
    (void)rec_new(f, true, size, 0);
    int rc = f->real->pMethods->xTruncate(f->real, size);
    count_op();
    return rc;
}

static int cv_sync(sqlite3_file *pf, int flags)
{
    cv_file_t *f = (cv_file_t *)pf;
    int rc = f->real->pMethods->xSync(f->real, flags);
    if (f->node == NULL)
        return rc;
    if (rc == SQLITE_OK) {
        recs_free(f->node);
        if (f->dirsync) {
            dir_synced(f->node->path);
            f->dirsync = false;
        }
    }
    count_op();
    return rc;
}

static int cv_file_size(sqlite3_file *pf, sqlite3_int64 *size)
{
    cv_file_t *f = (cv_file_t *)pf;
    return f->real->pMethods->xFileSize(f->real, size);
}

static int cv_lock(sqlite3_file *pf, int lock)
{
    cv_file_t *f = (cv_file_t *)pf;
    return f->real->pMethods->xLock(f->real, lock);
}

static int cv_unlock(sqlite3_file *pf, int lock)
{
    cv_file_t *f = (cv_file_t *)pf;
    return f->real->pMethods->xUnlock(f->real, lock);
}

static int cv_check_reserved(sqlite3_file *pf, int *out)
{
    cv_file_t *f = (cv_file_t *)pf;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int cv_file_control(sqlite3_file *pf, int op, void *arg)
{
    cv_file_t *f = (cv_file_t *)pf;
    return f->real->pMethods->xFileControl(f->real, op, arg);
}

static int cv_sector_size(sqlite3_file *pf)
{
    cv_file_t *f = (cv_file_t *)pf;
    return f->real->pMethods->xSectorSize(f->real);
}

/* Passed through: what SQLite assumes of the device (powersafe overwrite on
 * unix) is what the crash model must respect. */
static int cv_device_characteristics(sqlite3_file *pf)
{
    cv_file_t *f = (cv_file_t *)pf;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}

static int cv_shm_map(sqlite3_file *pf, int pg, int pgsz, int extend, void volatile **pp)
{
    cv_file_t *f = (cv_file_t *)pf;
    return f->real->pMethods->xShmMap(f->real, pg, pgsz, extend, pp);
}

static int cv_shm_lock(sqlite3_file *pf, int offset, int n, int flags)
{
    cv_file_t *f = (cv_file_t *)pf;
    return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

static void cv_shm_barrier(sqlite3_file *pf)
{
    cv_file_t *f = (cv_file_t *)pf;
    f->real->pMethods->xShmBarrier(f->real);
}

static int cv_shm_unmap(sqlite3_file *pf, int del)
{
    cv_file_t *f = (cv_file_t *)pf;
    return f->real->pMethods->xShmUnmap(f->real, del);
}

/* No memory-mapped reads: every page comes through xRead. */
static int cv_fetch(sqlite3_file *pf, sqlite3_int64 off, int amt, void **pp)
{
    (void)pf;
    (void)off;
    (void)amt;
    *pp = NULL;
    return SQLITE_OK;
}

static int cv_unfetch(sqlite3_file *pf, sqlite3_int64 off, void *p)
{
    (void)pf;
    (void)off;
    (void)p;
    return SQLITE_OK;
}

static const sqlite3_io_methods cv_io = {
    .iVersion = 3,
    .xClose = cv_close,
    .xRead = cv_read,
    .xWrite = cv_write,
    .xTruncate = cv_truncate,
    .xSync = cv_sync,
    .xFileSize = cv_file_size,
    .xLock = cv_lock,
    .xUnlock = cv_unlock,
    .xCheckReservedLock = cv_check_reserved,
    .xFileControl = cv_file_control,
    .xSectorSize = cv_sector_size,
    .xDeviceCharacteristics = cv_device_characteristics,
    .xShmMap = cv_shm_map,
    .xShmLock = cv_shm_lock,
    .xShmBarrier = cv_shm_barrier,
    .xShmUnmap = cv_shm_unmap,
    .xFetch = cv_fetch,
    .xUnfetch = cv_unfetch,
};

/* ---- the VFS: xOpen and xDelete keep the books, the rest is the unix VFS ---- */

static int cv_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *pf, int flags, int *out_flags)
{
    (void)vfs;
    cv_file_t *f = (cv_file_t *)pf;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)(f + 1);
    int type = flags & TYPE_MASK;
    bool track = armed && name != NULL && TRACKED(type);
    bool created = track && (flags & SQLITE_OPEN_CREATE) && access(name, F_OK) != 0;
    int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
    if (rc != SQLITE_OK) {
        pf->pMethods = NULL;
        return rc;
    }
    pf->pMethods = &cv_io;
    if (track) {
        f->node = node_get(name);
        f->dirsync = (flags & SQLITE_OPEN_CREATE) && DIRSYNCED(type);
        if (created) {
            recs_free(f->node);
            f->node->new_entry = true;
        }
    }
    return SQLITE_OK;
}

/* A deleted file is not brought back by the crash (not modelled). */
static int cv_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    (void)vfs;
    int rc = real_vfs->xDelete(real_vfs, name, sync_dir);
    if (!armed || name == NULL)
        return rc;
    for (node_t *n = nodes; n != NULL; n = n->next)
        if (strcmp(n->path, name) == 0) {
            recs_free(n);
            n->new_entry = false;
        }
    if (rc == SQLITE_OK && sync_dir)
        dir_synced(name);
    return rc;
}

static int cv_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    (void)vfs;
    return real_vfs->xAccess(real_vfs, name, flags, out);
}

static int cv_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    (void)vfs;
    return real_vfs->xFullPathname(real_vfs, name, n, out);
}

static void *cv_dlopen(sqlite3_vfs *vfs, const char *name)
{
    (void)vfs;
    return real_vfs->xDlOpen(real_vfs, name);
}

static void cv_dlerror(sqlite3_vfs *vfs, int n, char *msg)
{
    (void)vfs;
    real_vfs->xDlError(real_vfs, n, msg);
}

static void (*cv_dlsym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
    (void)vfs;
    return real_vfs->xDlSym(real_vfs, h, sym);
}

static void cv_dlclose(sqlite3_vfs *vfs, void *h)
{
    (void)vfs;
    real_vfs->xDlClose(real_vfs, h);
}

static int cv_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return real_vfs->xRandomness(real_vfs, n, out);
}

static int cv_sleep(sqlite3_vfs *vfs, int us)
{
    (void)vfs;
    return real_vfs->xSleep(real_vfs, us);
}

static int cv_current_time(sqlite3_vfs *vfs, double *out)
{
    (void)vfs;
    return real_vfs->xCurrentTime(real_vfs, out);
}

static int cv_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return real_vfs->xGetLastError(real_vfs, n, out);
}

static int cv_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    (void)vfs;
    return real_vfs->xCurrentTimeInt64(real_vfs, out);
}

static int cv_set_syscall(sqlite3_vfs *vfs, const char *name, sqlite3_syscall_ptr p)
{
    (void)vfs;
    return real_vfs->xSetSystemCall(real_vfs, name, p);
}

static sqlite3_syscall_ptr cv_get_syscall(sqlite3_vfs *vfs, const char *name)
{
    (void)vfs;
    return real_vfs->xGetSystemCall(real_vfs, name);
}

static const char *cv_next_syscall(sqlite3_vfs *vfs, const char *name)
{
    (void)vfs;
    return real_vfs->xNextSystemCall(real_vfs, name);
}

int crashvfs_install(void)
{
    if (real_vfs != NULL)
        return SQLITE_OK;
    int rc = sqlite3_initialize();
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_vfs *unix_vfs = sqlite3_vfs_find("unix");
    if (unix_vfs == NULL || unix_vfs->iVersion < 3)
        return SQLITE_ERROR;
    cv_vfs = (sqlite3_vfs){
        .iVersion = 3,
        .szOsFile = (int)sizeof(cv_file_t) + unix_vfs->szOsFile,
        .mxPathname = unix_vfs->mxPathname,
        .zName = "crashvfs",
        .xOpen = cv_open,
        .xDelete = cv_delete,
        .xAccess = cv_access,
        .xFullPathname = cv_full_pathname,
        .xDlOpen = cv_dlopen,
        .xDlError = cv_dlerror,
        .xDlSym = cv_dlsym,
        .xDlClose = cv_dlclose,
        .xRandomness = cv_randomness,
        .xSleep = cv_sleep,
        .xCurrentTime = cv_current_time,
        .xGetLastError = cv_last_error,
        .xCurrentTimeInt64 = cv_current_time64,
        .xSetSystemCall = cv_set_syscall,
        .xGetSystemCall = cv_get_syscall,
        .xNextSystemCall = cv_next_syscall,
    };
    real_vfs = unix_vfs;
    rc = sqlite3_vfs_register(&cv_vfs, 1);
    if (rc != SQLITE_OK)
        real_vfs = NULL;
    return rc;
}

void crashvfs_arm(uint64_t at, crashvfs_mode_t mode, uint64_t seed)
{
    armed = true;
    crash_at = at;
    crash_mode = mode;
    rng = seed;
    ops = 0;
}

uint64_t crashvfs_ops(void)
{
    return ops;
}

const char *crashvfs_mode_name(crashvfs_mode_t mode)
{
    switch (mode) {
    case CRASHVFS_LOSE_ALL:
        return "lose-all";
    case CRASHVFS_RANDOM:
        return "random";
    case CRASHVFS_GARBAGE:
        return "garbage";
    }
    return "unknown";
}

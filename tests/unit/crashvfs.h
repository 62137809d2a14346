/*
 * crashvfs - a SQLite VFS shim that simulates a power cut (test helper).
 *
 * Installed as the default VFS, it wraps the real "unix" VFS: every
 * operation reaches the real files at once, and for each database, WAL or
 * rollback journal it remembers every write and truncate since that file's
 * last xSync (the old bytes, the new bytes and the old size), forgetting
 * them when the sync returns. It also remembers which of those files it
 * created since their directory was last synced.
 *
 * Armed with a crash point N, the N-th counted operation (xWrite, xTruncate
 * or xSync on such a file) is carried out and then the power goes: every
 * file is put back to its state at its last sync, the operations since are
 * replayed in order or not according to the mode, files whose directory
 * entry was never synced are unlinked, and the process _exit()s with
 * CRASHVFS_EXIT_CODE. See docs/internals/powercut.md for what this models
 * and what it does not.
 *
 * Meant for a forked child: the crash ends the process, and the state it
 * keeps is per process.
 */
#ifndef KEEL_TEST_CRASHVFS_H
#define KEEL_TEST_CRASHVFS_H

#include <stdint.h>

/* Exit status of a process that crashvfs powered off. */
#define CRASHVFS_EXIT_CODE 86
/* The granularity of a torn write: the device's sector (a 4 KiB page
 * write can tear at 512-byte boundaries on flash without atomic pages). */
#define CRASHVFS_SECTOR 512

typedef enum {
    /* Nothing written since the last sync reached the disk. */
    CRASHVFS_LOSE_ALL = 0,
    /* Each unsynced write reached the disk whole, not at all, or torn
     * (sector by sector, any subset); each unsynced truncate happened or not. */
    CRASHVFS_RANDOM = 1,
    /* As RANDOM, but a sector of a write that did not reach the disk may hold
     * random bytes instead of the old ones (SQLite's own crash test). Only
     * the bytes the write covered: the unix VFS declares powersafe overwrite. */
    CRASHVFS_GARBAGE = 2,
} crashvfs_mode_t;
#define CRASHVFS_MODES 3

/* Registers the shim as the default VFS (once; later calls do nothing).
 * Returns a SQLite result code. Disarmed it is a plain pass-through that
 * records nothing. */
int crashvfs_install(void);

/* Starts recording. crash_at: the counted operation after which the power
 * goes (0: record and count, never crash). seed drives RANDOM and GARBAGE. */
void crashvfs_arm(uint64_t crash_at, crashvfs_mode_t mode, uint64_t seed);

/* Counted operations since crashvfs_arm. */
uint64_t crashvfs_ops(void);

/* Cuts the power now (armed or not, with the armed mode). */
_Noreturn void crashvfs_crash(void);

const char *crashvfs_mode_name(crashvfs_mode_t mode);

#endif

/*
 * keel/slots.h - the device side of signed A/B updates (EN 303 645 5.3, 5.7):
 * the boot state and its storage backends, the slot state machine, and the
 * operations behind `keel update install|confirm|status` and `keel boot`.
 * Design: docs/internals/update-device.md. Bundles: keel/update.h.
 */
#ifndef KEEL_SLOTS_H
#define KEEL_SLOTS_H

#include "keel/base.h"
#include "keel/config.h"
#include "keel/update.h"

#include <stdbool.h>

#define KEEL_SLOTS_N 2
#define KEEL_SLOT_NONE (-1)
#define KEEL_SLOT_VERSION_MAX 64      /* as the manifest's version */
#define KEEL_TAMPER_DETAIL_MAX 255
#define KEEL_BOOT_TRIES_MAX 10
/* The vault secret holding the anti-rollback counter (uint32, little-endian). */
#define KEEL_SECVER_SECRET "update.security_version"

/* Everything the (emulated) bootloader and the updater share. */
typedef struct {
    uint64_t seq;          /* set by the backend's store; the newest copy wins */
    int active;            /* last confirmed slot, KEEL_SLOT_NONE before the first confirm */
    int pending;           /* installed, boots next while tries_left > 0 */
    uint32_t tries_left;
    int booted;            /* slot chosen by the last boot */
    bool good[KEEL_SLOTS_N];
    char version[KEEL_SLOTS_N][KEEL_SLOT_VERSION_MAX + 1];
    uint32_t security_version[KEEL_SLOTS_N];
    bool tamper;           /* a slot failed verification at boot (5.7-2) */
    char tamper_detail[KEEL_TAMPER_DETAIL_MAX + 1];
    int64_t tamper_time;   /* Unix seconds */
} keel_bootstate_t;

/* A fresh state: no slot active, pending, booted or good. */
void keel_bootstate_init(keel_bootstate_t *st);
/* 'A' or 'B' for a slot index, '-' for none. */
char keel_slot_name(int slot);

/*
 * Where the boot state lives: the file backend below, later a U-Boot env
 * (fw_setenv) or GRUB env backend. Contract for every backend:
 *   load  - KEEL_OK with the newest valid state; KEEL_ERR_NOT_FOUND when none
 *           was ever stored (*out is a fresh state); KEEL_ERR_FORMAT when
 *           state exists but no copy is valid (*out is a fresh state, and the
 *           error message says so).
 *   store - makes `st` the newest state (setting st->seq) such that a power
 *           cut at any moment leaves load returning the old or the new state.
 */
typedef struct {
    const char *name;
    keel_status_t (*load)(void *ctx, keel_bootstate_t *out);
    keel_status_t (*store)(void *ctx, keel_bootstate_t *st);
    void *ctx;
} keel_bootstate_backend_t;

keel_status_t keel_bootstate_load(const keel_bootstate_backend_t *b, keel_bootstate_t *out) KEEL_MUST_CHECK;
keel_status_t keel_bootstate_store(const keel_bootstate_backend_t *b, keel_bootstate_t *st) KEEL_MUST_CHECK;

/*
 * The file backend: two fixed-size records <dir>/bootstate.0 and .1, each
 * with a magic, the sequence number and a SHA-256 over the record. A store
 * overwrites in place (write + fsync, like raw flash) the copy that does not
 * hold the newest valid state. `f` must outlive the backend.
 */
#define KEEL_BOOTSTATE_RECORD_LEN 512
typedef struct {
    char path[2][KEEL_PATH_MAX];
} keel_bootstate_file_t;
keel_status_t keel_bootstate_file_backend(keel_bootstate_file_t *f, const char *dir,
                                          keel_bootstate_backend_t *out) KEEL_MUST_CHECK;
/* The record codec, exposed for tests and for other backends' payloads. */
void keel_bootstate_encode(const keel_bootstate_t *st, uint8_t rec[KEEL_BOOTSTATE_RECORD_LEN]);
keel_status_t keel_bootstate_decode(const uint8_t *rec, size_t len, keel_bootstate_t *out) KEEL_MUST_CHECK;

/* ---- the slot state machine (pure: no I/O) ------------------------------ */

/* The slot an install writes: never the active one; A when none is active.
 * KEEL_ERR_VERIFY (refused, with a message) while the pending slot is the
 * one running. */
keel_status_t keel_slots_install_target(const keel_bootstate_t *st, int *slot) KEEL_MUST_CHECK;
/* Before writing `slot`: it is no longer good or pending. */
void keel_slots_install_begin(keel_bootstate_t *st, int slot);
/* After the image and its signed part are durable: `slot` boots next. */
void keel_slots_install_commit(keel_bootstate_t *st, int slot, const char *version, uint32_t secver,
                               uint32_t tries);
/*
 * Start of a boot: the order in which to try slots (up to 2). A pending slot
 * with tries left comes first and costs a try; one without tries is rolled
 * back (not good, no longer pending). Then the active slot, then the other
 * good one. The caller stores the state before trying any slot. Returns
 * true when a pending slot was rolled back.
 */
bool keel_slots_boot_plan(keel_bootstate_t *st, int order[KEEL_SLOTS_N], int *n);
/* A slot failed verification: refused, and a tamper alert recorded. */
void keel_slots_boot_refuse(keel_bootstate_t *st, int slot, const char *detail, int64_t now);
/* `slot` verified and boots (KEEL_SLOT_NONE: nothing did). A good slot that
 * boots when the active one could not becomes active. */
void keel_slots_boot_done(keel_bootstate_t *st, int slot);
/*
 * Confirms the booted slot: good; if it was pending it becomes active. The
 * counter becomes max(counter, its security version); slots below the new
 * counter can no longer boot and lose their good mark. KEEL_ERR_NOT_FOUND
 * when no slot was booted.
 */
keel_status_t keel_slots_confirm(keel_bootstate_t *st, uint32_t *counter) KEEL_MUST_CHECK;

/* ---- the device: config, trust, vault, slots ----------------------------- */

typedef struct keel_slots keel_slots_t;

/* Opens what the [update], [trust], [keystore] and [vault] sections name;
 * creates the update directory (0700). `c` must outlive the handle. */
keel_status_t keel_slots_open(const keel_config_t *c, keel_slots_t **out) KEEL_MUST_CHECK;
void keel_slots_close(keel_slots_t *s);

typedef struct {
    int slot;
    char version[KEEL_SLOT_VERSION_MAX + 1];
    uint32_t security_version;
    uint64_t bytes;
    uint32_t tries;
} keel_install_result_t;

/*
 * Installs a bundle into the inactive slot: the bundle is verified before a
 * byte is written, each chunk is written only after it verified, the slot is
 * fsynced, its signed part kept, and only then is it made pending. Refusals
 * (model, security version, downgrade policy, verification) are
 * KEEL_ERR_VERIFY; the previous slots and boot order are kept.
 */
keel_status_t keel_slots_install(keel_slots_t *s, keel_read_fn rd, void *ctx,
                                 keel_install_result_t *res) KEEL_MUST_CHECK;

/*
 * The checks of keel_slots_install that come before any write (signature,
 * chain, trust, model, anti-rollback counter, downgrade policy), reading only
 * up to the payload: for staging a bundle (keeld's upload) so a refusal is
 * reported before the user asks to install. *out gets the manifest without
 * its chunk digests (install reads and checks them again).
 */
keel_status_t keel_slots_check(keel_slots_t *s, keel_read_fn rd, void *ctx, keel_manifest_t *out) KEEL_MUST_CHECK;

typedef struct {
    int slot; /* KEEL_SLOT_NONE: nothing bootable (status KEEL_ERR_VERIFY) */
    char version[KEEL_SLOT_VERSION_MAX + 1];
    uint32_t security_version;
    bool pending;      /* booted a pending (unconfirmed) slot */
    uint32_t tries_left;
    bool rolled_back;  /* a pending slot ran out of tries */
    unsigned refused;  /* slots refused by verification this boot */
} keel_boot_result_t;

/* The emulated bootloader: see keel_slots_boot_plan; verifies each chosen
 * slot (signed part, model, counter, payload SHA-256) before booting it. */
keel_status_t keel_slots_boot(keel_slots_t *s, keel_boot_result_t *res) KEEL_MUST_CHECK;
/* Confirms the booted slot and advances the vault's counter. */
keel_status_t keel_slots_confirm_booted(keel_slots_t *s, int *slot, uint32_t *counter) KEEL_MUST_CHECK;

/* The boot state (KEEL_ERR_FORMAT keeps a fresh state in *st, see load). */
keel_status_t keel_slots_state(keel_slots_t *s, keel_bootstate_t *st) KEEL_MUST_CHECK;
/*
 * Factory reset (keeld): the vault's crypto-erase would take the
 * anti-rollback counters with it, and an erased counter lets an old,
 * vulnerable image or trust store back in. Before the erase the counters are
 * written to <update dir>/KEEL_SLOTS_RESET_JOURNAL (merged with an
 * unfinished earlier one, never lowered); the next keel_slots_open, by any
 * program, raises the vault's counters to it and removes it.
 */
#define KEEL_SLOTS_RESET_JOURNAL "reset-counters"
keel_status_t keel_slots_reset_journal(keel_slots_t *s) KEEL_MUST_CHECK;
/* The anti-rollback counter (0 before the first confirm). */
keel_status_t keel_slots_counter(keel_slots_t *s, uint32_t *counter) KEEL_MUST_CHECK;
/* The verified manifest of the image kept for `slot` (KEEL_ERR_NOT_FOUND if
 * none). Free with keel_manifest_free. */
keel_status_t keel_slots_manifest(keel_slots_t *s, int slot, keel_manifest_t *out) KEEL_MUST_CHECK;
/* The slot's image path (from the configuration). */
const char *keel_slots_path(const keel_slots_t *s, int slot);

#endif

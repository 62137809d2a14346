/*
 * Fuzz target: the boot-state record (src/update/bootstate.c), which sits in
 * flash where whoever holds the device can write it, and the slot state
 * machine that runs on what it decodes.
 *
 * Byte 0: bit 0 sets the record's SHA-256 (so the fuzzer gets past the
 * checksum); bits 1-7 drive the state machine below. The rest is the record
 * (cut or zero-padded to KEEL_BOOTSTATE_RECORD_LEN when bit 0 is set).
 *
 * What must hold: a record taken is canonical (encoding what was decoded
 * gives the same bytes); every state the machine makes from it (a boot
 * plan, a refusal, a boot, a confirm, an install) encodes to a record that
 * decodes again to the same state, so what the updater stores the
 * bootloader can read back; the plan never names a slot twice, and a
 * confirm never lowers the counter.
 */
#include "fuzz.h"

#include "keel/crypto.h"
#include "keel/slots.h"

#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static void round_trip(const keel_bootstate_t *st, const char *what)
{
    uint8_t rec[KEEL_BOOTSTATE_RECORD_LEN], again[KEEL_BOOTSTATE_RECORD_LEN];
    keel_bootstate_t back;
    keel_bootstate_encode(st, rec);
    if (keel_bootstate_decode(rec, sizeof rec, &back) != KEEL_OK) {
        fprintf(stderr, "after %s: %s\n", what, keel_error_message());
        fuzz_must(0, "a state the machine made does not decode");
    }
    keel_bootstate_encode(&back, again);
    fuzz_must(memcmp(rec, again, sizeof rec) == 0, "a state changed through encode and decode");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t ops = data[0];
    uint8_t rec[KEEL_BOOTSTATE_RECORD_LEN];
    size_t len = size - 1;
    const uint8_t *in = data + 1;
    if (ops & 1) {
        memset(rec, 0, sizeof rec);
        memcpy(rec, in, len < sizeof rec ? len : sizeof rec);
        keel_sha256(rec, sizeof rec - KEEL_SHA256_LEN, rec + sizeof rec - KEEL_SHA256_LEN);
        in = rec;
        len = sizeof rec;
    }
    keel_bootstate_t st;
    if (keel_bootstate_decode(in, len, &st) != KEEL_OK) {
        keel_error_clear();
        return 0;
    }
    uint8_t enc[KEEL_BOOTSTATE_RECORD_LEN];
    keel_bootstate_encode(&st, enc);
    fuzz_must(memcmp(enc, in, sizeof enc) == 0, "a record taken is not canonical");

    int order[KEEL_SLOTS_N], n = 0;
    (void)keel_slots_boot_plan(&st, order, &n);
    fuzz_must(n >= 0 && n <= KEEL_SLOTS_N && (n < 2 || order[0] != order[1]), "a boot plan names a slot twice");
    for (int i = 0; i < n; i++)
        fuzz_must(order[i] >= 0 && order[i] < KEEL_SLOTS_N, "a boot plan names no slot");
    round_trip(&st, "the boot plan");
    int booted = KEEL_SLOT_NONE;
    for (int i = 0; i < n && booted == KEEL_SLOT_NONE; i++) {
        if (ops & (2 << i))
            keel_slots_boot_refuse(&st, order[i], "slot digest mismatch at chunk 3", 1767225600);
        else
            booted = order[i];
        round_trip(&st, "a refusal");
    }
    keel_slots_boot_done(&st, booted);
    round_trip(&st, "the boot");
    if (ops & 8) {
        uint32_t counter = (uint32_t)ops << 2, before = counter;
        if (keel_slots_confirm(&st, &counter) == KEEL_OK)
            fuzz_must(counter >= before, "a confirm lowered the counter");
        keel_error_clear();
        round_trip(&st, "the confirm");
    }
    if (ops & 16) {
        int slot = KEEL_SLOT_NONE;
        if (keel_slots_install_target(&st, &slot) == KEEL_OK) {
            fuzz_must(slot >= 0 && slot < KEEL_SLOTS_N && slot != st.active, "an install targets the active slot");
            keel_slots_install_begin(&st, slot);
            round_trip(&st, "an install's start");
            keel_slots_install_commit(&st, slot, (ops & 32) ? "2.0.0-rc.1+build.7" : "1.0.1", ops, 1u + ops % 10);
            round_trip(&st, "an install");
        }
        keel_error_clear();
    }
    return 0;
}

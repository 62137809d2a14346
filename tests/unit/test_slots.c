/*
 * Unit tests for the device side of A/B updates: the boot-state record and
 * its two-copy file backend (sequence numbers, corrupt and torn copies, a
 * fault at every storage operation of a store), and the slot state machine
 * (install target, pending with tries, rollback, refusal, confirm).
 */
#include "testutil.h"

#include "keel/slots.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* A store takes four counted operations (two writes, fsync, dir fsync). */
#define FAULT_LIMIT 32

typedef struct {
    char *root;
    keel_bootstate_file_t file;
    keel_bootstate_backend_t be;
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (fx == NULL)
        return -1;
    fx->root = tmpdir_new();
    if (keel_bootstate_file_backend(&fx->file, fx->root, &fx->be) != KEEL_OK)
        return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    keel_fault_arm(0);
    tmpdir_free(fx->root);
    free(fx);
    return 0;
}

/* Equal in everything but the sequence number. */
static int same_state(const keel_bootstate_t *a, const keel_bootstate_t *b)
{
    keel_bootstate_t x = *a, y = *b;
    x.seq = y.seq = 0;
    uint8_t ra[KEEL_BOOTSTATE_RECORD_LEN], rb[KEEL_BOOTSTATE_RECORD_LEN];
    keel_bootstate_encode(&x, ra);
    keel_bootstate_encode(&y, rb);
    return memcmp(ra, rb, sizeof ra) == 0;
}

static keel_bootstate_t sample_state(unsigned n)
{
    keel_bootstate_t st;
    keel_bootstate_init(&st);
    st.active = (int)(n % 2);
    st.pending = 1 - st.active;
    st.tries_left = n % 4;
    st.booted = st.active;
    st.good[st.active] = true;
    snprintf(st.version[0], sizeof st.version[0], "1.%u.0", n);
    snprintf(st.version[1], sizeof st.version[1], "2.%u.0-rc.1", n);
    st.security_version[0] = n;
    st.security_version[1] = n + 1;
    if (n % 3 == 0) {
        st.tamper = true;
        snprintf(st.tamper_detail, sizeof st.tamper_detail, "slot A refused at boot: test %u", n);
        st.tamper_time = 1700000000 + n;
    }
    return st;
}

static void flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b = 0;
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x40;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

/* ---- the record -------------------------------------------------------- */

static void test_record_roundtrip(void **state)
{
    (void)state;
    for (unsigned n = 0; n < 8; n++) {
        keel_bootstate_t a = sample_state(n), b;
        a.seq = 1000 + n;
        uint8_t rec[KEEL_BOOTSTATE_RECORD_LEN];
        keel_bootstate_encode(&a, rec);
        assert_int_equal(keel_bootstate_decode(rec, sizeof rec, &b), KEEL_OK);
        assert_true(same_state(&a, &b));
        assert_int_equal(b.seq, 1000 + n);
    }
}

static void test_record_every_flip_refused(void **state)
{
    (void)state;
    keel_bootstate_t a = sample_state(3), b;
    uint8_t rec[KEEL_BOOTSTATE_RECORD_LEN];
    keel_bootstate_encode(&a, rec);
    for (size_t i = 0; i < sizeof rec; i++) {
        rec[i] ^= 0x01;
        assert_int_equal(keel_bootstate_decode(rec, sizeof rec, &b), KEEL_ERR_FORMAT);
        rec[i] ^= 0x01;
    }
    assert_int_equal(keel_bootstate_decode(rec, sizeof rec - 1, &b), KEEL_ERR_FORMAT);
    assert_int_equal(keel_bootstate_decode(rec, sizeof rec, &b), KEEL_OK);
}

/* A record whose checksum is right but whose fields are out of range. */
static void test_record_strict_fields(void **state)
{
    (void)state;
    keel_bootstate_t a = sample_state(1), b;
    uint8_t rec[KEEL_BOOTSTATE_RECORD_LEN];
    a.tries_left = KEEL_BOOT_TRIES_MAX + 1;
    keel_bootstate_encode(&a, rec);
    assert_int_equal(keel_bootstate_decode(rec, sizeof rec, &b), KEEL_ERR_FORMAT);
    a = sample_state(1);
    a.pending = a.active;
    keel_bootstate_encode(&a, rec);
    assert_int_equal(keel_bootstate_decode(rec, sizeof rec, &b), KEEL_ERR_FORMAT);
    a = sample_state(1);
    a.version[0][0] = '\n';
    keel_bootstate_encode(&a, rec);
    assert_int_equal(keel_bootstate_decode(rec, sizeof rec, &b), KEEL_ERR_FORMAT);
}

/* ---- the file backend ---------------------------------------------------- */

static void test_file_fresh(void **state)
{
    fx_t *fx = *state;
    keel_bootstate_t st = sample_state(5);
    assert_int_equal(keel_bootstate_load(&fx->be, &st), KEEL_ERR_NOT_FOUND);
    assert_int_equal(st.active, KEEL_SLOT_NONE);
    assert_int_equal(st.pending, KEEL_SLOT_NONE);
    assert_false(st.good[0] || st.good[1]);
}

static void test_file_alternates_copies(void **state)
{
    fx_t *fx = *state;
    for (unsigned n = 1; n <= 5; n++) {
        keel_bootstate_t st = sample_state(n), got;
        assert_int_equal(keel_bootstate_store(&fx->be, &st), KEEL_OK);
        assert_int_equal(st.seq, n);
        assert_int_equal(keel_bootstate_load(&fx->be, &got), KEEL_OK);
        assert_int_equal(got.seq, n);
        assert_true(same_state(&st, &got));
        /* Copy (n-1)%2 was written; the other still holds n-1. */
        struct stat sb;
        assert_int_equal(stat(fx->file.path[(n - 1) % 2], &sb), 0);
        assert_int_equal(sb.st_size, KEEL_BOOTSTATE_RECORD_LEN);
        assert_int_equal(sb.st_mode & 0777, 0600);
    }
}

static void test_file_corrupt_newest_falls_back(void **state)
{
    fx_t *fx = *state;
    keel_bootstate_t s1 = sample_state(1), s2 = sample_state(2), got;
    assert_int_equal(keel_bootstate_store(&fx->be, &s1), KEEL_OK); /* copy 0, seq 1 */
    assert_int_equal(keel_bootstate_store(&fx->be, &s2), KEEL_OK); /* copy 1, seq 2 */
    flip_byte(fx->file.path[1], 100);
    assert_int_equal(keel_bootstate_load(&fx->be, &got), KEEL_OK);
    assert_int_equal(got.seq, 1);
    assert_true(same_state(&s1, &got));
    /* The next store overwrites the corrupt copy, not the good one. */
    keel_bootstate_t s3 = sample_state(3);
    assert_int_equal(keel_bootstate_store(&fx->be, &s3), KEEL_OK);
    assert_int_equal(s3.seq, 2);
    assert_int_equal(keel_bootstate_load(&fx->be, &got), KEEL_OK);
    assert_true(same_state(&s3, &got));
    /* A truncated newest copy is ignored too. */
    assert_int_equal(truncate(fx->file.path[1], 100), 0);
    assert_int_equal(keel_bootstate_load(&fx->be, &got), KEEL_OK);
    assert_true(same_state(&s1, &got));
}

static void test_file_both_corrupt(void **state)
{
    fx_t *fx = *state;
    keel_bootstate_t s1 = sample_state(1), s2 = sample_state(2), got;
    assert_int_equal(keel_bootstate_store(&fx->be, &s1), KEEL_OK);
    assert_int_equal(keel_bootstate_store(&fx->be, &s2), KEEL_OK);
    flip_byte(fx->file.path[0], 0);
    flip_byte(fx->file.path[1], KEEL_BOOTSTATE_RECORD_LEN - 1);
    assert_int_equal(keel_bootstate_load(&fx->be, &got), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "both boot-state copies"));
    assert_int_equal(got.active, KEEL_SLOT_NONE);
    assert_int_equal(got.pending, KEEL_SLOT_NONE);
    assert_false(got.good[0] || got.good[1] || got.tamper);
    /* Storing again starts over and is readable. */
    assert_int_equal(keel_bootstate_store(&fx->be, &s1), KEEL_OK);
    assert_int_equal(keel_bootstate_load(&fx->be, &got), KEEL_OK);
    assert_true(same_state(&s1, &got));
}

/*
 * A fault at every storage operation of a store, after 0..3 earlier stores
 * (so each copy, new or existing, gets cut): load then gives the old or the
 * new state, never anything else, and the next store works.
 */
static void test_file_fault_every_op(void **state)
{
    fx_t *fx = *state;
    unsigned cuts = 0;
    for (unsigned history = 0; history < 4; history++) {
        int completed = 0;
        for (unsigned long n = 1; n <= FAULT_LIMIT && !completed; n++) {
            char sub[KEEL_PATH_MAX];
            keel_bootstate_file_t f;
            keel_bootstate_backend_t be;
            snprintf(sub, sizeof sub, "%s/h%u-f%lu", fx->root, history, n);
            assert_int_equal(mkdir(sub, 0700), 0);
            assert_int_equal(keel_bootstate_file_backend(&f, sub, &be), KEEL_OK);
            keel_bootstate_t old = sample_state(0), neu = sample_state(99), got;
            for (unsigned k = 0; k < history; k++) {
                old = sample_state(k + 1);
                assert_int_equal(keel_bootstate_store(&be, &old), KEEL_OK);
            }
            keel_fault_arm(n);
            keel_status_t st = keel_bootstate_store(&be, &neu);
            keel_fault_arm(0);
            keel_status_t lst = keel_bootstate_load(&be, &got);
            if (st == KEEL_OK) {
                assert_int_equal(lst, KEEL_OK);
                assert_true(same_state(&neu, &got));
                completed = 1;
                continue;
            }
            assert_int_equal(st, KEEL_ERR_IO);
            cuts++;
            if (lst == KEEL_OK)
                assert_true(same_state(&got, &neu) || (history > 0 && same_state(&got, &old)));
            else
                assert_int_equal(history, 0); /* nothing stored before: fresh is the old state */
            /* The device carries on. */
            keel_bootstate_t next = sample_state(7);
            assert_int_equal(keel_bootstate_store(&be, &next), KEEL_OK);
            assert_int_equal(keel_bootstate_load(&be, &got), KEEL_OK);
            assert_true(same_state(&next, &got));
        }
        assert_true(completed);
    }
#ifdef KEEL_FAULT_INJECTION
    assert_true(cuts >= 12); /* the hook reached the writes and fsyncs */
#else
    (void)cuts;
#endif
}

/* ---- the state machine ------------------------------------------------------ */

static void install(keel_bootstate_t *st, const char *version, uint32_t secver, uint32_t tries, int *slot)
{
    assert_int_equal(keel_slots_install_target(st, slot), KEEL_OK);
    keel_slots_install_begin(st, *slot);
    assert_false(st->good[*slot]);
    assert_true(st->pending != *slot);
    keel_slots_install_commit(st, *slot, version, secver, tries);
}

static int boot_first(keel_bootstate_t *st, bool *rolled_back)
{
    int order[KEEL_SLOTS_N], n = 0;
    *rolled_back = keel_slots_boot_plan(st, order, &n);
    int slot = n > 0 ? order[0] : KEEL_SLOT_NONE;
    keel_slots_boot_done(st, slot);
    return slot;
}

static void test_sm_first_install_confirm(void **state)
{
    (void)state;
    keel_bootstate_t st;
    keel_bootstate_init(&st);
    bool rb = false;
    uint32_t counter = 0;
    assert_int_equal(boot_first(&st, &rb), KEEL_SLOT_NONE);
    assert_int_equal(keel_slots_confirm(&st, &counter), KEEL_ERR_NOT_FOUND);
    int slot = -1;
    install(&st, "1.0.0", 1, 3, &slot);
    assert_int_equal(slot, 0);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.tries_left, 3);
    assert_int_equal(boot_first(&st, &rb), 0);
    assert_false(rb);
    assert_int_equal(st.tries_left, 2);
    /* Running unconfirmed: installing over it is refused. */
    assert_int_equal(keel_slots_install_target(&st, &slot), KEEL_ERR_VERIFY);
    assert_int_equal(keel_slots_confirm(&st, &counter), KEEL_OK);
    assert_int_equal(st.active, 0);
    assert_int_equal(st.pending, KEEL_SLOT_NONE);
    assert_true(st.good[0]);
    assert_int_equal(counter, 1);
    /* Confirming again changes nothing. */
    assert_int_equal(keel_slots_confirm(&st, &counter), KEEL_OK);
    assert_int_equal(st.active, 0);
    assert_int_equal(counter, 1);
    install(&st, "1.1.0", 2, 3, &slot);
    assert_int_equal(slot, 1);
    assert_int_equal(boot_first(&st, &rb), 1);
    assert_int_equal(keel_slots_confirm(&st, &counter), KEEL_OK);
    assert_int_equal(st.active, 1);
    assert_int_equal(counter, 2);
    /* Slot A (security version 1) can no longer boot. */
    assert_false(st.good[0]);
    assert_true(st.good[1]);
}

static void test_sm_rollback_after_tries(void **state)
{
    (void)state;
    keel_bootstate_t st;
    keel_bootstate_init(&st);
    bool rb = false;
    uint32_t counter = 0;
    int slot = -1;
    install(&st, "1.0.0", 1, 3, &slot);
    assert_int_equal(boot_first(&st, &rb), 0);
    assert_int_equal(keel_slots_confirm(&st, &counter), KEEL_OK);
    install(&st, "1.1.0", 1, 2, &slot);
    assert_int_equal(slot, 1);
    /* Two tries: B boots twice without a confirm... */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(boot_first(&st, &rb), 1);
        assert_false(rb);
    }
    /* ...then the third boot rolls back to A. */
    assert_int_equal(boot_first(&st, &rb), 0);
    assert_true(rb);
    assert_int_equal(st.pending, KEEL_SLOT_NONE);
    assert_false(st.good[1]);
    assert_int_equal(st.active, 0);
    assert_int_equal(keel_slots_confirm(&st, &counter), KEEL_OK);
    assert_int_equal(counter, 1);
    /* And the failed slot is the next install target. */
    assert_int_equal(keel_slots_install_target(&st, &slot), KEEL_OK);
    assert_int_equal(slot, 1);
}

static void test_sm_refuse_and_fallback(void **state)
{
    (void)state;
    keel_bootstate_t st;
    keel_bootstate_init(&st);
    bool rb = false;
    uint32_t counter = 0;
    int slot = -1;
    install(&st, "1.0.0", 1, 3, &slot);
    (void)boot_first(&st, &rb);
    assert_int_equal(keel_slots_confirm(&st, &counter), KEEL_OK);
    install(&st, "1.1.0", 1, 3, &slot);
    (void)boot_first(&st, &rb);
    assert_int_equal(keel_slots_confirm(&st, &counter), KEEL_OK);
    assert_int_equal(st.active, 1);
    assert_true(st.good[0] && st.good[1]);
    /* Active B fails verification: A is tried next and becomes active. */
    int order[KEEL_SLOTS_N], n = 0;
    assert_false(keel_slots_boot_plan(&st, order, &n));
    assert_int_equal(n, 2);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 0);
    keel_slots_boot_refuse(&st, 1, "slot B refused at boot: image digest mismatch\n", 1700000000);
    keel_slots_boot_done(&st, 0);
    assert_true(st.tamper);
    assert_int_equal(st.tamper_time, 1700000000);
    assert_null(strchr(st.tamper_detail, '\n'));
    assert_false(st.good[1]);
    assert_int_equal(st.active, 0);
    assert_int_equal(st.booted, 0);
    /* The record keeps all of it. */
    uint8_t rec[KEEL_BOOTSTATE_RECORD_LEN];
    keel_bootstate_t back;
    keel_bootstate_encode(&st, rec);
    assert_int_equal(keel_bootstate_decode(rec, sizeof rec, &back), KEEL_OK);
    assert_true(same_state(&st, &back));
    /* A pending slot that fails verification is dropped at once. */
    install(&st, "1.2.0", 1, 3, &slot);
    assert_int_equal(slot, 1);
    assert_false(keel_slots_boot_plan(&st, order, &n));
    assert_int_equal(order[0], 1);
    keel_slots_boot_refuse(&st, 1, "bad", 1700000001);
    keel_slots_boot_done(&st, 0);
    assert_int_equal(st.pending, KEEL_SLOT_NONE);
    assert_int_equal(st.active, 0);
    /* Nothing verifies: nothing booted. */
    assert_false(keel_slots_boot_plan(&st, order, &n));
    assert_int_equal(n, 1);
    keel_slots_boot_refuse(&st, 0, "bad", 1700000002);
    keel_slots_boot_done(&st, KEEL_SLOT_NONE);
    assert_int_equal(st.booted, KEEL_SLOT_NONE);
    assert_int_equal(keel_slots_confirm(&st, &counter), KEEL_ERR_NOT_FOUND);
}

/* A new install replaces a pending one that never booted. */
static void test_sm_reinstall_pending(void **state)
{
    (void)state;
    keel_bootstate_t st;
    keel_bootstate_init(&st);
    bool rb = false;
    uint32_t counter = 0;
    int slot = -1;
    install(&st, "1.0.0", 1, 3, &slot);
    (void)boot_first(&st, &rb);
    assert_int_equal(keel_slots_confirm(&st, &counter), KEEL_OK);
    install(&st, "1.1.0", 1, 3, &slot);
    assert_int_equal(slot, 1);
    assert_int_equal(keel_slots_install_target(&st, &slot), KEEL_OK);
    assert_int_equal(slot, 1);
    keel_slots_install_begin(&st, slot);
    assert_int_equal(st.pending, KEEL_SLOT_NONE);
    assert_int_equal(st.tries_left, 0);
    assert_int_equal(st.version[1][0], '\0');
    /* A cut here boots A. */
    keel_bootstate_t cut = st;
    assert_int_equal(boot_first(&cut, &rb), 0);
    keel_slots_install_commit(&st, slot, "1.2.0", 1, 3);
    assert_int_equal(boot_first(&st, &rb), 1);
    assert_string_equal(st.version[1], "1.2.0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_roundtrip),
        cmocka_unit_test(test_record_every_flip_refused),
        cmocka_unit_test(test_record_strict_fields),
        cmocka_unit_test_setup_teardown(test_file_fresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_alternates_copies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_corrupt_newest_falls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_both_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_fault_every_op, setup, teardown),
        cmocka_unit_test(test_sm_first_install_confirm),
        cmocka_unit_test(test_sm_rollback_after_tries),
        cmocka_unit_test(test_sm_refuse_and_fallback),
        cmocka_unit_test(test_sm_reinstall_pending),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

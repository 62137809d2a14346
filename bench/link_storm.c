/*
 * link_storm: reconnect storms of a large fleet against one broker (5.9-3),
 * a discrete-event simulation that runs the real keel_backoff_delay.
 *
 * Three scenarios, each for keel's design and baselines, each against a
 * broker with a limited accept capacity and an unlimited one:
 *   A  broker outage: the fleet is online; the broker goes away at t=0 for
 *      --outage seconds; every attempt meanwhile fails. Figures over the
 *      recovery period (from the broker's return to the last device online).
 *   B  power cut: the whole fleet boots at t=0 (keel: first connect jittered
 *      in [0, first_connect]). Figures from power-on to the last device online.
 *   C  kick after CONNACK: the broker accepts and drops every connection right
 *      away for --kick seconds. Figure: the attempt rate late in that period.
 *
 * Definitions (also in docs/internals/bench.md): time is cut into 1 s bins
 * aligned with the start of the period; an attempt is every connect that
 * reaches the broker, refused or not. peak = the largest bin; mean = the
 * attempts in the period / its length in bins, the period running from its
 * start to the bin in which the last device came online (at least one bin).
 *
 * The model of one device is src/link/link.c's state machine: the first
 * connect after start waits first_connect * u; after every end of an attempt
 * or a connection (link_down), the counter is reset to 0 if the connection had
 * stayed up stable_s, then the next attempt waits keel_backoff_delay(counter,
 * u) and the counter grows by one (schedule_retry). A refused connect and a
 * kick right after CONNACK are both such ends, so the kicks of C back off like
 * failures. What the model leaves out: connects take no time (a broker whose
 * host is down makes link.c wait up to 20 s for its CONNACK; a refused TCP
 * connect fails at once), and every device loses its connection at the same
 * instant, the worst case for a synchronised retry.
 *
 * usage: link_storm [--devices N] [--outage S] [--kick S] [--capacity C]
 *                   [--seed N] [--first-connect S] [--backoff-base S] [--smoke]
 *                   [--json] [--json-file PATH]
 * Exit: 0 keel's design meets peak/mean <= 2 in scenario A (both brokers);
 * 1 it misses (a benchmark gate: the JSON says "pass": false) or the run
 * failed; 2 usage.
 */
#include "keel/link.h"

#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* [link] defaults of src/device/device.c. */
#define STORM_BASE_S 1.0
#define STORM_CAP_S 300.0
#define STORM_FIRST_S 30.0
#define STORM_STABLE_S 60.0

#define STORM_DEVICES_DEFAULT 1000000u
#define STORM_DEVICES_SMOKE 100000u
#define STORM_DEVICES_MAX 10000000ul
#define STORM_OUTAGE_DEFAULT 600u
#define STORM_KICK_DEFAULT 900u
/* Outage and kick periods: a device makes up to one attempt per 5 s of them. */
#define STORM_SECONDS_MAX 3600ul
/* As [link] first_connect and backoff_base in src/device/device.c. */
#define STORM_FIRST_MAX 3600ul
#define STORM_BASE_MAX 300ul
#define STORM_CAPACITY_DEFAULT 20000u
#define STORM_CAPACITY_MAX 100000000ul
/* The naive baseline's retry interval. */
#define STORM_FIXED_MS 5000u
/* Baselines of scenario C kick this long: a tight loop costs two events per
 * device and second, and its rate is steady from the first second. */
#define STORM_KICK_BASELINE_S 20u
#define STORM_GOAL_RATIO 2.0
/* Nobody online after a week of simulated time: report, do not loop on. */
#define STORM_HORIZON_S (7u * 86400u)
#define STORM_HORIZON_MS ((uint64_t)STORM_HORIZON_S * 1000u)
/* A broker far too slow for its fleet makes a synchronised baseline retry
 * all of it every 300 s for days: stop there too (the full run makes 1e8). */
#define STORM_EVENTS_MAX 2000000000ull
/* The counter only grows the window up to the cap (2^9 > 300 with base 1);
 * saturating a byte changes no delay. */
#define STORM_ATTEMPT_MAX 255u

enum { EXIT_MISS = 1, EXIT_USAGE = 2 };

/* DESIGN_FULLCAP is keel's first design, kept as a baseline: full jitter
 * [0, cap) also once the window has reached the cap. A fleet that waited
 * out a long outage then returns as a triangle (peak/mean 2.03x measured),
 * which is why keel_backoff_delay draws from [cap/2, cap] at the cap. */
typedef enum { DESIGN_KEEL, DESIGN_EXP, DESIGN_FIXED, DESIGN_RESET, DESIGN_FULLCAP } design_t;
static const char *const design_name[] = {"keel full jitter", "exponential, no jitter", "fixed 5 s, no jitter",
                                          "keel, reset at CONNACK", "full jitter at the cap"};
static const char *const design_key[] = {"keel_full_jitter", "exponential_no_jitter", "fixed_5s",
                                         "reset_at_connack", "full_jitter_at_cap"};

typedef enum { SCEN_OUTAGE, SCEN_POWERCUT, SCEN_KICK } scenario_t;

typedef struct {
    scenario_t scen;
    design_t design;
    uint32_t devices;
    uint32_t capacity; /* accepted connects per second; 0 = unlimited */
    uint32_t down_s;   /* A: the broker is down in [0, down_s) */
    uint32_t kick_s;   /* C: accepted connections are dropped in [0, kick_s) */
    keel_backoff_t b;
    uint64_t seed;
} storm_params_t;

typedef struct {
    int complete;         /* every device online within the horizon and the event budget */
    uint64_t start_ms;    /* start of the period: recovery, power-on, end of the kicks */
    uint32_t bins;        /* its length in 1 s bins */
    uint64_t peak;        /* attempts in the busiest bin */
    double mean;          /* attempts per second over the period */
    double t99_s, t100_s; /* from start_ms to 99 % / 100 % online; < 0: not reached */
    uint64_t attempts_period, attempts_total, refused, events;
    double kick_rate;     /* C: attempts per second over the window below */
    uint32_t kick_window_s;
    double wall_s;
} storm_result_t;

/*
 * The event queue is a timing wheel of 1 ms slots, each a list of the devices
 * whose next attempt falls in it, linked through next[]. A delay never
 * exceeds max(cap, first_connect, 5 s), so a wheel one power of two longer
 * holds every pending attempt, and an event costs O(1): the binary heap this
 * started with took 300 ns an event at 1M devices (49 s of CPU for the full
 * run, the synchronised baselines making 25M events each), the wheel 9 s. One device = its attempt counter (1 byte) + its link (4 bytes).
 * Within one millisecond the order is last in, first out: deterministic, and
 * it changes no figure, all of which are per second.
 */
#define STORM_NONE UINT32_MAX

typedef struct {
    uint32_t *head; /* [wheel_mask + 1] */
    uint32_t *next; /* [devices] */
    uint64_t wheel_mask;
} storm_queue_t;

typedef struct {
    const storm_params_t *p;
    uint64_t rng[4];
    uint8_t *attempt;
    storm_queue_t q;
    uint64_t now_ms;  /* the slot being drained */
    uint32_t pending; /* devices in the wheel */
    uint32_t *bins;   /* attempts per second since t=0 */
    uint64_t down_until_ms, kick_until_ms;
    uint64_t cur_sec;
    uint32_t accepted_in_sec;
    uint32_t online, need99;
    uint64_t t99_ms, t100_ms;
    uint64_t attempts, refused, events;
} storm_sim_t;

/*
 * xoshiro256** (Blackman and Vigna). Not a CSPRNG, and it need not be: the
 * simulation wants uniform, independent-looking draws that a seed can replay,
 * and nobody predicts anything from them. A device draws its jitter from the
 * system CSPRNG, which the model's uniform u in [0, 1) stands for.
 */
static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static void rng_seed(uint64_t s[4], uint64_t seed)
{
    /* splitmix64, as the xoshiro authors advise, so that seeds 1, 2, 3 give
     * unrelated states. */
    for (int i = 0; i < 4; i++) {
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        s[i] = z ^ (z >> 31);
    }
}

static double rng_unit(storm_sim_t *s)
{
    return (double)(rng_next(s->rng) >> 11) * 0x1.0p-53;
}

static uint64_t to_ms(double seconds)
{
    return (uint64_t)llround(seconds * 1000.0);
}

/* The wait before the next attempt, for the counter's value. */
static uint64_t delay_ms(storm_sim_t *s, unsigned attempt)
{
    const keel_backoff_t *b = &s->p->b;
    switch (s->p->design) {
    case DESIGN_KEEL:
    case DESIGN_RESET: return to_ms(keel_backoff_delay(b, attempt, rng_unit(s)));
    case DESIGN_EXP: return to_ms(attempt >= 62 ? b->cap_s : fmin(b->cap_s, ldexp(b->base_s, (int)attempt)));
    case DESIGN_FULLCAP:
        return to_ms(rng_unit(s) * (attempt >= 62 ? b->cap_s : fmin(b->cap_s, ldexp(b->base_s, (int)attempt))));
    case DESIGN_FIXED: return STORM_FIXED_MS;
    }
    return STORM_FIXED_MS;
}

/* link.c's schedule_retry: the delay for the counter, then the counter + 1. */
static uint64_t retry_at(storm_sim_t *s, uint32_t id, uint64_t t)
{
    uint64_t d = delay_ms(s, s->attempt[id]);
    if (s->attempt[id] < STORM_ATTEMPT_MAX)
        s->attempt[id]++;
    return t + d;
}

static void count_attempt(storm_sim_t *s, uint64_t t)
{
    s->bins[t / 1000]++;
    s->attempts++;
}

/* An attempt while the broker is down fails whatever the rest of the fleet
 * does, so a device's attempts up to the broker's return are played here
 * without the queue; exact, and a fixed-interval fleet's 120 attempts a
 * device in a 10-minute outage cost a loop turn each. */
static uint64_t settle(storm_sim_t *s, uint32_t id, uint64_t t)
{
    while (t < s->down_until_ms) {
        count_attempt(s, t);
        t = retry_at(s, id, t);
    }
    return t;
}

/* The wheel's length for these parameters: a power of two above the longest delay. */
static uint64_t wheel_slots(const keel_backoff_t *b)
{
    uint64_t longest = to_ms(fmax(fmax(b->cap_s, b->first_s), STORM_FIXED_MS / 1000.0)), n = 1;
    while (n <= longest)
        n <<= 1;
    return n;
}

/* A device past the horizon stays offline: the period is then reported as
 * incomplete. Returns 0 when t is outside the wheel (a bug of this file). */
static int enqueue(storm_sim_t *s, uint32_t id, uint64_t t)
{
    if (t > STORM_HORIZON_MS)
        return 1;
    if (t < s->now_ms || t - s->now_ms > s->q.wheel_mask)
        return 0;
    uint32_t *slot = &s->q.head[t & s->q.wheel_mask];
    s->q.next[id] = *slot;
    *slot = id;
    s->pending++;
    return 1;
}

/* Does the broker let this connect in? It takes `capacity` per 1 s bin. */
static int admit(storm_sim_t *s, uint64_t t)
{
    uint64_t sec = t / 1000;
    if (sec != s->cur_sec) {
        s->cur_sec = sec;
        s->accepted_in_sec = 0;
    }
    if (s->p->capacity != 0 && s->accepted_in_sec >= s->p->capacity) {
        s->refused++;
        return 0;
    }
    s->accepted_in_sec++;
    return 1;
}

static void came_online(storm_sim_t *s, uint64_t t)
{
    s->online++;
    if (s->online == s->need99)
        s->t99_ms = t;
    if (s->online == s->p->devices)
        s->t100_ms = t;
}

/* The first attempt of every device. */
static uint64_t first_attempt(storm_sim_t *s, uint32_t id)
{
    if (s->p->scen == SCEN_POWERCUT)
        return s->p->design == DESIGN_KEEL ? to_ms(rng_unit(s) * s->p->b.first_s) : 0;
    /* A and C: a connection that had been up for longer than stable_s drops
     * at t=0: the counter is reset, the first retry waits delay(0). */
    s->attempt[id] = 0;
    return retry_at(s, id, 0);
}

static int run_events(storm_sim_t *s)
{
    for (; s->pending > 0 && s->now_ms <= STORM_HORIZON_MS && s->events < STORM_EVENTS_MAX; s->now_ms++) {
        uint64_t t = s->now_ms;
        uint32_t *slot = &s->q.head[t & s->q.wheel_mask];
        /* A zero delay puts a device back into this slot: it is served again
         * within the same millisecond, as it would be. */
        while (*slot != STORM_NONE) {
            uint32_t id = *slot;
            *slot = s->q.next[id];
            s->pending--;
            s->events++;
            count_attempt(s, t);
            int accepted = admit(s, t);
            if (accepted && t >= s->kick_until_ms) {
                came_online(s, t);
                continue;
            }
            /* Refused, or kicked before stable_s: no reset. The baseline
             * resets at every CONNACK, the tight loop that stable_s prevents. */
            if (accepted && s->p->design == DESIGN_RESET)
                s->attempt[id] = 0;
            if (!enqueue(s, id, settle(s, id, retry_at(s, id, t))))
                return 0;
        }
    }
    return 1;
}

static double now_s(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0;
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void summarise(const storm_sim_t *s, storm_result_t *r)
{
    const storm_params_t *p = s->p;
    r->start_ms = p->scen == SCEN_OUTAGE ? s->down_until_ms : s->kick_until_ms;
    r->complete = s->online == p->devices;
    uint64_t end_ms = r->complete ? s->t100_ms : s->now_ms < STORM_HORIZON_MS ? s->now_ms : STORM_HORIZON_MS;
    if (end_ms < r->start_ms)
        end_ms = r->start_ms;
    uint64_t first = r->start_ms / 1000, last = end_ms / 1000;
    r->bins = (uint32_t)(last - first + 1);
    for (uint64_t i = first; i <= last; i++) {
        r->attempts_period += s->bins[i];
        if (s->bins[i] > r->peak)
            r->peak = s->bins[i];
    }
    r->mean = (double)r->attempts_period / r->bins;
    r->t99_s = s->online >= s->need99 ? (double)(s->t99_ms - r->start_ms) / 1000 : -1;
    r->t100_s = r->complete ? (double)(s->t100_ms - r->start_ms) / 1000 : -1;
    r->attempts_total = s->attempts;
    r->refused = s->refused;
    r->events = s->events;
    if (p->scen == SCEN_KICK) {
        /* Late in the kick period, when the counters have reached the cap. */
        uint32_t w = p->kick_s / 2;
        if (w > p->b.cap_s)
            w = (uint32_t)p->b.cap_s;
        if (w == 0)
            w = 1;
        uint64_t sum = 0;
        for (uint64_t i = p->kick_s - w; i < p->kick_s; i++)
            sum += s->bins[i];
        r->kick_window_s = w;
        r->kick_rate = (double)sum / w;
    }
}

/* The buffers are the caller's, sized for p->devices and wheel_slots(),
 * reused run after run. Returns 0 on a bug of this file. */
static int simulate(const storm_params_t *p, uint8_t *attempt, const storm_queue_t *q, uint32_t *bins,
                    storm_result_t *r)
{
    double t0 = now_s();
    storm_sim_t s = {.p = p, .attempt = attempt, .q = *q, .bins = bins, .cur_sec = UINT64_MAX};
    rng_seed(s.rng, p->seed);
    memset(attempt, 0, p->devices);
    memset(bins, 0, (STORM_HORIZON_S + 2) * sizeof *bins);
    for (uint64_t i = 0; i <= q->wheel_mask; i++)
        q->head[i] = STORM_NONE;
    s.down_until_ms = p->scen == SCEN_OUTAGE ? (uint64_t)p->down_s * 1000 : 0;
    s.kick_until_ms = p->scen == SCEN_KICK ? (uint64_t)p->kick_s * 1000 : 0;
    s.need99 = (uint32_t)(((uint64_t)p->devices * 99 + 99) / 100);
    /* The first attempts, played past the outage, all fall within one
     * longest delay of the broker's return (or of t=0): the wheel starts
     * there. */
    s.now_ms = s.down_until_ms;
    for (uint32_t id = 0; id < p->devices; id++) {
        uint64_t t = first_attempt(&s, id);
        if (t < s.now_ms)
            t = settle(&s, id, t);
        if (!enqueue(&s, id, t))
            return 0;
    }
    if (!run_events(&s))
        return 0;
    memset(r, 0, sizeof *r);
    summarise(&s, r);
    r->wall_s = now_s() - t0;
    return 1;
}

/* ------------------------------------------------------------------------ */

typedef struct {
    scenario_t scen;
    design_t design;
    int limited;
    storm_result_t r;
} storm_row_t;

#define STORM_ROWS_MAX 24

typedef struct {
    uint32_t devices, outage_s, kick_s, capacity;
    uint64_t seed;
    keel_backoff_t b;
    storm_row_t rows[STORM_ROWS_MAX];
    size_t nrows;
} storm_bench_t;

static const char *const scen_key[] = {"outage", "power_cut", "kick"};

static double peak_mean(const storm_result_t *r)
{
    return r->mean > 0 ? (double)r->peak / r->mean : 0;
}

static void fmt_capacity(char *out, size_t cap, const storm_bench_t *bn, int limited)
{
    if (limited)
        snprintf(out, cap, "%" PRIu32 "/s", bn->capacity);
    else
        snprintf(out, cap, "unlimited");
}

static void fmt_time(char *out, size_t cap, double t)
{
    if (t < 0)
        snprintf(out, cap, "never");
    else
        snprintf(out, cap, "%.1f s", t);
}

static void print_header(scenario_t scen)
{
    if (scen == SCEN_KICK)
        printf("%-24s %10s %8s %12s %12s %10s %10s\n", "design", "broker", "kicks", "attempts/s", "per device/s",
               "after kick", "100% online");
    else
        printf("%-24s %10s %9s %9s %9s %11s %11s %10s %10s\n", "design", "broker", "peak/s", "mean/s", "peak/mean",
               "99% online", "100% online", "attempts", "refused");
}

static void print_row(const storm_bench_t *bn, const storm_row_t *row)
{
    char capt[32], t99[32], t100[32];
    const storm_result_t *r = &row->r;
    fmt_capacity(capt, sizeof capt, bn, row->limited);
    fmt_time(t99, sizeof t99, r->t99_s);
    fmt_time(t100, sizeof t100, r->t100_s);
    if (row->scen == SCEN_KICK) {
        char kicks[32];
        snprintf(kicks, sizeof kicks, "%" PRIu32 " s", row->design == DESIGN_KEEL ? bn->kick_s :
                 (bn->kick_s < STORM_KICK_BASELINE_S ? bn->kick_s : STORM_KICK_BASELINE_S));
        printf("%-24s %10s %8s %12.0f %12.5f %10s %11s\n", design_name[row->design], capt, kicks, r->kick_rate,
               r->kick_rate / bn->devices, "", t100);
    } else {
        printf("%-24s %10s %9" PRIu64 " %9.0f %8.2fx %11s %11s %10" PRIu64 " %10" PRIu64 "\n",
               design_name[row->design], capt, r->peak, r->mean, peak_mean(r), t99, t100,
               r->attempts_period, r->refused);
    }
}

static json_t *row_json(const storm_bench_t *bn, const storm_row_t *row)
{
    const storm_result_t *r = &row->r;
    json_t *o = json_pack("{s:s, s:o, s:b, s:i, s:I, s:f, s:f, s:o, s:o, s:I, s:I, s:I, s:f}", "design",
                          design_key[row->design], "capacity_per_second",
                          row->limited ? json_integer(bn->capacity) : json_null(), "complete", r->complete,
                          "period_seconds", (json_int_t)r->bins, "peak_per_second", (json_int_t)r->peak,
                          "mean_per_second", r->mean, "peak_mean", peak_mean(r),
                          "online_99_seconds", r->t99_s < 0 ? json_null() : json_real(r->t99_s),
                          "online_100_seconds", r->t100_s < 0 ? json_null() : json_real(r->t100_s),
                          "attempts_period", (json_int_t)r->attempts_period, "attempts_total",
                          (json_int_t)r->attempts_total, "refused", (json_int_t)r->refused, "wall_seconds",
                          r->wall_s);
    if (o != NULL && row->scen == SCEN_KICK) {
        json_object_set_new(o, "kick_seconds",
                            json_integer(row->design == DESIGN_KEEL || bn->kick_s < STORM_KICK_BASELINE_S
                                             ? bn->kick_s
                                             : STORM_KICK_BASELINE_S));
        json_object_set_new(o, "kick_rate_per_second", json_real(r->kick_rate));
        json_object_set_new(o, "kick_rate_window_seconds", json_integer(r->kick_window_s));
    }
    return o;
}

static const storm_row_t *keel_outage(const storm_bench_t *bn, int limited)
{
    for (size_t i = 0; i < bn->nrows; i++) {
        const storm_row_t *row = &bn->rows[i];
        if (row->scen == SCEN_OUTAGE && row->design == DESIGN_KEEL && row->limited == limited)
            return row;
    }
    return NULL;
}

static double keel_ratio(const storm_bench_t *bn, int limited)
{
    const storm_row_t *row = keel_outage(bn, limited);
    return row != NULL ? peak_mean(&row->r) : 0;
}

static int keel_passes(const storm_bench_t *bn)
{
    for (int limited = 0; limited <= 1; limited++) {
        const storm_row_t *row = keel_outage(bn, limited);
        if (row == NULL || !row->r.complete || peak_mean(&row->r) > STORM_GOAL_RATIO)
            return 0;
    }
    return 1;
}

static char *bench_json(const storm_bench_t *bn)
{
    json_t *j = json_pack("{s:i, s:I, s:{s:f, s:f, s:f, s:f}, s:i, s:f, s:i, s:i}", "devices", (int)bn->devices,
                          "seed", (json_int_t)bn->seed, "backoff", "base_s", bn->b.base_s, "cap_s", bn->b.cap_s,
                          "first_connect_s", bn->b.first_s, "stable_s", bn->b.stable_s, "capacity_per_second",
                          (int)bn->capacity, "goal_peak_mean_max", STORM_GOAL_RATIO, "outage_seconds",
                          (int)bn->outage_s, "kick_seconds", (int)bn->kick_s);
    if (j == NULL)
        return NULL;
    for (int sc = SCEN_OUTAGE; sc <= SCEN_KICK; sc++) {
        json_t *a = json_array();
        for (size_t i = 0; i < bn->nrows; i++)
            if (bn->rows[i].scen == (scenario_t)sc)
                json_array_append_new(a, row_json(bn, &bn->rows[i]));
        json_object_set_new(j, scen_key[sc], a);
    }
    json_object_set_new(j, "peak_mean_limited", json_real(keel_ratio(bn, 1)));
    json_object_set_new(j, "peak_mean_unlimited", json_real(keel_ratio(bn, 0)));
    json_object_set_new(j, "pass", json_boolean(keel_passes(bn)));
    char *txt = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(j);
    return txt;
}

static void print_text(const storm_bench_t *bn)
{
    static const char *const title[] = {
        "A. broker outage",
        "B. power cut: the whole fleet boots at t=0",
        "C. kick after CONNACK",
    };
    printf("link_storm: %" PRIu32 " devices; backoff base %.0f s, cap %.0f s, first connect %.0f s, "
           "stable %.0f s; seed %" PRIu64 "\n",
           bn->devices, bn->b.base_s, bn->b.cap_s, bn->b.first_s, bn->b.stable_s, bn->seed);
    printf("attempt = a connect reaching the broker, refused or not; 1 s bins from the start of the period;\n"
           "peak = busiest bin; mean = attempts / bins from the start to the last device online\n");
    for (int sc = SCEN_OUTAGE; sc <= SCEN_KICK; sc++) {
        printf("\n%s", title[sc]);
        if (sc == SCEN_OUTAGE)
            printf(" for %" PRIu32 " s: figures from its return to the last device online\n", bn->outage_s);
        else if (sc == SCEN_KICK)
            printf(" for %" PRIu32 " s: attempts/s over the last min(kicks/2, cap) s of it;\n"
                   "  keel's expectation at the cap: N / (0.75 cap) = %.0f/s; 100%% online counted from the "
                   "last kick\n",
                   bn->kick_s, bn->devices / (0.75 * bn->b.cap_s));
        else
            printf(": figures from power-on to the last device online\n");
        print_header((scenario_t)sc);
        for (size_t i = 0; i < bn->nrows; i++)
            if (bn->rows[i].scen == (scenario_t)sc)
                print_row(bn, &bn->rows[i]);
    }
    printf("\nverdict: keel full jitter, broker outage: peak/mean %.2fx (%" PRIu32 "/s), %.2fx (unlimited)"
           "  (goal <= %.2fx)  %s\n",
           keel_ratio(bn, 1), bn->capacity, keel_ratio(bn, 0), STORM_GOAL_RATIO,
           keel_passes(bn) ? "PASS" : "MISS");
}

static int add_run(storm_bench_t *bn, scenario_t scen, design_t design, int limited, uint8_t *attempt,
                   const storm_queue_t *q, uint32_t *bins)
{
    if (bn->nrows >= STORM_ROWS_MAX)
        return 0;
    storm_params_t p = {.scen = scen,
                        .design = design,
                        .devices = bn->devices,
                        .capacity = limited ? bn->capacity : 0,
                        .down_s = bn->outage_s,
                        .kick_s = bn->kick_s,
                        .b = bn->b,
                        .seed = bn->seed};
    if (scen == SCEN_KICK && design != DESIGN_KEEL && p.kick_s > STORM_KICK_BASELINE_S)
        p.kick_s = STORM_KICK_BASELINE_S;
    storm_row_t *row = &bn->rows[bn->nrows++];
    row->scen = scen;
    row->design = design;
    row->limited = limited;
    if (!simulate(&p, attempt, q, bins, &row->r)) {
        fputs("link_storm: an attempt fell outside the timing wheel\n", stderr);
        return 0;
    }
    return 1;
}

static const char usage[] =
    "usage: link_storm [--devices N] [--outage S] [--kick S] [--capacity C] [--seed N]\n"
    "                  [--first-connect S] [--backoff-base S] [--smoke] [--json]\n"
    "                  [--json-file PATH]\n"
    "\n"
    "Simulates reconnect storms of N devices (default 1000000; --smoke 100000) with\n"
    "the real keel_backoff_delay and the [link] defaults, against baselines:\n"
    "  A  the broker is down for S seconds (--outage, default 600)\n"
    "  B  the whole fleet powers up at once\n"
    "  C  the broker drops every connection after CONNACK for S seconds (--kick, 900)\n"
    "each against a broker that accepts C connects/s (--capacity, default 20000) and\n"
    "an unlimited one. --first-connect and --backoff-base change [link]\n"
    "first_connect (30, 0..3600) and backoff_base (1, 1..300; the cap stays 300).\n"
    "--json prints one JSON document instead of the tables;\n"
    "--json-file also writes it to PATH. Exit 1 when keel's peak/mean in A is above 2.\n";

static int parse_ulong(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0' || v < min || v > max)
        return 0;
    *out = (unsigned long)v;
    return 1;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"devices", required_argument, NULL, 'n'},
                                         {"outage", required_argument, NULL, 'o'},
                                         {"kick", required_argument, NULL, 'k'},
                                         {"capacity", required_argument, NULL, 'c'},
                                         {"seed", required_argument, NULL, 's'},
                                         {"first-connect", required_argument, NULL, 'f'},
                                         {"backoff-base", required_argument, NULL, 'b'},
                                         {"smoke", no_argument, NULL, 'S'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"json-file", required_argument, NULL, 'J'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    storm_bench_t *bn = calloc(1, sizeof *bn);
    if (bn == NULL) {
        fputs("link_storm: out of memory\n", stderr);
        return EXIT_FAILURE;
    }
    bn->outage_s = STORM_OUTAGE_DEFAULT;
    bn->kick_s = STORM_KICK_DEFAULT;
    bn->capacity = STORM_CAPACITY_DEFAULT;
    bn->seed = 1;
    bn->b = (keel_backoff_t){STORM_BASE_S, STORM_CAP_S, STORM_FIRST_S, STORM_STABLE_S};
    const char *json_file = NULL;
    int json = 0, smoke = 0, c;
    unsigned long devices = 0, v;
    int li = -1;
    while ((c = getopt_long(argc, argv, "", opts, &li)) != -1) {
        int ok = 1;
        v = 0;
        switch (c) {
        case 'n': ok = parse_ulong(optarg, 1, STORM_DEVICES_MAX, &devices); break;
        case 'o': ok = parse_ulong(optarg, 1, STORM_SECONDS_MAX, &v); bn->outage_s = (uint32_t)v; break;
        case 'k': ok = parse_ulong(optarg, 1, STORM_SECONDS_MAX, &v); bn->kick_s = (uint32_t)v; break;
        case 'c': ok = parse_ulong(optarg, 1, STORM_CAPACITY_MAX, &v); bn->capacity = (uint32_t)v; break;
        case 's': ok = parse_ulong(optarg, 0, ULONG_MAX, &v); bn->seed = v; break;
        case 'f': ok = parse_ulong(optarg, 0, STORM_FIRST_MAX, &v); bn->b.first_s = (double)v; break;
        case 'b': ok = parse_ulong(optarg, 1, STORM_BASE_MAX, &v); bn->b.base_s = (double)v; break;
        case 'S': smoke = 1; break;
        case 'j': json = 1; break;
        case 'J': json_file = optarg; break;
        case 'h': fputs(usage, stdout); free(bn); return EXIT_SUCCESS;
        default: ok = 0; break;
        }
        if (!ok) {
            if (c != '?' && li >= 0)
                fprintf(stderr, "link_storm: bad value for --%s: %s\n", opts[li].name, optarg);
            fputs(usage, stderr);
            free(bn);
            return EXIT_USAGE;
        }
        li = -1;
    }
    if (optind != argc) {
        fputs(usage, stderr);
        free(bn);
        return EXIT_USAGE;
    }
    bn->devices = devices != 0 ? (uint32_t)devices : smoke ? STORM_DEVICES_SMOKE : STORM_DEVICES_DEFAULT;

    storm_queue_t q = {.wheel_mask = wheel_slots(&bn->b) - 1};
    uint8_t *attempt = malloc(bn->devices);
    q.next = malloc((size_t)bn->devices * sizeof *q.next);
    q.head = malloc((size_t)(q.wheel_mask + 1) * sizeof *q.head);
    uint32_t *bins = malloc((STORM_HORIZON_S + 2) * sizeof *bins);
    int rc = EXIT_FAILURE;
    if (attempt == NULL || q.next == NULL || q.head == NULL || bins == NULL) {
        fputs("link_storm: out of memory\n", stderr);
        goto out;
    }
    static const design_t designs[][4] = {
        [SCEN_OUTAGE] = {DESIGN_KEEL, DESIGN_EXP, DESIGN_FIXED, DESIGN_FULLCAP},
        [SCEN_POWERCUT] = {DESIGN_KEEL, DESIGN_EXP, DESIGN_FIXED},
        [SCEN_KICK] = {DESIGN_KEEL, DESIGN_RESET, DESIGN_FIXED},
    };
    static const size_t ndesigns[] = {4, 3, 3};
    for (int sc = SCEN_OUTAGE; sc <= SCEN_KICK; sc++)
        for (int limited = 1; limited >= 0; limited--)
            for (size_t d = 0; d < ndesigns[sc]; d++)
                if (!add_run(bn, (scenario_t)sc, designs[sc][d], limited, attempt, &q, bins))
                    goto out;
    char *txt = bench_json(bn);
    if (txt == NULL) {
        fputs("link_storm: out of memory\n", stderr);
        goto out;
    }
    if (json_file != NULL) {
        FILE *f = fopen(json_file, "w");
        int w = f != NULL && fprintf(f, "%s\n", txt) >= 0;
        if (f != NULL && fclose(f) != 0)
            w = 0;
        if (!w) {
            fprintf(stderr, "link_storm: could not write %s\n", json_file);
            free(txt);
            goto out;
        }
    }
    if (json)
        printf("%s\n", txt);
    else
        print_text(bn);
    free(txt);
    rc = keel_passes(bn) ? EXIT_SUCCESS : EXIT_MISS;
out:
    free(attempt);
    free(q.next);
    free(q.head);
    free(bins);
    free(bn);
    return rc;
}

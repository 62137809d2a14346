/*
 * thermostat: an example product app on libkeel's client API (docs/ipc.md).
 *
 * A simulated room (it drifts toward the outside temperature; the heater
 * warms it) regulated with hysteresis around a setpoint. Every --interval
 * seconds it publishes {"temperature","setpoint","heating"} through keeld;
 * it takes the command "set" {"setpoint":N} (5..30) and keeps the setpoint
 * in keeld's product state. Regulation never waits on keeld: every request
 * has a short timeout, and when keeld is gone the thermostat goes on alone
 * and reconnects with backoff. --status FILE shows what it is doing.
 */
#include "keel/ipc.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SETPOINT_MIN 5.0
#define SETPOINT_MAX 30.0
#define HYSTERESIS 0.5      /* degrees either side of the setpoint */
#define LOSS_PER_S 0.02     /* share of the indoor-outdoor difference lost per second */
#define HEAT_PER_S 0.4      /* degrees per second the heater adds */
#define TICK_MS 200         /* control step */
#define REQUEST_MS 500      /* the longest one request to keeld may hold the loop */
#define BACKOFF_MIN_S 0.5
#define BACKOFF_MAX_S 30.0
#define STATUS_MAX 512

static const char usage[] =
    "usage: thermostat --socket PATH [options]\n"
    "\n"
    "An example product app: a simulated room heated with hysteresis around a\n"
    "setpoint. Publishes {\"temperature\",\"setpoint\",\"heating\"} through keeld every\n"
    "interval, takes the command \"set\" {\"setpoint\":N} (5 to 30), keeps the\n"
    "setpoint in keeld's product state, and goes on regulating when keeld is gone.\n"
    "\n"
    "options:\n"
    "  --socket PATH      keeld's product-app socket\n"
    "  --interval SECS    seconds between telemetry messages (default 5)\n"
    "  --setpoint C       the setpoint until keeld's state has one (default 20)\n"
    "  --outside C        the simulated outside temperature (default 10)\n"
    "  --initial C        the simulated room's starting temperature (default 16)\n"
    "  --status FILE      write the current reading there (JSON, atomically)\n"
    "  -h, --help         this text\n"
    "SIGTERM or SIGINT stops it (exit 0).\n";

typedef struct {
    double temperature, setpoint, outside;
    bool heating;
} room_t;

typedef struct {
    const char *socket;
    const char *status;
    keel_ipc_client_t *c;
    double next_connect;
    double backoff;
    unsigned long published, missed, commands;
    room_t room;
} app_t;

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void room_step(room_t *r, double dt)
{
    r->temperature += dt * (LOSS_PER_S * (r->outside - r->temperature) + (r->heating ? HEAT_PER_S : 0.0));
    /* Hysteresis: the heater does not chatter around the setpoint. */
    if (r->temperature < r->setpoint - HYSTERESIS)
        r->heating = true;
    else if (r->temperature > r->setpoint + HYSTERESIS)
        r->heating = false;
}

static double round1(double v)
{
    return round(v * 10.0) / 10.0;
}

static void disconnect(app_t *a, const char *why)
{
    if (a->c == NULL)
        return;
    keel_log(KEEL_LOG_WARN, "keeld connection lost (%s); regulating alone, reconnecting", why);
    keel_ipc_close(a->c);
    a->c = NULL;
    a->backoff = BACKOFF_MIN_S;
    a->next_connect = keel_now() + a->backoff;
}

static bool setpoint_ok(json_t *v)
{
    return json_is_number(v) && json_number_value(v) >= SETPOINT_MIN && json_number_value(v) <= SETPOINT_MAX;
}

static void save_setpoint(app_t *a)
{
    json_t *patch = json_pack("{s:f}", "setpoint", a->room.setpoint);
    json_t *state = NULL;
    if (patch != NULL && keel_ipc_state_set(a->c, patch, &state) != KEEL_OK)
        disconnect(a, keel_error_message());
    json_decref(state);
    json_decref(patch);
}

static void try_connect(app_t *a)
{
    keel_ipc_client_t *c = NULL;
    if (keel_ipc_connect(a->socket, &c) != KEEL_OK) {
        /* full jitter: many devices' apps do not retry in step */
        a->backoff = fmin(a->backoff * 2.0, BACKOFF_MAX_S);
        /* NOLINTNEXTLINE(cert-msc30-c): a retry jitter, not a secret */
        a->next_connect = keel_now() + a->backoff * (0.5 + 0.5 * ((double)rand() / RAND_MAX));
        return;
    }
    keel_ipc_set_timeout(c, REQUEST_MS);
    json_t *state = NULL;
    if (keel_ipc_listen(c) != KEEL_OK || keel_ipc_state_get(c, &state) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "keeld: %s", keel_error_message());
        keel_ipc_close(c);
        a->backoff = fmin(a->backoff * 2.0, BACKOFF_MAX_S);
        a->next_connect = keel_now() + a->backoff;
        return;
    }
    a->c = c;
    a->backoff = BACKOFF_MIN_S;
    keel_log(KEEL_LOG_INFO, "connected to keeld");
    /* keeld's state outlives the app: a setpoint set from the cloud stays. */
    json_t *sp = json_object_get(state, "setpoint");
    if (setpoint_ok(sp))
        a->room.setpoint = json_number_value(sp);
    else
        save_setpoint(a);
    json_decref(state);
}

static void handle_command(app_t *a, const char *name, json_t *payload)
{
    a->commands++;
    json_t *sp = json_object_get(payload, "setpoint");
    if (strcmp(name, "set") != 0 || !json_is_object(payload) || json_object_size(payload) != 1 || !setpoint_ok(sp)) {
        keel_log(KEEL_LOG_WARN, "ignored a command \"%s\": only \"set\" {\"setpoint\": %g..%g} is known", name,
                 SETPOINT_MIN, SETPOINT_MAX);
        return;
    }
    a->room.setpoint = json_number_value(sp);
    keel_log(KEEL_LOG_INFO, "setpoint now %.1f", a->room.setpoint);
    save_setpoint(a);
}

static void drain_commands(app_t *a)
{
    while (a->c != NULL) {
        char *name = NULL;
        json_t *payload = NULL;
        keel_status_t st = keel_ipc_next_command(a->c, 0, &name, &payload);
        if (st == KEEL_ERR_NOT_FOUND)
            return;
        if (st != KEEL_OK) {
            disconnect(a, keel_error_message());
            return;
        }
        handle_command(a, name, payload);
        free(name);
        json_decref(payload);
    }
}

static void publish(app_t *a)
{
    if (a->c == NULL) {
        /* keeld's outbox covers a cloud outage; with keeld itself gone the
         * reading is not kept (the next one supersedes it). */
        a->missed++;
        return;
    }
    json_t *t = json_pack("{s:f, s:f, s:b}", "temperature", round1(a->room.temperature), "setpoint",
                          a->room.setpoint, "heating", a->room.heating);
    uint64_t seq = 0;
    if (t == NULL) {
        a->missed++;
        return;
    }
    keel_status_t st = keel_ipc_publish(a->c, t, NULL, &seq);
    json_decref(t);
    if (st == KEEL_OK) {
        a->published++;
    } else {
        a->missed++;
        keel_log(KEEL_LOG_WARN, "publish: %s", keel_error_message());
        if (st == KEEL_ERR_IO)
            disconnect(a, keel_error_message());
    }
}

static void write_status(const app_t *a)
{
    if (a->status == NULL)
        return;
    char buf[STATUS_MAX];
    int n = snprintf(buf, sizeof buf,
                     "{\"temperature\":%.1f,\"setpoint\":%.1f,\"heating\":%s,\"connected\":%s,"
                     "\"published\":%lu,\"missed\":%lu,\"commands\":%lu,\"time\":%lld}\n",
                     round1(a->room.temperature), a->room.setpoint, a->room.heating ? "true" : "false",
                     a->c != NULL ? "true" : "false", a->published, a->missed, a->commands,
                     (long long)time(NULL));
    if (n < 0 || (size_t)n >= sizeof buf || keel_file_write_atomic(a->status, buf, (size_t)n, 0644) != KEEL_OK)
        keel_log(KEEL_LOG_WARN, "status file %s: %s", a->status, keel_error_message());
}

static int parse_temp(const char *opt, const char *s, double min, double max, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= min && v <= max)) {
        fprintf(stderr, "thermostat: %s needs a number from %g to %g (see 'thermostat --help')\n", opt, min, max);
        return 0;
    }
    *out = v;
    return 1;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"socket", required_argument, NULL, 's'},
                                         {"interval", required_argument, NULL, 'i'},
                                         {"setpoint", required_argument, NULL, 'p'},
                                         {"outside", required_argument, NULL, 'o'},
                                         {"initial", required_argument, NULL, 't'},
                                         {"status", required_argument, NULL, 'f'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    app_t a = {.backoff = BACKOFF_MIN_S, .room = {.temperature = 16.0, .setpoint = 20.0, .outside = 10.0}};
    double interval = 5.0;
    int c;
    keel_log_set_prefix("thermostat");
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's': a.socket = optarg; break;
        case 'f': a.status = optarg; break;
        case 'i':
            if (!parse_temp("--interval", optarg, 0.1, 86400, &interval))
                return 2;
            break;
        case 'p':
            if (!parse_temp("--setpoint", optarg, SETPOINT_MIN, SETPOINT_MAX, &a.room.setpoint))
                return 2;
            break;
        case 'o':
            if (!parse_temp("--outside", optarg, -50, 50, &a.room.outside))
                return 2;
            break;
        case 't':
            if (!parse_temp("--initial", optarg, -50, 50, &a.room.temperature))
                return 2;
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind != argc || a.socket == NULL) {
        fprintf(stderr, "thermostat: --socket PATH is required, and nothing else (see 'thermostat --help')\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: poll() returns at once */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        return 1;
    sa.sa_handler = SIG_IGN;
    (void)sigaction(SIGPIPE, &sa, NULL);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());

    double last = keel_now();
    double next_publish = last;
    while (!stop) {
        double now = keel_now();
        room_step(&a.room, now - last);
        last = now;
        if (a.c == NULL && now >= a.next_connect)
            try_connect(&a);
        drain_commands(&a);
        if (now >= next_publish) {
            publish(&a);
            drain_commands(&a);
            write_status(&a);
            next_publish += interval;
            if (next_publish < now)
                next_publish = now + interval;
        }
        /* Sleep until the next control step, waking for commands. */
        struct pollfd p = {.fd = keel_ipc_fd(a.c), .events = POLLIN};
        if (poll(&p, 1, TICK_MS) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)))
            drain_commands(&a);
    }
    write_status(&a);
    keel_ipc_close(a.c);
    keel_log(KEEL_LOG_INFO, "stopped (%lu published, %lu missed)", a.published, a.missed);
    return 0;
}

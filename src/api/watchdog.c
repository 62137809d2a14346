/*
 * The systemd watchdog of a daemon's event loop (keeld, keel-fleetd). With
 * WatchdogSec= in the unit, systemd sets WATCHDOG_USEC and kills (and, with
 * Restart=, restarts) a service that stays silent for that long. The ping
 * runs on the loop itself, every third of the interval, so a loop that hangs
 * stops pinging; the daemon's `alive` check covers its other threads.
 */
#include "keel/api.h"

#include <event2/event.h>

#include <stdlib.h>

struct keel_watchdog {
    struct event *ev;
    bool (*alive)(void *arg);
    void *arg;
    bool withheld; /* the last ping was withheld (logged once per episode) */
};

static void on_ping(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    keel_watchdog_t *w = arg;
    if (w->alive != NULL && !w->alive(w->arg)) {
        if (!w->withheld)
            keel_log(KEEL_LOG_ERROR, "watchdog: a worker is stuck; the ping to systemd is withheld");
        w->withheld = true;
        return;
    }
    if (w->withheld)
        keel_log(KEEL_LOG_WARN, "watchdog: the workers turn again; pinging");
    w->withheld = false;
    keel_notify("WATCHDOG=1");
}

keel_status_t keel_watchdog_start(struct event_base *base, bool (*alive)(void *arg), void *arg,
                                  keel_watchdog_t **out)
{
    *out = NULL;
    uint64_t usec = keel_notify_watchdog_usec();
    if (usec == 0)
        return KEEL_OK;
    keel_watchdog_t *w = calloc(1, sizeof *w);
    if (w == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "watchdog: out of memory");
    w->alive = alive;
    w->arg = arg;
    uint64_t every = usec / 3 > 0 ? usec / 3 : 1;
    struct timeval tv = {.tv_sec = (time_t)(every / 1000000), .tv_usec = (suseconds_t)(every % 1000000)};
    w->ev = event_new(base, -1, EV_PERSIST, on_ping, w);
    if (w->ev == NULL || event_add(w->ev, &tv) != 0) {
        keel_watchdog_free(w);
        return keel_errorf(KEEL_ERR_NOMEM, "watchdog: cannot arm the timer");
    }
    keel_log(KEEL_LOG_INFO, "watchdog: systemd expects a ping every %llu ms; pinging every %llu ms",
             (unsigned long long)(usec / 1000), (unsigned long long)(every / 1000));
    keel_notify("WATCHDOG=1");
    *out = w;
    return KEEL_OK;
}

void keel_watchdog_free(keel_watchdog_t *w)
{
    if (w == NULL)
        return;
    if (w->ev != NULL)
        event_free(w->ev);
    free(w);
}

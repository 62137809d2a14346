/* Worker threads whose completions come back to the libevent loop. */
#include "worker.h"

#include <event2/event.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define WORKERS_MAX 4

struct keel_workers {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    keel_job_t *queue, *queue_tail; /* waiting to run */
    keel_job_t *done;               /* ran, waiting for the loop */
    unsigned queued, queue_max, pending;
    bool stop;
    int efd;
    struct event *ev;
    pthread_t threads[WORKERS_MAX];
    unsigned n_threads;
};

static void *worker_main(void *arg)
{
    keel_workers_t *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stop && w->queue == NULL)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stop)
            break;
        keel_job_t *job = w->queue;
        w->queue = job->next;
        if (w->queue == NULL)
            w->queue_tail = NULL;
        w->queued--;
        pthread_mutex_unlock(&w->mu);
        job->run(job);
        pthread_mutex_lock(&w->mu);
        job->next = w->done;
        w->done = job;
        uint64_t one = 1;
        /* An eventfd write only fails when the counter would overflow. */
        if (write(w->efd, &one, sizeof one) != (ssize_t)sizeof one)
            keel_log(KEEL_LOG_ERROR, "workers: eventfd: %s", strerror(errno));
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Loop thread: runs the done callbacks of finished jobs. */
static void drain(keel_workers_t *w)
{
    pthread_mutex_lock(&w->mu);
    keel_job_t *list = w->done;
    w->done = NULL;
    pthread_mutex_unlock(&w->mu);
    /* The list is newest first; answer in the order the work finished. */
    keel_job_t *rev = NULL;
    while (list != NULL) {
        keel_job_t *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev != NULL) {
        keel_job_t *next = rev->next;
        w->pending--;
        rev->done(rev);
        rev = next;
    }
}

static void on_event(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    uint64_t n;
    if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN)
        keel_log(KEEL_LOG_ERROR, "workers: eventfd: %s", strerror(errno));
    drain(arg);
}

keel_status_t keel_workers_start(struct event_base *base, unsigned n, unsigned queue_max, keel_workers_t **out)
{
    if (base == NULL || n == 0 || n > WORKERS_MAX || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "workers: bad arguments");
    keel_workers_t *w = calloc(1, sizeof *w);
    if (w == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    w->queue_max = queue_max;
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0) {
        free(w);
        return keel_errorf(KEEL_ERR_IO, "eventfd: %s", strerror(errno));
    }
    if (pthread_mutex_init(&w->mu, NULL) != 0 || pthread_cond_init(&w->cv, NULL) != 0) {
        close(w->efd);
        free(w);
        return keel_errorf(KEEL_ERR_NOMEM, "workers: cannot make a mutex");
    }
    w->ev = event_new(base, w->efd, EV_READ | EV_PERSIST, on_event, w);
    if (w->ev == NULL || event_add(w->ev, NULL) != 0) {
        keel_workers_free(w);
        return keel_errorf(KEEL_ERR_NOMEM, "workers: cannot watch the eventfd");
    }
    for (unsigned i = 0; i < n; i++) {
        int err = pthread_create(&w->threads[i], NULL, worker_main, w);
        if (err != 0) {
            keel_workers_free(w);
            return keel_errorf(KEEL_ERR_NOMEM, "workers: pthread_create: %s", strerror(err));
        }
        w->n_threads++;
    }
    *out = w;
    return KEEL_OK;
}

keel_status_t keel_workers_submit(keel_workers_t *w, keel_job_t *job)
{
    pthread_mutex_lock(&w->mu);
    if (w->stop || w->queued >= w->queue_max) {
        pthread_mutex_unlock(&w->mu);
        return keel_errorf(KEEL_ERR_TOO_LARGE, "workers: queue full");
    }
    job->next = NULL;
    job->cancelled = false;
    if (w->queue_tail != NULL)
        w->queue_tail->next = job;
    else
        w->queue = job;
    w->queue_tail = job;
    w->queued++;
    w->pending++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return KEEL_OK;
}

bool keel_workers_full(keel_workers_t *w)
{
    pthread_mutex_lock(&w->mu);
    bool full = w->stop || w->queued >= w->queue_max;
    pthread_mutex_unlock(&w->mu);
    return full;
}

unsigned keel_workers_pending(keel_workers_t *w)
{
    return w != NULL ? w->pending : 0;
}

void keel_workers_free(keel_workers_t *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    keel_job_t *cancelled = w->queue;
    w->queue = w->queue_tail = NULL;
    w->queued = 0;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (unsigned i = 0; i < w->n_threads; i++)
        pthread_join(w->threads[i], NULL);
    drain(w);
    while (cancelled != NULL) {
        keel_job_t *next = cancelled->next;
        cancelled->cancelled = true;
        w->pending--;
        cancelled->done(cancelled);
        cancelled = next;
    }
    if (w->ev != NULL)
        event_free(w->ev);
    close(w->efd);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

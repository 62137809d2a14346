/*
 * Worker threads for keeld's loop: slow work (Argon2id, an install) runs on
 * a thread; its completion comes back to the loop thread through an eventfd,
 * so every callback that touches evhttp or the auth state runs on the loop.
 * Internal to the api module.
 */
#ifndef KEEL_API_WORKER_H
#define KEEL_API_WORKER_H

#include "keel/base.h"

#include <stdbool.h>

struct event_base;

typedef struct keel_job keel_job_t;
struct keel_job {
    void (*run)(keel_job_t *job);  /* on a worker thread */
    void (*done)(keel_job_t *job); /* on the loop thread, once run returned or the pool stopped */
    bool cancelled;                /* done without run: the pool is stopping */
    keel_job_t *next;
};

typedef struct keel_workers keel_workers_t;

/* n threads, at most `queue_max` jobs waiting beyond the running ones. */
keel_status_t keel_workers_start(struct event_base *base, unsigned n, unsigned queue_max,
                                 keel_workers_t **out) KEEL_MUST_CHECK;
/* KEEL_ERR_TOO_LARGE when the queue is full (the job is not taken). */
keel_status_t keel_workers_submit(keel_workers_t *w, keel_job_t *job) KEEL_MUST_CHECK;
/* true when a submit now would be refused (every thread busy, queue full). */
bool keel_workers_full(keel_workers_t *w);
/* Jobs submitted whose done has not run yet. */
unsigned keel_workers_pending(keel_workers_t *w);
/* Lets running jobs finish, cancels queued ones, calls every outstanding
 * done on this (the loop) thread, joins the threads and frees. */
void keel_workers_free(keel_workers_t *w);

#endif

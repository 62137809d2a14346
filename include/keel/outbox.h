/*
 * keel/outbox.h - store and forward for the cloud link (5.9-1, 5.9-2).
 *
 * Telemetry, events and alerts are queued in the vault's database (table
 * `outbox`, payloads sealed field by field) before anything is sent, so a
 * broker outage, a kill -9 or a power cut loses nothing that was accepted.
 * Every message gets the next per-device sequence number (1, 2, ...; never
 * reused, also not after a factory reset), so the receiver drops duplicates
 * by (device, seq): delivery is at least once from the outbox, exactly once
 * after the receiver's check.
 *
 * Bounded by count and bytes. When a new message does not fit, the oldest
 * telemetry is dropped first; events only when no telemetry is left; alerts
 * last. A new message never pushes out one of a more important kind: a new
 * telemetry message only displaces older telemetry, a new event telemetry and
 * older events, a new alert anything. When even that cannot make room, the
 * new message is refused (KEEL_ERR_TOO_LARGE) and gets no seq. What was
 * dropped after it was queued is counted (persistently) and every message
 * sent carries the totals, so the receiver learns of the loss: the gaps in
 * the seqs it sees are exactly the dropped messages.
 *
 * Single-threaded: one outbox per vault, used from keeld's loop.
 */
#ifndef KEEL_OUTBOX_H
#define KEEL_OUTBOX_H

#include "keel/base.h"
#include "keel/vault.h"

typedef struct keel_outbox keel_outbox_t;

typedef enum {
    KEEL_OUTBOX_TELEMETRY = 0, /* topic .../telemetry; dropped first */
    KEEL_OUTBOX_EVENT = 1,     /* topic .../events */
    KEEL_OUTBOX_ALERT = 2,     /* topic .../events, "kind":"alert"; dropped last */
} keel_outbox_kind_t;
#define KEEL_OUTBOX_KINDS 3

/* Largest body one message may carry (the JSON object given to put). */
#define KEEL_OUTBOX_BODY_MAX (16u * 1024u)
/* Largest client message id (idempotency key; printable ASCII, no spaces). */
#define KEEL_OUTBOX_MSGID_MAX 64
/* Longest device id (visible ASCII without '"' and '\\'; it goes into every envelope). */
#define KEEL_OUTBOX_DEVICE_ID_MAX 128
/* Largest envelope keel_outbox_next produces. */
#define KEEL_OUTBOX_ENVELOPE_MAX (KEEL_OUTBOX_BODY_MAX + 512u)

typedef struct {
    uint64_t max_messages; /* [outbox] max_messages */
    uint64_t max_bytes;    /* [outbox] max_bytes: sum of the stored body sizes */
} keel_outbox_limits_t;

typedef struct {
    uint64_t pending;                       /* messages waiting */
    uint64_t pending_bytes;
    uint64_t next_seq;                      /* the seq the next put gets */
    uint64_t dropped[KEEL_OUTBOX_KINDS];    /* dropped for space (or corrupt), ever */
    uint64_t corrupt;                       /* rows that no longer opened, ever (also in dropped) */
    uint64_t acked;                         /* delivered since open */
} keel_outbox_stats_t;

/* One message ready to send. The envelope is a JSON object:
 * {"device":ID,"seq":N,"ts":UNIX,"kind":"telemetry|event|alert",
 *  "data":BODY[,"dropped":{"telemetry":N,"event":N,"alert":N}]}
 * ("dropped" present once anything was dropped). */
typedef struct {
    uint64_t seq;
    keel_outbox_kind_t kind;
    char envelope[KEEL_OUTBOX_ENVELOPE_MAX];
    size_t len;
} keel_outbox_msg_t;

/* Opens the outbox of `v` (which must outlive it). `device_id` goes into every
 * envelope. Both limits must be nonzero (KEEL_ERR_ARG). */
keel_status_t keel_outbox_open(keel_vault_t *v, const char *device_id, keel_outbox_limits_t limits,
                               keel_outbox_t **out) KEEL_MUST_CHECK;
void keel_outbox_close(keel_outbox_t *o);
/* Applies from the next put on (nothing is dropped now); a zero limit is ignored. */
void keel_outbox_set_limits(keel_outbox_t *o, keel_outbox_limits_t limits);

/*
 * Queues one message. `body` is a JSON object's text (len bytes, at most
 * KEEL_OUTBOX_BODY_MAX; it is not parsed again, the caller validated it).
 * `msgid` (may be NULL) makes the put idempotent: while a message with that
 * id is still pending, putting it again returns its seq with *dup = true and
 * queues nothing. Durable when this returns KEEL_OK outside a batch, or when
 * keel_outbox_commit returns KEEL_OK inside one.
 * KEEL_ERR_TOO_LARGE: the body alone exceeds a limit, or the queue is full
 * of messages this one may not push out (nothing changed; see above).
 * KEEL_ERR_FORMAT: the body does not start with '{', end with '}', or holds
 * a NUL byte. KEEL_ERR_ARG: bad kind or msgid. Inside a batch a failed put
 * leaves the batch's other puts in place.
 */
keel_status_t keel_outbox_put(keel_outbox_t *o, keel_outbox_kind_t kind, const char *body, size_t len,
                              const char *msgid, uint64_t *seq, bool *dup) KEEL_MUST_CHECK;

/* Groups puts into one transaction (one fsync for a burst of messages).
 * keel_outbox_rollback undoes the puts since begin. While a batch is open
 * no other module may start a transaction on the vault's database. */
keel_status_t keel_outbox_begin(keel_outbox_t *o) KEEL_MUST_CHECK;
keel_status_t keel_outbox_commit(keel_outbox_t *o) KEEL_MUST_CHECK;
void keel_outbox_rollback(keel_outbox_t *o);

/* The oldest pending message with seq > after (0: from the start).
 * KEEL_ERR_NOT_FOUND when there is none. A row whose body no longer opens
 * (edited, moved) can never be sent: it is deleted, logged and counted in
 * `corrupt` and in `dropped`, and the next row is returned instead, so a
 * corrupt row never blocks the queue. */
keel_status_t keel_outbox_next(keel_outbox_t *o, uint64_t after, keel_outbox_msg_t *m) KEEL_MUST_CHECK;
/* The receiver has it (PUBACK): removes it. KEEL_OK also when already gone. */
keel_status_t keel_outbox_ack(keel_outbox_t *o, uint64_t seq) KEEL_MUST_CHECK;

keel_status_t keel_outbox_stats(keel_outbox_t *o, keel_outbox_stats_t *st) KEEL_MUST_CHECK;
const char *keel_outbox_kind_name(keel_outbox_kind_t k);

/* After keel_vault_erase (factory reset): the queue is empty, the sequence
 * and dropped counters go on. */
keel_status_t keel_outbox_reload(keel_outbox_t *o) KEEL_MUST_CHECK;

#endif

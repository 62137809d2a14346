/*
 * keel/ipc.h - the product app's local socket (5.1-2A, 5.9-2, 6-4).
 *
 * keeld listens on a Unix stream socket (mode 0660, owned by the configured
 * group); every connecting peer's SO_PEERCRED must be keeld's own uid, the
 * configured user, or carry the configured group: no password machine to
 * machine. Messages are newline-delimited JSON objects, each at most
 * KEEL_IPC_LINE_MAX bytes, strictly validated (unknown fields refused).
 *
 * Requests (app -> keeld), each answered in order by one reply line:
 *   {"op":"publish","telemetry":{...}[,"id":"msgid"]}
 *   {"op":"event","event":{"type":"...",...}[,"id":"msgid"][,"alert":true]}
 *   {"op":"state"}                      read the product state
 *   {"op":"state","set":{...}}          merge keys into it (null deletes a key)
 *   {"op":"listen"}                     from now on, also receive commands
 * Replies: {"ok":true[,"seq":N][,"duplicate":true][,"state":{...}]}
 *          {"ok":false,"error":"<code>","message":"<why>"}
 * Commands (keeld -> listening apps): {"command":"<name>","payload":<json>}
 * The protocol in full: docs/ipc.md.
 */
#ifndef KEEL_IPC_H
#define KEEL_IPC_H

#include "keel/base.h"

#include <jansson.h>
#include <sys/types.h>

struct event_base;

#define KEEL_IPC_LINE_MAX (16u * 1024u)  /* one message, newline included */
#define KEEL_IPC_CLIENTS_MAX 16          /* default [ipc] max_clients */
#define KEEL_IPC_TIMEOUT_MS 5000         /* default wait for one reply (client) */

/* ---- server (keeld) ------------------------------------------------------ */

typedef struct keel_ipc_server keel_ipc_server_t;

typedef enum { KEEL_IPC_TELEMETRY, KEEL_IPC_EVENT, KEEL_IPC_ALERT } keel_ipc_kind_t;

/* What keeld does with requests. Each returns KEEL_OK or an error whose
 * keel_error_message() goes back to the app as "message". */
typedef struct {
    /* A publish or event: `data` is the validated object (borrowed: incref
     * to keep it); `msgid` may be NULL. */
    keel_status_t (*publish)(void *arg, keel_ipc_kind_t kind, json_t *data, const char *msgid,
                             uint64_t *seq, bool *dup);
    /* Called around the requests of one read, so a burst is one transaction:
     * begin before the first, end(ok) after the last; replies are written
     * only after end returned KEEL_OK (the messages are durable by then).
     * Called only for batches that write (publish, event, state set); if
     * begin fails, those requests are answered "unavailable" unrun; if end
     * fails, every request of the batch is. Both may be NULL. */
    keel_status_t (*batch_begin)(void *arg);
    keel_status_t (*batch_end)(void *arg, bool commit);
    /* The product state (a new reference in *state). state_set merges the
     * patch (a JSON null deletes a key) and returns the whole new state. */
    keel_status_t (*state_get)(void *arg, json_t **state);
    keel_status_t (*state_set)(void *arg, json_t *patch, json_t **state);
    void *arg;
} keel_ipc_handlers_t;

typedef struct {
    struct event_base *base;
    const char *path;     /* [ipc] socket */
    uid_t allow_uid;      /* [ipc] user (resolved); (uid_t)-1: only keeld's own uid */
    gid_t allow_gid;      /* [ipc] group (resolved); (gid_t)-1: none. The socket is chowned to it. */
    unsigned max_clients;
    keel_ipc_handlers_t h;
} keel_ipc_server_config_t;

/* Replaces a stale socket file (never any other kind of file), binds,
 * sets the mode and group, listens. */
keel_status_t keel_ipc_server_start(const keel_ipc_server_config_t *c, keel_ipc_server_t **out) KEEL_MUST_CHECK;
/* Sends {"command":name,"payload":payload} to every listening client
 * (a client whose buffer is full is disconnected, never waited for). */
void keel_ipc_server_command(keel_ipc_server_t *s, const char *name, json_t *payload);
unsigned keel_ipc_server_clients(const keel_ipc_server_t *s);
/* Closes every client and removes the socket file. */
void keel_ipc_server_free(keel_ipc_server_t *s);

/* ---- client (the product app, `keel app`) -------------------------------- */

typedef struct keel_ipc_client keel_ipc_client_t;

/*
 * Every call waits at most the client's timeout (KEEL_IPC_TIMEOUT_MS unless
 * set). A timeout, keeld going away or a malformed line closes the
 * connection (KEEL_ERR_IO): reconnect with keel_ipc_connect. Replies that
 * are errors keep it open, except "forbidden" and "busy" (a "too-large"
 * here is keeld refusing the message, e.g. a full outbox: it stays open).
 * Not thread-safe: one client per thread.
 */
keel_status_t keel_ipc_connect(const char *path, keel_ipc_client_t **out) KEEL_MUST_CHECK;
void keel_ipc_close(keel_ipc_client_t *c);
/* The socket, for poll() in the app's own loop; -1 once the connection is
 * lost. Commands may already be queued when it is not readable: drain them
 * with keel_ipc_next_command(c, 0, ...) after every request, too. */
int keel_ipc_fd(const keel_ipc_client_t *c);
/* How long one request may wait for its reply (<= 0: the default). */
void keel_ipc_set_timeout(keel_ipc_client_t *c, int timeout_ms);

/* Publishes one telemetry object and waits for the reply (seq may be NULL).
 * A request keeld cannot parse is KEEL_ERR_FORMAT, one it refuses (e.g. an
 * undeclared field) KEEL_ERR_ARG, one it could not store KEEL_ERR_IO, each
 * with keeld's message. A msgid already queued gets its first seq again.
 * *seq is 0 when keeld took it but queued nothing (the user's consent
 * withheld every field). */
keel_status_t keel_ipc_publish(keel_ipc_client_t *c, json_t *telemetry, const char *msgid,
                               uint64_t *seq) KEEL_MUST_CHECK;
keel_status_t keel_ipc_event(keel_ipc_client_t *c, json_t *event, bool alert, const char *msgid,
                             uint64_t *seq) KEEL_MUST_CHECK;
keel_status_t keel_ipc_state_get(keel_ipc_client_t *c, json_t **state) KEEL_MUST_CHECK;
keel_status_t keel_ipc_state_set(keel_ipc_client_t *c, json_t *patch, json_t **state) KEEL_MUST_CHECK;
/* Subscribes to commands (queued from now on until taken). */
keel_status_t keel_ipc_listen(keel_ipc_client_t *c) KEEL_MUST_CHECK;
/* Waits up to timeout_ms (-1: forever) for the next command: *name and
 * *payload are the caller's to free (free, json_decref). KEEL_ERR_NOT_FOUND
 * on timeout; KEEL_ERR_IO when keeld went away. At most 64 commands are
 * kept unread; beyond that the oldest is dropped (and logged). */
keel_status_t keel_ipc_next_command(keel_ipc_client_t *c, int timeout_ms, char **name,
                                    json_t **payload) KEEL_MUST_CHECK;

#endif

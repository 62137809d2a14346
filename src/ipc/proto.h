/*
 * src/ipc/proto.h - the wire format both ends of the product-app socket
 * share (internal to src/ipc, the unit test and the fuzz target). Pure
 * functions over bytes and jansson values: no I/O, no globals but the
 * thread-local error message, so the parsers can be fuzzed.
 */
#ifndef KEEL_IPC_PROTO_H
#define KEEL_IPC_PROTO_H

#include "keel/ipc.h"

#define IPC_MSGID_MAX 64 /* "id": printable ASCII, no space (= KEEL_OUTBOX_MSGID_MAX) */
#define IPC_NAME_MAX 128 /* command names, event types, top-level keys */
#define IPC_DEPTH_MAX 16 /* nesting inside telemetry, events, state and payloads */
#define IPC_MESSAGE_MAX 256 /* an error reply's "message" as the client keeps it */

/* Error codes on the wire (docs/ipc.md). */
#define IPC_E_BAD_REQUEST "bad-request" /* not a valid request: KEEL_ERR_FORMAT */
#define IPC_E_TOO_LARGE "too-large"     /* over a cap: KEEL_ERR_TOO_LARGE */
#define IPC_E_REFUSED "refused"         /* keeld will not take it: KEEL_ERR_ARG */
#define IPC_E_UNAVAILABLE "unavailable" /* keeld could not do it now, retry: KEEL_ERR_IO */
#define IPC_E_FORBIDDEN "forbidden"     /* the peer's uid/gid is not allowed: KEEL_ERR_CONFIG */
#define IPC_E_BUSY "busy"               /* max_clients reached: KEEL_ERR_IO */

typedef enum { IPC_OP_PUBLISH, IPC_OP_EVENT, IPC_OP_STATE, IPC_OP_LISTEN } ipc_op_t;

typedef struct {
    ipc_op_t op;
    json_t *root;      /* owns what the pointers below borrow */
    json_t *data;      /* telemetry, event, or the state patch ("set"; NULL: read) */
    const char *msgid; /* NULL when absent */
    bool alert;
} ipc_request_t;

/*
 * Parses one request line (`len` bytes, the newline excluded). Strict: one
 * JSON object, no duplicate keys, a known "op", only that op's fields, each
 * of its type. KEEL_ERR_FORMAT or KEEL_ERR_TOO_LARGE with a message naming
 * the problem; *req is then empty. ipc_request_clear releases it.
 */
keel_status_t ipc_request_parse(const char *line, size_t len, ipc_request_t *req) KEEL_MUST_CHECK;
void ipc_request_clear(ipc_request_t *req);

/* Checks a request's parts as ipc_request_parse would (the client refuses
 * locally what keeld would refuse) and writes its line, newline included,
 * into out (KEEL_IPC_LINE_MAX bytes). */
keel_status_t ipc_request_dump(ipc_op_t op, json_t *data, const char *msgid, bool alert, char *out,
                               size_t *len) KEEL_MUST_CHECK;

/* A compact JSON line (newline included) into out, at most cap bytes:
 * KEEL_ERR_TOO_LARGE beyond. */
keel_status_t ipc_line_dump(json_t *j, char *out, size_t cap, size_t *len) KEEL_MUST_CHECK;

/* Reply lines. `state` may be NULL; `seq` 0 means none. */
keel_status_t ipc_reply_ok(uint64_t seq, bool dup, json_t *state, char *out, size_t cap,
                           size_t *len) KEEL_MUST_CHECK;
/* An error reply never fails: an over-long message is cut (at a UTF-8 boundary). */
size_t ipc_reply_error(const char *code, const char *message, char *out, size_t cap);
/* {"command":name,"payload":payload} ; KEEL_ERR_ARG for a bad name. */
keel_status_t ipc_command_dump(const char *name, json_t *payload, char *out, size_t cap,
                               size_t *len) KEEL_MUST_CHECK;

/* The wire code for a handler's status, and the status a client returns for a code. */
const char *ipc_error_code(keel_status_t st);
keel_status_t ipc_error_status(const char *code);

/* A name (command, event type): 1..IPC_NAME_MAX of [A-Za-z0-9_.:/-]. */
bool ipc_name_ok(const char *s);

/* What keeld sends: a reply or a command. */
typedef struct {
    bool is_command;
    json_t *root;
    /* reply */
    bool ok;
    uint64_t seq; /* 0: none */
    bool dup;
    json_t *state;                        /* borrowed from root; NULL when absent */
    char error[24];                       /* the code, "" on success */
    char message[IPC_MESSAGE_MAX];        /* control characters shown as '?' */
    /* command */
    char name[IPC_NAME_MAX + 1];
    json_t *payload;                      /* borrowed from root; JSON null when absent */
} ipc_message_t;

/* Parses one line from keeld (newline excluded). Types are strict; fields a
 * newer keeld may add are ignored, so an older app keeps working. */
keel_status_t ipc_message_parse(const char *line, size_t len, ipc_message_t *m) KEEL_MUST_CHECK;
void ipc_message_clear(ipc_message_t *m);

#endif

/*
 * Fuzz target: what a local process hands keeld's product-app socket, and
 * what the client library reads back (src/ipc/proto.c). The first byte
 * picks the parser: a request line (even) or a line from keeld (odd). Any
 * input must be taken or refused cleanly; a request that is taken must
 * have the promised shape and survive the client's own serialiser
 * unchanged (what the client sends, keeld reads the same).
 */
#include "fuzz.h"

#include "ipc/proto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static char line[KEEL_IPC_LINE_MAX];

static void check_request(const char *p, size_t n)
{
    ipc_request_t r;
    keel_status_t st = ipc_request_parse(p, n, &r);
    if ((st == KEEL_OK) != (r.root != NULL))
        abort();
    if (st != KEEL_OK)
        return;
    if (r.op == IPC_OP_PUBLISH || r.op == IPC_OP_EVENT) {
        if (!json_is_object(r.data) || json_object_size(r.data) == 0)
            abort();
        if (r.op == IPC_OP_EVENT && !ipc_name_ok(json_string_value(json_object_get(r.data, "type"))))
            abort();
    }
    if (r.op == IPC_OP_LISTEN && r.data != NULL)
        abort();
    if (r.msgid != NULL && (strlen(r.msgid) == 0 || strlen(r.msgid) > IPC_MSGID_MAX))
        abort();
    size_t len = 0;
    /* A taken request fits the line cap, so its compact form does too. */
    if (ipc_request_dump(r.op, r.data, r.msgid, r.alert, line, &len) != KEEL_OK)
        abort();
    ipc_request_t again;
    if (ipc_request_parse(line, len - 1, &again) != KEEL_OK || again.op != r.op || again.alert != r.alert ||
        (r.data != NULL) != (again.data != NULL) || (r.data != NULL && !json_equal(r.data, again.data)) ||
        (r.msgid != NULL) != (again.msgid != NULL) || (r.msgid != NULL && strcmp(r.msgid, again.msgid) != 0))
        abort();
    ipc_request_clear(&again);
    ipc_request_clear(&r);
}

static void check_message(const char *p, size_t n)
{
    ipc_message_t m;
    if (ipc_message_parse(p, n, &m) != KEEL_OK) {
        if (m.root != NULL)
            abort();
        return;
    }
    if (m.is_command) {
        if (!ipc_name_ok(m.name) || m.payload == NULL)
            abort();
    } else {
        if (!m.ok && m.error[0] == '\0')
            abort();
        for (const char *c = m.message; *c != '\0'; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f)
                abort();
        if (m.state != NULL && !json_is_object(m.state))
            abort();
    }
    ipc_message_clear(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    if (data[0] & 1)
        check_message(p, n);
    else
        check_request(p, n);
    return 0;
}

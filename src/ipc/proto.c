/*
 * The product-app socket's wire format (docs/ipc.md): strict parsing of
 * requests, tolerant-but-typed parsing of what keeld sends back, and the
 * serialisers, all capped at KEEL_IPC_LINE_MAX. Shared by keeld's server
 * and the client in libkeel; fuzzed by tests/fuzz/fuzz_ipc.c.
 */
#include "proto.h"

#include <string.h>

/* jansson's flags for every line: one value, no trailing bytes, no
 * duplicate key (which would let two readers see different objects). A
 * NUL inside a string (which would cut a C string short) is refused by
 * jansson unless JSON_ALLOW_NUL is given, and always in a key. */
#define LOAD_FLAGS JSON_REJECT_DUPLICATES

bool ipc_name_ok(const char *s)
{
    size_t n = 0;
    if (s == NULL)
        return false;
    for (; s[n] != '\0'; n++) {
        char c = s[n];
        if (n >= IPC_NAME_MAX)
            return false;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == ':' || c == '-' || c == '/'))
            return false;
    }
    return n > 0;
}

static bool msgid_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > IPC_MSGID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

/* Nesting is capped so that whoever walks the value later (the outbox, the
 * telemetry allow-list, the cloud) never meets an unbounded recursion. */
static bool depth_ok(json_t *j, unsigned depth)
{
    if (depth > IPC_DEPTH_MAX)
        return false;
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            if (!depth_ok(v, depth + 1))
                return false;
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) {
            if (!depth_ok(v, depth + 1))
                return false;
        }
    }
    return true;
}

/* A data object: an object, top-level keys names of sane length, bounded depth. */
static keel_status_t data_check(const char *field, json_t *j, bool allow_empty)
{
    if (!json_is_object(j))
        return keel_errorf(KEEL_ERR_FORMAT, "\"%s\" must be an object", field);
    if (!allow_empty && json_object_size(j) == 0)
        return keel_errorf(KEEL_ERR_FORMAT, "\"%s\" is empty", field);
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
        size_t n = strlen(k);
        if (n == 0 || n > IPC_NAME_MAX)
            return keel_errorf(KEEL_ERR_FORMAT, "a key in \"%s\" is empty or longer than %d bytes", field,
                               IPC_NAME_MAX);
    }
    if (!depth_ok(j, 1))
        return keel_errorf(KEEL_ERR_FORMAT, "\"%s\" is nested deeper than %d levels", field, IPC_DEPTH_MAX);
    return KEEL_OK;
}

typedef struct {
    const char *name;
    ipc_op_t op;
    const char *data;      /* the field holding the data object, or NULL */
    bool data_required;
    bool has_msgid;
    bool has_alert;
} op_spec_t;

static const op_spec_t ops[] = {
    {"publish", IPC_OP_PUBLISH, "telemetry", true, true, false},
    {"event", IPC_OP_EVENT, "event", true, true, true},
    {"state", IPC_OP_STATE, "set", false, false, false},
    {"listen", IPC_OP_LISTEN, NULL, false, false, false},
};

static const op_spec_t *op_find(const char *name)
{
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (strcmp(ops[i].name, name) == 0)
            return &ops[i];
    return NULL;
}

static const op_spec_t *op_of(ipc_op_t op)
{
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (ops[i].op == op)
            return &ops[i];
    return NULL;
}

/* The checks of one request's parts, shared by the parser and the dumper. */
static keel_status_t parts_check(const op_spec_t *spec, json_t *data, const char *msgid)
{
    if (spec->data != NULL && data != NULL) {
        keel_status_t st = data_check(spec->data, data, spec->op == IPC_OP_STATE);
        if (st != KEEL_OK)
            return st;
    }
    if (spec->data_required && data == NULL)
        return keel_errorf(KEEL_ERR_FORMAT, "op \"%s\" needs \"%s\"", spec->name, spec->data);
    if (spec->op == IPC_OP_EVENT) {
        json_t *type = json_object_get(data, "type");
        if (!json_is_string(type) || !ipc_name_ok(json_string_value(type)))
            return keel_errorf(KEEL_ERR_FORMAT,
                               "an event needs \"type\": 1 to %d letters, digits or _ . : - /", IPC_NAME_MAX);
    }
    if (msgid != NULL && !msgid_ok(msgid))
        return keel_errorf(KEEL_ERR_FORMAT, "\"id\" must be 1 to %d printable characters without spaces",
                           IPC_MSGID_MAX);
    return KEEL_OK;
}

void ipc_request_clear(ipc_request_t *req)
{
    if (req == NULL)
        return;
    json_decref(req->root);
    memset(req, 0, sizeof *req);
}

keel_status_t ipc_request_parse(const char *line, size_t len, ipc_request_t *req)
{
    memset(req, 0, sizeof *req);
    if (line == NULL)
        return keel_errorf(KEEL_ERR_FORMAT, "no request");
    /* Not len + 1 > max: a len of SIZE_MAX would wrap round and pass. */
    if (len >= KEEL_IPC_LINE_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "a request is at most %u bytes", KEEL_IPC_LINE_MAX);
    json_error_t err;
    json_t *root = json_loadb(line, len, LOAD_FLAGS, &err);
    if (root == NULL)
        return keel_errorf(KEEL_ERR_FORMAT, "not JSON (column %d: %.80s)", err.column, err.text);
    keel_status_t st = KEEL_OK;
    const op_spec_t *spec = NULL;
    json_t *data = NULL;
    const char *msgid = NULL;
    bool alert = false;
    if (!json_is_object(root)) {
        st = keel_errorf(KEEL_ERR_FORMAT, "a request is a JSON object");
        goto out;
    }
    json_t *op = json_object_get(root, "op");
    if (!json_is_string(op)) {
        st = keel_errorf(KEEL_ERR_FORMAT, "\"op\" (a string) is required");
        goto out;
    }
    spec = op_find(json_string_value(op));
    if (spec == NULL) {
        /* Echo only a name-shaped op: the rest of the line is not ours to log. */
        const char *o = json_string_value(op);
        st = keel_errorf(KEEL_ERR_FORMAT, "unknown op \"%s\"", ipc_name_ok(o) ? o : "?");
        goto out;
    }
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v) {
        if (strcmp(k, "op") == 0)
            continue;
        if (spec->data != NULL && strcmp(k, spec->data) == 0) {
            data = v;
        } else if (spec->has_msgid && strcmp(k, "id") == 0) {
            if (!json_is_string(v)) {
                st = keel_errorf(KEEL_ERR_FORMAT, "\"id\" must be a string");
                goto out;
            }
            msgid = json_string_value(v);
        } else if (spec->has_alert && strcmp(k, "alert") == 0) {
            if (!json_is_boolean(v)) {
                st = keel_errorf(KEEL_ERR_FORMAT, "\"alert\" must be true or false");
                goto out;
            }
            alert = json_is_true(v);
        } else {
            st = keel_errorf(KEEL_ERR_FORMAT, "unknown field \"%s\" for op \"%s\"",
                             ipc_name_ok(k) ? k : "?", spec->name);
            goto out;
        }
    }
    st = parts_check(spec, data, msgid);
out:
    if (st != KEEL_OK) {
        json_decref(root);
        return st;
    }
    req->op = spec->op;
    req->root = root;
    req->data = data;
    req->msgid = msgid;
    req->alert = alert;
    return KEEL_OK;
}

keel_status_t ipc_line_dump(json_t *j, char *out, size_t cap, size_t *len)
{
    if (j == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    /* Compact output escapes every control character, so the only newline
     * is the one that ends the line. */
    size_t n = json_dumpb(j, out, cap, JSON_COMPACT);
    if (n == 0)
        return keel_errorf(KEEL_ERR_FORMAT, "cannot serialise the message");
    if (n >= cap)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "the message is over %zu bytes", cap - 1);
    out[n] = '\n';
    *len = n + 1;
    return KEEL_OK;
}

keel_status_t ipc_request_dump(ipc_op_t op, json_t *data, const char *msgid, bool alert, char *out, size_t *len)
{
    const op_spec_t *spec = op_of(op);
    if (spec == NULL)
        return keel_errorf(KEEL_ERR_ARG, "unknown op");
    keel_status_t st = parts_check(spec, data, msgid);
    if (st != KEEL_OK) {
        /* keel_errorf writes the buffer it would read from: copy first */
        char why[KEEL_ERROR_MAX];
        if (keel_strlcpy(why, keel_error_message(), sizeof why) != KEEL_OK)
            why[0] = '\0';
        return keel_errorf(KEEL_ERR_ARG, "%s", why);
    }
    json_t *j = json_pack("{s:s}", "op", spec->name);
    if (j == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    int bad = 0;
    if (spec->data != NULL && data != NULL)
        bad |= json_object_set(j, spec->data, data);
    if (msgid != NULL)
        bad |= json_object_set_new(j, "id", json_string(msgid));
    if (spec->has_alert && alert)
        bad |= json_object_set_new(j, "alert", json_true());
    st = bad ? keel_errorf(KEEL_ERR_NOMEM, "out of memory") : ipc_line_dump(j, out, KEEL_IPC_LINE_MAX, len);
    json_decref(j);
    return st;
}

keel_status_t ipc_reply_ok(uint64_t seq, bool dup, json_t *state, char *out, size_t cap, size_t *len)
{
    json_t *j = json_pack("{s:b}", "ok", 1);
    if (j == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    int bad = 0;
    if (seq != 0)
        bad |= json_object_set_new(j, "seq", json_integer((json_int_t)seq));
    if (dup)
        bad |= json_object_set_new(j, "duplicate", json_true());
    if (state != NULL)
        bad |= json_object_set(j, "state", state);
    keel_status_t st = bad ? keel_errorf(KEEL_ERR_NOMEM, "out of memory") : ipc_line_dump(j, out, cap, len);
    json_decref(j);
    return st;
}

/* Cuts s to at most max bytes without splitting a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max)
        return n;
    while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
        max--;
    return max;
}

size_t ipc_reply_error(const char *code, const char *message, char *out, size_t cap)
{
    char msg[IPC_MESSAGE_MAX];
    size_t n = utf8_cut(message != NULL ? message : "", sizeof msg - 1);
    memcpy(msg, message != NULL ? message : "", n);
    msg[n] = '\0';
    json_t *j = json_pack("{s:b, s:s, s:s}", "ok", 0, "error", code, "message", msg);
    size_t len = 0;
    if (j == NULL || ipc_line_dump(j, out, cap, &len) != KEEL_OK) {
        /* Out of memory, or a message jansson refused (invalid UTF-8): the code alone. */
        len = 0;
        if (keel_snprintf(out, cap, "{\"ok\":false,\"error\":\"%s\",\"message\":\"\"}\n", code) == KEEL_OK)
            len = strlen(out);
    }
    json_decref(j);
    return len;
}

keel_status_t ipc_command_dump(const char *name, json_t *payload, char *out, size_t cap, size_t *len)
{
    if (!ipc_name_ok(name))
        return keel_errorf(KEEL_ERR_ARG, "a command name is 1 to %d letters, digits or _ . : - /", IPC_NAME_MAX);
    if (payload != NULL && !depth_ok(payload, 1))
        return keel_errorf(KEEL_ERR_ARG, "the payload is nested deeper than %d levels", IPC_DEPTH_MAX);
    json_t *j = json_pack("{s:s, s:O?}", "command", name, "payload", payload);
    keel_status_t st = ipc_line_dump(j, out, cap, len);
    json_decref(j);
    return st;
}

static const struct {
    const char *code;
    keel_status_t st;
} codes[] = {
    {IPC_E_BAD_REQUEST, KEEL_ERR_FORMAT}, {IPC_E_TOO_LARGE, KEEL_ERR_TOO_LARGE},
    {IPC_E_REFUSED, KEEL_ERR_ARG},        {IPC_E_FORBIDDEN, KEEL_ERR_CONFIG},
    {IPC_E_BUSY, KEEL_ERR_IO},            {IPC_E_UNAVAILABLE, KEEL_ERR_IO},
};

const char *ipc_error_code(keel_status_t st)
{
    switch (st) {
    case KEEL_ERR_ARG:
    case KEEL_ERR_FORMAT:
    case KEEL_ERR_NOT_FOUND:
    case KEEL_ERR_EXISTS:
    case KEEL_ERR_VERIFY:
        return IPC_E_REFUSED;
    case KEEL_ERR_TOO_LARGE: return IPC_E_TOO_LARGE;
    default: return IPC_E_UNAVAILABLE;
    }
}

keel_status_t ipc_error_status(const char *code)
{
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strcmp(codes[i].code, code) == 0)
            return codes[i].st;
    return KEEL_ERR_IO;
}

void ipc_message_clear(ipc_message_t *m)
{
    if (m == NULL)
        return;
    json_decref(m->root);
    memset(m, 0, sizeof *m);
}

/* keeld's message reaches a terminal through `keel app`: no control characters. */
static void copy_printable(char *dst, size_t cap, const char *src)
{
    size_t n = utf8_cut(src, cap - 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    dst[n] = '\0';
}

keel_status_t ipc_message_parse(const char *line, size_t len, ipc_message_t *m)
{
    memset(m, 0, sizeof *m);
    if (line == NULL)
        return keel_errorf(KEEL_ERR_FORMAT, "no message");
    if (len >= KEEL_IPC_LINE_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "a message from keeld is over %u bytes", KEEL_IPC_LINE_MAX);
    json_error_t err;
    json_t *root = json_loadb(line, len, LOAD_FLAGS, &err);
    if (root == NULL)
        return keel_errorf(KEEL_ERR_FORMAT, "keeld sent a line that is not JSON");
    keel_status_t st = KEEL_ERR_FORMAT;
    json_t *cmd = json_object_get(root, "command");
    json_t *ok = json_object_get(root, "ok");
    if (!json_is_object(root) || (cmd == NULL) == (ok == NULL)) {
        st = keel_errorf(KEEL_ERR_FORMAT, "keeld sent neither a reply nor a command");
        goto fail;
    }
    m->root = root;
    if (cmd != NULL) {
        if (!json_is_string(cmd) || !ipc_name_ok(json_string_value(cmd))) {
            st = keel_errorf(KEEL_ERR_FORMAT, "keeld sent a command with a bad name");
            goto fail;
        }
        m->is_command = true;
        memcpy(m->name, json_string_value(cmd), strlen(json_string_value(cmd)) + 1);
        m->payload = json_object_get(root, "payload");
        if (m->payload == NULL) {
            m->payload = json_null();
            if (json_object_set_new(root, "payload", m->payload) != 0) {
                st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
                goto fail;
            }
        }
        return KEEL_OK;
    }
    if (!json_is_boolean(ok)) {
        st = keel_errorf(KEEL_ERR_FORMAT, "keeld sent a reply whose \"ok\" is not a boolean");
        goto fail;
    }
    m->ok = json_is_true(ok);
    json_t *seq = json_object_get(root, "seq");
    json_t *dup = json_object_get(root, "duplicate");
    json_t *state = json_object_get(root, "state");
    json_t *error = json_object_get(root, "error");
    json_t *message = json_object_get(root, "message");
    if ((seq != NULL && (!json_is_integer(seq) || json_integer_value(seq) < 1)) ||
        (dup != NULL && !json_is_boolean(dup)) || (state != NULL && !json_is_object(state)) ||
        (error != NULL && !json_is_string(error)) || (message != NULL && !json_is_string(message)) ||
        (!m->ok && (error == NULL || json_string_length(error) == 0))) {
        st = keel_errorf(KEEL_ERR_FORMAT, "keeld sent a malformed reply");
        goto fail;
    }
    m->seq = seq != NULL ? (uint64_t)json_integer_value(seq) : 0;
    m->dup = dup != NULL && json_is_true(dup);
    m->state = state;
    if (error != NULL)
        copy_printable(m->error, sizeof m->error, json_string_value(error));
    if (message != NULL)
        copy_printable(m->message, sizeof m->message, json_string_value(message));
    return KEEL_OK;
fail:
    json_decref(root);
    memset(m, 0, sizeof *m);
    return st;
}

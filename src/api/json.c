/* Strict JSON input for the API: one object, known fields, checked types. */
#include "internal.h"

#include <string.h>

static const api_json_field_t *field_find(const api_json_field_t *f, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(f[i].name, name) == 0)
            return &f[i];
    return NULL;
}

keel_status_t api_json_parse(const char *body, size_t len, const api_json_field_t *fields, size_t n,
                             json_t **out)
{
    if (len > KEEL_API_JSON_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "body over %u bytes", KEEL_API_JSON_MAX);
    json_error_t e;
    /* NUL inside strings stays refused (no JSON_ALLOW_NUL). */
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL)
        return keel_errorf(KEEL_ERR_FORMAT, "malformed JSON at line %d column %d", e.line, e.column);
    keel_status_t st = KEEL_OK;
    if (!json_is_object(j))
        st = keel_errorf(KEEL_ERR_FORMAT, "the body must be a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        if (st != KEEL_OK)
            break;
        const api_json_field_t *f = field_find(fields, n, key);
        if (f == NULL) {
            st = keel_errorf(KEEL_ERR_FORMAT, "unknown field \"%.64s\"", key);
            break;
        }
        bool ok;
        switch (f->type) {
        case API_JSON_BOOL: ok = json_is_boolean(v); break;
        case API_JSON_STRING_OR_NULL: ok = json_is_null(v) || json_is_string(v); break;
        default: ok = json_is_string(v); break;
        }
        if (ok && json_is_string(v) && json_string_length(v) > f->max_len)
            st = keel_errorf(KEEL_ERR_TOO_LARGE, "field \"%s\" is over %zu bytes", f->name, f->max_len);
        else if (!ok)
            st = keel_errorf(KEEL_ERR_FORMAT, "field \"%s\" has the wrong type", f->name);
    }
    for (size_t i = 0; st == KEEL_OK && i < n; i++)
        if (fields[i].required && json_object_get(j, fields[i].name) == NULL)
            st = keel_errorf(KEEL_ERR_FORMAT, "field \"%s\" is missing", fields[i].name);
    if (st != KEEL_OK) {
        json_decref(j);
        return st;
    }
    *out = j;
    return KEEL_OK;
}

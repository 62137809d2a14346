/*
 * Fuzz target: what a network client hands keeld's API parsers (5.13-1B).
 * The first byte picks the parser: a JSON body against a route's fields, a
 * Cookie header, an api.listen value. Any input must be taken or refused
 * cleanly, never crash, and a refused JSON body must leave nothing behind.
 */
#include "fuzz.h"

#include "internal.h"
#include "ui_assets.h"

#include <stdlib.h>
#include <string.h>

/* The routes link against the UI table; keeld links the real one. */
const keel_ui_asset_t keel_ui_assets[] = {{"/index.html", "text/html", (const unsigned char *)"<p>", 3}};
const size_t keel_ui_assets_len = 1;

static const api_json_field_t fields[] = {
    {"username", API_JSON_STRING, true, 64},
    {"password", API_JSON_STRING, true, KEEL_AUTH_PASSWORD_MAX},
    {"automatic_updates", API_JSON_BOOL, false, 0},
    {"postpone_until", API_JSON_STRING_OR_NULL, false, 10},
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t which = data[0] % 3;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    if (which == 0) {
        json_t *j = NULL;
        keel_status_t st = api_json_parse(p, n, fields, sizeof fields / sizeof fields[0], &j);
        if ((st == KEEL_OK) != (j != NULL))
            abort();
        if (st == KEEL_OK) {
            /* what was taken has exactly the promised shape */
            if (!json_is_object(j) || !json_is_string(json_object_get(j, "username")) ||
                json_string_length(json_object_get(j, "username")) > 64 ||
                !json_is_string(json_object_get(j, "password")))
                abort();
            json_decref(j);
        }
        return 0;
    }
    char *s = malloc(n + 1);
    if (s == NULL)
        abort();
    memcpy(s, p, n);
    s[n] = '\0';
    if (which == 1) {
        char tok[KEEL_AUTH_TOKEN_LEN + 1];
        if (api_cookie_token(s, tok) && strlen(tok) != KEEL_AUTH_TOKEN_LEN)
            abort();
    } else {
        char host[64];
        uint16_t port;
        if (api_split_listen(s, host, sizeof host, &port) == KEEL_OK && strlen(host) >= sizeof host)
            abort();
    }
    free(s);
    return 0;
}

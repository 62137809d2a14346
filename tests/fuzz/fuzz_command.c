/*
 * Fuzz target: what the device receives from the cloud. The first line is
 * the command name (the MQTT topic after keel/v1/<id>/cmd/, at most 255
 * bytes, as the broker hands it); the rest, in a buffer of its exact size,
 * is the payload. It goes the way keeld takes it (src/link/link.c
 * cb_message, programs/keeld/cloud.c on_command, updater_logic.c):
 *   - keel_link_command_name_ok, then the payload cap and strict JSON;
 *   - keel/update: keeld_offer_parse (also what the update server answers
 *     to a check: the same parser) and keeld_offer_decide;
 *   - any other name outside keel/: ipc_command_dump, the line the product
 *     app receives, read back by the app's ipc_message_parse.
 *
 * What must hold:
 *   - a name taken is 1..64 bytes of plain levels ([A-Za-z0-9_.-], none
 *     empty, "." or "..");
 *   - an offer taken says exactly what its JSON says: campaign and sha256
 *     are the JSON strings (hex, case folded) whole, not a prefix cut at a
 *     NUL; the version is valid SemVer; 1 <= size <= the cap;
 *   - a command passed on to the app reaches it unchanged (same name, equal
 *     payload), or is refused as too deep or too large.
 */
#include "fuzz.h"

#include "ipc/proto.h"
#include "keel/ipc.h"
#include "keel/update.h"
#include "link/link_internal.h"
#include "updater.h"

#include <ctype.h>
#include <jansson.h>
#include <string.h>

#define NAME_MAX_IN 255
#define CMD_MAX (64u * 1024u)        /* src/link/link.c */
#define RECEIPT_MAX 4096u           /* programs/keeld/cloud.c: keel/ commands */
#define SIZE_CAP (1ull << 30)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    keel_log_set_level(KEEL_LOG_ERROR);
    return 0;
}

static int level_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.';
}

static void check_name(const char *name)
{
    size_t n = strlen(name);
    fuzz_must(n >= 1 && n <= KEEL_LINK_CMD_NAME_MAX, "a command name of a bad length was taken");
    const char *level = name;
    for (const char *q = name;; q++) {
        if (*q == '/' || *q == '\0') {
            size_t len = (size_t)(q - level);
            fuzz_must(len > 0 && !(len == 1 && level[0] == '.') && !(len == 2 && level[0] == '.' && level[1] == '.'),
                      "a command name with an empty, . or .. level was taken");
            if (*q == '\0')
                break;
            level = q + 1;
        } else {
            fuzz_must(level_char(*q), "a command name with a bad character was taken");
        }
    }
}

/* `s` is the JSON string `v`, whole, with hex folded to lower case. */
static int same_hex(const json_t *v, const char *s)
{
    const char *j = json_string_value(v);
    size_t n = json_string_length(v);
    if (j == NULL || strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (tolower((unsigned char)j[i]) != s[i])
            return 0;
    return 1;
}

static void check_offer(const uint8_t *p, size_t n)
{
    keeld_offer_t o;
    if (keeld_offer_parse(p, n, SIZE_CAP, &o) != KEEL_OK) {
        keel_error_clear();
        fuzz_must(o.campaign[0] == '\0' && o.version[0] == '\0' && o.size == 0, "a refused offer left data behind");
        return;
    }
    json_t *j = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, NULL);
    fuzz_must(j != NULL, "an offer taken that is not JSON");
    fuzz_must(strlen(o.campaign) == KEELD_CAMPAIGN_LEN && same_hex(json_object_get(j, "campaign"), o.campaign),
              "the offer's campaign is not the JSON's");
    fuzz_must(strlen(o.sha256) == 64 && same_hex(json_object_get(j, "sha256"), o.sha256),
              "the offer's sha256 is not the JSON's");
    fuzz_must(keel_semver_ok(o.version) &&
                  strcmp(o.version, json_string_value(json_object_get(j, "version"))) == 0 &&
                  strlen(o.version) == json_string_length(json_object_get(j, "version")),
              "the offer's version is not the JSON's");
    fuzz_must(o.size >= 1 && o.size <= SIZE_CAP && (json_int_t)o.size == json_integer_value(json_object_get(j, "size")),
              "the offer's size is out of range");
    json_decref(j);
    static const char *const versions[] = {"1.0.0", "2.0.0-rc.1", ""};
    for (size_t i = 0; i < 3; i++) {
        keeld_offer_verdict_t v = keeld_offer_decide(&o, versions[i], versions[2 - i], true, NULL, "2026-11-22");
        fuzz_must(v == KEELD_OFFER_INSTALL || v == KEELD_OFFER_IGNORE, "an automatic offer postponed");
        fuzz_must(keeld_offer_decide(&o, NULL, NULL, false, NULL, NULL) == KEELD_OFFER_POSTPONE,
                  "an offer installed with automatic updates off");
    }
}

static void check_app(const char *name, json_t *payload)
{
    static char line[KEEL_IPC_LINE_MAX];
    size_t len = 0;
    keel_status_t st = ipc_command_dump(name, payload, line, sizeof line, &len);
    keel_error_clear();
    if (st != KEEL_OK) {
        fuzz_must(st == KEEL_ERR_ARG || st == KEEL_ERR_TOO_LARGE, "a command not passed on for another reason");
        return;
    }
    fuzz_must(len >= 1 && line[len - 1] == '\n', "a command line without its newline");
    ipc_message_t m;
    fuzz_must(ipc_message_parse(line, len - 1, &m) == KEEL_OK, "the app refuses a command keeld passed on");
    fuzz_must(m.is_command && strcmp(m.name, name) == 0 && json_equal(m.payload, payload),
              "the app reads another command than keeld passed on");
    ipc_message_clear(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t name_len = nl != NULL ? (size_t)(nl - data) : size;
    if (name_len > NAME_MAX_IN || memchr(data, '\0', name_len) != NULL)
        return 0;
    char name[NAME_MAX_IN + 1];
    memcpy(name, data, name_len);
    name[name_len] = '\0';
    size_t plen = nl != NULL ? size - name_len - 1 : 0;
    uint8_t *payload = malloc(plen > 0 ? plen : 1);
    if (payload == NULL)
        return 0;
    if (plen > 0)
        memcpy(payload, nl + 1, plen);
    /* The offer parser also reads the update server's answer to a check,
     * which no name check precedes. */
    check_offer(payload, plen);
    if (!keel_link_command_name_ok(name) || plen > CMD_MAX) {
        free(payload);
        return 0;
    }
    check_name(name);
    size_t cap = strncmp(name, "keel/", 5) == 0 ? RECEIPT_MAX : KEEL_IPC_LINE_MAX / 2;
    json_t *j = plen <= cap ? json_loadb((const char *)payload, plen, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (j != NULL && strncmp(name, "keel/", 5) != 0)
        check_app(name, j);
    json_decref(j);
    free(payload);
    return 0;
}

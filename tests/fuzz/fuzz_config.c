/*
 * Fuzz target: configuration files (src/base/config.c) against the schemas
 * of keeld (keel_device_schema, loaded as keeld loads it) and keel-fleetd
 * (programs/keel-fleetd/schema.c), with -o overrides.
 *
 * Byte 0, bit 0: keeld (0) or keel-fleetd (1). The rest up to the first NUL
 * is the file (written to a memory file, read through /proc/self/fd/N);
 * each later NUL-separated piece is one "section.key=value" override (at
 * most 8), applied in order.
 *
 * What must hold for a configuration that is taken:
 *   - every key reads back within its schema: a number in [min, max], a
 *     boolean 0/1, text of at most KEEL_CONFIG_VALUE_MAX bytes without
 *     control characters, a path that resolves to an absolute path; the
 *     schema's own defaults obey the same rules;
 *   - the values the daemons then parse (log level, listen and broker
 *     addresses, the update server URL, the [anomaly] settings) are taken or
 *     refused cleanly;
 *   - written back out as a file (one "key = value" line per value), it is
 *     taken again with the same values: a value an override can set, the
 *     file can hold.
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include "fleetd.h"
#include "keel/api.h"
#include "keel/config.h"
#include "keel/device.h"
#include "keel/fleet_anomaly.h"
#include "keel/link.h"
#include "ui_assets.h"
#include "updater.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define OVERRIDES_MAX 8

/* keel_api_listen_check comes with the API server, which serves the UI
 * keeld embeds: a stand-in. */
const keel_ui_asset_t keel_ui_assets[] = {{"/index.html", "text/html", (const unsigned char *)"<p>", 3}};
const size_t keel_ui_assets_len = 1;

static keel_cfg_key_t *fleetd_schema;
static size_t fleetd_n;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    keel_log_set_level(KEEL_LOG_ERROR);
    fleetd_schema = fleetd_config_schema(&fleetd_n);
    if (fleetd_schema == NULL)
        abort();
    return 0;
}

/* A memory file holding `len` bytes; its path in `path`. -1 on failure. */
static int mem_file(const void *data, size_t len, char *path, size_t cap)
{
    int fd = memfd_create("fuzz-config", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    if ((len > 0 && write(fd, data, len) != (ssize_t)len) || keel_snprintf(path, cap, "/proc/self/fd/%d", fd) != KEEL_OK) {
        close(fd);
        return -1;
    }
    return fd;
}

static void check_value(const keel_config_t *c, const keel_cfg_key_t *k)
{
    const char *v = keel_config_str(c, k->section, k->key);
    char path[KEEL_PATH_MAX];
    switch (k->type) {
    case KEEL_CFG_UINT: {
        uint64_t u = keel_config_uint(c, k->section, k->key);
        fuzz_must(v == NULL || (u >= k->min && u <= k->max), "a number outside its range");
        break;
    }
    case KEEL_CFG_BOOL: {
        int b = keel_config_bool(c, k->section, k->key);
        fuzz_must(b == 0 || b == 1, "a boolean that is neither");
        break;
    }
    case KEEL_CFG_PATH: {
        keel_status_t st = keel_config_path(c, k->section, k->key, path);
        fuzz_must(v != NULL || st == KEEL_ERR_NOT_FOUND, "an unset path resolved");
        fuzz_must(st != KEEL_OK || path[0] == '/', "a path that does not resolve to an absolute one");
        keel_error_clear();
        break;
    }
    case KEEL_CFG_STRING:
        break;
    }
    if ((k->type == KEEL_CFG_STRING || k->type == KEEL_CFG_PATH) && v != NULL) {
        fuzz_must(strlen(v) <= KEEL_CONFIG_VALUE_MAX && v[0] != '\0', "text of a bad length");
        for (const char *p = v; *p; p++)
            fuzz_must((unsigned char)*p >= 0x20 && *p != 0x7f, "a control character in a value");
    }
}

/* What the daemons parse out of the values once the file is taken. */
static void check_uses(const keel_config_t *c, int fleetd)
{
    keel_log_level_t level;
    char host[KEEL_LINK_HOST_MAX + 1];
    int port = 0;
    if (keel_log_level_parse(keel_config_str(c, "log", "level"), &level) != KEEL_OK)
        keel_error_clear();
    static const char *const keeld_addr[][2] = {{"link", "broker"}};
    static const char *const fleetd_addr[][2] = {{"broker", "address"}, {"admin", "listen"}, {"update_server", "listen"}};
    const char *const(*addr)[2] = fleetd ? fleetd_addr : keeld_addr;
    size_t n_addr = fleetd ? 3 : 1;
    for (size_t i = 0; i < n_addr; i++) {
        const char *a = keel_config_str(c, addr[i][0], addr[i][1]);
        if (a == NULL)
            continue;
        if (keel_link_split_broker(a, host, sizeof host, &port) == KEEL_OK)
            fuzz_must(port >= 1 && port <= 65535 && strlen(host) > 0 && strlen(host) <= KEEL_LINK_HOST_MAX,
                      "an address taken with a bad host or port");
        keel_error_clear();
    }
    if (fleetd) {
        keel_fleet_anomaly_config_t a;
        if (keel_fleet_anomaly_config_read(c, &a) != KEEL_OK)
            keel_error_clear();
        return;
    }
    if (keel_api_listen_check(keel_config_str(c, "api", "listen")) != KEEL_OK)
        keel_error_clear();
    const char *url = keel_config_str(c, "update", "server");
    char uhost[KEELD_UPDATE_HOST_MAX + 1];
    unsigned uport = 0;
    bool v6 = false;
    if (url != NULL && keeld_update_server_parse(url, uhost, &uport, &v6) == KEEL_OK)
        fuzz_must(uport >= 1 && uport <= 65535 && strlen(uhost) > 0, "an update server taken with a bad host or port");
    keel_error_clear();
}

/* Writes every value of c as a file and loads it again: same values. */
static void check_round_trip(const keel_config_t *c, const keel_cfg_key_t *schema, size_t n, int fleetd)
{
    keel_buf_t b;
    keel_buf_init(&b, KEEL_CONFIG_FILE_MAX);
    const char *section = "";
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; i < n && st == KEEL_OK; i++) {
        const char *v = keel_config_str(c, schema[i].section, schema[i].key);
        if (v == NULL)
            continue;
        if (strcmp(section, schema[i].section) != 0) {
            section = schema[i].section;
            st = keel_buf_printf(&b, "[%s]\n", section);
        }
        if (st == KEEL_OK)
            st = keel_buf_printf(&b, "%s = %s\n", schema[i].key, v);
    }
    fuzz_must(st == KEEL_OK, "out of memory writing the configuration back");
    char path[64];
    int fd = mem_file(b.data, b.len, path, sizeof path);
    keel_buf_free(&b);
    if (fd < 0)
        return;
    keel_config_t *again = NULL;
    st = fleetd ? keel_config_load(path, schema, n, &again) : keel_device_config_load(path, NULL, 0, &again);
    if (st != KEEL_OK)
        fprintf(stderr, "written back: %s\n", keel_error_message());
    fuzz_must(st == KEEL_OK, "a configuration written back as a file is refused");
    for (size_t i = 0; i < n; i++) {
        const char *x = keel_config_str(c, schema[i].section, schema[i].key);
        const char *y = keel_config_str(again, schema[i].section, schema[i].key);
        fuzz_must((x == NULL) == (y == NULL) && (x == NULL || strcmp(x, y) == 0),
                  "a value changed when written back as a file");
    }
    keel_config_free(again);
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int fleetd = data[0] & 1;
    const keel_cfg_key_t *schema = fleetd ? fleetd_schema : keel_device_schema;
    size_t n = fleetd ? fleetd_n : keel_device_schema_len;
    const uint8_t *p = data + 1, *end = data + size;
    const uint8_t *nul = memchr(p, '\0', (size_t)(end - p));
    size_t flen = (size_t)((nul != NULL ? nul : end) - p);
    char *overrides[OVERRIDES_MAX];
    size_t n_over = 0;
    for (const uint8_t *q = nul != NULL ? nul + 1 : end; q < end && n_over < OVERRIDES_MAX;) {
        const uint8_t *z = memchr(q, '\0', (size_t)(end - q));
        size_t len = (size_t)((z != NULL ? z : end) - q);
        overrides[n_over] = strndup((const char *)q, len);
        if (overrides[n_over] == NULL)
            abort();
        n_over++;
        q += len + 1;
    }
    char path[64];
    int fd = mem_file(p, flen, path, sizeof path);
    keel_config_t *c = NULL;
    keel_status_t st = KEEL_ERR_IO;
    if (fd >= 0 && fleetd) {
        st = keel_config_load(path, schema, n, &c);
        for (size_t i = 0; st == KEEL_OK && i < n_over; i++)
            st = keel_config_override(c, overrides[i]);
        if (st != KEEL_OK) {
            keel_config_free(c);
            c = NULL;
        }
    } else if (fd >= 0) {
        st = keel_device_config_load(path, overrides, n_over, &c);
    }
    keel_error_clear();
    if (st == KEEL_OK) {
        for (size_t i = 0; i < n; i++)
            check_value(c, &schema[i]);
        check_uses(c, fleetd);
        check_round_trip(c, schema, n, fleetd);
        keel_config_free(c);
    }
    if (fd >= 0)
        close(fd);
    for (size_t i = 0; i < n_over; i++)
        free(overrides[i]);
    return 0;
}

/* Strict INI configuration checked against a schema. */
#include "keel/config.h"

#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct keel_config {
    const keel_cfg_key_t *schema;
    size_t n;
    char **values; /* one per schema entry; NULL = unset (the default applies) */
    unsigned *lines; /* line that set it, 0 = default or override */
    char dir[KEEL_PATH_MAX];
    char file[KEEL_PATH_MAX];
};

static ssize_t find_key(const keel_config_t *c, const char *section, size_t slen, const char *key,
                        size_t klen)
{
    for (size_t i = 0; i < c->n; i++)
        if (strlen(c->schema[i].section) == slen && strncmp(c->schema[i].section, section, slen) == 0 &&
            strlen(c->schema[i].key) == klen && strncmp(c->schema[i].key, key, klen) == 0)
            return (ssize_t)i;
    return -1;
}

static int section_known(const keel_config_t *c, const char *section, size_t slen)
{
    for (size_t i = 0; i < c->n; i++)
        if (strlen(c->schema[i].section) == slen && strncmp(c->schema[i].section, section, slen) == 0)
            return 1;
    return 0;
}

static int parse_bool(const char *v, int *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcmp(v, yes[i]) == 0)
            return *out = 1, 1;
        if (strcmp(v, no[i]) == 0)
            return *out = 0, 1;
    }
    return 0;
}

static int parse_uint(const char *v, uint64_t *out)
{
    if (*v < '0' || *v > '9')
        return 0;
    errno = 0;
    char *end = NULL;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno != 0 || *end != '\0')
        return 0;
    *out = x;
    return 1;
}

/* Checks `v` against the schema entry; `where` prefixes the message. */
static keel_status_t check_value(const keel_cfg_key_t *k, const char *v, const char *where)
{
    if (strlen(v) > KEEL_CONFIG_VALUE_MAX)
        return keel_errorf(KEEL_ERR_CONFIG, "%s: value of %s.%s is longer than %u bytes", where, k->section,
                           k->key, KEEL_CONFIG_VALUE_MAX);
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return keel_errorf(KEEL_ERR_CONFIG, "%s: %s.%s contains a control character", where, k->section,
                               k->key);
    int b;
    uint64_t u;
    switch (k->type) {
    case KEEL_CFG_BOOL:
        if (!parse_bool(v, &b))
            return keel_errorf(KEEL_ERR_CONFIG, "%s: %s.%s must be true or false, not '%s'", where,
                               k->section, k->key, v);
        break;
    case KEEL_CFG_UINT:
        if (!parse_uint(v, &u) || u < k->min || u > k->max)
            return keel_errorf(KEEL_ERR_CONFIG, "%s: %s.%s must be a whole number from %llu to %llu, not '%s'",
                               where, k->section, k->key, (unsigned long long)k->min,
                               (unsigned long long)k->max, v);
        break;
    case KEEL_CFG_PATH:
    case KEEL_CFG_STRING:
        if (*v == '\0')
            return keel_errorf(KEEL_ERR_CONFIG, "%s: %s.%s is empty", where, k->section, k->key);
        break;
    }
    return KEEL_OK;
}

static keel_status_t set_value(keel_config_t *c, size_t i, const char *v, unsigned line)
{
    char *copy = strdup(v);
    if (copy == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    free(c->values[i]);
    c->values[i] = copy;
    c->lines[i] = line;
    return KEEL_OK;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

static keel_status_t parse_line(keel_config_t *c, char *raw, unsigned line, char *section, size_t cap)
{
    char where[KEEL_PATH_MAX + 16];
    snprintf(where, sizeof where, "%s:%u", c->file, line);
    char *s = trim(raw);
    if (*s == '\0' || *s == '#' || *s == ';')
        return KEEL_OK;
    if (*s == '[') {
        char *end = strchr(s, ']');
        if (end == NULL || *trim(end + 1) != '\0')
            return keel_errorf(KEEL_ERR_CONFIG, "%s: malformed section header", where);
        *end = '\0';
        char *name = trim(s + 1);
        if (!section_known(c, name, strlen(name)))
            return keel_errorf(KEEL_ERR_CONFIG, "%s: unknown section [%s]", where, name);
        return keel_strlcpy(section, name, cap);
    }
    char *eq = strchr(s, '=');
    if (eq == NULL)
        return keel_errorf(KEEL_ERR_CONFIG, "%s: expected 'key = value'", where);
    *eq = '\0';
    char *key = trim(s), *value = trim(eq + 1);
    if (*section == '\0')
        return keel_errorf(KEEL_ERR_CONFIG, "%s: '%s' is outside any [section]", where, key);
    ssize_t i = find_key(c, section, strlen(section), key, strlen(key));
    if (i < 0)
        return keel_errorf(KEEL_ERR_CONFIG, "%s: unknown key '%s' in [%s]", where, key, section);
    if (c->lines[i] != 0)
        return keel_errorf(KEEL_ERR_CONFIG, "%s: %s.%s is already set on line %u", where, section, key,
                           c->lines[i]);
    keel_status_t st = check_value(&c->schema[i], value, where);
    return st == KEEL_OK ? set_value(c, (size_t)i, value, line) : st;
}

void keel_config_free(keel_config_t *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++)
        free(c->values[i]);
    free(c->values);
    free(c->lines);
    free(c);
}

keel_status_t keel_config_load(const char *path, const keel_cfg_key_t *schema, size_t n, keel_config_t **out)
{
    keel_config_t *c = calloc(1, sizeof *c);
    if (c == NULL || (c->values = calloc(n, sizeof *c->values)) == NULL ||
        (c->lines = calloc(n, sizeof *c->lines)) == NULL) {
        keel_config_free(c);
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    c->schema = schema;
    c->n = n;
    char tmp[KEEL_PATH_MAX];
    keel_status_t st = keel_strlcpy(c->file, path, sizeof c->file);
    if (st == KEEL_OK)
        st = keel_strlcpy(tmp, path, sizeof tmp);
    if (st == KEEL_OK)
        st = keel_strlcpy(c->dir, dirname(tmp), sizeof c->dir);
    keel_buf_t b;
    if (st == KEEL_OK && (st = keel_file_read(path, KEEL_CONFIG_FILE_MAX, &b)) != KEEL_OK) {
        char why[KEEL_ERROR_MAX];
        snprintf(why, sizeof why, "%s", keel_error_message());
        st = keel_errorf(KEEL_ERR_CONFIG, "configuration %s", why);
    }
    if (st != KEEL_OK) {
        keel_config_free(c);
        return st;
    }
    if (memchr(b.data, '\0', b.len) != NULL)
        st = keel_errorf(KEEL_ERR_CONFIG, "%s: contains a NUL byte", path);
    char section[128] = "";
    unsigned line = 0;
    char *p = (char *)b.data;
    while (st == KEEL_OK && *p != '\0') {
        line++;
        char *nl = strchr(p, '\n');
        size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
        if (len > KEEL_CONFIG_LINE_MAX) {
            st = keel_errorf(KEEL_ERR_CONFIG, "%s:%u: line longer than %u bytes", path, line,
                             KEEL_CONFIG_LINE_MAX);
            break;
        }
        if (nl != NULL)
            *nl = '\0';
        st = parse_line(c, p, line, section, sizeof section);
        p = nl != NULL ? nl + 1 : p + len;
    }
    keel_buf_free(&b);
    if (st != KEEL_OK) {
        keel_config_free(c);
        return st;
    }
    *out = c;
    return KEEL_OK;
}

keel_status_t keel_config_override(keel_config_t *c, const char *assignment)
{
    const char *dot = strchr(assignment, '.'), *eq = strchr(assignment, '=');
    if (dot == NULL || eq == NULL || dot > eq)
        return keel_errorf(KEEL_ERR_CONFIG, "override '%s' is not section.key=value", assignment);
    ssize_t i = find_key(c, assignment, (size_t)(dot - assignment), dot + 1, (size_t)(eq - dot - 1));
    if (i < 0)
        return keel_errorf(KEEL_ERR_CONFIG, "override: unknown key '%.*s'", (int)(eq - assignment), assignment);
    /* Trimmed as a file's value is: whatever -o sets, a file can hold. */
    char *copy = strdup(eq + 1);
    if (copy == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    const char *value = trim(copy);
    keel_status_t st = check_value(&c->schema[i], value, "override");
    if (st == KEEL_OK)
        st = set_value(c, (size_t)i, value, 0);
    free(copy);
    return st;
}

static size_t index_of(const keel_config_t *c, const char *section, const char *key)
{
    ssize_t i = find_key(c, section, strlen(section), key, strlen(key));
    if (i < 0) {
        keel_log(KEEL_LOG_ERROR, "configuration key %s.%s is not in the schema", section, key);
        abort();
    }
    return (size_t)i;
}

const char *keel_config_str(const keel_config_t *c, const char *section, const char *key)
{
    size_t i = index_of(c, section, key);
    return c->values[i] != NULL ? c->values[i] : c->schema[i].def;
}

keel_status_t keel_config_path(const keel_config_t *c, const char *section, const char *key, char *out)
{
    const char *v = keel_config_str(c, section, key);
    if (v == NULL)
        return keel_errorf(KEEL_ERR_NOT_FOUND, "%s.%s is not set", section, key);
    if (v[0] == '/')
        return keel_strlcpy(out, v, KEEL_PATH_MAX);
    if (strcmp(v, ".") == 0)
        return keel_strlcpy(out, c->dir, KEEL_PATH_MAX);
    return keel_path_join(out, KEEL_PATH_MAX, c->dir, v);
}

uint64_t keel_config_uint(const keel_config_t *c, const char *section, const char *key)
{
    const char *v = keel_config_str(c, section, key);
    uint64_t u = 0;
    return v != NULL && parse_uint(v, &u) ? u : 0;
}

int keel_config_bool(const keel_config_t *c, const char *section, const char *key)
{
    const char *v = keel_config_str(c, section, key);
    int b = 0;
    return v != NULL && parse_bool(v, &b) ? b : 0;
}

const char *keel_config_dir(const keel_config_t *c)
{
    return c->dir;
}

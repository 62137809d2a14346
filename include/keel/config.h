/*
 * keel/config.h - strict INI configuration (`[section]`, `key = value`,
 * `#` comments), checked against a schema. An unknown section or key, a
 * duplicate, or a value of the wrong type or range is an error naming
 * file:line. Any key can be overridden with "section.key=value" (keeld -o).
 */
#ifndef KEEL_CONFIG_H
#define KEEL_CONFIG_H

#include "keel/base.h"

#define KEEL_CONFIG_FILE_MAX (1024u * 1024u)
#define KEEL_CONFIG_LINE_MAX 4096u
#define KEEL_CONFIG_VALUE_MAX 1024u

typedef enum {
    KEEL_CFG_STRING, /* printable text */
    KEEL_CFG_PATH,   /* a path; relative paths are resolved against the file's directory */
    KEEL_CFG_UINT,   /* decimal, within [min, max] */
    KEEL_CFG_BOOL,   /* true/false, yes/no, on/off, 1/0 */
} keel_cfg_type_t;

typedef struct {
    const char *section;
    const char *key;
    keel_cfg_type_t type;
    const char *def; /* default value, or NULL for "unset" */
    uint64_t min, max; /* KEEL_CFG_UINT only */
} keel_cfg_key_t;

typedef struct keel_config keel_config_t;

/* Parses `path` against `schema` (n entries). `*out` is valid only on KEEL_OK;
 * errors are KEEL_ERR_CONFIG with "file:line: why". */
keel_status_t keel_config_load(const char *path, const keel_cfg_key_t *schema, size_t n,
                               keel_config_t **out) KEEL_MUST_CHECK;
/* Applies one "section.key=value" override (same checks as the file). */
keel_status_t keel_config_override(keel_config_t *c, const char *assignment) KEEL_MUST_CHECK;
void keel_config_free(keel_config_t *c);

/* Typed getters. A key not in the schema is a programming error and aborts. */
const char *keel_config_str(const keel_config_t *c, const char *section, const char *key);
/* Resolved path into out (KEEL_PATH_MAX); KEEL_ERR_NOT_FOUND when unset. */
keel_status_t keel_config_path(const keel_config_t *c, const char *section, const char *key,
                               char *out) KEEL_MUST_CHECK;
uint64_t keel_config_uint(const keel_config_t *c, const char *section, const char *key);
int keel_config_bool(const keel_config_t *c, const char *section, const char *key);
/* Directory of the configuration file (for relative paths). */
const char *keel_config_dir(const keel_config_t *c);

#endif

/*
 * Personal data on the device: the declaration (docs/privacy.md), the
 * telemetry allow-list and consent gate, sealed records with retention,
 * consent and its log, the Data Act export and the cloud-erase receipts.
 * Decisions: docs/internals/privacy.md.
 */
#include "keel/privacy.h"

#include "keel/crypto.h"

#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DECL_FORMAT "keel-declaration-1"
#define PATH_MAX_LEN 160
#define VIA_MAX 16
#define ERASE_ID_LEN 32
/* The sealed record: {"c":category,"t":created,"d":data} around the data. */
#define RECORD_ENVELOPE_MAX (KEEL_PRIVACY_RECORD_MAX + KEEL_PRIVACY_ID_MAX + 64)
#define LOG_ENTRY_MAX 512
#define SECONDS_PER_DAY 86400

typedef enum { FT_NUMBER, FT_INTEGER, FT_BOOLEAN, FT_STRING } field_type_t;

typedef struct {
    const char *id; /* borrowed from the declaration */
    const char *description;
    bool consent;   /* legal_basis "consent": telemetry and records wait for it */
    int64_t retention_s;
    bool given;     /* consent given at the current consent version */
} category_t;

typedef struct {
    const char *name;
    field_type_t type;
    size_t category;
} field_t;

struct keel_privacy {
    keel_vault_t *v;
    sqlite3 *db;
    json_t *decl; /* NULL: nothing declared */
    const char *consent_version;
    category_t *cats;
    size_t n_cats;
    field_t *fields;
    size_t n_fields;
};

/* ---- the declaration ------------------------------------------------------- */

static const char *const legal_bases[] = {
    "consent", "contract", "legal-obligation", "vital-interests", "public-task", "legitimate-interests",
};
static const char *const field_types[] = {"number", "integer", "boolean", "string"};

static keel_status_t bad(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static keel_status_t bad(const char *path, const char *fmt, ...)
{
    char msg[KEEL_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        msg[0] = '\0';
    return keel_errorf(KEEL_ERR_FORMAT, "declaration: %s: %s", path, msg);
}
#ifdef __clang_analyzer__
/* For the static analyzer, which does not follow variadic calls: what bad returns. */
#define bad(...) ((void)bad(__VA_ARGS__), KEEL_ERR_FORMAT)
#endif

/* JSON paths for messages; a path too long to show ends in "...". */
static void path_done(char out[PATH_MAX_LEN], int n)
{
    if (n < 0 || n >= PATH_MAX_LEN)
        memcpy(out + PATH_MAX_LEN - 4, "...", 4);
}

static void sub(char out[PATH_MAX_LEN], const char *path, const char *key)
{
    path_done(out, snprintf(out, PATH_MAX_LEN, "%s.%s", path, key));
}

static void item(char out[PATH_MAX_LEN], const char *path, size_t i)
{
    path_done(out, snprintf(out, PATH_MAX_LEN, "%s[%zu]", path, i));
}

/* Unknown keys are refused: a misspelt "retention_day" must not silently
 * leave a category without its retention. */
static keel_status_t keys_only(const json_t *o, const char *path, const char *const *allowed, size_t n)
{
    if (!json_is_object(o))
        return bad(path, "must be an object");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)o, key, val) {
        size_t i = 0;
        while (i < n && strcmp(key, allowed[i]) != 0)
            i++;
        if (i == n) {
            char p[PATH_MAX_LEN], k[KEEL_PRIVACY_ID_MAX + 1];
            snprintf(k, sizeof k, "%s", key);
            for (char *c = k; *c; c++)
                if ((unsigned char)*c < 0x20 || *c == 0x7f)
                    *c = '?';
            sub(p, path, k);
            return bad(p, "unknown key");
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (json_object_get(o, allowed[i]) == NULL) {
            char p[PATH_MAX_LEN];
            sub(p, path, allowed[i]);
            return bad(p, "is missing");
        }
    }
    return KEEL_OK;
}

static bool text_ok(const char *s, size_t len, size_t max)
{
    if (len == 0 || len > max || strlen(s) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

/* Ids: what a test lab types and a URL carries, [a-z0-9][a-z0-9._-]*. */
static bool id_ok(const char *s)
{
    size_t n = strnlen(s, KEEL_PRIVACY_ID_MAX + 1);
    if (n == 0 || n > KEEL_PRIVACY_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return false;
    }
    return true;
}

/* Telemetry field names are JSON keys the app chose: [A-Za-z0-9_][A-Za-z0-9_.-]*. */
static bool field_name_ok(const char *s)
{
    size_t n = strnlen(s, KEEL_PRIVACY_ID_MAX + 1);
    if (n == 0 || n > KEEL_PRIVACY_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool w = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        if (!w && (i == 0 || (c != '.' && c != '-')))
            return false;
    }
    return true;
}

typedef enum { S_TEXT, S_NAME, S_ID, S_FIELD, S_VERSION } str_kind_t;

static keel_status_t get_str(const json_t *o, const char *path, const char *key, str_kind_t kind, const char **out)
{
    char p[PATH_MAX_LEN];
    sub(p, path, key);
    const json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        return bad(p, "must be a string");
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    bool ok;
    switch (kind) {
    case S_ID: ok = strlen(s) == len && id_ok(s); break;
    case S_FIELD: ok = strlen(s) == len && field_name_ok(s); break;
    case S_NAME: ok = text_ok(s, len, KEEL_PRIVACY_NAME_MAX); break;
    case S_VERSION: ok = text_ok(s, len, KEEL_PRIVACY_VERSION_MAX); break;
    default: ok = text_ok(s, len, KEEL_PRIVACY_TEXT_MAX); break;
    }
    if (!ok) {
        switch (kind) {
        case S_ID: return bad(p, "must be 1..64 characters of [a-z0-9._-], starting with a letter or digit");
        case S_FIELD: return bad(p, "must be 1..64 characters of [A-Za-z0-9_.-], starting with a letter, digit or _");
        case S_NAME: return bad(p, "must be 1..256 bytes of text without control characters");
        case S_VERSION: return bad(p, "must be 1..32 bytes of text without control characters");
        default: return bad(p, "must be 1..1024 bytes of text without control characters");
        }
    }
    if (out != NULL)
        *out = s;
    return KEEL_OK;
}

static keel_status_t get_bool(const json_t *o, const char *path, const char *key, bool *out)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_boolean(v)) {
        char p[PATH_MAX_LEN];
        sub(p, path, key);
        return bad(p, "must be true or false");
    }
    *out = json_is_true(v);
    return KEEL_OK;
}

static keel_status_t get_array(const json_t *o, const char *path, const char *key, size_t max, const json_t **out)
{
    const json_t *v = json_object_get(o, key);
    char p[PATH_MAX_LEN];
    sub(p, path, key);
    if (!json_is_array(v))
        return bad(p, "must be an array");
    if (json_array_size(v) > max) {
        char n[32];
        snprintf(n, sizeof n, "%zu", max);
        return bad(p, "has more than %s entries", n);
    }
    *out = v;
    return KEEL_OK;
}

static int one_of(const char *s, const char *const *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, set[i]) == 0)
            return (int)i;
    return -1;
}

static keel_status_t check_sensing(const json_t *arr, const char *path)
{
    static const char *const keys[] = {"id", "description", "personal"};
    size_t i;
    const json_t *e;
    json_array_foreach(arr, i, e) {
        char p[PATH_MAX_LEN];
        const char *id = NULL;
        bool personal;
        item(p, path, i);
        keel_status_t st = keys_only(e, p, keys, 3);
        if (st == KEEL_OK)
            st = get_str(e, p, "id", S_ID, &id);
        if (st == KEEL_OK)
            st = get_str(e, p, "description", S_TEXT, NULL);
        if (st == KEEL_OK)
            st = get_bool(e, p, "personal", &personal);
        for (size_t j = 0; st == KEEL_OK && j < i; j++)
            if (strcmp(id, json_string_value(json_object_get(json_array_get(arr, j), "id"))) == 0)
                st = bad(p, "repeats the id '%s'", id);
        if (st != KEEL_OK)
            return st;
    }
    return KEEL_OK;
}

static keel_status_t check_category(const json_t *arr, size_t i, const char *p)
{
    static const char *const keys[] = {"id", "description", "personal", "sensitive", "purpose",
                                       "recipients", "legal_basis", "retention_days"};
    const json_t *e = json_array_get(arr, i), *rec = NULL;
    const char *id, *basis;
    bool personal, sensitive;
    keel_status_t st = keys_only(e, p, keys, sizeof keys / sizeof keys[0]);
    if (st == KEEL_OK)
        st = get_str(e, p, "id", S_ID, &id);
    if (st == KEEL_OK)
        st = get_str(e, p, "description", S_TEXT, NULL);
    if (st == KEEL_OK)
        st = get_bool(e, p, "personal", &personal);
    if (st == KEEL_OK)
        st = get_bool(e, p, "sensitive", &sensitive);
    if (st == KEEL_OK)
        st = get_str(e, p, "purpose", S_TEXT, NULL);
    if (st == KEEL_OK)
        st = get_array(e, p, "recipients", KEEL_PRIVACY_RECIPIENTS_MAX, &rec);
    if (st == KEEL_OK)
        st = get_str(e, p, "legal_basis", S_ID, &basis);
    if (st != KEEL_OK)
        return st;
    char q[PATH_MAX_LEN];
    size_t j;
    const json_t *r;
    json_array_foreach(rec, j, r) {
        sub(q, p, "recipients");
        char rp[PATH_MAX_LEN];
        item(rp, q, j);
        if (!json_is_string(r) || !text_ok(json_string_value(r), json_string_length(r), KEEL_PRIVACY_NAME_MAX))
            return bad(rp, "must be 1..256 bytes of text without control characters");
    }
    if (one_of(basis, legal_bases, sizeof legal_bases / sizeof legal_bases[0]) < 0) {
        sub(q, p, "legal_basis");
        return bad(q, "'%s' is not one of consent, contract, legal-obligation, vital-interests, public-task, "
                      "legitimate-interests", basis);
    }
    const json_t *days = json_object_get(e, "retention_days");
    if (!json_is_integer(days) || json_integer_value(days) < 1 ||
        json_integer_value(days) > KEEL_PRIVACY_RETENTION_DAYS_MAX) {
        sub(q, p, "retention_days");
        return bad(q, "must be a whole number of days, 1..3650");
    }
    if (sensitive && !personal) {
        sub(q, p, "sensitive");
        return bad(q, "sensitive data is personal data: set \"personal\": true");
    }
    for (j = 0; j < i; j++)
        if (strcmp(id, json_string_value(json_object_get(json_array_get(arr, j), "id"))) == 0)
            return bad(p, "repeats the id '%s'", id);
    return KEEL_OK;
}

static keel_status_t check_telemetry(const json_t *arr, const json_t *cats, const char *path)
{
    static const char *const keys[] = {"field", "type", "category", "why"};
    size_t i;
    const json_t *e;
    json_array_foreach(arr, i, e) {
        char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
        const char *name, *type, *cat;
        item(p, path, i);
        keel_status_t st = keys_only(e, p, keys, 4);
        if (st == KEEL_OK)
            st = get_str(e, p, "field", S_FIELD, &name);
        if (st == KEEL_OK)
            st = get_str(e, p, "type", S_ID, &type);
        if (st == KEEL_OK)
            st = get_str(e, p, "category", S_ID, &cat);
        if (st == KEEL_OK)
            st = get_str(e, p, "why", S_TEXT, NULL);
        if (st != KEEL_OK)
            return st;
        if (one_of(type, field_types, 4) < 0) {
            sub(q, p, "type");
            return bad(q, "'%s' is not one of number, integer, boolean, string", type);
        }
        size_t j;
        const json_t *c;
        bool found = false;
        json_array_foreach(cats, j, c) found = found || strcmp(cat, json_string_value(json_object_get(c, "id"))) == 0;
        if (!found) {
            sub(q, p, "category");
            return bad(q, "names the undeclared category '%s'", cat);
        }
        for (j = 0; j < i; j++)
            if (strcmp(name, json_string_value(json_object_get(json_array_get(arr, j), "field"))) == 0)
                return bad(p, "repeats the field '%s'", name);
    }
    return KEEL_OK;
}

keel_status_t keel_privacy_declaration_check(const json_t *d, const char *root)
{
    static const char *const keys[] = {"format", "product", "controller", "consent_version",
                                       "sensing", "categories", "telemetry"};
    static const char *const ckeys[] = {"name", "contact"};
    const char *path = root != NULL ? root : "$";
    const char *fmt;
    const json_t *sensing = NULL, *cats = NULL, *tel = NULL;
    char p[PATH_MAX_LEN];
    keel_status_t st = keys_only(d, path, keys, sizeof keys / sizeof keys[0]);
    if (st == KEEL_OK)
        st = get_str(d, path, "format", S_NAME, &fmt);
    if (st == KEEL_OK && strcmp(fmt, DECL_FORMAT) != 0) {
        sub(p, path, "format");
        st = bad(p, "must be \"" DECL_FORMAT "\", not '%s'", fmt);
    }
    if (st == KEEL_OK)
        st = get_str(d, path, "product", S_NAME, NULL);
    if (st == KEEL_OK) {
        sub(p, path, "controller");
        const json_t *c = json_object_get(d, "controller");
        st = keys_only(c, p, ckeys, 2);
        if (st == KEEL_OK)
            st = get_str(c, p, "name", S_NAME, NULL);
        if (st == KEEL_OK)
            st = get_str(c, p, "contact", S_NAME, NULL);
    }
    if (st == KEEL_OK)
        st = get_str(d, path, "consent_version", S_VERSION, NULL);
    if (st == KEEL_OK)
        st = get_array(d, path, "sensing", KEEL_PRIVACY_SENSING_MAX, &sensing);
    if (st == KEEL_OK)
        st = get_array(d, path, "categories", KEEL_PRIVACY_CATEGORIES_MAX, &cats);
    if (st == KEEL_OK)
        st = get_array(d, path, "telemetry", KEEL_PRIVACY_TELEMETRY_MAX, &tel);
    if (st == KEEL_OK) {
        sub(p, path, "sensing");
        st = check_sensing(sensing, p);
    }
    for (size_t i = 0; st == KEEL_OK && i < json_array_size(cats); i++) {
        char q[PATH_MAX_LEN];
        sub(p, path, "categories");
        item(q, p, i);
        st = check_category(cats, i, q);
    }
    if (st == KEEL_OK) {
        sub(p, path, "telemetry");
        st = check_telemetry(tel, cats, p);
    }
    return st;
}

keel_status_t keel_privacy_declaration_load(const char *path, json_t **out)
{
    if (out != NULL)
        *out = NULL;
    if (path == NULL)
        return keel_errorf(KEEL_ERR_ARG, "declaration: no path");
    keel_buf_t b;
    keel_status_t st = keel_file_read(path, KEEL_PRIVACY_DECL_MAX, &b);
    if (st == KEEL_ERR_TOO_LARGE)
        return keel_errorf(st, "declaration %s is over %u bytes", path, KEEL_PRIVACY_DECL_MAX);
    if (st != KEEL_OK)
        return st;
    json_error_t e;
    json_t *d = json_loadb((const char *)b.data, b.len, JSON_REJECT_DUPLICATES, &e);
    keel_buf_free(&b);
    if (d == NULL)
        return keel_errorf(KEEL_ERR_FORMAT, "declaration %s: line %d: %s", path, e.line, e.text);
    st = keel_privacy_declaration_check(d, "$");
    if (st != KEEL_OK) {
        char why[KEEL_ERROR_MAX];
        snprintf(why, sizeof why, "%s", keel_error_message());
        json_decref(d);
        return keel_errorf(st, "%s: %s", path, why);
    }
    if (out != NULL)
        *out = d;
    else
        json_decref(d);
    return KEEL_OK;
}

/* ---- the database ------------------------------------------------------------ */

static keel_status_t db_error(sqlite3 *db, const char *what)
{
    return keel_errorf(KEEL_ERR_DB, "privacy: %s: %s", what, sqlite3_errmsg(db));
}

static keel_status_t prep(sqlite3 *db, const char *sql, sqlite3_stmt **s)
{
    *s = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, s, NULL) != SQLITE_OK)
        return db_error(db, sql);
    return KEEL_OK;
}

static keel_status_t fin(sqlite3 *db, sqlite3_stmt *s, keel_status_t st)
{
    if (sqlite3_finalize(s) != SQLITE_OK && st == KEEL_OK)
        st = db_error(db, "finalize");
    return st;
}

static keel_status_t exec(sqlite3 *db, const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_error(db, sql);
    return KEEL_OK;
}

/* A savepoint, not BEGIN: keeld may call in while the outbox holds a batch
 * open on the same connection. */
static keel_status_t tx_begin(keel_privacy_t *p)
{
    return exec(p->db, "SAVEPOINT keel_privacy");
}

static keel_status_t tx_end(keel_privacy_t *p, keel_status_t st)
{
    /* A RELEASE that fails (it commits when it is the outermost: a full
     * disk, a deferred constraint) leaves the savepoint open; left so, every
     * later write of keeld would nest in it and never reach the disk. */
    if (st == KEEL_OK && (st = exec(p->db, "RELEASE keel_privacy")) == KEEL_OK)
        return KEEL_OK;
    if (sqlite3_exec(p->db, "ROLLBACK TO keel_privacy; RELEASE keel_privacy", NULL, NULL, NULL) != SQLITE_OK)
        keel_log(KEEL_LOG_WARN, "privacy: rollback failed: %s", sqlite3_errmsg(p->db));
    return st;
}

/* Runs a one-value query with one optional text parameter. */
static keel_status_t query_int64(sqlite3 *db, const char *sql, const char *arg, int64_t *out)
{
    sqlite3_stmt *s;
    keel_status_t st = prep(db, sql, &s);
    if (st != KEEL_OK)
        return st;
    if (arg != NULL && sqlite3_bind_text(s, 1, arg, -1, SQLITE_TRANSIENT) != SQLITE_OK)
        st = db_error(db, "bind");
    else if (sqlite3_step(s) != SQLITE_ROW)
        st = db_error(db, sql);
    else
        *out = sqlite3_column_int64(s, 0);
    return fin(db, s, st);
}

/* Deleted rows may live on as page images in the WAL until a checkpoint. */
static void checkpoint(keel_privacy_t *p)
{
    if (!sqlite3_get_autocommit(p->db))
        return;
    if (sqlite3_wal_checkpoint_v2(p->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL) != SQLITE_OK)
        keel_log(KEEL_LOG_WARN, "privacy: WAL checkpoint did not complete: %s", sqlite3_errmsg(p->db));
}

static int64_t wallclock(void)
{
    return (int64_t)time(NULL);
}

/* ---- open, consent cache ---------------------------------------------------------- */

static category_t *category_find(keel_privacy_t *p, const char *id)
{
    for (size_t i = 0; i < p->n_cats; i++)
        if (strcmp(p->cats[i].id, id) == 0)
            return &p->cats[i];
    return NULL;
}

keel_status_t keel_privacy_reload(keel_privacy_t *p)
{
    if (p == NULL)
        return keel_errorf(KEEL_ERR_ARG, "privacy reload: missing argument");
    for (size_t i = 0; i < p->n_cats; i++)
        p->cats[i].given = false;
    if (p->decl == NULL)
        return KEEL_OK;
    sqlite3_stmt *s;
    keel_status_t st = prep(p->db, "SELECT purpose FROM consent WHERE given = 1 AND version = ?1", &s);
    if (st != KEEL_OK)
        return st;
    if (sqlite3_bind_text(s, 1, p->consent_version, -1, SQLITE_TRANSIENT) != SQLITE_OK)
        st = db_error(p->db, "bind");
    int rc = SQLITE_DONE;
    while (st == KEEL_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *purpose = (const char *)sqlite3_column_text(s, 0);
        category_t *c = purpose != NULL ? category_find(p, purpose) : NULL;
        if (c != NULL && c->consent)
            c->given = true;
    }
    if (st == KEEL_OK && rc != SQLITE_DONE)
        st = db_error(p->db, "read consent");
    return fin(p->db, s, st);
}

static keel_status_t build_index(keel_privacy_t *p)
{
    const json_t *cats = json_object_get(p->decl, "categories"), *tel = json_object_get(p->decl, "telemetry");
    p->consent_version = json_string_value(json_object_get(p->decl, "consent_version"));
    p->n_cats = json_array_size(cats);
    p->n_fields = json_array_size(tel);
    p->cats = calloc(p->n_cats + 1, sizeof *p->cats);
    p->fields = calloc(p->n_fields + 1, sizeof *p->fields);
    if (p->cats == NULL || p->fields == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < p->n_cats; i++) {
        const json_t *c = json_array_get(cats, i);
        p->cats[i].id = json_string_value(json_object_get(c, "id"));
        p->cats[i].description = json_string_value(json_object_get(c, "description"));
        p->cats[i].consent = strcmp(json_string_value(json_object_get(c, "legal_basis")), "consent") == 0;
        p->cats[i].retention_s = (int64_t)json_integer_value(json_object_get(c, "retention_days")) * SECONDS_PER_DAY;
    }
    for (size_t i = 0; i < p->n_fields; i++) {
        const json_t *f = json_array_get(tel, i);
        p->fields[i].name = json_string_value(json_object_get(f, "field"));
        p->fields[i].type = (field_type_t)one_of(json_string_value(json_object_get(f, "type")), field_types, 4);
        const char *cat = json_string_value(json_object_get(f, "category"));
        for (size_t j = 0; j < p->n_cats; j++)
            if (strcmp(p->cats[j].id, cat) == 0)
                p->fields[i].category = j;
    }
    return KEEL_OK;
}

void keel_privacy_close(keel_privacy_t *p)
{
    if (p == NULL)
        return;
    json_decref(p->decl);
    free(p->cats);
    free(p->fields);
    free(p);
}

keel_status_t keel_privacy_open(keel_vault_t *v, const char *decl_path, keel_privacy_t **out)
{
    if (out != NULL)
        *out = NULL;
    if (v == NULL || out == NULL || keel_vault_db(v) == NULL)
        return keel_errorf(KEEL_ERR_ARG, "privacy open: missing argument");
    keel_privacy_t *p = calloc(1, sizeof *p);
    if (p == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    p->v = v;
    p->db = keel_vault_db(v);
    keel_status_t st = KEEL_OK;
    if (decl_path != NULL) {
        st = keel_privacy_declaration_load(decl_path, &p->decl);
        if (st == KEEL_OK)
            st = build_index(p);
    }
    if (st == KEEL_OK)
        st = keel_privacy_reload(p);
    if (st != KEEL_OK) {
        keel_privacy_close(p);
        return st;
    }
    *out = p;
    return KEEL_OK;
}

const json_t *keel_privacy_declaration(const keel_privacy_t *p)
{
    return p != NULL ? p->decl : NULL;
}

/* ---- telemetry (6-4, consent 6-2) ------------------------------------------------- */

/* Names from the app go into messages: printable and short. */
static void printable(char out[KEEL_PRIVACY_ID_MAX + 1], const char *s)
{
    snprintf(out, KEEL_PRIVACY_ID_MAX + 1, "%s", s);
    for (char *c = out; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
            *c = '?';
}

static bool type_ok(const json_t *v, field_type_t t)
{
    switch (t) {
    case FT_NUMBER: return json_is_number(v);
    case FT_INTEGER: return json_is_integer(v);
    case FT_BOOLEAN: return json_is_boolean(v);
    default: return json_is_string(v) && json_string_length(v) <= KEEL_PRIVACY_TEXT_MAX;
    }
}

keel_status_t keel_privacy_telemetry_check(keel_privacy_t *p, json_t *t, json_t **withheld)
{
    if (withheld != NULL)
        *withheld = NULL;
    if (p == NULL || t == NULL)
        return keel_errorf(KEEL_ERR_ARG, "telemetry check: missing argument");
    if (!json_is_object(t))
        return keel_errorf(KEEL_ERR_FORMAT, "telemetry must be a JSON object");
    if (json_object_size(t) > p->n_fields)
        return keel_errorf(KEEL_ERR_FORMAT, "telemetry has %zu fields; %zu are declared", json_object_size(t),
                           p->n_fields);
    json_t *out = json_array();
    if (out == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    /* The whole object is judged before anything is removed: a refused
     * message is left as it came. */
    const char *key;
    json_t *val;
    json_object_foreach(t, key, val) {
        size_t i = 0;
        while (i < p->n_fields && strcmp(key, p->fields[i].name) != 0)
            i++;
        char name[KEEL_PRIVACY_ID_MAX + 1];
        printable(name, key);
        if (i == p->n_fields) {
            json_decref(out);
            return keel_errorf(KEEL_ERR_FORMAT, "telemetry field '%s' is not declared", name);
        }
        if (!type_ok(val, p->fields[i].type)) {
            json_decref(out);
            return keel_errorf(KEEL_ERR_FORMAT, "telemetry field '%s' must be %s %s", name,
                               p->fields[i].type == FT_INTEGER ? "an" : "a", field_types[p->fields[i].type]);
        }
        const category_t *c = &p->cats[p->fields[i].category];
        if (c->consent && !c->given && json_array_append_new(out, json_string(key)) != 0) {
            json_decref(out);
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        }
    }
    size_t i;
    json_t *name;
    json_array_foreach(out, i, name) json_object_del(t, json_string_value(name));
    if (withheld != NULL)
        *withheld = out;
    else
        json_decref(out);
    return KEEL_OK;
}

/* ---- records and retention (6-6) --------------------------------------------------- */

static keel_status_t next_id(keel_privacy_t *p, const char *table, int64_t *id)
{
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT COALESCE(MAX(id), 0) + 1 FROM %s", table);
    return query_int64(p->db, sql, NULL, id);
}

/* Seals `text` for table.column of row `id`: the blob opens nowhere else. */
static keel_status_t seal_row(keel_privacy_t *p, const char *table, const char *column, int64_t id,
                              const char *text, uint8_t *blob, size_t cap, size_t *n)
{
    char row[32];
    snprintf(row, sizeof row, "%lld", (long long)id);
    return keel_vault_seal(p->v, table, column, row, text, strlen(text), blob, cap, n);
}

keel_status_t keel_privacy_record(keel_privacy_t *p, const char *category, const json_t *data)
{
    if (p == NULL || category == NULL || data == NULL)
        return keel_errorf(KEEL_ERR_ARG, "privacy record: missing argument");
    if (category_find(p, category) == NULL) {
        char name[KEEL_PRIVACY_ID_MAX + 1];
        printable(name, category);
        return keel_errorf(KEEL_ERR_NOT_FOUND, "privacy record: category '%s' is not declared", name);
    }
    char *d = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    if (d == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    size_t dlen = strlen(d);
    keel_wipe(d, dlen);
    free(d);
    if (dlen > KEEL_PRIVACY_RECORD_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "privacy record of %zu bytes is over %u", dlen,
                           KEEL_PRIVACY_RECORD_MAX);
    int64_t now = wallclock(), id = 0, count = 0;
    json_t *env = json_pack("{s:s,s:I,s:O}", "c", category, "t", (json_int_t)now, "d", (json_t *)data);
    char *text = env != NULL ? json_dumps(env, JSON_COMPACT) : NULL;
    json_decref(env);
    if (text == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    uint8_t blob[RECORD_ENVELOPE_MAX + KEEL_AEAD_OVERHEAD];
    size_t n = 0;
    keel_status_t st = tx_begin(p);
    if (st == KEEL_OK) {
        st = query_int64(p->db, "SELECT COUNT(*) FROM privacy_records", NULL, &count);
        /* A ring: the newest records are kept, so a chatty product can
         * never make the app's publishes fail or the vault grow without
         * bound (the oldest would be the next to age out anyway). */
        if (st == KEEL_OK && count >= KEEL_PRIVACY_RECORDS_MAX)
            st = exec(p->db, "DELETE FROM privacy_records WHERE id IN (SELECT id FROM privacy_records"
                                 " ORDER BY id LIMIT " KEEL_PRIVACY_RECORDS_DROP ")");
        if (st == KEEL_OK)
            st = next_id(p, "privacy_records", &id);
        if (st == KEEL_OK)
            st = seal_row(p, "privacy_records", "data", id, text, blob, sizeof blob, &n);
        sqlite3_stmt *s = NULL;
        if (st == KEEL_OK &&
            (st = prep(p->db, "INSERT INTO privacy_records(id, category, created, data) VALUES (?1, ?2, ?3, ?4)",
                       &s)) == KEEL_OK) {
            if (sqlite3_bind_int64(s, 1, id) != SQLITE_OK ||
                sqlite3_bind_text(s, 2, category, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
                sqlite3_bind_int64(s, 3, now) != SQLITE_OK ||
                sqlite3_bind_blob(s, 4, blob, (int)n, SQLITE_TRANSIENT) != SQLITE_OK)
                st = db_error(p->db, "bind record");
            else if (sqlite3_step(s) != SQLITE_DONE)
                st = db_error(p->db, "store record");
            st = fin(p->db, s, st);
        }
        st = tx_end(p, st);
    }
    keel_wipe(text, strlen(text));
    free(text);
    return st;
}

keel_status_t keel_privacy_record_telemetry(keel_privacy_t *p, const json_t *t)
{
    if (p == NULL || !json_is_object(t))
        return keel_errorf(KEEL_ERR_ARG, "privacy record telemetry: missing argument");
    keel_status_t st = KEEL_OK;
    for (size_t c = 0; st == KEEL_OK && c < p->n_cats; c++) {
        json_t *part = json_object();
        if (part == NULL)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        for (size_t i = 0; st == KEEL_OK && i < p->n_fields; i++) {
            json_t *v = p->fields[i].category == c ? json_object_get(t, p->fields[i].name) : NULL;
            if (v != NULL && json_object_set(part, p->fields[i].name, v) != 0)
                st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        }
        if (st == KEEL_OK && json_object_size(part) > 0)
            st = keel_privacy_record(p, p->cats[c].id, part);
        json_decref(part);
    }
    return st;
}

static keel_status_t delete_older(keel_privacy_t *p, const char *category, int64_t before, uint64_t *removed)
{
    sqlite3_stmt *s;
    keel_status_t st = prep(p->db, "DELETE FROM privacy_records WHERE category = ?1 AND created < ?2", &s);
    if (st != KEEL_OK)
        return st;
    if (sqlite3_bind_text(s, 1, category, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
        sqlite3_bind_int64(s, 2, before) != SQLITE_OK)
        st = db_error(p->db, "bind");
    else if (sqlite3_step(s) != SQLITE_DONE)
        st = db_error(p->db, "retention");
    else
        *removed += (uint64_t)sqlite3_changes(p->db);
    return fin(p->db, s, st);
}

keel_status_t keel_privacy_retention_run(keel_privacy_t *p, int64_t now, uint64_t *removed)
{
    if (removed != NULL)
        *removed = 0;
    if (p == NULL)
        return keel_errorf(KEEL_ERR_ARG, "privacy retention: missing argument");
    uint64_t n = 0;
    keel_status_t st = tx_begin(p);
    if (st != KEEL_OK)
        return st;
    for (size_t i = 0; st == KEEL_OK && i < p->n_cats; i++)
        st = delete_older(p, p->cats[i].id, now - p->cats[i].retention_s, &n);
    /* A category the declaration no longer names has no retention the
     * owner was told of: its records go now. */
    sqlite3_stmt *s = NULL;
    if (st == KEEL_OK && (st = prep(p->db, "SELECT DISTINCT category FROM privacy_records", &s)) == KEEL_OK) {
        json_t *gone = json_array();
        int rc = SQLITE_DONE;
        while (gone != NULL && (rc = sqlite3_step(s)) == SQLITE_ROW) {
            const char *c = (const char *)sqlite3_column_text(s, 0);
            if (c != NULL && category_find(p, c) == NULL)
                json_array_append_new(gone, json_string(c));
        }
        if (gone == NULL)
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        else if (rc != SQLITE_DONE)
            st = db_error(p->db, "retention");
        st = fin(p->db, s, st);
        size_t i;
        json_t *c;
        json_array_foreach(gone, i, c) {
            if (st == KEEL_OK)
                st = delete_older(p, json_string_value(c), INT64_MAX, &n);
        }
        json_decref(gone);
    }
    st = tx_end(p, st);
    if (st != KEEL_OK)
        return st;
    if (n > 0) {
        checkpoint(p);
        keel_log(KEEL_LOG_INFO, "privacy: retention removed %llu record(s)", (unsigned long long)n);
    }
    if (removed != NULL)
        *removed = n;
    return KEEL_OK;
}

/* ---- consent (6-2, 6-3) -------------------------------------------------------------- */

static bool via_ok(const char *s)
{
    size_t n = strnlen(s, VIA_MAX + 1);
    if (n == 0 || n > VIA_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 'a' || s[i] > 'z')
            return false;
    return true;
}

keel_status_t keel_privacy_consent_set(keel_privacy_t *p, const char *purpose, bool given, const char *version,
                                       const char *via)
{
    if (p == NULL || purpose == NULL || version == NULL || via == NULL)
        return keel_errorf(KEEL_ERR_ARG, "consent: missing argument");
    if (!via_ok(via))
        return keel_errorf(KEEL_ERR_ARG, "consent: 'via' must be 1..16 of [a-z]");
    category_t *c = category_find(p, purpose);
    if (c == NULL || !c->consent) {
        char name[KEEL_PRIVACY_ID_MAX + 1];
        printable(name, purpose);
        return keel_errorf(KEEL_ERR_NOT_FOUND, "consent: '%s' is not a purpose that rests on consent", name);
    }
    if (strcmp(version, p->consent_version) != 0)
        return keel_errorf(KEEL_ERR_ARG, "consent: version %.32s is not the current consent version %s",
                           version, p->consent_version);
    int64_t now = wallclock(), id = 0;
    json_t *e = json_pack("{s:s,s:b,s:s,s:s,s:I}", "purpose", purpose, "given", given, "version", version, "via",
                          via, "time", (json_int_t)now);
    char *text = e != NULL ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    if (text == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    uint8_t blob[LOG_ENTRY_MAX + KEEL_AEAD_OVERHEAD];
    size_t n = 0;
    sqlite3_stmt *s = NULL;
    keel_status_t st = tx_begin(p);
    if (st == KEEL_OK) {
        if ((st = prep(p->db, "INSERT OR REPLACE INTO consent(purpose, given, version, time) VALUES (?1, ?2, ?3, ?4)",
                       &s)) == KEEL_OK) {
            if (sqlite3_bind_text(s, 1, purpose, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
                sqlite3_bind_int(s, 2, given ? 1 : 0) != SQLITE_OK ||
                sqlite3_bind_text(s, 3, version, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
                sqlite3_bind_int64(s, 4, now) != SQLITE_OK)
                st = db_error(p->db, "bind consent");
            else if (sqlite3_step(s) != SQLITE_DONE)
                st = db_error(p->db, "store consent");
            st = fin(p->db, s, st);
        }
        if (st == KEEL_OK)
            st = next_id(p, "consent_log", &id);
        if (st == KEEL_OK)
            st = seal_row(p, "consent_log", "record", id, text, blob, sizeof blob, &n);
        if (st == KEEL_OK && (st = prep(p->db, "INSERT INTO consent_log(id, time, record) VALUES (?1, ?2, ?3)", &s)) ==
                                 KEEL_OK) {
            if (sqlite3_bind_int64(s, 1, id) != SQLITE_OK || sqlite3_bind_int64(s, 2, now) != SQLITE_OK ||
                sqlite3_bind_blob(s, 3, blob, (int)n, SQLITE_TRANSIENT) != SQLITE_OK)
                st = db_error(p->db, "bind consent log");
            else if (sqlite3_step(s) != SQLITE_DONE)
                st = db_error(p->db, "store consent log");
            st = fin(p->db, s, st);
        }
        if (st == KEEL_OK && id > KEEL_PRIVACY_LOG_MAX) {
            char sql[96];
            snprintf(sql, sizeof sql, "DELETE FROM consent_log WHERE id <= %lld",
                     (long long)(id - KEEL_PRIVACY_LOG_MAX));
            st = exec(p->db, sql);
        }
        st = tx_end(p, st);
    }
    free(text);
    if (st == KEEL_OK) {
        c->given = given;
        keel_log(KEEL_LOG_INFO, "privacy: consent for %s %s (version %s, via %s)", purpose,
                 given ? "given" : "withdrawn", version, via);
    }
    return st;
}

/* Opens one sealed column of `row` and parses it. */
static keel_status_t open_json(keel_privacy_t *p, const char *table, const char *column, int64_t id,
                               const void *blob, int len, size_t cap, json_t **out)
{
    char row[32];
    snprintf(row, sizeof row, "%lld", (long long)id);
    if (blob == NULL || len <= 0)
        return keel_errorf(KEEL_ERR_VERIFY, "privacy: %s row %s is empty", table, row);
    uint8_t *pt = malloc(cap + 1);
    if (pt == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    size_t n = 0;
    keel_status_t st = keel_vault_open_field(p->v, table, column, row, blob, (size_t)len, pt, cap, &n);
    if (st == KEEL_OK) {
        json_error_t e;
        *out = json_loadb((const char *)pt, n, JSON_REJECT_DUPLICATES, &e);
        if (*out == NULL)
            st = keel_errorf(KEEL_ERR_FORMAT, "privacy: %s row %s: %s", table, row, e.text);
    }
    keel_wipe(pt, cap + 1);
    free(pt);
    return st;
}

/* A damaged row (it no longer opens, or its sealed tag is not its column's)
 * is left out and logged, so that it cannot deny the owner the consent page
 * or the export for as long as it is kept: it is never shown as genuine. */
static bool unreadable(keel_status_t st)
{
    if (st != KEEL_ERR_VERIFY && st != KEEL_ERR_FORMAT)
        return false;
    keel_log(KEEL_LOG_WARN, "%s; left out", keel_error_message());
    keel_error_clear();
    return true;
}

static keel_status_t consent_log_json(keel_privacy_t *p, json_t *log)
{
    sqlite3_stmt *s;
    keel_status_t st = prep(p->db, "SELECT id, record FROM consent_log ORDER BY id DESC", &s);
    if (st != KEEL_OK)
        return st;
    int rc = SQLITE_DONE;
    while (st == KEEL_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        json_t *e = NULL;
        st = open_json(p, "consent_log", "record", sqlite3_column_int64(s, 0), sqlite3_column_blob(s, 1),
                       sqlite3_column_bytes(s, 1), LOG_ENTRY_MAX, &e);
        if (unreadable(st)) {
            st = KEEL_OK;
            continue;
        }
        if (st == KEEL_OK && json_array_append_new(log, e) != 0)
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    if (st == KEEL_OK && rc != SQLITE_DONE)
        st = db_error(p->db, "read consent log");
    return fin(p->db, s, st);
}

keel_status_t keel_privacy_consent_json(keel_privacy_t *p, json_t **out)
{
    if (out != NULL)
        *out = NULL;
    if (p == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "consent json: missing argument");
    json_t *purposes = json_array(), *log = json_array();
    json_t *j = json_pack("{s:o,s:o,s:o}", "consent_version",
                          p->consent_version != NULL ? json_string(p->consent_version) : json_null(), "purposes",
                          purposes, "log", log);
    if (j == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    sqlite3_stmt *s;
    keel_status_t st = prep(p->db, "SELECT given, version, time FROM consent WHERE purpose = ?1", &s);
    for (size_t i = 0; st == KEEL_OK && i < p->n_cats; i++) {
        const category_t *c = &p->cats[i];
        if (!c->consent)
            continue;
        json_t *e = json_pack("{s:s,s:s,s:b,s:b,s:n,s:n}", "purpose", c->id, "description", c->description, "given",
                              0, "current", c->given, "version", "time");
        if (e == NULL || json_array_append_new(purposes, e) != 0) {
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
            break;
        }
        if (sqlite3_bind_text(s, 1, c->id, -1, SQLITE_TRANSIENT) != SQLITE_OK) {
            st = db_error(p->db, "bind");
            break;
        }
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            json_object_set_new(e, "given", json_boolean(sqlite3_column_int(s, 0) != 0));
            json_object_set_new(e, "version", json_string((const char *)sqlite3_column_text(s, 1)));
            json_object_set_new(e, "time", json_integer(sqlite3_column_int64(s, 2)));
        } else if (rc != SQLITE_DONE) {
            st = db_error(p->db, "read consent");
        }
        if (sqlite3_reset(s) != SQLITE_OK && st == KEEL_OK)
            st = db_error(p->db, "read consent");
    }
    if (s != NULL)
        st = fin(p->db, s, st);
    if (st == KEEL_OK)
        st = consent_log_json(p, log);
    if (st != KEEL_OK) {
        json_decref(j);
        return st;
    }
    *out = j;
    return KEEL_OK;
}

/* ---- export (Data Act) ----------------------------------------------------------------- */

static keel_status_t records_json(keel_privacy_t *p, json_t *arr, int64_t *skipped)
{
    *skipped = 0;
    sqlite3_stmt *s;
    keel_status_t st = prep(p->db, "SELECT id, category, created, data FROM privacy_records ORDER BY id", &s);
    if (st != KEEL_OK)
        return st;
    int rc = SQLITE_DONE;
    while (st == KEEL_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(s, 0), created = sqlite3_column_int64(s, 2);
        const char *cat = (const char *)sqlite3_column_text(s, 1);
        json_t *env = NULL;
        st = open_json(p, "privacy_records", "data", id, sqlite3_column_blob(s, 3), sqlite3_column_bytes(s, 3),
                       RECORD_ENVELOPE_MAX, &env);
        /* The category and time are sealed too: a row retagged in the
         * database to dodge its retention does not export as genuine. */
        if (st == KEEL_OK && (cat == NULL || !json_is_string(json_object_get(env, "c")) ||
                              strcmp(cat, json_string_value(json_object_get(env, "c"))) != 0 ||
                              json_integer_value(json_object_get(env, "t")) != created))
            st = keel_errorf(KEEL_ERR_VERIFY, "privacy: record %lld does not match its sealed category or time",
                             (long long)id);
        if (unreadable(st)) {
            json_decref(env);
            st = KEEL_OK;
            (*skipped)++;
            continue;
        }
        json_t *r = st == KEEL_OK ? json_pack("{s:I,s:s,s:I,s:O}", "id", (json_int_t)id, "category", cat, "created",
                                              (json_int_t)created, "data", json_object_get(env, "d"))
                                  : NULL;
        json_decref(env);
        if (st == KEEL_OK && (r == NULL || json_array_append_new(arr, r) != 0))
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    if (st == KEEL_OK && rc != SQLITE_DONE)
        st = db_error(p->db, "read records");
    return fin(p->db, s, st);
}

keel_status_t keel_privacy_export(keel_privacy_t *p, json_t **out)
{
    if (out != NULL)
        *out = NULL;
    if (p == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "privacy export: missing argument");
    json_t *consent = NULL, *erase = NULL, *records = json_array();
    int64_t skipped = 0;
    if (records == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_status_t st = keel_privacy_consent_json(p, &consent);
    if (st == KEEL_OK)
        st = records_json(p, records, &skipped);
    if (st == KEEL_OK)
        st = keel_privacy_erase_status(p, &erase);
    json_t *j = NULL;
    if (st == KEEL_OK) {
        j = json_pack("{s:O?,s:o,s:o,s:I,s:o}", "declaration", p->decl, "consent", consent, "records", records,
                      "unreadable_records", (json_int_t)skipped, "erase_requests", erase);
        consent = records = erase = NULL;
        if (j == NULL)
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    json_decref(consent);
    json_decref(records);
    json_decref(erase);
    if (st == KEEL_OK)
        *out = j;
    return st;
}

/* ---- cloud erase (5.11-2, 5.11-4) ---------------------------------------------------- */

static bool erase_id_ok(const char *s)
{
    if (strnlen(s, ERASE_ID_LEN + 1) != ERASE_ID_LEN)
        return false;
    for (size_t i = 0; i < ERASE_ID_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

keel_status_t keel_privacy_erase_request(keel_privacy_t *p, char id[33])
{
    if (p == NULL || id == NULL)
        return keel_errorf(KEEL_ERR_ARG, "erase request: missing argument");
    uint8_t raw[ERASE_ID_LEN / 2];
    keel_random_bytes(raw, sizeof raw);
    keel_status_t st = keel_hex_encode(raw, sizeof raw, id, ERASE_ID_LEN + 1);
    if (st != KEEL_OK)
        return st;
    sqlite3_stmt *s = NULL;
    if ((st = tx_begin(p)) != KEEL_OK)
        return st;
    if ((st = prep(p->db, "INSERT INTO erase_requests(id, requested, confirmed, receipt) VALUES (?1, ?2, NULL, NULL)",
                   &s)) == KEEL_OK) {
        if (sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
            sqlite3_bind_int64(s, 2, wallclock()) != SQLITE_OK)
            st = db_error(p->db, "bind erase request");
        else if (sqlite3_step(s) != SQLITE_DONE)
            st = db_error(p->db, "store erase request");
        st = fin(p->db, s, st);
    }
    if (st == KEEL_OK)
        st = exec(p->db, "DELETE FROM erase_requests WHERE rowid NOT IN (SELECT rowid FROM erase_requests "
                         "ORDER BY requested DESC, rowid DESC LIMIT 32)");
    st = tx_end(p, st);
    if (st == KEEL_OK)
        keel_log(KEEL_LOG_INFO, "privacy: cloud erase request %s filed", id);
    return st;
}

keel_status_t keel_privacy_erase_receipt(keel_privacy_t *p, const json_t *receipt)
{
    if (p == NULL || receipt == NULL)
        return keel_errorf(KEEL_ERR_ARG, "erase receipt: missing argument");
    if (!json_is_object(receipt))
        return keel_errorf(KEEL_ERR_FORMAT, "erase receipt: not a JSON object");
    const json_t *jid = json_object_get(receipt, "id"), *erased = json_object_get(receipt, "erased");
    if (!json_is_string(jid) || !erase_id_ok(json_string_value(jid)))
        return keel_errorf(KEEL_ERR_FORMAT, "erase receipt: \"id\" must be 32 lower-case hex characters");
    if (!json_is_boolean(erased))
        return keel_errorf(KEEL_ERR_FORMAT, "erase receipt: \"erased\" must be true or false");
    char *text = json_dumps(receipt, JSON_COMPACT);
    if (text == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_status_t st = KEEL_OK;
    if (strlen(text) > KEEL_PRIVACY_RECEIPT_MAX)
        st = keel_errorf(KEEL_ERR_TOO_LARGE, "erase receipt: over %u bytes", KEEL_PRIVACY_RECEIPT_MAX);
    sqlite3_stmt *s = NULL;
    if (st == KEEL_OK &&
        (st = prep(p->db, "UPDATE erase_requests SET receipt = ?2, confirmed = ?3 WHERE id = ?1 AND confirmed IS NULL",
                   &s)) == KEEL_OK) {
        int bound = sqlite3_bind_text(s, 1, json_string_value(jid), -1, SQLITE_TRANSIENT) == SQLITE_OK &&
                    sqlite3_bind_text(s, 2, text, -1, SQLITE_TRANSIENT) == SQLITE_OK &&
                    (json_is_true(erased) ? sqlite3_bind_int64(s, 3, wallclock()) : sqlite3_bind_null(s, 3)) ==
                        SQLITE_OK;
        if (!bound)
            st = db_error(p->db, "bind erase receipt");
        else if (sqlite3_step(s) != SQLITE_DONE)
            st = db_error(p->db, "store erase receipt");
        int changed = st == KEEL_OK ? sqlite3_changes(p->db) : 0;
        st = fin(p->db, s, st);
        int64_t exists = 0;
        if (st == KEEL_OK && changed == 0 &&
            (st = query_int64(p->db, "SELECT COUNT(*) FROM erase_requests WHERE id = ?1", json_string_value(jid),
                              &exists)) == KEEL_OK &&
            !exists)
            st = keel_errorf(KEEL_ERR_NOT_FOUND, "erase receipt: no request %s", json_string_value(jid));
        if (st == KEEL_OK)
            keel_log(KEEL_LOG_INFO, "privacy: cloud erase %s %s", json_string_value(jid),
                     changed == 0 ? "was already confirmed" : json_is_true(erased) ? "confirmed" : "refused");
    }
    free(text);
    return st;
}

keel_status_t keel_privacy_erase_status(keel_privacy_t *p, json_t **out)
{
    if (out != NULL)
        *out = NULL;
    if (p == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "erase status: missing argument");
    json_t *arr = json_array();
    if (arr == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    sqlite3_stmt *s;
    keel_status_t st =
        prep(p->db, "SELECT id, requested, confirmed, receipt FROM erase_requests ORDER BY requested DESC, rowid DESC",
             &s);
    int rc = SQLITE_DONE;
    while (st == KEEL_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(s, 0);
        const char *rt = (const char *)sqlite3_column_text(s, 3);
        json_t *receipt = json_null();
        if (rt != NULL) {
            size_t len = strnlen(rt, KEEL_PRIVACY_RECEIPT_MAX + 1);
            receipt = len <= KEEL_PRIVACY_RECEIPT_MAX ? json_loadb(rt, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
            if (receipt == NULL)
                receipt = json_null(); /* stored checked; unreadable now means a damaged row, not a receipt */
        }
        json_t *e = json_pack("{s:s,s:I,s:o,s:o}", "id", id != NULL ? id : "", "requested",
                              (json_int_t)sqlite3_column_int64(s, 1), "confirmed",
                              sqlite3_column_type(s, 2) == SQLITE_NULL ? json_null()
                                                                       : json_integer(sqlite3_column_int64(s, 2)),
                              "receipt", receipt);
        if (e == NULL || json_array_append_new(arr, e) != 0)
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    if (st == KEEL_OK && rc != SQLITE_DONE)
        st = db_error(p->db, "read erase requests");
    if (s != NULL)
        st = fin(p->db, s, st);
    if (st != KEEL_OK) {
        json_decref(arr);
        return st;
    }
    *out = arr;
    return KEEL_OK;
}

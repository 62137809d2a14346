/*
 * fleet/db_internal.h - what db.c shares with the two drivers and the store:
 * the driver vtable, the handle, the $N scanner and the migration list.
 * Not a public header.
 */
#ifndef KEEL_FLEET_DB_INTERNAL_H
#define KEEL_FLEET_DB_INTERNAL_H

#include "keel/fleet_db.h"

/* Longest text value one parameter carries (a manifest's certificate, a body). */
#define KEEL_FLEET_DB_TEXT_MAX (64u * 1024u * 1024u)
/* Prepared statements kept per connection, keyed by SQL text (beyond that:
 * prepared and dropped per call). The store has fewer than half of this. */
#define KEEL_FLEET_DB_CACHE_MAX 128

typedef struct {
    const char *name;
    /* One statement with $N already checked against nparams by db.c. */
    keel_status_t (*exec)(keel_fleet_db_t *db, const char *sql, const keel_fleet_val_t *params, unsigned nparams,
                          keel_fleet_row_fn rows, void *arg, uint64_t *changed);
    /* Several statements without parameters (migrations, BEGIN, COMMIT). */
    keel_status_t (*script)(keel_fleet_db_t *db, const char *sql);
    bool (*in_tx)(const keel_fleet_db_t *db);
    void (*close)(keel_fleet_db_t *db);
    const char *begin_sql;
    /* Run first inside the migration transaction (PostgreSQL: an advisory
     * lock, so two fleetd starting together migrate one after the other). */
    const char *migrate_lock_sql;
} keel_fleet_driver_t;

struct keel_fleet_db {
    const keel_fleet_driver_t *drv;
    keel_fleet_db_driver_t kind;
    void *impl;
    int schema_version;
    /* SQLite: ingest's memory of device_seq rows between its transactions
     * (store.c). It holds while no other connection commits (PRAGMA
     * data_version) and this one neither rolls back nor writes devices or
     * device_seq other than through ingest (seq_own): the driver's rollback
     * and update hooks set seq_stale. */
    struct keel_fleet_seqmem *seqmem;
    bool seq_stale, seq_own;
};
/* Frees a handle's seqmem (store.c; NULL is fine). */
void keel_fleet_seqmem_free(struct keel_fleet_seqmem *m);

/* Drivers: open the connection and set the session up (no migration). */
keel_status_t keel_fleet_sqlite_open(const char *path, keel_fleet_db_t *db) KEEL_MUST_CHECK;
keel_status_t keel_fleet_pg_open(const char *conninfo, keel_fleet_db_t *db) KEEL_MUST_CHECK;

/* The highest $N in sql (0 when none) outside quotes and comments;
 * KEEL_ERR_ARG for $0, N > KEEL_FLEET_DB_PARAMS_MAX or a '$' not followed
 * by a digit. With `sqlite` non-NULL, a copy with ?N for $N goes there
 * (malloc'd). */
keel_status_t keel_fleet_sql_scan(const char *sql, unsigned *maxn, char **sqlite) KEEL_MUST_CHECK;

/* An integer from a column: INT, or TEXT holding a decimal integer (a
 * PostgreSQL numeric). KEEL_ERR_NOT_FOUND for NULL, KEEL_ERR_FORMAT otherwise. */
keel_status_t keel_fleet_val_int(const keel_fleet_val_t *v, int64_t *out) KEEL_MUST_CHECK;
/* v[0..n) into *out[0..n), as keel_fleet_val_int; stops at the first error. */
keel_status_t keel_fleet_val_ints(const keel_fleet_val_t *v, unsigned n, int64_t *const out[]) KEEL_MUST_CHECK;

/* The ordered migrations (schema.c): version i + 1 is migrations[i]. */
typedef struct {
    int version;
    const char *sql;
} keel_fleet_migration_t;
extern const keel_fleet_migration_t keel_fleet_migrations[];
extern const unsigned keel_fleet_migrations_n;
/* The schema version this build knows (the last migration's). */
int keel_fleet_schema_latest(void);

/* ---- shared by store.c, store_campaign.c and store_privacy.c (defined in store.c) ---- */

#include <jansson.h>

/* Runs fn in the caller's transaction, or in one of its own (begun,
 * committed; rolled back on error, retried up to 3 times on KEEL_ERR_BUSY). */
typedef keel_status_t (*keel_fleet_tx_fn)(keel_fleet_db_t *db, void *arg);
keel_status_t keel_fleet_tx(keel_fleet_db_t *db, keel_fleet_tx_fn fn, void *arg) KEEL_MUST_CHECK;

/* A column's text into dst (NUL-terminated; NULL = ""); KEEL_ERR_TOO_LARGE past cap - 1. */
keel_status_t keel_fleet_col_text(const keel_fleet_val_t *v, char *dst, size_t cap) KEEL_MUST_CHECK;
/* s is 1..max bytes of printable ASCII (no space unless `space`). */
bool keel_fleet_word_ok(const char *s, size_t max, bool space);
/* A driver's prepared statements are kept by their SQL text. keys[i] is
 * the key of entry i: the text (a copy), where the caller's text was (a
 * literal mostly: the next call passes the same address, found without
 * hashing, and strcmp still confirms it) and its FNV-1a hash. */
typedef struct {
    char *sql;
    const char *ptr;
    uint32_t hash;
} keel_fleet_sql_key_t;
/* FNV-1a of a NUL-terminated string: the statement cache's and ingest's seqmem's keys. */
uint32_t keel_fleet_hash(const char *s);
/* The index of sql among keys[0..n), or n when absent (*hash then holds its
 * hash, for keel_fleet_sql_key_set). */
unsigned keel_fleet_sql_find(const keel_fleet_sql_key_t *keys, unsigned n, const char *sql, uint32_t *hash);
/* k becomes sql's key (a copy of the text); false when out of memory. */
bool keel_fleet_sql_key_set(keel_fleet_sql_key_t *k, const char *sql, uint32_t hash);
/* n random bytes as lower-case hex (out: 2n + 1). */
void keel_fleet_random_hex(char *out, size_t n);

/* Rows as a JSON array of objects, one member per column, by `spec`: one
 * character per column, 'i' integer, 's' string (NULL: null), 'b' boolean,
 * 'j' JSON text parsed (kept as a string when it does not parse), '-'
 * skipped; names[i] names column i. More than max_rows rows:
 * KEEL_ERR_TOO_LARGE (the SQL's LIMIT should be max_rows + 1). */
keel_status_t keel_fleet_query_json(keel_fleet_db_t *db, const char *sql, const keel_fleet_val_t *params,
                                    unsigned nparams, const char *spec, const char *const *names,
                                    size_t max_rows, json_t **out) KEEL_MUST_CHECK;

#endif

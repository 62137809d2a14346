/*
 * keel/fleet_db.h - the fleet's database, behind one interface with two
 * drivers: SQLite (default, zero configuration: a file) and PostgreSQL
 * (libpq, for several fleetd instances and large fleets).
 *
 * The same SQL runs on both: statements are written once, with $1..$N
 * placeholders (the SQLite driver binds them as ?1..?N), in the dialect the
 * two share (BIGINT, TEXT, INSERT ... ON CONFLICT, RETURNING, no
 * autoincrement, no BLOB: binary goes as hex or base64 text). The schema and
 * its migrations live in src/fleet/schema.c, one list for both drivers.
 *
 * A handle is one connection, used by one thread at a time. fleetd opens one
 * per thread. Errors carry the driver's message (never a password from the
 * connection string). Statements are prepared once per handle and kept,
 * keyed by their SQL text (pass the same text for the same statement).
 *
 * PostgreSQL runs transactions at READ COMMITTED, with lock_timeout 5 s and
 * statement_timeout 60 s unless the URL's `options` set others. After an
 * error inside a transaction, roll it back: PostgreSQL refuses every further
 * statement of a failed transaction (SQLite does not, but the rule is one).
 */
#ifndef KEEL_FLEET_DB_H
#define KEEL_FLEET_DB_H

#include "keel/base.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef struct keel_fleet_db keel_fleet_db_t;

/* Longest connection string / path accepted. */
#define KEEL_FLEET_DB_URL_MAX 1024
/* Most parameters one statement takes. */
#define KEEL_FLEET_DB_PARAMS_MAX 16

typedef enum { KEEL_FLEET_DB_SQLITE, KEEL_FLEET_DB_POSTGRES } keel_fleet_db_driver_t;

/* A parameter or a column value. Text is not NUL-terminated in a row
 * (use len); NULL is KEEL_FV_NULL. */
typedef enum { KEEL_FV_NULL, KEEL_FV_INT, KEEL_FV_TEXT } keel_fleet_vtype_t;
typedef struct {
    keel_fleet_vtype_t type;
    int64_t i;
    const char *s;
    size_t len;
} keel_fleet_val_t;

#define KEEL_FV_I(x) ((keel_fleet_val_t){.type = KEEL_FV_INT, .i = (int64_t)(x)})
#define KEEL_FV_S(x) ((keel_fleet_val_t){.type = (x) != NULL ? KEEL_FV_TEXT : KEEL_FV_NULL, .s = (x), .len = (x) != NULL ? strlen(x) : 0})
#define KEEL_FV_SN(x, n) ((keel_fleet_val_t){.type = KEEL_FV_TEXT, .s = (x), .len = (n)})
#define KEEL_FV_NUL ((keel_fleet_val_t){.type = KEEL_FV_NULL})

/* Called per result row; `cols` is valid only during the call. Return
 * non-KEEL_OK to stop (that status is returned by exec). */
typedef keel_status_t (*keel_fleet_row_fn)(void *arg, const keel_fleet_val_t *cols, unsigned ncols);

/*
 * url: "sqlite:PATH" (or a plain path) for SQLite: created 0600, WAL,
 * foreign keys on, busy timeout 5 s, synchronous NORMAL;
 * "postgresql://..." / "postgres://..." or "pg:KEY=VALUE ..." (libpq
 * conninfo) for PostgreSQL. Opening runs the migrations up to the version
 * this build knows (in one transaction; a database newer than the build is
 * refused with KEEL_ERR_FORMAT, never touched; on PostgreSQL an advisory
 * lock makes fleetd instances starting together migrate one at a time).
 * A SQLite file that exists must be a regular file of ours (its mode is
 * tightened to 0600). KEEL_ERR_DB when the server cannot be reached,
 * KEEL_ERR_CONFIG for a malformed PostgreSQL connection string.
 */
keel_status_t keel_fleet_db_open(const char *url, keel_fleet_db_t **out) KEEL_MUST_CHECK;
void keel_fleet_db_close(keel_fleet_db_t *db);
keel_fleet_db_driver_t keel_fleet_db_driver(const keel_fleet_db_t *db);
const char *keel_fleet_db_driver_name(const keel_fleet_db_t *db); /* "sqlite" or "postgresql" */
/* The schema version after open. */
int keel_fleet_db_schema_version(const keel_fleet_db_t *db);

/* One statement. `rows` may be NULL. `changed` (may be NULL) gets the rows
 * an INSERT/UPDATE/DELETE touched. KEEL_ERR_EXISTS for a unique-constraint
 * violation, KEEL_ERR_BUSY when the database stayed locked (SQLite) or a
 * serialization failure / deadlock / lock timeout, or a lost connection
 * that came back (PostgreSQL): retry the transaction.
 * Checked before the database sees it: the highest $N must equal nparams
 * (KEEL_ERR_ARG; also for $0, N > KEEL_FLEET_DB_PARAMS_MAX, a bare '$' or
 * a '?'); text values must be UTF-8 without NUL (KEEL_ERR_FORMAT), so a
 * refused value never ends the caller's PostgreSQL transaction. Integer
 * columns (and PostgreSQL numeric ones holding integers) come as
 * KEEL_FV_INT, the rest as text. */
keel_status_t keel_fleet_db_exec(keel_fleet_db_t *db, const char *sql, const keel_fleet_val_t *params,
                                 unsigned nparams, keel_fleet_row_fn rows, void *arg,
                                 uint64_t *changed) KEEL_MUST_CHECK;
/* Transactions (not nested: begin inside one is KEEL_ERR_ARG, commit
 * outside one too). begin takes the write lock at once (SQLite BEGIN
 * IMMEDIATE) so two writers never deadlock on an upgrade. A failed commit
 * rolls back. */
keel_status_t keel_fleet_db_begin(keel_fleet_db_t *db) KEEL_MUST_CHECK;
keel_status_t keel_fleet_db_commit(keel_fleet_db_t *db) KEEL_MUST_CHECK;
void keel_fleet_db_rollback(keel_fleet_db_t *db);
bool keel_fleet_db_in_tx(const keel_fleet_db_t *db);

/* Helpers for single values: the first column of the first row (0 rows or
 * a NULL value -> KEEL_ERR_NOT_FOUND; text that is no integer -> KEEL_ERR_FORMAT). */
keel_status_t keel_fleet_db_int(keel_fleet_db_t *db, const char *sql, const keel_fleet_val_t *params,
                                unsigned nparams, int64_t *out) KEEL_MUST_CHECK;

#endif

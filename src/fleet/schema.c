/*
 * The fleet's schema: ordered migrations, one list for both drivers, in
 * the dialect SQLite and PostgreSQL share (BIGINT, TEXT, CHECK, partial
 * indexes). A migration is never edited once released: a change is a new
 * entry at the end. db.c applies the missing ones in one transaction and
 * records each in schema_version.
 */
#include "db_internal.h"

static const char v1[] =
    /* The registry, from the factory manifest. state: registered until the
     * first message, then active; revoked is final. */
    "CREATE TABLE devices ("
    " id TEXT PRIMARY KEY,"
    " serial TEXT NOT NULL UNIQUE,"
    " model TEXT NOT NULL,"
    " org TEXT NOT NULL,"
    " cert_sha256 TEXT NOT NULL UNIQUE,"
    " cert_serial TEXT NOT NULL,"
    " certificate TEXT NOT NULL,"
    " provisioned BIGINT NOT NULL,"
    " pseudonym TEXT NOT NULL UNIQUE,"
    " state TEXT NOT NULL CHECK (state IN ('registered', 'active', 'revoked')),"
    " registered BIGINT NOT NULL,"
    " first_seen BIGINT NOT NULL DEFAULT 0,"
    " last_seen BIGINT NOT NULL DEFAULT 0,"
    " revoked_at BIGINT NOT NULL DEFAULT 0,"
    " version TEXT NOT NULL DEFAULT '',"
    " security_version BIGINT NOT NULL DEFAULT -1);\n"
    "CREATE INDEX devices_model ON devices (model, id);\n"
    /* What every ingest updates, apart from the wide, many-indexed registry
     * row: a narrow row of one index (on PostgreSQL its updates stay HOT).
     * seq_before: last_seq before the latest ingest's update (which returns
     * it, so ingest needs no separate read). erased_seq: messages up to this
     * seq were erased and are not taken again (a broker's late redelivery
     * must not bring them back). dropped_used: the part of the device's
     * reported drops already used to explain gaps. */
    "CREATE TABLE device_seq ("
    " device TEXT PRIMARY KEY REFERENCES devices (id),"
    " first_seen BIGINT NOT NULL DEFAULT 0,"
    " last_seen BIGINT NOT NULL DEFAULT 0,"
    " last_seq BIGINT NOT NULL DEFAULT 0,"
    " seq_before BIGINT NOT NULL DEFAULT 0,"
    " erased_seq BIGINT NOT NULL DEFAULT 0,"
    " dropped_reported BIGINT NOT NULL DEFAULT 0,"
    " dropped_used BIGINT NOT NULL DEFAULT 0);\n"
    /* The anomaly detectors' state per device (opaque text). */
    "CREATE TABLE detectors ("
    " device TEXT PRIMARY KEY REFERENCES devices (id),"
    " state TEXT NOT NULL);\n"
    /* Raw messages: the only personal data; deleted by erase and retention.
     * bytes: the body's length (octet_length is not in SQLite 3.40).
     * device has no foreign key, on purpose: ingest inserts only for a
     * device it has just checked (devices are never deleted), and on
     * PostgreSQL the key's row lock on the device, followed by ingest's
     * update of that row in the same transaction, costs a multixact per
     * message (half the throughput). The same for gaps. */
    "CREATE TABLE messages ("
    " device TEXT NOT NULL,"
    " seq BIGINT NOT NULL,"
    " ts BIGINT NOT NULL,"
    " received BIGINT NOT NULL,"
    " kind TEXT NOT NULL CHECK (kind IN ('telemetry', 'event', 'alert')),"
    " body TEXT NOT NULL,"
    " bytes BIGINT NOT NULL,"
    " PRIMARY KEY (device, seq));\n"
    "CREATE INDEX messages_received ON messages (received);\n"
    /* Missing seqs [seq_first, seq_last]; never overlapping per device. */
    "CREATE TABLE gaps ("
    " device TEXT NOT NULL,"
    " seq_first BIGINT NOT NULL,"
    " seq_last BIGINT NOT NULL,"
    " opened BIGINT NOT NULL,"
    " state TEXT NOT NULL CHECK (state IN ('open', 'explained', 'lost')),"
    " settled BIGINT NOT NULL DEFAULT 0,"
    " PRIMARY KEY (device, seq_first),"
    " CHECK (seq_first <= seq_last));\n"
    "CREATE INDEX gaps_state ON gaps (state, opened);\n"
    /* device: no foreign key, an alert may name an id the registry does not know. */
    "CREATE TABLE alerts ("
    " id TEXT PRIMARY KEY,"
    " at BIGINT NOT NULL,"
    " kind TEXT NOT NULL,"
    " device TEXT,"
    " severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),"
    " detail TEXT NOT NULL,"
    " dedupe TEXT NOT NULL UNIQUE);\n"
    "CREATE INDEX alerts_at ON alerts (at);\n"
    "CREATE INDEX alerts_device ON alerts (device, at);\n"
    "CREATE TABLE releases ("
    " model TEXT NOT NULL,"
    " version TEXT NOT NULL,"
    " security_version BIGINT NOT NULL,"
    " added BIGINT NOT NULL,"
    " PRIMARY KEY (model, version, security_version));\n"
    "CREATE TABLE campaigns ("
    " id TEXT PRIMARY KEY,"
    " model TEXT NOT NULL,"
    " version TEXT NOT NULL,"
    " security_version BIGINT NOT NULL,"
    " bundle_path TEXT NOT NULL,"
    " bundle_sha256 TEXT NOT NULL,"
    " bundle_size BIGINT NOT NULL,"
    " percent BIGINT NOT NULL CHECK (percent BETWEEN 1 AND 100),"
    " security BIGINT NOT NULL CHECK (security IN (0, 1)),"
    " fail_permille BIGINT NOT NULL CHECK (fail_permille BETWEEN 0 AND 1000),"
    " state TEXT NOT NULL CHECK (state IN ('running', 'paused', 'halted', 'done')),"
    " created BIGINT NOT NULL,"
    " updated BIGINT NOT NULL);\n"
    /* At most one running or paused campaign per model, also with several fleetd. */
    "CREATE UNIQUE INDEX campaigns_active ON campaigns (model) WHERE state IN ('running', 'paused');\n"
    "CREATE INDEX campaigns_created ON campaigns (created);\n"
    "CREATE TABLE campaign_devices ("
    " campaign TEXT NOT NULL REFERENCES campaigns (id),"
    " device TEXT NOT NULL REFERENCES devices (id),"
    " state TEXT NOT NULL CHECK (state IN ('notified', 'downloading', 'installed', 'confirmed', 'failed',"
    " 'postponed')),"
    " detail TEXT NOT NULL,"
    " updated BIGINT NOT NULL,"
    " confirmed BIGINT NOT NULL DEFAULT 0,"
    " PRIMARY KEY (campaign, device));\n"
    "CREATE INDEX campaign_devices_device ON campaign_devices (device);\n"
    "CREATE TABLE erasures ("
    " id TEXT PRIMARY KEY,"
    " device TEXT NOT NULL REFERENCES devices (id),"
    " source TEXT NOT NULL,"
    " at BIGINT NOT NULL,"
    " messages BIGINT NOT NULL,"
    " gaps BIGINT NOT NULL);\n"
    "CREATE INDEX erasures_device ON erasures (device);\n"
    /* Daily counts that outlive raw messages: keyed by pseudonym, never by device id. */
    "CREATE TABLE aggregates ("
    " pseudonym TEXT NOT NULL,"
    " day BIGINT NOT NULL,"
    " kind TEXT NOT NULL,"
    " messages BIGINT NOT NULL,"
    " bytes BIGINT NOT NULL,"
    " PRIMARY KEY (pseudonym, day, kind));\n"
    "CREATE INDEX aggregates_day ON aggregates (day);\n";

/* messages again, with its kind check written as comparisons: SQLite
 * evaluates "kind IN (three values)" by building an ephemeral table on
 * every INSERT (a pager, its page buffers), which was a quarter of
 * ingest's CPU (make bench: 34 -> 26 us per message). The rows are copied;
 * a large store takes a while, once. */
static const char v2[] =
    "CREATE TABLE messages_v2 ("
    " device TEXT NOT NULL,"
    " seq BIGINT NOT NULL,"
    " ts BIGINT NOT NULL,"
    " received BIGINT NOT NULL,"
    " kind TEXT NOT NULL CHECK (kind = 'telemetry' OR kind = 'event' OR kind = 'alert'),"
    " body TEXT NOT NULL,"
    " bytes BIGINT NOT NULL,"
    " PRIMARY KEY (device, seq));\n"
    "INSERT INTO messages_v2 (device, seq, ts, received, kind, body, bytes)"
    " SELECT device, seq, ts, received, kind, body, bytes FROM messages;\n"
    "DROP TABLE messages;\n"
    "ALTER TABLE messages_v2 RENAME TO messages;\n"
    "CREATE INDEX messages_received ON messages (received);\n";

const keel_fleet_migration_t keel_fleet_migrations[] = {
    {1, v1},
    {2, v2},
};
const unsigned keel_fleet_migrations_n = sizeof keel_fleet_migrations / sizeof keel_fleet_migrations[0];

int keel_fleet_schema_latest(void)
{
    return keel_fleet_migrations[keel_fleet_migrations_n - 1].version;
}

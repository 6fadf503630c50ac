/*
 * store/schema.c — the database schema, as an ordered list of migrations.
 *
 * The schema version is SQLite's `PRAGMA user_version` (0 for a new file).
 * Migration i (1-based) takes the schema from version i-1 to i; at open,
 * every migration above the file's version runs, each in its own
 * transaction that also sets user_version, so a crash mid-way leaves the
 * file at a consistent earlier version and the next open resumes. A file
 * with a version newer than this binary knows is refused rather than
 * guessed at. Migrations are append-only: once released, a step is never
 * edited, only followed by another.
 *
 * Tables (all keyed for the lookups the store makes; ids are TEXT, blobs are
 * opaque to the store):
 *   v1  identities, policies, meta (key/value settings and counters)
 *   v2  twins, c2d (per-device command queues)
 *   v3  sessions, session_msgs, telemetry (+ per-partition counters),
 *       checkpoints
 *   v4  telemetry without its enqueued-time index; telemetry_parts.last_ms,
 *       each partition's newest enqueued time (store/telemetry.c keeps
 *       enqueued times non-decreasing per partition, so retention walks
 *       each partition in sequence order instead of a time index that cost
 *       every append a third b-tree insert)
 *   v5  one table per telemetry partition, telemetry_<p>, keyed by seq
 *       alone (the rowid): an append is one b-tree insert at the end of its
 *       table instead of two (the rows and the (part, seq) key), and a
 *       commit rewrites no partly filled key pages (20 % fewer WAL pages
 *       per commit). Partitions are a runtime setting, so this step is
 *       code, not SQL: it makes a table for every partition the file has.
 */
#include "store/internal.h"

#include <stdio.h>

static bool split_telemetry(sqlite3 *db, char *err, size_t errlen);

/* A step is SQL, or code for what SQL alone cannot say. */
typedef struct migration {
    const char *sql;
    bool (*run)(sqlite3 *db, char *err, size_t errlen);
} migration;

static const migration migrations[STORE_SCHEMA_VERSION] = {
    /* 1: identities and policies */
    {.sql = "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
            "CREATE TABLE identities("
            " device_id TEXT NOT NULL, module_id TEXT NOT NULL DEFAULT '',"
            " generation_id TEXT NOT NULL, etag TEXT NOT NULL, enabled INTEGER NOT NULL,"
            " status_reason TEXT NOT NULL, auth_type INTEGER NOT NULL,"
            " primary_key TEXT NOT NULL, secondary_key TEXT NOT NULL,"
            " primary_thumbprint TEXT NOT NULL, secondary_thumbprint TEXT NOT NULL,"
            " iot_edge INTEGER NOT NULL, status_updated_ms INTEGER NOT NULL,"
            " PRIMARY KEY(device_id, module_id)) WITHOUT ROWID;"
            "CREATE TABLE policies(name TEXT PRIMARY KEY, rights INTEGER NOT NULL,"
            " primary_key TEXT NOT NULL, secondary_key TEXT NOT NULL) WITHOUT ROWID;"},

    /* 2: twins and command queues */
    {.sql = "CREATE TABLE twins(device_id TEXT NOT NULL, module_id TEXT NOT NULL,"
            " doc TEXT NOT NULL, etag TEXT NOT NULL, version INTEGER NOT NULL,"
            " desired_version INTEGER NOT NULL, reported_version INTEGER NOT NULL,"
            " PRIMARY KEY(device_id, module_id)) WITHOUT ROWID;"
            "CREATE TABLE c2d(device_id TEXT NOT NULL, seq INTEGER NOT NULL,"
            " enqueued_ms INTEGER NOT NULL, expiry_ms INTEGER NOT NULL,"
            " delivery_count INTEGER NOT NULL, lock_until_ms INTEGER NOT NULL,"
            " props BLOB NOT NULL, body BLOB NOT NULL, PRIMARY KEY(device_id, seq));"
            "INSERT INTO meta(key, value) VALUES('c2d_next_seq', 1);"},

    /* 3: sessions and the telemetry log */
    {.sql = "CREATE TABLE sessions(client_id TEXT PRIMARY KEY, expiry_ms INTEGER NOT NULL,"
            " subs BLOB NOT NULL);"
            "CREATE TABLE session_msgs(client_id TEXT NOT NULL, seq INTEGER NOT NULL,"
            " state INTEGER NOT NULL, msg BLOB NOT NULL, PRIMARY KEY(client_id, seq));"
            "CREATE TABLE telemetry(part INTEGER NOT NULL, seq INTEGER NOT NULL,"
            " enqueued_ms INTEGER NOT NULL, size INTEGER NOT NULL,"
            " props BLOB NOT NULL, body BLOB NOT NULL, PRIMARY KEY(part, seq));"
            "CREATE INDEX telemetry_by_time ON telemetry(enqueued_ms);"
            "CREATE TABLE telemetry_parts(part INTEGER PRIMARY KEY, next_seq INTEGER NOT NULL,"
            " bytes INTEGER NOT NULL);"
            "CREATE TABLE checkpoints(grp TEXT NOT NULL, part INTEGER NOT NULL,"
            " seq INTEGER NOT NULL, PRIMARY KEY(grp, part)) WITHOUT ROWID;"},

    /* 4: no time index on the telemetry log; newest enqueued time per
     * partition (one scan of the log, once) */
    {.sql = "DROP INDEX telemetry_by_time;"
            "ALTER TABLE telemetry_parts ADD COLUMN last_ms INTEGER NOT NULL DEFAULT 0;"
            "UPDATE telemetry_parts SET last_ms = coalesce("
            " (SELECT max(enqueued_ms) FROM telemetry t WHERE t.part = telemetry_parts.part), 0);"},

    /* 5: one table per telemetry partition */
    {.run = split_telemetry},
};

/* Step 5: moves partition p's events from the shared log into
 * telemetry_<p>, for every partition with a counter row (every append
 * goes through one), then drops the shared log. */
static bool split_telemetry(sqlite3 *db, char *err, size_t errlen)
{
    sqlite3_stmt *parts = NULL;
    if (sqlite3_prepare_v2(db, "SELECT part FROM telemetry_parts ORDER BY part", -1, &parts,
                           NULL) != SQLITE_OK)
        goto fail;
    int rc;
    while ((rc = sqlite3_step(parts)) == SQLITE_ROW) {
        unsigned p = (unsigned)sqlite3_column_int64(parts, 0);
        char sql[512];
        snprintf(sql, sizeof sql,
                 STORE_TELEMETRY_TABLE_DDL ";"
                 "INSERT INTO telemetry_%u(seq, enqueued_ms, size, props, body)"
                 " SELECT seq, enqueued_ms, size, props, body FROM telemetry"
                 " WHERE part = %u ORDER BY seq",
                 "", p, p, p);
        if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
            goto fail;
    }
    if (rc != SQLITE_DONE || sqlite3_exec(db, "DROP TABLE telemetry", NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_finalize(parts);
    return true;
fail:
    snprintf(err, errlen, "%s", sqlite3_errmsg(db));
    sqlite3_finalize(parts);
    return false;
}

int store_user_version(sqlite3 *db)
{
    sqlite3_stmt *s = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return v;
}

/* Runs the step plus the version bump in one transaction. */
static bool apply_step(sqlite3 *db, int version, const migration *m, char *err, size_t errlen)
{
    char bump[64];
    snprintf(bump, sizeof bump, "PRAGMA user_version=%d", version);
    char *msg = NULL, why[256] = "";
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK ||
        (m->sql && sqlite3_exec(db, m->sql, NULL, NULL, &msg) != SQLITE_OK) ||
        (m->run && !m->run(db, why, sizeof why)) ||
        sqlite3_exec(db, bump, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "migration to schema %d: %s", version,
                 msg ? msg : why[0] ? why : sqlite3_errmsg(db));
        sqlite3_free(msg);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return false;
    }
    return true;
}

bool store_migrate(sqlite3 *db, int target, char *err, size_t errlen)
{
    int v = store_user_version(db);
    if (v < 0) {
        snprintf(err, errlen, "reading schema version: %s", sqlite3_errmsg(db));
        return false;
    }
    if (v > STORE_SCHEMA_VERSION) {
        snprintf(err, errlen, "database schema %d is newer than this iothubd (%d)", v,
                 STORE_SCHEMA_VERSION);
        return false;
    }
    for (int next = v + 1; next <= target && next <= STORE_SCHEMA_VERSION; next++)
        if (!apply_step(db, next, &migrations[next - 1], err, errlen))
            return false;
    return true;
}

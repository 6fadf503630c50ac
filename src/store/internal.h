/*
 * store/internal.h — what the store's files share: the context struct, the
 * request header every operation embeds, and small SQLite helpers.
 *
 * A request is one malloc'd struct per call: a store_req header followed by
 * the operation's own fields (copies of the caller's data, and the results
 * the store thread fills in). `exec` runs on the store thread inside the
 * batch transaction; `complete` runs afterwards on the caller's loop (or on
 * the store thread when loop == NULL), calls the user's callback and frees
 * the request. Nothing else ever touches a request, so it needs no lock.
 */
#ifndef IOTHUBD_STORE_INTERNAL_H
#define IOTHUBD_STORE_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

#include "store/store.h"

typedef struct store_req store_req;

struct store_req {
    store_req *next;
    net_loop *loop;
    /* Returns STORE_OK or another status; on STORE_ERROR whatever the
     * request wrote is rolled back (its savepoint), the batch goes on. */
    store_status (*exec)(store *st, store_req *r);
    void (*complete)(store_req *r);
    /* Optional fast path: a run of adjacent requests of a batch with the
     * same exec_run (a lone one included) is executed by one call, in one
     * savepoint, instead of one exec and one savepoint each. It sets every
     * request's status and returns true, or returns false with first->err
     * set; whatever it wrote is then rolled back and the run is executed
     * again request by request through `exec`, so an error still fails only
     * the request it belongs to. For high-volume requests (telemetry
     * appends). */
    bool (*exec_run)(store *st, store_req *first, size_t n);
    /* May wait up to the commit interval for more of its kind (telemetry
     * appends: high volume, and every commit rewrites the log's last
     * pages). Any other request, a round trip someone waits on (twin, C2D,
     * registry), starts the next batch as soon as the previous commit is
     * done. */
    bool batchable;
    /* exec leaves nothing behind that must be undone when it fails part
     * way: either it runs exactly one statement that changes the database
     * (SQLite already makes a statement all-or-nothing, through its
     * statement journal), or what it did before failing may stay (a C2D
     * enqueue's number taken from the counter: a skipped number is
     * allowed, a reused one is not). Such a request needs no savepoint of
     * its own; that spares SAVEPOINT and RELEASE, and the copy of every
     * page the write touches into the savepoint's journal. */
    bool no_savepoint;
    store_status status;
    bool sync_done; /* for store_run_sync: set under st->lock */
    char err[256];
};

#define STORE_STMT_CACHE 64

struct store {
    sqlite3 *db;          /* used by the store thread only (and open/close) */
    char *dir;
    store_durability durability;
    unsigned partitions;
    int64_t retention_ms;
    int64_t retention_bytes;
    unsigned retention_interval_ms;
    uint64_t commit_interval_ns;

    pthread_t thread;
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t wake;  /* the store thread sleeps on it */
    pthread_cond_t synced; /* store_run_sync callers sleep on it */
    store_req *head, **tail;
    bool urgent_queued; /* a request that is not batchable is queued */
    bool stopping;
    bool hold;
    unsigned fail_commits;
    store_stats stats;
    int lock_fd; /* flock'd iothubd.lock: one server per data directory */

    /* The checkpointer (checkpoint.c): its connection and thread, and what
     * it shares with the store thread's WAL hook under ck_lock. */
    sqlite3 *ck_db;
    pthread_t ck_thread;
    pthread_mutex_t ck_lock;
    pthread_cond_t ck_wake;
    bool ck_initialised, ck_started;
    bool ck_wanted, ck_running, ck_stopping;
    bool ck_held;  /* the writer is finishing the checkpoint: no new pass */
    bool ck_test_held; /* store_test_hold_checkpointer: no new pass */
    int ck_passed; /* WAL frames the last pass covered (0 after a restart) */
    atomic_bool ck_failing;   /* a failure was logged; cleared on success */

    /* The C2D sequence counter between commits (c2d.c), store thread only:
     * the next number to hand out (0: not read yet), and whether a number
     * was handed out since the counter was last written. A write that a
     * failed COMMIT rolls back needs no redo: the messages that took those
     * numbers were rolled back with it. */
    int64_t c2d_next_seq;
    bool c2d_seq_unsaved;

    /* prepared statements, keyed by their (static) SQL text pointer */
    struct {
        const char *sql;
        sqlite3_stmt *stmt;
    } stmts[STORE_STMT_CACHE];
    size_t nstmts;
    sqlite3_stmt **part_stmts; /* [partition * PART_SQL_KINDS + kind] */
};

/* The header of every request whose completion is a store_done_fn. */
typedef struct store_done_req {
    store_req base;
    store_done_fn done;
    void *arg;
} store_done_req;
/* complete function for store_done_req requests: calls done, frees. */
void store_done_complete(store_req *r);

/* c2d.c: writes the C2D sequence counter if an enqueue of this batch
 * advanced it; run before every COMMIT. False with err set on failure. */
bool store_c2d_seq_save(store *st, char *err, size_t errlen);

/* thread.c */
/* The store thread's body (started by store_open, open.c). */
void *store_thread_main(void *arg);
void store_submit(store *st, store_req *r);
/* Queues r (caller-owned, e.g. on the stack) and waits until it executed
 * and committed; returns r->status. */
store_status store_run_sync(store *st, store_req *r);
/* Allocates a zeroed request of `size` bytes (>= sizeof(store_req)) plus
 * `extra` bytes; aborts the process on out of memory (a store that cannot
 * queue cannot report either). */
void *store_req_new(size_t size, size_t extra, net_loop *loop,
                    store_status (*exec)(store *, store_req *), void (*complete)(store_req *));
/* The cached statement for `sql`, reset and unbound; NULL with r->err set. */
sqlite3_stmt *store_stmt(store *st, const char *sql, store_req *r);
/* Records the database's error message in r->err; returns STORE_ERROR. */
store_status store_db_error(store *st, store_req *r, const char *what);
/* Copies a string into the tail area of a request; returns the copy. */
char *store_copy_str(char **cursor, const char *s);
void *store_copy_mem(char **cursor, const void *p, size_t n);
int64_t store_now_ms(void);

/* wal_gather.c: the name of the VFS that gathers WAL writes (registered
 * at the first call), or NULL when it could not be (use the default). */
const char *store_wal_gather_vfs(void);
/* The VFS it sits on ("unix-excl" where SQLite has it), for the store's
 * other connections; NULL when the gathering VFS could not be registered. */
const char *store_wal_base_vfs(void);
/* For tests: the WAL writes SQLite made on `db` through that VFS, the
 * writes that went down, and the bytes still buffered. False when db's
 * WAL is not open through it. */
bool store_wal_gather_counts(sqlite3 *db, uint64_t *writes_in, uint64_t *writes_out,
                             int *buffered);

/* Runs `sql` (no results) on `db`; false with "sql: message" in err. */
bool store_exec_sql(sqlite3 *db, const char *sql, char *err, size_t errlen);

/* "PRAGMA synchronous=…" for the store's durability setting (both
 * connections use it: a checkpoint syncs as its connection says). */
const char *store_synchronous_pragma(const store *st);

/* checkpoint.c: starts the checkpoint thread on a second connection to
 * `path` and takes the WAL checkpoints over from st->db's commits. */
bool store_checkpointer_start(store *st, const char *path, char *err, size_t errlen);
/* Stops the thread and closes its connection; safe after a failed start. */
void store_checkpointer_stop(store *st);
/* Short-polling busy handler (see checkpoint.c). */
void store_set_busy_handler(sqlite3 *db);

/* schema.c */
#define STORE_SCHEMA_VERSION 5
/* A telemetry partition's table (schema v5), as a format: "IF NOT EXISTS "
 * or "", then the partition. A step that changes the shape must alter the
 * existing tables too. */
#define STORE_TELEMETRY_TABLE_DDL                                                              \
    "CREATE TABLE %stelemetry_%u(seq INTEGER PRIMARY KEY, enqueued_ms INTEGER NOT NULL,"        \
    " size INTEGER NOT NULL, props BLOB NOT NULL, body BLOB NOT NULL)"
/* Migrates `db` up to `target` (STORE_SCHEMA_VERSION for the latest); each
 * step runs in its own transaction together with its user_version bump. */
bool store_migrate(sqlite3 *db, int target, char *err, size_t errlen);
int store_user_version(sqlite3 *db);

/* telemetry.c */
bool store_telemetry_init_partitions(sqlite3 *db, unsigned n, char *err, size_t errlen);
/* The statements on one partition's table (telemetry_<p>), prepared on
 * first use and kept per partition, beside the cache keyed by SQL text. */
typedef enum store_part_sql {
    PART_APPEND,    /* ?1 seq, ?2 enqueued_ms, ?3 size, ?4 props, ?5 body */
    PART_READ,      /* seq >= ?1 in order, at most ?2 */
    PART_FIRST_SEQ, /* min(seq), NULL when empty */
    PART_HEAD,      /* seq, enqueued_ms, size from seq >= ?1, 64 at most */
    PART_DEL_BELOW, /* seq < ?1 */
    PART_SQL_KINDS
} store_part_sql;
sqlite3_stmt *store_part_stmt(store *st, unsigned part, store_part_sql kind, store_req *r);
/* Finalizes them (close). */
void store_part_stmts_free(store *st);
/* retention.c: runs retention inside the current transaction. */
store_status store_retention_apply(store *st, store_req *r, int64_t now_ms, uint64_t *deleted);

#endif

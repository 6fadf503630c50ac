/*
 * store/checkpoint.c — WAL checkpoints off the commit path.
 *
 * In WAL mode every commit appends pages to iothubd.db-wal; a checkpoint
 * copies them back into iothubd.db, fsyncs it, and lets the next writer
 * start the WAL over. SQLite's automatic checkpoint runs inside the COMMIT
 * that crosses 1,000 WAL pages, on the committing connection: under
 * telemetry load (tens of MB of WAL per second) that is several times a
 * second a 4 MB copy plus an fsync of the database file on the store
 * thread, and every request queued behind that commit waits for it. Those
 * waits were the p99 of telemetry PUBACKs.
 *
 * Here the store thread's connection has no automatic checkpoint. Its WAL
 * hook (called after each commit with the WAL's size in pages) wakes a
 * checkpoint thread, which owns a second connection, for every 256 new
 * pages (STORE_WAL_CHECKPOINT_PAGES says why); the thread runs a PASSIVE
 * checkpoint, which copies what the WAL holds without taking the writer
 * lock, so commits go on meanwhile. The WAL can only start over at a write
 * transaction that begins with every frame copied, and under load the
 * writer has always committed more by the time a pass ends. So at
 * STORE_WAL_RESET_PAGES the writer takes over: its hook holds the
 * checkpointer back (no new pass) and, once no pass is running, runs one
 * PASSIVE checkpoint on its own connection right after its commit. Over
 * the last 1,000 pages (STORE_WAL_APPROACH_SPAN) before that the
 * checkpointer runs a pass every 128 pages, so what the writer has left to
 * copy is at most about 512 KB and the database fsync has little to write;
 * the next transaction then restarts the WAL, which stays bounded (a unit
 * test writes 64 MiB through it). journal_size_limit cuts a WAL that grew
 * past 32 MiB back when it restarts.
 *
 * A second connection means the database cannot use locking_mode=EXCLUSIVE,
 * where the WAL index belongs to one connection. Both connections open on
 * the "unix-excl" VFS instead (wal_gather.c): one file lock for the whole
 * process, the WAL index in heap memory the two share, and no other
 * process let in. The exclusion against a second iothubd on the same
 * directory is a lock file (open.c), which says so clearly.
 *
 * Threads: the checkpoint thread touches only its connection and the
 * fields under ck_lock; the store thread's hook reads under the same lock
 * whether a pass is running. Whichever connection checkpoints, consistency
 * is SQLite's: a mistimed checkpoint costs time, never data.
 */
#include "store/internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "util/log.h"

/* The checkpointer runs a pass for every 256 new WAL pages (1 MB). Each
 * pass ends with an fsync of the database file, and a commit's fsync of
 * the WAL that comes meanwhile waits on the same disk until the pass's
 * pages are written: with SQLite's own threshold (1,000 pages, 4 MB) those
 * waits were 3-22 ms, and they were the p99 of telemetry PUBACKs at
 * 27,500/s paced (9.6-12.4 ms; 3.8-5.3 ms with 1 MB passes). The price is
 * paid where commits rewrite the same pages (twin patches): each pass
 * copies again the pages rewritten since the last one: at 40,000 twin
 * round trips/s, 11-25 % more pwrites and 2.6 times the preads
 * (docs/PERFORMANCE.md, "Checkpoints in smaller steps"). */
#define STORE_WAL_CHECKPOINT_PAGES 256
/* Past this (32 MB) the writer finishes the checkpoint itself ... */
#define STORE_WAL_RESET_PAGES 8192
/* ... and over the last 1,000 pages before it passes come every 128 pages
 * (512 KB), so that what the writer copies is small. */
#define STORE_WAL_APPROACH_SPAN 1000
#define STORE_WAL_APPROACH_PAGES 128

/* Busy handler for both connections: SQLite's default one sleeps 1, 2, 5,
 * 10 ms ... between attempts, so a writer that meets a checkpoint's brief
 * lock would lose milliseconds to its own back-off. Short polls instead,
 * up to the same 5 s budget. */
static int busy_poll(void *arg, int attempts)
{
    (void)arg;
    if (attempts >= 25000)
        return 0;
    struct timespec ts = {0, 200 * 1000};
    nanosleep(&ts, NULL);
    return 1;
}

void store_set_busy_handler(sqlite3 *db) { sqlite3_busy_handler(db, busy_poll, NULL); }

/* Runs one checkpoint on `db`; logs a failure other than "busy" (another
 * checkpoint in progress), once until the next success. */
static bool run_checkpoint(store *st, sqlite3 *db, int *log_pages, int *copied_pages)
{
    int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, log_pages,
                                       copied_pages);
    if (rc == SQLITE_OK) {
        atomic_store(&st->ck_failing, false);
        return true;
    }
    if (rc != SQLITE_BUSY && !atomic_exchange(&st->ck_failing, true)) {
        log_warn("store: WAL checkpoint failed: %s", sqlite3_errmsg(db));
    }
    return false;
}

/* Whether the checkpointer should run a pass now that the WAL holds
 * `pages` frames, the last pass having gone up to frame `passed`. */
static bool pass_due(int pages, int passed)
{
    /* approaching the writer's catch-up: smaller steps, so that it is left
     * with little to copy */
    int step = pages >= STORE_WAL_RESET_PAGES - STORE_WAL_APPROACH_SPAN
                   ? STORE_WAL_APPROACH_PAGES
                   : STORE_WAL_CHECKPOINT_PAGES;
    return pages - passed >= step;
}

/* The store thread's WAL hook: after every commit, with the WAL's size.
 * Wakes the checkpointer for every STORE_WAL_CHECKPOINT_PAGES new frames;
 * past the reset size holds it back (no new pass) and, as soon as no pass
 * is running, copies the rest itself. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages)
{
    (void)name;
    store *st = arg;
    bool catch_up = pages >= STORE_WAL_RESET_PAGES;
    pthread_mutex_lock(&st->ck_lock);
    if (pages < st->ck_passed)
        st->ck_passed = 0; /* the WAL restarted since the last pass */
    st->ck_held = catch_up;
    bool pass_running = st->ck_running;
    if (!catch_up && pass_due(pages, st->ck_passed)) {
        st->ck_wanted = true;
        pthread_cond_signal(&st->ck_wake);
    }
    pthread_mutex_unlock(&st->ck_lock);
    if (!catch_up || pass_running)
        return SQLITE_OK;
    int log_pages = 0, copied = 0;
    if (run_checkpoint(st, db, &log_pages, &copied)) {
        pthread_mutex_lock(&st->lock);
        st->stats.writer_checkpoints++;
        pthread_mutex_unlock(&st->lock);
    }
    return SQLITE_OK;
}

/* Whether the checkpoint thread may start a pass now (ck_lock held). */
static bool pass_may_start(const store *st)
{
    return st->ck_wanted && !st->ck_held && !st->ck_test_held;
}

static void *checkpoint_thread(void *arg)
{
    store *st = arg;
    pthread_setname_np(pthread_self(), "checkpoint");
    pthread_mutex_lock(&st->ck_lock);
    for (;;) {
        while (!pass_may_start(st) && !st->ck_stopping)
            pthread_cond_wait(&st->ck_wake, &st->ck_lock);
        if (st->ck_stopping)
            break;
        st->ck_wanted = false;
        st->ck_running = true;
        pthread_mutex_unlock(&st->ck_lock);

        int log_pages = 0, copied = 0;
        bool ok = run_checkpoint(st, st->ck_db, &log_pages, &copied);

        pthread_mutex_lock(&st->ck_lock);
        st->ck_running = false;
        if (ok) {
            st->ck_passed = log_pages;
            pthread_mutex_lock(&st->lock);
            st->stats.checkpoints++;
            pthread_mutex_unlock(&st->lock);
        }
    }
    pthread_mutex_unlock(&st->ck_lock);
    return NULL;
}

bool store_checkpointer_start(store *st, const char *path, char *err, size_t errlen)
{
    int rc = sqlite3_open_v2(path, &st->ck_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                             store_wal_base_vfs());
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s (checkpoint connection): %s", path,
                 st->ck_db ? sqlite3_errmsg(st->ck_db) : "cannot open");
        return false;
    }
    store_set_busy_handler(st->ck_db);
    /* Reading the journal mode makes the connection open the database
     * and see that it is in WAL mode; until then a checkpoint is a no-op. */
    const char *setup[] = {"PRAGMA wal_autocheckpoint=0", store_synchronous_pragma(st),
                           "PRAGMA journal_mode"};
    for (size_t i = 0; i < sizeof setup / sizeof setup[0]; i++)
        if (!store_exec_sql(st->ck_db, setup[i], err, errlen))
            return false;
    pthread_mutex_init(&st->ck_lock, NULL);
    pthread_cond_init(&st->ck_wake, NULL);
    st->ck_initialised = true;
    rc = pthread_create(&st->ck_thread, NULL, checkpoint_thread, st);
    if (rc != 0) {
        snprintf(err, errlen, "checkpoint thread: %s", strerror(rc));
        return false;
    }
    st->ck_started = true;
    /* Replaces the automatic checkpoint of the writer's connection. */
    sqlite3_wal_hook(st->db, on_wal_commit, st);
    return true;
}

void store_checkpointer_stop(store *st)
{
    if (st->ck_started) {
        pthread_mutex_lock(&st->ck_lock);
        st->ck_stopping = true;
        pthread_cond_signal(&st->ck_wake);
        pthread_mutex_unlock(&st->ck_lock);
        pthread_join(st->ck_thread, NULL);
        st->ck_started = false;
    }
    if (st->ck_db) {
        sqlite3_close(st->ck_db);
        st->ck_db = NULL;
    }
    if (st->ck_initialised) {
        pthread_mutex_destroy(&st->ck_lock);
        pthread_cond_destroy(&st->ck_wake);
        st->ck_initialised = false;
    }
}

void store_test_hold_checkpointer(store *st, bool hold)
{
    pthread_mutex_lock(&st->ck_lock);
    st->ck_test_held = hold;
    pthread_cond_signal(&st->ck_wake);
    pthread_mutex_unlock(&st->ck_lock);
}

bool store_test_checkpointer_busy(store *st)
{
    pthread_mutex_lock(&st->ck_lock);
    bool busy = st->ck_running || pass_may_start(st);
    pthread_mutex_unlock(&st->ck_lock);
    return busy;
}

/*
 * store/open.c — opening and closing the store: the data directory and its
 * lock file, the database with its pragmas and migrations, the
 * checkpointer, and the store thread (thread.c) that serves it.
 *
 * Durability (synchronous pragma, WAL journal):
 *   fsync  FULL   — the WAL is fsynced at every commit: a completion means
 *                   the data survives a power cut.
 *   os     NORMAL — the commit is written to the OS without fsync; the WAL
 *                   is fsynced at checkpoints. Survives a crash of iothubd,
 *                   not of the machine (recent commits may be lost, the
 *                   file stays consistent). Chosen over OFF because OFF may
 *                   corrupt the file on power loss, and NORMAL costs nothing
 *                   per commit in WAL mode.
 *   none   OFF    — no fsync at all, even at checkpoints. Completions still
 *                   wait for the commit (to the OS page cache): skipping the
 *                   wait would turn a failed commit into a false success,
 *                   and the commit without fsync costs microseconds.
 *
 * The store thread's connection opens the database through the VFS that
 * gathers WAL writes (wal_gather.c). The WAL index is in heap memory
 * there, not in a -shm file, so a hub whose disk filled while it was down
 * still opens its database and serves reads.
 */
#include "store/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"

static bool make_dir(const char *dir, char *err, size_t errlen)
{
    if (mkdir(dir, 0700) == 0 || errno == EEXIST)
        return true;
    snprintf(err, errlen, "%s: %s", dir, strerror(errno));
    return false;
}

/* SQLite's memory statistics take a global mutex around every allocation
 * and free it makes (several per telemetry row); nothing here reads them
 * (no soft heap limit, no sqlite3_memory_used), so they are turned off.
 * This is library-wide configuration, only possible before SQLite
 * initialises (the first open in the process); later calls fail with
 * SQLITE_MISUSE, which is harmless: the setting is the same every time. */
static void configure_sqlite(void)
{
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

/* `name` inside the data directory, into path[cap]; false with err set
 * when it does not fit. */
static bool data_path(const store *st, const char *name, char *path, size_t cap, char *err,
                      size_t errlen)
{
    if ((size_t)snprintf(path, cap, "%s/%s", st->dir, name) < cap)
        return true;
    snprintf(err, errlen, "data directory path too long");
    return false;
}

const char *store_synchronous_pragma(const store *st)
{
    static const char *const pragma[] = {
        [STORE_DURABILITY_FSYNC] = "PRAGMA synchronous=FULL",
        [STORE_DURABILITY_OS] = "PRAGMA synchronous=NORMAL",
        [STORE_DURABILITY_NONE] = "PRAGMA synchronous=OFF",
    };
    return pragma[st->durability];
}

/* Opens the database file and sets it up (pragmas, migrations,
 * partitions), and starts the checkpointer (checkpoint.c). */
static bool open_db(store *st, char *err, size_t errlen)
{
    char path[4096];
    if (!data_path(st, "iothubd.db", path, sizeof path, err, errlen))
        return false;
    configure_sqlite();
    int rc = sqlite3_open_v2(path, &st->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             store_wal_gather_vfs());
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, st->db ? sqlite3_errmsg(st->db) : "cannot open");
        return false;
    }
    store_set_busy_handler(st->db);
    if (!store_exec_sql(st->db, "PRAGMA journal_mode=WAL", err, errlen) ||
        /* a WAL that grew under a burst is cut back when it restarts */
        !store_exec_sql(st->db, "PRAGMA journal_size_limit=33554432", err, errlen) ||
        !store_exec_sql(st->db, store_synchronous_pragma(st), err, errlen) ||
        !store_exec_sql(st->db, "PRAGMA foreign_keys=OFF", err, errlen) ||
        /* 32 MiB instead of 2: a batch under load dirties a few MiB of new
         * log pages; with the default cache SQLite spilled them into the
         * WAL mid-transaction and wrote them again at commit (6 pwrite and
         * 0.7 pread per message instead of 0.3). Only pages actually used
         * take memory. */
        !store_exec_sql(st->db, "PRAGMA cache_size=-32768", err, errlen))
        return false;
    if (!store_migrate(st->db, STORE_SCHEMA_VERSION, err, errlen) ||
        !store_telemetry_init_partitions(st->db, st->partitions, err, errlen))
        return false;
    return store_checkpointer_start(st, path, err, errlen);
}

static void close_db(store *st)
{
    store_checkpointer_stop(st); /* before st->db: its last checkpoint runs at close */
    for (size_t i = 0; i < st->nstmts; i++)
        sqlite3_finalize(st->stmts[i].stmt);
    st->nstmts = 0;
    store_part_stmts_free(st);
    if (st->db)
        sqlite3_close(st->db);
    st->db = NULL;
}

/* One server per data directory: a second process must not share the
 * database (its telemetry sequence numbers, twin versions and queues live
 * in this process's memory). The unix-excl VFS (wal_gather.c) would
 * refuse it too, but only as a busy database at its first statement; the
 * lock file refuses it before anything is opened, with a message that
 * says why. flock is released by the kernel when the process dies, so a
 * crash never leaves the directory locked. */
static bool lock_dir(store *st, char *err, size_t errlen)
{
    char path[4096];
    if (!data_path(st, "iothubd.lock", path, sizeof path, err, errlen))
        return false;
    st->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (st->lock_fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return false;
    }
    if (flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "%s: %s", st->dir,
                 errno == EWOULDBLOCK ? "in use by another iothubd" : strerror(errno));
        return false;
    }
    return true;
}

static void free_store(store *st)
{
    close_db(st);
    pthread_mutex_destroy(&st->lock);
    pthread_cond_destroy(&st->wake);
    pthread_cond_destroy(&st->synced);
    if (st->lock_fd >= 0)
        close(st->lock_fd);
    free(st->dir);
    free(st);
}

store *store_open(const store_config *cfg, char *err, size_t errlen)
{
    if (!cfg->dir || !*cfg->dir) {
        snprintf(err, errlen, "no data directory");
        return NULL;
    }
    if ((unsigned)cfg->durability > STORE_DURABILITY_NONE) {
        snprintf(err, errlen, "bad durability setting");
        return NULL;
    }
    store *st = calloc(1, sizeof *st);
    if (!st || !(st->dir = strdup(cfg->dir))) {
        free(st);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    st->durability = cfg->durability;
    st->partitions = cfg->partitions ? cfg->partitions : 4;
    st->retention_ms = cfg->retention_ms;
    st->retention_bytes = cfg->retention_bytes;
    st->retention_interval_ms = cfg->retention_interval_ms ? cfg->retention_interval_ms : 60000;
    st->commit_interval_ns = (uint64_t)cfg->commit_interval_us * 1000u;
    st->tail = &st->head;
    st->lock_fd = -1;
    pthread_mutex_init(&st->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&st->wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&st->synced, NULL);
    if (!make_dir(st->dir, err, errlen) || !lock_dir(st, err, errlen) ||
        !open_db(st, err, errlen)) {
        free_store(st);
        return NULL;
    }
    int rc = pthread_create(&st->thread, NULL, store_thread_main, st);
    if (rc != 0) {
        snprintf(err, errlen, "store thread: %s", strerror(rc));
        free_store(st);
        return NULL;
    }
    log_info("store: %s (schema %d, %u partitions)", st->dir, STORE_SCHEMA_VERSION,
             st->partitions);
    return st;
}

void store_close(store *st)
{
    if (!st)
        return;
    pthread_mutex_lock(&st->lock);
    st->stopping = true;
    pthread_cond_signal(&st->wake);
    pthread_mutex_unlock(&st->lock);
    pthread_join(st->thread, NULL);
    free_store(st);
}

/*
 * store/sync.c — the fsync stage of group commit (durability = fsync).
 *
 * With synchronous=FULL a COMMIT fsyncs the WAL before it returns, and the
 * store thread sat in that fsync (~0.2 ms on this disk when it is quiet,
 * tens of milliseconds when it is not) before it could start executing the
 * next batch. Now the store thread's connection commits with
 * synchronous=NORMAL (the WAL frames reach the OS, nothing is synced) and
 * hands the finished batch to this stage: one thread that fdatasyncs the
 * WAL and only then hands the completions of every batch committed before
 * that fdatasync began to their loops. Meanwhile the store thread executes
 * the next batch, so one commit's disk wait overlaps the next batch's work,
 * and one fdatasync covers every batch that committed while the previous
 * one was on the disk.
 *
 * Why a completion still means "on disk", as with FULL:
 *   - it is released only after an fdatasync of the WAL that began after its
 *     batch's COMMIT had returned, so every frame of that commit was in the
 *     page cache and is now on the disk (fdatasync works on the file, not on
 *     the descriptor; this one is our own, opened on iothubd.db-wal);
 *   - an answer read from the database (a later batch) is released after
 *     that later batch's sync, which covers every earlier commit too: data
 *     that is not yet durable is never shown outside the process;
 *   - WAL with NORMAL keeps the file consistent through a power cut (SQLite's
 *     guarantee): the commits lost are the newest ones, whose completions were
 *     never released;
 *   - a checkpoint syncs the WAL before it copies frames into the database,
 *     and the database after (the checkpointer's connection keeps its own
 *     synchronous setting); so a WAL that restarts from its beginning never
 *     overwrites frames that exist nowhere else;
 *   - FULL also syncs the directory when it creates the WAL; here the data
 *     directory is synced once when the stage starts, after the WAL exists.
 *
 * Order: batches are finished in the order they were committed, failed ones
 * too (a rolled-back batch needs no sync, but waits behind the committed
 * ones before it), so completions keep the order of their requests: MQTT
 * wants PUBACKs in the order of the PUBLISHes [MQTT-4.6.0-2].
 *
 * A failed fdatasync: Linux may then have dropped the unwritten pages and
 * marked them clean, so a hole may stay in the WAL, and SQLite's recovery
 * stops at the first bad frame: every later commit would be lost with it,
 * however well its own fdatasync went. So the failure is sticky (as in
 * PostgreSQL since 2018): the waiting requests fail with STORE_ERROR, and
 * every later batch fails without running until iothubd restarts. Nothing
 * acknowledged before the failure is affected.
 */
#include "store/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"

/* fsyncs the data directory: makes the WAL's directory entry durable. */
static bool sync_dir(const char *dir, char *err, size_t errlen)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        snprintf(err, errlen, "%s: fsync: %s", dir, strerror(errno));
        if (fd >= 0)
            close(fd);
        return false;
    }
    close(fd);
    return true;
}

/* Fails every request of `list` after a failed sync. */
static void fail_unsynced(store_req *list, const char *why)
{
    for (store_req *r = list; r; r = r->next) {
        r->status = STORE_ERROR;
        snprintf(r->err, sizeof r->err, "%s", why);
    }
}

/* fdatasyncs the WAL for `list`; on failure (real or injected by a test)
 * fails it and makes the failure sticky. */
static void sync_list(store *st, store_req *list)
{
    bool inject = false;
    pthread_mutex_lock(&st->lock);
    if (st->fail_syncs) {
        st->fail_syncs--;
        inject = true;
    }
    pthread_mutex_unlock(&st->lock);
    int rc;
    do {
        rc = inject ? (errno = EIO, -1) : fdatasync(st->wal_fd);
    } while (rc != 0 && errno == EINTR);
    if (rc == 0) {
        pthread_mutex_lock(&st->lock);
        st->stats.syncs++;
        pthread_mutex_unlock(&st->lock);
        return;
    }
    char why[200];
    snprintf(why, sizeof why, "fdatasync of the WAL failed: %s%s; the store refuses every "
             "request until iothubd restarts", strerror(errno), inject ? " (injected by test)" : "");
    if (!atomic_exchange(&st->sync_failed, true))
        log_error("store: %s", why);
    fail_unsynced(list, why);
}

static void *sync_thread(void *arg)
{
    store *st = arg;
    pthread_setname_np(pthread_self(), "fsync");
    pthread_mutex_lock(&st->sync_lock);
    for (;;) {
        while ((!st->sync_head || st->sync_hold) && !st->sync_stopping)
            pthread_cond_wait(&st->sync_wake, &st->sync_lock);
        if (!st->sync_head)
            break; /* stopping, and nothing is left */
        store_req *list = st->sync_head;
        bool needed = st->sync_needed;
        st->sync_head = NULL;
        st->sync_tail = &st->sync_head;
        st->sync_needed = false;
        pthread_mutex_unlock(&st->sync_lock);
        if (needed && !atomic_load(&st->sync_failed))
            sync_list(st, list);
        else if (needed) /* committed after the failure: cannot be vouched for */
            fail_unsynced(list, "an earlier fdatasync of the WAL failed; restart iothubd");
        store_finish_batch(st, list);
        pthread_mutex_lock(&st->sync_lock);
    }
    pthread_mutex_unlock(&st->sync_lock);
    return NULL;
}

bool store_sync_start(store *st, const char *db_path, char *err, size_t errlen)
{
    char wal[4200];
    snprintf(wal, sizeof wal, "%s-wal", db_path);
    /* the WAL exists: opening the store ran transactions in WAL mode */
    st->wal_fd = open(wal, O_RDWR | O_CLOEXEC);
    if (st->wal_fd < 0) {
        snprintf(err, errlen, "%s: %s", wal, strerror(errno));
        return false;
    }
    if (fdatasync(st->wal_fd) != 0) {
        snprintf(err, errlen, "%s: fdatasync: %s", wal, strerror(errno));
        return false;
    }
    if (!sync_dir(st->dir, err, errlen))
        return false;
    st->sync_head = NULL; /* a second start after a failed open */
    st->sync_tail = &st->sync_head;
    st->sync_needed = st->sync_stopping = false;
    int rc = pthread_create(&st->sync_tid, NULL, sync_thread, st);
    if (rc != 0) {
        snprintf(err, errlen, "fsync thread: %s", strerror(rc));
        return false;
    }
    st->sync_started = true;
    return true;
}

void store_sync_stop(store *st)
{
    if (st->sync_started) {
        pthread_mutex_lock(&st->sync_lock);
        st->sync_stopping = true;
        pthread_cond_signal(&st->sync_wake);
        pthread_mutex_unlock(&st->sync_lock);
        pthread_join(st->sync_tid, NULL);
        st->sync_started = false;
    }
    if (st->wal_fd >= 0)
        close(st->wal_fd);
    st->wal_fd = -1;
}

void store_batch_done(store *st, store_req *batch, bool committed)
{
    if (!st->sync_started) {
        store_finish_batch(st, batch);
        return;
    }
    if (!batch)
        return;
    store_req *last = batch;
    while (last->next)
        last = last->next;
    pthread_mutex_lock(&st->sync_lock);
    bool wake = !st->sync_head;
    *st->sync_tail = batch;
    st->sync_tail = &last->next;
    st->sync_needed |= committed;
    pthread_mutex_unlock(&st->sync_lock);
    if (wake) /* otherwise the thread is syncing, or woken already */
        pthread_cond_signal(&st->sync_wake);
}

bool store_sync_failed(store *st) { return atomic_load(&st->sync_failed); }

void store_test_fail_syncs(store *st, unsigned n)
{
    pthread_mutex_lock(&st->lock);
    st->fail_syncs = n;
    pthread_mutex_unlock(&st->lock);
}

void store_test_hold_syncs(store *st, bool hold)
{
    pthread_mutex_lock(&st->sync_lock);
    st->sync_hold = hold;
    pthread_cond_signal(&st->sync_wake);
    pthread_mutex_unlock(&st->sync_lock);
}

/*
 * store/thread.c — open/close, the request queue, the store thread and
 * group commit.
 *
 * Group commit: callers on any thread append requests to one queue (a
 * mutex-protected singly linked list) and signal a condition variable. The
 * store thread swaps the whole list out under the lock, then, unlocked:
 *   BEGIN IMMEDIATE
 *   for each request: SAVEPOINT; exec; RELEASE (or ROLLBACK TO on error)
 *   COMMIT
 * and only then hands every completion to its loop. One fsync covers the
 * whole batch, so the more requests arrive while a commit is on the disk,
 * the bigger the next batch: throughput grows with load while latency stays
 * one commit. A per-request savepoint keeps one bad request (a constraint
 * error) from failing its neighbours; a failed COMMIT fails them all, since
 * none of them is on disk. A request that has nothing to undo when it
 * fails part way (store_req.no_savepoint: twin writes and C2D updates and
 * deletes are one statement, which SQLite makes all-or-nothing by itself;
 * a C2D enqueue may leave a skipped sequence number) runs without one:
 * the savepoint (its journal copied each page the write touched) cost a
 * twin write ~7,600 instructions. Adjacent requests that offer an
 * exec_run (the telemetry appends, thousands per batch under load) run as
 * one call in one savepoint, a lone one too (its exec is then only the
 * slow path); if that fails they run again one by one, so the isolation
 * is the same. Completions go to each loop as one chain per batch (one
 * mailbox post, one wake-up), not one post per request.
 *
 * Commit interval: under moderate load group commit alone would commit as
 * often as the disk allows, a few requests at a time, and each commit
 * rewrites whole pages (the log's leaves, the partition counters) and
 * takes an fsync: at 54k telemetry messages/s that was 2,300 commits and
 * ~100 MB of WAL per second, and the disk's latency spikes under that
 * write load showed in the PUBACK tail. With a commit interval
 * (--commit-interval-us, 1 ms by default) a batch of telemetry appends
 * starts no sooner than that after the previous batch started: at most
 * 1,000 commits per second from telemetry, at most 1 ms more per append,
 * and no wait at all for one that finds the store idle. Only appends wait
 * (store_req.batchable): any other request is a round trip someone waits
 * on with few requests outstanding (twin patches, C2D sends), where the
 * extra millisecond cost 10-20 % of the throughput, so one of them in the
 * queue starts the batch at once, taking the appends with it; see
 * docs/PERFORMANCE.md.
 *
 * WAL checkpoints do not run in these commits but beside them, on the
 * checkpoint thread's own connection (checkpoint.c).
 *
 * Retention of the telemetry log runs on this thread, in its own
 * transaction, every retention_interval_ms (the thread's wait times out).
 *
 * Closing sets `stopping`: the thread keeps taking batches until the queue
 * is empty, then exits; store_close (open.c) joins it and closes the
 * database. Durability settings and how the database is opened: open.c.
 */
#include "store/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/hmap.h"
#include "util/log.h"
#include "util/time.h"

int64_t store_now_ms(void) { return (int64_t)time_wall_ms(); }

const char *store_status_name(store_status st)
{
    switch (st) {
    case STORE_OK: return "ok";
    case STORE_NOT_FOUND: return "not found";
    case STORE_FULL: return "full";
    case STORE_INVALID: return "invalid";
    case STORE_ERROR: return "error";
    case STORE_NO_SPACE: return "no space left on the data directory's disk";
    }
    return "?";
}

bool store_durability_parse(const char *name, store_durability *out)
{
    static const struct { const char *name; store_durability d; } names[] = {
        {"fsync", STORE_DURABILITY_FSYNC},
        {"os", STORE_DURABILITY_OS},
        {"none", STORE_DURABILITY_NONE},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].d;
            return true;
        }
    return false;
}

/* ---- requests ----------------------------------------------------------- */

void *store_req_new(size_t size, size_t extra, net_loop *loop,
                    store_status (*exec)(store *, store_req *), void (*complete)(store_req *))
{
    store_req *r = calloc(1, size + extra);
    if (!r) {
        log_error("store: out of memory queuing a request");
        abort();
    }
    r->loop = loop;
    r->exec = exec;
    r->complete = complete;
    return r;
}

char *store_copy_str(char **cursor, const char *s)
{
    size_t n = strlen(s ? s : "") + 1;
    char *d = *cursor;
    memcpy(d, s ? s : "", n);
    *cursor += n;
    return d;
}

void *store_copy_mem(char **cursor, const void *p, size_t n)
{
    char *d = *cursor;
    if (n)
        memcpy(d, p, n);
    *cursor += n;
    return d;
}

/* Queues r and wakes the store thread when r changes what it waits for:
 * a batchable request joining a non-empty queue does not (the thread is
 * running a batch and looks at the queue next, or sleeps out the commit
 * interval, or the queue is held). The signal comes after the unlock:
 * signalled under it, the store thread would wake only to block on the
 * mutex its waker still holds (and on a busy machine often preempt that
 * waker first). It cannot miss the signal: it checks the queue and starts
 * waiting under the same lock. */
void store_submit(store *st, store_req *r)
{
    r->next = NULL;
    pthread_mutex_lock(&st->lock);
    bool wake = !r->batchable || !st->head;
    *st->tail = r;
    st->tail = &r->next;
    st->urgent_queued |= !r->batchable;
    pthread_mutex_unlock(&st->lock);
    if (wake)
        pthread_cond_signal(&st->wake);
}

static void sync_complete(store_req *r)
{
    (void)r; /* signalled by finish_request under the lock */
}

store_status store_run_sync(store *st, store_req *r)
{
    r->loop = NULL;
    r->complete = sync_complete;
    r->sync_done = false;
    store_submit(st, r);
    pthread_mutex_lock(&st->lock);
    while (!r->sync_done)
        pthread_cond_wait(&st->synced, &st->lock);
    pthread_mutex_unlock(&st->lock);
    return r->status;
}

static store_status noop_exec(store *st, store_req *r)
{
    (void)st;
    (void)r;
    return STORE_OK;
}

void store_flush(store *st)
{
    store_req r = {.exec = noop_exec};
    store_run_sync(st, &r);
}

/* ---- SQLite helpers ----------------------------------------------------- */

sqlite3_stmt *store_stmt(store *st, const char *sql, store_req *r)
{
    for (size_t i = 0; i < st->nstmts; i++)
        if (st->stmts[i].sql == sql) {
            sqlite3_stmt *s = st->stmts[i].stmt;
            sqlite3_reset(s);
            sqlite3_clear_bindings(s);
            return s;
        }
    sqlite3_stmt *s = NULL;
    unsigned flags = st->nstmts < STORE_STMT_CACHE ? SQLITE_PREPARE_PERSISTENT : 0;
    if (sqlite3_prepare_v3(st->db, sql, -1, flags, &s, NULL) != SQLITE_OK) {
        store_db_error(st, r, "prepare");
        return NULL;
    }
    if (st->nstmts == STORE_STMT_CACHE) { /* never expected: grow the cache */
        log_error("store: statement cache full");
        abort();
    }
    st->stmts[st->nstmts].sql = sql;
    st->stmts[st->nstmts].stmt = s;
    st->nstmts++;
    return s;
}

/* The status for the database's last error: a full disk is reported apart
 * (callers answer "busy, retry later" instead of "server error"); read-only
 * and I/O errors stay STORE_ERROR. */
static store_status last_error_status(store *st)
{
    return (sqlite3_extended_errcode(st->db) & 0xff) == SQLITE_FULL ? STORE_NO_SPACE : STORE_ERROR;
}

store_status store_db_error(store *st, store_req *r, const char *what)
{
    snprintf(r->err, sizeof r->err, "%s: %s", what, sqlite3_errmsg(st->db));
    return last_error_status(st);
}

bool store_exec_sql(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return true;
    snprintf(err, errlen, "%s: %s", sql, msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return false;
}

/* ---- the store thread --------------------------------------------------- */

static void post_complete(net_loop *loop, void *arg)
{
    (void)loop;
    store_req *r = arg;
    r->complete(r);
}

/* Hands a request's completion over; it may be freed after this. */
static void finish_request(store *st, store_req *r)
{
    if (r->complete == sync_complete) {
        pthread_mutex_lock(&st->lock);
        r->sync_done = true;
        pthread_cond_broadcast(&st->synced);
        pthread_mutex_unlock(&st->lock);
    } else if (r->loop) {
        net_loop_post(r->loop, post_complete, r);
    } else {
        r->complete(r);
    }
}

/* On the loop: completes a chain of requests posted as one task. */
static void post_chain(net_loop *loop, void *arg)
{
    (void)loop;
    for (store_req *r = arg, *next; r; r = next) {
        next = r->next;
        r->complete(r);
    }
}

#define FINISH_LOOPS 16

/* Hands every completion of a committed (or failed) batch over. Requests
 * for the same loop go as one chain in one mailbox post, in batch order:
 * one lock and one wake-up per loop and batch instead of a lock per
 * request (a batch under load is thousands of telemetry appends). Loops
 * beyond FINISH_LOOPS distinct ones, sync and loop-less requests are
 * finished one by one, after the chains are posted. */
static void finish_batch(store *st, store_req *batch)
{
    struct { net_loop *loop; store_req *head, **tail; } chains[FINISH_LOOPS];
    size_t nchains = 0;
    store_req *rest = NULL, **rest_tail = &rest;
    for (store_req *r = batch, *next; r; r = next) {
        next = r->next;
        r->next = NULL;
        size_t c = 0;
        if (r->loop && r->complete != sync_complete)
            while (c < nchains && chains[c].loop != r->loop)
                c++;
        if (!r->loop || r->complete == sync_complete || c == FINISH_LOOPS) {
            *rest_tail = r;
            rest_tail = &r->next;
            continue;
        }
        if (c == nchains) {
            chains[c].loop = r->loop;
            chains[c].head = NULL;
            chains[c].tail = &chains[c].head;
            nchains++;
        }
        *chains[c].tail = r;
        chains[c].tail = &r->next;
    }
    for (size_t c = 0; c < nchains; c++)
        net_loop_post(chains[c].loop, post_chain, chains[c].head);
    for (store_req *r = rest, *next; r; r = next) {
        next = r->next;
        finish_request(st, r);
    }
}

static void fail_all(store_req *batch, store_status status, const char *why)
{
    for (store_req *r = batch; r; r = r->next) {
        r->status = status;
        snprintf(r->err, sizeof r->err, "%s", why);
    }
}

/* The transaction control statements of every batch and request. They run
 * several times per group commit; through sqlite3_exec each would be parsed
 * and compiled again every time (a dozen allocations and thousands of
 * instructions per request), so they come from the statement cache. */
static const char *const SQL_BEGIN = "BEGIN IMMEDIATE";
static const char *const SQL_COMMIT = "COMMIT";
static const char *const SQL_ROLLBACK = "ROLLBACK";
static const char *const SQL_SAVEPOINT = "SAVEPOINT req";
static const char *const SQL_ROLLBACK_TO = "ROLLBACK TO req";
static const char *const SQL_RELEASE = "RELEASE req";

/* Runs one cached statement that returns no rows; false with err set. */
static bool exec_cached(store *st, const char *sql, char *err, size_t errlen)
{
    store_req scratch;
    sqlite3_stmt *s = store_stmt(st, sql, &scratch);
    if (!s) {
        snprintf(err, errlen, "%s", scratch.err);
        return false;
    }
    int rc = sqlite3_step(s);
    /* reset now, not at the next use: a finished COMMIT or ROLLBACK must
     * not leave a statement that still counts as active */
    sqlite3_reset(s);
    if (rc == SQLITE_DONE)
        return true;
    snprintf(err, errlen, "%s: %s", sql, sqlite3_errmsg(st->db));
    return false;
}

/* Runs one request inside its savepoint, or with none when it is
 * no_savepoint (nothing it leaves behind on failure must be undone).
 * False when the batch's transaction is gone: SQLite rolls the whole
 * transaction back by itself on some errors (SQLITE_FULL, SQLITE_IOERR,
 * SQLITE_NOMEM), and the next request would then run, and be committed,
 * outside the batch. */
static bool exec_request(store *st, store_req *r)
{
    char err[256];
    bool savepoint = !r->no_savepoint;
    if (savepoint && !exec_cached(st, SQL_SAVEPOINT, err, sizeof err)) {
        r->status = last_error_status(st);
        snprintf(r->err, sizeof r->err, "%s", err);
        return !sqlite3_get_autocommit(st->db);
    }
    r->status = r->exec(st, r);
    if (r->status == STORE_ERROR || r->status == STORE_NO_SPACE) {
        if (r->status == STORE_ERROR)
            r->status = last_error_status(st); /* exec may not have asked */
        if (sqlite3_get_autocommit(st->db))
            return false;
        if (savepoint)
            exec_cached(st, SQL_ROLLBACK_TO, err, sizeof err);
    }
    if (savepoint)
        exec_cached(st, SQL_RELEASE, err, sizeof err);
    return true;
}

/* Runs first->exec_run over the n requests from `first` inside one
 * savepoint. False when it failed; the savepoint is then rolled back if
 * the transaction is still open. */
static bool exec_group(store *st, store_req *first, size_t n)
{
    char err[256];
    if (!exec_cached(st, SQL_SAVEPOINT, err, sizeof err))
        return false;
    if (first->exec_run(st, first, n) && exec_cached(st, SQL_RELEASE, err, sizeof err))
        return true;
    if (!sqlite3_get_autocommit(st->db)) {
        exec_cached(st, SQL_ROLLBACK_TO, err, sizeof err);
        exec_cached(st, SQL_RELEASE, err, sizeof err);
    }
    return false;
}

/* Executes `r`, or the run of adjacent requests that share its exec_run
 * (see store_req), and returns the request after them; counts them in *n.
 * When the transaction is gone, sets *lost and returns NULL (exec_request). */
static store_req *exec_next(store *st, store_req *r, uint64_t *n, store_req **lost)
{
    size_t k = 1;
    if (r->exec_run)
        for (store_req *q = r->next; q && q->exec_run == r->exec_run; q = q->next)
            k++;
    if (r->exec_run) { /* even alone: a lone append through append_run cost
                        * 52,000 instructions against 71,500 through exec */
        if (exec_group(st, r, k)) {
            *n += k;
            while (k--)
                r = r->next;
            return r;
        }
        if (sqlite3_get_autocommit(st->db)) { /* rolled back by SQLite itself */
            r->status = last_error_status(st);
            (*n)++;
            *lost = r;
            return NULL;
        }
    }
    /* one by one: a single request, or the slow path after a failed run */
    for (; k--; r = r->next) {
        (*n)++;
        if (!exec_request(st, r)) {
            *lost = r;
            return NULL;
        }
    }
    return r;
}

/* One group commit: every request of the batch in one transaction. */
static void run_batch(store *st, store_req *batch, bool inject_failure)
{
    char err[256];
    uint64_t n = 0;
    bool committed = false;
    store_req *lost = NULL; /* the request whose failure ended the transaction */
    if (!exec_cached(st, SQL_BEGIN, err, sizeof err)) {
        fail_all(batch, last_error_status(st), err);
    } else {
        for (store_req *r = batch; r && !lost;)
            r = exec_next(st, r, &n, &lost);
        if (lost) {
            log_error("store: a batch of %llu requests was rolled back: %s",
                      (unsigned long long)n, lost->err);
            snprintf(err, sizeof err, "%s", lost->err);
            fail_all(batch, lost->status, err);
        } else if (inject_failure) {
            exec_cached(st, SQL_ROLLBACK, err, sizeof err);
            fail_all(batch, STORE_ERROR, "commit failed (injected by test)");
        } else if (!store_c2d_seq_save(st, err, sizeof err) ||
                   !exec_cached(st, SQL_COMMIT, err, sizeof err)) {
            store_status why = last_error_status(st);
            log_error("store: commit of %llu requests failed: %s", (unsigned long long)n, err);
            char err2[256];
            if (!sqlite3_get_autocommit(st->db)) /* still open: end it */
                exec_cached(st, SQL_ROLLBACK, err2, sizeof err2);
            fail_all(batch, why, err);
        } else {
            committed = true;
        }
    }
    pthread_mutex_lock(&st->lock);
    st->stats.requests += n;
    if (committed)
        st->stats.commits++;
    else
        st->stats.failed_commits++;
    pthread_mutex_unlock(&st->lock);
    finish_batch(st, batch);
}

/* Periodic retention, in its own transaction. */
static void run_retention(store *st)
{
    store_req r = {0};
    char err[256];
    uint64_t deleted = 0;
    if (!store_exec_sql(st->db, "BEGIN IMMEDIATE", err, sizeof err)) {
        log_error("store: retention: %s", err);
        return;
    }
    if (store_retention_apply(st, &r, store_now_ms(), &deleted) != STORE_OK ||
        !store_exec_sql(st->db, "COMMIT", err, sizeof err)) {
        log_error("store: retention: %s", r.err[0] ? r.err : err);
        store_exec_sql(st->db, "ROLLBACK", err, sizeof err);
        return;
    }
    if (deleted)
        log_debug("store: retention removed %llu events", (unsigned long long)deleted);
}

static struct timespec timespec_of_ns(uint64_t ns)
{
    return (struct timespec){.tv_sec = (time_t)(ns / 1000000000u),
                             .tv_nsec = (long)(ns % 1000000000u)};
}

/* Waits, st->lock held, until there is something to do: a batch that may
 * start (requests queued and not held, and either the commit interval since
 * the last batch's start has passed or a request that is not batchable is
 * among them, or stopping), the end of the queue when stopping, or
 * retention coming due (retention_at_ms, 0 = never). */
static void wait_for_work(store *st, uint64_t commit_at_ns, uint64_t retention_at_ms)
{
    for (;;) {
        bool queued = st->head && (!st->hold || st->stopping);
        uint64_t now = time_mono_ns();
        if (queued && (st->stopping || st->urgent_queued || now >= commit_at_ns))
            return;
        if ((st->stopping && !st->head) ||
            (retention_at_ms && now / 1000000u >= retention_at_ms))
            return;
        uint64_t until = queued ? commit_at_ns : UINT64_MAX;
        if (retention_at_ms && retention_at_ms * 1000000u < until)
            until = retention_at_ms * 1000000u;
        if (until == UINT64_MAX) {
            pthread_cond_wait(&st->wake, &st->lock);
        } else {
            struct timespec ts = timespec_of_ns(until);
            pthread_cond_timedwait(&st->wake, &st->lock, &ts);
        }
    }
}

void *store_thread_main(void *arg)
{
    store *st = arg;
    pthread_setname_np(pthread_self(), "store");
    bool retention = st->retention_ms > 0 || st->retention_bytes > 0;
    uint64_t next_retention = retention ? time_mono_ms() + st->retention_interval_ms : 0;
    uint64_t commit_at_ns = 0;
    for (;;) {
        pthread_mutex_lock(&st->lock);
        wait_for_work(st, commit_at_ns, next_retention);
        store_req *batch = (!st->hold || st->stopping) ? st->head : NULL;
        if (batch) {
            st->head = NULL;
            st->tail = &st->head;
            st->urgent_queued = false;
        }
        bool inject = false;
        if (batch && st->fail_commits) {
            st->fail_commits--;
            inject = true;
        }
        bool stop = st->stopping && !batch;
        pthread_mutex_unlock(&st->lock);
        if (stop)
            break;
        if (batch) {
            commit_at_ns = time_mono_ns() + st->commit_interval_ns;
            run_batch(st, batch, inject);
        }
        if (retention && time_mono_ms() >= next_retention) {
            run_retention(st);
            pthread_mutex_lock(&st->lock);
            st->stats.retention_runs++;
            pthread_mutex_unlock(&st->lock);
            next_retention = time_mono_ms() + st->retention_interval_ms;
        }
    }
    return NULL;
}

void store_get_stats(store *st, store_stats *out)
{
    pthread_mutex_lock(&st->lock);
    *out = st->stats;
    pthread_mutex_unlock(&st->lock);
}

unsigned store_partitions(const store *st) { return st->partitions; }

unsigned store_partition_of(const store *st, const char *device_id)
{
    return (unsigned)(hmap_hash(device_id, strlen(device_id)) % st->partitions);
}

void store_test_fail_commits(store *st, unsigned n)
{
    pthread_mutex_lock(&st->lock);
    st->fail_commits = n;
    pthread_mutex_unlock(&st->lock);
}

void store_test_hold(store *st, bool hold)
{
    pthread_mutex_lock(&st->lock);
    st->hold = hold;
    pthread_cond_signal(&st->wake);
    pthread_mutex_unlock(&st->lock);
}

void store_done_complete(store_req *r)
{
    store_done_req *d = (store_done_req *)r;
    if (d->done)
        d->done(r->loop, d->arg, r->status, r->err);
    free(r);
}

/*
 * store/telemetry.c — the partitioned telemetry log and consumer-group
 * checkpoints.
 *
 * Each partition has a row in telemetry_parts with the next sequence number
 * to hand out and the bytes (props + body) it holds. An append takes the
 * number and bumps it in the same transaction, so numbers increase by one
 * per partition and are never reused, even after retention emptied the
 * partition. Readers page by (partition, seq) on the primary key.
 *
 * Retention (periodic on the store thread, or on request) first deletes
 * every event older than retention_ms, then, while the total size is over
 * retention_bytes, the oldest events across all partitions (by enqueued
 * time, via the telemetry_by_time index), in chunks. The per-partition byte
 * counters are kept exact by the same transactions, so the size check costs
 * one small SUM.
 */
#include "store/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool store_telemetry_init_partitions(sqlite3 *db, unsigned n, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db,
                           "INSERT OR IGNORE INTO telemetry_parts(part, next_seq, bytes)"
                           " VALUES(?1, 1, 0)",
                           -1, &s, NULL) != SQLITE_OK)
        goto fail;
    for (unsigned p = 0; p < n; p++) {
        sqlite3_bind_int64(s, 1, p);
        if (sqlite3_step(s) != SQLITE_DONE)
            goto fail;
        sqlite3_reset(s);
    }
    sqlite3_finalize(s);
    return true;
fail:
    snprintf(err, errlen, "telemetry partitions: %s", sqlite3_errmsg(db));
    sqlite3_finalize(s);
    return false;
}

/* ---- append ------------------------------------------------------------- */

typedef struct append_req {
    store_req base;
    store_appended_fn done;
    void *arg;
    store_event ev; /* data in the tail */
} append_req;

static const char *const SQL_TAKE_SEQ =
    "UPDATE telemetry_parts SET next_seq = next_seq + 1, bytes = bytes + ?2"
    " WHERE part = ?1 RETURNING next_seq - 1";
static const char *const SQL_APPEND =
    "INSERT INTO telemetry(part, seq, enqueued_ms, size, props, body)"
    " VALUES(?1, ?2, ?3, ?4, ?5, ?6)";

static store_status append_exec(store *st, store_req *r)
{
    store_event *ev = &((append_req *)r)->ev;
    if (ev->partition >= st->partitions) {
        snprintf(r->err, sizeof r->err, "partition %u out of range", ev->partition);
        return STORE_INVALID;
    }
    int64_t size = (int64_t)(ev->props_len + ev->body_len);
    sqlite3_stmt *s = store_stmt(st, SQL_TAKE_SEQ, r);
    if (!s)
        return STORE_ERROR;
    sqlite3_bind_int64(s, 1, ev->partition);
    sqlite3_bind_int64(s, 2, size);
    if (sqlite3_step(s) != SQLITE_ROW)
        return store_db_error(st, r, "telemetry sequence");
    ev->seq = (uint64_t)sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    if (!ev->enqueued_ms)
        ev->enqueued_ms = store_now_ms();
    if (!(s = store_stmt(st, SQL_APPEND, r)))
        return STORE_ERROR;
    sqlite3_bind_int64(s, 1, ev->partition);
    sqlite3_bind_int64(s, 2, (int64_t)ev->seq);
    sqlite3_bind_int64(s, 3, ev->enqueued_ms);
    sqlite3_bind_int64(s, 4, size);
    sqlite3_bind_blob(s, 5, ev->props, (int)ev->props_len, SQLITE_STATIC);
    sqlite3_bind_blob(s, 6, ev->body, (int)ev->body_len, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE)
        return store_db_error(st, r, "telemetry append");
    return STORE_OK;
}

static void append_complete(store_req *r)
{
    append_req *q = (append_req *)r;
    bool ok = r->status == STORE_OK;
    if (q->done)
        q->done(r->loop, q->arg, r->status, ok ? q->ev.seq : 0, ok ? q->ev.enqueued_ms : 0, r->err);
    free(q);
}

void store_telemetry_append(store *st, unsigned partition, int64_t enqueued_ms,
                            const void *props, size_t props_len, const void *body,
                            size_t body_len, net_loop *loop, store_appended_fn done, void *arg)
{
    append_req *q = store_req_new(sizeof *q, props_len + body_len, loop, append_exec,
                                  append_complete);
    q->done = done;
    q->arg = arg;
    char *cur = (char *)(q + 1);
    q->ev.partition = partition;
    q->ev.enqueued_ms = enqueued_ms;
    q->ev.props = store_copy_mem(&cur, props, props_len);
    q->ev.props_len = props_len;
    q->ev.body = store_copy_mem(&cur, body, body_len);
    q->ev.body_len = body_len;
    store_submit(st, &q->base);
}

/* ---- read --------------------------------------------------------------- */

typedef struct read_req {
    store_req base;
    store_read_fn done;
    void *arg;
    unsigned partition;
    uint64_t from_seq;
    size_t max;
    store_read_result res;
    store_event *events;
    char *data; /* every event's props and body */
} read_req;

static const char *const SQL_READ =
    "SELECT seq, enqueued_ms, props, body FROM telemetry"
    " WHERE part = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3";
static const char *const SQL_PART_BOUNDS =
    "SELECT p.next_seq, (SELECT min(seq) FROM telemetry t WHERE t.part = p.part)"
    " FROM telemetry_parts p WHERE p.part = ?1";

/* Reads up to max events into two growing arrays (events, data bytes);
 * pointers into the data are fixed up at the end since it may move. */
static store_status read_exec(store *st, store_req *r)
{
    read_req *q = (read_req *)r;
    if (q->partition >= st->partitions) {
        snprintf(r->err, sizeof r->err, "partition %u out of range", q->partition);
        return STORE_INVALID;
    }
    sqlite3_stmt *s = store_stmt(st, SQL_PART_BOUNDS, r);
    if (!s)
        return STORE_ERROR;
    sqlite3_bind_int64(s, 1, q->partition);
    if (sqlite3_step(s) != SQLITE_ROW)
        return store_db_error(st, r, "telemetry bounds");
    q->res.next_seq = (uint64_t)sqlite3_column_int64(s, 0);
    q->res.first_seq = sqlite3_column_type(s, 1) == SQLITE_NULL
                           ? q->res.next_seq
                           : (uint64_t)sqlite3_column_int64(s, 1);
    if (!(s = store_stmt(st, SQL_READ, r)))
        return STORE_ERROR;
    sqlite3_bind_int64(s, 1, q->partition);
    sqlite3_bind_int64(s, 2, (int64_t)q->from_seq);
    sqlite3_bind_int64(s, 3, (int64_t)(q->max ? q->max : 1));
    size_t cap = 0, used = 0, ecap = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        size_t plen = (size_t)sqlite3_column_bytes(s, 2);
        size_t blen = (size_t)sqlite3_column_bytes(s, 3);
        if (q->res.n == ecap) {
            ecap = ecap ? ecap * 2 : 16;
            store_event *ne = realloc(q->events, ecap * sizeof *ne);
            if (!ne)
                goto oom;
            q->events = ne;
        }
        if (used + plen + blen > cap) {
            cap = (used + plen + blen) * 2 + 256;
            char *nd = realloc(q->data, cap);
            if (!nd)
                goto oom;
            q->data = nd;
        }
        store_event *ev = &q->events[q->res.n++];
        ev->partition = q->partition;
        ev->seq = (uint64_t)sqlite3_column_int64(s, 0);
        ev->enqueued_ms = sqlite3_column_int64(s, 1);
        /* offsets for now: the buffer may still move */
        ev->props = (const void *)(uintptr_t)used;
        ev->props_len = plen;
        if (plen)
            memcpy(q->data + used, sqlite3_column_blob(s, 2), plen);
        used += plen;
        ev->body = (const void *)(uintptr_t)used;
        ev->body_len = blen;
        if (blen)
            memcpy(q->data + used, sqlite3_column_blob(s, 3), blen);
        used += blen;
    }
    if (rc != SQLITE_DONE)
        return store_db_error(st, r, "telemetry read");
    for (size_t i = 0; i < q->res.n; i++) {
        q->events[i].props = q->data + (uintptr_t)q->events[i].props;
        q->events[i].body = q->data + (uintptr_t)q->events[i].body;
    }
    q->res.events = q->events;
    return STORE_OK;
oom:
    q->res.n = 0;
    strcpy(r->err, "out of memory");
    return STORE_ERROR;
}

static void read_complete(store_req *r)
{
    read_req *q = (read_req *)r;
    if (q->done)
        q->done(r->loop, q->arg, r->status, r->status == STORE_OK ? &q->res : NULL, r->err);
    free(q->events);
    free(q->data);
    free(q);
}

void store_telemetry_read(store *st, unsigned partition, uint64_t from_seq, size_t max,
                          net_loop *loop, store_read_fn done, void *arg)
{
    read_req *q = store_req_new(sizeof *q, 0, loop, read_exec, read_complete);
    q->done = done;
    q->arg = arg;
    q->partition = partition;
    q->from_seq = from_seq;
    q->max = max;
    store_submit(st, &q->base);
}

/* ---- retention ---------------------------------------------------------- */

static const char *const SQL_OLD_BY_PART =
    "SELECT part, count(*), sum(size) FROM telemetry WHERE enqueued_ms < ?1 GROUP BY part";
static const char *const SQL_DEL_OLD = "DELETE FROM telemetry WHERE enqueued_ms < ?1";
static const char *const SQL_TOTAL_BYTES = "SELECT coalesce(sum(bytes), 0) FROM telemetry_parts";
static const char *const SQL_OLDEST =
    "SELECT part, seq, size FROM telemetry ORDER BY enqueued_ms, part, seq LIMIT 256";
static const char *const SQL_DEL_ONE = "DELETE FROM telemetry WHERE part = ?1 AND seq = ?2";
static const char *const SQL_SUB_BYTES =
    "UPDATE telemetry_parts SET bytes = bytes - ?2 WHERE part = ?1";

static bool sub_bytes(store *st, store_req *r, int64_t part, int64_t bytes)
{
    sqlite3_stmt *s = store_stmt(st, SQL_SUB_BYTES, r);
    if (!s)
        return false;
    sqlite3_bind_int64(s, 1, part);
    sqlite3_bind_int64(s, 2, bytes);
    if (sqlite3_step(s) != SQLITE_DONE) {
        store_db_error(st, r, "retention");
        return false;
    }
    return true;
}

/* Deletes events enqueued before `cutoff`, fixing the byte counters (the
 * counters table is updated while the GROUP BY over the log is read: a
 * different table, which SQLite allows). */
static store_status retain_by_time(store *st, store_req *r, int64_t cutoff, uint64_t *deleted)
{
    sqlite3_stmt *s = store_stmt(st, SQL_OLD_BY_PART, r);
    if (!s)
        return STORE_ERROR;
    sqlite3_bind_int64(s, 1, cutoff);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        *deleted += (uint64_t)sqlite3_column_int64(s, 1);
        if (!sub_bytes(st, r, sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 2)))
            return STORE_ERROR;
    }
    if (rc != SQLITE_DONE)
        return store_db_error(st, r, "retention");
    if (!(s = store_stmt(st, SQL_DEL_OLD, r)))
        return STORE_ERROR;
    sqlite3_bind_int64(s, 1, cutoff);
    if (sqlite3_step(s) != SQLITE_DONE)
        return store_db_error(st, r, "retention");
    return STORE_OK;
}

/* Deletes the oldest events until the total is within `limit` bytes. */
static store_status retain_by_size(store *st, store_req *r, int64_t limit, uint64_t *deleted)
{
    sqlite3_stmt *s = store_stmt(st, SQL_TOTAL_BYTES, r);
    if (!s)
        return STORE_ERROR;
    if (sqlite3_step(s) != SQLITE_ROW)
        return store_db_error(st, r, "retention");
    int64_t total = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    while (total > limit) {
        int64_t victims[256][3];
        size_t n = 0;
        if (!(s = store_stmt(st, SQL_OLDEST, r)))
            return STORE_ERROR;
        int rc;
        int64_t planned = total;
        while (planned > limit && (rc = sqlite3_step(s)) == SQLITE_ROW) {
            for (int c = 0; c < 3; c++)
                victims[n][c] = sqlite3_column_int64(s, c);
            planned -= victims[n++][2];
        }
        sqlite3_reset(s);
        if (n == 0)
            break; /* counters say bytes remain but no rows: nothing to do */
        for (size_t i = 0; i < n; i++) {
            sqlite3_stmt *d = store_stmt(st, SQL_DEL_ONE, r);
            if (!d)
                return STORE_ERROR;
            sqlite3_bind_int64(d, 1, victims[i][0]);
            sqlite3_bind_int64(d, 2, victims[i][1]);
            if (sqlite3_step(d) != SQLITE_DONE)
                return store_db_error(st, r, "retention");
            if (!sub_bytes(st, r, victims[i][0], victims[i][2]))
                return STORE_ERROR;
            total -= victims[i][2];
            (*deleted)++;
        }
    }
    return STORE_OK;
}

store_status store_retention_apply(store *st, store_req *r, int64_t now_ms, uint64_t *deleted)
{
    uint64_t n = 0;
    store_status rc = STORE_OK;
    if (st->retention_ms > 0)
        rc = retain_by_time(st, r, now_ms - st->retention_ms, &n);
    if (rc == STORE_OK && st->retention_bytes > 0)
        rc = retain_by_size(st, r, st->retention_bytes, &n);
    *deleted = n;
    if (rc == STORE_OK && n) {
        pthread_mutex_lock(&st->lock);
        st->stats.telemetry_deleted += n;
        pthread_mutex_unlock(&st->lock);
    }
    return rc;
}

typedef struct retain_req {
    store_req base;
    store_count_fn done;
    void *arg;
    int64_t now_ms;
    uint64_t deleted;
} retain_req;

static store_status retain_exec(store *st, store_req *r)
{
    retain_req *q = (retain_req *)r;
    return store_retention_apply(st, r, q->now_ms ? q->now_ms : store_now_ms(), &q->deleted);
}

static void retain_complete(store_req *r)
{
    retain_req *q = (retain_req *)r;
    if (q->done)
        q->done(r->loop, q->arg, r->status, r->status == STORE_OK ? q->deleted : 0, r->err);
    free(q);
}

void store_telemetry_retain(store *st, int64_t now_ms, net_loop *loop, store_count_fn done,
                            void *arg)
{
    retain_req *q = store_req_new(sizeof *q, 0, loop, retain_exec, retain_complete);
    q->done = done;
    q->arg = arg;
    q->now_ms = now_ms;
    store_submit(st, &q->base);
}

/* ---- checkpoints -------------------------------------------------------- */

typedef struct checkpoint_req {
    store_done_req h;
    store_checkpoint_fn get_done;
    bool is_get;
    unsigned partition;
    uint64_t seq;
    const char *group; /* tail */
} checkpoint_req;

static const char *const SQL_CP_SET =
    "INSERT OR REPLACE INTO checkpoints(grp, part, seq) VALUES(?1, ?2, ?3)";
static const char *const SQL_CP_GET = "SELECT seq FROM checkpoints WHERE grp = ?1 AND part = ?2";

static store_status checkpoint_exec(store *st, store_req *r)
{
    checkpoint_req *q = (checkpoint_req *)r;
    bool set = !q->is_get;
    sqlite3_stmt *s = store_stmt(st, set ? SQL_CP_SET : SQL_CP_GET, r);
    if (!s)
        return STORE_ERROR;
    sqlite3_bind_text(s, 1, q->group, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, q->partition);
    if (set)
        sqlite3_bind_int64(s, 3, (int64_t)q->seq);
    int rc = sqlite3_step(s);
    if (set)
        return rc == SQLITE_DONE ? STORE_OK : store_db_error(st, r, "checkpoint");
    if (rc == SQLITE_DONE)
        return STORE_NOT_FOUND;
    if (rc != SQLITE_ROW)
        return store_db_error(st, r, "checkpoint");
    q->seq = (uint64_t)sqlite3_column_int64(s, 0);
    return STORE_OK;
}

static void checkpoint_get_complete(store_req *r)
{
    checkpoint_req *q = (checkpoint_req *)r;
    if (q->get_done)
        q->get_done(r->loop, q->h.arg, r->status, r->status == STORE_OK ? q->seq : 0, r->err);
    free(q);
}

static checkpoint_req *checkpoint_new(const char *group, unsigned partition, net_loop *loop,
                                      void (*complete)(store_req *), void *arg)
{
    checkpoint_req *q = store_req_new(sizeof *q, strlen(group) + 1, loop, checkpoint_exec,
                                      complete);
    char *cur = (char *)(q + 1);
    q->group = store_copy_str(&cur, group);
    q->partition = partition;
    q->h.arg = arg;
    return q;
}

void store_checkpoint_set(store *st, const char *group, unsigned partition, uint64_t seq,
                          net_loop *loop, store_done_fn done, void *arg)
{
    checkpoint_req *q = checkpoint_new(group, partition, loop, store_done_complete, arg);
    q->h.done = done;
    q->seq = seq;
    store_submit(st, &q->h.base);
}

void store_checkpoint_get(store *st, const char *group, unsigned partition, net_loop *loop,
                          store_checkpoint_fn done, void *arg)
{
    checkpoint_req *q = checkpoint_new(group, partition, loop, checkpoint_get_complete, arg);
    q->get_done = done;
    q->is_get = true;
    store_submit(st, &q->h.base);
}

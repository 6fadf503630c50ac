/*
 * store/c2d.c — per-device cloud-to-device command queues.
 *
 * The store keeps the queue, the hub keeps the policy: which message to
 * deliver next, locks, expiry and dead-lettering are decided by the hub
 * (which holds each connected device's queue in memory, ≤ 50 messages),
 * and it records each decision here with the small primitives below
 * (enqueue, update delivery count / lock, delete, purge). That keeps the
 * store free of timers and lets a networked backend implement the same five
 * calls.
 *
 * Sequence numbers come from one store-wide counter (meta.c2d_next_seq), so
 * they increase per device too and are never reused, even after a purge.
 * The store thread keeps the counter in memory once read: an enqueue takes
 * its number from there, and the batch writes the counter back once, just
 * before its COMMIT (store_c2d_seq_save), instead of a SELECT and an UPDATE
 * per enqueue. A batch that rolls back leaves memory ahead of the table,
 * which only skips numbers; every committed message's number is below the
 * committed counter, so none is handed out twice across a restart.
 * The depth check and the insert run in the same transaction, so two
 * concurrent sends cannot both take the last slot.
 */
#include "store/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- enqueue ------------------------------------------------------------ */

typedef struct enqueue_req {
    store_req base;
    store_c2d_enqueued_fn done;
    void *arg;
    store_c2d_msg m; /* pointers into the tail */
    uint32_t max_depth;
} enqueue_req;

static const char *const SQL_C2D_DEPTH = "SELECT count(*) FROM c2d WHERE device_id = ?1";
static const char *const SQL_C2D_NEXT_SEQ = "SELECT value FROM meta WHERE key = 'c2d_next_seq'";
static const char *const SQL_C2D_SAVE_SEQ =
    "UPDATE meta SET value = ?1 WHERE key = 'c2d_next_seq'";
static const char *const SQL_C2D_INSERT =
    "INSERT INTO c2d(device_id, seq, enqueued_ms, expiry_ms, delivery_count, lock_until_ms,"
    " props, body) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/* Runs a one-row SELECT of an integer. */
static bool query_int(store *st, store_req *r, const char *sql, const char *text_arg,
                      int64_t *out)
{
    sqlite3_stmt *s = store_stmt(st, sql, r);
    if (!s)
        return false;
    if (text_arg)
        sqlite3_bind_text(s, 1, text_arg, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_ROW) {
        store_db_error(st, r, "c2d");
        return false;
    }
    *out = sqlite3_column_int64(s, 0);
    sqlite3_reset(s); /* ends the read now rather than at the next use */
    return true;
}

bool store_c2d_seq_save(store *st, char *err, size_t errlen)
{
    if (!st->c2d_seq_unsaved)
        return true;
    store_req scratch;
    sqlite3_stmt *s = store_stmt(st, SQL_C2D_SAVE_SEQ, &scratch);
    if (!s) {
        snprintf(err, errlen, "c2d sequence: %s", scratch.err);
        return false;
    }
    sqlite3_bind_int64(s, 1, st->c2d_next_seq);
    if (sqlite3_step(s) != SQLITE_DONE) {
        snprintf(err, errlen, "c2d sequence: %s", sqlite3_errmsg(st->db));
        return false;
    }
    st->c2d_seq_unsaved = false;
    return true;
}

/* Checks the depth, takes the next sequence number and inserts. Runs
 * without a savepoint (store_req.no_savepoint): if the insert fails, the
 * number is skipped, which the queue allows (numbers increase and are never
 * reused; they need not be dense). */
static store_status enqueue_exec(store *st, store_req *r)
{
    enqueue_req *q = (enqueue_req *)r;
    int64_t depth;
    if (!query_int(st, r, SQL_C2D_DEPTH, q->m.device_id, &depth))
        return STORE_ERROR;
    if (q->max_depth && depth >= q->max_depth)
        return STORE_FULL;
    if (!st->c2d_next_seq && !query_int(st, r, SQL_C2D_NEXT_SEQ, NULL, &st->c2d_next_seq))
        return STORE_ERROR;
    int64_t seq = st->c2d_next_seq++;
    st->c2d_seq_unsaved = true;
    sqlite3_stmt *s = store_stmt(st, SQL_C2D_INSERT, r);
    if (!s)
        return STORE_ERROR;
    q->m.seq = (uint64_t)seq;
    if (!q->m.enqueued_ms)
        q->m.enqueued_ms = store_now_ms();
    sqlite3_bind_text(s, 1, q->m.device_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, seq);
    sqlite3_bind_int64(s, 3, q->m.enqueued_ms);
    sqlite3_bind_int64(s, 4, q->m.expiry_ms);
    sqlite3_bind_int64(s, 5, q->m.delivery_count);
    sqlite3_bind_int64(s, 6, q->m.lock_until_ms);
    sqlite3_bind_blob(s, 7, q->m.props, (int)q->m.props_len, SQLITE_STATIC);
    sqlite3_bind_blob(s, 8, q->m.body, (int)q->m.body_len, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE)
        return store_db_error(st, r, "c2d enqueue");
    return STORE_OK;
}

static void enqueue_complete(store_req *r)
{
    enqueue_req *q = (enqueue_req *)r;
    bool ok = r->status == STORE_OK;
    if (q->done)
        q->done(r->loop, q->arg, r->status, ok ? q->m.seq : 0, ok ? q->m.enqueued_ms : 0, r->err);
    free(q);
}

void store_c2d_enqueue(store *st, const store_c2d_msg *m, uint32_t max_depth, net_loop *loop,
                       store_c2d_enqueued_fn done, void *arg)
{
    size_t extra = strlen(m->device_id) + 1 + m->props_len + m->body_len;
    enqueue_req *q = store_req_new(sizeof *q, extra, loop, enqueue_exec, enqueue_complete);
    q->done = done;
    q->arg = arg;
    q->max_depth = max_depth;
    q->base.no_savepoint = true; /* see enqueue_exec */
    q->m = *m;
    char *cur = (char *)(q + 1);
    q->m.device_id = store_copy_str(&cur, m->device_id);
    q->m.props = store_copy_mem(&cur, m->props, m->props_len);
    q->m.body = store_copy_mem(&cur, m->body, m->body_len);
    store_submit(st, &q->base);
}

/* ---- update, delete, purge ---------------------------------------------- */

typedef struct change_req {
    store_done_req h;
    store_count_fn count_done; /* purge */
    char device_id[HUB_ID_MAX + 1];
    uint64_t seq;
    uint32_t delivery_count;
    int64_t lock_until_ms;
    uint64_t changed;
} change_req;

static const char *const SQL_C2D_UPDATE =
    "UPDATE c2d SET delivery_count = ?3, lock_until_ms = ?4 WHERE device_id = ?1 AND seq = ?2";
static const char *const SQL_C2D_DELETE = "DELETE FROM c2d WHERE device_id = ?1 AND seq = ?2";
static const char *const SQL_C2D_PURGE = "DELETE FROM c2d WHERE device_id = ?1";

/* Runs `sql` with (device, seq, count, lock) bound as far as it uses them. */
static store_status change_exec_sql(store *st, store_req *r, const char *sql)
{
    change_req *q = (change_req *)r;
    sqlite3_stmt *s = store_stmt(st, sql, r);
    if (!s)
        return STORE_ERROR;
    int params = sqlite3_bind_parameter_count(s);
    sqlite3_bind_text(s, 1, q->device_id, -1, SQLITE_STATIC);
    if (params >= 2)
        sqlite3_bind_int64(s, 2, (int64_t)q->seq);
    if (params >= 4) {
        sqlite3_bind_int64(s, 3, q->delivery_count);
        sqlite3_bind_int64(s, 4, q->lock_until_ms);
    }
    if (sqlite3_step(s) != SQLITE_DONE)
        return store_db_error(st, r, "c2d change");
    q->changed = (uint64_t)sqlite3_changes(st->db);
    return q->changed || sql == SQL_C2D_PURGE ? STORE_OK : STORE_NOT_FOUND;
}

static store_status update_exec(store *st, store_req *r)
{
    return change_exec_sql(st, r, SQL_C2D_UPDATE);
}
static store_status delete_exec(store *st, store_req *r)
{
    return change_exec_sql(st, r, SQL_C2D_DELETE);
}
static store_status purge_exec(store *st, store_req *r)
{
    return change_exec_sql(st, r, SQL_C2D_PURGE);
}

static void purge_complete(store_req *r)
{
    change_req *q = (change_req *)r;
    if (q->count_done)
        q->count_done(r->loop, q->h.arg, r->status, r->status == STORE_OK ? q->changed : 0, r->err);
    free(q);
}

static change_req *change_new(const char *device_id, uint64_t seq, net_loop *loop,
                              store_status (*exec)(store *, store_req *),
                              void (*complete)(store_req *), void *arg)
{
    change_req *q = store_req_new(sizeof *q, 0, loop, exec, complete);
    q->h.base.no_savepoint = true; /* change_exec_sql: one UPDATE or DELETE */
    snprintf(q->device_id, sizeof q->device_id, "%s", device_id);
    q->seq = seq;
    q->h.arg = arg;
    return q;
}

void store_c2d_update(store *st, const char *device_id, uint64_t seq, uint32_t delivery_count,
                      int64_t lock_until_ms, net_loop *loop, store_done_fn done, void *arg)
{
    change_req *q = change_new(device_id, seq, loop, update_exec, store_done_complete, arg);
    q->h.done = done;
    q->delivery_count = delivery_count;
    q->lock_until_ms = lock_until_ms;
    store_submit(st, &q->h.base);
}

void store_c2d_delete(store *st, const char *device_id, uint64_t seq, net_loop *loop,
                      store_done_fn done, void *arg)
{
    change_req *q = change_new(device_id, seq, loop, delete_exec, store_done_complete, arg);
    q->h.done = done;
    store_submit(st, &q->h.base);
}

void store_c2d_purge(store *st, const char *device_id, net_loop *loop, store_count_fn done,
                     void *arg)
{
    change_req *q = change_new(device_id, 0, loop, purge_exec, purge_complete, arg);
    q->count_done = done;
    store_submit(st, &q->h.base);
}

/* ---- list and load ------------------------------------------------------ */

typedef struct list_req {
    store_req base;
    store_c2d_list_fn done;
    void (*load_fn)(void *arg, const store_c2d_msg *m);
    void *arg;
    char device_id[HUB_ID_MAX + 1];
    store_c2d_msg *msgs;
    size_t n;
    char **bufs; /* one allocation per message's data */
} list_req;

static const char *const SQL_C2D_LIST =
    "SELECT device_id, seq, enqueued_ms, expiry_ms, delivery_count, lock_until_ms, props, body"
    " FROM c2d WHERE device_id = ?1 ORDER BY seq";
static const char *const SQL_C2D_ALL =
    "SELECT device_id, seq, enqueued_ms, expiry_ms, delivery_count, lock_until_ms, props, body"
    " FROM c2d ORDER BY device_id, seq";

/* Copies the current row into *m, its data into one malloc'd buffer. */
static char *read_msg_row(sqlite3_stmt *s, store_c2d_msg *m)
{
    const char *dev = (const char *)sqlite3_column_text(s, 0);
    const void *props = sqlite3_column_blob(s, 6);
    size_t plen = (size_t)sqlite3_column_bytes(s, 6);
    const void *body = sqlite3_column_blob(s, 7);
    size_t blen = (size_t)sqlite3_column_bytes(s, 7);
    char *buf = malloc(strlen(dev ? dev : "") + 1 + plen + blen);
    if (!buf)
        return NULL;
    char *cur = buf;
    m->device_id = store_copy_str(&cur, dev);
    m->seq = (uint64_t)sqlite3_column_int64(s, 1);
    m->enqueued_ms = sqlite3_column_int64(s, 2);
    m->expiry_ms = sqlite3_column_int64(s, 3);
    m->delivery_count = (uint32_t)sqlite3_column_int64(s, 4);
    m->lock_until_ms = sqlite3_column_int64(s, 5);
    m->props = store_copy_mem(&cur, props, plen);
    m->props_len = plen;
    m->body = store_copy_mem(&cur, body, blen);
    m->body_len = blen;
    return buf;
}

static store_status list_exec(store *st, store_req *r)
{
    list_req *q = (list_req *)r;
    sqlite3_stmt *s = store_stmt(st, q->load_fn ? SQL_C2D_ALL : SQL_C2D_LIST, r);
    if (!s)
        return STORE_ERROR;
    if (!q->load_fn)
        sqlite3_bind_text(s, 1, q->device_id, -1, SQLITE_STATIC);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        store_c2d_msg m;
        char *buf = read_msg_row(s, &m);
        if (!buf)
            goto oom;
        if (q->load_fn) {
            q->load_fn(q->arg, &m);
            free(buf);
            continue;
        }
        if (q->n == cap) {
            cap = cap ? cap * 2 : 8;
            store_c2d_msg *nm = realloc(q->msgs, cap * sizeof *nm);
            char **nb = nm ? realloc(q->bufs, cap * sizeof *nb) : NULL;
            if (nm)
                q->msgs = nm;
            if (!nb) {
                free(buf);
                goto oom;
            }
            q->bufs = nb;
        }
        q->msgs[q->n] = m;
        q->bufs[q->n++] = buf;
    }
    return rc == SQLITE_DONE ? STORE_OK : store_db_error(st, r, "c2d list");
oom:
    strcpy(r->err, "out of memory");
    return STORE_ERROR;
}

static void list_free(list_req *q)
{
    for (size_t i = 0; i < q->n; i++)
        free(q->bufs[i]);
    free(q->bufs);
    free(q->msgs);
}

static void list_complete(store_req *r)
{
    list_req *q = (list_req *)r;
    bool ok = r->status == STORE_OK;
    if (q->done)
        q->done(r->loop, q->arg, r->status, ok ? q->msgs : NULL, ok ? q->n : 0, r->err);
    list_free(q);
    free(q);
}

void store_c2d_list(store *st, const char *device_id, net_loop *loop, store_c2d_list_fn done,
                    void *arg)
{
    list_req *q = store_req_new(sizeof *q, 0, loop, list_exec, list_complete);
    q->done = done;
    q->arg = arg;
    snprintf(q->device_id, sizeof q->device_id, "%s", device_id);
    store_submit(st, &q->base);
}

bool store_load_c2d(store *st, void (*fn)(void *arg, const store_c2d_msg *m), void *arg)
{
    list_req q = {.base.exec = list_exec, .load_fn = fn, .arg = arg};
    return store_run_sync(st, &q.base) == STORE_OK;
}

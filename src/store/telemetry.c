/*
 * store/telemetry.c — the partitioned telemetry log and consumer-group
 * checkpoints.
 *
 * Each partition has a row in telemetry_parts with the next sequence number
 * to hand out and the bytes (props + body) it holds. An append takes the
 * number and bumps it in the same transaction, so numbers increase by one
 * per partition and are never reused, even after retention emptied the
 * partition. Partition p's events are the table telemetry_<p> (schema v5),
 * keyed by seq alone: an append goes at the end of one b-tree, and readers
 * page through one table by its rowid.
 *
 * Enqueued times never decrease within a partition: an append gets
 * max(now or the given time, the partition's newest, telemetry_parts.last_ms),
 * so a wall clock stepping back does not put a newer event before an older
 * one. That lets every ordered walk go by (partition, seq) on the primary
 * key: the log has no index on enqueued time, which cost each append a third
 * b-tree insert (~14 % of a message's instructions) and a WAL page per
 * commit.
 *
 * Retention, which relies on that order, is in store/retention.c.
 *
 * Appends are executed in runs (append_run, see store_req.exec_run in
 * store/internal.h), a lone append as a run of one: each partition's
 * counter row is read and written once per run instead of once per event.
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
        char ddl[256];
        snprintf(ddl, sizeof ddl, STORE_TELEMETRY_TABLE_DDL, "IF NOT EXISTS ", p);
        sqlite3_bind_int64(s, 1, p);
        if (sqlite3_step(s) != SQLITE_DONE || sqlite3_exec(db, ddl, NULL, NULL, NULL) != SQLITE_OK)
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

/* ---- per-partition statements ------------------------------------------ */

static const char *const part_sql_formats[PART_SQL_KINDS] = {
    [PART_APPEND] = "INSERT INTO telemetry_%u(seq, enqueued_ms, size, props, body)"
                    " VALUES(?1, ?2, ?3, ?4, ?5)",
    [PART_READ] = "SELECT seq, enqueued_ms, props, body FROM telemetry_%u"
                  " WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
    [PART_FIRST_SEQ] = "SELECT min(seq) FROM telemetry_%u",
    [PART_HEAD] = "SELECT seq, enqueued_ms, size FROM telemetry_%u WHERE seq >= ?1"
                  " ORDER BY seq LIMIT 64",
    [PART_DEL_BELOW] = "DELETE FROM telemetry_%u WHERE seq < ?1",
};

sqlite3_stmt *store_part_stmt(store *st, unsigned part, store_part_sql kind, store_req *r)
{
    if (!st->part_stmts &&
        !(st->part_stmts = calloc((size_t)st->partitions * PART_SQL_KINDS, sizeof *st->part_stmts))) {
        snprintf(r->err, sizeof r->err, "out of memory");
        return NULL;
    }
    sqlite3_stmt **slot = &st->part_stmts[(size_t)part * PART_SQL_KINDS + kind];
    if (*slot) {
        sqlite3_reset(*slot);
        sqlite3_clear_bindings(*slot);
        return *slot;
    }
    char sql[256];
    snprintf(sql, sizeof sql, part_sql_formats[kind], part);
    if (sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, slot, NULL) != SQLITE_OK) {
        store_db_error(st, r, "prepare");
        return NULL;
    }
    return *slot;
}

void store_part_stmts_free(store *st)
{
    if (!st->part_stmts)
        return;
    for (size_t i = 0; i < (size_t)st->partitions * PART_SQL_KINDS; i++)
        sqlite3_finalize(st->part_stmts[i]);
    free(st->part_stmts);
    st->part_stmts = NULL;
}

/* ---- append ------------------------------------------------------------- */

typedef struct append_req {
    store_req base;
    store_appended_fn done;
    void *arg;
    store_event ev; /* data in the tail */
} append_req;

/* Steps partition ev->partition's PART_APPEND statement `ins` for ev. */
static bool insert_event(store *st, sqlite3_stmt *ins, const store_event *ev, int64_t size,
                         store_req *r)
{
    sqlite3_bind_int64(ins, 1, (int64_t)ev->seq);
    sqlite3_bind_int64(ins, 2, ev->enqueued_ms);
    sqlite3_bind_int64(ins, 3, size);
    sqlite3_bind_blob(ins, 4, ev->props, (int)ev->props_len, SQLITE_STATIC);
    sqlite3_bind_blob(ins, 5, ev->body, (int)ev->body_len, SQLITE_STATIC);
    bool ok = sqlite3_step(ins) == SQLITE_DONE;
    if (!ok)
        store_db_error(st, r, "telemetry append");
    sqlite3_reset(ins);
    return ok;
}

/* Per-partition state of one run of appends. */
typedef struct run_part {
    int64_t next_seq; /* 0 = not loaded yet */
    int64_t last_ms;  /* newest enqueued time */
    int64_t bytes;    /* added by this run */
    sqlite3_stmt *ins; /* the partition's PART_APPEND */
} run_part;

static const char *const SQL_PART_NEXT =
    "SELECT next_seq, last_ms FROM telemetry_parts WHERE part = ?1";
static const char *const SQL_PART_ADVANCE =
    "UPDATE telemetry_parts SET next_seq = ?2, bytes = bytes + ?3, last_ms = ?4 WHERE part = ?1";

/* The next sequence number of `part`, read once per run. */
static bool run_part_load(store *st, store_req *r, unsigned part, run_part *rp)
{
    sqlite3_stmt *s = store_stmt(st, SQL_PART_NEXT, r);
    if (!s)
        return false;
    sqlite3_bind_int64(s, 1, part);
    if (sqlite3_step(s) != SQLITE_ROW) {
        store_db_error(st, r, "telemetry sequence");
        return false;
    }
    rp->next_seq = sqlite3_column_int64(s, 0);
    rp->last_ms = sqlite3_column_int64(s, 1);
    sqlite3_reset(s);
    return (rp->ins = store_part_stmt(st, part, PART_APPEND, r)) != NULL;
}

/* Inserts every event of the run, numbering them from the partitions'
 * counters kept in `parts`. */
static bool append_run_rows(store *st, store_req *first, size_t n, run_part *parts)
{
    int64_t now = store_now_ms();
    store_req *r = first;
    for (size_t i = 0; i < n; i++, r = r->next) {
        store_event *ev = &((append_req *)r)->ev;
        if (ev->partition >= st->partitions) { /* the slow path reports it */
            snprintf(first->err, sizeof first->err, "partition out of range");
            return false;
        }
        run_part *rp = &parts[ev->partition];
        if (!rp->next_seq && !run_part_load(st, first, ev->partition, rp))
            return false;
        int64_t size = (int64_t)(ev->props_len + ev->body_len);
        ev->seq = (uint64_t)rp->next_seq++;
        rp->bytes += size;
        int64_t t = ev->enqueued_ms ? ev->enqueued_ms : now;
        ev->enqueued_ms = rp->last_ms = t > rp->last_ms ? t : rp->last_ms;
        if (!insert_event(st, rp->ins, ev, size, first))
            return false;
    }
    return true;
}

/* Writes back the counters of every partition the run appended to. */
static bool append_run_save(store *st, store_req *first, const run_part *parts)
{
    for (unsigned p = 0; p < st->partitions; p++) {
        if (!parts[p].next_seq)
            continue;
        sqlite3_stmt *s = store_stmt(st, SQL_PART_ADVANCE, first);
        if (!s)
            return false;
        sqlite3_bind_int64(s, 1, p);
        sqlite3_bind_int64(s, 2, parts[p].next_seq);
        sqlite3_bind_int64(s, 3, parts[p].bytes);
        sqlite3_bind_int64(s, 4, parts[p].last_ms);
        if (sqlite3_step(s) != SQLITE_DONE) {
            store_db_error(st, first, "telemetry sequence");
            return false;
        }
    }
    return true;
}

/*
 * A run of appends (store_req.exec_run): each partition's counter row is
 * read once and written once per run instead of once per event, and the
 * run shares one savepoint. Under load a batch is thousands of appends, so
 * this saves two statements and a savepoint (which copies every page it
 * touches into the statement journal) per event. Sequence numbers are
 * handed out in queue order, exactly as one by one.
 */
static bool append_run(store *st, store_req *first, size_t n)
{
    run_part *parts = calloc(st->partitions, sizeof *parts);
    if (!parts) {
        snprintf(first->err, sizeof first->err, "out of memory");
        return false;
    }
    bool ok = append_run_rows(st, first, n, parts) && append_run_save(st, first, parts);
    free(parts);
    store_req *r = first;
    for (size_t i = 0; ok && i < n; i++, r = r->next)
        r->status = STORE_OK;
    return ok;
}

/* One append on its own (store_req.exec): only the slow path, after a
 * run that failed, so that an error fails just the request it belongs to
 * (every append, a lone one too, first goes through append_run). It is a
 * run of one, so appends are numbered in one place. */
static store_status append_exec(store *st, store_req *r)
{
    store_event *ev = &((append_req *)r)->ev;
    if (ev->partition >= st->partitions) {
        snprintf(r->err, sizeof r->err, "partition %u out of range", ev->partition);
        return STORE_INVALID;
    }
    return append_run(st, r, 1) ? STORE_OK : STORE_ERROR;
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
    q->base.exec_run = append_run;
    q->base.batchable = true;
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


/* Reads up to max events into two growing arrays (events, data bytes);
 * pointers into the data are fixed up at the end since it may move. */
static store_status read_exec(store *st, store_req *r)
{
    read_req *q = (read_req *)r;
    if (q->partition >= st->partitions) {
        snprintf(r->err, sizeof r->err, "partition %u out of range", q->partition);
        return STORE_INVALID;
    }
    sqlite3_stmt *s = store_stmt(st, SQL_PART_NEXT, r);
    if (!s)
        return STORE_ERROR;
    sqlite3_bind_int64(s, 1, q->partition);
    if (sqlite3_step(s) != SQLITE_ROW)
        return store_db_error(st, r, "telemetry bounds");
    q->res.next_seq = (uint64_t)sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    if (!(s = store_part_stmt(st, q->partition, PART_FIRST_SEQ, r)))
        return STORE_ERROR;
    if (sqlite3_step(s) != SQLITE_ROW)
        return store_db_error(st, r, "telemetry bounds");
    q->res.first_seq = sqlite3_column_type(s, 0) == SQLITE_NULL
                           ? q->res.next_seq
                           : (uint64_t)sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    if (!(s = store_part_stmt(st, q->partition, PART_READ, r)))
        return STORE_ERROR;
    sqlite3_bind_int64(s, 1, (int64_t)q->from_seq);
    sqlite3_bind_int64(s, 2, (int64_t)(q->max ? q->max : 1));
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

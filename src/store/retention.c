/*
 * store/retention.c — removing old telemetry: by age (retention_ms) and by
 * the log's total size (retention_bytes).
 *
 * The log has no index on enqueued time (schema v4): store/telemetry.c
 * keeps enqueued times non-decreasing within each partition, so a
 * partition read in sequence order is also in time order. By age: each
 * partition loses the run of its oldest events before the first one that
 * is recent enough. By size: while the total is over the limit, the oldest
 * event across all partitions goes, by (enqueued time, partition, seq),
 * which is a merge of the partitions' heads. Either way a partition loses a
 * prefix, deleted as one range of its table's key, and its byte counter in
 * telemetry_parts drops by what went, so the size check stays one small
 * SUM. Heads are read HEAD_CHUNK events at a time, so a run costs a read of
 * what it deletes plus one chunk per partition.
 *
 * Databases written before v4 may hold a partition whose times go down
 * somewhere (a clock stepped back); retention then stops at that point of
 * the partition instead of looking further: it may keep an event a little
 * longer, never removes a newer one first.
 *
 * Runs on the store thread inside a transaction: periodically (thread.c)
 * or on request (store_telemetry_retain).
 */
#include "store/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEAD_CHUNK 64

static const char *const SQL_TOTAL_BYTES = "SELECT coalesce(sum(bytes), 0) FROM telemetry_parts";
static const char *const SQL_SUB_BYTES =
    "UPDATE telemetry_parts SET bytes = bytes - ?2 WHERE part = ?1";

/* One partition's oldest events not yet judged, and the prefix cut so far. */
typedef struct part_head {
    int64_t ev[HEAD_CHUNK][3]; /* seq, enqueued_ms, size */
    size_t n, pos;
    bool end;          /* nothing after the buffered events */
    int64_t from;      /* the next seq to read */
    int64_t cut_below; /* events with seq below this go */
    int64_t cut_bytes;
    uint64_t cut_n;
} part_head;

/* Reads the next chunk of partition p's events into h. */
static bool head_fill(store *st, store_req *r, unsigned p, part_head *h)
{
    sqlite3_stmt *s = store_part_stmt(st, p, PART_HEAD, r);
    if (!s)
        return false;
    sqlite3_bind_int64(s, 1, h->from);
    h->n = h->pos = 0;
    int rc = SQLITE_DONE;
    while (h->n < HEAD_CHUNK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        for (int c = 0; c < 3; c++)
            h->ev[h->n][c] = sqlite3_column_int64(s, c);
        h->n++;
    }
    if (h->n < HEAD_CHUNK && rc != SQLITE_DONE) {
        store_db_error(st, r, "retention");
        return false;
    }
    sqlite3_reset(s);
    h->end = h->n < HEAD_CHUNK;
    if (h->n)
        h->from = h->ev[h->n - 1][0] + 1;
    return true;
}

/* Partition p's oldest event not yet cut ({seq, enqueued_ms, size}), or
 * NULL when there is none left (or on an error: *failed set). */
static const int64_t *head_peek(store *st, store_req *r, unsigned p, part_head *h, bool *failed)
{
    if (h->pos == h->n) {
        if (h->end)
            return NULL;
        if (!head_fill(st, r, p, h)) {
            *failed = true;
            return NULL;
        }
        if (h->n == 0)
            return NULL;
    }
    return h->ev[h->pos];
}

/* Adds the event head_peek returned to the partition's cut prefix. */
static void head_cut(part_head *h)
{
    const int64_t *e = h->ev[h->pos++];
    h->cut_below = e[0] + 1;
    h->cut_bytes += e[2];
    h->cut_n++;
}

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

/* Deletes every partition's cut prefix and fixes its byte counter. */
static store_status apply_cuts(store *st, store_req *r, const part_head *heads, uint64_t *deleted)
{
    for (unsigned p = 0; p < st->partitions; p++) {
        const part_head *h = &heads[p];
        if (!h->cut_n)
            continue;
        sqlite3_stmt *s = store_part_stmt(st, p, PART_DEL_BELOW, r);
        if (!s)
            return STORE_ERROR;
        sqlite3_bind_int64(s, 1, h->cut_below);
        if (sqlite3_step(s) != SQLITE_DONE)
            return store_db_error(st, r, "retention");
        if (!sub_bytes(st, r, p, h->cut_bytes))
            return STORE_ERROR;
        *deleted += h->cut_n;
    }
    return STORE_OK;
}

/* Cuts, in each partition, the events enqueued before `cutoff`. */
static bool cut_by_time(store *st, store_req *r, part_head *heads, int64_t cutoff)
{
    bool failed = false;
    for (unsigned p = 0; p < st->partitions && !failed; p++) {
        const int64_t *e;
        while ((e = head_peek(st, r, p, &heads[p], &failed)) && e[1] < cutoff)
            head_cut(&heads[p]);
    }
    return !failed;
}

/* Cuts the oldest events across partitions until `total` is within `limit`. */
static bool cut_by_size(store *st, store_req *r, part_head *heads, int64_t total, int64_t limit)
{
    bool failed = false;
    while (total > limit && !failed) {
        unsigned best = st->partitions;
        const int64_t *oldest = NULL;
        for (unsigned p = 0; p < st->partitions && !failed; p++) {
            const int64_t *e = head_peek(st, r, p, &heads[p], &failed);
            if (e && (!oldest || e[1] < oldest[1])) { /* ties: the lower partition */
                oldest = e;
                best = p;
            }
        }
        if (!oldest)
            break; /* counters say bytes remain but no rows: nothing to do */
        total -= oldest[2];
        head_cut(&heads[best]);
    }
    return !failed;
}

/* Runs one kind of cut over fresh heads and deletes what it chose. */
static store_status retain(store *st, store_req *r, bool by_size, int64_t arg, uint64_t *deleted)
{
    int64_t total = 0;
    if (by_size) {
        sqlite3_stmt *s = store_stmt(st, SQL_TOTAL_BYTES, r);
        if (!s)
            return STORE_ERROR;
        if (sqlite3_step(s) != SQLITE_ROW)
            return store_db_error(st, r, "retention");
        total = sqlite3_column_int64(s, 0);
        sqlite3_reset(s);
        if (total <= arg)
            return STORE_OK;
    }
    part_head *heads = calloc(st->partitions, sizeof *heads);
    if (!heads) {
        snprintf(r->err, sizeof r->err, "retention: out of memory");
        return STORE_ERROR;
    }
    bool ok = by_size ? cut_by_size(st, r, heads, total, arg) : cut_by_time(st, r, heads, arg);
    store_status rc = ok ? apply_cuts(st, r, heads, deleted) : STORE_ERROR;
    free(heads);
    return rc;
}

store_status store_retention_apply(store *st, store_req *r, int64_t now_ms, uint64_t *deleted)
{
    uint64_t n = 0;
    store_status rc = STORE_OK;
    if (st->retention_ms > 0)
        rc = retain(st, r, false, now_ms - st->retention_ms, &n);
    if (rc == STORE_OK && st->retention_bytes > 0)
        rc = retain(st, r, true, st->retention_bytes, &n);
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


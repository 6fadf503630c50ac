/*
 * store/twin.c — device and module twins.
 *
 * A twin is stored whole, as the JSON text the hub renders, next to the
 * numbers the hub needs without parsing it (etag, twin version, desired and
 * reported $version). Twins are small (≤ ~50 KB by the §7 limits) and
 * always read and written whole, so one row per twin is the simplest thing
 * that works; merge patches are applied by the hub, not here.
 */
#include "store/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct twin_put_req {
    store_done_req h;
    store_twin t; /* strings point into the request's tail */
} twin_put_req;

static const char *const SQL_TWIN_PUT =
    "INSERT OR REPLACE INTO twins(device_id, module_id, doc, etag, version,"
    " desired_version, reported_version) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)";

static store_status twin_put_exec(store *st, store_req *r)
{
    const store_twin *t = &((twin_put_req *)r)->t;
    sqlite3_stmt *s = store_stmt(st, SQL_TWIN_PUT, r);
    if (!s)
        return STORE_ERROR;
    sqlite3_bind_text(s, 1, t->device_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, t->module_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, t->json, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, t->etag, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, t->version);
    sqlite3_bind_int64(s, 6, t->desired_version);
    sqlite3_bind_int64(s, 7, t->reported_version);
    if (sqlite3_step(s) != SQLITE_DONE)
        return store_db_error(st, r, "put twin");
    return STORE_OK;
}

static size_t slen(const char *s) { return s ? strlen(s) + 1 : 1; }

void store_twin_put(store *st, const store_twin *t, net_loop *loop, store_done_fn done, void *arg)
{
    size_t extra = slen(t->device_id) + slen(t->module_id) + slen(t->json) + slen(t->etag);
    twin_put_req *q = store_req_new(sizeof *q, extra, loop, twin_put_exec, store_done_complete);
    q->h.done = done;
    q->h.arg = arg;
    q->h.base.no_savepoint = true; /* one INSERT OR REPLACE */
    char *cur = (char *)(q + 1);
    q->t = *t;
    q->t.device_id = store_copy_str(&cur, t->device_id);
    q->t.module_id = store_copy_str(&cur, t->module_id);
    q->t.json = store_copy_str(&cur, t->json);
    q->t.etag = store_copy_str(&cur, t->etag);
    store_submit(st, &q->h.base);
}

/* ---- get ---------------------------------------------------------------- */

typedef struct twin_get_req {
    store_req base;
    store_twin_fn done;
    void *arg;
    void (*load_fn)(void *arg, const store_twin *t); /* start-up load */
    char device_id[HUB_ID_MAX + 1];
    char module_id[HUB_ID_MAX + 1];
    store_twin t;
    char *buf; /* holds the strings of t */
} twin_get_req;

/* The columns read_twin_row expects, in its order. */
#define SELECT_TWIN_ROWS \
    "SELECT device_id, module_id, doc, etag, version, desired_version, reported_version" \
    " FROM twins"

/* Copies a twin row of SELECT_TWIN_ROWS; false (the request's error set)
 * when out of memory. */
static bool read_twin_row(sqlite3_stmt *s, store_req *r, store_twin *t, char **buf)
{
    const char *cols[4];
    size_t total = 0;
    for (int i = 0; i < 4; i++) {
        cols[i] = (const char *)sqlite3_column_text(s, i);
        total += (cols[i] ? strlen(cols[i]) : 0) + 1;
    }
    char *b = malloc(total);
    if (!b) {
        strcpy(r->err, "out of memory");
        return false;
    }
    char *cur = b;
    t->device_id = store_copy_str(&cur, cols[0]);
    t->module_id = store_copy_str(&cur, cols[1]);
    t->json = store_copy_str(&cur, cols[2]);
    t->etag = store_copy_str(&cur, cols[3]);
    t->version = sqlite3_column_int64(s, 4);
    t->desired_version = sqlite3_column_int64(s, 5);
    t->reported_version = sqlite3_column_int64(s, 6);
    *buf = b;
    return true;
}

static const char *const SQL_TWIN_GET =
    SELECT_TWIN_ROWS " WHERE device_id = ?1 AND module_id = ?2";

static store_status twin_get_exec(store *st, store_req *r)
{
    twin_get_req *q = (twin_get_req *)r;
    sqlite3_stmt *s = store_stmt(st, SQL_TWIN_GET, r);
    if (!s)
        return STORE_ERROR;
    sqlite3_bind_text(s, 1, q->device_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, q->module_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE)
        return STORE_NOT_FOUND;
    if (rc != SQLITE_ROW)
        return store_db_error(st, r, "get twin");
    return read_twin_row(s, r, &q->t, &q->buf) ? STORE_OK : STORE_ERROR;
}

static void twin_get_complete(store_req *r)
{
    twin_get_req *q = (twin_get_req *)r;
    bool ok = r->status == STORE_OK && q->buf;
    if (q->done)
        q->done(r->loop, q->arg, r->status, ok ? &q->t : NULL, r->err);
    free(q->buf);
    free(q);
}

void store_twin_get(store *st, const char *device_id, const char *module_id, net_loop *loop,
                    store_twin_fn done, void *arg)
{
    twin_get_req *q = store_req_new(sizeof *q, 0, loop, twin_get_exec, twin_get_complete);
    q->done = done;
    q->arg = arg;
    snprintf(q->device_id, sizeof q->device_id, "%s", device_id);
    snprintf(q->module_id, sizeof q->module_id, "%s", module_id ? module_id : "");
    store_submit(st, &q->base);
}

/* ---- start-up load ------------------------------------------------------ */

static const char *const SQL_TWIN_ALL = SELECT_TWIN_ROWS " ORDER BY device_id, module_id";

static store_status twin_load_exec(store *st, store_req *r)
{
    twin_get_req *q = (twin_get_req *)r;
    sqlite3_stmt *s = store_stmt(st, SQL_TWIN_ALL, r);
    if (!s)
        return STORE_ERROR;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        store_twin t;
        char *buf;
        if (!read_twin_row(s, r, &t, &buf))
            return STORE_ERROR;
        q->load_fn(q->arg, &t);
        free(buf);
    }
    return rc == SQLITE_DONE ? STORE_OK : store_db_error(st, r, "load twins");
}

bool store_load_twins(store *st, void (*fn)(void *arg, const store_twin *t), void *arg)
{
    twin_get_req q = {.base.exec = twin_load_exec, .load_fn = fn, .arg = arg};
    return store_run_sync(st, &q.base) == STORE_OK;
}

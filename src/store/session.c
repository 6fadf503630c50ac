/*
 * store/session.c — persistent MQTT sessions (Clean Start = 0 with a
 * Session Expiry Interval > 0) and their unacknowledged QoS 1/2 messages.
 *
 * The broker owns the encoding: subscriptions and messages are opaque
 * blobs here, so the broker can change its representation without a
 * schema migration. A session row is replaced whole whenever its
 * subscriptions or expiry change; messages are rows of their own keyed by
 * packet id, written when sent and deleted when acknowledged, so a busy
 * session does not rewrite its subscription list per message.
 */
#include "store/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct session_req {
    store_done_req h;
    void (*session_fn)(void *arg, const store_session *s); /* start-up load */
    void (*msg_fn)(void *arg, const store_session_msg *m);
    const char *client_id; /* into the tail */
    int64_t expiry_ms;
    uint64_t seq;
    uint8_t state;
    const void *blob;
    size_t blob_len;
} session_req;

static const char *const SQL_SESSION_PUT =
    "INSERT OR REPLACE INTO sessions(client_id, expiry_ms, subs) VALUES(?1, ?2, ?3)";
static const char *const SQL_SESSION_DEL = "DELETE FROM sessions WHERE client_id = ?1";
static const char *const SQL_SESSION_DEL_MSGS = "DELETE FROM session_msgs WHERE client_id = ?1";
static const char *const SQL_MSG_PUT =
    "INSERT OR REPLACE INTO session_msgs(client_id, seq, state, msg)"
    " VALUES(?1, ?2, ?3, ?4)";
static const char *const SQL_MSG_DEL =
    "DELETE FROM session_msgs WHERE client_id = ?1 AND seq = ?2";

/* Prepares `sql` with the client id bound as ?1. */
static sqlite3_stmt *stmt_for(store *st, store_req *r, const char *sql)
{
    sqlite3_stmt *s = store_stmt(st, sql, r);
    if (s)
        sqlite3_bind_text(s, 1, ((session_req *)r)->client_id, -1, SQLITE_STATIC);
    return s;
}

static store_status step_done(store *st, store_req *r, sqlite3_stmt *s, const char *what)
{
    if (!s)
        return STORE_ERROR;
    return sqlite3_step(s) == SQLITE_DONE ? STORE_OK : store_db_error(st, r, what);
}

static store_status session_put_exec(store *st, store_req *r)
{
    session_req *q = (session_req *)r;
    sqlite3_stmt *s = stmt_for(st, r, SQL_SESSION_PUT);
    if (s) {
        sqlite3_bind_int64(s, 2, q->expiry_ms);
        sqlite3_bind_blob(s, 3, q->blob, (int)q->blob_len, SQLITE_STATIC);
    }
    return step_done(st, r, s, "put session");
}

static store_status session_delete_exec(store *st, store_req *r)
{
    store_status rc = step_done(st, r, stmt_for(st, r, SQL_SESSION_DEL), "delete session");
    if (rc != STORE_OK)
        return rc;
    bool found = sqlite3_changes(st->db) > 0;
    rc = step_done(st, r, stmt_for(st, r, SQL_SESSION_DEL_MSGS), "delete session");
    return rc != STORE_OK ? rc : found ? STORE_OK : STORE_NOT_FOUND;
}

static store_status msg_put_exec(store *st, store_req *r)
{
    session_req *q = (session_req *)r;
    sqlite3_stmt *s = stmt_for(st, r, SQL_MSG_PUT);
    if (s) {
        sqlite3_bind_int64(s, 2, (sqlite3_int64)q->seq);
        sqlite3_bind_int(s, 3, q->state);
        sqlite3_bind_blob(s, 4, q->blob, (int)q->blob_len, SQLITE_STATIC);
    }
    return step_done(st, r, s, "put session message");
}

static store_status msg_delete_exec(store *st, store_req *r)
{
    session_req *q = (session_req *)r;
    sqlite3_stmt *s = stmt_for(st, r, SQL_MSG_DEL);
    if (s)
        sqlite3_bind_int64(s, 2, (sqlite3_int64)q->seq);
    store_status rc = step_done(st, r, s, "delete session message");
    if (rc == STORE_OK && sqlite3_changes(st->db) == 0)
        rc = STORE_NOT_FOUND;
    return rc;
}

/* A request with the client id and the blob copied into its tail. */
static session_req *session_req_new(const char *client_id, const void *blob, size_t blob_len,
                                    net_loop *loop, store_status (*exec)(store *, store_req *),
                                    store_done_fn done, void *arg)
{
    session_req *q = store_req_new(sizeof *q, strlen(client_id) + 1 + blob_len, loop, exec,
                                   store_done_complete);
    q->h.done = done;
    q->h.arg = arg;
    char *cur = (char *)(q + 1);
    q->client_id = store_copy_str(&cur, client_id);
    q->blob = store_copy_mem(&cur, blob, blob_len);
    q->blob_len = blob_len;
    return q;
}

void store_session_put(store *st, const char *client_id, int64_t expiry_ms, const void *subs,
                       size_t subs_len, net_loop *loop, store_done_fn done, void *arg)
{
    session_req *q = session_req_new(client_id, subs, subs_len, loop, session_put_exec, done, arg);
    q->expiry_ms = expiry_ms;
    store_submit(st, &q->h.base);
}

void store_session_delete(store *st, const char *client_id, net_loop *loop, store_done_fn done,
                          void *arg)
{
    session_req *q = session_req_new(client_id, NULL, 0, loop, session_delete_exec, done, arg);
    store_submit(st, &q->h.base);
}

void store_session_msg_put(store *st, const char *client_id, uint64_t seq, uint8_t state,
                           const void *msg, size_t msg_len, net_loop *loop, store_done_fn done,
                           void *arg)
{
    session_req *q = session_req_new(client_id, msg, msg_len, loop, msg_put_exec, done, arg);
    q->seq = seq;
    q->state = state;
    store_submit(st, &q->h.base);
}

void store_session_msg_delete(store *st, const char *client_id, uint64_t seq,
                              net_loop *loop, store_done_fn done, void *arg)
{
    session_req *q = session_req_new(client_id, NULL, 0, loop, msg_delete_exec, done, arg);
    q->seq = seq;
    store_submit(st, &q->h.base);
}

/* ---- start-up load ------------------------------------------------------ */

static const char *const SQL_SESSION_ALL =
    "SELECT client_id, expiry_ms, subs FROM sessions ORDER BY client_id";
static const char *const SQL_MSG_ALL =
    "SELECT client_id, seq, state, msg FROM session_msgs ORDER BY client_id, seq";

static store_status load_exec(store *st, store_req *r)
{
    session_req *q = (session_req *)r;
    sqlite3_stmt *s = store_stmt(st, SQL_SESSION_ALL, r);
    if (!s)
        return STORE_ERROR;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        store_session ss = {
            .client_id = (const char *)sqlite3_column_text(s, 0),
            .expiry_ms = sqlite3_column_int64(s, 1),
            .subs = sqlite3_column_blob(s, 2),
            .subs_len = (size_t)sqlite3_column_bytes(s, 2),
        };
        if (q->session_fn)
            q->session_fn(q->h.arg, &ss);
    }
    if (rc != SQLITE_DONE)
        return store_db_error(st, r, "load sessions");
    if (!(s = store_stmt(st, SQL_MSG_ALL, r)))
        return STORE_ERROR;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        store_session_msg m = {
            .client_id = (const char *)sqlite3_column_text(s, 0),
            .seq = (uint64_t)sqlite3_column_int64(s, 1),
            .state = (uint8_t)sqlite3_column_int(s, 2),
            .msg = sqlite3_column_blob(s, 3),
            .msg_len = (size_t)sqlite3_column_bytes(s, 3),
        };
        if (q->msg_fn)
            q->msg_fn(q->h.arg, &m);
    }
    return rc == SQLITE_DONE ? STORE_OK : store_db_error(st, r, "load session messages");
}

bool store_load_sessions(store *st, void (*session_fn)(void *arg, const store_session *s),
                         void (*msg_fn)(void *arg, const store_session_msg *m), void *arg)
{
    session_req q = {.h.base.exec = load_exec, .h.arg = arg, .session_fn = session_fn,
                     .msg_fn = msg_fn};
    return store_run_sync(st, &q.h.base) == STORE_OK;
}

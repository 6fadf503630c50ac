/*
 * store/identity.c — device and module identities, shared access policies.
 *
 * An identity row holds every persisted field of hub_identity; runtime
 * fields (connection state, activity, queued command count) are never
 * written. Deleting a device removes, in the same transaction, its modules,
 * the twins of all of them and the device's command queue, so no orphan
 * survives a crash between two steps.
 *
 * The registry keeps all identities in memory and reads them once at
 * start-up (store_load_identities); the store is only written here.
 */
#include "store/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- put identity ------------------------------------------------------- */

typedef struct put_identity_req {
    store_done_req h;
    hub_identity id;
} put_identity_req;

static const char *const SQL_PUT_IDENTITY =
    "INSERT OR REPLACE INTO identities(device_id, module_id, generation_id, etag, enabled,"
    " status_reason, auth_type, primary_key, secondary_key, primary_thumbprint,"
    " secondary_thumbprint, iot_edge, status_updated_ms)"
    " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

static store_status put_identity_exec(store *st, store_req *r)
{
    const hub_identity *id = &((put_identity_req *)r)->id;
    sqlite3_stmt *s = store_stmt(st, SQL_PUT_IDENTITY, r);
    if (!s)
        return STORE_ERROR;
    sqlite3_bind_text(s, 1, id->device_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, id->module_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, id->generation_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, id->etag, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 5, id->enabled);
    sqlite3_bind_text(s, 6, id->status_reason, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 7, (int)id->auth_type);
    sqlite3_bind_text(s, 8, id->primary_key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 9, id->secondary_key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 10, id->primary_thumbprint, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 11, id->secondary_thumbprint, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 12, id->iot_edge);
    sqlite3_bind_int64(s, 13, id->status_updated_ms);
    if (sqlite3_step(s) != SQLITE_DONE)
        return store_db_error(st, r, "put identity");
    return STORE_OK;
}

void store_put_identity(store *st, const hub_identity *id, net_loop *loop, store_done_fn done,
                        void *arg)
{
    put_identity_req *q = store_req_new(sizeof *q, 0, loop, put_identity_exec,
                                        store_done_complete);
    q->h.done = done;
    q->h.arg = arg;
    q->id = *id;
    q->id.connected = false;
    q->id.connection_state_updated_ms = 0;
    q->id.last_activity_ms = 0;
    q->id.c2d_message_count = 0;
    store_submit(st, &q->h.base);
}

/* ---- delete identity ---------------------------------------------------- */

typedef struct delete_identity_req {
    store_done_req h;
    char device_id[HUB_ID_MAX + 1];
    char module_id[HUB_ID_MAX + 1];
} delete_identity_req;

static const char *const SQL_DEL_MODULE =
    "DELETE FROM identities WHERE device_id = ?1 AND module_id = ?2";
static const char *const SQL_DEL_MODULE_TWIN =
    "DELETE FROM twins WHERE device_id = ?1 AND module_id = ?2";
static const char *const SQL_DEL_DEVICE = "DELETE FROM identities WHERE device_id = ?1";
static const char *const SQL_DEL_DEVICE_TWINS = "DELETE FROM twins WHERE device_id = ?1";
static const char *const SQL_DEL_DEVICE_C2D = "DELETE FROM c2d WHERE device_id = ?1";

/* Runs one keyed DELETE; returns the number of rows removed or -1. */
static int delete_rows(store *st, store_req *r, const char *sql, const char *dev,
                       const char *mod)
{
    sqlite3_stmt *s = store_stmt(st, sql, r);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, dev, -1, SQLITE_STATIC);
    if (mod)
        sqlite3_bind_text(s, 2, mod, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE) {
        store_db_error(st, r, "delete");
        return -1;
    }
    return sqlite3_changes(st->db);
}

static store_status delete_identity_exec(store *st, store_req *r)
{
    delete_identity_req *q = (delete_identity_req *)r;
    int n;
    if (q->module_id[0]) {
        n = delete_rows(st, r, SQL_DEL_MODULE, q->device_id, q->module_id);
        if (n < 0 || delete_rows(st, r, SQL_DEL_MODULE_TWIN, q->device_id, q->module_id) < 0)
            return STORE_ERROR;
    } else {
        n = delete_rows(st, r, SQL_DEL_DEVICE, q->device_id, NULL);
        if (n < 0 || delete_rows(st, r, SQL_DEL_DEVICE_TWINS, q->device_id, NULL) < 0 ||
            delete_rows(st, r, SQL_DEL_DEVICE_C2D, q->device_id, NULL) < 0)
            return STORE_ERROR;
    }
    return n > 0 ? STORE_OK : STORE_NOT_FOUND;
}

void store_delete_identity(store *st, const char *device_id, const char *module_id,
                           net_loop *loop, store_done_fn done, void *arg)
{
    delete_identity_req *q = store_req_new(sizeof *q, 0, loop, delete_identity_exec,
                                           store_done_complete);
    q->h.done = done;
    q->h.arg = arg;
    snprintf(q->device_id, sizeof q->device_id, "%s", device_id);
    snprintf(q->module_id, sizeof q->module_id, "%s", module_id ? module_id : "");
    store_submit(st, &q->h.base);
}

/* ---- policies ----------------------------------------------------------- */

typedef struct put_policy_req {
    store_done_req h;
    hub_policy p;
} put_policy_req;

static const char *const SQL_PUT_POLICY =
    "INSERT OR REPLACE INTO policies(name, rights, primary_key, secondary_key)"
    " VALUES(?1, ?2, ?3, ?4)";

static store_status put_policy_exec(store *st, store_req *r)
{
    const hub_policy *p = &((put_policy_req *)r)->p;
    sqlite3_stmt *s = store_stmt(st, SQL_PUT_POLICY, r);
    if (!s)
        return STORE_ERROR;
    sqlite3_bind_text(s, 1, p->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, p->rights);
    sqlite3_bind_text(s, 3, p->primary_key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, p->secondary_key, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE)
        return store_db_error(st, r, "put policy");
    return STORE_OK;
}

void store_put_policy(store *st, const hub_policy *p, net_loop *loop, store_done_fn done,
                      void *arg)
{
    put_policy_req *q = store_req_new(sizeof *q, 0, loop, put_policy_exec, store_done_complete);
    q->h.done = done;
    q->h.arg = arg;
    q->p = *p;
    store_submit(st, &q->h.base);
}

/* ---- start-up loads ----------------------------------------------------- */

typedef struct load_req {
    store_req base;
    void (*identity_fn)(void *arg, const hub_identity *id);
    void (*policy_fn)(void *arg, const hub_policy *p);
    void *arg;
} load_req;

static void copy_col(char *dst, size_t cap, sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

static const char *const SQL_LOAD_IDENTITIES =
    "SELECT device_id, module_id, generation_id, etag, enabled, status_reason, auth_type,"
    " primary_key, secondary_key, primary_thumbprint, secondary_thumbprint, iot_edge,"
    " status_updated_ms FROM identities ORDER BY device_id, module_id";

static store_status load_identities_exec(store *st, store_req *r)
{
    load_req *q = (load_req *)r;
    sqlite3_stmt *s = store_stmt(st, SQL_LOAD_IDENTITIES, r);
    if (!s)
        return STORE_ERROR;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        hub_identity id;
        memset(&id, 0, sizeof id);
        copy_col(id.device_id, sizeof id.device_id, s, 0);
        copy_col(id.module_id, sizeof id.module_id, s, 1);
        copy_col(id.generation_id, sizeof id.generation_id, s, 2);
        copy_col(id.etag, sizeof id.etag, s, 3);
        id.enabled = sqlite3_column_int(s, 4) != 0;
        copy_col(id.status_reason, sizeof id.status_reason, s, 5);
        id.auth_type = (hub_auth_type)sqlite3_column_int(s, 6);
        copy_col(id.primary_key, sizeof id.primary_key, s, 7);
        copy_col(id.secondary_key, sizeof id.secondary_key, s, 8);
        copy_col(id.primary_thumbprint, sizeof id.primary_thumbprint, s, 9);
        copy_col(id.secondary_thumbprint, sizeof id.secondary_thumbprint, s, 10);
        id.iot_edge = sqlite3_column_int(s, 11) != 0;
        id.status_updated_ms = sqlite3_column_int64(s, 12);
        q->identity_fn(q->arg, &id);
    }
    return rc == SQLITE_DONE ? STORE_OK : store_db_error(st, r, "load identities");
}

static const char *const SQL_LOAD_POLICIES =
    "SELECT name, rights, primary_key, secondary_key FROM policies ORDER BY name";

static store_status load_policies_exec(store *st, store_req *r)
{
    load_req *q = (load_req *)r;
    sqlite3_stmt *s = store_stmt(st, SQL_LOAD_POLICIES, r);
    if (!s)
        return STORE_ERROR;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        hub_policy p;
        memset(&p, 0, sizeof p);
        copy_col(p.name, sizeof p.name, s, 0);
        p.rights = (unsigned)sqlite3_column_int64(s, 1);
        copy_col(p.primary_key, sizeof p.primary_key, s, 2);
        copy_col(p.secondary_key, sizeof p.secondary_key, s, 3);
        q->policy_fn(q->arg, &p);
    }
    return rc == SQLITE_DONE ? STORE_OK : store_db_error(st, r, "load policies");
}

bool store_load_identities(store *st, void (*fn)(void *arg, const hub_identity *id), void *arg)
{
    load_req q = {.base.exec = load_identities_exec, .identity_fn = fn, .arg = arg};
    return store_run_sync(st, &q.base) == STORE_OK;
}

bool store_load_policies(store *st, void (*fn)(void *arg, const hub_policy *p), void *arg)
{
    load_req q = {.base.exec = load_policies_exec, .policy_fn = fn, .arg = arg};
    return store_run_sync(st, &q.base) == STORE_OK;
}

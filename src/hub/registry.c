/*
 * hub/registry.c — the identity registry (see registry.h for the contract).
 *
 * In memory: one hash map, key "deviceId" or "deviceId/moduleId" ('/' is
 * not an id character, so keys never collide), value a reg_entry holding
 * two versions of the identity:
 *
 *   id, deleted          what readers see: the latest write, durable or not
 *                        (`deleted` = a tombstone, invisible to readers)
 *   durable, durable_exists
 *                        the last state the store confirmed
 *
 * Writes are numbered (registry-wide counter). `write_seq` says which write
 * `id` shows, `durable_seq` which one `durable` is. A success raises
 * `durable` to its write (if newer); a failure of the write `id` shows puts
 * `id` back to `durable`. This stays right when completions of different
 * writes arrive out of order (they run on different loops) and when several
 * writes of one entry fail together: a failure never exposes a state that
 * was not committed, and never undoes a newer success. `pending` counts the
 * writes in flight on an entry; a tombstone is freed when it drops to 0.
 *
 * A write: under the lock, check preconditions, apply the change to `id`
 * of every entry touched (a device deletion touches its modules too), and
 * queue the store request — still under the lock, so the store sees writes
 * in the order memory did. The store's completion (on the caller's loop)
 * takes the lock again to settle each entry, then calls the change listener
 * once per entry and finally `done`.
 *
 * Preconditions that fail before anything changes are reported through a
 * posted task too, so `done` never runs re-entrantly inside registry_put.
 */
#include "hub/registry.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "util/crypto.h"
#include "util/hmap.h"
#include "util/log.h"
#include "util/time.h"

#define REG_POLICIES_MAX 16

typedef struct reg_entry {
    char key[HUB_IDENTITY_KEY_MAX];
    size_t keylen;
    hub_identity id;
    bool deleted;
    uint64_t write_seq;
    hub_identity durable;
    bool durable_exists;
    uint64_t durable_seq;
    unsigned pending;
} reg_entry;

struct hub_registry {
    store *st;
    pthread_mutex_t lock; /* guards map, entries and next_write */
    hmap map;
    uint64_t next_write;
    hub_policy policies[REG_POLICIES_MAX]; /* read-only after open */
    size_t npolicies;
    registry_change_fn change_fn; /* set before the loops run */
    void *change_arg;
};

static hmap_key entry_key(const void *value, const void *ctx)
{
    (void)ctx;
    const reg_entry *e = value;
    return (hmap_key){e->key, e->keylen};
}

/* What a write changed in one entry (kept alive by e->pending). */
typedef struct reg_change {
    reg_entry *e;
    bool existed;       /* visible to readers before this write */
    hub_identity old;
    hub_identity now;
    bool is_delete;
} reg_change;

typedef struct reg_op {
    hub_registry *r;
    net_loop *loop;
    registry_done_fn done;
    void *arg;
    registry_status status; /* success status, or the early failure */
    char err[160];
    uint64_t write_seq;
    hub_identity result;
    size_t n;
    reg_change changes[]; /* n entries */
} reg_op;

/* ---- ids, keys and validation ------------------------------------------ */

bool registry_valid_id(const char *id)
{
    static const char extra[] = "-.+%_#*?!(),=@$'";
    size_t n = 0;
    for (const char *p = id; *p; p++, n++) {
        unsigned char c = (unsigned char)*p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  strchr(extra, c) != NULL;
        if (!ok || n >= HUB_ID_MAX)
            return false;
    }
    return n > 0;
}

/* Empty, or standard base64 of 16..64 bytes. */
static bool valid_key(const char *key)
{
    if (!*key)
        return true;
    uint8_t buf[64];
    size_t n = 0;
    return crypto_b64_decode(key, strlen(key), buf, sizeof buf, &n) && n >= 16 && n <= 64;
}

/* Empty, or 40 or 64 hex digits. */
static bool valid_thumbprint(const char *t)
{
    size_t n = strlen(t);
    if (n != 0 && n != 40 && n != 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return true;
}

static registry_status invalid(char *err, size_t errlen, const char *why)
{
    snprintf(err, errlen, "%s", why);
    return REG_INVALID;
}

registry_status registry_validate(const hub_identity *in, char *err, size_t errlen)
{
    if (!registry_valid_id(in->device_id))
        return invalid(err, errlen, "invalid deviceId");
    if (in->module_id[0] && !registry_valid_id(in->module_id))
        return invalid(err, errlen, "invalid moduleId");
    if ((unsigned)in->auth_type > HUB_AUTH_NONE)
        return invalid(err, errlen, "invalid authentication type");
    if (!valid_key(in->primary_key) || !valid_key(in->secondary_key))
        return invalid(err, errlen, "symmetric keys must be base64 of 16 to 64 bytes");
    if (!valid_thumbprint(in->primary_thumbprint) || !valid_thumbprint(in->secondary_thumbprint))
        return invalid(err, errlen, "thumbprints must be 40 or 64 hex digits");
    bool keys = in->primary_key[0] || in->secondary_key[0];
    bool prints = in->primary_thumbprint[0] || in->secondary_thumbprint[0];
    switch (in->auth_type) {
    case HUB_AUTH_SAS:
        if (prints)
            return invalid(err, errlen, "sas authentication takes no thumbprints");
        break;
    case HUB_AUTH_SELF_SIGNED:
        if (keys)
            return invalid(err, errlen, "selfSigned authentication takes no keys");
        /* IoT Hub requires the primary; the secondary is for rollover. */
        if (!in->primary_thumbprint[0])
            return invalid(err, errlen, "selfSigned authentication needs a primary thumbprint");
        break;
    case HUB_AUTH_CA:
    case HUB_AUTH_NONE:
        if (keys || prints)
            return invalid(err, errlen, "this authentication type takes no keys or thumbprints");
        break;
    }
    return REG_OK;
}

/* A random printable token: base64url of 9 random bytes (12 chars). */
static bool random_token(char out[HUB_ETAG_MAX + 1])
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t b[9];
    if (!crypto_random_id(b, sizeof b))
        return false;
    for (int i = 0; i < 3; i++) {
        uint32_t v = (uint32_t)b[3 * i] << 16 | (uint32_t)b[3 * i + 1] << 8 | b[3 * i + 2];
        for (int k = 0; k < 4; k++)
            out[4 * i + k] = alphabet[(v >> (18 - 6 * k)) & 63];
    }
    out[12] = '\0';
    return true;
}

/* The live (non-tombstone) entry for a key, or NULL. Lock held. */
static reg_entry *live_entry(hub_registry *r, const char *key, size_t keylen)
{
    reg_entry *e = hmap_get(&r->map, key, keylen);
    return e && !e->deleted ? e : NULL;
}

/* Copies the persisted fields of src over dst, keeping dst's runtime ones. */
static void copy_persisted(hub_identity *dst, const hub_identity *src)
{
    bool connected = dst->connected;
    int64_t csu = dst->connection_state_updated_ms, la = dst->last_activity_ms;
    uint32_t c2d = dst->c2d_message_count;
    *dst = *src;
    dst->connected = connected;
    dst->connection_state_updated_ms = csu;
    dst->last_activity_ms = la;
    dst->c2d_message_count = c2d;
}

/* "*", an etag, or a quoted etag against the current one. */
static bool etag_matches(const char *if_match, const char *etag)
{
    if (strcmp(if_match, "*") == 0)
        return true;
    size_t n = strlen(if_match);
    if (n >= 2 && if_match[0] == '"' && if_match[n - 1] == '"')
        return strlen(etag) == n - 2 && strncmp(if_match + 1, etag, n - 2) == 0;
    return strcmp(if_match, etag) == 0;
}

/* ---- completions -------------------------------------------------------- */

static void op_report(net_loop *loop, void *arg)
{
    reg_op *op = arg;
    bool ok = op->status == REG_OK || op->status == REG_CREATED;
    if (op->done)
        op->done(loop, op->arg, op->status, ok ? &op->result : NULL, ok ? NULL : op->err);
    free(op);
}

/* Reports an early failure (nothing changed) through the caller's loop. */
static void op_fail_early(reg_op *op, registry_status st)
{
    op->status = st;
    if (op->loop)
        net_loop_post(op->loop, op_report, op);
    else
        op_report(NULL, op);
}

static void free_entry_locked(hub_registry *r, reg_entry *e)
{
    hmap_del(&r->map, e->key, e->keylen);
    free(e);
}

/* Shows the durable state to readers again. Lock held. */
static void show_durable(reg_entry *e)
{
    if (e->durable_exists)
        copy_persisted(&e->id, &e->durable);
    e->deleted = !e->durable_exists;
    e->write_seq = e->durable_seq;
}

/* Settles one entry after its write `seq` succeeded or failed. Lock held. */
static void settle(hub_registry *r, const reg_change *c, uint64_t seq, bool ok)
{
    reg_entry *e = c->e;
    if (ok && seq > e->durable_seq) {
        if (!c->is_delete)
            e->durable = c->now;
        e->durable_exists = !c->is_delete;
        e->durable_seq = seq;
        if (e->write_seq < seq) /* an older failure reverted what readers see */
            show_durable(e);
    } else if (!ok && e->write_seq == seq) {
        show_durable(e);
    }
    if (--e->pending == 0 && e->deleted)
        free_entry_locked(r, e);
}

/* The store finished: settle every entry, tell the listener, report. */
static void op_stored(net_loop *loop, void *arg, store_status st, const char *err)
{
    reg_op *op = arg;
    hub_registry *r = op->r;
    bool ok = st == STORE_OK || (st == STORE_NOT_FOUND && op->changes[0].is_delete);
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < op->n; i++)
        settle(r, &op->changes[i], op->write_seq, ok);
    pthread_mutex_unlock(&r->lock);
    if (!ok) {
        log_warn("registry: store write failed: %s", err);
        snprintf(op->err, sizeof op->err, "store: %s", err && *err ? err : store_status_name(st));
        op->status = st == STORE_NO_SPACE ? REG_STORE_BUSY : REG_STORE_ERROR;
    } else if (r->change_fn) {
        for (size_t i = 0; i < op->n; i++) {
            reg_change *c = &op->changes[i];
            r->change_fn(r->change_arg, c->existed ? &c->old : NULL, c->is_delete ? NULL : &c->now);
        }
    }
    op_report(loop, op);
}

static reg_op *op_new(hub_registry *r, size_t nchanges, net_loop *loop, registry_done_fn done,
                      void *arg)
{
    reg_op *op = calloc(1, sizeof *op + nchanges * sizeof(reg_change));
    if (!op) {
        log_error("registry: out of memory");
        abort();
    }
    op->r = r;
    op->loop = loop;
    op->done = done;
    op->arg = arg;
    return op;
}

/* Records entry e's visible state in change c before this write modifies
 * it, and counts the write as pending on e. */
static void note_change(reg_change *c, reg_entry *e)
{
    c->e = e;
    c->existed = !e->deleted;
    c->old = e->id;
    e->pending++;
}

/* ---- put ---------------------------------------------------------------- */

/* Builds the identity to store from the request and the current one. */
static registry_status prepare_put(const hub_identity *in, const reg_entry *cur,
                                   hub_identity *out, char *err, size_t errlen)
{
    bool exists = cur && !cur->deleted;
    if (exists)
        *out = cur->id; /* keeps runtime fields */
    else
        memset(out, 0, sizeof *out);
    copy_persisted(out, in);
    if (exists)
        memcpy(out->generation_id, cur->id.generation_id, sizeof out->generation_id);
    else if (!random_token(out->generation_id))
        goto rng;
    if (!random_token(out->etag))
        goto rng;
    if (out->auth_type == HUB_AUTH_SAS) {
        if (!out->primary_key[0] && !crypto_new_key(out->primary_key))
            goto rng;
        if (!out->secondary_key[0] && !crypto_new_key(out->secondary_key))
            goto rng;
    }
    if (!exists || cur->id.enabled != out->enabled)
        out->status_updated_ms = (int64_t)time_wall_ms();
    else
        out->status_updated_ms = cur->id.status_updated_ms;
    return exists ? REG_OK : REG_CREATED;
rng:
    snprintf(err, errlen, "random generator failed");
    return REG_STORE_ERROR;
}

void registry_put(hub_registry *r, const hub_identity *in, const char *if_match,
                  bool if_none_match_star, net_loop *loop, registry_done_fn done, void *arg)
{
    reg_op *op = op_new(r, 1, loop, done, arg);
    registry_status st = registry_validate(in, op->err, sizeof op->err);
    if (st != REG_OK) {
        op_fail_early(op, st);
        return;
    }
    char key[HUB_IDENTITY_KEY_MAX], dkey[HUB_IDENTITY_KEY_MAX];
    size_t keylen = hub_identity_key(key, in->device_id, in->module_id);
    size_t dkeylen = hub_identity_key(dkey, in->device_id, NULL);
    pthread_mutex_lock(&r->lock);
    reg_entry *e = hmap_get(&r->map, key, keylen);
    bool exists = e && !e->deleted;
    if (in->module_id[0] && !live_entry(r, dkey, dkeylen)) {
        st = REG_NOT_FOUND;
        snprintf(op->err, sizeof op->err, "device %s not found", in->device_id);
    } else if (if_none_match_star && exists) {
        st = REG_EXISTS;
        snprintf(op->err, sizeof op->err, "identity already exists");
    } else if (if_match && !exists) {
        st = REG_NOT_FOUND;
        snprintf(op->err, sizeof op->err, "identity not found");
    } else if (if_match && !etag_matches(if_match, e->id.etag)) {
        st = REG_PRECONDITION_FAILED;
        snprintf(op->err, sizeof op->err, "etag mismatch");
    } else {
        st = prepare_put(in, e, &op->result, op->err, sizeof op->err);
    }
    if (st != REG_OK && st != REG_CREATED) {
        pthread_mutex_unlock(&r->lock);
        op_fail_early(op, st);
        return;
    }
    if (!e) {
        e = calloc(1, sizeof *e);
        if (e) { /* the map keeps a pointer to the key: it lives in the entry */
            memcpy(e->key, key, keylen + 1);
            e->keylen = keylen;
        }
        if (!e || hmap_put(&r->map, e->key, e->keylen, e) == e) {
            pthread_mutex_unlock(&r->lock);
            free(e);
            snprintf(op->err, sizeof op->err, "out of memory");
            op_fail_early(op, REG_STORE_ERROR);
            return;
        }
        e->deleted = true; /* not visible, nothing durable yet */
    }
    note_change(&op->changes[0], e);
    op->status = st;
    op->n = 1;
    op->write_seq = ++r->next_write;
    op->changes[0].now = op->result;
    e->id = op->result;
    e->deleted = false;
    e->write_seq = op->write_seq;
    store_put_identity(r->st, &op->result, loop, op_stored, op);
    pthread_mutex_unlock(&r->lock);
}

/* ---- delete ------------------------------------------------------------- */

/* Counts the live modules of a device. Lock held. */
static size_t count_modules(hub_registry *r, const char *device_id)
{
    size_t n = 0, pos = 0;
    void *v;
    while (hmap_next(&r->map, &pos, &v)) {
        reg_entry *e = v;
        n += !e->deleted && e->id.module_id[0] && strcmp(e->id.device_id, device_id) == 0;
    }
    return n;
}

/* Turns e into a tombstone written by op, recording the change. */
static void tombstone(reg_op *op, reg_entry *e)
{
    reg_change *c = &op->changes[op->n++];
    note_change(c, e);
    c->is_delete = true;
    e->deleted = true;
    e->write_seq = op->write_seq;
}

void registry_delete(hub_registry *r, const char *device_id, const char *module_id,
                     const char *if_match, net_loop *loop, registry_done_fn done, void *arg)
{
    char key[HUB_IDENTITY_KEY_MAX];
    size_t keylen = hub_identity_key(key, device_id, module_id);
    bool device = !module_id || !*module_id;
    pthread_mutex_lock(&r->lock);
    reg_entry *e = live_entry(r, key, keylen);
    size_t nmod = device && e ? count_modules(r, device_id) : 0;
    reg_op *op = op_new(r, 1 + nmod, loop, done, arg);
    if (!e || !registry_valid_id(device_id)) {
        pthread_mutex_unlock(&r->lock);
        snprintf(op->err, sizeof op->err, "identity not found");
        op_fail_early(op, REG_NOT_FOUND);
        return;
    }
    if (if_match && !etag_matches(if_match, e->id.etag)) {
        pthread_mutex_unlock(&r->lock);
        snprintf(op->err, sizeof op->err, "etag mismatch");
        op_fail_early(op, REG_PRECONDITION_FAILED);
        return;
    }
    op->status = REG_OK;
    op->result = e->id;
    op->write_seq = ++r->next_write;
    if (device) {
        size_t pos = 0;
        void *v;
        while (hmap_next(&r->map, &pos, &v)) {
            reg_entry *m = v;
            if (!m->deleted && m->id.module_id[0] && strcmp(m->id.device_id, device_id) == 0)
                tombstone(op, m);
        }
    }
    tombstone(op, e);
    store_delete_identity(r->st, device_id, module_id, loop, op_stored, op);
    pthread_mutex_unlock(&r->lock);
}

/* ---- reads -------------------------------------------------------------- */

bool registry_get(hub_registry *r, const char *device_id, const char *module_id,
                  hub_identity *out)
{
    char key[HUB_IDENTITY_KEY_MAX];
    size_t keylen = hub_identity_key(key, device_id, module_id);
    pthread_mutex_lock(&r->lock);
    reg_entry *e = live_entry(r, key, keylen);
    if (e)
        *out = e->id;
    pthread_mutex_unlock(&r->lock);
    return e != NULL;
}

static int compare_ids(const void *a, const void *b)
{
    const hub_identity *x = a, *y = b;
    int c = strcmp(x->device_id, y->device_id);
    return c ? c : strcmp(x->module_id, y->module_id);
}

hub_identity *registry_list(hub_registry *r, const char *module_of, size_t top, size_t *n)
{
    *n = 0;
    pthread_mutex_lock(&r->lock);
    hub_identity *out = malloc((r->map.count ? r->map.count : 1) * sizeof *out);
    if (!out) {
        pthread_mutex_unlock(&r->lock);
        return NULL;
    }
    size_t pos = 0;
    void *v;
    while (hmap_next(&r->map, &pos, &v)) {
        const reg_entry *e = v;
        if (e->deleted)
            continue;
        bool want = module_of ? e->id.module_id[0] && strcmp(e->id.device_id, module_of) == 0
                              : !e->id.module_id[0];
        if (want)
            out[(*n)++] = e->id;
    }
    pthread_mutex_unlock(&r->lock);
    qsort(out, *n, sizeof *out, compare_ids);
    if (top && *n > top)
        *n = top;
    return out;
}

void registry_stats(hub_registry *r, size_t *total, size_t *enabled, size_t *disabled)
{
    *total = *enabled = *disabled = 0;
    pthread_mutex_lock(&r->lock);
    size_t pos = 0;
    void *v;
    while (hmap_next(&r->map, &pos, &v)) {
        const reg_entry *e = v;
        if (e->deleted || e->id.module_id[0])
            continue;
        (*total)++;
        if (e->id.enabled)
            (*enabled)++;
        else
            (*disabled)++;
    }
    pthread_mutex_unlock(&r->lock);
}

bool registry_policy_get(hub_registry *r, const char *name, hub_policy *out)
{
    for (size_t i = 0; i < r->npolicies; i++)
        if (strcmp(r->policies[i].name, name) == 0) {
            *out = r->policies[i];
            return true;
        }
    return false;
}

size_t registry_policies(hub_registry *r, hub_policy *out, size_t cap)
{
    size_t n = r->npolicies < cap ? r->npolicies : cap;
    memcpy(out, r->policies, n * sizeof *out);
    return n;
}

void registry_set_change_listener(hub_registry *r, registry_change_fn fn, void *arg)
{
    r->change_fn = fn;
    r->change_arg = arg;
}

/* ---- runtime state ------------------------------------------------------ */

void registry_note_connection(hub_registry *r, const char *device_id, const char *module_id,
                              bool connected, int64_t now_ms)
{
    char key[HUB_IDENTITY_KEY_MAX];
    size_t keylen = hub_identity_key(key, device_id, module_id);
    pthread_mutex_lock(&r->lock);
    reg_entry *e = live_entry(r, key, keylen);
    if (e) {
        e->id.connected = connected;
        e->id.connection_state_updated_ms = now_ms;
        if (connected)
            e->id.last_activity_ms = now_ms;
    }
    pthread_mutex_unlock(&r->lock);
}

void registry_note_activity(hub_registry *r, const char *device_id, const char *module_id,
                            int64_t now_ms)
{
    char key[HUB_IDENTITY_KEY_MAX];
    size_t keylen = hub_identity_key(key, device_id, module_id);
    pthread_mutex_lock(&r->lock);
    reg_entry *e = live_entry(r, key, keylen);
    if (e)
        e->id.last_activity_ms = now_ms;
    pthread_mutex_unlock(&r->lock);
}

void registry_set_c2d_count(hub_registry *r, const char *device_id, uint32_t count)
{
    char key[HUB_IDENTITY_KEY_MAX];
    size_t keylen = hub_identity_key(key, device_id, NULL);
    pthread_mutex_lock(&r->lock);
    reg_entry *e = live_entry(r, key, keylen);
    if (e)
        e->id.c2d_message_count = count;
    pthread_mutex_unlock(&r->lock);
}

/* ---- open / free -------------------------------------------------------- */

static const struct {
    const char *name;
    unsigned rights;
} standard_policies[] = {
    {"iothubowner", HUB_RIGHT_REGISTRY_READ | HUB_RIGHT_REGISTRY_WRITE |
                        HUB_RIGHT_SERVICE_CONNECT | HUB_RIGHT_DEVICE_CONNECT},
    {"service", HUB_RIGHT_SERVICE_CONNECT},
    {"device", HUB_RIGHT_DEVICE_CONNECT},
    {"registryRead", HUB_RIGHT_REGISTRY_READ},
    {"registryReadWrite", HUB_RIGHT_REGISTRY_READ | HUB_RIGHT_REGISTRY_WRITE},
};
#define N_STANDARD (sizeof standard_policies / sizeof standard_policies[0])

static size_t policy_rank(const char *name)
{
    for (size_t i = 0; i < N_STANDARD; i++)
        if (strcmp(name, standard_policies[i].name) == 0)
            return i;
    return N_STANDARD;
}

/* Standard policies first in their order, then others by name. */
static int compare_policies(const void *a, const void *b)
{
    const hub_policy *x = a, *y = b;
    size_t rx = policy_rank(x->name), ry = policy_rank(y->name);
    return rx != ry ? (rx < ry ? -1 : 1) : strcmp(x->name, y->name);
}

static void load_policy(void *arg, const hub_policy *p)
{
    hub_registry *r = arg;
    if (r->npolicies < REG_POLICIES_MAX)
        r->policies[r->npolicies++] = *p;
    else
        log_warn("registry: more than %d policies stored; ignoring %s", REG_POLICIES_MAX, p->name);
}

static void load_identity(void *arg, const hub_identity *id)
{
    hub_registry *r = arg;
    reg_entry *e = calloc(1, sizeof *e);
    if (!e) {
        log_error("registry: out of memory loading %s", id->device_id);
        return;
    }
    e->id = *id;
    e->durable = *id;
    e->durable_exists = true;
    e->keylen = hub_identity_key(e->key, id->device_id, id->module_id);
    if (hmap_put(&r->map, e->key, e->keylen, e) == e)
        free(e);
}

static void policy_stored(net_loop *loop, void *arg, store_status st, const char *err)
{
    (void)loop;
    if (st != STORE_OK) {
        bool *failed = arg;
        *failed = true;
        log_error("registry: storing a policy: %s", err);
    }
}

/* First start: the standard policies with fresh keys, stored durably. */
static bool create_policies(hub_registry *r, char *err, size_t errlen)
{
    bool failed = false;
    for (size_t i = 0; i < N_STANDARD; i++) {
        hub_policy *p = &r->policies[r->npolicies++];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "%s", standard_policies[i].name);
        p->rights = standard_policies[i].rights;
        if (!crypto_new_key(p->primary_key) || !crypto_new_key(p->secondary_key)) {
            snprintf(err, errlen, "random generator failed");
            return false;
        }
        store_put_policy(r->st, p, NULL, policy_stored, &failed);
    }
    store_flush(r->st); /* the callbacks ran on the store thread */
    if (failed) {
        snprintf(err, errlen, "could not store the shared access policies");
        return false;
    }
    log_info("registry: created the standard shared access policies");
    return true;
}

hub_registry *registry_open(struct store *st, char *err, size_t errlen)
{
    hub_registry *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->st = st;
    pthread_mutex_init(&r->lock, NULL);
    hmap_init(&r->map, entry_key, NULL);
    if (!store_load_policies(st, load_policy, r) || !store_load_identities(st, load_identity, r)) {
        snprintf(err, errlen, "loading the registry from the store failed");
        registry_free(r);
        return NULL;
    }
    if (r->npolicies == 0 && !create_policies(r, err, errlen)) {
        registry_free(r);
        return NULL;
    }
    qsort(r->policies, r->npolicies, sizeof r->policies[0], compare_policies);
    log_info("registry: %zu identities, %zu policies", r->map.count, r->npolicies);
    return r;
}

void registry_free(hub_registry *r)
{
    if (!r)
        return;
    size_t pos = 0;
    void *v;
    while (hmap_next(&r->map, &pos, &v))
        free(v);
    hmap_free(&r->map);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

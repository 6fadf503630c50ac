/*
 * hub/twin.c — the twin table (see twin.h for the contract, twin_doc.h
 * for the document model).
 *
 * In memory: one hash map, key "deviceId" or "deviceId/moduleId" (as in
 * the registry), value a twin_entry holding two reference-counted
 * documents:
 *
 *   doc       what readers see: the latest accepted write, durable or not
 *   durable   the last state the store confirmed
 *
 * and the write numbers that say which write each shows (`write_seq`,
 * `durable_seq`; a table-wide counter). Documents are never changed once
 * published: a write copies `doc` into a draft, applies the patch there
 * (twin_doc_apply checks every limit; a refused patch throws the draft
 * away, so nothing changed), then makes the draft the new `doc`. Rollback
 * mirrors the registry: a success raises `durable` to its write (if
 * newer); a failure of the write `doc` shows puts `doc` back to `durable`.
 * When nothing is pending both point at the same document.
 *
 * One mutex guards the map and every entry; documents are immutable and
 * their reference counts atomic (twin_doc.h), so the lock is only held to
 * look an entry up, take a reference to its document or swap in a new
 * one, never while a patch is merged or a view is spliced, and never
 * across a call into the registry or a callback. A write builds its draft
 * from a reference to the current document outside the lock, then, under
 * it, publishes the draft only if that document is still the current one
 * (else it builds again from the newer one: two writes to one twin at the
 * same moment are rare, a device and a service, say). Short critical
 * sections matter more than their count here: both loops take the lock
 * for every twin request, and a holder preempted on a busy machine stalls
 * the other loop for a whole time slice. Drafts are cheap (a draft shares
 * every tree the patch does not touch) and a view is a copy of the kept
 * texts, so a Get twin is answered without parsing or serialising.
 * The stored form is rendered and the store write queued under the lock,
 * so the store sees the writes to a twin in the order memory did. The
 * completion (on the caller's loop) settles the entry, tells the desired
 * listener, and reports.
 *
 * The stored form is the service view without the runtime fields, plus
 * the identity's generationId (its JSON member kept in the entry). A twin
 * row left behind by a write that raced with its identity's deletion is
 * recognised at start-up by that generation id (a re-created identity has
 * a new one) and ignored. An
 * identity whose twin was never written has no row: its empty twin takes
 * the generation id as etag and the identity's status time as
 * $lastUpdated, so it looks the same after a restart.
 */
#include "hub/twin.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/twin_doc.h"
#include "store/store.h"
#include "util/hmap.h"
#include "util/json_load.h"
#include "util/log.h"
#include "util/time.h"

typedef struct twin_entry {
    char key[HUB_IDENTITY_KEY_MAX];
    size_t keylen;
    char device_id[HUB_ID_MAX + 1];
    char module_id[HUB_ID_MAX + 1];
    char generation_id[HUB_ETAG_MAX + 1];
    char *stored_extra; /* {"generationId":...}: the stored form's extra member */
    twin_doc *doc;
    twin_doc *durable;
    uint64_t write_seq;
    uint64_t durable_seq;
    unsigned pending; /* writes in flight */
    bool deleted;     /* identity gone; freed when pending drops to 0 */
} twin_entry;

struct hub_twins {
    store *st;
    hub_registry *reg;
    pthread_mutex_t lock; /* guards map, entries, documents' refs, next_write */
    hmap map;
    uint64_t next_write;
    twin_etags etags;
    twins_desired_fn desired_fn; /* set before the loops run */
    void *desired_arg;
};

static hmap_key entry_key(const void *value, const void *ctx)
{
    (void)ctx;
    const twin_entry *e = value;
    return (hmap_key){e->key, e->keylen};
}

/* One write in flight (or one early failure on its way to the caller). */
typedef struct twin_op {
    hub_twins *t;
    twin_entry *e;        /* NULL for an early failure */
    net_loop *loop;
    twins_version_fn version_done; /* device side */
    twins_doc_fn doc_done;         /* service side */
    void *arg;
    hub_status status;
    char reason[TWIN_WHY_MAX];
    uint64_t write_seq;
    twin_doc *now;        /* the document this write produced (a reference) */
    char *desired_patch;  /* for the desired listener; NULL: desired unchanged */
    char device_id[HUB_ID_MAX + 1];
    char module_id[HUB_ID_MAX + 1];
} twin_op;

/* ---- entries -------------------------------------------------------------- */

/* Copies the id s into out (cap bytes), cut to fit; returns its length. */
static size_t copy_id(char *out, size_t cap, const char *s)
{
    size_t n = s ? strnlen(s, cap - 1) : 0;
    memcpy(out, s ? s : "", n);
    out[n] = '\0';
    return n;
}

/* The live entry of an identity, or NULL. Lock held. */
static twin_entry *live_entry(hub_twins *t, const char *device_id, const char *module_id)
{
    char key[HUB_IDENTITY_KEY_MAX];
    size_t keylen = hub_identity_key(key, device_id, module_id);
    twin_entry *e = hmap_get(&t->map, key, keylen);
    return e && !e->deleted ? e : NULL;
}

/* A reference to the document readers see now, NULL when there is no such
 * twin; the caller drops it. Takes the lock for the lookup only. */
static twin_doc *current_doc(hub_twins *t, const char *device_id, const char *module_id)
{
    pthread_mutex_lock(&t->lock);
    twin_entry *e = live_entry(t, device_id, module_id);
    twin_doc *doc = e ? twin_doc_ref(e->doc) : NULL;
    pthread_mutex_unlock(&t->lock);
    return doc;
}

/* Replaces what readers see with doc (taking a reference). Lock held. */
static void show(twin_entry *e, twin_doc *doc, uint64_t seq)
{
    twin_doc_ref(doc);
    twin_doc_unref(e->doc);
    e->doc = doc;
    e->write_seq = seq;
}

static void free_entry_locked(hub_twins *t, twin_entry *e)
{
    hmap_del(&t->map, e->key, e->keylen);
    twin_doc_unref(e->doc);
    twin_doc_unref(e->durable);
    free(e->stored_extra);
    free(e);
}

/* The empty twin of an identity that has none stored. */
static twin_doc *empty_twin_for(const hub_identity *id)
{
    int64_t when = id->status_updated_ms > 0 ? id->status_updated_ms : (int64_t)time_wall_ms();
    return twin_doc_new_empty(when, id->generation_id[0] ? id->generation_id : NULL);
}

/* Creates (or revives) the entry of an identity with its empty twin. Lock
 * held. False when out of memory. */
static bool add_entry_locked(hub_twins *t, const hub_identity *id)
{
    twin_doc *doc = empty_twin_for(id);
    json_t *extra = doc ? json_pack("{s:s}", "generationId", id->generation_id) : NULL;
    char *extra_text = extra ? json_dumps(extra, JSON_COMPACT) : NULL;
    json_decref(extra);
    if (!extra_text) {
        twin_doc_unref(doc);
        return false;
    }
    char key[HUB_IDENTITY_KEY_MAX];
    size_t keylen = hub_identity_key(key, id->device_id, id->module_id);
    twin_entry *e = hmap_get(&t->map, key, keylen);
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) {
            twin_doc_unref(doc);
            free(extra_text);
            return false;
        }
        memcpy(e->key, key, keylen + 1); /* the map keeps a pointer to it */
        e->keylen = keylen;
        if (hmap_put(&t->map, e->key, e->keylen, e) == e) {
            free(e);
            twin_doc_unref(doc);
            free(extra_text);
            return false;
        }
    }
    snprintf(e->device_id, sizeof e->device_id, "%s", id->device_id);
    snprintf(e->module_id, sizeof e->module_id, "%s", id->module_id);
    snprintf(e->generation_id, sizeof e->generation_id, "%s", id->generation_id);
    free(e->stored_extra);
    e->stored_extra = extra_text;
    e->deleted = false;
    /* a revived tombstone: older writes in flight must not show or settle */
    e->write_seq = e->durable_seq = ++t->next_write;
    twin_doc_unref(e->doc);
    twin_doc_unref(e->durable);
    e->doc = doc;
    e->durable = twin_doc_ref(doc);
    return true;
}

/* Drops an entry (a tombstone while writes are in flight). Lock held. */
static void drop_entry_locked(hub_twins *t, twin_entry *e)
{
    if (e->pending > 0)
        e->deleted = true;
    else
        free_entry_locked(t, e);
}

/* ---- reports -------------------------------------------------------------- */

/* The registry's runtime fields of the service view. */
static json_t *runtime_fields(hub_registry *reg, const char *device_id, const char *module_id)
{
    hub_identity id;
    if (!registry_get(reg, device_id, module_id, &id))
        memset(&id, 0, sizeof id);
    char when[32];
    time_iso8601_ms(id.last_activity_ms, when);
    return json_pack("{s:s, s:s, s:s, s:I}", "status", id.enabled ? "enabled" : "disabled",
                     "connectionState", id.connected ? "Connected" : "Disconnected",
                     "lastActivityTime", when, "cloudToDeviceMessageCount",
                     (json_int_t)id.c2d_message_count);
}

/* The registry's runtime fields of the service view as JSON object text
 * (malloc'd; NULL when out of memory). */
static char *runtime_text(hub_registry *reg, const char *device_id, const char *module_id)
{
    json_t *runtime = runtime_fields(reg, device_id, module_id);
    char *text = runtime ? json_dumps(runtime, JSON_COMPACT) : NULL;
    json_decref(runtime);
    return text;
}

static void op_free(twin_op *op)
{
    twin_doc_unref(op->now);
    free(op->desired_patch);
    free(op);
}

/* Calls the caller's `done` with op's outcome, then frees op. */
static void op_report(net_loop *loop, void *arg)
{
    twin_op *op = arg;
    bool ok = op->status == HUB_OK;
    const char *reason = ok ? NULL : op->reason;
    if (op->version_done) {
        op->version_done(loop, op->arg, op->status, ok ? (uint64_t)op->now->reported_version : 0,
                         reason);
    } else if (op->doc_done && !ok) {
        op->doc_done(loop, op->arg, op->status, NULL, NULL, reason);
    } else if (op->doc_done) {
        char *runtime = runtime_text(op->t->reg, op->device_id, op->module_id);
        char *text = runtime ? twin_doc_service_text(op->now, op->device_id, op->module_id,
                                                     runtime, NULL)
                             : NULL;
        free(runtime);
        if (text)
            op->doc_done(loop, op->arg, HUB_OK, text, op->now->etag, NULL);
        else
            op->doc_done(loop, op->arg, HUB_SERVER_ERROR, NULL, NULL, "out of memory");
        free(text);
    }
    op_free(op);
}

/* Reports a failure found before anything changed, through the caller's
 * loop so `done` never runs inside the call that started the write. */
static void op_fail_early(twin_op *op, hub_status st, const char *reason)
{
    op->status = st;
    if (reason != op->reason)
        snprintf(op->reason, sizeof op->reason, "%s", reason);
    /* not logged here: the caller's layer logs the answer it sends, once */
    if (op->loop)
        net_loop_post(op->loop, op_report, op);
    else
        op_report(NULL, op);
}

static twin_op *op_new(hub_twins *t, const char *device_id, const char *module_id,
                       net_loop *loop, void *arg)
{
    twin_op *op = calloc(1, sizeof *op);
    if (!op) {
        log_error("twins: out of memory");
        abort();
    }
    op->t = t;
    op->loop = loop;
    op->arg = arg;
    copy_id(op->device_id, sizeof op->device_id, device_id);
    copy_id(op->module_id, sizeof op->module_id, module_id);
    return op;
}

/* ---- the write path --------------------------------------------------------- */

/* Settles the entry after write seq succeeded or failed. Lock held. */
static void settle(hub_twins *t, twin_op *op, bool ok)
{
    twin_entry *e = op->e;
    uint64_t seq = op->write_seq;
    if (ok && seq > e->durable_seq) {
        twin_doc_ref(op->now);
        twin_doc_unref(e->durable);
        e->durable = op->now;
        e->durable_seq = seq;
        if (e->write_seq < seq) /* an older failure reverted what readers see */
            show(e, e->durable, seq);
    } else if (!ok && e->write_seq == seq) {
        show(e, e->durable, e->durable_seq);
    }
    if (--e->pending == 0 && e->deleted)
        free_entry_locked(t, e);
}

static void op_stored(net_loop *loop, void *arg, store_status st, const char *err)
{
    twin_op *op = arg;
    hub_twins *t = op->t;
    bool ok = st == STORE_OK;
    pthread_mutex_lock(&t->lock);
    settle(t, op, ok);
    pthread_mutex_unlock(&t->lock);
    if (!ok) {
        log_warn("twins: storing the twin of %s%s%s failed: %s", op->device_id,
                 op->module_id[0] ? "/" : "", op->module_id, err && *err ? err : "?");
        op->status = st == STORE_NO_SPACE ? HUB_SERVER_BUSY : HUB_SERVER_ERROR;
        snprintf(op->reason, sizeof op->reason, "store: %s",
                 err && *err ? err : store_status_name(st));
    } else if (op->desired_patch && t->desired_fn) {
        t->desired_fn(t->desired_arg, op->device_id, op->module_id,
                      (uint64_t)op->now->desired_version, op->desired_patch);
    }
    op_report(loop, op);
}

/* Publishes draft as entry e's document and queues its store write.
 * Lock held; takes over the caller's reference to draft. */
static bool publish_locked(hub_twins *t, twin_op *op, twin_entry *e, twin_doc *draft)
{
    char *text = twin_doc_service_text(draft, e->device_id, e->module_id, e->stored_extra, NULL);
    if (!text) {
        twin_doc_unref(draft);
        return false;
    }
    op->e = e;
    op->now = draft;
    op->write_seq = ++t->next_write;
    e->pending++;
    show(e, draft, op->write_seq);
    store_twin row = {
        .device_id = e->device_id,
        .module_id = e->module_id,
        .json = text,
        .etag = draft->etag,
        .version = draft->version,
        .desired_version = draft->desired_version,
        .reported_version = draft->reported_version,
    };
    store_twin_put(t->st, &row, op->loop, op_stored, op);
    free(text);
    return true;
}

/* What one write changes; the sections left NULL stay as they are. */
typedef struct twin_change {
    const json_t *tags;
    const json_t *desired;
    const json_t *reported;
    bool replace;          /* tags and desired are replacements */
    int64_t if_version;    /* reported $version precondition; < 0: none */
    const char *if_match;  /* etag precondition; NULL or "*": none */
} twin_change;

/* "*", an etag, or a quoted etag against the current one. */
static bool etag_matches(const char *if_match, const char *etag)
{
    if (!if_match || strcmp(if_match, "*") == 0)
        return true;
    size_t n = strlen(if_match);
    if (n >= 2 && if_match[0] == '"' && if_match[n - 1] == '"')
        return strlen(etag) == n - 2 && strncmp(if_match + 1, etag, n - 2) == 0;
    return strcmp(if_match, etag) == 0;
}

/* Checks preconditions against base and builds the changed draft. No lock
 * needed: base is immutable and the caller holds a reference to it. */
static hub_status build_draft(hub_twins *t, const twin_doc *base, const twin_change *c,
                              twin_doc **out, char *why, size_t whylen)
{
    if (!etag_matches(c->if_match, base->etag)) {
        snprintf(why, whylen, "etag does not match");
        return HUB_PRECONDITION_FAILED;
    }
    if (c->if_version >= 0 && c->if_version != base->reported_version) {
        snprintf(why, whylen, "reported $version is %lld, not %lld",
                 (long long)base->reported_version, (long long)c->if_version);
        return HUB_PRECONDITION_FAILED;
    }
    twin_doc *draft = twin_doc_copy(base);
    if (!draft) {
        snprintf(why, whylen, "out of memory");
        return HUB_SERVER_ERROR;
    }
    int64_t now = (int64_t)time_wall_ms();
    hub_status st = HUB_OK;
    if (c->tags)
        st = twin_doc_apply(draft, TWIN_TAGS, c->tags, c->replace, now, why, whylen);
    if (st == HUB_OK && c->desired)
        st = twin_doc_apply(draft, TWIN_DESIRED, c->desired, c->replace, now, why, whylen);
    if (st == HUB_OK && c->reported)
        st = twin_doc_apply(draft, TWIN_REPORTED, c->reported, false, now, why, whylen);
    if (st == HUB_OK)
        twin_doc_bump(draft, &t->etags);
    if (st != HUB_OK) {
        twin_doc_unref(draft);
        return st;
    }
    *out = draft;
    return HUB_OK;
}

/* Under the lock: publishes draft (publish_locked) if base is still the
 * twin's current document. Otherwise drops draft and hands the caller, in
 * *newer, a reference to the document that replaced base, to build on
 * again; when the twin is gone, *newer stays NULL and the answer is
 * HUB_NOT_FOUND. */
static hub_status publish_if_current(hub_twins *t, twin_op *op, const twin_doc *base,
                                     twin_doc *draft, twin_doc **newer)
{
    hub_status st = HUB_OK;
    pthread_mutex_lock(&t->lock);
    twin_entry *e = live_entry(t, op->device_id, op->module_id);
    if (e && e->doc == base) { /* the caller's reference keeps base's address unique */
        if (!publish_locked(t, op, e, draft)) {
            st = HUB_SERVER_ERROR;
            snprintf(op->reason, sizeof op->reason, "out of memory");
        }
    } else {
        twin_doc_unref(draft);
        *newer = e ? twin_doc_ref(e->doc) : NULL;
        st = e ? HUB_OK : HUB_NOT_FOUND;
    }
    pthread_mutex_unlock(&t->lock);
    return st;
}

/* Runs one write: patch a draft of the twin's current document outside
 * the lock, then publish it if no other write came first, or build again
 * on the one that did. Failures before publishing are reported early. */
static void run_write(hub_twins *t, twin_op *op, const twin_change *c)
{
    twin_doc *base = current_doc(t, op->device_id, op->module_id);
    hub_status st = HUB_NOT_FOUND;
    while (base) {
        twin_doc *draft = NULL, *newer = NULL;
        st = build_draft(t, base, c, &draft, op->reason, sizeof op->reason);
        if (st == HUB_OK)
            st = publish_if_current(t, op, base, draft, &newer);
        twin_doc_unref(base);
        base = newer;
    }
    if (st == HUB_NOT_FOUND)
        snprintf(op->reason, sizeof op->reason, "no such device or module");
    if (st != HUB_OK)
        op_fail_early(op, st, op->reason);
}

/* Parses a request body into a JSON value; NULL with a reason. "\u0000"
 * is allowed in string values, as in any JSON (keys refuse control
 * characters anyway, §7); every view renders strings by length. */
static json_t *parse_body(const char *body, size_t len, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *j = json_load_untrusted(body, len, JSON_ALLOW_NUL, &jerr);
    if (!j)
        snprintf(why, whylen, "invalid JSON: %.120s", jerr.text);
    return j;
}

void twins_patch_reported(hub_twins *t, const char *device_id, const char *module_id,
                          const char *patch, size_t patch_len, int64_t if_version,
                          net_loop *loop, twins_version_fn done, void *arg)
{
    twin_op *op = op_new(t, device_id, module_id, loop, arg);
    op->version_done = done;
    json_t *j = parse_body(patch, patch_len, op->reason, sizeof op->reason);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        op_fail_early(op, HUB_BAD_REQUEST, j ? "the patch must be a JSON object" : op->reason);
        return;
    }
    twin_change c = {.reported = j, .if_version = if_version};
    run_write(t, op, &c);
    json_decref(j);
}

/* --- service updates --- */

/* A copy of a desired section sent back by a client, without the
 * server-owned "$metadata" and "$version" at its root (a client that read
 * the twin, changed it and sent it back). */
static json_t *strip_server_fields(const json_t *desired)
{
    json_t *copy = json_copy((json_t *)desired);
    if (copy) {
        json_object_del(copy, "$metadata");
        json_object_del(copy, "$version");
    }
    return copy;
}

/* Takes "tags" and "properties.desired" out of a service body. For a
 * merge, an absent part is left alone; for a replace, it becomes {}.
 * "properties.reported" is read-only for the service and ignored.
 * Returns HUB_OK or HUB_BAD_REQUEST with a reason. */
static hub_status service_parts(const json_t *body, bool replace, json_t **tags,
                                json_t **desired, char *why, size_t whylen)
{
    *tags = *desired = NULL;
    if (!json_is_object(body)) {
        snprintf(why, whylen, "the body must be a JSON object");
        return HUB_BAD_REQUEST;
    }
    json_t *tg = json_object_get(body, "tags");
    json_t *props = json_object_get(body, "properties");
    json_t *ds = json_object_get(props, "desired");
    if ((tg && !json_is_object(tg)) || (props && !json_is_object(props)) ||
        (ds && !json_is_object(ds))) {
        snprintf(why, whylen, "tags, properties and properties.desired must be JSON objects");
        return HUB_BAD_REQUEST;
    }
    if (!replace && !tg && !ds) {
        snprintf(why, whylen, "the patch holds neither tags nor properties.desired");
        return HUB_BAD_REQUEST;
    }
    *tags = tg ? json_incref(tg) : replace ? json_object() : NULL;
    *desired = ds ? strip_server_fields(ds) : replace ? json_object() : NULL;
    return HUB_OK;
}

void twins_service_update(hub_twins *t, const char *device_id, const char *module_id,
                          const char *body, size_t body_len, bool replace,
                          const char *if_match, net_loop *loop, twins_doc_fn done, void *arg)
{
    twin_op *op = op_new(t, device_id, module_id, loop, arg);
    op->doc_done = done;
    json_t *tags = NULL, *desired = NULL;
    json_t *j = parse_body(body, body_len, op->reason, sizeof op->reason);
    hub_status st = j ? service_parts(j, replace, &tags, &desired, op->reason, sizeof op->reason)
                      : HUB_BAD_REQUEST;
    if (st == HUB_OK && desired) {
        op->desired_patch = json_dumps(desired, JSON_COMPACT);
        if (!op->desired_patch) {
            st = HUB_SERVER_ERROR;
            snprintf(op->reason, sizeof op->reason, "out of memory");
        }
    }
    if (st == HUB_OK) {
        twin_change c = {.tags = tags, .desired = desired, .replace = replace, .if_version = -1,
                         .if_match = if_match};
        run_write(t, op, &c);
    } else {
        op_fail_early(op, st, op->reason);
    }
    json_decref(tags);
    json_decref(desired);
    json_decref(j);
}

void twins_set_desired_listener(hub_twins *t, twins_desired_fn fn, void *arg)
{
    t->desired_fn = fn;
    t->desired_arg = arg;
}

/* ---- reads ------------------------------------------------------------------ */

char *twins_device_view(hub_twins *t, const char *device_id, const char *module_id,
                        hub_status *st)
{
    twin_doc *doc = current_doc(t, device_id, module_id);
    char *text = doc ? twin_doc_device_text(doc, NULL) : NULL;
    *st = text ? HUB_OK : doc ? HUB_SERVER_ERROR : HUB_NOT_FOUND;
    twin_doc_unref(doc);
    return text;
}

char *twins_service_view(hub_twins *t, const char *device_id, const char *module_id,
                         char etag_out[HUB_ETAG_MAX + 1], hub_status *st)
{
    char *runtime = runtime_text(t->reg, device_id, module_id);
    twin_doc *doc = current_doc(t, device_id, module_id);
    char *text = doc && runtime ? twin_doc_service_text(doc, device_id, module_id, runtime, NULL)
                                : NULL;
    if (doc && etag_out)
        memcpy(etag_out, doc->etag, HUB_ETAG_MAX + 1);
    free(runtime);
    *st = text ? HUB_OK : doc ? HUB_SERVER_ERROR : HUB_NOT_FOUND;
    twin_doc_unref(doc);
    return text;
}

/* ---- identities ---------------------------------------------------------------- */

/* Drops the twins of every module of a device: collected first, because
 * the map must not change while it is walked. Lock held. */
static void drop_modules_locked(hub_twins *t, const char *device_id)
{
    size_t n = 0, pos = 0;
    void *v;
    twin_entry **found = malloc((t->map.count ? t->map.count : 1) * sizeof *found);
    if (!found) {
        log_error("twins: out of memory dropping the module twins of %s", device_id);
        return;
    }
    while (hmap_next(&t->map, &pos, &v)) {
        twin_entry *m = v;
        if (!m->deleted && m->module_id[0] && strcmp(m->device_id, device_id) == 0)
            found[n++] = m;
    }
    for (size_t i = 0; i < n; i++)
        drop_entry_locked(t, found[i]);
    free(found);
}

void twins_identity_changed(hub_twins *t, const hub_identity *old, const hub_identity *now)
{
    pthread_mutex_lock(&t->lock);
    if (now && !old) {
        if (!add_entry_locked(t, now))
            log_error("twins: out of memory creating the twin of %s", now->device_id);
    } else if (old && !now) {
        twin_entry *e = live_entry(t, old->device_id, old->module_id);
        if (e)
            drop_entry_locked(t, e);
        if (!old->module_id[0])
            drop_modules_locked(t, old->device_id);
    }
    pthread_mutex_unlock(&t->lock);
}

/* ---- open / free ------------------------------------------------------------------ */

/* Start-up: one stored twin replaces the empty one of its identity, unless
 * the identity is gone or is a newer one with the same id. */
static void load_twin(void *arg, const store_twin *row)
{
    hub_twins *t = arg;
    char why[TWIN_WHY_MAX];
    json_error_t jerr;
    json_t *j = json_loads(row->json, JSON_ALLOW_NUL, &jerr);
    const char *gen = json_string_value(json_object_get(j, "generationId"));
    pthread_mutex_lock(&t->lock);
    twin_entry *e = live_entry(t, row->device_id, row->module_id);
    twin_doc *doc = NULL;
    if (!e || !gen || strcmp(gen, e->generation_id) != 0)
        log_info("twins: ignoring a stored twin of %s%s%s (identity gone or re-created)",
                 row->device_id, row->module_id[0] ? "/" : "", row->module_id);
    else if (!(doc = twin_doc_from_json(j, why, sizeof why)))
        log_warn("twins: stored twin of %s%s%s unreadable: %s", row->device_id,
                 row->module_id[0] ? "/" : "", row->module_id, why);
    else {
        show(e, doc, e->durable_seq);
        twin_doc_unref(e->durable);
        e->durable = doc; /* takes the reference from twin_doc_from_json */
    }
    pthread_mutex_unlock(&t->lock);
    json_decref(j);
}

/* An empty twin for every identity of the registry. */
static bool add_registry_identities(hub_twins *t)
{
    size_t ndev = 0;
    hub_identity *devs = registry_list(t->reg, NULL, 0, &ndev);
    bool ok = devs != NULL;
    for (size_t i = 0; ok && i < ndev; i++) {
        size_t nmod = 0;
        hub_identity *mods = registry_list(t->reg, devs[i].device_id, 0, &nmod);
        ok = mods != NULL && add_entry_locked(t, &devs[i]);
        for (size_t k = 0; ok && k < nmod; k++)
            ok = add_entry_locked(t, &mods[k]);
        free(mods);
    }
    free(devs);
    return ok;
}

hub_twins *twins_open(struct store *st, hub_registry *reg, char *err, size_t errlen)
{
    hub_twins *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->st = st;
    t->reg = reg;
    if (!twin_etags_init(&t->etags)) {
        snprintf(err, errlen, "random generator failed");
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->lock, NULL);
    hmap_init(&t->map, entry_key, NULL);
    pthread_mutex_lock(&t->lock);
    bool ok = add_registry_identities(t);
    pthread_mutex_unlock(&t->lock);
    if (!ok) {
        snprintf(err, errlen, "out of memory creating the twins");
        twins_free(t);
        return NULL;
    }
    if (!store_load_twins(st, load_twin, t)) {
        snprintf(err, errlen, "loading the twins from the store failed");
        twins_free(t);
        return NULL;
    }
    log_info("twins: %zu twins", t->map.count);
    return t;
}

void twins_free(hub_twins *t)
{
    if (!t)
        return;
    size_t pos = 0;
    void *v;
    while (hmap_next(&t->map, &pos, &v)) {
        twin_entry *e = v;
        twin_doc_unref(e->doc);
        twin_doc_unref(e->durable);
        free(e->stored_extra);
        free(e);
    }
    hmap_free(&t->map);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/*
 * broker/retained.c — the retained-message store of topic_tree.h.
 *
 * A trie keyed by topic level, each node holding at most one message (the
 * store's reference). A node's children are an array plus, once there are
 * more than a few, an index of array positions keyed by the level's hash
 * (pos_index.h, as in topic_tree.c). Each child knows its position in its
 * parent's array, which lets '#' enumerate a subtree iteratively with no
 * stack and no allocation.
 */
#include "broker/topic_tree.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "broker/pos_index.h"

typedef struct rs_node rs_node;
struct rs_node {
    rs_node *parent;
    uint32_t pidx; /* position in parent->kids */
    uint32_t hash;
    rs_node **kids;
    uint32_t nkids, capkids;
    pos_index kix;
    broker_msg *msg;
    uint32_t len;
    uint8_t level[];
};

struct retain_store {
    pthread_rwlock_t lock;
    size_t count;
    rs_node *root;
};

/* ---- children ------------------------------------------------------------- */

static uint32_t kid_hash(const void *ctx, uint32_t pos)
{
    return ((const rs_node *)ctx)->kids[pos]->hash;
}

static rs_node *kid_find(const rs_node *n, const uint8_t *level, uint32_t len)
{
    if (n->kix.slot) {
        uint32_t h = pos_index_hash_level(level, len);
        for (uint32_t i = pos_index_first(&n->kix, h); n->kix.slot[i];
             i = pos_index_next(&n->kix, i)) {
            rs_node *k = n->kids[n->kix.slot[i] - 1];
            if (k->hash == h && k->len == len && memcmp(k->level, level, len) == 0)
                return k;
        }
        return NULL;
    }
    for (uint32_t i = 0; i < n->nkids; i++) {
        rs_node *k = n->kids[i];
        if (k->len == len && memcmp(k->level, level, len) == 0)
            return k;
    }
    return NULL;
}

static bool kid_add(rs_node *n, rs_node *k)
{
    if (n->nkids == n->capkids) {
        uint32_t cap = n->capkids ? n->capkids * 2 : 2;
        rs_node **v = realloc(n->kids, cap * sizeof *v);
        if (!v)
            return false;
        n->kids = v;
        n->capkids = cap;
    }
    uint32_t pos = n->nkids;
    n->kids[pos] = k;
    if (!pos_index_add(&n->kix, pos, k->hash, kid_hash, n))
        return false;
    k->pidx = pos;
    n->nkids++;
    return true;
}

static void kid_del(rs_node *n, rs_node *k)
{
    uint32_t pos = k->pidx, last = n->nkids - 1;
    pos_index_remove(&n->kix, n->nkids, pos, k->hash, n->kids[last]->hash, kid_hash, n);
    if (pos != last) {
        n->kids[pos] = n->kids[last];
        n->kids[pos]->pidx = pos;
    }
    if (--n->nkids == 0) { /* nodes that stay (the root) give memory back */
        free(n->kids);
        pos_index_free(&n->kix);
        n->kids = NULL;
        n->capkids = 0;
    }
}

static rs_node *node_new(rs_node *parent, const uint8_t *level, uint32_t len)
{
    rs_node *n = calloc(1, sizeof *n + len);
    if (!n)
        return NULL;
    n->parent = parent;
    n->len = len;
    if (len)
        memcpy(n->level, level, len);
    n->hash = pos_index_hash_level(level, len);
    return n;
}

static void node_free(rs_node *n)
{
    free(n->kids);
    pos_index_free(&n->kix);
    free(n);
}

static void prune(rs_node *root, rs_node *n)
{
    while (n != root && !n->msg && !n->nkids) {
        rs_node *p = n->parent;
        kid_del(p, n);
        node_free(n);
        n = p;
    }
}

/* ---- levels --------------------------------------------------------------- */

typedef struct lvl_iter {
    const uint8_t *p, *end;
    bool done;
} lvl_iter;

static bool lvl_next(lvl_iter *it, const uint8_t **s, uint32_t *len)
{
    if (it->done)
        return false;
    const uint8_t *slash =
        it->p < it->end ? memchr(it->p, '/', (size_t)(it->end - it->p)) : NULL;
    *s = it->p;
    if (slash) {
        *len = (uint32_t)(slash - it->p);
        it->p = slash + 1;
    } else {
        *len = (uint32_t)(it->end - it->p);
        it->done = true;
    }
    return true;
}

/* ---- public --------------------------------------------------------------- */

void broker_msg_vec_free(broker_msg_vec *v)
{
    free(v->items);
    v->items = NULL;
    v->len = v->cap = 0;
}

retain_store *retain_store_new(void)
{
    retain_store *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->root = node_new(NULL, NULL, 0);
    if (!r->root || pthread_rwlock_init(&r->lock, NULL) != 0) {
        free(r->root);
        free(r);
        return NULL;
    }
    return r;
}

void retain_store_free(retain_store *r)
{
    if (!r)
        return;
    rs_node *n = r->root;
    while (n) {
        if (n->nkids) {
            n = n->kids[--n->nkids];
        } else {
            rs_node *p = n->parent;
            broker_msg_unref(n->msg);
            node_free(n);
            n = p;
        }
    }
    pthread_rwlock_destroy(&r->lock);
    free(r);
}

void retain_store_set(retain_store *r, broker_msg *msg)
{
    bool remove = msg->payload.len == 0;
    broker_msg *old = NULL;
    lvl_iter it = {msg->topic.p, msg->topic.p + msg->topic.len, false};
    const uint8_t *s;
    uint32_t len;

    pthread_rwlock_wrlock(&r->lock);
    rs_node *n = r->root;
    while (n && lvl_next(&it, &s, &len)) {
        rs_node *k = kid_find(n, s, len);
        if (!k && !remove) {
            k = node_new(n, s, len);
            if (k && !kid_add(n, k)) {
                node_free(k);
                k = NULL;
            }
            if (!k) /* allocation failure: the message is not retained */
                prune(r->root, n);
        }
        n = k;
    }
    if (n) {
        old = n->msg;
        if (remove) {
            n->msg = NULL;
            if (old)
                r->count--;
            prune(r->root, n);
        } else {
            n->msg = broker_msg_ref(msg);
            if (!old)
                r->count++;
        }
    }
    pthread_rwlock_unlock(&r->lock);
    broker_msg_unref(old);
}

static bool push(broker_msg_vec *out, broker_msg *m)
{
    if (out->len == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 16;
        broker_msg **v = realloc(out->items, cap * sizeof *v);
        if (!v)
            return false;
        out->items = v;
        out->cap = cap;
    }
    out->items[out->len++] = broker_msg_ref(m);
    return true;
}

static bool is_dollar(const rs_node *n)
{
    return n->len > 0 && n->level[0] == '$';
}

/* Every message in the subtree of `top` (itself included), pre-order,
 * iteratively through parent links and positions. */
static bool push_subtree(rs_node *top, broker_msg_vec *out)
{
    rs_node *n = top;
    for (;;) {
        if (n->msg && !push(out, n->msg))
            return false;
        if (n->nkids) {
            n = n->kids[0];
            continue;
        }
        for (;;) {
            if (n == top)
                return true;
            rs_node *p = n->parent;
            uint32_t next = n->pidx + 1;
            if (next < p->nkids) {
                n = p->kids[next];
                break;
            }
            n = p;
        }
    }
}

/* Matches the filter levels left in `it` from node n; `at_root` applies the
 * '$' rule to wildcards on the first level. */
static bool match_from(rs_node *n, lvl_iter it, bool at_root, broker_msg_vec *out)
{
    const uint8_t *s;
    uint32_t len;
    for (;;) {
        if (!lvl_next(&it, &s, &len))
            return n->msg ? push(out, n->msg) : true;
        if (len == 1 && s[0] == '#') {
            if (!at_root)
                return push_subtree(n, out);
            for (uint32_t i = 0; i < n->nkids; i++)
                if (!is_dollar(n->kids[i]) && !push_subtree(n->kids[i], out))
                    return false;
            return true;
        }
        if (len == 1 && s[0] == '+') {
            for (uint32_t i = 0; i < n->nkids; i++) {
                if (at_root && is_dollar(n->kids[i]))
                    continue;
                if (!match_from(n->kids[i], it, false, out))
                    return false;
            }
            return true;
        }
        n = kid_find(n, s, len);
        if (!n)
            return true;
        at_root = false;
    }
}

bool retain_store_match(retain_store *r, mqtt_bytes filter, broker_msg_vec *out)
{
    lvl_iter it = {filter.p, filter.p + filter.len, false};
    pthread_rwlock_rdlock(&r->lock);
    bool ok = match_from(r->root, it, true, out);
    pthread_rwlock_unlock(&r->lock);
    return ok;
}

size_t retain_store_count(retain_store *r)
{
    pthread_rwlock_rdlock(&r->lock);
    size_t n = r->count;
    pthread_rwlock_unlock(&r->lock);
    return n;
}

/*
 * broker/retained.c — the retained-message store of topic_tree.h.
 *
 * A trie keyed by topic level (trie.h), each node holding at most one
 * message (the store's reference). '#' enumerates a subtree iteratively
 * through parent links and child positions, with no stack and no
 * allocation.
 */
#include "broker/topic_tree.h"

#include <pthread.h>
#include <stdlib.h>

#include "broker/trie.h"

typedef struct rs_node {
    trie_head head; /* first: a trie_head * converts to its node */
    broker_msg *msg;
} rs_node;

struct retain_store {
    pthread_rwlock_t lock;
    size_t count;
    rs_node *root;
};

/* ---- nodes ---------------------------------------------------------------- */

static rs_node *kid(const rs_node *n, uint32_t i)
{
    return (rs_node *)n->head.kids.v[i];
}

static uint32_t nkids(const rs_node *n)
{
    return n->head.kids.n;
}

static rs_node *parent_of(const rs_node *n)
{
    return (rs_node *)n->head.parent;
}

static rs_node *kid_find(const rs_node *n, const uint8_t *level, uint32_t len)
{
    return (rs_node *)trie_kid_find(&n->head, sizeof(rs_node), level, len);
}

static rs_node *node_new(rs_node *parent, const uint8_t *level, uint32_t len)
{
    return trie_node_new(sizeof(rs_node), parent ? &parent->head : NULL, level, len);
}

static void prune(rs_node *root, rs_node *n)
{
    while (n != root && !n->msg && !nkids(n)) {
        rs_node *p = parent_of(n);
        trie_kid_remove(&p->head, &n->head);
        trie_node_free(&n->head);
        n = p;
    }
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
        if (nkids(n)) {
            n = kid(n, --n->head.kids.n);
        } else {
            rs_node *p = parent_of(n);
            broker_msg_unref(n->msg);
            trie_node_free(&n->head);
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
    trie_levels it = trie_levels_of(msg->topic.p, msg->topic.len);
    const uint8_t *s;
    uint32_t len;

    pthread_rwlock_wrlock(&r->lock);
    rs_node *n = r->root;
    while (n && trie_levels_next(&it, &s, &len)) {
        rs_node *k = kid_find(n, s, len);
        if (!k && !remove) {
            k = node_new(n, s, len);
            if (k && !trie_kid_add(&n->head, &k->head)) {
                trie_node_free(&k->head);
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
    return n->head.len > 0 && trie_level(&n->head, sizeof *n)[0] == '$';
}

/* Every message in the subtree of `top` (itself included), pre-order,
 * iteratively through parent links and positions. */
static bool push_subtree(rs_node *top, broker_msg_vec *out)
{
    rs_node *n = top;
    for (;;) {
        if (n->msg && !push(out, n->msg))
            return false;
        if (nkids(n)) {
            n = kid(n, 0);
            continue;
        }
        for (;;) {
            if (n == top)
                return true;
            rs_node *p = parent_of(n);
            uint32_t next = n->head.pidx + 1;
            if (next < nkids(p)) {
                n = kid(p, next);
                break;
            }
            n = p;
        }
    }
}

/* Matches the filter levels left in `it` from node n; `at_root` applies the
 * '$' rule to wildcards on the first level. */
static bool match_from(rs_node *n, trie_levels it, bool at_root, broker_msg_vec *out)
{
    const uint8_t *s;
    uint32_t len;
    for (;;) {
        if (!trie_levels_next(&it, &s, &len))
            return n->msg ? push(out, n->msg) : true;
        if (len == 1 && s[0] == '#') {
            if (!at_root)
                return push_subtree(n, out);
            for (uint32_t i = 0; i < nkids(n); i++)
                if (!is_dollar(kid(n, i)) && !push_subtree(kid(n, i), out))
                    return false;
            return true;
        }
        if (len == 1 && s[0] == '+') {
            for (uint32_t i = 0; i < nkids(n); i++) {
                if (at_root && is_dollar(kid(n, i)))
                    continue;
                if (!match_from(kid(n, i), it, false, out))
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
    trie_levels it = trie_levels_of(filter.p, filter.len);
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

/*
 * broker/topic_tree.c — the subscription trie of topic_tree.h.
 *
 * A node is one filter level. Its literal children are a trie.h array,
 * indexed by the level's hash once there are more than a few; the '+' and
 * '#' children hang off separate pointers so matching never searches for
 * them.
 * Plain subscriptions of a node are an array of (subscriber, options,
 * sub_id), indexed the same way by subscriber pointer once the array grows,
 * so a popular filter with many thousands of subscribers stays O(1) to
 * subscribe to and to leave. Shared groups are an array of groups, each
 * with its members and an atomic round-robin counter.
 *
 * Matching walks the topic's levels once, allocating nothing (only the
 * caller's output vector may grow). Where a node has both a literal child
 * and a '+' child for the level, the '+' branch is explored recursively and
 * the literal one iteratively, so the recursion depth is bounded by the
 * number of such forks on one path. Subscribe, unsubscribe and free are
 * iterative.
 */
#include "broker/topic_tree.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "broker/pos_index.h"
#include "broker/trie.h"

static uint32_t hash_ptr(const void *p)
{
    uint64_t v = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(v >> 32);
}

/* ---- nodes ---------------------------------------------------------------- */

typedef struct tt_sub {
    void *subscriber;
    uint32_t sub_id;
    uint8_t options;
} tt_sub;

typedef struct tt_group {
    atomic_uint rr;
    uint32_t n, cap;
    tt_sub *m;
    uint32_t name_len;
    uint8_t name[];
} tt_group;

typedef struct tt_node tt_node;
struct tt_node {
    trie_head head; /* first: a trie_head * converts to its node */
    tt_node *plus, *hash_child;

    tt_sub *subs;
    uint32_t nsubs, capsubs;
    pos_index six;

    tt_group **groups;
    uint32_t ngroups, capgroups;
};

struct topic_tree {
    pthread_rwlock_t lock;
    topic_tree_ops ops;
    size_t count;
    tt_node *root;
};

static uint32_t sub_hash(const void *ctx, uint32_t pos)
{
    return hash_ptr(((const tt_node *)ctx)->subs[pos].subscriber);
}

static tt_node *node_new(tt_node *parent, const uint8_t *level, uint32_t len)
{
    return trie_node_new(sizeof(tt_node), parent ? &parent->head : NULL, level, len);
}

static tt_node *parent_of(const tt_node *n)
{
    return (tt_node *)n->head.parent;
}

static void node_free(tt_node *n)
{
    for (uint32_t i = 0; i < n->ngroups; i++) {
        free(n->groups[i]->m);
        free(n->groups[i]);
    }
    free(n->groups);
    free(n->subs);
    pos_index_free(&n->six);
    trie_node_free(&n->head);
}

static bool node_empty(const tt_node *n)
{
    return !n->nsubs && !n->ngroups && !n->head.kids.n && !n->plus && !n->hash_child;
}

static tt_node *kid_find(const tt_node *n, const uint8_t *level, uint32_t len)
{
    return (tt_node *)trie_kid_find(&n->head, sizeof(tt_node), level, len);
}

/* Frees `n` and its ancestors while they are empty (never the root). */
static void prune(tt_node *root, tt_node *n)
{
    while (n != root && node_empty(n)) {
        tt_node *p = parent_of(n);
        if (p->plus == n)
            p->plus = NULL;
        else if (p->hash_child == n)
            p->hash_child = NULL;
        else
            trie_kid_remove(&p->head, &n->head);
        node_free(n);
        n = p;
    }
}

/* ---- levels --------------------------------------------------------------- */

/* Finds (create: or creates) the node of a filter. On allocation failure
 * returns NULL, having pruned what it created. */
static tt_node *walk(tt_node *root, mqtt_bytes filter, bool create)
{
    tt_node *n = root;
    trie_levels it = trie_levels_of(filter.p, filter.len);
    const uint8_t *s;
    uint32_t len;
    while (trie_levels_next(&it, &s, &len)) {
        tt_node **slot = NULL, *k;
        if (len == 1 && s[0] == '+')
            slot = &n->plus;
        else if (len == 1 && s[0] == '#')
            slot = &n->hash_child;
        k = slot ? *slot : kid_find(n, s, len);
        if (!k) {
            if (!create)
                return NULL;
            k = node_new(n, s, len);
            if (!k) {
                prune(root, n);
                return NULL;
            }
            if (slot) {
                *slot = k;
            } else if (!trie_kid_add(&n->head, &k->head)) {
                node_free(k);
                prune(root, n);
                return NULL;
            }
        }
        n = k;
    }
    return n;
}

/* ---- public --------------------------------------------------------------- */

void topic_match_vec_free(topic_match_vec *v)
{
    free(v->items);
    v->items = NULL;
    v->len = v->cap = 0;
}

topic_tree *topic_tree_new(const topic_tree_ops *ops)
{
    topic_tree *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (ops)
        t->ops = *ops;
    t->root = node_new(NULL, NULL, 0);
    if (!t->root) {
        free(t);
        return NULL;
    }
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
#ifdef __GLIBC__
    /* Publishing holds the lock shared almost all the time; without this a
     * steady stream of publishes could starve SUBSCRIBE. */
    pthread_rwlockattr_setkind_np(&attr,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    int rc = pthread_rwlock_init(&t->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (rc != 0) {
        node_free(t->root);
        free(t);
        return NULL;
    }
    return t;
}

void topic_tree_free(topic_tree *t)
{
    if (!t)
        return;
    /* Iterative post-order: descend to a childless node, free it, go up. */
    tt_node *n = t->root;
    while (n) {
        if (n->head.kids.n) {
            n = (tt_node *)n->head.kids.v[--n->head.kids.n];
        } else if (n->plus) {
            tt_node *k = n->plus;
            n->plus = NULL;
            n = k;
        } else if (n->hash_child) {
            tt_node *k = n->hash_child;
            n->hash_child = NULL;
            n = k;
        } else {
            tt_node *p = parent_of(n);
            node_free(n);
            n = p;
        }
    }
    pthread_rwlock_destroy(&t->lock);
    free(t);
}

static bool subs_add(tt_node *n, void *subscriber, uint8_t options, uint32_t sub_id)
{
    if (n->nsubs == n->capsubs) {
        uint32_t cap = n->capsubs ? n->capsubs * 2 : 2;
        tt_sub *v = realloc(n->subs, cap * sizeof *v);
        if (!v)
            return false;
        n->subs = v;
        n->capsubs = cap;
    }
    n->subs[n->nsubs] = (tt_sub){subscriber, sub_id, options};
    if (!pos_index_add(&n->six, n->nsubs, hash_ptr(subscriber), sub_hash, n))
        return false;
    n->nsubs++;
    return true;
}

static tt_sub *subs_find(const tt_node *n, const void *subscriber, uint32_t *pos)
{
    if (n->six.slot) {
        uint32_t h = hash_ptr(subscriber);
        for (uint32_t i = pos_index_first(&n->six, h); n->six.slot[i];
             i = pos_index_next(&n->six, i)) {
            uint32_t p = n->six.slot[i] - 1;
            if (n->subs[p].subscriber == subscriber) {
                *pos = p;
                return &n->subs[p];
            }
        }
        return NULL;
    }
    for (uint32_t i = 0; i < n->nsubs; i++)
        if (n->subs[i].subscriber == subscriber) {
            *pos = i;
            return &n->subs[i];
        }
    return NULL;
}

static void subs_del(tt_node *n, uint32_t pos)
{
    uint32_t last = n->nsubs - 1;
    pos_index_remove(&n->six, n->nsubs, pos, hash_ptr(n->subs[pos].subscriber),
              hash_ptr(n->subs[last].subscriber), sub_hash, n);
    n->subs[pos] = n->subs[last];
    if (--n->nsubs == 0) {
        free(n->subs);
        pos_index_free(&n->six);
        n->subs = NULL;
        n->capsubs = 0;
    }
}

static tt_group *group_find(const tt_node *n, mqtt_bytes name, uint32_t *pos)
{
    for (uint32_t i = 0; i < n->ngroups; i++) {
        tt_group *g = n->groups[i];
        if (g->name_len == name.len && memcmp(g->name, name.p, name.len) == 0) {
            *pos = i;
            return g;
        }
    }
    return NULL;
}

static tt_sub *member_find(const tt_group *g, const void *subscriber, uint32_t *pos)
{
    for (uint32_t i = 0; i < g->n; i++)
        if (g->m[i].subscriber == subscriber) {
            *pos = i;
            return &g->m[i];
        }
    return NULL;
}

static bool group_subscribe(tt_node *n, void *subscriber, mqtt_bytes name,
                            uint8_t options, uint32_t sub_id, bool *existed)
{
    uint32_t pos;
    tt_group *g = group_find(n, name, &pos);
    if (g) {
        tt_sub *s = member_find(g, subscriber, &pos);
        if (s) {
            s->options = options;
            s->sub_id = sub_id;
            *existed = true;
            return true;
        }
    } else {
        if (n->ngroups == n->capgroups) {
            uint32_t cap = n->capgroups ? n->capgroups * 2 : 1;
            tt_group **v = realloc(n->groups, cap * sizeof *v);
            if (!v)
                return false;
            n->groups = v;
            n->capgroups = cap;
        }
        g = calloc(1, sizeof *g + name.len);
        if (!g)
            return false;
        atomic_init(&g->rr, 0);
        g->name_len = name.len;
        memcpy(g->name, name.p, name.len);
        n->groups[n->ngroups++] = g;
    }
    if (g->n == g->cap) {
        uint32_t cap = g->cap ? g->cap * 2 : 2;
        tt_sub *v = realloc(g->m, cap * sizeof *v);
        if (!v) {
            if (g->n == 0) { /* just created: undo */
                free(g);
                n->ngroups--;
            }
            return false;
        }
        g->m = v;
        g->cap = cap;
    }
    g->m[g->n++] = (tt_sub){subscriber, sub_id, options};
    *existed = false;
    return true;
}

bool topic_tree_subscribe(topic_tree *t, void *subscriber, mqtt_bytes group,
                          mqtt_bytes filter, uint8_t options, uint32_t sub_id,
                          bool *existed)
{
    bool ex = false, ok = false;
    pthread_rwlock_wrlock(&t->lock);
    tt_node *n = walk(t->root, filter, true);
    if (n) {
        if (group.len == 0) {
            uint32_t pos;
            tt_sub *s = subs_find(n, subscriber, &pos);
            if (s) {
                s->options = options;
                s->sub_id = sub_id;
                ex = ok = true;
            } else {
                ok = subs_add(n, subscriber, options, sub_id);
            }
        } else {
            ok = group_subscribe(n, subscriber, group, options, sub_id, &ex);
        }
        if (ok && !ex)
            t->count++;
        if (!ok)
            prune(t->root, n);
    }
    pthread_rwlock_unlock(&t->lock);
    if (existed)
        *existed = ex;
    return ok;
}

bool topic_tree_unsubscribe(topic_tree *t, void *subscriber, mqtt_bytes group,
                            mqtt_bytes filter)
{
    bool found = false;
    pthread_rwlock_wrlock(&t->lock);
    tt_node *n = walk(t->root, filter, false);
    if (n) {
        uint32_t pos;
        if (group.len == 0) {
            if (subs_find(n, subscriber, &pos)) {
                subs_del(n, pos);
                found = true;
            }
        } else {
            uint32_t gpos;
            tt_group *g = group_find(n, group, &gpos);
            if (g && member_find(g, subscriber, &pos)) {
                g->m[pos] = g->m[--g->n];
                found = true;
                if (g->n == 0) {
                    free(g->m);
                    free(g);
                    n->groups[gpos] = n->groups[--n->ngroups];
                    if (n->ngroups == 0) {
                        free(n->groups);
                        n->groups = NULL;
                        n->capgroups = 0;
                    }
                }
            }
        }
        if (found) {
            t->count--;
            prune(t->root, n);
        }
    }
    pthread_rwlock_unlock(&t->lock);
    return found;
}

/* ---- matching ------------------------------------------------------------- */

static bool emit(const topic_tree *t, topic_match_vec *out, const tt_sub *s,
                 bool shared)
{
    if (out->len == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 16;
        topic_match *v = realloc(out->items, cap * sizeof *v);
        if (!v)
            return false;
        out->items = v;
        out->cap = cap;
    }
    out->items[out->len++] = (topic_match){s->subscriber, s->options, s->sub_id,
                                           shared};
    if (t->ops.ref)
        t->ops.ref(s->subscriber);
    return true;
}

static bool emit_node(const topic_tree *t, const tt_node *n, topic_match_vec *out)
{
    for (uint32_t i = 0; i < n->nsubs; i++)
        if (!emit(t, out, &n->subs[i], false))
            return false;
    for (uint32_t i = 0; i < n->ngroups; i++) {
        tt_group *g = n->groups[i];
        if (g->n == 0)
            continue;
        unsigned k = atomic_fetch_add_explicit(&g->rr, 1, memory_order_relaxed);
        if (!emit(t, out, &g->m[k % g->n], true))
            return false;
    }
    return true;
}

/*
 * Matches the remaining levels [p, end) (`more` false: no level left) from
 * node n. `dollar`: n is the root and the topic starts with '$', so the
 * root's wildcard children do not apply.
 */
static bool match_from(const topic_tree *t, const tt_node *n, const uint8_t *p,
                       const uint8_t *end, bool more, bool dollar,
                       topic_match_vec *out)
{
    for (;;) {
        if (n->hash_child && !dollar && !emit_node(t, n->hash_child, out))
            return false;
        if (!more)
            return emit_node(t, n, out);
        trie_levels it = trie_levels_of(p, (size_t)(end - p));
        const uint8_t *s;
        uint32_t len;
        trie_levels_next(&it, &s, &len);
        const tt_node *lit = n->head.kids.n ? kid_find(n, s, len) : NULL;
        const tt_node *plus = dollar ? NULL : n->plus;
        dollar = false;
        if (lit && plus) {
            if (!match_from(t, plus, it.p, end, !it.done, false, out))
                return false;
            n = lit;
        } else if (lit) {
            n = lit;
        } else if (plus) {
            n = plus;
        } else {
            return true;
        }
        p = it.p;
        more = !it.done;
    }
}

bool topic_tree_match(topic_tree *t, mqtt_bytes topic, topic_match_vec *out)
{
    bool dollar = topic.len > 0 && topic.p[0] == '$';
    pthread_rwlock_rdlock(&t->lock);
    bool ok = match_from(t, t->root, topic.p, topic.p + topic.len, true, dollar,
                         out);
    pthread_rwlock_unlock(&t->lock);
    return ok;
}

size_t topic_tree_count(topic_tree *t)
{
    pthread_rwlock_rdlock(&t->lock);
    size_t n = t->count;
    pthread_rwlock_unlock(&t->lock);
    return n;
}

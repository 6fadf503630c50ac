/*
 * broker/trie.c — see trie.h.
 */
#include "broker/trie.h"

#include <stdlib.h>
#include <string.h>

void *trie_node_new(size_t node_size, trie_head *parent, const uint8_t *level, uint32_t len)
{
    trie_head *n = calloc(1, node_size + len);
    if (!n)
        return NULL;
    n->parent = parent;
    n->len = len;
    if (len)
        memcpy((uint8_t *)n + node_size, level, len);
    n->hash = pos_index_hash_level(level, len);
    return n;
}

void trie_node_free(trie_head *n)
{
    free(n->kids.v);
    pos_index_free(&n->kids.ix);
    free(n);
}

static uint32_t kid_hash(const void *ctx, uint32_t pos)
{
    return ((const trie_kids *)ctx)->v[pos]->hash;
}

trie_head *trie_kid_find(const trie_head *n, size_t node_size, const uint8_t *level,
                         uint32_t len)
{
    const trie_kids *kids = &n->kids;
    if (kids->ix.slot) {
        uint32_t h = pos_index_hash_level(level, len);
        for (uint32_t i = pos_index_first(&kids->ix, h); kids->ix.slot[i];
             i = pos_index_next(&kids->ix, i)) {
            trie_head *k = kids->v[kids->ix.slot[i] - 1];
            if (k->hash == h && k->len == len &&
                memcmp(trie_level(k, node_size), level, len) == 0)
                return k;
        }
        return NULL;
    }
    for (uint32_t i = 0; i < kids->n; i++) {
        trie_head *k = kids->v[i];
        if (k->len == len && memcmp(trie_level(k, node_size), level, len) == 0)
            return k;
    }
    return NULL;
}

bool trie_kid_add(trie_head *n, trie_head *k)
{
    trie_kids *kids = &n->kids;
    if (kids->n == kids->cap) {
        uint32_t cap = kids->cap ? kids->cap * 2 : 2;
        trie_head **v = realloc(kids->v, cap * sizeof *v);
        if (!v)
            return false;
        kids->v = v;
        kids->cap = cap;
    }
    kids->v[kids->n] = k;
    if (!pos_index_add(&kids->ix, kids->n, k->hash, kid_hash, kids))
        return false;
    k->pidx = kids->n++;
    return true;
}

void trie_kid_remove(trie_head *n, trie_head *k)
{
    trie_kids *kids = &n->kids;
    uint32_t pos = k->pidx, last = kids->n - 1;
    pos_index_remove(&kids->ix, kids->n, pos, k->hash, kids->v[last]->hash, kid_hash, kids);
    if (pos != last) {
        kids->v[pos] = kids->v[last];
        kids->v[pos]->pidx = pos;
    }
    if (--kids->n == 0) { /* nodes that stay (the root) give memory back */
        free(kids->v);
        pos_index_free(&kids->ix);
        kids->v = NULL;
        kids->cap = 0;
    }
}

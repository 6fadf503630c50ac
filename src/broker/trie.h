/*
 * broker/trie.h — what the subscription trie (topic_tree.c) and the
 * retained-message trie (retained.c) are both made of: a node's head (its
 * parent, its level and its place among its parent's literal children),
 * the children themselves, and the walk over a topic's levels.
 *
 * A node of either trie starts with a trie_head, so a head and its node
 * convert by a cast, and is allocated by trie_node_new with the level's
 * bytes right after the node's struct; the head keeps the level's length
 * but no pointer to it (the owner knows its struct's size, which is all it
 * takes to find the bytes, and a node stays 8 bytes smaller).
 *
 * Children are a plain array, which iteration and '#' enumeration walk,
 * plus a hash index of array positions once there are more than a few
 * (pos_index.h). Each child knows its position in its parent's array, so a
 * subtree can be walked through parent links with no stack.
 */
#ifndef IOTHUBD_BROKER_TRIE_H
#define IOTHUBD_BROKER_TRIE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "broker/pos_index.h"

typedef struct trie_head trie_head;

typedef struct trie_kids {
    trie_head **v;
    uint32_t n, cap;
    pos_index ix;
} trie_kids;

struct trie_head {
    trie_head *parent;
    uint32_t pidx; /* position in parent->kids.v (literal children only) */
    uint32_t hash; /* pos_index_hash_level of the level */
    uint32_t len;  /* the level's length; the bytes follow the owner's struct */
    trie_kids kids;
};

/* A zeroed node of node_size bytes (a struct starting with a trie_head)
 * for `level` under `parent` (NULL for a root), not yet among parent's
 * children. NULL when out of memory. Freed with trie_node_free. */
void *trie_node_new(size_t node_size, trie_head *parent, const uint8_t *level, uint32_t len);

/* Frees the node and its children's array (not the children). */
void trie_node_free(trie_head *n);

static inline const uint8_t *trie_level(const trie_head *n, size_t node_size)
{
    return (const uint8_t *)n + node_size;
}

/* The literal child of n for `level`, or NULL. node_size: as the children
 * were created with. */
trie_head *trie_kid_find(const trie_head *n, size_t node_size, const uint8_t *level,
                         uint32_t len);

/* Makes k (created with n as its parent) a literal child of n. False when
 * out of memory; n is then unchanged. */
bool trie_kid_add(trie_head *n, trie_head *k);

/* Takes k out of n's literal children (the last child takes its place).
 * A node left with no children gives their memory back. */
void trie_kid_remove(trie_head *n, trie_head *k);

/* ---- a topic's or filter's levels ---------------------------------------- */

typedef struct trie_levels {
    const uint8_t *p, *end;
    bool done;
} trie_levels;

static inline trie_levels trie_levels_of(const uint8_t *p, size_t len)
{
    return (trie_levels){p, p + len, false};
}

/* The next level (possibly empty) into s/len; false after the last. */
static inline bool trie_levels_next(trie_levels *it, const uint8_t **s, uint32_t *len)
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

#endif

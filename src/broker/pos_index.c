/*
 * broker/pos_index.c — see pos_index.h.
 */
#include "broker/pos_index.h"

#include <stdlib.h>

static void put(pos_index *x, uint32_t h, uint32_t pos)
{
    uint32_t i = h & x->mask;
    while (x->slot[i])
        i = (i + 1) & x->mask;
    x->slot[i] = pos + 1;
}

/* Rebuilds the table for n elements with a capacity of at least 2(n + 1). */
static bool rebuild(pos_index *x, uint32_t n, pos_index_hash_fn hf, const void *ctx)
{
    uint32_t cap = 16;
    while (cap < 2 * (n + 1))
        cap *= 2;
    uint32_t *s = calloc(cap, sizeof *s);
    if (!s)
        return false;
    free(x->slot);
    x->slot = s;
    x->mask = cap - 1;
    for (uint32_t i = 0; i < n; i++)
        put(x, hf(ctx, i), i);
    return true;
}

bool pos_index_add(pos_index *x, uint32_t n, uint32_t h, pos_index_hash_fn hf, const void *ctx)
{
    if (!x->slot)
        return n + 1 <= POS_INDEX_MIN || rebuild(x, n + 1, hf, ctx);
    if (2 * (n + 1) > x->mask + 1)
        return rebuild(x, n + 1, hf, ctx);
    put(x, h, n);
    return true;
}

/* The slot holding position `pos`, whose hash is h. */
static uint32_t slot_of(const pos_index *x, uint32_t h, uint32_t pos)
{
    uint32_t i = h & x->mask;
    while (x->slot[i] != pos + 1)
        i = (i + 1) & x->mask;
    return i;
}

/* Empties slot `hole`, shifting back the entries of its probe run that
 * would otherwise become unreachable. */
static void delete_slot(pos_index *x, uint32_t hole, pos_index_hash_fn hf, const void *ctx)
{
    uint32_t mask = x->mask;
    for (uint32_t j = (hole + 1) & mask; x->slot[j]; j = (j + 1) & mask) {
        uint32_t home = hf(ctx, x->slot[j] - 1) & mask;
        bool movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
        if (movable) {
            x->slot[hole] = x->slot[j];
            hole = j;
        }
    }
    x->slot[hole] = 0;
}

void pos_index_remove(pos_index *x, uint32_t n, uint32_t pos, uint32_t h, uint32_t hlast,
                      pos_index_hash_fn hf, const void *ctx)
{
    if (!x->slot)
        return;
    delete_slot(x, slot_of(x, h, pos), hf, ctx);
    if (pos != n - 1)
        x->slot[slot_of(x, hlast, n - 1)] = pos + 1;
}

void pos_index_free(pos_index *x)
{
    free(x->slot);
    x->slot = NULL;
}

uint32_t pos_index_hash_level(const uint8_t *p, uint32_t len)
{
    uint32_t h = 2166136261u;
    for (uint32_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h ^ (h >> 15);
}

/*
 * util/hmap.c — see hmap.h. FNV-1a is enough here: keys are client ids and
 * connection ids chosen by us or by authenticated clients, and probing
 * sequences stay short at 70% load.
 */
#include "util/hmap.h"

#include <stdlib.h>
#include <string.h>

uint64_t hmap_hash(const void *key, size_t len)
{
    const uint8_t *p = key;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

void hmap_init(hmap *m, hmap_key_fn key, const void *ctx)
{
    memset(m, 0, sizeof *m);
    m->key = key;
    m->ctx = ctx;
}

void hmap_free(hmap *m)
{
    free(m->slots);
    hmap_init(m, m->key, m->ctx);
}

static size_t home_of(const hmap *m, const void *value, size_t mask)
{
    hmap_key k = m->key(value, m->ctx);
    return hmap_hash(k.p, k.len) & mask;
}

static bool value_is(const hmap *m, const void *value, const void *key, size_t len)
{
    hmap_key k = m->key(value, m->ctx);
    return k.len == len && memcmp(k.p, key, len) == 0;
}

/* The slot holding `key`, or the empty slot ending its probe run. */
static size_t find(const hmap *m, const void *key, size_t keylen)
{
    size_t mask = m->cap - 1;
    size_t i = hmap_hash(key, keylen) & mask;
    while (m->slots[i] && !value_is(m, m->slots[i], key, keylen))
        i = (i + 1) & mask;
    return i;
}

void *hmap_get(const hmap *m, const void *key, size_t keylen)
{
    if (m->count == 0)
        return NULL;
    return m->slots[find(m, key, keylen)];
}

static bool grow(hmap *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 16, mask = ncap - 1;
    void **n = calloc(ncap, sizeof *n);
    if (!n)
        return false;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i])
            continue;
        size_t j = home_of(m, m->slots[i], mask);
        while (n[j])
            j = (j + 1) & mask;
        n[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = n;
    m->cap = ncap;
    return true;
}

void *hmap_put(hmap *m, const void *key, size_t keylen, void *value)
{
    if (m->cap) {
        size_t i = find(m, key, keylen);
        if (m->slots[i]) {
            void *old = m->slots[i];
            m->slots[i] = value;
            return old;
        }
    }
    if ((m->count + 1) * 10 > m->cap * 7 && !grow(m))
        return value;
    m->slots[find(m, key, keylen)] = value;
    m->count++;
    return NULL;
}

void *hmap_del(hmap *m, const void *key, size_t keylen)
{
    if (m->count == 0)
        return NULL;
    size_t mask = m->cap - 1;
    size_t i = find(m, key, keylen);
    void *old = m->slots[i];
    if (!old)
        return NULL;
    /* Backward-shift: pull later entries of the probe run into the hole. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->slots[j]; j = (j + 1) & mask) {
        size_t home = home_of(m, m->slots[j], mask);
        bool movable = hole <= j ? (home <= hole || home > j)
                                 : (home <= hole && home > j);
        if (movable) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole] = NULL;
    m->count--;
    return old;
}

bool hmap_next(const hmap *m, size_t *pos, void **value)
{
    while (*pos < m->cap) {
        void *v = m->slots[(*pos)++];
        if (v) {
            *value = v;
            return true;
        }
    }
    return false;
}

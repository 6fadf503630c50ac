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

void hmap_init(hmap *m) { memset(m, 0, sizeof *m); }

void hmap_free(hmap *m)
{
    free(m->slots);
    hmap_init(m);
}

static bool entry_is(const hmap_entry *e, uint64_t h, const void *key, size_t len)
{
    return e->hash == h && e->keylen == len && memcmp(e->key, key, len) == 0;
}

void *hmap_get(const hmap *m, const void *key, size_t keylen)
{
    if (m->count == 0)
        return NULL;
    uint64_t h = hmap_hash(key, keylen);
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const hmap_entry *e = &m->slots[i];
        if (!e->value)
            return NULL;
        if (entry_is(e, h, key, keylen))
            return e->value;
    }
}

static void insert_slot(hmap_entry *slots, size_t cap, hmap_entry e)
{
    size_t mask = cap - 1;
    size_t i = e.hash & mask;
    while (slots[i].value)
        i = (i + 1) & mask;
    slots[i] = e;
}

static bool grow(hmap *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 16;
    hmap_entry *n = calloc(ncap, sizeof *n);
    if (!n)
        return false;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].value)
            insert_slot(n, ncap, m->slots[i]);
    free(m->slots);
    m->slots = n;
    m->cap = ncap;
    return true;
}

void *hmap_put(hmap *m, const void *key, size_t keylen, void *value)
{
    uint64_t h = hmap_hash(key, keylen);
    if (m->cap) {
        size_t mask = m->cap - 1;
        for (size_t i = h & mask; m->slots[i].value; i = (i + 1) & mask) {
            hmap_entry *e = &m->slots[i];
            if (entry_is(e, h, key, keylen)) {
                void *old = e->value;
                e->value = value;
                e->key = key; /* the new value owns the key bytes now */
                return old;
            }
        }
    }
    if ((m->count + 1) * 10 > m->cap * 7 && !grow(m))
        return value;
    insert_slot(m->slots, m->cap, (hmap_entry){h, key, keylen, value});
    m->count++;
    return NULL;
}

void *hmap_del(hmap *m, const void *key, size_t keylen)
{
    if (m->count == 0)
        return NULL;
    uint64_t h = hmap_hash(key, keylen);
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    while (m->slots[i].value && !entry_is(&m->slots[i], h, key, keylen))
        i = (i + 1) & mask;
    if (!m->slots[i].value)
        return NULL;
    void *old = m->slots[i].value;
    /* Backward-shift: pull later entries of the probe run into the hole. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->slots[j].value; j = (j + 1) & mask) {
        size_t home = m->slots[j].hash & mask;
        bool movable = hole <= j ? (home <= hole || home > j)
                                 : (home <= hole && home > j);
        if (movable) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    memset(&m->slots[hole], 0, sizeof m->slots[hole]);
    m->count--;
    return old;
}

bool hmap_next(const hmap *m, size_t *pos, void **value)
{
    while (*pos < m->cap) {
        hmap_entry *e = &m->slots[(*pos)++];
        if (e->value) {
            *value = e->value;
            return true;
        }
    }
    return false;
}

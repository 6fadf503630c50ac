/*
 * util/hmap.h — a hash map from byte strings to pointers.
 *
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones), power-of-two capacity, grown at 70% load. Keys are not
 * copied: the caller guarantees that a key's bytes stay valid and unchanged
 * while its entry is in the map (typically the key lives inside the value,
 * e.g. a session's client id). Not thread-safe: each map has one owner.
 */
#ifndef IOTHUBD_UTIL_HMAP_H
#define IOTHUBD_UTIL_HMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hmap_entry {
    uint64_t hash;
    const void *key;
    size_t keylen;
    void *value; /* NULL = empty slot */
} hmap_entry;

typedef struct hmap {
    hmap_entry *slots;
    size_t cap;   /* 0 or a power of two */
    size_t count;
} hmap;

uint64_t hmap_hash(const void *key, size_t len);

void hmap_init(hmap *m);
void hmap_free(hmap *m);
void *hmap_get(const hmap *m, const void *key, size_t keylen);
/* Inserts or replaces; returns the previous value (or NULL). `value` must
 * not be NULL. On allocation failure returns `value` itself unchanged and
 * the map is unchanged. */
void *hmap_put(hmap *m, const void *key, size_t keylen, void *value);
/* Removes; returns the removed value or NULL. */
void *hmap_del(hmap *m, const void *key, size_t keylen);

/* Iteration: for (size_t i = 0; hmap_next(m, &i, &v);) — do not modify the
 * map while iterating. */
bool hmap_next(const hmap *m, size_t *pos, void **value);

#endif

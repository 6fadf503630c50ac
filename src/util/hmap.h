/*
 * util/hmap.h — a hash map from byte strings to pointers.
 *
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones), power-of-two capacity, grown at 70% load. A slot is the
 * value pointer alone (8 bytes): the key is not stored but read back from
 * the value through the map's key function, and the hash is recomputed
 * from it when the table grows or an entry shifts. The maps that matter
 * for memory hold one entry per connection (each loop's sessions), where
 * 32-byte slots caching hash, key pointer and length cost 55 bytes per
 * connection; 8-byte slots cost 14. The price is a call and a
 * key comparison through the value on each probe, and a rehash of the
 * entries moved on delete or grow — cheap for the short keys used here.
 *
 * So the key function must give, for every value in the map, the key it
 * was inserted under, at every call into the map: a value's key bytes must
 * stay valid and unchanged while it is in the map (typically the key lives
 * inside the value, e.g. a session's client id). Not thread-safe: each map
 * has one owner.
 */
#ifndef IOTHUBD_UTIL_HMAP_H
#define IOTHUBD_UTIL_HMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hmap_key {
    const void *p;
    size_t len;
} hmap_key;

/* The key of `value` (a value in the map); `ctx` as given to hmap_init. */
typedef hmap_key (*hmap_key_fn)(const void *value, const void *ctx);

typedef struct hmap {
    void **slots; /* NULL = empty slot */
    size_t cap;   /* 0 or a power of two */
    size_t count;
    hmap_key_fn key;
    const void *ctx;
} hmap;

uint64_t hmap_hash(const void *key, size_t len);

void hmap_init(hmap *m, hmap_key_fn key, const void *ctx);
void hmap_free(hmap *m);
void *hmap_get(const hmap *m, const void *key, size_t keylen);
/* Inserts or replaces; returns the previous value (or NULL). `value` must
 * not be NULL and its key (by the key function) must be `key`. On
 * allocation failure returns `value` itself unchanged and the map is
 * unchanged. */
void *hmap_put(hmap *m, const void *key, size_t keylen, void *value);
/* Removes; returns the removed value or NULL. */
void *hmap_del(hmap *m, const void *key, size_t keylen);

/* Iteration: for (size_t i = 0; hmap_next(m, &i, &v);) — do not modify the
 * map while iterating. */
bool hmap_next(const hmap *m, size_t *pos, void **value);

#endif

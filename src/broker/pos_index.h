/*
 * broker/pos_index.h — a hash index over the positions of an array, for
 * the two tries (topic_tree.c: a node's children and its subscribers;
 * retained.c: a node's children).
 *
 * The elements stay in their plain array, which is what iteration and '#'
 * enumeration walk and what keeps a small node small; the index only maps
 * a hash to positions. Arrays of up to POS_INDEX_MIN elements have no
 * index (a linear scan is as fast and costs no memory). Past that, an
 * open-addressing table of position + 1 (0 = empty) with linear probing
 * and backward-shift deletion (no tombstones), at most half full. The
 * table stores no hashes: its owner recomputes one from a position
 * (pos_index_hash_fn) when the table is rebuilt or an entry shifts, which
 * keeps a slot at 4 bytes.
 *
 * Removal follows the arrays' own rule: the last element moves into the
 * hole, so the caller tells the index both hashes before changing the
 * array.
 */
#ifndef IOTHUBD_BROKER_POS_INDEX_H
#define IOTHUBD_BROKER_POS_INDEX_H

#include <stdbool.h>
#include <stdint.h>

#define POS_INDEX_MIN 8

typedef uint32_t (*pos_index_hash_fn)(const void *ctx, uint32_t pos);

typedef struct pos_index {
    uint32_t *slot; /* NULL while the array is small */
    uint32_t mask;  /* capacity - 1; meaningful only when slot != NULL */
} pos_index;

/* Records the element the caller has just stored at position n (the array
 * now holds n + 1 elements, and hf can hash position n). False when out of
 * memory; the index is then unchanged. */
bool pos_index_add(pos_index *x, uint32_t n, uint32_t h, pos_index_hash_fn hf, const void *ctx);

/* The element at `pos` (hash h) of an array of n elements is about to be
 * removed by moving the last one (hash hlast) into its place. */
void pos_index_remove(pos_index *x, uint32_t n, uint32_t pos, uint32_t h, uint32_t hlast,
                      pos_index_hash_fn hf, const void *ctx);

void pos_index_free(pos_index *x);

/* Candidate positions for hash h, while the index exists:
 *   for (uint32_t i = pos_index_first(x, h); x->slot[i]; i = pos_index_next(x, i))
 *       ... position x->slot[i] - 1 ... */
static inline uint32_t pos_index_first(const pos_index *x, uint32_t h) { return h & x->mask; }
static inline uint32_t pos_index_next(const pos_index *x, uint32_t i) { return (i + 1) & x->mask; }

/* FNV-1a of one topic level, folded: the hash both tries index levels by. */
uint32_t pos_index_hash_level(const uint8_t *p, uint32_t len);

#endif

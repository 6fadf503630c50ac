/*
 * hub/twin_text.h — JSON text for the twin model, private to src/hub/
 * (twin_doc.c, twin.c and the unit tests).
 *
 * twin_text: an immutable, reference-counted compact JSON text of one
 * tree, rendered once when the tree is built and then shared by every
 * version of a document that keeps the tree (see twin_doc.h). The count is
 * atomic, like the documents' own, so any thread holding a reference may
 * take or drop one without a lock.
 *
 * twin_buf: a growing byte buffer the views are spliced in, with the few
 * JSON pieces they need (quoted strings, integers).
 *
 * The renderer writes the same bytes as jansson's json_dumps(v,
 * JSON_COMPACT) — keys in insertion order, the same escapes and number
 * forms — without its per-object loop detection, which formats a pointer
 * with snprintf and updates a hash table for every object it enters and
 * used to be the largest single cost of a twin write. Twin trees cannot
 * hold loops: they are built from parsed JSON by twin_doc.c only.
 */
#ifndef IOTHUBD_HUB_TWIN_TEXT_H
#define IOTHUBD_HUB_TWIN_TEXT_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct twin_text {
    atomic_uint refs;
    size_t len; /* bytes in s, without the NUL */
    char s[];
} twin_text;

/* The compact JSON of v; NULL when out of memory. refs = 1. */
twin_text *twin_text_render(const json_t *v);
twin_text *twin_text_ref(twin_text *t); /* t may be NULL */
void twin_text_unref(twin_text *t);     /* t may be NULL */
const char *twin_text_str(const twin_text *t);

/* A growing buffer. After a failed allocation `failed` is set, further
 * appends are ignored and twin_buf_finish gives NULL. Starts in `small`,
 * so that a short text costs no allocation until it is kept. */
typedef struct twin_buf {
    char *p;
    size_t len, cap;
    bool failed;
    char small[512];
} twin_buf;

/* An empty buffer with room for `want` bytes (0: the small buffer). */
void twin_buf_init(twin_buf *b, size_t want);
/* Appends n bytes (inline: the views append many short pieces). */
void twin_buf_put_slow(twin_buf *b, const char *s, size_t n);
static inline void twin_buf_put(twin_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 <= b->cap && !b->failed) {
        memcpy(b->p + b->len, s, n);
        b->len += n;
    } else {
        twin_buf_put_slow(b, s, n);
    }
}
void twin_buf_str(twin_buf *b, const char *s);
void twin_buf_int(twin_buf *b, int64_t v);
/* A JSON string literal of the n bytes at s (escaped as jansson does). */
void twin_buf_quoted(twin_buf *b, const char *s, size_t n);
/* The compact JSON of v appended. */
void twin_buf_json(twin_buf *b, const json_t *v);
/* The contents as a malloc'd NUL-terminated string (*len gets its length
 * when len is not NULL); NULL when anything failed. Releases the buffer. */
char *twin_buf_finish(twin_buf *b, size_t *len);
/* Releases the buffer without keeping its contents. */
void twin_buf_drop(twin_buf *b);

#endif

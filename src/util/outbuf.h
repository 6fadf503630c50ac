/*
 * util/outbuf.h — writing text into a fixed buffer without printf.
 *
 * Per-request output of known bounds (an HTTP response head, a C2D send
 * receipt, a method call's reply) is written piece by piece into a
 * caller's buffer. A piece that does not fit marks the buffer overflowed
 * instead of being cut, so the caller checks once at the end and never
 * sends a truncated head or a broken JSON text. glibc's snprintf spends
 * hundreds of instructions a call on its format string; these are memcpy.
 */
#ifndef IOTHUBD_UTIL_OUTBUF_H
#define IOTHUBD_UTIL_OUTBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "util/fmt.h"
#include "util/json_escape.h"

typedef struct outbuf {
    char *start, *p, *end;
    bool overflow;
} outbuf;

static inline outbuf outbuf_over(char *buf, size_t cap)
{
    return (outbuf){buf, buf, buf + cap, false};
}

static inline void outbuf_put(outbuf *o, const char *s, size_t n)
{
    if ((size_t)(o->end - o->p) < n) {
        o->overflow = true;
        return;
    }
    memcpy(o->p, s, n);
    o->p += n;
}

#define OUTBUF_LITERAL(o, lit) outbuf_put((o), (lit), sizeof(lit) - 1)

static inline void outbuf_str(outbuf *o, const char *s)
{
    outbuf_put(o, s, strlen(s));
}

static inline void outbuf_u64(outbuf *o, uint64_t v)
{
    char digits[FMT_U64_MAX];
    outbuf_put(o, digits, fmt_u64(digits, v));
}

/* `s` as a quoted JSON string, escaped as jansson's compact dump does
 * (util/json_escape.h). `s` must be well-formed UTF-8: bytes are copied
 * as they are. */
static inline void outbuf_json_string(outbuf *o, const char *s)
{
    outbuf_put(o, "\"", 1);
    const char *run = s; /* start of the bytes not yet copied */
    for (; *s; s++) {
        char esc[6];
        size_t n = json_escape_byte((unsigned char)*s, esc);
        if (n == 0)
            continue;
        outbuf_put(o, run, (size_t)(s - run));
        outbuf_put(o, esc, n);
        run = s + 1;
    }
    outbuf_put(o, run, (size_t)(s - run));
    outbuf_put(o, "\"", 1);
}

/* The length written so far. */
static inline size_t outbuf_len(const outbuf *o)
{
    return (size_t)(o->p - o->start);
}

#endif

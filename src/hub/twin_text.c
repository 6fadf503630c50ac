/*
 * hub/twin_text.c — see twin_text.h: the shared texts, the buffer the
 * views are spliced in, and a compact JSON renderer for twin trees.
 *
 * The renderer mirrors jansson's compact output so that a text is the same
 * whichever produced it (the unit tests compare them): objects in
 * insertion order, strings with \" \\ \b \f \n \r \t and \uXXXX (upper-case
 * hex) for the other control characters and everything else copied,
 * integers in decimal, reals as "%.17g" with a "+" and leading zeros
 * dropped from the exponent and ".0" added when the result would read as
 * an integer.
 */
#include "hub/twin_text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fmt.h"
#include "util/json_escape.h"

/* ---- the buffer --------------------------------------------------------------- */

void twin_buf_init(twin_buf *b, size_t want)
{
    b->len = 0;
    b->failed = false;
    if (want <= sizeof b->small) {
        b->p = b->small;
        b->cap = sizeof b->small;
        return;
    }
    b->p = malloc(want);
    b->cap = want;
    b->failed = !b->p;
}

/* Makes room for n more bytes and a NUL; false when out of memory. */
static bool buf_reserve(twin_buf *b, size_t n)
{
    if (b->failed)
        return false;
    if (b->len + n + 1 <= b->cap)
        return true;
    size_t cap = b->cap * 2 > b->len + n + 1 ? b->cap * 2 : b->len + n + 1;
    char *p = b->p == b->small ? malloc(cap) : realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    if (b->p == b->small)
        memcpy(p, b->small, b->len);
    b->p = p;
    b->cap = cap;
    return true;
}

void twin_buf_put_slow(twin_buf *b, const char *s, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

void twin_buf_str(twin_buf *b, const char *s) { twin_buf_put(b, s, strlen(s)); }

void twin_buf_int(twin_buf *b, int64_t v)
{
    char text[1 + FMT_U64_MAX];
    size_t n = 0;
    if (v < 0)
        text[n++] = '-';
    n += fmt_u64(text + n, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
    twin_buf_put(b, text, n);
}

void twin_buf_quoted(twin_buf *b, const char *s, size_t n)
{
    twin_buf_put(b, "\"", 1);
    size_t run = 0; /* start of the bytes not yet copied */
    for (size_t i = 0; i < n; i++) {
        char esc[6];
        size_t len = json_escape_byte((unsigned char)s[i], esc);
        if (len == 0)
            continue;
        twin_buf_put(b, s + run, i - run);
        twin_buf_put(b, esc, len);
        run = i + 1;
    }
    twin_buf_put(b, s + run, n - run);
    twin_buf_put(b, "\"", 1);
}

/* A real as jansson writes it (see the file comment). */
static void buf_real(twin_buf *b, double v)
{
    char num[40];
    int n = snprintf(num, sizeof num, "%.17g", v);
    if (n < 0 || (size_t)n >= sizeof num) {
        b->failed = true;
        return;
    }
    char *e = strchr(num, 'e');
    if (e) { /* "1e+020" -> "1e20", "1e-05" -> "1e-5" */
        char *from = e + 1, *to = e + 1;
        if (*from == '+')
            from++;
        else if (*from == '-')
            *to++ = *from++;
        while (*from == '0' && from[1])
            from++;
        memmove(to, from, strlen(from) + 1);
    } else if (strspn(num, "0123456789-") == strlen(num)) {
        strcat(num, ".0");
    }
    twin_buf_str(b, num);
}

void twin_buf_json(twin_buf *b, const json_t *v)
{
    const char *key;
    size_t keylen, i;
    json_t *member;
    bool first = true;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        twin_buf_put(b, "{", 1);
        json_object_keylen_foreach((json_t *)v, key, keylen, member) {
            if (!first)
                twin_buf_put(b, ",", 1);
            first = false;
            twin_buf_quoted(b, key, keylen);
            twin_buf_put(b, ":", 1);
            twin_buf_json(b, member);
        }
        twin_buf_put(b, "}", 1);
        return;
    case JSON_ARRAY:
        twin_buf_put(b, "[", 1);
        json_array_foreach(v, i, member) {
            if (i)
                twin_buf_put(b, ",", 1);
            twin_buf_json(b, member);
        }
        twin_buf_put(b, "]", 1);
        return;
    case JSON_STRING:
        twin_buf_quoted(b, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER:
        twin_buf_int(b, json_integer_value(v));
        return;
    case JSON_REAL:
        buf_real(b, json_real_value(v));
        return;
    case JSON_TRUE:
        twin_buf_put(b, "true", 4);
        return;
    case JSON_FALSE:
        twin_buf_put(b, "false", 5);
        return;
    case JSON_NULL:
    default:
        twin_buf_put(b, "null", 4);
        return;
    }
}

char *twin_buf_finish(twin_buf *b, size_t *len)
{
    buf_reserve(b, 0);
    if (!b->failed && b->p == b->small) {
        char *p = malloc(b->len + 1);
        if (p)
            memcpy(p, b->small, b->len);
        b->p = p;
        b->failed = !p;
    }
    if (b->failed) {
        twin_buf_drop(b);
        return NULL;
    }
    b->p[b->len] = '\0';
    if (len)
        *len = b->len;
    return b->p;
}

void twin_buf_drop(twin_buf *b)
{
    if (b->p != b->small)
        free(b->p);
    b->p = b->small;
    b->len = 0;
}

/* ---- texts -------------------------------------------------------------------- */

twin_text *twin_text_render(const json_t *v)
{
    twin_buf b;
    twin_buf_init(&b, 0);
    twin_buf_json(&b, v);
    twin_text *t = b.failed ? NULL : malloc(sizeof *t + b.len + 1);
    if (t) {
        atomic_init(&t->refs, 1);
        t->len = b.len;
        memcpy(t->s, b.p, b.len);
        t->s[b.len] = '\0';
    }
    twin_buf_drop(&b);
    return t;
}

twin_text *twin_text_ref(twin_text *t)
{
    if (t)
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

void twin_text_unref(twin_text *t)
{
    /* acq_rel: whoever frees sees every other owner's accesses done */
    if (t && atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1)
        free(t);
}

const char *twin_text_str(const twin_text *t) { return t->s; }

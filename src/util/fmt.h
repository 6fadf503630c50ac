/*
 * util/fmt.h — numbers as decimal text without printf.
 *
 * The per-request paths (a twin response's version, the digits of a
 * "$lastUpdated" stamp) each format a few numbers. glibc's
 * snprintf spends about 600 instructions a call parsing its format and
 * driving a FILE; a digit loop spends a few dozen. Callgrind put snprintf
 * and strftime at ~8 % of a twin request's instructions before these.
 */
#ifndef IOTHUBD_UTIL_FMT_H
#define IOTHUBD_UTIL_FMT_H

#include <stddef.h>
#include <stdint.h>

#define FMT_U64_MAX 21 /* 20 digits and the terminator */

/* Writes v in decimal, NUL-terminated; returns the number of digits. */
static inline size_t fmt_u64(char out[FMT_U64_MAX], uint64_t v)
{
    size_t n = 1;
    for (uint64_t rest = v / 10; rest; rest /= 10)
        n++;
    out[n] = '\0';
    for (size_t i = n; i > 0; i--) {
        out[i - 1] = (char)('0' + v % 10);
        v /= 10;
    }
    return n;
}

/* Writes v as exactly `width` digits, zero-padded (v < 10^width);
 * returns the end. Not terminated. */
static inline char *fmt_digits(char *out, unsigned v, unsigned width)
{
    for (unsigned i = width; i > 0; i--) {
        out[i - 1] = (char)('0' + v % 10);
        v /= 10;
    }
    return out + width;
}

#endif

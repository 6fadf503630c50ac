/*
 * util/json_escape.h — how a byte of a JSON string is written.
 *
 * Two hot paths write JSON text without building jansson objects: the
 * telemetry properties blob (hub/telemetry.c) and the twin renderer
 * (hub/twin_text.c). Both must produce exactly jansson's compact output,
 * byte for byte (their unit tests compare), so they share this one rule:
 * `"` and `\` escaped, control characters as \b \f \n \r \t or \u00XX in
 * upper-case hex, every other byte (UTF-8 included) as is.
 */
#ifndef IOTHUBD_UTIL_JSON_ESCAPE_H
#define IOTHUBD_UTIL_JSON_ESCAPE_H

#include <stddef.h>

/* Writes the escape for byte `c` into `out` and returns its length (2 or
 * 6), or returns 0 when `c` stands for itself. */
static inline size_t json_escape_byte(unsigned char c, char out[6])
{
    static const char hex[] = "0123456789ABCDEF";
    if (c >= 0x20 && c != '"' && c != '\\')
        return 0;
    out[0] = '\\';
    switch (c) {
    case '"': out[1] = '"'; return 2;
    case '\\': out[1] = '\\'; return 2;
    case '\b': out[1] = 'b'; return 2;
    case '\f': out[1] = 'f'; return 2;
    case '\n': out[1] = 'n'; return 2;
    case '\r': out[1] = 'r'; return 2;
    case '\t': out[1] = 't'; return 2;
    default:
        out[1] = 'u';
        out[2] = '0';
        out[3] = '0';
        out[4] = hex[c >> 4];
        out[5] = hex[c & 15];
        return 6;
    }
}

#endif

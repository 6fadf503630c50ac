/*
 * util/json_load.h — parsing JSON that came from outside (request bodies,
 * device payloads) with jansson.
 *
 * Why not json_loadb directly: jansson 2.14 (Debian 12) drops a NUL byte
 * that follows a literal or a number. Its lexer reads one character ahead
 * and puts it back, and a NUL put back reads as "nothing buffered", so the
 * byte after it is read next: "false\0" parses as false with
 * JSON_DECODE_ANY, and [false\0] as [false] with no flags. A JSON text
 * never holds a raw NUL (RFC 8259: not whitespace, and escaped inside
 * strings), so such input is refused here before jansson sees it. That
 * matters most where the hub checks a payload with jansson and then passes
 * the original bytes on (a method reply spliced into the caller's answer
 * would otherwise carry the NUL into an HTTP body that is not JSON), and
 * it keeps every other parser's verdict equal to the RFC's.
 */
#ifndef IOTHUBD_UTIL_JSON_LOAD_H
#define IOTHUBD_UTIL_JSON_LOAD_H

#include <jansson.h>
#include <stdio.h>
#include <string.h>

/* json_loadb, except that a buffer holding a NUL byte is refused with the
 * error text "NUL byte at position N". err may be NULL. */
static inline json_t *json_load_untrusted(const void *buf, size_t len, size_t flags,
                                          json_error_t *err)
{
    const char *nul = len ? memchr(buf, '\0', len) : NULL;
    if (nul) {
        if (err) { /* where, as jansson counts: line and column from 1 */
            memset(err, 0, sizeof *err);
            err->line = err->column = 1;
            for (const char *p = buf; p < nul; p++) {
                err->column = *p == '\n' ? 1 : err->column + 1;
                err->line += *p == '\n';
            }
            err->position = (int)(nul - (const char *)buf);
            snprintf(err->text, sizeof err->text, "NUL byte at position %d", err->position);
        }
        return NULL;
    }
    return json_loadb(len ? buf : "", len, flags, err);
}

#endif

/*
 * service/http_strict.c — strict HTTP/1.1 framing checks on the bytes
 * libhttp-parser has accepted.
 *
 * Why: Debian builds libhttp-parser without HTTP_PARSER_STRICT, and in that
 * mode the parser takes *any* byte where it expects the LF of a CRLF: at the
 * end of a header line, of the header section, of a chunk-size line, of the
 * trailer section, and both bytes after each chunk's data ("2\r\n{}XX0\r\n
 * \r\n" is read as a complete body). A front end that frames the same bytes
 * strictly would then see a different request boundary than we do: that is
 * request smuggling (RFC 9112 §11.2). Rather than re-implement the parser,
 * this scanner walks the same bytes after each http_parser_execute() call,
 * independently of it, and rejects the message (400, connection closed) if
 * any CR is not followed by LF, or a chunked body's framing does not add
 * up. The parser stays the authority for everything else.
 *
 * What it assumes: it is given every byte the parser consumed for one
 * message, in order, starting at the message (http_strict_reset at each
 * message start), and is told once the head is complete whether the body
 * is chunked. It allocates nothing and keeps a few words per connection.
 * Leading empty lines before a request line are skipped (the parser allows
 * them). A bare LF is accepted as a line end, as the parser and RFC 9112
 * §2.2 allow; a CR on its own never is.
 */
#include "service/internal.h"

enum {
    HS_HEAD,       /* request line and header fields */
    HS_BODY,       /* head done; a non-chunked body needs no checks */
    HS_SIZE,       /* chunk-size hex digits */
    HS_EXT,        /* chunk extensions, up to the end of the line */
    HS_DATA,       /* chunk data: `left` bytes */
    HS_DATA_END,   /* the CRLF after chunk data */
    HS_TRAILER,    /* trailer fields, up to an empty line */
    HS_DONE,       /* the message is complete */
};

void http_strict_reset(http_strict *s)
{
    *s = (http_strict){.state = HS_HEAD, .line_empty = true};
}

static int hex_value(uint8_t ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch |= 0x20;
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* A line ended (CRLF or bare LF): advances the state; false on a framing
 * error. */
static bool end_of_line(http_strict *s)
{
    bool empty = s->line_empty;
    s->line_empty = true;
    switch (s->state) {
    case HS_HEAD:
        if (empty && s->started)
            s->state = s->chunked ? HS_SIZE : HS_BODY;
        return true;
    case HS_SIZE:
    case HS_EXT:
        if (s->digits == 0)
            return false;
        s->state = s->left ? HS_DATA : HS_TRAILER;
        s->digits = 0;
        return true;
    case HS_DATA_END:
        if (!empty)
            return false; /* bytes between chunk data and its CRLF */
        s->state = HS_SIZE;
        return true;
    case HS_TRAILER:
        if (empty)
            s->state = HS_DONE;
        return true;
    default:
        return true;
    }
}

/* One byte outside chunk data. */
static bool scan_byte(http_strict *s, uint8_t ch)
{
    if (s->cr) {
        s->cr = false;
        return ch == '\n' && end_of_line(s);
    }
    if (ch == '\r') {
        s->cr = true;
        return true;
    }
    if (ch == '\n')
        return s->state != HS_SIZE && s->state != HS_DATA_END && end_of_line(s);
    s->line_empty = false;
    switch (s->state) {
    case HS_HEAD:
        s->started = true;
        return true;
    case HS_SIZE: {
        int v = hex_value(ch);
        if (v >= 0) {
            if (++s->digits > 15)
                return false; /* beyond any body we accept */
            s->left = s->left * 16 + (unsigned)v;
            return true;
        }
        if (s->digits == 0 || (ch != ';' && ch != ' ' && ch != '\t'))
            return false;
        s->state = HS_EXT;
        return true;
    }
    case HS_DATA_END:
        return false; /* data longer than its chunk size says */
    default:
        return true;
    }
}

/* How many bytes from p are neither CR nor LF. */
static size_t line_run(const uint8_t *p, size_t len)
{
    size_t n = 0;
    while (n < len && p[n] != '\r' && p[n] != '\n')
        n++;
    return n;
}

bool http_strict_scan(http_strict *s, const uint8_t *p, size_t len, bool chunked)
{
    for (size_t i = 0; i < len; i++) {
        if (s->state == HS_BODY || s->state == HS_DONE)
            return true; /* nothing left to check in this message */
        if (s->state == HS_HEAD)
            s->chunked = chunked;
        if ((s->state == HS_HEAD || s->state == HS_EXT || s->state == HS_TRAILER) && !s->cr) {
            /* Inside a line of these, a byte other than CR or LF only
             * marks the line non-empty: take the run at once, not byte by
             * byte (the head is most of what a request's scan reads). */
            size_t run = line_run(p + i, len - i);
            if (run > 0) {
                s->line_empty = false;
                s->started |= s->state == HS_HEAD;
                i += run - 1;
                continue;
            }
        }
        if (s->state == HS_DATA && !s->cr) {
            size_t take = len - i < s->left ? len - i : (size_t)s->left;
            s->left -= take;
            i += take - 1;
            if (s->left == 0) {
                s->state = HS_DATA_END;
                s->line_empty = true;
            }
            continue;
        }
        if (!scan_byte(s, p[i]))
            return false;
    }
    return true;
}

/*
 * tools/iothub/output.c — tables, JSON printing and service error lines
 * (see output.h).
 *
 * Tables own copies of their cells so callers can pass pointers into JSON
 * documents or stack buffers that die before printing. An allocation
 * failure marks the table failed instead of aborting mid-way; the printer
 * then reports it once.
 */
#include "tools/iothub/output.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- tables ---------------------------------------------------------------------- */

static char *copy_cell(const char *text)
{
    return strdup(text && *text ? text : "-");
}

void out_table_init(out_table *t, size_t columns, const char *const *headers)
{
    memset(t, 0, sizeof *t);
    t->columns = columns;
    if (headers) {
        t->has_header = true;
        out_table_add(t, headers);
    }
}

/* Makes room for one more row. */
static bool reserve_row(out_table *t)
{
    if (t->rows < t->capacity)
        return true;
    size_t capacity = t->capacity ? t->capacity * 2 : 8;
    char **cells = realloc(t->cells, capacity * t->columns * sizeof *cells);
    if (!cells)
        return false;
    t->cells = cells;
    t->capacity = capacity;
    return true;
}

void out_table_add(out_table *t, const char *const *cells)
{
    if (t->failed || !reserve_row(t)) {
        t->failed = true;
        return;
    }
    char **row = &t->cells[t->rows * t->columns];
    for (size_t c = 0; c < t->columns; c++) {
        row[c] = copy_cell(cells[c]);
        t->failed |= row[c] == NULL;
    }
    t->rows++;
}

size_t out_text_width(const char *text)
{
    size_t width = 0;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        width += (*p & 0xC0) != 0x80; /* count every byte that starts a code point */
    return width;
}

static void print_row(const out_table *t, const char *const *row, const size_t *widths, FILE *out)
{
    for (size_t c = 0; c < t->columns; c++) {
        bool last = c + 1 == t->columns;
        fputs(row[c], out);
        if (!last) {
            size_t pad = widths[c] - out_text_width(row[c]) + 2;
            fprintf(out, "%*s", (int)pad, "");
        }
    }
    fputc('\n', out);
}

bool out_table_print(const out_table *t, FILE *out)
{
    if (t->failed)
        return false;
    size_t *widths = calloc(t->columns ? t->columns : 1, sizeof *widths);
    if (!widths)
        return false;
    for (size_t r = 0; r < t->rows; r++)
        for (size_t c = 0; c < t->columns; c++) {
            size_t w = out_text_width(t->cells[r * t->columns + c]);
            if (w > widths[c])
                widths[c] = w;
        }
    for (size_t r = 0; r < t->rows; r++)
        print_row(t, (const char *const *)&t->cells[r * t->columns], widths, out);
    free(widths);
    return true;
}

void out_table_free(out_table *t)
{
    for (size_t i = 0; i < t->rows * t->columns; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof *t);
}

/* ---- JSON -------------------------------------------------------------------------- */

bool out_json_print(const json_t *value, FILE *out)
{
    if (json_dumpf(value, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY) != 0)
        return false;
    fputc('\n', out);
    return true;
}

const char *out_json_str(const json_t *object, const char *key)
{
    return json_string_value(json_object_get(object, key));
}

/* Joins an array's string members with ", " into buf. */
static const char *join_strings(const json_t *array, char *buf, size_t cap)
{
    size_t used = 0;
    size_t i;
    json_t *item;
    buf[0] = '\0';
    json_array_foreach(array, i, item) {
        const char *s = json_string_value(item);
        if (!s)
            continue;
        int n = snprintf(buf + used, cap - used, "%s%s", used ? ", " : "", s);
        if (n < 0 || (size_t)n >= cap - used)
            break;
        used += (size_t)n;
    }
    return buf;
}

const char *out_json_text(const json_t *object, const char *key, char *buf, size_t cap)
{
    const json_t *v = json_object_get(object, key);
    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_STRING:
        return json_string_value(v);
    case JSON_INTEGER:
        snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
        return buf;
    case JSON_REAL:
        snprintf(buf, cap, "%g", json_real_value(v));
        return buf;
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    case JSON_ARRAY:
        return join_strings(v, buf, cap);
    default:
        return NULL;
    }
}

/* ---- service errors ------------------------------------------------------------------ */

/* Replaces control characters so the text stays on one line. */
static void flatten(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = ' ';
}

/* "{Code}: {text}" from "ErrorCode:{Code};{text}"; false for another shape. */
static bool split_error_code(const char *message, char *buf, size_t cap)
{
    static const char prefix[] = "ErrorCode:";
    if (strncmp(message, prefix, sizeof prefix - 1))
        return false;
    const char *code = message + sizeof prefix - 1;
    const char *semicolon = strchr(code, ';');
    if (!semicolon || !semicolon[1])
        snprintf(buf, cap, "%.*s", semicolon ? (int)(semicolon - code) : (int)strlen(code), code);
    else
        snprintf(buf, cap, "%.*s: %s", (int)(semicolon - code), code, semicolon + 1);
    return true;
}

void out_service_error(long status, const char *body, size_t body_len, char *buf, size_t cap)
{
    char detail[512] = "";
    json_t *doc = body_len ? json_loadb(body, body_len, JSON_ALLOW_NUL, NULL) : NULL;
    const char *message = out_json_str(doc, "Message");
    if (!message)
        message = out_json_str(doc, "message");
    if (message && !split_error_code(message, detail, sizeof detail))
        snprintf(detail, sizeof detail, "%s", message);
    if (!message && body_len) {
        size_t n = 0;
        while (n < body_len && body[n] && body[n] != '\r' && body[n] != '\n')
            n++;
        snprintf(detail, sizeof detail, "%.*s", (int)n, body);
    }
    json_decref(doc);
    if (detail[0])
        snprintf(buf, cap, "%s (HTTP %ld)", detail, status);
    else
        snprintf(buf, cap, "HTTP %ld", status);
    flatten(buf);
}

/*
 * tools/iothub/output.h — what the tool prints: aligned text tables, JSON,
 * and the one-line form of a service error.
 *
 * A table collects every cell first and prints once it knows each column's
 * width (in code points, so UTF-8 names line up). Columns are separated by
 * two spaces; the last column is not padded, so lines have no trailing
 * blanks; an empty or absent cell prints as "-". All functions are pure
 * except the printers, which write to the FILE they are given.
 */
#ifndef IOTHUB_CLI_OUTPUT_H
#define IOTHUB_CLI_OUTPUT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct out_table {
    size_t columns;
    size_t rows;      /* including the header row when there is one */
    size_t capacity;  /* rows allocated */
    char **cells;     /* rows * columns, row-major, each malloc'd */
    bool has_header;
    bool failed;      /* an allocation failed; printing reports it */
} out_table;

/* A table with a header row (headers has `columns` entries), or without one
 * when headers is NULL (key/value listings). */
void out_table_init(out_table *t, size_t columns, const char *const *headers);
/* Appends a row of `columns` cells; NULL cells print as "-". */
void out_table_add(out_table *t, const char *const *cells);
/* Prints the table; false if it could not be built (out of memory). */
bool out_table_print(const out_table *t, FILE *out);
void out_table_free(out_table *t);

/* The display width of UTF-8 text: code points, not bytes. */
size_t out_text_width(const char *text);

/* Pretty JSON (2-space indent, keys in document order) and a newline. */
bool out_json_print(const json_t *value, FILE *out);

/* A string member of a JSON object, or NULL if absent / not a string. */
const char *out_json_str(const json_t *object, const char *key);
/* A member rendered as text for a table cell: strings as-is, numbers and
 * booleans in decimal / true-false, arrays of strings joined with ", ",
 * null/absent as NULL. Writes into buf (capacity cap) when it must format. */
const char *out_json_text(const json_t *object, const char *key, char *buf, size_t cap);

/* The one-line description of a failed HTTP call: "{Code}: {text} (HTTP n)"
 * from an IoT Hub error body {"Message":"ErrorCode:{Code};{text}",...}, or
 * the body's first line (or the status alone) when it has another shape.
 * Control characters are replaced so the result stays on one line. */
void out_service_error(long status, const char *body, size_t body_len, char *buf, size_t cap);

#endif

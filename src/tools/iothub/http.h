/*
 * tools/iothub/http.h — the service API client over libcurl.
 *
 * One call = one request to {url}{path}?api-version=2021-04-12[&query],
 * signed with a fresh one-hour service token from the connection string,
 * with an optional JSON body. A status >= 400 becomes the one-line error
 * built by out_service_error (the server's ErrorCode and message); a
 * transport failure names the URL. The connection is reused across calls
 * of one run.
 */
#ifndef IOTHUB_CLI_HTTP_H
#define IOTHUB_CLI_HTTP_H

#include <jansson.h>

#include "tools/iothub/cli.h"

typedef struct http_request {
    const char *method;        /* "GET", "PUT", "DELETE" */
    const char *path;          /* percent-encoded, starts with '/' */
    const char *query;         /* extra "k=v" pairs, or NULL */
    const char *if_match;      /* header value as sent, or NULL */
    const char *if_none_match; /* header value as sent, or NULL */
    const json_t *body;        /* NULL: no body */
    long timeout_s;            /* whole request; 0 = the default (120 s) */
    const void *raw_body;      /* sent as is instead of `body` when non-NULL */
    size_t raw_len;
    const char *const *headers; /* extra "Name: value" lines, NULL-terminated, or NULL */
} http_request;

/* Performs the request. On success (2xx) returns CLI_EXIT_OK and sets *reply
 * to the parsed JSON body (NULL when the body is empty); the caller
 * json_decref()s it. On failure prints the one-line error and returns
 * CLI_EXIT_FAILURE. reply may be NULL when the body is not wanted. */
int http_call(cli_ctx *ctx, const http_request *req, json_t **reply);

/* Appends the percent-encoded form of id to path (capacity cap, which holds
 * a NUL-terminated string). False when it does not fit. */
bool http_path_append_id(char *path, size_t cap, const char *id);

/* {root}{device}[/modules/{module}]{suffix} into path (capacity cap), the
 * ids percent-encoded: root is the collection ("/devices/", "/twins/"),
 * module NULL for a device, suffix "" or a sub-resource ("/methods").
 * False when it does not fit. */
bool http_identity_path(char *path, size_t cap, const char *root, const char *device,
                        const char *module, const char *suffix);

/* Releases the connection; safe to call when no request was made. */
void http_close(cli_ctx *ctx);

#endif

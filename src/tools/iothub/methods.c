/*
 * tools/iothub/methods.c — `iothub method invoke`: call a direct method on
 * a device or module through POST /twins/{id}[/modules/{m}]/methods
 * (service-rest.md "Direct methods").
 *
 *   method invoke DEVICE NAME [--module M] [--payload JSON]
 *                 [--timeout S] [--connect-timeout S]
 *
 * --payload is parsed here (any JSON value; default null) so a typo is a
 * usage error (exit 2) that never reaches the service; the timeouts are
 * checked against the service's ranges (5..300 and 0..300) for the same
 * reason. The HTTP request may last as long as both timeouts together, so
 * its own limit is set to that plus a margin. Output: "Status  N" and
 * "Payload  JSON" lines, or with --json the service's answer as is
 * ({"status","payload"}). Any failure of the call (device offline 404,
 * timeout 504, invalid answer 502) is the one-line error and exit 1.
 */
#include <stdlib.h>
#include <string.h>

#include "tools/iothub/cli.h"
#include "tools/iothub/http.h"
#include "tools/iothub/output.h"

#define METHOD_PATH_MAX 2048
#define METHOD_DEFAULT_TIMEOUT_S 30
#define METHOD_HTTP_MARGIN_S 15

/* A seconds option within [min, max]; `dflt` when absent. */
static int seconds_option(cli_ctx *ctx, const cli_invocation *inv, const char *name,
                          uint64_t min, uint64_t max, uint64_t dflt, uint64_t *out)
{
    const char *text = cli_value(inv, name);
    *out = dflt;
    if (!text)
        return CLI_EXIT_OK;
    if (!cli_parse_u64(text, max, out) || *out < min)
        return cli_usage_error(ctx, "%s must be a whole number of seconds within %llu..%llu",
                               name, (unsigned long long)min, (unsigned long long)max);
    return CLI_EXIT_OK;
}

/* The request body {"methodName","payload","responseTimeoutInSeconds",
 * "connectTimeoutInSeconds"}; *total_s = how long the call may last. */
static int build_body(cli_ctx *ctx, const cli_invocation *inv, json_t **body, long *total_s)
{
    uint64_t timeout, connect_timeout;
    int rc = seconds_option(ctx, inv, "--timeout", 5, 300, METHOD_DEFAULT_TIMEOUT_S, &timeout);
    if (rc == CLI_EXIT_OK)
        rc = seconds_option(ctx, inv, "--connect-timeout", 0, 300, 0, &connect_timeout);
    if (rc != CLI_EXIT_OK)
        return rc;
    const char *text = cli_value(inv, "--payload");
    json_t *payload = json_null();
    if (text) {
        json_error_t jerr;
        payload = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        if (!payload)
            return cli_usage_error(ctx, "--payload: invalid JSON: %s", jerr.text);
    }
    *body = json_pack("{s:s, s:o, s:I, s:I}", "methodName", inv->positional[1], "payload",
                      payload, "responseTimeoutInSeconds", (json_int_t)timeout,
                      "connectTimeoutInSeconds", (json_int_t)connect_timeout);
    *total_s = (long)(timeout + connect_timeout) + METHOD_HTTP_MARGIN_S;
    return *body ? CLI_EXIT_OK : cli_fail(ctx, "out of memory");
}

/* Prints the device's answer (or the JSON with --json). */
static int print_result(cli_ctx *ctx, const json_t *result)
{
    if (ctx->json)
        return cli_print_json(ctx, result);
    char status[32];
    char *payload = json_dumps(json_object_get(result, "payload"),
                               JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    const char *rows[][2] = {
        {"Status", out_json_text(result, "status", status, sizeof status)},
        {"Payload", payload ? payload : "null"},
    };
    int rc = cli_print_fields(ctx, rows, sizeof rows / sizeof rows[0]);
    free(payload);
    return rc;
}

static int method_invoke(cli_ctx *ctx, const cli_invocation *inv)
{
    char path[METHOD_PATH_MAX];
    json_t *body = NULL, *result = NULL;
    long total_s = 0;
    if (!*inv->positional[1])
        return cli_usage_error(ctx, "the method name must not be empty");
    int rc = cli_identity_path(ctx, inv, "/twins/", "/methods", path, sizeof path);
    if (rc == CLI_EXIT_OK)
        rc = build_body(ctx, inv, &body, &total_s);
    if (rc == CLI_EXIT_OK) {
        http_request req = {.method = "POST", .path = path, .body = body, .timeout_s = total_s};
        rc = http_call(ctx, &req, &result);
    }
    if (rc == CLI_EXIT_OK && !json_is_object(result))
        rc = cli_fail(ctx, "the service returned something other than a method result");
    if (rc == CLI_EXIT_OK)
        rc = print_result(ctx, result);
    json_decref(body);
    json_decref(result);
    return rc;
}

static const cli_option invoke_options[] = {
    {"--module", "M", "a module of the device"},
    {"--payload", "JSON", "the method's payload, any JSON value (default null)"},
    {"--timeout", "S", "seconds to wait for the answer, 5..300 (default 30)"},
    {"--connect-timeout", "S", "seconds to wait for the device to connect, 0..300 (default 0)"},
    {NULL, NULL, NULL},
};

const cli_command cli_method_commands[] = {
    {"method", "invoke",
     "DEVICE NAME [--module M] [--payload JSON] [--timeout S] [--connect-timeout S]",
     "call a direct method on a connected device (or module)", 2, 2, invoke_options,
     method_invoke},
};
const size_t cli_method_command_count = sizeof cli_method_commands / sizeof cli_method_commands[0];

/*
 * tools/iothub/twins.c — `iothub twin ...`: device and module twins over
 * the service API's /twins routes (service-rest.md "Twins").
 *
 *   twin show ID [--module M]                       GET
 *   twin update ID [--module M] (--desired JSON and/or --tags JSON |
 *               --json-patch FILE) [--etag E]        PATCH (merge)
 *   twin replace ID [--module M] --file FILE [--etag E]   PUT
 *
 * The JSON given on the command line is parsed here first, so a typo is a
 * usage error (exit 2) that never reaches the service; the service still
 * judges the limits. FILE may be "-" for standard input. --etag makes the
 * write conditional (If-Match); without it the write is unconditional.
 * Human output is a key/value listing with the sections as compact JSON;
 * --json prints the service's twin as is.
 */
#include <stdlib.h>
#include <string.h>

#include "tools/iothub/cli.h"
#include "tools/iothub/http.h"
#include "tools/iothub/output.h"

#define TWIN_PATH_MAX 2048

/* A section as one line of compact JSON (malloc'd), without the server's
 * "$metadata" noise; NULL when absent. */
static char *section_text(const json_t *section)
{
    if (!section)
        return NULL;
    json_t *copy = json_copy((json_t *)section);
    if (!copy)
        return NULL;
    json_object_del(copy, "$metadata");
    json_object_del(copy, "$version");
    char *text = json_dumps(copy, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(copy);
    return text;
}

/* Prints one twin as "Field  value" lines (or the JSON with --json). */
static int print_twin(cli_ctx *ctx, const json_t *twin)
{
    if (ctx->json)
        return cli_print_json(ctx, twin);
    const json_t *props = json_object_get(twin, "properties");
    const json_t *desired = json_object_get(props, "desired");
    const json_t *reported = json_object_get(props, "reported");
    char version[32], dver[32], rver[32];
    char *tags = section_text(json_object_get(twin, "tags"));
    char *dtext = section_text(desired);
    char *rtext = section_text(reported);
    const char *module = out_json_str(twin, "moduleId");
    const char *rows[][2] = {
        {"Device ID", out_json_str(twin, "deviceId")},
        {module ? "Module ID" : NULL, module},
        {"ETag", out_json_str(twin, "etag")},
        {"Version", out_json_text(twin, "version", version, sizeof version)},
        {"Status", out_json_str(twin, "status")},
        {"Connection state", out_json_str(twin, "connectionState")},
        {"Tags", tags},
        {"Desired $version", out_json_text(desired, "$version", dver, sizeof dver)},
        {"Desired", dtext},
        {"Reported $version", out_json_text(reported, "$version", rver, sizeof rver)},
        {"Reported", rtext},
    };
    int rc = cli_print_fields(ctx, rows, sizeof rows / sizeof rows[0]);
    free(tags);
    free(dtext);
    free(rtext);
    return rc;
}

/* Sends one request and prints the twin it returns. */
static int call_and_print(cli_ctx *ctx, const http_request *req)
{
    json_t *twin = NULL;
    int rc = http_call(ctx, req, &twin);
    if (rc == CLI_EXIT_OK && !json_is_object(twin))
        rc = cli_fail(ctx, "the service returned something other than a twin");
    if (rc == CLI_EXIT_OK)
        rc = print_twin(ctx, twin);
    json_decref(twin);
    return rc;
}

/* If-Match for --etag: quoted as HTTP wants ("*" as is); NULL without it. */
static const char *if_match_from(const cli_invocation *inv, char *buf, size_t cap)
{
    const char *etag = cli_value(inv, "--etag");
    if (!etag || !*etag)
        return NULL;
    bool as_is = etag[0] == '"' || strcmp(etag, "*") == 0;
    snprintf(buf, cap, as_is ? "%s" : "\"%s\"", etag);
    return buf;
}

/* Parses a JSON object given on the command line (option `what`). */
static int parse_object_arg(cli_ctx *ctx, const char *what, const char *text, json_t **out)
{
    json_error_t jerr;
    *out = json_loads(text, JSON_ALLOW_NUL, &jerr);
    if (!*out)
        return cli_usage_error(ctx, "%s: invalid JSON: %s", what, jerr.text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return cli_usage_error(ctx, "%s must be a JSON object", what);
    }
    return CLI_EXIT_OK;
}

/* Reads a JSON object from FILE ("-" = standard input). */
static int load_object_file(cli_ctx *ctx, const char *what, const char *file, json_t **out)
{
    json_error_t jerr;
    *out = strcmp(file, "-") == 0 ? json_loadf(stdin, 0, &jerr) : json_load_file(file, 0, &jerr);
    if (!*out)
        return cli_usage_error(ctx, "%s %s: %s", what, file, jerr.text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return cli_usage_error(ctx, "%s %s: not a JSON object", what, file);
    }
    return CLI_EXIT_OK;
}

/* ---- commands -------------------------------------------------------------------- */

static int twin_show(cli_ctx *ctx, const cli_invocation *inv)
{
    char path[TWIN_PATH_MAX];
    int rc = cli_identity_path(ctx, inv, "/twins/", "", path, sizeof path);
    if (rc != CLI_EXIT_OK)
        return rc;
    http_request req = {.method = "GET", .path = path};
    return call_and_print(ctx, &req);
}

/* The PATCH body from --desired / --tags, or from --json-patch FILE. */
static int update_body(cli_ctx *ctx, const cli_invocation *inv, json_t **body)
{
    const char *desired = cli_value(inv, "--desired");
    const char *tags = cli_value(inv, "--tags");
    const char *file = cli_value(inv, "--json-patch");
    *body = NULL;
    if (file && (desired || tags))
        return cli_usage_error(ctx, "--json-patch excludes --desired and --tags");
    if (!file && !desired && !tags)
        return cli_usage_error(ctx, "give --desired JSON, --tags JSON or --json-patch FILE");
    if (file)
        return load_object_file(ctx, "--json-patch", file, body);
    json_t *d = NULL, *t = NULL;
    int rc = desired ? parse_object_arg(ctx, "--desired", desired, &d) : CLI_EXIT_OK;
    if (rc == CLI_EXIT_OK && tags)
        rc = parse_object_arg(ctx, "--tags", tags, &t);
    if (rc == CLI_EXIT_OK) {
        *body = json_object();
        bool ok = *body && (!t || json_object_set(*body, "tags", t) == 0) &&
                  (!d || json_object_set_new(*body, "properties", json_pack("{s:O}", "desired",
                                                                            d)) == 0);
        if (!ok)
            rc = cli_fail(ctx, "out of memory");
    }
    json_decref(d);
    json_decref(t);
    return rc;
}

static int twin_update(cli_ctx *ctx, const cli_invocation *inv)
{
    char path[TWIN_PATH_MAX], if_match[CLI_FIELD_MAX + 3];
    json_t *body = NULL;
    int rc = cli_identity_path(ctx, inv, "/twins/", "", path, sizeof path);
    if (rc == CLI_EXIT_OK)
        rc = update_body(ctx, inv, &body);
    if (rc == CLI_EXIT_OK) {
        http_request req = {.method = "PATCH", .path = path,
                            .if_match = if_match_from(inv, if_match, sizeof if_match),
                            .body = body};
        rc = call_and_print(ctx, &req);
    }
    json_decref(body);
    return rc;
}

static int twin_replace(cli_ctx *ctx, const cli_invocation *inv)
{
    char path[TWIN_PATH_MAX], if_match[CLI_FIELD_MAX + 3];
    json_t *body = NULL;
    const char *file = cli_value(inv, "--file");
    int rc = cli_identity_path(ctx, inv, "/twins/", "", path, sizeof path);
    if (rc == CLI_EXIT_OK && !file)
        rc = cli_usage_error(ctx, "twin replace needs --file FILE");
    if (rc == CLI_EXIT_OK)
        rc = load_object_file(ctx, "--file", file, &body);
    if (rc == CLI_EXIT_OK) {
        http_request req = {.method = "PUT", .path = path,
                            .if_match = if_match_from(inv, if_match, sizeof if_match),
                            .body = body};
        rc = call_and_print(ctx, &req);
    }
    json_decref(body);
    return rc;
}

/* ---- the table ---------------------------------------------------------------------- */

#define TWIN_MODULE_OPTION {"--module", "M", "a module of the device"}
#define TWIN_ETAG_OPTION {"--etag", "E", "write only if the twin still has this etag"}

static const cli_option show_options[] = {TWIN_MODULE_OPTION, {NULL, NULL, NULL}};
static const cli_option update_options[] = {
    TWIN_MODULE_OPTION,
    {"--desired", "JSON", "merge patch of the desired properties (null removes a key)"},
    {"--tags", "JSON", "merge patch of the tags"},
    {"--json-patch", "FILE", "the whole PATCH body from FILE (- = stdin)"},
    TWIN_ETAG_OPTION,
    {NULL, NULL, NULL},
};
static const cli_option replace_options[] = {
    TWIN_MODULE_OPTION,
    {"--file", "FILE", "the new twin: its tags and properties.desired (- = stdin)"},
    TWIN_ETAG_OPTION,
    {NULL, NULL, NULL},
};

const cli_command cli_twin_commands[] = {
    {"twin", "show", "ID [--module M]", "show a device (or module) twin", 1, 1, show_options,
     twin_show},
    {"twin", "update", "ID [--module M] (--desired JSON | --tags JSON | --json-patch FILE) "
                       "[--etag E]",
     "merge-patch a twin's tags and desired properties", 1, 1, update_options, twin_update},
    {"twin", "replace", "ID [--module M] --file FILE [--etag E]",
     "replace a twin's tags and desired properties", 1, 1, replace_options, twin_replace},
};
const size_t cli_twin_command_count = sizeof cli_twin_commands / sizeof cli_twin_commands[0];

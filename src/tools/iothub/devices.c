/*
 * tools/iothub/devices.c — `iothub device ...`: device and module
 * identities over the service API's /devices routes.
 *
 * Each command is one or two requests: create is a conditional PUT
 * (If-None-Match: * so an existing identity is an error, not a silent
 * replacement); enable/disable read the identity and write it back with
 * If-Match on the etag just read, so a concurrent change fails with
 * PreconditionFailed instead of being overwritten; connection-string reads
 * the identity for its key. Human output is a key/value listing for one
 * identity and a table for many; --json prints the service's JSON as is.
 */
#include <stdlib.h>
#include <string.h>

#include "tools/iothub/cli.h"
#include "tools/iothub/http.h"
#include "tools/iothub/output.h"
#include "tools/iothub/token.h"

#define DEVICE_PATH_MAX 2048
#define DEVICE_LIST_TOP_MAX 100000

/* ---- shared helpers ------------------------------------------------------------- */

/* The service's lastActivityTime, with IoT Hub's "never" (year 1) as NULL. */
static const char *last_activity(const json_t *device)
{
    const char *when = out_json_str(device, "lastActivityTime");
    return when && strncmp(when, "0001-01-01", 10) ? when : NULL;
}

int cli_identity_path(cli_ctx *ctx, const cli_invocation *inv, const char *root,
                      const char *suffix, char *path, size_t cap)
{
    const char *device = inv->positional[0];
    const char *module = cli_value(inv, "--module");
    if (!*device)
        return cli_usage_error(ctx, "the device id must not be empty");
    if (module && !*module)
        return cli_usage_error(ctx, "the module id must not be empty");
    if (!http_identity_path(path, cap, root, device, module, suffix))
        return cli_usage_error(ctx, "device or module id too long");
    return CLI_EXIT_OK;
}

static const json_t *object_path(const json_t *object, const char *first, const char *second)
{
    const json_t *inner = json_object_get(object, first);
    return second ? json_object_get(inner, second) : inner;
}

/* Prints one identity as "Field  value" lines. */
static int print_identity(cli_ctx *ctx, const json_t *device)
{
    if (ctx->json)
        return cli_print_json(ctx, device);
    const json_t *auth = json_object_get(device, "authentication");
    const json_t *keys = object_path(device, "authentication", "symmetricKey");
    const json_t *prints = object_path(device, "authentication", "x509Thumbprint");
    const char *module = out_json_str(device, "moduleId");
    char count[32];
    const char *rows[][2] = {
        {"Device ID", out_json_str(device, "deviceId")},
        {module ? "Module ID" : NULL, module},
        {"Status", out_json_str(device, "status")},
        {"Status reason", out_json_str(device, "statusReason")},
        {"Connection state", out_json_str(device, "connectionState")},
        {"Last activity", last_activity(device)},
        {"Authentication", out_json_str(auth, "type")},
        {"Primary key", out_json_str(keys, "primaryKey")},
        {"Secondary key", out_json_str(keys, "secondaryKey")},
        {"Primary thumbprint", out_json_str(prints, "primaryThumbprint")},
        {"Secondary thumbprint", out_json_str(prints, "secondaryThumbprint")},
        {"Queued C2D messages", out_json_text(device, "cloudToDeviceMessageCount", count, sizeof count)},
        {"ETag", out_json_str(device, "etag")},
        {"Generation ID", out_json_str(device, "generationId")},
    };
    return cli_print_fields(ctx, rows, sizeof rows / sizeof rows[0]);
}

/* GETs one identity. */
static int fetch_identity(cli_ctx *ctx, const char *path, json_t **device)
{
    http_request req = {.method = "GET", .path = path};
    int rc = http_call(ctx, &req, device);
    if (rc == CLI_EXIT_OK && !json_is_object(*device)) {
        json_decref(*device);
        *device = NULL;
        return cli_fail(ctx, "the service returned something other than a device");
    }
    return rc;
}

/* ---- create ----------------------------------------------------------------------- */

/* The "authentication" member from the key / thumbprint flags. */
static json_t *authentication_from_args(const cli_invocation *inv)
{
    if (cli_flag(inv, "--x509")) {
        const char *secondary = cli_value(inv, "--secondary-thumbprint");
        return json_pack("{s:s, s:{s:s, s:s*}}", "type", "selfSigned", "x509Thumbprint",
                         "primaryThumbprint", cli_value(inv, "--primary-thumbprint"),
                         "secondaryThumbprint", secondary);
    }
    const char *primary = cli_value(inv, "--primary-key");
    const char *secondary = cli_value(inv, "--secondary-key");
    return json_pack("{s:s, s:{s:s, s:s}}", "type", "sas", "symmetricKey", "primaryKey",
                     primary ? primary : "", "secondaryKey", secondary ? secondary : "");
}

/* Rejects flag combinations that do not describe one authentication type. */
static int check_create_flags(cli_ctx *ctx, const cli_invocation *inv)
{
    bool x509 = cli_flag(inv, "--x509");
    bool keys = cli_flag(inv, "--primary-key") || cli_flag(inv, "--secondary-key");
    bool prints = cli_flag(inv, "--primary-thumbprint") || cli_flag(inv, "--secondary-thumbprint");
    if (x509 && keys)
        return cli_usage_error(ctx, "--x509 and --primary-key/--secondary-key exclude each other");
    if (prints && !x509)
        return cli_usage_error(ctx, "thumbprints need --x509");
    if (x509 && !cli_value(inv, "--primary-thumbprint"))
        return cli_usage_error(ctx, "--x509 needs --primary-thumbprint T");
    return CLI_EXIT_OK;
}

static int device_create(cli_ctx *ctx, const cli_invocation *inv)
{
    char path[DEVICE_PATH_MAX];
    int rc = check_create_flags(ctx, inv);
    if (rc == CLI_EXIT_OK)
        rc = cli_identity_path(ctx, inv, "/devices/", "", path, sizeof path);
    if (rc != CLI_EXIT_OK)
        return rc;
    const char *module = cli_value(inv, "--module");
    json_t *body = json_pack("{s:s, s:s*, s:s, s:o}", "deviceId", inv->positional[0], "moduleId",
                             module, "status", cli_flag(inv, "--disabled") ? "disabled" : "enabled",
                             "authentication", authentication_from_args(inv));
    if (!body)
        return cli_fail(ctx, "out of memory");
    json_t *device = NULL;
    http_request req = {.method = "PUT", .path = path, .if_none_match = "*", .body = body};
    rc = http_call(ctx, &req, &device);
    json_decref(body);
    if (rc == CLI_EXIT_OK)
        rc = device ? print_identity(ctx, device) : cli_fail(ctx, "the service sent no device");
    json_decref(device);
    return rc;
}

/* ---- show / list / delete ------------------------------------------------------------ */

static int device_show(cli_ctx *ctx, const cli_invocation *inv)
{
    char path[DEVICE_PATH_MAX];
    json_t *device = NULL;
    int rc = cli_identity_path(ctx, inv, "/devices/", "", path, sizeof path);
    if (rc == CLI_EXIT_OK)
        rc = fetch_identity(ctx, path, &device);
    if (rc == CLI_EXIT_OK)
        rc = print_identity(ctx, device);
    json_decref(device);
    return rc;
}

/* One table row per device. */
static int print_device_table(cli_ctx *ctx, const json_t *devices)
{
    static const char *const headers[] = {"DEVICE ID", "STATUS", "CONNECTION", "AUTH",
                                          "LAST ACTIVITY"};
    out_table t;
    out_table_init(&t, 5, headers);
    size_t i;
    const json_t *d;
    json_array_foreach(devices, i, d) {
        const char *row[] = {out_json_str(d, "deviceId"), out_json_str(d, "status"),
                             out_json_str(d, "connectionState"),
                             out_json_str(json_object_get(d, "authentication"), "type"),
                             last_activity(d)};
        out_table_add(&t, row);
    }
    bool ok = out_table_print(&t, ctx->out);
    out_table_free(&t);
    return ok ? CLI_EXIT_OK : cli_fail(ctx, "out of memory");
}

static int device_list(cli_ctx *ctx, const cli_invocation *inv)
{
    const char *top = cli_value(inv, "--top");
    uint64_t n;
    if (top && (!cli_parse_u64(top, DEVICE_LIST_TOP_MAX, &n) || n == 0))
        return cli_usage_error(ctx, "--top needs a whole number from 1 to %d", DEVICE_LIST_TOP_MAX);
    char query[32] = "";
    if (top)
        snprintf(query, sizeof query, "top=%s", top);
    json_t *devices = NULL;
    http_request req = {.method = "GET", .path = "/devices", .query = top ? query : NULL};
    int rc = http_call(ctx, &req, &devices);
    if (rc == CLI_EXIT_OK && !json_is_array(devices))
        rc = cli_fail(ctx, "the service returned something other than a device list");
    if (rc == CLI_EXIT_OK)
        rc = ctx->json ? cli_print_json(ctx, devices) : print_device_table(ctx, devices);
    json_decref(devices);
    return rc;
}

/* If-Match for an etag from the user: quoted, as HTTP wants. */
static void quote_etag(const char *etag, char *buf, size_t cap)
{
    bool quoted = etag[0] == '"' || !strcmp(etag, "*");
    snprintf(buf, cap, quoted ? "%s" : "\"%s\"", etag);
}

static int device_delete(cli_ctx *ctx, const cli_invocation *inv)
{
    char path[DEVICE_PATH_MAX];
    int rc = cli_identity_path(ctx, inv, "/devices/", "", path, sizeof path);
    if (rc != CLI_EXIT_OK)
        return rc;
    const char *etag = cli_value(inv, "--etag");
    char if_match[CLI_FIELD_MAX + 3];
    quote_etag(etag && *etag ? etag : "*", if_match, sizeof if_match);
    http_request req = {.method = "DELETE", .path = path, .if_match = if_match};
    rc = http_call(ctx, &req, NULL);
    if (rc != CLI_EXIT_OK)
        return rc;
    const char *module = cli_value(inv, "--module");
    if (!ctx->json) {
        fprintf(ctx->out, "Deleted %s %s%s%s\n", module ? "module" : "device", inv->positional[0],
                module ? "/" : "", module ? module : "");
        return CLI_EXIT_OK;
    }
    json_t *result = json_pack("{s:s, s:s?, s:b}", "deviceId", inv->positional[0], "moduleId",
                               module, "deleted", 1);
    rc = result ? cli_print_json(ctx, result) : cli_fail(ctx, "out of memory");
    json_decref(result);
    return rc;
}

/* ---- enable / disable ------------------------------------------------------------------- */

/* Reads the identity, sets its status (and reason), writes it back on the
 * etag that was read. */
static int set_status(cli_ctx *ctx, const cli_invocation *inv, const char *status,
                      const char *reason)
{
    char path[DEVICE_PATH_MAX];
    json_t *device = NULL;
    int rc = cli_identity_path(ctx, inv, "/devices/", "", path, sizeof path);
    if (rc == CLI_EXIT_OK)
        rc = fetch_identity(ctx, path, &device);
    if (rc != CLI_EXIT_OK)
        return rc;
    const char *etag = out_json_str(device, "etag");
    char if_match[CLI_FIELD_MAX + 3];
    quote_etag(etag && *etag ? etag : "*", if_match, sizeof if_match);
    json_object_set_new(device, "status", json_string(status));
    if (reason)
        json_object_set_new(device, "statusReason", json_string(reason));
    json_t *updated = NULL;
    http_request req = {.method = "PUT", .path = path, .if_match = if_match, .body = device};
    rc = http_call(ctx, &req, &updated);
    if (rc == CLI_EXIT_OK)
        rc = print_identity(ctx, updated ? updated : device);
    json_decref(updated);
    json_decref(device);
    return rc;
}

static int device_enable(cli_ctx *ctx, const cli_invocation *inv)
{
    return set_status(ctx, inv, "enabled", NULL);
}

static int device_disable(cli_ctx *ctx, const cli_invocation *inv)
{
    return set_status(ctx, inv, "disabled", cli_value(inv, "--reason"));
}

/* ---- connection-string --------------------------------------------------------------------- */

/* The key named by --key from the identity's symmetric keys, or NULL for
 * an X.509 identity (*x509 set). Prints the error when there is neither. */
static int choose_device_key(cli_ctx *ctx, const json_t *device, const char *which,
                             const char **key, bool *x509)
{
    const json_t *auth = json_object_get(device, "authentication");
    const char *type = out_json_str(auth, "type");
    *key = NULL;
    *x509 = type && (!strcmp(type, "selfSigned") || !strcmp(type, "certificateAuthority"));
    if (*x509)
        return CLI_EXIT_OK;
    const json_t *keys = json_object_get(auth, "symmetricKey");
    *key = out_json_str(keys, !strcmp(which, "secondary") ? "secondaryKey" : "primaryKey");
    if (!*key || !**key)
        return cli_fail(ctx, "the identity has no %s key (authentication type %s)", which,
                        type ? type : "unknown");
    return CLI_EXIT_OK;
}

static int device_connection_string(cli_ctx *ctx, const cli_invocation *inv)
{
    const char *which = cli_value(inv, "--key");
    if (!which)
        which = "primary";
    if (strcmp(which, "primary") && strcmp(which, "secondary"))
        return cli_usage_error(ctx, "--key takes primary or secondary");
    char path[DEVICE_PATH_MAX];
    json_t *device = NULL;
    int rc = cli_identity_path(ctx, inv, "/devices/", "", path, sizeof path);
    if (rc == CLI_EXIT_OK)
        rc = fetch_identity(ctx, path, &device);
    const char *key = NULL;
    bool x509 = false;
    if (rc == CLI_EXIT_OK)
        rc = choose_device_key(ctx, device, which, &key, &x509);
    char text[4 * CLI_FIELD_MAX];
    if (rc == CLI_EXIT_OK &&
        !cli_device_connstr(ctx->settings.connection.host, inv->positional[0],
                            cli_value(inv, "--module"), key, text, sizeof text))
        rc = cli_fail(ctx, "connection string too long");
    if (rc == CLI_EXIT_OK && ctx->json) {
        json_t *result = json_pack("{s:s}", "connectionString", text);
        rc = result ? cli_print_json(ctx, result) : cli_fail(ctx, "out of memory");
        json_decref(result);
    } else if (rc == CLI_EXIT_OK) {
        fprintf(ctx->out, "%s\n", text);
    }
    json_decref(device);
    return rc;
}

int cli_fetch_device_key(cli_ctx *ctx, const char *device, const char *module, const char *which,
                         char *key, size_t cap)
{
    char path[DEVICE_PATH_MAX];
    json_t *identity = NULL;
    const char *found = NULL;
    bool x509 = false;
    if (!*device || (module && !*module) ||
        !http_identity_path(path, sizeof path, "/devices/", device, module, ""))
        return cli_usage_error(ctx, "bad device or module id");
    int rc = fetch_identity(ctx, path, &identity);
    if (rc == CLI_EXIT_OK)
        rc = choose_device_key(ctx, identity, which, &found, &x509);
    if (rc == CLI_EXIT_OK && x509)
        rc = cli_fail(ctx, "%s authenticates with X.509 and has no key", device);
    else if (rc == CLI_EXIT_OK && strlen(found) >= cap)
        rc = cli_fail(ctx, "the %s key is too long", which);
    else if (rc == CLI_EXIT_OK)
        snprintf(key, cap, "%s", found);
    json_decref(identity);
    return rc;
}

/* ---- the table ---------------------------------------------------------------------------- */

#define MODULE_OPTION {"--module", "M", "a module of the device"}

static const cli_option create_options[] = {
    MODULE_OPTION,
    {"--primary-key", "K", "base64 primary key (default: generated by the hub)"},
    {"--secondary-key", "K", "base64 secondary key (default: generated by the hub)"},
    {"--x509", NULL, "authenticate with a self-signed X.509 certificate"},
    {"--primary-thumbprint", "T", "SHA-1 or SHA-256 hex thumbprint (with --x509)"},
    {"--secondary-thumbprint", "T", "second thumbprint (with --x509)"},
    {"--disabled", NULL, "create the identity disabled"},
    {NULL, NULL, NULL},
};
static const cli_option module_options[] = {MODULE_OPTION, {NULL, NULL, NULL}};
static const cli_option list_options[] = {
    {"--top", "N", "at most N devices"},
    {NULL, NULL, NULL},
};
static const cli_option delete_options[] = {
    MODULE_OPTION,
    {"--etag", "E", "delete only if the identity still has this etag"},
    {NULL, NULL, NULL},
};
static const cli_option disable_options[] = {
    MODULE_OPTION,
    {"--reason", "TEXT", "status reason to record"},
    {NULL, NULL, NULL},
};
static const cli_option connstr_options[] = {
    MODULE_OPTION,
    {"--key", "primary|secondary", "which key to use (default primary)"},
    {NULL, NULL, NULL},
};

const cli_command cli_device_commands[] = {
    {"device", "create", "ID [--module M] [--primary-key K --secondary-key K | --x509 "
                         "--primary-thumbprint T [--secondary-thumbprint T]] [--disabled]",
     "create a device (or module) identity; fails if it exists", 1, 1, create_options,
     device_create},
    {"device", "show", "ID [--module M]", "show a device (or module) identity", 1, 1,
     module_options, device_show},
    {"device", "list", "[--top N]", "list devices: id, status, connection, auth, last activity", 0,
     0, list_options, device_list},
    {"device", "delete", "ID [--module M] [--etag E]", "delete a device (or module) identity", 1, 1,
     delete_options, device_delete},
    {"device", "enable", "ID [--module M]", "set the identity's status to enabled", 1, 1,
     module_options, device_enable},
    {"device", "disable", "ID [--module M] [--reason TEXT]",
     "set the identity's status to disabled (connected clients are dropped)", 1, 1,
     disable_options, device_disable},
    {"device", "connection-string", "ID [--module M] [--key primary|secondary]",
     "print the device connection string", 1, 1, connstr_options, device_connection_string},
};
const size_t cli_device_command_count = sizeof cli_device_commands / sizeof cli_device_commands[0];

/*
 * tools/iothub/sas_token.c — `iothub sas-token`: credentials for devices and
 * back ends, without a device SDK.
 *
 * --device prints the classic token (the MQTT 3.1.1 password and the HTTP
 * Authorization value) and the fields an MQTT 5 device puts in CONNECT; the
 * key comes from --key-value, else from the named policy (--policy, the
 * token then carries skn / sas-policy), else from the device identity on the
 * service. --policy alone prints a service token for the hub, signed with
 * the connection string's key when the connection string is for that
 * policy, else with the key read from GET /iothubd/policies.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/iothub/cli.h"
#include "tools/iothub/output.h"
#include "tools/iothub/token.h"
#include "util/time.h"

#define SAS_DEFAULT_SECONDS 3600u
#define SAS_MAX_SECONDS (10ull * 365 * 24 * 3600) /* ten years */

/* What the command line asked for, checked. */
typedef struct sas_request {
    const char *device, *module, *policy, *which, *key_value;
    uint64_t duration_s;
    char host[CLI_FIELD_MAX];
    char key[CLI_FIELD_MAX];
} sas_request;

/* Validates flags and fills the request (not yet the key). */
static int read_request(cli_ctx *ctx, const cli_invocation *inv, sas_request *r)
{
    memset(r, 0, sizeof *r);
    r->device = cli_value(inv, "--device");
    r->module = cli_value(inv, "--module");
    r->policy = cli_value(inv, "--policy");
    r->key_value = cli_value(inv, "--key-value");
    r->which = cli_value(inv, "--key") ? cli_value(inv, "--key") : "primary";
    const char *duration = cli_value(inv, "--duration");
    const char *host = cli_value(inv, "--hostname");
    r->duration_s = SAS_DEFAULT_SECONDS;
    if (!r->device && !r->policy)
        return cli_usage_error(ctx, "give --device ID or --policy NAME (see iothub sas-token --help)");
    if ((r->device && !*r->device) || (r->policy && !*r->policy) || (r->module && !*r->module))
        return cli_usage_error(ctx, "--device, --module and --policy need a non-empty value");
    if (r->module && !r->device)
        return cli_usage_error(ctx, "--module needs --device");
    if (strcmp(r->which, "primary") && strcmp(r->which, "secondary"))
        return cli_usage_error(ctx, "--key takes primary or secondary");
    if (duration && (!cli_parse_u64(duration, SAS_MAX_SECONDS, &r->duration_s) || !r->duration_s))
        return cli_usage_error(ctx, "--duration needs whole seconds from 1 to %llu", SAS_MAX_SECONDS);
    if (!host && ctx->settings.have_connection)
        host = ctx->settings.connection.host;
    if (!host || !*host)
        return cli_usage_error(ctx, "no hub host name: give --hostname NAME or a connection string");
    snprintf(r->host, sizeof r->host, "%s", host);
    return CLI_EXIT_OK;
}

/* Finds the signing key: --key-value, the policy's key, or the device's. */
static int find_key(cli_ctx *ctx, sas_request *r)
{
    const cli_settings *s = &ctx->settings;
    if (r->key_value) {
        snprintf(r->key, sizeof r->key, "%s", r->key_value);
        return CLI_EXIT_OK;
    }
    if (r->policy && s->have_connection && !strcmp(s->connection.policy, r->policy) &&
        !strcmp(r->which, "primary")) {
        snprintf(r->key, sizeof r->key, "%s", s->connection.key);
        return CLI_EXIT_OK;
    }
    if (r->policy)
        return cli_fetch_policy_key(ctx, r->policy, r->which, r->key, sizeof r->key);
    return cli_fetch_device_key(ctx, r->device, r->module, r->which, r->key, sizeof r->key);
}

/* "2026-11-29T18:00:00Z" for an epoch second. */
static void format_utc(uint64_t epoch_s, char *buf, size_t cap)
{
    time_t t = (time_t)epoch_s;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, cap, "%" PRIu64, epoch_s);
}

/* ---- device tokens ---------------------------------------------------------------------- */

static json_t *device_token_json(const cli_device_token *t, const char *host)
{
    return json_pack("{s:s, s:s, s:I, s:{s:s, s:s, s:{s:s, s:s, s:s, s:s, s:s*}, s:s}}", "token",
                     t->classic, "resource", t->resource, "expiry", (json_int_t)t->expiry_s,
                     "mqtt5", "clientId", t->client_id, "authenticationMethod", "SAS",
                     "userProperties", "host", host, "api-version", CLI_MQTT5_API_VERSION,
                     "sas-at", t->sas_at, "sas-expiry", t->sas_expiry, "sas-policy",
                     t->policy[0] ? t->policy : NULL, "authenticationData", t->auth_data_b64);
}

/* The token on the first line (for scripts), then the MQTT 5 fields. */
static int print_device_token(cli_ctx *ctx, const cli_device_token *t, const char *host)
{
    char until[32];
    format_utc(t->expiry_s, until, sizeof until);
    fprintf(ctx->out, "%s\n\nMQTT 5 CONNECT (valid until %s):\n", t->classic, until);
    const char *rows[][2] = {
        {"Client Identifier", t->client_id},
        {"Authentication Method", "SAS"},
        {"User Property host", host},
        {"User Property api-version", CLI_MQTT5_API_VERSION},
        {"User Property sas-at", t->sas_at},
        {"User Property sas-expiry", t->sas_expiry},
        {"User Property sas-policy", t->policy},
        {"Authentication Data (base64)", t->auth_data_b64},
    };
    out_table table;
    out_table_init(&table, 2, NULL);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (rows[i][1][0]) /* sas-policy only when signing with a policy key */
            out_table_add(&table, rows[i]);
    bool ok = out_table_print(&table, ctx->out);
    out_table_free(&table);
    return ok ? CLI_EXIT_OK : cli_fail(ctx, "out of memory");
}

static int device_token(cli_ctx *ctx, const sas_request *r)
{
    cli_device_token t;
    char why[128];
    if (!cli_device_token_make(r->host, r->device, r->module, r->policy, r->key, time_wall_ms(),
                               r->duration_s, &t, why, sizeof why))
        return cli_fail(ctx, "cannot sign: %s", why);
    int rc;
    if (ctx->json) {
        json_t *doc = device_token_json(&t, r->host);
        rc = doc ? cli_print_json(ctx, doc) : cli_fail(ctx, "out of memory");
        json_decref(doc);
    } else {
        rc = print_device_token(ctx, &t, r->host);
    }
    cli_device_token_free(&t);
    return rc;
}

/* ---- service tokens -------------------------------------------------------------------- */

static int service_token(cli_ctx *ctx, const sas_request *r)
{
    uint64_t expiry_s = time_wall_ms() / 1000u + r->duration_s;
    char *token = cli_service_token(r->host, r->policy, r->key, expiry_s);
    if (!token)
        return cli_fail(ctx, "cannot sign: the key of policy '%s' is not valid base64", r->policy);
    int rc = CLI_EXIT_OK;
    if (ctx->json) {
        json_t *doc = json_pack("{s:s, s:s, s:s, s:I}", "token", token, "resource", r->host,
                                "policy", r->policy, "expiry", (json_int_t)expiry_s);
        rc = doc ? cli_print_json(ctx, doc) : cli_fail(ctx, "out of memory");
        json_decref(doc);
    } else {
        fprintf(ctx->out, "%s\n", token);
    }
    free(token);
    return rc;
}

static int sas_token(cli_ctx *ctx, const cli_invocation *inv)
{
    sas_request r;
    int rc = read_request(ctx, inv, &r);
    if (rc == CLI_EXIT_OK)
        rc = find_key(ctx, &r);
    if (rc != CLI_EXIT_OK)
        return rc;
    return r.device ? device_token(ctx, &r) : service_token(ctx, &r);
}

static const cli_option sas_options[] = {
    {"--device", "ID", "a device token (classic and MQTT 5 fields)"},
    {"--module", "M", "for a module of the device"},
    {"--policy", "NAME", "a service token for this shared access policy (with --device: a "
                         "device token signed with the policy's key)"},
    {"--duration", "SECONDS", "validity, default 3600"},
    {"--key", "primary|secondary", "which key to sign with (default primary)"},
    {"--key-value", "K", "sign with this base64 key instead of asking the service"},
    {"--hostname", "NAME", "hub host name (default: HostName of the connection string)"},
    {NULL, NULL, NULL},
};

const cli_command cli_sas_commands[] = {
    {"sas-token", NULL,
     "(--device ID [--module M] | --policy NAME) [--duration SECONDS] [--key primary|secondary] "
     "[--key-value K] [--hostname NAME]",
     "print a SAS token for a device (with its MQTT 5 CONNECT fields) or a service policy", 0, 0,
     sas_options, sas_token},
};
const size_t cli_sas_command_count = sizeof cli_sas_commands / sizeof cli_sas_commands[0];

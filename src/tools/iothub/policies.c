/*
 * tools/iothub/policies.c — `iothub policy list` and the policy-key lookup
 * that `sas-token --policy` falls back on, both over the iothubd-specific
 * GET /iothubd/policies ([{"keyName","primaryKey","secondaryKey","rights"}]).
 *
 * "rights" is printed whether the server sends it as an array of names or
 * as one comma-separated string.
 */
#include <string.h>

#include "tools/iothub/cli.h"
#include "tools/iothub/http.h"
#include "tools/iothub/output.h"

/* GETs the policy list; *policies is a JSON array on success. */
static int fetch_policies(cli_ctx *ctx, json_t **policies)
{
    http_request req = {.method = "GET", .path = "/iothubd/policies"};
    int rc = http_call(ctx, &req, policies);
    if (rc == CLI_EXIT_OK && !json_is_array(*policies)) {
        json_decref(*policies);
        *policies = NULL;
        return cli_fail(ctx, "the service returned something other than a policy list");
    }
    return rc;
}

int cli_fetch_policy_key(cli_ctx *ctx, const char *name, const char *which, char *key, size_t cap)
{
    json_t *policies = NULL;
    int rc = fetch_policies(ctx, &policies);
    if (rc != CLI_EXIT_OK)
        return rc;
    const json_t *found = NULL;
    size_t i;
    const json_t *p;
    json_array_foreach(policies, i, p) {
        const char *key_name = out_json_str(p, "keyName");
        if (key_name && !strcmp(key_name, name))
            found = p;
    }
    const char *value =
        out_json_str(found, !strcmp(which, "secondary") ? "secondaryKey" : "primaryKey");
    if (!found)
        rc = cli_fail(ctx, "no shared access policy named '%s' (see iothub policy list)", name);
    else if (!value || !*value || strlen(value) >= cap)
        rc = cli_fail(ctx, "policy '%s' has no usable %s key", name, which);
    else
        snprintf(key, cap, "%s", value);
    json_decref(policies);
    return rc;
}

/* One row per policy: name, rights, both keys. */
static int print_policy_table(cli_ctx *ctx, const json_t *policies)
{
    static const char *const headers[] = {"NAME", "RIGHTS", "PRIMARY KEY", "SECONDARY KEY"};
    out_table t;
    out_table_init(&t, 4, headers);
    size_t i;
    const json_t *p;
    json_array_foreach(policies, i, p) {
        char rights[512];
        const char *row[] = {out_json_str(p, "keyName"),
                             out_json_text(p, "rights", rights, sizeof rights),
                             out_json_str(p, "primaryKey"), out_json_str(p, "secondaryKey")};
        out_table_add(&t, row);
    }
    bool ok = out_table_print(&t, ctx->out);
    out_table_free(&t);
    return ok ? CLI_EXIT_OK : cli_fail(ctx, "out of memory");
}

static int policy_list(cli_ctx *ctx, const cli_invocation *inv)
{
    json_t *policies = NULL;
    int rc = fetch_policies(ctx, &policies);
    if (rc == CLI_EXIT_OK)
        rc = ctx->json ? cli_print_json(ctx, policies) : print_policy_table(ctx, policies);
    json_decref(policies);
    return rc;
}

static const cli_option no_options[] = {{NULL, NULL, NULL}};

const cli_command cli_policy_commands[] = {
    {"policy", "list", "", "list the hub's shared access policies: name, rights, keys", 0, 0,
     no_options, policy_list},
};
const size_t cli_policy_command_count = sizeof cli_policy_commands / sizeof cli_policy_commands[0];

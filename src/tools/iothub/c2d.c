/*
 * tools/iothub/c2d.c — `iothub c2d ...`: cloud-to-device commands over the
 * service API (service-rest.md "Cloud-to-device commands").
 *
 *   c2d send DEVICE --body TEXT [--props k=v [k=v ...]] [--message-id ID]
 *            [--correlation-id ID] [--content-type T] [--ack MODE]
 *            [--expiry S]                 POST /devices/{id}/messages/deviceBound
 *   c2d purge DEVICE                      DELETE /devices/{id}/commands
 *   c2d feedback                          GET /messages/serviceBound/feedback
 *
 * Application properties: --props takes k=v, and every further word after
 * the device id that has the k=v form (so `--props a=1 b=2` works, as does
 * `--props a=1,b=2`); they travel as iothub-app-{k} headers. Names must be
 * header tokens (letters, digits, '-', '_', '.'); values may not hold line
 * breaks. --ack and --expiry are checked here (usage error, exit 2) before
 * anything is sent. Reading feedback consumes the records on the server.
 */
#include <stdlib.h>
#include <string.h>

#include "tools/iothub/cli.h"
#include "tools/iothub/http.h"
#include "tools/iothub/output.h"

#define C2D_PATH_MAX 1024
#define C2D_MAX_HEADERS 64
#define C2D_HEADER_MAX 1200

typedef struct header_set {
    char lines[C2D_MAX_HEADERS][C2D_HEADER_MAX];
    const char *ptrs[C2D_MAX_HEADERS + 1];
    size_t n;
} header_set;

static bool add_line(header_set *hs, const char *name, const char *value)
{
    if (hs->n == C2D_MAX_HEADERS ||
        (size_t)snprintf(hs->lines[hs->n], C2D_HEADER_MAX, "%s: %s", name, value) >= C2D_HEADER_MAX)
        return false;
    hs->ptrs[hs->n] = hs->lines[hs->n];
    hs->ptrs[++hs->n] = NULL;
    return true;
}

static bool token_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_' || ch == '.';
}

/* One "k=v" (or "k=v,k=v") word into iothub-app-k headers. */
static int add_props(cli_ctx *ctx, header_set *hs, const char *word)
{
    char buf[C2D_HEADER_MAX];
    if (strlen(word) >= sizeof buf)
        return cli_usage_error(ctx, "property too long: %.40s...", word);
    strcpy(buf, word);
    for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq || eq == kv)
            return cli_usage_error(ctx, "--props wants k=v, not '%s'", kv);
        *eq = '\0';
        for (const char *p = kv; *p; p++)
            if (!token_char(*p))
                return cli_usage_error(ctx, "property name '%s': letters, digits, - _ . only", kv);
        if (strpbrk(eq + 1, "\r\n"))
            return cli_usage_error(ctx, "property '%s': the value may not hold line breaks", kv);
        char name[300];
        snprintf(name, sizeof name, "iothub-app-%s", kv);
        if (!add_line(hs, name, eq + 1))
            return cli_usage_error(ctx, "too many or too long properties");
    }
    return CLI_EXIT_OK;
}

static int add_option_header(cli_ctx *ctx, header_set *hs, const cli_invocation *inv,
                             const char *option, const char *header)
{
    const char *v = cli_value(inv, option);
    if (!v)
        return CLI_EXIT_OK;
    if (!*v || strpbrk(v, "\r\n"))
        return cli_usage_error(ctx, "%s must be a non-empty single line", option);
    return add_line(hs, header, v) ? CLI_EXIT_OK : cli_usage_error(ctx, "%s too long", option);
}

/* Every header of a send; prints the usage error and returns non-zero. */
static int send_headers(cli_ctx *ctx, const cli_invocation *inv, header_set *hs)
{
    const char *ack = cli_value(inv, "--ack");
    const char *expiry = cli_value(inv, "--expiry");
    uint64_t secs;
    if (ack && strcmp(ack, "none") && strcmp(ack, "positive") && strcmp(ack, "negative") &&
        strcmp(ack, "full"))
        return cli_usage_error(ctx, "--ack: expected none, positive, negative or full");
    if (expiry && !cli_parse_u64(expiry, 172800, &secs))
        return cli_usage_error(ctx, "--expiry: seconds, at most 172800 (2 days)");
    static const char *const map[][2] = {
        {"--message-id", "iothub-messageid"}, {"--correlation-id", "iothub-correlationid"},
        {"--ack", "iothub-ack"},              {"--expiry", "iothub-expiry"},
        {"--content-type", "Content-Type"},
    };
    int rc = CLI_EXIT_OK;
    for (size_t i = 0; rc == CLI_EXIT_OK && i < sizeof map / sizeof map[0]; i++)
        rc = add_option_header(ctx, hs, inv, map[i][0], map[i][1]);
    if (rc == CLI_EXIT_OK && !cli_value(inv, "--content-type") && !add_line(hs, "Content-Type", ""))
        rc = cli_fail(ctx, "out of memory");
    const char *props = cli_value(inv, "--props");
    if (rc == CLI_EXIT_OK && props)
        rc = add_props(ctx, hs, props);
    for (int i = 1; rc == CLI_EXIT_OK && i < inv->positional_count; i++)
        rc = props ? add_props(ctx, hs, inv->positional[i])
                   : cli_usage_error(ctx, "unexpected argument '%s'", inv->positional[i]);
    return rc;
}

/* "/devices/{id}{suffix}", percent-encoded. */
static int device_path(cli_ctx *ctx, const char *device, const char *suffix, char *path, size_t cap)
{
    if (!*device)
        return cli_usage_error(ctx, "the device id must not be empty");
    if (!http_identity_path(path, cap, "/devices/", device, NULL, suffix))
        return cli_usage_error(ctx, "device id too long");
    return CLI_EXIT_OK;
}

static int print_rows(cli_ctx *ctx, const json_t *reply, const char *const rows[][2], size_t n)
{
    if (ctx->json)
        return cli_print_json(ctx, reply);
    out_table t;
    out_table_init(&t, 2, NULL);
    for (size_t i = 0; i < n; i++) {
        char buf[64];
        const char *row[2] = {rows[i][0], out_json_text(reply, rows[i][1], buf, sizeof buf)};
        out_table_add(&t, row);
    }
    bool ok = out_table_print(&t, ctx->out);
    out_table_free(&t);
    return ok ? CLI_EXIT_OK : cli_fail(ctx, "out of memory");
}

static int c2d_send_cmd(cli_ctx *ctx, const cli_invocation *inv)
{
    char path[C2D_PATH_MAX];
    header_set *hs = calloc(1, sizeof *hs);
    const char *body = cli_value(inv, "--body");
    int rc = hs ? CLI_EXIT_OK : cli_fail(ctx, "out of memory");
    if (rc == CLI_EXIT_OK && !body)
        rc = cli_usage_error(ctx, "c2d send needs --body TEXT");
    if (rc == CLI_EXIT_OK)
        rc = device_path(ctx, inv->positional[0], "/messages/deviceBound", path, sizeof path);
    if (rc == CLI_EXIT_OK)
        rc = send_headers(ctx, inv, hs);
    json_t *reply = NULL;
    if (rc == CLI_EXIT_OK) {
        http_request req = {.method = "POST", .path = path, .raw_body = body,
                            .raw_len = strlen(body), .headers = hs->ptrs};
        rc = http_call(ctx, &req, &reply);
    }
    static const char *const rows[][2] = {
        {"Message ID", "messageId"}, {"Sequence number", "sequenceNumber"},
        {"Enqueued", "enqueuedTime"}};
    if (rc == CLI_EXIT_OK)
        rc = print_rows(ctx, reply, rows, 3);
    json_decref(reply);
    free(hs);
    return rc;
}

static int c2d_purge_cmd(cli_ctx *ctx, const cli_invocation *inv)
{
    char path[C2D_PATH_MAX];
    int rc = device_path(ctx, inv->positional[0], "/commands", path, sizeof path);
    json_t *reply = NULL;
    if (rc == CLI_EXIT_OK)
        rc = http_call(ctx, &(http_request){.method = "DELETE", .path = path}, &reply);
    static const char *const rows[][2] = {{"Device ID", "deviceId"},
                                          {"Purged", "totalMessagesPurged"}};
    if (rc == CLI_EXIT_OK)
        rc = print_rows(ctx, reply, rows, 2);
    json_decref(reply);
    return rc;
}

static int c2d_feedback_cmd(cli_ctx *ctx, const cli_invocation *inv)
{
    (void)inv;
    json_t *reply = NULL;
    http_request req = {.method = "GET", .path = "/messages/serviceBound/feedback"};
    int rc = http_call(ctx, &req, &reply);
    if (rc == CLI_EXIT_OK && !json_is_array(reply))
        rc = cli_fail(ctx, "the service returned something other than a list");
    if (rc == CLI_EXIT_OK && ctx->json)
        rc = cli_print_json(ctx, reply);
    else if (rc == CLI_EXIT_OK) {
        static const char *const header[] = {"MESSAGE ID", "DEVICE", "STATUS", "TIME"};
        out_table t;
        out_table_init(&t, 4, header);
        size_t i;
        json_t *f;
        json_array_foreach(reply, i, f) {
            const char *row[4] = {out_json_str(f, "originalMessageId"), out_json_str(f, "deviceId"),
                                  out_json_str(f, "statusCode"), out_json_str(f, "enqueuedTimeUtc")};
            out_table_add(&t, row);
        }
        rc = out_table_print(&t, ctx->out) ? CLI_EXIT_OK : cli_fail(ctx, "out of memory");
        out_table_free(&t);
    }
    json_decref(reply);
    return rc;
}

/* ---- the table ------------------------------------------------------------- */

static const cli_option send_options[] = {
    {"--body", "TEXT", "the message body"},
    {"--props", "K=V", "application properties (more k=v words may follow)"},
    {"--message-id", "ID", "the message id (default: the server generates one)"},
    {"--correlation-id", "ID", "the correlation id"},
    {"--content-type", "T", "the Content Type the device sees"},
    {"--ack", "MODE", "feedback: none, positive, negative or full"},
    {"--expiry", "S", "time to live in seconds (60 to 172800; default 3600)"},
    {NULL, NULL, NULL},
};
static const cli_option no_options[] = {{NULL, NULL, NULL}};

const cli_command cli_c2d_commands[] = {
    {"c2d", "send", "DEVICE --body TEXT [--props k=v ...] [--message-id ID] [--ack MODE] "
                    "[--expiry S]",
     "queue a cloud-to-device command", 1, CLI_MAX_POSITIONAL, send_options, c2d_send_cmd},
    {"c2d", "purge", "DEVICE", "remove every queued command of a device", 1, 1, no_options,
     c2d_purge_cmd},
    {"c2d", "feedback", "", "read (and consume) the feedback records", 0, 0, no_options,
     c2d_feedback_cmd},
};
const size_t cli_c2d_command_count = sizeof cli_c2d_commands / sizeof cli_c2d_commands[0];

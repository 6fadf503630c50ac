/*
 * tools/iothub/main.c — the `iothub` command line: parse, resolve where the
 * service is, run one command, exit with its status.
 *
 * Exit status: 0 success, 1 the command failed (service error, unreachable
 * service, bad configuration), 2 the command line was wrong. Every failure
 * prints exactly one line, "iothub: ...", on standard error; results go to
 * standard output. The command families live in devices.c, sas_token.c,
 * policies.c and twins.c; this file only joins their tables and owns the
 * run context.
 */
#include <curl/curl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "tools/iothub/args.h"
#include "tools/iothub/cli.h"
#include "tools/iothub/http.h"
#include "tools/iothub/output.h"

#define MAX_COMMANDS 32

/* ---- reporting (declared in cli.h) ------------------------------------------------- */

static void print_error_line(FILE *err, const char *fmt, va_list ap)
{
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    for (char *p = line; *p; p++) /* one line, whatever the message held */
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    fprintf(err, "iothub: %s\n", line);
}

int cli_fail(cli_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    print_error_line(ctx->err, fmt, ap);
    va_end(ap);
    return CLI_EXIT_FAILURE;
}

int cli_usage_error(cli_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    print_error_line(ctx->err, fmt, ap);
    va_end(ap);
    return CLI_EXIT_USAGE;
}

int cli_print_json(cli_ctx *ctx, const json_t *value)
{
    return out_json_print(value, ctx->out) ? CLI_EXIT_OK : cli_fail(ctx, "cannot print JSON");
}

int cli_print_fields(cli_ctx *ctx, const char *const fields[][2], size_t n)
{
    out_table t;
    out_table_init(&t, 2, NULL);
    for (size_t i = 0; i < n; i++)
        if (fields[i][0])
            out_table_add(&t, fields[i]);
    bool ok = out_table_print(&t, ctx->out);
    out_table_free(&t);
    return ok ? CLI_EXIT_OK : cli_fail(ctx, "out of memory");
}

/* ---- the run ---------------------------------------------------------------------- */

/* Appends one family's commands to the combined table. */
static size_t append_commands(cli_command *all, size_t used, const cli_command *family,
                              size_t count)
{
    for (size_t i = 0; i < count && used < MAX_COMMANDS; i++)
        all[used++] = family[i];
    return used;
}

static size_t collect_commands(cli_command *all)
{
    size_t n = append_commands(all, 0, cli_device_commands, cli_device_command_count);
    n = append_commands(all, n, cli_sas_commands, cli_sas_command_count);
    n = append_commands(all, n, cli_monitor_commands, cli_monitor_command_count);
    n = append_commands(all, n, cli_policy_commands, cli_policy_command_count);
    n = append_commands(all, n, cli_c2d_commands, cli_c2d_command_count);
    n = append_commands(all, n, cli_method_commands, cli_method_command_count);
    n = append_commands(all, n, cli_simulate_commands, cli_simulate_command_count);
    return append_commands(all, n, cli_twin_commands, cli_twin_command_count);
}

/* The flags and the process environment as resolution inputs. */
static cli_sources sources_from(const cli_invocation *inv)
{
    cli_sources src = {
        .url_flag = cli_value(inv, "--url"),
        .connstr_flag = cli_value(inv, "--connection-string"),
        .data_flag = cli_value(inv, "--data"),
        .url_env = getenv("IOTHUB_URL"),
        .connstr_env = getenv("IOTHUB_CONNECTION_STRING"),
        .config_env = getenv("IOTHUB_CONFIG"),
        .xdg_config_home = getenv("XDG_CONFIG_HOME"),
        .home = getenv("HOME"),
    };
    return src;
}

/* Resolves settings and runs the parsed command. */
static int run(cli_ctx *ctx, const cli_invocation *inv)
{
    cli_sources src = sources_from(inv);
    char err[1024];
    if (!cli_settings_resolve(&src, &ctx->settings, err, sizeof err))
        return cli_fail(ctx, "%s", err);
    int rc = inv->command->run(ctx, inv);
    http_close(ctx);
    return rc;
}

int main(int argc, char **argv)
{
    static cli_ctx ctx; /* large (settings buffers): static storage, owned by main */
    ctx.out = stdout;
    ctx.err = stderr;
    cli_command commands[MAX_COMMANDS];
    size_t count = collect_commands(commands);
    cli_invocation inv;
    char err[512];
    if (!cli_parse(argc - 1, argv + 1, commands, count, &inv, err, sizeof err))
        return cli_usage_error(&ctx, "%s", err);
    if (inv.help) {
        cli_print_help(stdout, &inv, commands, count);
        return CLI_EXIT_OK;
    }
    ctx.json = cli_flag(&inv, "--json");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return cli_fail(&ctx, "cannot initialise libcurl");
    int rc = run(&ctx, &inv);
    curl_global_cleanup();
    if (fflush(stdout) != 0)
        rc = cli_fail(&ctx, "cannot write the output");
    return rc;
}

/*
 * tools/iothub/cli.h — what every iothub command shares: the run context
 * (settings, output mode, the HTTP client), exit codes, the one-line error
 * reporter, and the command tables each family file exports.
 *
 * The context is the only mutable state of a run; main() owns it and passes
 * it to the command, which reads settings from it and prints through it.
 */
#ifndef IOTHUB_CLI_H
#define IOTHUB_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "tools/iothub/args.h"
#include "tools/iothub/config.h"

enum { CLI_EXIT_OK = 0, CLI_EXIT_FAILURE = 1, CLI_EXIT_USAGE = 2 };

#define CLI_API_VERSION "2021-04-12"
#define CLI_SERVICE_TOKEN_SECONDS 3600

typedef struct cli_ctx {
    cli_settings settings;
    bool json;          /* --json: every command prints JSON */
    FILE *out;          /* results */
    FILE *err;          /* the one-line error */
    void *curl;         /* CURL *, created on the first request */
} cli_ctx;

/* Prints "iothub: {message}" as one line on ctx->err; returns
 * CLI_EXIT_FAILURE so a command can `return cli_fail(...)`. */
int cli_fail(cli_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same for a misuse of the command line; returns CLI_EXIT_USAGE. */
int cli_usage_error(cli_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints a JSON value (--json mode) and returns the exit code. */
int cli_print_json(cli_ctx *ctx, const json_t *value);
/* Prints "Label  value" lines (a NULL value as "-"); a field whose label
 * is NULL does not apply and is left out. Returns the exit code. */
int cli_print_fields(cli_ctx *ctx, const char *const fields[][2], size_t n);

/* The primary or secondary key of a device (module NULL) or module, read
 * from the service, into key (capacity cap). Prints the error and returns
 * non-zero when the identity is missing or has no such key. (devices.c) */
int cli_fetch_device_key(cli_ctx *ctx, const char *device, const char *module, const char *which,
                         char *key, size_t cap);

/* {root}{DEVICE}[/modules/{--module}]{suffix} for a command whose first
 * argument is the device id, into path (capacity cap); see
 * http_identity_path. Prints the usage error and returns non-zero when an
 * id is empty or the path does not fit. (devices.c) */
int cli_identity_path(cli_ctx *ctx, const cli_invocation *inv, const char *root,
                      const char *suffix, char *path, size_t cap);

/* The key of shared access policy `name` ("primary" or "secondary"),
 * from GET /iothubd/policies, into key (capacity cap). Prints the error and
 * returns non-zero when the policy or key is not there. (policies.c) */
int cli_fetch_policy_key(cli_ctx *ctx, const char *name, const char *which, char *key,
                         size_t cap);

/* The command families (one file each); entries are appended by main.c
 * into the one table the parser sees. */
extern const cli_command cli_device_commands[];
extern const size_t cli_device_command_count;
extern const cli_command cli_sas_commands[];
extern const size_t cli_sas_command_count;
extern const cli_command cli_policy_commands[];
extern const size_t cli_policy_command_count;
extern const cli_command cli_monitor_commands[];
extern const size_t cli_monitor_command_count;
extern const cli_command cli_twin_commands[];
extern const size_t cli_twin_command_count;
extern const cli_command cli_c2d_commands[];
extern const size_t cli_c2d_command_count;
extern const cli_command cli_method_commands[];
extern const size_t cli_method_command_count;
extern const cli_command cli_simulate_commands[];
extern const size_t cli_simulate_command_count;

#endif

/*
 * tools/iothub/args.h — the iothub command line's grammar, as data.
 *
 * A command is one or two words ("sas-token", "device create") plus a table
 * of its options. One pass over argv resolves the command from the leading
 * words and collects options and positionals; the global options (--json,
 * --url, ...) are accepted anywhere, before or after the command words.
 * Options take "--name value" or "--name=value". Nothing here does I/O except
 * the help printers, which write to the FILE they are given.
 */
#ifndef IOTHUB_CLI_ARGS_H
#define IOTHUB_CLI_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CLI_MAX_OPTIONS 16
#define CLI_MAX_POSITIONAL 8

struct cli_ctx;
struct cli_invocation;

typedef struct cli_option {
    const char *name;    /* "--module" */
    const char *metavar; /* "M"; NULL for a flag without a value */
    const char *help;
} cli_option;

typedef int (*cli_handler)(struct cli_ctx *ctx, const struct cli_invocation *inv);

typedef struct cli_command {
    const char *family;  /* "device", "sas-token", "policy" */
    const char *verb;    /* "create"; NULL when the family is the command */
    const char *usage;   /* positionals and options, for --help */
    const char *summary; /* one line */
    int min_positional, max_positional;
    const cli_option *options; /* terminated by an entry with name NULL */
    cli_handler run;
} cli_command;

/* The result of parsing one command line. Values point into argv. */
typedef struct cli_invocation {
    const cli_command *command;  /* NULL when only a family (or nothing) was named */
    const char *family;          /* the first word, even if unknown; NULL if none */
    const char *verb;            /* the second word when the family has verbs */
    const char *global_value[CLI_MAX_OPTIONS]; /* by index in cli_global_options; "" for flags */
    const char *value[CLI_MAX_OPTIONS];        /* by index in command->options */
    const char *positional[CLI_MAX_POSITIONAL];
    int positional_count;
    bool help;                   /* --help / -h was given */
} cli_invocation;

/* The options every command accepts (terminated by a NULL name). */
extern const cli_option cli_global_options[];

/* Parses argv[0..argc) (the program name already removed) against the
 * command table (count entries). Returns false with a one-line reason in err
 * for an unknown command or option, a missing option value, or a wrong
 * number of positionals (the last two are not checked when help was asked). */
bool cli_parse(int argc, char *const argv[], const cli_command *commands, size_t count,
               cli_invocation *out, char *err, size_t errlen);

/* The value of a command option or global option by name: NULL when absent,
 * "" for a flag that was given. */
const char *cli_value(const cli_invocation *inv, const char *name);
bool cli_flag(const cli_invocation *inv, const char *name);

/* Strict decimal for counts and durations: digits only, no sign, within max. */
bool cli_parse_u64(const char *text, uint64_t max, uint64_t *out);

/* Help for the level the invocation reached: the whole tool, one family, or
 * one command. */
void cli_print_help(FILE *out, const cli_invocation *inv, const cli_command *commands,
                    size_t count);

#endif

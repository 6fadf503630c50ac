/*
 * tools/iothub/args.c — one-pass command-line parsing against the command
 * table (see args.h).
 *
 * The walk keeps three pieces of state in the invocation: which family the
 * first word named, which command the words so far resolve to, and the
 * positionals after the command words. An option is looked up among the
 * global options first and then among the resolved command's options, so a
 * command option given before the command words is reported as unknown with
 * a hint rather than guessed at.
 */
#include "tools/iothub/args.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const cli_option cli_global_options[] = {
    {"--json", NULL, "print JSON instead of tables"},
    {"--url", "URL", "service URL, e.g. http://127.0.0.1:8080 (else $IOTHUB_URL, else config)"},
    {"--connection-string", "CS",
     "HostName=..;SharedAccessKeyName=..;SharedAccessKey=.. (else $IOTHUB_CONNECTION_STRING)"},
    {"--data", "DIR", "read the connection string from DIR/owner.connstr"},
    {"--help", NULL, "show help for the tool, a command family or a command"},
    {NULL, NULL, NULL},
};

/* ---- lookups ----------------------------------------------------------------- */

static int option_index(const cli_option *options, const char *name, size_t name_len)
{
    if (!options)
        return -1;
    for (int i = 0; options[i].name; i++)
        if (strlen(options[i].name) == name_len && !strncmp(options[i].name, name, name_len))
            return i;
    return -1;
}

static bool family_exists(const cli_command *commands, size_t count, const char *family)
{
    for (size_t i = 0; i < count; i++)
        if (!strcmp(commands[i].family, family))
            return true;
    return false;
}

/* The command for family + verb; verb NULL finds a family that is itself a
 * command (no verbs). */
static const cli_command *find_command(const cli_command *commands, size_t count,
                                       const char *family, const char *verb)
{
    for (size_t i = 0; i < count; i++) {
        const cli_command *c = &commands[i];
        if (strcmp(c->family, family))
            continue;
        if ((!verb && !c->verb) || (verb && c->verb && !strcmp(c->verb, verb)))
            return c;
    }
    return NULL;
}

/* ---- the walk ------------------------------------------------------------------ */

static bool looks_like_option(const char *arg)
{
    return arg[0] == '-' && arg[1] != '\0';
}

/* A word that is not an option: the family, then the verb, then positionals. */
static bool take_word(const char *word, const cli_command *commands, size_t count,
                      cli_invocation *out, char *err, size_t errlen)
{
    if (!out->family) {
        out->family = word;
        if (!family_exists(commands, count, word)) {
            snprintf(err, errlen, "unknown command '%s' (see iothub --help)", word);
            return false;
        }
        out->command = find_command(commands, count, word, NULL);
        return true;
    }
    if (!out->command) {
        out->verb = word;
        out->command = find_command(commands, count, out->family, word);
        if (!out->command) {
            snprintf(err, errlen, "unknown command '%s %s' (see iothub %s --help)", out->family,
                     word, out->family);
            return false;
        }
        return true;
    }
    if (out->positional_count >= CLI_MAX_POSITIONAL) {
        snprintf(err, errlen, "too many arguments");
        return false;
    }
    out->positional[out->positional_count++] = word;
    return true;
}

/* Stores the option at argv[*i] (and its value, which may be argv[*i + 1]). */
static bool take_option(int argc, char *const argv[], int *i, cli_invocation *out, char *err,
                        size_t errlen)
{
    const char *arg = argv[*i];
    const char *equals = strchr(arg, '=');
    size_t name_len = equals ? (size_t)(equals - arg) : strlen(arg);
    if ((name_len == 2 && !strncmp(arg, "-h", 2)) || (name_len == 6 && !strncmp(arg, "--help", 6))) {
        out->help = true;
        return true;
    }
    const cli_option *options = cli_global_options;
    const char **slot_base = out->global_value;
    int index = option_index(cli_global_options, arg, name_len);
    if (index < 0 && out->command) {
        options = out->command->options;
        slot_base = out->value;
        index = option_index(options, arg, name_len);
    }
    if (index < 0) {
        snprintf(err, errlen, "unknown option '%.*s'%s", (int)name_len, arg,
                 out->command ? "" : " (command options go after the command)");
        return false;
    }
    const cli_option *opt = &options[index];
    if (!opt->metavar) {
        if (equals) {
            snprintf(err, errlen, "option %s takes no value", opt->name);
            return false;
        }
        slot_base[index] = "";
        return true;
    }
    if (equals) {
        slot_base[index] = equals + 1;
        return true;
    }
    if (*i + 1 >= argc) {
        snprintf(err, errlen, "option %s needs a value (%s)", opt->name, opt->metavar);
        return false;
    }
    slot_base[index] = argv[++*i];
    return true;
}

/* After the walk: a command was named and got the right number of words. */
static bool check_complete(const cli_invocation *out, char *err, size_t errlen)
{
    if (!out->family) {
        snprintf(err, errlen, "no command given (see iothub --help)");
        return false;
    }
    const cli_command *c = out->command;
    if (!c) {
        snprintf(err, errlen, "'%s' needs a command (see iothub %s --help)", out->family,
                 out->family);
        return false;
    }
    if (out->positional_count < c->min_positional || out->positional_count > c->max_positional) {
        snprintf(err, errlen, "%s arguments; usage: iothub %s%s%s %s",
                 out->positional_count < c->min_positional ? "missing" : "too many", c->family,
                 c->verb ? " " : "", c->verb ? c->verb : "", c->usage);
        return false;
    }
    return true;
}

bool cli_parse(int argc, char *const argv[], const cli_command *commands, size_t count,
               cli_invocation *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    bool only_words = false;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (!only_words && !strcmp(arg, "--")) {
            only_words = true;
            continue;
        }
        bool ok = (!only_words && looks_like_option(arg))
                      ? take_option(argc, argv, &i, out, err, errlen)
                      : take_word(arg, commands, count, out, err, errlen);
        if (!ok)
            return false;
    }
    return out->help || check_complete(out, err, errlen);
}

/* ---- queries ------------------------------------------------------------------- */

const char *cli_value(const cli_invocation *inv, const char *name)
{
    size_t len = strlen(name);
    int index = inv->command ? option_index(inv->command->options, name, len) : -1;
    if (index >= 0)
        return inv->value[index];
    index = option_index(cli_global_options, name, len);
    return index >= 0 ? inv->global_value[index] : NULL;
}

bool cli_flag(const cli_invocation *inv, const char *name)
{
    return cli_value(inv, name) != NULL;
}

bool cli_parse_u64(const char *text, uint64_t max, uint64_t *out)
{
    if (!text || !*text)
        return false;
    for (const char *p = text; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    errno = 0;
    unsigned long long v = strtoull(text, NULL, 10);
    if (errno || v > max)
        return false;
    *out = v;
    return true;
}

/* ---- help ---------------------------------------------------------------------- */

static void print_options(FILE *out, const char *title, const cli_option *options)
{
    if (!options || !options[0].name)
        return;
    fprintf(out, "\n%s:\n", title);
    for (int i = 0; options[i].name; i++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", options[i].name, options[i].metavar ? " " : "",
                 options[i].metavar ? options[i].metavar : "");
        fprintf(out, "  %-26s %s\n", left, options[i].help);
    }
}

static void print_command_list(FILE *out, const cli_command *commands, size_t count,
                               const char *family)
{
    fprintf(out, "\nCommands:\n");
    for (size_t i = 0; i < count; i++) {
        const cli_command *c = &commands[i];
        if (family && strcmp(c->family, family))
            continue;
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", c->family, c->verb ? " " : "", c->verb ? c->verb : "");
        fprintf(out, "  %-26s %s\n", left, c->summary);
    }
}

void cli_print_help(FILE *out, const cli_invocation *inv, const cli_command *commands, size_t count)
{
    const cli_command *c = inv->command;
    if (c) {
        fprintf(out, "Usage: iothub %s%s%s %s\n\n%s\n", c->family, c->verb ? " " : "",
                c->verb ? c->verb : "", c->usage, c->summary);
        print_options(out, "Options", c->options);
    } else if (inv->family && family_exists(commands, count, inv->family)) {
        fprintf(out, "Usage: iothub %s COMMAND [options]\n", inv->family);
        print_command_list(out, commands, count, inv->family);
    } else {
        fprintf(out, "Usage: iothub COMMAND [options]\n\n"
                     "Manages an iothubd hub over its service API.\n");
        print_command_list(out, commands, count, NULL);
        fprintf(out, "\nConfiguration: --url/--connection-string/--data, else $IOTHUB_URL and\n"
                     "$IOTHUB_CONNECTION_STRING, else the file $IOTHUB_CONFIG or\n"
                     "~/.config/iothub/config with lines url=..., connection-string=..., data=DIR.\n");
    }
    print_options(out, "Global options", cli_global_options);
}

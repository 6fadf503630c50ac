/* Unit tests for the iothub tool's command-line parser
 * (src/tools/iothub/args.c): command resolution from one or two words,
 * global options anywhere, --name=value, flags, help at every level, and
 * each parse error. args.c is compiled into this test; the command table
 * here mirrors the tool's shapes (a family with verbs, a one-word command). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/tools/iothub/args.c"

static const cli_option show_options[] = {
    {"--module", "M", "module"},
    {NULL, NULL, NULL},
};
static const cli_option create_options[] = {
    {"--module", "M", "module"},
    {"--disabled", NULL, "disabled"},
    {NULL, NULL, NULL},
};
static const cli_option token_options[] = {
    {"--device", "ID", "device"},
    {"--duration", "S", "seconds"},
    {NULL, NULL, NULL},
};

static const cli_command commands[] = {
    {"device", "create", "ID [--module M] [--disabled]", "create one", 1, 1, create_options, NULL},
    {"device", "show", "ID [--module M]", "show one", 1, 1, show_options, NULL},
    {"device", "list", "", "list them", 0, 0, NULL, NULL},
    {"sas-token", NULL, "--device ID", "a token", 0, 0, token_options, NULL},
};
#define COUNT (sizeof commands / sizeof commands[0])

/* Parses a NULL-terminated word list. */
static bool parse(cli_invocation *inv, char *err, size_t errlen, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, errlen);
    for (char *w; (w = va_arg(ap, char *)) != NULL;)
        argv[argc++] = w;
    va_end(ap);
    err[0] = '\0';
    return cli_parse(argc, argv, commands, COUNT, inv, err, errlen);
}

static void test_two_word_command_with_options_and_globals(void **state)
{
    (void)state;
    cli_invocation inv;
    char err[256];
    assert_true(parse(&inv, err, sizeof err, "--json", "device", "create", "d1", "--module=m",
                      "--url", "http://x", "--disabled", NULL));
    assert_ptr_equal(inv.command, &commands[0]);
    assert_int_equal(inv.positional_count, 1);
    assert_string_equal(inv.positional[0], "d1");
    assert_string_equal(cli_value(&inv, "--module"), "m");
    assert_string_equal(cli_value(&inv, "--url"), "http://x");
    assert_true(cli_flag(&inv, "--json"));
    assert_true(cli_flag(&inv, "--disabled"));
    assert_false(cli_flag(&inv, "--data"));
    assert_null(cli_value(&inv, "--nonexistent"));
    assert_false(inv.help);
}

static void test_one_word_command_and_double_dash(void **state)
{
    (void)state;
    cli_invocation inv;
    char err[256];
    assert_true(parse(&inv, err, sizeof err, "sas-token", "--device", "-odd-id", "--json", NULL));
    assert_ptr_equal(inv.command, &commands[3]);
    assert_string_equal(cli_value(&inv, "--device"), "-odd-id");
    assert_true(parse(&inv, err, sizeof err, "device", "show", "--", "--json", NULL));
    assert_string_equal(inv.positional[0], "--json");
    assert_false(cli_flag(&inv, "--json"));
}

static void expect_error(const char *fragment, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, fragment);
    for (char *w; (w = va_arg(ap, char *)) != NULL;)
        argv[argc++] = w;
    va_end(ap);
    cli_invocation inv;
    char err[256] = "";
    assert_false(cli_parse(argc, argv, commands, COUNT, &inv, err, sizeof err));
    if (!strstr(err, fragment))
        fail_msg("error '%s' lacks '%s'", err, fragment);
    assert_null(strchr(err, '\n'));
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("no command given", NULL);
    expect_error("unknown command 'nope'", "nope", NULL);
    expect_error("unknown command 'device nope'", "device", "nope", NULL);
    expect_error("'device' needs a command", "device", NULL);
    expect_error("unknown option '--bogus'", "device", "show", "x", "--bogus", NULL);
    expect_error("command options go after", "--module", "m", "device", "show", "x", NULL);
    expect_error("needs a value", "device", "show", "x", "--module", NULL);
    expect_error("takes no value", "device", "create", "x", "--disabled=yes", NULL);
    expect_error("missing arguments; usage: iothub device show ID", "device", "show", NULL);
    expect_error("too many arguments", "device", "show", "a", "b", NULL);
    expect_error("too many arguments", "device", "list", "a", NULL);
}

static void test_help_at_each_level(void **state)
{
    (void)state;
    cli_invocation inv;
    char err[256];
    char *text = NULL;
    size_t len = 0;

    assert_true(parse(&inv, err, sizeof err, "--help", NULL));
    assert_true(inv.help);
    FILE *f = open_memstream(&text, &len);
    cli_print_help(f, &inv, commands, COUNT);
    fclose(f);
    assert_non_null(strstr(text, "device create"));
    assert_non_null(strstr(text, "sas-token"));
    assert_non_null(strstr(text, "--connection-string CS"));
    free(text);

    assert_true(parse(&inv, err, sizeof err, "device", "-h", NULL));
    f = open_memstream(&text, &len);
    cli_print_help(f, &inv, commands, COUNT);
    fclose(f);
    assert_non_null(strstr(text, "Usage: iothub device COMMAND"));
    assert_null(strstr(text, "sas-token"));
    free(text);

    /* Help skips the positional count check. */
    assert_true(parse(&inv, err, sizeof err, "device", "show", "--help", NULL));
    f = open_memstream(&text, &len);
    cli_print_help(f, &inv, commands, COUNT);
    fclose(f);
    assert_non_null(strstr(text, "Usage: iothub device show ID [--module M]"));
    assert_non_null(strstr(text, "--module M"));
    free(text);
}

static void test_parse_u64(void **state)
{
    (void)state;
    uint64_t v = 0;
    assert_true(cli_parse_u64("3600", 100000, &v));
    assert_int_equal(v, 3600);
    assert_true(cli_parse_u64("0", 10, &v));
    assert_false(cli_parse_u64("", 10, &v));
    assert_false(cli_parse_u64("-1", 10, &v));
    assert_false(cli_parse_u64("+1", 10, &v));
    assert_false(cli_parse_u64("1x", 10, &v));
    assert_false(cli_parse_u64("11", 10, &v));
    assert_false(cli_parse_u64("99999999999999999999999", UINT64_MAX, &v));
    assert_false(cli_parse_u64(NULL, 10, &v));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_word_command_with_options_and_globals),
        cmocka_unit_test(test_one_word_command_and_double_dash),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_help_at_each_level),
        cmocka_unit_test(test_parse_u64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

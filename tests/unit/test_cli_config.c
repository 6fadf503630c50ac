/* Unit tests for the iothub tool's configuration (src/tools/iothub/config.c):
 * connection-string parsing, the config file format, and the precedence of
 * flags, environment and config file (with files in a temporary directory).
 * config.c is compiled into this test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/tools/iothub/config.c"

#define KEY "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define OWNER "HostName=hub.local;SharedAccessKeyName=iothubowner;SharedAccessKey=" KEY

static void test_connstr_parse(void **state)
{
    (void)state;
    cli_connection c;
    char err[256];
    assert_true(cli_connstr_parse(OWNER, &c, err, sizeof err));
    assert_string_equal(c.host, "hub.local");
    assert_string_equal(c.policy, "iothubowner");
    assert_string_equal(c.key, KEY); /* '=' inside the value is kept */
    /* case-insensitive names, spaces, a trailing ';', unknown fields, a newline */
    assert_true(cli_connstr_parse(" hostname = h ; sharedaccesskeyname=service;"
                                  "GatewayHostName=g;SharedAccessKey=" KEY ";\n",
                                  &c, err, sizeof err));
    assert_string_equal(c.host, "h");
    assert_string_equal(c.policy, "service");
    assert_string_equal(c.key, KEY);
}

static void expect_connstr_error(const char *text, const char *fragment)
{
    cli_connection c;
    char err[256] = "";
    assert_false(cli_connstr_parse(text, &c, err, sizeof err));
    if (!strstr(err, fragment))
        fail_msg("error '%s' lacks '%s'", err, fragment);
}

static void test_connstr_errors(void **state)
{
    (void)state;
    expect_connstr_error("", "no HostName");
    expect_connstr_error("HostName=h;DeviceId=d;SharedAccessKey=" KEY, "no SharedAccessKeyName");
    expect_connstr_error("HostName=h;SharedAccessKeyName=p", "no SharedAccessKey");
    expect_connstr_error("HostName=h;junk;SharedAccessKeyName=p", "has no '='");
    expect_connstr_error("HostName=h;SharedAccessKeyName=p;SharedAccessKey=@@@", "not valid base64");
}

static void test_config_file_format(void **state)
{
    (void)state;
    cli_config_file f;
    char err[256];
    assert_true(cli_config_parse("# iothub config\n\n  url = http://127.0.0.1:8080/ \n"
                                 "connection-string=" OWNER "\ndata=/var/lib/iothubd",
                                 &f, err, sizeof err));
    assert_string_equal(f.url, "http://127.0.0.1:8080/");
    assert_string_equal(f.connection_string, OWNER);
    assert_string_equal(f.data, "/var/lib/iothubd");
    assert_false(cli_config_parse("url=x\nbogus=1\n", &f, err, sizeof err));
    assert_non_null(strstr(err, "line 2: unknown key 'bogus'"));
    assert_false(cli_config_parse("just words\n", &f, err, sizeof err));
    assert_non_null(strstr(err, "line 1: expected key=value"));
}

/* A temporary directory holding the files of one resolution test. */
typedef struct fixture {
    char dir[64];
    char path[256];
} fixture;

static const char *write_file(fixture *fx, const char *name, const char *text)
{
    snprintf(fx->path, sizeof fx->path, "%s/%s", fx->dir, name);
    FILE *f = fopen(fx->path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return fx->path;
}

static int make_dir(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/iothub-cli-test-XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    *state = fx;
    return 0;
}

static int remove_dir(void **state)
{
    fixture *fx = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
    int rc = system(cmd);
    free(fx);
    return rc == 0 ? 0 : -1;
}

static void test_flags_beat_environment_beat_file(void **state)
{
    fixture *fx = *state;
    char config_path[256];
    snprintf(config_path, sizeof config_path, "%s",
             write_file(fx, "config", "url=http://file:1\nconnection-string=HostName=file;"
                                      "SharedAccessKeyName=p;SharedAccessKey=" KEY "\n"));
    cli_settings s;
    char err[256];
    cli_sources src = {.config_env = config_path};
    assert_true(cli_settings_resolve(&src, &s, err, sizeof err));
    assert_string_equal(s.url, "http://file:1");
    assert_string_equal(s.connection.host, "file");

    src.url_env = "http://env:2/";
    src.connstr_env = "HostName=env;SharedAccessKeyName=p;SharedAccessKey=" KEY;
    assert_true(cli_settings_resolve(&src, &s, err, sizeof err));
    assert_string_equal(s.url, "http://env:2"); /* trailing '/' removed */
    assert_string_equal(s.connection.host, "env");

    src.url_flag = "https://flag:3";
    src.connstr_flag = "HostName=flag;SharedAccessKeyName=p;SharedAccessKey=" KEY;
    assert_true(cli_settings_resolve(&src, &s, err, sizeof err));
    assert_string_equal(s.url, "https://flag:3");
    assert_string_equal(s.connection.host, "flag");
}

static void test_data_dir_owner_connstr(void **state)
{
    fixture *fx = *state;
    write_file(fx, "owner.connstr", OWNER "\n");
    cli_settings s;
    char err[256];
    cli_sources src = {.data_flag = fx->dir, .url_flag = "http://h:1"};
    assert_true(cli_settings_resolve(&src, &s, err, sizeof err));
    assert_true(s.have_connection);
    assert_string_equal(s.connection.host, "hub.local");
    assert_string_equal(s.connection.policy, "iothubowner");

    /* "data=" in the config file works too, after the environment. */
    char config_text[256];
    snprintf(config_text, sizeof config_text, "url=http://h:2\ndata=%s\n", fx->dir);
    char config_path[256];
    snprintf(config_path, sizeof config_path, "%s", write_file(fx, "config", config_text));
    cli_sources from_file = {.config_env = config_path};
    assert_true(cli_settings_resolve(&from_file, &s, err, sizeof err));
    assert_string_equal(s.connection.policy, "iothubowner");
    assert_string_equal(s.url, "http://h:2");

    cli_sources missing = {.data_flag = "/nonexistent-dir", .url_flag = "http://h:1"};
    assert_false(cli_settings_resolve(&missing, &s, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent-dir/owner.connstr"));
}

static void test_missing_and_bad_sources(void **state)
{
    fixture *fx = *state;
    cli_settings s;
    char err[256];
    /* No sources at all: not an error here; the command reports what it needs. */
    char home[128];
    snprintf(home, sizeof home, "%s/home", fx->dir);
    cli_sources nothing = {.home = home};
    assert_true(cli_settings_resolve(&nothing, &s, err, sizeof err));
    assert_string_equal(s.url, "");
    assert_false(s.have_connection);
    assert_non_null(strstr(s.config_path, "/home/.config/iothub/config"));
    /* A named config file must exist. */
    cli_sources named = {.config_env = "/nonexistent/config"};
    assert_false(cli_settings_resolve(&named, &s, err, sizeof err));
    assert_non_null(strstr(err, "cannot read config file /nonexistent/config"));
    /* A bad URL and a bad connection string say where they came from. */
    cli_sources bad_url = {.url_flag = "ftp://x", .connstr_flag = OWNER};
    assert_false(cli_settings_resolve(&bad_url, &s, err, sizeof err));
    assert_non_null(strstr(err, "--url"));
    cli_sources bad_env = {.url_flag = "http://x", .connstr_env = "HostName=h"};
    assert_false(cli_settings_resolve(&bad_env, &s, err, sizeof err));
    assert_non_null(strstr(err, "IOTHUB_CONNECTION_STRING"));
    /* XDG_CONFIG_HOME wins over HOME for the default path. */
    cli_sources xdg = {.xdg_config_home = fx->dir, .home = home};
    write_file(fx, "iothub-config-unused", "");
    assert_true(cli_settings_resolve(&xdg, &s, err, sizeof err));
    assert_non_null(strstr(s.config_path, "/iothub/config"));
    assert_null(strstr(s.config_path, "/home/"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connstr_parse),
        cmocka_unit_test(test_connstr_errors),
        cmocka_unit_test(test_config_file_format),
        cmocka_unit_test_setup_teardown(test_flags_beat_environment_beat_file, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_data_dir_owner_connstr, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_missing_and_bad_sources, make_dir, remove_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

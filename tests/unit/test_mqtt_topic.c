/*
 * tests/unit/test_mqtt_topic.c — topic name / filter validity, matching
 * with '+', '#' and the '$' rule, shared subscription split. Cases from
 * MQTT 5 §4.7 (the non-normative examples) plus edge cases.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mqtt/codec.h"
#include "mqtt_testutil.h"

static const struct {
    const char *filter;
    const char *name;
    bool match;
} match_cases[] = {
    /* §4.7.1.2 multi-level wildcard */
    {"sport/tennis/player1/#", "sport/tennis/player1", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
    {"sport/#", "sport", true},
    {"sport/#", "sport/", true},
    {"sport/#", "sports", false},
    {"sport/#", "sport/tennis/x", true},
    {"#", "sport/tennis", true},
    {"#", "/", true},
    {"#", "a", true},
    /* §4.7.1.3 single-level wildcard */
    {"sport/tennis/+", "sport/tennis/player1", true},
    {"sport/tennis/+", "sport/tennis/player2", true},
    {"sport/tennis/+", "sport/tennis/player1/ranking", false},
    {"sport/+", "sport", false},
    {"sport/+", "sport/", true},
    {"+", "sport", true},
    {"+", "/finance", false},
    {"+/+", "/finance", true},
    {"/+", "/finance", true},
    {"+/tennis/#", "sport/tennis/player1", true},
    {"+/tennis/#", "sport/tennis", true},
    {"+/tennis/#", "sport/golf", false},
    {"sport/+/player1", "sport/tennis/player1", true},
    {"sport/+/player1", "sport//player1", true},
    {"+/+/+", "a/b/c", true},
    {"+/+/+", "a/b", false},
    {"+/+", "a/b/c", false},
    {"a/+/#", "a/b", true},
    {"a/+/#", "a", false},
    /* §4.7.2 topics beginning with $ [MQTT-4.7.2-1] */
    {"#", "$SYS/x", false},
    {"#", "$SYS", false},
    {"+/monitor/Clients", "$SYS/monitor/Clients", false},
    {"+/monitor", "$SYS/monitor", false},
    {"$SYS/#", "$SYS/x", true},
    {"$SYS/#", "$SYS", true},
    {"$SYS/monitor/+", "$SYS/monitor/Clients", true},
    {"$SYS/monitor/+", "$SYS/monitor/Clients/x", false},
    {"a/$b/#", "a/$b/c", true},
    {"a/+", "a/$b", true}, /* the rule is only about the first character */
    /* literal */
    {"a/b", "a/b", true},
    {"a/b", "a/b/", false},
    {"a/b/", "a/b", false},
    {"a/b", "a/bc", false},
    {"a/bc", "a/b", false},
    {"A/b", "a/b", false},
    {"/", "/", true},
    {"//", "/", false},
    {"\xc3\xa9t\xc3\xa9/+", "\xc3\xa9t\xc3\xa9/x", true},
};

static void test_matching(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof match_cases / sizeof match_cases[0]; i++) {
        mqtt_bytes f = B(match_cases[i].filter), n = B(match_cases[i].name);
        assert_true(mqtt_topic_filter_valid(f));
        assert_true(mqtt_topic_name_valid(n));
        if (mqtt_topic_matches(f, n) != match_cases[i].match) {
            print_error("'%s' vs '%s': expected %d\n", match_cases[i].filter,
                        match_cases[i].name, match_cases[i].match);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

static const struct {
    const char *filter;
    bool valid;
    bool wildcard;
} filter_cases[] = {
    {"a", true, false},
    {"/", true, false},
    {"a/b/c", true, false},
    {"#", true, true},
    {"+", true, true},
    {"+/+", true, true},
    {"sport/#", true, true},
    {"sport/+/player", true, true},
    {"/+", true, true},
    {"+/", true, true},
    {"$SYS/#", true, true},
    {"$share/g/a/#", true, true},
    {"", false, false},
    {"sport/tennis#", false, true},
    {"sport/tennis/#/ranking", false, true},
    {"#/a", false, true},
    {"##", false, true},
    {"sport+", false, true},
    {"+sport", false, true},
    {"sport/+x/a", false, true},
    {"a/++", false, true},
    {"a/#/", false, true},
    {"+#", false, true},
};

static void test_filter_validity(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof filter_cases / sizeof filter_cases[0]; i++) {
        mqtt_bytes f = B(filter_cases[i].filter);
        if (mqtt_topic_filter_valid(f) != filter_cases[i].valid)
            fail_msg("filter '%s' valid expected %d", filter_cases[i].filter,
                     filter_cases[i].valid);
        assert_int_equal(mqtt_topic_filter_has_wildcard(f), filter_cases[i].wildcard);
    }
}

static void test_name_validity(void **state)
{
    (void)state;
    assert_true(mqtt_topic_name_valid(B("a")));
    assert_true(mqtt_topic_name_valid(B("/")));
    assert_true(mqtt_topic_name_valid(B("$SYS/x")));
    assert_true(mqtt_topic_name_valid(B("a b/c")));
    assert_false(mqtt_topic_name_valid(B("")));
    assert_false(mqtt_topic_name_valid(B("a/+")));
    assert_false(mqtt_topic_name_valid(B("a/#")));
    assert_false(mqtt_topic_name_valid(B("a+b")));
    static uint8_t big[65536];
    memset(big, 'a', sizeof big);
    assert_true(mqtt_topic_name_valid((mqtt_bytes){big, 65535}));
    assert_false(mqtt_topic_name_valid((mqtt_bytes){big, 65536}));
    assert_true(mqtt_topic_filter_valid((mqtt_bytes){big, 65535}));
    assert_false(mqtt_topic_filter_valid((mqtt_bytes){big, 65536}));
}

static void test_shared_split(void **state)
{
    (void)state;
    mqtt_bytes g, f;
    assert_int_equal(mqtt_shared_filter_split(B("$share/group/a/b/#"), &g, &f), 1);
    assert_int_equal(g.len, 5);
    assert_memory_equal(g.p, "group", 5);
    assert_int_equal(f.len, 5);
    assert_memory_equal(f.p, "a/b/#", 5);
    assert_int_equal(mqtt_shared_filter_split(B("$share/g/#"), &g, &f), 1);
    assert_int_equal(f.len, 1);
    assert_int_equal(mqtt_shared_filter_split(B("$share/g//"), &g, &f), 1);
    assert_int_equal(f.len, 1);
    assert_int_equal(mqtt_shared_filter_split(B("$share/g/"), &g, &f), -1);
    assert_int_equal(mqtt_shared_filter_split(B("$share//a"), &g, &f), -1);
    assert_int_equal(mqtt_shared_filter_split(B("$share/g"), &g, &f), -1);
    assert_int_equal(mqtt_shared_filter_split(B("$share/"), &g, &f), -1);
    assert_int_equal(mqtt_shared_filter_split(B("$share/+/a"), &g, &f), -1);
    assert_int_equal(mqtt_shared_filter_split(B("$share/g#/a"), &g, &f), -1);
    assert_int_equal(mqtt_shared_filter_split(B("$share"), &g, &f), 0);
    assert_int_equal(mqtt_shared_filter_split(B("$sharex/g/a"), &g, &f), 0);
    assert_int_equal(mqtt_shared_filter_split(B("$SHARE/g/a"), &g, &f), 0);
    assert_int_equal(mqtt_shared_filter_split(B("a/$share/g/a"), &g, &f), 0);
    assert_int_equal(mqtt_shared_filter_split(B("$SYS/#"), &g, &f), 0);
    assert_int_equal(mqtt_shared_filter_split(B(""), &g, &f), 0);
    /* NULL outputs are allowed. */
    assert_int_equal(mqtt_shared_filter_split(B("$share/g/a"), NULL, NULL), 1);
}

/* Without wildcards, a valid filter matches exactly the equal name. */
static void test_literal_filters(void **state)
{
    (void)state;
    static const char *const names[] = {"a", "a/b", "a/b/", "/a", "$SYS/a", "a//b"};
    size_t n = sizeof names / sizeof names[0];
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            assert_int_equal(mqtt_topic_matches(B(names[i]), B(names[j])), i == j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matching),
        cmocka_unit_test(test_filter_validity),
        cmocka_unit_test(test_name_validity),
        cmocka_unit_test(test_shared_split),
        cmocka_unit_test(test_literal_filters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

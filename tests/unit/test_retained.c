/*
 * tests/unit/test_retained.c — the retained-message store: set, replace,
 * remove by empty payload, matching with wildcards and the '$' rule, and
 * balanced references.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "broker/topic_tree.h"

static mqtt_bytes B(const char *s)
{
    return (mqtt_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

static broker_msg *msg(const char *topic, const char *payload)
{
    mqtt_publish pub = {0};
    pub.retain = true;
    pub.payload = B(payload);
    broker_msg *m = broker_msg_new(&pub, B(topic), NULL, 0);
    assert_non_null(m);
    return m;
}

static unsigned refs(broker_msg *m) { return atomic_load(&m->refs); }

/* Stores a message and drops the creator's reference. */
static void set(retain_store *r, const char *topic, const char *payload)
{
    broker_msg *m = msg(topic, payload);
    retain_store_set(r, m);
    broker_msg_unref(m);
}

static void release(broker_msg_vec *v)
{
    for (size_t i = 0; i < v->len; i++)
        broker_msg_unref(v->items[i]);
    v->len = 0;
}

/* Matches `filter`; returns the sorted, comma-joined "topic=payload" list. */
static const char *match_str(retain_store *r, const char *filter)
{
    static char out[4096];
    broker_msg_vec v = {0};
    assert_true(retain_store_match(r, B(filter), &v));
    char *items[128];
    assert_true(v.len < 128);
    for (size_t i = 0; i < v.len; i++) {
        broker_msg *m = v.items[i];
        items[i] = malloc(m->topic.len + m->payload.len + 2);
        assert_non_null(items[i]);
        sprintf(items[i], "%.*s=%.*s", (int)m->topic.len, (const char *)m->topic.p,
                (int)m->payload.len, (const char *)m->payload.p);
    }
    for (size_t i = 1; i < v.len; i++) /* insertion sort */
        for (size_t j = i; j > 0 && strcmp(items[j - 1], items[j]) > 0; j--) {
            char *tmp = items[j];
            items[j] = items[j - 1];
            items[j - 1] = tmp;
        }
    out[0] = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (i)
            strcat(out, ",");
        strcat(out, items[i]);
        free(items[i]);
    }
    release(&v);
    broker_msg_vec_free(&v);
    return out;
}

static void test_set_replace_remove(void **state)
{
    (void)state;
    retain_store *r = retain_store_new();
    assert_non_null(r);
    assert_int_equal(retain_store_count(r), 0);

    broker_msg *a = msg("a/b", "1");
    retain_store_set(r, a);
    assert_int_equal(refs(a), 2); /* the store holds one */
    assert_int_equal(retain_store_count(r), 1);
    assert_string_equal(match_str(r, "a/b"), "a/b=1");
    assert_int_equal(refs(a), 2); /* matching refs are released again */

    broker_msg *a2 = msg("a/b", "2");
    retain_store_set(r, a2); /* replaces */
    assert_int_equal(refs(a), 1);
    assert_int_equal(refs(a2), 2);
    assert_int_equal(retain_store_count(r), 1);
    assert_string_equal(match_str(r, "a/b"), "a/b=2");

    retain_store_set(r, a2); /* same message again: no change */
    assert_int_equal(refs(a2), 2);
    assert_int_equal(retain_store_count(r), 1);

    set(r, "a", "p"); /* a parent topic */
    set(r, "a/b/c", "q"); /* a child topic */
    assert_int_equal(retain_store_count(r), 3);

    broker_msg *del = msg("a/b", "");
    retain_store_set(r, del); /* empty payload removes */
    assert_int_equal(refs(del), 1); /* and is not stored */
    assert_int_equal(refs(a2), 1);
    assert_int_equal(retain_store_count(r), 2);
    assert_string_equal(match_str(r, "a/b"), "");
    assert_string_equal(match_str(r, "a/#"), "a/b/c=q,a=p");

    retain_store_set(r, del); /* removing what is not there: nothing */
    set(r, "x/y/z", ""); /* never stored, path absent */
    assert_int_equal(retain_store_count(r), 2);

    set(r, "a/b/c", "");
    set(r, "a", "");
    assert_int_equal(retain_store_count(r), 0);
    assert_string_equal(match_str(r, "#"), "");

    broker_msg_unref(a);
    broker_msg_unref(a2);
    broker_msg_unref(del);
    retain_store_free(r);
}

static const char *const stored[] = {
    "sport/tennis/player1", "sport/tennis/player2", "sport/tennis",
    "sport", "sport/", "/finance", "finance", "$SYS/broker/load", "$SYS",
    "a/$b", "a//c", "a/x/c", "a/x/y/c",
};

static const struct {
    const char *filter, *want;
} match_cases[] = {
    {"sport/tennis/player1", "sport/tennis/player1=sport/tennis/player1"},
    {"sport/tennis/+",
     "sport/tennis/player1=sport/tennis/player1,sport/tennis/player2=sport/tennis/player2"},
    {"sport/#",
     "sport/=sport/,sport/tennis/player1=sport/tennis/player1,"
     "sport/tennis/player2=sport/tennis/player2,sport/tennis=sport/tennis,sport=sport"},
    {"sport/tennis/#",
     "sport/tennis/player1=sport/tennis/player1,"
     "sport/tennis/player2=sport/tennis/player2,sport/tennis=sport/tennis"},
    {"sport/+", "sport/=sport/,sport/tennis=sport/tennis"},
    {"sport", "sport=sport"},
    {"+", "finance=finance,sport=sport"},
    {"+/+", "/finance=/finance,a/$b=a/$b,sport/=sport/,sport/tennis=sport/tennis"},
    {"/+", "/finance=/finance"},
    {"+/finance", "/finance=/finance"},
    {"a/+/c", "a//c=a//c,a/x/c=a/x/c"},
    {"a/+", "a/$b=a/$b"},
    {"a/#", "a/$b=a/$b,a//c=a//c,a/x/c=a/x/c,a/x/y/c=a/x/y/c"},
    {"+/+/+/+", "a/x/y/c=a/x/y/c"},
    {"#",
     "/finance=/finance,a/$b=a/$b,a//c=a//c,a/x/c=a/x/c,a/x/y/c=a/x/y/c,"
     "finance=finance,sport/=sport/,sport/tennis/player1=sport/tennis/player1,"
     "sport/tennis/player2=sport/tennis/player2,sport/tennis=sport/tennis,sport=sport"},
    {"+/broker/load", ""},
    {"+/#", "/finance=/finance,a/$b=a/$b,a//c=a//c,a/x/c=a/x/c,a/x/y/c=a/x/y/c,"
            "finance=finance,sport/=sport/,sport/tennis/player1=sport/tennis/player1,"
            "sport/tennis/player2=sport/tennis/player2,sport/tennis=sport/tennis,sport=sport"},
    {"$SYS/#", "$SYS/broker/load=$SYS/broker/load,$SYS=$SYS"},
    {"$SYS/+/load", "$SYS/broker/load=$SYS/broker/load"},
    {"$SYS", "$SYS=$SYS"},
    {"nothing/#", ""},
    {"sport/tennis/player1/#", "sport/tennis/player1=sport/tennis/player1"},
    {"sport/tennis/player1/+", ""},
    {"Sport", ""},
};

static void test_match_table(void **state)
{
    (void)state;
    retain_store *r = retain_store_new();
    broker_msg *m[sizeof stored / sizeof stored[0]];
    for (size_t i = 0; i < sizeof stored / sizeof stored[0]; i++) {
        m[i] = msg(stored[i], stored[i]);
        retain_store_set(r, m[i]);
    }
    assert_int_equal(retain_store_count(r), sizeof stored / sizeof stored[0]);
    for (size_t i = 0; i < sizeof match_cases / sizeof match_cases[0]; i++) {
        const char *got = match_str(r, match_cases[i].filter);
        if (strcmp(got, match_cases[i].want) != 0)
            fail_msg("filter '%s':\n got  %s\n want %s", match_cases[i].filter, got,
                     match_cases[i].want);
    }
    /* every reference taken by matching was given back */
    for (size_t i = 0; i < sizeof stored / sizeof stored[0]; i++)
        assert_int_equal(refs(m[i]), 2);

    /* appending: results accumulate in the caller's vector */
    broker_msg_vec v = {0};
    assert_true(retain_store_match(r, B("sport"), &v));
    assert_true(retain_store_match(r, B("finance"), &v));
    assert_int_equal(v.len, 2);
    assert_int_equal(refs(v.items[0]), 3);
    release(&v);
    broker_msg_vec_free(&v);
    assert_null(v.items);

    retain_store_free(r); /* drops the store's references */
    for (size_t i = 0; i < sizeof stored / sizeof stored[0]; i++) {
        assert_int_equal(refs(m[i]), 1);
        broker_msg_unref(m[i]);
    }
}

static void test_many_and_prune(void **state)
{
    (void)state;
    enum { N = 300 };
    retain_store *r = retain_store_new();
    char t[64];
    /* many siblings (the hashed child index), removed in mixed order */
    for (int i = 0; i < N; i++) {
        snprintf(t, sizeof t, "dev/%d/status", i);
        set(r, t, "on");
        snprintf(t, sizeof t, "dev/%d", i);
        set(r, t, "x");
    }
    assert_int_equal(retain_store_count(r), 2 * N);
    broker_msg_vec v = {0};
    assert_true(retain_store_match(r, B("dev/+/status"), &v));
    assert_int_equal(v.len, N);
    release(&v);
    assert_true(retain_store_match(r, B("dev/#"), &v));
    assert_int_equal(v.len, 2 * N);
    release(&v);
    for (int i = 0; i < N; i += 2) {
        snprintf(t, sizeof t, "dev/%d/status", i);
        set(r, t, "");
    }
    for (int i = 0; i < N; i++) {
        snprintf(t, sizeof t, "dev/%d/status", i);
        assert_true(retain_store_match(r, B(t), &v));
        assert_int_equal(v.len, i % 2 ? 1u : 0u);
        release(&v);
        snprintf(t, sizeof t, "dev/%d", i);
        assert_true(retain_store_match(r, B(t), &v));
        assert_int_equal(v.len, 1);
        release(&v);
    }
    assert_true(retain_store_match(r, B("dev/+/status"), &v));
    assert_int_equal(v.len, N / 2);
    release(&v);
    /* Pruning dev/i whole (no message, no children left) takes it out of
     * dev's children, the last child moving into its place: '#' walks the
     * rest through those positions and must see each message once. */
    for (int i = 0; i < N; i += 4) {
        snprintf(t, sizeof t, "dev/%d", i);
        set(r, t, "");
    }
    assert_true(retain_store_match(r, B("dev/#"), &v));
    assert_int_equal(v.len, N / 2 + N * 3 / 4);
    for (size_t i = 0; i < v.len; i++)
        for (size_t j = 0; j < i; j++)
            assert_false(v.items[i] == v.items[j]);
    release(&v);
    for (int i = N; i-- > 0;) {
        snprintf(t, sizeof t, "dev/%d", i);
        set(r, t, "");
        snprintf(t, sizeof t, "dev/%d/status", i);
        set(r, t, "");
    }
    assert_int_equal(retain_store_count(r), 0);
    assert_true(retain_store_match(r, B("#"), &v));
    assert_int_equal(v.len, 0);
    /* and it is usable again after being emptied */
    set(r, "dev/1", "back");
    assert_true(retain_store_match(r, B("+/+"), &v));
    assert_int_equal(v.len, 1);
    release(&v);
    broker_msg_vec_free(&v);
    retain_store_free(r); /* ASan: no leak, no double free */
    retain_store_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_replace_remove),
        cmocka_unit_test(test_match_table),
        cmocka_unit_test(test_many_and_prune),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for util/hmap: insert, replace, delete with backward shift,
 * iteration, agreement with a brute-force model under random churn, keys
 * read through a context (values that are positions in an array), and
 * one slot per entry (8 bytes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/hmap.h"

/* A value that carries its key, as the map's users' values do. */
typedef struct item {
    const char *key;
    size_t len;
} item;

static hmap_key item_key(const void *value, const void *ctx)
{
    (void)ctx;
    const item *it = value;
    return (hmap_key){it->key, it->len};
}

static void test_put_get_replace_delete(void **state)
{
    (void)state;
    hmap m;
    hmap_init(&m, item_key, NULL);
    item a = {"k", 1}, b = {"k", 1}, ab = {"ab", 2};
    assert_null(hmap_get(&m, "k", 1));
    assert_null(hmap_put(&m, "k", 1, &a));
    assert_ptr_equal(hmap_get(&m, "k", 1), &a);
    assert_ptr_equal(hmap_put(&m, "k", 1, &b), &a);
    assert_ptr_equal(hmap_get(&m, "k", 1), &b);
    assert_int_equal(m.count, 1);
    assert_ptr_equal(hmap_del(&m, "k", 1), &b);
    assert_null(hmap_del(&m, "k", 1));
    assert_int_equal(m.count, 0);
    /* Keys differing only in length are distinct. */
    hmap_put(&m, "ab", 2, &ab);
    assert_null(hmap_get(&m, "a", 1));
    assert_null(hmap_get(&m, "abc", 3));
    assert_ptr_equal(hmap_get(&m, "ab", 2), &ab);
    hmap_free(&m);
    /* The key function survives hmap_free: the map is reusable. */
    assert_null(hmap_put(&m, "ab", 2, &ab));
    assert_ptr_equal(hmap_get(&m, "ab", 2), &ab);
    hmap_free(&m);
}

#define N 4000

static void test_random_churn_matches_model(void **state)
{
    (void)state;
    static char keys[N][16];
    static int present[N];
    static item values[N];
    hmap m;
    hmap_init(&m, item_key, NULL);
    srand(12345);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "key%d", i);
        values[i] = (item){keys[i], strlen(keys[i])};
    }
    for (int step = 0; step < 100000; step++) {
        int i = rand() % N;
        size_t len = strlen(keys[i]);
        if (rand() % 3 == 0) {
            void *old = hmap_del(&m, keys[i], len);
            assert_true((old != NULL) == (present[i] != 0));
            present[i] = 0;
        } else {
            hmap_put(&m, keys[i], len, &values[i]);
            present[i] = 1;
        }
        if (step % 997 == 0) {
            size_t count = 0;
            for (int j = 0; j < N; j++) {
                void *v = hmap_get(&m, keys[j], strlen(keys[j]));
                assert_true((v != NULL) == (present[j] != 0));
                if (v) {
                    assert_ptr_equal(v, &values[j]);
                    count++;
                }
            }
            assert_int_equal(count, m.count);
        }
    }
    size_t seen = 0;
    void *v;
    for (size_t pos = 0; hmap_next(&m, &pos, &v);)
        seen++;
    assert_int_equal(seen, m.count);
    hmap_free(&m);
}

/* Values that are positions + 1 in an array the context points at (the
 * session's subscription index, the outbound topic aliases), with the
 * swap-with-last removal subscribe.c does. */
typedef struct table {
    char names[64][24];
    size_t n;
} table;

static hmap_key pos_key(const void *value, const void *ctx)
{
    const table *t = ctx;
    const char *k = t->names[(uintptr_t)value - 1];
    return (hmap_key){k, strlen(k)};
}

static void test_values_are_positions(void **state)
{
    (void)state;
    static table t;
    hmap m;
    hmap_init(&m, pos_key, &t);
    for (size_t i = 0; i < 64; i++) {
        snprintf(t.names[i], sizeof t.names[i], "n%zu", i);
        t.n++;
        assert_null(hmap_put(&m, t.names[i], strlen(t.names[i]), (void *)(uintptr_t)(i + 1)));
    }
    /* Remove entries from the front, moving the last into the hole. */
    for (int round = 0; round < 40; round++) {
        size_t i = (size_t)round % t.n, last = t.n - 1;
        char gone[24];
        memcpy(gone, t.names[i], sizeof gone);
        assert_int_equal((uintptr_t)hmap_del(&m, gone, strlen(gone)), i + 1);
        if (i != last)
            assert_int_equal((uintptr_t)hmap_put(&m, t.names[last], strlen(t.names[last]),
                                                 (void *)(uintptr_t)(i + 1)),
                             last + 1);
        memcpy(t.names[i], t.names[last], sizeof t.names[i]);
        t.n--;
        assert_null(hmap_get(&m, gone, strlen(gone)));
        assert_int_equal(m.count, t.n);
        for (size_t j = 0; j < t.n; j++)
            assert_int_equal((uintptr_t)hmap_get(&m, t.names[j], strlen(t.names[j])), j + 1);
    }
    hmap_free(&m);
}

/* One pointer per slot, at most 70% load: what a connection costs a map. */
static void test_slot_size_and_load(void **state)
{
    (void)state;
    static char keys[1000][16];
    static item values[1000];
    hmap m;
    hmap_init(&m, item_key, NULL);
    for (int i = 0; i < 1000; i++) {
        snprintf(keys[i], sizeof keys[i], "d%d", i);
        values[i] = (item){keys[i], strlen(keys[i])};
        hmap_put(&m, keys[i], values[i].len, &values[i]);
    }
    assert_int_equal(sizeof m.slots[0], sizeof(void *));
    assert_int_equal(m.cap, 2048);
    assert_true(m.count * 10 <= m.cap * 7);
    hmap_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_replace_delete),
        cmocka_unit_test(test_random_churn_matches_model),
        cmocka_unit_test(test_values_are_positions),
        cmocka_unit_test(test_slot_size_and_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for util/hmap: insert, replace, delete with backward shift,
 * iteration, and agreement with a brute-force model under random churn. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/hmap.h"

static void test_put_get_replace_delete(void **state)
{
    (void)state;
    hmap m;
    hmap_init(&m);
    int a = 1, b = 2;
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
    hmap_put(&m, "ab", 2, &a);
    assert_null(hmap_get(&m, "a", 1));
    assert_null(hmap_get(&m, "abc", 3));
    hmap_free(&m);
}

#define N 4000

static void test_random_churn_matches_model(void **state)
{
    (void)state;
    static char keys[N][16];
    static int present[N];
    static int values[N];
    hmap m;
    hmap_init(&m);
    srand(12345);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "key%d", i);
        values[i] = i;
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_replace_delete),
        cmocka_unit_test(test_random_churn_matches_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

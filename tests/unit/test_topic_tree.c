/*
 * tests/unit/test_topic_tree.c — the subscription trie: subscribe/replace/
 * unsubscribe, the matching rules (table + randomized cross-check against a
 * naive matcher), overlapping subscriptions, shared groups, reference
 * counting, pruning (heap back to where it was), allocation-free matching,
 * and concurrent writers and readers.
 */
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "broker/topic_tree.h"

/* ---- helpers -------------------------------------------------------------- */

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_ASAN 1
#endif
#endif

#ifdef HAVE_ASAN
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t heap_in_use(void) { return __sanitizer_get_current_allocated_bytes(); }
#define HEAP_EXACT 1 /* frees are reflected at once */
#else
/* glibc: freed chunks parked in the thread cache still count as in use, so
 * this only proves that nothing was allocated, not that all was freed. */
static size_t heap_in_use(void) { return mallinfo2().uordblks; }
#define HEAP_EXACT 0
#endif

typedef struct fake_sub {
    atomic_int refs;
    int id;
} fake_sub;

static atomic_long total_refs;

static void sub_ref(void *s)
{
    atomic_fetch_add(&((fake_sub *)s)->refs, 1);
    atomic_fetch_add(&total_refs, 1);
}

static const topic_tree_ops ops = {.ref = sub_ref};

static mqtt_bytes B(const char *s)
{
    return (mqtt_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

static const mqtt_bytes NOGROUP = {NULL, 0};

/* Matches and drops the references again (the caller's job normally). */
static void match(topic_tree *t, const char *topic, topic_match_vec *v)
{
    v->len = 0;
    assert_true(topic_tree_match(t, B(topic), v));
    for (size_t i = 0; i < v->len; i++) {
        fake_sub *s = v->items[i].subscriber;
        atomic_fetch_sub(&s->refs, 1);
        atomic_fetch_sub(&total_refs, 1);
    }
}

static void sub(topic_tree *t, void *s, const char *group, const char *filter,
                uint8_t opts, uint32_t id, bool want_existed)
{
    bool existed = !want_existed;
    assert_true(topic_tree_subscribe(t, s, group ? B(group) : NOGROUP, B(filter),
                                     opts, id, &existed));
    assert_int_equal(existed, want_existed);
}

/* Reference matcher: level by level, straight from the specification. */
static bool naive_rest(const char *f, const char *t)
{
    if (strcmp(f, "#") == 0)
        return true;
    size_t fl = strcspn(f, "/"), tl = strcspn(t, "/");
    bool plus = fl == 1 && f[0] == '+';
    if (!plus && (fl != tl || memcmp(f, t, fl) != 0))
        return false;
    bool fend = f[fl] == 0, tend = t[tl] == 0;
    if (fend && tend)
        return true;
    if (tend)
        return strcmp(f + fl, "/#") == 0;
    if (fend)
        return false;
    return naive_rest(f + fl + 1, t + tl + 1);
}

static bool naive_match(const char *f, const char *t)
{
    if (t[0] == '$' && (f[0] == '+' || f[0] == '#'))
        return false;
    return naive_rest(f, t);
}

/* ---- subscribe / unsubscribe ---------------------------------------------- */

static void test_subscribe_replace_unsubscribe(void **state)
{
    (void)state;
    topic_tree *t = topic_tree_new(&ops);
    assert_non_null(t);
    fake_sub a = {0}, b = {0};
    topic_match_vec v = {0};

    assert_int_equal(topic_tree_count(t), 0);
    sub(t, &a, NULL, "x/y", 1, 5, false);
    sub(t, &b, NULL, "x/y", 0, 0, false);
    assert_int_equal(topic_tree_count(t), 2);

    sub(t, &a, NULL, "x/y", 2 | MQTT_SUBOPT_NO_LOCAL, 9, true); /* replace */
    assert_int_equal(topic_tree_count(t), 2);
    match(t, "x/y", &v);
    assert_int_equal(v.len, 2);
    for (size_t i = 0; i < v.len; i++) {
        if (v.items[i].subscriber == &a) {
            assert_int_equal(v.items[i].options, 2 | MQTT_SUBOPT_NO_LOCAL);
            assert_int_equal(v.items[i].sub_id, 9);
        } else {
            assert_ptr_equal(v.items[i].subscriber, &b);
            assert_int_equal(v.items[i].sub_id, 0);
        }
        assert_false(v.items[i].shared);
    }

    /* existed may be NULL */
    assert_true(topic_tree_subscribe(t, &a, NOGROUP, B("x/y"), 1, 5, NULL));

    assert_false(topic_tree_unsubscribe(t, &a, NOGROUP, B("x")));
    assert_false(topic_tree_unsubscribe(t, &a, NOGROUP, B("x/y/z")));
    assert_false(topic_tree_unsubscribe(t, &a, NOGROUP, B("x/+")));
    assert_false(topic_tree_unsubscribe(t, &a, B("g"), B("x/y")));
    assert_true(topic_tree_unsubscribe(t, &a, NOGROUP, B("x/y")));
    assert_false(topic_tree_unsubscribe(t, &a, NOGROUP, B("x/y")));
    assert_int_equal(topic_tree_count(t), 1);
    match(t, "x/y", &v);
    assert_int_equal(v.len, 1);
    assert_ptr_equal(v.items[0].subscriber, &b);

    /* shared: same rules */
    sub(t, &a, "g", "x/y", 1, 0, false);
    sub(t, &a, "g", "x/y", 2, 3, true);
    assert_int_equal(topic_tree_count(t), 2);
    assert_false(topic_tree_unsubscribe(t, &b, B("g"), B("x/y")));
    assert_false(topic_tree_unsubscribe(t, &a, B("h"), B("x/y")));
    assert_true(topic_tree_unsubscribe(t, &a, B("g"), B("x/y")));
    assert_false(topic_tree_unsubscribe(t, &a, B("g"), B("x/y")));
    assert_true(topic_tree_unsubscribe(t, &b, NOGROUP, B("x/y")));
    assert_int_equal(topic_tree_count(t), 0);
    match(t, "x/y", &v);
    assert_int_equal(v.len, 0);

    assert_int_equal(atomic_load(&total_refs), 0);
    topic_match_vec_free(&v);
    assert_null(v.items);
    topic_tree_free(t);
}

/* ---- matching rules ------------------------------------------------------- */

static const struct {
    const char *filter, *topic;
    bool match;
} match_cases[] = {
    {"a/b/c", "a/b/c", true},
    {"a/b/c", "a/b", false},
    {"a/b", "a/b/c", false},
    {"A/b", "a/b", false},
    {"a/b/", "a/b", false},
    {"a/b/", "a/b/", true},
    {"a/+/c", "a/x/c", true},
    {"a/+/c", "a//c", true},
    {"a/+/c", "a/x/y/c", false},
    {"+", "a", true},
    {"+", "a/b", false},
    {"+", "/a", false},
    {"+/+", "/finance", true},
    {"/+", "/finance", true},
    {"+", "/finance", false},
    {"+/+", "/", true},
    {"/", "/", true},
    {"//", "/", false},
    {"#", "a/b/c", true},
    {"#", "/", true},
    {"#", "a", true},
    {"sport/#", "sport", true},
    {"sport/#", "sport/", true},
    {"sport/#", "sport/tennis/player1", true},
    {"sport/#", "sports", false},
    {"sport/#", "spor", false},
    {"sport/tennis/#", "sport/tennis", true},
    {"sport/tennis/#", "sport", false},
    {"sport/+", "sport", false},
    {"sport/+", "sport/", true},
    {"+/tennis/#", "sport/tennis/x/y", true},
    {"+/+/#", "a", false},
    {"+/#", "a", true},
    {"#", "$SYS/x", false},
    {"#", "$", false},
    {"+/x", "$SYS/x", false},
    {"+", "$SYS", false},
    {"+/#", "$SYS/x", false},
    {"$SYS/#", "$SYS/x", true},
    {"$SYS/#", "$SYS", true},
    {"$SYS/+", "$SYS/x", true},
    {"$SYS/x", "$SYS/x", true},
    {"$SYS/#", "SYS/x", false},
    {"a/$b", "a/$b", true},
    {"a/+", "a/$b", true},
    {"a/#", "a/$b", true},
};
#define N_MATCH_CASES (sizeof match_cases / sizeof match_cases[0])

static void test_match_table(void **state)
{
    (void)state;
    topic_match_vec v = {0};
    /* each case alone in a tree */
    for (size_t i = 0; i < N_MATCH_CASES; i++) {
        topic_tree *t = topic_tree_new(&ops);
        fake_sub s = {0};
        sub(t, &s, NULL, match_cases[i].filter, 1, 7, false);
        match(t, match_cases[i].topic, &v);
        if (v.len != (match_cases[i].match ? 1u : 0u))
            fail_msg("filter '%s' topic '%s': %zu matches", match_cases[i].filter,
                     match_cases[i].topic, v.len);
        if (v.len) {
            assert_ptr_equal(v.items[0].subscriber, &s);
            assert_int_equal(v.items[0].sub_id, 7);
            assert_int_equal(v.items[0].options, 1);
        }
        /* the naive matcher agrees with the table (checks the checker) */
        assert_int_equal(naive_match(match_cases[i].filter, match_cases[i].topic),
                         match_cases[i].match);
        topic_tree_free(t);
    }

    /* all cases' filters in one tree, one subscriber per distinct case */
    topic_tree *t = topic_tree_new(&ops);
    fake_sub subs[N_MATCH_CASES];
    memset(subs, 0, sizeof subs);
    for (size_t i = 0; i < N_MATCH_CASES; i++) {
        subs[i].id = (int)i;
        sub(t, &subs[i], NULL, match_cases[i].filter, 0, (uint32_t)i + 1, false);
    }
    assert_int_equal(topic_tree_count(t), N_MATCH_CASES);
    for (size_t i = 0; i < N_MATCH_CASES; i++) {
        const char *topic = match_cases[i].topic;
        match(t, topic, &v);
        size_t want = 0;
        for (size_t j = 0; j < N_MATCH_CASES; j++)
            if (naive_match(match_cases[j].filter, topic))
                want++;
        assert_int_equal(v.len, want);
        for (size_t k = 0; k < v.len; k++) {
            fake_sub *s = v.items[k].subscriber;
            assert_true(naive_match(match_cases[s->id].filter, topic));
            assert_int_equal(v.items[k].sub_id, (uint32_t)s->id + 1);
        }
    }
    topic_tree_free(t);
    topic_match_vec_free(&v);
    assert_int_equal(atomic_load(&total_refs), 0);
}

static void test_overlapping(void **state)
{
    (void)state;
    topic_tree *t = topic_tree_new(&ops);
    fake_sub s = {0}, other = {0};
    topic_match_vec v = {0};
    sub(t, &s, NULL, "home/+/temp", 0, 1, false);
    sub(t, &s, NULL, "home/#", 1, 2, false);
    sub(t, &s, NULL, "home/kitchen/temp", 2, 3, false);
    sub(t, &other, NULL, "home/kitchen/light", 0, 4, false);
    assert_int_equal(topic_tree_count(t), 4);

    long before = atomic_load(&total_refs);
    assert_true(topic_tree_match(t, B("home/kitchen/temp"), &v));
    assert_int_equal(v.len, 3);
    assert_int_equal(atomic_load(&s.refs), 3); /* ref called per entry */
    assert_int_equal(atomic_load(&total_refs), before + 3);
    unsigned seen = 0;
    for (size_t i = 0; i < v.len; i++) {
        assert_ptr_equal(v.items[i].subscriber, &s);
        assert_int_equal(v.items[i].options, v.items[i].sub_id - 1);
        seen |= 1u << v.items[i].sub_id;
    }
    assert_int_equal(seen, 0xe);

    /* appends, does not clear */
    assert_true(topic_tree_match(t, B("home/kitchen/light"), &v));
    assert_int_equal(v.len, 5);
    assert_int_equal(atomic_load(&other.refs), 1);
    v.len = 0;
    atomic_store(&s.refs, 0);
    atomic_store(&other.refs, 0);
    atomic_store(&total_refs, before);

    /* no ref callback: fine */
    topic_tree *t2 = topic_tree_new(NULL);
    sub(t2, &s, NULL, "a", 0, 0, false);
    assert_true(topic_tree_match(t2, B("a"), &v));
    assert_int_equal(v.len, 1);
    assert_int_equal(atomic_load(&s.refs), 0);
    topic_tree_free(t2);

    topic_match_vec_free(&v);
    topic_tree_free(t);
}

/* ---- shared subscriptions ------------------------------------------------- */

static void test_shared_round_robin(void **state)
{
    (void)state;
    enum { MEMBERS = 3, MSGS = 300 };
    topic_tree *t = topic_tree_new(&ops);
    fake_sub m[MEMBERS], plain = {0};
    memset(m, 0, sizeof m);
    topic_match_vec v = {0};
    for (int i = 0; i < MEMBERS; i++)
        sub(t, &m[i], "workers", "jobs/+", 1, (uint32_t)(10 + i), false);
    sub(t, &plain, NULL, "jobs/+", 0, 0, false);
    assert_int_equal(topic_tree_count(t), MEMBERS + 1);

    int got[MEMBERS] = {0};
    for (int k = 0; k < MSGS; k++) {
        v.len = 0;
        assert_true(topic_tree_match(t, B("jobs/x"), &v));
        assert_int_equal(v.len, 2); /* the plain one + one member */
        int shared = 0;
        for (size_t i = 0; i < v.len; i++) {
            if (!v.items[i].shared) {
                assert_ptr_equal(v.items[i].subscriber, &plain);
                continue;
            }
            shared++;
            fake_sub *s = v.items[i].subscriber;
            int idx = (int)(s - m);
            assert_true(idx >= 0 && idx < MEMBERS);
            assert_int_equal(v.items[i].sub_id, (uint32_t)(10 + idx));
            got[idx]++;
        }
        assert_int_equal(shared, 1);
    }
    int total = 0;
    for (int i = 0; i < MEMBERS; i++) {
        assert_int_equal(got[i], MSGS / MEMBERS); /* even distribution */
        assert_int_equal(atomic_load(&m[i].refs), got[i]);
        total += got[i];
    }
    assert_int_equal(total, MSGS);

    /* a second group on the same filter gets its own copy */
    fake_sub g2 = {0};
    sub(t, &g2, "other", "jobs/+", 0, 0, false);
    v.len = 0;
    assert_true(topic_tree_match(t, B("jobs/y"), &v));
    assert_int_equal(v.len, 3);
    int from_g2 = 0, from_workers = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.items[i].subscriber == &g2)
            from_g2++;
        else if (v.items[i].shared)
            from_workers++;
    }
    assert_int_equal(from_g2, 1);
    assert_int_equal(from_workers, 1);

    /* a member leaves: the rest share everything */
    assert_true(topic_tree_unsubscribe(t, &m[1], B("workers"), B("jobs/+")));
    int before1 = atomic_load(&m[1].refs);
    for (int k = 0; k < 20; k++) {
        v.len = 0;
        assert_true(topic_tree_match(t, B("jobs/z"), &v));
        assert_int_equal(v.len, 3);
    }
    assert_int_equal(atomic_load(&m[1].refs), before1);

    /* same group name under another filter is another group */
    sub(t, &m[1], "workers", "jobs/#", 0, 0, false);
    v.len = 0;
    assert_true(topic_tree_match(t, B("jobs/z"), &v));
    assert_int_equal(v.len, 4);

    /* a shared '#' group follows the '$' rule too */
    sub(t, &m[2], "mon", "#", 0, 0, false);
    v.len = 0;
    assert_true(topic_tree_match(t, B("$SYS/load"), &v));
    assert_int_equal(v.len, 0);

    topic_match_vec_free(&v);
    topic_tree_free(t);
    atomic_store(&total_refs, 0);
}

/* ---- pruning, leaks, allocation-free matching ----------------------------- */

static void make_filter(char *buf, size_t cap, unsigned i)
{
    static const char *const lv[] = {"a", "b", "+", "c", "", "d", "e", "f",
                                     "g", "h", "i", "j", "k", "$x"};
    unsigned nlv = sizeof lv / sizeof lv[0];
    unsigned depth = 1 + i % 4;
    size_t n = 0;
    for (unsigned d = 0; d < depth; d++) {
        unsigned pick = (i / (d + 1) * 7 + d * 3) % nlv;
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", d ? "/" : "", lv[pick]);
    }
    if (i % 5 == 0)
        snprintf(buf + n, cap - n, "%s#", depth ? "/" : "");
}

static void test_prune_and_count(void **state)
{
    (void)state;
    enum { NSUBS = 40, NFILTERS = 200 };
    fake_sub s[NSUBS];
    memset(s, 0, sizeof s);
    topic_tree *t = topic_tree_new(&ops);
    topic_match_vec v = {0};
    match(t, "a/b", &v); /* nothing */

    size_t base = heap_in_use();
    size_t expect = 0;
    char f[128];
    for (unsigned i = 0; i < NFILTERS; i++) {
        make_filter(f, sizeof f, i);
        for (unsigned k = 0; k < NSUBS; k += 1 + i % 7) {
            bool existed;
            const char *group = (k % 3 == 0) ? "grp" : NULL;
            assert_true(topic_tree_subscribe(t, &s[k], group ? B(group) : NOGROUP,
                                             B(f), 0, k, &existed));
            if (!existed)
                expect++;
        }
    }
    /* many children under one node, many subscribers on one filter */
    for (unsigned i = 0; i < 100; i++) {
        snprintf(f, sizeof f, "wide/%u", i);
        sub(t, &s[i % NSUBS], NULL, f, 0, 0, false);
        expect++;
    }
    for (unsigned k = 0; k < NSUBS; k++)
        sub(t, &s[k], NULL, "popular", 0, 0, false);
    expect += NSUBS;
    assert_int_equal(topic_tree_count(t), expect);
    if (HEAP_EXACT)
        assert_true(heap_in_use() > base);

    /* remove in a different order than added */
    for (unsigned k = 0; k < NSUBS; k += 2)
        assert_true(topic_tree_unsubscribe(t, &s[k], NOGROUP, B("popular")));
    match(t, "popular", &v);
    assert_int_equal(v.len, NSUBS / 2);
    for (unsigned k = 1; k < NSUBS; k += 2)
        assert_true(topic_tree_unsubscribe(t, &s[k], NOGROUP, B("popular")));
    for (unsigned i = 0; i < 100; i += 3) {
        snprintf(f, sizeof f, "wide/%u", i);
        assert_true(topic_tree_unsubscribe(t, &s[i % NSUBS], NOGROUP, B(f)));
    }
    for (unsigned i = 0; i < 100; i++) {
        snprintf(f, sizeof f, "wide/%u", i);
        match(t, f, &v);
        assert_int_equal(v.len, i % 3 ? 1 : 0);
        if (i % 3)
            assert_true(topic_tree_unsubscribe(t, &s[i % NSUBS], NOGROUP, B(f)));
    }
    for (unsigned i = NFILTERS; i-- > 0;) {
        make_filter(f, sizeof f, i);
        for (unsigned k = 0; k < NSUBS; k += 1 + i % 7) {
            const char *group = (k % 3 == 0) ? "grp" : NULL;
            /* duplicates (same filter generated twice) go on the first pass */
            topic_tree_unsubscribe(t, &s[k], group ? B(group) : NOGROUP, B(f));
            assert_false(topic_tree_unsubscribe(t, &s[k],
                                                group ? B(group) : NOGROUP, B(f)));
        }
    }
    assert_int_equal(topic_tree_count(t), 0);
    match(t, "a/b", &v);
    assert_int_equal(v.len, 0);
    topic_match_vec_free(&v);
    /* every node was pruned: the heap is back where it was */
    if (HEAP_EXACT)
        assert_int_equal(heap_in_use(), base);

    topic_tree_free(t);
    assert_int_equal(atomic_load(&total_refs), 0);
}

static void test_match_allocation_free(void **state)
{
    (void)state;
    topic_tree *t = topic_tree_new(&ops);
    fake_sub s[20];
    memset(s, 0, sizeof s);
    char f[64];
    for (unsigned i = 0; i < 20; i++) {
        snprintf(f, sizeof f, "dev/%u/+", i);
        sub(t, &s[i], NULL, f, 0, 0, false);
        sub(t, &s[i], NULL, "dev/#", 0, 0, false);
        sub(t, &s[i], "g", "dev/+/cmd", 0, 0, false);
        sub(t, &s[i], NULL, "+/+/cmd", 0, 0, false);
    }
    topic_match_vec v = {0};
    match(t, "dev/3/cmd", &v); /* grows the vector */
    assert_int_equal(v.len, 1 + 20 + 1 + 20);
    size_t base = heap_in_use();
    for (int k = 0; k < 1000; k++) {
        snprintf(f, sizeof f, "dev/%d/cmd", k % 25);
        match(t, f, &v);
    }
    assert_int_equal(heap_in_use(), base);
    topic_match_vec_free(&v);
    topic_tree_free(t);
}

/* ---- randomized cross-check against the naive matcher --------------------- */

static uint32_t rng_next(uint32_t *st)
{
    *st ^= *st << 13;
    *st ^= *st >> 17;
    *st ^= *st << 5;
    return *st;
}

static const char *const rnd_levels[] = {"a", "b", "c", "d", "e", "f", "g", "h",
                                         "i", "j", "k", "", "$s", "+"};

static void rnd_name(uint32_t *st, char *buf, size_t cap, bool filter)
{
    unsigned nlv = sizeof rnd_levels / sizeof rnd_levels[0] - (filter ? 0 : 1);
    unsigned depth = 1 + rng_next(st) % 4;
    size_t n = 0;
    for (unsigned d = 0; d < depth; d++) {
        if (filter && d == depth - 1 && rng_next(st) % 5 == 0) {
            snprintf(buf + n, cap - n, "%s#", d ? "/" : "");
            return;
        }
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", d ? "/" : "",
                              rnd_levels[rng_next(st) % nlv]);
    }
}

typedef struct model_sub {
    char filter[64];
    int sub;
    uint32_t id;
    bool live;
} model_sub;

static int cmp_pair(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    return *x < *y ? -1 : *x > *y;
}

static void test_random_cross_check(void **state)
{
    (void)state;
    enum { NS = 24, MAXM = 600, ROUNDS = 4000 };
    fake_sub subs[NS];
    memset(subs, 0, sizeof subs);
    for (int i = 0; i < NS; i++)
        subs[i].id = i;
    static model_sub model[MAXM];
    memset(model, 0, sizeof model);
    size_t nmodel = 0, live = 0;
    uint32_t st = 0x12345678;
    topic_tree *t = topic_tree_new(&ops);
    topic_match_vec v = {0};
    uint64_t got[4 * MAXM], want[4 * MAXM];

    for (int r = 0; r < ROUNDS; r++) {
        uint32_t op = rng_next(&st) % 10;
        if (op < 4 && nmodel < MAXM) { /* subscribe (or replace) */
            char f[64];
            rnd_name(&st, f, sizeof f, true);
            int s = (int)(rng_next(&st) % NS);
            uint32_t id = rng_next(&st) % 1000;
            model_sub *hit = NULL;
            for (size_t i = 0; i < nmodel; i++)
                if (model[i].live && model[i].sub == s && !strcmp(model[i].filter, f))
                    hit = &model[i];
            bool existed;
            assert_true(topic_tree_subscribe(t, &subs[s], NOGROUP, B(f), 0, id,
                                             &existed));
            assert_int_equal(existed, hit != NULL);
            if (hit) {
                hit->id = id;
            } else {
                model_sub *m = &model[nmodel++];
                snprintf(m->filter, sizeof m->filter, "%s", f);
                m->sub = s;
                m->id = id;
                m->live = true;
                live++;
            }
        } else if (op < 6 && live) { /* unsubscribe a live one */
            size_t i;
            do
                i = rng_next(&st) % nmodel;
            while (!model[i].live);
            assert_true(topic_tree_unsubscribe(t, &subs[model[i].sub], NOGROUP,
                                               B(model[i].filter)));
            model[i].live = false;
            live--;
        } else { /* match */
            char topic[64];
            rnd_name(&st, topic, sizeof topic, false);
            match(t, topic, &v);
            size_t nw = 0;
            for (size_t i = 0; i < nmodel; i++)
                if (model[i].live && naive_match(model[i].filter, topic))
                    want[nw++] = (uint64_t)model[i].sub << 32 | model[i].id;
            assert_int_equal(v.len, nw);
            for (size_t i = 0; i < v.len; i++)
                got[i] = (uint64_t)((fake_sub *)v.items[i].subscriber)->id << 32 |
                         v.items[i].sub_id;
            qsort(got, nw, sizeof got[0], cmp_pair);
            qsort(want, nw, sizeof want[0], cmp_pair);
            assert_memory_equal(got, want, nw * sizeof got[0]);
        }
        assert_int_equal(topic_tree_count(t), live);
    }
    topic_match_vec_free(&v);
    topic_tree_free(t);
    assert_int_equal(atomic_load(&total_refs), 0);
}

/* ---- concurrency ---------------------------------------------------------- */

enum { CW_ITERS = 20000, CR_ITERS = 20000, CW_SUBS = 16 };

typedef struct conc_ctx {
    topic_tree *t;
    fake_sub subs[2][CW_SUBS];
    atomic_long matched;
} conc_ctx;

typedef struct conc_arg {
    conc_ctx *c;
    int idx;
} conc_arg;

static const char *const conc_filters[] = {"s/+/t", "s/#", "s/1/t", "+/1/#",
                                           "s/2/t", "#", "s/+/+", "x/y"};
#define N_CONC_FILTERS (sizeof conc_filters / sizeof conc_filters[0])

static void *writer(void *p)
{
    conc_arg *a = p;
    uint32_t st = 0x9e3779b9u + (uint32_t)a->idx;
    bool on[CW_SUBS][N_CONC_FILTERS];
    memset(on, 0, sizeof on);
    for (int i = 0; i < CW_ITERS; i++) {
        unsigned s = rng_next(&st) % CW_SUBS;
        unsigned f = rng_next(&st) % N_CONC_FILTERS;
        fake_sub *sp = &a->c->subs[a->idx][s];
        mqtt_bytes g = (s & 1) ? B("grp") : NOGROUP;
        if (on[s][f]) {
            if (!topic_tree_unsubscribe(a->c->t, sp, g, B(conc_filters[f])))
                return (void *)1;
        } else {
            bool ex;
            if (!topic_tree_subscribe(a->c->t, sp, g, B(conc_filters[f]), 0, f, &ex) ||
                ex)
                return (void *)1;
        }
        on[s][f] = !on[s][f];
    }
    for (unsigned s = 0; s < CW_SUBS; s++)
        for (unsigned f = 0; f < N_CONC_FILTERS; f++)
            if (on[s][f]) {
                mqtt_bytes g = (s & 1) ? B("grp") : NOGROUP;
                if (!topic_tree_unsubscribe(a->c->t, &a->c->subs[a->idx][s], g,
                                            B(conc_filters[f])))
                    return (void *)1;
            }
    return NULL;
}

static void *reader(void *p)
{
    conc_arg *a = p;
    static const char *const topics[] = {"s/1/t", "s/2/t", "s/3/u", "x/y",
                                         "q/1/z", "$SYS/1"};
    topic_match_vec v = {0};
    for (int i = 0; i < CR_ITERS; i++) {
        v.len = 0;
        if (!topic_tree_match(a->c->t, B(topics[(i + a->idx) % 6]), &v))
            return (void *)1;
        for (size_t k = 0; k < v.len; k++) {
            fake_sub *s = v.items[k].subscriber;
            atomic_fetch_sub(&s->refs, 1);
            atomic_fetch_sub(&total_refs, 1);
        }
        atomic_fetch_add(&a->c->matched, (long)v.len);
    }
    topic_match_vec_free(&v);
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    static conc_ctx c;
    memset(&c, 0, sizeof c);
    c.t = topic_tree_new(&ops);
    pthread_t th[4];
    conc_arg args[4] = {{&c, 0}, {&c, 1}, {&c, 0}, {&c, 1}};
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, writer, &args[i]), 0);
    for (int i = 2; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, reader, &args[i]), 0);
    for (int i = 0; i < 4; i++) {
        void *rv;
        assert_int_equal(pthread_join(th[i], &rv), 0);
        assert_null(rv);
    }
    assert_int_equal(topic_tree_count(c.t), 0);
    assert_int_equal(atomic_load(&total_refs), 0);
    for (int w = 0; w < 2; w++)
        for (int s = 0; s < CW_SUBS; s++)
            assert_int_equal(atomic_load(&c.subs[w][s].refs), 0);
    topic_tree_free(c.t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_subscribe_replace_unsubscribe),
        cmocka_unit_test(test_match_table),
        cmocka_unit_test(test_overlapping),
        cmocka_unit_test(test_shared_round_robin),
        cmocka_unit_test(test_prune_and_count),
        cmocka_unit_test(test_match_allocation_free),
        cmocka_unit_test(test_random_cross_check),
        cmocka_unit_test(test_concurrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

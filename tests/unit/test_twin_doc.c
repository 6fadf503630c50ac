/*
 * test_twin_doc.c — the twin document model (hub/twin_doc.h), table-driven:
 * JSON merge patches (null removal, nested objects, replacement of
 * non-objects), replace, every §7 limit (each refused with BAD_REQUEST and
 * the document left exactly as it was, boundaries accepted), the §7 size
 * rule, $version and etag bookkeeping (etags unique across a run and
 * across runs), $metadata stamps at every level, the device view without
 * $metadata, the stored form read back, structural sharing (a draft
 * shares its source's trees and never changes them) and the kept texts
 * (byte for byte what jansson's compact dump writes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/twin_doc.h"
#include "util/time.h"

#define T0 1600987195320LL /* 2020-09-24T22:39:55.320Z */

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!j)
        fail_msg("bad test JSON %s: %s", text, err.text);
    return j;
}

static void assert_json_text(const json_t *got, const char *want_text)
{
    json_t *want = parse(want_text);
    if (!json_equal((json_t *)got, want)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        fail_msg("got %s, want %s", g, want_text);
    }
    json_decref(want);
}

/* A twin whose section holds `start` (applied as a replace at T0). */
static twin_doc *doc_with(twin_section section, const char *start)
{
    twin_doc *d = twin_doc_new_empty(T0, "etag0");
    assert_non_null(d);
    json_t *j = parse(start);
    char why[TWIN_WHY_MAX];
    assert_int_equal(twin_doc_apply(d, section, j, true, T0, why, sizeof why), HUB_OK);
    json_decref(j);
    return d;
}

static const json_t *section_of(const twin_doc *d, twin_section s)
{
    return s == TWIN_TAGS ? d->tags : s == TWIN_DESIRED ? d->desired : d->reported;
}

/* ---- merge patch ------------------------------------------------------------ */

static void test_merge_patch_cases(void **state)
{
    (void)state;
    static const struct {
        const char *start, *patch, *want;
    } cases[] = {
        {"{}", "{\"a\":1}", "{\"a\":1}"},
        {"{\"a\":1,\"b\":2}", "{\"a\":null}", "{\"b\":2}"},
        {"{\"a\":1}", "{\"missing\":null}", "{\"a\":1}"},
        {"{\"a\":{\"x\":1,\"y\":2}}", "{\"a\":{\"y\":null,\"z\":3}}", "{\"a\":{\"x\":1,\"z\":3}}"},
        {"{\"a\":1}", "{\"a\":{\"b\":{\"c\":null,\"d\":1}}}", "{\"a\":{\"b\":{\"d\":1}}}"},
        {"{\"a\":{\"x\":1}}", "{\"a\":5}", "{\"a\":5}"},
        {"{\"a\":{\"x\":{\"y\":{\"z\":1}}}}", "{\"a\":{\"x\":{\"y\":{\"w\":true}}}}",
         "{\"a\":{\"x\":{\"y\":{\"z\":1,\"w\":true}}}}"},
        {"{\"a\":[1,2]}", "{\"a\":[3]}", "{\"a\":[3]}"},
        {"{\"a\":\"s\"}", "{\"a\":\"t\",\"b\":1.5}", "{\"a\":\"t\",\"b\":1.5}"},
        {"{\"a\":1}", "{}", "{\"a\":1}"},
        {"{\"a\":{\"b\":1}}", "{\"a\":null}", "{}"},
    };
    static const twin_section sections[] = {TWIN_TAGS, TWIN_DESIRED, TWIN_REPORTED};
    for (size_t s = 0; s < 3; s++) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            twin_doc *d = doc_with(sections[s], cases[i].start);
            json_t *patch = parse(cases[i].patch);
            char why[TWIN_WHY_MAX] = "";
            assert_int_equal(twin_doc_apply(d, sections[s], patch, false, T0 + 1, why, sizeof why),
                             HUB_OK);
            assert_json_text(section_of(d, sections[s]), cases[i].want);
            json_decref(patch);
            twin_doc_unref(d);
        }
    }
}

static void test_replace_drops_nulls_and_old_keys(void **state)
{
    (void)state;
    twin_doc *d = doc_with(TWIN_DESIRED, "{\"a\":1,\"b\":{\"c\":2}}");
    json_t *patch = parse("{\"x\":null,\"y\":{\"z\":null,\"w\":1}}");
    char why[TWIN_WHY_MAX];
    assert_int_equal(twin_doc_apply(d, TWIN_DESIRED, patch, true, T0, why, sizeof why), HUB_OK);
    assert_json_text(d->desired, "{\"y\":{\"w\":1}}");
    json_t *meta_keys = json_object_get(d->desired_meta, "a");
    assert_null(meta_keys); /* old metadata gone with the old keys */
    assert_non_null(json_object_get(json_object_get(d->desired_meta, "y"), "w"));
    json_decref(patch);
    twin_doc_unref(d);
}

/* ---- limits -------------------------------------------------------------------- */

/* "{"k":"xxx..."}" with a string value of n bytes, malloc'd. */
static char *string_patch(const char *key, size_t n)
{
    char *text = malloc(n + strlen(key) + 16);
    int used = sprintf(text, "{\"%s\":\"", key);
    memset(text + used, 'x', n);
    strcpy(text + used + n, "\"}");
    return text;
}

/* A patch with a key of n bytes. */
static char *key_patch(size_t n)
{
    char *key = malloc(n + 1);
    memset(key, 'k', n);
    key[n] = '\0';
    char *text = malloc(n + 16);
    sprintf(text, "{\"%s\":1}", key);
    free(key);
    return text;
}

/* `levels` nested objects: {"l1":{"l2":...{"lN":{"p":"v"}}}}. */
static char *depth_patch(int levels)
{
    char *text = malloc((size_t)levels * 12 + 32);
    size_t n = 0;
    n += (size_t)sprintf(text + n, "{");
    for (int i = 1; i <= levels; i++)
        n += (size_t)sprintf(text + n, "\"l%d\":{", i);
    n += (size_t)sprintf(text + n, "\"p\":\"v\"");
    for (int i = 0; i <= levels; i++)
        n += (size_t)sprintf(text + n, "}");
    return text;
}

/* `count` keys k0.. each holding a string of `each` bytes. */
static char *bulk_patch(int count, size_t each)
{
    char *text = malloc((size_t)count * (each + 16) + 8);
    size_t n = (size_t)sprintf(text, "{");
    for (int i = 0; i < count; i++) {
        n += (size_t)sprintf(text + n, "%s\"k%d\":\"", i ? "," : "", i);
        memset(text + n, 'v', each);
        n += each;
        n += (size_t)sprintf(text + n, "\"");
    }
    sprintf(text + n, "}");
    return text;
}

typedef struct limit_case {
    const char *name;
    twin_section section;
    char *patch; /* malloc'd */
    hub_status want;
} limit_case;

static char *dup_text(const char *s)
{
    return strdup(s);
}

static void run_limit_case(const limit_case *c)
{
    twin_doc *d = doc_with(c->section, "{\"keep\":{\"me\":1}}");
    json_t *before = twin_doc_service_json(d, "dev", NULL, NULL);
    int64_t versions[3] = {d->version, d->desired_version, d->reported_version};
    json_t *patch = parse(c->patch);
    char why[TWIN_WHY_MAX] = "";
    hub_status st = twin_doc_apply(d, c->section, patch, false, T0 + 5, why, sizeof why);
    if (st != c->want)
        fail_msg("%s: got %#x want %#x (%s)", c->name, st, c->want, why);
    if (st != HUB_OK) {
        assert_true(why[0] != '\0');
        json_t *after = twin_doc_service_json(d, "dev", NULL, NULL);
        if (!json_equal(before, after))
            fail_msg("%s: the document changed on a refused patch", c->name);
        json_decref(after);
        assert_int_equal(d->version, versions[0]);
        assert_int_equal(d->desired_version, versions[1]);
        assert_int_equal(d->reported_version, versions[2]);
    }
    json_decref(before);
    json_decref(patch);
    twin_doc_unref(d);
}

static void test_limits(void **state)
{
    (void)state;
    limit_case cases[] = {
        {"key 1024 bytes", TWIN_DESIRED, key_patch(1024), HUB_OK},
        {"key 1025 bytes", TWIN_DESIRED, key_patch(1025), HUB_BAD_REQUEST},
        {"key with .", TWIN_DESIRED, dup_text("{\"a.b\":1}"), HUB_BAD_REQUEST},
        {"key with $", TWIN_REPORTED, dup_text("{\"$a\":1}"), HUB_BAD_REQUEST},
        {"key with space", TWIN_TAGS, dup_text("{\"a b\":1}"), HUB_BAD_REQUEST},
        {"key with control", TWIN_DESIRED, dup_text("{\"a\\u0001b\":1}"), HUB_BAD_REQUEST},
        {"key with DEL", TWIN_DESIRED, dup_text("{\"a\\u007fb\":1}"), HUB_BAD_REQUEST},
        {"key with tab", TWIN_REPORTED, dup_text("{\"a\\tb\":1}"), HUB_BAD_REQUEST},
        {"empty key", TWIN_DESIRED, dup_text("{\"\":1}"), HUB_BAD_REQUEST},
        {"bad nested key", TWIN_DESIRED, dup_text("{\"a\":{\"b\":{\"c.d\":1}}}"), HUB_BAD_REQUEST},
        {"bad key in array", TWIN_REPORTED, dup_text("{\"a\":[{\"x y\":1}]}"), HUB_BAD_REQUEST},
        {"bad key under null", TWIN_DESIRED, dup_text("{\"a\":{\"$x\":null}}"), HUB_BAD_REQUEST},
        {"depth 10", TWIN_DESIRED, depth_patch(10), HUB_OK},
        {"depth 11", TWIN_DESIRED, depth_patch(11), HUB_BAD_REQUEST},
        {"depth 11 tags", TWIN_TAGS, depth_patch(11), HUB_BAD_REQUEST},
        {"depth 11 reported", TWIN_REPORTED, depth_patch(11), HUB_BAD_REQUEST},
        {"string 4096", TWIN_DESIRED, string_patch("s", 4096), HUB_OK},
        {"string 4097", TWIN_DESIRED, string_patch("s", 4097), HUB_BAD_REQUEST},
        {"string 4097 reported", TWIN_REPORTED, string_patch("s", 4097), HUB_BAD_REQUEST},
        {"int max", TWIN_DESIRED, dup_text("{\"n\":4503599627370495}"), HUB_OK},
        {"int min", TWIN_DESIRED, dup_text("{\"n\":-4503599627370495}"), HUB_OK},
        {"int too big", TWIN_DESIRED, dup_text("{\"n\":4503599627370496}"), HUB_BAD_REQUEST},
        {"int too small", TWIN_REPORTED, dup_text("{\"n\":-4503599627370496}"),
         HUB_BAD_REQUEST},
        {"int in array", TWIN_TAGS, dup_text("{\"n\":[1,9007199254740993]}"), HUB_BAD_REQUEST},
        {"desired 32 KB", TWIN_DESIRED, bulk_patch(8, 4000), HUB_OK},
        {"desired > 32 KB", TWIN_DESIRED, bulk_patch(9, 4000), HUB_BAD_REQUEST},
        {"reported > 32 KB", TWIN_REPORTED, bulk_patch(9, 4000), HUB_BAD_REQUEST},
        {"tags 8 KB", TWIN_TAGS, bulk_patch(2, 4000), HUB_OK},
        {"tags > 8 KB", TWIN_TAGS, bulk_patch(3, 3000), HUB_BAD_REQUEST},
        {"not an object", TWIN_DESIRED, dup_text("[1]"), HUB_BAD_REQUEST},
        {"a string", TWIN_REPORTED, dup_text("\"x\""), HUB_BAD_REQUEST},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_limit_case(&cases[i]);
        free(cases[i].patch);
    }
}

static void test_size_counts_the_result(void **state)
{
    (void)state;
    json_t *v = parse("{\"ab\":\"xyz\",\"n\":1,\"b\":true,\"z\":null,\"o\":{\"k\":[1,\"s\"]},"
                      "\"r\":2.5}");
    /* 2+3 + 1+8 + 1+4 + 1+4 + 1+(1+8+1) + 1+8 */
    assert_int_equal(twin_doc_size(v), 44);
    json_decref(v);
    /* 30 KB already there: a 4 KB patch is too much, removing first is fine */
    twin_doc *d = twin_doc_new_empty(T0, NULL);
    char *big = bulk_patch(7, 4000);
    json_t *p = parse(big);
    char why[TWIN_WHY_MAX];
    assert_int_equal(twin_doc_apply(d, TWIN_DESIRED, p, false, T0, why, sizeof why), HUB_OK);
    json_decref(p);
    free(big);
    char *more = string_patch("extra", 4000);
    p = parse(more);
    assert_int_equal(twin_doc_apply(d, TWIN_DESIRED, p, false, T0, why, sizeof why),
                     HUB_OK); /* 7 * 4002 + 4005 = 32019 */
    json_decref(p);
    char *again = string_patch("another", 1000);
    p = parse(again);
    assert_int_equal(twin_doc_apply(d, TWIN_DESIRED, p, false, T0, why, sizeof why),
                     HUB_BAD_REQUEST);
    assert_non_null(strstr(why, "desired"));
    json_decref(p);
    p = parse("{\"k0\":null,\"another\":\"yes\"}");
    assert_int_equal(twin_doc_apply(d, TWIN_DESIRED, p, false, T0, why, sizeof why), HUB_OK);
    json_decref(p);
    free(more);
    free(again);
    twin_doc_unref(d);
}

/* ---- versions and metadata ---------------------------------------------------- */

static void test_versions_and_etag(void **state)
{
    (void)state;
    twin_doc *d = twin_doc_new_empty(T0, NULL);
    assert_int_equal(d->version, 1);
    assert_int_equal(d->desired_version, 1);
    assert_int_equal(d->reported_version, 1);
    assert_int_equal(strlen(d->etag), 12);
    char first_etag[HUB_ETAG_MAX + 1];
    strcpy(first_etag, d->etag);
    json_t *p = parse("{\"a\":1}");
    char why[TWIN_WHY_MAX];
    assert_int_equal(twin_doc_apply(d, TWIN_DESIRED, p, false, T0, why, sizeof why), HUB_OK);
    assert_int_equal(d->desired_version, 2);
    assert_int_equal(d->reported_version, 1);
    assert_int_equal(d->version, 1); /* only twin_doc_bump moves it */
    assert_int_equal(twin_doc_apply(d, TWIN_REPORTED, p, false, T0, why, sizeof why), HUB_OK);
    assert_int_equal(twin_doc_apply(d, TWIN_REPORTED, p, false, T0, why, sizeof why), HUB_OK);
    assert_int_equal(d->reported_version, 3);
    assert_int_equal(twin_doc_apply(d, TWIN_TAGS, p, false, T0, why, sizeof why), HUB_OK);
    assert_int_equal(d->desired_version, 2);
    assert_int_equal(d->reported_version, 3);
    twin_etags g;
    assert_true(twin_etags_init(&g));
    twin_doc_bump(d, &g);
    assert_int_equal(d->version, 2);
    assert_int_equal(strlen(d->etag), 12);
    assert_string_not_equal(d->etag, first_etag);
    json_decref(p);

    twin_doc *named = twin_doc_new_empty(T0, "gen-etag");
    assert_string_equal(named->etag, "gen-etag");
    twin_doc_unref(named);
    twin_doc_unref(d);
}

static void apply_text(twin_doc *d, twin_section s, const char *text, int64_t now);

/* Every etag of a run differs from every other (a counter through a
 * bijection), and two runs (two random keys) do not repeat each other. */
static void test_etags_unique(void **state)
{
    (void)state;
    enum { N = 20000 };
    static char seen[2 * N][HUB_ETAG_MAX + 1];
    twin_etags a, b;
    assert_true(twin_etags_init(&a));
    assert_true(twin_etags_init(&b));
    for (int i = 0; i < N; i++) {
        twin_etags_next(&a, seen[i]);
        twin_etags_next(&b, seen[N + i]);
        assert_int_equal(strlen(seen[i]), 12);
    }
    qsort(seen, 2 * N, sizeof seen[0], (int (*)(const void *, const void *))strcmp);
    for (int i = 1; i < 2 * N; i++)
        assert_string_not_equal(seen[i - 1], seen[i]);
}

/* The kept texts are exactly the compact JSON of their trees. */
static void assert_texts_match(const twin_doc *d)
{
    const json_t *trees[] = {d->tags, d->desired, d->reported, d->desired_meta,
                             d->reported_meta};
    const twin_text *texts[] = {d->tags_text, d->desired_text, d->reported_text,
                                d->desired_meta_text, d->reported_meta_text};
    for (size_t i = 0; i < sizeof trees / sizeof trees[0]; i++) {
        char *want = json_dumps(trees[i], JSON_COMPACT);
        assert_string_equal(twin_text_str(texts[i]), want);
        free(want);
    }
}

/* The renderer writes exactly what jansson's compact dump writes. */
static void test_text_matches_jansson(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "{}", "[]", "{\"a\":[]}", "\"\"", "0", "-4503599627370495", "9223372036854775807",
        "-9223372036854775808", "true", "false", "null", "0.1", "3.0", "-2.5e-7", "1e20",
        "1.5e300", "-0.0", "123456789.125",
        "{\"q\":\"\\\" \\\\ \\/ \\b\\f\\n\\r\\t \\u0001\\u001f \\u0000 x\"}",
        "{\"\\u00e9t\\u00e9\":\"\\u2028 \\ud83d\\ude00\",\"z\":{\"y\":[1,{\"x\":null}]}}",
        "{\"b\":1,\"a\":2,\"c\":{\"e\":[true,false,0.5],\"d\":\"\"}}",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *v = parse(cases[i]);
        char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        twin_text *t = twin_text_render(v);
        assert_non_null(t);
        assert_int_equal(t->len, strlen(want));
        if (memcmp(t->s, want, t->len) != 0)
            fail_msg("case %zu: got %s, want %s", i, t->s, want);
        twin_text_unref(t);
        free(want);
        json_decref(v);
    }
}

/* A draft shares its source's trees; changing the draft never changes the
 * source (its trees, its texts, nested objects the patch merged into). */
static void test_copy_shares_and_isolates(void **state)
{
    (void)state;
    twin_doc *d = twin_doc_new_empty(T0, "e0");
    apply_text(d, TWIN_REPORTED, "{\"a\":{\"b\":1,\"c\":[1,null]},\"z\":\"keep\"}", T0);
    apply_text(d, TWIN_DESIRED, "{\"d\":{\"e\":{\"f\":true}}}", T0);
    assert_texts_match(d);
    json_t *orig = twin_doc_service_json(d, "dev", NULL, NULL);
    char *before = json_dumps(orig, JSON_COMPACT);
    json_decref(orig);

    twin_doc *copy = twin_doc_copy(d);
    assert_int_equal(copy->refs, 1);
    assert_ptr_equal(copy->desired, d->desired); /* shared until changed */
    apply_text(copy, TWIN_REPORTED, "{\"a\":{\"b\":2,\"n\":{\"x\":null,\"y\":1}},\"z\":null}",
               T0 + 1000);
    apply_text(copy, TWIN_DESIRED, "{\"d\":{\"e\":{\"g\":1}}}", T0 + 1000);
    assert_texts_match(copy);
    assert_texts_match(d);
    json_t *got = twin_doc_service_json(d, "dev", NULL, NULL);
    char *after = json_dumps(got, JSON_COMPACT);
    assert_string_equal(after, before);
    assert_json_text(copy->reported, "{\"a\":{\"b\":2,\"c\":[1,null],\"n\":{\"y\":1}}}");
    assert_json_text(copy->desired, "{\"d\":{\"e\":{\"f\":true,\"g\":1}}}");
    assert_json_text(d->desired, "{\"d\":{\"e\":{\"f\":true}}}");
    json_decref(got);
    free(before);
    free(after);
    twin_doc_unref(copy);
    twin_doc_unref(d);
}

static const char *updated_at(const json_t *meta, const char *path1, const char *path2)
{
    const json_t *node = meta;
    if (path1)
        node = json_object_get(node, path1);
    if (path2)
        node = json_object_get(node, path2);
    return json_string_value(json_object_get(node, "$lastUpdated"));
}

static json_int_t updated_version(const json_t *meta, const char *path1, const char *path2)
{
    const json_t *node = meta;
    if (path1)
        node = json_object_get(node, path1);
    if (path2)
        node = json_object_get(node, path2);
    const json_t *v = json_object_get(node, "$lastUpdatedVersion");
    return v ? json_integer_value(v) : -1;
}

static void apply_text(twin_doc *d, twin_section s, const char *text, int64_t now)
{
    json_t *p = parse(text);
    char why[TWIN_WHY_MAX];
    assert_int_equal(twin_doc_apply(d, s, p, false, now, why, sizeof why), HUB_OK);
    json_decref(p);
}

static void test_metadata_stamps(void **state)
{
    (void)state;
    char t0[32], t1[32], t2[32], t3[32];
    time_iso8601_ms(T0, t0);
    assert_string_equal(t0, "2020-09-24T22:39:55.320Z");
    time_iso8601_ms(0, t1);
    assert_string_equal(t1, "0001-01-01T00:00:00Z");
    time_iso8601_ms(T0 + 1000, t1);
    time_iso8601_ms(T0 + 2000, t2);
    time_iso8601_ms(T0 + 3007, t3);
    assert_string_equal(t3, "2020-09-24T22:39:58.327Z");

    twin_doc *d = twin_doc_new_empty(T0, NULL);
    assert_string_equal(updated_at(d->desired_meta, NULL, NULL), t0);
    assert_int_equal(updated_version(d->desired_meta, NULL, NULL), 1);
    assert_int_equal(updated_version(d->reported_meta, NULL, NULL), -1);

    apply_text(d, TWIN_DESIRED, "{\"a\":{\"b\":1}}", T0 + 1000);
    assert_string_equal(updated_at(d->desired_meta, NULL, NULL), t1);
    assert_string_equal(updated_at(d->desired_meta, "a", NULL), t1);
    assert_string_equal(updated_at(d->desired_meta, "a", "b"), t1);
    assert_int_equal(updated_version(d->desired_meta, "a", "b"), 2);

    apply_text(d, TWIN_DESIRED, "{\"c\":1}", T0 + 2000);
    assert_string_equal(updated_at(d->desired_meta, NULL, NULL), t2);
    assert_int_equal(updated_version(d->desired_meta, NULL, NULL), 3);
    assert_string_equal(updated_at(d->desired_meta, "a", NULL), t1); /* untouched */
    assert_int_equal(updated_version(d->desired_meta, "a", NULL), 2);
    assert_string_equal(updated_at(d->desired_meta, "c", NULL), t2);

    apply_text(d, TWIN_DESIRED, "{\"a\":{\"d\":2},\"c\":null}", T0 + 3007);
    assert_string_equal(updated_at(d->desired_meta, "a", NULL), t3); /* merged into */
    assert_string_equal(updated_at(d->desired_meta, "a", "b"), t1);  /* not touched */
    assert_string_equal(updated_at(d->desired_meta, "a", "d"), t3);
    assert_int_equal(updated_version(d->desired_meta, "a", "d"), 4);
    assert_null(json_object_get(d->desired_meta, "c")); /* removed with its key */

    apply_text(d, TWIN_REPORTED, "{\"r\":{\"s\":true}}", T0 + 2000);
    assert_string_equal(updated_at(d->reported_meta, "r", "s"), t2);
    assert_int_equal(updated_version(d->reported_meta, "r", "s"), -1);
    assert_string_equal(updated_at(d->desired_meta, NULL, NULL), t3);
    twin_doc_unref(d);
}

/* ---- views -------------------------------------------------------------------- */

static bool has_metadata(const json_t *v)
{
    const char *key;
    json_t *member;
    if (!json_is_object(v))
        return false;
    json_object_foreach((json_t *)v, key, member)
        if (strcmp(key, "$metadata") == 0 || has_metadata(member))
            return true;
    return false;
}

static void test_views(void **state)
{
    (void)state;
    twin_doc *d = twin_doc_new_empty(T0, "e1");
    apply_text(d, TWIN_DESIRED, "{\"a\":{\"b\":1}}", T0);
    apply_text(d, TWIN_REPORTED, "{\"fw\":\"1.0\"}", T0);
    apply_text(d, TWIN_TAGS, "{\"site\":\"x\"}", T0);
    json_t *dev = twin_doc_device_json(d);
    assert_json_text(dev, "{\"desired\":{\"a\":{\"b\":1},\"$version\":2},"
                          "\"reported\":{\"fw\":\"1.0\",\"$version\":2}}");
    assert_false(has_metadata(dev));
    json_decref(dev);

    json_t *extra = parse("{\"status\":\"enabled\"}");
    json_t *svc = twin_doc_service_json(d, "dev", "mod", extra);
    assert_true(has_metadata(svc));
    assert_string_equal(json_string_value(json_object_get(svc, "deviceId")), "dev");
    assert_string_equal(json_string_value(json_object_get(svc, "moduleId")), "mod");
    assert_string_equal(json_string_value(json_object_get(svc, "etag")), "e1");
    assert_string_equal(json_string_value(json_object_get(svc, "status")), "enabled");
    assert_int_equal(json_integer_value(json_object_get(svc, "version")), 1);
    assert_json_text(json_object_get(svc, "tags"), "{\"site\":\"x\"}");
    json_t *desired = json_object_get(json_object_get(svc, "properties"), "desired");
    assert_int_equal(json_integer_value(json_object_get(desired, "$version")), 2);
    assert_non_null(json_object_get(json_object_get(desired, "$metadata"), "a"));
    json_t *no_module = twin_doc_service_json(d, "dev", "", NULL);
    assert_null(json_object_get(no_module, "moduleId"));
    json_decref(no_module);

    /* the stored form reads back to the same document */
    char why[TWIN_WHY_MAX];
    twin_doc *back = twin_doc_from_json(svc, why, sizeof why);
    assert_non_null(back);
    json_t *svc2 = twin_doc_service_json(back, "dev", "mod", extra);
    assert_true(json_equal(svc, svc2));
    assert_int_equal(back->desired_version, 2);
    assert_int_equal(back->reported_version, 2);
    json_decref(svc2);
    twin_doc_unref(back);

    json_t *bad = parse("{\"etag\":1}");
    assert_null(twin_doc_from_json(bad, why, sizeof why));
    json_decref(bad);
    json_decref(svc);
    json_decref(extra);
    twin_doc_unref(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_patch_cases),
        cmocka_unit_test(test_replace_drops_nulls_and_old_keys),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_size_counts_the_result),
        cmocka_unit_test(test_versions_and_etag),
        cmocka_unit_test(test_etags_unique),
        cmocka_unit_test(test_copy_shares_and_isolates),
        cmocka_unit_test(test_text_matches_jansson),
        cmocka_unit_test(test_metadata_stamps),
        cmocka_unit_test(test_views),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_registry.c — the identity registry over a real store: policies on
 * first start (and kept), put/get/delete with If-Match / If-None-Match,
 * modules needing their device, device deletion taking its modules,
 * validation, store failures rolled back, the change listener, lists and
 * statistics, persistence across reopen, and `done` running on the loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "net/server.h"
#include "store_testutil.h"
#include "util/log.h"

static char dir[64];
static store *st;
static hub_registry *reg;

static hub_registry *open_registry(void)
{
    char err[256];
    hub_registry *r = registry_open(st, err, sizeof err);
    if (!r)
        fail_msg("registry_open: %s", err);
    return r;
}

static int setup(void **state)
{
    (void)state;
    testutil_tmpdir(dir);
    st = testutil_open(dir, NULL);
    reg = open_registry();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    registry_free(reg);
    store_close(st);
    testutil_rmdir(dir);
    return 0;
}

static void reopen_all(void)
{
    registry_free(reg);
    store_close(st);
    st = testutil_open(dir, NULL);
    reg = open_registry();
}

/* ---- synchronous wrappers (loop == NULL, then a flush) ------------------ */

static struct {
    registry_status st;
    hub_identity id;
    char err[160];
    int calls;
} D;

static void done_cb(net_loop *loop, void *arg, registry_status s, const hub_identity *result,
                    const char *err)
{
    (void)loop;
    (void)arg;
    D.st = s;
    D.calls++;
    if (result)
        D.id = *result;
    snprintf(D.err, sizeof D.err, "%s", err ? err : "");
}

static registry_status put(const hub_identity *in, const char *if_match, bool inm)
{
    memset(&D, 0, sizeof D);
    registry_put(reg, in, if_match, inm, NULL, done_cb, NULL);
    store_flush(st);
    assert_int_equal(D.calls, 1);
    return D.st;
}

static registry_status del(const char *dev, const char *mod, const char *if_match)
{
    memset(&D, 0, sizeof D);
    registry_delete(reg, dev, mod, if_match, NULL, done_cb, NULL);
    store_flush(st);
    assert_int_equal(D.calls, 1);
    return D.st;
}

static hub_identity device(const char *id)
{
    hub_identity d;
    memset(&d, 0, sizeof d);
    snprintf(d.device_id, sizeof d.device_id, "%s", id);
    d.enabled = true;
    return d;
}

static hub_identity module(const char *dev, const char *mod)
{
    hub_identity m = device(dev);
    snprintf(m.module_id, sizeof m.module_id, "%s", mod);
    return m;
}

/* ---- policies ----------------------------------------------------------- */

static void test_policies_created_once(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        unsigned rights;
    } want[] = {
        {"iothubowner", 15}, {"service", 4}, {"device", 8}, {"registryRead", 1},
        {"registryReadWrite", 3},
    };
    hub_policy p[8], again[8];
    size_t n = registry_policies(reg, p, 8);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(p[i].name, want[i].name);
        assert_int_equal(p[i].rights, want[i].rights);
        assert_int_equal(strlen(p[i].primary_key), 44);
        assert_int_equal(strlen(p[i].secondary_key), 44);
        assert_string_not_equal(p[i].primary_key, p[i].secondary_key);
    }
    reopen_all();
    assert_int_equal(registry_policies(reg, again, 8), 5);
    assert_memory_equal(p, again, 5 * sizeof p[0]); /* same keys: not re-created */
    hub_policy one;
    assert_true(registry_policy_get(reg, "service", &one));
    assert_string_equal(one.primary_key, p[1].primary_key);
    assert_false(registry_policy_get(reg, "nope", &one));
    assert_int_equal(registry_policies(reg, p, 2), 2);
}

/* ---- put / get ---------------------------------------------------------- */

static void test_create_replace_get(void **state)
{
    (void)state;
    hub_identity d = device("dev1");
    assert_int_equal(put(&d, NULL, false), REG_CREATED);
    hub_identity created = D.id;
    assert_int_equal(strlen(created.primary_key), 44); /* generated */
    assert_int_equal(strlen(created.secondary_key), 44);
    assert_true(created.etag[0] && created.generation_id[0]);
    assert_true(created.status_updated_ms > 0);
    hub_identity got;
    assert_true(registry_get(reg, "dev1", NULL, &got));
    assert_memory_equal(&got, &created, sizeof got);
    assert_true(registry_get(reg, "dev1", "", &got));
    assert_false(registry_get(reg, "DEV1", NULL, &got)); /* case-sensitive */

    /* replace: etag renewed, generation kept, given keys kept */
    d.enabled = false;
    strcpy(d.status_reason, "stolen");
    strcpy(d.primary_key, created.primary_key);
    assert_int_equal(put(&d, NULL, false), REG_OK);
    assert_string_not_equal(D.id.etag, created.etag);
    assert_string_equal(D.id.generation_id, created.generation_id);
    assert_string_equal(D.id.primary_key, created.primary_key);
    assert_string_not_equal(D.id.secondary_key, created.secondary_key); /* was empty: new */
    assert_false(D.id.enabled);
    assert_string_equal(D.id.status_reason, "stolen");
}

static void test_conditions(void **state)
{
    (void)state;
    hub_identity d = device("c");
    /* "*" = must exist */
    assert_int_equal(put(&d, "*", false), REG_NOT_FOUND);
    assert_int_equal(put(&d, NULL, true), REG_CREATED);
    char etag[HUB_ETAG_MAX + 1], quoted[HUB_ETAG_MAX + 3];
    strcpy(etag, D.id.etag);
    snprintf(quoted, sizeof quoted, "\"%s\"", etag);
    static const struct {
        const char *if_match;
        bool inm;
        registry_status want;
    } cases[] = {
        {NULL, true, REG_EXISTS},
        {"wrong", false, REG_PRECONDITION_FAILED},
        {"\"wrong\"", false, REG_PRECONDITION_FAILED},
        {NULL, false, REG_OK}, /* unconditional: renews the etag */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(put(&d, cases[i].if_match, cases[i].inm), cases[i].want);
    assert_int_equal(put(&d, etag, false), REG_PRECONDITION_FAILED); /* stale now */
    hub_identity cur;
    assert_true(registry_get(reg, "c", NULL, &cur));
    strcpy(etag, cur.etag);
    snprintf(quoted, sizeof quoted, "\"%s\"", etag);
    assert_int_equal(put(&d, etag, false), REG_OK);
    strcpy(etag, D.id.etag);
    snprintf(quoted, sizeof quoted, "\"%s\"", etag);
    assert_int_equal(put(&d, quoted, false), REG_OK);
    assert_int_equal(put(&d, "*", false), REG_OK);
    strcpy(etag, D.id.etag); /* del() clears D */
    /* delete with If-Match */
    assert_int_equal(del("c", NULL, "stale"), REG_PRECONDITION_FAILED);
    assert_int_equal(del("c", NULL, etag), REG_OK);
    assert_int_equal(del("c", NULL, NULL), REG_NOT_FOUND);
}

static void test_modules(void **state)
{
    (void)state;
    hub_identity m = module("parent", "m1");
    assert_int_equal(put(&m, NULL, false), REG_NOT_FOUND); /* no device yet */
    hub_identity d = device("parent");
    assert_int_equal(put(&d, NULL, false), REG_CREATED);
    assert_int_equal(put(&m, NULL, false), REG_CREATED);
    hub_identity m2 = module("parent", "m2");
    assert_int_equal(put(&m2, NULL, false), REG_CREATED);
    hub_identity other = device("parent2");
    assert_int_equal(put(&other, NULL, false), REG_CREATED);
    size_t n;
    hub_identity *list = registry_list(reg, "parent", 0, &n);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].module_id, "m1");
    assert_string_equal(list[1].module_id, "m2");
    free(list);
    list = registry_list(reg, NULL, 0, &n); /* devices only */
    assert_int_equal(n, 2);
    free(list);

    /* deleting a module leaves the device; deleting the device takes all */
    assert_int_equal(del("parent", "m2", NULL), REG_OK);
    hub_identity got;
    assert_false(registry_get(reg, "parent", "m2", &got));
    assert_true(registry_get(reg, "parent", NULL, &got));
    assert_int_equal(del("parent", NULL, NULL), REG_OK);
    assert_false(registry_get(reg, "parent", "m1", &got));
    assert_false(registry_get(reg, "parent", NULL, &got));
    assert_true(registry_get(reg, "parent2", NULL, &got));
    reopen_all(); /* and so does the store */
    assert_false(registry_get(reg, "parent", "m1", &got));
    assert_true(registry_get(reg, "parent2", NULL, &got));
    list = registry_list(reg, "parent", 0, &n);
    assert_int_equal(n, 0);
    free(list);
}

/* ---- validation --------------------------------------------------------- */

static void test_validation(void **state)
{
    (void)state;
    char long_id[HUB_ID_MAX + 2];
    memset(long_id, 'a', HUB_ID_MAX + 1);
    long_id[HUB_ID_MAX + 1] = '\0';
    char max_id[HUB_ID_MAX + 1];
    memset(max_id, 'b', HUB_ID_MAX);
    max_id[HUB_ID_MAX] = '\0';
    static const char *const good_ids[] = {"a", "A-Z.0+9%_#*?!(),=@$'", "dev-1"};
    static const char *const bad_ids[] = {"", "a b", "a/b", "caf\xc3\xa9", "a\"b", "a:b",
                                          "a&b"};
    for (size_t i = 0; i < sizeof good_ids / sizeof good_ids[0]; i++)
        assert_true(registry_valid_id(good_ids[i]));
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++)
        assert_false(registry_valid_id(bad_ids[i]));
    assert_true(registry_valid_id(max_id));
    assert_false(registry_valid_id(long_id));

    static const char tp40[] = "0123456789abcdef0123456789ABCDEF01234567";
    static const char tp64[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    static const struct {
        const char *what;
        hub_auth_type auth;
        const char *pk, *sk, *pt, *stp, *module;
        registry_status want;
    } cases[] = {
        {"sas, keys generated", HUB_AUTH_SAS, "", "", "", "", "", REG_OK},
        {"sas, 16-byte key", HUB_AUTH_SAS, "AAAAAAAAAAAAAAAAAAAAAA==", "", "", "", "", REG_OK},
        {"sas, 8-byte key", HUB_AUTH_SAS, "AAAAAAAAAAA=", "", "", "", "", REG_INVALID},
        {"sas, not base64", HUB_AUTH_SAS, "not base64!", "", "", "", "", REG_INVALID},
        {"sas with thumbprint", HUB_AUTH_SAS, "", "", tp40, "", "", REG_INVALID},
        {"self-signed", HUB_AUTH_SELF_SIGNED, "", "", tp40, tp64, "", REG_OK},
        {"self-signed, primary only", HUB_AUTH_SELF_SIGNED, "", "", tp40, "", "", REG_OK},
        {"self-signed, secondary only", HUB_AUTH_SELF_SIGNED, "", "", "", tp40, "", REG_INVALID},
        {"self-signed, bad hex", HUB_AUTH_SELF_SIGNED, "", "",
         "G123456789abcdef0123456789ABCDEF01234567", tp40, "", REG_INVALID},
        {"self-signed, bad length", HUB_AUTH_SELF_SIGNED, "", "", "0123", tp40, "", REG_INVALID},
        {"self-signed with key", HUB_AUTH_SELF_SIGNED, "AAAAAAAAAAAAAAAAAAAAAA==", "", tp40, tp40,
         "", REG_INVALID},
        {"ca", HUB_AUTH_CA, "", "", "", "", "", REG_OK},
        {"ca with print", HUB_AUTH_CA, "", "", tp40, "", "", REG_INVALID},
        {"none", HUB_AUTH_NONE, "", "", "", "", "", REG_OK},
        {"bad module id", HUB_AUTH_SAS, "", "", "", "", "m/x", REG_INVALID},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hub_identity d = device("v");
        d.auth_type = cases[i].auth;
        strcpy(d.primary_key, cases[i].pk);
        strcpy(d.secondary_key, cases[i].sk);
        strcpy(d.primary_thumbprint, cases[i].pt);
        strcpy(d.secondary_thumbprint, cases[i].stp);
        strcpy(d.module_id, cases[i].module);
        char err[128] = "";
        registry_status got = registry_validate(&d, err, sizeof err);
        if (got != cases[i].want)
            fail_msg("%s: got %d want %d (%s)", cases[i].what, got, cases[i].want, err);
        if (got == REG_INVALID)
            assert_true(err[0] != '\0');
    }
    hub_identity bad = device("a b");
    assert_int_equal(put(&bad, NULL, false), REG_INVALID);
    assert_true(D.err[0] != '\0');
    hub_identity none = device("v");
    none.auth_type = HUB_AUTH_NONE;
    assert_int_equal(put(&none, NULL, false), REG_CREATED);
    assert_string_equal(D.id.primary_key, ""); /* keys generated for SAS only */
}

/* ---- store failures ----------------------------------------------------- */

static void test_store_failure_rolls_back(void **state)
{
    (void)state;
    hub_identity d = device("f");
    store_test_fail_commits(st, 1);
    assert_int_equal(put(&d, NULL, false), REG_STORE_ERROR);
    assert_true(D.err[0] != '\0');
    hub_identity got;
    assert_false(registry_get(reg, "f", NULL, &got)); /* creation undone */

    assert_int_equal(put(&d, NULL, false), REG_CREATED);
    hub_identity good = D.id;
    d.enabled = false;
    store_test_fail_commits(st, 1);
    assert_int_equal(put(&d, NULL, false), REG_STORE_ERROR);
    assert_true(registry_get(reg, "f", NULL, &got));
    assert_string_equal(got.etag, good.etag); /* update undone */
    assert_true(got.enabled);

    hub_identity m = module("f", "m");
    assert_int_equal(put(&m, NULL, false), REG_CREATED);
    store_test_fail_commits(st, 1);
    assert_int_equal(del("f", NULL, NULL), REG_STORE_ERROR);
    assert_true(registry_get(reg, "f", NULL, &got)); /* deletion undone, modules too */
    assert_true(registry_get(reg, "f", "m", &got));
    reopen_all();
    assert_true(registry_get(reg, "f", "m", &got));
    assert_string_equal(registry_get(reg, "f", NULL, &got) ? got.etag : "", good.etag);
}

/* Two writes of one identity fail together: readers see the last durable
 * state again, not the first write's never-committed one. Then a failed
 * write followed by a successful one leaves the successful one. */
static void test_failures_settle_to_durable(void **state)
{
    (void)state;
    hub_identity d = device("race");
    assert_int_equal(put(&d, NULL, false), REG_CREATED);
    hub_identity durable = D.id;
    registry_status res[2] = {REG_OK, REG_OK};
    store_test_hold(st, true);
    hub_identity a = d, b = d;
    a.enabled = false;
    strcpy(b.status_reason, "second");
    memset(&D, 0, sizeof D);
    registry_put(reg, &a, NULL, false, NULL, done_cb, NULL);
    hub_identity mid;
    assert_true(registry_get(reg, "race", NULL, &mid)); /* visible before durable */
    assert_false(mid.enabled);
    registry_put(reg, &b, NULL, false, NULL, done_cb, NULL);
    store_test_fail_commits(st, 1);
    store_test_hold(st, false);
    store_flush(st);
    assert_int_equal(D.calls, 2);
    res[0] = D.st;
    assert_int_equal(res[0], REG_STORE_ERROR);
    hub_identity got;
    assert_true(registry_get(reg, "race", NULL, &got));
    assert_memory_equal(&got, &durable, sizeof got);

    assert_int_equal(put(&a, NULL, false), REG_OK);
    res[1] = put(&b, NULL, false);
    assert_int_equal(res[1], REG_OK);
    assert_true(registry_get(reg, "race", NULL, &got));
    assert_string_equal(got.status_reason, "second");

    /* a creation and a deletion failing together leave nothing */
    hub_identity e = device("ephemeral");
    store_test_hold(st, true);
    registry_put(reg, &e, NULL, false, NULL, done_cb, NULL);
    registry_delete(reg, "ephemeral", NULL, NULL, NULL, done_cb, NULL);
    store_test_fail_commits(st, 1);
    store_test_hold(st, false);
    store_flush(st);
    assert_false(registry_get(reg, "ephemeral", NULL, &got));
    size_t total, en, dis;
    registry_stats(reg, &total, &en, &dis);
    assert_int_equal(total, 1);
}

/* ---- change listener ---------------------------------------------------- */

static struct {
    int n;
    struct {
        bool had_old, has_now;
        char key[260];
    } calls[16];
} CH;

static void on_change(void *arg, const hub_identity *old, const hub_identity *now)
{
    (void)arg;
    const hub_identity *any = now ? now : old;
    CH.calls[CH.n].had_old = old != NULL;
    CH.calls[CH.n].has_now = now != NULL;
    snprintf(CH.calls[CH.n].key, sizeof CH.calls[CH.n].key, "%s/%s", any->device_id, any->module_id);
    CH.n++;
}

static void test_change_listener(void **state)
{
    (void)state;
    memset(&CH, 0, sizeof CH);
    registry_set_change_listener(reg, on_change, NULL);
    hub_identity d = device("L"), m1 = module("L", "a"), m2 = module("L", "b");
    put(&d, NULL, false);
    put(&d, NULL, false);
    put(&m1, NULL, false);
    put(&m2, NULL, false);
    put(&d, "bad-etag", false); /* no change: no call */
    store_test_fail_commits(st, 1);
    put(&d, NULL, false); /* failed: no call */
    del("L", NULL, NULL);
    static const struct {
        bool had_old, has_now;
        const char *key;
    } want[] = {
        {false, true, "L/"}, {true, true, "L/"}, {false, true, "L/a"}, {false, true, "L/b"},
    };
    assert_int_equal(CH.n, 7);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(CH.calls[i].had_old, want[i].had_old);
        assert_int_equal(CH.calls[i].has_now, want[i].has_now);
        assert_string_equal(CH.calls[i].key, want[i].key);
    }
    for (int i = 4; i < 7; i++) { /* the device's deletion: both modules and itself */
        assert_true(CH.calls[i].had_old);
        assert_false(CH.calls[i].has_now);
    }
    assert_string_equal(CH.calls[6].key, "L/");
}

/* ---- lists, stats, runtime, persistence ---------------------------------- */

static void test_list_stats_runtime(void **state)
{
    (void)state;
    static const char *const ids[] = {"zeta", "alpha", "mid", "beta"};
    for (size_t i = 0; i < 4; i++) {
        hub_identity d = device(ids[i]);
        d.enabled = i != 2;
        assert_int_equal(put(&d, NULL, false), REG_CREATED);
    }
    hub_identity m = module("alpha", "mod");
    put(&m, NULL, false);
    size_t n;
    hub_identity *list = registry_list(reg, NULL, 3, &n);
    assert_int_equal(n, 3);
    assert_string_equal(list[0].device_id, "alpha");
    assert_string_equal(list[1].device_id, "beta");
    assert_string_equal(list[2].device_id, "mid");
    free(list);
    size_t total, enabled, disabled;
    registry_stats(reg, &total, &enabled, &disabled);
    assert_int_equal(total, 4);
    assert_int_equal(enabled, 3);
    assert_int_equal(disabled, 1);

    registry_note_connection(reg, "beta", NULL, true, 1000);
    registry_note_activity(reg, "beta", NULL, 2000);
    registry_note_activity(reg, "ghost", NULL, 2000); /* ignored */
    hub_identity got;
    assert_true(registry_get(reg, "beta", NULL, &got));
    assert_true(got.connected);
    assert_int_equal(got.connection_state_updated_ms, 1000);
    assert_int_equal(got.last_activity_ms, 2000);
    /* a write keeps the runtime state */
    hub_identity b = device("beta");
    put(&b, NULL, false);
    assert_true(D.id.connected);
    hub_identity before;
    assert_true(registry_get(reg, "beta", NULL, &before));
    reopen_all();
    assert_true(registry_get(reg, "beta", NULL, &got));
    assert_false(got.connected); /* runtime: not persisted */
    before.connected = false;
    before.connection_state_updated_ms = before.last_activity_ms = 0;
    assert_memory_equal(&got, &before, sizeof got);
    registry_stats(reg, &total, &enabled, &disabled);
    assert_int_equal(total, 4);
}

/* ---- done and the listener run on the caller's loop ---------------------- */

static struct {
    net_server *srv;
    int order; /* 1 = listener ran, 2 = then done */
    bool listener_on_loop, done_on_loop;
    registry_status st;
} LP;

static void loop_listener(void *arg, const hub_identity *old, const hub_identity *now)
{
    (void)arg;
    (void)old;
    (void)now;
    LP.listener_on_loop = net_loop_user(net_server_loop(LP.srv, 0)) == (void *)&LP &&
                          LP.order == 0;
    LP.order = 1;
}

static void loop_done(net_loop *loop, void *arg, registry_status s, const hub_identity *r,
                      const char *err)
{
    (void)arg;
    (void)r;
    (void)err;
    LP.done_on_loop = loop == net_server_loop(LP.srv, 0) && LP.order == 1;
    LP.order = 2;
    LP.st = s;
    net_server_stop(LP.srv);
}

static void loop_start(net_loop *loop, void *arg)
{
    (void)arg;
    net_loop_set_user(loop, &LP);
    hub_identity d = device("onloop");
    registry_put(reg, &d, NULL, false, loop, loop_done, NULL);
}

static void test_done_on_loop(void **state)
{
    (void)state;
    memset(&LP, 0, sizeof LP);
    char err[256];
    LP.srv = net_server_new(1, err, sizeof err);
    assert_non_null(LP.srv);
    registry_set_change_listener(reg, loop_listener, NULL);
    net_server_set_loop_hooks(LP.srv, loop_start, NULL, NULL);
    assert_int_equal(net_server_run(LP.srv), 0);
    assert_int_equal(LP.st, REG_CREATED);
    assert_int_equal(LP.order, 2);
    assert_true(LP.listener_on_loop);
    assert_true(LP.done_on_loop);
    net_server_free(LP.srv);
}

/* The map key and client id: "dev" or "dev/mod", each id cut at
 * HUB_ID_MAX bytes, always terminated. */
static void test_identity_key(void **state)
{
    (void)state;
    char key[HUB_IDENTITY_KEY_MAX];
    assert_int_equal(hub_identity_key(key, "dev", NULL), 3);
    assert_string_equal(key, "dev");
    assert_int_equal(hub_identity_key(key, "dev", ""), 3);
    assert_string_equal(key, "dev");
    assert_int_equal(hub_identity_key(key, "dev", "mod"), 7);
    assert_string_equal(key, "dev/mod");
    char longest[HUB_ID_MAX + 2];
    memset(longest, 'a', sizeof longest - 1);
    longest[sizeof longest - 1] = '\0'; /* one byte over HUB_ID_MAX */
    assert_int_equal(hub_identity_key(key, longest, longest), sizeof key - 1);
    assert_int_equal(strlen(key), sizeof key - 1);
    assert_int_equal(key[HUB_ID_MAX], '/');
}

int main(void)
{
    alarm(60);
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_key),
        cmocka_unit_test_setup_teardown(test_policies_created_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_replace_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conditions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_modules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_failure_rolls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failures_settle_to_durable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_change_listener, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_stats_runtime, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_on_loop, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

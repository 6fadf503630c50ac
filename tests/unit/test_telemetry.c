/*
 * test_telemetry.c — hub/telemetry.c against a real store in a temporary
 * directory: the property mapping of spec §6 "Send telemetry" (table
 * driven), the hub's stamps, the partition by device, completion only after
 * the commit, a failed commit reported as HUB_SERVER_ERROR, refusals of
 * what telemetry may not carry, and live subscribers (notified on their own
 * loop, coalesced, filtered by partition, silent after unsubscribing).
 *
 * Accepts pass loop == NULL, so completions run on the store thread and
 * store_flush() means "they have all run". Subscribers need a running loop:
 * a one-loop net_server runs in a thread for those tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

#include "hub/telemetry.h"
#include "net/server.h"
#include "store_testutil.h"
#include "util/log.h"
#include "util/time.h"

static char dir[64];
static store *ST;
static hub_telemetry *TEL;

static int setup(void **state)
{
    (void)state;
    testutil_tmpdir(dir);
    ST = testutil_open(dir, NULL);
    TEL = telemetry_new(ST);
    return TEL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    store_close(ST);
    telemetry_free(TEL);
    testutil_rmdir(dir);
    return 0;
}

/* ---- helpers ----------------------------------------------------------------- */

typedef struct outcome {
    atomic_int calls;
    atomic_int status;
} outcome;

static void record_done(net_loop *loop, void *arg, hub_status st)
{
    (void)loop;
    outcome *o = arg;
    atomic_store(&o->status, (int)st);
    atomic_fetch_add(&o->calls, 1);
}

/* Accepts m and waits for its completion; returns the status. */
static hub_status accept_now(const telemetry_msg *m)
{
    outcome o = {0};
    telemetry_accept(TEL, m, NULL, record_done, &o);
    store_flush(ST);
    assert_int_equal(atomic_load(&o.calls), 1);
    return (hub_status)atomic_load(&o.status);
}

/* The last event of a partition (copied out), read synchronously. */
static struct {
    bool found;
    store_event ev;
    char props[4096];
    char body[512];
    uint64_t next;
} LAST;

static void got_last(net_loop *loop, void *arg, store_status st, const store_read_result *res,
                     const char *err)
{
    (void)loop;
    (void)arg;
    (void)err;
    LAST.found = false;
    if (st != STORE_OK || res->n == 0)
        return;
    const store_event *e = &res->events[res->n - 1];
    LAST.found = true;
    LAST.ev = *e;
    LAST.next = res->next_seq;
    memcpy(LAST.props, e->props, e->props_len < sizeof LAST.props ? e->props_len : 0);
    memcpy(LAST.body, e->body, e->body_len < sizeof LAST.body ? e->body_len : 0);
    LAST.ev.props = LAST.props;
    LAST.ev.body = LAST.body;
}

static void read_last(unsigned partition)
{
    store_telemetry_read(ST, partition, 0, 1000, NULL, got_last, NULL);
    store_flush(ST);
    assert_true(LAST.found);
}

/* Decodes the last event of dev's partition into sys/app (caller decrefs). */
static void last_props(const char *dev, json_t **sys, json_t **app)
{
    read_last(store_partition_of(ST, dev));
    assert_true(telemetry_event_properties(&LAST.ev, sys, app));
}

static const char *str_of(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* ---- property mapping ------------------------------------------------------------ */

typedef struct mapping_case {
    const char *prop;     /* user property name as sent */
    const char *value;
    const char *in;       /* "sys" or "app": where it must land */
    const char *key;      /* under which name */
    const char *expected; /* with which value */
} mapping_case;

static const mapping_case MAPPINGS[] = {
    {"content-encoding", "utf-8", "sys", "content-encoding", "utf-8"},
    {"message-id", "m-1", "sys", "message-id", "m-1"},
    {"user-id", "alice", "sys", "user-id", "alice"},
    {"correlation-id", "c-9", "sys", "correlation-id", "c-9"},
    {"creation-time", "1600987195320", "app", "iothub-creation-time-utc",
     "2020-09-24T22:39:55.320Z"},
    {"creation-time", "0", "app", "iothub-creation-time-utc", "1970-01-01T00:00:00.000Z"},
    {"@MyProperty", "x", "app", "MyProperty", "x"},
    {"@myProperty1", "héllo wörld", "app", "myProperty1", "héllo wörld"},
    {"@a.b c", "", "app", "a.b c", ""},
    {"@@twice", "v", "app", "@twice", "v"},
};

static void test_property_mapping(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof MAPPINGS / sizeof MAPPINGS[0]; i++) {
        const mapping_case *c = &MAPPINGS[i];
        telemetry_prop p = {c->prop, c->value};
        telemetry_msg m = {.device_id = "map-dev", .module_id = "", .auth_method = "sas",
                           .props = &p, .nprops = 1, .body = (const uint8_t *)"b", .body_len = 1};
        assert_int_equal(accept_now(&m), HUB_OK);
        json_t *sys, *app;
        last_props("map-dev", &sys, &app);
        const char *got = str_of(strcmp(c->in, "sys") == 0 ? sys : app, c->key);
        if (!got || strcmp(got, c->expected) != 0)
            fail_msg("case %zu (%s): want %s[%s] = %s, got %s", i, c->prop, c->in, c->key,
                     c->expected, got ? got : "(absent)");
        /* nothing leaks into the other object */
        assert_null(json_object_get(strcmp(c->in, "sys") == 0 ? app : sys, c->key));
        json_decref(sys);
        json_decref(app);
    }
}

static void test_content_type_and_everything_together(void **state)
{
    (void)state;
    telemetry_prop props[] = {{"@temp", "21"}, {"message-id", "id-7"},
                              {"creation-time", "1700000000000"}, {"@temp", "22"}};
    telemetry_msg m = {.device_id = "all-dev", .module_id = "", .auth_method = "sas",
                       .content_type = "application/json", .props = props, .nprops = 4,
                       .body = (const uint8_t *)"{\"t\":1}", .body_len = 7};
    assert_int_equal(accept_now(&m), HUB_OK);
    json_t *sys, *app;
    last_props("all-dev", &sys, &app);
    assert_string_equal(str_of(sys, "content-type"), "application/json");
    assert_string_equal(str_of(sys, "message-id"), "id-7");
    assert_string_equal(str_of(app, "temp"), "22"); /* a repeated name: the last wins */
    assert_string_equal(str_of(app, "iothub-creation-time-utc"), "2023-11-14T22:13:20.000Z");
    assert_null(json_object_get(sys, "content-encoding")); /* absent stays absent */
    assert_int_equal(json_object_size(app), 2);
    assert_memory_equal(LAST.body, "{\"t\":1}", 7);
    json_decref(sys);
    json_decref(app);
}

static void test_stamps(void **state)
{
    (void)state;
    uint64_t before = time_wall_ms();
    telemetry_msg dev = {.device_id = "stamp-dev", .module_id = "", .auth_method = "sas"};
    assert_int_equal(accept_now(&dev), HUB_OK);
    json_t *sys, *app;
    last_props("stamp-dev", &sys, &app);
    assert_string_equal(str_of(sys, "iothub-connection-device-id"), "stamp-dev");
    assert_null(json_object_get(sys, "iothub-connection-module-id"));
    assert_string_equal(str_of(sys, "iothub-connection-auth-method"), "sas");
    char iso[32];
    time_iso8601_utc_ms(LAST.ev.enqueued_ms, iso);
    assert_string_equal(str_of(sys, "iothub-enqueuedtime"), iso);
    assert_true(LAST.ev.enqueued_ms >= (int64_t)before - 1000);
    assert_true(LAST.ev.enqueued_ms <= (int64_t)time_wall_ms() + 1000);
    assert_int_equal(LAST.ev.body_len, 0);
    json_decref(sys);
    json_decref(app);

    telemetry_msg mod = {.device_id = "stamp-dev", .module_id = "mod-a", .auth_method = "x509"};
    assert_int_equal(accept_now(&mod), HUB_OK);
    last_props("stamp-dev", &sys, &app);
    assert_string_equal(str_of(sys, "iothub-connection-device-id"), "stamp-dev");
    assert_string_equal(str_of(sys, "iothub-connection-module-id"), "mod-a");
    assert_string_equal(str_of(sys, "iothub-connection-auth-method"), "x509");
    json_decref(sys);
    json_decref(app);
}

static void test_partition_by_device(void **state)
{
    (void)state;
    const char *devs[] = {"p-a", "p-b", "p-c", "p-d", "p-e", "p-f", "p-g", "p-h"};
    for (size_t i = 0; i < 8; i++) {
        char body[16];
        int n = snprintf(body, sizeof body, "from %s", devs[i]);
        telemetry_msg m = {.device_id = devs[i], .module_id = "", .auth_method = "sas",
                           .body = (const uint8_t *)body, .body_len = (size_t)n};
        assert_int_equal(accept_now(&m), HUB_OK);
        read_last(store_partition_of(ST, devs[i]));
        assert_int_equal(LAST.ev.body_len, (size_t)n);
        assert_memory_equal(LAST.body, body, (size_t)n);
    }
    /* the same device always lands in the same partition, in order */
    unsigned p = store_partition_of(ST, "p-a");
    read_last(p);
    uint64_t seq = LAST.ev.seq;
    telemetry_msg again = {.device_id = "p-a", .module_id = "", .auth_method = "sas"};
    assert_int_equal(accept_now(&again), HUB_OK);
    read_last(p);
    assert_int_equal(LAST.ev.seq, seq + 1);
}

static void test_completion_waits_for_commit(void **state)
{
    (void)state;
    outcome o = {0};
    telemetry_msg m = {.device_id = "hold-dev", .module_id = "", .auth_method = "sas"};
    store_test_hold(ST, true);
    telemetry_accept(TEL, &m, NULL, record_done, &o);
    usleep(100 * 1000);
    assert_int_equal(atomic_load(&o.calls), 0); /* not committed, not reported */
    store_test_hold(ST, false);
    store_flush(ST);
    assert_int_equal(atomic_load(&o.calls), 1);
    assert_int_equal(atomic_load(&o.status), HUB_OK);
    json_t *sys, *app;
    last_props("hold-dev", &sys, &app);
    assert_string_equal(str_of(sys, "iothub-connection-device-id"), "hold-dev");
    json_decref(sys);
    json_decref(app);
}

static void test_failed_commit_is_server_error(void **state)
{
    (void)state;
    unsigned p = store_partition_of(ST, "fail-dev");
    store_telemetry_read(ST, p, 0, 1000, NULL, got_last, NULL);
    store_flush(ST);
    uint64_t next_before = LAST.found ? LAST.next : 0;
    store_test_fail_commits(ST, 1);
    telemetry_msg m = {.device_id = "fail-dev", .module_id = "", .auth_method = "sas"};
    assert_int_equal(accept_now(&m), HUB_SERVER_ERROR);
    /* nothing was stored */
    store_telemetry_read(ST, p, 0, 1000, NULL, got_last, NULL);
    store_flush(ST);
    assert_int_equal(LAST.found ? LAST.next : 0, next_before);
    /* the next one works */
    assert_int_equal(accept_now(&m), HUB_OK);
}

static void test_refusals(void **state)
{
    (void)state;
    static uint8_t big[TELEMETRY_MAX_BODY + 1];
    telemetry_prop unknown = {"trace-id", "x"};
    telemetry_prop bad_time = {"creation-time", "yesterday"};
    telemetry_prop neg_time = {"creation-time", "-5"};
    telemetry_prop empty_app = {"@", "x"};
    telemetry_prop bad_utf8 = {"@k", "\xff\xfe"};
    const telemetry_prop *cases[] = {&unknown, &bad_time, &neg_time, &empty_app, &bad_utf8};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        telemetry_msg m = {.device_id = "ref-dev", .module_id = "", .auth_method = "sas",
                           .props = cases[i], .nprops = 1};
        if (accept_now(&m) != HUB_BAD_REQUEST)
            fail_msg("case %zu (%s) was not refused", i, cases[i]->name);
    }
    telemetry_msg too_big = {.device_id = "ref-dev", .module_id = "", .auth_method = "sas",
                             .body = big, .body_len = sizeof big};
    assert_int_equal(accept_now(&too_big), HUB_BAD_REQUEST);
    telemetry_msg just_fits = too_big;
    just_fits.body_len = TELEMETRY_MAX_BODY;
    assert_int_equal(accept_now(&just_fits), HUB_OK);
    telemetry_msg no_device = {.device_id = "", .module_id = "", .auth_method = "sas"};
    assert_int_equal(accept_now(&no_device), HUB_BAD_REQUEST);
}

static void test_undecodable_blob(void **state)
{
    (void)state;
    store_event ev = {.props = "not json", .props_len = 8};
    json_t *sys = (json_t *)1, *app = (json_t *)1;
    assert_false(telemetry_event_properties(&ev, &sys, &app));
    assert_null(sys);
    assert_null(app);
    ev.props = "{\"sys\":{}}"; /* no app */
    ev.props_len = strlen(ev.props);
    assert_false(telemetry_event_properties(&ev, &sys, &app));
}

/* ---- subscribers -------------------------------------------------------------------- */

static struct {
    net_server *srv;
    net_loop *loop;
    pthread_t thread;
} L;

static void *loop_thread(void *arg)
{
    (void)arg;
    net_server_run(L.srv);
    return NULL;
}

static void start_loop(void)
{
    char err[128];
    L.srv = net_server_new(1, err, sizeof err);
    assert_non_null(L.srv);
    L.loop = net_server_loop(L.srv, 0);
    pthread_create(&L.thread, NULL, loop_thread, NULL);
}

static void stop_loop(void)
{
    net_server_stop(L.srv);
    pthread_join(L.thread, NULL);
    net_server_free(L.srv);
}

typedef struct watcher {
    atomic_int calls;
    atomic_ullong mask;
    atomic_int wrong_loop;
    telemetry_sub *sub;
    atomic_int unsubscribed;
} watcher;

static void watched(net_loop *loop, void *arg, uint64_t partitions)
{
    watcher *w = arg;
    if (loop != L.loop)
        atomic_fetch_add(&w->wrong_loop, 1);
    atomic_fetch_or(&w->mask, partitions);
    atomic_fetch_add(&w->calls, 1);
}

/* Waits up to 2 s for cond(). */
static bool eventually(bool (*cond)(watcher *), watcher *w)
{
    for (int i = 0; i < 200; i++) {
        if (cond(w))
            return true;
        usleep(10 * 1000);
    }
    return cond(w);
}

static bool called(watcher *w) { return atomic_load(&w->calls) > 0; }
static bool unsubscribed(watcher *w) { return atomic_load(&w->unsubscribed) > 0; }

static void unsubscribe_task(net_loop *loop, void *arg)
{
    (void)loop;
    watcher *w = arg;
    telemetry_unsubscribe(TEL, w->sub);
    atomic_store(&w->unsubscribed, 1);
}

static void send_from(const char *dev)
{
    telemetry_msg m = {.device_id = dev, .module_id = "", .auth_method = "sas"};
    assert_int_equal(accept_now(&m), HUB_OK);
}

static void test_subscribers_notified(void **state)
{
    (void)state;
    start_loop();
    unsigned p = store_partition_of(ST, "sub-dev");
    unsigned other = (p + 1) % store_partitions(ST);
    watcher all = {0}, mine = {0}, elsewhere = {0};
    all.sub = telemetry_subscribe(TEL, TELEMETRY_ALL_PARTITIONS, L.loop, watched, &all);
    mine.sub = telemetry_subscribe(TEL, p, L.loop, watched, &mine);
    elsewhere.sub = telemetry_subscribe(TEL, other, L.loop, watched, &elsewhere);
    assert_non_null(all.sub);

    send_from("sub-dev");
    assert_true(eventually(called, &all));
    assert_true(eventually(called, &mine));
    usleep(50 * 1000);
    assert_int_equal(atomic_load(&elsewhere.calls), 0); /* other partition: silent */
    assert_int_equal(atomic_load(&all.mask), TELEMETRY_PARTITION_BIT(p));
    assert_int_equal(atomic_load(&all.wrong_loop), 0);

    /* a failed append tells nobody */
    int before = atomic_load(&all.calls);
    store_test_fail_commits(ST, 1);
    telemetry_msg m = {.device_id = "sub-dev", .module_id = "", .auth_method = "sas"};
    assert_int_equal(accept_now(&m), HUB_SERVER_ERROR);
    usleep(50 * 1000);
    assert_int_equal(atomic_load(&all.calls), before);

    /* a burst is coalesced: at most one call per append, at least one */
    atomic_store(&all.calls, 0);
    store_test_hold(ST, true);
    outcome o = {0};
    for (int i = 0; i < 20; i++)
        telemetry_accept(TEL, &m, NULL, record_done, &o);
    store_test_hold(ST, false);
    store_flush(ST);
    assert_int_equal(atomic_load(&o.calls), 20);
    assert_true(eventually(called, &all));
    usleep(50 * 1000);
    assert_true(atomic_load(&all.calls) <= 20);

    /* after unsubscribing (on its loop) nothing more arrives */
    net_loop_post(L.loop, unsubscribe_task, &mine);
    assert_true(eventually(unsubscribed, &mine));
    atomic_store(&mine.calls, 0);
    send_from("sub-dev");
    assert_true(eventually(called, &all));
    usleep(50 * 1000);
    assert_int_equal(atomic_load(&mine.calls), 0);

    /* unsubscribing with a notice in flight: freed by the notice (ASan) */
    store_test_hold(ST, true);
    telemetry_accept(TEL, &m, NULL, record_done, &o);
    store_test_hold(ST, false);
    store_flush(ST); /* the notice is posted now; the unsubscribe follows it */
    net_loop_post(L.loop, unsubscribe_task, &all);
    assert_true(eventually(unsubscribed, &all));
    net_loop_post(L.loop, unsubscribe_task, &elsewhere);
    assert_true(eventually(unsubscribed, &elsewhere));
    stop_loop();
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_undecodable_blob),
        cmocka_unit_test_setup_teardown(test_property_mapping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_content_type_and_everything_together, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stamps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partition_by_device, setup, teardown),
        cmocka_unit_test_setup_teardown(test_completion_waits_for_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_commit_is_server_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscribers_notified, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_twin.c — the twin table (hub/twin.h) over a real store and
 * registry: empty twins for every identity, device and service views,
 * reported patches with if-version, service PATCH/PUT with If-Match,
 * write-through (reopen keeps twins), rollback when the commit fails,
 * the desired listener, identity creation and deletion (modules too),
 * stale stored twins ignored, `done` running on the caller's loop, and
 * writes racing on one twin from several threads (none lost, every
 * version handed out once; ASan checks the shared documents).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

#include "hub/twin.h"
#include "net/server.h"
#include "store_testutil.h"

static char dir[64];
static store *st;
static hub_registry *reg;
static hub_twins *twins;

static void on_identity_change(void *arg, const hub_identity *old, const hub_identity *now)
{
    twins_identity_changed(arg, old, now);
}

static void open_all(void)
{
    char err[256];
    st = testutil_open(dir, NULL);
    reg = registry_open(st, err, sizeof err);
    if (!reg)
        fail_msg("registry_open: %s", err);
    twins = twins_open(st, reg, err, sizeof err);
    if (!twins)
        fail_msg("twins_open: %s", err);
    registry_set_change_listener(reg, on_identity_change, twins);
}

static void close_all(void)
{
    store_close(st);
    twins_free(twins);
    registry_free(reg);
}

static int setup(void **state)
{
    (void)state;
    testutil_tmpdir(dir);
    open_all();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    close_all();
    testutil_rmdir(dir);
    return 0;
}

/* ---- synchronous wrappers (loop == NULL, then a flush) --------------------- */

static void reg_done(net_loop *loop, void *arg, registry_status s, const hub_identity *result,
                     const char *err)
{
    (void)loop;
    (void)result;
    (void)err;
    *(registry_status *)arg = s;
}

static void put_identity(const char *device_id, const char *module_id)
{
    hub_identity id;
    memset(&id, 0, sizeof id);
    snprintf(id.device_id, sizeof id.device_id, "%s", device_id);
    snprintf(id.module_id, sizeof id.module_id, "%s", module_id ? module_id : "");
    id.enabled = true;
    registry_status rs = REG_STORE_ERROR;
    registry_put(reg, &id, NULL, false, NULL, reg_done, &rs);
    store_flush(st);
    assert_int_equal(rs, REG_CREATED);
}

static void delete_identity(const char *device_id, const char *module_id)
{
    registry_status rs = REG_STORE_ERROR;
    registry_delete(reg, device_id, module_id, NULL, NULL, reg_done, &rs);
    store_flush(st);
    assert_int_equal(rs, REG_OK);
}

static struct {
    int calls;
    hub_status st;
    uint64_t version;
    char json[70000];
    char etag[HUB_ETAG_MAX + 1];
    char reason[200];
    net_loop *loop;
} R;

static void version_done(net_loop *loop, void *arg, hub_status s, uint64_t version,
                         const char *reason)
{
    (void)arg;
    R.calls++;
    R.st = s;
    R.version = version;
    R.loop = loop;
    snprintf(R.reason, sizeof R.reason, "%s", reason ? reason : "");
}

static void doc_done(net_loop *loop, void *arg, hub_status s, const char *twin_json,
                     const char *etag, const char *reason)
{
    (void)arg;
    R.calls++;
    R.st = s;
    R.loop = loop;
    snprintf(R.json, sizeof R.json, "%s", twin_json ? twin_json : "");
    snprintf(R.etag, sizeof R.etag, "%s", etag ? etag : "");
    snprintf(R.reason, sizeof R.reason, "%s", reason ? reason : "");
}

static hub_status patch_reported(const char *dev, const char *mod, const char *patch,
                                 int64_t if_version)
{
    memset(&R, 0, sizeof R);
    twins_patch_reported(twins, dev, mod, patch, strlen(patch), if_version, NULL, version_done,
                         NULL);
    store_flush(st);
    assert_int_equal(R.calls, 1);
    return R.st;
}

static hub_status update(const char *dev, const char *mod, const char *body, bool replace,
                         const char *if_match)
{
    memset(&R, 0, sizeof R);
    twins_service_update(twins, dev, mod, body, strlen(body), replace, if_match, NULL, doc_done,
                         NULL);
    store_flush(st);
    assert_int_equal(R.calls, 1);
    return R.st;
}

/* The service view, parsed (fails the test when absent). */
static json_t *service_view(const char *dev, const char *mod, char etag[HUB_ETAG_MAX + 1])
{
    hub_status s = HUB_SERVER_ERROR;
    char *text = twins_service_view(twins, dev, mod, etag, &s);
    assert_int_equal(s, HUB_OK);
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    assert_non_null(j);
    return j;
}

static json_int_t get_int(const json_t *j, const char *a, const char *b, const char *c)
{
    const json_t *v = json_object_get(j, a);
    if (b)
        v = json_object_get(v, b);
    if (c)
        v = json_object_get(v, c);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static const char *get_str(const json_t *j, const char *a, const char *b, const char *c)
{
    const json_t *v = json_object_get(j, a);
    if (b)
        v = json_object_get(v, b);
    if (c)
        v = json_object_get(v, c);
    return json_string_value(v);
}

/* ---- tests ------------------------------------------------------------------- */

static void test_empty_twins_and_views(void **state)
{
    (void)state;
    put_identity("d1", NULL);
    put_identity("d1", "m1");
    char etag[HUB_ETAG_MAX + 1];
    json_t *j = service_view("d1", NULL, etag);
    assert_string_equal(get_str(j, "deviceId", NULL, NULL), "d1");
    assert_null(json_object_get(j, "moduleId"));
    assert_string_equal(get_str(j, "etag", NULL, NULL), etag);
    assert_int_equal(get_int(j, "version", NULL, NULL), 1);
    assert_string_equal(get_str(j, "status", NULL, NULL), "enabled");
    assert_string_equal(get_str(j, "connectionState", NULL, NULL), "Disconnected");
    assert_non_null(get_str(j, "lastActivityTime", NULL, NULL));
    assert_int_equal(get_int(j, "properties", "desired", "$version"), 1);
    assert_int_equal(get_int(j, "properties", "reported", "$version"), 1);
    assert_non_null(json_object_get(json_object_get(j, "properties"), "desired"));
    json_decref(j);
    j = service_view("d1", "m1", NULL);
    assert_string_equal(get_str(j, "moduleId", NULL, NULL), "m1");
    json_decref(j);

    hub_status s;
    char *dev = twins_device_view(twins, "d1", "", &s);
    assert_int_equal(s, HUB_OK);
    assert_string_equal(dev, "{\"desired\":{\"$version\":1},\"reported\":{\"$version\":1}}");
    free(dev);
    assert_null(twins_device_view(twins, "nope", NULL, &s));
    assert_int_equal(s, HUB_NOT_FOUND);
    assert_null(twins_service_view(twins, "d1", "nope", NULL, &s));
    assert_int_equal(s, HUB_NOT_FOUND);
    registry_note_connection(reg, "d1", NULL, true, 1600987195320LL);
    j = service_view("d1", NULL, NULL);
    assert_string_equal(get_str(j, "connectionState", NULL, NULL), "Connected");
    assert_string_equal(get_str(j, "lastActivityTime", NULL, NULL), "2020-09-24T22:39:55.320Z");
    json_decref(j);
}

static void test_reported_write_through_and_if_version(void **state)
{
    (void)state;
    put_identity("d2", NULL);
    assert_int_equal(patch_reported("d2", NULL, "{\"fw\":\"1.0\",\"x\":{\"y\":1}}", -1), HUB_OK);
    assert_int_equal(R.version, 2);
    assert_int_equal(patch_reported("d2", NULL, "{\"x\":null}", 2), HUB_OK);
    assert_int_equal(R.version, 3);
    assert_int_equal(patch_reported("d2", NULL, "{\"fw\":\"2.0\"}", 2), HUB_PRECONDITION_FAILED);
    assert_true(R.reason[0] != '\0');
    assert_int_equal(patch_reported("d2", NULL, "[1]", -1), HUB_BAD_REQUEST);
    assert_int_equal(patch_reported("d2", NULL, "{nope", -1), HUB_BAD_REQUEST);
    assert_int_equal(patch_reported("d2", NULL, "{\"a.b\":1}", -1), HUB_BAD_REQUEST);
    assert_int_equal(patch_reported("ghost", NULL, "{}", -1), HUB_NOT_FOUND);
    char etag[HUB_ETAG_MAX + 1];
    json_t *before = service_view("d2", NULL, etag);
    assert_int_equal(get_int(before, "version", NULL, NULL), 3);

    close_all();
    open_all();
    char etag2[HUB_ETAG_MAX + 1];
    json_t *after = service_view("d2", NULL, etag2);
    assert_string_equal(etag, etag2);
    assert_true(json_equal(before, after));
    assert_string_equal(get_str(after, "properties", "reported", "fw"), "1.0");
    assert_null(json_object_get(json_object_get(json_object_get(after, "properties"), "reported"),
                                "x"));
    json_decref(before);
    json_decref(after);
}

static void test_service_update_and_if_match(void **state)
{
    (void)state;
    put_identity("d3", NULL);
    char etag[HUB_ETAG_MAX + 1], quoted[HUB_ETAG_MAX + 3];
    json_decref(service_view("d3", NULL, etag));
    assert_int_equal(update("d3", NULL, "{\"tags\":{\"a\":1}}", false, "wrong"),
                     HUB_PRECONDITION_FAILED);
    assert_int_equal(update("d3", NULL, "{\"tags\":{\"a\":1}}", false, etag), HUB_OK);
    assert_string_not_equal(R.etag, etag);
    char fresh[HUB_ETAG_MAX + 1];
    strcpy(fresh, R.etag);
    json_t *j = json_loads(R.json, 0, NULL);
    assert_string_equal(get_str(j, "etag", NULL, NULL), R.etag);
    assert_int_equal(get_int(j, "tags", "a", NULL), 1);
    assert_int_equal(get_int(j, "version", NULL, NULL), 2);
    assert_int_equal(get_int(j, "properties", "desired", "$version"), 1); /* tags only */
    json_decref(j);
    assert_int_equal(update("d3", NULL, "{\"tags\":{\"b\":2}}", false, etag),
                     HUB_PRECONDITION_FAILED); /* stale now */
    snprintf(quoted, sizeof quoted, "\"%s\"", fresh);
    assert_int_equal(update("d3", NULL,
                            "{\"tags\":{\"b\":2},\"properties\":{\"desired\":{\"d\":{\"e\":1}}}}",
                            false, quoted),
                     HUB_OK);
    j = json_loads(R.json, 0, NULL);
    assert_int_equal(get_int(j, "tags", "a", NULL), 1);
    assert_int_equal(get_int(j, "tags", "b", NULL), 2);
    assert_int_equal(get_int(j, "properties", "desired", "$version"), 2);
    json_decref(j);
    assert_int_equal(update("d3", NULL, "{\"tags\":{\"c\":3}}", false, "*"), HUB_OK);

    /* replace: tags and desired become what is given; $metadata/$version sent back ignored */
    assert_int_equal(update("d3", NULL,
                            "{\"tags\":{\"z\":1},\"properties\":{\"desired\":{\"n\":1,"
                            "\"$version\":99,\"$metadata\":{}},\"reported\":{\"r\":1}}}",
                            true, NULL),
                     HUB_OK);
    j = json_loads(R.json, 0, NULL);
    assert_null(json_object_get(json_object_get(j, "tags"), "a"));
    assert_int_equal(get_int(j, "tags", "z", NULL), 1);
    assert_null(json_object_get(json_object_get(json_object_get(j, "properties"), "desired"), "d"));
    assert_int_equal(get_int(j, "properties", "desired", "n"), 1);
    assert_int_equal(get_int(j, "properties", "desired", "$version"), 3);
    assert_null(json_object_get(json_object_get(json_object_get(j, "properties"), "reported"),
                                "r"));
    json_decref(j);

    /* bad bodies and limits: 400, nothing changed */
    json_t *before = service_view("d3", NULL, etag);
    static const char *const bad[] = {
        "nope", "[]", "{\"tags\":5}", "{\"properties\":{\"desired\":[]}}", "{}",
        "{\"tags\":{\"a b\":1}}", "{\"properties\":{\"desired\":{\"$x\":1}}}",
        "{\"tags\":{\"ok\":1},\"properties\":{\"desired\":{\"bad.key\":1}}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (update("d3", NULL, bad[i], false, NULL) != HUB_BAD_REQUEST)
            fail_msg("%s: got %#x", bad[i], R.st);
        assert_true(R.reason[0] != '\0');
    }
    assert_int_equal(update("gone", NULL, "{\"tags\":{}}", false, NULL), HUB_NOT_FOUND);
    char etag2[HUB_ETAG_MAX + 1];
    json_t *after = service_view("d3", NULL, etag2);
    assert_true(json_equal(before, after));
    assert_string_equal(etag, etag2);
    json_decref(before);
    json_decref(after);
}

static void test_rollback_on_failed_commit(void **state)
{
    (void)state;
    put_identity("d4", NULL);
    assert_int_equal(patch_reported("d4", NULL, "{\"a\":1}", -1), HUB_OK);
    char etag[HUB_ETAG_MAX + 1];
    json_t *before = service_view("d4", NULL, etag);
    store_test_fail_commits(st, 1);
    assert_int_equal(patch_reported("d4", NULL, "{\"a\":2}", -1), HUB_SERVER_ERROR);
    char etag2[HUB_ETAG_MAX + 1];
    json_t *after = service_view("d4", NULL, etag2);
    assert_true(json_equal(before, after));
    assert_string_equal(etag, etag2);
    json_decref(after);
    store_test_fail_commits(st, 1);
    assert_int_equal(update("d4", NULL, "{\"tags\":{\"t\":1}}", false, etag), HUB_SERVER_ERROR);
    after = service_view("d4", NULL, etag2);
    assert_true(json_equal(before, after));
    json_decref(after);
    /* the etag read before the failures still works: nothing changed */
    assert_int_equal(update("d4", NULL, "{\"tags\":{\"t\":1}}", false, etag), HUB_OK);
    assert_int_equal(patch_reported("d4", NULL, "{\"a\":3}", 2), HUB_OK);
    assert_int_equal(R.version, 3);
    /* several writes in one failing batch all roll back */
    json_decref(before);
    before = service_view("d4", NULL, etag);
    store_test_hold(st, true);
    int calls = 0;
    memset(&R, 0, sizeof R);
    twins_patch_reported(twins, "d4", NULL, "{\"b\":1}", 7, -1, NULL, version_done, NULL);
    twins_patch_reported(twins, "d4", NULL, "{\"c\":1}", 7, -1, NULL, version_done, NULL);
    store_test_fail_commits(st, 1);
    store_test_hold(st, false);
    store_flush(st);
    calls = R.calls;
    assert_int_equal(calls, 2);
    after = service_view("d4", NULL, etag2);
    assert_true(json_equal(before, after));
    json_decref(before);
    json_decref(after);
    close_all();
    open_all();
    after = service_view("d4", NULL, etag2);
    assert_string_equal(etag, etag2);
    json_decref(after);
}

static struct {
    int calls;
    char device[HUB_ID_MAX + 1], module[HUB_ID_MAX + 1];
    uint64_t version;
    char patch[1000];
} L;

static void desired_listener(void *arg, const char *device_id, const char *module_id,
                             uint64_t version, const char *patch_json)
{
    (void)arg;
    L.calls++;
    snprintf(L.device, sizeof L.device, "%s", device_id);
    snprintf(L.module, sizeof L.module, "%s", module_id);
    L.version = version;
    snprintf(L.patch, sizeof L.patch, "%s", patch_json);
}

static void test_desired_listener(void **state)
{
    (void)state;
    put_identity("d5", NULL);
    put_identity("d5", "m");
    twins_set_desired_listener(twins, desired_listener, NULL);
    memset(&L, 0, sizeof L);
    assert_int_equal(update("d5", "m", "{\"properties\":{\"desired\":{\"a\":{\"b\":null}}}}",
                            false, NULL),
                     HUB_OK);
    assert_int_equal(L.calls, 1);
    assert_string_equal(L.device, "d5");
    assert_string_equal(L.module, "m");
    assert_int_equal(L.version, 2);
    assert_string_equal(L.patch, "{\"a\":{\"b\":null}}");
    assert_int_equal(update("d5", NULL, "{\"tags\":{\"x\":1}}", false, NULL), HUB_OK);
    assert_int_equal(patch_reported("d5", NULL, "{\"r\":1}", -1), HUB_OK);
    assert_int_equal(L.calls, 1); /* tags and reported are not pushed */
    store_test_fail_commits(st, 1);
    assert_int_equal(update("d5", NULL, "{\"properties\":{\"desired\":{\"a\":1}}}", false, NULL),
                     HUB_SERVER_ERROR);
    assert_int_equal(L.calls, 1); /* not durable: not pushed */
    assert_int_equal(update("d5", NULL, "{\"properties\":{\"desired\":{\"k\":1}}}", true, NULL),
                     HUB_OK);
    assert_int_equal(L.calls, 2);
    assert_string_equal(L.module, "");
    assert_int_equal(L.version, 2);
    assert_string_equal(L.patch, "{\"k\":1}"); /* a replace sends the whole desired */
}

static void test_identity_lifecycle(void **state)
{
    (void)state;
    put_identity("d6", NULL);
    put_identity("d6", "m1");
    put_identity("d6", "m2");
    assert_int_equal(patch_reported("d6", "m1", "{\"a\":1}", -1), HUB_OK);
    assert_int_equal(patch_reported("d6", NULL, "{\"a\":1}", -1), HUB_OK);
    delete_identity("d6", "m2");
    hub_status s;
    assert_null(twins_service_view(twins, "d6", "m2", NULL, &s));
    assert_int_equal(s, HUB_NOT_FOUND);
    assert_int_equal(patch_reported("d6", "m2", "{\"a\":1}", -1), HUB_NOT_FOUND);
    delete_identity("d6", NULL);
    assert_null(twins_service_view(twins, "d6", NULL, NULL, &s));
    assert_null(twins_service_view(twins, "d6", "m1", NULL, &s));
    assert_int_equal(s, HUB_NOT_FOUND);
    /* re-created: a fresh empty twin, also after a restart */
    put_identity("d6", NULL);
    json_t *j = service_view("d6", NULL, NULL);
    assert_int_equal(get_int(j, "properties", "reported", "$version"), 1);
    json_decref(j);
    close_all();
    open_all();
    j = service_view("d6", NULL, NULL);
    assert_int_equal(get_int(j, "properties", "reported", "$version"), 1);
    json_decref(j);
    assert_null(twins_service_view(twins, "d6", "m1", NULL, &s));
}

static void test_stale_stored_twin_ignored(void **state)
{
    (void)state;
    put_identity("d7", NULL);
    char etag[HUB_ETAG_MAX + 1];
    json_decref(service_view("d7", NULL, etag));
    /* a row left by a write that raced with an earlier identity's deletion */
    store_twin row = {
        .device_id = "d7",
        .module_id = "",
        .json = "{\"deviceId\":\"d7\",\"etag\":\"old\",\"version\":5,\"generationId\":\"other\","
                "\"tags\":{\"stale\":1},\"properties\":{}}",
        .etag = "old",
        .version = 5,
        .desired_version = 1,
        .reported_version = 1,
    };
    store_status ss = STORE_ERROR;
    store_twin_put(st, &row, NULL, testutil_record, &ss);
    store_flush(st);
    assert_int_equal(ss, STORE_OK);
    close_all();
    open_all();
    char etag2[HUB_ETAG_MAX + 1];
    json_t *j = service_view("d7", NULL, etag2);
    assert_string_equal(etag, etag2); /* the empty twin, stable across restarts */
    assert_null(json_object_get(json_object_get(j, "tags"), "stale"));
    json_decref(j);
}

/* ---- done on the caller's loop -------------------------------------------------- */

typedef struct loop_ctx {
    net_server *server;
    net_loop *loop;
    int stage;
} loop_ctx;

static void loop_version_done(net_loop *loop, void *arg, hub_status s, uint64_t version,
                              const char *reason)
{
    loop_ctx *c = arg;
    version_done(loop, NULL, s, version, reason);
    if (++c->stage == 2)
        net_server_stop(c->server);
}

static void start_writes(net_loop *loop, void *arg)
{
    loop_ctx *c = arg;
    c->loop = loop;
    twins_patch_reported(twins, "d8", NULL, "{\"a\":1}", 7, -1, loop, loop_version_done, c);
    twins_patch_reported(twins, "d8", NULL, "{\"a\":2}", 7, 99, loop, loop_version_done, c);
}

/* ---- racing writers ---- */

enum { RACE_THREADS = 4, RACE_WRITES = 300 };
static struct {
    atomic_int ok, failed, readers_bad;
    atomic_uchar seen[RACE_THREADS * RACE_WRITES + 2]; /* reported versions handed out */
    atomic_bool stop;
} race;

static void race_done(net_loop *loop, void *arg, hub_status s, uint64_t version,
                      const char *reason)
{
    (void)loop;
    (void)arg;
    (void)reason;
    if (s != HUB_OK || version < 2 || version >= sizeof race.seen / sizeof race.seen[0] ||
        atomic_fetch_add(&race.seen[version], 1) != 0)
        atomic_fetch_add(&race.failed, 1);
    else
        atomic_fetch_add(&race.ok, 1);
}

static void *race_writer(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < RACE_WRITES; i++) {
        char patch[64];
        int n = snprintf(patch, sizeof patch, "{\"w%d\":%d}", id, i);
        twins_patch_reported(twins, "race", NULL, patch, (size_t)n, -1, NULL, race_done, NULL);
    }
    return NULL;
}

static void *race_reader(void *arg)
{
    (void)arg;
    while (!atomic_load(&race.stop)) {
        hub_status s;
        char *text = twins_device_view(twins, "race", NULL, &s);
        json_t *j = text ? json_loads(text, 0, NULL) : NULL;
        if (s != HUB_OK || !j)
            atomic_fetch_add(&race.readers_bad, 1);
        json_decref(j);
        free(text);
    }
    return NULL;
}

static void test_racing_writers_lose_nothing(void **state)
{
    (void)state;
    put_identity("race", NULL);
    memset(&race, 0, sizeof race);
    pthread_t w[RACE_THREADS], r;
    pthread_create(&r, NULL, race_reader, NULL);
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_create(&w[i], NULL, race_writer, (void *)(intptr_t)i);
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_join(w[i], NULL);
    store_flush(st);
    atomic_store(&race.stop, true);
    pthread_join(r, NULL);
    assert_int_equal(atomic_load(&race.failed), 0);
    assert_int_equal(atomic_load(&race.ok), RACE_THREADS * RACE_WRITES);
    assert_int_equal(atomic_load(&race.readers_bad), 0);
    /* every write landed: each writer's last value, one version per write */
    json_t *j = service_view("race", NULL, NULL);
    assert_int_equal(get_int(j, "version", NULL, NULL), 1 + RACE_THREADS * RACE_WRITES);
    assert_int_equal(get_int(j, "properties", "reported", "$version"),
                     1 + RACE_THREADS * RACE_WRITES);
    for (int i = 0; i < RACE_THREADS; i++) {
        char key[16];
        snprintf(key, sizeof key, "w%d", i);
        assert_int_equal(get_int(j, "properties", "reported", key), RACE_WRITES - 1);
    }
    json_decref(j);
}

static void test_done_runs_on_the_loop(void **state)
{
    (void)state;
    put_identity("d8", NULL);
    char err[256];
    loop_ctx c = {.server = net_server_new(1, err, sizeof err)};
    assert_non_null(c.server);
    memset(&R, 0, sizeof R);
    net_server_set_loop_hooks(c.server, start_writes, NULL, &c);
    assert_int_equal(net_server_run(c.server), 0);
    assert_int_equal(R.calls, 2);
    assert_ptr_equal(R.loop, c.loop);
    net_server_free(c.server);
    json_t *j = service_view("d8", NULL, NULL);
    assert_int_equal(get_int(j, "properties", "reported", "a"), 1);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_empty_twins_and_views, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reported_write_through_and_if_version, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_service_update_and_if_match, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_on_failed_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_desired_listener, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_stored_twin_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_runs_on_the_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_racing_writers_lose_nothing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_store_data.c — round trips of each data family through the store and
 * across a close/reopen: identities (devices, modules, cascade on device
 * deletion), policies, twins, C2D queues, persistent sessions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "store_testutil.h"
#include "util/log.h"

static store *reopen(store *st)
{
    store_close(st);
    return testutil_open(testutil_dir, NULL);
}

/* ---- identities --------------------------------------------------------- */

static struct {
    hub_identity ids[16];
    size_t n;
    hub_policy pols[8];
    size_t np;
} L;

static void collect_identity(void *arg, const hub_identity *id)
{
    (void)arg;
    if (L.n < 16)
        L.ids[L.n++] = *id;
}

static void collect_policy(void *arg, const hub_policy *p)
{
    (void)arg;
    if (L.np < 8)
        L.pols[L.np++] = *p;
}

static void load_all(store *st)
{
    memset(&L, 0, sizeof L);
    assert_true(store_load_identities(st, collect_identity, NULL));
    assert_true(store_load_policies(st, collect_policy, NULL));
}

static void test_identity_round_trip(void **state)
{
    (void)state;
    static const hub_identity cases[] = {
        {.device_id = "dev1", .generation_id = "g1", .etag = "e1", .enabled = true,
         .auth_type = HUB_AUTH_SAS, .primary_key = "cHJpbWFyeWtleXByaW1hcnk=",
         .secondary_key = "c2Vjb25kYXJ5a2V5c2Vjb25k", .status_updated_ms = 1234},
        {.device_id = "dev1", .module_id = "mod.A", .generation_id = "g2", .etag = "e2",
         .enabled = false, .status_reason = "maintenance", .auth_type = HUB_AUTH_SELF_SIGNED,
         .primary_thumbprint = "0123456789ABCDEF0123456789ABCDEF01234567",
         .secondary_thumbprint = "89ABCDEF0123456789ABCDEF0123456789ABCDEF"},
        {.device_id = "edge-'$@!", .generation_id = "g3", .etag = "e3", .enabled = true,
         .auth_type = HUB_AUTH_CA, .iot_edge = true, .status_updated_ms = -1},
        {.device_id = "none", .generation_id = "g4", .etag = "e4", .auth_type = HUB_AUTH_NONE,
         /* runtime fields are not stored */
         .connected = true, .last_activity_ms = 77, .c2d_message_count = 3},
    };
    enum { N = sizeof cases / sizeof cases[0] };
    store *st = testutil_open(testutil_dir, NULL);
    store_status res[N];
    for (size_t i = 0; i < N; i++)
        store_put_identity(st, &cases[i], NULL, testutil_record, &res[i]);
    st = reopen(st);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(res[i], STORE_OK);
    load_all(st);
    assert_int_equal(L.n, N);
    for (size_t i = 0; i < N; i++) {
        const hub_identity *want = &cases[i], *got = NULL;
        for (size_t k = 0; k < L.n; k++)
            if (!strcmp(L.ids[k].device_id, want->device_id) &&
                !strcmp(L.ids[k].module_id, want->module_id))
                got = &L.ids[k];
        assert_non_null(got);
        hub_identity expect = *want;
        expect.connected = false;
        expect.last_activity_ms = 0;
        expect.c2d_message_count = 0;
        assert_memory_equal(got, &expect, sizeof expect);
    }
    /* replace keeps one row */
    hub_identity changed = cases[0];
    strcpy(changed.etag, "e1b");
    store_put_identity(st, &changed, NULL, testutil_record, &res[0]);
    store_flush(st);
    load_all(st);
    assert_int_equal(L.n, N);
    assert_string_equal(L.ids[0].etag, "e1b");
    store_close(st);
}

static void test_delete_device_cascades(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    hub_identity d = {.device_id = "d", .etag = "e"}, m1 = d, m2 = d, other = d;
    strcpy(m1.module_id, "m1");
    strcpy(m2.module_id, "m2");
    strcpy(other.device_id, "dd"); /* a prefix-alike must survive */
    store_status s = STORE_ERROR;
    store_put_identity(st, &d, NULL, NULL, NULL);
    store_put_identity(st, &m1, NULL, NULL, NULL);
    store_put_identity(st, &m2, NULL, NULL, NULL);
    store_put_identity(st, &other, NULL, NULL, NULL);
    store_twin tw = {.device_id = "d", .module_id = "m1", .json = "{}", .etag = "t"};
    store_twin_put(st, &tw, NULL, NULL, NULL);
    store_c2d_msg m = {.device_id = "d", .body = "x", .body_len = 1};
    store_c2d_enqueue(st, &m, 0, NULL, NULL, NULL);
    /* delete one module */
    store_delete_identity(st, "d", "m2", NULL, testutil_record, &s);
    store_flush(st);
    assert_int_equal(s, STORE_OK);
    load_all(st);
    assert_int_equal(L.n, 3);
    /* delete the device: its module, twins and queue go too */
    store_delete_identity(st, "d", NULL, NULL, testutil_record, &s);
    store_flush(st);
    assert_int_equal(s, STORE_OK);
    load_all(st);
    assert_int_equal(L.n, 1);
    assert_string_equal(L.ids[0].device_id, "dd");
    store_delete_identity(st, "d", NULL, NULL, testutil_record, &s);
    store_flush(st);
    assert_int_equal(s, STORE_NOT_FOUND);
    store_close(st);
}

static void test_policy_round_trip(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    hub_policy a = {.name = "iothubowner", .rights = 15, .primary_key = "p", .secondary_key = "s"};
    hub_policy b = {.name = "device", .rights = 8, .primary_key = "p2", .secondary_key = "s2"};
    store_put_policy(st, &a, NULL, NULL, NULL);
    store_put_policy(st, &b, NULL, NULL, NULL);
    b.rights = 9;
    store_put_policy(st, &b, NULL, NULL, NULL);
    st = reopen(st);
    load_all(st);
    assert_int_equal(L.np, 2);
    assert_memory_equal(&L.pols[0], &b, sizeof b); /* by name */
    assert_memory_equal(&L.pols[1], &a, sizeof a);
    store_close(st);
}

/* ---- twins -------------------------------------------------------------- */

static struct {
    store_status st;
    char json[256], etag[32], module[32];
    int64_t v, dv, rv;
    int loaded;
} T;

static void twin_got(net_loop *loop, void *arg, store_status st, const store_twin *t,
                     const char *err)
{
    (void)loop;
    (void)arg;
    (void)err;
    T.st = st;
    if (t) {
        snprintf(T.json, sizeof T.json, "%s", t->json);
        snprintf(T.etag, sizeof T.etag, "%s", t->etag);
        snprintf(T.module, sizeof T.module, "%s", t->module_id);
        T.v = t->version;
        T.dv = t->desired_version;
        T.rv = t->reported_version;
    }
}

static void twin_loaded(void *arg, const store_twin *t)
{
    (void)arg;
    (void)t;
    T.loaded++;
}

static void test_twin_round_trip(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    const char *doc = "{\"deviceId\":\"d\",\"properties\":{\"desired\":{\"a\":1}}}";
    store_twin t = {.device_id = "d", .module_id = "", .json = doc, .etag = "AAA",
                    .version = 3, .desired_version = 2, .reported_version = 1};
    store_twin tm = t;
    tm.module_id = "m";
    tm.json = "{}";
    store_twin_put(st, &t, NULL, NULL, NULL);
    store_twin_put(st, &tm, NULL, NULL, NULL);
    st = reopen(st);
    memset(&T, 0, sizeof T);
    store_twin_get(st, "d", NULL, NULL, twin_got, NULL);
    store_flush(st);
    assert_int_equal(T.st, STORE_OK);
    assert_string_equal(T.json, doc);
    assert_string_equal(T.etag, "AAA");
    assert_string_equal(T.module, "");
    assert_int_equal(T.v, 3);
    assert_int_equal(T.dv, 2);
    assert_int_equal(T.rv, 1);
    store_twin_get(st, "d", "m", NULL, twin_got, NULL);
    store_flush(st);
    assert_string_equal(T.json, "{}");
    t.version = 4;
    t.etag = "BBB";
    store_twin_put(st, &t, NULL, NULL, NULL);
    store_twin_get(st, "d", "", NULL, twin_got, NULL);
    store_flush(st);
    assert_int_equal(T.v, 4);
    assert_string_equal(T.etag, "BBB");
    store_twin_get(st, "nobody", NULL, NULL, twin_got, NULL);
    store_flush(st);
    assert_int_equal(T.st, STORE_NOT_FOUND);
    assert_true(store_load_twins(st, twin_loaded, NULL));
    assert_int_equal(T.loaded, 2);
    store_close(st);
}

/* Statuses of the twin writes of twin_batch, by index. */
static store_status put_status[8];

static void twin_put_done(net_loop *loop, void *arg, store_status st, const char *err)
{
    (void)loop;
    (void)err;
    put_status[(uintptr_t)arg] = st;
}

/* Queues twin writes while the store thread is held, so that they run as
 * one batch: d0..d4 at versions base+0..4, a checkpoint (another kind of
 * request in the same commit), d5, then d0 again at base+7; waits. */
static void twin_batch(store *st, int64_t base, bool fail_commit)
{
    memset(put_status, 0xff, sizeof put_status);
    store_test_hold(st, true);
    if (fail_commit)
        store_test_fail_commits(st, 1);
    for (uintptr_t i = 0; i < 7; i++) {
        char id[16];
        snprintf(id, sizeof id, "d%u", (unsigned)(i == 6 ? 0 : i));
        store_twin t = {.device_id = id, .module_id = "", .json = "{}", .etag = "E",
                        .version = base + (i == 6 ? 7 : (int64_t)i)};
        store_twin_put(st, &t, NULL, twin_put_done, (void *)i);
        if (i == 4)
            store_checkpoint_set(st, "g", 0, 1, NULL, NULL, NULL);
    }
    store_test_hold(st, false);
    store_flush(st);
}

static int64_t stored_version(store *st, const char *id)
{
    store_twin_get(st, id, "", NULL, twin_got, NULL);
    store_flush(st);
    assert_int_equal(T.st, STORE_OK);
    return T.v;
}

/* Twin writes of one batch (one group commit) leave what they would one
 * by one: every write answered, the later write of a twin wins, and a
 * failed commit answers every write with an error and stores none. */
static void test_twin_batched_writes(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    twin_batch(st, 10, false);
    for (int i = 0; i < 7; i++)
        assert_int_equal(put_status[i], STORE_OK);
    twin_batch(st, 20, true);
    for (int i = 0; i < 7; i++)
        assert_int_equal(put_status[i], STORE_ERROR);
    st = reopen(st);
    assert_int_equal(stored_version(st, "d0"), 17);
    for (int i = 1; i < 6; i++) {
        char id[16];
        snprintf(id, sizeof id, "d%d", i);
        assert_int_equal(stored_version(st, id), 10 + i);
    }
    store_close(st);
}

/* Makes every insert into `table` whose row satisfies `when` fail after
 * the row went in (an AFTER INSERT trigger aborts the statement), in the
 * database of testutil_dir, which no store may have open. */
static void fail_inserts_into(const char *table, const char *when)
{
    char path[128], sql[256];
    snprintf(path, sizeof path, "%s/iothubd.db", testutil_dir);
    snprintf(sql, sizeof sql,
             "CREATE TRIGGER fail_bad AFTER INSERT ON %s WHEN %s"
             " BEGIN SELECT RAISE(ABORT, 'injected'); END",
             table, when);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* A twin write runs without a savepoint of its own (no_savepoint): when
 * its statement fails after the REPLACE has deleted the old row (an
 * AFTER INSERT trigger aborts it here), SQLite undoes the statement, the
 * old row stays, and the writes around it in the batch still commit. */
static void test_twin_write_failing_mid_statement(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    store_twin bad = {.device_id = "bad", .module_id = "", .json = "{}", .etag = "E", .version = 5};
    store_twin_put(st, &bad, NULL, twin_put_done, (void *)0);
    store_flush(st);
    assert_int_equal(put_status[0], STORE_OK);
    store_close(st);
    fail_inserts_into("twins", "NEW.device_id = 'bad' AND NEW.version = 6");

    st = testutil_open(testutil_dir, NULL);
    memset(put_status, 0xff, sizeof put_status);
    store_test_hold(st, true);
    const char *ids[] = {"d0", "bad", "d2"};
    for (uintptr_t i = 0; i < 3; i++) {
        store_twin t = {.device_id = ids[i], .module_id = "", .json = "{}", .etag = "E",
                        .version = 6};
        store_twin_put(st, &t, NULL, twin_put_done, (void *)i);
    }
    store_test_hold(st, false);
    store_flush(st);
    assert_int_equal(put_status[0], STORE_OK);
    assert_int_equal(put_status[1], STORE_ERROR);
    assert_int_equal(put_status[2], STORE_OK);
    st = reopen(st);
    assert_int_equal(stored_version(st, "d0"), 6);
    assert_int_equal(stored_version(st, "bad"), 5);
    assert_int_equal(stored_version(st, "d2"), 6);
    store_close(st);
}

/* ---- C2D ---------------------------------------------------------------- */

static struct {
    store_status st;
    uint64_t seq[8];
    int nseq;
    uint64_t count;
    store_c2d_msg got[8];
    char bodies[8][16];
    size_t n;
    int loaded;
} C;

static void c2d_enqueued(net_loop *loop, void *arg, store_status st, uint64_t seq, int64_t t,
                         const char *err)
{
    (void)loop;
    (void)arg;
    (void)err;
    C.st = st;
    if (st == STORE_OK) {
        (void)t;
        C.seq[C.nseq++] = seq;
    }
}

static void c2d_listed(net_loop *loop, void *arg, store_status st, const store_c2d_msg *msgs,
                       size_t n, const char *err)
{
    (void)loop;
    (void)arg;
    (void)err;
    C.st = st;
    C.n = n;
    for (size_t i = 0; i < n && i < 8; i++) {
        C.got[i] = msgs[i];
        snprintf(C.bodies[i], sizeof C.bodies[i], "%.*s", (int)msgs[i].body_len,
                 (const char *)msgs[i].body);
        C.got[i].body = C.got[i].props = NULL; /* not valid after the callback */
        C.got[i].device_id = NULL;
    }
}

static void counted(net_loop *loop, void *arg, store_status st, uint64_t n, const char *err)
{
    (void)loop;
    (void)arg;
    (void)err;
    C.st = st;
    C.count = n;
}

static void c2d_loaded(void *arg, const store_c2d_msg *m)
{
    (void)arg;
    (void)m;
    C.loaded++;
}

static void test_c2d_queue(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    memset(&C, 0, sizeof C);
    for (int i = 0; i < 4; i++) {
        char body[16];
        snprintf(body, sizeof body, "msg%d", i);
        store_c2d_msg m = {.device_id = "dev", .expiry_ms = 1000 + i, .props = "\x01\x02",
                           .props_len = 2, .body = body, .body_len = strlen(body)};
        store_c2d_enqueue(st, &m, 3, NULL, c2d_enqueued, NULL);
        store_flush(st);
        assert_int_equal(C.st, i < 3 ? STORE_OK : STORE_FULL);
    }
    assert_int_equal(C.nseq, 3);
    assert_true(C.seq[0] < C.seq[1] && C.seq[1] < C.seq[2]);
    store_status s = STORE_ERROR;
    store_c2d_update(st, "dev", C.seq[1], 2, 99999, NULL, testutil_record, &s);
    store_flush(st);
    assert_int_equal(s, STORE_OK);
    store_c2d_update(st, "dev", 424242, 2, 0, NULL, testutil_record, &s);
    store_c2d_delete(st, "dev", C.seq[0], NULL, NULL, NULL);
    st = reopen(st);
    assert_int_equal(s, STORE_NOT_FOUND);
    store_c2d_list(st, "dev", NULL, c2d_listed, NULL);
    store_flush(st);
    assert_int_equal(C.st, STORE_OK);
    assert_int_equal(C.n, 2);
    assert_int_equal(C.got[0].seq, C.seq[1]);
    assert_int_equal(C.got[0].delivery_count, 2);
    assert_int_equal(C.got[0].lock_until_ms, 99999);
    assert_int_equal(C.got[0].expiry_ms, 1001);
    assert_int_equal(C.got[0].props_len, 2);
    assert_string_equal(C.bodies[0], "msg1");
    assert_string_equal(C.bodies[1], "msg2");
    assert_true(store_load_c2d(st, c2d_loaded, NULL));
    assert_int_equal(C.loaded, 2);
    store_c2d_purge(st, "dev", NULL, counted, NULL);
    store_flush(st);
    assert_int_equal(C.count, 2);
    /* sequence numbers are never reused */
    store_c2d_msg m = {.device_id = "dev", .body = "z", .body_len = 1};
    store_c2d_enqueue(st, &m, 3, NULL, c2d_enqueued, NULL);
    store_flush(st);
    assert_true(C.seq[3] > C.seq[2]);
    store_close(st);
}

/* A C2D enqueue runs without a savepoint (no_savepoint): when its insert
 * fails after it took its number from the counter (a trigger aborts it here),
 * the request fails alone, its neighbours in the batch commit, and the
 * number it took is skipped, never reused. */
static store_status batch_status[3];
static uint64_t batch_seq[3];

static void c2d_enqueued_at(net_loop *loop, void *arg, store_status st, uint64_t seq, int64_t t,
                            const char *err)
{
    (void)loop;
    (void)t;
    (void)err;
    batch_status[(uintptr_t)arg] = st;
    batch_seq[(uintptr_t)arg] = seq;
}

static void test_c2d_enqueue_failing_after_sequence_bump(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    store_close(st);
    fail_inserts_into("c2d", "NEW.body = CAST('bad' AS BLOB)");

    st = testutil_open(testutil_dir, NULL);
    store_test_hold(st, true);
    const char *bodies[] = {"a", "bad", "c"};
    for (uintptr_t i = 0; i < 3; i++) {
        store_c2d_msg m = {.device_id = "dev", .body = bodies[i], .body_len = strlen(bodies[i])};
        store_c2d_enqueue(st, &m, 50, NULL, c2d_enqueued_at, (void *)i);
    }
    store_test_hold(st, false);
    store_flush(st);
    assert_int_equal(batch_status[0], STORE_OK);
    assert_int_equal(batch_status[1], STORE_ERROR);
    assert_int_equal(batch_status[2], STORE_OK);
    assert_int_equal(batch_seq[2], batch_seq[0] + 2); /* the failed one's number is skipped */

    st = reopen(st);
    memset(&C, 0, sizeof C);
    store_c2d_list(st, "dev", NULL, c2d_listed, NULL);
    store_flush(st);
    assert_int_equal(C.n, 2);
    assert_string_equal(C.bodies[0], "a");
    assert_string_equal(C.bodies[1], "c");
    store_c2d_msg m = {.device_id = "dev", .body = "d", .body_len = 1};
    store_c2d_enqueue(st, &m, 50, NULL, c2d_enqueued, NULL);
    store_flush(st);
    assert_int_equal(C.st, STORE_OK);
    assert_true(C.seq[0] > batch_seq[2]);
    store_close(st);
}

/* The store thread keeps the counter in memory and writes it once per
 * batch (c2d.c). Numbers handed out in a batch that was rolled back may be
 * skipped; after a restart every number is above every committed one. */
static void test_c2d_numbers_across_batches_and_restarts(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    memset(&C, 0, sizeof C);
    store_c2d_msg m = {.device_id = "dev", .body = "x", .body_len = 1};
    store_c2d_enqueue(st, &m, 50, NULL, c2d_enqueued, NULL); /* C.seq[0] */
    store_flush(st);
    store_test_fail_commits(st, 1);
    store_c2d_enqueue(st, &m, 50, NULL, c2d_enqueued, NULL);
    store_flush(st);
    assert_int_equal(C.st, STORE_ERROR);
    store_test_hold(st, true); /* two in one batch: C.seq[1], C.seq[2] */
    store_c2d_enqueue(st, &m, 50, NULL, c2d_enqueued, NULL);
    store_c2d_enqueue(st, &m, 50, NULL, c2d_enqueued, NULL);
    store_test_hold(st, false);
    store_flush(st);
    assert_int_equal(C.nseq, 3);
    assert_true(C.seq[0] < C.seq[1] && C.seq[1] + 1 == C.seq[2]);
    for (int restart = 0; restart < 2; restart++) {
        st = reopen(st);
        store_c2d_enqueue(st, &m, 50, NULL, c2d_enqueued, NULL);
        store_flush(st);
        assert_int_equal(C.nseq, 4 + restart);
        assert_true(C.seq[C.nseq - 1] > C.seq[C.nseq - 2]);
    }
    store_c2d_list(st, "dev", NULL, c2d_listed, NULL);
    store_flush(st);
    assert_int_equal(C.n, 5); /* the rolled-back one is not there */
    for (size_t i = 0; i < C.n; i++)
        assert_int_equal(C.got[i].seq, C.seq[i]);
    store_close(st);
}

/* ---- sessions ----------------------------------------------------------- */

static struct {
    char ids[8][32];
    int64_t expiry[8];
    char subs[8][32];
    int n;
    struct {
        char id[32];
        uint64_t pid;
        uint8_t state;
        char msg[32];
    } msgs[8];
    int nm;
} S;

static void session_loaded(void *arg, const store_session *s)
{
    (void)arg;
    snprintf(S.ids[S.n], 32, "%s", s->client_id);
    snprintf(S.subs[S.n], 32, "%.*s", (int)s->subs_len, (const char *)s->subs);
    S.expiry[S.n++] = s->expiry_ms;
}

static void msg_loaded(void *arg, const store_session_msg *m)
{
    (void)arg;
    snprintf(S.msgs[S.nm].id, 32, "%s", m->client_id);
    snprintf(S.msgs[S.nm].msg, 32, "%.*s", (int)m->msg_len, (const char *)m->msg);
    S.msgs[S.nm].pid = m->seq;
    S.msgs[S.nm++].state = m->state;
}

static void test_sessions(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    store_session_put(st, "a", 100, "subsA", 5, NULL, NULL, NULL);
    store_session_put(st, "b", 200, "subsB", 5, NULL, NULL, NULL);
    store_session_put(st, "a", 150, "subsA2", 6, NULL, NULL, NULL); /* replace */
    store_session_msg_put(st, "a", 1, 0, "m1", 2, NULL, NULL, NULL);
    store_session_msg_put(st, "a", 2, 0, "m2", 2, NULL, NULL, NULL);
    store_session_msg_put(st, "a", 2, 1, "m2", 2, NULL, NULL, NULL); /* PUBREC seen */
    store_session_msg_put(st, "b", 5000000000ull, 0, "mb", 2, NULL, NULL, NULL);
    store_status s = STORE_ERROR;
    store_session_msg_delete(st, "a", 1, NULL, testutil_record, &s);
    st = reopen(st);
    assert_int_equal(s, STORE_OK);
    memset(&S, 0, sizeof S);
    assert_true(store_load_sessions(st, session_loaded, msg_loaded, NULL));
    assert_int_equal(S.n, 2);
    assert_string_equal(S.ids[0], "a");
    assert_int_equal(S.expiry[0], 150);
    assert_string_equal(S.subs[0], "subsA2");
    assert_int_equal(S.nm, 2);
    assert_int_equal(S.msgs[0].pid, 2);
    assert_int_equal(S.msgs[0].state, 1);
    assert_string_equal(S.msgs[1].id, "b");
    assert_true(S.msgs[1].pid == 5000000000ull); /* keys are 64-bit */
    /* deleting a session removes its messages */
    store_session_delete(st, "b", NULL, testutil_record, &s);
    store_flush(st);
    assert_int_equal(s, STORE_OK);
    store_session_delete(st, "b", NULL, testutil_record, &s);
    store_session_msg_delete(st, "a", 9, NULL, NULL, NULL);
    store_flush(st);
    assert_int_equal(s, STORE_NOT_FOUND);
    memset(&S, 0, sizeof S);
    assert_true(store_load_sessions(st, session_loaded, msg_loaded, NULL));
    assert_int_equal(S.n, 1);
    assert_int_equal(S.nm, 1);
    store_close(st);
}

int main(void)
{
    alarm(60);
    log_set_level(LOG_WARN);
    const struct CMUnitTest tests[] = {
        TESTUTIL_IN_FRESH_DIR(test_identity_round_trip),
        TESTUTIL_IN_FRESH_DIR(test_delete_device_cascades),
        TESTUTIL_IN_FRESH_DIR(test_policy_round_trip),
        TESTUTIL_IN_FRESH_DIR(test_twin_round_trip),
        TESTUTIL_IN_FRESH_DIR(test_twin_batched_writes),
        TESTUTIL_IN_FRESH_DIR(test_twin_write_failing_mid_statement),
        TESTUTIL_IN_FRESH_DIR(test_c2d_queue),
        TESTUTIL_IN_FRESH_DIR(test_c2d_enqueue_failing_after_sequence_bump),
        TESTUTIL_IN_FRESH_DIR(test_c2d_numbers_across_batches_and_restarts),
        TESTUTIL_IN_FRESH_DIR(test_sessions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_store_telemetry.c — the telemetry log: per-partition sequence
 * numbers, paging, bounds, retention by time, by size and periodic,
 * sequence numbers surviving retention and reopen, appends executed
 * together in one batch (numbering, a bad one failing alone, byte
 * counters), enqueued times that never go back within a partition,
 * retention across partitions in time order, the v3 -> v4 migration,
 * consumer-group checkpoints.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>

#include "store/internal.h"
#include "store_testutil.h"
#include "util/log.h"

/* Results, written by callbacks on the store thread, read after a flush. */
static struct {
    store_status st;
    uint64_t seq;
    int64_t enqueued;
    size_t n;
    uint64_t seqs[64];
    char bodies[64][16];
    char props[64][16];
    uint64_t first, next;
    uint64_t count;
} R;

static void appended(net_loop *loop, void *arg, store_status st, uint64_t seq, int64_t t,
                     const char *err)
{
    (void)loop;
    (void)arg;
    (void)err;
    R.st = st;
    R.seq = seq;
    R.enqueued = t;
}

static void got_events(net_loop *loop, void *arg, store_status st, const store_read_result *res,
                       const char *err)
{
    (void)loop;
    (void)arg;
    (void)err;
    R.st = st;
    R.n = 0;
    if (!res)
        return;
    R.first = res->first_seq;
    R.next = res->next_seq;
    for (size_t i = 0; i < res->n && i < 64; i++) {
        const store_event *e = &res->events[i];
        R.seqs[i] = e->seq;
        snprintf(R.bodies[i], 16, "%.*s", (int)e->body_len, (const char *)e->body);
        snprintf(R.props[i], 16, "%.*s", (int)e->props_len, (const char *)e->props);
        R.n++;
    }
}

static void counted(net_loop *loop, void *arg, store_status st, uint64_t n, const char *err)
{
    (void)loop;
    (void)arg;
    (void)err;
    R.st = st;
    R.count = n;
}

static uint64_t append(store *st, unsigned part, int64_t t, const char *body)
{
    char props[16];
    snprintf(props, sizeof props, "p-%s", body);
    store_telemetry_append(st, part, t, props, strlen(props), body, strlen(body), NULL,
                           appended, NULL);
    store_flush(st);
    assert_int_equal(R.st, STORE_OK);
    return R.seq;
}

static void read_part(store *st, unsigned part, uint64_t from, size_t max)
{
    memset(&R, 0, sizeof R);
    store_telemetry_read(st, part, from, max, NULL, got_events, NULL);
    store_flush(st);
}

static void test_sequence_per_partition(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    /* interleaved appends: each partition counts on its own from 1 */
    static const struct {
        unsigned part;
        uint64_t want;
    } steps[] = {{0, 1}, {1, 1}, {0, 2}, {3, 1}, {0, 3}, {1, 2}};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        char body[16];
        snprintf(body, sizeof body, "b%zu", i);
        assert_int_equal(append(st, steps[i].part, 0, body), steps[i].want);
        assert_true(R.enqueued > 0); /* stamped by the store */
    }
    read_part(st, 0, 0, 100);
    assert_int_equal(R.st, STORE_OK);
    assert_int_equal(R.n, 3);
    assert_int_equal(R.first, 1);
    assert_int_equal(R.next, 4);
    assert_string_equal(R.bodies[1], "b2");
    assert_string_equal(R.props[1], "p-b2");
    read_part(st, 2, 1, 100);
    assert_int_equal(R.n, 0);
    assert_int_equal(R.first, 1);
    assert_int_equal(R.next, 1);
    /* out of range */
    store_telemetry_append(st, 4, 0, "", 0, "", 0, NULL, appended, NULL);
    store_flush(st);
    assert_int_equal(R.st, STORE_INVALID);
    read_part(st, 17, 1, 1);
    assert_int_equal(R.st, STORE_INVALID);
    /* numbering survives a reopen */
    store_close(st);
    st = testutil_open(testutil_dir, NULL);
    assert_int_equal(append(st, 0, 0, "again"), 4);
    store_close(st);
}

static void test_paging(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    for (int i = 0; i < 25; i++) {
        char body[16];
        snprintf(body, sizeof body, "e%d", i);
        append(st, 2, 1000 + i, body);
    }
    uint64_t from = 1;
    size_t total = 0;
    int pages = 0;
    for (;;) {
        read_part(st, 2, from, 10);
        assert_int_equal(R.st, STORE_OK);
        if (R.n == 0)
            break;
        for (size_t i = 0; i < R.n; i++) {
            assert_int_equal(R.seqs[i], from + i);
            char want[8];
            snprintf(want, sizeof want, "e%d", (int)(from + i - 1));
            assert_string_equal(R.bodies[i], want);
        }
        total += R.n;
        from = R.seqs[R.n - 1] + 1;
        pages++;
    }
    assert_int_equal(total, 25);
    assert_int_equal(pages, 3);
    assert_int_equal(from, R.next);
    store_close(st);
}

static void test_retention_by_time(void **state)
{
    (void)state;
    store_config cfg = {.partitions = 2, .retention_ms = 1000};
    store *st = testutil_open(testutil_dir, &cfg);
    for (int i = 0; i < 10; i++) {
        append(st, 0, 10000 + i * 100, "x"); /* 10000 .. 10900 */
        append(st, 1, 10000 + i * 100, "y");
    }
    store_telemetry_retain(st, 11500, NULL, counted, NULL); /* keeps >= 10500 */
    store_flush(st);
    assert_int_equal(R.st, STORE_OK);
    assert_int_equal(R.count, 10);
    read_part(st, 0, 0, 100);
    assert_int_equal(R.n, 5);
    assert_int_equal(R.first, 6);
    assert_int_equal(R.seqs[0], 6);
    /* emptied partitions keep their numbering */
    store_telemetry_retain(st, 99999, NULL, counted, NULL);
    store_flush(st);
    assert_int_equal(R.count, 10);
    read_part(st, 1, 0, 100);
    assert_int_equal(R.n, 0);
    assert_int_equal(R.first, 11);
    assert_int_equal(append(st, 1, 0, "z"), 11);
    store_stats stats;
    store_get_stats(st, &stats);
    assert_int_equal(stats.telemetry_deleted, 20);
    store_close(st);
}

static void test_retention_by_size(void **state)
{
    (void)state;
    /* each event: props "p-bN" (4) + body "bN" (2) = 6 bytes */
    store_config cfg = {.partitions = 3, .retention_bytes = 60};
    store *st = testutil_open(testutil_dir, &cfg);
    for (int i = 0; i < 30; i++) {
        char body[16];
        snprintf(body, sizeof body, "b%d", i % 10);
        append(st, (unsigned)i % 3, 1000 + i, body);
    }
    store_telemetry_retain(st, 0, NULL, counted, NULL);
    store_flush(st);
    assert_int_equal(R.count, 20); /* 180 bytes -> 60: the 20 oldest go */
    size_t left = 0;
    for (unsigned p = 0; p < 3; p++) {
        read_part(st, p, 0, 100);
        left += R.n;
        for (size_t i = 0; i < R.n; i++) /* only the newest remain */
            assert_true(R.seqs[i] > 6);
    }
    assert_int_equal(left, 10);
    /* counters stay exact: a second pass removes nothing */
    store_telemetry_retain(st, 0, NULL, counted, NULL);
    store_flush(st);
    assert_int_equal(R.count, 0);
    store_close(st);
}

static void test_periodic_retention(void **state)
{
    (void)state;
    store_config cfg = {.partitions = 1, .retention_ms = 1000, .retention_interval_ms = 20};
    store *st = testutil_open(testutil_dir, &cfg);
    append(st, 0, 1, "ancient");
    append(st, 0, 0, "now");
    store_stats stats = {0};
    for (int i = 0; i < 200 && (stats.telemetry_deleted == 0 || !stats.retention_runs); i++) {
        usleep(10000);
        store_get_stats(st, &stats);
    }
    assert_true(stats.retention_runs > 0);
    assert_int_equal(stats.telemetry_deleted, 1);
    read_part(st, 0, 0, 10);
    assert_int_equal(R.n, 1);
    assert_string_equal(R.bodies[0], "now");
    store_close(st);
}

/* Per-request outcomes of appends queued together (arg = index). */
static struct {
    store_status st[64];
    uint64_t seq[64];
    int64_t t[64];
} B;

static void appended_at(net_loop *loop, void *arg, store_status st, uint64_t seq, int64_t t,
                        const char *err)
{
    (void)loop;
    (void)err;
    size_t i = (size_t)(uintptr_t)arg;
    B.st[i] = st;
    B.seq[i] = seq;
    B.t[i] = t;
}

/* Queues appends 0..n-1 (partition parts[i], body "kN") while the store
 * thread is held, so that they run as one batch, then waits for it. */
static void append_batch(store *st, const unsigned *parts, size_t n, bool fail_commit)
{
    memset(&B, 0, sizeof B);
    store_test_hold(st, true);
    if (fail_commit)
        store_test_fail_commits(st, 1);
    for (size_t i = 0; i < n; i++) {
        char body[32], props[32];
        snprintf(body, sizeof body, "k%zu", i);
        snprintf(props, sizeof props, "p-k%zu", i);
        store_telemetry_append(st, parts[i], 0, props, strlen(props), body, strlen(body), NULL,
                               appended_at, (void *)(uintptr_t)i);
        if (i == n / 2) /* another kind of request splits the run in two */
            store_checkpoint_set(st, "g", 0, i, NULL, NULL, NULL);
    }
    store_test_hold(st, false);
    store_flush(st);
}

/* Appends executed together (store_req.exec_run) get exactly the numbers,
 * rows and byte counts they would one by one; a bad one in a run fails
 * alone; a failed commit consumes no numbers. */
static void test_batched_appends(void **state)
{
    (void)state;
    store_config cfg = {.partitions = 3};
    store *st = testutil_open(testutil_dir, &cfg);
    unsigned parts[30];
    for (size_t i = 0; i < 30; i++)
        parts[i] = (unsigned)(i * 7 % 3); /* 0 1 2 0 1 2 ... */
    append_batch(st, parts, 30, true); /* commit fails: nothing numbered */
    for (size_t i = 0; i < 30; i++)
        assert_int_equal(B.st[i], STORE_ERROR);
    parts[11] = 9; /* out of range, in the middle of the first run */
    append_batch(st, parts, 30, false);
    uint64_t want[3] = {1, 1, 1};
    for (size_t i = 0; i < 30; i++) {
        if (i == 11) {
            assert_int_equal(B.st[i], STORE_INVALID);
            continue;
        }
        assert_int_equal(B.st[i], STORE_OK);
        assert_int_equal(B.seq[i], want[parts[i]]++);
    }
    assert_int_equal(want[0] + want[1] + want[2] - 3, 29);
    for (unsigned p = 0; p < 3; p++) { /* rows in queue order, nothing twice */
        read_part(st, p, 0, 100);
        assert_int_equal(R.n, want[p] - 1);
        assert_int_equal(R.next, want[p]);
        size_t k = 0;
        for (size_t i = 0; i < 30; i++) {
            if (parts[i] != p)
                continue;
            char body[32];
            snprintf(body, sizeof body, "k%zu", i);
            assert_int_equal(R.seqs[k], k + 1);
            assert_string_equal(R.bodies[k++], body);
        }
    }
    store_close(st);
    /* the byte counters are exact: "p-kN"+"kN" is 6 bytes for N < 10 and 8
     * after, 10*6 + 19*8 = 212 bytes; a limit of 100 removes the oldest
     * events by enqueued time (all equal here) until <= 100 remain */
    cfg.retention_bytes = 100;
    st = testutil_open(testutil_dir, &cfg);
    store_telemetry_retain(st, 0, NULL, counted, NULL);
    store_flush(st);
    assert_int_equal(R.st, STORE_OK);
    uint64_t removed = R.count, left = 0, bytes = 0;
    for (unsigned p = 0; p < 3; p++) {
        read_part(st, p, 0, 100);
        left += R.n;
        for (size_t i = 0; i < R.n; i++)
            bytes += strlen(R.bodies[i]) + strlen(R.props[i]);
    }
    assert_int_equal(left + removed, 29);
    assert_true(removed > 0);
    assert_true(bytes <= 100 && bytes > 100 - 8);
    store_close(st);
}

/* An append never gets an enqueued time before its partition's previous
 * event (one by one and in a batch); other partitions are unaffected. */
static void test_enqueued_never_goes_back(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    append(st, 0, 5000, "a");
    assert_int_equal(R.enqueued, 5000);
    append(st, 0, 3000, "b"); /* the clock stepped back */
    assert_int_equal(R.enqueued, 5000);
    append(st, 1, 3000, "c");
    assert_int_equal(R.enqueued, 3000);
    memset(&B, 0, sizeof B);
    store_test_hold(st, true);
    static const int64_t ts[] = {4000, 6000, 5500, 2000};
    static const unsigned ps[] = {0, 0, 0, 1};
    for (size_t i = 0; i < 4; i++)
        store_telemetry_append(st, ps[i], ts[i], "p", 1, "b", 1, NULL, appended_at,
                               (void *)(uintptr_t)i);
    store_test_hold(st, false);
    store_flush(st);
    static const int64_t want[] = {5000, 6000, 6000, 3000};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(B.st[i], STORE_OK);
        assert_int_equal(B.t[i], want[i]);
    }
    store_close(st);
}

/* Retention picks the oldest events across partitions by enqueued time,
 * whichever partition they are in. */
static void test_retention_across_partitions(void **state)
{
    (void)state;
    /* each event: "p-xN" + "xN" = 6 bytes */
    store_config cfg = {.partitions = 2, .retention_bytes = 12};
    store *st = testutil_open(testutil_dir, &cfg);
    static const struct {
        unsigned part;
        int64_t t;
        const char *body;
    } evs[] = {{0, 10, "x0"}, {1, 20, "x1"}, {1, 30, "x2"},
               {0, 40, "x3"}, {0, 50, "x4"}, {1, 60, "x5"}};
    for (size_t i = 0; i < 6; i++)
        append(st, evs[i].part, evs[i].t, evs[i].body);
    store_telemetry_retain(st, 0, NULL, counted, NULL);
    store_flush(st);
    assert_int_equal(R.st, STORE_OK);
    assert_int_equal(R.count, 4); /* 10, 20, 30, 40 */
    read_part(st, 0, 0, 10);
    assert_int_equal(R.n, 1);
    assert_int_equal(R.first, 3);
    assert_string_equal(R.bodies[0], "x4");
    read_part(st, 1, 0, 10);
    assert_int_equal(R.n, 1);
    assert_int_equal(R.first, 3);
    assert_string_equal(R.bodies[0], "x5");
    store_close(st);

    /* by age: each partition loses only what is older than the cutoff */
    testutil_rmdir(testutil_dir);
    store_config age = {.partitions = 2, .retention_ms = 100};
    st = testutil_open(testutil_dir, &age);
    static const struct {
        unsigned part;
        int64_t t;
    } old[] = {{0, 10}, {1, 20}, {0, 40}, {1, 120}, {1, 130}, {0, 150}};
    for (size_t i = 0; i < 6; i++)
        append(st, old[i].part, old[i].t, "y");
    store_telemetry_retain(st, 200, NULL, counted, NULL); /* cutoff 100 */
    store_flush(st);
    assert_int_equal(R.count, 3);
    read_part(st, 0, 0, 10);
    assert_int_equal(R.first, 3);
    assert_int_equal(R.n, 1);
    read_part(st, 1, 0, 10);
    assert_int_equal(R.first, 2);
    assert_int_equal(R.n, 2);
    store_close(st);
}

/* A v3 log (with its time index, times not always increasing) migrates:
 * the index goes, each partition's newest time is recorded (v4), the
 * shared log becomes one table per partition, its events kept (v5), and
 * appends continue the numbering without going back in time. */
static void test_migration_from_v3_log(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/iothubd.db", testutil_dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char err[256];
    assert_true(store_migrate(db, 3, err, sizeof err));
    assert_int_equal(sqlite3_exec(db,
                                  "INSERT INTO telemetry VALUES(0,1,1000,4,'pp','bb'),"
                                  "(0,2,900,4,'pp','bb'),(1,1,500,4,'pp','bb');"
                                  "INSERT INTO telemetry_parts VALUES(0,3,8),(1,2,4);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);

    store *st = testutil_open(testutil_dir, NULL);
    store_flush(st); /* the store thread is idle: st->db may be read here */
    assert_int_equal(store_user_version(st->db), STORE_SCHEMA_VERSION);
    db = st->db;
    assert_int_equal(
        testutil_query_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'telemetry'"), 0);
    assert_int_equal(testutil_query_int(db, "SELECT count(*) FROM telemetry_0"), 2);
    assert_int_equal(testutil_query_int(db, "SELECT count(*) FROM telemetry_1"), 1);
    /* made at open */
    assert_int_equal(testutil_query_int(db, "SELECT count(*) FROM telemetry_3"), 0);
    assert_int_equal(testutil_query_int(db, "SELECT count(*) FROM sqlite_master"
                                            " WHERE name = 'telemetry_by_time'"),
                     0);
    assert_int_equal(testutil_query_int(db, "SELECT last_ms FROM telemetry_parts WHERE part = 0"),
                     1000);
    assert_int_equal(testutil_query_int(db, "SELECT last_ms FROM telemetry_parts WHERE part = 1"),
                     500);
    assert_int_equal(testutil_query_int(db, "SELECT last_ms FROM telemetry_parts WHERE part = 3"),
                     0);
    assert_int_equal(append(st, 0, 950, "n"), 3);
    assert_int_equal(R.enqueued, 1000);
    assert_int_equal(append(st, 1, 600, "m"), 2);
    assert_int_equal(R.enqueued, 600);
    read_part(st, 0, 0, 10);
    assert_int_equal(R.n, 3);
    assert_int_equal(R.first, 1);
    assert_int_equal(R.next, 4);
    read_part(st, 1, 0, 10);
    assert_int_equal(R.n, 2);
    assert_int_equal(R.first, 1);
    assert_int_equal(R.next, 3);
    store_close(st);
}

static void cp_got(net_loop *loop, void *arg, store_status st, uint64_t seq, const char *err)
{
    (void)loop;
    (void)arg;
    (void)err;
    R.st = st;
    R.seq = seq;
}

static void test_checkpoints(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    static const struct {
        const char *group;
        unsigned part;
        uint64_t seq;
    } sets[] = {{"$Default", 0, 5}, {"$Default", 1, 7}, {"analytics", 0, 2}, {"$Default", 0, 9}};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        store_checkpoint_set(st, sets[i].group, sets[i].part, sets[i].seq, NULL, NULL, NULL);
    store_close(st);
    st = testutil_open(testutil_dir, NULL);
    static const struct {
        const char *group;
        unsigned part;
        store_status st;
        uint64_t seq;
    } gets[] = {{"$Default", 0, STORE_OK, 9},
                {"$Default", 1, STORE_OK, 7},
                {"analytics", 0, STORE_OK, 2},
                {"analytics", 1, STORE_NOT_FOUND, 0},
                {"nobody", 0, STORE_NOT_FOUND, 0}};
    for (size_t i = 0; i < sizeof gets / sizeof gets[0]; i++) {
        memset(&R, 0, sizeof R);
        store_checkpoint_get(st, gets[i].group, gets[i].part, NULL, cp_got, NULL);
        store_flush(st);
        assert_int_equal(R.st, gets[i].st);
        assert_int_equal(R.seq, gets[i].seq);
    }
    store_close(st);
}

static void test_partition_of_is_stable(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    unsigned p = store_partition_of(st, "device-1");
    assert_true(p < store_partitions(st));
    assert_int_equal(store_partition_of(st, "device-1"), p);
    store_close(st);
}

int main(void)
{
    alarm(60);
    log_set_level(LOG_WARN);
    const struct CMUnitTest tests[] = {
        TESTUTIL_IN_FRESH_DIR(test_sequence_per_partition),
        TESTUTIL_IN_FRESH_DIR(test_paging),
        TESTUTIL_IN_FRESH_DIR(test_retention_by_time),
        TESTUTIL_IN_FRESH_DIR(test_retention_by_size),
        TESTUTIL_IN_FRESH_DIR(test_periodic_retention),
        TESTUTIL_IN_FRESH_DIR(test_batched_appends),
        TESTUTIL_IN_FRESH_DIR(test_enqueued_never_goes_back),
        TESTUTIL_IN_FRESH_DIR(test_retention_across_partitions),
        TESTUTIL_IN_FRESH_DIR(test_migration_from_v3_log),
        TESTUTIL_IN_FRESH_DIR(test_checkpoints),
        TESTUTIL_IN_FRESH_DIR(test_partition_of_is_stable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_store_core.c — the store's machinery: schema and migrations, group
 * commit (from two running event loops, and held batches), a failed commit
 * failing every request of its batch, request-level errors staying local,
 * durability pragmas, drain on close, reopen, the commit interval, one
 * server per directory, the database closed to other processes while open,
 * WAL checkpoints by the checkpoint thread keeping the WAL bounded, and
 * the writer catching up by itself when the checkpointer cannot.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "net/server.h"
#include "store/internal.h"
#include "store_testutil.h"
#include "util/log.h"
#include "util/time.h"

static void count_identity(void *arg, const hub_identity *id)
{
    (void)id;
    (*(size_t *)arg)++;
}

static size_t identity_count(store *st)
{
    size_t n = 0;
    assert_true(store_load_identities(st, count_identity, &n));
    return n;
}

/* ---- schema ------------------------------------------------------------- */

static void test_new_store_has_latest_schema(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    store_flush(st); /* the store thread is idle: st->db may be read here */
    assert_int_equal(store_user_version(st->db), STORE_SCHEMA_VERSION);
    assert_int_equal(store_partitions(st), 4);
    store_close(st);
}

static void test_migration_from_v1(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/iothubd.db", testutil_dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char err[256];
    assert_true(store_migrate(db, 1, err, sizeof err));
    assert_int_equal(store_user_version(db), 1);
    assert_int_equal(sqlite3_exec(db,
                                  "INSERT INTO identities VALUES('old','','g','e',1,'',0,"
                                  "'k1','k2','','',0,5)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);

    store *st = testutil_open(testutil_dir, NULL);
    store_flush(st);
    assert_int_equal(store_user_version(st->db), STORE_SCHEMA_VERSION);
    assert_int_equal(identity_count(st), 1);
    /* tables of later versions work */
    store_status s1 = STORE_ERROR, s2 = STORE_ERROR;
    store_twin t = {.device_id = "old", .module_id = "", .json = "{}", .etag = "x", .version = 1};
    store_twin_put(st, &t, NULL, testutil_record, &s1);
    store_session_put(st, "old", 0, "s", 1, NULL, testutil_record, &s2);
    store_flush(st);
    assert_int_equal(s1, STORE_OK);
    assert_int_equal(s2, STORE_OK);
    store_close(st);
}

static void test_newer_schema_refused(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/iothubd.db", testutil_dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version=99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    store_config cfg = {.dir = testutil_dir};
    char err[256] = "";
    assert_null(store_open(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "newer"));
}

/* ---- durability --------------------------------------------------------- */

static void test_durability_pragmas(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int synchronous;
    } cases[] = {{"fsync", 2}, {"os", 1}, {"none", 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        store_config cfg = {0};
        assert_true(store_durability_parse(cases[i].name, &cfg.durability));
        store *st = testutil_open(testutil_dir, &cfg);
        store_flush(st);
        sqlite3_stmt *s;
        sqlite3 *connections[] = {st->db, st->ck_db}; /* the checkpointer's syncs too */
        for (size_t c = 0; c < 2; c++) {
            assert_int_equal(sqlite3_prepare_v2(connections[c], "PRAGMA synchronous", -1, &s, NULL),
                             0);
            assert_int_equal(sqlite3_step(s), SQLITE_ROW);
            assert_int_equal(sqlite3_column_int(s, 0), cases[i].synchronous);
            sqlite3_finalize(s);
        }
        assert_int_equal(sqlite3_prepare_v2(st->db, "PRAGMA journal_mode", -1, &s, NULL), 0);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
        sqlite3_finalize(s);
        store_close(st);
    }
    store_durability d;
    assert_false(store_durability_parse("sometimes", &d));
}

/* ---- group commit from two loops ---------------------------------------- */

enum { PER_LOOP = 400 };

static struct {
    net_server *srv;
    store *st;
    int done[2];      /* touched by each loop's own thread */
    int wrong_loop[2];
    int errors[2];
    atomic_int finished;
} G;

static void put_done(net_loop *loop, void *arg, store_status st, const char *err)
{
    (void)err;
    unsigned li = (unsigned)(uintptr_t)arg;
    if (net_loop_index(loop) != li)
        G.wrong_loop[li]++;
    if (st != STORE_OK)
        G.errors[li]++;
    if (++G.done[li] == PER_LOOP && atomic_fetch_add(&G.finished, 1) == 1)
        net_server_stop(G.srv);
}

static void start_writes(net_loop *loop, void *arg)
{
    (void)arg;
    unsigned li = net_loop_index(loop);
    for (int i = 0; i < PER_LOOP; i++) {
        char name[32];
        snprintf(name, sizeof name, "loop%u-dev%d", li, i);
        hub_identity id = testutil_identity(name, NULL);
        store_put_identity(G.st, &id, loop, put_done, (void *)(uintptr_t)li);
    }
}

static void test_group_commit_two_loops(void **state)
{
    (void)state;
    memset(&G, 0, sizeof G);
    G.st = testutil_open(testutil_dir, NULL);
    char err[256];
    G.srv = net_server_new(2, err, sizeof err);
    assert_non_null(G.srv);
    net_server_set_loop_hooks(G.srv, start_writes, NULL, NULL);
    assert_int_equal(net_server_run(G.srv), 0);
    for (int li = 0; li < 2; li++) {
        assert_int_equal(G.done[li], PER_LOOP);
        assert_int_equal(G.errors[li], 0);
        assert_int_equal(G.wrong_loop[li], 0);
    }
    store_stats stats;
    store_get_stats(G.st, &stats);
    assert_true(stats.requests >= 2 * PER_LOOP);
    assert_true(stats.commits < 2 * PER_LOOP); /* batched */
    assert_int_equal(identity_count(G.st), 2 * PER_LOOP);
    store_close(G.st);
    net_server_free(G.srv);
}

/* Requests held back form exactly one batch and one commit. */
static void test_held_requests_one_commit(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    store_flush(st);
    store_stats before, after;
    store_get_stats(st, &before);
    store_status res[100];
    store_test_hold(st, true);
    for (int i = 0; i < 100; i++) {
        char name[16];
        snprintf(name, sizeof name, "d%d", i);
        hub_identity id = testutil_identity(name, NULL);
        res[i] = STORE_ERROR;
        store_put_identity(st, &id, NULL, testutil_record, &res[i]);
    }
    usleep(20000);
    store_get_stats(st, &after);
    assert_int_equal(after.commits, before.commits); /* nothing ran yet */
    store_test_hold(st, false);
    for (int i = 0; i < 5000; i++) { /* no flush yet: it could join the batch or not */
        store_get_stats(st, &after);
        if (after.requests - before.requests >= 100)
            break;
        usleep(1000);
    }
    assert_int_equal(after.requests - before.requests, 100);
    assert_int_equal(after.commits - before.commits, 1);
    store_flush(st);
    for (int i = 0; i < 100; i++)
        assert_int_equal(res[i], STORE_OK);
    store_close(st);
}

/* ---- failures ----------------------------------------------------------- */

static store_status read_status;
static void read_done(net_loop *loop, void *arg, store_status st, const store_read_result *res,
                      const char *err)
{
    (void)loop;
    (void)arg;
    (void)res;
    read_status = st;
}

static void test_failed_commit_fails_every_request(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    enum { N = 30 };
    store_status res[N];
    store_test_hold(st, true);
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "f%d", i);
        hub_identity id = testutil_identity(name, NULL);
        res[i] = STORE_OK;
        store_put_identity(st, &id, NULL, testutil_record, &res[i]);
    }
    read_status = STORE_OK;
    store_telemetry_read(st, 0, 1, 10, NULL, read_done, NULL);
    store_test_fail_commits(st, 1);
    store_test_hold(st, false);
    store_flush(st);
    for (int i = 0; i < N; i++)
        assert_int_equal(res[i], STORE_ERROR);
    assert_int_equal(read_status, STORE_ERROR);
    assert_int_equal(identity_count(st), 0); /* nothing was written */
    store_stats stats;
    store_get_stats(st, &stats);
    assert_int_equal(stats.failed_commits, 1);

    /* the next batch is fine again */
    store_status ok = STORE_ERROR;
    hub_identity id = testutil_identity("after", NULL);
    store_put_identity(st, &id, NULL, testutil_record, &ok);
    store_flush(st);
    assert_int_equal(ok, STORE_OK);
    assert_int_equal(identity_count(st), 1);
    store_close(st);
}

static void appended(net_loop *loop, void *arg, store_status st, uint64_t seq, int64_t t,
                     const char *err)
{
    (void)loop;
    (void)seq;
    (void)t;
    (void)err;
    *(store_status *)arg = st;
}

/* One bad request in a batch does not fail its neighbours. */
static void test_request_error_stays_local(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    store_status a = STORE_ERROR, bad = STORE_OK, b = STORE_ERROR;
    store_test_hold(st, true);
    hub_identity id = testutil_identity("x", NULL);
    store_put_identity(st, &id, NULL, testutil_record, &a);
    store_telemetry_append(st, 99, 0, "p", 1, "b", 1, NULL, appended, &bad);
    store_telemetry_append(st, 1, 0, "p", 1, "b", 1, NULL, appended, &b);
    store_test_hold(st, false);
    store_flush(st);
    assert_int_equal(a, STORE_OK);
    assert_int_equal(bad, STORE_INVALID);
    assert_int_equal(b, STORE_OK);
    store_close(st);
}

/* ---- close and reopen --------------------------------------------------- */

static void test_close_drains_queue(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    enum { N = 200 };
    store_status res[N];
    store_test_hold(st, true); /* close must still run them */
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "c%d", i);
        hub_identity id = testutil_identity(name, NULL);
        res[i] = STORE_ERROR;
        store_put_identity(st, &id, NULL, testutil_record, &res[i]);
    }
    store_close(st);
    for (int i = 0; i < N; i++)
        assert_int_equal(res[i], STORE_OK);
    st = testutil_open(testutil_dir, NULL);
    assert_int_equal(identity_count(st), N);
    store_close(st);
}

static void appended_count(net_loop *loop, void *arg, store_status status, uint64_t seq,
                           int64_t enqueued_ms, const char *err)
{
    (void)loop;
    (void)seq;
    (void)enqueued_ms;
    (void)err;
    if (status == STORE_OK)
        __atomic_add_fetch((int *)arg, 1, __ATOMIC_RELEASE); /* on the store thread */
}

/* Appends one telemetry event and waits for its completion; returns how
 * long that took, in ms. */
static uint64_t append_and_wait_ms(store *st)
{
    int done = 0;
    uint64_t t0 = time_mono_ns();
    store_telemetry_append(st, 0, 0, "p", 1, "b", 1, NULL, appended_count, &done);
    struct timespec tick = {0, 1000000};
    for (int i = 0; i < 10000 && !__atomic_load_n(&done, __ATOMIC_ACQUIRE); i++)
        nanosleep(&tick, NULL);
    assert_int_equal(done, 1);
    return (time_mono_ns() - t0) / 1000000u;
}

/* With a commit interval, a batch of telemetry appends starts no sooner
 * than the interval after the previous batch started (appends queued
 * meanwhile join it); any other request starts it at once (it is a round
 * trip someone waits on), and so does an append that finds the store idle
 * for longer than the interval. */
static void test_commit_interval_spaces_commits(void **state)
{
    (void)state;
    /* a long interval, so that the bounds below hold on a slow machine */
    store_config cfg = {.durability = STORE_DURABILITY_NONE, .commit_interval_us = 1000000};
    store *st = testutil_open(testutil_dir, &cfg);
    store_flush(st); /* the first batch: the interval now runs from here */
    int first = 0;
    store_telemetry_append(st, 0, 0, "p", 1, "b", 1, NULL, appended_count, &first);
    /* the second append arrives while the store sleeps out the interval
     * (it is not woken for it) and goes in the same batch */
    assert_true(append_and_wait_ms(st) >= 750); /* waits for the rest of the second */
    assert_int_equal(__atomic_load_n(&first, __ATOMIC_ACQUIRE), 1);

    int done = 0;
    uint64_t t0 = time_mono_ns();
    store_telemetry_append(st, 0, 0, "p", 1, "b", 1, NULL, appended_count, &done);
    store_flush(st); /* not batchable: the append goes with it, at once */
    assert_true(time_mono_ns() - t0 < 500u * 1000000u);
    assert_int_equal(__atomic_load_n(&done, __ATOMIC_ACQUIRE), 1);

    struct timespec pause = {1, 100 * 1000000};
    nanosleep(&pause, NULL); /* idle for longer than the interval */
    assert_true(append_and_wait_ms(st) < 500); /* starts at once */
    store_stats stats;
    store_get_stats(st, &stats);
    assert_int_equal(stats.commits, 4);
    store_close(st);
}

static void test_second_server_on_directory_refused(void **state)
{
    (void)state;
    store *st = testutil_open(testutil_dir, NULL);
    store_config cfg = {.dir = testutil_dir};
    char err[256] = "";
    assert_null(store_open(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "in use by another iothubd"));
    store_close(st);
    st = testutil_open(testutil_dir, NULL); /* released with the first */
    store_close(st);
}

/* What another process's reader gets from the database at `path`: run as
 * this binary's "--read-db PATH" (main), the exit status is SQLite's code
 * for a read of the schema version. */
static int read_db_in_this_process(const char *path)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "SELECT count(*) FROM meta", NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

static int read_db_in_another_process(const char *path)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* exec at once: the store's threads did not fork with us */
        execl("/proc/self/exe", "test_store_core", "--read-db", path, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* Both connections open on SQLite's "unix-excl" VFS (wal_gather.c): the
 * WAL index is in heap memory, so there is no -shm file and a stale one
 * is never read, and while the store is open its database is this
 * process's alone: another process's reader finds it locked. */
static void test_database_closed_to_other_processes(void **state)
{
    (void)state;
    char db[128], shm[136];
    snprintf(db, sizeof db, "%s/iothubd.db", testutil_dir);
    snprintf(shm, sizeof shm, "%s-shm", db);
    store *st = testutil_open(testutil_dir, NULL);
    store_close(st);
    assert_int_equal(read_db_in_another_process(db), SQLITE_OK);

    FILE *f = fopen(shm, "w"); /* as an older build could have left it */
    assert_non_null(f);
    fputs("not a WAL index", f);
    fclose(f);
    st = testutil_open(testutil_dir, NULL);
    assert_int_equal(identity_count(st), 0);
    assert_int_equal(read_db_in_another_process(db), SQLITE_BUSY);
    store_close(st);
    assert_int_equal(read_db_in_another_process(db), SQLITE_OK);
    unlink(shm);

    st = testutil_open(testutil_dir, NULL);
    assert_int_equal(identity_count(st), 0);
    struct stat sb;
    assert_int_equal(stat(shm, &sb), -1);
    store_close(st);
}

/* ---- WAL checkpoints ---------------------------------------------------- */

static void read_bounds(net_loop *loop, void *arg, store_status status,
                        const store_read_result *res, const char *err)
{
    (void)loop;
    (void)err;
    assert_int_equal(status, STORE_OK);
    store_read_result *out = arg;
    out->first_seq = res->first_seq;
    out->next_seq = res->next_seq;
}

static off_t wal_size(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/iothubd.db-wal", testutil_dir);
    struct stat sb;
    return stat(path, &sb) == 0 ? sb.st_size : 0;
}

enum { WAL_BATCHES = 256, WAL_PER_BATCH = 64, WAL_BODY = 4096 };

/* Writes 64 MiB of telemetry in batches of 256 KiB: far past the
 * checkpoint threshold (1 MB of WAL) and the size at which the writer
 * finishes the checkpoint itself (32 MB). With `settle`, waits after each
 * batch until the checkpointer has no pass running or due, so that how
 * passes and commits interleave does not depend on the machine's speed.
 * Returns the largest the WAL file grew. */
static off_t write_64_mib(store *st, bool settle)
{
    static char body[WAL_BODY];
    memset(body, 'x', sizeof body);
    int ok = 0;
    off_t max_wal = 0;
    for (int b = 0; b < WAL_BATCHES; b++) {
        store_test_hold(st, true);
        for (int i = 0; i < WAL_PER_BATCH; i++)
            store_telemetry_append(st, 0, 0, "", 0, body, sizeof body, NULL, appended_count, &ok);
        store_test_hold(st, false);
        store_flush(st);
        for (int i = 0; settle && store_test_checkpointer_busy(st) && i < 10000; i++)
            usleep(1000);
        if (wal_size() > max_wal)
            max_wal = wal_size();
    }
    assert_int_equal(ok, WAL_BATCHES * WAL_PER_BATCH);
    return max_wal;
}

/* Every event written is in the database after a reopen. */
static void assert_all_events_kept(const store_config *cfg)
{
    store *st = testutil_open(testutil_dir, cfg);
    store_read_result bounds = {0};
    store_telemetry_read(st, 0, 0, 1, NULL, read_bounds, &bounds);
    store_flush(st);
    assert_int_equal(bounds.next_seq - bounds.first_seq, WAL_BATCHES * WAL_PER_BATCH);
    store_close(st);
}

/* The checkpointer runs a pass per 1 MB of WAL, and a pass that copied
 * everything lets the next commit start the WAL over: it stays near 1 MB
 * instead of growing with what was written. */
static void test_checkpoints_keep_wal_bounded(void **state)
{
    (void)state;
    store_config cfg = {.durability = STORE_DURABILITY_NONE};
    store *st = testutil_open(testutil_dir, &cfg);
    off_t max_wal = write_64_mib(st, true);
    store_stats stats;
    store_get_stats(st, &stats);
    /* a pass per 1 MB of WAL (about 65 here), not one per commit (256),
     * nor one per 4 MB (about 16) */
    assert_true(stats.checkpoints < WAL_BATCHES / 2);
    assert_true(stats.checkpoints >= WAL_BATCHES / 8);
    assert_int_equal(stats.writer_checkpoints, 0);
    assert_true(max_wal < (off_t)4 << 20); /* 1 MB, the batch that crossed it */
    store_close(st);
    assert_all_events_kept(&cfg);
}

/* With no pass from the checkpointer (a checkpointer that cannot keep up),
 * the writer copies the WAL back itself once it holds 32 MB, and the WAL
 * starts over there. */
static void test_writer_catches_up_past_the_reset_size(void **state)
{
    (void)state;
    store_config cfg = {.durability = STORE_DURABILITY_NONE};
    store *st = testutil_open(testutil_dir, &cfg);
    store_test_hold_checkpointer(st, true);
    off_t max_wal = write_64_mib(st, false);
    store_stats stats;
    store_get_stats(st, &stats);
    assert_int_equal(stats.checkpoints, 0);
    assert_true(stats.writer_checkpoints >= 1);
    assert_true(max_wal < (off_t)33 << 20); /* 32 MiB and the batch that crossed it */
    store_test_hold_checkpointer(st, false);
    store_close(st);
    assert_all_events_kept(&cfg);
}

static void test_bad_directory(void **state)
{
    (void)state;
    store_config cfg = {.dir = "/proc/definitely/not/here"};
    char err[256] = "";
    assert_null(store_open(&cfg, err, sizeof err));
    assert_true(err[0] != '\0');
    cfg.dir = "";
    assert_null(store_open(&cfg, err, sizeof err));
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--read-db") == 0)
        return read_db_in_this_process(argv[2]);
    alarm(60);
    log_set_level(LOG_WARN);
    const struct CMUnitTest tests[] = {
        TESTUTIL_IN_FRESH_DIR(test_new_store_has_latest_schema),
        TESTUTIL_IN_FRESH_DIR(test_migration_from_v1),
        TESTUTIL_IN_FRESH_DIR(test_newer_schema_refused),
        TESTUTIL_IN_FRESH_DIR(test_durability_pragmas),
        TESTUTIL_IN_FRESH_DIR(test_group_commit_two_loops),
        TESTUTIL_IN_FRESH_DIR(test_held_requests_one_commit),
        TESTUTIL_IN_FRESH_DIR(test_failed_commit_fails_every_request),
        TESTUTIL_IN_FRESH_DIR(test_request_error_stays_local),
        TESTUTIL_IN_FRESH_DIR(test_close_drains_queue),
        TESTUTIL_IN_FRESH_DIR(test_commit_interval_spaces_commits),
        TESTUTIL_IN_FRESH_DIR(test_second_server_on_directory_refused),
        TESTUTIL_IN_FRESH_DIR(test_database_closed_to_other_processes),
        TESTUTIL_IN_FRESH_DIR(test_checkpoints_keep_wal_bounded),
        TESTUTIL_IN_FRESH_DIR(test_writer_catches_up_past_the_reset_size),
        cmocka_unit_test(test_bad_directory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_store_wal_gather.c — the VFS that gathers WAL writes
 * (store/wal_gather.c): a commit leaves nothing buffered with any
 * durability and goes down in a few writes; what it wrote is in the file
 * for a connection on the default VFS; pages SQLite spills mid-transaction
 * and reads back come back whole, and a rollback leaves none of them; a
 * database written through it passes SQLite's integrity check.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <sqlite3.h>
#include <stdatomic.h>

#include "store/internal.h"
#include "store_testutil.h"
#include "util/log.h"

static hub_identity make_identity(int i)
{
    char name[32];
    snprintf(name, sizeof name, "device-%05d", i);
    return testutil_identity(name, NULL);
}

/* One integer from `sql` on a connection of its own, on the default VFS
 * (as the checkpointer's is), so it reads the WAL from the file. */
static int64_t query_int_elsewhere(const char *sql)
{
    char path[128];
    snprintf(path, sizeof path, "%s/iothubd.db", testutil_dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    int64_t v = testutil_query_int(db, sql);
    sqlite3_close(db);
    return v;
}

static bool integrity_ok_elsewhere(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/iothubd.db", testutil_dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL), SQLITE_OK);
    bool ok = sqlite3_step(s) == SQLITE_ROW &&
              strcmp((const char *)sqlite3_column_text(s, 0), "ok") == 0;
    sqlite3_finalize(s);
    sqlite3_close(db);
    return ok;
}

/* Every durability: after each committed batch nothing is left in the
 * buffer, the rows are visible to another connection, and the frames went
 * down in far fewer writes than SQLite made (two per frame). */
static void test_commits_leave_nothing_buffered(void **state)
{
    (void)state;
    static const store_durability durabilities[] = {
        STORE_DURABILITY_FSYNC, STORE_DURABILITY_OS, STORE_DURABILITY_NONE};
    enum { BATCHES = 5, PER_BATCH = 300 };
    int64_t stored = 0; /* the directory is the same for all three */
    for (size_t d = 0; d < 3; d++) {
        store_config cfg = {.durability = durabilities[d]};
        store *st = testutil_open(testutil_dir, &cfg);
        store_flush(st);
        uint64_t in0, out0, in, out;
        int buffered;
        assert_true(store_wal_gather_counts(st->db, &in0, &out0, &buffered));
        for (int b = 0; b < BATCHES; b++) {
            store_status res[PER_BATCH];
            store_test_hold(st, true);
            for (int i = 0; i < PER_BATCH; i++) {
                hub_identity id = make_identity((int)d * 10000 + b * PER_BATCH + i);
                res[i] = STORE_ERROR;
                store_put_identity(st, &id, NULL, testutil_record, &res[i]);
            }
            store_test_hold(st, false);
            store_flush(st); /* the store thread is idle: st->db may be read */
            for (int i = 0; i < PER_BATCH; i++)
                assert_int_equal(res[i], STORE_OK);
            assert_true(store_wal_gather_counts(st->db, &in, &out, &buffered));
            assert_int_equal(buffered, 0);
            stored += PER_BATCH;
            assert_int_equal(query_int_elsewhere("SELECT count(*) FROM identities"), stored);
        }
        /* 300 identities are about ten pages a batch, two writes each from
         * SQLite; down they go as one write per batch (up to 15 frames) */
        assert_true(in - in0 >= 2 * 5 * BATCHES);
        assert_true(out - out0 <= 2 * BATCHES);
        store_close(st);
    }
    assert_true(integrity_ok_elsewhere());
}

/* Opens `path` through the gathering VFS in WAL mode with a cache of a
 * few pages, so that a large transaction spills pages into the WAL and
 * reads them back before it commits. */
static sqlite3 *open_small_cache(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                     store_wal_gather_vfs()),
                     SQLITE_OK);
    char err[256];
    assert_true(store_exec_sql(db, "PRAGMA journal_mode=WAL", err, sizeof err));
    /* no sync at commit either, which would send the buffer down too */
    assert_true(store_exec_sql(db, "PRAGMA synchronous=NORMAL", err, sizeof err));
    assert_true(store_exec_sql(db, "PRAGMA wal_autocheckpoint=0", err, sizeof err));
    assert_true(store_exec_sql(db, "PRAGMA cache_size=10", err, sizeof err));
    assert_true(store_exec_sql(db, "CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v BLOB)",
                               err, sizeof err));
    return db;
}

/* Pages spilled mid-transaction are read back whole (a read sends the
 * buffer down first), and so are frames overwritten in place; a
 * rolled-back transaction leaves none of its rows; a committed one is all
 * in the file for another connection, and after a reopen. */
static void test_spilled_pages_read_back_and_roll_back(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/iothubd.db", testutil_dir);
    sqlite3 *db = open_small_cache(path);
    char err[256];
    const char *fill = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                       "WHERE i < 3000) INSERT INTO t(k, v) SELECT i + %d, randomblob(700) FROM n";
    char sql[256];
    const int64_t sum = 3000 * 10000 + 3000 * 3001 / 2;

    assert_true(store_exec_sql(db, "BEGIN", err, sizeof err));
    snprintf(sql, sizeof sql, fill, 0);
    assert_true(store_exec_sql(db, sql, err, sizeof err));
    /* every row, read back through the spilled pages */
    assert_int_equal(testutil_query_int(db, "SELECT count(*) FROM t WHERE length(v) = 700"), 3000);
    assert_true(store_exec_sql(db, "ROLLBACK", err, sizeof err));
    assert_int_equal(testutil_query_int(db, "SELECT count(*) FROM t"), 0);

    assert_true(store_exec_sql(db, "BEGIN", err, sizeof err));
    snprintf(sql, sizeof sql, fill, 10000);
    assert_true(store_exec_sql(db, sql, err, sizeof err));
    /* pages spilled by this transaction, changed and spilled again:
     * SQLite overwrites their frames in place, behind the buffer's end */
    assert_true(store_exec_sql(db, "UPDATE t SET v = zeroblob(700) WHERE k % 3 = 0", err,
                               sizeof err));
    assert_int_equal(testutil_query_int(db, "SELECT sum(k) FROM t"), sum);
    assert_true(store_exec_sql(db, "COMMIT", err, sizeof err));
    uint64_t in, out;
    int buffered;
    assert_true(store_wal_gather_counts(db, &in, &out, &buffered));
    assert_int_equal(buffered, 0);
    assert_int_equal(query_int_elsewhere("SELECT count(*) FROM t WHERE length(v) = 700"), 3000);
    assert_int_equal(query_int_elsewhere("SELECT count(*) FROM t WHERE v = zeroblob(700)"), 1000);
    assert_true(integrity_ok_elsewhere());
    sqlite3_close(db);

    /* after a reopen, which recovers the WAL into a new index */
    db = open_small_cache(path);
    assert_int_equal(testutil_query_int(db, "SELECT sum(k) FROM t"), sum);
    assert_int_equal(testutil_query_int(db, "SELECT count(*) FROM t WHERE v = zeroblob(700)"),
                     1000);
    sqlite3_close(db);
    assert_true(integrity_ok_elsewhere());
}

/* ---- a WAL write that fails ---------------------------------------------- */

/* The default VFS's write calls, replaced through xSetSystemCall (SQLite's
 * own way of injecting faults into os_unix.c): while `wal_writes_fail` is
 * set, a write to a file whose name ends in -wal fails with ENOSPC. */
static atomic_bool wal_writes_fail;
static sqlite3_syscall_ptr real_pwrite, real_pwrite64, real_write;

static bool is_wal_fd(int fd)
{
    char link[64], target[512];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    return n > 4 && memcmp(target + n - 4, "-wal", 4) == 0;
}

static bool fail_this(int fd)
{
    if (!atomic_load(&wal_writes_fail) || !is_wal_fd(fd))
        return false;
    errno = ENOSPC;
    return true;
}

typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*write_fn)(int, const void *, size_t);

static ssize_t failing_pwrite(int fd, const void *p, size_t n, off_t off)
{
    return fail_this(fd) ? -1 : ((pwrite_fn)real_pwrite)(fd, p, n, off);
}

static ssize_t failing_pwrite64(int fd, const void *p, size_t n, off_t off)
{
    return fail_this(fd) ? -1 : ((pwrite_fn)real_pwrite64)(fd, p, n, off);
}

static ssize_t failing_write(int fd, const void *p, size_t n)
{
    return fail_this(fd) ? -1 : ((write_fn)real_write)(fd, p, n);
}

static void inject_wal_write_failures(bool on)
{
    sqlite3_vfs *vfs = sqlite3_vfs_find(NULL);
    if (on) {
        real_pwrite = vfs->xGetSystemCall(vfs, "pwrite");
        real_pwrite64 = vfs->xGetSystemCall(vfs, "pwrite64");
        real_write = vfs->xGetSystemCall(vfs, "write");
        assert_non_null(real_write);
        if (real_pwrite)
            vfs->xSetSystemCall(vfs, "pwrite", (sqlite3_syscall_ptr)failing_pwrite);
        if (real_pwrite64)
            vfs->xSetSystemCall(vfs, "pwrite64", (sqlite3_syscall_ptr)failing_pwrite64);
        vfs->xSetSystemCall(vfs, "write", (sqlite3_syscall_ptr)failing_write);
    } else {
        vfs->xSetSystemCall(vfs, NULL, NULL); /* every call back to the default */
    }
}

/* A commit whose WAL write fails is reported failed, with the disk's own
 * status, with every durability: the batch's frames go down before COMMIT
 * returns, not at the barrier that cannot report an error. The next batch
 * commits once the disk works again. */
static void test_failed_wal_write_fails_the_commit(void **state)
{
    (void)state;
    static const store_durability durabilities[] = {
        STORE_DURABILITY_FSYNC, STORE_DURABILITY_OS, STORE_DURABILITY_NONE};
    inject_wal_write_failures(true);
    for (size_t d = 0; d < 3; d++) {
        store_config cfg = {.durability = durabilities[d]};
        store *st = testutil_open(testutil_dir, &cfg);
        store_flush(st);
        hub_identity id = make_identity((int)d * 2);
        store_status refused = STORE_OK, stored = STORE_ERROR;
        atomic_store(&wal_writes_fail, true);
        store_put_identity(st, &id, NULL, testutil_record, &refused);
        store_flush(st);
        atomic_store(&wal_writes_fail, false);
        assert_int_equal(refused, STORE_NO_SPACE);
        id = make_identity((int)d * 2 + 1);
        store_put_identity(st, &id, NULL, testutil_record, &stored);
        store_flush(st);
        assert_int_equal(stored, STORE_OK);
        store_close(st);
        assert_int_equal(query_int_elsewhere("SELECT count(*) FROM identities"), (int64_t)d + 1);
    }
    inject_wal_write_failures(false);
    assert_true(integrity_ok_elsewhere());
}

int main(void)
{
    alarm(60);
    log_set_level(LOG_WARN);
    const struct CMUnitTest tests[] = {
        TESTUTIL_IN_FRESH_DIR(test_commits_leave_nothing_buffered),
        TESTUTIL_IN_FRESH_DIR(test_spilled_pages_read_back_and_roll_back),
        TESTUTIL_IN_FRESH_DIR(test_failed_wal_write_fails_the_commit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

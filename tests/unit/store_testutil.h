/*
 * store_testutil.h — helpers shared by the store and registry unit tests:
 * temporary data directories under /tmp and a store opened in one.
 *
 * Most tests pass loop == NULL to the store, so completions run on the
 * store thread; store_flush() then guarantees they have all run, which
 * keeps the tests free of event loops unless a test is about loops.
 */
#ifndef IOTHUBD_TESTS_STORE_TESTUTIL_H
#define IOTHUBD_TESTS_STORE_TESTUTIL_H

#include <ftw.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"

static inline int testutil_rm_entry(const char *path, const struct stat *sb, int flag,
                                    struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Creates an empty directory /tmp/iothubd-test-XXXXXX into buf. */
static inline void testutil_tmpdir(char buf[64])
{
    snprintf(buf, 64, "/tmp/iothubd-test-XXXXXX");
    if (!mkdtemp(buf))
        fail_msg("mkdtemp failed");
}

static inline void testutil_rmdir(const char *dir)
{
    nftw(dir, testutil_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static inline store *testutil_open(const char *dir, const store_config *base)
{
    store_config cfg = {.dir = dir, .durability = STORE_DURABILITY_FSYNC, .partitions = 4};
    if (base) {
        cfg = *base;
        cfg.dir = dir;
    }
    char err[256];
    store *st = store_open(&cfg, err, sizeof err);
    if (!st)
        fail_msg("store_open(%s): %s", dir, err);
    return st;
}

/* The data directory of the running test, for the suites whose cmocka
 * fixtures are testutil_dir_setup / testutil_dir_teardown: every test gets
 * a fresh, empty one, removed with all it holds afterwards. */
static char testutil_dir[64] __attribute__((unused));

static inline int testutil_dir_setup(void **state)
{
    (void)state;
    testutil_tmpdir(testutil_dir);
    return 0;
}

static inline int testutil_dir_teardown(void **state)
{
    (void)state;
    testutil_rmdir(testutil_dir);
    return 0;
}

/* A cmocka test that runs in a fresh testutil_dir. */
#define TESTUTIL_IN_FRESH_DIR(test) \
    cmocka_unit_test_setup_teardown(test, testutil_dir_setup, testutil_dir_teardown)

/* An enabled SAS identity for `device` (and `module`, NULL for none). */
static inline hub_identity testutil_identity(const char *device, const char *module)
{
    hub_identity id;
    memset(&id, 0, sizeof id);
    snprintf(id.device_id, sizeof id.device_id, "%s", device);
    snprintf(id.module_id, sizeof id.module_id, "%s", module ? module : "");
    snprintf(id.generation_id, sizeof id.generation_id, "gen-%.20s", device);
    snprintf(id.etag, sizeof id.etag, "etag1");
    id.enabled = true;
    id.auth_type = HUB_AUTH_SAS;
    snprintf(id.primary_key, sizeof id.primary_key, "AAAAAAAAAAAAAAAAAAAAAA==");
    return id;
}

/* The one integer `sql` returns on `db` (a count, a sum, a pragma). */
static inline int64_t testutil_query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

/* A store_done_fn that records its status into *(store_status *)arg. */
static inline void testutil_record(net_loop *loop, void *arg, store_status st, const char *err)
{
    (void)loop;
    (void)err;
    *(store_status *)arg = st;
}

#endif

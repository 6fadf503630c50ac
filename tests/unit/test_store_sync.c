/*
 * test_store_sync.c — the fsync stage of group commit (store/sync.c):
 * with durability fsync a completion goes out only after the WAL's
 * fdatasync that follows its commit; completions keep their order across
 * batches, a rolled-back one included; a failed fdatasync fails its batches
 * and every later one, and is logged once; the other durabilities have no
 * stage.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdatomic.h>

#include "store/internal.h"
#include "store_testutil.h"

static hub_identity identity(const char *device)
{
    hub_identity id;
    memset(&id, 0, sizeof id);
    snprintf(id.device_id, sizeof id.device_id, "%s", device);
    snprintf(id.etag, sizeof id.etag, "e1");
    id.enabled = true;
    id.auth_type = HUB_AUTH_SAS;
    return id;
}

/* Completions in the order they ran: each records its tag and status. */
static struct {
    atomic_uint n;
    int tag[8];
    store_status status[8];
    char err[8][256];
} done;

static void record(net_loop *loop, void *arg, store_status st, const char *err)
{
    (void)loop;
    unsigned i = atomic_load(&done.n);
    if (i < 8) {
        done.tag[i] = (int)(intptr_t)arg;
        done.status[i] = st;
        snprintf(done.err[i], sizeof done.err[i], "%s", err ? err : "");
    }
    atomic_store(&done.n, i + 1);
}

static void put(store *st, const char *device, int tag)
{
    hub_identity id = identity(device);
    store_put_identity(st, &id, NULL, record, (void *)(intptr_t)tag);
}

/* Polls (up to 5 s) until the store has committed `commits` batches. */
static void wait_for_commits(store *st, uint64_t commits)
{
    store_stats s;
    for (int i = 0; i < 5000; i++) {
        store_get_stats(st, &s);
        if (s.commits + s.failed_commits >= commits)
            return;
        usleep(1000);
    }
    fail_msg("the store committed %llu of %llu batches", (unsigned long long)s.commits,
             (unsigned long long)commits);
}

static uint64_t committed_so_far(store *st)
{
    store_stats s;
    store_get_stats(st, &s);
    return s.commits + s.failed_commits;
}

/* A committed batch's completion waits for the stage's fdatasync. */
static void test_completion_waits_for_the_sync(void **state)
{
    (void)state;
    memset(&done, 0, sizeof done);
    store *st = testutil_open(testutil_dir, NULL);
    store_flush(st);
    uint64_t before = committed_so_far(st);
    store_stats s0;
    store_get_stats(st, &s0);
    store_test_hold_syncs(st, true);
    put(st, "d1", 1);
    wait_for_commits(st, before + 1);
    usleep(20000);
    assert_int_equal(atomic_load(&done.n), 0); /* committed, not yet synced */
    store_test_hold_syncs(st, false);
    store_flush(st);
    assert_int_equal(atomic_load(&done.n), 1);
    assert_int_equal(done.status[0], STORE_OK);
    store_stats s1;
    store_get_stats(st, &s1);
    assert_true(s1.syncs > s0.syncs);
    store_close(st);
}

/* Batches committed while the stage was busy share one fdatasync, and
 * their completions keep their order, a rolled-back batch's included
 * (it needs no sync but must not overtake the committed one before it). */
static void test_order_kept_across_batches(void **state)
{
    (void)state;
    memset(&done, 0, sizeof done);
    store *st = testutil_open(testutil_dir, NULL);
    store_flush(st);
    uint64_t before = committed_so_far(st);
    store_stats s0;
    store_get_stats(st, &s0);
    store_test_hold_syncs(st, true);
    put(st, "a", 1);
    wait_for_commits(st, before + 1);
    store_test_fail_commits(st, 1);
    put(st, "b", 2); /* its batch is rolled back */
    wait_for_commits(st, before + 2);
    put(st, "c", 3);
    wait_for_commits(st, before + 3);
    usleep(20000);
    assert_int_equal(atomic_load(&done.n), 0);
    store_test_hold_syncs(st, false);
    store_flush(st);
    assert_int_equal(atomic_load(&done.n), 3);
    int want_tag[] = {1, 2, 3};
    store_status want[] = {STORE_OK, STORE_ERROR, STORE_OK};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(done.tag[i], want_tag[i]);
        assert_int_equal(done.status[i], want[i]);
    }
    store_stats s1;
    store_get_stats(st, &s1);
    /* a, b and c waited together: one sync for them, one for the flush */
    assert_true(s1.syncs - s0.syncs <= 2);
    store_close(st);
}

/* Counts the lines of `path` that contain `needle`. */
static int count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

static void find_before(void *arg, const hub_identity *id)
{
    if (strcmp(id->device_id, "before") == 0)
        *(bool *)arg = true;
}

/* A failed fdatasync fails the batches waiting on it, and every batch after
 * it without running them (a hole may stay in the WAL, and everything after
 * a hole is lost on recovery); logged once; a reopened store works again and
 * holds what was acknowledged before the failure. */
static void test_failed_sync_is_sticky(void **state)
{
    (void)state;
    memset(&done, 0, sizeof done);
    char log_path[128];
    snprintf(log_path, sizeof log_path, "%s.log", testutil_dir);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, STDERR_FILENO);
    close(fd);

    store *st = testutil_open(testutil_dir, NULL);
    put(st, "before", 1);
    store_flush(st);
    store_test_fail_syncs(st, 1);
    put(st, "lost", 2);
    store_flush(st);
    put(st, "after", 3);
    store_flush(st);
    store_stats s;
    store_get_stats(st, &s);
    store_close(st);

    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    assert_int_equal(atomic_load(&done.n), 3);
    assert_int_equal(done.status[0], STORE_OK);
    assert_int_equal(done.status[1], STORE_ERROR);
    assert_non_null(strstr(done.err[1], "fdatasync of the WAL failed"));
    assert_int_equal(done.status[2], STORE_ERROR);
    assert_non_null(strstr(done.err[2], "earlier fdatasync"));
    assert_true(s.failed_commits >= 1); /* "after" never ran */
    assert_int_equal(count_lines(log_path, "fdatasync of the WAL failed"), 1);
    unlink(log_path);

    /* a restart: the store syncs again; "before" was acknowledged */
    st = testutil_open(testutil_dir, NULL);
    memset(&done, 0, sizeof done);
    put(st, "again", 4);
    store_flush(st);
    assert_int_equal(done.status[0], STORE_OK);
    bool found = false;
    assert_true(store_load_identities(st, find_before, &found));
    assert_true(found);
    store_close(st);
}

/* Only durability fsync has the stage (its writer commits with NORMAL:
 * test_durability_pragmas); os and none finish batches on the store
 * thread, as before. */
static void test_stage_only_with_fsync(void **state)
{
    (void)state;
    static const struct {
        store_durability d;
        bool stage;
    } cases[] = {{STORE_DURABILITY_FSYNC, true},
                 {STORE_DURABILITY_OS, false},
                 {STORE_DURABILITY_NONE, false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        store_config cfg = {.durability = cases[i].d};
        store *st = testutil_open(testutil_dir, &cfg);
        store_flush(st);
        assert_int_equal(st->sync_started, cases[i].stage);
        assert_int_equal(st->wal_fd >= 0, cases[i].stage);
        store_stats s;
        store_get_stats(st, &s);
        assert_int_equal(s.syncs > 0, cases[i].stage); /* the flush's batch */
        store_close(st);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TESTUTIL_IN_FRESH_DIR(test_completion_waits_for_the_sync),
        TESTUTIL_IN_FRESH_DIR(test_order_kept_across_batches),
        TESTUTIL_IN_FRESH_DIR(test_failed_sync_is_sticky),
        TESTUTIL_IN_FRESH_DIR(test_stage_only_with_fsync),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

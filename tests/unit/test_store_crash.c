/*
 * test_store_crash.c — acknowledged means durable, even under SIGKILL.
 *
 * A child process opens the store (durability fsync) and writes identities
 * as fast as group commit allows; each completion with STORE_OK writes the
 * identity's number to a pipe. The parent kills the child with SIGKILL at
 * a random moment, drains the pipe (everything acknowledged before the
 * kill), reopens the store and checks that every acknowledged identity is
 * there and that `PRAGMA integrity_check` says ok. Several rounds on the
 * same directory, bounded to a few seconds in all.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>

#include "store_testutil.h"
#include "util/log.h"
#include "util/time.h"

static char dir[64];

static void acked(net_loop *loop, void *arg, store_status st, const char *err)
{
    (void)loop;
    (void)err;
    if (st == STORE_OK) {
        uint32_t n = (uint32_t)(uintptr_t)arg;
        if (write(STDOUT_FILENO, &n, sizeof n) != sizeof n)
            _exit(3);
    }
}

/* The child: writes identities from `first` on until killed. */
static void writer(int fd, uint32_t first)
{
    if (dup2(fd, STDOUT_FILENO) < 0)
        _exit(2);
    store_config cfg = {.dir = dir, .durability = STORE_DURABILITY_FSYNC};
    char err[256];
    store *st = store_open(&cfg, err, sizeof err);
    if (!st)
        _exit(1);
    for (uint32_t n = first;; n++) {
        hub_identity id;
        memset(&id, 0, sizeof id);
        snprintf(id.device_id, sizeof id.device_id, "crash-%u", n);
        snprintf(id.etag, sizeof id.etag, "e%u", n);
        store_put_identity(st, &id, NULL, acked, (void *)(uintptr_t)n);
        if (n % 64 == 0)
            store_flush(st); /* bound the queue */
    }
}

static uint8_t *present; /* present[n] = identity crash-n loaded */
static uint32_t present_cap;

static void mark(void *arg, const hub_identity *id)
{
    (void)arg;
    unsigned n;
    if (sscanf(id->device_id, "crash-%u", &n) == 1 && n < present_cap)
        present[n] = 1;
}

static void test_kill_during_writes(void **state)
{
    (void)state;
    testutil_tmpdir(dir);
    present_cap = 1u << 22;
    present = calloc(present_cap, 1);
    uint32_t *acks = malloc(present_cap * sizeof *acks);
    unsigned seed = (unsigned)time_mono_ms();
    uint32_t next = 0;
    for (int round = 0; round < 6; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            writer(fds[1], next);
        }
        close(fds[1]);
        /* keep draining the pipe until the kill so the child never blocks
         * on it: the kill then lands in the middle of commits */
        fcntl(fds[0], F_SETFL, O_NONBLOCK);
        uint64_t kill_at = time_mono_ms() + 50 + (uint64_t)(rand_r(&seed) % 250);
        size_t nacks = 0;
        uint32_t n;
        while (time_mono_ms() < kill_at) {
            if (read(fds[0], &n, sizeof n) == sizeof n) {
                if (nacks < present_cap)
                    acks[nacks++] = n;
            } else {
                usleep(500);
            }
        }
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        assert_true(WIFSIGNALED(status));
        while (read(fds[0], &n, sizeof n) == sizeof n && nacks < present_cap)
            acks[nacks++] = n;
        close(fds[0]);

        store *st = testutil_open(dir, NULL);
        memset(present, 0, present_cap);
        assert_true(store_load_identities(st, mark, NULL));
        store_close(st);
        for (size_t i = 0; i < nacks; i++) {
            assert_true(acks[i] < present_cap);
            if (!present[acks[i]])
                fail_msg("round %d: acknowledged crash-%u missing", round, acks[i]);
        }
        char path[128];
        snprintf(path, sizeof path, "%s/iothubd.db", dir);
        sqlite3 *db;
        sqlite3_stmt *s;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL), 0);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(s, 0), "ok");
        sqlite3_finalize(s);
        sqlite3_close(db);
        print_message("round %d: %zu acknowledged, all present\n", round, nacks);
        assert_true(nacks > 0);
        next += (uint32_t)nacks + 100000; /* fresh ids each round */
    }
    free(acks);
    free(present);
    testutil_rmdir(dir);
}

int main(void)
{
    alarm(30);
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_during_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

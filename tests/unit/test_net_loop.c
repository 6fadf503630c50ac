/*
 * test_net_loop.c — timers (heap order, stop, re-arm from callbacks) and the
 * mailbox (ordering across threads, posting before run, posting to self
 * without a wake-up).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/internal.h"
#include "net/server.h"
#include "util/log.h"

/* ---- helpers ------------------------------------------------------------ */

static net_server *new_server(unsigned loops)
{
    char err[256];
    net_server *s = net_server_new(loops, err, sizeof err);
    if (!s)
        fail_msg("net_server_new: %s", err);
    return s;
}

static void check_heap(const net_loop *l)
{
    for (uint32_t i = 0; i < l->heap_len; i++) {
        assert_int_equal(l->heap[i]->heap_index, i + 1);
        if (i > 0)
            assert_true(l->heap[(i - 1) / 2]->when_ms <= l->heap[i]->when_ms);
    }
}

/* ---- heap invariants, without running a loop ---------------------------- */

static void noop_timer(net_loop *l, net_timer *t) { (void)l; (void)t; }

static void test_heap_invariants(void **state)
{
    (void)state;
    net_server *s = new_server(1);
    net_loop *l = net_server_loop(s, 0);
    enum { N = 5000 };
    net_timer *t = calloc(N, sizeof *t);
    unsigned seed = 12345;
    for (int i = 0; i < N; i++)
        net_timer_start(l, &t[i], (uint64_t)(rand_r(&seed) % 100000), noop_timer);
    check_heap(l);
    assert_int_equal(l->heap_len, N);
    for (int round = 0; round < 20000; round++) {
        int i = rand_r(&seed) % N;
        switch (rand_r(&seed) % 3) {
        case 0: net_timer_stop(l, &t[i]); break;
        case 1: net_timer_start(l, &t[i], (uint64_t)(rand_r(&seed) % 100000), noop_timer); break;
        default: net_timer_stop(l, &t[i]); net_timer_stop(l, &t[i]); break;
        }
    }
    check_heap(l);
    uint32_t armed = 0;
    for (int i = 0; i < N; i++)
        armed += net_timer_armed(&t[i]);
    assert_int_equal(armed, l->heap_len);
    /* pop in order */
    uint64_t last = 0;
    while (l->heap_len) {
        net_timer *top = l->heap[0];
        assert_true(top->when_ms >= last);
        last = top->when_ms;
        net_timer_stop(l, top);
        assert_false(net_timer_armed(top));
    }
    free(t);
    net_server_free(s);
}

/* ---- timers firing in a running loop ------------------------------------ */

enum { NT = 300 };

static struct {
    net_server *s;
    net_timer t[NT];
    int fired[NT];
    uint64_t deadline[NT];
    int order[NT];
    int nfired;
    bool bad_time;
    /* re-arm scenarios */
    net_timer self0, self1, killer, victim, child, end;
    int self0_n, self1_n, child_n, victim_n;
    uint64_t self1_first;
} T;

static void timer_cb(net_loop *l, net_timer *t)
{
    int i = (int)(t - T.t);
    T.fired[i]++;
    if (net_loop_now_ms(l) < T.deadline[i])
        T.bad_time = true;
    T.order[T.nfired++] = i;
}

static void self0_cb(net_loop *l, net_timer *t)
{
    if (++T.self0_n < 5)
        net_timer_start(l, t, 0, self0_cb); /* delay 0 from its own callback */
}

static void self1_cb(net_loop *l, net_timer *t)
{
    if (T.self1_n++ == 0)
        T.self1_first = net_loop_now_ms(l);
    if (T.self1_n < 10)
        net_timer_start(l, t, 2, self1_cb);
}

static void victim_cb(net_loop *l, net_timer *t) { (void)l; (void)t; T.victim_n++; }
static void child_cb(net_loop *l, net_timer *t) { (void)l; (void)t; T.child_n++; }

static void killer_cb(net_loop *l, net_timer *t)
{
    (void)t;
    net_timer_stop(l, &T.victim); /* due at the same time: must not fire */
    net_timer_start(l, &T.child, 5, child_cb);
}

static void end_cb(net_loop *l, net_timer *t)
{
    (void)l;
    (void)t;
    net_server_stop(T.s);
}

static void timers_init(net_loop *l, void *arg)
{
    (void)arg;
    unsigned seed = 7;
    for (int i = 0; i < NT; i++) {
        uint64_t d = (uint64_t)(rand_r(&seed) % 60);
        net_timer_start(l, &T.t[i], d, timer_cb);
        if (i % 7 == 3) { /* re-arm before it fires: only the last counts */
            d = (uint64_t)(rand_r(&seed) % 60);
            net_timer_start(l, &T.t[i], d, timer_cb);
        }
        T.deadline[i] = T.t[i].when_ms;
        if (i % 5 == 0)
            net_timer_stop(l, &T.t[i]);
    }
    net_timer_start(l, &T.self0, 1, self0_cb);
    net_timer_start(l, &T.self1, 1, self1_cb);
    net_timer_start(l, &T.killer, 10, killer_cb);
    /* 1 ms after the killer: even if both are due in the same firing phase,
     * the killer runs first and its stop must prevent this one */
    net_timer_start(l, &T.victim, 11, victim_cb);
    net_timer_start(l, &T.end, 150, end_cb);
}

static void test_timers_fire_in_order(void **state)
{
    (void)state;
    memset(&T, 0, sizeof T);
    T.s = new_server(1);
    net_server_set_loop_hooks(T.s, timers_init, NULL, NULL);
    assert_int_equal(net_server_run(T.s), 0);

    for (int i = 0; i < NT; i++)
        assert_int_equal(T.fired[i], i % 5 == 0 ? 0 : 1);
    for (int k = 1; k < T.nfired; k++)
        assert_true(T.deadline[T.order[k - 1]] <= T.deadline[T.order[k]]);
    assert_false(T.bad_time);
    assert_int_equal(T.self0_n, 5);
    assert_int_equal(T.self1_n, 10);
    assert_int_equal(T.victim_n, 0);
    assert_int_equal(T.child_n, 1);
    net_server_free(T.s);
}

/* ---- mailbox ------------------------------------------------------------ */

enum { POSTERS = 4, POSTS = 10000 };

static struct {
    net_server *s;
    /* per loop, touched only by that loop's thread */
    int next[2][POSTERS];
    int received[2];
    bool out_of_order[2];
    bool wrong_loop[2];
    int self_depth, self_runs;
    bool reentered;
    atomic_int ready;
} M;

static void post_task(net_loop *l, void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    unsigned li = (unsigned)(v >> 24), th = (unsigned)((v >> 16) & 0xff);
    int seq = (int)(v & 0xffff);
    if (net_loop_index(l) != li)
        M.wrong_loop[li] = true;
    if (M.next[li][th] != seq)
        M.out_of_order[li] = true;
    M.next[li][th] = seq + 1;
    M.received[li]++;
}

static void *poster(void *arg)
{
    unsigned th = (unsigned)(uintptr_t)arg;
    for (int i = 0; i < POSTS; i++) {
        unsigned li = (unsigned)i & 1;
        int seq = i / 2;
        uintptr_t v = ((uintptr_t)li << 24) | ((uintptr_t)th << 16) | (uintptr_t)seq;
        net_loop_post(net_server_loop(M.s, li), post_task, (void *)v);
        if (i == 100)
            atomic_fetch_add(&M.ready, 1);
    }
    return NULL;
}

static void self_post(net_loop *l, void *arg)
{
    (void)arg;
    if (M.self_depth++)
        M.reentered = true;
    if (++M.self_runs < 1000)
        net_loop_post(l, self_post, NULL);
    M.self_depth--;
}

static void stop_task(net_loop *l, void *arg)
{
    (void)l;
    (void)arg;
    net_server_stop(M.s);
}

static void *run_server(void *arg)
{
    return (void *)(intptr_t)net_server_run(arg);
}

static void test_mailbox_order(void **state)
{
    (void)state;
    memset(&M, 0, sizeof M);
    M.s = new_server(2);
    pthread_t th[POSTERS], srv;
    /* posting starts before the loops run: tasks must queue */
    for (unsigned i = 0; i < POSTERS; i++)
        pthread_create(&th[i], NULL, poster, (void *)(uintptr_t)i);
    while (atomic_load(&M.ready) < POSTERS)
        usleep(100);
    net_loop_post(net_server_loop(M.s, 1), self_post, NULL);
    pthread_create(&srv, NULL, run_server, M.s);
    for (unsigned i = 0; i < POSTERS; i++)
        pthread_join(th[i], NULL);
    /* FIFO: posted after every other task, so it runs last */
    net_loop_post(net_server_loop(M.s, 0), stop_task, NULL);
    void *rc;
    pthread_join(srv, &rc);
    assert_int_equal((intptr_t)rc, 0);
    /* loop 1 may not have run everything if stop raced it: it is posted
     * to loop 0 only; check loop 0 strictly and loop 1 for order */
    assert_int_equal(M.received[0], POSTERS * POSTS / 2);
    for (int li = 0; li < 2; li++) {
        assert_false(M.out_of_order[li]);
        assert_false(M.wrong_loop[li]);
    }
    assert_false(M.reentered);
    net_server_free(M.s);
}

/* Loop 1 too: stop only once both loops have seen everything. */
static void check_done(net_loop *l, void *arg)
{
    (void)arg;
    if (M.received[net_loop_index(l)] == POSTERS * POSTS / 2 &&
        atomic_fetch_add(&M.ready, 1) == POSTERS + 1)
        net_server_stop(M.s);
}

static void test_mailbox_both_loops(void **state)
{
    (void)state;
    memset(&M, 0, sizeof M);
    M.s = new_server(2);
    pthread_t th[POSTERS], srv;
    pthread_create(&srv, NULL, run_server, M.s);
    for (unsigned i = 0; i < POSTERS; i++)
        pthread_create(&th[i], NULL, poster, (void *)(uintptr_t)i);
    for (unsigned i = 0; i < POSTERS; i++)
        pthread_join(th[i], NULL);
    net_loop_post(net_server_loop(M.s, 0), check_done, NULL);
    net_loop_post(net_server_loop(M.s, 1), check_done, NULL);
    void *rc;
    pthread_join(srv, &rc);
    assert_int_equal((intptr_t)rc, 0);
    assert_int_equal(M.received[0], POSTERS * POSTS / 2);
    assert_int_equal(M.received[1], POSTERS * POSTS / 2);
    assert_false(M.out_of_order[0]);
    assert_false(M.out_of_order[1]);
    net_server_free(M.s);
}

/* A loop posting to itself writes no eventfd (it is awake and drains its
 * mailbox before it next sleeps): after each self-post the eventfd is
 * still unreadable, and the chain still runs to its end, in order, never
 * re-entrantly. */
static struct {
    net_server *s;
    int runs, depth;
    bool reentered, eventfd_written;
} P;

static void chained_self_post(net_loop *l, void *arg)
{
    (void)arg;
    if (P.depth++)
        P.reentered = true;
    if (++P.runs < 1000) {
        net_loop_post(l, chained_self_post, NULL);
        uint64_t v;
        if (read(l->wake_fd, &v, sizeof v) == (ssize_t)sizeof v)
            P.eventfd_written = true;
    } else {
        net_server_stop(P.s);
    }
    P.depth--;
}

static void test_self_post_needs_no_wake(void **state)
{
    (void)state;
    memset(&P, 0, sizeof P);
    P.s = new_server(1);
    net_loop_post(net_server_loop(P.s, 0), chained_self_post, NULL);
    assert_int_equal(net_server_run(P.s), 0);
    assert_int_equal(P.runs, 1000);
    assert_false(P.reentered);
    assert_false(P.eventfd_written);
    net_server_free(P.s);
}

int main(void)
{
    alarm(60);
    log_set_level(LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heap_invariants),
        cmocka_unit_test(test_timers_fire_in_order),
        cmocka_unit_test(test_mailbox_order),
        cmocka_unit_test(test_mailbox_both_loops),
        cmocka_unit_test(test_self_post_needs_no_wake),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_broker_clients.c — what the broker offers the application about a
 * connected client, end to end inside one process.
 *
 * Each test starts a real server as src/main.c wires it and talks to it
 * through the blocking test client on our own codec (both in
 * broker_testutil.h, which says why every socket has a timeout). The
 * application is the open broker's with a few callbacks of the test's own
 * in front of it, because a deadline is set, and a closing client looked
 * up, from inside the application's callbacks.
 *
 * Covered: the application's deadline (broker_client_set_deadline) on the
 * timer it shares with the keep-alive: it passes, moves, clears, and the
 * keep-alive still fires beside it; finding a connected client by its
 * client id (broker_owner_net_loop from the test thread,
 * broker_find_connected in a task on that loop, and in the app's
 * disconnected()) before, during and after a connection, across a
 * take-over, and with a stored session; and broker_client_lookup, which
 * also wants the connection's handle (an earlier connection's finds
 * nothing after a take-over).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker_testutil.h"
#include "mqtt/codec.h"
#include "net/loop.h"
#include "net/server.h"
#include "util/log.h"
#include "util/time.h"

/* ---- the application's deadline ------------------------------------------- */

/* The deadline tests' application: the open broker's, plus a deadline set
 * in connected() (deadline_app.first_ms from then), moved by a QoS 0
 * PUBLISH to "deadline/move" whose payload is the new distance in ms (0
 * clears it), and DISCONNECT 0x87 when it passes. */
static struct {
    broker_app open;
    uint64_t first_ms;
    atomic_int passed;
} deadline_app;

static void deadline_connected(void *ctx, broker_client *c)
{
    if (deadline_app.open.connected)
        deadline_app.open.connected(ctx, c);
    broker_client_set_deadline(c, time_wall_ms() + deadline_app.first_ms);
}

static broker_publish_action deadline_publish(void *ctx, broker_client *c, mqtt_bytes topic,
                                              const mqtt_publish *pkt, broker_answer *answer)
{
    if (!mqtt_bytes_eq_str(topic, "deadline/move"))
        return deadline_app.open.publish(ctx, c, topic, pkt, answer);
    char ms[16] = "";
    snprintf(ms, sizeof ms, "%.*s", (int)pkt->payload.len, (const char *)pkt->payload.p);
    uint64_t distance = strtoull(ms, NULL, 10);
    broker_client_set_deadline(c, distance ? time_wall_ms() + distance : 0);
    answer->reason = MQTT_RC_SUCCESS;
    return BROKER_PUBLISH_DONE;
}

static void deadline_passed(void *ctx, broker_client *c)
{
    (void)ctx;
    atomic_fetch_add(&deadline_app.passed, 1);
    broker_client_disconnect(c, MQTT_RC_NOT_AUTHORIZED, "deadline passed");
}

static void deadline_bind(broker_app *callbacks)
{
    deadline_app.open = *callbacks;
    atomic_store(&deadline_app.passed, 0);
    callbacks->connected = deadline_connected;
    callbacks->publish = deadline_publish;
    callbacks->deadline_passed = deadline_passed;
}

static int deadline_server_setup(void **state)
{
    return server_start(state, deadline_bind, NULL);
}

/* Expects DISCONNECT `reason`, then the close; returns the ms it took from
 * `since` (time_mono_ms). */
static uint64_t expect_disconnect_after(test_client *tc, uint8_t reason, uint64_t since)
{
    mqtt_packet pkt;
    tc_expect(tc, MQTT_DISCONNECT, &pkt);
    uint64_t took = time_mono_ms() - since;
    assert_int_equal(pkt.u.disconnect.reason, reason);
    tc_expect_eof(tc);
    tc_close(tc);
    return took;
}

static void tc_move_deadline(test_client *tc, const char *ms)
{
    tc_publish(tc, "deadline/move", ms, 0, 0, false);
}

static void test_deadline_passes(void **state)
{
    test_server *srv = *state;
    deadline_app.first_ms = 400;
    uint64_t start = time_mono_ms();
    test_client *tc = tc_connect_v5(srv->port, "deadline-passes");
    uint64_t took = expect_disconnect_after(tc, MQTT_RC_NOT_AUTHORIZED, start);
    if (took < 350 || took > 2500)
        fail_msg("DISCONNECT after %llu ms, deadline 400 ms", (unsigned long long)took);
    assert_int_equal(atomic_load(&deadline_app.passed), 1);
}

/* Moving the deadline (a re-authentication) re-arms the shared timer. */
static void test_deadline_moves(void **state)
{
    test_server *srv = *state;
    deadline_app.first_ms = 500;
    test_client *tc = tc_connect_v5(srv->port, "deadline-moves");
    uint64_t moved = time_mono_ms();
    tc_move_deadline(tc, "1500");
    for (int i = 0; i < 3; i++)
        tc_expect_silence(tc); /* 900 ms: the first deadline is gone */
    uint64_t took = expect_disconnect_after(tc, MQTT_RC_NOT_AUTHORIZED, moved);
    if (took < 1400)
        fail_msg("DISCONNECT %llu ms after the move to 1500 ms", (unsigned long long)took);
    assert_int_equal(atomic_load(&deadline_app.passed), 1);
}

/* A deadline cleared before it passes is never heard of, and the
 * keep-alive (1 s: the timeout at 1.5 s) still fires on the same timer;
 * one far away does not hold the keep-alive back either. */
static void test_deadline_beside_keepalive(void **state)
{
    test_server *srv = *state;
    const char *moves[] = {"0", "60000"};
    for (size_t k = 0; k < 2; k++) {
        deadline_app.first_ms = 800; /* moved long before it passes */
        char id[32];
        snprintf(id, sizeof id, "deadline-keepalive-%zu", k);
        connect_opts o = {.version = MQTT_V5, .client_id = id, .clean_start = true,
                          .keep_alive = 1};
        test_client *tc = tc_connect(srv->port, &o, NULL);
        uint64_t start = time_mono_ms();
        tc_move_deadline(tc, moves[k]);
        uint64_t took = expect_disconnect_after(tc, MQTT_RC_KEEP_ALIVE_TIMEOUT, start);
        if (took < 1300 || took > 3000)
            fail_msg("keep-alive timeout after %llu ms", (unsigned long long)took);
    }
    assert_int_equal(atomic_load(&deadline_app.passed), 0);
}

/* ---- finding a connected client by its client id ------------------------ */

/* The finding tests' application: the open broker's, plus a record of
 * what broker_find_connected answers for a client's own id inside the
 * app's disconnected() of that client (the hub relies on it to tell a
 * take-over from the end of the device's connection). */
#define CLOSES_MAX 16
typedef struct close_record {
    broker_client_handle closed; /* the client disconnected() was called for */
    broker_client_handle found;  /* the client connected under its id then; 0 = none */
} close_record;

static struct {
    broker_app open;
    broker *b;
    pthread_mutex_t lock;
    close_record closes[CLOSES_MAX];
    size_t nclosed;
} find_app = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void find_disconnected(void *ctx, broker_client *c, uint8_t reason)
{
    const broker_client_info *info = broker_client_get_info(c);
    broker_client *now = broker_find_connected(find_app.b, broker_client_loop(c),
                                               (const char *)info->client_id.p,
                                               info->client_id.len);
    pthread_mutex_lock(&find_app.lock);
    if (find_app.nclosed < CLOSES_MAX)
        find_app.closes[find_app.nclosed++] =
            (close_record){broker_client_get_handle(c), now ? broker_client_get_handle(now) : 0};
    pthread_mutex_unlock(&find_app.lock);
    if (find_app.open.disconnected)
        find_app.open.disconnected(ctx, c, reason);
}

static void find_bind(broker_app *callbacks)
{
    find_app.open = *callbacks;
    find_app.nclosed = 0;
    callbacks->disconnected = find_disconnected;
}

static int find_server_setup(void **state) { return server_start(state, find_bind, &find_app.b); }

/* One broker_find_connected, run as a task on a loop; the test thread
 * waits for its answer. */
typedef struct find_probe {
    broker *b;
    const char *client_id;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    broker_client_handle found; /* 0 = NULL */
    bool on_its_loop;           /* the client found lives on the loop asked */
    bool id_matches;
    bool lookup_agrees;         /* broker_client_lookup finds it by its handle */
    broker_client_handle stale; /* optional: a handle to look up too */
    bool stale_found;           /* broker_client_lookup found one by it */
} find_probe;

static void find_probe_task(net_loop *loop, void *arg)
{
    find_probe *p = arg;
    size_t len = strlen(p->client_id);
    broker_client *c = broker_find_connected(p->b, loop, p->client_id, len);
    pthread_mutex_lock(&p->lock);
    if (c) {
        mqtt_bytes id = broker_client_get_info(c)->client_id;
        p->found = broker_client_get_handle(c);
        p->on_its_loop = broker_client_loop(c) == loop;
        p->id_matches = mqtt_bytes_eq_str(id, p->client_id);
        p->lookup_agrees = broker_client_lookup(p->b, loop, p->client_id, len, p->found) == c;
    }
    if (p->stale)
        p->stale_found = broker_client_lookup(p->b, loop, p->client_id, len, p->stale) != NULL;
    p->done = true;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

/* What broker_find_connected answers for `client_id` on `loop` now: the
 * handle of the client found, 0 when none. With `stale`, also asserts that
 * broker_client_lookup finds nothing by that (earlier) handle. */
static broker_client_handle find_on_checking(test_server *srv, net_loop *loop,
                                             const char *client_id, broker_client_handle stale)
{
    find_probe p = {.b = srv->broker, .client_id = client_id, .stale = stale};
    pthread_mutex_init(&p.lock, NULL);
    pthread_cond_init(&p.cond, NULL);
    net_loop_post(loop, find_probe_task, &p);
    pthread_mutex_lock(&p.lock);
    while (!p.done)
        pthread_cond_wait(&p.cond, &p.lock);
    pthread_mutex_unlock(&p.lock);
    pthread_cond_destroy(&p.cond);
    pthread_mutex_destroy(&p.lock);
    if (p.found) {
        assert_true(p.on_its_loop);
        assert_true(p.id_matches);
        assert_true(p.lookup_agrees);
    }
    assert_false(p.stale_found);
    return p.found;
}

static broker_client_handle find_on(test_server *srv, net_loop *loop, const char *client_id)
{
    return find_on_checking(srv, loop, client_id, 0);
}

static broker_client_handle find_on_owner(test_server *srv, const char *client_id)
{
    return find_on(srv, broker_owner_net_loop(srv->broker, client_id, strlen(client_id)),
                   client_id);
}

/* The record of the close of `closed`, waited for (the app hears of a
 * close after the client saw the connection end). */
static close_record wait_close(broker_client_handle closed)
{
    for (int i = 0; i < SOCKET_TIMEOUT_S * 100; i++) {
        pthread_mutex_lock(&find_app.lock);
        for (size_t k = 0; k < find_app.nclosed; k++) {
            if (find_app.closes[k].closed == closed) {
                close_record r = find_app.closes[k];
                pthread_mutex_unlock(&find_app.lock);
                return r;
            }
        }
        pthread_mutex_unlock(&find_app.lock);
        usleep(10000);
    }
    fail_msg("disconnected() was not called for client %llu", (unsigned long long)closed);
    return (close_record){0};
}

/* The owner loop is a pure function of the client id, and the ids spread
 * over the loops. */
static void test_owner_loop_of_client_id(void **state)
{
    test_server *srv = *state;
    bool used[2] = {false, false};
    for (int i = 0; i < 32; i++) {
        char id[24];
        snprintf(id, sizeof id, "owner-%d", i);
        net_loop *loop = broker_owner_net_loop(srv->broker, id, strlen(id));
        assert_ptr_equal(loop, broker_owner_net_loop(srv->broker, id, strlen(id)));
        unsigned index = net_loop_index(loop);
        assert_true(index < 2);
        assert_ptr_equal(loop, net_server_loop(srv->net, index));
        used[index] = true;
    }
    assert_true(used[0] && used[1]);
}

/* broker_find_connected through a connection's life: nothing before it,
 * the client on its owner loop (and nothing on the other loop), the new
 * connection after a take-over (also inside the old one's disconnected()),
 * nothing once it ended (inside its own disconnected() too), though its
 * session is kept, and the resumed connection after that. */
static void test_find_connected(void **state)
{
    test_server *srv = *state;
    const char *id = "find-me";
    net_loop *owner = broker_owner_net_loop(srv->broker, id, strlen(id));
    net_loop *other = net_server_loop(srv->net, 1 - net_loop_index(owner));
    assert_int_equal(find_on_owner(srv, id), 0);

    connect_opts o = {.version = MQTT_V5, .client_id = id, .clean_start = true,
                      .session_expiry = SESSION_KEPT_S};
    test_client *first = tc_connect(srv->port, &o, NULL);
    broker_client_handle h1 = find_on_owner(srv, id);
    assert_int_not_equal(h1, 0);
    assert_int_equal(find_on(srv, other, id), 0);
    assert_int_equal(find_on_owner(srv, "find-me-not"), 0);

    /* take-over: the new connection, at once and in the old one's close */
    bool present = false;
    o.clean_start = false;
    test_client *second = tc_connect(srv->port, &o, &present);
    assert_true(present);
    mqtt_packet pkt;
    tc_expect(first, MQTT_DISCONNECT, &pkt);
    assert_int_equal(pkt.u.disconnect.reason, MQTT_RC_SESSION_TAKEN_OVER);
    tc_expect_eof(first);
    tc_close(first);
    broker_client_handle h2 = find_on_checking(srv, owner, id, h1); /* h1: gone */
    assert_int_not_equal(h2, 0);
    assert_int_not_equal(h2, h1);
    close_record r1 = wait_close(h1);
    assert_int_equal(r1.found, h2);

    /* the end: nothing, though the session stays for a resume */
    tc_disconnect(second, false, 0);
    close_record r2 = wait_close(h2);
    assert_int_equal(r2.found, 0);
    assert_int_equal(find_on_owner(srv, id), 0);

    test_client *third = tc_connect(srv->port, &o, &present);
    assert_true(present);
    broker_client_handle h3 = find_on_owner(srv, id);
    assert_int_not_equal(h3, 0);
    assert_true(h3 != h1 && h3 != h2);
    tc_close(third); /* network loss: the same as a DISCONNECT here */
    assert_int_equal(wait_close(h3).found, 0);
    assert_int_equal(find_on_owner(srv, id), 0);
}

int main(void)
{
    alarm(180);
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_deadline_passes, deadline_server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_moves, deadline_server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_beside_keepalive, deadline_server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_owner_loop_of_client_id, find_server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_find_connected, find_server_setup, server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

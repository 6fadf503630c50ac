/*
 * test_broker_session.c — the broker's session state machines, end to end
 * inside one process.
 *
 * Each test starts a real server as src/main.c wires it, with the open
 * broker application, and talks to it through the blocking test client on
 * our own codec (both in broker_testutil.h, which says why every socket
 * has a timeout), so every byte the broker sends is checked by the decoder.
 *
 * Covered: QoS 1 and QoS 2 in both directions (PUBACK, PUBREC/PUBREL/PUBCOMP,
 * a resent QoS 2 PUBLISH not delivered twice, PUBREL for an unknown id), the
 * client's Receive Maximum holding back messages until a slot is released,
 * session resume (Session Present, redelivery with DUP and of PUBREL,
 * messages queued while offline), Clean Start, Session Expiry 0 (in CONNECT
 * or in DISCONNECT), MQTT 3.1.1 clean session, and session take-over.
 * What the broker offers the application about a connected client (its
 * deadline, finding it by its client id) needs an application of the
 * test's own and is in test_broker_clients.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

#include "broker_testutil.h"
#include "mqtt/codec.h"
#include "util/log.h"

/* ---- QoS 1 ----------------------------------------------------------------- */

static void test_qos1_inbound_puback(void **state)
{
    test_server *srv = *state;
    test_client *pub = tc_connect_v5(srv->port, "q1-pub");
    /* nobody subscribed yet: still acknowledged, with 0x10 */
    assert_int_equal(publish_qos1(pub, "q1/t", "lonely", 10), MQTT_RC_NO_MATCHING_SUBSCRIBERS);
    test_client *sub = tc_connect_v5(srv->port, "q1-sub");
    tc_subscribe(sub, "q1/#", 1);
    assert_int_equal(publish_qos1(pub, "q1/t", "heard", 11), MQTT_RC_SUCCESS);
    uint16_t id = tc_expect_publish(sub, "heard", 1, DUP_CLEAR);
    assert_true(id != 0);
    tc_ack(sub, MQTT_PUBACK, id, 0);
    /* the same packet id may be reused once acknowledged */
    assert_int_equal(publish_qos1(pub, "q1/t", "again", 11), MQTT_RC_SUCCESS);
    tc_ack(sub, MQTT_PUBACK, tc_expect_publish(sub, "again", 1, DUP_CLEAR), 0);
    tc_expect_silence(sub);
    tc_disconnect(sub, false, 0);
    tc_disconnect(pub, false, 0);
}

/*
 * The client's Receive Maximum is the broker's outbound window: with
 * window N and N+1 messages, the last one waits until one in flight is
 * settled (PUBACK for QoS 1; PUBCOMP, not PUBREC, for QoS 2).
 */
typedef struct window_case {
    uint16_t receive_maximum;
    uint8_t qos;
} window_case;

static const window_case window_cases[] = {
    {1, 1}, {2, 1}, {5, 1}, {1, 2}, {2, 2},
};

static void test_outbound_window_honours_receive_maximum(void **state)
{
    test_server *srv = *state;
    for (size_t k = 0; k < sizeof window_cases / sizeof *window_cases; k++) {
        const window_case *wc = &window_cases[k];
        char sub_id[32], topic[32], payload[32];
        snprintf(sub_id, sizeof sub_id, "win-sub-%zu", k);
        snprintf(topic, sizeof topic, "win/%zu", k);
        connect_opts o = {.version = MQTT_V5, .client_id = sub_id, .clean_start = true,
                          .receive_maximum = wc->receive_maximum};
        test_client *sub = tc_connect(srv->port, &o, NULL);
        tc_subscribe(sub, topic, wc->qos);
        test_client *pub = tc_connect_v5(srv->port, "win-pub");
        for (uint16_t i = 0; i <= wc->receive_maximum; i++) {
            snprintf(payload, sizeof payload, "m%u", i);
            if (wc->qos == 1)
                assert_int_equal(publish_qos1(pub, topic, payload, (uint16_t)(i + 1)), 0);
            else
                assert_int_equal(publish_qos2(pub, topic, payload, (uint16_t)(i + 1)), 0);
        }
        uint16_t ids[8];
        for (uint16_t i = 0; i < wc->receive_maximum; i++) {
            snprintf(payload, sizeof payload, "m%u", i);
            ids[i] = tc_expect_publish(sub, payload, wc->qos, DUP_CLEAR);
        }
        tc_expect_silence(sub); /* the window is full */
        if (wc->qos == 2) {
            tc_ack(sub, MQTT_PUBREC, ids[0], 0);
            assert_int_equal(tc_expect_ack(sub, MQTT_PUBREL, ids[0]), 0);
            tc_expect_silence(sub); /* PUBREC does not free the slot */
            tc_ack(sub, MQTT_PUBCOMP, ids[0], 0);
        } else {
            tc_ack(sub, MQTT_PUBACK, ids[0], 0);
        }
        snprintf(payload, sizeof payload, "m%u", wc->receive_maximum);
        tc_expect_publish(sub, payload, wc->qos, DUP_CLEAR);
        tc_expect_silence(sub);
        tc_disconnect(pub, false, 0);
        tc_disconnect(sub, false, 0);
    }
}

/* ---- QoS 2 ----------------------------------------------------------------- */

static void test_qos2_inbound_exactly_once(void **state)
{
    test_server *srv = *state;
    test_client *sub = tc_connect_v5(srv->port, "q2in-sub");
    tc_subscribe(sub, "q2in", 0);
    test_client *pub = tc_connect_v5(srv->port, "q2in-pub");

    tc_publish(pub, "q2in", "once", 2, 7, false);
    assert_int_equal(tc_expect_ack(pub, MQTT_PUBREC, 7), 0);
    tc_expect_publish(sub, "once", 0, DUP_CLEAR);

    /* the publisher did not see PUBREC and resends: acknowledged, not delivered */
    tc_publish(pub, "q2in", "once", 2, 7, true);
    assert_int_equal(tc_expect_ack(pub, MQTT_PUBREC, 7), 0);
    tc_expect_silence(sub);

    tc_ack(pub, MQTT_PUBREL, 7, 0);
    assert_int_equal(tc_expect_ack(pub, MQTT_PUBCOMP, 7), 0);
    /* PUBREL again, or for an id never used: Packet Identifier not found */
    tc_ack(pub, MQTT_PUBREL, 7, 0);
    assert_int_equal(tc_expect_ack(pub, MQTT_PUBCOMP, 7), MQTT_RC_PACKET_ID_NOT_FOUND);
    tc_ack(pub, MQTT_PUBREL, 99, 0);
    assert_int_equal(tc_expect_ack(pub, MQTT_PUBCOMP, 99), MQTT_RC_PACKET_ID_NOT_FOUND);

    /* after PUBCOMP the id is free: the same id now carries a new message */
    assert_int_equal(publish_qos2(pub, "q2in", "twice", 7), 0);
    tc_expect_publish(sub, "twice", 0, DUP_CLEAR);
    tc_expect_silence(sub);
    tc_disconnect(pub, false, 0);
    tc_disconnect(sub, false, 0);
}

static void test_qos2_outbound_flow(void **state)
{
    test_server *srv = *state;
    test_client *sub = tc_connect_v5(srv->port, "q2out-sub");
    tc_subscribe(sub, "q2out", 2);
    test_client *pub = tc_connect_v5(srv->port, "q2out-pub");
    assert_int_equal(publish_qos2(pub, "q2out", "exactly", 1), 0);

    uint16_t id = tc_expect_publish(sub, "exactly", 2, DUP_CLEAR);
    tc_ack(sub, MQTT_PUBREC, id, 0);
    assert_int_equal(tc_expect_ack(sub, MQTT_PUBREL, id), 0);
    tc_ack(sub, MQTT_PUBCOMP, id, 0);
    tc_expect_silence(sub);

    /* a PUBREC for an id not in flight: PUBREL with 0x92 */
    tc_ack(sub, MQTT_PUBREC, (uint16_t)(id + 100), 0);
    assert_int_equal(tc_expect_ack(sub, MQTT_PUBREL, (uint16_t)(id + 100)),
                     MQTT_RC_PACKET_ID_NOT_FOUND);

    /* a failing PUBREC ends the flow at once: no PUBREL */
    assert_int_equal(publish_qos2(pub, "q2out", "refused", 2), 0);
    id = tc_expect_publish(sub, "refused", 2, DUP_CLEAR);
    tc_ack(sub, MQTT_PUBREC, id, MQTT_RC_QUOTA_EXCEEDED);
    tc_expect_silence(sub);
    tc_disconnect(pub, false, 0);
    tc_disconnect(sub, false, 0);
}

/* ---- sessions ---------------------------------------------------------------- */

/*
 * A subscriber drops its connection with a QoS 1 message unacknowledged
 * and a QoS 2 message between PUBREC and PUBCOMP; one more message is
 * published while it is away. Resuming, it gets Session Present = 1, the
 * QoS 1 PUBLISH again with DUP = 1 and the same id, the PUBREL again, and
 * then the queued message.
 */
static void test_session_resume_redelivers(void **state)
{
    test_server *srv = *state;
    connect_opts o = {.version = MQTT_V5, .client_id = "resume-sub", .clean_start = true,
                      .session_expiry = SESSION_KEPT_S};
    bool present = true;
    test_client *sub = tc_connect(srv->port, &o, &present);
    assert_false(present);
    tc_subscribe(sub, "resume/#", 2);
    test_client *pub = tc_connect_v5(srv->port, "resume-pub");

    assert_int_equal(publish_qos1(pub, "resume/a", "unacked", 1), 0);
    assert_int_equal(publish_qos2(pub, "resume/b", "half-done", 2), 0);
    uint16_t id1 = tc_expect_publish(sub, "unacked", 1, DUP_CLEAR);
    uint16_t id2 = tc_expect_publish(sub, "half-done", 2, DUP_CLEAR);
    tc_ack(sub, MQTT_PUBREC, id2, 0);
    assert_int_equal(tc_expect_ack(sub, MQTT_PUBREL, id2), 0);
    tc_close(sub); /* network loss: no DISCONNECT */

    /* published while the subscriber is away (or being noticed as gone) */
    assert_int_equal(publish_qos1(pub, "resume/c", "while-away", 3), 0);

    o.clean_start = false;
    sub = tc_connect(srv->port, &o, &present);
    assert_true(present);
    assert_int_equal(tc_expect_publish(sub, "unacked", 1, DUP_SET), id1);
    assert_int_equal(tc_expect_ack(sub, MQTT_PUBREL, id2), 0);
    /* DUP is set if the broker sent it before it noticed the connection was gone */
    uint16_t id3 = tc_expect_publish(sub, "while-away", 1, DUP_EITHER);
    assert_true(id3 != id1 && id3 != id2);
    tc_ack(sub, MQTT_PUBACK, id1, 0);
    tc_ack(sub, MQTT_PUBCOMP, id2, 0);
    tc_ack(sub, MQTT_PUBACK, id3, 0);
    tc_expect_silence(sub);

    /* everything settled: a further resume has nothing to resend */
    tc_disconnect(sub, false, 0);
    sub = tc_connect(srv->port, &o, &present);
    assert_true(present);
    tc_expect_silence(sub);
    tc_disconnect(sub, false, 0);
    tc_disconnect(pub, false, 0);
}

/*
 * A session resumed with a smaller Receive Maximum than the connection that
 * left messages in flight: the resends obey the new window [MQTT-3.3.4-9]
 * and keep their order and ids [MQTT-4.4.0-1, 4.6.0-2]; a PUBREL resend is
 * not a PUBLISH, but its message still holds a slot until PUBCOMP; the
 * queued message comes only after every resend. One message the client
 * acknowledges before its resend (it had it from the old connection) is
 * not sent again.
 */
static void test_session_resume_honours_new_receive_maximum(void **state)
{
    test_server *srv = *state;
    connect_opts o = {.version = MQTT_V5, .client_id = "shrink-sub", .clean_start = true,
                      .session_expiry = SESSION_KEPT_S, .receive_maximum = 10};
    bool present = true;
    test_client *sub = tc_connect(srv->port, &o, &present);
    tc_subscribe(sub, "shrink/#", 2);
    test_client *pub = tc_connect_v5(srv->port, "shrink-pub");
    const char *sent[] = {"q2-half", "a", "b", "c", "d"};
    uint16_t ids[5];
    assert_int_equal(publish_qos2(pub, "shrink/x", sent[0], 1), 0);
    for (uint16_t i = 1; i < 5; i++)
        assert_int_equal(publish_qos1(pub, "shrink/x", sent[i], (uint16_t)(i + 1)), 0);
    for (int i = 0; i < 5; i++)
        ids[i] = tc_expect_publish(sub, sent[i], i ? 1 : 2, DUP_CLEAR);
    tc_ack(sub, MQTT_PUBREC, ids[0], 0);
    assert_int_equal(tc_expect_ack(sub, MQTT_PUBREL, ids[0]), 0);
    tc_close(sub);
    assert_int_equal(publish_qos1(pub, "shrink/x", "queued", 9), 0);

    o.clean_start = false;
    o.receive_maximum = 2; /* the PUBREL's message holds one slot: one resend fits */
    sub = tc_connect(srv->port, &o, &present);
    assert_true(present);
    assert_int_equal(tc_expect_ack(sub, MQTT_PUBREL, ids[0]), 0);
    assert_int_equal(tc_expect_publish(sub, "a", 1, DUP_SET), ids[1]);
    tc_expect_silence(sub);
    tc_ack(sub, MQTT_PUBACK, ids[3], 0); /* "c", from the old connection */
    tc_expect_silence(sub);
    tc_ack(sub, MQTT_PUBCOMP, ids[0], 0);
    assert_int_equal(tc_expect_publish(sub, "b", 1, DUP_SET), ids[2]);
    tc_expect_silence(sub);
    tc_ack(sub, MQTT_PUBACK, ids[1], 0);
    assert_int_equal(tc_expect_publish(sub, "d", 1, DUP_SET), ids[4]);
    tc_ack(sub, MQTT_PUBACK, ids[2], 0);
    uint16_t queued = tc_expect_publish(sub, "queued", 1, DUP_EITHER);
    tc_expect_silence(sub);
    tc_ack(sub, MQTT_PUBACK, ids[4], 0);
    tc_ack(sub, MQTT_PUBACK, queued, 0);
    tc_expect_silence(sub);

    tc_disconnect(sub, false, 0);
    sub = tc_connect(srv->port, &o, &present);
    assert_true(present);
    tc_expect_silence(sub); /* everything settled */
    tc_disconnect(sub, false, 0);
    tc_disconnect(pub, false, 0);
}

/*
 * Whether a session survives from one connection to the next. The first
 * connection subscribes and ends with DISCONNECT (optionally changing the
 * Session Expiry Interval); the second tells by Session Present and by
 * whether the subscription still routes (PUBACK 0x00 versus 0x10 No
 * matching subscribers, answered before the publisher's PUBACK).
 */
typedef struct lifetime_case {
    const char *name;
    uint8_t version;
    bool first_clean_start;
    uint32_t first_expiry;
    bool disconnect_sets_expiry;
    uint32_t disconnect_expiry;
    bool second_clean_start;
    bool expect_kept;
} lifetime_case;

static const lifetime_case lifetime_cases[] = {
    {"v5 expiry 60, resume", MQTT_V5, true, SESSION_KEPT_S, false, 0, false, true},
    {"v5 expiry 60, Clean Start", MQTT_V5, true, SESSION_KEPT_S, false, 0, true, false},
    {"v5 expiry 0, resume", MQTT_V5, true, 0, false, 0, false, false},
    {"v5 expiry 0 at DISCONNECT", MQTT_V5, true, SESSION_KEPT_S, true, 0, false, false},
    {"v5 expiry raised at DISCONNECT", MQTT_V5, true, 1, true, SESSION_KEPT_S, false, true},
    {"3.1.1 persistent, resume", MQTT_V311, false, 0, false, 0, false, true},
    {"3.1.1 persistent, clean", MQTT_V311, false, 0, false, 0, true, false},
    {"3.1.1 clean, then persistent", MQTT_V311, true, 0, false, 0, false, false},
};

static void test_session_lifetime_table(void **state)
{
    test_server *srv = *state;
    test_client *pub = tc_connect_v5(srv->port, "life-pub");
    for (size_t k = 0; k < sizeof lifetime_cases / sizeof *lifetime_cases; k++) {
        const lifetime_case *lc = &lifetime_cases[k];
        char client_id[32], topic[32];
        snprintf(client_id, sizeof client_id, "life-%zu", k);
        snprintf(topic, sizeof topic, "life/%zu", k);
        print_message("  case: %s\n", lc->name);

        connect_opts o = {.version = lc->version, .client_id = client_id,
                          .clean_start = lc->first_clean_start,
                          .session_expiry = lc->first_expiry};
        bool present = true;
        test_client *sub = tc_connect(srv->port, &o, &present);
        assert_false(present);
        tc_subscribe(sub, topic, 1);
        tc_disconnect(sub, lc->disconnect_sets_expiry, lc->disconnect_expiry);

        o.clean_start = lc->second_clean_start;
        o.session_expiry = SESSION_KEPT_S;
        sub = tc_connect(srv->port, &o, &present);
        if (present != lc->expect_kept)
            fail_msg("%s: Session Present = %d", lc->name, present);
        uint8_t reason = publish_qos1(pub, topic, "probe", (uint16_t)(k + 1));
        if (lc->expect_kept) {
            assert_int_equal(reason, MQTT_RC_SUCCESS);
            tc_ack(sub, MQTT_PUBACK, tc_expect_publish(sub, "probe", 1, DUP_CLEAR), 0);
        } else {
            assert_int_equal(reason, MQTT_RC_NO_MATCHING_SUBSCRIBERS);
        }
        tc_expect_silence(sub);
        tc_disconnect(sub, false, 0);
    }
    tc_disconnect(pub, false, 0);
}

/*
 * A second connection with the same client id takes the session over: the
 * first gets DISCONNECT 0x8E (MQTT 5) or is just closed (3.1.1); the
 * session carries on only if the first connection's expiry kept it.
 */
typedef struct takeover_case {
    uint8_t version;
    bool clean_start;      /* both connections */
    uint32_t expiry;       /* MQTT 5, both connections */
    bool expect_present;
} takeover_case;

static const takeover_case takeover_cases[] = {
    {MQTT_V5, true, SESSION_KEPT_S, false},
    {MQTT_V5, false, SESSION_KEPT_S, true},
    {MQTT_V5, false, 0, false},
    {MQTT_V311, false, 0, true},
    {MQTT_V311, true, 0, false},
};

static void test_session_takeover(void **state)
{
    test_server *srv = *state;
    for (size_t k = 0; k < sizeof takeover_cases / sizeof *takeover_cases; k++) {
        const takeover_case *tk = &takeover_cases[k];
        char client_id[32], topic[32];
        snprintf(client_id, sizeof client_id, "takeover-%zu", k);
        snprintf(topic, sizeof topic, "takeover/%zu", k);
        connect_opts o = {.version = tk->version, .client_id = client_id,
                          .clean_start = tk->clean_start, .session_expiry = tk->expiry};
        bool present = true;
        test_client *first = tc_connect(srv->port, &o, &present);
        assert_false(present);
        tc_subscribe(first, topic, 1);

        test_client *second = tc_connect(srv->port, &o, &present);
        if (present != tk->expect_present)
            fail_msg("case %zu: Session Present = %d", k, present);
        if (tk->version == MQTT_V5) {
            mqtt_packet pkt;
            tc_expect(first, MQTT_DISCONNECT, &pkt);
            assert_int_equal(pkt.u.disconnect.reason, MQTT_RC_SESSION_TAKEN_OVER);
        }
        tc_expect_eof(first);
        tc_close(first);

        /* the new connection is fully usable, the old one gets nothing */
        test_client *pub = tc_connect_v5(srv->port, "takeover-pub");
        uint8_t reason = publish_qos1(pub, topic, "after", 1);
        if (tk->expect_present) {
            assert_int_equal(reason, MQTT_RC_SUCCESS);
            tc_ack(second, MQTT_PUBACK, tc_expect_publish(second, "after", 1, DUP_CLEAR), 0);
        } else {
            assert_int_equal(reason, MQTT_RC_NO_MATCHING_SUBSCRIBERS);
        }
        tc_subscribe(second, topic, 1);
        assert_int_equal(publish_qos1(pub, topic, "again", 2), MQTT_RC_SUCCESS);
        tc_ack(second, MQTT_PUBACK, tc_expect_publish(second, "again", 1, DUP_CLEAR), 0);
        tc_expect_silence(second);
        tc_disconnect(second, false, 0);
        tc_disconnect(pub, false, 0);
    }
}

int main(void)
{
    alarm(180);
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_qos1_inbound_puback, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_outbound_window_honours_receive_maximum,
                                        server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_qos2_inbound_exactly_once, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_qos2_outbound_flow, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_session_resume_redelivers, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_session_resume_honours_new_receive_maximum,
                                        server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_session_lifetime_table, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_session_takeover, server_setup, server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

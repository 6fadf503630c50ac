/*
 * broker_testutil.h — what the broker's end-to-end unit tests share: a real
 * server as src/main.c wires it, run on a thread, and a blocking MQTT test
 * client on our own codec.
 *
 * The server is net_server with two event loops on 127.0.0.1, port 0; the
 * open broker application with open topics and anonymous clients;
 * broker_new + broker_listen. A test file with an application of its own
 * changes some of the open application's callbacks through server_start's
 * `app_bind` and keeps the rest, so it tests the broker as it is wired, not
 * a stand-in.
 *
 * The client talks through plain blocking sockets and speaks MQTT with our
 * codec (mqtt_encode / mqtt_frame_parse / mqtt_decode), so every byte the
 * broker sends is checked by the decoder. Every socket has a receive
 * timeout (SOCKET_TIMEOUT_S) so a missing packet fails the test instead of
 * hanging it; "nothing arrives" is checked by polling for SILENCE_MS.
 * server_teardown stops the server (net_server_stop, join) and frees
 * everything, so the tests run clean under LeakSanitizer.
 */
#ifndef IOTHUBD_TESTS_BROKER_TESTUTIL_H
#define IOTHUBD_TESTS_BROKER_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/open_app.h"
#include "mqtt/codec.h"
#include "net/server.h"
#include "socket_testutil.h"

#define SOCKET_TIMEOUT_S 3
#define SILENCE_MS 300
#define SESSION_KEPT_S 60

/* ---- the server under test ------------------------------------------------ */

typedef struct test_server {
    open_app *app;
    net_server *net;
    broker *broker;
    pthread_t thread;
    int run_result;
    int port;
} test_server;

static inline void *run_server_thread(void *arg)
{
    test_server *srv = arg;
    srv->run_result = net_server_run(srv->net);
    return NULL;
}

/* A test's own application: changes the open application's callbacks
 * (after saving them, to pass on what it does not handle itself). */
typedef void server_app_bind(broker_app *callbacks);

/* Starts a server with the open application, its callbacks given to
 * `app_bind` first if that is not NULL. `*broker_out` (if not NULL) is set
 * before the loops' thread starts, so the application's callbacks, which
 * run on that thread, may read it without a lock. */
static inline int server_start(void **state, server_app_bind *app_bind, broker **broker_out)
{
    char err[256];
    test_server *srv = calloc(1, sizeof *srv);
    assert_non_null(srv);
    open_app_config app_cfg = {.open_topics = true, .allow_anonymous = true};
    srv->app = open_app_new(&app_cfg, err, sizeof err);
    assert_non_null(srv->app);
    srv->net = net_server_new(2, err, sizeof err);
    assert_non_null(srv->net);
    broker_app callbacks;
    open_app_bind(srv->app, &callbacks);
    if (app_bind)
        app_bind(&callbacks);
    broker_limits limits;
    broker_limits_default(&limits);
    srv->broker = broker_new(srv->net, &limits, &callbacks);
    assert_non_null(srv->broker);
    if (broker_out)
        *broker_out = srv->broker;
    if (!broker_listen(srv->broker, "127.0.0.1:0", NULL, &srv->port, err, sizeof err))
        fail_msg("broker_listen: %s", err);
    assert_true(srv->port > 0);
    assert_int_equal(pthread_create(&srv->thread, NULL, run_server_thread, srv), 0);
    *state = srv;
    return 0;
}

static inline int server_setup(void **state) { return server_start(state, NULL, NULL); }

static inline int server_teardown(void **state)
{
    test_server *srv = *state;
    net_server_stop(srv->net);
    pthread_join(srv->thread, NULL);
    assert_int_equal(srv->run_result, 0);
    broker_free(srv->broker);
    net_server_free(srv->net);
    open_app_free(srv->app);
    free(srv);
    return 0;
}

/* ---- a blocking MQTT test client on our codec ---------------------------- */

typedef struct test_client {
    int fd;
    uint8_t version;
    uint8_t buf[16384];
    size_t len;      /* bytes buffered */
    size_t last_len; /* bytes of the packet returned last (dropped on next read) */
} test_client;

typedef struct connect_opts {
    uint8_t version;          /* MQTT_V5 or MQTT_V311 */
    const char *client_id;
    bool clean_start;
    uint32_t session_expiry;  /* MQTT 5; 0 = property left out */
    uint16_t receive_maximum; /* MQTT 5; 0 = property left out */
    uint16_t keep_alive;      /* seconds; 0 = 60 */
} connect_opts;

static inline test_client *tc_open(int port, uint8_t version)
{
    test_client *tc = calloc(1, sizeof *tc);
    assert_non_null(tc);
    tc->version = version;
    tc->fd = loopback_connect(port, SOCKET_TIMEOUT_S, 0);
    return tc;
}

static inline void tc_close(test_client *tc)
{
    close(tc->fd);
    free(tc);
}

static inline void tc_send(test_client *tc, const mqtt_packet *pkt)
{
    uint8_t out[4096];
    size_t n = mqtt_encoded_size(pkt, tc->version);
    assert_true(n > 0 && n <= sizeof out);
    assert_int_equal(mqtt_encode(pkt, tc->version, out), n);
    for (size_t sent = 0; sent < n;) {
        ssize_t w = send(tc->fd, out + sent, n - sent, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            fail_msg("send: %s", strerror(errno));
        sent += (size_t)w;
    }
}

typedef enum recv_result { RECV_PACKET, RECV_EOF, RECV_TIMEOUT } recv_result;

/* Reads the next packet; its slices stay valid until the next call. */
static inline recv_result tc_recv(test_client *tc, mqtt_packet *out)
{
    memmove(tc->buf, tc->buf + tc->last_len, tc->len - tc->last_len);
    tc->len -= tc->last_len;
    tc->last_len = 0;
    for (;;) {
        mqtt_frame frame;
        mqtt_frame_status st = mqtt_frame_parse(tc->buf, tc->len, 0, &frame);
        assert_int_not_equal(st, MQTT_FRAME_ERROR);
        if (st == MQTT_FRAME_OK) {
            uint8_t rc = mqtt_decode(tc->buf, frame.total_len, tc->version, out);
            if (rc != 0)
                fail_msg("broker sent an undecodable %s (%s)",
                         mqtt_packet_type_name(frame.type), mqtt_reason_name(rc));
            tc->last_len = frame.total_len;
            return RECV_PACKET;
        }
        assert_true(tc->len < sizeof tc->buf);
        ssize_t n = recv(tc->fd, tc->buf + tc->len, sizeof tc->buf - tc->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return RECV_EOF;
        if (n < 0)
            return RECV_TIMEOUT;
        tc->len += (size_t)n;
    }
}

static inline void tc_expect(test_client *tc, uint8_t type, mqtt_packet *out)
{
    recv_result r = tc_recv(tc, out);
    if (r != RECV_PACKET)
        fail_msg("expected %s, got %s", mqtt_packet_type_name(type),
                 r == RECV_EOF ? "end of connection" : "nothing (timeout)");
    if (out->type != type)
        fail_msg("expected %s, got %s", mqtt_packet_type_name(type),
                 mqtt_packet_type_name(out->type));
}

static inline void tc_expect_eof(test_client *tc)
{
    mqtt_packet pkt;
    recv_result r = tc_recv(tc, &pkt);
    if (r != RECV_EOF)
        fail_msg("expected the broker to close, got %s",
                 r == RECV_PACKET ? mqtt_packet_type_name(pkt.type) : "a timeout");
}

/* Nothing arrives within SILENCE_MS (neither a packet nor a close). */
static inline void tc_expect_silence(test_client *tc)
{
    if (tc->len > tc->last_len)
        fail_msg("unexpected bytes already buffered");
    struct pollfd pfd = {.fd = tc->fd, .events = POLLIN};
    int n = poll(&pfd, 1, SILENCE_MS);
    if (n != 0) {
        mqtt_packet pkt;
        recv_result r = tc_recv(tc, &pkt);
        fail_msg("expected silence, got %s",
                 r == RECV_PACKET ? mqtt_packet_type_name(pkt.type) : "end of connection");
    }
}

/* Opens a connection and completes CONNECT/CONNACK (reason 0). */
static inline test_client *tc_connect(int port, const connect_opts *o, bool *session_present)
{
    test_client *tc = tc_open(port, o->version);
    mqtt_packet pkt = {.type = MQTT_CONNECT};
    mqtt_connect *c = &pkt.u.connect;
    c->protocol_name = MQTT_BYTES_LIT("MQTT");
    c->protocol_version = o->version;
    c->clean_start = o->clean_start;
    c->keep_alive = o->keep_alive ? o->keep_alive : 60;
    c->client_id = (mqtt_bytes){(const uint8_t *)o->client_id, (uint32_t)strlen(o->client_id)};
    if (o->session_expiry) {
        c->props.session_expiry_interval = o->session_expiry;
        MQTT_SET(&c->props, MQTT_PROP_SESSION_EXPIRY_INTERVAL);
    }
    if (o->receive_maximum) {
        c->props.receive_maximum = o->receive_maximum;
        MQTT_SET(&c->props, MQTT_PROP_RECEIVE_MAXIMUM);
    }
    tc_send(tc, &pkt);
    mqtt_packet ack;
    tc_expect(tc, MQTT_CONNACK, &ack);
    assert_int_equal(ack.u.connack.reason, 0);
    if (session_present)
        *session_present = ack.u.connack.session_present;
    return tc;
}

static inline test_client *tc_connect_v5(int port, const char *client_id)
{
    connect_opts o = {.version = MQTT_V5, .client_id = client_id, .clean_start = true};
    return tc_connect(port, &o, NULL);
}

static inline void tc_subscribe(test_client *tc, const char *filter, uint8_t qos)
{
    mqtt_sub_entry entry = {
        .filter = {(const uint8_t *)filter, (uint32_t)strlen(filter)},
        .options = qos,
    };
    mqtt_packet pkt = {.type = MQTT_SUBSCRIBE};
    pkt.u.subscribe.packet_id = 1;
    pkt.u.subscribe.count = 1;
    pkt.u.subscribe.list = &entry;
    tc_send(tc, &pkt);
    mqtt_packet ack;
    tc_expect(tc, MQTT_SUBACK, &ack);
    assert_int_equal(ack.u.suback.count, 1);
    assert_int_equal(ack.u.suback.reasons[0], qos);
}

static inline void tc_publish(test_client *tc, const char *topic, const char *payload,
                              uint8_t qos, uint16_t packet_id, bool dup)
{
    mqtt_packet pkt = {.type = MQTT_PUBLISH};
    mqtt_publish *p = &pkt.u.publish;
    p->qos = qos;
    p->dup = dup;
    p->packet_id = packet_id;
    p->topic = (mqtt_bytes){(const uint8_t *)topic, (uint32_t)strlen(topic)};
    p->payload = (mqtt_bytes){(const uint8_t *)payload, (uint32_t)strlen(payload)};
    tc_send(tc, &pkt);
}

static inline void tc_ack(test_client *tc, uint8_t type, uint16_t packet_id, uint8_t reason)
{
    mqtt_packet pkt = {.type = type};
    pkt.u.ack.packet_id = packet_id;
    pkt.u.ack.reason = reason;
    tc_send(tc, &pkt);
}

/* Expects an acknowledgement of `type` for `packet_id`; returns its reason. */
static inline uint8_t tc_expect_ack(test_client *tc, uint8_t type, uint16_t packet_id)
{
    mqtt_packet pkt;
    tc_expect(tc, type, &pkt);
    assert_int_equal(pkt.u.ack.packet_id, packet_id);
    return pkt.u.ack.reason;
}

enum { DUP_CLEAR = 0, DUP_SET = 1, DUP_EITHER = -1 };

/* Expects a PUBLISH of this payload at this QoS, with the DUP flag as given
 * (DUP_EITHER: not checked); returns its packet id. */
static inline uint16_t tc_expect_publish(test_client *tc, const char *payload, uint8_t qos,
                                         int dup)
{
    mqtt_packet pkt;
    tc_expect(tc, MQTT_PUBLISH, &pkt);
    if (!mqtt_bytes_eq_str(pkt.u.publish.payload, payload))
        fail_msg("expected payload \"%s\", got \"%.*s\"", payload,
                 (int)pkt.u.publish.payload.len, (const char *)pkt.u.publish.payload.p);
    assert_int_equal(pkt.u.publish.qos, qos);
    if (dup != DUP_EITHER)
        assert_int_equal(pkt.u.publish.dup, dup);
    return pkt.u.publish.packet_id;
}

/* QoS 1 publish answered by PUBACK; returns the PUBACK reason. */
static inline uint8_t publish_qos1(test_client *tc, const char *topic, const char *payload,
                                   uint16_t packet_id)
{
    tc_publish(tc, topic, payload, 1, packet_id, false);
    return tc_expect_ack(tc, MQTT_PUBACK, packet_id);
}

/* The whole QoS 2 exchange from the publisher's side; returns the PUBREC reason. */
static inline uint8_t publish_qos2(test_client *tc, const char *topic, const char *payload,
                                   uint16_t packet_id)
{
    tc_publish(tc, topic, payload, 2, packet_id, false);
    uint8_t reason = tc_expect_ack(tc, MQTT_PUBREC, packet_id);
    tc_ack(tc, MQTT_PUBREL, packet_id, 0);
    assert_int_equal(tc_expect_ack(tc, MQTT_PUBCOMP, packet_id), 0);
    return reason;
}

static inline void tc_disconnect(test_client *tc, bool with_expiry, uint32_t expiry)
{
    mqtt_packet pkt = {.type = MQTT_DISCONNECT};
    if (with_expiry) {
        pkt.u.disconnect.props.session_expiry_interval = expiry;
        MQTT_SET(&pkt.u.disconnect.props, MQTT_PROP_SESSION_EXPIRY_INTERVAL);
    }
    tc_send(tc, &pkt);
    tc_expect_eof(tc);
    tc_close(tc);
}

#endif /* IOTHUBD_TESTS_BROKER_TESTUTIL_H */

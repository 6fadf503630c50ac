/*
 * broker/input.c — from bytes on a connection to packet handlers, and the
 * life and death of a client connection.
 *
 * on_input frames and decodes as many whole packets as the bytes hold and
 * dispatches each by type (one handler per packet type, in the file named
 * after it). A packet that breaks the protocol ends the connection with the
 * reason code the standard asks for: DISCONNECT to a connected MQTT 5
 * client, a CONNACK with the code before CONNECT was accepted, or a silent
 * close where the standard says so (3.1.1, and anything before CONNECT).
 *
 * Liveness: before CONNECT a timeout, once connected one timer for the
 * keep-alive and the application's deadline together (whichever is due
 * first; client_arm_liveness).
 *
 * While the application decides on a CONNECT (or an AUTH exchange runs, or
 * the connection moves to its session's loop) input is paused: later
 * packets wait unread in the buffer until the client is connected.
 */
#include "broker/internal.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/time.h"

/* An idle connection's size is one of the per-connection figures of
 * docs/PERFORMANCE.md: the 96-byte net_conn, this and the hub's 24 bytes of
 * app data are one 256-byte malloc block (x86-64); a field added here
 * moves it to the next. */
_Static_assert(sizeof(void *) != 8 || sizeof(broker_client) <= 128,
               "broker_client outgrew 128 bytes");

/* A handle no other client of this process ever has (the application's
 * pending answers rely on it): the loop's own counter, interleaved with
 * the other loops' (handle mod nloops is the loop that made it), so no two
 * loops share a counter. Never 0 ("none"). */
static broker_client_handle new_handle(broker_loop *bl)
{
    return ++bl->handles * bl->b->nloops + bl->index;
}

/* The client is made in its connection's block (the handler's user_size:
 * the struct and the app's bytes, zeroed), and freed with it after
 * on_close. */
static void *on_open(net_conn *conn, void *area, void *listener_arg)
{
    broker *b = listener_arg;
    broker_loop *bl = broker_loop_of(b, net_conn_loop(conn));
    broker_client *c = area;
    c->bl = bl;
    c->handle = new_handle(bl);
    c->state = CLIENT_AWAIT_CONNECT;
    c->info.protocol_version = MQTT_V5; /* until CONNECT says otherwise */
    c->info.request_problem_info = true;
    c->last_rx_ms = (uint32_t)net_loop_now_ms(bl->loop);
    client_start_connect_timer(c);
    return c;
}

static void on_liveness_timer(net_loop *loop, net_timer *t);

/* Milliseconds since the client's last packet. The two clocks are cached
 * per loop iteration on different loops: after a migration, this loop's
 * `now` may be a little behind the `last_rx_ms` the other loop stamped, so
 * a negative difference counts as 0 (an unsigned one would wrap into a
 * huge idle time and a bogus keep-alive timeout). */
static uint64_t idle_ms(const broker_client *c)
{
    int32_t d = (int32_t)((uint32_t)net_loop_now_ms(c->bl->loop) - c->last_rx_ms);
    return d > 0 ? (uint64_t)d : 0;
}

/* Keep-alive: 1.5 × the negotiated interval without any packet from the
 * client [MQTT-3.1.2-22]; UINT64_MAX when there is none. */
static uint64_t keepalive_left_ms(const broker_client *c)
{
    if (c->keep_alive == 0)
        return UINT64_MAX;
    uint64_t limit = (uint64_t)c->keep_alive * 1500u;
    uint64_t idle = idle_ms(c);
    return idle >= limit ? 0 : limit - idle;
}

/* The application's deadline is wall-clock time (a token's expiry); the
 * timer is monotonic, armed with the difference. UINT64_MAX when none. */
static uint64_t deadline_left_ms(const broker_client *c)
{
    if (c->deadline_wall_ms == 0)
        return UINT64_MAX;
    uint64_t now = time_wall_ms();
    return c->deadline_wall_ms > now ? c->deadline_wall_ms - now : 0;
}

/* The timer is not re-armed per packet; when it fires early it re-arms
 * for the time that is really left. */
void client_arm_liveness(broker_client *c)
{
    uint64_t delay = keepalive_left_ms(c);
    uint64_t deadline = deadline_left_ms(c);
    if (deadline < delay)
        delay = deadline;
    if (delay == UINT64_MAX)
        net_timer_stop(c->bl->loop, &c->liveness_timer);
    else
        net_timer_start(c->bl->loop, &c->liveness_timer, delay, on_liveness_timer);
}

/* The deadline has passed (by the wall clock, which may have moved back
 * since the timer was armed: then it is not due yet). It is cleared before
 * the application hears of it, so the application may set a new one. */
static bool deadline_due(broker_client *c)
{
    if (c->deadline_wall_ms == 0 || time_wall_ms() < c->deadline_wall_ms)
        return false;
    c->deadline_wall_ms = 0;
    return true;
}

static void on_liveness_timer(net_loop *loop, net_timer *t)
{
    broker_client *c = (broker_client *)((char *)t - offsetof(broker_client, liveness_timer));
    broker *b = c->bl->b;
    (void)loop;
    if (deadline_due(c) && b->app.deadline_passed) {
        b->app.deadline_passed(b->app.ctx, c);
        if (c->state != CLIENT_CONNECTED)
            return; /* the application closed it */
    }
    if (c->keep_alive && keepalive_left_ms(c) == 0) {
        log_info("%s: keep-alive timeout (%us)", client_id_or(c, "?"), c->keep_alive);
        client_close(c, MQTT_RC_KEEP_ALIVE_TIMEOUT, NULL);
        return;
    }
    client_arm_liveness(c);
}

static void on_connect_timer(net_loop *loop, net_timer *t)
{
    (void)loop;
    broker_client *c = (broker_client *)((char *)t - offsetof(broker_client, connect_timer));
    if (c->state == CLIENT_CONNECTED)
        return;
    log_info("%s: no CONNECT in time", net_conn_peer_str(client_conn(c)));
    c->will_suppressed = true;
    c->state = CLIENT_CLOSED;
    net_conn_close(client_conn(c), false);
}

void client_start_connect_timer(broker_client *c)
{
    net_timer_start(c->bl->loop, &c->connect_timer, client_limits(c)->connect_timeout_ms,
                    on_connect_timer);
}

void client_close(broker_client *c, uint8_t reason, const char *reason_string)
{
    if (c->state == CLIENT_CLOSED)
        return;
    if (c->state == CLIENT_CONNECTED)
        send_disconnect(c, reason, reason_string);
    c->close_reason = reason;
    c->state = CLIENT_CLOSED;
    net_conn_close(client_conn(c), true);
}

void client_close_props(broker_client *c, uint8_t reason, const mqtt_props *props)
{
    if (c->state == CLIENT_CLOSED)
        return;
    if (c->state == CLIENT_CONNECTED)
        send_disconnect_props(c, reason, props);
    c->close_reason = reason;
    c->state = CLIENT_CLOSED;
    net_conn_close(client_conn(c), true);
}

/* A protocol violation: the reason goes in CONNACK before CONNECT was
 * accepted, in DISCONNECT after. */
static void protocol_violation(broker_client *c, uint8_t reason, const char *what)
{
    log_info("%s %s: %s (%s)", net_conn_peer_str(client_conn(c)), client_id_or(c, ""),
             what, mqtt_reason_name(reason));
    if (c->state == CLIENT_AWAIT_CONNECT) {
        c->state = CLIENT_CLOSED;
        net_conn_close(client_conn(c), true);
        return;
    }
    client_close(c, reason, what);
}

/* Whether a packet of this type is acceptable in the client's state. */
static bool allowed_in_state(const broker_client *c, uint8_t type)
{
    switch ((client_state)c->state) {
    case CLIENT_AWAIT_CONNECT:
        return type == MQTT_CONNECT;
    case CLIENT_AUTHENTICATING:
        return type == MQTT_AUTH || type == MQTT_DISCONNECT;
    case CLIENT_CONNECTED:
        return type != MQTT_CONNECT && type != MQTT_CONNACK && type != MQTT_SUBACK &&
               type != MQTT_UNSUBACK && type != MQTT_PINGRESP &&
               (type != MQTT_AUTH || c->info.protocol_version == MQTT_V5);
    default:
        return false;
    }
}

static void dispatch(broker_client *c, mqtt_packet *pkt)
{
    switch (pkt->type) {
    case MQTT_CONNECT: handle_connect(c, &pkt->u.connect); break;
    case MQTT_PUBLISH: handle_publish(c, &pkt->u.publish); break;
    case MQTT_PUBACK: handle_puback(c, &pkt->u.ack); break;
    case MQTT_PUBREC: handle_pubrec(c, &pkt->u.ack); break;
    case MQTT_PUBREL: handle_pubrel(c, &pkt->u.ack); break;
    case MQTT_PUBCOMP: handle_pubcomp(c, &pkt->u.ack); break;
    case MQTT_SUBSCRIBE: handle_subscribe(c, &pkt->u.subscribe); break;
    case MQTT_UNSUBSCRIBE: handle_unsubscribe(c, &pkt->u.unsubscribe); break;
    case MQTT_PINGREQ: {
        mqtt_packet resp = {.type = MQTT_PINGRESP};
        send_packet(c, &resp);
        break;
    }
    case MQTT_DISCONNECT: handle_disconnect(c, &pkt->u.disconnect); break;
    case MQTT_AUTH: handle_auth(c, &pkt->u.auth); break;
    default: break;
    }
}

/*
 * A CONNECT the decoder refused. The client learns why in a CONNACK in the
 * protocol version it asked for, when that is readable from the bytes
 * [MQTT-3.1.4-2]: an unknown version gets the 3.1.1 form with return code
 * 1 [MQTT-3.1.2-2], a 3.1.1 client with an empty id and CleanSession 0 gets
 * return code 2 [MQTT-3.1.3-8]. Then the connection is closed.
 */
static void refuse_bad_connect(broker_client *c, const uint8_t *pkt, const mqtt_frame *f,
                               uint8_t rc)
{
    const uint8_t *vh = pkt + f->header_len;
    size_t vlen = f->total_len - f->header_len;
    bool named = vlen >= 7 && vh[0] == 0 && vh[1] == 4 && memcmp(vh + 2, "MQTT", 4) == 0;
    c->info.protocol_version = named && vh[6] == MQTT_V5 ? MQTT_V5 : MQTT_V311;
    log_info("%s: CONNECT refused (%s)", net_conn_peer_str(client_conn(c)), mqtt_reason_name(rc));
    if (rc == MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION || rc == MQTT_RC_CLIENT_ID_NOT_VALID ||
        c->info.protocol_version == MQTT_V5)
        send_connack(c, false, rc, NULL);
    c->will_suppressed = true;
    c->state = CLIENT_CLOSED;
    net_conn_close(client_conn(c), true);
}

static size_t on_input(net_conn *conn, void *user, const uint8_t *data, size_t len)
{
    broker_client *c = user;
    size_t off = 0;
    uint32_t max = client_limits(c)->maximum_packet_size;
    while (off < len && (c->state == CLIENT_AWAIT_CONNECT || c->state == CLIENT_CONNECTED ||
                         c->state == CLIENT_AUTHENTICATING)) {
        mqtt_frame f;
        mqtt_frame_status st = mqtt_frame_parse(data + off, len - off, max, &f);
        if (st == MQTT_FRAME_NEED_MORE)
            break;
        if (st == MQTT_FRAME_ERROR) {
            protocol_violation(c, f.reason, f.reason == MQTT_RC_PACKET_TOO_LARGE
                                                ? "packet larger than Maximum Packet Size"
                                                : "malformed fixed header");
            return len;
        }
        mqtt_packet pkt;
        uint8_t rc = mqtt_decode(data + off, f.total_len, c->info.protocol_version, &pkt);
        off += f.total_len;
        c->last_rx_ms = (uint32_t)net_loop_now_ms(c->bl->loop);
        if (rc != 0) {
            if (f.type == MQTT_CONNECT && c->state == CLIENT_AWAIT_CONNECT) {
                refuse_bad_connect(c, data + off - f.total_len, &f, rc);
                return len;
            }
            protocol_violation(c, rc, mqtt_packet_type_name(f.type));
            return len;
        }
        if (!allowed_in_state(c, pkt.type)) {
            protocol_violation(c, MQTT_RC_PROTOCOL_ERROR, "unexpected packet");
            return len;
        }
        dispatch(c, &pkt);
        /* CONNECT pauses input until it is answered; stop here so the
         * bytes that follow are handled in the right state. */
        if (pkt.type == MQTT_CONNECT || c->state != CLIENT_CONNECTED)
            break;
    }
    return off;
}

void client_resume_input(broker_client *c)
{
    if (c->state == CLIENT_CONNECTED || c->state == CLIENT_AUTHENTICATING)
        net_conn_pause_input(client_conn(c), false);
}

static void on_drain(net_conn *conn, void *user)
{
    (void)conn;
    broker_client *c = user;
    if (c->state == CLIENT_CONNECTED && c->session)
        session_resume_delivery(c->session);
}

static void on_close(net_conn *conn, void *user)
{
    (void)conn;
    broker_client *c = user;
    broker_loop *bl = c->bl;
    net_timer_stop(bl->loop, &c->liveness_timer);
    net_timer_stop(bl->loop, &c->connect_timer);
    if (c->state != CLIENT_CLOSED && !c->close_reason)
        c->close_reason = MQTT_RC_UNSPECIFIED_ERROR; /* network loss */
    c->state = CLIENT_CLOSED;
    if (c->session)
        session_detach(c->session, c);
    if (c->app_notified && bl->b->app.disconnected)
        bl->b->app.disconnected(bl->b->app.ctx, c, c->close_reason);
    client_free_connect_state(c); /* the client itself goes with conn */
}

const net_conn_handler broker_conn_handler = {
    .on_open = on_open,
    .on_input = on_input,
    .on_drain = on_drain,
    .on_close = on_close,
};

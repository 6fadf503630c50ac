/*
 * broker/send.c — encoding packets to a client's output queue.
 *
 * Every packet the broker sends goes through send_packet(), which encodes
 * straight into the connection's output queue (no intermediate buffer).
 * The helpers below build the control packets and apply the two rules that
 * shape what we may say to an MQTT 5 client: with Request Problem
 * Information = 0 only CONNACK, PUBLISH and DISCONNECT may carry a Reason
 * String or user properties [MQTT-3.1.2-29]; and nothing may exceed the
 * client's Maximum Packet Size — an answer that would is trimmed, first of
 * its Reason String, then of its user properties [MQTT-3.1.2-25], [MQTT-3.4.2-2].
 */
#include "broker/internal.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"

bool send_packet(broker_client *c, const mqtt_packet *pkt)
{
    net_conn *conn = client_conn(c);
    if (c->state == CLIENT_CLOSED || net_conn_closing(conn))
        return false;
    size_t n = mqtt_encoded_size(pkt, c->info.protocol_version);
    if (n == 0)
        return false;
    uint8_t *out = net_conn_reserve(conn, n);
    if (!out)
        return false;
    size_t w = mqtt_encode(pkt, c->info.protocol_version, out);
    net_conn_commit(conn, w);
    return w == n;
}

/* Drops what the client did not ask for or cannot take. Returns false if
 * even the bare packet is too large (cannot happen for control packets). */
static bool fit_to_client(broker_client *c, mqtt_packet *pkt, mqtt_props *props,
                          bool problem_info_allowed)
{
    if (!problem_info_allowed && !c->info.request_problem_info) {
        props->present &= ~MQTT_PROP_BIT(MQTT_PROP_REASON_STRING);
        props->user_count = 0;
    }
    if (c->info.max_packet == 0)
        return true;
    if (mqtt_encoded_size(pkt, c->info.protocol_version) <= c->info.max_packet)
        return true;
    props->present &= ~MQTT_PROP_BIT(MQTT_PROP_REASON_STRING);
    if (mqtt_encoded_size(pkt, c->info.protocol_version) <= c->info.max_packet)
        return true;
    props->user_count = 0;
    return mqtt_encoded_size(pkt, c->info.protocol_version) <= c->info.max_packet;
}

void send_ack(broker_client *c, uint8_t type, uint16_t packet_id, uint8_t reason,
              const mqtt_props *props)
{
    mqtt_packet pkt = {.type = type};
    pkt.u.ack.packet_id = packet_id;
    pkt.u.ack.reason = reason;
    if (props)
        pkt.u.ack.props = *props;
    if (fit_to_client(c, &pkt, &pkt.u.ack.props, false))
        send_packet(c, &pkt);
}

void send_connack(broker_client *c, bool session_present, uint8_t reason,
                  const mqtt_props *props)
{
    mqtt_packet pkt = {.type = MQTT_CONNACK};
    pkt.u.connack.session_present = session_present;
    if (c->info.protocol_version == MQTT_V311) {
        switch (reason) {
        case MQTT_RC_SUCCESS: break;
        case MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION: reason = MQTT311_CONNACK_BAD_PROTOCOL; break;
        case MQTT_RC_CLIENT_ID_NOT_VALID: reason = MQTT311_CONNACK_ID_REJECTED; break;
        case MQTT_RC_BAD_USERNAME_OR_PASSWORD: reason = MQTT311_CONNACK_BAD_CREDENTIALS; break;
        case MQTT_RC_NOT_AUTHORIZED:
        case MQTT_RC_BAD_AUTHENTICATION_METHOD: reason = MQTT311_CONNACK_NOT_AUTHORIZED; break;
        default: reason = MQTT311_CONNACK_UNAVAILABLE; break;
        }
    } else if (props) {
        pkt.u.connack.props = *props;
    }
    pkt.u.connack.reason = reason;
    if (fit_to_client(c, &pkt, &pkt.u.connack.props, true))
        send_packet(c, &pkt);
}

void send_auth(broker_client *c, uint8_t reason, const mqtt_props *props)
{
    mqtt_packet pkt = {.type = MQTT_AUTH};
    pkt.u.auth.reason = reason;
    if (props)
        pkt.u.auth.props = *props;
    if (c->has_auth_method) {
        pkt.u.auth.props.authentication_method = broker_client_auth_method(c);
        MQTT_SET(&pkt.u.auth.props, MQTT_PROP_AUTHENTICATION_METHOD);
    }
    if (fit_to_client(c, &pkt, &pkt.u.auth.props, false))
        send_packet(c, &pkt);
}

/* MQTT 3.1.1 has no server DISCONNECT: the connection is just closed. */
void send_disconnect(broker_client *c, uint8_t reason, const char *reason_string)
{
    mqtt_props props = {0};
    if (reason_string) {
        props.reason_string =
            (mqtt_bytes){(const uint8_t *)reason_string, (uint32_t)strlen(reason_string)};
        MQTT_SET(&props, MQTT_PROP_REASON_STRING);
    }
    send_disconnect_props(c, reason, &props);
}

/* DISCONNECT with the application's Reason String and user properties
 * (nothing else of `props` is sent). */
void send_disconnect_props(broker_client *c, uint8_t reason, const mqtt_props *props)
{
    if (c->info.protocol_version != MQTT_V5)
        return;
    mqtt_packet pkt = {.type = MQTT_DISCONNECT};
    pkt.u.disconnect.reason = reason;
    if (props) {
        pkt.u.disconnect.props.present = props->present & MQTT_PROP_BIT(MQTT_PROP_REASON_STRING);
        pkt.u.disconnect.props.reason_string = props->reason_string;
        pkt.u.disconnect.props.user = props->user;
        pkt.u.disconnect.props.user_count = props->user_count;
    }
    if (fit_to_client(c, &pkt, &pkt.u.disconnect.props, true))
        send_packet(c, &pkt);
}

/* Copies one slice into the arena at *cursor and re-points it. */
static void copy_slice(mqtt_bytes *b, uint8_t **cursor)
{
    if (b->len == 0) {
        b->p = NULL;
        return;
    }
    memcpy(*cursor, b->p, b->len);
    b->p = *cursor;
    *cursor += b->len;
}

/*
 * Deep-copies a property set so that it outlives the buffer it was decoded
 * from (or the application's stack): one allocation holds every string.
 * Returns 0, or MQTT_RC_UNSPECIFIED_ERROR when out of memory.
 */
uint8_t props_deep_copy(const mqtt_props *src, mqtt_props *dst, uint8_t **mem)
{
    *dst = *src;
    mqtt_bytes *slices[] = {
        &dst->content_type, &dst->response_topic, &dst->correlation_data,
        &dst->assigned_client_identifier, &dst->authentication_method,
        &dst->authentication_data, &dst->response_information,
        &dst->server_reference, &dst->reason_string, &dst->user,
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof slices / sizeof *slices; i++)
        total += slices[i]->len;
    *mem = NULL;
    if (total == 0)
        return 0;
    uint8_t *arena = malloc(total);
    if (!arena)
        return MQTT_RC_UNSPECIFIED_ERROR;
    uint8_t *cursor = arena;
    for (size_t i = 0; i < sizeof slices / sizeof *slices; i++)
        copy_slice(slices[i], &cursor);
    *mem = arena;
    return 0;
}

/*
 * broker/publish.c — PUBLISH from a client, and PUBREL, its QoS 2 sequel.
 *
 * The broker checks what the protocol says (QoS and retain against what we
 * offered, topic aliases, our Receive Maximum) and then asks the
 * application what the message means: the open broker routes it, the hub
 * stores it and may acknowledge later. QoS 2 uses "method B" of the
 * standard (4.3.3): the message is passed on when PUBLISH arrives and its
 * packet id is remembered until PUBREL, so a resent PUBLISH is recognised
 * and not passed on twice.
 */
#include "broker/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

/* Resolves a Topic Alias [MQTT-3.3.2-7 .. 12]: a PUBLISH with topic and
 * alias sets the alias; one with an empty topic uses it. Returns 0 or the
 * reason code to disconnect with. */
static uint8_t resolve_topic_alias(broker_client *c, const mqtt_publish *pkt, mqtt_bytes *topic)
{
    uint16_t max = client_limits(c)->topic_alias_maximum;
    uint16_t alias = pkt->props.topic_alias;
    if (alias == 0 || alias > max)
        return MQTT_RC_TOPIC_ALIAS_INVALID;
    client_ext *x = client_extra(c);
    if (!x)
        return MQTT_RC_SERVER_BUSY;
    if (!x->alias_in) {
        x->alias_in = calloc((size_t)max + 1, sizeof *x->alias_in);
        if (!x->alias_in) {
            client_trim_extra(c);
            return MQTT_RC_SERVER_BUSY;
        }
    }
    mqtt_bytes *slot = &x->alias_in[alias];
    if (pkt->topic.len == 0) {
        if (slot->len == 0)
            return MQTT_RC_PROTOCOL_ERROR;
        *topic = *slot;
        return 0;
    }
    uint8_t *copy = malloc(pkt->topic.len);
    if (!copy)
        return MQTT_RC_SERVER_BUSY;
    memcpy(copy, pkt->topic.p, pkt->topic.len);
    free((void *)slot->p);
    *slot = (mqtt_bytes){copy, pkt->topic.len};
    *topic = pkt->topic;
    return 0;
}

/* PUBACK for QoS 1, PUBREC for QoS 2 (remembering the id unless refused). */
static void acknowledge(broker_client *c, uint8_t qos, uint16_t packet_id, uint8_t reason,
                        const mqtt_props *props)
{
    if (qos == 1) {
        send_ack(c, MQTT_PUBACK, packet_id, reason, props);
    } else if (qos == 2) {
        if (reason < 0x80 && c->session && !session_qos2_in_add(c->session, packet_id))
            reason = MQTT_RC_SERVER_BUSY;
        send_ack(c, MQTT_PUBREC, packet_id, reason, props);
    }
}

static void route_publish(broker_client *c, mqtt_bytes topic, const mqtt_publish *pkt)
{
    broker_msg *msg = broker_msg_new(pkt, topic, c->session, net_loop_now_ms(c->bl->loop));
    if (!msg) {
        acknowledge(c, pkt->qos, pkt->packet_id, MQTT_RC_SERVER_BUSY, NULL);
        return;
    }
    size_t matched = 0;
    route_message(c->bl, msg, &matched);
    broker_msg_unref(msg);
    acknowledge(c, pkt->qos, pkt->packet_id,
                matched ? MQTT_RC_SUCCESS : MQTT_RC_NO_MATCHING_SUBSCRIBERS, NULL);
}

static void refuse_publish(broker_client *c, const mqtt_publish *pkt, const broker_answer *a)
{
    if (pkt->qos > 0) {
        acknowledge(c, pkt->qos, pkt->packet_id, a->reason, &a->props);
        return;
    }
    client_close_props(c, a->reason, &a->props);
}

void handle_publish(broker_client *c, mqtt_publish *pkt)
{
    broker *b = c->bl->b;
    const broker_limits *l = client_limits(c);
    session *s = c->session;
    if (pkt->qos > l->maximum_qos) { /* [MQTT-3.2.2-11] */
        client_close(c, MQTT_RC_QOS_NOT_SUPPORTED, NULL);
        return;
    }
    if (pkt->retain && !l->retain_available) { /* [MQTT-3.2.2-14] */
        client_close(c, MQTT_RC_RETAIN_NOT_SUPPORTED, NULL);
        return;
    }
    if (MQTT_HAS(&pkt->props, MQTT_PROP_SUBSCRIPTION_IDENTIFIER)) { /* [MQTT-3.3.4-6] */
        client_close(c, MQTT_RC_PROTOCOL_ERROR, "Subscription Identifier in a client PUBLISH");
        return;
    }
    mqtt_bytes topic = pkt->topic;
    if (MQTT_HAS(&pkt->props, MQTT_PROP_TOPIC_ALIAS)) {
        uint8_t rc = resolve_topic_alias(c, pkt, &topic);
        if (rc) {
            client_close(c, rc, rc == MQTT_RC_PROTOCOL_ERROR ? "unknown Topic Alias" : NULL);
            return;
        }
        /* The alias is the broker's business; it does not travel on. */
        pkt->props.present &= ~MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS);
    }
    if (pkt->qos == 2 && session_qos2_in_has(s, pkt->packet_id)) {
        send_ack(c, MQTT_PUBREC, pkt->packet_id, MQTT_RC_SUCCESS, NULL); /* a resend */
        return;
    }
    if (pkt->qos > 0 && c->pending_in + session_ext_of(s)->nqos2_in >= l->receive_maximum) {
        client_close(c, MQTT_RC_RECEIVE_MAXIMUM_EXCEEDED, NULL); /* [MQTT-3.3.4-9] */
        return;
    }
    broker_answer answer = {0};
    switch (b->app.publish(b->app.ctx, c, topic, pkt, &answer)) {
    case BROKER_PUBLISH_ROUTE:
        route_publish(c, topic, pkt);
        break;
    case BROKER_PUBLISH_DONE:
        acknowledge(c, pkt->qos, pkt->packet_id, answer.reason, &answer.props);
        break;
    case BROKER_PUBLISH_REFUSE:
        refuse_publish(c, pkt, &answer);
        break;
    case BROKER_PUBLISH_PENDING:
        if (pkt->qos > 0)
            c->pending_in++;
        break;
    }
}

void broker_publish_complete(broker_client *c, uint16_t packet_id, uint8_t qos,
                             const broker_answer *answer)
{
    if (c->pending_in)
        c->pending_in--;
    if (c->state == CLIENT_CONNECTED)
        acknowledge(c, qos, packet_id, answer->reason, &answer->props);
}

void handle_pubrel(broker_client *c, const mqtt_ack *ack)
{
    bool known = session_qos2_in_del(c->session, ack->packet_id);
    send_ack(c, MQTT_PUBCOMP, ack->packet_id,
             known ? MQTT_RC_SUCCESS : MQTT_RC_PACKET_ID_NOT_FOUND, NULL);
}

/*
 * broker/message.h — an application message in flight through the broker.
 *
 * One PUBLISH that is routed becomes one broker_msg: a single allocation
 * holding the topic, the payload and the properties that travel with it
 * (Payload Format Indicator, Message Expiry, Content Type, Response Topic,
 * Correlation Data, user properties). It is immutable after creation and
 * reference-counted, so fan-out to many subscribers, on any loop, shares it;
 * what differs per subscriber (packet id, QoS, retain flag, subscription
 * identifiers, topic alias) is decided when the PUBLISH is encoded for that
 * subscriber.
 */
#ifndef IOTHUBD_BROKER_MESSAGE_H
#define IOTHUBD_BROKER_MESSAGE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "mqtt/packet.h"

typedef struct broker_msg {
    atomic_uint refs;
    uint8_t qos;        /* QoS it was published with */
    bool retain;        /* retain flag as published */
    bool has_expiry;
    uint64_t expires_at_ms; /* monotonic; valid if has_expiry */
    const void *origin; /* publishing session, for No Local; never dereferenced */
    mqtt_bytes topic;
    mqtt_bytes payload;
    mqtt_props props;   /* only the forwarded properties; slices into data[] */
    uint8_t data[];
} broker_msg;

/*
 * Copies what travels of `pub` (whose topic is `topic`: the resolved name
 * when a Topic Alias was used) into a new message with one reference.
 * `now_ms` is the monotonic time, for Message Expiry. NULL on allocation
 * failure.
 */
broker_msg *broker_msg_new(const mqtt_publish *pub, mqtt_bytes topic,
                           const void *origin, uint64_t now_ms);

static inline broker_msg *broker_msg_ref(broker_msg *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void broker_msg_unref(broker_msg *m);

/* Seconds of Message Expiry left at `now_ms` (rounded up), or 0 when it has
 * expired; only meaningful when m->has_expiry. */
uint32_t broker_msg_expiry_left(const broker_msg *m, uint64_t now_ms);
static inline bool broker_msg_expired(const broker_msg *m, uint64_t now_ms)
{
    return m->has_expiry && now_ms >= m->expires_at_ms;
}

#endif

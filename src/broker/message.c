/*
 * broker/message.c — see message.h.
 *
 * Layout of one message: the struct, then data[] holding, in order, the
 * topic, the payload, Content Type, Response Topic, Correlation Data and the
 * user properties (only the id-0x26 entries of the publisher's property
 * region, re-packed back to back). Every slice of the message points into
 * data[], so the whole thing is one malloc and one free.
 */
#include "broker/message.h"

#include <stdlib.h>
#include <string.h>

/* Properties forwarded with the message (besides user properties). */
#define FORWARDED_PROPS                                                       \
    (MQTT_PROP_BIT(MQTT_PROP_PAYLOAD_FORMAT_INDICATOR) |                      \
     MQTT_PROP_BIT(MQTT_PROP_MESSAGE_EXPIRY_INTERVAL) |                       \
     MQTT_PROP_BIT(MQTT_PROP_CONTENT_TYPE) |                                  \
     MQTT_PROP_BIT(MQTT_PROP_RESPONSE_TOPIC) |                                \
     MQTT_PROP_BIT(MQTT_PROP_CORRELATION_DATA))

/*
 * Size of the value of a property entry with identifier `id` starting at
 * p[0..avail), or 0 if the id is unknown or the value is truncated (the
 * region comes from the decoder and is valid, so this is only defensive).
 */
static size_t prop_value_size(uint8_t id, const uint8_t *p, size_t avail)
{
    switch (id) {
    case MQTT_PROP_PAYLOAD_FORMAT_INDICATOR:
    case MQTT_PROP_REQUEST_PROBLEM_INFORMATION:
    case MQTT_PROP_REQUEST_RESPONSE_INFORMATION:
    case MQTT_PROP_MAXIMUM_QOS:
    case MQTT_PROP_RETAIN_AVAILABLE:
    case MQTT_PROP_WILDCARD_SUBSCRIPTION_AVAILABLE:
    case MQTT_PROP_SUBSCRIPTION_IDENTIFIER_AVAILABLE:
    case MQTT_PROP_SHARED_SUBSCRIPTION_AVAILABLE:
        return avail >= 1 ? 1 : 0;
    case MQTT_PROP_SERVER_KEEP_ALIVE:
    case MQTT_PROP_RECEIVE_MAXIMUM:
    case MQTT_PROP_TOPIC_ALIAS_MAXIMUM:
    case MQTT_PROP_TOPIC_ALIAS:
        return avail >= 2 ? 2 : 0;
    case MQTT_PROP_MESSAGE_EXPIRY_INTERVAL:
    case MQTT_PROP_SESSION_EXPIRY_INTERVAL:
    case MQTT_PROP_WILL_DELAY_INTERVAL:
    case MQTT_PROP_MAXIMUM_PACKET_SIZE:
        return avail >= 4 ? 4 : 0;
    case MQTT_PROP_SUBSCRIPTION_IDENTIFIER:
        for (size_t i = 0; i < 4 && i < avail; i++)
            if (!(p[i] & 0x80))
                return i + 1;
        return 0;
    case MQTT_PROP_CONTENT_TYPE:
    case MQTT_PROP_RESPONSE_TOPIC:
    case MQTT_PROP_CORRELATION_DATA:
    case MQTT_PROP_ASSIGNED_CLIENT_IDENTIFIER:
    case MQTT_PROP_AUTHENTICATION_METHOD:
    case MQTT_PROP_AUTHENTICATION_DATA:
    case MQTT_PROP_RESPONSE_INFORMATION:
    case MQTT_PROP_SERVER_REFERENCE:
    case MQTT_PROP_REASON_STRING: {
        if (avail < 2)
            return 0;
        size_t n = 2 + ((size_t)p[0] << 8 | p[1]);
        return n <= avail ? n : 0;
    }
    case MQTT_PROP_USER_PROPERTY: {
        if (avail < 2)
            return 0;
        size_t n1 = 2 + ((size_t)p[0] << 8 | p[1]);
        if (n1 + 2 > avail)
            return 0;
        size_t n = n1 + 2 + ((size_t)p[n1] << 8 | p[n1 + 1]);
        return n <= avail ? n : 0;
    }
    default:
        return 0;
    }
}

/*
 * Walks the region `r`; for every user property entry, adds its encoded
 * size (id byte included) to *size and one to *count, and copies it to
 * `dst` (advancing) when dst is not NULL.
 */
static void collect_user_props(mqtt_bytes r, uint8_t *dst, size_t *size,
                               uint32_t *count)
{
    size_t off = 0;
    *size = 0;
    *count = 0;
    while (off < r.len) {
        uint8_t id = r.p[off];
        size_t vs = prop_value_size(id, r.p + off + 1, r.len - off - 1);
        if (vs == 0)
            break; /* unknown id or truncated: stop (cannot resync) */
        if (id == MQTT_PROP_USER_PROPERTY) {
            if (dst) {
                memcpy(dst + *size, r.p + off, 1 + vs);
            }
            *size += 1 + vs;
            (*count)++;
        }
        off += 1 + vs;
    }
}

static mqtt_bytes put(uint8_t **w, mqtt_bytes b)
{
    mqtt_bytes out = {*w, b.len};
    if (b.len) {
        memcpy(*w, b.p, b.len);
        *w += b.len;
    }
    return out;
}

broker_msg *broker_msg_new(const mqtt_publish *pub, mqtt_bytes topic,
                           const void *origin, uint64_t now_ms)
{
    const mqtt_props *in = &pub->props;
    uint64_t present = in->present & FORWARDED_PROPS;
    mqtt_bytes ct = {NULL, 0}, rt = {NULL, 0}, cd = {NULL, 0};
    if (present & MQTT_PROP_BIT(MQTT_PROP_CONTENT_TYPE))
        ct = in->content_type;
    if (present & MQTT_PROP_BIT(MQTT_PROP_RESPONSE_TOPIC))
        rt = in->response_topic;
    if (present & MQTT_PROP_BIT(MQTT_PROP_CORRELATION_DATA))
        cd = in->correlation_data;

    size_t user_size = 0;
    uint32_t user_count = 0;
    if (in->user_count && in->user.len)
        collect_user_props(in->user, NULL, &user_size, &user_count);

    /* Each part is < 2^32; five of them plus user_size cannot overflow a
     * 64-bit size_t, and on 32-bit we check. */
    size_t parts[] = {topic.len, pub->payload.len, ct.len, rt.len, cd.len,
                      user_size};
    size_t total = sizeof(broker_msg);
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        if (parts[i] > SIZE_MAX - total)
            return NULL;
        total += parts[i];
    }

    broker_msg *m = malloc(total);
    if (!m)
        return NULL;
    memset(m, 0, sizeof *m);
    atomic_init(&m->refs, 1);
    m->qos = pub->qos;
    m->retain = pub->retain;
    m->origin = origin;

    uint8_t *w = m->data;
    m->topic = put(&w, topic);
    m->payload = put(&w, pub->payload);

    mqtt_props *out = &m->props;
    out->present = present;
    if (present & MQTT_PROP_BIT(MQTT_PROP_PAYLOAD_FORMAT_INDICATOR))
        out->payload_format_indicator = in->payload_format_indicator;
    if (present & MQTT_PROP_BIT(MQTT_PROP_MESSAGE_EXPIRY_INTERVAL)) {
        out->message_expiry_interval = in->message_expiry_interval;
        m->has_expiry = true;
        m->expires_at_ms = now_ms + (uint64_t)in->message_expiry_interval * 1000u;
    }
    if (present & MQTT_PROP_BIT(MQTT_PROP_CONTENT_TYPE))
        out->content_type = put(&w, ct);
    if (present & MQTT_PROP_BIT(MQTT_PROP_RESPONSE_TOPIC))
        out->response_topic = put(&w, rt);
    if (present & MQTT_PROP_BIT(MQTT_PROP_CORRELATION_DATA))
        out->correlation_data = put(&w, cd);
    if (user_count) {
        size_t sz;
        uint32_t cnt;
        collect_user_props(in->user, w, &sz, &cnt);
        out->user = (mqtt_bytes){w, (uint32_t)sz};
        out->user_count = cnt;
        w += sz;
    }
    return m;
}

void broker_msg_unref(broker_msg *m)
{
    if (!m)
        return;
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        free(m);
}

uint32_t broker_msg_expiry_left(const broker_msg *m, uint64_t now_ms)
{
    if (now_ms >= m->expires_at_ms)
        return 0;
    uint64_t s = (m->expires_at_ms - now_ms + 999u) / 1000u;
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

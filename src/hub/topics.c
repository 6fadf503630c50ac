/*
 * hub/topics.c — the $iothub/ topic table and its rules
 * (../shared/spec/iothub-mqtt5.md §2).
 *
 * Matching is exact and case-sensitive: a table of names, no trie, no
 * broker semantics under `$iothub/`. What a device may subscribe to is
 * decided here; the broker then records the subscription in the device's
 * session, and the hub later asks the broker whether the device holds it
 * (broker_client_has_subscription) before sending a notification: the
 * session is the one truth, across UNSUBSCRIBE and resumed sessions.
 *
 * `$iothub/responses` needs no real subscription: the hub sends responses
 * straight to the requesting client (broker_client_send), so every device
 * is "subscribed" from its CONNECT on, and an UNSUBSCRIBE cannot remove it.
 * A SUBSCRIBE to it is granted (QoS 0) and means nothing more.
 *
 * The open topic space (everything not under `$iothub/`) is open to
 * devices only when the server runs with --open-topics; then the open
 * broker's rules (ACL) decide, as for its own clients. Without it, such
 * topics are undefined topics like any other: SUBACK 0x8F / 0xA2, PUBACK
 * 131 status 0504, DISCONNECT 0x90.
 */
#include <stdio.h>
#include <string.h>

#include "hub/hub_internal.h"
#include "util/log.h"
#include "util/utf8.h"

#define IOTHUB_PREFIX "$iothub/"
#define METHODS_PREFIX "$iothub/methods/"

static bool starts_with(mqtt_bytes b, const char *prefix)
{
    size_t n = strlen(prefix);
    return b.len >= n && memcmp(b.p, prefix, n) == 0;
}

bool hub_topic_reserved(mqtt_bytes topic_or_filter)
{
    return starts_with(topic_or_filter, IOTHUB_PREFIX) ||
           mqtt_bytes_eq_str(topic_or_filter, "$iothub");
}

hub_topic hub_topic_of(mqtt_bytes topic)
{
    static const struct { const char *name; hub_topic kind; } table[] = {
        {"$iothub/telemetry", HUB_TOPIC_TELEMETRY},
        {"$iothub/twin/get", HUB_TOPIC_TWIN_GET},
        {"$iothub/twin/patch/reported", HUB_TOPIC_TWIN_PATCH_REPORTED},
        {"$iothub/responses", HUB_TOPIC_RESPONSES},
    };
    if (!hub_topic_reserved(topic))
        return HUB_TOPIC_OPEN;
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        if (mqtt_bytes_eq_str(topic, table[i].name))
            return table[i].kind;
    return HUB_TOPIC_UNDEFINED;
}

/* A single-level method name: non-empty, no '/', no wildcard. */
static bool valid_method_name(mqtt_bytes name)
{
    if (name.len == 0)
        return false;
    for (uint32_t i = 0; i < name.len; i++)
        if (name.p[i] == '/' || name.p[i] == '+' || name.p[i] == '#')
            return false;
    return true;
}

bool hub_is_methods_filter(mqtt_bytes filter)
{
    return starts_with(filter, METHODS_PREFIX);
}

uint8_t hub_subscribe_rule(mqtt_bytes filter, uint8_t qos, bool *open)
{
    *open = false;
    bool wildcard = mqtt_topic_filter_has_wildcard(filter);
    if (!hub_topic_reserved(filter)) {
        *open = true; /* the caller decides whether the open space exists */
        return qos;
    }
    if (mqtt_bytes_eq_str(filter, "$iothub/twin/patch/desired") ||
        mqtt_bytes_eq_str(filter, "$iothub/responses") ||
        mqtt_bytes_eq_str(filter, "$iothub/methods/+"))
        return 0;
    if (mqtt_bytes_eq_str(filter, "$iothub/commands"))
        return qos; /* at most 1: the broker capped it to Maximum QoS */
    if (wildcard)
        return MQTT_RC_WILDCARD_SUBS_NOT_SUPPORTED;
    if (starts_with(filter, METHODS_PREFIX)) {
        size_t n = strlen(METHODS_PREFIX);
        mqtt_bytes name = {filter.p + n, filter.len - (uint32_t)n};
        if (valid_method_name(name))
            return 0;
    }
    return MQTT_RC_TOPIC_FILTER_INVALID;
}

/* An undefined topic: PUBACK 131 status 0504 at QoS 1; at QoS 0 the
 * client cannot be told otherwise, so DISCONNECT 0x90 with the topic. */
static broker_publish_action refuse_undefined(hub_client *hc, mqtt_bytes topic, uint8_t qos,
                                              broker_answer *answer)
{
    char reason[160];
    snprintf(reason, sizeof reason, "Unsupported topic: %.*s",
             (int)utf8_fit((const char *)topic.p, topic.len, 120),
             (const char *)topic.p);
    log_info("%s: %s (QoS %u)", hub_client_id(hc), reason, qos);
    hub_answer_failure(hub_client_answer(hc), qos ? MQTT_PUBACK : MQTT_DISCONNECT, HUB_NOT_FOUND,
                       qos ? 0 : MQTT_RC_TOPIC_NAME_INVALID, reason, hub_client_max_packet(hc), answer);
    return qos ? BROKER_PUBLISH_DONE : BROKER_PUBLISH_REFUSE;
}

broker_publish_action hub_device_publish(hub *h, hub_client *hc, mqtt_bytes topic,
                                         const mqtt_publish *pkt, broker_answer *answer)
{
    hub_topic kind = hub_topic_of(topic);
    switch (kind) {
    case HUB_TOPIC_TELEMETRY:
        return hub_handle_telemetry(h, hc, pkt, answer);
    case HUB_TOPIC_TWIN_GET:
    case HUB_TOPIC_TWIN_PATCH_REPORTED:
        return hub_handle_request(h, hc, kind, pkt, answer);
    case HUB_TOPIC_RESPONSES:
        return hub_methods_reply(h, hc, pkt, answer); /* methods.c */
    case HUB_TOPIC_OPEN:
        if (h->cfg.open_topics && h->open)
            return h->open_cbs.publish(h->open_cbs.ctx, hub_client_broker(hc), topic, pkt, answer);
        return refuse_undefined(hc, topic, pkt->qos, answer);
    case HUB_TOPIC_UNDEFINED:
    default:
        return refuse_undefined(hc, topic, pkt->qos, answer);
    }
}

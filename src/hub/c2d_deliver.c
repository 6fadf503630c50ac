/*
 * hub/c2d_deliver.c — the MQTT side of cloud-to-device commands: putting
 * queued commands in front of a device on `$iothub/commands` and reading
 * its PUBACKs (../shared/spec/iothub-mqtt5.md §6).
 *
 * Runs on the loop that serves the device's connection (the hub posts
 * there). A command goes out only to a device (not a module) whose session
 * holds the `$iothub/commands` subscription, at QoS 1 through
 * broker_client_send with a fresh app_tag per delivery, and is locked for
 * cfg.lock_ms. At most C2D_MAX_LOCKED commands per device are out at once;
 * each settlement sends the next. The PUBACK comes back through the
 * broker's settled(): the tag finds the delivery (a stale tag, e.g. the
 * acknowledgement of a delivery whose lock already ran out and which went
 * out again, finds nothing and is ignored). A connection that ends
 * releases its locks without counting: the broker drops commands still
 * queued or in flight in the session (they are the application's), so
 * nothing is delivered twice from both places.
 *
 * Properties of each PUBLISH: sequence-no, enqueued-time, delivery-count,
 * then the stored ones (creation-time, message-id, user-id,
 * correlation-id, content-encoding, @name), and Content Type.
 */
#include <stdlib.h>
#include <string.h>

#include "hub/c2d_internal.h"
#include "mqtt/codec.h"
#include "util/fmt.h"
#include "util/log.h"
#include "util/time.h"

#define COMMANDS_TOPIC "$iothub/commands"

static bool append_number(uint8_t *block, size_t cap, size_t *len, const char *name,
                          uint64_t value)
{
    char num[FMT_U64_MAX];
    size_t digits = fmt_u64(num, value);
    return mqtt_user_props_append(block, cap, len,
                                  (mqtt_bytes){(const uint8_t *)name, (uint32_t)strlen(name)},
                                  (mqtt_bytes){(const uint8_t *)num, (uint32_t)digits});
}

/* The PUBLISH of one delivery as a broker message; NULL for a damaged
 * record or when out of memory. */
static broker_msg *command_message(const c2d_msg *m, net_loop *loop)
{
    c2d_props_view v;
    if (!c2d_props_decode(m->props, m->props_len, &v))
        return NULL;
    size_t cap = 3 * 64 + v.users.len, len = 0;
    uint8_t *users = malloc(cap);
    if (!users)
        return NULL;
    bool ok = append_number(users, cap, &len, "sequence-no", m->seq) &&
              append_number(users, cap, &len, "enqueued-time", (uint64_t)m->enqueued_ms) &&
              append_number(users, cap, &len, "delivery-count", m->delivery_count);
    broker_msg *msg = NULL;
    if (ok) {
        if (v.users.len)
            memcpy(users + len, v.users.p, v.users.len);
        len += v.users.len;
        mqtt_publish pub = {.topic = MQTT_BYTES_LIT(COMMANDS_TOPIC), .qos = 1};
        pub.payload = (mqtt_bytes){m->body, (uint32_t)m->body_len};
        pub.props.user = (mqtt_bytes){users, (uint32_t)len};
        pub.props.user_count = 3 + v.user_count;
        if (v.content_type.len) {
            pub.props.content_type = v.content_type;
            MQTT_SET(&pub.props, MQTT_PROP_CONTENT_TYPE);
        }
        msg = broker_msg_new(&pub, pub.topic, NULL, net_loop_now_ms(loop));
    }
    free(users);
    return msg;
}

/* Sends m to the client and locks it; false when the broker cannot take it. */
static bool deliver_one(hub_c2d *c, device_queue *dq, c2d_msg *m, broker_client *bc, int64_t now)
{
    broker_msg *msg = command_message(m, broker_client_loop(bc));
    if (!msg) {
        log_warn("c2d: %s #%llu cannot be encoded; dropped", dq->device_id,
                 (unsigned long long)m->seq);
        c2d_finish(c, dq, m, C2D_OUTCOME_REJECTED);
        return true;
    }
    uint64_t tag = c->next_tag++;
    bool sent = broker_client_send(bc, msg, 1, tag);
    broker_msg_unref(msg);
    if (!sent)
        return false;
    int64_t until = now + (int64_t)c->cfg.lock_ms;
    c2d_queue_lock(&dq->q, m, broker_client_get_handle(bc), tag, until);
    c2d_note_deadline(c, until);
    log_debug("c2d: %s #%llu delivered (count %u)", dq->device_id, (unsigned long long)m->seq,
              m->delivery_count);
    return true;
}

/* Delivers while the device has available commands and lock slots. Lock held. */
static void deliver_locked(hub_c2d *c, device_queue *dq, broker_client *bc)
{
    int64_t now = (int64_t)time_wall_ms();
    while (dq->q.locked < C2D_MAX_LOCKED) {
        c2d_msg *m = c2d_queue_next_available(&dq->q, now);
        if (!m || !deliver_one(c, dq, m, bc, now))
            return;
    }
}

void c2d_deliver(hub_c2d *c, broker_client *bc, const char *device_id)
{
    if (!broker_client_has_subscription(bc, COMMANDS_TOPIC))
        return;
    pthread_mutex_lock(&c->lock);
    device_queue *dq = c2d_queue_of(c, device_id, false);
    if (dq)
        deliver_locked(c, dq, bc);
    pthread_mutex_unlock(&c->lock);
}

/* The `status` user property of a PUBACK (empty when absent). */
static mqtt_bytes ack_status(const mqtt_ack *ack)
{
    mqtt_iter it;
    mqtt_bytes name, value;
    mqtt_user_props_iter(&ack->props, &it);
    while (mqtt_user_props_next(&it, &name, &value))
        if (mqtt_bytes_eq_str(name, "status"))
            return value;
    return (mqtt_bytes){0};
}

/* Abandon: back in the queue with its count + 1, or dead-lettered when
 * the count reaches the maximum. */
static void abandon(hub_c2d *c, device_queue *dq, c2d_msg *m)
{
    c2d_queue_unlock(&dq->q, m);
    m->delivery_count++;
    if (m->delivery_count >= c->cfg.max_delivery_count) {
        c2d_finish(c, dq, m, C2D_OUTCOME_DELIVERY_COUNT_EXCEEDED);
        return;
    }
    c2d_store_count(c, dq, m);
}

void c2d_settled(hub_c2d *c, broker_client *bc, const char *device_id, uint64_t app_tag,
                 const mqtt_ack *ack)
{
    pthread_mutex_lock(&c->lock);
    device_queue *dq = c2d_queue_of(c, device_id, false);
    c2d_msg *m = dq ? c2d_queue_find_tag(&dq->q, app_tag) : NULL;
    if (!m) {
        pthread_mutex_unlock(&c->lock);
        log_debug("c2d: %s: acknowledgement of a delivery no longer locked", device_id);
        return;
    }
    switch (c2d_settlement_of(ack->reason, ack_status(ack))) {
    case C2D_COMPLETE:
        c2d_finish(c, dq, m, C2D_OUTCOME_SUCCESS);
        break;
    case C2D_REJECT:
        c2d_finish(c, dq, m, C2D_OUTCOME_REJECTED);
        break;
    case C2D_ABANDON:
        abandon(c, dq, m);
        break;
    }
    deliver_locked(c, dq, bc);
    pthread_mutex_unlock(&c->lock);
}

void c2d_connection_gone(hub_c2d *c, const char *device_id, broker_client_handle handle)
{
    pthread_mutex_lock(&c->lock);
    device_queue *dq = c2d_queue_of(c, device_id, false);
    /* A newer connection (a take-over) may be waiting for these. */
    if (dq && c2d_queue_unlock_owner(&dq->q, handle))
        c2d_kick(c, device_id);
    pthread_mutex_unlock(&c->lock);
}

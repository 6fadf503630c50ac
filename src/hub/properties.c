/*
 * hub/properties.c — user-property values and the properties of answers
 * (../shared/spec/iothub-mqtt5.md §4, §5).
 *
 * Reading: the spec's value types are decimal text (`time` = ms since the
 * epoch, `u32`, `u64`); parsing is strict (digits only) so that a bad
 * value is a Bad Request, never a silently wrong number.
 *
 * Writing: a failure answer carries `status` and `reason` user properties
 * and the reason as Reason String. The spec orders what to drop when that
 * would exceed the client's Maximum Packet Size: user properties from the
 * end, the Reason String last. The broker's own trimming drops the Reason
 * String first, so the hub trims to the exact rule itself and the broker
 * then finds nothing to cut. Request Problem Information = 0 is applied by
 * the broker (no user properties on PUBACK).
 *
 * Answers are read by the broker after the callback returns, so their
 * storage is the client's hub_answer_buf, not the stack. Responses
 * (PUBLISH on $iothub/responses) are copied into a broker_msg at once.
 */
#include <string.h>
#include <strings.h>

#include "hub/hub_internal.h"
#include "util/fmt.h"
#include "util/log.h"
#include "util/utf8.h"

#define MAX_USER_PROPS 4

bool hub_parse_u64(mqtt_bytes v, uint64_t *out)
{
    if (v.len == 0 || v.len > 20)
        return false;
    uint64_t n = 0;
    for (uint32_t i = 0; i < v.len; i++) {
        uint8_t d = v.p[i];
        if (d < '0' || d > '9')
            return false;
        if (n > (UINT64_MAX - (d - '0')) / 10)
            return false;
        n = n * 10 + (d - '0');
    }
    *out = n;
    return true;
}

bool hub_parse_u32(mqtt_bytes v, uint32_t *out)
{
    uint64_t n;
    if (!hub_parse_u64(v, &n) || n > UINT32_MAX)
        return false;
    *out = (uint32_t)n;
    return true;
}

bool hub_copy_str(mqtt_bytes v, char *out, size_t cap)
{
    if (v.len >= cap || (v.len && memchr(v.p, '\0', v.len)))
        return false;
    if (v.len)
        memcpy(out, v.p, v.len);
    out[v.len] = '\0';
    return true;
}

bool hub_bytes_eq_nocase(mqtt_bytes a, const char *s)
{
    size_t n = strlen(s);
    return a.len == n && (n == 0 || strncasecmp((const char *)a.p, s, n) == 0);
}

/* Encoded size of a PUBACK or DISCONNECT with these properties. */
static size_t answer_size(uint8_t type, uint8_t reason, const mqtt_props *props)
{
    mqtt_packet pkt = {.type = type};
    if (type == MQTT_DISCONNECT) {
        pkt.u.disconnect.reason = reason;
        pkt.u.disconnect.props = *props;
    } else {
        pkt.u.ack.packet_id = 1;
        pkt.u.ack.reason = reason;
        pkt.u.ack.props = *props;
    }
    return mqtt_encoded_size(&pkt, MQTT_V5);
}

/* Drops user properties from the end, then the Reason String, until the
 * answer fits in max_packet (0 = no limit). lens[i] = block length after
 * i+1 properties. */
static void trim_answer(uint8_t type, uint8_t reason, mqtt_props *p, const size_t *lens,
                        uint32_t max_packet)
{
    if (max_packet == 0)
        return;
    while (answer_size(type, reason, p) > max_packet) {
        if (p->user_count > 0) {
            p->user_count--;
            p->user.len = p->user_count ? (uint32_t)lens[p->user_count - 1] : 0;
        } else if (MQTT_HAS(p, MQTT_PROP_REASON_STRING)) {
            p->present &= ~MQTT_PROP_BIT(MQTT_PROP_REASON_STRING);
        } else {
            return;
        }
    }
}

/* Copies a reason into out (cap bytes, NUL-terminated) as well-formed
 * UTF-8, as MQTT 5 requires of a Reason String or user property: cut
 * between characters, and what is not UTF-8 (a parser's error text may
 * quote half a character) turned into '?'. Returns its length. */
static size_t copy_reason(const char *reason, char *out, size_t cap)
{
    size_t len = reason ? strlen(reason) : 0, n = len < cap ? len : cap - 1;
    if (n < len) { /* drop the character the cut split, if it was one */
        size_t whole = utf8_fit(reason, len, n);
        n = n - whole < 4 ? whole : n;
    }
    if (n)
        memcpy(out, reason, n);
    out[n] = '\0';
    utf8_scrub(out, n);
    return n;
}

void hub_answer_failure(hub_answer_buf *buf, uint8_t type, hub_status st, uint8_t reason_code,
                        const char *reason, uint32_t max_packet, broker_answer *out)
{
    memset(out, 0, sizeof *out);
    out->reason = reason_code ? reason_code : hub_status_reason_code(st);
    if (!buf)
        return;
    hub_status_text(st, buf->status);
    size_t rlen = copy_reason(reason, buf->reason, sizeof buf->reason);
    mqtt_props *p = &out->props;
    size_t len = 0, lens[MAX_USER_PROPS];
    if (mqtt_user_props_append(buf->users, sizeof buf->users, &len, MQTT_BYTES_LIT("status"),
                               (mqtt_bytes){(const uint8_t *)buf->status, 4}))
        lens[p->user_count++] = len;
    if (rlen && mqtt_user_props_append(buf->users, sizeof buf->users, &len,
                                       MQTT_BYTES_LIT("reason"),
                                       (mqtt_bytes){(const uint8_t *)buf->reason, (uint32_t)rlen}))
        lens[p->user_count++] = len;
    p->user = (mqtt_bytes){buf->users, (uint32_t)len};
    if (rlen) {
        p->reason_string = (mqtt_bytes){(const uint8_t *)buf->reason, (uint32_t)rlen};
        MQTT_SET(p, MQTT_PROP_REASON_STRING);
    }
    trim_answer(type, out->reason, p, lens, max_packet);
}

/* Appends one user property given as C strings; logs if it did not fit. */
static void append_user(uint8_t *block, size_t cap, size_t *len, uint32_t *count,
                        const char *name, const char *value)
{
    if (mqtt_user_props_append(block, cap, len,
                               (mqtt_bytes){(const uint8_t *)name, (uint32_t)strlen(name)},
                               (mqtt_bytes){(const uint8_t *)value, (uint32_t)strlen(value)}))
        (*count)++;
    else
        log_warn("hub: response property %s does not fit", name);
}

void hub_send_response(hub_client *hc, mqtt_bytes correlation, hub_status st, const char *reason,
                       bool has_version, uint64_t version, const char *payload, size_t len)
{
    uint8_t users[512];
    size_t ulen = 0;
    mqtt_publish pub = {.qos = 0, .topic = MQTT_BYTES_LIT("$iothub/responses")};
    pub.props.correlation_data = correlation;
    MQTT_SET(&pub.props, MQTT_PROP_CORRELATION_DATA);
    if (st != HUB_OK) {
        char text[5];
        hub_status_text(st, text);
        append_user(users, sizeof users, &ulen, &pub.props.user_count, "status", text);
        char clean[sizeof users / 2];
        if (copy_reason(reason, clean, sizeof clean))
            append_user(users, sizeof users, &ulen, &pub.props.user_count, "reason", clean);
    }
    if (has_version) {
        char num[FMT_U64_MAX];
        fmt_u64(num, version);
        append_user(users, sizeof users, &ulen, &pub.props.user_count, "version", num);
    }
    pub.props.user = (mqtt_bytes){users, (uint32_t)ulen};
    pub.payload = (mqtt_bytes){(const uint8_t *)payload, (uint32_t)len};
    broker_msg *msg = broker_msg_new(&pub, pub.topic, NULL, net_loop_now_ms(
                                         broker_client_loop(hub_client_broker(hc))));
    if (!msg) {
        log_warn("%s: out of memory for a response", hub_client_id(hc));
        return;
    }
    if (!broker_client_send(hub_client_broker(hc), msg, 0, 0))
        log_info("%s: response not sent (client not ready)", hub_client_id(hc));
    broker_msg_unref(msg);
}

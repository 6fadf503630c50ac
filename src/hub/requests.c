/*
 * hub/requests.c — what a device's PUBLISH on a defined topic asks for:
 * twin requests (Get twin, Patch reported) answered on $iothub/responses,
 * and telemetry acknowledged by PUBACK (../shared/spec/iothub-mqtt5.md
 * §3, §5, §6).
 *
 * Requests are QoS 0 and correlated by Correlation Data only. A request
 * the hub cannot even correlate (no Correlation Data, or longer than 16
 * bytes) cannot be answered on $iothub/responses, so the connection ends
 * (DISCONNECT 0x83, status 0100). Anything else wrong with a correlated
 * request (unknown property, bad if-version) is answered with a failure
 * response.
 *
 * Asynchronous completions (the twin store commit, the telemetry commit)
 * come back on the device's loop with a small heap record naming the
 * client by handle; a client that went away meanwhile is not found and
 * the completion is dropped (for telemetry: the message is stored, the
 * PUBACK has nobody to go to, and the device will resend it).
 *
 * Throttling (hub/throttle.h) is asked once a message is known to be
 * well-formed, so a malformed one never uses the budget or the quota: a
 * twin request against the twin read or update rate (refused with a
 * response carrying status 0501), telemetry against the telemetry rate and
 * the daily message quota (refuse_over_limit). Every correlated request
 * and every accepted message counts as the device's activity
 * (lastActivityTime).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/hub_internal.h"
#include "util/log.h"
#include "util/time.h"
#include "util/utf8.h"

/* A request or telemetry message waiting for the store. It names its
 * connection by client id and handle (broker_client_lookup). */
typedef struct pending_op {
    hub *h;
    broker_client_handle handle;
    uint16_t packet_id;
    uint8_t correlation_len;
    uint8_t correlation[HUB_CORRELATION_MAX];
    char client_id[]; /* NUL-terminated */
} pending_op;

static pending_op *pending_new(hub *h, hub_client *hc, uint16_t packet_id, mqtt_bytes corr)
{
    const char *id = hub_client_id(hc);
    size_t id_size = strlen(id) + 1;
    pending_op *op = calloc(1, sizeof *op + id_size);
    if (!op)
        return NULL;
    op->h = h;
    memcpy(op->client_id, id, id_size);
    op->handle = broker_client_get_handle(hub_client_broker(hc));
    op->packet_id = packet_id;
    op->correlation_len = (uint8_t)corr.len;
    if (corr.len)
        memcpy(op->correlation, corr.p, corr.len);
    return op;
}

/* The device client an operation belongs to, if it is still connected. */
static hub_client *pending_client(net_loop *loop, const pending_op *op)
{
    broker_client *c = broker_client_lookup(op->h->b, loop, op->client_id,
                                            strlen(op->client_id), op->handle);
    return c ? hub_client_of(c) : NULL;
}

/* ---- twin requests ------------------------------------------------------ */

/* Checks the request's user properties: only `if-version` (u64) on Patch
 * reported. Returns HUB_OK or HUB_BAD_REQUEST with a reason. */
static hub_status request_properties(hub_topic kind, const mqtt_publish *pkt,
                                     int64_t *if_version, char *reason, size_t cap)
{
    *if_version = -1;
    mqtt_iter it;
    mqtt_bytes name, value;
    mqtt_user_props_iter(&pkt->props, &it);
    while (mqtt_user_props_next(&it, &name, &value)) {
        uint64_t v;
        if (kind != HUB_TOPIC_TWIN_PATCH_REPORTED || !mqtt_bytes_eq_str(name, "if-version")) {
            snprintf(reason, cap, "unknown property: %.*s",
                     (int)utf8_fit((const char *)name.p, name.len, 64),
                     (const char *)name.p);
            return HUB_BAD_REQUEST;
        }
        if (!hub_parse_u64(value, &v)) {
            snprintf(reason, cap, "if-version is not a u64");
            return HUB_BAD_REQUEST;
        }
        /* any u64 is a valid if-version (spec §6); one beyond INT64_MAX is
         * beyond every $version a twin can reach, so it can only mismatch */
        *if_version = v > INT64_MAX ? INT64_MAX : (int64_t)v;
    }
    return HUB_OK;
}

static void get_twin(hub *h, hub_client *hc, mqtt_bytes corr)
{
    hub_status st = HUB_SERVER_ERROR;
    char *doc =
        h->twins ? twins_device_view(h->twins, hub_client_device_id(hc), hub_client_module(hc), &st)
                 : NULL;
    if (!doc) {
        hub_send_response(hc, corr, st, h->twins ? "twin not found" : "twins unavailable",
                          false, 0, NULL, 0);
        return;
    }
    hub_send_response(hc, corr, HUB_OK, NULL, false, 0, doc, strlen(doc));
    free(doc);
}

static void reported_done(net_loop *loop, void *arg, hub_status st, uint64_t version,
                          const char *reason)
{
    pending_op *op = arg;
    hub_client *hc = pending_client(loop, op);
    if (hc)
        hub_send_response(hc, (mqtt_bytes){op->correlation, op->correlation_len}, st, reason,
                          st == HUB_OK, version, NULL, 0);
    free(op);
}

static void patch_reported(hub *h, hub_client *hc, const mqtt_publish *pkt, int64_t if_version)
{
    mqtt_bytes corr = pkt->props.correlation_data;
    pending_op *op = h->twins ? pending_new(h, hc, 0, corr) : NULL;
    if (!op) {
        hub_send_response(hc, corr, HUB_SERVER_ERROR,
                          h->twins ? "out of memory" : "twins unavailable", false, 0, NULL, 0);
        return;
    }
    twins_patch_reported(h->twins, hub_client_device_id(hc), hub_client_module(hc),
                         (const char *)pkt->payload.p, pkt->payload.len, if_version,
                         broker_client_loop(hub_client_broker(hc)), reported_done, op);
}

/* The hub's twin read or update rate for a request of `kind`: HUB_OK, or
 * HUB_THROTTLED with the reason text. */
static hub_status admit_request(hub *h, hub_topic kind, char *reason, size_t cap)
{
    hub_throttle_kind tk = kind == HUB_TOPIC_TWIN_GET ? HUB_THROTTLE_TWIN_READ
                                                      : HUB_THROTTLE_TWIN_UPDATE;
    hub_status st = hub_throttle_admit(h->cfg.throttle, tk);
    if (st != HUB_OK)
        hub_throttle_describe(h->cfg.throttle, tk, st, reason, cap);
    return st;
}

bool hub_correlated_publish_ok(hub_client *hc, const mqtt_publish *pkt, const char *what,
                               const char *qos_error, broker_answer *answer,
                               broker_publish_action *action)
{
    if (pkt->qos) {
        hub_answer_failure(hub_client_answer(hc), MQTT_PUBACK, HUB_BAD_REQUEST, 0, qos_error,
                           hub_client_max_packet(hc), answer);
        *action = BROKER_PUBLISH_DONE;
        return false;
    }
    mqtt_bytes corr = pkt->props.correlation_data;
    if (!MQTT_HAS(&pkt->props, MQTT_PROP_CORRELATION_DATA) || corr.len == 0 ||
        corr.len > HUB_CORRELATION_MAX) {
        log_info("%s: %s without usable Correlation Data (%u bytes)", hub_client_id(hc), what,
                 corr.len);
        hub_answer_failure(hub_client_answer(hc), MQTT_DISCONNECT, HUB_BAD_REQUEST,
                           MQTT_RC_IMPLEMENTATION_SPECIFIC,
                           "Correlation Data is required, at most 16 bytes",
                           hub_client_max_packet(hc), answer);
        *action = BROKER_PUBLISH_REFUSE;
        return false;
    }
    return true;
}

broker_publish_action hub_handle_request(hub *h, hub_client *hc, hub_topic kind,
                                         const mqtt_publish *pkt, broker_answer *answer)
{
    broker_publish_action refused;
    if (!hub_correlated_publish_ok(hc, pkt, "request", "requests are published at QoS 0", answer,
                                   &refused))
        return refused;
    mqtt_bytes corr = pkt->props.correlation_data;
    registry_note_activity(h->reg, hub_client_device_id(hc), hub_client_module(hc),
                           (int64_t)time_wall_ms());
    char reason[128];
    int64_t if_version;
    hub_status st = request_properties(kind, pkt, &if_version, reason, sizeof reason);
    if (st == HUB_OK)
        st = admit_request(h, kind, reason, sizeof reason);
    if (st != HUB_OK)
        hub_send_response(hc, corr, st, reason, false, 0, NULL, 0);
    else if (kind == HUB_TOPIC_TWIN_GET)
        get_twin(h, hc, corr);
    else
        patch_reported(h, hc, pkt, if_version);
    answer->reason = 0;
    return BROKER_PUBLISH_DONE;
}

/* ---- telemetry ---------------------------------------------------------- */

#define TELEMETRY_MAX_PROPS 64

/* The validated properties of one message, as NUL-terminated strings in
 * one arena (telemetry_accept copies what it keeps). */
typedef struct telemetry_props {
    telemetry_prop props[TELEMETRY_MAX_PROPS];
    size_t n;
    char *arena;
    size_t used;
} telemetry_props;

static bool system_property(mqtt_bytes name)
{
    static const char *const names[] = {"content-encoding", "message-id", "user-id",
                                        "correlation-id", "creation-time"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (mqtt_bytes_eq_str(name, names[i]))
            return true;
    return false;
}

static const char *arena_copy(telemetry_props *tp, mqtt_bytes b)
{
    char *s = tp->arena + tp->used;
    memcpy(s, b.p, b.len);
    s[b.len] = '\0';
    tp->used += (size_t)b.len + 1;
    return s;
}

/* Validates and copies the user properties: the spec's system properties
 * (creation-time must be a time) and `@name` application properties.
 * Returns HUB_OK or HUB_BAD_REQUEST with a reason; tp->arena is malloc'd
 * on success. */
static hub_status telemetry_properties(const mqtt_publish *pkt, telemetry_props *tp,
                                       char *reason, size_t cap)
{
    memset(tp, 0, sizeof *tp);
    mqtt_iter it;
    mqtt_bytes name, value;
    size_t need = 0;
    mqtt_user_props_iter(&pkt->props, &it);
    while (mqtt_user_props_next(&it, &name, &value)) {
        int64_t t;
        bool app = name.len > 1 && name.p[0] == '@';
        if (!app && !system_property(name)) {
            snprintf(reason, cap, "unknown property: %.*s",
                     (int)utf8_fit((const char *)name.p, name.len, 64),
                     (const char *)name.p);
            return HUB_BAD_REQUEST;
        }
        if (mqtt_bytes_eq_str(name, "creation-time") &&
            !time_parse_epoch_ms((const char *)value.p, value.len, &t)) {
            snprintf(reason, cap, "creation-time is not a time (ms since the epoch, "
                                  "9999-12-31 at the latest)");
            return HUB_BAD_REQUEST;
        }
        if (++tp->n > TELEMETRY_MAX_PROPS) {
            snprintf(reason, cap, "more than %d properties", TELEMETRY_MAX_PROPS);
            return HUB_BAD_REQUEST;
        }
        need += (size_t)name.len + value.len + 2;
    }
    tp->arena = malloc(need ? need : 1);
    if (!tp->arena) {
        snprintf(reason, cap, "out of memory");
        return HUB_SERVER_ERROR;
    }
    size_t i = 0;
    mqtt_user_props_iter(&pkt->props, &it);
    while (mqtt_user_props_next(&it, &name, &value) && i < tp->n) {
        tp->props[i].name = arena_copy(tp, name);
        tp->props[i].value = arena_copy(tp, value);
        i++;
    }
    return HUB_OK;
}

static void telemetry_done(net_loop *loop, void *arg, hub_status st)
{
    pending_op *op = arg;
    hub_client *hc = op->packet_id ? pending_client(loop, op) : NULL;
    if (st != HUB_OK)
        log_warn("telemetry from a device was not stored (status %04X)", (unsigned)st);
    if (hc) {
        broker_answer answer = {0};
        if (st != HUB_OK)
            hub_answer_failure(hub_client_answer(hc), MQTT_PUBACK, st, 0, "telemetry not stored",
                               hub_client_max_packet(hc), &answer);
        broker_publish_complete(hub_client_broker(hc), op->packet_id, 1, &answer);
    }
    free(op);
}

/* Refuses a message: PUBACK at QoS 1, DISCONNECT 0x83 at QoS 0. */
static broker_publish_action refuse_telemetry(hub_client *hc, const mqtt_publish *pkt,
                                              hub_status st, const char *reason,
                                              broker_answer *answer)
{
    log_info("%s: telemetry refused: %s", hub_client_id(hc), reason);
    hub_answer_failure(hub_client_answer(hc), pkt->qos ? MQTT_PUBACK : MQTT_DISCONNECT, st,
                       pkt->qos ? 0 : MQTT_RC_IMPLEMENTATION_SPECIFIC, reason,
                       hub_client_max_packet(hc), answer);
    return pkt->qos ? BROKER_PUBLISH_DONE : BROKER_PUBLISH_REFUSE;
}

/*
 * A message over the hub's telemetry rate or daily quota (status 0501 or
 * 0502, reason code 151). At QoS 1 the PUBACK says so. QoS 0 has no
 * PUBACK: a throttled message is dropped (QoS 0 is at most once, and the
 * rate recovers within a second), but a used-up quota ends the connection
 * with DISCONNECT 0x97, since nothing would be taken before 00:00 UTC.
 * Logged at debug only: the throttle logs refusals once a minute.
 */
static broker_publish_action refuse_over_limit(hub *h, hub_client *hc, const mqtt_publish *pkt,
                                               hub_status st, broker_answer *answer)
{
    char reason[128];
    hub_throttle_describe(h->cfg.throttle, HUB_THROTTLE_TELEMETRY, st, reason, sizeof reason);
    log_debug("%s: telemetry refused: %s", hub_client_id(hc), reason);
    if (pkt->qos) {
        hub_answer_failure(hub_client_answer(hc), MQTT_PUBACK, st, 0, reason,
                           hub_client_max_packet(hc), answer);
        return BROKER_PUBLISH_DONE;
    }
    if (st == HUB_QUOTA_EXCEEDED) {
        hub_answer_failure(hub_client_answer(hc), MQTT_DISCONNECT, st, MQTT_RC_QUOTA_EXCEEDED,
                           reason, hub_client_max_packet(hc), answer);
        return BROKER_PUBLISH_REFUSE;
    }
    answer->reason = 0;
    return BROKER_PUBLISH_DONE;
}

broker_publish_action hub_handle_telemetry(hub *h, hub_client *hc, const mqtt_publish *pkt,
                                           broker_answer *answer)
{
    char reason[128];
    if (pkt->payload.len > TELEMETRY_MAX_BODY)
        return refuse_telemetry(hc, pkt, HUB_BAD_REQUEST, "payload larger than 256 KiB", answer);
    telemetry_props tp;
    hub_status st = telemetry_properties(pkt, &tp, reason, sizeof reason);
    if (st != HUB_OK)
        return refuse_telemetry(hc, pkt, st, reason, answer);
    char content_type[256] = "";
    bool has_ct = MQTT_HAS(&pkt->props, MQTT_PROP_CONTENT_TYPE);
    if (has_ct && !hub_copy_str(pkt->props.content_type, content_type, sizeof content_type)) {
        free(tp.arena);
        return refuse_telemetry(hc, pkt, HUB_BAD_REQUEST, "Content Type longer than 255 bytes",
                                answer);
    }
    st = hub_throttle_admit(h->cfg.throttle, HUB_THROTTLE_TELEMETRY);
    if (st != HUB_OK) {
        free(tp.arena);
        return refuse_over_limit(h, hc, pkt, st, answer);
    }
    pending_op *op = h->tel ? pending_new(h, hc, pkt->qos ? pkt->packet_id : 0,
                                          (mqtt_bytes){0}) : NULL;
    if (!op) {
        free(tp.arena);
        return refuse_telemetry(hc, pkt, HUB_SERVER_ERROR,
                                h->tel ? "out of memory" : "telemetry unavailable", answer);
    }
    telemetry_msg m = {
        .device_id = hub_client_device_id(hc),
        .module_id = hub_client_module(hc),
        .auth_method = hc->x509 ? "x509" : "sas",
        .content_type = has_ct ? content_type : NULL,
        .props = tp.props,
        .nprops = tp.n,
        .body = pkt->payload.p,
        .body_len = pkt->payload.len,
    };
    telemetry_accept(h->tel, &m, broker_client_loop(hub_client_broker(hc)), telemetry_done, op);
    free(tp.arena);
    registry_note_activity(h->reg, hub_client_device_id(hc), hub_client_module(hc),
                           (int64_t)time_wall_ms());
    answer->reason = 0;
    return pkt->qos ? BROKER_PUBLISH_PENDING : BROKER_PUBLISH_DONE;
}

/*
 * fuzz/fuzz_hub_props.c — libFuzzer target for the IoT Hub property code of
 * hub/properties.c that runs without a broker: the value parsers of
 * ../shared/spec/iothub-mqtt5.md §5 (u32, u64, time), the string helpers,
 * the failure answers (PUBACK / DISCONNECT properties trimmed to the
 * client's Maximum Packet Size, §4) and the $iothub/responses PUBLISH.
 *
 * Input: 4 control bytes, then "value\0reason".
 *   byte 0      the hub_status of the answer (index into a table);
 *   byte 1      bit 0: DISCONNECT instead of PUBACK; bit 1: an explicit
 *               reason code (0x83) instead of the status's; bit 2: a
 *               successful response carries a version;
 *   bytes 2-3   Maximum Packet Size, little endian (0 = none).
 * Checked:
 *   hub_parse_u64 / hub_parse_u32 / time  agree with a reference that
 *               reads the digits in 128-bit arithmetic (digits only, 1..20
 *               of them, no overflow; u32 also <= 4294967295);
 *   hub_copy_str  copies exactly when the value fits and holds no NUL;
 *   hub_bytes_eq_nocase  agrees with a byte-wise ASCII comparison;
 *   hub_answer_failure  the reason code is the status's (or the explicit
 *               one); the user properties are a prefix of (status, reason)
 *               with the status as 4 hex digits; the packet encodes, fits
 *               the Maximum Packet Size unless nothing is left to drop, and
 *               decodes again with those properties whatever bytes the
 *               reason held (a client would otherwise see a malformed
 *               packet): the reason is quoted cut between characters and
 *               with what is not UTF-8 turned into '?';
 *   hub_send_response  the PUBLISH handed to the broker (stubbed) goes to
 *               $iothub/responses at QoS 0, echoes the Correlation Data,
 *               carries status / reason / version as asked, and decodes.
 * Broken invariants abort; memory errors are ASan's and UBSan's.
 * (The user-property checks of requests.c, request_properties and
 * telemetry_properties, are static there and need a broker client.)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/hub_internal.h"
#include "mqtt/codec.h"
#include "util/log.h"

/* A broken invariant: say which one, then abort (libFuzzer saves the input). */
#define check(cond) ((cond) ? (void)0 : broken(#cond, __LINE__))
static void broken(const char *what, int line)
{
    fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, line, what);
    abort();
}

static const hub_status statuses[] = {
    HUB_OK, HUB_NOT_MODIFIED, HUB_BAD_REQUEST, HUB_NOT_AUTHORIZED, HUB_NOT_ALLOWED,
    HUB_CONFLICT, HUB_PRECONDITION_FAILED, HUB_THROTTLED, HUB_QUOTA_EXCEEDED,
    HUB_RESOURCE_EXHAUSTED, HUB_NOT_FOUND, HUB_SERVER_ERROR, HUB_TIMEOUT, HUB_SERVER_BUSY,
    HUB_TARGET_UNAVAILABLE, HUB_TARGET_TIMEOUT, HUB_TARGET_FAILED,
};

/* ---- broker stubs (what hub_send_response calls) ----------------------------- */

static struct {
    uint8_t *encoded; /* the PUBLISH as the broker would send it */
    size_t len;
    unsigned sent;
} published;

broker_msg *broker_msg_new(const mqtt_publish *pub, mqtt_bytes topic, const void *origin,
                           uint64_t now_ms)
{
    (void)origin;
    (void)now_ms;
    check(mqtt_bytes_eq_str(topic, "$iothub/responses"));
    mqtt_packet pkt = {.type = MQTT_PUBLISH};
    pkt.u.publish = *pub;
    size_t n = mqtt_encoded_size(&pkt, MQTT_V5);
    check(n > 0);
    free(published.encoded);
    published.encoded = malloc(n);
    check(published.encoded && mqtt_encode(&pkt, MQTT_V5, published.encoded) == n);
    published.len = n;
    broker_msg *m = calloc(1, sizeof *m);
    check(m != NULL);
    return m;
}

void broker_msg_unref(broker_msg *m)
{
    free(m);
}

/* The hub_client under test stands for its broker client (the hub keeps
 * it in the broker client's block): the stubs map one to the other. */
static const broker_client_info fuzz_info = {
    .client_id = {(const uint8_t *)"fuzz-device", 11},
};

broker_client *broker_client_of_app_data(void *data)
{
    return data;
}

const broker_client_info *broker_client_get_info(const broker_client *c)
{
    (void)c;
    return &fuzz_info;
}

net_loop *broker_client_loop(const broker_client *c)
{
    (void)c;
    return NULL;
}

uint64_t net_loop_now_ms(const net_loop *loop)
{
    (void)loop;
    return 1;
}

bool broker_client_send(broker_client *c, broker_msg *msg, uint8_t qos, uint64_t app_tag)
{
    (void)c;
    check(msg != NULL && qos == 0 && app_tag == 0);
    published.sent++;
    return true;
}

/* ---- the parsers --------------------------------------------------------------- */

static void parsers(mqtt_bytes v)
{
    bool want = v.len >= 1 && v.len <= 20;
    unsigned __int128 acc = 0;
    for (uint32_t i = 0; want && i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            want = false;
        else
            acc = acc * 10 + (unsigned)(v.p[i] - '0');
    }
    if (acc > UINT64_MAX)
        want = false;
    uint64_t u64 = 0;
    bool got = hub_parse_u64(v, &u64);
    check(got == want && (!got || u64 == (uint64_t)acc));
    uint32_t u32 = 0;
    got = hub_parse_u32(v, &u32);
    check(got == (want && acc <= UINT32_MAX) && (!got || u32 == (uint32_t)acc));

    char *s = malloc((size_t)v.len + 1);
    check(s != NULL);
    bool fits = !memchr(v.p, 0, v.len);
    check(hub_copy_str(v, s, (size_t)v.len + 1) == fits);
    if (fits)
        check(strlen(s) == v.len && memcmp(s, v.p, v.len) == 0);
    check(!hub_copy_str(v, s, v.len)); /* no room for the NUL */

    static const char *const names[] = {"if-version", "creation-time", "$.ct", "", "@x"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        size_t n = strlen(names[k]);
        bool eq = v.len == n;
        for (size_t i = 0; eq && i < n; i++) {
            uint8_t a = v.p[i], b = (uint8_t)names[k][i];
            if (a >= 'A' && a <= 'Z')
                a = (uint8_t)(a + 32);
            if (b >= 'A' && b <= 'Z')
                b = (uint8_t)(b + 32);
            eq = a == b;
        }
        check(hub_bytes_eq_nocase(v, names[k]) == eq);
    }
    free(s);
}

/* ---- answers ------------------------------------------------------------------- */

/* The user properties of props in order, checked against the expected
 * (name, value) pairs; returns how many there were. */
static uint32_t user_props(const mqtt_props *props, const char *const *names,
                           const mqtt_bytes *values, uint32_t max)
{
    mqtt_iter it;
    mqtt_bytes n, v;
    uint32_t i = 0;
    mqtt_user_props_iter(props, &it);
    while (mqtt_user_props_next(&it, &n, &v)) {
        check(i < max && mqtt_bytes_eq_str(n, names[i]));
        check(v.len == values[i].len && memcmp(v.p, values[i].p, v.len) == 0);
        i++;
    }
    return i;
}

/* The reason as an answer may quote it: a prefix of it (cut between
 * characters), well-formed UTF-8, where every byte is the reason's own or
 * a '?' that stands for a byte not part of a well-formed sequence; and
 * when the reason is UTF-8 to begin with, exactly its prefix. */
static void check_quoted_reason(const char *quoted, size_t qlen, const char *reason)
{
    check(qlen <= strlen(reason));
    check(mqtt_utf8_valid((const uint8_t *)quoted, qlen));
    for (size_t i = 0; i < qlen; i++)
        check(quoted[i] == reason[i] || quoted[i] == '?');
    if (mqtt_utf8_valid((const uint8_t *)reason, strlen(reason)))
        check(memcmp(quoted, reason, qlen) == 0);
}

static void failure_answer(hub_status st, uint8_t flags, uint32_t max_packet, const char *reason)
{
    uint8_t type = (flags & 1) ? MQTT_DISCONNECT : MQTT_PUBACK;
    uint8_t code = (flags & 2) ? MQTT_RC_IMPLEMENTATION_SPECIFIC : 0;
    hub_answer_buf buf;
    broker_answer ans;
    memset(&buf, 0xA5, sizeof buf);
    hub_answer_failure(&buf, type, st, code, reason, max_packet, &ans);
    check(ans.reason == (code ? code : hub_status_reason_code(st)));

    char status[5];
    hub_status_text(st, status);
    size_t rlen = strlen(buf.reason);
    check_quoted_reason(buf.reason, rlen, reason);
    const char *const names[2] = {"status", "reason"};
    const mqtt_bytes values[2] = {{(const uint8_t *)status, 4},
                                  {(const uint8_t *)buf.reason, (uint32_t)rlen}};
    check(user_props(&ans.props, names, values, rlen ? 2 : 1) == ans.props.user_count);
    if (MQTT_HAS(&ans.props, MQTT_PROP_REASON_STRING))
        check(ans.props.reason_string.len == rlen && rlen > 0 &&
              memcmp(ans.props.reason_string.p, buf.reason, rlen) == 0);

    mqtt_packet pkt = {.type = type};
    if (type == MQTT_DISCONNECT) {
        pkt.u.disconnect.reason = ans.reason;
        pkt.u.disconnect.props = ans.props;
    } else {
        pkt.u.ack.packet_id = 7;
        pkt.u.ack.reason = ans.reason;
        pkt.u.ack.props = ans.props;
    }
    size_t n = mqtt_encoded_size(&pkt, MQTT_V5);
    check(n > 0);
    bool all_dropped = ans.props.user_count == 0 && !MQTT_HAS(&ans.props, MQTT_PROP_REASON_STRING);
    check(max_packet == 0 || n <= max_packet || all_dropped);
    if (max_packet == 0)
        check(ans.props.user_count == (rlen ? 2u : 1u));

    uint8_t *enc = malloc(n);
    check(enc && mqtt_encode(&pkt, MQTT_V5, enc) == n);
    mqtt_packet back;
    check(mqtt_decode(enc, n, MQTT_V5, &back) == 0); /* whatever the reason held */
    check(mqtt_packet_equal(&pkt, &back, MQTT_V5));
    free(enc);
}

static void response(hub_status st, bool has_version, mqtt_bytes value, const char *reason)
{
    hub_client *hc = calloc(1, sizeof *hc);
    check(hc != NULL);
    mqtt_bytes corr = {value.p, value.len > HUB_CORRELATION_MAX ? HUB_CORRELATION_MAX : value.len};
    uint64_t version = 0;
    if (has_version && !hub_parse_u64(value, &version))
        version = UINT64_MAX - value.len;
    unsigned before = published.sent;
    hub_send_response(hc, corr, st, reason, has_version, version, (const char *)value.p,
                      value.len);
    check(published.sent == before + 1);

    mqtt_packet pkt;
    uint8_t rc = mqtt_decode(published.encoded, published.len, MQTT_V5, &pkt);
    check(rc == 0 && pkt.type == MQTT_PUBLISH);
    const mqtt_publish *p = &pkt.u.publish;
    check(p->qos == 0 && !p->retain && mqtt_bytes_eq_str(p->topic, "$iothub/responses"));
    check(MQTT_HAS(&p->props, MQTT_PROP_CORRELATION_DATA) &&
          p->props.correlation_data.len == corr.len &&
          (corr.len == 0 || memcmp(p->props.correlation_data.p, corr.p, corr.len) == 0));
    check(p->payload.len == value.len &&
          (value.len == 0 || memcmp(p->payload.p, value.p, value.len) == 0));

    mqtt_iter it;
    mqtt_bytes n, v;
    bool saw_status = false, saw_version = false, saw_reason = false;
    mqtt_user_props_iter(&p->props, &it);
    while (mqtt_user_props_next(&it, &n, &v)) {
        if (mqtt_bytes_eq_str(n, "status")) {
            char text[5];
            hub_status_text(st, text);
            check(st != HUB_OK && mqtt_bytes_eq_str(v, text));
            saw_status = true;
        } else if (mqtt_bytes_eq_str(n, "reason")) {
            check(st != HUB_OK && v.len > 0);
            check_quoted_reason((const char *)v.p, v.len, reason);
            saw_reason = true;
        } else {
            uint64_t got;
            check(mqtt_bytes_eq_str(n, "version") && has_version);
            check(hub_parse_u64(v, &got) && got == version);
            saw_version = true;
        }
    }
    check(saw_status == (st != HUB_OK) && saw_version == has_version);
    check(saw_reason == (st != HUB_OK && *reason));
    free(hc);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    hub_status st = statuses[data[0] % (sizeof statuses / sizeof statuses[0])];
    uint8_t flags = data[1];
    uint32_t max_packet = (uint32_t)data[2] | (uint32_t)data[3] << 8;
    data += 4, size -= 4;

    const uint8_t *nul = memchr(data, 0, size);
    size_t vlen = nul ? (size_t)(nul - data) : size;
    /* the value in a heap block of its own size: over-reads are ASan's */
    uint8_t *value = malloc(vlen ? vlen : 1);
    check(value != NULL);
    memcpy(value, data, vlen);
    mqtt_bytes v = {value, (uint32_t)vlen};
    size_t rlen = nul ? size - vlen - 1 : 0;
    char *reason = malloc(rlen + 1);
    check(reason != NULL);
    memcpy(reason, nul ? nul + 1 : data, rlen);
    reason[rlen] = '\0';

    parsers(v);
    failure_answer(st, flags, max_packet, reason);
    /* as the callers do: a version only on success */
    response(st, st == HUB_OK && (flags & 4) != 0, v, reason);

    free(value);
    free(reason);
    free(published.encoded);
    published.encoded = NULL;
    return 0;
}

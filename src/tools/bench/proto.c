/*
 * tools/bench/proto.c — see proto.h. Every encoder fills an mqtt_packet and
 * lets the codec size and write it, so the load generator speaks exactly
 * the protocol the server's own tests check (no second hand-written
 * encoder to disagree with). The cost — a size pass and a write pass per
 * packet — is small next to the send() it feeds.
 */
#include "tools/bench/proto.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/sas.h"

bool bench_buf_reserve(bench_buf *b, size_t n)
{
    if (b->start > 0 && b->start == b->len)
        b->start = b->len = 0;
    if (b->cap - b->len >= n)
        return true;
    if (b->start > 0) {
        memmove(b->data, b->data + b->start, b->len - b->start);
        b->len -= b->start;
        b->start = 0;
        if (b->cap - b->len >= n)
            return true;
    }
    size_t cap = b->cap ? b->cap : 512;
    while (cap - b->len < n)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return false;
    b->data = p;
    b->cap = cap;
    return true;
}

void bench_buf_free(bench_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* Encodes pkt at the end of b. */
static bool put_packet(bench_buf *b, const mqtt_packet *pkt, uint8_t version)
{
    size_t size = mqtt_encoded_size(pkt, version);
    if (size == 0 || !bench_buf_reserve(b, size))
        return false;
    size_t written = mqtt_encode(pkt, version, b->data + b->len);
    if (written != size)
        return false;
    b->len += written;
    return true;
}

static mqtt_bytes bytes_of(const char *s)
{
    return (mqtt_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

bool proto_sas_sign(const proto_sas *sas, const char *client_id, uint8_t out[32])
{
    char expiry[24];
    snprintf(expiry, sizeof expiry, "%" PRIu64, sas->expiry_ms);
    return sas_mqtt5_sign(sas->key_b64, sas->host, client_id, NULL, NULL, expiry, out);
}

/* The SAS user properties and authentication fields of a CONNECT; `block`
 * and `sig` must outlive the encoding. */
static bool add_sas_props(mqtt_props *props, const proto_sas *sas, const char *client_id,
                          uint8_t *block, size_t cap, uint8_t sig[32])
{
    char expiry[24];
    snprintf(expiry, sizeof expiry, "%" PRIu64, sas->expiry_ms);
    size_t len = 0;
    if (!mqtt_user_props_append(block, cap, &len, MQTT_BYTES_LIT("api-version"),
                                MQTT_BYTES_LIT(PROTO_API_VERSION)) ||
        !mqtt_user_props_append(block, cap, &len, MQTT_BYTES_LIT("host"), bytes_of(sas->host)) ||
        !mqtt_user_props_append(block, cap, &len, MQTT_BYTES_LIT("sas-expiry"), bytes_of(expiry)))
        return false;
    if (!proto_sas_sign(sas, client_id, sig))
        return false;
    props->user = (mqtt_bytes){block, (uint32_t)len};
    props->user_count = 3;
    props->authentication_method = MQTT_BYTES_LIT("SAS");
    MQTT_SET(props, MQTT_PROP_AUTHENTICATION_METHOD);
    props->authentication_data = (mqtt_bytes){sig, 32};
    MQTT_SET(props, MQTT_PROP_AUTHENTICATION_DATA);
    return true;
}

bool proto_put_connect(bench_buf *b, uint8_t version, const char *client_id,
                       uint16_t keep_alive, const proto_sas *sas)
{
    mqtt_packet pkt = {.type = MQTT_CONNECT};
    mqtt_connect *c = &pkt.u.connect;
    c->protocol_name = MQTT_BYTES_LIT("MQTT");
    c->protocol_version = version;
    c->clean_start = true;
    c->keep_alive = keep_alive;
    c->client_id = bytes_of(client_id);
    uint8_t block[512];
    uint8_t sig[32];
    if (sas && (version != MQTT_V5 || !add_sas_props(&c->props, sas, client_id, block,
                                                     sizeof block, sig)))
        return false;
    return put_packet(b, &pkt, version);
}

bool proto_put_publish(bench_buf *b, uint8_t version, mqtt_bytes topic, uint8_t qos,
                       uint16_t packet_id, const uint8_t *payload, size_t payload_len)
{
    mqtt_packet pkt = {.type = MQTT_PUBLISH};
    mqtt_publish *p = &pkt.u.publish;
    p->qos = qos;
    p->topic = topic;
    p->packet_id = qos ? packet_id : 0;
    p->payload = (mqtt_bytes){payload, (uint32_t)payload_len};
    return put_packet(b, &pkt, version);
}

bool proto_put_subscribe(bench_buf *b, uint8_t version, uint16_t packet_id, mqtt_bytes filter,
                         uint8_t qos)
{
    mqtt_sub_entry entry = {.filter = filter, .options = qos};
    mqtt_packet pkt = {.type = MQTT_SUBSCRIBE};
    pkt.u.subscribe.packet_id = packet_id;
    pkt.u.subscribe.count = 1;
    pkt.u.subscribe.list = &entry;
    return put_packet(b, &pkt, version);
}

bool proto_put_puback(bench_buf *b, uint8_t version, uint16_t packet_id)
{
    mqtt_packet pkt = {.type = MQTT_PUBACK};
    pkt.u.ack.packet_id = packet_id;
    return put_packet(b, &pkt, version);
}

#define HUB_CORRELATION_MAX 16

bool proto_put_hub_request(bench_buf *b, mqtt_bytes topic, mqtt_bytes correlation,
                           const char *response_code, const uint8_t *payload, size_t payload_len)
{
    if (correlation.len == 0 || correlation.len > HUB_CORRELATION_MAX)
        return false;
    mqtt_packet pkt = {.type = MQTT_PUBLISH};
    mqtt_publish *p = &pkt.u.publish;
    p->topic = topic;
    p->payload = (mqtt_bytes){payload, (uint32_t)payload_len};
    p->props.correlation_data = correlation;
    MQTT_SET(&p->props, MQTT_PROP_CORRELATION_DATA);
    uint8_t block[64];
    size_t len = 0;
    if (response_code) {
        if (!mqtt_user_props_append(block, sizeof block, &len, MQTT_BYTES_LIT("response-code"),
                                    bytes_of(response_code)))
            return false;
        p->props.user = (mqtt_bytes){block, (uint32_t)len};
        p->props.user_count = 1;
    }
    return put_packet(b, &pkt, MQTT_V5);
}

bool proto_user_prop(const mqtt_props *props, const char *name, mqtt_bytes *value)
{
    size_t name_len = strlen(name);
    mqtt_iter it;
    mqtt_bytes n, v;
    mqtt_user_props_iter(props, &it);
    while (mqtt_user_props_next(&it, &n, &v))
        if (n.len == name_len && memcmp(n.p, name, name_len) == 0) {
            *value = v;
            return true;
        }
    return false;
}

bool proto_put_pingreq(bench_buf *b, uint8_t version)
{
    mqtt_packet pkt = {.type = MQTT_PINGREQ};
    return put_packet(b, &pkt, version);
}

bool proto_put_disconnect(bench_buf *b, uint8_t version)
{
    mqtt_packet pkt = {.type = MQTT_DISCONNECT};
    return put_packet(b, &pkt, version);
}

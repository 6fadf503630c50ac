/*
 * tools/bench/proto.h — the client side of MQTT for the load generator,
 * built on the project's codec (src/mqtt/codec.h): encoders for the packets
 * a client sends, and the hub's MQTT 5 SAS credentials
 * (../shared/spec/iothub-mqtt5.md §1).
 *
 * Packets are encoded straight into a growable byte buffer (the
 * connection's output queue), so sending is one encode and, later, one
 * send() of everything queued. Decoding needs no wrapper: the engine calls
 * mqtt_frame_parse and mqtt_decode itself.
 */
#ifndef IOTHUBD_BENCH_PROTO_H
#define IOTHUBD_BENCH_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mqtt/codec.h"

/* A growable byte queue: bytes [start, len) are pending. */
typedef struct bench_buf {
    uint8_t *data;
    size_t start;
    size_t len;
    size_t cap;
} bench_buf;

/* Room for n more bytes at data + len; false when out of memory. Compacts
 * (moves pending bytes to the front) before growing. */
bool bench_buf_reserve(bench_buf *b, size_t n);
void bench_buf_free(bench_buf *b);
static inline size_t bench_buf_pending(const bench_buf *b)
{
    return b->len - b->start;
}

/* The hub's SAS credentials for one CONNECT. */
typedef struct proto_sas {
    const char *host;       /* hub host name (user property `host`) */
    const char *key_b64;    /* the device's symmetric key */
    uint64_t expiry_ms;     /* `sas-expiry`, ms since the epoch */
} proto_sas;

#define PROTO_API_VERSION "2020-10-01-preview"

/* The 32-byte Authentication Data for client_id with sas-policy and sas-at
 * omitted. False for a key that is not base64. */
bool proto_sas_sign(const proto_sas *sas, const char *client_id, uint8_t out[32]);

/* Appends a CONNECT (clean start, no will, no session expiry) of protocol
 * `version`; with sas non-NULL the MQTT 5 SAS fields (Authentication Method
 * "SAS", Authentication Data, user properties api-version, host,
 * sas-expiry). False when the key is bad or memory runs out. */
bool proto_put_connect(bench_buf *b, uint8_t version, const char *client_id,
                       uint16_t keep_alive, const proto_sas *sas);

/* Appends a PUBLISH (no properties; packet_id ignored at QoS 0). */
bool proto_put_publish(bench_buf *b, uint8_t version, mqtt_bytes topic, uint8_t qos,
                       uint16_t packet_id, const uint8_t *payload, size_t payload_len);

/* Appends a SUBSCRIBE of one filter at `qos`. */
bool proto_put_subscribe(bench_buf *b, uint8_t version, uint16_t packet_id, mqtt_bytes filter,
                         uint8_t qos);

/* Appends a PUBACK (success) — for QoS 1 messages the server sends us. */
bool proto_put_puback(bench_buf *b, uint8_t version, uint16_t packet_id);

/* Appends a QoS 0 MQTT 5 PUBLISH carrying Correlation Data — the hub's
 * request/response shape (iothub-mqtt5.md §3): a twin get or reported
 * patch (response_code NULL), or a direct method reply on
 * `$iothub/responses` with user property `response-code`. False when the
 * correlation data exceeds 16 bytes or memory runs out. */
bool proto_put_hub_request(bench_buf *b, mqtt_bytes topic, mqtt_bytes correlation,
                           const char *response_code, const uint8_t *payload, size_t payload_len);

/* The value of user property `name` in props, if present. */
bool proto_user_prop(const mqtt_props *props, const char *name, mqtt_bytes *value);

bool proto_put_pingreq(bench_buf *b, uint8_t version);
bool proto_put_disconnect(bench_buf *b, uint8_t version);

#endif

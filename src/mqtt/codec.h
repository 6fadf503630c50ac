/*
 * mqtt/codec.h — bytes ⇄ packets for MQTT 3.1.1 and 5.0.
 *
 * Pure functions: no I/O, no allocation, no global state. Safe to call from
 * any thread. Every rule of the standards that makes a packet malformed or a
 * protocol error is checked here, so the layers above can trust a decoded
 * packet's shape and only judge its meaning.
 *
 * Reading a stream is two steps: mqtt_frame() finds where the next packet
 * ends (or says more bytes are needed), then mqtt_decode() parses exactly
 * that packet. Writing is mqtt_encoded_size() then mqtt_encode() into a
 * buffer of at least that size (the caller owns the buffer, typically the
 * connection's output queue).
 *
 * Errors are MQTT 5 reason codes: MQTT_RC_MALFORMED_PACKET (0x81) for bytes
 * that break the encoding rules, MQTT_RC_PROTOCOL_ERROR (0x82) for
 * well-formed bytes that break a protocol rule (a property given twice, a
 * value out of range), MQTT_RC_PACKET_TOO_LARGE (0x95),
 * MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION (0x84) for a CONNECT of an unknown
 * level, MQTT_RC_TOPIC_NAME_INVALID (0x90) for a PUBLISH topic containing
 * wildcards, MQTT_RC_TOPIC_FILTER_INVALID (0x8F) for a malformed filter in
 * SUBSCRIBE/UNSUBSCRIBE entries is NOT raised by the decoder (it is per
 * entry: the broker answers it in SUBACK).
 */
#ifndef IOTHUBD_MQTT_CODEC_H
#define IOTHUBD_MQTT_CODEC_H

#include <string.h>

#include "mqtt/packet.h"

/* ---- framing ---------------------------------------------------------- */

typedef enum mqtt_frame_status {
    MQTT_FRAME_OK = 0,
    MQTT_FRAME_NEED_MORE = 1,
    MQTT_FRAME_ERROR = 2,
} mqtt_frame_status;

typedef struct mqtt_frame {
    uint8_t type;        /* high nibble of byte 0 */
    uint8_t flags;       /* low nibble of byte 0 */
    uint32_t header_len; /* 1 + length of the Remaining Length field */
    uint32_t total_len;  /* header_len + Remaining Length */
    uint8_t reason;      /* on MQTT_FRAME_ERROR: 0x81 or 0x95 */
} mqtt_frame;

/*
 * Looks at the start of `buf` and finds the extent of the next packet.
 * `max_packet_size` is the largest total packet we accept (0 = the protocol
 * maximum). A packet larger than that is reported as MQTT_FRAME_ERROR with
 * reason 0x95 as soon as its header is readable, before its body arrives, so
 * an announced 256 MiB packet is refused without buffering it. A Remaining
 * Length encoded in more than 4 bytes, or a packet type of 0, is 0x81.
 */
mqtt_frame_status mqtt_frame_parse(const uint8_t *buf, size_t len,
                                   uint32_t max_packet_size, mqtt_frame *out);

/* ---- decode ----------------------------------------------------------- */

/*
 * Decodes one whole packet `buf[0..len)` (exactly one frame, as found by
 * mqtt_frame_parse) into `out`. `version` is the connection's protocol level
 * (MQTT_V311 or MQTT_V5); it is ignored for CONNECT, which carries its own
 * and sets out->u.connect.protocol_version. Slices in `out` point into
 * `buf`. Returns 0 on success or a reason code. Checks, among others: fixed
 * header flags per packet type, QoS 3, packet identifier 0 where one is
 * required, Remaining Length consistency, UTF-8 well-formedness of every
 * string (no U+0000, no surrogates, shortest form), property ids allowed for
 * the packet type, single-valued properties given once, property value
 * ranges, CONNECT flag rules (reserved bit, will flags, 3.1.1 password
 * without username), SUBSCRIBE with no entries or reserved option bits,
 * wildcards in a PUBLISH topic.
 *
 * Besides 0x81/0x82/0x84/0x90 it may return: 0x85 for a 3.1.1 CONNECT with
 * an empty client id and CleanSession 0 ([MQTT-3.1.3-8]: answer CONNACK
 * return code 2), 0x90 for an empty or wildcard Will Topic, 0x99 for a
 * Payload Format Indicator of 1 with a (Will) payload that is not UTF-8.
 * In 3.1.1 the protocol-error class is reported as 0x81 (3.1.1 has no
 * distinction). A Variable Byte Integer not in its shortest form is 0x81.
 */
uint8_t mqtt_decode(const uint8_t *buf, size_t len, uint8_t version,
                    mqtt_packet *out);

/* Iterating SUBSCRIBE entries and UNSUBSCRIBE filters of a decoded packet. */
typedef struct mqtt_iter {
    const uint8_t *p;
    const uint8_t *end;
} mqtt_iter;

void mqtt_subscribe_iter(const mqtt_subscribe *s, mqtt_iter *it);
bool mqtt_subscribe_next(mqtt_iter *it, mqtt_sub_entry *out);
void mqtt_unsubscribe_iter(const mqtt_unsubscribe *u, mqtt_iter *it);
bool mqtt_unsubscribe_next(mqtt_iter *it, mqtt_bytes *filter);

/* Iterating user properties (name, value) in order. */
void mqtt_user_props_iter(const mqtt_props *props, mqtt_iter *it);
bool mqtt_user_props_next(mqtt_iter *it, mqtt_bytes *name, mqtt_bytes *value);

/* ---- encode ----------------------------------------------------------- */

/*
 * Size in bytes of the whole encoded packet (fixed header included), or 0 if
 * the packet cannot be encoded (a field too long, Remaining Length beyond the
 * protocol maximum). For MQTT_V311 the properties are ignored.
 */
size_t mqtt_encoded_size(const mqtt_packet *pkt, uint8_t version);

/* Encodes into `out`, which has room for mqtt_encoded_size() bytes. Returns
 * the number of bytes written (0 on the same failures). `pkt->flags` is
 * ignored: the fixed-header flags are computed from the fields. */
size_t mqtt_encode(const mqtt_packet *pkt, uint8_t version, uint8_t *out);

/* Size of the encoded property section (Property Length included) that
 * mqtt_encode would write for these properties (any packet type: the encoder
 * writes every property it is given), or 0 if they cannot be encoded. */
size_t mqtt_props_encoded_size(const mqtt_props *props);

/*
 * Appends one encoded user property to a block at `block` (capacity `cap`,
 * current length *len). Returns false if it does not fit. The block is then
 * given to the encoder as props.user / props.user_count.
 */
bool mqtt_user_props_append(uint8_t *block, size_t cap, size_t *len,
                            mqtt_bytes name, mqtt_bytes value);

/* ---- primitives (exposed for tests and the broker) -------------------- */

/* Variable Byte Integer: returns bytes used (1-4), 0 if more bytes are
 * needed, -1 if malformed (more than 4 bytes). */
int mqtt_varint_decode(const uint8_t *p, size_t len, uint32_t *value);
/* Returns bytes written (1-4), 0 if value > 268,435,455. */
int mqtt_varint_encode(uint32_t value, uint8_t *out);
int mqtt_varint_size(uint32_t value);

/* UTF-8 Encoded String rules of section 1.5.4: well-formed UTF-8 (shortest
 * form, no surrogates, ≤ U+10FFFF) and no U+0000. */
bool mqtt_utf8_valid(const uint8_t *p, size_t len);
/* UTF-8 Encoded Character Data (a payload with Payload Format Indicator 1,
 * §3.3.2.3.2): well-formed UTF-8 as RFC 3629 has it, where U+0000 is a
 * character like any other; the no-NUL rule is for Encoded Strings. */
bool mqtt_utf8_data_valid(const uint8_t *p, size_t len);

/* ---- topics ----------------------------------------------------------- */

/* A topic name: at least one character, no '+' or '#'. */
bool mqtt_topic_name_valid(mqtt_bytes topic);
/* A topic filter: at least one character; '+' alone in its level; '#' alone
 * in the last level. Does not know about $share (see below). */
bool mqtt_topic_filter_valid(mqtt_bytes filter);
bool mqtt_topic_filter_has_wildcard(mqtt_bytes filter);
/* Whether `name` matches `filter`, including the rule that a filter starting
 * with a wildcard does not match names starting with '$'. */
bool mqtt_topic_matches(mqtt_bytes filter, mqtt_bytes name);
/*
 * Shared subscriptions: if `filter` starts with "$share/", splits it into
 * the share name and the real filter and returns 1; returns 0 if it is not
 * a shared subscription; -1 if it starts with "$share/" but is invalid
 * (empty or wildcard share name, no filter).
 */
int mqtt_shared_filter_split(mqtt_bytes filter, mqtt_bytes *group,
                             mqtt_bytes *real_filter);

/* ---- names for logs --------------------------------------------------- */

const char *mqtt_packet_type_name(uint8_t type);
const char *mqtt_reason_name(uint8_t reason);

/* ---- comparison (tests, fuzzing) -------------------------------------- */

/*
 * Whether two packets of protocol level `version` carry the same fields:
 * slices are compared by content, user properties and SUBSCRIBE/UNSUBSCRIBE
 * entries entry by entry (an encoder `list` equals a decoded `entries`
 * region with the same contents), and `flags` is ignored.
 */
bool mqtt_packet_equal(const mqtt_packet *a, const mqtt_packet *b,
                       uint8_t version);

/* ---- building blocks shared by the codec files in src/mqtt/ ------------ */
/*
 * Not needed by the layers above; declared here because the codec is split
 * over several files. Readers advance `r->p` towards `r->end` and return 0
 * or MQTT_RC_MALFORMED_PACKET when the field would run past `r->end`.
 * Writers store big-endian and return the position after what they wrote.
 */

/* The property table index used for Will Properties (packet type 0 is
 * reserved, so it is free). */
#define MQTT_PROPS_WILL 0

/* Decodes a property section (Property Length included) for packet type
 * `ptype` (or MQTT_PROPS_WILL) into `props`, which must be zeroed. Returns
 * 0, 0x81 or 0x82 (see props.c). */
uint8_t mqtt_props_decode(mqtt_iter *r, uint8_t ptype, mqtt_props *props);
/* Size of the property section body (without Property Length), or
 * UINT64_MAX if it cannot be encoded. */
uint64_t mqtt_props_body_size(const mqtt_props *props);
/* Writes Property Length (`body_size`, from mqtt_props_body_size) and the
 * properties. */
uint8_t *mqtt_props_write(const mqtt_props *props, uint32_t body_size,
                          uint8_t *out);

uint8_t mqtt_rd_varint(mqtt_iter *r, uint32_t *v);
/* A UTF-8 Encoded String, validated with mqtt_utf8_valid. */
uint8_t mqtt_rd_utf8(mqtt_iter *r, mqtt_bytes *v);

static inline uint8_t mqtt_rd_u8(mqtt_iter *r, uint8_t *v)
{
    if (r->p >= r->end)
        return MQTT_RC_MALFORMED_PACKET;
    *v = *r->p++;
    return 0;
}

static inline uint8_t mqtt_rd_u16(mqtt_iter *r, uint16_t *v)
{
    if (r->end - r->p < 2)
        return MQTT_RC_MALFORMED_PACKET;
    *v = (uint16_t)((unsigned)r->p[0] << 8 | r->p[1]);
    r->p += 2;
    return 0;
}

static inline uint8_t mqtt_rd_u32(mqtt_iter *r, uint32_t *v)
{
    if (r->end - r->p < 4)
        return MQTT_RC_MALFORMED_PACKET;
    *v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 |
         (uint32_t)r->p[2] << 8 | r->p[3];
    r->p += 4;
    return 0;
}

/* Binary Data: two-byte length, then that many bytes. */
static inline uint8_t mqtt_rd_binary(mqtt_iter *r, mqtt_bytes *v)
{
    uint16_t n;
    if (mqtt_rd_u16(r, &n) || r->end - r->p < (ptrdiff_t)n)
        return MQTT_RC_MALFORMED_PACKET;
    v->p = r->p;
    v->len = n;
    r->p += n;
    return 0;
}

static inline uint8_t *mqtt_wr_u16(uint8_t *o, uint16_t v)
{
    o[0] = (uint8_t)(v >> 8);
    o[1] = (uint8_t)v;
    return o + 2;
}

static inline uint8_t *mqtt_wr_u32(uint8_t *o, uint32_t v)
{
    o[0] = (uint8_t)(v >> 24);
    o[1] = (uint8_t)(v >> 16);
    o[2] = (uint8_t)(v >> 8);
    o[3] = (uint8_t)v;
    return o + 4;
}

static inline uint8_t *mqtt_wr_varint(uint8_t *o, uint32_t v)
{
    do {
        uint8_t b = v & 0x7F;
        v >>= 7;
        *o++ = v ? (uint8_t)(b | 0x80) : b;
    } while (v);
    return o;
}

/* Copies `n` bytes (n may be 0 with p NULL). */
static inline uint8_t *mqtt_wr_raw(uint8_t *o, const uint8_t *p, size_t n)
{
    if (n)
        memcpy(o, p, n);
    return o + n;
}

/* Binary Data / UTF-8 string: two-byte length, then the bytes. The caller
 * has checked b.len <= 65535. */
static inline uint8_t *mqtt_wr_bytes(uint8_t *o, mqtt_bytes b)
{
    o = mqtt_wr_u16(o, (uint16_t)b.len);
    return mqtt_wr_raw(o, b.p, b.len);
}

#endif

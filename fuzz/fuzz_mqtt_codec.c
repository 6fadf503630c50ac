/*
 * fuzz/fuzz_mqtt_codec.c — libFuzzer target for the MQTT codec.
 *
 * Input: byte 0 picks the protocol level (odd: 5.0, even: 3.1.1), the rest
 * is a byte stream read like a connection does: frame, decode, repeat (a
 * decoded CONNECT switches the level for what follows, as on a real
 * connection). Every packet that decodes is re-encoded and decoded again;
 * the two decodings must be equal field by field and encoding the second
 * must give the same bytes as encoding the first, else abort(). This finds
 * both memory errors (with ASan/UBSan) and encoder/decoder disagreements.
 * Topic functions are exercised on every decoded topic and filter too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt/codec.h"

static uint8_t enc1[1 << 17], enc2[1 << 17];

static void check(bool ok)
{
    if (!ok)
        abort();
}

static void exercise_topics(const mqtt_packet *p)
{
    if (p->type == MQTT_PUBLISH) {
        check(p->u.publish.topic.len == 0 || mqtt_topic_name_valid(p->u.publish.topic));
    } else if (p->type == MQTT_SUBSCRIBE) {
        mqtt_iter it;
        mqtt_sub_entry e;
        mqtt_bytes prev = {NULL, 0};
        mqtt_subscribe_iter(&p->u.subscribe, &it);
        while (mqtt_subscribe_next(&it, &e)) {
            mqtt_bytes g, f = e.filter;
            if (mqtt_shared_filter_split(e.filter, &g, &f) < 0)
                continue;
            if (!mqtt_topic_filter_valid(f))
                continue;
            /* A filter without wildcards matches exactly itself. */
            if (!mqtt_topic_filter_has_wildcard(f) && f.p[0] != '$')
                check(mqtt_topic_matches(f, f));
            if (prev.len)
                (void)mqtt_topic_matches(f, prev);
            prev = f;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t version = (data[0] & 1) ? MQTT_V5 : MQTT_V311;
    const uint8_t *p = data + 1;
    size_t left = size - 1;
    while (left) {
        mqtt_frame f;
        if (mqtt_frame_parse(p, left, 1 << 16, &f) != MQTT_FRAME_OK)
            break;
        mqtt_packet a, b;
        uint8_t rc = mqtt_decode(p, f.total_len, version, &a);
        if (rc == 0) {
            uint8_t v = version;
            if (a.type == MQTT_CONNECT)
                v = a.u.connect.protocol_version;
            exercise_topics(&a);
            size_t n1 = mqtt_encoded_size(&a, v);
            check(n1 > 0 && n1 <= sizeof enc1);
            check(mqtt_encode(&a, v, enc1) == n1);
            mqtt_frame f2;
            check(mqtt_frame_parse(enc1, n1, 0, &f2) == MQTT_FRAME_OK &&
                  f2.total_len == n1);
            check(mqtt_decode(enc1, n1, v, &b) == 0);
            check(mqtt_packet_equal(&a, &b, v) && mqtt_packet_equal(&b, &a, v));
            size_t n2 = mqtt_encoded_size(&b, v);
            check(n2 == n1 && mqtt_encode(&b, v, enc2) == n2);
            check(memcmp(enc1, enc2, n1) == 0);
            /* Re-encoding is never longer than what was received, except
             * AUTH with Remaining Length 1 (which gains a Property
             * Length byte). */
            check(n1 <= f.total_len || (a.type == MQTT_AUTH && n1 == f.total_len + 1));
            version = v;
        } else {
            check(rc >= 0x80);
        }
        p += f.total_len;
        left -= f.total_len;
    }
    return 0;
}

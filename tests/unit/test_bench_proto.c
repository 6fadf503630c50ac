/* Unit tests for the load generator's MQTT client encoders
 * (src/tools/bench/proto.c, compiled into this test): every packet it
 * sends decodes back with the project's codec to the fields given, and
 * the MQTT 5 SAS Authentication Data matches a vector computed
 * independently in Python:
 *   hmac.new(base64.b64decode(key),
 *            b"hub.example.net\ndev-1\n\n\n1700000000000\n", sha256) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../src/tools/bench/proto.c"

static const char *const test_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; /* bytes 0..31 */
static const uint8_t expected_sig[32] = {
    0xa1, 0x6f, 0x38, 0xca, 0x37, 0xe8, 0xa2, 0xd7, 0x4c, 0xd6, 0x4a, 0xc2, 0xd9, 0x48, 0xda, 0xa1,
    0x39, 0x38, 0xef, 0xa2, 0x10, 0x31, 0x6b, 0xe2, 0x08, 0x9a, 0x32, 0x28, 0x84, 0xfc, 0x95, 0xd3};

/* Frames and decodes the single packet in b; fails the test otherwise. */
static void decode_one(const bench_buf *b, uint8_t version, mqtt_packet *pkt)
{
    mqtt_frame f;
    const uint8_t *p = b->data + b->start;
    size_t n = bench_buf_pending(b);
    assert_int_equal(mqtt_frame_parse(p, n, 0, &f), MQTT_FRAME_OK);
    assert_int_equal(f.total_len, n);
    assert_int_equal(mqtt_decode(p, n, version, pkt), 0);
}

static void test_sas_vector(void **state)
{
    (void)state;
    proto_sas sas = {"hub.example.net", test_key, 1700000000000ull};
    uint8_t sig[32];
    assert_true(proto_sas_sign(&sas, "dev-1", sig));
    assert_memory_equal(sig, expected_sig, 32);
    proto_sas bad = {"h", "not base64!", 1};
    assert_false(proto_sas_sign(&bad, "dev-1", sig));
}

static void test_connect_with_sas_round_trip(void **state)
{
    (void)state;
    bench_buf b = {0};
    proto_sas sas = {"hub.example.net", test_key, 1700000000000ull};
    assert_true(proto_put_connect(&b, MQTT_V5, "dev-1", 30, &sas));
    mqtt_packet pkt;
    decode_one(&b, MQTT_V5, &pkt);
    assert_int_equal(pkt.type, MQTT_CONNECT);
    const mqtt_connect *c = &pkt.u.connect;
    assert_int_equal(c->protocol_version, MQTT_V5);
    assert_true(c->clean_start);
    assert_int_equal(c->keep_alive, 30);
    assert_true(mqtt_bytes_eq_str(c->client_id, "dev-1"));
    assert_false(c->username_flag);
    assert_false(c->password_flag);
    assert_true(MQTT_HAS(&c->props, MQTT_PROP_AUTHENTICATION_METHOD));
    assert_true(mqtt_bytes_eq_str(c->props.authentication_method, "SAS"));
    assert_true(MQTT_HAS(&c->props, MQTT_PROP_AUTHENTICATION_DATA));
    assert_int_equal(c->props.authentication_data.len, 32);
    assert_memory_equal(c->props.authentication_data.p, expected_sig, 32);

    static const char *const names[] = {"api-version", "host", "sas-expiry"};
    static const char *const values[] = {"2020-10-01-preview", "hub.example.net", "1700000000000"};
    assert_int_equal(c->props.user_count, 3);
    mqtt_iter it;
    mqtt_bytes name, value;
    mqtt_user_props_iter(&c->props, &it);
    for (int i = 0; i < 3; i++) {
        assert_true(mqtt_user_props_next(&it, &name, &value));
        assert_true(mqtt_bytes_eq_str(name, names[i]));
        assert_true(mqtt_bytes_eq_str(value, values[i]));
    }
    assert_false(mqtt_user_props_next(&it, &name, &value));
    bench_buf_free(&b);
}

static void test_connect_anonymous_both_versions(void **state)
{
    (void)state;
    uint8_t versions[] = {MQTT_V311, MQTT_V5};
    for (int i = 0; i < 2; i++) {
        bench_buf b = {0};
        assert_true(proto_put_connect(&b, versions[i], "bench-000001", 10, NULL));
        mqtt_packet pkt;
        decode_one(&b, versions[i], &pkt);
        assert_int_equal(pkt.u.connect.protocol_version, versions[i]);
        assert_false(MQTT_HAS(&pkt.u.connect.props, MQTT_PROP_AUTHENTICATION_METHOD));
        bench_buf_free(&b);
    }
    /* SAS needs MQTT 5 */
    bench_buf b = {0};
    proto_sas sas = {"h", test_key, 1};
    assert_false(proto_put_connect(&b, MQTT_V311, "d", 10, &sas));
    bench_buf_free(&b);
}

static void test_publish_subscribe_round_trip(void **state)
{
    (void)state;
    uint8_t payload[300];
    memset(payload, 0xAB, sizeof payload);
    bench_buf b = {0};
    assert_true(proto_put_publish(&b, MQTT_V5, MQTT_BYTES_LIT("$iothub/telemetry"), 1, 77,
                                  payload, sizeof payload));
    mqtt_packet pkt;
    decode_one(&b, MQTT_V5, &pkt);
    assert_int_equal(pkt.type, MQTT_PUBLISH);
    assert_int_equal(pkt.u.publish.qos, 1);
    assert_int_equal(pkt.u.publish.packet_id, 77);
    assert_true(mqtt_bytes_eq_str(pkt.u.publish.topic, "$iothub/telemetry"));
    assert_int_equal(pkt.u.publish.payload.len, sizeof payload);
    assert_memory_equal(pkt.u.publish.payload.p, payload, sizeof payload);

    b.start = b.len = 0;
    assert_true(proto_put_subscribe(&b, MQTT_V311, 9, MQTT_BYTES_LIT("bench/fanout"), 0));
    decode_one(&b, MQTT_V311, &pkt);
    assert_int_equal(pkt.type, MQTT_SUBSCRIBE);
    assert_int_equal(pkt.u.subscribe.packet_id, 9);
    mqtt_iter it;
    mqtt_sub_entry e;
    mqtt_subscribe_iter(&pkt.u.subscribe, &it);
    assert_true(mqtt_subscribe_next(&it, &e));
    assert_true(mqtt_bytes_eq_str(e.filter, "bench/fanout"));
    assert_int_equal(MQTT_SUBOPT_QOS(e.options), 0);

    uint8_t kinds[] = {MQTT_PINGREQ, MQTT_DISCONNECT, MQTT_PUBACK};
    for (int i = 0; i < 3; i++) {
        b.start = b.len = 0;
        if (kinds[i] == MQTT_PINGREQ)
            assert_true(proto_put_pingreq(&b, MQTT_V5));
        else if (kinds[i] == MQTT_DISCONNECT)
            assert_true(proto_put_disconnect(&b, MQTT_V5));
        else
            assert_true(proto_put_puback(&b, MQTT_V5, 5));
        decode_one(&b, MQTT_V5, &pkt);
        assert_int_equal(pkt.type, kinds[i]);
    }
    bench_buf_free(&b);
}

static void test_buffer_compacts_and_grows(void **state)
{
    (void)state;
    bench_buf b = {0};
    assert_true(bench_buf_reserve(&b, 100));
    b.len = 100;
    b.start = 60; /* 40 pending */
    size_t cap = b.cap;
    assert_true(bench_buf_reserve(&b, cap - 50));
    assert_int_equal(b.start, 0);
    assert_int_equal(bench_buf_pending(&b), 40);
    assert_int_equal(b.cap, cap); /* compaction was enough */
    assert_true(bench_buf_reserve(&b, 10 * cap));
    assert_true(b.cap - b.len >= 10 * cap);
    bench_buf_free(&b);
    assert_null(b.data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sas_vector),
        cmocka_unit_test(test_connect_with_sas_round_trip),
        cmocka_unit_test(test_connect_anonymous_both_versions),
        cmocka_unit_test(test_publish_subscribe_round_trip),
        cmocka_unit_test(test_buffer_compacts_and_grows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the device simulator's pure helpers
 * (src/tools/iothub/simulate_util.c, compiled into this test): --mqtt
 * address parsing, the sensor's body and bounds, the reported patch made
 * from a desired patch, and user property lookup. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/tools/iothub/simulate_util.c"

static void test_address_forms(void **state)
{
    (void)state;
    char host[64];
    uint16_t port;
    assert_true(sim_parse_address("127.0.0.1:1884", 1883, host, sizeof host, &port));
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 1884);
    assert_true(sim_parse_address("hub.local", 8883, host, sizeof host, &port));
    assert_string_equal(host, "hub.local");
    assert_int_equal(port, 8883);
    assert_true(sim_parse_address("[::1]:1999", 1883, host, sizeof host, &port));
    assert_string_equal(host, "::1");
    assert_int_equal(port, 1999);
    assert_true(sim_parse_address("[::1]", 1883, host, sizeof host, &port));
    assert_string_equal(host, "::1");
    assert_int_equal(port, 1883);
}

static void test_address_rejects(void **state)
{
    (void)state;
    char host[8];
    uint16_t port;
    const char *bad[] = {"", ":1883", "h:", "h:0", "h:65536", "h:12x", "h:-1", "::1:1883",
                         "[::1", "[::1]x", "[]:1", "a-very-long-host:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(sim_parse_address(bad[i], 1883, host, sizeof host, &port));
}

static void test_sensor_body_and_bounds(void **state)
{
    (void)state;
    sim_sensor s;
    char body[SIM_BODY_MAX];
    sim_sensor_init(&s, 42);
    assert_true(sim_sensor_next(&s, 1, body, sizeof body));
    json_t *doc = json_loads(body, 0, NULL);
    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_object_get(doc, "seq")), 1);
    assert_true(json_is_number(json_object_get(doc, "temperature")));
    assert_true(json_is_number(json_object_get(doc, "humidity")));
    json_decref(doc);
    for (uint64_t i = 2; i < 100000; i++) {
        assert_true(sim_sensor_next(&s, i, body, sizeof body));
        assert_in_range(s.temperature_dc, TEMP_MIN_DC, TEMP_MAX_DC);
        assert_in_range(s.humidity_dpct, HUMIDITY_MIN_DPCT, HUMIDITY_MAX_DPCT);
    }
    char tiny[8];
    assert_false(sim_sensor_next(&s, 1, tiny, sizeof tiny));
}

static void test_sensor_reproducible(void **state)
{
    (void)state;
    sim_sensor a, b;
    char ba[SIM_BODY_MAX], bb[SIM_BODY_MAX];
    sim_sensor_init(&a, 7);
    sim_sensor_init(&b, 7);
    for (int i = 0; i < 10; i++) {
        sim_sensor_next(&a, (uint64_t)i, ba, sizeof ba);
        sim_sensor_next(&b, (uint64_t)i, bb, sizeof bb);
        assert_string_equal(ba, bb);
    }
    sim_sensor_init(&a, 0); /* a zero seed still moves */
    sim_sensor_next(&a, 1, ba, sizeof ba);
    assert_int_not_equal(a.rng, 0);
}

static void test_reported_for_desired(void **state)
{
    (void)state;
    const char *patch = "{\"fan\":true,\"mode\":{\"speed\":2},\"old\":null,\"$version\":7}";
    json_t *r = sim_reported_for_desired((const uint8_t *)patch, strlen(patch));
    assert_non_null(r);
    char *text = json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(text, "{\"fan\":true,\"mode\":{\"speed\":2},\"old\":null}");
    free(text);
    json_decref(r);
    assert_null(sim_reported_for_desired((const uint8_t *)"[1]", 3));
    assert_null(sim_reported_for_desired((const uint8_t *)"{bad", 4));
    assert_null(sim_reported_for_desired((const uint8_t *)"", 0));
}

static void test_user_prop(void **state)
{
    (void)state;
    uint8_t block[128];
    size_t len = 0;
    mqtt_props props = {0};
    assert_true(mqtt_user_props_append(block, sizeof block, &len, MQTT_BYTES_LIT("status"),
                                       MQTT_BYTES_LIT("0104")));
    assert_true(mqtt_user_props_append(block, sizeof block, &len, MQTT_BYTES_LIT("version"),
                                       MQTT_BYTES_LIT("12345")));
    props.user = (mqtt_bytes){block, (uint32_t)len};
    props.user_count = 2;
    char buf[8];
    assert_string_equal(sim_user_prop(&props, "status", buf, sizeof buf), "0104");
    assert_string_equal(sim_user_prop(&props, "version", buf, sizeof buf), "12345");
    assert_null(sim_user_prop(&props, "reason", buf, sizeof buf));
    char small[4];
    assert_null(sim_user_prop(&props, "status", small, sizeof small)); /* does not fit */
    mqtt_props none = {0};
    assert_null(sim_user_prop(&none, "status", buf, sizeof buf));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_address_forms),
        cmocka_unit_test(test_address_rejects),
        cmocka_unit_test(test_sensor_body_and_bounds),
        cmocka_unit_test(test_sensor_reproducible),
        cmocka_unit_test(test_reported_for_desired),
        cmocka_unit_test(test_user_prop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * tests/unit/test_message.c — broker_msg: what is copied, user properties
 * picked out of a mixed property region, Message Expiry arithmetic.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "broker/message.h"

static void assert_bytes(mqtt_bytes b, const char *s)
{
    assert_int_equal(b.len, strlen(s));
    if (b.len)
        assert_memory_equal(b.p, s, b.len);
}

static size_t put_str(uint8_t *w, const char *s)
{
    size_t n = strlen(s);
    w[0] = (uint8_t)(n >> 8);
    w[1] = (uint8_t)n;
    memcpy(w + 2, s, n);
    return 2 + n;
}

static size_t put_user(uint8_t *w, const char *k, const char *v)
{
    size_t n = 0;
    w[n++] = MQTT_PROP_USER_PROPERTY;
    n += put_str(w + n, k);
    n += put_str(w + n, v);
    return n;
}

/* Reads the user properties of a region the simple way (every entry must
 * be a user property: that is what broker_msg_new leaves). */
static void expect_users(mqtt_bytes r, uint32_t count, const char *const *kv)
{
    size_t off = 0;
    for (uint32_t i = 0; i < count; i++) {
        assert_true(off < r.len);
        assert_int_equal(r.p[off], MQTT_PROP_USER_PROPERTY);
        off++;
        for (int j = 0; j < 2; j++) {
            size_t n = (size_t)r.p[off] << 8 | r.p[off + 1];
            const char *want = kv[2 * i + j];
            assert_int_equal(n, strlen(want));
            assert_memory_equal(r.p + off + 2, want, n);
            off += 2 + n;
        }
    }
    assert_int_equal(off, r.len);
}

static bool inside(const broker_msg *m, mqtt_bytes b)
{
    const uint8_t *lo = (const uint8_t *)m;
    return b.len == 0 || (b.p > lo && b.p >= m->data);
}

static void test_basic_copy(void **state)
{
    (void)state;
    uint8_t topicbuf[] = "a/b/c";
    uint8_t payload[] = {0, 1, 2, 3, 0xff};
    mqtt_publish pub = {0};
    pub.qos = 1;
    pub.retain = true;
    pub.topic = MQTT_BYTES_LIT("alias-resolved-elsewhere");
    pub.payload = (mqtt_bytes){payload, sizeof payload};
    int origin = 0;

    broker_msg *m = broker_msg_new(&pub, (mqtt_bytes){topicbuf, 5}, &origin, 1000);
    assert_non_null(m);
    topicbuf[0] = 'X'; /* the message owns a copy */
    payload[0] = 9;
    assert_bytes(m->topic, "a/b/c");
    assert_int_equal(m->payload.len, 5);
    assert_int_equal(m->payload.p[0], 0);
    assert_int_equal(m->payload.p[4], 0xff);
    assert_int_equal(m->qos, 1);
    assert_true(m->retain);
    assert_ptr_equal(m->origin, &origin);
    assert_false(m->has_expiry);
    assert_false(broker_msg_expired(m, UINT64_MAX));
    assert_int_equal(m->props.present, 0);
    assert_int_equal(m->props.user_count, 0);
    assert_int_equal(m->props.user.len, 0);
    assert_int_equal(atomic_load(&m->refs), 1);

    assert_ptr_equal(broker_msg_ref(m), m);
    assert_int_equal(atomic_load(&m->refs), 2);
    broker_msg_unref(m);
    broker_msg_unref(m); /* freed: ASan checks */
    broker_msg_unref(NULL);
}

static void test_empty_payload(void **state)
{
    (void)state;
    mqtt_publish pub = {0};
    broker_msg *m = broker_msg_new(&pub, MQTT_BYTES_LIT("t"), NULL, 0);
    assert_non_null(m);
    assert_int_equal(m->payload.len, 0);
    assert_bytes(m->topic, "t");
    broker_msg_unref(m);
}

static void test_forwarded_props(void **state)
{
    (void)state;
    char ct[] = "application/json", rt[] = "reply/here";
    uint8_t cd[] = {1, 2, 0, 4};
    mqtt_publish pub = {0};
    pub.payload = MQTT_BYTES_LIT("{}");
    mqtt_props *p = &pub.props;
    MQTT_SET(p, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR);
    p->payload_format_indicator = 1;
    MQTT_SET(p, MQTT_PROP_CONTENT_TYPE);
    p->content_type = (mqtt_bytes){(uint8_t *)ct, (uint32_t)strlen(ct)};
    MQTT_SET(p, MQTT_PROP_RESPONSE_TOPIC);
    p->response_topic = (mqtt_bytes){(uint8_t *)rt, (uint32_t)strlen(rt)};
    MQTT_SET(p, MQTT_PROP_CORRELATION_DATA);
    p->correlation_data = (mqtt_bytes){cd, sizeof cd};
    /* not forwarded */
    MQTT_SET(p, MQTT_PROP_TOPIC_ALIAS);
    p->topic_alias = 7;
    p->subscription_identifier_count = 1;
    p->subscription_identifier[0] = 42;

    broker_msg *m = broker_msg_new(&pub, MQTT_BYTES_LIT("x"), NULL, 5);
    assert_non_null(m);
    memset(ct, '?', sizeof ct - 1);
    memset(rt, '?', sizeof rt - 1);
    memset(cd, 0xee, sizeof cd);

    const mqtt_props *q = &m->props;
    assert_true(MQTT_HAS(q, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR));
    assert_int_equal(q->payload_format_indicator, 1);
    assert_true(MQTT_HAS(q, MQTT_PROP_CONTENT_TYPE));
    assert_bytes(q->content_type, "application/json");
    assert_true(MQTT_HAS(q, MQTT_PROP_RESPONSE_TOPIC));
    assert_bytes(q->response_topic, "reply/here");
    assert_true(MQTT_HAS(q, MQTT_PROP_CORRELATION_DATA));
    assert_int_equal(q->correlation_data.len, 4);
    assert_memory_equal(q->correlation_data.p, ((uint8_t[]){1, 2, 0, 4}), 4);
    assert_false(MQTT_HAS(q, MQTT_PROP_TOPIC_ALIAS));
    assert_false(MQTT_HAS(q, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL));
    assert_int_equal(q->topic_alias, 0);
    assert_int_equal(q->subscription_identifier_count, 0);
    assert_false(m->has_expiry);
    assert_true(inside(m, q->content_type));
    assert_true(inside(m, q->response_topic));
    assert_true(inside(m, q->correlation_data));
    assert_bytes(m->payload, "{}");
    broker_msg_unref(m);
}

static void test_user_props_interleaved(void **state)
{
    (void)state;
    uint8_t region[512];
    size_t n = 0;
    /* every data type interleaved with the user properties */
    region[n++] = MQTT_PROP_PAYLOAD_FORMAT_INDICATOR; /* byte */
    region[n++] = 1;
    n += put_user(region + n, "k1", "v1");
    region[n++] = MQTT_PROP_TOPIC_ALIAS; /* u16 */
    region[n++] = 0x00;
    region[n++] = 0x26; /* looks like a user-property id: must be skipped */
    region[n++] = MQTT_PROP_MESSAGE_EXPIRY_INTERVAL; /* u32 */
    memcpy(region + n, "\x26\x00\x02\x26", 4);
    n += 4;
    n += put_user(region + n, "", "empty-key");
    region[n++] = MQTT_PROP_SUBSCRIPTION_IDENTIFIER; /* varint, 3 bytes */
    region[n++] = 0xa6;
    region[n++] = 0xa6;
    region[n++] = 0x26;
    region[n++] = MQTT_PROP_CONTENT_TYPE; /* string */
    n += put_str(region + n, "text/plain");
    region[n++] = MQTT_PROP_CORRELATION_DATA; /* binary */
    n += put_str(region + n, "\x26\x26");
    n += put_user(region + n, "k1", "dup");
    region[n++] = MQTT_PROP_REASON_STRING;
    n += put_str(region + n, "");
    n += put_user(region + n, "last", "");

    mqtt_publish pub = {0};
    pub.props.user = (mqtt_bytes){region, (uint32_t)n};
    pub.props.user_count = 4;
    broker_msg *m = broker_msg_new(&pub, MQTT_BYTES_LIT("t"), NULL, 0);
    assert_non_null(m);
    memset(region, 0, sizeof region);

    static const char *const want[] = {"k1", "v1", "", "empty-key",
                                       "k1", "dup", "last", ""};
    assert_int_equal(m->props.user_count, 4);
    assert_true(inside(m, m->props.user));
    expect_users(m->props.user, 4, want);
    /* nothing but the user properties travelled */
    assert_int_equal(m->props.present, 0);
    broker_msg_unref(m);
}

static void test_user_props_only(void **state)
{
    (void)state;
    uint8_t region[64];
    size_t n = put_user(region, "a", "b");
    mqtt_publish pub = {0};
    pub.payload = MQTT_BYTES_LIT("p");
    pub.props.user = (mqtt_bytes){region, (uint32_t)n};
    pub.props.user_count = 1;
    broker_msg *m = broker_msg_new(&pub, MQTT_BYTES_LIT("t"), NULL, 0);
    assert_non_null(m);
    static const char *const want[] = {"a", "b"};
    expect_users(m->props.user, 1, want);
    assert_bytes(m->payload, "p");
    broker_msg_unref(m);
}

static void test_no_user_props_in_region(void **state)
{
    (void)state;
    uint8_t region[] = {MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 1};
    mqtt_publish pub = {0};
    pub.props.user = (mqtt_bytes){region, sizeof region};
    pub.props.user_count = 0;
    broker_msg *m = broker_msg_new(&pub, MQTT_BYTES_LIT("t"), NULL, 0);
    assert_non_null(m);
    assert_int_equal(m->props.user_count, 0);
    assert_int_equal(m->props.user.len, 0);
    broker_msg_unref(m);
}

static void test_expiry(void **state)
{
    (void)state;
    static const struct {
        uint32_t interval;
        uint64_t now, at;
        uint32_t left;
        bool expired;
    } cases[] = {
        {10, 1000, 1000, 10, false},
        {10, 1000, 1001, 10, false},  /* 9.999 s rounds up */
        {10, 1000, 1999, 10, false},
        {10, 1000, 2000, 9, false},
        {10, 1000, 2001, 9, false},
        {10, 1000, 10999, 1, false},
        {10, 1000, 11000, 0, true},   /* exactly at the deadline */
        {10, 1000, 50000, 0, true},
        {0, 500, 500, 0, true},       /* interval 0: expires at once */
        {1, 0, 0, 1, false},
        {UINT32_MAX, 7, 7, UINT32_MAX, false},
        {UINT32_MAX, 7, 1007, UINT32_MAX - 1, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mqtt_publish pub = {0};
        MQTT_SET(&pub.props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL);
        pub.props.message_expiry_interval = cases[i].interval;
        broker_msg *m = broker_msg_new(&pub, MQTT_BYTES_LIT("t"), NULL, cases[i].now);
        assert_non_null(m);
        assert_true(m->has_expiry);
        assert_true(MQTT_HAS(&m->props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL));
        assert_int_equal(m->expires_at_ms,
                         cases[i].now + (uint64_t)cases[i].interval * 1000);
        assert_int_equal(broker_msg_expiry_left(m, cases[i].at), cases[i].left);
        assert_int_equal(broker_msg_expired(m, cases[i].at), cases[i].expired);
        broker_msg_unref(m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_copy),
        cmocka_unit_test(test_empty_payload),
        cmocka_unit_test(test_forwarded_props),
        cmocka_unit_test(test_user_props_interleaved),
        cmocka_unit_test(test_user_props_only),
        cmocka_unit_test(test_no_user_props_in_region),
        cmocka_unit_test(test_expiry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

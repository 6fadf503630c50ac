/*
 * tests/unit/test_c2d.c — the pure rules of cloud-to-device commands
 * (hub/c2d_queue.h): sequence order, locks and their expiry, stale
 * delivery tags, message expiry, deadlines, how a PUBACK settles, and the
 * properties blob round trip.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hub/c2d_queue.h"
#include "mqtt/codec.h"

static c2d_msg *msg(uint64_t seq, int64_t expiry)
{
    c2d_msg *m = c2d_msg_new(seq, 1000, expiry, 0, "p", 1, "body", 4);
    assert_non_null(m);
    return m;
}

static void test_insert_keeps_sequence_order(void **state)
{
    (void)state;
    c2d_queue q = {0};
    c2d_queue_insert(&q, msg(5, 0));
    c2d_queue_insert(&q, msg(2, 0));
    c2d_queue_insert(&q, msg(9, 0));
    c2d_queue_insert(&q, msg(7, 0));
    uint64_t want[] = {2, 5, 7, 9}, i = 0;
    for (c2d_msg *m = q.head; m; m = m->next)
        assert_int_equal(m->seq, want[i++]);
    assert_int_equal(q.len, 4);
    assert_int_equal(q.tail->seq, 9);
    c2d_msg_free(c2d_queue_unlink(&q, q.tail));
    assert_int_equal(q.tail->seq, 7);
    c2d_queue_insert(&q, msg(8, 0));
    assert_int_equal(q.tail->seq, 8);
    c2d_queue_clear(&q);
    assert_null(q.head);
}

static void test_locks_and_stale_tags(void **state)
{
    (void)state;
    c2d_queue q = {0};
    c2d_queue_insert(&q, msg(1, 0));
    c2d_queue_insert(&q, msg(2, 0));
    c2d_msg *a = c2d_queue_next_available(&q, 0);
    assert_int_equal(a->seq, 1);
    c2d_queue_lock(&q, a, 77, 100, 5000);
    assert_int_equal(c2d_queue_next_available(&q, 0)->seq, 2);
    assert_int_equal(q.locked, 1);
    assert_ptr_equal(c2d_queue_find_tag(&q, 100), a);
    assert_null(c2d_queue_find_tag(&q, 99));
    /* the lock runs out: available again, count unchanged, old tag stale */
    assert_int_equal(c2d_queue_unlock_expired(&q, 4999), 0);
    assert_int_equal(c2d_queue_unlock_expired(&q, 5000), 1);
    assert_null(c2d_queue_find_tag(&q, 100));
    assert_int_equal(a->delivery_count, 0);
    assert_int_equal(q.locked, 0);
    /* a connection going releases only its own locks */
    c2d_queue_lock(&q, a, 77, 101, 9000);
    c2d_queue_lock(&q, a->next, 88, 102, 9000);
    assert_int_equal(c2d_queue_unlock_owner(&q, 77), 1);
    assert_int_equal(q.locked, 1);
    assert_non_null(c2d_queue_find_tag(&q, 102));
    c2d_queue_clear(&q);
}

static void test_expiry_and_deadline(void **state)
{
    (void)state;
    c2d_queue q = {0};
    assert_true(c2d_queue_next_deadline(&q) == INT64_MAX);
    c2d_queue_insert(&q, msg(1, 3000));
    c2d_queue_insert(&q, msg(2, 8000));
    c2d_queue_lock(&q, q.tail, 1, 1, 2000);
    assert_int_equal(c2d_queue_next_deadline(&q), 2000);
    assert_null(c2d_queue_find_expired(&q, 2999));
    c2d_msg *e = c2d_queue_find_expired(&q, 3000);
    assert_int_equal(e->seq, 1);
    c2d_msg_free(c2d_queue_unlink(&q, e));
    assert_null(c2d_queue_next_available(&q, 3000)); /* the other is locked */
    c2d_queue_unlock(&q, q.head);
    assert_null(c2d_queue_next_available(&q, 8000)); /* expired: never delivered */
    c2d_queue_clear(&q);
}

static void test_settlement(void **state)
{
    (void)state;
    assert_int_equal(c2d_settlement_of(0, (mqtt_bytes){0}), C2D_COMPLETE);
    assert_int_equal(c2d_settlement_of(0x10, (mqtt_bytes){0}), C2D_COMPLETE);
    assert_int_equal(c2d_settlement_of(0x83, MQTT_BYTES_LIT("0100")), C2D_REJECT);
    assert_int_equal(c2d_settlement_of(0x83, MQTT_BYTES_LIT("0603")), C2D_ABANDON);
    assert_int_equal(c2d_settlement_of(0x83, (mqtt_bytes){0}), C2D_ABANDON);
    assert_int_equal(c2d_settlement_of(0x80, MQTT_BYTES_LIT("0100")), C2D_ABANDON);
}

static void test_props_round_trip(void **state)
{
    (void)state;
    c2d_app_prop app[] = {{"color", "red"}, {"n", ""}};
    c2d_message in = {.message_id = "m1", .correlation_id = "c1", .content_type = "text/plain",
                      .creation_time_ms = 1600000000000, .ack = C2D_ACK_FULL, .app = app,
                      .app_count = 2};
    uint8_t *blob;
    size_t len;
    assert_true(c2d_props_encode(&in, "m1", &blob, &len));
    c2d_props_view v;
    assert_true(c2d_props_decode(blob, len, &v));
    assert_int_equal(v.ack, C2D_ACK_FULL);
    assert_true(mqtt_bytes_eq_str(v.content_type, "text/plain"));
    assert_true(mqtt_bytes_eq_str(v.message_id, "m1"));
    assert_true(v.message_id_from_sender);
    assert_int_equal(v.user_count, 5); /* creation-time, message-id, correlation-id, 2 apps */
    mqtt_props p = {.user = v.users, .user_count = v.user_count};
    mqtt_iter it;
    mqtt_bytes name, value;
    const char *want[][2] = {{"creation-time", "1600000000000"}, {"message-id", "m1"},
                             {"correlation-id", "c1"}, {"@color", "red"}, {"@n", ""}};
    size_t i = 0;
    mqtt_user_props_iter(&p, &it);
    while (mqtt_user_props_next(&it, &name, &value)) {
        assert_true(i < 5);
        assert_true(mqtt_bytes_eq_str(name, want[i][0]));
        assert_true(mqtt_bytes_eq_str(value, want[i][1]));
        i++;
    }
    assert_int_equal(i, 5);
    assert_false(c2d_props_decode(blob, 3, &v)); /* truncated */
    blob[0] = 9;
    assert_false(c2d_props_decode(blob, len, &v)); /* unknown version */
    free(blob);
}

static void test_generated_id_is_not_sent(void **state)
{
    (void)state;
    c2d_message in = {0};
    uint8_t *blob;
    size_t len;
    assert_true(c2d_props_encode(&in, "generated", &blob, &len));
    c2d_props_view v;
    assert_true(c2d_props_decode(blob, len, &v));
    assert_true(mqtt_bytes_eq_str(v.message_id, "generated"));
    assert_false(v.message_id_from_sender);
    assert_int_equal(v.user_count, 0);
    assert_int_equal(v.content_type.len, 0);
    free(blob);
}

static void test_ack_parse(void **state)
{
    (void)state;
    c2d_ack a;
    assert_true(c2d_ack_parse("Full", &a) && a == C2D_ACK_FULL);
    assert_true(c2d_ack_parse("none", &a) && a == C2D_ACK_NONE);
    assert_false(c2d_ack_parse("all", &a));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_keeps_sequence_order),
        cmocka_unit_test(test_locks_and_stale_tags),
        cmocka_unit_test(test_expiry_and_deadline),
        cmocka_unit_test(test_settlement),
        cmocka_unit_test(test_props_round_trip),
        cmocka_unit_test(test_generated_id_is_not_sent),
        cmocka_unit_test(test_ack_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

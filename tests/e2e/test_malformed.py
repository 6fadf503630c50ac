"""Malformed packets and protocol errors: the broker must close the offending
connection (MQTT 5: after a DISCONNECT 0x81 Malformed Packet / 0x82 Protocol
Error when the CONNECT had been accepted; Mosquitto sometimes just closes,
which the standard allows - iothubd is required to send the DISCONNECT) and
keep serving everyone else."""

import struct

import pytest

import mqtt5raw as raw
from mqtt5raw import enc_props, enc_str, packet
from e2e_util import (IS_MOSQUITTO, assert_broker_healthy, assert_server_closes, collect_publishes,
                      raw_client, raw_connect, raw_publish_qos, utopic, uid)

MALFORMED_OR_PROTOCOL = [raw.RC_MALFORMED_PACKET, raw.RC_PROTOCOL_ERROR]


def publish_raw(topic_bytes, qos=0, flags=None, pid=1, props=b"\x00", payload=b"x"):
    body = struct.pack("!H", len(topic_bytes)) + topic_bytes
    if qos:
        body += struct.pack("!H", pid)
    body += props + payload
    if flags is None:
        flags = qos << 1
    return packet(raw.PUBLISH, flags, body)


def subscribe_raw(flags=2, pid=1, props=b"\x00", subs=((b"a/b", 1),)):
    body = struct.pack("!H", pid) + props
    for flt, opt in subs:
        body += struct.pack("!H", len(flt)) + flt + bytes([opt])
    return packet(raw.SUBSCRIBE, flags, body)


# name -> (bytes to send after a successful MQTT 5 CONNECT, allowed DISCONNECT codes)
CASES = {
    "publish_qos3": (publish_raw(b"a/b", qos=1, flags=0x06), MALFORMED_OR_PROTOCOL),
    "publish_invalid_utf8_topic": (publish_raw(b"bad/\xff\xfe/topic"), MALFORMED_OR_PROTOCOL),
    "publish_utf8_surrogate_topic": (publish_raw(b"bad/\xed\xa0\x80"), MALFORMED_OR_PROTOCOL),
    "publish_null_char_in_topic": (publish_raw(b"bad/\x00/t"), MALFORMED_OR_PROTOCOL),
    "publish_wildcard_in_topic": (publish_raw(b"bad/+/t"),
                                  MALFORMED_OR_PROTOCOL + [raw.RC_TOPIC_NAME_INVALID]),
    "publish_qos1_packet_id_zero": (publish_raw(b"a/b", qos=1, pid=0), MALFORMED_OR_PROTOCOL),
    "publish_topic_length_overflows_packet": (
        packet(raw.PUBLISH, 0, b"\x00\x20abc"), MALFORMED_OR_PROTOCOL),
    "publish_property_length_overflows_packet": (
        publish_raw(b"a/b", props=b"\x10\x01\x01", payload=b""), MALFORMED_OR_PROTOCOL),
    "publish_unknown_property_id": (publish_raw(b"a/b", props=b"\x02\x7f\x00"), MALFORMED_OR_PROTOCOL),
    "publish_property_not_allowed_session_expiry": (
        publish_raw(b"a/b", props=enc_props({"SessionExpiryInterval": 10})), MALFORMED_OR_PROTOCOL),
    "publish_property_not_allowed_subscription_identifier": (
        publish_raw(b"a/b", props=enc_props({"SubscriptionIdentifier": 3})), MALFORMED_OR_PROTOCOL),
    "publish_duplicate_content_type": (
        publish_raw(b"a/b", props=enc_props([("ContentType", "a"), ("ContentType", "b")])),
        MALFORMED_OR_PROTOCOL),
    "publish_payload_format_invalid_value": (
        publish_raw(b"a/b", props=enc_props({"PayloadFormatIndicator": 7})), MALFORMED_OR_PROTOCOL),
    "remaining_length_five_bytes": (b"\x30\xff\xff\xff\xff\x01" + b"\x00" * 16, MALFORMED_OR_PROTOCOL),
    "subscribe_reserved_flags_zero": (subscribe_raw(flags=0), MALFORMED_OR_PROTOCOL),
    "subscribe_no_topic_filters": (subscribe_raw(subs=()), MALFORMED_OR_PROTOCOL),
    "subscribe_options_reserved_bits": (subscribe_raw(subs=((b"a/b", 0xC1),)), MALFORMED_OR_PROTOCOL),
    "subscribe_retain_handling_3": (subscribe_raw(subs=((b"a/b", 0x31),)), MALFORMED_OR_PROTOCOL),
    "subscribe_property_not_allowed_message_expiry": (
        subscribe_raw(props=enc_props({"MessageExpiryInterval": 5})), MALFORMED_OR_PROTOCOL),
    "subscribe_subscription_identifier_zero": (
        subscribe_raw(props=b"\x02\x0b\x00"), MALFORMED_OR_PROTOCOL),
    "unsubscribe_reserved_flags_zero": (
        packet(raw.UNSUBSCRIBE, 0, b"\x00\x01\x00" + enc_str("a/b")), MALFORMED_OR_PROTOCOL),
    "pubrel_reserved_flags_zero": (packet(raw.PUBREL, 0, b"\x00\x01"), MALFORMED_OR_PROTOCOL),
    "pingreq_reserved_flags": (packet(raw.PINGREQ, 1, b""), MALFORMED_OR_PROTOCOL),
    "pingreq_with_body": (packet(raw.PINGREQ, 0, b"\x00"), MALFORMED_OR_PROTOCOL),
    "reserved_packet_type_0": (packet(0, 0, b""), MALFORMED_OR_PROTOCOL),
    "second_connect": (None, MALFORMED_OR_PROTOCOL),
    "auth_without_authentication_method": (packet(raw.AUTH, 0, b"\x18\x00"), MALFORMED_OR_PROTOCOL),
}

# Cases where Mosquitto 2.0.11 does not follow the standard; tolerated only there.
MOSQUITTO_TOLERATED = {
    # Mosquitto 2.0.11 ignores reserved flags / a body on PINGREQ (MQTT-2.1.3-1)
    "pingreq_reserved_flags": "accepts",
    "pingreq_with_body": "accepts",
    # and does not validate these PUBLISH properties (MQTT-3.3.4-6 forbids a
    # Subscription Identifier from a client; PFI must be 0 or 1)
    "publish_property_not_allowed_subscription_identifier": "accepts",
    "publish_payload_format_invalid_value": "accepts",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_packet_closes_connection_broker_keeps_serving(broker, case):
    data, allowed = CASES[case]
    # a healthy client connected before, which must be unaffected
    topic = utopic("healthy")
    bystander = raw_connect(broker)
    bystander.subscribe(topic, qos=1)
    c = raw_connect(broker)
    if case == "second_connect":
        data = c.connect_bytes(client_id=c.client_id)
    c.send_raw(data)
    if IS_MOSQUITTO and case in MOSQUITTO_TOLERATED:
        try:
            pkts = c.recv_until_closed(1.0)
            discs = [p for p in pkts if p.type == raw.DISCONNECT]
            assert not discs or discs[-1].reason_code in allowed
        except raw.Timeout:
            c.close()  # mosquitto accepted the packet
    else:
        assert_server_closes(c, allowed)
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"still-here", 1)
    got = collect_publishes(bystander, 0.5)
    assert [p.payload for p in got] == [b"still-here"]
    assert_broker_healthy(broker)


def test_publish_qos3_disconnect_malformed(broker):
    """MQTT-3.3.1-4: QoS 3 is a Malformed Packet."""
    c = raw_connect(broker)
    c.send_raw(publish_raw(b"t/q3", qos=1, flags=0x06))
    d = assert_server_closes(c, MALFORMED_OR_PROTOCOL)
    if d is not None and not IS_MOSQUITTO:
        assert d.reason_code == raw.RC_MALFORMED_PACKET
    assert_broker_healthy(broker)


def test_publish_invalid_utf8_topic_disconnect_malformed(broker):
    """MQTT-1.5.4-1: ill-formed UTF-8 in a topic is a Malformed Packet."""
    sub = raw_connect(broker)
    sub.subscribe("#", qos=0)
    c = raw_connect(broker)
    c.send_raw(publish_raw(b"t/\xc3\x28", qos=1))
    d = assert_server_closes(c, MALFORMED_OR_PROTOCOL)
    if d is not None and not IS_MOSQUITTO:
        assert d.reason_code == raw.RC_MALFORMED_PACKET
    assert [p for p in collect_publishes(sub, 0.3) if p.topic.startswith("t/")] == []
    assert_broker_healthy(broker)


def test_publish_exceeding_maximum_qos_or_accepted(broker):
    """A QoS 2 PUBLISH is fine when the server's Maximum QoS is 2 (default)."""
    c = raw_connect(broker)
    assert c.connack.properties.get("MaximumQoS", 2) == 2
    raw_publish_qos(c, utopic(), b"x", 2)


# ------------------------------------------------------------ before CONNECT is accepted
def test_first_packet_not_connect_closed(broker):
    c = raw_client(broker)
    c.send_raw(publish_raw(b"a/b"))
    pkts = c.recv_until_closed(5)
    assert all(p.type != raw.CONNACK or p.reason_code >= 0x80 for p in pkts)
    assert_broker_healthy(broker)


def test_garbage_bytes_closed(broker):
    # 'G' (0x47) reads as a PUBACK header with reserved flags and remaining
    # length 'E' (69): pad so that the whole bogus "packet" arrives.
    c = raw_client(broker)
    c.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".ljust(256, b"x"))
    c.recv_until_closed(5)
    assert_broker_healthy(broker)


def test_connect_reserved_flag_set_closed(broker):
    """MQTT-3.1.2-3: reserved flag must be 0, else Malformed Packet."""
    c = raw_client(broker)
    c.send_connect(client_id=uid(), reserved_flag=True)
    pkts = c.recv_until_closed(5)
    for p in pkts:
        assert p.type == raw.CONNACK and p.reason_code in (0x81, 0x82)
    assert_broker_healthy(broker)


def test_connect_bad_protocol_name_closed(broker):
    c = raw_client(broker)
    c.send_connect(client_id=uid(), protocol_name="MQTX")
    pkts = c.recv_until_closed(5)
    for p in pkts:
        assert p.type == raw.CONNACK and p.reason_code in (0x01, 0x81, 0x82, 0x84)
    assert_broker_healthy(broker)


def test_connect_unsupported_protocol_version(broker):
    """Unknown version: CONNACK 0x84 (v5) / 0x01 (3.1.1 form) or just close."""
    c = raw_client(broker)
    c.send_connect(client_id=uid(), version=7)
    try:
        pkts = c.recv_until_closed(5)
    except ValueError:  # undecodable answer: the close is what matters
        pkts = []
    for p in pkts:
        assert p.type == raw.CONNACK and p.reason_code in (0x84, 0x01)
    assert_broker_healthy(broker)


def test_connect_truncated_then_close_by_client(broker):
    """Client sends half a CONNECT and goes away: broker survives."""
    c = raw_client(broker)
    data = c.connect_bytes(client_id=uid())
    c.send_raw(data[: len(data) // 2])
    c.close()
    assert_broker_healthy(broker)


def test_connect_will_qos3_closed(broker):
    c = raw_client(broker)
    data = bytearray(c.connect_bytes(client_id=uid(), will={"topic": "w", "payload": b"x", "qos": 1}))
    # set will QoS bits to 3: connect flags byte sits after "\x00\x04MQTT\x05"
    idx = data.index(b"MQTT") + 5
    data[idx] |= 0x18
    c.send_raw(bytes(data))
    pkts = c.recv_until_closed(5)
    for p in pkts:
        assert p.type == raw.CONNACK and p.reason_code >= 0x80
    assert_broker_healthy(broker)


def test_many_malformed_connections_do_not_leak_or_crash(broker):
    for i in range(30):
        c = raw_client(broker)
        if i % 3 == 0:
            c.send_raw(b"\x10\xff\xff\xff\xff\xff")
        elif i % 3 == 1:
            c.send_raw(b"\x10\x05\x00\x04MQ")
            c.close()
            continue
        else:
            c.send_connect(client_id=uid())
            c.recv()
            c.send_raw(b"\xf0\x00")  # AUTH without method
        c.recv_until_closed(5)
    assert_broker_healthy(broker)

"""Hostile MQTT input (issue 7): a catalogue of the MQTT 5.0 rules whose
violation is a Malformed Packet or a Protocol Error, and the resource
attacks (oversized and trickled packets, slowloris CONNECT, 10,000 silent
connections, a client that never reads, Receive Maximum and subscription
floods, hostile JSON and UTF-8 on the IoT Hub device API).

Every case asserts the exact outcome (CONNACK or DISCONNECT reason code,
SUBACK code, status) and that the connection is closed, and then that a
witness pair connected before the case is still served. Resource cases
also bound the server's memory growth (hostile_util.rss_kib).

Rules already exercised elsewhere are listed in COVERED_ELSEWHERE, so that
the catalogue below plus that map is the complete list. The catalogue as a
table, with the decisions behind it: docs/RELIABILITY.md, "Hostile input".
"""

import json
import resource
import selectors
import socket
import struct
import time

import pytest

import mqtt5raw as raw
from mqtt5raw import enc_props, enc_str, packet
from e2e_util import raw_client, raw_connect, raw_publish_qos, uid, utopic
from hostile_util import (Witness, asan_env, assert_grew_at_most, iothubd_only, rss_kib,
                          start_module_broker, stop_module_broker)
from hub_device import Devices, connect_device, expect_disconnect, response_for, user_props
from service_client import ServiceClient, raw_http, status_of

pytestmark = iothubd_only

MALFORMED, PROTOCOL = raw.RC_MALFORMED_PACKET, raw.RC_PROTOCOL_ERROR


# ------------------------------------------------------------ packet builders
def connect_pkt(flags=0x02, props=b"\x00", client_id=None, rest=b"", header_flags=0):
    """A v5 CONNECT with raw control over every field; `rest` follows the
    client id (Will properties/topic/payload, user name, password)."""
    cid = enc_str(uid("hx") if client_id is None else client_id)
    var = enc_str("MQTT") + bytes([5, flags]) + struct.pack("!H", 0) + props
    return packet(raw.CONNECT, header_flags, var + cid + rest)


def will(props=b"\x00", topic="w/t", payload=b"x"):
    return props + enc_str(topic) + enc_str(payload)


def publish_pkt(topic=b"a/b", qos=0, flags=None, pid=1, props=b"\x00", payload=b"x"):
    body = enc_str(topic)
    if qos:
        body += struct.pack("!H", pid)
    body += props + payload
    return packet(raw.PUBLISH, (qos << 1) if flags is None else flags, body)


def subscribe_pkt(pid=1, props=b"\x00", subs=((b"a/b", 0),)):
    body = b"".join(enc_str(flt) + bytes([opt]) for flt, opt in subs)
    return packet(raw.SUBSCRIBE, 2, struct.pack("!H", pid) + props + body)


def unsubscribe_pkt(pid=1, props=b"\x00", filters=(b"a/b",)):
    return packet(raw.UNSUBSCRIBE, 2, struct.pack("!H", pid) + props +
                  b"".join(enc_str(f) for f in filters))


def user_prop(name, value):
    return enc_props({"UserProperty": [(name, value)]})


# ------------------------------------------------------------ the catalogue
# (rule, case name, packet, expected reason code)
# Sent as the first packet of a fresh connection: the answer is a CONNACK
# with the code, then the connection is closed [MQTT-3.1.4-1], [MQTT-3.2.2-7].
CONNECT_CASES = [
    ("MQTT-2.1.3-1", "connect_fixed_header_flags", connect_pkt(header_flags=1), MALFORMED),
    ("MQTT-1.5.4-1 MQTT-3.1.3-4", "connect_client_id_invalid_utf8",
     connect_pkt(client_id=b"id-\xff"), MALFORMED),
    ("MQTT-1.5.4-2", "connect_client_id_null_char", connect_pkt(client_id=b"id\x00x"), MALFORMED),
    ("MQTT-3.1.2-11", "connect_will_qos_without_will_flag", connect_pkt(flags=0x02 | 0x08),
     MALFORMED),
    ("MQTT-3.1.2-13", "connect_will_retain_without_will_flag", connect_pkt(flags=0x02 | 0x20),
     MALFORMED),
    ("MQTT-3.1.2-17", "connect_user_name_flag_without_user_name", connect_pkt(flags=0x82),
     MALFORMED),
    ("MQTT-3.1.2-19", "connect_password_flag_without_password", connect_pkt(flags=0x42),
     MALFORMED),
    ("MQTT-3.1.3-11", "connect_will_topic_invalid_utf8",
     connect_pkt(flags=0x06, rest=will(topic=b"w/\xc3\x28")), MALFORMED),
    ("MQTT-3.1.3-12", "connect_user_name_invalid_utf8",
     connect_pkt(flags=0x82, rest=enc_str(b"u\xed\xa0\x80")), MALFORMED),
    ("MQTT-1.5.7-1", "connect_user_property_invalid_utf8",
     connect_pkt(props=user_prop(b"k", b"v\xff")), MALFORMED),
    ("MQTT-4.7.0-1", "connect_will_topic_wildcard",
     connect_pkt(flags=0x06, rest=will(topic="w/#")), raw.RC_TOPIC_NAME_INVALID),
    ("3.1.3.2.3", "connect_will_payload_format_not_utf8",
     connect_pkt(flags=0x06, rest=will(props=enc_props({"PayloadFormatIndicator": 1}),
                                       payload=b"\xff\xfe")), 0x99),
    ("3.1.2.11.3", "connect_receive_maximum_zero",
     connect_pkt(props=enc_props({"ReceiveMaximum": 0})), PROTOCOL),
    ("3.1.2.11.4", "connect_maximum_packet_size_zero",
     connect_pkt(props=enc_props({"MaximumPacketSize": 0})), PROTOCOL),
    ("2.2.2.2", "connect_session_expiry_twice",
     connect_pkt(props=enc_props([("SessionExpiryInterval", 1), ("SessionExpiryInterval", 2)])),
     PROTOCOL),
    ("3.1.2.11.6", "connect_request_response_information_2",
     connect_pkt(props=enc_props({"RequestResponseInformation": 2})), PROTOCOL),
    ("3.1.2.11.7", "connect_request_problem_information_2",
     connect_pkt(props=enc_props({"RequestProblemInformation": 2})), PROTOCOL),
    ("3.1.2.11.10", "connect_authentication_data_without_method",
     connect_pkt(props=enc_props({"AuthenticationData": b"x"})), PROTOCOL),
    ("2.2.2.2", "connect_property_not_allowed_topic_alias",
     connect_pkt(props=enc_props({"TopicAlias": 1})), MALFORMED),
    ("2.2.2.2", "connect_will_property_not_allowed_session_expiry",
     connect_pkt(flags=0x06, rest=will(props=enc_props({"SessionExpiryInterval": 5}))),
     MALFORMED),
    ("2.2.2.2", "connect_unknown_property_id", connect_pkt(props=b"\x02\x7f\x00"), MALFORMED),
    ("2.2.2.2", "connect_property_length_past_end", connect_pkt(props=b"\x40\x11\x00"),
     MALFORMED),
]

# Sent after a successful CONNECT: DISCONNECT with the code, then close
# [MQTT-4.13.1-1].
CONNECTED_CASES = [
    ("MQTT-2.1.3-1", "puback_reserved_flags", packet(raw.PUBACK, 1, b"\x00\x01"), MALFORMED),
    ("MQTT-2.1.3-1", "pubrec_reserved_flags", packet(raw.PUBREC, 2, b"\x00\x01"), MALFORMED),
    ("MQTT-2.1.3-1", "pubcomp_reserved_flags", packet(raw.PUBCOMP, 4, b"\x00\x01"), MALFORMED),
    ("MQTT-3.14.1-1", "disconnect_reserved_flags", packet(raw.DISCONNECT, 1, b""), MALFORMED),
    ("MQTT-3.15.1-1", "auth_reserved_flags", packet(raw.AUTH, 8, b""), MALFORMED),
    ("MQTT-1.5.5-1", "remaining_length_not_minimal", b"\xc0\x80\x00", MALFORMED),
    ("MQTT-1.5.5-1", "property_length_not_minimal", publish_pkt(props=b"\x80\x00"), MALFORMED),
    ("MQTT-1.5.5-1", "subscription_identifier_five_bytes",
     subscribe_pkt(props=b"\x06\x0b\xff\xff\xff\xff\x01"), MALFORMED),
    ("MQTT-1.5.4-1", "topic_overlong_utf8", publish_pkt(topic=b"a/\xc0\xaf"), MALFORMED),
    ("MQTT-1.5.4-1", "topic_above_u10ffff", publish_pkt(topic=b"a/\xf4\x90\x80\x80"), MALFORMED),
    ("MQTT-1.5.4-1", "topic_truncated_utf8_sequence", publish_pkt(topic=b"a/\xe2\x82"), MALFORMED),
    ("MQTT-1.5.7-1", "user_property_name_invalid_utf8",
     publish_pkt(props=user_prop(b"k\xff", b"v")), MALFORMED),
    ("MQTT-1.5.7-1", "user_property_value_invalid_utf8",
     publish_pkt(props=user_prop(b"k", b"\xed\xbf\xbf")), MALFORMED),
    ("MQTT-1.5.4-2", "user_property_null_char", publish_pkt(props=user_prop(b"k", b"a\x00")),
     MALFORMED),
    ("MQTT-3.3.2-19", "content_type_invalid_utf8",
     publish_pkt(props=enc_props({"ContentType": b"text/\xff"})), MALFORMED),
    ("MQTT-3.3.2-13", "response_topic_invalid_utf8",
     publish_pkt(props=enc_props({"ResponseTopic": b"r/\xc3"})), MALFORMED),
    ("MQTT-3.3.2-14", "response_topic_wildcard",
     publish_pkt(props=enc_props({"ResponseTopic": "r/+"})), PROTOCOL),
    ("MQTT-4.7.3-1", "response_topic_empty", publish_pkt(props=enc_props({"ResponseTopic": ""})),
     PROTOCOL),
    ("2.2.2.2", "publish_message_expiry_twice",
     publish_pkt(props=enc_props([("MessageExpiryInterval", 1), ("MessageExpiryInterval", 2)])),
     PROTOCOL),
    ("2.2.2.2", "publish_correlation_data_twice",
     publish_pkt(props=enc_props([("CorrelationData", b"a"), ("CorrelationData", b"b")])),
     PROTOCOL),
    ("2.2.2.2", "publish_property_value_past_end", publish_pkt(props=b"\x03\x03\x00\x05a"),
     MALFORMED),
    ("MQTT-3.3.1-2", "publish_dup_with_qos0", publish_pkt(flags=0x08), MALFORMED),
    ("3.3.2.3.2", "publish_payload_format_not_utf8",
     publish_pkt(props=enc_props({"PayloadFormatIndicator": 1}), payload=b"ok\xff"), 0x99),
    ("MQTT-2.2.1-3", "subscribe_packet_id_zero", subscribe_pkt(pid=0), MALFORMED),
    ("MQTT-2.2.1-3", "unsubscribe_packet_id_zero", unsubscribe_pkt(pid=0), MALFORMED),
    ("MQTT-2.2.1-5", "puback_packet_id_zero", packet(raw.PUBACK, 0, b"\x00\x00"), MALFORMED),
    ("MQTT-3.8.3-1", "subscribe_filter_invalid_utf8", subscribe_pkt(subs=((b"a/\xff", 0),)),
     MALFORMED),
    ("MQTT-3.8.3-4", "subscribe_no_local_on_shared",
     subscribe_pkt(subs=((b"$share/g/a", 0x04),)), PROTOCOL),
    ("3.8.3.1", "subscribe_options_qos3", subscribe_pkt(subs=((b"a/b", 0x03),)), PROTOCOL),
    ("3.8.2.1.2", "subscribe_subscription_identifier_twice",
     subscribe_pkt(props=enc_props({"SubscriptionIdentifier": [1, 2]})), PROTOCOL),
    ("MQTT-3.10.3-1", "unsubscribe_filter_invalid_utf8", unsubscribe_pkt(filters=(b"a/\xc0",)),
     MALFORMED),
    ("MQTT-3.10.3-2", "unsubscribe_no_topic_filters", unsubscribe_pkt(filters=()), PROTOCOL),
    ("MQTT-3.4.2-1", "puback_reason_code_not_allowed", packet(raw.PUBACK, 0, b"\x00\x01\x05"),
     PROTOCOL),
    ("MQTT-3.6.2-1", "pubrel_reason_code_not_allowed", packet(raw.PUBREL, 2, b"\x00\x01\x10"),
     PROTOCOL),
    ("2.2.2.2", "puback_property_not_allowed",
     packet(raw.PUBACK, 0, b"\x00\x01\x00" + enc_props({"ContentType": "x"})), MALFORMED),
    ("3.4.2.2", "puback_bytes_after_properties", packet(raw.PUBACK, 0, b"\x00\x01\x00\x00\xff"),
     MALFORMED),
    ("3.14.2.2.2", "disconnect_session_expiry_after_zero",
     packet(raw.DISCONNECT, 0, b"\x00" + enc_props({"SessionExpiryInterval": 60})), PROTOCOL),
    ("3.14.2.1", "disconnect_reason_code_not_allowed", packet(raw.DISCONNECT, 0, b"\x05"),
     PROTOCOL),
    ("MQTT-1.5.4-1", "disconnect_reason_string_invalid_utf8",
     packet(raw.DISCONNECT, 0, b"\x00" + enc_props({"ReasonString": b"\xff"})), MALFORMED),
    ("2.1.2", "client_sends_connack", packet(raw.CONNACK, 0, b"\x00\x00\x00"), PROTOCOL),
    ("2.1.2", "client_sends_suback", packet(raw.SUBACK, 0, b"\x00\x01\x00\x00"), PROTOCOL),
    ("2.1.2", "client_sends_pingresp", packet(raw.PINGRESP, 0, b""), PROTOCOL),
]

# Topic filter rules: the filter is refused in the SUBACK (0x8F Topic Filter
# invalid) and the connection stays.
BAD_FILTERS = [
    ("MQTT-4.7.1-1", "a/#/b"),
    ("MQTT-4.7.1-1", "a/b#"),
    ("MQTT-4.7.1-2", "a/b+/c"),
    ("MQTT-4.7.3-1", ""),
    ("MQTT-4.8.2-1", "$share//a"),
    ("MQTT-4.8.2-2", "$share/g+/a"),
    ("MQTT-4.8.2-2", "$share/g"),
]

# Rules of the same catalogue exercised by other files (rule -> test).
COVERED_ELSEWHERE = {
    "MQTT-1.5.4-1 (topic)": "test_malformed.py::publish_invalid_utf8_topic, "
                            "publish_utf8_surrogate_topic",
    "MQTT-1.5.4-2 (topic)": "test_malformed.py::publish_null_char_in_topic",
    "MQTT-1.5.5-1 (5 bytes)": "test_malformed.py::remaining_length_five_bytes",
    "MQTT-2.1.3-1 (PINGREQ)": "test_malformed.py::pingreq_reserved_flags",
    "MQTT-2.2.1-3 (PUBLISH)": "test_malformed.py::publish_qos1_packet_id_zero",
    "MQTT-3.1.0-1": "test_malformed.py::test_first_packet_not_connect_closed",
    "MQTT-3.1.0-2": "test_malformed.py::second_connect",
    "MQTT-3.1.2-1": "test_malformed.py::test_connect_bad_protocol_name_closed",
    "MQTT-3.1.2-2": "test_malformed.py::test_connect_unsupported_protocol_version",
    "MQTT-3.1.2-3": "test_malformed.py::test_connect_reserved_flag_set_closed",
    "MQTT-3.1.2-12": "test_malformed.py::test_connect_will_qos3_closed",
    "MQTT-3.1.2-24 / 3.2.2.3.6": "test_limits.py::test_server_maximum_packet_size_too_large_"
                                 "publish_disconnect_0x95",
    "MQTT-3.3.1-4": "test_malformed.py::publish_qos3",
    "MQTT-3.3.2-2": "test_malformed.py::publish_wildcard_in_topic",
    "MQTT-3.3.2-8": "test_limits.py::test_topic_alias_invalid_disconnect_0x94",
    "MQTT-3.3.2-9 / 3.3.2.3.4": "test_limits.py::test_topic_alias_invalid_disconnect_0x94, "
                                "test_topic_alias_unknown_alias_with_empty_topic_is_protocol_error",
    "MQTT-3.3.4-6": "test_malformed.py::publish_property_not_allowed_subscription_identifier",
    "MQTT-3.3.4-7": "test_limits.py::test_flow_control_client_exceeds_server_receive_maximum_"
                    "disconnect_0x93 (+ the flood here)",
    "MQTT-3.6.1-1": "test_malformed.py::pubrel_reserved_flags_zero",
    "MQTT-3.8.1-1": "test_malformed.py::subscribe_reserved_flags_zero",
    "MQTT-3.8.3-2": "test_malformed.py::subscribe_no_topic_filters",
    "MQTT-3.8.3-5": "test_malformed.py::subscribe_options_reserved_bits",
    "3.8.3.1 (Retain Handling 3)": "test_malformed.py::subscribe_retain_handling_3",
    "3.8.2.1.2 (Subscription Identifier 0)": "test_malformed.py::subscribe_subscription_"
                                             "identifier_zero",
    "MQTT-3.10.1-1": "test_malformed.py::unsubscribe_reserved_flags_zero",
    "MQTT-3.12 (PINGREQ body)": "test_malformed.py::pingreq_with_body",
    "2.2.2.2 (unknown id, not allowed, twice, length)": "test_malformed.py::publish_unknown_"
                                                        "property_id, publish_property_*",
    "MQTT-4.12.0-5": "test_enhanced_auth.py::test_reauthentication_with_different_method_is_"
                     "protocol_error",
    "MQTT-4.12.0-7": "test_malformed.py::auth_without_authentication_method, test_enhanced_auth"
                     ".py::test_reauthentication_without_enhanced_auth_is_protocol_error",
    "IoT Hub §3 Correlation Data > 16 bytes": "test_hub_topics.py::test_correlation_data_"
                                               "required_and_short (DISCONNECT 0x83, 0100)",
}


@pytest.fixture(scope="module")
def hostile():
    """One broker for the whole catalogue, with a witness pair."""
    b, d = start_module_broker()
    w = Witness(b)
    b.witness = w
    yield b
    w.close()
    stop_module_broker(b, d)


def closed_with(c, timeout=5.0):
    """Everything the server sent until it closed `c` (fails if it stays open)."""
    try:
        return c.recv_until_closed(timeout)
    except raw.Timeout:
        pytest.fail("server did not close the connection within %ss" % timeout)


@pytest.mark.parametrize("rule,name,data,rc", CONNECT_CASES, ids=[c[1] for c in CONNECT_CASES])
def test_connect_rule_connack_and_close(hostile, rule, name, data, rc):
    c = raw_client(hostile)
    c.send_raw(data)
    got = closed_with(c)
    assert [(p.type, p.reason_code) for p in got] == [(raw.CONNACK, rc)], (rule, got)
    hostile.witness.check()


@pytest.mark.parametrize("rule,name,data,rc", CONNECTED_CASES,
                         ids=[c[1] for c in CONNECTED_CASES])
def test_connected_rule_disconnect_and_close(hostile, rule, name, data, rc):
    c = raw_connect(hostile, keepalive=0)
    c.send_raw(data)
    got = closed_with(c)
    assert [(p.type, p.reason_code) for p in got] == [(raw.DISCONNECT, rc)], (rule, got)
    hostile.witness.check()


def test_bad_topic_filters_suback_0x8f_connection_stays(hostile):
    c = raw_connect(hostile, keepalive=0)
    filters = [f for _, f in BAD_FILTERS] + ["ok/" + uid()]
    ack = c.subscribe([(f, 0) for f in filters])
    assert ack.reason_codes == [0x8F] * len(BAD_FILTERS) + [0], ack
    c.pingreq()
    c.expect(raw.PINGRESP)
    hostile.witness.check()


def test_qos_above_maximum_qos_0x9b(broker_factory):
    """MQTT-3.2.2-11 / 3.2.2.3.4: PUBLISH above Maximum QoS -> DISCONNECT
    0x9B; MQTT-3.2.2-12: a Will QoS above it -> CONNACK 0x9B."""
    b = broker_factory(extra_args=["--maximum-qos", "1"])
    w = Witness(b)
    c = raw_connect(b, keepalive=0)
    assert c.connack.properties.get("MaximumQoS") == 1
    c.publish(utopic(), b"x", qos=2)
    assert [(p.type, p.reason_code) for p in closed_with(c)] == [(raw.DISCONNECT, 0x9B)]
    c = raw_client(b)
    c.send_raw(connect_pkt(flags=0x02 | 0x04 | 0x10, rest=will()))
    assert [(p.type, p.reason_code) for p in closed_with(c)] == [(raw.CONNACK, 0x9B)]
    w.check()


# ------------------------------------------------------------ oversized and trickled packets
def test_announced_256mib_packet_disconnect_0x95_at_once(hostile):
    """Remaining Length 268,435,455 announced, then a trickle: refused on the
    fixed header (Maximum Packet Size, 1 MiB by default), nothing buffered."""
    before = rss_kib(hostile)
    c = raw_connect(hostile, keepalive=0)
    t0 = time.monotonic()
    c.send_raw(b"\x30\xff\xff\xff\x7f")
    try:
        for _ in range(5):
            c.send_raw(b"\x00")
            time.sleep(0.02)
    except OSError:
        pass  # already closed: fine
    got = closed_with(c)
    assert [(p.type, p.reason_code) for p in got] == [(raw.DISCONNECT, raw.RC_PACKET_TOO_LARGE)]
    assert time.monotonic() - t0 < 2.0
    assert_grew_at_most(hostile, before, 2048, "announced 256 MiB")
    hostile.witness.check()


def test_announced_256mib_connect_closed_without_buffering(hostile):
    c = raw_client(hostile)
    c.send_raw(b"\x10\xff\xff\xff\x7f\x00\x04MQTT\x05")
    assert closed_with(c, 2.0) == []
    hostile.witness.check()


def test_trickled_packet_does_not_count_as_keepalive(broker_factory):
    """A packet trickled a byte at a time is no sign of life: Keep Alive 1 s
    ends it at 1.5 s with DISCONNECT 0x8D [MQTT-3.1.2-22]."""
    b = broker_factory()
    c = raw_connect(b, keepalive=1)
    data = publish_pkt(topic=b"t/" + b"x" * 40)
    t0 = time.monotonic()
    got = []
    try:
        for byte in data[:-1]:
            c.send_raw(bytes([byte]))
            time.sleep(0.05)
            if time.monotonic() - t0 > 3:
                break
    except OSError:
        pass
    got = closed_with(c, 3.0)
    assert [(p.type, p.reason_code) for p in got] == [(raw.DISCONNECT, raw.RC_KEEP_ALIVE_TIMEOUT)]
    assert 1.3 < time.monotonic() - t0 < 3.5


def test_slowloris_connect_closed_at_connect_timeout(broker_factory):
    """CONNECT sent a byte every 100 ms: closed at --connect-timeout-ms
    (600 ms here), no CONNACK, others served."""
    b = broker_factory(extra_args=["--connect-timeout-ms", "600"])
    w = Witness(b)
    c = raw_client(b)
    data = c.connect_bytes(client_id=uid())
    t0 = time.monotonic()
    closed_at = None
    for byte in data:
        try:
            c.send_raw(bytes([byte]))
        except OSError:
            break
        try:
            if c.is_closed(0.1):
                break
        except ValueError:
            pytest.fail("server answered a partial CONNECT")
    assert c.is_closed(3.0)
    closed_at = time.monotonic() - t0
    assert 0.5 < closed_at < 2.0, closed_at
    w.check()


def _raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, want))
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, hard


def test_10000_connections_without_connect(broker_factory, monkeypatch):
    """10,000 connections that never send CONNECT: all closed by the connect
    timeout (1.5 s), memory bounded, a normal client served meanwhile."""
    n = 10000
    soft, hard = _raise_nofile(n + 1000)  # the broker inherits the raised limit
    monkeypatch.setenv("ASAN_OPTIONS", asan_env())
    socks = []
    sel = selectors.DefaultSelector()
    try:
        b = broker_factory(extra_args=["--connect-timeout-ms", "1500"])
        w = Witness(b)
        before = rss_kib(b)
        t0 = time.monotonic()
        for _ in range(n):
            s = socket.create_connection((b.host, b.port), timeout=5)
            s.setblocking(False)
            socks.append(s)
            sel.register(s, selectors.EVENT_READ)
        opened = time.monotonic() - t0
        # ~0.6 KiB per idle connection measured; 2 KiB each is the bound
        assert_grew_at_most(b, before, n * 2, "%d idle connections" % n)
        w.check()
        open_left, data_seen = n, 0
        deadline = time.monotonic() + 15
        while open_left and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                try:
                    chunk = key.fileobj.recv(64)
                except (ConnectionResetError, BlockingIOError):
                    chunk = b""
                data_seen += len(chunk)
                sel.unregister(key.fileobj)
                open_left -= 1
        assert open_left == 0, "%d of %d connections still open (opening took %.1fs)" % (
            open_left, n, opened)
        assert data_seen == 0, "the server sent bytes to clients that never sent CONNECT"
        assert_grew_at_most(b, before, n * 2, "after closing %d connections" % n)
        w.check()
    finally:
        sel.close()
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ------------------------------------------------------------ clients that never read
def _non_reader(broker, topic, qos):
    """A subscriber that will not read until told. (Its socket buffers are
    left alone: shrinking SO_RCVBUF on an open connection stalls it in
    zero-window probes for seconds once it does read.)"""
    c = raw_connect(broker, keepalive=0)
    assert c.subscribe(topic, qos=qos).reason_codes == [qos]
    return c


def test_never_reading_subscriber_qos0_memory_capped(broker_factory, monkeypatch):
    """64 MiB of QoS 0 for a subscriber that never reads: above the 256 KiB
    output high-water mark QoS 0 is dropped for it; the publisher, the
    witness and (once it reads) the slow client itself are still served."""
    monkeypatch.setenv("ASAN_OPTIONS", asan_env())
    b = broker_factory()
    w = Witness(b)
    topic = utopic("flood")
    slow = _non_reader(b, topic, 0)
    pub = raw_connect(b, keepalive=0)
    before = rss_kib(b)
    msg = pub.publish_bytes(topic, b"P" * 65536, qos=0)
    for _ in range(64):
        pub.send_raw(msg * 16)  # 1 MiB per call
    pub.pingreq()
    pub.expect(raw.PINGRESP, timeout=30)  # every PUBLISH before it was handled
    assert_grew_at_most(b, before, 16 * 1024, "64 MiB for a non-reader (QoS 0)")
    w.check()
    got = [p for p in slow.recv_all(1.0) if p.type == raw.PUBLISH]
    assert 0 < len(got) < 1024, len(got)  # some were kept, most dropped
    slow.pingreq()
    slow.expect(raw.PINGRESP, stash=True)


def _flood_qos1(pub, topic, n, size):
    """n QoS 1 messages of `size` bytes, 100 per write, each PUBACKed."""
    batch = b"".join(pub.publish_bytes(topic, b"Q" * size, qos=1, packet_id=i + 1)
                     for i in range(100))
    for _ in range(n // 100):
        pub.send_raw(batch)
        acks = [pub.expect(raw.PUBACK, timeout=30) for _ in range(100)]
        assert all(a.reason_code in (0, 0x10) for a in acks)


def _read_all(c, timeout=1.0):
    got = []
    while True:
        try:
            p = c.recv(timeout)
        except (raw.Timeout, raw.ConnectionClosed):
            return got
        if p.type == raw.PUBLISH:
            got.append(p)
            c.puback(p.packet_id)


def test_never_reading_subscriber_qos1_queue_capped(broker_factory, monkeypatch):
    """QoS 1 for a non-reader: beyond the output high-water mark messages
    wait in the session queue (--max-queued-messages, 100 here); the rest is
    dropped for it and memory stays bounded. Once it reads, it gets the
    queue and what was in flight, and stays connected."""
    monkeypatch.setenv("ASAN_OPTIONS", asan_env())
    b = broker_factory(max_queued_messages=100)
    w = Witness(b)
    topic = utopic("flood1")
    slow = _non_reader(b, topic, 1)
    pub = raw_connect(b, keepalive=0)
    before = rss_kib(b)
    n, size = 4000, 8192
    _flood_qos1(pub, topic, n, size)
    assert_grew_at_most(b, before, 16 * 1024, "%d MiB of QoS 1 for a non-reader" % (
        n * size >> 20))
    w.check()
    got = _read_all(slow)
    assert 100 <= len(got) < n, len(got)
    slow.pingreq()
    slow.expect(raw.PINGRESP, stash=True)


@pytest.mark.parametrize("cap", ["max-queued-messages", "max-queued-bytes"])
def test_offline_session_queue_capped_exactly(broker_factory, cap):
    """An offline session's queue holds exactly what the cap allows: 100
    messages (--max-queued-messages 100), or as many whole topic + payload
    sizes as fit in --max-queued-bytes 262144; the rest was dropped."""
    size = 8192
    if cap == "max-queued-messages":
        b = broker_factory(max_queued_messages=100)
    else:
        b = broker_factory(extra_args=["--max-queued-bytes", "262144"])
    topic = utopic("offline")
    want = 100 if cap == "max-queued-messages" else 262144 // (len(topic) + size)
    cid = uid("off")
    props = {"SessionExpiryInterval": 60}
    c = raw_connect(b, client_id=cid, clean_start=False, properties=props, keepalive=0)
    c.subscribe(topic, qos=1)
    c.disconnect()
    pub = raw_connect(b, keepalive=0)
    _flood_qos1(pub, topic, 2000, size)
    c = raw_connect(b, client_id=cid, clean_start=False, properties=props, keepalive=0)
    assert c.connack.session_present
    got = _read_all(c)
    assert len(got) == want, (len(got), want)


def test_never_reading_client_pingreq_flood_is_paused(hostile):
    """A client that floods PINGREQ and never reads its PINGRESPs: input is
    paused once its output passes the high-water mark, so memory stays
    bounded whatever it sends."""
    before = rss_kib(hostile)
    c = raw_connect(hostile, keepalive=0)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.sock.settimeout(0.2)
    sent = 0
    chunk = packet(raw.PINGREQ, 0, b"") * 32768  # 64 KiB of PINGREQs
    deadline = time.monotonic() + 5
    while sent < (32 << 20) and time.monotonic() < deadline:
        try:
            sent += c.sock.send(chunk)
        except socket.timeout:
            break  # the server stopped reading: back-pressure reached the client
    assert sent < (32 << 20), "server kept reading 32 MiB of PINGREQ it could not answer"
    assert_grew_at_most(hostile, before, 8 * 1024, "PINGREQ flood")
    hostile.witness.check()
    c.close()


# ------------------------------------------------------------ flow control and quotas
def test_receive_maximum_flood_disconnect_0x93(hostile):
    """1100 unreleased QoS 2 PUBLISH in one burst against Receive Maximum
    1024: PUBREC for the first 1024, then DISCONNECT 0x93."""
    c = raw_connect(hostile, keepalive=0)
    rmax = c.connack.properties.get("ReceiveMaximum", 65535)
    topic = utopic("rmax")
    c.send_raw(b"".join(c.publish_bytes(topic, b"x", qos=2, packet_id=i + 1)
                        for i in range(rmax + 76)))
    got = closed_with(c, 10.0)
    recs = [p for p in got if p.type == raw.PUBREC]
    assert len(recs) == rmax and all(p.reason_code < 0x80 for p in recs)
    assert [(p.type, p.reason_code) for p in got[rmax:]] == [
        (raw.DISCONNECT, raw.RC_RECEIVE_MAXIMUM_EXCEEDED)]
    hostile.witness.check()


def test_10000_subscriptions_then_quota_exceeded(broker_factory, monkeypatch):
    """--max-subscriptions 10000: all 10,000 granted, the next filter gets
    SUBACK 0x97 (Quota exceeded) and the client stays connected; memory
    bounded, routing for others unaffected."""
    monkeypatch.setenv("ASAN_OPTIONS", asan_env())
    b = broker_factory(extra_args=["--max-subscriptions", "10000"])
    w = Witness(b)
    before = rss_kib(b)
    c = raw_connect(b, keepalive=0)
    base = utopic("subs")
    for i in range(100):
        ack = c.subscribe([("%s/%d/%d" % (base, i, j), 0) for j in range(100)])
        assert ack.reason_codes == [0] * 100, (i, ack)
    ack = c.subscribe([("%s/again/0/0" % base, 0), ("%s/0/0" % base, 1)])
    assert ack.reason_codes == [0x97, 1], ack  # a new filter refused, a replaced one granted
    assert_grew_at_most(b, before, 16 * 1024, "10,000 subscriptions")
    w.check()
    pub = raw_connect(b, keepalive=0)
    raw_publish_qos(pub, "%s/99/99" % base, b"last", 1)
    p = c.expect(raw.PUBLISH)
    assert p.payload == b"last"
    # Against a full list, each entry of a SUBSCRIBE is looked up: 30,000
    # entries in one packet (existing filters, then new ones over quota)
    # (~750 KB) took a loop 8 s and 3 s of CPU with a linear list; now ms.
    for filt, rc in (("%s/99/99" % base, 0), (None, 0x97)):
        filters = [filt or "%s/new/%d" % (base, i) for i in range(30000)]
        data = subscribe_pkt(pid=7, subs=[(f.encode(), 0) for f in filters])
        t0 = time.monotonic()
        c.send_raw(data)
        w.check(timeout=3)  # others are served meanwhile
        ack = c.expect(raw.SUBACK, timeout=10, stash=True)
        assert ack.reason_codes == [rc] * 30000
        assert time.monotonic() - t0 < 3, "30,000-entry SUBSCRIBE took %.1fs" % (
            time.monotonic() - t0)


# ------------------------------------------------------------ the IoT Hub device API
def deep_object(levels, leaf="1"):
    return '{"a":' * levels + leaf + "}" * levels


def twin_patch(dev, payload, corr):
    dev.publish("$iothub/twin/patch/reported", payload, properties={"CorrelationData": corr})
    return user_props(response_for(dev, corr).properties).get("status")


def test_hostile_json_in_reported_patch(hub):
    """Deep and huge JSON on $iothub/twin/patch/reported: status 0100 (spec
    §7 limits: depth <= 10, reported <= 32 KB), nothing changed; above the
    device Maximum Packet Size (256 KiB) DISCONNECT 0x95."""
    devs = Devices(hub)
    dev_id, key, _ = devs.new_sas_device()
    dev = connect_device(hub, dev_id, key)
    assert twin_patch(dev, '{"ok":1}', b"c0") is None
    before = rss_kib(hub)
    cases = [
        ("depth 12", deep_object(12)),
        ("depth 40000 (stack)", deep_object(40000)),
        ("array depth 100000", '{"a":' + "[" * 100000 + "]" * 100000 + "}"),
        ("40 KB of keys", "{" + ",".join('"k%d":%d' % (i, i) for i in range(4000)) + "}"),
        ("200 KB string", '{"s":"' + "x" * 200000 + '"}'),
        ("not JSON", "{" * 1000),
    ]
    for i, (name, payload) in enumerate(cases):
        assert twin_patch(dev, payload, b"c%d" % (i + 1)) == "0100", name
    assert_grew_at_most(hub, before, 16 * 1024, "hostile twin patches")
    dev.publish("$iothub/twin/get", b"", properties={"CorrelationData": b"g"})
    r = response_for(dev, b"g")
    assert user_props(r.properties).get("status") is None
    reported = json.loads(r.payload)["reported"]
    assert reported["ok"] == 1 and "a" not in reported and "s" not in reported
    dev.publish("$iothub/twin/patch/reported", "x" * 300000, properties={"CorrelationData": b"z"})
    expect_disconnect(dev, raw.RC_PACKET_TOO_LARGE)


def test_reported_patch_refusal_quotes_well_formed_utf8(hub):
    """jansson's error text quotes the bytes near the error and may stop
    inside a character ("invalid escape near '"x\u20ac\\<0xE2>'"). The
    status 0100 answer quotes it as the user property `reason`, which MQTT
    5 requires to be well-formed UTF-8: the broken character becomes '?'.
    A raw NUL after a literal (which jansson 2.14 skips) is refused too."""
    devs = Devices(hub)
    dev_id, key, _ = devs.new_sas_device()
    dev = connect_device(hub, dev_id, key)
    reasons = []
    for corr, payload in ((b"u1", b'{"a":"x\xe2\x82\xac\\\xe2\x82\xac"}'), (b"u2", b'{"a":false\x00}')):
        dev.publish("$iothub/twin/patch/reported", payload, properties={"CorrelationData": corr})
        r = response_for(dev, corr)  # the raw client decodes strictly: bad UTF-8 would raise
        users = user_props(r.properties)
        assert users.get("status") == "0100", (payload, r)
        reasons.append(users["reason"])
    assert "x\u20ac\\?'" in reasons[0] and "NUL byte" in reasons[1], reasons
    dev.publish("$iothub/twin/get", b"", properties={"CorrelationData": b"g"})
    assert "a" not in json.loads(response_for(dev, b"g").payload)["reported"]


def test_hostile_json_in_service_twin_patch(hub):
    """The same over the service API: 400 ArgumentInvalid for deep or
    oversized documents, 413 above the 1 MiB body limit; others served."""
    svc = ServiceClient(hub)
    assert svc.put_device("hj-1").status in (200, 201)
    path = "/twins/hj-1"
    before = rss_kib(hub)
    bodies = [
        ("depth 50000", '{"properties":{"desired":' + deep_object(50000) + "}}", 400),
        ("array depth 200000", '{"tags":{"a":' + "[" * 200000 + "]" * 200000 + "}}", 400),
        ("50 KB desired", '{"properties":{"desired":{' +
         ",".join('"k%d":%d' % (i, i) for i in range(5000)) + "}}}", 400),
        ("2 MiB body", '{"tags":{"s":"' + "x" * (2 << 20) + '"}}', 413),
    ]
    for name, body, status in bodies:
        if status == 413:  # answered before the body is read: raw socket
            head = ("PATCH %s?api-version=2021-04-12 HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
                    "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
                        path, svc.auth(), len(body)))
            out = raw_http(hub.http_port, head.encode() + body.encode())
            assert status_of(out) == 413 and b"ErrorCode:MessageTooLarge;" in out, (name, out[:300])
            continue
        r = svc.request("PATCH", path, body, headers={"Content-Type": "application/json"})
        assert r.status == status, (name, r)
        assert r.error_code == "ArgumentInvalid", (name, r)
    assert_grew_at_most(hub, before, 24 * 1024, "hostile service twin patches")
    r = svc.request("GET", path)
    assert r.status == 200 and r.json()["properties"]["desired"]["$version"] == 1, r


def test_invalid_utf8_from_a_device_disconnects_0x81(hub):
    """Invalid UTF-8 in a device's application property or topic is a
    Malformed Packet before the hub looks at it."""
    devs = Devices(hub)
    for props, topic in ((user_prop(b"@k", b"\xc3\x28"), b"$iothub/telemetry"),
                         (b"\x00", b"$iothub/telemetry/\xff")):
        dev_id, key, _ = devs.new_sas_device()
        dev = connect_device(hub, dev_id, key)
        dev.send_raw(publish_pkt(topic=topic, props=props))
        expect_disconnect(dev, MALFORMED)
    dev_id, key, _ = devs.new_sas_device()
    dev = connect_device(hub, dev_id, key)
    assert twin_patch(dev, '{"alive":1}', b"ok") is None

"""IoT Hub MQTT 5 device API, topics and requests (../shared/spec/iothub-mqtt5.md
§2-6): the $iothub/ topic table and subscribe rules, undefined topics,
request/response rules, Get twin, Patch reported, desired notifications,
telemetry and its properties, PUBACK properties."""

import json
import os
import time

import pytest

import mqtt5raw as raw
from hub_device import (Devices, closed_hub, connect_device, expect_disconnect,  # noqa: F401
                        json_payload, response_for, user_props)


@pytest.fixture
def device(hub):
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device()
    c = connect_device(hub, dev, key)
    c.devices = devs
    yield c
    c.close()


def puback_for(c, pid):
    p = c.expect(raw.PUBACK, stash=True)
    assert p.packet_id == pid, p
    return p


def alive(c):
    c.pingreq()
    assert c.expect(raw.PINGRESP, stash=True).type == raw.PINGRESP


# ---- subscriptions -----------------------------------------------------------

def test_suback_for_the_topic_table(device):
    p = device.subscribe([("$iothub/twin/patch/desired", 0), ("$iothub/commands", 1),
                          ("$iothub/methods/+", 0), ("$iothub/methods/reboot", 0),
                          ("$iothub/responses", 0), ("$iothub/twin/patch/desired", 1)])
    assert p.reason_codes == [0, 1, 0, 0, 0, 0], p


@pytest.mark.parametrize("flt,rc", [
    ("$iothub/twin/gett", 0x8F), ("$iothub/telemetry", 0x8F), ("$iothub/methods/", 0x8F),
    ("$iothub/methods/a/b", 0x8F), ("$iothub", 0x8F),
    ("$iothub/#", 0xA2), ("$iothub/+", 0xA2), ("$iothub/methods/#", 0xA2),
    ("$iothub/twin/+/desired", 0xA2),
])
def test_suback_refusals(device, flt, rc):
    assert device.subscribe([(flt, 0)]).reason_codes == [rc]


def test_open_topics_refused_without_open_topics(closed_hub):
    devs = Devices(closed_hub)
    dev, key, _ = devs.new_sas_device()
    c = connect_device(closed_hub, dev, key)
    assert c.subscribe([("plain/topic", 0), ("plain/#", 0)]).reason_codes == [0x8F, 0xA2]
    pid = c.publish("plain/topic", b"x", qos=1)
    p = puback_for(c, pid)
    assert p.reason_code == 131 and user_props(p.properties)["status"] == "0504", p
    c.close()


def test_device_uses_open_topics_when_on(hub, device):
    topic = "open/" + os.urandom(4).hex()
    sub = raw.RawClient(hub.port)
    sub.connect(client_id="anon-" + os.urandom(3).hex())
    assert sub.subscribe([(topic, 1)]).reason_codes == [1]
    assert device.subscribe([(topic, 1)]).reason_codes == [1]
    pid = device.publish(topic, b"hello", qos=1)
    assert puback_for(device, pid).reason_code in (0, 0x10)
    assert sub.expect(raw.PUBLISH).payload == b"hello"
    sub.close()


def test_acl_rules_apply_to_devices_by_identity(broker_factory):
    """Per-identity rules on the open topic space: an ACL `pattern` with %c
    gives each device its own subtree (the client id is the identity)."""
    hub = broker_factory(http=True, acl="pattern readwrite devices/%c/#\n")
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device()
    other, _, _ = devs.new_sas_device()
    c = connect_device(hub, dev, key)
    mine, theirs = "devices/%s/state" % dev, "devices/%s/state" % other
    assert c.subscribe([(mine, 1), (theirs, 1)]).reason_codes == [1, 0x87]
    pid = c.publish(mine, b"own", qos=1)
    assert puback_for(c, pid).reason_code == 0
    assert c.expect(raw.PUBLISH, stash=True).payload == b"own"
    pid = c.publish(theirs, b"not mine", qos=1)
    assert puback_for(c, pid).reason_code == 0x87
    c.close()


def test_open_clients_cannot_touch_iothub_topics(hub):
    c = raw.RawClient(hub.port)
    c.connect(client_id="anon-" + os.urandom(3).hex())
    assert c.subscribe([("$iothub/twin/patch/desired", 0), ("$iothub/#", 0)]).reason_codes == \
        [0x87, 0x87]
    pid = c.publish("$iothub/twin/patch/desired", b"{}", qos=1)
    assert c.expect(raw.PUBACK).reason_code == 0x87
    assert pid
    c.close()


def test_fifty_subscriptions_at_most(device):
    filters = [("$iothub/methods/m%d" % i, 0) for i in range(51)]
    p = device.subscribe(filters[:50])
    assert p.reason_codes == [0] * 50
    assert device.subscribe(filters[50:]).reason_codes == [0x97]


# ---- undefined topics, requests --------------------------------------------------

def test_unknown_topic_qos1_puback_0504(device):
    pid = device.publish("$iothub/twin/gett", b"", qos=1)
    p = puback_for(device, pid)
    assert p.reason_code == 131 and user_props(p.properties)["status"] == "0504", p
    alive(device)


def test_unknown_topic_qos0_disconnects_0x90(device):
    device.publish("$iothub/twin/gett", b"", qos=0)
    d = expect_disconnect(device, raw.RC_TOPIC_NAME_INVALID)
    assert d.properties["ReasonString"] == "Unsupported topic: $iothub/twin/gett", d


def test_request_at_qos1_is_bad_request(device):
    pid = device.publish("$iothub/twin/get", b"", qos=1, properties={"CorrelationData": b"1"})
    p = puback_for(device, pid)
    assert p.reason_code == 131 and user_props(p.properties)["status"] == "0100", p


@pytest.mark.parametrize("corr", [None, b"x" * 17])
def test_correlation_data_required_and_short(device, corr):
    props = {} if corr is None else {"CorrelationData": corr}
    device.publish("$iothub/twin/get", b"", properties=props)
    d = expect_disconnect(device, raw.RC_IMPLEMENTATION_SPECIFIC)
    assert user_props(d.properties)["status"] == "0100", d


def test_get_twin(device):
    corr = b"\x00\x01get"
    device.publish("$iothub/twin/get", b"", properties={"CorrelationData": corr,
                                                        "ResponseTopic": "ignored"})
    r = response_for(device, corr)
    assert r.qos == 0 and "status" not in user_props(r.properties), r
    doc = json_payload(r)
    assert doc["desired"]["$version"] >= 1 and doc["reported"]["$version"] >= 1, doc
    assert "tags" not in doc and "$metadata" not in doc["desired"]


def test_unknown_property_on_a_request(device):
    device.publish("$iothub/twin/get", b"", properties={"CorrelationData": b"u",
                                                        "UserProperty": [("colour", "red")]})
    r = response_for(device, b"u")
    assert user_props(r.properties)["status"] == "0100", r


def test_patch_reported_and_if_version(device):
    device.publish("$iothub/twin/patch/reported", json.dumps({"temp": 21}),
                   properties={"CorrelationData": b"p1"})
    r = response_for(device, b"p1")
    up = user_props(r.properties)
    assert "status" not in up and int(up["version"]) >= 2, r
    version = int(up["version"])
    device.publish("$iothub/twin/patch/reported", json.dumps({"temp": 22}),
                   properties={"CorrelationData": b"p2",
                               "UserProperty": [("if-version", str(version + 5))]})
    assert user_props(response_for(device, b"p2").properties)["status"] == "0104"
    device.publish("$iothub/twin/patch/reported", json.dumps({"temp": 23}),
                   properties={"CorrelationData": b"p3",
                               "UserProperty": [("if-version", str(version))]})
    assert int(user_props(response_for(device, b"p3").properties)["version"]) == version + 1
    device.publish("$iothub/twin/patch/reported", b"[1]", properties={"CorrelationData": b"p4"})
    assert user_props(response_for(device, b"p4").properties)["status"] == "0100"
    device.publish("$iothub/twin/patch/reported", b"{}",
                   properties={"CorrelationData": b"p5", "UserProperty": [("if-version", "x")]})
    assert user_props(response_for(device, b"p5").properties)["status"] == "0100"
    # any u64 is an if-version; one no twin can reach is a mismatch
    for corr, v in ((b"p6", "18446744073709551615"), (b"p7", "9223372036854775808")):
        device.publish("$iothub/twin/patch/reported", b"{}",
                       properties={"CorrelationData": corr, "UserProperty": [("if-version", v)]})
        assert user_props(response_for(device, corr).properties)["status"] == "0104", v
    device.publish("$iothub/twin/get", b"", properties={"CorrelationData": b"g"})
    assert json_payload(response_for(device, b"g"))["reported"]["temp"] == 23


def test_desired_notification_after_service_patch(hub, device):
    """Needs the twin service route (PATCH /twins/{id}); skipped until it exists."""
    assert device.subscribe([("$iothub/twin/patch/desired", 0)]).reason_codes == [0]
    r = device.devices.svc.request("PATCH", "/twins/" + device.client_id,
                                   {"properties": {"desired": {"fan": "on"}}})
    if r.status in (404, 405):
        pytest.skip("twin service route not there yet")
    assert r.status == 200, r
    p = device.expect(raw.PUBLISH, stash=True)
    assert p.topic == "$iothub/twin/patch/desired" and p.qos == 0, p
    assert json_payload(p)["fan"] == "on" and int(user_props(p.properties)["version"]) >= 2
    device.unsubscribe("$iothub/twin/patch/desired")
    r = device.devices.svc.request("PATCH", "/twins/" + device.client_id,
                                   {"properties": {"desired": {"fan": "off"}}})
    assert r.status == 200, r
    assert not [x for x in device.recv_all(0.5) if x.type == raw.PUBLISH]


# ---- telemetry ----------------------------------------------------------------

def test_telemetry_qos1_and_qos0(device):
    pid = device.publish("$iothub/telemetry", b'{"t":1}', qos=1,
                         properties={"ContentType": "application/json", "UserProperty": [
                             ("content-encoding", "utf-8"), ("message-id", "m1"),
                             ("user-id", "u"), ("correlation-id", "c"),
                             ("creation-time", str(int(time.time() * 1000))),
                             ("@colour", "blue"), ("@MyProperty", "x")]})
    p = puback_for(device, pid)
    assert p.reason_code == 0 and not p.properties, p
    device.publish("$iothub/telemetry", b"qos0", qos=0)
    alive(device)


def test_telemetry_utf8_payload_may_hold_nul(device):
    """Payload Format Indicator 1 asks for well-formed UTF-8 (§3.3.2.3.2),
    and U+0000 is a character; only Encoded Strings exclude it."""
    pid = device.publish("$iothub/telemetry", b"a\x00b", qos=1,
                         properties={"PayloadFormatIndicator": 1})
    assert puback_for(device, pid).reason_code == 0
    pid = device.publish("$iothub/telemetry", b"a\xffb", qos=1,
                         properties={"PayloadFormatIndicator": 1})
    expect_disconnect(device, 0x99)  # Payload format invalid


def test_telemetry_unknown_property(device):
    pid = device.publish("$iothub/telemetry", b"x", qos=1,
                         properties={"UserProperty": [("colour", "blue")]})
    p = puback_for(device, pid)
    assert p.reason_code == 131 and user_props(p.properties)["status"] == "0100", p
    device.publish("$iothub/telemetry", b"x", qos=0,
                   properties={"UserProperty": [("colour", "blue")]})
    d = expect_disconnect(device, raw.RC_IMPLEMENTATION_SPECIFIC)
    assert user_props(d.properties)["status"] == "0100"


@pytest.mark.parametrize("value", ["yesterday", "-1", "", "1.5", " 1", "+1",
                                   "253402300800000",  # 10000-01-01: no 4-digit ISO year
                                   "99999999999999999999999"])
def test_telemetry_bad_creation_time(device, value):
    pid = device.publish("$iothub/telemetry", b"x", qos=1,
                         properties={"UserProperty": [("creation-time", value)]})
    p = puback_for(device, pid)
    assert p.reason_code == 131 and user_props(p.properties)["status"] == "0100", p


def test_request_problem_information_0(hub):
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device()
    c = connect_device(hub, dev, key, properties={"RequestProblemInformation": 0})
    pid = c.publish("$iothub/telemetry", b"x", qos=1, properties={"UserProperty": [("bad", "1")]})
    p = puback_for(c, pid)
    assert p.reason_code == 131 and not p.properties, p
    c.close()


def test_puback_trimmed_to_client_maximum_packet_size(hub):
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device()
    c = connect_device(hub, dev, key, properties={"MaximumPacketSize": 60})
    pid = c.publish("$iothub/telemetry", b"x", qos=1, properties={"UserProperty": [("bad", "1")]})
    p = puback_for(c, pid)
    up = user_props(p.properties)
    assert p.reason_code == 131 and up.get("status") == "0100" and "reason" not in up, p
    assert "ReasonString" in p.properties, p  # the Reason String goes last
    assert len(p.raw) + 2 <= 60
    c.close()

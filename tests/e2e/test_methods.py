"""Direct methods (../shared/spec/iothub-mqtt5.md section 6 "Receive direct
methods" and section 7; service-rest.md "Direct methods"): a back end POSTs
to /twins/{id}[/modules/{m}]/methods, the hub publishes on
$iothub/methods/{name} with Correlation Data, and the device's reply on
$iothub/responses completes the HTTP call.

Devices are our raw MQTT 5 client (mqtt5raw.py) so that every property is
visible; the back end is plain http.client, one connection per call, so
calls can be in flight together. Paths: success with payload round trips,
offline and not subscribed (404 DeviceNotOnline), unknown device (404
DeviceNotFound), response timeout (504) and a late reply after it, replies
without a valid response-code (502), non-JSON reply payloads, 20 concurrent
calls answered out of order, a device on paho-mqtt (success, its own
response-code, concurrent calls), connectTimeoutInSeconds (device connects or
subscribes within the window, or not), bad bodies (400/413), rights (403),
module methods, the caller leaving mid-call, a shutdown with calls pending,
and `iothub method invoke`.
"""

import http.client
import json
import os
import socket
import threading
import time
import urllib.parse

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import mqtt5raw as raw
from hub_device import Devices, connect_device, expect_disconnect, sas_connect_props, user_props
from service_client import ServiceClient, sas_token, parse_connstr
from test_cli import Cli  # noqa: F401 (a helper, not tests)

ALL_METHODS = "$iothub/methods/+"


# ------------------------------------------------------------ helpers
def method_path(device, module=None):
    path = "/twins/" + urllib.parse.quote(device, safe="")
    if module:
        path += "/modules/" + urllib.parse.quote(module, safe="")
    return path + "/methods"


def post(hub, path, body, http_timeout=30, auth=None):
    """One POST on a fresh connection (calls may overlap); a Response."""
    svc = ServiceClient(hub)
    svc.conn = http.client.HTTPConnection(svc.host, svc.port, timeout=http_timeout)
    headers = {"Authorization": auth} if auth else None
    return svc.request("POST", path, body, headers=headers)


def call_body(name, payload=None, timeout=None, connect=None):
    body = {"methodName": name, "payload": payload}
    if timeout is not None:
        body["responseTimeoutInSeconds"] = timeout
    if connect is not None:
        body["connectTimeoutInSeconds"] = connect
    return body


def invoke(hub, device, name, payload=None, module=None, timeout=None, connect=None):
    return post(hub, method_path(device, module), call_body(name, payload, timeout, connect))


class Call(threading.Thread):
    """invoke() in the background; .response once joined."""

    def __init__(self, hub, device, name, payload=None, **kw):
        super().__init__(daemon=True)
        self.args = (hub, device, name, payload)
        self.kw = kw
        self.response = None
        self.error = None
        self.started_at = time.monotonic()
        self.elapsed = None
        self.start()

    def run(self):
        try:
            self.response = invoke(*self.args, **self.kw)
        except Exception as e:  # reported by result()
            self.error = e
        self.elapsed = time.monotonic() - self.started_at

    def result(self, timeout=40):
        self.join(timeout)
        assert not self.is_alive(), "the HTTP call did not finish"
        assert self.error is None, self.error
        return self.response


@pytest.fixture
def devices(hub):
    return Devices(hub)


def new_device(hub, devices, subscribe=ALL_METHODS, connect=True):
    """A SAS device, connected and subscribed unless told otherwise."""
    device_id, key, _ = devices.new_sas_device("meth")
    if not connect:
        return device_id, key, None
    c = connect_device(hub, device_id, key)
    if subscribe:
        suback = c.subscribe(subscribe)
        assert suback.reason_codes == [0], suback
    return device_id, key, c


def next_request(c, timeout=5.0):
    """The next PUBLISH on $iothub/methods/..."""
    deadline = time.monotonic() + timeout
    while True:
        p = c.expect(raw.PUBLISH, timeout=max(0.05, deadline - time.monotonic()), stash=True)
        if p.topic.startswith("$iothub/methods/"):
            return p


def reply(c, request, code=200, payload=b"", extra_props=None):
    users = [] if code is None else [("response-code", str(code))]
    props = {"CorrelationData": request.properties["CorrelationData"],
             "UserProperty": users + list(extra_props or [])}
    c.publish("$iothub/responses", payload, properties=props)


def assert_error(r, status, code):
    assert r.status == status, r
    assert r.error_code == code, r


def assert_no_request(c, wait=0.7):
    got = [p for p in c.recv_all(wait) if p.type == raw.PUBLISH]
    assert not got, got


# ------------------------------------------------------------ success
def test_call_round_trip(hub, devices):
    device_id, _, c = new_device(hub, devices)
    call = Call(hub, device_id, "reboot", {"delay": 5, "why": "update"})
    req = next_request(c)
    assert req.topic == "$iothub/methods/reboot"
    assert req.qos == 0
    corr = req.properties.get("CorrelationData")
    assert corr and len(corr) <= 16
    assert json.loads(req.payload) == {"delay": 5, "why": "update"}
    reply(c, req, 201, json.dumps({"rebooting": True, "in": [1, 2]}))
    r = call.result()
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("application/json")
    assert r.json() == {"status": 201, "payload": {"rebooting": True, "in": [1, 2]}}
    c.disconnect()


def test_payload_shapes(hub, devices):
    """null → "null" to the device; replies: empty → null, scalar JSON kept,
    plain text → a JSON string, bytes that are not UTF-8 → 502."""
    device_id, _, c = new_device(hub, devices)
    cases = [(b"", None), (b"42", 42), (b'"quoted"', "quoted"), (b"OK done", "OK done"),
             (b"[1,{\"a\":null}]", [1, {"a": None}]),
             (b'"unterminated', '"unterminated'), (b"[1,", "[1,"),  # text, not JSON
             (b"false\x00", "false\x00"),  # jansson 2.14 alone would take it for false
             (b'{"s":"a\\u0000b"}', {"s": "a\x00b"}),  # an escaped NUL is JSON
             (b' {"a": 1.1, "big": 12345678901234567890123} ',  # JSON, kept as sent
              {"a": 1.1, "big": 12345678901234567890123})]
    for sent, expected in cases:
        call = Call(hub, device_id, "shape", None)
        req = next_request(c)
        assert req.payload == b"null"
        reply(c, req, 200, sent)
        r = call.result()
        assert r.status == 200 and r.json() == {"status": 200, "payload": expected}, (sent, r)
    assert b'"a": 1.1,' in r.body  # the device's own text: not re-dumped as 1.1000000000000001
    call = Call(hub, device_id, "shape", "text")
    req = next_request(c)
    assert req.payload == b'"text"'
    reply(c, req, 200, b"\xff\xfe\x00binary")
    assert_error(call.result(), 502, "DeviceInvalidResponse")
    c.disconnect()


def test_response_code_range(hub, devices):
    device_id, _, c = new_device(hub, devices)
    for code in (0, 4294967295):
        call = Call(hub, device_id, "m")
        reply(c, next_request(c), code, b"{}")
        assert call.result().json() == {"status": code, "payload": {}}
    c.disconnect()


def test_reply_other_user_properties_ignored(hub, devices):
    device_id, _, c = new_device(hub, devices)
    call = Call(hub, device_id, "m")
    reply(c, next_request(c), 200, b"{}", extra_props=[("x-trace", "1")])
    assert call.result().status == 200
    c.disconnect()


def test_single_method_subscription(hub, devices):
    device_id, _, c = new_device(hub, devices, subscribe="$iothub/methods/only")
    assert_error(invoke(hub, device_id, "other"), 404, "DeviceNotOnline")
    call = Call(hub, device_id, "only", [1])
    req = next_request(c)
    assert req.topic == "$iothub/methods/only"
    reply(c, req, 200, b"true")
    assert call.result().json() == {"status": 200, "payload": True}
    c.disconnect()


# ------------------------------------------------------------ not reachable
def test_offline_device_is_404(hub, devices):
    device_id, _, _ = new_device(hub, devices, connect=False)
    t0 = time.monotonic()
    r = invoke(hub, device_id, "reboot")
    assert_error(r, 404, "DeviceNotOnline")
    assert time.monotonic() - t0 < 2


def test_unknown_device_is_device_not_found(hub):
    assert_error(invoke(hub, "no-such-device", "reboot"), 404, "DeviceNotFound")
    assert_error(invoke(hub, "no-such-device", "reboot", module="m"), 404, "DeviceNotFound")


def test_not_subscribed_is_404(hub, devices):
    device_id, _, c = new_device(hub, devices, subscribe=None)
    assert_error(invoke(hub, device_id, "reboot"), 404, "DeviceNotOnline")
    c.subscribe(ALL_METHODS)
    call = Call(hub, device_id, "reboot")
    reply(c, next_request(c), 200)
    assert call.result().status == 200
    c.unsubscribe(ALL_METHODS)
    assert_error(invoke(hub, device_id, "reboot"), 404, "DeviceNotOnline")
    assert_no_request(c)
    c.disconnect()


def test_disconnected_device_is_404(hub, devices):
    device_id, _, c = new_device(hub, devices)
    c.disconnect()
    time.sleep(0.3)
    assert_error(invoke(hub, device_id, "reboot"), 404, "DeviceNotOnline")


def test_invocation_larger_than_device_maximum_packet_size_is_404(hub, devices):
    device_id, key, _ = devices.new_sas_device("meth")
    c = connect_device(hub, device_id, key, properties={"MaximumPacketSize": 256})
    c.subscribe(ALL_METHODS)
    r = invoke(hub, device_id, "m", "x" * 300)
    assert_error(r, 404, "DeviceNotOnline")
    assert "Maximum Packet Size" in r.json()["Message"]
    call = Call(hub, device_id, "m", "small")
    reply(c, next_request(c), 200)
    assert call.result().status == 200
    c.disconnect()


# ------------------------------------------------------------ timeouts and bad replies
def test_response_timeout_is_504_and_late_reply_is_harmless(hub, devices):
    device_id, _, c = new_device(hub, devices)
    call = Call(hub, device_id, "slow", timeout=5)
    req = next_request(c)
    r = call.result()
    assert_error(r, 504, "GatewayTimeout")
    assert 4.5 <= call.elapsed < 8, call.elapsed
    reply(c, req, 200, b'{"late":true}')  # dropped without harm
    reply(c, req, 200, b'{"late":true}')
    call = Call(hub, device_id, "fast")
    req2 = next_request(c)
    assert req2.properties["CorrelationData"] != req.properties["CorrelationData"]
    reply(c, req2, 200, b"1")
    assert call.result().json() == {"status": 200, "payload": 1}
    c.disconnect()


def test_reply_without_response_code_is_502(hub, devices):
    device_id, _, c = new_device(hub, devices)
    for bad in (None, "abc", "-1", "4294967296", ""):
        call = Call(hub, device_id, "m")
        req = next_request(c)
        if bad is None:
            reply(c, req, None, b"{}")
        else:
            c.publish("$iothub/responses", b"{}", properties={
                "CorrelationData": req.properties["CorrelationData"],
                "UserProperty": [("response-code", bad)]})
        r = call.result()
        assert_error(r, 502, "DeviceInvalidResponse")
        assert "response-code" in r.json()["Message"]
    c.disconnect()


def test_reply_payload_over_128k_is_502(hub, devices):
    device_id, _, c = new_device(hub, devices)
    call = Call(hub, device_id, "big")
    reply(c, next_request(c), 200, b'"' + b"x" * (128 * 1024) + b'"')
    assert_error(call.result(), 502, "DeviceInvalidResponse")
    call = Call(hub, device_id, "big")
    reply(c, next_request(c), 200, b'"' + b"x" * (128 * 1024 - 2) + b'"')
    r = call.result()
    assert r.status == 200 and len(r.json()["payload"]) == 128 * 1024 - 2
    c.disconnect()


def test_unknown_correlation_is_dropped(hub, devices):
    device_id, _, c = new_device(hub, devices)
    c.publish("$iothub/responses", b"{}", properties={
        "CorrelationData": b"nobody-asked", "UserProperty": [("response-code", "200")]})
    call = Call(hub, device_id, "m")
    reply(c, next_request(c), 200)
    assert call.result().status == 200
    c.disconnect()


def test_reply_from_another_device_does_not_complete(hub, devices):
    a, _, ca = new_device(hub, devices)
    _, _, cb = new_device(hub, devices)
    call = Call(hub, a, "m", timeout=5)
    req = next_request(ca)
    reply(cb, req, 200, b'"forged"')
    time.sleep(0.3)
    reply(ca, req, 202, b'"real"')
    assert call.result().json() == {"status": 202, "payload": "real"}
    ca.disconnect()
    cb.disconnect()


def test_reply_without_correlation_disconnects(hub, devices):
    _, _, c = new_device(hub, devices)
    c.publish("$iothub/responses", b"{}", properties={"UserProperty": [("response-code", "200")]})
    d = expect_disconnect(c, 0x83)
    assert user_props(d.properties).get("status") == "0100"


def test_reply_at_qos1_refused(hub, devices):
    _, _, c = new_device(hub, devices)
    c.publish("$iothub/responses", b"{}", qos=1, properties={
        "CorrelationData": b"x", "UserProperty": [("response-code", "200")]})
    ack = c.expect(raw.PUBACK)
    assert ack.reason_code == 0x83
    assert user_props(ack.properties).get("status") == "0100"
    c.disconnect()


# ------------------------------------------------------------ concurrency
def test_twenty_concurrent_calls_answered_out_of_order(hub, devices):
    device_id, _, c = new_device(hub, devices)
    calls = [Call(hub, device_id, "work", {"n": i}) for i in range(20)]
    reqs = [next_request(c, timeout=10) for _ in range(20)]
    corrs = {r.properties["CorrelationData"] for r in reqs}
    assert len(corrs) == 20
    for req in reversed(reqs):  # out of order
        n = json.loads(req.payload)["n"]
        reply(c, req, 1000 + n, json.dumps({"echo": n}))
    for i, call in enumerate(calls):
        r = call.result()
        assert r.status == 200, r
        assert r.json() == {"status": 1000 + i, "payload": {"echo": i}}
    c.disconnect()


def test_calls_to_many_devices_at_once(hub, devices):
    """Devices spread over the loops; callers too."""
    devs = [new_device(hub, devices) for _ in range(6)]
    calls = [Call(hub, d[0], "ping", {"dev": d[0]}) for d in devs]
    for device_id, _, c in devs:
        req = next_request(c)
        assert json.loads(req.payload) == {"dev": device_id}
        reply(c, req, 200, json.dumps(device_id))
    for (device_id, _, c), call in zip(devs, calls):
        assert call.result().json() == {"status": 200, "payload": device_id}
        c.disconnect()


# ------------------------------------------------------------ a paho device
class PahoMethodDevice:
    """A device on paho-mqtt 1.6.1 (an independent MQTT 5 client): connects
    with SAS, subscribes to $iothub/methods/+ and answers each call on
    $iothub/responses with its Correlation Data, the user property
    response-code and a JSON payload {"method", "got"}. The method name
    picks the code: "fail" answers 500, any other 200."""

    def __init__(self, hub, device_id, key):
        self.requests = []
        self.connected = threading.Event()
        self.c = mqtt.Client(client_id=device_id, protocol=mqtt.MQTTv5)
        cp = Properties(PacketTypes.CONNECT)
        sp = sas_connect_props(device_id, key)
        cp.AuthenticationMethod = sp["AuthenticationMethod"]
        cp.AuthenticationData = sp["AuthenticationData"]
        cp.UserProperty = sp["UserProperty"]
        self.c.on_connect = lambda c, u, flags, rc, props=None: rc == 0 and self.connected.set()
        self.c.on_message = self._on_message
        self.c.connect(hub.host, hub.port, keepalive=60, properties=cp)
        self.c.loop_start()
        assert self.connected.wait(5), "paho device did not connect"
        subscribed = threading.Event()
        self.c.on_subscribe = lambda c, u, mid, codes, props=None: subscribed.set()
        self.c.subscribe(ALL_METHODS, qos=0)
        assert subscribed.wait(5), "no SUBACK"

    def _on_message(self, client, userdata, msg):
        name = msg.topic[len("$iothub/methods/"):]
        self.requests.append(msg)
        rp = Properties(PacketTypes.PUBLISH)
        rp.CorrelationData = msg.properties.CorrelationData
        rp.UserProperty = [("response-code", "500" if name == "fail" else "200")]
        body = {"method": name, "got": json.loads(msg.payload)}
        client.publish("$iothub/responses", json.dumps(body), qos=0, properties=rp)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_paho_device_answers_calls(hub, devices):
    device_id, key, _ = new_device(hub, devices, connect=False)
    dev = PahoMethodDevice(hub, device_id, key)
    try:
        r = invoke(hub, device_id, "reboot", {"delay": 1})
        assert r.status == 200, r
        assert r.json() == {"status": 200, "payload": {"method": "reboot", "got": {"delay": 1}}}
        assert dev.requests[0].qos == 0 and len(dev.requests[0].properties.CorrelationData) <= 16
        r = invoke(hub, device_id, "fail", "why")  # the device's own code comes back
        assert r.status == 200 and r.json() == {"status": 500,
                                                "payload": {"method": "fail", "got": "why"}}, r
        calls = [Call(hub, device_id, "work", {"n": i}) for i in range(8)]  # at once
        for i, call in enumerate(calls):
            r = call.result()
            assert r.json() == {"status": 200, "payload": {"method": "work", "got": {"n": i}}}, r
        corrs = {bytes(m.properties.CorrelationData) for m in dev.requests}
        assert len(corrs) == len(dev.requests) == 10
    finally:
        dev.close()
    time.sleep(0.3)
    assert_error(invoke(hub, device_id, "reboot"), 404, "DeviceNotOnline")


# ------------------------------------------------------------ connect timeout
def test_connect_timeout_device_connects_in_time(hub, devices):
    device_id, key, _ = new_device(hub, devices, connect=False)
    call = Call(hub, device_id, "wake", {"x": 1}, connect=10)
    time.sleep(1.0)
    assert call.is_alive()
    c = connect_device(hub, device_id, key)
    time.sleep(0.3)
    assert call.is_alive()  # connected but not yet subscribed: still waiting
    c.subscribe(ALL_METHODS)
    req = next_request(c)
    assert json.loads(req.payload) == {"x": 1}
    reply(c, req, 200, b'"awake"')
    r = call.result()
    assert r.json() == {"status": 200, "payload": "awake"}
    assert call.elapsed < 5
    c.disconnect()


def test_connect_timeout_connected_device_subscribes_in_time(hub, devices):
    device_id, _, c = new_device(hub, devices, subscribe=None)
    calls = [Call(hub, device_id, "late-sub", i, connect=10) for i in range(3)]
    time.sleep(0.8)
    c.subscribe("$iothub/methods/late-sub")
    reqs = [next_request(c) for _ in calls]
    for req in reqs:
        reply(c, req, 200, req.payload)
    assert sorted(call.result().json()["payload"] for call in calls) == [0, 1, 2]
    c.disconnect()


def test_connect_timeout_expires_is_404(hub, devices):
    device_id, _, c = new_device(hub, devices, subscribe="$iothub/methods/other")
    call = Call(hub, device_id, "never", connect=2)
    r = call.result()
    assert_error(r, 404, "DeviceNotOnline")
    assert 1.8 <= call.elapsed < 5, call.elapsed
    offline, _, _ = new_device(hub, devices, connect=False)
    call = Call(hub, offline, "never", connect=1)
    assert_error(call.result(), 404, "DeviceNotOnline")
    assert 0.9 <= call.elapsed < 4, call.elapsed
    c.disconnect()


def test_connect_timeout_then_response_timeout(hub, devices):
    """Both windows: the device subscribes after 1 s and never answers."""
    device_id, key, _ = new_device(hub, devices, connect=False)
    call = Call(hub, device_id, "mute", connect=10, timeout=5)
    time.sleep(1.0)
    c = connect_device(hub, device_id, key)
    c.subscribe(ALL_METHODS)
    next_request(c)
    assert_error(call.result(), 504, "GatewayTimeout")
    assert 5.5 <= call.elapsed < 10, call.elapsed
    c.disconnect()


# ------------------------------------------------------------ bad requests
@pytest.mark.parametrize("body", [
    b"not json", b"[1,2]", b'"reboot"', {}, {"methodName": ""}, {"methodName": 5},
    b'{"methodName":"m","payload":1\x00}',
    {"methodName": "a/b"}, {"methodName": "a+"}, {"methodName": "#"}, {"methodName": "x" * 129},
    {"methodName": "tab\there"},
    {"methodName": "m", "responseTimeoutInSeconds": 4},
    {"methodName": "m", "responseTimeoutInSeconds": 301},
    {"methodName": "m", "responseTimeoutInSeconds": "30"},
    {"methodName": "m", "responseTimeoutInSeconds": 30.5},
    {"methodName": "m", "connectTimeoutInSeconds": -1},
    {"methodName": "m", "connectTimeoutInSeconds": 301},
    {"methodName": "m", "connectTimeoutInSeconds": True},
])
def test_bad_bodies_are_400(hub, devices, body):
    device_id, _, c = new_device(hub, devices)
    r = post(hub, method_path(device_id), body)
    assert_error(r, 400, "ArgumentInvalid")
    assert_no_request(c, 0.2)
    c.disconnect()


def test_limits_accepted_at_the_edges(hub, devices):
    device_id, _, c = new_device(hub, devices, subscribe=ALL_METHODS)
    name = "n" * 128
    call = Call(hub, device_id, name, None, timeout=300, connect=300)
    req = next_request(c)
    assert req.topic == "$iothub/methods/" + name
    reply(c, req, 200)
    assert call.result().status == 200
    c.disconnect()


def test_payload_over_128k_is_413(hub, devices):
    device_id, _, c = new_device(hub, devices)
    r = invoke(hub, device_id, "big", "x" * (128 * 1024))
    assert_error(r, 413, "MessageTooLarge")
    call = Call(hub, device_id, "big", "x" * (128 * 1024 - 2))  # exactly 128 KB as JSON
    req = next_request(c)
    assert len(req.payload) == 128 * 1024
    reply(c, req, 200)
    assert call.result().status == 200
    c.disconnect()


def test_rights(hub, devices):
    device_id, _, c = new_device(hub, devices)
    svc = ServiceClient(hub)
    pols = {p["keyName"]: p for p in svc.request("GET", "/iothubd/policies").json()}
    host = parse_connstr(hub.owner_connstr)["HostName"]
    token = sas_token(host, pols["registryRead"]["primaryKey"], "registryRead")
    r = post(hub, method_path(device_id), call_body("m"), auth=token)
    assert_error(r, 403, "IotHubUnauthorized")
    r = post(hub, method_path(device_id), call_body("m"), auth="SharedAccessSignature sr=x")
    assert r.status == 401, r
    token = sas_token(host, pols["service"]["primaryKey"], "service")
    call = threading.Thread(target=lambda: setattr(call, "r", post(
        hub, method_path(device_id), call_body("m"), auth=token)))
    call.start()
    reply(c, next_request(c), 200)
    call.join(10)
    assert call.r.status == 200, call.r
    c.disconnect()


def test_wrong_http_method_is_405(hub, devices):
    device_id, _, _ = new_device(hub, devices, connect=False)
    r = ServiceClient(hub).request("GET", method_path(device_id))
    assert r.status == 405, r


# ------------------------------------------------------------ modules
def test_module_methods(hub, devices):
    device_id, dkey, _ = new_device(hub, devices, connect=False)
    mod = devices.create_module(device_id, "edge")
    mkey = mod["authentication"]["symmetricKey"]["primaryKey"]
    m = connect_device(hub, device_id + "/edge", mkey)
    m.subscribe(ALL_METHODS)
    # the device itself is not connected: its call does not reach the module
    assert_error(invoke(hub, device_id, "m"), 404, "DeviceNotOnline")
    call = Call(hub, device_id, "m", {"to": "module"}, module="edge")
    req = next_request(m)
    assert json.loads(req.payload) == {"to": "module"}
    d = connect_device(hub, device_id, dkey)
    d.subscribe(ALL_METHODS)
    reply(d, req, 500, b'"device forging"')  # the module's call: the device cannot answer
    time.sleep(0.3)
    assert call.is_alive()
    reply(m, req, 200, b'"from module"')
    assert call.result().json() == {"status": 200, "payload": "from module"}
    assert_error(invoke(hub, device_id, "m", module="nope"), 404, "DeviceNotFound")
    m.disconnect()
    d.disconnect()


# ------------------------------------------------------------ the caller leaves, shutdown
def raw_post(hub, path, body):
    s = socket.create_connection(("127.0.0.1", hub.http_port), timeout=5)
    svc = ServiceClient(hub)
    data = json.dumps(body).encode()
    head = ("POST %s?api-version=2021-04-12 HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (path, svc.auth(), len(data))).encode()
    s.sendall(head + data)
    return s


def test_caller_leaves_mid_call(hub, devices):
    device_id, _, c = new_device(hub, devices)
    socks = [raw_post(hub, method_path(device_id), call_body("m", i, timeout=5))
             for i in range(3)]
    reqs = [next_request(c) for _ in socks]
    for s in socks:
        s.close()
    reply(c, reqs[0], 200)  # answered after its caller left
    time.sleep(5.5)  # the others time out with nobody to tell
    reply(c, reqs[1], 200)  # late and orphaned
    call = Call(hub, device_id, "m")
    reply(c, next_request(c), 200)
    assert call.result().status == 200
    c.disconnect()


def test_shutdown_with_calls_pending(hub, devices):
    device_id, _, c = new_device(hub, devices)
    calls = [Call(hub, device_id, "m", timeout=60) for _ in range(3)]
    for _ in calls:
        next_request(c)
    offline, _, _ = new_device(hub, devices, connect=False)
    waiting = Call(hub, offline, "m", connect=60)
    time.sleep(0.3)
    problems = hub.stop()  # clean exit, nothing leaked (ASan builds check)
    assert not problems, "\n".join(problems)
    for call in calls + [waiting]:
        call.join(10)
        assert not call.is_alive()


# ------------------------------------------------------------ command line
def test_cli_method_invoke(hub, devices, tmp_path):
    cli = Cli(hub, str(tmp_path))
    device_id, _, c = new_device(hub, devices)

    def answer(code, payload):
        req = next_request(c)
        reply(c, req, code, payload)
        return req

    results = {}
    t = threading.Thread(target=lambda: results.setdefault("out", cli(
        "method", "invoke", device_id, "reboot", "--payload", '{"in":3}', "--timeout", "10")))
    t.start()
    req = answer(200, b'{"done":true}')
    t.join(15)
    assert json.loads(req.payload) == {"in": 3}
    out, _ = results["out"]
    assert "Status" in out and "200" in out and '{"done":true}' in out, out

    t = threading.Thread(target=lambda: results.setdefault("json", cli.json(
        "method", "invoke", device_id, "ping")))
    t.start()
    req = answer(204, b"")
    t.join(15)
    assert req.payload == b"null"
    assert results["json"] == {"status": 204, "payload": None}

    offline, _, _ = new_device(hub, devices, connect=False)
    err = cli.error("method", "invoke", offline, "reboot")
    assert "DeviceNotOnline" in err, err
    err = cli.error("method", "invoke", device_id, "m", "--payload", "{bad", expect=2)
    assert "--payload" in err
    err = cli.error("method", "invoke", device_id, "m", "--timeout", "4", expect=2)
    assert "--timeout" in err
    c.disconnect()


def test_cli_method_invoke_module_and_connect_timeout(hub, devices, tmp_path):
    cli = Cli(hub, str(tmp_path))
    device_id, _, _ = new_device(hub, devices, connect=False)
    mod = devices.create_module(device_id, "m1")
    results = {}
    t = threading.Thread(target=lambda: results.setdefault("json", cli.json(
        "method", "invoke", device_id, "hello", "--module", "m1", "--connect-timeout", "10",
        "--timeout", "5")))
    t.start()
    time.sleep(0.8)
    m = connect_device(hub, device_id + "/m1", mod["authentication"]["symmetricKey"]["primaryKey"])
    m.subscribe("$iothub/methods/hello")
    reply(m, next_request(m), 200, b'"hi"')
    t.join(15)
    assert results["json"] == {"status": 200, "payload": "hi"}
    m.disconnect()

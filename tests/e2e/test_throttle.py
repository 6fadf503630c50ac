"""Throttling, the daily message quota and the device lifecycle fields
(../shared/spec/iothub-mqtt5.md §1, §4, §7 "Throttling and quotas";
../shared/spec/service-rest.md): each per-hub rate set low on the command
line and exceeded -- connects (CONNACK 0x9F, status 0501), telemetry
(PUBACK 151, status 0501; QoS 0 dropped), twin reads and updates from
devices (responses with status 0501) and from the service (429
ThrottlingException), one budget shared by devices and the service; the
service-initiated operations, direct methods and C2D sends (429
ThrottlingException; refused calls reach no device, refused sends are not
queued); the daily quota (PUBACK 151 / 0502, DISCONNECT 0x97 at QoS 0, not
recovered by time; used by C2D sends too, 403 IotHubQuotaExceeded, shared
with telemetry; a send refused for its rate or not accepted uses no quota); every limit
recovering once its bucket refills. Lifecycle:
connectionState, connectionStateUpdatedTime, lastActivityTime and
cloudToDeviceMessageCount in GET /devices/{id} and GET /twins/{id} across
connect, telemetry, twin requests and disconnect.

Rates are checked with bounds, not exact counts: a bucket of R refills at
R/s, so over `elapsed` seconds at most R + R*elapsed (+1 for rounding)
operations pass, and a quick burst of more than that must see refusals.
"""

import datetime
import json
import threading
import time

import pytest

import mqtt5raw as raw
from hub_device import (Devices, connect_device, expect_disconnect, response_for,
                        sas_connect_props, user_props)
from service_client import ServiceClient

THROTTLED_RC = 0x97  # reason code 151 on PUBACK
QUOTA_EXCEEDED = 0x97  # the same code on DISCONNECT
CONNECTION_RATE_EXCEEDED = 0x9F


def hub_with(broker_factory, *args):
    return broker_factory(http=True, extra_args=list(args))


def max_admitted(rate, elapsed):
    return rate + int(rate * elapsed) + 1


def puback(c, pid):
    p = c.expect(raw.PUBACK, stash=True)
    assert p.packet_id == pid, p
    return p


def pubacks(c, pids, timeout=10.0):
    """The PUBACKs of `pids` in that order: refusals come at once while
    accepted messages wait for the store, so they may arrive out of order."""
    got = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(pids):
        p = c.expect(raw.PUBACK, timeout=max(0.05, deadline - time.monotonic()), stash=True)
        got[p.packet_id] = p
    return [got[pid] for pid in pids]


def alive(c):
    c.pingreq()
    assert c.expect(raw.PINGRESP, stash=True).type == raw.PINGRESP


def parse_time(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


NEVER = "0001-01-01T00:00:00Z"


# ---- connects ------------------------------------------------------------------------

def try_connect(hub, dev, key):
    """One SAS CONNECT; returns the CONNACK (the connection is closed)."""
    c = raw.RawClient(hub.port, hub.host, timeout=5.0)
    try:
        return c.connect(client_id=dev, keepalive=60, properties=sas_connect_props(dev, key),
                         expect_rc=None)
    finally:
        c.close()


def test_connects_over_the_rate_get_0x9f_and_recover(broker_factory):
    hub = hub_with(broker_factory, "--throttle-connects-per-s", "2")
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device()
    start = time.monotonic()
    answers = [try_connect(hub, dev, key) for _ in range(8)]
    elapsed = time.monotonic() - start
    ok = [p for p in answers if p.reason_code == 0]
    refused = [p for p in answers if p.reason_code != 0]
    assert 2 <= len(ok) <= max_admitted(2, elapsed), answers
    assert refused, answers
    for p in refused:
        assert p.type == raw.CONNACK and p.reason_code == CONNECTION_RATE_EXCEEDED, p
        assert user_props(p.properties)["status"] == "0501", p
    time.sleep(1.1)
    assert try_connect(hub, dev, key).reason_code == 0


def test_bad_credentials_do_not_use_the_connect_budget(broker_factory):
    hub = hub_with(broker_factory, "--throttle-connects-per-s", "1")
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device()
    wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    for _ in range(5):
        assert try_connect(hub, dev, wrong).reason_code == raw.RC_NOT_AUTHORIZED
    assert try_connect(hub, dev, key).reason_code == 0


# ---- telemetry -----------------------------------------------------------------------

def test_telemetry_over_the_rate_gets_151_0501_and_recovers(broker_factory):
    hub = hub_with(broker_factory, "--throttle-telemetry-per-s", "3")
    devs = Devices(hub)
    clients = []
    for _ in range(2):  # the limit is the hub's: two devices share it
        dev, key, _ = devs.new_sas_device()
        clients.append(connect_device(hub, dev, key))
    start = time.monotonic()
    sent = {id(c): [] for c in clients}
    for _ in range(5):
        for c in clients:
            sent[id(c)].append(c.publish("$iothub/telemetry", b"x", qos=1))
    acks = [a for c in clients for a in pubacks(c, sent[id(c)])]
    elapsed = time.monotonic() - start
    ok = [p for p in acks if p.reason_code == 0]
    refused = [p for p in acks if p.reason_code != 0]
    assert 3 <= len(ok) <= max_admitted(3, elapsed), acks
    assert refused
    for p in refused:
        up = user_props(p.properties)
        assert p.reason_code == THROTTLED_RC and up["status"] == "0501", p
        assert "telemetry" in up["reason"], p
    # QoS 0 over the rate: dropped, the connection stays
    for _ in range(10):
        clients[0].publish("$iothub/telemetry", b"q0", qos=0)
    alive(clients[0])
    time.sleep(1.1)
    pid = clients[1].publish("$iothub/telemetry", b"again", qos=1)
    assert puback(clients[1], pid).reason_code == 0
    for c in clients:
        c.close()


def test_throttled_telemetry_is_not_stored(broker_factory):
    hub = hub_with(broker_factory, "--throttle-telemetry-per-s", "1")
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device()
    c = connect_device(hub, dev, key)
    pids = [c.publish("$iothub/telemetry", json.dumps({"n": i}), qos=1) for i in range(4)]
    codes = [p.reason_code for p in pubacks(c, pids)]
    c.close()
    accepted = codes.count(0)
    r = devs.svc.request("GET", "/events/partitions")
    assert r.status == 200, r
    stored = 0
    for part in r.json()["partitions"]:
        page = devs.svc.request("GET", "/events?partition=%d&max=1000" % part["partition"])
        assert page.status == 200, page
        stored += sum(1 for e in page.json()["events"]
                      if e["systemProperties"].get("iothub-connection-device-id") == dev)
    assert stored == accepted, (codes, stored)


# ---- the daily quota ----------------------------------------------------------------

def test_daily_quota_gets_0502_and_does_not_recover(broker_factory):
    hub = hub_with(broker_factory, "--daily-message-quota", "4")
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device()
    c = connect_device(hub, dev, key)
    codes = []
    for _ in range(4):
        pid = c.publish("$iothub/telemetry", b"m", qos=1)
        codes.append(puback(c, pid).reason_code)
    assert codes == [0, 0, 0, 0]
    pid = c.publish("$iothub/telemetry", b"m", qos=1)
    p = puback(c, pid)
    assert p.reason_code == THROTTLED_RC and user_props(p.properties)["status"] == "0502", p
    time.sleep(1.1)  # unlike a rate, the quota does not come back with time
    pid = c.publish("$iothub/telemetry", b"m", qos=1)
    p = puback(c, pid)
    assert p.reason_code == THROTTLED_RC and user_props(p.properties)["status"] == "0502", p
    # twin requests are not messages: still served
    c.publish("$iothub/twin/get", b"", properties={"CorrelationData": b"g"})
    assert "status" not in user_props(response_for(c, b"g").properties)
    # at QoS 0 a used-up quota ends the connection
    c.publish("$iothub/telemetry", b"m", qos=0)
    d = expect_disconnect(c, QUOTA_EXCEEDED)
    assert user_props(d.properties)["status"] == "0502", d
    c.close()


# ---- twins ---------------------------------------------------------------------------

def twin_statuses(c, topic, n, payload=b""):
    """n requests on `topic`; the `status` of each response (None = success)."""
    corrs = [b"r%d" % i for i in range(n)]
    for corr in corrs:
        c.publish(topic, payload, properties={"CorrelationData": corr})
    # refusals come at once, accepted updates after the store: any order
    got = {}
    deadline = time.monotonic() + 10
    while len(got) < n:
        p = c.expect(raw.PUBLISH, timeout=max(0.05, deadline - time.monotonic()), stash=True)
        if p.topic == "$iothub/responses":
            got[p.properties.get("CorrelationData")] = p
    return [user_props(got[corr].properties).get("status") for corr in corrs]


def test_device_twin_reads_over_the_rate_get_0501(broker_factory):
    hub = hub_with(broker_factory, "--throttle-twin-reads-per-s", "2")
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device()
    c = connect_device(hub, dev, key)
    start = time.monotonic()
    statuses = twin_statuses(c, "$iothub/twin/get", 8)
    elapsed = time.monotonic() - start
    assert 2 <= statuses.count(None) <= max_admitted(2, elapsed), statuses
    assert set(statuses) == {None, "0501"}, statuses
    time.sleep(1.1)
    assert twin_statuses(c, "$iothub/twin/get", 1) == [None]
    c.close()


def test_device_reported_patches_over_the_rate_get_0501(broker_factory):
    hub = hub_with(broker_factory, "--throttle-twin-updates-per-s", "2")
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device()
    c = connect_device(hub, dev, key)
    start = time.monotonic()
    statuses = twin_statuses(c, "$iothub/twin/patch/reported", 8, b'{"t":1}')
    elapsed = time.monotonic() - start
    assert 2 <= statuses.count(None) <= max_admitted(2, elapsed), statuses
    assert set(statuses) == {None, "0501"}, statuses
    time.sleep(1.1)
    assert twin_statuses(c, "$iothub/twin/patch/reported", 1, b'{"t":2}') == [None]
    c.close()


def test_service_twin_calls_over_the_rate_get_429(broker_factory):
    hub = hub_with(broker_factory, "--throttle-twin-reads-per-s", "2",
                   "--throttle-twin-updates-per-s", "2")
    devs = Devices(hub)
    dev, _, _ = devs.new_sas_device()
    svc = devs.svc
    for method, body in (("GET", None), ("PATCH", {"tags": {"a": 1}}),
                         ("PUT", {"tags": {"b": 2}})):
        if method == "PUT":
            time.sleep(1.1)  # PATCH and PUT share the update bucket
        start = time.monotonic()
        rs = [svc.request(method, "/twins/" + dev, body) for _ in range(8)]
        elapsed = time.monotonic() - start
        ok = [r for r in rs if r.status == 200]
        refused = [r for r in rs if r.status != 200]
        assert 2 <= len(ok) <= max_admitted(2, elapsed), (method, rs)
        assert refused, (method, rs)
        for r in refused:
            assert r.status == 429 and r.error_code == "ThrottlingException", (method, r)
    time.sleep(1.1)
    assert svc.request("GET", "/twins/" + dev).status == 200
    assert svc.request("PATCH", "/twins/" + dev, {"tags": {"c": 3}}).status == 200


def test_devices_and_service_share_the_twin_read_budget(broker_factory):
    hub = hub_with(broker_factory, "--throttle-twin-reads-per-s", "3")
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device()
    c = connect_device(hub, dev, key)
    statuses = twin_statuses(c, "$iothub/twin/get", 3)
    if statuses != [None, None, None]:
        pytest.skip("the bucket refilled or was used meanwhile: %r" % statuses)
    r = devs.svc.request("GET", "/twins/" + dev)
    # the device just used the whole budget; a token may have come back
    assert r.status in (200, 429), r
    rs = [devs.svc.request("GET", "/twins/" + dev) for _ in range(4)]
    assert any(x.status == 429 for x in rs + [r]), rs
    c.close()


# ---- lifecycle -----------------------------------------------------------------------

def device_json(svc, dev):
    r = svc.get_device(dev)
    assert r.status == 200, r
    return r.json()


def twin_json(svc, dev):
    r = svc.request("GET", "/twins/" + dev)
    assert r.status == 200, r
    return r.json()


def test_lifecycle_fields_follow_the_device(hub):
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device()
    svc = devs.svc
    d = device_json(svc, dev)
    assert d["connectionState"] == "Disconnected"
    assert d["lastActivityTime"] == NEVER and d["connectionStateUpdatedTime"] == NEVER
    assert d["cloudToDeviceMessageCount"] == 0
    t = twin_json(svc, dev)
    assert t["connectionState"] == "Disconnected" and t["lastActivityTime"] == NEVER
    assert t["cloudToDeviceMessageCount"] == 0

    before = datetime.datetime.utcnow() - datetime.timedelta(seconds=1)
    c = connect_device(hub, dev, key)
    d = device_json(svc, dev)
    assert d["connectionState"] == "Connected", d
    connected_at = parse_time(d["connectionStateUpdatedTime"])
    assert connected_at >= before
    act_connect = parse_time(d["lastActivityTime"])
    assert act_connect == connected_at
    t = twin_json(svc, dev)
    assert t["connectionState"] == "Connected"
    assert parse_time(t["lastActivityTime"]) == act_connect

    time.sleep(0.05)
    pid = c.publish("$iothub/telemetry", b"x", qos=1)
    assert puback(c, pid).reason_code == 0
    act_telemetry = parse_time(device_json(svc, dev)["lastActivityTime"])
    assert act_telemetry > act_connect
    assert parse_time(twin_json(svc, dev)["lastActivityTime"]) == act_telemetry

    time.sleep(0.05)
    c.publish("$iothub/twin/get", b"", properties={"CorrelationData": b"a"})
    response_for(c, b"a")
    act_twin = parse_time(device_json(svc, dev)["lastActivityTime"])
    assert act_twin > act_telemetry
    assert device_json(svc, dev)["connectionStateUpdatedTime"] == d["connectionStateUpdatedTime"]

    time.sleep(0.05)
    c.disconnect()
    deadline = time.monotonic() + 5
    while device_json(svc, dev)["connectionState"] != "Disconnected":
        assert time.monotonic() < deadline, "still Connected"
        time.sleep(0.02)
    d = device_json(svc, dev)
    assert parse_time(d["connectionStateUpdatedTime"]) > connected_at
    assert parse_time(d["lastActivityTime"]) == act_twin  # leaving is not activity
    t = twin_json(svc, dev)
    assert t["connectionState"] == "Disconnected"
    assert parse_time(t["lastActivityTime"]) == act_twin


# ---- service-initiated operations: direct methods and C2D sends ----------------------

class Responder:
    """A device answering every method call with 200 and its payload, on
    its own thread, until close()."""

    def __init__(self, hub, dev, key):
        self.c = connect_device(hub, dev, key)
        assert self.c.subscribe("$iothub/methods/+").reason_codes == [0]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                p = self.c.recv(0.1)
            except raw.Timeout:
                continue
            except raw.ConnectionClosed:
                return
            if p.type == raw.PUBLISH and p.topic.startswith("$iothub/methods/"):
                self.c.publish("$iothub/responses", p.payload, properties={
                    "CorrelationData": p.properties["CorrelationData"],
                    "UserProperty": [("response-code", "200")]})

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.c.close()


def invoke(svc, dev, n):
    return svc.request("POST", "/twins/%s/methods" % dev,
                       {"methodName": "m", "payload": {"n": n}, "responseTimeoutInSeconds": 5})


def c2d_send(svc, dev, body=b"c"):
    return svc.request("POST", "/devices/%s/messages/deviceBound" % dev, body)


def queued(svc, dev):
    r = svc.get_device(dev)
    assert r.status == 200, r
    return r.json()["cloudToDeviceMessageCount"]


def test_method_calls_over_the_rate_get_429_and_recover(broker_factory):
    hub = hub_with(broker_factory, "--throttle-methods-per-s", "3")
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device()
    device = Responder(hub, dev, key)
    svc = devs.svc
    start = time.monotonic()
    rs = [invoke(svc, dev, n) for n in range(10)]
    elapsed = time.monotonic() - start
    ok = [r for r in rs if r.status == 200]
    refused = [r for r in rs if r.status != 200]
    assert 3 <= len(ok) <= max_admitted(3, elapsed), rs
    assert refused, rs
    for r in ok:
        assert r.json()["status"] == 200, r
    for r in refused:
        assert r.status == 429 and r.error_code == "ThrottlingException", r
        assert "method" in r.json()["Message"], r
    # the limit is the hub's, not the device's: another device shares it
    other, _, _ = devs.new_sas_device()
    r = invoke(svc, other, 0)
    assert r.status in (404, 429), r  # 404: offline, had a token come back
    time.sleep(1.1)
    rs = [invoke(svc, dev, n) for n in range(3)]  # a full bucket again
    assert [r.status for r in rs] == [200, 200, 200], rs
    device.close()


def test_method_refusals_reach_no_device(broker_factory):
    hub = hub_with(broker_factory, "--throttle-methods-per-s", "1")
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device()
    c = connect_device(hub, dev, key)
    assert c.subscribe("$iothub/methods/+").reason_codes == [0]
    svc = devs.svc
    # the admitted call waits (on its own connection) for the device's reply,
    # while the refusals come at once
    holder = threading.Thread(target=lambda: invoke(ServiceClient(hub), dev, 0), daemon=True)
    holder.start()
    p = c.expect(raw.PUBLISH, timeout=5)
    assert p.topic == "$iothub/methods/m", p
    t0 = time.monotonic()
    for n in range(1, 5):
        r = invoke(svc, dev, n)
        assert r.status == 429 and r.error_code == "ThrottlingException", r
    assert time.monotonic() - t0 < 0.9  # (so the bucket had no time to refill)
    got = [x for x in c.recv_all(0.5) if x.type == raw.PUBLISH]
    assert not got, got  # refused calls were never published
    c.publish("$iothub/responses", b"{}", properties={
        "CorrelationData": p.properties["CorrelationData"],
        "UserProperty": [("response-code", "200")]})
    holder.join(5)
    c.close()


def test_c2d_sends_over_the_rate_get_429_and_recover(broker_factory):
    hub = hub_with(broker_factory, "--throttle-c2d-per-s", "3")
    devs = Devices(hub)
    dev, _, _ = devs.new_sas_device()
    svc = devs.svc
    start = time.monotonic()
    rs = [c2d_send(svc, dev, b"%d" % n) for n in range(10)]
    elapsed = time.monotonic() - start
    ok = [r for r in rs if r.status == 201]
    refused = [r for r in rs if r.status != 201]
    assert 3 <= len(ok) <= max_admitted(3, elapsed), rs
    assert refused, rs
    for r in refused:
        assert r.status == 429 and r.error_code == "ThrottlingException", r
        assert "cloud-to-device" in r.json()["Message"], r
    assert queued(svc, dev) == len(ok)  # refused sends were not queued
    # purge and feedback are not sends: not throttled
    assert svc.request("DELETE", "/devices/%s/commands" % dev).status == 200
    assert svc.request("GET", "/messages/serviceBound/feedback").status == 200
    time.sleep(1.1)
    rs = [c2d_send(svc, dev) for _ in range(3)]
    assert [r.status for r in rs] == [201, 201, 201], rs


def test_c2d_sends_use_the_daily_quota_with_telemetry(broker_factory):
    hub = hub_with(broker_factory, "--daily-message-quota", "5", "--throttle-c2d-per-s", "2")
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device()
    svc = devs.svc
    c = connect_device(hub, dev, key)
    pid = c.publish("$iothub/telemetry", b"t", qos=1)
    assert puback(c, pid).reason_code == 0  # quota 1 of 5
    # a send that is not accepted (unknown device) uses no quota
    r = c2d_send(svc, "no-such-device")
    assert r.status == 404 and r.error_code == "DeviceNotFound", r
    time.sleep(1.1)  # and the bucket is full again
    # over the rate: refused, and a refused send does not count toward the quota
    rs = [c2d_send(svc, dev) for _ in range(6)]
    statuses = [r.status for r in rs]
    assert 2 <= statuses.count(201) <= 3 and set(statuses) == {201, 429}, rs
    used = 1 + statuses.count(201)
    time.sleep(1.1)
    statuses = []
    for _ in range(5 - used):
        statuses.append(c2d_send(svc, dev).status)
        time.sleep(0.5)  # within the rate
    assert statuses == [201] * (5 - used), statuses
    r = c2d_send(svc, dev)
    assert r.status == 403 and r.error_code == "IotHubQuotaExceeded", r
    assert "quota" in r.json()["Message"], r
    time.sleep(1.1)  # unlike a rate, the quota does not come back with time
    r = c2d_send(svc, dev)
    assert r.status == 403 and r.error_code == "IotHubQuotaExceeded", r
    assert queued(svc, dev) == 5 - 1
    # the quota is shared: telemetry is refused too (status 0502)
    pid = c.publish("$iothub/telemetry", b"t", qos=1)
    p = puback(c, pid)
    assert p.reason_code == THROTTLED_RC and user_props(p.properties)["status"] == "0502", p
    # method calls are not messages: still served
    r = invoke(svc, dev, 0)
    assert r.status == 404 and r.error_code == "DeviceNotOnline", r
    c.close()

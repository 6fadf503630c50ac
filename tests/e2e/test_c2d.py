"""Cloud-to-device commands (../shared/spec/iothub-mqtt5.md §6 "Receive commands",
§7 "Commands"; ../shared/spec/service-rest.md "Cloud-to-device commands"):
send over HTTP, delivery on $iothub/commands, settlement by PUBACK (complete,
abandon, reject), locks, TTL, max delivery count, queue depth, size, purge,
feedback, durability across SIGKILL, and the iothub c2d commands.

The raw client (mqtt5raw) is used where the PUBACK needs a reason code and
properties (paho 1.6.1 cannot send them); one test uses paho for the
ordinary complete path. The hub runs with --c2d-lock-ms and --c2d-min-ttl-ms
lowered so that lock expiry and TTL can be seen in seconds.
"""

import os
import signal
import time
import urllib.parse

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import mqtt5raw as raw
from conftest import REPO
from hub_device import Devices, connect_device, sas_connect_props, user_props
from service_client import ServiceClient

LOCK_MS = 1500
IOTHUB_CLI = os.path.abspath(os.environ.get(
    "IOTHUB_CLI", os.path.join(os.path.dirname(os.environ.get("IOTHUBD_BIN", os.path.join(
        REPO, "build", "iothubd"))), "iothub")))


@pytest.fixture
def c2d_hub(broker_factory):
    return broker_factory(http=True, extra_args=["--c2d-lock-ms", str(LOCK_MS),
                                                 "--c2d-min-ttl-ms", "500"])


@pytest.fixture
def env(c2d_hub):
    devs = Devices(c2d_hub)
    dev, key, _ = devs.new_sas_device("c2d")
    return c2d_hub, ServiceClient(c2d_hub), dev, key


def send(svc, dev, body=b"hello", **headers):
    h = {k.replace("_", "-"): v for k, v in headers.items()}
    return svc.request("POST", "/devices/%s/messages/deviceBound" % urllib.parse.quote(dev, safe=""),
                       body, headers=h)


def subscribed_device(hub, dev, key, **kw):
    c = connect_device(hub, dev, key, **kw)
    assert c.subscribe([("$iothub/commands", raw.sub_options(1))]).reason_codes == [1]
    return c


def next_command(c, timeout=5.0):
    p = c.expect(raw.PUBLISH, timeout=timeout, stash=True)
    assert p.topic == "$iothub/commands" and p.qos == 1, p
    p.users = user_props(p.properties)
    return p


def no_command(c, timeout=0.8):
    got = [p for p in c.recv_all(timeout) if p.type == raw.PUBLISH]
    assert not got, got


def device_json(svc, dev):
    r = svc.get_device(dev)
    assert r.status == 200, r
    return r.json()


def feedback(svc):
    r = svc.request("GET", "/messages/serviceBound/feedback")
    assert r.status == 200, r
    return r.json()


def abandon(c, p):
    c.puback(p.packet_id, raw.RC_IMPLEMENTATION_SPECIFIC, {"UserProperty": [("status", "0603")]})


def reject(c, p):
    c.puback(p.packet_id, raw.RC_IMPLEMENTATION_SPECIFIC, {"UserProperty": [("status", "0100")]})


# ---- send and deliver ---------------------------------------------------------

def test_send_answers_201_and_delivers_with_properties(env):
    hub, svc, dev, key = env
    c = subscribed_device(hub, dev, key)
    r = send(svc, dev, b"\x00\x01binary", iothub_messageid="m1", iothub_correlationid="corr",
             iothub_userid="alice", Content_Type="application/octet-stream",
             Content_Encoding="gzip", iothub_app_color="red", iothub_creation_time="1600000000000")
    assert r.status == 201, r
    body = r.json()
    assert body["messageId"] == "m1" and body["sequenceNumber"] > 0 and body["enqueuedTime"]
    p = next_command(c)
    assert p.payload == b"\x00\x01binary"
    u = p.users
    assert u["sequence-no"] == str(body["sequenceNumber"])
    assert int(u["enqueued-time"]) > 0 and u["delivery-count"] == "0"
    assert u["message-id"] == "m1" and u["correlation-id"] == "corr" and u["user-id"] == "alice"
    assert u["content-encoding"] == "gzip" and u["@color"] == "red"
    assert u["creation-time"] == "1600000000000"
    assert p.properties.get("ContentType") == "application/octet-stream"
    c.puback(p.packet_id)
    c.close()


def test_properties_must_be_utf8(env):
    """HTTP headers may carry any bytes; the device sees these texts as MQTT
    user properties, which must be UTF-8, so the send is refused."""
    hub, svc, dev, key = env
    c = subscribed_device(hub, dev, key)
    for header in ("iothub_messageid", "iothub_correlationid", "iothub_userid", "Content_Type",
                   "Content_Encoding", "iothub_app_color"):
        r = send(svc, dev, b"x", **{header: b"ok\xff\xfe"})
        assert r.status == 400 and r.error_code == "ArgumentInvalid", (header, r)
    no_command(c)
    assert device_json(svc, dev)["cloudToDeviceMessageCount"] == 0
    # UTF-8 beyond ASCII passes through, in the receipt and to the device
    r = send(svc, dev, b"x", iothub_messageid="caf\u00e9 \"1\"".encode(),
             iothub_app_color="gr\u00fcn".encode())
    assert r.status == 201 and r.json()["messageId"] == "caf\u00e9 \"1\"", r
    p = next_command(c)
    assert p.users["message-id"] == "caf\u00e9 \"1\"" and p.users["@color"] == "gr\u00fcn"
    c.puback(p.packet_id)
    c.close()


def test_complete_with_paho_removes_the_command(env):
    hub, svc, dev, key = env
    got = []
    cl = mqtt.Client(client_id=dev, protocol=mqtt.MQTTv5)
    cp = Properties(PacketTypes.CONNECT)
    sp = sas_connect_props(dev, key)
    cp.AuthenticationMethod = sp["AuthenticationMethod"]
    cp.AuthenticationData = sp["AuthenticationData"]
    cp.UserProperty = sp["UserProperty"]
    cl.on_message = lambda cli, u, m: got.append(m)
    cl.connect("127.0.0.1", hub.port, properties=cp)
    cl.loop_start()
    try:
        deadline = time.time() + 5
        while not cl.is_connected() and time.time() < deadline:
            time.sleep(0.05)
        cl.subscribe("$iothub/commands", qos=1)
        time.sleep(0.3)
        assert send(svc, dev, b"paho").status == 201
        deadline = time.time() + 5
        while not got and time.time() < deadline:
            time.sleep(0.05)
        assert got and got[0].payload == b"paho" and got[0].qos == 1
        time.sleep(0.5)  # paho acknowledged with PUBACK 0
        assert device_json(svc, dev)["cloudToDeviceMessageCount"] == 0
    finally:
        cl.loop_stop()
        cl.disconnect()
    time.sleep(LOCK_MS / 1000 + 0.5)
    c = subscribed_device(hub, dev, key)
    no_command(c)  # completed: never delivered again
    c.close()


def test_commands_sent_while_offline_arrive_after_subscribe(env):
    hub, svc, dev, key = env
    for i in range(3):
        assert send(svc, dev, b"m%d" % i).status == 201
    assert device_json(svc, dev)["cloudToDeviceMessageCount"] == 3
    c = connect_device(hub, dev, key)
    no_command(c)  # waits for the subscription
    assert c.subscribe([("$iothub/commands", raw.sub_options(1))]).reason_codes == [1]
    ps = [next_command(c) for _ in range(3)]
    assert [p.payload for p in ps] == [b"m0", b"m1", b"m2"]
    seqs = [int(p.users["sequence-no"]) for p in ps]
    assert seqs == sorted(seqs)
    for p in ps:
        c.puback(p.packet_id)
    time.sleep(0.3)
    assert device_json(svc, dev)["cloudToDeviceMessageCount"] == 0
    c.close()


def test_abandon_redelivers_with_count_plus_one(env):
    hub, svc, dev, key = env
    c = subscribed_device(hub, dev, key)
    assert send(svc, dev, b"again").status == 201
    p = next_command(c)
    assert p.users["delivery-count"] == "0"
    abandon(c, p)
    p2 = next_command(c)
    assert p2.payload == b"again" and p2.users["delivery-count"] == "1"
    assert p2.users["sequence-no"] == p.users["sequence-no"]
    c.puback(p2.packet_id)
    no_command(c)
    c.close()


def test_reject_dead_letters_with_feedback(env):
    hub, svc, dev, key = env
    c = subscribed_device(hub, dev, key)
    assert send(svc, dev, b"no", iothub_messageid="rej-1", iothub_ack="negative").status == 201
    reject(c, next_command(c))
    no_command(c, LOCK_MS / 1000 + 0.7)
    recs = feedback(svc)
    assert [(f["originalMessageId"], f["statusCode"], f["deviceId"]) for f in recs] == \
        [("rej-1", "Rejected", dev)]
    assert feedback(svc) == []  # reading consumes
    c.close()


def test_lock_expiry_redelivers_without_counting(env):
    hub, svc, dev, key = env
    c = subscribed_device(hub, dev, key)
    assert send(svc, dev, b"slow").status == 201
    p = next_command(c)
    t0 = time.monotonic()
    p2 = next_command(c, timeout=LOCK_MS / 1000 + 3)  # not acknowledged: the lock runs out
    assert time.monotonic() - t0 >= LOCK_MS / 1000 - 0.3
    assert p2.payload == b"slow" and p2.users["delivery-count"] == "0"
    c.puback(p.packet_id)  # stale: ignored
    c.puback(p2.packet_id)
    no_command(c, LOCK_MS / 1000 + 0.5)
    c.close()


def test_disconnect_returns_the_command_without_counting(env):
    hub, svc, dev, key = env
    c = subscribed_device(hub, dev, key, properties={"SessionExpiryInterval": 300})
    assert send(svc, dev, b"later").status == 201
    next_command(c)
    c.close()
    time.sleep(0.3)
    c2 = raw.RawClient(hub.port, hub.host, timeout=5.0)
    props = sas_connect_props(dev, key)
    props["SessionExpiryInterval"] = 300
    c2.connack = c2.connect(client_id=dev, clean_start=False, properties=props)
    assert c2.connack.session_present
    p = next_command(c2)  # the resumed subscription gets it again, once
    assert p.payload == b"later" and p.users["delivery-count"] == "0" and not p.dup
    c2.puback(p.packet_id)
    no_command(c2)
    c2.close()


def test_ttl_expiry_with_feedback(env):
    hub, svc, dev, key = env
    assert send(svc, dev, b"short", iothub_messageid="ttl-1", iothub_expiry="1",
                iothub_ack="full").status == 201
    time.sleep(1.5)
    assert device_json(svc, dev)["cloudToDeviceMessageCount"] == 0
    c = subscribed_device(hub, dev, key)
    no_command(c)
    assert [(f["originalMessageId"], f["statusCode"]) for f in feedback(svc)] == \
        [("ttl-1", "Expired")]
    c.close()


def test_expiry_validation(env):
    hub, svc, dev, key = env
    assert send(svc, dev, iothub_expiry="soon").status == 400
    assert send(svc, dev, iothub_expiry="999999").status == 400  # beyond 2 days
    assert send(svc, dev, iothub_expiry="2001-01-01T00:00:00Z").status == 400  # past
    assert send(svc, dev, iothub_expiry=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                      time.gmtime(time.time() + 3600))).status == 201
    assert send(svc, dev, iothub_ack="sometimes").status == 400
    # Not quite ISO 8601: a signed field, a day the month lacks. Each is
    # refused, not read as a nearby time.
    soon = time.gmtime(time.time() + 3600)
    assert send(svc, dev, iothub_expiry=time.strftime("%Y-%m-%dT-1:%M:%SZ", soon)).status == 400
    for created in ("2026-11-30T-1:00:00Z", "2026-11-30T 1:00:00Z", "2026-02-29T00:00:00Z",
                    "2026-11-30T00:00:00.Z"):
        r = send(svc, dev, iothub_creation_time=created)
        assert r.status == 400, created
    assert send(svc, dev, iothub_creation_time="2024-02-29T00:00:00.5Z").status == 201


def test_max_delivery_count_dead_letters(env):
    hub, svc, dev, key = env
    c = subscribed_device(hub, dev, key)
    assert send(svc, dev, b"flaky", iothub_messageid="dc-1", iothub_ack="negative").status == 201
    for i in range(10):
        p = next_command(c)
        assert p.users["delivery-count"] == str(i)
        abandon(c, p)
    no_command(c)
    assert [(f["originalMessageId"], f["statusCode"]) for f in feedback(svc)] == \
        [("dc-1", "DeliveryCountExceeded")]
    c.close()


def test_success_feedback_only_when_asked(env):
    hub, svc, dev, key = env
    c = subscribed_device(hub, dev, key)
    for mid, ack in (("s-none", "none"), ("s-pos", "positive"), ("s-neg", "negative"),
                     ("s-full", "full")):
        assert send(svc, dev, b"x", iothub_messageid=mid, iothub_ack=ack).status == 201
        c.puback(next_command(c).packet_id)
    time.sleep(0.3)
    assert sorted(f["originalMessageId"] for f in feedback(svc)) == ["s-full", "s-pos"]
    c.close()


def test_queue_full_and_too_large(env):
    hub, svc, dev, key = env
    for i in range(50):
        assert send(svc, dev, b"%d" % i).status == 201
    r = send(svc, dev, b"one too many")
    assert r.status == 403 and r.error_code == "DeviceMaximumQueueDepthExceeded", r
    assert device_json(svc, dev)["cloudToDeviceMessageCount"] == 50
    other = Devices(hub).new_sas_device("c2dbig")[0]
    r = send(svc, other, b"x" * (64 * 1024 + 1))
    assert r.status == 413 and r.error_code == "MessageTooLarge", r
    r = send(svc, "no-such-device", b"x")
    assert r.status == 404 and r.error_code == "DeviceNotFound", r


def test_purge_with_feedback(env):
    hub, svc, dev, key = env
    for i in range(3):
        assert send(svc, dev, b"p", iothub_messageid="pg-%d" % i,
                    iothub_ack="full" if i == 0 else "none").status == 201
    r = svc.request("DELETE", "/devices/%s/commands" % dev)
    assert r.status == 200, r
    assert r.json() == {"deviceId": dev, "moduleId": None, "totalMessagesPurged": 3}
    assert device_json(svc, dev)["cloudToDeviceMessageCount"] == 0
    assert [(f["originalMessageId"], f["statusCode"]) for f in feedback(svc)] == [("pg-0", "Purged")]
    c = subscribed_device(hub, dev, key)
    no_command(c)
    c.close()
    assert svc.request("DELETE", "/devices/nobody/commands").status == 404


def test_needs_service_connect(env):
    hub, svc, dev, key = env
    reader = ServiceClient(hub, connstr=None)
    reader.policy, reader.key = "registryRead", _policy_key(hub, "registryRead")
    assert send(reader, dev).status == 403


def _policy_key(hub, name):
    r = ServiceClient(hub).request("GET", "/iothubd/policies")
    for p in r.json():
        if p.get("keyName", p.get("name")) == name:
            return p.get("primaryKey") or p["symmetricKey"]["primaryKey"]
    raise AssertionError(r.json())


def test_commands_survive_sigkill(c2d_hub, broker_factory):
    hub = c2d_hub
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device("c2dkill")
    svc = ServiceClient(hub)
    accepted = [send(svc, dev, b"k%d" % i).json()["sequenceNumber"] for i in range(5)]
    c = subscribed_device(hub, dev, key)
    first = next_command(c)
    c.puback(first.packet_id)  # one completed before the crash
    time.sleep(0.5)
    c.close()
    hub.proc.send_signal(signal.SIGKILL)
    hub.proc.wait(timeout=5)
    hub.start()
    svc = ServiceClient(hub)
    assert device_json(svc, dev)["cloudToDeviceMessageCount"] == 4
    c = subscribed_device(hub, dev, key)
    got = [next_command(c) for _ in range(4)]
    assert [int(p.users["sequence-no"]) for p in got] == accepted[1:]
    for p in got:
        c.puback(p.packet_id)
    no_command(c)
    c.close()


def test_module_gets_no_commands(env):
    hub, svc, dev, key = env
    m = Devices(hub).create_module(dev, "mod")
    mkey = m["authentication"]["symmetricKey"]["primaryKey"]
    assert send(svc, dev, b"for the device").status == 201
    c = subscribed_device(hub, dev + "/mod", mkey)
    no_command(c)
    c.close()


# ---- command line -------------------------------------------------------------

def cli(hub, *args):
    import subprocess
    r = subprocess.run([IOTHUB_CLI, "--url", hub.url, "--connection-string", hub.owner_connstr,
                        *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def test_cli_send_purge_feedback(env):
    hub, svc, dev, key = env
    if not os.path.exists(IOTHUB_CLI):
        pytest.skip("iothub CLI not built")
    rc, out, err = cli(hub, "c2d", "send", dev, "--body", "hi", "--props", "a=1", "b=2",
                       "--message-id", "cli-1", "--ack", "full", "--expiry", "600")
    assert rc == 0, err
    assert "cli-1" in out
    c = subscribed_device(hub, dev, key)
    p = next_command(c)
    assert p.payload == b"hi" and p.users["@a"] == "1" and p.users["@b"] == "2"
    assert p.users["message-id"] == "cli-1"
    c.puback(p.packet_id)
    time.sleep(0.3)
    rc, out, err = cli(hub, "--json", "c2d", "feedback")
    assert rc == 0 and "cli-1" in out and "Success" in out, (out, err)
    c.close()
    assert cli(hub, "c2d", "send", dev, "--body", "x")[0] == 0
    rc, out, err = cli(hub, "--json", "c2d", "purge", dev)
    assert rc == 0 and '"totalMessagesPurged": 1' in out.replace(":1", ": 1"), (out, err)
    rc, out, err = cli(hub, "c2d", "send", dev, "--body", "x", "--ack", "maybe")
    assert rc == 2, (out, err)


def test_crash_under_load_loses_nothing_and_repeats_no_completed_command(c2d_hub):
    """SIGKILL while commands are being sent and completed: every command the
    service accepted (201) was completed before the crash or is delivered
    after it; none completed well before the crash (one commit window, here
    0.5 s) comes back."""
    import threading
    hub = c2d_hub
    dev, key, _ = Devices(hub).new_sas_device("c2dload")
    accepted, stop = [], threading.Event()

    def sender():
        svc = ServiceClient(hub)
        i = 0
        while not stop.is_set():
            try:
                r = send(svc, dev, b"load-%d" % i)
            except OSError:
                return
            if r.status == 201:
                accepted.append(r.json()["sequenceNumber"])
            i += 1

    c = subscribed_device(hub, dev, key)
    completed = {}
    t = threading.Thread(target=sender)
    t.start()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        for p in c.recv_all(0.05):
            if p.type == raw.PUBLISH:
                c.puback(p.packet_id)
                completed[int(user_props(p.properties)["sequence-no"])] = time.monotonic()
    hub.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    hub.proc.wait(timeout=5)
    stop.set()
    t.join(timeout=10)
    c.close()
    hub.start()
    c = subscribed_device(hub, dev, key)
    after = set()
    while True:
        try:
            p = c.recv(1.5)
        except raw.Timeout:
            break
        if p.type == raw.PUBLISH:
            after.add(int(user_props(p.properties)["sequence-no"]))
            c.puback(p.packet_id)
    c.close()
    assert len(accepted) > 5 and completed
    lost = set(accepted) - set(completed) - after
    assert lost == set()  # nothing lost
    early = {s for s, when in completed.items() if when < killed_at - 0.5}
    assert early & after == set()  # nothing completed comes back

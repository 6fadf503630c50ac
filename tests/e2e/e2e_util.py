"""Shared helpers for the e2e suite: target selection, a thin synchronous
wrapper around paho-mqtt 1.6.1, and raw-client helpers."""

import os
import queue
import subprocess
import threading
import time
import uuid

import pytest
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes  # noqa: F401 (re-exported for tests)
from paho.mqtt.subscribeoptions import SubscribeOptions

import mqtt5raw as raw

TARGET = os.environ.get("IOTHUBD_TEST_TARGET", "iothubd").strip().lower()
if TARGET not in ("iothubd", "mosquitto"):
    raise RuntimeError("IOTHUBD_TEST_TARGET must be 'iothubd' or 'mosquitto', not %r" % TARGET)
IS_MOSQUITTO = TARGET == "mosquitto"

iothubd_only = pytest.mark.skipif(IS_MOSQUITTO, reason="iothubd-specific feature")

TIMEOUT = 5.0


def uid(prefix="c"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


def utopic(prefix="t"):
    """A unique topic so tests never see each other's traffic."""
    return "%s/%s" % (prefix, uuid.uuid4().hex[:10])


def props(packet_type, **kw):
    """Build a paho Properties object: props(PacketTypes.PUBLISH, MessageExpiryInterval=5)."""
    p = Properties(packet_type)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


class PahoClient:
    """Synchronous wrapper around a paho client with a background network loop."""

    def __init__(self, broker, client_id=None, protocol=5, clean_start=True, keepalive=60,
                 properties=None, will=None, username=None, password=None, connect=True,
                 expect_rc=0):
        self.broker = broker
        self.protocol = mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311
        self.client_id = uid("paho") if client_id is None else client_id
        if self.protocol == mqtt.MQTTv5:
            self.c = mqtt.Client(self.client_id, protocol=self.protocol)
        else:
            self.c = mqtt.Client(self.client_id, protocol=self.protocol, clean_session=clean_start)
        self.clean_start = clean_start
        self.keepalive = keepalive
        self.connect_properties = properties
        self.messages = queue.Queue()
        self.connacks = queue.Queue()
        self.subacks = {}
        self.unsubacks = {}
        self.disconnects = queue.Queue()
        self._lock = threading.Lock()
        self._events = {}
        if will:
            self.c.will_set(will["topic"], will.get("payload"), will.get("qos", 0),
                            will.get("retain", False), will.get("properties"))
        if username is not None:
            self.c.username_pw_set(username, password)
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_disconnect = lambda c, u, rc, *a: self.disconnects.put(rc)
        if connect:
            self.connect(expect_rc=expect_rc)

    def _on_connect(self, c, u, flags, rc, properties=None):
        self.connacks.put((flags, rc, properties))

    def _on_subscribe(self, c, u, mid, *args):
        self.subacks[mid] = args[0]

    def _on_unsubscribe(self, c, u, mid, *args):
        self.unsubacks[mid] = args

    def connect(self, expect_rc=0):
        kw = {}
        if self.protocol == mqtt.MQTTv5:
            kw["clean_start"] = self.clean_start
            kw["properties"] = self.connect_properties
        self.c.connect(self.broker.host, self.broker.port, self.keepalive, **kw)
        self.c.loop_start()
        flags, rc, properties = self.connacks.get(timeout=TIMEOUT)
        self.session_present = bool(flags.get("session present"))
        self.connack_properties = properties
        if expect_rc is not None:
            assert rc == expect_rc, "CONNACK rc %s" % rc
        return rc

    def subscribe(self, topic, qos=0, options=None, properties=None):
        if self.protocol == mqtt.MQTTv5:
            opts = options or SubscribeOptions(qos=qos)
            res, mid = self.c.subscribe(topic, options=opts, properties=properties)
        else:
            res, mid = self.c.subscribe(topic, qos)
        assert res == mqtt.MQTT_ERR_SUCCESS
        deadline = time.monotonic() + TIMEOUT
        while mid not in self.subacks:
            assert time.monotonic() < deadline, "no SUBACK"
            time.sleep(0.01)
        granted = self.subacks[mid]
        return granted

    def unsubscribe(self, topic):
        res, mid = self.c.unsubscribe(topic)
        deadline = time.monotonic() + TIMEOUT
        while mid not in self.unsubacks:
            assert time.monotonic() < deadline, "no UNSUBACK"
            time.sleep(0.01)
        return self.unsubacks[mid]

    def publish(self, topic, payload=b"", qos=0, retain=False, properties=None, wait=True):
        info = self.c.publish(topic, payload, qos, retain, properties)
        if wait and qos:
            info.wait_for_publish(timeout=TIMEOUT)
            assert info.is_published(), "publish of %s not acknowledged" % topic
        return info

    def get(self, timeout=TIMEOUT):
        """Next received message (paho MQTTMessage); fails the test on timeout."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            pytest.fail("no message received within %ss" % timeout)

    def get_n(self, n, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail("received %d of %d messages: %r" % (
                    len(out), n, [(m.topic, m.payload) for m in out]))
            try:
                out.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                pass
        return out

    def drain(self, timeout=0.5):
        """All messages received until `timeout` passes quietly."""
        out = []
        while True:
            try:
                out.append(self.messages.get(timeout=timeout))
            except queue.Empty:
                return out

    def assert_no_message(self, timeout=0.7):
        msgs = self.drain(timeout)
        assert not msgs, "unexpected messages: %r" % [(m.topic, m.payload) for m in msgs]

    def disconnect(self, reasoncode=None, properties=None):
        try:
            if reasoncode is not None:
                self.c.disconnect(reasoncode=reasoncode, properties=properties)
            else:
                self.c.disconnect()
        finally:
            self.c.loop_stop()

    def kill(self):
        """Drop the TCP connection without DISCONNECT (abnormal disconnect)."""
        self.c.loop_stop()
        try:
            self.c.socket().close()
        except Exception:
            pass


# ------------------------------------------------------------ raw helpers
def raw_client(broker, version=raw.MQTT5, timeout=TIMEOUT):
    return raw.RawClient(broker.port, broker.host, version=version, timeout=timeout)


def raw_connect(broker, client_id=None, version=raw.MQTT5, **kw):
    """Open a raw client and complete CONNECT/CONNACK(success)."""
    c = raw_client(broker, version)
    c.client_id = uid("raw") if client_id is None else client_id
    c.connack = c.connect(client_id=c.client_id, **kw)
    assert c.connack.type == raw.CONNACK
    return c


def collect_publishes(c, timeout=1.0, ack=True):
    """Receive PUBLISH packets until quiet for `timeout`; acknowledge them (QoS 1/2)."""
    out = []
    while True:
        try:
            p = c.recv(timeout)
        except (raw.Timeout, raw.ConnectionClosed):
            return out
        if p.type == raw.PUBLISH:
            out.append(p)
            if ack and p.qos == 1:
                c.puback(p.packet_id)
            elif ack and p.qos == 2:
                c.pubrec(p.packet_id)
        elif p.type == raw.PUBREL and ack:
            c.pubcomp(p.packet_id)


def raw_publish_qos(c, topic, payload, qos, properties=None, retain=False):
    """Publish from a raw client and complete the QoS handshake; returns the
    final ack packet (PUBACK / PUBREC) or None for QoS 0."""
    pid = c.publish(topic, payload, qos=qos, properties=properties, retain=retain)
    if qos == 0:
        return None
    if qos == 1:
        ack = c.expect(raw.PUBACK, stash=True)
        assert ack.packet_id == pid
        return ack
    rec = c.expect(raw.PUBREC, stash=True)
    assert rec.packet_id == pid
    c.pubrel(pid)
    comp = c.expect(raw.PUBCOMP, stash=True)
    assert comp.packet_id == pid
    return rec


def assert_server_closes(c, allowed_rcs, timeout=TIMEOUT, require_disconnect=None):
    """Wait for the server to close `c`.  If it sends a DISCONNECT first, its
    reason code must be in `allowed_rcs`.  On iothubd a DISCONNECT is required
    (unless require_disconnect=False); Mosquitto may just close."""
    if require_disconnect is None:
        require_disconnect = not IS_MOSQUITTO
    try:
        pkts = c.recv_until_closed(timeout)
    except raw.Timeout:
        pytest.fail("server did not close the connection within %ss" % timeout)
    discs = [p for p in pkts if p.type == raw.DISCONNECT]
    others = [p for p in pkts if p.type != raw.DISCONNECT]
    assert not others or all(p.type == raw.PUBLISH for p in others), "unexpected packets: %r" % others
    if discs:
        assert discs[-1].reason_code in allowed_rcs, "DISCONNECT rc 0x%02x not in %s" % (
            discs[-1].reason_code, ["0x%02x" % r for r in allowed_rcs])
    elif require_disconnect:
        pytest.fail("connection closed without a DISCONNECT packet (expected one of %s)" % (
            ["0x%02x" % r for r in allowed_rcs]))
    return discs[-1] if discs else None


def assert_broker_healthy(broker):
    """A fresh client can connect, subscribe, publish and receive."""
    topic = utopic("health")
    c = raw_connect(broker)
    assert c.subscribe(topic, qos=1).reason_codes == [1]
    raw_publish_qos(c, topic, b"ok", 1)
    p = c.expect(raw.PUBLISH)
    assert p.topic == topic and p.payload == b"ok"
    c.puback(p.packet_id)
    c.disconnect()


def run_cli(args, timeout=10):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)

"""Sessions: offline queueing, redelivery, session/message expiry, take-over,
will messages (incl. will delay), keep alive."""

import time

import pytest

import mqtt5raw as raw
from e2e_util import (IS_MOSQUITTO, PahoClient, PacketTypes, collect_publishes, props,
                      raw_client, raw_connect, raw_publish_qos, uid, utopic)

PERSIST = {"SessionExpiryInterval": 300}


@pytest.fixture
def broker(broker_factory):
    """iothubd: check session expiry / will delay timers every 200 ms so the
    timing assertions below have margin (ignored for mosquitto)."""
    return broker_factory(session_expiry_check_ms=200)


def reconnect(broker, client_id, clean_start=False, properties=PERSIST, **kw):
    c = raw_client(broker)
    c.client_id = client_id
    c.connack = c.connect(client_id=client_id, clean_start=clean_start, properties=properties, **kw)
    return c


# ------------------------------------------------------------ offline queueing
def test_offline_messages_queued_and_delivered_with_session_present(broker):
    topic, cid = utopic("q"), uid("offline")
    c = raw_connect(broker, client_id=cid, properties=PERSIST)
    assert not c.connack.session_present
    c.subscribe(topic, qos=2)
    c.disconnect()
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"q1", 1)
    raw_publish_qos(pub, topic, b"q2", 2)
    raw_publish_qos(pub, topic, b"q1b", 1)
    c = reconnect(broker, cid)
    assert c.connack.session_present
    got = collect_publishes(c, 0.7)
    assert [(p.payload, p.qos) for p in got] == [(b"q1", 1), (b"q2", 2), (b"q1b", 1)]
    assert all(not p.dup for p in got)
    # the subscription survived too
    raw_publish_qos(pub, topic, b"live", 1)
    assert [p.payload for p in collect_publishes(c, 0.5)] == [b"live"]


def test_offline_qos0_queueing_optional(broker):
    """QoS 0 messages for an offline session MAY be queued (MQTT-3.1.2-5 lets
    the server choose); QoS 1 must be."""
    topic, cid = utopic("q"), uid("offline")
    c = raw_connect(broker, client_id=cid, properties=PERSIST)
    c.subscribe(topic, qos=1)
    c.disconnect()
    pub = raw_connect(broker)
    pub.publish(topic, b"zero", qos=0)
    raw_publish_qos(pub, topic, b"one", 1)
    c = reconnect(broker, cid)
    assert c.connack.session_present
    got = [p.payload for p in collect_publishes(c, 0.7)]
    assert got in ([b"one"], [b"zero", b"one"])


def test_offline_queue_paho_clean_start_false(broker):
    topic, cid = utopic("q"), uid("paho-off")
    sess = props(PacketTypes.CONNECT, SessionExpiryInterval=120)
    c = PahoClient(broker, client_id=cid, clean_start=True, properties=sess)
    c.subscribe(topic, 1)
    c.disconnect()
    pub = PahoClient(broker)
    for i in range(3):
        pub.publish(topic, b"m%d" % i, 1)
    c = PahoClient(broker, client_id=cid, clean_start=False, properties=sess)
    assert c.session_present
    assert [m.payload for m in c.get_n(3)] == [b"m0", b"m1", b"m2"]
    c.disconnect()


def test_max_queued_messages_limit(broker_factory):
    """With max_queued_messages 5 the broker keeps at most 5 (it may keep
    fewer) for an offline session and drops the rest; never more."""
    broker = broker_factory(max_queued_messages=5)
    topic, cid = utopic("q"), uid("offline")
    c = raw_connect(broker, client_id=cid, properties=PERSIST)
    c.subscribe(topic, qos=1)
    c.disconnect()
    pub = raw_connect(broker)
    for i in range(20):
        raw_publish_qos(pub, topic, b"%d" % i, 1)
    c = reconnect(broker, cid)
    got = [p.payload for p in collect_publishes(c, 0.7)]
    assert 1 <= len(got) <= 5
    assert got == sorted(got, key=int)


# ------------------------------------------------------------ redelivery
def test_redelivery_qos1_with_dup_on_reconnect(broker):
    topic, cid = utopic("rd"), uid("rd1")
    c = raw_connect(broker, client_id=cid, properties=PERSIST)
    c.subscribe(topic, qos=1)
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"unacked", 1)
    first = c.expect(raw.PUBLISH)
    assert not first.dup
    c.close()  # no PUBACK, abnormal disconnect
    time.sleep(0.2)
    c = reconnect(broker, cid)
    assert c.connack.session_present
    again = c.expect(raw.PUBLISH)
    assert again.dup and again.packet_id == first.packet_id and again.payload == b"unacked"
    assert again.qos == 1
    c.puback(again.packet_id)
    assert collect_publishes(c, 0.5) == []
    # after the PUBACK it is not resent again
    c.disconnect()
    c = reconnect(broker, cid)
    assert collect_publishes(c, 0.5) == []


def test_redelivery_qos2_publish_with_dup_on_reconnect(broker):
    topic, cid = utopic("rd"), uid("rd2")
    c = raw_connect(broker, client_id=cid, properties=PERSIST)
    c.subscribe(topic, qos=2)
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"unrec", 2)
    first = c.expect(raw.PUBLISH)
    c.close()  # no PUBREC
    time.sleep(0.2)
    c = reconnect(broker, cid)
    assert c.connack.session_present
    again = c.expect(raw.PUBLISH)
    assert again.dup and again.packet_id == first.packet_id and again.qos == 2
    c.pubrec(again.packet_id)
    rel = c.expect(raw.PUBREL)
    assert rel.packet_id == again.packet_id
    c.pubcomp(rel.packet_id)
    assert collect_publishes(c, 0.5) == []


def test_redelivery_pubrel_resent_on_reconnect(broker):
    topic, cid = utopic("rd"), uid("rd3")
    c = raw_connect(broker, client_id=cid, properties=PERSIST)
    c.subscribe(topic, qos=2)
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"rel", 2)
    p = c.expect(raw.PUBLISH)
    c.pubrec(p.packet_id)
    rel = c.expect(raw.PUBREL)
    c.close()  # no PUBCOMP
    time.sleep(0.2)
    c = reconnect(broker, cid)
    assert c.connack.session_present
    pkts = c.recv_all(0.7)
    assert [(x.type, x.packet_id) for x in pkts] == [(raw.PUBREL, rel.packet_id)], pkts
    c.pubcomp(rel.packet_id)
    assert c.recv_all(0.4) == []


@pytest.mark.skipif(IS_MOSQUITTO, reason="Mosquitto 2.0.11 resends everything at once")
def test_redelivery_paced_by_the_new_receive_maximum(broker):
    """Resends obey the resumed connection's Receive Maximum [MQTT-3.3.4-9],
    in their first order and with their packet ids [MQTT-4.4.0-1]."""
    topic, cid = utopic("rd"), uid("rd4")
    c = raw_connect(broker, client_id=cid, properties=PERSIST)
    c.subscribe(topic, qos=1)
    pub = raw_connect(broker)
    for i in range(3):
        raw_publish_qos(pub, topic, b"m%d" % i, 1)
    first = [c.expect(raw.PUBLISH) for _ in range(3)]
    c.close()  # none acknowledged
    time.sleep(0.2)
    c = reconnect(broker, cid, properties=dict(PERSIST, ReceiveMaximum=1))
    for sent in first:
        pkts = c.recv_all(0.5)
        assert [(p.packet_id, p.dup, p.payload) for p in pkts] == \
            [(sent.packet_id, True, sent.payload)], pkts
        c.puback(sent.packet_id)
    assert c.recv_all(0.4) == []


@pytest.mark.skipif(IS_MOSQUITTO, reason="Mosquitto 2.0.11 keeps the slot of a discarded resend")
def test_redelivery_too_large_for_the_new_connection_is_completed(broker):
    """A resend over the resumed connection's Maximum Packet Size is
    discarded as if sent [MQTT-3.1.2-25]: not sent then, nor ever again,
    and it frees its slot of the window."""
    topic, cid = utopic("rd"), uid("rd5")
    c = raw_connect(broker, client_id=cid, properties=PERSIST)
    c.subscribe(topic, qos=1)
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"x" * 500, 1)
    c.expect(raw.PUBLISH)
    c.disconnect()  # not acknowledged
    c = reconnect(broker, cid, properties=dict(PERSIST, ReceiveMaximum=1,
                                                MaximumPacketSize=200))
    assert c.recv_all(0.5) == []
    raw_publish_qos(pub, topic, b"small", 1)
    small = c.expect(raw.PUBLISH)
    assert small.payload == b"small" and not small.dup
    c.puback(small.packet_id)
    c.disconnect()
    c = reconnect(broker, cid)
    assert c.recv_all(0.5) == []


def test_inbound_qos2_pubrel_after_reconnect_delivers_once(broker):
    """Client sends QoS 2 PUBLISH, gets PUBREC, reconnects, resends the PUBLISH
    with DUP and then PUBREL: the message is delivered exactly once."""
    topic, cid = utopic("rd"), uid("rd4")
    sub = raw_connect(broker)
    sub.subscribe(topic, qos=2)
    c = raw_connect(broker, client_id=cid, properties=PERSIST)
    c.publish(topic, b"exactly-once", qos=2, packet_id=77)
    assert c.expect(raw.PUBREC).packet_id == 77
    c.close()
    time.sleep(0.2)
    c = reconnect(broker, cid)
    assert c.connack.session_present
    c.publish(topic, b"exactly-once", qos=2, packet_id=77, dup=True)
    rec = c.expect(raw.PUBREC)
    assert rec.packet_id == 77
    c.pubrel(77)
    comp = c.expect(raw.PUBCOMP)
    assert comp.packet_id == 77 and comp.reason_code == 0
    got = collect_publishes(sub, 0.7)
    assert [p.payload for p in got] == [b"exactly-once"]


# ------------------------------------------------------------ session expiry
def test_session_expiry_session_gone_after_interval(broker):
    topic, cid = utopic("se"), uid("se")
    c = raw_connect(broker, client_id=cid, properties={"SessionExpiryInterval": 1})
    c.subscribe(topic, qos=1)
    c.disconnect()
    time.sleep(2.6)
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"late", 1)
    c = reconnect(broker, cid, properties={"SessionExpiryInterval": 1})
    assert not c.connack.session_present
    assert collect_publishes(c, 0.5) == []
    # the old subscription is gone
    raw_publish_qos(pub, topic, b"later", 1)
    assert collect_publishes(c, 0.5) == []


def test_session_kept_within_expiry_interval(broker):
    topic, cid = utopic("se"), uid("se")
    c = raw_connect(broker, client_id=cid, properties={"SessionExpiryInterval": 10})
    c.subscribe(topic, qos=1)
    c.disconnect()
    time.sleep(1.2)
    c = reconnect(broker, cid, properties={"SessionExpiryInterval": 10})
    assert c.connack.session_present


def test_session_expiry_zero_ends_on_disconnect(broker):
    cid = uid("se0")
    c = raw_connect(broker, client_id=cid)  # no SessionExpiryInterval = 0
    c.subscribe(utopic(), qos=1)
    c.disconnect()
    time.sleep(0.2)
    c = reconnect(broker, cid, properties=None)
    assert not c.connack.session_present


def test_session_expiry_set_on_disconnect(broker):
    """DISCONNECT may raise a non-zero Session Expiry Interval."""
    cid = uid("sed")
    c = raw_connect(broker, client_id=cid, properties={"SessionExpiryInterval": 5})
    c.subscribe(utopic(), qos=1)
    c.disconnect(properties={"SessionExpiryInterval": 0})
    time.sleep(0.3)
    c = reconnect(broker, cid)
    assert not c.connack.session_present


def test_clean_start_discards_session(broker):
    topic, cid = utopic("cs"), uid("cs")
    c = raw_connect(broker, client_id=cid, properties=PERSIST)
    c.subscribe(topic, qos=1)
    c.disconnect()
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"queued", 1)
    c = reconnect(broker, cid, clean_start=True)
    assert not c.connack.session_present
    assert collect_publishes(c, 0.5) == []


# ------------------------------------------------------------ message expiry
def test_message_expiry_expired_not_delivered_to_offline_session(broker):
    topic, cid = utopic("me"), uid("me")
    c = raw_connect(broker, client_id=cid, properties=PERSIST)
    c.subscribe(topic, qos=1)
    c.disconnect()
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"short", 1, properties={"MessageExpiryInterval": 1})
    raw_publish_qos(pub, topic, b"long", 1, properties={"MessageExpiryInterval": 30})
    raw_publish_qos(pub, topic, b"forever", 1)
    time.sleep(2.5)
    c = reconnect(broker, cid)
    assert c.connack.session_present
    got = collect_publishes(c, 0.7)
    assert [p.payload for p in got] == [b"long", b"forever"]
    remaining = got[0].properties.get("MessageExpiryInterval")
    assert remaining is not None and 25 <= remaining <= 28, remaining  # 30 - ~2.5 s
    assert "MessageExpiryInterval" not in got[1].properties


def test_message_expiry_interval_forwarded_online(broker):
    topic = utopic("me")
    sub = raw_connect(broker)
    sub.subscribe(topic, qos=1)
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"x", 1, properties={"MessageExpiryInterval": 100})
    p = sub.expect(raw.PUBLISH)
    assert p.properties.get("MessageExpiryInterval") in (99, 100)


def test_message_expiry_retained_message_expires(broker):
    topic = utopic("me")
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"brief", 1, retain=True, properties={"MessageExpiryInterval": 1})
    sub = raw_connect(broker)
    sub.subscribe(topic, qos=1)
    p = sub.expect(raw.PUBLISH)
    assert p.payload == b"brief" and p.properties.get("MessageExpiryInterval") in (0, 1)
    sub.puback(p.packet_id)
    time.sleep(2.2)
    sub2 = raw_connect(broker)
    sub2.subscribe(topic, qos=1)
    assert collect_publishes(sub2, 0.5) == []


# ------------------------------------------------------------ session take-over
def assert_taken_over(old):
    """MQTT-3.1.4-3: the old connection gets DISCONNECT 0x8E and is closed.
    Mosquitto 2.0.11 just closes the socket (0x8E was added in 2.0.15,
    eclipse-mosquitto/mosquitto#2340, #2607), so tolerate that only there."""
    pkts = old.recv_until_closed(5)
    if IS_MOSQUITTO and not pkts:
        return
    assert [(p.type, p.reason_code) for p in pkts] == [(raw.DISCONNECT, raw.RC_SESSION_TAKEN_OVER)]


def test_session_takeover_old_connection_gets_disconnect_0x8e(broker):
    cid, topic = uid("to"), utopic("to")
    old = raw_connect(broker, client_id=cid, properties=PERSIST)
    old.subscribe(topic, qos=1)
    new = reconnect(broker, cid)
    assert new.connack.reason_code == 0 and new.connack.session_present
    assert_taken_over(old)
    # the new connection owns the session (subscription preserved)
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"to-new", 1)
    assert [p.payload for p in collect_publishes(new, 0.5)] == [b"to-new"]


def test_session_takeover_clean_start(broker):
    cid = uid("to")
    old = raw_connect(broker, client_id=cid)
    new = raw_connect(broker, client_id=cid, clean_start=True)
    assert not new.connack.session_present
    assert_taken_over(old)


def test_session_takeover_mqtt311_closes_old(broker):
    cid = uid("to")
    old = raw_connect(broker, client_id=cid, version=raw.MQTT311)
    raw_connect(broker, client_id=cid, version=raw.MQTT311)
    assert old.recv_until_closed(5) == []  # 3.1.1 has no server DISCONNECT


# ------------------------------------------------------------ will messages
def will_watcher(broker, topic):
    w = raw_connect(broker)
    w.subscribe(topic, qos=1)
    return w


def test_will_sent_on_abnormal_disconnect(broker):
    wt = utopic("will")
    w = will_watcher(broker, wt)
    c = raw_connect(broker, will={"topic": wt, "payload": b"gone", "qos": 1, "properties": {
        "UserProperty": [("k", "v")], "ContentType": "text/x", "ResponseTopic": "r/t",
        "CorrelationData": b"cd", "PayloadFormatIndicator": 1}})
    c.close()
    p = w.expect(raw.PUBLISH, timeout=5)
    assert (p.topic, p.payload, p.qos) == (wt, b"gone", 1)
    assert p.properties.get("UserProperty") == [("k", "v")]
    assert p.properties.get("ContentType") == "text/x"
    assert p.properties.get("ResponseTopic") == "r/t"
    assert p.properties.get("CorrelationData") == b"cd"
    assert p.properties.get("PayloadFormatIndicator") == 1


def test_will_not_sent_on_normal_disconnect(broker):
    wt = utopic("will")
    w = will_watcher(broker, wt)
    c = raw_connect(broker, will={"topic": wt, "payload": b"gone", "qos": 1})
    c.disconnect(reason_code=0x00)
    assert collect_publishes(w, 1.0) == []


def test_will_sent_on_disconnect_with_will_message_0x04(broker):
    wt = utopic("will")
    w = will_watcher(broker, wt)
    c = raw_connect(broker, will={"topic": wt, "payload": b"bye-with-will", "qos": 1})
    c.disconnect(reason_code=raw.RC_DISCONNECT_WITH_WILL)
    p = w.expect(raw.PUBLISH, timeout=5)
    assert p.payload == b"bye-with-will"


def test_will_retained(broker):
    wt = utopic("will")
    c = raw_connect(broker, will={"topic": wt, "payload": b"ret-will", "qos": 1, "retain": True})
    c.close()
    time.sleep(0.5)
    w = raw_connect(broker)
    w.subscribe(wt, qos=1)
    p = w.expect(raw.PUBLISH, timeout=5)
    assert p.payload == b"ret-will" and p.retain


def test_will_paho_abnormal_disconnect(broker):
    wt = utopic("will")
    w = PahoClient(broker)
    w.subscribe(wt, 2)
    c = PahoClient(broker, will={"topic": wt, "payload": b"paho-will", "qos": 2})
    c.kill()
    m = w.get()
    assert m.payload == b"paho-will" and m.qos == 2


def test_will_delay_interval_delays_will(broker):
    wt = utopic("will")
    w = will_watcher(broker, wt)
    c = raw_connect(broker, properties={"SessionExpiryInterval": 30},
                    will={"topic": wt, "payload": b"delayed", "qos": 1,
                          "properties": {"WillDelayInterval": 2}})
    start = time.monotonic()
    c.close()
    assert collect_publishes(w, 1.2, ack=False) == []
    p = w.expect(raw.PUBLISH, timeout=5)
    elapsed = time.monotonic() - start
    assert p.payload == b"delayed"
    assert 1.5 <= elapsed <= 4.5, elapsed


def test_will_delay_cancelled_by_reconnect(broker):
    wt, cid = utopic("will"), uid("wd")
    w = will_watcher(broker, wt)
    c = raw_connect(broker, client_id=cid, properties={"SessionExpiryInterval": 30},
                    will={"topic": wt, "payload": b"should-not-arrive", "qos": 1,
                          "properties": {"WillDelayInterval": 2}})
    c.close()
    time.sleep(0.4)
    c = reconnect(broker, cid, properties={"SessionExpiryInterval": 30})
    assert c.connack.session_present
    assert collect_publishes(w, 3.2) == []
    c.disconnect()
    assert collect_publishes(w, 0.5) == []


def test_will_sent_when_session_expires_before_will_delay(broker):
    wt = utopic("will")
    w = will_watcher(broker, wt)
    c = raw_connect(broker, properties={"SessionExpiryInterval": 1},
                    will={"topic": wt, "payload": b"session-ended", "qos": 1,
                          "properties": {"WillDelayInterval": 30}})
    c.close()
    p = w.expect(raw.PUBLISH, timeout=5)
    assert p.payload == b"session-ended"


# ------------------------------------------------------------ keep alive
def test_keepalive_timeout_disconnects_client_and_publishes_will(broker):
    wt = utopic("ka")
    w = will_watcher(broker, wt)
    c = raw_client(broker)
    start = time.monotonic()
    ack = c.connect(client_id=uid("ka"), keepalive=2,
                    will={"topic": wt, "payload": b"keepalive-expired", "qos": 1})
    assert ack.properties.get("ServerKeepAlive", 2) == 2
    pkts = c.recv_until_closed(8)
    elapsed = time.monotonic() - start
    assert 2.0 <= elapsed <= 6.0, elapsed  # 1.5 x 2 s, with some tolerance
    if pkts:
        assert [(p.type, p.reason_code) for p in pkts] == [(raw.DISCONNECT, raw.RC_KEEP_ALIVE_TIMEOUT)]
    p = w.expect(raw.PUBLISH, timeout=5)
    assert p.payload == b"keepalive-expired"


def test_keepalive_pingreq_keeps_connection(broker):
    c = raw_connect(broker, keepalive=1)
    for _ in range(5):
        time.sleep(0.5)
        c.pingreq()
        assert c.expect(raw.PINGRESP, timeout=2)
    assert not c.closed


def test_server_keep_alive_caps_client_keepalive(broker_factory):
    broker = broker_factory(max_keepalive=60)
    c = raw_client(broker)
    ack = c.connect(client_id=uid(), keepalive=100)
    assert ack.properties.get("ServerKeepAlive") == 60
    c = raw_client(broker)
    ack = c.connect(client_id=uid(), keepalive=30)
    assert ack.properties.get("ServerKeepAlive", 30) == 30


def test_server_keep_alive_for_keepalive_zero(broker_factory):
    """Client asks Keep Alive 0 (no keep alive) on a broker with max 60: the
    server overrides it with Server Keep Alive 60 (MQTT-3.2.2-21: the client
    must then use 60).  Mosquitto 2.0.11 behaves the same way for v5."""
    broker = broker_factory(max_keepalive=60)
    c = raw_client(broker)
    ack = c.connect(client_id=uid(), keepalive=0)
    assert ack.reason_code == 0
    assert ack.properties.get("ServerKeepAlive") == 60


@pytest.mark.skipif(IS_MOSQUITTO, reason="iothubd's --connect-timeout-ms")
@pytest.mark.parametrize("first_bytes", [b"", b"\x10\x20\x00\x04MQ"], ids=["silent", "incomplete"])
def test_connect_timeout_closes_silent_or_incomplete_connection(broker_factory, first_bytes):
    """A connection that does not complete CONNECT in time is closed without
    a CONNACK, whether it sent nothing or only part of the packet."""
    import socket
    broker = broker_factory(extra_args=["--connect-timeout-ms", "500"])
    s = socket.create_connection((broker.host, broker.port))
    s.sendall(first_bytes)
    s.settimeout(5)
    start = time.monotonic()
    assert s.recv(100) == b""
    assert 0.4 <= time.monotonic() - start <= 3.0
    s.close()
    raw_connect(broker).pingreq()  # still serving

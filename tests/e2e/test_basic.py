"""Basic MQTT 5 behaviour: publish/subscribe, retained messages, client ids,
properties passed through, unsubscribe, $-topics."""

import pytest

import mqtt5raw as raw
from e2e_util import (PahoClient, PacketTypes, SubscribeOptions, collect_publishes,
                      props, raw_connect, raw_publish_qos, utopic, uid, raw_client)


# ------------------------------------------------------------ publish / subscribe
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_subscribe_paho(broker, qos):
    topic = utopic()
    sub = PahoClient(broker)
    assert sub.subscribe(topic, qos)[0].value == qos
    pub = PahoClient(broker)
    for i in range(5):
        pub.publish(topic, b"msg%d" % i, qos=qos)
    msgs = sub.get_n(5)
    assert [m.payload for m in msgs] == [b"msg%d" % i for i in range(5)]  # ordered per topic
    assert all(m.qos == qos and m.topic == topic and not m.retain for m in msgs)
    sub.assert_no_message(0.3)
    pub.disconnect()
    sub.disconnect()


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_subscribe_raw_handshake(broker, qos):
    """Check the exact QoS handshakes on the wire in both directions."""
    topic = utopic()
    sub = raw_connect(broker)
    suback = sub.subscribe(topic, qos=qos)
    assert suback.reason_codes == [qos]
    pub = raw_connect(broker)
    ack = raw_publish_qos(pub, topic, b"hello", qos)
    if qos:
        assert ack.reason_code == 0
    p = sub.expect(raw.PUBLISH)
    assert (p.topic, p.payload, p.qos, p.retain, p.dup) == (topic, b"hello", qos, False, False)
    if qos == 0:
        assert p.packet_id is None
    elif qos == 1:
        assert p.packet_id != 0
        sub.puback(p.packet_id)
    else:
        sub.pubrec(p.packet_id)
        rel = sub.expect(raw.PUBREL)
        assert rel.packet_id == p.packet_id and rel.flags == 2 and rel.reason_code == 0
        sub.pubcomp(p.packet_id)
    # connection still healthy
    sub.pingreq()
    assert sub.expect(raw.PINGRESP)
    sub.disconnect()
    pub.disconnect()


def test_qos_downgraded_to_subscription_qos(broker):
    topic = utopic()
    sub = raw_connect(broker)
    sub.subscribe(topic, qos=0)
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"x", 2)
    p = sub.expect(raw.PUBLISH)
    assert p.qos == 0
    sub2 = raw_connect(broker)
    sub2.subscribe(topic + "/+", qos=1)
    raw_publish_qos(pub, topic + "/a", b"y", 2)
    p = sub2.expect(raw.PUBLISH)
    assert p.qos == 1


def test_puback_no_matching_subscribers_or_success(broker):
    """A QoS 1 PUBLISH with no subscribers gets PUBACK 0x00 or 0x10."""
    pub = raw_connect(broker)
    ack = raw_publish_qos(pub, utopic("nobody"), b"x", 1)
    assert ack.reason_code in (0x00, 0x10)
    rec = raw_publish_qos(pub, utopic("nobody"), b"x", 2)
    assert rec.reason_code in (0x00, 0x10)


def test_wildcard_subscriptions(broker):
    base = utopic("wc")
    sub = raw_connect(broker)
    sub.subscribe([base + "/+/b", base + "/#"], qos=0)
    single = raw_connect(broker)
    single.subscribe(base + "/+", qos=0)
    pub = raw_connect(broker)
    for t in (base, base + "/a", base + "/a/b", base + "/a/c/d"):
        pub.publish(t, t.encode())
    got = collect_publishes(single, 0.5)
    assert sorted(p.topic for p in got) == [base + "/a"]
    got = collect_publishes(sub, 0.5)
    topics = [p.topic for p in got]
    # "#" also matches the parent level; a/b matches both filters (1 or 2 copies)
    assert set(topics) == {base, base + "/a", base + "/a/b", base + "/a/c/d"}


# ------------------------------------------------------------ retained messages
def test_retained_message_received_on_subscribe(broker):
    topic = utopic("ret")
    pub = PahoClient(broker)
    pub.publish(topic, b"retained-1", qos=1, retain=True)
    sub = raw_connect(broker)
    sub.subscribe(topic, qos=1)
    p = sub.expect(raw.PUBLISH)
    assert p.retain and p.payload == b"retained-1" and p.qos == 1
    sub.puback(p.packet_id)
    # a live message to an existing subscription has retain=0 (RAP=0)
    pub.publish(topic, b"retained-2", qos=1, retain=True)
    p = sub.expect(raw.PUBLISH)
    assert not p.retain and p.payload == b"retained-2"
    sub.puback(p.packet_id)
    # the newest retained message replaced the old one
    sub2 = raw_connect(broker)
    sub2.subscribe(topic, qos=0)
    got = collect_publishes(sub2, 0.5)
    assert [(p.payload, p.retain) for p in got] == [(b"retained-2", True)]


def test_retained_message_wildcard_subscribe(broker):
    base = utopic("ret")
    pub = raw_connect(broker)
    for i in range(3):
        raw_publish_qos(pub, "%s/%d" % (base, i), b"r%d" % i, 1, retain=True)
    sub = raw_connect(broker)
    sub.subscribe(base + "/+", qos=1)
    got = collect_publishes(sub, 0.5)
    assert sorted(p.payload for p in got) == [b"r0", b"r1", b"r2"]
    assert all(p.retain for p in got)


def test_retained_message_cleared_by_empty_payload(broker):
    topic = utopic("ret")
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"keep-me", 1, retain=True)
    live = raw_connect(broker)
    live.subscribe(topic, qos=1)
    assert live.expect(raw.PUBLISH).payload == b"keep-me"
    raw_publish_qos(pub, topic, b"", 1, retain=True)
    # existing subscribers still get the zero-length message
    p = [x for x in collect_publishes(live, 0.5)]
    assert [x.payload for x in p] == [b""]
    sub = raw_connect(broker)
    sub.subscribe(topic, qos=1)
    assert collect_publishes(sub, 0.7) == []


# ------------------------------------------------------------ client identifiers
def test_zero_length_client_id_assigned_identifier(broker):
    c = raw_client(broker)
    ack = c.connect(client_id="", clean_start=True)
    assert ack.reason_code == 0
    assigned = ack.properties.get("AssignedClientIdentifier")
    assert assigned, "no Assigned Client Identifier in %r" % ack
    c2 = raw_client(broker)
    ack2 = c2.connect(client_id="", clean_start=True)
    assert ack2.properties["AssignedClientIdentifier"] != assigned
    # both still work independently
    for cl in (c, c2):
        cl.pingreq()
        cl.expect(raw.PINGRESP)


def test_zero_length_client_id_rejected_without_clean_session_mqtt311(broker):
    c = raw_client(broker, version=raw.MQTT311)
    ack = c.connect(client_id="", clean_start=False, expect_rc=None)
    assert ack.type == raw.CONNACK
    assert ack.reason_code == 0x02  # identifier rejected
    assert not ack.session_present
    assert c.is_closed(5)


def test_zero_length_client_id_accepted_mqtt311_clean_session(broker):
    c = raw_client(broker, version=raw.MQTT311)
    ack = c.connect(client_id="", clean_start=True)
    assert ack.reason_code == 0 and not ack.session_present


def test_connack_properties_sane(broker):
    c = raw_client(broker)
    ack = c.connect(client_id=uid())
    p = ack.properties
    assert not ack.session_present
    assert "AssignedClientIdentifier" not in p
    if "ReceiveMaximum" in p:
        assert p["ReceiveMaximum"] > 0
    if "MaximumQoS" in p:
        assert p["MaximumQoS"] in (0, 1)
    for k in ("RetainAvailable", "WildcardSubscriptionAvailable",
              "SubscriptionIdentifierAvailable", "SharedSubscriptionAvailable"):
        if k in p:
            assert p[k] in (0, 1)


# ------------------------------------------------------------ properties passed through
def test_user_properties_passed_through_in_order(broker):
    topic = utopic()
    sub = raw_connect(broker)
    sub.subscribe(topic, qos=1)
    pub = raw_connect(broker)
    ups = [("b", "2"), ("a", "1"), ("b", "1"), ("a", "1"), ("ключ", "值")]
    raw_publish_qos(pub, topic, b"x", 1, properties={"UserProperty": ups})
    p = sub.expect(raw.PUBLISH)
    assert p.properties.get("UserProperty") == ups
    sub.puback(p.packet_id)


def test_user_properties_paho(broker):
    topic = utopic()
    sub = PahoClient(broker)
    sub.subscribe(topic, 2)
    pub = PahoClient(broker)
    ups = [("z", "first"), ("a", "second"), ("z", "third")]
    pub.publish(topic, b"x", 2, properties=props(PacketTypes.PUBLISH, UserProperty=ups))
    m = sub.get()
    assert m.properties.UserProperty == ups


def test_request_response_topic_and_correlation_data(broker):
    req_topic, resp_topic = utopic("req"), utopic("resp")
    responder = raw_connect(broker)
    responder.subscribe(req_topic, qos=1)
    requester = raw_connect(broker)
    requester.subscribe(resp_topic, qos=1)
    corr = bytes(range(256)) + b"\x00\xff"
    raw_publish_qos(requester, req_topic, b"ping?", 1,
                    properties={"ResponseTopic": resp_topic, "CorrelationData": corr})
    req = responder.expect(raw.PUBLISH)
    responder.puback(req.packet_id)
    assert req.properties["ResponseTopic"] == resp_topic
    assert req.properties["CorrelationData"] == corr
    raw_publish_qos(responder, req.properties["ResponseTopic"], b"pong!", 1,
                    properties={"CorrelationData": req.properties["CorrelationData"]})
    resp = requester.expect(raw.PUBLISH)
    assert resp.topic == resp_topic and resp.payload == b"pong!"
    assert resp.properties["CorrelationData"] == corr
    assert "ResponseTopic" not in resp.properties


def test_payload_format_indicator_and_content_type_passed_through(broker):
    topic = utopic()
    sub = raw_connect(broker)
    sub.subscribe(topic, qos=2)
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, "héllo wörld".encode(), 2,
                    properties={"PayloadFormatIndicator": 1, "ContentType": "text/plain; charset=utf-8"})
    raw_publish_qos(pub, topic, b"\xff\xfe\x00", 2,
                    properties={"PayloadFormatIndicator": 0, "ContentType": "application/octet-stream"})
    raw_publish_qos(pub, topic, b"plain", 2)
    got = collect_publishes(sub, 0.7)
    assert len(got) == 3
    assert got[0].payload == "héllo wörld".encode()
    assert got[0].properties.get("PayloadFormatIndicator") == 1
    assert got[0].properties.get("ContentType") == "text/plain; charset=utf-8"
    assert got[1].properties.get("PayloadFormatIndicator", 0) == 0
    assert got[1].properties.get("ContentType") == "application/octet-stream"
    assert "ContentType" not in got[2].properties
    assert got[2].properties.get("PayloadFormatIndicator", 0) == 0


# ------------------------------------------------------------ unsubscribe
def test_unsubscribe_reason_codes(broker):
    topic = utopic()
    c = raw_connect(broker)
    c.subscribe([topic, topic + "/#"], qos=1)
    ack = c.unsubscribe([topic, utopic("never"), topic + "/#"])
    assert ack.reason_codes == [0x00, 0x11, 0x00]
    # nothing is delivered after unsubscribing
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"x", 1)
    raw_publish_qos(pub, topic + "/y", b"x", 1)
    assert collect_publishes(c, 0.5) == []
    # unsubscribing again: no subscription existed
    assert c.unsubscribe(topic).reason_codes == [0x11]


def test_unsubscribe_paho(broker):
    topic = utopic()
    sub = PahoClient(broker)
    sub.subscribe(topic, 1)
    pub = PahoClient(broker)
    pub.publish(topic, b"1", 1)
    assert sub.get().payload == b"1"
    sub.unsubscribe(topic)
    pub.publish(topic, b"2", 1)
    sub.assert_no_message(0.5)


# ------------------------------------------------------------ $-topics
def test_dollar_topics_not_matched_by_wildcards(broker):
    tail = uid("x")
    hash_sub = raw_connect(broker)
    hash_sub.subscribe("#", qos=0)
    plus_sub = raw_connect(broker)
    plus_sub.subscribe("+/" + tail, qos=0)
    plus_sub.subscribe("+/+/" + tail, qos=0)
    pub = raw_connect(broker)
    pub.publish("$iothubdtest/" + tail, b"dollar")
    pub.publish("$iothubdtest/a/" + tail, b"dollar")
    pub.publish("normal/" + tail, b"marker")
    got = collect_publishes(plus_sub, 0.7)
    assert [p.topic for p in got] == ["normal/" + tail]
    got = [p for p in collect_publishes(hash_sub, 0.7) if p.topic.endswith(tail)]
    assert [p.topic for p in got] == ["normal/" + tail]
    # $SYS (if the broker has it) is not matched by "#" either
    assert all(not p.topic.startswith("$") for p in got)


def test_dollar_topic_explicit_subscription(broker):
    """An explicit filter starting with $ does match (if the broker accepts
    $-topic publishes at all; otherwise nothing is delivered)."""
    topic = "$iothubdtest/" + uid("x")
    sub = raw_connect(broker)
    sub.subscribe("$iothubdtest/#", qos=0)
    pub = raw_connect(broker)
    pub.publish(topic, b"dollar")
    got = collect_publishes(sub, 0.5)
    assert [p.topic for p in got] in ([topic], [])


# ------------------------------------------------------------ overlapping / ids
def test_overlapping_subscriptions(broker):
    """Either one copy per matching subscription (each at its own QoS) or one
    copy at the maximum QoS of the matching subscriptions (MQTT-3.3.4-2)."""
    base = utopic("ovl")
    sub = raw_connect(broker)
    sub.subscribe([(base + "/#", raw.sub_options(2)), (base + "/+", raw.sub_options(1))])
    pub = raw_connect(broker)
    raw_publish_qos(pub, base + "/a", b"both", 2)
    got = collect_publishes(sub, 0.7)
    assert got and all(p.payload == b"both" for p in got)
    if len(got) == 1:
        assert got[0].qos == 2
    else:
        assert sorted(p.qos for p in got) == [1, 2]
    raw_publish_qos(pub, base + "/a/b", b"one", 2)
    got = collect_publishes(sub, 0.7)
    assert [(p.payload, p.qos) for p in got] == [(b"one", 2)]


def test_subscription_identifiers(broker):
    base = utopic("sid")
    sub = raw_connect(broker)
    assert sub.connack.properties.get("SubscriptionIdentifierAvailable", 1) == 1
    sub.subscribe(base + "/a", qos=1, properties={"SubscriptionIdentifier": 1})
    sub.subscribe(base + "/+", qos=1, properties={"SubscriptionIdentifier": 2})
    sub.subscribe(base + "/#", qos=1, properties={"SubscriptionIdentifier": 268435455})
    sub.subscribe(base + "/nosid", qos=1)
    pub = raw_connect(broker)
    raw_publish_qos(pub, base + "/b", b"b", 1)
    got = collect_publishes(sub, 0.7)
    ids = sorted(i for p in got for i in p.properties.get("SubscriptionIdentifier", []))
    assert ids == [2, 268435455]
    assert len(got) in (1, 2)
    raw_publish_qos(pub, base + "/a", b"a", 1)
    got = collect_publishes(sub, 0.7)
    ids = sorted(i for p in got for i in p.properties.get("SubscriptionIdentifier", []))
    assert ids == [1, 2, 268435455]
    if len(got) > 1:
        assert len(got) == 3 and all(len(p.properties["SubscriptionIdentifier"]) == 1 for p in got)
    raw_publish_qos(pub, base + "/c/d", b"cd", 1)
    got = collect_publishes(sub, 0.7)
    assert [p.properties.get("SubscriptionIdentifier") for p in got] == [[268435455]]
    # re-subscribing replaces the subscription's identifier
    sub.subscribe(base + "/#", qos=1, properties={"SubscriptionIdentifier": 7})
    raw_publish_qos(pub, base + "/c/d", b"cd", 1)
    got = collect_publishes(sub, 0.7)
    assert [p.properties.get("SubscriptionIdentifier") for p in got] == [[7]]
    # a subscription without identifier: no SubscriptionIdentifier property
    raw_publish_qos(pub, base + "/nosid/x", b"n", 1)
    raw_publish_qos(pub, base + "/nosid", b"n", 1)
    got = collect_publishes(sub, 0.7)
    ids = sorted(i for p in got for i in p.properties.get("SubscriptionIdentifier", []))
    assert ids == [2, 7, 7]


def test_subscription_identifier_on_retained_delivery(broker):
    topic = utopic("sid")
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"r", 1, retain=True)
    sub = raw_connect(broker)
    sub.subscribe(topic, qos=1, properties={"SubscriptionIdentifier": 42})
    p = sub.expect(raw.PUBLISH)
    assert p.retain and p.properties.get("SubscriptionIdentifier") == [42]


# ------------------------------------------------------------ shared subscriptions
def test_shared_subscription_distributes_each_message_once(broker):
    group, base = uid("g"), utopic("shared")
    members = [raw_connect(broker) for _ in range(2)]
    for m in members:
        assert m.subscribe("$share/%s/%s/#" % (group, base), qos=1).reason_codes == [1]
    normal = raw_connect(broker)
    normal.subscribe(base + "/#", qos=1)
    pub = raw_connect(broker)
    n = 20
    for i in range(n):
        raw_publish_qos(pub, "%s/%d" % (base, i % 3), b"%d" % i, 1)
    per_member = [collect_publishes(m, 0.7) for m in members]
    payloads = [p.payload for got in per_member for p in got]
    assert sorted(payloads) == sorted(b"%d" % i for i in range(n)), "each message exactly once"
    assert all(len(got) > 0 for got in per_member), "messages not distributed: %r" % [
        len(g) for g in per_member]
    for got in per_member:
        assert all(p.topic.startswith(base + "/") for p in got)
    # the non-shared subscriber gets everything
    assert len(collect_publishes(normal, 0.5)) == n


def test_shared_subscription_paho_and_unsubscribe(broker):
    group, topic = uid("g"), utopic("shared")
    a, b = PahoClient(broker), PahoClient(broker)
    a.subscribe("$share/%s/%s" % (group, topic), 1)
    b.subscribe("$share/%s/%s" % (group, topic), 1)
    b.unsubscribe("$share/%s/%s" % (group, topic))
    pub = PahoClient(broker)
    for i in range(6):
        pub.publish(topic, b"%d" % i, 1)
    assert sorted(m.payload for m in a.get_n(6)) == sorted(b"%d" % i for i in range(6))
    b.assert_no_message(0.3)


# ------------------------------------------------------------ subscription options
def test_subscription_option_no_local(broker):
    topic = utopic()
    c = raw_connect(broker)
    c.subscribe(topic, qos=1, no_local=True)
    other = raw_connect(broker)
    raw_publish_qos(c, topic, b"mine", 1)
    raw_publish_qos(other, topic, b"theirs", 1)
    got = collect_publishes(c, 0.7)
    assert [p.payload for p in got] == [b"theirs"]
    # without No Local the client receives its own messages
    c2 = raw_connect(broker)
    c2.subscribe(topic, qos=1)
    raw_publish_qos(c2, topic, b"echo", 1)
    got = collect_publishes(c2, 0.7)
    assert [p.payload for p in got] == [b"echo"]


def test_subscription_option_retain_as_published(broker):
    topic = utopic()
    rap = raw_connect(broker)
    rap.subscribe(topic, qos=1, retain_as_published=True)
    norap = raw_connect(broker)
    norap.subscribe(topic, qos=1, retain_as_published=False)
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"r", 1, retain=True)
    raw_publish_qos(pub, topic, b"n", 1, retain=False)
    got = collect_publishes(rap, 0.7)
    assert [(p.payload, p.retain) for p in got] == [(b"r", True), (b"n", False)]
    got = collect_publishes(norap, 0.7)
    assert [(p.payload, p.retain) for p in got] == [(b"r", False), (b"n", False)]
    raw_publish_qos(pub, topic, b"", 1, retain=True)


def test_subscription_option_retain_handling(broker):
    topic = utopic()
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"retained", 1, retain=True)
    c = raw_connect(broker)
    # 0: send retained messages at the time of every subscribe
    c.subscribe(topic, qos=1, retain_handling=0)
    assert [p.payload for p in collect_publishes(c, 0.5)] == [b"retained"]
    c.subscribe(topic, qos=1, retain_handling=0)
    assert [p.payload for p in collect_publishes(c, 0.5)] == [b"retained"]
    c.unsubscribe(topic)
    # 1: only if the subscription does not currently exist
    c.subscribe(topic, qos=1, retain_handling=1)
    assert [p.payload for p in collect_publishes(c, 0.5)] == [b"retained"]
    c.subscribe(topic, qos=1, retain_handling=1)
    assert collect_publishes(c, 0.5) == []
    c.unsubscribe(topic)
    # 2: never at subscribe time; live messages still delivered
    c.subscribe(topic, qos=1, retain_handling=2)
    assert collect_publishes(c, 0.5) == []
    raw_publish_qos(pub, topic, b"live", 1)
    assert [p.payload for p in collect_publishes(c, 0.5)] == [b"live"]


def test_subscription_options_paho_no_local(broker):
    topic = utopic()
    c = PahoClient(broker)
    c.subscribe(topic, options=SubscribeOptions(qos=1, noLocal=True))
    c.publish(topic, b"own", 1)
    c.assert_no_message(0.5)

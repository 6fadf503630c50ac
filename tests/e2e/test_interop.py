"""Interoperability: MQTT 3.1.1 clients (paho, mosquitto_pub/sub -V 311),
MQTT 5 command line clients (-V 5) and mixing protocol versions."""

import queue
import subprocess
import threading
import time

import pytest

import mqtt5raw as raw
from e2e_util import (PahoClient, PacketTypes, collect_publishes, props, raw_connect,
                      raw_publish_qos, run_cli, utopic, uid)

FMT = "MSG|%t|%q|%r|%C|%P|%p"


class CliSub:
    """mosquitto_sub in the background; waits until its SUBACK arrived."""

    def __init__(self, broker, topic, version, qos=0, count=None, extra=()):
        args = ["stdbuf", "-oL", "mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-V", version,
                "-t", topic, "-q", str(qos), "-d", "-W", "20", "-F", FMT, "-i", uid("msub")]
        if count:
            args += ["-C", str(count)]
        args += list(extra)
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        self.lines = queue.Queue()
        threading.Thread(target=self._reader, daemon=True).start()
        deadline = time.monotonic() + 5
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if "received SUBACK" in line:
                break

    def _reader(self):
        for line in self.p.stdout:
            self.lines.put(line.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def messages(self, n, timeout=8):
        """Return n parsed messages: dicts topic, qos, retain, ctype, uprops, payload."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if line.startswith("MSG|"):
                _, t, q, r, ct, up, payload = line.split("|", 6)
                out.append({"topic": t, "qos": int(q), "retain": r == "1", "ctype": ct,
                            "uprops": up, "payload": payload})
        assert len(out) == n, "mosquitto_sub got %d of %d messages: %r" % (len(out), n, out)
        return out

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=5)


def cli_pub(broker, version, topic, message, qos=0, extra=()):
    r = run_cli(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-V", version,
                 "-t", topic, "-m", message, "-q", str(qos), "-i", uid("mpub")] + list(extra))
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------ paho 3.1.1
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mqtt311_paho_publish_subscribe(broker, qos):
    topic = utopic("v311")
    sub = PahoClient(broker, protocol=311)
    assert sub.subscribe(topic, qos) == (qos,)
    pub = PahoClient(broker, protocol=311)
    for i in range(3):
        pub.publish(topic, b"v311-%d" % i, qos)
    msgs = sub.get_n(3)
    assert [m.payload for m in msgs] == [b"v311-%d" % i for i in range(3)]
    assert all(m.qos == qos for m in msgs)
    pub.disconnect()
    sub.disconnect()


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mqtt311_and_mqtt5_clients_interoperate(broker, qos):
    topic = utopic("mix")
    sub311 = PahoClient(broker, protocol=311)
    sub311.subscribe(topic, qos)
    sub5 = PahoClient(broker, protocol=5)
    sub5.subscribe(topic, qos)
    pub5 = PahoClient(broker, protocol=5)
    pub311 = PahoClient(broker, protocol=311)
    pub5.publish(topic, b"from-v5", qos, properties=props(
        PacketTypes.PUBLISH, UserProperty=[("k", "v")], ContentType="text/plain"))
    pub311.publish(topic, b"from-v311", qos)
    got311 = sub311.get_n(2)
    got5 = sub5.get_n(2)
    assert sorted(m.payload for m in got311) == [b"from-v311", b"from-v5"]
    assert sorted(m.payload for m in got5) == [b"from-v311", b"from-v5"]
    v5msg = [m for m in got5 if m.payload == b"from-v5"][0]
    assert v5msg.properties.UserProperty == [("k", "v")]
    assert v5msg.properties.ContentType == "text/plain"
    assert all(m.qos == qos for m in got311 + got5)


def test_mqtt311_retained_and_will_to_mqtt5(broker):
    topic, wt = utopic("mix"), utopic("will")
    w5 = PahoClient(broker, protocol=5)
    w5.subscribe(wt, 1)
    c311 = PahoClient(broker, protocol=311, will={"topic": wt, "payload": b"v311-will", "qos": 1})
    c311.publish(topic, b"v311-retained", 1, retain=True)
    sub5 = raw_connect(broker)
    sub5.subscribe(topic, qos=1)
    p = sub5.expect(raw.PUBLISH)
    assert p.retain and p.payload == b"v311-retained"
    c311.kill()
    assert w5.get().payload == b"v311-will"


def test_mqtt311_raw_qos2_handshake_and_session(broker):
    """3.1.1 on the wire: 2-byte acks, session present on reconnect with
    clean session 0, queued QoS 1 delivered."""
    topic, cid = utopic("v311"), uid("v311")
    c = raw_connect(broker, client_id=cid, version=raw.MQTT311, clean_start=False)
    assert c.subscribe(topic, qos=2).reason_codes == [2]
    c.disconnect()
    pub = raw_connect(broker)
    raw_publish_qos(pub, topic, b"queued", 1)
    c = raw_connect(broker, client_id=cid, version=raw.MQTT311, clean_start=False)
    assert c.connack.session_present
    p = c.expect(raw.PUBLISH)
    assert p.payload == b"queued" and p.qos == 1
    c.puback(p.packet_id)
    raw_publish_qos(c, topic, b"self", 2)
    p = c.expect(raw.PUBLISH)
    assert p.qos == 2
    c.pubrec(p.packet_id)
    assert c.expect(raw.PUBREL).packet_id == p.packet_id
    c.pubcomp(p.packet_id)


# ------------------------------------------------------------ mosquitto_pub / mosquitto_sub
@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mosquitto_cli_publish_subscribe(broker, version, qos):
    topic = utopic("cli")
    sub = CliSub(broker, topic, version, qos=qos, count=2)
    try:
        cli_pub(broker, version, topic, "cli-1", qos)
        cli_pub(broker, version, topic, "cli-2", qos)
        msgs = sub.messages(2)
        assert [(m["payload"], m["qos"]) for m in msgs] == [("cli-1", qos), ("cli-2", qos)]
    finally:
        sub.stop()


def test_mosquitto_cli_v311_to_v5_and_back(broker):
    topic = utopic("cli")
    sub311 = CliSub(broker, topic, "mqttv311", qos=1, count=2)
    sub5 = CliSub(broker, topic, "mqttv5", qos=1, count=2)
    try:
        cli_pub(broker, "mqttv5", topic, "from-cli-v5", 1,
                extra=["-D", "publish", "user-property", "color", "blue",
                       "-D", "publish", "content-type", "text/plain"])
        cli_pub(broker, "mqttv311", topic, "from-cli-v311", 1)
        m311 = sub311.messages(2)
        m5 = sub5.messages(2)
        assert [m["payload"] for m in m311] == ["from-cli-v5", "from-cli-v311"]
        assert [m["payload"] for m in m5] == ["from-cli-v5", "from-cli-v311"]
        assert m5[0]["ctype"] == "text/plain" and "color:blue" in m5[0]["uprops"]
        assert m5[1]["ctype"] == "" and m5[1]["uprops"] == ""
    finally:
        sub311.stop()
        sub5.stop()


def test_mosquitto_cli_retained(broker):
    topic = utopic("cli")
    cli_pub(broker, "mqttv311", topic, "ret-cli", 1, extra=["-r"])
    sub = CliSub(broker, topic, "mqttv5", qos=1, count=1)
    try:
        m = sub.messages(1)[0]
        assert m["payload"] == "ret-cli" and m["retain"]
    finally:
        sub.stop()
    cli_pub(broker, "mqttv5", topic, "", 1, extra=["-r"])  # clear
    c = raw_connect(broker)
    c.subscribe(topic, qos=1)
    assert collect_publishes(c, 0.5) == []


def test_mosquitto_cli_v5_to_paho_and_raw_properties(broker):
    topic = utopic("cli")
    sub = raw_connect(broker)
    sub.subscribe(topic, qos=2)
    cli_pub(broker, "mqttv5", topic, "props", 2,
            extra=["-D", "publish", "user-property", "a", "1",
                   "-D", "publish", "user-property", "b", "2",
                   "-D", "publish", "response-topic", "resp/x",
                   "-D", "publish", "correlation-data", "corr-123",
                   "-D", "publish", "message-expiry-interval", "120",
                   "-D", "publish", "payload-format-indicator", "1"])
    got = collect_publishes(sub, 0.7)
    assert len(got) == 1
    p = got[0]
    assert p.payload == b"props" and p.qos == 2
    assert p.properties["UserProperty"] == [("a", "1"), ("b", "2")]
    assert p.properties["ResponseTopic"] == "resp/x"
    assert p.properties["CorrelationData"] == b"corr-123"
    assert 118 <= p.properties["MessageExpiryInterval"] <= 120
    assert p.properties["PayloadFormatIndicator"] == 1


def test_paho_v5_to_mosquitto_sub_v311(broker):
    topic = utopic("cli")
    sub = CliSub(broker, topic, "mqttv311", qos=2, count=3)
    try:
        pub = PahoClient(broker)
        for q in (0, 1, 2):
            pub.publish(topic, b"q%d" % q, q)
        msgs = sub.messages(3)
        assert [(m["payload"], m["qos"]) for m in msgs] == [("q0", 0), ("q1", 1), ("q2", 2)]
    finally:
        sub.stop()

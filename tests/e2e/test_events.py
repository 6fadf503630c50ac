"""The built-in events endpoint end to end (../shared/spec/service-rest.md
"Telemetry", iothubd's /events routes; ../shared/spec/iothub-mqtt5.md §6
"Send telemetry"): a SAS device publishes on $iothub/telemetry with our raw
MQTT 5 client, and the tests read it back by paging, through checkpoints,
through the Server-Sent Events stream and with `iothub monitor`.

The SAS signature is computed here, independently of the server (spec §1).
Every test that needs telemetry skips with a clear reason when the hub does
not accept the device's CONNECT or its telemetry yet (the hub core being
wired), and when the events endpoint answers 500 "not enabled"
(service_set_telemetry not called by iothubd yet).
"""

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse

import pytest

import mqtt5raw as raw
from service_client import ServiceClient, sas_token

HOST = "localhost"  # the hub fixture runs with --hostname localhost
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IOTHUBD_BIN = os.path.abspath(os.environ.get("IOTHUBD_BIN", os.path.join(REPO, "build", "iothubd")))
CLI_BIN = os.path.abspath(os.environ.get(
    "IOTHUB_CLI_BIN", os.path.join(os.path.dirname(IOTHUBD_BIN), "iothub")))


# ---- producing telemetry -----------------------------------------------------------

def sas_connect_props(client_id, key_b64, expiry_ms):
    text = "%s\n%s\n\n\n%d\n" % (HOST, client_id, expiry_ms)
    sig = hmac.new(base64.b64decode(key_b64), text.encode(), hashlib.sha256).digest()
    return {
        "AuthenticationMethod": "SAS",
        "AuthenticationData": sig,
        "UserProperty": [("api-version", "2020-10-01-preview"), ("host", HOST),
                         ("sas-expiry", str(expiry_ms))],
    }


class Device:
    """A SAS device connected over MQTT 5 that sends telemetry at QoS 1."""

    def __init__(self, hub, svc, device_id):
        r = svc.put_device(device_id, {"deviceId": device_id})
        assert r.status in (200, 201), r
        key = r.json()["authentication"]["symmetricKey"]["primaryKey"]
        self.id = device_id
        self.c = raw.RawClient(hub.port)
        ack = self.c.connect(expect_rc=None, client_id=device_id,
                             properties=sas_connect_props(device_id, key,
                                                          int(time.time() * 1000) + 3600_000))
        if ack.type != raw.CONNACK or ack.reason_code != 0:
            self.c.close()
            pytest.skip("the hub refused a SAS device's CONNECT (%r): hub core not wired yet" % ack)

    def send(self, body, props=None, content_type=None):
        p = {"UserProperty": list(props or [])}
        if content_type:
            p["ContentType"] = content_type
        pid = self.c.publish("$iothub/telemetry", body, qos=1, properties=p)
        ack = self.c.expect(raw.PUBACK, timeout=5)
        if ack.reason_code != 0:
            pytest.skip("the hub refused telemetry (PUBACK %r): not wired yet" % ack)
        assert ack.packet_id == pid

    def close(self):
        self.c.close()


@pytest.fixture
def svc(hub):
    s = ServiceClient(hub)
    r = s.request("GET", "/events/partitions")
    if r.status == 500 and "not enabled" in r.body.decode("utf-8", "replace"):
        pytest.skip("the events endpoint is not enabled in iothubd (service_set_telemetry)")
    assert r.status == 200, r
    return s


@pytest.fixture
def device(hub, svc):
    devs = []

    def make(device_id):
        d = Device(hub, svc, device_id)
        devs.append(d)
        return d

    yield make
    for d in devs:
        d.close()


def partition_of(svc, device_id):
    """The partition the device's events are in (found through /events)."""
    r = svc.request("GET", "/events/partitions")
    for p in r.json()["partitions"]:
        page = svc.request("GET", "/events?partition=%d&max=1000" % p["partition"]).json()
        for e in page["events"]:
            if e["systemProperties"]["iothub-connection-device-id"] == device_id:
                return p["partition"]
    raise AssertionError("no events of %s" % device_id)


# ---- a Server-Sent Events reader ------------------------------------------------------

class Stream:
    """GET /events/stream over a raw socket; yields (id, data) messages."""

    def __init__(self, hub, svc, query="", headers=None):
        self.sock = socket.create_connection(("127.0.0.1", hub.http_port), timeout=10)
        h = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
        req = ("GET /events/stream?api-version=2021-04-12%s HTTP/1.1\r\nHost: x\r\n"
               "Authorization: %s\r\n%s\r\n") % (query, svc.auth(), h)
        self.sock.sendall(req.encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.head = head.decode()

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("stream closed")
        self.buf += chunk

    def next(self, skip_comments=True):
        while True:
            while b"\n\n" not in self.buf:
                self._fill()
            msg, self.buf = self.buf.split(b"\n\n", 1)
            text = msg.decode()
            if skip_comments and text.startswith(":"):
                continue
            fields = {}
            for line in text.split("\n"):
                k, _, v = line.partition(": ")
                fields[k] = v
            return fields.get("id"), json.loads(fields["data"]) if "data" in fields else text

    def close(self):
        self.sock.close()


# ---- tests --------------------------------------------------------------------------

def test_events_require_service_connect(hub, svc):
    r = svc.request("GET", "/events?partition=0", auth=False)
    assert r.status == 401
    cs = dict(p.split("=", 1) for p in hub.owner_connstr.split(";"))
    pol = svc.request("GET", "/iothubd/policies").json()
    key = [p for p in pol if p["keyName"] == "registryRead"][0]["primaryKey"]
    r = svc.request("GET", "/events?partition=0",
                    headers={"Authorization": sas_token(cs["HostName"], key, "registryRead")})
    assert r.status == 403 and r.error_code == "IotHubUnauthorized"
    assert svc.request("GET", "/events").status == 400
    assert svc.request("GET", "/events?partition=9999").status == 400


def test_creation_time_edges(svc, device):
    """A `time` is decimal ms (§5): leading zeros change nothing, and the
    last millisecond of year 9999 is the latest an ISO stamp can show."""
    d = device("tel-ctime")
    sent = [("0000000000000001", "1970-01-01T00:00:00.001Z"),
            ("00000000000000000042", "1970-01-01T00:00:00.042Z"),
            ("253402300799999", "9999-12-31T23:59:59.999Z")]
    for value, _ in sent:  # not d.send, which skips on a refusal
        pid = d.c.publish("$iothub/telemetry", b"t", qos=1,
                          properties={"UserProperty": [("creation-time", value)]})
        ack = d.c.expect(raw.PUBACK, timeout=5)
        assert ack.packet_id == pid and ack.reason_code == 0, (value, ack)
    p = partition_of(svc, "tel-ctime")
    events = svc.request("GET", "/events?partition=%d&max=1000" % p).json()["events"]
    mine = [e for e in events if e["systemProperties"]["iothub-connection-device-id"] == "tel-ctime"]
    assert [e["properties"]["iothub-creation-time-utc"] for e in mine] == [iso for _, iso in sent]


def test_properties_and_paging(svc, device):
    d = device("tel-props")
    d.send(b'{"t":21.5}', content_type="application/json",
           props=[("@room", "kitchen"), ("message-id", "m-1"), ("correlation-id", "c-1"),
                  ("user-id", "u-1"), ("content-encoding", "utf-8"),
                  ("creation-time", "1600987195320")])
    for i in range(4):
        d.send(("n%d" % i).encode())
    d.send(b"\xff\xfe")
    p = partition_of(svc, "tel-props")
    page = svc.request("GET", "/events?partition=%d&max=2" % p).json()
    assert page["partition"] == p and len(page["events"]) == 2
    e = page["events"][0]
    assert e["body"] == '{"t":21.5}'
    assert e["offset"] == str(e["sequenceNumber"])
    sysp = e["systemProperties"]
    assert sysp["content-type"] == "application/json"
    assert sysp["content-encoding"] == "utf-8"
    assert sysp["message-id"] == "m-1" and sysp["correlation-id"] == "c-1"
    assert sysp["user-id"] == "u-1"
    assert sysp["iothub-connection-device-id"] == "tel-props"
    assert "iothub-connection-module-id" not in sysp
    assert sysp["iothub-connection-auth-method"] == "sas"
    assert sysp["iothub-enqueuedtime"] == e["enqueuedTime"]
    assert e["properties"] == {"room": "kitchen",
                               "iothub-creation-time-utc": "2020-09-24T22:39:55.320Z"}
    # page on to the end; the binary body comes as base64
    seen = [ev["body"] for ev in page["events"]]
    nxt = page["nextSequenceNumber"]
    while True:
        page = svc.request("GET", "/events?partition=%d&from=%d&max=2" % (p, nxt)).json()
        if not page["events"]:
            break
        seen += [ev.get("body", "b64:" + ev.get("bodyBase64", "")) for ev in page["events"]]
        nxt = page["nextSequenceNumber"]
    assert seen[-5:] == ["n0", "n1", "n2", "n3", "b64://4="]
    assert page["nextSequenceNumber"] == nxt


def test_checkpoints(svc, device):
    d = device("tel-cp")
    for i in range(3):
        d.send(b"cp%d" % i)
    p = partition_of(svc, "tel-cp")
    path = "/events/checkpoints/readers/%d" % p
    assert svc.request("GET", path).status == 404
    page = svc.request("GET", "/events?partition=%d&consumerGroup=readers&max=1" % p).json()
    r = svc.request("PUT", path, {"sequenceNumber": page["nextSequenceNumber"]})
    assert r.status == 200 and r.json()["sequenceNumber"] == page["nextSequenceNumber"]
    again = svc.request("GET", "/events?partition=%d&consumerGroup=readers&max=1" % p).json()
    assert again["events"][0]["sequenceNumber"] == page["nextSequenceNumber"]
    assert svc.request("PUT", path, {"sequenceNumber": -1}).status == 400
    assert svc.request("PUT", path, "not json").status == 400


def test_stream_live_resume_and_filter(hub, svc, device):
    d = device("tel-sse")
    other = device("tel-sse-other")
    d.send(b"before")
    s = Stream(hub, svc, "&deviceId=tel-sse")
    assert "200 OK" in s.head and "text/event-stream" in s.head.lower()
    time.sleep(0.3)  # the stream has found the end of the log
    other.send(b"not for this stream")
    d.send(b"live-1")
    eid, ev = s.next()
    assert ev["body"] == "live-1"
    assert ev["systemProperties"]["iothub-connection-device-id"] == "tel-sse"
    part, seq = eid.split(":")
    assert int(part) == ev["partition"] and int(seq) == ev["sequenceNumber"]
    s.close()
    d.send(b"live-2")
    # reconnect as an EventSource does: Last-Event-ID resumes after the last one seen
    s = Stream(hub, svc, "&deviceId=tel-sse", headers={"Last-Event-ID": eid})
    assert s.next()[1]["body"] == "live-2"
    s.close()
    # from=start on the partition replays everything retained, in order
    s = Stream(hub, svc, "&partition=%s&from=start&deviceId=tel-sse" % part)
    bodies = [s.next()[1]["body"] for _ in range(3)]
    assert bodies == ["before", "live-1", "live-2"]
    s.close()
    assert svc.request("GET", "/events/partitions").status == 200  # still serving


def monitor(hub, *args, timeout=30):
    if not os.path.exists(CLI_BIN):
        pytest.fail("iothub binary not found at %s" % CLI_BIN)
    env = dict(os.environ, IOTHUB_URL=hub.url, IOTHUB_CONNECTION_STRING=hub.owner_connstr,
               HOME=hub.dir, XDG_CONFIG_HOME=hub.dir)
    return subprocess.Popen([CLI_BIN, "monitor"] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


def test_cli_monitor_json_and_timeout(hub, svc, device):
    d = device("tel-mon")
    d.send(b"old")
    proc = monitor(hub, "--device", "tel-mon", "--json", "--props", "--from-start",
                   "--timeout", "3")
    time.sleep(1.0)
    d.send(b'{"x":1}', props=[("@k", "v")])
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [e["body"] for e in lines] == ["old", '{"x":1}']
    assert lines[1]["deviceId"] == "tel-mon" and lines[1]["properties"] == {"k": "v"}
    assert "systemProperties" in lines[1]


def test_cli_monitor_human_and_consumer_group(hub, svc, device):
    d = device("tel-mon2")
    d.send(b"first")
    proc = monitor(hub, "--device", "tel-mon2", "--consumer-group", "cli", "--from-start",
                   "--timeout", "2")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    text = out.decode()
    assert "tel-mon2" in text and "  first" in text
    # the group's checkpoint moved: a second run without --from-start sees only new events
    d.send(b"second")
    proc = monitor(hub, "--device", "tel-mon2", "--consumer-group", "cli", "--timeout", "2")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "second" in out.decode() and "first" not in out.decode()


def test_cli_monitor_errors(hub, svc):
    proc = monitor(hub, "--from", "5")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and err.decode().startswith("iothub: ")
    proc = monitor(hub, "--consumer-group", "bad/name", "--timeout", "2")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1 and "ArgumentInvalid" in err.decode()

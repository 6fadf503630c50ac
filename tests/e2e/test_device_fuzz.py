"""Seeded, bounded, randomized test of the device side of the hub
(../shared/spec/iothub-mqtt5.md §1-7): bad input gets the documented answer,
never a crash, a hang or a leak, and nothing accepted is lost.

Three SAS devices on our raw MQTT 5 client (every reason code and property
visible): a plain one, one with Maximum Packet Size 4096, one with Request
Problem Information 0. Each step picks a device and one of: Get twin or
Patch reported (Correlation Data valid, missing, empty or too long; QoS 0 or
1; unknown properties; `if-version` matching, stale, beyond INT64_MAX or
malformed; payloads from fuzz_values' generators and byte mutator and a
corpus of odd JSON texts); a pipeline of 2-8 patches, Get twins and QoS 1
telemetry sent before any answer is read; a PUBLISH to another `$iothub/`
topic (classic-API, wrong case, suffixed, server-only, 65,000-byte, wildcard,
NUL, control characters); telemetry (Content Type, system and `@`
properties, unknown names, `creation-time`, Payload Format Indicator, up to
the 256 KiB packet limit and over); `$iothub/responses` with no call
pending; a direct-method call over HTTP answered with random `response-code`
values, properties and payloads; SUBSCRIBE / UNSUBSCRIBE; topic aliases,
QoS 2, invalid UTF-8 in a property, PFI > 1, DUP at QoS 0; reconnects.

Decided, and asserted exactly. JSON is what jansson 2.14 reads
(fuzz_values.strict_json; BOM, lone surrogate, NaN, a number beyond a double
or a raw NUL: not JSON; duplicate keys: the last wins; "\u0000" only in
string values). The §7 limits are fuzz_values.twin_patch_problem and
twin_size (keys 1-1024 bytes without ASCII controls, DEL, '.', '$' or ' ',
so `$version` too, since a reported patch has no server fields; strings
<= 4096 bytes; 10 levels counting arrays; limits apply inside arrays too;
<= 32 KB after the merge). u32 and u64 properties (`if-version`,
`creation-time`, `response-code`) are fuzz_values.unsigned_decimal: 1-20
ASCII digits, leading zeros allowed; a `creation-time` after year 9999 is
refused (0100), since iothub-creation-time-utc could not show it. The caller's answer to a method reply is
fuzz_values.method_reply_result: the first `response-code` counts; text that
is not JSON (an object with "\u0000" in a key, for one) arrives as a string;
not UTF-8 or over 128 KB: 502.

Undecided by the spec, so any of the listed answers passes ("undecided" in
the code): which of two failing checks comes first (QoS 1 and Correlation
Data; several errors in one patch); an empty Correlation Data; a payload on
Get twin; a bad telemetry property value at QoS 0; `@` with no name; a
Content Type over 255 bytes; which value of a repeated telemetry property
is kept; MQTT 5's MAYs (discouraged code
points in strings, PFI 1 with a payload that is not UTF-8); the granted QoS
of `$iothub/commands` asked at QoS 0; the UNSUBACK of `$iothub/responses`.

A shadow model applies each accepted reported patch (RFC 7386) and counts
the reported `$version` (+1 per accepted patch, echoed as `version`; in a
pipeline the versions give the order). Every Get twin must equal it; at the
end GET /twins/{id} must hold the model with `$metadata.$lastUpdated` on
every object, the events endpoint every telemetry message that got PUBACK 0
once and in order with its properties (QoS 0 ones may be missing, refused
ones must be), and the hub must still serve a new device. Every packet must
fit the device's Maximum Packet Size; with Request Problem Information 0,
PUBACK, SUBACK and UNSUBACK carry no properties.

Bounded: IOTHUBD_FUZZ_SEED (default 1105) and IOTHUBD_FUZZ_COUNT steps
(default 4000, about 6 s); every failure names both and the last operations.
"""

import base64
import os
import random
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import fuzz_values as fv
import mqtt5raw as raw
from fuzz_values import INVALID
from hub_device import Devices, user_props
from device_fuzz_model import (
    ANSWER_S, Dev, GET, ISO_MS, Outcome, PATCH, REQUEST_ERRORS, RESPONSES, SERVER_MPS,
    allowed_match, fill_patch, first_difference, packet_size, patch_problem,
    props_discouraged, short)
from device_fuzz_ops import DeviceOps

SEED = int(os.environ.get("IOTHUBD_FUZZ_SEED") or 1105)
COUNT = int(os.environ.get("IOTHUBD_FUZZ_COUNT") or 4000)


class FuzzRun(DeviceOps):
    def __init__(self, hub):
        self.hub = hub
        self.rng = random.Random(SEED)
        self.devices = Devices(hub)
        self.svc = self.devices.svc
        self.step = 0
        self.history = []
        self.counts = Counter()
        self.pool = ThreadPoolExecutor(1)   # the HTTP side of method calls

    # ------------------------------------------------------------ reporting
    def fail(self, msg, dev=None):
        head = "[IOTHUBD_FUZZ_SEED=%d IOTHUBD_FUZZ_COUNT=%d step %s%s] " % (
            SEED, COUNT, self.step, " device %s (%s)" % (dev.label, dev.id) if dev else "")
        raise AssertionError(head + msg + "\nlast operations:\n  " +
                             "\n  ".join(self.history[-8:]))

    def check(self, cond, msg, dev=None):
        if not cond:
            self.fail(msg, dev)

    def note(self, dev, text):
        self.history.append("%s %s: %s" % (self.step, dev.label if dev else "-", short(text, 400)))

    def add_device(self, label, props):
        device_id = "fz-%d-%s-%d" % (SEED, label, self.rng.randrange(10 ** 6))
        d = self.devices.create(device_id)
        dev = Dev(self, device_id, d["authentication"]["symmetricKey"]["primaryKey"], label,
                  props)
        rep = self.service_twin(dev)["properties"]["reported"]
        self.check(rep.get("$version") == 1 and set(rep) <= {"$version", "$metadata"},
                   "a new twin's reported state is not {$version: 1}: %r" % rep, dev)
        dev.connect()
        return dev

    # ------------------------------------------------------------ I/O
    def send_publish(self, dev, topic, payload, qos, props, alias_ok=True, dup=False):
        """PUBLISH, sometimes through a topic alias (set, or reused);
        returns (packet id, packet size)."""
        props = dict(props)
        sent_topic = topic
        if alias_ok and topic and self.rng.random() < 0.12:
            mapped = [a for a, t in dev.aliases.items() if t == topic]
            if mapped and self.rng.random() < 0.7:
                props["TopicAlias"], sent_topic = mapped[0], ""
            else:
                props["TopicAlias"] = a = self.rng.randint(1, 10)
                dev.aliases[a] = topic
        pid = dev.c.next_pid() if qos else None
        data = dev.c.publish_bytes(sent_topic, payload, qos, False, dup, pid, props)
        try:
            dev.c.send_raw(data)
        except OSError:
            pass  # closed under us: the reader reports what the server sent
        return pid, len(data)

    def exchange(self, dev, m, alias_ok=True, dup=False):
        """Publishes message m (topic, payload, qos, props, allowed, what)
        and checks the answer: a PUBACK at QoS 1, the response to a twin
        request, else whatever a PINGREQ flushes out. Returns the label."""
        allowed = set(m["allowed"])
        if props_discouraged(m["topic"], m["props"]):
            allowed.add("disc:0x81*")
        pid, size = self.send_publish(dev, m["topic"], m["payload"], m["qos"], m["props"],
                                      alias_ok, dup)
        if size > SERVER_MPS:   # MQTT-3.2.2-15: whatever the packet holds
            allowed = {"disc:0x95*"}
        if m["qos"]:
            o = self.await_outcome(dev, "puback", pid=pid, what=m["what"])
        elif m["topic"] in (GET, PATCH):
            o = self.await_outcome(dev, "resp", corr=m["props"].get("CorrelationData"),
                                   what=m["what"])
        else:
            o = self.ping(dev, m["what"])
        m["outcome"] = o
        return self.expect(dev, o, allowed, m["what"])

    def await_outcome(self, dev, want, corr=None, pid=None, what=""):
        """Reads until the answer we wait for (see Outcome), or a DISCONNECT
        followed by the close."""
        c = dev.c
        deadline = time.monotonic() + ANSWER_S
        while True:
            try:
                p = c.recv(max(0.01, deadline - time.monotonic()))
            except raw.Timeout:
                self.fail("no answer to %s within %.0f s (hang?)" % (what, ANSWER_S), dev)
            except raw.ConnectionClosed:
                return Outcome("closed")
            except (ValueError, KeyError, IndexError) as e:
                self.fail("undecodable packet from the server after %s: %r" % (what, e), dev)
            self.check_packet(dev, p)
            if p.type == raw.DISCONNECT:
                try:
                    after = c.recv_until_closed(3.0)
                except raw.Timeout:
                    self.fail("DISCONNECT %r but the connection stayed open" % p, dev)
                self.check(not after, "packets after the server's DISCONNECT: %r" % after, dev)
                return Outcome("disc", p)
            if want == "resp" and p.type == raw.PUBLISH and p.topic == RESPONSES:
                got = p.properties.get("CorrelationData")
                self.check(got == corr or (got is None and corr in (None, b"")),
                           "a response with Correlation Data %r while waiting for %r (%s): %r" %
                           (got, corr, what, p), dev)
                self.check(p.qos == 0 and not p.retain, "response not at QoS 0: %r" % p, dev)
                return Outcome("resp", p)
            if p.type == {"puback": raw.PUBACK, "suback": raw.SUBACK,
                          "unsuback": raw.UNSUBACK}.get(want) and p.packet_id == pid:
                return Outcome(want, p)
            if want == "pong" and p.type == raw.PINGRESP:
                return Outcome("pong", p)
            if want == "method" and p.type == raw.PUBLISH and \
                    p.topic.startswith("$iothub/methods/"):
                return Outcome("method", p)
            self.fail("unexpected packet while waiting for %s (%s): %r" % (want, what, p), dev)

    def check_packet(self, dev, p):
        if dev.mps is not None:
            self.check(packet_size(p) <= dev.mps, "a %d-byte %s beyond the client's Maximum "
                       "Packet Size %d (MQTT-3.1.2-24)" % (packet_size(p), p.name, dev.mps), dev)
        if dev.rpi0 and p.type in (raw.PUBACK, raw.SUBACK, raw.UNSUBACK):
            self.check(not p.properties, "Request Problem Information 0 but %s carries %r "
                       "(spec §4, MQTT-3.1.2-29)" % (p.name, p.properties), dev)
        if p.type == raw.PUBACK and p.reason_code == 0:
            self.check("status" not in user_props(p.properties),
                       "a successful PUBACK with a status: %r" % p, dev)

    def expect(self, dev, outcome, allowed, what):
        """Checks outcome against the allowed labels; reconnects after a
        DISCONNECT. Returns the label."""
        if dev.rpi0:  # PUBACKs without properties; a DISCONNECT MAY keep them
            allowed = {a.split("/")[0] if a.startswith("puback:") else
                       a.rstrip("*").split("/")[0] + "*" if a.startswith("disc:") else a
                       for a in allowed}
        label = outcome.label
        self.note(dev, "%s -> %s" % (what, label))
        self.counts[label.split("/")[0]] += 1
        self.check(allowed_match(label, allowed), "%s: got %s, the spec allows %s\n  packet: %r" % (
            what, label, sorted(allowed), outcome.pkt), dev)
        if outcome.kind == "resp" and outcome.status is not None:
            self.check(outcome.status in REQUEST_ERRORS,
                       "status %r is not one of the spec's request errors" % outcome.status, dev)
        if outcome.kind in ("disc", "closed"):
            dev.connect()
        return label

    def ping(self, dev, what):
        try:
            dev.c.pingreq()
        except OSError:
            pass
        return self.await_outcome(dev, "pong", what=what)

    # ------------------------------------------------------------ the end
    def service_twin(self, dev):
        r = self.svc.request("GET", "/twins/" + urllib.parse.quote(dev.id, safe=""))
        self.check(r.status == 200, "GET /twins/%s: %r" % (dev.id, r), dev)
        try:
            return r.json()
        except ValueError as e:
            self.fail("GET /twins/%s is not valid JSON (%s): %r" % (dev.id, e, r.body[:500]), dev)

    def check_service_twin(self, dev):
        rep = dict(self.service_twin(dev)["properties"]["reported"])
        meta, version = rep.pop("$metadata", None), rep.pop("$version", None)
        self.check(version == dev.version, "GET /twins reported $version %r, expected %d "
                   "(1 + %d accepted patches)" % (version, dev.version, dev.accepted), dev)
        diff = first_difference(dev.reported, rep)
        self.check(diff is None, "GET /twins differs from the accepted patches: %s" % diff, dev)

        def walk(model, m, path):
            self.check(isinstance(m, dict) and isinstance(m.get("$lastUpdated"), str) and
                       ISO_MS.match(m["$lastUpdated"]), "$metadata at %s: %r" % (path, short(m)),
                       dev)
            for k, v in model.items():
                if isinstance(v, dict):
                    walk(v, m.get(k), "%s.%r" % (path, k))
        walk(dev.reported, meta, "reported")

    def read_events(self, devs):
        """{device id: {partition: [events in order]}} of our devices."""
        events = {d.id: {} for d in devs}
        parts = self.svc.request("GET", "/events/partitions")
        self.check(parts.status == 200, "GET /events/partitions: %r" % parts)
        for p in parts.json()["partitions"]:
            nxt = None
            while True:
                q = "/events?partition=%d&max=1000" % p["partition"]
                if nxt is not None:
                    q += "&from=%d" % nxt
                r = self.svc.request("GET", q)
                self.check(r.status == 200, "GET %s: %r" % (q, r))
                page = r.json()
                if not page["events"]:
                    break
                for e in page["events"]:
                    dev_id = e["systemProperties"].get("iothub-connection-device-id")
                    if dev_id in events:
                        events[dev_id].setdefault(p["partition"], []).append(e)
                nxt = page["nextSequenceNumber"]
        return events

    def check_device_events(self, dev, by_part):
        def body(e):
            return e["body"].encode("utf-8") if "body" in e else \
                base64.b64decode(e.get("bodyBase64", ""))

        def fits(e, msg):
            payload, meta, _ = msg
            return body(e) == payload and (meta is None or (
                all(e.get("systemProperties", {}).get(k) == v for k, v in meta["sys"].items())
                and e.get("properties", {}) == meta["app"]))
        sent = dev.telemetry
        self.counts["events read"] += sum(len(es) for es in by_part.values())
        self.counts["events required"] += sum(1 for m in sent if m[2])
        if len(by_part) > 1:   # the order across partitions is not defined: multisets
            got = Counter(body(e) for es in by_part.values() for e in es)
            need, may = Counter(m[0] for m in sent if m[2]), Counter(m[0] for m in sent)
            self.check(not (need - got) and not (got - may), "events of %s: missing %r, "
                       "unexpected %r" % (dev.id, list(need - got)[:3], list(got - may)[:3]), dev)
            return
        got = next(iter(by_part.values()), [])
        # got must be sent with some QoS 0 messages left out, in order:
        # ok[i][j] = sent[i:] can produce got[j:]
        n, m = len(sent), len(got)
        ok = [[False] * (m + 1) for _ in range(n + 1)]
        ok[n][m] = True
        for i in range(n - 1, -1, -1):
            for j in range(m, -1, -1):
                ok[i][j] = (not sent[i][2] and ok[i + 1][j]) or \
                    (j < m and ok[i + 1][j + 1] and fits(got[j], sent[i]))
        if not ok[0][0]:
            i = 0
            while i < min(n, m) and fits(got[i], sent[i]):
                i += 1
            self.fail("events of %s do not match the accepted telemetry (%d events, %d sent): "
                      "first difference at message %d: sent %r meta %r, event %r" % (
                          dev.id, m, n, i, short(sent[i][0]) if i < n else None,
                          sent[i][1] if i < n else None, short(got[i]) if i < m else None), dev)

    def plain_get(self, dev):
        corr = b"plain-get"
        dev.c.publish(GET, b"", properties={"CorrelationData": corr})
        o = self.await_outcome(dev, "resp", corr=corr, what="plain Get twin")
        self.check(o.label == "ok", "plain Get twin: %r" % o, dev)
        self.check_get_response(dev, o.pkt)

    def final_checks(self, devs):
        self.step = "final"
        for dev in devs:
            self.plain_get(dev)
            self.check_service_twin(dev)
        for dev_id, by_part in self.read_events(devs).items():
            self.check_device_events(next(d for d in devs if d.id == dev_id), by_part)
        dev = self.add_device("new", {})   # the hub still serves a new device
        dev.c.publish(PATCH, b'{"alive":true}',
                      properties={"CorrelationData": b"fresh"})
        o = self.await_outcome(dev, "resp", corr=b"fresh", what="a new device's patch")
        self.check(o.label == "ok" and user_props(o.pkt.properties).get("version") == "2",
                   "a new device's patch: %r" % o, dev)
        dev.reported, dev.version, dev.accepted = {"alive": True}, 2, 1
        self.plain_get(dev)
        self.check_service_twin(dev)
        for d in devs + [dev]:
            d.c.disconnect()


OPS = [("op_twin_patch", 28), ("op_twin_get", 8), ("op_other_topic", 11), ("op_telemetry", 20),
       ("op_pipeline", 6), ("op_responses", 7), ("op_method_call", 5), ("op_subscribe", 4),
       ("op_unsubscribe", 2), ("op_mqtt_level", 4), ("op_reconnect", 2)]


def test_oracles():
    """The device-specific oracles on their edge cases, so that a wrong
    oracle cannot pass as a lenient hub."""
    assert fv.strict_json(b'{"a":1,"a":null}', allow_nul=True) == {"a": None}
    assert fv.strict_json(b'{"a":"\\u0000"}', allow_nul=True) == {"a": "\x00"}
    for bad in (b'\xef\xbb\xbf{}', b'{"a":"\\ud800"}', b'{"a\\u0000":1}', b'{"a":1e999}',
                b'{"a":1}\x00'):
        assert fv.strict_json(bad, allow_nul=True) is INVALID, bad
    assert patch_problem({"$version": 1}, {}) == "key character"
    assert patch_problem({"a": ["x" * 4097]}, {}) == "string length"
    assert patch_problem({"b": "x" * 10}, {"a": "x" * (fv.TWIN_PROPERTIES_MAX - 12)}) is None
    assert patch_problem({"b": "x" * 10}, {"a": "x" * (fv.TWIN_PROPERTIES_MAX - 11)})
    for over in (0, 1):
        full = fv.merge_patch({"a": [1], "f9": "x"}, fill_patch({"a": [1], "f9": "x"}, over))
        assert fv.twin_size(full) == fv.TWIN_PROPERTIES_MAX + over and "f9" not in full
    assert [fv.unsigned_decimal(t) for t in ("007", "+5", " 5", "5 ", "0" * 21)] == \
        [7, None, None, None, None]
    assert fv.method_reply_result(["5", "6"], b"") == (200, {"status": 5, "payload": None})
    assert fv.method_reply_result(["x", "6"], b"")[0] == 502
    assert fv.method_reply_result(["0" * 17 + "200"], b'{"a\\u0000":1}') == \
        (200, {"status": 200, "payload": '{"a\\u0000":1}'})
    assert fv.method_reply_result(["1"], b'"' + b"q" * (fv.METHOD_PAYLOAD_MAX - 1) + b'"')[0] == 502
    assert allowed_match("disc:0x83/0100", {"disc:0x83*"})
    assert not allowed_match("puback:131/0100", {"puback:131"})


def test_device_fuzz(hub):
    started = time.monotonic()
    run = FuzzRun(hub)
    devs = [run.add_device("plain", {}),
            run.add_device("mps", {"MaximumPacketSize": 4096}),
            run.add_device("rpi0", {"RequestProblemInformation": 0})]
    names, weights = zip(*OPS)
    try:
        for step in range(COUNT):
            run.step = step
            dev = run.rng.choice(devs)
            op = run.rng.choices(names, weights)[0]
            run.counts[op] += 1
            getattr(run, op)(dev)
        run.final_checks(devs)
    finally:
        run.pool.shutdown(wait=False)
    print("device fuzz: seed %d, %d steps in %.1f s; accepted patches %s; outcomes %s" % (
        SEED, COUNT, time.monotonic() - started, [d.accepted for d in devs],
        dict(sorted(run.counts.items()))))

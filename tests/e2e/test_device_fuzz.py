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
import http.client
import json
import os
import random
import re
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import fuzz_values as fv
import mqtt5raw as raw
from fuzz_values import INVALID, U32_MAX, U64_MAX
from mqtt5raw import enc_str, packet
from hub_device import Devices, connect_device, user_props
from service_client import ServiceClient

SEED = int(os.environ.get("IOTHUBD_FUZZ_SEED") or 1105)
COUNT = int(os.environ.get("IOTHUBD_FUZZ_COUNT") or 4000)
ANSWER_S = 5.0           # every single answer; longer is a hang
SERVER_MPS = 262144      # CONNACK Maximum Packet Size (spec §1)
SMALL_TWIN = 1500        # JSON bytes of reported that a 4096-byte Get twin answer holds
LAST_MS_OF_9999 = 253402300799999
SIZE_PROBLEM = "reported over 32 KB"
TELEMETRY, GET, PATCH, RESPONSES = ("$iothub/telemetry", "$iothub/twin/get",
                                    "$iothub/twin/patch/reported", "$iothub/responses")
VALID_TOPICS = (TELEMETRY, GET, PATCH, RESPONSES)
MAY_0X99 = {"disc:0x99*", "puback:153*"}   # MQTT 5 §3.3.2.3.2: PFI 1, not UTF-8
REQUEST_ERRORS = ("0100", "0101", "0102", "0104", "0501", "0502", "0601", "0602", "0603")
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3,7}Z$")

# ============================================================ payloads
# Hand-picked texts on top of fuzz_values' generators: the JSON corner cases
# a parser is most likely to get wrong.
EXOTIC = [b"", b" ", b"NaN", b'{"a":NaN}', b'{"a":-Infinity}', b'{"a":1e999}',
          b'\xef\xbb\xbf{"a":1}', b'{"a":1}garbage', b'{"a":1}{"b":2}', b'{"a":01}', b'{"a":.5}',
          b"{'a':1}", b'{"a":"\\ud800"}', b'{"a":"\\udc00x"}', b'{"a\\u0000b":1}',
          b'{"a":"x\\u0000y"}', b'{"a":"x\x00y"}', b'{"a":1}\x00', b'{"a":-0}', b'{"a":1e2}',
          b'{"a":4503599627370495}', b'{"a":4503599627370496}', b'{"a":-4503599627370496}',
          b'{"a":4503599627370496.0}', b'{"a":9223372036854775808}', b'{"a":1.5e308}',
          b'{"a":5e-324}', b'{"a":true,}', b"[1]", b'"s"', b"null", b'{"a":"\x01"}',
          b'{"a":"\\x41"}', b'{"\xc3\xa9":1}', b'{"a":"\xed\xa0\x80"}', b'{"a":"\xc0\xaf"}',
          b'{"a":"\xf4\x90\x80\x80"}', b'{"a" 1}', b'{"a":"\\u00e9\\uD83D\\uDE00"}',
          b'{"a":1,"a":null}', b'{"a":{"b":1},"a":{"c":2}}', b'{"a":[[[[[[[[[[1]]]]]]]]]]}',
          b'{"a":[[[[[[[[[[[1]]]]]]]]]]]}', b'{"a":[{"":1}]}', b'{"a":["' + b"x" * 4097 + b'"]}']
# Keys a reported patch may hold besides fuzz_values' (the server fields are
# not stripped from a reported patch, so '$' refuses them).
DEVICE_KEYS = ["$metadata", "$version", "c1\x85key", "ключ", "😀"]
WEIRD = "é中😀\u2028\ufeff\"\\/\t\n\x7f\x85\ufffe"


def rand_text(rng, n=12):
    """Mostly printable ASCII, sometimes a character that needs care."""
    if rng.random() < 0.01:
        return "x" * 2000
    return "".join(rng.choice(WEIRD) if rng.random() < 0.1 else chr(rng.randint(0x20, 0x7E))
                   for _ in range(rng.randint(0, n)))


def json_size(v):
    """Bytes of v as the hub renders it (near enough to keep Get twin small)."""
    return len(json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace"))


def is_utf8(data):
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def patch_object(rng, model):
    """A merge patch that deletes, edits and adds around what the model holds."""
    patch = {}
    for _ in range(rng.randint(1, 5)):
        r = rng.random()
        objects = sorted(k for k, v in model.items() if isinstance(v, dict))
        if r < 0.2 and model:
            patch[rng.choice(sorted(model))] = None
        elif r < 0.3 and objects:
            k = rng.choice(objects)
            patch[k] = {sk: None if rng.random() < 0.5 else fv.random_value(rng, max_depth=1)
                        for sk in list(model[k])[:3]}
            patch[k][fv.random_key(rng)] = fv.random_value(rng, max_depth=2)
        else:
            key = rng.choice(DEVICE_KEYS) if rng.random() < 0.04 else fv.random_key(rng)
            patch[key] = fv.random_value(rng, max_depth=rng.choice([0, 1, 2, 3, 5]))
    return patch


def fill_patch(model, over):
    """A patch that brings reported to the 32 KB limit exactly, or `over`
    bytes beyond, with strings under the keys f0, f1, ..."""
    kept = {k: v for k, v in model.items() if not re.fullmatch(r"f\d", k)}
    need = fv.TWIN_PROPERTIES_MAX + over - fv.twin_size(kept)
    patch, i = {k: None for k in model if k not in kept}, 0
    while need >= 2:   # each one: 2 bytes of key, up to 4001 of string
        n = min(need - 2, 4000) + (need == 4003)   # never 1 byte left over
        patch["f%d" % i], need, i = "x" * n, need - 2 - n, i + 1
    return patch if need == 0 else {}


def patch_body(rng, dev):
    """The payload of a reported patch, and how it was made."""
    r = rng.random()
    if r < 0.08:
        return rng.choice(EXOTIC), "exotic"
    if r < 0.1:
        value, how = fill_patch(dev.reported, rng.choice([0, 1])), "fill"
    elif r < 0.18:
        value, how = fv.random_section(rng), "section"
    else:
        value, how = patch_object(rng, dev.reported), "patch"
    if dev.mps and isinstance(value, dict) and \
            json_size(fv.merge_patch(dev.reported, value)) > SMALL_TWIN:
        value, how = {k: None for k in list(dev.reported)[:4]}, "trim"   # keep Get twin small
    data = fv.dumps(rng, value)
    if rng.random() < 0.05:
        data = b" \n\t" + data + b"\r\n "
    if rng.random() < 0.12:
        return fv.mutate_bytes(rng, data), how + ", mutated"
    return data, how


def patch_problem(value, model):
    """Why the hub must refuse a reported patch with 0100, or None (§6, §7)."""
    if value is INVALID:
        return "not JSON"
    problem = fv.twin_patch_problem(value)
    if problem is None and fv.twin_size(fv.merge_patch(model, value)) > fv.TWIN_PROPERTIES_MAX:
        problem = SIZE_PROBLEM
    return problem


# ============================================================ comparing
def same(a, b):
    """JSON equality with types: a bool is not a number, 1 == 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def first_difference(model, twin, path="reported"):
    """Where the twin first differs from the model, or None."""
    if isinstance(model, dict) and isinstance(twin, dict):
        for k in sorted(set(model) | set(twin)):
            if k not in model or k not in twin:
                return "%s.%r: model %r, twin %r" % (path, k, short(model.get(k, "<none>")),
                                                     short(twin.get(k, "<none>")))
            d = first_difference(model[k], twin[k], "%s.%r" % (path, k))
            if d:
                return d
        return None
    return None if same(model, twin) else "%s: model %r, twin %r" % (path, short(model),
                                                                     short(twin))


def short(v, n=120):
    s = v if isinstance(v, str) else repr(v)
    return s if len(s) <= n else s[:n] + "...(%d chars)" % len(s)


# ============================================================ topics
UNDEFINED_TOPICS = [
    "$iothub/twin/patch/desired", "$iothub/commands", "$iothub/methods/reboot", "$iothub/methods/",
    "$iothub/", "$iothub/twin", "$iothub/twin/patch", "$iothub/devices/x/twin/get",
    "$iothub/twin/GET/?$rid=1", "$iothub/twin/PATCH/properties/reported/?$rid=7&$version=3",
    "$iothub/twin/get?$rid=%d", "$iothub/twin/get/?$rid=%d", "$iothub/twin/res/200/?$rid=1",
    "$iothub/methods/POST/reboot/?$rid=5", "$iothub/methods/res/200/?$rid=9",
    "$iothub/telemetry/a=b&c=d", "$iothub/telemetry/$.ct=application%2Fjson&$.ce=utf-8",
    "$iothub/telemetry?x=1", "$iothub/TELEMETRY", "$iothub//telemetry", "$iothub/telemetry ",
    "$iothub/twin/get/x", "$iothub/télémetry", "$iothub/😀", "$iothub/twin/gett",
    "$iothub/responses/x", "$iothub/twin/patch/reported?$version=2", "$iothub/telemetry\ufeff",
]


def gen_topic(rng):
    """(topic, class): 'undefined' | 'wild' | 'nul' | 'ctrl'."""
    if rng.random() < 0.06:
        t = "$iothub/telemetry/" + "x" * rng.randint(1000, 65000)
    else:
        t = rng.choice(UNDEFINED_TOPICS)
        if "%d" in t:
            t = t % rng.randint(0, 10 ** 6)
        s = rng.random()
        if s < 0.2:
            t += "/" + rand_text(rng, 6)
        elif s < 0.3:
            t = rng.choice(VALID_TOPICS) + rng.choice(["/", "?$rid=1", "/$rid=1", "#x", "/a=b"])
        elif s < 0.36:
            i = rng.randint(8, len(t))
            t = t[:i] + rng.choice(["+", "#", "/+", "/#"]) + t[i:]
        elif s < 0.39:
            t += "\x00"
        elif s < 0.42:
            t += rng.choice(["\x01", "\x1f", "\x7f", "\x85"])
    if t in VALID_TOPICS:
        t += "/"
    if "\x00" in t:
        return t, "nul"
    if "+" in t or "#" in t:
        return t, "wild"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in t):
        return t, "ctrl"
    return t, "undefined"


def topic_answers(cls, qos):
    """Spec §2: an undefined topic (server-only ones too, for a device) at QoS
    1 → PUBACK 131/0504, at QoS 0 → DISCONNECT 0x90. Wildcards and NUL break
    MQTT itself (MQTT-3.3.2-2, MQTT-1.5.4-2); a control character MAY make
    the packet malformed (MQTT 5 §1.5.4): undecided."""
    undefined = {"disc:0x90*"} if qos == 0 else {"puback:131/0504"}
    return {"wild": {"disc:0x81*", "disc:0x82*", "disc:0x90*"},
            "nul": {"disc:0x81*", "disc:0x82*"},
            "ctrl": undefined | {"disc:0x81*"}}.get(cls, undefined)


# ============================================================ properties
REQUEST_PROPS = ["colour", "$rid", "rid", "version", "status", "content-type", "", "ключ",
                 "sas-expiry", "response-code", "x" * 300, "@app", "@"]
TELEMETRY_UNKNOWN = ["colour", "$.ct", "content-type", "iothub-connection-device-id",
                     "iothub-enqueuedtime", "messageId", "MESSAGE-ID", "", "$rid", "app",
                     "iothub-creation-time-utc", "x" * 500, "😀"]
# (weight, filters, SUBACK codes) of spec §2
SUBSCRIPTIONS = [
    (20, ["$iothub/methods/+"], {0}),
    (20, ["$iothub/methods/" + n for n in ("a", "reboot", "ä b", "x" * 200, "😀", "$x", "a.b")],
     {0}),
    (10, ["$iothub/twin/patch/desired"], {0}),
    (10, ["$iothub/commands"], {0, 1}),   # 1, but asked at QoS 0 MQTT grants 0: undecided
    (5, ["$iothub/responses"], {0}),
    (20, ["$iothub/twin/gett", "$iothub/telemetry", "$iothub/methods/", "$iothub/methods/a/b",
          "$iothub", GET, PATCH, "$iothub/twin/GET/?$rid=1", "$iothub/commands/x",
          "$iothub/twin/res"], {0x8F}),
    (15, ["$iothub/#", "$iothub/+", "$iothub/methods/#", "$iothub/twin/+/desired",
          "$iothub/+/get"], {0xA2}),
]
SYSTEM_PROPS = ["content-encoding", "message-id", "user-id", "correlation-id"]
U64_TEXTS = ["0", "007", "0" * 19 + "1", "0" * 20 + "1", str(2 ** 63), str(U64_MAX),
             str(U64_MAX + 1), "", "x", "-1", "+5", " 5", "5 ", "1.5", "1e3", "0x1", "١",
             "99999999999999999999"]
CREATION_TIMES = ["01", "1600987195320", str(LAST_MS_OF_9999), str(LAST_MS_OF_9999 + 1),
                  "999999999999999", "99999999999999999", "yesterday", "2020-09-24T22:39:55Z",
                  "12abc", "١٢٣"] + U64_TEXTS
RESPONSE_CODES = ["0", "200", "007", "4294967295", "0" * 17 + "200", "0" * 18 + "200",
                  "4294967296", "99999999999999999999", "", "abc", "-1", "+5", " 5", "5 ",
                  "1.5", "2e2", "0x10", "١٢٣"]


def prop_value(rng):
    return rand_text(rng, 12)


def creation_time(rng):
    """(value, 'ok' | 'bad', ms or None). A `time` is decimal ms (§5), read
    as any u64 ("00000000000000000001" is 1 ms) up to the last millisecond
    of year 9999, which iothub-creation-time-utc (ISO 8601, four-digit
    years) can still show; later ones are refused (util/time.h)."""
    text = str(rng.randint(0, 4102444800000)) if rng.random() < 0.5 else \
        rng.choice(CREATION_TIMES)
    ms = fv.unsigned_decimal(text)
    if ms is None:
        return text, "bad", None
    return (text, "ok", ms) if ms <= LAST_MS_OF_9999 else (text, "bad", None)


def discouraged(s):
    """MQTT 5 §1.5.4: a UTF-8 string SHOULD NOT hold U+0001..U+001F,
    U+007F..U+009F or non-characters; a receiver MAY treat it as malformed."""
    return isinstance(s, str) and any(
        0x01 <= ord(c) <= 0x1F or 0x7F <= ord(c) <= 0x9F or 0xFDD0 <= ord(c) <= 0xFDEF or
        (ord(c) & 0xFFFE) == 0xFFFE for c in s)


def props_discouraged(topic, props):
    strings = [topic, props.get("ContentType"), props.get("ResponseTopic")]
    return any(discouraged(x) for x in strings + [x for u in props.get("UserProperty", [])
                                                  for x in u])


# ============================================================ answers
class Outcome:
    """What came back: 'resp', 'puback', 'disc', 'pong', 'suback',
    'unsuback', 'method' or 'closed', with its packet."""

    def __init__(self, kind, pkt=None):
        self.kind, self.pkt = kind, pkt

    @property
    def status(self):
        return user_props(self.pkt.properties).get("status") if self.pkt is not None else None

    @property
    def label(self):
        """'ok' | 'status:0100' | 'puback:131/0100' | 'disc:0x83/0100' | 'pong' ..."""
        st = "/" + self.status if self.status else ""
        if self.kind == "resp":
            return "status:" + self.status if self.status else "ok"
        if self.kind == "puback":
            return "puback:%d%s" % (self.pkt.reason_code, st)
        if self.kind == "disc":
            return "disc:0x%02X%s" % (self.pkt.reason_code, st)
        return self.kind

    def __repr__(self):
        return "<%s %r>" % (self.label, self.pkt)


def allowed_match(label, allowed):
    """label is in allowed; 'x*' there stands for x with any status or none."""
    return any(label == a or (a.endswith("*") and (label == a[:-1] or
                                                   label.startswith(a[:-1] + "/")))
               for a in allowed)


def correlated_answers(qos, ck, answers):
    """Spec §3 for a request or reply with Correlation Data of kind ck: at
    QoS 1 PUBACK 131/0100; missing or over 16 bytes DISCONNECT 0x83/0100;
    otherwise `answers`. Undecided: which of the two comes first when both
    apply, and whether an empty Correlation Data counts as missing."""
    unusable = {"disc:0x83/0100"} if ck in ("missing", "long") else set()
    if qos:
        return {"puback:131/0100"} | unusable
    return unusable or set(answers) | ({"disc:0x83/0100"} if ck == "empty" else set())


def packet_size(p):
    return 1 + len(raw.enc_varint(len(p.raw))) + len(p.raw)


def call_method(hub, device_id, body):
    """A direct-method call over HTTP on its own connection: the response,
    or the exception that stopped it."""
    svc = ServiceClient(hub)
    svc.conn = http.client.HTTPConnection(svc.host, svc.port, timeout=20)
    try:
        return svc.request("POST", "/twins/%s/methods" % urllib.parse.quote(device_id, safe=""),
                           body)
    except Exception as e:  # reported by the caller
        return e


# ============================================================ devices
class Dev:
    def __init__(self, run, device_id, key, label, props):
        self.run, self.id, self.key, self.label, self.props = run, device_id, key, label, props
        self.mps = props.get("MaximumPacketSize")
        self.rpi0 = props.get("RequestProblemInformation") == 0
        self.c = None
        self.reported, self.version, self.accepted = {}, 1, 0
        self.telemetry = []      # (payload, meta or None, required)
        self.subs, self.aliases, self.connects = set(), {}, 0

    def connect(self):
        if self.c is not None:
            self.c.close()
        try:
            self.c = connect_device(self.run.hub, self.id, self.key, properties=dict(self.props))
        except (AssertionError, OSError, raw.Timeout, raw.ConnectionClosed) as e:
            self.run.fail("the device cannot connect again: %r" % e, self)
        self.connects += 1
        self.subs, self.aliases = set(), {}
        if self.connects == 1:  # spec §1: the CONNACK of a device
            cp = self.c.connack.properties
            for name, v in (("ReceiveMaximum", 16), ("MaximumQoS", 1), ("RetainAvailable", 0),
                            ("MaximumPacketSize", SERVER_MPS), ("TopicAliasMaximum", 10)):
                self.run.check(cp.get(name) == v, "CONNACK %s %r, expected %r" % (
                    name, cp.get(name), v), self)


class FuzzRun:
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

    # ------------------------------------------------------------ requests
    def request_props(self, pipelined):
        """(properties with Correlation Data, its kind, QoS) of a twin
        request; in a pipeline the batch sets a unique Correlation Data."""
        if pipelined:
            return {}, "ok", 0
        r = self.rng.random()
        if r < 0.05:
            return {}, "missing", 1 if self.rng.random() < 0.05 else 0
        n = 0 if r < 0.08 else self.rng.randint(17, 40) if r < 0.13 else self.rng.randint(1, 16)
        corr = bytes(self.rng.randrange(256) for _ in range(n))
        kind = "empty" if n == 0 else "long" if n > 16 else "ok"
        return {"CorrelationData": corr}, kind, 1 if self.rng.random() < 0.05 else 0

    def extra_users(self, op):
        """User properties a request must not carry (§6: Get twin has none,
        Patch reported only if-version): any of them → 0100."""
        if self.rng.random() >= 0.15:
            return []
        names = REQUEST_PROPS + (["if-version"] if op == "get" else [])
        return [(self.rng.choice(names), prop_value(self.rng))]

    def gen_if_version(self, dev):
        """(user properties, 'none' | 'match' | 'mismatch' | 'invalid');
        §6: a u64, else 0100; not the reported $version → 0104."""
        r = self.rng.random()
        v = dev.version
        if r < 0.45:
            return [], "none"
        if r < 0.65:
            text = self.rng.choice([str(v), "0" + str(v)])
        elif r < 0.75:
            text = str(self.rng.choice([0, v - 1, v + 1, v + 7]))
        else:
            text = self.rng.choice(U64_TEXTS)
        n = fv.unsigned_decimal(text)
        kind = "invalid" if n is None else "match" if n == v else "mismatch"
        # the same value twice means the same whichever the hub reads
        return [("if-version", text)] * (2 if self.rng.random() < 0.05 else 1), kind

    def build_get(self, dev, pipelined=False):
        rng = self.rng
        props, ck, qos = self.request_props(pipelined)
        props["UserProperty"] = users = self.extra_users("get")
        if rng.random() < 0.1:   # spec §3: Response Topic is ignored
            props["ResponseTopic"] = rng.choice(["ignored", GET, "x/y/ü"])
        payload = b"" if rng.random() < 0.9 else rng.choice(EXOTIC + [b"x" * 3000])
        # undecided: a payload, where §6 says "empty payload" but names no answer
        answers = {"status:0100"} if users else {"ok", "status:0100"} if payload else {"ok"}
        return dict(op="get", topic=GET, payload=payload, qos=qos, props=props,
                    allowed=correlated_answers(qos, ck, answers),
                    what="twin/get qos %d corr %s users %r payload %r" % (qos, ck, users,
                                                                          payload[:40]))

    def build_patch(self, dev, pipelined=False):
        rng = self.rng
        payload, how = patch_body(rng, dev)
        value = fv.strict_json(payload, allow_nul=True)
        problem = patch_problem(value, dev.reported)
        props, ck, qos = self.request_props(pipelined)
        ifv, ifk = ([], "none") if pipelined else self.gen_if_version(dev)
        users = self.extra_users("patch")
        props["UserProperty"] = ifv + users
        if rng.random() < 0.06:
            props["PayloadFormatIndicator"] = rng.choice([0, 1])
        if rng.random() < 0.05:
            props["ContentType"] = rng.choice(["application/json", prop_value(rng)])
        errors = {"0100"} if problem or users or ifk == "invalid" else set()
        if ifk == "mismatch":
            errors.add("0104")
        # undecided: with several errors the spec does not say which check is first
        allowed = correlated_answers(qos, ck, {"status:" + e for e in errors} or {"ok"})
        if props.get("PayloadFormatIndicator") == 1 and not is_utf8(payload):
            allowed |= MAY_0X99
        what = "patch (%s: %s) qos %d corr %s if-version %s %r users %r payload %r" % (
            how, problem or "fits", qos, ck, ifk, ifv, users, payload[:200])
        return dict(op="patch", topic=PATCH, payload=payload, qos=qos, props=props,
                    allowed=allowed, what=what, value=value, problem=problem)

    def accept_patch(self, dev, m):
        """A patch answered without a status: apply it to the model."""
        self.counts["patch accepted"] += 1
        dev.reported = fv.merge_patch(dev.reported, m["value"])
        dev.version += 1
        dev.accepted += 1
        p = m["outcome"].pkt
        v = user_props(p.properties).get("version")
        self.check(v == str(dev.version), "patch response version %r, expected %d (one more "
                   "per accepted patch)" % (v, dev.version), dev)
        self.check(not p.payload, "patch response with a payload %r" % p.payload[:80], dev)

    def get_response_reported(self, dev, p, what="Get twin"):
        """The reported section of a Get twin response, and its $version."""
        try:
            doc = json.loads(p.payload.decode("utf-8"))
            rep = dict(doc["reported"])
            version = rep.pop("$version")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            self.fail("%s: payload %r (%s)" % (what, p.payload[:300], e), dev)
        self.check(set(doc) == {"desired", "reported"} and doc["desired"] == {"$version": 1} and
                   "$metadata" not in rep, "%s: not the §6 shape: %r" % (what, short(doc)), dev)
        return rep, version

    def check_get_response(self, dev, p, snapshots=None, what="Get twin"):
        """The twin in a Get twin response is the model, or in a pipeline the
        model at one of the batch's versions (snapshots)."""
        rep, v = self.get_response_reported(dev, p, what)
        snapshots = snapshots or {dev.version: dev.reported}
        self.check(v in snapshots, "%s: reported $version %r, the model is at %s (%d accepted "
                   "patches)" % (what, v, sorted(snapshots), dev.accepted), dev)
        diff = first_difference(snapshots[v], rep)
        self.check(diff is None, "%s differs from the accepted patches: %s" % (what, diff), dev)

    def op_twin_get(self, dev):
        if dev.mps and json_size(dev.reported) > SMALL_TWIN:
            return self.op_twin_patch(dev)
        m = self.build_get(dev)
        if self.exchange(dev, m) == "ok":
            self.check_get_response(dev, m["outcome"].pkt)

    def op_twin_patch(self, dev):
        m = self.build_patch(dev)
        if self.exchange(dev, m) == "ok":
            self.accept_patch(dev, m)
            # read it back before a later patch can hide a lost one
            if self.rng.random() < 0.5 and not (dev.mps and json_size(dev.reported) > SMALL_TWIN):
                self.plain_get(dev)

    def op_other_topic(self, dev):
        rng = self.rng
        topic, cls = gen_topic(rng)
        qos = 1 if rng.random() < 0.45 else 0
        props = {}
        if rng.random() < 0.5:
            props["CorrelationData"] = bytes(rng.randrange(256) for _ in range(rng.randint(0, 20)))
        if rng.random() < 0.3:
            props["UserProperty"] = [(rng.choice(REQUEST_PROPS + ["if-version"]),
                                      prop_value(rng))]
        payload = rng.choice([b"", b"{}", b"x" * rng.randint(0, 300),
                              fv.mutate_bytes(rng, b'{"a":1}')])
        self.exchange(dev, dict(topic=topic, payload=payload, qos=qos, props=props,
                                allowed=topic_answers(cls, qos), what="publish %r (%s, %d bytes) "
                                "qos %d" % (short(topic, 80), cls, len(topic), qos)),
                      alias_ok=cls == "undefined")

    # ------------------------------------------------------------ telemetry
    def telemetry_users(self):
        """(user properties, verdict, meta): verdict 'ok' | 'undecided' |
        'bad' (a known property with a bad value) | 'unknown' (§5); meta
        the {"sys", "app"} properties the event must carry, or None when
        they are undecided."""
        rng = self.rng
        users, verdicts, meta = [], {"ok"}, {"sys": {}, "app": {}}
        for _ in range(rng.randint(0, 5)):
            s = rng.random()
            if s < 0.35:
                name, value = "@" + fv.random_key(rng)[:40], prop_value(rng)
                if name == "@":
                    verdicts.add("undecided")   # `@{name}` without a name
                elif meta is not None:
                    meta["app"][name[1:]] = value
            elif s < 0.65:
                name, value = rng.choice(SYSTEM_PROPS), prop_value(rng)[:100]
                if meta is not None:
                    meta["sys"][name] = value
            elif s < 0.85:
                name = "creation-time"
                value, verdict, ms = creation_time(rng)
                verdicts.add(verdict)
                if meta is not None and ms is not None:
                    meta["app"]["iothub-creation-time-utc"] = fv.iso_ms(ms)
                elif verdict != "ok":
                    meta = None
            else:
                name, value = rng.choice(TELEMETRY_UNKNOWN), prop_value(rng)
                verdicts.add("unknown")
            if name in [u[0] for u in users]:
                meta = None   # undecided: which of the values the event keeps
            users.append((name, value))
        for v in ("unknown", "bad", "undecided", "ok"):
            if v in verdicts:
                return users, v, meta

    def build_telemetry(self, dev, pipelined=False):
        rng = self.rng
        qos = 1 if pipelined or rng.random() >= 0.3 else 0
        r = rng.random()
        if r < 0.02 and not pipelined:
            payload = bytes([rng.randrange(256)]) * rng.randint(150000, 261000)
        elif r < 0.03 and not pipelined:
            payload = b"o" * rng.randint(262100, 270000)
        elif r < 0.4:
            payload = fv.dumps(rng, fv.random_value(rng, max_depth=3))
        elif r < 0.6:
            payload = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
        else:
            payload = rand_text(rng, 60).encode()
        users, verdict, meta = self.telemetry_users()
        props = {"UserProperty": users}
        if rng.random() < 0.3:
            props["ContentType"] = ct = prop_value(rng)
            if len(ct.encode()) > 255 and verdict == "ok":
                verdict = "undecided"   # iothubd: 0100; the spec names no limit
            if meta is not None:
                meta["sys"]["content-type"] = ct
        if rng.random() < 0.1:
            props["PayloadFormatIndicator"] = rng.choice([0, 1])
        if rng.random() < 0.05:
            props["MessageExpiryInterval"] = rng.randint(1, 100000)
        # §5/§6: an unknown property → PUBACK 131/0100 or DISCONNECT 0x83; a
        # bad value → PUBACK 131/0100 at QoS 1, at QoS 0 undecided
        allowed = ({"ok": {"puback:0"}, "undecided": {"puback:0", "puback:131/0100"}}
                   .get(verdict, {"puback:131/0100"}) if qos else
                   {"ok": {"pong"}, "unknown": {"disc:0x83/0100"}}
                   .get(verdict, {"pong", "disc:0x83/0100"}))
        if props.get("PayloadFormatIndicator") == 1 and not is_utf8(payload):
            allowed = allowed | MAY_0X99
        what = "telemetry qos %d (%s) %d bytes %r users %r props %r" % (
            qos, verdict, len(payload), payload[:40], [(k[:30], v[:20]) for k, v in users],
            {k: v for k, v in props.items() if k != "UserProperty"})
        return dict(op="telemetry", topic=TELEMETRY, payload=payload, qos=qos, props=props,
                    allowed=allowed, meta=meta, what=what)

    def record_telemetry(self, dev, m, label):
        if label in ("puback:0", "pong"):
            dev.telemetry.append((m["payload"], m["meta"], label == "puback:0"))

    def op_telemetry(self, dev):
        m = self.build_telemetry(dev)
        dup = m["qos"] == 1 and self.rng.random() < 0.05
        self.record_telemetry(dev, m, self.exchange(dev, m, dup=dup))

    # ------------------------------------------------------------ pipeline
    def pipeline_items(self, dev):
        """2-8 requests whose verdicts do not depend on the order the hub
        takes them in: the patches that fit all fit together (the §7 size of
        a merge is at most the sum of both), and on the small device the
        Get twin answers stay small whatever was applied before. None may
        be answered with a DISCONNECT, which would cut the batch short."""
        rng = self.rng
        items, corrs = [], set()
        room = fv.TWIN_PROPERTIES_MAX - fv.twin_size(dev.reported)
        text_room = SMALL_TWIN * 2 - json_size(dev.reported)
        for _ in range(rng.randint(2, 8)):
            r = rng.random()
            if r < 0.5:
                m = self.build_patch(dev, pipelined=True)
                if m["problem"] == SIZE_PROBLEM:
                    continue   # earlier patches of the batch might make room
                if m["problem"] is None:
                    room -= fv.twin_size(m["value"])
                    text_room -= len(m["payload"])
                    if room < 0 or (dev.mps and text_room < 0):
                        break
            elif r < 0.65:
                m = self.build_get(dev, pipelined=True)
            else:
                m = self.build_telemetry(dev, pipelined=True)
            if props_discouraged(m["topic"], m["props"]) or \
                    any(a.startswith("disc:") for a in m["allowed"]):
                continue
            if m["op"] != "telemetry":
                corr = None
                while corr is None or corr in corrs:
                    corr = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
                corrs.add(corr)
                m["props"]["CorrelationData"] = corr
            items.append(m)
        if dev.mps and text_room < SMALL_TWIN:   # no Get twin: the answer might not fit
            items = [m for m in items if m["op"] != "get"]
        return items

    def op_pipeline(self, dev):
        """Requests sent back to back before any answer is read. Answers may
        come in any order; the accepted patches take the next versions,
        each once, and applying them in that order gives the model; a Get
        twin in between shows the model at some version of the batch."""
        items = self.pipeline_items(dev)
        data, waiting = b"", {}
        for m in items:
            pid = dev.c.next_pid() if m["qos"] else None
            waiting[pid or m["props"]["CorrelationData"]] = m
            data += dev.c.publish_bytes(m["topic"], m["payload"], m["qos"], False, False, pid,
                                        m["props"])
        what = "pipeline of %d: %s" % (len(items), ", ".join(m["op"] for m in items))
        self.note(dev, what)
        dev.c.send_raw(data)
        deadline = time.monotonic() + ANSWER_S
        while waiting:
            try:
                p = dev.c.recv(max(0.01, deadline - time.monotonic()))
            except raw.Timeout:
                self.fail("%s: no answer to %r within %.0f s" % (
                    what, [m["what"] for m in waiting.values()], ANSWER_S), dev)
            except raw.ConnectionClosed:
                self.fail("%s: connection closed" % what, dev)
            self.check_packet(dev, p)
            key = p.packet_id if p.type == raw.PUBACK else \
                p.properties.get("CorrelationData") if p.type == raw.PUBLISH and \
                p.topic == RESPONSES else None
            self.check(key in waiting, "%s: unexpected %r" % (what, p), dev)
            waiting.pop(key)["outcome"] = Outcome("puback" if p.type == raw.PUBACK else "resp", p)
        self.settle_pipeline(dev, items, what)

    def settle_pipeline(self, dev, items, what):
        accepted, gets = [], []
        for m in items:
            label = self.expect(dev, m["outcome"], m["allowed"], "pipelined " + m["what"])
            if m["op"] == "telemetry":
                self.record_telemetry(dev, m, label)
            elif m["op"] == "patch" and label == "ok":
                v = user_props(m["outcome"].pkt.properties).get("version", "")
                self.check(v.isdigit(), "patch response version %r" % v, dev)
                accepted.append((int(v), m))
            elif m["op"] == "get" and label == "ok":
                gets.append(m["outcome"].pkt)
        accepted.sort(key=lambda x: x[0])
        first = dev.version
        self.check([v for v, _ in accepted] == list(range(first + 1, first + 1 + len(accepted))),
                   "%s: versions %r of the accepted patches after %d" % (
                       what, [v for v, _ in accepted], first), dev)
        snapshots = {dev.version: dev.reported}
        for _, m in accepted:
            self.accept_patch(dev, m)
            snapshots[dev.version] = dev.reported
        for p in gets:
            self.check_get_response(dev, p, snapshots, what + ": Get twin")

    # ------------------------------------------------------------ methods
    def op_responses(self, dev):
        """$iothub/responses with no call pending: dropped (test_methods
        test_unknown_correlation_is_dropped), unless it breaks §3 (a reply
        at QoS 1: test_methods test_reply_at_qos1_refused)."""
        rng = self.rng
        props, ck, _ = self.request_props(False)
        qos = 1 if rng.random() < 0.1 else 0
        props["UserProperty"] = users = [
            rng.choice([("response-code", rng.choice(RESPONSE_CODES)),
                        (prop_value(rng)[:10], prop_value(rng))]) for _ in range(rng.randint(0, 3))]
        payload = rng.choice([b"", b"{}", fv.mutate_bytes(rng, b'{"ok":true}'), b"\xff"])
        self.exchange(dev, dict(topic=RESPONSES, payload=payload, qos=qos, props=props,
                                allowed=correlated_answers(qos, ck, {"pong"}),
                                what="responses qos %d corr %s users %r" % (qos, ck, users)))

    def reply(self, dev, corr, codes, payload, qos=0, extra=(), what="reply"):
        """A method reply on $iothub/responses; returns the label."""
        users = list(extra[:1]) + [("response-code", c) for c in codes] + list(extra[1:])
        return self.exchange(dev, dict(topic=RESPONSES, payload=payload, qos=qos,
                                props={"CorrelationData": corr, "UserProperty": users},
                                allowed={"puback:131/0100"} if qos else {"pong"},
                                what="%s %r payload %r" % (what, users, payload[:60])))

    def subscribe(self, dev, filters, what):
        pid = dev.c.next_pid()
        try:
            dev.c.send_raw(dev.c.subscribe_bytes(pid, filters))
        except OSError:
            pass
        return self.await_outcome(dev, "suback", pid=pid, what=what)

    def method_argument(self):
        """A payload the service accepts (the service's own verdicts are
        test_route_fuzz's) and that fits the small device's packets."""
        for _ in range(20):
            arg = fv.random_value(self.rng, max_depth=2)
            text = json.dumps(arg).encode()
            if fv.strict_json(text, allow_nul=True) is not INVALID and len(text) <= 400:
                return arg
        return "long"

    def method_reply(self):
        """(response-code values, payload) of a device's reply."""
        rng = self.rng
        r = rng.random()
        if r < 0.6:
            codes = [str(rng.choice([0, 200, 404, U32_MAX, rng.randint(0, U32_MAX)]))]
        else:
            codes = [rng.choice(RESPONSE_CODES) for _ in range(rng.randint(0, 2))]
        s = rng.random()
        if s < 0.15:
            payload = b""
        elif s < 0.45:
            payload = fv.dumps(rng, fv.random_value(rng, max_depth=3))
        elif s < 0.6:
            payload = (rand_text(rng, 40) + rng.choice(["", "\x00"])).encode()
        elif s < 0.75:
            payload = fv.mutate_bytes(rng, fv.dumps(rng, fv.random_value(rng, max_depth=2)))
        elif s < 0.8:
            payload = b'"' + b"q" * rng.choice([fv.METHOD_PAYLOAD_MAX - 2,
                                                fv.METHOD_PAYLOAD_MAX - 1]) + b'"'
        else:
            payload = rng.choice(EXOTIC)
        return codes, payload

    def op_method_call(self, dev):
        rng = self.rng
        if "$iothub/methods/+" not in dev.subs:
            o = self.subscribe(dev, [("$iothub/methods/+", 0)], "subscribe methods/+")
            self.check(o.kind == "suback" and o.pkt.reason_codes == [0], "SUBACK %r" % o, dev)
            dev.subs.add("$iothub/methods/+")
        name = rng.choice(["reboot", "m", "get-state", "x_1", "UPPER", "ä", "méthode"])
        arg = self.method_argument()
        call = self.pool.submit(call_method, self.hub, dev.id, {
            "methodName": name, "payload": arg, "responseTimeoutInSeconds": 5})
        try:
            o = self.await_outcome(dev, "method", what="method call %s" % name)
        except AssertionError as e:   # the HTTP answer may say why
            raise AssertionError("%s\n  the HTTP call: %r" % (e, call.result(25)))
        self.check(o.kind == "method", "method request: got %r" % o, dev)
        req = o.pkt
        corr = req.properties.get("CorrelationData")
        self.check(req.topic == "$iothub/methods/" + name and req.qos == 0 and corr and
                   len(corr) <= 16, "method request %r" % req, dev)
        self.check(same(fv.strict_json(req.payload, ints_as_reals=True, allow_nul=True), arg),
                   "method payload %r, sent %r" % (req.payload[:200], short(arg)), dev)
        if rng.random() < 0.2:   # a wrong Correlation Data: dropped
            self.reply(dev, corr + b"x" if len(corr) < 16 else corr[:-1], ["299"], b'"noise"',
                       what="reply, wrong corr")
        if rng.random() < 0.1:   # a reply at QoS 1: refused
            self.reply(dev, corr, ["200"], b"{}", qos=1, what="reply qos 1")
        codes, payload = self.method_reply()
        extra = [(k, v) for k, v in [(prop_value(rng)[:12], prop_value(rng))
                                     for _ in range(rng.randint(0, 2))] if k != "response-code"]
        what = "method %s reply" % name
        label = self.reply(dev, corr, codes, payload, extra=extra, what=what)
        resp = call.result(25)
        self.check(not isinstance(resp, Exception), "%s: the HTTP call: %r" % (what, resp), dev)
        if label.startswith("disc:"):   # a reply taken as malformed (MQTT's MAY): no answer
            self.check(resp.status == 504, "%s: %r after a DISCONNECT" % (what, resp), dev)
        else:
            self.check_method_result(dev, resp, codes, payload, what)

    def check_method_result(self, dev, resp, codes, payload, what):
        status, body = fv.method_reply_result(codes, payload)
        what = "%s %r payload %r" % (what, codes, payload[:60])
        self.check(resp.status == status, "%s: HTTP %d expected, got %r" % (what, status, resp),
                   dev)
        try:
            got = resp.json()
        except ValueError:
            self.fail("%s: HTTP body is not JSON: %r" % (what, resp), dev)
        if status == 502:
            self.check(resp.error_code == "DeviceInvalidResponse", "%s: %r" % (what, resp), dev)
        else:
            self.check(same(got, body), "%s: caller got %r, expected %r" % (
                what, short(got), short(body)), dev)

    # ------------------------------------------------------------ MQTT level
    def op_subscribe(self, dev):
        rng = self.rng
        filters, expected = [], []
        for _ in range(rng.randint(1, 3)):
            _, names, codes = rng.choices(SUBSCRIPTIONS, [w for w, _, _ in SUBSCRIPTIONS])[0]
            q = rng.choice([0, 1])
            filters.append((rng.choice(names), q))
            expected.append({1} if codes == {0, 1} and q else codes)
        valid = {f for (f, _), e in zip(filters, expected) if e & {0, 1}}
        if len(dev.subs | valid) > 40:
            return self.op_unsubscribe(dev)
        what = "subscribe %r" % [(short(f, 30), q) for f, q in filters]
        o = self.subscribe(dev, filters, what)
        if o.kind != "suback":
            self.expect(dev, o, set(), what)
        codes = o.pkt.reason_codes
        self.note(dev, "%s -> %r" % (what, codes))
        self.check(len(codes) == len(filters) and all(c in e for c, e in zip(codes, expected)),
                   "%s: SUBACK %r, expected %r (spec §2)" % (what, codes, expected), dev)
        dev.subs |= valid

    def op_unsubscribe(self, dev):
        f = self.rng.choice(sorted(dev.subs) + ["$iothub/responses", "$iothub/twin/gett",
                                                "$iothub/methods/zz"])
        if f in dev.subs:
            e = {0}
        elif f == "$iothub/responses":
            e = {0, 0x11}     # undecided: the server subscribed it, not the device
        else:
            e = {0x11, 0x8F}
        pid = dev.c.next_pid()
        dev.c.send_raw(packet(raw.UNSUBSCRIBE, 2, raw.struct.pack("!H", pid) + b"\x00" +
                              enc_str(f)))
        what = "unsubscribe %r" % f
        o = self.await_outcome(dev, "unsuback", pid=pid, what=what)
        if o.kind != "unsuback":
            self.expect(dev, o, set(), what)
        self.note(dev, "%s -> %r" % (what, o.pkt.reason_codes))
        self.check(len(o.pkt.reason_codes) == 1 and o.pkt.reason_codes[0] in e,
                   "%s: UNSUBACK %r, expected one of %r" % (what, o.pkt.reason_codes, e), dev)
        dev.subs.discard(f)
        if f == "$iothub/responses":   # spec §2: re-instated by the server
            self.op_twin_get(dev)

    def op_mqtt_level(self, dev):
        """MQTT rules on the device API's topics (test_limits, test_malformed,
        docs/RELIABILITY.md)."""
        rng = self.rng
        c = dev.c
        topic = rng.choice(VALID_TOPICS)
        r = rng.randrange(6)
        if r == 0:
            data = c.publish_bytes(topic, b"{}", 2, False, False, c.next_pid(),
                                   {"CorrelationData": b"q2"})
            allowed, what = {"disc:0x9B*"}, "QoS 2 on %s" % topic
        elif r == 1:
            data = c.publish_bytes(topic, b"{}", 0, False, False, None,
                                   {"TopicAlias": rng.choice([0, 11, 12, 65535])})
            allowed, what = {"disc:0x94*", "disc:0x82*"}, "invalid topic alias"
        elif r == 2:
            free = [a for a in range(1, 11) if a not in dev.aliases]
            a = rng.choice(free) if free else 1
            dev.aliases.pop(a, None)
            data = c.publish_bytes("", b"{}", 0, False, False, None, {"TopicAlias": a})
            allowed, what = {"disc:0x82*", "disc:0x94*"}, "empty topic, unknown alias %d" % a
        elif r == 3:
            bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82"])
            block = b"\x26" + enc_str(b"@k") + enc_str(b"v" + bad)
            data = packet(raw.PUBLISH, 0, enc_str(topic) + raw.enc_varint(len(block)) + block +
                          b"{}")
            allowed, what = {"disc:0x81*"}, "invalid UTF-8 in a user property"
        elif r == 4:
            data = c.publish_bytes(topic, b"{}", 0, False, False, None,
                                   {"PayloadFormatIndicator": rng.choice([2, 7, 255])})
            allowed, what = {"disc:0x81*", "disc:0x82*"}, "Payload Format Indicator > 1"
        else:
            data = c.publish_bytes(topic, b"{}", 0, False, True, None, {"CorrelationData": b"d"})
            allowed, what = {"disc:0x81*", "disc:0x82*"}, "DUP with QoS 0"
        c.send_raw(data)
        self.expect(dev, self.ping(dev, what), allowed, what)

    def op_reconnect(self, dev):
        if self.rng.random() < 0.5:
            dev.c.disconnect()
            self.note(dev, "client DISCONNECT, reconnect")
        else:
            dev.c.close()
            self.note(dev, "socket closed, reconnect")
        dev.connect()

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

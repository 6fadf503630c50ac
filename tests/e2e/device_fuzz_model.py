"""The device fuzz test's model of the hub (test_device_fuzz.py): what
it sends (payload, topic and property generators) and what the spec
allows back (oracles for patches, topics, Correlation Data and answers),
and the state of one simulated device (Dev)."""

import http.client
import json
import re
import urllib.parse

import fuzz_values as fv
import mqtt5raw as raw
from fuzz_values import INVALID, U64_MAX
from hub_device import connect_device, user_props
from service_client import ServiceClient

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

"""Randomized requests on the service API's write routes, each judged by an
oracle that knows in advance what the hub must answer.

Where test_service.py, test_twin_service.py, test_methods.py and test_c2d.py
try one hand-picked case at a time, this file sends a few hundred generated
requests per route (fuzz_values.py: bodies valid most of the time and at the
edges of every limit, sometimes broken JSON or not UTF-8; random If-Match
forms, ids, headers) and checks every answer against a model:

- Twins (PATCH and PUT on device and module twins): the model decides each
  verdict from service-rest.md and iothub-mqtt5.md §7 (shape, If-Match,
  keys, depth, strings, integers, section sizes), applies accepted writes
  as RFC 7386 merge patches or replacements, and must equal the twin the
  hub returns, $version included. A refused write must change nothing.
- Direct methods: the verdict on the body (methodName, timeouts, payload),
  then what the device receives and what the caller gets back from the
  device's random answer (JSON kept as sent, text as a string, not UTF-8 or
  a bad response-code 502).
- Cloud-to-device sends: the verdict on the headers and body, then the
  command the device receives, property by property; a queue filled while
  the device is away refuses the 51st with 403 and delivers the 50 later.
- Device identities: refused writes change nothing, accepted ones read back
  the same, and the registry, its statistics and the twins agree at the end.

Every error answer must carry the spec's error body with the code its
status stands for; a 500 or a dropped connection fails the test. The hub
runs under the sanitizers in the asan e2e run, which is where memory errors
in the handlers show.

IOTHUBD_FUZZ_SEED and IOTHUBD_FUZZ_COUNT replay or lengthen a run; the seed
is in every failure message.
"""

import calendar
import collections
import json
import os
import random
import threading
import time
import urllib.parse

import fuzz_values as fv
import mqtt5raw as raw
from hub_device import Devices, connect_device, user_props
from service_client import ServiceClient

SEED = int(os.environ.get("IOTHUBD_FUZZ_SEED") or "20261207")
COUNT = int(os.environ.get("IOTHUBD_FUZZ_COUNT") or "300")

# The code each error status may carry (service-rest.md "Common rules").
ERROR_CODES = {400: {"ArgumentInvalid"}, 403: {"DeviceMaximumQueueDepthExceeded"},
               404: {"DeviceNotFound", "DeviceNotOnline"}, 412: {"PreconditionFailed"},
               413: {"MessageTooLarge"}, 502: {"DeviceInvalidResponse"}}


def q(s):
    return urllib.parse.quote(s, safe="")


def check_answer(r, expected, what):
    """r.status is one of `expected`; an error carries the spec's body."""
    assert r.status in expected, "%s: expected %s, got %r" % (what, sorted(expected), r)
    if r.status >= 400:
        body = json_of(r, what)
        assert set(body) == {"Message", "ExceptionMessage"}, (what, r)
        assert r.error_code in ERROR_CODES[r.status], (what, r)
    assert r.headers.get("x-ms-request-id"), (what, r)


def json_of(r, what):
    """r's body as JSON; a body that is not JSON fails with `what`."""
    try:
        return r.json()
    except ValueError as e:
        raise AssertionError("%s: the body is not JSON (%s): %r" % (what, e, r))


def seeded(name):
    """The generator of one test, and the words that replay it."""
    seed = "%d/%s" % (SEED, name)
    return random.Random(seed), "seed %s (IOTHUBD_FUZZ_SEED=%d)" % (seed, SEED)


def run_together(work, n, why, timeout=50):
    """Calls work(0) .. work(n - 1) on n threads at once; fails with what
    any of them raised, or if one did not finish."""
    errors = []

    def guarded(i):
        try:
            work(i)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not errors and not any(t.is_alive() for t in threads), (why, errors)


# ================================================================== twins
class TwinModel:
    """What one twin must hold: tags, desired (without $-fields), the
    desired $version and the current etag."""

    def __init__(self, twin):
        self.tags = twin.get("tags", {})
        self.desired = strip_dollar(twin["properties"]["desired"])
        self.version = twin["properties"]["desired"]["$version"]
        self.etag = twin["etag"]

    def verdict(self, body, replace, if_match):
        """(expected status, new tags, new desired) for a write."""
        value = fv.strict_json(body, allow_nul=True)
        if value is fv.INVALID or not isinstance(value, dict):
            return 400, None, None
        props = value.get("properties")
        if (("tags" in value and not isinstance(value["tags"], dict))
                or ("properties" in value and not isinstance(props, dict))
                or (isinstance(props, dict) and "desired" in props
                    and not isinstance(props["desired"], dict))):
            return 400, None, None
        tags = value.get("tags")
        desired = props.get("desired") if isinstance(props, dict) else None
        if not replace and tags is None and desired is None:
            return 400, None, None
        if desired is not None:
            desired = {k: v for k, v in desired.items() if k not in ("$metadata", "$version")}
        if if_match is not None and if_match != "*" and if_match != self.etag:
            return 412, None, None
        if replace:
            tags, desired = tags or {}, desired or {}
        if any(part is not None and fv.twin_patch_problem(part) for part in (tags, desired)):
            return 400, None, None
        new_tags = self.tags if tags is None else fv.merge_patch({} if replace else self.tags, tags)
        new_desired = (self.desired if desired is None
                       else fv.merge_patch({} if replace else self.desired, desired))
        if fv.twin_size(new_tags) > fv.TWIN_TAGS_MAX or fv.twin_size(new_desired) > fv.TWIN_PROPERTIES_MAX:
            return 400, None, None
        return 200, (new_tags if tags is not None else None), (new_desired if desired is not None else None)

    def check(self, twin, why):
        assert twin["tags"] == self.tags, why
        desired = twin["properties"]["desired"]
        assert strip_dollar(desired) == self.desired, why
        assert desired["$version"] == self.version, why
        assert twin["etag"] == self.etag, why


def strip_dollar(section):
    return {k: v for k, v in section.items() if k not in ("$metadata", "$version")}


def random_if_match(rng, etag):
    """(header value or None, the etag it names: None, "*" or a text)."""
    r = rng.random()
    if r < 0.55:
        return None, None
    forms = [('*', '*'), ('"%s"' % etag, etag), (etag, etag), ('W/"%s"' % etag, etag),
             ('"stale%s"' % etag[:4], 'stale' + etag[:4]), ('"*"', '*'), ('"' + 'e' * 300 + '"', 'x')]
    return rng.choice(forms)


def malformed_if_match(rng):
    return rng.choice(['"', '""', 'abc"', '"abc', ''])


def twin_write_body(rng):
    body = {}
    if rng.random() < 0.5:
        body["tags"] = fv.random_section(rng)
    if rng.random() < 0.75:
        desired = fv.random_section(rng)
        if isinstance(desired, dict) and rng.random() < 0.1:
            desired["$metadata"] = {"$lastUpdated": "2020-01-01T00:00:00Z"}
            desired["$version"] = rng.randint(0, 99)
        body["properties"] = {"desired": desired}
        if rng.random() < 0.1:
            body["properties"]["reported"] = {"ignored": 1}
    if rng.random() < 0.05:
        body["properties"] = rng.choice([None, [], "x", {"reported": {}}])
    if rng.random() < 0.05:
        body = rng.choice([[], "twin", None, 5])
    return fv.body_of(rng, body)


def test_twin_writes_follow_the_model(hub):
    rng, why = seeded("twins")
    svc = ServiceClient(hub)
    devs = Devices(hub)
    targets = ["/twins/fz-twin-a", "/twins/fz-twin-b", "/twins/fz-twin-a/modules/m%21x"]
    devs.create("fz-twin-a")
    devs.create("fz-twin-b")
    devs.create_module("fz-twin-a", "m!x")
    models = {}
    for path in targets:
        r = svc.request("GET", path)
        check_answer(r, {200}, why)
        models[path] = TwinModel(r.json())
    seen = collections.Counter()
    for i in range(COUNT):
        step = "%s, step %d" % (why, i)
        r = rng.random()
        if r < 0.05:  # ids the registry could never hold: 400 before anything
            path = "/twins/" + q(rng.choice(["a" * 129, "a b", "caf\u00e9", "x/y", "~"]))
            res = svc.request(rng.choice(["GET", "PATCH", "PUT"]), path, b'{"tags":{}}')
            check_answer(res, {400}, step)
            continue
        if r < 0.10:  # a device that does not exist
            body = twin_write_body(rng)
            res = svc.request(rng.choice(["PATCH", "PUT"]), "/twins/fz-nobody", body)
            check_answer(res, {400, 404}, step)
            continue
        path = rng.choice(targets)
        model = models[path]
        if r < 0.18:
            res = svc.request("GET", path)
            check_answer(res, {200}, step)
            model.check(res.json(), step)
            continue
        replace = r > 0.78
        body = twin_write_body(rng)
        headers = {}
        if rng.random() < 0.04:
            headers["If-Match"] = malformed_if_match(rng)
            expected, tags, desired = 400, None, None
        else:
            header, names = random_if_match(rng, model.etag)
            if header is not None:
                headers["If-Match"] = header
            expected, tags, desired = model.verdict(body, replace, names)
            if names == "x":  # longer than any etag: refused before the body is read
                expected = 412
        res = svc.request("PUT" if replace else "PATCH", path, body, headers=headers)
        step += " (%s %s %r If-Match %r)" % ("PUT" if replace else "PATCH", path, body[:300],
                                            headers.get("If-Match"))
        check_answer(res, {expected}, step)
        seen[expected] += 1
        if expected != 200:
            continue
        twin = json_of(res, step)
        assert res.headers["etag"] == '"%s"' % twin["etag"], step
        assert twin["etag"] != model.etag, step
        if tags is not None:
            model.tags = tags
        if desired is not None:
            model.desired = desired
            model.version += 1
        model.etag = twin["etag"]
        model.check(twin, step)
    for path, model in models.items():  # what was refused changed nothing, even later
        res = svc.request("GET", path)
        check_answer(res, {200}, why)
        model.check(res.json(), why)
    assert min(seen[200], seen[400], seen[412]) >= COUNT // 50, (why, seen)


def test_conditional_twin_writes_from_many_clients_lose_nothing(hub):
    """Optimistic concurrency (If-Match) under contention: writers read the
    twin, add one to a counter and write it back with the etag they read,
    retrying on 412, while another client patches tags unconditionally
    (moving the etag under them). Every increment that got 200 must be in
    the final counter, exactly once, and desired $version must count the
    accepted writes."""
    rng, why = seeded("contention")
    Devices(hub).create("fz-cas")
    path = "/twins/fz-cas"
    writers, rounds = 4, max(10, COUNT // 10)
    done = collections.Counter()

    def writer(n):
        svc = ServiceClient(hub)
        for i in range(rounds):
            while True:
                cur = svc.request("GET", path)
                check_answer(cur, {200}, why)
                count = cur.json()["properties"]["desired"].get("count", 0)
                res = svc.request("PATCH", path, {"properties": {"desired": {
                    "count": count + 1, "w%d" % n: i}}}, headers={"If-Match": cur.headers["etag"]})
                check_answer(res, {200, 412}, why)
                if res.status == 200:
                    done["desired"] += 1
                    break
                done["retries"] += 1

    def tagger():
        svc = ServiceClient(hub)
        for i in range(rounds * 2):
            res = svc.request("PATCH", path, {"tags": {"t": rng.randrange(1000)}})
            check_answer(res, {200}, why)

    run_together(lambda n: writer(n) if n < writers else tagger(), writers + 1, why)
    twin = ServiceClient(hub).request("GET", path).json()
    desired = twin["properties"]["desired"]
    assert done["desired"] == writers * rounds, (why, done)
    assert done["retries"] > 0, (why, "no write ever lost a race: nothing was tested", done)
    assert desired["count"] == writers * rounds, (why, desired, done)
    assert desired["$version"] == 1 + writers * rounds, (why, desired)
    assert all(desired["w%d" % n] == rounds - 1 for n in range(writers)), (why, desired)


# ================================================================== methods
METHOD_NAMES = ["reboot", "a", "m" * 128, "m" * 129, "", "a/b", "a+b", "a#b", "tab\t", "caf\u00e9",
                "$x", "nul\x00", "x" * 50]
RESPONSE_CODES = ["200", "0", "4294967295", "00201", "4294967296", "-1", "abc", "", " 200", "2e2"]


def method_body(rng, name):
    body = {"methodName": name}
    if rng.random() < 0.8:
        body["payload"] = fv.random_value(rng)
        if rng.random() < 0.08:
            body["payload"] = "p" * (rng.choice([100, 140]) * 1024)
    for field, lo, hi in (("responseTimeoutInSeconds", 5, 300), ("connectTimeoutInSeconds", 0, 300)):
        if rng.random() < 0.25:
            body[field] = rng.choice([lo, hi, lo - 1, hi + 1, None, 10, 10.0, "10", True, -2 ** 63])
    if rng.random() < 0.05:
        del body["methodName"]
    if rng.random() < 0.03:
        body = rng.choice([[], "call", None])
    return body


def method_verdict(body_bytes):
    """(status, payload value sent to the device) before the device is involved."""
    value = fv.strict_json(body_bytes, allow_nul=True)
    if value is fv.INVALID or not isinstance(value, dict):
        return 400, None
    name = value.get("methodName")
    if (not isinstance(name, str) or not 1 <= len(name.encode()) <= 128
            or any(c in "/+#" or ord(c) < 0x20 or ord(c) == 0x7F for c in name)):
        return 400, None
    for field, lo, hi in (("responseTimeoutInSeconds", 5, 300), ("connectTimeoutInSeconds", 0, 300)):
        v = value.get(field)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi):
            return 400, None
    payload = value.get("payload")
    if len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()) > 128 * 1024:
        return 413, None
    return 200, payload


def random_device_reply(rng):
    code = rng.choice(RESPONSE_CODES) if rng.random() < 0.3 else str(rng.randint(100, 599))
    r = rng.random()
    if r < 0.6:
        payload = fv.dumps(rng, fv.random_value(rng))
    elif r < 0.75:
        payload = fv.mutate_bytes(rng, fv.dumps(rng, fv.random_value(rng)))
    elif r < 0.85:
        payload = rng.choice([b"", b"  ", b"plain text", b"\xff\xfe", b"1e999", b"[1,", b"\xef\xbb\xbf{}",
                              b"12345678901234567890123"])
    else:
        payload = fv.dumps(rng, fv.random_value(rng, max_depth=2))
    return code, payload


class MethodDevice(threading.Thread):
    """Answers every invocation from a script of (code, payload) replies
    and records what it was sent."""

    def __init__(self, client, replies):
        super().__init__(daemon=True)
        self.c = client
        self.replies = replies  # queue of (code, payload), one per expected call
        self.received = []
        self.error = None
        self.stop = False

    def run(self):
        try:
            while not self.stop:
                try:
                    p = self.c.expect(raw.PUBLISH, timeout=0.2)
                except raw.Timeout:
                    continue
                self.received.append(p)
                code, payload = self.replies.pop(0)
                self.c.publish("$iothub/responses", payload, properties={
                    "CorrelationData": p.properties["CorrelationData"],
                    "UserProperty": [("response-code", code)]})
        except Exception as e:  # reported by the test
            self.error = e


def test_method_calls_follow_the_model(hub):
    rng, why = seeded("methods")
    devs = Devices(hub)
    device_id, key, _ = devs.new_sas_device("fz-meth")
    c = connect_device(hub, device_id, key)
    assert c.subscribe("$iothub/methods/+").reason_codes == [0]
    svc = ServiceClient(hub)
    replies = []
    device = MethodDevice(c, replies)
    device.start()
    path = "/twins/%s/methods" % q(device_id)
    calls = 0
    seen = collections.Counter()
    try:
        for i in range(COUNT):
            step = "%s, step %d" % (why, i)
            name = rng.choice(METHOD_NAMES) if rng.random() < 0.2 else "m%d" % i
            body = fv.body_of(rng, method_body(rng, name), p_mutate=0.1)
            expected, payload = method_verdict(body)
            reply = random_device_reply(rng)
            if expected == 200:
                replies.append(reply)
                first = len(device.received)
            res = svc.request("POST", path, body)
            step += " (body %r, reply %r)" % (body[:200], (reply[0], reply[1][:200]))
            seen[res.status] += 1
            if expected != 200:
                check_answer(res, {expected}, step)
                continue
            calls += 1
            status, result = fv.method_reply_result([reply[0]], reply[1])
            check_answer(res, {status}, step)
            assert device.error is None, (step, device.error)
            sent = device.received[first]
            assert sent.topic == "$iothub/methods/" + json.loads(body)["methodName"], step
            assert json.loads(sent.payload) == payload, step
            if status == 200:
                assert json_of(res, step) == result, step
        res = svc.request("POST", "/twins/fz-nobody/methods", {"methodName": "m"})
        check_answer(res, {404}, why)
        assert res.error_code == "DeviceNotFound", (why, res)
    finally:
        device.stop = True
        device.join(5)
    assert device.error is None, (why, device.error)
    assert not replies and len(device.received) == calls, why
    assert min(seen[200], seen[400], seen[502]) >= COUNT // 50 and seen[413], (why, seen)
    c.disconnect()


# ================================================================== commands
HEADER_TEXT = "abcXYZ019 -_.:;/=+!~@\u00e9\u20ac\"'"


def header_text(rng, n=None):
    n = rng.randint(1, 20) if n is None else n
    return "".join(rng.choice(HEADER_TEXT) for _ in range(n)).strip(" ") or "x"


def c2d_request(rng):
    """(headers as bytes, body, expected statuses, the properties the device
    must see if it is accepted)."""
    headers, props, bad, large = {}, {}, False, False
    for name, prop in (("iothub-messageid", "message-id"), ("iothub-correlationid", "correlation-id"),
                       ("iothub-userid", "user-id"), ("Content-Encoding", "content-encoding")):
        if rng.random() < 0.4:
            value = header_text(rng, rng.choice([128, 129]) if rng.random() < 0.1 else None)
            bad |= prop != "content-encoding" and len(value.encode()) > 128
            headers[name] = value.encode()
            props[prop] = value
    if rng.random() < 0.3:
        value = header_text(rng)
        headers["Content-Type"] = value.encode()
        props["ContentType"] = value
    if rng.random() < 0.05:
        headers[rng.choice(["iothub-messageid", "iothub-app-x"])] = b"bad\xff"
        bad = True
    if rng.random() < 0.2:
        ack = rng.choice(["none", "positive", "NEGATIVE", "full", "all", "1"])
        headers["iothub-ack"] = ack.encode()
        bad |= ack.lower() not in ("none", "positive", "negative", "full")
    now_ms = int(time.time() * 1000)
    if rng.random() < 0.2:
        later = fv.iso_ms(now_ms + 600000)
        expiry = rng.choice(["30", "120", "172700", "172900", "9999999999", "1.5", "-5", later,
                             fv.iso_ms(now_ms - 600000), "2026-02-30T00:00:00Z"])
        headers["iothub-expiry"] = expiry.encode()
        bad |= expiry not in ("120", "172700", later)
    if rng.random() < 0.2:
        created = rng.choice(["1600000000000", "0", "1" * 16, "2020-01-01T00:00:00Z",
                              "2020-01-01T00:00:00.5+00:00", "2020-13-01T00:00:00Z", "yesterday"])
        headers["iothub-creation-time"] = created.encode()
        ok = {"1600000000000": 1600000000000, "2020-01-01T00:00:00Z": 1577836800000,
              "2020-01-01T00:00:00.5+00:00": 1577836800500}
        if created in ok:
            props["creation-time"] = str(ok[created])
        else:
            bad = True
    for _ in range(rng.choice([0, 0, 1, 3])):
        name = rng.choice(["color", "k-1", "a.b", "x_y", "n" * 40])
        value = header_text(rng)
        headers["iothub-app-" + name] = value.encode()
        props["@" + name] = value  # one value per name: the last one
    if rng.random() < 0.03:
        headers["iothub-app-"] = b"x"
        bad = True
    n = rng.choice([0, 1, 100, 1000] * 8 + [70000])
    large = n > 65536
    body = bytes(rng.randrange(256) for _ in range(min(n, 64))) * (n // 64 + 1)
    body = body[:n]
    expected = {400} if bad else set()
    if large:
        expected |= {413}
    return headers, body, expected or {201}, props


def receive_command(c, step):
    p = c.expect(raw.PUBLISH, timeout=10.0, stash=True)
    assert p.topic == "$iothub/commands" and p.qos == 1, (step, p)
    c.puback(p.packet_id)
    return p


def check_command(p, sent_body, props, receipt, step):
    assert p.payload == sent_body, step
    users = user_props(p.properties)
    assert users["sequence-no"] == str(receipt["sequenceNumber"]), (step, users)
    # the receipt always names the message; the device sees the id only when
    # the sender set one (iothub-mqtt5.md "Receive commands")
    assert users.get("message-id") in (None, receipt["messageId"]), (step, users)
    assert set(users) - {"sequence-no", "enqueued-time", "delivery-count"} == set(props) - {"ContentType"}, \
        (step, users)
    for name, value in props.items():
        got = p.properties.get("ContentType") if name == "ContentType" else users.get(name)
        assert got == value, (step, name, got, value)


def send_command(svc, dev, headers, body):
    return svc.request("POST", "/devices/%s/messages/deviceBound" % q(dev), body, headers=headers)


def test_command_sends_follow_the_model(hub):
    rng, why = seeded("c2d")
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device("fz-c2d")
    svc = ServiceClient(hub)
    c = connect_device(hub, dev, key)
    assert c.subscribe([("$iothub/commands", raw.sub_options(1))]).reason_codes == [1]
    sequence = 0
    seen = collections.Counter()
    for i in range(COUNT):
        step = "%s, step %d" % (why, i)
        headers, body, expected, props = c2d_request(rng)
        res = send_command(svc, dev, headers, body)
        step += " (headers %r, %d body bytes)" % (headers, len(body))
        check_answer(res, expected, step)
        seen[res.status] += 1
        if res.status != 201:
            continue
        receipt = json_of(res, step)
        assert receipt["sequenceNumber"] > sequence, step
        sequence = receipt["sequenceNumber"]
        if "message-id" in props:
            assert receipt["messageId"] == props["message-id"], step
        check_command(receive_command(c, step), body, props, receipt, step)
    assert min(seen[201], seen[400]) >= COUNT // 50 and seen[413], (why, seen)
    # Away: the queue takes 50 and refuses the 51st; all 50 arrive later, in order.
    c.disconnect()
    receipts = []
    for i in range(51):
        res = send_command(svc, dev, {"iothub-messageid": b"away-%d" % i}, b"%d" % i)
        check_answer(res, {403} if i == 50 else {201}, "%s, away %d" % (why, i))
        receipts.append(res.json())
    res = svc.request("GET", "/devices/" + q(dev))
    assert res.json()["cloudToDeviceMessageCount"] == 50, why
    c = connect_device(hub, dev, key)
    assert c.subscribe([("$iothub/commands", raw.sub_options(1))]).reason_codes == [1]
    for i in range(50):
        check_command(receive_command(c, why), b"%d" % i, {"message-id": "away-%d" % i}, receipts[i], "%s, back %d" % (why, i))
    res = send_command(svc, "fz-nobody", {}, b"x")
    check_answer(res, {404}, why)
    c.disconnect()


def test_concurrent_sends_fill_the_queue_exactly(hub):
    """Four clients send to an offline device at once, 20 each: exactly 50
    are accepted (the queue depth, §7) and 30 refused with 403, whatever
    the interleaving, and the device later gets exactly the accepted 50,
    each once, in sequence-number order."""
    why = seeded("c2d-race")[1]
    dev, key, _ = Devices(hub).new_sas_device("fz-race")
    answers = []

    def sender(n):
        svc = ServiceClient(hub)
        for i in range(20):
            res = send_command(svc, dev, {"iothub-messageid": b"s%d-%d" % (n, i)}, b"%d/%d" % (n, i))
            check_answer(res, {201, 403}, why)
            answers.append((res.status, json_of(res, why), "s%d-%d" % (n, i)))

    run_together(sender, 4, why)
    accepted = sorted((body["sequenceNumber"], mid) for status, body, mid in answers if status == 201)
    assert len(accepted) == 50 and len(answers) == 80, (why, len(accepted), len(answers))
    assert all(body["Message"].startswith("ErrorCode:DeviceMaximumQueueDepthExceeded")
               for status, body, _ in answers if status == 403), why
    c = connect_device(hub, dev, key)
    assert c.subscribe([("$iothub/commands", raw.sub_options(1))]).reason_codes == [1]
    for seq, mid in accepted:
        p = receive_command(c, why)
        users = user_props(p.properties)
        assert (users["sequence-no"], users["message-id"]) == (str(seq), mid), (why, users)
    got = [pk for pk in c.recv_all(0.5) if pk.type == raw.PUBLISH]
    assert not got, (why, got)
    c.disconnect()


# ================================================================== identities
def identity_body(rng, device_id, module_id=None):
    body = {"deviceId": device_id}
    if module_id is not None:
        body["moduleId"] = module_id
    r = rng.random()
    if r < 0.3:
        body["status"] = rng.choice(["enabled", "disabled", "Enabled", "", None, 1])
    if rng.random() < 0.2:
        body["statusReason"] = rng.choice(["maintenance", "", "x" * 200, None, 5])
    if rng.random() < 0.4:
        kind = rng.choice(["sas", "selfSigned", "certificateAuthority", "none", "SAS", "", None, 3])
        auth = {"type": kind}
        if rng.random() < 0.6:
            auth["symmetricKey"] = {"primaryKey": rng.choice(["", "aGVsbG8=", "A" * 44, "!!", None]),
                                    "secondaryKey": rng.choice(["", "B" * 44, "x"])}
        if rng.random() < 0.4:
            auth["x509Thumbprint"] = {"primaryThumbprint": rng.choice(["", "ab" * 20, "AB" * 32, "zz"]),
                                      "secondaryThumbprint": rng.choice(["", None, "cd" * 32])}
        body["authentication"] = auth
    if rng.random() < 0.1:
        body["capabilities"] = rng.choice([{"iotEdge": True}, {"iotEdge": "yes"}, None])
    if rng.random() < 0.1:
        body["deviceId"] = rng.choice(["other", "", None, 7])
    if rng.random() < 0.1:
        body[fv.random_key(rng)] = fv.random_value(rng)
    return fv.body_of(rng, body, p_mutate=0.1)


def test_identity_writes_change_nothing_when_refused(hub):
    rng, why = seeded("identities")
    svc = ServiceClient(hub)
    ids = [("fz-id-%d" % i, None) for i in range(3)] + [("fz-id-0", "mod"), ("fz-id-1", "mod")]
    for i in range(COUNT):
        step = "%s, step %d" % (why, i)
        device_id, module_id = rng.choice(ids)
        path = "/devices/" + q(device_id) + ("/modules/" + q(module_id) if module_id else "")
        before = svc.request("GET", path)
        check_answer(before, {200, 404}, step)
        r = rng.random()
        headers = {}
        if rng.random() < 0.3:
            etag = before.json()["etag"] if before.status == 200 else "nope"
            headers["If-Match"] = rng.choice(["*", '"%s"' % etag, '"old"', '"'])
        if r < 0.15:
            res = svc.request("DELETE", path, headers=headers)
            check_answer(res, {204, 400, 404, 412}, step)
            if res.status == 204:
                check_answer(svc.request("GET", path), {404}, step)
                continue
        else:
            body = identity_body(rng, device_id, module_id)
            res = svc.request("PUT", path, body, headers=headers)
            step += " (PUT %s %r If-Match %r)" % (path, body[:300], headers.get("If-Match"))
            check_answer(res, {200, 201, 400, 404, 409, 412}, step)
            if res.status in (200, 201):
                assert (res.status == 201) == (before.status == 404 and "If-Match" not in headers), step
                got = svc.request("GET", path)
                check_answer(got, {200}, step)
                assert got.json() == res.json(), step
                assert got.json()["deviceId"] == device_id, step
                assert got.json().get("moduleId") == module_id, step
                continue
        after = svc.request("GET", path)  # a refusal changed nothing
        assert after.status == before.status, step
        if after.status == 200:
            assert after.json() == before.json(), step
    listed = svc.request("GET", "/devices")
    check_answer(listed, {200}, why)
    devices = {d["deviceId"]: d for d in listed.json()}
    stats = svc.request("GET", "/statistics/devices").json()
    assert stats["totalDeviceCount"] == len(devices), (why, stats)
    assert stats["enabledDeviceCount"] + stats["disabledDeviceCount"] == len(devices), (why, stats)
    for device_id, d in devices.items():
        one = svc.request("GET", "/devices/" + q(device_id))
        check_answer(one, {200}, why)
        assert one.json()["etag"] == d["etag"], why
        twin = svc.request("GET", "/twins/" + q(device_id))
        check_answer(twin, {200}, why)
        assert twin.json()["status"] == d["status"], why


def test_concurrent_creates_make_one_device(hub):
    """Clients creating the same new device at once: exactly one 201, the
    others 200 (a replace, service-rest.md "create / replace"), and with
    If-Match "*" (update only) every one 404 or 200 after it exists; the
    etags returned are all different and GET shows one of them."""
    why = seeded("registry-race")[1]
    for round_ in range(5):
        device_id = "fz-dup-%d" % round_
        answers = []

        def creator(n):
            headers = {"If-Match": "*"} if n == 3 else {}
            res = ServiceClient(hub).request("PUT", "/devices/" + q(device_id), {
                "deviceId": device_id, "statusReason": "by %d" % n}, headers=headers)
            check_answer(res, {404, 200} if headers else {200, 201}, why)
            answers.append((res.status, json_of(res, why)))

        run_together(creator, 4, why)
        assert [st for st, _ in answers].count(201) == 1, (why, answers)
        etags = [body["etag"] for st, body in answers if st in (200, 201)]
        assert len(set(etags)) == len(etags), (why, answers)
        now = ServiceClient(hub).request("GET", "/devices/" + q(device_id)).json()
        assert now["etag"] in etags, (why, now, answers)


def test_oracles_are_exact():
    """The oracles' own edge cases, so that a wrong oracle cannot pass as a
    lenient hub."""
    assert fv.strict_json(b'{"a":1}') == {"a": 1}
    assert fv.strict_json(b'{"a":"\\u0000"}', allow_nul=True) == {"a": "\x00"}
    for bad in (b'{"a":NaN}', b'{"a":"\\u0000"}', b'{"a":"\\ud800"}', b'{"a":1e999}',
                b'{"a":18446744073709551616}', b'\xef\xbb\xbf{}', b'{"a":"\xff"}', b'{"a":1,}'):
        assert fv.strict_json(bad) is fv.INVALID, bad
    assert fv.merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None}, "d": {"e": None}}) == \
        {"a": {"c": 2}, "d": {}}
    assert fv.twin_patch_problem({"deep": fv.nested(10)}) is None
    assert fv.twin_patch_problem({"deep": fv.nested(11)}) == "too deep"
    assert fv.twin_patch_problem({"a": [[[[[[[[[[1]]]]]]]]]]}) is None
    assert fv.twin_patch_problem({"a": [[[[[[[[[[[1]]]]]]]]]]]}) == "too deep"
    assert fv.twin_patch_problem({"k" * 1024: 1}) is None
    assert fv.twin_patch_problem({"k" * 1025: 1}) == "key length"
    assert fv.twin_patch_problem({"x": fv.TWIN_INT_MAX + 1}) == "integer range"
    assert fv.twin_patch_problem({"x": 1.0e300}) is None
    assert fv.twin_size({"ab": "cde", "f": [1, True, None]}) == 2 + 3 + 1 + 8 + 4 + 4
    assert fv.method_reply_result(["200"], b"") == (200, {"status": 200, "payload": None})
    assert fv.method_reply_result(["00201"], b"[1,") == (200, {"status": 201, "payload": "[1,"})
    assert fv.method_reply_result(["4294967296"], b"{}")[0] == 502
    assert fv.method_reply_result(["200"], b"\xff")[0] == 502
    assert fv.method_reply_result(["200"], b"12345678901234567890123") == \
        (200, {"status": 200, "payload": 12345678901234567890123})
    assert method_verdict(b'{"methodName":"a","responseTimeoutInSeconds":4}')[0] == 400
    assert method_verdict(b'{"methodName":"a","connectTimeoutInSeconds":300}') == (200, None)
    assert method_verdict(b'{"methodName":"a/b"}')[0] == 400
    assert calendar.timegm((2020, 1, 1, 0, 0, 0)) * 1000 == 1577836800000

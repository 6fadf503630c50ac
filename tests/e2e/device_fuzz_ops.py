"""The operations of the device fuzz test (test_device_fuzz.py): each
op_* method sends one randomized thing on behalf of a device and checks the
answer against the oracles of device_fuzz_model.

DeviceOps is a mixin of FuzzRun, which supplies the seeded generator
(self.rng), the hub and its service client (self.hub, self.svc), the
thread for HTTP calls (self.pool), the I/O helpers (exchange,
await_outcome, expect, ping) and the reporting ones (check, fail, note)."""

import json
import time

import fuzz_values as fv
import mqtt5raw as raw
from fuzz_values import INVALID, U32_MAX
from mqtt5raw import enc_str, packet
from hub_device import user_props
from device_fuzz_model import (
    ANSWER_S, EXOTIC, GET, MAY_0X99, Outcome, PATCH, REQUEST_PROPS, RESPONSES,
    RESPONSE_CODES, SIZE_PROBLEM, SMALL_TWIN, SUBSCRIPTIONS, SYSTEM_PROPS, TELEMETRY,
    TELEMETRY_UNKNOWN, U64_TEXTS, VALID_TOPICS, call_method, correlated_answers,
    creation_time, first_difference, gen_topic, is_utf8, json_size, patch_body,
    patch_problem, prop_value, props_discouraged, rand_text, same, short, topic_answers)


class DeviceOps:
    """The op_* steps of FuzzRun, and what builds and checks them."""

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

"""Mixed load for the crash-consistency driver, and the journal of what the
hub acknowledged (issue 7; driver: run_crash.py, checks: crash_check.py).

Every thread runs for one round: from a server start until that server is
SIGKILLed, when its requests fail and it sees `round_stop`. What a thread
learns goes into the Journal under one lock, tagged with the server
generation (0 for the first process, +1 per restart):

  telemetry  each message has a unique id in its JSON body; `attempts`
             counts every time it was written to a socket, `acked` the ids
             whose PUBACK 0 arrived. Messages without a PUBACK when the
             connection died are resent first on the next connection, with
             DUP set, as a QoS 1 device does.
  reported   per device, patches {"k": n} with n increasing: the last n
             sent, and (n, $version) of each acknowledged one.
  desired    the same for service PATCHes {"s": n} (HTTP 200 = acked).
  commands   (device, sequenceNumber) and messageId of every 201 (sent
             with iothub-ack: full); each delivery the devices saw, and each
             settlement they sent (complete, abandon or reject) with its time.
  registry   ids reg-N created, updated (status) or deleted over the
             service API: the last acknowledged state, None when an
             operation's outcome is unknown (the server died under it).

Only answers the client actually received count as acknowledged; an
operation cut off by the kill is "unknown" and may or may not be there.
"""

import http.client
import json
import random
import threading
import time
import urllib.parse

import mqtt5raw as raw
from hub_device import sas_connect_props, user_props
from service_client import ServiceClient

TELEMETRY_WINDOW = 4       # QoS 1 messages in flight per device
SETTLE_WEIGHTS = (("complete", 8), ("abandon", 1), ("reject", 1))
DRAIN_REJECT = 0.2         # share of commands the final drain rejects
REG_IDS = 24               # registry churn over reg-0 .. reg-23


class Journal:
    """What was acknowledged, and what the devices saw. One lock for all."""

    def __init__(self, devices):
        self.lock = threading.Lock()
        self.devices = dict(devices)            # device id -> key
        self.gen = 0
        self.killed_at = {}                     # gen -> monotonic time of its SIGKILL
        self.tel_next = {d: 0 for d in devices}  # next message number per device
        self.tel_pending = {d: [] for d in devices}  # sent, no PUBACK: resend first
        self.attempts = {}                      # message id -> times written
        self.acked = set()                      # message ids with PUBACK 0
        self.reported_sent = {d: 0 for d in devices}
        self.reported_acked = {d: [] for d in devices}  # [(n, version)]
        self.desired_sent = {d: 0 for d in devices}
        self.desired_acked = {d: [] for d in devices}
        self.accepted = set()                   # (device, seq) answered 201
        self.message_ids = {}                   # (device, seq) -> messageId
        self.send_unknown = {d: 0 for d in devices}  # sends without an answer
        self.deliveries = []                    # (device, seq, gen, t)
        self.settles = {}                       # (device, seq) -> [(kind, gen, t)]
        self.registry = {}                      # reg id -> "enabled"/"disabled"/False/None
        self.errors = []
        self.stats = {}                         # the checker's latest figures
        self.counts = {"telemetry acked": 0, "reported acked": 0, "desired acked": 0,
                       "commands accepted": 0, "commands settled": 0, "registry acked": 0}

    def error(self, text):
        with self.lock:
            self.errors.append("gen %d: %s" % (self.gen, text))


class Round:
    """The threads of one server generation."""

    def __init__(self, hub, journal, seed, drain=False):
        self.hub = hub
        self.j = journal
        self.stop = threading.Event()
        self.rng = random.Random(seed)
        self.drain = drain  # devices only, completing every command
        self.threads = []

    def start(self):
        targets = [(device_thread, (d,)) for d in sorted(self.j.devices)]
        if not self.drain:
            targets += [(sender_thread, ()), (desired_thread, ()), (registry_thread, ())]
        for n, (fn, args) in enumerate(targets):
            t = threading.Thread(target=fn, args=(self, random.Random(self.rng.random() + n))
                                 + args, daemon=True)
            t.start()
            self.threads.append(t)

    def finish(self, timeout=20):
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
        stuck = [t for t in self.threads if t.is_alive()]
        if stuck:
            self.j.error("%d load threads did not stop" % len(stuck))


# ---- devices ------------------------------------------------------------------------

def device_thread(rd, rng, dev):
    """Connects (again and again while the server is up) and runs the device."""
    j = rd.j
    while not rd.stop.is_set():
        try:
            c = raw.RawClient(rd.hub.port, rd.hub.host, timeout=3.0)
        except OSError:
            time.sleep(0.03)
            continue
        try:
            ack = c.connect(client_id=dev, keepalive=60, expect_rc=None,
                            properties=sas_connect_props(dev, j.devices[dev]))
            if ack.type != raw.CONNACK or ack.reason_code != 0:
                j.error("%s: CONNACK %r" % (dev, ack))
                time.sleep(0.1)
                continue
            run_device(rd, rng, dev, c)
        except (raw.ConnectionClosed, raw.Timeout, OSError):
            pass  # the server died: reconnect (or stop)
        finally:
            c.close()


def send_telemetry(j, dev, c, inflight, mid, dup):
    with j.lock:
        j.attempts[mid] = j.attempts.get(mid, 0) + 1
    pid = c.publish("$iothub/telemetry", json.dumps({"id": mid}), qos=1, dup=dup)
    inflight[pid] = mid


def run_device(rd, rng, dev, c):
    j = rd.j
    gen = j.gen
    inflight = {}           # packet id -> message id
    reported = {}           # correlation -> n
    c.subscribe([("$iothub/commands", raw.sub_options(1)),
                 ("$iothub/twin/patch/desired", raw.sub_options(0))], wait=False)
    try:
        with j.lock:
            resend, j.tel_pending[dev] = j.tel_pending[dev], []
        for mid in resend:
            send_telemetry(j, dev, c, inflight, mid, dup=True)
        while not rd.stop.is_set():
            if not rd.drain:
                feed_device(rd, rng, dev, c, inflight, reported)
            try:
                p = c.recv(0.05)
            except raw.Timeout:
                continue
            on_packet(rd, rng, dev, c, p, gen, inflight, reported)
    finally:
        with j.lock:  # unacknowledged: resent on the next connection
            j.tel_pending[dev].extend(inflight.values())


def feed_device(rd, rng, dev, c, inflight, reported):
    j = rd.j
    while len(inflight) < TELEMETRY_WINDOW:
        with j.lock:
            n = j.tel_next[dev]
            j.tel_next[dev] += 1
        send_telemetry(j, dev, c, inflight, "%s#%d" % (dev, n), dup=False)
    if not reported and rng.random() < 0.3:
        with j.lock:
            j.reported_sent[dev] += 1
            n = j.reported_sent[dev]
        corr = b"r%d" % n
        reported[corr] = n
        c.publish("$iothub/twin/patch/reported", json.dumps({"k": n}),
                  properties={"CorrelationData": corr})


def on_packet(rd, rng, dev, c, p, gen, inflight, reported):
    j = rd.j
    if p.type == raw.PUBACK:
        mid = inflight.pop(p.packet_id, None)
        if mid is None:
            j.error("%s: PUBACK for unknown packet id %r" % (dev, p))
        elif p.reason_code == 0:
            with j.lock:
                j.acked.add(mid)
                j.counts["telemetry acked"] += 1
        else:
            j.error("%s: telemetry refused %r" % (dev, p))
    elif p.type == raw.PUBLISH and p.topic == "$iothub/responses":
        n = reported.pop(p.properties.get("CorrelationData"), None)
        up = user_props(p.properties)
        if n is None or "status" in up:
            j.error("%s: unexpected response %r" % (dev, p))
        else:
            with j.lock:
                j.reported_acked[dev].append((n, int(up["version"])))
                j.counts["reported acked"] += 1
    elif p.type == raw.PUBLISH and p.topic == "$iothub/commands":
        settle_command(rd, rng, dev, c, p, gen)
    elif p.type == raw.SUBACK:
        if p.reason_codes != [1, 0]:
            j.error("%s: SUBACK %r" % (dev, p))
    elif p.type == raw.DISCONNECT:
        j.error("%s: DISCONNECT %r" % (dev, p))
    elif not (p.type == raw.PUBLISH and p.topic == "$iothub/twin/patch/desired"):
        j.error("%s: unexpected %r" % (dev, p))


def settle_command(rd, rng, dev, c, p, gen):
    j = rd.j
    seq = int(user_props(p.properties)["sequence-no"])
    with j.lock:
        j.deliveries.append((dev, seq, gen, time.monotonic()))
    if rd.drain:  # settled for good: completed, or rejected (dead-lettered)
        kind = "reject" if rng.random() < DRAIN_REJECT else "complete"
    else:
        kind = rng.choices([k for k, _ in SETTLE_WEIGHTS], [w for _, w in SETTLE_WEIGHTS])[0]
    if kind == "complete":
        c.puback(p.packet_id)
    else:
        c.puback(p.packet_id, 0x83, {"UserProperty": [
            ("status", "0603" if kind == "abandon" else "0100")]})
    with j.lock:  # time after the PUBACK left: the later, the more tolerant
        j.settles.setdefault((dev, seq), []).append((kind, gen, time.monotonic()))
        j.counts["commands settled"] += 1


# ---- the service side ---------------------------------------------------------------

def service_loop(rd, step):
    """Calls step(svc) until the round stops; a failed connection means the
    server is gone (the step records the unknown outcome)."""
    svc = ServiceClient(rd.hub)
    while not rd.stop.is_set():
        try:
            step(svc)
        except (OSError, http.client.HTTPException):
            time.sleep(0.03)
        time.sleep(0.003)


def sender_thread(rd, rng):
    j = rd.j
    devs = sorted(j.devices)

    def step(svc):
        dev = rng.choice(devs)
        with j.lock:  # until the answer arrives, it may or may not be queued
            j.send_unknown[dev] += 1
        r = svc.request("POST", "/devices/%s/messages/deviceBound" % urllib.parse.quote(dev),
                        b"cmd", headers={"iothub-ack": "full"})
        with j.lock:
            j.send_unknown[dev] -= 1
        if r.status == 201:
            body = r.json()
            with j.lock:
                j.accepted.add((dev, body["sequenceNumber"]))
                j.message_ids[(dev, body["sequenceNumber"])] = body["messageId"]
                j.counts["commands accepted"] += 1
        elif r.status != 403:  # 403: that queue is full for now
            j.error("command send: %r" % r)
    service_loop(rd, step)


def desired_thread(rd, rng):
    j = rd.j
    devs = sorted(j.devices)

    def step(svc):
        dev = rng.choice(devs)
        with j.lock:
            j.desired_sent[dev] += 1
            n = j.desired_sent[dev]
        r = svc.request("PATCH", "/twins/" + urllib.parse.quote(dev),
                        {"properties": {"desired": {"s": n}}})
        if r.status != 200:
            j.error("desired patch: %r" % r)
            return
        v = r.json()["properties"]["desired"]["$version"]
        with j.lock:
            j.desired_acked[dev].append((n, v))
            j.counts["desired acked"] += 1
    service_loop(rd, step)


def registry_thread(rd, rng):
    j = rd.j

    def step(svc):
        rid = "reg-%d" % rng.randrange(REG_IDS)
        op = rng.choice(("create", "create", "update", "delete"))
        with j.lock:
            j.registry[rid] = None  # unknown until answered
        if op == "create":
            r = svc.put_device(rid)
            state = r.json()["status"] if r.status in (200, 201) else None
        elif op == "update":
            r = svc.put_device(rid, {"deviceId": rid, "status": rng.choice(("enabled", "disabled"))},
                               headers={"If-Match": "*"})
            state = r.json()["status"] if r.status == 200 else False if r.status == 404 else None
        else:
            r = svc.delete_device(rid)
            state = False if r.status in (204, 404) else None
        if state is None:
            j.error("registry %s %s: %r" % (op, rid, r))
            return
        with j.lock:
            j.registry[rid] = state
            j.counts["registry acked"] += 1
    service_loop(rd, step)

"""Device side of the soak: long-lived devices that send telemetry, use
their twin and answer the service's calls, and churn workers that connect
and disconnect in every way a device can.

Design: one thread per connection, each owning a raw MQTT 5 socket
(tests/e2e/mqtt5raw.py) and reading it with short timeouts, so one thread
both sends on schedule and answers what arrives. Every request the device
makes is kept as pending (packet id or Correlation Data -> send time) until
its answer; anything pending longer than RESPONSE_TIMEOUT_S is "lost". The
timeouts are generous (a loaded 2-core machine stalls for seconds) and the
rates fixed and moderate, so a slow machine yields fewer operations, not
failures; the volume check in soak.py only asks for a fraction of the plan.
"""

import json
import random
import socket
import struct
import time

import mqtt5raw as raw
from hub_device import sas_connect_props, user_props
from tally import Pacer

RESPONSE_TIMEOUT_S = 30.0   # a request unanswered this long is lost
CONNECT_TIMEOUT_S = 30.0
TELEMETRY_WINDOW = 8        # in-flight QoS 1 telemetry per device (Receive Maximum is 16)


def connect(ctx, dev, key, expect_rc=0, **sas):
    """A raw client that sent a SAS CONNECT for `dev`; returns (client,
    CONNACK). The caller checks the CONNACK."""
    c = raw.RawClient(ctx.port, ctx.host, timeout=CONNECT_TIMEOUT_S)
    sas.setdefault("expiry_ms", ctx.sas_expiry_ms)
    ack = c.connect(client_id=dev, keepalive=300, properties=sas_connect_props(dev, key, **sas),
                    expect_rc=None)
    return c, ack


class StableDevice:
    """Connected for the whole run: telemetry at a fixed rate, twin get and
    reported patches, and it answers methods, completes commands and
    follows desired patches."""

    def __init__(self, ctx, dev, key, rng):
        self.ctx, self.dev, self.key = ctx, dev, key
        self.rng = rng
        self.c = None
        self.ready = False
        self.desired_version = 0    # last `version` of a desired patch seen
        self.reported_version = 0   # last `version` answered to a reported patch
        self.pending_pub = {}       # packet id -> send time
        self.pending_req = {}       # Correlation Data -> (kind, send time)
        self.n = 0                  # telemetry sequence
        self.twin_n = 0             # twin requests (get and patch alternate)

    def run(self):
        ctx = self.ctx
        try:
            self.c, ack = connect(ctx, self.dev, self.key)
            if ack.type != raw.CONNACK or ack.reason_code != 0:
                ctx.tally.error("device_connect", "%s: %r" % (self.dev, ack))
                return
            self.c.subscribe([("$iothub/commands", raw.sub_options(1)),
                              ("$iothub/twin/patch/desired", raw.sub_options(0)),
                              ("$iothub/methods/+", raw.sub_options(0))], wait=False)
            self._loop()
            self._leave()
        except (raw.ConnectionClosed, OSError) as e:
            ctx.tally.error("device_dropped", "%s: %r" % (self.dev, e))
        except Exception as e:  # a decoding or logic error: report, never hang
            ctx.tally.error("device_exception", "%s: %r" % (self.dev, e))
        finally:
            if self.c is not None:
                self.c.close()

    def _loop(self):
        ctx = self.ctx
        t_period = 1.0 / ctx.plan.telemetry_per_device_s
        twin_period = ctx.plan.twin_period_s
        now = time.monotonic()
        next_tel = now + self.rng.uniform(0, t_period)
        next_twin = now + self.rng.uniform(0, twin_period)
        while not ctx.stop_devices.is_set():
            loading = self.ready and not ctx.stop_load.is_set()
            due = min(next_tel, next_twin) if loading else time.monotonic() + 0.2
            try:
                p = self.c.recv(max(0.01, min(0.2, due - time.monotonic())))
                self._dispatch(p)
            except raw.Timeout:
                pass
            now = time.monotonic()
            if loading and now >= next_tel:
                next_tel = max(next_tel + t_period, now)
                self._telemetry()
            if loading and now >= next_twin:
                next_twin = max(next_twin + twin_period, now)
                self._twin_request()
            self._expire(now)

    def idle(self):
        """True when nothing the device asked for is still unanswered."""
        return not self.pending_pub and not self.pending_req

    def _leave(self):
        """End of run: half leave with DISCONNECT, half just drop the socket."""
        if self.rng.random() < 0.5:
            self.c.disconnect()
            self.ctx.tally.op("device_leave_clean")
        else:
            self.c.close()
            self.ctx.tally.op("device_leave_abrupt")

    # ------------------------------------------------------------ requests
    def _telemetry(self):
        if len(self.pending_pub) >= TELEMETRY_WINDOW:
            # the server is slow to acknowledge (a loaded machine): skip this
            # slot rather than overrun the window; only a lost PUBACK fails
            self.ctx.tally.op("telemetry_skipped_window_full")
            return
        self.n += 1
        body = json.dumps({"dev": self.dev, "n": self.n, "t": time.time()}).encode()
        pid = self.c.publish("$iothub/telemetry", body, qos=1,
                             properties={"ContentType": "application/json",
                                         "UserProperty": [("@seq", str(self.n))]})
        self.pending_pub[pid] = time.monotonic()

    def _twin_request(self):
        self.twin_n += 1
        corr = b"s%d" % self.twin_n
        if self.twin_n % 2:
            self.c.publish("$iothub/twin/get", b"", properties={"CorrelationData": corr})
            self.pending_req[corr] = ("twin_get", time.monotonic())
        else:
            patch = {"soak": {"n": self.twin_n, "at": int(time.time() * 1000)}}
            self.c.publish("$iothub/twin/patch/reported", json.dumps(patch).encode(),
                           properties={"CorrelationData": corr})
            self.pending_req[corr] = ("twin_patch_reported", time.monotonic())

    def _expire(self, now):
        for pid, t in list(self.pending_pub.items()):
            if now - t > RESPONSE_TIMEOUT_S:
                del self.pending_pub[pid]
                self.ctx.tally.error("telemetry_lost", "%s pid %d" % (self.dev, pid))
        for corr, (kind, t) in list(self.pending_req.items()):
            if now - t > RESPONSE_TIMEOUT_S:
                del self.pending_req[corr]
                self.ctx.tally.error(kind + "_lost", "%s %r" % (self.dev, corr))

    # ------------------------------------------------------------ receiving
    def _dispatch(self, p):
        if p.type == raw.PUBACK:
            self._on_puback(p)
        elif p.type == raw.SUBACK:
            if p.reason_codes != [1, 0, 0]:
                self.ctx.tally.error("device_suback", "%s: %r" % (self.dev, p))
            self.ready = True
        elif p.type == raw.PUBLISH:
            if p.topic == "$iothub/responses":
                self._on_response(p)
            elif p.topic == "$iothub/commands":
                self._on_command(p)
            elif p.topic.startswith("$iothub/methods/"):
                self._on_method(p)
            elif p.topic == "$iothub/twin/patch/desired":
                self._on_desired(p)
            else:
                self.ctx.tally.error("device_unexpected_publish", "%s: %r" % (self.dev, p))
        elif p.type == raw.DISCONNECT:
            raise raw.ConnectionClosed("DISCONNECT %r" % p)
        else:
            self.ctx.tally.error("device_unexpected_packet", "%s: %r" % (self.dev, p))

    def _on_puback(self, p):
        t = self.pending_pub.pop(p.packet_id, None)
        if t is None:
            self.ctx.tally.error("telemetry_unknown_puback", "%s: %r" % (self.dev, p))
        elif p.reason_code != 0:
            self.ctx.tally.error("telemetry_puback", "%s: %r" % (self.dev, p))
        else:
            self.ctx.tally.op("telemetry", time.monotonic() - t)

    def _on_response(self, p):
        corr = p.properties.get("CorrelationData")
        kind, t = self.pending_req.pop(corr, (None, None))
        if kind is None:
            self.ctx.tally.error("twin_unknown_response", "%s: %r" % (self.dev, p))
            return
        up = user_props(p.properties)
        if "status" in up:
            self.ctx.tally.error(kind, "%s: %r" % (self.dev, p))
            return
        if kind == "twin_get":
            doc = json.loads(p.payload.decode())
            if "desired" not in doc or "reported" not in doc:
                self.ctx.tally.error(kind, "%s: %r" % (self.dev, doc))
                return
        else:
            version = int(up.get("version", "0"))
            if version <= self.reported_version:
                self.ctx.tally.error(kind, "%s: version %d after %d"
                                     % (self.dev, version, self.reported_version))
                return
            self.reported_version = version
        self.ctx.tally.op(kind, time.monotonic() - t)

    def _on_command(self, p):
        up = user_props(p.properties)
        seq = int(up["sequence-no"])
        if not self.ctx.tally.c2d_deliver(self.dev, seq) or up.get("delivery-count") != "0":
            self.ctx.tally.error("c2d_redelivered", "%s: %r" % (self.dev, p))
        self.c.puback(p.packet_id)  # complete
        self.ctx.tally.op("c2d_completed")

    def _on_method(self, p):
        self.c.publish("$iothub/responses", p.payload, properties={
            "CorrelationData": p.properties["CorrelationData"],
            "UserProperty": [("response-code", "200")]})
        self.ctx.tally.op("method_answered")

    def _on_desired(self, p):
        version = int(user_props(p.properties)["version"])
        if version <= self.desired_version:
            self.ctx.tally.error("desired_order", "%s: %d after %d"
                                 % (self.dev, version, self.desired_version))
        self.desired_version = max(self.desired_version, version)
        self.ctx.tally.op("desired_received")


# ---------------------------------------------------------------- churn
def churn_worker(ctx, devices, seed):
    """Connects and disconnects devices (own subset: no take-over between
    workers) at a fixed rate until the load stops. Each round is one
    scenario; each checks the exact outcome it expects."""
    rng = random.Random(seed)
    pacer = Pacer(ctx.plan.churn_per_worker_s)
    scenarios = [(churn_clean, 4), (churn_abrupt, 3), (churn_reset, 2), (churn_half_packet, 1),
                 (churn_takeover, 1), (churn_bad_signature, 2), (churn_expired, 1),
                 (churn_unknown_device, 1), (churn_no_connect, 1), (churn_malformed, 1)]
    funcs = [f for f, w in scenarios for _ in range(w)]
    while pacer.wait(ctx.stop_load):
        dev, key = rng.choice(devices)
        f = rng.choice(funcs)
        try:
            f(ctx, dev, key, rng)
        except (OSError, raw.ConnectionClosed, raw.Timeout, AssertionError) as e:
            ctx.tally.error("churn_" + f.__name__[6:], "%s: %r" % (dev, e))


def _connected(ctx, dev, key):
    c, ack = connect(ctx, dev, key)
    if ack.type != raw.CONNACK or ack.reason_code != 0:
        c.close()
        raise AssertionError("CONNACK %r" % ack)
    return c


def _telemetry_acked(ctx, c):
    t = time.monotonic()
    pid = c.publish("$iothub/telemetry", b'{"churn":1}', qos=1)
    p = c.expect(raw.PUBACK, timeout=RESPONSE_TIMEOUT_S, stash=True)
    if p.packet_id != pid or p.reason_code != 0:
        raise AssertionError("telemetry PUBACK %r" % p)
    ctx.tally.op("telemetry", time.monotonic() - t)


def churn_clean(ctx, dev, key, rng):
    """Connect, one telemetry and one twin get, DISCONNECT 0."""
    c = _connected(ctx, dev, key)
    try:
        _telemetry_acked(ctx, c)
        c.publish("$iothub/twin/get", b"", properties={"CorrelationData": b"churn"})
        p = c.expect(raw.PUBLISH, timeout=RESPONSE_TIMEOUT_S)
        if p.topic != "$iothub/responses" or "status" in user_props(p.properties):
            raise AssertionError("twin get %r" % p)
        c.disconnect()
        ctx.tally.op("churn_clean")
    finally:
        c.close()


def churn_abrupt(ctx, dev, key, rng):
    """Connect, subscribe, send telemetry without waiting, close the socket."""
    c = _connected(ctx, dev, key)
    c.subscribe([("$iothub/methods/+", raw.sub_options(0))], wait=False)
    c.publish("$iothub/telemetry", b'{"churn":2}', qos=1)
    c.close()
    ctx.tally.op("churn_abrupt")


def churn_reset(ctx, dev, key, rng):
    """Connect and close with a TCP RST (SO_LINGER 0)."""
    c = _connected(ctx, dev, key)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    ctx.tally.op("churn_reset")


def churn_half_packet(ctx, dev, key, rng):
    """Connect, send half a PUBLISH, close."""
    c = _connected(ctx, dev, key)
    data = c.publish_bytes("$iothub/telemetry", b"x" * 200, qos=1, packet_id=7)
    c.send_raw(data[:rng.randint(1, len(data) - 1)])
    c.close()
    ctx.tally.op("churn_half_packet")


def churn_takeover(ctx, dev, key, rng):
    """A second CONNECT for the same device: the first gets DISCONNECT 0x8E."""
    first = _connected(ctx, dev, key)
    try:
        second = _connected(ctx, dev, key)
        try:
            got = first.recv_until_closed(RESPONSE_TIMEOUT_S)
            if not got or got[-1].type != raw.DISCONNECT or got[-1].reason_code != 0x8E:
                raise AssertionError("take-over: old connection got %r" % got)
            second.disconnect()
        finally:
            second.close()
    finally:
        first.close()
    ctx.tally.provoke("takeover_0x8E")


def _refused(ctx, c, ack, rc, kind):
    try:
        if (ack.type != raw.CONNACK or ack.reason_code != rc
                or user_props(ack.properties).get("status") != "0101"):
            raise AssertionError("%s: expected CONNACK 0x%02x 0101, got %r" % (kind, rc, ack))
        if not c.is_closed(RESPONSE_TIMEOUT_S):
            raise AssertionError("%s: connection left open" % kind)
    finally:
        c.close()
    ctx.tally.provoke(kind)


def churn_bad_signature(ctx, dev, key, rng):
    """A SAS signed with the wrong key: CONNACK 0x87, closed."""
    wrong = "A" * 43 + "="
    c, ack = connect(ctx, dev, wrong)
    _refused(ctx, c, ack, 0x87, "bad_signature_0x87")


def churn_expired(ctx, dev, key, rng):
    """A SAS whose expiry has passed: CONNACK 0x87, closed."""
    c, ack = connect(ctx, dev, key, expiry_ms=int(time.time() * 1000) - 60000)
    _refused(ctx, c, ack, 0x87, "expired_sas_0x87")


def churn_unknown_device(ctx, dev, key, rng):
    """A device id the registry does not know: CONNACK 0x87, closed."""
    c, ack = connect(ctx, "nosuch-" + dev, key)
    _refused(ctx, c, ack, 0x87, "unknown_device_0x87")


def churn_no_connect(ctx, dev, key, rng):
    """TCP open and closed without a CONNECT."""
    s = socket.create_connection((ctx.host, ctx.port), timeout=CONNECT_TIMEOUT_S)
    time.sleep(rng.uniform(0, 0.05))
    s.close()
    ctx.tally.op("churn_no_connect")


def churn_malformed(ctx, dev, key, rng):
    """A PUBLISH with QoS 3 after CONNECT: DISCONNECT 0x81, closed."""
    c = _connected(ctx, dev, key)
    try:
        c.send_raw(bytes([0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01]))
        got = c.recv_until_closed(RESPONSE_TIMEOUT_S)
        if not got or got[-1].type != raw.DISCONNECT or got[-1].reason_code != 0x81:
            raise AssertionError("malformed: got %r" % got)
    finally:
        c.close()
    ctx.tally.provoke("malformed_0x81")

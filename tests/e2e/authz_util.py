"""Helpers of the authorization matrix (test_authz_matrix.py): a hub with
its identities, keys and cached caller connections, and the observation
helpers that turn what a client received into canonical outcome strings.

"Nothing arrived" is judged with a PINGREQ round trip plus a short quiet
window, not a long sleep: the hub answers in order on one connection, so
anything it sent before the PINGRESP is in; a small window covers sends
from another loop. That keeps ~700 cells within a few seconds.
"""

import threading
import time
import urllib.parse

import mqtt5raw as raw
from authz_table import A, B, DELETED, DISABLED, HTTP_TARGET, MOD, POLICIES, POLICY_RIGHTS, \
    client_id_of
from conftest import Broker
from hub_device import HOST, now_ms, sas_connect_props, sas_signature, user_props
from service_client import ServiceClient

class Hub:
    """One iothubd for the module, its identities and keys, and the cached
    connections of the callers."""

    def __init__(self, name, broker):
        self.name, self.b = name, broker
        self.svc = ServiceClient(broker)
        self.keys = {}
        self.conns = {}
        self.policy_keys = {}
        self.victim = None

    def call(self, method, path, body=None, **kw):
        return self.svc.request(method, path, body, **kw)

    def ok(self, method, path, body=None, want=(200, 201, 204)):
        r = self.call(method, path, body)
        assert r.status in want, (method, path, r)
        return r

    def create(self, client_id, status="enabled"):
        dev, _, mod = client_id.partition("/")
        path = "/devices/" + q(dev) + ("/modules/" + q(mod) if mod else "")
        body = {"deviceId": dev, "status": status}
        if mod:
            body["moduleId"] = mod
        ident = self.ok("PUT", path, body).json()
        self.keys[client_id] = ident["authentication"]["symmetricKey"]["primaryKey"]
        self.ok("PATCH", "/twins/" + q(dev) + ("/modules/" + q(mod) if mod else ""),
                {"properties": {"desired": {"who": client_id}}})

    def setup(self):
        pols = {p["keyName"]: p for p in self.ok("GET", "/iothubd/policies").json()}
        assert {n: p["rights"] for n, p in pols.items()} == POLICY_RIGHTS, pols
        self.policy_keys = {n: p["primaryKey"] for n, p in pols.items()}
        for cid in (A, B, A + "/" + MOD, HTTP_TARGET, HTTP_TARGET + "/" + MOD, DELETED):
            self.create(cid)
        self.create(DISABLED, status="disabled")
        for p in POLICIES:
            self.create("az-p-" + p)
        self.ok("DELETE", "/devices/" + DELETED)

    # -- MQTT --
    def connect_props(self, caller, cid=None):
        """(client id, CONNECT properties) of the caller; with cid, the
        caller's own credential used for that client id instead."""
        own = client_id_of(caller)
        if cid is not None and caller not in ("none", "anonymous") and caller not in POLICIES:
            return cid, sas_connect_props(cid, self.keys[own])
        cid = cid or own
        if caller in ("none", "anonymous"):
            return cid, None
        if caller in POLICIES:
            return cid, sas_connect_props(cid, self.policy_keys[caller], policy=caller)
        if caller == "expired":
            return cid, sas_connect_props(cid, self.keys[A], expiry_ms=now_ms() - 1000)
        if caller == "forged":
            exp, at = now_ms() + 3600 * 1000, now_ms()
            return cid, sas_connect_props(cid, None, sas_at=at, expiry_ms=exp,
                                          signature=sas_signature(self.keys[B], HOST, cid,
                                                                  None, at, exp))
        return cid, sas_connect_props(cid, self.keys[cid])

    def connect(self, caller, cid=None):
        """(client, connack): a fresh connection attempt as `caller`."""
        cid, props = self.connect_props(caller, cid)
        c = raw.RawClient(self.b.port, self.b.host, timeout=5.0)
        c.client_id = cid
        p = c.connect(client_id=cid, properties=props, expect_rc=None)
        assert p.type == raw.CONNACK, p
        c.connack = p
        return c, p

    def connect_victim(self):
        """(Re)connects device A, subscribed to everything a device gets."""
        if self.victim is not None:
            self.victim.close()
        v, p = self.connect("self")
        assert p.reason_code == 0, p
        assert v.subscribe([("$iothub/twin/patch/desired", 0), ("$iothub/commands", 1),
                            ("$iothub/methods/+", 0)]).reason_codes == [0, 1, 0]
        self.victim = v

    def client(self, caller):
        """The caller's reused, connected client."""
        c = self.conns.get(caller)
        if c is None or c.closed:
            if caller == "self" and self.victim is not None and not self.victim.closed:
                return self.victim
            c, p = self.connect(caller)
            assert p.reason_code == 0, p
            self.conns[caller] = c
        return c


def q(s):
    return urllib.parse.quote(s, safe="")


def connack_text(p):
    if p.reason_code == 0:
        return "CONNACK 0x00"
    st = user_props(p.properties).get("status")
    return "CONNACK 0x%02X" % p.reason_code + (" status %s" % st if st else "")


def start_hub(tmp, acl=None, closed=False):
    b = Broker(tmp, http=True, acl=acl)
    if closed:
        b.cmd = [a for a in b.cmd if a not in ("--open-topics", "--allow-anonymous")]
    return b.start()


# ---- observation helpers ---------------------------------------------------------------

def ping(c):
    c.pingreq()
    c.expect(raw.PINGRESP, stash=True)


def victim_alive(h):
    try:
        ping(h.victim)
    except (raw.ConnectionClosed, raw.Timeout, OSError) as e:
        raise AssertionError("device A lost its connection (%r, %r); hub log:\n%s" % (
            e, h.victim.pending, h.b.stderr_text()[-3000:]))


def take(c, pred, timeout=5.0):
    """The first PUBLISH (already stashed or arriving) that satisfies pred."""
    for i, p in enumerate(c.pending):
        if p.type == raw.PUBLISH and pred(p):
            return c.pending.pop(i)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            p = c.recv(left)
        except raw.Timeout:
            return None
        if p.type == raw.PUBLISH and pred(p):
            return p
        c.pending.append(p)


def none_arrives(c, pred, quiet=0.15):
    """True when no PUBLISH satisfying pred arrives before a PINGREQ round
    trip plus a short quiet window."""
    ping(c)
    return take(c, pred, timeout=quiet) is None


def puback_text(c, pid):
    p = c.expect(raw.PUBACK, stash=True)
    assert p.packet_id == pid, p
    st = user_props(p.properties).get("status")
    return "PUBACK 0x%02X" % p.reason_code + (" status %s" % st if st else "")


def suback_text(p):
    return "SUBACK [%s]" % ", ".join("0x%02X" % rc for rc in p.reason_codes)


def find_event(h, message_id):
    """The stored telemetry message with this message-id, or None."""
    for part in h.ok("GET", "/events/partitions").json()["partitions"]:
        page = h.ok("GET", "/events?partition=%d&max=1000" % part["partition"]).json()
        for e in page["events"]:
            if e["systemProperties"].get("message-id") == message_id:
                return e
    return None


def own_identity(e, cid):
    dev, _, mod = cid.partition("/")
    sp = e["systemProperties"]
    return (sp.get("iothub-connection-device-id") == dev and
            sp.get("iothub-connection-module-id") == (mod or None))


def twin_path(cid):
    dev, _, mod = cid.partition("/")
    return "/twins/" + q(dev) + ("/modules/" + q(mod) if mod else "")


class Background(threading.Thread):
    """An HTTP call in the background (method invocations block until the
    device answers)."""

    def __init__(self, h, method, path, body):
        super().__init__(daemon=True)
        self.h, self.args, self.response = h, (method, path, body), None
        self.start()

    def run(self):
        self.response = ServiceClient(self.h.b).request(*self.args)

    def result(self):
        self.join(15)
        assert not self.is_alive(), "the HTTP call did not finish"
        return self.response


def invoke(h, cid, name):
    return Background(h, "POST", twin_path(cid) + "/methods",
                      {"methodName": name, "payload": None, "responseTimeoutInSeconds": 5})


def method_request(c, name):
    return take(c, lambda p: p.topic == "$iothub/methods/" + name)


def answer(c, req, code, payload=b'"ok"'):
    c.publish("$iothub/responses", payload, properties={
        "CorrelationData": req.properties["CorrelationData"],
        "UserProperty": [("response-code", str(code))]})


def send_command(h, device_id, message_id, ack=None):
    headers = {"iothub-messageid": message_id}
    if ack:
        headers["iothub-ack"] = ack
    r = h.call("POST", "/devices/%s/messages/deviceBound" % q(device_id), b"cmd",
               headers=headers)
    assert r.status == 201, r


def command_with(c, message_id):
    return take(c, lambda p: p.topic == "$iothub/commands" and
                user_props(p.properties).get("message-id") == message_id)


def feedback_for(h, message_id, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for f in h.ok("GET", "/messages/serviceBound/feedback").json():
            if f["originalMessageId"] == message_id:
                return f["statusCode"]
        time.sleep(0.05)
    return None

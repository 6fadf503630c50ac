"""Service side of the soak: the back end's calls over the service API —
desired patches, direct method calls, cloud-to-device sends, registry
creates and deletes — each from its own thread at a fixed rate.

Design: every worker owns one ServiceClient (tests/e2e/service_client.py,
HTTP/1.1 keep-alive) and reopens its connection now and then, so the HTTP
side churns too. Each call checks the exact answer. A few calls are wrong on
purpose (an offline device, an unknown device, a bad token); they must fail
in exactly the documented way and are counted as provoked. Socket timeouts
are far above the method response timeout, so a slow machine makes calls
slow, never "lost".
"""

import http.client
import os
import random
import urllib.parse

import mqtt5raw as raw
from devices import RESPONSE_TIMEOUT_S, connect
from service_client import ServiceClient
from tally import Pacer

HTTP_TIMEOUT_S = 90.0       # socket timeout of every service call
METHOD_TIMEOUT_S = 30       # responseTimeoutInSeconds of each method call


def q(dev):
    return urllib.parse.quote(dev, safe="")


class Service:
    """A ServiceClient whose (re)opened connections get a long timeout."""

    def __init__(self, ctx):
        self.svc = ServiceClient(ctx.server)

    def request(self, method, path, body=None, headers=None, auth=True, fresh=False):
        if fresh and self.svc.conn is not None:
            self.svc.conn.close()
            self.svc.conn = None
        if self.svc.conn is None:
            self.svc.conn = http.client.HTTPConnection(self.svc.host, self.svc.port,
                                                       timeout=HTTP_TIMEOUT_S)
        return self.svc.request(method, path, body, headers=headers, auth=auth)

    def close(self):
        if self.svc.conn is not None:
            self.svc.conn.close()
            self.svc.conn = None


def run_worker(ctx, name, body):
    """Runs body(svc) until the load stops; an exception is an unexpected
    error of kind `name` and the worker goes on with a fresh connection."""
    svc = Service(ctx)
    try:
        while not ctx.stop_load.is_set():
            try:
                body(svc)
                return
            except Exception as e:  # OSError, HTTPException, bad JSON, raw.Timeout ...
                ctx.tally.error(name, repr(e))
                svc.close()
    finally:
        svc.close()


def desired_worker(ctx, stable, seed):
    """PATCH /twins/{id} desired properties; remembers the desired $version
    each patch produced, for the end check that every device saw its last
    patch."""
    rng = random.Random(seed)
    pacer = Pacer(ctx.plan.desired_per_s)
    n = [0]

    def body(svc):
        while pacer.wait(ctx.stop_load):
            dev = rng.choice(stable)
            n[0] += 1
            r = svc.request("PATCH", "/twins/" + q(dev),
                            {"properties": {"desired": {"soak": {"n": n[0]}}}})
            if r.status != 200:
                ctx.tally.error("desired_patch", "%s: %r" % (dev, r))
                continue
            version = r.json()["properties"]["desired"]["$version"]
            with ctx.tally.lock:
                ctx.desired_sent[dev] = max(ctx.desired_sent.get(dev, 0), version)
            ctx.tally.op("desired_patch")
    run_worker(ctx, "desired_patch", body)


def method_worker(ctx, stable, offline, seed):
    """POST /twins/{id}/methods; the device echoes the payload. Every tenth
    call goes to a device that is never connected: 404 DeviceNotOnline."""
    rng = random.Random(seed)
    pacer = Pacer(ctx.plan.methods_per_worker_s)
    n = [0]

    def body(svc):
        while pacer.wait(ctx.stop_load):
            n[0] += 1
            to_offline = n[0] % 10 == 0
            dev = offline if to_offline else rng.choice(stable)
            payload = {"n": n[0], "seed": seed, "pad": "x" * rng.randint(0, 512)}
            r = svc.request("POST", "/twins/%s/methods" % q(dev),
                            {"methodName": "echo", "payload": payload,
                             "responseTimeoutInSeconds": METHOD_TIMEOUT_S},
                            fresh=n[0] % 4 == 0)
            if to_offline:
                if r.status == 404 and r.error_code == "DeviceNotOnline":
                    ctx.tally.provoke("method_offline_404")
                else:
                    ctx.tally.error("method_offline", "%s: %r" % (dev, r))
            elif r.status == 200 and r.json() == {"status": 200, "payload": payload}:
                ctx.tally.op("method_call")
            else:
                ctx.tally.error("method_call", "%s: %r" % (dev, r))
    run_worker(ctx, "method_call", body)


def c2d_worker(ctx, stable, seed):
    """POST /devices/{id}/messages/deviceBound; every twentieth to a device
    that does not exist: 404 DeviceNotFound."""
    rng = random.Random(seed)
    pacer = Pacer(ctx.plan.c2d_per_s)
    n = [0]

    def body(svc):
        while pacer.wait(ctx.stop_load):
            n[0] += 1
            if n[0] % 20 == 0:
                r = svc.request("POST", "/devices/nosuch-%d/messages/deviceBound" % n[0], b"x")
                if r.status == 404 and r.error_code == "DeviceNotFound":
                    ctx.tally.provoke("c2d_unknown_device_404")
                else:
                    ctx.tally.error("c2d_unknown_device", repr(r))
                continue
            dev = rng.choice(stable)
            r = svc.request("POST", "/devices/%s/messages/deviceBound" % q(dev),
                            os.urandom(rng.randint(1, 2048)),
                            headers={"iothub-messageid": "m%d" % n[0],
                                     "iothub-app-soak": str(n[0])})
            if r.status == 201:
                ctx.tally.c2d_accept(dev, r.json()["sequenceNumber"])
                ctx.tally.op("c2d_sent")
            else:
                ctx.tally.error("c2d_send", "%s: %r" % (dev, r))
    run_worker(ctx, "c2d_send", body)


def registry_worker(ctx):
    """Creates a device, reads it, deletes it (every third one while it is
    connected: the device must get DISCONNECT 0x87), then checks it is gone.
    Every tenth round also sends a request with a bad token: 401."""
    pacer = Pacer(ctx.plan.registry_per_s)
    n = [0]

    def body(svc):
        while pacer.wait(ctx.stop_load):
            n[0] += 1
            dev = "tmp-%d-%s" % (n[0], os.urandom(3).hex())
            registry_round(ctx, svc, dev, connected=n[0] % 3 == 0)
            if n[0] % 10 == 0:
                r = svc.request("GET", "/devices/" + q(dev),
                                headers={"Authorization": "SharedAccessSignature sr=x&sig=y&se=1"})
                if r.status == 401 and r.error_code == "IotHubUnauthorizedAccess":
                    ctx.tally.provoke("http_bad_token_401")
                else:
                    ctx.tally.error("http_bad_token", repr(r))
            if n[0] % 25 == 0:
                r = svc.request("GET", "/statistics/devices")
                if r.status == 200 and r.json()["totalDeviceCount"] >= len(ctx.stable):
                    ctx.tally.op("registry_statistics")
                else:
                    ctx.tally.error("registry_statistics", repr(r))
    run_worker(ctx, "registry", body)


def registry_round(ctx, svc, dev, connected):
    r = svc.request("PUT", "/devices/" + q(dev), {"deviceId": dev, "status": "enabled"})
    if r.status != 201:
        ctx.tally.error("registry_create", "%s: %r" % (dev, r))
        return
    ctx.tally.op("registry_create")
    key = r.json()["authentication"]["symmetricKey"]["primaryKey"]
    r = svc.request("GET", "/devices/" + q(dev))
    if r.status != 200 or r.json()["deviceId"] != dev:
        ctx.tally.error("registry_get", "%s: %r" % (dev, r))
    c = None
    if connected:
        c, ack = connect(ctx, dev, key)
        if ack.type != raw.CONNACK or ack.reason_code != 0:
            ctx.tally.error("registry_connect", "%s: %r" % (dev, ack))
            c.close()
            c = None
    try:
        r = svc.request("DELETE", "/devices/" + q(dev))
        if r.status != 204:
            ctx.tally.error("registry_delete", "%s: %r" % (dev, r))
            return
        ctx.tally.op("registry_delete")
        if c is not None:
            got = c.recv_until_closed(RESPONSE_TIMEOUT_S)
            if got and got[-1].type == raw.DISCONNECT and got[-1].reason_code == 0x87:
                ctx.tally.provoke("deleted_while_connected_0x87")
            else:
                ctx.tally.error("registry_delete_connected", "%s: %r" % (dev, got))
    finally:
        if c is not None:
            c.close()
    r = svc.request("GET", "/devices/" + q(dev))
    if r.status != 404 or r.error_code != "DeviceNotFound":
        ctx.tally.error("registry_gone", "%s: %r" % (dev, r))

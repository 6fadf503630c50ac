"""Helpers for the IoT Hub MQTT 5 device API tests (../shared/spec/iothub-mqtt5.md):
devices created over the service API, SAS signatures computed here with
hmac/hashlib (independently of the server), CONNECT properties, and a hub
started without the open topic space.
"""

import base64
import hashlib
import hmac
import json
import os
import tempfile
import time
import urllib.parse

import pytest

import mqtt5raw as raw
from conftest import Broker
from service_client import ServiceClient

HOST = "localhost"  # the hub fixture runs with --hostname localhost
API_VERSION = "2020-10-01-preview"


def now_ms():
    return int(time.time() * 1000)


def sas_signature(key_b64, host, client_id, policy=None, sas_at=None, sas_expiry=None):
    """HMAC-SHA256(base64decode(key), "{host}\\n{clientId}\\n{policy}\\n{at}\\n{expiry}\\n")."""
    text = "%s\n%s\n%s\n%s\n%s\n" % (host, client_id, policy or "", "" if sas_at is None else sas_at,
                                      sas_expiry)
    return hmac.new(base64.b64decode(key_b64), text.encode(), hashlib.sha256).digest()


def user_props(props):
    """UserProperty list -> dict (last wins)."""
    return dict(props.get("UserProperty", []))


def sas_connect_props(client_id, key, host=HOST, policy=None, expiry_ms=None, sas_at=True,
                      api_version=API_VERSION, send_host=True, signature=None, extra=()):
    expiry = now_ms() + 3600 * 1000 if expiry_ms is None else expiry_ms
    at = now_ms() if sas_at is True else sas_at
    users = []
    if api_version is not None:
        users.append(("api-version", api_version))
    if send_host:
        users.append(("host", host))
    if at is not None:
        users.append(("sas-at", str(at)))
    if expiry is not False:
        users.append(("sas-expiry", str(expiry)))
    if policy:
        users.append(("sas-policy", policy))
    users += list(extra)
    props = {"AuthenticationMethod": "SAS", "UserProperty": users}
    if signature is None and key is not None:
        signature = sas_signature(key, host, client_id, policy, at, expiry)
    if signature is not None:
        props["AuthenticationData"] = signature
    return props


def reauth_props(client_id, key, expiry_ms, host=HOST, policy=None):
    at = now_ms()
    users = [("sas-at", str(at)), ("sas-expiry", str(expiry_ms))]
    if policy:
        users.append(("sas-policy", policy))
    return {"AuthenticationMethod": "SAS",
            "AuthenticationData": sas_signature(key, host, client_id, policy, at, expiry_ms),
            "UserProperty": users}


class Devices:
    """Creates identities on a hub through the service API."""

    def __init__(self, hub):
        self.svc = ServiceClient(hub)

    def create(self, device_id, status="enabled", auth=None):
        body = {"deviceId": device_id, "status": status}
        if auth is not None:
            body["authentication"] = auth
        r = self.svc.put_device(device_id, body)
        assert r.status in (200, 201), r
        return r.json()

    def create_module(self, device_id, module_id):
        path = "/devices/%s/modules/%s" % (urllib.parse.quote(device_id, safe=""),
                                          urllib.parse.quote(module_id, safe=""))
        r = self.svc.request("PUT", path, {"deviceId": device_id, "moduleId": module_id})
        assert r.status in (200, 201), r
        return r.json()

    def replace(self, identity):
        r = self.svc.put_device(identity["deviceId"], identity)
        assert r.status in (200, 201), r
        return r.json()

    def delete(self, device_id):
        r = self.svc.delete_device(device_id)
        assert r.status in (200, 204), r

    def new_sas_device(self, prefix="dev"):
        device_id = "%s-%s" % (prefix, os.urandom(4).hex())
        d = self.create(device_id)
        return device_id, d["authentication"]["symmetricKey"]["primaryKey"], d


def connect_device(hub, client_id, key, expect_rc=0, keepalive=60, properties=None, **kw):
    """A raw MQTT 5 client that sent a SAS CONNECT; .connack holds the answer."""
    c = raw.RawClient(hub.port, hub.host, timeout=5.0)
    props = sas_connect_props(client_id, key, **kw)
    props.update(properties or {})
    c.connack = c.connect(client_id=client_id, keepalive=keepalive, properties=props,
                          expect_rc=expect_rc)
    c.client_id = client_id
    return c


def expect_connack_failure(hub, client_id, properties, rc, status, keepalive=60):
    c = raw.RawClient(hub.port, hub.host, timeout=5.0)
    try:
        p = c.connect(client_id=client_id, keepalive=keepalive, properties=properties,
                      expect_rc=None)
        assert p.type == raw.CONNACK and p.reason_code == rc, p
        up = user_props(p.properties)
        assert up.get("status") == status, p
        assert c.is_closed(3.0)
        return p
    finally:
        c.close()


def expect_disconnect(c, rc, timeout=5.0):
    """The server sends DISCONNECT rc and closes."""
    got = c.recv_until_closed(timeout)
    disc = [p for p in got if p.type == raw.DISCONNECT]
    assert disc and disc[-1].reason_code == rc, got
    return disc[-1]


@pytest.fixture
def closed_hub():
    """iothubd with the service API but WITHOUT --open-topics and
    --allow-anonymous: devices only."""
    d = tempfile.TemporaryDirectory(prefix="iothubd-e2e-")
    b = Broker(d.name, http=True)
    b.cmd = [a for a in b.cmd if a not in ("--open-topics", "--allow-anonymous")]
    b.start()
    yield b
    problems = b.stop()
    d.cleanup()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def response_for(c, correlation, timeout=5.0):
    """The next PUBLISH on $iothub/responses with this Correlation Data."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = c.expect(raw.PUBLISH, timeout=max(0.05, deadline - time.monotonic()), stash=True)
        if p.topic == "$iothub/responses" and p.properties.get("CorrelationData") == correlation:
            return p
    raise AssertionError("no response for %r" % correlation)


def json_payload(p):
    return json.loads(p.payload.decode())

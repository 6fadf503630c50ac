"""A small client for iothubd's service API (../shared/spec/service-rest.md),
written independently of the server: classic SAS tokens from a connection
string, JSON requests over http.client, and raw-socket requests for the
malformed-input tests."""

import base64
import hashlib
import hmac
import http.client
import json
import socket
import time
import urllib.parse


def parse_connstr(s):
    return dict(part.split("=", 1) for part in s.split(";") if part)


def sas_token(resource, key_b64, policy=None, ttl=3600, expiry=None):
    """SharedAccessSignature sr=..&sig=..&se=..[&skn=..] (iothub-mqtt5.md §7)."""
    se = int(time.time()) + ttl if expiry is None else expiry
    sr = urllib.parse.quote(resource, safe="")
    mac = hmac.new(base64.b64decode(key_b64), ("%s\n%d" % (sr, se)).encode(), hashlib.sha256)
    sig = urllib.parse.quote(base64.b64encode(mac.digest()).decode(), safe="")
    tok = "SharedAccessSignature sr=%s&sig=%s&se=%d" % (sr, sig, se)
    return tok + ("&skn=%s" % policy if policy else "")


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def json(self):
        return json.loads(self.body)

    @property
    def error_code(self):
        """The Code of {"Message":"ErrorCode:{Code};{text}"}."""
        msg = self.json()["Message"]
        assert msg.startswith("ErrorCode:"), msg
        return msg[len("ErrorCode:"):].split(";", 1)[0]

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:300])


class ServiceClient:
    def __init__(self, hub, connstr=None, token=None):
        self.host, self.port = "127.0.0.1", hub.http_port
        cs = parse_connstr(connstr or hub.owner_connstr)
        self.hostname = cs["HostName"]
        self.policy = cs.get("SharedAccessKeyName")
        self.key = cs.get("SharedAccessKey")
        self.token = token
        self.conn = None

    def auth(self):
        if self.token is not None:
            return self.token
        return sas_token(self.hostname, self.key, self.policy)

    def request(self, method, path, body=None, headers=None, auth=True):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        h = dict(headers or {})
        if auth and self.auth():
            h.setdefault("Authorization", self.auth())
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        sep = "&" if "?" in path else "?"
        try:
            self.conn.request(method, path + sep + "api-version=2021-04-12", body=body, headers=h)
            r = self.conn.getresponse()
            data = r.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = None
            raise
        if r.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        return Response(r.status, r.getheaders(), data)

    def put_device(self, device_id, body=None, **kw):
        body = dict(body or {})
        body.setdefault("deviceId", device_id)
        return self.request("PUT", "/devices/" + urllib.parse.quote(device_id, safe=""), body, **kw)

    def get_device(self, device_id):
        return self.request("GET", "/devices/" + urllib.parse.quote(device_id, safe=""))

    def delete_device(self, device_id, **kw):
        return self.request("DELETE", "/devices/" + urllib.parse.quote(device_id, safe=""), **kw)


def policy_client(hub, svc, name):
    """A client authenticated with policy `name`, its key read through `svc`
    (a client with registry read rights) from /iothubd/policies."""
    r = svc.request("GET", "/iothubd/policies")
    assert r.status == 200, r
    pol = {p["keyName"]: p for p in r.json()}[name]
    cs = "HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s" % (
        svc.hostname, name, pol["primaryKey"])
    return ServiceClient(hub, connstr=cs)


def raw_http(port, data, timeout=5.0):
    """Sends raw bytes, returns everything the server answers until it
    closes or goes quiet."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early (e.g. 413) and closed: read its answer
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def status_of(raw):
    line = raw.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1."), raw[:200]
    return int(line.split()[1])

"""Authorization matrix (issue 7): for every MQTT topic operation of the IoT Hub
device API (../shared/spec/iothub-mqtt5.md §2-6) and every service API route
(../shared/spec/service-rest.md), and for every kind of caller, the exact
expected outcome. Each (row, caller) cell is its own pytest id, e.g.
`test_mqtt[twin-get-other]` or `test_http[DELETE /devices/{id}-registryRead]`.

The tables (authz_table.py) ARE the specification of who may do what;
`matrix_markdown()` renders them (run this file or authz_table.py as a
script). test_matrix_size prints the size (-s) and, when
IOTHUBD_AUTHZ_RECORD names a file, writes the size and the tables there.
Hub setup and observation helpers are in authz_util.py.

How a cell is judged: its row's executor performs the operation as the
caller and *observes* what happened, rendered as a canonical string
("PUBACK 0x83 status 0504", "response, own twin", "403 IotHubUnauthorized");
the test asserts observed == expected. Observations include isolation facts
measured on the other side: whose identity a stored telemetry message
carries (read back through /events), whose twin a response holds, whether
the victim device A still got its own desired patch / command / method call
and the caller did not, and whether a method reply or a PUBACK from the
caller settled something addressed to A. So "a device can never read or
change another device's twin, commands, methods or telemetry identity" is
tested cell by cell, for the other device, for a module of A and for devices
connected with a policy key.

Callers that cannot connect (a policy without DeviceConnect, an expired
token, a forged signature, a disabled or deleted device, no credentials on a
production hub) are tried afresh in every row: each cell asserts the exact
CONNACK, and that the refused CONNECT did not take A's connection over.

Speed: two hubs for the whole module (production-like `closed`: no open
topics, no anonymous clients; development-like `dev`: --open-topics,
--allow-anonymous and an ACL giving each client id its own `devices/%c/#`
subtree). Device connections are made once per caller and reused by every
cell that does not end the connection; negative "nothing arrived" checks
wait on a PINGREQ round trip plus a short quiet window instead of long
sleeps.
"""

import json
import os
import socket
import tempfile
import time

import pytest

import mqtt5raw as raw
from authz_table import (A, HTTP_CALLERS, HTTP_ROWS, HTTP_TARGET, MOD, MQTT_CALLERS,  # noqa: F401
                         MQTT_ROWS, POLICIES, CONNECT_REFUSAL, B, DELETED, DISABLED,
                         client_id_of, matrix_markdown, matrix_size)
from authz_util import (Hub, answer, command_with, connack_text, feedback_for, find_event,
                        invoke, method_request, none_arrives, own_identity, ping, puback_text,
                        q, send_command, start_hub, suback_text, take, twin_path, victim_alive)
from conftest import iothubd_supports
from hub_device import HOST, now_ms, sas_signature, user_props
from service_client import ServiceClient, sas_token

@pytest.fixture(scope="module")
def hubs():
    if not iothubd_supports("--http"):
        pytest.skip("iothubd has no service API")
    tmps = [tempfile.TemporaryDirectory(prefix="iothubd-authz-") for _ in range(2)]
    brokers = []
    try:
        brokers.append(start_hub(tmps[0].name, closed=True))
        brokers.append(start_hub(tmps[1].name, acl="pattern readwrite devices/%c/#\n"))
        out = {"closed": Hub("closed", brokers[0]), "dev": Hub("dev", brokers[1])}
        for h in out.values():
            h.setup()
        for h in out.values():  # device A, connected for the whole module
            h.connect_victim()
        yield out
    finally:
        problems = []
        for b in brokers:
            problems += b.stop()
        for t in tmps:
            t.cleanup()
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


# ---- MQTT executors: (hub, caller, client) -> observed outcome --------------------------

def tag(caller, what):
    return "%s-%s-%s" % (what, caller, os.urandom(3).hex())


def ex_connect(h, caller, c):
    return connack_text(c.connack)


def ex_connect_as_a(h, caller, c, cid=A):
    c, p = h.connect(caller, cid=cid)
    c.close()
    try:
        ping(h.victim)
        return connack_text(p) + ", A keeps its connection"
    except (raw.ConnectionClosed, OSError):
        got = [x for x in h.victim.pending if x.type == raw.DISCONNECT]
        h.connect_victim()
        return connack_text(p) + ", A's connection taken over (0x%02X)" % (
            got[-1].reason_code if got else 0)


def ex_connect_under_a(h, caller, c):
    return ex_connect_as_a(h, caller, c, cid=A + "/x")


def ex_reauth_with_a_key(h, caller, c):
    exp = now_ms() + 3600 * 1000
    at = now_ms()
    c.auth(raw.RC_REAUTHENTICATE, {
        "AuthenticationMethod": "SAS",
        "AuthenticationData": sas_signature(h.keys[A], HOST, c.client_id, None, at, exp),
        "UserProperty": [("sas-at", str(at)), ("sas-expiry", str(exp))]})
    try:
        p = c.recv(3.0)
    except (raw.Timeout, raw.ConnectionClosed) as e:
        return "no answer (%r)" % e
    if p.type in (raw.AUTH, raw.DISCONNECT):
        return "%s 0x%02X" % (raw.PACKET_NAMES[p.type], p.reason_code)
    return "unexpected %r" % p


def ex_telemetry(h, caller, c, props=()):
    mid = tag(caller, "tel")
    pid = c.publish("$iothub/telemetry", b"t", qos=1, properties={
        "UserProperty": [("message-id", mid)] + list(props)})
    ack = puback_text(c, pid)
    e = find_event(h, mid)
    if e is None:
        return ack + ", not stored"
    who = "own identity" if own_identity(e, c.client_id) else "identity %s" % (
        e["systemProperties"].get("iothub-connection-device-id"))
    out = "%s, stored as %s" % (ack, who)
    if e["properties"].get("iothub-connection-device-id") == A:
        out += ", claim kept as app property"
    return out


def ex_claims_sys(h, caller, c):
    return ex_telemetry(h, caller, c, [("iothub-connection-device-id", A),
                                       ("iothub-connection-module-id", MOD)])


def ex_claims_app(h, caller, c):
    return ex_telemetry(h, caller, c, [("@iothub-connection-device-id", A)])


def request(c, topic, payload, corr):
    """The response to a request, or None. A device's answer comes from the
    store (asynchronous): up to 1 s. An open-broker client's request is
    dropped in the PUBLISH callback: a PINGREQ round trip settles it."""
    c.publish(topic, payload, properties={"CorrelationData": corr})
    is_resp = lambda p: (p.topic == "$iothub/responses" and  # noqa: E731
                         p.properties.get("CorrelationData") == corr)
    if c.client_id == client_id_of("anonymous"):
        return None if none_arrives(c, is_resp) else take(c, is_resp)
    return take(c, is_resp, timeout=1.0)


def ex_twin_get(h, caller, c):
    r = request(c, "$iothub/twin/get", b"", os.urandom(8))
    if r is None:
        return "no response"
    st = user_props(r.properties).get("status")
    if st:
        return "response status " + st
    who = json.loads(r.payload)["desired"].get("who")
    return "response, own twin" if who == c.client_id else "response, twin of %s" % who


def ex_twin_patch(h, caller, c):
    key = "by_" + caller
    r = request(c, "$iothub/twin/patch/reported", json.dumps({key: 1}), os.urandom(8))
    mine = h.call("GET", twin_path(c.client_id))  # none for an anonymous client
    own = mine.json()["properties"]["reported"] if mine.status == 200 else {}
    a = h.ok("GET", twin_path(A)).json()["properties"]["reported"]
    if r is None:
        return "no response, nothing patched" if key not in own and key not in a else \
            "no response, but patched"
    up = user_props(r.properties)
    if "status" in up:
        return "response status " + up["status"]
    out = "response with version" if up.get("version", "").isdigit() else "response"
    out += ", own twin patched" if key in own else ", own twin NOT patched"
    if c.client_id != A:
        out += ", A's untouched" if key not in a else ", A's PATCHED"
    return out


def ex_twin_qos1(h, caller, c):
    pid = c.publish("$iothub/twin/get", b"", qos=1, properties={"CorrelationData": b"q1"})
    return puback_text(c, pid)


def sub(c, filters):
    return suback_text(c.subscribe([(f, raw.sub_options(qos)) for f, qos in filters]))


def ex_sub_desired(h, caller, c):
    s = sub(c, [("$iothub/twin/patch/desired", 0)])
    if s != "SUBACK [0x00]":
        return s
    victim, marker = h.victim, tag(caller, "d")
    is_desired = lambda m: lambda p: (p.topic == "$iothub/twin/patch/desired" and  # noqa: E731
                                      json.loads(p.payload).get("n") == m)
    h.ok("PATCH", twin_path(A), {"properties": {"desired": {"n": marker}}})
    assert take(victim, is_desired(marker)) is not None, "A lost its own desired patch"
    leaked = c is not victim and not none_arrives(c, is_desired(marker))
    own = tag(caller, "o")
    h.ok("PATCH", twin_path(c.client_id), {"properties": {"desired": {"n": own}}})
    got_own = take(c, is_desired(own)) is not None
    if c is not victim and not none_arrives(victim, is_desired(own)):
        return s + ", A got the caller's notification"
    if c is not victim:
        c.unsubscribe("$iothub/twin/patch/desired")
    if leaked:
        return s + ", got A's notification"
    return s + (", own notifications only" if got_own else ", own notification missing")


def ex_sub_commands(h, caller, c):
    s = sub(c, [("$iothub/commands", 1)])
    if s != "SUBACK [0x01]":
        return s
    victim, mid = h.victim, tag(caller, "c")
    send_command(h, A, mid)
    p = command_with(victim, mid)
    assert p is not None, "A lost its own command"
    victim.puback(p.packet_id)
    leaked = c is not victim and not none_arrives(c, lambda p: p.topic == "$iothub/commands")
    if leaked:
        return s + ", got A's command"
    dev, _, mod = c.client_id.partition("/")
    if mod:  # commands are queued per device: nothing for a module, ever
        return s + ", no commands (modules have no queue)" if none_arrives(
            c, lambda p: p.topic == "$iothub/commands") else s + ", got a command"
    own = tag(caller, "o")
    send_command(h, dev, own)
    p = command_with(c, own)
    if p is None:
        return s + ", own command missing"
    c.puback(p.packet_id)
    if c is not victim and not none_arrives(victim, lambda p: p.topic == "$iothub/commands"):
        return s + ", A got the caller's command"
    return s + ", own commands only"


def ex_sub_methods(h, caller, c):
    s = sub(c, [("$iothub/methods/+", 0)])
    if s != "SUBACK [0x00]":
        return s
    victim, name = h.victim, tag(caller, "m")
    call = invoke(h, A, name)
    req = method_request(victim, name)
    assert req is not None, "A lost its own method call"
    leaked = c is not victim and not none_arrives(c, lambda p: p.topic.startswith("$iothub/methods/"))
    answer(victim, req, 200)
    assert call.result().status == 200
    if leaked:
        return s + ", got A's call"
    own = invoke(h, c.client_id, name)
    req = method_request(c, name)
    if req is None:
        own.result()
        return s + ", own call missing"
    answer(c, req, 201)
    r = own.result()
    if c is not victim and not none_arrives(victim, lambda p: p.topic == "$iothub/methods/" + name):
        return s + ", A got the caller's call"
    if c is not victim:
        c.unsubscribe("$iothub/methods/+")
    return s + (", own calls only" if r.status == 200 and r.json()["status"] == 201
                else ", own call failed %r" % r)


def ex_sub_responses(h, caller, c):
    return sub(c, [("$iothub/responses", 0)])


def ex_reply_a_call(h, caller, c):
    victim, name = h.victim, tag(caller, "r")
    call = invoke(h, A, name)
    req = method_request(victim, name)
    assert req is not None, "A lost its own method call"
    answer(c, req, 299, b'"forged"')  # the caller knows A's Correlation Data here
    ping(c)
    if c is not victim:
        answer(victim, req, 200)
    r = call.result()
    assert r.status == 200, r
    code = r.json()["status"]
    if c is victim:
        return "completes the call (%d)" % code
    return "ignored, A's reply answers the call" if code == 200 else "ANSWERED A's call (%d)" % code


def ex_settle_a_command(h, caller, c):
    victim, mid = h.victim, tag(caller, "s")
    send_command(h, A, mid, ack="full")
    p = command_with(victim, mid)
    assert p is not None, "A lost its own command"
    c.puback(p.packet_id, 0x83, {"UserProperty": [("status", "0100")]})
    ping(c)
    if c is not victim:
        victim.puback(p.packet_id)  # A completes it
    outcome = feedback_for(h, mid)
    if c is victim:
        return "settles it (%s)" % outcome
    return "ignored, A settles it" if outcome == "Success" else "SETTLED A's command (%s)" % outcome


def ex_pub_server_topics(h, caller, c):
    victim, marker = h.victim, tag(caller, "x").encode()
    acks = []
    for t in ("$iothub/commands", "$iothub/twin/patch/desired", "$iothub/methods/reboot"):
        acks.append(puback_text(c, c.publish(t, marker, qos=1)))
    out = acks[0] + " x3" if len(set(acks)) == 1 else ", ".join(acks)
    reached = not none_arrives(victim, lambda p: p.payload == marker)
    return out + (", REACHED A" if reached else ", nothing reaches A")


def ex_pub_a_topic_qos0(h, caller, c):
    c.publish("$iothub/devices/%s/twin/get" % A, b"", properties={"CorrelationData": b"x"})
    try:
        ping(c)
        return "dropped, still connected"
    except (raw.ConnectionClosed, OSError):
        pass
    try:
        got = c.recv_until_closed(3.0)
    except raw.Timeout:
        return "still open after an error"
    disc = [p for p in got if p.type == raw.DISCONNECT]
    return "DISCONNECT 0x%02X" % disc[-1].reason_code if disc else "closed without DISCONNECT"


def ex_sub_a_topics(h, caller, c):
    return sub(c, [("$iothub/devices/%s/commands" % A, 1), ("$iothub/devices/%s/methods/+" % A, 0),
                   ("$iothub/devices/%s/#" % A, 0)])


def ex_sub_wildcards(h, caller, c):
    return sub(c, [("$iothub/#", 0), ("$iothub/+", 0), ("$iothub/methods/#", 0), ("#", 0)])


def open_space(c, topic):
    s = sub(c, [(topic + "/#", 1)])
    pid = c.publish(topic + "/x", b"open", qos=1)
    out = "%s, %s" % (s, puback_text(c, pid))
    if s == "SUBACK [0x01]":
        got = take(c, lambda p: p.topic == topic + "/x", timeout=2.0)
        if got is not None and got.qos:
            c.puback(got.packet_id)
        out += ", delivered" if got is not None else ", not delivered"
        c.unsubscribe(topic + "/#")
    return out


def ex_open_own(h, caller, c):
    return open_space(c, "devices/" + c.client_id)


def ex_open_a(h, caller, c):
    return open_space(c, "devices/" + A)


EXECUTORS = {
    "connect": ex_connect, "connect-as-A": ex_connect_as_a, "connect-under-A": ex_connect_under_a,
    "reauth-with-A-key": ex_reauth_with_a_key, "telemetry": ex_telemetry, "telemetry-claims-A-sys": ex_claims_sys,
    "telemetry-claims-A-app": ex_claims_app, "twin-get": ex_twin_get,
    "twin-patch-reported": ex_twin_patch, "twin-request-qos1": ex_twin_qos1,
    "sub-desired": ex_sub_desired, "sub-commands": ex_sub_commands,
    "sub-methods": ex_sub_methods, "sub-responses": ex_sub_responses,
    "reply-A-call": ex_reply_a_call, "settle-A-command": ex_settle_a_command,
    "pub-server-topics": ex_pub_server_topics, "pub-A-topic-qos0": ex_pub_a_topic_qos0,
    "sub-A-topics": ex_sub_a_topics, "sub-wildcards": ex_sub_wildcards,
    "open-own-subtree": ex_open_own, "open-A-subtree": ex_open_a,
}
# Rows whose operation may end the connection: a fresh one per cell.
FRESH_CONNECTION = {"pub-A-topic-qos0", "reauth-with-A-key"}
# Rows whose executor makes its own connection.
OWN_CONNECTION = {"connect-as-A", "connect-under-A"}


def mqtt_cells():
    for row in MQTT_ROWS:
        for caller in MQTT_CALLERS:
            yield pytest.param(row, caller, id="%s-%s" % (row.rid, caller))


@pytest.mark.parametrize("row,caller", list(mqtt_cells()))
def test_mqtt(hubs, row, caller):
    expected = row.cells[caller]
    # `none` is judged on the production hub and `anonymous` on the dev hub
    # whatever the row; the other callers use the row's hub.
    h = hubs[{"none": "closed", "anonymous": "dev"}.get(caller, row.hub)]
    if caller in CONNECT_REFUSAL:
        c, p = h.connect(caller)
        try:
            observed = connack_text(p)
            assert c.is_closed(3.0), "the refused connection stays open"
        finally:
            c.close()
        victim_alive(h)  # a refused CONNECT as A took nothing over
    elif row.rid in OWN_CONNECTION:
        observed = EXECUTORS[row.rid](h, caller, None)
    elif row.rid in FRESH_CONNECTION:
        c, p = h.connect(caller)
        assert p.reason_code == 0, p
        try:
            observed = EXECUTORS[row.rid](h, caller, c)
        finally:
            c.close()
            old = h.conns.pop(caller, None)  # it took the caller's cached one over
            if old is not None:
                old.close()
            if client_id_of(caller) == A:
                h.connect_victim()
    else:
        observed = EXECUTORS[row.rid](h, caller, h.client(caller))
    assert observed == expected


# ---- HTTP ------------------------------------------------------------------------------

def http_token(h, caller):
    """The Authorization header a caller sends (None: none at all)."""
    host = h.svc.hostname
    owner = h.policy_keys["iothubowner"]
    if caller in POLICIES:
        return sas_token(host, h.policy_keys[caller], caller)
    return {
        "self": lambda: sas_token("%s/devices/%s" % (host, HTTP_TARGET), h.keys[HTTP_TARGET]),
        "other": lambda: sas_token("%s/devices/%s" % (host, B), h.keys[B]),
        "module": lambda: sas_token("%s/devices/%s/modules/%s" % (host, HTTP_TARGET, MOD),
                                    h.keys[HTTP_TARGET + "/" + MOD]),
        "expired": lambda: sas_token(host, owner, "iothubowner", expiry=int(time.time()) - 5),
        "forged": lambda: sas_token(host, h.keys[B], "iothubowner"),
        "disabled": lambda: sas_token("%s/devices/%s" % (host, DISABLED), h.keys[DISABLED]),
        "deleted": lambda: sas_token("%s/devices/%s" % (host, DELETED), h.keys[DELETED]),
        "none": lambda: None,
        "scoped": lambda: sas_token("%s/devices/az-other" % host, owner, "iothubowner"),
        "scoped-own": lambda: sas_token("%s/devices/%s" % (host, HTTP_TARGET), owner,
                                        "iothubowner"),
    }[caller]()


def fill(template, ident, module, group):
    return template.replace("{id}", q(ident)).replace("{m}", q(module)).replace("{group}", group)


def fill_body(body, ident, module):
    if isinstance(body, dict):
        return {k: ident if v == "{id}" else module if v == "{m}" else v for k, v in body.items()}
    return body


def stream_status(h, path, token):
    """Status line and content type of GET /events/stream (the body never ends)."""
    s = socket.create_connection(("127.0.0.1", h.b.http_port), timeout=5)
    try:
        auth = "Authorization: %s\r\n" % token if token else ""
        s.sendall(("GET %s?api-version=2021-04-12 HTTP/1.1\r\nHost: x\r\n%s\r\n" % (
            path, auth)).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(l.split(": ", 1) for l in lines[1:] if ": " in l)
        ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        if status == 200:
            return "200 " + ctype.split(";")[0]
        # an error body may need another read
        length = int({k.lower(): v for k, v in headers.items()}.get("content-length", "0"))
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return error_text(status, headers, body)
    finally:
        s.close()


def error_text(status, headers, body):
    """"401 IotHubUnauthorizedAccess" after checking the spec's error shape."""
    headers = {k.lower(): v for k, v in headers.items()}
    assert "x-ms-request-id" in headers, headers
    assert headers.get("content-type", "").startswith("application/json"), headers
    doc = json.loads(body)
    assert set(doc) == {"Message", "ExceptionMessage"}, doc
    assert doc["Message"].startswith("ErrorCode:"), doc
    return "%d %s" % (status, doc["Message"][len("ErrorCode:"):].split(";", 1)[0])


def http_cells():
    for row in HTTP_ROWS:
        for caller in HTTP_CALLERS:
            yield pytest.param(row, caller, id="%s-%s" % (row.rid, caller))


def exists(h, ident, module):
    path = "/devices/" + q(ident) + ("/modules/" + q(module) if module else "")
    return h.call("GET", path).status == 200


@pytest.mark.parametrize("row,caller", list(http_cells()))
def test_http(hubs, row, caller):
    h = hubs["closed"]
    ident, module, group = HTTP_TARGET, MOD, "grp"
    if row.fresh:  # its own identity per cell, so cells cannot disturb each other
        tail = "%s-%s" % (caller, os.urandom(2).hex())
        if "{m}" in row.path:
            module = "m-" + tail
        else:
            ident = "az-t-" + tail
        if row.fresh == "existing":
            has_m = "{m}" in row.path
            h.ok("PUT", "/devices/" + q(ident) + ("/modules/" + q(module) if has_m else ""),
                 dict({"deviceId": ident}, **({"moduleId": module} if has_m else {})))
    if "checkpoints" in row.path:
        h.ok("PUT", "/events/checkpoints/%s/0" % group, {"sequenceNumber": 0})
    path = fill(row.path, ident, module, group)
    token = http_token(h, caller)
    if path.startswith("/events/stream"):
        observed = stream_status(h, path, token)
    else:
        body = fill_body(row.body, ident, module)
        r = ServiceClient(h.b, token=token or "").request(row.method, path, body)
        observed = str(r.status) if r.status < 400 else error_text(
            r.status, r.headers, r.body)
    assert observed == row.cells[caller]
    # a refused call changed nothing; an allowed one did what it says
    if row.fresh:
        has_m = "{m}" in row.path
        there = exists(h, ident, module if has_m else None)
        allowed = row.cells[caller] == row.ok
        if row.method == "PUT":
            assert there == allowed
        else:
            assert there == (not allowed)


def test_matrix_size(hubs):
    """Records the size of the matrix (printed with -s, written to
    $IOTHUBD_AUTHZ_RECORD when set)."""
    mqtt, http = matrix_size()
    line = "authz matrix: MQTT %d rows x %d callers = %d cells; HTTP %d routes x %d callers = " \
           "%d cells; total %d" % (len(MQTT_ROWS), len(MQTT_CALLERS), mqtt, len(HTTP_ROWS),
                                   len(HTTP_CALLERS), http, mqtt + http)
    print(line)
    rec = os.environ.get("IOTHUBD_AUTHZ_RECORD")
    if rec:
        with open(rec, "w") as f:
            f.write(line + "\n\n" + matrix_markdown())
    assert set(EXECUTORS) == {r.rid for r in MQTT_ROWS}
    assert mqtt + http == len(list(mqtt_cells())) + len(list(http_cells()))


if __name__ == "__main__":
    print(matrix_markdown())

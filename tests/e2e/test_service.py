"""The service API's device identity calls against a running iothubd
(../shared/spec/service-rest.md "Common rules" and "Device identities"):
every status of the spec, SAS authentication and policy rights, and bad
input that must get a 4xx while the server keeps serving others."""

import base64
import re
import time

import pytest

from service_client import (ServiceClient, parse_connstr, policy_client, raw_http, sas_token,
                            status_of)


@pytest.fixture
def svc(hub):
    return ServiceClient(hub)


# ------------------------------------------------------------ identities
def test_create_get_delete_device(svc):
    r = svc.put_device("dev-1")
    assert r.status in (200, 201), r
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert "x-ms-request-id" in r.headers
    d = r.json()
    assert d["deviceId"] == "dev-1" and d["status"] == "enabled"
    assert d["connectionState"] == "Disconnected"
    assert d["authentication"]["type"] == "sas"
    keys = d["authentication"]["symmetricKey"]
    for k in ("primaryKey", "secondaryKey"):  # generated: 32 random bytes, base64
        assert len(base64.b64decode(keys[k])) == 32
    assert keys["primaryKey"] != keys["secondaryKey"]
    assert d["etag"] and d["generationId"]
    assert r.headers["etag"] == '"%s"' % d["etag"]

    g = svc.get_device("dev-1")
    assert g.status == 200 and g.json()["etag"] == d["etag"]
    assert svc.delete_device("dev-1").status == 204
    g = svc.get_device("dev-1")
    assert g.status == 404 and g.error_code == "DeviceNotFound"
    assert svc.delete_device("dev-1").status == 404


def test_put_given_keys_and_replace_keeps_generation(svc):
    k1 = base64.b64encode(b"1" * 32).decode()
    k2 = base64.b64encode(b"2" * 32).decode()
    body = {"authentication": {"type": "sas", "symmetricKey": {"primaryKey": k1, "secondaryKey": k2}}}
    first = svc.put_device("dev-k", body)
    assert first.status in (200, 201)
    assert first.json()["authentication"]["symmetricKey"] == {"primaryKey": k1, "secondaryKey": k2}
    body["status"] = "disabled"
    second = svc.put_device("dev-k", body)
    assert second.status == 200
    assert second.json()["status"] == "disabled"
    assert second.json()["generationId"] == first.json()["generationId"]
    assert second.json()["etag"] != first.json()["etag"]


def test_if_match_rules(svc):
    assert svc.put_device("dev-m", headers={"If-Match": "*"}).status == 404  # must exist
    created = svc.put_device("dev-m").json()
    etag = created["etag"]
    assert svc.put_device("dev-m", headers={"If-Match": '"nope"'}).status == 412
    r = svc.put_device("dev-m", headers={"If-Match": '"%s"' % etag})
    assert r.status == 200, r
    etag2 = r.json()["etag"]
    assert svc.put_device("dev-m", headers={"If-Match": etag2}).status == 200  # unquoted works
    r = svc.put_device("dev-m", headers={"If-None-Match": "*"})
    assert r.status == 409 and r.error_code == "DeviceAlreadyExists"
    r = svc.delete_device("dev-m", headers={"If-Match": '"stale"'})
    assert r.status == 412 and r.error_code == "PreconditionFailed"
    assert svc.delete_device("dev-m", headers={"If-Match": "*"}).status == 204


def test_list_top_and_statistics(svc):
    for i in range(5):
        assert svc.put_device("list-%d" % i, {"status": "disabled" if i < 2 else "enabled"}).status in (200, 201)
    for path in ("/devices", "/devices/"):
        r = svc.request("GET", path)
        assert r.status == 200
        ids = [d["deviceId"] for d in r.json()]
        assert set("list-%d" % i for i in range(5)) <= set(ids)
    assert len(svc.request("GET", "/devices?top=2").json()) == 2
    s = svc.request("GET", "/statistics/devices").json()
    assert s["totalDeviceCount"] == 5
    assert s["enabledDeviceCount"] == 3 and s["disabledDeviceCount"] == 2


def test_modules(svc):
    r = svc.request("PUT", "/devices/nodev/modules/m1", {"deviceId": "nodev", "moduleId": "m1"})
    assert r.status == 404
    svc.put_device("withmod")
    r = svc.request("PUT", "/devices/withmod/modules/m1", {"deviceId": "withmod", "moduleId": "m1"})
    assert r.status in (200, 201), r
    assert r.json()["moduleId"] == "m1"
    assert svc.request("GET", "/devices/withmod/modules/m1").status == 200
    mods = svc.request("GET", "/devices/withmod/modules").json()
    assert [m["moduleId"] for m in mods] == ["m1"]
    assert svc.delete_device("withmod").status == 204
    assert svc.request("GET", "/devices/withmod/modules/m1").status == 404


@pytest.mark.parametrize("device_id", ["a" * 129, "has space", "slash/inside", "uni\u00e9"])
def test_invalid_device_id_400(svc, device_id):
    r = svc.put_device(device_id)
    assert r.status == 400 and r.error_code == "ArgumentInvalid", r


def test_valid_device_id_characters(svc):
    device_id = "a-.+%_#*?!(),=@$'Z9"
    r = svc.put_device(device_id)
    assert r.status in (200, 201), r
    assert svc.get_device(device_id).json()["deviceId"] == device_id


@pytest.mark.parametrize("body", [b"{not json", b"[1,2]", b'{"status": 7}', b'{"deviceId": "other"}',
                                  b'{"authentication": {"type": "sas", "symmetricKey": {"primaryKey": "***"}}}'])
def test_bad_body_400(svc, body):
    r = svc.request("PUT", "/devices/badbody", body, headers={"Content-Type": "application/json"})
    assert r.status == 400 and r.error_code == "ArgumentInvalid", r
    assert svc.get_device("badbody").status == 404  # nothing created


# ------------------------------------------------------------ authentication
def test_missing_token_401(svc):
    r = svc.request("GET", "/devices", auth=False)
    assert r.status == 401 and r.error_code == "IotHubUnauthorizedAccess"


def test_expired_token_401(hub, svc):
    tok = sas_token(svc.hostname, svc.key, svc.policy, expiry=int(time.time()) - 10)
    r = ServiceClient(hub, token=tok).request("GET", "/devices")
    assert r.status == 401


def test_forged_token_401(hub, svc):
    forged = base64.b64encode(b"x" * 32).decode()
    r = ServiceClient(hub, token=sas_token(svc.hostname, forged, svc.policy)).request("GET", "/devices")
    assert r.status == 401
    r = ServiceClient(hub, token=sas_token(svc.hostname, svc.key, "nosuchpolicy")).request("GET", "/devices")
    assert r.status == 401
    r = ServiceClient(hub, token=sas_token("otherhost", svc.key, svc.policy)).request("GET", "/devices")
    assert r.status == 401
    r = ServiceClient(hub, token="SharedAccessSignature garbage").request("GET", "/devices")
    assert r.status == 401


def test_policy_rights_403(hub, svc):
    read = policy_client(hub, svc, "registryRead")
    assert read.request("GET", "/devices").status == 200
    r = read.put_device("by-reader")
    assert r.status == 403 and r.error_code == "IotHubUnauthorized"
    service = policy_client(hub, svc, "service")
    assert service.request("GET", "/devices").status == 403
    device = policy_client(hub, svc, "device")
    assert device.request("GET", "/devices").status == 403
    rw = policy_client(hub, svc, "registryReadWrite")
    assert rw.put_device("by-rw").status in (200, 201)
    assert rw.delete_device("by-rw").status == 204
    assert read.request("GET", "/iothubd/policies").status == 403


def test_owner_connstr_file(hub):
    import os
    import stat
    path = os.path.join(hub.data, "owner.connstr")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    cs = parse_connstr(hub.owner_connstr)
    assert cs["HostName"] == "localhost" and cs["SharedAccessKeyName"] == "iothubowner"


# ------------------------------------------------------------ bad input
def check_still_serving(svc):
    assert svc.request("GET", "/statistics/devices").status == 200


def test_body_too_large_413(hub, svc):
    big = b'{"deviceId":"big","x":"' + b"a" * (2 << 20) + b'"}'
    req = (b"PUT /devices/big HTTP/1.1\r\nHost: x\r\nAuthorization: " + svc.auth().encode() +
           b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(big))
    out = raw_http(hub.http_port, req + big)
    assert status_of(out) == 413
    check_still_serving(svc)


def test_malformed_request_line_400(hub, svc):
    out = raw_http(hub.http_port, b"THIS IS NOT HTTP\r\n\r\n")
    assert status_of(out) == 400
    check_still_serving(svc)


def test_header_flood_431(hub, svc):
    headers = b"".join(b"X-Flood-%d: %s\r\n" % (i, b"v" * 100) for i in range(2000))
    out = raw_http(hub.http_port, b"GET /devices HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert status_of(out) in (400, 431)
    check_still_serving(svc)


def test_unknown_route_404_and_pipelining(hub, svc):
    auth = svc.auth().encode()
    two = (b"GET /statistics/devices HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth + b"\r\n\r\n"
           b"GET /no/such/thing HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth +
           b"\r\nConnection: close\r\n\r\n")
    out = raw_http(hub.http_port, two)
    statuses = [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", out)]
    assert statuses == [200, 404]

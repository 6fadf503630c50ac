"""Twins through the service API and the `iothub twin` commands, against a
running iothubd (../shared/spec/service-rest.md "Twins", iothub-mqtt5.md
section 7): GET/PATCH/PUT on device and module twins, $version, $metadata
and etag bookkeeping, If-Match (412), every twin limit refused with 400
and nothing changed, SAS rights (401/403), twins of deleted devices (404),
twins surviving a restart, and the command line's show/update/replace."""

import json
import os
import re
import tempfile

import pytest

from service_client import ServiceClient, policy_client
from test_cli import Cli, clean_env  # noqa: F401 (helpers, not tests)

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def svc(hub):
    return ServiceClient(hub)


def twin_path(device, module=None):
    return "/twins/" + device + ("/modules/" + module if module else "")


def make_device(svc, device, module=None):
    path = "/devices/" + device + ("/modules/" + module if module else "")
    body = {"deviceId": device}
    if module:
        body["moduleId"] = module
    r = svc.request("PUT", path, body)
    assert r.status in (200, 201), r


def get_twin(svc, device, module=None):
    r = svc.request("GET", twin_path(device, module))
    assert r.status == 200, r
    return r


def patch(svc, device, body, module=None, etag=None):
    headers = {"If-Match": etag} if etag is not None else None
    return svc.request("PATCH", twin_path(device, module), body, headers=headers)


# ------------------------------------------------------------ reads and writes
def test_new_twin_shape(svc):
    make_device(svc, "tw-1")
    r = get_twin(svc, "tw-1")
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    t = r.json()
    assert r.headers["etag"] == '"%s"' % t["etag"]
    assert t["deviceId"] == "tw-1" and "moduleId" not in t
    assert t["version"] == 1
    assert t["status"] == "enabled" and t["connectionState"] == "Disconnected"
    assert "lastActivityTime" in t
    assert t["tags"] == {}
    for section in ("desired", "reported"):
        s = t["properties"][section]
        assert s["$version"] == 1
        assert ISO_MS.match(s["$metadata"]["$lastUpdated"]), s
    assert t["properties"]["desired"]["$metadata"]["$lastUpdatedVersion"] == 1


def test_patch_merges_and_counts_versions(svc):
    make_device(svc, "tw-2")
    etag0 = get_twin(svc, "tw-2").json()["etag"]
    r = patch(svc, "tw-2", {"tags": {"site": "north", "floor": 3},
                            "properties": {"desired": {"fan": {"speed": 2, "mode": "auto"}}}})
    assert r.status == 200, r
    t = r.json()
    assert r.headers["etag"] == '"%s"' % t["etag"] and t["etag"] != etag0
    assert t["version"] == 2
    assert t["tags"] == {"site": "north", "floor": 3}
    d = t["properties"]["desired"]
    assert d["fan"] == {"speed": 2, "mode": "auto"} and d["$version"] == 2
    assert d["$metadata"]["fan"]["speed"]["$lastUpdatedVersion"] == 2
    assert ISO_MS.match(d["$metadata"]["fan"]["$lastUpdated"])
    assert t["properties"]["reported"]["$version"] == 1

    r = patch(svc, "tw-2", {"tags": {"floor": None},
                            "properties": {"desired": {"fan": {"mode": None}, "led": True}}})
    assert r.status == 200, r
    t = r.json()
    assert t["tags"] == {"site": "north"}
    d = t["properties"]["desired"]
    assert d["fan"] == {"speed": 2} and d["led"] is True and d["$version"] == 3
    assert "mode" not in d["$metadata"]["fan"]
    assert d["$metadata"]["fan"]["speed"]["$lastUpdatedVersion"] == 2  # untouched
    assert t["version"] == 3
    assert get_twin(svc, "tw-2").json() == t

    r = patch(svc, "tw-2", {"tags": {"only": "tags"}})
    assert r.status == 200 and r.json()["properties"]["desired"]["$version"] == 3


def test_put_replaces_tags_and_desired(svc):
    make_device(svc, "tw-3")
    assert patch(svc, "tw-3", {"tags": {"a": 1}, "properties": {"desired": {"x": 1}}}).status == 200
    current = get_twin(svc, "tw-3").json()
    # read-modify-write with the whole twin: server-owned fields are ignored
    current["tags"] = {"b": 2}
    current["properties"]["desired"] = dict(current["properties"]["desired"], y=2)
    del current["properties"]["desired"]["x"]
    r = svc.request("PUT", twin_path("tw-3"), current, headers={"If-Match": current["etag"]})
    assert r.status == 200, r
    t = r.json()
    assert t["tags"] == {"b": 2}
    d = t["properties"]["desired"]
    assert "x" not in d and d["y"] == 2 and d["$version"] == 3
    r = svc.request("PUT", twin_path("tw-3"), {})
    assert r.status == 200, r
    assert r.json()["tags"] == {} and r.json()["properties"]["desired"]["$version"] == 4


def test_if_match(svc):
    make_device(svc, "tw-4")
    etag = get_twin(svc, "tw-4").json()["etag"]
    assert patch(svc, "tw-4", {"tags": {"a": 1}}, etag='"%s"' % etag).status == 200
    r = patch(svc, "tw-4", {"tags": {"a": 2}}, etag='"%s"' % etag)  # stale now
    assert r.status == 412 and r.error_code == "PreconditionFailed", r
    r = svc.request("PUT", twin_path("tw-4"), {}, headers={"If-Match": etag})
    assert r.status == 412, r
    etag = get_twin(svc, "tw-4").json()["etag"]
    assert patch(svc, "tw-4", {"tags": {"a": 3}}, etag=etag).status == 200  # unquoted
    assert patch(svc, "tw-4", {"tags": {"a": 4}}, etag="*").status == 200
    assert patch(svc, "tw-4", {"tags": {"a": 5}}, etag='"x').status == 400
    assert get_twin(svc, "tw-4").json()["tags"] == {"a": 4}


def deep(levels):
    node = {"p": "v"}
    for i in range(levels, 0, -1):
        node = {"l%d" % i: node}
    return node


LIMIT_CASES = [
    ("key with .", {"properties": {"desired": {"a.b": 1}}}),
    ("key with $", {"properties": {"desired": {"$a": 1}}}),
    ("key with space", {"tags": {"a b": 1}}),
    ("key with control", {"tags": {"a\u0001b": 1}}),
    ("key longer than 1 KB", {"tags": {"k" * 1025: 1}}),
    ("depth 11", {"properties": {"desired": deep(11)}}),
    ("string over 4 KB", {"properties": {"desired": {"s": "x" * 4097}}}),
    ("integer too big", {"properties": {"desired": {"n": 4503599627370496}}}),
    ("integer too small", {"tags": {"n": -4503599627370496}}),
    ("desired over 32 KB", {"properties": {"desired": {"k%d" % i: "v" * 4000 for i in range(9)}}}),
    ("tags over 8 KB", {"tags": {"k%d" % i: "v" * 3000 for i in range(3)}}),
    ("tags not an object", {"tags": [1]}),
    ("nothing to change", {}),
]


@pytest.mark.parametrize("name,body", LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_limits_are_400_and_change_nothing(svc, name, body):
    make_device(svc, "tw-5")
    before = get_twin(svc, "tw-5").json()
    r = patch(svc, "tw-5", body)
    assert r.status == 400 and r.error_code == "ArgumentInvalid", (name, r)
    assert get_twin(svc, "tw-5").json() == before


def test_boundaries_are_accepted(svc):
    make_device(svc, "tw-6")
    body = {"tags": {"k" * 1024: 1},
            "properties": {"desired": dict(deep(10), s="x" * 4096, n=4503599627370495,
                                           m=-4503599627370495)}}
    r = patch(svc, "tw-6", body)
    assert r.status == 200, r


def test_bad_bodies(svc):
    make_device(svc, "tw-7")
    # the last two: jansson's error text stops inside the euro sign (the
    # error body must still be JSON), and a raw NUL that jansson 2.14 skips
    for raw in (b"{nope", b"[]", b"", b'"s"', b'{"properties":{"desired":5}}',
                b'{"tags":{"a":"x\xe2\x82\xac\\\xe2\x82\xac"}}', b'{"tags":{"a":false\x00}}'):
        r = svc.request("PATCH", twin_path("tw-7"), raw,
                        headers={"Content-Type": "application/json"})
        assert r.status == 400 and r.error_code == "ArgumentInvalid", (raw, r)
        r = svc.request("PUT", twin_path("tw-7"), raw, headers={"Content-Type": "application/json"})
        assert r.status == 400 and r.error_code == "ArgumentInvalid", (raw, r)
    assert get_twin(svc, "tw-7").json()["version"] == 1


# ------------------------------------------------------------ modules, rights, deletion
def test_module_twins(svc):
    make_device(svc, "tw-8")
    make_device(svc, "tw-8", "mod-a")
    t = get_twin(svc, "tw-8", "mod-a").json()
    assert t["deviceId"] == "tw-8" and t["moduleId"] == "mod-a"
    r = patch(svc, "tw-8", {"properties": {"desired": {"m": 1}}}, module="mod-a")
    assert r.status == 200 and r.json()["properties"]["desired"]["m"] == 1
    assert "m" not in get_twin(svc, "tw-8").json()["properties"]["desired"]
    r = svc.request("PUT", twin_path("tw-8", "mod-a"), {"tags": {"t": 1}})
    assert r.status == 200 and r.json()["tags"] == {"t": 1}
    r = svc.request("GET", twin_path("tw-8", "nope"))
    assert r.status == 404 and r.error_code == "DeviceNotFound", r


def test_rights(hub, svc):
    make_device(svc, "tw-9")
    reader = policy_client(hub, svc, "registryRead")
    service = policy_client(hub, svc, "service")
    assert reader.request("GET", twin_path("tw-9")).status == 200
    r = reader.request("PATCH", twin_path("tw-9"), {"tags": {"a": 1}})
    assert r.status == 403 and r.error_code == "IotHubUnauthorized", r
    assert reader.request("PUT", twin_path("tw-9"), {}).status == 403
    r = service.request("PATCH", twin_path("tw-9"), {"tags": {"a": 1}})
    assert r.status == 200, r
    # the spec: reading a twin takes RegistryRead (ServiceConnect's PATCH
    # still answers with the patched twin, as IoT Hub's does)
    assert service.request("GET", twin_path("tw-9")).status == 403
    device = policy_client(hub, svc, "device")
    assert device.request("GET", twin_path("tw-9")).status == 403
    for method in ("GET", "PATCH", "PUT"):
        r = svc.request(method, twin_path("tw-9"), {} if method != "GET" else None, auth=False)
        assert r.status == 401 and r.error_code == "IotHubUnauthorizedAccess", r


def test_deleted_and_unknown_devices_are_404(svc):
    make_device(svc, "tw-10")
    make_device(svc, "tw-10", "m")
    assert patch(svc, "tw-10", {"tags": {"a": 1}}).status == 200
    assert svc.request("DELETE", "/devices/tw-10").status == 204
    for module in (None, "m"):
        r = svc.request("GET", twin_path("tw-10", module))
        assert r.status == 404 and r.error_code == "DeviceNotFound", r
        r = patch(svc, "tw-10", {"tags": {"a": 1}}, module=module)
        assert r.status == 404 and r.error_code == "DeviceNotFound", r
    assert svc.request("GET", twin_path("never-there")).status == 404
    make_device(svc, "tw-10")  # re-created: a fresh twin
    assert get_twin(svc, "tw-10").json()["tags"] == {}


def test_twins_survive_a_restart(hub, svc):
    make_device(svc, "tw-11")
    # "\u0000" in a value is JSON like any other string (keys refuse it, §7)
    t = patch(svc, "tw-11", {"tags": {"a": 1}, "properties": {"desired": {"d": 1, "s": "a\x00b"}}}).json()
    assert t["properties"]["desired"]["s"] == "a\x00b"
    r = patch(svc, "tw-11", {"tags": {"a\x00": 1}})
    assert r.status == 400 and r.error_code == "ArgumentInvalid", r
    assert not hub.stop()
    hub.start()
    after = ServiceClient(hub).request("GET", twin_path("tw-11"))
    assert after.status == 200 and after.json() == t


# ------------------------------------------------------------ the command line
@pytest.fixture
def home():
    with tempfile.TemporaryDirectory(prefix="iothub-cli-home-") as d:
        yield d


@pytest.fixture
def cli(hub, home):
    return Cli(hub, home)


def test_cli_twin_show_update_replace(cli, home):
    cli("device", "create", "cli-tw")
    t = cli.json("twin", "show", "cli-tw")
    assert t["deviceId"] == "cli-tw" and t["version"] == 1
    out, _ = cli("twin", "show", "cli-tw")
    assert "ETag" in out and t["etag"] in out and "Desired $version" in out

    t = cli.json("twin", "update", "cli-tw", "--desired", '{"fan":{"speed":2}}',
                 "--tags", '{"site":"n"}')
    assert t["properties"]["desired"]["fan"] == {"speed": 2} and t["tags"] == {"site": "n"}
    out, _ = cli("twin", "update", "cli-tw", "--tags", '{"site":null}', "--etag", t["etag"])
    assert '{"fan":{"speed":2}}' in out
    err = cli.error("twin", "update", "cli-tw", "--tags", '{"x":1}', "--etag", t["etag"])
    assert "PreconditionFailed" in err
    err = cli.error("twin", "update", "cli-tw", "--desired", '{"a.b":1}')
    assert "ArgumentInvalid" in err

    patch_file = os.path.join(home, "patch.json")
    with open(patch_file, "w") as f:
        json.dump({"properties": {"desired": {"led": True}}}, f)
    t = cli.json("twin", "update", "cli-tw", "--json-patch", patch_file)
    assert t["properties"]["desired"]["led"] is True

    with open(patch_file, "w") as f:
        json.dump({"tags": {"only": 1}, "properties": {"desired": {"z": 0}}}, f)
    t = cli.json("twin", "replace", "cli-tw", "--file", patch_file, "--etag", t["etag"])
    assert t["tags"] == {"only": 1}
    assert {k for k in t["properties"]["desired"] if not k.startswith("$")} == {"z"}


def test_cli_twin_modules_and_errors(cli, home):
    cli("device", "create", "cli-tw2")
    cli("device", "create", "cli-tw2", "--module", "m1")
    t = cli.json("twin", "update", "cli-tw2", "--module", "m1", "--desired", '{"a":1}')
    assert t["moduleId"] == "m1"
    assert "DeviceNotFound" in cli.error("twin", "show", "nope")
    assert "invalid JSON" in cli.error("twin", "update", "cli-tw2", "--desired", "{", expect=2)
    assert "JSON object" in cli.error("twin", "update", "cli-tw2", "--tags", "[1]", expect=2)
    assert "--desired" in cli.error("twin", "update", "cli-tw2", expect=2)
    assert "--file" in cli.error("twin", "replace", "cli-tw2", expect=2)
    assert "excludes" in cli.error("twin", "update", "cli-tw2", "--json-patch", "x",
                                   "--tags", "{}", expect=2)

"""IoT Hub MQTT 5 device API, connecting (../shared/spec/iothub-mqtt5.md §1):
SAS and X.509 authentication, every CONNACK failure, the CONNACK limits,
re-authentication, SAS expiry, revocation by the registry, take-over,
modules. iothubd only (the hub fixture)."""

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

import mqtt5raw as raw
from conftest import Broker, free_port
from hub_device import (HOST, Devices, closed_hub, connect_device, expect_connack_failure,  # noqa: F401
                        expect_disconnect, now_ms, reauth_props, sas_connect_props,
                        user_props)
from service_client import parse_connstr


@pytest.fixture
def devices(hub):
    return Devices(hub)


# ---- success and limits ----------------------------------------------------

def test_sas_connect_success_carries_iothub_limits(hub, devices):
    dev, key, _ = devices.new_sas_device()
    c = connect_device(hub, dev, key, keepalive=0)
    p = c.connack.properties
    assert c.connack.reason_code == 0
    assert p["ReceiveMaximum"] == 16
    assert p["MaximumQoS"] == 1
    assert p["RetainAvailable"] == 0
    assert p["MaximumPacketSize"] == 262144
    assert p["TopicAliasMaximum"] == 10
    assert p["SubscriptionIdentifierAvailable"] == 0
    assert p["SharedSubscriptionAvailable"] == 0
    assert p["WildcardSubscriptionAvailable"] == 1
    assert p["ServerKeepAlive"] == 1140
    assert p["AuthenticationMethod"] == "SAS"
    c.pingreq()
    assert c.expect(raw.PINGRESP).type == raw.PINGRESP
    c.disconnect()


def test_server_keep_alive_only_when_needed(hub, devices):
    dev, key, _ = devices.new_sas_device()
    c = connect_device(hub, dev, key, keepalive=60)
    assert "ServerKeepAlive" not in c.connack.properties
    c.disconnect()
    c = connect_device(hub, dev, key, keepalive=3000)
    assert c.connack.properties["ServerKeepAlive"] == 1140
    c.disconnect()


def test_secondary_key_and_sas_at_optional(hub, devices):
    dev, _, d = devices.new_sas_device()
    secondary = d["authentication"]["symmetricKey"]["secondaryKey"]
    c = connect_device(hub, dev, secondary, sas_at=None)
    c.disconnect()


def test_policy_key_with_device_connect(hub, devices):
    dev, _, _ = devices.new_sas_device()
    owner = parse_connstr(hub.owner_connstr)
    c = connect_device(hub, dev, owner["SharedAccessKey"], policy="iothubowner")
    c.disconnect()
    props = sas_connect_props(dev, owner["SharedAccessKey"], policy="no-such-policy")
    expect_connack_failure(hub, dev, props, raw.RC_NOT_AUTHORIZED, "0101")


def test_connection_state_follows_the_device(hub, devices):
    dev, key, _ = devices.new_sas_device()
    c = connect_device(hub, dev, key)
    assert devices.svc.get_device(dev).json()["connectionState"] == "Connected"
    c.disconnect()
    deadline = time.monotonic() + 3
    while devices.svc.get_device(dev).json()["connectionState"] != "Disconnected":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_module_connects_with_its_own_key(hub, devices):
    dev, dev_key, _ = devices.new_sas_device()
    m = devices.create_module(dev, "mod1")
    mkey = m["authentication"]["symmetricKey"]["primaryKey"]
    c = connect_device(hub, dev + "/mod1", mkey)
    c.disconnect()
    props = sas_connect_props(dev + "/mod1", dev_key)
    expect_connack_failure(hub, dev + "/mod1", props, raw.RC_NOT_AUTHORIZED, "0101")


# ---- CONNACK failures ---------------------------------------------------------

def test_missing_method_refused_without_open_topics(closed_hub):
    c = raw.RawClient(closed_hub.port, closed_hub.host)
    p = c.connect(client_id="anyone", expect_rc=None)
    assert p.type == raw.CONNACK and p.reason_code == raw.RC_BAD_AUTHENTICATION_METHOD, p
    assert user_props(p.properties).get("status") == "0100"
    c.close()


def test_devices_connect_without_open_topics(closed_hub):
    devs = Devices(closed_hub)
    dev, key, _ = devs.new_sas_device()
    c = connect_device(closed_hub, dev, key)
    c.disconnect()


def test_unknown_method_refused(hub, devices):
    dev, key, _ = devices.new_sas_device()
    props = sas_connect_props(dev, key)
    props["AuthenticationMethod"] = "SAS-TOKEN"
    expect_connack_failure(hub, dev, props, raw.RC_BAD_AUTHENTICATION_METHOD, "0100")


@pytest.mark.parametrize("version", [None, "2020-10-10", "2021-01-01"])
def test_api_version_required(hub, devices, version):
    dev, key, _ = devices.new_sas_device()
    props = sas_connect_props(dev, key, api_version=version)
    expect_connack_failure(hub, dev, props, 0x84, "0100")


def test_host_required_without_sni(hub, devices):
    dev, key, _ = devices.new_sas_device()
    props = sas_connect_props(dev, key, send_host=False)
    expect_connack_failure(hub, dev, props, raw.RC_IMPLEMENTATION_SPECIFIC, "0100")


def test_host_is_case_insensitive_and_must_name_the_hub(hub, devices):
    dev, key, _ = devices.new_sas_device()
    c = connect_device(hub, dev, key, host="LocalHost")
    c.disconnect()
    props = sas_connect_props(dev, key, host="other.example.com")
    expect_connack_failure(hub, dev, props, raw.RC_NOT_AUTHORIZED, "0101")


def test_sas_expiry_required_and_must_be_a_time(hub, devices):
    dev, key, _ = devices.new_sas_device()
    expect_connack_failure(hub, dev, sas_connect_props(dev, key, expiry_ms=False),
                           raw.RC_IMPLEMENTATION_SPECIFIC, "0100")
    expect_connack_failure(hub, dev, sas_connect_props(dev, key, expiry_ms="soon"),
                           raw.RC_IMPLEMENTATION_SPECIFIC, "0100")
    expect_connack_failure(hub, dev, sas_connect_props(dev, key, sas_at="-5"),
                           raw.RC_IMPLEMENTATION_SPECIFIC, "0100")


def test_expired_sas_refused(hub, devices):
    dev, key, _ = devices.new_sas_device()
    props = sas_connect_props(dev, key, expiry_ms=now_ms() - 1000)
    expect_connack_failure(hub, dev, props, raw.RC_NOT_AUTHORIZED, "0101")


def test_unknown_disabled_and_bad_signature_look_the_same(hub, devices):
    dev, key, _ = devices.new_sas_device()
    disabled = devices.create("off-" + os.urandom(4).hex(), status="disabled")
    dkey = disabled["authentication"]["symmetricKey"]["primaryKey"]
    answers = [
        expect_connack_failure(hub, "nobody-" + dev, sas_connect_props("nobody-" + dev, key),
                               raw.RC_NOT_AUTHORIZED, "0101"),
        expect_connack_failure(hub, disabled["deviceId"],
                               sas_connect_props(disabled["deviceId"], dkey),
                               raw.RC_NOT_AUTHORIZED, "0101"),
        expect_connack_failure(hub, dev, sas_connect_props(dev, key, signature=b"\0" * 32),
                               raw.RC_NOT_AUTHORIZED, "0101"),
    ]
    reasons = {user_props(p.properties).get("reason") for p in answers}
    assert len(reasons) == 1, answers


def test_missing_authentication_data(hub, devices):
    dev, _, _ = devices.new_sas_device()
    props = sas_connect_props(dev, None)
    expect_connack_failure(hub, dev, props, raw.RC_NOT_AUTHORIZED, "0101")


@pytest.mark.parametrize("client_id", ["", "a/b/c", "bad id", "dev/"])
def test_client_id_must_name_an_identity(hub, devices, client_id):
    _, key, _ = devices.new_sas_device()
    props = sas_connect_props(client_id, key)
    expect_connack_failure(hub, client_id, props, raw.RC_CLIENT_ID_NOT_VALID, "0100")


def test_x509_method_for_a_sas_device_without_certificate(hub, devices):
    dev, _, _ = devices.new_sas_device()
    props = {"AuthenticationMethod": "X509",
             "UserProperty": [("api-version", "2020-10-01-preview"), ("host", HOST)]}
    expect_connack_failure(hub, dev, props, raw.RC_NOT_AUTHORIZED, "0101")


def test_device_will_refused(closed_hub):
    devs = Devices(closed_hub)
    dev, key, _ = devs.new_sas_device()
    c = raw.RawClient(closed_hub.port, closed_hub.host)
    p = c.connect(client_id=dev, properties=sas_connect_props(dev, key), expect_rc=None,
                  will={"topic": "$iothub/twin/patch/desired", "payload": b"x"})
    assert p.reason_code == raw.RC_IMPLEMENTATION_SPECIFIC, p
    c.close()


# ---- re-authentication and expiry -----------------------------------------------

def test_reauthentication_success_extends_the_token(hub, devices):
    dev, key, _ = devices.new_sas_device()
    c = connect_device(hub, dev, key, expiry_ms=now_ms() + 1500)
    c.auth(raw.RC_REAUTHENTICATE, reauth_props(dev, key, now_ms() + 3600 * 1000))
    p = c.expect(raw.AUTH)
    assert p.reason_code == 0, p
    time.sleep(2.0)  # the first token has expired by now
    c.pingreq()
    assert c.expect(raw.PINGRESP).type == raw.PINGRESP
    c.disconnect()


def test_reauthentication_failure_disconnects(hub, devices):
    dev, key, _ = devices.new_sas_device()
    c = connect_device(hub, dev, key)
    props = reauth_props(dev, key, now_ms() + 3600 * 1000)
    props["AuthenticationData"] = b"\1" * 32
    c.auth(raw.RC_REAUTHENTICATE, props)
    expect_disconnect(c, raw.RC_NOT_AUTHORIZED)


def test_reauthentication_with_expired_token_disconnects(hub, devices):
    dev, key, _ = devices.new_sas_device()
    c = connect_device(hub, dev, key)
    c.auth(raw.RC_REAUTHENTICATE, reauth_props(dev, key, now_ms() - 10))
    expect_disconnect(c, raw.RC_NOT_AUTHORIZED)


def test_sas_expiry_disconnects(hub, devices):
    dev, key, _ = devices.new_sas_device()
    c = connect_device(hub, dev, key, expiry_ms=now_ms() + 1200)
    expect_disconnect(c, raw.RC_NOT_AUTHORIZED, timeout=5.0)


# ---- revocation by the registry, take-over ------------------------------------

def test_disable_disconnects(hub, devices):
    dev, key, d = devices.new_sas_device()
    c = connect_device(hub, dev, key)
    d["status"] = "disabled"
    d.pop("etag", None)
    devices.replace(d)
    expect_disconnect(c, raw.RC_NOT_AUTHORIZED)


def test_delete_disconnects_device_and_modules(hub, devices):
    dev, key, _ = devices.new_sas_device()
    m = devices.create_module(dev, "m")
    c = connect_device(hub, dev, key)
    cm = connect_device(hub, dev + "/m", m["authentication"]["symmetricKey"]["primaryKey"])
    devices.delete(dev)
    expect_disconnect(c, raw.RC_NOT_AUTHORIZED)
    expect_disconnect(cm, raw.RC_NOT_AUTHORIZED)


def test_key_change_disconnects(hub, devices):
    dev, key, d = devices.new_sas_device()
    c = connect_device(hub, dev, key)
    d["authentication"]["symmetricKey"]["primaryKey"] = ""  # a new one is generated
    d.pop("etag", None)
    devices.replace(d)
    expect_disconnect(c, raw.RC_NOT_AUTHORIZED)


def test_unrelated_change_keeps_the_connection(hub, devices):
    dev, key, d = devices.new_sas_device()
    c = connect_device(hub, dev, key)
    d["statusReason"] = "just a note"
    d.pop("etag", None)
    devices.replace(d)
    c.pingreq()
    assert c.expect(raw.PINGRESP).type == raw.PINGRESP
    c.disconnect()


def test_take_over(hub, devices):
    dev, key, _ = devices.new_sas_device()
    first = connect_device(hub, dev, key)
    second = connect_device(hub, dev, key)
    expect_disconnect(first, raw.RC_SESSION_TAKEN_OVER)
    second.pingreq()
    assert second.expect(raw.PINGRESP).type == raw.PINGRESP
    assert devices.svc.get_device(dev).json()["connectionState"] == "Connected"
    second.disconnect()


# ---- X.509 over TLS -------------------------------------------------------------

def make_cert(workdir, name, cn):
    key = os.path.join(workdir, name + ".key")
    crt = os.path.join(workdir, name + ".crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "2", "-subj", "/CN=%s" % cn],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    der = subprocess.run(["openssl", "x509", "-in", crt, "-outform", "DER"], check=True,
                         stdout=subprocess.PIPE, timeout=20).stdout
    return crt, key, der


@pytest.fixture
def tls_hub():
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available")
    d = tempfile.TemporaryDirectory(prefix="iothubd-e2e-")
    crt, key, _ = make_cert(d.name, "server", "localhost")
    b = Broker(d.name, http=True)
    b.tls_port = b.port
    b.cmd += ["--mqtts", "127.0.0.1:%d" % b.tls_port, "--cert", crt, "--key", key, "--ca", crt]
    b.cmd[b.cmd.index("--mqtt") + 1] = "127.0.0.1:%d" % free_port()
    b.start()
    yield b
    problems = b.stop()
    d.cleanup()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def tls_client(port, certfile=None, keyfile=None, server_hostname="localhost"):
    c = raw.RawClient(port)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if certfile:
        ctx.load_cert_chain(certfile, keyfile)
    c.sock = ctx.wrap_socket(c.sock, server_hostname=server_hostname)
    return c


def x509_props(send_host=False):
    users = [("api-version", "2020-10-01-preview")]
    if send_host:
        users.append(("host", HOST))
    return {"AuthenticationMethod": "X509", "UserProperty": users}


def test_x509_self_signed_thumbprint(tls_hub):
    import hashlib
    work = tempfile.mkdtemp(prefix="iothubd-x509-")
    try:
        dev = "x509-" + os.urandom(4).hex()
        crt, key, der = make_cert(work, "dev", dev)
        other_crt, other_key, _ = make_cert(work, "other", dev)
        devs = Devices(tls_hub)
        devs.create(dev, auth={"type": "selfSigned", "x509Thumbprint": {
            "primaryThumbprint": hashlib.sha1(der).hexdigest().upper(),
            "secondaryThumbprint": None}})
        # SNI stands in for the host property
        c = tls_client(tls_hub.tls_port, crt, key)
        p = c.connect(client_id=dev, properties=x509_props(), expect_rc=None)
        assert p.type == raw.CONNACK and p.reason_code == 0, p
        assert p.properties["AuthenticationMethod"] == "X509"
        c.disconnect()
        # the same subject with another key: not registered
        c = tls_client(tls_hub.tls_port, other_crt, other_key)
        p = c.connect(client_id=dev, properties=x509_props(), expect_rc=None)
        assert p.reason_code == raw.RC_NOT_AUTHORIZED, p
        assert user_props(p.properties)["status"] == "0101"
        c.close()
        # no client certificate at all
        c = tls_client(tls_hub.tls_port)
        p = c.connect(client_id=dev, properties=x509_props(send_host=True), expect_rc=None)
        assert p.reason_code == raw.RC_NOT_AUTHORIZED, p
        c.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_sas_over_tls_uses_sni_as_host(tls_hub):
    devs = Devices(tls_hub)
    dev, key, _ = devs.new_sas_device()
    c = tls_client(tls_hub.tls_port)
    p = c.connect(client_id=dev, properties=sas_connect_props(dev, key, send_host=False),
                  expect_rc=None)
    assert p.reason_code == 0, p
    c.disconnect()


# ---- the service API over HTTPS (same TLS configuration as MQTT) ----------------

def test_service_api_over_https(tmp_path):
    """--https serves the service API with the --cert/--key MQTT uses; the
    certificate verifies against itself and a SAS-authenticated call works."""
    import http.client
    from service_client import parse_connstr, sas_token
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available")
    crt, key, _ = make_cert(str(tmp_path), "server", "localhost")
    b = Broker(str(tmp_path), http=True)
    https_port = free_port()
    b.cmd += ["--https", "127.0.0.1:%d" % https_port, "--cert", crt, "--key", key]
    b.start()
    try:
        # start() waits for the MQTT and HTTP ports only; the listeners open
        # in turn, so wait for the HTTPS one too
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", https_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "HTTPS listener never opened"
                time.sleep(0.02)
        cs = parse_connstr(b.owner_connstr)
        ctx = ssl.create_default_context(cafile=crt)
        ctx.check_hostname = False  # the test certificate has a CN, no SAN
        conn = http.client.HTTPSConnection("127.0.0.1", https_port, context=ctx, timeout=10)
        token = sas_token(cs["HostName"], cs["SharedAccessKey"], cs["SharedAccessKeyName"])
        conn.request("GET", "/statistics/devices?api-version=2021-04-12",
                     headers={"Authorization": token})
        r = conn.getresponse()
        assert r.status == 200 and b"totalDeviceCount" in r.read()
        conn.request("GET", "/devices?api-version=2021-04-12")
        assert conn.getresponse().status == 401  # same keep-alive TLS connection
        conn.close()
    finally:
        problems = b.stop()
    assert not problems, problems

"""Tests of the load generator's ceiling responder (iothub-bench responder):
the plain MQTT acknowledger the telemetry, connect and idle rows compare
with, the router (--route) the fan-out row compares with, and the
hub-shaped one (--http-port) that the twin, methods and c2d rows compare
with: the generator's own scenarios run against it without
errors, twin requests, method calls and commands reach who they should
with what they should, and what it does not serve gets 404."""
import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
import mqtt5raw as raw  # noqa: E402  (the e2e suite's raw MQTT 5 client)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BENCH = os.environ.get("BENCH_BIN", os.path.join(ROOT, "build", "iothub-bench"))
CONNSTR = "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=AAAA"

pytestmark = pytest.mark.skipif(not os.path.exists(BENCH), reason="build/iothub-bench not built")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@contextlib.contextmanager
def running_responder(mqtt_port, *flags, wait_for=()):
    """iothub-bench responder on mqtt_port with flags, stopped and checked
    afterwards: under a sanitizer build a leak or an error at shutdown
    shows in its exit status and stderr."""
    proc = subprocess.Popen([BENCH, "responder", "--port", str(mqtt_port), *flags,
                             "--threads", "2", "--duration", "120"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for port in (mqtt_port, *wait_for):
            wait_port(port)
        yield
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode(errors="replace")
    assert b"ERROR" not in err, err.decode(errors="replace")


@pytest.fixture
def responder():
    """A hub-shaped responder: (mqtt_port, http_port)."""
    mqtt, http = free_port(), free_port()
    with running_responder(mqtt, "--http-port", str(http), wait_for=(http,)):
        yield mqtt, http


def run_bench(tmp_path, args):
    out = tmp_path / "run.json"
    subprocess.run([BENCH, *args, "--threads", "2", "--duration", "1", "--json", str(out)],
                   check=True, capture_output=True, timeout=120)
    return json.loads(out.read_text())


@pytest.mark.parametrize("scenario,extra", [
    ("twin", ["--window", "2"]),
    ("methods", ["--http-connections", "4"]),
    ("c2d", ["--http-connections", "4"]),
    ("methods", ["--http-connections", "4", "--rate", "500"]),
])
def test_hub_scenarios_run_clean_against_the_hub_shaped_responder(responder, tmp_path, scenario,
                                                                  extra):
    mqtt, http = responder
    r = run_bench(tmp_path, [scenario, "--clients", "20", "--port", str(mqtt),
                             "--hub", f"http://127.0.0.1:{http}", "--connstr", CONNSTR, *extra])
    assert r["clients_failed"] == 0 and r["clients_ready"] == 20
    assert r["errors"] == {}
    assert r["throughput_per_s"] > 0 and r["acked"] > 0
    if scenario == "methods":  # a call is answered only after its device replied
        assert r["delivered"] >= r["acked"]
    if scenario == "c2d":  # 201 goes at once: the last commands may still be on their way
        assert r["delivered"] > 0


def http_exchange(port, request):
    """Sends one request on a fresh connection; returns (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            assert chunk, "connection closed before a response"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")][0])
        while len(body) < length:
            body += s.recv(4096)
        return int(head.split(b" ")[1]), body


def post(path, body=b"{}"):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


def test_service_routes(responder):
    _, http = responder
    put = b"PUT /devices/d1?api-version=2021-04-12 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
    assert http_exchange(http, put) == (200, b"{}")
    # no device d1 is connected: a call and a command both find nobody
    call = post(b"/twins/d1/methods?api-version=2021-04-12", b'{"methodName":"m"}')
    assert http_exchange(http, call)[0] == 404
    assert http_exchange(http, post(b"/devices/d1/messages/deviceBound", b"x"))[0] == 404
    assert http_exchange(http, post(b"/nowhere"))[0] == 404


def test_two_requests_in_one_segment_are_answered_in_order(responder):
    _, http = responder
    put = b"PUT /devices/a HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", http), timeout=10) as s:
        s.sendall(put + post(b"/nowhere"))
        data = b""
        while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b"}"):
            chunk = s.recv(4096)
            assert chunk
            data += chunk
    assert data.index(b"HTTP/1.1 200") < data.index(b"HTTP/1.1 404")


def device(port, client_id):
    c = raw.RawClient(port)
    assert c.connect(client_id=client_id).reason_code == 0
    return c


def test_twin_requests_are_answered_with_their_correlation_data(responder):
    mqtt, _ = responder
    with device(mqtt, "twin-dev") as d:
        d.publish("$iothub/twin/get", properties={"CorrelationData": b"g1"})
        get = d.expect(raw.PUBLISH)
        d.publish("$iothub/twin/patch/reported", b'{"a":1}',
                  properties={"CorrelationData": b"p1"})
        patch = d.expect(raw.PUBLISH)
    assert (get.topic, get.properties["CorrelationData"]) == ("$iothub/responses", b"g1")
    assert json.loads(get.payload)["desired"]["$version"] == 1
    assert (patch.topic, patch.properties["CorrelationData"], patch.payload) == \
        ("$iothub/responses", b"p1", b"")


def test_a_method_call_goes_to_its_device_and_the_reply_comes_back(responder):
    mqtt, http = responder
    big = json.dumps({"blob": "x" * 4000}).encode()  # more than any fixed buffer
    with device(mqtt, "m-dev") as d, \
            socket.create_connection(("127.0.0.1", http), timeout=10) as caller:
        caller.sendall(post(b"/twins/m-dev/methods?api-version=2021-04-12",
                            b'{"methodName":"reboot","payload":null}'))
        call = d.expect(raw.PUBLISH)
        assert call.topic == "$iothub/methods/reboot"
        d.publish("$iothub/responses", big, properties={
            "CorrelationData": call.properties["CorrelationData"],
            "UserProperty": [("response-code", "201")]})
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < len(big) + 20:
            chunk = caller.recv(65536)
            assert chunk
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body) == {"status": 201, "payload": json.loads(big)}


def test_a_command_goes_to_its_device_as_qos1(responder):
    mqtt, http = responder
    with device(mqtt, "c-dev") as d:
        assert http_exchange(http, post(b"/devices/c-dev/messages/deviceBound", b"hello"))[0] == 201
        cmd = d.expect(raw.PUBLISH)
        assert (cmd.topic, cmd.qos, cmd.payload) == ("$iothub/commands", 1, b"hello")
        d.puback(cmd.packet_id)
    # gone: the next command finds nobody
    deadline = time.monotonic() + 10
    while http_exchange(http, post(b"/devices/c-dev/messages/deviceBound", b"x"))[0] != 404:
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.fixture
def router():
    """The responder with --route: its MQTT port."""
    port = free_port()
    with running_responder(port, "--route"):
        yield port


def test_fanout_runs_clean_against_the_router(router, tmp_path):
    r = run_bench(tmp_path, ["fanout", "--subscribers", "10", "--qos", "0", "--payload", "64",
                             "--window", "100", "--port", str(router)])
    assert r["errors"] == {}
    assert r["delivered"] > 0 and r["throughput_per_s"] > 0


def test_the_router_forwards_to_matching_filters_only(router):
    with raw.RawClient(router) as wide, raw.RawClient(router) as narrow, \
            raw.RawClient(router) as pub:
        for c in (wide, narrow, pub):
            assert c.connect().reason_code == 0  # empty client ids are fine here
        wide.subscribe("a/+")  # waits for the SUBACK
        narrow.subscribe("a/x")
        pub.publish("a/y", b"1")
        pub.publish("b/y", b"2")
        pub.publish("a/x", b"3", qos=1)
        assert pub.expect(raw.PUBACK).reason_code == 0
        got = wide.expect(raw.PUBLISH), wide.expect(raw.PUBLISH)
        assert [(p.topic, p.payload, p.qos) for p in got] == [("a/y", b"1", 0), ("a/x", b"3", 0)]
        only = narrow.expect(raw.PUBLISH)
        assert (only.topic, only.payload) == ("a/x", b"3")
        assert narrow.recv_all(timeout=0.3) == []
        wide.close()  # a subscriber gone: the next publish still reaches the others
        pub.publish("a/x", b"4")
        assert narrow.expect(raw.PUBLISH).payload == b"4"


def test_plain_responder_acknowledges_telemetry(tmp_path):
    port = free_port()
    with running_responder(port):
        r = run_bench(tmp_path, ["telemetry", "--clients", "10", "--qos", "1", "--port", str(port)])
    assert r["errors"] == {} and r["acked"] > 0

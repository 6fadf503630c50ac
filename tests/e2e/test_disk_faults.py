"""Disk faults (issue 7): a full data directory and a read-only or failing
one give clear errors and no corruption, and the hub recovers by itself
when the disk works again (iothubd only).

The data directory is a small tmpfs mounted for the test, so these tests
need root and `mount -t tmpfs`; they skip with the reason otherwise.

What is checked (../shared/spec/iothub-mqtt5.md §4, service-rest.md):
  - full disk (a filler file takes the space): telemetry gets PUBACK 131 with
    `status 0603` (Server Busy: retry later), a reported patch the response
    status 0603, service writes (twin PATCH, device PUT, command send) 503
    with the error body `ErrorCode:ServerBusy;...`; reads still work;
    nothing accepted before is lost and nothing refused is stored; after
    the filler is deleted the same connections are served again, no restart;
  - an I/O error while running (the process's file-size limit lowered with
    prlimit: writes fail with EFBIG, as a failing device would): telemetry
    131/0601, HTTP 500 ServerError; recovered when the limit is raised.
    (A tmpfs cannot be remounted read-only while a process holds files open
    for writing — Linux answers EBUSY — so this is the way to make the
    running server's writes fail; the test checks that the remount is refused
    first, and uses the read-only remount for the start-up case.)
  - starting on a read-only or a full data directory, or on one another
    iothubd is using: a one-line error that names the cause and a non-zero
    exit status, never a crash or a hang (and the running one is
    undisturbed);
  - after each scenario the server stops cleanly and `PRAGMA
    integrity_check` on the database says ok.
"""

import errno
import json
import os
import subprocess
import tempfile
import time

import pytest

import mqtt5raw as raw
from conftest import IOTHUBD_BIN, free_port
from e2e_util import TARGET
from hub_device import Devices, connect_device, response_for, user_props
from service_client import ServiceClient

pytestmark = pytest.mark.skipif(TARGET != "iothubd", reason="iothubd only")

DB_NAME = "iothubd.db"  # src/store/open.c open_db


@pytest.fixture
def tmpfs():
    """mount(size) -> a fresh tmpfs directory; unmounted at the end (lazily:
    the fixture that stops the server may run after this one)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mounts = []

    def mount(size="6m"):
        d = tempfile.mkdtemp(prefix="iothubd-disk-")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "tmpfs", d],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            os.rmdir(d)
            pytest.skip("mount -t tmpfs failed: %s" % r.stderr.strip())
        mounts.append(d)
        return d

    yield mount
    for d in mounts:
        subprocess.run(["mount", "-o", "remount,rw", d], capture_output=True, timeout=10)
        subprocess.run(["umount", "-l", d], capture_output=True, timeout=10)
        os.rmdir(d)


def fill(path):
    """Writes a filler file in `path` until the disk is full; returns its name."""
    name = os.path.join(path, "filler")
    chunk = b"\0" * 65536
    with open(name, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as e:
                assert e.errno in (errno.ENOSPC, errno.EFBIG), e
                if len(chunk) == 1:
                    break
                chunk = chunk[:len(chunk) // 2]
    return name


def integrity_ok(data):
    out = subprocess.run(["sqlite3", os.path.join(data, DB_NAME), "PRAGMA integrity_check;"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "ok", (out.stdout, out.stderr)


def send(c, body):
    """One telemetry message at QoS 1 -> its PUBACK."""
    pid = c.publish("$iothub/telemetry", body, qos=1)
    ack = c.expect(raw.PUBACK, timeout=10)
    assert ack.packet_id == pid, ack
    return ack


def report(c, patch, corr):
    c.publish("$iothub/twin/patch/reported", json.dumps(patch), properties={"CorrelationData": corr})
    return user_props(response_for(c, corr, timeout=10).properties)


def events_of(svc, device_id):
    """Bodies of every stored event of one device."""
    bodies = []
    for p in svc.request("GET", "/events/partitions").json()["partitions"]:
        nxt = 0
        while True:
            page = svc.request("GET", "/events?partition=%d&from=%d&max=1000"
                               % (p["partition"], nxt)).json()
            bodies += [e["body"] for e in page["events"]
                       if e["systemProperties"]["iothub-connection-device-id"] == device_id]
            if not page["events"]:
                break
            nxt = page["nextSequenceNumber"]
    return bodies


def setup_device(hub):
    devs = Devices(hub)
    dev, key, _ = devs.new_sas_device("disk")
    c = connect_device(hub, dev, key)
    return devs.svc, dev, c


def until_refused(c, prefix, limit=3000):
    """Sends telemetry until the hub refuses one; returns (acked bodies,
    the refusing PUBACK, its body)."""
    acked = []
    pad = "x" * 4000  # fills the WAL in a few hundred messages
    for i in range(limit):
        body = "%s-%d-%s" % (prefix, i, pad)
        ack = send(c, body.encode())
        if ack.reason_code != 0:
            return acked, ack, body
        acked.append(body)
    raise AssertionError("%d messages accepted on a full disk" % limit)


def assert_error_body(r, status, code):
    assert r.status == status, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    assert r.error_code == code, r


def test_full_disk_answers_busy_and_recovers(tmpfs, broker_factory):
    data = tmpfs("6m")
    hub = broker_factory(http=True, data_dir=data)
    svc, dev, c = setup_device(hub)
    up = report(c, {"before": 1}, b"r0")
    assert "status" not in up, up
    version = int(up["version"])
    assert svc.request("PATCH", "/twins/" + dev, {"properties": {"desired": {"d": 1}}}).status == 200
    before = [b"early-%d" % i for i in range(20)]
    for b in before:
        assert send(c, b).reason_code == 0
    filler = fill(data)

    acked, ack, refused = until_refused(c, "full")
    assert ack.reason_code == 0x83 and user_props(ack.properties).get("status") == "0603", ack
    # the twin and service writes are refused the same way, reads work
    up = report(c, {"during": 1}, b"r1")
    assert up.get("status") == "0603", up
    r = svc.request("PATCH", "/twins/" + dev, {"properties": {"desired": {"d": 2}}})
    assert_error_body(r, 503, "ServerBusy")
    assert_error_body(svc.put_device("disk-new"), 503, "ServerBusy")
    r = svc.request("POST", "/devices/%s/messages/deviceBound" % dev, b"cmd")
    assert_error_body(r, 503, "ServerBusy")
    twin = svc.request("GET", "/twins/" + dev)
    assert twin.status == 200, twin
    props = twin.json()["properties"]
    assert props["reported"]["$version"] == version and "during" not in props["reported"], props
    assert props["desired"]["d"] == 1, props
    assert svc.get_device("disk-new").status == 404
    assert hub.alive()

    # space returns: the same connection and client are served again
    os.unlink(filler)
    deadline = time.monotonic() + 10
    while True:
        ack = send(c, b"after-0")
        if ack.reason_code == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert ack.reason_code == 0, ack
    up = report(c, {"after": 1}, b"r2")
    assert "status" not in up and int(up["version"]) == version + 1, up
    assert svc.put_device("disk-new").status == 201
    r = svc.request("PATCH", "/twins/" + dev, {"properties": {"desired": {"d": 3}}})
    assert r.status == 200 and r.json()["properties"]["desired"]["d"] == 3, r

    # every accepted message is there once, the refused one is not
    stored = events_of(svc, dev)
    expected = [b.decode() for b in before] + acked + ["after-0"]
    assert sorted(stored) == sorted(expected), (len(stored), len(expected))
    assert refused not in stored
    c.close()
    assert not hub.stop()
    integrity_ok(data)


def test_io_error_while_running_answers_server_error_and_recovers(tmpfs, broker_factory):
    data = tmpfs("16m")
    hub = broker_factory(http=True, data_dir=data)
    svc, dev, c = setup_device(hub)
    assert send(c, b"ok-0").reason_code == 0
    # what the brief asked first: a read-only remount under the running server
    ro = subprocess.run(["mount", "-o", "remount,ro", data], capture_output=True, text=True,
                        timeout=10)
    assert ro.returncode != 0, "remounted read-only under an open database: update this test"
    pid = hub.proc.pid
    subprocess.run(["prlimit", "--pid", str(pid), "--fsize=1:"], check=True, timeout=10)
    try:
        acked, ack, refused = until_refused(c, "io")
        assert ack.reason_code == 0x83 and user_props(ack.properties).get("status") == "0601", ack
        assert_error_body(svc.put_device("io-new"), 500, "ServerError")
        assert hub.alive()
    finally:
        subprocess.run(["prlimit", "--pid", str(pid), "--fsize=unlimited:"], check=True, timeout=10)
    deadline = time.monotonic() + 10
    while True:
        ack = send(c, b"after-io")
        if ack.reason_code == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert ack.reason_code == 0, ack
    assert svc.put_device("io-new").status == 201
    stored = events_of(svc, dev)
    assert sorted(stored) == sorted(["ok-0"] + acked + ["after-io"]), (len(stored), len(acked))
    c.close()
    assert not hub.stop()
    integrity_ok(data)


def start_fails(data, why_words):
    """iothubd on `data` must exit with a start-up failure status (not a
    signal) and one clear line naming the cause."""
    cmd = [IOTHUBD_BIN, "--mqtt", "127.0.0.1:%d" % free_port(), "--http",
           "127.0.0.1:%d" % free_port(), "--data", data]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert r.returncode > 0, (r.returncode, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert any(w in r.stderr.lower() for w in why_words), r.stderr
    for marker in ("AddressSanitizer", "runtime error:"):
        assert marker not in r.stderr, r.stderr
    return r.stderr


def test_start_on_a_read_only_data_dir_fails_clearly(tmpfs, broker_factory):
    data = tmpfs("6m")
    hub = broker_factory(http=True, data_dir=data)
    svc, dev, c = setup_device(hub)
    assert send(c, b"kept").reason_code == 0
    c.close()
    assert not hub.stop()
    subprocess.run(["mount", "-o", "remount,ro", data], check=True, timeout=10)
    start_fails(data, ("read-only", "readonly"))
    subprocess.run(["mount", "-o", "remount,rw", data], check=True, timeout=10)
    hub.start()
    assert events_of(ServiceClient(hub), dev) == ["kept"]
    assert not hub.stop()
    integrity_ok(data)


def test_start_on_a_data_dir_in_use_fails_clearly(broker_factory):
    data = tempfile.mkdtemp(prefix="iothubd-inuse-")
    hub = broker_factory(http=True, data_dir=data)
    svc, dev, c = setup_device(hub)
    start_fails(data, ("in use by another iothubd",))
    assert send(c, b"still served").reason_code == 0
    assert events_of(svc, dev) == ["still served"]
    c.close()
    assert not hub.stop()
    integrity_ok(data)


def test_start_on_a_full_disk_fails_clearly(tmpfs):
    data = tmpfs("4m")
    fill(data)
    start_fails(data, ("full", "no space"))


def test_restart_on_a_full_disk_serves_reads_and_refuses_writes(tmpfs, broker_factory):
    """A hub whose disk filled up while it was down starts (its data is
    readable) and answers writes with 503 / 0603 until space returns."""
    data = tmpfs("6m")
    hub = broker_factory(http=True, data_dir=data)
    svc, dev, c = setup_device(hub)
    assert send(c, b"kept").reason_code == 0
    c.close()
    assert not hub.stop()
    filler = fill(data)
    hub.start()
    svc = ServiceClient(hub)
    assert svc.get_device(dev).status == 200
    assert events_of(svc, dev) == ["kept"]
    assert_error_body(svc.put_device("full-new"), 503, "ServerBusy")
    os.unlink(filler)
    assert svc.put_device("full-new").status == 201
    assert not hub.stop()
    integrity_ok(data)

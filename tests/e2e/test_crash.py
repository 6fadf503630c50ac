"""Crash safety of the store (issue: durable embedded store): while devices
are created and deleted at a steady rate, iothubd is killed with SIGKILL
several times and restarted on the same data directory. Every creation or
deletion that was answered with success must be there after the restart,
and SQLite's integrity check must pass."""

import glob
import os
import random
import signal
import subprocess
import threading
import time

import pytest

from service_client import ServiceClient

KILLS = 4
RUN_SECONDS = 1.5  # of traffic between kills


def writer(hub, stop, acked, lock, prefix):
    """Creates and deletes devices; records the last acknowledged state."""
    c = ServiceClient(hub)
    rng = random.Random(prefix)
    n = 0
    while not stop.is_set():
        deleting = n and rng.random() < 0.3
        dev = "%s-%d" % (prefix, rng.randrange(n) if deleting else n)
        n += not deleting
        try:
            if deleting:
                ok = c.delete_device(dev).status in (204, 404)
            else:
                ok = c.put_device(dev).status in (200, 201)
        except OSError:
            # killed mid-request: the outcome is unknown, so nothing about
            # this device can be asserted any more
            with lock:
                acked[dev] = None
            return
        if ok:
            with lock:
                acked[dev] = not deleting


def integrity_ok(data_dir):
    dbs = [p for p in glob.glob(os.path.join(data_dir, "*.db")) + glob.glob(os.path.join(data_dir, "*.sqlite*"))
           if not p.endswith(("-wal", "-shm"))]
    assert dbs, "no database file in %s: %s" % (data_dir, os.listdir(data_dir))
    for db in dbs:
        out = subprocess.run(["sqlite3", db, "PRAGMA integrity_check;"], capture_output=True, text=True,
                             timeout=30)
        assert out.stdout.strip() == "ok", (db, out.stdout, out.stderr)


def test_sigkill_during_registry_writes_loses_nothing_acknowledged(broker_factory, tmp_path):
    data = str(tmp_path / "data")
    acked = {}
    lock = threading.Lock()
    for round_no in range(KILLS):
        hub = broker_factory(http=True, data_dir=data)
        stop = threading.Event()
        threads = [threading.Thread(target=writer, args=(hub, stop, acked, lock, "r%d-w%d" % (round_no, i)))
                   for i in range(3)]
        for t in threads:
            t.start()
        time.sleep(RUN_SECONDS)
        hub.proc.send_signal(signal.SIGKILL)
        hub.proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=15)
        hub.proc = None  # killed on purpose: nothing for the fixture to check
        hub._err.close()
        hub._out.close()
        integrity_ok(data)

    hub = broker_factory(http=True, data_dir=data)
    c = ServiceClient(hub)
    with lock:
        expected = dict(acked)
    assert sum(1 for v in expected.values() if v) > 20, "too little traffic to mean anything: %d" % len(expected)
    present = {d["deviceId"] for d in c.request("GET", "/devices?top=1000").json()}
    # the list is capped at 1000: look up the others one by one
    present |= {d for d in expected if d not in present and c.get_device(d).status == 200}
    missing = [d for d, alive in expected.items() if alive is True and d not in present]
    resurrected = [d for d, alive in expected.items() if alive is False and d in present]
    assert not missing, "acknowledged creations lost: %s" % missing[:10]
    assert not resurrected, "acknowledged deletions undone: %s" % resurrected[:10]

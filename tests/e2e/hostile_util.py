"""Helpers shared by the hostile-input catalogue (test_hostile_mqtt.py,
test_hostile_http.py): the server's memory as the kernel sees it, a
module-scoped broker, and a "witness" client that must keep being served
while the hostile cases run.

Memory is read as VmRSS from /proc/<pid>/status. RSS only says how much the
process touches, not how much it could be made to touch, so each resource
test compares the growth against what the traffic would cost if the server
buffered it (a bounded server stays far below; an unbounded one reaches it).
Under AddressSanitizer freed blocks sit in a quarantine before reuse, which
would show as growth; brokers started here get a 16 MiB quarantine and the
bounds a fixed allowance for it (ASAN_SLACK_KIB).
"""

import os
import tempfile

import pytest

import mqtt5raw as raw
from conftest import IOTHUBD_BIN, Broker
from e2e_util import IS_MOSQUITTO, raw_connect, raw_publish_qos, utopic


def _binary_has_asan():
    try:
        with open(IOTHUBD_BIN, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


IS_ASAN = _binary_has_asan()
ASAN_SLACK_KIB = 48 * 1024 if IS_ASAN else 0


def asan_env():
    """ASAN_OPTIONS for a broker started by these tests: the suite's default
    plus a small quarantine (see the module comment)."""
    base = os.environ.get("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
    return base + ":quarantine_size_mb=16"


def rss_kib(broker):
    """The broker's resident set size in KiB."""
    with open("/proc/%d/status" % broker.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % broker.proc.pid)


def assert_grew_at_most(broker, before_kib, bound_kib, what):
    """RSS growth since `before_kib` is below `bound_kib` (+ the ASan slack)."""
    now = rss_kib(broker)
    limit = bound_kib + ASAN_SLACK_KIB
    print("rss %s: +%d KiB (bound %d KiB)" % (what, now - before_kib, limit))  # shown with -s
    assert now - before_kib <= limit, "%s: RSS grew %d KiB (from %d to %d), bound %d KiB" % (
        what, now - before_kib, before_kib, now, limit)
    return now


def start_module_broker(**opts):
    """A broker for a whole module (the function-scoped fixtures would start
    one per case). Returns (broker, tmpdir); stop with stop_module_broker."""
    d = tempfile.TemporaryDirectory(prefix="iothubd-hostile-")
    old = os.environ.get("ASAN_OPTIONS")
    os.environ["ASAN_OPTIONS"] = asan_env()
    try:
        b = Broker(d.name, **opts)
        b.start()
    finally:
        if old is None:
            del os.environ["ASAN_OPTIONS"]
        else:
            os.environ["ASAN_OPTIONS"] = old
    return b, d


def stop_module_broker(b, d):
    problems = b.stop()
    d.cleanup()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


class Witness:
    """A subscriber and a publisher connected before the hostile cases; check()
    proves the broker still routes a QoS 1 message between them."""

    def __init__(self, broker):
        self.topic = utopic("witness")
        self.sub = raw_connect(broker, keepalive=0)
        assert self.sub.subscribe(self.topic, qos=1).reason_codes == [1]
        self.pub = raw_connect(broker, keepalive=0)
        self.n = 0

    def check(self, timeout=5.0):
        self.n += 1
        payload = b"witness-%d" % self.n
        raw_publish_qos(self.pub, self.topic, payload, 1)
        p = self.sub.expect(raw.PUBLISH, timeout=timeout, stash=True)
        assert p.payload == payload, p
        self.sub.puback(p.packet_id)

    def close(self):
        self.sub.close()
        self.pub.close()


iothubd_only = pytest.mark.skipif(IS_MOSQUITTO, reason="iothubd limits and memory")

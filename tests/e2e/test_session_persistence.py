"""Persistent MQTT sessions survive a restart of iothubd (issue: everything
the hub knows survives a restart and a crash): subscriptions and the QoS 1/2
messages held for a session with a non-zero expiry are in the store, so a
client that comes back after the restart finds Session Present = 1, its
subscriptions routing, the messages queued while it was away, and the one
it had not acknowledged resent with DUP and the same packet id."""

import signal
import time

import pytest

import mqtt5raw as raw
from e2e_util import IS_MOSQUITTO, collect_publishes, raw_connect, raw_publish_qos, uid, utopic

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="iothubd's store")

PERSIST = {"SessionExpiryInterval": 600}


def restart(broker_factory, old, data, kill=False):
    if kill:
        time.sleep(0.3)  # write-behind: let the store commit what was queued
        old.proc.send_signal(signal.SIGKILL)
        old.proc.wait(timeout=10)
        old.proc = None
        old._err.close()
        old._out.close()
    else:
        problems = old.stop()
        assert not problems, problems
    return broker_factory(data_dir=data)


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_session_and_queued_messages_survive_restart(broker_factory, tmp_path, kill):
    data = str(tmp_path / "data")
    b = broker_factory(data_dir=data)
    sub_id, topic = uid("persist"), utopic("persist")
    s = raw_connect(b, client_id=sub_id, clean_start=True, properties=PERSIST)
    assert s.subscribe(topic + "/#", qos=1).reason_codes == [1]
    assert s.subscribe(topic + "/two", qos=2).reason_codes == [2]
    pub = raw_connect(b)
    raw_publish_qos(pub, topic + "/x", b"while-online", 1)
    first = s.expect(raw.PUBLISH)  # received, deliberately not acknowledged
    assert first.payload == b"while-online"
    s.close()
    for i in range(3):
        raw_publish_qos(pub, topic + "/q", b"queued-%d" % i, 1)
    raw_publish_qos(pub, topic + "/two", b"qos2", 2)

    b = restart(broker_factory, b, data, kill=kill)
    c = raw_connect(b, client_id=sub_id, clean_start=False, properties=PERSIST)
    assert c.connack.session_present
    got = collect_publishes(c, 1.0)
    again = [p for p in got if p.payload == b"while-online"]
    assert len(again) == 1 and again[0].dup and again[0].packet_id == first.packet_id
    payloads = sorted(p.payload for p in got if p.payload != b"while-online")
    assert payloads == sorted([b"queued-0", b"queued-1", b"queued-2", b"qos2", b"qos2"])
    # the restored subscriptions still route
    pub = raw_connect(b)
    raw_publish_qos(pub, topic + "/after", b"after-restart", 1)
    assert [p.payload for p in collect_publishes(c, 0.7)] == [b"after-restart"]


def test_clean_start_and_expiry_zero_sessions_are_not_kept(broker_factory, tmp_path):
    data = str(tmp_path / "data")
    b = broker_factory(data_dir=data)
    gone, topic = uid("gone"), utopic("gone")
    c = raw_connect(b, client_id=gone, properties={"SessionExpiryInterval": 0})
    c.subscribe(topic, qos=1)
    c.close()
    kept = uid("kept")
    k = raw_connect(b, client_id=kept, properties=PERSIST)
    k.subscribe(topic, qos=1)
    k.close()
    k = raw_connect(b, client_id=kept, clean_start=True, properties={"SessionExpiryInterval": 0})
    k.disconnect()
    b = restart(broker_factory, b, data)
    for cid in (gone, kept):
        c = raw_connect(b, client_id=cid, clean_start=False, properties=PERSIST)
        assert not c.connack.session_present, cid


def test_mqtt311_persistent_session_survives_restart(broker_factory, tmp_path):
    data = str(tmp_path / "data")
    b = broker_factory(data_dir=data)
    cid, topic = uid("v311"), utopic("v311")
    c = raw_connect(b, client_id=cid, version=raw.MQTT311, clean_start=False)
    c.subscribe(topic, qos=1)
    c.close()
    pub = raw_connect(b)
    raw_publish_qos(pub, topic, b"for-311", 1)
    b = restart(broker_factory, b, data)
    c = raw_connect(b, client_id=cid, version=raw.MQTT311, clean_start=False)
    assert c.connack.session_present
    assert [p.payload for p in collect_publishes(c, 1.0)] == [b"for-311"]

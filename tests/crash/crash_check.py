"""The crash-consistency checker: compares what a restarted hub holds with
the Journal of what the previous processes acknowledged (crash_load.py).
It runs right after each restart, before any load reaches the new process,
so the hub shows exactly what it recovered from disk.

Each check_* returns (problems, checks): human-readable violations, and how
many individual facts were checked (reported in the run's figures).

Rules (the issue's, made exact):
  telemetry  every acked id is in the events endpoint; an id written to
             the socket once is there at most once; no id is there more
             often than it was written. iothubd does not de-duplicate
             telemetry across connections (QoS 1 is at-least-once and the
             packet id only lives as long as the connection), so a message
             resent because its PUBACK was lost in a kill may be stored once
             per attempt: at least once if acked, at most `attempts` times.
             The driver counts attempts, so a message the hub stored twice
             from ONE send still fails.
  twins      per device and per side (reported / desired): $version >=
             1 + the number of acked patches (each accepted change adds one),
             <= 1 + the number sent; the value is the last acked one or a
             later sent one; if it is the last acked one, $version is the
             acked $version; versions never go backwards across restarts.
  commands   per device, the queue length (cloudToDeviceMessageCount) lies
             between "accepted minus every settled one" (none lost) and
             "accepted + unanswered sends minus the settlements that were
             durable" (none resurrected). A completion or rejection is
             written behind (hub/c2d.c): it counts as durable when it was
             sent at least WRITE_BEHIND_S before the kill. No command is
             delivered again after the device completed or rejected it
             (same process: never; a later process: only within the
             write-behind window).
  registry   every acked create/update is there with its status, every
             acked delete is absent.
"""

import json
import os
import shutil
import sqlite3
import tempfile
import urllib.parse

from service_client import ServiceClient

WRITE_BEHIND_S = 0.5
DB_NAME = "iothubd.db"  # src/store/open.c open_db


def read_all_events(svc):
    """Every event's body in every partition."""
    bodies = []
    r = svc.request("GET", "/events/partitions")
    assert r.status == 200, r
    for p in r.json()["partitions"]:
        nxt = 0
        while True:
            r = svc.request("GET", "/events?partition=%d&from=%d&max=1000" % (p["partition"], nxt))
            assert r.status == 200, r
            page = r.json()
            if not page["events"]:
                break
            bodies += [e["body"] for e in page["events"]]
            nxt = page["nextSequenceNumber"]
    return bodies


def check_telemetry(svc, j):
    counts = {}
    problems = []
    for body in read_all_events(svc):
        try:
            mid = json.loads(body)["id"]
        except (ValueError, KeyError, TypeError):
            problems.append("telemetry: an event nobody sent: %r" % body[:80])
            continue
        counts[mid] = counts.get(mid, 0) + 1
    with j.lock:
        acked = set(j.acked)
        attempts = dict(j.attempts)
    for mid in sorted(acked):
        if counts.get(mid, 0) == 0:
            problems.append("telemetry: acked %s is not in the events endpoint" % mid)
    with j.lock:  # figures: resent ids, and ids the hub holds more than once
        j.stats["telemetry resent"] = sum(1 for n in attempts.values() if n > 1)
        j.stats["telemetry stored twice"] = sum(1 for n in counts.values() if n > 1)
    for mid, n in sorted(counts.items()):
        sent = attempts.get(mid, 0)
        if sent == 0:
            problems.append("telemetry: %s stored but never sent" % mid)
        elif n > sent:
            problems.append("telemetry: %s stored %d times, sent %d times" % (mid, n, sent))
    return problems, len(acked) + len(counts)


def check_twin_side(dev, side, key, props, sent, acked, seen):
    """One side of one twin; `seen` (dict) keeps the highest version seen."""
    problems = []
    v = props["$version"]
    val = props.get(key)
    last_n, last_v = max(acked) if acked else (0, 1)
    where = "twin %s %s" % (dev, side)
    if not (1 + len(acked) <= v <= 1 + sent):
        problems.append("%s: $version %d, %d acked and %d sent patches"
                        % (where, v, len(acked), sent))
    if acked and (val is None or not last_n <= val <= sent):
        problems.append("%s: %s=%r, last acked %d, last sent %d" % (where, key, val, last_n, sent))
    if acked and val == last_n and v != last_v:
        problems.append("%s: value of the acked patch %d but $version %d, acked %d"
                        % (where, val, v, last_v))
    if v < seen.get((dev, side), 0):
        problems.append("%s: $version went back from %d to %d" % (where, seen[(dev, side)], v))
    seen[(dev, side)] = max(v, seen.get((dev, side), 0), last_v if acked else 0)
    return problems


def check_twins(svc, j, seen):
    problems = []
    checks = 0
    for dev in sorted(j.devices):
        r = svc.request("GET", "/twins/" + urllib.parse.quote(dev))
        if r.status != 200:
            problems.append("twin %s: %r" % (dev, r))
            continue
        props = r.json()["properties"]
        with j.lock:
            rep = (j.reported_sent[dev], list(j.reported_acked[dev]))
            des = (j.desired_sent[dev], list(j.desired_acked[dev]))
        problems += check_twin_side(dev, "reported", "k", props["reported"], rep[0], rep[1], seen)
        problems += check_twin_side(dev, "desired", "s", props["desired"], des[0], des[1], seen)
        checks += 2
    return problems, checks


def durable_settles(j):
    """(device, seq) -> True if a completion/rejection of it is certainly
    committed, False if one was sent but maybe not committed."""
    out = {}
    with j.lock:
        for key, settles in j.settles.items():
            for kind, gen, t in settles:
                if kind == "abandon":
                    continue
                killed = j.killed_at.get(gen)
                durable = killed is not None and t < killed - WRITE_BEHIND_S
                out[key] = out.get(key, False) or durable
    return out


def check_commands(svc, j):
    problems = []
    settled = durable_settles(j)
    with j.lock:
        accepted = set(j.accepted)
        unknown = dict(j.send_unknown)
    for dev in sorted(j.devices):
        r = svc.get_device(dev)
        if r.status != 200:
            problems.append("commands %s: %r" % (dev, r))
            continue
        count = r.json()["cloudToDeviceMessageCount"]
        mine = [k for k in accepted if k[0] == dev]
        lower = sum(1 for k in mine if k not in settled)
        upper = unknown[dev] + sum(1 for k in mine if not settled.get(k, False))
        if not lower <= count <= upper:
            problems.append("commands %s: %d queued, expected %d..%d (%d accepted)"
                            % (dev, count, lower, upper, len(mine)))
    problems += check_no_redelivery(j)
    return problems, len(j.devices) + len(accepted)


def check_no_redelivery(j):
    problems = []
    with j.lock:
        deliveries = list(j.deliveries)
        settles = {k: list(v) for k, v in j.settles.items()}
        killed_at = dict(j.killed_at)
    for dev, seq, gen, t in deliveries:
        for kind, cgen, ct in settles.get((dev, seq), []):
            if kind == "abandon":
                continue
            if cgen == gen and ct < t:
                problems.append("command %s #%d %sd, then delivered again by server %d"
                                % (dev, seq, kind, gen))
            elif cgen < gen and ct < killed_at[cgen] - WRITE_BEHIND_S:
                problems.append("command %s #%d %sd on server %d %.2f s before its kill, "
                                "delivered by server %d" % (dev, seq, kind, cgen,
                                                            killed_at[cgen] - ct, gen))
    return problems


def take_feedback(svc):
    """Every feedback record queued so far (reading consumes them)."""
    recs = []
    while True:
        r = svc.request("GET", "/messages/serviceBound/feedback")
        assert r.status == 200, r
        page = r.json()
        if not page:
            return recs
        recs += page


def check_feedback(records, j, gen):
    """Feedback of one server process (it is kept in memory only, by design:
    hub/c2d.c): exactly one record per command that process saw completed
    ("Success") or rejected ("Rejected", dead-lettered), none for others."""
    want = {}
    unanswered = 0  # settled commands whose send got no answer: id unknown
    with j.lock:
        known = set(j.message_ids.values())
        for key, settles in j.settles.items():
            for kind, g, _ in settles:
                if g != gen or kind == "abandon":
                    continue
                if key not in j.message_ids:
                    unanswered += 1
                    continue
                want[j.message_ids[key]] = "Success" if kind == "complete" else "Rejected"
    got = {}
    problems = []
    for f in records:
        if f["originalMessageId"] in got:
            problems.append("feedback: two records for %s" % f["originalMessageId"])
        got[f["originalMessageId"]] = f["statusCode"]
    strangers = [m for m in got if m not in known]
    if len(strangers) > unanswered:
        problems.append("feedback: %d records for unknown messages, %d expected"
                        % (len(strangers), unanswered))
    for m in strangers:
        del got[m]
    if got != want:
        wrong = sorted(set(got.items()) ^ set(want.items()))
        problems.append("feedback: %d records, %d expected; differences %r"
                        % (len(got), len(want), wrong[:5]))
    return problems


def check_registry(svc, j):
    problems = []
    with j.lock:
        expected = {k: v for k, v in j.registry.items() if v is not None}
    for rid, state in sorted(expected.items()):
        r = svc.get_device(rid)
        if state is False and r.status != 404:
            problems.append("registry: acked delete of %s, now %r" % (rid, r))
        elif state and (r.status != 200 or r.json()["status"] != state):
            problems.append("registry: acked %s as %s, now %r" % (rid, state, r))
    return problems, len(expected)


def check_hub(hub, j, seen):
    """Every check against a freshly restarted hub: (problems, checks)."""
    svc = ServiceClient(hub)
    problems, checks = [], 0
    for fn in (lambda: check_telemetry(svc, j), lambda: check_twins(svc, j, seen),
               lambda: check_commands(svc, j), lambda: check_registry(svc, j)):
        p, n = fn()
        problems += p
        checks += n
    return problems, checks


def integrity_check(data_dir):
    """PRAGMA integrity_check on a copy of the database and its WAL as the
    killed process left them (a copy: opening the original would recover
    the WAL in its place, and the next server must find it as it was)."""
    with tempfile.TemporaryDirectory(prefix="iothubd-crash-db-") as tmp:
        for suffix in ("", "-wal"):
            src = os.path.join(data_dir, DB_NAME + suffix)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(tmp, DB_NAME + suffix))
        db = sqlite3.connect(os.path.join(tmp, DB_NAME))
        try:
            rows = db.execute("PRAGMA integrity_check").fetchall()
        finally:
            db.close()
    return [] if rows == [("ok",)] else ["integrity_check: %r" % rows[:5]]

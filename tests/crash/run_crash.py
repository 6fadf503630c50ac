#!/usr/bin/python3
"""Crash-consistency driver (issue 7): ROUNDS times, run iothubd under mixed
load, SIGKILL it at a random moment, check the store's integrity, restart
it on the same data directory and check that it holds everything the
killed processes acknowledged (crash_check.py). At the end the devices
drain their command queues on one last server, and every accepted command
must have been delivered and settled.

    /usr/bin/python3 tests/crash/run_crash.py [ROUNDS] [--seed N]
    (make test-crash runs it through scripts/run-crash)

Env: IOTHUBD_BIN (default build/iothubd), CRASH_DEVICES (default 4),
CRASH_KILL_AFTER ("0.3,2.0": seconds of load before each kill, uniform).
Prints one line per round and the totals, ends with "N passed, N failed"
(a round fails when any of its checks does) and exits 1 on a failure.
"""

import os
import random
import signal
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
sys.path.insert(0, HERE)

from conftest import SANITIZER_MARKERS, Broker  # noqa: E402
from crash_check import check_feedback, check_hub, integrity_check, take_feedback  # noqa: E402
from crash_load import Journal, Round  # noqa: E402
from hub_device import Devices  # noqa: E402
from service_client import ServiceClient  # noqa: E402

DRAIN_S = 20
DRAIN_COMMANDS = 10  # sent to each device before the final drain


def start_hub(workdir, data):
    hub = Broker(workdir, http=True, data_dir=data,
                 extra_args=["--c2d-max-delivery-count", "100", "--log-level", "warn"])
    return hub.start(timeout=30)


def sanitizer_problems(hub):
    text = hub.stderr_text()
    return ["sanitizer report: %s" % text[-3000:] for m in SANITIZER_MARKERS if m in text][:1]


def kill(hub, j):
    """SIGKILL, record the moment, return problems seen on its stderr."""
    with j.lock:
        j.killed_at[j.gen] = time.monotonic()
    hub.proc.send_signal(signal.SIGKILL)
    hub.proc.wait(timeout=10)
    hub._err.close()
    hub._out.close()
    hub.proc = None
    return sanitizer_problems(hub)


def drain(hub, j, seed):
    """Devices only, completing or rejecting everything, until every accepted
    command was delivered and every queue is empty (or DRAIN_S passes);
    then the feedback must match what the devices settled."""
    svc = ServiceClient(hub)
    take_feedback(svc)  # none expected: nothing was settled since the restart
    for dev in sorted(j.devices):  # something for the feedback check to see
        for _ in range(DRAIN_COMMANDS):
            r = svc.request("POST", "/devices/%s/messages/deviceBound" % dev, b"drain",
                            headers={"iothub-ack": "full"})
            if r.status != 201:
                break  # 403: that queue is full already
            with j.lock:
                j.accepted.add((dev, r.json()["sequenceNumber"]))
                j.message_ids[(dev, r.json()["sequenceNumber"])] = r.json()["messageId"]
    rd = Round(hub, j, seed, drain=True)
    rd.start()
    deadline = time.monotonic() + DRAIN_S
    left = {}
    try:
        while time.monotonic() < deadline:
            with j.lock:
                missing = j.accepted - {(d, s) for d, s, _, _ in j.deliveries}
            left = {d: svc.get_device(d).json()["cloudToDeviceMessageCount"] for d in j.devices}
            if not missing and not any(left.values()):
                break
            time.sleep(0.2)
    finally:
        rd.finish()
    if not missing and not any(left.values()):
        records = take_feedback(svc)
        with j.lock:
            j.stats["feedback records checked"] = len(records)
        return check_feedback(records, j, j.gen)
    return ["drain: %d accepted commands never delivered (%s), queues %r"
            % (len(missing), sorted(missing)[:5], left)]


def one_round(hub, j, rng, lo, hi, data, seen):
    """Load, SIGKILL, integrity check, restart, check: (problems, checks, figures)."""
    before = dict(j.counts)
    rd = Round(hub, j, rng.random())
    rd.start()
    time.sleep(rng.uniform(lo, hi))
    problems = kill(hub, j)
    rd.finish()
    problems += integrity_check(data)
    with j.lock:
        j.gen += 1
    hub.start(timeout=30)
    p, checks = check_hub(hub, j, seen)
    problems += p
    with j.lock:
        problems += j.errors
        j.errors = []
        delta = {k: j.counts[k] - before[k] for k in j.counts}
    return problems, checks + 1, delta


def final_check(hub, j, rng, data, seen):
    """Drain on the last server, check it, stop it cleanly, check the file."""
    problems = drain(hub, j, rng.random())
    p, checks = check_hub(hub, j, seen)
    problems += p + j.errors
    stop = hub.stop()
    problems += stop
    if not stop:
        problems += integrity_check(data)
    return problems, checks


def run(rounds, seed=None, out=print, devices=None, kill_after=None):
    """Runs the whole thing; returns (passed, failed, figures). A round that
    raises (the server would not restart, say) counts as failed and ends
    the run."""
    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    devices = devices or int(os.environ.get("CRASH_DEVICES", "4"))
    lo, hi = kill_after or [float(x) for x in os.environ.get("CRASH_KILL_AFTER", "0.3,2.0").split(",")]
    out("crash: %d rounds, %d devices, kill after %.1f-%.1f s, seed %d" % (rounds, devices, lo, hi,
                                                                           seed))
    passed = failed = kills = checks = 0
    seen = {}
    with tempfile.TemporaryDirectory(prefix="iothubd-crash-") as work:
        data = os.path.join(work, "data")
        hub = start_hub(work, data)
        devs = Devices(hub)
        j = Journal(dict(devs.new_sas_device("crash-d%d" % n)[:2] for n in range(devices)))
        try:
            for n in range(1, rounds + 1):
                t0 = time.monotonic()
                problems, c, delta = one_round(hub, j, rng, lo, hi, data, seen)
                kills += 1
                checks += c
                passed += not problems
                failed += bool(problems)
                out("round %d: %s in %.1f s; %s; %d checks" % (
                    n, "FAILED" if problems else "ok", time.monotonic() - t0,
                    ", ".join("%d %s" % (v, k) for k, v in delta.items()), c))
                for p in problems[:20]:
                    out("  " + p)
            problems, c = final_check(hub, j, rng, data, seen)
            checks += c
            out("final drain and check: %s" % ("FAILED" if problems else "ok"))
            for p in problems[:20]:
                out("  " + p)
            failed += bool(problems)
        except Exception:  # noqa: BLE001 -- reported as a failed round, with the cause
            failed += 1
            out("round failed with an exception:\n" + traceback.format_exc()
                + "--- server stderr (tail) ---\n" + hub.stderr_text()[-3000:])
        finally:
            if hub.proc is not None:
                hub.proc.kill()
                hub.proc.wait()
    figures = dict(j.counts, **j.stats)
    figures.update(rounds=rounds, kills=kills, checks=checks, seed=seed)
    out("totals: " + ", ".join("%s %s" % (v, k) for k, v in figures.items()))
    out("%d passed, %d failed" % (passed, failed))
    return passed, failed, figures


def main(argv):
    rounds = 25
    seed = None
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--seed":
            seed = int(args.pop(0))
        else:
            rounds = int(a)
    try:
        _, failed, _ = run(rounds, seed, out=lambda s: print(s, flush=True))
    except Exception:  # noqa: BLE001 -- e.g. the first server did not start
        traceback.print_exc()
        print("0 passed, 1 failed")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

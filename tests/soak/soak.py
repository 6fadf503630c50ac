"""Soak test (make soak DURATION=s): mixed hub load with connection churn
against one iothubd process for DURATION seconds; fails on memory growth,
descriptor growth, or any error the load did not provoke on purpose.

What runs at once (rates in Plan; all traffic on 127.0.0.1, all counts
bounded: about 60 connections open at any time):
  - STABLE devices, connected for the whole run: QoS 1 telemetry at a fixed
    rate, twin get and reported patches; they answer direct methods,
    complete commands and follow desired patches (devices.StableDevice);
  - churn workers: clean, abrupt, RST and half-packet disconnects,
    take-overs, bad/expired SAS, unknown devices, TCP without CONNECT,
    malformed packets (devices.churn_*);
  - the back end: desired patches, method calls, C2D sends, registry
    create/get/delete incl. deleting connected devices, bad tokens
    (service.*).
The server's RSS and open descriptors are sampled every second.

Pass/fail (see checks()): each is one line of the report, which ends with
"N passed, N failed". The bounds and their reasons are in
docs/RELIABILITY.md ("Soak"); the numbers are the constants below.
"""

import argparse
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))

import devices  # noqa: E402
import report  # noqa: E402
import service  # noqa: E402
from server import Server, is_asan_binary  # noqa: E402
from tally import Tally  # noqa: E402

WARMUP_FRACTION = 0.20     # RSS baseline starts after this share of the load phase
BASELINE_FRACTION = 0.10   # ... and is the median of the next 10 %
END_FRACTION = 0.10        # RSS end figure: median of the last 10 % of the load phase
RSS_GROWTH_RATIO = 0.10    # allowed growth: 10 % of the baseline ...
RSS_GROWTH_KIB = 4 * 1024  # ... plus 4 MiB
FD_SLACK = 4               # descriptors allowed above the idle count at the end
MIN_VOLUME = 0.25          # each kind of load must reach this share of its plan
# Stored telemetry is capped at 1 MiB (size retention, run by the store every
# 60 s): the store file, and with it SQLite's page cache (up to 32 MiB,
# store/open.c), then stop growing early in the run. Uncapped, RSS grows
# with the stored telemetry (about 1 MiB/min at this load) until the cache is
# full: a cache filling up, not a leak, but the RSS trend cannot tell them
# apart. The cap also keeps size retention running under load.
SERVER_ARGS = ("--telemetry-retention-mb", "1")
DRAIN_S = 60.0             # time allowed to finish what is in flight after the load


class Plan:
    """Counts and rates. Moderate on purpose: a loaded 2-core machine must
    keep up, so a failure means the server, not the load generator."""
    stable_devices = 50
    telemetry_per_device_s = 1.0
    twin_period_s = 5.0           # each stable device: a twin request every 5 s
    churn_devices = 24
    churn_workers = 3
    churn_per_worker_s = 3.0
    desired_per_s = 4.0
    method_workers = 2
    methods_per_worker_s = 2.0
    c2d_per_s = 6.0
    registry_per_s = 1.5

    def expected(self, load_s):
        """Operations the plan asks for in load_s seconds, by kind."""
        s = self.stable_devices
        twin = s * load_s / self.twin_period_s / 2
        return {"telemetry": s * self.telemetry_per_device_s * load_s,
                "twin_get": twin, "twin_patch_reported": twin,
                "desired_patch": self.desired_per_s * load_s,
                "method_call": self.method_workers * self.methods_per_worker_s * load_s * 0.9,
                "c2d_sent": self.c2d_per_s * load_s * 0.95,
                "registry_create": self.registry_per_s * load_s,
                "churn_connects": self.churn_workers * self.churn_per_worker_s * load_s}


class Context:
    """What every worker shares: the server's address, the books, the stop
    signals and the plan."""

    def __init__(self, server, plan, duration):
        self.server = server
        self.host, self.port = server.host, server.port
        self.plan = plan
        self.tally = Tally()
        self.stop_load = threading.Event()
        self.stop_devices = threading.Event()
        self.sas_expiry_ms = int((time.time() + duration + 3600) * 1000)
        self.desired_sent = {}  # device -> desired $version of its last patch
        self.stable = []


def create_devices(ctx, prefix, n):
    svc = service.Service(ctx)
    out = []
    try:
        for i in range(n):
            dev = "%s-%03d" % (prefix, i)
            r = svc.request("PUT", "/devices/" + service.q(dev), {"deviceId": dev})
            if r.status != 201:
                raise RuntimeError("creating %s: %r" % (dev, r))
            out.append((dev, r.json()["authentication"]["symmetricKey"]["primaryKey"]))
    finally:
        svc.close()
    return out


def start(target, *args):
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def run_load(ctx, duration, rng):
    """Connects the stable devices, runs every worker for `duration` s,
    then lets what is in flight finish. Returns (stable devices, load start,
    load end) with times on the server's sample clock."""
    plan = ctx.plan
    stable_ids = create_devices(ctx, "soak", plan.stable_devices)
    churn_ids = create_devices(ctx, "churn", plan.churn_devices)
    offline = create_devices(ctx, "soak-offline", 1)[0][0]
    ctx.stable = [d for d, _ in stable_ids]
    stable = [devices.StableDevice(ctx, d, k, random.Random(rng.random())) for d, k in stable_ids]
    dev_threads = [start(s.run) for s in stable]
    deadline = time.monotonic() + 60
    while not all(s.ready for s in stable) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not all(s.ready for s in stable):
        ctx.tally.error("device_setup", "%d of %d devices subscribed within 60 s"
                        % (sum(s.ready for s in stable), len(stable)))
    t_start = time.monotonic() - ctx.server.t0
    workers = [start(devices.churn_worker, ctx, churn_ids[i::plan.churn_workers], rng.random())
               for i in range(plan.churn_workers)]
    workers.append(start(service.desired_worker, ctx, ctx.stable, rng.random()))
    workers += [start(service.method_worker, ctx, ctx.stable, offline, rng.random())
                for _ in range(plan.method_workers)]
    workers.append(start(service.c2d_worker, ctx, ctx.stable, rng.random()))
    workers.append(start(service.registry_worker, ctx))
    end = time.monotonic() + duration
    while time.monotonic() < end and ctx.server.alive():
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
    ctx.stop_load.set()
    t_end = time.monotonic() - ctx.server.t0
    for t in workers:
        t.join(service.HTTP_TIMEOUT_S + 30)
        if t.is_alive():
            ctx.tally.error("worker_hung", t.name)
    drain(ctx, stable)
    final_state(ctx, stable)
    ctx.stop_devices.set()
    for t in dev_threads:
        t.join(30)
        if t.is_alive():
            ctx.tally.error("worker_hung", t.name)
    return stable, t_start, t_end


def drain(ctx, stable):
    """After the load: every device request answered, every accepted
    command delivered; what is still missing after DRAIN_S is lost (the
    devices' own pending requests expire into *_lost on their own)."""
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline and ctx.server.alive():
        if (all(s.idle() for s in stable) and not ctx.tally.c2d_missing()
                and not desired_behind(ctx, stable)):
            return
        time.sleep(0.2)
    for dev, seq in ctx.tally.c2d_missing():
        ctx.tally.error("c2d_lost", "%s sequence %d accepted, never delivered" % (dev, seq))
    for s in desired_behind(ctx, stable):
        ctx.tally.error("desired_missed", "%s: last patch made $version %d, device saw %d"
                        % (s.dev, ctx.desired_sent[s.dev], s.desired_version))


def desired_behind(ctx, stable):
    """Stable devices that have not yet seen their last desired patch."""
    with ctx.tally.lock:
        sent = dict(ctx.desired_sent)
    return [s for s in stable if s.dev in sent and s.desired_version < sent[s.dev]]


def final_state(ctx, stable):
    """Every stable device's command queue is empty (completions are
    asynchronous: a PUBACK may still be on its way, so each device gets a
    few seconds to reach 0)."""
    if not ctx.server.alive():
        return
    svc = service.Service(ctx)
    deadline = time.monotonic() + 15
    try:
        for s in stable:
            while True:
                r = svc.request("GET", "/devices/" + service.q(s.dev))
                left = r.json().get("cloudToDeviceMessageCount") if r.status == 200 else None
                if left == 0:
                    break
                if time.monotonic() > deadline:
                    ctx.tally.error("c2d_left_queued", "%s: %r" % (s.dev, r))
                    break
                time.sleep(0.2)
    except Exception as e:
        ctx.tally.error("final_state", repr(e))
    finally:
        svc.close()


def wait_fds(server, limit, timeout=20.0):
    """The server closes client sockets asynchronously: wait (bounded) for
    the descriptor count to settle at or under `limit`."""
    deadline = time.monotonic() + timeout
    n = server.fd_count()
    while n is not None and n > limit and time.monotonic() < deadline:
        time.sleep(0.2)
        n = server.fd_count()
    return n


def rss_figures(samples, t_start, t_end):
    """Baseline, end and growth bound of resident memory in the load phase
    (KiB); medians over windows so one allocator spike decides nothing."""
    load = [(t, r) for t, r, _ in samples if t_start <= t <= t_end]
    if not load:  # the server died before the first sample of the load phase
        load = [(t, r) for t, r, _ in samples] or [(0.0, 0)]
    span = max(t_end - t_start, 1e-9)
    w0 = t_start + WARMUP_FRACTION * span
    base = [r for t, r in load if w0 <= t <= w0 + BASELINE_FRACTION * span] or [load[0][1]]
    end = [r for t, r in load if t >= t_end - END_FRACTION * span]
    end = end if len(end) >= 3 else [r for _, r in load[-3:]]
    baseline, final = statistics.median(base), statistics.median(end)
    post = [(t, r) for t, r in load if t >= w0]
    slope = 0.0
    if len(post) >= 3:
        mt = statistics.mean(t for t, _ in post)
        mr = statistics.mean(r for _, r in post)
        den = sum((t - mt) ** 2 for t, _ in post)
        slope = sum((t - mt) * (r - mr) for t, r in post) / den * 60 if den else 0.0
    return {"start_kib": load[0][1], "baseline_kib": int(baseline),
            "peak_kib": max(r for _, r in load), "end_kib": int(final),
            "after_clients_kib": samples[-1][1] if samples else None,
            "growth_kib": int(final - baseline),
            "bound_kib": int(baseline * RSS_GROWTH_RATIO + RSS_GROWTH_KIB),
            "post_warmup_slope_kib_per_min": round(slope, 1)}


def soak(binary, duration, out_dir, seed, keep):
    """One run; returns the number of failed checks."""
    rng = random.Random(seed)
    workdir = tempfile.mkdtemp(prefix="iothubd-soak-")
    server = Server(binary, workdir, SERVER_ARGS)
    failed = 1
    try:
        server.start()
        time.sleep(0.5)
        idle_fds, idle_classes = server.fd_count(), server.fd_classes()
        ctx = Context(server, Plan(), duration)
        try:
            _, t_start, t_end = run_load(ctx, duration, rng)
        except Exception as e:  # setup failed: still report what was seen
            ctx.tally.error("soak_setup", repr(e))
            ctx.stop_load.set()
            ctx.stop_devices.set()
            t_start, t_end = 0.0, time.monotonic() - server.t0
        alive = server.alive()
        end_fds = wait_fds(server, idle_fds + FD_SLACK) if alive else None
        end_classes = server.fd_classes() if alive else {}
        time.sleep(1.5)  # one more RSS sample with no clients
        samples = list(server.samples)
        rc, exit_s = server.stop()
        r = {"binary": binary, "asan": is_asan_binary(binary), "duration": duration,
             "server_args": list(SERVER_ARGS), "seed": seed,
             "load_s": round(t_end - t_start, 1), "alive_after_load": alive,
             "plan": {k: v for k, v in vars(Plan).items() if not k.startswith("_")
                      and not callable(v)},
             "expected": {k: int(v) for k, v in Plan().expected(t_end - t_start).items()},
             "tally": ctx.tally.snapshot(),
             "rss": rss_figures(samples, t_start, t_end),
             "fds": {"idle": idle_fds, "idle_classes": idle_classes,
                     "peak": max((f for _, _, f in samples), default=None),
                     "end": end_fds, "end_classes": end_classes},
             "exit_code": rc, "exit_s": round(exit_s, 1), "log": server.log_summary(),
             "samples": [[round(t, 1), rss, f] for t, rss, f in samples]}
        # churn connects, all scenarios together, for the volume check
        r["tally"]["ops"]["churn_connects"] = (
            sum(v for k, v in r["tally"]["ops"].items() if k.startswith("churn_"))
            + sum(r["tally"]["provoked"].values()))
        results = report.checks(r, MIN_VOLUME, FD_SLACK)
        text, failed = report.render(r, results)
        report.write_json(os.path.join(out_dir, "report.json"), r, results)
        shutil.copy(server.log_path, os.path.join(out_dir, "iothubd.log"))
        print(text, flush=True)
        return failed
    finally:
        if server.alive():
            server.stop()
        if server.proc is None:  # never started: nothing worth keeping
            shutil.rmtree(workdir, ignore_errors=True)
        elif not keep and failed == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print("soak: data and log kept in %s" % workdir, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("duration", type=float, help="seconds of load")
    ap.add_argument("--binary", default=os.environ.get(
        "IOTHUBD_BIN", os.path.join(REPO, "build", "iothubd")))
    ap.add_argument("--out", default=os.environ.get(
        "SOAK_OUT", os.path.join(REPO, "build", "soak")))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", "0")) or None)
    ap.add_argument("--keep", action="store_true", help="keep the data dir even on success")
    a = ap.parse_args()
    if a.duration < 5:
        ap.error("duration must be at least 5 s")
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 1 << 30)
    binary = os.path.abspath(a.binary)
    if not os.access(binary, os.X_OK):
        ap.error("%s is not an executable (make all, or set IOTHUBD_BIN)" % binary)
    # `timeout` (scripts/run-soak) or a user stops us: unwind, so the
    # finally in soak() stops the server instead of orphaning it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        failed = soak(binary, a.duration, a.out, seed, a.keep)
    except RuntimeError as e:  # the server did not start
        print("soak: %s\n0 passed, 1 failed" % e, flush=True)
        failed = 1
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

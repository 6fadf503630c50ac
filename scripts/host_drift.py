#!/usr/bin/env python3
"""Summarises a `scripts/run-bench --drift N` session: how far the host's
speed moved the hub's figures, and how well the host probe followed it.

Usage: host_drift.py RESULTS_DIR

Reads drift-twin.hub.K.json and drift-telemetry.hub.K.json (iteration K,
both paced at a fixed rate, each on a fresh server) with the host figures
run-bench noted beside each (bench_host.host_state), and prints per
scenario the quartiles of the server's CPU time per run, its correlation
with each probe figure taken just before the run, for the twin how many
runs met p99 <= 10 ms for get and for patch, for telemetry the PUBACK p99,
for both the load generator's read delay (its own wait to read an answer,
which no latency includes) and how often the p99 target was met in the
less busy and the busier half of the runs (the machine's busy CPUs in
each run's measured phase).
"""
import os
import statistics
import sys

from bench_host import host_state, machine_busy, p99_met, p99_ms, runs_by_round

PROBES = (("rtt_us", "loopback round trip"), ("rtt_kernel_us", "loopback kernel time"),
          ("work_ms", "SHA-256 CPU work"))


def load(res, scenario):
    """The drift runs of one scenario, each with its host figures and round."""
    runs = []
    for rnd, run in runs_by_round(res, f"drift-{scenario}", "hub").items():
        run["host"] = host_state(os.path.join(res, f"drift-{scenario}.hub.{rnd}"))
        run["_round"] = rnd
        runs.append(run)
    return runs


def correlation(xs, ys):
    try:
        return f"{statistics.correlation(xs, ys):.2f}"
    except (statistics.StatisticsError, ValueError):
        return "—"  # too few runs, or one side constant


def quartiles(values):
    """Quartiles, or every value when there are fewer than four."""
    qs = statistics.quantiles(values, n=4) if len(values) >= 4 else sorted(values)
    return " / ".join(f"{q:.2f}" for q in qs)


def summarise(name, runs):
    cpu = [r["server"]["cpu_s"] for r in runs if r.get("server")]
    if not cpu:
        print(f"{name}: no runs")
        return
    print(f"{name}: {len(cpu)} runs; server CPU per run, quartiles {quartiles(cpu)} s "
          f"(min {min(cpu):.2f}, max {max(cpu):.2f})")
    for key, label in PROBES:
        pairs = [(r["server"]["cpu_s"], r["host"][key]) for r in runs
                 if r.get("server") and key in r["host"]]
        if pairs:
            print(f"  correlation of server CPU with the {label} before it: "
                  f"r = {correlation([c for c, _ in pairs], [p for _, p in pairs])}")


def p99_quartiles(runs, which, label):
    """Prints the quartiles of the runs' p99 of histogram `which`, if any."""
    values = [v for v in (p99_ms(r, which) for r in runs) if v is not None]
    if values:
        print(f"  {label} p99 quartiles {quartiles(values)} ms")


def met_by_machine_load(runs, met):
    """How often the target was met in the less busy half of the runs and
    in the busier half, by the machine's busy CPUs; nothing for runs
    written before the machine was sampled."""
    pairs = sorted((b, ok) for b, ok in zip(map(machine_busy, runs), met) if b is not None)
    if len(pairs) < 2:
        return
    print(f"  machine CPUs busy quartiles {quartiles([b for b, _ in pairs])}")
    half = len(pairs) // 2
    text = [f"in {sum(ok for _, ok in part)} of {len(part)} runs at {part[0][0]:.2f}–"
            f"{part[-1][0]:.2f} CPUs busy" for part in (pairs[:half], pairs[half:])]
    print(f"  p99 <= 10 ms {text[0]}, {text[1]}")


def twin_targets(runs):
    get = [p99_met(r, "latency_us") for r in runs]
    patch = [p99_met(r, "latency2_us") for r in runs]
    print(f"  p99 <= 10 ms: get and patch in {sum(map(all, zip(get, patch)))} of {len(runs)} "
          f"runs; get in {sum(get)}, patch in {sum(patch)}")
    p99_quartiles(runs, "latency2_us", "patch")
    met_by_machine_load(runs, [g and p for g, p in zip(get, patch)])


def main():
    res = sys.argv[1]
    twin, telemetry = load(res, "twin"), load(res, "telemetry")
    summarise("twin paced", twin)
    if twin:
        twin_targets(twin)
        p99_quartiles(twin, "read_delay_us", "generator read delay")
    summarise("telemetry paced", telemetry)
    p99_quartiles(telemetry, "latency_us", "PUBACK")
    met_by_machine_load(telemetry, [p99_met(r, "latency_us") for r in telemetry])
    p99_quartiles(telemetry, "read_delay_us", "generator read delay")
    by_round = {}
    for scenario, runs in (("twin", twin), ("telemetry", telemetry)):
        for r in runs:
            if r.get("server"):
                by_round.setdefault(r["_round"], {})[scenario] = r["server"]["cpu_s"]
    pairs = [v for v in by_round.values() if len(v) == 2]
    if pairs:
        print(f"server CPU of the twin and telemetry runs of one iteration: r = "
              f"{correlation([p['twin'] for p in pairs], [p['telemetry'] for p in pairs])} "
              f"(the host's speed drifting over minutes shows here)")


if __name__ == "__main__":
    main()

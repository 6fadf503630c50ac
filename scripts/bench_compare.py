#!/usr/bin/env python3
"""Summarises a `scripts/run-bench --compare N` session: two server builds,
A ($IOTHUBD_BIN) and B ($IOTHUBD_BIN_B), run alternately on the same paced
loads, so the host's drift over minutes falls on both alike.

Usage: bench_compare.py RESULTS_DIR

Reads compare-twin.{hub,hub-b}.K.json and compare-telemetry.{hub,hub-b}.K.json
(iteration K) and prints, per scenario and build, the server's CPU time per
run (median and range), the p99 medians, for the twin how many runs met
p99 <= 10 ms for both get and patch, and in how many iterations B used less
CPU than A. A difference smaller than the spread of either build's runs is
noise on this kind of machine; compare the pair counts.
"""
import statistics
import sys

from bench_host import p99_met, p99_ms, runs_by_round

BUILDS = (("hub", "A"), ("hub-b", "B"))


def spread(values, unit):
    if not values:
        return "—"
    return (f"{statistics.median(values):.2f} {unit} "
            f"({min(values):.2f}–{max(values):.2f})")


def summarise(res, scenario, latencies):
    by_build = {label: runs_by_round(res, f"compare-{scenario}", target)
                for target, label in BUILDS}
    for label, runs in by_build.items():
        cpu = [r["server"]["cpu_s"] for r in runs.values() if r.get("server")]
        parts = [f"{scenario} {label}: {len(runs)} runs; server CPU {spread(cpu, 's')}"]
        for which, name in latencies:
            vals = [v for v in (p99_ms(r, which) for r in runs.values()) if v is not None]
            parts.append(f"{name} p99 {spread(vals, 'ms')}")
        if len(latencies) == 2:
            met = sum(1 for r in runs.values() if all(p99_met(r, w) for w, _ in latencies))
            parts.append(f"both <= 10 ms in {met}")
        print("; ".join(parts))
    a, b = by_build["A"], by_build["B"]
    pairs = [(a[k]["server"]["cpu_s"], b[k]["server"]["cpu_s"]) for k in a
             if k in b and a[k].get("server") and b[k].get("server")]
    if pairs:
        print(f"  B used less server CPU than A in {sum(1 for x, y in pairs if y < x)} "
              f"of {len(pairs)} iterations")


def main():
    res = sys.argv[1]
    summarise(res, "twin", (("latency_us", "get"), ("latency2_us", "patch")))
    summarise(res, "telemetry", (("latency_us", "PUBACK"),))


if __name__ == "__main__":
    main()

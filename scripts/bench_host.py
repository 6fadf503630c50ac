"""What scripts/run-bench leaves for each run, read one way by
bench_results.py, host_drift.py and bench_compare.py: the run's JSON
(NAME.TARGET.ROUND.json, as iothub-bench --json writes it) and the host
figures noted beside it."""
import glob
import json
import os


def runs_by_round(res, name, target):
    """{round: run} of one scenario name and target in results dir res."""
    runs = {}
    for path in glob.glob(os.path.join(res, f"{name}.{target}.*.json")):
        with open(path) as f:
            runs[int(path[:-5].rsplit(".", 1)[1])] = json.load(f)
    return runs


def p99_ms(run, which):
    """The p99 of a run's histogram `which` (latency_us, latency2_us) in ms,
    None when the run has no such samples."""
    hist = run.get(which) or {}
    return hist["p99"] / 1000 if hist.get("count") else None


def p99_met(run, which, limit_ms=10.0):
    """Whether the run has samples in `which` and their p99 is within limit_ms."""
    p99 = p99_ms(run, which)
    return p99 is not None and p99 <= limit_ms


def machine_busy(run):
    """CPUs the whole machine kept busy in the run's measured phase (server,
    generator and kernel), None for runs written before iothub-bench
    sampled /proc/stat."""
    m = run.get("machine")
    return m["busy_s"] / run["duration_s"] if m and run.get("duration_s") else None


def host_state(base):
    """What run-bench noted beside one run: the load average at its start
    (base.load), scripts/host_probe.py's figures before it (base.probe:
    three, or the first alone in QUICK mode; sessions before the loopback
    probe wrote base.work) and the steal while it lasted (base.steal)."""
    state = {}
    for ext, keys in (("load", ("load1",)), ("probe", ("work_ms", "rtt_us", "rtt_kernel_us")),
                      ("work", ("work_ms",)), ("steal", ("steal_pct",))):
        try:
            with open(f"{base}.{ext}") as f:
                values = [float(v) for v in f.read().split()]
        except (OSError, ValueError):
            continue
        if len(values) == len(keys) or (ext == "probe" and len(values) == 1):
            state.update(zip(keys, values))  # a probe of the CPU work alone: QUICK
    return state

"""The host figures scripts/run-bench notes beside each run (shared by
bench_results.py and host_drift.py)."""


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

"""Tests of the benchmark's Python scripts: scripts/host_probe.py, what
scripts/bench_results.py makes of the host figures run-bench records beside
each run (base.probe, the older base.work, base.steal, base.load), the
--drift and --compare summaries (host_drift.py, bench_compare.py) and
scripts/thread_load.py."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PY = sys.executable


def twin_run(throughput):
    """One run as iothub-bench --json writes it (the twin scenario)."""
    lat = {"count": 1000, "max": 9000.0, "mean": 900.0, "p50": 500.0, "p90": 2000.0,
           "p99": 8000.0, "p999": 8500.0}
    return {"acked": 1000, "clients_failed": 0, "clients_ready": 10, "connects": 0,
            "delivered": 0, "disconnects": 0, "duration_s": 1.0, "errors": {}, "held": 10,
            "label": "hub", "latency_name": "get twin", "latency_us": lat,
            "latency2_name": "patch reported", "latency2_us": lat, "scenario": "twin",
            "sent": 1000, "throughput_per_s": throughput,
            "server": {"cpu_s": 0.5, "cpu_sys_s": 0.3, "rss_kb_baseline": 1000,
                       "rss_kb_end": 2000, "rss_kb_start": 1500}}


def paced_pair(twin_cpu_s, patch_p99_us, telemetry_cpu_s):
    """A paced twin run and a telemetry run with the given server CPU and
    twin patch p99 (what --drift and --compare repeat)."""
    twin = twin_run(50000)
    twin["server"]["cpu_s"] = twin_cpu_s
    twin["latency2_us"] = dict(twin["latency2_us"], p99=patch_p99_us)
    tel = dict(twin_run(50000), scenario="telemetry", latency2_us=None)
    tel["server"] = dict(twin["server"], cpu_s=telemetry_cpu_s)
    return twin, tel


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def render(src, tmp_path, name, **env):
    md, js = tmp_path / f"{name}.md", tmp_path / f"{name}.json"
    subprocess.run([PY, os.path.join(ROOT, "scripts", "bench_results.py"), str(src), str(md),
                    str(js)], check=True, timeout=60,
                   env=dict(os.environ, BENCH_ROUNDS="3", **env))
    return md.read_text(), js


def script_stdout(name, *args):
    """What scripts/NAME prints, run with this interpreter."""
    return subprocess.run([PY, os.path.join(ROOT, "scripts", name), *map(str, args)],
                          check=True, capture_output=True, text=True, timeout=120).stdout


def host_probe(*args):
    return script_stdout("host_probe.py", *args).split()


def test_host_probe_prints_three_positive_figures():
    out = host_probe("500")
    assert len(out) == 3
    work_ms, rtt_us, kernel_us = map(float, out)
    assert 0 < work_ms < 10_000
    assert 0 < rtt_us < 1_000_000
    assert 0 <= kernel_us < 1_000_000


def test_host_probe_without_round_trips_prints_the_cpu_work_alone():
    out = host_probe("0")
    assert len(out) == 1 and float(out[0]) > 0


@pytest.fixture
def results_dir(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    for rnd, (tp, probe) in enumerate([(50000, "15.0 60.0 40.0"), (48000, "16.0 80.0 50.0"),
                                       (49000, None)], start=1):
        base = res / f"hub-twin-paced.hub.{rnd}"
        write(f"{base}.json", json.dumps(twin_run(tp)))
        write(f"{base}.load", "1.25\n")
        write(f"{base}.steal", f"{rnd / 10:.2f}\n")
        if probe:
            write(f"{base}.probe", probe + "\n")
        else:
            write(f"{base}.work", "17.0\n")  # a session before the loopback probe
    # a probe that printed two figures says nothing rather than the wrong thing
    base = res / "hub-twin-light.hub.1"
    write(f"{base}.json", json.dumps(twin_run(90000)))
    write(f"{base}.probe", "15.0 61.0\n")
    # QUICK mode probes the CPU work alone
    base = res / "hub-twin.hub.1"
    write(f"{base}.json", json.dumps(twin_run(95000)))
    write(f"{base}.probe", "15.5\n")
    return res


def test_runs_carry_their_host_figures(results_dir, tmp_path):
    _, js = render(results_dir, tmp_path, "a")
    runs = json.loads(js.read_text())
    paced = runs["hub-twin-paced"]["hub"]
    assert paced["1"]["host"] == {"load1": 1.25, "work_ms": 15.0, "rtt_us": 60.0,
                                  "rtt_kernel_us": 40.0, "steal_pct": 0.1}
    assert paced["3"]["host"] == {"load1": 1.25, "work_ms": 17.0, "steal_pct": 0.3}
    assert runs["hub-twin-light"]["hub"]["1"]["host"] == {}
    assert runs["hub-twin"]["hub"]["1"]["host"] == {"work_ms": 15.5}


def test_header_and_host_table(results_dir, tmp_path):
    md, _ = render(results_dir, tmp_path, "a")
    header = next(line for line in md.splitlines() if line.startswith("- host:"))
    assert "took median 15.8 ms, 15.0–17.0 ms" in header
    assert "loopback TCP between two processes took median 70 µs (60–80)" in header
    assert "median 45 µs of kernel CPU time (40–50)" in header
    assert "max 0.30 %" in header
    assert "| hub-twin-paced | hub | 3 | 1.25 | 16.0 ms | 70 µs | 45 µs | 0.30 % |" in md
    assert "| hub-twin-light | hub | 1 | — | — | — | — | — |" in md


def test_rendering_a_kept_results_json_gives_the_same_host_figures(results_dir, tmp_path):
    first, js = render(results_dir, tmp_path, "a")
    again, _ = render(js, tmp_path, "b")
    host = lambda md: [l for l in md.splitlines() if l.startswith(("- host:", "| hub-twin"))]
    assert host(again) == host(first)


def test_quick_mode_says_the_loopback_probe_was_skipped(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    write(str(res / "hub-twin-paced.hub.1.json"), json.dumps(twin_run(50000)))
    write(str(res / "hub-twin-paced.hub.1.probe"), "15.2\n")
    md, _ = render(res, tmp_path, "a", BENCH_QUICK="1")
    assert "no loopback round trip (QUICK mode skips it)" in md
    assert "| hub-twin-paced | hub | 1 | — | 15.2 ms | — | — | — |" in md


def test_no_host_table_without_host_figures(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    write(str(res / "hub-twin-paced.hub.1.json"), json.dumps(twin_run(50000)))
    md, _ = render(res, tmp_path, "a")
    assert "- host: not recorded." in md
    assert "## The host during each scenario" not in md


def methods_run(throughput, p50_us):
    """A methods run (one latency, an HTTP call's)."""
    run = dict(twin_run(throughput), scenario="methods", latency_name="HTTP call",
               latency2_name=None, latency2_us=None)
    run["latency_us"] = dict(run["latency_us"], p50=p50_us)
    return run


@pytest.mark.parametrize("paced_p50_us, verdict", [(800.0, "met"), (1200.0, "**not met**"),
                                                   (None, "not measured")])
def test_methods_target_takes_its_p50_at_the_target_rate(tmp_path, paced_p50_us, verdict):
    """The closed loop gives the calls/s; its p50 is the connections'
    queue (Little's law), so the p50 is judged at the paced target rate."""
    res = tmp_path / "results"
    res.mkdir()
    write(str(res / "hub-methods.hub.1.json"), json.dumps(methods_run(25000, 1500.0)))
    if paced_p50_us is not None:
        write(str(res / "hub-methods-paced.hub.1.json"),
              json.dumps(methods_run(19990, paced_p50_us)))
    md, _ = render(res, tmp_path, "a", BENCH_METHODS_TARGET_RATE="20000")
    row = next(line for line in md.splitlines() if line.startswith("| methods ≥"))
    assert row.endswith(f"| 25,000/s | — | — | — | {verdict} |")
    assert "as fast as they go (p50 there 1.50 ms)" in row
    if paced_p50_us is not None:
        assert "#### Methods at the target rate (20,000 calls/s paced" in md
        assert "20,000 calls/s paced (19,990/s achieved)" in row


def test_rows_take_their_ceiling_fraction_from_the_matching_responder(tmp_path):
    """The twin, methods and c2d closed loops alternate with ceiling-hub,
    fan-out with ceiling-route; the targets table divides the server's
    median by the responder's."""
    res = tmp_path / "results"
    res.mkdir()
    for rnd in (1, 2, 3):
        write(str(res / f"hub-methods.hub.{rnd}.json"), json.dumps(methods_run(20000, 1000.0)))
        write(str(res / f"hub-methods.ceiling-hub.{rnd}.json"),
              json.dumps(methods_run(25000 + rnd, 700.0)))
        write(str(res / f"hub-c2d.hub.{rnd}.json"),
              json.dumps(dict(twin_run(15000), scenario="c2d")))
    write(str(res / "hub-methods-paced.ceiling-hub.1.json"), json.dumps(methods_run(20000, 500.0)))
    for target, tp in (("iothubd", 2000000), ("mosquitto", 50000), ("ceiling-route", 3200000)):
        write(str(res / f"fanout.{target}.1.json"),
              json.dumps(dict(twin_run(tp), scenario="fanout", latency2_us=None)))
    md, _ = render(res, tmp_path, "a")
    row = next(line for line in md.splitlines() if line.startswith("| fan-out ≥"))
    assert row.endswith("| 2,000,000/s | 50,000/s | 40.00× | 0.62 | met |")
    assert "| delivered messages/s | 2,000,000 | 50,000 | 40.00× | 3,200,000 | 0.62 |" in md
    row = next(line for line in md.splitlines() if line.startswith("| methods ≥"))
    assert row.endswith("| 20,000/s | — | — | 0.80 | not measured |")  # no paced run
    row = next(line for line in md.splitlines() if line.startswith("| c2d ≥"))
    assert row.endswith("| 15,000/s | — | — | — | **not met** |")  # no ceiling run: no fraction
    assert "| calls/s | 20,000 | 25,002 | 0.80 |" in md
    assert "the hub-shaped ceiling there: p50 0.50 ms with — CPUs busy" in md


def test_rows_waiting_on_the_disk_show_the_hub_without_syncs(tmp_path):
    """In a full run, telemetry at half the target rate and C2D alternate
    with hub-nosync (--durability none): its figures are a column of their
    own and a note in the targets row, never the row's figure or verdict."""
    res = tmp_path / "results"
    res.mkdir()
    for rnd in (1, 2, 3):
        tel = dict(twin_run(29000), scenario="telemetry", latency2_us=None)
        tel["latency_us"] = dict(tel["latency_us"], p99=12000.0)
        write(str(res / f"hub-telemetry-target-half.hub.{rnd}.json"), json.dumps(tel))
        tel_nosync = dict(tel, latency_us=dict(tel["latency_us"], p99=5000.0 + rnd))
        write(str(res / f"hub-telemetry-target-half.hub-nosync.{rnd}.json"),
              json.dumps(tel_nosync))
        write(str(res / f"hub-c2d.hub.{rnd}.json"),
              json.dumps(dict(twin_run(14000), scenario="c2d")))
        write(str(res / f"hub-c2d.hub-nosync.{rnd}.json"),
              json.dumps(dict(twin_run(18000 + rnd), scenario="c2d")))
    md, _ = render(res, tmp_path, "a")
    row = next(line for line in md.splitlines() if line.startswith("| p99 PUBACK ≤ 10 ms at half that rate (a)"))
    assert "the same hub with `--durability none` (no disk sync; a reference, not the target's " \
           "configuration): p99 5.00 ms |" in row
    assert row.endswith("| 12.0 ms | — | — | — | **not met** |")
    row = next(line for line in md.splitlines() if line.startswith("| c2d ≥"))
    assert "configuration): 18,002/s |" in row
    assert row.endswith("| 14,000/s | — | — | — | **not met** |")
    assert "| metric | iothubd | iothubd, no disk sync |" in md
    assert "| messages/s delivered | 14,000 | 18,002 |" in md
    assert "| PUBACK latency p99 | 12.0 ms | 5.00 ms |" in md
    assert "**iothubd, no disk sync** (`hub-nosync`" in md


def test_host_drift_summary(tmp_path):
    """Four iterations whose server CPU rises with the loopback probe."""
    res = tmp_path / "results"
    res.mkdir()
    for k, (rtt, patch_p99_us) in enumerate([(50.0, 8000.0), (60.0, 9000.0), (70.0, 15000.0),
                                             (80.0, 30000.0)], start=1):
        twin, tel = paced_pair(9.0 + rtt / 100, patch_p99_us, 7.0 + rtt / 50)
        for name, run in (("drift-twin", twin), ("drift-telemetry", tel)):
            base = res / f"{name}.hub.{k}"
            write(f"{base}.json", json.dumps(run))
            write(f"{base}.probe", f"15.0 {rtt} {rtt / 2}\n")
    out = script_stdout("host_drift.py", res)
    assert "twin paced: 4 runs; server CPU per run, quartiles" in out
    # runs written before the read delay existed have none: no line for it
    assert out.count("generator read delay") == 0
    assert "PUBACK p99 quartiles 8.00 / 8.00 / 8.00 ms" in out
    for k in range(1, 5):  # read delay p99 1, 2, 3, 4 ms in the telemetry runs
        path = res / f"drift-telemetry.hub.{k}.json"
        run = json.loads(path.read_text())
        run["read_delay_us"] = dict(run["latency_us"], p99=1000.0 * k)
        write(str(path), json.dumps(run))
    out = script_stdout("host_drift.py", res)
    assert "generator read delay p99 quartiles 1.25 / 2.50 / 3.75 ms" in out
    assert "correlation of server CPU with the loopback round trip before it: r = 1.00" in out
    assert "correlation of server CPU with the SHA-256 CPU work before it: r = —" in out
    assert "p99 <= 10 ms: get and patch in 2 of 4 runs; get in 4, patch in 2" in out
    assert "telemetry paced: 4 runs" in out
    assert "twin and telemetry runs of one iteration: r = 1.00" in out
    assert "CPUs busy" not in out  # runs written before the machine was sampled
    for k, busy in enumerate([1.9, 1.4, 1.8, 1.5], start=1):
        for name in ("drift-twin", "drift-telemetry"):
            path = res / f"{name}.hub.{k}.json"
            run = json.loads(path.read_text())
            run["machine"] = {"cpus": 2, "busy_s": busy * run["duration_s"]}
            write(str(path), json.dumps(run))
    out = script_stdout("host_drift.py", res)
    # twin runs 1 and 2 met the target (patch p99 8 and 9 ms), at 1.9 and 1.4 CPUs busy
    assert ("p99 <= 10 ms in 1 of 2 runs at 1.40–1.50 CPUs busy, in 1 of 2 runs at "
            "1.80–1.90 CPUs busy") in out
    assert "machine CPUs busy quartiles 1.42 / 1.65 / 1.87" in out
    # every telemetry run met its PUBACK p99 (8 ms)
    assert ("p99 <= 10 ms in 2 of 2 runs at 1.40–1.50 CPUs busy, in 2 of 2 runs at "
            "1.80–1.90 CPUs busy") in out


def test_bench_compare_summary(tmp_path):
    """Three iterations where build B uses less CPU in two and meets the twin target in one."""
    res = tmp_path / "results"
    res.mkdir()
    for k, (cpu_a, cpu_b, patch_b_us) in enumerate([(10.0, 9.0, 9000.0), (11.0, 10.5, 12000.0),
                                                    (9.5, 9.8, 20000.0)], start=1):
        for target, cpu, patch_us in (("hub", cpu_a, 30000.0), ("hub-b", cpu_b, patch_b_us)):
            twin, tel = paced_pair(cpu, patch_us, cpu - 2)
            write(str(res / f"compare-twin.{target}.{k}.json"), json.dumps(twin))
            write(str(res / f"compare-telemetry.{target}.{k}.json"), json.dumps(tel))
    out = script_stdout("bench_compare.py", res)
    assert ("twin A: 3 runs; server CPU 10.00 s (9.50–11.00); get p99 8.00 ms (8.00–8.00); "
            "patch p99 30.00 ms (30.00–30.00); both <= 10 ms in 0") in out
    assert ("twin B: 3 runs; server CPU 9.80 s (9.00–10.50); get p99 8.00 ms (8.00–8.00); "
            "patch p99 12.00 ms (9.00–20.00); both <= 10 ms in 1") in out
    assert out.count("B used less server CPU than A in 2 of 3 iterations") == 2
    assert "telemetry A: 3 runs; server CPU 8.00 s (7.50–9.00); PUBACK p99 8.00 ms" in out


def load_script(name):
    """scripts/NAME.py as a module, for its functions."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_thread_load_reads_proc(tmp_path):
    """A thread whose name holds ') ' is read whole, and its fields after it."""
    tl = load_script("thread_load")
    task = tmp_path / "42" / "task" / "43"
    task.mkdir(parents=True)
    write(str(tmp_path / "42" / "comm"), "iothubd\n")
    fields = ["S"] + ["0"] * 10 + ["150", "50"] + ["0"] * 30  # utime, stime: fields 14, 15
    write(str(task / "stat"), "43 (odd) name) " + " ".join(fields) + "\n")
    write(str(task / "schedstat"), "123 2500000000 7\n")
    assert tl.read_threads(42, proc=str(tmp_path)) == {43: ("iothubd", "odd) name", 150, 50,
                                                            2500000000)}
    assert tl.read_threads(99, proc=str(tmp_path)) == {}


def test_thread_load_rows():
    """CPU, kernel share and run-queue wait per second, busiest first; a
    thread missing from either snapshot is left out."""
    tl = load_script("thread_load")
    before = {1: ("iothubd", "store", 100, 100, 0), 2: ("iothubd", "loop1", 0, 0, 0),
              3: ("iothubd", "gone", 0, 0, 0)}
    after = {1: ("iothubd", "store", 175, 175, 1_700_000_000),
             2: ("iothubd", "loop1", 90, 170, 2_500_000_000), 4: ("iothubd", "new", 9, 9, 0)}
    rows = tl.thread_rows(before, after, seconds=5, hz=100)
    assert [r[1] for r in rows] == ["loop1", "store"]
    _, _, tid, cpu, kernel, wait = rows[0]
    assert (tid, round(cpu, 2), round(kernel), round(wait, 2)) == (2, 0.52, 65, 0.5)
    assert (round(rows[1][3], 2), round(rows[1][4]), round(rows[1][5], 2)) == (0.3, 50, 0.34)


def test_thread_load_runs():
    """Against this test's own process: the header and a row for its thread."""
    out = script_stdout("thread_load.py", "0.2", os.getpid())
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["process", "thread", "tid"]
    assert any(line.split()[2] == str(os.getpid()) for line in lines[1:])
    gone = subprocess.run([PY, os.path.join(ROOT, "scripts", "thread_load.py"), "0.1",
                           str(os.getpid()), "999999999"], capture_output=True, text=True,
                          timeout=60)
    assert gone.returncode == 1 and "process 999999999 is gone" in gone.stderr


def test_machine_rows(tmp_path):
    """Runs that sampled the machine and the server's wait for a CPU get
    both rows, as a median per second; runs written before have "—"."""
    res = tmp_path / "results"
    res.mkdir()
    for rnd, (busy, wait) in enumerate([(19.0, 18.0), (19.6, 20.0), (15.0, 9.0)], start=1):
        run = dict(twin_run(150000), scenario="telemetry", latency2_us=None, duration_s=10.0)
        run["server"] = dict(run["server"], cpu_wait_s=wait)
        run["machine"] = {"cpus": 2, "busy_s": busy, "user_s": 4.0, "system_s": 10.0,
                          "softirq_s": busy - 14.0, "iowait_s": 0.0, "steal_s": 0.0,
                          "idle_s": 20.0 - busy}
        write(str(res / f"hub-telemetry-half.hub.{rnd}.json"), json.dumps(run))
    write(str(res / "hub-twin-paced.hub.1.json"), json.dumps(twin_run(50000)))
    md, _ = render(res, tmp_path, "a")
    telemetry = md[md.index("#### At half of its own maximum rate"):]
    assert "| machine CPUs busy, of 2 (server, generator, kernel) | 1.90 |" in telemetry
    assert "| server threads' wait for a CPU, s per s | 1.80 s |" in telemetry
    assert "1.90 CPUs of the machine busy" in md
    twin = md[md.index("#### Twin at the target rate"):]
    assert "| machine CPUs busy, of 2 (server, generator, kernel) | — |" in twin
    assert "| server threads' wait for a CPU, s per s | — |" in twin

#!/usr/bin/env python3
"""Turns the JSON files of one scripts/run-bench session into bench/RESULTS.md.

Usage: bench_results.py RESULTS_DIR RESULTS.md results.json
       bench_results.py results.json RESULTS.md /dev/null   (re-render a kept session)

Files are named {scenario}.{target}.{round}.json (written by iothub-bench
--json). Figures are medians over rounds; the iothubd/Mosquitto ratio of the
headline figure is the median of per-round ratios (round i of iothubd over
round i of Mosquitto, which ran right after it), other ratios are ratios of
medians. A figure that was not measured is written as such, with the reason;
nothing is estimated.
"""
import glob
import json
import os
import platform
import statistics
import sys

from bench_host import host_state, machine_busy

RES, OUT_MD, OUT_JSON = sys.argv[1:4]
ENV = dict(os.environ)
META_KEYS = ("BENCH_QUICK", "BENCH_ROUNDS", "BENCH_DURATION", "BENCH_IDLE_SECONDS",
             "BENCH_IDLE_CLIENTS", "BENCH_IDLE_ROUNDS", "BENCH_ELAPSED", "BENCH_COMMIT", "BENCH_FIXED_RATE",
             "BENCH_TWIN_WINDOW", "BENCH_HTTP_CONNECTIONS", "BENCH_HUB_DEVICES", "MOSQUITTO_BIN",
             "BENCH_TWIN_LIGHT_DEVICES", "BENCH_TWIN_TARGET_RATE", "BENCH_TWIN_PACED_WINDOW",
             "BENCH_METHODS_TARGET_RATE",
             "BENCH_LOADS")


def load_runs():
    if RES.endswith(".json"):  # a kept results.json: runs plus the session's settings
        with open(RES) as f:
            data = json.load(f)
        for k, v in data.pop("_meta", {}).items():
            ENV.setdefault(k, v)
        return {name: {t: {int(r): d for r, d in rounds.items()} for t, rounds in targets.items()}
                for name, targets in data.items()}
    runs = {}
    for path in sorted(glob.glob(os.path.join(RES, "*.json"))):
        name, target, rnd = os.path.basename(path)[:-5].rsplit(".", 2)
        with open(path) as f:
            run = json.load(f)
        run["host"] = host_state(path[:-5])
        runs.setdefault(name, {}).setdefault(target, {})[int(rnd)] = run
    return runs


RUNS = load_runs()


def all_runs():
    return (run for targets in RUNS.values() for rounds in targets.values()
            for run in rounds.values())


def per_run_values(key, legacy_key):
    """One host figure (see host_state) from every run that has it. A
    results.json written before runs carried their own keeps the figures as
    one list in _meta (legacy_key)."""
    values = [run["host"][key] for run in all_runs() if key in run.get("host", {})]
    if not values and legacy_key and legacy_key in ENV:
        values = [float(v) for v in str(ENV[legacy_key]).split()]
    return values


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def per_round(scenario, target, fn):
    return {r: fn(d) for r, d in RUNS.get(scenario, {}).get(target, {}).items()}


def figure(scenario, target, fn):
    return med(per_round(scenario, target, fn).values())


def paired_ratio(scenario, fn, a="iothubd", b="mosquitto"):
    ra, rb = per_round(scenario, a, fn), per_round(scenario, b, fn)
    ratios = [ra[r] / rb[r] for r in ra if r in rb and ra[r] is not None and rb[r]]
    return med(ratios)


def fmt(v, unit="", digits=None):
    if v is None:
        return "—"
    if digits is None:
        digits = 0 if abs(v) >= 100 else (1 if abs(v) >= 10 else 2)
    return f"{v:,.{digits}f}{unit}"


def env_count(name):
    """A count run-bench passed in the environment, with thousands separators."""
    v = ENV.get(name)
    return f"{int(v):,}" if v and v.isdigit() else "?"


def ratio(a, b):
    return a / b if a is not None and b else None


def throughput(d):
    return d["throughput_per_s"]


def lat(key, which="latency_us"):
    return lambda d: (d[which][key] / 1000.0 if which in d and d[which]["count"] else None)


def lat2(key):
    return lat(key, "latency2_us")


# From an answer reaching the generator's socket to the generator reading it:
# the instrument's own wait, left out of every latency (iothub-bench, engine.c).
READ_DELAY_ROW = ("generator read delay p99 (not in the latencies)", lat("p99", "read_delay_us"),
                  " ms")


def server_cpu_wait(d):
    """Seconds per second the server's threads were runnable but had no CPU."""
    s = d.get("server") or {}
    return s["cpu_wait_s"] / d["duration_s"] if "cpu_wait_s" in s and d.get("duration_s") else None


def machine_rows():
    """How saturated the machine was: at a paced rate, a latency tail with
    every CPU busy and the server's threads queued is CPU queueing."""
    cpus = next((run["machine"]["cpus"] for run in all_runs() if "machine" in run), "?")
    return [(f"machine CPUs busy, of {cpus} (server, generator, kernel)", machine_busy, ""),
            ("server threads' wait for a CPU, s per s", server_cpu_wait, " s")]


def cpu_us_per_msg(d, key="cpu_s"):
    s, n = d.get("server"), max(d["acked"], d["delivered"], d["connects"], d["sent"])
    return s[key] * 1e6 / n if s and key in s and n else None


def cpu_sys_us_per_msg(d):
    """The kernel's part: on loopback a send also runs the peer's TCP receive."""
    return cpu_us_per_msg(d, "cpu_sys_s")


def rss_mib(d):
    s = d.get("server")
    return s["rss_kb_end"] / 1024.0 if s else None


def kib_per_conn(d):
    s = d.get("server")
    if not s or not d["clients_ready"]:
        return None
    return (s["rss_kb_start"] - s["rss_kb_baseline"]) / d["clients_ready"]


def kib_per_conn_end(d):
    """The same at the end of the hold: adds what keep-alive traffic left
    resident (output buffers of PINGRESPs sent in the same loop iteration,
    allocator slack), which is bounded per event loop, not per connection."""
    s = d.get("server")
    if not s or not d["held"]:
        return None
    return (s["rss_kb_end"] - s["rss_kb_baseline"]) / d["held"]


def idle_hold_text():
    secs = int(float(ENV.get("BENCH_IDLE_SECONDS", 0) or 0))
    rounds = ENV.get("BENCH_IDLE_ROUNDS", ENV.get("BENCH_ROUNDS", "?"))
    held = f"{secs // 60} min" if secs >= 60 and secs % 60 == 0 else f"{secs} s"
    return f"held {held}, {rounds} round(s)"


def errors_total(d):
    return sum(d["errors"].values())


def error_text(scenario, target):
    merged = {}
    for d in RUNS.get(scenario, {}).get(target, {}).values():
        for k, v in d["errors"].items():
            merged[k] = merged.get(k, 0) + v
    return ", ".join(f"{k} {v}" for k, v in sorted(merged.items())) or "none"


def table(scenario, rows, targets=("iothubd", "mosquitto", "ceiling"), headline=None):
    """rows: (label, fn, unit, higher_is_better)."""
    present = [t for t in targets if t in RUNS.get(scenario, {})]
    if not present:
        return [f"_not measured: no run of `{scenario}` completed (see the run log)._", ""]
    has_m = "mosquitto" in present
    ceiling = next((t for t in present if t.startswith("ceiling")), None)  # -hub, -route too
    has_c = ceiling is not None
    has_n = NOSYNC in present
    main_target = targets[0]  # "iothubd", or "hub" for the hub rows
    head = "| metric | iothubd |"
    sep = "|---|---:|"
    if has_m:
        head += " Mosquitto | iothubd / Mosquitto |"
        sep += "---:|---:|"
    if has_c:
        head += " ceiling | iothubd / ceiling |"
        sep += "---:|---:|"
    if has_n:
        head += " iothubd, no disk sync |"
        sep += "---:|"
    out = [head, sep]
    for label, fn, unit in rows:
        a = figure(scenario, main_target, fn)
        line = f"| {label} | {fmt(a, unit)} |"
        if has_m:
            b = figure(scenario, "mosquitto", fn)
            r = paired_ratio(scenario, fn) if label == headline else ratio(a, b)
            line += f" {fmt(b, unit)} | {fmt(r, '×', 2)} |"
        if has_c:
            c = figure(scenario, ceiling, fn)
            line += f" {fmt(c, unit)} | {fmt(ratio(a, c), '', 2)} |"
        if has_n:
            line += f" {fmt(figure(scenario, NOSYNC, fn), unit)} |"
        out.append(line)
    out.append("")
    out.append("Errors (all rounds): " + "; ".join(
        f"{t}: {error_text(scenario, t)}" for t in present) + ".")
    out.append("")
    return out


def probe_reason(name):
    txt = os.path.join(RES, f"{name}-probe.hub.0.txt")
    js = os.path.join(RES, f"{name}-probe.hub.0.json")
    if os.path.exists(js):
        with open(js) as f:
            d = json.load(f)
        errs = ", ".join(f"{k} {v}" for k, v in sorted(d["errors"].items()))
        return f"the hub did not accept it (probe with one device: {errs or 'nothing acknowledged'})"
    if os.path.exists(txt):
        with open(txt) as f:
            last = [l.strip() for l in f if l.strip()]
        return "the probe with one device failed: " + (last[-1] if last else "no output")
    return "the probe did not run"


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 1048576:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} CPUs ({model}){mem}, Linux {platform.release()}"


def headline_vs(scenario, fn, target_ratio):
    r = paired_ratio(scenario, fn)
    if r is None:
        return "—", "not measured"
    return fmt(r, "×", 2), ("met" if r >= target_ratio else "**not met**")


# The hub with --durability none: where a row waits on the disk's sync, what
# the same server does without it (a reference, not the target's setup).
NOSYNC = "hub-nosync"
HUB_TARGETS = ("hub", "ceiling-hub", NOSYNC)


def nosync_note(scenario, fn, unit, what=""):
    """'; the same hub without disk syncs: ...' for a targets row, or ''
    when the full run did not run it."""
    v = figure(scenario, NOSYNC, fn)
    if v is None:
        return ""
    return (f"; the same hub with `--durability none` (no disk sync; a reference, not the "
            f"target's configuration): {what + ' ' if what else ''}{fmt(v, unit)}")


def hub_sections():
    devices = ENV.get("BENCH_HUB_DEVICES", "1000")
    twin_rows = [("round trips/s (get + patch)", throughput, ""),
                 ("get twin latency p50", lat("p50"), " ms"),
                 ("get twin latency p99", lat("p99"), " ms"),
                 ("patch reported latency p50", lat2("p50"), " ms"),
                 ("patch reported latency p99", lat2("p99"), " ms"),
                 ("server CPU per round trip", cpu_us_per_msg, " µs"), READ_DELAY_ROW,
                 *machine_rows()]
    methods_rows = [("calls/s", throughput, ""), ("HTTP latency p50", lat("p50"), " ms"),
                    ("HTTP latency p99", lat("p99"), " ms"),
                    ("server CPU per call", cpu_us_per_msg, " µs"), READ_DELAY_ROW,
                    *machine_rows()]
    md = ["## Hub scenarios (MQTT 5 SAS, devices created through the service API)", "",
          "iothubd runs with `--http 127.0.0.1:PORT --hostname localhost` and every "
          "`--throttle-*-per-s 0` (unlimited), so its default rate limits never cap a figure. "
          "Mosquitto has no equivalent of these operations. The twin, methods and C2D closed "
          "loops alternate with the hub-shaped ceiling (`iothub-bench responder --http-port`: "
          "twin requests answered with a fixed document, method calls and C2D sends relayed to "
          "the device, no store, no token check, 201 at once), round by round. In a full run "
          "C2D and telemetry at half the target rate also alternate with the hub at "
          "`--durability none` (column \"no disk sync\"), to show what the disk's sync costs "
          "there.", ""]
    sections = [
        ("hub-telemetry", f"### Authenticated telemetry (`$iothub/telemetry`, QoS 1, 256 bytes, "
         f"{devices} devices, PUBACK after the group commit)",
         [("messages/s", throughput, ""), ("PUBACK latency p50", lat("p50"), " ms"),
          ("PUBACK latency p99", lat("p99"), " ms"),
          ("server CPU per message", cpu_us_per_msg, " µs"),
          ("of which in the kernel", cpu_sys_us_per_msg, " µs"), *machine_rows()]),
        ("hub-telemetry-half", "#### At half of its own maximum rate",
         [("achieved messages/s", throughput, ""), ("PUBACK latency p50", lat("p50"), " ms"),
          ("PUBACK latency p99", lat("p99"), " ms"), ("PUBACK latency p99.9", lat("p999"), " ms"),
          ("server CPU per message", cpu_us_per_msg, " µs"),
          ("of which in the kernel", cpu_sys_us_per_msg, " µs"), READ_DELAY_ROW,
          *machine_rows()]),
        ("hub-telemetry-target-half", "#### At half of the target rate (¾ × Mosquitto's maximum)",
         [("achieved messages/s", throughput, ""), ("PUBACK latency p50", lat("p50"), " ms"),
          ("PUBACK latency p99", lat("p99"), " ms"), ("PUBACK latency p99.9", lat("p999"), " ms"),
          ("server CPU per message", cpu_us_per_msg, " µs"),
          ("of which in the kernel", cpu_sys_us_per_msg, " µs"), READ_DELAY_ROW,
          *machine_rows()]),
        ("hub-telemetry-fixed", f"#### At a fixed {fmt(float(ENV.get('BENCH_FIXED_RATE', 0)))} "
         "messages/s",
         [("achieved messages/s", throughput, ""), ("PUBACK latency p50", lat("p50"), " ms"),
          ("PUBACK latency p99", lat("p99"), " ms"), ("PUBACK latency p99.9", lat("p999"), " ms"),
          ("server CPU per message", cpu_us_per_msg, " µs"),
          ("of which in the kernel", cpu_sys_us_per_msg, " µs"), READ_DELAY_ROW,
          *machine_rows()]),
        ("hub-connect", "### Authenticated connection storm (64 connectors, SAS CONNECT)",
         [("connects/s", throughput, ""), ("CONNACK latency p50", lat("p50"), " ms"),
          ("CONNACK latency p99", lat("p99"), " ms")]),
        ("hub-idle", f"### Idle authenticated connections ({ENV.get('BENCH_IDLE_CLIENTS')} SAS "
         f"devices, MQTT 5, Keep Alive 10 s, {idle_hold_text()})",
         [("connections established", lambda d: d["clients_ready"], ""),
          ("connections held at the end", lambda d: d["held"], ""),
          ("keep-alive misses", lambda d: d["errors"].get("keepalive_miss", 0), ""),
          ("connections lost", lambda d: d["disconnects"], ""),
          ("server memory per connection", kib_per_conn, " KiB"),
          ("same, at the end of the hold", kib_per_conn_end, " KiB")]),
        ("hub-twin", f"### Twin get + reported patch ({devices} devices, "
         f"{ENV.get('BENCH_TWIN_WINDOW', '?')} requests outstanding per device, alternating "
         "get and patch; patches are durable)", twin_rows),
        ("hub-twin-light", f"#### Twin at lower concurrency ({ENV.get('BENCH_TWIN_LIGHT_DEVICES', '?')} "
         "devices, 1 request outstanding each)", twin_rows[:5]),
        ("hub-twin-paced", f"#### Twin at the target rate ({env_count('BENCH_TWIN_TARGET_RATE')} "
         f"requests/s paced over {devices} devices, at most "
         f"{ENV.get('BENCH_TWIN_PACED_WINDOW', '?')} outstanding each; latency from the moment "
         "each request was due, as near as the generator's own wake-ups allow)", twin_rows),
        ("hub-methods", f"### Direct methods (`POST /twins/{{id}}/methods` on "
         f"{ENV.get('BENCH_HTTP_CONNECTIONS', '?')} HTTP/1.1 keep-alive connections, "
         f"{devices} devices answering at once)",
         methods_rows[:4]),
        ("hub-methods-paced", f"#### Methods at the target rate "
         f"({env_count('BENCH_METHODS_TARGET_RATE')} calls/s paced over the same connections; "
         "latency from the moment each call was due, as near as the generator's own wake-ups "
         "allow)", methods_rows),
        ("hub-c2d", f"### Cloud-to-device send → deliver → complete (`POST "
         f"/devices/{{id}}/messages/deviceBound` on {ENV.get('BENCH_HTTP_CONNECTIONS', '?')} "
         f"connections, {devices} devices completing with PUBACK 0 at once; durable queue)",
         [("messages/s delivered", throughput, ""), ("send latency p50 (HTTP 201)", lat("p50"), " ms"),
          ("send latency p99", lat("p99"), " ms"),
          ("send → delivery p50", lat2("p50"), " ms"), ("send → delivery p99", lat2("p99"), " ms"),
          ("server CPU per message", cpu_us_per_msg, " µs")]),
    ]
    for name, title, rows in sections:
        md += [title, ""]
        if name in RUNS:
            md += table(name, rows, targets=HUB_TARGETS)
        else:
            probe = name.replace("-target-half", "").replace("-half", "").replace("-fixed", "")
            md += ["_not measured: " + probe_reason(probe) + "._", ""]
    return md


def hub_ceiling(scenario):
    """The hub's closed-loop throughput over the hub-shaped ceiling's."""
    return fmt(ratio(figure(scenario, "hub", throughput),
                     figure(scenario, "ceiling-hub", throughput)), "", 2)


def status(ok):
    if ok is None:
        return "not measured"
    return "met" if ok else "**not met**"


def all_ok(*conds):
    if any(c is None for c in conds):
        return None
    return all(conds)


def ge(a, b):
    return None if a is None or b is None else a >= b


def le(a, b):
    return None if a is None or b is None else a <= b


def idle_row():
    """Authenticated (hub-idle) when measured, else the anonymous stand-in."""
    name, target, kind = ("hub-idle", "hub", "SAS") if "hub-idle" in RUNS else \
        ("idle", "iothubd", "**anonymous**")
    held = figure(name, target, lambda d: d["held"])
    kib = figure(name, target, kib_per_conn)
    mkib = figure("idle", "mosquitto", kib_per_conn)
    ckib = figure("idle", "ceiling", kib_per_conn)
    misses = figure(name, target, lambda d: d["errors"].get("keepalive_miss", 0) + d["disconnects"])
    secs = float(ENV.get("BENCH_IDLE_SECONDS", 0) or 0)
    ok = all_ok(ge(held, 19000), le(misses, 0), le(kib, 4), le(kib, mkib / 2 if mkib else None),
                ge(secs, 300))
    short = "" if secs >= 300 else ", not 5 min"
    kib_end = figure(name, target, kib_per_conn_end)
    return (f"| 19,000 idle connections, no misses, ≤ 4 KiB and ≤ ½ Mosquitto per connection | "
            f"{ENV.get('BENCH_IDLE_CLIENTS')} {kind} MQTT 5 connections (Mosquitto, ceiling: "
            f"anonymous) held {ENV.get('BENCH_IDLE_SECONDS')} s{short}; Keep Alive 10 s; server "
            f"RSS growth per connection once all are connected (no kernel buffers; "
            f"{fmt(kib_end, ' KiB')} at the end of the hold). Held {fmt(held)}, misses + lost "
            f"{fmt(misses)} | {fmt(kib, ' KiB')} | {fmt(mkib, ' KiB')} | "
            f"{fmt(ratio(kib, mkib), '×', 2)} | {fmt(ratio(kib, ckib), '', 2)} | {status(ok)} |")


def targets_table():
    fixed = fmt(float(ENV.get("BENCH_FIXED_RATE", 0)))
    md = ["## Targets (issue 6)", "",
          "Medians over rounds. Every figure comes from this session on this machine: 2 CPUs "
          "shared by the server, the load generator and (for the ceiling) the responder; all "
          "traffic on loopback. \"ceiling\" = the same load against the in-tree responder "
          "that only acknowledges (for the twin, methods and c2d rows the hub-shaped one, "
          "`ceiling-hub`, which answers twin requests and relays calls and commands to the "
          "devices; for fan-out `ceiling-route`, which forwards to matching subscribers).", "",
          "| target | what is measured | iothubd | Mosquitto | iothubd / Mosquitto | iothubd / ceiling | status |",
          "|---|---|---:|---:|---:|---:|---|"]
    mq_tel = figure("telemetry-qos1", "mosquitto", throughput)
    ceil_tel = figure("telemetry-qos1", "ceiling", throughput)
    hub_tel = figure("hub-telemetry", "hub", throughput)
    r = ratio(hub_tel, mq_tel)
    md.append(f"| telemetry ≥ 1.5 × Mosquitto QoS 1 | 1,000 SAS devices, `$iothub/telemetry` QoS 1, "
              f"256 B, PUBACK after the fsync'd group commit, vs Mosquitto anonymous, no "
              f"persistence, same clients | {fmt(hub_tel, '/s')} | {fmt(mq_tel, '/s')} | {fmt(r, '×', 2)} | "
              f"{fmt(ratio(hub_tel, ceil_tel), '', 2)} | {status(ge(r, 1.5))} |")
    p99h = figure("hub-telemetry-half", "hub", lat("p99"))
    rate_h = figure("hub-telemetry-half", "hub", throughput)
    mq_p99h = figure("telemetry-qos1-half", "mosquitto", lat("p99"))
    p99f = figure("hub-telemetry-fixed", "hub", lat("p99"))
    ceil_p99f = figure("telemetry-qos1-fixed", "ceiling", lat("p99"))
    busy_h = figure("hub-telemetry-half", "hub", machine_busy)
    p99t = figure("hub-telemetry-target-half", "hub", lat("p99"))
    rate_t = figure("hub-telemetry-target-half", "hub", throughput)
    md.append(f"| p99 PUBACK ≤ 10 ms at half that rate (a): half the target rate | same, `--rate` at "
              f"½ × 1.5 × Mosquitto's median ({fmt(rate_t)}/s achieved); ceiling column: p99 at "
              f"{fixed}/s, hub vs responder ({fmt(p99f, ' ms')} vs {fmt(ceil_p99f, ' ms')})"
              f"{nosync_note('hub-telemetry-target-half', lat('p99'), ' ms', 'p99')} | "
              f"{fmt(p99t, ' ms')} | — | — | {fmt(ratio(p99f, ceil_p99f), '', 2)} | "
              f"{status(le(p99t, 10))} |")
    md.append(f"| p99 PUBACK ≤ 10 ms at half that rate (b): half the hub's own maximum | same, "
              f"`--rate` at half of the hub's own maximum ({fmt(rate_h)}/s achieved, "
              f"{fmt(busy_h)} CPUs of the machine busy); Mosquitto at "
              f"half of its own | {fmt(p99h, ' ms')} | {fmt(mq_p99h, ' ms')} | "
              f"{fmt(ratio(p99h, mq_p99h), '×', 2)} | — | {status(le(p99h, 10))} |")
    fo, fo_m = figure("fanout", "iothubd", throughput), figure("fanout", "mosquitto", throughput)
    r = paired_ratio("fanout", throughput)
    fo_c = figure("fanout", "ceiling-route", throughput)
    md.append(f"| fan-out ≥ 1.5 × Mosquitto | open topic space, 1 publisher, 100 subscribers, QoS 0, "
              f"64 B, delivered messages/s (ceiling: the responder forwarding each PUBLISH to the "
              f"subscribers it matches, `--route`) | {fmt(fo, '/s')} | "
              f"{fmt(fo_m, '/s')} | {fmt(r, '×', 2)} | {fmt(ratio(fo, fo_c), '', 2)} | "
              f"{status(ge(r, 1.5))} |")
    hc, mc = figure("hub-connect", "hub", throughput), figure("connect", "mosquitto", throughput)
    cc = figure("connect", "ceiling", throughput)
    r = ratio(hc, mc)
    md.append(f"| authenticated connects/s ≥ Mosquitto anonymous | 64 connectors: SAS CONNECT → CONNACK "
              f"→ DISCONNECT → close, vs Mosquitto anonymous | {fmt(hc, '/s')} | {fmt(mc, '/s')} | "
              f"{fmt(r, '×', 2)} | {fmt(ratio(hc, cc), '', 2)} | {status(ge(r, 1.0))} |")
    md.append(idle_row())
    tw = figure("hub-twin", "hub", throughput)
    tw_g, tw_p = figure("hub-twin", "hub", lat("p99")), figure("hub-twin", "hub", lat2("p99"))
    lt = figure("hub-twin-light", "hub", throughput)
    lt_g, lt_p = figure("hub-twin-light", "hub", lat("p99")), figure("hub-twin-light", "hub", lat2("p99"))
    pc_g, pc_p = figure("hub-twin-paced", "hub", lat("p99")), figure("hub-twin-paced", "hub", lat2("p99"))
    worst_pc = max(pc_g, pc_p) if pc_g is not None and pc_p is not None else None
    cg, cp = figure("hub-twin-paced", "ceiling-hub", lat("p99")), \
        figure("hub-twin-paced", "ceiling-hub", lat2("p99"))
    md.append(f"| twin ≥ 50,000 round trips/s, p99 ≤ 10 ms | get twin and durable patch reported "
              f"alternating, SAS devices. Throughput: 1,000 devices × "
              f"{ENV.get('BENCH_TWIN_WINDOW', '?')} outstanding, as fast as they go. p99: "
              f"{env_count('BENCH_TWIN_TARGET_RATE')} requests/s paced over 1,000 devices: get "
              f"{fmt(pc_g, ' ms')}, patch {fmt(pc_p, ' ms')}; the hub-shaped ceiling at the same "
              f"rate: get {fmt(cg, ' ms')}, patch {fmt(cp, ' ms')} with "
              f"{fmt(figure('hub-twin-paced', 'ceiling-hub', machine_busy), '', 2)} CPUs busy. "
              f"For reference, closed loops: "
              f"{ENV.get('BENCH_TWIN_LIGHT_DEVICES', '?')} devices × 1 give {fmt(lt, '/s')}, p99 get "
              f"{fmt(lt_g, ' ms')}, patch {fmt(lt_p, ' ms')}; 1,000 × "
              f"{ENV.get('BENCH_TWIN_WINDOW', '?')} give p99 get {fmt(tw_g, ' ms')}, patch "
              f"{fmt(tw_p, ' ms')} (by Little's law the mean wait alone is the requests "
              f"outstanding / throughput) | {fmt(tw, '/s')} | — | — | {hub_ceiling('hub-twin')} | "
              f"{status(all_ok(ge(tw, 50000), le(worst_pc, 10)))} |")
    me, me_p50 = figure("hub-methods", "hub", throughput), figure("hub-methods", "hub", lat("p50"))
    mp, mp_p50 = figure("hub-methods-paced", "hub", throughput), \
        figure("hub-methods-paced", "hub", lat("p50"))
    md.append(f"| methods ≥ 20,000 calls/s, p50 ≤ 1 ms | `POST /twins/{{id}}/methods` on "
              f"{ENV.get('BENCH_HTTP_CONNECTIONS', '?')} keep-alive connections, devices answer at "
              f"once. Throughput: as fast as they go (p50 there {fmt(me_p50, ' ms')}). p50: "
              f"{env_count('BENCH_METHODS_TARGET_RATE')} calls/s paced ({fmt(mp, '/s')} "
              f"achieved): {fmt(mp_p50, ' ms')}; the hub-shaped ceiling there: p50 "
              f"{fmt(figure('hub-methods-paced', 'ceiling-hub', lat('p50')), ' ms')} with "
              f"{fmt(figure('hub-methods-paced', 'ceiling-hub', machine_busy), '', 2)} CPUs busy"
              f" | {fmt(me, '/s')} | — | — | "
              f"{hub_ceiling('hub-methods')} | "
              f"{status(all_ok(ge(me, 20000), le(mp_p50, 1)))} |")
    c2 = figure("hub-c2d", "hub", throughput)
    md.append(f"| c2d ≥ 20,000 messages/s | `POST .../messages/deviceBound` on "
              f"{ENV.get('BENCH_HTTP_CONNECTIONS', '?')} connections → delivered → PUBACK 0 "
              f"(durable queue){nosync_note('hub-c2d', throughput, '/s')} | {fmt(c2, '/s')} | "
              f"— | — | {hub_ceiling('hub-c2d')} | "
              f"{status(ge(c2, 20000))} |")
    ot = paired_ratio("telemetry-qos1", throughput)
    md += ["", f"For reference, the open-broker stand-ins (no authentication, no store): telemetry "
           f"QoS 1 {fmt(ot, '×', 2)} Mosquitto; p99 at half rate "
           f"{fmt(figure('telemetry-qos1-half', 'iothubd', lat('p99')), ' ms')}; at {fixed}/s "
           f"{fmt(figure('telemetry-qos1-fixed', 'iothubd', lat('p99')), ' ms')} (ceiling "
           f"{fmt(figure('telemetry-qos1-fixed', 'ceiling', lat('p99')), ' ms')}).", ""]
    return md


def load_note():
    loads = per_run_values("load1", "BENCH_LOADS")
    if not loads:
        return "- machine load: not recorded."
    return (f"- machine load: the 1-minute load average when each run started was median "
            f"{statistics.median(loads):.2f}, max {max(loads):.2f} (this machine has "
            f"{os.cpu_count()} CPUs; the previous run's server and load generator account for up "
            f"to ~2; more means other work shared the CPUs and the figures are lower than an "
            f"idle machine would give).")


def host_note():
    work = per_run_values("work_ms", "BENCH_WORK_MS")
    rtt = per_run_values("rtt_us", None)
    kernel = per_run_values("rtt_kernel_us", None)
    steal = per_run_values("steal_pct", "BENCH_STEAL")
    if not work and not steal:
        return "- host: not recorded."
    parts = []
    if work:
        parts.append(f"a fixed piece of CPU work (SHA-256 over 24 MiB, timed in its own CPU time "
                     f"before each run) took median {statistics.median(work):.1f} ms, "
                     f"{min(work):.1f}–{max(work):.1f} ms across runs")
    if rtt and kernel:
        parts.append(f"a 64-byte round trip over loopback TCP between two processes took median "
                     f"{statistics.median(rtt):.0f} µs ({min(rtt):.0f}–{max(rtt):.0f}), of which "
                     f"median {statistics.median(kernel):.0f} µs of kernel CPU time "
                     f"({min(kernel):.0f}–{max(kernel):.0f})")
    elif ENV.get("BENCH_QUICK") == "1":
        parts.append("no loopback round trip (QUICK mode skips it)")
    else:
        parts.append("no loopback round trip recorded")
    if steal:
        parts.append(f"the host took median {statistics.median(steal):.2f} %, max "
                     f"{max(steal):.2f} % of this machine's CPU time while runs lasted (steal)")
    return ("- host: " + "; ".join(parts) + ". This machine is a virtual one: the same build "
            "has measured tens of per cent faster or slower from one hour to the next. The CPU "
            "work catches a host slower at plain computation, the steal one that takes CPU time "
            "away, the loopback round trip one slower at what the hub's rows lean on (system "
            "calls, loopback TCP, wake-ups across CPUs); it is noisy from one run to the next, "
            "so compare medians. \"The host during each scenario\" at the end has them per "
            "scenario (and results.json per run).")


def host_table():
    """The host probe's figures (host_state) per scenario and target: which
    rows ran on a slower host. Nothing for sessions whose runs carry none."""
    if not any(run.get("host") for run in all_runs()):
        return []
    md = ["## The host during each scenario", "",
          "Medians over the scenario's runs of what `scripts/host_probe.py` measured just "
          "before each (see the header), the load average at its start and the steal while "
          "it ran.", "",
          "| scenario | target | runs | load | CPU work | loopback round trip | of which kernel "
          "| steal (max) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name in sorted(RUNS):
        if name.endswith("-probe"):
            continue
        for target in sorted(RUNS[name]):
            hosts = [run.get("host", {}) for run in RUNS[name][target].values()]

            def median_of(key, unit, digits):
                return fmt(med([h.get(key) for h in hosts]), unit, digits)

            steal = [h["steal_pct"] for h in hosts if "steal_pct" in h]
            md.append(f"| {name} | {target} | {len(hosts)} | {median_of('load1', '', 2)} | "
                      f"{median_of('work_ms', ' ms', 1)} | {median_of('rtt_us', ' µs', 0)} | "
                      f"{median_of('rtt_kernel_us', ' µs', 0)} | "
                      f"{fmt(max(steal) if steal else None, ' %', 2)} |")
    return md + [""]


def main():
    quick = ENV.get("BENCH_QUICK") == "1"
    md = ["# iothubd benchmark results", ""]
    md += [f"- mode: {'QUICK (1 round, short runs: indicative only)' if quick else 'full'}; "
           f"{ENV.get('BENCH_ROUNDS')} round(s), {ENV.get('BENCH_DURATION')} s per measured run "
           f"(idle connections: {idle_hold_text()}); whole session {ENV.get('BENCH_ELAPSED')} s",
           f"- machine: {machine()}",
           f"- commit: {ENV.get('BENCH_COMMIT')}",
           "- load generator, servers and ceiling share this machine's CPUs; all traffic on "
           "loopback; every run on a freshly started server.", load_note(), host_note(), ""]
    md += ["## Configurations", "",
           "- **iothubd**: `iothubd --mqtt 127.0.0.1:PORT --open-topics --allow-anonymous "
           "--data <fresh temp dir> --log-level warn` (event loops: one per CPU; hub rows add "
           "`--http 127.0.0.1:PORT --hostname localhost` and drop the open-broker flags).",
           "- **Mosquitto** " + os.popen(ENV.get("MOSQUITTO_BIN", "mosquitto") + " -h 2>&1")
           .readline().strip().replace("mosquitto version", "") +
           ": `listener PORT 127.0.0.1`, `allow_anonymous true`, `persistence false`, "
           "`max_queued_messages 100000`, `max_connections -1`, `set_tcp_nodelay true`, "
           "`per_listener_settings false` (single-threaded by design).",
           "- **ceiling**: `iothub-bench responder --threads <CPUs>`: acknowledges CONNECT, "
           "PUBLISH QoS 1, SUBSCRIBE and PINGREQ from fixed bytes; no store, no routing. "
           "**ceiling-hub** (the twin, methods and C2D rows): the same with `--http-port`, "
           "which also answers `$iothub/twin/get` and `$iothub/twin/patch/reported` on "
           "`$iothub/responses`, relays `POST /twins/{id}/methods` to the device and its reply "
           "back, and relays `POST /devices/{id}/messages/deviceBound` to the device as a QoS 1 "
           "PUBLISH with 201 at once; no store, no token check, no JSON parser. "
           "**ceiling-route** (the fan-out row): the same with `--route`, which forwards each "
           "PUBLISH at QoS 0 to every subscriber whose filter matches it, one send per "
           "subscriber per read batch; no sessions, no retained messages, no overlap handling.",
           "- **iothubd, no disk sync** (`hub-nosync`; telemetry at half the target rate and "
           "C2D, full runs only): the hub as above with `--durability none`, which commits to "
           "the page cache and never syncs. A reference for how much of those rows is the "
           "disk's sync on this machine, not a configuration the targets accept.",
           "- **load generator**: `iothub-bench` with one epoll thread per CPU, connections "
           "spread over source addresses 127.0.0.1–16, MQTT 5, anonymous unless said otherwise. "
           "QoS 1 telemetry keeps at most 16 messages in flight per client (Receive Maximum "
           "permitting); latency is PUBLISH → PUBACK, publish → delivery for fan-out, "
           "connect() → CONNACK for connects, and ends when the answer reached the "
           "generator's socket (the kernel's receive stamp, `SO_TIMESTAMPNS`), so the "
           "generator's own wait for a CPU on this shared machine is not counted; the paced "
           "rows show that wait as the generator read delay. Server CPU, RSS and the time "
           "the server's threads were runnable but waited for a CPU (their schedstat) come "
           "from /proc, as does how many of the machine's CPUs were busy in the measured "
           "phase (/proc/stat: user, system, irq and softirq, whoever ran it).", ""]

    md += ["## Telemetry ingest, open topic space (QoS 1, 256-byte payloads, 1,000 clients, "
           "no subscriber)", "",
           "Each client publishes to its own topic `bench/t/N`; iothubd acknowledges after "
           "routing (the open broker has no store on this path), Mosquitto likewise "
           "(no persistence).", ""]
    md += table("telemetry-qos1", [("messages/s", throughput, ""),
                                   ("PUBACK latency p50", lat("p50"), " ms"),
                                   ("PUBACK latency p99", lat("p99"), " ms"),
                                   ("PUBACK latency max", lat("max"), " ms"),
                                   ("server CPU per message", cpu_us_per_msg, " µs"),
                                   ("server RSS at end", rss_mib, " MiB")],
                headline="messages/s")
    md += ["### Latency at half of each server's own maximum rate", ""]
    md += table("telemetry-qos1-half", [("achieved messages/s", throughput, ""),
                                        ("PUBACK latency p50", lat("p50"), " ms"),
                                        ("PUBACK latency p99", lat("p99"), " ms"),
                                        ("PUBACK latency p99.9", lat("p999"), " ms")],
                targets=("iothubd", "mosquitto"))
    md += ["In `--rate` mode each token goes to the head of a ring of clients with a free "
           "window slot (O(1) per message); a token finding every window full is counted as "
           "`window_full`. Messages then leave one per send() instead of a window's worth, so "
           "the same rate costs both sides far more system calls than the closed-loop run: on "
           "2 shared CPUs half of the closed-loop maximum can already saturate the machine. "
           "The fixed-rate run below separates the server from the load generator and kernel.",
           ""]
    md += [f"### Latency at a fixed {fmt(float(ENV.get('BENCH_FIXED_RATE', 0)))} messages/s "
           "(all targets)", ""]
    md += table("telemetry-qos1-fixed", [("achieved messages/s", throughput, ""),
                                         ("PUBACK latency p50", lat("p50"), " ms"),
                                         ("PUBACK latency p99", lat("p99"), " ms"),
                                         ("PUBACK latency p99.9", lat("p999"), " ms"),
                                         ("server CPU per message", cpu_us_per_msg, " µs")])
    md += ["## Telemetry QoS 0 (256 bytes, 1,000 clients; messages written per second)", ""]
    md += table("telemetry-qos0", [("messages/s sent", throughput, ""),
                                   ("server CPU per message", cpu_us_per_msg, " µs")],
                targets=("iothubd", "mosquitto"), headline="messages/s sent")
    md += ["## Fan-out, open topic space (1 publisher, 100 subscribers, QoS 0, 64 bytes)", "",
           "The publisher keeps at most 100 messages per subscriber undelivered; messages a "
           "server drops are counted as `not_delivered` after a 1 s stall. The ceiling here "
           "is the responder with `--route` (ceiling-route).", ""]
    md += table("fanout", [("delivered messages/s", throughput, ""),
                           ("delivery latency p50", lat("p50"), " ms"),
                           ("delivery latency p99", lat("p99"), " ms"),
                           ("server CPU per delivery", cpu_us_per_msg, " µs")],
                targets=("iothubd", "mosquitto", "ceiling-route"), headline="delivered messages/s")
    md += ["## Connection storm, anonymous (64 connectors: connect, CONNACK, DISCONNECT, close)", ""]
    md += table("connect", [("connects/s", throughput, ""),
                            ("CONNACK latency p50", lat("p50"), " ms"),
                            ("CONNACK latency p99", lat("p99"), " ms")],
                headline="connects/s")
    idle_n = ENV.get("BENCH_IDLE_CLIENTS")
    md += [f"## Idle connections ({idle_n} MQTT 5 anonymous connections, Keep Alive 10 s, "
           f"{idle_hold_text()})", "",
           "Memory per connection = (server RSS with everyone connected − RSS before the first "
           "connection) / connections; it includes what the server allocates per connection, "
           "not kernel socket buffers. The second figure is the same at the end of the hold, "
           "after every connection has exchanged PINGREQ/PINGRESP many times.", ""]
    md += table("idle", [("connections established", lambda d: d["clients_ready"], ""),
                         ("connections held at the end", lambda d: d["held"], ""),
                         ("keep-alive misses", lambda d: d["errors"].get("keepalive_miss", 0), ""),
                         ("connections lost", lambda d: d["disconnects"], ""),
                         ("server memory per connection", kib_per_conn, " KiB"),
                         ("same, at the end of the hold", kib_per_conn_end, " KiB")])

    md += hub_sections()
    md += targets_table()
    md += host_table()

    with open(OUT_MD, "w") as f:
        f.write("\n".join(md) + "\n")
    with open(OUT_JSON, "w") as f:
        kept = dict(RUNS)
        kept["_meta"] = {k: ENV[k] for k in META_KEYS if k in ENV}
        json.dump(kept, f, indent=1, sort_keys=True)


main()

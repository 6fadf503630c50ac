#!/usr/bin/env python3
"""Where each thread's time goes over a few seconds of a run: CPU used, the
kernel's share of it, and the time it spent runnable but waiting for a CPU.

Usage: thread_load.py SECONDS PID [PID ...]

Reads /proc/PID/task/*/stat (utime, stime) and schedstat (run-queue wait)
of every thread of each process twice, SECONDS apart, and prints a row per
thread. On a machine the server shares with the load generator, the wait
column is where a latency tail comes from when the CPUs are oversubscribed
(docs/PERFORMANCE.md, "Sixth round" of the twin's cost). For example,
while `scripts/run-bench --drift 1` runs its paced twin:

    scripts/thread_load.py 5 $(pgrep -x iothubd) $(pgrep -x iothub-bench)
"""
import os
import sys
import time


def read_threads(pid, proc="/proc"):
    """{tid: (process name, thread name, user ticks, system ticks, wait ns)}
    for every thread of pid still there; threads that end while being read
    are skipped."""
    threads = {}
    base = os.path.join(proc, str(pid))
    try:
        with open(os.path.join(base, "comm")) as f:
            process = f.read().strip()
        tids = os.listdir(os.path.join(base, "task"))
    except OSError:
        return threads
    for tid in tids:
        task = os.path.join(base, "task", tid)
        try:
            with open(os.path.join(task, "stat")) as f:
                stat = f.read()
            with open(os.path.join(task, "schedstat")) as f:
                wait_ns = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        # the name is in parentheses and may hold spaces or ')': split after the last one
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        threads[int(tid)] = (process, name, int(fields[11]), int(fields[12]), wait_ns)
    return threads


def thread_rows(before, after, seconds, hz):
    """Rows (process, thread, tid, CPUs used, kernel share %, wait s per s)
    for the threads present in both snapshots, busiest first."""
    rows = []
    for tid, (process, name, user1, sys1, wait1) in after.items():
        if tid not in before:
            continue
        _, _, user0, sys0, wait0 = before[tid]
        ticks = (user1 - user0) + (sys1 - sys0)
        cpu = ticks / hz / seconds
        kernel = 100.0 * (sys1 - sys0) / ticks if ticks else 0.0
        rows.append((process, name, tid, cpu, kernel, (wait1 - wait0) / 1e9 / seconds))
    rows.sort(key=lambda r: -r[3])
    return rows


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__.strip().splitlines()[2])
    seconds = float(sys.argv[1])
    pids = [int(p) for p in sys.argv[2:]]
    hz = os.sysconf("SC_CLK_TCK")
    before, after = {}, {}
    for pid in pids:
        before.update(read_threads(pid))
    time.sleep(seconds)
    for pid in pids:
        threads = read_threads(pid)
        if not threads:
            sys.exit(f"thread_load: process {pid} is gone (or was never there)")
        after.update(threads)
    print(f"{'process':<14} {'thread':<16} {'tid':>8} {'CPUs':>6} {'kernel':>7} "
          f"{'waiting for a CPU':>18}")
    for process, name, tid, cpu, kernel, wait in thread_rows(before, after, seconds, hz):
        print(f"{process:<14} {name:<16} {tid:>8} {cpu:>6.2f} {kernel:>6.0f}% "
              f"{wait:>13.2f} s/s")


if __name__ == "__main__":
    main()

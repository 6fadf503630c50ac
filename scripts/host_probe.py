#!/usr/bin/env python3
"""The host's state before one benchmark run, for scripts/run-bench.

Usage: host_probe.py [ROUND_TRIPS]   (default 5,000; 0: WORK_MS alone)

Prints three figures on one line: "WORK_MS RTT_US KERNEL_US".

WORK_MS    CPU time of a fixed computation (SHA-256 over 24 MiB): ~15 ms on
           this machine type, steady within 1 % on an idle host. It grows
           when the host's other guests share the physical cores or caches;
           waits in this machine's own run queue do not count in it.
RTT_US     wall time of one round trip of 64 bytes over loopback TCP between
           two processes (ROUND_TRIPS of them, after 200 to warm up), and
KERNEL_US  the kernel CPU time both processes spent per round trip.

The two loopback figures cover what WORK_MS does not see: the hub spends
most of its CPU in the kernel (loopback TCP, wake-ups across CPUs), and a
host that is slower at system calls and inter-processor wake-ups slows the
hub's rows with WORK_MS unchanged. Both also depend on this machine's own
load (with both CPUs busy a round trip came out shorter: no idle CPU to
wake), so run-bench takes them between runs, with the load average beside.
"""
import hashlib
import os
import resource
import socket
import sys
import time

WARM_UP = 200
MESSAGE = b"x" * 64


def work_ms():
    block = bytes(8 << 20)
    start = time.thread_time()
    for _ in range(3):
        hashlib.sha256(block).digest()
    return (time.thread_time() - start) * 1000


def echo_child(address):
    """Echoes until the parent closes (or 10 s without a message)."""
    try:
        c = socket.create_connection(address, timeout=10)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = c.recv(len(MESSAGE))
            if not data:
                break
            c.sendall(data)
    finally:
        os._exit(0)


def exchange(s, n):
    for _ in range(n):
        s.sendall(MESSAGE)
        got = 0
        while got < len(MESSAGE):
            chunk = s.recv(len(MESSAGE) - got)
            if not chunk:
                raise ConnectionError("echo child closed early")
            got += len(chunk)


def loopback_round_trip(round_trips):
    """(wall µs, kernel CPU µs of both processes) per round trip."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    address = listener.getsockname()
    pid = os.fork()
    if pid == 0:
        listener.close()
        echo_child(address)
    listener.settimeout(10)
    s, _ = listener.accept()
    listener.close()
    s.settimeout(10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        exchange(s, WARM_UP)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        start = time.perf_counter()
        exchange(s, round_trips)
        wall = time.perf_counter() - start
        own = resource.getrusage(resource.RUSAGE_SELF).ru_stime - before
    finally:
        s.close()
        os.waitpid(pid, 0)
    # the child's kernel time includes its warm-up: about 4 % of the total
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
    child *= round_trips / (round_trips + WARM_UP)
    return 1e6 * wall / round_trips, 1e6 * (own + child) / round_trips


if __name__ == "__main__":
    round_trips = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    work = work_ms()
    if round_trips <= 0:
        print(f"{work:.1f}")
    else:
        rtt, kernel = loopback_round_trip(round_trips)
        print(f"{work:.1f} {rtt:.1f} {kernel:.1f}")

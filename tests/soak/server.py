"""The server under soak: start iothubd on loopback ports with a temp data
dir, sample its resident memory and open descriptors once a second, read its
log, and stop it with SIGTERM.

Design: the sampler reads /proc/PID/status (VmRSS) and lists /proc/PID/fd
from its own thread; a sample is (seconds since start, rss KiB, fd count).
Descriptors are classified (socket, file, anon inode, pipe) only on demand,
for the baseline and end figures, since readlink on every fd every second
costs more than the count. Only the process started here is ever signalled.
"""

import os
import re
import signal
import socket
import subprocess
import threading
import time

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                     "WARNING: ThreadSanitizer")
LOG_LINE = re.compile(r"^\S+Z (error|warn |info |debug) (.*)$")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def is_asan_binary(path):
    """True when the binary was built with AddressSanitizer (its RSS then
    includes shadow memory and quarantine, so it says nothing about leaks)."""
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()


class Server:
    def __init__(self, binary, workdir, extra_args=()):
        self.binary = binary
        self.extra_args = list(extra_args)
        self.workdir = workdir
        self.data = os.path.join(workdir, "data")
        self.log_path = os.path.join(workdir, "iothubd.log")
        self.port = free_port()
        self.http_port = free_port()
        self.host = "127.0.0.1"
        self.proc = None
        self.samples = []  # (t, rss_kib, fds)
        self._stop_sampling = threading.Event()
        self._sampler = None
        self.t0 = None

    def start(self, timeout=20.0):
        os.makedirs(self.data, exist_ok=True)
        cmd = [self.binary, "--mqtt", "%s:%d" % (self.host, self.port),
               "--http", "%s:%d" % (self.host, self.http_port), "--hostname", "localhost",
               "--data", self.data, "--log-level", "info"] + self.extra_args
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("iothubd exited at start (rc=%s):\n%s"
                                   % (self.proc.returncode, self.log_text()[-3000:]))
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                socket.create_connection((self.host, self.http_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("iothubd did not open its ports within %.0f s" % timeout)
        self.t0 = time.monotonic()
        self._sampler = threading.Thread(target=self._sample_loop, daemon=True)
        self._sampler.start()
        return self

    @property
    def owner_connstr(self):
        with open(os.path.join(self.data, "owner.connstr")) as f:
            return f.read().strip()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # ------------------------------------------------------------ sampling
    def rss_kib(self):
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def fd_count(self):
        try:
            return len(os.listdir("/proc/%d/fd" % self.proc.pid))
        except OSError:
            return None

    def fd_classes(self):
        """{"socket": n, "file": n, "anon_inode": n, "pipe": n} right now."""
        out = {}
        base = "/proc/%d/fd" % self.proc.pid
        try:
            names = os.listdir(base)
        except OSError:
            return out
        for name in names:
            try:
                target = os.readlink(os.path.join(base, name))
            except OSError:
                continue  # closed meanwhile
            kind = ("socket" if target.startswith("socket:") else
                    "pipe" if target.startswith("pipe:") else
                    "anon_inode" if target.startswith("anon_inode:") else "file")
            out[kind] = out.get(kind, 0) + 1
        return out

    def _sample_loop(self):
        while not self._stop_sampling.is_set():
            rss, fds = self.rss_kib(), self.fd_count()
            if rss is not None and fds is not None:
                self.samples.append((time.monotonic() - self.t0, rss, fds))
            self._stop_sampling.wait(1.0)

    def stop_sampling(self):
        self._stop_sampling.set()
        if self._sampler:
            self._sampler.join(5)

    # ------------------------------------------------------------ stopping
    def stop(self, timeout=60.0):
        """SIGTERM; returns (exit code or None if it had to be killed,
        seconds it took). ASan's leak check at exit can take a while, hence
        the generous timeout."""
        self.stop_sampling()
        if self.proc.poll() is not None:
            self._log.close()
            return self.proc.returncode, 0.0
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            rc = None
        self._log.close()
        return rc, time.monotonic() - t

    # ------------------------------------------------------------ the log
    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_summary(self):
        """Lines by level, error and warn lines by message shape (numbers and
        client names folded), and whether a sanitizer reported anything."""
        levels, shapes = {}, {"error": {}, "warn": {}}
        text = self.log_text()
        for line in text.splitlines():
            m = LOG_LINE.match(line)
            if not m:
                continue
            level = m.group(1).strip()
            levels[level] = levels.get(level, 0) + 1
            if level in shapes:
                shape = re.sub(r"\d+", "N", m.group(2))
                shape = re.sub(r"\b(soak|churn|tmp)-[\w.-]+", "<dev>", shape)
                shapes[level][shape] = shapes[level].get(shape, 0) + 1
        sanitizer = [mk for mk in SANITIZER_MARKERS if mk in text]
        return {"lines_by_level": levels, "errors": shapes["error"], "warnings": shapes["warn"],
                "sanitizer": sanitizer}

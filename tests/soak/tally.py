"""Shared bookkeeping of a soak run: what the load did, what it provoked on
purpose, and what went wrong that it did not provoke.

Design: one object, one lock, plain counters. Every worker thread records
into it; the main thread reads it for the report. Three separate books:
  ops         operations that completed as they should, by kind;
  provoked    failures the load caused on purpose (bad credentials, calls to
              an offline device, malformed packets ...), by kind, each one
              checked to fail in exactly the expected way;
  unexpected  everything else that failed (a PUBACK error, a lost response,
              a dropped connection ...), by kind, with the first few details.
A provoked failure that comes out differently from what was expected is
recorded as unexpected, so "the load's own" errors can never hide a bug.
Latencies are kept as a count, sum and maximum per kind (enough to spot a
stall; the bench measures percentiles).
"""

import threading
import time

MAX_DETAILS = 50  # unexpected-error details kept per kind (counts are exact)


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = {}
        self.provoked = {}
        self.unexpected = {}
        self.details = {}
        self.latency = {}  # kind -> [count, sum_s, max_s]
        # C2D: (device, sequence-no) accepted by the service API and delivered
        self.c2d_accepted = set()
        self.c2d_delivered = set()

    def op(self, kind, latency_s=None, n=1):
        with self.lock:
            self.ops[kind] = self.ops.get(kind, 0) + n
            if latency_s is not None:
                c = self.latency.setdefault(kind, [0, 0.0, 0.0])
                c[0] += 1
                c[1] += latency_s
                c[2] = max(c[2], latency_s)

    def provoke(self, kind):
        with self.lock:
            self.provoked[kind] = self.provoked.get(kind, 0) + 1

    def error(self, kind, detail):
        with self.lock:
            self.unexpected[kind] = self.unexpected.get(kind, 0) + 1
            kept = self.details.setdefault(kind, [])
            if len(kept) < MAX_DETAILS:
                kept.append("%.3f %s" % (time.monotonic(), str(detail)[:400]))

    def c2d_accept(self, dev, seq):
        with self.lock:
            self.c2d_accepted.add((dev, seq))

    def c2d_deliver(self, dev, seq):
        """Returns False if this command was delivered before (a redelivery
        after completion: the caller reports it)."""
        with self.lock:
            if (dev, seq) in self.c2d_delivered:
                return False
            self.c2d_delivered.add((dev, seq))
            return True

    def c2d_missing(self):
        with self.lock:
            return sorted(self.c2d_accepted - self.c2d_delivered)

    def snapshot(self):
        """A copy of the books for the report."""
        with self.lock:
            lat = {k: {"count": c, "mean_ms": round(1000 * s / c, 2) if c else 0,
                       "max_ms": round(1000 * m, 2)} for k, (c, s, m) in self.latency.items()}
            return {"ops": dict(sorted(self.ops.items())),
                    "provoked": dict(sorted(self.provoked.items())),
                    "unexpected": dict(sorted(self.unexpected.items())),
                    "unexpected_details": {k: list(v) for k, v in sorted(self.details.items())},
                    "latency": dict(sorted(lat.items())),
                    "c2d_accepted": len(self.c2d_accepted),
                    "c2d_delivered": len(self.c2d_delivered)}


class Pacer:
    """A fixed rate that does not drift and does not burst: the next slot is
    one period after the previous one, or now if the worker fell behind
    (a loaded machine slows the load down rather than bunching it up)."""

    def __init__(self, per_s):
        self.period = 1.0 / per_s
        self.next = time.monotonic()

    def wait(self, stop):
        """Sleep until the next slot; False if `stop` (an Event) was set."""
        now = time.monotonic()
        self.next = max(self.next + self.period, now)
        return not stop.wait(max(0.0, self.next - now))

"""The soak verdict: the pass/fail checks over what a run recorded, and the
report (text on stdout, JSON in build/soak/report.json).

Design: each check is (name, ok, detail) with ok True, False or None
(skipped, e.g. the RSS bound on an ASan build); the run fails if any check
is False. The checks only read the run's record (`r`, a dict built by
soak.py), so they can be read and reasoned about in one place.
"""

import json
import os

PROVOKED_KINDS = ("bad_signature_0x87", "expired_sas_0x87", "unknown_device_0x87",
                  "takeover_0x8E", "malformed_0x81", "method_offline_404",
                  "c2d_unknown_device_404", "deleted_while_connected_0x87", "http_bad_token_401")


def checks(r, min_volume, fd_slack):
    out = []
    add = lambda name, ok, detail="": out.append((name, ok, detail))  # noqa: E731
    t = r["tally"]
    add("server alive through the load", r["alive_after_load"],
        "" if r["alive_after_load"] else "iothubd died during the run")
    unexpected = sum(t["unexpected"].values())
    add("no unexpected errors", unexpected == 0,
        "%d: %s" % (unexpected, t["unexpected"]) if unexpected else "")
    missing = t["c2d_accepted"] - t["c2d_delivered"]
    add("every accepted C2D command delivered once and completed",
        missing == 0 and "c2d_left_queued" not in t["unexpected"]
        and "c2d_redelivered" not in t["unexpected"],
        "%d accepted, %d delivered" % (t["c2d_accepted"], t["c2d_delivered"]))
    add("every method call answered", not any(k in t["unexpected"] for k in
                                               ("method_call", "method_offline")),
        "%d answered" % t["ops"].get("method_call", 0))
    add("every desired patch reached its device", "desired_missed" not in t["unexpected"])
    low = {k: (t["ops"].get(k, 0), int(v)) for k, v in r["expected"].items()
           if t["ops"].get(k, 0) < max(1, min_volume * v)}
    add("load volume >= %d%% of the plan per kind" % (min_volume * 100), not low,
        "low (done, planned): %s" % low if low else "")
    absent = [k for k in PROVOKED_KINDS if not t["provoked"].get(k)]
    add("every provoked failure happened and failed as specified", not absent,
        "never ran: %s" % absent if absent else "")
    rss = r["rss"]
    detail = "baseline %.1f MiB, end %.1f MiB, growth %+.1f MiB, bound %.1f MiB" % (
        rss["baseline_kib"] / 1024, rss["end_kib"] / 1024, rss["growth_kib"] / 1024,
        rss["bound_kib"] / 1024)
    if r["asan"]:
        add("RSS growth within bound", None, "skipped: ASan build (" + detail + ")")
    else:
        add("RSS growth within bound", rss["growth_kib"] <= rss["bound_kib"], detail)
    fds = r["fds"]
    add("descriptors back to idle + %d after the clients left" % fd_slack,
        fds["end"] is not None and fds["end"] <= fds["idle"] + fd_slack,
        "idle %s, peak %s, end %s (end %s)" % (fds["idle"], fds["peak"], fds["end"],
                                               fds["end_classes"]))
    add("clean exit 0 on SIGTERM", r["exit_code"] == 0,
        "rc %s after %.1f s" % (r["exit_code"], r["exit_s"]))
    log = r["log"]
    # Every warn-level line in the server marks a fault on its side (a store
    # write failed, out of memory, a 5xx answer, accept failing ...); the
    # load provokes none of them (its refusals are logged at info), so a
    # warning fails the run like an error.
    bad = dict(log["errors"], **log["warnings"])
    add("no error- or warn-level log lines", not bad, "%s" % bad if bad else "")
    add("no sanitizer report (incl. leaks at exit)", not log["sanitizer"],
        "%s" % log["sanitizer"] if log["sanitizer"] else "")
    return out


def mib(kib):
    return "%.1f MiB" % (kib / 1024) if kib is not None else "-"


def render(r, results):
    """The text report."""
    t = r["tally"]
    lines = ["soak: %s%s, load %.0f s (asked %s s), seed %s" % (
        r["binary"], " (ASan)" if r["asan"] else "", r["load_s"], r["duration"], r["seed"])]
    lines.append("operations:")
    for k, v in t["ops"].items():
        lat = t["latency"].get(k)
        lines.append("  %-28s %8d%s" % (k, v, "   mean %.1f ms, max %.1f ms"
                                         % (lat["mean_ms"], lat["max_ms"]) if lat else ""))
    lines.append("provoked failures (expected, each checked):")
    for k, v in t["provoked"].items():
        lines.append("  %-28s %8d" % (k, v))
    lines.append("unexpected errors: %s" % (t["unexpected"] or "none"))
    for k, v in t["unexpected_details"].items():
        for d in v[:5]:
            lines.append("  %s: %s" % (k, d))
    rss = r["rss"]
    lines.append("RSS: start %s, post-warm-up baseline %s, peak %s, end %s, after clients %s; "
                 "slope after warm-up %+.0f KiB/min" % (
                     mib(rss["start_kib"]), mib(rss["baseline_kib"]), mib(rss["peak_kib"]),
                     mib(rss["end_kib"]), mib(rss["after_clients_kib"]),
                     rss["post_warmup_slope_kib_per_min"]))
    fds = r["fds"]
    lines.append("fds: idle %s %s, peak %s, end %s %s" % (
        fds["idle"], fds["idle_classes"], fds["peak"], fds["end"], fds["end_classes"]))
    lines.append("server log lines: %s; warnings: %s" % (
        r["log"]["lines_by_level"], r["log"]["warnings"] or "none"))
    lines.append("server exit: rc %s after %.1f s" % (r["exit_code"], r["exit_s"]))
    for name, ok, detail in results:
        tag = "SKIP" if ok is None else "PASS" if ok else "FAIL"
        lines.append("%s  %s%s" % (tag, name, ("  (" + detail + ")") if detail else ""))
    passed = sum(1 for _, ok, _ in results if ok is True)
    failed = sum(1 for _, ok, _ in results if ok is False)
    skipped = sum(1 for _, ok, _ in results if ok is None)
    if skipped:
        lines.append("(%d skipped)" % skipped)
    lines.append("%d passed, %d failed" % (passed, failed))
    return "\n".join(lines), failed


def write_json(path, r, results):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    doc = dict(r)
    doc["checks"] = [{"name": n, "result": "skip" if ok is None else "pass" if ok else "fail",
                      "detail": d} for n, ok, d in results]
    doc["passed"] = sum(1 for _, ok, _ in results if ok is True)
    doc["failed"] = sum(1 for _, ok, _ in results if ok is False)
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)

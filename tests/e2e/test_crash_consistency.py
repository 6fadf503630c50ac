"""The short version of the crash-consistency run (issue 7; the long one is
`make test-crash`, tests/crash/run_crash.py, which says what is checked):
a few SIGKILL rounds under mixed load, each followed by a restart and the
full check of telemetry, twins, commands, registry and store integrity.
Fewer rounds under the ASan build, which is several times slower."""

import os
import sys

import pytest

from conftest import IOTHUBD_BIN
from e2e_util import TARGET

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "crash"))

import run_crash  # noqa: E402

ROUNDS = 2 if "asan" in IOTHUBD_BIN else 3


@pytest.mark.skipif(TARGET != "iothubd", reason="iothubd only")
def test_sigkill_rounds_lose_nothing_acknowledged():
    lines = []
    passed, failed, figures = run_crash.run(ROUNDS, out=lines.append, devices=3,
                                            kill_after=(0.3, 1.5))
    report = "\n".join(lines)
    assert failed == 0 and passed == ROUNDS, report
    assert figures["kills"] == ROUNDS, report
    # enough happened to mean something
    assert figures["telemetry acked"] > 50 and figures["commands accepted"] > 5, report
    assert figures["reported acked"] > 5 and figures["desired acked"] > 5, report

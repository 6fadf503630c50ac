"""iothubd's own command line: a bad option value stops the server before it
binds or opens anything, with exit status 2 and one line naming the option."""

import subprocess
import tempfile

import pytest

from conftest import IOTHUBD_BIN
from e2e_util import iothubd_only

pytestmark = iothubd_only

BAD = [
    (["--telemetry-partitions", "0"], "--telemetry-partitions must be between 1 and 128"),
    (["--telemetry-partitions", "129"], "--telemetry-partitions must be between 1 and 128"),
    (["--telemetry-partitions", "abc"], "--telemetry-partitions: invalid value 'abc'"),
    (["--receive-maximum", "0"], "--receive-maximum must be at least 1"),
    (["--max-packet-size", "100"], "--max-packet-size must be at least 128"),
    (["--mqtts", "127.0.0.1:0"], "--mqtts needs --cert and --key"),
    (["--no-such-option"], "--no-such-option"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_option_exits_2_with_one_clear_line(args, message):
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([IOTHUBD_BIN, "--data", d + "/data", "--mqtt", "127.0.0.1:0",
                            "--http", "127.0.0.1:0"] + args,
                           capture_output=True, text=True, timeout=10)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_highest_partition_count_starts():
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.Popen([IOTHUBD_BIN, "--data", d + "/data", "--mqtt", "127.0.0.1:0",
                              "--http", "127.0.0.1:0", "--telemetry-partitions", "128"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                p.wait(timeout=1.5)  # still serving
        finally:
            p.terminate()
            out, err = p.communicate(timeout=10)
        assert p.returncode == 0, err

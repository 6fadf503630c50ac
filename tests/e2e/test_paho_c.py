"""Interoperability with the Eclipse Paho C client (MQTT 5, synchronous API).

tests/interop/paho_c_client.c is compiled here with `cc -Wall -Wextra -Werror`
(once per session, into a temp dir) and run against the broker under test in
each of its modes; it exits 0 when every check holds and says what went
wrong otherwise. Skipped only when the Paho C headers are not installed."""

import os
import shutil
import subprocess
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(os.path.dirname(HERE), "interop", "paho_c_client.c")
CC = os.environ.get("CC", "cc")
RUN_TIMEOUT_S = 30


def _paho_header_present():
    """True if the compiler finds <MQTTClient.h>."""
    probe = subprocess.run([CC, "-E", "-x", "c", "-"], input=b"#include <MQTTClient.h>\n",
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def paho_c_client():
    """Path of the compiled client."""
    if shutil.which(CC) is None:
        pytest.skip("no C compiler (%s) to build the Paho C client" % CC)
    if not _paho_header_present():
        pytest.skip("MQTTClient.h not found: install libpaho-mqtt-dev for the Paho C interop test")
    outdir = tempfile.mkdtemp(prefix="iothubd-paho-c-")
    binary = os.path.join(outdir, "paho_c_client")
    build = subprocess.run([CC, "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror",
                            SOURCE, "-lpaho-mqtt3c", "-o", binary],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert build.returncode == 0, "compiling %s failed:\n%s" % (
        SOURCE, build.stdout.decode("utf-8", "replace"))
    yield binary
    shutil.rmtree(outdir, ignore_errors=True)


@pytest.mark.parametrize("mode", ["pubsub", "will", "retained"])
def test_paho_c(broker, paho_c_client, mode):
    r = subprocess.run([paho_c_client, broker.host, str(broker.port), mode],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, "paho_c_client %s failed (exit %d):\n%s" % (mode, r.returncode, out)
    assert "paho_c_client %s: ok" % mode in out

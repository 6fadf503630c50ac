"""pytest fixtures: start the broker under test (iothubd or mosquitto) on a
free loopback port in a temp dir, stop it afterwards and check it ended
cleanly (no crash, no sanitizer report).

Env:
  IOTHUBD_TEST_TARGET  iothubd (default) | mosquitto
  IOTHUBD_BIN          path of the iothubd binary (default: <repo>/build/iothubd)
  MOSQUITTO_BIN        path of mosquitto (default: /usr/sbin/mosquitto)
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from e2e_util import TARGET  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IOTHUBD_BIN = os.path.abspath(os.environ.get("IOTHUBD_BIN", os.path.join(REPO, "build", "iothubd")))
MOSQUITTO_BIN = os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto")
PER_TEST_TIMEOUT = int(os.environ.get("IOTHUBD_TEST_TIMEOUT", "60"))
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                     "WARNING: ThreadSanitizer")


_HANDED_OUT = set()


def free_port():
    """A loopback port free right now and never handed out before by this
    process: two calls in a row may otherwise get the same port from the
    kernel (a broker's MQTT and HTTP listeners would then collide)."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


_HELP = None


def iothubd_supports(flag):
    """True if `iothubd --help` lists `flag` (optional tuning flags only)."""
    global _HELP
    if _HELP is None:
        try:
            r = subprocess.run([IOTHUBD_BIN, "--help"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=10)
            _HELP = r.stdout.decode("utf-8", "replace")
        except (OSError, subprocess.TimeoutExpired):
            _HELP = ""
    return flag in _HELP


class Broker:
    """A running broker.  Attributes: host, port, target, dir, stderr_path."""

    def __init__(self, workdir, max_keepalive=None, max_packet_size=None, receive_maximum=None,
                 topic_alias_maximum=None, max_queued_messages=None, acl=None, passwords=None,
                 session_expiry_check_ms=None, extra_args=(), extra_mosquitto_conf="",
                 http=False, data_dir=None):
        self.target = "iothubd" if http else TARGET
        self.http_port = free_port() if http else None
        self.host = "127.0.0.1"
        self.port = free_port()
        self.dir = workdir
        self.stderr_path = os.path.join(workdir, "broker.stderr")
        self.stdout_path = os.path.join(workdir, "broker.stdout")
        acl_path = pw_path = None
        if acl is not None:
            acl_path = os.path.join(workdir, "acl")
            with open(acl_path, "w") as f:
                f.write(acl)
        if passwords is not None:
            pw_path = os.path.join(workdir, "passwd")
            with open(pw_path, "w") as f:
                for user, pw in passwords.items():
                    f.write("%s:%s\n" % (user, pw))
        if self.target == "mosquitto":
            if pw_path:
                subprocess.run(["mosquitto_passwd", "-U", pw_path], check=True, timeout=20,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            conf = [
                "per_listener_settings false",
                "listener %d 127.0.0.1" % self.port,
                "allow_anonymous true",
                "persistence false",
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "log_type notice",
                "log_type information",
                "set_tcp_nodelay true",
                "user root",
            ]
            if max_keepalive is not None:
                conf.append("max_keepalive %d" % max_keepalive)
            if max_packet_size is not None:
                conf.append("max_packet_size %d" % max_packet_size)
            if receive_maximum is not None:
                # mosquitto advertises max_inflight_messages as its Receive Maximum
                conf.append("max_inflight_messages %d" % receive_maximum)
            if topic_alias_maximum is not None:
                conf.append("max_topic_alias %d" % topic_alias_maximum)
            if max_queued_messages is not None:
                conf.append("max_queued_messages %d" % max_queued_messages)
            if acl_path:
                conf.append("acl_file %s" % acl_path)
            if pw_path:
                conf.append("password_file %s" % pw_path)
            conf.append(extra_mosquitto_conf)
            conf_path = os.path.join(workdir, "mosquitto.conf")
            with open(conf_path, "w") as f:
                f.write("\n".join(conf) + "\n")
            self.cmd = [MOSQUITTO_BIN, "-c", conf_path]
        else:
            if not os.path.exists(IOTHUBD_BIN):
                pytest.fail("iothubd binary not found at %s (build it or set IOTHUBD_BIN; "
                            "or run with IOTHUBD_TEST_TARGET=mosquitto)" % IOTHUBD_BIN)
            data = data_dir or os.path.join(workdir, "data")
            self.data = data
            os.makedirs(data, exist_ok=True)
            cmd = [IOTHUBD_BIN, "--mqtt", "127.0.0.1:%d" % self.port, "--open-topics",
                   "--allow-anonymous", "--data", data, "--log-level", "info"]
            if max_keepalive is not None:
                cmd += ["--max-keepalive", str(max_keepalive)]
            if max_packet_size is not None:
                cmd += ["--max-packet-size", str(max_packet_size)]
            if receive_maximum is not None:
                cmd += ["--receive-maximum", str(receive_maximum)]
            if topic_alias_maximum is not None:
                cmd += ["--topic-alias-maximum", str(topic_alias_maximum)]
            if max_queued_messages is not None:
                cmd += ["--max-queued-messages", str(max_queued_messages)]
            if acl_path:
                cmd += ["--acl-file", acl_path]
            if pw_path:
                cmd += ["--password-file", pw_path]
            if session_expiry_check_ms is not None and iothubd_supports("--session-expiry-check-ms"):
                cmd += ["--session-expiry-check-ms", str(session_expiry_check_ms)]
            if http:
                cmd += ["--http", "127.0.0.1:%d" % self.http_port, "--hostname", "localhost"]
            cmd += list(extra_args)
            self.cmd = cmd
        self.proc = None

    def start(self, timeout=10.0):
        """Start the broker and wait for its ports.  A free_port() can be
        taken by another process between the probe and the bind (two suites
        run at once in `make test`): then retry on fresh ports, twice."""
        for attempt in range(3):
            try:
                return self._start_once(timeout)
            except RuntimeError as e:
                if attempt == 2 or "Address already in use" not in str(e) or self.restarted():
                    raise
                self._take_new_ports()

    def restarted(self):
        """True for a broker restarted on its old port (crash tests): its
        clients expect that port, so a collision there is a real failure."""
        return getattr(self, "_started_once", False)

    def _take_new_ports(self):
        """Move the listeners to fresh free ports (iothubd: rewrite argv)."""
        if self.target == "mosquitto":
            raise RuntimeError("port collision on mosquitto's generated config")
        renames = {}
        old, self.port = self.port, free_port()
        renames["127.0.0.1:%d" % old] = "127.0.0.1:%d" % self.port
        if self.http_port:
            old, self.http_port = self.http_port, free_port()
            renames["127.0.0.1:%d" % old] = "127.0.0.1:%d" % self.http_port
        self.cmd = [renames.get(a, a) for a in self.cmd]

    def _start_once(self, timeout):
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        self.proc = subprocess.Popen(self.cmd, stdout=self._out, stderr=self._err, cwd=self.dir,
                                     env=env, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("broker exited early (rc=%s): %s\n%s" % (
                    self.proc.returncode, " ".join(self.cmd), self.stderr_text()))
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                if self.http_port:
                    socket.create_connection((self.host, self.http_port), timeout=0.5).close()
                self._started_once = True
                return self
            except OSError:
                time.sleep(0.02)
        self.proc.kill()
        raise RuntimeError("broker did not open port %d within %ss: %s" % (
            self.port, timeout, self.stderr_text()))

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.http_port

    @property
    def owner_connstr(self):
        with open(os.path.join(self.data, "owner.connstr")) as f:
            return f.read().strip()

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """Stop the broker; return a list of problems (empty when clean)."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is not None:
            problems.append("broker died during the test (rc=%s)" % self.proc.returncode)
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                problems.append("broker did not exit within 10 s of SIGTERM")
            rc = self.proc.returncode
            # iothubd must shut down cleanly on SIGTERM and exit 0
            # (../shared/spec/cli.md); Mosquitto may die of the signal.
            clean = (0,) if self.target == "iothubd" else (0, -signal.SIGTERM)
            if rc not in clean and not problems:
                problems.append("broker exited abnormally on SIGTERM (rc=%s)" % rc)
        self._err.close()
        self._out.close()
        err = self.stderr_text()
        if self.target == "iothubd":
            for marker in SANITIZER_MARKERS:
                if marker in err:
                    problems.append("sanitizer report on broker stderr (%r)" % marker)
                    break
        if problems:
            problems.append("--- broker stderr (tail) ---\n" + err[-6000:])
        self.proc = None
        return problems


@pytest.fixture
def broker_factory():
    """Call with options (see Broker) to start a broker; all are stopped and
    checked at teardown."""
    brokers = []
    tmpdirs = []

    def make(**opts):
        d = tempfile.TemporaryDirectory(prefix="iothubd-e2e-")
        tmpdirs.append(d)
        b = Broker(d.name, **opts)
        b.start()
        brokers.append(b)
        return b

    yield make
    problems = []
    for b in brokers:
        problems += b.stop()
    for d in tmpdirs:
        d.cleanup()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def hub(broker_factory):
    """iothubd with the service API on a free port and its own data dir
    (always iothubd: the service API has no Mosquitto counterpart)."""
    if not iothubd_supports("--http"):
        pytest.skip("iothubd has no service API")
    return broker_factory(http=True)


@pytest.fixture
def broker(broker_factory):
    """A broker with default options."""
    return broker_factory()


@pytest.fixture(autouse=True)
def _per_test_timeout():
    """Hard bound on every test (SIGALRM) so nothing can hang the suite."""
    def on_alarm(signum, frame):
        raise TimeoutError("test exceeded %d s" % PER_TEST_TIMEOUT)
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(PER_TEST_TIMEOUT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)

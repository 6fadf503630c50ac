"""End-to-end tests of the `iothub` command line (build/iothub, or the
`iothub` next to $IOTHUBD_BIN, or $IOTHUB_CLI_BIN) against a running iothubd
with its service API (../shared/spec/cli.md, service-rest.md,
iothub-mqtt5.md sections 1 and 7).

Every command is run as a subprocess in a clean environment (HOME in a temp
dir, no IOTHUB_* variables) so the developer's own config never leaks in.
Results are checked in both output modes: tables by their header and rows,
--json with json.loads. Failures must exit non-zero with exactly one line
on stderr naming the server's ErrorCode. Tokens are checked against HMACs
computed here, independently of the tool, and service tokens are also
proved by using them against the service.

The tests that need the service skip, with the reason, while iothubd has no
--http flag or writes no DIR/owner.connstr; the ones that need no server
(help, usage errors, offline tokens, connection refused) always run.
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import subprocess
import tempfile
import urllib.parse

import pytest

from conftest import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IOTHUBD_BIN = os.path.abspath(os.environ.get("IOTHUBD_BIN", os.path.join(REPO, "build", "iothubd")))
CLI_BIN = os.path.abspath(os.environ.get(
    "IOTHUB_CLI_BIN", os.path.join(os.path.dirname(IOTHUBD_BIN), "iothub")))
KEY_A = base64.b64encode(b"A" * 32).decode()
KEY_B = base64.b64encode(b"B" * 32).decode()


# ------------------------------------------------------------ helpers
def clean_env(home, extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTHUB_")}
    env.pop("XDG_CONFIG_HOME", None)
    env["HOME"] = home
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    env.update(extra or {})
    return env


def run_cli(args, env, expect=0):
    """Runs the tool; checks the exit status and the stderr contract."""
    if not os.path.exists(CLI_BIN):
        pytest.fail("iothub binary not found at %s (make, or set IOTHUB_CLI_BIN)" % CLI_BIN)
    r = subprocess.run([CLI_BIN] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, timeout=30)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert r.returncode == expect, "iothub %s: rc=%d\nstdout: %s\nstderr: %s" % (
        " ".join(args), r.returncode, out, err)
    if expect != 0:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("iothub: "), err
    assert "Sanitizer" not in err and "runtime error" not in err, err
    return out, err


def classic_sig(resource, key_b64, se):
    """The sig of a classic token, URL-encoded, computed independently."""
    sr = urllib.parse.quote(resource, safe="")
    mac = hmac.new(base64.b64decode(key_b64), ("%s\n%d" % (sr, se)).encode(), hashlib.sha256)
    return sr, urllib.parse.quote(base64.b64encode(mac.digest()).decode(), safe="")


def token_fields(token):
    assert token.startswith("SharedAccessSignature "), token
    return dict(kv.split("=", 1) for kv in token[len("SharedAccessSignature "):].split("&"))


def table(out):
    """Header and rows of an aligned table (columns split on 2+ spaces)."""
    lines = [l for l in out.splitlines() if l.strip()]
    split = [[c for c in l.split("  ") if c.strip() != ""] for l in lines]
    return [[c.strip() for c in row] for row in split]


class Cli:
    """The tool pointed at one hub: --url and --data on every call."""

    def __init__(self, hub, home):
        self.hub = hub
        self.home = home
        self.env = clean_env(home)
        self.base = ["--url", hub.url, "--data", hub.data]
        with open(os.path.join(hub.data, "owner.connstr")) as f:
            self.connstr = f.read().strip()
        self.hostname = dict(p.split("=", 1) for p in self.connstr.split(";"))["HostName"]

    def __call__(self, *args, expect=0, env=None):
        return run_cli(self.base + list(args), env or self.env, expect)

    def json(self, *args):
        out, _ = self(*args, "--json")
        return json.loads(out)

    def error(self, *args, expect=1):
        _, err = self(*args, expect=expect)
        return err.strip()


@pytest.fixture
def home():
    with tempfile.TemporaryDirectory(prefix="iothub-cli-home-") as d:
        yield d


@pytest.fixture
def cli(hub, home):
    if not os.path.exists(os.path.join(hub.data, "owner.connstr")):
        pytest.skip("iothubd started with --http but wrote no DIR/owner.connstr "
                    "(service API not wired into the server yet)")
    return Cli(hub, home)


# ------------------------------------------------------------ no server needed
def test_help_on_every_level(home):
    env = clean_env(home)
    for args in (["--help"], ["device", "--help"], ["device", "create", "--help"],
                 ["device", "list", "-h"], ["sas-token", "--help"], ["policy", "--help"],
                 ["policy", "list", "--help"]):
        out, _ = run_cli(args, env)
        assert out.startswith("Usage: iothub"), (args, out)
    out, _ = run_cli(["device", "create", "--help"], env)
    for flag in ("--module", "--primary-key", "--x509", "--primary-thumbprint", "--disabled",
                 "--json", "--url", "--connection-string", "--data"):
        assert flag in out


def test_usage_errors_exit_2_with_one_line(home):
    env = clean_env(home)
    assert "unknown command" in run_cli(["frobnicate"], env, expect=2)[1]
    assert "needs a command" in run_cli(["device"], env, expect=2)[1]
    assert "missing arguments" in run_cli(["device", "show"], env, expect=2)[1]
    assert "unknown option" in run_cli(["device", "list", "--bogus"], env, expect=2)[1]
    assert "needs a value" in run_cli(["device", "show", "x", "--module"], env, expect=2)[1]
    assert "--device" in run_cli(["sas-token"], env, expect=2)[1]


def test_missing_configuration_is_one_line(home):
    _, err = run_cli(["device", "list"], clean_env(home), expect=1)
    assert "no service URL" in err


def test_connection_refused_names_the_url(home):
    url = "http://127.0.0.1:%d" % free_port()
    connstr = "HostName=h;SharedAccessKeyName=iothubowner;SharedAccessKey=" + KEY_A
    _, err = run_cli(["--url", url, "--connection-string", connstr, "device", "list"],
                     clean_env(home), expect=1)
    assert url in err


def test_offline_device_token_matches_independent_hmac(home):
    out, _ = run_cli(["sas-token", "--device", "dev+1", "--module", "m1", "--key-value", KEY_A,
                      "--hostname", "hub.example", "--duration", "120", "--json"], clean_env(home))
    doc = json.loads(out)
    f = token_fields(doc["token"])
    se = int(f["se"])
    sr, sig = classic_sig("hub.example/devices/dev+1/modules/m1", KEY_A, se)
    assert f["sr"] == sr and f["sig"] == sig and "skn" not in f
    m = doc["mqtt5"]
    props = m["userProperties"]
    assert m["clientId"] == "dev+1/m1" and m["authenticationMethod"] == "SAS"
    assert props["host"] == "hub.example" and props["api-version"] == "2020-10-01-preview"
    at, exp = int(props["sas-at"]), int(props["sas-expiry"])
    assert exp - at == 120 * 1000 and se == exp // 1000
    msg = "hub.example\ndev+1/m1\n\n%s\n%s\n" % (props["sas-at"], props["sas-expiry"])
    want = hmac.new(base64.b64decode(KEY_A), msg.encode(), hashlib.sha256).digest()
    assert base64.b64decode(m["authenticationData"]) == want
    # The table form: the token alone on the first line, then the CONNECT fields.
    out, _ = run_cli(["sas-token", "--device", "d", "--key-value", KEY_A, "--hostname", "h"],
                     clean_env(home))
    first, rest = out.split("\n", 1)
    assert first.startswith("SharedAccessSignature sr=h%2Fdevices%2Fd&sig=")
    for label in ("Authentication Method", "sas-at", "sas-expiry", "api-version",
                  "Authentication Data"):
        assert label in rest


def test_bad_key_value_is_an_error(home):
    _, err = run_cli(["sas-token", "--device", "d", "--key-value", "not*base64", "--hostname",
                      "h"], clean_env(home), expect=1)
    assert "base64" in err


# ------------------------------------------------------------ devices
def test_device_create_show_list_delete(cli):
    created = cli.json("device", "create", "cli-dev-1")
    assert created["deviceId"] == "cli-dev-1" and created["status"] == "enabled"
    assert created["authentication"]["type"] == "sas"
    keys = created["authentication"]["symmetricKey"]
    assert len(base64.b64decode(keys["primaryKey"])) == 32

    out, _ = cli("device", "show", "cli-dev-1")
    rows = {r[0]: r[1:] for r in table(out)}
    assert rows["Device ID"] == ["cli-dev-1"]
    assert rows["Status"] == ["enabled"]
    assert rows["Authentication"] == ["sas"]
    assert rows["Primary key"] == [keys["primaryKey"]]
    assert cli.json("device", "show", "cli-dev-1")["etag"] == created["etag"]

    cli("device", "create", "cli-dev-2")
    out, _ = cli("device", "list")
    t = table(out)
    assert t[0] == ["DEVICE ID", "STATUS", "CONNECTION", "AUTH", "LAST ACTIVITY"]
    ids = [r[0] for r in t[1:]]
    assert "cli-dev-1" in ids and "cli-dev-2" in ids
    row = [r for r in t[1:] if r[0] == "cli-dev-1"][0]
    assert row[1:4] == ["enabled", "Disconnected", "sas"]
    listed = cli.json("device", "list")
    assert {d["deviceId"] for d in listed} >= {"cli-dev-1", "cli-dev-2"}

    out, _ = cli("device", "delete", "cli-dev-1")
    assert "cli-dev-1" in out
    assert cli.json("device", "delete", "cli-dev-2") == {
        "deviceId": "cli-dev-2", "moduleId": None, "deleted": True}
    assert "DeviceNotFound" in cli.error("device", "show", "cli-dev-1")


def test_show_missing_device_is_device_not_found(cli):
    err = cli.error("device", "show", "no-such-device")
    assert "DeviceNotFound" in err and "404" in err
    assert "DeviceNotFound" in cli.error("device", "show", "no-such-device", "--json")
    assert "DeviceNotFound" in cli.error("device", "delete", "no-such-device")


def test_create_existing_is_device_already_exists(cli):
    cli("device", "create", "cli-dup")
    assert "DeviceAlreadyExists" in cli.error("device", "create", "cli-dup")


def test_given_keys_and_connection_strings(cli):
    d = cli.json("device", "create", "cli-keys", "--primary-key", KEY_A, "--secondary-key", KEY_B)
    assert d["authentication"]["symmetricKey"] == {"primaryKey": KEY_A, "secondaryKey": KEY_B}
    out, _ = cli("device", "connection-string", "cli-keys")
    assert out.strip() == "HostName=%s;DeviceId=cli-keys;SharedAccessKey=%s" % (cli.hostname, KEY_A)
    doc = cli.json("device", "connection-string", "cli-keys", "--key", "secondary")
    assert doc == {"connectionString": "HostName=%s;DeviceId=cli-keys;SharedAccessKey=%s"
                   % (cli.hostname, KEY_B)}
    cli("device", "connection-string", "cli-keys", "--key", "tertiary", expect=2)


def test_x509_device(cli):
    thumb, thumb2 = "A" * 40, "B" * 64
    d = cli.json("device", "create", "cli-x509", "--x509", "--primary-thumbprint", thumb,
                 "--secondary-thumbprint", thumb2)
    assert d["authentication"]["type"] == "selfSigned"
    assert d["authentication"]["x509Thumbprint"] == {"primaryThumbprint": thumb,
                                                     "secondaryThumbprint": thumb2}
    out, _ = cli("device", "connection-string", "cli-x509")
    assert out.strip() == "HostName=%s;DeviceId=cli-x509;x509=true" % cli.hostname
    cli("device", "create", "cli-x509b", "--x509", expect=2)  # no thumbprint
    cli("device", "create", "cli-x509c", "--x509", "--primary-thumbprint", thumb,
        "--primary-key", KEY_A, expect=2)


def test_disable_and_enable(cli):
    assert cli.json("device", "create", "cli-st", "--disabled")["status"] == "disabled"
    assert cli.json("device", "enable", "cli-st")["status"] == "enabled"
    d = cli.json("device", "disable", "cli-st", "--reason", "maintenance")
    assert d["status"] == "disabled" and d["statusReason"] == "maintenance"
    out, _ = cli("device", "enable", "cli-st")
    assert ["Status", "enabled"] in table(out)
    assert "DeviceNotFound" in cli.error("device", "enable", "cli-missing")


def test_delete_with_etag(cli):
    etag = cli.json("device", "create", "cli-etag")["etag"]
    assert "PreconditionFailed" in cli.error("device", "delete", "cli-etag", "--etag", "stale")
    cli("device", "delete", "cli-etag", "--etag", etag)
    assert "DeviceNotFound" in cli.error("device", "show", "cli-etag")


def test_modules(cli):
    cli("device", "create", "cli-mod-dev")
    m = cli.json("device", "create", "cli-mod-dev", "--module", "mod1", "--primary-key", KEY_A,
                 "--secondary-key", KEY_B)
    assert m["deviceId"] == "cli-mod-dev" and m["moduleId"] == "mod1"
    out, _ = cli("device", "show", "cli-mod-dev", "--module", "mod1")
    assert ["Module ID", "mod1"] in table(out)
    out, _ = cli("device", "connection-string", "cli-mod-dev", "--module", "mod1")
    assert out.strip() == "HostName=%s;DeviceId=cli-mod-dev;ModuleId=mod1;SharedAccessKey=%s" % (
        cli.hostname, KEY_A)
    cli("device", "delete", "cli-mod-dev", "--module", "mod1")
    assert "DeviceNotFound" in cli.error("device", "show", "cli-mod-dev", "--module", "mod1")


def test_list_top_and_percent_encoded_ids(cli):
    for name in ("cli-top-a", "cli-top-b", "cli-top-c", "odd#id?x=1"):
        cli("device", "create", name)
    assert len(cli.json("device", "list", "--top", "2")) == 2
    assert cli.json("device", "show", "odd#id?x=1")["deviceId"] == "odd#id?x=1"
    cli("device", "list", "--top", "zero", expect=2)


# ------------------------------------------------------------ tokens and policies
def test_device_sas_token_uses_the_device_key(cli):
    cli("device", "create", "cli-tok", "--primary-key", KEY_A, "--secondary-key", KEY_B)
    doc = cli.json("sas-token", "--device", "cli-tok", "--duration", "600")
    f = token_fields(doc["token"])
    sr, sig = classic_sig("%s/devices/cli-tok" % cli.hostname, KEY_A, int(f["se"]))
    assert f["sr"] == sr and f["sig"] == sig
    props = doc["mqtt5"]["userProperties"]
    assert int(props["sas-expiry"]) - int(props["sas-at"]) == 600 * 1000
    msg = "%s\ncli-tok\n\n%s\n%s\n" % (cli.hostname, props["sas-at"], props["sas-expiry"])
    want = hmac.new(base64.b64decode(KEY_A), msg.encode(), hashlib.sha256).digest()
    assert base64.b64decode(doc["mqtt5"]["authenticationData"]) == want
    f2 = token_fields(cli.json("sas-token", "--device", "cli-tok", "--key", "secondary")["token"])
    assert f2["sig"] == classic_sig("%s/devices/cli-tok" % cli.hostname, KEY_B, int(f2["se"]))[1]
    assert "DeviceNotFound" in cli.error("sas-token", "--device", "cli-none")
    # Signed with a policy key instead: skn and sas-policy name the policy.
    owner_key = dict(p.split("=", 1) for p in cli.connstr.split(";"))["SharedAccessKey"]
    doc = cli.json("sas-token", "--device", "cli-tok", "--policy", "iothubowner")
    f = token_fields(doc["token"])
    assert f["skn"] == "iothubowner"
    assert f["sig"] == classic_sig("%s/devices/cli-tok" % cli.hostname, owner_key, int(f["se"]))[1]
    props = doc["mqtt5"]["userProperties"]
    assert props["sas-policy"] == "iothubowner"
    msg = "%s\ncli-tok\niothubowner\n%s\n%s\n" % (cli.hostname, props["sas-at"],
                                                    props["sas-expiry"])
    want = hmac.new(base64.b64decode(owner_key), msg.encode(), hashlib.sha256).digest()
    assert base64.b64decode(doc["mqtt5"]["authenticationData"]) == want


def service_status(cli, token, path="/devices"):
    conn = http.client.HTTPConnection("127.0.0.1", cli.hub.http_port, timeout=10)
    conn.request("GET", path + "?api-version=2021-04-12", headers={"Authorization": token})
    status = conn.getresponse().status
    conn.close()
    return status


def test_policy_tokens_work_against_the_service(cli):
    owner = cli.json("sas-token", "--policy", "iothubowner", "--duration", "300")
    assert owner["policy"] == "iothubowner" and owner["resource"] == cli.hostname
    assert token_fields(owner["token"])["skn"] == "iothubowner"
    assert service_status(cli, owner["token"]) == 200
    out, _ = cli("sas-token", "--policy", "registryRead")  # key from GET /iothubd/policies
    token = out.strip()
    assert token_fields(token)["skn"] == "registryRead"
    assert service_status(cli, token) == 200
    assert "no-such-policy" in cli.error("sas-token", "--policy", "no-such-policy")


def test_policy_list(cli):
    out, _ = cli("policy", "list")
    t = table(out)
    assert t[0] == ["NAME", "RIGHTS", "PRIMARY KEY", "SECONDARY KEY"]
    names = [r[0] for r in t[1:]]
    for name in ("iothubowner", "service", "device", "registryRead", "registryReadWrite"):
        assert name in names
    doc = cli.json("policy", "list")
    owner = [p for p in doc if p["keyName"] == "iothubowner"][0]
    assert owner["primaryKey"] in cli.connstr or owner["secondaryKey"] in cli.connstr


def test_wrong_key_is_unauthorized(cli):
    bad = "HostName=%s;SharedAccessKeyName=iothubowner;SharedAccessKey=%s" % (cli.hostname, KEY_A)
    err = cli.error("--connection-string", bad, "device", "list")
    assert "IotHubUnauthorizedAccess" in err and "401" in err


# ------------------------------------------------------------ configuration
def test_configuration_sources(cli, home):
    cli("device", "create", "cli-cfg")
    bare = lambda env: run_cli(["device", "show", "cli-cfg", "--json"], env)  # noqa: E731
    # environment
    env = clean_env(home, {"IOTHUB_URL": cli.hub.url, "IOTHUB_CONNECTION_STRING": cli.connstr})
    assert json.loads(bare(env)[0])["deviceId"] == "cli-cfg"
    # $IOTHUB_CONFIG with url= and data=
    path = os.path.join(home, "named.conf")
    with open(path, "w") as f:
        f.write("# written by the test\nurl = %s\ndata = %s\n" % (cli.hub.url, cli.hub.data))
    assert json.loads(bare(clean_env(home, {"IOTHUB_CONFIG": path}))[0])["deviceId"] == "cli-cfg"
    # ~/.config/iothub/config with connection-string=
    os.makedirs(os.path.join(home, ".config", "iothub"))
    with open(os.path.join(home, ".config", "iothub", "config"), "w") as f:
        f.write("url=%s\nconnection-string=%s\n" % (cli.hub.url, cli.connstr))
    assert json.loads(bare(clean_env(home))[0])["deviceId"] == "cli-cfg"
    # a flag beats the file: a wrong --url is used (and refused), naming it
    url = "http://127.0.0.1:%d" % free_port()
    _, err = run_cli(["--url", url, "device", "list"], clean_env(home), expect=1)
    assert url in err
    # a bad config file is one line naming it
    with open(path, "w") as f:
        f.write("colour=blue\n")
    _, err = run_cli(["device", "list"], clean_env(home, {"IOTHUB_CONFIG": path}), expect=1)
    assert path in err and "colour" in err

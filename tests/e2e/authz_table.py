"""The authorization matrix of iothubd (issue 7) as data: the caller kinds,
the MQTT topic operations and the service routes, and the expected outcome
of every (row, caller) cell. test_authz_matrix.py runs one test per cell;
`python3 authz_table.py` (or test_authz_matrix.py) prints the tables as
markdown. Rights come from src/hub/registry.c's standard policies and
src/service/router.c's route table; the test fixture checks the hub's
GET /iothubd/policies against POLICY_RIGHTS so the two cannot drift.

Trade-off: outcomes are written as canonical strings ("PUBACK 0x83 status
0504", "403 IotHubUnauthorized") rather than structured values, so that the
table reads as the documentation and a failing cell shows the difference
in words; the executors render what they observe in the same words.
"""

# ---- the callers ---------------------------------------------------------------------

A = "az-a"            # the device whose data everyone else tries to reach (the victim)
B = "az-b"            # another device
MOD = "m1"            # a module of A: client id "az-a/m1"
DISABLED = "az-disabled"
DELETED = "az-deleted"
HTTP_TARGET = "az-h"  # the device the service routes are called on (never connected)

# The hub's shared access policies (registry.c standard_policies; checked
# against GET /iothubd/policies by the fixture, so the table cannot drift).
POLICY_RIGHTS = {
    "iothubowner": "RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect",
    "service": "ServiceConnect",
    "device": "DeviceConnect",
    "registryRead": "RegistryRead",
    "registryReadWrite": "RegistryRead, RegistryWrite",
}
POLICIES = list(POLICY_RIGHTS)

MQTT_CALLERS = ["self", "other", "module"] + POLICIES + [
    "expired", "forged", "disabled", "deleted", "none", "anonymous"]
HTTP_CALLERS = ["self", "other", "module"] + POLICIES + [
    "expired", "forged", "disabled", "deleted", "none", "scoped", "scoped-own"]

CALLER_TEXT = {
    "self": "device A itself (its own SAS key)",
    "other": "another device B (its own key)",
    "module": "module A/m1 of device A (the module's key)",
    "expired": "device A's key, sas-expiry / se in the past",
    "forged": "MQTT: CONNECT as A signed with B's key; HTTP: iothubowner's name signed "
              "with B's key",
    "disabled": "a disabled device (its correct key)",
    "deleted": "a deleted device (its former key)",
    "none": "no credentials (MQTT: no Authentication Method; production hub)",
    "anonymous": "no credentials on a hub with --allow-anonymous (open-broker client)",
    "scoped": "iothubowner token whose sr is {host}/devices/az-other (another device)",
    "scoped-own": "iothubowner token whose sr is {host}/devices/az-h (the device the routes "
                  "are called on): covers /devices/az-h and below only",
}
for _p, _r in POLICY_RIGHTS.items():
    CALLER_TEXT[_p] = "policy %s (%s)%s" % (
        _p, _r, "; MQTT: CONNECT as its own device az-p-%s signed with the policy key" % _p)

REFUSED = "CONNACK 0x87 status 0101"
NO_METHOD = "CONNACK 0x8C status 0100"
# Callers whose CONNECT must be refused, and how.
CONNECT_REFUSAL = {c: REFUSED for c in ("expired", "forged", "disabled", "deleted")}
CONNECT_REFUSAL.update({p: REFUSED for p in POLICIES if "DeviceConnect" not in POLICY_RIGHTS[p]})
CONNECT_REFUSAL["none"] = NO_METHOD


def client_id_of(caller):
    """The MQTT client id a caller connects with."""
    return {"self": A, "other": B, "module": A + "/" + MOD, "expired": A, "forged": A,
            "disabled": DISABLED, "deleted": DELETED, "none": "az-anon",
            "anonymous": "az-anon"}.get(caller, "az-p-" + caller)


# ---- the MQTT table ------------------------------------------------------------------
#
# Rows are operations; a row's cells list the outcome for device-like callers
# (self, other, module, policies with DeviceConnect) and for the open-broker
# client `anonymous`. Callers in CONNECT_REFUSAL get their refusal in every
# row. "own" in an outcome means the caller's own identity (A for self, B for
# other, A/m1 for module, az-p-{policy} for a policy): never A's for others.

class MqttRow:
    def __init__(self, rid, text, device, anonymous, hub="closed", overrides=None):
        self.rid, self.text, self.hub = rid, text, hub
        self.cells = {}
        for caller in MQTT_CALLERS:
            if caller in CONNECT_REFUSAL:
                self.cells[caller] = CONNECT_REFUSAL[caller]
            elif caller == "anonymous":
                self.cells[caller] = anonymous
            else:
                self.cells[caller] = device
        self.cells.update(overrides or {})


TEL_OK = "PUBACK 0x00, stored as own identity"
NOT_AUTH = "PUBACK 0x87"

MQTT_ROWS = [
    MqttRow("connect", "CONNECT (SAS, api-version 2020-10-01-preview)", "CONNACK 0x00",
            "CONNACK 0x00"),
    MqttRow("connect-as-A", "CONNECT with client id A, signed with the caller's own key "
            "(policy: the policy key; anonymous: no credentials)",
            "CONNACK 0x87 status 0101, A keeps its connection",
            "CONNACK 0x87 status 0101, A keeps its connection",
            overrides={c: "CONNACK 0x00, A's connection taken over (0x8E)"
                       for c in ["self"] + [p for p in POLICIES if p not in CONNECT_REFUSAL]}),
    MqttRow("connect-under-A", "CONNECT with client id A/x (no such module), signed with the "
            "caller's own key (anonymous: no credentials)",
            "CONNACK 0x87 status 0101, A keeps its connection",
            "CONNACK 0x87 status 0101, A keeps its connection"),
    MqttRow("reauth-with-A-key", "AUTH 0x19 (re-authentication) for the caller's own client "
            "id, signed with A's key, no sas-policy", "DISCONNECT 0x87", "DISCONNECT 0x82",
            overrides={"self": "AUTH 0x00"}),
    MqttRow("telemetry", "PUBLISH $iothub/telemetry QoS 1", TEL_OK, NOT_AUTH + ", not stored"),
    MqttRow("telemetry-claims-A-sys", "PUBLISH $iothub/telemetry QoS 1 with user properties "
            "iothub-connection-device-id=A, iothub-connection-module-id=m1",
            "PUBACK 0x83 status 0100, not stored", NOT_AUTH + ", not stored"),
    MqttRow("telemetry-claims-A-app", "PUBLISH $iothub/telemetry QoS 1 with application "
            "property @iothub-connection-device-id=A", TEL_OK + ", claim kept as app property",
            NOT_AUTH + ", not stored"),
    MqttRow("twin-get", "PUBLISH $iothub/twin/get (QoS 0, Correlation Data)",
            "response, own twin", "no response"),
    MqttRow("twin-patch-reported", "PUBLISH $iothub/twin/patch/reported",
            "response with version, own twin patched, A's untouched", "no response, nothing patched",
            overrides={"self": "response with version, own twin patched"}),
    MqttRow("twin-request-qos1", "PUBLISH $iothub/twin/get at QoS 1",
            "PUBACK 0x83 status 0100", NOT_AUTH),
    MqttRow("sub-desired", "SUBSCRIBE $iothub/twin/patch/desired, then the service patches A's "
            "desired and the caller's", "SUBACK [0x00], own notifications only", "SUBACK [0x87]"),
    MqttRow("sub-commands", "SUBSCRIBE $iothub/commands QoS 1, then the service sends a command "
            "to A and to the caller's device", "SUBACK [0x01], own commands only", "SUBACK [0x87]",
            overrides={"module": "SUBACK [0x01], no commands (modules have no queue)"}),
    MqttRow("sub-methods", "SUBSCRIBE $iothub/methods/+, then the service calls a method on A "
            "and on the caller", "SUBACK [0x00], own calls only", "SUBACK [0x87]"),
    MqttRow("sub-responses", "SUBSCRIBE $iothub/responses", "SUBACK [0x00]", "SUBACK [0x87]"),
    MqttRow("reply-A-call", "PUBLISH $iothub/responses with the Correlation Data of a method "
            "call addressed to A (response-code 299)", "ignored, A's reply answers the call",
            "ignored, A's reply answers the call",
            overrides={"self": "completes the call (299)"}),
    MqttRow("settle-A-command", "PUBACK 0x83 status 0100 (reject) with the packet id of a "
            "command delivered to A", "ignored, A settles it", "ignored, A settles it",
            overrides={"self": "settles it (Rejected)"}),
    MqttRow("pub-server-topics", "PUBLISH QoS 1 to $iothub/commands, $iothub/twin/patch/desired "
            "and $iothub/methods/reboot (server-only topics)",
            "PUBACK 0x83 status 0504 x3, nothing reaches A", "PUBACK 0x87 x3, nothing reaches A"),
    MqttRow("pub-A-topic-qos0", "PUBLISH QoS 0 to $iothub/devices/A/twin/get (a device-named "
            "topic)", "DISCONNECT 0x90", "dropped, still connected"),
    MqttRow("sub-A-topics", "SUBSCRIBE $iothub/devices/A/commands, $iothub/devices/A/methods/+, "
            "$iothub/devices/A/#", "SUBACK [0x8F, 0xA2, 0xA2]", "SUBACK [0x87, 0x87, 0x87]"),
    MqttRow("sub-wildcards", "SUBSCRIBE $iothub/#, $iothub/+, $iothub/methods/#, #",
            "SUBACK [0xA2, 0xA2, 0xA2, 0xA2]", "SUBACK [0x87, 0x87, 0x87, 0x87]"),
    MqttRow("open-own-subtree", "dev hub: SUBSCRIBE devices/{own client id}/# QoS 1 and PUBLISH "
            "QoS 1 there", "SUBACK [0x01], PUBACK 0x00, delivered",
            "SUBACK [0x01], PUBACK 0x00, delivered", hub="dev"),
    MqttRow("open-A-subtree", "dev hub: SUBSCRIBE devices/A/# QoS 1 and PUBLISH QoS 1 to "
            "devices/A/x", "SUBACK [0x87], PUBACK 0x87", "SUBACK [0x87], PUBACK 0x87", hub="dev",
            overrides={"self": "SUBACK [0x01], PUBACK 0x00, delivered"}),
]

# ---- the HTTP table ------------------------------------------------------------------

RIGHT_OF = {"R": "RegistryRead", "W": "RegistryWrite", "S": "ServiceConnect"}
ALL = "RWSD"


class HttpRow:
    """method + path of a route, the rights it needs ("RW": both, "R|S":
    either), and the outcome when authorized ("ok"). {id} is HTTP_TARGET
    unless the row makes its own."""

    def __init__(self, method, path, needs, ok, body=None, fresh=None):
        self.method, self.path, self.needs, self.ok, self.body = method, path, needs, ok, body
        self.fresh = fresh  # None | "new" (id must not exist) | "existing" (made per cell)
        self.rid = "%s %s" % (method, path)
        self.cells = {}
        for caller in HTTP_CALLERS:
            if caller in POLICIES:
                have = POLICY_RIGHTS[caller]
                wanted = [RIGHT_OF.get(r, "DeviceConnect") in have for r in needs if r != "|"]
                granted = any(wanted) if "|" in needs else all(wanted)
                self.cells[caller] = ok if granted else "403 IotHubUnauthorized"
            else:
                self.cells[caller] = "401 IotHubUnauthorizedAccess"
        # sr={host}/devices/az-h covers the routes under that device only
        # (a row with its own device id is called on another device).
        under = path.startswith("/devices/{id}/") or path == "/devices/{id}"
        if under and not (fresh and "{m}" not in path):
            self.cells["scoped-own"] = self.cells["iothubowner"]


DEV = {"deviceId": "{id}"}
HTTP_ROWS = [
    HttpRow("GET", "/devices", "R", "200"),
    HttpRow("GET", "/devices/{id}", "R", "200"),
    HttpRow("PUT", "/devices/{id}", "W", "201", body=DEV, fresh="new"),
    HttpRow("DELETE", "/devices/{id}", "W", "204", fresh="existing"),
    HttpRow("GET", "/devices/{id}/modules", "R", "200"),
    HttpRow("GET", "/devices/{id}/modules/{m}", "R", "200"),
    HttpRow("PUT", "/devices/{id}/modules/{m}", "W", "201",
            body={"deviceId": "{id}", "moduleId": "{m}"}, fresh="new"),
    HttpRow("DELETE", "/devices/{id}/modules/{m}", "W", "204", fresh="existing"),
    HttpRow("GET", "/statistics/devices", "R", "200"),
    HttpRow("GET", "/iothubd/policies", ALL, "200"),
    HttpRow("GET", "/twins/{id}", "R", "200"),
    HttpRow("PATCH", "/twins/{id}", "S", "200", body={"tags": {"k": "v"}}),
    HttpRow("PUT", "/twins/{id}", "S", "200", body={"tags": {"k": "w"}}),
    HttpRow("GET", "/twins/{id}/modules/{m}", "R", "200"),
    HttpRow("PATCH", "/twins/{id}/modules/{m}", "S", "200", body={"tags": {"k": "v"}}),
    HttpRow("PUT", "/twins/{id}/modules/{m}", "S", "200", body={"tags": {"k": "w"}}),
    HttpRow("POST", "/twins/{id}/methods", "S", "404 DeviceNotOnline",
            body={"methodName": "reboot", "payload": None}),
    HttpRow("POST", "/twins/{id}/modules/{m}/methods", "S", "404 DeviceNotOnline",
            body={"methodName": "reboot", "payload": None}),
    HttpRow("POST", "/devices/{id}/messages/deviceBound", "S", "201", body=b"hello"),
    HttpRow("DELETE", "/devices/{id}/commands", "S", "200"),
    HttpRow("GET", "/messages/serviceBound/feedback", "S", "200"),
    HttpRow("GET", "/events?partition=0", "S", "200"),
    HttpRow("GET", "/events/partitions", "S", "200"),
    HttpRow("GET", "/events/stream", "S", "200 text/event-stream"),
    HttpRow("GET", "/events/checkpoints/{group}/0", "S", "200"),
    HttpRow("PUT", "/events/checkpoints/{group}/0", "S", "200", body={"sequenceNumber": 0}),
]
for _row in HTTP_ROWS:  # a token is judged before the route's rights, whoever signed it
    assert set(_row.cells) == set(HTTP_CALLERS)


def matrix_size():
    mqtt = len(MQTT_ROWS) * len(MQTT_CALLERS)
    http = len(HTTP_ROWS) * len(HTTP_CALLERS)
    return mqtt, http


def merged_columns(rows, callers):
    """Callers grouped when their outcome is the same in every row (the
    markdown shows one column per group; the tests still run every cell)."""
    groups = {}
    for c in callers:
        groups.setdefault(tuple(r.cells[c] for r in rows), []).append(c)
    return list(groups.values())


def matrix_markdown():
    """The two tables as markdown (rows x caller kinds -> expected outcome),
    callers with identical columns merged into one."""
    out = []
    for title, rows, callers in (("MQTT device API", MQTT_ROWS, MQTT_CALLERS),
                                 ("Service API", HTTP_ROWS, HTTP_CALLERS)):
        groups = merged_columns(rows, callers)
        out.append("### %s: %d rows x %d caller kinds = %d cells\n" % (
            title, len(rows), len(callers), len(rows) * len(callers)))
        out.append("| operation | " + " | ".join(", ".join(g) for g in groups) + " |")
        out.append("|---" * (len(groups) + 1) + "|")
        for r in rows:
            name = r.text if isinstance(r, MqttRow) else "`%s` (%s)" % (
                r.rid, (" or " if "|" in r.needs else "+").join(
                    RIGHT_OF.get(x, "DeviceConnect") for x in r.needs if x != "|"))
            out.append("| %s | %s |" % (name.replace("|", "\\|"),
                                        " | ".join(r.cells[g[0]] for g in groups)))
        out.append("")
    out.append("Caller kinds:\n")
    for c in dict.fromkeys(MQTT_CALLERS + HTTP_CALLERS):
        out.append("- `%s`: %s" % (c, CALLER_TEXT[c]))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(matrix_markdown())

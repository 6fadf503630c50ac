"""Minimal raw-socket MQTT 5.0 / 3.1.1 client for conformance tests.

Encodes every client->server packet (with every MQTT 5 property) and decodes
every server->client packet (with all properties).  Also allows sending
arbitrary raw bytes so that malformed-packet behaviour can be tested.

Everything is bounded in time: every receive takes a timeout.
"""

import socket
import struct
import time

# ---------------------------------------------------------------- constants
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT, AUTH = 12, 13, 14, 15

PACKET_NAMES = {
    CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH",
    PUBACK: "PUBACK", PUBREC: "PUBREC", PUBREL: "PUBREL", PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE", SUBACK: "SUBACK", UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK", PINGREQ: "PINGREQ", PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT", AUTH: "AUTH",
}

MQTT311 = 4
MQTT5 = 5

# property id -> (name, type)
_BYTE, _INT2, _INT4, _VARINT, _UTF8, _BIN, _PAIR = range(7)
PROPERTIES = {
    0x01: ("PayloadFormatIndicator", _BYTE),
    0x02: ("MessageExpiryInterval", _INT4),
    0x03: ("ContentType", _UTF8),
    0x08: ("ResponseTopic", _UTF8),
    0x09: ("CorrelationData", _BIN),
    0x0B: ("SubscriptionIdentifier", _VARINT),
    0x11: ("SessionExpiryInterval", _INT4),
    0x12: ("AssignedClientIdentifier", _UTF8),
    0x13: ("ServerKeepAlive", _INT2),
    0x15: ("AuthenticationMethod", _UTF8),
    0x16: ("AuthenticationData", _BIN),
    0x17: ("RequestProblemInformation", _BYTE),
    0x18: ("WillDelayInterval", _INT4),
    0x19: ("RequestResponseInformation", _BYTE),
    0x1A: ("ResponseInformation", _UTF8),
    0x1C: ("ServerReference", _UTF8),
    0x1F: ("ReasonString", _UTF8),
    0x21: ("ReceiveMaximum", _INT2),
    0x22: ("TopicAliasMaximum", _INT2),
    0x23: ("TopicAlias", _INT2),
    0x24: ("MaximumQoS", _BYTE),
    0x25: ("RetainAvailable", _BYTE),
    0x26: ("UserProperty", _PAIR),
    0x27: ("MaximumPacketSize", _INT4),
    0x28: ("WildcardSubscriptionAvailable", _BYTE),
    0x29: ("SubscriptionIdentifierAvailable", _BYTE),
    0x2A: ("SharedSubscriptionAvailable", _BYTE),
}
PROPERTY_IDS = {name: (pid, typ) for pid, (name, typ) in PROPERTIES.items()}
# properties that may appear more than once (decoded as lists)
MULTI = ("UserProperty", "SubscriptionIdentifier")

# Reason codes (subset used by tests)
RC_SUCCESS = 0x00
RC_GRANTED_QOS1 = 0x01
RC_GRANTED_QOS2 = 0x02
RC_DISCONNECT_WITH_WILL = 0x04
RC_NO_MATCHING_SUBSCRIBERS = 0x10
RC_NO_SUBSCRIPTION_EXISTED = 0x11
RC_CONTINUE_AUTHENTICATION = 0x18
RC_REAUTHENTICATE = 0x19
RC_UNSPECIFIED_ERROR = 0x80
RC_MALFORMED_PACKET = 0x81
RC_PROTOCOL_ERROR = 0x82
RC_IMPLEMENTATION_SPECIFIC = 0x83
RC_CLIENT_ID_NOT_VALID = 0x85
RC_BAD_USER_NAME_OR_PASSWORD = 0x86
RC_NOT_AUTHORIZED = 0x87
RC_BAD_AUTHENTICATION_METHOD = 0x8C
RC_KEEP_ALIVE_TIMEOUT = 0x8D
RC_SESSION_TAKEN_OVER = 0x8E
RC_TOPIC_NAME_INVALID = 0x90
RC_RECEIVE_MAXIMUM_EXCEEDED = 0x93
RC_TOPIC_ALIAS_INVALID = 0x94
RC_PACKET_TOO_LARGE = 0x95
RC_QOS_NOT_SUPPORTED = 0x9B


class ConnectionClosed(Exception):
    """The server closed the network connection."""


class Timeout(Exception):
    """No packet arrived in time."""


# ---------------------------------------------------------------- encoding
def enc_varint(n):
    if n < 0 or n > 268435455:
        raise ValueError("varint out of range")
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def enc_str(s):
    if isinstance(s, str):
        s = s.encode("utf-8")
    return struct.pack("!H", len(s)) + s


enc_bin = enc_str


def enc_props(props):
    """Encode a property dict (or list of (name, value) pairs, to control
    order/duplication).  Repeatable properties (UserProperty,
    SubscriptionIdentifier) take a list.  The special key ``_raw`` holds bytes
    appended verbatim to the property block (for malformed-packet tests).
    Returns the encoded block *including* its varint length prefix."""
    if props is None:
        props = {}
    items = props.items() if isinstance(props, dict) else props
    body = bytearray()
    raw = b""
    for name, value in items:
        if name == "_raw":
            raw += value
            continue
        pid, typ = PROPERTY_IDS[name]
        if name == "UserProperty":
            values = [value] if isinstance(value, tuple) else list(value)
        elif name == "SubscriptionIdentifier":
            values = list(value) if isinstance(value, (list, tuple)) else [value]
        else:
            values = [value]
        for v in values:
            body += enc_varint(pid)
            if typ == _BYTE:
                body += struct.pack("!B", v)
            elif typ == _INT2:
                body += struct.pack("!H", v)
            elif typ == _INT4:
                body += struct.pack("!I", v)
            elif typ == _VARINT:
                body += enc_varint(v)
            elif typ == _UTF8:
                body += enc_str(v)
            elif typ == _BIN:
                body += enc_bin(v)
            elif typ == _PAIR:
                body += enc_str(v[0]) + enc_str(v[1])
    body += raw
    return enc_varint(len(body)) + bytes(body)


def fixed_header(ptype, flags, remaining):
    return bytes([(ptype << 4) | (flags & 0x0F)]) + enc_varint(remaining)


def packet(ptype, flags, body):
    return fixed_header(ptype, flags, len(body)) + body


def sub_options(qos=0, no_local=False, retain_as_published=False, retain_handling=0):
    return (qos & 3) | (0x04 if no_local else 0) | (0x08 if retain_as_published else 0) | ((retain_handling & 3) << 4)


# ---------------------------------------------------------------- decoding
class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def remaining(self):
        return len(self.data) - self.pos

    def byte(self):
        v = self.data[self.pos]
        self.pos += 1
        return v

    def int2(self):
        v = struct.unpack_from("!H", self.data, self.pos)[0]
        self.pos += 2
        return v

    def int4(self):
        v = struct.unpack_from("!I", self.data, self.pos)[0]
        self.pos += 4
        return v

    def varint(self):
        mult, val = 1, 0
        for _ in range(4):
            b = self.byte()
            val += (b & 0x7F) * mult
            if not b & 0x80:
                return val
            mult *= 128
        raise ValueError("malformed varint")

    def binary(self):
        n = self.int2()
        v = bytes(self.data[self.pos:self.pos + n])
        if len(v) != n:
            raise ValueError("truncated")
        self.pos += n
        return v

    def utf8(self):
        return self.binary().decode("utf-8")

    def rest(self):
        v = bytes(self.data[self.pos:])
        self.pos = len(self.data)
        return v

    def props(self):
        n = self.varint()
        end = self.pos + n
        out = {}
        while self.pos < end:
            pid = self.varint()
            name, typ = PROPERTIES[pid]
            if typ == _BYTE:
                v = self.byte()
            elif typ == _INT2:
                v = self.int2()
            elif typ == _INT4:
                v = self.int4()
            elif typ == _VARINT:
                v = self.varint()
            elif typ == _UTF8:
                v = self.utf8()
            elif typ == _BIN:
                v = self.binary()
            else:
                v = (self.utf8(), self.utf8())
            if name in MULTI:
                out.setdefault(name, []).append(v)
            else:
                if name in out:
                    raise ValueError("duplicate property %s" % name)
                out[name] = v
        if self.pos != end:
            raise ValueError("property length mismatch")
        return out


class Packet:
    """A decoded server packet.  Attributes depend on the type:
    CONNACK: session_present, reason_code, properties
    PUBLISH: topic, payload, qos, retain, dup, packet_id, properties
    PUBACK/PUBREC/PUBREL/PUBCOMP: packet_id, reason_code, properties
    SUBACK/UNSUBACK: packet_id, reason_codes, properties
    DISCONNECT/AUTH: reason_code, properties
    """

    def __init__(self, ptype, flags, body, version):
        self.type = ptype
        self.name = PACKET_NAMES.get(ptype, "RESERVED%d" % ptype)
        self.flags = flags
        self.raw = body
        self.properties = {}
        self.reason_code = None
        self.packet_id = None
        r = Reader(body)
        v5 = version == MQTT5
        if ptype == CONNACK:
            self.session_present = bool(r.byte() & 1)
            self.reason_code = r.byte()
            if v5 and r.remaining():
                self.properties = r.props()
        elif ptype == PUBLISH:
            self.dup = bool(flags & 8)
            self.qos = (flags >> 1) & 3
            self.retain = bool(flags & 1)
            self.topic = r.utf8()
            if self.qos:
                self.packet_id = r.int2()
            if v5:
                self.properties = r.props()
            self.payload = r.rest()
        elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            self.packet_id = r.int2()
            self.reason_code = 0
            if v5 and r.remaining():
                self.reason_code = r.byte()
                if r.remaining():
                    self.properties = r.props()
        elif ptype in (SUBACK, UNSUBACK):
            self.packet_id = r.int2()
            if v5:
                self.properties = r.props()
            self.reason_codes = list(r.rest())
        elif ptype in (DISCONNECT, AUTH):
            self.reason_code = 0
            if r.remaining():
                self.reason_code = r.byte()
                if r.remaining():
                    self.properties = r.props()
        if r.remaining():
            raise ValueError("trailing bytes in %s" % self.name)

    def __repr__(self):
        fields = {k: v for k, v in self.__dict__.items() if k not in ("raw", "type", "flags")}
        return "<Packet %s>" % fields


# ---------------------------------------------------------------- client
class RawClient:
    def __init__(self, port, host="127.0.0.1", version=MQTT5, timeout=5.0):
        self.version = version
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pending = []  # packets set aside by expect(..., stash=True)
        self.closed = False
        self._next_pid = 1

    # ------------------------------------------------------------ helpers
    def next_pid(self):
        pid = self._next_pid
        self._next_pid = self._next_pid % 65535 + 1
        return pid

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def _props(self, props):
        return enc_props(props) if self.version == MQTT5 else b""

    # ------------------------------------------------------------ encoders
    def connect_bytes(self, client_id="", clean_start=True, keepalive=60, properties=None,
                      username=None, password=None, will=None, protocol_name="MQTT",
                      version=None, reserved_flag=False):
        """will: dict(topic=, payload=, qos=, retain=, properties=)"""
        version = self.version if version is None else version
        flags = 0
        if clean_start:
            flags |= 0x02
        if reserved_flag:
            flags |= 0x01
        payload = enc_str(client_id)
        if will is not None:
            flags |= 0x04 | ((will.get("qos", 0) & 3) << 3) | (0x20 if will.get("retain") else 0)
            if version == MQTT5:
                payload += enc_props(will.get("properties"))
            payload += enc_str(will["topic"]) + enc_bin(
                will.get("payload", b"").encode() if isinstance(will.get("payload", b""), str) else will.get("payload", b""))
        if username is not None:
            flags |= 0x80
            payload += enc_str(username)
        if password is not None:
            flags |= 0x40
            payload += enc_bin(password.encode() if isinstance(password, str) else password)
        var = enc_str(protocol_name) + bytes([version, flags]) + struct.pack("!H", keepalive)
        if version == MQTT5:
            var += enc_props(properties)
        return packet(CONNECT, 0, var + payload)

    def send_connect(self, **kw):
        self.send_raw(self.connect_bytes(**kw))

    def connect(self, expect_rc=0, timeout=None, **kw):
        """Send CONNECT and return the first answer (CONNACK or AUTH).
        If expect_rc is not None and the answer is a CONNACK, assert its code."""
        self.send_connect(**kw)
        p = self.recv(timeout)
        if expect_rc is not None and p.type == CONNACK:
            assert p.reason_code == expect_rc, "CONNACK %r, expected rc 0x%02x" % (p, expect_rc)
        return p

    def publish_bytes(self, topic, payload=b"", qos=0, retain=False, dup=False, packet_id=None,
                      properties=None):
        if isinstance(payload, str):
            payload = payload.encode()
        flags = (qos << 1) | (1 if retain else 0) | (8 if dup else 0)
        body = enc_str(topic)
        if qos:
            body += struct.pack("!H", packet_id)
        body += self._props(properties) + payload
        return packet(PUBLISH, flags, body)

    def publish(self, topic, payload=b"", qos=0, retain=False, dup=False, packet_id=None,
                properties=None):
        """Send a PUBLISH; returns the packet id used (None for QoS 0)."""
        if qos and packet_id is None:
            packet_id = self.next_pid()
        self.send_raw(self.publish_bytes(topic, payload, qos, retain, dup, packet_id, properties))
        return packet_id

    def _ack(self, ptype, flags, packet_id, reason_code=0, properties=None):
        body = struct.pack("!H", packet_id)
        if self.version == MQTT5 and (reason_code or properties):
            body += bytes([reason_code])
            if properties:
                body += enc_props(properties)
        self.send_raw(packet(ptype, flags, body))

    def puback(self, packet_id, reason_code=0, properties=None):
        self._ack(PUBACK, 0, packet_id, reason_code, properties)

    def pubrec(self, packet_id, reason_code=0, properties=None):
        self._ack(PUBREC, 0, packet_id, reason_code, properties)

    def pubrel(self, packet_id, reason_code=0, properties=None):
        self._ack(PUBREL, 2, packet_id, reason_code, properties)

    def pubcomp(self, packet_id, reason_code=0, properties=None):
        self._ack(PUBCOMP, 0, packet_id, reason_code, properties)

    def subscribe_bytes(self, packet_id, subscriptions, properties=None):
        body = struct.pack("!H", packet_id) + self._props(properties)
        for flt, opts in subscriptions:
            body += enc_str(flt) + bytes([opts])
        return packet(SUBSCRIBE, 2, body)

    def subscribe(self, topics, qos=0, properties=None, packet_id=None, wait=True, timeout=None,
                  **opts):
        """topics: a filter string, or list of filters, or list of (filter, options_byte).
        Returns the SUBACK if wait, else the packet id."""
        if isinstance(topics, str):
            topics = [topics]
        subs = [(t, sub_options(qos, **opts)) if isinstance(t, str) else t for t in topics]
        packet_id = packet_id or self.next_pid()
        self.send_raw(self.subscribe_bytes(packet_id, subs, properties))
        if not wait:
            return packet_id
        p = self.expect(SUBACK, timeout)
        assert p.packet_id == packet_id
        return p

    def unsubscribe(self, topics, properties=None, packet_id=None, wait=True, timeout=None):
        if isinstance(topics, str):
            topics = [topics]
        packet_id = packet_id or self.next_pid()
        body = struct.pack("!H", packet_id) + self._props(properties)
        for t in topics:
            body += enc_str(t)
        self.send_raw(packet(UNSUBSCRIBE, 2, body))
        if not wait:
            return packet_id
        p = self.expect(UNSUBACK, timeout)
        assert p.packet_id == packet_id
        return p

    def pingreq(self):
        self.send_raw(packet(PINGREQ, 0, b""))

    def disconnect(self, reason_code=0, properties=None, close=True):
        body = b""
        if self.version == MQTT5 and (reason_code or properties):
            body = bytes([reason_code]) + (enc_props(properties) if properties else b"")
        try:
            self.send_raw(packet(DISCONNECT, 0, body))
        except OSError:
            pass
        if close:
            time.sleep(0.05)
            self.close()

    def auth(self, reason_code=0, properties=None):
        body = b""
        if reason_code or properties:
            body = bytes([reason_code]) + enc_props(properties)
        self.send_raw(packet(AUTH, 0, body))

    # ------------------------------------------------------------ receiving
    def _read_some(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout()
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise Timeout()
        except (ConnectionResetError, BrokenPipeError, OSError):
            data = b""
        if not data:
            self.closed = True
            raise ConnectionClosed()
        self.buf += data

    def _try_parse(self):
        """Return (ptype, flags, body) if a whole packet is buffered, else None."""
        if len(self.buf) < 2:
            return None
        mult, rl, i = 1, 0, 1
        while True:
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            rl += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
            if i > 4:
                raise ValueError("malformed remaining length from server")
        if len(self.buf) < i + rl:
            return None
        h = self.buf[0]
        body = bytes(self.buf[i:i + rl])
        del self.buf[:i + rl]
        return h >> 4, h & 0x0F, body

    def recv(self, timeout=None):
        """Return the next packet.  Raises Timeout or ConnectionClosed."""
        if self.pending:
            return self.pending.pop(0)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            parsed = self._try_parse()
            if parsed:
                return Packet(parsed[0], parsed[1], parsed[2], self.version)
            if self.closed:
                raise ConnectionClosed()
            self._read_some(deadline)

    def expect(self, ptype, timeout=None, stash=False):
        """Receive the next packet and assert its type.  With stash=True,
        packets of other types (e.g. PUBLISH arriving before a PUBACK) are
        set aside and returned by later recv() calls."""
        if not stash:
            p = self.recv(timeout)
            assert p.type == ptype, "expected %s, got %r" % (PACKET_NAMES[ptype], p)
            return p
        for i, p in enumerate(self.pending):  # set aside by an earlier expect
            if p.type == ptype:
                return self.pending.pop(i)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        kept = []
        try:
            while True:
                parsed = self._try_parse()
                if parsed:
                    p = Packet(parsed[0], parsed[1], parsed[2], self.version)
                    if p.type == ptype:
                        return p
                    kept.append(p)
                    continue
                if self.closed:
                    raise ConnectionClosed()
                self._read_some(deadline)
        finally:
            self.pending.extend(kept)

    def recv_all(self, timeout=0.5):
        """Collect packets until `timeout` passes with nothing new (or the
        connection closes)."""
        out = []
        while True:
            try:
                out.append(self.recv(timeout))
            except (Timeout, ConnectionClosed):
                return out

    def recv_until_closed(self, timeout=None):
        """Read packets until the server closes the connection.  Returns the
        packets received.  Raises Timeout if the connection stays open."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        out = []
        while True:
            try:
                out.append(self.recv(max(0.01, deadline - time.monotonic())))
            except ConnectionClosed:
                return out
            if time.monotonic() > deadline:
                raise Timeout()

    def is_closed(self, timeout=None):
        try:
            self.recv_until_closed(timeout)
            return True
        except Timeout:
            return False

"""The broker fuzz test's model (test_broker_fuzz.py): the topic universe
and its generators, topic matching, the messages, subscriptions and
sessions as the model knows them, and the oracles that judge what a
session receives against MQTT 5.0.

Nothing here does I/O; the steps are in broker_fuzz_ops.py and the
plumbing in test_broker_fuzz.py.

How a delivery is judged (MQTT 5.0 3.3.4): a message published while a
session has n >= 1 matching subscriptions gives that session 1..n PUBLISH
packets ("copies"). The server MUST respect the maximum QoS of the
matching subscriptions [MQTT-3.3.4-2] and MAY send one further copy per
further subscription; a single copy carries the Subscription Identifiers of
all of them [MQTT-3.3.4-4], several copies each carry the identifier of
the subscription it is for [MQTT-3.3.4-5]. The oracle reads this as: the
copies correspond to disjoint non-empty blocks of the matching
subscriptions; a copy for block B has QoS max(min(pub QoS, sub QoS)) over
B [MQTT-3.8.4-8], exactly the identifiers of B (as a set; a value used
by two subscriptions of B may appear once or twice) and the RETAIN flag
that some subscription of B asks for (Retain As Published: the
publisher's flag, else 0 [MQTT-3.3.1-12/13]). When the session was online
at publish time, the blocks must cover every matching subscription in the
end (so a single copy is the max-QoS one with every identifier); when it
was offline, subscriptions whose copy would be QoS 0 may be left out
(QoS 0 messages MAY be dropped for an offline session, 4.1: they are not
part of the stored Session State unless the server chooses so). Nothing
is required that might not fit the client's Maximum Packet Size on a
connection it may meet: the server discards such a packet [MQTT-3.1.2-25].
"""

from collections import deque

import mqtt5raw as raw

ANSWER_S = 5.0          # every single answer and every settle; longer is a hang
LEVELS = ("a", "b", "c")
LEVEL_WEIGHTS = (5, 3, 1)
DOLLAR = "$fz"          # first level of the topics that '+'/'#' must not reach
BIG_EXPIRY = (3600, 86400, 0xFFFFFFFF)
USER_NAMES = ("k", "k", "colour", "", "ü-x", "a b")
USER_VALUES = ("1", "", "v", "ünï", "x" * 40, "k")


# ============================================================ topics
def gen_topic(rng):
    """A topic name of 1-3 levels from LEVELS, sometimes under `$fz`."""
    if rng.random() < 0.12:
        levels = [DOLLAR] + rng.choices(LEVELS, LEVEL_WEIGHTS, k=rng.randint(0, 2))
    else:
        levels = rng.choices(LEVELS, LEVEL_WEIGHTS, k=rng.randint(1, 3))
    return "/".join(levels)


def gen_filter(rng):
    """A topic filter over the same universe with '+' and '#' (also at
    the first level, where they must not match `$fz` topics)."""
    r = rng.random()
    if r < 0.05:
        return "#"
    if r < 0.08:
        return DOLLAR + "/#"
    levels = ["+" if rng.random() < 0.3 else lv for lv in gen_topic(rng).split("/")]
    if rng.random() < 0.25:
        levels = levels[:rng.randint(0, len(levels))] + ["#"]
    return "/".join(levels)


def matches(flt, topic):
    """MQTT 5.0 4.7: does the topic filter match the topic name? '#' also
    matches the parent level; wildcards at the first level never match a
    topic starting with '$' [MQTT-4.7.2-1]."""
    f, t = flt.split("/"), topic.split("/")
    if topic.startswith("$") and f[0] in ("+", "#"):
        return False
    for i, lv in enumerate(f):
        if lv == "#":
            return True
        if i >= len(t) or (lv != "+" and lv != t[i]):
            return False
    return len(f) == len(t)


def split_shared(flt):
    """('group', 'filter') of `$share/group/filter`, else (None, flt)."""
    if flt.startswith("$share/"):
        _, group, rest = flt.split("/", 2)
        return group, rest
    return None, flt


# ============================================================ properties
def gen_props(rng, will=False):
    """Random PUBLISH (or Will) properties that a server forwards: User
    Properties (repeated names, empty strings, non-ASCII), Content Type,
    Response Topic, Correlation Data, Payload Format Indicator 0/1 (our
    payloads are ASCII) and a long Message Expiry Interval."""
    props = {}
    if rng.random() < 0.3:
        props["UserProperty"] = [(rng.choice(USER_NAMES), rng.choice(USER_VALUES))
                                 for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.15:
        props["ContentType"] = rng.choice(["text/plain", "application/json; charset=ü", ""])
    if rng.random() < 0.12:
        props["ResponseTopic"] = rng.choice(["r/1", "r/ü/x", DOLLAR + "/r"])
    if rng.random() < 0.12:
        props["CorrelationData"] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 12)))
    if rng.random() < 0.15:
        props["PayloadFormatIndicator"] = rng.choice([0, 1])
    if rng.random() < 0.15:
        props["MessageExpiryInterval"] = rng.randint(600, 86400)
    if will and rng.random() < 0.5:
        props["WillDelayInterval"] = 0
    return props


def props_problem(msg, p, now):
    """Why the properties of PUBLISH p do not forward those of msg, or
    None. Forwarded unchanged: Payload Format Indicator [MQTT-3.3.2-4],
    Content Type [MQTT-3.3.2-20], Response Topic [MQTT-3.3.2-15],
    Correlation Data [MQTT-3.3.2-16], every User Property in order
    [MQTT-3.3.2-17, -18]; the Message Expiry Interval is what remains of
    the received one [MQTT-3.3.2-6] (1 s of slack each way for rounding),
    absent if it was absent; no Topic Alias (we allow none,
    [MQTT-3.1.2-26]); Subscription Identifiers are judged elsewhere."""
    got = dict(p.properties)
    got.pop("SubscriptionIdentifier", None)
    if "TopicAlias" in got:
        return "a Topic Alias although the client allows none (MQTT-3.1.2-26)"
    mei = got.pop("MessageExpiryInterval", None)
    want = {k: v for k, v in msg.props.items() if k != "WillDelayInterval"}
    want_mei = want.pop("MessageExpiryInterval", None)
    if got != want:
        return "properties %r, the publisher sent %r (MQTT-3.3.2-4/15/16/17/18/20)" % (got, want)
    if want_mei is None and mei is not None:
        return "a Message Expiry Interval %r on a message published without one" % mei
    if want_mei is not None:
        waited = now - msg.t_pub
        if mei is None or not want_mei - waited - 1 <= mei <= want_mei:
            return "Message Expiry Interval %r, published with %d %.1f s ago (MQTT-3.3.2-6)" % (
                mei, want_mei, waited)
    return None


def packet_ids(p):
    return sorted(p.properties.get("SubscriptionIdentifier", []))


def max_size(msg, qos, ids):
    """The largest a server PUBLISH of msg at this QoS with these
    Subscription Identifiers can be: the whole topic and a Topic Alias."""
    props = {k: v for k, v in msg.props.items() if k != "WillDelayInterval"}
    if ids:
        props["SubscriptionIdentifier"] = list(ids)
    props["TopicAlias"] = 65535
    body = raw.enc_str(msg.topic) + (b"\0\0" if qos else b"") + raw.enc_props(props) + msg.payload
    return len(raw.packet(raw.PUBLISH, 0, body))


def packet_size(p):
    return 1 + len(raw.enc_varint(len(p.raw))) + len(p.raw)


# ============================================================ model objects
class Msg:
    """One application message: a client's PUBLISH or a Will."""

    def __init__(self, mid, publisher, topic, payload, qos, retain, props, will, seq, t_pub):
        self.mid, self.publisher, self.topic, self.payload = mid, publisher, topic, payload
        self.qos, self.retain, self.props, self.will = qos, retain, props, will
        self.seq, self.t_pub = seq, t_pub

    def __repr__(self):
        return "<%s m%d %s %r q%d%s%s from %s>" % (
            "will" if self.will else "msg", self.mid, self.topic, self.payload[:24], self.qos,
            " retain" if self.retain else "", " %r" % self.props if self.props else "",
            self.publisher)


class Sub:
    """One subscription of a session (options as granted)."""

    def __init__(self, flt, qos, nl, rap, rh, sid):
        self.flt, self.qos, self.nl, self.rap, self.rh, self.sid = flt, qos, nl, rap, rh, sid
        self.group, self.tflt = split_shared(flt)

    def __repr__(self):
        return "%s(q%d%s%s rh%d%s)" % (self.flt, self.qos, " nl" if self.nl else "",
                                        " rap" if self.rap else "", self.rh,
                                        " id%d" % self.sid if self.sid else "")


class Copy:
    """One PUBLISH a session received for a message (redeliveries of the
    same packet are not new copies)."""

    def __init__(self, qos, retain, ids, dup):
        self.qos, self.retain, self.ids, self.dup = qos, retain, ids, dup

    def __repr__(self):
        return "copy(q%d%s ids %s%s)" % (self.qos, " retain" if self.retain else "", self.ids,
                                         " dup" if self.dup else "")


class LiveExp:
    """What one session may and must receive of one message (see the
    module doc). entries: (sub, eq, retain value, optional); `required`:
    the indexes that must be covered in the end."""

    def __init__(self, msg, entries, online, epoch, maybe=False):
        self.msg, self.entries, self.epoch, self.maybe = msg, entries, epoch, maybe
        self.copies = []
        self.normal = frozenset(i for i, (sub, eq, rv, opt) in enumerate(entries)
                                if not opt and sub.group is None and (online or eq > 0))
        self.required = frozenset() if maybe else self.normal
        self.complete = None    # None: not computed since the last change
        self.size = max_size(msg, msg.qos, [e[0].sid for e in entries if e[0].sid])
        self.limit = None       # the smallest Maximum Packet Size it may have met

    def set_limit(self, mps):
        """The client's Maximum Packet Size on a connection that may get
        the copies: one too large is discarded [MQTT-3.1.2-25], so they are
        required only if even the largest possible copy fits every limit
        (a copy discarded on one connection is not sent on the next)."""
        if mps is not None:
            self.limit = mps if self.limit is None else min(self.limit, mps)
        self.required = self.normal if self.fits() and not self.maybe else frozenset()
        self.complete = None

    def fits(self):
        return self.limit is None or self.size <= self.limit

    def feasible(self, cover):
        return assign(self.entries, self.copies, self.required if cover else frozenset())

    def describe(self):
        return "%r: subscriptions %s, required %s, received %s" % (
            self.msg, [(e[0], "eq%d" % e[1]) for e in self.entries], sorted(self.required),
            self.copies)


class RetExp:
    """A retained message due on SUBSCRIBE (Retain Handling 0, or 1 for a
    new subscription [MQTT-3.3.1-9/10]): RETAIN 1, QoS min(retained QoS,
    granted QoS) [MQTT-3.8.4-8], the identifier of that SUBSCRIBE only."""

    def __init__(self, msg, sub, optional, epoch):
        self.msg, self.sub, self.optional, self.epoch = msg, sub, bool(optional), epoch

    def fits(self, p):
        return p.retain and p.qos == min(self.msg.qos, self.sub.qos) and \
            packet_ids(p) == ([self.sub.sid] if self.sub.sid else [])

    def __repr__(self):
        return "retained %r for %r%s" % (self.msg, self.sub, " (optional)" if self.optional else "")


class Inflight:
    """A QoS 1/2 PUBLISH the server sent that the client has not finished:
    state 'pub' (no PUBACK/PUBREC sent), 'rel' (PUBREC sent, PUBREL due),
    'comp' (PUBREL received, PUBCOMP withheld)."""

    def __init__(self, msg, p, state, epoch):
        self.msg, self.qos, self.retain, self.ids = msg, p.qos, p.retain, packet_ids(p)
        self.state = state
        self.sent_epoch = epoch   # the connection that last sent the PUBLISH


# ============================================================ the copies oracle
def copy_masks(entries, c):
    """The blocks (bit masks over entries) that copy c can stand for."""
    n = len(entries)
    out = []
    for mask in range(1, 1 << n):
        members = [entries[i] for i in range(n) if mask >> i & 1]
        sids = [e[0].sid for e in members if e[0].sid]
        if set(c.ids) != set(sids) or any(c.ids.count(s) > sids.count(s) for s in set(c.ids)):
            continue
        if c.qos != max(e[1] for e in members) or c.retain not in {e[2] for e in members}:
            continue
        out.append(mask)
    return out


def assign(entries, copies, required):
    """True if the copies can stand for disjoint blocks of the entries whose
    union holds every index in `required`."""
    need = sum(1 << i for i in required)
    masks = [copy_masks(entries, c) for c in copies]
    memo = {}

    def rec(i, used):
        if i == len(copies):
            return used & need == need
        key = (i, used)
        if key not in memo:
            memo[key] = any(not m & used and rec(i + 1, used | m) for m in masks[i])
        return memo[key]
    return rec(0, 0)


# ============================================================ sessions
class Client:
    """One client id: its connection (RawClient or None) and its session as
    the model knows it."""

    def __init__(self, label, cid):
        self.label, self.cid = label, cid
        self.conn = None
        self.epoch = 0           # connections so far
        self.will = None         # the Will of the current connection (a template dict)
        self.withhold = 0.0      # chance of withholding an acknowledgement, this connection
        self.withheld = 0
        self.rm, self.tam, self.mps = None, 0, None   # the connection's Receive Maximum,
        # Topic Alias Maximum and Maximum Packet Size
        self.offline_since = 0
        self.trace = deque(maxlen=30)   # the last packets in and out, for failure messages
        self.reset_session()
        self.exists = False

    def reset_session(self):
        self.exists = False
        self.expiry = 0
        self.subs = {}           # filter -> Sub
        self.live = {}           # message id -> LiveExp
        self.open = set()        # message ids whose LiveExp is not complete yet
        self.rets = []           # RetExp not received yet
        self.inflight = {}       # packet id -> Inflight, in the order first sent
        self.resend = []         # packet ids the server must resend with DUP, in order
        self.resend_opt = set()  # those of them that may be too large to send now
        self.discarded = {}      # packet id -> Msg the server discarded as too large
        self.rel_due = set()     # packet ids whose PUBREL the server must resend
        self.order = {}          # (publisher, topic, pub QoS, QoS) -> last publish seq
        self.order_seen = set()  # (key, message id) already counted

    @property
    def online(self):
        return self.conn is not None

    def shared_subs(self):
        return [f for f, s in self.subs.items() if s.group is not None]

    def missing(self):
        """What the server still owes this (online) session."""
        out = []
        for mid in sorted(self.open):
            exp = self.live[mid]
            if exp.complete is None:
                exp.complete = exp.feasible(cover=True)
            if exp.complete:
                self.open.discard(mid)
            else:
                out.append("copies of " + exp.describe())
        out += [repr(r) for r in self.rets if not r.optional]
        out += ["the resend (DUP 1) of packet id %d: %r" % (pid, self.inflight[pid].msg)
                for pid in self.resend if pid not in self.resend_opt]
        out += ["PUBREL %d" % pid for pid, f in self.inflight.items()
                if f.state == "rel" or pid in self.rel_due]
        return out


# ============================================================ wire helpers
def disconnect_bytes(reason, props):
    body = b""
    if reason or props:
        body = bytes([reason]) + (raw.enc_props(props) if props else b"")
    return raw.packet(raw.DISCONNECT, 0, body)


def describe_packet(p):
    if p.type == raw.PUBLISH:
        return "PUBLISH %s q%d%s%s pid %s ids %s payload %r props %r" % (
            p.topic, p.qos, " retain" if p.retain else "", " DUP" if p.dup else "",
            p.packet_id, packet_ids(p), p.payload[:40],
            {k: v for k, v in p.properties.items() if k != "SubscriptionIdentifier"})
    return repr(p)


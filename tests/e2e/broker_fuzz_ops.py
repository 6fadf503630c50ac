"""The steps of the broker fuzz test (test_broker_fuzz.py): each op_*
method does one randomized thing for one client and tells the model what
the server now owes whom; FuzzRun then settles (waits until every session
got what the model requires).

BrokerOps is a mixin of FuzzRun, which supplies the seeded generator
(self.rng), the broker, the clients, the I/O helpers (wait_for, settle,
ping, drain_closed) and the reporting ones (check, fail, note)."""

import random
import socket
import struct
import time

import mqtt5raw as raw
from broker_fuzz_model import (
    ANSWER_S, BIG_EXPIRY, LiveExp, Msg, RetExp, Sub, disconnect_bytes, gen_filter,
    gen_props, gen_topic, matches, max_size, split_shared)
from e2e_util import IS_MOSQUITTO

MAX_PLAIN_SUBS = 5      # non-shared subscriptions per session (keeps the copies oracle small)
MAX_SHARED_SUBS = 2
WITHHOLD_CAP = 3        # unfinished flows a session holds back at most (Mosquitto's window is 20)
TAKEOVER_WILL_S = 0.5   # how long a take-over's optional Will is looked for
SID_EDGES = (1, 127, 128, 16383, 16384, 2097151, 2097152, 268435455)


def mosquitto_dollar_share(sub_or_filter):
    """Mosquitto 2.0.11 never delivers a `$` topic to a shared
    subscription (`$share/g/$fz/#` takes nothing from `$fz/a`, and a PUBLISH
    gets 0x10), although the filter `$fz/#` matches it (4.7.2, 4.8.2):
    such a group's delivery is not required there (test_broker_fuzz.py's doc)."""
    flt = sub_or_filter if isinstance(sub_or_filter, str) else sub_or_filter.tflt
    return IS_MOSQUITTO and flt.startswith("$")


class BrokerOps:
    # ------------------------------------------------------------ messages
    def new_key(self):
        self.next_key += 1
        return b"%d:%d" % (self.seed, self.next_key)

    def new_msg(self, publisher, topic, payload, qos, retain, props, key, will=False):
        self.seq += 1
        msg = Msg(self.seq, publisher, topic, payload, qos, retain, props, will, self.seq,
                  time.monotonic())
        self.msgs[key] = msg
        return msg

    def route(self, msg, maybe=False, detached=()):
        """Records what every session is owed of msg as the server routes it
        now (sessions in `detached` count as offline), and returns whether
        some session has a subscription that takes it."""
        taken = False
        groups, loose = {}, set()
        for cl in self.all:
            if not cl.exists:
                continue
            entries = []
            for sub in cl.subs.values():
                if not matches(sub.tflt, msg.topic):
                    continue
                optional = False
                if sub.nl and msg.publisher == cl.cid:
                    if not msg.will:
                        continue    # No Local [MQTT-3.8.3-3]
                    # A Will is published by the server for the client after its
                    # connection closed; whether it came "from a connection with
                    # this ClientID" (MQTT-3.8.3-3) the standard leaves open:
                    # either answer passes.
                    optional = True
                if sub.group is not None:
                    groups.setdefault((sub.group, sub.tflt), set()).add(cl.cid)
                    optional = True     # the group's one delivery is checked below
                taken = taken or not optional or (sub.group is not None and
                                                  not mosquitto_dollar_share(sub))
                entries.append((sub, min(msg.qos, sub.qos), msg.retain if sub.rap else False,
                                optional))
            if not entries:
                continue
            online = cl.online and cl.cid not in detached
            exp = cl.live[msg.mid] = LiveExp(msg, entries, online, cl.epoch if cl.online else
                                             cl.epoch + 1, maybe)
            if cl.online:
                exp.set_limit(cl.mps)   # else on the next connection (begin_session)
            if not exp.fits():
                # 3.1.2.11.4: a shared message too large for a member may go to
                # another member or to none
                loose |= {(e[0].group, e[0].tflt) for e in entries if e[0].group is not None}
            cl.open.add(msg.mid)
        for gkey, members in groups.items():
            # 4.8.2: each message of a Shared Subscription goes to exactly
            # one session of the group (all members are online here).
            self.groups[(msg.mid, gkey)] = {"members": members, "takers": set(), "maybe": maybe,
                                            "loose": gkey in loose or
                                            mosquitto_dollar_share(gkey[1])}
            self.open_groups.add((msg.mid, gkey))
        return taken

    def make_required(self, msg, groups=False):
        for cl in self.all:
            exp = cl.live.get(msg.mid)
            if exp is not None:
                exp.maybe = False
                exp.set_limit(cl.mps)
                cl.open.add(msg.mid)
        for (mid, gkey), g in self.groups.items() if groups else ():
            if mid == msg.mid:
                g["maybe"] = False
                self.open_groups.add((mid, gkey))

    def set_retained(self, msg):
        """[MQTT-3.3.1-5]: a retained message replaces the topic's; an
        empty one removes it [MQTT-3.3.1-6]."""
        if msg.payload:
            self.retained[msg.topic] = msg
        else:
            self.retained.pop(msg.topic, None)

    # ------------------------------------------------------------ connections
    def gen_connect(self, clean=None, will_ok=True, plain=False):
        rng = self.rng
        if plain:
            return dict(clean=True, expiry=0, explicit0=False, will=None, rm=None, tam=0,
                        mps=None)
        if clean is None:
            clean = rng.random() < 0.35
        expiry = 0 if rng.random() < 0.4 else rng.choice(BIG_EXPIRY)
        explicit0 = expiry == 0 and rng.random() < 0.3
        will = None
        if rng.random() < 0.3 and will_ok:
            key = self.new_key()
            will = dict(topic=gen_topic(rng), payload=key, key=key, qos=rng.randint(0, 2),
                        retain=rng.random() < 0.3, props=gen_props(rng, will=True))
            if will["retain"] and rng.random() < 0.2:
                # an empty retained Will deletes the topic's retained message
                will["payload"] = b""
                users = list(will["props"].get("UserProperty", []))
                users.insert(rng.randint(0, len(users)), ("fz-id", key.decode()))
                will["props"]["UserProperty"] = users
        # the client's Receive Maximum (ack_choice keeps a slot free, so
        # that messages keep flowing), Topic Alias Maximum and Maximum Packet
        # Size (a filler of 300 bytes does not fit 160, some do not fit 360)
        rm = rng.choice((None, None, 1, 2, 5, 10))
        tam = rng.choice((0, 0, 2, 10))
        mps = rng.choice((None, None, None, None, None, 160, 360))
        if IS_MOSQUITTO:
            # Mosquitto 2.0.11 keeps a quota slot for good for a resend too
            # large for the new connection, its quota is wrong anyway
            # (README "deviations") and a PUBREC 0x80 does not free its slot:
            # with a small Receive Maximum nothing would flow any more. It
            # gets no Receive Maximum at all.
            rm = None
        return dict(clean=clean, expiry=expiry, explicit0=explicit0, will=will, rm=rm, tam=tam,
                    mps=mps)

    def open_conn(self, cl, o):
        """A new connection for cl's client id with the CONNECT options o
        (gen_connect); returns (conn, CONNACK, the Session Expiry Interval
        in force)."""
        clean, expiry, will = o["clean"], o["expiry"], o["will"]
        conn = raw.RawClient(self.broker.port, timeout=ANSWER_S)
        conn.fz_aliases = {}     # the server's Topic Aliases on this connection
        conn.fz_tam, conn.fz_mps = o["tam"], o["mps"]
        conn.fz_epoch = cl.epoch + 1
        props = {"SessionExpiryInterval": expiry} if expiry or o["explicit0"] else {}
        if o["rm"]:
            props["ReceiveMaximum"] = o["rm"]
        if o["tam"]:
            props["TopicAliasMaximum"] = o["tam"]
        if o["mps"]:
            props["MaximumPacketSize"] = o["mps"]
        w = None
        if will:
            w = dict(topic=will["topic"], payload=will["payload"], qos=will["qos"],
                     retain=will["retain"], properties=will["props"])
        conn.send_connect(client_id=cl.cid, clean_start=clean, keepalive=300, properties=props,
                          will=w)
        self.note(cl, "CONNECT clean %d expiry %d rm %s tam %d mps %s%s" % (
            clean, expiry, o["rm"], o["tam"], o["mps"], " will %s q%d%s %r" % (
            will["topic"], will["qos"], " retain" if will["retain"] else "", will["props"])
            if will else ""))
        try:
            ack = conn.recv(ANSWER_S)
        except (raw.Timeout, raw.ConnectionClosed) as e:
            self.fail("no CONNACK (%r)" % e, cl)
        self.check(ack.type == raw.CONNACK and ack.reason_code == 0, "CONNECT refused: %r" % ack,
                   cl)
        self.trace(cl, conn, "<-", "CONNACK session present %d" % ack.session_present)
        cp = ack.properties
        for name, full in (("MaximumQoS", 2), ("RetainAvailable", 1),
                           ("WildcardSubscriptionAvailable", 1),
                           ("SubscriptionIdentifierAvailable", 1),
                           ("SharedSubscriptionAvailable", 1)):
            self.check(cp.get(name, full) == full, "CONNACK %s %r: the test needs the full "
                       "feature set of MQTT 5 (%r)" % (name, cp.get(name), ack), cl)
        self.check("AssignedClientIdentifier" not in cp, "an Assigned Client Identifier for a "
                   "client that sent one (MQTT-3.2.2-16): %r" % ack, cl)
        granted = cp.get("SessionExpiryInterval", expiry)
        self.check(granted == expiry or granted >= 3600, "Session Expiry Interval %d granted "
                   "for %d: too short for this test" % (granted, expiry), cl)
        return conn, ack, granted

    def begin_session(self, cl, conn, present, expiry, o):
        will = o["will"]
        if not present:
            cl.reset_session()
        cl.exists, cl.expiry = True, expiry
        cl.epoch += 1
        cl.conn, cl.will, cl.withheld = conn, will, 0
        cl.rm, cl.tam, cl.mps = o["rm"], o["tam"], o["mps"]
        cl.withhold = 0.4 if cl is not self.obs and self.rng.random() < 0.3 else 0.0
        self.counts["session present" if present else "new session"] += 1
        if present:
            # A resend that was perhaps too large for the last connection and
            # did not come was discarded "as if completed" [MQTT-3.1.2-25]
            for pid in cl.resend:
                if pid in cl.resend_opt and pid in cl.inflight:
                    self.discard(cl, pid)
            # [MQTT-4.4.0-1]: every unacknowledged PUBLISH again with DUP 1, in
            # the original order [MQTT-4.6.0-1] (one perhaps too large for this
            # connection may be discarded instead); every PUBREL again
            cl.resend = [pid for pid, f in cl.inflight.items() if f.state == "pub"]
            cl.resend_opt = {pid for pid in cl.resend if cl.mps and max_size(
                cl.inflight[pid].msg, cl.inflight[pid].qos, cl.inflight[pid].ids) > cl.mps}
            cl.rel_due = {pid for pid, f in cl.inflight.items() if f.state in ("rel", "comp")}
            self.counts["resends due"] += len(cl.resend) + len(cl.rel_due)
            for mid in cl.open:     # queued while offline: for this connection's limit
                cl.live[mid].set_limit(cl.mps)
        if will and will["topic"] not in self.obs.subs:
            # the observer makes every Will visible, so settling waits until
            # the server has published it
            self.subscribe(self.obs, [(will["topic"], 2, False, True, 2)], None)

    def discard(self, cl, pid):
        cl.discarded[pid] = cl.inflight.pop(pid).msg
        self.counts["resends discarded as too large"] += 1

    def connect(self, cl, clean=None, will_ok=True, plain=False):
        o = self.gen_connect(clean, will_ok, plain)
        clean = o["clean"]
        conn, ack, granted = self.open_conn(cl, o)
        # [MQTT-3.2.2-2]: Clean Start 1 gives Session Present 0;
        # [MQTT-3.2.2-3]: Clean Start 0 gives 1 if the server has a session
        want = not clean and cl.exists
        self.check(ack.session_present == want, "CONNACK Session Present %d, the model says %d "
                   "(clean start %d, the session %s)" % (
                       ack.session_present, want, clean, "exists" if cl.exists else "ended"), cl)
        self.begin_session(cl, conn, ack.session_present, granted, o)

    def close_conn(self, cl, reason=None, props=None, expect=None):
        """DISCONNECT (reason not None) or just the end of the byte stream,
        then read until the server closes its side (see drain_closed)."""
        conn = cl.conn
        self.trace(cl, conn, "->", "DISCONNECT %s %r, SHUT_WR" % (reason, props))
        try:
            if reason is not None:
                conn.send_raw(disconnect_bytes(reason, props))
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.fail("cannot close the connection: %r" % e, cl)
        self.drain_closed(cl, conn, expect)
        conn.close()
        cl.conn = None
        cl.offline_since = self.step_no

    def publish_will(self, cl, will, maybe=False, detached=()):
        """Routes a Will. With `maybe` (a take-over) it may or may not be
        published: every copy is optional until the observer shows that it
        was (learn_will)."""
        msg = self.new_msg(cl.cid, will["topic"], will["payload"], will["qos"], will["retain"],
                           will["props"], will["key"], will=True)
        self.route(msg, maybe, detached)
        self.counts["wills (maybe)" if maybe else "wills"] += 1
        self.note(cl, "Will %r%s" % (msg, " (may be published)" if maybe else ""))
        if msg.retain and not maybe:
            self.set_retained(msg)
        return msg

    def learn_will(self, msg):
        deadline = time.monotonic() + TAKEOVER_WILL_S
        exp = self.obs.live[msg.mid]
        while not exp.copies and time.monotonic() < deadline:
            self.poll([c for c in self.all if c.online], deadline - time.monotonic())
        if exp.copies:
            self.counts["take-over wills published"] += 1
            self.make_required(msg)

    # ------------------------------------------------------------ ops
    def op_connect(self, cl):
        self.connect(cl)
        self.settle("connect")

    def op_disconnect(self, cl):
        rng = self.rng
        shared = cl.shared_subs()
        if shared:   # shared groups keep every member online (see route)
            self.unsubscribe(cl, shared)
        r = rng.random()
        reason = None if r < 0.45 else 0x00 if r < 0.8 else 0x04
        props, expect, valid = None, None, True
        if reason is None and cl.will and rng.random() < 0.3:
            return self.reset_conn(cl)
        if reason is not None and rng.random() < 0.25:
            if cl.expiry:
                props = {"SessionExpiryInterval": 0}    # allowed: CONNECT had a non-zero one
            else:
                # [MQTT-3.14.2-2]: a Session Expiry after CONNECT had 0 is a
                # Protocol Error, not a valid DISCONNECT: the server sends
                # DISCONNECT 0x82 (4.13), the session still ends and the
                # Will is not discarded
                props, expect, valid = {"SessionExpiryInterval": 3600}, 0x82, False
        self.note(cl, "close the socket" if reason is None else "DISCONNECT 0x%02x %r" % (
            reason, props))
        self.counts["close" if reason is None else "DISCONNECT 0x%02x%s" % (
            reason, "" if valid else " (protocol error)")] += 1
        will = cl.will
        self.close_conn(cl, reason, props, expect)
        if props and valid:
            cl.expiry = 0
        cl.will = None
        if cl.expiry == 0:
            cl.reset_session()      # the session ends with the connection (3.1.2.11.2)
        if will and (reason != 0x00 or not valid):
            # closed without DISCONNECT, or 0x04: the Will goes out (Will Delay 0);
            # DISCONNECT 0x00 discards it [MQTT-3.14.4-3]
            self.publish_will(cl, will)
        self.settle("disconnect")

    def reset_conn(self, cl):
        """The connection ends with a TCP reset: nothing more can be read
        from it (a QoS 1/2 copy lost on the way is resent after a reconnect,
        and may then have DUP 1). Only with a Will: once the observer has
        it, the server has handled the end of the connection (and of an
        expiry 0 session), so the next CONNECT cannot race with it."""
        self.note(cl, "close with a TCP reset")
        self.counts["TCP reset"] += 1
        will = cl.will
        self.trace(cl, cl.conn, "->", "RST")
        cl.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        cl.conn.close()
        cl.conn, cl.will, cl.offline_since = None, None, self.step_no
        if cl.expiry == 0:
            cl.reset_session()
        self.publish_will(cl, will)
        self.settle("reset")

    def op_takeover(self, cl):
        """A second connection with the same client id [MQTT-3.1.4-3]."""
        if cl.will and cl.will["retain"]:
            # Whether a take-over publishes the Will is open (see below); a
            # retained one would leave the retained store unknown.
            return self.op_publish(cl)
        o = self.gen_connect()
        clean = o["clean"]
        old, old_will, old_expiry = cl.conn, cl.will, cl.expiry
        conn, ack, granted = self.open_conn(cl, o)
        # Clean Start 0 resumes the session [MQTT-3.1.2-5]. If the old
        # connection had Session Expiry 0, its session ends as that connection
        # is closed by the take-over, or is continued by the new one: both
        # readings of 3.1.2.11.2 / 3.1.4 pass (Mosquitto 2.0 and iothubd
        # both start afresh).
        want = {False} if clean else {True} if old_expiry else {False, True}
        self.check(ack.session_present in want, "take-over: CONNACK Session Present %d, the "
                   "model allows %s (clean start %d, old session expiry %d)" % (
                       ack.session_present, sorted(want), clean, old_expiry), cl)
        self.counts["take-overs"] += 1
        will_msg = None
        if old_will:
            # With Will Delay 0 the Will of the old connection is published
            # [MQTT-3.1.2-8, 3.1.4-3] - or not, because a new Network
            # Connection was opened before the (zero) Will Delay elapsed and
            # the Session continues [MQTT-3.1.3-9]. Mosquitto 2.0 publishes it
            # only when the session ends, iothubd always: either passes. It
            # goes out before the CONNACK; iothubd first detaches the session,
            # Mosquitto may still deliver it on the old connection (optional
            # either way, judged against the old session).
            will_msg = self.publish_will(cl, old_will, maybe=True, detached={cl.cid})
        self.drain_closed(cl, old, expect=raw.RC_SESSION_TAKEN_OVER)
        old.close()
        if not ack.session_present:
            cl.reset_session()
        self.begin_session(cl, conn, ack.session_present, granted, o)
        if will_msg:
            self.learn_will(will_msg)
        self.settle("take-over")

    def make_publish(self, cl, qos=None, maybe=False, retain_ok=True):
        """A new message from cl, routed in the model (see route)."""
        rng = self.rng
        topic, retain = gen_topic(rng), rng.random() < 0.25 and retain_ok
        qos = rng.choice((0, 1, 1, 2)) if qos is None else qos
        props = gen_props(rng)
        key = self.new_key()
        if retain and rng.random() < 0.25:
            # An empty retained message deletes the topic's [MQTT-3.3.1-6] and is
            # still delivered as usual: a User Property tells it apart.
            payload = b""
            users = list(props.get("UserProperty", []))
            users.insert(rng.randint(0, len(users)), ("fz-id", key.decode()))
            props["UserProperty"] = users
        else:
            payload = key + b"." * rng.choice((0, 0, 1, 30, 300))
        msg = self.new_msg(cl.cid, topic, payload, qos, retain, props, key)
        taken = self.route(msg, maybe)
        if retain:
            self.set_retained(msg)
        self.note(cl, "PUBLISH %r" % msg)
        self.counts["publish q%d%s" % (qos, " retain" if retain else "")] += 1
        # 3.4.2.1: 0x10 No matching subscribers only when the server knows
        # there are none; 0x00 is always allowed
        return msg, {0} if taken else {0, 0x10}

    def send_publish(self, cl, msg, pid=None, dup=False):
        return cl.conn.publish(msg.topic, msg.payload, msg.qos, msg.retain, dup=dup,
                               packet_id=pid, properties=msg.props)

    def check_code(self, cl, ack, codes):
        self.check(ack.reason_code in codes, "%s 0x%02x, the model allows %s" % (
            ack.name, ack.reason_code, sorted(codes)), cl)
        self.counts["%s 0x%02x" % (ack.name, ack.reason_code)] += 1

    def op_publish(self, cl):
        msg, codes = self.make_publish(cl)
        pid = self.send_publish(cl, msg)
        if msg.qos == 1:
            self.check_code(cl, self.wait_for(cl, raw.PUBACK, pid, "PUBACK"), codes)
        elif msg.qos == 2:
            self.check_code(cl, self.wait_for(cl, raw.PUBREC, pid, "PUBREC"), codes)
            cl.conn.pubrel(pid)
            self.check_code(cl, self.wait_for(cl, raw.PUBCOMP, pid, "PUBCOMP"), {0})
        self.settle("publish")

    def op_publish_resume(self, cl):
        """A QoS 2 PUBLISH whose flow the client finishes on its next
        connection: the server keeps the packet id in the session
        [MQTT-4.4.0-1]; a resent PUBLISH (DUP 1) gets PUBREC again and
        MUST NOT be delivered twice [MQTT-4.3.3-10]; PUBREL gets PUBCOMP
        0x00. The server may pass the message on at PUBLISH or at PUBREL
        (4.3.3 methods A and B), so the deliveries are only required once
        the flow is complete."""
        if cl.shared_subs():
            return self.op_publish(cl)
        # If the session ends, a method A server never passes the message on:
        # then the retained store would be unknown.
        msg, codes = self.make_publish(cl, qos=2, maybe=True, retain_ok=cl.expiry > 0)
        pid = self.send_publish(cl, msg)
        self.check_code(cl, self.wait_for(cl, raw.PUBREC, pid, "PUBREC"), codes)
        self.trace(cl, cl.conn, "<-", "PUBREC %d (our QoS 2 PUBLISH)" % pid)
        self.note(cl, "DISCONNECT before PUBREL %d" % pid)
        self.close_conn(cl, 0x00)
        cl.will = None
        if not cl.expiry:
            # The session ended with the packet id: PUBREL gets PUBCOMP 0x92
            # Packet Identifier not found, or 0x00 (3.7.2.1 does not oblige
            # 0x92). Whether the message went out depends on the method
            # (4.3.3: A passes it on at PUBREL, from the session now gone; B
            # at PUBLISH): its copies stay optional.
            cl.reset_session()
            self.connect(cl, clean=False, will_ok=False)
            cl.conn.pubrel(pid)
            self.check_code(cl, self.wait_for(cl, raw.PUBCOMP, pid, "PUBCOMP"), {0, 0x92})
            return self.settle("publish interrupted")
        # no Will: the observer would subscribe to its topic, and a method A
        # server routes the message at PUBREL with the subscriptions of then
        self.connect(cl, clean=False, will_ok=False)
        if self.rng.random() < 0.5:
            self.note(cl, "PUBLISH again with DUP 1, packet id %d" % pid)
            self.send_publish(cl, msg, pid, dup=True)
            self.check_code(cl, self.wait_for(cl, raw.PUBREC, pid, "PUBREC of the resend"), codes)
            self.counts["inbound QoS 2 resent"] += 1
        cl.conn.pubrel(pid)
        self.check_code(cl, self.wait_for(cl, raw.PUBCOMP, pid, "PUBCOMP"), {0})
        self.counts["inbound QoS 2 completed after reconnect"] += 1
        self.make_required(msg, groups=True)
        self.settle("publish resumed")

    def op_subscribe(self, cl):
        rng = self.rng
        if rng.random() < 0.15 and len(cl.shared_subs()) < MAX_SHARED_SUBS:
            # one entry per SUBSCRIBE and an identifier of its own, so that
            # a copy's identifiers tell whether it came through the group
            flt = "$share/%s/%s" % (rng.choice(("g1", "g2")), gen_filter(rng))
            entries = [(flt, rng.randint(0, 2), False, rng.random() < 0.5, rng.randint(0, 2))]
            return self.subscribe(cl, entries, self.fresh_sid(shared=True))
        plain = [f for f in cl.subs if split_shared(f)[0] is None]
        flts = []
        for _ in range(rng.randint(1, 3)):
            new = len(set(plain) | set(flts))
            f = rng.choice(plain) if plain and (new >= MAX_PLAIN_SUBS or rng.random() < 0.25) \
                else gen_filter(rng)
            if f not in flts and (f in cl.subs or new < MAX_PLAIN_SUBS):
                flts.append(f)
        if rng.random() < 0.05:
            # one filter twice: as if two SUBSCRIBE packets came one after the
            # other [MQTT-3.8.4-5], the second replacing the first
            flts.append(rng.choice(flts))
        entries = [(f, rng.randint(0, 2), rng.random() < 0.25, rng.random() < 0.4,
                    rng.choice((0, 0, 1, 1, 2))) for f in flts]
        r = rng.random()
        sid = self.fresh_sid() if r < 0.4 else rng.choice(self.sids) if r < 0.5 and self.sids \
            else None
        self.subscribe(cl, entries, sid)

    def subscribe(self, cl, entries, sid):
        """SUBSCRIBE entries [(filter, QoS, No Local, Retain As Published,
        Retain Handling)]; checks the SUBACK, records the retained messages
        due and settles."""
        subs = [Sub(f, q, nl, rap, rh, sid) for f, q, nl, rap, rh in entries]
        for i, sub in enumerate(subs):
            exists = sub.flt in cl.subs or sub.flt in [s.flt for s in subs[:i]]
            # Retained messages go to a new Non-shared Subscription only
            # (3.3.1.3). Mosquitto 2.0.11 sends them to shared ones too
            # (test_broker_fuzz.py's doc): optional there.
            shared_quirk = sub.group is not None and IS_MOSQUITTO
            if (sub.group is not None and not shared_quirk) or sub.rh == 2 or \
                    (sub.rh == 1 and exists):
                continue
            for topic, rmsg in sorted(self.retained.items()):
                # Mosquitto 2.0.11 does not give `$fz/#` the retained message of
                # `$fz` itself unless something below `$fz` is retained too
                # (test_broker_fuzz.py's doc): optional there.
                dollar_parent = IS_MOSQUITTO and topic.startswith("$") and \
                    sub.tflt == topic + "/#"
                if matches(sub.tflt, topic):
                    # No Local and one's own retained message: MQTT-3.8.3-3
                    # speaks of forwarding a publication, not of retained
                    # messages sent on SUBSCRIBE: either passes.
                    optional = shared_quirk or dollar_parent or (
                        sub.nl and rmsg.publisher == cl.cid) or (
                        cl.mps and max_size(rmsg, min(rmsg.qos, sub.qos), [sid] if sid else [])
                        > cl.mps)
                    cl.rets.append(RetExp(rmsg, sub, optional, cl.epoch))
                    self.counts["retained due"] += not optional
        conn = cl.conn
        pid = conn.next_pid()
        conn.send_raw(conn.subscribe_bytes(pid, [(s.flt, raw.sub_options(
            s.qos, s.nl, s.rap, s.rh)) for s in subs], {"SubscriptionIdentifier": sid} if sid
            else None))
        self.note(cl, "SUBSCRIBE %s" % subs)
        ack = self.wait_for(cl, raw.SUBACK, pid, "SUBACK")
        self.check(len(ack.reason_codes) == len(subs), "SUBACK %r for %d entries" % (
            ack, len(subs)), cl)
        for sub, code in zip(subs, ack.reason_codes):
            # 3.9.3: the granted QoS, which may be lower than asked
            self.check(code <= sub.qos, "SUBACK 0x%02x for %r" % (code, sub), cl)
            self.counts["granted lower QoS"] += code < sub.qos
            sub.qos = code
            old = cl.subs.get(sub.flt)
            if IS_MOSQUITTO and old and (old.nl, old.rap) != (sub.nl, sub.rap):
                # Mosquitto 2.0.11 replaces QoS and identifier but keeps the
                # first No Local and Retain As Published, against
                # [MQTT-3.8.4-3] (test_broker_fuzz.py's doc): model that, there only.
                sub.nl, sub.rap = old.nl, old.rap
                self.counts["mosquitto kept NL/RAP of a replaced subscription"] += 1
            cl.subs[sub.flt] = sub     # replaces an existing one [MQTT-3.8.4-3]
        self.counts["subscribe entries"] += len(subs)
        self.settle("subscribe")

    def fresh_sid(self, shared=False):
        """A Subscription Identifier not used before: first the edges of the
        Variable Byte Integer (1 to 268,435,455, 3.8.2.1.2), then random."""
        if self.next_sid < len(SID_EDGES):
            sid = SID_EDGES[self.next_sid]
        else:
            sid = self.rng.randint(1, 268435455)
            while sid in self.used_sids:
                sid = self.rng.randint(1, 268435455)
        self.next_sid += 1
        self.used_sids.add(sid)
        if not shared:
            self.sids.append(sid)
        return sid

    def op_unsubscribe(self, cl):
        rng = self.rng
        flts = []
        for _ in range(rng.randint(1, 2)):
            f = rng.choice(sorted(cl.subs)) if cl.subs and rng.random() < 0.8 else \
                rng.choice(("", "$share/g1/")) + gen_filter(rng)
            if f not in flts:
                flts.append(f)
        self.unsubscribe(cl, flts)

    def unsubscribe(self, cl, flts):
        conn = cl.conn
        pid = conn.unsubscribe(flts, wait=False)
        self.note(cl, "UNSUBSCRIBE %s" % flts)
        ack = self.wait_for(cl, raw.UNSUBACK, pid, "UNSUBACK")
        # 3.11.3: 0x00 Success, 0x11 No subscription existed
        want = [0 if f in cl.subs else 0x11 for f in flts]
        got = ack.reason_codes
        if IS_MOSQUITTO and got != want and len(got) == len(want):
            # Mosquitto 2.0.11 answers 0x00 for a `$` filter when no session
            # has anything under its first level (test_broker_fuzz.py's doc)
            quirk = [0 if w == 0x11 and g == 0 and f.startswith("$") and
                     not f.startswith("$share/") else w for f, g, w in zip(flts, got, want)]
            self.counts["mosquitto UNSUBACK 0x00 for a missing $ filter"] += quirk != want
            want = quirk
        self.check(got == want, "UNSUBACK %s, the model says %s (subscriptions "
                   "%s)" % (got, want, sorted(cl.subs)), cl)
        for f in flts:
            cl.subs.pop(f, None)
        self.counts["unsubscribe entries"] += len(flts)

    def op_ping_all(self, cl):
        for c in self.all:
            if c.online:
                self.ping(c)

    # ------------------------------------------------------------ acknowledgements
    def ack_choice(self, cl, p, what):
        """'ack', 'withhold' (until the connection ends) or 'refuse' (reason
        0x80: the flow ends, 4.3.2 / 4.3.3): decided from the seed and
        the packet, not from self.rng, so that the order in which packets of
        several connections arrive cannot change the steps. At most
        WITHHOLD_CAP unfinished flows are held back, and never the last free
        slot of the client's Receive Maximum, so messages keep flowing."""
        if cl is self.obs:
            return "ack"
        r = random.Random("%d/%s/%d/%s/%s" % (self.seed, cl.cid, cl.epoch, p.packet_id,
                                               what)).random()
        if what != "PUBCOMP" and r < 0.03:
            self.counts["refused with " + what] += 1
            return "refuse"
        held = sum(f.state in ("pub", "comp") for f in cl.inflight.values()) - 1
        # a slot stays free in the window however the server counts it
        # (per connection as in 4.9, or every unfinished flow as iothubd does)
        room = cl.rm is None or len(cl.inflight) < cl.rm
        if r < 0.03 + cl.withhold and held < WITHHOLD_CAP and room:
            cl.withheld += 1
            self.counts["withheld " + what] += 1
            return "withhold"
        return "ack"

"""Seeded, bounded, randomized test of the plain MQTT 5 broker (the open
topic space: --open-topics --allow-anonymous, here with --threads 4)
against a model that knows in advance what every client must receive. The
same test passes against Mosquitto 2.0.11 (IOTHUBD_TEST_TARGET=mosquitto),
which keeps the model honest.

Four clients with fixed client ids (the seed in each), each on our raw
MQTT 5 client so every flag, reason code and property is visible, and an
observer that subscribes to every Will topic (so settling waits until a
Will is out). Each step picks a client and one of: PUBLISH at QoS 0/1/2
(retain sometimes, an empty retained message deleting the topic's, User
Properties, Content Type, Response Topic, Correlation Data, Payload Format
Indicator, a long Message Expiry); a QoS 2 PUBLISH whose PUBREL (and
sometimes a resent PUBLISH) comes on the next connection; SUBSCRIBE with
1-3 filters over a small topic universe ('+', '#', topics under `$fz`
that first-level wildcards must not reach [MQTT-4.7.2-1]; QoS, No Local,
Retain As Published, Retain Handling, sometimes a Subscription
Identifier; shared subscriptions `$share/g/...`); UNSUBSCRIBE; DISCONNECT
0x00 or 0x04 (sometimes with Session Expiry 0, or a non-zero one that is a
Protocol Error after CONNECT had 0) or closing the byte stream; CONNECT
with random Clean Start, Session Expiry 0 or large, Receive Maximum, Topic
Alias Maximum, Maximum Packet Size and sometimes a Will (Will Delay 0,
maybe retained, maybe empty); a take-over by a second connection with the
same client id; a TCP reset. A client sometimes withholds PUBACK, PUBREC or
PUBCOMP until its connection ends, or refuses a message with 0x80.

The model (broker_fuzz_model.py, steps in broker_fuzz_ops.py) routes each
message to the sessions it knows and waits until each has what the spec
requires, judging every PUBLISH by its unique payload whenever it arrives
(a copy routed by another event loop may come late, and is judged then):
which subscriptions explain it, its QoS, RETAIN flag, Subscription
Identifiers and forwarded properties; overlapping subscriptions (1..n
copies, see the model's doc); retained messages on SUBSCRIBE; Session
Present; queued QoS 1/2 messages of an offline session; resends with DUP
1, the original packet id and in order after a reconnect [MQTT-4.4.0-1,
4.6.0-1] and never at other times; PUBREL resends; Wills; one member of a
shared group per message; Topic Aliases, Receive Maximum (also for the
resends) and Maximum Packet Size towards the client (a copy that may not
fit is optional, a resend skipped as too large is complete); PUBACK/PUBREC
0x10 only without subscribers; no duplicate of an inbound QoS 2 message
[MQTT-4.3.3-10]; the order of messages from one publisher on one topic at
one QoS [MQTT-4.6.0-6]. Where the standard leaves the server a choice the
model accepts each answer, and the comment names the clause ("either
passes").

Mosquitto 2.0.11 deviations, tolerated on that target only (besides those
in README.md: no DISCONNECT 0x8E on take-over, the Receive Maximum quota):
replacing a subscription keeps its first No Local and Retain As Published
[MQTT-3.8.4-3]; a shared subscription never gets a `$` topic (and such a
PUBLISH gets 0x10), but does get retained messages on SUBSCRIBE, which
3.3.1.3 sends to non-shared subscriptions only; UNSUBSCRIBE of a `$` filter
nobody has anything under gets 0x00 instead of 0x11; `$fz/#` does not get
the retained message of `$fz` itself unless something below `$fz` is
retained too; a PUBREC 0x80 does not free its slot in the send quota; it
sends packets one byte larger than the client's Maximum Packet Size, and
keeps a slot of its window for each QoS 1/2 message it discards as too
large for it [MQTT-3.1.2-25].

Not modelled: Will Delay > 0, expiry that actually expires (messages or
sessions), topic aliases from the client, queue limits (every queue stays
far below them), MQTT 3.1.1, shared-group members going offline (a member
leaves its groups first), a QoS 1 PUBLISH resent by the client.

Bounded: IOTHUBD_FUZZ_SEED (default 2207) and IOTHUBD_FUZZ_COUNT steps
(default 5000, about 5 s); every failure names both, the step, the last
operations and the last packets of the clients concerned.
"""

import os
import random
import select
import time
from collections import Counter

import mqtt5raw as raw
from broker_fuzz_model import (
    ANSWER_S, Client, Copy, Inflight, LiveExp, Msg, RetExp, Sub, assign, describe_packet,
    gen_filter, gen_topic, matches, packet_ids, packet_size, props_problem)
from broker_fuzz_ops import BrokerOps
from e2e_util import IS_MOSQUITTO

SEED = int(os.environ.get("IOTHUBD_FUZZ_SEED") or 2207)
COUNT = int(os.environ.get("IOTHUBD_FUZZ_COUNT") or 5000)
NCLIENTS = 4
OPS = [("op_publish", 44), ("op_publish_resume", 2), ("op_subscribe", 17),
       ("op_unsubscribe", 6), ("op_disconnect", 8), ("op_takeover", 3), ("op_ping_all", 2)]


class FuzzRun(BrokerOps):
    def __init__(self, broker, seed=SEED):
        self.broker, self.seed = broker, seed
        self.rng = random.Random(seed)
        self.step, self.step_no = "setup", 0
        self.history = []
        self.counts = Counter()
        self.msgs = {}           # attribution key (payload, or fz-id) -> Msg
        self.next_key = self.seq = self.next_sid = 0
        self.sids = []           # Subscription Identifiers used by plain subscriptions
        self.used_sids = set()
        self.retained = {}       # topic -> Msg, the retained store
        self.groups = {}         # (message id, (group, filter)) -> members and takers
        self.open_groups = set()
        self.clients = [Client("c%d" % i, "bf%d-c%d" % (seed, i)) for i in range(NCLIENTS)]
        self.obs = Client("obs", "bf%d-obs" % seed)
        self.all = self.clients + [self.obs]

    # ------------------------------------------------------------ reporting
    def fail(self, msg, cl=None, traced=()):
        head = "[IOTHUBD_FUZZ_SEED=%d IOTHUBD_FUZZ_COUNT=%d step %s%s] " % (
            self.seed, COUNT, self.step, " client %s (%s)" % (cl.label, cl.cid) if cl else "")
        text = head + msg + "\nlast operations:\n  " + "\n  ".join(self.history[-8:])
        for c in ([cl] if cl else []) + [c for c in traced if c is not cl]:
            text += "\nlast packets of %s (<- from the server, -> to it):\n  %s" % (
                c.label, "\n  ".join(list(c.trace)[-12:]))
        raise AssertionError(text)

    def trace(self, cl, conn, arrow, text):
        cl.trace.append("%s %s conn %d %s %s" % (self.step, cl.label, getattr(conn, "fz_epoch", 0),
                                                 arrow, text[:200]))

    def check(self, cond, msg, cl=None):
        if not cond:
            self.fail(msg, cl)

    def note(self, cl, text):
        if len(text) > 300:
            text = text[:300] + "..."
        self.history.append("%s %s: %s" % (self.step, cl.label if cl else "-", text))
        del self.history[:-50]

    # ------------------------------------------------------------ reading
    def buffered(self, conn):
        out = []
        while True:
            try:
                parsed = conn._try_parse()
                if not parsed:
                    return out
                out.append(raw.Packet(parsed[0], parsed[1], parsed[2], conn.version))
            except (ValueError, KeyError, IndexError) as e:
                self.fail("undecodable packet from the server: %r" % e)

    def poll(self, clients, timeout):
        """Judges what arrives on these clients' connections, waiting up to
        `timeout` for the first bytes."""
        ready = [(cl, p) for cl in clients for p in self.buffered(cl.conn)]
        if not ready:
            socks = {cl.conn.sock: cl for cl in clients}
            readable, _, _ = select.select(list(socks), [], [], max(0.0, timeout))
            for s in readable:
                cl = socks[s]
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.fail("the server closed the connection", cl)
                cl.conn.buf += data
                ready += [(cl, p) for p in self.buffered(cl.conn)]
        for cl, p in ready:
            if not self.judge(cl, cl.conn, p, closing=False):
                self.fail("unexpected %s" % describe_packet(p), cl)

    def wait_for(self, cl, ptype, pid, what):
        """Reads cl's connection (judging deliveries) until a packet of
        ptype (with packet id pid, if not None)."""
        deadline = time.monotonic() + ANSWER_S
        while True:
            try:
                p = cl.conn.recv(max(0.01, deadline - time.monotonic()))
            except raw.Timeout:
                self.fail("no %s within %.0f s (hang?)" % (what, ANSWER_S), cl)
            except raw.ConnectionClosed:
                self.fail("the server closed the connection while we waited for " + what, cl)
            except (ValueError, KeyError, IndexError) as e:
                self.fail("undecodable packet from the server: %r" % e, cl)
            if self.judge(cl, cl.conn, p, closing=False):
                continue
            if p.type == ptype and (pid is None or p.packet_id == pid):
                return p
            self.fail("unexpected %s while waiting for %s" % (describe_packet(p), what), cl)

    def ping(self, cl):
        cl.conn.pingreq()
        self.wait_for(cl, raw.PINGRESP, None, "PINGRESP")

    def drain_closed(self, cl, conn, expect=None):
        """Reads a connection we closed (or that a take-over closes) until
        the server closes it. Late deliveries are judged but not acknowledged
        any more. `expect`: the reason code of the DISCONNECT the server
        must send first (0x8E for a take-over [MQTT-3.1.4-3])."""
        got_disconnect = False
        while True:
            try:
                p = conn.recv(ANSWER_S)
            except raw.ConnectionClosed:
                break
            except raw.Timeout:
                self.fail("the server did not close the connection within %.0f s" % ANSWER_S, cl)
            except (ValueError, KeyError, IndexError) as e:
                self.fail("undecodable packet from the server: %r" % e, cl)
            self.check(not got_disconnect, "%s after the server's DISCONNECT" %
                       describe_packet(p), cl)
            if self.judge(cl, conn, p, closing=True):
                continue
            self.check(expect is not None and p.type == raw.DISCONNECT and
                       p.reason_code == expect, "unexpected %s on a closing connection%s" % (
                           describe_packet(p), "" if expect is None else
                           " (expected DISCONNECT 0x%02x)" % expect), cl)
            self.trace(cl, conn, "<-", "DISCONNECT 0x%02x" % p.reason_code)
            got_disconnect = True
        if expect is not None and not got_disconnect:
            # Mosquitto 2.0.11 closes the old connection of a take-over
            # without DISCONNECT 0x8E (fixed in 2.0.15), and may close for a
            # protocol error without DISCONNECT (README "deviations")
            self.check(IS_MOSQUITTO, "the connection was closed without DISCONNECT 0x%02x "
                       "(%s)" % (expect, "MQTT-3.1.4-3" if expect == 0x8E else "4.13"), cl)
            self.counts["closed without DISCONNECT 0x%02x (mosquitto)" % expect] += 1

    # ------------------------------------------------------------ judging
    def attribute(self, cl, p):
        key = p.payload.split(b".")[0]     # the key, then filler
        if not key:
            ids = [v for k, v in p.properties.get("UserProperty", []) if k == "fz-id"]
            key = ids[0].encode() if ids else b""
        msg = self.msgs.get(key)
        self.check(msg is not None, "a PUBLISH nobody published: %s" % describe_packet(p), cl)
        return msg

    def judge(self, cl, conn, p, closing):
        """Handles a PUBLISH or PUBREL that arrived on conn (a connection of
        cl); False for any other packet."""
        self.trace(cl, conn, "<-" if not closing else "<- (closing)", describe_packet(p))
        if p.type == raw.PUBREL:
            self.on_pubrel(cl, p, closing)
            return True
        if p.type != raw.PUBLISH:
            return False
        self.counts["PUBLISH received"] += 1
        mps = getattr(conn, "fz_mps", None)
        # (Mosquitto 2.0.11 sends one byte more than the limit: module doc)
        self.check(mps is None or packet_size(p) <= mps + IS_MOSQUITTO, "a %d-byte PUBLISH, "
                   "the client's Maximum Packet Size is %s (MQTT-3.1.2-24): %s" % (
                       packet_size(p), mps, describe_packet(p)), cl)
        self.resolve_alias(cl, conn, p)
        what = describe_packet(p)
        msg = self.attribute(cl, p)
        self.check(p.topic == msg.topic and p.payload == msg.payload, "%s is not %r" % (
            what, msg), cl)
        problem = props_problem(msg, p, time.monotonic())
        self.check(problem is None, "%s: %s" % (what, problem), cl)
        if p.qos == 0:
            self.check(not p.dup, "DUP 1 at QoS 0 (MQTT-3.3.1-2): " + what, cl)
        else:
            self.check(p.packet_id, "packet id 0 (MQTT-2.2.1-4): " + what, cl)
        if p.qos and p.packet_id in cl.discarded:
            # once discarded as too large it was complete [MQTT-3.1.2-25]
            self.check(not (p.dup and cl.discarded[p.packet_id] is msg),
                       "resent although discarded as if completed (MQTT-3.1.2-25): %s, packet "
                       "id %d was not resent on an earlier connection, too large for it: %s" % (
                           cl.label, p.packet_id, what), cl)
            del cl.discarded[p.packet_id]     # the id is free again
        fl = cl.inflight.get(p.packet_id) if p.qos else None
        if fl is not None:
            return self.on_resend(cl, p, fl, msg, what, closing)
        # a required one first: an optional one left over from an earlier
        # SUBSCRIBE (never sent) must not take the copy of a required one
        ret = min((r for r in cl.rets if r.msg is msg and r.fits(p)),
                  key=lambda r: r.optional, default=None) if p.retain else None
        if ret is not None:
            cl.rets.remove(ret)
            self.counts["retained received" + (" (optional)" if ret.optional else "")] += 1
            self.check(not p.dup or cl.epoch > ret.epoch, "DUP 1 on the first sending of a "
                       "retained message (MQTT-3.3.1-1): %s" % what, cl)
        else:
            self.on_copy(cl, p, msg, what)
        if p.qos:
            cl.inflight[p.packet_id] = Inflight(msg, p, "pub", cl.epoch)
            self.check_quota(cl, what)
            self.acknowledge(cl, p, closing)
        return True

    def check_quota(self, cl, what):
        """[MQTT-3.3.4-9, 4.9.0-2]: no more QoS 1/2 PUBLISH packets without
        PUBACK/PUBCOMP (or a refusal) than the client's Receive Maximum.
        Counted per connection, as the send quota of 4.9 is: a PUBLISH sent
        on an earlier connection counts once it is sent again, so the
        resends after a reconnect must be paced by the new connection's
        Receive Maximum too. Not on Mosquitto 2.0.11, whose quota is wrong
        after the first window (README "deviations"), and which also
        resends everything at once."""
        if not cl.rm or IS_MOSQUITTO:
            return
        n = sum(f.sent_epoch == cl.epoch for f in cl.inflight.values())
        self.check(n <= cl.rm, "%d QoS 1/2 PUBLISH packets sent on this connection are "
                   "unfinished, the client's Receive Maximum is %d (MQTT-3.3.4-9, 4.9.0-2): %s" % (
                       n, cl.rm, what), cl)

    def resolve_alias(self, cl, conn, p):
        """A Topic Alias from the server (3.3.2.3.4): none if the client
        allows none [MQTT-3.1.2-27], else 1 up to its Topic Alias Maximum
        [MQTT-3.3.2-8, 3.1.2-26, 3.3.2-11]; with a topic it sets the
        mapping, without one it uses it; a mapping lasts one connection
        [MQTT-3.3.2-7]. Replaces p.topic by the topic it stands for."""
        alias = p.properties.pop("TopicAlias", None)
        if alias is None:
            self.check(p.topic, "a PUBLISH with neither a topic nor a Topic Alias (3.3.2.1): "
                       "%r" % p, cl)
            return
        tam = getattr(conn, "fz_tam", 0)
        self.check(1 <= alias <= tam, "Topic Alias %d, the client's Topic Alias Maximum is %d "
                   "(MQTT-3.1.2-26/27, 3.3.2-8/11): %r" % (alias, tam, p), cl)
        if p.topic:
            conn.fz_aliases[alias] = p.topic
            self.counts["topic aliases set"] += 1
        else:
            self.check(alias in conn.fz_aliases, "Topic Alias %d used before it was set on this "
                       "connection (MQTT-3.3.2-7; aliases %r): %r" % (alias, conn.fz_aliases, p),
                       cl)
            p.topic = conn.fz_aliases[alias]
            self.counts["topic aliases used"] += 1

    def on_copy(self, cl, p, msg, what):
        exp = cl.live.get(msg.mid)
        self.check(exp is not None, "%s: no subscription of this session explains it (%r; "
                   "subscriptions %s; retained due %s)" % (what, msg, sorted(cl.subs.values(),
                                                                           key=repr), cl.rets),
                   cl)
        # A first sending has DUP 0 [MQTT-3.3.1-1]; DUP 1 on a packet we never
        # saw is fine only if the session reconnected since the message was
        # routed (the first sending may have been lost with the connection).
        self.check(not p.dup or cl.epoch > exp.epoch, "DUP 1 on a first delivery: " + what, cl)
        self.counts["first copy with DUP 1 after a reconnect"] += p.dup
        exp.copies.append(Copy(p.qos, p.retain, packet_ids(p), p.dup))
        exp.complete = None
        self.counts["copies"] += 1
        self.counts["copies beyond the first"] += len(exp.copies) > 1
        self.check(exp.feasible(cover=False), "%s does not fit the subscriptions (MQTT-3.3.4-2"
                   "..5, 3.8.4-8, 3.3.1-12/13): %s" % (what, exp.describe()), cl)
        for sid in set(packet_ids(p)):
            sub = next((e[0] for e in exp.entries if e[0].sid == sid and e[0].group), None)
            if sub is not None:
                g = self.groups[(msg.mid, (sub.group, sub.tflt))]
                g["takers"].add(cl.cid)
                self.check(len(g["takers"]) == 1, "%r went to %s of shared group %s/%s: one "
                           "session only (4.8.2)" % (msg, sorted(g["takers"]), sub.group,
                                                     sub.tflt), cl)
        if not p.dup and not msg.will:
            # [MQTT-4.6.0-6]: in order, per publisher, topic and QoS (both the
            # published and the delivered QoS the same: the weaker reading)
            key = (msg.publisher, msg.topic, msg.qos, p.qos)
            if (key, msg.mid) not in cl.order_seen:
                cl.order_seen.add((key, msg.mid))
                self.check(msg.seq > cl.order.get(key, 0), "%s arrived after a later message "
                           "of %s on %s at QoS %d (MQTT-4.6.0-6)" % (
                               what, msg.publisher, msg.topic, p.qos), cl)
                cl.order[key] = msg.seq

    def on_resend(self, cl, p, fl, msg, what, closing):
        """A PUBLISH with a packet id the client has not acknowledged: must be
        the resend after a reconnect [MQTT-4.4.0-1], with DUP 1, in the
        original order [MQTT-4.6.0-1], the same packet otherwise."""
        self.check(fl.state == "pub", "%s reuses packet id %d, whose QoS 2 flow is at %s "
                   "(MQTT-2.2.1-4)" % (what, p.packet_id, fl.state), cl)
        self.check(p.dup, "%s: packet id %d is still unacknowledged (%r): a new message "
                   "must not reuse it (MQTT-2.2.1-4), a resend must have DUP 1 (MQTT-3.3.1-1)" %
                   (what, p.packet_id, fl.msg), cl)
        self.check(p.packet_id in cl.resend, "%s: a resend without a reconnect "
                   "(MQTT-4.4.0-1)" % what, cl)
        # those skipped must be ones the server could discard as too large
        skipped = cl.resend[:cl.resend.index(p.packet_id)]
        due = [pid for pid in skipped if pid not in cl.resend_opt]
        self.check(not due, "%s: resent before packet id %s, which was sent first "
                   "(MQTT-4.6.0-1)" % (what, due), cl)
        self.check(msg is fl.msg and p.qos == fl.qos and p.retain == fl.retain and
                   packet_ids(p) == fl.ids, "%s: the resend differs from the first sending "
                   "(%r q%d retain %d ids %s)" % (what, fl.msg, fl.qos, fl.retain, fl.ids), cl)
        for pid in skipped:
            self.discard(cl, pid)
        del cl.resend[:len(skipped) + 1]
        self.counts["resends"] += 1
        fl.sent_epoch = cl.epoch
        self.check_quota(cl, what)
        self.acknowledge(cl, p, closing)
        return True

    def acknowledge(self, cl, p, closing):
        what = "PUBACK" if p.qos == 1 else "PUBREC"
        choice = "withhold" if closing else self.ack_choice(cl, p, what)
        if choice == "withhold":
            return
        code = 0x80 if choice == "refuse" else 0
        self.trace(cl, cl.conn, "->", "%s %d 0x%02x" % (what, p.packet_id, code))
        if p.qos == 1:
            cl.conn.puback(p.packet_id, code)
            del cl.inflight[p.packet_id]
        elif code:
            # the flow ends here: no PUBREL (MQTT-4.3.3-4 sends it only
            # after a PUBREC below 0x80), the packet id is free again
            cl.conn.pubrec(p.packet_id, code)
            del cl.inflight[p.packet_id]
        else:
            cl.conn.pubrec(p.packet_id)
            cl.inflight[p.packet_id].state = "rel"

    def on_pubrel(self, cl, p, closing):
        pid = p.packet_id
        fl = cl.inflight.get(pid)
        self.check(fl is not None and fl.state in ("rel", "comp") and p.reason_code == 0,
                   "PUBREL %r for packet id %d, which is %s" % (
                       p, pid, "at " + fl.state if fl else "unknown"), cl)
        if fl.state == "comp":
            self.check(pid in cl.rel_due, "PUBREL %d again without a reconnect "
                       "(MQTT-4.4.0-1)" % pid, cl)
        if pid in cl.rel_due:
            cl.rel_due.discard(pid)
            self.counts["PUBREL resends"] += 1
        fl.state = "comp"
        if closing or self.ack_choice(cl, p, "PUBCOMP") == "withhold":
            return
        self.trace(cl, cl.conn, "->", "PUBCOMP %d" % pid)
        cl.conn.pubcomp(pid)
        del cl.inflight[pid]

    # ------------------------------------------------------------ settling
    def missing(self):
        out = ["%s: %s" % (cl.label, m) for cl in self.all if cl.online for m in cl.missing()]
        for key in sorted(self.open_groups):
            g = self.groups[key]
            if g["takers"]:
                self.open_groups.discard(key)
            elif not g["maybe"] and not g["loose"]:
                out.append("a member of shared group %s for message %d" % (key[1], key[0]))
        return out

    def settle(self, what):
        """Waits until every online session has what the model requires."""
        self.step = "%s (%s)" % (self.step_no, what)
        deadline = time.monotonic() + ANSWER_S
        while True:
            missing = self.missing()
            if not missing:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail("after %.0f s still missing (hang or loss):\n  %s" % (
                    ANSWER_S, "\n  ".join(missing[:12])),
                    traced=[c for c in self.all if any(m.startswith(c.label + ":")
                                                      for m in missing)])
            self.poll([cl for cl in self.all if cl.online], min(left, 0.2))

    def quiet(self, seconds):
        """Anything still arriving is judged: an unexpected packet fails."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.poll([cl for cl in self.all if cl.online], deadline - time.monotonic())

    # ------------------------------------------------------------ the run
    def run(self, count):
        self.connect(self.obs, plain=True)
        for cl in self.clients:
            self.connect(cl)
        self.settle("setup")
        names, weights = zip(*OPS)
        for step in range(count):
            self.step_no = self.step = step
            offline = [cl for cl in self.clients if not cl.online]
            overdue = [cl for cl in offline if step - cl.offline_since > 12]
            if overdue or (offline and self.rng.random() < 0.3) or len(offline) == NCLIENTS:
                cl = overdue[0] if overdue else self.rng.choice(offline)
                self.counts["op_connect"] += 1
                self.op_connect(cl)
            else:
                cl = self.rng.choice([c for c in self.clients if c.online])
                op = self.rng.choices(names, weights)[0]
                self.counts[op] += 1
                getattr(self, op)(cl)
            if cl.online:
                self.ping(cl)
            if step % 25 == 24:
                self.op_ping_all(None)
        self.final()

    def final(self):
        self.step = self.step_no = "final"
        for cl in self.clients:
            if not cl.online:
                self.connect(cl, clean=False)
        self.settle("final reconnect")
        self.quiet(0.3)
        self.op_ping_all(None)
        self.settle("final")
        for cl in self.all:
            self.close_conn(cl, 0x00)
        self.check(not self.missing(), "missing at the end: %s" % self.missing())


def test_oracles():
    """The model's own edge cases, so that a wrong oracle cannot pass as a
    lenient broker."""
    assert matches("#", "a/b") and matches("a/#", "a") and matches("+/+", "a/b")
    assert not matches("#", "$fz/a") and not matches("+/a", "$fz/a") and matches("$fz/#", "$fz")
    assert not matches("a/+", "a") and not matches("a/+", "a/b/c") and matches("$fz/+", "$fz/a")
    rng = random.Random(1)
    for _ in range(500):
        t, f = gen_topic(rng), gen_filter(rng)
        assert "#" not in f[:-1] and (not t.startswith("$") or not matches("+/" + t[1:], t))
    m = Msg(1, "p", "a/b", b"x", 2, True, {}, False, 1, time.monotonic())
    a, b, c = Sub("a/+", 1, False, True, 0, 7), Sub("#", 2, False, False, 0, None), \
        Sub("a/b", 0, False, False, 0, 7)

    def exp(subs, online=True, copies=()):
        e = LiveExp(m, [(s, min(m.qos, s.qos), m.retain if s.rap else False, False)
                        for s in subs], online, 1)
        e.copies = [Copy(q, r, ids, False) for q, r, ids in copies]
        return e
    # one copy for both: the max QoS and both identifiers [MQTT-3.3.4-4]
    assert exp([a, b], copies=[(2, True, [7])]).feasible(True)
    assert exp([a, b], copies=[(2, False, [7])]).feasible(True)
    assert not exp([a, b], copies=[(1, True, [7])]).feasible(True)
    assert not exp([a, b], copies=[(2, False, [])]).feasible(True)
    # one copy each [MQTT-3.3.4-5], in either order; a third is one too many
    assert exp([a, b], copies=[(2, False, []), (1, True, [7])]).feasible(True)
    assert not exp([a, b], copies=[(2, False, []), (1, True, [7]), (1, True, [7])]).feasible(False)
    # copies still on their way: not complete, but not wrong either
    assert exp([a, b], copies=[(1, True, [7])]).feasible(False)
    assert not exp([a, b], copies=[(1, True, [7])]).feasible(True)
    # RETAIN only through Retain As Published [MQTT-3.3.1-12]
    assert not exp([b], copies=[(2, True, [])]).feasible(False)
    # the same identifier on two subscriptions: once or twice, not three times
    assert exp([a, c], copies=[(1, True, [7])]).feasible(True)
    assert exp([a, c], copies=[(1, False, [7, 7])]).feasible(True)
    assert not exp([a, c], copies=[(1, False, [7, 7, 7])]).feasible(False)
    # offline: the QoS 0 copy may be dropped, the QoS 1 one not
    assert exp([a, c], online=False, copies=[(1, True, [7])]).feasible(True)
    assert not exp([a, c], online=False).feasible(True)
    assert exp([c], online=False).feasible(True) and not exp([c]).feasible(True)
    assert assign([], [], frozenset())
    r = RetExp(m, Sub("a/#", 1, False, False, 0, 9), False, 1)

    class P:
        retain, qos, properties = True, 1, {"SubscriptionIdentifier": [9]}
    assert r.fits(P)
    P.qos = 2
    assert not r.fits(P)
    m.props = {"UserProperty": [("k", "1"), ("k", "")], "MessageExpiryInterval": 100}
    P.properties = {"UserProperty": [("k", "1"), ("k", "")], "MessageExpiryInterval": 100}
    assert props_problem(m, P, m.t_pub) is None
    P.properties = {"UserProperty": [("k", ""), ("k", "1")], "MessageExpiryInterval": 100}
    assert props_problem(m, P, m.t_pub)
    P.properties = {"UserProperty": [("k", "1"), ("k", "")], "MessageExpiryInterval": 101}
    assert props_problem(m, P, m.t_pub)
    P.properties = {"UserProperty": [("k", "1"), ("k", "")], "MessageExpiryInterval": 97}
    assert props_problem(m, P, m.t_pub + 2.5) is None
    assert props_problem(m, P, m.t_pub)
    check_run_oracles()


class FakePublish:
    type, name = raw.PUBLISH, "PUBLISH"

    def __init__(self, msg, qos, pid=None, dup=False, ids=()):
        self.topic, self.payload, self.qos, self.packet_id = msg.topic, msg.payload, qos, pid
        self.retain, self.dup = False, dup
        self.properties = {"SubscriptionIdentifier": list(ids)} if ids else {}


def check_run_oracles():
    """The checks that live in FuzzRun: order per publisher, topic and QoS
    [MQTT-4.6.0-6], resends only after a reconnect and in the original
    order [MQTT-4.4.0-1, 4.6.0-1], one member per shared group."""
    def fresh():
        run = FuzzRun(None, seed=1)
        cl = run.clients[0]
        cl.exists, cl.epoch = True, 1
        cl.subs = {"a": Sub("a", 1, False, False, 0, None), "b": Sub("b", 1, False, False, 0, 5)}
        return run, cl

    def msg(run, topic, qos=1, publisher="p"):
        key = run.new_key()
        m = run.new_msg(publisher, topic, key, qos, False, {}, key)
        run.route(m)
        return m

    def fails(f, *args):
        try:
            f(*args)
        except AssertionError:
            return True
        return False
    run, cl = fresh()
    m1, m2, m3 = msg(run, "a"), msg(run, "a"), msg(run, "b")
    run.on_copy(cl, FakePublish(m3, 1, 1, ids=[5]), m3, "m3")   # another topic: no order
    run.on_copy(cl, FakePublish(m2, 1, 2), m2, "m2")
    assert fails(run.on_copy, cl, FakePublish(m1, 1, 3), m1, "m1")
    run, cl = fresh()
    m1, m2 = msg(run, "a"), msg(run, "a", qos=0)
    run.on_copy(cl, FakePublish(m2, 0), m2, "m2")                 # another QoS: no order
    run.on_copy(cl, FakePublish(m1, 1, 1), m1, "m1")
    assert fails(run.on_copy, cl, FakePublish(m1, 1, 2), m1, "m1 twice")
    m3 = msg(run, "a")
    assert fails(run.on_copy, cl, FakePublish(m3, 1, 3, dup=True), m3, "DUP 1, first sending")
    run, cl = fresh()
    m1, m2 = msg(run, "a"), msg(run, "a")
    for pid, m in ((7, m1), (8, m2)):
        cl.inflight[pid] = Inflight(m, FakePublish(m, 1, pid), "pub", 1)
    assert fails(run.on_resend, cl, FakePublish(m1, 1, 7, dup=True), cl.inflight[7], m1, "",
                 False)                                           # no reconnect yet
    cl.resend = [7, 8]
    assert fails(run.on_resend, cl, FakePublish(m2, 1, 8, dup=True), cl.inflight[8], m2, "",
                 False)                                           # 8 before 7
    assert fails(run.on_resend, cl, FakePublish(m1, 1, 7), cl.inflight[7], m1, "", False)
    run, cl = fresh()
    other = run.clients[1]
    for c in (cl, other):
        c.exists, c.subs = True, {"$share/g/a": Sub("$share/g/a", 1, False, False, 0, 9)}
    m = msg(run, "a")
    assert run.missing() == ["a member of shared group ('g', 'a') for message %d" % m.mid]
    run.on_copy(cl, FakePublish(m, 1, 1, ids=[9]), m, "")
    assert fails(run.on_copy, other, FakePublish(m, 1, 1, ids=[9]), m, "")


def test_broker_fuzz(broker_factory):
    # Four event loops for five client ids (iothubd): most deliveries cross
    # loops, and connections migrate to their id's loop. Mosquitto 2.0.11
    # keeps a slot of its window (max_inflight_messages, 20) for every QoS 1/2
    # message it discards as too large (module doc): a wide window there.
    broker = broker_factory(extra_args=("--threads", "4"), **(
        {"receive_maximum": 65535} if IS_MOSQUITTO else {}))
    started = time.monotonic()
    run = FuzzRun(broker)
    try:
        run.run(COUNT)
    finally:
        for cl in run.all:
            if cl.conn is not None:
                cl.conn.close()
    print("broker fuzz (%s): seed %d, %d steps in %.1f s; %s" % (
        broker.target, SEED, COUNT, time.monotonic() - started, dict(sorted(run.counts.items()))))

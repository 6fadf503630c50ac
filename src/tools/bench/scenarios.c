/*
 * tools/bench/scenarios.c — see scenarios.h.
 *
 * Rate mode gives each thread its share of the total rate as tokens
 * (refilled every iteration, the thread waking at least every millisecond)
 * and hands each token to the client at the head of the thread's send ring:
 * a FIFO of the ready clients that have a free window slot (a client goes
 * back to the tail after sending if it still has one, and re-enters when a
 * PUBACK frees one), so dealing a token is O(1) however many windows are
 * full. A token finding the ring empty (every window full) is counted as
 * window_full rather than queued, so an overloaded server shows up as
 * errors and a lower rate, not as an ever-growing backlog inside the load
 * generator. Latency is measured from the moment the message is queued for
 * sending.
 *
 * Fan-out flow control is global: the publisher compares what it sent
 * times the subscriber count with the deliveries all threads have
 * reported (batched per iteration into one atomic add per thread). If
 * deliveries stall for a second (a broker dropping QoS 0 messages), the
 * missing ones are written off as not_delivered so the run goes on.
 */
#include "tools/bench/scenarios.h"

#include <stdio.h>

#include "tools/bench/scenarios_hub.h"
#include <string.h>

#define QOS0_BURST_OUT_LIMIT (64u * 1024u)
#define FANOUT_STALL_NS 1000000000ull
#define RESTART_DELAY_NS 100000000ull
#define NS_PER_S 1000000000ull

static enum bench_phase phase_of(const bench_thread *t)
{
    return (enum bench_phase)atomic_load_explicit(&t->run->phase, memory_order_acquire);
}

unsigned scenario_client_count(const bench_options *o)
{
    return o->scenario == SCENARIO_FANOUT ? o->subscribers + 1 : o->clients;
}

enum bench_phase scenario_phase(const bench_thread *t)
{
    return phase_of(t);
}

unsigned scenario_ready_target(const bench_options *o)
{
    return o->scenario == SCENARIO_CONNECT ? 0 : scenario_client_count(o);
}

/* ---- telemetry ----------------------------------------------------------- */

/* Queues one telemetry message on c; false when its window is full. */
static bool telemetry_send(bench_thread *t, bench_client *c, uint64_t now)
{
    const bench_run *run = t->run;
    const bench_options *o = run->opt;
    char topic_buf[160];
    mqtt_bytes topic;
    if (run->creds) {
        topic = MQTT_BYTES_LIT("$iothub/telemetry");
    } else {
        int n = snprintf(topic_buf, sizeof topic_buf, "%s/t/%u", o->topic_prefix, c->index);
        topic = (mqtt_bytes){(const uint8_t *)topic_buf, (uint32_t)n};
    }
    uint16_t packet_id = 0;
    if (o->qos == 1) {
        if (c->free_count == 0)
            return false;
        uint16_t slot = c->free_slots[--c->free_count];
        c->sent_ns[slot] = now;
        packet_id = (uint16_t)(slot + 1);
    }
    if (!proto_put_publish(&c->out, o->mqtt_version, topic, o->qos, packet_id, run->payload,
                           o->payload)) {
        bench_count_error(t, ERR_OUT_OF_MEMORY);
        return false;
    }
    t->stats.sent++;
    bench_client_mark_dirty(t, c);
    return true;
}

/* As fast as possible: fill the client's window (QoS 1) or queue a burst
 * while its socket keeps up (QoS 0). */
static void telemetry_fill(bench_thread *t, bench_client *c, uint64_t now)
{
    if (c->state != CLIENT_READY)
        return;
    if (t->run->opt->qos == 1) {
        while (c->free_count > 0 && telemetry_send(t, c, now))
            ;
        return;
    }
    if (!c->writable || bench_buf_pending(&c->out) > QOS0_BURST_OUT_LIMIT)
        return;
    for (unsigned i = 0; i < t->run->opt->window; i++)
        if (!telemetry_send(t, c, now))
            break;
}

/* Whether c may send now: ready, and a free slot where replies are
 * windowed (QoS 1 telemetry, twin requests). */
static bool may_send(const bench_thread *t, const bench_client *c)
{
    const bench_options *o = t->run->opt;
    bool windowed = o->scenario == SCENARIO_TWIN || o->qos == 1;
    return c->state == CLIENT_READY && (!windowed || c->free_count > 0);
}

/* The next client of the send ring that may send; clients that closed or
 * filled their window since they were queued leave the ring here. */
static bench_client *next_sender(bench_thread *t)
{
    bench_client *c;
    while ((c = bench_ring_pop(t)) != NULL && !may_send(t, c))
        ;
    return c;
}

void scenario_rate_tick(bench_thread *t, uint64_t now,
                        bool (*send)(bench_thread *t, bench_client *c, uint64_t now))
{
    const bench_options *o = t->run->opt;
    double share = o->rate * (double)t->client_count / (double)t->run->total_clients;
    t->tokens += share * (double)(now - t->last_tick_ns) / 1e9;
    t->last_tick_ns = now;
    double cap = (double)t->client_count * o->window;
    if (t->tokens > cap)
        t->tokens = cap;
    while (t->tokens >= 1.0) {
        bench_client *c = next_sender(t);
        if (!c) {
            uint64_t missed = (uint64_t)t->tokens;
            t->stats.errors[ERR_WINDOW_FULL] += missed;
            t->tokens -= (double)missed;
            break;
        }
        t->tokens -= 1.0;
        send(t, c, now);
        if (may_send(t, c))
            bench_ring_push(t, c);
    }
}

static void telemetry_tick(bench_thread *t, uint64_t now)
{
    if (phase_of(t) != PHASE_RUN || t->client_count == 0)
        return;
    if (!t->filled) {
        t->filled = true;
        t->last_tick_ns = now;
        if (t->run->opt->rate > 0)
            return;
    }
    if (t->run->opt->rate > 0) {
        scenario_rate_tick(t, now, telemetry_send);
        return;
    }
    /* QoS 1 windows refill from the PUBACKs; only QoS 0 needs a push. */
    if (t->run->opt->qos == 0 || !t->filled_once) {
        t->filled_once = true;
        for (unsigned i = 0; i < t->client_count; i++)
            telemetry_fill(t, &t->clients[i], now);
    }
}

static void telemetry_on_puback(bench_thread *t, bench_client *c, const mqtt_ack *a)
{
    unsigned slot = (unsigned)a->packet_id - 1u;
    if (a->packet_id == 0 || slot >= c->window || c->sent_ns[slot] == 0) {
        bench_count_error(t, ERR_DECODE);
        return;
    }
    uint64_t sent = c->sent_ns[slot];
    c->sent_ns[slot] = 0;
    c->free_slots[c->free_count++] = (uint16_t)slot;
    if (a->reason >= 0x80) {
        bench_count_reason(t, REASON_PUBACK, a->reason);
    } else if (phase_of(t) == PHASE_RUN && sent >= t->run->run_start_ns) {
        t->stats.acked++;
        hist_record(&t->stats.latency, bench_latency_ns(t, sent));
    }
    if (t->run->opt->rate > 0)
        bench_ring_push(t, c);
    else if (phase_of(t) == PHASE_RUN)
        telemetry_send(t, c, bench_now_ns());
}

/* ---- fan-out ------------------------------------------------------------- */

static bool is_publisher(const bench_client *c)
{
    return c->index == 0;
}

static void fanout_on_ready(bench_thread *t, bench_client *c)
{
    if (is_publisher(c)) {
        atomic_fetch_add(&t->run->ready, 1);
        return;
    }
    if (!proto_put_subscribe(&c->out, t->run->opt->mqtt_version, 1, t->run->fanout_topic,
                             t->run->opt->qos))
        bench_count_error(t, ERR_OUT_OF_MEMORY);
    bench_client_mark_dirty(t, c);
}

void scenario_subscriber_on_suback(bench_thread *t, bench_client *c, const mqtt_suback *s)
{
    uint8_t reason = s->count > 0 ? s->reasons[0] : 0x80;
    if (reason >= 0x80) {
        bench_count_reason(t, REASON_SUBACK, reason);
        atomic_fetch_add(&t->run->failed, 1);
        return;
    }
    if (!c->subscribed) {
        c->subscribed = true;
        atomic_fetch_add(&t->run->ready, 1);
    }
}

static void fanout_on_publish(bench_thread *t, const mqtt_publish *p)
{
    if (phase_of(t) != PHASE_RUN || p->payload.len < 8)
        return;
    uint64_t sent;
    memcpy(&sent, p->payload.p, sizeof sent);
    if (sent < t->run->run_start_ns)
        return;
    t->stats.delivered++;
    t->delivered_unpublished++;
    hist_record(&t->stats.latency, bench_latency_ns(t, sent));
}

/* Messages sent but not yet delivered to every subscriber (minus those
 * written off). */
static uint64_t fanout_outstanding(bench_thread *t, uint64_t now)
{
    bench_run *run = t->run;
    uint64_t delivered = atomic_load(&run->fanout_delivered);
    uint64_t expected = atomic_load(&run->fanout_sent) * run->opt->subscribers;
    uint64_t settled = delivered + t->fan_forgiven;
    uint64_t outstanding = expected > settled ? expected - settled : 0;
    if (delivered != t->fan_last_delivered || outstanding == 0) {
        t->fan_last_delivered = delivered;
        t->fan_last_progress_ns = now;
    } else if (now - t->fan_last_progress_ns > FANOUT_STALL_NS) {
        t->fan_forgiven += outstanding;
        t->stats.errors[ERR_NOT_DELIVERED] += outstanding;
        t->fan_last_progress_ns = now;
        outstanding = 0;
    }
    return outstanding;
}

static void fanout_publish(bench_thread *t, bench_client *c, uint64_t now)
{
    bench_buf *out = &c->out;
    if (!proto_put_publish(out, t->run->opt->mqtt_version, t->run->fanout_topic, t->run->opt->qos,
                           1, t->run->payload, t->run->opt->payload)) {
        bench_count_error(t, ERR_OUT_OF_MEMORY);
        return;
    }
    /* The payload is the packet's last bytes: stamp its first 8 with the
     * send time (same host, same monotonic clock as the receivers). */
    memcpy(out->data + out->len - t->run->opt->payload, &now, sizeof now);
    atomic_fetch_add(&t->run->fanout_sent, 1);
    t->stats.sent++;
    bench_client_mark_dirty(t, c);
}

static void fanout_tick(bench_thread *t, uint64_t now)
{
    if (t->delivered_unpublished) {
        atomic_fetch_add(&t->run->fanout_delivered, t->delivered_unpublished);
        t->delivered_unpublished = 0;
    }
    if (t->index != 0 || phase_of(t) != PHASE_RUN)
        return;
    bench_client *pub = &t->clients[0];
    if (pub->state != CLIENT_READY)
        return;
    const bench_options *o = t->run->opt;
    if (!t->filled) {
        t->filled = true;
        t->last_tick_ns = now;
        t->fan_last_progress_ns = now;
    }
    uint64_t budget = UINT64_MAX;
    if (o->rate > 0) {
        t->tokens += o->rate * (double)(now - t->last_tick_ns) / 1e9;
        t->last_tick_ns = now;
        if (t->tokens > o->rate)
            t->tokens = o->rate;
        budget = (uint64_t)t->tokens;
        t->tokens -= (double)budget;
    }
    uint64_t limit = (uint64_t)o->window * o->subscribers;
    while (budget-- > 0 && bench_buf_pending(&pub->out) < QOS0_BURST_OUT_LIMIT &&
           fanout_outstanding(t, now) < limit)
        fanout_publish(t, pub, bench_now_ns());
}

/* ---- connection storm ---------------------------------------------------- */

static void connect_on_ready(bench_thread *t, bench_client *c)
{
    if (phase_of(t) == PHASE_RUN && c->started_ns >= t->run->run_start_ns) {
        t->stats.connects_in_run++;
        hist_record(&t->stats.latency, bench_latency_ns(t, c->started_ns));
    }
    proto_put_disconnect(&c->out, t->run->opt->mqtt_version);
    bench_client_flush_now(t, c);
    bench_client_close(t, c);
    if (phase_of(t) != PHASE_STOP)
        bench_client_start(t, c);
}

/* ---- idle ---------------------------------------------------------------- */

static uint64_t keepalive_ns(const bench_thread *t)
{
    return (uint64_t)t->run->opt->keepalive_s * NS_PER_S;
}

static void idle_on_scan(bench_thread *t, bench_client *c, uint64_t now)
{
    if (c->state != CLIENT_READY || t->run->opt->keepalive_s == 0)
        return;
    uint64_t allowed = keepalive_ns(t) / 2 > NS_PER_S ? keepalive_ns(t) / 2 : NS_PER_S;
    if (c->ping_sent_ns && now - c->ping_sent_ns > allowed) {
        bench_count_error(t, ERR_KEEPALIVE_MISS);
        c->ping_sent_ns = 0; /* one miss per ping */
        c->next_ping_ns = now + keepalive_ns(t);
        return;
    }
    if (!c->ping_sent_ns && now >= c->next_ping_ns) {
        proto_put_pingreq(&c->out, t->run->opt->mqtt_version);
        c->ping_sent_ns = now;
        t->stats.pings++;
        bench_client_mark_dirty(t, c);
    }
}

/* ---- hooks --------------------------------------------------------------- */

void scenario_on_ready(bench_thread *t, bench_client *c)
{
    switch (t->run->opt->scenario) {
    case SCENARIO_FANOUT:
        fanout_on_ready(t, c);
        return;
    case SCENARIO_CONNECT:
        connect_on_ready(t, c);
        return;
    case SCENARIO_IDLE:
        c->next_ping_ns = c->ready_ns + keepalive_ns(t);
        atomic_fetch_add(&t->run->ready, 1);
        return;
    case SCENARIO_TWIN:
    case SCENARIO_METHODS:
    case SCENARIO_C2D:
        hub_scenario_on_ready(t, c);
        return;
    default:
        atomic_fetch_add(&t->run->ready, 1);
        if (t->run->opt->rate > 0)
            bench_ring_push(t, c);
        else if (phase_of(t) == PHASE_RUN)
            telemetry_fill(t, c, bench_now_ns());
        return;
    }
}

void scenario_on_closed(bench_thread *t, bench_client *c, bool was_ready)
{
    if (t->run->opt->scenario == SCENARIO_CONNECT && phase_of(t) != PHASE_STOP) {
        c->state = CLIENT_IDLE;
        c->next_ping_ns = bench_now_ns() + RESTART_DELAY_NS; /* restart time */
        return;
    }
    c->state = CLIENT_FAILED;
    if (!was_ready && phase_of(t) == PHASE_SETUP)
        atomic_fetch_add(&t->run->failed, 1);
}

void scenario_on_publish(bench_thread *t, bench_client *c, const mqtt_publish *p)
{
    if (t->run->opt->scenario == SCENARIO_FANOUT && !is_publisher(c))
        fanout_on_publish(t, p);
    else if (bench_scenario_hub_only(t->run->opt->scenario))
        hub_scenario_on_publish(t, c, p);
}

void scenario_on_puback(bench_thread *t, bench_client *c, const mqtt_ack *a)
{
    if (t->run->opt->scenario == SCENARIO_TELEMETRY)
        telemetry_on_puback(t, c, a);
}

void scenario_on_suback(bench_thread *t, bench_client *c, const mqtt_suback *s)
{
    bench_scenario sc = t->run->opt->scenario;
    if (sc == SCENARIO_FANOUT || sc == SCENARIO_METHODS || sc == SCENARIO_C2D)
        scenario_subscriber_on_suback(t, c, s);
}

void scenario_on_pingresp(bench_thread *t, bench_client *c)
{
    if (c->ping_sent_ns) {
        t->stats.pongs++;
        c->ping_sent_ns = 0;
        c->next_ping_ns = bench_now_ns() + keepalive_ns(t);
    }
}

void scenario_on_scan(bench_thread *t, bench_client *c, uint64_t now)
{
    switch (t->run->opt->scenario) {
    case SCENARIO_IDLE:
        idle_on_scan(t, c, now);
        return;
    case SCENARIO_CONNECT:
        if (c->state == CLIENT_IDLE && c->fd < 0 && c->next_ping_ns && now >= c->next_ping_ns &&
            phase_of(t) != PHASE_STOP)
            bench_client_start(t, c);
        return;
    default:
        return;
    }
}

void scenario_tick(bench_thread *t, uint64_t now)
{
    if (t->run->opt->scenario == SCENARIO_TELEMETRY)
        telemetry_tick(t, now);
    else if (t->run->opt->scenario == SCENARIO_FANOUT)
        fanout_tick(t, now);
    else if (t->run->opt->scenario == SCENARIO_TWIN)
        hub_scenario_tick(t, now);
}

int scenario_poll_timeout_ms(const bench_thread *t)
{
    const bench_options *o = t->run->opt;
    if (phase_of(t) != PHASE_RUN)
        return 20;
    /* Senders that are not driven by acknowledgements wake every
     * millisecond; a zero timeout would spin a CPU the server needs. */
    if (o->scenario == SCENARIO_TELEMETRY)
        return o->rate > 0 || o->qos == 0 ? 1 : 20;
    if (o->scenario == SCENARIO_TWIN)
        return o->rate > 0 ? 1 : 20;
    if (o->scenario == SCENARIO_FANOUT)
        return t->index == 0 ? 1 : 20;
    return 20;
}

/*
 * tools/bench/scenarios.h — what clients do once connected, per scenario.
 *
 *   telemetry  every client publishes; QoS 1 keeps at most `window`
 *              messages unacknowledged per client (as fast as that allows,
 *              or at --rate in total); latency = PUBLISH → PUBACK.
 *   fanout     client 0 publishes QoS 0 to one topic that every other
 *              client subscribed to; the payload carries the send time, so
 *              latency = publish → delivery. As fast as possible means at
 *              most `window` messages per subscriber not yet delivered.
 *   connect    each client loops connect → CONNACK → DISCONNECT → close;
 *              latency = connect() → CONNACK.
 *   idle       clients connect and only keep alive (PINGREQ every Keep
 *              Alive); a PINGRESP later than half the Keep Alive (at least
 *              1 s) is a miss; lost connections are counted.
 *   twin, methods, c2d  the hub's device API (scenarios_hub.h).
 *
 * The engine calls these hooks from the owning thread only.
 */
#ifndef IOTHUBD_BENCH_SCENARIOS_H
#define IOTHUBD_BENCH_SCENARIOS_H

#include "tools/bench/engine.h"

/* How many connections the engine makes for these options. */
unsigned scenario_client_count(const bench_options *o);
/* How many clients must be ready before RUN begins (0: start at once). */
unsigned scenario_ready_target(const bench_options *o);

/* The run's phase as this thread sees it. */
enum bench_phase scenario_phase(const bench_thread *t);
/* SUBACK for a client that subscribed on ready: counts it ready (or
 * failed on a refusal). */
void scenario_subscriber_on_suback(bench_thread *t, bench_client *c, const mqtt_suback *s);

void scenario_on_ready(bench_thread *t, bench_client *c);
void scenario_on_closed(bench_thread *t, bench_client *c, bool was_ready);
void scenario_on_publish(bench_thread *t, bench_client *c, const mqtt_publish *p);
void scenario_on_puback(bench_thread *t, bench_client *c, const mqtt_ack *a);
void scenario_on_suback(bench_thread *t, bench_client *c, const mqtt_suback *s);
void scenario_on_pingresp(bench_thread *t, bench_client *c);
/* Per-client timers, every 100 ms. */
void scenario_on_scan(bench_thread *t, bench_client *c, uint64_t now);
/* Rate mode (--rate): adds this thread's share of the rate to its tokens
 * and deals each whole token to the head of the send ring, calling `send`
 * for that client; a token that finds no client with a free slot is
 * counted as window_full. */
void scenario_rate_tick(bench_thread *t, uint64_t now,
                        bool (*send)(bench_thread *t, bench_client *c, uint64_t now));
/* Once per loop iteration. */
void scenario_tick(bench_thread *t, uint64_t now);
/* How long the thread may sleep in epoll_wait. */
int scenario_poll_timeout_ms(const bench_thread *t);

#endif

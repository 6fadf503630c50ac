/*
 * tools/bench/responder.h — the "ceiling": a minimal MQTT responder that
 * only acknowledges. CONNECT → CONNACK success, PUBLISH QoS 1 → PUBACK,
 * SUBSCRIBE → SUBACK (granted QoS 0), PINGREQ → PINGRESP; everything else
 * is read and dropped. No store, no routing, no session, no validation
 * beyond framing. Measuring iothubd against it shows how much of the
 * machine the load generator and the kernel leave for a server: the
 * fraction of the ceiling a real server reaches.
 */
#ifndef IOTHUBD_BENCH_RESPONDER_H
#define IOTHUBD_BENCH_RESPONDER_H

#include "tools/bench/options.h"

/* Serves on o->host:o->port with o->threads loops until SIGINT/SIGTERM or
 * o->duration_s elapses. Returns a process exit status. */
int bench_responder_run(const bench_options *o);

#endif

/*
 * tools/bench/responder.h — the "ceiling": a minimal MQTT responder that
 * only acknowledges. CONNECT → CONNACK success, PUBLISH QoS 1 → PUBACK,
 * SUBSCRIBE → SUBACK (granted QoS 0), PINGREQ → PINGRESP; everything else
 * is read and dropped. No store, no routing, no session, no validation
 * beyond framing. Measuring iothubd against it shows how much of the
 * machine the load generator and the kernel leave for a server: the
 * fraction of the ceiling a real server reaches.
 *
 * Two options widen it for rows the acknowledgements alone cannot serve:
 * --route forwards each PUBLISH at QoS 0 to the subscribers whose filters
 * match it (fan-out), and --http-port adds the hub's twin answers and
 * the method and C2D relays (responder_hub.c).
 */
#ifndef IOTHUBD_BENCH_RESPONDER_H
#define IOTHUBD_BENCH_RESPONDER_H

#include "tools/bench/options.h"

/* Serves on o->host:o->port with o->threads loops until SIGINT/SIGTERM or
 * o->duration_s elapses. Returns a process exit status. */
int bench_responder_run(const bench_options *o);

#endif

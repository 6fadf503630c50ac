/*
 * tools/bench/scenarios_hub.h — the device side of the hub scenarios
 * (../shared/spec/iothub-mqtt5.md §3 and §6). Every client is a SAS device.
 *
 *   twin     each device keeps `window` requests outstanding, alternating
 *            per slot between Get twin (`$iothub/twin/get`) and Patch
 *            reported (`$iothub/twin/patch/reported`); each request's
 *            Correlation Data names its slot and kind, the response on
 *            `$iothub/responses` echoes it. A round trip is one request
 *            and its response; latency = request queued → response read,
 *            per kind (get in `latency`, patch in `latency2`). With
 *            --rate, requests go out at that total rate instead (each
 *            device alternating kinds, at most `window` outstanding).
 *   methods  devices subscribe `$iothub/methods/+` and answer every
 *            invocation at once on `$iothub/responses` (same Correlation
 *            Data, `response-code` 200, payload `{}`); the calls come from
 *            the service API (httpload.h).
 *   c2d      devices subscribe `$iothub/commands` (QoS 1) and complete
 *            each command at once (the engine's PUBACK 0); the payload is
 *            the sender's clock at POST time, so delivery latency =
 *            POST → PUBLISH read (`latency2`).
 */
#ifndef IOTHUBD_BENCH_SCENARIOS_HUB_H
#define IOTHUBD_BENCH_SCENARIOS_HUB_H

#include "tools/bench/engine.h"

void hub_scenario_on_ready(bench_thread *t, bench_client *c);
void hub_scenario_on_publish(bench_thread *t, bench_client *c, const mqtt_publish *p);
/* twin: fills every window once when RUN begins, or (--rate) deals this
 * iteration's tokens. */
void hub_scenario_tick(bench_thread *t, uint64_t now);

/* Twin Correlation Data: slot (2 bytes, little-endian) and kind. */
enum { TWIN_GET = 0, TWIN_PATCH = 1, TWIN_CORRELATION_LEN = 3 };
void twin_correlation_encode(uint16_t slot, uint8_t kind, uint8_t out[TWIN_CORRELATION_LEN]);
/* False when the bytes are not a twin correlation this tool made. */
bool twin_correlation_decode(mqtt_bytes data, uint16_t *slot, uint8_t *kind);
/* The code byte of a hub `status` ("0504" → 0x04); false if malformed. */
bool hub_status_code(mqtt_bytes status, uint8_t *code);
/* c2d payload: the send clock, decimal ns. 0 when malformed. */
uint64_t c2d_stamp_parse(mqtt_bytes payload);

#endif

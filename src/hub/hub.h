/*
 * hub/hub.h — the IoT Hub application of the broker: devices connecting
 * with the IoT Hub MQTT 5 API (../shared/spec/iothub-mqtt5.md).
 *
 * The hub is THE broker_app of iothubd. It serves the clients whose
 * CONNECT names the Authentication Method `SAS` or `X509` (the devices and
 * modules of the registry): authentication and re-authentication, the
 * IoT Hub limits in CONNACK, the `$iothub/` topic table, requests and
 * responses, telemetry and desired-property notifications. Every other
 * client (no Authentication Method, or the open broker's
 * IOTHUBD-HMAC-SHA256) is handed to the open broker (broker/open_app.h),
 * the hub's delegate, when the open broker serves anyone at all; the hub
 * keeps the `$iothub/` topic space closed to those clients.
 *
 * Threads: the callbacks run on the broker's loops; the registry, twin and
 * command-queue listeners and direct-method calls may run on any loop and
 * reach a device through the broker (hub_set_broker): its client id names
 * the loop that serves it, where the broker's session map tells which
 * connection, if any, is the device's now (see hub.c).
 */
#ifndef IOTHUBD_HUB_HUB_H
#define IOTHUBD_HUB_HUB_H

#include <stdbool.h>

#include "broker/broker.h"
#include "broker/open_app.h"
#include "hub/c2d.h"
#include "hub/registry.h"
#include "hub/telemetry.h"
#include "hub/throttle.h"
#include "hub/twin.h"

typedef struct hub_config {
    const char *hostname;              /* the hub host name (`host`, SNI) */
    const broker_limits *server_limits; /* the server's; devices get IoT Hub's */
    bool open_topics;                  /* devices may also use the open topic space */
    bool open_clients;                 /* the open broker accepts anyone (anonymous
                                          or a password file) */
    hub_throttle *throttle;            /* rate limits and quota, shared with the
                                          service API; NULL = none */
} hub_config;

typedef struct hub hub;

/*
 * Creates the hub over the registry, twins and telemetry (twins and
 * telemetry may be NULL: their operations then answer 0601 Server Error)
 * and the open broker `open` (may be NULL: no open clients). Installs the
 * registry change listener and the twins' desired listener. NULL when out
 * of memory.
 */
hub *hub_new(const hub_config *cfg, hub_registry *reg, hub_twins *twins, hub_telemetry *tel,
             open_app *open);
/* After the loops have stopped (every client is gone). */
void hub_free(hub *h);
/* Fills `out` with the hub's callbacks, to give to broker_new. */
void hub_bind(hub *h, broker_app *out);
/* The broker made with those callbacks, through which the hub finds
 * connected devices. Right after broker_new: before the loops run and
 * before anything can change the registry, the twins or the command
 * queues (their listeners reach devices through it). */
void hub_set_broker(hub *h, broker *b);
/* Connects the cloud-to-device command queues (hub/c2d.h): delivery on
 * $iothub/commands and PUBACK settlement. Before the loops run. */
void hub_set_c2d(hub *h, hub_c2d *c2d);

#endif

/*
 * hub/methods.h — direct methods: a back end calls a method on a connected
 * device and gets the device's answer (../shared/spec/iothub-mqtt5.md §6
 * "Receive direct methods", §7 "Direct methods"; service-rest.md "Direct
 * methods").
 *
 * The caller (the service API, on the loop of its HTTP connection) starts
 * a call with hub_method_invoke; the hub publishes it to the device at
 * QoS 0 on `$iothub/methods/{name}` with fresh Correlation Data, and the
 * device's reply on `$iothub/responses` with the same Correlation Data
 * completes it. The outcome always comes back through `done`, exactly
 * once, on the caller's loop (see methods.c for the life of a call).
 */
#ifndef IOTHUBD_HUB_METHODS_H
#define IOTHUBD_HUB_METHODS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hub/status.h"
#include "net/loop.h"

#define HUB_METHOD_PAYLOAD_MAX (128 * 1024) /* each way */
#define HUB_METHOD_NAME_MAX 128             /* bytes */
#define HUB_METHOD_RESPONSE_TIMEOUT_MIN 5   /* seconds */
#define HUB_METHOD_RESPONSE_TIMEOUT_MAX 300
#define HUB_METHOD_RESPONSE_TIMEOUT_DEFAULT 30
#define HUB_METHOD_CONNECT_TIMEOUT_MAX 300  /* 0 (the default) = online now */

typedef struct hub hub;
typedef struct hub_methods hub_methods;

typedef struct hub_method_invocation {
    const char *device_id;
    const char *module_id;       /* NULL or "" for the device itself */
    const char *method_name;     /* hub_method_name_valid */
    const char *payload;         /* the bytes the device gets (JSON text) */
    size_t payload_len;          /* <= HUB_METHOD_PAYLOAD_MAX */
    unsigned response_timeout_s; /* 5..300 */
    unsigned connect_timeout_s;  /* 0..300 */
} hub_method_invocation;

/*
 * The outcome of a call:
 *   HUB_OK                  the device answered: response_code, payload
 *   HUB_TARGET_UNAVAILABLE  06A0: not connected, or not subscribed to the
 *                           method, within the connect timeout
 *   HUB_TARGET_TIMEOUT      06A1: no answer within the response timeout
 *   HUB_TARGET_FAILED       06A2: an answer without a valid response-code,
 *                           or with a payload over 128 KB
 *   HUB_SERVER_ERROR        out of memory, or the server is stopping
 * `reason` is a human sentence for failures (never NULL).
 */
typedef struct hub_method_result {
    hub_status status;
    uint32_t response_code;
    const uint8_t *payload; /* valid during the callback only */
    size_t payload_len;
    const char *reason;
} hub_method_result;

/* `loop` is the caller's loop, or NULL when the server is shutting down
 * (the loops are gone; the callback must only release what it holds). */
typedef void (*hub_method_done_fn)(net_loop *loop, void *arg, const hub_method_result *r);

/* The hub's direct-method engine (lives as long as the hub). */
hub_methods *hub_methods_of(hub *h);

/* A method name usable as one topic level: 1..HUB_METHOD_NAME_MAX bytes,
 * no '/', '+', '#' and no control characters. */
bool hub_method_name_valid(const char *name);

/*
 * Starts a call. Must run on `loop` (a loop of the server: the caller's
 * timers live there). Returns HUB_OK when the call is under way: `done`
 * will run exactly once, later, on `loop`, also for a device that is not
 * online (06A0: whether it is connected is known only on its own loop).
 * Any other status means nothing was started and `done` will never run:
 * HUB_BAD_REQUEST (arguments out of range; *why says which),
 * HUB_SERVER_ERROR (out of memory).
 */
hub_status hub_method_invoke(hub_methods *m, const hub_method_invocation *inv, net_loop *loop,
                             hub_method_done_fn done, void *arg, const char **why);

#endif

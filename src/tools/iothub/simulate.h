/*
 * tools/iothub/simulate.h — `iothub simulate`: a device that uses the hub's
 * MQTT 5 API (../shared/spec/iothub-mqtt5.md §1–§6) so a newcomer can watch
 * telemetry, twins, methods and commands work.
 *
 * The simulator is one struct owned by the command's run: settings from the
 * command line, the MQTT connection, the SAS token and when to renew it, the
 * telemetry messages waiting for PUBACK and the requests waiting for a
 * response on $iothub/responses. Three files share it:
 *   simulate.c       the command: options, key, CONNECT/AUTH with SAS,
 *                    subscriptions, the timed loop, stopping;
 *   sim_inbound.c    what the hub sends: PUBACKs, responses, desired
 *                    changes (reported back), methods, commands, AUTH,
 *                    DISCONNECT; and the one-line-per-event output;
 *   simulate_util.c  pure helpers (address parsing, sensor readings, the
 *                    reported patch for a desired patch, property lookup).
 */
#ifndef IOTHUB_CLI_SIMULATE_H
#define IOTHUB_CLI_SIMULATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "tools/iothub/cli.h"
#include "tools/iothub/mqtt_client.h"
#include "tools/iothub/token.h"

#define SIM_INFLIGHT_MAX 16 /* the hub's Receive Maximum */
#define SIM_PENDING_MAX 16  /* twin requests awaiting a response */
#define SIM_BODY_MAX 128

/* ---- pure helpers (simulate_util.c) ---------------------------------------------- */

/* "HOST:PORT", "HOST", "[V6]:PORT" or "[V6]" into host and port (port =
 * default_port when absent). False for an empty host or a bad port. */
bool sim_parse_address(const char *text, uint16_t default_port, char *host, size_t cap,
                       uint16_t *port);

/* A simulated sensor: a bounded random walk, reproducible from its seed. */
typedef struct sim_sensor {
    uint64_t rng;         /* generator state */
    int temperature_dc;   /* tenths of a degree Celsius */
    int humidity_dpct;    /* tenths of a percent */
} sim_sensor;

void sim_sensor_init(sim_sensor *s, uint64_t seed);
/* Moves the readings one step and writes
 * {"temperature":T,"humidity":H,"seq":N} into buf. False if it does not fit. */
bool sim_sensor_next(sim_sensor *s, uint64_t seq, char *buf, size_t cap);

/* The reported-properties patch that acknowledges a desired patch: the same
 * object without the `$`-prefixed metadata ($version, ...). NULL when the
 * payload is not a JSON object. */
json_t *sim_reported_for_desired(const uint8_t *payload, size_t len);

/* The value of the first user property `name`, copied as a C string into
 * buf; NULL when absent or too long. */
const char *sim_user_prop(const mqtt_props *props, const char *name, char *buf, size_t cap);

/* "2026-01-02T03:04:05Z" for a time in ms since the epoch (UTC). */
void sim_format_utc(uint64_t epoch_ms, char *buf, size_t cap);

/* ---- the simulator ------------------------------------------------------------------ */

/* What the command line asked for, checked. */
typedef struct sim_settings {
    const char *device, *module;
    uint64_t interval_ms;
    uint64_t count;          /* 0 = until Ctrl-C */
    uint64_t sas_duration_s; /* token lifetime; renewed at 80 % */
    char host[CLI_FIELD_MAX]; /* the hub's host name: `host` property, SNI */
    mqttc_endpoint endpoint;
    char address[CLI_FIELD_MAX]; /* endpoint.host points here */
} sim_settings;

/* A QoS 1 telemetry message waiting for its PUBACK. */
typedef struct sim_inflight {
    uint16_t packet_id;
    uint64_t seq;
    char body[SIM_BODY_MAX];
} sim_inflight;

typedef enum sim_request_kind { SIM_TWIN_GET, SIM_PATCH_REPORTED } sim_request_kind;

/* A twin request waiting for its response (matched by Correlation Data). */
typedef struct sim_request {
    bool used;
    uint32_t correlation;
    sim_request_kind kind;
    char *patch; /* SIM_PATCH_REPORTED: the patch sent (malloc'd), for the output */
} sim_request;

typedef struct simulator {
    cli_ctx *ctx;
    sim_settings set;
    char key[CLI_FIELD_MAX];
    mqttc conn;
    bool connected;
    uint16_t receive_maximum; /* from CONNACK, at most SIM_INFLIGHT_MAX */
    uint16_t keep_alive_s;    /* ours, or the Server Keep Alive */
    cli_device_token token;   /* the one in force */
    uint64_t reauth_at_ms;    /* wall clock: when to renew the token */
    bool reauth_sent;
    sim_sensor sensor;
    uint64_t sent, acknowledged, refused;
    sim_inflight inflight[SIM_INFLIGHT_MAX];
    size_t inflight_count;
    sim_request requests[SIM_PENDING_MAX];
    uint32_t last_correlation;
    uint64_t last_write_ms;   /* monotonic, for keep-alive */
    bool ping_outstanding;
    char err[512];            /* why the run failed */
} simulator;

/* Prints one event: the human line `text`, or with --json the compact
 * event object, which this consumes (may be NULL: out of memory). */
void sim_emit(simulator *s, json_t *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sends a packet; false with s->err set. */
bool sim_send(simulator *s, const mqtt_packet *pkt);

/* Publishes a twin request (QoS 0, Correlation Data) with an optional JSON
 * payload (patch, NULL for Get twin), remembering it for the response. */
bool sim_send_request(simulator *s, sim_request_kind kind, const json_t *patch);

/* Handles one packet from the hub. False when the run must end (s->err
 * says why). */
bool sim_handle_packet(simulator *s, const mqtt_packet *pkt);

/* "Not authorized (0x87), status 0101: ..." for a refusal: the reason code
 * with its name, the `status` and `reason` user properties and the Reason
 * String when present. */
void sim_describe_refusal(uint8_t reason, const mqtt_props *props, char *buf, size_t cap);

/* Releases the requests' patches. */
void sim_requests_clear(simulator *s);

#endif

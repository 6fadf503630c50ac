/*
 * hub/hub_internal.h — what the files of the IoT Hub application share
 * (hub.c, connect.c, topics.c, requests.c, properties.c, commands.c,
 * methods.c), and nothing outside them.
 *
 * Two kinds of state:
 *   struct hub         process-wide and read-only once the loops run.
 *   struct hub_client  one per device connection (SAS or X509), the
 *                      broker client's app data; touched only on the loop
 *                      that serves the connection.
 * Clients the open broker serves carry the open broker's app data instead;
 * which one a client is follows from its Authentication Method alone
 * (hub_is_device_client), which never changes for a connection.
 */
#ifndef IOTHUBD_HUB_HUB_INTERNAL_H
#define IOTHUBD_HUB_HUB_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "hub/hub.h"
#include "hub/status.h"
#include "mqtt/codec.h"

#define HUB_METHOD_SAS "SAS"
#define HUB_METHOD_X509 "X509"
#define HUB_API_VERSION "2020-10-01-preview"
#define HUB_HOST_MAX 255
#define HUB_POLICY_MAX 63
#define HUB_CORRELATION_MAX 16

typedef struct hub_methods hub_methods;

struct hub {
    hub_config cfg;
    char *hostname;            /* owned copy of cfg.hostname */
    broker_limits device_limits;
    broker *b;                 /* hub_set_broker: finds connected devices */
    hub_registry *reg;
    hub_twins *twins;          /* may be NULL */
    hub_telemetry *tel;        /* may be NULL */
    open_app *open;            /* may be NULL */
    broker_app open_cbs;       /* the open broker's callbacks */
    hub_methods *methods;      /* methods.c */
    hub_c2d *c2d;              /* commands.c; NULL until hub_set_c2d */
};

/* Storage for the properties of one answer (PUBACK, DISCONNECT, CONNACK)
 * that the broker reads after the callback that filled it has returned. */
typedef struct hub_answer_buf {
    uint8_t users[640];
    char reason[200];
    char status[5];
} hub_answer_buf;

/* One device connection, kept in its broker client's app data (the same
 * block: no allocation and no pointer of its own). Sized for an idle
 * connection: the client id is the broker's (broker_client_get_info), the
 * module id is read from it (hub_client_module), and a device's id is its
 * client id; the answer buffer exists only once the device was refused
 * something (hub_client_answer). Only what differs from those defaults is
 * stored, in `strings`, each NUL-terminated: the sas-policy (first), then
 * the device id when the client is a module, then the host when the
 * device signed another name than the hub's. A device that signs with its
 * own key on the hub's name (the usual case) has no strings at all.
 * Read-only once the client is accepted. */
typedef struct hub_client {
    char *strings;            /* NULL: no policy, not a module, the hub's name */
    hub_answer_buf *answer;   /* NULL until first needed */
    uint16_t device_at;       /* the device id's offset in strings; 0 = the client id */
    uint16_t host_at;         /* the host's offset in strings; 0 = the hub's name */
    bool live;                /* accepted, and not yet disconnected */
    bool x509;                /* else SAS */
    bool connected;           /* connected() ran: the registry was told */
} hub_client;

/* A broker client's app data (broker_app.client_data_size): a device's
 * hub_client, or, for an open-broker client, the open app's pointer. */
typedef union hub_client_data {
    hub_client device;
    void *open_state;
} hub_client_data;

static inline broker_client *hub_client_broker(const hub_client *hc)
{
    return broker_client_of_app_data((void *)hc);
}

/* "dev" or "dev/mod": the broker's copy, NUL-terminated. */
static inline const char *hub_client_id(const hub_client *hc)
{
    return (const char *)broker_client_get_info(hub_client_broker(hc))->client_id.p;
}

static inline const char *hub_client_device_id(const hub_client *hc)
{
    return hc->device_at ? hc->strings + hc->device_at : hub_client_id(hc);
}

/* The client's Maximum Packet Size (0 = none), kept by the broker. */
static inline uint32_t hub_client_max_packet(const hub_client *hc)
{
    return broker_client_get_info(hub_client_broker(hc))->max_packet;
}

/* The module id ("" for a device): what follows '/' in the client id. */
static inline const char *hub_client_module(const hub_client *hc)
{
    const char *slash = strchr(hub_client_id(hc), '/');
    return slash ? slash + 1 : "";
}

/* The sas-policy the device signed with ("" when none). */
static inline const char *hub_client_policy(const hub_client *hc)
{
    return hc->strings ? hc->strings : "";
}

/* Fixed-size storage for the strings while a CONNECT is judged, before
 * what the client keeps is known (hub_client_init). */
typedef struct hub_client_ids {
    char client_id[HUB_IDENTITY_KEY_MAX];
    char device_id[HUB_ID_MAX + 1];
    char module_id[HUB_ID_MAX + 1];
    char host[HUB_HOST_MAX + 1];
    char policy[HUB_POLICY_MAX + 1];
} hub_client_ids;

/* ---- hub.c ------------------------------------------------------------ */
/* Whether this client is the hub's (SAS or X509) rather than the open broker's. */
bool hub_is_device_client(const broker_client *c);
/* The hub's data of an accepted device client; NULL for an open-broker
 * client, and for a device not yet accepted or already disconnected. */
hub_client *hub_client_of(const broker_client *c);
/* Makes c's app data an accepted device with these ids (policy, host and
 * device id copied when they differ from the defaults); false when out of
 * memory. */
bool hub_client_init(const hub *h, broker_client *c, const hub_client_ids *ids, bool x509);
/* The host the device signed: its own, or the hub's name. */
const char *hub_client_host(const hub_client *hc, const hub *h);
/* Frees what the client holds and marks it gone (hub_client_of: NULL). */
void hub_client_release(hub_client *hc);
/* The client's answer buffer, allocated on first use and kept until the
 * client goes (a device refused once is likely refused again); NULL when
 * memory runs out, which hub_answer_failure accepts. */
hub_answer_buf *hub_client_answer(hub_client *hc);
/* Reaching a device from any thread (see hub.c): the loop that serves the
 * client id whenever it is connected, where a task then finds the device
 * connected under it now (hub_find_device; NULL when none is). */
net_loop *hub_device_loop(const hub *h, const char *client_id);
/* On hub_device_loop(client_id) only. */
hub_client *hub_find_device(const hub *h, net_loop *loop, const char *client_id);

/* ---- connect.c -------------------------------------------------------- */
void hub_authenticate_device(hub *h, broker_client *c, const mqtt_connect *pkt);
void hub_reauthenticate_device(hub *h, hub_client *hc, const mqtt_reason_packet *pkt);
/* The SAS token's expiry (the broker client's deadline) has passed:
 * DISCONNECT 0x87. */
void hub_sas_expired(hub_client *hc);
/* Whether a registry change must end the connections of `old`. */
bool hub_identity_change_revokes(const hub_identity *old, const hub_identity *now);

/* ---- properties.c ----------------------------------------------------- */
/* Decimal unsigned numbers (the spec's u32, u64 and time types): digits
 * only, no sign, no leading '+', at least one digit, no overflow. */
bool hub_parse_u64(mqtt_bytes v, uint64_t *out);
bool hub_parse_u32(mqtt_bytes v, uint32_t *out);
/* Copies a slice into a NUL-terminated string; false if it does not fit
 * or holds a NUL. */
bool hub_copy_str(mqtt_bytes v, char *out, size_t cap);
bool hub_bytes_eq_nocase(mqtt_bytes a, const char *s);
/* Fills `out` with a failure answer: reason code from the status
 * (or `reason_code` when non-zero), user properties `status` and `reason`,
 * Reason String = reason. Trimmed to `max_packet` for a packet of `type`
 * (PUBACK or DISCONNECT) by dropping user properties from the end, then
 * the Reason String. Storage in `buf`; with buf NULL (out of memory)
 * the answer is the bare reason code. */
void hub_answer_failure(hub_answer_buf *buf, uint8_t type, hub_status st, uint8_t reason_code,
                        const char *reason, uint32_t max_packet, broker_answer *out);
/* Sends `payload` on $iothub/responses at QoS 0 echoing `correlation`,
 * with `status`/`reason` on failure and `version` when has_version. */
void hub_send_response(hub_client *hc, mqtt_bytes correlation, hub_status st, const char *reason,
                       bool has_version, uint64_t version, const char *payload, size_t len);

/* ---- topics.c --------------------------------------------------------- */
typedef enum hub_topic {
    HUB_TOPIC_UNDEFINED,        /* under $iothub/ but not in the table */
    HUB_TOPIC_OPEN,             /* not under $iothub/ */
    HUB_TOPIC_TELEMETRY,
    HUB_TOPIC_TWIN_GET,
    HUB_TOPIC_TWIN_PATCH_REPORTED,
    HUB_TOPIC_RESPONSES,
} hub_topic;
hub_topic hub_topic_of(mqtt_bytes topic);
bool hub_topic_reserved(mqtt_bytes topic_or_filter);
/* SUBSCRIBE by a device: granted QoS or a SUBACK failure code;
 * *open set when the filter belongs to the open topic space. */
uint8_t hub_subscribe_rule(mqtt_bytes filter, uint8_t qos, bool *open);
/* Whether a filter is a method subscription ($iothub/methods/...). */
bool hub_is_methods_filter(mqtt_bytes filter);
broker_publish_action hub_device_publish(hub *h, hub_client *hc, mqtt_bytes topic,
                                         const mqtt_publish *pkt, broker_answer *answer);

/* ---- requests.c ------------------------------------------------------- */
/* A publish the hub answers by its Correlation Data (a twin request, a
 * method reply) must come at QoS 0 with 1..HUB_CORRELATION_MAX bytes of
 * it. True when it does; otherwise answers the device (a failed PUBACK
 * with qos_error for QoS > 0, a DISCONNECT for unusable Correlation Data,
 * logged as a `what`) and sets *action to what the handler returns. */
bool hub_correlated_publish_ok(hub_client *hc, const mqtt_publish *pkt, const char *what,
                               const char *qos_error, broker_answer *answer,
                               broker_publish_action *action);
broker_publish_action hub_handle_request(hub *h, hub_client *hc, hub_topic kind,
                                         const mqtt_publish *pkt, broker_answer *answer);
broker_publish_action hub_handle_telemetry(hub *h, hub_client *hc, const mqtt_publish *pkt,
                                           broker_answer *answer);

/* ---- methods.c -------------------------------------------------------- */
hub_methods *hub_methods_new(hub *h);
/* After the loops are gone: completes the calls still under way. */
void hub_methods_free(hub_methods *m);
/* On the device's loop: the client connected, or was granted a method
 * subscription; wakes the calls waiting for it (connectTimeoutInSeconds). */
void hub_methods_device_ready(hub_methods *m, net_loop *loop, const char *client_id);
/* A device's PUBLISH on $iothub/responses: a direct-method reply. */
broker_publish_action hub_methods_reply(hub *h, hub_client *hc, const mqtt_publish *pkt,
                                        broker_answer *answer);

/* ---- commands.c (cloud-to-device; no-ops until hub_set_c2d) ------------ */
/* Asks for a delivery on the device's loop (connect, SUBSCRIBE granted). */
void hub_commands_may_deliver(hub *h, hub_client *hc);
void hub_commands_disconnected(hub *h, hub_client *hc);
void hub_commands_settled(hub *h, hub_client *hc, uint64_t app_tag, const mqtt_ack *ack);
void hub_commands_identity_changed(hub *h, const hub_identity *old, const hub_identity *now);

#endif

/*
 * broker/broker.h — the MQTT session engine, and the interface it offers
 * to the application that gives it meaning.
 *
 * The broker speaks MQTT 3.1.1 and 5.0 to clients: CONNECT and
 * authentication (including AUTH exchanges), keep-alive, sessions and their
 * expiry, QoS 0/1/2 in both directions with Receive Maximum, topic aliases,
 * packet size limits, subscriptions, retained messages, shared
 * subscriptions and Will messages. It knows nothing of IoT Hub: an
 * *application* (broker_app) decides who may connect and what a PUBLISH
 * means. The open broker (broker/open_app.c) routes every PUBLISH to
 * subscribers; the IoT Hub (hub/) handles its $iothub/ topics itself.
 *
 * Threads: the broker runs on every event loop. After CONNECT names the
 * client id, the connection is moved to the loop that owns that id
 * (hash(client id) mod N), so a session and everything about it (take-over,
 * expiry, queued messages) is touched by one thread only and needs no lock.
 * Only the subscription trie and the retained store are shared (see
 * topic_tree.h); messages for subscribers on other loops travel through the
 * loops' mailboxes in batches.
 *
 * Asynchronous application answers: an application that cannot decide at
 * once (a database read, a store commit before PUBACK) keeps the client's
 * id and handle (broker_client_handle) and calls back later *on the
 * client's loop* (post to broker_client_loop first), where
 * broker_client_lookup finds the client again if it is still connected
 * (the loop's session map, by id: the broker keeps no index of its own by
 * handle) and is the same connection (the handle: a reconnection has
 * another).
 */
#ifndef IOTHUBD_BROKER_BROKER_H
#define IOTHUBD_BROKER_BROKER_H

#include <stdbool.h>
#include <stdint.h>

#include "broker/message.h"
#include "mqtt/packet.h"
#include "net/conn.h"
#include "net/server.h"

typedef struct broker broker;
typedef struct broker_client broker_client;

/* What the server offers in CONNACK and enforces. */
typedef struct broker_limits {
    uint16_t receive_maximum;      /* inbound QoS>0 window per client */
    uint8_t maximum_qos;           /* 1 or 2 */
    bool retain_available;
    uint32_t maximum_packet_size;  /* inbound, whole packet */
    uint16_t topic_alias_maximum;  /* inbound aliases we accept */
    bool wildcard_available;
    bool sub_ids_available;
    bool shared_available;
    uint16_t max_keepalive;        /* seconds; 0 = accept what clients ask */
    uint32_t max_session_expiry;   /* seconds; UINT32_MAX = no cap */
    uint32_t max_subscriptions;    /* per client; beyond: SUBACK 0x97 */
    uint32_t max_queued_messages;  /* per session, QoS>0 awaiting delivery */
    uint32_t max_queued_bytes;     /* per session, their topics + payloads; 0 = no cap */
    uint32_t connect_timeout_ms;   /* CONNECT must arrive within this */
} broker_limits;

void broker_limits_default(broker_limits *l);

/* A client as the application sees it. */
typedef struct broker_client_info {
    mqtt_bytes client_id;         /* as sent (may be empty before assignment) */
    const char *username;         /* NUL-terminated; NULL if none */
    uint32_t max_packet;          /* the client's Maximum Packet Size; 0 = none */
    uint8_t protocol_version;     /* MQTT_V311 or MQTT_V5 */
    bool request_problem_info;    /* Request Problem Information (MQTT 5) */
    /* (small fields last: they fill what was the struct's tail padding) */
} broker_client_info;

typedef uint64_t broker_client_handle; /* 0 = none */

/* How the application disposes of an inbound PUBLISH. */
typedef enum broker_publish_action {
    BROKER_PUBLISH_ROUTE,    /* the broker routes it to subscribers */
    BROKER_PUBLISH_DONE,     /* handled; acknowledge with *reason now */
    BROKER_PUBLISH_PENDING,  /* handled; app calls broker_publish_complete */
    BROKER_PUBLISH_REFUSE,   /* QoS>0: PUBACK *reason; QoS 0: DISCONNECT *reason */
} broker_publish_action;

/* Properties an application adds to an answer (CONNACK, PUBACK, AUTH,
 * DISCONNECT): reason string and user properties; copied by the broker. */
typedef struct broker_answer {
    uint8_t reason;
    mqtt_props props;
} broker_answer;

typedef struct broker_app {
    void *ctx;
    /* Bytes the application keeps in each client (broker_client_app_data);
     * 0 gives it one pointer's worth. */
    size_t client_data_size;
    /*
     * CONNECT arrived and is well-formed. Answer with broker_auth_accept,
     * broker_auth_reject or broker_auth_challenge, now or later.
     */
    void (*authenticate)(void *ctx, broker_client *c, const mqtt_connect *pkt);
    /* Optional: limits some clients get instead of the server's (offered
     * in CONNACK and enforced), and which: uses_app_limits, asked with the
     * CONNECT before authenticate. Lets one server offer IoT Hub's limits
     * to devices and its own to open broker clients; a client holds one
     * bit for the choice, not a pointer. Must outlive the broker. */
    const broker_limits *app_limits;
    bool (*uses_app_limits)(void *ctx, const mqtt_connect *pkt);
    /* An AUTH packet (0x18 continue, or 0x19 re-authentication once
     * connected). Answer as for authenticate. NULL = AUTH not supported. */
    void (*auth_packet)(void *ctx, broker_client *c, const mqtt_reason_packet *pkt);
    /* The client is connected (CONNACK sent). */
    void (*connected)(void *ctx, broker_client *c);
    /* The connection is gone (after any Will handling). Called once for
     * every client that authenticate() was called for, connected or not, so
     * the application can free its per-client data. `reason` is the
     * DISCONNECT reason sent or received, or 0x80 for network loss. */
    void (*disconnected)(void *ctx, broker_client *c, uint8_t reason);
    /*
     * May this client subscribe to `filter` (already validated; `group` is
     * non-empty for $share)? Returns the granted QoS (≤ requested), or a
     * SUBACK failure reason code (≥ 0x80).
     */
    uint8_t (*authorize_subscribe)(void *ctx, broker_client *c, mqtt_bytes group,
                                   mqtt_bytes filter, uint8_t requested_qos);
    /*
     * An inbound PUBLISH with its topic resolved (aliases applied). Fill
     * *answer for DONE/REFUSE. For ROUTE, the broker routes and acks.
     */
    broker_publish_action (*publish)(void *ctx, broker_client *c, mqtt_bytes topic,
                                     const mqtt_publish *pkt, broker_answer *answer);
    /* A QoS>0 message the application sent with broker_client_send was
     * settled by the client: its PUBACK, its failing PUBREC, or its PUBCOMP.
     * Messages still unsettled when a connection ends are not reported:
     * disconnected() tells the application, and the session forgets them
     * (a resumed session does not send them again). */
    void (*settled)(void *ctx, broker_client *c, uint64_t app_tag,
                    const mqtt_ack *ack);
    /* Optional: the deadline set with broker_client_set_deadline has
     * passed (it is cleared first; set a new one to hear again). Typically
     * ends the connection (a credential expired). */
    void (*deadline_passed)(void *ctx, broker_client *c);
} broker_app;

/* ---- lifecycle (main) ------------------------------------------------- */

broker *broker_new(net_server *server, const broker_limits *limits,
                   const broker_app *app);
void broker_free(broker *b);
/* Adds an MQTT listener ("host:port"; tls NULL for plain TCP). */
bool broker_listen(broker *b, const char *hostport, const net_tls_config *tls,
                   int *bound_port, char *errbuf, size_t errlen);

/* ---- for the application ---------------------------------------------- */

const broker_client_info *broker_client_get_info(const broker_client *c);
net_conn *broker_client_conn(const broker_client *c);
/* The CONNECT's Authentication Method; p is NULL when it had none. */
mqtt_bytes broker_client_auth_method(const broker_client *c);
broker_client_handle broker_client_get_handle(const broker_client *c);
/* On `loop`: the client connected under this id if it is still the
 * connection with handle h; else NULL (gone, or reconnected since). */
broker_client *broker_client_lookup(broker *b, net_loop *loop, const char *client_id,
                                    size_t len, broker_client_handle h);

/*
 * Finding a connected client by its client id, from any thread, in two
 * steps. The loop that owns a client id's session (and serves its
 * connection once connected: a connected client never leaves it) is a pure
 * function of the id and the number of loops, so any thread may ask for it
 * (broker_owner_net_loop) and post a task there. On that loop the task
 * asks for the client connected under the id *now*
 * (broker_find_connected): the session's attached connection if it is
 * connected, so after a take-over the new connection, and NULL when the
 * id is not connected (or is still authenticating or moving to its loop).
 * The answer holds only for the current task: hold the client no longer.
 */
net_loop *broker_owner_net_loop(broker *b, const char *client_id, size_t len);
/* On `loop` only. NULL also when `loop` is not the id's owner. */
broker_client *broker_find_connected(broker *b, net_loop *loop, const char *client_id,
                                     size_t len);

/* The application's bytes in this client: broker_app.client_data_size of
 * them (at least a pointer's worth), zeroed when the client is created,
 * 8-byte aligned and freed with the client. They live in the client's own
 * block, so a connection costs the application no allocation (and no
 * pointer) of its own. */
void *broker_client_app_data(const broker_client *c);
/* The client whose app data this is (the inverse of the above). */
broker_client *broker_client_of_app_data(void *data);
net_loop *broker_client_loop(const broker_client *c);

/* Answers to authenticate / auth_packet. `assigned_props` may carry
 * CONNACK (or AUTH success) properties such as Authentication Data, a
 * Reason String or user properties; may be NULL. */
void broker_auth_accept(broker_client *c, const mqtt_props *props);
void broker_auth_reject(broker_client *c, uint8_t reason, const mqtt_props *props);
void broker_auth_challenge(broker_client *c, mqtt_bytes auth_data);

/* Completes a PENDING publish of QoS `qos` (1 or 2): PUBACK (or PUBREC)
 * with answer->reason. */
void broker_publish_complete(broker_client *c, uint16_t packet_id, uint8_t qos,
                             const broker_answer *answer);

/* Routes a message to subscribers as if published (the app's own). */
void broker_route(broker *b, net_loop *loop, broker_msg *msg);

/*
 * Sends an application message to this client directly (not through
 * subscriptions), at `qos`. For QoS>0 `app_tag` (non-zero) comes back in
 * settled(). The broker takes its own reference to `msg`. Returns false if
 * it could not be queued (session queue full, client not connected).
 */
bool broker_client_send(broker_client *c, broker_msg *msg, uint8_t qos,
                        uint64_t app_tag);

/* Sets (or moves) the client's deadline: a wall-clock time (ms since the
 * epoch, util/time.h) at which the app's deadline_passed() runs on the
 * client's loop, for a credential that expires; 0 clears it. Any time
 * from authenticate() on: it counts once the client is connected, and the
 * broker checks it on the timer it already keeps for the keep-alive (an
 * application needs no timer of its own per client). Late by as much as
 * the wall clock jumps forward; a clock moved back delays it as much. */
void broker_client_set_deadline(broker_client *c, uint64_t when_wall_ms);

/* Disconnects with a DISCONNECT reason (MQTT 5) and an optional reason
 * string, then closes. */
void broker_client_disconnect(broker_client *c, uint8_t reason, const char *reason_string);
/* The same with DISCONNECT properties: the Reason String and the user
 * properties of `props` are sent (copied), nothing else. */
void broker_client_disconnect_props(broker_client *c, uint8_t reason, const mqtt_props *props);

/* Whether the client's session holds a (non-shared) subscription to exactly
 * this filter: lets an application that sends with broker_client_send honour
 * the client's SUBSCRIBE and UNSUBSCRIBE, including a resumed session's. */
bool broker_client_has_subscription(const broker_client *c, const char *filter);

/* ---- persistent sessions (main connects them to the store) ------------ */

/*
 * Sessions that outlive their connection (non-zero expiry) are written
 * through these calls, made on the session's loop, write-behind (see
 * broker/persist.c for what is written when, and the encodings). The
 * records are opaque to the receiver: it stores them and gives them back
 * to broker_restore_* at the next start, sessions first, then each
 * session's messages in `seq` order.
 */
typedef struct broker_persist {
    void *ctx;
    void (*session_put)(void *ctx, net_loop *loop, const char *client_id, uint32_t expiry_s,
                        const uint8_t *subs, size_t len);
    void (*session_delete)(void *ctx, net_loop *loop, const char *client_id);
    void (*msg_put)(void *ctx, net_loop *loop, const char *client_id, uint64_t seq,
                    const uint8_t *rec, size_t len);
    void (*msg_delete)(void *ctx, net_loop *loop, const char *client_id, uint64_t seq);
} broker_persist;

void broker_set_persist(broker *b, const broker_persist *p);
/* Before net_server_run only. False for a record that cannot be read (it is
 * logged and skipped). */
bool broker_restore_session(broker *b, const char *client_id, uint32_t expiry_s,
                            const uint8_t *subs, size_t len);
bool broker_restore_message(broker *b, const char *client_id, uint64_t seq,
                            const uint8_t *rec, size_t len);

#endif

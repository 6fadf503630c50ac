/*
 * broker/internal.h — the broker's own structures, shared by its files and
 * by nothing outside src/broker/.
 *
 * Three kinds of state:
 *   struct broker        process-wide: limits, the application, the shared
 *                        subscription trie and retained store.
 *   struct broker_loop   one per event loop: the sessions this loop owns,
 *                        the connections it serves, scratch vectors, and
 *                        outgoing batches of deliveries for other loops.
 *   struct broker_client one per network connection (protocol state).
 *   struct session       one per client id, owned by the loop that
 *                        hash(client id) names; outlives connections.
 */
#ifndef IOTHUBD_BROKER_INTERNAL_H
#define IOTHUBD_BROKER_INTERNAL_H

#include <stdatomic.h>

#include "broker/broker.h"
#include "broker/topic_tree.h"
#include "mqtt/codec.h"
#include "util/hmap.h"

typedef struct broker_loop broker_loop;
typedef struct session session;

/* One delivery on its way to a session on another loop. */
typedef struct delivery {
    session *target;   /* holds a reference */
    broker_msg *msg;   /* holds a reference */
    uint8_t qos;
    bool retain;
    uint32_t sub_id;
} delivery;

typedef struct delivery_batch {
    delivery *items;
    size_t len;
    size_t cap;
} delivery_batch;

struct broker {
    net_server *server;
    broker_limits limits;
    broker_app app;
    topic_tree *subs;
    retain_store *retained;
    unsigned nloops;
    broker_loop **loops;
    net_conn_handler handler;
    net_conn_limits conn_limits;
    broker_persist persist;   /* all NULL: sessions live in memory only */
};

struct broker_loop {
    broker *b;
    net_loop *loop;
    unsigned index;
    hmap sessions;            /* client id → session (owned here) */
    topic_match_vec matches;  /* scratch for routing */
    broker_msg_vec retained;  /* scratch for retained delivery */
    delivery_batch *outbox;   /* [nloops]: deliveries for other loops */
    uint64_t assigned_ids;    /* counter for Assigned Client Identifiers */
    uint64_t handles;         /* counter for client handles (on_open) */
};

/* A QoS>0 message to a client: queued, or in flight awaiting its ack. */
typedef struct out_msg {
    struct out_msg *next;
    broker_msg *msg;
    uint64_t app_tag;     /* 0 = routed by subscription, else the app's */
    uint32_t sub_id;
    uint16_t packet_id;   /* assigned when first sent */
    uint64_t seq;         /* key of its persisted record; 0 = none */
    uint8_t qos;
    bool retain;
    bool awaiting_pubcomp; /* QoS 2: PUBREC received, PUBREL sent */
    bool resend_due;       /* sent on an earlier connection, not yet again */
} out_msg;

typedef struct out_list {
    out_msg *head;
    out_msg *tail;
    uint32_t len;
    size_t bytes;     /* topic + payload bytes of the listed messages */
} out_list;

/* A subscription as the session remembers it (to list, replace, count and
 * remove its entries from the shared trie when the session ends). */
typedef struct session_sub {
    char *group;      /* NUL-terminated, "" when not shared */
    char *filter;
    uint8_t options;
    uint32_t sub_id;
} session_sub;

/* What a session holds beyond its identity: subscriptions, messages,
 * inbound QoS 2 ids, a delayed Will and the expiry countdown. An idle
 * device with a clean session has none of them, so this part is allocated
 * the first time one is needed (session_extra) and freed with the session;
 * the core then is 40 bytes plus the client id instead of 232. */
typedef struct session_ext {
    session *s;               /* back from the timers */
    session_sub *subs;
    uint32_t nsubs;
    uint32_t subs_cap;
    hmap *sub_index;          /* over subs, once it is long (subscribe.c) */
    out_list inflight;        /* sent, unacknowledged, in send order */
    uint32_t resends_due;     /* of those, how many have resend_due set */
    out_list queue;           /* waiting for a window or a connection */
    uint16_t *qos2_in;        /* inbound QoS 2 ids awaiting PUBREL */
    uint32_t nqos2_in;
    uint32_t qos2_in_cap;
    uint64_t last_persist_seq; /* last message record key used */
    broker_msg *pending_will; /* delayed Will, published by will_timer */
    net_timer expiry_timer;
    net_timer will_timer;
    uint16_t next_packet_id;
    uint8_t pending_will_qos;
} session_ext;

/* Ordered by size, no padding holes: one is held per connection. */
struct session {
    atomic_uint refs;
    uint32_t expiry_interval; /* seconds; UINT32_MAX = never */
    broker_loop *bl;          /* owner; never changes */
    broker_client *client;    /* attached connection, or NULL */
    session_ext *x;           /* NULL until needed (session_extra) */
    uint16_t client_id_len;   /* MQTT strings are at most 65,535 bytes */
    bool dead;                /* ended: deliveries to it are dropped */
    bool persisted;           /* has a record in the store (persist.c) */
    char client_id[];         /* NUL-terminated, in the same block (one
                                 allocation per session, not two) */
};

/* The session's extra part, allocated on first use; NULL when memory runs
 * out. Readers that only look use session_ext_of, which never allocates. */
session_ext *session_extra(session *s);
/* The extra part, or an empty one (read-only) when there is none. */
const session_ext *session_ext_of(const session *s);

typedef enum client_state {
    CLIENT_AWAIT_CONNECT,
    CLIENT_AUTHENTICATING, /* the app is deciding, or an AUTH exchange */
    CLIENT_MIGRATING,      /* moving to the session's loop */
    CLIENT_CONNECTED,
    CLIENT_CLOSED,
} client_state;

/* Outbound topic aliases of one client, allocated when the first one is
 * recorded: most clients never get one, and an empty map plus its key
 * array would cost every connection 34 bytes. */
typedef struct alias_out_map {
    hmap map;         /* topic → alias number; the keys live in keys[] */
    uint16_t used;    /* aliases 1..used are taken */
    mqtt_bytes keys[]; /* [client_alias_max]: alias n's topic is keys[n - 1] */
} alias_out_map;

/* CONNACK properties from broker_auth_accept, kept until the CONNACK is
 * sent (the connection may move to another loop in between). */
typedef struct connack_pending {
    mqtt_props props;
    uint8_t *mem; /* the strings props points at */
} connack_pending;

/* What only some clients hold: a Will (from CONNECT until the connection
 * ends), the app's CONNACK properties (until CONNACK is sent) and topic
 * aliases (from the first one on). An idle device has none of them, so
 * they live in this part, allocated when the first is needed
 * (client_extra) and freed when the last is gone (client_trim_extra):
 * one pointer in broker_client instead of 37 bytes. */
typedef struct client_ext {
    broker_msg *will;
    /* Answers the app gave before CONNACK could be sent (owned copy),
     * allocated only when there are some and freed once CONNACK is out:
     * a 248-byte property set. */
    connack_pending *connack;
    /* Inbound topic aliases: index 1..limits.topic_alias_maximum. */
    mqtt_bytes *alias_in;
    /* Outbound topic aliases; NULL until the first one. */
    alias_out_map *alias_out;
    uint32_t will_delay;
    uint8_t will_qos;
} client_ext;

/* Ordered for an idle connection's size: within each group 8-byte fields
 * first, then 4-, 2- and 1-byte ones, so the struct has no padding holes
 * (one is held per connection). */
struct broker_client {
    broker_loop *bl;
    broker_client_handle handle;
    broker_client_info info;

    /* From CONNECT, owned copies (the small fields are further down); the
     * client id and the username are info's (NUL-terminated, freed by
     * client_free_connect_state), not held twice. Once the client has a
     * session, its id is the session's bytes (borrow_client_id).
     *
     * The Authentication Method, NUL-terminated (client_auth_method; none
     * unless has_auth_method): in `small` when shorter than 8 bytes (SAS,
     * X509: every device), else an owned copy — a 32-byte block per device
     * less. Its length is read back with strlen (an MQTT string holds no
     * U+0000), which keeps a 16-byte mqtt_bytes out of every client. */
    union {
        char *heap;
        char small[8];
    } auth_method;

    /* The Will, the pending CONNACK properties, the topic aliases: NULL
     * while the client has none of them (client_extra). */
    client_ext *x;

    /* Liveness. One timer, two uses that never overlap: the CONNECT
     * timeout until the client is connected (finish_connect stops it before
     * the liveness timer is first armed; a migrating client has it stopped
     * too), then the keep-alive and the application's deadline
     * (broker_client_set_deadline: a SAS token's expiry), armed for
     * whichever comes first (client_arm_liveness) — one timer and one heap
     * slot per connection instead of one per use. */
    uint64_t deadline_wall_ms;    /* wall clock; 0 = none */
    union {
        net_timer connect_timer;
        net_timer liveness_timer;
    };

    session *session;

    uint32_t session_expiry;      /* requested, capped */
    /* The loop clock's low 32 bits at the last packet (idle_ms): an idle
     * time that matters is far below 2^31 ms (a keep-alive allows at most
     * 65,535 s × 1.5), so the wrapping difference read as signed is exact,
     * in half the bytes. */
    uint32_t last_rx_ms;
    /* Inbound QoS>0 publishes the app has not completed yet (count toward
     * our Receive Maximum), with their QoS (to answer PUBACK or PUBREC). */
    uint32_t pending_in;
    uint16_t keep_alive;          /* effective, seconds */
    uint16_t client_receive_max;  /* outbound window */
    uint16_t client_alias_max;    /* outbound topic aliases allowed */
    uint8_t state;                /* client_state, in one byte */
    uint8_t close_reason;         /* for the app's disconnected() */
    /* One bit each: the client is touched by its own loop only. */
    bool reauthenticating : 1;
    bool assigned_id : 1;
    bool clean_start : 1;
    bool server_keep_alive_sent : 1;
    bool will_suppressed : 1;     /* normal DISCONNECT received */
    bool app_notified : 1;        /* authenticate() was called */
    bool id_in_session : 1;       /* info.client_id is session's (borrow_client_id) */
    bool has_auth_method : 1;     /* the CONNECT had one (auth_method) */
    bool auth_method_on_heap : 1; /* auth_method.heap, else .small */
    bool app_limits : 1;          /* the app's limits, else the server's (client_limits) */
    /* The application's bytes (broker_app.client_data_size), in the same
     * block: the hub keeps its device state here instead of in a block of
     * its own behind a pointer. */
    _Alignas(8) unsigned char app_data[];
};

/* The Authentication Method, NUL-terminated; NULL when the CONNECT had none. */
static inline const char *client_auth_method(const broker_client *c)
{
    if (!c->has_auth_method)
        return NULL;
    return c->auth_method_on_heap ? c->auth_method.heap : c->auth_method.small;
}

/* The limits this client gets: the server's, or the application's
 * (broker_app.uses_app_limits). */
static inline const broker_limits *client_limits(const broker_client *c)
{
    return c->app_limits ? c->bl->b->app.app_limits : &c->bl->b->limits;
}

/* The client's connection: the client lives in its block (on_open). */
static inline net_conn *client_conn(const broker_client *c)
{
    return net_conn_of_user((void *)c);
}

/* The client id, NUL-terminated; NULL before CONNECT. */
static inline const char *client_id_of(const broker_client *c)
{
    return (const char *)c->info.client_id.p;
}

/* The same for logs: `none` before CONNECT. */
static inline const char *client_id_or(const broker_client *c, const char *none)
{
    return c->info.client_id.p ? (const char *)c->info.client_id.p : none;
}

/* ---- broker.c --------------------------------------------------------- */
broker_loop *broker_loop_of(broker *b, net_loop *loop);
broker_loop *broker_owner_loop(broker *b, const char *client_id, size_t len);

/* ---- persist.c -------------------------------------------------------- */
void persist_session(session *s);
void persist_session_ended(session *s);
void persist_message(session *s, out_msg *o);
void persist_message_gone(session *s, out_msg *o);
/* restore helpers, in the files that own what they restore */
bool session_restore_sub(session *s, mqtt_bytes group, mqtt_bytes filter, uint8_t options,
                         uint32_t sub_id);
bool session_restore_message(session *s, out_msg *o);
bool session_start_expiry(session *s);

/* ---- input.c ---------------------------------------------------------- */
void client_resume_input(broker_client *c);
/* (Re-)arms the connected client's liveness timer for the earlier of its
 * keep-alive and its deadline; stops it when it has neither. */
void client_arm_liveness(broker_client *c);
void client_start_connect_timer(broker_client *c);
/* Sends DISCONNECT (MQTT 5, when connected) and closes; the Will is
 * published unless suppressed. */
void client_close(broker_client *c, uint8_t reason, const char *reason_string);
/* The same with DISCONNECT properties (Reason String, user properties). */
void client_close_props(broker_client *c, uint8_t reason, const mqtt_props *props);

/* ---- send.c ----------------------------------------------------------- */
bool send_packet(broker_client *c, const mqtt_packet *pkt);
void send_ack(broker_client *c, uint8_t type, uint16_t packet_id, uint8_t reason,
              const mqtt_props *props);
void send_connack(broker_client *c, bool session_present, uint8_t reason,
                  const mqtt_props *props);
void send_auth(broker_client *c, uint8_t reason, const mqtt_props *props);
void send_disconnect(broker_client *c, uint8_t reason, const char *reason_string);
void send_disconnect_props(broker_client *c, uint8_t reason, const mqtt_props *props);
uint8_t props_deep_copy(const mqtt_props *src, mqtt_props *dst, uint8_t **mem);

/* ---- connect.c -------------------------------------------------------- */
void handle_connect(broker_client *c, const mqtt_connect *pkt);
void handle_auth(broker_client *c, const mqtt_reason_packet *pkt);
void handle_disconnect(broker_client *c, const mqtt_reason_packet *pkt);
void client_free_connect_state(broker_client *c);
/* The client's extra part, allocated on first use; NULL when memory runs
 * out. Readers that only look test c->x instead. */
client_ext *client_extra(broker_client *c);
/* Frees the extra part once it holds nothing any more. */
void client_trim_extra(broker_client *c);

/* ---- session.c -------------------------------------------------------- */
session *session_find(broker_loop *bl, const char *id, size_t len);
session *session_create(broker_loop *bl, const char *id, size_t len);
void session_end(session *s);
void session_ref(session *s);
void session_unref(session *s);
void session_detach(session *s, broker_client *c);
void session_free_at_exit(session *s);
void session_publish_will(broker_loop *bl, broker_msg *will, uint8_t qos);
void session_cancel_will(session *s);
void session_stop_expiry(session *s);
bool session_qos2_in_has(const session *s, uint16_t id);
bool session_qos2_in_add(session *s, uint16_t id);
bool session_qos2_in_del(session *s, uint16_t id);

/* ---- deliver.c -------------------------------------------------------- */
void route_message(broker_loop *bl, broker_msg *msg, size_t *matched);
/* Whether a QoS>0 message may join the session's queue under `l`: fewer
 * than max_queued_messages queued, and max_queued_bytes (if set) not
 * passed by adding it. A client that does not read (or is offline) can
 * make us hold at most that much for it. */
bool session_queue_has_room(const session *s, const broker_limits *l, const broker_msg *msg);
void session_deliver(session *s, broker_msg *msg, uint8_t qos, bool retain,
                     uint32_t sub_id, uint64_t app_tag);
void session_resume_delivery(session *s);
void session_redeliver(session *s);
void session_drop_messages(session *s);
void session_drop_app_messages(session *s);
void handle_puback(broker_client *c, const mqtt_ack *ack);
void handle_pubrec(broker_client *c, const mqtt_ack *ack);
void handle_pubcomp(broker_client *c, const mqtt_ack *ack);
void flush_outboxes(net_loop *loop, void *arg);

/* ---- publish.c -------------------------------------------------------- */
void handle_publish(broker_client *c, mqtt_publish *pkt);
void handle_pubrel(broker_client *c, const mqtt_ack *ack);

/* ---- subscribe.c ------------------------------------------------------ */
void handle_subscribe(broker_client *c, const mqtt_subscribe *pkt);
void handle_unsubscribe(broker_client *c, const mqtt_unsubscribe *pkt);
void session_remove_all_subs(session *s);
bool session_has_sub(const session *s, const char *filter);

#endif

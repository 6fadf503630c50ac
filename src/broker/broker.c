/*
 * broker/broker.c — creating the broker, its per-loop state, and the
 * mapping of client ids to owner loops.
 *
 * A session lives on loop hash(client id) mod N for its whole life. That
 * one rule removes every cross-thread question about sessions (take-over,
 * expiry, queued messages, in-flight windows): the only thread that ever
 * touches a session is its owner's. The cost is one hand-over per
 * connection whose socket was accepted elsewhere (net_conn_migrate, after
 * authentication), which is cheap next to a TLS handshake or a CONNECT.
 */
#include "broker/internal.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"

static hmap_key session_key(const void *value, const void *ctx)
{
    (void)ctx;
    const session *s = value;
    return (hmap_key){s->client_id, s->client_id_len};
}

void broker_limits_default(broker_limits *l)
{
    *l = (broker_limits){
        .receive_maximum = 1024,
        .maximum_qos = 2,
        .retain_available = true,
        .maximum_packet_size = 1024 * 1024,
        .topic_alias_maximum = 10,
        .wildcard_available = true,
        .sub_ids_available = true,
        .shared_available = true,
        .max_keepalive = 0,
        .max_session_expiry = UINT32_MAX,
        .max_subscriptions = 10000,
        .max_queued_messages = 1000,
        .max_queued_bytes = 64u << 20,
        .connect_timeout_ms = 30000,
    };
}

broker_loop *broker_loop_of(broker *b, net_loop *loop)
{
    return b->loops[net_loop_index(loop)];
}

broker_loop *broker_owner_loop(broker *b, const char *client_id, size_t len)
{
    return b->loops[hmap_hash(client_id, len) % b->nloops];
}

static void topic_tree_ref_session(void *subscriber) { session_ref(subscriber); }

static const topic_tree_ops tree_ops = {.ref = topic_tree_ref_session};

/* Server shutting down: tell every MQTT 5 client why (0x8B) before the net
 * layer flushes and closes the sockets. Wills are not published: every
 * subscriber is being disconnected too. The connected clients are the
 * sessions' (client_close defers the close, so the map does not change
 * under the walk); one still connecting has had no CONNACK to be told
 * after, and the net layer closes it. */
static void broker_loop_shutdown(net_loop *loop, void *arg)
{
    broker *b = arg;
    broker_loop *bl = broker_loop_of(b, loop);
    void *v;
    for (size_t pos = 0; hmap_next(&bl->sessions, &pos, &v);) {
        broker_client *c = ((session *)v)->client;
        if (!c)
            continue;
        c->will_suppressed = true;
        client_close(c, MQTT_RC_SERVER_SHUTTING_DOWN, NULL);
    }
}

extern const net_conn_handler broker_conn_handler;

broker *broker_new(net_server *server, const broker_limits *limits,
                   const broker_app *app)
{
    broker *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->server = server;
    b->limits = *limits;
    b->app = *app;
    if (b->app.client_data_size < sizeof(void *))
        b->app.client_data_size = sizeof(void *);
    b->subs = topic_tree_new(&tree_ops);
    b->retained = retain_store_new();
    b->nloops = net_server_loop_count(server);
    b->loops = calloc(b->nloops, sizeof *b->loops);
    if (!b->subs || !b->retained || !b->loops) {
        broker_free(b);
        return NULL;
    }
    for (unsigned i = 0; i < b->nloops; i++) {
        broker_loop *bl = calloc(1, sizeof *bl);
        if (!bl) {
            broker_free(b);
            return NULL;
        }
        b->loops[i] = bl;
        bl->b = b;
        bl->index = i;
        bl->loop = net_server_loop(server, i);
        hmap_init(&bl->sessions, session_key, NULL);
        bl->outbox = calloc(b->nloops, sizeof *bl->outbox);
        if (!bl->outbox) {
            broker_free(b);
            return NULL;
        }
        net_loop_set_user(bl->loop, bl);
        net_loop_set_iteration_hook(bl->loop, flush_outboxes, bl);
    }
    b->handler = broker_conn_handler;
    /* A client lives in its connection's block, the app's bytes behind it. */
    b->handler.user_size = sizeof(broker_client) + b->app.client_data_size;
    /* Input beyond one maximum packet is never needed; output is capped
     * so that a client that stops reading costs bounded memory. */
    b->conn_limits = (net_conn_limits){
        .max_input = (size_t)limits->maximum_packet_size + 8,
        .out_high = 256 * 1024,
        .out_low = 64 * 1024,
        .out_cap = 16 * 1024 * 1024,
    };
    net_server_set_loop_hooks(server, NULL, broker_loop_shutdown, b);
    return b;
}

/* Sessions still stored (non-zero expiry) end with the process. Each one
 * leaves the table as it ends, so they are collected first. */
static void free_stored_sessions(broker_loop *bl)
{
    size_t n = 0;
    session **all = malloc((bl->sessions.count + 1) * sizeof *all);
    if (!all)
        return; /* exiting anyway: leak rather than walk a changing table */
    void *v;
    for (size_t pos = 0; hmap_next(&bl->sessions, &pos, &v);)
        all[n++] = v;
    for (size_t i = 0; i < n; i++)
        session_free_at_exit(all[i]);
    free(all);
}

void broker_free(broker *b)
{
    if (!b)
        return;
    for (unsigned i = 0; b->loops && i < b->nloops; i++) {
        broker_loop *bl = b->loops[i];
        if (!bl)
            continue;
        free_stored_sessions(bl);
        hmap_free(&bl->sessions);
        topic_match_vec_free(&bl->matches);
        broker_msg_vec_free(&bl->retained);
        for (unsigned j = 0; bl->outbox && j < b->nloops; j++)
            free(bl->outbox[j].items);
        free(bl->outbox);
        free(bl);
    }
    free(b->loops);
    if (b->subs)
        topic_tree_free(b->subs);
    if (b->retained)
        retain_store_free(b->retained);
    free(b);
}

bool broker_listen(broker *b, const char *hostport, const net_tls_config *tls,
                   int *bound_port, char *errbuf, size_t errlen)
{
    return net_server_listen(b->server, hostport, tls, &b->handler, b,
                             &b->conn_limits, bound_port, errbuf, errlen);
}

/* ---- accessors for the application ------------------------------------ */

const broker_client_info *broker_client_get_info(const broker_client *c) { return &c->info; }

net_conn *broker_client_conn(const broker_client *c) { return client_conn(c); }

mqtt_bytes broker_client_auth_method(const broker_client *c)
{
    const char *m = client_auth_method(c);
    return (mqtt_bytes){(const uint8_t *)m, m ? (uint32_t)strlen(m) : 0};
}
broker_client_handle broker_client_get_handle(const broker_client *c) { return c->handle; }
void *broker_client_app_data(const broker_client *c) { return (void *)c->app_data; }
broker_client *broker_client_of_app_data(void *data)
{
    return (broker_client *)((char *)data - offsetof(broker_client, app_data));
}
net_loop *broker_client_loop(const broker_client *c) { return c->bl->loop; }

/* Reads only what broker_new set before any loop ran (the loop table and
 * each broker_loop's net_loop), so any thread may call it. */
net_loop *broker_owner_net_loop(broker *b, const char *client_id, size_t len)
{
    return broker_owner_loop(b, client_id, len)->loop;
}

/* The session map is the owner loop's own, read on that loop. A session's
 * `client` is attached in finish_connect (take_over detaches the old one
 * first) and detached before the app's disconnected() runs, and the state
 * test leaves out a client that is closing but not yet detached. */
broker_client *broker_find_connected(broker *b, net_loop *loop, const char *client_id,
                                     size_t len)
{
    session *s = session_find(broker_loop_of(b, loop), client_id, len);
    broker_client *c = s ? s->client : NULL;
    return c && c->state == CLIENT_CONNECTED ? c : NULL;
}

broker_client *broker_client_lookup(broker *b, net_loop *loop, const char *client_id,
                                    size_t len, broker_client_handle h)
{
    broker_client *c = broker_find_connected(b, loop, client_id, len);
    return c && c->handle == h ? c : NULL;
}

void broker_client_set_deadline(broker_client *c, uint64_t when_wall_ms)
{
    c->deadline_wall_ms = when_wall_ms;
    if (c->state == CLIENT_CONNECTED) /* else finish_connect arms it */
        client_arm_liveness(c);
}

void broker_client_disconnect(broker_client *c, uint8_t reason, const char *reason_string)
{
    client_close(c, reason, reason_string);
}

void broker_client_disconnect_props(broker_client *c, uint8_t reason, const mqtt_props *props)
{
    client_close_props(c, reason, props);
}

bool broker_client_has_subscription(const broker_client *c, const char *filter)
{
    return c->session && session_has_sub(c->session, filter);
}

void broker_route(broker *b, net_loop *loop, broker_msg *msg)
{
    route_message(broker_loop_of(b, loop), msg, NULL);
}

bool broker_client_send(broker_client *c, broker_msg *msg, uint8_t qos, uint64_t app_tag)
{
    if (c->state != CLIENT_CONNECTED || !c->session)
        return false;
    session *s = c->session;
    if (qos > 0 && !session_queue_has_room(s, client_limits(c), msg))
        return false;
    session_deliver(s, msg, qos, false, 0, app_tag);
    return true;
}

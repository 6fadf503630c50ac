/*
 * broker/connect.c — CONNECT, authentication, CONNACK; AUTH; DISCONNECT.
 *
 * A CONNECT goes through four steps:
 *   1. handle_connect() checks what the broker itself can judge (client id,
 *      Will, limits), takes owned copies of what outlives the packet, pauses
 *      input and asks the application to authenticate.
 *   2. The application answers, now or later: broker_auth_accept,
 *      broker_auth_reject, or broker_auth_challenge (an AUTH exchange; the
 *      client's AUTH packets come back through the app's auth_packet).
 *   3. On acceptance the connection moves to the loop that owns its client
 *      id, if it is not there already.
 *   4. finish_connect() takes over or resumes the session, sends CONNACK
 *      with the server's limits, resends what was in flight and resumes
 *      input.
 */
#include "broker/internal.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

/* Longest client id accepted: IoT Hub ids are {device ≤128}/{module ≤128}. */
#define MAX_CLIENT_ID 1024

static char *dup_bytes(mqtt_bytes b)
{
    char *s = malloc((size_t)b.len + 1);
    if (s) {
        if (b.len)
            memcpy(s, b.p, b.len);
        s[b.len] = '\0';
    }
    return s;
}

/* Keeps an owned, NUL-terminated copy of the client id as info.client_id
 * (p stays NULL without memory). */
static bool keep_client_id(broker_client *c, mqtt_bytes id)
{
    c->info.client_id = (mqtt_bytes){(const uint8_t *)dup_bytes(id), id.len};
    return c->info.client_id.p != NULL;
}

/* Keeps the Authentication Method (see broker_client.auth_method). */
static bool keep_auth_method(broker_client *c, mqtt_bytes m)
{
    char *to = c->auth_method.small;
    if (m.len >= sizeof c->auth_method.small) {
        if (!(to = c->auth_method.heap = malloc(m.len + 1u)))
            return false;
        c->auth_method_on_heap = true;
    }
    if (m.len)
        memcpy(to, m.p, m.len);
    to[m.len] = '\0';
    c->has_auth_method = true;
    return true;
}

/* Ends a connection attempt with CONNACK `reason`. */
static void refuse_connect(broker_client *c, uint8_t reason, const mqtt_props *props)
{
    log_info("%s %s: CONNECT refused (%s)", net_conn_peer_str(client_conn(c)),
             client_id_or(c, ""), mqtt_reason_name(reason));
    send_connack(c, false, reason, props);
    c->will_suppressed = true;
    c->state = CLIENT_CLOSED;
    net_conn_close(client_conn(c), true);
}

static bool assign_client_id(broker_client *c)
{
    uint8_t rnd[6];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return false;
    char buf[64];
    int n = snprintf(buf, sizeof buf, "auto-%02x%02x%02x%02x%02x%02x-%u-%llu", rnd[0], rnd[1],
                     rnd[2], rnd[3], rnd[4], rnd[5], c->bl->index,
                     (unsigned long long)++c->bl->assigned_ids);
    c->assigned_id = true;
    return keep_client_id(c, (mqtt_bytes){(const uint8_t *)buf, (uint32_t)n});
}

/* Takes the Will of a CONNECT as a message ready to publish. */
static uint8_t take_will(broker_client *c, const mqtt_connect *pkt)
{
    const broker_limits *l = client_limits(c);
    if (!mqtt_topic_name_valid(pkt->will_topic))
        return MQTT_RC_TOPIC_NAME_INVALID;
    if (pkt->will_qos > l->maximum_qos)
        return MQTT_RC_QOS_NOT_SUPPORTED;
    if (pkt->will_retain && !l->retain_available)
        return MQTT_RC_RETAIN_NOT_SUPPORTED;
    mqtt_publish will = {
        .qos = pkt->will_qos,
        .retain = pkt->will_retain,
        .topic = pkt->will_topic,
        .props = pkt->will_props,
        .payload = pkt->will_payload,
    };
    client_ext *x = client_extra(c);
    if (!x)
        return MQTT_RC_SERVER_BUSY;
    x->will = broker_msg_new(&will, pkt->will_topic, NULL, net_loop_now_ms(c->bl->loop));
    if (!x->will) {
        client_trim_extra(c);
        return MQTT_RC_SERVER_BUSY;
    }
    x->will_qos = pkt->will_qos;
    if (MQTT_HAS(&pkt->will_props, MQTT_PROP_WILL_DELAY_INTERVAL))
        x->will_delay = pkt->will_props.will_delay_interval;
    return 0;
}

/* Negotiates keep-alive, session expiry and the client's own limits. */
static void take_connect_options(broker_client *c, const mqtt_connect *pkt)
{
    const broker_limits *l = client_limits(c);
    const mqtt_props *p = &pkt->props;
    c->clean_start = pkt->clean_start;
    c->keep_alive = pkt->keep_alive;
    if (l->max_keepalive && (c->keep_alive == 0 || c->keep_alive > l->max_keepalive) &&
        pkt->protocol_version == MQTT_V5) {
        c->keep_alive = l->max_keepalive;
        c->server_keep_alive_sent = true;
    }
    if (pkt->protocol_version == MQTT_V5) {
        c->session_expiry = MQTT_HAS(p, MQTT_PROP_SESSION_EXPIRY_INTERVAL)
                                ? p->session_expiry_interval : 0;
        c->client_receive_max = MQTT_HAS(p, MQTT_PROP_RECEIVE_MAXIMUM) ? p->receive_maximum : 65535;
        c->info.max_packet = MQTT_HAS(p, MQTT_PROP_MAXIMUM_PACKET_SIZE) ? p->maximum_packet_size : 0;
        c->client_alias_max = MQTT_HAS(p, MQTT_PROP_TOPIC_ALIAS_MAXIMUM) ? p->topic_alias_maximum : 0;
        c->info.request_problem_info = !MQTT_HAS(p, MQTT_PROP_REQUEST_PROBLEM_INFORMATION) ||
                                       p->request_problem_information;
    } else {
        /* 3.1.1: a persistent session never expires on its own. */
        c->session_expiry = pkt->clean_start ? 0 : UINT32_MAX;
        c->client_receive_max = 65535;
    }
    if (c->session_expiry > l->max_session_expiry)
        c->session_expiry = l->max_session_expiry;
}

void handle_connect(broker_client *c, const mqtt_connect *pkt)
{
    broker *b = c->bl->b;
    c->info.protocol_version = pkt->protocol_version;
    net_conn_pause_input(client_conn(c), true);
    if (pkt->client_id.len == 0) {
        if (pkt->protocol_version == MQTT_V311 && !pkt->clean_start) {
            refuse_connect(c, MQTT_RC_CLIENT_ID_NOT_VALID, NULL); /* [MQTT-3.1.3-8] */
            return;
        }
        if (!assign_client_id(c)) {
            refuse_connect(c, MQTT_RC_SERVER_BUSY, NULL);
            return;
        }
    } else if (pkt->client_id.len > MAX_CLIENT_ID) {
        refuse_connect(c, MQTT_RC_CLIENT_ID_NOT_VALID, NULL);
        return;
    } else {
        keep_client_id(c, pkt->client_id);
    }
    if (pkt->username_flag)
        c->info.username = dup_bytes(pkt->username);
    bool method_ok = !MQTT_HAS(&pkt->props, MQTT_PROP_AUTHENTICATION_METHOD) ||
                     keep_auth_method(c, pkt->props.authentication_method);
    if (!c->info.client_id.p || (pkt->username_flag && !c->info.username) || !method_ok) {
        refuse_connect(c, MQTT_RC_SERVER_BUSY, NULL);
        return;
    }
    c->app_limits = b->app.app_limits && b->app.uses_app_limits &&
                    b->app.uses_app_limits(b->app.ctx, pkt);
    take_connect_options(c, pkt);
    if (pkt->will_flag) {
        uint8_t rc = take_will(c, pkt);
        if (rc) {
            refuse_connect(c, rc, NULL);
            return;
        }
    }
    c->state = CLIENT_AUTHENTICATING;
    c->app_notified = true;
    b->app.authenticate(b->app.ctx, c, pkt);
}

/* Adds the server's limits to the CONNACK properties [MQTT-3.2.2]. */
static void connack_limits(broker_client *c, mqtt_props *p, uint32_t requested_expiry)
{
    const broker_limits *l = client_limits(c);
    p->receive_maximum = l->receive_maximum;
    MQTT_SET(p, MQTT_PROP_RECEIVE_MAXIMUM);
    if (l->maximum_qos < 2) {
        p->maximum_qos = l->maximum_qos;
        MQTT_SET(p, MQTT_PROP_MAXIMUM_QOS);
    }
    p->retain_available = l->retain_available;
    MQTT_SET(p, MQTT_PROP_RETAIN_AVAILABLE);
    p->maximum_packet_size = l->maximum_packet_size;
    MQTT_SET(p, MQTT_PROP_MAXIMUM_PACKET_SIZE);
    if (l->topic_alias_maximum) {
        p->topic_alias_maximum = l->topic_alias_maximum;
        MQTT_SET(p, MQTT_PROP_TOPIC_ALIAS_MAXIMUM);
    }
    p->wildcard_subscription_available = l->wildcard_available;
    MQTT_SET(p, MQTT_PROP_WILDCARD_SUBSCRIPTION_AVAILABLE);
    p->subscription_identifier_available = l->sub_ids_available;
    MQTT_SET(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER_AVAILABLE);
    p->shared_subscription_available = l->shared_available;
    MQTT_SET(p, MQTT_PROP_SHARED_SUBSCRIPTION_AVAILABLE);
    if (c->server_keep_alive_sent) {
        p->server_keep_alive = c->keep_alive;
        MQTT_SET(p, MQTT_PROP_SERVER_KEEP_ALIVE);
    }
    if (c->session_expiry != requested_expiry) {
        p->session_expiry_interval = c->session_expiry;
        MQTT_SET(p, MQTT_PROP_SESSION_EXPIRY_INTERVAL);
    }
    if (c->has_auth_method) { /* [MQTT-4.12.0-5] */
        p->authentication_method = broker_client_auth_method(c);
        MQTT_SET(p, MQTT_PROP_AUTHENTICATION_METHOD);
    }
    if (c->assigned_id) {
        p->assigned_client_identifier =
            c->info.client_id;
        MQTT_SET(p, MQTT_PROP_ASSIGNED_CLIENT_IDENTIFIER);
    }
}

/* The existing connection of a session is replaced by a new one. */
static void take_over(session *s)
{
    broker_client *old = s->client;
    log_info("%s: session taken over", s->client_id);
    client_close(old, MQTT_RC_SESSION_TAKEN_OVER, NULL);
    session_detach(s, old);
}

static void free_connack_pending(broker_client *c)
{
    if (!c->x || !c->x->connack)
        return;
    free(c->x->connack->mem);
    free(c->x->connack);
    c->x->connack = NULL;
    client_trim_extra(c);
}

/* From now on the client reads its id from the session's block (the same
 * bytes) and frees its own copy: a 32-byte block per connection less. It
 * holds a session reference for that, so the bytes outlive a session that
 * ends first (take-over, clean start, expiry 0 at close) until the client
 * is freed. */
static void borrow_client_id(broker_client *c, session *s)
{
    if (c->id_in_session)
        return;
    session_ref(s);
    free((void *)c->info.client_id.p);
    c->info.client_id.p = (const uint8_t *)s->client_id;
    c->id_in_session = true;
}

static void finish_connect(broker_client *c)
{
    broker_loop *bl = c->bl;
    broker *b = bl->b;
    net_timer_stop(bl->loop, &c->connect_timer);
    session *s = session_find(bl, client_id_of(c), c->info.client_id.len);
    if (s && s->client) {
        take_over(s);
        s = session_find(bl, client_id_of(c), c->info.client_id.len); /* may have ended */
    }
    if (s && c->clean_start) {
        session_end(s);
        s = NULL;
    }
    bool present = s != NULL;
    if (!s)
        s = session_create(bl, client_id_of(c), c->info.client_id.len);
    if (!s) {
        refuse_connect(c, MQTT_RC_SERVER_BUSY, NULL);
        return;
    }
    session_stop_expiry(s);
    session_cancel_will(s); /* reconnected within the Will Delay */
    s->client = c;
    c->session = s;
    borrow_client_id(c, s);
    uint32_t requested = c->session_expiry;
    s->expiry_interval = c->session_expiry;
    persist_session(s);
    if (c->x && c->x->will)
        c->x->will->origin = s;

    mqtt_props props = c->x && c->x->connack ? c->x->connack->props : (mqtt_props){0};
    if (c->info.protocol_version == MQTT_V5)
        connack_limits(c, &props, requested);
    send_connack(c, present, MQTT_RC_SUCCESS, &props);
    free_connack_pending(c);
    c->state = CLIENT_CONNECTED;
    log_debug("%s connected (v%u, keep-alive %us, session %s)", client_id_of(c),
              c->info.protocol_version, c->keep_alive, present ? "resumed" : "new");
    client_arm_liveness(c);
    if (b->app.connected)
        b->app.connected(b->app.ctx, c);
    if (c->state != CLIENT_CONNECTED)
        return;
    session_redeliver(s);
    client_resume_input(c);
}

static void on_migrated(net_loop *loop, net_conn *conn, void *arg)
{
    (void)conn;
    broker_client *c = arg;
    c->bl = net_loop_user(loop);
    c->state = CLIENT_AUTHENTICATING;
    finish_connect(c);
}

void broker_auth_accept(broker_client *c, const mqtt_props *props)
{
    if (c->state == CLIENT_CLOSED)
        return;
    if (c->reauthenticating) {
        c->reauthenticating = false;
        send_auth(c, MQTT_RC_SUCCESS, props);
        client_resume_input(c);
        return;
    }
    /* The app's CONNACK properties never carry the server's own fields. */
    const uint64_t app_fields = MQTT_PROP_BIT(MQTT_PROP_AUTHENTICATION_METHOD) |
                                MQTT_PROP_BIT(MQTT_PROP_AUTHENTICATION_DATA) |
                                MQTT_PROP_BIT(MQTT_PROP_REASON_STRING) |
                                MQTT_PROP_BIT(MQTT_PROP_RESPONSE_INFORMATION) |
                                MQTT_PROP_BIT(MQTT_PROP_SERVER_REFERENCE);
    if (props && ((props->present & app_fields) || props->user_count)) {
        free_connack_pending(c); /* not expected: one accept per CONNECT */
        client_ext *x = client_extra(c);
        connack_pending *pending = x ? malloc(sizeof *pending) : NULL;
        if (!pending || props_deep_copy(props, &pending->props, &pending->mem)) {
            free(pending);
            client_trim_extra(c);
            refuse_connect(c, MQTT_RC_SERVER_BUSY, NULL);
            return;
        }
        pending->props.present &= app_fields;
        x->connack = pending;
    }
    broker_loop *owner = broker_owner_loop(c->bl->b, client_id_of(c), c->info.client_id.len);
    if (owner == c->bl) {
        finish_connect(c);
        return;
    }
    net_timer_stop(c->bl->loop, &c->connect_timer);
    c->state = CLIENT_MIGRATING;
    net_conn_migrate(client_conn(c), owner->loop, on_migrated, c);
}

void broker_auth_reject(broker_client *c, uint8_t reason, const mqtt_props *props)
{
    if (c->state == CLIENT_CLOSED)
        return;
    if (c->state == CLIENT_CONNECTED) {
        char text[256] = "";
        if (props && MQTT_HAS(props, MQTT_PROP_REASON_STRING))
            snprintf(text, sizeof text, "%.*s", (int)props->reason_string.len,
                     (const char *)props->reason_string.p);
        log_info("%s: re-authentication failed (%s)", client_id_of(c), mqtt_reason_name(reason));
        client_close(c, reason, text[0] ? text : NULL);
        return;
    }
    refuse_connect(c, reason, props);
}

void broker_auth_challenge(broker_client *c, mqtt_bytes auth_data)
{
    if (c->state == CLIENT_CLOSED)
        return;
    mqtt_props props = {0};
    props.authentication_data = auth_data;
    MQTT_SET(&props, MQTT_PROP_AUTHENTICATION_DATA);
    send_auth(c, MQTT_RC_CONTINUE_AUTHENTICATION, &props);
    client_resume_input(c);
}

/* AUTH from the client: the next step of an exchange, or the start of a
 * re-authentication [MQTT-4.12]. */
void handle_auth(broker_client *c, const mqtt_reason_packet *pkt)
{
    broker *b = c->bl->b;
    const mqtt_props *p = &pkt->props;
    if (!c->has_auth_method) {
        client_close(c, MQTT_RC_PROTOCOL_ERROR, "AUTH without Authentication Method in CONNECT");
        return;
    }
    if (!MQTT_HAS(p, MQTT_PROP_AUTHENTICATION_METHOD) ||
        !mqtt_bytes_eq_str(p->authentication_method, client_auth_method(c))) {
        client_close(c, MQTT_RC_PROTOCOL_ERROR, "Authentication Method differs from CONNECT");
        return;
    }
    bool ok = c->state == CLIENT_AUTHENTICATING
                  ? pkt->reason == MQTT_RC_CONTINUE_AUTHENTICATION
                  : pkt->reason == MQTT_RC_REAUTHENTICATE ||
                        (c->reauthenticating && pkt->reason == MQTT_RC_CONTINUE_AUTHENTICATION);
    if (!ok) {
        client_close(c, MQTT_RC_PROTOCOL_ERROR, "unexpected AUTH reason code");
        return;
    }
    if (!b->app.auth_packet) {
        client_close(c, MQTT_RC_BAD_AUTHENTICATION_METHOD, NULL);
        return;
    }
    if (c->state == CLIENT_CONNECTED)
        c->reauthenticating = true;
    net_conn_pause_input(client_conn(c), true);
    b->app.auth_packet(b->app.ctx, c, pkt);
}

void handle_disconnect(broker_client *c, const mqtt_reason_packet *pkt)
{
    const mqtt_props *p = &pkt->props;
    if (MQTT_HAS(p, MQTT_PROP_SESSION_EXPIRY_INTERVAL)) {
        if (c->session_expiry == 0 && p->session_expiry_interval != 0) {
            /* [MQTT-3.14.2-2] */
            client_close(c, MQTT_RC_PROTOCOL_ERROR, "Session Expiry set after CONNECT had 0");
            return;
        }
        uint32_t e = p->session_expiry_interval, max = client_limits(c)->max_session_expiry;
        if (e > max)
            e = max;
        c->session_expiry = e;
        if (c->session) {
            c->session->expiry_interval = e;
            persist_session(c->session);
        }
    }
    /* [MQTT-3.1.2-10]: a normal disconnection discards the Will; 0x04
     * (Disconnect with Will Message) and every error code keep it. */
    c->will_suppressed = pkt->reason == MQTT_RC_SUCCESS;
    c->close_reason = pkt->reason;
    c->state = CLIENT_CLOSED;
    net_conn_close(client_conn(c), false);
}

client_ext *client_extra(broker_client *c)
{
    if (!c->x)
        c->x = calloc(1, sizeof *c->x);
    return c->x;
}

void client_trim_extra(broker_client *c)
{
    client_ext *x = c->x;
    if (x && !x->will && !x->connack && !x->alias_in && !x->alias_out) {
        free(x);
        c->x = NULL;
    }
}

static void free_client_extra(broker_client *c)
{
    free_connack_pending(c);
    client_ext *x = c->x;
    if (!x)
        return;
    if (x->will)
        broker_msg_unref(x->will);
    if (x->alias_in) {
        for (uint32_t i = 0; i <= client_limits(c)->topic_alias_maximum; i++)
            free((void *)x->alias_in[i].p);
        free(x->alias_in);
    }
    if (x->alias_out) {
        for (uint16_t i = 0; i < x->alias_out->used; i++)
            free((void *)x->alias_out->keys[i].p);
        hmap_free(&x->alias_out->map);
        free(x->alias_out);
    }
    free(x);
    c->x = NULL;
}

void client_free_connect_state(broker_client *c)
{
    if (c->id_in_session)
        session_unref((session *)((char *)c->info.client_id.p - offsetof(session, client_id)));
    else
        free((void *)c->info.client_id.p);
    free((void *)c->info.username);
    if (c->auth_method_on_heap)
        free(c->auth_method.heap);
    free_client_extra(c);
}

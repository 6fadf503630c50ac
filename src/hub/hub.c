/*
 * hub/hub.c — the IoT Hub as the broker's application: the broker_app
 * callbacks, the split between device clients and open-broker clients,
 * and the two listeners that reach connected devices from elsewhere.
 *
 * Composition with the open broker: the hub is THE application and the
 * open broker its delegate. A CONNECT with Authentication Method SAS or
 * X509 is a device's and stays with the hub for its whole life; any other
 * (none, or IOTHUBD-HMAC-SHA256) goes to the open broker when it serves
 * anyone (--allow-anonymous or a password file), else it is refused with
 * 0x8C status 0100. Every later callback is routed by the same test on
 * the client's Authentication Method, which never changes, so the two
 * applications never see each other's clients or app data. The open
 * broker's clients may not touch `$iothub/` (subscribe, publish or Will):
 * device subscriptions there live in the broker's shared trie, and only
 * the hub may put messages in front of devices. Nor may they use a client
 * id that is, or lies under, a registered device's ("dev", "dev/anything",
 * enabled or not): client ids are one namespace in the broker, so such a
 * client would take the device's (or a module's) connection and session
 * over, and an ACL `pattern ... devices/%c/#` would give it the device's
 * subtree or one inside it, without proving anything (0x87, status 0101).
 *
 * Reaching a device from another loop (a registry change that revokes it,
 * a desired-property change, a cloud-to-device command, a direct method)
 * needs no index of our own: the broker shards sessions over the loops by
 * client id, and a connected client always lives on its session's loop,
 * so the device's loop follows from its client id alone
 * (hub_device_loop). A task posted there asks the loop's session map for
 * the client connected under the id when the task runs (hub_find_device):
 * after a take-over that is the new connection, and a device that left in
 * between is simply not found. Both run on that one loop, the only thread
 * that changes the map, so there is nothing to lock and no stale pointer
 * to guard against; an idle connection costs the hub nothing for it.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "hub/hub_internal.h"
#include "util/fmt.h"
#include "util/log.h"
#include "util/time.h"

bool hub_is_device_client(const broker_client *c)
{
    mqtt_bytes m = broker_client_auth_method(c);
    return mqtt_bytes_eq_str(m, HUB_METHOD_SAS) || mqtt_bytes_eq_str(m, HUB_METHOD_X509);
}

/* What the hub adds to every broker client (broker_app.client_data_size),
 * in the connection's block (see broker/input.c). */
_Static_assert(sizeof(void *) != 8 || sizeof(hub_client_data) <= 24,
               "hub_client outgrew 24 bytes");

hub_client *hub_client_of(const broker_client *c)
{
    if (!hub_is_device_client(c))
        return NULL;
    hub_client *hc = broker_client_app_data(c);
    return hc->live ? hc : NULL;
}

/* Appends s (with its NUL) at *pos; returns the offset it went to. */
static uint16_t put_string(char *strings, size_t *pos, const char *s)
{
    size_t at = *pos, len = strlen(s) + 1;
    memcpy(strings + at, s, len);
    *pos += len;
    return (uint16_t)at;
}

bool hub_client_init(const hub *h, broker_client *c, const hub_client_ids *ids, bool x509)
{
    hub_client *hc = broker_client_app_data(c);
    bool is_module = ids->module_id[0] != '\0';
    /* The host is nearly always the hub's name byte for byte: share it. */
    bool own_host = strcmp(ids->host, h->hostname) != 0;
    *hc = (hub_client){.x509 = x509};
    if (ids->policy[0] || is_module || own_host) {
        /* The policy comes first, so the offsets of the others are never 0;
         * ids are at most HUB_*_MAX bytes, so they fit in 16 bits. */
        size_t size = strlen(ids->policy) + 1 + (is_module ? strlen(ids->device_id) + 1 : 0) +
                      (own_host ? strlen(ids->host) + 1 : 0);
        hc->strings = malloc(size);
        if (!hc->strings)
            return false;
        size_t pos = 0;
        put_string(hc->strings, &pos, ids->policy);
        if (is_module)
            hc->device_at = put_string(hc->strings, &pos, ids->device_id);
        if (own_host)
            hc->host_at = put_string(hc->strings, &pos, ids->host);
    }
    hc->live = true;
    return true;
}

const char *hub_client_host(const hub_client *hc, const hub *h)
{
    return hc->host_at ? hc->strings + hc->host_at : h->hostname;
}

void hub_client_release(hub_client *hc)
{
    free(hc->strings);
    free(hc->answer);
    *hc = (hub_client){0};
}

hub_answer_buf *hub_client_answer(hub_client *hc)
{
    if (!hc->answer)
        hc->answer = malloc(sizeof *hc->answer);
    return hc->answer;
}

net_loop *hub_device_loop(const hub *h, const char *client_id)
{
    return broker_owner_net_loop(h->b, client_id, strlen(client_id));
}

/* An open-broker client cannot hold a registered device's id (the hub
 * refuses it), but one may hold it after the identity was deleted and
 * created again: only a device client counts. */
hub_client *hub_find_device(const hub *h, net_loop *loop, const char *client_id)
{
    broker_client *c = broker_find_connected(h->b, loop, client_id, strlen(client_id));
    return c ? hub_client_of(c) : NULL;
}

static bool is_device_connect(const mqtt_connect *pkt)
{
    const mqtt_props *p = &pkt->props;
    return pkt->protocol_version == MQTT_V5 && MQTT_HAS(p, MQTT_PROP_AUTHENTICATION_METHOD) &&
           (mqtt_bytes_eq_str(p->authentication_method, HUB_METHOD_SAS) ||
            mqtt_bytes_eq_str(p->authentication_method, HUB_METHOD_X509));
}

/* ---- open-broker clients ------------------------------------------------ */

static void refuse_open_client_with(broker_client *c, uint8_t code, hub_status status,
                                    const char *why)
{
    hub_answer_buf buf;
    broker_answer answer;
    hub_answer_failure(&buf, MQTT_DISCONNECT, status, code, why, 0, &answer);
    log_info("%s: CONNECT refused: %s", net_conn_peer_str(broker_client_conn(c)), why);
    broker_auth_reject(c, code, &answer.props);
}

static void refuse_open_client(broker_client *c, const char *why)
{
    refuse_open_client_with(c, MQTT_RC_BAD_AUTHENTICATION_METHOD, HUB_BAD_REQUEST, why);
}

/* Whether an open-broker client id is a registered device's id, or starts
 * with one and a '/' (a module's, or a name inside its ACL subtree). Empty
 * (the broker assigns one): no. */
static bool names_identity(hub *h, mqtt_bytes client_id)
{
    char id[HUB_ID_MAX + 1];
    hub_identity ident;
    const uint8_t *slash = client_id.len ? memchr(client_id.p, '/', client_id.len) : NULL;
    uint32_t dlen = slash ? (uint32_t)(slash - client_id.p) : client_id.len;
    if (dlen == 0 || !hub_copy_str((mqtt_bytes){client_id.p, dlen}, id, sizeof id))
        return false; /* longer than any device id */
    return registry_get(h->reg, id, "", &ident);
}

static void authenticate_open_client(hub *h, broker_client *c, const mqtt_connect *pkt)
{
    const mqtt_props *p = &pkt->props;
    bool method_ok = !MQTT_HAS(p, MQTT_PROP_AUTHENTICATION_METHOD) ||
                     mqtt_bytes_eq_str(p->authentication_method, OPEN_APP_AUTH_METHOD);
    if (!method_ok) {
        refuse_open_client(c, "Authentication Method must be SAS or X509");
        return;
    }
    if (!h->open || !h->cfg.open_clients) {
        refuse_open_client(c, "an Authentication Method (SAS or X509) is required");
        return;
    }
    if (names_identity(h, pkt->client_id)) {
        refuse_open_client_with(c, MQTT_RC_NOT_AUTHORIZED, HUB_NOT_AUTHORIZED,
                                "the client id is a device identity's: authenticate as it "
                                "(SAS or X509)");
        return;
    }
    if (pkt->will_flag && hub_topic_reserved(pkt->will_topic)) {
        log_info("%s: CONNECT refused: Will on a $iothub/ topic",
                 net_conn_peer_str(broker_client_conn(c)));
        broker_auth_reject(c, MQTT_RC_NOT_AUTHORIZED, NULL);
        return;
    }
    h->open_cbs.authenticate(h->open_cbs.ctx, c, pkt);
}

/* ---- broker_app callbacks ---------------------------------------------- */

static bool uses_app_limits(void *ctx, const mqtt_connect *pkt)
{
    (void)ctx;
    return is_device_connect(pkt); /* devices get h->device_limits (app_limits) */
}

static void authenticate(void *ctx, broker_client *c, const mqtt_connect *pkt)
{
    hub *h = ctx;
    if (is_device_connect(pkt))
        hub_authenticate_device(h, c, pkt);
    else
        authenticate_open_client(h, c, pkt);
}

static void auth_packet(void *ctx, broker_client *c, const mqtt_reason_packet *pkt)
{
    hub *h = ctx;
    hub_client *hc = hub_client_of(c);
    if (hc)
        hub_reauthenticate_device(h, hc, pkt);
    else if (h->open_cbs.auth_packet)
        h->open_cbs.auth_packet(h->open_cbs.ctx, c, pkt);
    else
        broker_auth_reject(c, MQTT_RC_BAD_AUTHENTICATION_METHOD, NULL);
}

static void connected(void *ctx, broker_client *c)
{
    hub *h = ctx;
    hub_client *hc = hub_client_of(c);
    if (!hc) {
        if (h->open_cbs.connected)
            h->open_cbs.connected(h->open_cbs.ctx, c);
        return;
    }
    hc->connected = true;
    registry_note_connection(h->reg, hub_client_device_id(hc), hub_client_module(hc), true,
                             (int64_t)time_wall_ms());
    hub_methods_device_ready(h->methods, broker_client_loop(c), hub_client_id(hc));
    hub_commands_may_deliver(h, hc); /* a resumed session may hold the subscription */
}

static void disconnected(void *ctx, broker_client *c, uint8_t reason)
{
    hub *h = ctx;
    if (!hub_is_device_client(c)) {
        if (h->open_cbs.disconnected)
            h->open_cbs.disconnected(h->open_cbs.ctx, c, reason);
        return;
    }
    hub_client *hc = hub_client_of(c);
    if (!hc)
        return;
    /* The registry hears of the end unless the id is connected again: a
     * take-over's new connection was connected (and the registry told)
     * before this one's close ran. Both happen on this loop, the id's. */
    const char *id = hub_client_id(hc);
    if (hc->connected && !broker_find_connected(h->b, broker_client_loop(c), id, strlen(id)))
        registry_note_connection(h->reg, hub_client_device_id(hc), hub_client_module(hc), false,
                                 (int64_t)time_wall_ms());
    hub_commands_disconnected(h, hc);
    log_debug("%s: device disconnected (0x%02x)", hub_client_id(hc), reason);
    hub_client_release(hc);
}

static uint8_t authorize_subscribe(void *ctx, broker_client *c, mqtt_bytes group,
                                   mqtt_bytes filter, uint8_t qos)
{
    hub *h = ctx;
    if (!hub_client_of(c)) {
        if (hub_topic_reserved(filter))
            return MQTT_RC_NOT_AUTHORIZED;
        return h->open_cbs.authorize_subscribe(h->open_cbs.ctx, c, group, filter, qos);
    }
    bool open = false;
    uint8_t rc = hub_subscribe_rule(filter, qos, &open);
    if (rc < 0x80 && hub_is_methods_filter(filter))
        hub_methods_device_ready(h->methods, broker_client_loop(c),
                                 hub_client_id(hub_client_of(c)));
    if (rc < 0x80 && mqtt_bytes_eq_str(filter, "$iothub/commands"))
        hub_commands_may_deliver(h, hub_client_of(c));
    if (!open)
        return rc;
    if (h->cfg.open_topics && h->open)
        return h->open_cbs.authorize_subscribe(h->open_cbs.ctx, c, group, filter, qos);
    return mqtt_topic_filter_has_wildcard(filter) ? MQTT_RC_WILDCARD_SUBS_NOT_SUPPORTED
                                                  : MQTT_RC_TOPIC_FILTER_INVALID;
}

static broker_publish_action publish(void *ctx, broker_client *c, mqtt_bytes topic,
                                     const mqtt_publish *pkt, broker_answer *answer)
{
    hub *h = ctx;
    hub_client *hc = hub_client_of(c);
    if (hc)
        return hub_device_publish(h, hc, topic, pkt, answer);
    if (hub_topic_reserved(topic)) {
        answer->reason = MQTT_RC_NOT_AUTHORIZED; /* QoS 0: dropped, as the open broker does */
        return BROKER_PUBLISH_DONE;
    }
    return h->open_cbs.publish(h->open_cbs.ctx, c, topic, pkt, answer);
}

static void settled(void *ctx, broker_client *c, uint64_t app_tag, const mqtt_ack *ack)
{
    hub *h = ctx;
    hub_client *hc = hub_client_of(c);
    if (hc)
        hub_commands_settled(h, hc, app_tag, ack);
    else if (h->open_cbs.settled)
        h->open_cbs.settled(h->open_cbs.ctx, c, app_tag, ack);
}

static void deadline_passed(void *ctx, broker_client *c)
{
    hub *h = ctx;
    hub_client *hc = hub_client_of(c);
    if (hc)
        hub_sas_expired(hc);
    else if (h->open_cbs.deadline_passed)
        h->open_cbs.deadline_passed(h->open_cbs.ctx, c);
}

/* ---- reaching connected devices ----------------------------------------- */

/* A change to apply to the device connected under `text` (its client id)
 * when the task runs on the id's loop. */
typedef struct device_task {
    hub *h;
    uint64_t version;   /* desired notification */
    const char *patch;  /* desired notification, after the id in text[];
                           "" for a revocation */
    char text[];
} device_task;

/* Posts fn(task) to the loop of the identity, where the task finds whether
 * it is connected; false only when out of memory. */
static bool post_to_device(hub *h, const char *device_id, const char *module_id,
                           net_task_fn fn, uint64_t version, const char *patch)
{
    char key[HUB_IDENTITY_KEY_MAX];
    size_t klen = hub_identity_key(key, device_id, module_id) + 1;
    size_t plen = patch ? strlen(patch) + 1 : 1;
    device_task *t = malloc(sizeof *t + klen + plen);
    if (!t) {
        log_warn("%s: out of memory, device not reached", key);
        return false;
    }
    t->h = h;
    t->version = version;
    memcpy(t->text, key, klen);
    t->patch = memcpy(t->text + klen, patch ? patch : "", plen);
    net_loop_post(hub_device_loop(h, key), fn, t);
    return true;
}

static void revoke_task(net_loop *loop, void *arg)
{
    device_task *t = arg;
    hub_client *hc = hub_find_device(t->h, loop, t->text);
    if (hc) {
        log_info("%s: identity disabled, deleted or its credentials changed", hub_client_id(hc));
        broker_client_disconnect(hub_client_broker(hc), MQTT_RC_NOT_AUTHORIZED,
                                 "identity changed");
    }
    free(t);
}

static void on_identity_changed(void *arg, const hub_identity *old, const hub_identity *now)
{
    hub *h = arg;
    if (h->twins)
        twins_identity_changed(h->twins, old, now);
    hub_commands_identity_changed(h, old, now);
    if (old && hub_identity_change_revokes(old, now))
        post_to_device(h, old->device_id, old->module_id, revoke_task, 0, NULL);
}

/* Sends a desired-properties patch if the device is still connected and
 * subscribed to $iothub/twin/patch/desired. */
static void desired_task(net_loop *loop, void *arg)
{
    device_task *t = arg;
    hub_client *hc = hub_find_device(t->h, loop, t->text);
    broker_client *c = hc ? hub_client_broker(hc) : NULL;
    if (hc && broker_client_has_subscription(c, "$iothub/twin/patch/desired")) {
        char num[FMT_U64_MAX];
        uint8_t users[64];
        size_t ulen = 0;
        size_t num_len = fmt_u64(num, t->version);
        mqtt_publish pub = {.topic = MQTT_BYTES_LIT("$iothub/twin/patch/desired")};
        if (mqtt_user_props_append(users, sizeof users, &ulen, MQTT_BYTES_LIT("version"),
                                   (mqtt_bytes){(const uint8_t *)num, (uint32_t)num_len}))
            pub.props.user_count = 1;
        pub.props.user = (mqtt_bytes){users, (uint32_t)ulen};
        pub.payload = (mqtt_bytes){(const uint8_t *)t->patch, (uint32_t)strlen(t->patch)};
        broker_msg *msg = broker_msg_new(&pub, pub.topic, NULL, net_loop_now_ms(loop));
        if (!msg || !broker_client_send(c, msg, 0, 0))
            log_info("%s: desired patch v%llu not sent", hub_client_id(hc),
                     (unsigned long long)t->version);
        if (msg)
            broker_msg_unref(msg);
    }
    free(t);
}

static void on_desired_changed(void *arg, const char *device_id, const char *module_id,
                               uint64_t version, const char *patch_json)
{
    post_to_device(arg, device_id, module_id ? module_id : "", desired_task, version, patch_json);
}

/* ---- lifecycle ---------------------------------------------------------- */

/* IoT Hub's CONNACK limits (spec §1), over the server's other settings. */
static void set_device_limits(hub *h)
{
    broker_limits *l = &h->device_limits;
    *l = *h->cfg.server_limits;
    l->receive_maximum = 16;
    l->maximum_qos = 1;
    l->retain_available = false;
    l->maximum_packet_size = 262144;
    l->topic_alias_maximum = 10;
    l->wildcard_available = true;
    l->sub_ids_available = false;
    l->shared_available = false;
    l->max_keepalive = 1140;
    l->max_subscriptions = 50;
    l->connect_timeout_ms = 30000;
}

hub *hub_new(const hub_config *cfg, hub_registry *reg, hub_twins *twins, hub_telemetry *tel,
             open_app *open)
{
    hub *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->cfg = *cfg;
    h->hostname = strdup(cfg->hostname ? cfg->hostname : "localhost");
    h->methods = hub_methods_new(h);
    if (!h->hostname || !h->methods) {
        hub_free(h);
        return NULL;
    }
    h->reg = reg;
    h->twins = twins;
    h->tel = tel;
    h->open = open;
    if (open)
        open_app_bind(open, &h->open_cbs);
    set_device_limits(h);
    registry_set_change_listener(reg, on_identity_changed, h);
    if (twins)
        twins_set_desired_listener(twins, on_desired_changed, h);
    return h;
}

void hub_free(hub *h)
{
    if (!h)
        return;
    if (h->reg)
        registry_set_change_listener(h->reg, NULL, NULL);
    hub_methods_free(h->methods); /* ends the calls still under way */
    free(h->hostname);
    free(h);
}

void hub_set_broker(hub *h, broker *b)
{
    h->b = b;
}

void hub_bind(hub *h, broker_app *out)
{
    *out = (broker_app){
        .ctx = h,
        .client_data_size = sizeof(hub_client_data),
        .authenticate = authenticate,
        .app_limits = &h->device_limits,
        .uses_app_limits = uses_app_limits,
        .auth_packet = auth_packet,
        .connected = connected,
        .disconnected = disconnected,
        .authorize_subscribe = authorize_subscribe,
        .publish = publish,
        .settled = settled,
        .deadline_passed = deadline_passed,
    };
}

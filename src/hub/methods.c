/*
 * hub/methods.c — direct methods (see methods.h): the life of one call,
 * from the back end's request to the device's reply, across two loops.
 *
 * Two loops take part: the caller's loop L (the HTTP request's) and the
 * device's loop D (a device's connection always lives on the loop its
 * client id hashes to, so every connect, SUBSCRIBE and reply of one client
 * id happens on one thread, and L knows D from the client id alone:
 * hub_device_loop). A call is one heap record owned by L: only L
 * frees it, in `finish_task`, and L frees nothing any other loop may still
 * reach. What the loops share about a call is its `phase`, guarded by the
 * engine's one mutex:
 *
 *   SENDING         a send_task for the call is queued on D
 *   WAITING         the device is offline or not subscribed; the call is
 *                   in the waiter set of its client id until the device
 *                   connects or subscribes to a method (hub_methods_device_
 *                   ready, on D) or the connect timeout fires on L
 *   AWAITING_REPLY  published; in the pending map under its Correlation
 *                   Data, with the reply timer armed on D
 *   DONE            the outcome is decided; a finish_task is queued on L
 *                   (or L is running it)
 *
 * Whoever moves a call to DONE (under the mutex) owns its outcome and
 * queues the finish; everybody else who finds it DONE leaves it alone.
 * The reply and the reply timer both run on D, so "a late reply after a
 * timeout" is simply a reply whose Correlation Data is no longer in the
 * map: dropped. A reply is also dropped unless it comes from the client
 * the call went to, so one device cannot answer another's calls.
 *
 * No lost wake-ups: the device's readiness (connected, or a method
 * subscription granted) is announced on D, and every call starts with a
 * send_task on D, whatever the device's state: the test "ready?" (the
 * client connected under the id now, from D's session map, and its
 * subscriptions) followed by "wait" runs on the same thread as the
 * announcements, so none can fall between them. A device that is not
 * online and no connect timeout: the send_task ends the call with 06A0,
 * and the answer comes back through `done` like every other. A woken call
 * runs its send_task again on D, a later iteration, when the SUBSCRIBE
 * that woke it has been recorded in the session.
 *
 * Timeouts: the connect timeout runs on L from the start of the call; the
 * response timeout on D from the moment of publishing. Correlation Data is
 * 16 bytes: 8 random bytes drawn when the hub starts (a reply to a call
 * of an earlier run never matches) and a counter.
 *
 * The HTTP client going away does not cancel a call: the service cannot
 * see it while the request is being handled; the call ends at its
 * deadline at the latest and the answer then frees the abandoned request.
 * At shutdown the loops may drop queued tasks; every call not yet finished
 * is on the `live` list, and hub_methods_free completes those (with a NULL
 * loop) after the loops are gone, so nothing leaks.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/hub_internal.h"
#include "hub/methods.h"
#include "util/crypto.h"
#include "util/hmap.h"
#include "util/log.h"
#include "util/time.h"

#define METHODS_TOPIC_PREFIX "$iothub/methods/"
#define METHODS_WILDCARD "$iothub/methods/+"
#define CORRELATION_LEN 16

enum call_phase { CALL_SENDING, CALL_WAITING, CALL_AWAITING_REPLY, CALL_DONE };

typedef struct method_call method_call;

struct method_call {
    hub_methods *m;
    /* fixed at creation */
    net_loop *caller_loop;
    hub_method_done_fn done;
    void *done_arg;
    char client_id[HUB_IDENTITY_KEY_MAX];
    char topic[sizeof METHODS_TOPIC_PREFIX + HUB_METHOD_NAME_MAX];
    uint8_t correlation[CORRELATION_LEN];
    uint64_t response_timeout_ms;
    uint64_t connect_deadline_ms; /* monotonic; 0 = the device must be online now */
    char *payload;
    size_t payload_len;
    /* guarded by m->lock */
    enum call_phase phase;
    bool connect_expired;         /* the connect timer fired while SENDING */
    method_call *wait_prev, *wait_next;
    method_call *live_prev, *live_next;
    /* caller loop only */
    net_timer connect_timer;
    /* device loop only, while AWAITING_REPLY */
    net_loop *device_loop;
    net_timer reply_timer;
    /* the outcome: written by whoever set DONE, read by finish_task */
    hub_status status;
    const char *reason;
    uint32_t response_code;
    uint8_t *reply;
    size_t reply_len;
};

/* The calls waiting for one client id (the map's key is `key`). */
typedef struct waiter_set {
    char key[HUB_IDENTITY_KEY_MAX];
    method_call *head;
} waiter_set;

struct hub_methods {
    hub *h;
    pthread_mutex_t lock;
    hmap pending;      /* correlation → call, AWAITING_REPLY */
    hmap waiting;      /* client id → waiter_set */
    method_call *live; /* every call whose finish has not run */
    uint64_t counter;
    uint8_t salt[8];
};

/* ---- creation and release ----------------------------------------------- */

static hmap_key call_key(const void *value, const void *ctx)
{
    (void)ctx;
    return (hmap_key){((const method_call *)value)->correlation, CORRELATION_LEN};
}

static hmap_key waiter_key(const void *value, const void *ctx)
{
    (void)ctx;
    const waiter_set *set = value;
    return (hmap_key){set->key, strlen(set->key)};
}

hub_methods *hub_methods_new(hub *h)
{
    hub_methods *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->h = h;
    pthread_mutex_init(&m->lock, NULL);
    hmap_init(&m->pending, call_key, NULL);
    hmap_init(&m->waiting, waiter_key, NULL);
    if (!crypto_random(m->salt, sizeof m->salt)) {
        uint64_t t = time_wall_ms() ^ (time_mono_ms() << 20);
        memcpy(m->salt, &t, sizeof m->salt); /* uniqueness, not secrecy */
    }
    return m;
}

static void call_free(method_call *call)
{
    free(call->payload);
    free(call->reply);
    free(call);
}

/* Completes every call still listed (the loops are gone) and frees all. */
void hub_methods_free(hub_methods *m)
{
    if (!m)
        return;
    while (m->live) {
        method_call *call = m->live;
        m->live = call->live_next;
        hub_method_result r = {.status = HUB_SERVER_ERROR, .reason = "the server is stopping"};
        call->done(NULL, call->done_arg, &r);
        call_free(call);
    }
    void *v;
    for (size_t pos = 0; hmap_next(&m->waiting, &pos, &v);)
        free(v);
    hmap_free(&m->waiting);
    hmap_free(&m->pending);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

hub_methods *hub_methods_of(hub *h)
{
    return h->methods;
}

bool hub_method_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > HUB_METHOD_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch == '/' || ch == '+' || ch == '#' || ch < 0x20 || ch == 0x7f)
            return false;
    }
    return true;
}

/* ---- the shared sets (all under m->lock) ---------------------------------- */

static void live_add(hub_methods *m, method_call *call)
{
    call->live_prev = NULL;
    call->live_next = m->live;
    if (m->live)
        m->live->live_prev = call;
    m->live = call;
}

static void live_remove(hub_methods *m, method_call *call)
{
    if (call->live_prev)
        call->live_prev->live_next = call->live_next;
    else
        m->live = call->live_next;
    if (call->live_next)
        call->live_next->live_prev = call->live_prev;
}

/* Enters a call in its client id's waiter set; false when out of memory. */
static bool waiter_add(hub_methods *m, method_call *call)
{
    size_t len = strlen(call->client_id);
    waiter_set *set = hmap_get(&m->waiting, call->client_id, len);
    if (!set) {
        set = calloc(1, sizeof *set);
        if (!set)
            return false;
        memcpy(set->key, call->client_id, len + 1);
        if (hmap_put(&m->waiting, set->key, len, set) == set) {
            free(set);
            return false;
        }
    }
    call->wait_prev = NULL;
    call->wait_next = set->head;
    if (set->head)
        set->head->wait_prev = call;
    set->head = call;
    return true;
}

/* Takes a call out of its waiter set, dropping the set when it empties. */
static void waiter_remove(hub_methods *m, method_call *call)
{
    size_t len = strlen(call->client_id);
    waiter_set *set = hmap_get(&m->waiting, call->client_id, len);
    if (!set)
        return;
    if (call->wait_prev)
        call->wait_prev->wait_next = call->wait_next;
    else
        set->head = call->wait_next;
    if (call->wait_next)
        call->wait_next->wait_prev = call->wait_prev;
    call->wait_prev = call->wait_next = NULL;
    if (!set->head) {
        hmap_del(&m->waiting, set->key, len);
        free(set);
    }
}

/* Decides the outcome (phase DONE). The caller queues the finish after
 * unlocking, unless it runs on the caller loop and finishes inline. */
static void decide_locked(method_call *call, hub_status st, const char *reason)
{
    call->phase = CALL_DONE;
    call->status = st;
    call->reason = reason;
}

/* ---- the caller's side (loop L) --------------------------------------------- */

/* Runs `done` and frees the call; on the caller loop, once per call. */
static void finish_task(net_loop *loop, void *arg)
{
    method_call *call = arg;
    hub_methods *m = call->m;
    if (net_timer_armed(&call->connect_timer))
        net_timer_stop(loop, &call->connect_timer);
    pthread_mutex_lock(&m->lock);
    live_remove(m, call);
    pthread_mutex_unlock(&m->lock);
    hub_method_result r = {
        .status = call->status,
        .response_code = call->response_code,
        .payload = call->reply,
        .payload_len = call->reply_len,
        .reason = call->reason ? call->reason : "",
    };
    log_debug("%s: method %s finished: status %04X, response-code %u", call->client_id,
              call->topic + strlen(METHODS_TOPIC_PREFIX), (unsigned)r.status, r.response_code);
    call->done(loop, call->done_arg, &r);
    call_free(call);
}

static void post_finish(method_call *call)
{
    net_loop_post(call->caller_loop, finish_task, call);
}

/* The connect timeout: a waiting call ends with 06A0; a call whose
 * send_task is queued is told so, and that task ends it. */
static void connect_timer_fired(net_loop *loop, net_timer *t)
{
    method_call *call = (method_call *)((char *)t - offsetof(method_call, connect_timer));
    hub_methods *m = call->m;
    bool finish_now = false;
    pthread_mutex_lock(&m->lock);
    if (call->phase == CALL_WAITING) {
        waiter_remove(m, call);
        decide_locked(call, HUB_TARGET_UNAVAILABLE,
                      "the device did not connect and subscribe to the method in time");
        finish_now = true;
    } else if (call->phase == CALL_SENDING) {
        call->connect_expired = true;
    }
    pthread_mutex_unlock(&m->lock);
    if (finish_now)
        finish_task(loop, call);
}

/* ---- the device's side (loop D) ----------------------------------------------- */

static void send_task(net_loop *loop, void *arg);

/* On D: the device connected under the call's client id now, if it is
 * subscribed to the method; *online says whether it is connected at all. */
static hub_client *ready_device(method_call *call, net_loop *loop, bool *online)
{
    hub_client *hc = hub_find_device(call->m->h, loop, call->client_id);
    *online = hc != NULL;
    if (hc && (broker_client_has_subscription(hub_client_broker(hc), METHODS_WILDCARD) ||
               broker_client_has_subscription(hub_client_broker(hc), call->topic)))
        return hc;
    return NULL;
}

/* The invocation as a QoS 0 PUBLISH with the call's Correlation Data. */
static mqtt_publish call_publish(const method_call *call)
{
    mqtt_publish pub = {.qos = 0};
    pub.topic = (mqtt_bytes){(const uint8_t *)call->topic, (uint32_t)strlen(call->topic)};
    pub.props.correlation_data = (mqtt_bytes){call->correlation, CORRELATION_LEN};
    MQTT_SET(&pub.props, MQTT_PROP_CORRELATION_DATA);
    pub.payload = (mqtt_bytes){(const uint8_t *)call->payload, (uint32_t)call->payload_len};
    return pub;
}

/* Whether the invocation fits the device's Maximum Packet Size (the broker
 * would otherwise drop it silently and the call could only time out). */
static bool fits_device(const method_call *call, const hub_client *hc)
{
    mqtt_packet pkt = {.type = MQTT_PUBLISH, .u.publish = call_publish(call)};
    uint32_t max = hub_client_max_packet(hc);
    return max == 0 || mqtt_encoded_size(&pkt, MQTT_V5) <= max;
}

/* Publishes the invocation to the device. */
static bool publish_call(method_call *call, broker_client *c, net_loop *loop)
{
    mqtt_publish pub = call_publish(call);
    broker_msg *msg = broker_msg_new(&pub, pub.topic, NULL, net_loop_now_ms(loop));
    if (!msg)
        return false;
    bool sent = broker_client_send(c, msg, 0, 0);
    broker_msg_unref(msg);
    return sent;
}

static void reply_timer_fired(net_loop *loop, net_timer *t)
{
    (void)loop;
    method_call *call = (method_call *)((char *)t - offsetof(method_call, reply_timer));
    hub_methods *m = call->m;
    bool decided = false;
    pthread_mutex_lock(&m->lock);
    if (call->phase == CALL_AWAITING_REPLY) {
        hmap_del(&m->pending, call->correlation, CORRELATION_LEN);
        decide_locked(call, HUB_TARGET_TIMEOUT, "the device did not answer in time");
        decided = true;
    }
    pthread_mutex_unlock(&m->lock);
    if (decided)
        post_finish(call);
}

/* Sends to a ready device: enters the call in the pending map first (the
 * reply cannot overtake us: it arrives on this same thread), then
 * publishes; arms the reply timer. */
static void send_now(method_call *call, broker_client *c, net_loop *loop)
{
    hub_methods *m = call->m;
    call->device_loop = loop; /* before the call can be found by a reply */
    pthread_mutex_lock(&m->lock);
    bool entered = hmap_put(&m->pending, call->correlation, CORRELATION_LEN, call) != call;
    if (!entered)
        decide_locked(call, HUB_SERVER_ERROR, "out of memory");
    else
        call->phase = CALL_AWAITING_REPLY;
    pthread_mutex_unlock(&m->lock);
    if (!entered) {
        post_finish(call);
        return;
    }
    if (!publish_call(call, c, loop)) {
        pthread_mutex_lock(&m->lock);
        hmap_del(&m->pending, call->correlation, CORRELATION_LEN);
        decide_locked(call, HUB_TARGET_UNAVAILABLE, "the device could not be reached");
        pthread_mutex_unlock(&m->lock);
        post_finish(call);
        return;
    }
    net_timer_start(loop, &call->reply_timer, call->response_timeout_ms, reply_timer_fired);
}

/* Ends a SENDING call at once with `st`. */
static void fail_call(method_call *call, hub_status st, const char *reason)
{
    pthread_mutex_lock(&call->m->lock);
    decide_locked(call, st, reason);
    pthread_mutex_unlock(&call->m->lock);
    post_finish(call);
}

/* The device is not ready (not `online`, or not subscribed): wait for it
 * while the connect timeout lasts, else end the call with 06A0. */
static void wait_or_fail(method_call *call, net_loop *loop, bool online)
{
    hub_methods *m = call->m;
    bool decided = true;
    pthread_mutex_lock(&m->lock);
    if (call->connect_deadline_ms == 0)
        decide_locked(call, HUB_TARGET_UNAVAILABLE,
                      online ? "the device is not online or not subscribed to the method"
                             : "the device is not online");
    else if (call->connect_expired || net_loop_now_ms(loop) >= call->connect_deadline_ms)
        decide_locked(call, HUB_TARGET_UNAVAILABLE,
                      "the device did not connect and subscribe to the method in time");
    else if (!waiter_add(m, call))
        decide_locked(call, HUB_SERVER_ERROR, "out of memory");
    else {
        call->phase = CALL_WAITING;
        decided = false;
    }
    pthread_mutex_unlock(&m->lock);
    if (decided)
        post_finish(call);
}

/* One attempt to deliver a SENDING call, on the device's loop. */
static void send_task(net_loop *loop, void *arg)
{
    method_call *call = arg;
    bool online;
    hub_client *hc = ready_device(call, loop, &online);
    if (hc && !fits_device(call, hc))
        fail_call(call, HUB_TARGET_UNAVAILABLE,
                  "the invocation is larger than the device's Maximum Packet Size");
    else if (hc)
        send_now(call, hub_client_broker(hc), loop);
    else
        wait_or_fail(call, loop, online);
}

void hub_methods_device_ready(hub_methods *m, net_loop *loop, const char *client_id)
{
    size_t len = strlen(client_id);
    pthread_mutex_lock(&m->lock);
    waiter_set *set = m->waiting.count ? hmap_get(&m->waiting, client_id, len) : NULL;
    if (set) {
        hmap_del(&m->waiting, set->key, len);
        for (method_call *call = set->head, *next; call; call = next) {
            next = call->wait_next;
            call->wait_prev = call->wait_next = NULL;
            call->phase = CALL_SENDING;
            net_loop_post(loop, send_task, call); /* after this SUBSCRIBE is recorded */
        }
        free(set);
    }
    pthread_mutex_unlock(&m->lock);
}

/* ---- the device's reply ---------------------------------------------------------- */

/* The first `response-code` user property as a u32; false when absent
 * or not a u32. */
static bool reply_code(const mqtt_publish *pkt, uint32_t *code)
{
    mqtt_iter it;
    mqtt_bytes name, value;
    mqtt_user_props_iter(&pkt->props, &it);
    while (mqtt_user_props_next(&it, &name, &value))
        if (mqtt_bytes_eq_str(name, "response-code"))
            return hub_parse_u32(value, code);
    return false;
}

/* Fills a decided call's outcome from the reply (outside the lock: the
 * call is ours once DONE). */
static void take_reply(method_call *call, const mqtt_publish *pkt)
{
    if (!reply_code(pkt, &call->response_code)) {
        call->status = HUB_TARGET_FAILED;
        call->reason = "the device answered without a valid response-code";
        return;
    }
    if (pkt->payload.len > HUB_METHOD_PAYLOAD_MAX) {
        call->status = HUB_TARGET_FAILED;
        call->reason = "the device answered with a payload larger than 128 KB";
        return;
    }
    call->reply = malloc(pkt->payload.len ? pkt->payload.len : 1);
    if (!call->reply) {
        call->status = HUB_SERVER_ERROR;
        call->reason = "out of memory";
        return;
    }
    if (pkt->payload.len)
        memcpy(call->reply, pkt->payload.p, pkt->payload.len);
    call->reply_len = pkt->payload.len;
    call->status = HUB_OK;
}

/* Takes the call this reply answers out of the pending map (phase DONE);
 * NULL for an unknown, late or foreign reply. */
static method_call *claim_call(hub_methods *m, const hub_client *hc, mqtt_bytes corr,
                               net_loop *loop)
{
    method_call *call = NULL;
    pthread_mutex_lock(&m->lock);
    if (corr.len == CORRELATION_LEN)
        call = hmap_get(&m->pending, corr.p, CORRELATION_LEN);
    if (call && (strcmp(call->client_id, hub_client_id(hc)) != 0 || call->device_loop != loop))
        call = NULL;
    if (call) {
        hmap_del(&m->pending, call->correlation, CORRELATION_LEN);
        decide_locked(call, HUB_OK, NULL);
    }
    pthread_mutex_unlock(&m->lock);
    return call;
}

broker_publish_action hub_methods_reply(hub *h, hub_client *hc, const mqtt_publish *pkt,
                                        broker_answer *answer)
{
    broker_publish_action refused;
    if (!hub_correlated_publish_ok(hc, pkt, "method reply", "responses are published at QoS 0",
                                   answer, &refused))
        return refused;
    mqtt_bytes corr = pkt->props.correlation_data;
    answer->reason = 0;
    net_loop *loop = broker_client_loop(hub_client_broker(hc));
    method_call *call = claim_call(h->methods, hc, corr, loop);
    if (!call) {
        log_debug("%s: method reply matches no pending call (late or unknown): dropped",
                  hub_client_id(hc));
        return BROKER_PUBLISH_DONE;
    }
    net_timer_stop(loop, &call->reply_timer);
    take_reply(call, pkt);
    post_finish(call);
    return BROKER_PUBLISH_DONE;
}

/* ---- starting a call ----------------------------------------------------------------- */

/* Checks the arguments; NULL when they are usable, else why not. */
static const char *invocation_problem(const hub_method_invocation *inv)
{
    if (!inv->device_id || !registry_valid_id(inv->device_id))
        return "invalid device id";
    if (inv->module_id && *inv->module_id && !registry_valid_id(inv->module_id))
        return "invalid module id";
    if (!inv->method_name || !hub_method_name_valid(inv->method_name))
        return "methodName must be 1 to 128 bytes without '/', '+', '#' or control characters";
    if (inv->response_timeout_s < HUB_METHOD_RESPONSE_TIMEOUT_MIN ||
        inv->response_timeout_s > HUB_METHOD_RESPONSE_TIMEOUT_MAX)
        return "responseTimeoutInSeconds must be within 5..300";
    if (inv->connect_timeout_s > HUB_METHOD_CONNECT_TIMEOUT_MAX)
        return "connectTimeoutInSeconds must be within 0..300";
    if (inv->payload_len > HUB_METHOD_PAYLOAD_MAX)
        return "payload larger than 128 KB";
    return NULL;
}

/* A new call record for `inv`, or NULL when out of memory. */
static method_call *call_new(hub_methods *m, const hub_method_invocation *inv, net_loop *loop,
                             hub_method_done_fn done, void *arg)
{
    method_call *call = calloc(1, sizeof *call);
    if (!call)
        return NULL;
    call->payload = malloc(inv->payload_len ? inv->payload_len : 1);
    if (!call->payload) {
        free(call);
        return NULL;
    }
    if (inv->payload_len)
        memcpy(call->payload, inv->payload, inv->payload_len);
    call->payload_len = inv->payload_len;
    call->m = m;
    call->caller_loop = loop;
    call->done = done;
    call->done_arg = arg;
    hub_identity_key(call->client_id, inv->device_id, inv->module_id);
    snprintf(call->topic, sizeof call->topic, "%s%s", METHODS_TOPIC_PREFIX, inv->method_name);
    call->response_timeout_ms = (uint64_t)inv->response_timeout_s * 1000;
    if (inv->connect_timeout_s)
        call->connect_deadline_ms = net_loop_now_ms(loop) + (uint64_t)inv->connect_timeout_s * 1000;
    return call;
}

/* Under m->lock: a fresh Correlation Data (salt + counter, big-endian). */
static void assign_correlation(hub_methods *m, method_call *call)
{
    uint64_t n = ++m->counter;
    memcpy(call->correlation, m->salt, sizeof m->salt);
    for (int i = 0; i < 8; i++)
        call->correlation[8 + i] = (uint8_t)(n >> (56 - 8 * i));
}

hub_status hub_method_invoke(hub_methods *m, const hub_method_invocation *inv, net_loop *loop,
                             hub_method_done_fn done, void *arg, const char **why)
{
    *why = invocation_problem(inv);
    if (*why)
        return HUB_BAD_REQUEST;
    method_call *call = call_new(m, inv, loop, done, arg);
    if (!call) {
        *why = "out of memory";
        return HUB_SERVER_ERROR;
    }
    /* Listed before D can see it; D decides whether the device is there. */
    pthread_mutex_lock(&m->lock);
    assign_correlation(m, call);
    call->phase = CALL_SENDING;
    live_add(m, call);
    pthread_mutex_unlock(&m->lock);
    net_loop_post(hub_device_loop(m->h, call->client_id), send_task, call);
    /* Finishes are queued to this loop, so none can run before the timer is armed. */
    if (call->connect_deadline_ms)
        net_timer_start(loop, &call->connect_timer, (uint64_t)inv->connect_timeout_s * 1000,
                        connect_timer_fired);
    return HUB_OK;
}

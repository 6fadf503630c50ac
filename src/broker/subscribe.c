/*
 * broker/subscribe.c — SUBSCRIBE and UNSUBSCRIBE.
 *
 * Each entry of a SUBSCRIBE is judged on its own and gets its own SUBACK
 * reason code: filter syntax (0x8F), shared subscriptions and wildcards
 * against what we offered (0x9E, 0xA2), the per-client subscription limit
 * (0x97), then the application's authorisation. Granted subscriptions go
 * into the shared trie and into the session's own list. Retained messages
 * are sent after the SUBACK, as Retain Handling asks: 0 always, 1 only for
 * a new subscription, 2 never; never for shared subscriptions [MQTT-3.8.4-?].
 */
#include "broker/internal.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"

/*
 * The session's subscription list. A plain array, scanned linearly while
 * it is short; past SUB_INDEX_MIN entries a hash index (group "\0" filter
 * -> position + 1) is built beside it, because a client may hold up to
 * --max-subscriptions (10,000 by default) and every SUBSCRIBE entry looks
 * its filter up: linearly, one 1 MiB SUBSCRIBE against a full list cost a
 * loop 18 s of CPU (tests/e2e/test_hostile_mqtt.py). Each entry's group and
 * filter share one allocation, "group\0filter\0", which is also the index
 * key (hmap keys must live as long as their entry).
 */
#define SUB_INDEX_MIN 16

static size_t sub_key_len(const session_sub *sub)
{
    return (size_t)(sub->filter - sub->group) + strlen(sub->filter);
}

/* Writes the key "group\0filter" (no final NUL) into k, which has room
 * for group.len + 1 + filter.len bytes; returns that length. */
static size_t sub_key_write(char *k, mqtt_bytes group, mqtt_bytes filter)
{
    if (group.len)
        memcpy(k, group.p, group.len);
    k[group.len] = '\0';
    if (filter.len)
        memcpy(k + group.len + 1, filter.p, filter.len);
    return (size_t)group.len + 1 + filter.len;
}

/* "group\0filter\0" in one block; sub->filter points into it. */
static bool sub_set_names(session_sub *sub, mqtt_bytes group, mqtt_bytes filter)
{
    char *k = malloc((size_t)group.len + filter.len + 2);
    if (!k)
        return false;
    k[sub_key_write(k, group, filter)] = '\0';
    sub->group = k;
    sub->filter = k + group.len + 1;
    return true;
}

/* The index's values are positions + 1 in x->subs. */
static hmap_key index_key(const void *value, const void *ctx)
{
    const session_ext *x = ctx;
    const session_sub *sub = &x->subs[(uintptr_t)value - 1];
    return (hmap_key){sub->group, sub_key_len(sub)};
}

/* Builds the index once the list is long enough; false on allocation
 * failure (the list is still usable linearly, so callers may ignore it). */
static bool index_build(session_ext *x)
{
    if (x->sub_index || x->nsubs < SUB_INDEX_MIN)
        return true;
    hmap *m = malloc(sizeof *m);
    if (!m)
        return false;
    hmap_init(m, index_key, x);
    for (uint32_t i = 0; i < x->nsubs; i++) {
        void *pos = (void *)(uintptr_t)(i + 1);
        if (hmap_put(m, x->subs[i].group, sub_key_len(&x->subs[i]), pos) == pos) {
            hmap_free(m);
            free(m);
            return false;
        }
    }
    x->sub_index = m;
    return true;
}

static session_sub *find_sub(const session *s, mqtt_bytes group, mqtt_bytes filter)
{
    const session_ext *x = session_ext_of(s);
    if (x->sub_index) {
        char small[256];
        size_t len = (size_t)group.len + 1 + filter.len;
        char *key = len <= sizeof small ? small : malloc(len);
        if (key) {
            sub_key_write(key, group, filter);
            uintptr_t pos = (uintptr_t)hmap_get(x->sub_index, key, len);
            if (key != small)
                free(key);
            return pos ? &x->subs[pos - 1] : NULL;
        }
    }
    for (uint32_t i = 0; i < x->nsubs; i++)
        if (mqtt_bytes_eq_str(group, x->subs[i].group) && mqtt_bytes_eq_str(filter, x->subs[i].filter))
            return &x->subs[i];
    return NULL;
}

static bool remember_sub(session *s, mqtt_bytes group, mqtt_bytes filter, uint8_t options,
                         uint32_t sub_id)
{
    session_sub *sub = find_sub(s, group, filter);
    session_ext *x = session_extra(s);
    if (!x)
        return false;
    if (!sub) {
        if (x->nsubs == x->subs_cap) {
            uint32_t ncap = x->subs_cap ? x->subs_cap * 2 : 4;
            session_sub *n = realloc(x->subs, ncap * sizeof *n);
            if (!n)
                return false;
            x->subs = n;
            x->subs_cap = ncap;
        }
        sub = &x->subs[x->nsubs];
        if (!sub_set_names(sub, group, filter))
            return false;
        void *pos = (void *)(uintptr_t)(x->nsubs + 1);
        if (x->sub_index && hmap_put(x->sub_index, sub->group, sub_key_len(sub), pos) == pos) {
            free(sub->group);
            return false;
        }
        x->nsubs++;
        index_build(x); /* on failure lookups stay linear, and correct */
    }
    sub->options = options;
    sub->sub_id = sub_id;
    return true;
}

/* Removes an entry; the last one moves into its place. */
static void forget_sub(session_ext *x, session_sub *sub)
{
    uint32_t i = (uint32_t)(sub - x->subs), last = x->nsubs - 1;
    if (x->sub_index) {
        hmap_del(x->sub_index, sub->group, sub_key_len(sub));
        if (i != last) /* same key, new position: replaces the value */
            hmap_put(x->sub_index, x->subs[last].group, sub_key_len(&x->subs[last]),
                     (void *)(uintptr_t)(i + 1));
    }
    free(sub->group);
    *sub = x->subs[last];
    x->nsubs--;
}

bool session_has_sub(const session *s, const char *filter)
{
    mqtt_bytes f = {(const uint8_t *)filter, (uint32_t)strlen(filter)};
    return find_sub(s, (mqtt_bytes){0}, f) != NULL;
}

void session_remove_all_subs(session *s)
{
    session_ext *x = s->x;
    if (!x)
        return;
    topic_tree *t = s->bl->b->subs;
    for (uint32_t i = 0; i < x->nsubs; i++) {
        session_sub *sub = &x->subs[i];
        topic_tree_unsubscribe(t, s, (mqtt_bytes){(const uint8_t *)sub->group, (uint32_t)strlen(sub->group)},
                               (mqtt_bytes){(const uint8_t *)sub->filter, (uint32_t)strlen(sub->filter)});
        free(sub->group);
    }
    free(x->subs);
    x->subs = NULL;
    x->nsubs = x->subs_cap = 0;
    if (x->sub_index) {
        hmap_free(x->sub_index);
        free(x->sub_index);
        x->sub_index = NULL;
    }
}

/* A subscription read back from the store at start-up: into the shared
 * trie and the session's list, as SUBSCRIBE would have put it. */
bool session_restore_sub(session *s, mqtt_bytes group, mqtt_bytes filter, uint8_t options,
                         uint32_t sub_id)
{
    bool existed;
    if (!mqtt_topic_filter_valid(filter) ||
        !topic_tree_subscribe(s->bl->b->subs, s, group, filter, options, sub_id, &existed))
        return false;
    if (!remember_sub(s, group, filter, options, sub_id)) {
        topic_tree_unsubscribe(s->bl->b->subs, s, group, filter);
        return false;
    }
    return true;
}

/* Splits "$share/{group}/{filter}"; returns false if the filter is invalid. */
static bool parse_filter(mqtt_bytes raw, mqtt_bytes *group, mqtt_bytes *filter, bool *shared)
{
    int r = mqtt_shared_filter_split(raw, group, filter);
    if (r < 0)
        return false;
    *shared = r == 1;
    if (!*shared) {
        *group = (mqtt_bytes){0};
        *filter = raw;
    }
    return mqtt_topic_filter_valid(*filter);
}

/* Judges and applies one entry; returns its SUBACK reason code and whether
 * retained messages are due. A protocol error is returned as 0x82. */
static uint8_t subscribe_one(broker_client *c, const mqtt_sub_entry *e, uint32_t sub_id,
                             bool *send_retained)
{
    broker *b = c->bl->b;
    const broker_limits *l = client_limits(c);
    session *s = c->session;
    mqtt_bytes group, filter;
    bool shared;
    *send_retained = false;
    if (!parse_filter(e->filter, &group, &filter, &shared))
        return MQTT_RC_TOPIC_FILTER_INVALID;
    if (shared && !l->shared_available)
        return MQTT_RC_SHARED_SUBS_NOT_SUPPORTED;
    if (shared && (e->options & MQTT_SUBOPT_NO_LOCAL))
        return MQTT_RC_PROTOCOL_ERROR; /* [MQTT-3.8.3-4] */
    if (!l->wildcard_available && mqtt_topic_filter_has_wildcard(filter))
        return MQTT_RC_WILDCARD_SUBS_NOT_SUPPORTED;
    bool exists = find_sub(s, group, filter) != NULL;
    if (!exists && session_ext_of(s)->nsubs >= l->max_subscriptions)
        return MQTT_RC_QUOTA_EXCEEDED;
    uint8_t qos = MQTT_SUBOPT_QOS(e->options);
    if (qos > l->maximum_qos)
        qos = l->maximum_qos;
    if (b->app.authorize_subscribe) {
        uint8_t granted = b->app.authorize_subscribe(b->app.ctx, c, group, filter, qos);
        if (granted >= 0x80)
            return granted;
        qos = granted;
    }
    uint8_t options = (uint8_t)((e->options & ~0x03) | qos);
    bool existed;
    if (!topic_tree_subscribe(b->subs, s, group, filter, options, sub_id, &existed))
        return MQTT_RC_UNSPECIFIED_ERROR;
    if (!remember_sub(s, group, filter, options, sub_id)) {
        topic_tree_unsubscribe(b->subs, s, group, filter);
        return MQTT_RC_UNSPECIFIED_ERROR;
    }
    uint8_t rh = MQTT_SUBOPT_RETAIN_HANDLING(e->options);
    *send_retained = !shared && (rh == 0 || (rh == 1 && !existed));
    return qos;
}

static void send_retained(broker_client *c, mqtt_bytes filter, uint8_t granted, uint32_t sub_id)
{
    broker_loop *bl = c->bl;
    bl->retained.len = 0;
    retain_store_match(bl->b->retained, filter, &bl->retained);
    for (size_t i = 0; i < bl->retained.len; i++) {
        broker_msg *m = bl->retained.items[i];
        uint8_t qos = m->qos < granted ? m->qos : granted;
        if (c->session)
            session_deliver(c->session, m, qos, true, sub_id, 0);
        broker_msg_unref(m);
    }
    bl->retained.len = 0;
}

void handle_subscribe(broker_client *c, const mqtt_subscribe *pkt)
{
    uint32_t sub_id = 0;
    if (MQTT_HAS(&pkt->props, MQTT_PROP_SUBSCRIPTION_IDENTIFIER)) {
        if (!client_limits(c)->sub_ids_available) {
            client_close(c, MQTT_RC_SUBSCRIPTION_IDS_NOT_SUPPORTED, NULL);
            return;
        }
        sub_id = pkt->props.subscription_identifier[0];
    }
    uint8_t *reasons = malloc(pkt->count ? pkt->count : 1);
    bool *retained = malloc(pkt->count ? pkt->count : 1);
    if (!reasons || !retained) {
        free(reasons);
        free(retained);
        client_close(c, MQTT_RC_SERVER_BUSY, NULL);
        return;
    }
    mqtt_iter it;
    mqtt_sub_entry e;
    uint32_t i = 0;
    mqtt_subscribe_iter(pkt, &it);
    while (i < pkt->count && mqtt_subscribe_next(&it, &e)) {
        reasons[i] = subscribe_one(c, &e, sub_id, &retained[i]);
        if (reasons[i] == MQTT_RC_PROTOCOL_ERROR) {
            free(reasons);
            free(retained);
            client_close(c, MQTT_RC_PROTOCOL_ERROR, "No Local on a shared subscription");
            return;
        }
        if (reasons[i] >= 0x80 && c->info.protocol_version == MQTT_V311)
            reasons[i] = 0x80;
        i++;
    }
    persist_session(c->session);
    mqtt_packet ack = {.type = MQTT_SUBACK};
    ack.u.suback.packet_id = pkt->packet_id;
    ack.u.suback.count = i;
    ack.u.suback.reasons = reasons;
    send_packet(c, &ack);
    mqtt_subscribe_iter(pkt, &it);
    for (uint32_t j = 0; j < i && mqtt_subscribe_next(&it, &e); j++) {
        if (!retained[j])
            continue;
        mqtt_bytes group, filter;
        bool shared;
        parse_filter(e.filter, &group, &filter, &shared);
        send_retained(c, filter, reasons[j], sub_id);
    }
    free(reasons);
    free(retained);
}

void handle_unsubscribe(broker_client *c, const mqtt_unsubscribe *pkt)
{
    session *s = c->session;
    uint8_t *reasons = malloc(pkt->count ? pkt->count : 1);
    if (!reasons) {
        client_close(c, MQTT_RC_SERVER_BUSY, NULL);
        return;
    }
    mqtt_iter it;
    mqtt_bytes raw;
    uint32_t i = 0;
    mqtt_unsubscribe_iter(pkt, &it);
    while (i < pkt->count && mqtt_unsubscribe_next(&it, &raw)) {
        mqtt_bytes group, filter;
        bool shared;
        session_sub *sub;
        if (!parse_filter(raw, &group, &filter, &shared)) {
            reasons[i++] = MQTT_RC_TOPIC_FILTER_INVALID;
            continue;
        }
        sub = find_sub(s, group, filter);
        if (sub) {
            topic_tree_unsubscribe(c->bl->b->subs, s, group, filter);
            forget_sub(s->x, sub);
        }
        reasons[i++] = sub ? MQTT_RC_SUCCESS : MQTT_RC_NO_SUBSCRIPTION_EXISTED;
    }
    persist_session(s);
    mqtt_packet ack = {.type = MQTT_UNSUBACK};
    ack.u.suback.packet_id = pkt->packet_id;
    ack.u.suback.count = i;
    ack.u.suback.reasons = reasons;
    send_packet(c, &ack);
    free(reasons);
}

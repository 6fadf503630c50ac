/*
 * fuzz/fuzz_broker_trie.c — libFuzzer target for the broker's two tries
 * (topic_tree.c: subscriptions; retained.c: retained messages), checked
 * against a model that is a plain list and mqtt_topic_matches, the
 * codec's matcher (itself checked against a level-by-level reference by
 * fuzz_mqtt_topic).
 *
 * Input: a program of operations, each one byte of opcode followed by its
 * operands: subscribe, unsubscribe, match a topic name, retain (or clear)
 * a message, match a filter against the retained messages. Topics are
 * built from a small set of levels ("a", "b", "", "+", "#", "$SYS", ...)
 * and sixteen siblings "k0".."k15", so that nodes pass the eight children
 * after which they are indexed by hash, and removals move a node's last
 * child into the hole. Invalid names and filters are skipped (the tries
 * take them validated). Any disagreement with the model aborts; ASan
 * checks that freeing the tries leaves nothing behind.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/topic_tree.h"
#include "mqtt/codec.h"

#define MAX_ITEMS 128
#define TOPIC_MAX 96

typedef struct program {
    const uint8_t *p, *end;
} program;

static uint8_t next_byte(program *pg)
{
    return pg->p < pg->end ? *pg->p++ : 0;
}

static const char *const LEVELS[] = {"a", "b", "c", "", "+", "#", "$SYS", "$share"};

/* A topic of 1-5 levels into buf; wildcards dropped when !filter. */
static mqtt_bytes build_topic(program *pg, bool filter, char *buf)
{
    unsigned nlevels = 1 + next_byte(pg) % 5;
    size_t len = 0;
    for (unsigned i = 0; i < nlevels; i++) {
        unsigned v = next_byte(pg) % 24;
        char level[8];
        if (v < 8)
            snprintf(level, sizeof level, "%s", LEVELS[v]);
        else
            snprintf(level, sizeof level, "k%u", v - 8);
        if (!filter && (level[0] == '+' || level[0] == '#'))
            level[0] = 'w';
        len += (size_t)snprintf(buf + len, TOPIC_MAX - len, "%s%s", i ? "/" : "", level);
    }
    return (mqtt_bytes){(const uint8_t *)buf, (uint32_t)len};
}

static bool same(mqtt_bytes a, mqtt_bytes b)
{
    return a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
}

/* ---- subscriptions --------------------------------------------------------- */

typedef struct model_sub {
    uintptr_t subscriber; /* 1..8 */
    bool shared;          /* in group "g" */
    char filter[TOPIC_MAX];
    uint32_t len;
} model_sub;

typedef struct sub_model {
    model_sub v[MAX_ITEMS];
    size_t n;
} sub_model;

static mqtt_bytes sub_filter(const model_sub *s)
{
    return (mqtt_bytes){(const uint8_t *)s->filter, s->len};
}

static model_sub *sub_find(sub_model *m, uintptr_t who, bool shared, mqtt_bytes filter)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->v[i].subscriber == who && m->v[i].shared == shared &&
            same(sub_filter(&m->v[i]), filter))
            return &m->v[i];
    return NULL;
}

static void op_subscribe(topic_tree *t, sub_model *m, program *pg, bool subscribe)
{
    uint8_t b = next_byte(pg);
    uintptr_t who = 1 + (b & 7);
    bool shared = b & 8;
    char buf[TOPIC_MAX];
    mqtt_bytes filter = build_topic(pg, true, buf);
    if (!mqtt_topic_filter_valid(filter))
        return;
    mqtt_bytes group = shared ? (mqtt_bytes){(const uint8_t *)"g", 1} : (mqtt_bytes){0};
    model_sub *had = sub_find(m, who, shared, filter);
    if (!subscribe) {
        if (topic_tree_unsubscribe(t, (void *)who, group, filter) != (had != NULL))
            abort();
        if (had)
            *had = m->v[--m->n];
        return;
    }
    if (!had && m->n == MAX_ITEMS)
        return;
    bool existed = false;
    if (!topic_tree_subscribe(t, (void *)who, group, filter, b >> 4, b, &existed))
        abort(); /* no allocation fails here */
    if (existed != (had != NULL))
        abort();
    if (!had) {
        model_sub *s = &m->v[m->n++];
        s->subscriber = who;
        s->shared = shared;
        memcpy(s->filter, filter.p, filter.len);
        s->len = filter.len;
    }
}

/*
 * Every matching plain subscription once, and one member of every matching
 * shared group (groups are per filter). Counted per subscriber: plain ones
 * exactly, shared ones as "the chosen member belongs to a matching group".
 */
static void op_match(topic_tree *t, sub_model *m, program *pg)
{
    char buf[TOPIC_MAX];
    mqtt_bytes topic = build_topic(pg, false, buf);
    if (!mqtt_topic_name_valid(topic))
        return;
    topic_match_vec out = {0};
    if (!topic_tree_match(t, topic, &out))
        abort();
    unsigned want_plain[9] = {0}, got_plain[9] = {0};
    size_t want_groups = 0, got_groups = 0;
    for (size_t i = 0; i < m->n; i++) {
        const model_sub *s = &m->v[i];
        if (!mqtt_topic_matches(sub_filter(s), topic))
            continue;
        if (!s->shared) {
            want_plain[s->subscriber]++;
            continue;
        }
        bool first_of_group = true; /* one entry per distinct filter */
        for (size_t j = 0; j < i; j++)
            if (m->v[j].shared && same(sub_filter(&m->v[j]), sub_filter(s)))
                first_of_group = false;
        want_groups += first_of_group;
    }
    for (size_t i = 0; i < out.len; i++) {
        uintptr_t who = (uintptr_t)out.items[i].subscriber;
        if (who < 1 || who > 8)
            abort();
        if (!out.items[i].shared) {
            got_plain[who]++;
            continue;
        }
        got_groups++;
        bool member = false;
        for (size_t j = 0; j < m->n; j++)
            member |= m->v[j].shared && m->v[j].subscriber == who &&
                      mqtt_topic_matches(sub_filter(&m->v[j]), topic);
        if (!member)
            abort();
    }
    if (memcmp(want_plain, got_plain, sizeof want_plain) != 0 || want_groups != got_groups)
        abort();
    if (topic_tree_count(t) != m->n)
        abort();
    topic_match_vec_free(&out);
}

/* ---- retained messages ----------------------------------------------------- */

typedef struct model_retained {
    char topic[TOPIC_MAX];
    uint32_t len;
    uint8_t payload;
} model_retained;

typedef struct retained_model {
    model_retained v[MAX_ITEMS];
    size_t n;
} retained_model;

static mqtt_bytes retained_topic(const model_retained *r)
{
    return (mqtt_bytes){(const uint8_t *)r->topic, r->len};
}

static void op_retain(retain_store *rs, retained_model *m, program *pg)
{
    uint8_t payload = next_byte(pg) % 4; /* 0: clear */
    char buf[TOPIC_MAX];
    mqtt_bytes topic = build_topic(pg, false, buf);
    if (!mqtt_topic_name_valid(topic))
        return;
    model_retained *had = NULL;
    for (size_t i = 0; i < m->n; i++)
        if (same(retained_topic(&m->v[i]), topic))
            had = &m->v[i];
    if (!had && payload && m->n == MAX_ITEMS)
        return;
    mqtt_publish pub = {0};
    pub.retain = true;
    pub.payload = (mqtt_bytes){&payload, payload ? 1u : 0u};
    broker_msg *msg = broker_msg_new(&pub, topic, NULL, 0);
    if (!msg)
        abort();
    retain_store_set(rs, msg);
    broker_msg_unref(msg);
    if (!payload) {
        if (had)
            *had = m->v[--m->n];
    } else if (had) {
        had->payload = payload;
    } else {
        model_retained *r = &m->v[m->n++];
        memcpy(r->topic, topic.p, topic.len);
        r->len = topic.len;
        r->payload = payload;
    }
}

/* Exactly the retained messages whose topic matches, each once, each with
 * its latest payload. */
static void op_retained_match(retain_store *rs, retained_model *m, program *pg)
{
    char buf[TOPIC_MAX];
    mqtt_bytes filter = build_topic(pg, true, buf);
    if (!mqtt_topic_filter_valid(filter))
        return;
    broker_msg_vec out = {0};
    if (!retain_store_match(rs, filter, &out))
        abort();
    size_t want = 0;
    for (size_t i = 0; i < m->n; i++)
        want += mqtt_topic_matches(filter, retained_topic(&m->v[i]));
    if (out.len != want || retain_store_count(rs) != m->n)
        abort();
    for (size_t i = 0; i < out.len; i++) {
        const broker_msg *got = out.items[i];
        const model_retained *r = NULL;
        for (size_t j = 0; j < m->n; j++)
            if (same(retained_topic(&m->v[j]), got->topic))
                r = &m->v[j];
        if (!r || !mqtt_topic_matches(filter, got->topic) || got->payload.len != 1 ||
            got->payload.p[0] != r->payload)
            abort();
        for (size_t j = 0; j < i; j++)
            if (out.items[j] == got)
                abort();
    }
    for (size_t i = 0; i < out.len; i++)
        broker_msg_unref(out.items[i]);
    broker_msg_vec_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sub_model subs;
    static retained_model retained;
    subs.n = retained.n = 0;
    topic_tree *t = topic_tree_new(NULL);
    retain_store *rs = retain_store_new();
    if (!t || !rs)
        abort();
    program pg = {data, data + size};
    while (pg.p < pg.end) {
        switch (next_byte(&pg) % 6) {
        case 0:
        case 1: op_subscribe(t, &subs, &pg, true); break;
        case 2: op_subscribe(t, &subs, &pg, false); break;
        case 3: op_match(t, &subs, &pg); break;
        case 4: op_retain(rs, &retained, &pg); break;
        default: op_retained_match(rs, &retained, &pg); break;
        }
    }
    topic_tree_free(t);
    retain_store_free(rs);
    return 0;
}

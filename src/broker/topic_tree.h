/*
 * broker/topic_tree.h — who is subscribed to what, and retained messages.
 *
 * Shared by all loops. Subscriptions live in a trie keyed by topic level
 * ("a/+/c" is three nodes); matching a topic name walks the trie once,
 * following the literal level, '+' and '#' children, so its cost depends on
 * the topic's depth and the number of matches, not on the number of
 * subscriptions. The trie is guarded by a readers-writer lock: publishing
 * (the frequent operation) takes it shared; SUBSCRIBE/UNSUBSCRIBE take it
 * exclusive. Retained messages live in a second trie under their own lock,
 * matched the other way round (a filter against stored names).
 *
 * Subscribers are opaque pointers (the broker's sessions). Matching takes a
 * reference on each matched subscriber through the `ref` callback while the
 * lock is held, so a subscriber cannot be freed between matching and
 * delivery; the caller releases them. A subscriber must remove all its
 * subscriptions before it is freed.
 *
 * Shared subscriptions ($share/{group}/{filter}): the members of a group
 * are kept together under the filter's node; each matching message goes to
 * one member, chosen round-robin (an atomic counter, so matching stays a
 * shared-lock operation).
 */
#ifndef IOTHUBD_BROKER_TOPIC_TREE_H
#define IOTHUBD_BROKER_TOPIC_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/message.h"
#include "mqtt/packet.h"

typedef struct topic_tree topic_tree;

typedef struct topic_tree_ops {
    void (*ref)(void *subscriber);
} topic_tree_ops;

typedef struct topic_match {
    void *subscriber;   /* one reference held for the caller */
    uint8_t options;    /* Subscription Options byte as subscribed */
    uint32_t sub_id;    /* Subscription Identifier, 0 = none */
    bool shared;        /* matched through a $share group */
} topic_match;

/* A growable array the caller keeps and reuses (no per-publish malloc once
 * it has grown to the working size). */
typedef struct topic_match_vec {
    topic_match *items;
    size_t len;
    size_t cap;
} topic_match_vec;

void topic_match_vec_free(topic_match_vec *v);

topic_tree *topic_tree_new(const topic_tree_ops *ops);
void topic_tree_free(topic_tree *t);

/*
 * Adds the subscription of `subscriber` to `filter` (already validated),
 * or replaces its options and identifier if it exists; `group` is empty
 * for a non-shared subscription. *existed says whether it was a
 * replacement. Returns false on allocation failure.
 */
bool topic_tree_subscribe(topic_tree *t, void *subscriber, mqtt_bytes group,
                          mqtt_bytes filter, uint8_t options, uint32_t sub_id,
                          bool *existed);

/* Removes it; returns false if there was no such subscription. */
bool topic_tree_unsubscribe(topic_tree *t, void *subscriber, mqtt_bytes group,
                            mqtt_bytes filter);

/*
 * Appends to `out` (not cleared first) every subscription matching the
 * topic name: one entry per matching non-shared subscription (a subscriber
 * with two overlapping subscriptions appears twice), and one entry per
 * matching shared group. Returns false on allocation failure.
 */
bool topic_tree_match(topic_tree *t, mqtt_bytes topic, topic_match_vec *out);

size_t topic_tree_count(topic_tree *t); /* number of subscriptions */

/* ---- retained messages ------------------------------------------------ */

typedef struct retain_store retain_store;

retain_store *retain_store_new(void);
void retain_store_free(retain_store *r);

/* Stores `msg` (taking a reference) as the retained message of its topic,
 * replacing any; a zero-length payload removes the topic's message
 * instead. */
void retain_store_set(retain_store *r, broker_msg *msg);

/* Appends a reference to every retained message whose topic matches
 * `filter` (with the '$' rule) to out[]; returns false on allocation
 * failure. The caller unrefs them. */
typedef struct broker_msg_vec {
    broker_msg **items;
    size_t len;
    size_t cap;
} broker_msg_vec;

bool retain_store_match(retain_store *r, mqtt_bytes filter, broker_msg_vec *out);
void broker_msg_vec_free(broker_msg_vec *v);
size_t retain_store_count(retain_store *r);

#endif

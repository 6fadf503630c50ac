/*
 * hub/c2d_internal.h — what c2d.c (state, store, service side, timer) and
 * c2d_deliver.c (the MQTT side) share, and nothing outside them.
 *
 * Lock: `lock` guards every queue, the tag counter, the deadline and the
 * feedback ring. Order: c2d lock, then the registry's or a loop's task
 * queue's (the ready listener runs under the c2d lock; it only posts a
 * task to the device's loop). Store calls under the lock only queue.
 */
#ifndef IOTHUBD_HUB_C2D_INTERNAL_H
#define IOTHUBD_HUB_C2D_INTERNAL_H

#include <pthread.h>

#include "hub/c2d.h"
#include "hub/c2d_queue.h"
#include "store/store.h"
#include "util/hmap.h"

/* Messages locked by deliveries to one device at a time: more wait in our
 * queue rather than in the broker's, where their lock would run out. */
#define C2D_MAX_LOCKED 16

typedef struct device_queue {
    c2d_queue q;
    char device_id[HUB_ID_MAX + 1]; /* the map's key */
} device_queue;

struct hub_c2d {
    c2d_config cfg;
    struct store *st;
    hub_registry *reg;
    pthread_mutex_t lock;
    hmap queues;              /* device id → device_queue */
    uint64_t next_tag;        /* app_tag of the next delivery */
    int64_t next_deadline_ms; /* earliest expiry or lock end; INT64_MAX = none */
    c2d_feedback *feedback;   /* ring of cfg.max_feedback records */
    size_t fb_first, fb_len;
    c2d_ready_fn ready;
    void *ready_arg;
    net_loop *timer_loop;
    net_timer timer;
};

/* ---- c2d.c (lock held) --------------------------------------------------- */
device_queue *c2d_queue_of(hub_c2d *c, const char *device_id, bool create);
/* Removes m for good (store delete, feedback for `outcome` when asked,
 * count updated) and frees it. */
void c2d_finish(hub_c2d *c, device_queue *dq, c2d_msg *m, c2d_outcome outcome);
/* A message went back to the queue: record the new delivery count. */
void c2d_store_count(hub_c2d *c, device_queue *dq, c2d_msg *m);
/* A new lock or expiry may come sooner than the timer's next look. */
void c2d_note_deadline(hub_c2d *c, int64_t when_ms);
/* Tells the ready listener. */
void c2d_kick(hub_c2d *c, const char *device_id);

#endif

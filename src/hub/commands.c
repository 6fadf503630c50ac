/*
 * hub/commands.c — the hub's side of cloud-to-device commands: when to
 * ask the queues (hub/c2d.h) to deliver, and where their acknowledgements
 * go. The queues decide everything else.
 *
 * Delivery is always a task on the device's loop (hub_device_loop: its
 * id names it, from any thread) that finds the device connected under its
 * id when it runs (hub_find_device), so it runs after whatever prompted it
 * has finished: after the broker recorded a SUBSCRIBE (authorize_subscribe
 * runs before it does), after CONNACK, after an enqueue on another loop,
 * after a lock ran out or a taken-over connection let go of its locks. A
 * device that left meanwhile is not found, a take-over's new connection
 * is; one that is not subscribed gets nothing (c2d_deliver asks the
 * broker). Modules get no commands: IoT Hub queues them per device.
 */
#include <stdlib.h>
#include <string.h>

#include "hub/c2d.h"
#include "hub/hub_internal.h"
#include "util/log.h"

typedef struct deliver_task {
    hub *h;
    char device_id[]; /* also its client id: no module */
} deliver_task;

static void deliver_task_run(net_loop *loop, void *arg)
{
    deliver_task *t = arg;
    hub_client *hc = hub_find_device(t->h, loop, t->device_id);
    if (hc && t->h->c2d)
        c2d_deliver(t->h->c2d, hub_client_broker(hc), hub_client_device_id(hc));
    free(t);
}

static void post_delivery(hub *h, const char *device_id)
{
    size_t len = strlen(device_id) + 1;
    deliver_task *t = malloc(sizeof *t + len);
    if (!t) {
        log_warn("c2d: out of memory, delivery postponed");
        return;
    }
    t->h = h;
    memcpy(t->device_id, device_id, len);
    net_loop_post(hub_device_loop(h, device_id), deliver_task_run, t);
}

/* The queues' ready listener (any thread, under the queues' lock): the
 * device may have commands to take. Whether it is connected is for the
 * task to see, on the device's loop. */
static void on_commands_ready(void *arg, const char *device_id)
{
    post_delivery(arg, device_id);
}

void hub_set_c2d(hub *h, hub_c2d *c2d)
{
    h->c2d = c2d;
    if (c2d)
        c2d_set_ready_listener(c2d, on_commands_ready, h);
}

void hub_commands_may_deliver(hub *h, hub_client *hc)
{
    if (h->c2d && !hub_client_module(hc)[0])
        post_delivery(h, hub_client_device_id(hc));
}

void hub_commands_disconnected(hub *h, hub_client *hc)
{
    if (h->c2d && !hub_client_module(hc)[0])
        c2d_connection_gone(h->c2d, hub_client_device_id(hc),
                            broker_client_get_handle(hub_client_broker(hc)));
}

void hub_commands_settled(hub *h, hub_client *hc, uint64_t app_tag, const mqtt_ack *ack)
{
    if (h->c2d && !hub_client_module(hc)[0])
        c2d_settled(h->c2d, hub_client_broker(hc), hub_client_device_id(hc), app_tag, ack);
}

void hub_commands_identity_changed(hub *h, const hub_identity *old, const hub_identity *now)
{
    if (h->c2d && old && !now && !old->module_id[0])
        c2d_device_deleted(h->c2d, old->device_id);
}

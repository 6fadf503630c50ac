/*
 * hub/presence.c — the index of connected identities: client id →
 * (loop, broker client handle).
 *
 * Who needs it: a registry change (an HTTP request on any loop) that must
 * disconnect a device, and a desired-property change that must reach it.
 * Both find the device's loop here and post a task there; the task looks
 * the handle up with broker_client_lookup, so a device that went away in
 * the meantime is simply not found (handles are never reused).
 *
 * One mutex guards the map: entries change once per connect and
 * disconnect, and lookups happen per service-side change, both rare next
 * to MQTT traffic. The entries are the hub_clients themselves (key: their
 * client id, read through the map's key function), so a connected device
 * costs the index one 8-byte slot and no block of its own. That is safe
 * across threads because a hub_client's client id, and its broker
 * client's handle and loop, never change once it is in the index (it is
 * put there in connected(), after any move to the session's loop, and a
 * connected client never moves again), lookups copy them out under the
 * lock (which also orders them after the put), and the client leaves the
 * index (under the lock) before either is freed.
 * Take-over: the new connection's put replaces the entry before the old
 * connection's disconnect runs, so remove only deletes an entry that is
 * still the caller's.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/hub_internal.h"
#include "util/hmap.h"

struct hub_presence {
    pthread_mutex_t lock;
    hmap map; /* client id → hub_client */
};

static hmap_key client_key(const void *value, const void *ctx)
{
    (void)ctx;
    const hub_client *hc = value;
    return (hmap_key){hub_client_id(hc), strlen(hub_client_id(hc))};
}

hub_presence *hub_presence_new(void)
{
    hub_presence *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    hmap_init(&p->map, client_key, NULL);
    return p;
}

/* The clients still listed are their loops' to free (disconnected). */
void hub_presence_free(hub_presence *p)
{
    if (!p)
        return;
    hmap_free(&p->map);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

bool hub_presence_put(hub_presence *p, hub_client *hc)
{
    pthread_mutex_lock(&p->lock);
    bool ok = hmap_put(&p->map, hub_client_id(hc), strlen(hub_client_id(hc)), hc) != hc;
    pthread_mutex_unlock(&p->lock);
    return ok;
}

bool hub_presence_remove(hub_presence *p, hub_client *hc)
{
    size_t len = strlen(hub_client_id(hc));
    bool gone = false;
    pthread_mutex_lock(&p->lock);
    if (hmap_get(&p->map, hub_client_id(hc), len) == hc)
        gone = hmap_del(&p->map, hub_client_id(hc), len) != NULL;
    pthread_mutex_unlock(&p->lock);
    return gone;
}

bool hub_presence_find(hub_presence *p, const char *key, net_loop **loop,
                       broker_client_handle *h)
{
    pthread_mutex_lock(&p->lock);
    const hub_client *hc = hmap_get(&p->map, key, strlen(key));
    if (hc) {
        *loop = broker_client_loop(hub_client_broker(hc));
        *h = broker_client_get_handle(hub_client_broker(hc));
    }
    pthread_mutex_unlock(&p->lock);
    return hc != NULL;
}

void hub_client_id_of(const char *device_id, const char *module_id, char *out, size_t cap)
{
    if (module_id && *module_id)
        snprintf(out, cap, "%s/%s", device_id, module_id);
    else
        snprintf(out, cap, "%s", device_id);
}

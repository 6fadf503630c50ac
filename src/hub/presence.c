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
 * to MQTT traffic. The map owns copies of the keys (hmap keys must outlive
 * their entries). Take-over: the new connection's put replaces the entry
 * before the old connection's disconnect runs, so remove only deletes an
 * entry that still names the caller's handle.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/hub_internal.h"
#include "util/hmap.h"

/* One allocation per entry: the key lives in the tail (hmap keys must
 * outlive their entries, and a separate strdup would cost a second block
 * and its malloc header per connected device). */
typedef struct presence_entry {
    net_loop *loop;
    broker_client_handle handle;
    char key[];
} presence_entry;

struct hub_presence {
    pthread_mutex_t lock;
    hmap map; /* key → presence_entry */
};

static hmap_key entry_key(const void *value, const void *ctx)
{
    (void)ctx;
    const presence_entry *e = value;
    return (hmap_key){e->key, strlen(e->key)};
}

hub_presence *hub_presence_new(void)
{
    hub_presence *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    hmap_init(&p->map, entry_key, NULL);
    return p;
}

void hub_presence_free(hub_presence *p)
{
    if (!p)
        return;
    void *v;
    for (size_t pos = 0; hmap_next(&p->map, &pos, &v);) {
        free(v);
    }
    hmap_free(&p->map);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

bool hub_presence_put(hub_presence *p, const char *key, net_loop *loop, broker_client_handle h)
{
    size_t len = strlen(key);
    bool ok = true;
    pthread_mutex_lock(&p->lock);
    presence_entry *e = hmap_get(&p->map, key, len);
    if (e) {
        e->loop = loop;
        e->handle = h;
    } else {
        e = malloc(sizeof *e + len + 1);
        if (e) {
            e->loop = loop;
            e->handle = h;
            memcpy(e->key, key, len + 1);
        }
        if (!e || hmap_put(&p->map, e->key, len, e) == e) {
            free(e);
            ok = false;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return ok;
}

bool hub_presence_remove(hub_presence *p, const char *key, broker_client_handle h)
{
    size_t len = strlen(key);
    presence_entry *gone = NULL;
    pthread_mutex_lock(&p->lock);
    presence_entry *e = hmap_get(&p->map, key, len);
    if (e && e->handle == h)
        gone = hmap_del(&p->map, key, len);
    pthread_mutex_unlock(&p->lock);
    if (!gone)
        return false;
    free(gone);
    return true;
}

bool hub_presence_find(hub_presence *p, const char *key, net_loop **loop,
                       broker_client_handle *h)
{
    pthread_mutex_lock(&p->lock);
    presence_entry *e = hmap_get(&p->map, key, strlen(key));
    if (e) {
        *loop = e->loop;
        *h = e->handle;
    }
    pthread_mutex_unlock(&p->lock);
    return e != NULL;
}

void hub_client_id_of(const char *device_id, const char *module_id, char *out, size_t cap)
{
    if (module_id && *module_id)
        snprintf(out, cap, "%s/%s", device_id, module_id);
    else
        snprintf(out, cap, "%s", device_id);
}

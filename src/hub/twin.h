/*
 * hub/twin.h — device and module twins (../shared/spec/iothub-mqtt5.md §6
 * "Get twin", "Patch reported state", "Receive desired state changes" and
 * §7 "Twin"; ../shared/spec/service-rest.md "Twins").
 *
 * The twin of every identity is kept in memory (a JSON document per
 * identity, created empty with the identity) and written through the store
 * (store_twin_put); a change is answered only after it is durable. Shared
 * by all loops behind one mutex, like the registry.
 *
 * Document (service view): deviceId, moduleId (modules), etag, version,
 * status, connectionState, lastActivityTime, tags, properties.desired and
 * properties.reported, each with $version and $metadata ($lastUpdated at
 * every object level; desired also $lastUpdatedVersion). Desired and
 * reported $version are independent, start at 1, +1 per accepted change;
 * etag and version change on every change. Patches are JSON merge patches
 * (null removes). Limits (violations -> HUB_BAD_REQUEST, nothing changed):
 * keys <= 1 KB UTF-8, no control characters, no '.', '$' or ' '; depth <=
 * 10; strings <= 4 KB; integers within +-4503599627370495; desired and
 * reported <= 32 KB each, tags <= 8 KB (size = key lengths + value lengths,
 * numbers 8 bytes, booleans 4).
 */
#ifndef IOTHUBD_HUB_TWIN_H
#define IOTHUBD_HUB_TWIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hub/registry.h"
#include "hub/status.h"
#include "net/loop.h"

struct store;
typedef struct hub_twins hub_twins;

/* Loads every stored twin (synchronously, at start-up, after the
 * registry). Identities without a stored twin get an empty one. The
 * registry is used for status/connectionState in the service view. */
hub_twins *twins_open(struct store *st, hub_registry *reg, char *err, size_t errlen);
void twins_free(hub_twins *t);

/* The registry created or deleted an identity: create its empty twin or
 * drop it (with its modules'). Called from the registry change listener,
 * on the loop that made the change. */
void twins_identity_changed(hub_twins *t, const hub_identity *old, const hub_identity *now);

/* --- device side (MQTT) --- */

/* Get twin: the device view {"desired":{...,"$version":N},"reported":
 * {...,"$version":M}} without $metadata. Synchronous (memory); returns a
 * malloc'd NUL-terminated string, or NULL with *st set (HUB_NOT_FOUND). */
char *twins_device_view(hub_twins *t, const char *device_id, const char *module_id,
                        hub_status *st);

typedef void (*twins_version_fn)(net_loop *loop, void *arg, hub_status st, uint64_t version,
                                 const char *reason);
/* Patch reported: merge `patch` (must be a JSON object) into reported.
 * if_version < 0: unconditional; else the current reported $version must
 * equal it (HUB_PRECONDITION_FAILED otherwise). `done` runs on `loop`
 * after the store commit with the new reported $version. */
void twins_patch_reported(hub_twins *t, const char *device_id, const char *module_id,
                          const char *patch, size_t patch_len, int64_t if_version,
                          net_loop *loop, twins_version_fn done, void *arg);

/* Desired properties changed (service side). Called on the loop that made
 * the change, after it is durable, with the desired $version and the patch
 * as sent to the device (a JSON object; for a replace, the whole new
 * desired document). The hub forwards it to the device if connected and
 * subscribed. */
typedef void (*twins_desired_fn)(void *arg, const char *device_id, const char *module_id,
                                 uint64_t version, const char *patch_json);
void twins_set_desired_listener(hub_twins *t, twins_desired_fn fn, void *arg);

/* --- service side (HTTP) --- */

typedef void (*twins_doc_fn)(net_loop *loop, void *arg, hub_status st, const char *twin_json,
                             const char *etag, const char *reason);
/* The full service view (with $metadata), synchronous; malloc'd or NULL
 * with *st = HUB_NOT_FOUND. *etag_out (may be NULL) gets the etag. */
char *twins_service_view(hub_twins *t, const char *device_id, const char *module_id,
                         char etag_out[HUB_ETAG_MAX + 1], hub_status *st);
/* PATCH /twins/{id}: body may hold "tags" and "properties":{"desired"}
 * (merge patch). PUT: replaces tags and desired. if_match NULL, "*" or an
 * etag (unquoted): HUB_PRECONDITION_FAILED on mismatch. `done` gets the
 * full new twin. */
void twins_service_update(hub_twins *t, const char *device_id, const char *module_id,
                          const char *body, size_t body_len, bool replace,
                          const char *if_match, net_loop *loop, twins_doc_fn done, void *arg);

#endif

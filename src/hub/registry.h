/*
 * hub/registry.h — the identity registry: devices, modules, shared access
 * policies (../shared/spec/iothub-mqtt5.md §7, ../shared/spec/service-rest.md).
 *
 * The whole registry lives in memory (a hash map by "deviceId" or
 * "deviceId/moduleId") so that authenticating a CONNECT or a service request
 * never waits for the disk; every change is written through the store and
 * reported to the caller only once the store says it is durable. The map is
 * shared by all event loops behind one mutex: registry calls are rare next
 * to MQTT traffic, and each holds the lock for a copy or an insert only.
 *
 * Concurrency rule for writes: conditions (If-Match, existence) are checked
 * and the in-memory map updated under the lock, at once, so two racing
 * writers see each other; the completion is posted to the caller's loop
 * after the store commit. If the store fails, the change is rolled back in
 * memory (unless a later write superseded it) and REG_STORE_ERROR reported.
 *
 * Runtime state (connection state, last activity, queued command count) is
 * kept alongside but not persisted.
 */
#ifndef IOTHUBD_HUB_REGISTRY_H
#define IOTHUBD_HUB_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "net/loop.h"

struct store;

#define HUB_ID_MAX 128       /* device and module ids */
#define HUB_KEY_MAX 128      /* base64 symmetric key text */
#define HUB_THUMBPRINT_MAX 64
#define HUB_ETAG_MAX 32
#define HUB_REASON_MAX 128
#define HUB_IDENTITY_KEY_MAX (2 * HUB_ID_MAX + 2) /* "dev/mod" and the terminator */

/* An identity's map key and MQTT client id: "deviceId", or
 * "deviceId/moduleId", each id cut at HUB_ID_MAX bytes; returns its length.
 * Every device request builds one or two, so it copies bytes rather than
 * calling snprintf (util/fmt.h says what that costs). */
static inline size_t hub_identity_key(char out[HUB_IDENTITY_KEY_MAX], const char *device_id,
                                      const char *module_id)
{
    size_t n = device_id ? strnlen(device_id, HUB_ID_MAX) : 0;
    memcpy(out, device_id ? device_id : "", n);
    if (module_id && *module_id) {
        size_t m = strnlen(module_id, HUB_ID_MAX);
        out[n++] = '/';
        memcpy(out + n, module_id, m);
        n += m;
    }
    out[n] = '\0';
    return n;
}

typedef enum hub_auth_type {
    HUB_AUTH_SAS,          /* "sas" */
    HUB_AUTH_SELF_SIGNED,  /* "selfSigned": x509 thumbprints */
    HUB_AUTH_CA,           /* "certificateAuthority" */
    HUB_AUTH_NONE,         /* "none" */
} hub_auth_type;

typedef struct hub_identity {
    char device_id[HUB_ID_MAX + 1];
    char module_id[HUB_ID_MAX + 1]; /* "" for a device */
    char generation_id[HUB_ETAG_MAX + 1]; /* set at creation, never changes */
    char etag[HUB_ETAG_MAX + 1];          /* unquoted; changes on every write */
    bool enabled;
    char status_reason[HUB_REASON_MAX + 1];
    hub_auth_type auth_type;
    char primary_key[HUB_KEY_MAX + 1];   /* base64; generated when empty */
    char secondary_key[HUB_KEY_MAX + 1];
    char primary_thumbprint[HUB_THUMBPRINT_MAX + 1]; /* upper-case hex */
    char secondary_thumbprint[HUB_THUMBPRINT_MAX + 1];
    bool iot_edge;
    int64_t status_updated_ms; /* ms since the epoch; 0 = never */
    /* runtime, not persisted */
    bool connected;
    int64_t connection_state_updated_ms;
    int64_t last_activity_ms;
    uint32_t c2d_message_count;
} hub_identity;

typedef enum registry_status {
    REG_OK,                  /* read, replaced or deleted */
    REG_CREATED,             /* put created a new identity */
    REG_NOT_FOUND,           /* DeviceNotFound (404); also a module's device */
    REG_EXISTS,              /* DeviceAlreadyExists (409) */
    REG_PRECONDITION_FAILED, /* If-Match mismatch (412) */
    REG_INVALID,             /* ArgumentInvalid (400), reason in err */
    REG_STORE_ERROR,         /* ServerError (500) */
    REG_STORE_BUSY,          /* ServerBusy (503): the store's disk is full, retry later */
} registry_status;

enum hub_right {
    HUB_RIGHT_REGISTRY_READ = 1,
    HUB_RIGHT_REGISTRY_WRITE = 2,
    HUB_RIGHT_SERVICE_CONNECT = 4,
    HUB_RIGHT_DEVICE_CONNECT = 8,
};

typedef struct hub_policy {
    char name[64];
    unsigned rights; /* enum hub_right bits */
    char primary_key[HUB_KEY_MAX + 1];
    char secondary_key[HUB_KEY_MAX + 1];
} hub_policy;

typedef struct hub_registry hub_registry;

/* Loads every identity and policy from the store (synchronously: called at
 * start-up, before the loops run). On first start (no policies stored) the
 * five standard policies are created with fresh keys. */
hub_registry *registry_open(struct store *st, char *err, size_t errlen);
void registry_free(hub_registry *r);

/* Checks an identity as given by a client: id rules (§7: <= 128 chars of
 * ASCII letters, digits and - . + % _ # * ? ! ( ) , = @ $ '), key format
 * (base64 of 16..64 bytes, or empty), thumbprints (40 or 64 hex digits, or
 * empty), auth type consistent with what is given. */
registry_status registry_validate(const hub_identity *in, char *err, size_t errlen);
bool registry_valid_id(const char *id);

/* Copies the identity out; false when absent. module_id NULL or "" = the
 * device itself. */
bool registry_get(hub_registry *r, const char *device_id, const char *module_id,
                  hub_identity *out);

typedef void (*registry_done_fn)(net_loop *loop, void *arg, registry_status st,
                                 const hub_identity *result, const char *err);

/*
 * Create or replace (service-rest.md "Device identities"). if_match: NULL
 * = create or replace; "*" = must exist; otherwise an etag (without quotes)
 * that must equal the current one. if_none_match_star: must not exist
 * (REG_EXISTS otherwise). Empty keys of a SAS identity are generated; the
 * etag is renewed; generation id kept (new on creation). A module needs its
 * device. `done` runs on `loop` after the write is durable (or failed),
 * with the stored identity.
 */
void registry_put(hub_registry *r, const hub_identity *in, const char *if_match,
                  bool if_none_match_star, net_loop *loop, registry_done_fn done, void *arg);

/* Deletes an identity (a device with all its modules). if_match as above. */
void registry_delete(hub_registry *r, const char *device_id, const char *module_id,
                     const char *if_match, net_loop *loop, registry_done_fn done, void *arg);

/* Devices (module_of == NULL) or the modules of one device, sorted by id,
 * at most `top` (0 = no limit). Returns a malloc'd array; *n its length. */
hub_identity *registry_list(hub_registry *r, const char *module_of, size_t top, size_t *n);

void registry_stats(hub_registry *r, size_t *total, size_t *enabled, size_t *disabled);

bool registry_policy_get(hub_registry *r, const char *name, hub_policy *out);
/* All policies in a fixed order; returns how many were written (<= cap). */
size_t registry_policies(hub_registry *r, hub_policy *out, size_t cap);

/* A durable change happened; called on the loop that made it, after the
 * write is durable and before that caller's `done`. `old` is NULL for a
 * creation, `now` NULL for a deletion. The hub uses this to disconnect
 * identities that were disabled, deleted or had their keys changed. */
typedef void (*registry_change_fn)(void *arg, const hub_identity *old, const hub_identity *now);
void registry_set_change_listener(hub_registry *r, registry_change_fn fn, void *arg);

/* Runtime state, from the MQTT side. */
void registry_note_connection(hub_registry *r, const char *device_id, const char *module_id,
                              bool connected, int64_t now_ms);
void registry_note_activity(hub_registry *r, const char *device_id, const char *module_id,
                            int64_t now_ms);
/* The number of cloud-to-device messages queued for a device
 * (cloudToDeviceMessageCount; commands go to devices, not modules): the
 * C2D queues set it whenever a queue's depth changes. */
void registry_set_c2d_count(hub_registry *r, const char *device_id, uint32_t count);

#endif

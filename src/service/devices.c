/*
 * service/devices.c — device and module identities, device statistics and
 * iothubd's policy listing (service-rest.md "Device identities").
 *
 * Reads (get, list, statistics, policies) answer at once from the
 * registry's in-memory copy. Writes (put, delete) go through registry_put /
 * registry_delete, whose completion comes back on this request's loop after
 * the store made the change durable; the request is answered from there.
 *
 * Conditions: If-Match is "*" or an etag, quoted or not (a weak "W/" prefix
 * is tolerated); If-None-Match: * on a PUT means "create only". Without
 * If-Match a PUT creates (201) or replaces (200). The statuses follow the
 * registry's verdict one to one (see reply_status).
 *
 * Paths are /devices/{id} and /devices/{id}/modules/{moduleId}: the same
 * handlers serve both, looking at how many segments the router matched.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/internal.h"

#define LIST_TOP_DEFAULT 1000
#define LIST_TOP_MAX 1000
#define POLICIES_MAX 32

/* ---- helpers ------------------------------------------------------------- */

/* The ids of the path; false (after answering 400) when one is not a valid
 * id. module is NULL for device paths. */
static bool path_ids(http_request *req, const char **device, const char **module)
{
    *device = req->segments[1];
    *module = req->segment_count >= 4 ? req->segments[3] : NULL;
    if (!registry_valid_id(*device)) {
        http_reply_error(req, 400, "ArgumentInvalid", "invalid device id");
        return false;
    }
    if (*module && !registry_valid_id(*module)) {
        http_reply_error(req, 400, "ArgumentInvalid", "invalid module id");
        return false;
    }
    return true;
}

/* Answers a registry verdict for a write; ok_status is 200 (put) or 204. */
static void reply_status(http_request *req, registry_status st, const hub_identity *result,
                         const char *err, int ok_status)
{
    const char *device = req->segments[1];
    const char *module = req->segment_count >= 4 ? req->segments[3] : NULL;
    switch (st) {
    case REG_OK:
    case REG_CREATED:
        if (ok_status == 204 || !result) {
            http_reply_empty(req, 204);
            return;
        }
        http_reply_json(req, st == REG_CREATED ? 201 : 200, identity_to_json(result),
                        result->etag);
        return;
    case REG_NOT_FOUND:
        http_reply_not_found(req, device, module);
        return;
    case REG_EXISTS:
        http_reply_error(req, 409, "DeviceAlreadyExists", "'%s%s%s' already exists", device,
                         module ? "/" : "", module ? module : "");
        return;
    case REG_PRECONDITION_FAILED:
        http_reply_error(req, 412, "PreconditionFailed", "etag does not match");
        return;
    case REG_INVALID:
        http_reply_error(req, 400, "ArgumentInvalid", "%s", err && *err ? err : "invalid identity");
        return;
    case REG_STORE_BUSY:
        http_reply_error(req, 503, "ServerBusy", "%s", err && *err ? err : "store busy");
        return;
    case REG_STORE_ERROR:
    default:
        http_reply_error(req, 500, "ServerError", "%s", err && *err ? err : "store error");
        return;
    }
}

static void put_done(net_loop *loop, void *arg, registry_status st, const hub_identity *result,
                     const char *err)
{
    (void)loop;
    reply_status(arg, st, result, err, 200);
}

static void delete_done(net_loop *loop, void *arg, registry_status st,
                        const hub_identity *result, const char *err)
{
    (void)loop;
    reply_status(arg, st, result, err, 204);
}

static json_t *identity_array(const hub_identity *ids, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        json_array_append_new(arr, identity_to_json(&ids[i]));
    return arr;
}

/* `top`: 1..LIST_TOP_MAX digits; default LIST_TOP_DEFAULT. */
static bool parse_top(const char *v, size_t *out)
{
    *out = LIST_TOP_DEFAULT;
    if (!v)
        return true;
    size_t x = 0, n = strlen(v);
    if (n == 0 || n > 4)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        x = x * 10 + (size_t)(v[i] - '0');
    }
    if (x == 0 || x > LIST_TOP_MAX)
        return false;
    *out = x;
    return true;
}

/* ---- handlers ------------------------------------------------------------ */

void devices_get(http_request *req)
{
    const char *device, *module;
    if (!path_ids(req, &device, &module))
        return;
    hub_identity id;
    if (!registry_get(req->svc->registry, device, module, &id)) {
        http_reply_not_found(req, device, module);
        return;
    }
    http_reply_json(req, 200, identity_to_json(&id), id.etag);
}

void devices_put(http_request *req)
{
    const char *device, *module, *if_match;
    char etag[HUB_ETAG_MAX + 1];
    if (!path_ids(req, &device, &module) || !http_if_match(req, etag, sizeof etag, &if_match))
        return;
    const char *inm = http_header_get(req, "If-None-Match");
    bool none_match_star = inm && strcmp(inm, "*") == 0;
    hub_identity id;
    char err[200];
    if (!identity_from_json(req->body, req->body_len, device, module, &id, err, sizeof err)) {
        http_reply_error(req, 400, "ArgumentInvalid", "%s", err);
        return;
    }
    registry_put(req->svc->registry, &id, if_match, none_match_star, req->loop, put_done, req);
}

void devices_delete(http_request *req)
{
    const char *device, *module, *if_match;
    char etag[HUB_ETAG_MAX + 1];
    if (!path_ids(req, &device, &module) || !http_if_match(req, etag, sizeof etag, &if_match))
        return;
    registry_delete(req->svc->registry, device, module, if_match, req->loop, delete_done, req);
}

void devices_list(http_request *req)
{
    size_t top, n = 0;
    if (!parse_top(http_query_get(req, "top"), &top)) {
        http_reply_error(req, 400, "ArgumentInvalid", "top must be 1..%d", LIST_TOP_MAX);
        return;
    }
    hub_identity *ids = registry_list(req->svc->registry, NULL, top, &n);
    json_t *arr = identity_array(ids, n);
    free(ids);
    http_reply_json(req, 200, arr ? arr : json_array(), NULL);
}

void modules_list(http_request *req)
{
    const char *device, *module;
    if (!path_ids(req, &device, &module))
        return;
    hub_identity dev;
    if (!registry_get(req->svc->registry, device, NULL, &dev)) {
        http_reply_not_found(req, device, NULL);
        return;
    }
    size_t n = 0;
    hub_identity *ids = registry_list(req->svc->registry, device, 0, &n);
    json_t *arr = identity_array(ids, n);
    free(ids);
    http_reply_json(req, 200, arr ? arr : json_array(), NULL);
}

void statistics_devices(http_request *req)
{
    size_t total = 0, enabled = 0, disabled = 0;
    registry_stats(req->svc->registry, &total, &enabled, &disabled);
    http_reply_json(req, 200,
                    json_pack("{s:I, s:I, s:I}", "totalDeviceCount", (json_int_t)total,
                              "enabledDeviceCount", (json_int_t)enabled, "disabledDeviceCount",
                              (json_int_t)disabled),
                    NULL);
}

void policies_list(http_request *req)
{
    hub_policy *pols = calloc(POLICIES_MAX, sizeof *pols);
    if (!pols) {
        http_reply_error(req, 500, "ServerError", "out of memory");
        return;
    }
    size_t n = registry_policies(req->svc->registry, pols, POLICIES_MAX);
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        char rights[96];
        service_rights_text(pols[i].rights, rights, sizeof rights);
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s}", "keyName", pols[i].name,
                                             "primaryKey", pols[i].primary_key, "secondaryKey",
                                             pols[i].secondary_key, "rights", rights));
    }
    free(pols);
    http_reply_json(req, 200, arr ? arr : json_array(), NULL);
}

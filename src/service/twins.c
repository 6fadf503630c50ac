/*
 * service/twins.c — device and module twins over HTTP (service-rest.md
 * "Twins"): GET, PATCH (merge) and PUT (replace) on /twins/{id} and
 * /twins/{id}/modules/{moduleId}.
 *
 * The hub owns the twin (hub/twin.h): a read is answered at once from its
 * memory; a write goes to twins_service_update, which checks If-Match and
 * the §7 limits under the twins' lock and calls back on this request's loop
 * once the change is durable, with the whole new twin. This file only maps
 * paths, headers and hub statuses to HTTP:
 *
 *   HUB_OK                  200, the twin, ETag header (quoted)
 *   HUB_NOT_FOUND           404 DeviceNotFound
 *   HUB_PRECONDITION_FAILED 412 PreconditionFailed
 *   HUB_BAD_REQUEST         400 ArgumentInvalid (bad JSON, limits)
 *   HUB_THROTTLED           429 ThrottlingException
 *   anything else           500 ServerError
 *
 * A read or write that is well-formed is first admitted by the hub's twin
 * read or update rate (throttling.c: 429 ThrottlingException), the same
 * budget the devices' twin requests draw from.
 *
 * If-Match: "*" or an etag, quoted or not, a weak "W/" prefix tolerated;
 * absent = unconditional. The hub renders the twin as text; it is parsed
 * back here only because responses go out through http_reply_json (a twin
 * is at most ~100 KB with its metadata, and writes are rare).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/twin.h"
#include "service/internal.h"

void service_set_twins(service *s, hub_twins *t)
{
    s->twins = t;
}

/* The ids of the path (module NULL for a device twin); false after
 * answering 400 for an id the registry could never hold. */
static bool twin_path_ids(http_request *req, const char **device, const char **module)
{
    *device = req->segments[1];
    *module = req->segment_count >= 4 ? req->segments[3] : NULL;
    if (!registry_valid_id(*device) || (*module && !registry_valid_id(*module))) {
        http_reply_error(req, 400, "ArgumentInvalid", "invalid %s id", *module ? "module" : "device");
        return false;
    }
    return true;
}

/* The twins handle, or NULL after answering 500 (not wired). */
static hub_twins *twins_of(http_request *req)
{
    if (!req->svc->twins)
        http_reply_error(req, 500, "ServerError", "twins are not enabled in this server");
    return req->svc->twins;
}

/* Answers 200 with the twin text (a JSON object) and its etag. */
static void reply_twin(http_request *req, const char *twin_json, const char *etag)
{
    json_error_t jerr;
    json_t *j = json_loads(twin_json, JSON_ALLOW_NUL, &jerr);
    if (!j) {
        http_reply_error(req, 500, "ServerError", "the hub rendered an invalid twin");
        return;
    }
    http_reply_json(req, 200, j, etag);
}

/* Answers a hub verdict that is not a success. */
static void reply_failure(http_request *req, hub_status st, const char *reason)
{
    const char *device = req->segments[1];
    const char *module = req->segment_count >= 4 ? req->segments[3] : NULL;
    const char *why = reason && *reason ? reason : "twin update failed";
    switch (st) {
    case HUB_NOT_FOUND:
        http_reply_not_found(req, device, module);
        return;
    case HUB_PRECONDITION_FAILED:
        http_reply_error(req, 412, "PreconditionFailed", "%s", why);
        return;
    case HUB_BAD_REQUEST:
        http_reply_error(req, 400, "ArgumentInvalid", "%s", why);
        return;
    case HUB_THROTTLED:
        http_reply_error(req, 429, "ThrottlingException", "%s", why);
        return;
    case HUB_SERVER_BUSY: /* the store's disk is full: retry later */
        http_reply_error(req, 503, "ServerBusy", "%s", why);
        return;
    default:
        http_reply_error(req, 500, "ServerError", "%s", why);
        return;
    }
}

void twins_get(http_request *req)
{
    const char *device, *module;
    hub_twins *t = twins_of(req);
    if (!t || !twin_path_ids(req, &device, &module) || !service_admit(req, HUB_THROTTLE_TWIN_READ))
        return;
    char etag[HUB_ETAG_MAX + 1];
    hub_status st = HUB_SERVER_ERROR;
    char *text = twins_service_view(t, device, module, etag, &st);
    if (text)
        reply_twin(req, text, etag);
    else
        reply_failure(req, st, "could not render the twin");
    free(text);
}

static void update_done(net_loop *loop, void *arg, hub_status st, const char *twin_json,
                        const char *etag, const char *reason)
{
    (void)loop;
    http_request *req = arg;
    if (st == HUB_OK && twin_json)
        reply_twin(req, twin_json, etag);
    else
        reply_failure(req, st == HUB_OK ? HUB_SERVER_ERROR : st, reason);
}

/* PATCH (merge) and PUT (replace) share everything but the mode. */
static void twins_write(http_request *req, bool replace)
{
    const char *device, *module, *if_match;
    char etag[HUB_ETAG_MAX + 1];
    hub_twins *t = twins_of(req);
    if (!t || !twin_path_ids(req, &device, &module) ||
        !http_if_match(req, etag, sizeof etag, &if_match) ||
        !service_admit(req, HUB_THROTTLE_TWIN_UPDATE))
        return;
    twins_service_update(t, device, module, (const char *)req->body, req->body_len, replace,
                         if_match, req->loop, update_done, req);
}

void twins_patch(http_request *req)
{
    twins_write(req, false);
}

void twins_replace(http_request *req)
{
    twins_write(req, true);
}

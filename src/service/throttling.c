/*
 * service/throttling.c — the hub's rate limits and daily message quota
 * (hub/throttle.h) as the service API answers them.
 *
 * The service shares the hub's throttle object, so a kind of operation has
 * one budget whoever starts it: a twin read from a device and a GET
 * /twins/{id} draw from the same bucket. A handler calls service_admit()
 * where its operation starts, before any work, and stops if it returns
 * false. Refusals map to IoT Hub's HTTP errors (service-rest.md):
 *
 *   HUB_THROTTLED       429 ThrottlingException (retry later)
 *   HUB_QUOTA_EXCEEDED  403 IotHubQuotaExceeded (status 0502 on MQTT):
 *                       the same status IoT Hub uses for its daily quota;
 *                       not retryable before 00:00 UTC
 *
 * Twins call it here (twins.c); direct methods and C2D sends call it from
 * their own handlers with HUB_THROTTLE_METHOD and HUB_THROTTLE_C2D.
 */
#include "service/internal.h"

void service_set_throttle(service *s, hub_throttle *t)
{
    s->throttle = t;
}

bool service_admit(http_request *req, hub_throttle_kind kind)
{
    hub_throttle *t = req->svc->throttle;
    hub_status st = hub_throttle_admit(t, kind);
    if (st == HUB_OK)
        return true;
    char text[128];
    hub_throttle_describe(t, kind, st, text, sizeof text);
    if (st == HUB_QUOTA_EXCEEDED)
        http_reply_error(req, 403, "IotHubQuotaExceeded", "%s", text);
    else
        http_reply_error(req, 429, "ThrottlingException", "%s", text);
    return false;
}

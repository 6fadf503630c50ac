/*
 * service/c2d.c — cloud-to-device commands over HTTP (service-rest.md
 * "Cloud-to-device commands", an iothubd addition: IoT Hub itself sends
 * them over AMQP):
 *
 *   POST   /devices/{id}/messages/deviceBound   send; 201 after the commit
 *   DELETE /devices/{id}/commands               purge
 *   GET    /messages/serviceBound/feedback      feedback records (consumed)
 *
 * A well-formed send is first admitted by the hub's C2D rate and the daily
 * quota (throttling.c: 429 ThrottlingException / 403 IotHubQuotaExceeded).
 * The queues (hub/c2d.h) decide; this file maps headers to a c2d_message
 * and results to HTTP:
 *   C2D_OK 201 {"messageId","sequenceNumber","enqueuedTime"};
 *   C2D_DEVICE_NOT_FOUND 404 DeviceNotFound; C2D_QUEUE_FULL 403
 *   DeviceMaximumQueueDepthExceeded; C2D_TOO_LARGE 413 MessageTooLarge;
 *   C2D_INVALID 400 ArgumentInvalid; C2D_ERROR 500 ServerError; C2D_BUSY
 *   503 ServerBusy (the store's disk is full).
 *
 * Headers of a send: iothub-messageid, iothub-correlationid, iothub-userid,
 * iothub-expiry (an ISO 8601 UTC time, or decimal seconds from now),
 * iothub-ack (none|positive|negative|full), iothub-creation-time (ISO 8601
 * or ms since the epoch; **iothubd**: becomes the device's creation-time),
 * Content-Type, Content-Encoding, iothub-app-{name} (application property
 * `@{name}`). The body is the message, any bytes.
 *
 * Feedback reading returns every record kept (oldest first) and removes
 * them: a second read returns only what happened since.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hub/c2d.h"
#include "service/internal.h"
#include "util/log.h"
#include "util/outbuf.h"
#include "util/time.h"

#define APP_PREFIX "iothub-app-"
#define FEEDBACK_BATCH 1000
#define MAX_APP_PROPS 100

void service_set_c2d(service *s, hub_c2d *c)
{
    s->c2d = c;
}

/* The queues, or NULL after answering 500 (not wired). */
static hub_c2d *c2d_of(http_request *req)
{
    if (!req->svc->c2d)
        http_reply_error(req, 500, "ServerError", "commands are not enabled in this server");
    return req->svc->c2d;
}

static bool device_id_ok(http_request *req)
{
    if (registry_valid_id(req->segments[1]))
        return true;
    http_reply_error(req, 400, "ArgumentInvalid", "invalid device id");
    return false;
}

/* ---- time values ---------------------------------------------------------- */

static bool all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return false;
    return true;
}

/* iothub-expiry: seconds from now, or an absolute ISO 8601 time. */
static bool parse_expiry(const char *text, int64_t *out)
{
    if (all_digits(text)) {
        if (strlen(text) > 9)
            return false;
        *out = (int64_t)time_wall_ms() + atoll(text) * 1000;
        return true;
    }
    return time_parse_iso8601_ms(text, out);
}

/* iothub-creation-time: ms since the epoch (not 0, which means unset),
 * or ISO 8601. */
static bool parse_creation_time(const char *text, int64_t *out)
{
    if (all_digits(text))
        return time_parse_epoch_ms(text, strlen(text), out) && *out > 0;
    return time_parse_iso8601_ms(text, out);
}

/* ---- send ------------------------------------------------------------------ */

typedef struct send_headers {
    c2d_message m;
    c2d_app_prop app[MAX_APP_PROPS];
} send_headers;

/* Application properties from iothub-app-{name} headers. False after
 * answering 400. */
static bool collect_app_props(http_request *req, send_headers *sh)
{
    size_t plen = strlen(APP_PREFIX);
    for (size_t i = 0; i < req->header_count; i++) {
        const http_header *h = &req->headers[i];
        if (strncasecmp(h->name, APP_PREFIX, plen) != 0)
            continue;
        if (!h->name[plen]) {
            http_reply_error(req, 400, "ArgumentInvalid", "empty application property name");
            return false;
        }
        if (sh->m.app_count == MAX_APP_PROPS) {
            http_reply_error(req, 400, "ArgumentInvalid", "too many application properties");
            return false;
        }
        sh->app[sh->m.app_count++] = (c2d_app_prop){h->name + plen, h->value};
    }
    sh->m.app = sh->app;
    return true;
}

/* A header that must not be empty when present; NULL when absent. */
static const char *optional_header(http_request *req, const char *name)
{
    const char *v = http_header_get(req, name);
    return v && *v ? v : NULL;
}

/* Fills sh from the request; false after answering 400. */
static bool read_send_headers(http_request *req, send_headers *sh)
{
    c2d_message *m = &sh->m;
    m->device_id = req->segments[1];
    m->message_id = optional_header(req, "iothub-messageid");
    m->correlation_id = optional_header(req, "iothub-correlationid");
    m->user_id = optional_header(req, "iothub-userid");
    m->content_type = optional_header(req, "Content-Type");
    m->content_encoding = optional_header(req, "Content-Encoding");
    m->body = req->body;
    m->body_len = req->body_len;
    const char *ack = optional_header(req, "iothub-ack");
    const char *expiry = optional_header(req, "iothub-expiry");
    const char *created = optional_header(req, "iothub-creation-time");
    if (ack && !c2d_ack_parse(ack, &m->ack)) {
        http_reply_error(req, 400, "ArgumentInvalid", "iothub-ack must be none, positive, "
                                                      "negative or full");
        return false;
    }
    if (expiry && !parse_expiry(expiry, &m->expiry_ms)) {
        http_reply_error(req, 400, "ArgumentInvalid", "iothub-expiry must be an ISO 8601 UTC "
                                                      "time or a number of seconds");
        return false;
    }
    if (created && !parse_creation_time(created, &m->creation_time_ms)) {
        http_reply_error(req, 400, "ArgumentInvalid", "iothub-creation-time must be an ISO 8601 "
                                                      "UTC time or milliseconds since the epoch");
        return false;
    }
    return collect_app_props(req, sh);
}

static void reply_result(http_request *req, c2d_result r, const char *err)
{
    const char *why = err && *err ? err : "failed";
    switch (r) {
    case C2D_OK:
        break;
    case C2D_DEVICE_NOT_FOUND:
        http_reply_error(req, 404, "DeviceNotFound", "device %s not found", req->segments[1]);
        break;
    case C2D_QUEUE_FULL:
        http_reply_error(req, 403, "DeviceMaximumQueueDepthExceeded",
                         "the queue of device %s is full", req->segments[1]);
        break;
    case C2D_TOO_LARGE:
        http_reply_error(req, 413, "MessageTooLarge", "%s", why);
        break;
    case C2D_INVALID:
        http_reply_error(req, 400, "ArgumentInvalid", "%s", why);
        break;
    case C2D_BUSY:
        http_reply_error(req, 503, "ServerBusy", "%s", why);
        break;
    case C2D_ERROR:
    default:
        http_reply_error(req, 500, "ServerError", "%s", why);
        break;
    }
}

static void sent(net_loop *loop, void *arg, c2d_result r, uint64_t seq, int64_t enqueued_ms,
                 const char *message_id, const char *err)
{
    (void)loop;
    http_request *req = arg;
    if (r != C2D_OK) {
        log_info("c2d: send to %s refused: %s", req->segments[1], err && *err ? err : "error");
        /* admitted but not accepted: the daily quota counts accepted messages */
        hub_throttle_refund(req->svc->throttle, HUB_THROTTLE_C2D);
        reply_result(req, r, err);
        return;
    }
    char when[32], body[64 + 6 * C2D_MESSAGE_ID_MAX + FMT_U64_MAX + sizeof when];
    time_iso8601_ms(enqueued_ms, when);
    /* written here rather than packed and dumped by jansson, which cost
     * ~15,000 instructions a send; the message id is UTF-8 (hub/c2d.c) */
    outbuf o = outbuf_over(body, sizeof body);
    OUTBUF_LITERAL(&o, "{\"messageId\":");
    outbuf_json_string(&o, message_id);
    OUTBUF_LITERAL(&o, ",\"sequenceNumber\":");
    outbuf_u64(&o, seq);
    OUTBUF_LITERAL(&o, ",\"enqueuedTime\":\"");
    outbuf_str(&o, when);
    OUTBUF_LITERAL(&o, "\"}");
    if (o.overflow) { /* cannot happen: every part is bounded */
        http_reply_error(req, 500, "ServerError", "receipt too long");
        return;
    }
    http_conn_finish(req, 201, NULL, body, outbuf_len(&o));
}

void c2d_http_send(http_request *req)
{
    hub_c2d *c = c2d_of(req);
    send_headers sh;
    memset(&sh, 0, sizeof sh);
    if (!c || !device_id_ok(req) || !read_send_headers(req, &sh) ||
        !service_admit(req, HUB_THROTTLE_C2D))
        return;
    c2d_send(c, &sh.m, req->loop, sent, req);
}

/* ---- purge ----------------------------------------------------------------- */

static void purged(net_loop *loop, void *arg, c2d_result r, uint64_t n, const char *err)
{
    (void)loop;
    http_request *req = arg;
    if (r != C2D_OK) {
        reply_result(req, r, err);
        return;
    }
    json_t *body = json_pack("{s:s, s:n, s:I}", "deviceId", req->segments[1], "moduleId",
                             "totalMessagesPurged", (json_int_t)n);
    http_reply_json(req, 200, body, NULL);
}

void c2d_http_purge(http_request *req)
{
    hub_c2d *c = c2d_of(req);
    if (c && device_id_ok(req))
        c2d_purge(c, req->segments[1], req->loop, purged, req);
}

/* ---- feedback ---------------------------------------------------------------- */

static json_t *feedback_json(const c2d_feedback *f)
{
    char when[32];
    time_iso8601_ms(f->time_ms, when);
    return json_pack("{s:s, s:s, s:s, s:s, s:s}", "originalMessageId", f->message_id, "deviceId",
                     f->device_id, "statusCode", c2d_outcome_name(f->outcome), "description",
                     c2d_outcome_description(f->outcome), "enqueuedTimeUtc", when);
}

void c2d_http_feedback(http_request *req)
{
    hub_c2d *c = c2d_of(req);
    if (!c)
        return;
    c2d_feedback *recs = malloc(FEEDBACK_BATCH * sizeof *recs);
    json_t *arr = json_array();
    if (!recs || !arr) {
        free(recs);
        json_decref(arr);
        http_reply_error(req, 500, "ServerError", "out of memory");
        return;
    }
    size_t n = c2d_feedback_take(c, recs, FEEDBACK_BATCH);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, feedback_json(&recs[i]));
    free(recs);
    http_reply_json(req, 200, arr, NULL);
}

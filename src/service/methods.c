/*
 * service/methods.c — direct methods over HTTP (service-rest.md "Direct
 * methods"): POST /twins/{id}/methods and /twins/{id}/modules/{m}/methods.
 *
 * The body is checked here (so each mistake gets its own message), then
 * the hub runs the call (hub/methods.h) and answers on this request's loop;
 * the connection does not read meanwhile, as for every asynchronous
 * handler. Mapping of the body and of the hub's verdicts:
 *
 *   body not a JSON object, methodName missing or unusable,
 *   timeouts not integers within 5..300 / 0..300    400 ArgumentInvalid
 *   payload (as compact JSON text) over 128 KB       413 MessageTooLarge
 *   no such device or module                         404 DeviceNotFound
 *   HUB_OK                  200 {"status":<response-code>,"payload":<payload>}
 *   HUB_TARGET_UNAVAILABLE  404 DeviceNotOnline (06A0)
 *   HUB_TARGET_TIMEOUT      504 GatewayTimeout (06A1)
 *   HUB_TARGET_FAILED       502 DeviceInvalidResponse (06A2): the device
 *                           answered without a valid response-code, or
 *                           with an unusable payload. An iothubd code: the
 *                           spec names no HTTP error for 06A2; 502 says "the
 *                           server behind me answered badly", which is what
 *                           happened, and is not retried blindly like a 5xx
 *                           of our own.
 *   anything else           500 ServerError
 *
 * What the device gets: the request's `payload` as compact JSON text
 * (absent or null → "null"). What the caller gets back as `payload`: the
 * device's payload as sent when it is JSON (any JSON value); an empty
 * payload is null; a payload that is not JSON but is UTF-8 text becomes a
 * JSON string of that text (devices answering "OK" stay usable); bytes
 * that are not UTF-8 cannot be carried in JSON and make the call fail
 * with 502.
 */
#include <stdlib.h>
#include <string.h>

#include "hub/methods.h"
#include "service/internal.h"
#include "util/json_load.h"
#include "util/outbuf.h"

void service_set_methods(service *s, struct hub_methods *m)
{
    s->methods = m;
}

/* The call's parameters from the body; false after answering 400/413.
 * *payload_text is malloc'd on success. */
typedef struct call_args {
    const char *method_name; /* points into the parsed body */
    char *payload_text;
    unsigned response_timeout_s;
    unsigned connect_timeout_s;
} call_args;

/* An optional integer field within [min, max]; absent or null = dflt.
 * False after answering 400. */
static bool seconds_field(http_request *req, json_t *body, const char *name, unsigned min,
                          unsigned max, unsigned dflt, unsigned *out)
{
    json_t *v = json_object_get(body, name);
    *out = dflt;
    if (!v || json_is_null(v))
        return true;
    json_int_t n = json_is_integer(v) ? json_integer_value(v) : -1;
    if (!json_is_integer(v) || n < (json_int_t)min || n > (json_int_t)max) {
        http_reply_error(req, 400, "ArgumentInvalid", "%s must be an integer within %u..%u",
                         name, min, max);
        return false;
    }
    *out = (unsigned)n;
    return true;
}

static bool method_name_field(http_request *req, json_t *body, const char **out)
{
    json_t *v = json_object_get(body, "methodName");
    const char *name = json_is_string(v) ? json_string_value(v) : NULL;
    if (!name || strlen(name) != json_string_length(v) || !hub_method_name_valid(name)) {
        http_reply_error(req, 400, "ArgumentInvalid",
                         "methodName must be a string of 1 to %d bytes without '/', '+', '#' "
                         "or control characters", HUB_METHOD_NAME_MAX);
        return false;
    }
    *out = name;
    return true;
}

/* The payload as the device will get it; false after answering. */
static bool payload_field(http_request *req, json_t *body, char **out)
{
    json_t *v = json_object_get(body, "payload");
    *out = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("null");
    if (!*out) {
        http_reply_error(req, 500, "ServerError", "out of memory");
        return false;
    }
    if (strlen(*out) > HUB_METHOD_PAYLOAD_MAX) {
        http_reply_error(req, 413, "MessageTooLarge", "payload larger than 128 KB");
        free(*out);
        *out = NULL;
        return false;
    }
    return true;
}

/* Parses and checks the body; false after answering. `*body` holds the
 * strings args points to (decref after use). */
static bool parse_call(http_request *req, json_t **body, call_args *args)
{
    json_error_t jerr;
    memset(args, 0, sizeof *args);
    *body = json_load_untrusted(req->body, req->body_len, JSON_ALLOW_NUL, &jerr);
    if (!json_is_object(*body)) {
        http_reply_error(req, 400, "ArgumentInvalid", "the body must be a JSON object%s%s",
                         *body ? "" : ": ", *body ? "" : jerr.text);
        return false;
    }
    return method_name_field(req, *body, &args->method_name) &&
           seconds_field(req, *body, "responseTimeoutInSeconds",
                         HUB_METHOD_RESPONSE_TIMEOUT_MIN, HUB_METHOD_RESPONSE_TIMEOUT_MAX,
                         HUB_METHOD_RESPONSE_TIMEOUT_DEFAULT, &args->response_timeout_s) &&
           seconds_field(req, *body, "connectTimeoutInSeconds", 0,
                         HUB_METHOD_CONNECT_TIMEOUT_MAX, 0, &args->connect_timeout_s) &&
           payload_field(req, *body, &args->payload_text);
}

/* 200 {"status":code,"payload":<json>}, `json` (len bytes) copied as is. */
static void reply_spliced(http_request *req, uint32_t code, const char *json, size_t len)
{
    size_t cap = sizeof "{\"status\":,\"payload\":}" + FMT_U64_MAX + len;
    char *body = malloc(cap);
    if (!body) {
        http_reply_error(req, 500, "ServerError", "out of memory");
        return;
    }
    outbuf o = outbuf_over(body, cap);
    OUTBUF_LITERAL(&o, "{\"status\":");
    outbuf_u64(&o, code);
    OUTBUF_LITERAL(&o, ",\"payload\":");
    outbuf_put(&o, json, len);
    OUTBUF_LITERAL(&o, "}");
    http_conn_finish(req, 200, NULL, body, outbuf_len(&o)); /* cap fits every piece */
    free(body);
}

/* 200 {"status":code,"payload":...} with the device's payload as the
 * file comment says. A payload that is JSON goes in as the device's own
 * bytes: jansson parses it only to check it, since dumping it again cost
 * more than the parse and would rewrite the device's numbers (1.1 as
 * 1.1000000000000001; an integer beyond 64 bits made the whole payload a
 * string). Answers 502 when the payload is neither JSON nor UTF-8 text. */
static void reply_call_result(http_request *req, uint32_t code, const uint8_t *p, size_t len)
{
    json_error_t jerr;
    /* integers as reals: only the syntax matters here, and an integer
     * beyond 64 bits is still JSON (and is passed on digit for digit);
     * "\u0000" in a string is JSON too */
    const size_t flags = JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL;
    json_t *parsed = len ? json_load_untrusted(p, len, flags, &jerr) : NULL;
    if (parsed || len == 0) {
        json_decref(parsed);
        reply_spliced(req, code, len ? (const char *)p : "null", len ? len : 4);
        return;
    }
    json_t *text = json_stringn((const char *)p, len);
    json_t *out = text ? json_pack("{s:I, s:o}", "status", (json_int_t)code, "payload", text)
                       : NULL;
    if (!text)
        http_reply_error(req, 502, "DeviceInvalidResponse",
                         "the device's payload is neither JSON nor UTF-8 text (status 06A2)");
    else if (!out)
        http_reply_error(req, 500, "ServerError", "out of memory");
    else
        http_reply_json(req, 200, out, NULL);
}

/* The hub's verdict → the HTTP answer. */
static void call_done(net_loop *loop, void *arg, const hub_method_result *r)
{
    (void)loop;
    http_request *req = arg;
    switch (r->status) {
    case HUB_OK:
        reply_call_result(req, r->response_code, r->payload, r->payload_len);
        return;
    case HUB_TARGET_UNAVAILABLE:
        http_reply_error(req, 404, "DeviceNotOnline", "%s (status 06A0)", r->reason);
        return;
    case HUB_TARGET_TIMEOUT:
        http_reply_error(req, 504, "GatewayTimeout", "%s (status 06A1)", r->reason);
        return;
    case HUB_TARGET_FAILED:
        http_reply_error(req, 502, "DeviceInvalidResponse", "%s (status 06A2)", r->reason);
        return;
    default:
        http_reply_error(req, 500, "ServerError", "%s", r->reason);
        return;
    }
}

/* The ids of the path; false after answering 400 or 404. */
static bool target_ids(http_request *req, const char **device, const char **module)
{
    *device = req->segments[1];
    *module = req->segment_count == 5 ? req->segments[3] : NULL;
    if (!registry_valid_id(*device) || (*module && !registry_valid_id(*module))) {
        http_reply_error(req, 400, "ArgumentInvalid", "invalid %s id", *module ? "module" : "device");
        return false;
    }
    hub_identity id;
    if (registry_get(req->svc->registry, *device, *module, &id))
        return true;
    http_reply_not_found(req, *device, *module);
    return false;
}

/* Hands the checked call to the hub; answers at once when it cannot start. */
static void start_call(http_request *req, const char *device, const char *module,
                       const call_args *args)
{
    hub_method_invocation inv = {
        .device_id = device,
        .module_id = module,
        .method_name = args->method_name,
        .payload = args->payload_text,
        .payload_len = strlen(args->payload_text),
        .response_timeout_s = args->response_timeout_s,
        .connect_timeout_s = args->connect_timeout_s,
    };
    const char *why = NULL;
    hub_status st = hub_method_invoke(req->svc->methods, &inv, req->loop, call_done, req, &why);
    if (st == HUB_OK)
        return;
    if (st == HUB_BAD_REQUEST)
        http_reply_error(req, 400, "ArgumentInvalid", "%s", why);
    else
        http_reply_error(req, 500, "ServerError", "%s", why ? why : "the call could not start");
}

void methods_invoke(http_request *req)
{
    const char *device, *module;
    json_t *body = NULL;
    call_args args = {0};
    if (!req->svc->methods) {
        http_reply_error(req, 500, "ServerError", "direct methods are not enabled in this server");
        return;
    }
    if (target_ids(req, &device, &module) && parse_call(req, &body, &args) &&
        service_admit(req, HUB_THROTTLE_METHOD))
        start_call(req, device, module, &args);
    free(args.payload_text);
    json_decref(body);
}

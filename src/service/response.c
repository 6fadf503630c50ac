/*
 * service/response.c — HTTP responses as IoT Hub clients expect them.
 *
 * Every response carries x-ms-request-id (the request's id, or a fresh one
 * for errors found before a request existed) and a Content-Length; bodies
 * are always JSON with "application/json; charset=utf-8" (the IoT Hub SDKs
 * refuse to parse anything else). Error bodies follow IoT Hub:
 *   {"Message":"ErrorCode:{Code};{text}","ExceptionMessage":"Tracking ID:..."}
 * ETags go out quoted; the JSON "etag" fields stay unquoted.
 *
 * The head is written into a stack buffer (util/outbuf.h: it is small and
 * bounded, and printf cost more than the rest of a response) and
 * head and body are appended to the connection's output queue with one
 * reserve/commit, so a response is never half-queued.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/conn.h"
#include "service/internal.h"
#include "util/crypto.h"
#include "util/log.h"
#include "util/outbuf.h"
#include "util/time.h"
#include "util/utf8.h"

const char *http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

/* Writes the head without printf: this runs for every response, and its
 * five snprintf calls were ~3,000 instructions of a C2D send. */
bool http_write_response(net_conn *c, int status, const char *request_id, const char *etag,
                         const char *connection_header, const char *body, size_t body_len)
{
    char head[512];
    outbuf h = outbuf_over(head, sizeof head);
    OUTBUF_LITERAL(&h, "HTTP/1.1 ");
    outbuf_u64(&h, (uint64_t)status);
    OUTBUF_LITERAL(&h, " ");
    outbuf_str(&h, http_reason(status));
    OUTBUF_LITERAL(&h, "\r\nx-ms-request-id: ");
    outbuf_str(&h, request_id);
    if (body_len > 0)
        OUTBUF_LITERAL(&h, "\r\nContent-Type: application/json; charset=utf-8");
    OUTBUF_LITERAL(&h, "\r\nContent-Length: ");
    outbuf_u64(&h, body_len);
    if (etag && *etag) {
        OUTBUF_LITERAL(&h, "\r\nETag: \"");
        outbuf_str(&h, etag);
        OUTBUF_LITERAL(&h, "\"");
    }
    if (connection_header) {
        OUTBUF_LITERAL(&h, "\r\nConnection: ");
        outbuf_str(&h, connection_header);
    }
    OUTBUF_LITERAL(&h, "\r\n\r\n");
    if (h.overflow)
        return false; /* cannot happen with ids and etags of bounded size */
    size_t n = outbuf_len(&h);
    uint8_t *out = net_conn_reserve(c, n + body_len);
    if (!out)
        return false;
    memcpy(out, head, n);
    if (body_len)
        memcpy(out + n, body, body_len);
    net_conn_commit(c, n + body_len);
    return true;
}

char *http_error_body(const char *code, const char *text, const char *request_id)
{
    char message[600], exception[200], when[32];
    snprintf(message, sizeof message, "ErrorCode:%s;%s", code, text);
    utf8_scrub(message, strlen(message)); /* a parser's error text may stop mid-character */
    time_iso8601_ms((int64_t)time_wall_ms(), when);
    snprintf(exception, sizeof exception, "Tracking ID:%s-TimeStamp:%s", request_id, when);
    json_t *o = json_pack("{s:s, s:s}", "Message", message, "ExceptionMessage", exception);
    if (!o)
        return NULL;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

_Static_assert(HTTP_REQUEST_ID_LEN == CRYPTO_UUID_LEN, "a request id is a UUID");

void http_new_request_id(char out[HTTP_REQUEST_ID_LEN + 1])
{
    uint8_t b[16];
    if (!crypto_random_id(b, sizeof b)) {
        /* not security relevant: fall back to the clock */
        uint64_t t = time_mono_ms() ^ time_wall_ms();
        for (size_t i = 0; i < sizeof b; i++)
            b[i] = (uint8_t)(t >> (8 * (i % 8))) ^ (uint8_t)i;
    }
    crypto_uuid_format(b, out);
}

void http_reply_json(http_request *req, int status, json_t *body, const char *etag)
{
    if (!body) {
        http_conn_finish(req, status, etag, NULL, 0);
        return;
    }
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(body);
    if (!text) {
        http_reply_error(req, 500, "ServerError", "out of memory");
        return;
    }
    http_conn_finish(req, status, etag, text, strlen(text));
    free(text);
}

void http_reply_empty(http_request *req, int status)
{
    http_conn_finish(req, status, NULL, NULL, 0);
}

void http_reply_error(http_request *req, int status, const char *code, const char *fmt, ...)
{
    char text[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    /* logged once, here: server faults and refused credentials are worth a
     * line; other client mistakes only when debugging */
    if (status >= 500)
        log_warn("service: %s %s -> %d %s: %s", req->method, req->target, status, code, text);
    else if (status == 401 || status == 403)
        log_info("service: %s %s -> %d %s: %s", req->method, req->target, status, code, text);
    else
        log_debug("service: %s %s -> %d %s: %s", req->method, req->target, status, code, text);
    char *body = http_error_body(code, text, req->request_id);
    http_conn_finish(req, status, NULL, body, body ? strlen(body) : 0);
    free(body);
}

void http_reply_not_found(http_request *req, const char *device, const char *module)
{
    if (module)
        http_reply_error(req, 404, "DeviceNotFound", "module '%s' of device '%s' not found",
                         module, device);
    else
        http_reply_error(req, 404, "DeviceNotFound", "device '%s' not found", device);
}

/*
 * service/router.c — request target -> route -> auth -> handler.
 *
 * Routes are a static table of (method, path pattern, rights, handler),
 * patterns being literal segments and "*" for an id. The path is split on
 * '/' and each segment percent-decoded before matching, so "/devices/a%2Fb"
 * is the device "a/b" and never the route "/devices/a/b". One trailing slash
 * is ignored ("/devices/" lists devices, as IoT Hub allows); empty segments
 * elsewhere match nothing. A path that matches some pattern but not with
 * this method gets 405, anything else 404. The table is tiny and requests
 * are rare next to MQTT traffic, so matching is a linear scan.
 *
 * Query parameters are form-decoded and kept on the request for handlers
 * (http_query_get). `api-version` is accepted with any value made of
 * letters, digits, '-' and '.', as the spec asks; other values get 400.
 *
 * Authentication runs after routing (the route says which rights it needs)
 * and before the handler; an unknown route is answered without looking at
 * the token, which reveals nothing the route table is not public about.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "service/internal.h"
#include "util/crypto.h"

#define ALL_RIGHTS                                                                         \
    (HUB_RIGHT_REGISTRY_READ | HUB_RIGHT_REGISTRY_WRITE | HUB_RIGHT_SERVICE_CONNECT |      \
     HUB_RIGHT_DEVICE_CONNECT)

typedef struct route {
    const char *method;
    const char *pattern[HTTP_MAX_SEGMENTS + 1]; /* NULL-terminated; "*" = any id */
    unsigned rights;
    void (*handler)(http_request *req);
} route;

static const route routes[] = {
    {"GET", {"devices"}, HUB_RIGHT_REGISTRY_READ, devices_list},
    {"GET", {"devices", "*"}, HUB_RIGHT_REGISTRY_READ, devices_get},
    {"PUT", {"devices", "*"}, HUB_RIGHT_REGISTRY_WRITE, devices_put},
    {"DELETE", {"devices", "*"}, HUB_RIGHT_REGISTRY_WRITE, devices_delete},
    {"GET", {"devices", "*", "modules"}, HUB_RIGHT_REGISTRY_READ, modules_list},
    {"GET", {"devices", "*", "modules", "*"}, HUB_RIGHT_REGISTRY_READ, devices_get},
    {"PUT", {"devices", "*", "modules", "*"}, HUB_RIGHT_REGISTRY_WRITE, devices_put},
    {"DELETE", {"devices", "*", "modules", "*"}, HUB_RIGHT_REGISTRY_WRITE, devices_delete},
    {"GET", {"statistics", "devices"}, HUB_RIGHT_REGISTRY_READ, statistics_devices},
    {"GET", {"iothubd", "policies"}, ALL_RIGHTS, policies_list},
    {"GET", {"twins", "*"}, HUB_RIGHT_REGISTRY_READ, twins_get},
    {"PATCH", {"twins", "*"}, HUB_RIGHT_SERVICE_CONNECT, twins_patch},
    {"PUT", {"twins", "*"}, HUB_RIGHT_SERVICE_CONNECT, twins_replace},
    {"GET", {"twins", "*", "modules", "*"}, HUB_RIGHT_REGISTRY_READ, twins_get},
    {"PATCH", {"twins", "*", "modules", "*"}, HUB_RIGHT_SERVICE_CONNECT, twins_patch},
    {"PUT", {"twins", "*", "modules", "*"}, HUB_RIGHT_SERVICE_CONNECT, twins_replace},
    {"POST", {"twins", "*", "methods"}, HUB_RIGHT_SERVICE_CONNECT, methods_invoke},
    {"POST", {"twins", "*", "modules", "*", "methods"}, HUB_RIGHT_SERVICE_CONNECT, methods_invoke},
    {"POST", {"devices", "*", "messages", "deviceBound"}, HUB_RIGHT_SERVICE_CONNECT, c2d_http_send},
    {"DELETE", {"devices", "*", "commands"}, HUB_RIGHT_SERVICE_CONNECT, c2d_http_purge},
    {"GET", {"messages", "serviceBound", "feedback"}, HUB_RIGHT_SERVICE_CONNECT, c2d_http_feedback},
    {"GET", {"events"}, HUB_RIGHT_SERVICE_CONNECT, events_list},
    {"GET", {"events", "partitions"}, HUB_RIGHT_SERVICE_CONNECT, events_partitions},
    {"GET", {"events", "stream"}, HUB_RIGHT_SERVICE_CONNECT, events_stream},
    {"GET", {"events", "checkpoints", "*", "*"}, HUB_RIGHT_SERVICE_CONNECT, events_checkpoint_get},
    {"PUT", {"events", "checkpoints", "*", "*"}, HUB_RIGHT_SERVICE_CONNECT, events_checkpoint_put},
};

const char *http_header_get(const http_request *req, const char *name)
{
    for (size_t i = 0; i < req->header_count; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

bool http_if_match(http_request *req, char *buf, size_t cap, const char **out)
{
    const char *v = http_header_get(req, "If-Match");
    *out = NULL;
    if (!v)
        return true;
    if (strncmp(v, "W/", 2) == 0)
        v += 2;
    size_t n = strlen(v);
    bool opens = n > 0 && v[0] == '"', closes = n > 1 && v[n - 1] == '"';
    if (opens != closes || n == 0 || (opens && n == 2)) {
        http_reply_error(req, 400, "ArgumentInvalid", "malformed If-Match");
        return false;
    }
    if (opens) {
        v++;
        n -= 2;
    }
    if (n >= cap) { /* longer than any etag: it cannot match */
        http_reply_error(req, 412, "PreconditionFailed", "etag does not match");
        return false;
    }
    memcpy(buf, v, n);
    buf[n] = '\0';
    *out = buf;
    return true;
}

const char *http_query_get(const http_request *req, const char *name)
{
    for (size_t i = 0; i < req->query_count; i++)
        if (strcmp(req->query[i].name, name) == 0)
            return req->query[i].value;
    return NULL;
}

/* malloc'd, percent-decoded copy of in[0..n); NULL on a bad escape. */
static char *decode_dup(const char *in, size_t n, bool form)
{
    char *out = malloc(n + 1);
    if (out && !crypto_url_decode(in, n, form, out, n + 1, NULL)) {
        free(out);
        return NULL;
    }
    return out;
}

/* Splits and decodes the path. Returns 0, or the HTTP status to answer. */
static int split_path(http_request *req, const char *path, size_t len)
{
    if (len == 0 || path[0] != '/')
        return 400;
    if (len > 1 && path[len - 1] == '/')
        len--; /* one trailing slash is ignored */
    if (len > 1 && path[len - 1] == '/')
        return 404; /* but not two */
    size_t pos = 1;
    while (pos < len) {
        const char *seg = path + pos;
        const char *slash = memchr(seg, '/', len - pos);
        size_t n = slash ? (size_t)(slash - seg) : len - pos;
        if (n == 0 || req->segment_count == HTTP_MAX_SEGMENTS)
            return 404;
        char *dec = decode_dup(seg, n, false);
        if (!dec)
            return 400;
        req->segments[req->segment_count++] = dec;
        pos += n + 1;
    }
    return 0;
}

static bool api_version_ok(const char *v)
{
    if (!*v)
        return false;
    for (; *v; v++)
        if (!((*v >= '0' && *v <= '9') || (*v >= 'a' && *v <= 'z') || (*v >= 'A' && *v <= 'Z') ||
              *v == '-' || *v == '.'))
            return false;
    return true;
}

/* Parses "a=1&b=2". Returns 0, or 400. */
static int split_query(http_request *req, const char *q)
{
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        if (n > 0) {
            if (req->query_count == HTTP_MAX_QUERY)
                return 400;
            const char *eq = memchr(q, '=', n);
            size_t nlen = eq ? (size_t)(eq - q) : n;
            http_param *prm = &req->query[req->query_count];
            prm->name = decode_dup(q, nlen, true);
            prm->value = eq ? decode_dup(eq + 1, n - nlen - 1, true) : decode_dup("", 0, true);
            req->query_count++;
            if (!prm->name || !prm->value)
                return 400;
        }
        q += n + (amp ? 1 : 0);
    }
    const char *v = http_query_get(req, "api-version");
    return v && !api_version_ok(v) ? 400 : 0;
}

static bool pattern_matches(const route *r, const http_request *req)
{
    size_t i = 0;
    for (; r->pattern[i]; i++) {
        if (i == req->segment_count)
            return false;
        if (strcmp(r->pattern[i], "*") != 0 && strcmp(r->pattern[i], req->segments[i]) != 0)
            return false;
    }
    return i == req->segment_count;
}

void router_dispatch(http_request *req)
{
    const char *q = strchr(req->target, '?');
    size_t path_len = q ? (size_t)(q - req->target) : strlen(req->target);
    int st = split_path(req, req->target, path_len);
    if (st == 0 && q)
        st = split_query(req, q + 1);
    if (st == 400) {
        http_reply_error(req, 400, "ArgumentInvalid", "malformed request target");
        return;
    }
    const route *found = NULL;
    bool path_known = false;
    for (size_t i = 0; st == 0 && i < sizeof routes / sizeof routes[0]; i++) {
        if (!pattern_matches(&routes[i], req))
            continue;
        path_known = true;
        if (strcmp(routes[i].method, req->method) == 0) {
            found = &routes[i];
            break;
        }
    }
    if (!found) {
        if (path_known)
            http_reply_error(req, 405, "MethodNotAllowed", "%s is not allowed here", req->method);
        else
            http_reply_error(req, 404, "NotFound", "no such resource");
        return;
    }
    if (!auth_check(req, found->rights))
        return;
    found->handler(req);
}

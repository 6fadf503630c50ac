/*
 * tools/bench/responder_hub.c — the hub-shaped ceiling: what the twin,
 * methods and c2d scenarios need from a server, with no store, no
 * authentication, no validation and no logic beyond relaying, so that the
 * hub's twin, methods and C2D rows get a ceiling fraction like the
 * telemetry rows (how much of the machine the load generator and the
 * kernel leave for a server doing this work).
 *
 * Service API (HTTP/1.1 keep-alive; requests answered in order, and at
 * most one method call waiting per connection, as the generator sends):
 *   PUT  /devices/{id}                       200 {} (the generator derives the keys)
 *   POST /twins/{id}/methods                 PUBLISH $iothub/methods/{methodName} to the
 *                                            device, Correlation Data = this connection's
 *                                            id and call number; the device's reply on
 *                                            $iothub/responses becomes
 *                                            200 {"status":response-code,"payload":...}
 *   POST /devices/{id}/messages/deviceBound  PUBLISH QoS 1 $iothub/commands carrying the
 *                                            body, and 201 at once
 *   anything else, or a device not connected: 404
 * Device side (MQTT 5; responder.c acknowledges as usual): a PUBLISH on
 * $iothub/twin/get is answered on $iothub/responses with a small fixed
 * twin, one on $iothub/twin/patch/reported with an empty payload, both
 * echoing the request's Correlation Data.
 *
 * What the hub does that this does not: check tokens and SAS CONNECTs,
 * parse JSON, store twins, commit a command before answering 201 and
 * before sending it, keep a command for a device that is offline, wait
 * for the command's PUBACK. The figure is the same load generator's
 * against the least a server can do per request.
 *
 * Routing (--route, the fan-out ceiling): a SUBSCRIBE's filters are noted;
 * a PUBLISH outside $iothub/ is queued, at QoS 0 with its topic and
 * payload, on every subscriber with a matching filter, and each such
 * subscriber is sent to once when the publisher's read batch ends. No
 * sessions, retained messages, or deduplication of overlapping filters.
 *
 * Threads: a call's HTTP connection and its device's connection may be
 * on different loops; responder_relay writes to either from any loop
 * under the connection's lock, and the table of connections (for a reply's
 * Correlation Data) and of devices (by client id) has a lock of its own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "tools/bench/responder_conn.h"
#include "util/hmap.h"

#define HTTP_HEAD_MAX (64u * 1024u)
#define CALL_CORRELATION_LEN 8
#define METHOD_NAME_MAX 100

static const char FIXED_TWIN[] = "{\"desired\":{\"$version\":1},\"reported\":{\"$version\":1}}";

/* One subscriber's filter (routing). */
typedef struct subscription {
    responder_conn *conn;
    mqtt_bytes filter; /* owns its bytes */
} subscription;

struct responder_hub {
    pthread_mutex_t lock; /* guards everything below */
    responder_conn **conns; /* by id; closed ones stay (responder_conn.h) */
    size_t count;
    size_t cap;
    hmap devices; /* client id → its newest connection */
    uint32_t next_call;
    bool route;
    subscription *subs; /* in the order they came */
    size_t sub_count;
    size_t sub_cap;
};

static hmap_key device_key(const void *value, const void *ctx)
{
    (void)ctx;
    const responder_conn *c = value;
    return (hmap_key){c->client_id, strlen(c->client_id)};
}

responder_hub *responder_hub_new(bool route)
{
    responder_hub *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->route = route;
    pthread_mutex_init(&h->lock, NULL);
    hmap_init(&h->devices, device_key, NULL);
    return h;
}

void responder_hub_free(responder_hub *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->count; i++) {
        responder_conn *c = h->conns[i];
        if (c->fd >= 0)
            close(c->fd);
        free(c->tail);
        bench_buf_free(&c->out);
        pthread_mutex_destroy(&c->lock);
        free(c);
    }
    free(h->conns);
    for (size_t i = 0; i < h->sub_count; i++)
        free((void *)h->subs[i].filter.p);
    free(h->subs);
    hmap_free(&h->devices);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

bool responder_hub_add(responder_hub *h, responder_conn *c)
{
    pthread_mutex_lock(&h->lock);
    responder_conn **conns = responder_grow(h->conns, h->count, &h->cap, sizeof *conns);
    if (conns) {
        h->conns = conns;
        c->id = (uint32_t)h->count;
        conns[h->count++] = c;
    }
    pthread_mutex_unlock(&h->lock);
    return conns != NULL;
}

void responder_hub_closed(responder_hub *h, responder_conn *c)
{
    pthread_mutex_lock(&h->lock);
    if (c->client_id[0] && hmap_get(&h->devices, c->client_id, strlen(c->client_id)) == c)
        hmap_del(&h->devices, c->client_id, strlen(c->client_id));
    size_t kept = 0;
    for (size_t i = 0; i < h->sub_count; i++) {
        if (h->subs[i].conn == c)
            free((void *)h->subs[i].filter.p);
        else
            h->subs[kept++] = h->subs[i];
    }
    h->sub_count = kept;
    pthread_mutex_unlock(&h->lock);
}

static responder_conn *find_device(responder_hub *h, const char *id, size_t len)
{
    pthread_mutex_lock(&h->lock);
    responder_conn *c = hmap_get(&h->devices, id, len);
    pthread_mutex_unlock(&h->lock);
    return c;
}

static responder_conn *find_conn(responder_hub *h, uint32_t id)
{
    pthread_mutex_lock(&h->lock);
    responder_conn *c = id < h->count ? h->conns[id] : NULL;
    pthread_mutex_unlock(&h->lock);
    return c;
}

/* ---- device side -------------------------------------------------------- */

static bool on_connect(responder_hub *h, responder_conn *c, const mqtt_connect *m)
{
    if (m->client_id.len == 0)
        return true; /* no device: nothing can be relayed to it */
    if (c->client_id[0] || m->client_id.len >= sizeof c->client_id)
        return false; /* a second CONNECT, or an id this table cannot key */
    memcpy(c->client_id, m->client_id.p, m->client_id.len);
    c->client_id[m->client_id.len] = '\0';
    pthread_mutex_lock(&h->lock);
    bool ok = hmap_put(&h->devices, c->client_id, m->client_id.len, c) != c;
    pthread_mutex_unlock(&h->lock);
    return ok;
}

/* A twin request answered on the device's own connection. */
static bool answer_twin(responder_conn *c, const mqtt_publish *p, bool get)
{
    if (!MQTT_HAS(&p->props, MQTT_PROP_CORRELATION_DATA))
        return true; /* the hub would refuse it; the generator never sends one */
    bench_buf b = {0};
    bool ok = proto_put_hub_request(&b, MQTT_BYTES_LIT("$iothub/responses"),
                                    p->props.correlation_data, NULL,
                                    get ? (const uint8_t *)FIXED_TWIN : NULL,
                                    get ? sizeof FIXED_TWIN - 1 : 0) &&
              responder_reply(c, b.data + b.start, bench_buf_pending(&b));
    bench_buf_free(&b);
    return ok;
}

static uint32_t get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Appends an HTTP/1.1 response with a JSON body (or none) to b. */
static bool put_http_response(bench_buf *b, int status, const char *reason, const char *body,
                              size_t body_len)
{
    char head[160];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     status, reason, body_len);
    if (n <= 0 || (size_t)n >= sizeof head || !bench_buf_reserve(b, (size_t)n + body_len))
        return false;
    memcpy(b->data + b->len, head, (size_t)n);
    if (body_len)
        memcpy(b->data + b->len + (size_t)n, body, body_len);
    b->len += (size_t)n + body_len;
    return true;
}

/* A device's reply to a method call: 200 to the HTTP connection that is
 * still waiting for this call (a late reply finds none). */
static void relay_method_reply(responder_hub *h, const mqtt_publish *p)
{
    mqtt_bytes corr = p->props.correlation_data;
    if (!MQTT_HAS(&p->props, MQTT_PROP_CORRELATION_DATA) || corr.len != CALL_CORRELATION_LEN)
        return;
    responder_conn *http = find_conn(h, get_u32le(corr.p));
    if (!http || !http->is_http)
        return;
    mqtt_bytes code = MQTT_BYTES_LIT("200");
    proto_user_prop(&p->props, "response-code", &code);
    mqtt_bytes payload = p->payload.len ? p->payload : MQTT_BYTES_LIT("null");
    size_t cap = sizeof "{\"status\":,\"payload\":}" + code.len + payload.len;
    char *body = malloc(cap);
    int n = body ? snprintf(body, cap, "{\"status\":%.*s,\"payload\":%.*s}", (int)code.len,
                            (const char *)code.p, (int)payload.len, (const char *)payload.p)
                 : -1;
    bench_buf b = {0};
    if (n > 0 && (size_t)n < cap && put_http_response(&b, 200, "OK", body, (size_t)n))
        responder_relay(http, &b, get_u32le(corr.p + 4));
    bench_buf_free(&b);
    free(body);
}

/* ---- routing (--route) --------------------------------------------------- */

static bool on_subscribe(responder_hub *h, responder_conn *c, const mqtt_subscribe *sub)
{
    mqtt_iter it;
    mqtt_sub_entry e;
    bool ok = true;
    pthread_mutex_lock(&h->lock);
    mqtt_subscribe_iter(sub, &it);
    while (ok && mqtt_subscribe_next(&it, &e)) {
        subscription *subs = responder_grow(h->subs, h->sub_count, &h->sub_cap, sizeof *subs);
        char *filter = subs ? malloc(e.filter.len ? e.filter.len : 1) : NULL;
        ok = filter != NULL;
        if (subs)
            h->subs = subs;
        if (ok) {
            memcpy(filter, e.filter.p, e.filter.len);
            subs[h->sub_count++] = (subscription){c, {(const uint8_t *)filter, e.filter.len}};
        }
    }
    pthread_mutex_unlock(&h->lock);
    return ok;
}

/* The PUBLISH as subscribers of `version` get it: QoS 0, the topic and
 * payload alone; encoded once per version and message. */
static const bench_buf *routed_copy(bench_buf copies[2], uint8_t version, const mqtt_publish *pub)
{
    bench_buf *b = &copies[version == MQTT_V5];
    if (!bench_buf_pending(b) &&
        !proto_put_publish(b, version, pub->topic, 0, 0, pub->payload.p, pub->payload.len))
        return NULL;
    return b;
}

/* Queues pub for every subscriber with a matching filter (one copy per
 * matching filter, as a broker without overlap handling would). */
static bool route_publish(responder_hub *h, const mqtt_publish *pub, responder_dirty *dirty)
{
    bench_buf copies[2] = {{0}, {0}};
    bool ok = true;
    pthread_mutex_lock(&h->lock);
    for (size_t i = 0; ok && i < h->sub_count; i++) {
        responder_conn *s = h->subs[i].conn;
        if (!mqtt_topic_matches(h->subs[i].filter, pub->topic))
            continue;
        const bench_buf *b = routed_copy(copies, s->version, pub);
        ok = b != NULL;
        if (ok)
            responder_queue_routed(s, b->data + b->start, bench_buf_pending(b), dirty);
    }
    pthread_mutex_unlock(&h->lock);
    bench_buf_free(&copies[0]);
    bench_buf_free(&copies[1]);
    return ok;
}

/* ---- one MQTT packet ---------------------------------------------------- */

bool responder_hub_mqtt(responder_hub *h, responder_conn *c, const uint8_t *p, size_t len,
                        responder_dirty *dirty)
{
    mqtt_packet pkt;
    if (mqtt_decode(p, len, c->version, &pkt) != 0)
        return false;
    if (pkt.type == MQTT_CONNECT)
        return on_connect(h, c, &pkt.u.connect);
    if (pkt.type == MQTT_SUBSCRIBE)
        return !h->route || on_subscribe(h, c, &pkt.u.subscribe);
    const mqtt_publish *pub = &pkt.u.publish;
    if (mqtt_bytes_eq_str(pub->topic, "$iothub/twin/get"))
        return answer_twin(c, pub, true);
    if (mqtt_bytes_eq_str(pub->topic, "$iothub/twin/patch/reported"))
        return answer_twin(c, pub, false);
    if (mqtt_bytes_eq_str(pub->topic, "$iothub/responses"))
        relay_method_reply(h, pub);
    else if (h->route)
        return route_publish(h, pub, dirty);
    return true;
}

/* ---- service side ------------------------------------------------------- */

typedef struct http_request {
    const char *method;
    size_t method_len;
    const char *path; /* without the query */
    size_t path_len;
    const uint8_t *body;
    size_t body_len;
} http_request;

/* Parses the request at the start of buf[0..len): its length, 0 while
 * incomplete, -1 when unreadable. */
static long parse_request(const uint8_t *buf, size_t len, http_request *r)
{
    const uint8_t *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return len > HTTP_HEAD_MAX ? -1 : 0;
    const char *head = (const char *)buf;
    size_t head_len = (size_t)(end - buf);
    const char *sp1 = memchr(head, ' ', head_len);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', head_len - (size_t)(sp1 + 1 - head)) : NULL;
    if (!sp2)
        return -1;
    r->method = head;
    r->method_len = (size_t)(sp1 - head);
    r->path = sp1 + 1;
    const char *query = memchr(r->path, '?', (size_t)(sp2 - r->path));
    r->path_len = (size_t)((query ? query : sp2) - r->path);
    r->body_len = 0;
    for (const char *line = head, *stop = head + head_len; line < stop;) {
        const char *eol = memchr(line, '\n', (size_t)(stop - line));
        const char *next = eol ? eol + 1 : stop;
        /* strtoul stops at the line's CR: the head is followed by CRLFCRLF */
        if (next - line > 15 && strncasecmp(line, "Content-Length:", 15) == 0)
            r->body_len = strtoul(line + 15, NULL, 10);
        line = next;
    }
    if (r->body_len > HTTP_HEAD_MAX)
        return -1;
    size_t total = head_len + 4 + r->body_len;
    if (len < total)
        return 0;
    r->body = end + 4;
    return (long)total;
}

/* The {id} of path "/PREFIX/{id}SUFFIX", or false. */
static bool path_id(const http_request *r, const char *prefix, const char *suffix,
                    const char **id, size_t *id_len)
{
    size_t pl = strlen(prefix), sl = strlen(suffix);
    if (r->path_len <= pl + sl || memcmp(r->path, prefix, pl) != 0 ||
        memcmp(r->path + r->path_len - sl, suffix, sl) != 0)
        return false;
    *id = r->path + pl;
    *id_len = r->path_len - pl - sl;
    return memchr(*id, '/', *id_len) == NULL;
}

static bool reply_http(responder_conn *c, int status, const char *reason, const char *body)
{
    bench_buf b = {0};
    bool ok = put_http_response(&b, status, reason, body, strlen(body)) &&
              responder_reply(c, b.data + b.start, bench_buf_pending(&b));
    bench_buf_free(&b);
    return ok;
}

static bool reply_not_found(responder_conn *c)
{
    return reply_http(c, 404, "Not Found", "{\"errorCode\":404103}");
}

/* The methodName of a method call's JSON body, read without a parser (the
 * generator writes it first, as "methodName":"NAME"). */
static bool method_name(const http_request *r, char out[METHOD_NAME_MAX + 1])
{
    static const char key[] = "\"methodName\":\"";
    const uint8_t *at = memmem(r->body, r->body_len, key, sizeof key - 1);
    if (!at)
        return false;
    const uint8_t *start = at + sizeof key - 1, *stop = r->body + r->body_len;
    const uint8_t *quote = memchr(start, '"', (size_t)(stop - start));
    if (!quote || quote == start || (size_t)(quote - start) > METHOD_NAME_MAX)
        return false;
    memcpy(out, start, (size_t)(quote - start));
    out[quote - start] = '\0';
    return true;
}

static bool call_method(responder_hub *h, responder_conn *c, const http_request *r,
                        responder_conn *device)
{
    char name[METHOD_NAME_MAX + 1], topic[sizeof "$iothub/methods/" + METHOD_NAME_MAX];
    if (!method_name(r, name))
        return reply_http(c, 400, "Bad Request", "{\"errorCode\":400004}");
    int topic_len = snprintf(topic, sizeof topic, "$iothub/methods/%s", name);
    pthread_mutex_lock(&h->lock);
    uint32_t seq = ++h->next_call ? h->next_call : ++h->next_call;
    pthread_mutex_unlock(&h->lock);
    uint8_t corr[CALL_CORRELATION_LEN];
    put_u32le(corr, c->id);
    put_u32le(corr + 4, seq);
    pthread_mutex_lock(&c->lock);
    bool busy = c->call_seq != 0;
    if (!busy)
        c->call_seq = seq; /* before the device can answer */
    pthread_mutex_unlock(&c->lock);
    if (busy)
        return false; /* a second call before the first's answer: not supported, close */
    bench_buf b = {0};
    static const uint8_t payload[] = "null";
    bool sent = proto_put_hub_request(&b, (mqtt_bytes){(const uint8_t *)topic, (uint32_t)topic_len},
                                      (mqtt_bytes){corr, sizeof corr}, NULL, payload,
                                      sizeof payload - 1) &&
                responder_relay(device, &b, 0);
    bench_buf_free(&b);
    if (sent)
        return true;
    pthread_mutex_lock(&c->lock);
    c->call_seq = 0;
    pthread_mutex_unlock(&c->lock);
    return reply_not_found(c);
}

static bool send_command(responder_conn *c, const http_request *r, responder_conn *device)
{
    uint16_t packet_id = __atomic_add_fetch(&device->next_packet_id, 1, __ATOMIC_RELAXED);
    if (packet_id == 0)
        packet_id = __atomic_add_fetch(&device->next_packet_id, 1, __ATOMIC_RELAXED);
    bench_buf b = {0};
    bool sent = proto_put_publish(&b, MQTT_V5, MQTT_BYTES_LIT("$iothub/commands"), 1, packet_id,
                                  r->body, r->body_len) &&
                responder_relay(device, &b, 0);
    bench_buf_free(&b);
    if (!sent)
        return reply_not_found(c);
    return reply_http(c, 201, "Created", "{\"messageId\":\"ceiling\"}");
}

/* Answers one request (a method call: once its device replies). */
static bool route(responder_hub *h, responder_conn *c, const http_request *r)
{
    const char *id;
    size_t id_len;
    bool put = r->method_len == 3 && memcmp(r->method, "PUT", 3) == 0;
    bool post = r->method_len == 4 && memcmp(r->method, "POST", 4) == 0;
    if (put && path_id(r, "/devices/", "", &id, &id_len))
        return reply_http(c, 200, "OK", "{}");
    if (post && path_id(r, "/twins/", "/methods", &id, &id_len)) {
        responder_conn *device = find_device(h, id, id_len);
        return device ? call_method(h, c, r, device) : reply_not_found(c);
    }
    if (post && path_id(r, "/devices/", "/messages/deviceBound", &id, &id_len)) {
        responder_conn *device = find_device(h, id, id_len);
        return device ? send_command(c, r, device) : reply_not_found(c);
    }
    return reply_not_found(c);
}

long responder_hub_http(responder_hub *h, responder_conn *c, const uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        http_request r;
        long n = parse_request(buf + off, len - off, &r);
        if (n <= 0)
            return n < 0 ? -1 : (long)off;
        if (!route(h, c, &r))
            return -1;
        off += (size_t)n;
    }
    return (long)off;
}

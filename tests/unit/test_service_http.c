/*
 * test_service_http.c — the HTTP service (src/service/) over real sockets:
 * a net_server with one loop on 127.0.0.1:0 runs in a thread, the tests
 * talk raw HTTP/1.1 to it.
 *
 * The registry is an in-memory fake of hub/registry.h defined below (every
 * function of it, so the real src/hub/registry.c is never linked): a test
 * double for the HTTP layer. It posts write completions through net_loop_post, so handlers
 * really answer asynchronously as with the real store.
 *
 * Covered: every device/module route and status (If-Match / If-None-Match
 * cases), statistics, policies, 401 (missing, garbage, expired, forged,
 * other host, unknown policy), a token remembered by its connection
 * (resource, rights, expiry and every byte still checked), 403, 404/405,
 * invalid JSON, 413, 400 on a malformed request line, 431 header flood,
 * each followed by a check that a new connection is still served;
 * pipelining (two requests in one write, incl. an asynchronous PUT),
 * chunked bodies, Expect: 100-continue, HTTP/1.0 and Connection: close.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hub/registry.h"
#include "net/server.h"
#include "service/service.h"
#include "util/crypto.h"
#include "util/log.h"
#include "util/sas.h"
#include "util/time.h"

#define HOST "hub.test"
#define OWNER_KEY "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define OWNER_KEY2 "ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY="
#define READ_KEY "cmVhZHJlYWRyZWFkcmVhZHJlYWRyZWFkcmVhZHJlYWQ="
#define FORGED_KEY "Zm9yZ2Vmb3JnZWZvcmdlZm9yZ2Vmb3JnZWZvcmdlZm8="

/* ---- fake registry -------------------------------------------------------- */

#define FAKE_MAX 64

struct hub_registry {
    pthread_mutex_t lock;
    hub_identity ids[FAKE_MAX];
    size_t count;
    unsigned next_etag;
    hub_policy policies[3];
};

static struct hub_registry FAKE;

typedef struct fake_done {
    registry_done_fn done;
    void *arg;
    registry_status st;
    hub_identity result;
    bool has_result;
} fake_done;

static void fake_complete(net_loop *loop, void *arg)
{
    fake_done *d = arg;
    d->done(loop, d->arg, d->st, d->has_result ? &d->result : NULL, "");
    free(d);
}

static void fake_post(net_loop *loop, registry_done_fn done, void *arg, registry_status st,
                      const hub_identity *result)
{
    fake_done *d = calloc(1, sizeof *d);
    d->done = done;
    d->arg = arg;
    d->st = st;
    if (result) {
        d->result = *result;
        d->has_result = true;
    }
    net_loop_post(loop, fake_complete, d);
}

static hub_identity *fake_find(const char *dev, const char *mod)
{
    for (size_t i = 0; i < FAKE.count; i++)
        if (strcmp(FAKE.ids[i].device_id, dev) == 0 &&
            strcmp(FAKE.ids[i].module_id, mod ? mod : "") == 0)
            return &FAKE.ids[i];
    return NULL;
}

bool registry_valid_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > HUB_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.+%_#*?!(),=@$'",
                    id[i]))
            return false;
    return true;
}

bool registry_get(hub_registry *r, const char *dev, const char *mod, hub_identity *out)
{
    pthread_mutex_lock(&r->lock);
    hub_identity *id = fake_find(dev, mod);
    if (id)
        *out = *id;
    pthread_mutex_unlock(&r->lock);
    return id != NULL;
}

void registry_put(hub_registry *r, const hub_identity *in, const char *if_match,
                  bool if_none_match_star, net_loop *loop, registry_done_fn done, void *arg)
{
    pthread_mutex_lock(&r->lock);
    hub_identity *cur = fake_find(in->device_id, in->module_id);
    registry_status st = REG_OK;
    if (in->module_id[0] && !fake_find(in->device_id, NULL))
        st = REG_NOT_FOUND;
    else if (cur && if_none_match_star)
        st = REG_EXISTS;
    else if (!cur && if_match)
        st = REG_NOT_FOUND;
    else if (cur && if_match && strcmp(if_match, "*") != 0 && strcmp(if_match, cur->etag) != 0)
        st = REG_PRECONDITION_FAILED;
    else if (!cur && FAKE.count == FAKE_MAX)
        st = REG_STORE_ERROR;
    hub_identity stored;
    if (st == REG_OK) {
        if (!cur) {
            cur = &FAKE.ids[FAKE.count++];
            st = REG_CREATED;
            snprintf(stored.generation_id, sizeof stored.generation_id, "gen%u", FAKE.next_etag);
        } else {
            memcpy(stored.generation_id, cur->generation_id, sizeof stored.generation_id);
        }
        char gen[HUB_ETAG_MAX + 1];
        memcpy(gen, stored.generation_id, sizeof gen);
        stored = *in;
        memcpy(stored.generation_id, gen, sizeof gen);
        snprintf(stored.etag, sizeof stored.etag, "etag%u", ++FAKE.next_etag);
        if (stored.auth_type == HUB_AUTH_SAS && !stored.primary_key[0])
            crypto_new_key(stored.primary_key);
        if (stored.auth_type == HUB_AUTH_SAS && !stored.secondary_key[0])
            crypto_new_key(stored.secondary_key);
        *cur = stored;
    }
    pthread_mutex_unlock(&r->lock);
    fake_post(loop, done, arg, st, st == REG_OK || st == REG_CREATED ? &stored : NULL);
}

void registry_delete(hub_registry *r, const char *dev, const char *mod, const char *if_match,
                     net_loop *loop, registry_done_fn done, void *arg)
{
    pthread_mutex_lock(&r->lock);
    hub_identity *cur = fake_find(dev, mod);
    registry_status st = REG_OK;
    if (!cur)
        st = REG_NOT_FOUND;
    else if (if_match && strcmp(if_match, "*") != 0 && strcmp(if_match, cur->etag) != 0)
        st = REG_PRECONDITION_FAILED;
    if (st == REG_OK) {
        size_t w = 0;
        for (size_t i = 0; i < FAKE.count; i++) {
            hub_identity *x = &FAKE.ids[i];
            bool gone = strcmp(x->device_id, dev) == 0 &&
                        (!mod || !*mod || strcmp(x->module_id, mod) == 0);
            if (!gone)
                FAKE.ids[w++] = *x;
        }
        FAKE.count = w;
    }
    pthread_mutex_unlock(&r->lock);
    fake_post(loop, done, arg, st, NULL);
}

static int by_id(const void *a, const void *b)
{
    const hub_identity *x = a, *y = b;
    int c = strcmp(x->device_id, y->device_id);
    return c ? c : strcmp(x->module_id, y->module_id);
}

hub_identity *registry_list(hub_registry *r, const char *module_of, size_t top, size_t *n)
{
    pthread_mutex_lock(&r->lock);
    hub_identity *out = calloc(FAKE_MAX, sizeof *out);
    size_t k = 0;
    for (size_t i = 0; i < FAKE.count; i++) {
        hub_identity *x = &FAKE.ids[i];
        bool want = module_of ? (strcmp(x->device_id, module_of) == 0 && x->module_id[0])
                              : !x->module_id[0];
        if (want)
            out[k++] = *x;
    }
    pthread_mutex_unlock(&r->lock);
    qsort(out, k, sizeof *out, by_id);
    *n = top && k > top ? top : k;
    return out;
}

void registry_stats(hub_registry *r, size_t *total, size_t *enabled, size_t *disabled)
{
    pthread_mutex_lock(&r->lock);
    *total = *enabled = *disabled = 0;
    for (size_t i = 0; i < FAKE.count; i++) {
        if (FAKE.ids[i].module_id[0])
            continue;
        ++*total;
        ++*(FAKE.ids[i].enabled ? enabled : disabled);
    }
    pthread_mutex_unlock(&r->lock);
}

bool registry_policy_get(hub_registry *r, const char *name, hub_policy *out)
{
    for (size_t i = 0; i < 3; i++)
        if (strcmp(r->policies[i].name, name) == 0) {
            *out = r->policies[i];
            return true;
        }
    return false;
}

size_t registry_policies(hub_registry *r, hub_policy *out, size_t cap)
{
    size_t n = cap < 3 ? cap : 3;
    memcpy(out, r->policies, n * sizeof *out);
    return n;
}

/* Runtime state the C2D queues keep current; not under test here. */
void registry_set_c2d_count(hub_registry *r, const char *device_id, uint32_t count)
{
    (void)r;
    (void)device_id;
    (void)count;
}

/* The rest of registry.h, never called by the HTTP layer: defined here so
 * that the linker, following the service's references into hub/, never
 * pulls in the real registry (whose definitions would clash with the fake). */
hub_registry *registry_open(struct store *st, char *err, size_t errlen)
{
    (void)st;
    snprintf(err, errlen, "fake registry");
    return NULL;
}
void registry_free(hub_registry *r) { (void)r; }
registry_status registry_validate(const hub_identity *in, char *err, size_t errlen)
{
    (void)in;
    (void)err;
    (void)errlen;
    return REG_OK;
}
void registry_set_change_listener(hub_registry *r, registry_change_fn fn, void *arg)
{
    (void)r;
    (void)fn;
    (void)arg;
}
void registry_note_connection(hub_registry *r, const char *device_id, const char *module_id,
                              bool connected, int64_t now_ms)
{
    (void)r;
    (void)device_id;
    (void)module_id;
    (void)connected;
    (void)now_ms;
}
void registry_note_activity(hub_registry *r, const char *device_id, const char *module_id,
                            int64_t now_ms)
{
    (void)r;
    (void)device_id;
    (void)module_id;
    (void)now_ms;
}

static void fake_reset(void)
{
    pthread_mutex_lock(&FAKE.lock);
    FAKE.count = 0;
    pthread_mutex_unlock(&FAKE.lock);
}

/* ---- server fixture ------------------------------------------------------- */

static struct {
    net_server *srv;
    service *svc;
    pthread_t thread;
    int port;
} S;

static void *server_thread(void *arg)
{
    (void)arg;
    net_server_run(S.srv);
    return NULL;
}

static int group_setup(void **state)
{
    (void)state;
    pthread_mutex_init(&FAKE.lock, NULL);
    FAKE.policies[0] = (hub_policy){"iothubowner", 15, OWNER_KEY, OWNER_KEY2};
    FAKE.policies[1] = (hub_policy){"registryRead", HUB_RIGHT_REGISTRY_READ, READ_KEY, ""};
    FAKE.policies[2] = (hub_policy){"registryReadWrite",
                                    HUB_RIGHT_REGISTRY_READ | HUB_RIGHT_REGISTRY_WRITE,
                                    READ_KEY, ""};
    char err[256];
    S.srv = net_server_new(1, err, sizeof err);
    if (!S.srv)
        return -1;
    service_config cfg = {.hostname = HOST, .request_timeout_ms = 3000};
    S.svc = service_new(S.srv, &FAKE, &cfg);
    if (!S.svc || !service_listen(S.svc, "127.0.0.1:0", NULL, &S.port, err, sizeof err))
        return -1;
    pthread_create(&S.thread, NULL, server_thread, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    net_server_stop(S.srv);
    pthread_join(S.thread, NULL);
    service_free(S.svc);
    net_server_free(S.srv);
    return 0;
}

/* ---- client --------------------------------------------------------------- */

typedef struct client {
    int fd;
    char buf[1 << 16];
    size_t len;
} client;

typedef struct response {
    int status;
    char head[4096];
    char *body; /* malloc'd, NUL-terminated */
    size_t body_len;
} response;

static client *cl_open(void)
{
    client *c = calloc(1, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c->fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)S.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof a), 0);
    return c;
}

static void cl_close(client *c)
{
    close(c->fd);
    free(c);
}

static void cl_send(client *c, const char *data, size_t len)
{
    while (len) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* the server may have closed on us: the reply tells */
        data += n;
        len -= (size_t)n;
    }
}

static bool cl_fill(client *c)
{
    if (c->len == sizeof c->buf)
        return false;
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n <= 0)
        return false;
    c->len += (size_t)n;
    return true;
}

static void cl_take(client *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* A request id is a version-4 UUID in lower-case hex, 8-4-4-4-12. */
static void check_request_id(const char *id)
{
    assert_int_equal(strspn(id, "0123456789abcdef-"), 36);
    for (int i = 0; i < 36; i++)
        assert_true((id[i] == '-') == (i == 8 || i == 13 || i == 18 || i == 23));
    assert_int_equal(id[14], '4');
    assert_non_null(strchr("89ab", id[19]));
}

static const char *reason_phrase(int status)
{
    static const struct {
        int status;
        const char *phrase;
    } table[] = {{200, "OK"}, {201, "Created"}, {204, "No Content"}, {400, "Bad Request"},
                 {401, "Unauthorized"}, {403, "Forbidden"}, {404, "Not Found"},
                 {405, "Method Not Allowed"}, {408, "Request Timeout"}, {409, "Conflict"},
                 {412, "Precondition Failed"}, {413, "Payload Too Large"},
                 {429, "Too Many Requests"}, {431, "Request Header Fields Too Large"},
                 {500, "Internal Server Error"}, {503, "Service Unavailable"}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (table[i].status == status)
            return table[i].phrase;
    fail_msg("unexpected status %d", status);
    return NULL;
}

/* Every response head: the status line with its reason phrase, then
 * x-ms-request-id first, then the content headers, each line CRLF-ended. */
static void check_head(const response *r)
{
    char line[64];
    int n = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\nx-ms-request-id: ", r->status,
                     reason_phrase(r->status));
    assert_memory_equal(r->head, line, (size_t)n);
    check_request_id(r->head + n);
    assert_memory_equal(r->head + n + 36, "\r\n", 2);
    char want[64];
    snprintf(want, sizeof want, "\r\nContent-Length: %zu\r\n", r->body_len);
    assert_non_null(strstr(r->head, want));
    if (r->body_len)
        assert_non_null(strstr(r->head, "\r\nContent-Type: application/json; charset=utf-8\r\n"));
    else
        assert_null(strcasestr(r->head, "\r\nContent-Type:"));
    size_t len = strlen(r->head);
    assert_true(len >= 4 && strcmp(r->head + len - 4, "\r\n\r\n") == 0);
    for (const char *p = strstr(r->head, "\r\n") + 2; *p != '\r'; p = strstr(p, "\r\n") + 2)
        assert_non_null(memchr(p, ':', (size_t)(strstr(p, "\r\n") - p))); /* "Name: value" */
}

/* Reads one response (Content-Length framed). */
static void cl_read(client *c, response *r)
{
    memset(r, 0, sizeof *r);
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
        if (!cl_fill(c))
            fail_msg("no response head (%zu bytes)", c->len);
    size_t hlen = (size_t)(end - c->buf) + 4;
    assert_true(hlen < sizeof r->head);
    memcpy(r->head, c->buf, hlen);
    r->head[hlen] = '\0';
    cl_take(c, hlen);
    assert_int_equal(sscanf(r->head, "HTTP/1.1 %d", &r->status), 1);
    const char *cl = strcasestr(r->head, "\r\nContent-Length: ");
    r->body_len = cl ? strtoul(cl + 18, NULL, 10) : 0;
    while (c->len < r->body_len)
        if (!cl_fill(c))
            fail_msg("short body");
    r->body = calloc(1, r->body_len + 1);
    memcpy(r->body, c->buf, r->body_len);
    cl_take(c, r->body_len);
    check_head(r);
}

static bool cl_eof(client *c)
{
    char ch;
    ssize_t n = recv(c->fd, &ch, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

static char *token_for(const char *resource, const char *key, const char *policy, int64_t ttl)
{
    return sas_token_build(resource, key, policy, (uint64_t)((int64_t)(time_wall_ms() / 1000) + ttl));
}

/* One request on its own connection (or on c when given), one response. */
static int call_on(client *c, const char *method, const char *path, const char *auth,
                   const char *extra, const char *body, response *r)
{
    char req[8192];
    size_t blen = body ? strlen(body) : 0;
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: " HOST "\r\n%s%s%s%s"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, auth ? "Authorization: " : "", auth ? auth : "",
                     auth ? "\r\n" : "", extra ? extra : "", blen, body ? body : "");
    cl_send(c, req, (size_t)n);
    cl_read(c, r);
    return r->status;
}

static int call(const char *method, const char *path, const char *extra, const char *body,
                response *r)
{
    char *tok = token_for(HOST, OWNER_KEY, "iothubowner", 3600);
    client *c = cl_open();
    int st = call_on(c, method, path, tok, extra, body, r);
    cl_close(c);
    free(tok);
    return st;
}

static void expect_error(response *r, int status, const char *code)
{
    assert_int_equal(r->status, status);
    char want[128];
    snprintf(want, sizeof want, "\"Message\":\"ErrorCode:%s;", code);
    if (!strstr(r->body, want))
        fail_msg("want %s in %s", want, r->body);
    assert_non_null(strstr(r->body, "\"ExceptionMessage\":"));
}

static void done(response *r) { free(r->body); }

/* A quoted ETag header value copied out of r. */
static void etag_of(response *r, char *out, size_t cap)
{
    const char *e = strcasestr(r->head, "\r\nETag: \"");
    assert_non_null(e);
    e += 9;
    const char *q = strchr(e, '"');
    assert_non_null(q);
    snprintf(out, cap, "%.*s", (int)(q - e), e);
}

static void still_serving(void)
{
    response r;
    assert_int_equal(call("GET", "/statistics/devices", NULL, NULL, &r), 200);
    done(&r);
}

/* ---- tests: device identities --------------------------------------------- */

static void test_device_put_get_delete(void **state)
{
    (void)state;
    fake_reset();
    response r;
    char etag[64], hdr[128];
    assert_int_equal(call("PUT", "/devices/dev1?api-version=2021-04-12", NULL,
                          "{\"deviceId\":\"dev1\"}", &r), 201);
    assert_non_null(strstr(r.body, "\"deviceId\":\"dev1\""));
    assert_non_null(strstr(r.body, "\"type\":\"sas\""));
    assert_non_null(strstr(r.body, "\"primaryKey\":\""));
    assert_non_null(strstr(r.body, "\"status\":\"enabled\""));
    assert_non_null(strstr(r.body, "\"connectionState\":\"Disconnected\""));
    assert_non_null(strstr(r.body, "\"capabilities\":{\"iotEdge\":false}"));
    etag_of(&r, etag, sizeof etag);
    assert_non_null(strstr(r.body, etag)); /* unquoted in JSON */
    done(&r);
    /* replace without If-Match: 200 */
    assert_int_equal(call("PUT", "/devices/dev1", NULL, "{\"status\":\"disabled\"}", &r), 200);
    assert_non_null(strstr(r.body, "\"status\":\"disabled\""));
    etag_of(&r, etag, sizeof etag);
    done(&r);
    /* If-Match: stale etag -> 412; current (quoted or not) -> 200; * -> 200 */
    assert_int_equal(call("PUT", "/devices/dev1", "If-Match: \"stale\"\r\n", "{}", &r), 412);
    expect_error(&r, 412, "PreconditionFailed");
    done(&r);
    snprintf(hdr, sizeof hdr, "If-Match: \"%s\"\r\n", etag);
    assert_int_equal(call("PUT", "/devices/dev1", hdr, "{}", &r), 200);
    etag_of(&r, etag, sizeof etag);
    done(&r);
    snprintf(hdr, sizeof hdr, "If-Match: %s\r\n", etag);
    assert_int_equal(call("PUT", "/devices/dev1", hdr, "{}", &r), 200);
    done(&r);
    assert_int_equal(call("PUT", "/devices/dev1", "If-Match: *\r\n", "{}", &r), 200);
    done(&r);
    /* create-only on an existing device -> 409; If-Match: * on a missing one -> 404 */
    assert_int_equal(call("PUT", "/devices/dev1", "If-None-Match: *\r\n", "{}", &r), 409);
    expect_error(&r, 409, "DeviceAlreadyExists");
    done(&r);
    assert_int_equal(call("PUT", "/devices/ghost", "If-Match: *\r\n", "{}", &r), 404);
    expect_error(&r, 404, "DeviceNotFound");
    done(&r);
    /* get */
    assert_int_equal(call("GET", "/devices/dev1", NULL, NULL, &r), 200);
    assert_non_null(strstr(r.body, "\"deviceId\":\"dev1\""));
    assert_non_null(strcasestr(r.head, "\r\nETag: \""));
    done(&r);
    assert_int_equal(call("GET", "/devices/ghost", NULL, NULL, &r), 404);
    expect_error(&r, 404, "DeviceNotFound");
    done(&r);
    /* delete: stale etag 412, then 204, then 404 */
    assert_int_equal(call("DELETE", "/devices/dev1", "If-Match: \"stale\"\r\n", NULL, &r), 412);
    done(&r);
    assert_int_equal(call("DELETE", "/devices/dev1", "If-Match: *\r\n", NULL, &r), 204);
    assert_int_equal(r.body_len, 0);
    done(&r);
    assert_int_equal(call("DELETE", "/devices/dev1", NULL, NULL, &r), 404);
    expect_error(&r, 404, "DeviceNotFound");
    done(&r);
}

static void test_device_keys_and_percent_ids(void **state)
{
    (void)state;
    fake_reset();
    response r;
    const char *body = "{\"deviceId\":\"a@b\",\"authentication\":{\"type\":\"sas\","
                       "\"symmetricKey\":{\"primaryKey\":\"" OWNER_KEY "\","
                       "\"secondaryKey\":\"" OWNER_KEY2 "\"}},\"capabilities\":{\"iotEdge\":true},"
                       "\"etag\":\"ignored\",\"connectionState\":\"Connected\"}";
    assert_int_equal(call("PUT", "/devices/a%40b", NULL, body, &r), 201);
    assert_non_null(strstr(r.body, "\"deviceId\":\"a@b\""));
    assert_non_null(strstr(r.body, "\"primaryKey\":\"" OWNER_KEY "\""));
    assert_non_null(strstr(r.body, "\"iotEdge\":true"));
    done(&r);
    assert_int_equal(call("GET", "/devices/a@b", NULL, NULL, &r), 200);
    done(&r);
    assert_int_equal(call("GET", "/devices/bad%2Fid", NULL, NULL, &r), 400);
    expect_error(&r, 400, "ArgumentInvalid");
    done(&r);
    assert_int_equal(call("GET", "/devices/x%zz", NULL, NULL, &r), 400);
    done(&r);
}

static void test_list_and_statistics(void **state)
{
    (void)state;
    fake_reset();
    response r;
    assert_int_equal(call("PUT", "/devices/b", NULL, "{}", &r), 201);
    done(&r);
    assert_int_equal(call("PUT", "/devices/a", NULL, "{\"status\":\"disabled\"}", &r), 201);
    done(&r);
    assert_int_equal(call("GET", "/devices", NULL, NULL, &r), 200);
    assert_true(r.body[0] == '[');
    char *a = strstr(r.body, "\"deviceId\":\"a\""), *b = strstr(r.body, "\"deviceId\":\"b\"");
    assert_true(a && b && a < b);
    done(&r);
    assert_int_equal(call("GET", "/devices/?api-version=2021-04-12&top=1", NULL, NULL, &r), 200);
    assert_non_null(strstr(r.body, "\"deviceId\":\"a\""));
    assert_null(strstr(r.body, "\"deviceId\":\"b\""));
    done(&r);
    assert_int_equal(call("GET", "/devices?top=0", NULL, NULL, &r), 400);
    done(&r);
    assert_int_equal(call("GET", "/devices?top=x", NULL, NULL, &r), 400);
    done(&r);
    assert_int_equal(call("GET", "/devices?api-version=", NULL, NULL, &r), 400);
    done(&r);
    assert_int_equal(call("GET", "/statistics/devices", NULL, NULL, &r), 200);
    assert_string_equal(r.body, "{\"totalDeviceCount\":2,\"enabledDeviceCount\":1,"
                                "\"disabledDeviceCount\":1}");
    done(&r);
}

static void test_modules(void **state)
{
    (void)state;
    fake_reset();
    response r;
    assert_int_equal(call("PUT", "/devices/d/modules/m1", NULL, "{}", &r), 404);
    done(&r);
    assert_int_equal(call("PUT", "/devices/d", NULL, "{}", &r), 201);
    done(&r);
    assert_int_equal(call("PUT", "/devices/d/modules/m1", NULL, "{\"moduleId\":\"m1\"}", &r), 201);
    assert_non_null(strstr(r.body, "\"moduleId\":\"m1\""));
    done(&r);
    assert_int_equal(call("PUT", "/devices/d/modules/m2", NULL, "{\"moduleId\":\"zz\"}", &r), 400);
    done(&r);
    assert_int_equal(call("GET", "/devices/d/modules/m1", NULL, NULL, &r), 200);
    done(&r);
    assert_int_equal(call("GET", "/devices/d/modules", NULL, NULL, &r), 200);
    assert_non_null(strstr(r.body, "\"moduleId\":\"m1\""));
    done(&r);
    assert_int_equal(call("GET", "/devices/nope/modules", NULL, NULL, &r), 404);
    done(&r);
    assert_int_equal(call("DELETE", "/devices/d/modules/m1", NULL, NULL, &r), 204);
    done(&r);
    assert_int_equal(call("GET", "/devices/d/modules/m1", NULL, NULL, &r), 404);
    done(&r);
    /* statistics count devices only */
    assert_int_equal(call("GET", "/statistics/devices", NULL, NULL, &r), 200);
    assert_non_null(strstr(r.body, "\"totalDeviceCount\":1"));
    done(&r);
}

static void test_invalid_json_and_types(void **state)
{
    (void)state;
    fake_reset();
    static const char *bad[] = {
        "{", "[]", "42", "{\"status\":5}", "{\"status\":\"sleeping\"}",
        "{\"deviceId\":\"other\"}", "{\"moduleId\":\"m\"}", "{\"authentication\":\"sas\"}",
        "{\"authentication\":{\"type\":\"kerberos\"}}",
        "{\"authentication\":{\"symmetricKey\":{\"primaryKey\":1}}}",
        "{\"capabilities\":{\"iotEdge\":\"yes\"}}", "{\"a\":1,\"a\":2}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        response r;
        if (call("PUT", "/devices/dev1", NULL, bad[i], &r) != 400)
            fail_msg("%s: %d", bad[i], r.status);
        expect_error(&r, 400, "ArgumentInvalid");
        done(&r);
    }
    still_serving();
}

static void test_routes_404_405(void **state)
{
    (void)state;
    response r;
    assert_int_equal(call("GET", "/nothing", NULL, NULL, &r), 404);
    done(&r);
    assert_int_equal(call("GET", "/devices/a/b", NULL, NULL, &r), 404);
    done(&r);
    assert_int_equal(call("GET", "/devices//", NULL, NULL, &r), 404);
    done(&r);
    assert_int_equal(call("POST", "/devices/x", NULL, "{}", &r), 405);
    done(&r);
    assert_int_equal(call("DELETE", "/statistics/devices", NULL, NULL, &r), 405);
    done(&r);
}

/* ---- tests: authorization ------------------------------------------------- */

static int call_with(const char *auth, const char *method, const char *path, response *r)
{
    client *c = cl_open();
    int st = call_on(c, method, path, auth, NULL, method[0] == 'P' ? "{}" : NULL, r);
    cl_close(c);
    return st;
}

static void test_auth_401(void **state)
{
    (void)state;
    response r;
    char *expired = token_for(HOST, OWNER_KEY, "iothubowner", -10);
    char *forged = token_for(HOST, FORGED_KEY, "iothubowner", 3600);
    char *other_host = token_for("other.test", OWNER_KEY, "iothubowner", 3600);
    char *host_prefix = token_for(HOST "x", OWNER_KEY, "iothubowner", 3600);
    char *unknown = token_for(HOST, OWNER_KEY, "nobody", 3600);
    char *no_skn = token_for(HOST, OWNER_KEY, NULL, 3600);
    const char *bad[] = {NULL, "Bearer x", "SharedAccessSignature sr=a", expired, forged,
                         other_host, host_prefix, unknown, no_skn};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (call_with(bad[i], "GET", "/devices", &r) != 401)
            fail_msg("case %zu: %d", i, r.status);
        expect_error(&r, 401, "IotHubUnauthorizedAccess");
        done(&r);
    }
    free(expired);
    free(forged);
    free(other_host);
    free(host_prefix);
    free(unknown);
    free(no_skn);
    still_serving();
}

static void test_auth_scopes_keys_and_403(void **state)
{
    (void)state;
    fake_reset();
    response r;
    char *secondary = token_for(HOST, OWNER_KEY2, "iothubowner", 3600);
    char *scoped = token_for(HOST "/devices/x", OWNER_KEY, "iothubowner", 3600);
    char *upper = token_for("HUB.TEST", OWNER_KEY, "iothubowner", 3600);
    char *reader = token_for(HOST, READ_KEY, "registryRead", 3600);
    char *writer = token_for(HOST, READ_KEY, "registryReadWrite", 3600);
    assert_int_equal(call_with(secondary, "GET", "/devices", &r), 200);
    done(&r);
    /* sr with a path covers that path and below, segment by segment only */
    assert_int_equal(call_with(scoped, "GET", "/devices", &r), 401);
    expect_error(&r, 401, "IotHubUnauthorizedAccess");
    done(&r);
    assert_int_equal(call_with(scoped, "GET", "/devices/xy", &r), 401);
    done(&r);
    assert_int_equal(call_with(scoped, "GET", "/statistics/devices", &r), 401);
    done(&r);
    assert_int_equal(call_with(upper, "GET", "/devices", &r), 200);
    done(&r);
    assert_int_equal(call_with(reader, "GET", "/statistics/devices", &r), 200);
    done(&r);
    assert_int_equal(call_with(reader, "PUT", "/devices/x", &r), 403);
    expect_error(&r, 403, "IotHubUnauthorized");
    done(&r);
    assert_int_equal(call_with(reader, "DELETE", "/devices/x", &r), 403);
    done(&r);
    assert_int_equal(call_with(writer, "PUT", "/devices/x", &r), 201);
    done(&r);
    assert_int_equal(call_with(scoped, "GET", "/devices/x", &r), 200);
    done(&r);
    /* case-insensitive like IoT Hub: past authorization, but there is no "X" */
    assert_int_equal(call_with(scoped, "GET", "/devices/X/modules", &r), 404);
    done(&r);
    assert_int_equal(call_with(writer, "GET", "/iothubd/policies", &r), 403);
    done(&r);
    assert_int_equal(call_with(secondary, "GET", "/iothubd/policies", &r), 200);
    assert_non_null(strstr(r.body, "{\"keyName\":\"iothubowner\",\"primaryKey\":\"" OWNER_KEY
                                   "\",\"secondaryKey\":\"" OWNER_KEY2 "\",\"rights\":"
                                   "\"RegistryRead, RegistryWrite, ServiceConnect, "
                                   "DeviceConnect\"}"));
    assert_non_null(strstr(r.body, "\"rights\":\"RegistryRead\""));
    done(&r);
    free(secondary);
    free(scoped);
    free(upper);
    free(reader);
    free(writer);
}

/* One request on c; its status, the response freed. */
static int status_on(client *c, const char *auth, const char *method, const char *path,
                     const char *text)
{
    response r;
    int st = call_on(c, method, path, auth, NULL, method[0] == 'P' ? "{}" : NULL, &r);
    if (text && !strstr(r.body, text))
        fail_msg("want \"%s\" in %s", text, r.body);
    done(&r);
    return st;
}

/* A connection remembers the last token whose signature checked out and
 * skips its HMAC when it comes again (auth.c). Everything else is still
 * checked on every request: the resource, the rights, the expiry, and
 * that the token is the same to the last byte. */
static void test_auth_remembered_token(void **state)
{
    (void)state;
    fake_reset();
    client *c = cl_open();
    char *scoped = token_for(HOST "/devices/x", OWNER_KEY, "iothubowner", 3600);
    char *reader = token_for(HOST, READ_KEY, "registryRead", 3600);
    char *tampered = strdup(reader);
    char *sig = strstr(tampered, "sig=") + 4;
    *sig = *sig == 'A' ? 'B' : 'A'; /* same length, one byte off */

    assert_int_equal(status_on(c, scoped, "GET", "/devices/x", NULL), 404); /* past auth */
    assert_int_equal(status_on(c, scoped, "GET", "/devices", "does not cover"), 401);
    assert_int_equal(status_on(c, scoped, "GET", "/devices/x", NULL), 404);
    assert_int_equal(status_on(c, reader, "GET", "/statistics/devices", NULL), 200);
    assert_int_equal(status_on(c, reader, "PUT", "/devices/x", "lacks a right"), 403);
    assert_int_equal(status_on(c, tampered, "GET", "/statistics/devices", "invalid signature"),
                     401);
    assert_int_equal(status_on(c, reader, "GET", "/statistics/devices", NULL), 200);

    /* valid while now < se: remembered, then refused once the second is reached */
    uint64_t se = time_wall_ms() / 1000 + 2;
    char *brief = sas_token_build(HOST, OWNER_KEY, "iothubowner", se);
    assert_int_equal(status_on(c, brief, "GET", "/statistics/devices", NULL), 200);
    while (time_wall_ms() / 1000 < se)
        usleep(50 * 1000);
    assert_int_equal(status_on(c, brief, "GET", "/statistics/devices", "token expired"), 401);
    cl_close(c);
    free(scoped);
    free(reader);
    free(tampered);
    free(brief);
}

/* ---- tests: HTTP protocol ------------------------------------------------- */

static void test_body_too_large_413(void **state)
{
    (void)state;
    char *tok = token_for(HOST, OWNER_KEY, "iothubowner", 3600);
    client *c = cl_open();
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "PUT /devices/big HTTP/1.1\r\nAuthorization: %s\r\n"
                     "Content-Length: 2000000\r\n\r\n", tok);
    cl_send(c, head, (size_t)n);
    response r;
    cl_read(c, &r);
    expect_error(&r, 413, "MessageTooLarge");
    assert_non_null(strcasestr(r.head, "\r\nConnection: close"));
    assert_true(cl_eof(c));
    done(&r);
    cl_close(c);
    /* chunked: counted as it arrives */
    c = cl_open();
    n = snprintf(head, sizeof head,
                 "PUT /devices/big HTTP/1.1\r\nAuthorization: %s\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n", tok);
    cl_send(c, head, (size_t)n);
    char *chunk = malloc(65536 + 16);
    n = snprintf(chunk, 16, "10000\r\n");
    memset(chunk + n, ' ', 65536);
    memcpy(chunk + n + 65536, "\r\n", 2);
    for (int i = 0; i < 17; i++)
        cl_send(c, chunk, (size_t)n + 65538);
    cl_read(c, &r);
    expect_error(&r, 413, "MessageTooLarge");
    done(&r);
    free(chunk);
    cl_close(c);
    free(tok);
    still_serving();
}

static void test_malformed_request_400(void **state)
{
    (void)state;
    static const char *bad[] = {
        "GARBAGE\r\n\r\n",
        "GET /devices HTTP/9.9.9\r\n\r\n",
        "GET /devices HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        "GET /devices HTTP/1.1\r\nbad header line\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        client *c = cl_open();
        cl_send(c, bad[i], strlen(bad[i]));
        response r;
        cl_read(c, &r);
        expect_error(&r, 400, "ArgumentInvalid");
        assert_true(cl_eof(c));
        done(&r);
        cl_close(c);
    }
    /* a target that is not a path */
    response r;
    client *c = cl_open();
    assert_int_equal(call_on(c, "GET", "*", NULL, NULL, NULL, &r), 400);
    done(&r);
    cl_close(c);
    still_serving();
}

static void test_header_flood_431(void **state)
{
    (void)state;
    /* too many fields */
    client *c = cl_open();
    char *req = malloc(64 * 1024);
    size_t n = (size_t)sprintf(req, "GET /devices HTTP/1.1\r\n");
    for (int i = 0; i < 150; i++)
        n += (size_t)sprintf(req + n, "X-H%d: v\r\n", i);
    n += (size_t)sprintf(req + n, "\r\n");
    cl_send(c, req, n);
    response r;
    cl_read(c, &r);
    assert_int_equal(r.status, 431);
    assert_true(cl_eof(c));
    done(&r);
    cl_close(c);
    /* one endless header */
    c = cl_open();
    n = (size_t)sprintf(req, "GET /devices HTTP/1.1\r\nX-Long: ");
    memset(req + n, 'a', 40000);
    n += 40000;
    cl_send(c, req, n);
    cl_read(c, &r);
    assert_int_equal(r.status, 431);
    done(&r);
    cl_close(c);
    free(req);
    still_serving();
}

static void test_pipelining_in_order(void **state)
{
    (void)state;
    fake_reset();
    char *tok = token_for(HOST, OWNER_KEY, "iothubowner", 3600);
    char req[4096];
    /* an asynchronous PUT followed by a GET that must see its result */
    int n = snprintf(req, sizeof req,
                     "PUT /devices/p1 HTTP/1.1\r\nAuthorization: %s\r\nContent-Length: 2\r\n\r\n{}"
                     "GET /devices/p1 HTTP/1.1\r\nAuthorization: %s\r\n\r\n"
                     "GET /statistics/devices HTTP/1.1\r\nAuthorization: %s\r\n\r\n",
                     tok, tok, tok);
    client *c = cl_open();
    cl_send(c, req, (size_t)n);
    response r;
    cl_read(c, &r);
    assert_int_equal(r.status, 201);
    done(&r);
    cl_read(c, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"deviceId\":\"p1\""));
    done(&r);
    cl_read(c, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "totalDeviceCount\":1"));
    done(&r);
    /* the connection stays usable */
    assert_int_equal(call_on(c, "GET", "/devices/p1", tok, NULL, NULL, &r), 200);
    done(&r);
    cl_close(c);
    free(tok);
}

static void test_chunked_and_expect_continue(void **state)
{
    (void)state;
    fake_reset();
    char *tok = token_for(HOST, OWNER_KEY, "iothubowner", 3600);
    char req[4096];
    int n = snprintf(req, sizeof req,
                     "PUT /devices/ch HTTP/1.1\r\nAuthorization: %s\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n"
                     "5\r\n{\"sta\r\n10\r\ntus\":\"disabled\"}\r\n0\r\n\r\n", tok);
    client *c = cl_open();
    cl_send(c, req, (size_t)n);
    response r;
    cl_read(c, &r);
    assert_int_equal(r.status, 201);
    assert_non_null(strstr(r.body, "\"status\":\"disabled\""));
    done(&r);
    /* Expect: 100-continue on the same connection */
    n = snprintf(req, sizeof req,
                 "PUT /devices/ex HTTP/1.1\r\nAuthorization: %s\r\nExpect: 100-continue\r\n"
                 "Content-Length: 2\r\n\r\n", tok);
    cl_send(c, req, (size_t)n);
    char cont[64] = "";
    size_t want = strlen("HTTP/1.1 100 Continue\r\n\r\n");
    while (c->len < want)
        assert_true(cl_fill(c));
    memcpy(cont, c->buf, want);
    cl_take(c, want);
    assert_string_equal(cont, "HTTP/1.1 100 Continue\r\n\r\n");
    cl_send(c, "{}", 2);
    cl_read(c, &r);
    assert_int_equal(r.status, 201);
    done(&r);
    cl_close(c);
    free(tok);
}

static void test_http10_and_connection_close(void **state)
{
    (void)state;
    char *tok = token_for(HOST, OWNER_KEY, "iothubowner", 3600);
    char req[2048];
    /* HTTP/1.0 without keep-alive: answered, then closed */
    int n = snprintf(req, sizeof req, "GET /statistics/devices HTTP/1.0\r\nAuthorization: %s\r\n\r\n",
                     tok);
    client *c = cl_open();
    cl_send(c, req, (size_t)n);
    response r;
    cl_read(c, &r);
    assert_int_equal(r.status, 200);
    assert_true(cl_eof(c));
    done(&r);
    cl_close(c);
    /* HTTP/1.0 with keep-alive: stays open */
    n = snprintf(req, sizeof req,
                 "GET /statistics/devices HTTP/1.0\r\nConnection: keep-alive\r\n"
                 "Authorization: %s\r\n\r\n", tok);
    c = cl_open();
    cl_send(c, req, (size_t)n);
    cl_read(c, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strcasestr(r.head, "\r\nConnection: keep-alive"));
    done(&r);
    cl_send(c, req, (size_t)n);
    cl_read(c, &r);
    assert_int_equal(r.status, 200);
    done(&r);
    cl_close(c);
    /* HTTP/1.1 Connection: close */
    c = cl_open();
    assert_int_equal(call_on(c, "GET", "/statistics/devices", tok, "Connection: close\r\n", NULL,
                             &r), 200);
    assert_non_null(strcasestr(r.head, "\r\nConnection: close"));
    assert_true(cl_eof(c));
    done(&r);
    cl_close(c);
    free(tok);
}

static void test_request_timeout_408(void **state)
{
    (void)state;
    client *c = cl_open();
    cl_send(c, "GET /devices HTTP/1.1\r\n", 23); /* and nothing more */
    uint64_t t0 = time_mono_ms();
    response r;
    cl_read(c, &r);
    assert_int_equal(r.status, 408);
    assert_true(time_mono_ms() - t0 < 4900);
    assert_true(cl_eof(c));
    done(&r);
    cl_close(c);
    still_serving();
}

/* The client leaves while its PUT waits for the registry: the answer is
 * dropped and nothing leaks (ASan build) or crashes. */
static void test_client_gone_during_async_put(void **state)
{
    (void)state;
    char *tok = token_for(HOST, OWNER_KEY, "iothubowner", 3600);
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "PUT /devices/gone HTTP/1.1\r\nAuthorization: %s\r\nContent-Length: 2\r\n\r\n{}",
                     tok);
    for (int i = 0; i < 20; i++) {
        client *c = cl_open();
        cl_send(c, req, (size_t)n);
        cl_close(c);
    }
    free(tok);
    still_serving();
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_put_get_delete),
        cmocka_unit_test(test_device_keys_and_percent_ids),
        cmocka_unit_test(test_list_and_statistics),
        cmocka_unit_test(test_modules),
        cmocka_unit_test(test_invalid_json_and_types),
        cmocka_unit_test(test_routes_404_405),
        cmocka_unit_test(test_auth_401),
        cmocka_unit_test(test_auth_remembered_token),
        cmocka_unit_test(test_auth_scopes_keys_and_403),
        cmocka_unit_test(test_body_too_large_413),
        cmocka_unit_test(test_malformed_request_400),
        cmocka_unit_test(test_header_flood_431),
        cmocka_unit_test(test_pipelining_in_order),
        cmocka_unit_test(test_chunked_and_expect_continue),
        cmocka_unit_test(test_http10_and_connection_close),
        cmocka_unit_test(test_request_timeout_408),
        cmocka_unit_test(test_client_gone_during_async_put),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/*
 * service_testutil.h — what the HTTP service suites (test_service_*.c)
 * share: a fake registry, a server fixture and a raw HTTP/1.1 client.
 *
 * The service runs over real sockets: a net_server with one loop on
 * 127.0.0.1:0 runs in a thread (group_setup / group_teardown, the suites'
 * cmocka group fixtures) and the tests talk raw HTTP/1.1 to it, so what is
 * checked is what a client gets on the wire; cl_read checks every response
 * head it reads (check_head).
 *
 * The registry is an in-memory fake of hub/registry.h defined below (every
 * function of it, so the real src/hub/registry.c is never linked): a test
 * double for the HTTP layer. It posts write completions through
 * net_loop_post, so handlers really answer asynchronously as with the real
 * store.
 */
#ifndef IOTHUBD_TESTS_SERVICE_TESTUTIL_H
#define IOTHUBD_TESTS_SERVICE_TESTUTIL_H

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
#include "socket_testutil.h"
#include "service/service.h"
#include "util/crypto.h"
#include "util/sas.h"
#include "util/time.h"

#define HOST "hub.test"
#define OWNER_KEY "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define OWNER_KEY2 "ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY="
#define READ_KEY "cmVhZHJlYWRyZWFkcmVhZHJlYWRyZWFkcmVhZHJlYWQ="

/* ---- fake registry -------------------------------------------------------- */

/* The registry_* functions below are not static: they stand in for
 * src/hub/registry.c at link time. Each test binary is one file that
 * includes this header, so each binary has exactly one definition of each. */

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
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                    "-.+%_#*?!(),=@$'",
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

static inline void fake_reset(void)
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

static inline void *server_thread(void *arg)
{
    (void)arg;
    net_server_run(S.srv);
    return NULL;
}

static inline int group_setup(void **state)
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

static inline int group_teardown(void **state)
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

static inline client *cl_open(void)
{
    client *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->fd = loopback_connect(S.port, 5, 0);
    return c;
}

static inline void cl_close(client *c)
{
    close(c->fd);
    free(c);
}

static inline void cl_send(client *c, const char *data, size_t len)
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

static inline bool cl_fill(client *c)
{
    if (c->len == sizeof c->buf)
        return false;
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n <= 0)
        return false;
    c->len += (size_t)n;
    return true;
}

static inline void cl_take(client *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* A request id is a version-4 UUID in lower-case hex, 8-4-4-4-12. */
static inline void check_request_id(const char *id)
{
    assert_int_equal(strspn(id, "0123456789abcdef-"), 36);
    for (int i = 0; i < 36; i++)
        assert_true((id[i] == '-') == (i == 8 || i == 13 || i == 18 || i == 23));
    assert_int_equal(id[14], '4');
    assert_non_null(strchr("89ab", id[19]));
}

static inline const char *reason_phrase(int status)
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
static inline void check_head(const response *r)
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
static inline void cl_read(client *c, response *r)
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

static inline bool cl_eof(client *c)
{
    char ch;
    ssize_t n = recv(c->fd, &ch, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

static inline char *token_for(const char *resource, const char *key, const char *policy,
                              int64_t ttl)
{
    return sas_token_build(resource, key, policy,
                           (uint64_t)((int64_t)(time_wall_ms() / 1000) + ttl));
}

/* One request on its own connection (or on c when given), one response. */
static inline int call_on(client *c, const char *method, const char *path, const char *auth,
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

static inline int call(const char *method, const char *path, const char *extra,
                       const char *body, response *r)
{
    char *tok = token_for(HOST, OWNER_KEY, "iothubowner", 3600);
    client *c = cl_open();
    int st = call_on(c, method, path, tok, extra, body, r);
    cl_close(c);
    free(tok);
    return st;
}

static inline void expect_error(response *r, int status, const char *code)
{
    assert_int_equal(r->status, status);
    char want[128];
    snprintf(want, sizeof want, "\"Message\":\"ErrorCode:%s;", code);
    if (!strstr(r->body, want))
        fail_msg("want %s in %s", want, r->body);
    assert_non_null(strstr(r->body, "\"ExceptionMessage\":"));
}

static inline void done(response *r) { free(r->body); }

/* A quoted ETag header value copied out of r. */
static inline void etag_of(response *r, char *out, size_t cap)
{
    const char *e = strcasestr(r->head, "\r\nETag: \"");
    assert_non_null(e);
    e += 9;
    const char *q = strchr(e, '"');
    assert_non_null(q);
    snprintf(out, cap, "%.*s", (int)(q - e), e);
}

static inline void still_serving(void)
{
    response r;
    assert_int_equal(call("GET", "/statistics/devices", NULL, NULL, &r), 200);
    done(&r);
}

#endif

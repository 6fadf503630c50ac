/*
 * tools/bench/responder.c — see responder.h.
 *
 * One listening socket per thread (SO_REUSEPORT: the kernel spreads
 * connections), level-triggered epoll, per-connection state = protocol
 * level, an incomplete input tail and an output queue used only when the
 * socket is full. Acknowledgements are written from fixed byte patterns:
 * this is the least work a server can do per packet, on purpose.
 *
 * With --http-port each thread also listens there, and the hub-shaped
 * routes of responder_hub.c answer what the twin, methods and c2d
 * scenarios send; with --route, a PUBLISH also goes to the subscribers
 * whose filters match it (the fan-out ceiling). responder_conn.h says
 * what changes for a connection then (a lock, and no free while
 * running).
 *
 * Stopping: the main thread waits for SIGINT/SIGTERM (blocked in every
 * thread, taken with sigtimedwait) or the duration, then sets the
 * context's stop flag; loops check it every 100 ms.
 */
#include "tools/bench/responder.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mqtt/codec.h"
#include "tools/bench/proto.h"
#include "tools/bench/responder_conn.h"

#define RESPONDER_MAX_THREADS 64
#define RESPONDER_READ_SIZE (256u * 1024u)

typedef struct responder_ctx {
    const bench_options *opt;
    atomic_bool stop;
    struct sockaddr_in addr;
    struct sockaddr_in http_addr;
    responder_hub *hub; /* NULL: plain mode (neither --http-port nor --route) */
} responder_ctx;

typedef struct responder_loop {
    responder_ctx *ctx;
    pthread_t tid;
    int epfd;
    int listen_fd;
    int http_listen_fd; /* -1 without --http-port */
    uint8_t *rbuf;
    responder_dirty dirty; /* routing: subscribers to flush after this batch */
} responder_loop;

/* epoll tags of the two listeners (connections carry their own pointer) */
static char listen_mqtt_tag, listen_http_tag;

static int listen_on(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)addr, sizeof *addr) != 0 || listen(fd, 4096) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void conn_lock(responder_conn *c)
{
    if (c->locked)
        pthread_mutex_lock(&c->lock);
}

static void conn_unlock(responder_conn *c)
{
    if (c->locked)
        pthread_mutex_unlock(&c->lock);
}

/* Plain mode frees the connection; shared mode (--http-port, --route)
 * closes it and keeps the struct for the relays that may still point at
 * it (responder_conn.h). */
static void conn_close(responder_loop *l, responder_conn *c)
{
    free(c->tail);
    c->tail = NULL;
    c->tail_len = 0;
    if (!l->ctx->hub) {
        close(c->fd);
        bench_buf_free(&c->out);
        free(c);
        return;
    }
    responder_hub_closed(l->ctx->hub, c);
    conn_lock(c);
    close(c->fd);
    c->fd = -1;
    bench_buf_free(&c->out);
    conn_unlock(c);
}

static bool append(responder_conn *c, const uint8_t *bytes, size_t n)
{
    if (c->fd < 0 || !bench_buf_reserve(&c->out, n))
        return false;
    memcpy(c->out.data + c->out.len, bytes, n);
    c->out.len += n;
    return true;
}

bool responder_reply(responder_conn *c, const uint8_t *bytes, size_t n)
{
    conn_lock(c);
    bool ok = append(c, bytes, n);
    conn_unlock(c);
    return ok;
}

/* Sends queued output, the caller holding c's lock if it has one; false
 * when the connection broke. Waits for EPOLLOUT when the socket is full. */
static bool flush_locked(responder_conn *c)
{
    while (bench_buf_pending(&c->out)) {
        ssize_t n = send(c->fd, c->out.data + c->out.start, bench_buf_pending(&c->out),
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0)
            return false;
        c->out.start += (size_t)n;
    }
    bool want_out = bench_buf_pending(&c->out) > 0;
    if (!want_out)
        c->out.start = c->out.len = 0;
    if (want_out != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(c->epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want_out;
    }
    return true;
}

static bool flush(responder_conn *c)
{
    conn_lock(c);
    bool ok = c->fd >= 0 && flush_locked(c);
    conn_unlock(c);
    return ok;
}

bool responder_relay(responder_conn *c, const bench_buf *bytes, uint32_t call_seq)
{
    conn_lock(c);
    bool ok = !call_seq || c->call_seq == call_seq;
    if (call_seq)
        c->call_seq = 0;
    ok = ok && append(c, bytes->data + bytes->start, bench_buf_pending(bytes));
    if (ok)
        flush_locked(c); /* a broken socket is the owner's to notice: its read fails too */
    conn_unlock(c);
    return ok;
}

bool responder_queue_routed(responder_conn *c, const uint8_t *bytes, size_t n,
                            responder_dirty *dirty)
{
    bool ok = responder_reply(c, bytes, n);
    if (!ok || __atomic_exchange_n(&c->dirty_mark, dirty->mark, __ATOMIC_RELAXED) == dirty->mark)
        return ok; /* already on this batch's list */
    responder_conn **conns = responder_grow(dirty->conns, dirty->count, &dirty->cap, sizeof *conns);
    if (!conns)
        return false;
    dirty->conns = conns;
    conns[dirty->count++] = c;
    return true;
}

/* Sends what this loop's batch routed; a subscriber whose socket broke is
 * its owner's to close. */
static void flush_routed(responder_loop *l)
{
    for (size_t i = 0; i < l->dirty.count; i++)
        flush(l->dirty.conns[i]);
    l->dirty.count = 0;
    l->dirty.mark++;
}

/* The acknowledgement for one framed packet, if it needs one. */
static bool answer(responder_loop *l, responder_conn *c, const uint8_t *p, const mqtt_frame *f)
{
    const uint8_t *body = p + f->header_len;
    uint32_t body_len = f->total_len - f->header_len;
    if (l->ctx->hub &&
        (f->type == MQTT_CONNECT || f->type == MQTT_PUBLISH || f->type == MQTT_SUBSCRIBE) &&
        !responder_hub_mqtt(l->ctx->hub, c, p, f->total_len, &l->dirty))
        return false;
    switch (f->type) {
    case MQTT_CONNECT:
        if (body_len < 7)
            return false;
        c->version = body[6]; /* after the 6-byte protocol name "\0\4MQTT" */
        if (c->version == MQTT_V5)
            return responder_reply(c, (const uint8_t[]){0x20, 3, 0, 0, 0}, 5);
        return responder_reply(c, (const uint8_t[]){0x20, 2, 0, 0}, 4);
    case MQTT_PUBLISH: {
        if (((f->flags >> 1) & 3) != 1 || body_len < 4)
            return true;
        uint32_t topic_len = (uint32_t)body[0] << 8 | body[1];
        if (body_len < topic_len + 4)
            return false;
        return responder_reply(c, (const uint8_t[]){0x40, 2, body[2 + topic_len], body[3 + topic_len]},
                               4);
    }
    case MQTT_SUBSCRIBE:
        if (body_len < 2)
            return false;
        if (c->version == MQTT_V5)
            return responder_reply(c, (const uint8_t[]){0x90, 4, body[0], body[1], 0, 0}, 6);
        return responder_reply(c, (const uint8_t[]){0x90, 3, body[0], body[1], 0}, 5);
    case MQTT_PINGREQ:
        return responder_reply(c, (const uint8_t[]){0xD0, 0}, 2);
    case MQTT_DISCONNECT:
        return false;
    default:
        return true;
    }
}

/* How many bytes of buf[0..len) the whole MQTT packets in it take, all
 * answered; -1 to close. */
static long consume_mqtt(responder_loop *l, responder_conn *c, const uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        mqtt_frame f;
        mqtt_frame_status st = mqtt_frame_parse(buf + off, len - off, 0, &f);
        if (st == MQTT_FRAME_NEED_MORE)
            break;
        if (st == MQTT_FRAME_ERROR || !answer(l, c, buf + off, &f))
            return -1;
        off += f.total_len;
    }
    return (long)off;
}

/* Answers what buf[0..len) holds; keeps the incomplete tail. False: close. */
static bool consume(responder_loop *l, responder_conn *c, const uint8_t *buf, size_t len)
{
    long used = c->is_http ? responder_hub_http(l->ctx->hub, c, buf, len)
                           : consume_mqtt(l, c, buf, len);
    if (used < 0)
        return false;
    free(c->tail);
    c->tail = NULL;
    c->tail_len = len - (size_t)used;
    if (c->tail_len) {
        c->tail = malloc(c->tail_len);
        if (!c->tail)
            return false;
        memcpy(c->tail, buf + used, c->tail_len);
    }
    return true;
}

static void on_readable(responder_loop *l, responder_conn *c)
{
    size_t have = c->tail_len;
    if (c->fd < 0)
        return;
    if (have >= RESPONDER_READ_SIZE) {
        conn_close(l, c);
        return;
    }
    if (have)
        memcpy(l->rbuf, c->tail, have);
    ssize_t n = recv(c->fd, l->rbuf + have, RESPONDER_READ_SIZE - have, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0 || !consume(l, c, l->rbuf, have + (size_t)n) || !flush(c))
        conn_close(l, c);
}

static responder_conn *conn_new(responder_loop *l, int fd, bool is_http)
{
    responder_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = fd;
    c->epfd = l->epfd;
    c->version = MQTT_V311;
    c->is_http = is_http;
    if (l->ctx->hub) {
        c->locked = true;
        pthread_mutex_init(&c->lock, NULL);
        if (!responder_hub_add(l->ctx->hub, c)) {
            pthread_mutex_destroy(&c->lock);
            free(c);
            return NULL;
        }
    }
    return c;
}

static void accept_all(responder_loop *l, bool is_http)
{
    for (;;) {
        int fd = accept4(is_http ? l->http_listen_fd : l->listen_fd, NULL, NULL,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        responder_conn *c = conn_new(l, fd, is_http);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (c && epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
            continue;
        close(fd);
        if (c && l->ctx->hub)
            c->fd = -1; /* the hub's table owns it: it stays, closed */
        else
            free(c);
    }
}

static void *loop_main(void *arg)
{
    responder_loop *l = arg;
    struct epoll_event events[256];
    while (!atomic_load(&l->ctx->stop)) {
        int n = epoll_wait(l->epfd, events, 256, 100);
        for (int i = 0; i < n; i++) {
            void *tag = events[i].data.ptr;
            if (tag == &listen_mqtt_tag || tag == &listen_http_tag) {
                accept_all(l, tag == &listen_http_tag);
                continue;
            }
            responder_conn *c = tag;
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                on_readable(l, c);
            else if ((events[i].events & EPOLLOUT) && !flush(c))
                conn_close(l, c);
        }
        flush_routed(l);
    }
    return NULL; /* connections are reclaimed by process exit */
}

/* Waits for a stop signal or the deadline. */
static void wait_for_stop(const sigset_t *signals, double duration_s)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        struct timespec step = {.tv_sec = 0, .tv_nsec = 200000000};
        if (sigtimedwait(signals, NULL, &step) > 0)
            return;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double elapsed = (double)(now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9;
        if (elapsed >= duration_s)
            return;
    }
}

/* Opens loop l's listeners and epoll; false with errno set. */
static bool loop_open(responder_loop *l, unsigned index, responder_ctx *ctx)
{
    l->ctx = ctx;
    l->dirty.mark = (uint64_t)(index + 1) << 48; /* unique across loops */
    l->http_listen_fd = -1;
    l->listen_fd = listen_on(&ctx->addr);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->rbuf = malloc(RESPONDER_READ_SIZE);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listen_mqtt_tag};
    if (l->listen_fd < 0 || l->epfd < 0 || !l->rbuf ||
        epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->listen_fd, &ev) != 0)
        return false;
    if (!ctx->opt->http_port)
        return true;
    l->http_listen_fd = listen_on(&ctx->http_addr);
    ev.data.ptr = &listen_http_tag;
    return l->http_listen_fd >= 0 && epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->http_listen_fd, &ev) == 0;
}

int bench_responder_run(const bench_options *o)
{
    responder_ctx ctx = {.opt = o};
    ctx.addr.sin_family = AF_INET;
    ctx.addr.sin_port = htons(o->port);
    if (inet_pton(AF_INET, o->host, &ctx.addr.sin_addr) != 1) {
        fprintf(stderr, "iothub-bench responder: bad --host %s\n", o->host);
        return 2;
    }
    ctx.http_addr = ctx.addr;
    ctx.http_addr.sin_port = htons(o->http_port);
    if ((o->http_port || o->route) && !(ctx.hub = responder_hub_new(o->route))) {
        fprintf(stderr, "iothub-bench responder: out of memory\n");
        return 2;
    }
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    unsigned count = o->threads > RESPONDER_MAX_THREADS ? RESPONDER_MAX_THREADS : o->threads;
    responder_loop loops[RESPONDER_MAX_THREADS];
    memset(loops, 0, sizeof loops);
    for (unsigned i = 0; i < count; i++)
        if (!loop_open(&loops[i], i, &ctx)) {
            fprintf(stderr, "iothub-bench responder: cannot listen on %s:%u%s: %s\n", o->host,
                    o->port, o->http_port ? " and the HTTP port" : "", strerror(errno));
            return 2;
        }
    for (unsigned i = 0; i < count; i++)
        if (pthread_create(&loops[i].tid, NULL, loop_main, &loops[i]) != 0) {
            fprintf(stderr, "iothub-bench responder: pthread_create failed\n");
            return 2;
        }
    fprintf(stderr, "iothub-bench responder: listening on %s:%u", o->host, o->port);
    if (o->http_port)
        fprintf(stderr, ", HTTP on %u", o->http_port);
    fprintf(stderr, "%s (%u threads)\n", o->route ? ", routing" : "", count);
    wait_for_stop(&signals, o->duration_s);
    atomic_store(&ctx.stop, true);
    for (unsigned i = 0; i < count; i++) {
        pthread_join(loops[i].tid, NULL);
        close(loops[i].listen_fd);
        if (loops[i].http_listen_fd >= 0)
            close(loops[i].http_listen_fd);
        close(loops[i].epfd);
        free(loops[i].rbuf);
        free(loops[i].dirty.conns);
    }
    responder_hub_free(ctx.hub);
    return 0;
}

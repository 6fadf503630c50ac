/*
 * tools/bench/responder.c — see responder.h.
 *
 * One listening socket per thread (SO_REUSEPORT: the kernel spreads
 * connections), level-triggered epoll, per-connection state = protocol
 * level, an incomplete input tail and an output queue used only when the
 * socket is full. Acknowledgements are written from fixed byte patterns:
 * this is the least work a server can do per packet, on purpose.
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

#define RESPONDER_MAX_THREADS 64
#define RESPONDER_READ_SIZE (256u * 1024u)

typedef struct responder_conn {
    int fd;
    uint8_t version;
    bool want_out; /* EPOLLOUT armed: the socket was full */
    uint8_t *tail;
    size_t tail_len;
    bench_buf out;
} responder_conn;

typedef struct responder_ctx {
    const bench_options *opt;
    atomic_bool stop;
    struct sockaddr_in addr;
} responder_ctx;

typedef struct responder_loop {
    responder_ctx *ctx;
    pthread_t tid;
    int epfd;
    int listen_fd;
    uint8_t *rbuf;
} responder_loop;

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

static void conn_free(responder_conn *c)
{
    close(c->fd);
    free(c->tail);
    bench_buf_free(&c->out);
    free(c);
}

/* Queues bytes; they are sent at the end of the read batch. */
static bool reply(responder_conn *c, const uint8_t *bytes, size_t n)
{
    if (!bench_buf_reserve(&c->out, n))
        return false;
    memcpy(c->out.data + c->out.len, bytes, n);
    c->out.len += n;
    return true;
}

/* The acknowledgement for one framed packet, if it needs one. */
static bool answer(responder_conn *c, const uint8_t *p, const mqtt_frame *f)
{
    const uint8_t *body = p + f->header_len;
    uint32_t body_len = f->total_len - f->header_len;
    switch (f->type) {
    case MQTT_CONNECT:
        if (body_len < 7)
            return false;
        c->version = body[6]; /* after the 6-byte protocol name "\0\4MQTT" */
        if (c->version == MQTT_V5)
            return reply(c, (const uint8_t[]){0x20, 3, 0, 0, 0}, 5);
        return reply(c, (const uint8_t[]){0x20, 2, 0, 0}, 4);
    case MQTT_PUBLISH: {
        if (((f->flags >> 1) & 3) != 1 || body_len < 4)
            return true;
        uint32_t topic_len = (uint32_t)body[0] << 8 | body[1];
        if (body_len < topic_len + 4)
            return false;
        return reply(c, (const uint8_t[]){0x40, 2, body[2 + topic_len], body[3 + topic_len]}, 4);
    }
    case MQTT_SUBSCRIBE:
        if (body_len < 2)
            return false;
        if (c->version == MQTT_V5)
            return reply(c, (const uint8_t[]){0x90, 4, body[0], body[1], 0, 0}, 6);
        return reply(c, (const uint8_t[]){0x90, 3, body[0], body[1], 0}, 5);
    case MQTT_PINGREQ:
        return reply(c, (const uint8_t[]){0xD0, 0}, 2);
    case MQTT_DISCONNECT:
        return false;
    default:
        return true;
    }
}

/* Frames and answers buf[0..len); keeps the incomplete tail. False: close. */
static bool consume(responder_conn *c, const uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        mqtt_frame f;
        mqtt_frame_status st = mqtt_frame_parse(buf + off, len - off, 0, &f);
        if (st == MQTT_FRAME_NEED_MORE)
            break;
        if (st == MQTT_FRAME_ERROR || !answer(c, buf + off, &f))
            return false;
        off += f.total_len;
    }
    free(c->tail);
    c->tail = NULL;
    c->tail_len = len - off;
    if (c->tail_len) {
        c->tail = malloc(c->tail_len);
        if (!c->tail)
            return false;
        memcpy(c->tail, buf + off, c->tail_len);
    }
    return true;
}

/* Sends queued output; false when the connection broke. Waits for
 * EPOLLOUT (re-armed by the caller) when the socket is full. */
static bool flush(responder_loop *l, responder_conn *c)
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
        epoll_ctl(l->epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want_out;
    }
    return true;
}

static void on_readable(responder_loop *l, responder_conn *c)
{
    size_t have = c->tail_len;
    if (have >= RESPONDER_READ_SIZE) {
        conn_free(c);
        return;
    }
    if (have)
        memcpy(l->rbuf, c->tail, have);
    ssize_t n = recv(c->fd, l->rbuf + have, RESPONDER_READ_SIZE - have, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0 || !consume(c, l->rbuf, have + (size_t)n) || !flush(l, c))
        conn_free(c);
}

static void accept_all(responder_loop *l)
{
    for (;;) {
        int fd = accept4(l->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        responder_conn *c = calloc(1, sizeof *c);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (!c || epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            free(c);
            close(fd);
            continue;
        }
        c->fd = fd;
        c->version = MQTT_V311;
    }
}

static void *loop_main(void *arg)
{
    responder_loop *l = arg;
    struct epoll_event events[256];
    while (!atomic_load(&l->ctx->stop)) {
        int n = epoll_wait(l->epfd, events, 256, 100);
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL) {
                accept_all(l);
                continue;
            }
            responder_conn *c = events[i].data.ptr;
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                on_readable(l, c);
            else if ((events[i].events & EPOLLOUT) && !flush(l, c))
                conn_free(c);
        }
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

int bench_responder_run(const bench_options *o)
{
    responder_ctx ctx = {.opt = o};
    ctx.addr.sin_family = AF_INET;
    ctx.addr.sin_port = htons(o->port);
    if (inet_pton(AF_INET, o->host, &ctx.addr.sin_addr) != 1) {
        fprintf(stderr, "iothub-bench responder: bad --host %s\n", o->host);
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
    for (unsigned i = 0; i < count; i++) {
        responder_loop *l = &loops[i];
        l->ctx = &ctx;
        l->listen_fd = listen_on(&ctx.addr);
        l->epfd = epoll_create1(EPOLL_CLOEXEC);
        l->rbuf = malloc(RESPONDER_READ_SIZE);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        if (l->listen_fd < 0 || l->epfd < 0 || !l->rbuf ||
            epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->listen_fd, &ev) != 0) {
            fprintf(stderr, "iothub-bench responder: cannot listen on %s:%u: %s\n", o->host,
                    o->port, strerror(errno));
            return 2;
        }
    }
    for (unsigned i = 0; i < count; i++)
        if (pthread_create(&loops[i].tid, NULL, loop_main, &loops[i]) != 0) {
            fprintf(stderr, "iothub-bench responder: pthread_create failed\n");
            return 2;
        }
    fprintf(stderr, "iothub-bench responder: listening on %s:%u (%u threads)\n", o->host, o->port,
            count);
    wait_for_stop(&signals, o->duration_s);
    atomic_store(&ctx.stop, true);
    for (unsigned i = 0; i < count; i++) {
        pthread_join(loops[i].tid, NULL);
        close(loops[i].listen_fd);
        close(loops[i].epfd);
        free(loops[i].rbuf);
    }
    return 0;
}

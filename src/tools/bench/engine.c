/*
 * tools/bench/engine.c — see engine.h.
 *
 * Connections are started gradually (at most per_thread_concurrency
 * attempts unanswered per thread) so a 20,000-connection setup does not
 * overflow the server's listen backlog, which would turn into one-second
 * SYN retransmissions and measure the kernel instead of the server. Each
 * connection binds a source address 127.0.0.{1 + index mod sources} with
 * IP_BIND_ADDRESS_NO_PORT, so the kernel picks the port at connect time
 * per (source, destination) pair and the client count is not capped by
 * one address's ephemeral range.
 *
 * Output is flushed once per iteration (the dirty list), so all the
 * packets a client produced while handling one batch of events leave in
 * one send(); a client whose socket is full waits for EPOLLOUT.
 */
#include "tools/bench/engine.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tools/bench/scenarios.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define READ_BUFFER_SIZE (1u << 20)
#define EVENTS_PER_WAIT 256
#define SCAN_INTERVAL_NS 100000000ull
#define OUT_KEEP_MAX (64u * 1024u) /* larger output buffers are freed when drained */

static const char *const error_names[ERR_COUNT] = {
    [ERR_CONNECT_REFUSED] = "connect_refused",
    [ERR_NO_SOURCE_PORT] = "no_source_port",
    [ERR_CONNECT_FAILED] = "connect_failed",
    [ERR_SOCKET] = "socket_error",
    [ERR_CONNACK_TIMEOUT] = "connack_timeout",
    [ERR_CLOSED_BY_SERVER] = "closed_by_server",
    [ERR_DECODE] = "malformed_from_server",
    [ERR_SEND] = "send_error",
    [ERR_OUT_OF_MEMORY] = "out_of_memory",
    [ERR_KEEPALIVE_MISS] = "keepalive_miss",
    [ERR_NOT_DELIVERED] = "not_delivered",
    [ERR_WINDOW_FULL] = "window_full",
    [ERR_HTTP_CONNECTION] = "http_connection",
    [ERR_HTTP_MALFORMED] = "http_malformed",
    [ERR_UNMATCHED_RESPONSE] = "unmatched_response",
};

static const char *const reason_kind_names[REASON_KIND_COUNT] = {
    [REASON_CONNACK] = "connack",
    [REASON_PUBACK] = "puback",
    [REASON_SUBACK] = "suback",
    [REASON_DISCONNECT] = "disconnect",
    [REASON_HUB_STATUS] = "status",
};

const char *bench_error_name(bench_error e)
{
    return (unsigned)e < ERR_COUNT ? error_names[e] : "?";
}

const char *bench_reason_kind_name(bench_reason_kind k)
{
    return (unsigned)k < REASON_KIND_COUNT ? reason_kind_names[k] : "?";
}

static uint64_t ns_of(const struct timespec *ts)
{
    return (uint64_t)ts->tv_sec * 1000000000ull + (uint64_t)ts->tv_nsec;
}

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ns_of(&ts);
}

/* ---- receive times --------------------------------------------------------
 * A latency ends when the answer reached the client's socket, not when a
 * generator thread got round to reading it. The generator shares this
 * machine's CPUs with the server, and its threads wait for one as the
 * server's do (43 % of the time at 50,000 twin requests/s paced): that
 * wait belongs to the instrument, and a device on its own machine would
 * not see it. The kernel stamps every segment it receives (SO_TIMESTAMPNS,
 * CLOCK_REALTIME) and a recvmsg() returns the stamp of the newest segment
 * it read, so when one read takes several answers the earlier ones are
 * charged from the later arrival: the error only lengthens a latency,
 * never shortens it. The stamp is moved onto CLOCK_MONOTONIC by how long
 * ago it was on CLOCK_REALTIME, read back to back with the monotonic
 * clock. The time from arrival to read is reported on its own, as the
 * generator's read delay. The kernel turns stamping on a moment after the
 * first socket asks (from a work queue; the setup phase covers it); a read
 * without a stamp counts from the read time, as before. */

uint64_t bench_span_ns(uint64_t from_ns, uint64_t to_ns)
{
    return to_ns > from_ns ? to_ns - from_ns : 0;
}

uint64_t bench_latency_ns(const bench_thread *t, uint64_t sent_ns)
{
    return bench_span_ns(sent_ns, t->arrival_ns);
}

void bench_stamp_receives(int fd)
{
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
}

ssize_t bench_recv_stamped(int fd, void *buf, size_t len, uint64_t *arrival_ns, uint64_t *read_ns)
{
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    union {
        char buf[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    ssize_t n = recvmsg(fd, &msg, 0);
    struct timespec mono, real;
    clock_gettime(CLOCK_MONOTONIC, &mono);
    clock_gettime(CLOCK_REALTIME, &real);
    *read_ns = *arrival_ns = ns_of(&mono);
    if (n <= 0)
        return n;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_TIMESTAMPNS)
            continue;
        struct timespec stamp;
        memcpy(&stamp, CMSG_DATA(cm), sizeof stamp);
        uint64_t ago = bench_span_ns(ns_of(&stamp), ns_of(&real));
        /* A stamp from the future (the wall clock stepped back: ago is 0)
         * or older than the monotonic clock's origin is no use: keep the
         * read time. */
        if (ago > 0 && ago < *read_ns)
            *arrival_ns = *read_ns - ago;
    }
    return n;
}

void bench_stats_init(bench_stats *s)
{
    memset(s, 0, sizeof *s);
    hist_init(&s->latency);
    hist_init(&s->latency2);
    hist_init(&s->read_delay);
}

void bench_stats_merge(bench_stats *dst, const bench_stats *src)
{
    hist_merge(&dst->latency, &src->latency);
    hist_merge(&dst->latency2, &src->latency2);
    hist_merge(&dst->read_delay, &src->read_delay);
    dst->sent += src->sent;
    dst->acked += src->acked;
    dst->delivered += src->delivered;
    dst->connects += src->connects;
    dst->connects_in_run += src->connects_in_run;
    dst->pings += src->pings;
    dst->pongs += src->pongs;
    dst->disconnects += src->disconnects;
    dst->held += src->held;
    for (unsigned e = 0; e < ERR_COUNT; e++)
        dst->errors[e] += src->errors[e];
    for (unsigned k = 0; k < REASON_KIND_COUNT; k++)
        for (unsigned r = 0; r < 256; r++)
            dst->reasons[k][r] += src->reasons[k][r];
    for (unsigned h = 0; h < BENCH_HTTP_STATUS_MAX; h++)
        dst->http_status[h] += src->http_status[h];
}

void bench_count_error(bench_thread *t, bench_error e)
{
    t->stats.errors[e]++;
}

void bench_count_reason(bench_thread *t, bench_reason_kind k, uint8_t reason)
{
    t->stats.reasons[k][reason]++;
}

void bench_client_id(const bench_run *run, unsigned index, char *out, size_t cap)
{
    const char *prefix = run->creds ? run->opt->device_prefix : "bench-";
    snprintf(out, cap, "%s%06u", prefix, index);
}

void bench_ring_push(bench_thread *t, bench_client *c)
{
    if (c->in_send_ring)
        return;
    c->in_send_ring = true;
    t->send_ring[(t->ring_head + t->ring_count++) % t->client_count] = (unsigned)(c - t->clients);
}

bench_client *bench_ring_pop(bench_thread *t)
{
    if (t->ring_count == 0)
        return NULL;
    bench_client *c = &t->clients[t->send_ring[t->ring_head]];
    t->ring_head = (t->ring_head + 1) % t->client_count;
    t->ring_count--;
    c->in_send_ring = false;
    return c;
}

void bench_client_mark_dirty(bench_thread *t, bench_client *c)
{
    if (c->dirty)
        return;
    c->dirty = true;
    t->dirty[t->dirty_count++] = (unsigned)(c - t->clients);
}

/* ---- connection life ----------------------------------------------------- */

void bench_client_close(bench_thread *t, bench_client *c)
{
    (void)t;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = CLIENT_IDLE;
    c->writable = false;
    c->subscribed = false;
    c->ping_sent_ns = 0;
    c->out.start = c->out.len = 0;
    if (c->out.cap > OUT_KEEP_MAX)
        bench_buf_free(&c->out);
    free(c->tail);
    c->tail = NULL;
    c->tail_len = 0;
    free(c->sent_ns);
    free(c->free_slots);
    c->sent_ns = NULL;
    c->free_slots = NULL;
    c->free_count = c->window = 0;
}

/* Ends the connection after an error or an end from the server, counts it,
 * and lets the scenario decide what happens next. */
static void client_fail(bench_thread *t, bench_client *c, int error)
{
    bool was_ready = c->state == CLIENT_READY;
    if (c->state == CLIENT_TCP || c->state == CLIENT_MQTT)
        t->in_progress--;
    if (was_ready)
        t->stats.disconnects++;
    if (error >= 0)
        bench_count_error(t, (bench_error)error);
    bench_client_close(t, c);
    scenario_on_closed(t, c, was_ready);
}

static bench_error connect_errno_kind(int err)
{
    if (err == ECONNREFUSED)
        return ERR_CONNECT_REFUSED;
    if (err == EADDRNOTAVAIL || err == EADDRINUSE)
        return ERR_NO_SOURCE_PORT;
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM)
        return ERR_SOCKET;
    return ERR_CONNECT_FAILED;
}

/* A non-blocking socket bound to this client's source address. -1 with
 * errno set on failure. */
static int open_socket(const bench_run *run, unsigned index)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    bench_stamp_receives(fd);
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000001u + index % run->opt->sources);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

void bench_client_start(bench_thread *t, bench_client *c)
{
    const bench_run *run = t->run;
    c->started_ns = bench_now_ns();
    t->in_progress++;
    c->state = CLIENT_TCP;
    c->fd = open_socket(run, c->index);
    if (c->fd < 0) {
        client_fail(t, c, connect_errno_kind(errno));
        return;
    }
    if (connect(c->fd, (const struct sockaddr *)&run->server, sizeof run->server) != 0 &&
        errno != EINPROGRESS) {
        client_fail(t, c, connect_errno_kind(errno));
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        client_fail(t, c, ERR_SOCKET);
}

/* The TCP connection is up (or failed): send CONNECT. */
static void on_tcp_result(bench_thread *t, bench_client *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err) {
        client_fail(t, c, connect_errno_kind(err));
        return;
    }
    const bench_run *run = t->run;
    char id[96];
    bench_client_id(run, c->index, id, sizeof id);
    proto_sas sas;
    const proto_sas *sasp = NULL;
    if (run->creds) {
        /* creds->keys holds this process's clients, from first_client on */
        unsigned k = (c->index - run->opt->first_client) % run->opt->clients;
        sas = (proto_sas){run->creds->host, run->creds->keys[k],
                          (uint64_t)time(NULL) * 1000u + 3600u * 1000u};
        sasp = &sas;
    }
    if (!proto_put_connect(&c->out, run->opt->mqtt_version, id, (uint16_t)run->opt->keepalive_s,
                           sasp)) {
        client_fail(t, c, ERR_OUT_OF_MEMORY);
        return;
    }
    c->state = CLIENT_MQTT;
    c->writable = true;
    bench_client_mark_dirty(t, c);
}

/* CONNACK: success makes the client ready for the scenario. */
static void on_connack(bench_thread *t, bench_client *c, const mqtt_connack *ack)
{
    if (ack->reason != 0) {
        bench_count_reason(t, REASON_CONNACK, ack->reason);
        client_fail(t, c, -1);
        return;
    }
    unsigned window = t->run->opt->window;
    if (MQTT_HAS(&ack->props, MQTT_PROP_RECEIVE_MAXIMUM) && ack->props.receive_maximum < window)
        window = ack->props.receive_maximum;
    c->sent_ns = calloc(window, sizeof *c->sent_ns);
    c->free_slots = malloc(window * sizeof *c->free_slots);
    if (!c->sent_ns || !c->free_slots) {
        client_fail(t, c, ERR_OUT_OF_MEMORY);
        return;
    }
    c->window = window;
    for (unsigned i = 0; i < window; i++)
        c->free_slots[i] = (uint16_t)(window - 1 - i);
    c->free_count = window;
    t->in_progress--;
    t->stats.connects++;
    c->state = CLIENT_READY;
    c->ready_ns = bench_now_ns();
    scenario_on_ready(t, c);
}

/* One decoded packet from the server. False when the client was closed. */
static bool dispatch(bench_thread *t, bench_client *c, const mqtt_packet *pkt)
{
    if (pkt->type == MQTT_CONNACK) {
        if (c->state != CLIENT_MQTT) {
            client_fail(t, c, ERR_DECODE);
            return false;
        }
        on_connack(t, c, &pkt->u.connack);
        return c->state == CLIENT_READY;
    }
    if (c->state != CLIENT_READY) {
        client_fail(t, c, ERR_DECODE);
        return false;
    }
    switch (pkt->type) {
    case MQTT_PUBLISH:
        if (pkt->u.publish.qos == 1)
            proto_put_puback(&c->out, t->run->opt->mqtt_version, pkt->u.publish.packet_id);
        if (pkt->u.publish.qos == 1)
            bench_client_mark_dirty(t, c);
        scenario_on_publish(t, c, &pkt->u.publish);
        break;
    case MQTT_PUBACK:
        scenario_on_puback(t, c, &pkt->u.ack);
        break;
    case MQTT_SUBACK:
        scenario_on_suback(t, c, &pkt->u.suback);
        break;
    case MQTT_PINGRESP:
        scenario_on_pingresp(t, c);
        break;
    case MQTT_DISCONNECT:
        bench_count_reason(t, REASON_DISCONNECT, pkt->u.disconnect.reason);
        client_fail(t, c, -1);
        return false;
    default:
        break;
    }
    return c->state == CLIENT_READY;
}

/* Frames and dispatches buf[0..len); keeps an incomplete tail. False when
 * the client was closed. */
static bool consume(bench_thread *t, bench_client *c, const uint8_t *buf, size_t len)
{
    size_t off = 0;
    uint8_t version = t->run->opt->mqtt_version;
    while (off < len) {
        mqtt_frame f;
        mqtt_frame_status st = mqtt_frame_parse(buf + off, len - off, 0, &f);
        if (st == MQTT_FRAME_NEED_MORE)
            break;
        mqtt_packet pkt;
        if (st == MQTT_FRAME_ERROR || mqtt_decode(buf + off, f.total_len, version, &pkt) != 0) {
            client_fail(t, c, ERR_DECODE);
            return false;
        }
        if (!dispatch(t, c, &pkt))
            return false;
        off += f.total_len;
    }
    size_t rest = len - off;
    if (rest == 0)
        return true;
    uint8_t *tail = malloc(rest);
    if (!tail) {
        client_fail(t, c, ERR_OUT_OF_MEMORY);
        return false;
    }
    memcpy(tail, buf + off, rest);
    c->tail = tail;
    c->tail_len = (uint32_t)rest;
    return true;
}

/* Reads everything available (edge-triggered) and handles it. A read
 * shorter than the buffer drained the socket: data arriving after it
 * raises a new edge, so the loop stops there instead of paying one more
 * recv() for EAGAIN on every event (half the generator's reads in --rate
 * mode, where each event brings one acknowledgement). After a hang-up or
 * error it reads on to the end, since no further edge will come. */
static void read_input(bench_thread *t, bench_client *c, bool hung_up)
{
    for (;;) {
        size_t have = c->tail_len;
        if (have >= t->rbuf_cap) {
            client_fail(t, c, ERR_DECODE);
            return;
        }
        if (have)
            memcpy(t->rbuf, c->tail, have);
        uint64_t read_ns;
        ssize_t n = bench_recv_stamped(c->fd, t->rbuf + have, t->rbuf_cap - have,
                                       &t->arrival_ns, &read_ns);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            client_fail(t, c, ERR_CLOSED_BY_SERVER);
            return;
        }
        if (scenario_phase(t) == PHASE_RUN)
            hist_record(&t->stats.read_delay, read_ns - t->arrival_ns);
        free(c->tail);
        c->tail = NULL;
        c->tail_len = 0;
        if (!consume(t, c, t->rbuf, have + (size_t)n))
            return;
        if ((size_t)n < t->rbuf_cap - have && !hung_up)
            return;
    }
}

static void handle_event(bench_thread *t, bench_client *c, uint32_t events)
{
    if (c->state == CLIENT_TCP) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            on_tcp_result(t, c);
        return;
    }
    if (c->fd < 0)
        return;
    if (events & EPOLLOUT) {
        c->writable = true;
        if (bench_buf_pending(&c->out))
            bench_client_mark_dirty(t, c);
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        read_input(t, c, (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0);
}

/* Sends the client's queue until it is empty or the socket is full. */
static void flush_client(bench_thread *t, bench_client *c)
{
    while (c->fd >= 0 && c->writable && bench_buf_pending(&c->out)) {
        ssize_t n = send(c->fd, c->out.data + c->out.start, bench_buf_pending(&c->out),
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->out.start += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->writable = false;
        } else {
            client_fail(t, c, ERR_SEND);
            return;
        }
    }
    if (c->fd >= 0 && bench_buf_pending(&c->out) == 0) {
        c->out.start = c->out.len = 0;
        if (c->out.cap > OUT_KEEP_MAX)
            bench_buf_free(&c->out);
    }
}

void bench_client_flush_now(bench_thread *t, bench_client *c)
{
    flush_client(t, c);
}

static void flush_dirty(bench_thread *t)
{
    for (unsigned i = 0; i < t->dirty_count; i++) {
        bench_client *c = &t->clients[t->dirty[i]];
        c->dirty = false;
        flush_client(t, c);
    }
    t->dirty_count = 0;
}

/* Starts waiting clients while fewer than the allowed attempts are open. */
static void start_more_clients(bench_thread *t)
{
    while (t->next_start < t->client_count && t->in_progress < t->run->per_thread_concurrency) {
        bench_client *c = &t->clients[t->next_start++];
        bench_client_start(t, c);
    }
}

/* Every 100 ms: CONNACK timeouts, then the scenario's per-client timers. */
static void scan_clients(bench_thread *t, uint64_t now)
{
    uint64_t limit = (uint64_t)(t->run->opt->connect_timeout_s * 1e9);
    for (unsigned i = 0; i < t->client_count; i++) {
        bench_client *c = &t->clients[i];
        if ((c->state == CLIENT_TCP || c->state == CLIENT_MQTT) && now - c->started_ns > limit)
            client_fail(t, c, ERR_CONNACK_TIMEOUT);
        else
            scenario_on_scan(t, c, now);
    }
}

static void *thread_main(void *arg)
{
    bench_thread *t = arg;
    struct epoll_event events[EVENTS_PER_WAIT];
    while (atomic_load_explicit(&t->run->phase, memory_order_acquire) != PHASE_STOP) {
        start_more_clients(t);
        int n = epoll_wait(t->epfd, events, EVENTS_PER_WAIT, scenario_poll_timeout_ms(t));
        for (int i = 0; i < n; i++)
            handle_event(t, events[i].data.ptr, events[i].events);
        uint64_t now = bench_now_ns();
        scenario_tick(t, now);
        if (now - t->last_scan_ns >= SCAN_INTERVAL_NS) {
            t->last_scan_ns = now;
            scan_clients(t, now);
        }
        flush_dirty(t);
    }
    for (unsigned i = 0; i < t->client_count; i++) {
        if (t->clients[i].state == CLIENT_READY)
            t->stats.held++;
        bench_client_close(t, &t->clients[i]);
        bench_buf_free(&t->clients[i].out);
    }
    return NULL;
}

/* ---- the run ------------------------------------------------------------- */

static bool init_thread(bench_run *run, bench_thread *t, unsigned index)
{
    t->run = run;
    t->index = index;
    t->client_count = (run->total_clients - index + run->thread_count - 1) / run->thread_count;
    t->clients = calloc(t->client_count ? t->client_count : 1, sizeof *t->clients);
    t->dirty = calloc(t->client_count ? t->client_count : 1, sizeof *t->dirty);
    t->send_ring = calloc(t->client_count ? t->client_count : 1, sizeof *t->send_ring);
    t->rbuf_cap = READ_BUFFER_SIZE;
    t->rbuf = malloc(t->rbuf_cap);
    t->epfd = epoll_create1(EPOLL_CLOEXEC);
    bench_stats_init(&t->stats);
    if (!t->clients || !t->dirty || !t->send_ring || !t->rbuf || t->epfd < 0)
        return false;
    for (unsigned i = 0; i < t->client_count; i++) {
        t->clients[i].fd = -1;
        t->clients[i].index = run->opt->first_client + index + i * run->thread_count;
    }
    return true;
}

bool bench_run_init(bench_run *run, const bench_options *opt, const bench_credentials *creds,
                    char *err, size_t errlen)
{
    memset(run, 0, sizeof *run);
    run->opt = opt;
    run->creds = creds;
    run->server.sin_family = AF_INET;
    run->server.sin_port = htons(opt->port);
    if (inet_pton(AF_INET, opt->host, &run->server.sin_addr) != 1) {
        snprintf(err, errlen, "--host: not an IPv4 address: %s", opt->host);
        return false;
    }
    run->total_clients = scenario_client_count(opt);
    run->thread_count = opt->threads < run->total_clients ? opt->threads : run->total_clients;
    run->per_thread_concurrency = opt->concurrency / run->thread_count;
    if (run->per_thread_concurrency == 0)
        run->per_thread_concurrency = 1;
    run->payload = malloc(opt->payload ? opt->payload : 1);
    run->threads = calloc(run->thread_count, sizeof *run->threads);
    if (!run->payload || !run->threads) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    memset(run->payload, 'x', opt->payload);
    snprintf(run->fanout_topic_buf, sizeof run->fanout_topic_buf, "%s/fanout", opt->topic_prefix);
    run->fanout_topic = (mqtt_bytes){(const uint8_t *)run->fanout_topic_buf,
                                     (uint32_t)strlen(run->fanout_topic_buf)};
    for (unsigned i = 0; i < run->thread_count; i++)
        if (!init_thread(run, &run->threads[i], i)) {
            snprintf(err, errlen, "thread %u: out of memory or epoll: %s", i, strerror(errno));
            return false;
        }
    return true;
}

bool bench_run_start(bench_run *run, char *err, size_t errlen)
{
    for (unsigned i = 0; i < run->thread_count; i++) {
        int rc = pthread_create(&run->threads[i].tid, NULL, thread_main, &run->threads[i]);
        if (rc != 0) {
            snprintf(err, errlen, "pthread_create: %s", strerror(rc));
            atomic_store(&run->phase, PHASE_STOP);
            for (unsigned j = 0; j < i; j++)
                pthread_join(run->threads[j].tid, NULL);
            run->thread_count = 0;
            return false;
        }
    }
    return true;
}

void bench_run_finish(bench_run *run, bench_stats *out)
{
    atomic_store_explicit(&run->phase, PHASE_STOP, memory_order_release);
    bench_stats_init(out);
    for (unsigned i = 0; i < run->thread_count; i++) {
        pthread_join(run->threads[i].tid, NULL);
        bench_stats_merge(out, &run->threads[i].stats);
    }
}

void bench_run_free(bench_run *run)
{
    if (run->threads) {
        for (unsigned i = 0; i < run->thread_count; i++) {
            bench_thread *t = &run->threads[i];
            if (t->epfd > 0)
                close(t->epfd);
            free(t->clients);
            free(t->dirty);
            free(t->send_ring);
            free(t->rbuf);
        }
    }
    free(run->threads);
    free(run->payload);
    memset(run, 0, sizeof *run);
}
